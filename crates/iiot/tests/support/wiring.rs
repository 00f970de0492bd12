//! Every place the tests build the library's own objects. The wiring of `AppState`, the
//! embedded pipeline, the serve side and the server changes here, not in each test file.

use std::sync::{Arc, RwLock};
use std::time::Instant;

use axum::serve::ListenerExt;
use iiot::config::Config;
use iiot::http::AppState;
use iiot::hub::{Hub, HubConfig};
use iiot::pipeline::Embedded;
use iiot::processor::run::{Command, ProcessorIo};
use iiot::processor::{Processor, ProcessorStats};
use iiot::serve::SharedStore;
use iiot::server::Server;
use iiot::simulator::SimStats;
use iiot::store::{Store, StoreConfig};
use iiot_model::Limits;
use iiot_transport::{Bus, Publisher, Subscriber, Transport, TransportError};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// The embedded bus as `iiot run` sets it up for `config` (its topics and partitions).
pub fn bus(config: &Config) -> Bus {
    iiot::pipeline::bus_for(config)
}

/// The embedded processors reading `bus`, as `iiot run` starts them.
pub async fn start_pipeline(config: &Config, bus: Bus) -> Embedded {
    Embedded::start(config, bus)
        .await
        .expect("the embedded processors start")
}

/// [`bus`] and [`start_pipeline`] on it, with a subscription (group `group`) to the alerts
/// topic taken before the processors start.
pub async fn start_pipeline_watching_alerts(
    config: &Config,
    group: &str,
) -> (Bus, Box<dyn Subscriber>, Embedded) {
    let bus = bus(config);
    let alerts = bus
        .subscribe(&config.kafka.topic_alerts, group)
        .await
        .expect("subscribe");
    let embedded = start_pipeline(config, bus.clone()).await;
    (bus, alerts, embedded)
}

/// What the HTTP API's state is made of. [`StateParts::new`] gives the defaults of a bare
/// API (default config, an empty store, fresh counters, no hub, no simulator); tests replace
/// the parts they care about.
pub struct StateParts {
    pub config: Config,
    pub store: SharedStore,
    pub commands: mpsc::Sender<Command>,
    pub stats: Arc<ProcessorStats>,
    pub transport: Arc<dyn Transport>,
    pub hub: Option<Arc<Hub>>,
    pub simulator: Option<Arc<SimStats>>,
}

impl StateParts {
    pub fn new(transport: Arc<dyn Transport>, commands: mpsc::Sender<Command>) -> StateParts {
        StateParts {
            config: Config::default(),
            store: Arc::new(RwLock::new(Store::new(StoreConfig::default()))),
            commands,
            stats: Arc::new(ProcessorStats::default()),
            transport,
            hub: None,
            simulator: None,
        }
    }
}

/// The state behind `iiot::http::app`, started now.
pub fn app_state(parts: StateParts) -> AppState {
    AppState {
        store: parts.store,
        commands: parts.commands,
        config: Arc::new(parts.config),
        stats: parts.stats,
        transport: parts.transport,
        started: Instant::now(),
        hub: parts.hub,
        simulator: parts.simulator,
    }
}

/// The WebSocket hub as the server configures it from `config`.
pub fn hub(config: &Config) -> Arc<Hub> {
    Hub::new(iiot::server::hub_config(config))
}

/// The server (HTTP API and WebSocket listeners) of `config`, started.
pub async fn start_server(config: &Config, state: AppState, hub: Arc<Hub>) -> Server {
    iiot::server::start(config, state, hub)
        .await
        .expect("server starts")
}

/// A hub configured with `cfg`, served alone at `/ws` on 127.0.0.1:0; returns its URL.
pub async fn start_ws_hub(cfg: HubConfig) -> (Arc<Hub>, String) {
    let hub = Hub::new(cfg);
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local addr");
    // As the real server must: without TCP_NODELAY small frames wait for delayed ACKs.
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    let app = iiot::hub::router(hub.clone(), "/ws");
    tokio::spawn(async move { axum::serve(listener, app).await.expect("serve") });
    (hub, format!("ws://{addr}/ws"))
}

/// [`start_ws_hub`] with `change` applied to the default hub configuration.
pub async fn start_ws_hub_adjusted(change: impl FnOnce(&mut HubConfig)) -> (Arc<Hub>, String) {
    let mut cfg = HubConfig::default();
    change(&mut cfg);
    start_ws_hub(cfg).await
}

/// The serve side's feeder: `store` follows `readings` and `alerts` (no hub, default limits)
/// until both end.
pub fn spawn_feed_store(
    store: SharedStore,
    readings: Box<dyn Subscriber>,
    alerts: Box<dyn Subscriber>,
) -> JoinHandle<Result<(), TransportError>> {
    tokio::spawn(iiot::serve::feed_store(
        store,
        None,
        readings,
        alerts,
        Limits::default(),
        CancellationToken::new(),
    ))
}

/// One processor worker of `config` reading `input` and writing alerts and dead letters
/// through `publisher`, with no rule reloads and no commands, until its input ends.
pub fn spawn_processor(
    config: &Config,
    input: Box<dyn Subscriber>,
    publisher: Arc<dyn Publisher>,
    stats: Arc<ProcessorStats>,
) -> JoinHandle<Result<Processor, TransportError>> {
    let processor = Processor::new(
        iiot::pipeline::processor_config(config),
        Arc::new(config.rules.clone()),
        stats,
    );
    let io = ProcessorIo {
        subscriber: input,
        publisher,
        alerts_topic: config.kafka.topic_alerts.clone(),
        dlq_topic: config.kafka.topic_dlq.clone(),
        transport: None,
    };
    let (rules_tx, rules_rx) = tokio::sync::watch::channel(Arc::new(config.rules.clone()));
    let (commands_tx, commands_rx) = mpsc::channel(1);
    tokio::spawn(async move {
        // Held open while the worker runs, as the test's own ends of them were.
        let _open = (rules_tx, commands_tx);
        iiot::processor::run::run(
            processor,
            io,
            rules_rx,
            commands_rx,
            CancellationToken::new(),
        )
        .await
    })
}
