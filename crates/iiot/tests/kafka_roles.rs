//! The roles over a real Kafka-protocol broker (a private tansu per test, see
//! `iiot_kafka::testing`), driven as a user drives them: `simulate`, `process` and `serve`
//! end to end, `run` over Kafka, and a restarted processor taking over open alerts — through
//! the `iiot` binary, environment variables and the HTTP API.
//!
//! Needs the `tansu` binary (`scripts/kafka-up.sh --install`).
#![cfg(feature = "kafka")]
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod support;

use iiot_kafka::testing::TestBroker;
use serde_json::Value;
use support::role::{Role, log_field, simulate};

#[test]
fn simulate_process_serve_end_to_end_with_topics_created_at_start_up() {
    // No topics: the roles create them.
    let broker = TestBroker::start(&[]);
    let mut serve = Role::start(&["serve"], &broker.brokers, &[]);
    serve.wait_for("serve ready", Role::ready);
    serve.wait_for("serve subscribed", |r| {
        r.log_text().contains("serving live data")
    });
    // Every reading is above the (lowered) temperature threshold: each device raises an alert.
    let mut process = Role::start(
        &["process"],
        &broker.brokers,
        &[
            ("ALERT_TEMPERATURE_HIGH", "5"),
            ("ALERT_TEMPERATURE_LOW", "-100"),
        ],
    );
    process.wait_for("process ready", Role::ready);
    let simulate = simulate(&broker.brokers, "20", "250ms", "60s", "7", &[]);

    serve.wait_for("every device in the API", |r| {
        r.json("/api/devices?per_page=100")
            .and_then(|v| Some(v["total"].as_u64()? == 20))
            .unwrap_or(false)
    });
    serve.wait_for("an alert for every device", |r| {
        r.json("/api/alerts?status=active&limit=100")
            .and_then(|v| {
                let alerts = v["items"].as_array()?;
                let devices: std::collections::HashSet<&str> = alerts
                    .iter()
                    .filter_map(|a| a["device_id"].as_str())
                    .collect();
                Some(devices.len() == 20)
            })
            .unwrap_or(false)
    });
    // Acknowledged through serve, which has no processor: the request travels over the
    // commands topic to the process that owns the alert, and the result comes back on alerts.
    let alert_id = serve
        .json("/api/alerts?status=active&limit=1")
        .and_then(|v| Some(v["items"][0]["alert_id"].as_str()?.to_string()))
        .expect("an active alert");
    let (status, body) = serve
        .post(&format!("/api/alerts/{alert_id}/ack"))
        .expect("answers");
    assert_eq!(status, 200, "{body}");
    let acked: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(acked["status"], "acknowledged", "{body}");
    let (status, body) = serve
        .post(&format!("/api/alerts/{alert_id}/ack"))
        .expect("answers");
    assert_eq!(status, 409, "{body}");
    let (status, _) = serve.post("/api/alerts/alert_nope/ack").expect("answers");
    assert_eq!(status, 404);

    // A serve instance started now rebuilds the alert log from the alerts topic and sees the
    // acknowledgement; each instance sees every reading.
    let mut late = Role::start(&["serve"], &broker.brokers, &[]);
    late.wait_for("the late serve to know every alert", |r| {
        r.json("/api/alerts?limit=100")
            .and_then(|v| {
                let alerts = v["items"].as_array()?;
                let acked = alerts
                    .iter()
                    .any(|a| a["alert_id"] == alert_id.as_str() && a["status"] == "acknowledged");
                Some(alerts.len() >= 20 && acked)
            })
            .unwrap_or(false)
    });
    late.wait_for("the late serve to see readings", |r| {
        r.json("/api/devices?per_page=100")
            .and_then(|v| Some(v["total"].as_u64()? == 20))
            .unwrap_or(false)
    });
    assert!(late.stop().success());

    let device = serve.json("/api/devices/device_001").expect("device_001");
    assert_eq!(device["device_id"], "device_001", "{device}");
    assert!(process.metric("iot_messages_total", "status=\"success\"") > 0.0);
    assert!(
        process.metric("kafka_messages_sent_total", "") > 0.0,
        "alerts were produced"
    );
    assert!(simulate.metric("device_data_generated_total", "") > 0.0);

    // A clean stop of each role.
    assert!(simulate.stop().success());
    assert!(process.stop().success());
    assert!(serve.stop().success());
}

#[test]
fn run_with_kafka_brokers_runs_every_role_in_one_process() {
    let broker = TestBroker::start(&[]);
    let mut run = Role::start(
        &[
            "run",
            "--devices",
            "10",
            "--interval",
            "200ms",
            "--duration",
            "6s",
            "--seed",
            "5",
        ],
        &broker.brokers,
        &[],
    );
    run.wait_for("the run to finish", |r| r.log_text().contains("stopped"));
    let status = run.child.wait().expect("exit");
    let log = run.log_text();
    assert!(status.success(), "{log}");
    let stopped = log
        .lines()
        .find(|l| l.contains(" stopped") && l.contains("processed="))
        .unwrap_or_else(|| panic!("no final line:\n{log}"));
    let field = |name: &str| -> u64 {
        log_field(stopped, "processed=", name).unwrap_or_else(|| panic!("{name} in {stopped}"))
    };
    assert!(field("sent") > 100, "{stopped}");
    assert_eq!(field("processed"), field("sent"), "{stopped}");
}

