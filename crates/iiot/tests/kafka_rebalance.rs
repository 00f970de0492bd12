//! Alert state across a takeover, over a real Kafka-protocol broker (a private tansu): when a
//! processor dies while its devices are mid-alert, the member that takes its partitions over
//! continues the same alerts (same ids) and resolves them when the devices cool down — no
//! second alert for one condition, no alert left open without an owner.
//!
//! Needs the `tansu` binary (`scripts/kafka-up.sh --install`). The `cooperative-sticky` runs are
//! on librdkafka's mock cluster instead (in this test process, reached over TCP by the `iiot
//! process` children): tansu 0.6 does not complete an incremental rebalance without a
//! SIGKILLed member; the mock's group coordinator does what Kafka's does.
#![cfg(feature = "kafka")]
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::time::Duration;

use iiot_kafka::testing::TestBroker;
use iiot_model::{Alert, AlertStatus, Reading};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use support::kafka::{
    TAKEOVER_ENV, client, committed_short_of, partition_ends, read_topic, topics,
};
use support::role::Role;

const DEVICES: usize = 10;

/// Publishes one reading per device at `temperature`, `seq` and event time `ts`.
fn publish_all(producer: &BaseProducer, seq: u64, ts: i64, temperature: f64) {
    for d in 0..DEVICES {
        let id = format!("device_{:03}", 100 + d);
        let body = serde_json::to_vec(&Reading::example(&id, seq, ts, temperature)).expect("json");
        producer
            .send(BaseRecord::to("device-data").key(&id).payload(&body))
            .expect("send");
    }
    producer.flush(Duration::from_secs(30)).expect("flush");
}

/// The `temperature_high` changes on the alerts topic, by device, once `until` holds.
fn temperature_alerts(
    brokers: &str,
    mut until: impl FnMut(&BTreeMap<String, Vec<Alert>>) -> bool,
) -> BTreeMap<String, Vec<Alert>> {
    let mut by_device = BTreeMap::new();
    read_topic(brokers, "alerts", |seen| {
        by_device = BTreeMap::new();
        for bytes in seen {
            let alert: Alert = serde_json::from_slice(bytes).expect("alert JSON");
            if alert.alert_type == "temperature_high" {
                by_device
                    .entry(alert.device_id.clone())
                    .or_insert_with(Vec::new)
                    .push(alert);
            }
        }
        until(&by_device)
    });
    by_device
}

/// Two members of the group, each with its partitions, and ten devices over 80 °C with an
/// active alert each (both members own some of them).
struct MidAlert {
    first: Role,
    second: Role,
    producer: BaseProducer,
    /// Event time of the hot readings.
    t0: i64,
}

fn two_members_mid_alert(brokers: &str, env: &[(&str, &str)]) -> MidAlert {
    // One after the other, so the group has both members (each with its partitions) before
    // anything is published: the first takes every partition, the second's join splits them.
    let mut first = Role::start(&["process"], brokers, env);
    first.wait_for_log(
        "the first member's partitions",
        "kafka: partitions assigned",
    );
    let mut second = Role::start(&["process"], brokers, env);
    second.wait_for_log(
        "the second member's partitions",
        "kafka: partitions assigned",
    );
    // One record per batch: tansu cannot serve a fetch that starts inside a batch, which the
    // member taking over at a committed offset does.
    let producer: BaseProducer = client(brokers)
        .set("batch.num.messages", "1")
        .set("linger.ms", "0")
        .create()
        .expect("producer");
    let t0 = iiot::now_ms() - 120_000;
    publish_all(&producer, 1, t0, 85.0);
    let raised = temperature_alerts(brokers, |by| by.len() == DEVICES);
    assert!(raised.values().all(|a| a[0].status == AlertStatus::Active));
    MidAlert {
        first,
        second,
        producer,
        t0,
    }
}

