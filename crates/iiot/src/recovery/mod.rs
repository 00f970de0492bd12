//! What a processor worker on Kafka reads back whenever it is given partitions (its first
//! assignment, and every rebalance that moves partitions to it), before it processes them: the
//! alerts their devices had open when the previous owner stopped or let them go.
//!
//! The alert state lives on a compacted topic (`alert-state`) keyed by device id and
//! co-partitioned with `device-data` (same partition count; the processor writes each device's
//! record into the partition with the number of the input partition its readings came from,
//! whatever the producers' partitioner — [`crate::sinks::topics`]). A member given partitions
//! `P` reads exactly the alert-state partitions `P` ([`restore`]) and hands their open alerts
//! to the worker ([`crate::processor::Processor::add_restored`]), which puts them back when
//! their device is first seen there, and drops them with the partition if it goes first.
//! Every partition assigned is read, including one given back by an eager rebalance (another
//! member may have owned it in between); a cooperative rebalance never takes away the
//! partitions a member keeps, so they are not read again.
//!
//! Migration: an alert-state partition without the marker record ([`record::MIGRATED_KEY`])
//! has never been restored — a deployment from before the topic existed. Its first owner folds
//! the whole alerts topic once ([`fold::open_alerts`], what every assignment did before),
//! writes a record for each device with open alerts that has none on the topic yet into every
//! partition (which one the device's readings arrive on depends on the producers' partitioner,
//! which need not be ours; a processor uses only the record of the partition a device's
//! readings arrive on), and only then the marker; a fold cut short by its time limit writes no marker, so
//! the next owner migrates again. The alerts topic stays the event stream, partitioned as it
//! always was.
//!
//! After the read back, the worker follows the topic for records somebody else writes into
//! the partitions it holds (a member dropped from the group whose records land late) and
//! writes its own view over them ([`crate::processor::Processor::foreign_record`]); each
//! record says who wrote it ([`record::writer_tag`]), [`Restored::ends`] where the read back
//! of each partition ended, and a claim ([`record::CLAIM_KEY`]) written after the read back
//! tells a dropped member that still follows the partition that it has a later owner.
//!
//! - [`record`]: the record format. [`fold`]: the alerts topic folded by alert id.

pub mod fold;
pub mod record;

use std::time::{Duration, Instant};

use hashbrown::HashSet;
use iiot_transport::{Message, TransportError};

pub(crate) use fold::{fold, open_by_device};
pub use fold::{open_alerts, open_alerts_to_end};

use crate::backend::Backend;
use crate::processor::RecoveredAlerts;

/// Reading the assigned partitions back never takes longer than this; what was not read by
/// then is not restored (and logged).
const LIMIT: Duration = Duration::from_secs(60);

/// Partition ends learned later than this after a restore began are not claimed from
/// ([`record::Claim::from`]): below the shortest session timeout a broker allows by default
/// (`group.min.session.timeout.ms`, 6 s), so the group cannot have dropped this member and
/// given the partition to another that claimed it in the meantime — unless it was dropped
/// before the restore began (then only the follower corrects its late records).
const START_LATE: Duration = Duration::from_secs(5);

/// The topics a restore reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateTopics {
    /// The alert-state topic.
    pub state: String,
    /// The alerts topic (migration only).
    pub alerts: String,
}

/// The open alerts of the latest record of each key in each partition, by (key, partition);
/// a record saying none is open is there with none (it replaces an older one). Keys are device
/// ids (a device's own record, written by its owner into the partition its readings arrive
/// on) or, in [`fold_state`]'s answer, also [`record::COPY_PREFIX`] keys (the migration's
/// copies, one per partition, as it cannot know which partition the device's readings arrive
/// on); [`Restored`] holds the two apart, by device id.
pub type StateRecords = hashbrown::HashMap<(String, i32), Vec<(iiot_model::Alert, i64)>>;

