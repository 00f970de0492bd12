//! The alert-state topic over a real Kafka-protocol broker (a private tansu): a member given
//! partitions reads back exactly those partitions' state, and a deployment from before the
//! topic existed is migrated from the alerts topic once per partition.
//!
//! Needs the `tansu` binary (`scripts/kafka-up.sh --install`).
#![cfg(feature = "kafka")]
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod support;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use iiot::backend::Backend;
use iiot::recovery::{StateTopics, record, restore};
use iiot_kafka::testing::TestBroker;
use iiot_kafka::{KafkaSettings, KafkaTransport, TopicSpec};
use iiot_model::{Alert, AlertStatus, Reading};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use support::kafka::{TAKEOVER_ENV, client, read_partition, read_topic, topics as old_topics};
use support::role::{Role, iiot_command};

const T0: i64 = 1_700_000_000_000;

fn broker() -> (TestBroker, Backend, StateTopics) {
    let broker = TestBroker::start(&[
        TopicSpec::new("device-data", 10),
        TopicSpec::new("alerts", 3),
        TopicSpec::new("alert-state", 10),
    ]);
    let backend: Backend =
        Arc::new(KafkaTransport::new(KafkaSettings::new(&broker.brokers)).expect("transport"));
    let topics = StateTopics {
        state: "alert-state".into(),
        alerts: "alerts".into(),
    };
    (broker, backend, topics)
}

fn alert(device: &str, status: AlertStatus, ts: i64) -> Alert {
    let mut a: Alert = serde_json::from_value(serde_json::json!({
        "alert_id": format!("alert_{device}"), "device_id": device,
        "alert_type": "temperature_high", "severity": "high", "message": "hot",
        "timestamp": ts, "status": "active",
        "threshold": {"parameter": "temperature", "operator": ">", "value": 80.0},
        "current_value": 85.0
    }))
    .expect("alert");
    a.status = status;
    a
}

async fn put(backend: &Backend, topic: &str, partition: Option<i32>, key: &str, payload: Bytes) {
    let receipt = match partition {
        Some(p) => backend.publish_to(topic, p, key.as_bytes(), payload).await,
        None => {
            backend
                .publisher()
                .publish(topic, key.as_bytes(), payload)
                .await
        }
    };
    receipt
        .expect("publish")
        .delivered()
        .await
        .expect("delivered");
}

