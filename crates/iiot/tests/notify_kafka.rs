//! Exactly one notification per alert change on Kafka, over a real Kafka-protocol broker (a
//! private tansu) and a real webhook receiver: the notifier of `iiot serve` is a member of the
//! notify group on the alerts topic and records each delivery before it commits.
//!
//! - Two processors, one SIGKILLed mid-stream: every change is told once (counted by
//!   `alert_id` and `event`), none lost with the dead processor.
//! - A notifier SIGKILLed while the receiver fails: the next one tells what was not delivered;
//!   one SIGKILLed after delivering (its records written, its offsets perhaps not committed):
//!   the next one tells nothing twice.
//! - A silence made through one serve holds for every notifier; alerts it holds back move with
//!   their partition when a notifier joins, and are told once when it ends.
//!
//! Needs the `tansu` binary (`scripts/kafka-up.sh --install`).
#![cfg(feature = "kafka")]
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod support;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use iiot_kafka::testing::TestBroker;
use iiot_model::{Alert, AlertStatus, Reading};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use support::kafka::{TAKEOVER_ENV, client, read_records, read_topic, topics};
use support::notify::WebhookReceiver;
use support::role::Role;

const DEVICES: usize = 10;

/// Publishes one reading per device at `temperature`, `seq` and event time `ts`.
fn publish_all(producer: &BaseProducer, seq: u64, ts: i64, temperature: f64) {
    for d in 0..DEVICES {
        let id = format!("device_{:03}", 200 + d);
        let body = serde_json::to_vec(&Reading::example(&id, seq, ts, temperature)).expect("json");
        producer
            .send(BaseRecord::to("device-data").key(&id).payload(&body))
            .expect("send");
    }
    producer.flush(Duration::from_secs(30)).expect("flush");
}

/// One record per batch: tansu cannot serve a fetch that starts inside a batch, which a member
/// taking over at a committed offset does.
fn producer(brokers: &str) -> BaseProducer {
    client(brokers)
        .set("batch.num.messages", "1")
        .set("linger.ms", "0")
        .create()
        .expect("producer")
}

/// The `temperature_high` changes on the alerts topic, by alert id, once `until` holds.
fn alert_changes(
    brokers: &str,
    mut until: impl FnMut(&BTreeMap<String, Vec<Alert>>) -> bool,
) -> BTreeMap<String, Vec<Alert>> {
    let mut by_id = BTreeMap::new();
    read_topic(brokers, "alerts", |seen| {
        by_id = BTreeMap::new();
        for bytes in seen {
            let alert: Alert = serde_json::from_slice(bytes).expect("alert JSON");
            if alert.alert_type == "temperature_high" {
                by_id
                    .entry(alert.alert_id.clone())
                    .or_insert_with(Vec::new)
                    .push(alert);
            }
        }
        until(&by_id)
    });
    by_id
}

fn resolved(alerts: &[Alert]) -> bool {
    alerts.iter().any(|a| a.status == AlertStatus::Resolved)
}

/// How often the receiver was told each (alert id, event) of `temperature_high`.
fn told(receiver: &WebhookReceiver) -> HashMap<(String, String), u32> {
    let mut seen = HashMap::new();
    for r in receiver.received() {
        let body = r.json();
        if body["alert_type"] != "temperature_high" {
            continue;
        }
        let key = (
            body["alert_id"].as_str().expect("alert_id").to_string(),
            body["event"].as_str().expect("event").to_string(),
        );
        *seen.entry(key).or_default() += 1;
    }
    seen
}

