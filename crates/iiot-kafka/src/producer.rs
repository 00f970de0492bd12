//! The publisher: one idempotent librdkafka producer per transport, shared by every task.
//!
//! Each message carries a [`Delivery`] through librdkafka; its delivery report resolves the
//! message's [`Receipt`] and updates the counters (sent, errors, publish → delivered duration,
//! messages in flight). A full local queue makes `publish` wait for deliveries to make room.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use iiot_transport::{Publisher, Receipt, TransportError};
use rdkafka::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::statistics::Statistics;
use tokio::sync::oneshot;

use crate::context::{ClientEvents, ProducerCounters, Shared};

/// Deliveries wake a publisher waiting for room and a flush waiting for the end; this is how long
/// they wait at most before looking again anyway.
const RETRY_AFTER: Duration = Duration::from_millis(100);

/// What travels with a message through librdkafka to its delivery report.
pub(crate) struct Delivery {
    published: Instant,
    done: oneshot::Sender<Result<(), TransportError>>,
}

/// Producer callbacks: delivery reports, statistics (batches), logging.
pub(crate) struct ProducerEvents {
    pub(crate) events: ClientEvents,
}

impl ClientContext for ProducerEvents {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        self.events.log(level, fac, message);
    }

    fn stats(&self, stats: Statistics) {
        // Produce requests over all brokers; each broker's count only grows.
        let produce: i64 = stats
            .brokers
            .values()
            .filter_map(|b| b.req.get("Produce"))
            .sum();
        self.events
            .shared
            .producer
            .batches
            .fetch_max(produce.max(0) as u64, Ordering::Relaxed);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.events.error(&error, reason);
    }
}

impl ProducerContext for ProducerEvents {
    type DeliveryOpaque = Box<Delivery>;

    fn delivery(&self, result: &DeliveryResult<'_>, delivery: Box<Delivery>) {
        let counters = &self.events.shared.producer;
        counters.in_flight.fetch_sub(1, Ordering::Relaxed);
        let outcome = match result {
            Ok(_) => {
                counters.sent.fetch_add(1, Ordering::Relaxed);
                counters.record_duration(delivery.published.elapsed());
                Ok(())
            }
            Err((e, _)) => {
                counters.errors.fetch_add(1, Ordering::Relaxed);
                if let Some(suppressed) = self.events.shared.delivery_log.allow() {
                    tracing::warn!(suppressed, "kafka: delivery failed: {e}");
                }
                Err(classify(e))
            }
        };
        // The receipt may have been dropped: nobody waits for this message.
        let _ = delivery.done.send(outcome);
        counters.progressed();
    }
}

/// A failed produce as a [`TransportError`]: [`TransportError::Refused`] when the message itself
/// is the problem (too large, invalid, or sent to a partition the topic does not have) and no
/// retry can help; [`TransportError::Delivery`] otherwise.
fn classify(e: &rdkafka::error::KafkaError) -> TransportError {
    use RDKafkaErrorCode as C;
    match e.rdkafka_error_code() {
        Some(
            C::MessageSizeTooLarge
            | C::InvalidMessageSize
            | C::InvalidRecord
            | C::InvalidArgument
            // librdkafka's own verdict once it knows the topic's partitions: the one asked for
            // (`publish_to`) is not among them. Not the broker's UnknownTopicOrPartition, which
            // a topic being created answers for a while.
            | C::UnknownPartition,
        ) => TransportError::Refused(e.to_string()),
        _ => TransportError::Delivery(e.to_string()),
    }
}

/// The transport's publisher.
pub(crate) struct KafkaPublisher {
    pub(crate) producer: ThreadedProducer<ProducerEvents>,
    pub(crate) shared: Arc<Shared>,
}

/// Registers a task as waiting for deliveries (so the delivery callback wakes it) for as long
/// as it lives, even if the waiting future is dropped.
struct Waiting<'a>(&'a ProducerCounters);

impl<'a> Waiting<'a> {
    fn new(counters: &'a ProducerCounters) -> Self {
        counters.waiters.fetch_add(1, Ordering::AcqRel);
        Waiting(counters)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.waiters.fetch_sub(1, Ordering::AcqRel);
    }
}

#[async_trait]
impl Publisher for KafkaPublisher {
    async fn publish(
        &self,
        topic: &str,
        key: &[u8],
        payload: Bytes,
    ) -> Result<Receipt, TransportError> {
        self.publish_record(topic, None, key, payload).await
    }

    async fn flush(&self) -> Result<(), TransportError> {
        let counters = &self.shared.producer;
        let _waiting = Waiting::new(counters);
        loop {
            let notified = counters.progress.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if counters.in_flight.load(Ordering::Relaxed) <= 0 {
                return Ok(());
            }
            // A zero-timeout flush does not block; it tells librdkafka to send what lingers now.
            let _ = self.producer.flush(Duration::ZERO);
            let _ = tokio::time::timeout(RETRY_AFTER, notified).await;
        }
    }
}

impl KafkaPublisher {
    /// Enqueues one record, to `partition` if given (else the partitioner's choice by key),
    /// waiting while librdkafka's queue is full.
    pub(crate) async fn publish_record(
        &self,
        topic: &str,
        partition: Option<i32>,
        key: &[u8],
        payload: Bytes,
    ) -> Result<Receipt, TransportError> {
        let counters = &self.shared.producer;
        let (done, receipt) = oneshot::channel();
        let mut delivery = Box::new(Delivery {
            published: Instant::now(),
            done,
        });
        let mut waiting: Option<Waiting<'_>> = None;
        loop {
            // Enabled before trying: a delivery between the attempt and the wait wakes it.
            let notified = counters.progress.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            // Counted before the send: the delivery report may come before `send` returns.
            counters.in_flight.fetch_add(1, Ordering::Relaxed);
            let mut record = BaseRecord::<[u8], [u8], _>::with_opaque_to(topic, delivery).key(key);
            // An empty payload goes as Kafka's null: a tombstone, which compaction removes
            // with its key (a deleted silence, say). Readers see it as empty again.
            if !payload.is_empty() {
                record = record.payload(&payload[..]);
            }
            if let Some(p) = partition {
                record = record.partition(p);
            }
            match self.producer.send(record) {
                Ok(()) => break,
                Err((e, record)) => {
                    counters.in_flight.fetch_sub(1, Ordering::Relaxed);
                    delivery = record.delivery_opaque;
                    if e.rdkafka_error_code() != Some(RDKafkaErrorCode::QueueFull) {
                        counters.errors.fetch_add(1, Ordering::Relaxed);
                        return Err(classify(&e));
                    }
                    if waiting.is_none() {
                        // Registered now, the next attempt's wake-up cannot be missed: try
                        // again at once.
                        counters.backpressure_waits.fetch_add(1, Ordering::Relaxed);
                        waiting = Some(Waiting::new(counters));
                        continue;
                    }
                    let _ = tokio::time::timeout(RETRY_AFTER, notified).await;
                }
            }
        }
        Ok(Receipt::Pending(Box::pin(async move {
            receipt.await.unwrap_or(Err(TransportError::Closed))
        })))
    }
}
