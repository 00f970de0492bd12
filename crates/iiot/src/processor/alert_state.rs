//! Each device's open alerts, kept for its record on the alert-state topic, and the open
//! alerts read back for newly assigned partitions ([`crate::recovery`]), put back into the
//! engine when their device is first seen here.
//!
//! The processor only keeps the state; the worker loop ([`super::run`]) takes it after every
//! alert change and hands it to the topic sink, which writes it before the input is committed.

use iiot_model::{Alert, AlertStatus};

use super::{DeviceState, Processor, RecoveredAlerts};
use crate::alerts::AlertEngine;

/// The open alerts of one device after a change, for its alert-state record: written into the
/// partition of the alert-state topic with the number of the input partition its readings
/// arrive on.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertState {
    /// The device (the record's key).
    pub device_id: String,
    /// Its input partition.
    pub partition: i32,
    /// Its open alerts (none: every alert resolved), each with the time it was raised.
    pub open: Vec<(Alert, i64)>,
}

impl Processor {
    /// Keeps, from now on, which devices' open alerts changed, for
    /// [`Processor::take_alert_states`] (on a backend with an alert-state topic).
    pub fn keep_alert_states(&mut self) {
        self.changed.get_or_insert_with(Vec::new);
    }

    /// The devices whose open alerts changed (raised, acknowledged, resolved, or put back from
    /// an earlier owner) since the last call, with their open alerts now. Devices without a
    /// known input partition are left out (nothing to co-partition with).
    pub fn take_alert_states(&mut self) -> Vec<AlertState> {
        let Some(changed) = self.changed.as_mut() else {
            return Vec::new();
        };
        let mut out = Vec::with_capacity(changed.len());
        for device_id in changed.drain(..) {
            let Some(dev) = self.devices.get(&device_id) else {
                continue;
            };
            let Some(partition) = dev.partition else {
                continue;
            };
            if out.iter().any(|s: &AlertState| *s.device_id == *device_id) {
                continue;
            }
            out.push(AlertState {
                device_id: device_id.into(),
                partition,
                open: dev.open_alerts.clone(),
            });
        }
        out
    }

    /// Adds open alerts read back for newly assigned partitions to those put back when their
    /// devices are first seen (a device's entry replaces an earlier one: the newer read wins).
    pub fn add_recovered(&mut self, recovered: RecoveredAlerts) {
        self.recovered.extend(recovered);
    }

    /// Alerts that were open before this start: when a device is first seen here, its open
    /// alerts are put back into the alert engine, so a condition that still holds keeps its
    /// alert (and can be acknowledged) instead of raising a second one, and one that cleared
    /// resolves it.
    pub fn set_recovered(&mut self, recovered: RecoveredAlerts) {
        self.recovered = recovered;
    }
}

/// Keeps `open` (a device's open alerts, each with the time it was raised) in step with the
/// change `alert`: an acknowledgement replaces the alert, a resolution removes it.
pub(super) fn keep_open(open: &mut Vec<(Alert, i64)>, alert: &Alert) {
    let known = open.iter().position(|(a, _)| a.alert_id == alert.alert_id);
    match (alert.status, known) {
        (AlertStatus::Resolved, Some(i)) => {
            open.remove(i);
        }
        (AlertStatus::Resolved, None) => {}
        (_, Some(i)) => open[i].0 = alert.clone(),
        (_, None) => open.push((alert.clone(), alert.timestamp)),
    }
}

/// Puts a newly seen device's alerts from before (an earlier owner, or an earlier run) back
/// into the engine; returns those it took.
pub(super) fn restore(
    engine: &AlertEngine,
    dev: &mut DeviceState,
    recovered: Vec<(Alert, i64)>,
) -> Vec<(Alert, i64)> {
    recovered
        .into_iter()
        .filter(|(alert, raised_at)| engine.restore(&mut dev.alerts, alert, *raised_at))
        .collect()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::alerts::{RuleSet, Thresholds};
    use crate::processor::{ProcessorConfig, ProcessorStats};
    use crate::test_support::{T0, reading};

    fn processor() -> Processor {
        let mut p = Processor::new(
            ProcessorConfig::default(),
            Arc::new(RuleSet::defaults(&Thresholds::default())),
            Arc::new(ProcessorStats::default()),
        );
        p.keep_alert_states();
        p
    }

    #[test]
    fn every_alert_change_yields_the_devices_open_alerts_for_its_input_partition() {
        let mut p = processor();
        let mut alerts = Vec::new();
        p.handle_from(
            Some(4),
            &reading("device_001", 1, T0, 85.0),
            T0,
            &mut alerts,
        );
        p.handle_from(
            Some(7),
            &reading("device_002", 1, T0, 25.0),
            T0,
            &mut alerts,
        );
        let states = p.take_alert_states();
        assert_eq!(
            states.len(),
            1,
            "only the device whose alerts changed: {states:?}"
        );
        assert_eq!(
            (states[0].device_id.as_str(), states[0].partition),
            ("device_001", 4)
        );
        assert_eq!(states[0].open.len(), 1);
        assert_eq!(states[0].open[0].1, T0, "raised at the hot reading");
        assert!(p.take_alert_states().is_empty(), "taken once");

        let id = alerts[0].alert_id.clone();
        p.acknowledge(&id, Some("ops"), T0 + 1).expect("open");
        let states = p.take_alert_states();
        assert_eq!(states[0].open[0].0.status, AlertStatus::Acknowledged);

        p.handle_from(
            Some(4),
            &reading("device_001", 2, T0 + 5000, 20.0),
            T0 + 5000,
            &mut alerts,
        );
        let states = p.take_alert_states();
        assert_eq!(states.len(), 1);
        assert!(states[0].open.is_empty(), "resolved: none open");
    }

    #[test]
    fn without_alert_state_nothing_is_kept() {
        let mut p = Processor::new(
            ProcessorConfig::default(),
            Arc::new(RuleSet::defaults(&Thresholds::default())),
            Arc::new(ProcessorStats::default()),
        );
        let mut alerts = Vec::new();
        p.handle_from(
            Some(1),
            &reading("device_001", 1, T0, 85.0),
            T0,
            &mut alerts,
        );
        assert!(p.take_alert_states().is_empty());
    }

    #[test]
    fn a_restored_device_is_written_again_and_a_newer_read_replaces_an_older_one() {
        let mut first = processor();
        let mut alerts = Vec::new();
        first.handle_from(
            Some(3),
            &reading("device_001", 1, T0, 85.0),
            T0,
            &mut alerts,
        );
        let old = first.take_alert_states().remove(0).open;

        let mut p = processor();
        let mut stale = RecoveredAlerts::new();
        stale.insert("device_001".into(), Vec::new());
        p.add_recovered(stale);
        let mut newer = RecoveredAlerts::new();
        newer.insert("device_001".into(), old.clone());
        p.add_recovered(newer);
        alerts.clear();
        p.handle_from(
            Some(3),
            &reading("device_001", 2, T0 + 5000, 86.0),
            T0 + 5000,
            &mut alerts,
        );
        assert!(alerts.is_empty(), "the same alert continues: {alerts:?}");
        let states = p.take_alert_states();
        assert_eq!(states.len(), 1, "written into the partition it arrives on");
        assert_eq!(states[0].open[0].0.alert_id, old[0].0.alert_id);
        assert_eq!(states[0].partition, 3);
    }
}
