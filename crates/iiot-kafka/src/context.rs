//! What every librdkafka client of the transport shares: the counters that leave the crate as
//! [`BackendMetrics`], the readiness flag, and rate-limited logging of broker trouble.
//!
//! librdkafka reports a broker that is down on every reconnect attempt and a failed delivery
//! per message; [`RateLimit`] keeps that to one line per interval, with the count of what it
//! held back.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use iiot_transport::{BackendMetrics, SEND_DURATION_BOUNDS_MS};
use rdkafka::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::KafkaError;
use rdkafka::statistics::Statistics;
use tokio::sync::Notify;

/// Lets one event through per interval and counts the ones it held back.
#[derive(Debug)]
pub(crate) struct RateLimit {
    interval: Duration,
    last: Mutex<Option<Instant>>,
    suppressed: AtomicU64,
}

impl RateLimit {
    pub(crate) fn new(interval: Duration) -> Self {
        RateLimit {
            interval,
            last: Mutex::new(None),
            suppressed: AtomicU64::new(0),
        }
    }

    /// `Some(held back since the last one)` if this event may be logged now.
    pub(crate) fn allow(&self) -> Option<u64> {
        let now = Instant::now();
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        match *last {
            Some(t) if now.duration_since(t) < self.interval => {
                self.suppressed.fetch_add(1, Ordering::Relaxed);
                None
            }
            _ => {
                *last = Some(now);
                Some(self.suppressed.swap(0, Ordering::Relaxed))
            }
        }
    }
}

/// Producer counters; the delivery callback and `publish` update them.
#[derive(Debug)]
pub(crate) struct ProducerCounters {
    pub(crate) sent: AtomicU64,
    pub(crate) errors: AtomicU64,
    pub(crate) batches: AtomicU64,
    pub(crate) in_flight: AtomicI64,
    pub(crate) backpressure_waits: AtomicU64,
    pub(crate) duration_buckets: [AtomicU64; SEND_DURATION_BOUNDS_MS.len() + 1],
    pub(crate) duration_sum_us: AtomicU64,
    /// Woken on deliveries while a publisher waits for room or `flush` for the end.
    pub(crate) progress: Notify,
    pub(crate) waiters: AtomicUsize,
}

impl Default for ProducerCounters {
    fn default() -> Self {
        ProducerCounters {
            sent: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            batches: AtomicU64::new(0),
            in_flight: AtomicI64::new(0),
            backpressure_waits: AtomicU64::new(0),
            duration_buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            duration_sum_us: AtomicU64::new(0),
            progress: Notify::new(),
            waiters: AtomicUsize::new(0),
        }
    }
}

impl ProducerCounters {
    pub(crate) fn record_duration(&self, d: Duration) {
        let ms = d.as_secs_f64() * 1000.0;
        let bucket = BackendMetrics::send_duration_bucket(ms);
        self.duration_buckets[bucket].fetch_add(1, Ordering::Relaxed);
        self.duration_sum_us
            .fetch_add(d.as_micros() as u64, Ordering::Relaxed);
    }

    /// Wakes whoever waits for progress (room in the queue, the end of a flush).
    pub(crate) fn progressed(&self) {
        if self.waiters.load(Ordering::Acquire) > 0 {
            self.progress.notify_waiters();
        }
    }
}

/// State shared by the transport and every client it made.
#[derive(Debug)]
pub(crate) struct Shared {
    /// Whether a broker answered the last probe.
    pub(crate) ready: AtomicBool,
    pub(crate) producer: ProducerCounters,
    /// Consumer lag of each live consumer (dropped consumers fall out).
    consumers: Mutex<Vec<Weak<AtomicU64>>>,
    /// Broker connectivity trouble, from any client.
    pub(crate) broker_log: RateLimit,
    /// Failed deliveries.
    pub(crate) delivery_log: RateLimit,
    /// Errors while receiving.
    pub(crate) consume_log: RateLimit,
}

impl Shared {
    pub(crate) fn new(log_interval: Duration) -> Self {
        Shared {
            ready: AtomicBool::new(false),
            producer: ProducerCounters::default(),
            consumers: Mutex::new(Vec::new()),
            broker_log: RateLimit::new(log_interval),
            delivery_log: RateLimit::new(log_interval),
            consume_log: RateLimit::new(log_interval),
        }
    }

