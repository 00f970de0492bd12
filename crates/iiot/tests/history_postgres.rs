//! History in PostgreSQL as an operator meets it, with the `iiot` binary as child processes
//! on one private cluster (`support::postgres`): several instances answer the same history
//! and export, one started later too; a writer that starts over and is handed the same
//! readings again adds no rows; a database stopped mid-run does not stop processing or
//! alerting, and the readings of the outage reach it once it is back — even when the writer
//! was killed (SIGKILL) meanwhile: they waited in its spool in `DATA_DIR`.
//!
//! Every instance is `iiot run` on the embedded bus with `SIMULATOR=off` and `HISTORY=off`
//! (nothing on disk): readings go in through `POST /api/ingest` on the writer only, so
//! whatever the others answer comes from the database. (`iiot serve` needs Kafka; on Kafka
//! the same sink runs in each `iiot process` member and the same routes in each `serve`.)
//! Needs Debian's PostgreSQL (`scripts/pg-up.sh --install`).
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod support;

use serde_json::Value;

use support::postgres::PgServer;
use support::readings::{SITE_A, Values, reading_json};
use support::role::Role;

/// `iiot run` without simulator or disk history, on `url`'s database; waits for `/ready`.
fn instance(url: &str, env: &[(&str, &str)]) -> Role {
    let mut all = vec![
        ("SIMULATOR", "off"),
        ("HISTORY", "off"),
        ("HISTORY_DATABASE_URL", url),
    ];
    all.extend_from_slice(env);
    let mut role = Role::embedded(&["run"], &all);
    role.wait_for("/ready 200", Role::ready);
    role
}

/// Readings `seqs` of `device`, 5 s apart, the last 10 s ago, at `temperature` (or the test
/// series' own values).
fn readings(device: &str, seqs: std::ops::Range<u64>, temperature: Option<f64>) -> Vec<String> {
    let now = iiot::now_ms();
    let last = seqs.end;
    seqs.map(|seq| {
        let t = now - 10_000 - (last - seq) as i64 * 5_000;
        let mut v = Values::of(seq);
        if let Some(temp) = temperature {
            v.temperature = temp;
        }
        reading_json(device, seq, t, v, SITE_A)
    })
    .collect()
}

fn ingest(role: &Role, readings: &[String]) {
    let body = format!("[{}]", readings.join(","));
    let (status, text) = role
        .post_body("/api/ingest", body.as_bytes())
        .unwrap_or_else(|| panic!("no answer to POST /api/ingest; log:\n{}", role.log_text()));
    assert_eq!(status, 202, "{text}");
}

/// `/history` of `device`'s temperature over the last day, or `None` while unknown.
fn history(role: &Role, device: &str) -> Option<Value> {
    let path = format!("/api/devices/{device}/history?sensor=temperature&range=1d&points=300");
    match role.get(&path) {
        Some((200, body)) => Some(serde_json::from_str(&body).expect("JSON")),
        _ => None,
    }
}

fn count(answer: &Value) -> u64 {
    answer["points"]
        .as_array()
        .map(|p| p.iter().filter_map(|p| p["count"].as_u64()).sum())
        .unwrap_or(0)
}

fn export(role: &Role, device: &str) -> String {
    match role.get(&format!("/api/devices/{device}/export?format=csv&range=1d")) {
        Some((200, body)) => body,
        other => panic!("export: {other:?}"),
    }
}

fn rows(pg: &PgServer) -> u64 {
    pg.psql("SELECT count(*) FROM iiot_readings")
        .parse()
        .unwrap()
}

