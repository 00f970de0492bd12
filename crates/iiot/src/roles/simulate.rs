//! The simulated fleet as a role: [`start`] publishes it through a backend's publisher (or any
//! publisher), [`main`] is `iiot simulate` with its three outputs — Kafka, JSON lines on
//! stdout, or the embedded bus drained by a counting consumer.

use std::sync::Arc;
use std::time::Duration;

use iiot_transport::{Publisher, Start, TransportError};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::ops_endpoint;
use super::process::stop_server;
use crate::backend::{self, Backend};
use crate::config::Config;
use crate::http::OpsState;
use crate::simulator::{Pace, SimStats, SimulatorConfig, StdoutSink};
use crate::sources::simulator::SimulatorSource;
use crate::sources::{Source, SourceReport};

/// How the fleet is published.
#[derive(Debug, Clone, Copy)]
pub struct SimulateOptions {
    /// Real time or full speed.
    pub pace: Pace,
    /// How long; `None`: until stopped.
    pub duration: Option<Duration>,
    /// A live progress line on a terminal.
    pub progress: bool,
}

/// A running simulator.
pub struct Simulate {
    /// Its counters.
    pub stats: Arc<SimStats>,
    stop: CancellationToken,
    task: JoinHandle<Result<SourceReport, TransportError>>,
}

/// Starts publishing the fleet of `config` through `publisher` onto `device-data`.
pub fn start(
    config: &Config,
    publisher: Arc<dyn Publisher>,
    options: SimulateOptions,
    stats: Arc<SimStats>,
    shutdown: &CancellationToken,
) -> Simulate {
    let source = source(config, options, stats.clone());
    tracing::debug!(source = source.name(), "source starting");
    let stop = shutdown.child_token();
    let task = tokio::spawn(source.run(
        publisher,
        config.kafka.topic_device_data.clone(),
        stop.clone(),
    ));
    Simulate { stats, stop, task }
}

/// The fleet of `config` as a source, publishing at `options`, counting into `stats`.
pub fn source(config: &Config, options: SimulateOptions, stats: Arc<SimStats>) -> Box<dyn Source> {
    let sim = SimulatorConfig::from_config(config);
    tracing::info!(
        devices = sim.devices,
        interval = %crate::duration::format_duration(sim.interval),
        seed = sim.seed,
        topic = %config.kafka.topic_device_data,
        "simulating"
    );
    Box::new(SimulatorSource {
        config: sim,
        pace: options.pace,
        duration: options.duration,
        progress: options.progress,
        stats,
    })
}

impl Simulate {
    /// Cancelled once the simulator is asked to stop.
    pub fn stopping(&self) -> CancellationToken {
        self.stop.clone()
    }

    /// Waits until the run ends (its duration, or [`Simulate::stop`]) and its deliveries are
    /// awaited.
    pub async fn wait(self) -> Result<SourceReport, TransportError> {
        match self.task.await {
            Ok(report) => report,
            Err(e) => Err(TransportError::Broker(format!(
                "simulator task failed: {e}"
            ))),
        }
    }
}

/// Where `iiot simulate` publishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    /// JSON lines on stdout.
    Stdout,
    /// Kafka.
    Kafka,
    /// The embedded bus, drained by a counting consumer.
    Bus,
    /// An MQTT broker: each device on its own topic.
    Mqtt,
    /// An MQTT broker, each device over its own connection (broker load tests).
    MqttPerDevice,
}

/// `iiot simulate`: publishes until `options.duration` or `shutdown`, then waits (bounded by the
/// backend's delivery timeout) for every delivery.
pub async fn main(
    config: Config,
    output: Output,
    options: SimulateOptions,
    shutdown: CancellationToken,
) -> anyhow::Result<SourceReport> {
    let stats = Arc::new(SimStats::default());
    let report = match output {
        Output::Stdout => {
            start(
                &config,
                Arc::new(StdoutSink::new()),
                options,
                stats,
                &shutdown,
            )
            .wait()
            .await
        }
        Output::Kafka => to_kafka(&config, options, stats, &shutdown).await?,
        Output::Bus => to_bus(&config, options, stats, &shutdown).await?,
        Output::Mqtt => to_mqtt(&config, options, stats, &shutdown).await?,
        Output::MqttPerDevice => to_mqtt_fleet(&config, options, stats, &shutdown).await?,
    };
    match report {
        Ok(report) => Ok(report),
        // A closed stdout (e.g. `| head`) is a normal way for a pipe to end.
        Err(TransportError::Closed) => Ok(SourceReport::default()),
        Err(e) => Err(e.into()),
    }
}

