//! Subscribers: a consumer-group member ([`GroupSubscriber`], `Transport::subscribe`) and a
//! reader of every partition outside any group ([`StandaloneSubscriber`],
//! `KafkaTransport::subscribe_all`).
//!
//! Both receive through an rdkafka `StreamConsumer`, whose `recv` takes a message from
//! librdkafka's queue only in the poll that returns it; `recv_batch` copies that message out
//! and drains what is already queued without awaiting again, so dropping its future (as
//! `select!` does) never loses a message.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::FutureExt;
use iiot_transport::{Message, Subscriber, TransportError};
use rdkafka::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Message as _};
use rdkafka::statistics::Statistics;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

use crate::context::ClientEvents;

/// How long to wait after a receive error before polling again.
const ERROR_PAUSE: Duration = Duration::from_millis(100);
/// How long one attempt to learn a topic's partitions may take.
const METADATA_TIMEOUT: Duration = Duration::from_secs(5);
/// How long dropping a group member waits for its final commit and leave.
const CLOSE_WAIT: Duration = Duration::from_secs(5);

/// Consumer callbacks: rebalances (revoked partitions), statistics (lag), logging.
pub(crate) struct ConsumerEvents {
    pub(crate) events: ClientEvents,
    pub(crate) topic: Arc<str>,
    /// Partitions taken from this member and not given back, and the partitions it holds (or
    /// held until a revocation not yet taken) and those newly given to it, until
    /// `take_revoked` / `take_assigned`.
    pub(crate) partitions: Mutex<Partitions>,
    /// Messages of the assigned partitions not yet read, from the last statistics.
    pub(crate) lag: Arc<AtomicU64>,
}

/// What a member knows about its partitions between two looks of the processor.
#[derive(Debug, Default)]
pub(crate) struct Partitions {
    /// Taken away and not given back yet.
    revoked: Vec<i32>,
    /// Held: the processor has (or may build) state for their devices.
    held: Vec<i32>,
    /// Given and not held before.
    gained: Vec<i32>,
}

impl Partitions {
    fn revoke(&mut self, taken: Vec<i32>) {
        for p in taken {
            if !self.revoked.contains(&p) {
                self.revoked.push(p);
            }
        }
    }

    /// An eager rebalance revokes everything and gives some back: what came back was owned by
    /// nobody else in between, so its state is still good — neither revoked nor gained.
    fn assign(&mut self, given: Vec<i32>) {
        for p in given {
            if let Some(i) = self.revoked.iter().position(|&r| r == p) {
                self.revoked.swap_remove(i);
            } else if !self.held.contains(&p) {
                self.gained.push(p);
            }
            if !self.held.contains(&p) {
                self.held.push(p);
            }
        }
    }

    fn take_revoked(&mut self) -> Vec<i32> {
        let revoked = std::mem::take(&mut self.revoked);
        self.held.retain(|p| !revoked.contains(p));
        self.gained.retain(|p| !revoked.contains(p));
        revoked
    }
}

impl ConsumerEvents {
    pub(crate) fn partitions(&self) -> std::sync::MutexGuard<'_, Partitions> {
        self.partitions.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn partitions_of(&self, tpl: &TopicPartitionList) -> Vec<i32> {
        tpl.elements_for_topic(&self.topic)
            .iter()
            .map(|e| e.partition())
            .collect()
    }
}

impl ClientContext for ConsumerEvents {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        self.events.log(level, fac, message);
    }

    fn stats(&self, stats: Statistics) {
        let lag: i64 = stats
            .topics
            .get(&*self.topic)
            .map(|t| t.partitions.values().filter_map(unread).sum())
            .unwrap_or(0);
        self.lag.store(lag.max(0) as u64, Ordering::Relaxed);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.events.error(&error, reason);
    }
}

