//! The notifier on Kafka: a member of the consumer group `KAFKA_GROUP_NOTIFY` on the alerts
//! topic, so that each alert change is told once however many processors, serves and
//! restarts there are.
//!
//! The processors publish every alert change to the alerts topic before they commit what
//! raised it, so the topic has every change, at least once. Each member of the notify group
//! reads its share of the partitions and hands each change to the notifier with a guard
//! ([`super::ledger`]). A notification that is settled (delivered, or given up for good and
//! counted) is recorded in the delivery log (`KAFKA_TOPIC_NOTIFY_LOG`, the same partition as
//! the change) before the change's offset is committed; a member given a partition reads its
//! delivery log back first. So a change read again — a restart, a takeover after a member
//! died, a processor that published a change twice — is not told again, and a change whose
//! notification was not settled when its member stopped or died is told by the next reader.
//!
//! What can still repeat: a notification delivered in the moment between the receiver's
//! answer and its record reaching the broker (the member dies in between). Receivers that
//! must not see that can use the `alert_id` and `event` of the body as an idempotency key.

use std::collections::{BTreeMap, HashMap};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::stream::{FuturesUnordered, StreamExt};
use iiot_model::Alert;
use iiot_transport::{Message, Subscriber, TransportError};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::NotifyIntake;
use super::ledger::{Ledger, Pending, Settled, Ticket};
use crate::backend::Backend;
use crate::config::Config;

/// Messages taken from the alerts topic at once.
const BATCH: usize = 256;
/// How long reading a partition's delivery log back may take.
const READ_BACK_LIMIT: Duration = Duration::from_secs(60);
/// A delivery record that could not be written is tried again after this long.
const RECORD_RETRY: Duration = Duration::from_secs(1);
/// How long a stopping member waits for its last records.
const FINISH_WAIT: Duration = Duration::from_secs(10);
/// Most messages of one partition waiting to be committed; beyond it the oldest is committed
/// whatever still holds it (see [`Pending::force`]).
pub const MAX_OPEN: usize = 100_000;
/// Broker trouble is logged at most this often.
const WARN_EVERY: Duration = Duration::from_secs(30);

type RecordFuture = Pin<Box<dyn Future<Output = (Record, Result<(), TransportError>)> + Send>>;

/// A delivery record on its way to the log.
struct Record {
    key: String,
    partition: i32,
    pending: Arc<Pending>,
}

/// A running member; see the module documentation.
pub struct NotifyGroup {
    reading: CancellationToken,
    finish: CancellationToken,
    task: JoinHandle<()>,
}

impl NotifyGroup {
    /// Joins the notify group on the alerts topic and starts telling `intake` what it reads.
    pub async fn start(
        config: &Config,
        backend: &Backend,
        intake: NotifyIntake,
    ) -> Result<NotifyGroup, TransportError> {
        let k = &config.kafka;
        let subscriber = backend.subscribe(&k.topic_alerts, &k.group_notify).await?;
        let (settled_tx, settled_rx) = mpsc::unbounded_channel();
        let member = Member {
            backend: backend.clone(),
            log_topic: k.topic_notify_log.clone(),
            subscriber,
            intake,
            ledger: Ledger::new(settled_tx),
            settled: settled_rx,
            records: FuturesUnordered::new(),
            open: HashMap::new(),
            last_warn: None,
        };
        let reading = CancellationToken::new();
        let finish = CancellationToken::new();
        let task = tokio::spawn(member.run(reading.clone(), finish.clone()));
        tracing::info!(group = %k.group_notify, topic = %k.topic_alerts, "notifications from the alerts topic (exactly once per change)");
        Ok(NotifyGroup {
            reading,
            finish,
            task,
        })
    }

    /// Stops reading new changes (call before the notifier stops, so that it can tell what
    /// it has).
    pub fn stop_reading(&self) {
        self.reading.cancel();
    }

    /// Once the notifier has stopped: writes the last records, commits, leaves the group.
    pub async fn finish(self) {
        self.reading.cancel();
        self.finish.cancel();
        let mut task = self.task;
        if tokio::time::timeout(FINISH_WAIT + Duration::from_secs(5), &mut task)
            .await
            .is_err()
        {
            task.abort();
            tracing::warn!("the notify group member did not finish in time");
        }
    }
}

struct Member {
    backend: Backend,
    log_topic: String,
    subscriber: Box<dyn Subscriber>,
    intake: NotifyIntake,
    ledger: Arc<Ledger>,
    settled: mpsc::UnboundedReceiver<Settled>,
    records: FuturesUnordered<RecordFuture>,
    /// Per partition held, the messages read and not committed yet, by offset.
    open: HashMap<i32, BTreeMap<i64, (Arc<Pending>, Message)>>,
    last_warn: Option<std::time::Instant>,
}

