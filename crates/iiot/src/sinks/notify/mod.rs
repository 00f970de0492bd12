//! The notifier: a sink of alert changes that tells people — webhooks (JSON, Slack, Teams) and
//! e-mail — routed, rate-limited and silenced as configured (`[[notify.channels]]`,
//! `[[notify.routes]]`, `/api/silences`).
//!
//! It must never slow the pipeline: [`Sink::take`] only `try_send`s each change into a bounded
//! intake queue (full: dropped, counted, logged at most once per [`WARN_EVERY`]) and returns.
//! Behind it one dispatcher task ([`dispatch`]) routes, silences and rate-limits, and one worker
//! per channel ([`channels`]) delivers with retries; each has its own bounded queue, so a dead
//! channel holds up only itself.
//!
//! Exactly one notification per change holds in one process (the processors hand each change
//! to their sinks once). On Kafka the notifier is not a sink: [`group`] reads the alerts topic
//! as a member of the notify group and hands each change over with a ticket ([`ledger`]), so a
//! notification is recorded as delivered before the change is committed, and a change read
//! again is not told twice. A channel queue that is full (a storm) keeps what does not fit for
//! one digest, told once there is room.
//!
//! - [`config`]: the settings and their validation. [`routing`]: matchers and routes.
//! - [`silences`]: one-off and weekly silences, the injected [`silences::Clock`].
//! - [`stats`]: the per-channel counters `/metrics` shows. [`email`]: the SMTP channel.

pub mod channels;
pub mod config;
mod dispatch;
pub mod email;
pub mod group;
pub mod ledger;
pub mod outbox;
pub mod routing;
pub mod silences;
pub mod stats;

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use iiot_model::Alert;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use self::dispatch::{Batch, Dispatcher, Limiter, Overflow, Slot};
use self::ledger::Ticket;
use self::routing::{DeviceLookup, DeviceMeta, Routes};
use self::silences::{Clock, Silences};
use self::stats::{ChannelStats, NotifyStats};
use super::live::Live;
use super::{Sink, SinkError, Verdicts};
use crate::config::Config;

pub use config::NotifySettings;
pub use dispatch::device_link;

/// A full intake is logged at most this often.
pub const WARN_EVERY: Duration = Duration::from_secs(10);
/// How often the dispatcher looks at the clock (rate-limit windows, silences ending).
pub const TICK: Duration = Duration::from_secs(1);
/// How long [`Notifier::stop`] lets the channels deliver what is queued, by default.
pub const STOP_GRACE: Duration = Duration::from_secs(10);
/// Between attempts at the silences topic (publishing a change, or reading on after an error).
const SILENCE_RETRY: Duration = Duration::from_secs(2);
/// A silence change is published this many times before it is given up (logged); each attempt
/// is retried by librdkafka itself up to its delivery timeout (30 s), so a few minutes in all,
/// the changes behind it waiting.
const SILENCE_PUBLISH_ATTEMPTS: u32 = 5;

/// What the notifier shares with the HTTP API: the silences and the counters.
pub struct NotifyShared {
    /// The silences (`/api/silences`).
    pub silences: Arc<Silences>,
    /// The counters (`/metrics`).
    pub stats: Arc<NotifyStats>,
}

impl NotifyShared {
    /// As [`NotifyShared::new`], with the silences kept in `DATA_DIR/silences.json` when
    /// history is on (read back now: silences survive a restart). For `iiot run`, the one role
    /// that holds the data directory's lock.
    pub fn persisted(config: &Config, clock: Clock) -> Result<Arc<NotifyShared>, String> {
        let shared = NotifyShared::new(config, clock.clone());
        let dir = &config.history.data_dir;
        // Not a directory: opening history refuses it next, with the configuration error.
        if !config.history.enabled || (dir.exists() && !dir.is_dir()) {
            return Ok(shared);
        }
        let file = dir.join("silences.json");
        let silences = match Silences::persisted(clock.clone(), file.clone()) {
            Ok(s) => s,
            Err(e) => {
                // Torn or edited by hand: kept aside for a person to look at; the start goes
                // on without them rather than not at all.
                let aside = file.with_extension("json.bad");
                std::fs::rename(&file, &aside).map_err(|r| {
                    format!("cannot read the silences ({e}) nor set them aside: {r}")
                })?;
                tracing::warn!(error = %e, kept = %aside.display(), "silences unreadable: starting without them");
                Silences::persisted(clock, file)
                    .map_err(|e| format!("cannot read the silences: {e}"))?
            }
        };
        Ok(Arc::new(NotifyShared {
            silences: Arc::new(silences),
            stats: shared.stats.clone(),
        }))
    }

