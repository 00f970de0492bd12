//! `iiot run`: every role in one process — the sources (the simulator unless `SIMULATOR=off`
//! or `DEVICE_COUNT=0`; real devices over MQTT with `MQTT_URL`), the processors, and the serve
//! side (which also takes `POST /api/ingest`) — on the embedded bus, or on Kafka with
//! `KAFKA_BROKERS`.
//!
//! On the bus the processors hand their verdicts straight to the live state (one decode, one
//! verdict per reading) as well as to the topics; on Kafka, where other processors may share
//! the group, the serve side follows the topics like any `iiot serve`.
//!
//! Start-up order: the HTTP server first (`/ready` answers 503 until a broker does), then the
//! topics, the processors and the serve feed, and only then the sources. Shutdown: stop the
//! sources, let the processors take what they sent (on the bus: drain the input; on Kafka:
//! wait, bounded, for them and for the serve side to catch up), then stop the serve side.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::process::{self, topic_sink};
use super::serve::{self, ServeInputs};
use super::simulate::{self, SimulateOptions};
use crate::alerts::book::RuleBook;
use crate::backend::{self, Backend};
use crate::config::{Config, Sources};
use crate::mqtt::MqttStats;
use crate::processor::ProcessorStats;
use crate::processor::group::GroupInputs;
use crate::simulator::{Pace, SimStats};
use crate::sinks::history_db::HistoryDbSink;
use crate::sinks::notify::group::Notifications;
use crate::sinks::notify::silences::system_clock;
use crate::sinks::notify::{NotifyOptions, NotifyShared};
use crate::sources::mqtt::MqttSource;
use crate::sources::{self as source, Source};

/// How long a Kafka run waits at shutdown for the processors to catch up with the simulator
/// (and the serve side with the processors).
const KAFKA_DRAIN: Duration = Duration::from_secs(30);

/// What a finished `iiot run` did.
#[derive(Debug, Clone, PartialEq)]
pub struct RunReport {
    /// Messages the simulator sent.
    pub sent: u64,
    /// Readings processed.
    pub processed: u64,
    /// Dead letters.
    pub dead_letters: u64,
    /// Alerts raised.
    pub alerts_raised: u64,
    /// Wall time.
    pub elapsed: Duration,
}

/// Runs everything until `duration` elapses or `shutdown` is cancelled, then shuts down in
/// order. `sources` is where the config came from, for alert-rule hot reload.
pub async fn run(
    config: Config,
    sources: Sources,
    duration: Option<Duration>,
    shutdown: CancellationToken,
) -> anyhow::Result<RunReport> {
    let started = Instant::now();
    let backend = backend::from_config(&config)?;
    let sim_stats = Arc::new(SimStats::default());
    let mqtt_stats = config
        .mqtt
        .url
        .as_ref()
        .map(|_| Arc::new(MqttStats::default()));
    let (serve, process, notifier) = compose(
        &config,
        &backend,
        sources,
        &sim_stats,
        &mqtt_stats,
        &shutdown,
    )
    .await?;
    // What the processors took before the simulator started (a backlog left in Kafka).
    let stats = process.group.stats.clone();
    let baseline = Baseline {
        taken: stats.taken(),
        dead_letters: stats.dead_letters_total(),
    };
    let inputs = sources_for(&config, duration, &sim_stats, &mqtt_stats, &stats);
    let names: Vec<&str> = inputs.iter().map(|s| s.name()).collect();
    tracing::info!(
        sources = ?names,
        devices = config.simulator.device_count,
        backend = %backend.describe(),
        "starting the pipeline (sources → processors → serve)"
    );
    let topic = &config.kafka.topic_device_data;
    let running = source::start(inputs, backend.publisher(), topic, shutdown.child_token());
    // Fail fast: a processor that dies stops the sources (and `stop` below reports why).
    let stop_on_failure = stop_sources_when(process.failed(), running.stopping(), duration);
    running.wait().await;
    stop_on_failure.abort();
    tracing::info!("sources stopped; draining the processors");
    if backend.is_shared() {
        catch_up(&process.group, &serve, baseline, &sim_stats, &stats).await;
    }
    let processors = process.stop().await;
    notifier.stop().await;
    let served = serve.stop().await;
    backend.close();
    let processors = processors?;
    served?;
    Ok(report(processors.stats(), &sim_stats, started))
}

