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
    /// The assignment epoch of its input partition the state was built under
    /// ([`iiot_transport::Ownership`]; `None` on a backend that never moves partitions): the
    /// record is written only while the partition is still on that assignment.
    pub epoch: Option<u64>,
    /// Who writes the record ([`crate::recovery::record::writer_tag`]; set with `epoch`).
    pub writer: Option<String>,
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
        let mut out = Vec::with_capacity(changed.len() + self.extra_states.len());
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
                epoch: None,
                writer: None,
            });
        }
        out.append(&mut self.extra_states);
        // Removals held back from the last batch (its own records are delivered by now); this
        // batch's wait for the next.
        out.append(&mut self.removals_due);
        self.removals_due = std::mem::take(&mut self.copies_to_remove);
        out
    }

    /// Adds the open alerts read back for newly assigned partitions to those put back when
    /// their devices are first seen: a device's record of partition `p` — its own, else the
    /// migration's copy there — is used only if its readings arrive on `p` (a record or copy
    /// of another partition is ignored), and replaces an earlier read of `p` (the newer read
    /// wins). Alerts folded by a migration this member made are used on a partition it
    /// migrated. Each read is kept only while its partition is held — for the folded ones, any
    /// of the partitions migrated ([`Processor::drop_partitions`]).
    pub fn add_restored(&mut self, restored: crate::recovery::Restored) {
        let crate::recovery::Restored {
            records,
            copies,
            folded,
            migrated,
            ..
        } = restored;
        for ((device, partition), open) in records {
            self.recovered
                .entry(device)
                .or_default()
                .put(Read::new(open, Source::Partition(partition)));
        }
        for ((device, partition), open) in copies {
            self.recovered
                .entry(device)
                .or_default()
                .put(Read::new(open, Source::Copy(partition)));
        }
        for (device, open) in folded {
            self.recovered
                .entry(device)
                .or_default()
                .put(Read::new(open, Source::Migrated(migrated.clone())));
        }
    }

    /// Whether alert-state records are waiting for [`Processor::take_alert_states`].
    pub fn has_alert_states(&self) -> bool {
        self.changed.as_ref().is_some_and(|c| !c.is_empty())
            || !self.extra_states.is_empty()
            || !self.removals_due.is_empty()
    }

    /// A record of `device` (holding `written` open) that somebody else wrote into
    /// alert-state partition `partition`, held here, after this member read the partition
    /// back: a member dropped from the group that did not know yet, whose record landed late.
    /// Left there, it would be what the partition's next owner reads back — an alert raised
    /// here missing, or one resolved here open again. So this member's view wins: an alert
    /// the record holds that this member never knew (not open here, not resolved here lately)
    /// is taken over — put back into the engine if its device is seen here (resolved if the
    /// engine refuses it, [`restore`]), else added to what was read back for the device —
    /// so that nobody's alert is left without an owner, and so is an acknowledgement it holds
    /// of an alert active here; and if the record then says other than this member's view,
    /// or something was taken over, the view is written again (with the next records).
    /// Returns whether it is. A device whose readings arrive on another partition is left
    /// alone.
    pub fn foreign_record(
        &mut self,
        device: &str,
        partition: i32,
        written: Vec<(Alert, i64)>,
        now_ms: i64,
        alerts: &mut Vec<Alert>,
    ) -> bool {
        if self.changed.is_none() {
            return false;
        }
        let written: Vec<(Alert, i64)> = written
            .into_iter()
            .filter(|(a, _)| a.status != AlertStatus::Resolved)
            .collect();
        let says = summary(&written);
        if let Some(dev) = self.devices.get_mut(device) {
            if dev.partition != Some(partition) {
                return false;
            }
            // An acknowledgement the record holds of an alert active here stands (the other
            // member answered it and published it): taken over, not published again.
            for (theirs, _) in written
                .iter()
                .filter(|(a, _)| a.status == AlertStatus::Acknowledged)
            {
                let active_here = dev
                    .open_alerts
                    .iter()
                    .any(|(o, _)| o.alert_id == theirs.alert_id && o.status == AlertStatus::Active);
                if !active_here {
                    continue;
                }
                let by = theirs.acknowledged_by.as_deref();
                if let Ok(acked) = self.engine.acknowledge(
                    device,
                    &mut dev.alerts,
                    &theirs.alert_id,
                    by,
                    theirs.timestamp,
                ) {
                    keep_open(dev, &acked);
                }
            }
            let unknown: Vec<(Alert, i64)> = written
                .into_iter()
                .filter(|(a, _)| {
                    !dev.open_alerts
                        .iter()
                        .any(|(o, _)| o.alert_id == a.alert_id)
                        && !dev.resolved.contains(&a.alert_id)
                })
                .collect();
            let taken_over = !unknown.is_empty();
            if taken_over {
                tracing::info!(
                    device_id = device,
                    partition,
                    alerts = unknown.len(),
                    "alerts of another member's alert-state record taken over"
                );
                let put = super::PutBack {
                    engine: &self.engine,
                    stats: &self.stats,
                    open: &mut self.open,
                    changed: self.changed.as_mut(),
                };
                // Its record is written again (with this member as the writer).
                put.into(device, dev, unknown, now_ms, alerts);
            }
            if summary(&dev.open_alerts) == says {
                return taken_over;
            }
            if let Some(changed) = self.changed.as_mut() {
                changed.push(Box::from(device));
            }
            return true;
        }
        if written.is_empty() && !self.recovered.contains_key(device) {
            // Nothing known of it here, nothing open there: nothing to take over or correct.
            return false;
        }
        let (view, taken_over) = self
            .recovered
            .entry(device.to_string())
            .or_default()
            .absorb(partition, written);
        if !taken_over && summary(&view) == says {
            return false;
        }
        self.extra_states.push(AlertState {
            device_id: device.to_string(),
            partition,
            open: view,
            epoch: None,
            writer: None,
        });
        true
    }

    /// Alerts that were open before this start: when a device is first seen here, its open
    /// alerts are put back into the alert engine, so a condition that still holds keeps its
    /// alert (and can be acknowledged) instead of raising a second one, and one that cleared
    /// resolves it. Kept until their device is seen (a backend that never moves partitions).
    pub fn set_recovered(&mut self, recovered: RecoveredAlerts) {
        self.recovered = recovered
            .into_iter()
            .map(|(device, open)| {
                let mut pending = Pending::default();
                pending.put(Read::new(open, Source::Startup));
                (device, pending)
            })
            .collect();
    }
}

