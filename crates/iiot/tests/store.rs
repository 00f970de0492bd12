//! The live store through its public API: latest readings, history ranges, status, filters,
//! alerts, bounds and memory.

mod support;

use std::borrow::Cow;
use std::time::Duration;

use iiot::store::{
    AlertFilter, DeviceFilter, DeviceStatus, HistoryPoint, Store, StoreConfig, StoreError,
};
use iiot_model::{
    Alert, AlertStatus, Operator, Parameter, Reading, SensorStatus, Severity, Threshold,
};
use support::readings::reading;

/// 2023-11-14T22:10:00Z: the start of a 5-minute rollup bucket.
const T0: i64 = 1_699_999_800_000;
const SEC: i64 = 1_000;
const MIN: i64 = 60 * SEC;
const HOUR: i64 = 60 * MIN;

fn alert(id: &str, device: &str, severity: Severity, status: AlertStatus, t: i64) -> Alert {
    Alert {
        alert_id: id.to_owned(),
        device_id: device.to_owned(),
        alert_type: "temperature_high".to_owned(),
        severity,
        message: "too hot".to_owned(),
        timestamp: t,
        status,
        threshold: Threshold {
            parameter: "temperature".to_owned(),
            operator: Operator::Above,
            value: 80.0,
        },
        current_value: 85.2,
        acknowledged_by: None,
    }
}

fn store() -> Store {
    Store::new(StoreConfig::default())
}

fn temperatures(store: &Store, id: &str, from: i64, to: i64, points: usize) -> Vec<HistoryPoint> {
    store
        .history(id, Parameter::Temperature, from, to, points)
        .expect("device is known and the range valid")
}

#[test]
fn latest_does_not_go_backwards_on_late_readings() {
    let mut s = store();
    s.record(&reading("d1", 1, T0, 20.0), T0);
    s.record(&reading("d1", 3, T0 + 10 * SEC, 22.0), T0 + 10 * SEC);
    s.record(&reading("d1", 2, T0 + 5 * SEC, 21.0), T0 + 11 * SEC);
    let d = s.device("d1", T0 + 11 * SEC).expect("known");
    assert_eq!(
        (d.latest.seq, d.latest.sensors.temperature.value),
        (3, 22.0)
    );
    assert_eq!(
        d.last_seen_ms,
        T0 + 11 * SEC,
        "the late reading was still data"
    );
    // The late reading is in history, in time order.
    let raw: Vec<(i64, f64)> = s
        .raw("d1", T0, T0 + HOUR)
        .expect("known")
        .map(|r| (r.t, r.value(Parameter::Temperature)))
        .collect();
    assert_eq!(
        raw,
        [(T0, 20.0), (T0 + 5 * SEC, 21.0), (T0 + 10 * SEC, 22.0)]
    );
    // A restarted device (lower seq, newer time) does move it forward.
    s.record(&reading("d1", 0, T0 + 15 * SEC, 23.0), T0 + 15 * SEC);
    assert_eq!(s.device("d1", T0 + 15 * SEC).expect("known").latest.seq, 0);
}

#[test]
fn history_summarises_a_known_series_exactly() {
    let mut s = store();
    for i in 0..60 {
        s.record(
            &reading("d1", i as u64, T0 + i * SEC, i as f64),
            T0 + i * SEC,
        );
    }
    let points = temperatures(&s, "d1", T0, T0 + 59_999, 6);
    assert_eq!(points.len(), 6);
    for (k, p) in points.iter().enumerate() {
        let lo = 10.0 * k as f64;
        assert_eq!(p.t, T0 + k as i64 * 10 * SEC);
        assert_eq!((p.min, p.max, p.count), (lo, lo + 9.0, 10));
        assert_eq!(p.avg, lo + 4.5);
    }
    // Any number of points: never more buckets than asked, nothing lost.
    for n in [1, 7, 59, 60, 61, 10_000] {
        let got = temperatures(&s, "d1", T0, T0 + 59_999, n);
        assert!(got.len() <= n, "{n}: {}", got.len());
        assert_eq!(got.iter().map(|p| p.count).sum::<u32>(), 60);
        assert_eq!(got.iter().map(|p| p.min).fold(f64::MAX, f64::min), 0.0);
    }
    // Empty buckets are left out: a range with a gap.
    let gap = temperatures(&s, "d1", T0 - MIN, T0 + 59_999, 12);
    assert_eq!(gap.len(), 6);
}