    /// As [`NotifyShared::new`], with the silences kept on the silences topic
    /// (`KAFKA_TOPIC_SILENCES`) of `backend`: every instance publishes its changes there and
    /// follows the topic from its beginning until `stop`, so a silence made through any
    /// `serve` holds for every notifier. Each silence is a record under its id (compacted:
    /// the latest is kept; an empty record deletes), so changes through two instances at once
    /// do not overwrite each other.
    pub async fn on_topic(
        config: &Config,
        clock: Clock,
        backend: &crate::backend::Backend,
        stop: CancellationToken,
    ) -> Result<Arc<NotifyShared>, iiot_transport::TransportError> {
        let base = NotifyShared::new(config, clock.clone());
        let (silences, mut changes) = Silences::on_topic(clock);
        let silences = Arc::new(silences);
        let topic = config.kafka.topic_silences.clone();
        let mut subscriber = backend
            .subscribe_all(&topic, iiot_transport::Start::Beginning)
            .await?;
        let publisher = backend.publisher();
        let (t, done) = (topic.clone(), stop.clone());
        tokio::spawn(async move {
            loop {
                let change = tokio::select! {
                    c = changes.recv() => c,
                    _ = done.cancelled() => None,
                };
                let Some((id, silence)) = change else { break };
                let payload = silence
                    .map(|s| serde_json::to_vec(&s).unwrap_or_default())
                    .unwrap_or_default();
                let payload = bytes::Bytes::from(payload);
                // Retried while the broker is away (this serve has applied it already; the
                // others see it once it is on the topic), in order with the changes behind it.
                let mut attempt = 0u32;
                loop {
                    let sent = match publisher.publish(&t, id.as_bytes(), payload.clone()).await {
                        Ok(receipt) => receipt.delivered().await,
                        Err(e) => Err(e),
                    };
                    let e = match sent {
                        Ok(()) => break,
                        Err(e) => e,
                    };
                    attempt += 1;
                    let retry = !matches!(
                        e,
                        iiot_transport::TransportError::Refused(_)
                            | iiot_transport::TransportError::Closed
                    ) && attempt < SILENCE_PUBLISH_ATTEMPTS;
                    tracing::warn!(id, attempt, retry, error = %e, "a silence change could not be published");
                    if !retry {
                        break;
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(SILENCE_RETRY) => {}
                        _ = done.cancelled() => break,
                    }
                }
            }
        });
        let follower = silences.clone();
        tokio::spawn(async move {
            let mut batch = Vec::new();
            let mut warned = None;
            loop {
                batch.clear();
                let received = tokio::select! {
                    r = subscriber.recv_batch(&mut batch, 64) => r,
                    _ = stop.cancelled() => return,
                };
                match received {
                    Ok(0) | Err(iiot_transport::TransportError::Closed) => return,
                    Ok(_) => {}
                    Err(e) => {
                        // The subscription keeps its place: read on once the broker is back.
                        if warned.is_none_or(|t: std::time::Instant| t.elapsed() >= WARN_EVERY) {
                            warned = Some(std::time::Instant::now());
                            tracing::warn!(%topic, error = %e, "reading the silences topic failed; retrying");
                        }
                        tokio::select! {
                            _ = tokio::time::sleep(SILENCE_RETRY) => {}
                            _ = stop.cancelled() => return,
                        }
                        continue;
                    }
                }
                for m in &batch {
                    let id = String::from_utf8_lossy(&m.key);
                    let silence = match m.payload.is_empty() {
                        true => None,
                        false => match serde_json::from_slice(&m.payload) {
                            Ok(s) => Some(s),
                            Err(e) => {
                                tracing::warn!(%id, error = %e, "unreadable silence skipped");
                                continue;
                            }
                        },
                    };
                    follower.apply(&id, silence);
                }
            }
        });
        Ok(Arc::new(NotifyShared {
            silences,
            stats: base.stats.clone(),
        }))
    }

    /// Silences in memory on `clock`, and zeroed counters for every channel of `config`.
    pub fn new(config: &Config, clock: Clock) -> Arc<NotifyShared> {
        let channels = config
            .notify
            .effective_channels()
            .iter()
            .map(|c| Arc::new(ChannelStats::new(&c.name)))
            .collect();
        Arc::new(NotifyShared {
            silences: Arc::new(Silences::in_memory(clock)),
            stats: Arc::new(NotifyStats {
                channels,
                ..NotifyStats::default()
            }),
        })
    }
}

