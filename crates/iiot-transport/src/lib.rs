//! How messages move between the roles: the [`Transport`], [`Publisher`] and [`Subscriber`]
//! traits, and their backends.
//!
//! # Layout
//! - this file: the traits, [`Message`], [`Receipt`], [`TransportError`], [`partition_for`].
//! - [`bus`]: the embedded in-process bus (the default of `iiot run`).
//! - [`conformance`] (feature `conformance`): one test suite that every backend runs.
//!
//! Semantics every backend keeps: messages with the same key go to the same partition and arrive
//! in the order they were published; a full queue makes the publisher wait (and is counted), it
//! never drops; a subscriber marks a message done with [`Subscriber::commit`] only after its
//! outputs are delivered (at-least-once).
#![deny(missing_docs)]

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;

pub mod bus;
#[cfg(feature = "conformance")]
pub mod conformance;

pub use bus::{Bus, BusConfig, BusStats};

/// Why a transport operation failed.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// The transport was shut down; nothing more can be published or received.
    #[error("transport closed")]
    Closed,
    /// A consumer group of the embedded bus already has its members.
    #[error(
        "consumer group {group:?} on topic {topic:?} already has members (the embedded bus fixes a group's members when it is created)"
    )]
    GroupBusy {
        /// The topic.
        topic: String,
        /// The group.
        group: String,
    },
    /// The broker did not acknowledge a message (yet): unreachable past the delivery timeout,
    /// or a transient error. Sending it again may succeed.
    #[error("delivery failed: {0}")]
    Delivery(String),
    /// This message can never be delivered as it is (too large, invalid): sending it again
    /// cannot help. The caller counts it and goes on.
    #[error("message refused: {0}")]
    Refused(String),
    /// The broker could not be reached or answered with an error.
    #[error("broker error: {0}")]
    Broker(String),
}

/// One message as a subscriber receives it.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    /// Topic it was published to.
    pub topic: Arc<str>,
    /// Partition, chosen from the key.
    pub partition: i32,
    /// Position in the partition, counting from 0.
    pub offset: i64,
    /// The key (the device id for readings).
    pub key: Bytes,
    /// The body.
    pub payload: Bytes,
    /// The broker's time for the message, Unix ms (Kafka: the record timestamp; the bus: when
    /// it was published); `None` when the broker gave none. Every stage that judges a reading
    /// against "now" uses this, so two roles reading the same message reach the same verdict.
    pub timestamp_ms: Option<i64>,
    /// Why the message's headers cannot be read as text — a header key or value that is not
    /// UTF-8 — or `None`. Kafka only (the bus carries no headers); the processor dead-letters
    /// such a record `bad_header`.
    pub bad_header: Option<Box<str>>,
}

impl Message {
    /// The clock a reading in this message is judged by (future skew, staleness): the broker's
    /// timestamp, so that every role reading the message reaches the same verdict — but never
    /// later than the reader's own clock `now_ms`, so a producer that stamps records with a
    /// device's clock running ahead cannot switch the future-skew check off.
    pub fn judged_at(&self, now_ms: i64) -> i64 {
        self.timestamp_ms.map_or(now_ms, |t| t.min(now_ms))
    }
}

/// A topic to create: its name, partition count and replication factor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicSpec {
    /// Topic name.
    pub name: String,
    /// Number of partitions.
    pub partitions: i32,
    /// Replication factor (1 for a single broker).
    pub replication: i32,
    /// Keep only the latest message per key (`cleanup.policy=compact` on Kafka): for topics
    /// that hold state rather than events.
    pub compacted: bool,
    /// Delete what is older than this (`retention.ms` on Kafka; `None`: the broker's default).
    /// The embedded bus keeps nothing beyond its queues and ignores it.
    pub retention_ms: Option<u64>,
}

impl TopicSpec {
    /// A topic of `partitions` partitions, replicated once.
    pub fn new(name: impl Into<String>, partitions: i32) -> Self {
        TopicSpec {
            name: name.into(),
            partitions,
            replication: 1,
            compacted: false,
            retention_ms: None,
        }
    }
}

