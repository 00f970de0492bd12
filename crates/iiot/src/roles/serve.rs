//! The serve side: the live store and WebSocket hub ([`Live`]), and the HTTP API, dashboard and
//! WebSocket listeners that answer from them.
//!
//! What feeds the live state depends on the composition: in one process on the bus the
//! processors hand it their verdicts ([`Serve::live_sink`]); on Kafka it follows the topics
//! ([`Serve::follow_topics`]: every partition of `device-data` and `alerts`, so several
//! instances can sit behind a load balancer). Acknowledgements go to this process's
//! processors when it has some, else over the commands topic ([`crate::ack_relay`]).
//!
//! [`main`] is `iiot serve`.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use iiot_transport::{Start, TransportError};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::join_bounded;
use crate::alerts::book::RuleBook;
use crate::backend::{self, Backend};
use crate::config::Config;
use crate::history::database::HistoryDb;
use crate::history::{History, HistoryConfig, HistoryStore};
use crate::http::{AppState, OpsState};
use crate::hub::{Hub, HubConfig};
use crate::listeners::{self, Server};
use crate::processor::ProcessorStats;
use crate::processor::RecoveredAlerts;
use crate::processor::group::COMMAND_QUEUE;
use crate::processor::run::Command;
use crate::simulator::SimStats;
use crate::sinks::Sink;
use crate::sinks::live::Live;
use crate::sinks::notify::group::Notifications;
use crate::sinks::notify::silences::system_clock;
use crate::sinks::notify::{NotifyOptions, NotifyShared};
use crate::store::{Store, StoreConfig};

/// What a serve side shares with the rest of its process.
#[derive(Default)]
pub struct ServeInputs {
    /// The command queue of this process's processors; `None`: relay over the commands topic.
    pub commands: Option<mpsc::Sender<Command>>,
    /// The processors' counters, when this process has processors.
    pub stats: Arc<ProcessorStats>,
    /// The simulator's counters, when this process runs one.
    pub simulator: Option<Arc<SimStats>>,
    /// The notifier's silences and counters, when this process notifies.
    pub notify: Option<Arc<NotifyShared>>,
    /// The alert rules `/api/rules` changes, when this process's processors follow them.
    pub rules: Option<Arc<crate::alerts::book::RuleBook>>,
    /// The MQTT source's connection, when this process runs one.
    pub mqtt: Option<Arc<crate::mqtt::MqttStats>>,
    /// History in PostgreSQL opened by the rest of the process (`iiot run`); else opened here
    /// when `HISTORY_DATABASE_URL` is set.
    pub history_db: Option<Arc<HistoryDb>>,
}

/// A running serve side.
pub struct Serve {
    /// The live store and hub.
    pub live: Live,
    server: Server,
    stop: CancellationToken,
    upkeep: JoinHandle<()>,
    feeder: Option<JoinHandle<Result<(), TransportError>>>,
    /// Cancelled when the feeder ends (its input closed or failed).
    feeder_done: CancellationToken,
    /// The alerts history found open at start-up, by device, for this process's processors.
    restored_alerts: RecoveredAlerts,
    /// The newest event time history held at start-up: the topics are followed from a little
    /// before it, so what was published while this process was down reaches history too.
    resume_from: Option<i64>,
}

/// Starts the live state and binds the listeners (the API answers at once; `/ready` follows
/// the backend).
pub async fn start(
    config: &Config,
    backend: &Backend,
    inputs: ServeInputs,
) -> anyhow::Result<Serve> {
    let mut store = Store::new(StoreConfig::from_config(config));
    let (history, restored, resume_from) = open_history(config, &mut store).await?;
    let history_db = match inputs.history_db {
        Some(db) => Some(db),
        None => super::open_history_db(config, false).await?,
    };
    let live = Live::new(store, Hub::new(HubConfig::from_config(config)))
        .with_history(history)
        .with_database(history_db.clone().map(HistoryStore::database));
    let commands = match inputs.commands {
        Some(commands) => commands,
        None => {
            let (tx, rx) = mpsc::channel::<Command>(COMMAND_QUEUE);
            tokio::spawn(crate::ack_relay::relay(
                rx,
                live.store.clone(),
                backend.publisher(),
                config.kafka.topic_commands.clone(),
            ));
            tx
        }
    };
    let mut ops = OpsState::new(config, inputs.stats, backend.clone());
    ops.simulator = inputs.simulator;
    ops.notify = inputs.notify;
    ops.rules = inputs.rules;
    ops.mqtt = inputs.mqtt;
    ops.history_db = history_db;
    let server = listeners::start(config, AppState::new(ops, live.clone(), commands)).await?;
    // Not a child of `shutdown`: on a signal, `iiot run` lets the serve side catch up with its
    // processors before it stops it ([`Serve::stop`]).
    let stop = CancellationToken::new();
    let upkeep = live.spawn_upkeep(stop.clone(), backend.clone());
    Ok(Serve {
        live,
        server,
        stop,
        upkeep,
        feeder: None,
        feeder_done: CancellationToken::new(),
        restored_alerts: restored,
        resume_from,
    })
}