/// How a notifier looks at the world (the defaults in production; tests move the clock).
pub struct NotifyOptions {
    /// Where device metadata (building, floor, model) comes from.
    pub lookup: Option<DeviceLookup>,
    /// How often the dispatcher looks at the clock.
    pub tick: Duration,
    /// How long [`Notifier::stop`] lets the channels deliver what is queued.
    pub stop_grace: Duration,
    /// Where the outbox is kept ([`outbox`]: a data directory), so that a restart neither
    /// loses nor repeats a notification; `None`: in memory only.
    pub outbox: Option<std::path::PathBuf>,
}

impl NotifyOptions {
    /// Metadata from `live`'s store, the clock looked at every [`TICK`].
    pub fn from_live(live: &Live) -> NotifyOptions {
        NotifyOptions {
            lookup: Some(lookup_in(live)),
            tick: TICK,
            stop_grace: STOP_GRACE,
            outbox: None,
        }
    }
}

/// A device's metadata from the latest reading in `live`'s store.
pub fn lookup_in(live: &Live) -> DeviceLookup {
    let live = live.clone();
    Arc::new(move |id: &str| {
        let store = live.read();
        let view = store.device(id, crate::now_ms())?;
        Some(DeviceMeta {
            building: view.latest.location.building.to_string(),
            floor: view.latest.location.floor,
            model: view.latest.device_info.model.to_string(),
        })
    })
}

/// A running notifier.
pub struct Notifier {
    sink: Arc<NotifySink>,
    shared: Arc<NotifyShared>,
    drain: CancellationToken,
    give_up: CancellationToken,
    dispatcher: JoinHandle<()>,
    workers: Vec<JoinHandle<()>>,
    stop_grace: Duration,
    /// The outbox's writer, and what ends it once the channels have stopped.
    outbox: Option<(JoinHandle<()>, CancellationToken)>,
    /// The dispatcher's intake.
    intake: mpsc::Sender<Change>,
}

impl Notifier {
    /// Starts the channel workers and the dispatcher for `config`'s channels (validated when
    /// the config was loaded; an error here is a channel that cannot be built).
    pub fn start(
        config: &Config,
        shared: Arc<NotifyShared>,
        options: NotifyOptions,
    ) -> Result<Notifier, String> {
        let specs = config.notify.effective_channels();
        let give_up = CancellationToken::new();
        let mut slots = Vec::new();
        let mut workers = Vec::new();
        for (spec, stats) in specs.iter().zip(&shared.stats.channels) {
            let worker = channels::start(spec, stats.clone(), give_up.clone())?;
            workers.push(worker.task);
            slots.push(Slot {
                notify_on: spec.notify_on.clone(),
                limiter: spec.max_per_minute.map(Limiter::new),
                batch: spec.digest.map(Batch::new),
                queue: worker.queue,
                stats: stats.clone(),
                overflow: Overflow::default(),
            });
        }
        let names: Vec<String> = specs.iter().map(|c| c.name.clone()).collect();
        let dispatcher = Dispatcher::new(
            slots,
            Routes::new(&config.notify.routes, &names),
            shared.silences.clone(),
            options.lookup,
            dashboard_url(config),
            shared.stats.clone(),
        );
        let (tx, rx) = mpsc::channel(config.notify.queue_capacity);
        let drain = CancellationToken::new();
        let dispatcher = tokio::spawn(run(
            dispatcher,
            shared.clone(),
            rx,
            options.tick,
            drain.clone(),
        ));
        let mut sink_tx = tx.clone();
        let mut outbox = None;
        if let Some(dir) = options.outbox.as_ref().filter(|_| !names.is_empty()) {
            let (otx, orx) = mpsc::channel(config.notify.queue_capacity);
            let opened = outbox::Outbox::open(dir, tx.clone(), shared.stats.clone());
            let (writer, left) = match opened {
                Ok(opened) => opened,
                Err(e) => {
                    drain.cancel();
                    give_up.cancel();
                    return Err(format!(
                        "cannot open the notifier's outbox in {}: {e}",
                        dir.display()
                    ));
                }
            };
            let finish = CancellationToken::new();
            let task = tokio::spawn(writer.run(left, orx, finish.clone()));
            outbox = Some((task, finish));
            sink_tx = otx;
        }
        let sink = Arc::new(NotifySink {
            tx: sink_tx,
            stats: shared.stats.clone(),
            channels: names.len(),
            last_warn_ms: AtomicI64::new(i64::MIN),
        });
        if !names.is_empty() {
            tracing::info!(channels = ?names, "notifications on");
        }
        Ok(Notifier {
            sink,
            shared,
            drain,
            give_up,
            dispatcher,
            workers,
            stop_grace: options.stop_grace,
            outbox,
            intake: tx,
        })
    }