fn devices(r: &iiot::recovery::Restored) -> BTreeSet<String> {
    r.devices().into_iter().map(str::to_string).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_reads_exactly_the_assigned_partitions() {
    let (_broker, backend, topics) = broker();
    // Every partition migrated and holding one device with an open alert; device_3's alert
    // was resolved since (its newer record holds none).
    for p in 0..10 {
        let device = format!("device_{p}");
        put(
            &backend,
            "alert-state",
            Some(p),
            "#alert-state-migrated",
            record::migrated_marker(T0),
        )
        .await;
        let open = [(alert(&device, AlertStatus::Active, T0), T0)];
        put(
            &backend,
            "alert-state",
            Some(p),
            &device,
            record::encode(&open, None),
        )
        .await;
    }
    put(&backend, "alert-state", Some(3), "device_3", Bytes::new()).await;

    let r = restore(&backend, &topics, &[2, 3, 5])
        .await
        .expect("restore");
    assert_eq!(
        devices(&r),
        BTreeSet::from(["device_2".into(), "device_3".into(), "device_5".into()]),
        "only the assigned partitions' devices"
    );
    assert_eq!(
        r.record("device_3", 3),
        Some(&[][..]),
        "resolved since: none open"
    );
    assert_eq!(r.open, 2);
    assert!(
        r.migrated.is_empty(),
        "already migrated: the alerts topic is not read"
    );
    assert_eq!(
        r.record("device_5", 5).expect("device_5's record")[0]
            .0
            .alert_id,
        "alert_device_5"
    );
}

/// Issue 12: a record a member wrote after a later owner claimed the partition (the member
/// was dropped from the group and did not know yet; the later owner's follower had not
/// checked it before the partition moved again) does not replace the later owner's record
/// for the next owner: its alert is added (nobody else would resolve it), the later owner's
/// kept. Fails if the read back takes the latest record as it is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_record_of_a_superseded_member_does_not_replace_the_later_owners() {
    let (_broker, backend, topics) = broker();
    let state = |device: &str, id: &str| {
        let mut a = alert(device, AlertStatus::Active, T0);
        a.alert_id = id.into();
        vec![(a, T0)]
    };
    let claim = |writer: &str, from: i64| record::claim(writer, from);
    let put0 =
        |key: &'static str, payload: Bytes| put(&backend, "alert-state", Some(0), key, payload);
    put0("#alert-state-migrated", record::migrated_marker(T0)).await;
    // Offset 1: the first owner's claim; 2: its record of device_1.
    put0("#claimed", claim("first.1", 1)).await;
    let first = record::encode(&state("device_1", "raised_by_first"), Some("first.1"));
    put0("device_1", first).await;
    // Offset 3: the later owner began its read back at offset 3 (past the first owner's
    // claim) and claimed.
    put0("#claimed", claim("later.1", 3)).await;
    let later = record::encode(&state("device_1", "raised_by_later"), Some("later.1"));
    put0("device_1", later).await;
    // The first owner's late record.
    let late = record::encode(&state("device_1", "raised_by_first_late"), Some("first.1"));
    put0("device_1", late).await;
    // Offset 6: a claim by a member whose partition ends came late (from 0) supersedes
    // nobody; offset 7: the first owner acknowledges, late, an alert the later owner holds.
    put0("#claimed", claim("unknown_end.1", 0)).await;
    let late_ack = {
        let mut open = state("device_1", "raised_by_later");
        open[0].0.status = AlertStatus::Acknowledged;
        record::encode(&open, Some("first.1"))
    };
    put0("device_1", late_ack).await;

    let r = restore(&backend, &topics, &[0]).await.expect("restore");
    let record = r.record("device_1", 0).expect("device_1's record");
    let ids: BTreeSet<&str> = record.iter().map(|(a, _)| a.alert_id.as_str()).collect();
    assert_eq!(
        ids,
        BTreeSet::from(["raised_by_later", "raised_by_first_late"]),
        "the later owner's record kept, the late one's alert added"
    );
    assert!(
        record
            .iter()
            .any(|(a, _)| a.alert_id == "raised_by_later" && a.status == AlertStatus::Acknowledged),
        "an acknowledgement in a late record stands: {record:?}"
    );

    // Offset 8: an earlier owner's claim landing late: its read began at offset 2 (past the
    // first owner's claim at 1, not past the later owner's at 3), so it supersedes only the
    // first; the later owner's next record replaces the device's record as before.
    put0("#claimed", claim("earlier.1", 2)).await;
    let after = record::encode(&state("device_1", "raised_by_later_again"), Some("later.1"));
    put0("device_1", after).await;
    let r = restore(&backend, &topics, &[0]).await.expect("restore");
    let ids: BTreeSet<&str> = r
        .record("device_1", 0)
        .expect("device_1's record")
        .iter()
        .map(|(a, _)| a.alert_id.as_str())
        .collect();
    assert_eq!(
        ids,
        BTreeSet::from(["raised_by_later_again"]),
        "the later owner is not superseded: its record replaces"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deployment_without_alert_state_is_migrated_from_the_alerts_topic_once() {
    let (_broker, backend, topics) = broker();
    // An "old" deployment: alerts on the alerts topic only (its own partitioning), no state.
    let old = [
        alert("device_a", AlertStatus::Active, T0),
        alert("device_b", AlertStatus::Active, T0),
        alert("device_b", AlertStatus::Resolved, T0 + 10),
        alert("device_c", AlertStatus::Active, T0),
        alert("device_c", AlertStatus::Acknowledged, T0 + 5),
    ];
    for a in &old {
        let json = Bytes::from(serde_json::to_vec(a).expect("json"));
        put(&backend, "alerts", None, &a.device_id, json).await;
    }

    let first = restore(&backend, &topics, &[0, 1]).await.expect("restore");
    assert_eq!(first.migrated, [0, 1], "never restored before: migrated");
    assert_eq!(
        devices(&first),
        BTreeSet::from(["device_a".into(), "device_c".into()]),
        "the open ones, resolved left out"
    );
    assert_eq!(
        first.folded["device_c"][0].0.status,
        AlertStatus::Acknowledged
    );
    assert_eq!(
        first.folded["device_c"][0].1, T0,
        "raised at the first change"
    );

    // Before the marker, the open alerts were written to alert-state, into every partition
    // (which one a device's readings arrive on depends on its producers' partitioner): a
    // device silent since the upgrade is restored by whoever owns its partition next, not only
    // by this member's memory.
    let every: Vec<i32> = (0..10).collect();
    let records = backend
        .read_partitions("alert-state", &every, Duration::from_secs(60))
        .await
        .expect("read alert-state");
    let (written, marked) = iiot::recovery::fold_state(&records);
    let with_open: BTreeSet<(String, i32)> = written
        .iter()
        .filter(|(_, open)| !open.is_empty())
        .map(|(key, _)| key.clone())
        .collect();
    let expected: BTreeSet<(String, i32)> = ["device_a", "device_c"]
        .into_iter()
        .flat_map(|d| (0..10).map(move |p| (record::copy_key(d), p)))
        .collect();
    assert_eq!(
        with_open, expected,
        "a copy of each device's alerts in every partition"
    );
    assert_eq!(marked.len(), 2, "the two partitions migrated are marked");

    // Later assignments of those partitions read the alert-state topic only.
    let again = restore(&backend, &topics, &[0, 1]).await.expect("restore");
    assert!(again.migrated.is_empty(), "migrated once");
    let in_these: usize = records
        .iter()
        .filter(|m| [0, 1].contains(&m.partition) && &m.key[..] != b"#alert-state-migrated")
        .count();
    assert_eq!(
        again.open, in_these,
        "only what alert-state holds for them; the alerts topic is not folded again"
    );

    // A partition restored for the first time is migrated then.
    let other = restore(&backend, &topics, &[2]).await.expect("restore");
    assert_eq!(other.migrated, [2]);
}

/// A deployment from before the alert-state topic, on tansu: an open alert of `device` on
/// the alerts topic only, and a plain producer for what its devices send next.
struct OldDeployment {
    broker: TestBroker,
    producer: BaseProducer,
    t0: i64,
    old: Alert,
}

impl OldDeployment {
    fn start(device: &str) -> OldDeployment {
        let broker = TestBroker::start(&old_topics());
        let producer: BaseProducer = client(&broker.brokers)
            .set("batch.num.messages", "1")
            .set("linger.ms", "0")
            .create()
            .expect("producer");
        let t0 = iiot::now_ms() - 120_000;
        let old = alert(device, AlertStatus::Active, t0);
        let d = OldDeployment {
            broker,
            producer,
            t0,
            old,
        };
        d.send("alerts", serde_json::to_vec(&d.old).expect("json"));
        d
    }

    fn send(&self, topic: &str, body: Vec<u8>) {
        self.producer
            .send(
                BaseRecord::to(topic)
                    .key(&self.old.device_id)
                    .payload(&body),
            )
            .expect("send");
        self.producer.flush(Duration::from_secs(30)).expect("flush");
    }

    fn process(&self) -> Role {
        Role::start(&["process"], &self.broker.brokers, &TAKEOVER_ENV)
    }

    /// The device reports hot, then cool; waits for a resolution and asserts that the only
    /// alert id is the old deployment's (`why`).
    fn hot_then_cool_continues_the_old_alert(&self, why: &str) {
        for (seq, dt, temperature) in [(1, 1_000, 86.0), (2, 6_000, 20.0)] {
            let r = Reading::example(&self.old.device_id, seq, self.t0 + dt, temperature);
            self.send("device-data", serde_json::to_vec(&r).expect("json"));
        }
        let changes = read_topic(&self.broker.brokers, "alerts", |seen| {
            seen.iter()
                .filter_map(|b| serde_json::from_slice::<Alert>(b).ok())
                .any(|a| a.status == AlertStatus::Resolved)
        });
        let ids: BTreeSet<String> = changes
            .iter()
            .filter_map(|b| serde_json::from_slice::<Alert>(b).ok())
            .map(|a| a.alert_id)
            .collect();
        assert_eq!(ids, BTreeSet::from([self.old.alert_id.clone()]), "{why}");
    }
}

/// The upgraded processor migrates the old deployment's open alert (once), continues it under
/// its id and resolves it when the device cools down; the next processor reads only the
/// alert-state topic.
#[test]
fn an_alert_left_open_before_the_upgrade_is_continued_and_resolved_by_the_upgraded_processor() {
    let d = OldDeployment::start("device_100");
    let mut first = d.process();
    first.wait_for_log("the migration", "migrated from alerts");
    d.hot_then_cool_continues_the_old_alert(
        "one alert, continued from the old deployment and resolved",
    );
    assert!(first.stop().success());

    let mut second = d.process();
    second.wait_for_log(
        "the state read back",
        "open alerts read back from alert-state",
    );
    let log = second.log_text();
    assert!(
        !log.contains("migrated from alerts"),
        "migrated once: {log}"
    );
    assert!(!log.contains("(the whole topic)"), "{log}");
}

/// A device silent through the upgrade: the processor that migrated stops before the device
/// is seen again, and the next one (reading alert-state only, no second migration) continues
/// the old alert and resolves it when the device reports. Fails if the migration keeps what
/// it folded in memory only.
#[test]
fn an_alert_of_a_device_silent_through_the_upgrade_is_restored_by_the_next_owner() {
    let d = OldDeployment::start("device_101");
    let mut first = d.process();
    first.wait_for_log("the migration", "migrated from alerts");
    assert!(first.stop().success());

    let mut second = d.process();
    second.wait_for_log(
        "the state read back",
        "open alerts read back from alert-state",
    );
    assert!(
        !second.log_text().contains("migrated from alerts"),
        "not migrated twice"
    );
    d.hot_then_cool_continues_the_old_alert("one alert, continued by the next owner and resolved");
    assert!(second.stop().success());
}

/// Issue 12, "no alert is ever left open without an owner": a member dropped from the group
/// can have alert-state records on their way that land after the partition's new owner read
/// it back; a plain producer writes such records here into the owner's partition, as a
/// member that stalled would have. The owner must write its own view over the first (its
/// alert there would otherwise be missing for the partition's next owner) and take over the
/// alert the second holds (nobody else will resolve it): resolved when the device cools. An
/// earlier owner's claim landing late changes nothing; once a later owner has claimed the
/// partition (its read back began past this one's claim), records there are left to it.
/// On tansu: no rebalance is needed, one member holds every partition.
#[test]
fn a_record_another_member_writes_late_is_written_over_and_its_alert_taken_over() {
    const P: i32 = 3;
    let broker = TestBroker::start(&old_topics());
    let producer: BaseProducer = client(&broker.brokers)
        .set("linger.ms", "0")
        .create()
        .expect("producer");
    let send = |topic: &str, key: &[u8], body: &[u8]| {
        let record = BaseRecord::to(topic).partition(P).key(key).payload(body);
        producer.send(record).expect("send");
        producer.flush(Duration::from_secs(30)).expect("flush");
    };
    // No offline alert within the test (3 intervals of silence): the only record written
    // after a late one must be the owner's answer to it.
    let env = [TAKEOVER_ENV[0], TAKEOVER_ENV[1], ("SEND_INTERVAL", "1m")];
    let mut process = Role::start(&["process"], &broker.brokers, &env);
    process.wait_for_log(
        "the state read back",
        "open alerts read back from alert-state",
    );

    let t0 = iiot::now_ms() - 60_000;
    let reading = |device: &str, seq: u64, dt: i64, temperature: f64| {
        serde_json::to_vec(&Reading::example(device, seq, t0 + dt, temperature)).expect("json")
    };
    // In partition order: device_201 is seen (cool) before device_200's alert is raised.
    send(
        "device-data",
        b"device_201",
        &reading("device_201", 1, 0, 20.0),
    );
    send(
        "device-data",
        b"device_200",
        &reading("device_200", 1, 0, 86.0),
    );
    let of_200 = |seen: &[(Vec<u8>, Vec<u8>)]| -> Vec<Vec<(Alert, i64)>> {
        seen.iter()
            .filter(|(k, _)| k == b"device_200")
            .map(|(_, v)| record::decode(v).expect("a device's record"))
            .collect()
    };
    let records = read_partition(&broker.brokers, "alert-state", P, |seen| {
        !of_200(seen).is_empty()
    });
    let raised = of_200(&records)[0][0].0.alert_id.clone();
    // The owner's record, the late one, and whatever the owner wrote after the late one.
    let after_late = |records: &[(Vec<u8>, Vec<u8>)], late: usize| -> Vec<Vec<(Alert, i64)>> {
        of_200(records).into_iter().skip(late + 1).collect()
    };

    // An earlier owner's claim, landed late (its read back ended before this owner's
    // claim), then late records of a member that did not know it was dropped: device_200
    // from before its alert, device_201 with an alert only that member raised.
    send(
        "alert-state",
        record::CLAIM_KEY,
        &record::claim("earlier.1", 0),
    );
    send("alert-state", b"device_200", b"");
    let mut theirs = alert("device_201", AlertStatus::Active, t0 + 500);
    theirs.alert_id = "alert_device_201_raised_by_a_dropped_member".into();
    let late = record::encode(&[(theirs.clone(), t0 + 500)], Some("dropped.1"));
    send("alert-state", b"device_201", &late);

    let records = read_partition(&broker.brokers, "alert-state", P, |seen| {
        !after_late(seen, 1).is_empty()
    });
    let answer = after_late(&records, 1);
    assert!(
        of_200(&records)[1].is_empty()
            && answer.len() == 1
            && answer[0].len() == 1
            && answer[0][0].0.alert_id == raised,
        "the owner's view written again over the late record: {:?}\n{}",
        of_200(&records),
        process.log_text()
    );

    send(
        "device-data",
        b"device_201",
        &reading("device_201", 2, 5_000, 20.0),
    );
    let changes = read_topic(&broker.brokers, "alerts", |seen| {
        seen.iter()
            .filter_map(|b| serde_json::from_slice::<Alert>(b).ok())
            .any(|a| a.alert_id == theirs.alert_id && a.status == AlertStatus::Resolved)
    });
    let resolved: Vec<Alert> = changes
        .iter()
        .filter_map(|b| serde_json::from_slice::<Alert>(b).ok())
        .filter(|a| a.alert_id == theirs.alert_id)
        .collect();
    assert_eq!(
        resolved.len(),
        1,
        "the dropped member's alert resolved by the owner, once: {resolved:?}\n{}",
        process.log_text()
    );
    assert!(
        resolved[0].current_value == 20.0,
        "resolved by the cool reading, not at takeover: {resolved:?}"
    );
    let log = process.log_text();
    assert!(
        log.contains("written again with this member's view"),
        "{log}"
    );
    assert!(!log.contains("claimed by a later owner"), "{log}");

    // A later owner's claim (its read back began past this owner's claim): the late record
    // after it is that owner's to correct, not this one's.
    send(
        "alert-state",
        record::CLAIM_KEY,
        &record::claim("later.1", i64::MAX),
    );
    send("alert-state", b"device_200", b"");
    process.wait_for_log("the later claim", "claimed by a later owner");
    // What the owner would have written by now lands before this (it wrote over the first
    // late record within a second).
    std::thread::sleep(Duration::from_secs(3));
    send("alert-state", b"#test-end", b"");
    let records = read_partition(&broker.brokers, "alert-state", P, |seen| {
        seen.iter().any(|(k, _)| k == b"#test-end")
    });
    let of_200_now = of_200(&records);
    assert!(
        of_200_now.len() == 4 && of_200_now[3].is_empty(),
        "left alone: {of_200_now:?}"
    );
    assert!(process.stop().success());
}

/// An alert-state topic partitioned unlike the readings stops start-up with one line, exit 2.
#[test]
fn an_alert_state_topic_with_another_partition_count_is_a_config_error() {
    let broker = TestBroker::start(&[
        TopicSpec::new("device-data", 10),
        TopicSpec::new("alert-state", 3),
    ]);
    let mut cmd = iiot_command("alert-state-mismatch");
    let out = cmd
        .arg("process")
        .env("KAFKA_BROKERS", &broker.brokers)
        .env("HTTP_PORT", "0")
        .output()
        .expect("runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    // The role logs to stderr too; the error is its last line, and one line.
    let last = stderr.trim().lines().last().unwrap_or_default();
    assert!(
        last.starts_with("KAFKA_TOPIC_ALERT_STATE") && last.contains("has 3 partitions"),
        "{stderr}"
    );
}

/// Benchmark (`--run-ignored only`): open alerts restored per second when a member is given
/// every partition of an alert-state topic holding `DEVICES` devices' records.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark"]
async fn bench_alerts_restored_per_second_on_assignment() {
    const DEVICES: usize = 5_000;
    let (_broker, backend, topics) = broker();
    let publisher_side = backend.clone();
    let mut receipts = Vec::with_capacity(DEVICES + 10);
    for p in 0..10 {
        receipts.push(
            publisher_side
                .publish_to(
                    "alert-state",
                    p,
                    record::MIGRATED_KEY,
                    record::migrated_marker(T0),
                )
                .await
                .expect("publish"),
        );
    }
    for d in 0..DEVICES {
        let device = format!("device_{d:05}");
        let open = [(alert(&device, AlertStatus::Active, T0), T0)];
        let p = (d % 10) as i32;
        receipts.push(
            publisher_side
                .publish_to(
                    "alert-state",
                    p,
                    device.as_bytes(),
                    record::encode(&open, None),
                )
                .await
                .expect("publish"),
        );
    }
    for r in receipts {
        r.delivered().await.expect("delivered");
    }
    let all: Vec<i32> = (0..10).collect();
    let r = restore(&backend, &topics, &all).await.expect("restore");
    assert_eq!(r.open, DEVICES, "every record read back");
    let per_s = r.open as f64 / r.took.as_secs_f64();
    println!(
        "BENCH restore: {} open alerts from 10 partitions in {:.3} s = {per_s:.0} alerts/s",
        r.open,
        r.took.as_secs_f64()
    );
}