/// A device's open alerts from before, waiting for it to be first seen here: one read per
/// source (each partition's record, the migration's fold, start-up).
#[derive(Debug, Clone, Default)]
pub(super) struct Pending {
    reads: Vec<Read>,
}

#[derive(Debug, Clone)]
struct Read {
    open: Vec<(Alert, i64)>,
    from: Source,
}

impl Read {
    fn new(open: Vec<(Alert, i64)>, from: Source) -> Read {
        Read { open, from }
    }
}

/// An alert acknowledged in a device's own record read back ([`Pending::acknowledge`]): the
/// alert, and the record's partition and open alerts to write back.
pub(super) type Acknowledged = (Alert, i32, Vec<(Alert, i64)>);

/// Where a read came from.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Source {
    /// Start-up (a backend that never moves partitions): kept until the device is seen.
    Startup,
    /// The device's own record in this alert-state partition.
    Partition(i32),
    /// The migration's copy in this alert-state partition.
    Copy(i32),
    /// Folded from the alerts topic by the migration of these partitions.
    Migrated(Vec<i32>),
}

impl Pending {
    /// Adds `read`, in place of an earlier one from the same partition (or fold, or start-up).
    fn put(&mut self, read: Read) {
        let same = |r: &Read| match (&r.from, &read.from) {
            (Source::Partition(a), Source::Partition(b)) | (Source::Copy(a), Source::Copy(b)) => {
                a == b
            }
            (Source::Migrated(_), Source::Migrated(_)) | (Source::Startup, Source::Startup) => true,
            _ => false,
        };
        self.reads.retain(|r| !same(r));
        self.reads.push(read);
    }

    /// The open alerts to put back for the device first seen on `partition` (`None`: a
    /// backend without partitions): its own record of that partition, else the migration's
    /// copy there, else what a migration of that partition folded here, else what was
    /// recovered at start-up. A record or copy of another partition is not the device's, nor
    /// is a fold made for other partitions: whoever migrated the device's own partition wrote
    /// a copy into it, and its owner's record there (or the absence of one once a resolution
    /// was compacted away) is what holds now. Also says whether a copy of that partition was
    /// read: once the device's own record is written there, the copy is to be removed.
    pub(super) fn take(self, partition: Option<i32>) -> (Option<Vec<(Alert, i64)>>, bool) {
        let mut reads = self.reads;
        // A copy there was read, or this member's migration of that partition wrote one.
        let copy_here = partition.is_some_and(|p| {
            reads.iter().any(|r| match &r.from {
                Source::Copy(q) => *q == p,
                Source::Migrated(from) => from.contains(&p),
                _ => false,
            })
        });
        let own = match partition {
            Some(p) => reads
                .iter()
                .rposition(|r| r.from == Source::Partition(p))
                .or_else(|| reads.iter().rposition(|r| r.from == Source::Copy(p)))
                .or_else(|| {
                    reads.iter().rposition(
                        |r| matches!(&r.from, Source::Migrated(from) if from.contains(&p)),
                    )
                })
                .or_else(|| reads.iter().rposition(|r| r.from == Source::Startup)),
            None => reads.len().checked_sub(1),
        };
        (own.map(|i| reads.swap_remove(i).open), copy_here)
    }

