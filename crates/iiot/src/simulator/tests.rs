//! Unit tests of the fleet: values, seq, reproducibility, faults, malformed messages, scale.

use std::time::{Duration, Instant};

use iiot_model::{InvalidReason, Limits, Reading, SensorStatus, SwitchState, decode};
use rand::SeedableRng as _;
use rand_pcg::Pcg64Mcg;

use super::malformed::{self, Malformation};
use super::*;
use crate::test_support::{T0, decode_valid};

fn config(devices: u32) -> SimulatorConfig {
    SimulatorConfig {
        devices,
        interval: Duration::from_secs(5),
        seed: 7,
        ..SimulatorConfig::default()
    }
}

/// Emits `steps` messages of device `idx`, returning each outcome with its parsed reading.
fn series(fleet: &mut Fleet, idx: usize, steps: usize) -> Vec<(Emitted, Option<Reading<'static>>)> {
    let mut buf = Vec::new();
    (0..steps)
        .map(|k| {
            let ts = T0 + k as i64 * 5000;
            let e = fleet.emit(idx, ts, &mut buf);
            let r = match e {
                Emitted::Reading { .. } => Some(decode_valid(&buf, ts)),
                Emitted::Malformed | Emitted::Silent => None,
            };
            (e, r)
        })
        .collect()
}

fn temperatures(fleet: &mut Fleet, idx: usize, steps: usize) -> Vec<f64> {
    series(fleet, idx, steps)
        .into_iter()
        .filter_map(|(_, r)| r.map(|r| r.sensors.temperature.value))
        .collect()
}

#[test]
fn readings_are_valid_and_realistic() {
    let mut fleet = Fleet::new(&config(25));
    for idx in 0..fleet.len() {
        for (e, r) in series(&mut fleet, idx, 200) {
            let r = r.expect("no faults, no malformed: always a reading");
            assert!(matches!(e, Emitted::Reading { .. }));
            assert_eq!(r.device_id, fleet.device_id(idx));
            let s = &r.sensors;
            assert!((12.0..38.0).contains(&s.temperature.value), "{r:?}");
            assert!((25.0..80.0).contains(&s.humidity.value), "{r:?}");
            assert!((990.0..1035.0).contains(&s.pressure.value), "{r:?}");
            assert!((0.0..5.0).contains(&s.current.value), "{r:?}");
            if s.switch_status.value {
                assert_eq!(s.switch_status.status, SwitchState::On);
            } else {
                assert_eq!(s.switch_status.status, SwitchState::Off);
                assert!(s.current.value < 0.2, "off but drawing {r:?}");
            }
            for m in [&s.temperature, &s.humidity, &s.pressure, &s.current] {
                assert_eq!(m.status, SensorStatus::Normal, "{r:?}");
                assert_eq!(m.value, (m.value * 100.0).round() / 100.0, "2 decimals");
            }
            assert_eq!(
                [
                    &*s.temperature.unit,
                    &*s.humidity.unit,
                    &*s.pressure.unit,
                    &*s.current.unit
                ],
                ["°C", "%", "hPa", "A"]
            );
            assert!((0..=100).contains(&r.device_info.battery));
            assert!(
                (-95..=-40).contains(&r.device_info.signal_strength),
                "{r:?}"
            );
            assert!(["A栋", "B栋", "C栋", "D栋"].contains(&&*r.location.building));
            assert!((1..=6).contains(&r.location.floor));
            let room: i32 = r.location.room.parse().expect("numeric room");
            assert_eq!(room / 100, r.location.floor);
            assert!(
                ["IOT-SENSOR-V2", "IOT-SENSOR-V3", "IOT-SENSOR-PRO"]
                    .contains(&&*r.device_info.model)
            );
            assert_eq!(r.device_info.firmware.split('.').count(), 3);
        }
    }
}