#[test]
fn long_ranges_come_from_rollups_once_raw_has_expired() {
    let mut s = store();
    // Three hours at one reading a minute; temperature is the hour (10, 11, 12).
    let mut now = T0;
    for m in 0..180 {
        now = T0 + m * MIN;
        s.record(&reading("d1", m as u64, now, 10.0 + (m / 60) as f64), now);
    }
    s.prune(now);

    // 1 day: 5-minute rollup buckets, each of five readings.
    let day = temperatures(&s, "d1", now - 24 * HOUR, now, 1_000);
    assert_eq!(day.len(), 36, "{day:?}");
    assert!(day.iter().all(|p| p.count == 5 && p.t % (5 * MIN) == 0));
    assert_eq!((day[0].t, day[0].min, day[0].max), (T0, 10.0, 10.0));
    assert_eq!(day[35].avg, 12.0);
    assert_eq!(day.iter().map(|p| p.count).sum::<u32>(), 180);
    // Fewer points: wider buckets, still whole multiples of 5 minutes.
    let coarse = temperatures(&s, "d1", now - 24 * HOUR, now, 10);
    assert!(coarse.len() <= 10);
    assert_eq!(coarse.iter().map(|p| p.count).sum::<u32>(), 180);
    assert!(coarse.iter().all(|p| p.t % (5 * MIN) == 0), "{coarse:?}");
    let lowest = coarse.iter().map(|p| p.min).fold(f64::MAX, f64::min);
    let highest = coarse.iter().map(|p| p.max).fold(f64::MIN, f64::max);
    assert_eq!((lowest, highest), (10.0, 12.0));

    // The last 30 minutes: raw samples, one per point.
    let recent = temperatures(&s, "d1", now - 30 * MIN, now, 10_000);
    assert_eq!(recent.len(), 31);
    assert!(recent.iter().all(|p| p.count == 1 && p.avg == 12.0));
    // Raw export covers raw retention only.
    assert_eq!(s.raw("d1", T0, now).expect("known").count(), 61);
}

#[test]
fn unknown_devices_and_bad_ranges_are_errors() {
    let mut s = store();
    s.record(&reading("d1", 1, T0, 20.0), T0);
    let h = |from, to, points| s.history("d1", Parameter::Humidity, from, to, points);
    assert!(matches!(
        s.history("nope", Parameter::Humidity, T0, T0 + 1, 10),
        Err(StoreError::UnknownDevice(id)) if id == "nope"
    ));
    assert!(matches!(
        s.raw("nope", T0, T0),
        Err(StoreError::UnknownDevice(_))
    ));
    for (from, to, points) in [(T0, T0 - 1, 10), (T0, T0, 0), (T0, T0, 10_001)] {
        assert!(matches!(h(from, to, points), Err(StoreError::BadRange(_))));
    }
    assert!(matches!(
        s.raw("d1", T0, T0 - 1),
        Err(StoreError::BadRange(_))
    ));
    assert_eq!(h(T0, T0, 1).expect("valid")[0].avg, 65.2);
    assert!(s.device("nope", T0).is_none());
}

#[test]
fn a_device_goes_offline_after_three_intervals_of_silence() {
    let mut s = store();
    for i in 0..4 {
        let t = T0 + i * 2 * SEC;
        s.record(&reading("fast", i as u64, t, 20.0), t);
    }
    s.record(&reading("new", 1, T0, 20.0), T0);
    let last = T0 + 6 * SEC;
    let status = |id: &str, now: i64| s.device(id, now).expect("known").status;
    assert_eq!(status("fast", last), DeviceStatus::Online);
    // Observed interval 2 s: offline after 6 s of silence.
    assert_eq!(status("fast", last + 6 * SEC), DeviceStatus::Online);
    assert_eq!(status("fast", last + 6 * SEC + 1), DeviceStatus::Offline);
    // A device seen once is judged by the default interval (5 s × 3).
    assert_eq!(status("new", T0 + 15 * SEC), DeviceStatus::Online);
    assert_eq!(status("new", T0 + 15 * SEC + 1), DeviceStatus::Offline);
    let counts = s.counts_by_status(T0 + 16 * SEC);
    assert_eq!((counts.online, counts.offline, counts.fault), (0, 2, 0));
}

