//! Rules for many devices, on the binary: a scoped threshold in the config file raises for its
//! building only; a rule made over `/api/rules` applies to the running processors at once,
//! refuses what the file would refuse with the reason, and survives a restart on the same data
//! directory (`DATA_DIR/rules.json`); removed, the default applies again. Readings come in over
//! `POST /api/ingest` (no simulator), so each device's building and temperature are chosen.

mod support;

use serde_json::{Value, json};

use support::http::request_with_body;
use support::readings::{Site, Values, reading_json};
use support::role::{Role, work_dir};

fn site(building: &'static str, floor: i32) -> Site {
    Site {
        building,
        floor,
        room: "101",
        temperature_status: "normal",
    }
}

/// Two readings of `device` at `site`, both at `temperature`, a second apart, just now.
fn ingest(role: &Role, device: &str, at: Site, temperature: f64) {
    let t = iiot::now_ms() - 5_000;
    let v = Values {
        temperature,
        ..Values::of(1)
    };
    let body = format!(
        "[{},{}]",
        reading_json(device, 1, t, v, at),
        reading_json(device, 2, t + 1000, v, at)
    );
    let (status, text) = role
        .post_body("/api/ingest", body.as_bytes())
        .expect("an answer");
    assert_eq!(status, 202, "{text}");
    let answer: Value = serde_json::from_str(&text).expect("json");
    assert_eq!(answer["accepted"], 2, "{text}");
}

/// Waits until `device`'s readings are in the store (its alerts, if any, are recorded with
/// them), then says whether it has a `temperature_high` alert.
fn overheats(role: &mut Role, device: &str) -> bool {
    role.wait_for(&format!("{device} in the store"), |r| {
        r.json(&format!("/api/devices/{device}"))
            .is_some_and(|d| d["latest"]["seq"] == 2)
    });
    let alerts = role
        .json(&format!("/api/alerts?device_id={device}"))
        .expect("alerts");
    alerts["items"]
        .as_array()
        .expect("items")
        .iter()
        .any(|a| a["alert_type"] == "temperature_high")
}

fn run(env: &[(&str, &str)]) -> Role {
    let mut all = vec![("SIMULATOR", "off")];
    all.extend_from_slice(env);
    let mut role = Role::embedded(&["run"], &all);
    role.wait_for("/ready 200", Role::ready);
    role
}

fn send(role: &Role, method: &str, path: &str, body: &Value) -> (u16, Value) {
    let text = body.to_string();
    let (status, answer) =
        request_with_body(role.http_port, method, path, text.as_bytes()).expect("an answer");
    (status, serde_json::from_str(&answer).unwrap_or(Value::Null))
}

#[test]
fn a_scoped_threshold_in_the_file_raises_for_its_building_and_floor_only() {
    let dir = work_dir("rules-scoped");
    let file = dir.join("iiot.toml");
    std::fs::write(
        &file,
        r#"
[[alerts.rules]]
alert_type = "temperature_high"
value = 70.0
scope = { building = "C", floor = 2 }
"#,
    )
    .expect("config file");
    let mut role = run(&[("IIOT_CONFIG", file.to_str().expect("utf-8 path"))]);
    ingest(&role, "c2_dev", site("C", 2), 75.0);
    ingest(&role, "c3_dev", site("C", 3), 75.0);
    ingest(&role, "a2_dev", site("A", 2), 75.0);
    ingest(&role, "a2_hot", site("A", 2), 85.0);
    assert!(
        overheats(&mut role, "c2_dev"),
        "70 °C applies in C, floor 2"
    );
    assert!(!overheats(&mut role, "c3_dev"), "C, floor 3 keeps 80 °C");
    assert!(!overheats(&mut role, "a2_dev"), "A keeps 80 °C");
    assert!(overheats(&mut role, "a2_hot"), "the default still raises");
    assert!(role.stop().success());
}