#[test]
fn noise_is_small_step_to_step_and_never_looks_like_a_fast_rise() {
    let mut fleet = Fleet::new(&config(20));
    let mut diffs = Vec::new();
    for idx in 0..fleet.len() {
        let t = temperatures(&mut fleet, idx, 300);
        diffs.extend(t.windows(2).map(|w| w[1] - w[0]));
        // 12 steps of 5 s: one minute. A 10 °C/min rate-of-change rule must stay quiet.
        let worst = t
            .windows(13)
            .map(|w| (w[12] - w[0]).abs())
            .fold(0.0, f64::max);
        assert!(worst < 4.0, "device {idx} moved {worst} °C in a minute");
    }
    let n = diffs.len() as f64;
    let mean = diffs.iter().sum::<f64>() / n;
    let sd = (diffs.iter().map(|d| (d - mean).powi(2)).sum::<f64>() / n).sqrt();
    assert!((0.15..0.4).contains(&sd), "step sd {sd}");
}

#[test]
fn temperature_follows_a_daily_cycle_in_simulated_time() {
    let mut fleet = Fleet::new(&SimulatorConfig {
        interval: Duration::from_secs(600),
        ..config(40)
    });
    // 144 steps of 10 min = one simulated day, starting 08:00; the peak is at 15:00 (step 42)
    // and the trough at 03:00 (step 114).
    let (mut peak, mut trough) = (0.0, 0.0);
    for idx in 0..fleet.len() {
        let t = temperatures(&mut fleet, idx, 144);
        peak += t[42] / 40.0;
        trough += t[114] / 40.0;
    }
    let swing = peak - trough;
    assert!((2.5..5.5).contains(&swing), "day/night swing {swing}");
}

#[test]
fn switch_flips_a_few_times_per_simulated_hour_and_battery_drains() {
    let mut fleet = Fleet::new(&config(12));
    let (mut flips, mut drained) = (0, 0);
    for idx in 0..fleet.len() {
        // 720 steps of 5 s: one simulated hour.
        let readings: Vec<_> = series(&mut fleet, idx, 720)
            .into_iter()
            .filter_map(|(_, r)| r)
            .collect();
        flips += readings
            .windows(2)
            .filter(|w| w[0].sensors.switch_status.value != w[1].sensors.switch_status.value)
            .count();
        let (first, last) = (&readings[0], &readings[719]);
        if last.device_info.battery < first.device_info.battery {
            drained += 1;
        }
    }
    let per_hour = flips as f64 / 12.0;
    assert!(
        (1.0..8.0).contains(&per_hour),
        "{per_hour} flips per device-hour"
    );
    assert!(
        drained >= 6,
        "only {drained} of 12 batteries drained in an hour"
    );
}

#[test]
fn battery_recharges_when_nearly_empty() {
    // One-hour steps drain 0.2–1 % each: within 500 steps every battery recharges once.
    let mut fleet = Fleet::new(&SimulatorConfig {
        interval: Duration::from_secs(3600),
        ..config(5)
    });
    for idx in 0..5 {
        let b: Vec<i64> = series(&mut fleet, idx, 500)
            .into_iter()
            .filter_map(|(_, r)| r.map(|r| r.device_info.battery))
            .collect();
        assert!(b.iter().all(|b| (5..=100).contains(b)), "{b:?}");
        assert!(
            b.windows(2).any(|w| w[1] > w[0] + 50),
            "never recharged: {b:?}"
        );
    }
}

#[test]
fn seq_counts_from_one_per_device() {
    let mut fleet = Fleet::new(&config(3));
    let mut buf = Vec::new();
    for round in 1..=5 {
        for idx in 0..3 {
            assert_eq!(
                fleet.emit(idx, T0, &mut buf),
                Emitted::Reading { seq: round }
            );
        }
    }
    assert_eq!(fleet.last_seq(2), 5);
}

#[test]
fn malformed_and_silent_emissions_do_not_consume_seq() {
    let mut fleet = Fleet::new(&SimulatorConfig {
        malformed_rate: 0.3,
        ..config(4)
    });
    fleet.inject(1, FaultKind::Silent, 10);
    let (mut malformed, mut silent, mut expected) = (0, 0, 1);
    for idx in 0..4 {
        expected = 1;
        for (e, _) in series(&mut fleet, idx, 200) {
            match e {
                Emitted::Reading { seq } => {
                    assert_eq!(seq, expected);
                    expected += 1;
                }
                Emitted::Malformed => malformed += 1,
                Emitted::Silent => silent += 1,
            }
        }
    }
    assert!(expected > 100);
    assert!(
        (150..330).contains(&malformed),
        "{malformed} malformed of 800"
    );
    assert_eq!(silent, 6);
}

