//! Subscribers: a consumer-group member ([`GroupSubscriber`], `Transport::subscribe`) and a
//! reader of every partition outside any group ([`StandaloneSubscriber`],
//! `KafkaTransport::subscribe_all`).
//!
//! Both receive through an rdkafka `StreamConsumer`, whose `recv` takes a message from
//! librdkafka's queue only in the poll that returns it; `recv_batch` copies that message out
//! and drains what is already queued without awaiting again, so dropping its future (as
//! `select!` does) never loses a message.

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::FutureExt;
use iiot_transport::{Message, Ownership, Subscriber, TransportError};
use rdkafka::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedHeaders, BorrowedMessage, Headers as _, Message as _};
use rdkafka::statistics::Statistics;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

use crate::config::Headers;
use crate::context::ClientEvents;

/// How long to wait after a receive error before polling again.
const ERROR_PAUSE: Duration = Duration::from_millis(100);
/// How long one attempt to learn a topic's partitions may take.
const METADATA_TIMEOUT: Duration = Duration::from_secs(5);
/// How long dropping a group member waits for its final commit and leave.
const CLOSE_WAIT: Duration = Duration::from_secs(5);

/// Consumer callbacks: rebalances (revoked and assigned partitions), statistics (lag),
/// logging.
pub(crate) struct ConsumerEvents {
    pub(crate) events: ClientEvents,
    pub(crate) topic: Arc<str>,
    /// What the processor has not been told yet about the partitions, and which it holds now
    /// (with the epoch of each assignment).
    pub(crate) partitions: Mutex<Partitions>,
    /// Messages of the assigned partitions not yet read, from the last statistics.
    pub(crate) lag: Arc<AtomicU64>,
}

/// What a member knows about its partitions between two looks of the processor
/// (`take_revoked`, then `take_assigned`).
///
/// Every revocation is reported and every assignment is reported as gained, even when a
/// partition is revoked and given back before the processor looks (an eager rebalance, or two
/// rebalances between two looks): the member cannot tell whether another member owned the
/// partition in between — a member dropped from the group (a poll interval exceeded, a session
/// lost) or rejoining under a new member id misses whole generations — so its in-memory state
/// of the partition may be stale and is read back again.
#[derive(Debug, Default)]
pub(crate) struct Partitions {
    /// Revoked since the last look (given back since or not).
    revoked: Vec<i32>,
    /// Assigned since the last look and still held.
    gained: Vec<i32>,
    /// Held now, each with the epoch of its assignment.
    held: Vec<(i32, u64)>,
    /// The last epoch handed out (one per assignment of a partition).
    last_epoch: u64,
}

impl Partitions {
    fn revoke(&mut self, taken: &[i32]) {
        for &p in taken {
            if !self.revoked.contains(&p) {
                self.revoked.push(p);
            }
            self.gained.retain(|&g| g != p);
            self.held.retain(|&(h, _)| h != p);
        }
    }

    fn assign(&mut self, given: &[i32]) {
        for &p in given {
            if self.held.iter().any(|&(h, _)| h == p) {
                // Assigned again without a revocation seen in between (a failed rebalance
                // unassigns without one): as revoked and assigned.
                self.revoke(&[p]);
            }
            self.last_epoch += 1;
            self.held.push((p, self.last_epoch));
            if !self.gained.contains(&p) {
                self.gained.push(p);
            }
        }
    }

    /// Revokes what is held but not in `assigned` (the consumer's assignment after a failed
    /// rebalance, which unassigns without a revocation).
    fn keep_only(&mut self, assigned: &[i32]) {
        let gone: Vec<i32> = self
            .held
            .iter()
            .map(|&(p, _)| p)
            .filter(|p| !assigned.contains(p))
            .collect();
        self.revoke(&gone);
    }

    pub(crate) fn take_revoked(&mut self) -> Vec<i32> {
        std::mem::take(&mut self.revoked)
    }

    pub(crate) fn take_assigned(&mut self) -> Vec<i32> {
        std::mem::take(&mut self.gained)
    }

    /// The epoch of `partition`'s current assignment, if it is held.
    pub(crate) fn epoch(&self, partition: i32) -> Option<u64> {
        self.held
            .iter()
            .find(|&&(p, _)| p == partition)
            .map(|&(_, e)| e)
    }
}

