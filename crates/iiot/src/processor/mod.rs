//! The processor stage (SPEC §4): validation → dead letters, per-device `seq` tracking,
//! aggregates, and the alert engine.
//!
//! - this file: [`Processor`], the synchronous core — one message in, an [`Outcome`] and
//!   alerts out. It is what the criterion benchmark measures.
//! - [`seq`]: gaps, duplicates, reordering. [`aggregate`]: per-minute rollups.
//! - [`stats`]: shared counters. [`dead_letter`]: the dead-letter envelope.
//! - [`alert_state`]: each device's open alerts for its alert-state record, and the alerts
//!   read back for newly assigned partitions (put back when their device is first seen).
//! - [`run`]: the async loop of one worker, from a [`iiot_transport::Subscriber`] to the
//!   role's [`crate::sinks`], committing its input only after the sinks took the verdicts.
//! - [`group`]: the workers of a role as one consumer group, acknowledgements routed to them.
//!
//! The processor owns per-device state; it never blocks and never panics on input.

pub mod aggregate;
pub mod alert_state;
pub mod dead_letter;
pub mod group;
pub mod offline;
pub mod run;
pub mod seq;
pub mod stats;

use std::sync::Arc;
use std::sync::atomic::Ordering;

use hashbrown::HashMap;
use hdrhistogram::Histogram;
use iiot_model::{Alert, AlertStatus, Invalid, InvalidReason, Limits, Reading, decode_text};

use crate::alerts::{AckError, AlertEngine, DeviceAlerts, RuleSet};
use aggregate::Aggregates;
pub use alert_state::AlertState;
use seq::{SeqState, SeqVerdict};
pub use stats::ProcessorStats;

/// Settings of the processor core.
#[derive(Debug, Clone)]
pub struct ProcessorConfig {
    /// Message limits (size, clock skew).
    pub limits: Limits,
    /// Send interval assumed for a device until its own is observed (offline detection).
    pub default_interval_ms: i64,
    /// Most devices tracked at once; readings of further new devices are dead-lettered
    /// (`device_limit`) so memory stays bounded whatever arrives.
    pub max_devices: usize,
}

impl Default for ProcessorConfig {
    fn default() -> Self {
        ProcessorConfig {
            limits: Limits::default(),
            default_interval_ms: 5_000,
            max_devices: 1_000_000,
        }
    }
}

impl ProcessorConfig {
    /// The processor settings of `config`.
    pub fn from_config(config: &crate::config::Config) -> ProcessorConfig {
        ProcessorConfig {
            limits: Limits {
                max_message_bytes: config.processor.max_message_bytes,
                max_future_ms: config.processor.max_future_skew.as_millis() as i64,
                ..Limits::default()
            },
            default_interval_ms: config.simulator.send_interval.as_millis() as i64,
            max_devices: config.processor.max_devices,
        }
    }
}

/// What became of one message.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// A valid reading, fed to the alert engine.
    Processed,
    /// A valid reading older than one already processed for its device: counted and
    /// aggregated, not fed to the rules (which need event-time order).
    Late,
    /// Rejected: goes to the dead-letter topic with this reason.
    DeadLetter(Invalid),
    /// An offline notice (see [`Judged::Offline`]).
    Offline,
}

/// What became of one message, with the decoded reading and the message as checked text when
/// it was accepted (so the sinks need neither decode it nor check its UTF-8 again).
#[derive(Debug)]
pub enum Judged<'a> {
    /// A valid reading, fed to the alert engine.
    Processed(Reading<'a>, &'a str),
    /// A valid reading older than one already processed for its device (see [`Outcome::Late`]).
    Late(Reading<'a>, &'a str),
    /// Rejected: goes to the dead-letter topic with this reason.
    Rejected(Invalid),
    /// An [`offline::OfflineNotice`]: the device's offline alert was raised (if it is known
    /// here and had none open). Nothing for the sinks.
    Offline,
}

/// The two clocks a message is judged by, Unix ms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Clocks {
    /// What validation compares the event time with (future skew, staleness): the broker's
    /// timestamp of the message where it has one, so every role that reads the same message
    /// reaches the same verdict.
    pub judged_at: i64,
    /// The receiver's clock: liveness (offline detection) and latency.
    pub received_at: i64,
}