    /// Adds the alerts of a record another member wrote into `partition` after this member
    /// read it back ([`Processor::foreign_record`]) to the device's own record read back
    /// there — those it does not hold already, and acknowledgements of those it holds
    /// active — or takes them as that record if none was read; returns the record as it
    /// stands now, and whether anything was taken.
    fn absorb(&mut self, partition: i32, written: Vec<(Alert, i64)>) -> (Vec<(Alert, i64)>, bool) {
        let own = Source::Partition(partition);
        match self.reads.iter_mut().rev().find(|r| r.from == own) {
            Some(read) => {
                let mut taken = false;
                for (alert, raised_at) in written {
                    match read
                        .open
                        .iter_mut()
                        .find(|(a, _)| a.alert_id == alert.alert_id)
                    {
                        None => {
                            read.open.push((alert, raised_at));
                            taken = true;
                        }
                        // An acknowledgement stands (see `Processor::foreign_record`).
                        Some((ours, _))
                            if ours.status == AlertStatus::Active
                                && alert.status == AlertStatus::Acknowledged =>
                        {
                            *ours = alert;
                            taken = true;
                        }
                        Some(_) => {}
                    }
                }
                (read.open.clone(), taken)
            }
            None => {
                self.put(Read::new(written.clone(), own));
                let taken = !written.is_empty();
                (written, taken)
            }
        }
    }

    /// Acknowledges `alert_id` if the device's own record of a partition holds it open (the
    /// device not seen here yet): the acknowledged alert, and that record's partition and open
    /// alerts to write back. Copies and folds are not the device's own and are left alone
    /// (another member may hold the device's own record, where the alert may be resolved).
    pub(super) fn acknowledge(
        &mut self,
        alert_id: &str,
        by: Option<&str>,
        now_ms: i64,
    ) -> Option<Result<Acknowledged, crate::alerts::AckError>> {
        let holds = |r: &Read| {
            matches!(r.from, Source::Partition(_))
                && r.open.iter().any(|(a, _)| a.alert_id == alert_id)
        };
        if self.reads.iter().filter(|r| holds(r)).count() > 1 {
            // Own records of two partitions (one written by an older migration where the
            // producers' partitioner placed it): which is the device's is known only once it
            // reports, so not acknowledged until then.
            return Some(Err(crate::alerts::AckError::Unknown(alert_id.to_string())));
        }
        let read = self.reads.iter_mut().find(|r| {
            matches!(r.from, Source::Partition(_))
                && r.open.iter().any(|(a, _)| a.alert_id == alert_id)
        })?;
        let Source::Partition(partition) = read.from else {
            return None;
        };
        let entry = read.open.iter_mut().find(|(a, _)| a.alert_id == alert_id)?;
        if entry.0.status == AlertStatus::Acknowledged {
            return Some(Err(crate::alerts::AckError::AlreadyAcknowledged(
                alert_id.to_string(),
            )));
        }
        entry.0.status = AlertStatus::Acknowledged;
        entry.0.acknowledged_by = by.map(str::to_owned);
        entry.0.timestamp = now_ms;
        Some(Ok((entry.0.clone(), partition, read.open.clone())))
    }

    /// Whether to keep it once `revoked` are taken away: while one of its reads' partitions
    /// is held (those from start-up stay until the device is seen).
    pub(super) fn keep_without(&mut self, revoked: &[i32]) -> bool {
        self.reads.retain_mut(|r| match &mut r.from {
            Source::Startup => true,
            Source::Partition(p) | Source::Copy(p) => !revoked.contains(p),
            Source::Migrated(from) => {
                from.retain(|p| !revoked.contains(p));
                !from.is_empty()
            }
        });
        !self.reads.is_empty()
    }
}

/// What a device's open alerts say, to compare two views of them: each alert's id, status and
/// who acknowledged it, in id order.
fn summary(open: &[(Alert, i64)]) -> Vec<(String, AlertStatus, Option<String>)> {
    let mut out: Vec<_> = open
        .iter()
        .map(|(a, _)| (a.alert_id.clone(), a.status, a.acknowledged_by.clone()))
        .collect();
    out.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    out
}

/// How many ids of its alerts resolved lately a device keeps ([`DeviceState::resolved`]).
pub const RESOLVED_KEPT: usize = 8;