impl ConsumerContext for ConsumerEvents {
    fn pre_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            let taken = self.partitions_of(tpl);
            tracing::info!(topic = %self.topic, partitions = ?taken, "kafka: partitions revoked");
            self.partitions().revoke(taken);
        }
    }

    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => {
                let given = self.partitions_of(tpl);
                tracing::info!(topic = %self.topic, partitions = ?given, "kafka: partitions assigned");
                self.partitions().assign(given);
            }
            Rebalance::Revoke(_) => {}
            Rebalance::Error(e) => {
                if let Some(suppressed) = self.events.shared.consume_log.allow() {
                    tracing::warn!(topic = %self.topic, suppressed, "kafka: rebalance failed: {e}");
                }
            }
        }
    }

    fn commit_callback(&self, result: rdkafka::error::KafkaResult<()>, _: &TopicPartitionList) {
        match result {
            Ok(()) | Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
            Err(e) => {
                if let Some(suppressed) = self.events.shared.consume_log.allow() {
                    tracing::warn!(topic = %self.topic, suppressed, "kafka: offset commit failed: {e}");
                }
            }
        }
    }
}

/// Messages of an assigned partition not yet handed to the application: the end of the
/// partition (last stable offset, as the consumer reads committed data only) minus the position
/// (the offset of the next message `recv` returns, else the committed offset). `None` for
/// partitions not being fetched or whose position is unknown yet.
fn unread(p: &rdkafka::statistics::Partition) -> Option<i64> {
    if p.partition < 0 || matches!(p.fetch_state.as_str(), "none" | "stopping" | "stopped") {
        return None;
    }
    let end = if p.ls_offset >= 0 {
        p.ls_offset
    } else {
        p.hi_offset
    };
    let position = [p.app_offset, p.committed_offset]
        .into_iter()
        .find(|&o| o >= 0)?;
    (end >= 0).then(|| (end - position).max(0))
}

pub(crate) type EventConsumer = StreamConsumer<ConsumerEvents>;

fn to_message(topic: &Arc<str>, m: &BorrowedMessage<'_>) -> Message {
    Message {
        topic: topic.clone(),
        partition: m.partition(),
        offset: m.offset(),
        key: m.key().map(Bytes::copy_from_slice).unwrap_or_default(),
        payload: m.payload().map(Bytes::copy_from_slice).unwrap_or_default(),
        timestamp_ms: m.timestamp().to_millis(),
    }
}

/// Waits for one message, then appends what else is queued, up to `max`. Cancel-safe: the
/// only await is `recv`, which is; everything after it runs in the same poll.
async fn recv_into(
    consumer: &EventConsumer,
    topic: &Arc<str>,
    out: &mut Vec<Message>,
    max: usize,
) -> Result<usize, TransportError> {
    let shared = &consumer.context().events.shared;
    loop {
        match consumer.recv().await {
            Ok(m) => {
                out.push(to_message(topic, &m));
                let mut n = 1;
                while n < max {
                    match consumer.recv().now_or_never() {
                        Some(Ok(m)) => {
                            out.push(to_message(topic, &m));
                            n += 1;
                        }
                        // An error is reported by the next call; a pending poll means the
                        // queue is empty for now.
                        Some(Err(_)) | None => break,
                    }
                }
                return Ok(n);
            }
            Err(e) => {
                if let Some((code, reason)) = consumer.client().fatal_error() {
                    return Err(TransportError::Broker(format!("{code}: {reason}")));
                }
                if let Some(suppressed) = shared.consume_log.allow() {
                    tracing::warn!(%topic, suppressed, "kafka: receive failed: {e}");
                }
                tokio::time::sleep(ERROR_PAUSE).await;
            }
        }
    }
}

/// A consumer-group member on one topic.
pub(crate) struct GroupSubscriber {
    /// Always `Some` until dropped.
    pub(crate) consumer: Option<EventConsumer>,
    pub(crate) topic: Arc<str>,
}

impl GroupSubscriber {
    pub(crate) fn new(consumer: EventConsumer, topic: &str) -> Self {
        GroupSubscriber {
            consumer: Some(consumer),
            topic: Arc::from(topic),
        }
    }

    fn consumer(&self) -> Result<&EventConsumer, TransportError> {
        self.consumer.as_ref().ok_or(TransportError::Closed)
    }
}