impl Clocks {
    /// Both clocks at `now_ms`.
    pub fn at(now_ms: i64) -> Clocks {
        Clocks {
            judged_at: now_ms,
            received_at: now_ms,
        }
    }
}

/// Everything the processor keeps about one device.
#[derive(Debug, Clone, Default)]
pub struct DeviceState {
    /// Sequence tracking.
    pub seq: SeqState,
    /// Alert rule state.
    pub alerts: DeviceAlerts,
    /// Per-minute aggregates.
    pub aggregates: Aggregates,
    /// The input partition its readings arrive on (`None` until one arrives through
    /// [`Processor::handle_from`]); a rebalance that takes the partition away drops the device.
    pub partition: Option<i32>,
    /// Its open alerts as last published, each with the time it was raised: what its
    /// alert-state record holds ([`Processor::take_alert_states`]).
    pub open_alerts: Vec<(Alert, i64)>,
    /// The ids of its alerts resolved here lately (at most [`alert_state::RESOLVED_KEPT`]):
    /// a record written by another member that still holds one open is not taken for an
    /// alert this member never knew ([`Processor::foreign_record`]).
    pub resolved: Vec<String>,
}

/// Alerts that were open when the processors last stopped, by device, each with the time it
/// was raised: read back from the alerts topic at start-up (see [`Processor::set_recovered`]).
pub type RecoveredAlerts = hashbrown::HashMap<String, Vec<(Alert, i64)>>;

/// What putting a device's alerts from before back into the engine touches besides the
/// device (fields of [`Processor`], borrowed apart from its devices).
struct PutBack<'p> {
    engine: &'p AlertEngine,
    stats: &'p ProcessorStats,
    open: &'p mut HashMap<String, Box<str>>,
    changed: Option<&'p mut Vec<Box<str>>>,
}

impl PutBack<'_> {
    /// Puts `recovered` (alerts of `device` from before: read back, or written by another
    /// member) back into `dev`: each one the engine takes is open here from now on, each one
    /// it refuses is resolved into `alerts` ([`alert_state::restore`]); the device's record
    /// is written again if anything changed.
    fn into(
        self,
        device: &str,
        dev: &mut DeviceState,
        recovered: Vec<(Alert, i64)>,
        now_ms: i64,
        alerts: &mut Vec<Alert>,
    ) {
        let before = alerts.len();
        let restored = alert_state::restore(self.engine, dev, recovered, now_ms, alerts);
        for a in &alerts[before..] {
            // Never counted open here: counted resolved, the open gauge unchanged.
            self.stats.alerts_open.fetch_add(1, Ordering::Relaxed);
            self.stats.alert(AlertStatus::Resolved);
            alert_state::remember_resolved(dev, &a.alert_id);
        }
        // Written again from here, into the partition it really arrives on (an alert folded
        // from the alerts topic had no record yet; one resolved here leaves the record).
        if (!restored.is_empty() || alerts.len() > before)
            && let Some(changed) = self.changed
        {
            changed.push(Box::from(device));
        }
        for (alert, raised_at) in restored {
            self.open.insert(alert.alert_id.clone(), Box::from(device));
            self.stats.alerts_open.fetch_add(1, Ordering::Relaxed);
            dev.open_alerts.push((alert, raised_at));
        }
    }
}

