//! Event → client latency: how long after its event time a message was written to a client's
//! socket. Lock-free fixed buckets (every writer task records into the same counters), which is
//! also the shape Prometheus histograms take.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

/// Upper bounds of the buckets, in ms; a last, unbounded bucket follows.
pub const BOUNDS_MS: [u64; 14] = [
    1, 2, 5, 10, 20, 50, 100, 200, 500, 1_000, 2_000, 5_000, 10_000, 60_000,
];

/// The shared counters.
#[derive(Debug, Default)]
pub(crate) struct Latency {
    buckets: [AtomicU64; BOUNDS_MS.len() + 1],
    sum_ms: AtomicU64,
}

/// A copy of the counters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
pub struct LatencySnapshot {
    /// Messages counted in each bucket (not cumulative); the last one is beyond the last bound.
    pub buckets: Vec<u64>,
    /// Sum of all latencies, ms.
    pub sum_ms: u64,
    /// Messages measured.
    pub count: u64,
}

impl Latency {
    /// Records one delivery of a message whose event time is `event_ms`, at `now_ms`. A
    /// message without an event time (0) is not measured; a clock behind the device counts 0.
    pub(crate) fn record(&self, event_ms: i64, now_ms: i64) {
        if event_ms <= 0 {
            return;
        }
        let ms = now_ms.saturating_sub(event_ms).max(0) as u64;
        let i = BOUNDS_MS
            .iter()
            .position(|b| ms <= *b)
            .unwrap_or(BOUNDS_MS.len());
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.sum_ms.fetch_add(ms, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> LatencySnapshot {
        let buckets: Vec<u64> = self
            .buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect();
        LatencySnapshot {
            count: buckets.iter().sum(),
            buckets,
            sum_ms: self.sum_ms.load(Ordering::Relaxed),
        }
    }
}

impl LatencySnapshot {
    /// The upper bound (ms) of the bucket holding quantile `q` (0–1): "at most this". `None`
    /// with no measurement, or when the quantile is beyond the last bound.
    pub fn quantile_ms(&self, q: f64) -> Option<u64> {
        if self.count == 0 {
            return None;
        }
        let rank = ((self.count as f64) * q.clamp(0.0, 1.0)).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, n) in self.buckets.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return BOUNDS_MS.get(i).copied();
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_and_quantiles() {
        let l = Latency::default();
        for ms in [0, 1, 3, 3, 40, 40, 40, 40, 40, 700] {
            l.record(1_000_000, 1_000_000 + ms);
        }
        l.record(0, 5); // no event time: not measured
        let s = l.snapshot();
        assert_eq!(s.count, 10);
        assert_eq!(s.sum_ms, 1 + 3 + 3 + 5 * 40 + 700);
        assert_eq!(s.quantile_ms(0.5), Some(50));
        assert_eq!(s.quantile_ms(0.2), Some(1));
        assert_eq!(s.quantile_ms(0.99), Some(1_000));
        assert_eq!(LatencySnapshot::default().quantile_ms(0.5), None);
    }
}