/// Where a reader of every partition ([`Transport::subscribe_all`]) starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// The first message the topic still holds (a backend without history: same as `End`).
    Beginning,
    /// The end: only what is published from now on.
    End,
    /// The first message stamped at or after this time (Unix ms; on Kafka, the record
    /// timestamp), or the end if there is none. A backend without history: same as `End`.
    Since(i64),
}

/// Resolves when a published message is durably accepted (for Kafka: acknowledged by the broker).
pub enum Receipt {
    /// Already delivered (the embedded bus delivers on enqueue).
    Delivered,
    /// Delivery still pending.
    Pending(Pin<Box<dyn Future<Output = Result<(), TransportError>> + Send>>),
}

impl Receipt {
    /// Waits for delivery.
    pub async fn delivered(self) -> Result<(), TransportError> {
        match self {
            Receipt::Delivered => Ok(()),
            Receipt::Pending(f) => f.await,
        }
    }
}

impl std::fmt::Debug for Receipt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Receipt::Delivered => "Receipt::Delivered",
            Receipt::Pending(_) => "Receipt::Pending",
        })
    }
}

/// Sends messages to topics.
#[async_trait]
pub trait Publisher: Send + Sync {
    /// Enqueues one message, waiting while the backend's queue is full (backpressure, counted by
    /// the backend). The returned [`Receipt`] resolves when the message is delivered. An empty
    /// payload is a tombstone on Kafka (a null value: compaction removes the key); subscribers
    /// receive it as an empty payload on every backend.
    async fn publish(
        &self,
        topic: &str,
        key: &[u8],
        payload: Bytes,
    ) -> Result<Receipt, TransportError>;

    /// Waits until everything published so far is delivered.
    async fn flush(&self) -> Result<(), TransportError>;
}

/// Which assignment of each partition a consumer-group member is on
/// ([`Subscriber::ownership`]).
pub trait Ownership: Send + Sync + std::fmt::Debug {
    /// The epoch of `partition`'s current assignment to this member, a number that changes
    /// every time the partition is assigned to it again; `None` while it is not held: revoked,
    /// or the assignment is lost (the member was dropped from the group, so the group may have
    /// given the partition to another member before this member hears of it).
    fn epoch(&self, partition: i32) -> Option<u64>;
}

/// Receives the messages of one topic as a member of a consumer group.
#[async_trait]
pub trait Subscriber: Send {
    /// Appends up to `max` messages to `out`, waiting for at least one. Returns how many were
    /// appended; 0 means the transport closed and everything was drained.
    ///
    /// Must be cancel-safe: the processor calls it inside `select!` and drops the future when
    /// a timer or command wins; a message must never be lost that way.
    async fn recv_batch(
        &mut self,
        out: &mut Vec<Message>,
        max: usize,
    ) -> Result<usize, TransportError>;

    /// Marks `message`, and every earlier message of its partition, as processed.
    fn commit(&mut self, message: &Message) -> Result<(), TransportError>;

    /// Partitions taken from this member since the last call (a consumer-group rebalance),
    /// including those given back since: another member may have owned them in between. The
    /// processor drops the state of the devices it saw on them. Backends without rebalancing
    /// (the embedded bus) never revoke anything.
    fn take_revoked(&mut self) -> Vec<i32> {
        Vec::new()
    }

    /// Partitions assigned to this member since the last call and still held (a rebalance, the
    /// first assignment included), including those revoked and given back since: the
    /// processor restores the open alerts of their devices before it judges their readings.
    /// Call it after [`Subscriber::take_revoked`]. Backends whose members keep fixed
    /// partitions (the embedded bus) never report any.
    fn take_assigned(&mut self) -> Vec<i32> {
        Vec::new()
    }

    /// A live view of the partitions this member holds, for a writer of per-partition state
    /// that must stop the moment a partition may belong to another member (`None`: the
    /// backend never moves partitions, the embedded bus).
    fn ownership(&self) -> Option<Arc<dyn Ownership>> {
        None
    }

    /// Marks every message of `batch` as processed: commits the last message of each partition
    /// (which covers the earlier ones).
    fn commit_batch(&mut self, batch: &[Message]) -> Result<(), TransportError> {
        let mut done: Vec<i32> = Vec::new();
        for m in batch.iter().rev() {
            if !done.contains(&m.partition) {
                done.push(m.partition);
                self.commit(m)?;
            }
        }
        Ok(())
    }
}