/// Waits until every device's alert is resolved; each device had one alert id throughout.
fn one_alert_each_resolved(brokers: &str) {
    let resolved = |alerts: &Vec<Alert>| alerts.iter().any(|a| a.status == AlertStatus::Resolved);
    let changes = temperature_alerts(brokers, |by| {
        by.len() == DEVICES && by.values().all(resolved)
    });
    for (device, alerts) in &changes {
        let ids: BTreeSet<&str> = alerts.iter().map(|a| a.alert_id.as_str()).collect();
        assert_eq!(
            ids.len(),
            1,
            "{device}: one alert id for one condition: {alerts:?}"
        );
        assert_eq!(
            alerts.last().map(|a| a.status),
            Some(AlertStatus::Resolved),
            "{device}: resolved when it cooled down: {alerts:?}"
        );
    }
}

// Eager rebalancing (the default) over tansu. With `cooperative-sticky` over tansu 0.6 the dead
// member's partitions were not all processed by the survivor within the test's patience (an
// alert stayed active): that takeover runs on librdkafka's mock cluster below.
#[test]
fn a_takeover_continues_the_open_alerts_and_resolves_them() {
    let broker = TestBroker::start(&topics());
    takeover(&broker.brokers, &TAKEOVER_ENV);
}

/// Every topic `iiot process` uses, on a mock cluster of one broker (which has no
/// `CreateTopics`: the processors find them all and create none).
fn mock_cluster() -> MockCluster<'static, DefaultProducerContext> {
    let cluster = MockCluster::new(1).expect("mock cluster");
    for (topic, partitions) in [
        ("device-data", 10),
        ("alert-state", 10),
        ("alerts", 3),
        ("device-data-dlq", 1),
        ("alert-commands", 1),
        ("alert-rules", 1),
        ("alert-silences", 1),
        ("notify-log", 3),
    ] {
        cluster.create_topic(topic, partitions, 1).expect("topic");
    }
    cluster
}

/// `KAFKA_ASSIGNMENT_STRATEGY=cooperative-sticky`: only the partitions that move are revoked.
/// [`TAKEOVER_ENV`]'s short session, with heartbeats every second so that a busy machine's
/// late heartbeat does not cost a member its assignment.
const COOPERATIVE_ENV: [(&str, &str); 3] = [
    TAKEOVER_ENV[0],
    (
        "KAFKA_PROPERTIES",
        "session.timeout.ms=6000;heartbeat.interval.ms=1000;max.poll.interval.ms=15000",
    ),
    ("KAFKA_ASSIGNMENT_STRATEGY", "cooperative-sticky"),
];

/// The SIGKILL takeover with `cooperative-sticky`, on librdkafka's mock cluster (tansu 0.6
/// does not complete it: see the ignored test below).
#[test]
fn a_takeover_continues_the_open_alerts_with_cooperative_sticky_on_the_mock_cluster() {
    let cluster = mock_cluster();
    takeover(&cluster.bootstrap_servers(), &COOPERATIVE_ENV);
}

/// A third member joining and leaving with `cooperative-sticky`, on the mock cluster: the
/// partitions that move carry their alerts along, the others are never revoked.
#[test]
fn a_member_joining_and_leaving_keeps_one_alert_per_condition_with_cooperative_sticky() {
    let cluster = mock_cluster();
    let brokers = cluster.bootstrap_servers();
    let (first, second) = join_and_leave(&brokers, &COOPERATIVE_ENV);
    // Incremental: a member revokes only what moves, so the first member, alone with every
    // partition until the second joined, was never revoked all of them (eager revokes all at
    // each rebalance). A lost assignment is logged apart ("partitions lost").
    for member in [&first, &second] {
        assert!(
            !member.log_text().contains("kafka: partitions revoked topic=device-data partitions=[0, 1, 2, 3, 4, 5, 6, 7, 8, 9]"),
            "{}",
            member.log_text()
        );
    }
}

/// The takeover with `KAFKA_ASSIGNMENT_STRATEGY=cooperative-sticky`, over tansu 0.6. Fails
/// there (run 2026-12-02: after the SIGKILL a device of the dead member's partitions kept its
/// alert open past the test's patience — tansu does not complete the incremental rebalance
/// without the dead member); the same takeover runs on librdkafka's mock cluster above. Run
/// it with `--run-ignored only` on a broker update.
#[test]
#[ignore = "tansu 0.6 does not complete a cooperative-sticky takeover after a SIGKILL"]
fn a_takeover_continues_the_open_alerts_with_cooperative_sticky() {
    let broker = TestBroker::start(&topics());
    takeover(&broker.brokers, &COOPERATIVE_ENV);
}