/// What [`restore`] read back.
#[derive(Debug, Default)]
pub struct Restored {
    /// The devices' own records in the partitions read.
    pub records: StateRecords,
    /// The migration's copies in the partitions read, by device id.
    pub copies: StateRecords,
    /// Open alerts folded from the alerts topic by a migration of `migrated`, of the devices
    /// without a record in the partitions read.
    pub folded: RecoveredAlerts,
    /// Open alerts among them.
    pub open: usize,
    /// Partitions migrated from the alerts topic by this read.
    pub migrated: Vec<i32>,
    /// Where the read of each partition read ended (the offset after the last record read;
    /// 0 for an empty partition): what is written there from then on is the owner's to check.
    pub ends: Vec<(i32, i64)>,
    /// Where each partition ended when the read began, for those the broker told (the
    /// claim's [`record::Claim::from`]).
    pub starts: Vec<(i32, i64)>,
    /// How long it took.
    pub took: Duration,
}

impl Restored {
    /// The devices read back (from a record or the migration's fold).
    pub fn devices(&self) -> std::collections::BTreeSet<&str> {
        self.records
            .keys()
            .chain(self.copies.keys())
            .map(|(d, _)| d.as_str())
            .chain(self.folded.keys().map(String::as_str))
            .collect()
    }

    /// `device`'s open alerts as the record of `partition` says (`None`: no record there).
    pub fn record(&self, device: &str, partition: i32) -> Option<&[(iiot_model::Alert, i64)]> {
        self.records
            .get(&(device.to_string(), partition))
            .map(Vec::as_slice)
    }
}

/// Reads the alert-state `partitions` back and returns their devices' open alerts; partitions
/// never migrated are migrated first (see the module doc). A backend that keeps no history
/// has nothing to read.
pub async fn restore(
    backend: &Backend,
    topics: &StateTopics,
    partitions: &[i32],
) -> Result<Restored, TransportError> {
    let started = Instant::now();
    if !backend.keeps_history() || partitions.is_empty() {
        return Ok(Restored::default());
    }
    let starts = match backend.partition_ends(&topics.state, partitions).await {
        // Learned soon after the assignment: a claim from a later end could be taken for a
        // successor's by the owner that took the partition over meanwhile (this member
        // dropped while it waited), so a late answer is not used.
        Ok(starts) if started.elapsed() <= START_LATE => starts,
        Ok(_) => {
            tracing::warn!(
                waited_ms = started.elapsed().as_millis() as u64,
                "alert-state: partition ends learned late; claimed from 0"
            );
            Vec::new()
        }
        Err(e) => {
            tracing::warn!(error = %e, "alert-state: partition ends unknown; claimed from 0");
            Vec::new()
        }
    };
    let records = backend
        .read_partitions(&topics.state, partitions, LIMIT)
        .await?;
    let mut ends: Vec<(i32, i64)> = partitions.iter().map(|&p| (p, 0)).collect();
    for m in &records {
        if let Some(end) = ends.iter_mut().find(|(p, _)| *p == m.partition) {
            end.1 = end.1.max(m.offset + 1);
        }
    }
    let (all, marked) = fold_state(&records);
    let (records_read, copies) = split_copies(all);
    let with_record: HashSet<&str> = records_read
        .keys()
        .chain(copies.keys())
        .map(|(d, _)| d.as_str())
        .collect();
    let mut folded_here = RecoveredAlerts::new();
    let migrated: Vec<i32> = partitions
        .iter()
        .copied()
        .filter(|p| !marked.contains(p))
        .collect();
    if !migrated.is_empty() {
        // The whole alerts topic: its partitioning says nothing about the devices' partitions
        // here, so every open alert is handed over and put back only for the devices seen.
        let (folded, complete) = open_alerts_to_end(backend, &topics.alerts).await?;
        // Only a complete fold is written: a cut-short one may hold an alert whose resolution
        // it did not reach, and a record once written keeps later migrations from correcting
        // it (they skip devices with a record). The next owner migrates again.
        let written = if complete {
            write_folded(backend, &topics.state, &folded).await?
        } else {
            0
        };
        for (device, open) in folded {
            if !with_record.contains(device.as_str()) {
                folded_here.insert(device, open);
            }
        }
        if complete {
            mark_migrated(backend, &topics.state, &migrated).await?;
            tracing::info!(
                partitions = ?migrated,
                written,
                "alert-state partitions migrated from {}: the open alerts of devices without a record written to {}",
                topics.alerts,
                topics.state
            );
        } else {
            tracing::warn!(
                partitions = ?migrated,
                written,
                "{} could not be read to its end in time: these partitions are migrated again by their next owner",
                topics.alerts
            );
        }
    }
    drop(with_record);
    let open = records_read
        .values()
        .chain(copies.values())
        .chain(folded_here.values())
        .map(Vec::len)
        .sum();
    let took = started.elapsed();
    tracing::info!(
        ?partitions,
        records = records.len(),
        open,
        devices = records_read
            .values()
            .chain(copies.values())
            .chain(folded_here.values())
            .filter(|a| !a.is_empty())
            .count(),
        took_ms = took.as_millis() as u64,
        "open alerts read back from {}",
        topics.state
    );
    Ok(Restored {
        records: records_read,
        copies,
        folded: folded_here,
        open,
        migrated,
        ends,
        starts,
        took,
    })
}

