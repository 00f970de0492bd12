//! End to end: `iiot run` with `NOTIFY_WEBHOOK_URL` and a seeded fleet that overheats tells a
//! webhook receiver (started by the test) of every alert exactly once raised and at most once
//! resolved — as many raised as the run reports.

mod support;

use std::collections::HashMap;
use std::process::Stdio;

use serde_json::Value;
use support::notify::WebhookReceiver;
use support::role::iiot_command;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn iiot_run_notifies_each_alert_change_exactly_once() {
    let receiver = WebhookReceiver::start(0).await;
    let mut cmd = iiot_command("notify-run");
    cmd.env_remove("KAFKA_BROKERS")
        .env_remove("IIOT_CONFIG")
        .env("HTTP_PORT", "0")
        .env("WEBSOCKET_PORT", "0")
        .env("LOG_FORMAT", "json")
        .env("RUST_LOG", "info")
        .env("NOTIFY_WEBHOOK_URL", receiver.url())
        .env("FAULT_RATE", "0.02")
        .env("SIM_SEED", "11")
        .args([
            "run",
            "--devices",
            "20",
            "--interval",
            "50ms",
            "--duration",
            "8s",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let out = tokio::process::Command::from(cmd)
        .output()
        .await
        .expect("iiot runs");
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    let raised_reported = log
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["message"] == "stopped")
        .and_then(|v| v["alerts_raised"].as_u64())
        .unwrap_or_else(|| panic!("a final report in {log}"));

    // Every post was delivered before `iiot run` returned (the notifier drains at stop).
    let mut seen: HashMap<(String, String), u32> = HashMap::new();
    for r in receiver.received() {
        let body = r.json();
        let key = (
            body["alert_id"].as_str().expect("alert_id").to_string(),
            body["event"].as_str().expect("event").to_string(),
        );
        *seen.entry(key).or_default() += 1;
    }
    let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "told more than once: {twice:?}");
    let raised: Vec<&String> = seen
        .keys()
        .filter(|(_, e)| e == "raised")
        .map(|(id, _)| id)
        .collect();
    assert_eq!(raised.len() as u64, raised_reported, "one raised per alert");
    assert!(raised_reported > 0, "the fleet overheats: {log}");
    let overheat_ended = receiver.received().iter().any(|r| {
        let body = r.json();
        body["alert_type"] == "temperature_high" && body["event"] == "resolved"
    });
    assert!(
        overheat_ended,
        "an overheat raised and resolved within the run"
    );
    for (id, event) in seen.keys() {
        assert!(
            event == "raised" || seen.contains_key(&(id.clone(), "raised".to_string())),
            "{event} of {id} without its raise"
        );
        assert_ne!(event, "acknowledged", "not told by default");
    }
}

/// `iiot run` SIGKILLed while the receiver fails: the changes it had not told are in its
/// outbox (`DATA_DIR/notify-outbox.log`), and the next start tells them — and only them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_killed_mid_delivery_tells_the_rest_after_its_restart_and_nothing_twice() {
    use iiot_model::Reading;
    use support::role::{Role, fresh_data_dir};

    let receiver = std::sync::Arc::new(WebhookReceiver::start(0).await);
    let r = receiver.clone();
    tokio::task::spawn_blocking(move || {
        let receiver = r;
        let data = fresh_data_dir("notify-outbox");
        let data = data.to_str().expect("utf-8").to_string();
        let env = [
            ("SIMULATOR", "off"),
            ("DATA_DIR", data.as_str()),
            ("NOTIFY_WEBHOOK_URL", &receiver.url()),
        ];
        let ingest = |role: &Role, seq: u64, temperature: f64| {
            let ts = iiot::now_ms() - 1_000;
            let body: Vec<Reading> = (0..5)
                .map(|d| Reading::example(&format!("device_{:03}", 300 + d), seq, ts, temperature))
                .collect();
            let body = serde_json::to_vec(&body).expect("json");
            let (status, text) = role.post_body("/api/ingest", &body).expect("answered");
            assert_eq!(status, 202, "{text}");
        };
        let count = |event: &str| {
            receiver
                .received()
                .iter()
                .filter(|r| {
                    r.json()["event"] == event && r.json()["alert_type"] == "temperature_high"
                })
                .count()
        };
        let mut first = Role::embedded(&["run"], &env);
        first.wait_for("ready", |r| r.ready());
        ingest(&first, 1, 85.0);
        first.wait_for("five raised told", |_| count("raised") == 5);
        // The receiver breaks; the devices cool down; the first resolved is being retried.
        receiver.break_down();
        let before = receiver.attempts();
        ingest(&first, 2, 20.0);
        first.wait_for("resolved being retried", |_| {
            receiver.attempts() >= before + 2
        });
        let _ = std::process::Command::new("kill")
            .args(["-KILL", &first.child.id().to_string()])
            .status();
        let _ = first.child.wait();
        assert_eq!(count("resolved"), 0);

        receiver.heal();
        let mut second = Role::embedded(&["run"], &env);
        second.wait_for("the five resolved told after the restart", |_| {
            count("resolved") == 5
        });
        std::thread::sleep(std::time::Duration::from_secs(2));
        let mut seen: HashMap<(String, String), u32> = HashMap::new();
        for r in receiver.received() {
            let body = r.json();
            let key = (
                body["alert_id"].as_str().unwrap_or_default().to_string(),
                body["event"].as_str().unwrap_or_default().to_string(),
            );
            *seen.entry(key).or_default() += 1;
        }
        let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
        assert!(twice.is_empty(), "told more than once: {twice:?}");
        assert_eq!(count("raised"), 5, "raised told once, before the kill");
        assert!(second.ready());
    })
    .await
    .expect("the test's blocking part");
}
