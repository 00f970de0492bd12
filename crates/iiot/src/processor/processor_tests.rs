//! The processor core: validation, sequence tracking, alerts, bounds.

use std::sync::Arc;

use iiot_model::{AlertStatus, InvalidReason};

use super::*;
use crate::alerts::{RuleSet, Thresholds};
use crate::test_support::{T0, reading};

fn processor(max_devices: usize) -> Processor {
    Processor::new(
        ProcessorConfig {
            max_devices,
            ..ProcessorConfig::default()
        },
        Arc::new(RuleSet::defaults(&Thresholds::default())),
        Arc::new(ProcessorStats::default()),
    )
}

#[test]
fn duplicates_are_dead_lettered_and_late_readings_counted() {
    let mut p = processor(10);
    let mut alerts = Vec::new();
    let mut outcome = |seq: u64| {
        p.handle(
            &reading("device_001", seq, T0 + seq as i64, 25.0),
            T0 + 10,
            &mut alerts,
        )
    };
    assert_eq!(outcome(1), Outcome::Processed);
    assert_eq!(outcome(3), Outcome::Processed);
    assert_eq!(outcome(2), Outcome::Late);
    match outcome(3) {
        Outcome::DeadLetter(inv) => assert_eq!(inv.reason, InvalidReason::DuplicateSeq),
        o => panic!("expected a duplicate, got {o:?}"),
    }
    p.flush_stats();
    let s = p.stats();
    assert_eq!(s.processed.load(Ordering::Relaxed), 2);
    assert_eq!(s.late.load(Ordering::Relaxed), 1);
    assert_eq!(s.seq_gaps.load(Ordering::Relaxed), 1);
    assert_eq!(s.dead_letters_of(InvalidReason::DuplicateSeq), 1);
}

#[test]
fn bad_input_is_counted_by_reason_and_processing_continues() {
    let mut p = processor(10);
    let mut alerts = Vec::new();
    for bad in [&b"{"[..], b"", &[0xff, 0xfe], b"null", b"[1,2,3]"] {
        assert!(matches!(
            p.handle(bad, T0, &mut alerts),
            Outcome::DeadLetter(_)
        ));
    }
    let nan = String::from_utf8(reading("device_001", 1, T0, 1.0))
        .expect("utf8")
        .replace("1,\"unit\":\"°C\"", "NaN,\"unit\":\"°C\"");
    assert!(
        matches!(p.handle(nan.as_bytes(), T0, &mut alerts), Outcome::DeadLetter(ref i) if i.reason == InvalidReason::NonFinite)
    );
    assert_eq!(
        p.handle(&reading("device_001", 1, T0, 25.0), T0, &mut alerts),
        Outcome::Processed
    );
    p.flush_stats();
    assert_eq!(p.stats().dead_letters_total(), 6);
    assert_eq!(p.stats().dead_letters_of(InvalidReason::MalformedJson), 3);
}

#[test]
fn device_count_is_bounded() {
    let mut p = processor(2);
    let mut alerts = Vec::new();
    for d in ["device_001", "device_002"] {
        assert_eq!(
            p.handle(&reading(d, 1, T0, 25.0), T0, &mut alerts),
            Outcome::Processed
        );
    }
    match p.handle(&reading("device_003", 1, T0, 25.0), T0, &mut alerts) {
        Outcome::DeadLetter(inv) => assert_eq!(inv.reason, InvalidReason::DeviceLimit),
        o => panic!("expected device_limit, got {o:?}"),
    }
    // Known devices keep flowing.
    assert_eq!(
        p.handle(&reading("device_001", 2, T0 + 1, 25.0), T0, &mut alerts),
        Outcome::Processed
    );
    assert_eq!(p.device_count(), 2);
}

#[test]
fn alerts_are_tracked_acknowledged_and_resolved() {
    let mut p = processor(10);
    let mut alerts = Vec::new();
    p.handle(&reading("device_001", 1, T0, 85.0), T0, &mut alerts);
    assert_eq!(alerts.len(), 1);
    let id = alerts[0].alert_id.clone();
    assert_eq!(p.open_alert_ids().collect::<Vec<_>>(), [id.as_str()]);
    let acked = p.acknowledge(&id, Some("olga"), T0 + 1).expect("open");
    assert_eq!(acked.status, AlertStatus::Acknowledged);
    assert!(p.acknowledge("alert_nope", None, T0).is_err());
    alerts.clear();
    p.handle(
        &reading("device_001", 2, T0 + 5000, 20.0),
        T0 + 5000,
        &mut alerts,
    );
    assert_eq!(alerts.len(), 1);
    assert_eq!(alerts[0].status, AlertStatus::Resolved);
    assert_eq!(p.open_alert_ids().count(), 0);
    let s = p.stats();
    assert_eq!(
        (
            s.alerts_raised.load(Ordering::Relaxed),
            s.alerts_acknowledged.load(Ordering::Relaxed),
            s.alerts_resolved.load(Ordering::Relaxed),
            s.alerts_open.load(Ordering::Relaxed)
        ),
        (1, 1, 1, 0)
    );
}

