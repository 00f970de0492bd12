//! `/api/rules` on Kafka, against a private tansu: a rule changed through an `iiot serve`
//! (which has no processor) reaches the separate `iiot process` instances over the rules topic
//! without a restart, and a processor started after the change reads it from the topic; a
//! serve started later lists it. With `HISTORY_DATABASE_URL` the rules go through PostgreSQL
//! instead, the topic's snapshot copied in once. Readings come in over the serve's
//! `POST /api/ingest`.
//!
//! Needs the `tansu` binary (`scripts/kafka-up.sh --install`), and PostgreSQL for the second
//! test (`scripts/pg-up.sh --install`).
#![cfg(feature = "kafka")]
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod support;

use iiot_kafka::testing::TestBroker;
use serde_json::{Value, json};
use support::http::request_with_body;
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

/// Two readings of `device` in `building` at `temperature`, through `serve`'s ingest.
fn ingest(serve: &Role, device: &str, building: &'static str, temperature: f64) {
    let t = iiot::now_ms() - 5_000;
    let v = Values {
        temperature,
        ..Values::of(1)
    };
    let body = format!(
        "[{},{}]",
        reading_json(device, 1, t, v, site(building)),
        reading_json(device, 2, t + 1000, v, site(building))
    );
    let (status, text) = serve
        .post_body("/api/ingest", body.as_bytes())
        .expect("an answer");
    assert_eq!(status, 202, "{text}");
}

fn alert_types(serve: &Role, device: &str) -> Vec<String> {
    serve
        .json(&format!("/api/alerts?device_id={device}"))
        .and_then(|v| {
            Some(
                v["items"]
                    .as_array()?
                    .iter()
                    .filter_map(|a| Some(a["alert_type"].as_str()?.to_string()))
                    .collect(),
            )
        })
        .unwrap_or_default()
}

fn overheats(serve: &mut Role, device: &str) {
    serve.wait_for(&format!("temperature_high of {device}"), |r| {
        alert_types(r, device)
            .iter()
            .any(|t| t == "temperature_high")
    });
}

#[test]
fn a_rule_changed_through_serve_reaches_every_processor_over_the_rules_topic() {
    let broker = TestBroker::start(&[]);
    let mut serve = Role::start(&["serve"], &broker.brokers, &[]);
    serve.wait_for("serve subscribed", |r| {
        r.log_text().contains("serving live data")
    });
    let mut first = Role::start(&["process"], &broker.brokers, &[]);
    first.wait_for("processing", |r| r.log_text().contains("processing"));

    let rule = json!({"alert_type": "temperature_high", "value": 60.0, "scope": {"building": "K"}});
    let path = "/api/rules/temperature_high@building=K";
    let (status, body) =
        request_with_body(serve.http_port, "PUT", path, rule.to_string().as_bytes())
            .expect("answers");
    assert_eq!(status, 200, "{body}");
    first.wait_for("the running processor applied it", |r| {
        r.log_text()
            .contains("alert rules changed over the API applied")
    });
    ingest(&serve, "k_1", "K", 65.0);
    ingest(&serve, "a_1", "A", 65.0);
    overheats(&mut serve, "k_1");
    serve.wait_for("a_1 in the store", |r| {
        r.json("/api/devices/a_1")
            .is_some_and(|d| d["latest"]["seq"] == 2)
    });
    assert!(
        !alert_types(&serve, "a_1").contains(&"temperature_high".to_string()),
        "building A keeps 80 °C"
    );
    assert!(first.stop().success());

    // Started after the change: the snapshot is read from the topic.
    let mut second = Role::start(&["process"], &broker.brokers, &[]);
    second.wait_for("the new processor applied it", |r| {
        r.log_text()
            .contains("alert rules changed over the API applied")
    });
    ingest(&serve, "k_2", "K", 65.0);
    overheats(&mut serve, "k_2");

    let mut late = Role::start(&["serve"], &broker.brokers, &[]);
    late.wait_for("a late serve lists the rule", |r| {
        r.json("/api/rules").is_some_and(|v: Value| {
            v["items"].as_array().is_some_and(|items| {
                items
                    .iter()
                    .any(|i| i["id"] == "temperature_high@building=K" && i["source"] == "api")
            })
        })
    });
    assert!(second.stop().success());
}

fn api_ids(serve: &Role) -> Vec<String> {
    let rules = serve.json("/api/rules").unwrap_or(Value::Null);
    let mut ids: Vec<String> = rules["items"]
        .as_array()
        .map(|items| {
            items
                .iter()
                .filter(|r| r["source"] == "api")
                .filter_map(|r| Some(r["id"].as_str()?.to_string()))
                .collect()
        })
        .unwrap_or_default();
    ids.sort();
    ids
}

/// With `HISTORY_DATABASE_URL` on Kafka: the snapshot already on the rules topic is copied into
/// PostgreSQL once, and a rule made through one serve reaches the `iiot process` through the
/// database and is listed by another serve on it.
#[test]
fn with_postgres_on_kafka_rules_go_through_the_database_the_topic_copied_in_once() {
    let broker = TestBroker::start(&[]);
    let mut before = Role::start(&["serve"], &broker.brokers, &[]);
    before.wait_for("serve subscribed", |r| {
        r.log_text().contains("serving live data")
    });
    let rule = json!({"alert_type": "temperature_high", "value": 60.0, "scope": {"building": "K"}});
    let (status, body) = request_with_body(
        before.http_port,
        "PUT",
        "/api/rules/temperature_high@building=K",
        rule.to_string().as_bytes(),
    )
    .expect("answers");
    assert_eq!(status, 200, "{body}");
    assert!(before.stop().success());

    let pg = support::postgres::PgServer::start();
    let url = pg.url();
    let db = [("HISTORY_DATABASE_URL", url.as_str())];
    let mut serve = Role::start(&["serve"], &broker.brokers, &db);
    serve.wait_for("the topic's rule copied into the database", |r| {
        api_ids(r) == ["temperature_high@building=K"]
    });
    assert_eq!(
        pg.psql("SELECT id FROM iiot_api_rules"),
        "temperature_high@building=K"
    );
    let mut process = Role::start(&["process"], &broker.brokers, &db);
    process.wait_for("processing", |r| r.log_text().contains("processing"));

    let rule = json!({"alert_type": "temperature_high", "value": 60.0, "scope": {"building": "L"}});
    let (status, body) = request_with_body(
        serve.http_port,
        "POST",
        "/api/rules",
        rule.to_string().as_bytes(),
    )
    .expect("answers");
    assert_eq!(status, 201, "{body}");
    assert_eq!(pg.psql("SELECT count(*) FROM iiot_api_rules"), "2");
    process.wait_for("the processor applied it", |r| {
        r.log_text().contains("version=2")
    });
    ingest(&serve, "l_1", "L", 65.0);
    overheats(&mut serve, "l_1");
    ingest(&serve, "k_1", "K", 65.0);
    overheats(&mut serve, "k_1");

    let mut other = Role::start(&["serve"], &broker.brokers, &db);
    other.wait_for("another serve lists both", |r| {
        api_ids(r) == ["temperature_high@building=K", "temperature_high@building=L"]
    });
    assert!(process.stop().success());
}
