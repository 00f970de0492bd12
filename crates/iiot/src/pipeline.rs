//! `iiot run` on the embedded bus: simulator → bus → processors → alerts, in one process.
//!
//! [`Embedded`] is the bus with a running processor; [`run`] adds the simulator, alert-rule hot
//! reload and the periodic status line, and shuts down in order: stop the simulator, close the
//! input topic, let the processor drain it and publish its last outputs, then close the bus.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use anyhow::Context;
use iiot_transport::{Bus, BusConfig, Publisher, Transport};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::alerts::{AckError, RuleSet};
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
const COMMAND_QUEUE: usize = 256;

/// The embedded bus with processors consuming `device-data`: one consumer group whose members
/// split the partitions, so each device's state lives in exactly one processor.
pub struct Embedded {
    /// The bus; publish readings to [`Config::kafka`]'s `topic_device_data`.
    pub bus: Bus,
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

/// The bus sized from `config`: `device-data` 10 partitions, `alerts` 3, dead letters 1.
pub fn bus_for(config: &Config) -> Bus {
    let k = &config.kafka;
    let partitions = HashMap::from([
        (k.topic_device_data.clone(), 10),
        (k.topic_alerts.clone(), 3),
        (k.topic_dlq.clone(), 1),
    ]);
    Bus::new(BusConfig {
        default_partitions: 1,
        partitions,
        queue_capacity: config.processor.bus_queue_capacity,
    })
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
    /// Starts the processors on `bus`. Subscribe other consumers (tests, the server) to `bus`
    /// before publishing.
    pub async fn start(config: &Config, bus: Bus) -> anyhow::Result<Embedded> {
        let k = &config.kafka;
        let subscribers = bus
            .subscribe_group(&k.topic_device_data, &k.group_id, worker_count(config))
            .context("subscribing the processors")?;
        let stats = Arc::new(ProcessorStats::default());
        let rules = Arc::new(config.rules.clone());
        let (rules_tx, rules_rx) = watch::channel(rules.clone());
        let processor_done = CancellationToken::new();
        let mut workers = Vec::new();
        let mut worker_commands = Vec::new();
        for subscriber in subscribers {
            let processor = Processor::new(processor_config(config), rules.clone(), stats.clone());
            let (tx, rx) = mpsc::channel(COMMAND_QUEUE);
            worker_commands.push(tx);
            let io = ProcessorIo {
                subscriber,
                publisher: bus.publisher(),
                alerts_topic: k.topic_alerts.clone(),
                dlq_topic: k.topic_dlq.clone(),
            };
            let (rules_rx, done) = (rules_rx.clone(), processor_done.clone());
            // A worker ends when its input topic is closed and drained (see `finish`); it has
            // no stop signal of its own so that nothing queued is lost on shutdown.
            workers.push(tokio::spawn(async move {
                // Cancels on every way out of the task, a panic included.
                let _done = done.drop_guard();
                let result = crate::processor::run::run(
                    processor,
                    io,
                    rules_rx,
                    rx,
                    CancellationToken::new(),
                )
                .await;
                if let Err(e) = &result {
                    tracing::error!(error = %e, "processor stopped");
                }
                result
            }));
        }
        let (commands_tx, commands_rx) = mpsc::channel(COMMAND_QUEUE);
        tokio::spawn(route_commands(commands_rx, worker_commands));
        Ok(Embedded {
            bus,
            stats,
            rules: rules_tx,
            commands: commands_tx,
            processor_done,
            input_topic: k.topic_device_data.clone(),
            workers,
        })
    }

    /// A publisher onto the bus.
    pub fn publisher(&self) -> Arc<dyn Publisher> {
        self.bus.publisher()
    }

    /// Closes the input topic, waits until every processor has drained it, then closes the bus.
    pub async fn finish(self) -> anyhow::Result<Processors> {
        self.bus.close_topic(&self.input_topic);
        let mut workers = Vec::with_capacity(self.workers.len());
        for handle in self.workers {
            workers.push(
                handle
                    .await
                    .context("processor task panicked")?
                    .context("processor stopped")?,
            );
        }
        self.bus.close();
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

/// Consumer group of the serve side on the bus.
pub const SERVE_GROUP: &str = "iiot-serve";

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
pub async fn run(
    config: Config,
    sources: Sources,
    duration: Option<Duration>,
    shutdown: CancellationToken,
) -> anyhow::Result<RunReport> {
    let started = Instant::now();
    let embedded = Embedded::start(&config, bus_for(&config)).await?;

    // The serve side, as `iiot serve` runs it over Kafka: its own consumer groups feed the
    // store and the WebSocket hub; the HTTP API answers from the store.
    let store: SharedStore = Arc::new(RwLock::new(Store::new(store_config(&config))));
    let hub = Hub::new(server::hub_config(&config));
    let k = &config.kafka;
    let readings = embedded
        .bus
        .subscribe(&k.topic_device_data, SERVE_GROUP)
        .await?;
    let alerts = embedded.bus.subscribe(&k.topic_alerts, SERVE_GROUP).await?;
    let feeder = tokio::spawn(feed_store(
        store.clone(),
        Some(hub.clone()),
        readings,
        alerts,
        processor_config(&config).limits,
    ));
    let sim_stats = Arc::new(SimStats::default());
    let state = AppState {
        store,
        commands: embedded.commands.clone(),
        config: Arc::new(config.clone()),
        stats: embedded.stats.clone(),
        transport: Arc::new(embedded.bus.clone()),
        started: Instant::now(),
        hub: Some(hub.clone()),
        simulator: Some(sim_stats.clone()),
    };
    let server = server::start(&config, state, hub).await?;

    let watcher =
        crate::config::watch_rules(sources, embedded.rules.clone(), shutdown.child_token());

    let sim_config = simulator_config(&config);
    tracing::info!(
        devices = sim_config.devices,
        interval = %crate::duration::format_duration(sim_config.interval),
        seed = sim_config.seed,
        "starting embedded pipeline (simulator → bus → processor)"
    );
    let status = spawn_status(
        config.processor.status_interval,
        sim_stats.clone(),
        embedded.stats.clone(),
        StatusBus {
            bus: embedded.bus.clone(),
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

/// What the status line reads from the bus.
struct StatusBus {
    bus: Bus,
    topic: String,
    group: String,
}

/// Logs one status line every `every` (nothing when zero) until `stop`: rates and latency over
/// the last interval, totals since start.
fn spawn_status(
    every: Duration,
    sim: Arc<SimStats>,
    stats: Arc<ProcessorStats>,
    bus: StatusBus,
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
                 bus lag {} waits {}",
                sim.sent.load(Ordering::Relaxed),
                stats.dead_letters_total(),
                stats.seq_gaps.load(Ordering::Relaxed),
                stats.alerts_open.load(Ordering::Relaxed),
                stats.alerts_raised.load(Ordering::Relaxed),
                stats.devices.load(Ordering::Relaxed),
                bus.bus.lag(&bus.topic, &bus.group).unwrap_or(0),
                bus.bus.stats().backpressure_waits.load(Ordering::Relaxed),
            );
        }
    })
}