/// The latest record of each key in each partition among `records` (each partition's in
/// order; keys as the records have them, copies included), and the partitions that carry the
/// migration marker. Records that do not decode are skipped; the late records of a member
/// dropped from the group ([`Claims`]) do not replace the record before them, they only add
/// the alerts it lacks (an alert resolved since comes back and is resolved again when its
/// device reports; one only that member raised is not left without an owner).
pub fn fold_state(records: &[Message]) -> (StateRecords, HashSet<i32>) {
    let mut alerts = StateRecords::new();
    let mut marked = HashSet::new();
    let mut claims = Claims::default();
    let (mut unreadable, mut stale) = (0usize, 0usize);
    for m in records {
        if &m.key[..] == record::MIGRATED_KEY {
            marked.insert(m.partition);
            continue;
        }
        if &m.key[..] == record::CLAIM_KEY {
            if let Some(claim) = record::decode_claim(&m.payload) {
                claims.claimed(m.partition, m.offset, claim);
            }
            continue;
        }
        let Ok(device) = std::str::from_utf8(&m.key) else {
            unreadable += 1;
            continue;
        };
        match record::decode_written(&m.payload) {
            Ok((open, Some(writer))) if claims.superseded(m.partition, &writer) => {
                // Not the device's latest state, but its alerts may be ones only that member
                // raised (published, with nobody else to resolve them): added to the record
                // it would have replaced, never taking away what that one holds.
                stale += 1;
                let current = alerts.entry((device.to_string(), m.partition)).or_default();
                for (alert, raised_at) in open {
                    match current
                        .iter_mut()
                        .find(|(a, _)| a.alert_id == alert.alert_id)
                    {
                        None => current.push((alert, raised_at)),
                        // An acknowledgement it holds stands (that member answered it).
                        Some((ours, _))
                            if ours.status == iiot_model::AlertStatus::Active
                                && alert.status == iiot_model::AlertStatus::Acknowledged =>
                        {
                            *ours = alert;
                        }
                        Some(_) => {}
                    }
                }
            }
            Ok((open, _)) => {
                alerts.insert((device.to_string(), m.partition), open);
            }
            Err(_) => unreadable += 1,
        }
    }
    if unreadable > 0 {
        tracing::warn!(
            unreadable,
            "alert-state records that are not a device's open alerts; skipped"
        );
    }
    if stale > 0 {
        tracing::warn!(
            stale,
            "alert-state records a member wrote after a later owner had claimed their partition: \
             their alerts added, the records before them kept"
        );
    }
    (alerts, marked)
}

