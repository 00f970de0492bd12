//! The paced publishing loop: spreads devices across the interval, publishes each message keyed
//! by its device id, counts what happened, and stops on a deadline or the shutdown token.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use iiot_transport::{Publisher, Receipt, TransportError};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::fleet::{Emitted, Fleet};
use super::progress::Progress;

/// Messages between cooperative yields, so a full-speed loop whose publisher never waits does not
/// starve the other tasks of its worker thread.
const YIELD_EVERY: u32 = 1024;
/// In real time, the loop sleeps only when the next device is due more than this far ahead, so
/// large fleets go out in small bursts instead of one timer per message.
const SLEEP_THRESHOLD: Duration = Duration::from_millis(1);
/// How long after its deadline a real-time run that has fallen behind schedule may go on.
const LATE_GRACE: Duration = Duration::from_millis(100);
/// Publish failures are logged at most this often (the rest are counted).
const ERROR_LOG_EVERY: Duration = Duration::from_secs(5);
/// Deliveries awaited at most at once (Kafka receipts); beyond it publishing waits.
const MAX_PENDING_RECEIPTS: usize = 4096;

/// Counters of a simulator run, shared with whoever reports them.
#[derive(Debug, Default)]
pub struct SimStats {
    /// Messages delivered to the publisher (valid and malformed alike).
    pub sent: AtomicU64,
    /// Messages the publisher failed to take or deliver.
    pub errors: AtomicU64,
    /// Malformed messages emitted (also counted in `sent` once delivered).
    pub malformed: AtomicU64,
    /// Steps in which a device stayed silent (nothing published).
    pub silent: AtomicU64,
}

/// A consistent-enough copy of [`SimStats`] for reporting.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SimSnapshot {
    /// See [`SimStats::sent`].
    pub sent: u64,
    /// See [`SimStats::errors`].
    pub errors: u64,
    /// See [`SimStats::malformed`].
    pub malformed: u64,
    /// See [`SimStats::silent`].
    pub silent: u64,
}

impl SimStats {
    /// Reads every counter.
    pub fn snapshot(&self) -> SimSnapshot {
        SimSnapshot {
            sent: self.sent.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            malformed: self.malformed.load(Ordering::Relaxed),
            silent: self.silent.load(Ordering::Relaxed),
        }
    }
}

/// How fast the fleet is published.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pace {
    /// Every device once per interval, spread evenly across it.
    RealTime,
    /// As fast as the publisher takes messages (benchmarks); simulated time still advances one
    /// interval per step.
    FullSpeed,
}

/// How [`run`] publishes.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Topic to publish readings to (`device-data`).
    pub topic: String,
    /// Real time or full speed.
    pub pace: Pace,
    /// Stop after this long; `None` runs until shutdown.
    pub duration: Option<Duration>,
    /// Show a live progress line when stderr is a terminal (otherwise a log line every 10 s).
    pub progress: bool,
}

/// Publishes the fleet until `opts.duration` elapses or `shutdown` is cancelled, then flushes the
/// publisher and returns the fleet (so callers and tests can inspect it).
///
/// Device `i` of `N` is due at `start + round × interval + i × interval / N`. Failed publishes are
/// counted in `stats.errors` and logged at most once per 5 s. [`TransportError::Closed`] (from
/// publishing, a delivery, or the final flush) ends the run normally: the consumer is gone, for
/// example stdout piped into `head`. Other flush errors are returned.
pub async fn run(
    mut fleet: Fleet,
    publisher: Arc<dyn Publisher>,
    opts: RunOptions,
    shutdown: CancellationToken,
    stats: Arc<SimStats>,
) -> Result<Fleet, TransportError> {
    let started = Instant::now();
    let stop = shutdown.child_token();
    let progress = Progress::start(Arc::clone(&stats), opts.progress);
    let (receipts, receipt_task) = spawn_receipts(Arc::clone(&stats), stop.clone());

    publish_loop(
        &mut fleet,
        publisher.as_ref(),
        &opts,
        &stop,
        &stats,
        &receipts,
    )
    .await;

    drop(receipts);
    if receipt_task.await.is_err() {
        tracing::warn!("simulator delivery task failed");
    }
    let flushed = publisher.flush().await;
    progress.finish().await;
    log_summary(&stats, started.elapsed());
    match flushed {
        Ok(()) | Err(TransportError::Closed) => Ok(fleet),
        Err(e) => Err(e),
    }
}