#[test]
fn device_values_do_not_depend_on_fleet_size_or_timestamps() {
    let mut small = Fleet::new(&config(5));
    let mut large = Fleet::new(&SimulatorConfig {
        fault_rate: 0.01,
        malformed_rate: 0.05,
        ..config(2000)
    });
    let mut small_faulty = Fleet::new(&SimulatorConfig {
        fault_rate: 0.01,
        malformed_rate: 0.05,
        ..config(5)
    });
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for k in 0..300 {
        small_faulty.emit(3, T0 + k, &mut a);
        large.emit(3, T0 + 7 * k + 1_000_000, &mut b);
        let ea = serde_json::from_slice::<serde_json::Value>(&a).ok();
        let eb = serde_json::from_slice::<serde_json::Value>(&b).ok();
        let strip = |v: Option<serde_json::Value>| {
            v.map(|mut v| {
                v["timestamp"] = 0.into();
                v
            })
        };
        assert_eq!(strip(ea), strip(eb), "step {k}");
        assert_eq!(a.is_empty(), b.is_empty());
    }
    // A different seed is a different fleet.
    let mut other = Fleet::new(&SimulatorConfig {
        seed: 8,
        ..config(5)
    });
    assert_ne!(
        temperatures(&mut small, 3, 20),
        temperatures(&mut other, 3, 20)
    );
}

#[test]
fn injected_overheat_crosses_80_once_each_way_and_cools_below_76() {
    let mut fleet = Fleet::new(&config(2));
    fleet.inject(1, FaultKind::Overheat, 20);
    let t = temperatures(&mut fleet, 1, 120);
    assert!(t[..20].iter().all(|&v| v < 40.0));
    let up = t.windows(2).filter(|w| w[0] <= 80.0 && w[1] > 80.0).count();
    let down = t.windows(2).filter(|w| w[0] > 80.0 && w[1] <= 80.0).count();
    assert_eq!((up, down), (1, 1), "{t:?}");
    let peak = t.iter().copied().fold(f64::MIN, f64::max);
    assert!((94.0..106.0).contains(&peak), "peak {peak}");
    let last_hot = t.iter().rposition(|&v| v > 80.0).expect("was hot");
    assert!(t[last_hot + 2..].iter().all(|&v| v < 76.0), "{t:?}");
    let ramp: Vec<f64> = t[20..].windows(2).map(|w| w[1] - w[0]).take(10).collect();
    assert!(
        ramp.iter().all(|d| (2.5..3.6).contains(d)),
        "ramp steps {ramp:?}"
    );
    let above = t.iter().filter(|&&v| v > 80.0).count();
    assert!((10..25).contains(&above), "{above} steps above 80");
    assert!(t[100..].iter().all(|&v| v < 40.0), "back to normal: {t:?}");
}

#[test]
fn injected_stuck_sensor_repeats_its_value_and_says_normal() {
    let mut fleet = Fleet::new(&config(1));
    fleet.inject(0, FaultKind::Stuck, 10);
    let readings: Vec<_> = series(&mut fleet, 0, 60)
        .into_iter()
        .filter_map(|(_, r)| r)
        .collect();
    let t: Vec<f64> = readings
        .iter()
        .map(|r| r.sensors.temperature.value)
        .collect();
    assert!(t[10..34].iter().all(|&v| v == t[10]), "{t:?}");
    assert_ne!(
        t[9..35].iter().filter(|&&v| v == t[10]).count(),
        26,
        "not longer: {t:?}"
    );
    assert!(
        readings
            .iter()
            .all(|r| r.sensors.temperature.status == SensorStatus::Normal)
    );
}

