//! History on disk (`DATA_DIR`) as an operator meets it, with the `iiot` binary as a child
//! process on the embedded bus: what a clean restart and a crash (SIGKILL) keep, a torn or
//! corrupt write-ahead log, retention by whole segments, late and repeated readings counted
//! once, a full disk that the process survives and recovers from by itself, and a directory
//! that cannot be used (exit 2).
//!
//! Readings go in through `POST /api/ingest` with `SIMULATOR=off`, so that each test knows
//! exactly which readings (and event times) history must hold.

mod support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use support::readings::{SITE_A, Values, reading_json};
use support::role::{PATIENCE, Role, free_port, log_field, work_dir};

/// The flush interval the tests run with.
const FLUSH: Duration = Duration::from_millis(200);

/// A fresh directory for one test's history (not created: `iiot` creates it).
fn data_dir(tag: &str) -> PathBuf {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = work_dir("history").join(format!("{tag}-{n}-{}", support::role::nanos()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// `iiot run` without its simulator on `dir`, flushing every [`FLUSH`], with `env` besides;
/// waits for `/ready`.
fn start(dir: &Path, env: &[(&str, &str)]) -> Role {
    let dir = dir.to_str().expect("utf-8 path");
    let mut all = vec![
        ("SIMULATOR", "off"),
        ("DATA_DIR", dir),
        ("HISTORY_FLUSH_INTERVAL", "200ms"),
    ];
    all.extend_from_slice(env);
    let mut role = Role::embedded(&["run"], &all);
    role.wait_for("/ready 200", Role::ready);
    role
}

/// Reading `seq` of `device` at `t` with the values of the test series number `seq`.
fn reading(device: &str, seq: u64, t: i64) -> String {
    reading_json(device, seq, t, Values::of(seq), SITE_A)
}

/// [`reading`] with a chosen temperature.
fn reading_at(device: &str, seq: u64, t: i64, temperature: f64) -> String {
    let v = Values {
        temperature,
        ..Values::of(seq)
    };
    reading_json(device, seq, t, v, SITE_A)
}

/// POSTs `readings` as one JSON array; all of them must be accepted.
fn ingest(role: &Role, readings: &[String]) {
    let body = format!("[{}]", readings.join(","));
    let (status, text) = role
        .post_body("/api/ingest", body.as_bytes())
        .unwrap_or_else(|| panic!("no answer to POST /api/ingest; log:\n{}", role.log_text()));
    assert_eq!(status, 202, "{text}");
    let answer: Value = serde_json::from_str(&text).expect("JSON");
    assert_eq!(
        answer["accepted"],
        readings.len(),
        "all readings accepted: {text}"
    );
}

/// The event times of the export of `device` over `[from, to]` (JSON), in order.
fn export_times(role: &Role, device: &str, from: i64, to: i64) -> Vec<i64> {
    export(role, device, from, to)
        .iter()
        .map(|row| row["timestamp"].as_i64().expect("timestamp"))
        .collect()
}

/// The export of `device` over `[from, to]` (JSON rows); empty while the device is unknown.
fn export(role: &Role, device: &str, from: i64, to: i64) -> Vec<Value> {
    let path = format!("/api/devices/{device}/export?format=json&from={from}&to={to}");
    match role.get(&path) {
        Some((200, body)) => {
            serde_json::from_str::<Vec<Value>>(&body).unwrap_or_else(|e| panic!("{e}: {body}"))
        }
        Some((404, _)) | None => Vec::new(),
        Some((status, body)) => panic!("{path}: {status} {body}"),
    }
}

/// `/history` of `device`'s temperature over `[from, to]` in at most `points` buckets.
fn history(role: &Role, device: &str, from: i64, to: i64, points: usize) -> Value {
    let path = format!(
        "/api/devices/{device}/history?sensor=temperature&from={from}&to={to}&points={points}"
    );
    match role.get(&path) {
        Some((200, body)) => serde_json::from_str(&body).expect("JSON"),
        other => panic!("{path}: {other:?}; log:\n{}", role.log_text()),
    }
}

/// The sum of the `count` fields of a `/history` answer.
fn history_count(answer: &Value) -> u64 {
    answer["points"]
        .as_array()
        .expect("points")
        .iter()
        .map(|p| p["count"].as_u64().expect("count"))
        .sum()
}

/// The alerts of `device` (all statuses).
fn alerts_of(role: &Role, device: &str) -> Vec<Value> {
    role.json(&format!("/api/alerts?device_id={device}"))
        .and_then(|v| v["items"].as_array().cloned())
        .unwrap_or_default()
}

/// The `temperature_high` alerts of `device`.
fn hot_alerts(role: &Role, device: &str) -> Vec<Value> {
    alerts_of(role, device)
        .into_iter()
        .filter(|a| a["alert_type"] == "temperature_high")
        .collect()
}

/// The `seq` of `device`'s latest reading in the live view.
fn latest_seq(role: &Role, device: &str) -> Option<u64> {
    role.json(&format!("/api/devices/{device}"))?["latest"]["seq"].as_u64()
}

fn rows_written(role: &Role) -> f64 {
    role.metric("iot_history_rows_written_total", "")
}

/// SIGKILL: no shutdown, no last flush.
fn kill(mut role: Role) -> String {
    role.child.kill().expect("SIGKILL");
    let status = role.child.wait().expect("wait");
    assert!(!status.success(), "killed: {status}");
    role.log_text()
}

/// Polls `cond` every 100 ms until it holds, failing with `what` after [`PATIENCE`].
fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_restart_keeps_history_devices_and_alerts_with_their_ids() {
    let dir = data_dir("restart");
    let mut role = start(&dir, &[]);
    let now = iiot::now_ms();
    let base = now - 60_000;
    let series: Vec<String> = (1..=20)
        .map(|i| reading("hist_1", i, base + i as i64 * 2_000))
        .collect();
    ingest(&role, &series);
    // Two devices too hot: one alert stays open, the other is acknowledged.
    ingest(
        &role,
        &[
            reading_at("hot_open", 1, now - 1_000, 95.0),
            reading_at("hot_ack", 1, now - 1_000, 95.0),
        ],
    );
    role.wait_for("both temperature alerts", |r| {
        hot_alerts(r, "hot_open").len() == 1 && hot_alerts(r, "hot_ack").len() == 1
    });
    let open = hot_alerts(&role, "hot_open").remove(0);
    assert_eq!(open["status"], "active", "{open}");
    let acked_id = hot_alerts(&role, "hot_ack")[0]["alert_id"]
        .as_str()
        .expect("id")
        .to_owned();
    let (status, body) = role
        .post(&format!("/api/alerts/{acked_id}/ack"))
        .expect("an answer");
    assert_eq!(status, 200, "{body}");

    let (from, to) = (base, now + 1_000);
    role.wait_for("the 20 readings in the export", |r| {
        export_times(r, "hist_1", from, to).len() == 20
    });
    let exported = export(&role, "hist_1", from, to);
    let points = history(&role, "hist_1", from, to, 30);
    assert_eq!(history_count(&points), 20, "{points}");
    // The acknowledgement is an alert change: it must be in the log before the stop.
    role.wait_for("the acknowledgement in the store", |r| {
        hot_alerts(r, "hot_ack")[0]["status"] == "acknowledged"
    });
    let status = role.stop();
    assert!(status.success(), "clean stop: {status}");

    let mut role = start(&dir, &[]);
    assert_eq!(
        export(&role, "hist_1", from, to),
        exported,
        "the same export rows after the restart"
    );
    assert_eq!(
        history(&role, "hist_1", from, to, 30)["points"],
        points["points"],
        "the same history points after the restart"
    );
    let devices = role.json("/api/devices").expect("device list");
    let listed: Vec<&str> = devices["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|d| d["device_id"].as_str())
        .collect();
    for id in ["hist_1", "hot_open", "hot_ack"] {
        assert!(
            listed.contains(&id),
            "{id} listed after the restart: {devices}"
        );
    }
    let after = hot_alerts(&role, "hot_open");
    assert_eq!(after.len(), 1, "{after:?}");
    assert_eq!(after[0]["alert_id"], open["alert_id"], "same alert id");
    assert_eq!(after[0]["status"], "active", "{after:?}");
    let after = hot_alerts(&role, "hot_ack");
    assert_eq!(after.len(), 1, "{after:?}");
    assert_eq!(after[0]["alert_id"], acked_id.as_str(), "same alert id");
    assert_eq!(after[0]["status"], "acknowledged", "{after:?}");

    // Still too hot: the processors know the alerts are open, so none is raised again.
    let t = iiot::now_ms();
    ingest(
        &role,
        &[
            reading_at("hot_open", 2, t, 96.0),
            reading_at("hot_ack", 2, t, 96.0),
        ],
    );
    role.wait_for("the new readings in the live view", |r| {
        latest_seq(r, "hot_open") == Some(2) && latest_seq(r, "hot_ack") == Some(2)
    });
    let after = hot_alerts(&role, "hot_open");
    assert_eq!(
        after.len(),
        1,
        "one temperature alert, not a second one: {after:?}"
    );
    assert_eq!(after[0]["alert_id"], open["alert_id"]);
    assert_eq!(after[0]["status"], "active");
    let after = hot_alerts(&role, "hot_ack");
    assert_eq!(
        after.len(),
        1,
        "one temperature alert, not a second one: {after:?}"
    );
    assert_eq!(after[0]["alert_id"], acked_id.as_str());
    assert_eq!(after[0]["status"], "acknowledged");
    let open_list = role
        .json("/api/alerts?status=active&device_id=hot_open")
        .expect("alerts");
    assert_eq!(
        open_list["items"].as_array().map(Vec::len),
        Some(1),
        "{open_list}"
    );
    assert!(role.stop().success());
}

#[test]
fn after_a_crash_what_was_flushed_is_kept_and_replayed() {
    let dir = data_dir("crash");
    let role = start(&dir, &[]);
    // One reading per request, as fast as they are taken, for a few seconds; then SIGKILL.
    let mut accepted: Vec<(i64, Instant)> = Vec::new();
    let started = Instant::now();
    let mut seq = 0;
    while started.elapsed() < Duration::from_secs(4) {
        seq += 1;
        let t = iiot::now_ms();
        ingest(&role, &[reading("crash_1", seq, t)]);
        accepted.push((t, Instant::now()));
        std::thread::sleep(Duration::from_millis(10));
    }
    let killed_at = Instant::now();
    kill(role);
    // Accepted, processed and flushed: an ingest round trip through the bus and the
    // processors takes well under a second even on a loaded machine.
    let margin = FLUSH + Duration::from_millis(1_500);
    let must_keep: Vec<i64> = accepted
        .iter()
        .filter(|(_, at)| *at + margin < killed_at)
        .map(|(t, _)| *t)
        .collect();
    assert!(
        must_keep.len() >= 10,
        "only {} readings before the margin",
        must_keep.len()
    );

    let role = start(&dir, &[]);
    let log = role.log_text();
    let replayed = log_field(&log, "history recovered", "replayed_readings")
        .unwrap_or_else(|| panic!("no \"history recovered\" line with replayed_readings:\n{log}"));
    assert!(replayed > 0, "replayed_readings={replayed}:\n{log}");
    let first = accepted[0].0;
    let kept: BTreeSet<i64> = export_times(&role, "crash_1", first - 1, iiot::now_ms())
        .into_iter()
        .collect();
    let lost: Vec<&i64> = must_keep.iter().filter(|t| !kept.contains(t)).collect();
    assert!(
        lost.is_empty(),
        "{} of {} readings flushed before the kill are missing (first {:?}); {} kept, \
         {replayed} replayed",
        lost.len(),
        must_keep.len(),
        lost.first(),
        kept.len()
    );
    assert!(kept.len() <= accepted.len());
    assert!(role.stop().success());
}

/// One frame of the write-ahead log: where it starts and ends, and its readings' event times.
#[derive(Debug)]
struct Frame {
    start: usize,
    end: usize,
    times: Vec<i64>,
}

/// The frames of a log (`[len u32 LE][crc32 u32 LE][payload]`, the payload a kind byte 1 and
/// `[id len u16 LE][id][row]` per reading, the row starting with its event time as i64 LE).
fn frames(bytes: &[u8]) -> Vec<Frame> {
    const ROW: usize = 34;
    let mut out = Vec::new();
    let mut at = 0;
    while at + 8 <= bytes.len() {
        let len = u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes")) as usize;
        let payload = &bytes[at + 8..at + 8 + len];
        assert_eq!(payload[0], 1, "a readings frame");
        let mut rest = &payload[1..];
        let mut times = Vec::new();
        while !rest.is_empty() {
            let id_len = u16::from_le_bytes([rest[0], rest[1]]) as usize;
            let row = &rest[2 + id_len..];
            times.push(i64::from_le_bytes(row[..8].try_into().expect("8 bytes")));
            rest = &row[ROW..];
        }
        out.push(Frame {
            start: at,
            end: at + 8 + len,
            times,
        });
        at += 8 + len;
    }
    assert_eq!(at, bytes.len(), "whole frames");
    out
}

/// The newest `wal/*.wal` of `dir`.
fn newest_wal(dir: &Path) -> PathBuf {
    let mut logs: Vec<PathBuf> = std::fs::read_dir(dir.join("wal"))
        .expect("wal dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "wal"))
        .collect();
    logs.sort();
    logs.pop().expect("a write-ahead log")
}

#[derive(Debug, Clone, Copy)]
enum Damage {
    /// Garbage after the last frame.
    Garbage,
    /// Bytes flipped inside a frame in the middle.
    Flipped,
    /// The file cut off inside the last frame.
    Truncated,
}

/// Writes readings in several flushes (several frames), SIGKILLs, damages the newest log as
/// `damage` says, restarts: the readings of the frames before the damage are kept.
fn damaged_log(damage: Damage) {
    let dir = data_dir(&format!("{damage:?}").to_lowercase());
    let role = start(&dir, &[]);
    let base = iiot::now_ms() - 30_000;
    let mut seq = 0;
    for batch in 0..5 {
        let readings: Vec<String> = (0..3)
            .map(|_| {
                seq += 1;
                reading("torn_1", seq, base + seq as i64 * 100)
            })
            .collect();
        ingest(&role, &readings);
        let written = f64::from(3 * (batch + 1));
        eventually("the batch in the log", || rows_written(&role) >= written);
    }
    kill(role);
    let path = newest_wal(&dir);
    let mut bytes = std::fs::read(&path).expect("log");
    let frames = frames(&bytes);
    assert!(frames.len() >= 3, "several frames: {frames:?}");
    let all: Vec<i64> = frames.iter().flat_map(|f| f.times.clone()).collect();
    assert_eq!(all.len(), 15, "{frames:?}");
    let kept: Vec<i64> = match damage {
        Damage::Garbage => {
            bytes.extend_from_slice(&[0xA5; 37]);
            bytes.extend_from_slice(b"not a frame at all");
            all.clone()
        }
        Damage::Flipped => {
            let mid = &frames[frames.len() / 2];
            let at = (mid.start + 8 + mid.end) / 2;
            bytes[at] ^= 0xFF;
            bytes[at + 1] ^= 0x5A;
            frames[..frames.len() / 2]
                .iter()
                .flat_map(|f| f.times.clone())
                .collect()
        }
        Damage::Truncated => {
            let last = frames.last().expect("a frame");
            bytes.truncate(last.start + (last.end - last.start) / 2);
            frames[..frames.len() - 1]
                .iter()
                .flat_map(|f| f.times.clone())
                .collect()
        }
    };
    assert!(!kept.is_empty());
    std::fs::write(&path, &bytes).expect("damage the log");

    let mut role = start(&dir, &[]);
    role.wait_for_log(
        "the warning about the skipped tail",
        "torn or corrupt end of the write-ahead log skipped",
    );
    let log = role.log_text();
    let skipped = log_field(&log, "history recovered", "skipped_bytes").expect("skipped_bytes");
    assert!(skipped > 0, "{log}");
    assert_eq!(
        export_times(&role, "torn_1", base, iiot::now_ms()),
        kept,
        "the readings of the frames before the damage, and only those"
    );
    // The widest range there is answers the same, at once (only the span history can hold
    // is walked, not every hour up to year 9999).
    let asked = Instant::now();
    assert_eq!(export_times(&role, "torn_1", 0, 253_402_300_799_999), kept);
    assert!(asked.elapsed() < PATIENCE, "an export of 1970..9999");
    // The repaired directory takes new readings and keeps them.
    let t = iiot::now_ms();
    ingest(&role, &[reading("torn_1", 100, t)]);
    role.wait_for("the new reading in the export", |r| {
        export_times(r, "torn_1", t, t) == vec![t]
    });
    assert!(role.stop().success());
}

#[test]
fn garbage_after_the_last_frame_of_the_log_is_skipped() {
    damaged_log(Damage::Garbage);
}

#[test]
fn a_corrupt_frame_in_the_middle_of_the_log_ends_it() {
    damaged_log(Damage::Flipped);
}

#[test]
fn a_log_cut_off_inside_a_frame_keeps_the_frames_before() {
    damaged_log(Damage::Truncated);
}

#[test]
fn raw_segments_expire_while_the_minute_rollups_still_answer() {
    let dir = data_dir("retention");
    let role = start(
        &dir,
        &[
            ("HISTORY_SEGMENT_SPAN", "1s"),
            ("HISTORY_RAW_RETENTION", "3s"),
            ("HISTORY_ROLLUP_1M_RETENTION", "1h"),
            ("HISTORY_ROLLUP_1H_RETENTION", "1d"),
        ],
    );
    let raw_segments = |r: &Role| r.metric("iot_history_segments", "tier=\"raw\"");
    // A reading every half second for ~16 s: ~16 seals of raw segments; retention (3 s,
    // applied every few seconds) keeps only the last few.
    let first = iiot::now_ms();
    let mut times = Vec::new();
    let mut most_raw = 0f64;
    let started = Instant::now();
    let mut seq = 0;
    while started.elapsed() < Duration::from_secs(16) {
        seq += 1;
        let t = iiot::now_ms();
        ingest(&role, &[reading("ret_1", seq, t)]);
        times.push(t);
        most_raw = most_raw.max(raw_segments(&role));
        std::thread::sleep(Duration::from_millis(500));
    }
    // ~16 s of 1 s segments is well over 10 seals; 3 s retention keeps about 3 to 9.
    assert!(most_raw >= 1.0, "raw segments were written");
    assert!(
        most_raw < 10.0,
        "raw segments kept growing: up to {most_raw} with 3 s retention and 1 s segments"
    );
    // Once everything is older than the raw retention, the raw tier is empty …
    eventually("every raw segment expired", || {
        raw_segments(&role) == 0.0 && role.metric("iot_history_bytes", "tier=\"raw\"") == 0.0
    });
    let now = iiot::now_ms();
    assert_eq!(
        export_times(&role, "ret_1", first - 1, now),
        Vec::<i64>::new(),
        "raw export after the raw retention"
    );
    // … while the one-minute rollups still hold every reading of the range.
    let from = first - 60_000;
    let answer = history(&role, "ret_1", from, now, 2);
    assert_eq!(
        history_count(&answer),
        times.len() as u64,
        "every reading counted once in the 1m rollups: {answer}"
    );
    assert!(role.metric("iot_history_segments", "tier=\"1m\"") > 0.0);
    assert!(role.stop().success());
}

/// Waits until what is pending is sealed into segments.
fn wait_sealed(role: &mut Role) {
    role.wait_for("a seal (no pending rows)", |r| {
        r.metric("iot_history_segments", "tier=\"raw\"") > 0.0
            && r.metric("iot_history_pending_rows", "") == 0.0
    });
}

#[test]
fn late_and_repeated_readings_are_counted_once() {
    let dir = data_dir("late");
    let span = [("HISTORY_SEGMENT_SPAN", "1s")];
    let mut role = start(&dir, &span);
    // Inside one minute, a few minutes ago.
    let minute = (iiot::now_ms() - 300_000).div_euclid(60_000) * 60_000;
    let (t1, t_late, t3) = (minute + 20_000, minute + 5_000, minute + 40_000);
    ingest(&role, &[reading("late_1", 1, t1)]);
    role.wait_for("the first reading", |r| latest_seq(r, "late_1") == Some(1));
    // The same reading again: its seq is a duplicate, dead-lettered.
    let (status, text) = role
        .post_body("/api/ingest", reading("late_1", 1, t1).as_bytes())
        .expect("an answer");
    assert_eq!(status, 202, "{text}");
    // The same event time again under the next seq (a gateway resending with a new number).
    ingest(&role, &[reading("late_1", 2, t1)]);
    // A late one: older event time, accepted as late.
    ingest(&role, &[reading("late_1", 3, t_late)]);
    ingest(&role, &[reading("late_1", 4, t3)]);
    role.wait_for("the last reading", |r| latest_seq(r, "late_1") == Some(4));
    // One device, one partition: seq 4 taken means the late seq 3 was taken before it.
    wait_sealed(&mut role);
    let expected = vec![t_late, t1, t3];
    let check = |role: &Role, when: &str| {
        assert_eq!(
            export_times(role, "late_1", minute - 60_000, minute + 120_000),
            expected,
            "each event time once in the export {when}"
        );
        // Buckets of a minute (three over three minutes): the one-minute rollups answer.
        let answer = history(role, "late_1", minute - 60_000, minute + 119_999, 3);
        let points = answer["points"].as_array().expect("points");
        assert_eq!(points.len(), 1, "one minute with readings {when}: {answer}");
        assert_eq!(points[0]["t"], minute, "{answer}");
        assert_eq!(points[0]["count"], 3, "each reading once {when}: {answer}");
    };
    check(&role, "before the restart");
    assert!(role.stop().success());

    let role = start(&dir, &span);
    check(&role, "after the restart");
    assert!(role.stop().success());
}

#[test]
fn a_reading_sent_again_after_a_restart_is_counted_once() {
    let dir = data_dir("again");
    let span = [("HISTORY_SEGMENT_SPAN", "1s")];
    let mut role = start(&dir, &span);
    let minute = (iiot::now_ms() - 300_000).div_euclid(60_000) * 60_000;
    let readings: Vec<String> = (1..=3)
        .map(|i| reading("again_1", i, minute + i as i64 * 10_000))
        .collect();
    ingest(&role, &readings);
    role.wait_for("the readings", |r| latest_seq(r, "again_1") == Some(3));
    wait_sealed(&mut role);
    assert!(role.stop().success());

    // A gateway that did not get its answer sends the same readings again, to the restarted
    // process (which no longer has them in memory), then a new one a minute later. No seal
    // during this run (the default span): the repeats wait in memory, then are sealed at stop.
    let role = start(&dir, &[]);
    ingest(&role, &readings);
    let t4 = minute + 65_000;
    ingest(&role, &[reading("again_1", 4, t4)]);
    let mut role = role;
    // One device, one partition: seq 4 taken means the repeats were taken before it.
    role.wait_for("the new reading", |r| latest_seq(r, "again_1") == Some(4));
    let mut times: Vec<i64> = (1..=3).map(|i| minute + i * 10_000).collect();
    times.push(t4);
    let check = |role: &Role, when: &str| {
        assert_eq!(
            export_times(role, "again_1", minute - 60_000, minute + 120_000),
            times,
            "each event time once in the export {when}"
        );
        let answer = history(role, "again_1", minute - 60_000, minute + 119_999, 3);
        let counts: Vec<(i64, u64)> = answer["points"]
            .as_array()
            .expect("points")
            .iter()
            .map(|p| (p["t"].as_i64().expect("t"), p["count"].as_u64().expect("n")))
            .collect();
        assert_eq!(
            counts,
            vec![(minute, 3), (minute + 60_000, 1)],
            "each reading once in the 1m rollups {when}: {answer}"
        );
    };
    check(&role, "before they are sealed");
    assert!(role.stop().success());
    let role = start(&dir, &span);
    check(&role, "once sealed, after another restart");
    assert!(role.stop().success());
}

/// A tmpfs mounted on a directory, unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(dir).expect("mount point");
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output()
            .unwrap_or_else(|e| panic!("cannot run mount: {e} (this test needs root and mount)"));
        assert!(
            out.status.success(),
            "mount -t tmpfs on {} failed ({}): {} — this test needs root (CAP_SYS_ADMIN) \
             to simulate a full disk",
            dir.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
        Tmpfs(dir.to_owned())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Writes zeros to `path` until the file system is full.
fn fill(path: &Path) {
    use std::io::Write as _;
    let mut f = std::fs::File::create(path).expect("filler");
    let block = vec![0u8; 64 * 1024];
    loop {
        match f.write(&block) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(28) => break, // ENOSPC
            Err(e) => panic!("filling the disk: {e}"),
        }
    }
    // Whatever is left of a partial block.
    while f.write(&[0u8; 512]).is_ok_and(|n| n > 0) {}
    while f.write(&[0u8; 1]).is_ok_and(|n| n > 0) {}
}

#[test]
fn a_full_disk_degrades_history_and_writing_resumes_when_space_is_back() {
    let mount = data_dir("full");
    let guard = Tmpfs::mount(&mount, "2m");
    let dir = guard.0.join("data");
    let filler = guard.0.join("filler");
    let mut role = start(&dir, &[("HISTORY_SEGMENT_SPAN", "2s")]);
    let base = iiot::now_ms() - 120_000;
    let seq = std::cell::Cell::new(0u64);
    let batch = |role: &Role, n: u64| -> Vec<i64> {
        let readings: Vec<(String, i64)> = (0..n)
            .map(|_| {
                seq.set(seq.get() + 1);
                let t = base + seq.get() as i64 * 10;
                (reading("full_1", seq.get(), t), t)
            })
            .collect();
        let texts: Vec<String> = readings.iter().map(|(r, _)| r.clone()).collect();
        ingest(role, &texts);
        readings.into_iter().map(|(_, t)| t).collect()
    };
    let mut sent = batch(&role, 10);
    role.wait_for("the first readings written", |r| rows_written(r) >= 10.0);
    let ready_status = |r: &Role| -> Option<String> {
        let (code, body) = r.get("/ready")?;
        assert_eq!(code, 200, "/ready stays 200 (the live view works): {body}");
        let v: Value = serde_json::from_str(&body).ok()?;
        v["status"].as_str().map(str::to_owned)
    };
    assert_eq!(ready_status(&role).as_deref(), Some("ready"));

    fill(&filler);
    // Keep ingesting until history notices: the first write into a new page fails.
    let deadline = Instant::now() + PATIENCE;
    while role.metric("iot_history_write_errors_total", "") == 0.0 {
        assert!(
            Instant::now() < deadline,
            "no write errors on a full disk; log:\n{}",
            role.log_text()
        );
        sent.extend(batch(&role, 20));
        std::thread::sleep(Duration::from_millis(100));
    }
    let errors = role.metric("iot_history_write_errors_total", "");
    // More readings while the disk is full: taken, shown live, errors grow.
    sent.extend(batch(&role, 20));
    let last_seq = seq.get();
    role.wait_for("the live view during the outage", |r| {
        latest_seq(r, "full_1") == Some(last_seq)
    });
    role.wait_for("more write errors", |r| {
        r.metric("iot_history_write_errors_total", "") > errors
    });
    role.wait_for("/ready degraded", |r| {
        let Some((200, body)) = r.get("/ready") else {
            return false;
        };
        let v: Value = serde_json::from_str(&body).unwrap_or_default();
        v["status"] == "degraded"
            && v["error"]
                .as_str()
                .is_some_and(|e| e.starts_with("history: "))
    });
    assert!(
        role.child.try_wait().expect("try_wait").is_none(),
        "still running"
    );

    std::fs::remove_file(&filler).expect("delete the filler");
    role.wait_for("/ready back to ready", |r| {
        ready_status(r).as_deref() == Some("ready")
    });
    // Errors stop growing.
    let errors = role.metric("iot_history_write_errors_total", "");
    sent.extend(batch(&role, 5));
    let total = sent.len() as f64;
    role.wait_for("every reading written", |r| rows_written(r) >= total);
    std::thread::sleep(FLUSH * 5);
    assert_eq!(
        role.metric("iot_history_write_errors_total", ""),
        errors,
        "no more write errors once there is space; log:\n{}",
        role.log_text()
    );
    role.wait_for("every reading in the export", |r| {
        export_times(r, "full_1", base, iiot::now_ms()) == sent
    });
    assert!(role.stop().success());
    drop(guard);
}

/// `iiot run` on `dir`, expected to refuse it: its exit status and stderr.
fn refused_run(dir: &Path) -> (std::process::ExitStatus, String) {
    let mut cmd = support::role::iiot_command("history-refused");
    let mut child = cmd
        .arg("run")
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("SIMULATOR", "off")
        .env("DATA_DIR", dir)
        .env("HTTP_PORT", free_port().to_string())
        .env("WEBSOCKET_PORT", free_port().to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start iiot");
    let deadline = Instant::now() + PATIENCE;
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("iiot on {} did not exit", dir.display());
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    use std::io::Read as _;
    child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut stderr)
        .expect("read stderr");
    (status, stderr)
}

fn assert_one_line_about_data_dir(stderr: &str) {
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one line on stderr: {stderr:?}");
    assert!(lines[0].contains("DATA_DIR"), "{stderr:?}");
}

#[test]
fn a_data_dir_in_use_or_not_a_directory_exits_2() {
    let dir = data_dir("locked");
    let first = start(&dir, &[]);
    let (status, stderr) = refused_run(&dir);
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert_one_line_about_data_dir(&stderr);
    assert!(stderr.contains("in use"), "{stderr}");
    // The first one is unharmed.
    assert!(first.ready());
    assert!(first.stop().success());

    let file = data_dir("a-file");
    std::fs::write(&file, b"not a directory").expect("file");
    let (status, stderr) = refused_run(&file);
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert_one_line_about_data_dir(&stderr);
}

#[test]
fn history_answers_stay_whole_while_rollup_segments_are_merged() {
    let dir = data_dir("merge");
    // One-second seals: twelve of them are merged into one every few seconds.
    let mut role = start(&dir, &[("HISTORY_SEGMENT_SPAN", "1s")]);
    let first = iiot::now_ms();
    let port = role.http_port;
    let stop = std::sync::atomic::AtomicBool::new(false);
    let sent = std::sync::atomic::AtomicU64::new(0);
    let path = format!(
        "/api/devices/merge_1/history?sensor=temperature&from={}&to={}&points=1",
        first - 60_000,
        first + 600_000
    );
    let drops = std::thread::scope(|s| {
        let reader = s.spawn(|| {
            // Counts only grow: nothing expires within the hour kept; a smaller count than
            // the one before is a reading missed by an answer.
            let (mut last, mut drops) = (0u64, Vec::new());
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                if let Some((200, body)) = support::http::http_get(port, &path) {
                    let answer: Value = serde_json::from_str(&body).expect("JSON");
                    let n = history_count(&answer);
                    if n < last {
                        drops.push((last, n));
                    }
                    last = last.max(n);
                }
            }
            drops
        });
        let mut seq = 0;
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(30) {
            seq += 1;
            ingest(&role, &[reading("merge_1", seq, iiot::now_ms())]);
            sent.store(seq, std::sync::atomic::Ordering::Relaxed);
            std::thread::sleep(Duration::from_millis(100));
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        reader.join().expect("reader")
    });
    assert!(drops.is_empty(), "answers that missed readings: {drops:?}");
    let total = sent.load(std::sync::atomic::Ordering::Relaxed);
    role.wait_for("every reading in the 1m rollups", |r| {
        r.get(&path)
            .and_then(|(_, b)| serde_json::from_str::<Value>(&b).ok())
            .is_some_and(|a| history_count(&a) == total)
    });
    assert!(role.stop().success());
}
