//! The embedded bus: in-process topics for `iiot run` without a broker.
//!
//! Each topic has a fixed number of partitions; a key always maps to the same partition
//! ([`crate::partition_for`]) and offsets count up per partition. Every member of a consumer
//! group has one bounded queue (partition `p` goes to member `p % members`): a publisher whose
//! message does not fit waits until that member has made room (counted in [`BusStats::backpressure_waits`]); nothing is dropped. A message
//! published to a topic that has no group yet is counted in [`BusStats::unrouted`] — the bus keeps
//! no log, so subscribe before publishing.
//!
//! The bus owns topics, queues and offsets; it knows nothing of what the payloads mean.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::mpsc;

use crate::{Message, Publisher, Receipt, Subscriber, Transport, TransportError, partition_for};

/// Wall-clock milliseconds since the Unix epoch (a clock before 1970 reads as 0).
fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Sizes of the embedded bus.
#[derive(Debug, Clone)]
pub struct BusConfig {
    /// Partitions of a topic created on first use.
    pub default_partitions: u32,
    /// Partitions of named topics (e.g. `device-data` → 10).
    pub partitions: HashMap<String, u32>,
    /// Capacity, in messages, of each consumer-group member's queue.
    pub queue_capacity: usize,
}

impl Default for BusConfig {
    fn default() -> Self {
        BusConfig {
            default_partitions: 1,
            partitions: HashMap::new(),
            queue_capacity: 65_536,
        }
    }
}

/// Counters of the bus, shared and lock-free.
#[derive(Debug, Default)]
pub struct BusStats {
    /// Messages accepted by `publish`.
    pub published: AtomicU64,
    /// Times a publisher found a queue full and had to wait.
    pub backpressure_waits: AtomicU64,
    /// Messages published to a topic with no consumer group.
    pub unrouted: AtomicU64,
}

/// The embedded bus. Clones share the same topics.
#[derive(Clone)]
pub struct Bus {
    inner: Arc<Inner>,
}

struct Inner {
    config: BusConfig,
    topics: RwLock<HashMap<String, Arc<Topic>>>,
    closed: AtomicBool,
    stats: BusStats,
    /// Numbers the groups of [`Transport::subscribe_all`] readers.
    readers: AtomicU64,
}

struct Topic {
    name: Arc<str>,
    closed: AtomicBool,
    /// Per-partition next offset. The async lock also orders enqueueing, so a partition's
    /// offsets reach every group in offset order even with several publishers.
    partitions: Vec<tokio::sync::Mutex<i64>>,
    /// Copy of each partition's next offset, readable without the lock (for lag).
    ends: Vec<AtomicI64>,
    /// Copy-on-write list: publishing takes a snapshot (one `Arc` clone) instead of a lock
    /// held across the send.
    groups: RwLock<Arc<Vec<Arc<Group>>>>,
}

struct Group {
    name: String,
    /// One queue per member; partition `p` goes to member `p % members`.
    members: Vec<mpsc::Sender<Message>>,
    /// Highest committed offset + 1 per partition (for lag). Shared with the subscriber, which
    /// must not hold the senders: closing the bus drops the senders so that streams end.
    committed: Arc<[AtomicI64]>,
}

impl Bus {
    /// A new bus with no topics.
    pub fn new(config: BusConfig) -> Self {
        Bus {
            inner: Arc::new(Inner {
                config,
                topics: RwLock::new(HashMap::new()),
                closed: AtomicBool::new(false),
                stats: BusStats::default(),
                readers: AtomicU64::new(0),
            }),
        }
    }

    /// The bus's counters.
    pub fn stats(&self) -> &BusStats {
        &self.inner.stats
    }

    /// Stops the bus: publishing fails with [`TransportError::Closed`], and subscribers receive
    /// what is already queued and then the end of the stream.
    pub fn close(&self) {
        self.inner.closed.store(true, Ordering::SeqCst);
        let topics = read(&self.inner.topics);
        for topic in topics.values() {
            topic.close();
        }
    }

    /// Closes one topic the same way, leaving the others open: a graceful shutdown closes the
    /// input topic first so the processor drains it while it can still publish its outputs.
    pub fn close_topic(&self, name: &str) {
        self.topic(name).close();
    }

    /// Messages published to `topic` but not yet committed by `group`, over all partitions.
    pub fn lag(&self, topic: &str, group: &str) -> Option<i64> {
        let topic = read(&self.inner.topics).get(topic).cloned()?;
        let groups = read(&topic.groups);
        let g = groups.iter().find(|g| g.name == group)?;
        let mut lag = 0;
        for p in 0..topic.partitions.len() {
            let end = topic.ends[p].load(Ordering::Relaxed);
            lag += (end - g.committed[p].load(Ordering::Relaxed)).max(0);
        }
        Some(lag)
    }

