//! Every rule kind, driven with explicit clocks.

use std::sync::Arc;
use std::time::Duration;

use iiot_model::{Alert, AlertStatus, Operator, Parameter, Reading, Severity};

use super::*;
use crate::alerts::rules::{AlertRule, RuleKind, RuleSet, Thresholds};

const T0: i64 = 1_700_000_000_000;
const STEP: i64 = 5_000;

fn reading(ts: i64, temperature: f64) -> Reading<'static> {
    Reading::example("device_001", 1, ts, temperature)
}

fn only(rule: AlertRule) -> AlertEngine {
    AlertEngine::new(Arc::new(RuleSet { rules: vec![rule] }), STEP)
}

fn temperature_high(hold: Duration) -> AlertRule {
    AlertRule {
        alert_type: "temperature_high".into(),
        severity: Severity::High,
        kind: RuleKind::Threshold {
            parameter: Parameter::Temperature,
            operator: Operator::Above,
            value: 80.0,
            clear: 78.0,
            hold,
        },
    }
}

/// Feeds temperatures one step apart; returns every alert produced.
fn feed(engine: &AlertEngine, dev: &mut DeviceAlerts, start: i64, temps: &[f64]) -> Vec<Alert> {
    let mut out = Vec::new();
    for (i, t) in temps.iter().enumerate() {
        let ts = start + i as i64 * STEP;
        engine.observe(dev, &reading(ts, *t), ts, &mut out);
    }
    out
}

fn statuses(alerts: &[Alert]) -> Vec<(&str, AlertStatus)> {
    alerts
        .iter()
        .map(|a| (a.alert_type.as_str(), a.status))
        .collect()
}

#[test]
fn threshold_raises_once_and_resolves_past_the_clear_level() {
    let engine = only(temperature_high(Duration::ZERO));
    let mut dev = DeviceAlerts::default();
    let out = feed(&engine, &mut dev, T0, &[70.0, 85.2, 90.0, 79.0, 77.9, 70.0]);
    assert_eq!(
        statuses(&out),
        [
            ("temperature_high", AlertStatus::Active),
            ("temperature_high", AlertStatus::Resolved)
        ]
    );
    let (raised, resolved) = (&out[0], &out[1]);
    assert_eq!(raised.alert_id, resolved.alert_id);
    assert_eq!(raised.current_value, 85.2);
    assert_eq!(raised.severity, Severity::High);
    assert_eq!(raised.threshold.parameter, "temperature");
    assert_eq!(raised.threshold.value, 80.0);
    assert_eq!(raised.timestamp, T0 + STEP);
    assert_eq!(resolved.current_value, 77.9);
    assert!(raised.message.contains("85.2"), "{}", raised.message);
}

#[test]
fn flapping_around_the_threshold_gives_one_alert_not_many() {
    let engine = only(temperature_high(Duration::ZERO));
    let mut dev = DeviceAlerts::default();
    let temps: Vec<f64> = (0..40)
        .map(|i| if i % 2 == 0 { 80.5 } else { 79.5 })
        .collect();
    let out = feed(&engine, &mut dev, T0, &temps);
    assert_eq!(statuses(&out), [("temperature_high", AlertStatus::Active)]);
}

#[test]
fn for_duration_must_hold_before_raising() {
    let engine = only(temperature_high(Duration::from_secs(12)));
    let mut dev = DeviceAlerts::default();
    // Above for 10 s then dips: the condition restarts, nothing raised.
    let out = feed(&engine, &mut dev, T0, &[85.0, 85.0, 85.0, 75.0, 85.0, 75.0]);
    assert!(out.is_empty(), "{out:?}");
    // Above for 15 s (four readings 5 s apart) → raised at the fourth.
    let out = feed(&engine, &mut dev, T0 + 6 * STEP, &[85.0, 85.0, 85.0, 85.0]);
    assert_eq!(statuses(&out), [("temperature_high", AlertStatus::Active)]);
    assert_eq!(out[0].timestamp, T0 + 9 * STEP);
}

#[test]
fn below_thresholds_use_an_upper_clear_level() {
    let t = Thresholds::default();
    let set = RuleSet::defaults(&t);
    let low = set.get("temperature_low").expect("default").clone();
    let engine = only(low);
    let mut dev = DeviceAlerts::default();
    let out = feed(&engine, &mut dev, T0, &[5.0, -1.0, 0.2, 0.6]);
    assert_eq!(
        statuses(&out),
        [
            ("temperature_low", AlertStatus::Active),
            ("temperature_low", AlertStatus::Resolved)
        ]
    );
    assert_eq!(out[1].current_value, 0.6);
}