    /// The sink the processors hand their verdicts to.
    pub fn sink(&self) -> Arc<dyn Sink> {
        self.sink.clone()
    }

    /// Whether any channel is configured (without one there is nothing to tell).
    pub fn has_channels(&self) -> bool {
        self.sink.channels > 0
    }

    /// The intake, for a reader of the alerts topic ([`group`]).
    pub fn intake(&self) -> NotifyIntake {
        NotifyIntake {
            tx: self.intake.clone(),
            stats: self.shared.stats.clone(),
        }
    }

    /// The counters.
    pub fn stats(&self) -> &NotifyStats {
        &self.shared.stats
    }

    /// Tells what is queued (bounded by the options' `stop_grace`), then stops; what is left
    /// is logged.
    pub async fn stop(self) {
        self.drain.cancel();
        let _ = self.dispatcher.await;
        let deadline = tokio::time::Instant::now() + self.stop_grace;
        for mut worker in self.workers {
            if tokio::time::timeout_at(deadline, &mut worker)
                .await
                .is_err()
            {
                self.give_up.cancel();
                if tokio::time::timeout(Duration::from_secs(1), &mut worker)
                    .await
                    .is_err()
                {
                    worker.abort();
                    tracing::warn!("a notification channel was still delivering at shutdown");
                }
            }
        }
        if let Some((mut task, finish)) = self.outbox {
            finish.cancel();
            if tokio::time::timeout(Duration::from_secs(5), &mut task)
                .await
                .is_err()
            {
                task.abort();
            }
        }
    }
}

/// The dispatcher loop: changes as they come, the clock every `tick`; on `drain`, what is
/// queued, then the digests still held, then the channel queues close.
async fn run(
    mut d: Dispatcher,
    shared: Arc<NotifyShared>,
    mut rx: mpsc::Receiver<Change>,
    tick: Duration,
    drain: CancellationToken,
) {
    let mut interval = tokio::time::interval(tick);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    // The silences' clock (injected in tests) is the dispatcher's too.
    let now = || shared.silences.now_ms();
    loop {
        tokio::select! {
            change = rx.recv() => match change {
                Some(mut change) => {
                    shared.stats.intake.fetch_sub(1, Ordering::Relaxed);
                    let guard = change.guard.take();
                    d.handle(change.alert.clone(), now(), guard);
                }
                None => break,
            },
            _ = interval.tick() => d.tick(now()),
            _ = drain.cancelled() => {
                rx.close();
                while let Ok(mut change) = rx.try_recv() {
                    shared.stats.intake.fetch_sub(1, Ordering::Relaxed);
                    let guard = change.guard.take();
                    d.handle(change.alert.clone(), now(), guard);
                }
                break;
            }
        }
    }
    d.tick(now());
    d.finish();
}

/// The dashboard's base address, without a trailing `/`.
fn dashboard_url(config: &Config) -> String {
    let base = config
        .notify
        .dashboard_url
        .clone()
        .unwrap_or_else(|| format!("http://localhost:{}", config.http_port));
    base.trim_end_matches('/').to_string()
}

/// The notifier's intake for a reader of the alerts topic ([`group`]): unlike the sink, it
/// waits while the intake is full (a topic reader can wait; the pipeline must not).
#[derive(Clone)]
pub struct NotifyIntake {
    tx: mpsc::Sender<Change>,
    stats: Arc<NotifyStats>,
}

impl NotifyIntake {
    /// Tells the change `alert`, holding `guard` until each of its notifications is settled.
    /// False once the notifier is stopping.
    pub async fn tell(&self, alert: Alert, guard: Ticket) -> bool {
        self.stats.intake.fetch_add(1, Ordering::Relaxed);
        let change = Change {
            alert,
            guard: Some(guard),
        };
        if self.tx.send(change).await.is_err() {
            self.stats.intake.fetch_sub(1, Ordering::Relaxed);
            return false;
        }
        true
    }
}

/// One alert change for the dispatcher, with the hold on its input message when it was read
/// from the alerts topic.
struct Change {
    alert: Alert,
    guard: Option<Ticket>,
}

