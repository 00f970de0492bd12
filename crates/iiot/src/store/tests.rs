//! Unit tests of the store as a whole, and the reading builder the sub-module tests share.
//! Behaviour through the public API is tested in `tests/store.rs`.

use std::borrow::Cow;

use iiot_model::{Parameter, Reading};

use super::device::Device;
use super::*;

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
