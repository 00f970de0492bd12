//! The periodic status line of the roles that process: rates and latency over the last interval,
//! totals since start.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::backend::Backend;
use crate::processor::ProcessorStats;
use crate::simulator::SimStats;

/// What the status line reads.
pub struct StatusInput {
    /// The simulator's counters, when the process runs one.
    pub simulator: Option<Arc<SimStats>>,
    /// The processors' counters.
    pub stats: Arc<ProcessorStats>,
    /// The backend (lag, backpressure).
    pub backend: Backend,
    /// The processors' input topic.
    pub topic: String,
    /// Their consumer group.
    pub group: String,
}

/// Logs one status line every `every` (nothing when zero) until `stop`.
pub fn spawn(every: Duration, input: StatusInput, stop: CancellationToken) -> JoinHandle<()> {
    tokio::spawn(async move {
        if every.is_zero() {
            return;
        }
        let mut tick = tokio::time::interval(every);
        tick.tick().await;
        let stats = &input.stats;
        let mut last = (Instant::now(), 0u64);
        let mut seen = stats.latency_snapshot();
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            let processed = stats.processed.load(Ordering::Relaxed);
            let rate = (processed - last.1) as f64 / last.0.elapsed().as_secs_f64().max(1e-9);
            last = (Instant::now(), processed);
            let now = stats.latency_snapshot();
            let mut window = now.clone();
            // `now` only ever grows from `seen`, so the subtraction cannot underflow.
            let _ = window.subtract(&seen);
            seen = now;
            let (p50, p99) = (
                (window.value_at_quantile(0.5) as f64 / 1000.0).round(),
                (window.value_at_quantile(0.99) as f64 / 1000.0).round(),
            );
            tracing::info!(
                "status: {rate:.0} msg/s, sent {}, processed {processed}, dead letters {}, seq gaps {}, \
                 alerts open {} (raised {}), devices {}, event→processed p50 {p50} ms p99 {p99} ms, \
                 lag {} waits {}",
                input
                    .simulator
                    .as_ref()
                    .map_or(0, |s| s.sent.load(Ordering::Relaxed)),
                stats.dead_letters_total(),
                stats.seq_gaps.load(Ordering::Relaxed),
                stats.alerts_open.load(Ordering::Relaxed),
                stats.alerts_raised.load(Ordering::Relaxed),
                stats.devices.load(Ordering::Relaxed),
                input.backend.lag(&input.topic, &input.group),
                input.backend.metrics().backpressure_waits,
            );
        }
    })
}