#[test]
fn an_api_rule_applies_at_once_is_validated_and_survives_a_restart() {
    let data = support::role::fresh_data_dir("rules-api");
    let data_dir = data.to_str().expect("utf-8 path").to_string();
    let env = [("DATA_DIR", data_dir.as_str())];
    let mut role = run(&env);
    let path = "/api/rules/temperature_high@building=B";

    // Refused like the file would refuse it, naming the field; nothing changes.
    let bad = json!({"alert_type": "temperature_high", "value": 60.0, "clear": 65.0,
                     "scope": {"building": "B"}});
    let (status, answer) = send(&role, "PUT", path, &bad);
    assert_eq!(status, 400, "{answer}");
    let error = answer["error"].as_str().expect("error");
    assert!(error.contains("rule.clear"), "{error}");
    let (status, answer) = send(
        &role,
        "POST",
        "/api/rules",
        &json!({"alert_type": "x", "colour": 1}),
    );
    assert_eq!(status, 400, "{answer}");
    assert!(answer["error"].as_str().expect("error").contains("colour"));
    let other =
        json!({"alert_type": "temperature_high", "value": 60.0, "scope": {"building": "A"}});
    let (status, _) = send(&role, "PUT", path, &other);
    assert_eq!(status, 400, "the body makes another id than the path");

    let good = json!({"alert_type": "temperature_high", "value": 60.0, "scope": {"building": "B"}});
    let (status, answer) = send(&role, "PUT", path, &good);
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["id"], "temperature_high@building=B");
    let (status, _) = send(&role, "POST", "/api/rules", &good);
    assert_eq!(status, 409, "exists: PUT changes it");
    // `/config` shows the rules in force, the API's with its scope.
    let config = role.json("/config").expect("/config");
    let rules = config["alerts"]["rules"].as_array().expect("rules");
    let shown = rules
        .iter()
        .find(|r| r["id"] == "temperature_high@building=B")
        .unwrap_or_else(|| panic!("/config shows the API rule: {config}"));
    assert_eq!(shown["source"], "api");
    assert_eq!(shown["rule"]["scope"]["building"], "B");
    assert!(
        rules
            .iter()
            .any(|r| r["id"] == "temperature_high" && r["source"] == "default")
    );

    ingest(&role, "b_dev1", site("B", 1), 65.0);
    ingest(&role, "a_dev1", site("A", 1), 65.0);
    assert!(overheats(&mut role, "b_dev1"), "applied without a restart");
    assert!(!overheats(&mut role, "a_dev1"));
    assert!(role.stop().success());

    let mut role = run(&env);
    let rules = role.json("/api/rules").expect("rules");
    let kept = rules["items"]
        .as_array()
        .expect("items")
        .iter()
        .find(|r| r["id"] == "temperature_high@building=B")
        .unwrap_or_else(|| panic!("kept over the restart: {rules}"));
    assert_eq!(kept["source"], "api");
    assert_eq!(kept["rule"]["value"], 60.0);
    ingest(&role, "b_dev2", site("B", 1), 65.0);
    assert!(overheats(&mut role, "b_dev2"), "in force after the restart");

    let (status, _) = request_with_body(role.http_port, "DELETE", path, b"").expect("answer");
    assert_eq!(status, 204);
    let (status, _) = request_with_body(role.http_port, "DELETE", path, b"").expect("answer");
    assert_eq!(status, 404);
    ingest(&role, "b_dev3", site("B", 1), 65.0);
    assert!(!overheats(&mut role, "b_dev3"), "removed: 80 °C again");
    assert!(role.stop().success());
}

#[test]
fn the_config_file_wins_for_the_rules_it_defines() {
    let dir = work_dir("rules-file-wins");
    let file = dir.join("iiot.toml");
    std::fs::write(
        &file,
        "[[alerts.rules]]\nalert_type = \"temperature_high\"\nvalue = 90.0\nscope = { building = \"F\" }\n",
    )
    .expect("config file");
    let role = run(&[("IIOT_CONFIG", file.to_str().expect("utf-8 path"))]);
    let rule = json!({"alert_type": "temperature_high", "value": 50.0, "scope": {"building": "F"}});
    let (status, answer) = send(
        &role,
        "PUT",
        "/api/rules/temperature_high@building=F",
        &rule,
    );
    assert_eq!(status, 409, "{answer}");
    assert!(
        answer["error"]
            .as_str()
            .expect("error")
            .contains("config file")
    );
    let (status, answer) = send(
        &role,
        "DELETE",
        "/api/rules/temperature_high@building=F",
        &json!(null),
    );
    assert_eq!(status, 409, "{answer}");
    assert!(role.stop().success());
}
