//! One processor worker's loop: a subscription in, verdicts out to the role's sinks, and the
//! input committed only after every sink took them (at-least-once).
//!
//! The loop owns no output logic: alerts and dead letters reach topics through
//! [`crate::sinks::topics`], the live store through [`crate::sinks::live`]. Every wait in it —
//! the subscription, a sink retrying a delivery — gives way to the stop token; what was not
//! delivered when it stops is not committed.

use std::sync::Arc;
use std::time::Duration;

use iiot_model::{Alert, Invalid, InvalidReason};
use iiot_transport::{Message, Ownership, Start, Subscriber, Transport, TransportError};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

use super::{Clocks, Judged, Processor};
use crate::alerts::{AckError, RuleSet};
use crate::now_ms;
use crate::sinks::{Accepted, AlertChange, Rejected, Sink, SinkError, Verdicts};

/// Largest batch taken from the subscriber at once.
pub const BATCH: usize = 1024;

/// Where a worker reads and writes.
pub struct ProcessorIo {
    /// The `device-data` subscription.
    pub subscriber: Box<dyn Subscriber>,
    /// Where verdicts go, in this order; the input is committed once all have taken them.
    pub sinks: Vec<Arc<dyn Sink>>,
    /// Asked before offline checks: while it cannot reach its broker, silence says nothing
    /// about the devices (`None`: always checked).
    pub transport: Option<Arc<dyn Transport>>,
    /// Where the open alerts of newly assigned partitions are read back from (`None`: never;
    /// a backend without history has nothing to read).
    pub recovery: Option<Recovery>,
}

/// Reads back, from the alert-state topic, the alerts left open by the earlier owners of the
/// partitions a worker is given ([`crate::recovery::restore`]); the worker writes the state of
/// each device whose alerts change there (through its topic sink).
#[derive(Clone)]
pub struct Recovery {
    /// The backend.
    pub backend: Arc<dyn Transport>,
    /// The alert-state topic, and the alerts topic it is migrated from.
    pub topics: crate::recovery::StateTopics,
}

/// A request to the running processor from elsewhere in the process (the HTTP API).
#[derive(Debug)]
pub enum Command {
    /// Acknowledge an alert; the reply carries the published alert or why not.
    Acknowledge {
        /// The alert.
        alert_id: String,
        /// Who asks (a user or token name), recorded on the alert.
        by: Option<String>,
        /// Where the answer goes.
        reply: oneshot::Sender<Result<Alert, AckError>>,
    },
}

/// Runs until the subscription ends (its topic was ended and drained) or `stop` is cancelled.
/// Rule sets sent on `rules` are applied between batches. Returns the processor for inspection.
pub async fn run(
    mut processor: Processor,
    io: ProcessorIo,
    rules: watch::Receiver<Arc<RuleSet>>,
    commands: mpsc::Receiver<Command>,
    stop: CancellationToken,
) -> Result<Processor, TransportError> {
    let ProcessorIo {
        mut subscriber,
        sinks,
        transport,
        recovery,
    } = io;
    let ownership = subscriber.ownership();
    let mut tail = match (&recovery, &ownership) {
        (Some(recovery), Some(_)) => tokio::select! {
            _ = stop.cancelled() => None,
            tail = follow_state(recovery) => tail,
        },
        _ => None,
    };
    let mut worker = Worker {
        processor: &mut processor,
        sinks: &sinks,
        stop: &stop,
        alerts: Vec::new(),
        recovery,
        ownership,
        epochs: Vec::new(),
        writer: rand::random(),
        following: tail.is_some(),
        follows: Vec::new(),
        own_empty: hashbrown::HashSet::new(),
    };
    let result = worker
        .consume(
            subscriber.as_mut(),
            &mut tail,
            transport.as_deref(),
            rules,
            commands,
        )
        .await;
    // Closing a Kafka consumer commits its offsets and leaves the group, which can block for
    // seconds: not on a runtime thread (nor the follower's close).
    let _ = tokio::task::spawn_blocking(move || drop((subscriber, tail))).await;
    // Whatever ended the loop, what was counted so far reaches the shared stats.
    processor.flush_stats();
    processor.flush_latency();
    result.map(|()| processor)
}

/// The loop's state between two events.
struct Worker<'w> {
    processor: &'w mut Processor,
    sinks: &'w [Arc<dyn Sink>],
    stop: &'w CancellationToken,
    /// Alert changes of the event being handled.
    alerts: Vec<Alert>,
    recovery: Option<Recovery>,
    /// Which assignment of each partition the subscriber is on (a backend that moves
    /// partitions between members).
    ownership: Option<Arc<dyn Ownership>>,
    /// The assignment epoch of each partition when it was last given to this worker (and its
    /// state read back): the state built from its readings since is written only while that
    /// assignment lasts ([`Worker::take_states`]).
    epochs: Vec<(i32, u64)>,
    /// This worker, in the writer tag of the alert-state records it writes
    /// ([`crate::recovery::record::writer_tag`], with the partition's epoch).
    writer: u64,
    /// Whether it follows the alert-state topic (and claims the partitions it reads back).
    following: bool,
    /// The alert-state partitions held, as followed ([`Worker::foreign`]).
    follows: Vec<Follow>,
    /// Devices (with their partition) whose "nothing open" record this worker wrote and has
    /// not followed yet: such a record carries no writer, and is not taken for somebody
    /// else's when it comes back (at most [`OWN_EMPTY_KEPT`]; beyond, one is only checked).
    own_empty: hashbrown::HashSet<(u64, i32)>,
}