#[test]
fn every_instance_on_one_database_answers_the_same_history_one_started_later_too() {
    let pg = PgServer::start();
    let url = pg.url();
    let writer = instance(&url, &[]);
    let mut reader = instance(&url, &[]);
    let first = readings("pg_a", 1..201, None);
    ingest(&writer, &first);
    ingest(&writer, &readings("pg_b", 1..101, None));
    reader.wait_for("the reader's history has every reading", |r| {
        history(r, "pg_a").is_some_and(|h| count(&h) == 200)
            && history(r, "pg_b").is_some_and(|h| count(&h) == 100)
    });
    // `to` (and the default window) end at "now": ask both for the same fixed window.
    let window = |role: &Role| {
        let now = iiot::now_ms();
        let path = format!(
            "/api/devices/pg_a/history?sensor=humidity&from={}&to={}&points=50",
            now - 86_400_000,
            now / 60_000 * 60_000
        );
        role.get(&path).expect("history")
    };
    let (a, b) = (window(&writer), window(&reader));
    assert_eq!(a.0, 200);
    let points = |body: &str| serde_json::from_str::<Value>(body).unwrap()["points"].clone();
    assert_eq!(points(&a.1), points(&b.1), "writer and reader agree");
    let csv = export(&reader, "pg_a");
    assert_eq!(csv.lines().count(), 201, "header + 200 rows");
    assert_eq!(csv, export(&writer, "pg_a"));
    // An instance started now has the whole history at once.
    let mut later = instance(&url, &[]);
    later.wait_for("the late instance's history", |r| {
        history(r, "pg_a").is_some_and(|h| count(&h) == 200)
    });
    assert_eq!(export(&later, "pg_a"), csv);
    assert!(
        later
            .get("/api/devices/pg_never/history")
            .is_some_and(|(s, _)| s == 404)
    );

    // The writer starts over (no memory of what it processed) and is handed the same
    // readings again, as after a crash before its input was committed: nothing is added.
    writer.stop();
    let writer = instance(&url, &[]);
    ingest(&writer, &first);
    ingest(&writer, &readings("pg_a", 201..211, None));
    later.wait_for("the ten new readings", |r| {
        history(r, "pg_a").is_some_and(|h| count(&h) == 210)
    });
    assert_eq!(rows(&pg), 310);
    assert_eq!(writer.metric("iot_history_db_duplicates_total", ""), 200.0);
    assert_eq!(pg.psql("SELECT sum(count) FROM iiot_rollup_1m"), "310");
}

#[test]
fn a_database_stopped_mid_run_stops_neither_processing_nor_alerting_and_then_catches_up() {
    let pg = PgServer::start();
    let mut writer = instance(&pg.url(), &[]);
    ingest(&writer, &readings("out_a", 1..51, None));
    writer.wait_for("50 rows in the database", |_| rows(&pg) == 50);
    pg.stop();
    // Hot readings while the database is down: processed, alerted, buffered.
    ingest(&writer, &readings("out_a", 51..101, Some(95.0)));
    writer.wait_for("an alert while the database is down", |r| {
        r.json("/api/alerts?device_id=out_a&status=active")
            .and_then(|v| Some(!v["items"].as_array()?.is_empty()))
            .unwrap_or(false)
    });
    writer.wait_for("the outage's readings buffered", |r| {
        r.metric("iot_history_db_buffered_rows", "") == 50.0
    });
    let (status, body) = writer.get("/ready").expect("/ready");
    assert_eq!(status, 200, "still ready: {body}");
    assert!(
        body.contains("degraded") && body.contains("history"),
        "{body}"
    );
    assert!(writer.metric("iot_history_db_write_errors_total", "") >= 1.0);
    pg.start_again();
    writer.wait_for("the outage's readings written", |_| rows(&pg) == 100);
    writer.wait_for("/ready without the reason", |r| {
        r.get("/ready")
            .is_some_and(|(_, b)| b.contains("\"ready\""))
    });
    assert_eq!(writer.metric("iot_history_db_lost_total", ""), 0.0);
    assert_eq!(writer.metric("iot_history_db_buffered_rows", ""), 0.0);
    let h = history(&writer, "out_a").expect("history");
    assert_eq!(count(&h), 100);
    let max = h["points"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["max"].as_f64())
        .fold(f64::MIN, f64::max);
    assert_eq!(max, 95.0);
}

