//! `iiot run` with real devices over MQTT: a Mosquitto broker per test, outside clients
//! (`mosquitto_pub`, and `iiot simulate --output mqtt`) publishing as a plant would, and the
//! API showing what they sent.

mod support;

use serde_json::Value;

use support::mqtt::{Broker, processed, run_against, topic};
use support::readings::reading_bytes;
use support::role::Role;

fn now_ms() -> i64 {
    iiot::now_ms()
}

#[test]
fn readings_from_mqtt_devices_reach_the_api_and_raise_alerts() {
    let broker = Broker::start();
    let mut role = run_against(&broker, "iiot-test-readings");
    let t = now_ms();
    let mut messages = Vec::new();
    for seq in 1..=3u64 {
        for device in ["plant_a_1", "plant_a_2"] {
            let temperature = if device == "plant_a_2" && seq == 3 {
                85.0
            } else {
                25.0
            };
            let payload = reading_bytes(device, seq, t + seq as i64 * 100, temperature);
            messages.push((topic(device), payload.to_vec()));
        }
    }
    broker.publish_all(&messages);
    role.wait_for("six readings processed", |r| processed(r) >= 6.0);
    let devices = role.json("/api/devices").expect("device list");
    let mut ids: Vec<&str> = devices["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|d| d["device_id"].as_str())
        .collect();
    ids.sort_unstable();
    assert_eq!(ids, ["plant_a_1", "plant_a_2"]);
    let one = role.json("/api/devices/plant_a_1").expect("one device");
    assert_eq!(one["latest"]["seq"], 3);
    role.wait_for("temperature_high alert of plant_a_2", |r| {
        r.json("/api/alerts").is_some_and(|a| {
            a["items"].as_array().is_some_and(|items| {
                items
                    .iter()
                    .any(|i| i["alert_type"] == "temperature_high" && i["device_id"] == "plant_a_2")
            })
        })
    });
    assert_eq!(role.metric("iot_mqtt_broker_connected", ""), 1.0);
    assert_eq!(role.metric("iot_mqtt_messages_forwarded_total", ""), 6.0);
    assert_eq!(
        role.metric("iot_dead_letters_total", ""),
        0.0,
        "{}",
        role.log_text()
    );
    assert!(role.stop().success());
}

#[test]
fn malformed_payloads_and_topic_mismatches_are_dead_lettered_and_processing_goes_on() {
    let broker = Broker::start();
    let mut role = run_against(&broker, "iiot-test-dead-letters");
    let t = now_ms();
    broker.publish_all(&[
        (
            topic("dev_ok"),
            reading_bytes("dev_ok", 1, t, 20.0).to_vec(),
        ),
        (
            topic("dev_ok"),
            b"{\"device_id\": \"dev_ok\", \"seq\":".to_vec(),
        ),
        (topic("dev_ok"), b"not json at all".to_vec()),
        // The topic names dev_ok, the payload another device.
        (
            topic("dev_ok"),
            reading_bytes("dev_other", 1, t, 20.0).to_vec(),
        ),
        (
            topic("dev_ok"),
            reading_bytes("dev_ok", 2, t + 100, 20.0).to_vec(),
        ),
    ]);
    role.wait_for("the two dead-letter reasons counted", |r| {
        r.metric("iot_dead_letters_total", "reason=\"malformed_json\"") >= 2.0
            && r.metric("iot_dead_letters_total", "reason=\"topic_mismatch\"") >= 1.0
    });
    role.wait_for("the valid readings processed", |r| processed(r) >= 2.0);
    let one = role.json("/api/devices/dev_ok").expect("dev_ok recorded");
    assert_eq!(
        one["latest"]["seq"], 2,
        "processing went on after bad input"
    );
    assert!(
        matches!(role.get("/api/devices/dev_other"), Some((404, _))),
        "a mismatched reading is not recorded"
    );
    // And on after that, too.
    broker.publish(&topic("dev_ok"), &reading_bytes("dev_ok", 3, t + 200, 20.0));
    role.wait_for("the reading after the dead letters", |r| {
        r.json("/api/devices/dev_ok")
            .is_some_and(|d: Value| d["latest"]["seq"] == 3)
    });
    assert_eq!(
        role.metric("iot_dead_letters_total", "reason=\"topic_mismatch\""),
        1.0
    );
    assert!(role.stop().success());
}

#[test]
fn the_simulator_publishes_as_mqtt_devices() {
    let broker = Broker::start();
    let mut role = run_against(&broker, "iiot-test-simulated-devices");
    let url = broker.url();
    let mut sim = Role::embedded(
        &[
            "simulate",
            "--output",
            "mqtt",
            "--mqtt-url",
            &url,
            "--devices",
            "3",
            "--interval",
            "200ms",
            "--duration",
            "2s",
            "--seed",
            "7",
        ],
        &[("MQTT_CLIENT_ID", "iiot-test-sim")],
    );
    role.wait_for("the three simulated devices", |r| {
        r.json("/api/devices")
            .and_then(|d| Some(d["items"].as_array()?.len()))
            == Some(3)
    });
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
    assert!(sent >= 3, "{}", sim.log_text());
    role.wait_for("every simulated reading processed", |r| {
        processed(r) >= sent as f64
    });
    assert!(role.stop().success());
}

#[test]
fn readings_published_with_paho_mqtt_reach_the_api() {
    let broker = Broker::start();
    let mut role = run_against(&broker, "iiot-test-paho");
    let t = now_ms();
    let messages: Vec<(String, Vec<u8>)> = (1..=4u64)
        .map(|seq| {
            let temperature = if seq == 4 { 90.0 } else { 22.0 };
            let payload = reading_bytes("paho_gw_1", seq, t + seq as i64 * 100, temperature);
            (topic("paho_gw_1"), payload.to_vec())
        })
        .collect();
    support::python::paho_publish(broker.port, &messages);
    role.wait_for("four readings processed", |r| processed(r) >= 4.0);
    let one = role.json("/api/devices/paho_gw_1").expect("paho_gw_1");
    assert_eq!(one["latest"]["seq"], 4);
    assert_eq!(one["latest"]["sensors"]["temperature"]["value"], 90.0);
    role.wait_for("temperature_high of paho_gw_1", |r| {
        r.json("/api/alerts").is_some_and(|a| {
            a["items"].as_array().is_some_and(|items| {
                items
                    .iter()
                    .any(|i| i["alert_type"] == "temperature_high" && i["device_id"] == "paho_gw_1")
            })
        })
    });
    assert!(role.stop().success());
}
