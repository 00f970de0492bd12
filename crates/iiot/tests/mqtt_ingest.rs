//! `iiot ingest`, the MQTT → Kafka bridge, against a real Mosquitto and a real Kafka-protocol
//! broker (tansu): every message published at QoS 1 ends on `device-data` keyed by its device
//! id; a topic naming another device is dead-lettered; an ingest killed with SIGKILL mid-stream
//! and started again loses nothing (at least once: counted by device and `seq`).
//!
//! Needs `mosquitto` (`scripts/mqtt-up.sh --install`) and `tansu` (`scripts/kafka-up.sh
//! --install`).
#![cfg(feature = "kafka")]
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod support;

use std::collections::{BTreeSet, HashMap};

use iiot_kafka::testing::TestBroker;
use serde_json::Value;
use support::kafka::{read_records, topics};
use support::mqtt::{Broker, topic};
use support::readings::reading_bytes;
use support::role::Role;

const DEVICES: [&str; 4] = ["press_1", "press_2", "press_3", "press_4"];

/// An `iiot ingest` from `mqtt` into `kafka` as `client_id`, subscribed. Records wait 300 ms
/// in the producer before they are sent: an acknowledgement given before Kafka has the record
/// would lose everything in that window when the process is killed.
fn ingest(kafka: &TestBroker, mqtt: &Broker, client_id: &str, env: &[(&str, &str)]) -> Role {
    let url = mqtt.url();
    let mut all = vec![
        ("MQTT_URL", url.as_str()),
        ("MQTT_CLIENT_ID", client_id),
        ("KAFKA_LINGER", "300ms"),
    ];
    all.extend_from_slice(env);
    let mut role = Role::start(&["ingest"], &kafka.brokers, &all);
    role.wait_for("ingest subscribed (/ready 200)", Role::ready);
    role
}

/// Readings `seqs` of every device, a second apart in event time.
fn readings(seqs: std::ops::RangeInclusive<u64>) -> Vec<(String, Vec<u8>)> {
    let t0 = iiot::now_ms() - 600_000;
    let mut out = Vec::new();
    for device in DEVICES {
        for seq in seqs.clone() {
            let payload = reading_bytes(device, seq, t0 + seq as i64 * 100, 21.0);
            out.push((topic(device), payload.to_vec()));
        }
    }
    out
}

/// The `seq`s of each device on `device-data`, checking that every record is keyed by the
/// device id of its payload.
fn seqs_by_device(records: &[(Vec<u8>, Vec<u8>)]) -> HashMap<String, BTreeSet<u64>> {
    let mut out: HashMap<String, BTreeSet<u64>> = HashMap::new();
    for (key, payload) in records {
        let Ok(reading) = serde_json::from_slice::<Value>(payload) else {
            continue;
        };
        let device = reading["device_id"]
            .as_str()
            .expect("device_id")
            .to_string();
        assert_eq!(String::from_utf8_lossy(key), device, "keyed by device id");
        let seq = reading["seq"].as_u64().expect("seq");
        out.entry(device).or_default().insert(seq);
    }
    out
}

/// Whether every device has every seq of `1..=last`.
fn complete(seen: &HashMap<String, BTreeSet<u64>>, last: u64) -> bool {
    DEVICES
        .iter()
        .all(|d| seen.get(*d).is_some_and(|s| s.len() as u64 == last))
}

#[test]
fn every_mqtt_message_ends_on_device_data_keyed_by_its_device() {
    let kafka = TestBroker::start(&topics());
    let mqtt = Broker::start();
    let mut role = ingest(&kafka, &mqtt, "iiot-test-ingest", &[]);
    mqtt.publish_all(&readings(1..=50));
    // The topic names press_1, the payload another device: dead-lettered, not forwarded.
    mqtt.publish(
        &topic("press_1"),
        &reading_bytes("intruder", 1, iiot::now_ms(), 20.0),
    );
    // Unreadable: forwarded for the processors to dead-letter with the precise reason.
    mqtt.publish(&topic("press_2"), b"not json");

    let records = read_records(&kafka.brokers, "device-data", |r| r.len() >= 201);
    let seen = seqs_by_device(&records);
    assert!(complete(&seen, 50), "{seen:?}");
    assert_eq!(seen.len(), DEVICES.len(), "{seen:?}");
    let garbage: Vec<_> = records.iter().filter(|(_, p)| p == b"not json").collect();
    assert_eq!(garbage.len(), 1);
    assert_eq!(
        garbage[0].0, b"press_2",
        "keyed by the topic's device segment"
    );

    let letters = read_records(&kafka.brokers, "device-data-dlq", |r| !r.is_empty());
    assert_eq!(letters.len(), 1);
    let letter = String::from_utf8_lossy(&letters[0].1);
    assert!(letter.contains("topic_mismatch"), "{letter}");
    assert_eq!(letters[0].0, b"intruder");

    role.wait_for("every message acknowledged", |r| {
        r.metric("iot_mqtt_messages_forwarded_total", "") >= 201.0
    });
    assert_eq!(role.metric("iot_mqtt_messages_received_total", ""), 202.0);
    assert_eq!(
        role.metric(
            "iot_mqtt_messages_rejected_total",
            "reason=\"topic_mismatch\""
        ),
        1.0
    );
    assert_eq!(role.metric("iot_mqtt_messages_in_flight", ""), 0.0);
    assert_eq!(role.metric("iot_mqtt_oldest_unacked_age_seconds", ""), 0.0);
    assert!(role.stop().success());
}

