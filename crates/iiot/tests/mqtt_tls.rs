//! `mqtts://` against a real Mosquitto TLS listener with certificates the test makes (openssl
//! CLI): readings arrive with a client certificate, a user name and a password read from a
//! file; a broker whose certificate another CA signed is refused; unreadable TLS files stop
//! start-up with one line. The password is never shown.

mod support;

use support::mqtt::{Broker, PASSWORD, Pki, processed, topic};
use support::readings::reading_bytes;
use support::role::{Role, iiot_command, work_dir};

/// `iiot run` (no simulator) reading from the TLS `broker`, trusting `ca`.
fn run_over_tls(broker: &Broker, pki: &Pki, ca: &str, client_id: &str) -> Role {
    let url = format!("mqtts://127.0.0.1:{}", broker.port);
    let password_file = work_dir("mqtt-tls").join(format!("{client_id}.password"));
    std::fs::write(&password_file, format!("{PASSWORD}\n")).expect("password file");
    let password_file = password_file.display().to_string();
    let (ca, cert, key) = (pki.path(ca), pki.path("client.pem"), pki.path("client.key"));
    Role::embedded(
        &["run"],
        &[
            ("MQTT_URL", &url),
            ("MQTT_CLIENT_ID", client_id),
            ("MQTT_CA_LOCATION", &ca),
            ("MQTT_CERTIFICATE_LOCATION", &cert),
            ("MQTT_KEY_LOCATION", &key),
            ("MQTT_USERNAME", "iiot"),
            ("MQTT_PASSWORD_FILE", &password_file),
            ("SIMULATOR", "off"),
        ],
    )
}

#[test]
fn readings_arrive_over_mqtts_with_a_client_certificate_and_a_password_file() {
    let pki = Pki::generate();
    let broker = Broker::start_tls(&pki);
    let mut role = run_over_tls(&broker, &pki, "ca.pem", "iiot-test-tls");
    role.wait_for("subscribed over TLS (/ready 200)", Role::ready);
    let t0 = iiot::now_ms() - 60_000;
    let readings: Vec<_> = (1..=5)
        .map(|seq| {
            let payload = reading_bytes("kiln_1", seq, t0 + seq as i64 * 1000, 30.0);
            (topic("kiln_1"), payload.to_vec())
        })
        .collect();
    broker.publish_all(&readings);
    role.wait_for("every reading processed", |r| processed(r) >= 5.0);
    let device = role.json("/api/devices/kiln_1").expect("kiln_1");
    assert_eq!(device["latest"]["seq"], 5);
    let (_, config) = role.get("/config").expect("answers");
    assert!(!config.contains(PASSWORD), "{config}");
    assert!(!role.log_text().contains(PASSWORD));
    assert!(role.stop().success());
}

#[test]
fn a_broker_certified_by_another_ca_is_refused() {
    let pki = Pki::generate();
    let broker = Broker::start_tls(&pki);
    let mut role = run_over_tls(&broker, &pki, "other-ca.pem", "iiot-test-wrong-ca");
    role.wait_for_log("the refusal logged", "cannot reach the MQTT broker");
    let log = role.log_text();
    assert!(log.contains("UnknownIssuer"), "{log}");
    assert!(!log.contains(PASSWORD));
    assert!(
        matches!(role.get("/ready"), Some((503, body)) if body.contains("MQTT broker")),
        "not ready without the broker"
    );
    assert_eq!(role.metric("iot_mqtt_broker_connected", ""), 0.0);
    assert!(role.metric("iot_mqtt_connection_failures_total", "") >= 1.0);
    drop(broker);
}

#[test]
fn unreadable_tls_files_stop_start_up_with_one_line() {
    let pki = Pki::generate();
    let cert = pki.path("client.pem");
    let cases = [
        ("MQTT_CA_LOCATION", "/nonexistent/ca.pem"),
        // A key without its certificate.
        ("MQTT_KEY_LOCATION", cert.as_str()),
        // A certificate where a key belongs.
        ("MQTT_CERTIFICATE_LOCATION", cert.as_str()),
    ];
    for (i, (key, value)) in cases.into_iter().enumerate() {
        let mut cmd = iiot_command("mqtt-tls");
        cmd.args(["run", "--duration", "1s"])
            .env("MQTT_URL", "mqtts://127.0.0.1:8883")
            .env("SIMULATOR", "off")
            .env(key, value);
        if i == 2 {
            cmd.env("MQTT_KEY_LOCATION", &cert);
        }
        let out = cmd.output().expect("iiot ran");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{key}: {stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
        assert!(stderr.contains("MQTT_"), "{stderr}");
    }
}