impl Member {
    async fn run(mut self, reading: CancellationToken, finish: CancellationToken) {
        let mut batch: Vec<Message> = Vec::new();
        loop {
            tokio::select! {
                biased;
                _ = finish.cancelled() => break,
                Some(s) = self.settled.recv() => self.on_settled(s),
                Some((record, result)) = self.records.next() => self.on_recorded(record, result),
                received = self.subscriber.recv_batch(&mut batch, BATCH), if !reading.is_cancelled() => {
                    match received {
                        Ok(0) => break,
                        Ok(_) => {}
                        Err(e) => {
                            self.warn(&format!("reading the alerts topic: {e}"));
                            tokio::time::sleep(RECORD_RETRY).await;
                            continue;
                        }
                    }
                    let revoked = self.rebalanced().await;
                    let mut taken = std::mem::take(&mut batch);
                    // Fetched before its partition was taken away: its new owner reads it.
                    taken.retain(|m| !revoked.contains(&m.partition));
                    if !self.tell(taken).await {
                        reading.cancel();
                    }
                }
                _ = reading.cancelled(), if !reading.is_cancelled() => {}
            }
        }
        // The notifier has stopped: every ticket is dropped by now or soon.
        let deadline = tokio::time::Instant::now() + FINISH_WAIT;
        loop {
            while let Ok(s) = self.settled.try_recv() {
                self.on_settled(s);
            }
            if self.records.is_empty() {
                break;
            }
            match tokio::time::timeout_at(deadline, self.records.next()).await {
                Ok(Some((record, result))) => self.on_recorded(record, result),
                Ok(None) => {}
                Err(_) => {
                    tracing::warn!(
                        left = self.records.len(),
                        "stopping with delivery records unwritten: those notifications may be told again"
                    );
                    break;
                }
            }
        }
        let partitions: Vec<i32> = self.open.keys().copied().collect();
        for p in partitions {
            self.commit_settled(p);
        }
    }

    /// Partitions taken away are forgotten (and returned); partitions given have their
    /// delivery log read back before any of their changes is told.
    async fn rebalanced(&mut self) -> Vec<i32> {
        let mut revoked = self.subscriber.take_revoked();
        for &p in &revoked {
            self.ledger.forget(p);
            self.open.remove(&p);
        }
        let gained = self.subscriber.take_assigned();
        if gained.is_empty() {
            return revoked;
        }
        let started = std::time::Instant::now();
        match self
            .backend
            .read_partitions(&self.log_topic, &gained, READ_BACK_LIMIT)
            .await
        {
            Ok(messages) => {
                let read = messages.len();
                let mut by_partition: HashMap<i32, Vec<String>> = HashMap::new();
                for m in messages {
                    if let Ok(key) = String::from_utf8(m.key.to_vec()) {
                        by_partition.entry(m.partition).or_default().push(key);
                    }
                }
                for p in &gained {
                    self.ledger
                        .load(*p, by_partition.remove(p).unwrap_or_default());
                }
                tracing::info!(
                    partitions = ?gained,
                    records = read,
                    took_ms = started.elapsed().as_millis() as u64,
                    "delivery records read back"
                );
            }
            Err(e) => {
                // Without them a change read again may be told again; better than not at all.
                tracing::warn!(partitions = ?gained, error = %e, "delivery records could not be read back");
            }
        }
        revoked.retain(|p| !gained.contains(p));
        revoked
    }

    /// Hands each change of `batch` to the notifier; false once the notifier is stopping.
    async fn tell(&mut self, batch: Vec<Message>) -> bool {
        for m in batch {
            // Read again while still in flight (an eager rebalance handed the partition back
            // at its committed offset): it commits when its own notifications settle.
            if self
                .open
                .get(&m.partition)
                .is_some_and(|o| o.contains_key(&m.offset))
            {
                continue;
            }
            let pending = Pending::new(m.partition, m.offset);
            let open = self.open.entry(m.partition).or_default();
            open.insert(m.offset, (pending.clone(), m.clone()));
            let oldest = (open.len() > MAX_OPEN)
                .then(|| open.first_key_value().map(|(_, (p, _))| p.clone()))
                .flatten();
            if let Some(oldest) = oldest {
                // A silence holding an alert for hours, with the changes behind it waiting.
                oldest.force();
                self.warn(&format!(
                    "{MAX_OPEN} alert changes of partition {} wait behind one still held back: committing it anyway (what holds it does not survive a restart)",
                    m.partition
                ));
                self.commit_settled(m.partition);
            }
            let guard = Ticket::guard(self.ledger.clone(), pending.clone());
            match serde_json::from_slice::<Alert>(&m.payload) {
                Ok(alert) => {
                    if !self.intake.tell(alert, guard).await {
                        return false;
                    }
                }
                Err(e) => {
                    // Not an alert change (another producer's mistake): nothing to tell.
                    tracing::debug!(partition = m.partition, offset = m.offset, error = %e, "not an alert change; skipped");
                    drop(guard);
                }
            }
        }
        true
    }