/// The sources `config` asks for: the simulator (unless off or without devices), paced in
/// real time for `duration`, and the MQTT source when `MQTT_URL` is set.
fn sources_for(
    config: &Config,
    duration: Option<Duration>,
    sim_stats: &Arc<SimStats>,
    mqtt_stats: &Option<Arc<MqttStats>>,
    processor_stats: &Arc<ProcessorStats>,
) -> Vec<Box<dyn Source>> {
    let mut inputs: Vec<Box<dyn Source>> = Vec::new();
    if config.simulator.runs() {
        let options = SimulateOptions {
            pace: Pace::RealTime,
            duration,
            progress: false,
        };
        inputs.push(simulate::source(config, options, sim_stats.clone()));
    }
    if let Some(mqtt) = mqtt_stats {
        let source = MqttSource::from_config(config, mqtt.clone(), processor_stats.clone());
        inputs.extend(source.map(|s| Box::new(s) as Box<dyn Source>));
    }
    inputs
}

/// Cancels `stopping` (the sources' token) when the processors fail or `duration` is up.
fn stop_sources_when(
    failed: CancellationToken,
    stopping: CancellationToken,
    duration: Option<Duration>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let time_up = async {
            match duration {
                Some(d) => tokio::time::sleep(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = failed.cancelled() => stopping.cancel(),
            _ = time_up => stopping.cancel(),
            _ = stopping.cancelled() => {}
        }
    })
}

/// The serve side (its listeners first: `/ready` answers while the topics are prepared), the
/// topics, then the processors with their sinks, and the serve side's feed.
async fn compose(
    config: &Config,
    backend: &Backend,
    sources: Sources,
    sim_stats: &Arc<SimStats>,
    mqtt_stats: &Option<Arc<MqttStats>>,
    shutdown: &CancellationToken,
) -> anyhow::Result<(serve::Serve, process::Process, Notifications)> {
    let mut inputs = GroupInputs::new(Vec::new());
    // On Kafka the silences are shared with every other instance through their topic.
    let notify = match backend.is_shared() {
        false => NotifyShared::persisted(config, system_clock()).map_err(anyhow::Error::msg)?,
        true => {
            NotifyShared::on_topic(config, system_clock(), backend, shutdown.child_token()).await?
        }
    };
    let history_db = super::open_history_db(config, true).await?;
    // On Kafka other `iiot process` instances may share the group: API rules go through the
    // rules topic, which the processors here follow too (`process::start`). With the database
    // they are kept there instead, on the bus or on Kafka (`rules.json` copied in once).
    let rules = match (&history_db, backend.is_shared()) {
        (Some(db), shared) => {
            let before = match shared {
                false => crate::alerts::book::kept_in_data_dir(config)
                    .map_err(anyhow::Error::msg)?
                    .map(|(_, api)| api)
                    .unwrap_or_default(),
                true => Vec::new(),
            };
            let book = RuleBook::in_database(config, db.clone(), before, "rules.json").await;
            Arc::new(book)
        }
        (None, false) => Arc::new(RuleBook::persisted(config).map_err(anyhow::Error::msg)?),
        (None, true) => Arc::new(RuleBook::on_topic(
            config,
            backend.publisher(),
            config.kafka.topic_rules.clone(),
        )),
    };
    inputs.rules = Some(rules.clone());
    let serve_inputs = ServeInputs {
        history_db: history_db.clone(),
        commands: Some(inputs.commands.0.clone()),
        stats: inputs.stats.clone(),
        simulator: config.simulator.runs().then(|| sim_stats.clone()),
        mqtt: mqtt_stats.clone(),
        notify: Some(notify.clone()),
        rules: Some(rules),
    };
    let mut serve = serve::start(config, backend, serve_inputs).await?;
    if !backend.keeps_history() {
        // The bus forgets at exit: the alerts left open last time come from history on disk
        // (on Kafka the processors read them back from the alerts topic).
        inputs.recovered = serve.take_restored_alerts();
    }
    if !backend::prepare_topics(backend, config, shutdown).await? {
        serve.stop().await?;
        anyhow::bail!("stopped before the Kafka topics could be prepared (no broker answered)");
    }
    // On a failure past this point, what was started is stopped again (listeners unbound,
    // group left) before the error is returned.
    let mut options = NotifyOptions::from_live(&serve.live);
    // In one process with history on, the outbox in the data directory: a restart (even by
    // SIGKILL) neither loses nor repeats a notification. On Kafka the topics do that.
    let dir = &config.history.data_dir;
    if !backend.is_shared() && config.history.enabled && dir.is_dir() {
        options.outbox = Some(dir.clone());
    }
    let notifier = match Notifications::start(config, backend, notify, options).await {
        Ok(notifier) => notifier,
        Err(e) => {
            let _ = serve.stop().await;
            return Err(anyhow::Error::msg(e));
        }
    };
    inputs
        .sinks
        .push(topic_sink(config, backend, &inputs.stats));
    if !backend.is_shared() {
        // The processors here are all there are: they feed the live state directly.
        inputs.sinks.push(serve.live_sink());
    }
    if let Some(db) = history_db {
        // The processors write history before their input is committed (on Kafka each
        // member for its own partitions); the serve side only reads it.
        inputs.sinks.push(Arc::new(HistoryDbSink::new(db.clone())));
        db.spawn_upkeep(shutdown.child_token());
    }
    // On Kafka the notify group reads the alerts topic instead, whoever processed them.
    inputs.sinks.extend(notifier.sink());
    let simulator = Some(sim_stats.clone());
    let process = match process::start(config, backend, inputs, sources, simulator, shutdown).await
    {
        Ok(process) => process,
        Err(e) => {
            notifier.stop().await;
            let _ = serve.stop().await;
            return Err(e);
        }
    };
    serve.follow_rules(process.group.rules.subscribe());
    let followed = match backend.is_shared() {
        true => serve.follow_topics(config, backend).await,
        false => Ok(()),
    };
    if let Err(e) = followed {
        let _ = process.stop().await;
        notifier.stop().await;
        let _ = serve.stop().await;
        return Err(e);
    }
    Ok((serve, process, notifier))
}