async fn to_kafka(
    config: &Config,
    options: SimulateOptions,
    stats: Arc<SimStats>,
    shutdown: &CancellationToken,
) -> anyhow::Result<Result<SourceReport, TransportError>> {
    let backend = backend::kafka_only(config)?;
    let mut ops = OpsState::new(config, Arc::default(), backend.clone());
    ops.simulator = Some(stats.clone());
    let server = ops_endpoint(config, ops).await;
    if !backend::prepare_topics_besides_state(&backend, config, shutdown).await {
        stop_server(server).await;
        return Ok(Ok(SourceReport::default()));
    }
    tracing::info!(backend = %backend.describe(), "publishing to Kafka");
    let report = start(config, backend.publisher(), options, stats, shutdown)
        .wait()
        .await;
    stop_server(server).await;
    Ok(report)
}

async fn to_mqtt(
    config: &Config,
    options: SimulateOptions,
    stats: Arc<SimStats>,
    shutdown: &CancellationToken,
) -> anyhow::Result<Result<SourceReport, TransportError>> {
    if config.sparkplug.enabled() {
        return to_sparkplug(config, options, stats, shutdown).await;
    }
    let Some(publisher) = crate::mqtt::publisher::MqttPublisher::connect(&config.mqtt) else {
        anyhow::bail!("--output mqtt needs MQTT_URL (--mqtt-url mqtt://host:port)");
    };
    let publisher = Arc::new(publisher);
    tracing::info!(broker = ?config.mqtt.url, "publishing to MQTT (iiot/devices/<id>/telemetry, QoS 1)");
    let report = start(config, publisher.clone(), options, stats, shutdown)
        .wait()
        .await;
    if let Some(publisher) = Arc::into_inner(publisher) {
        let closed = tokio::time::timeout(super::STOP_LIMIT, publisher.close()).await;
        if closed.is_err() {
            tracing::warn!(
                "the MQTT connection did not close within {:?}",
                super::STOP_LIMIT
            );
        }
    }
    Ok(report)
}

async fn to_mqtt_fleet(
    config: &Config,
    options: SimulateOptions,
    stats: Arc<SimStats>,
    shutdown: &CancellationToken,
) -> anyhow::Result<Result<SourceReport, TransportError>> {
    let devices = config.simulator.device_count;
    crate::mqtt::fleet::check_fd_limit(devices)?;
    let Some(fleet) = crate::mqtt::fleet::MqttFleet::new(&config.mqtt, devices) else {
        anyhow::bail!("--output mqtt needs MQTT_URL (--mqtt-url mqtt://host:port)");
    };
    let fleet = Arc::new(fleet);
    tracing::info!(broker = ?config.mqtt.url, devices, "publishing to MQTT, one connection per device");
    let report = start(config, fleet.clone(), options, stats, shutdown)
        .wait()
        .await;
    tracing::info!(connections = fleet.connections(), "MQTT fleet done");
    if let Some(fleet) = Arc::into_inner(fleet) {
        let closed = tokio::time::timeout(super::STOP_LIMIT, fleet.close()).await;
        if closed.is_err() {
            tracing::warn!(
                "the MQTT connections did not close within {:?}",
                super::STOP_LIMIT
            );
        }
    }
    Ok(report)
}

/// `--output mqtt --mqtt-payload sparkplug`: the fleet as one Sparkplug B edge node.
async fn to_sparkplug(
    config: &Config,
    options: SimulateOptions,
    stats: Arc<SimStats>,
    shutdown: &CancellationToken,
) -> anyhow::Result<Result<SourceReport, TransportError>> {
    use crate::mqtt::sparkplug::edge::{GROUP, SparkplugEdge};
    let Some(edge) = SparkplugEdge::connect(&config.mqtt) else {
        anyhow::bail!("--output mqtt needs MQTT_URL (--mqtt-url mqtt://host:port)");
    };
    let edge = Arc::new(edge);
    tracing::info!(broker = ?config.mqtt.url, "publishing to MQTT as a Sparkplug B edge node (spBv1.0/{GROUP}/…)");
    let report = start(config, edge.clone(), options, stats, shutdown)
        .wait()
        .await;
    if let Some(edge) = Arc::into_inner(edge)
        && tokio::time::timeout(super::STOP_LIMIT, edge.close())
            .await
            .is_err()
    {
        tracing::warn!(
            "the MQTT connection did not close within {:?}",
            super::STOP_LIMIT
        );
    }
    Ok(report)
}

async fn to_bus(
    config: &Config,
    options: SimulateOptions,
    stats: Arc<SimStats>,
    shutdown: &CancellationToken,
) -> anyhow::Result<Result<SourceReport, TransportError>> {
    let backend: Backend = Arc::new(backend::bus_for(config));
    let mut drain = backend
        .subscribe_all(&config.kafka.topic_device_data, Start::End)
        .await?;
    let drained = tokio::spawn(async move {
        let mut batch = Vec::with_capacity(1024);
        let mut n = 0u64;
        while let Ok(k) = drain.recv_batch(&mut batch, 1024).await {
            if k == 0 {
                break;
            }
            n += k as u64;
            batch.clear();
        }
        n
    });
    let report = start(config, backend.publisher(), options, stats, shutdown)
        .wait()
        .await;
    backend.close();
    let received = drained.await.unwrap_or(0);
    tracing::info!(received, "bus drained");
    Ok(report)
}