/// Keeps `dev`'s open alerts (each with the time it was raised) in step with the change
/// `alert`: an acknowledgement replaces the alert, a resolution removes it (and is
/// remembered).
pub(super) fn keep_open(dev: &mut DeviceState, alert: &Alert) {
    let open = &mut dev.open_alerts;
    let known = open.iter().position(|(a, _)| a.alert_id == alert.alert_id);
    match (alert.status, known) {
        (AlertStatus::Resolved, Some(i)) => {
            open.remove(i);
            remember_resolved(dev, &alert.alert_id);
        }
        (AlertStatus::Resolved, None) => remember_resolved(dev, &alert.alert_id),
        (_, Some(i)) => open[i].0 = alert.clone(),
        (_, None) => open.push((alert.clone(), alert.timestamp)),
    }
}

/// Remembers that `dev`'s alert `alert_id` was resolved here (the oldest forgotten beyond
/// [`RESOLVED_KEPT`]).
pub(super) fn remember_resolved(dev: &mut DeviceState, alert_id: &str) {
    if dev.resolved.iter().any(|id| id == alert_id) {
        return;
    }
    if dev.resolved.len() >= RESOLVED_KEPT {
        dev.resolved.remove(0);
    }
    dev.resolved.push(alert_id.to_string());
}