#[test]
fn readings_spooled_while_the_database_is_down_survive_a_sigkill_and_arrive_once() {
    let pg = PgServer::start();
    let data = support::role::fresh_data_dir("pg-spool");
    let data = data.to_str().unwrap();
    let mut writer = instance(&pg.url(), &[("DATA_DIR", data)]);
    ingest(&writer, &readings("kill_a", 1..51, None));
    writer.wait_for("50 rows in the database", |_| rows(&pg) == 50);
    pg.stop();
    // Accepted, processed (input done with) and spooled while the database is down.
    ingest(&writer, &readings("kill_a", 51..151, None));
    writer.wait_for("the outage's readings spooled", |r| {
        r.metric("iot_history_db_buffered_rows", "") == 100.0
            && r.metric("iot_history_db_spool_bytes", "") > 0.0
    });
    let (status, body) = writer.get("/ready").expect("/ready");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("degraded"), "{body}");
    drop(writer); // SIGKILL: no shutdown, no last retry.
    pg.start_again();
    let mut writer = instance(&pg.url(), &[("DATA_DIR", data)]);
    writer.wait_for("the spooled readings written after the restart", |_| {
        rows(&pg) == 150
    });
    writer.wait_for("/ready without the reason", |r| {
        r.get("/ready")
            .is_some_and(|(_, b)| b.contains("\"ready\""))
    });
    assert_eq!(
        writer.metric("iot_history_db_rows_written_total", ""),
        100.0
    );
    assert_eq!(writer.metric("iot_history_db_lost_total", ""), 0.0);
    assert_eq!(writer.metric("iot_history_db_buffered_rows", ""), 0.0);
    assert_eq!(writer.metric("iot_history_db_spool_bytes", ""), 0.0);
    assert_eq!(pg.psql("SELECT sum(count) FROM iiot_rollup_1m"), "150");
    assert_eq!(
        pg.psql("SELECT count(DISTINCT seq) FROM iiot_readings WHERE device_id = 'kill_a'"),
        "150"
    );
}