    fn topic(&self, name: &str) -> Arc<Topic> {
        if let Some(t) = read(&self.inner.topics).get(name) {
            return t.clone();
        }
        let mut topics = write(&self.inner.topics);
        topics
            .entry(name.to_string())
            .or_insert_with(|| {
                let n = self
                    .inner
                    .config
                    .partitions
                    .get(name)
                    .copied()
                    .unwrap_or(self.inner.config.default_partitions)
                    .max(1);
                Arc::new(Topic {
                    name: Arc::from(name),
                    closed: AtomicBool::new(self.inner.closed.load(Ordering::SeqCst)),
                    partitions: (0..n).map(|_| tokio::sync::Mutex::new(0)).collect(),
                    ends: (0..n).map(|_| AtomicI64::new(0)).collect(),
                    groups: RwLock::new(Arc::new(Vec::new())),
                })
            })
            .clone()
    }
}

impl Topic {
    fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        // Dropping the senders ends each subscriber's stream once its queue is drained.
        *write(&self.groups) = Arc::new(Vec::new());
    }
}

/// Lock helpers: a poisoned lock only means another thread panicked mid-update of plain data
/// that stays consistent (maps of Arcs), so carry on with it rather than cascade the panic.
fn read<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|e| e.into_inner())
}
fn write<T>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|e| e.into_inner())
}

#[async_trait]
impl Publisher for Bus {
    async fn publish(
        &self,
        topic: &str,
        key: &[u8],
        payload: Bytes,
    ) -> Result<Receipt, TransportError> {
        if self.inner.closed.load(Ordering::Relaxed) {
            return Err(TransportError::Closed);
        }
        let topic = self.topic(topic);
        let partition = partition_for(key, topic.partitions.len() as u32);
        self.publish_in(&topic, partition, key, payload).await
    }

    async fn flush(&self) -> Result<(), TransportError> {
        Ok(())
    }
}

impl Bus {
    /// Appends to partition `partition` (within range) of `topic` and hands the message to
    /// the member of each group that holds that partition.
    async fn publish_in(
        &self,
        topic: &Arc<Topic>,
        partition: i32,
        key: &[u8],
        payload: Bytes,
    ) -> Result<Receipt, TransportError> {
        let mut next = topic.partitions[partition as usize].lock().await;
        // Checked under the partition lock, so a publish racing `close`/`subscribe` either sees
        // the new state or completes before it.
        if topic.closed.load(Ordering::SeqCst) {
            return Err(TransportError::Closed);
        }
        let groups: Arc<Vec<Arc<Group>>> = read(&topic.groups).clone();
        // `close` sets the flag before it drops the groups: an empty snapshot of a topic that
        // is closed by now means the close came between the two reads.
        if groups.is_empty() && topic.closed.load(Ordering::SeqCst) {
            return Err(TransportError::Closed);
        }
        let message = Message {
            topic: topic.name.clone(),
            partition,
            offset: *next,
            key: Bytes::copy_from_slice(key),
            payload,
            timestamp_ms: Some(now_ms()),
            bad_header: None,
        };
        *next += 1;
        topic.ends[partition as usize].store(*next, Ordering::Relaxed);
        self.inner.stats.published.fetch_add(1, Ordering::Relaxed);
        if groups.is_empty() {
            self.inner.stats.unrouted.fetch_add(1, Ordering::Relaxed);
        }
        for group in groups.iter() {
            let tx = &group.members[partition as usize % group.members.len()];
            let sent = match tx.try_send(message.clone()) {
                Ok(()) => Ok(()),
                Err(mpsc::error::TrySendError::Full(m)) => {
                    self.inner
                        .stats
                        .backpressure_waits
                        .fetch_add(1, Ordering::Relaxed);
                    tx.send(m).await.map_err(|_| ())
                }
                Err(mpsc::error::TrySendError::Closed(_)) => Err(()),
            };
            if sent.is_err() {
                // The member went away (shut down); forget the group so later messages are
                // counted as unrouted instead of failing every publish.
                let mut current = write(&topic.groups);
                let kept: Vec<Arc<Group>> = current
                    .iter()
                    .filter(|g| !Arc::ptr_eq(g, group))
                    .cloned()
                    .collect();
                *current = Arc::new(kept);
                tracing::debug!(topic = %topic.name, group = %group.name, "consumer group left");
            }
        }
        Ok(Receipt::Delivered)
    }
}

#[async_trait]
impl Transport for Bus {
    fn publisher(&self) -> Arc<dyn Publisher> {
        Arc::new(self.clone())
    }

    async fn publish_to(
        &self,
        topic: &str,
        partition: i32,
        key: &[u8],
        payload: Bytes,
    ) -> Result<Receipt, TransportError> {
        if self.inner.closed.load(Ordering::Relaxed) {
            return Err(TransportError::Closed);
        }
        let topic = self.topic(topic);
        if partition < 0 || partition as usize >= topic.partitions.len() {
            return Err(TransportError::Refused(format!(
                "topic {} has no partition {partition}",
                topic.name
            )));
        }
        self.publish_in(&topic, partition, key, payload).await
    }