async fn publish_loop(
    fleet: &mut Fleet,
    publisher: &dyn Publisher,
    opts: &RunOptions,
    stop: &CancellationToken,
    stats: &SimStats,
    receipts: &mpsc::Sender<Receipt>,
) {
    let start = Instant::now();
    let deadline = opts.duration.and_then(|d| start.checked_add(d));
    // At full speed the deadline is the clock. In real time it is the schedule (nothing due at
    // or after it is sent), plus a grace for a loop running behind, so that the last devices of
    // the last round are not lost to timer rounding.
    let hard_stop = match opts.pace {
        Pace::FullSpeed => deadline,
        Pace::RealTime => deadline.and_then(|d| d.checked_add(LATE_GRACE)),
    };
    if fleet.is_empty() {
        idle_until(deadline, stop).await;
        return;
    }
    let n = fleet.len() as u128;
    let interval_ns = fleet.interval().as_nanos();
    let mut errors = ErrorLog::default();
    let mut buf = Vec::with_capacity(1024);
    let mut since_yield = 0u32;
    for round in 0u64.. {
        for i in 0..fleet.len() {
            if opts.pace == Pace::RealTime {
                let offset = u128::from(round) * interval_ns + i as u128 * interval_ns / n;
                let Some(due) = start.checked_add(nanos(offset)) else {
                    return;
                };
                if deadline.is_some_and(|d| due >= d) {
                    return;
                }
                if due > Instant::now() + SLEEP_THRESHOLD {
                    tokio::select! {
                        () = tokio::time::sleep_until(due) => {}
                        () = stop.cancelled() => return,
                    }
                    since_yield = 0;
                }
            }
            if stop.is_cancelled() || hard_stop.is_some_and(|d| Instant::now() >= d) {
                return;
            }
            since_yield += 1;
            if since_yield >= YIELD_EVERY {
                since_yield = 0;
                tokio::task::yield_now().await;
            }
            match fleet.emit(i, crate::now_ms(), &mut buf) {
                Emitted::Silent => {
                    stats.silent.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                Emitted::Malformed => {
                    stats.malformed.fetch_add(1, Ordering::Relaxed);
                }
                Emitted::Reading { .. } => {}
            }
            let key = fleet.device_id(i).as_bytes();
            let payload = Bytes::copy_from_slice(&buf);
            match publisher.publish(&opts.topic, key, payload).await {
                Ok(Receipt::Delivered) => {
                    stats.sent.fetch_add(1, Ordering::Relaxed);
                }
                Ok(pending) => {
                    // The delivery task only ends once this sender is dropped or the run stops.
                    if receipts.send(pending).await.is_err() {
                        return;
                    }
                }
                Err(TransportError::Closed) => {
                    stats.errors.fetch_add(1, Ordering::Relaxed);
                    tracing::info!("publisher closed; simulator stops");
                    return;
                }
                Err(e) => {
                    stats.errors.fetch_add(1, Ordering::Relaxed);
                    errors.record(&e);
                }
            }
        }
    }
}

/// Waits for the deadline or the shutdown token, whichever comes first (an empty fleet).
async fn idle_until(deadline: Option<Instant>, stop: &CancellationToken) {
    match deadline {
        Some(d) => {
            tokio::select! {
                () = tokio::time::sleep_until(d) => {}
                () = stop.cancelled() => {}
            }
        }
        None => stop.cancelled().await,
    }
}

/// A nanosecond count as a [`Duration`], saturating (u64 nanoseconds are 584 years).
fn nanos(ns: u128) -> Duration {
    Duration::from_nanos(u64::try_from(ns).unwrap_or(u64::MAX))
}

/// Awaits pending deliveries in publish order, counting them; a closed transport stops the run.
fn spawn_receipts(
    stats: Arc<SimStats>,
    stop: CancellationToken,
) -> (mpsc::Sender<Receipt>, JoinHandle<()>) {
    let (tx, mut rx) = mpsc::channel::<Receipt>(MAX_PENDING_RECEIPTS);
    let task = tokio::spawn(async move {
        let mut errors = ErrorLog::default();
        while let Some(receipt) = rx.recv().await {
            match receipt.delivered().await {
                Ok(()) => {
                    stats.sent.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => {
                    stats.errors.fetch_add(1, Ordering::Relaxed);
                    if matches!(e, TransportError::Closed) {
                        stop.cancel();
                    }
                    errors.record(&e);
                }
            }
        }
    });
    (tx, task)
}

/// Logs publish failures at most once per [`ERROR_LOG_EVERY`], with how many were not logged.
#[derive(Debug, Default)]
struct ErrorLog {
    last: Option<Instant>,
    suppressed: u64,
}

impl ErrorLog {
    fn record(&mut self, e: &TransportError) {
        let now = Instant::now();
        if self
            .last
            .is_some_and(|t| now.duration_since(t) < ERROR_LOG_EVERY)
        {
            self.suppressed += 1;
            return;
        }
        tracing::warn!(error = %e, suppressed = self.suppressed, "simulator publish failed");
        self.last = Some(now);
        self.suppressed = 0;
    }
}

fn log_summary(stats: &SimStats, elapsed: Duration) {
    let s = stats.snapshot();
    let secs = elapsed.as_secs_f64();
    let rate = if secs > 0.0 {
        s.sent as f64 / secs
    } else {
        0.0
    };
    tracing::info!(
        sent = s.sent,
        errors = s.errors,
        malformed = s.malformed,
        silent = s.silent,
        elapsed = %crate::duration::format_duration(Duration::from_millis(elapsed.as_millis() as u64)),
        rate = format_args!("{rate:.0}"),
        "simulator stopped"
    );
}