/// The processor core.
pub struct Processor {
    config: ProcessorConfig,
    engine: AlertEngine,
    devices: HashMap<Box<str>, DeviceState>,
    /// Open alert id → device, for acknowledgements.
    open: HashMap<String, Box<str>>,
    stats: Arc<ProcessorStats>,
    /// Counts not yet added to `stats` (see [`Processor::flush_stats`]).
    local: LocalCounts,
    latency_us: Histogram<u64>,
    /// Open alerts from before (this start, or the earlier owner of a partition), put back
    /// (and forgotten) when their device is first seen: a device dropped by a rebalance and
    /// seen again later gets none of this stale snapshot, and what was read back for a
    /// partition goes when the partition does ([`Processor::drop_partitions`]).
    recovered: HashMap<String, alert_state::Pending>,
    /// Whether alert changes are kept for alert-state records (`None`: not asked for; the
    /// devices whose alerts changed since the last [`Processor::take_alert_states`] otherwise).
    changed: Option<Vec<Box<str>>>,
    /// Alert-state records to write besides the changed devices' (with `changed` only): the
    /// own records of devices not seen here yet that were acknowledged, and removals of the
    /// migration's copies their own records replace.
    extra_states: Vec<AlertState>,
    /// Removals of migration copies whose device's own record goes out with this batch: moved
    /// to `extra_states` at the next [`Processor::take_alert_states`].
    copies_to_remove: Vec<AlertState>,
    /// Those of the last batch, written with this one's records.
    removals_due: Vec<AlertState>,
}

#[derive(Debug, Default)]
struct LocalCounts {
    processed: u64,
    late: u64,
    seq_gaps: u64,
    seq_restarts: u64,
    devices: u64,
    dead_letters: [u64; InvalidReason::ALL.len()],
}

impl Processor {
    /// A processor with `rules`, counting into `stats`.
    pub fn new(config: ProcessorConfig, rules: Arc<RuleSet>, stats: Arc<ProcessorStats>) -> Self {
        Processor {
            engine: AlertEngine::new(rules, config.default_interval_ms),
            config,
            devices: HashMap::new(),
            open: HashMap::new(),
            stats,
            local: LocalCounts::default(),
            latency_us: stats::new_latency_histogram(),
            recovered: HashMap::new(),
            changed: None,
            extra_states: Vec::new(),
            copies_to_remove: Vec::new(),
            removals_due: Vec::new(),
        }
    }

    /// The shared counters.
    pub fn stats(&self) -> &Arc<ProcessorStats> {
        &self.stats
    }

    /// Handles one message received at `now_ms`; alerts raised or resolved are appended to
    /// `alerts`.
    pub fn handle(&mut self, payload: &[u8], now_ms: i64, alerts: &mut Vec<Alert>) -> Outcome {
        self.handle_from(None, payload, now_ms, alerts)
    }

    /// [`Processor::handle`] for a message read from input `partition`, remembered with the
    /// device so that [`Processor::drop_partitions`] can let it go after a rebalance.
    pub fn handle_from(
        &mut self,
        partition: Option<i32>,
        payload: &[u8],
        now_ms: i64,
        alerts: &mut Vec<Alert>,
    ) -> Outcome {
        match self.judge(partition, &[], payload, Clocks::at(now_ms), alerts) {
            Judged::Processed(..) => Outcome::Processed,
            Judged::Late(..) => Outcome::Late,
            Judged::Rejected(invalid) => Outcome::DeadLetter(invalid),
            Judged::Offline => Outcome::Offline,
        }
    }

