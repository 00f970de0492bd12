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
