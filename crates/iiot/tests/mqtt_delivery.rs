//! What the MQTT source promises about delivery, against a real Mosquitto: with the persistent
//! session, readings published while `iiot` is down arrive when it comes back; a broker restart
//! mid-stream is survived (reconnect, `/ready` 503 meanwhile). Nothing published at QoS 1 is
//! lost — counted by device and `seq`.

mod support;

use support::mqtt::{Broker, processed, run_against, topic};
use support::readings::reading_bytes;
use support::role::Role;

const DEVICES: [&str; 4] = ["line_1", "line_2", "line_3", "line_4"];

/// Readings `seqs` of every device, a second apart in event time from `t0`.
fn readings(seqs: std::ops::RangeInclusive<u64>, t0: i64) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for seq in seqs {
        for device in DEVICES {
            let payload = reading_bytes(device, seq, t0 + seq as i64 * 1000, 22.0);
            out.push((topic(device), payload.to_vec()));
        }
    }
    out
}

/// Every device's latest reading has `seq`, none went missing in between, and exactly
/// `count` readings were processed (no loss, no repeat taken as new).
fn assert_complete(role: &mut Role, count: usize, seq: u64) {
    role.wait_for("every reading processed", |r| processed(r) >= count as f64);
    for device in DEVICES {
        let d = role.json(&format!("/api/devices/{device}")).expect(device);
        assert_eq!(d["latest"]["seq"], seq, "{device}");
    }
    assert_eq!(processed(role), count as f64, "{}", role.log_text());
    assert_eq!(role.metric("iot_sequence_gaps_total", ""), 0.0);
    assert_eq!(role.metric("iot_late_messages_total", ""), 0.0);
}

#[test]
fn readings_published_while_iiot_is_down_arrive_after_it_restarts() {
    let broker = Broker::start();
    let t0 = iiot::now_ms() - 120_000;
    let mut first = run_against(&broker, "iiot-test-persistent");
    broker.publish_all(&readings(1..=10, t0));
    assert_complete(&mut first, 40, 10);
    assert!(first.stop().success());

    // Nobody is subscribed now: the broker keeps these for the session.
    broker.publish_all(&readings(11..=30, t0));

    let mut second = run_against(&broker, "iiot-test-persistent");
    // The new process starts from a clean slate: it sees seq 11 first, then every one to 30.
    assert_complete(&mut second, 80, 30);
    assert!(second.stop().success());
}

#[test]
fn a_broker_restart_mid_stream_is_survived() {
    let mut broker = Broker::start();
    let t0 = iiot::now_ms() - 120_000;
    let mut role = run_against(&broker, "iiot-test-broker-restart");
    broker.publish_all(&readings(1..=10, t0));
    role.wait_for("the first readings", |r| processed(r) >= 40.0);

    broker.stop();
    role.wait_for(
        "/ready 503 while the broker is away",
        |r| matches!(r.get("/ready"), Some((503, body)) if body.contains("MQTT broker")),
    );
    assert_eq!(role.metric("iot_mqtt_broker_connected", ""), 0.0);

    broker.restart();
    role.wait_for("reconnected (/ready 200)", Role::ready);
    broker.publish_all(&readings(11..=25, t0));
    assert_complete(&mut role, 100, 25);
    assert!(role.metric("iot_mqtt_connection_failures_total", "") >= 1.0);
    let log = role.log_text();
    assert_eq!(
        log.matches("cannot reach the MQTT broker").count(),
        1,
        "the outage is logged once per 30 s:\n{log}"
    );
    assert!(log.contains("reconnected to the MQTT broker"), "{log}");
    assert!(role.stop().success());
}

/// Regression: acknowledgements once waited for the MQTT client's request queue, which its
/// event loop drains one per turn while reading ten messages per turn; under a fast publisher
/// the source deadlocked after a few thousand messages. A small in-flight limit makes the
/// queues small, so the old code stalls within the first second.
#[test]
fn a_fast_publisher_does_not_stall_the_source() {
    let broker = Broker::start();
    let url = broker.url();
    let mut role = Role::embedded(
        &["run"],
        &[
            ("MQTT_URL", &url),
            ("MQTT_CLIENT_ID", "iiot-test-fast"),
            ("MQTT_MAX_IN_FLIGHT", "16"),
            ("SIMULATOR", "off"),
        ],
    );
    role.wait_for("subscribed to the MQTT broker (/ready 200)", Role::ready);
    let mut sim = Role::embedded(
        &[
            "simulate",
            "--output",
            "mqtt",
            "--mqtt-url",
            &url,
            "--devices",
            "2000",
            "--interval",
            "20ms",
            "--duration",
            "3s",
            "--seed",
            "3",
        ],
        &[],
    );
    let deadline = std::time::Instant::now() + support::role::PATIENCE;
    let status = loop {
        if let Some(status) = sim.child.try_wait().expect("simulator status") {
            break status;
        }
        assert!(std::time::Instant::now() < deadline, "{}", sim.log_text());
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    assert!(status.success(), "{}", sim.log_text());
    let sent = support::role::log_field(&sim.log_text(), "simulator stopped", "sent")
        .expect("sent count logged");
    assert!(sent > 5_000, "a fast publisher: {sent}");
    role.wait_for("every published reading processed", |r| {
        processed(r) >= sent as f64
    });
    assert!(role.stop().success());
}