/// A device id's hash, to remember a worker's own "nothing open" records by (a collision
/// costs one record that is not checked). One hasher for the process: the worker's task
/// moves between the runtime's threads.
fn key_hash(device: &str) -> u64 {
    use std::hash::{BuildHasher, RandomState};
    static STATE: std::sync::OnceLock<RandomState> = std::sync::OnceLock::new();
    STATE.get_or_init(RandomState::new).hash_one(device)
}

/// At most this many of a worker's own "nothing open" records are awaited on the follower.
const OWN_EMPTY_KEPT: usize = 65_536;

/// An alert-state partition a worker holds, as it follows the topic.
#[derive(Debug)]
struct Follow {
    partition: i32,
    /// This worker's writer tag there ([`crate::recovery::record::writer_tag`]), and what its
    /// records hold of it ([`crate::recovery::record::writer_mark`]).
    mine: String,
    mark: Vec<u8>,
    /// Where its read back ended: records from this offset on are checked.
    end: i64,
    /// The offset of this worker's claim of it ([`crate::recovery::record::CLAIM_KEY`]), once
    /// followed that far.
    claimed_at: Option<i64>,
    /// Claimed since by a worker whose read back began past this one's claim: given to that
    /// worker by the group (this one was dropped and is told at its next poll). Records
    /// written there are that worker's to check, not this one's.
    superseded: bool,
}

/// Follows the alert-state topic from its end, for the records other members write into the
/// partitions this worker holds ([`Worker::foreign`]); `None` (logged) if it cannot.
async fn follow_state(recovery: &Recovery) -> Option<Box<dyn Subscriber>> {
    match recovery
        .backend
        .subscribe_all(&recovery.topics.state, Start::End)
        .await
    {
        Ok(tail) => Some(tail),
        Err(e) => {
            tracing::warn!(
                topic = %recovery.topics.state,
                error = %e,
                "cannot follow the alert-state topic: records other members write into this \
                 worker's partitions are not checked"
            );
            None
        }
    }
}

/// The next records of the alert-state topic (`tail`), or never (none followed).
async fn recv_tail(
    tail: &mut Option<Box<dyn Subscriber>>,
    out: &mut Vec<Message>,
) -> Result<usize, TransportError> {
    match tail {
        Some(tail) => tail.recv_batch(out, BATCH).await,
        None => std::future::pending().await,
    }
}

/// Whether the sinks took a batch, or the role stopped first.
#[derive(Debug, PartialEq, Eq)]
enum Delivery {
    Done,
    Stopped,
}