/// The report of a finished run, logged.
fn report(stats: &ProcessorStats, sim: &SimStats, started: Instant) -> RunReport {
    let report = RunReport {
        sent: sim.sent.load(Ordering::Relaxed),
        processed: stats.processed.load(Ordering::Relaxed),
        dead_letters: stats.dead_letters_total(),
        alerts_raised: stats.alerts_raised.load(Ordering::Relaxed),
        elapsed: started.elapsed(),
    };
    tracing::info!(
        sent = report.sent,
        processed = report.processed,
        dead_letters = report.dead_letters,
        alerts_raised = report.alerts_raised,
        elapsed_s = report.elapsed.as_secs_f64(),
        "stopped"
    );
    report
}

/// Kafka's log does not end: waits (bounded) until the processors have taken what was sent and
/// the serve side has seen what they decided, so a timed run reports complete figures. What is
/// left is read again by the group next time.
async fn catch_up(
    group: &crate::processor::group::ProcessorGroup,
    serve: &serve::Serve,
    baseline: Baseline,
    sim: &SimStats,
    stats: &ProcessorStats,
) {
    let sent = sim.sent.load(Ordering::Relaxed);
    if !group.wait_for(baseline.taken + sent, KAFKA_DRAIN).await {
        tracing::warn!(
            sent,
            taken = stats.taken(),
            "processors did not catch up within {KAFKA_DRAIN:?}; the rest stays in Kafka"
        );
    }
    let load = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
    let changes = load(&stats.alerts_raised)
        + load(&stats.alerts_acknowledged)
        + load(&stats.alerts_resolved);
    // The serve side reads readings from its start, so it sees all the simulator sent, less
    // what the processors rejected; alert changes it reads from the start of the topic.
    let rejected = stats
        .dead_letters_total()
        .saturating_sub(baseline.dead_letters);
    let readings = sent.saturating_sub(rejected);
    if !serve.caught_up(readings, changes, KAFKA_DRAIN).await {
        tracing::warn!("the serve side did not see every reading and alert within {KAFKA_DRAIN:?}");
    }
}

/// What the processors had done when the simulator started.
#[derive(Debug, Clone, Copy)]
struct Baseline {
    /// Messages taken.
    taken: u64,
    /// Messages rejected.
    dead_letters: u64,
}
