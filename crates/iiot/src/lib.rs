//! Industrial IoT Monitor: the application library behind the `iiot` binary.
//!
//! # Layout
//! The data path is sources → processors → sinks, and each role composes them:
//! - [`sources`]: where readings come from — the [`simulator`] as a source, real devices over
//!   MQTT, and the serve side's replica of the topics (HTTP ingest is a route of [`http`]).
//! - [`processor`]: validation → verdicts (accepted reading, or dead letter with its reason),
//!   per-device `seq` tracking, aggregates, the [`alerts`] engine; the worker loop and the
//!   consumer group of workers.
//! - [`sinks`]: where verdicts go — the backend's topics (alerts, dead letters), the live
//!   store + WebSocket hub, history in PostgreSQL, and the notifier (webhooks, Slack, Teams,
//!   e-mail; routes, rate limits, silences; on Kafka a consumer group on the alerts topic that
//!   records each delivery, `sinks::notify::group`).
//! - [`roles`]: `run`, `process`, `serve`, `simulate`, `ingest` (MQTT → Kafka) — each `start(config, backend, …)` with a
//!   bounded `stop()`; `run` composes the others. The status line.
//! - [`backend`]: the one backend seam — an [`iiot_transport::Transport`] (the embedded bus, or
//!   Kafka with the `kafka` feature) — and topic creation.
//!
//! Around it:
//! - [`config`]: layered configuration (flags > env > `.env` > `iiot.toml` > defaults), its
//!   validation, and hot reload of alert rules. Each component turns it into its own settings
//!   (`ProcessorConfig::from_config`, `StoreConfig::from_config`, …).
//! - [`simulator`]: the device fleet (realistic values, faults, malformed messages) and the
//!   paced runner that publishes it.
//! - [`alerts`]: alert rules and the alert engine (one alert per device and type, lifecycle);
//!   the rule book (`alerts::book`): defaults, API rules and the file's, the API's kept in
//!   `DATA_DIR`, on the rules topic or in PostgreSQL, and followed by every process.
//! - [`liveness`]: a device's send interval, silence and offline limit (shared by alerts, store).
//! - [`store`]: the live store the server answers from (latest reading per device, compact raw
//!   history, 5-minute rollups, device status, alert log), bounded by configuration.
//! - [`history`]: history beyond memory — on disk (`DATA_DIR`), or in PostgreSQL
//!   (`history::database`, `HISTORY_DATABASE_URL`) written by the processors' history sink;
//!   [`history::HistoryStore`] is the seam the history and export routes answer from.
//! - [`http`]: the HTTP API (`app()`: devices, history, export, alerts, stats, `/metrics`,
//!   `/api/docs`, health; `ops_app()` for roles without a store), answered from the store.
//! - [`auth`]: who may see and act — roles, the auth file (users, API tokens), sessions, the
//!   gate every route and the WebSocket pass ([`http::guard`]); `iiot auth …`.
//! - [`hub`]: the WebSocket hub (subscriptions, resume by epoch/offset, batching, limits).
//! - [`mqtt`]: MQTT client options (3.1.1 and 5, `mqtts://`), topic filters, reconnects, the
//!   subscriber's connection; the simulator's MQTT output (one connection, or one per device).
//! - [`listeners`]: binds `HTTP_PORT` (API + `/ws`) and `WEBSOCKET_PORT` (`WEBSOCKET_PATH`), with
//!   the connection limits (`HTTP_MAX_CONNECTIONS`, header and idle timeouts).
//! - [`recovery`]: the alert-state topic (each device's open alerts, co-partitioned with
//!   `device-data`) read back for exactly the partitions a worker is given; the one-time
//!   migration from the alerts topic (`recovery::fold`); the record format (with its writer,
//!   so a worker that follows the topic writes its view over records a dropped member wrote
//!   late: `processor::run`, `Processor::foreign_record`).
//! - [`ack_relay`]: alert acknowledgements from a `serve` to the processors over the commands
//!   topic.
//! - [`bench`]: `iiot bench`, the reproducible throughput/latency run.
//! - [`telemetry`]: logging set-up. [`procstats`]: this process's memory, CPU time and file
//!   descriptors from `/proc`. [`duration`]: `100ms` / `5s` / `1m` parsing.
//!
//! Wire formats live in `iiot-model`; the bus and the transport traits in `iiot-transport`; the
//! Kafka backend in `iiot-kafka`.

pub mod ack_relay;
pub mod alerts;
pub mod auth;
pub mod backend;
pub mod bench;
pub mod config;
pub mod duration;
pub mod history;
pub mod http;
pub mod hub;
pub mod listeners;
pub mod liveness;
pub mod mqtt;
pub mod processor;
pub mod procstats;
pub mod recovery;
pub mod roles;
pub mod simulator;
pub mod sinks;
pub mod sources;
pub mod store;
pub mod telemetry;
#[cfg(test)]
pub(crate) mod test_support;

/// Milliseconds since the Unix epoch, from the system clock.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