impl ConsumerEvents {
    pub(crate) fn partitions(&self) -> std::sync::MutexGuard<'_, Partitions> {
        self.partitions.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The partitions of this topic in `tpl`, in order.
    fn partitions_of(&self, tpl: &TopicPartitionList) -> Vec<i32> {
        let mut partitions: Vec<i32> = tpl
            .elements_for_topic(&self.topic)
            .iter()
            .map(|e| e.partition())
            .collect();
        partitions.sort_unstable();
        partitions
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
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            let taken = self.partitions_of(tpl);
            if consumer.assignment_lost() {
                // Not handed over: this member was dropped from the group (its session or
                // `max.poll.interval.ms` ran out), and the others may own them already.
                tracing::warn!(topic = %self.topic, partitions = ?taken, "kafka: partitions lost");
            } else {
                tracing::info!(topic = %self.topic, partitions = ?taken, "kafka: partitions revoked");
            }
            self.partitions().revoke(&taken);
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => {
                let given = self.partitions_of(tpl);
                tracing::info!(topic = %self.topic, partitions = ?given, "kafka: partitions assigned");
                self.partitions().assign(&given);
            }
            Rebalance::Revoke(_) => {}
            Rebalance::Error(e) => {
                if let Some(suppressed) = self.events.shared.consume_log.allow() {
                    tracing::warn!(topic = %self.topic, suppressed, "kafka: rebalance failed: {e}");
                }
                // The failed rebalance unassigned partitions without a revocation: what is no
                // longer assigned counts as revoked (nothing, if the assignment cannot be read).
                if let Ok(tpl) = consumer.assignment() {
                    let assigned = self.partitions_of(&tpl);
                    self.partitions().keep_only(&assigned);
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

/// `m` copied out of librdkafka, as read from `topic`; its headers are looked at only when
/// `headers` is [`Headers::Text`].
pub(crate) fn to_message(topic: &Arc<str>, m: &BorrowedMessage<'_>, headers: Headers) -> Message {
    Message {
        topic: topic.clone(),
        partition: m.partition(),
        offset: m.offset(),
        key: m.key().map(Bytes::copy_from_slice).unwrap_or_default(),
        payload: m.payload().map(Bytes::copy_from_slice).unwrap_or_default(),
        timestamp_ms: m.timestamp().to_millis(),
        bad_header: match headers {
            Headers::Text => m.headers().and_then(bad_header),
            Headers::Any => None,
        },
    }
}

/// Why `headers` cannot be read as text: the first header whose key or value is not UTF-8.
fn bad_header(headers: &BorrowedHeaders) -> Option<Box<str>> {
    for i in 0..headers.count() {
        // rdkafka turns a header's key into `&str` with an unwrap: a key that is not UTF-8
        // (no Kafka client writes one, a hand-made request can) panics there, in Rust code
        // after the FFI call has returned, so the unwind is caught here rather than stopping
        // the consumer, and kept off stderr (the record is dead-lettered with this reason).
        let header = match quietly(|| headers.try_get(i)) {
            Err(_) => return Some(format!("header {i}'s key is not UTF-8").into()),
            Ok(None) => return None,
            Ok(Some(header)) => header,
        };
        if let Some(value) = header.value
            && let Err(e) = std::str::from_utf8(value)
        {
            return Some(
                format!(
                    "header {}'s value ({} bytes) is not UTF-8 (from byte {})",
                    quoted(header.key),
                    value.len(),
                    e.valid_up_to()
                )
                .into(),
            );
        }
    }
    None
}

/// Most bytes of a header key quoted in a `bad_header` detail: a dead letter must stay small
/// whatever the producer wrote.
const HEADER_KEY_QUOTED: usize = 64;

/// `key` quoted, cut to [`HEADER_KEY_QUOTED`] bytes (with its length when cut).
fn quoted(key: &str) -> String {
    if key.len() <= HEADER_KEY_QUOTED {
        return format!("{key:?}");
    }
    let mut end = HEADER_KEY_QUOTED;
    while !key.is_char_boundary(end) {
        end -= 1;
    }
    format!("{:?}… ({} bytes)", &key[..end], key.len())
}

thread_local! {
    /// Set while [`quietly`] runs its closure on this thread.
    static QUIET: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `f`, catching a panic without the panic hook's report. The hook is wrapped once, the
/// first time: panics elsewhere reach the hook that was there before.
fn quietly<T>(f: impl FnOnce() -> T) -> std::thread::Result<T> {
    static WRAPPED: std::sync::Once = std::sync::Once::new();
    WRAPPED.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !QUIET.with(std::cell::Cell::get) {
                previous(info);
            }
        }));
    });
    QUIET.with(|q| q.set(true));
    let result = std::panic::catch_unwind(AssertUnwindSafe(f));
    QUIET.with(|q| q.set(false));
    result
}

