//! The processors of a role and what runs beside them: acknowledgements relayed from `serve`
//! instances ([`crate::ack_relay`]), alert-rule hot reload and the status line. (Each worker
//! reads back the alerts left open on the partitions it is given: [`crate::recovery`].)
//!
//! [`main`] is `iiot process`: a member of the consumer group `KAFKA_GROUP_ID` whose verdicts
//! go to the topics only. Several instances share the partitions; a rebalance moves devices
//! between them.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use iiot_transport::Start;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::status::{self, StatusInput};
use super::{join_bounded, ops_endpoint};
use crate::alerts::book::RuleBook;
use crate::backend::{self, Backend};
use crate::config::{Config, Sources};
use crate::http::OpsState;
use crate::processor::ProcessorStats;
use crate::processor::group::{GroupInputs, ProcessorGroup, Processors, worker_count};
use crate::simulator::SimStats;
use crate::sinks::history_db::HistoryDbSink;
use crate::sinks::topics::{OutputTopics, TopicSink};

/// The running processors of a role.
pub struct Process {
    /// The workers (their counters, the rules and command senders).
    pub group: ProcessorGroup,
    stop: CancellationToken,
    tasks: Vec<(&'static str, JoinHandle<()>)>,
}

/// The sink every processing role has: alerts and dead letters onto the backend's topics.
pub fn topic_sink(
    config: &Config,
    backend: &Backend,
    stats: &Arc<ProcessorStats>,
) -> Arc<TopicSink> {
    let sink = TopicSink::new(
        backend.publisher(),
        OutputTopics::from_config(config),
        stats.clone(),
    );
    // Only a backend that keeps history can give the state back to the next owner.
    Arc::new(match backend.keeps_history() {
        true => sink.with_alert_state(backend.clone()),
        false => sink,
    })
}

/// Starts the processors on `backend` once its topics exist: starts the workers with `inputs`,
/// and relays acknowledgements, reloads rules from `sources` and logs status lines (with
/// `simulator`'s counters) until stopped.
pub async fn start(
    config: &Config,
    backend: &Backend,
    inputs: GroupInputs,
    sources: Sources,
    simulator: Option<Arc<SimStats>>,
    shutdown: &CancellationToken,
) -> anyhow::Result<Process> {
    let k = &config.kafka;
    let stats = inputs.stats.clone();
    let mut inputs = inputs;
    let book = inputs
        .rules
        .get_or_insert_with(|| Arc::new(RuleBook::new(config)))
        .clone();
    let group = ProcessorGroup::start(config, backend.clone(), inputs).await?;
    let stop = shutdown.child_token();
    let requests = backend.subscribe_all(&k.topic_commands, Start::End).await?;
    let mut tasks = vec![(
        "acknowledgement relay",
        tokio::spawn(crate::ack_relay::listen(
            requests,
            group.commands.clone(),
            stop.child_token(),
        )),
    )];
    if backend.keeps_history() {
        // On Kafka: the rules made over any serve's `/api/rules`, latest snapshot first.
        let snapshots = backend
            .subscribe_all(&k.topic_rules, Start::Beginning)
            .await?;
        tasks.push((
            "rules topic",
            tokio::spawn(crate::alerts::book::follow::topic(
                book.clone(),
                snapshots,
                stop.child_token(),
            )),
        ));
    }
    if let Some(db) = book.database() {
        // The API's rules in PostgreSQL: every change, and the rules at start.
        tasks.push((
            "rules database",
            tokio::spawn(crate::alerts::book::follow::database(
                book.clone(),
                db,
                stop.child_token(),
            )),
        ));
    }
    if let Some(watcher) = crate::config::watch_rules(sources, book, stop.child_token()) {
        tasks.push(("rule watcher", watcher));
    }
    let input = StatusInput {
        simulator,
        stats,
        backend: backend.clone(),
        topic: k.topic_device_data.clone(),
        group: k.group_id.clone(),
    };
    let every = config.processor.status_interval;
    tasks.push((
        "status line",
        status::spawn(every, input, stop.child_token()),
    ));
    Ok(Process { group, stop, tasks })
}

impl Process {
    /// Cancelled when a worker ends before [`Process::stop`]: it failed.
    pub fn failed(&self) -> CancellationToken {
        self.group.processor_done.clone()
    }

    /// Stops the processors and the tasks beside them. On the bus the processors first drain
    /// their input (bounded by the bus's queues: nothing queued is lost); on Kafka they stop
    /// between batches, every delivery wait giving way at once. The other tasks are waited
    /// for at most [`super::STOP_LIMIT`] each.
    pub async fn stop(self) -> anyhow::Result<Processors> {
        let finished = self.group.finish().await;
        self.stop.cancel();
        for (what, task) in self.tasks {
            join_bounded(what, task).await;
        }
        finished
    }
}

/// `iiot process`: the processors until `shutdown`, then stopped between batches (offsets of
/// everything delivered are committed as they close).
pub async fn main(
    config: Config,
    sources: Sources,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let backend = backend::kafka_only(&config)?;
    let mut inputs = GroupInputs::new(Vec::new());
    let history_db = super::open_history_db(&config, true).await?;
    if let Some(db) = &history_db {
        // The API's rules from the database (`start` follows it), shown by `/config` too.
        let book = RuleBook::in_database(&config, db.clone(), Vec::new(), "").await;
        inputs.rules = Some(Arc::new(book));
    }
    let mut ops = OpsState::new(&config, inputs.stats.clone(), backend.clone());
    ops.history_db = history_db.clone();
    ops.rules = inputs.rules.clone();
    let server = ops_endpoint(&config, ops).await;
    if !backend::prepare_topics(&backend, &config, &shutdown).await? {
        stop_server(server).await;
        return Ok(());
    }
    inputs
        .sinks
        .push(topic_sink(&config, &backend, &inputs.stats));
    let history_upkeep = history_db.map(|db| {
        inputs.sinks.push(Arc::new(HistoryDbSink::new(db.clone())));
        let stop = CancellationToken::new();
        (db.spawn_upkeep(stop.clone()), stop)
    });
    let process = start(&config, &backend, inputs, sources, None, &shutdown).await?;
    tracing::info!(
        group = %config.kafka.group_id,
        topic = %config.kafka.topic_device_data,
        members = worker_count(&config),
        backend = %backend.describe(),
        "processing"
    );
    let failed = process.failed();
    let failed = tokio::select! {
        _ = shutdown.cancelled() => false,
        _ = failed.cancelled() => true,
    };
    let finished = process.stop().await;
    if let Some((task, stop)) = history_upkeep {
        // After the processors: what they buffered gets one last try.
        stop.cancel();
        join_bounded("history database upkeep", task).await;
    }
    stop_server(server).await;
    let processors = finished?;
    if failed {
        anyhow::bail!("a processor stopped unexpectedly");
    }
    let stats = processors.stats();
    tracing::info!(
        processed = stats.processed.load(Ordering::Relaxed),
        dead_letters = stats.dead_letters_total(),
        alerts_raised = stats.alerts_raised.load(Ordering::Relaxed),
        "stopped"
    );
    Ok(())
}

pub(crate) async fn stop_server(server: Option<crate::listeners::Server>) {
    if let Some(server) = server {
        server.stop().await;
    }
}
