//! Alert rules made over `/api/rules` kept in PostgreSQL (`HISTORY_DATABASE_URL`), with the
//! `iiot` binary as child processes on one private cluster (`support::postgres`): a rule made
//! through one instance is applied by another's running processors and shown by its API, at
//! once; it survives a restart of everything; concurrent changes through two instances are
//! all kept; with the database stopped a change answers 503 and the rules in force keep
//! applying, and changes work again once it is back; rules kept in `DATA_DIR/rules.json`
//! before the database was configured are copied in once.
//!
//! Every instance is `iiot run` on the embedded bus with its own fresh data directory (so
//! nothing is shared but the database) and no simulator: readings go in over
//! `POST /api/ingest`, each device's building and temperature chosen. (`iiot serve` and
//! `iiot process` need Kafka; they keep and follow the rules through the same code.)
//! Needs Debian's PostgreSQL (`scripts/pg-up.sh --install`).
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod support;

use serde_json::{Value, json};

use support::http::request_with_body;
use support::postgres::PgServer;
use support::readings::{Site, Values, reading_json};
use support::role::Role;

fn site(building: &'static str) -> Site {
    Site {
        building,
        floor: 1,
        room: "101",
        temperature_status: "normal",
    }
}

/// `iiot run` without simulator on `url`'s database (plus `env`); waits for `/ready`.
fn instance(url: &str, env: &[(&str, &str)]) -> Role {
    let mut all = vec![("SIMULATOR", "off"), ("HISTORY_DATABASE_URL", url)];
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

/// 60 °C in `building` (the default raises above 80 °C).
fn rule(building: &str) -> Value {
    json!({"alert_type": "temperature_high", "value": 60.0, "scope": {"building": building}})
}

/// The ids of the API's rules `role` has in force.
fn api_ids(role: &Role) -> Vec<String> {
    let rules = role.json("/api/rules").expect("rules");
    let mut ids: Vec<String> = rules["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter(|r| r["source"] == "api")
        .map(|r| r["id"].as_str().expect("id").to_string())
        .collect();
    ids.sort();
    ids
}

/// Two readings of `device` in `building` at 65 °C; waits until they are in the store, then
/// says whether `device` has a `temperature_high` alert.
fn overheats(role: &mut Role, device: &str, building: &'static str) -> bool {
    let t = iiot::now_ms() - 5_000;
    let v = Values {
        temperature: 65.0,
        ..Values::of(1)
    };
    let body = format!(
        "[{},{}]",
        reading_json(device, 1, t, v, site(building)),
        reading_json(device, 2, t + 1000, v, site(building))
    );
    let (status, text) = role
        .post_body("/api/ingest", body.as_bytes())
        .expect("an answer");
    assert_eq!(status, 202, "{text}");
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

#[test]
fn a_rule_made_through_one_instance_applies_in_another_and_survives_a_restart_of_everything() {
    let pg = PgServer::start();
    let url = pg.url();
    let one = instance(&url, &[]);
    let mut two = instance(&url, &[]);
    let (status, answer) = send(&one, "POST", "/api/rules", &rule("B"));
    assert_eq!(status, 201, "{answer}");

    two.wait_for("the other instance shows the rule", |r| {
        api_ids(r) == ["temperature_high@building=B"]
    });
    assert!(
        overheats(&mut two, "b_dev1", "B"),
        "applied by the other instance's running processors"
    );
    assert!(!overheats(&mut two, "a_dev1", "A"), "B only");
    assert_eq!(
        pg.psql("SELECT id FROM iiot_api_rules"),
        "temperature_high@building=B"
    );
    // The file's validation, on the rules the database holds: a duplicate is refused there.
    let (status, _) = send(&two, "POST", "/api/rules", &rule("B"));
    assert_eq!(status, 409, "made through the other instance already");

    assert!(one.stop().success());
    assert!(two.stop().success());
    // Fresh data directories: only the database remembers.
    let mut again = instance(&url, &[]);
    assert_eq!(api_ids(&again), ["temperature_high@building=B"]);
    assert!(overheats(&mut again, "b_dev2", "B"), "in force at start");
    let config = again.json("/config").expect("/config");
    let shown = config["alerts"]["rules"]
        .as_array()
        .expect("rules")
        .iter()
        .find(|r| r["id"] == "temperature_high@building=B")
        .unwrap_or_else(|| panic!("/config shows the API rule: {config}"))
        .clone();
    assert_eq!(shown["source"], "api");
    assert_eq!(shown["rule"]["scope"]["building"], "B");
    assert!(again.stop().success());
}

#[test]
fn concurrent_changes_through_two_instances_are_all_kept() {
    let pg = PgServer::start();
    let url = pg.url();
    let one = instance(&url, &[]);
    let mut two = instance(&url, &[]);
    let buildings: Vec<String> = (0..12).map(|i| format!("C{i}")).collect();
    std::thread::scope(|s| {
        for (role, half) in [(&one, 0), (&two, 1)] {
            let buildings = &buildings;
            s.spawn(move || {
                for b in buildings.iter().skip(half).step_by(2) {
                    let (status, answer) = send(role, "POST", "/api/rules", &rule(b));
                    assert_eq!(status, 201, "{answer}");
                }
            });
        }
    });
    let mut expected: Vec<String> = buildings
        .iter()
        .map(|b| format!("temperature_high@building={b}"))
        .collect();
    expected.sort();
    assert_eq!(pg.psql("SELECT count(*) FROM iiot_api_rules"), "12");
    assert_eq!(pg.psql("SELECT version FROM iiot_api_rules_version"), "12");
    two.wait_for("both instances have every rule", |r| {
        api_ids(r) == expected && api_ids(&one) == expected
    });
    assert!(one.stop().success());
    assert!(two.stop().success());
}

#[test]
fn with_the_database_down_a_change_answers_503_and_the_rules_in_force_stay() {
    let pg = PgServer::start();
    let url = pg.url();
    let mut one = instance(&url, &[]);
    let mut two = instance(&url, &[]);
    let (status, answer) = send(&one, "POST", "/api/rules", &rule("B"));
    assert_eq!(status, 201, "{answer}");
    two.wait_for("the rule reaches the other instance", |r| {
        api_ids(r) == ["temperature_high@building=B"]
    });

    pg.stop();
    let (status, answer) = send(&one, "POST", "/api/rules", &rule("D"));
    assert_eq!(status, 503, "{answer}");
    assert!(
        answer["error"].is_string(),
        "the API's error shape: {answer}"
    );
    let (status, answer) = send(
        &one,
        "DELETE",
        "/api/rules/temperature_high@building=B",
        &Value::Null,
    );
    assert_eq!(status, 503, "{answer}");
    assert_eq!(api_ids(&one), ["temperature_high@building=B"]);
    assert!(overheats(&mut one, "b_down1", "B"), "still applied");
    assert!(
        overheats(&mut two, "b_down2", "B"),
        "still applied there too"
    );

    pg.start_again();
    one.wait_for("a change works again", |r| {
        send(r, "POST", "/api/rules", &rule("D")).0 == 201
    });
    two.wait_for("the other instance follows again", |r| {
        api_ids(r) == ["temperature_high@building=B", "temperature_high@building=D"]
    });
    assert!(overheats(&mut two, "d_dev", "D"));
    assert!(one.stop().success());
    assert!(two.stop().success());
}

#[test]
fn rules_kept_in_the_data_directory_are_copied_into_the_database_once() {
    let data = support::role::fresh_data_dir("rules-carry-over");
    let data_dir = data.to_str().expect("utf-8 path").to_string();
    // Before the database: the rule is kept in DATA_DIR/rules.json.
    let mut before = Role::embedded(
        &["run"],
        &[("SIMULATOR", "off"), ("DATA_DIR", data_dir.as_str())],
    );
    before.wait_for("/ready 200", Role::ready);
    let (status, answer) = send(&before, "POST", "/api/rules", &rule("E"));
    assert_eq!(status, 201, "{answer}");
    assert!(before.stop().success());
    assert!(data.join("rules.json").exists());

    let pg = PgServer::start();
    let url = pg.url();
    let mut first = instance(&url, &[("DATA_DIR", data_dir.as_str())]);
    first.wait_for_log("the copy is logged", "copied into the database");
    assert_eq!(
        pg.psql("SELECT id FROM iiot_api_rules"),
        "temperature_high@building=E"
    );
    // Another instance (no rules.json of its own) has it from the database.
    let mut other = instance(&url, &[]);
    assert_eq!(api_ids(&other), ["temperature_high@building=E"]);
    assert!(overheats(&mut other, "e_dev", "E"));

    // Once: removed over the API, a restart on the same rules.json does not bring it back.
    let (status, _) = send(
        &other,
        "DELETE",
        "/api/rules/temperature_high@building=E",
        &Value::Null,
    );
    assert_eq!(status, 204);
    first.wait_for("removed everywhere", |r| api_ids(r).is_empty());
    assert!(first.stop().success());
    let again = instance(&url, &[("DATA_DIR", data_dir.as_str())]);
    assert!(api_ids(&again).is_empty(), "not copied a second time");
    assert_eq!(pg.psql("SELECT count(*) FROM iiot_api_rules"), "0");
    assert!(again.stop().success());
    assert!(other.stop().success());
}

/// A stored rule that no longer reads as one (edited by hand in the database) is left out of
/// the rules in force, but a change over the API is refused while it is there rather than
/// deleting it (a change rewrites the whole table). Fails if the change drops the row.
#[test]
fn a_change_is_refused_while_a_stored_rule_cannot_be_read_and_the_row_is_kept() {
    let pg = PgServer::start();
    let url = pg.url();
    let one = instance(&url, &[]);
    let (status, answer) = send(&one, "POST", "/api/rules", &rule("F"));
    assert_eq!(status, 201, "{answer}");
    pg.psql("UPDATE iiot_api_rules SET spec = '{\"hand\": \"edited\"}'::jsonb");
    let (status, answer) = send(&one, "POST", "/api/rules", &rule("G"));
    assert_eq!(status, 503, "{answer}");
    assert!(answer["error"].is_string(), "{answer}");
    assert_eq!(
        pg.psql("SELECT id FROM iiot_api_rules"),
        "temperature_high@building=F",
        "the unreadable row is still there, nothing else written"
    );
    assert!(one.stop().success());
}
