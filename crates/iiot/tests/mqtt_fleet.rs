//! `iiot simulate --output mqtt --mqtt-connections-per-device`: every simulated device over its
//! own MQTT connection (broker load tests), against a real Mosquitto; a fleet larger than the
//! open-files limit is refused before anything connects. With `MQTT_PROTOCOL=5` every output
//! (one connection, one per device, the Sparkplug edge node) connects with MQTT 5.

mod support;

use std::collections::HashSet;

use support::mqtt::{Broker, processed, run_against};
use support::role::{Role, log_field, work_dir};

#[test]
fn each_simulated_device_publishes_over_its_own_connection() {
    let broker = Broker::start();
    let mut monitor = run_against(&broker, "iiot-test-fleet-monitor");
    let url = broker.url();
    let sim = Role::embedded(
        &[
            "simulate",
            "--output",
            "mqtt",
            "--mqtt-url",
            &url,
            "--mqtt-connections-per-device",
            "--devices",
            "25",
            "--interval",
            "200ms",
            "--duration",
            "3s",
            "--seed",
            "5",
        ],
        &[("MQTT_CLIENT_ID", "fleet")],
    );
    let log = sim.log.clone();
    assert!(sim.wait_exit().success());
    let log = std::fs::read_to_string(log).unwrap_or_default();
    let sent = log_field(&log, "simulator stopped", "sent").expect("sent count logged");
    assert!(sent >= 25, "{log}");
    assert_eq!(log_field(&log, "MQTT fleet done", "connections"), Some(25));
    // Mosquitto logs every connection with its client id.
    let broker_log = broker.log();
    let clients: HashSet<&str> = broker_log
        .lines()
        .filter_map(|l| l.split(" as ").nth(1)?.split_whitespace().next())
        .filter(|id| id.starts_with("fleet-device_"))
        .collect();
    assert_eq!(clients.len(), 25, "{broker_log}");
    monitor.wait_for("every reading processed", |r| processed(r) >= sent as f64);
    assert!(monitor.stop().success());
}

#[test]
fn a_fleet_above_the_open_files_limit_is_refused_with_one_line() {
    let mut cmd = std::process::Command::new("bash");
    cmd.current_dir(work_dir("mqtt-fleet"))
        .arg("-c")
        .arg("ulimit -n 512 && exec \"$0\" simulate --output mqtt --mqtt-url mqtt://127.0.0.1:1 --mqtt-connections-per-device --devices 1000 --duration 1s")
        .arg(env!("CARGO_BIN_EXE_iiot"));
    let out = cmd.output().expect("ran");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("DEVICE_COUNT=1000"), "{stderr}");
    assert!(stderr.contains("limit is 512"), "{stderr}");
}

/// `iiot simulate --output mqtt` with `MQTT_PROTOCOL=5`, 4 devices for 2 s, as `client_id`, with
/// `extra` arguments; waits for its exit and returns how many readings it sent.
fn simulate_mqtt5(broker: &Broker, client_id: &str, extra: &[&str]) -> u64 {
    let url = broker.url();
    let mut args = vec![
        "simulate",
        "--output",
        "mqtt",
        "--mqtt-url",
        &url,
        "--devices",
        "4",
        "--interval",
        "200ms",
        "--duration",
        "2s",
        "--seed",
        "9",
    ];
    args.extend_from_slice(extra);
    let sim = Role::embedded(
        &args,
        &[("MQTT_CLIENT_ID", client_id), ("MQTT_PROTOCOL", "5")],
    );
    let log = sim.log.clone();
    assert!(sim.wait_exit().success());
    let log = std::fs::read_to_string(log).unwrap_or_default();
    let sent = log_field(&log, "simulator stopped", "sent").expect("sent count logged");
    assert!(sent >= 4, "{log}");
    sent
}

/// The protocol Mosquitto logged for each connection whose client id starts with `prefix`
/// (`p2`: MQTT 3.1.1, `p5`: MQTT 5), by client id.
fn protocols(broker: &Broker, prefix: &str) -> std::collections::BTreeMap<String, String> {
    broker
        .log()
        .lines()
        .filter_map(|l| {
            let (id, rest) = l.split(" as ").nth(1)?.split_once(' ')?;
            let level = rest.strip_prefix('(')?.split(',').next()?;
            id.starts_with(prefix)
                .then(|| (id.to_string(), level.to_string()))
        })
        .collect()
}

#[test]
fn with_mqtt_protocol_5_the_simulator_connects_with_mqtt5_and_its_readings_arrive() {
    let broker = Broker::start();
    let mut monitor = run_against(&broker, "iiot-test-sim5-monitor");
    let forwarded = |r: &Role| r.metric("iot_mqtt_messages_forwarded_total", "");
    let sent = simulate_mqtt5(&broker, "sim5", &[]);
    monitor.wait_for("the readings of one MQTT 5 connection", |r| {
        forwarded(r) >= sent as f64
    });
    let fleet = simulate_mqtt5(&broker, "fleet5", &["--mqtt-connections-per-device"]);
    monitor.wait_for("the readings of four MQTT 5 connections", |r| {
        forwarded(r) >= (sent + fleet) as f64
    });
    // A subscriber sees the Sparkplug edge node's BIRTH and DATA, sent over MQTT 5.
    let sub = std::process::Command::new("mosquitto_sub")
        .args(["-p", &broker.port.to_string(), "-V", "5", "-q", "1"])
        .args(["-i", "iiot-test-sub5"])
        .args(["-t", "spBv1.0/iiot/#", "-F", "%t", "-C", "6", "-W", "60"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("mosquitto_sub (scripts/mqtt-up.sh --install)");
    // Subscribed before the edge node is born: the broker has logged its connection.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !broker.log().contains("iiot-test-sub5") {
        assert!(
            std::time::Instant::now() < deadline,
            "the subscriber never connected: {}",
            broker.log()
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // Its SUBSCRIBE follows the CONNECT at once; a moment more for the broker to take it.
    std::thread::sleep(std::time::Duration::from_millis(200));
    simulate_mqtt5(&broker, "edge5", &["--mqtt-payload", "sparkplug"]);
    let topics = sub.wait_with_output().expect("mosquitto_sub ran");
    let topics = String::from_utf8_lossy(&topics.stdout);
    assert!(topics.contains("spBv1.0/iiot/NBIRTH/edge5"), "{topics}");
    assert!(topics.contains("spBv1.0/iiot/DBIRTH/edge5/"), "{topics}");

    let log = broker.log();
    assert_eq!(
        protocols(&broker, "sim5").values().collect::<Vec<_>>(),
        ["p5"],
        "{log}"
    );
    let fleet = protocols(&broker, "fleet5-");
    assert_eq!(fleet.len(), 4, "{log}");
    assert!(fleet.values().all(|p| p == "p5"), "{fleet:?}");
    assert_eq!(
        protocols(&broker, "edge5").values().collect::<Vec<_>>(),
        ["p5"],
        "{log}"
    );
    // The monitor's own connection (3.1.1) shows the log tells the two apart.
    let monitor_protocol = protocols(&broker, "iiot-test-sim5-monitor");
    assert!(
        monitor_protocol.values().all(|p| p == "p2"),
        "{monitor_protocol:?}"
    );
    assert!(monitor.stop().success());
}
