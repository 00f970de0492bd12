//! Counters of the processor, shared lock-free with the status line and (later) `/metrics`.

use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use hdrhistogram::Histogram;
use iiot_model::{AlertStatus, InvalidReason};

/// What the processor has done so far.
#[derive(Debug)]
pub struct ProcessorStats {
    /// Valid, in-order (or first-seen) readings fed to the alert engine.
    pub processed: AtomicU64,
    /// Valid readings that arrived after a newer one of their device (counted, aggregated, not
    /// fed to rules).
    pub late: AtomicU64,
    /// Dead letters by reason, indexed by [`InvalidReason::index`].
    pub dead_letters: [AtomicU64; InvalidReason::ALL.len()],
    /// Readings missing according to `seq` jumps (at the time the jump was seen).
    pub seq_gaps: AtomicU64,
    /// Device restarts: a lower `seq` with a newer event time, or an implausible jump ahead.
    pub seq_restarts: AtomicU64,
    /// Alerts raised.
    pub alerts_raised: AtomicU64,
    /// Alerts acknowledged.
    pub alerts_acknowledged: AtomicU64,
    /// Alerts resolved.
    pub alerts_resolved: AtomicU64,
    /// Alerts open now (active or acknowledged).
    pub alerts_open: AtomicI64,
    /// Devices tracked.
    pub devices: AtomicU64,
    /// Outputs (alerts, dead letters) that failed to publish.
    pub publish_errors: AtomicU64,
    /// Open alerts read back from the alert-state topic for newly assigned partitions.
    pub alerts_restored: AtomicU64,
    /// Reads of the alert-state topic on assignment, and the time they took (µs, summed).
    pub restores: AtomicU64,
    /// See [`ProcessorStats::restores`].
    pub restore_us: AtomicU64,
    /// Alert-state records another member wrote into a partition held here, after it was
    /// read back, that were written again with this member's view.
    pub alert_states_rewritten: AtomicU64,
    /// Event → processed latency in microseconds (event timestamps have millisecond
    /// resolution, so values are ±1 ms). Merged from each processor once a second.
    pub latency_us: Mutex<Histogram<u64>>,
}

impl Default for ProcessorStats {
    fn default() -> Self {
        ProcessorStats {
            processed: AtomicU64::new(0),
            late: AtomicU64::new(0),
            dead_letters: std::array::from_fn(|_| AtomicU64::new(0)),
            seq_gaps: AtomicU64::new(0),
            seq_restarts: AtomicU64::new(0),
            alerts_raised: AtomicU64::new(0),
            alerts_acknowledged: AtomicU64::new(0),
            alerts_resolved: AtomicU64::new(0),
            alerts_open: AtomicI64::new(0),
            devices: AtomicU64::new(0),
            publish_errors: AtomicU64::new(0),
            alerts_restored: AtomicU64::new(0),
            restores: AtomicU64::new(0),
            restore_us: AtomicU64::new(0),
            alert_states_rewritten: AtomicU64::new(0),
            latency_us: Mutex::new(new_latency_histogram()),
        }
    }
}

/// A histogram for latencies from 1 µs to 1 hour at 3 significant digits.
pub fn new_latency_histogram() -> Histogram<u64> {
    // Bounds are constants that hdrhistogram accepts (low ≥ 1, high ≥ 2·low, sigfig ≤ 5).
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds")
}

impl ProcessorStats {
    /// Counts one read of the alert-state topic on assignment: `open` alerts in `took`.
    pub fn restored(&self, open: usize, took: std::time::Duration) {
        self.alerts_restored
            .fetch_add(open as u64, Ordering::Relaxed);
        self.restores.fetch_add(1, Ordering::Relaxed);
        self.restore_us
            .fetch_add(took.as_micros() as u64, Ordering::Relaxed);
    }

    /// Counts `n` alert-state records written again over another member's
    /// ([`crate::processor::Processor::foreign_record`]).
    pub fn rewritten(&self, n: u64) {
        self.alert_states_rewritten.fetch_add(n, Ordering::Relaxed);
    }

    /// Messages taken from the input so far, whatever became of them: processed, late or
    /// dead-lettered. `topic_mismatch` and `sparkplug_*` dead letters are left out: the MQTT source rejects
    /// them before the input topic (it counts them here so every dead letter is counted once,
    /// by reason, in one place).
    pub fn taken(&self) -> u64 {
        self.processed.load(Ordering::Relaxed)
            + self.late.load(Ordering::Relaxed)
            + self.dead_letters_total()
            - InvalidReason::ALL
                .iter()
                .filter(|r| r.judged_at_source())
                .map(|r| self.dead_letters_of(*r))
                .sum::<u64>()
    }

    /// Total dead letters over all reasons.
    pub fn dead_letters_total(&self) -> u64 {
        self.dead_letters
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .sum()
    }

    /// Dead letters of one reason.
    pub fn dead_letters_of(&self, reason: InvalidReason) -> u64 {
        self.dead_letters[reason.index()].load(Ordering::Relaxed)
    }

    pub(crate) fn alert(&self, status: AlertStatus) {
        let (counter, open_delta) = match status {
            AlertStatus::Active => (&self.alerts_raised, 1),
            AlertStatus::Acknowledged => (&self.alerts_acknowledged, 0),
            AlertStatus::Resolved => (&self.alerts_resolved, -1),
        };
        counter.fetch_add(1, Ordering::Relaxed);
        self.alerts_open.fetch_add(open_delta, Ordering::Relaxed);
    }

    /// A copy of the latency histogram (µs) so far.
    pub fn latency_snapshot(&self) -> Histogram<u64> {
        self.latency_us
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// (p50, p99, max) of event → processed latency in whole ms (the resolution of event
    /// timestamps; 0 means within the millisecond), over everything so far.
    pub fn latency_ms(&self) -> (f64, f64, f64) {
        let h = self.latency_us.lock().unwrap_or_else(|e| e.into_inner());
        let ms = |us: u64| (us as f64 / 1000.0).round();
        (
            ms(h.value_at_quantile(0.5)),
            ms(h.value_at_quantile(0.99)),
            ms(h.max()),
        )
    }
}