/// How far before the newest reading history holds a serve side on Kafka starts reading
/// again, beyond `MAX_FUTURE_SKEW` (event times may run that far ahead of the records'
/// timestamps): a minute more. What is read twice is recognised and kept once.
const RESUME_MARGIN_MS: i64 = 60_000;

/// Opens history (`HISTORY=on`) and seeds `store` with what it holds: the devices with their
/// latest readings and the alert log's alerts. Returns it, the alerts still open (by device),
/// and the newest event time it holds.
async fn open_history(
    config: &Config,
    store: &mut Store,
) -> anyhow::Result<(Option<Arc<History>>, RecoveredAlerts, Option<i64>)> {
    let Some(cfg) = HistoryConfig::from_config(config) else {
        return Ok((None, RecoveredAlerts::new(), None));
    };
    // Recovery reads and may seal what the log held: blocking work.
    let (history, restored) = tokio::task::spawn_blocking(move || History::open(cfg))
        .await
        .context("opening history")??;
    for text in &restored.latest {
        if let Ok(reading) = serde_json::from_str::<iiot_model::Reading<'_>>(text) {
            // Received when it was sent, as far as liveness goes: a device silent since then
            // is offline until it reports again.
            store.record(&reading, reading.timestamp);
        }
    }
    for alert in &restored.alerts {
        store.record_alert(alert);
    }
    Ok((Some(Arc::new(history)), restored.open, restored.newest_ms))
}

impl Serve {
    /// The alerts history found open at start-up (taken once), for processors in the same
    /// process on a backend without history of its own.
    pub fn take_restored_alerts(&mut self) -> RecoveredAlerts {
        std::mem::take(&mut self.restored_alerts)
    }

    /// The live state as a sink, for processors in the same process.
    pub fn live_sink(&self) -> Arc<dyn Sink> {
        Arc::new(self.live.clone())
    }

    /// Where the HTTP API listens.
    pub fn http_addr(&self) -> std::net::SocketAddr {
        self.server.http_addr
    }

    /// Feeds the live state from the topics (call once they exist): every reading from now on
    /// — or, with history on disk, from a minute before the newest reading it holds, so that
    /// what was published while this process was down is kept too — and every alert change the
    /// topic still holds, so open alerts raised before this start are shown too.
    pub async fn follow_topics(
        &mut self,
        config: &Config,
        backend: &Backend,
    ) -> anyhow::Result<()> {
        let k = &config.kafka;
        let start = match self.resume_from {
            Some(ms) => {
                let skew =
                    i64::try_from(config.processor.max_future_skew.as_millis()).unwrap_or(i64::MAX);
                let since = ms.saturating_sub(skew).saturating_sub(RESUME_MARGIN_MS);
                tracing::info!(
                    since_ms = since,
                    "following the readings from where history left off"
                );
                Start::Since(since)
            }
            None => Start::End,
        };
        let readings = backend
            .subscribe_all(&k.topic_device_data, start)
            .await
            .context("subscribing to the readings")?;
        let alerts = backend
            .subscribe_all(&k.topic_alerts, Start::Beginning)
            .await
            .context("subscribing to the alerts")?;
        let limits = crate::processor::ProcessorConfig::from_config(config).limits;
        let feed = crate::sources::replica::feed(
            self.live.clone(),
            readings,
            alerts,
            limits,
            self.stop.clone(),
        );
        let done = self.feeder_done.clone();
        self.feeder = Some(tokio::spawn(async move {
            let _done = done.drop_guard();
            feed.await
        }));
        Ok(())
    }

