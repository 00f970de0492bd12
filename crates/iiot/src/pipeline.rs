//! `iiot run` on the embedded bus: simulator → bus → processors → alerts, in one process.
//!
//! [`Embedded`] is the bus with a running processor; [`run`] adds the simulator, alert-rule hot
//! reload and the periodic status line, and shuts down in order: stop the simulator, close the
//! input topic, let the processor drain it and publish its last outputs, then close the bus.

use std::sync::atomic::Ordering;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use anyhow::Context;
use iiot_transport::Publisher;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::alerts::{AckError, RuleSet};
use crate::backend::Backend;
pub use crate::backend::{SERVE_GROUP, bus_for};
use crate::config::{Config, Sources};
use crate::http::AppState;
use crate::hub::Hub;
use crate::processor::run::{Command, ProcessorIo};
use crate::processor::{DeviceState, Processor, ProcessorConfig, ProcessorStats};
use crate::serve::{SharedStore, feed_store};
use crate::server;
use crate::simulator::{self, Fleet, Pace, RunOptions, SimStats, SimulatorConfig};
use crate::store::{Store, StoreConfig};

/// Capacity of the command queue into the processor (acknowledgements).
pub const COMMAND_QUEUE: usize = 256;

/// Processors consuming `device-data` as one consumer group whose members split the
/// partitions, so each device's state lives in exactly one processor — on the embedded bus
/// (`iiot run`) or on Kafka (`iiot process`, `iiot run --kafka-brokers`).
pub struct Embedded {
    /// Where the processors read and write.
    pub backend: Backend,
    /// Processor counters, shared by all workers.
    pub stats: Arc<ProcessorStats>,
    /// Send new rules here (hot reload); every worker applies them.
    pub rules: watch::Sender<Arc<RuleSet>>,
    /// Requests to the processors (acknowledge); routed to the worker that owns the alert.
    pub commands: mpsc::Sender<Command>,
    /// Cancelled when a processor task ends — normally only after [`Embedded::finish`]; any
    /// earlier means it failed, and producers should stop.
    pub processor_done: CancellationToken,
    input_topic: String,
    /// Stops the workers on Kafka, where the input never ends by itself.
    stop: CancellationToken,
    workers: Vec<JoinHandle<Result<Processor, iiot_transport::TransportError>>>,
}

/// The processors of a finished [`Embedded`].
pub struct Processors {
    workers: Vec<Processor>,
    stats: Arc<ProcessorStats>,
}

impl Processors {
    /// The shared counters.
    pub fn stats(&self) -> &Arc<ProcessorStats> {
        &self.stats
    }

    /// State of one device, from whichever worker owned it.
    pub fn device(&self, device_id: &str) -> Option<&DeviceState> {
        self.workers.iter().find_map(|p| p.device(device_id))
    }

    /// The workers.
    pub fn workers(&self) -> &[Processor] {
        &self.workers
    }
}

/// How many processor workers `config` asks for: `PROCESSOR_WORKERS`, or one per CPU core.
pub fn worker_count(config: &Config) -> usize {
    match config.processor.workers {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    }
}

/// The processor settings derived from `config`.
pub fn processor_config(config: &Config) -> ProcessorConfig {
    ProcessorConfig {
        limits: iiot_model::Limits {
            max_message_bytes: config.processor.max_message_bytes,
            max_future_ms: config.processor.max_future_skew.as_millis() as i64,
            ..iiot_model::Limits::default()
        },
        default_interval_ms: config.simulator.send_interval.as_millis() as i64,
        max_devices: config.processor.max_devices,
    }
}

impl Embedded {
    /// Starts the processors on `backend` (a [`Bus`] converts). On the bus, subscribe other
    /// consumers (tests, the server) before publishing.
    pub async fn start(config: &Config, backend: impl Into<Backend>) -> anyhow::Result<Embedded> {
        let (tx, rx) = mpsc::channel(COMMAND_QUEUE);
        Embedded::start_with(
            config,
            backend.into(),
            Arc::default(),
            (tx, rx),
            Arc::default(),
        )
        .await
    }

