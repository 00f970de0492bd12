//! Every place the tests build the library's own objects. The wiring of `AppState`, the
//! embedded pipeline, the serve side and the server changes here, not in each test file.

use std::sync::{Arc, RwLock};

use axum::serve::ListenerExt;
use iiot::config::Config;
use iiot::http::{AppState, OpsState};
use iiot::hub::{Hub, HubConfig};
use iiot::listeners::Server;
use iiot::processor::group::{GroupInputs, ProcessorGroup};
use iiot::processor::run::{Command, ProcessorIo};
use iiot::processor::{Processor, ProcessorConfig, ProcessorStats};
use iiot::simulator::SimStats;
use iiot::sinks::live::{Live, SharedStore};
use iiot::sinks::topics::{OutputTopics, TopicSink};
use iiot::store::{Store, StoreConfig};
use iiot_model::Limits;
use iiot_transport::{Bus, Publisher, Subscriber, Transport, TransportError};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// The embedded bus as `iiot run` sets it up for `config` (its topics and partitions).
pub fn bus(config: &Config) -> Bus {
    iiot::backend::bus_for(config)
}

/// The processors reading `bus`, their verdicts going to the bus's topics (alerts, dead
/// letters), as `iiot run` starts them (without the live sink: tests watch the topics).
pub async fn start_pipeline(config: &Config, bus: Bus) -> ProcessorGroup {
    let mut inputs = GroupInputs::new(Vec::new());
    let sink = TopicSink::new(
        bus.publisher(),
        OutputTopics::from_config(config),
        inputs.stats.clone(),
    );
    inputs.sinks.push(Arc::new(sink));
    ProcessorGroup::start(config, Arc::new(bus), inputs)
        .await
        .expect("the embedded processors start")
}

/// [`bus`] and [`start_pipeline`] on it, with a subscription (group `group`) to the alerts
/// topic taken before the processors start.
pub async fn start_pipeline_watching_alerts(
    config: &Config,
    group: &str,
) -> (Bus, Box<dyn Subscriber>, ProcessorGroup) {
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
    pub notify: Option<Arc<iiot::sinks::notify::NotifyShared>>,
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
            notify: None,
        }
    }
}

/// The state behind `iiot::http::app`, started now (a default hub when none is given).
pub fn app_state(parts: StateParts) -> AppState {
    let mut ops = OpsState::new(&parts.config, parts.stats, parts.transport);
    ops.simulator = parts.simulator;
    ops.notify = parts.notify;
    let hub = parts.hub.unwrap_or_else(|| hub(&parts.config));
    let live = Live::sharing(parts.store, hub);
    AppState::new(ops, live, parts.commands)
}

/// The WebSocket hub as the server configures it from `config`.
pub fn hub(config: &Config) -> Arc<Hub> {
    Hub::new(HubConfig::from_config(config))
}

/// The server (HTTP API and WebSocket listeners) of `config`, started.
pub async fn start_server(config: &Config, state: AppState) -> Server {
    iiot::listeners::start(config, state)
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

/// The serve side's feed from the topics: `store` (with a default hub) follows `readings` and
/// `alerts` (default limits) until both end.
pub fn spawn_feed_store(
    store: SharedStore,
    readings: Box<dyn Subscriber>,
    alerts: Box<dyn Subscriber>,
) -> JoinHandle<Result<(), TransportError>> {
    let live = Live::sharing(store, hub(&Config::default()));
    tokio::spawn(iiot::sources::replica::feed(
        live,
        readings,
        alerts,
        Limits::default(),
        CancellationToken::new(),
    ))
}

/// One processor worker of `config` reading `input` and writing alerts and dead letters
/// through `publisher`, with no rule reloads and no commands, until its input ends or `stop`.
pub fn spawn_processor(
    config: &Config,
    input: Box<dyn Subscriber>,
    publisher: Arc<dyn Publisher>,
    stats: Arc<ProcessorStats>,
    stop: CancellationToken,
) -> JoinHandle<Result<Processor, TransportError>> {
    let sink = TopicSink::new(publisher, OutputTopics::from_config(config), stats.clone());
    let processor = Processor::new(
        ProcessorConfig::from_config(config),
        Arc::new(config.rules.clone()),
        stats,
    );
    let io = ProcessorIo {
        subscriber: input,
        sinks: vec![Arc::new(sink)],
        transport: None,
        recovery: None,
    };
    let (rules_tx, rules_rx) = tokio::sync::watch::channel(Arc::new(config.rules.clone()));
    let (commands_tx, commands_rx) = mpsc::channel(1);
    tokio::spawn(async move {
        // Held open while the worker runs, as the test's own ends of them were.
        let _open = (rules_tx, commands_tx);
        iiot::processor::run::run(processor, io, rules_rx, commands_rx, stop).await
    })
}