impl Worker<'_> {
    async fn consume(
        &mut self,
        subscriber: &mut dyn Subscriber,
        tail: &mut Option<Box<dyn Subscriber>>,
        transport: Option<&dyn Transport>,
        mut rules: watch::Receiver<Arc<RuleSet>>,
        mut commands: mpsc::Receiver<Command>,
    ) -> Result<(), TransportError> {
        let mut batch: Vec<Message> = Vec::with_capacity(BATCH);
        let mut followed: Vec<Message> = Vec::new();
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let (mut rules_open, mut commands_open) = (true, true);
        // A full batch means readings are queued: "no data for 3 intervals" would then be
        // about our backlog, not the devices, so offline checks wait until we have caught up.
        let mut backlogged = false;
        let stop = self.stop.clone();
        loop {
            let delivery = tokio::select! {
                biased;
                _ = stop.cancelled() => return Ok(()),
                changed = rules.changed(), if rules_open => {
                    if changed.is_err() {
                        rules_open = false;
                        continue;
                    }
                    let new = rules.borrow_and_update().clone();
                    self.reload(subscriber, new).await?
                }
                command = commands.recv(), if commands_open => match command {
                    None => {
                        commands_open = false;
                        continue;
                    }
                    Some(command) => self.command(subscriber, command).await?,
                },
                _ = tick.tick() => self.tick(subscriber, transport, backlogged).await?,
                // Before the input: a late record must be checked before a backlog of readings
                // (as after a takeover) is worked off, and the follower carries far fewer
                // records than the input.
                received = recv_tail(tail, &mut followed) => {
                    match received {
                        Ok(0) => {
                            self.unfollow(tail).await;
                            Delivery::Done
                        }
                        Ok(_) => {
                            let delivery = self.foreign(subscriber, &followed).await?;
                            followed.clear();
                            delivery
                        }
                        Err(e) => {
                            // The consumer failed for good (a receive error it cannot get over);
                            // processing goes on without the check.
                            tracing::error!(
                                error = %e,
                                "following the alert-state topic failed: records other members \
                                 write late into this worker's partitions are not checked any more"
                            );
                            self.unfollow(tail).await;
                            Delivery::Done
                        }
                    }
                }
                received = subscriber.recv_batch(&mut batch, BATCH) => {
                    let received = received?;
                    if received == 0 {
                        return Ok(());
                    }
                    backlogged = received == BATCH;
                    let delivery = self.batch(subscriber, &mut batch).await?;
                    batch.clear();
                    delivery
                }
            };
            if delivery == Delivery::Stopped {
                return Ok(());
            }
        }
    }

    /// Judges one input batch, hands the verdicts to the sinks, then commits the input.
    async fn batch(
        &mut self,
        subscriber: &mut dyn Subscriber,
        batch: &mut Vec<Message>,
    ) -> Result<Delivery, TransportError> {
        let (revoked, gained) = self.look(subscriber).await?;
        if !revoked.is_empty() {
            // Fetched before the rebalance: their new owner reads them again from the last
            // committed offset, so they are neither processed nor committed here. A partition
            // given back since was fetched again after the rebalance (a receive stops at a
            // rebalance, so one batch never holds messages from both sides of it).
            batch.retain(|m| !revoked.contains(&m.partition) || gained.contains(&m.partition));
        }
        if self.ownership.is_some() {
            // Of a partition whose assignment was lost (its revocation comes with a later
            // receive): not judged, so the state of their devices does not move on with
            // readings that are not committed. They are fetched again from the last committed
            // offset by whoever holds the partition next.
            let before = batch.len();
            let held = self.held();
            batch.retain(|m| held.contains(&m.partition));
            if batch.len() < before {
                tracing::debug!(
                    skipped = before - batch.len(),
                    "messages of partitions not held skipped"
                );
            }
        }
        let mut verdicts = judge_batch(self.processor, batch, &mut self.alerts);
        if self.fenced() {
            // The assignment was lost while judging: nothing of this batch goes out and its
            // input is not committed; its partitions' next owner judges it again.
            let skipped = verdicts.alerts.len();
            drop(verdicts);
            self.discard(skipped);
            return Ok(Delivery::Done);
        }
        // Each changed device's open alerts, written with the alerts, before the commit.
        verdicts.states = self.take_states();
        verdicts.ownership = self.ownership.clone();
        let delivery = deliver(self.sinks, &verdicts, self.stop).await?;
        drop(verdicts);
        self.processor.flush_stats();
        if delivery == Delivery::Done {
            // At-least-once: the outputs are delivered; now the offsets.
            subscriber.commit_batch(batch)?;
        }
        Ok(delivery)
    }

    /// Applies reloaded rules; alerts of removed rule types resolve.
    async fn reload(
        &mut self,
        subscriber: &mut dyn Subscriber,
        rules: Arc<RuleSet>,
    ) -> Result<Delivery, TransportError> {
        // Devices of partitions taken away since the last look are dropped first: their new
        // owner applies the same rules to them.
        self.look(subscriber).await?;
        self.processor.set_rules(rules, now_ms(), &mut self.alerts);
        tracing::info!(
            rules = self.processor.rules().rules.len(),
            "processor uses reloaded alert rules"
        );
        self.emit().await
    }

    /// Answers a command once its alert change is delivered.
    async fn command(
        &mut self,
        subscriber: &mut dyn Subscriber,
        command: Command,
    ) -> Result<Delivery, TransportError> {
        let Command::Acknowledge {
            alert_id,
            by,
            reply,
        } = command;
        // An alert of a partition taken away since the last look is not this worker's to
        // acknowledge: its state record would not be written (the partition is no longer on
        // its assignment), so the acknowledgement would be lost. Not known here, then; the
        // new owner knows it once it has read the partition back.
        self.look(subscriber).await?;
        if self.fenced() {
            let _ = reply.send(Err(crate::alerts::AckError::Unknown(alert_id)));
            return Ok(Delivery::Done);
        }
        let result = self
            .processor
            .acknowledge(&alert_id, by.as_deref(), now_ms());
        if let Ok(alert) = &result {
            tracing::info!(
                %alert_id,
                device_id = %alert.device_id,
                by = %by.as_deref().unwrap_or("anonymous"),
                "alert acknowledged"
            );
        }
        let mut delivery = Delivery::Done;
        if let Ok(alert) = &result {
            if self.fenced() {
                // Lost while acknowledging: the change could not be written.
                self.discard(0);
                let _ = reply.send(Err(crate::alerts::AckError::Unknown(alert_id)));
                return Ok(Delivery::Done);
            }
            self.alerts.push(alert.clone());
            delivery = self.emit().await?;
        }
        if delivery == Delivery::Done {
            // The asker may have given up waiting; nothing to do then.
            let _ = reply.send(result);
        }
        Ok(delivery)
    }

    /// Once a second: partitions lost to a rebalance, offline checks, latency.
    async fn tick(
        &mut self,
        subscriber: &mut dyn Subscriber,
        transport: Option<&dyn Transport>,
        backlogged: bool,
    ) -> Result<Delivery, TransportError> {
        // A rebalance can take every partition away: then no message comes to report it, and
        // the devices now owned elsewhere must not be declared offline here.
        self.look(subscriber).await?;
        let reachable = match transport {
            Some(t) => t.is_ready().await,
            None => true,
        };
        let mut delivery = Delivery::Done;
        // While the assignment is lost (its revocation comes with the next receive), the
        // devices are not this worker's to declare offline: an alert raised now would be
        // published without its state record and never resolved by anyone.
        if !backlogged && reachable && !self.fenced() {
            self.processor.tick(now_ms(), &mut self.alerts);
            delivery = self.emit().await?;
        }
        // Merging the latency histogram scans all its buckets: once a second, not per batch.
        self.processor.flush_latency();
        Ok(delivery)
    }

    /// What changed in the worker's partitions since the last look: the devices of revoked
    /// partitions are dropped (with what was read back for them), then the gained ones are
    /// read back ([`Worker::restore_gained`]). Returns both.
    async fn look(
        &mut self,
        subscriber: &mut dyn Subscriber,
    ) -> Result<(Vec<i32>, Vec<i32>), TransportError> {
        let revoked = drop_revoked(self.processor, subscriber);
        self.epochs.retain(|(p, _)| !revoked.contains(p));
        self.follows.retain(|f| !revoked.contains(&f.partition));
        if !revoked.is_empty() {
            self.own_empty.retain(|(_, p)| !revoked.contains(p));
        }
        let gained = subscriber.take_assigned();
        let mut held = gained.clone();
        if let Some(ownership) = &self.ownership {
            for &p in &gained {
                self.epochs.retain(|&(q, _)| q != p);
                // None: lost already; its revocation follows, and so does a new assignment.
                if let Some(epoch) = ownership.epoch(p) {
                    self.epochs.push((p, epoch));
                }
            }
            // Read back only what is held: nothing of a partition lost already may be put
            // back, acknowledged or written from here.
            held.retain(|&p| self.epochs.iter().any(|&(q, _)| q == p));
        }
        self.restore_gained(&held).await?;
        Ok((revoked, gained))
    }

    /// Whether a partition this worker judges is no longer on the assignment it was read back
    /// at: the assignment was lost (the member was dropped from the group) and the revocation
    /// has not come yet — it comes with the next receive, as does every other rebalance.
    fn fenced(&self) -> bool {
        self.ownership.as_ref().is_some_and(|ownership| {
            self.epochs
                .iter()
                .any(|&(p, epoch)| ownership.epoch(p) != Some(epoch))
        })
    }

    /// The partitions held on the assignment they were read back at (all of `epochs` unless
    /// the assignment was lost), asked once per batch rather than per message: each question
    /// takes the consumer's lock.
    fn held(&self) -> Vec<i32> {
        let Some(ownership) = &self.ownership else {
            return self.epochs.iter().map(|&(p, _)| p).collect();
        };
        self.epochs
            .iter()
            .filter(|&&(p, epoch)| ownership.epoch(p) == Some(epoch))
            .map(|&(p, _)| p)
            .collect()
    }

    /// Forgets the alert changes and state records made while fenced (`skipped` alert changes
    /// already taken from `alerts`).
    fn discard(&mut self, skipped: usize) {
        let skipped = skipped + self.alerts.len();
        self.alerts.clear();
        let states = self.processor.take_alert_states().len();
        tracing::info!(
            alert_changes = skipped,
            states,
            "the assignment was lost: alert changes and states not written, input not committed"
        );
    }

    /// The alert-state records to write: each changed device's open alerts, on a backend that
    /// moves partitions only those of partitions still on the assignment their state was read
    /// back at (stamped with its epoch, which the topic sink checks again before every send).
    /// A member whose partition was taken away must not write it: its new owner may have read
    /// it back already, and this member's view is older than what the new owner writes.
    fn take_states(&mut self) -> Vec<crate::processor::AlertState> {
        let mut states = self.processor.take_alert_states();
        if self.ownership.is_some() {
            let before = states.len();
            states.retain_mut(|s| {
                let epoch = self
                    .epochs
                    .iter()
                    .find(|&&(p, _)| p == s.partition)
                    .map(|&(_, e)| e);
                s.epoch = epoch;
                s.writer = epoch.map(|e| crate::recovery::record::writer_tag(self.writer, e));
                if epoch.is_some()
                    && s.open.is_empty()
                    && !s.device_id.starts_with('#')
                    && self.following
                    && self.own_empty.len() < OWN_EMPTY_KEPT
                {
                    self.own_empty.insert((key_hash(&s.device_id), s.partition));
                }
                epoch.is_some()
            });
            if states.len() < before {
                tracing::info!(
                    skipped = before - states.len(),
                    "alert-state records of partitions no longer held not written"
                );
            }
        }
        states
    }

    /// Partitions newly given to this worker: before any of their readings is judged, the
    /// alerts their earlier owner left open are read back, and put back into the engine when
    /// their device is first seen here — a takeover continues the same alert (same id) and
    /// resolves it when the condition clears, instead of raising a second one and leaving the
    /// first open without an owner.
    async fn restore_gained(&mut self, gained: &[i32]) -> Result<(), TransportError> {
        let Some(recovery) = self.recovery.as_ref().filter(|_| !gained.is_empty()) else {
            return Ok(());
        };
        tracing::info!(
            ?gained,
            "partitions assigned; reading back the alerts left open on them"
        );
        let restored = tokio::select! {
            biased;
            _ = self.stop.cancelled() => return Ok(()),
            r = crate::recovery::restore(&recovery.backend, &recovery.topics, gained) => r?,
        };
        self.processor
            .stats()
            .restored(restored.open, restored.took);
        let (ends, starts) = (restored.ends.clone(), restored.starts.clone());
        self.processor.add_restored(restored);
        if self.following {
            let recovery = recovery.clone();
            self.claim(&recovery, &ends, &starts).await;
        }
        Ok(())
    }

    /// Stops following the alert-state topic (its consumer ended or failed): nothing more is
    /// claimed or awaited on it; the consumer is closed off the runtime's threads.
    async fn unfollow(&mut self, tail: &mut Option<Box<dyn Subscriber>>) {
        self.following = false;
        self.follows.clear();
        self.own_empty.clear();
        if let Some(tail) = tail.take() {
            let _ = tokio::task::spawn_blocking(move || drop(tail)).await;
        }
    }

    /// Follows the alert-state partitions just read back from where each read ended, and
    /// claims each one ([`crate::recovery::record::claim`], with where the partition ended
    /// when the read began): a worker the group dropped that still follows them sees the
    /// claim and leaves the records written there from then on to this one. Waits until the
    /// claims are delivered (before any reading of the partitions is judged, so every record
    /// this worker writes there comes after its claim; at most `delivery.timeout.ms`); one
    /// that cannot be written is logged, and the partition is followed without it.
    async fn claim(&mut self, recovery: &Recovery, ends: &[(i32, i64)], starts: &[(i32, i64)]) {
        use crate::recovery::record;
        let mut receipts = Vec::with_capacity(ends.len());
        for &(p, end) in ends {
            let Some(&(_, epoch)) = self.epochs.iter().find(|&&(q, _)| q == p) else {
                continue;
            };
            if self
                .ownership
                .as_ref()
                .is_some_and(|o| o.epoch(p) != Some(epoch))
            {
                // Lost while it was read back: not this worker's to claim.
                continue;
            }
            let from = starts.iter().find(|&&(q, _)| q == p).map_or(0, |&(_, s)| s);
            let mine = record::writer_tag(self.writer, epoch);
            let payload = record::claim(&mine, from);
            self.follows.retain(|f| f.partition != p);
            self.follows.push(Follow {
                partition: p,
                end,
                mark: record::writer_mark(&mine),
                mine,
                claimed_at: None,
                superseded: false,
            });
            let topic = &recovery.topics.state;
            match recovery
                .backend
                .publish_to(topic, p, record::CLAIM_KEY, payload)
                .await
            {
                Ok(receipt) => receipts.push((p, receipt)),
                Err(e) => {
                    tracing::warn!(partition = p, error = %e, "alert-state partition not claimed")
                }
            }
        }
        for (p, receipt) in receipts {
            let delivered = tokio::select! {
                biased;
                _ = self.stop.cancelled() => return,
                d = receipt.delivered() => d,
            };
            if let Err(e) = delivered {
                tracing::warn!(partition = p, error = %e, "alert-state partition not claimed");
            }
        }
    }

    /// Records of the alert-state topic (`records`, as followed from its end). Each device
    /// record in a partition this worker holds, written at or after the offset where its read
    /// back ended by anybody but this worker on this assignment, is checked against this
    /// worker's view ([`Processor::foreign_record`]): alerts in it this worker never knew are
    /// taken over, and where it says other than this worker's view, the view is written
    /// again — the next owner of the partition must not read back a stale record a member
    /// dropped from the group wrote late. Unless a later owner claimed the partition since:
    /// then this worker is the one dropped, and leaves the records there alone.
    async fn foreign(
        &mut self,
        subscriber: &mut dyn Subscriber,
        records: &[Message],
    ) -> Result<Delivery, TransportError> {
        use crate::recovery::record;
        self.look(subscriber).await?;
        let held = self.held();
        let now = now_ms();
        let mut rewritten = 0u64;
        for m in records {
            if !held.contains(&m.partition) {
                continue;
            }
            let Some(follow) = self.follows.iter_mut().find(|f| f.partition == m.partition) else {
                continue;
            };
            if m.offset < follow.end {
                // Read back already.
                continue;
            }
            if &m.key[..] == record::CLAIM_KEY {
                let Some(claim) = record::decode_claim(&m.payload) else {
                    continue;
                };
                if claim.writer == follow.mine {
                    follow.claimed_at = Some(m.offset);
                } else if !follow.superseded && follow.claimed_at.is_some_and(|at| claim.from > at)
                {
                    // Its read back began past this worker's claim: it was given the
                    // partition after this worker (an earlier owner's claim landing late
                    // began before it).
                    follow.superseded = true;
                    tracing::warn!(
                        partition = m.partition,
                        by = %claim.writer,
                        "alert-state partition claimed by a later owner: this member was dropped \
                         from the group (it is told at its next poll); records written there are \
                         left to the new owner"
                    );
                }
                continue;
            }
            if follow.superseded || m.key.starts_with(b"#") {
                // Somebody else's now; or the migration's marker or copies, which any member
                // writes into every partition.
                continue;
            }
            let Ok(device) = std::str::from_utf8(&m.key) else {
                continue;
            };
            if m.payload.is_empty() && self.own_empty.remove(&(key_hash(device), m.partition)) {
                continue;
            }
            if record::written_by(&m.payload, &follow.mark) {
                // Its own, the common case: told without decoding the alerts.
                continue;
            }
            // A record that does not decode holds nothing: this worker's view replaces it.
            let (open, _) = record::decode_written(&m.payload).unwrap_or_default();
            if self
                .processor
                .foreign_record(device, m.partition, open, now, &mut self.alerts)
            {
                rewritten += 1;
            }
        }
        if rewritten > 0 && !self.fenced() {
            self.processor.stats().rewritten(rewritten);
            tracing::warn!(
                records = rewritten,
                "alert-state records another member wrote after this one read their partitions \
                 back: written again with this member's view"
            );
        }
        self.emit().await
    }

    /// Hands the pending alert changes (no input) to the sinks.
    async fn emit(&mut self) -> Result<Delivery, TransportError> {
        if self.alerts.is_empty() && !self.processor.has_alert_states() {
            return Ok(Delivery::Done);
        }
        if self.fenced() {
            self.discard(0);
            return Ok(Delivery::Done);
        }
        let mut verdicts = Verdicts::empty(now_ms());
        verdicts.alerts = self.alerts.drain(..).map(AlertChange::new).collect();
        verdicts.states = self.take_states();
        verdicts.ownership = self.ownership.clone();
        deliver(self.sinks, &verdicts, self.stop).await
    }
}