    /// [`Embedded::start`] with counters and a command queue made beforehand (the HTTP server
    /// of a Kafka role starts before the processors, which wait for the topics), and the
    /// alerts left open by earlier processors ([`crate::recovery`]).
    pub async fn start_with(
        config: &Config,
        backend: Backend,
        stats: Arc<ProcessorStats>,
        (commands_tx, commands_rx): (mpsc::Sender<Command>, mpsc::Receiver<Command>),
        recovered: Arc<crate::processor::RecoveredAlerts>,
    ) -> anyhow::Result<Embedded> {
        let k = &config.kafka;
        let subscribers = backend
            .group_members(&k.topic_device_data, &k.group_id, worker_count(config))
            .await
            .context("subscribing the processors")?;
        let rules = Arc::new(config.rules.clone());
        let (rules_tx, rules_rx) = watch::channel(rules.clone());
        let processor_done = CancellationToken::new();
        let stop = CancellationToken::new();
        let mut workers = Vec::new();
        let mut worker_commands = Vec::new();
        for subscriber in subscribers {
            let mut processor =
                Processor::new(processor_config(config), rules.clone(), stats.clone());
            if !recovered.is_empty() {
                processor.set_recovered(recovered.as_ref().clone());
            }
            let (tx, rx) = mpsc::channel(COMMAND_QUEUE);
            worker_commands.push(tx);
            let io = ProcessorIo {
                subscriber,
                publisher: backend.publisher(),
                alerts_topic: k.topic_alerts.clone(),
                dlq_topic: k.topic_dlq.clone(),
                transport: Some(backend.transport()),
            };
            let (rules_rx, done, stop) = (rules_rx.clone(), processor_done.clone(), stop.clone());
            // On the bus a worker ends when its input topic is closed and drained (see
            // `finish`), so that nothing queued is lost on shutdown; on Kafka, when stopped
            // (what it has not committed is read again by the group).
            workers.push(tokio::spawn(async move {
                // Cancels on every way out of the task, a panic included.
                let _done = done.drop_guard();
                let result = crate::processor::run::run(processor, io, rules_rx, rx, stop).await;
                if let Err(e) = &result {
                    tracing::error!(error = %e, "processor stopped");
                }
                result
            }));
        }
        tokio::spawn(route_commands(commands_rx, worker_commands));
        Ok(Embedded {
            backend,
            stats,
            rules: rules_tx,
            commands: commands_tx,
            processor_done,
            input_topic: k.topic_device_data.clone(),
            stop,
            workers,
        })
    }

    /// The processors of a role (`iiot run`, `iiot process`), once the topics exist: on Kafka
    /// it first reads back the alerts left open by earlier processors ([`crate::recovery`]),
    /// and afterwards relays acknowledgements from `serve` instances ([`crate::ack_relay`])
    /// until `stop`.
    pub async fn start_role(
        config: &Config,
        backend: &Backend,
        stats: Arc<ProcessorStats>,
        commands: (mpsc::Sender<Command>, mpsc::Receiver<Command>),
        stop: &CancellationToken,
    ) -> anyhow::Result<Embedded> {
        let k = &config.kafka;
        // Alerts the previous processors left open: kept, not raised a second time.
        let recovered = crate::recovery::open_alerts(backend, &k.topic_alerts).await?;
        let embedded = Embedded::start_with(
            config,
            backend.clone(),
            stats,
            commands,
            Arc::new(recovered),
        )
        .await?;
        if let Backend::Kafka(_) = backend {
            let requests = backend.subscribe_everything(&k.topic_commands).await?;
            tokio::spawn(crate::ack_relay::listen(
                requests,
                embedded.commands.clone(),
                stop.child_token(),
            ));
        }
        Ok(embedded)
    }

