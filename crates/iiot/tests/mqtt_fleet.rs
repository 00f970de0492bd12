//! `iiot simulate --output mqtt --mqtt-connections-per-device`: every simulated device over its
//! own MQTT connection (broker load tests), against a real Mosquitto; a fleet larger than the
//! open-files limit is refused before anything connects.

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