    /// Judges one message: decodes and validates it (against `clocks.judged_at`; a non-empty
    /// `key` must be the payload's device id), tracks its device's `seq`, aggregates it and
    /// feeds it to the alert engine (on `clocks.received_at`). Alerts raised or resolved are
    /// appended to `alerts`; the accepted reading is returned, borrowing from `payload`.
    pub fn judge<'a>(
        &mut self,
        partition: Option<i32>,
        key: &[u8],
        payload: &'a [u8],
        clocks: Clocks,
        alerts: &mut Vec<Alert>,
    ) -> Judged<'a> {
        let now_ms = clocks.received_at;
        if let Some(notice) = offline::OfflineNotice::parse(payload) {
            self.went_offline(&notice, now_ms, alerts);
            return Judged::Offline;
        }
        let (reading, text) = match decode_text(payload, clocks.judged_at, &self.config.limits) {
            Ok(decoded) => decoded,
            Err(invalid) => return Judged::Rejected(self.reject(invalid)),
        };
        if !keyed_right(key, &reading.device_id) {
            return Judged::Rejected(self.reject(key_mismatch(key, &reading.device_id)));
        }
        let at_capacity = self.devices.len() >= self.config.max_devices;
        let dev = match self.devices.get_mut(&*reading.device_id) {
            Some(dev) => dev,
            None if at_capacity => {
                return Judged::Rejected(self.reject(Invalid::new(
                    InvalidReason::DeviceLimit,
                    format!("already tracking {} devices", self.config.max_devices),
                )));
            }
            None => {
                self.local.devices += 1;
                let dev = self
                    .devices
                    .entry(Box::from(&*reading.device_id))
                    .or_default();
                let (recovered, copy_here) = self
                    .recovered
                    .remove(&*reading.device_id)
                    .map_or((None, false), |pending| pending.take(partition));
                if let (true, Some(p), Some(_)) = (copy_here, partition, self.changed.as_ref()) {
                    // The device's own record (written from here) replaces the migration's
                    // copy in its partition: removed with the next batch's records, once the
                    // own record is delivered (a later owner must find one of the two).
                    self.copies_to_remove.push(AlertState {
                        device_id: crate::recovery::record::copy_key(&reading.device_id),
                        partition: p,
                        open: Vec::new(),
                        epoch: None,
                        writer: None,
                    });
                }
                if let Some(recovered) = recovered {
                    let put = PutBack {
                        engine: &self.engine,
                        stats: &self.stats,
                        open: &mut self.open,
                        changed: self.changed.as_mut(),
                    };
                    put.into(&reading.device_id, dev, recovered, now_ms, alerts);
                }
                dev
            }
        };
        // Any decoded reading of a known device is a sign of life, in order or not.
        dev.alerts.touch(now_ms);
        if partition.is_some() {
            dev.partition = partition;
        }
        match sequence(&mut self.local, dev, &reading) {
            Sequence::Next => {}
            Sequence::Late => return Judged::Late(reading, text),
            Sequence::Duplicate(invalid) => return Judged::Rejected(self.reject(invalid)),
        }
        dev.aggregates.add(&reading);
        let before = alerts.len();
        self.engine
            .observe(&mut dev.alerts, &reading, now_ms, alerts);
        // Saturating: the receiver's clock may be anything (found by the fuzz target
        // `reading_decode`: a clock ~584,000 years past the event overflowed the product).
        let latency_us = now_ms
            .saturating_sub(reading.timestamp)
            .max(0)
            .unsigned_abs()
            .saturating_mul(1000);
        // Saturates instead of failing for latencies beyond the histogram's hour.
        self.latency_us.saturating_record(latency_us.max(1));
        self.local.processed += 1;
        self.track(before, alerts);
        Judged::Processed(reading, text)
    }

    /// Raises the offline alert of the device `notice` names, at `now_ms`.
    fn went_offline(
        &mut self,
        notice: &offline::OfflineNotice,
        now_ms: i64,
        alerts: &mut Vec<Alert>,
    ) {
        let Some(dev) = self.devices.get_mut(notice.device_id.as_str()) else {
            return;
        };
        let before = alerts.len();
        self.engine.declare_offline(
            &notice.device_id,
            &mut dev.alerts,
            now_ms,
            &notice.cause,
            alerts,
        );
        self.track(before, alerts);
    }

    /// Counts `invalid` as a dead letter of its reason and hands it back.
    pub(crate) fn reject(&mut self, invalid: Invalid) -> Invalid {
        self.local.dead_letters[invalid.reason.index()] += 1;
        invalid
    }

    /// Keeps the open-alert index, each device's open alerts and the counters in step with
    /// alerts appended since `before`.
    fn track(&mut self, before: usize, alerts: &[Alert]) {
        for a in &alerts[before..] {
            self.stats.alert(a.status);
            if let Some(dev) = self.devices.get_mut(a.device_id.as_str()) {
                alert_state::keep_open(dev, a);
                if let Some(changed) = self.changed.as_mut() {
                    changed.push(Box::from(a.device_id.as_str()));
                }
            }
            match a.status {
                AlertStatus::Active => {
                    self.open
                        .insert(a.alert_id.clone(), Box::from(a.device_id.as_str()));
                }
                AlertStatus::Resolved => {
                    self.open.remove(&a.alert_id);
                }
                AlertStatus::Acknowledged => {}
            }
        }
    }

    /// Periodic work at `now_ms` (receiver clock): offline detection for every device.
    pub fn tick(&mut self, now_ms: i64, alerts: &mut Vec<Alert>) {
        let before = alerts.len();
        for (id, dev) in self.devices.iter_mut() {
            self.engine
                .check_offline(id, &mut dev.alerts, now_ms, alerts);
        }
        self.track(before, alerts);
    }

    /// Acknowledges an open alert; returns the alert to publish.
    pub fn acknowledge(
        &mut self,
        alert_id: &str,
        by: Option<&str>,
        now_ms: i64,
    ) -> Result<Alert, AckError> {
        let Some(device) = self.open.get(alert_id) else {
            return self.acknowledge_read_back(alert_id, by, now_ms);
        };
        let dev = self
            .devices
            .get_mut(device)
            .ok_or_else(|| AckError::Unknown(alert_id.to_string()))?;
        let alert = self
            .engine
            .acknowledge(device, &mut dev.alerts, alert_id, by, now_ms)?;
        self.stats.alert(alert.status);
        alert_state::keep_open(dev, &alert);
        if let Some(changed) = self.changed.as_mut() {
            changed.push(device.clone());
        }
        Ok(alert)
    }

    /// Acknowledges an alert read back for a device not seen here yet, in the device's own
    /// record (after a rebalance an alert waits there until its device reports — an offline
    /// alert for as long as the device stays silent); the record is written again.
    fn acknowledge_read_back(
        &mut self,
        alert_id: &str,
        by: Option<&str>,
        now_ms: i64,
    ) -> Result<Alert, AckError> {
        let unknown = || AckError::Unknown(alert_id.to_string());
        let (device, answer) = self
            .recovered
            .iter_mut()
            .find_map(|(device, pending)| {
                pending
                    .acknowledge(alert_id, by, now_ms)
                    .map(|answer| (device.clone(), answer))
            })
            .ok_or_else(unknown)?;
        let (alert, partition, open) = answer?;
        self.stats.alert(alert.status);
        if self.changed.is_some() {
            self.extra_states.push(AlertState {
                device_id: device,
                partition,
                open,
                epoch: None,
                writer: None,
            });
        }
        Ok(alert)
    }

    /// Swaps in new rules (hot reload); alerts of removed rule types are resolved into `alerts`.
    pub fn set_rules(&mut self, rules: Arc<RuleSet>, now_ms: i64, alerts: &mut Vec<Alert>) {
        let before = alerts.len();
        let old = self.engine.set_rules(rules);
        for (id, dev) in self.devices.iter_mut() {
            self.engine
                .migrate(id, &mut dev.alerts, &old, now_ms, alerts);
        }
        self.track(before, alerts);
    }

    /// Forgets every device whose readings came from one of `revoked` (a consumer-group
    /// rebalance gave those partitions to another member, which rebuilds their state from the
    /// readings it reads from the last committed offset). Their open alerts leave this
    /// processor's index; the new owner raises again whatever still holds. What was read back
    /// for those partitions and not put back yet goes too: the new owner reads it itself, and
    /// if they come back here they are read back again — a snapshot kept across the time
    /// another member owned them could put back an alert that member resolved. Returns how
    /// many devices were dropped.
    pub fn drop_partitions(&mut self, revoked: &[i32]) -> usize {
        if revoked.is_empty() {
            return 0;
        }
        self.recovered.retain(|_, r| r.keep_without(revoked));
        self.copies_to_remove
            .retain(|s| !revoked.contains(&s.partition));
        self.removals_due
            .retain(|s| !revoked.contains(&s.partition));
        let before = self.devices.len();
        self.devices
            .retain(|_, dev| !dev.partition.is_some_and(|p| revoked.contains(&p)));
        let dropped = before - self.devices.len();
        let open_before = self.open.len();
        let devices = &self.devices;
        self.open.retain(|_, device| devices.contains_key(device));
        let closed = (open_before - self.open.len()) as i64;
        self.stats.alerts_open.fetch_sub(closed, Ordering::Relaxed);
        self.stats
            .devices
            .fetch_sub(dropped as u64, Ordering::Relaxed);
        dropped
    }

    /// The rules in force.
    pub fn rules(&self) -> &Arc<RuleSet> {
        self.engine.rules()
    }

    /// State of one device.
    pub fn device(&self, device_id: &str) -> Option<&DeviceState> {
        self.devices.get(device_id)
    }

    /// Number of devices tracked.
    pub fn device_count(&self) -> usize {
        self.devices.len()
    }

    /// Ids of open alerts.
    pub fn open_alert_ids(&self) -> impl Iterator<Item = &str> {
        self.open.keys().map(String::as_str)
    }

    /// Moves the counts recorded since the last call into the shared stats. The loop calls it
    /// after every batch: shared counters are touched once per batch, not once
    /// per message, so several processors can share them without contention.
    pub fn flush_stats(&mut self) {
        let local = std::mem::take(&mut self.local);
        let add = |c: &std::sync::atomic::AtomicU64, n: u64| {
            if n > 0 {
                c.fetch_add(n, Ordering::Relaxed);
            }
        };
        add(&self.stats.processed, local.processed);
        add(&self.stats.late, local.late);
        add(&self.stats.seq_gaps, local.seq_gaps);
        add(&self.stats.seq_restarts, local.seq_restarts);
        add(&self.stats.devices, local.devices);
        for (shared, n) in self.stats.dead_letters.iter().zip(local.dead_letters) {
            add(shared, n);
        }
    }

    /// Moves the latency recorded since the last call into the shared stats (scans the whole
    /// histogram: call it about once a second, not per batch).
    pub fn flush_latency(&mut self) {
        if self.latency_us.is_empty() {
            return;
        }
        let mut shared = self
            .stats
            .latency_us
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        // Both histograms have the same bounds, so adding cannot fail.
        let _ = shared.add(&self.latency_us);
        self.latency_us.reset();
    }
}