    /// A publisher onto the backend.
    pub fn publisher(&self) -> Arc<dyn Publisher> {
        self.backend.publisher()
    }

    /// Waits until the processors have taken `expected` messages (valid, late or dead-lettered)
    /// or `timeout` passes; `true` if they did. On Kafka this is how a run that produced
    /// `expected` readings lets the processors catch up before [`Embedded::finish`].
    pub async fn wait_for(&self, expected: u64, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if self.stats.taken() >= expected {
                return true;
            }
            if tokio::time::Instant::now() >= deadline || self.processor_done.is_cancelled() {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stops the processors and returns them. On the bus: closes the input topic, waits until
    /// every processor has drained it, then closes the bus. On Kafka: stops them between
    /// batches; offsets of everything processed are committed as the consumers close.
    pub async fn finish(self) -> anyhow::Result<Processors> {
        match &self.backend {
            Backend::Bus(bus) => bus.close_topic(&self.input_topic),
            Backend::Kafka(_) => self.stop.cancel(),
        }
        let mut workers = Vec::with_capacity(self.workers.len());
        for handle in self.workers {
            workers.push(
                handle
                    .await
                    .context("processor task panicked")?
                    .context("processor stopped")?,
            );
        }
        if let Backend::Bus(bus) = &self.backend {
            bus.close();
        }
        Ok(Processors {
            workers,
            stats: self.stats,
        })
    }
}

/// How long an acknowledgement waits for the workers (one busy publishing to a full queue must
/// not hold up the others' answers forever).
const ACK_TIMEOUT: Duration = Duration::from_secs(5);

/// Sends each acknowledgement to every worker at once (only the one holding the alert can say
/// yes) and replies with that answer, or the most telling refusal.
async fn route_commands(
    mut commands: mpsc::Receiver<Command>,
    workers: Vec<mpsc::Sender<Command>>,
) {
    while let Some(command) = commands.recv().await {
        match command {
            Command::Acknowledge { alert_id, reply } => {
                let deadline = tokio::time::Instant::now() + ACK_TIMEOUT;
                let mut pending = Vec::with_capacity(workers.len());
                for worker in &workers {
                    let (tx, rx) = oneshot::channel();
                    let ask = Command::Acknowledge {
                        alert_id: alert_id.clone(),
                        reply: tx,
                    };
                    // A worker that has stopped, or cannot take the question in time, cannot
                    // be holding the alert for us.
                    if let Ok(Ok(())) = tokio::time::timeout_at(deadline, worker.send(ask)).await {
                        pending.push(rx);
                    }
                }
                let mut answer = Err(AckError::Unknown(alert_id));
                for rx in pending {
                    match tokio::time::timeout_at(deadline, rx).await {
                        Ok(Ok(Ok(alert))) => {
                            answer = Ok(alert);
                            break;
                        }
                        Ok(Ok(Err(e @ AckError::AlreadyAcknowledged(_)))) => answer = Err(e),
                        _ => {}
                    }
                }
                let _ = reply.send(answer);
            }
        }
    }
}

/// The store's bounds from `config`: as many devices as a processor worker tracks, sized for the
/// configured send interval.
pub fn store_config(config: &Config) -> StoreConfig {
    StoreConfig {
        max_devices: config.processor.max_devices,
        default_interval_ms: config.simulator.send_interval.as_millis() as i64,
        ..StoreConfig::default()
    }
}

/// The simulator settings of `config`, with a seed (a random one when none is configured).
pub fn simulator_config(config: &Config) -> SimulatorConfig {
    let s = &config.simulator;
    SimulatorConfig {
        devices: s.device_count,
        interval: s.send_interval,
        seed: s.seed.unwrap_or_else(rand::random),
        variance: s.data_variance,
        fault_rate: s.fault_rate,
        malformed_rate: s.malformed_rate,
    }
}

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

/// Runs everything until `duration` elapses or `shutdown` is cancelled, then shuts down
/// gracefully. `sources` is where the config came from, for alert-rule hot reload.
///
/// On the embedded bus (no `KAFKA_BROKERS`) everything is in this process. With
/// `KAFKA_BROKERS` the same roles run here over Kafka: the HTTP server starts first (`/ready`
/// answers 503 until a broker does), then the topics are created if missing, then the
/// processors and the serve side subscribe, and only then does the simulator start.
pub async fn run(
    config: Config,
    sources: Sources,
    duration: Option<Duration>,
    shutdown: CancellationToken,
) -> anyhow::Result<RunReport> {
    let started = Instant::now();
    let backend = Backend::from_config(&config)?;
    let stats: Arc<ProcessorStats> = Arc::default();
    let commands = mpsc::channel(COMMAND_QUEUE);
    let store: SharedStore = Arc::new(RwLock::new(Store::new(store_config(&config))));
    let hub = Hub::new(server::hub_config(&config));
    let sim_stats = Arc::new(SimStats::default());
    let state = AppState {
        store: store.clone(),
        commands: commands.0.clone(),
        config: Arc::new(config.clone()),
        stats: stats.clone(),
        transport: backend.transport(),
        started: Instant::now(),
        hub: Some(hub.clone()),
        simulator: Some(sim_stats.clone()),
    };
    let server = server::start(&config, state, hub.clone()).await?;
    if !backend.prepare_topics(&config, &shutdown).await {
        server.stop().await;
        anyhow::bail!("stopped before the Kafka topics could be prepared (no broker answered)");
    }
    let embedded = Embedded::start_role(&config, &backend, stats, commands, &shutdown).await?;

    // The serve side, as `iiot serve` runs it: subscriptions that see every reading and alert
    // feed the store and the WebSocket hub; the HTTP API answers from the store.
    let k = &config.kafka;
    let feeder_stop = CancellationToken::new();
    let readings = backend.subscribe_everything(&k.topic_device_data).await?;
    // Alerts from the start of the topic: open alerts raised before this start are shown too.
    let alerts = backend.replay_everything(&k.topic_alerts).await?;
    let feeder = tokio::spawn(feed_store(
        store,
        Some(hub),
        readings,
        alerts,
        processor_config(&config).limits,
        feeder_stop.clone(),
    ));

    let watcher =
        crate::config::watch_rules(sources, embedded.rules.clone(), shutdown.child_token());

    let sim_config = simulator_config(&config);
    tracing::info!(
        devices = sim_config.devices,
        interval = %crate::duration::format_duration(sim_config.interval),
        seed = sim_config.seed,
        backend = %backend.describe(&config),
        "starting the pipeline (simulator → processors → serve)"
    );
    let status = spawn_status(
        config.processor.status_interval,
        Some(sim_stats.clone()),
        embedded.stats.clone(),
        StatusInput {
            backend: backend.clone(),
            topic: config.kafka.topic_device_data.clone(),
            group: config.kafka.group_id.clone(),
        },
        shutdown.child_token(),
    );
    let options = RunOptions {
        topic: config.kafka.topic_device_data.clone(),
        pace: Pace::RealTime,
        duration,
        progress: false,
    };
    // The simulator stops on shutdown, and also if the processor dies (fail fast: `finish`
    // below then reports the processor's error).
    let sim_stop = shutdown.child_token();
    let stop_on_failure = tokio::spawn({
        let (done, sim_stop) = (embedded.processor_done.clone(), sim_stop.clone());
        async move {
            tokio::select! {
                _ = done.cancelled() => sim_stop.cancel(),
                _ = sim_stop.cancelled() => {}
            }
        }
    });
    // What the processors took before the simulator started (a backlog left in Kafka).
    let baseline = embedded.stats.taken();
    let simulated = simulator::run(
        Fleet::new(&sim_config),
        embedded.publisher(),
        options,
        sim_stop.clone(),
        sim_stats.clone(),
    )
    .await;
    sim_stop.cancel();
    let _ = stop_on_failure.await;
    if let Err(e) = simulated {
        tracing::warn!(error = %e, "simulator stopped early");
    }
    tracing::info!("simulator stopped; draining the processor");
    if let Backend::Kafka(_) = &backend {
        // Kafka's log does not end: wait (bounded) until the processors have taken what was
        // sent, so a timed run reports complete figures. What is left is read again by the
        // group next time.
        let sent = sim_stats.sent.load(Ordering::Relaxed);
        if !embedded.wait_for(baseline + sent, KAFKA_DRAIN).await {
            tracing::warn!(
                sent,
                taken = embedded.stats.taken(),
                "processors did not catch up within {KAFKA_DRAIN:?}; the rest stays in Kafka"
            );
        }
        // Give the serve side a moment to see the last alerts.
        tokio::time::sleep(Duration::from_millis(500)).await;
        feeder_stop.cancel();
    }
    let processor = embedded.finish().await?;
    match feeder.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, "store feeder stopped"),
        Err(e) => tracing::warn!(error = %e, "store feeder task failed"),
    }
    server.stop().await;
    shutdown.cancel();
    if let Some(w) = watcher {
        let _ = w.await;
    }
    let _ = status.await;
    let stats = processor.stats();
    let report = RunReport {
        sent: sim_stats.sent.load(Ordering::Relaxed),
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
    Ok(report)
}

/// How long a Kafka run waits at shutdown for the processors to catch up with the simulator.
const KAFKA_DRAIN: Duration = Duration::from_secs(30);

/// What the status line reads from the backend.
pub struct StatusInput {
    /// The backend (lag, backpressure).
    pub backend: Backend,
    /// The processors' input topic.
    pub topic: String,
    /// Their consumer group.
    pub group: String,
}

/// Logs one status line every `every` (nothing when zero) until `stop`: rates and latency over
/// the last interval, totals since start.
pub fn spawn_status(
    every: Duration,
    sim: Option<Arc<SimStats>>,
    stats: Arc<ProcessorStats>,
    input: StatusInput,
    stop: CancellationToken,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        if every.is_zero() {
            return;
        }
        let mut tick = tokio::time::interval(every);
        tick.tick().await;
        let mut last = (Instant::now(), 0u64);
        let mut seen = stats.latency_snapshot();
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            let processed = stats.processed.load(Ordering::Relaxed);
            let rate = (processed - last.1) as f64 / last.0.elapsed().as_secs_f64().max(1e-9);
            last = (Instant::now(), processed);
            let now = stats.latency_snapshot();
            let mut window = now.clone();
            // `now` only ever grows from `seen`, so the subtraction cannot underflow.
            let _ = window.subtract(&seen);
            seen = now;
            let (p50, p99) = (
                (window.value_at_quantile(0.5) as f64 / 1000.0).round(),
                (window.value_at_quantile(0.99) as f64 / 1000.0).round(),
            );
            tracing::info!(
                "status: {rate:.0} msg/s, sent {}, processed {processed}, dead letters {}, seq gaps {}, \
                 alerts open {} (raised {}), devices {}, event→processed p50 {p50} ms p99 {p99} ms, \
                 lag {} waits {}",
                sim.as_ref().map_or(0, |s| s.sent.load(Ordering::Relaxed)),
                stats.dead_letters_total(),
                stats.seq_gaps.load(Ordering::Relaxed),
                stats.alerts_open.load(Ordering::Relaxed),
                stats.alerts_raised.load(Ordering::Relaxed),
                stats.devices.load(Ordering::Relaxed),
                input.backend.lag(&input.topic, &input.group),
                input.backend.transport().metrics().backpressure_waits,
            );
        }
    })
}