#[test]
fn offline_devices_are_found_by_tick_and_aggregates_fill() {
    let mut p = processor(10);
    let mut alerts = Vec::new();
    for i in 0..3 {
        p.handle(
            &reading("device_001", i + 1, T0 + i as i64 * 5000, 20.0 + i as f64),
            T0 + i as i64 * 5000,
            &mut alerts,
        );
    }
    let agg = p
        .device("device_001")
        .expect("known")
        .aggregates
        .current
        .expect("rollup");
    assert_eq!(agg.count, 3);
    assert_eq!(agg.mean(iiot_model::Parameter::Temperature), Some(21.0));
    p.tick(T0 + 10_000 + 15_001, &mut alerts);
    assert_eq!(alerts.len(), 1);
    assert_eq!(alerts[0].alert_type, "device_offline");
}

#[test]
fn an_offline_notice_raises_the_offline_alert_at_once_and_a_reading_resolves_it() {
    let mut p = processor(10);
    let mut alerts = Vec::new();
    let notice = |id: &str| {
        offline::OfflineNotice {
            device_id: id.into(),
            timestamp: T0 + 1,
            cause: "DDEATH".into(),
        }
        .encode()
    };
    // Unknown devices have nothing to go offline.
    assert_eq!(
        p.handle(&notice("device_009"), T0, &mut alerts),
        Outcome::Offline
    );
    assert!(alerts.is_empty());
    p.handle(&reading("device_001", 1, T0, 20.0), T0, &mut alerts);
    assert_eq!(
        p.handle(&notice("device_001"), T0 + 10, &mut alerts),
        Outcome::Offline
    );
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert_eq!(alerts[0].alert_type, "device_offline");
    assert_eq!(alerts[0].status, AlertStatus::Active);
    assert!(alerts[0].message.starts_with("DDEATH"));
    // Once: a second notice and the next tick raise nothing more.
    p.handle(&notice("device_001"), T0 + 20, &mut alerts);
    p.tick(T0 + 1_000_000, &mut alerts);
    assert_eq!(alerts.len(), 1);
    p.handle(
        &reading("device_001", 2, T0 + 5_000, 20.0),
        T0 + 5_000,
        &mut alerts,
    );
    assert_eq!(alerts.last().map(|a| a.status), Some(AlertStatus::Resolved));
}

#[test]
fn a_rebalance_drops_the_devices_of_revoked_partitions_and_their_open_alerts() {
    let mut p = processor(10);
    let mut alerts = Vec::new();
    p.handle_from(
        Some(1),
        &reading("device_001", 1, T0, 85.0),
        T0,
        &mut alerts,
    );
    p.handle_from(
        Some(2),
        &reading("device_002", 1, T0, 85.0),
        T0,
        &mut alerts,
    );
    p.handle(&reading("device_003", 1, T0, 25.0), T0, &mut alerts);
    p.flush_stats();
    assert_eq!(alerts.len(), 2);
    assert_eq!(p.stats().alerts_open.load(Ordering::Relaxed), 2);

    assert_eq!(p.drop_partitions(&[]), 0);
    assert_eq!(p.drop_partitions(&[1, 7]), 1);
    assert!(p.device("device_001").is_none());
    assert_eq!(p.device("device_002").and_then(|d| d.partition), Some(2));
    assert!(p.device("device_003").is_some(), "no partition known: kept");
    let open: Vec<&str> = p.open_alert_ids().collect();
    assert_eq!(open, [alerts[1].alert_id.as_str()]);
    let s = p.stats();
    assert_eq!(s.alerts_open.load(Ordering::Relaxed), 1);
    assert_eq!(s.devices.load(Ordering::Relaxed), 2);

    // Partition 1 comes back later: the device starts afresh (no duplicate-seq verdict).
    alerts.clear();
    let again = p.handle_from(
        Some(1),
        &reading("device_001", 1, T0 + 10, 25.0),
        T0 + 10,
        &mut alerts,
    );
    assert_eq!(again, Outcome::Processed);
}

