//! Property tests: no input makes the decoder panic, and every valid reading round-trips.

use std::borrow::Cow;

use iiot_model::{
    DeviceInfo, Limits, Location, Measurement, Reading, SensorStatus, Sensors, SwitchReading,
    SwitchState, decode,
};
use proptest::prelude::*;

const NOW: i64 = 1_700_000_000_000;

fn measurement(value: f64, unit: &'static str) -> Measurement<'static> {
    Measurement {
        value,
        unit: Cow::Borrowed(unit),
        status: SensorStatus::Normal,
    }
}

/// A value as a sensor reports it: at most `decimals` decimal places. serde_json's default
/// (fast) float parser is exact for such values; only 16–17-digit inputs may come back one ULP
/// off, which we accept for the parser's speed (see docs/benchmarks.md).
fn at_resolution(v: f64, decimals: u32) -> f64 {
    let scale = 10f64.powi(decimals as i32);
    (v * scale).round() / scale
}

prop_compose! {
    fn valid_reading()(
        n in 1u32..100_000,
        seq in 0u64..u64::MAX / 2,
        ts in 946_684_800_000i64..NOW,
        building in "[A-Z]栋",
        floor in -5i32..100,
        room in "[0-9]{3}",
        t in -60.0f64..250.0, h in 0.0f64..100.0, p in 300.0f64..1200.0, c in 0.0f64..200.0,
        decimals in 0u32..=6,
        on in any::<bool>(),
        battery in 0i64..=100, signal in -150i64..=0,
    ) -> Reading<'static> {
        Reading {
            device_id: Cow::Owned(iiot_model::device_id(n)),
            seq,
            timestamp: ts,
            location: Location { building: Cow::Owned(building), floor, room: Cow::Owned(room) },
            sensors: Sensors {
                temperature: measurement(at_resolution(t, decimals), "°C"),
                humidity: measurement(at_resolution(h, decimals), "%"),
                pressure: measurement(at_resolution(p, decimals), "hPa"),
                switch_status: SwitchReading {
                    value: on,
                    status: if on { SwitchState::On } else { SwitchState::Off },
                },
                current: measurement(at_resolution(c, decimals), "A"),
            },
            device_info: DeviceInfo {
                model: Cow::Borrowed("IOT-SENSOR-V2"),
                firmware: Cow::Borrowed("1.2.3"),
                battery,
                signal_strength: signal,
            },
        }
    }
}

/// Any i64, with the extremes and their neighbourhoods (where arithmetic overflows) as likely
/// as the rest.
fn any_clock() -> impl Strategy<Value = i64> {
    prop_oneof![
        any::<i64>(),
        (0i64..1 << 42).prop_map(|d| i64::MIN + d),
        (0i64..1 << 42).prop_map(|d| i64::MAX - d),
        946_684_800_000i64..2 * NOW,
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let _ = decode(&bytes, NOW, &Limits::default());
    }

    #[test]
    fn mutated_valid_messages_never_panic(r in valid_reading(), cut in 0usize..600, byte in any::<u8>()) {
        let mut bytes = serde_json::to_vec(&r).expect("serializes");
        let i = cut % bytes.len();
        bytes[i] = byte;
        let _ = decode(&bytes, NOW, &Limits::default());
        bytes.truncate(i);
        let _ = decode(&bytes, NOW, &Limits::default());
    }

    /// The judging clock can be a broker timestamp, so any i64; the limits come from config.
    #[test]
    fn any_clock_and_limits_never_panic(
        r in valid_reading(),
        now in any_clock(),
        max_future_ms in any_clock(),
        min_timestamp_ms in any_clock(),
        max_message_bytes in 0usize..100_000,
    ) {
        let bytes = serde_json::to_vec(&r).expect("serializes");
        let limits = Limits { max_message_bytes, max_future_ms, min_timestamp_ms };
        match decode(&bytes, now, &limits) {
            Ok(back) => prop_assert_eq!(back, r),
            Err(invalid) => prop_assert!(!invalid.detail.is_empty()),
        }
    }

    #[test]
    fn valid_readings_round_trip(r in valid_reading()) {
        let bytes = serde_json::to_vec(&r).expect("serializes");
        let back = decode(&bytes, NOW, &Limits::default()).expect("a valid reading is accepted");
        prop_assert_eq!(back, r);
    }
}
