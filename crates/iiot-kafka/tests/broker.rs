//! The Kafka backend against a real broker (a private tansu per test): raw messages, consumer
//! groups sharing and handing over partitions, `serve`-style readers, a broker that is not
//! there at first, and the counters.
//!
//! Group joins and broker start-ups take seconds: every wait here is a generous deadline, never
//! an assertion on timing.

use std::collections::{BTreeSet, HashSet};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use iiot_kafka::testing::TestBroker;
use iiot_kafka::{KafkaSettings, KafkaTransport, TopicSpec};
use iiot_transport::{Message, Subscriber, Transport, TransportError, conformance};
use rdkafka::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};
use tokio::time::{Instant, sleep, timeout};

const LONG: Duration = Duration::from_secs(90);

fn transport(brokers: &str) -> KafkaTransport {
    transport_with(brokers, |_| {})
}

fn transport_with(brokers: &str, settings: impl FnOnce(&mut KafkaSettings)) -> KafkaTransport {
    let mut s = KafkaSettings::new(brokers);
    s.reconnect_log_interval = Duration::from_secs(5);
    settings(&mut s);
    KafkaTransport::new(s).expect("transport")
}

/// Polls `check` until it holds; panics with `what` after [`LONG`].
async fn eventually(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + LONG;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        sleep(Duration::from_millis(100)).await;
    }
}