    fn on_settled(&mut self, settled: Settled) {
        match settled {
            Settled::Release(pending) => {
                if pending.release() {
                    self.commit_settled(pending.partition);
                }
            }
            Settled::Record {
                key,
                partition,
                pending,
            } => self.write_record(
                Record {
                    key,
                    partition,
                    pending,
                },
                Duration::ZERO,
            ),
        }
    }

    /// Writes `record` to the delivery log (after `delay`: a retry).
    fn write_record(&mut self, record: Record, delay: Duration) {
        let backend = self.backend.clone();
        let topic = self.log_topic.clone();
        self.records.push(Box::pin(async move {
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            let payload = Bytes::from(
                serde_json::json!({ "delivered": record.key, "at": crate::now_ms() }).to_string(),
            );
            let result = match backend
                .publish_to(&topic, record.partition, record.key.as_bytes(), payload)
                .await
            {
                Ok(receipt) => receipt.delivered().await,
                Err(e) => Err(e),
            };
            (record, result)
        }));
    }

    fn on_recorded(&mut self, record: Record, result: Result<(), TransportError>) {
        match result {
            Ok(()) => {}
            Err(TransportError::Refused(e)) => {
                // The log cannot take it (a log with fewer partitions than the alerts topic):
                // the commit stands for the record.
                self.warn(&format!(
                    "delivery record refused by {}: {e} (give it as many partitions as the alerts topic)",
                    self.log_topic
                ));
            }
            Err(e) => {
                self.warn(&format!("writing a delivery record: {e}; retrying"));
                self.write_record(record, RECORD_RETRY);
                return;
            }
        }
        if record.pending.release() {
            self.commit_settled(record.partition);
        }
    }

    /// Commits partition `p` up to the last message before the first one not settled.
    fn commit_settled(&mut self, p: i32) {
        let Some(open) = self.open.get_mut(&p) else {
            return;
        };
        let mut last: Option<Message> = None;
        while let Some(entry) = open.first_entry() {
            if !entry.get().0.settled() {
                break;
            }
            last = Some(entry.remove().1);
        }
        if let Some(Err(e)) = last.map(|m| self.subscriber.commit(&m)) {
            self.warn(&format!("committing the alerts topic: {e}"));
        }
    }

    fn warn(&mut self, what: &str) {
        let due = self.last_warn.is_none_or(|t| t.elapsed() >= WARN_EVERY);
        if due {
            self.last_warn = Some(std::time::Instant::now());
            tracing::warn!("notify group: {what}");
        }
    }
}

/// A notifier and, on Kafka, the member of the notify group that feeds it.
pub struct Notifications {
    notifier: super::Notifier,
    group: Option<NotifyGroup>,
}

impl Notifications {
    /// Starts the notifier; on a shared backend (Kafka) with channels configured, also joins
    /// the notify group, which then tells it every change of the alerts topic.
    pub async fn start(
        config: &Config,
        backend: &Backend,
        shared: Arc<super::NotifyShared>,
        options: super::NotifyOptions,
    ) -> Result<Notifications, String> {
        let notifier = super::Notifier::start(config, shared, options)?;
        let group = match backend.is_shared() && notifier.has_channels() {
            false => None,
            true => match NotifyGroup::start(config, backend, notifier.intake()).await {
                Ok(group) => Some(group),
                Err(e) => {
                    notifier.stop().await;
                    return Err(format!("joining the notify group: {e}"));
                }
            },
        };
        Ok(Notifications { notifier, group })
    }

    /// The sink for the processors of this process: only without a notify group (with one,
    /// the changes come from the alerts topic, whoever processed them).
    pub fn sink(&self) -> Option<Arc<dyn crate::sinks::Sink>> {
        self.group.is_none().then(|| self.notifier.sink())
    }

    /// Stops reading, lets the notifier tell what it has (within its grace), then records
    /// what was delivered and leaves the group.
    pub async fn stop(self) {
        if let Some(group) = &self.group {
            group.stop_reading();
        }
        self.notifier.stop().await;
        if let Some(group) = self.group {
            group.finish().await;
        }
    }
}
