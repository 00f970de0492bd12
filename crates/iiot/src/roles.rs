//! The roles that run on their own over Kafka, one per process, so each can be scaled apart:
//!
//! - [`process`] (`iiot process`): a member of the consumer group `KAFKA_GROUP_ID` — validation,
//!   dead letters, alerts. Several instances share the partitions; a rebalance moves devices
//!   between them.
//! - [`serve`] (`iiot serve`): reads every partition of `device-data` and `alerts` (each
//!   instance sees everything, so several can sit behind a load balancer) into the live store
//!   and the WebSocket hub; the HTTP API and the dashboard answer from there.
//! - [`simulate`] (`iiot simulate --output kafka`): the device fleet publishing to Kafka.
//!
//! Every role serves `/health`, `/ready` (503 while no broker answers) and `/metrics` on
//! `HTTP_PORT`, starts without a reachable broker, and resumes when one answers.

use std::sync::atomic::Ordering;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::backend::Backend;
use crate::config::{Config, Sources};
use crate::http::AppState;
use crate::hub::Hub;
use crate::pipeline::{
    COMMAND_QUEUE, Embedded, StatusInput, processor_config, simulator_config, spawn_status,
    store_config,
};
use crate::processor::ProcessorStats;
use crate::processor::run::Command;
use crate::serve::{SharedStore, feed_store};
use crate::server;
use crate::simulator::{self, Fleet, Pace, RunOptions, SimStats};
use crate::store::{Store, StoreConfig};

/// A store for the roles that keep none (their `/api/stats` reads it): holds nothing.
fn empty_store() -> SharedStore {
    Arc::new(RwLock::new(Store::new(StoreConfig {
        max_devices: 1,
        ..StoreConfig::default()
    })))
}

/// The operations endpoint of `process` and `simulate`. A taken port is not fatal for these
/// roles (several often run on one machine next to a `serve` on 8080): they run on without
/// `/health` and `/metrics`, and say so.
async fn ops_server(config: &Config, state: AppState) -> Option<server::Server> {
    match server::start_ops(config, state).await {
        Ok(server) => Some(server),
        Err(e) => {
            tracing::warn!(
                "no /health, /ready or /metrics: {e:#}; set HTTP_PORT (--http-port) to a free port"
            );
            None
        }
    }
}

async fn stop(server: Option<server::Server>) {
    if let Some(server) = server {
        server.stop().await;
    }
}