#[test]
fn recovered_open_alerts_are_kept_acknowledged_and_resolved_not_raised_again() {
    // A first processor raises an alert, then "restarts".
    let mut before = processor(10);
    let mut alerts = Vec::new();
    before.handle(&reading("device_001", 1, T0, 85.0), T0, &mut alerts);
    assert_eq!(alerts.len(), 1);
    let old = alerts[0].clone();

    let mut recovered = RecoveredAlerts::new();
    recovered.insert("device_001".into(), vec![(old.clone(), T0)]);
    let mut p = processor(10);
    p.set_recovered(recovered);
    alerts.clear();
    // Still hot: the old alert holds, nothing new is raised.
    p.handle(
        &reading("device_001", 2, T0 + 5000, 86.0),
        T0 + 5000,
        &mut alerts,
    );
    assert!(alerts.is_empty(), "{alerts:?}");
    assert_eq!(
        p.open_alert_ids().collect::<Vec<_>>(),
        [old.alert_id.as_str()]
    );
    assert_eq!(p.stats().alerts_open.load(Ordering::Relaxed), 1);
    let acked = p
        .acknowledge(&old.alert_id, None, T0 + 6000)
        .expect("restored alert is owned");
    assert_eq!(acked.status, AlertStatus::Acknowledged);
    // Cooled down: the old alert resolves under its own id.
    p.handle(
        &reading("device_001", 3, T0 + 10_000, 20.0),
        T0 + 10_000,
        &mut alerts,
    );
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert_eq!(alerts[0].alert_id, old.alert_id);
    assert_eq!(alerts[0].status, AlertStatus::Resolved);
    assert_eq!(p.stats().alerts_open.load(Ordering::Relaxed), 0);
}

#[test]
fn a_reading_received_by_a_clock_far_in_the_future_is_processed_without_overflow() {
    // Found by the libFuzzer target `reading_decode` (crash input: a received clock near
    // 7.1e18 ms): the event → processed latency in µs overflowed a multiplication.
    let mut p = processor(10);
    let mut alerts = Vec::new();
    let clocks = Clocks {
        judged_at: T0,
        received_at: i64::MAX,
    };
    let payload = reading("device_001", 1, T0, 25.0);
    assert!(matches!(
        p.judge(Some(0), b"", &payload, clocks, &mut alerts),
        Judged::Processed(..)
    ));
}

/// Properties of the whole judging path over generated message sequences (the libFuzzer
/// target `fuzz/fuzz_targets/reading_decode.rs` runs the same entry point without bounds).
mod judge_properties {
    use std::collections::HashSet;

    use proptest::prelude::*;

    use super::*;

    /// One message: a reading of one of three devices, maybe corrupted, maybe keyed, judged by
    /// a clock that may be far off (a broker timestamp).
    fn message() -> impl Strategy<Value = (Vec<u8>, Vec<u8>, i64)> {
        (
            0u32..3,
            0u64..8,
            -600_000i64..600_000,
            -100.0f64..300.0,
            prop::option::of((any::<prop::sample::Index>(), any::<u8>())),
            prop::option::of(0u32..4),
            prop_oneof![Just(0i64), any::<i64>(), -1_000_000i64..1_000_000],
        )
            .prop_map(
                |(device, seq, skew, temperature, corrupt, key, judged_off)| {
                    let id = iiot_model::device_id(device + 1);
                    let mut bytes = reading(&id, seq, T0 + skew, temperature);
                    if let Some((at, byte)) = corrupt {
                        let i = at.index(bytes.len());
                        bytes[i] = byte;
                    }
                    let key = key
                        .map(|k| iiot_model::device_id(k + 1))
                        .unwrap_or_default();
                    (key.into_bytes(), bytes, judged_off)
                },
            )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]

        #[test]
        fn any_message_sequence_is_judged_without_panic_and_without_duplicate_alerts(
            messages in prop::collection::vec(message(), 1..40),
            // The receiver's clock, usually right, sometimes anything.
            received_off in prop_oneof![4 => Just(0i64), 1 => any::<i64>()],
        ) {
            let mut p = processor(2);
            let mut alerts = Vec::new();
            let mut open = HashSet::new();
            for (i, (key, payload, judged_off)) in messages.iter().enumerate() {
                let received_at = (T0 + i as i64 * 1000).saturating_add(received_off);
                let clocks = Clocks {
                    judged_at: received_at.saturating_add(*judged_off),
                    received_at,
                };
                let before = alerts.len();
                match p.judge(Some(0), key, payload, clocks, &mut alerts) {
                    Judged::Processed(r, _) | Judged::Late(r, _) => {
                        prop_assert!(iiot_model::device_id_is_valid(&r.device_id));
                    }
                    Judged::Rejected(invalid) => prop_assert!(!invalid.detail.is_empty()),
                    Judged::Offline => {}
                }
                p.tick(received_at.saturating_add(500), &mut alerts);
                for a in &alerts[before..] {
                    let slot = (a.device_id.clone(), a.alert_type.clone());
                    match a.status {
                        AlertStatus::Active => {
                            prop_assert!(open.insert(slot), "a second open {}", a.alert_type);
                        }
                        AlertStatus::Resolved => {
                            open.remove(&slot);
                        }
                        AlertStatus::Acknowledged => {}
                    }
                }
            }
        }
    }
}