#[test]
fn a_bad_database_url_is_one_line_and_exit_code_2_without_the_password() {
    let out = support::role::iiot_command("pg-url")
        .args(["run", "--history-database-url", "mysql://u:hunter2@h/db"])
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .output()
        .expect("run iiot");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("HISTORY_DATABASE_URL"), "{err}");
    assert!(!err.contains("hunter2"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
}

/// On Kafka (a private tansu per test): two `iiot process` members write, two `iiot serve`
/// read, one of them started after the readings were written; both answer the same history
/// and export, and the database holds each (device, seq) once.
#[cfg(feature = "kafka")]
#[test]
fn on_kafka_two_processors_write_each_reading_once_and_two_serves_agree() {
    use iiot_kafka::testing::TestBroker;
    use support::role::simulate;

    let pg = PgServer::start();
    let url = pg.url();
    let broker = TestBroker::start(&[]);
    let env = [("HISTORY_DATABASE_URL", url.as_str()), ("HISTORY", "off")];
    let mut first = Role::start(&["serve"], &broker.brokers, &env);
    first.wait_for("serve ready", Role::ready);
    let mut members: Vec<Role> = (0..2)
        .map(|_| Role::start(&["process"], &broker.brokers, &env))
        .collect();
    for m in &mut members {
        m.wait_for("process ready", Role::ready);
    }
    let sim = simulate(&broker.brokers, "20", "250ms", "8s", "7", &[]);
    let status = sim.wait_exit();
    assert!(status.success(), "simulate: {status:?}");
    first.wait_for("every device in the database", |_| {
        pg.psql("SELECT count(*) FROM iiot_devices") == "20"
    });
    // Each (device, seq) once, whichever member wrote it.
    let stable = |pg: &PgServer| pg.psql("SELECT count(*) FROM iiot_readings");
    let mut last = String::new();
    first.wait_for("the members to finish writing", |_| {
        let now = stable(&pg);
        let done = now == last;
        last = now;
        std::thread::sleep(std::time::Duration::from_millis(500));
        done
    });
    assert_eq!(
        pg.psql("SELECT count(*) - count(DISTINCT (device_id, seq)) FROM iiot_readings"),
        "0"
    );
    let written: f64 = members
        .iter()
        .map(|m| m.metric("iot_history_db_rows_written_total", ""))
        .sum();
    assert_eq!(
        written.to_string(),
        last,
        "members' counters add up to the rows"
    );
    let device = pg.psql("SELECT device_id FROM iiot_devices ORDER BY 1 LIMIT 1");
    let mut second = Role::start(&["serve"], &broker.brokers, &env);
    second.wait_for("second serve ready", Role::ready);
    let total: u64 = pg
        .psql(&format!(
            "SELECT count(*) FROM iiot_readings WHERE device_id = '{device}'"
        ))
        .parse()
        .unwrap();
    assert!(total > 0);
    for s in [&first, &second] {
        let h = history(s, &device).expect("history");
        assert_eq!(count(&h), total);
    }
    assert_eq!(export(&first, &device), export(&second, &device));
    assert_eq!(export(&second, &device).lines().count() as u64, total + 1);
}

/// The Grafana history dashboard's SQL (monitoring/grafana/dashboards/iiot-history.json), with
/// Grafana's macros filled in, runs against the schema the binary migrates and finds the
/// readings an instance wrote.
#[test]
fn the_grafana_history_panels_query_the_real_schema() {
    let pg = PgServer::start();
    let writer = instance(&pg.url(), &[]);
    ingest(&writer, &readings("graf", 1..121, Some(42.5)));
    let mut writer = writer;
    writer.wait_for("rows written", |_| rows(&pg) == 120);
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../monitoring/grafana/dashboards/iiot-history.json"
    );
    let dashboard: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let now_s = iiot::now_ms() / 1000;
    let fill = |sql: &str| {
        sql.replace("$device", "'graf'")
            .replace("$__unixEpochFrom()", &(now_s - 86_400).to_string())
            .replace("$__unixEpochTo()", &(now_s + 60).to_string())
    };
    let variable = dashboard["templating"]["list"][0]["query"]
        .as_str()
        .unwrap();
    assert!(pg.psql(&fill(variable)).lines().any(|l| l == "graf"));
    let panels = dashboard["panels"].as_array().unwrap();
    assert!(!panels.is_empty());
    for panel in panels {
        assert_eq!(panel["datasource"]["uid"], "iiot-history");
        let sql = panel["targets"][0]["rawSql"].as_str().unwrap();
        let out = pg.psql(&fill(sql));
        assert!(!out.is_empty(), "{}: no rows", panel["title"]);
        assert!(out.contains("42.5"), "{}: {out}", panel["title"]);
    }
}

/// The database password, in the URL or in `HISTORY_DATABASE_PASSWORD_FILE`, is used and never
/// shown: not by `/config`, not in the log.
#[test]
fn the_database_password_is_never_shown() {
    let pg = PgServer::start();
    // Trust authentication accepts any password: what is checked is where it appears.
    let in_url = format!("postgres://postgres:url-s3cret@127.0.0.1:{}/iiot", pg.port);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pw");
    std::fs::write(&file, "file-s3cret\n").unwrap();
    let env = [("HISTORY_DATABASE_PASSWORD_FILE", file.to_str().unwrap())];
    for (url, secret, env) in [
        (in_url.as_str(), "url-s3cret", &[][..]),
        (&pg.url(), "file-s3cret", &env[..]),
    ] {
        let mut role = instance(url, env);
        ingest(&role, &readings("pw", 1..3, None));
        role.wait_for("rows written", |_| rows(&pg) == 2);
        let (status, config) = role.get("/config").expect("/config");
        assert_eq!(status, 200);
        assert!(!config.contains(secret), "{config}");
        assert!(config.contains("\"database_url\":\"***\""), "{config}");
        assert!(!role.log_text().contains(secret));
        role.stop();
        pg.psql("TRUNCATE iiot_readings, iiot_rollup_1m, iiot_rollup_1h, iiot_devices");
    }
}