#[test]
fn battery_low_uses_the_device_info() {
    let engine = only(
        RuleSet::defaults(&Thresholds::default())
            .get("battery_low")
            .expect("default")
            .clone(),
    );
    let mut dev = DeviceAlerts::default();
    let mut out = Vec::new();
    for (i, battery) in [30, 19, 18, 26].into_iter().enumerate() {
        let mut r = reading(T0 + i as i64 * STEP, 25.0);
        r.device_info.battery = battery;
        engine.observe(&mut dev, &r, r.timestamp, &mut out);
    }
    assert_eq!(
        statuses(&out),
        [
            ("battery_low", AlertStatus::Active),
            ("battery_low", AlertStatus::Resolved)
        ]
    );
    assert_eq!(out[0].severity, Severity::Low);
}

fn rate_rule() -> AlertRule {
    AlertRule {
        alert_type: "temperature_rate".into(),
        severity: Severity::Medium,
        kind: RuleKind::RateOfChange {
            parameter: Parameter::Temperature,
            value: 10.0,
            clear: 8.0,
            window: Duration::from_secs(60),
        },
    }
}

#[test]
fn rate_of_change_is_measured_over_the_window_not_per_step() {
    let engine = only(rate_rule());
    let mut dev = DeviceAlerts::default();
    // Noisy but flat: ±1 °C jumps every 5 s would be 12 °C/min step to step, but over a
    // minute the temperature does not move.
    let noisy: Vec<f64> = (0..25)
        .map(|i| if i % 2 == 0 { 25.0 } else { 26.0 })
        .collect();
    assert!(feed(&engine, &mut dev, T0, &noisy).is_empty());
    // A real climb of 1.5 °C per 5 s = 18 °C/min is raised at the end of a window…
    let climb: Vec<f64> = (0..13).map(|i| 25.0 + 1.5 * i as f64).collect();
    let out = feed(&engine, &mut dev, T0 + 25 * STEP, &climb);
    assert_eq!(statuses(&out), [("temperature_rate", AlertStatus::Active)]);
    assert!(out[0].current_value > 10.0, "{}", out[0].current_value);
    assert_eq!(out[0].threshold.parameter, "temperature_rate_per_min");
    // …and resolved once a later window is calm.
    let calm = vec![43.0; 14];
    let out = feed(&engine, &mut dev, T0 + 38 * STEP, &calm);
    assert_eq!(
        statuses(&out),
        [("temperature_rate", AlertStatus::Resolved)]
    );
}

#[test]
fn stuck_sensor_needs_identical_values_for_the_whole_span() {
    let engine = only(AlertRule {
        alert_type: "sensor_stuck".into(),
        severity: Severity::Medium,
        kind: RuleKind::Stuck {
            parameter: Parameter::Temperature,
            hold: Duration::from_secs(60),
        },
    });
    let mut dev = DeviceAlerts::default();
    // 12 identical readings span 55 s: not yet.
    assert!(feed(&engine, &mut dev, T0, &[25.31; 12]).is_empty());
    // The 13th reaches 60 s.
    let out = feed(&engine, &mut dev, T0 + 12 * STEP, &[25.31, 25.31]);
    assert_eq!(statuses(&out), [("sensor_stuck", AlertStatus::Active)]);
    assert_eq!(out[0].current_value, 60.0);
    // The value moves: resolved.
    let out = feed(&engine, &mut dev, T0 + 14 * STEP, &[25.32]);
    assert_eq!(statuses(&out), [("sensor_stuck", AlertStatus::Resolved)]);
}