impl Drop for GroupSubscriber {
    /// Closing commits the stored offsets and leaves the group. librdkafka blocks for that, for
    /// as long as it takes to give up on an unreachable broker: it runs on its own thread, and
    /// the drop waits at most [`CLOSE_WAIT`] for it.
    fn drop(&mut self) {
        let Some(consumer) = self.consumer.take() else {
            return;
        };
        let (closed, wait) = std::sync::mpsc::channel::<()>();
        let spawned = std::thread::Builder::new()
            .name("iiot-kafka-close".to_string())
            .spawn(move || {
                drop(consumer);
                let _ = closed.send(());
            });
        match spawned {
            Ok(_) => {
                if wait.recv_timeout(CLOSE_WAIT).is_err() {
                    tracing::warn!(topic = %self.topic, "kafka: consumer still closing; not waiting for it");
                }
            }
            Err(e) => tracing::warn!("kafka: no thread to close a consumer on: {e}"),
        }
    }
}

#[async_trait]
impl Subscriber for GroupSubscriber {
    async fn recv_batch(
        &mut self,
        out: &mut Vec<Message>,
        max: usize,
    ) -> Result<usize, TransportError> {
        recv_into(self.consumer()?, &self.topic, out, max.max(1)).await
    }

    fn commit(&mut self, message: &Message) -> Result<(), TransportError> {
        // Stored only: librdkafka commits stored offsets every second and on revoke/close.
        match self
            .consumer()?
            .store_offset(&message.topic, message.partition, message.offset)
        {
            Ok(()) => Ok(()),
            Err(KafkaError::StoreOffset(
                RDKafkaErrorCode::State | RDKafkaErrorCode::UnknownPartition,
            )) => {
                // The partition was revoked; its new owner reads the message again.
                tracing::debug!(
                    topic = %message.topic,
                    partition = message.partition,
                    "kafka: offset of a revoked partition not stored"
                );
                Ok(())
            }
            Err(e) => Err(TransportError::Broker(format!("storing offset: {e}"))),
        }
    }

    fn take_revoked(&mut self) -> Vec<i32> {
        match &self.consumer {
            Some(c) => c.context().partitions().take_revoked(),
            None => Vec::new(),
        }
    }

    fn take_assigned(&mut self) -> Vec<i32> {
        match &self.consumer {
            Some(c) => std::mem::take(&mut c.context().partitions().gained),
            None => Vec::new(),
        }
    }
}

/// Reads every partition of a topic from the end, outside any consumer group. Assigns itself
/// once it has learned the partitions (at once if a broker answers, else on the first receive
/// after one does).
pub(crate) struct StandaloneSubscriber {
    pub(crate) consumer: Arc<EventConsumer>,
    pub(crate) topic: Arc<str>,
    pub(crate) assigned: bool,
    pub(crate) start: crate::Start,
}

impl StandaloneSubscriber {
    /// Learns the partitions and assigns them at their current end (or their beginning).
    /// Blocks up to [`METADATA_TIMEOUT`] twice; call from a blocking thread.
    fn assign_all(
        consumer: &EventConsumer,
        topic: &str,
        start: crate::Start,
    ) -> Result<usize, KafkaError> {
        let metadata = consumer.fetch_metadata(Some(topic), METADATA_TIMEOUT)?;
        let partitions: Vec<i32> = metadata
            .topics()
            .iter()
            .filter(|t| t.name() == topic && t.error().is_none())
            .flat_map(|t| t.partitions().iter().map(|p| p.id()))
            .collect();
        if partitions.is_empty() {
            return Err(KafkaError::MetadataFetch(
                RDKafkaErrorCode::UnknownTopicOrPartition,
            ));
        }
        let mut tpl = TopicPartitionList::with_capacity(partitions.len());
        if start == crate::Start::Beginning {
            for &p in &partitions {
                tpl.add_partition_offset(topic, p, Offset::Beginning)?;
            }
            consumer.assign(&tpl)?;
            return Ok(partitions.len());
        }
        if let crate::Start::Since(ms) = start {
            // The first offset stamped at or after `ms` in each partition; a partition with
            // none (or a broker that cannot say) starts at its end.
            for &p in &partitions {
                tpl.add_partition_offset(topic, p, Offset::Offset(ms.max(0)))?;
            }
            let mut found = TopicPartitionList::with_capacity(partitions.len());
            let looked_up = match consumer.offsets_for_times(tpl, METADATA_TIMEOUT) {
                Ok(found) => Some(found),
                Err(e) => {
                    tracing::warn!(topic, error = %e, "kafka: offsets by timestamp unknown; reading from the end");
                    None
                }
            };
            for &p in &partitions {
                let offset = looked_up
                    .as_ref()
                    .and_then(|r| r.find_partition(topic, p))
                    .filter(|e| e.error().is_ok())
                    .map(|e| e.offset())
                    .filter(|o| matches!(o, Offset::Offset(_)))
                    .unwrap_or(Offset::End);
                found.add_partition_offset(topic, p, offset)?;
            }
            consumer.assign(&found)?;
            return Ok(partitions.len());
        }
        for &p in &partitions {
            tpl.add_partition_offset(topic, p, Offset::End)?;
        }
        // Resolve "the end" now rather than when fetching starts, so that what is published
        // after `subscribe_all` returns is read.
        let ends = consumer
            .offsets_for_times(tpl.clone(), METADATA_TIMEOUT)
            .ok()
            .filter(|r| {
                r.count() == partitions.len()
                    && r.elements()
                        .iter()
                        .all(|e| e.error().is_ok() && matches!(e.offset(), Offset::Offset(_)))
            })
            .unwrap_or(tpl);
        consumer.assign(&ends)?;
        Ok(partitions.len())
    }

