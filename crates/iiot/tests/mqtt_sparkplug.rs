//! `iiot run` with `MQTT_PAYLOAD=sparkplug`: a real Mosquitto, a Sparkplug B edge node from
//! PyPI (`pysparkplug`) publishing NBIRTH/DBIRTH/DDATA/DDEATH/NDEATH as a plant's gateway
//! would, and the API showing its devices, their values and the alerts they raise.

mod support;

use serde_json::Value;

use support::mqtt::Broker;
use support::python::EdgeNode;
use support::role::Role;

/// `iiot run` reading Sparkplug B from `broker`, no simulator, subscribed.
fn run_sparkplug(broker: &Broker, client_id: &str) -> Role {
    let url = broker.url();
    let mut role = Role::embedded(
        &["run", "--mqtt-payload", "sparkplug"],
        &[
            ("MQTT_URL", &url),
            ("MQTT_CLIENT_ID", client_id),
            ("SIMULATOR", "off"),
        ],
    );
    role.wait_for("subscribed to the MQTT broker (/ready 200)", Role::ready);
    role
}

/// The alert of `alert_type` for `device`, once listed.
fn alert(role: &Role, device: &str, alert_type: &str) -> Option<Value> {
    let alerts = role.json("/api/alerts")?;
    alerts["items"]
        .as_array()?
        .iter()
        .find(|a| a["device_id"] == device && a["alert_type"] == alert_type)
        .cloned()
}