/// Waits until the receiver was told `event` of every id in `ids`.
fn wait_told(receiver: &WebhookReceiver, ids: &BTreeSet<String>, event: &str) {
    let deadline = std::time::Instant::now() + support::role::PATIENCE;
    loop {
        let seen = told(receiver);
        let missing: Vec<&String> = ids
            .iter()
            .filter(|id| !seen.contains_key(&((*id).clone(), event.to_string())))
            .collect();
        if missing.is_empty() {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never told {event} of {missing:?}; told {seen:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn assert_told_once(receiver: &WebhookReceiver) {
    let twice: Vec<_> = told(receiver).into_iter().filter(|(_, n)| *n > 1).collect();
    assert!(twice.is_empty(), "told more than once: {twice:?}");
}

/// tansu 0.6 drops a dead member only after the rebalance timeout (`max.poll.interval.ms`,
/// 15 s here), and a member that joins before that may be given nothing and keep nothing
/// (the dead one keeps every partition). A notifier started after a kill waits this long.
const DEAD_MEMBER_GONE: Duration = Duration::from_secs(17);

fn kill(role: &mut Role) {
    let _ = Command::new("kill")
        .args(["-KILL", &role.child.id().to_string()])
        .status();
    let _ = role.child.wait();
}

/// The environment of a notifying `serve`: the webhook, and a group that notices a dead
/// member within the test's patience (see [`TAKEOVER_ENV`]).
fn serve_env(url: &str) -> Vec<(&'static str, String)> {
    vec![
        ("NOTIFY_WEBHOOK_URL", url.to_string()),
        (
            "KAFKA_PROPERTIES",
            "session.timeout.ms=6000;max.poll.interval.ms=15000".to_string(),
        ),
    ]
}

/// A silence of the alerts of devices matching `glob` for ten minutes, made through `serve`;
/// its id.
fn make_silence(serve: &Role, glob: &str) -> String {
    let spec = serde_json::json!({
        "matchers": {"device_id": glob},
        "ends_at": iiot::now_ms() + 600_000,
        "comment": "maintenance", "created_by": "test"
    });
    let (status, body) = serve
        .post_body("/api/silences", spec.to_string().as_bytes())
        .expect("answered");
    assert_eq!(status, 201, "{body}");
    serde_json::from_str::<serde_json::Value>(&body).expect("json")["id"]
        .as_str()
        .expect("id")
        .to_string()
}

fn lists_silence(role: &Role, id: &str) -> bool {
    role.json("/api/silences")
        .and_then(|v| v["items"].as_array().cloned())
        .unwrap_or_default()
        .iter()
        .any(|s| s["id"] == id)
}

fn delete_silence(serve: &Role, id: &str) {
    let (status, _) =
        support::http::request(serve.http_port, "DELETE", &format!("/api/silences/{id}"))
            .expect("answered");
    assert!(status == 204 || status == 200, "deleted: {status}");
}

fn start_serve(brokers: &str, env: &[(&'static str, String)]) -> Role {
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut serve = Role::start(&["serve"], brokers, &env);
    serve.wait_for_log(
        "the notifier's partitions",
        "notifications from the alerts topic",
    );
    serve
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_processor_killed_mid_stream_loses_and_repeats_no_notification() {
    let receiver = Arc::new(WebhookReceiver::start(0).await);
    let r = receiver.clone();
    tokio::task::spawn_blocking(move || {
        let receiver = r;
        let broker = TestBroker::start(&topics());
        let brokers = broker.brokers.as_str();
        let _serve = start_serve(brokers, &serve_env(&receiver.url()));
        let mut first = Role::start(&["process"], brokers, &TAKEOVER_ENV);
        first.wait_for_log(
            "the first member's partitions",
            "kafka: partitions assigned",
        );
        let mut second = Role::start(&["process"], brokers, &TAKEOVER_ENV);
        second.wait_for_log(
            "the second member's partitions",
            "kafka: partitions assigned",
        );

        let producer = producer(brokers);
        let t0 = iiot::now_ms() - 120_000;
        publish_all(&producer, 1, t0, 85.0);
        let raised = alert_changes(brokers, |by| by.len() == DEVICES);
        first.wait_for("both members own devices", |r| {
            r.metric("iot_messages_total", "status=\"success\"") > 0.0
                && second.metric("iot_messages_total", "status=\"success\"") > 0.0
        });
        // Mid-stream: more hot readings, and one processor dies before it has committed them.
        publish_all(&producer, 2, t0 + 1_000, 86.0);
        kill(&mut first);
        publish_all(&producer, 3, t0 + 5_000, 20.0);
        let changes = alert_changes(brokers, |by| {
            by.len() >= DEVICES && by.values().all(|a| resolved(a))
        });
        assert!(raised.keys().all(|id| changes.contains_key(id)));
        let ids: BTreeSet<String> = changes.keys().cloned().collect();
        wait_told(&receiver, &ids, "raised");
        wait_told(&receiver, &ids, "resolved");
        // Anything told twice would have come by now: the survivor is done with the stream.
        std::thread::sleep(Duration::from_secs(2));
        assert_told_once(&receiver);
        let repeats_possible = changes.values().any(|a| a.len() > 2);
        eprintln!(
            "alert changes on the topic: {changes:?} (repeats among them: {repeats_possible})"
        );
    })
    .await
    .expect("the test's blocking part");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notifier_killed_tells_nothing_twice_and_its_successor_tells_what_it_had_not() {
    // Failing at first: every attempt is answered 500 until the test heals it.
    let receiver = Arc::new(WebhookReceiver::start(usize::MAX).await);
    let r = receiver.clone();
    tokio::task::spawn_blocking(move || {
        let receiver = r;
        let broker = TestBroker::start(&topics());
        let brokers = broker.brokers.as_str();
        let env = serve_env(&receiver.url());
        let mut serve = start_serve(brokers, &env);
        let mut process = Role::start(&["process"], brokers, &TAKEOVER_ENV);
        process.wait_for_log("the processor's partitions", "kafka: partitions assigned");

        let producer = producer(brokers);
        let t0 = iiot::now_ms() - 120_000;
        publish_all(&producer, 1, t0, 85.0);
        let raised = alert_changes(brokers, |by| by.len() == DEVICES);
        let ids: BTreeSet<String> = raised.keys().cloned().collect();
        // The first change is being retried (3 retries, backoff from 500 ms): nothing settled.
        serve.wait_for("the first attempts", |_| receiver.attempts() >= 2);
        kill(&mut serve);
        std::thread::sleep(DEAD_MEMBER_GONE);
        receiver.heal();

        // The next notifier reads what was not delivered and tells it. It commits only once a
        // minute, so when it dies its offsets are not committed: only its delivery records
        // can keep the one after it from telling the same changes again.
        let mut slow_commits = env.clone();
        slow_commits[1].1.push_str(";auto.commit.interval.ms=60000");
        let mut successor = start_serve(brokers, &slow_commits);
        wait_told(&receiver, &ids, "raised");
        // Its deliveries are recorded; then it dies.
        read_records(brokers, "notify-log", |records| records.len() >= DEVICES);
        kill(&mut successor);
        std::thread::sleep(DEAD_MEMBER_GONE);
        let _third = start_serve(brokers, &env);
        publish_all(&producer, 2, t0 + 5_000, 20.0);
        alert_changes(brokers, |by| {
            by.values().filter(|a| resolved(a)).count() == DEVICES
        });
        wait_told(&receiver, &ids, "resolved");
        std::thread::sleep(Duration::from_secs(2));
        assert_told_once(&receiver);
        assert!(process.ready(), "the processor ran throughout");
    })
    .await
    .expect("the test's blocking part");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silence_made_through_one_serve_holds_for_every_notifier_and_its_end_tells_the_held() {
    let receiver = Arc::new(WebhookReceiver::start(0).await);
    let r = receiver.clone();
    tokio::task::spawn_blocking(move || {
        let receiver = r;
        let broker = TestBroker::start(&topics());
        let brokers = broker.brokers.as_str();
        let env = serve_env(&receiver.url());
        // Two notifiers in the group: either may own the silenced devices' alerts.
        let mut first = start_serve(brokers, &env);
        let mut second = start_serve(brokers, &env);
        // The group settled before anything is silenced: each notifier has its partitions of
        // the alerts topic (partitions moving under a silence are the next test's subject).
        let alerts_assigned = |r: &Role| {
            r.log_text()
                .lines()
                .any(|l| l.contains("kafka: partitions assigned") && l.contains("topic=alerts"))
        };
        second.wait_for("the second notifier's partitions", alerts_assigned);
        first.wait_for("the first notifier's share after the second joined", |r| {
            r.log_text()
                .lines()
                .filter(|l| l.contains("kafka: partitions assigned") && l.contains("topic=alerts"))
                .count()
                >= 2
        });
        let mut process = Role::start(&["process"], brokers, &TAKEOVER_ENV);
        process.wait_for_log("the processor's partitions", "kafka: partitions assigned");

        let id = make_silence(&first, "device_20[0-4]");
        let listed = |role: &Role| lists_silence(role, &id);
        process.wait_for("the other serve has the silence", |_| listed(&second));

        let producer = producer(brokers);
        publish_all(&producer, 1, iiot::now_ms() - 60_000, 85.0);
        let raised = alert_changes(brokers, |by| by.len() == DEVICES);
        let device_of: HashMap<String, String> = raised
            .iter()
            .map(|(id, a)| (id.clone(), a[0].device_id.clone()))
            .collect();
        let (held, open): (BTreeSet<String>, BTreeSet<String>) = device_of
            .keys()
            .cloned()
            .partition(|id| device_of[id].as_str() < "device_205");
        assert_eq!((held.len(), open.len()), (5, 5));
        wait_told(&receiver, &open, "raised");
        std::thread::sleep(Duration::from_secs(2));
        let seen = told(&receiver);
        let leaked: Vec<&String> = held
            .iter()
            .filter(|id| seen.contains_key(&((*id).clone(), "raised".to_string())))
            .collect();
        assert!(leaked.is_empty(), "silenced but told: {leaked:?}");

        // Ended through the other serve: every notifier lets go of what it held back.
        delete_silence(&second, &id);
        process.wait_for("the first serve has dropped the silence", |_| {
            !listed(&first)
        });
        wait_told(&receiver, &held, "raised");
        assert_told_once(&receiver);
    })
    .await
    .expect("the test's blocking part");
}

/// A notifier joins while the first one holds alerts back under a silence: the partitions it
/// is given move with what they hold, and when the silence ends each held alert is told once,
/// by the notifier that owns its partition then (the one that lost it lets it go). Fails if the
/// old owner still tells what it held (each alert of a moved partition told twice).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_held_by_a_silence_move_with_their_partition_and_are_told_once() {
    let receiver = Arc::new(WebhookReceiver::start(0).await);
    let r = receiver.clone();
    tokio::task::spawn_blocking(move || {
        let receiver = r;
        let broker = TestBroker::start(&topics());
        let brokers = broker.brokers.as_str();
        let env = serve_env(&receiver.url());
        let mut first = start_serve(brokers, &env);
        let mut process = Role::start(&["process"], brokers, &TAKEOVER_ENV);
        process.wait_for_log("the processor's partitions", "kafka: partitions assigned");

        let id = make_silence(&first, "device_2*");

        let producer = producer(brokers);
        publish_all(&producer, 1, iiot::now_ms() - 60_000, 85.0);
        let raised: BTreeSet<String> = alert_changes(brokers, |by| by.len() == DEVICES)
            .into_keys()
            .collect();
        first.wait_for("the first notifier holds every alert back", |r| {
            r.metric("iot_notifications_held_by_silence", "") >= DEVICES as f64
        });

        // A second notifier joins: the group rebalances and part of the alerts topic moves.
        let assignments = |r: &Role| {
            r.log_text()
                .lines()
                .filter(|l| l.contains("kafka: partitions assigned") && l.contains("topic=alerts"))
                .count()
        };
        let mut second = start_serve(brokers, &env);
        first.wait_for("the first notifier's share after the second joined", |r| {
            assignments(r) >= 2
        });
        second.wait_for("the second notifier holds what it was given", |r| {
            r.metric("iot_notifications_held_by_silence", "") > 0.0
        });
        let listed = |role: &Role| lists_silence(role, &id);
        assert!(listed(&second), "the silence is shared");
        assert!(told(&receiver).is_empty(), "nothing told under the silence");

        delete_silence(&second, &id);
        wait_told(&receiver, &raised, "raised");
        // A repeat from the old owner would come within its next tick (a second).
        std::thread::sleep(Duration::from_secs(3));
        assert_told_once(&receiver);
        assert!(process.ready(), "the processor ran throughout");
    })
    .await
    .expect("the test's blocking part");
}