fn takeover(brokers: &str, env: &[(&str, &str)]) {
    let MidAlert {
        mut first,
        second,
        producer,
        t0,
    } = two_members_mid_alert(brokers, env);
    first.wait_for("both members own devices", |r| {
        r.metric("iot_messages_total", "status=\"success\"") > 0.0
            && second.metric("iot_messages_total", "status=\"success\"") > 0.0
    });
    // The hot readings are committed: the member that takes over starts after them, so only
    // the read-back alerts can tell it the devices are mid-alert.
    let ends = partition_ends(brokers, "device-data", 10);
    first.wait_for("every hot reading committed", |_| {
        committed_short_of(brokers, "iot-consumer-group", "device-data", &ends).is_empty()
    });
    let _ = Command::new("kill")
        .args(["-KILL", &first.child.id().to_string()])
        .status();
    let _ = first.child.wait();

    // They cool down; the survivor takes the dead member's partitions over and reads them.
    publish_all(&producer, 2, t0 + 5_000, 20.0);
    one_alert_each_resolved(brokers);
    assert!(second.ready(), "the survivor is running");
}

/// A member paused (SIGSTOP) past its session mid-alert, on the mock cluster (tansu 0.6 drops a
/// silent member only after `max.poll.interval.ms`): the other takes its partitions over and
/// continues their alerts; the paused one, resumed, finds its assignment lost and rejoins, and
/// reads the partitions it gets back from the alert-state topic again. Every device keeps one
/// alert id for its one condition, resolved when it cools down.
#[test]
fn a_member_paused_past_its_session_comes_back_without_a_second_alert() {
    let cluster = mock_cluster();
    let brokers = cluster.bootstrap_servers();
    // The pause (the mock's takeover, ~12 s, and what the test does meanwhile) must end before
    // max.poll.interval.ms: the session is what runs out, not the poll interval.
    let env = [
        COOPERATIVE_ENV[0],
        (
            "KAFKA_PROPERTIES",
            "session.timeout.ms=6000;heartbeat.interval.ms=1000;max.poll.interval.ms=60000",
        ),
    ];
    let MidAlert {
        mut first,
        mut second,
        producer,
        t0,
    } = two_members_mid_alert(&brokers, &env);
    let ends = partition_ends(&brokers, "device-data", 10);
    first.wait_for("every hot reading committed", |_| {
        committed_short_of(&brokers, "iot-consumer-group", "device-data", &ends).is_empty()
    });
    let pid = first.child.id().to_string();
    let reads = |r: &Role| r.metric("iot_alert_state_restore_duration_seconds_count", "");
    let reads_before = reads(&first);
    let before = assignments(&second);
    let _ = Command::new("kill").args(["-STOP", &pid]).status();
    second.wait_for("the paused member's partitions taken over", |r| {
        assignments(r) > before
    });
    publish_all(&producer, 2, t0 + 5_000, 86.0);
    let ends = partition_ends(&brokers, "device-data", 10);
    second.wait_for("the second hot readings committed", |_| {
        committed_short_of(&brokers, "iot-consumer-group", "device-data", &ends).is_empty()
    });
    let _ = Command::new("kill").args(["-CONT", &pid]).status();
    first.wait_for("the resumed member finds its assignment lost", |r| {
        r.log_text()
            .contains("kafka: partitions lost topic=device-data")
    });
    first.wait_for(
        "the resumed member rejoins and reads its partitions back",
        |r| reads(r) > reads_before,
    );

    publish_all(&producer, 3, t0 + 10_000, 20.0);
    one_alert_each_resolved(&brokers);
    assert!(first.ready() && second.ready(), "both members still run");
}

/// The same without a death: a third member joins mid-alert (partitions move to it, and it
/// reads their open alerts back) and later leaves with SIGTERM (they move back). Every device
/// still has one alert id for its one condition, resolved when it cools down.
#[test]
fn a_member_joining_and_leaving_keeps_one_alert_per_condition() {
    let broker = TestBroker::start(&topics());
    join_and_leave(&broker.brokers, &TAKEOVER_ENV);
}

/// How often `role` logged an assignment of `device-data` partitions.
fn assignments(role: &Role) -> usize {
    role.log_text()
        .matches("kafka: partitions assigned topic=device-data")
        .count()
}

