//! Unit tests of the store as a whole, and the reading builder the sub-module tests share.
//! Behaviour through the public API is tested in `tests/store.rs`.

use std::borrow::Cow;
use std::sync::Arc;

use iiot_model::{Parameter, Reading};

use super::device::Device;
use super::*;
use crate::alerts::{AlertEngine, DeviceAlerts, RuleSet, RuleSpec, Thresholds};

/// A valid reading of `id` (values of the SPEC §2 example) with the given seq, event time and
/// temperature.
pub(crate) fn reading(id: &str, seq: u64, t: i64, temperature: f64) -> Reading<'static> {
    Reading::example(id, seq, t, temperature)
}

#[test]
fn the_documented_device_record_size_holds() {
    // The module docs budget 608 B for the record; a change here must update them.
    assert!(
        std::mem::size_of::<Device>() <= 608,
        "{}",
        std::mem::size_of::<Device>()
    );
}

#[test]
fn latest_keeps_units_static_and_reuses_strings() {
    let mut store = Store::new(StoreConfig::default());
    store.record(&reading("d1", 1, 1_000, 20.0), 1_000);
    store.record(&reading("d1", 2, 6_000, 21.0), 6_000);
    let dev = &store.devices[0];
    assert!(matches!(
        dev.latest.sensors.pressure.unit,
        Cow::Borrowed("hPa")
    ));
    assert!(matches!(dev.latest.location.building, Cow::Owned(_)));
    assert_eq!(dev.liveness.interval_ms(0), 5_000);
}

#[test]
fn a_redelivered_reading_is_counted_once() {
    let mut store = Store::new(StoreConfig::default());
    let r = reading("d1", 1, 1_000, 20.0);
    store.record(&r, 1_000);
    store.record(&r, 1_001);
    store.record(&reading("d1", 2, 6_000, 21.0), 6_000);
    store.record(&r, 6_001);
    assert_eq!(store.counters().duplicates, 2);
    let h = store
        .history("d1", Parameter::Temperature, 0, 10_000, 1)
        .expect("known");
    assert_eq!(h[0].count, 2);
}

/// Far from any offline threshold, so the test does not depend on the exact formula.
const LONG_SILENCE_MS: i64 = 60_000;

/// Sweeps at `now_ms` and checks the changes reported.
#[track_caller]
fn assert_changes(store: &mut Store, now_ms: i64, want: &[(&str, DeviceStatus)]) {
    let got = store.status_changes(now_ms);
    let got: Vec<(&str, DeviceStatus)> = got.iter().map(|(id, s)| (id.as_str(), *s)).collect();
    assert_eq!(got, want, "changes at {now_ms}");
}

#[test]
fn status_changes_report_new_devices_then_only_changes() {
    let t0 = 1_000_000;
    let mut store = Store::new(StoreConfig::default());
    store.record(&reading("d1", 1, t0, 20.0), t0);
    store.record(&reading("d2", 1, t0, 20.0), t0);
    let online = DeviceStatus::Online;
    assert_changes(&mut store, t0, &[("d1", online), ("d2", online)]);
    assert_changes(&mut store, t0 + 1_000, &[]);

    // d1 keeps sending every 5 s, d2 falls silent.
    let mut t = t0;
    for seq in 2..=13 {
        t += 5_000;
        store.record(&reading("d1", seq, t, 20.0), t);
    }
    assert_eq!(t, t0 + LONG_SILENCE_MS);
    assert_changes(&mut store, t, &[("d2", DeviceStatus::Offline)]);
    assert_changes(&mut store, t + 500, &[]);

    store.record(&reading("d2", 2, t + 1_000, 20.0), t + 1_000);
    assert_changes(&mut store, t + 1_000, &[("d2", online)]);
}