    /// One assignment attempt on a blocking thread.
    pub(crate) async fn try_assign(&mut self) -> Result<(), TransportError> {
        let consumer = self.consumer.clone();
        let topic = self.topic.clone();
        let start = self.start;
        let result =
            tokio::task::spawn_blocking(move || Self::assign_all(&consumer, &topic, start))
                .await
                .map_err(|e| TransportError::Broker(format!("assigning partitions: {e}")))?;
        match result {
            Ok(n) => {
                self.assigned = true;
                let from = match self.start {
                    crate::Start::Beginning => "the beginning".to_string(),
                    crate::Start::End => "the end".to_string(),
                    crate::Start::Since(ms) => format!("records stamped since {ms} ms"),
                };
                tracing::info!(topic = %self.topic, partitions = n, "kafka: reading every partition from {from}");
                Ok(())
            }
            Err(e) => Err(TransportError::Broker(format!(
                "partitions of {}: {e}",
                self.topic
            ))),
        }
    }
}

#[async_trait]
impl Subscriber for StandaloneSubscriber {
    async fn recv_batch(
        &mut self,
        out: &mut Vec<Message>,
        max: usize,
    ) -> Result<usize, TransportError> {
        while !self.assigned {
            // An attempt whose future was dropped may still have assigned on its thread.
            if self.consumer.assignment().is_ok_and(|a| a.count() > 0) {
                self.assigned = true;
                break;
            }
            // Cancel-safe: an attempt dropped half-way has taken no message.
            if let Err(e) = self.try_assign().await {
                if let Some(suppressed) = self.consumer.context().events.shared.consume_log.allow()
                {
                    tracing::warn!(suppressed, "kafka: {e}; retrying");
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
        recv_into(&self.consumer, &self.topic, out, max.max(1)).await
    }

    fn commit(&mut self, _: &Message) -> Result<(), TransportError> {
        // Outside any group: nothing to commit, a restart reads from the end again.
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::Partitions;

    #[test]
    fn partitions_given_back_are_neither_revoked_nor_gained_and_new_ones_are_gained() {
        let mut p = Partitions::default();
        p.assign(vec![0, 1, 2]);
        assert_eq!(
            std::mem::take(&mut p.gained),
            vec![0, 1, 2],
            "the first assignment"
        );
        // An eager rebalance: everything revoked, 0 and 1 back, 5 new.
        p.revoke(vec![0, 1, 2]);
        p.assign(vec![0, 1, 5]);
        assert_eq!(p.take_revoked(), vec![2]);
        assert_eq!(std::mem::take(&mut p.gained), vec![5]);
        // A partition revoked (and taken) and given again later is gained again.
        p.revoke(vec![5]);
        assert_eq!(p.take_revoked(), vec![5]);
        p.assign(vec![5]);
        assert_eq!(std::mem::take(&mut p.gained), vec![5]);
    }
}