/// Two members mid-alert, a third joins and leaves; every alert continued and resolved.
/// Returns the two members, still running.
fn join_and_leave(brokers: &str, env: &[(&str, &str)]) -> (Role, Role) {
    let MidAlert {
        mut first,
        second,
        producer,
        t0,
    } = two_members_mid_alert(brokers, env);
    let ends = partition_ends(brokers, "device-data", 10);
    first.wait_for("every hot reading committed", |_| {
        committed_short_of(brokers, "iot-consumer-group", "device-data", &ends).is_empty()
    });

    // A third member joins while the devices are still hot; the group rebalances.
    let mut third = Role::start(&["process"], brokers, env);
    third.wait_for_log(
        "the third member's partitions",
        "kafka: partitions assigned",
    );
    publish_all(&producer, 2, t0 + 5_000, 86.0);
    let ends = partition_ends(brokers, "device-data", 10);
    third.wait_for("the second hot readings committed", |_| {
        committed_short_of(brokers, "iot-consumer-group", "device-data", &ends).is_empty()
    });
    // …and leaves gracefully: it commits, leaves the group, its partitions move back.
    let before = assignments(&first) + assignments(&second);
    assert!(third.stop().success(), "a graceful stop");
    first.wait_for("the rebalance after the leave", |r| {
        assignments(r) + assignments(&second) > before
    });

    publish_all(&producer, 3, t0 + 10_000, 20.0);
    one_alert_each_resolved(brokers);
    assert!(first.ready() && second.ready(), "both members still run");
    (first, second)
}

/// Benchmark (`--run-ignored only`): from a member's SIGKILL until its devices' cooling readings
/// are processed by the survivor (every alert resolved under its id). Dominated by how soon the
/// broker lets the group go on without the dead member (tansu 0.6: the rebalance timeout,
/// `max.poll.interval.ms` = 15 s here), not by reading the alert state back.
#[test]
#[ignore = "benchmark"]
fn bench_sigkill_to_partitions_processed_again() {
    let broker = TestBroker::start(&topics());
    sigkill_to_processed_again("tansu, eager", &broker.brokers, &TAKEOVER_ENV);
}

/// The same on librdkafka's mock cluster, whose coordinator drops a dead member after its
/// session (6 s here) as Apache Kafka does: eager, then `cooperative-sticky`.
#[test]
#[ignore = "benchmark"]
fn bench_sigkill_to_partitions_processed_again_on_the_mock_cluster() {
    let eager = mock_cluster();
    let env = [COOPERATIVE_ENV[0], COOPERATIVE_ENV[1]];
    sigkill_to_processed_again("mock cluster, eager", &eager.bootstrap_servers(), &env);
    let cooperative = mock_cluster();
    sigkill_to_processed_again(
        "mock cluster, cooperative-sticky",
        &cooperative.bootstrap_servers(),
        &COOPERATIVE_ENV,
    );
}

fn sigkill_to_processed_again(what: &str, brokers: &str, env: &[(&str, &str)]) {
    let MidAlert {
        mut first,
        second,
        producer,
        t0,
    } = two_members_mid_alert(brokers, env);
    first.wait_for("both members own devices", |r| {
        r.metric("iot_messages_total", "status=\"success\"") > 0.0
            && second.metric("iot_messages_total", "status=\"success\"") > 0.0
    });
    let ends = partition_ends(brokers, "device-data", 10);
    first.wait_for("every hot reading committed", |_| {
        committed_short_of(brokers, "iot-consumer-group", "device-data", &ends).is_empty()
    });
    let killed = std::time::Instant::now();
    let _ = Command::new("kill")
        .args(["-KILL", &first.child.id().to_string()])
        .status();
    let _ = first.child.wait();
    publish_all(&producer, 2, t0 + 5_000, 20.0);
    one_alert_each_resolved(brokers);
    let took = killed.elapsed();
    let restore_s = second.metric("iot_alert_state_restore_duration_seconds_sum", "");
    println!(
        "BENCH takeover ({what}): SIGKILL -> dead member's partitions processed again in \
         {:.1} s (survivor's alert-state reads: {restore_s:.3} s in all)",
        took.as_secs_f64()
    );
}