#[test]
fn offline_after_three_intervals_of_silence_and_back_online() {
    let engine = only(AlertRule {
        alert_type: "device_offline".into(),
        severity: Severity::High,
        kind: RuleKind::Offline {
            missed_intervals: 3.0,
        },
    });
    let mut dev = DeviceAlerts::default();
    let mut out = Vec::new();
    // Never heard from: no alert at any time.
    engine.check_offline("device_001", &mut dev, T0 + 1_000_000, &mut out);
    assert!(out.is_empty());
    // Readings every 5 s teach the interval; silence of 15 s is still fine, 15.001 s is not.
    feed(&engine, &mut dev, T0, &[25.0, 25.1, 25.2]);
    let last = T0 + 2 * STEP;
    engine.check_offline("device_001", &mut dev, last + 15_000, &mut out);
    assert!(out.is_empty());
    engine.check_offline("device_001", &mut dev, last + 15_001, &mut out);
    engine.check_offline("device_001", &mut dev, last + 30_000, &mut out);
    assert_eq!(statuses(&out), [("device_offline", AlertStatus::Active)]);
    assert_eq!(out[0].threshold.value, 15.0);
    assert_eq!(out[0].timestamp, last + 15_001);
    out.clear();
    let back = last + 40_000;
    engine.observe(&mut dev, &reading(back, 25.0), back, &mut out);
    assert_eq!(statuses(&out), [("device_offline", AlertStatus::Resolved)]);
    assert_eq!(
        out[0].threshold.value, 15.0,
        "same threshold at every status change"
    );
}

#[test]
fn offline_uses_the_configured_interval_until_one_is_observed() {
    let engine = AlertEngine::new(Arc::new(RuleSet::defaults(&Thresholds::default())), 10_000);
    let mut dev = DeviceAlerts::default();
    let mut out = Vec::new();
    engine.observe(&mut dev, &reading(T0, 25.0), T0, &mut out);
    engine.check_offline("device_001", &mut dev, T0 + 29_000, &mut out);
    assert!(out.is_empty());
    engine.check_offline("device_001", &mut dev, T0 + 31_000, &mut out);
    assert_eq!(statuses(&out), [("device_offline", AlertStatus::Active)]);
}

#[test]
fn acknowledge_then_resolve_keeps_the_id() {
    let engine = only(temperature_high(Duration::ZERO));
    let mut dev = DeviceAlerts::default();
    let raised = feed(&engine, &mut dev, T0, &[90.0]).remove(0);
    let acked = engine
        .acknowledge(
            "device_001",
            &mut dev,
            &raised.alert_id,
            Some("olga"),
            T0 + 1,
        )
        .expect("open alert");
    assert_eq!(acked.status, AlertStatus::Acknowledged);
    assert_eq!(acked.alert_id, raised.alert_id);
    assert_eq!(acked.timestamp, T0 + 1);
    assert_eq!(
        engine.acknowledge("device_001", &mut dev, &raised.alert_id, None, T0 + 2),
        Err(AckError::AlreadyAcknowledged(raised.alert_id.clone()))
    );
    assert_eq!(
        dev.open().collect::<Vec<_>>(),
        [(raised.alert_id.as_str(), AlertStatus::Acknowledged)]
    );
    let out = feed(&engine, &mut dev, T0 + STEP, &[70.0]);
    assert_eq!(out[0].status, AlertStatus::Resolved);
    assert_eq!(out[0].alert_id, raised.alert_id);
    assert_eq!(
        engine.acknowledge("device_001", &mut dev, &raised.alert_id, None, T0 + 3),
        Err(AckError::Unknown(raised.alert_id.clone()))
    );
    // A new episode is a new alert with a new id.
    let again = feed(&engine, &mut dev, T0 + 2 * STEP, &[95.0]);
    assert_ne!(again[0].alert_id, raised.alert_id);
}

#[test]
fn alert_ids_are_deterministic_and_dated() {
    let a = alert_id("device_001", "temperature_high", 1_706_572_800_000);
    assert_eq!(
        a,
        alert_id("device_001", "temperature_high", 1_706_572_800_000)
    );
    assert!(a.starts_with("alert_20240130_"), "{a}");
    assert_eq!(a.len(), "alert_20240130_".len() + 12);
    assert_ne!(
        a,
        alert_id("device_002", "temperature_high", 1_706_572_800_000)
    );
    assert_ne!(
        a,
        alert_id("device_001", "temperature_high", 1_706_572_800_001)
    );
    assert!(alert_id("d", "t", 0).starts_with("alert_19700101_"));
}