#[test]
fn an_ingest_killed_mid_stream_loses_nothing_once_restarted() {
    killed_mid_stream_and_restarted("iiot-test-ingest-kill", &[]);
}

/// The same with MQTT 5: the session outlives the connection (clean start off, session expiry).
#[test]
fn an_mqtt5_ingest_killed_mid_stream_loses_nothing_once_restarted() {
    killed_mid_stream_and_restarted("iiot-test-ingest-kill-5", &[("MQTT_PROTOCOL", "5")]);
}

/// Publishes 2,500 readings per device, SIGKILLs the ingest once 1,000 are forwarded, starts
/// it again under the same client id, and checks `device-data` has every `seq` of every device.
fn killed_mid_stream_and_restarted(client_id: &str, env: &[(&str, &str)]) {
    const LAST: u64 = 2_500;
    let kafka = TestBroker::start(&topics());
    let mqtt = std::sync::Arc::new(Broker::start());
    let mut first = ingest(&kafka, &mqtt, client_id, env);
    let publisher = {
        let mqtt = mqtt.clone();
        std::thread::spawn(move || mqtt.publish_all(&readings(1..=LAST)))
    };
    first.wait_for("part of the stream forwarded", |r| {
        r.metric("iot_mqtt_messages_forwarded_total", "") >= 1_000.0
    });
    let at_kill = first.metric("iot_mqtt_messages_received_total", "");
    first.child.kill().expect("SIGKILL");
    first.child.wait().expect("killed");

    // The same session: the broker sends what the first never acknowledged, then the rest.
    let mut second = ingest(&kafka, &mqtt, client_id, env);
    publisher.join().expect("published");
    let mut seen = HashMap::new();
    let mut counted = 0;
    read_records(&kafka.brokers, "device-data", |r| {
        // Only the new records: the check runs after every poll.
        for (device, seqs) in seqs_by_device(&r[counted..]) {
            seen.entry(device)
                .or_insert_with(BTreeSet::new)
                .extend(seqs);
        }
        counted = r.len();
        complete(&seen, LAST)
    });
    assert!(
        complete(&seen, LAST),
        "missing after a SIGKILL: {:?}\n{}",
        DEVICES.map(|d| LAST as usize - seen.get(d).map_or(0, BTreeSet::len)),
        second.log_text()
    );
    assert!(
        at_kill < (DEVICES.len() as u64 * LAST) as f64,
        "killed mid-stream"
    );
    assert!(second.metric("iot_mqtt_messages_forwarded_total", "") > 0.0);
    second.wait_for("nothing left in flight", |r| {
        r.metric("iot_mqtt_messages_in_flight", "") == 0.0
    });
    assert!(second.stop().success());
}

#[test]
fn two_ingests_in_an_mqtt5_shared_subscription_split_the_load_and_lose_nothing() {
    const LAST: u64 = 500;
    let kafka = TestBroker::start(&topics());
    let mqtt = Broker::start();
    let shared = [("MQTT_PROTOCOL", "5"), ("MQTT_SHARED_GROUP", "iiot")];
    let mut a = ingest(&kafka, &mqtt, "iiot-test-shared-a", &shared);
    let b = ingest(&kafka, &mqtt, "iiot-test-shared-b", &shared);
    assert!(
        a.log_text()
            .contains("$share/iiot/iiot/devices/+/telemetry")
    );
    mqtt.publish_all(&readings(1..=LAST));

    let mut seen = HashMap::new();
    let mut counted = 0;
    read_records(&kafka.brokers, "device-data", |r| {
        for (device, seqs) in seqs_by_device(&r[counted..]) {
            seen.entry(device)
                .or_insert_with(BTreeSet::new)
                .extend(seqs);
        }
        counted = r.len();
        complete(&seen, LAST)
    });
    assert!(complete(&seen, LAST), "{seen:?}");
    let total = (DEVICES.len() as u64 * LAST) as f64;
    let forwarded = |r: &Role| r.metric("iot_mqtt_messages_forwarded_total", "");
    a.wait_for("both shares acknowledged", |a| {
        forwarded(a) + forwarded(&b) >= total
    });
    let (from_a, from_b) = (forwarded(&a), forwarded(&b));
    // A plain subscription would give each instance every message.
    assert_eq!(from_a + from_b, total, "each message to one member");
    assert!(
        from_a > 0.0 && from_b > 0.0,
        "both get a share: {from_a} / {from_b}"
    );
    assert!(a.stop().success());
    assert!(b.stop().success());
}