/// A backend: makes publishers and subscribers, says whether it can reach its broker, and
/// what it can and cannot do. This is the one seam between the roles and a message backend:
/// the roles never ask which backend they run on, only what it offers.
#[async_trait]
pub trait Transport: Send + Sync {
    /// A publisher; cheap to clone and share between tasks.
    fn publisher(&self) -> Arc<dyn Publisher>;

    /// Joins consumer group `group` on `topic`. Every group receives every message published
    /// after this returns (a backend with a log may deliver earlier ones too).
    async fn subscribe(
        &self,
        topic: &str,
        group: &str,
    ) -> Result<Box<dyn Subscriber>, TransportError>;

    /// `members` members of consumer group `group` on `topic`, splitting its partitions. The
    /// default subscribes `members` times (a backend with rebalancing splits them itself as
    /// members come and go, in this process or others).
    async fn subscribe_group(
        &self,
        topic: &str,
        group: &str,
        members: usize,
    ) -> Result<Vec<Box<dyn Subscriber>>, TransportError> {
        let mut out = Vec::with_capacity(members.max(1));
        for _ in 0..members.max(1) {
            out.push(self.subscribe(topic, group).await?);
        }
        Ok(out)
    }

    /// A subscription that receives every message of `topic`, outside any consumer group and
    /// committing nothing (the serve side: each instance sees everything), from `start`.
    async fn subscribe_all(
        &self,
        topic: &str,
        start: Start,
    ) -> Result<Box<dyn Subscriber>, TransportError>;

    /// Publishes to partition `partition` of `topic`, whatever the key would choose: a state
    /// topic kept beside another (co-partitioned: the state of what was read from partition
    /// `p` goes to its partition `p`, however the other topic's producers partition). A
    /// partition the topic does not have is [`TransportError::Refused`].
    async fn publish_to(
        &self,
        topic: &str,
        partition: i32,
        key: &[u8],
        payload: Bytes,
    ) -> Result<Receipt, TransportError>;

    /// Everything partitions `partitions` of `topic` hold, from their beginning to their end
    /// as of this call (each partition's messages in order), outside any consumer group; at
    /// most `limit` is spent on it, and what was read by then is returned. A backend that
    /// keeps no history ([`Transport::keeps_history`] false) has nothing to read back.
    async fn read_partitions(
        &self,
        _topic: &str,
        _partitions: &[i32],
        _limit: std::time::Duration,
    ) -> Result<Vec<Message>, TransportError> {
        Ok(Vec::new())
    }

    /// The end of each of `partitions` of `topic` now (the offset the next message written
    /// there will get, as the broker reports it), for those it could learn; a backend that
    /// keeps no history has none.
    async fn partition_ends(
        &self,
        _topic: &str,
        _partitions: &[i32],
    ) -> Result<Vec<(i32, i64)>, TransportError> {
        Ok(Vec::new())
    }

    /// How many partitions `topic` has; `None` if it does not exist (yet). Backends whose
    /// topics need no creating answer `None` (nothing to check).
    async fn partition_count(&self, _topic: &str) -> Result<Option<i32>, TransportError> {
        Ok(None)
    }

    /// Whether the backend keeps messages after delivery, so that [`Start::Beginning`] and a
    /// group's committed offsets mean something (Kafka) — or forgets them (the bus).
    fn keeps_history(&self) -> bool {
        false
    }

    /// Whether other processes publish and consume on this backend too (Kafka), or only this
    /// one (the bus). A serve side on a shared backend must read the topics to see what every
    /// processor decided; on an unshared one the processors of this process are all there are.
    fn is_shared(&self) -> bool {
        false
    }

    /// Creates the topics that do not exist yet. One attempt: the caller retries while the
    /// broker is unreachable. Backends whose topics need no creating do nothing.
    async fn ensure_topics(&self, _topics: &[TopicSpec]) -> Result<(), TransportError> {
        Ok(())
    }

    /// Ends `topic` for its subscribers, if this backend's topics can end: they drain what is
    /// queued and then receive 0 (an ordered shutdown of the bus). Returns whether it did;
    /// a log that never ends (Kafka) returns `false` and the caller stops its consumers.
    fn end_topic(&self, _topic: &str) -> bool {
        false
    }

