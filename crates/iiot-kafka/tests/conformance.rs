//! The transport conformance suite against a real broker (a private tansu per test).

use std::time::Duration;

use iiot_kafka::testing::TestBroker;
use iiot_kafka::{KafkaSettings, KafkaTransport, TopicSpec};
use iiot_transport::{Transport, conformance};

fn kafka(topic: &str, settings: impl FnOnce(&mut KafkaSettings)) -> (TestBroker, KafkaTransport) {
    let broker = TestBroker::start(&[TopicSpec::new(topic, 4)]);
    let mut s = KafkaSettings::new(broker.brokers.clone());
    s.reconnect_log_interval = Duration::from_secs(5);
    settings(&mut s);
    let transport = KafkaTransport::new(s).expect("transport");
    (broker, transport)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyed_order_is_kept() {
    let (_broker, t) = kafka("t-order", |_| {});
    conformance::keyed_order_is_kept(&t, "t-order").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_group_gets_everything() {
    let (_broker, t) = kafka("t-groups", |_| {});
    conformance::every_group_gets_everything(&t, "t-groups").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backpressure_never_drops() {
    // A producer queue far smaller than the 20,000 messages published.
    let (_broker, t) = kafka("t-slow", |s| s.producer.queue_max_messages = 500);
    conformance::backpressure_never_drops(&t, "t-slow").await;
    let m = t.metrics();
    assert!(
        m.backpressure_waits > 0,
        "a 500-message queue under 20,000 messages must have made the publisher wait"
    );
    assert_eq!(m.messages_sent, 20_000);
    assert_eq!(m.send_errors, 0);
    assert_eq!(m.buffer_depth, 0, "flushed: nothing in flight");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payloads_are_preserved() {
    let (_broker, t) = kafka("t-bytes", |_| {});
    conformance::payloads_are_preserved(&t, "t-bytes").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receive_is_cancel_safe() {
    let (_broker, t) = kafka("t-cancel", |_| {});
    conformance::receive_is_cancel_safe(&t, "t-cancel").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_to_lands_in_the_partition_asked() {
    let (_broker, t) = kafka("t-partition", |_| {});
    conformance::publish_to_lands_in_the_partition_asked(&t, "t-partition").await;
}