/// Two MQTT 5 ingests in one shared group; one is SIGKILLed mid-stream while a plain client
/// publishes at QoS 1. Mosquitto 2.0 keeps the dead member in the group's round robin: its
/// persistent session goes on taking its share (queued, with what it had not acknowledged),
/// and the survivor gets only its own. Nothing is lost, but the dead member's share arrives
/// only once that client id connects again.
#[test]
fn a_shared_subscription_member_killed_mid_stream_gets_its_share_when_it_returns() {
    const LAST: u64 = 1_500;
    let total = DEVICES.len() * LAST as usize;
    let kafka = TestBroker::start(&topics());
    let mqtt = std::sync::Arc::new(Broker::start());
    let shared = [("MQTT_PROTOCOL", "5"), ("MQTT_SHARED_GROUP", "iiot")];
    let mut a = ingest(&kafka, &mqtt, "iiot-test-shared-kill-a", &shared);
    let mut b = ingest(&kafka, &mqtt, "iiot-test-shared-kill-b", &shared);
    let publisher = {
        let mqtt = mqtt.clone();
        std::thread::spawn(move || mqtt.publish_all(&readings(1..=LAST)))
    };
    let forwarded = |r: &Role| r.metric("iot_mqtt_messages_forwarded_total", "");
    a.wait_for("part of a's share forwarded", |a| forwarded(a) >= 300.0);
    let b_at_kill = forwarded(&b);
    a.child.kill().expect("SIGKILL");
    a.child.wait().expect("killed");
    publisher
        .join()
        .expect("every message acknowledged by the broker");

    // The survivor takes its share of the rest and then has nothing more to do.
    let mut settled = (f64::NAN, std::time::Instant::now());
    b.wait_for("the survivor idle for 3 s", |b| {
        let now = forwarded(b);
        if now != settled.0 {
            settled = (now, std::time::Instant::now());
        }
        b.metric("iot_mqtt_messages_in_flight", "") == 0.0
            && settled.1.elapsed() > std::time::Duration::from_secs(3)
    });
    let from_b = forwarded(&b);
    assert!(
        from_b > b_at_kill,
        "the survivor went on: {b_at_kill} → {from_b}"
    );
    let mut seen = HashMap::new();
    let mut counted = 0;
    let records = read_records(&kafka.brokers, "device-data", |r| {
        collect(&mut seen, &r[counted..]);
        counted = r.len();
        r.len() as f64 >= from_b + 300.0
    });
    let while_down: usize = seen.values().map(BTreeSet::len).sum();
    assert!(records.len() as f64 >= from_b + 300.0);
    eprintln!("while the member was down: {while_down} of {total} readings on device-data");
    assert!(
        while_down < total,
        "Mosquitto 2.0 keeps a dead member's share in its session: none of it goes to the \
         survivor (all {total} arrived while it was down)"
    );

    // The dead member back under its client id: the broker sends it its share.
    let mut a = ingest(&kafka, &mqtt, "iiot-test-shared-kill-a", &shared);
    // A new reader starts from the first record again.
    let mut counted = 0;
    read_records(&kafka.brokers, "device-data", |r| {
        collect(&mut seen, &r[counted..]);
        counted = r.len();
        complete(&seen, LAST)
    });
    assert!(
        complete(&seen, LAST),
        "missing after the member came back: {:?} (of {total}, {while_down} before)\n{}",
        DEVICES.map(|d| LAST as usize - seen.get(d).map_or(0, BTreeSet::len)),
        a.log_text()
    );
    assert!(
        forwarded(&a) > 0.0,
        "its share came to the returning member"
    );
    assert_eq!(forwarded(&b), from_b, "none of it went to the survivor");
    a.wait_for("nothing left in flight", |a| {
        a.metric("iot_mqtt_messages_in_flight", "") == 0.0
    });
    assert!(a.stop().success());
    assert!(b.stop().success());
}

/// Adds the `seq`s of `records` to `seen`, by device.
fn collect(seen: &mut HashMap<String, BTreeSet<u64>>, records: &[(Vec<u8>, Vec<u8>)]) {
    for (device, seqs) in seqs_by_device(records) {
        seen.entry(device).or_default().extend(seqs);
    }
}

#[test]
fn an_ingest_without_an_mqtt_url_is_a_one_line_usage_error() {
    let out = support::role::iiot_command("mqtt-ingest")
        .args(["ingest", "--kafka-brokers", "127.0.0.1:1"])
        .env_remove("MQTT_URL")
        .output()
        .expect("iiot ran");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("MQTT_URL is not set"), "{stderr}");
}