    async fn subscribe(
        &self,
        topic: &str,
        group: &str,
    ) -> Result<Box<dyn Subscriber>, TransportError> {
        let mut members = self.subscribe_group(topic, group, 1)?;
        // subscribe_group returns exactly `members` subscribers.
        members.pop().ok_or(TransportError::Closed)
    }

    async fn subscribe_group(
        &self,
        topic: &str,
        group: &str,
        members: usize,
    ) -> Result<Vec<Box<dyn Subscriber>>, TransportError> {
        Bus::subscribe_group(self, topic, group, members)
    }

    /// A group of its own, so it sees every message; the bus keeps none, so `start` makes no
    /// difference.
    async fn subscribe_all(
        &self,
        topic: &str,
        _start: crate::Start,
    ) -> Result<Box<dyn Subscriber>, TransportError> {
        let n = self.inner.readers.fetch_add(1, Ordering::Relaxed);
        self.subscribe(topic, &format!("__every-message-{n}")).await
    }

    fn end_topic(&self, topic: &str) -> bool {
        self.close_topic(topic);
        true
    }

    fn close(&self) {
        Bus::close(self);
    }

    fn lag(&self, topic: &str, group: &str) -> u64 {
        Bus::lag(self, topic, group).unwrap_or(0).max(0) as u64
    }

    fn describe(&self) -> String {
        "embedded bus".into()
    }

    async fn is_ready(&self) -> bool {
        !self.inner.closed.load(Ordering::Relaxed)
    }

    fn metrics(&self) -> crate::BackendMetrics {
        let s = self.stats();
        crate::BackendMetrics {
            // The bus delivers on enqueue: everything published is sent, nothing fails.
            messages_sent: s.published.load(Ordering::Relaxed),
            backpressure_waits: s.backpressure_waits.load(Ordering::Relaxed),
            connected: !self.inner.closed.load(Ordering::Relaxed),
            ..crate::BackendMetrics::default()
        }
    }
}

impl Bus {
    /// Joins consumer group `group` on `topic` with `members` members at once (1 to the
    /// partition count): member `i` receives the partitions `p` with `p % members == i`, so each
    /// key — each device — is handled by exactly one member, as in a Kafka consumer group.
    /// The bus has no rebalancing: the membership is fixed until every member has left.
    pub fn subscribe_group(
        &self,
        topic: &str,
        group: &str,
        members: usize,
    ) -> Result<Vec<Box<dyn Subscriber>>, TransportError> {
        if self.inner.closed.load(Ordering::Relaxed) {
            return Err(TransportError::Closed);
        }
        let t = self.topic(topic);
        if t.closed.load(Ordering::Relaxed) {
            return Err(TransportError::Closed);
        }
        let mut guard = write(&t.groups);
        // Checked again under the lock `close` also takes, so no group joins a closed topic
        // (its members would wait forever).
        if t.closed.load(Ordering::SeqCst) {
            return Err(TransportError::Closed);
        }
        let mut groups: Vec<Arc<Group>> = guard.as_ref().clone();
        if groups
            .iter()
            .any(|g| g.name == group && g.members.iter().any(|tx| !tx.is_closed()))
        {
            return Err(TransportError::GroupBusy {
                topic: topic.to_string(),
                group: group.to_string(),
            });
        }
        groups.retain(|g| g.name != group);
        let members = members.clamp(1, t.partitions.len());
        let (senders, receivers): (Vec<_>, Vec<_>) = (0..members)
            .map(|_| mpsc::channel(self.inner.config.queue_capacity.max(1)))
            .unzip();
        // A group starts at the end of each partition (the bus keeps no log), so its lag counts
        // only what was published after it joined.
        let committed: Arc<[AtomicI64]> = t
            .ends
            .iter()
            .map(|e| AtomicI64::new(e.load(Ordering::Relaxed)))
            .collect();
        groups.push(Arc::new(Group {
            name: group.to_string(),
            members: senders,
            committed: committed.clone(),
        }));
        *guard = Arc::new(groups);
        Ok(receivers
            .into_iter()
            .map(|rx| {
                Box::new(BusSubscriber {
                    rx,
                    committed: committed.clone(),
                }) as Box<dyn Subscriber>
            })
            .collect())
    }
}

struct BusSubscriber {
    rx: mpsc::Receiver<Message>,
    committed: Arc<[AtomicI64]>,
}

#[async_trait]
impl Subscriber for BusSubscriber {
    async fn recv_batch(
        &mut self,
        out: &mut Vec<Message>,
        max: usize,
    ) -> Result<usize, TransportError> {
        Ok(self.rx.recv_many(out, max.max(1)).await)
    }

    fn commit(&mut self, message: &Message) -> Result<(), TransportError> {
        if let Some(c) = self.committed.get(message.partition as usize) {
            c.fetch_max(message.offset + 1, Ordering::Relaxed);
        }
        Ok(())
    }
}

impl Drop for BusSubscriber {
    fn drop(&mut self) {
        self.rx.close();
    }
}