    /// A lag cell for a new consumer, counted until the consumer is dropped.
    pub(crate) fn register_consumer(&self) -> Arc<AtomicU64> {
        let lag = Arc::new(AtomicU64::new(0));
        let mut all = self.consumers.lock().unwrap_or_else(|e| e.into_inner());
        all.retain(|w| w.strong_count() > 0);
        all.push(Arc::downgrade(&lag));
        lag
    }

    pub(crate) fn metrics(&self) -> BackendMetrics {
        let p = &self.producer;
        let consumer_lag = self
            .consumers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter_map(Weak::upgrade)
            .map(|l| l.load(Ordering::Relaxed))
            .sum();
        BackendMetrics {
            messages_sent: p.sent.load(Ordering::Relaxed),
            send_errors: p.errors.load(Ordering::Relaxed),
            batches_sent: p.batches.load(Ordering::Relaxed),
            buffer_depth: p.in_flight.load(Ordering::Relaxed).max(0) as u64,
            backpressure_waits: p.backpressure_waits.load(Ordering::Relaxed),
            send_duration_buckets: p
                .duration_buckets
                .iter()
                .map(|b| b.load(Ordering::Relaxed))
                .collect(),
            send_duration_sum_s: p.duration_sum_us.load(Ordering::Relaxed) as f64 / 1e6,
            consumer_lag,
            connected: self.ready.load(Ordering::Relaxed),
        }
    }
}

/// The part of every client context that logs and reacts to broker trouble.
#[derive(Debug, Clone)]
pub(crate) struct ClientEvents {
    /// Which client this is, in log lines (`producer`, `consumer`, `admin`).
    pub(crate) client: &'static str,
    pub(crate) shared: Arc<Shared>,
}

impl ClientEvents {
    pub(crate) fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        match level {
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error
            | RDKafkaLogLevel::Warning => {
                if let Some(suppressed) = self.shared.broker_log.allow() {
                    tracing::warn!(
                        client = self.client,
                        facility = fac,
                        suppressed,
                        "kafka: {message}"
                    );
                }
            }
            RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
                tracing::debug!(client = self.client, facility = fac, "kafka: {message}");
            }
            RDKafkaLogLevel::Debug => {
                tracing::trace!(client = self.client, facility = fac, "kafka: {message}");
            }
        }
    }

    /// Logs (rate-limited). Readiness is left to the probe: a consumer's errors are delivered
    /// when it is next polled, possibly long after the broker came back.
    pub(crate) fn error(&self, error: &KafkaError, reason: &str) {
        if let Some(suppressed) = self.shared.broker_log.allow() {
            tracing::warn!(client = self.client, suppressed, "kafka: {error}: {reason}");
        }
    }
}

/// Context of the admin client and of anything that needs only logging.
#[derive(Debug, Clone)]
pub(crate) struct PlainContext(pub(crate) ClientEvents);

impl rdkafka::consumer::ConsumerContext for PlainContext {}

impl ClientContext for PlainContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        self.0.log(level, fac, message);
    }

    fn stats(&self, _: Statistics) {}

    fn error(&self, error: KafkaError, reason: &str) {
        self.0.error(&error, reason);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limit_lets_one_through_per_interval_and_counts_the_rest() {
        let r = RateLimit::new(Duration::from_secs(3600));
        assert_eq!(r.allow(), Some(0));
        assert_eq!(r.allow(), None);
        assert_eq!(r.allow(), None);
        let r0 = RateLimit::new(Duration::ZERO);
        assert_eq!(r0.allow(), Some(0));
        assert_eq!(r0.allow(), Some(0));
    }

    #[test]
    fn metrics_sum_live_consumers_only() {
        let s = Shared::new(Duration::from_secs(1));
        let a = s.register_consumer();
        let b = s.register_consumer();
        a.store(5, Ordering::Relaxed);
        b.store(7, Ordering::Relaxed);
        assert_eq!(s.metrics().consumer_lag, 12);
        drop(b);
        assert_eq!(s.metrics().consumer_lag, 5);
        s.producer.record_duration(Duration::from_millis(3));
        let m = s.metrics();
        assert_eq!(
            m.send_duration_buckets.len(),
            SEND_DURATION_BOUNDS_MS.len() + 1
        );
        assert_eq!(
            m.send_duration_buckets[3], 1,
            "3 ms lands in the ≤ 5 ms bucket"
        );
        assert!((m.send_duration_sum_s - 0.003).abs() < 1e-9);
    }
}