/// Judges every message of `batch` (validation against the broker's timestamp where the
/// message has one, liveness on the receiver's clock). A message whose headers are not text
/// is dead-lettered `bad_header` unread.
fn judge_batch<'a>(
    processor: &mut Processor,
    batch: &'a [Message],
    alerts: &mut Vec<Alert>,
) -> Verdicts<'a> {
    let now = now_ms();
    let mut verdicts = Verdicts::empty(now);
    verdicts.accepted.reserve(batch.len());
    for message in batch {
        let clocks = Clocks {
            judged_at: message.judged_at(now),
            received_at: now,
        };
        if let Some(fault) = &message.bad_header {
            let invalid = Invalid::new(InvalidReason::BadHeader, fault.to_string());
            let invalid = processor.reject(invalid);
            verdicts.rejected.push(Rejected { message, invalid });
            continue;
        }
        let (partition, key) = (Some(message.partition), &message.key[..]);
        match processor.judge(partition, key, &message.payload, clocks, alerts) {
            Judged::Processed(reading, text) | Judged::Late(reading, text) => {
                verdicts.accepted.push(Accepted {
                    message,
                    reading,
                    text,
                })
            }
            Judged::Rejected(invalid) => verdicts.rejected.push(Rejected { message, invalid }),
            // Its alert is in `alerts`; nothing else goes on.
            Judged::Offline => {}
        }
    }
    verdicts.alerts = alerts.drain(..).map(AlertChange::new).collect();
    verdicts
}