/// Whether a message's `key` may carry a reading of `device_id`: no key (the bus's HTTP and
/// test paths), or the device id itself — else it is dead-lettered `key_mismatch`.
pub(crate) fn keyed_right(key: &[u8], device_id: &str) -> bool {
    key.is_empty() || key == device_id.as_bytes()
}

/// Most bytes of a key quoted in a `key_mismatch` detail.
const KEY_QUOTED: usize = 64;

fn key_mismatch(key: &[u8], device_id: &str) -> Invalid {
    let quoted = String::from_utf8_lossy(&key[..key.len().min(KEY_QUOTED)]);
    let more = if key.len() > KEY_QUOTED { "…" } else { "" };
    Invalid::new(
        InvalidReason::KeyMismatch,
        format!(
            "key {quoted:?}{more} ({} bytes) is not the payload's device_id {device_id:?}",
            key.len()
        ),
    )
}

/// Where a reading stands in its device's sequence.
enum Sequence {
    /// Next (or after a gap or restart, counted): judge it.
    Next,
    /// Older than one already processed: counted and aggregated only.
    Late,
    /// Already processed: rejected.
    Duplicate(Invalid),
}

/// Checks `reading` against `dev`'s sequence, counting gaps, restarts and late readings.
fn sequence(local: &mut LocalCounts, dev: &mut DeviceState, reading: &Reading<'_>) -> Sequence {
    match dev.seq.check(reading.seq, reading.timestamp) {
        SeqVerdict::InOrder => {}
        SeqVerdict::Gap(missing) => local.seq_gaps = local.seq_gaps.saturating_add(missing),
        SeqVerdict::Restart => local.seq_restarts += 1,
        SeqVerdict::Late | SeqVerdict::TooOld => {
            dev.aggregates.add(reading);
            local.late += 1;
            return Sequence::Late;
        }
        SeqVerdict::Duplicate => {
            let detail = format!(
                "{} seq {} already processed",
                reading.device_id, reading.seq
            );
            return Sequence::Duplicate(Invalid::new(InvalidReason::DuplicateSeq, detail));
        }
    }
    Sequence::Next
}

#[cfg(test)]
#[path = "processor_tests.rs"]
mod tests;
