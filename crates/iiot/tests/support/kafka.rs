//! A plain Kafka client (rdkafka) on the side of the roles: reading topics from the start.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use iiot_kafka::TopicSpec;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Message as _, Offset, TopicPartitionList};

use super::role::{PATIENCE, nanos};

/// The topics of the default configuration, with the partition counts the tests expect.
pub fn topics() -> Vec<TopicSpec> {
    vec![
        TopicSpec::new("device-data", 10),
        TopicSpec::new("alerts", 3),
        TopicSpec::new("device-data-dlq", 1),
    ]
}

/// The environment of a `process` role whose group must notice a SIGKILLed member within a
/// test's patience: tansu drops a dead member only after the rebalance timeout
/// (`max.poll.interval.ms`, 5 min by default), Apache Kafka after the session timeout; both are
/// shorter here. One worker per process, so each process is one group member.
pub const TAKEOVER_ENV: [(&str, &str); 2] = [
    ("PROCESSOR_WORKERS", "1"),
    (
        "KAFKA_PROPERTIES",
        "session.timeout.ms=6000;max.poll.interval.ms=15000",
    ),
];

pub fn client(brokers: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", brokers);
    c
}

/// Every message of `topic`, read from the start by a plain client, until `until` holds.
pub fn read_topic(
    brokers: &str,
    topic: &str,
    mut until: impl FnMut(&[Vec<u8>]) -> bool,
) -> Vec<Vec<u8>> {
    let consumer: BaseConsumer = client(brokers)
        .set("group.id", format!("test-reader-{}", nanos()))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    consumer.subscribe(&[topic]).expect("subscribe");
    let mut seen = Vec::new();
    let deadline = Instant::now() + PATIENCE;
    while Instant::now() < deadline && !until(&seen) {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
            seen.push(m.payload().unwrap_or_default().to_vec());
        }
    }
    seen
}

/// A plain client outside any group, assigned `partitions` of `topic` from their beginning.
fn scanner(brokers: &str, topic: &str, partitions: impl IntoIterator<Item = i32>) -> BaseConsumer {
    let consumer: BaseConsumer = client(brokers)
        .set("group.id", format!("test-scan-{}", nanos()))
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    for p in partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .expect("partition");
    }
    consumer.assign(&tpl).expect("assign");
    consumer
}

/// The real end of each partition (last offset + 1), read by a plain client from the start.
/// tansu's reported high watermark can lag behind the records it serves, so it is not used.
pub fn partition_ends(brokers: &str, topic: &str, partitions: i32) -> HashMap<i32, i64> {
    let consumer = scanner(brokers, topic, 0..partitions);
    let mut ends: HashMap<i32, i64> = (0..partitions).map(|p| (p, 0)).collect();
    let mut quiet_since = Instant::now();
    while quiet_since.elapsed() < Duration::from_secs(5) {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
            let end = ends.entry(m.partition()).or_default();
            *end = (*end).max(m.offset() + 1);
            quiet_since = Instant::now();
        }
    }
    ends
}

/// The partitions of `topic` whose offset committed by consumer group `group` is short of its
/// end in `ends` (empty partitions aside): (partition, committed offset, end). Empty when the
/// group is done with them.
pub fn committed_short_of(
    brokers: &str,
    group: &str,
    topic: &str,
    ends: &HashMap<i32, i64>,
) -> Vec<(i32, Offset, i64)> {
    let consumer: BaseConsumer = client(brokers)
        .set("group.id", group)
        .create()
        .expect("consumer");
    let mut all = TopicPartitionList::new();
    for &p in ends.keys() {
        all.add_partition(topic, p);
    }
    let Ok(committed) = consumer.committed_offsets(all, Duration::from_secs(10)) else {
        return vec![(-1, Offset::Invalid, 0)];
    };
    committed
        .elements()
        .iter()
        .filter(|e| {
            let end = ends[&e.partition()];
            // An empty partition has nothing to commit.
            end > 0 && !matches!(e.offset(), Offset::Offset(o) if o >= end)
        })
        .map(|e| (e.partition(), e.offset(), ends[&e.partition()]))
        .collect()
}

/// Every record of `topic` as (key, payload), read from the start by a plain client, until
/// `until` holds (or [`PATIENCE`] is up).
pub fn read_records(
    brokers: &str,
    topic: &str,
    mut until: impl FnMut(&[(Vec<u8>, Vec<u8>)]) -> bool,
) -> Vec<(Vec<u8>, Vec<u8>)> {
    let consumer: BaseConsumer = client(brokers)
        .set("group.id", format!("test-reader-{}", nanos()))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    consumer.subscribe(&[topic]).expect("subscribe");
    let mut seen = Vec::new();
    let deadline = Instant::now() + PATIENCE;
    while Instant::now() < deadline && !until(&seen) {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
            let key = m.key().unwrap_or_default().to_vec();
            seen.push((key, m.payload().unwrap_or_default().to_vec()));
        }
    }
    seen
}

/// The records of partition `partition` of `topic` as (key, payload), in offset order, each
/// once: read from its beginning by a plain client outside any group (no rebalance can
/// deliver a record twice), until `until` holds (or [`PATIENCE`] is up).
pub fn read_partition(
    brokers: &str,
    topic: &str,
    partition: i32,
    mut until: impl FnMut(&[(Vec<u8>, Vec<u8>)]) -> bool,
) -> Vec<(Vec<u8>, Vec<u8>)> {
    let consumer = scanner(brokers, topic, [partition]);
    let mut seen = Vec::new();
    let mut next = 0;
    let deadline = Instant::now() + PATIENCE;
    while Instant::now() < deadline && !until(&seen) {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200))
            && m.offset() >= next
        {
            next = m.offset() + 1;
            let key = m.key().unwrap_or_default().to_vec();
            seen.push((key, m.payload().unwrap_or_default().to_vec()));
        }
    }
    seen
}