/// Hands `verdicts` to every sink in turn.
async fn deliver(
    sinks: &[Arc<dyn Sink>],
    verdicts: &Verdicts<'_>,
    stop: &CancellationToken,
) -> Result<Delivery, TransportError> {
    if verdicts.is_empty() {
        return Ok(Delivery::Done);
    }
    for sink in sinks {
        match sink.take(verdicts, stop).await {
            Ok(()) => {}
            Err(SinkError::Stopped) => {
                tracing::info!(
                    sink = sink.name(),
                    "stopped with outputs undelivered; their input stays uncommitted"
                );
                return Ok(Delivery::Stopped);
            }
            Err(SinkError::Transport(e)) => return Err(e),
        }
    }
    Ok(Delivery::Done)
}

/// Drops the state of the devices on partitions revoked since the last call; returns those
/// partitions.
fn drop_revoked(processor: &mut Processor, subscriber: &mut dyn Subscriber) -> Vec<i32> {
    let revoked = subscriber.take_revoked();
    if !revoked.is_empty() {
        let dropped = processor.drop_partitions(&revoked);
        tracing::info!(
            ?revoked,
            dropped,
            "partitions revoked by a rebalance; their devices' state dropped"
        );
    }
    revoked
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicU64, Ordering};

    use async_trait::async_trait;
    use bytes::Bytes;

    use super::*;
    use crate::alerts::{AckError, RuleSet, Thresholds};
    use crate::processor::{ProcessorConfig, ProcessorStats};
    use crate::sinks::{SinkError, Verdicts};
    use crate::test_support::reading;

    /// The assignment of every partition: `0` stands for none (lost, or revoked by an eager
    /// rebalance still under way).
    #[derive(Debug)]
    struct Lease(AtomicU64);

    impl Ownership for Lease {
        fn epoch(&self, _: i32) -> Option<u64> {
            Some(self.0.load(Ordering::Relaxed)).filter(|&e| e > 0)
        }
    }

    /// A group member given partition 0, delivering the batches sent to it.
    struct Member {
        batches: mpsc::UnboundedReceiver<Vec<Message>>,
        assigned: Vec<i32>,
        lease: Arc<Lease>,
    }

    #[async_trait]
    impl Subscriber for Member {
        async fn recv_batch(
            &mut self,
            out: &mut Vec<Message>,
            _max: usize,
        ) -> Result<usize, TransportError> {
            let Some(mut batch) = self.batches.recv().await else {
                std::future::pending::<()>().await;
                return Ok(0);
            };
            let n = batch.len();
            out.append(&mut batch);
            Ok(n)
        }

        fn commit(&mut self, _: &Message) -> Result<(), TransportError> {
            Ok(())
        }

        fn take_assigned(&mut self) -> Vec<i32> {
            std::mem::take(&mut self.assigned)
        }

        fn ownership(&self) -> Option<Arc<dyn Ownership>> {
            Some(self.lease.clone())
        }
    }

    /// Every alert change the sinks were given.
    #[derive(Default)]
    struct Published(Mutex<Vec<Alert>>);

    #[async_trait]
    impl Sink for Published {
        fn name(&self) -> &'static str {
            "published"
        }

        async fn take(&self, v: &Verdicts<'_>, _: &CancellationToken) -> Result<(), SinkError> {
            let mut seen = self.0.lock().expect("lock");
            seen.extend(v.alerts.iter().map(|c| c.alert.clone()));
            Ok(())
        }
    }

    /// A hot reading of `device` on partition 0.
    fn hot(device: &'static str, seq: u64) -> Message {
        let now = crate::now_ms();
        Message {
            topic: Arc::from("device-data"),
            partition: 0,
            offset: 0,
            key: Bytes::from_static(device.as_bytes()),
            payload: Bytes::from(reading(device, seq, now, 85.0)),
            timestamp_ms: Some(now),
            bad_header: None,
        }
    }

    /// A worker on a member given partition 0 under a lease.
    struct Running {
        batches: mpsc::UnboundedSender<Vec<Message>>,
        commands: mpsc::Sender<Command>,
        published: Arc<Published>,
        stop: CancellationToken,
        task: tokio::task::JoinHandle<Result<Processor, TransportError>>,
        _rules: watch::Sender<Arc<RuleSet>>,
    }

    impl Running {
        fn start(lease: &Arc<Lease>) -> Running {
            let (batches, rx) = mpsc::unbounded_channel();
            let member = Member {
                batches: rx,
                assigned: vec![0],
                lease: lease.clone(),
            };
            let published = Arc::new(Published::default());
            let rules = Arc::new(RuleSet::defaults(&Thresholds::default()));
            let mut processor = Processor::new(
                ProcessorConfig::default(),
                rules.clone(),
                Arc::new(ProcessorStats::default()),
            );
            processor.keep_alert_states();
            let (rules_tx, rules) = watch::channel(rules);
            let (commands, commands_rx) = mpsc::channel(4);
            let stop = CancellationToken::new();
            let io = ProcessorIo {
                subscriber: Box::new(member),
                sinks: vec![published.clone() as Arc<dyn Sink>],
                transport: None,
                recovery: None,
            };
            let task = tokio::spawn(run(processor, io, rules, commands_rx, stop.clone()));
            Running {
                batches,
                commands,
                published,
                stop,
                task,
                _rules: rules_tx,
            }
        }

        fn send(&self, message: Message) {
            self.batches.send(vec![message]).expect("sent");
        }

        fn seen(&self) -> Vec<Alert> {
            self.published.0.lock().expect("lock").clone()
        }

        /// Waits until `n` alert changes were published; returns them.
        async fn published(&self, n: usize) -> Vec<Alert> {
            for _ in 0..500 {
                let seen = self.seen();
                if seen.len() >= n {
                    return seen;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            panic!("{n} alert changes not published: {:?}", self.seen());
        }

        /// Asks to acknowledge `alert_id`; the answer.
        async fn acknowledge(&self, alert_id: &str) -> Result<Alert, AckError> {
            let (reply, answer) = oneshot::channel();
            let command = Command::Acknowledge {
                alert_id: alert_id.to_string(),
                by: Some("operator".into()),
                reply,
            };
            self.commands.send(command).await.expect("sent");
            answer.await.expect("answered")
        }

        async fn stop(self) {
            self.stop.cancel();
            self.task.await.expect("joined").expect("ran");
        }
    }

    /// Issue 12: a record with a header that is not text (the Kafka source says which) is
    /// dead-lettered `bad_header` and counted; its payload is not judged (its device stays
    /// unknown), and the reading behind it is processed.
    #[test]
    fn a_message_with_a_bad_header_is_dead_lettered_unread() {
        let rules = Arc::new(RuleSet::defaults(&Thresholds::default()));
        let stats = Arc::new(ProcessorStats::default());
        let mut processor = Processor::new(ProcessorConfig::default(), rules, stats.clone());
        let mut bad = hot("device_001", 1);
        bad.bad_header = Some("header \"origin\"'s value (2 bytes) is not UTF-8".into());
        let batch = [bad, hot("device_002", 1)];
        let mut alerts = Vec::new();
        let verdicts = judge_batch(&mut processor, &batch, &mut alerts);
        assert_eq!(verdicts.rejected.len(), 1);
        let invalid = &verdicts.rejected[0].invalid;
        assert_eq!(invalid.reason, iiot_model::InvalidReason::BadHeader);
        assert!(invalid.detail.contains("origin"), "{}", invalid.detail);
        let accepted: Vec<_> = verdicts
            .accepted
            .iter()
            .map(|a| &*a.reading.device_id)
            .collect();
        assert_eq!(accepted, ["device_002"]);
        let raised: Vec<_> = verdicts
            .alerts
            .iter()
            .map(|c| c.alert.device_id.as_str())
            .collect();
        assert_eq!(
            raised,
            ["device_002"],
            "device_001's hot reading was not judged"
        );
        drop(verdicts);
        processor.flush_stats();
        assert_eq!(
            stats.dead_letters_of(iiot_model::InvalidReason::BadHeader),
            1
        );
        assert_eq!(processor.device_count(), 1);
    }

    /// Issue 12: an acknowledgement reaching a member whose assignment was lost (dropped from
    /// the group; the revocation comes with its next receive) must not be accepted: its state
    /// record would be fenced out, so the new owner would read back the alert unacknowledged
    /// while the asker was told it was done.
    #[tokio::test]
    async fn a_member_whose_assignment_is_lost_does_not_acknowledge() {
        let lease = Arc::new(Lease(AtomicU64::new(1)));
        let r = Running::start(&lease);
        r.send(hot("device_001", 1));
        let raised = r.published(1).await.remove(0);

        lease.0.store(0, Ordering::Relaxed);
        let answer = r.acknowledge(&raised.alert_id).await;
        assert!(
            matches!(answer, Err(AckError::Unknown(_))),
            "not this member's alert any more: {answer:?}"
        );
        assert_eq!(r.seen().len(), 1, "nothing published");

        // Still on the assignment: acknowledged and published.
        lease.0.store(1, Ordering::Relaxed);
        assert!(r.acknowledge(&raised.alert_id).await.is_ok());
        assert_eq!(r.seen().len(), 2);
        r.stop().await;
    }

    /// A reading received while its partition is off the assignment it was read back at (the
    /// assignment lost, its revocation not received yet) is not judged: it is not committed,
    /// so it comes again, and must then raise its alert — not be taken for a duplicate of
    /// itself, with its alert never published.
    #[tokio::test]
    async fn a_reading_of_a_partition_not_held_is_not_judged_and_is_judged_when_it_comes_again() {
        let lease = Arc::new(Lease(AtomicU64::new(1)));
        let r = Running::start(&lease);
        r.send(hot("device_001", 1));
        r.published(1).await;

        lease.0.store(0, Ordering::Relaxed);
        r.send(hot("device_002", 1));
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(r.seen().len(), 1, "nothing published");

        lease.0.store(1, Ordering::Relaxed);
        r.send(hot("device_002", 1));
        let seen = r.published(2).await;
        assert_eq!(
            (seen[1].device_id.as_str(), seen[1].alert_type.as_str()),
            ("device_002", "temperature_high"),
            "raised when it comes again: {seen:?}"
        );
        r.stop().await;
    }
}