#[test]
fn a_restarted_processor_keeps_the_alerts_already_open_instead_of_raising_them_again() {
    let broker = TestBroker::start(&[]);
    let mut serve = Role::start(&["serve"], &broker.brokers, &[]);
    serve.wait_for("serve subscribed", |r| {
        r.log_text().contains("serving live data")
    });
    let hot = [
        ("ALERT_TEMPERATURE_HIGH", "5"),
        ("ALERT_TEMPERATURE_LOW", "-100"),
    ];
    let mut first = Role::start(&["process"], &broker.brokers, &hot);
    first.wait_for("process ready", Role::ready);
    let _simulate = simulate(&broker.brokers, "10", "200ms", "120s", "3", &[]);
    let active = |r: &Role| -> Option<Vec<String>> {
        let v = r.json("/api/alerts?status=active&limit=100")?;
        Some(
            v["items"]
                .as_array()?
                .iter()
                .filter_map(|a| Some(a["alert_id"].as_str()?.to_string()))
                .collect(),
        )
    };
    serve.wait_for("an alert per device", |r| {
        active(r).is_some_and(|a| a.len() == 10)
    });
    let before = active(&serve).expect("alerts");
    assert!(first.stop().success());

    let mut second = Role::start(&["process"], &broker.brokers, &hot);
    // Each worker reads back the alert state of exactly the partitions it is given: together
    // they read all ten open alerts.
    let read_back = |r: &Role| -> usize {
        r.log_text()
            .lines()
            .filter(|l| l.contains("open alerts read back from alert-state"))
            .filter_map(|l| {
                l.split(" open=")
                    .nth(1)?
                    .split(' ')
                    .next()?
                    .parse::<usize>()
                    .ok()
            })
            .sum()
    };
    second.wait_for("the new processor read back the open alerts", |r| {
        read_back(r) >= 10
    });
    assert_eq!(read_back(&second), 10, "{}", second.log_text());
    second.wait_for("the new processor busy", |r| {
        r.metric("iot_messages_total", "status=\"success\"") >= 200.0
    });
    // Same conditions, same alerts: nothing raised again under new ids.
    assert_eq!(second.metric("iot_alerts_total", "status=\"active\""), 0.0);
    let mut after = active(&serve).expect("alerts");
    let mut expected = before.clone();
    after.sort();
    expected.sort();
    assert_eq!(after, expected);
    // And the new processor owns them: acknowledging through serve works.
    let (status, body) = serve
        .post(&format!("/api/alerts/{}/ack", before[0]))
        .expect("answers");
    assert_eq!(status, 200, "{body}");
}

/// Event times of `device`'s readings in `serve`'s export (history on disk), JSON.
fn exported_times(serve: &Role, device: &str) -> Vec<i64> {
    let now = iiot::now_ms();
    let path = format!(
        "/api/devices/{device}/export?format=json&from={}&to={now}",
        now - 3_600_000
    );
    serve
        .json(&path)
        .and_then(|v| {
            v.as_array().map(|rows| {
                rows.iter()
                    .filter_map(|r| r["timestamp"].as_i64())
                    .collect()
            })
        })
        .unwrap_or_default()
}

#[test]
fn a_restarted_serve_keeps_in_history_what_was_published_while_it_was_down() {
    let broker = TestBroker::start(&support::kafka::topics());
    let data = support::role::fresh_data_dir("serve-resume");
    let data = data.to_str().expect("utf-8 path");
    let env = [("DATA_DIR", data), ("HISTORY_FLUSH_INTERVAL", "100ms")];
    let mut serve = Role::start(&["serve"], &broker.brokers, &env);
    serve.wait_for("serve subscribed", |r| {
        r.log_text().contains("serving live data")
    });
    let before = simulate(&broker.brokers, "3", "200ms", "3s", "11", &[]);
    serve.wait_for("readings in history", |r| {
        exported_times(r, "device_001").len() >= 5
    });
    assert!(before.stop().success());
    assert!(serve.stop().success());

    // Published while no serve runs.
    let down_from = iiot::now_ms();
    let during = simulate(&broker.brokers, "3", "200ms", "3s", "12", &[]);
    assert!(during.wait_exit().success());
    let down_to = iiot::now_ms();

    let mut serve = Role::start(&["serve"], &broker.brokers, &env);
    serve.wait_for_log(
        "serve to resume from history",
        "following the readings from where history left off",
    );
    serve.wait_for("the readings of the outage in history", |r| {
        let times = exported_times(r, "device_001");
        times
            .iter()
            .filter(|t| (down_from..=down_to).contains(t))
            .count()
            >= 5
    });
    // Each event time once, though the minute before the stop was read again.
    let times = exported_times(&serve, "device_001");
    let mut unique = times.clone();
    unique.dedup();
    assert_eq!(times, unique, "sorted, each once");
    assert!(serve.stop().success());
}