#[test]
fn injected_current_spike_and_silence() {
    let mut fleet = Fleet::new(&config(1));
    fleet.inject(0, FaultKind::CurrentSpike, 5);
    fleet.inject(0, FaultKind::Silent, 20);
    let s = series(&mut fleet, 0, 40);
    let currents: Vec<Option<f64>> = s
        .iter()
        .map(|(_, r)| r.as_ref().map(|r| r.sensors.current.value))
        .collect();
    for (k, c) in currents.iter().enumerate() {
        match k {
            5..=7 => assert!(c.is_some_and(|c| (12.0..20.0).contains(&c)), "{currents:?}"),
            20..=25 => assert_eq!(s[k].0, Emitted::Silent),
            _ => assert!(c.is_some_and(|c| c < 5.0), "{currents:?}"),
        }
    }
    assert_eq!(s[26].0, Emitted::Reading { seq: 21 });
}

#[test]
fn random_faults_happen_at_the_configured_rate() {
    let mut fleet = Fleet::new(&SimulatorConfig {
        fault_rate: 0.02,
        ..config(25)
    });
    let (mut hot, mut silent) = (0, 0);
    for idx in 0..25 {
        for (e, r) in series(&mut fleet, idx, 300) {
            silent += usize::from(e == Emitted::Silent);
            hot += usize::from(r.is_some_and(|r| r.sensors.temperature.value > 80.0));
        }
    }
    assert!(hot > 0 && silent > 0, "hot {hot}, silent {silent}");
}

#[test]
fn every_malformation_is_rejected_by_validation() {
    let mut fleet = Fleet::new(&config(1));
    let mut buf = Vec::new();
    fleet.emit(0, T0, &mut buf);
    let good: Reading<'_> = serde_json::from_slice(&buf).expect("valid");
    let mut rng = Pcg64Mcg::seed_from_u64(1);
    for kind in Malformation::ALL {
        let mut out = Vec::new();
        malformed::write_kind(kind, &mut good.clone(), &mut rng, &mut out);
        let err = decode(&out, T0, &Limits::default()).expect_err("must be rejected");
        let expected = match kind {
            Malformation::Truncated => InvalidReason::MalformedJson,
            Malformation::NanValue => InvalidReason::NonFinite,
            Malformation::OutOfRange => InvalidReason::OutOfRange,
            Malformation::SeqAsString => InvalidReason::Schema,
            Malformation::WrongUnit => InvalidReason::BadUnit,
            Malformation::FutureTimestamp => InvalidReason::FutureTimestamp,
        };
        assert_eq!(err.reason, expected, "{kind:?}: {err}");
        let text = String::from_utf8_lossy(&out);
        assert!(text.starts_with("{\"device_id\":\"device_001\""), "{text}");
    }
}

#[test]
fn bad_indices_and_odd_configs_do_not_panic() {
    let mut fleet = Fleet::new(&SimulatorConfig {
        devices: 2,
        interval: Duration::ZERO,
        variance: f64::NAN,
        fault_rate: 7.0,
        malformed_rate: f64::NAN,
        ..config(2)
    });
    let mut buf = vec![1, 2, 3];
    assert_eq!(fleet.emit(99, T0, &mut buf), Emitted::Silent);
    assert!(buf.is_empty());
    fleet.inject(99, FaultKind::Overheat, 0);
    assert_eq!(fleet.device_id(99), "");
    for _ in 0..200 {
        fleet.emit(0, T0, &mut buf);
    }
    let empty = Fleet::new(&config(0));
    assert!(empty.is_empty());
}

#[test]
fn a_hundred_thousand_devices_are_cheap() {
    assert!(
        fleet::device_size() <= 320,
        "device is {} bytes",
        fleet::device_size()
    );
    let started = Instant::now();
    let mut fleet = Fleet::new(&config(100_000));
    assert_eq!(fleet.len(), 100_000);
    assert_eq!(fleet.device_id(99_999), "device_100000");
    let mut buf = Vec::new();
    for idx in (0..fleet.len()).step_by(97) {
        assert!(matches!(
            fleet.emit(idx, T0, &mut buf),
            Emitted::Reading { seq: 1 }
        ));
    }
    let elapsed = started.elapsed();
    // Generous even for a debug build on a loaded machine.
    assert!(elapsed < Duration::from_secs(5), "took {elapsed:?}");
}