#[test]
fn a_critical_alert_or_a_faulty_sensor_means_fault_and_offline_wins() {
    let mut s = store();
    s.record(&reading("d1", 1, T0, 20.0), T0);
    s.record(&reading("d2", 1, T0, 20.0), T0);
    let status = |s: &Store, id: &str, now: i64| s.device(id, now).expect("known").status;

    s.record_alert(&alert("a1", "d1", Severity::High, AlertStatus::Active, T0));
    assert_eq!(
        status(&s, "d1", T0),
        DeviceStatus::Online,
        "high is not critical"
    );
    s.record_alert(&alert(
        "a2",
        "d1",
        Severity::Critical,
        AlertStatus::Active,
        T0,
    ));
    assert_eq!(status(&s, "d1", T0), DeviceStatus::Fault);
    let view = s.device("d1", T0).expect("known");
    assert_eq!((view.open_alerts, view.critical_alerts), (2, 1));
    s.record_alert(&alert(
        "a2",
        "d1",
        Severity::Critical,
        AlertStatus::Acknowledged,
        T0 + 1,
    ));
    assert_eq!(
        status(&s, "d1", T0),
        DeviceStatus::Fault,
        "acknowledged is still open"
    );
    assert_eq!(
        status(&s, "d1", T0 + HOUR),
        DeviceStatus::Offline,
        "offline wins"
    );
    s.record_alert(&alert(
        "a2",
        "d1",
        Severity::Critical,
        AlertStatus::Resolved,
        T0 + 2,
    ));
    assert_eq!(status(&s, "d1", T0), DeviceStatus::Online);

    let mut faulty = reading("d2", 2, T0 + 5 * SEC, 20.0);
    faulty.sensors.humidity.status = SensorStatus::Fault;
    s.record(&faulty, T0 + 5 * SEC);
    assert_eq!(status(&s, "d2", T0 + 5 * SEC), DeviceStatus::Fault);
    let counts = s.counts_by_status(T0 + 5 * SEC);
    assert_eq!((counts.online, counts.offline, counts.fault), (1, 0, 1));
    s.record(&reading("d2", 3, T0 + 10 * SEC, 20.0), T0 + 10 * SEC);
    assert_eq!(status(&s, "d2", T0 + 10 * SEC), DeviceStatus::Online);
}

#[test]
fn devices_are_filtered_paged_and_in_natural_order() {
    let mut s = store();
    let ids: Vec<String> = (1..=25).map(|n| format!("device_{n}")).collect();
    for (n, id) in ids.iter().enumerate().rev() {
        let mut r = reading(id, 1, T0, 20.0);
        r.location.building = Cow::Borrowed(if n % 2 == 0 { "A栋" } else { "B栋" });
        r.location.floor = (n % 5) as i32;
        r.location.room = Cow::Owned(format!("R{n}"));
        if n == 7 {
            r.device_info.model = Cow::Borrowed("PUMP-X");
        }
        // device_25 is heard from an hour earlier than the rest: offline.
        let received = if n == 24 { T0 - HOUR } else { T0 };
        s.record(&r, received);
    }
    let list = |f: DeviceFilter| s.devices(&f, T0);
    let ids_of = |p: &iiot::store::Page<iiot::store::DeviceView>| -> Vec<String> {
        p.items.iter().map(|d| d.device_id.clone()).collect()
    };

    let page2 = list(DeviceFilter {
        page: 2,
        per_page: 10,
        ..DeviceFilter::default()
    });
    assert_eq!((page2.total, page2.page, page2.per_page), (25, 2, 10));
    assert_eq!(ids_of(&page2), ids[10..20]);
    let past_the_end = list(DeviceFilter {
        page: 4,
        per_page: 10,
        ..DeviceFilter::default()
    });
    assert!(past_the_end.items.is_empty() && past_the_end.total == 25);
    let clamped = list(DeviceFilter {
        page: 0,
        per_page: 1_000_000,
        ..DeviceFilter::default()
    });
    assert_eq!(
        (clamped.page, clamped.per_page, clamped.items.len()),
        (1, 1_000, 25)
    );

    let b = list(DeviceFilter {
        building: Some("B栋".into()),
        floor: Some(1),
        ..DeviceFilter::default()
    });
    assert_eq!(ids_of(&b), ["device_2", "device_12", "device_22"]);
    let offline = list(DeviceFilter {
        status: Some(DeviceStatus::Offline),
        ..DeviceFilter::default()
    });
    assert_eq!(ids_of(&offline), ["device_25"]);
    let pump = list(DeviceFilter {
        q: Some("pump".into()),
        ..DeviceFilter::default()
    });
    assert_eq!(ids_of(&pump), ["device_8"]);
    let by_room = list(DeviceFilter {
        q: Some("r1".into()),
        ..DeviceFilter::default()
    });
    assert_eq!(by_room.total, 11, "R1 and R10..R19");
}