    /// Keeps the store's idea of "offline" in step with reloaded alert rules (the offline rule's
    /// `missed_intervals`), until the serve side stops.
    pub fn follow_rules(
        &self,
        mut rules: tokio::sync::watch::Receiver<Arc<crate::alerts::RuleSet>>,
    ) {
        let (live, stop) = (self.live.clone(), self.stop.clone());
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    changed = rules.changed() => {
                        if changed.is_err() {
                            return;
                        }
                        let missed = rules
                            .borrow_and_update()
                            .offline_missed_intervals()
                            .unwrap_or(StoreConfig::default().offline_missed_intervals);
                        live.write().set_offline_missed_intervals(missed);
                    }
                }
            }
        });
    }

    /// Cancelled when the feed from the topics ends.
    pub fn feeder_done(&self) -> CancellationToken {
        self.feeder_done.clone()
    }

    /// Closes WebSocket clients and the listeners and stops the feed, each wait bounded.
    /// Returns the feed's error, if it failed.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.stop.cancel();
        let fed = match self.feeder {
            Some(feeder) => join_bounded("topic feed", feeder).await,
            None => None,
        };
        self.server.stop().await;
        join_bounded("store upkeep", self.upkeep).await;
        if let Some(history) = self.live.history.clone() {
            // Flushes and seals what is pending: blocking I/O.
            let _ = tokio::task::spawn_blocking(move || history.close()).await;
        }
        match fed {
            Some(Err(e)) => Err(anyhow::Error::from(e).context("reading from the topics")),
            _ => Ok(()),
        }
    }

    /// Waits (at most `timeout`) until the live state has taken `readings` readings and
    /// `alert_changes` alert changes.
    pub async fn caught_up(&self, readings: u64, alert_changes: u64, timeout: Duration) -> bool {
        self.live.caught_up(readings, alert_changes, timeout).await
    }
}

/// `iiot serve`: the live state fed from Kafka, until `shutdown` (or the feed fails).
pub async fn main(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    let backend = backend::kafka_only(&config)?;
    // `/api/rules` here changes the rules of every processor, through the rules topic.
    // With the database, through it instead (the topic is then only read to copy its rules
    // into the database once).
    let topic = config.kafka.topic_rules.clone();
    let history_db = super::open_history_db(&config, false).await?;
    let book = Arc::new(match &history_db {
        Some(db) => RuleBook::in_database(&config, db.clone(), Vec::new(), "").await,
        None => RuleBook::on_topic(&config, backend.publisher(), topic.clone()),
    });
    // With channels configured this serve notifies too, as a member of the notify group.
    let notifying = !config.notify.effective_channels().is_empty();
    let notify = match notifying {
        false => None,
        true => Some(
            NotifyShared::on_topic(&config, system_clock(), &backend, shutdown.child_token())
                .await?,
        ),
    };
    let inputs = ServeInputs {
        rules: Some(book.clone()),
        notify: notify.clone(),
        history_db: history_db.clone(),
        ..ServeInputs::default()
    };
    let mut serve = start(&config, &backend, inputs).await?;
    if !backend::prepare_topics_besides_state(&backend, &config, &shutdown).await {
        return serve.stop().await;
    }
    let notifications = match notify {
        None => None,
        Some(shared) => {
            let options = NotifyOptions::from_live(&serve.live);
            match Notifications::start(&config, &backend, shared, options).await {
                Ok(n) => Some(n),
                Err(e) => {
                    let _ = serve.stop().await;
                    return Err(anyhow::Error::msg(e));
                }
            }
        }
    };
    let snapshots = backend.subscribe_all(&topic, Start::Beginning).await?;
    tokio::spawn(crate::alerts::book::follow::topic(
        book.clone(),
        snapshots,
        shutdown.child_token(),
    ));
    if let Some(db) = history_db {
        tokio::spawn(crate::alerts::book::follow::database(
            book,
            db,
            shutdown.child_token(),
        ));
    }
    let followed = serve.follow_topics(&config, &backend).await;
    if followed.is_ok() {
        tracing::info!(backend = %backend.describe(), "serving live data");
        let done = serve.feeder_done();
        tokio::select! {
            _ = shutdown.cancelled() => {}
            _ = done.cancelled() => {}
        }
    }
    if let Some(n) = notifications {
        n.stop().await;
    }
    let stopped = serve.stop().await;
    followed.and(stopped)
}