/// Waits for one message, then appends what else is queued, up to `max`. Cancel-safe: the
/// only await is `recv`, which is; everything after it runs in the same poll.
async fn recv_into(
    consumer: &EventConsumer,
    topic: &Arc<str>,
    headers: Headers,
    out: &mut Vec<Message>,
    max: usize,
) -> Result<usize, TransportError> {
    let shared = &consumer.context().events.shared;
    loop {
        match consumer.recv().await {
            Ok(m) => {
                out.push(to_message(topic, &m, headers));
                let mut n = 1;
                while n < max {
                    match consumer.recv().now_or_never() {
                        Some(Ok(m)) => {
                            out.push(to_message(topic, &m, headers));
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
    /// Always `Some` until dropped; shared (weakly) with its [`GroupOwnership`] only.
    pub(crate) consumer: Option<Arc<EventConsumer>>,
    pub(crate) topic: Arc<str>,
    pub(crate) headers: Headers,
}

impl GroupSubscriber {
    pub(crate) fn new(consumer: EventConsumer, topic: &str, headers: Headers) -> Self {
        GroupSubscriber {
            consumer: Some(Arc::new(consumer)),
            topic: Arc::from(topic),
            headers,
        }
    }

    fn consumer(&self) -> Result<&EventConsumer, TransportError> {
        self.consumer.as_deref().ok_or(TransportError::Closed)
    }
}

/// [`iiot_transport::Ownership`] of a group member: the epochs its rebalance callbacks hand
/// out, and nothing while librdkafka considers the assignment lost (`rd_kafka_assignment_lost`:
/// the poll interval was exceeded or the session timed out, so the group may already have
/// given the partitions to another member, while the revocation reaches this member only at
/// its next poll). Nothing either once the member is closed.
#[derive(Debug)]
pub(crate) struct GroupOwnership {
    consumer: std::sync::Weak<EventConsumer>,
}

impl Ownership for GroupOwnership {
    fn epoch(&self, partition: i32) -> Option<u64> {
        let consumer = self.consumer.upgrade()?;
        if consumer.assignment_lost() {
            return None;
        }
        consumer.context().partitions().epoch(partition)
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
        recv_into(self.consumer()?, &self.topic, self.headers, out, max.max(1)).await
    }

    fn commit(&mut self, message: &Message) -> Result<(), TransportError> {
        let consumer = self.consumer()?;
        if consumer.assignment_lost() {
            // The group may have given the partition to another member, which reads the
            // message again; nothing is stored for a revocation still to come.
            tracing::debug!(
                topic = %message.topic,
                partition = message.partition,
                "kafka: assignment lost; offset not stored"
            );
            return Ok(());
        }
        // Stored only: librdkafka commits stored offsets every second and on revoke/close.
        match consumer.store_offset(&message.topic, message.partition, message.offset) {
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
            Some(c) => c.context().partitions().take_assigned(),
            None => Vec::new(),
        }
    }

    fn ownership(&self) -> Option<Arc<dyn Ownership>> {
        let consumer = self.consumer.as_ref()?;
        Some(Arc::new(GroupOwnership {
            consumer: Arc::downgrade(consumer),
        }))
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
    pub(crate) headers: Headers,
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
        recv_into(&self.consumer, &self.topic, self.headers, out, max.max(1)).await
    }

    fn commit(&mut self, _: &Message) -> Result<(), TransportError> {
        // Outside any group: nothing to commit, a restart reads from the end again.
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use rdkafka::message::{Header, OwnedHeaders};

    use super::{Partitions, bad_header, quietly};

    /// Issue 12: headers that are text pass; the first value that is not is named, with a
    /// producer's huge key cut so that the dead letter stays small.
    #[test]
    fn a_header_that_is_not_text_is_named_and_a_huge_key_cut() {
        let text = OwnedHeaders::new()
            .insert(Header {
                key: "traceparent",
                value: Some("00-4bf92f3577b34da6-00f067aa0ba902b7-01"),
            })
            .insert(Header {
                key: "empty",
                value: None::<&[u8]>,
            });
        assert_eq!(bad_header(text.as_borrowed()), None);
        let binary: &[u8] = &[b'o', b'k', 0xff];
        let bad = OwnedHeaders::new().insert(Header {
            key: "origin",
            value: Some(binary),
        });
        let detail = bad_header(bad.as_borrowed()).expect("named");
        assert_eq!(
            &*detail,
            "header \"origin\"'s value (3 bytes) is not UTF-8 (from byte 2)"
        );
        let key = "é".repeat(250_000);
        let huge = OwnedHeaders::new().insert(Header {
            key: &key,
            value: Some(binary),
        });
        let detail = bad_header(huge.as_borrowed()).expect("named");
        assert!(detail.len() < 200, "{detail}");
        assert!(detail.contains("(500000 bytes)"), "{detail}");
    }

    /// The catch around rdkafka's header read: a panic there comes back as an error.
    #[test]
    fn a_panic_in_a_quiet_call_is_caught() {
        let caught = quietly(|| -> u8 { panic!("a header key that is not UTF-8") });
        assert!(caught.is_err());
        assert_eq!(quietly(|| 7).expect("no panic"), 7);
    }

    #[test]
    fn every_revocation_is_reported_and_every_assignment_gained_with_a_new_epoch() {
        let mut p = Partitions::default();
        p.assign(&[0, 1, 2]);
        assert_eq!(p.take_revoked(), Vec::<i32>::new());
        assert_eq!(p.take_assigned(), vec![0, 1, 2], "the first assignment");
        let first = p.epoch(0).expect("held");
        // An eager rebalance: everything revoked, 0 and 1 back, 5 new. What came back is
        // revoked and gained again: the member cannot tell whether another one owned it.
        p.revoke(&[0, 1, 2]);
        p.assign(&[0, 1, 5]);
        assert_eq!(p.take_revoked(), vec![0, 1, 2]);
        assert_eq!(p.take_assigned(), vec![0, 1, 5]);
        assert_ne!(p.epoch(0), Some(first), "a new assignment, a new epoch");
        assert_eq!(p.epoch(2), None, "not held");
        // Gained and revoked again before a look: revoked only.
        p.assign(&[7]);
        p.revoke(&[7]);
        assert_eq!(p.take_revoked(), vec![7]);
        assert_eq!(p.take_assigned(), Vec::<i32>::new());
        // Assigned again while held (a failed rebalance unassigned without a revocation).
        let before = p.epoch(5);
        p.assign(&[5]);
        assert_eq!(p.take_revoked(), vec![5]);
        assert_eq!(p.take_assigned(), vec![5]);
        assert_ne!(p.epoch(5), before);
        p.keep_only(&[0, 1]);
        assert_eq!(p.take_revoked(), vec![5]);
        assert_eq!(p.epoch(5), None);
    }

    /// Issue 12, hole 3: two eager rebalances between two looks of the processor. Partition 2
    /// went to another member in the first and came back in the second; the member must drop
    /// and read back its state, not carry on with the state from before.
    #[test]
    fn a_partition_owned_elsewhere_between_two_looks_is_revoked_and_gained() {
        let mut p = Partitions::default();
        p.assign(&[0, 1, 2]);
        p.take_revoked();
        p.take_assigned();
        // First rebalance: 2 goes to another member.
        p.revoke(&[0, 1, 2]);
        p.assign(&[0, 1]);
        // Second rebalance, before the processor looked: 2 comes back.
        p.revoke(&[0, 1]);
        p.assign(&[0, 1, 2]);
        let revoked = p.take_revoked();
        let gained = p.take_assigned();
        assert!(revoked.contains(&2), "revoked: {revoked:?}");
        assert!(gained.contains(&2), "gained again: {gained:?}");
    }
}