#[test]
fn alerts_update_in_place_and_filter_newest_first() {
    let mut s = store();
    let a = |id: &str, dev: &str, sev, st, t| alert(id, dev, sev, st, t);
    s.record_alert(&a("x", "d1", Severity::High, AlertStatus::Active, T0));
    s.record_alert(&a(
        "y",
        "d2",
        Severity::Critical,
        AlertStatus::Active,
        T0 + 1,
    ));
    s.record_alert(&a("z", "d1", Severity::Low, AlertStatus::Resolved, T0 + 2));
    s.record_alert(&a(
        "x",
        "d1",
        Severity::High,
        AlertStatus::Acknowledged,
        T0 + 3,
    ));

    let all = s.alerts(&AlertFilter::default());
    let ids: Vec<&str> = all.iter().map(|a| a.alert_id.as_str()).collect();
    assert_eq!(ids, ["x", "z", "y"], "one entry per id, newest first");
    assert_eq!(all[0].status, AlertStatus::Acknowledged);

    s.record_alert(&a("x", "d1", Severity::High, AlertStatus::Resolved, T0 + 4));
    // A stale copy arriving late does not reopen it.
    s.record_alert(&a("x", "d1", Severity::High, AlertStatus::Active, T0));
    assert_eq!(s.counters().alerts_stale, 1);
    assert_eq!(s.alert("x").expect("kept").status, AlertStatus::Resolved);
    let filter = |status, severity, device_id: Option<&str>| AlertFilter {
        status,
        severity,
        device_id: device_id.map(str::to_owned),
        ..AlertFilter::default()
    };
    let count = |f| s.alerts(&f).len();
    assert_eq!(count(filter(Some(AlertStatus::Resolved), None, None)), 2);
    assert_eq!(count(filter(Some(AlertStatus::Active), None, None)), 1);
    assert_eq!(count(filter(None, Some(Severity::Critical), None)), 1);
    assert_eq!(count(filter(None, None, Some("d1"))), 2);
    assert_eq!(
        count(filter(Some(AlertStatus::Active), None, Some("d1"))),
        0
    );
    let limited = s.alerts(&AlertFilter {
        limit: 1,
        ..AlertFilter::default()
    });
    assert_eq!(limited[0].alert_id, "x");
    assert_eq!(s.alerts(&AlertFilter::default()).len(), 3);
}

#[test]
fn resolved_alerts_and_open_alerts_are_bounded() {
    let mut s = Store::new(StoreConfig {
        max_open_alerts: 2,
        max_resolved_alerts: 3,
        ..StoreConfig::default()
    });
    for i in 0..3 {
        let id = format!("open{i}");
        s.record_alert(&alert(
            &id,
            "d1",
            Severity::Low,
            AlertStatus::Active,
            T0 + i,
        ));
    }
    assert_eq!(s.counters().alerts_refused, 1);
    for i in 0..5 {
        let id = format!("done{i}");
        s.record_alert(&alert(
            &id,
            "d1",
            Severity::Low,
            AlertStatus::Resolved,
            T0 + i,
        ));
    }
    let resolved = s.alerts(&AlertFilter {
        status: Some(AlertStatus::Resolved),
        ..AlertFilter::default()
    });
    let ids: Vec<&str> = resolved.iter().map(|a| a.alert_id.as_str()).collect();
    assert_eq!(ids, ["done4", "done3", "done2"]);
    assert!(s.alert("done0").is_none());
}

#[test]
fn the_device_limit_refuses_new_devices_only() {
    let mut s = Store::new(StoreConfig {
        max_devices: 2,
        ..StoreConfig::default()
    });
    assert!(s.record(&reading("d1", 1, T0, 20.0), T0));
    assert!(s.record(&reading("d2", 1, T0, 20.0), T0));
    assert!(!s.record(&reading("d3", 1, T0, 20.0), T0));
    assert!(s.record(&reading("d1", 2, T0 + 5 * SEC, 20.0), T0 + 5 * SEC));
    assert_eq!((s.device_count(), s.counters().devices_refused), (2, 1));
    assert!(s.device("d3", T0).is_none());
}

