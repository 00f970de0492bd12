//! History as a whole: what a restart gives back, what queries answer, in a temp directory.

use std::time::Duration;

use iiot_model::{AlertStatus, Parameter};

use super::{History, HistoryConfig, OpenError};
use crate::test_support::{alert, decode_valid, reading};

const SEC: i64 = 1_000;

fn config(dir: &std::path::Path) -> HistoryConfig {
    HistoryConfig {
        flush_interval: Duration::from_millis(20),
        ..HistoryConfig::in_dir(dir)
    }
}

/// Appends `n` readings of `device` 5 s apart, the last at `last`; temperature = 20 + k/100.
fn fill(h: &History, device: &str, n: i64, last: i64) {
    for k in 0..n {
        let json = reading(
            device,
            k as u64,
            last - (n - 1 - k) * 5 * SEC,
            20.0 + k as f64 / 100.0,
        );
        let text = std::str::from_utf8(&json).expect("utf-8");
        h.append(&decode_valid(&json, last), text);
    }
}

fn total(points: &[crate::store::HistoryPoint]) -> u32 {
    points.iter().map(|p| p.count).sum()
}

#[test]
fn a_reopened_history_answers_every_tier_and_knows_its_devices() {
    let dir = tempfile::tempdir().expect("dir");
    let now = crate::now_ms();
    {
        let (h, restored) = History::open(config(dir.path())).expect("open");
        assert!(restored.latest.is_empty());
        for d in ["d1", "d2", "d3"] {
            fill(&h, d, 120, now);
        }
        // Before any seal: answered from memory.
        assert_eq!(h.raw("d2", now - 3_600 * SEC, now).expect("raw").len(), 120);
        h.close();
    }
    let (h, restored) = History::open(config(dir.path())).expect("reopen");
    assert_eq!(restored.latest.len(), 3);
    assert_eq!(restored.replayed, 0, "a clean stop seals everything");
    assert!(h.knows("d1") && !h.knows("d9"));
    let raw = h.raw("d2", now - 3_600 * SEC, now).expect("raw");
    assert_eq!(raw.len(), 120);
    assert_eq!(raw[0].value(Parameter::Temperature), 20.0);
    assert_eq!(raw[119].value(Parameter::Temperature), 21.19);
    assert_eq!(raw[119].t, now);
    let t = Parameter::Temperature;
    for (range, label) in [
        (3_600 * SEC, "raw"),
        (86_400 * SEC, "1m"),
        (30 * 86_400 * SEC, "1h"),
    ] {
        let points = h
            .history("d2", t, now - range, now, 300, now)
            .expect("history");
        assert_eq!(total(&points), 120, "{label}");
        let min = points.iter().map(|p| p.min).fold(f64::MAX, f64::min);
        let max = points.iter().map(|p| p.max).fold(f64::MIN, f64::max);
        assert_eq!((min, max), (20.0, 21.19), "{label}");
    }
    assert!(h.raw("d2", now, now - 1).is_err());
}

#[test]
fn a_second_open_is_refused_and_a_file_is_not_a_directory() {
    let dir = tempfile::tempdir().expect("dir");
    let (_h, _) = History::open(config(dir.path())).expect("open");
    assert!(matches!(
        History::open(config(dir.path())),
        Err(OpenError::Locked(_))
    ));
    let file = dir.path().join("plain");
    std::fs::write(&file, b"x").expect("file");
    let err = History::open(config(&file)).expect_err("a file");
    assert!(
        err.to_string()
            .starts_with("invalid configuration: DATA_DIR="),
        "{err}"
    );
}

#[test]
fn duplicates_are_kept_once_and_late_readings_join_their_minute() {
    let dir = tempfile::tempdir().expect("dir");
    let now = crate::now_ms();
    let minute = (now - 600 * SEC).div_euclid(60 * SEC) * 60 * SEC;
    let at = |k: i64, temperature: f64| reading("d1", k as u64, minute + k * 10 * SEC, temperature);
    {
        let (h, _) = History::open(config(dir.path())).expect("open");
        for k in [0, 1, 2, 2, 3] {
            let json = at(k, 30.0 + k as f64);
            h.append(
                &decode_valid(&json, now),
                std::str::from_utf8(&json).expect("utf-8"),
            );
        }
        h.close();
    }
    {
        // A late reading of the same minute, in a later segment.
        let (h, _) = History::open(config(dir.path())).expect("reopen");
        let json = at(5, 10.0);
        h.append(
            &decode_valid(&json, now),
            std::str::from_utf8(&json).expect("utf-8"),
        );
        h.close();
    }
    let (h, _) = History::open(config(dir.path())).expect("reopen");
    assert_eq!(
        h.raw("d1", minute, minute + 60 * SEC).expect("raw").len(),
        5
    );
    // One-minute buckets over a day: the minute counts 5 readings (the duplicate once).
    let points = h
        .history(
            "d1",
            Parameter::Temperature,
            now - 86_400 * SEC,
            now,
            1_440,
            now,
        )
        .expect("history");
    let bucket = points.iter().find(|p| p.t == minute).expect("the minute");
    assert_eq!((bucket.count, bucket.min, bucket.max), (5, 10.0, 33.0));
    assert_eq!(bucket.avg, (30.0 + 31.0 + 32.0 + 33.0 + 10.0) / 5.0);
}

#[test]
fn alerts_come_back_with_their_ids_and_statuses() {
    let dir = tempfile::tempdir().expect("dir");
    {
        let (h, _) = History::open(config(dir.path())).expect("open");
        let open = alert("d1", "temperature_high");
        let mut acked = alert("d2", "temperature_high");
        h.append_alert(&serde_json::to_vec(&acked).expect("json"));
        acked.status = AlertStatus::Acknowledged;
        acked.timestamp += 1;
        h.append_alert(&serde_json::to_vec(&acked).expect("json"));
        let mut gone = alert("d3", "battery_low");
        h.append_alert(&serde_json::to_vec(&gone).expect("json"));
        gone.status = AlertStatus::Resolved;
        gone.timestamp += 5;
        h.append_alert(&serde_json::to_vec(&gone).expect("json"));
        h.append_alert(&serde_json::to_vec(&open).expect("json"));
        h.close();
    }
    let (_h, restored) = History::open(config(dir.path())).expect("reopen");
    assert_eq!(restored.alerts.len(), 3);
    let status = |device: &str| {
        restored
            .alerts
            .iter()
            .find(|a| a.device_id == device)
            .map(|a| a.status)
    };
    assert_eq!(status("d2"), Some(AlertStatus::Acknowledged));
    assert_eq!(status("d3"), Some(AlertStatus::Resolved));
    assert_eq!(restored.open.len(), 2, "d1 and d2 have open alerts");
    assert_eq!(
        restored.open["d1"][0].0.alert_id,
        "alert_d1_temperature_high"
    );
}
