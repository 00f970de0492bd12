//! Broker faults under a publish stream, on librdkafka's mock cluster (in-process brokers whose
//! requests can be failed and which can be taken down): whatever a receipt acknowledged is
//! consumed afterwards, and what could not be delivered fails its receipt and is counted.

use std::collections::HashSet;
use std::time::Duration;

use bytes::Bytes;
use iiot_kafka::{KafkaSettings, KafkaTransport};
use iiot_transport::{Receipt, Transport, TransportError};
use rdkafka::mocking::MockCluster;
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
use tokio::time::{Instant, sleep, timeout};

const TOPIC: &str = "faults";
const LONG: Duration = Duration::from_secs(120);

fn transport(
    cluster: &MockCluster<'_, rdkafka::producer::DefaultProducerContext>,
    delivery_timeout_ms: u64,
) -> KafkaTransport {
    let mut s = KafkaSettings::new(cluster.bootstrap_servers());
    s.reconnect_log_interval = Duration::from_secs(5);
    s.producer.delivery_timeout_ms = delivery_timeout_ms;
    KafkaTransport::new(s).expect("transport")
}

/// Publishes `total` numbered messages over 50 keys at about 2,000 a second, calling `fault`
/// before message `i` so the caller can break things mid-stream.
async fn publish_stream(
    t: &KafkaTransport,
    total: u32,
    mut fault: impl FnMut(u32),
) -> Vec<(u32, Receipt)> {
    let publisher = t.publisher();
    let mut receipts = Vec::new();
    for i in 0..total {
        fault(i);
        let key = format!("device_{:02}", i % 50);
        let receipt = timeout(
            LONG,
            publisher.publish(TOPIC, key.as_bytes(), Bytes::from(i.to_string())),
        )
        .await
        .expect("publish never hangs")
        .expect("publish");
        receipts.push((i, receipt));
        if i % 20 == 19 {
            sleep(Duration::from_millis(10)).await;
        }
    }
    receipts
}

/// Resolves every receipt: the acknowledged message numbers, and how many failed.
async fn resolve(receipts: Vec<(u32, Receipt)>) -> (HashSet<u32>, u64) {
    let mut acked = HashSet::new();
    let mut failed = 0;
    for (i, r) in receipts {
        match timeout(LONG, r.delivered())
            .await
            .expect("every receipt resolves")
        {
            Ok(()) => {
                acked.insert(i);
            }
            Err(TransportError::Delivery(_)) => failed += 1,
            Err(e) => panic!("unexpected receipt error {e}"),
        }
    }
    (acked, failed)
}

/// Reads the whole topic with a fresh group until every acknowledged message was seen.
async fn assert_all_consumed(t: &KafkaTransport, acked: &HashSet<u32>) {
    let mut sub = t.subscribe(TOPIC, "verifier").await.expect("subscribe");
    let mut seen = HashSet::new();
    let deadline = Instant::now() + LONG;
    while !acked.is_subset(&seen) {
        assert!(
            Instant::now() < deadline,
            "acknowledged but never consumed: {:?}",
            acked.difference(&seen).take(20).collect::<Vec<_>>()
        );
        let mut batch = Vec::new();
        if let Ok(r) = timeout(Duration::from_millis(500), sub.recv_batch(&mut batch, 1024)).await {
            r.expect("receive");
        }
        for m in &batch {
            seen.insert(
                std::str::from_utf8(&m.payload)
                    .expect("utf8")
                    .parse::<u32>()
                    .expect("n"),
            );
        }
        sub.commit_batch(&batch).expect("commit");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transport_errors_and_a_broker_restart_lose_no_acknowledged_message() {
    let cluster = MockCluster::new(3).expect("mock cluster");
    cluster.create_topic(TOPIC, 6, 3).expect("topic");
    let t = transport(&cluster, 60_000);

    let total = 3000;
    let receipts = publish_stream(&t, total, |i| match i {
        500 => cluster.request_errors(
            RDKafkaApiKey::Produce,
            &[
                RDKafkaRespErr::RD_KAFKA_RESP_ERR__TRANSPORT,
                RDKafkaRespErr::RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT,
                RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS,
                RDKafkaRespErr::RD_KAFKA_RESP_ERR__TRANSPORT,
                RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION,
            ],
        ),
        1000 => cluster.broker_down(1).expect("broker 1 down"),
        2000 => cluster.broker_up(1).expect("broker 1 up"),
        _ => {}
    })
    .await;
    let (acked, failed) = resolve(receipts).await;
    // Retries within the delivery timeout deliver everything, in the end.
    assert_eq!(failed, 0, "a 60 s delivery timeout outlasts the faults");
    assert_eq!(acked.len(), total as usize);
    let m = t.metrics();
    assert_eq!(m.messages_sent, u64::from(total));
    assert_eq!(m.buffer_depth, 0);
    assert_all_consumed(&t, &acked).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_down_past_the_delivery_timeout_fails_receipts_and_loses_no_acknowledged_one() {
    let cluster = MockCluster::new(3).expect("mock cluster");
    cluster.create_topic(TOPIC, 6, 3).expect("topic");
    // Broker 2 leads partitions 0–2 and is down before the stream starts, so their messages
    // cannot be written in time whatever the timing (the mock moves no leadership by itself).
    for p in 0..3 {
        cluster.partition_leader(TOPIC, p, Some(2)).expect("leader");
    }
    for p in 3..6 {
        cluster.partition_leader(TOPIC, p, Some(1)).expect("leader");
    }
    let t = transport(&cluster, 2_000);
    cluster.broker_down(2).expect("broker 2 down");

    let receipts = publish_stream(&t, 1000, |_| {}).await;
    // The partitions led by broker 2 cannot be written until it is back; wait out the timeout.
    let (acked, failed) = resolve(receipts).await;
    cluster.broker_up(2).expect("broker 2 up");
    assert!(failed > 0, "messages for broker 2's partitions time out");
    assert!(!acked.is_empty(), "the other partitions take messages");
    let m = t.metrics();
    assert_eq!(m.send_errors, failed, "each failed receipt is counted");
    assert_eq!(m.messages_sent, acked.len() as u64);
    assert_eq!(m.buffer_depth, 0);

    // The producer keeps working once the broker is back.
    let more = publish_stream(&t, 10, |_| {}).await;
    let (more_acked, more_failed) = resolve(more).await;
    assert_eq!((more_acked.len(), more_failed), (10, 0));
    assert_all_consumed(&t, &acked).await;
}
