//! The in-process pipeline: 1,000 simulated devices over a simulated span through the embedded
//! bus and the processor. Every (device, seq) is processed exactly once and in order; an injected
//! overheating fault raises exactly one `temperature_high` alert that later resolves; malformed
//! messages land in the dead-letter topic with their reason while processing continues.

mod support;

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use iiot::config::Config;
use iiot::simulator::{Emitted, FaultKind, Fleet, SimulatorConfig};
use iiot_model::{Alert, AlertStatus};
use iiot_transport::{Message, Publisher, Subscriber, Transport};
use support::readings::reading_bytes;
use support::wait_until;

const DEVICES: u32 = 1000;
const ROUNDS: u64 = 100;
const INTERVAL_MS: i64 = 5_000;

async fn drain(sub: &mut dyn Subscriber) -> Vec<Message> {
    let mut all = Vec::new();
    let mut batch = Vec::new();
    loop {
        batch.clear();
        let n = tokio::time::timeout(Duration::from_secs(30), sub.recv_batch(&mut batch, 4096))
            .await
            .expect("stream ends after the bus closes")
            .expect("receive");
        if n == 0 {
            return all;
        }
        all.append(&mut batch);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_reading_once_in_order_with_alerts_and_dead_letters() {
    let config = Config::default();
    let bus = support::bus(&config);
    let mut alerts_sub = bus
        .subscribe(&config.kafka.topic_alerts, "test-alerts")
        .await
        .expect("subscribe");
    let mut dlq_sub = bus
        .subscribe(&config.kafka.topic_dlq, "test-dlq")
        .await
        .expect("subscribe");
    let embedded = support::start_pipeline(&config, bus.clone()).await;
    let alerts_task = tokio::spawn(async move { drain(alerts_sub.as_mut()).await });
    let dlq_task = tokio::spawn(async move { drain(dlq_sub.as_mut()).await });

    let mut fleet = Fleet::new(&SimulatorConfig {
        devices: DEVICES,
        interval: Duration::from_millis(INTERVAL_MS as u64),
        seed: 7,
        variance: 0.1,
        fault_rate: 0.0,
        malformed_rate: 0.005,
    });
    let hot = 41; // device_042
    fleet.inject(hot, FaultKind::Overheat, 10);

    // Simulated span: ROUNDS intervals ending now, devices spread across each interval.
    let start = iiot::now_ms() - ROUNDS as i64 * INTERVAL_MS - 1_000;
    let publisher = embedded.publisher();
    let mut produced: HashMap<String, u64> = HashMap::new();
    let mut malformed = 0u64;
    let mut buf = Vec::new();
    for round in 0..ROUNDS {
        for i in 0..DEVICES as usize {
            let ts = start + round as i64 * INTERVAL_MS + i as i64 * INTERVAL_MS / DEVICES as i64;
            let emitted = fleet.emit(i, ts, &mut buf);
            match emitted {
                Emitted::Reading { seq } => {
                    let last = produced.entry(fleet.device_id(i).to_string()).or_insert(0);
                    assert_eq!(seq, *last + 1, "simulator seq contiguous");
                    *last = seq;
                }
                Emitted::Malformed => malformed += 1,
                Emitted::Silent => continue,
            }
            let key = fleet.device_id(i).as_bytes().to_vec();
            publisher
                .publish(
                    &config.kafka.topic_device_data,
                    &key,
                    Bytes::from(buf.clone()),
                )
                .await
                .expect("publish");
        }
    }
    let processor = embedded.finish().await.expect("drained");
    // The processors drained their input and delivered their outputs; closing the bus ends the
    // test's own subscriptions.
    bus.close();
    let alerts: Vec<Alert> = alerts_task
        .await
        .expect("alerts task")
        .iter()
        .map(|m| serde_json::from_slice(&m.payload).expect("alert JSON"))
        .collect();
    let dead = dlq_task.await.expect("dlq task");

    // Exactly once, in order: every produced reading processed, no gap, no duplicate, no late
    // arrival, and each device's newest seq is the last one produced.
    let stats = processor.stats();
    let total: u64 = produced.values().sum();
    assert_eq!(produced.len(), DEVICES as usize);
    assert_eq!(stats.processed.load(Ordering::Relaxed), total);
    assert_eq!(stats.seq_gaps.load(Ordering::Relaxed), 0);
    assert_eq!(stats.late.load(Ordering::Relaxed), 0);
    assert_eq!(
        stats.dead_letters_of(iiot_model::InvalidReason::DuplicateSeq),
        0
    );
    for (device, last) in &produced {
        let state = processor.device(device).expect("device tracked");
        assert_eq!(state.seq.highest(), *last, "{device}");
    }

    // The injected overheating: one temperature_high, raised then resolved, same id.
    let hot_id = fleet.device_id(hot).to_string();
    let high: Vec<&Alert> = alerts
        .iter()
        .filter(|a| a.device_id == hot_id && a.alert_type == "temperature_high")
        .collect();
    assert_eq!(high.len(), 2, "one raise and one resolve: {high:#?}");
    assert_eq!(high[0].status, AlertStatus::Active);
    assert!(high[0].current_value > 80.0);
    assert_eq!(high[1].status, AlertStatus::Resolved);
    assert_eq!(high[0].alert_id, high[1].alert_id);
    assert!(high[1].timestamp > high[0].timestamp);
    // No other device overheated.
    assert!(
        alerts
            .iter()
            .filter(|a| a.alert_type == "temperature_high")
            .all(|a| a.device_id == hot_id)
    );

    // Malformed messages: all dead-lettered with a reason, none lost, processing went on.
    assert!(malformed > 0, "the fleet was asked for malformed messages");
    assert_eq!(dead.len() as u64, malformed);
    assert_eq!(stats.dead_letters_total(), malformed);
    for m in &dead {
        let letter: serde_json::Value =
            serde_json::from_slice(&m.payload).expect("dead letter JSON");
        let reason = letter["reason"].as_str().expect("reason");
        assert!(
            iiot_model::InvalidReason::ALL
                .iter()
                .any(|r| r.as_str() == reason),
            "unknown reason {reason}"
        );
        assert!(!letter["detail"].as_str().expect("detail").is_empty());
        assert_eq!(letter["source_topic"], "device-data");
    }
}

async fn wait_processed(stats: &iiot::processor::ProcessorStats, n: u64) {
    wait_until(
        &format!("the processor to reach {n} readings"),
        Duration::from_secs(5),
        || stats.processed.load(Ordering::Relaxed) >= n,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloaded_rules_and_acknowledgements_reach_the_running_processor() {
    use iiot::alerts::{RuleSet, Thresholds};
    use iiot::processor::run::Command;

    let config = Config::default();
    let (_bus, mut alerts_sub, embedded) =
        support::start_pipeline_watching_alerts(&config, "test-alerts").await;
    let publisher = embedded.publisher();
    let topic = config.kafka.topic_device_data.clone();
    let t0 = iiot::now_ms() - 60_000;

    // 75 °C is below the default 80 °C threshold: nothing.
    publisher
        .publish(
            &topic,
            b"device_001",
            reading_bytes("device_001", 1, t0, 75.0),
        )
        .await
        .expect("publish");
    wait_processed(&embedded.stats, 1).await;

    // Lower the threshold while running; the next reading at 76 °C raises the alert.
    let lowered = RuleSet::defaults(&Thresholds {
        temperature_high: 70.0,
        ..Thresholds::default()
    });
    embedded
        .rules
        .send(std::sync::Arc::new(lowered))
        .expect("processor listens");
    publisher
        .publish(
            &topic,
            b"device_001",
            reading_bytes("device_001", 2, t0 + 5_000, 76.0),
        )
        .await
        .expect("publish");
    wait_processed(&embedded.stats, 2).await;

    let mut got = Vec::new();
    let n = tokio::time::timeout(Duration::from_secs(10), alerts_sub.recv_batch(&mut got, 10))
        .await
        .expect("an alert arrives")
        .expect("receive");
    assert_eq!(n, 1);
    let raised: Alert = serde_json::from_slice(&got[0].payload).expect("alert JSON");
    assert_eq!(
        (raised.alert_type.as_str(), raised.status),
        ("temperature_high", AlertStatus::Active)
    );
    assert_eq!(raised.threshold.value, 70.0);

    // Acknowledge through the command channel: answered, and published.
    let (reply, answer) = tokio::sync::oneshot::channel();
    embedded
        .commands
        .send(Command::Acknowledge {
            alert_id: raised.alert_id.clone(),
            by: Some("olga".into()),
            reply,
        })
        .await
        .expect("processor listens");
    let acked = answer.await.expect("answered").expect("open alert");
    assert_eq!(acked.status, AlertStatus::Acknowledged);
    got.clear();
    tokio::time::timeout(Duration::from_secs(10), alerts_sub.recv_batch(&mut got, 10))
        .await
        .expect("the acknowledgement is published")
        .expect("receive");
    let published: Alert = serde_json::from_slice(&got[0].payload).expect("alert JSON");
    assert_eq!(
        (published.alert_id, published.status),
        (raised.alert_id.clone(), AlertStatus::Acknowledged)
    );
    assert_eq!(published.acknowledged_by.as_deref(), Some("olga"));

    // Unknown ids are refused, not published.
    let (reply, answer) = tokio::sync::oneshot::channel();
    embedded
        .commands
        .send(Command::Acknowledge {
            alert_id: "alert_nope".into(),
            by: None,
            reply,
        })
        .await
        .expect("processor listens");
    assert!(answer.await.expect("answered").is_err());
    embedded.finish().await.expect("finish");
}

/// A publisher whose first `fail` deliveries fail (as a broker unreachable past the delivery
/// timeout does), then delivers onto the bus.
struct Flaky {
    bus: iiot_transport::Bus,
    fail: std::sync::atomic::AtomicU32,
}

#[async_trait::async_trait]
impl iiot_transport::Publisher for Flaky {
    async fn publish(
        &self,
        topic: &str,
        key: &[u8],
        payload: Bytes,
    ) -> Result<iiot_transport::Receipt, iiot_transport::TransportError> {
        let left = self.fail.load(Ordering::SeqCst);
        if left > 0 {
            self.fail.store(left - 1, Ordering::SeqCst);
            return Ok(iiot_transport::Receipt::Pending(Box::pin(async {
                Err(iiot_transport::TransportError::Delivery(
                    "injected: message timed out".into(),
                ))
            })));
        }
        self.bus.publisher().publish(topic, key, payload).await
    }

    async fn flush(&self) -> Result<(), iiot_transport::TransportError> {
        Ok(())
    }
}

type Worker =
    tokio::task::JoinHandle<Result<iiot::processor::Processor, iiot_transport::TransportError>>;

/// A processor worker on `bus` whose first `fail` deliveries fail, with one malformed message
/// (whose dead letter is its only output) published to it.
async fn flaky_worker_with_a_bad_message(
    config: &Config,
    bus: &iiot_transport::Bus,
    fail: u32,
) -> (
    std::sync::Arc<iiot::processor::ProcessorStats>,
    Worker,
    tokio_util::sync::CancellationToken,
) {
    let k = &config.kafka;
    let input = bus
        .subscribe(&k.topic_device_data, "processor")
        .await
        .expect("subscribe");
    let stats = std::sync::Arc::new(iiot::processor::ProcessorStats::default());
    let flaky = std::sync::Arc::new(Flaky {
        bus: bus.clone(),
        fail: fail.into(),
    });
    let stop = tokio_util::sync::CancellationToken::new();
    let worker = support::spawn_processor(config, input, flaky, stats.clone(), stop.clone());
    bus.publish(
        &k.topic_device_data,
        b"device_bad",
        Bytes::from_static(b"{not json"),
    )
    .await
    .expect("publish");
    (stats, worker, stop)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_output_delivery_is_sent_again_and_the_processor_carries_on() {
    let config = Config::default();
    let bus = support::bus(&config);
    let k = &config.kafka;
    let mut dlq = bus
        .subscribe(&k.topic_dlq, "test-dlq")
        .await
        .expect("subscribe");
    let (stats, worker, _stop) = flaky_worker_with_a_bad_message(&config, &bus, 2).await;
    let mut got = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), dlq.recv_batch(&mut got, 10))
        .await
        .expect("the dead letter arrives after the retries")
        .expect("receive");
    assert_eq!(got.len(), 1, "delivered once");
    assert_eq!(
        stats.publish_errors.load(Ordering::Relaxed),
        2,
        "both failures counted"
    );

    // The input is committed once its output is delivered.
    wait_until("the input to be committed", Duration::from_secs(30), || {
        bus.lag(&k.topic_device_data, "processor") == Some(0)
    })
    .await;
    // And the processor is still running: it drains and stops cleanly.
    bus.close_topic(&k.topic_device_data);
    let processor = tokio::time::timeout(Duration::from_secs(30), worker)
        .await
        .expect("drains")
        .expect("task")
        .expect("no error");
    assert_eq!(processor.stats().dead_letters_total(), 1);
}

/// SIGTERM during a broker outage: the worker is retrying a delivery that cannot succeed. The
/// stop reaches the retry loop, the worker ends promptly, and the input whose output was never
/// delivered stays uncommitted (read again after a restart).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_during_an_outage_ends_the_retries_and_commits_nothing() {
    let config = Config::default();
    let bus = support::bus(&config);
    let k = &config.kafka;
    let (stats, worker, stop) = flaky_worker_with_a_bad_message(&config, &bus, u32::MAX).await;
    wait_until("the worker is retrying", Duration::from_secs(30), || {
        stats.publish_errors.load(Ordering::Relaxed) >= 2
    })
    .await;

    stop.cancel();
    let ended = tokio::time::timeout(Duration::from_secs(10), worker)
        .await
        .expect("the worker ends within 10 s of the stop")
        .expect("task");
    assert!(ended.is_ok(), "a stop is not an error: {:?}", ended.err());
    assert_eq!(
        bus.lag(&k.topic_device_data, "processor"),
        Some(1),
        "the undelivered input is not committed"
    );
}
