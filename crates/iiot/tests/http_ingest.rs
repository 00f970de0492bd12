//! `POST /api/ingest` as a gateway meets it: a JSON array or NDJSON of readings, 202 with what
//! was accepted and the index and reason of each rejected one, 413 above the size cap — and the
//! accepted readings judged by the processors like any other (they reach the store).

mod support;

use serde_json::{Value, json};

use support::readings::reading_bytes;
use support::role::Role;

/// `iiot run` without its simulator: `SIMULATOR=off`, or `--devices 0` when `devices_flag`.
fn run_without_simulator(devices_flag: bool) -> Role {
    let limit = ("INGEST_MAX_BODY_BYTES", "4096");
    let mut role = if devices_flag {
        Role::embedded(&["run", "--devices", "0"], &[limit])
    } else {
        Role::embedded(&["run"], &[("SIMULATOR", "off"), limit])
    };
    role.wait_for("/ready 200", Role::ready);
    role
}

fn reading(device: &str, seq: u64, temperature: f64) -> String {
    let t = iiot::now_ms() - 60_000 + seq as i64 * 1000;
    String::from_utf8(reading_bytes(device, seq, t, temperature).to_vec()).expect("utf-8")
}

fn post(role: &Role, body: &str) -> (u16, Value) {
    let (status, text) = role
        .post_body("/api/ingest", body.as_bytes())
        .expect("an answer");
    let body = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
    (status, body)
}

fn latest_seq(role: &Role, device: &str) -> Option<Value> {
    Some(role.json(&format!("/api/devices/{device}"))?["latest"]["seq"].clone())
}

#[test]
fn arrays_and_ndjson_are_accepted_and_bad_readings_reported_by_index() {
    let mut role = run_without_simulator(false);

    let array = format!(
        "[{},{},{}]",
        reading("gw_1", 1, 21.0),
        reading("gw_1", 2, 999.0),
        reading("gw_2", 1, 21.0)
    );
    let (status, body) = post(&role, &array);
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["accepted"], 2);
    let rejected = body["rejected"].as_array().expect("rejected");
    assert_eq!(rejected.len(), 1, "{body}");
    assert_eq!(rejected[0]["index"], 1);
    assert_eq!(rejected[0]["reason"], "out_of_range");

    let ndjson = format!(
        "{}\n\nnot a reading\n{}\n",
        reading("gw_1", 3, 21.0),
        reading("gw_2", 2, 21.0)
    );
    let (status, body) = post(&role, &ndjson);
    assert_eq!(status, 202, "{body}");
    assert_eq!(
        body,
        json!({"accepted": 2, "rejected": [{"index": 1, "reason": "malformed_json",
            "detail": body["rejected"][0]["detail"]}]})
    );

    role.wait_for("the accepted readings in the store", |r| {
        latest_seq(r, "gw_1") == Some(json!(3)) && latest_seq(r, "gw_2") == Some(json!(2))
    });
    assert_eq!(role.metric("iot_ingest_readings_total", "accepted"), 4.0);
    assert_eq!(role.metric("iot_ingest_readings_total", "rejected"), 2.0);
    // The processors judged them too: nothing of what was accepted was dead-lettered.
    assert_eq!(role.metric("iot_dead_letters_total", ""), 0.0);
    assert!(role.stop().success());
}

#[test]
fn oversize_and_broken_bodies_get_json_errors() {
    let role = run_without_simulator(true);
    let big = format!("[{}]", vec![reading("gw_big", 1, 21.0); 12].join(","));
    assert!(big.len() > 4096);
    let (status, body) = post(&role, &big);
    assert_eq!(status, 413, "{body}");
    assert_eq!(body["limit_bytes"], 4096);
    assert!(body["error"].as_str().is_some_and(|e| e.contains("4096")));

    let (status, body) = post(&role, "[{\"device_id\":");
    assert_eq!(status, 400, "{body}");
    assert!(body["error"].is_string());

    let (status, body) = post(&role, "");
    assert_eq!(
        (status, body),
        (202, json!({"accepted": 0, "rejected": []}))
    );
    assert!(matches!(role.get("/api/devices/gw_big"), Some((404, _))));
    let devices = role.json("/api/devices").expect("device list");
    assert_eq!(devices["total"], 0, "--devices 0: no simulated devices");
    assert!(role.stop().success());
}