/// Receives one batch, waiting at most `wait`; commits it.
async fn receive_some(sub: &mut dyn Subscriber, wait: Duration, max: usize) -> Vec<Message> {
    let mut batch = Vec::new();
    if let Ok(r) = timeout(wait, sub.recv_batch(&mut batch, max)).await {
        r.expect("receive");
    }
    sub.commit_batch(&batch).expect("commit");
    batch
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_message_from_another_producer_arrives_intact() {
    let broker = TestBroker::start(&[TopicSpec::new("raw", 3)]);
    let t = transport(&broker.brokers);
    let mut sub = t.subscribe("raw", "raw-readers").await.expect("subscribe");

    let plain: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &broker.brokers)
        .create()
        .expect("plain producer");
    let garbage: &[u8] = b"{\"device_id\": \"d1\", \"temperature\": \xff\xfe not json";
    plain
        .send(
            FutureRecord::to("raw").key("d1").payload(garbage),
            Duration::from_secs(30),
        )
        .await
        .expect("plain producer delivered");

    let got = conformance::receive(sub.as_mut(), 1).await;
    assert_eq!(&got[0].payload[..], garbage);
    assert_eq!(&got[0].key[..], b"d1");
    assert_eq!(&*got[0].topic, "raw");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_members_split_partitions_and_one_takes_over_when_the_other_leaves() {
    let broker = TestBroker::start(&[TopicSpec::new("split", 10)]);
    // A member taking over resumes at the committed offset, often inside a record batch; tansu
    // 0.6 returns nothing for such a fetch (Kafka returns the batch), so one message per batch.
    let t = transport_with(&broker.brokers, |s| s.producer.batch_num_messages = 1);
    let mut a = t.subscribe("split", "processors").await.expect("member a");

    // A steady stream over 100 keys, until told where to stop (1000 messages after b left).
    let stop_at = Arc::new(AtomicU32::new(u32::MAX));
    let published = Arc::new(AtomicU32::new(0));
    let publisher = t.publisher();
    let producer = tokio::spawn({
        let (stop_at, published) = (stop_at.clone(), published.clone());
        async move {
            let mut receipts = Vec::new();
            let mut i = 0;
            while i < stop_at.load(Ordering::SeqCst) {
                let key = format!("device_{:03}", i % 100);
                receipts.push(
                    publisher
                        .publish("split", key.as_bytes(), Bytes::from(i.to_string()))
                        .await
                        .expect("publish"),
                );
                i += 1;
                published.store(i, Ordering::SeqCst);
                if i % 50 == 0 {
                    sleep(Duration::from_millis(50)).await;
                }
            }
            for r in receipts {
                r.delivered().await.expect("delivered");
            }
            i
        }
    });

    let seen: Arc<Mutex<HashSet<u32>>> = Arc::default();
    let record = |seen: &Arc<Mutex<HashSet<u32>>>, batch: &[Message]| {
        let mut s = seen.lock().expect("seen");
        for m in batch {
            s.insert(
                std::str::from_utf8(&m.payload)
                    .expect("utf8")
                    .parse()
                    .expect("n"),
            );
        }
    };

    // a alone owns every partition; then b joins and takes some of them.
    let deadline = Instant::now() + LONG;
    while seen.lock().expect("seen").len() < 200 {
        assert!(Instant::now() < deadline, "a alone should receive");
        let got = receive_some(a.as_mut(), Duration::from_millis(200), 256).await;
        record(&seen, &got);
    }
    assert!(a.take_revoked().is_empty(), "nobody else in the group yet");
    let mut b = t.subscribe("split", "processors").await.expect("member b");

    // Both members read until each has had a good share, so the group split the partitions.
    let (mut parts_a, mut parts_b) = (BTreeSet::new(), BTreeSet::new());
    let (mut count_a, mut count_b) = (0, 0);
    while count_a < 300 || count_b < 300 {
        assert!(
            Instant::now() < deadline,
            "both members should receive: a={count_a} b={count_b}"
        );
        let (ga, gb) = tokio::join!(
            receive_some(a.as_mut(), Duration::from_millis(200), 256),
            receive_some(b.as_mut(), Duration::from_millis(200), 256)
        );
        count_a += ga.len();
        count_b += gb.len();
        parts_a.extend(ga.iter().map(|m| m.partition));
        parts_b.extend(gb.iter().map(|m| m.partition));
        record(&seen, &ga);
        record(&seen, &gb);
    }
    let revoked = a.take_revoked();
    assert!(
        !revoked.is_empty() && parts_b.iter().all(|p| revoked.contains(p)),
        "b's partitions {parts_b:?} were taken from a (a reports {revoked:?} revoked)"
    );
    // b leaves mid-stream (its stored offsets are committed on close).
    drop(b);
    stop_at.store(published.load(Ordering::SeqCst) + 1000, Ordering::SeqCst);
    let total = timeout(LONG, producer)
        .await
        .expect("producer finishes")
        .expect("producer");

    let mut after_b: BTreeSet<i32> = BTreeSet::new();
    let deadline = Instant::now() + LONG;
    while seen.lock().expect("seen").len() < total as usize {
        if Instant::now() > deadline {
            let seen = seen.lock().expect("seen");
            let missing: Vec<u32> = (0..total).filter(|i| !seen.contains(i)).take(20).collect();
            panic!(
                "a should take over: {} of {total} received, missing {missing:?}, metrics {:?}",
                seen.len(),
                t.metrics()
            );
        }
        let got = receive_some(a.as_mut(), Duration::from_millis(500), 256).await;
        after_b.extend(got.iter().map(|m| m.partition));
        record(&seen, &got);
    }
    assert!(
        parts_b.iter().any(|p| after_b.contains(p)),
        "a read b's partitions {parts_b:?} after b left (a read {after_b:?})"
    );
    let all: BTreeSet<i32> = parts_a.union(&parts_b).copied().collect();
    assert!(all.len() > 1, "100 keys spread over several partitions");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_that_starts_late_makes_the_transport_ready_and_gets_what_was_published() {
    let mut broker = TestBroker::reserve(&[TopicSpec::new("late", 2)]);
    let t = transport(&broker.brokers);
    // Subscribing and publishing without a broker neither fail nor block.
    let mut sub = timeout(Duration::from_secs(10), t.subscribe("late", "late-readers"))
        .await
        .expect("subscribe returns without a broker")
        .expect("subscribe");
    let receipt = timeout(
        Duration::from_secs(10),
        t.publisher()
            .publish("late", b"k", Bytes::from_static(b"sent while down")),
    )
    .await
    .expect("publish returns without a broker")
    .expect("publish");
    sleep(Duration::from_secs(2)).await;
    assert!(!t.is_ready().await, "no broker: not ready");
    assert!(!t.metrics().connected);
    assert_eq!(
        t.metrics().buffer_depth,
        1,
        "the message waits in the producer"
    );

    broker.start_again();
    eventually("the transport is ready", async || t.is_ready().await).await;
    timeout(LONG, receipt.delivered())
        .await
        .expect("delivered in time")
        .expect("delivered once the broker is up");
    let got = conformance::receive(sub.as_mut(), 1).await;
    assert_eq!(&got[0].payload[..], b"sent while down");
    eventually("the metrics say connected", async || t.metrics().connected).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_that_goes_away_and_comes_back_is_used_again() {
    // Persistent storage: a restarted Kafka broker keeps its log, offsets and producer state
    // (tansu's memory storage would come back empty and refuse the idempotent producer).
    let mut broker = TestBroker::start_persistent(&[TopicSpec::new("again", 2)]);
    let t = transport(&broker.brokers);
    let publisher = t.publisher();
    let mut sub = t.subscribe("again", "readers").await.expect("subscribe");
    eventually("the transport is ready", async || t.is_ready().await).await;
    publisher
        .publish("again", b"k", Bytes::from_static(b"before"))
        .await
        .expect("publish")
        .delivered()
        .await
        .expect("delivered");
    let got = conformance::receive(sub.as_mut(), 1).await;
    assert_eq!(&got[0].payload[..], b"before");

    broker.stop();
    eventually("the transport notices", async || !t.is_ready().await).await;
    let during = publisher
        .publish("again", b"k", Bytes::from_static(b"during"))
        .await
        .expect("publishing while the broker is away is accepted");
    // Receiving while the broker is away waits; it does not fail.
    let mut none = Vec::new();
    assert!(
        timeout(Duration::from_secs(2), sub.recv_batch(&mut none, 10))
            .await
            .is_err()
    );

    broker.start_again();
    eventually("the transport is ready again", async || t.is_ready().await).await;
    timeout(LONG, during.delivered())
        .await
        .expect("delivered in time")
        .expect("what was published while away is delivered");
    publisher
        .publish("again", b"k", Bytes::from_static(b"after"))
        .await
        .expect("publish")
        .delivered()
        .await
        .expect("delivered");
    let got = conformance::receive(sub.as_mut(), 2).await;
    let bodies: Vec<&[u8]> = got.iter().map(|m| &m.payload[..]).collect();
    assert_eq!(
        bodies,
        [&b"during"[..], &b"after"[..]],
        "the subscriber resumes"
    );
    assert_eq!(t.metrics().send_errors, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_reader_of_all_partitions_sees_everything_published_after_it_subscribed() {
    let broker = TestBroker::start(&[TopicSpec::new("alerts", 3)]);
    let t = transport(&broker.brokers);
    let publisher = t.publisher();
    for i in 0..5 {
        publisher
            .publish("alerts", format!("old{i}").as_bytes(), Bytes::from("old"))
            .await
            .expect("publish");
    }
    publisher.flush().await.expect("flush");

    let mut first = t
        .subscribe_all_from("alerts", iiot_kafka::Start::End)
        .await
        .expect("subscribe_all");
    let mut second = t
        .subscribe_all_from("alerts", iiot_kafka::Start::End)
        .await
        .expect("subscribe_all");
    for i in 0..30 {
        publisher
            .publish(
                "alerts",
                format!("device_{i}").as_bytes(),
                Bytes::from(i.to_string()),
            )
            .await
            .expect("publish");
    }
    publisher.flush().await.expect("flush");
    for sub in [&mut first, &mut second] {
        let got = conformance::receive(sub.as_mut(), 30).await;
        let mut bodies: Vec<u32> = got
            .iter()
            .map(|m| {
                std::str::from_utf8(&m.payload)
                    .expect("utf8")
                    .parse()
                    .expect("n")
            })
            .collect();
        bodies.sort_unstable();
        assert_eq!(
            bodies,
            (0..30).collect::<Vec<_>>(),
            "from the end: none of the old ones"
        );
        assert_eq!(
            got.iter()
                .map(|m| m.partition)
                .collect::<BTreeSet<_>>()
                .len(),
            3,
            "every partition"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_follow_the_traffic() {
    let broker = TestBroker::start(&[TopicSpec::new("counted", 2)]);
    let t = transport(&broker.brokers);
    eventually("the transport is ready", async || t.is_ready().await).await;
    t.ensure_topics(&[TopicSpec::new("counted", 2), TopicSpec::new("created", 4)])
        .await
        .expect("existing topics are fine, new ones are created");

    let publisher = t.publisher();
    let mut receipts = Vec::new();
    for i in 0..100 {
        receipts.push(
            publisher
                .publish("created", format!("k{i}").as_bytes(), Bytes::from("x"))
                .await
                .expect("publish"),
        );
    }
    for r in receipts {
        r.delivered().await.expect("delivered");
    }
    let m = t.metrics();
    assert_eq!(m.messages_sent, 100);
    assert_eq!(m.send_errors, 0);
    assert_eq!(m.buffer_depth, 0);
    assert_eq!(m.send_duration_buckets.iter().sum::<u64>(), 100);
    assert!(m.send_duration_sum_s > 0.0);
    eventually("statistics report produce requests", async || {
        t.metrics().batches_sent > 0
    })
    .await;

    // Lag: what is published but not yet read. Read slowly, so that statistics taken while
    // reading show some; once everything is read it goes back to 0.
    let mut sub = t.subscribe("created", "lagging").await.expect("subscribe");
    let (mut read, mut max_lag) = (0, 0);
    let deadline = Instant::now() + LONG;
    while read < 100 {
        assert!(Instant::now() < deadline, "read {read} of 100");
        read += receive_some(sub.as_mut(), Duration::from_millis(100), 4)
            .await
            .len();
        max_lag = max_lag.max(t.metrics().consumer_lag);
        sleep(Duration::from_millis(100)).await;
    }
    // Statistics arrive with the consumer's events: keep a receive pending, as a processor
    // waiting for input does.
    let wait_idle = Instant::now() + Duration::from_secs(3);
    while Instant::now() < wait_idle {
        assert!(
            receive_some(sub.as_mut(), Duration::from_millis(100), 4)
                .await
                .is_empty()
        );
        max_lag = max_lag.max(t.metrics().consumer_lag);
    }
    assert!(max_lag > 0, "unread messages showed as lag");
    eventually("everything read: no lag", async || {
        assert!(
            receive_some(sub.as_mut(), Duration::from_millis(100), 4)
                .await
                .is_empty()
        );
        t.metrics().consumer_lag == 0
    })
    .await;
}

#[tokio::test]
async fn invalid_settings_are_refused_and_a_missing_broker_is_not_an_error() {
    let mut s = KafkaSettings::new("127.0.0.1:1");
    s.producer.compression = "brotli".into();
    assert!(KafkaTransport::new(s).is_err());
    let mut s = KafkaSettings::new("127.0.0.1:1");
    s.properties = vec![("no.such.property".into(), "1".into())];
    assert!(
        KafkaTransport::new(s).is_err(),
        "librdkafka rejects unknown properties"
    );
    for codec in iiot_kafka::COMPRESSIONS {
        let mut s = KafkaSettings::new("127.0.0.1:1");
        s.producer.compression = codec.into();
        KafkaTransport::new(s).unwrap_or_else(|e| panic!("{codec}: {e}"));
    }
    let t = transport("127.0.0.1:1");
    assert!(!t.is_ready().await);
    let err = t
        .ensure_topics(&[TopicSpec::new("x", 1)])
        .await
        .expect_err("no broker: topic creation fails after its timeout");
    assert!(matches!(err, iiot_transport::TransportError::Broker(_)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_state_topic_is_written_by_partition_and_read_back_for_exactly_the_partitions_asked() {
    let broker = TestBroker::start(&[TopicSpec::new("state", 4)]);
    let t = transport(&broker.brokers);
    // Keys that the partitioner would spread anywhere go where they are told.
    for i in 0..40u32 {
        let partition = (i % 4) as i32;
        let receipt = t
            .publish_to(
                "state",
                partition,
                format!("device_{i:03}").as_bytes(),
                Bytes::from(format!("{partition}:{i}")),
            )
            .await
            .expect("publish_to");
        receipt.delivered().await.expect("delivered");
    }
    let got = t
        .read_partitions("state", &[1, 3], Duration::from_secs(60))
        .await
        .expect("read back");
    let payloads: Vec<String> = got
        .iter()
        .map(|m| String::from_utf8_lossy(&m.payload).into_owned())
        .collect();
    let mut want: Vec<String> = (0..40u32)
        .filter(|i| i % 4 == 1 || i % 4 == 3)
        .map(|i| format!("{}:{i}", i % 4))
        .collect();
    let mut sorted = payloads.clone();
    sorted.sort();
    want.sort();
    assert_eq!(
        sorted, want,
        "everything of partitions 1 and 3, nothing else"
    );
    for p in [1, 3] {
        let offsets: Vec<i64> = got
            .iter()
            .filter(|m| m.partition == p)
            .map(|m| m.offset)
            .collect();
        assert!(
            offsets.windows(2).all(|w| w[0] < w[1]),
            "in order: {offsets:?}"
        );
    }
    let none = t
        .read_partitions("state", &[], Duration::from_secs(5))
        .await
        .expect("nothing asked");
    assert!(none.is_empty());

    // A partition the topic does not have: refused (the caller counts it and goes on), not a
    // delivery error to retry for ever. It may be refused at once or by its delivery report.
    let outcome = match t
        .publish_to("state", 9, b"device_999", Bytes::from_static(b"nowhere"))
        .await
    {
        Ok(receipt) => tokio::time::timeout(Duration::from_secs(60), receipt.delivered())
            .await
            .expect("a verdict on the missing partition within a minute"),
        Err(e) => Err(e),
    };
    assert!(
        matches!(outcome, Err(TransportError::Refused(_))),
        "partition 9 of a 4-partition topic: {outcome:?}"
    );
}