fn device_ids(role: &Role) -> Vec<String> {
    let Some(devices) = role.json("/api/devices") else {
        return Vec::new();
    };
    let mut ids: Vec<String> = devices["items"]
        .as_array()
        .map(|items| {
            items
                .iter()
                .filter_map(|d| d["device_id"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    ids.sort_unstable();
    ids
}

#[test]
fn a_pysparkplug_edge_node_shows_its_devices_values_and_alerts_and_deaths_are_offline_at_once() {
    let broker = Broker::start();
    let mut role = run_sparkplug(&broker, "iiot-test-sparkplug");
    let mut edge = EdgeNode::start(broker.port, "plant", "edge1", &["plc1", "plc2"]);
    assert_eq!(edge.send("connect"), "connected");
    role.wait_for("plc1 and plc2 from their DBIRTH", |r| {
        device_ids(r) == ["plc1", "plc2"]
    });
    assert_eq!(births(&role), (1.0, 2.0), "one NBIRTH, two DBIRTHs");
    assert_eq!(role.metric("iot_sparkplug_nodes_tracked", ""), 1.0);
    assert_eq!(role.metric("iot_sparkplug_devices_tracked", ""), 2.0);
    let plc1 = role.json("/api/devices/plc1").expect("plc1");
    assert_eq!(plc1["latest"]["sensors"]["temperature"]["value"], 25.0);
    assert_eq!(plc1["latest"]["sensors"]["humidity"]["value"], 50.0);
    assert_eq!(plc1["latest"]["sensors"]["current"]["value"], 2.0);

    assert_eq!(edge.send("data plc2 Sensors/Temperature 85.5"), "ok");
    role.wait_for("temperature_high of plc2", |r| {
        alert(r, "plc2", "temperature_high").is_some()
    });
    let plc2 = role.json("/api/devices/plc2").expect("plc2");
    assert_eq!(plc2["latest"]["sensors"]["temperature"]["value"], 85.5);
    assert_eq!(plc2["latest"]["sensors"]["humidity"]["value"], 50.0);

    // The offline limit is 15 s (3 × the 5 s default interval): a DDEATH alert says so first.
    assert_eq!(edge.send("ddeath plc1"), "ok");
    role.wait_for("device_offline of plc1 from its DDEATH", |r| {
        alert(r, "plc1", "device_offline").is_some()
    });
    let offline = alert(&role, "plc1", "device_offline").expect("alert");
    assert!(
        offline["message"]
            .as_str()
            .unwrap_or("")
            .starts_with("DDEATH"),
        "{offline}"
    );
    assert!(alert(&role, "plc2", "device_offline").is_none());
    // The device list says so too, though plc1's last data is fresh.
    let plc1 = role.json("/api/devices/plc1").expect("plc1");
    assert_eq!(plc1["status"], "offline", "{plc1}");
    let plc2 = role.json("/api/devices/plc2").expect("plc2");
    assert_ne!(plc2["status"], "offline", "{plc2}");

    // A clean disconnect sends NDEATH: the node's remaining device goes offline too.
    assert_eq!(edge.send("quit"), "bye");
    role.wait_for("device_offline of plc2 from the NDEATH", |r| {
        alert(r, "plc2", "device_offline")
            .is_some_and(|a| a["message"].as_str().unwrap_or("").starts_with("NDEATH"))
    });
    assert_eq!(
        role.metric("iot_dead_letters_total", ""),
        0.0,
        "{}",
        role.log_text()
    );
    let deaths = |kind| role.metric("iot_sparkplug_deaths_total", kind);
    assert_eq!(deaths("kind=\"device\""), 1.0, "the DDEATH of plc1");
    assert_eq!(deaths("kind=\"node\""), 1.0, "the NDEATH");
    assert_eq!(
        role.metric("iot_sparkplug_rebirths_requested_total", ""),
        0.0
    );
    // Deaths forget births, not the entries.
    assert_eq!(role.metric("iot_sparkplug_devices_tracked", ""), 2.0);
    assert!(role.stop().success());
}

/// `iot_sparkplug_births_total` of nodes and of devices.
fn births(role: &Role) -> (f64, f64) {
    let births = |kind| role.metric("iot_sparkplug_births_total", kind);
    (births("kind=\"node\""), births("kind=\"device\""))
}

#[test]
fn data_before_birth_is_dead_lettered_and_the_edge_node_is_asked_to_rebirth() {
    let broker = Broker::start();
    // The edge node is born before iiot listens: its BIRTH certificates go unheard.
    let mut edge = EdgeNode::start(broker.port, "plant", "edge7", &["plc1"]);
    assert_eq!(edge.send("connect"), "connected");
    let mut role = run_sparkplug(&broker, "iiot-test-sparkplug-rebirth");
    assert_eq!(edge.send("data plc1 Sensors/Temperature 30"), "ok");
    role.wait_for("a sparkplug_before_birth dead letter", |r| {
        r.metric(
            "iot_dead_letters_total",
            "reason=\"sparkplug_before_birth\"",
        ) >= 1.0
    });
    let ncmd = edge.wait_for_command("Node Control/Rebirth");
    assert_eq!(ncmd, "ncmd Node Control/Rebirth=True");
    assert_eq!(
        role.metric("iot_sparkplug_rebirths_requested_total", ""),
        1.0
    );
    assert!(
        device_ids(&role).is_empty(),
        "nothing made of a DATA before BIRTH"
    );
    assert_eq!(births(&role), (0.0, 0.0));
    // The node is tracked (to space its rebirth requests), its device not yet.
    assert_eq!(role.metric("iot_sparkplug_nodes_tracked", ""), 1.0);
    assert_eq!(role.metric("iot_sparkplug_devices_tracked", ""), 0.0);
    assert_eq!(edge.send("quit"), "bye");
    assert!(role.stop().success());
}

#[test]
fn the_simulator_is_a_sparkplug_edge_node_whose_ndeath_takes_its_devices_offline() {
    let broker = Broker::start();
    let mut role = run_sparkplug(&broker, "iiot-test-sparkplug-sim");
    let url = broker.url();
    let mut sim = Role::embedded(
        &[
            "simulate",
            "--output",
            "mqtt",
            "--mqtt-url",
            &url,
            "--mqtt-payload",
            "sparkplug",
            "--devices",
            "3",
            "--interval",
            "200ms",
            "--duration",
            "2s",
            "--seed",
            "7",
        ],
        &[("MQTT_CLIENT_ID", "iiot-test-sim-edge")],
    );
    role.wait_for("the three simulated devices", |r| device_ids(r).len() == 3);
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
    role.wait_for("every simulated reading processed", |r| {
        r.metric("iot_messages_total", "status=\"success\"") >= sent as f64
    });
    role.wait_for("the NDEATH takes all three offline", |r| {
        device_ids(r).iter().all(|id| {
            alert(r, id, "device_offline")
                .is_some_and(|a| a["message"].as_str().unwrap_or("").starts_with("NDEATH"))
        })
    });
    assert_eq!(
        role.metric("iot_dead_letters_total", ""),
        0.0,
        "{}",
        role.log_text()
    );
    // The node's seq ran 0, 1, 2, … over every BIRTH and DATA: nothing missing.
    assert_eq!(role.metric("iot_sequence_gaps_total", ""), 0.0);
    assert!(role.stop().success());
}

#[test]
fn the_simulator_answers_a_rebirth_request_when_iiot_comes_after_its_births() {
    let broker = Broker::start();
    let url = broker.url();
    // Born before iiot listens: its first DDATA cannot be placed.
    let mut sim = Role::embedded(
        &[
            "simulate",
            "--output",
            "mqtt",
            "--mqtt-url",
            &url,
            "--mqtt-payload",
            "sparkplug",
            "--devices",
            "3",
            "--interval",
            "200ms",
            "--duration",
            "20s",
            "--seed",
            "7",
        ],
        &[("MQTT_CLIENT_ID", "iiot-test-sim-rebirth")],
    );
    sim.wait_for_log("the simulator connected", "connected to the MQTT broker");
    let mut role = run_sparkplug(&broker, "iiot-test-sparkplug-sim-rebirth");
    role.wait_for("the three devices, from the BIRTHs sent again", |r| {
        device_ids(r).len() == 3
    });
    assert!(
        role.metric(
            "iot_dead_letters_total",
            "reason=\"sparkplug_before_birth\""
        ) >= 1.0,
        "{}",
        role.log_text()
    );
    assert!(
        sim.log_text().contains("Sparkplug rebirth requested"),
        "{}",
        sim.log_text()
    );
    assert!(role.metric("iot_sparkplug_rebirths_requested_total", "") >= 1.0);
    let (nodes, devices) = births(&role);
    assert!(
        nodes >= 1.0 && devices >= 3.0,
        "births after the rebirth: {nodes} / {devices}"
    );
    assert_eq!(role.metric("iot_sparkplug_nodes_tracked", ""), 1.0);
    assert_eq!(role.metric("iot_sparkplug_devices_tracked", ""), 3.0);
    assert!(role.stop().success());
    assert!(sim.stop().success());
}