#[test]
fn status_changes_report_a_sensor_fault_and_its_end() {
    let t0 = 1_000_000;
    let mut store = Store::new(StoreConfig::default());
    store.record(&reading("d1", 1, t0, 20.0), t0);
    store.status_changes(t0);
    let mut faulty = reading("d1", 2, t0 + 5_000, 20.0);
    faulty.sensors.temperature.status = iiot_model::SensorStatus::Fault;
    store.record(&faulty, t0 + 5_000);
    assert_changes(&mut store, t0 + 5_000, &[("d1", DeviceStatus::Fault)]);
    store.record(&reading("d1", 3, t0 + 10_000, 20.0), t0 + 10_000);
    assert_changes(&mut store, t0 + 10_000, &[("d1", DeviceStatus::Online)]);
}

#[test]
fn a_device_appearing_between_sweeps_is_reported_in_the_next_one() {
    let t0 = 1_000_000;
    let mut store = Store::new(StoreConfig::default());
    assert_changes(&mut store, t0, &[]);
    store.record(&reading("d1", 1, t0, 20.0), t0);
    let before = store.memory_estimate();
    assert_changes(&mut store, t0 + 1_000, &[("d1", DeviceStatus::Online)]);
    // The memory the sweep keeps is counted: a byte or so per device.
    assert!(store.memory_estimate() > before);
}

#[test]
fn status_turns_offline_at_the_instant_the_offline_alert_fires() {
    const T0: i64 = 1_700_000_000_000;
    let spec = RuleSpec {
        alert_type: "device_offline".into(),
        kind: Some("offline".into()),
        missed_intervals: Some(5.0),
        ..RuleSpec::default()
    };
    let rules = RuleSet::build(&Thresholds::default(), &[spec]).expect("valid rule");
    let missed = rules.offline_missed_intervals().expect("an offline rule");
    let engine = AlertEngine::new(Arc::new(rules), 5_000);
    let mut store = Store::new(StoreConfig::default());
    store.set_offline_missed_intervals(missed);
    let mut dev = DeviceAlerts::default();
    let mut out = Vec::new();
    // Every 2 s rather than the default 5 s: both sides must learn the same interval.
    for i in 0..10 {
        let r = reading("device_001", i, T0 + i as i64 * 2_000, 25.0);
        engine.observe(&mut dev, &r, r.timestamp, &mut out);
        store.record(&r, r.timestamp);
    }
    let last = T0 + 9 * 2_000;
    let offline = |store: &Store, now| {
        store.device("device_001", now).map(|d| d.status) == Some(DeviceStatus::Offline)
    };
    assert!(
        !offline(&store, last + 3 * 2_000 + 1),
        "not after 3 intervals"
    );
    let mut fired = None;
    for now in last..=last + 30_000 {
        engine.check_offline("device_001", &mut dev, now, &mut out);
        let alert = out.iter().any(|a| a.alert_type == "device_offline");
        assert_eq!(alert, offline(&store, now), "{} ms of silence", now - last);
        if alert {
            fired = Some(now - last);
            break;
        }
    }
    assert_eq!(
        fired,
        Some(5 * 2_000 + 1),
        "silence when both turned offline"
    );
}

#[test]
fn an_offline_alert_raised_at_once_makes_the_device_offline_until_it_resolves() {
    const T0: i64 = 1_700_000_000_000;
    let engine = AlertEngine::new(Arc::new(RuleSet::defaults(&Thresholds::default())), 5_000);
    let mut store = Store::new(StoreConfig::default());
    let mut dev = DeviceAlerts::default();
    let mut out = Vec::new();
    let r = reading("device_001", 1, T0, 25.0);
    engine.observe(&mut dev, &r, T0, &mut out);
    store.record(&r, T0);
    let status = |store: &Store| store.device("device_001", T0 + 100).map(|d| d.status);
    assert_eq!(status(&store), Some(DeviceStatus::Online));
    engine.declare_offline("device_001", &mut dev, T0 + 50, "DDEATH", &mut out);
    for a in out.drain(..) {
        store.record_alert(&a);
    }
    assert_eq!(
        status(&store),
        Some(DeviceStatus::Offline),
        "fresh data, but it said so"
    );
    let r = reading("device_001", 2, T0 + 80, 25.0);
    engine.observe(&mut dev, &r, T0 + 80, &mut out);
    store.record(&r, T0 + 80);
    for a in out.drain(..) {
        store.record_alert(&a);
    }
    assert_eq!(status(&store), Some(DeviceStatus::Online));
}