/// Puts a newly seen device's alerts from before (an earlier owner, or an earlier run) back
/// into the engine; returns those it took, and pushes onto `resolved` a resolution of each open
/// one it could not take — its rule type is gone (removed by a reload while the alert waited
/// here, or on another member first), or another alert of the rule is open already — so that
/// no alert stays open with nobody to resolve it.
pub(super) fn restore(
    engine: &AlertEngine,
    dev: &mut DeviceState,
    recovered: Vec<(Alert, i64)>,
    now_ms: i64,
    resolved: &mut Vec<Alert>,
) -> Vec<(Alert, i64)> {
    let mut taken = Vec::with_capacity(recovered.len());
    for (alert, raised_at) in recovered {
        if engine.restore(&mut dev.alerts, &alert, raised_at) {
            taken.push((alert, raised_at));
        } else if alert.status != AlertStatus::Resolved {
            let gone = !engine
                .rules()
                .rules
                .iter()
                .any(|r| r.alert_type == alert.alert_type);
            resolved.push(Alert {
                status: AlertStatus::Resolved,
                timestamp: now_ms,
                message: if gone {
                    "rule removed from configuration".into()
                } else {
                    "superseded by another open alert of the same rule".into()
                },
                ..alert
            });
        }
    }
    taken
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

    /// Whether alert `id` is open in `p`'s engine.
    fn open_here(p: &Processor, id: &str) -> bool {
        p.open_alert_ids().any(|a| a == id)
    }

    /// What a read of alert-state partition `partition` returns for one device's record.
    fn read_back(
        partition: i32,
        device: &str,
        open: Vec<(Alert, i64)>,
    ) -> crate::recovery::Restored {
        let mut r = crate::recovery::Restored::default();
        r.records.insert((device.to_string(), partition), open);
        r
    }

    /// An alert raised for `device` on partition `partition`, as its owner's record holds it.
    fn raised(device: &str, partition: i32) -> Vec<(Alert, i64)> {
        let mut first = processor();
        let mut alerts = Vec::new();
        first.handle_from(
            Some(partition),
            &reading(device, 1, T0, 85.0),
            T0,
            &mut alerts,
        );
        first.take_alert_states().remove(0).open
    }

    /// Issue 12, hole 2: what was read back for a partition and never put back (its device
    /// sent nothing here) must go with the partition. Otherwise, when the partition comes back
    /// after another member resolved the alert and the device's record is gone (the resolution
    /// is a tombstone, which compaction removes), the old alert is put back once more.
    #[test]
    fn what_was_read_back_for_a_revoked_partition_goes_with_it() {
        let old = raised("device_001", 3);
        let id = old[0].0.alert_id.clone();
        let mut p = processor();
        p.add_restored(read_back(3, "device_001", old));
        p.add_restored(read_back(4, "device_002", raised("device_002", 4)));
        // device_001 sends nothing here before partition 3 is taken away.
        p.drop_partitions(&[3]);
        assert!(
            !p.recovered.contains_key("device_001"),
            "dropped with partition 3"
        );
        assert!(
            p.recovered.contains_key("device_002"),
            "partition 4 is still held"
        );
        // Partition 3 comes back; its record for device_001 was compacted away meanwhile.
        p.add_restored(crate::recovery::Restored::default());
        let mut alerts = Vec::new();
        p.handle_from(
            Some(3),
            &reading("device_001", 9, T0 + 60_000, 86.0),
            T0 + 60_000,
            &mut alerts,
        );
        assert!(
            !open_here(&p, &id),
            "the alert the other member resolved is not put back: {alerts:?}"
        );
    }

    #[test]
    fn alerts_folded_at_migration_stay_while_a_migrated_partition_is_held_and_startup_ones_stay() {
        let mut p = processor();
        let mut migration = crate::recovery::Restored::default();
        migration
            .folded
            .insert("device_001".into(), raised("device_001", 1));
        migration.migrated = vec![1, 2];
        p.add_restored(migration);
        p.drop_partitions(&[1]);
        assert!(p.recovered.contains_key("device_001"), "2 is still held");
        p.drop_partitions(&[2]);
        assert!(!p.recovered.contains_key("device_001"), "none held");

        let mut startup = RecoveredAlerts::new();
        startup.insert("device_001".into(), raised("device_001", 1));
        p.set_recovered(startup);
        p.drop_partitions(&[0, 1, 2]);
        assert!(p.recovered.contains_key("device_001"), "kept until seen");
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
        p.add_restored(read_back(3, "device_001", Vec::new()));
        p.add_restored(read_back(3, "device_001", old.clone()));
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

    /// device_001 first seen here, a minute after T0, on `partition` at `temperature`: the
    /// alert changes it made.
    fn a_minute_later(p: &mut Processor, partition: i32, temperature: f64) -> Vec<Alert> {
        let mut alerts = Vec::new();
        p.handle_from(
            Some(partition),
            &reading("device_001", 9, T0 + 60_000, temperature),
            T0 + 60_000,
            &mut alerts,
        );
        alerts
    }

    /// A device's record in a partition its readings do not arrive on (the migration writes
    /// one into every partition; producers with a partitioner other than ours put the device
    /// elsewhere) is never put back, in whichever order the partitions were read: its owner's
    /// record of the device's own partition may say the alert was resolved since.
    #[test]
    fn only_the_record_of_the_partition_a_device_arrives_on_is_put_back() {
        let stale = raised("device_001", 3);
        for stale_read_last in [false, true] {
            let mut p = processor();
            let own = read_back(5, "device_001", Vec::new());
            let elsewhere = read_back(3, "device_001", stale.clone());
            if stale_read_last {
                p.add_restored(own);
                p.add_restored(elsewhere);
            } else {
                p.add_restored(elsewhere);
                p.add_restored(own);
            }
            let alerts = a_minute_later(&mut p, 5, 20.0);
            assert_eq!(
                p.open_alert_ids().count(),
                0,
                "the alert resolved on partition 5 is not put back (stale read last: \
                 {stale_read_last}): {alerts:?}"
            );
        }

        // With no record of its own partition, a copy elsewhere is not used either.
        let mut p = processor();
        p.add_restored(read_back(3, "device_001", stale.clone()));
        a_minute_later(&mut p, 5, 86.0);
        assert!(
            !open_here(&p, &stale[0].0.alert_id),
            "a record of partition 3 is not device_001's own on partition 5"
        );

        // Its own partition's copy is.
        let mut p = processor();
        p.add_restored(read_back(3, "device_001", Vec::new()));
        p.add_restored(read_back(5, "device_001", stale.clone()));
        let alerts = a_minute_later(&mut p, 5, 86.0);
        assert!(alerts.is_empty(), "the same alert continues: {alerts:?}");
        assert!(open_here(&p, &stale[0].0.alert_id));
    }

    /// What a migration folded is the device's only if it arrives on a partition migrated
    /// by that read: any other partition was migrated by its first owner, who wrote the fold
    /// into it, and its owner's record there says what holds now — nothing, once the
    /// owner's resolution was compacted away, so a fold kept here must not put it back.
    #[test]
    fn alerts_folded_at_migration_are_put_back_only_on_a_partition_that_read_migrated() {
        let old = raised("device_001", 1);
        let migration = || {
            let mut m = crate::recovery::Restored::default();
            m.folded.insert("device_001".into(), old.clone());
            m.migrated = vec![1, 2];
            m
        };
        let mut p = processor();
        p.add_restored(migration());
        let alerts = a_minute_later(&mut p, 2, 86.0);
        assert!(alerts.is_empty(), "the same alert continues: {alerts:?}");
        assert!(open_here(&p, &old[0].0.alert_id));

        let mut p = processor();
        p.add_restored(migration());
        // Partition 7, read back later, holds no record of device_001 (resolved, compacted).
        p.add_restored(crate::recovery::Restored::default());
        a_minute_later(&mut p, 7, 86.0);
        assert!(
            !open_here(&p, &old[0].0.alert_id),
            "not put back on partition 7, which the fold was not made for"
        );
    }

    /// Issue 12: an alert read back for a device whose rule type was removed by a reload
    /// while the alert waited for the device (after a rebalance, or on another member first)
    /// is resolved when the device is seen — not dropped, which would leave it open on the
    /// alerts topic with nobody to resolve it — and the device's record is written again.
    #[test]
    fn a_read_back_alert_of_a_removed_rule_type_is_resolved_when_its_device_is_seen() {
        let old = raised("device_001", 5);
        let mut p = processor();
        let mut rules = RuleSet::defaults(&Thresholds::default());
        rules.rules.retain(|r| r.alert_type != old[0].0.alert_type);
        p.set_rules(Arc::new(rules), T0, &mut Vec::new());
        p.add_restored(read_back(5, "device_001", old.clone()));
        let alerts = a_minute_later(&mut p, 5, 86.0);
        assert_eq!(alerts.len(), 1, "{alerts:?}");
        assert_eq!(alerts[0].alert_id, old[0].0.alert_id);
        assert_eq!(alerts[0].status, AlertStatus::Resolved);
        let states = p.take_alert_states();
        assert_eq!(states.len(), 1, "the record is written again");
        assert!(states[0].open.is_empty(), "with nothing open: {states:?}");
    }

    /// What a read of alert-state partition `partition` returns for a migration copy.
    fn copy_back(
        partition: i32,
        device: &str,
        open: Vec<(Alert, i64)>,
    ) -> crate::recovery::Restored {
        let mut r = crate::recovery::Restored::default();
        r.copies.insert((device.to_string(), partition), open);
        r
    }

    /// The migration's copy in the partition a device arrives on is put back (no own record
    /// there yet); the device's own record is written and the copy removed. A copy of another
    /// partition is not used.
    #[test]
    fn a_migration_copy_of_the_arrival_partition_is_put_back_and_then_removed() {
        let old = raised("device_001", 5);
        let mut p = processor();
        p.add_restored(copy_back(3, "device_001", old.clone()));
        p.add_restored(copy_back(5, "device_001", old.clone()));
        let alerts = a_minute_later(&mut p, 5, 86.0);
        assert!(alerts.is_empty(), "the same alert continues: {alerts:?}");
        assert!(open_here(&p, &old[0].0.alert_id));
        let states = p.take_alert_states();
        assert_eq!(states.len(), 1, "the own record first: {states:?}");
        assert_eq!(states[0].device_id, "device_001");
        assert_eq!((states[0].partition, states[0].open.len()), (5, 1));
        // With the next batch's records, once the own record is delivered: the copy's removal.
        let states = p.take_alert_states();
        assert_eq!(states.len(), 1, "{states:?}");
        assert_eq!(states[0].device_id, "#migrated:device_001");
        assert_eq!(states[0].partition, 5, "only the copy of its own partition");
        assert!(states[0].open.is_empty(), "a removal (empty record)");
        assert!(p.take_alert_states().is_empty());

        let mut p = processor();
        p.add_restored(copy_back(3, "device_001", old.clone()));
        a_minute_later(&mut p, 5, 86.0);
        assert!(
            !open_here(&p, &old[0].0.alert_id),
            "a copy of partition 3 is not device_001's on partition 5"
        );
    }

    /// An alert read back for a device not seen here yet (after a rebalance; an offline alert
    /// of a silent device stays so) can be acknowledged in the device's own record, which is
    /// written again; the device then continues it acknowledged. A migration copy cannot be
    /// acknowledged: another member may hold the device's own record.
    #[test]
    fn an_alert_read_back_for_a_device_not_seen_yet_can_be_acknowledged() {
        let old = raised("device_001", 5);
        let id = old[0].0.alert_id.clone();
        let mut p = processor();
        p.add_restored(read_back(5, "device_001", old.clone()));
        let acked = p
            .acknowledge(&id, Some("ops"), T0 + 1_000)
            .expect("acknowledged");
        assert_eq!(acked.status, AlertStatus::Acknowledged);
        assert_eq!(acked.acknowledged_by.as_deref(), Some("ops"));
        let states = p.take_alert_states();
        assert_eq!(states.len(), 1, "{states:?}");
        assert_eq!(states[0].partition, 5);
        assert_eq!(states[0].open[0].0.status, AlertStatus::Acknowledged);
        assert!(matches!(
            p.acknowledge(&id, None, T0 + 2_000),
            Err(crate::alerts::AckError::AlreadyAcknowledged(_))
        ));
        let alerts = a_minute_later(&mut p, 5, 86.0);
        assert!(alerts.is_empty(), "continued: {alerts:?}");
        assert!(matches!(
            p.acknowledge(&id, None, T0 + 70_000),
            Err(crate::alerts::AckError::AlreadyAcknowledged(_))
        ));

        let mut p = processor();
        p.add_restored(copy_back(5, "device_001", old.clone()));
        assert!(matches!(
            p.acknowledge(&id, None, T0 + 1_000),
            Err(crate::alerts::AckError::Unknown(_))
        ));

        // Own records of the device in two partitions: not known which is its own yet.
        let mut p = processor();
        p.add_restored(read_back(5, "device_001", old.clone()));
        p.add_restored(read_back(3, "device_001", old.clone()));
        assert!(matches!(
            p.acknowledge(&id, None, T0 + 1_000),
            Err(crate::alerts::AckError::Unknown(_))
        ));
        assert!(p.take_alert_states().is_empty());
    }

    /// The member that migrated a partition restores a device arriving there from its fold,
    /// and removes the copy its migration wrote there as well: a later owner must not find
    /// the copy once the device's own record was resolved and compacted away.
    #[test]
    fn the_migrating_member_removes_its_own_copy_too() {
        let old = raised("device_001", 2);
        let mut p = processor();
        let mut migration = crate::recovery::Restored::default();
        migration.folded.insert("device_001".into(), old.clone());
        migration.migrated = vec![1, 2];
        p.add_restored(migration);
        a_minute_later(&mut p, 2, 86.0);
        assert_eq!(p.take_alert_states().len(), 1, "the own record");
        let states = p.take_alert_states();
        assert_eq!(states.len(), 1, "{states:?}");
        assert_eq!(
            (states[0].device_id.as_str(), states[0].partition),
            ("#migrated:device_001", 2)
        );
    }

    /// `device`'s reading `seq` at `at` on `partition`, judged by `p`: the alert changes.
    fn judged(p: &mut Processor, device: &str, seq: u64, at: i64, temperature: f64) -> Vec<Alert> {
        let mut alerts = Vec::new();
        p.handle_from(
            Some(5),
            &reading(device, seq, at, temperature),
            at,
            &mut alerts,
        );
        alerts
    }

    /// What another member (dropped from the group without knowing) holds open for `device`
    /// on partition 5 after it judged the hot reading `seq` at `at` first: an alert this
    /// member never raised.
    fn raised_elsewhere(device: &str, seq: u64, at: i64) -> Vec<(Alert, i64)> {
        let mut other = processor();
        judged(&mut other, device, seq, at, 85.0);
        other.take_alert_states().remove(0).open
    }

    /// Issue 12: a record another member wrote late into a partition held here (its view from
    /// before the alert raised here) is written again with this member's view; one that says
    /// the same is left; a record of another partition than the device's is none of its
    /// business.
    #[test]
    fn a_late_record_of_another_member_is_written_again_with_this_members_view() {
        let mut p = processor();
        let raised = judged(&mut p, "device_001", 1, T0, 85.0);
        assert_eq!(raised.len(), 1);
        p.take_alert_states();

        let mut alerts = Vec::new();
        assert!(p.foreign_record("device_001", 5, Vec::new(), T0 + 1_000, &mut alerts));
        assert!(alerts.is_empty(), "{alerts:?}");
        let states = p.take_alert_states();
        assert_eq!(states.len(), 1, "{states:?}");
        assert_eq!(states[0].open[0].0.alert_id, raised[0].alert_id);

        assert!(!p.foreign_record("device_001", 5, states[0].open.clone(), T0, &mut alerts));
        assert!(!p.foreign_record("device_001", 4, Vec::new(), T0, &mut alerts));
        assert!(p.take_alert_states().is_empty());
    }

    /// An alert resolved here that a late record still holds open is not taken back: the
    /// record is written again without it, and nothing is published.
    #[test]
    fn an_alert_resolved_here_is_not_taken_back_from_a_late_record() {
        let mut p = processor();
        judged(&mut p, "device_001", 1, T0, 85.0);
        let open = p.take_alert_states().remove(0).open;
        let resolved = judged(&mut p, "device_001", 2, T0 + 5_000, 20.0);
        assert_eq!(resolved[0].status, AlertStatus::Resolved);
        p.take_alert_states();

        let mut alerts = Vec::new();
        assert!(p.foreign_record("device_001", 5, open.clone(), T0 + 6_000, &mut alerts));
        assert!(alerts.is_empty(), "{alerts:?}");
        assert!(!open_here(&p, &open[0].0.alert_id));
        let states = p.take_alert_states();
        assert!(states[0].open.is_empty(), "{states:?}");
    }

    /// An alert only a late record holds (raised by the member that wrote it, never here) is
    /// taken over: open here, so it is resolved when the device cools — not left open on the
    /// alerts topic with nobody to resolve it. Its record is written again, as this member's.
    #[test]
    fn an_alert_only_a_late_record_holds_is_taken_over_and_resolved_when_the_device_cools() {
        let mut p = processor();
        judged(&mut p, "device_001", 1, T0, 20.0);
        let theirs = raised_elsewhere("device_001", 2, T0 + 5_000);
        let id = theirs[0].0.alert_id.clone();

        let mut alerts = Vec::new();
        assert!(p.foreign_record("device_001", 5, theirs, T0 + 6_000, &mut alerts));
        assert!(alerts.is_empty(), "{alerts:?}");
        assert!(open_here(&p, &id), "taken over");
        let states = p.take_alert_states();
        assert_eq!(
            states[0].open[0].0.alert_id, id,
            "written again as this member's"
        );

        let cooled = judged(&mut p, "device_001", 3, T0 + 10_000, 20.0);
        assert_eq!(cooled.len(), 1, "{cooled:?}");
        assert_eq!(
            (cooled[0].alert_id.as_str(), cooled[0].status),
            (id.as_str(), AlertStatus::Resolved)
        );
    }

    /// A late record's alert of a rule that has an alert open here already is resolved (one
    /// alert per rule and device), once: the record is written again with this member's.
    #[test]
    fn a_late_records_alert_of_a_rule_open_here_is_resolved_once() {
        let mut p = processor();
        let ours = judged(&mut p, "device_001", 1, T0, 85.0);
        p.take_alert_states();
        let theirs = raised_elsewhere("device_001", 2, T0 + 5_000);
        assert_ne!(theirs[0].0.alert_id, ours[0].alert_id);

        let mut alerts = Vec::new();
        assert!(p.foreign_record("device_001", 5, theirs.clone(), T0 + 6_000, &mut alerts));
        assert_eq!(alerts.len(), 1, "{alerts:?}");
        assert_eq!(
            (alerts[0].alert_id.as_str(), alerts[0].status),
            (theirs[0].0.alert_id.as_str(), AlertStatus::Resolved)
        );
        let states = p.take_alert_states();
        assert_eq!(states[0].open.len(), 1);
        assert_eq!(states[0].open[0].0.alert_id, ours[0].alert_id);

        alerts.clear();
        assert!(p.foreign_record("device_001", 5, theirs, T0 + 7_000, &mut alerts));
        assert!(alerts.is_empty(), "resolved once: {alerts:?}");
    }

    /// A device not seen here yet: a late record's alerts join what was read back for it (and
    /// are put back when it reports); where the record lacks what was read back, the read back
    /// is written again. A device known nowhere here with nothing open there is left alone.
    #[test]
    fn a_late_record_of_a_device_not_seen_yet_joins_what_was_read_back() {
        let mut p = processor();
        let mut alerts = Vec::new();
        assert!(!p.foreign_record("device_009", 5, Vec::new(), T0, &mut alerts));
        assert!(!p.has_alert_states());

        let theirs = raised_elsewhere("device_001", 2, T0 + 5_000);
        let id = theirs[0].0.alert_id.clone();
        assert!(p.foreign_record("device_001", 5, theirs.clone(), T0 + 6_000, &mut alerts));
        assert_eq!(
            p.take_alert_states().len(),
            1,
            "written again as this member's"
        );
        assert!(!p.foreign_record("device_001", 5, theirs.clone(), T0 + 6_200, &mut alerts));
        assert!(p.foreign_record("device_001", 5, Vec::new(), T0 + 6_500, &mut alerts));
        let states = p.take_alert_states();
        assert_eq!(states.len(), 1, "{states:?}");
        assert_eq!(states[0].open[0].0.alert_id, id);

        let cooled = judged(&mut p, "device_001", 3, T0 + 10_000, 20.0);
        assert_eq!(cooled.len(), 1, "{cooled:?}");
        assert_eq!(
            (cooled[0].alert_id.as_str(), cooled[0].status),
            (id.as_str(), AlertStatus::Resolved)
        );
        assert!(alerts.is_empty());
    }

    /// An acknowledgement a late record holds of an alert active here stands: the other
    /// member answered it (and published it), so it is not lost for the next owner; it is
    /// not published again.
    #[test]
    fn an_acknowledgement_a_late_record_holds_stands() {
        let mut p = processor();
        let raised = judged(&mut p, "device_001", 1, T0, 85.0);
        let mut open = p.take_alert_states().remove(0).open;
        open[0].0.status = AlertStatus::Acknowledged;
        open[0].0.acknowledged_by = Some("ops".into());

        let mut alerts = Vec::new();
        assert!(!p.foreign_record("device_001", 5, open, T0 + 1_000, &mut alerts));
        assert!(alerts.is_empty(), "not published again: {alerts:?}");
        assert!(matches!(
            p.acknowledge(&raised[0].alert_id, None, T0 + 2_000),
            Err(crate::alerts::AckError::AlreadyAcknowledged(_))
        ));
        let cooled = judged(&mut p, "device_001", 2, T0 + 5_000, 20.0);
        assert_eq!(cooled[0].status, AlertStatus::Resolved);
        assert_eq!(cooled[0].acknowledged_by.as_deref(), Some("ops"));
    }
}