/// `iiot process`: runs the consumer-group processors until `shutdown`, then stops them
/// between batches (offsets of everything processed are committed as they close).
pub async fn process(
    config: Config,
    sources: Sources,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let backend = Backend::kafka(&config)?;
    let stats: Arc<ProcessorStats> = Arc::default();
    let commands = mpsc::channel(COMMAND_QUEUE);
    let state = AppState {
        store: empty_store(),
        commands: commands.0.clone(),
        config: Arc::new(config.clone()),
        stats: stats.clone(),
        transport: backend.transport(),
        started: Instant::now(),
        hub: None,
        simulator: None,
    };
    let server = ops_server(&config, state).await;
    if !backend.prepare_topics(&config, &shutdown).await {
        stop(server).await;
        return Ok(());
    }
    let embedded = Embedded::start_role(&config, &backend, stats, commands, &shutdown).await?;
    tracing::info!(
        group = %config.kafka.group_id,
        topic = %config.kafka.topic_device_data,
        members = crate::pipeline::worker_count(&config),
        backend = %backend.describe(&config),
        "processing"
    );
    let watcher =
        crate::config::watch_rules(sources, embedded.rules.clone(), shutdown.child_token());
    let status = spawn_status(
        config.processor.status_interval,
        None,
        embedded.stats.clone(),
        StatusInput {
            backend,
            topic: config.kafka.topic_device_data.clone(),
            group: config.kafka.group_id.clone(),
        },
        shutdown.child_token(),
    );
    let failed = tokio::select! {
        _ = shutdown.cancelled() => false,
        _ = embedded.processor_done.cancelled() => true,
    };
    let finished = embedded.finish().await;
    stop(server).await;
    shutdown.cancel();
    if let Some(w) = watcher {
        let _ = w.await;
    }
    let _ = status.await;
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

/// `iiot serve`: the live store, HTTP API, dashboard and WebSocket hub, fed from Kafka, until
/// `shutdown`. Acknowledgements travel to the processors over the commands topic
/// ([`crate::ack_relay`]).
pub async fn serve(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    let backend = Backend::kafka(&config)?;
    let store: SharedStore = Arc::new(RwLock::new(Store::new(store_config(&config))));
    let hub = Hub::new(server::hub_config(&config));
    let (commands, requests) = mpsc::channel::<Command>(COMMAND_QUEUE);
    tokio::spawn(crate::ack_relay::relay(
        requests,
        store.clone(),
        backend.publisher(),
        config.kafka.topic_commands.clone(),
    ));
    let state = AppState {
        store: store.clone(),
        commands,
        config: Arc::new(config.clone()),
        stats: Arc::default(),
        transport: backend.transport(),
        started: Instant::now(),
        hub: Some(hub.clone()),
        simulator: None,
    };
    let server = server::start(&config, state, hub.clone()).await?;
    if !backend.prepare_topics(&config, &shutdown).await {
        server.stop().await;
        return Ok(());
    }
    let k = &config.kafka;
    let readings = backend.subscribe_everything(&k.topic_device_data).await?;
    // Alerts from the start of the topic: open alerts raised before this start are shown too.
    let alerts = backend.replay_everything(&k.topic_alerts).await?;
    tracing::info!(backend = %backend.describe(&config), "serving live data");
    let feeder = tokio::spawn(feed_store(
        store,
        Some(hub),
        readings,
        alerts,
        processor_config(&config).limits,
        shutdown.clone(),
    ));
    let result = feeder.await;
    server.stop().await;
    match result {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(anyhow::Error::from(e).context("reading from Kafka")),
        Err(e) => Err(anyhow::Error::from(e).context("store feeder task failed")),
    }
}

/// What a finished [`simulate`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SimulateReport {
    /// Messages the broker acknowledged.
    pub sent: u64,
    /// Messages that failed.
    pub errors: u64,
}

/// `iiot simulate --output kafka`: publishes the fleet's readings to Kafka until `duration`
/// elapses or `shutdown`, then waits (bounded) for every delivery.
pub async fn simulate(
    config: Config,
    duration: Option<Duration>,
    progress: bool,
    shutdown: CancellationToken,
) -> anyhow::Result<SimulateReport> {
    let backend = Backend::kafka(&config)?;
    let sim_stats = Arc::new(SimStats::default());
    let state = AppState {
        store: empty_store(),
        commands: mpsc::channel(1).0,
        config: Arc::new(config.clone()),
        stats: Arc::default(),
        transport: backend.transport(),
        started: Instant::now(),
        hub: None,
        simulator: Some(sim_stats.clone()),
    };
    let server = ops_server(&config, state).await;
    if !backend.prepare_topics(&config, &shutdown).await {
        stop(server).await;
        return Ok(SimulateReport { sent: 0, errors: 0 });
    }
    let sim_config = simulator_config(&config);
    tracing::info!(
        devices = sim_config.devices,
        interval = %crate::duration::format_duration(sim_config.interval),
        seed = sim_config.seed,
        topic = %config.kafka.topic_device_data,
        backend = %backend.describe(&config),
        "simulating"
    );
    let options = RunOptions {
        topic: config.kafka.topic_device_data.clone(),
        pace: Pace::RealTime,
        duration,
        progress,
    };
    let publisher = backend.publisher();
    let result = simulator::run(
        Fleet::new(&sim_config),
        publisher.clone(),
        options,
        shutdown.clone(),
        sim_stats.clone(),
    )
    .await;
    if let Err(e) = publisher.flush().await {
        tracing::warn!(error = %e, "not every reading was delivered before stopping");
    }
    stop(server).await;
    result?;
    Ok(SimulateReport {
        sent: sim_stats.sent.load(Ordering::Relaxed),
        errors: sim_stats.errors.load(Ordering::Relaxed),
    })
}