#[test]
fn a_device_sending_too_fast_cannot_grow_without_bound() {
    let mut s = Store::new(StoreConfig {
        max_raw_samples_per_device: 100,
        ..StoreConfig::default()
    });
    for i in 0..1_000 {
        let t = T0 + i * 10;
        s.record(&reading("chatty", i as u64, t, 20.0), t);
    }
    assert_eq!(s.raw("chatty", T0, T0 + HOUR).expect("known").count(), 100);
    assert_eq!(s.counters().raw_evicted, 900);
    // What raw no longer holds is answered from rollups.
    let h = temperatures(&s, "chatty", T0, T0 + 10_000, 100);
    assert_eq!(h.iter().map(|p| p.count).sum::<u32>(), 1_000);
}

/// The budget of the module docs: ≈ 20.7 KB per device at a 5 s interval with 1 h of raw
/// samples and 24 h of 5-minute rollups (≈ 207 MB for 10,000 devices).
const BUDGET_PER_DEVICE: usize = 21_000;

/// Fills a store with `devices` devices as the server would see them by `T0`: 23 hours at one
/// reading per rollup bucket (what raw retention drops anyway), then the last hour at the real
/// 5 s interval, pruning every 10 minutes.
fn full_store(first: u32, devices: usize) -> Store {
    let mut s = Store::new(StoreConfig {
        max_devices: devices,
        ..StoreConfig::default()
    });
    let ids: Vec<String> = (first..first + devices as u32)
        .map(iiot_model::device_id)
        .collect();
    let mut readings: Vec<Reading<'_>> = ids.iter().map(|id| reading(id, 0, 0, 0.0)).collect();
    let mut feed = |s: &mut Store, t: i64| {
        for r in &mut readings {
            r.seq += 1;
            r.timestamp = t;
            r.sensors.temperature.value = 20.0 + (t / 5_000 % 7) as f64;
            s.record(r, t);
        }
        if t % (10 * MIN) == 0 {
            s.prune(t);
        }
    };
    let mut t = T0 - 24 * HOUR;
    while t < T0 - HOUR {
        feed(&mut s, t);
        t += 5 * MIN;
    }
    for i in 1..=720 {
        feed(&mut s, T0 - HOUR + i * 5 * SEC);
    }
    s.prune(T0);
    s
}

#[test]
fn a_thousand_full_devices_stay_within_the_documented_budget() {
    // Two stores of 500, filled on two threads: a million readings is slow in a debug build.
    let (a, b) = std::thread::scope(|scope| {
        let a = scope.spawn(|| full_store(1, 500));
        let b = full_store(501, 500);
        (a.join().expect("filled"), b)
    });
    for (s, id) in [(&a, "device_250"), (&b, "device_750")] {
        assert_eq!(s.raw(id, T0 - HOUR, T0).expect("known").count(), 720);
        let day = temperatures(s, id, T0 - 24 * HOUR, T0, 10_000);
        assert_eq!(day.len(), 289, "a full day of 5-minute rollups");
        assert_eq!((s.device_count(), s.counters().raw_evicted), (500, 0));
    }
    let bytes = a.memory_estimate() + b.memory_estimate();
    let per_device = bytes / 1_000;
    assert!(
        per_device <= BUDGET_PER_DEVICE,
        "{per_device} B per device, budget {BUDGET_PER_DEVICE}"
    );
    // And the estimate is not flattering itself: raw and rollups alone are 720 × 16 + 288 × 28.
    assert!(per_device >= 720 * 16 + 288 * 28, "{per_device}");
    eprintln!(
        "memory_estimate: {bytes} B for 1,000 devices = {per_device} B/device \
         (10,000 devices ≈ {} MB)",
        per_device * 10_000 / 1_000_000
    );
}

#[test]
fn out_of_range_settings_are_clamped() {
    let s = Store::new(StoreConfig {
        raw_retention: Duration::from_secs(365 * 86_400),
        rollup_bucket: Duration::ZERO,
        default_interval_ms: -5,
        ..StoreConfig::default()
    });
    let cfg = s.config();
    assert_eq!(cfg.raw_retention, Duration::from_secs(30 * 86_400));
    assert_eq!(cfg.rollup_bucket, Duration::from_secs(1));
    assert_eq!(cfg.default_interval_ms, 1);
}