/// The claims of each partition met so far in a read back ([`record::CLAIM_KEY`]), to tell
/// the late records of a member dropped from the group: once another worker's claim says its
/// read back began past a worker's own claim, that worker had lost the partition, and what
/// it writes there from then on is stale — it did not know yet. (A writer whose claim is not
/// there, compacted away, is never taken for stale.)
#[derive(Debug, Default)]
struct Claims {
    /// (partition, writer) → the offset of its claim.
    at: hashbrown::HashMap<(i32, String), i64>,
    /// (partition, writer) of those superseded.
    superseded: HashSet<(i32, String)>,
}

impl Claims {
    fn claimed(&mut self, partition: i32, offset: i64, claim: record::Claim) {
        for ((p, writer), &at) in &self.at {
            if *p == partition && *writer != claim.writer && claim.from > at {
                self.superseded.insert((partition, writer.clone()));
            }
        }
        self.at.insert((partition, claim.writer), offset);
    }

    fn superseded(&self, partition: i32, writer: &str) -> bool {
        // Nobody superseded, the common case: no key to build.
        !self.superseded.is_empty() && self.superseded.contains(&(partition, writer.to_string()))
    }
}

/// `records` (as [`fold_state`] gives them) as the devices' own records and the migration's
/// copies, both by device id.
fn split_copies(records: StateRecords) -> (StateRecords, StateRecords) {
    let mut own = StateRecords::with_capacity(records.len());
    let mut copies = StateRecords::new();
    for ((key, partition), open) in records {
        match key.strip_prefix(record::COPY_PREFIX) {
            Some(device) => {
                copies.insert((device.to_string(), partition), open);
            }
            None => {
                own.insert((key, partition), open);
            }
        }
    }
    (own, copies)
}

/// Writes a record for each device of `folded` with open alerts that has no record anywhere
/// on `topic` yet, as a copy (key [`record::copy_key`]) in every partition, and waits until they are
/// delivered; returns how many devices. Every partition, because nothing here says which
/// partition the device's readings arrive on (the producers' partitioner may not be ours): the
/// owner of that partition restores the device from its copy, and the copies in the others
/// are never used ([`crate::processor::Processor::add_restored`]). Devices with a record are
/// left alone: their owner keeps it.
async fn write_folded(
    backend: &Backend,
    topic: &str,
    folded: &RecoveredAlerts,
) -> Result<usize, TransportError> {
    let candidates: Vec<(&String, &Vec<(iiot_model::Alert, i64)>)> =
        folded.iter().filter(|(_, open)| !open.is_empty()).collect();
    if candidates.is_empty() {
        return Ok(0);
    }
    let all: Vec<i32> = match backend.partition_count(topic).await? {
        Some(n) => (0..n).collect(),
        None => return Ok(0),
    };
    let (records, _) = fold_state(&backend.read_partitions(topic, &all, LIMIT).await?);
    let known: HashSet<&str> = records
        .keys()
        .map(|(key, _)| key.strip_prefix(record::COPY_PREFIX).unwrap_or(key))
        .collect();
    let mut receipts = Vec::new();
    let mut written = 0;
    for (device, open) in candidates {
        if known.contains(device.as_str()) {
            continue;
        }
        written += 1;
        let payload = record::encode(open, None);
        let key = record::copy_key(device);
        for &p in &all {
            receipts.push(
                backend
                    .publish_to(topic, p, key.as_bytes(), payload.clone())
                    .await?,
            );
        }
    }
    for receipt in receipts {
        receipt.delivered().await?;
    }
    Ok(written)
}

/// Writes the migration marker into each of `partitions` and waits until they are delivered.
async fn mark_migrated(
    backend: &Backend,
    topic: &str,
    partitions: &[i32],
) -> Result<(), TransportError> {
    let marker = record::migrated_marker(crate::now_ms());
    let mut receipts = Vec::with_capacity(partitions.len());
    for &p in partitions {
        receipts.push(
            backend
                .publish_to(topic, p, record::MIGRATED_KEY, marker.clone())
                .await?,
        );
    }
    for receipt in receipts {
        receipt.delivered().await?;
    }
    Ok(())
}