    /// Closes the whole backend, where that means something (the bus); the default does
    /// nothing (Kafka clients close as they are dropped).
    fn close(&self) {}

    /// Whether the backend can currently move messages (`/ready`).
    async fn is_ready(&self) -> bool;

    /// Messages of `topic` the consumer group `group` has yet to process. The default is the
    /// consumer lag of this process's members from [`Transport::metrics`].
    fn lag(&self, _topic: &str, _group: &str) -> u64 {
        self.metrics().consumer_lag
    }

    /// Short name for logs: `embedded bus`, `kafka <brokers>`.
    fn describe(&self) -> String;

    /// The backend's own traffic counters, for `/metrics`. The default reports nothing.
    fn metrics(&self) -> BackendMetrics {
        BackendMetrics::default()
    }
}

/// Upper bounds, in milliseconds, of the [`BackendMetrics::send_duration`] buckets (publish →
/// delivered). The last bucket is open (`+Inf`).
pub const SEND_DURATION_BOUNDS_MS: [f64; 14] = [
    0.5, 1.0, 2.5, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0,
];

/// What a backend counts about its own traffic since it started; rendered by `/metrics` as the
/// design notes' `kafka_*` families. Plain numbers, so the names live in one place (the server's
/// metric table) whatever the backend.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BackendMetrics {
    /// Messages the broker acknowledged (`kafka_messages_sent_total`).
    pub messages_sent: u64,
    /// Messages that failed delivery (`kafka_send_errors_total`).
    pub send_errors: u64,
    /// Produce requests (batches) sent to brokers (`kafka_batches_sent_total`).
    pub batches_sent: u64,
    /// Messages waiting in the producer for delivery now (`kafka_producer_buffer_depth`).
    pub buffer_depth: u64,
    /// Times a publisher found the producer queue full and waited.
    pub backpressure_waits: u64,
    /// Publish → delivered durations: counts per [`SEND_DURATION_BOUNDS_MS`] bucket (not
    /// cumulative) plus one for `+Inf`. Empty if the backend does not measure them.
    pub send_duration_buckets: Vec<u64>,
    /// Sum of all publish → delivered durations, in seconds.
    pub send_duration_sum_s: f64,
    /// Messages the consumers of this process have yet to read (high watermark − position,
    /// summed over assigned partitions).
    pub consumer_lag: u64,
    /// Whether the backend reached its broker lately.
    pub connected: bool,
}

impl BackendMetrics {
    /// Index of the [`SEND_DURATION_BOUNDS_MS`] bucket for `ms` (the last index is `+Inf`).
    pub fn send_duration_bucket(ms: f64) -> usize {
        SEND_DURATION_BOUNDS_MS
            .iter()
            .position(|&b| ms <= b)
            .unwrap_or(SEND_DURATION_BOUNDS_MS.len())
    }
}

/// The partition of `key` among `partitions` (FNV-1a, stable across runs and platforms).
pub fn partition_for(key: &[u8], partitions: u32) -> i32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in key {
        h ^= u32::from(*b);
        h = h.wrapping_mul(0x0100_0193);
    }
    // The modulo is below `partitions`, itself a u32 partition count far below i32::MAX.
    (h % partitions.max(1)) as i32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitioning_is_stable_and_spreads_keys() {
        assert_eq!(
            partition_for(b"device_001", 10),
            partition_for(b"device_001", 10)
        );
        let mut seen = [0u32; 10];
        for n in 1..=1000 {
            let p = partition_for(format!("device_{n:03}").as_bytes(), 10);
            seen[p as usize] += 1;
        }
        assert!(seen.iter().all(|&c| c > 50), "uneven spread {seen:?}");
        assert_eq!(partition_for(b"x", 0), 0);
    }

    #[test]
    fn send_durations_land_in_their_bucket() {
        assert_eq!(BackendMetrics::send_duration_bucket(0.1), 0);
        assert_eq!(BackendMetrics::send_duration_bucket(0.5), 0);
        assert_eq!(BackendMetrics::send_duration_bucket(0.6), 1);
        assert_eq!(BackendMetrics::send_duration_bucket(10_000.0), 13);
        assert_eq!(BackendMetrics::send_duration_bucket(10_001.0), 14);
    }
}