#[test]
fn hot_reload_keeps_open_alerts_and_resolves_removed_rule_types() {
    let mut engine = AlertEngine::new(Arc::new(RuleSet::defaults(&Thresholds::default())), STEP);
    let mut dev = DeviceAlerts::default();
    let raised = feed(&engine, &mut dev, T0, &[90.0]);
    assert_eq!(
        statuses(&raised),
        [("temperature_high", AlertStatus::Active)]
    );

    // New rules: a higher temperature_high, and no temperature_low. The open alert survives
    // and is now judged against the new clear level.
    let mut new = RuleSet::defaults(&Thresholds {
        temperature_high: 95.0,
        ..Thresholds::default()
    });
    new.rules.retain(|r| r.alert_type != "temperature_low");
    let old = engine.set_rules(Arc::new(new));
    let mut out = Vec::new();
    engine.migrate("device_001", &mut dev, &old, T0 + 1, &mut out);
    assert!(out.is_empty());
    let out = feed(&engine, &mut dev, T0 + STEP, &[91.0]);
    assert_eq!(
        statuses(&out),
        [("temperature_high", AlertStatus::Resolved)],
        "91 < new clear 92.625"
    );

    // Removing a rule with an open alert resolves it.
    let raised = feed(&engine, &mut dev, T0 + 2 * STEP, &[99.0]);
    assert_eq!(raised.len(), 1);
    let old = engine.set_rules(Arc::new(RuleSet { rules: vec![] }));
    let mut out = Vec::new();
    engine.migrate("device_001", &mut dev, &old, T0 + 3 * STEP, &mut out);
    assert_eq!(
        statuses(&out),
        [("temperature_high", AlertStatus::Resolved)]
    );
    assert_eq!(out[0].alert_id, raised[0].alert_id);
}

#[test]
fn offline_limit_has_a_floor_for_millisecond_intervals() {
    let engine = AlertEngine::new(
        Arc::new(RuleSet {
            rules: vec![AlertRule {
                alert_type: "device_offline".into(),
                severity: Severity::High,
                kind: RuleKind::Offline {
                    missed_intervals: 3.0,
                },
            }],
        }),
        1,
    );
    let mut dev = DeviceAlerts::default();
    let mut out = Vec::new();
    for i in 0..5 {
        engine.observe(&mut dev, &reading(T0 + i, 25.0), T0 + i, &mut out);
    }
    // 1 ms interval × 3 would be 3 ms; the floor holds it at MIN_OFFLINE_MS.
    engine.check_offline("device_001", &mut dev, T0 + 4 + MIN_OFFLINE_MS, &mut out);
    assert!(out.is_empty());
    engine.check_offline("device_001", &mut dev, T0 + 5 + MIN_OFFLINE_MS, &mut out);
    assert_eq!(statuses(&out), [("device_offline", AlertStatus::Active)]);
}

#[test]
fn late_readings_count_as_signs_of_life() {
    let engine = AlertEngine::new(Arc::new(RuleSet::defaults(&Thresholds::default())), STEP);
    let mut dev = DeviceAlerts::default();
    feed(&engine, &mut dev, T0, &[25.0, 25.1]);
    let mut out = Vec::new();
    // Only touched (as the processor does for late or repeated readings) for a minute.
    for s in 1..=12 {
        dev.touch(T0 + STEP + s * STEP);
        engine.check_offline("device_001", &mut dev, T0 + STEP + s * STEP + 1, &mut out);
    }
    assert!(out.is_empty(), "{out:?}");
}

#[test]
fn a_rule_that_changes_kind_keeps_its_open_alert_but_not_its_windows() {
    let mut engine = only(rate_rule());
    let mut dev = DeviceAlerts::default();
    let climb: Vec<f64> = (0..13).map(|i| 25.0 + 1.5 * i as f64).collect();
    let raised = feed(&engine, &mut dev, T0, &climb);
    assert_eq!(
        statuses(&raised),
        [("temperature_rate", AlertStatus::Active)]
    );
    // Same alert_type, now a stuck rule: the rate window must not be read as "first seen".
    let stuck = AlertRule {
        alert_type: "temperature_rate".into(),
        severity: Severity::Medium,
        kind: RuleKind::Stuck {
            parameter: Parameter::Temperature,
            hold: Duration::from_secs(60),
        },
    };
    let old = engine.set_rules(Arc::new(RuleSet { rules: vec![stuck] }));
    let mut out = Vec::new();
    engine.migrate("device_001", &mut dev, &old, T0 + 13 * STEP, &mut out);
    assert!(out.is_empty());
    assert_eq!(dev.open().count(), 1, "the open alert stays open");
    // A changing value resolves the open alert under the new rule.
    let out = feed(&engine, &mut dev, T0 + 13 * STEP, &[50.0]);
    assert_eq!(
        statuses(&out),
        [("temperature_rate", AlertStatus::Resolved)]
    );
    assert_eq!(out[0].alert_id, raised[0].alert_id);
}