impl Drop for Change {
    /// A change dropped before the dispatcher took it (the notifier stopping) was not told:
    /// its input stays uncommitted (Kafka) or open in the outbox.
    fn drop(&mut self) {
        if let Some(guard) = self.guard.take() {
            guard.abandon();
        }
    }
}

/// The sink half: enqueue and return.
struct NotifySink {
    tx: mpsc::Sender<Change>,
    stats: Arc<NotifyStats>,
    channels: usize,
    last_warn_ms: AtomicI64,
}

#[async_trait]
impl Sink for NotifySink {
    fn name(&self) -> &'static str {
        "notify"
    }

    async fn take(&self, verdicts: &Verdicts<'_>, _: &CancellationToken) -> Result<(), SinkError> {
        if self.channels == 0 {
            return Ok(());
        }
        for change in &verdicts.alerts {
            // Counted before the send so the dispatcher's decrement never goes first.
            self.stats.intake.fetch_add(1, Ordering::Relaxed);
            let change = Change {
                alert: change.alert.clone(),
                guard: None,
            };
            if self.tx.try_send(change).is_err() {
                self.stats.intake.fetch_sub(1, Ordering::Relaxed);
                self.stats.dropped.fetch_add(1, Ordering::Relaxed);
                self.warn_full(verdicts.now_ms);
            }
        }
        Ok(())
    }
}

impl NotifySink {
    fn warn_full(&self, now_ms: i64) {
        let last = self.last_warn_ms.load(Ordering::Relaxed);
        let due = last == i64::MIN || now_ms - last >= WARN_EVERY.as_millis() as i64;
        if due
            && self
                .last_warn_ms
                .compare_exchange(last, now_ms, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::warn!(
                dropped = self.stats.dropped.load(Ordering::Relaxed),
                "notifier queue full: alert changes not notified (iot_notifications_dropped_total)"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sinks::AlertChange;
    use crate::sinks::notify::silences::SilenceSpec;
    use crate::test_support::alert;

    #[test]
    fn with_history_on_silences_outlive_the_process_and_a_torn_file_is_set_aside() {
        let dir = tempfile::tempdir().expect("dir");
        let mut config = Config::default();
        config.history.data_dir = dir.path().to_owned();
        let clock = silences::system_clock();
        let spec: SilenceSpec = serde_json::from_value(serde_json::json!({
            "ends_at": crate::now_ms() + 3_600_000, "comment": "maintenance", "created_by": "ops"
        }))
        .expect("spec");
        let first = NotifyShared::persisted(&config, clock.clone()).expect("persisted");
        let made = first.silences.create(spec.clone()).expect("created");
        let again = NotifyShared::persisted(&config, clock.clone()).expect("read back");
        let listed: Vec<String> = again
            .silences
            .list()
            .into_iter()
            .map(|v| v.silence.id)
            .collect();
        assert_eq!(listed, vec![made.id]);
        std::fs::write(dir.path().join("silences.json"), b"{not json").expect("garble");
        let fresh = NotifyShared::persisted(&config, clock.clone()).expect("starts anyway");
        assert!(fresh.silences.list().is_empty());
        let aside = std::fs::read(dir.path().join("silences.json.bad")).expect("set aside");
        assert_eq!(aside, b"{not json");
        config.history.enabled = false;
        let off = NotifyShared::persisted(&config, clock).expect("in memory");
        off.silences.create(spec).expect("created");
        assert_eq!(off.silences.list().len(), 1);
        assert!(
            !dir.path().join("silences.json").exists(),
            "memory only: no file written"
        );
    }

    #[tokio::test]
    async fn a_full_intake_drops_and_counts_instead_of_waiting() {
        let stats = Arc::new(NotifyStats::default());
        // Nobody reads the intake: the dispatcher is stuck, say.
        let (tx, _rx) = mpsc::channel(16);
        let sink = NotifySink {
            tx,
            stats: stats.clone(),
            channels: 1,
            last_warn_ms: AtomicI64::new(i64::MIN),
        };
        let verdicts = Verdicts {
            alerts: (0..20)
                .map(|i| AlertChange::new(alert(&format!("device_{i:03}"), "temperature_high")))
                .collect(),
            ..Verdicts::empty(crate::test_support::T0)
        };
        sink.take(&verdicts, &CancellationToken::new())
            .await
            .expect("never refuses");
        let s = stats.snapshot();
        assert_eq!((s.intake, s.dropped), (16, 4));
    }
}
