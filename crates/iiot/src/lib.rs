//! Industrial IoT Monitor: the application library behind the `iiot` binary.
//!
//! # Layout
//! - [`config`]: layered configuration (flags > env > `.env` > `iiot.toml` > defaults), its
//!   validation, and hot reload of alert rules.
//! - [`simulator`]: the device fleet (realistic values, faults, malformed messages) and the paced
//!   runner that publishes it.
//! - [`processor`]: validation → dead letters, per-device `seq` tracking, aggregates, and the loop
//!   that feeds the [`alerts`] engine from a [`iiot_transport::Subscriber`].
//! - [`alerts`]: alert rules and the alert engine (one alert per device and type, lifecycle).
//! - [`liveness`]: a device's send interval, silence and offline limit (shared by alerts, store).
//! - [`store`]: the live store the server answers from (latest reading per device, compact raw
//!   history, 5-minute rollups, device status, alert log), bounded by configuration.
//! - [`serve`]: keeps the store and the hub current from subscriptions that see every reading
//!   and alert, as the serve role does.
//! - [`http`]: the HTTP API (`app()`: devices, history, export, alerts, stats, `/metrics`,
//!   `/api/docs`, health), answered from the store.
//! - [`hub`]: the WebSocket hub (subscriptions, resume by epoch/offset, batching, limits).
//! - [`server`]: binds `HTTP_PORT` (API + `/ws`) and `WEBSOCKET_PORT` (`WEBSOCKET_PATH`).
//! - [`backend`]: the message backend — the embedded bus, or Kafka (`iiot-kafka`) — and what
//!   the roles ask of it (publisher, group members, see-everything subscriptions, topics).
//! - [`pipeline`]: `iiot run` — simulator, processors, store, API and hub in one process, on
//!   the embedded bus or on Kafka.
//! - [`roles`]: the roles one process each over Kafka: `iiot process`, `iiot serve`,
//!   `iiot simulate --output kafka`.
//! - [`recovery`]: alerts left open by earlier processors, read back from Kafka at start-up.
//! - [`ack_relay`]: alert acknowledgements from a `serve` to the processors over the commands
//!   topic.
//! - [`bench`]: `iiot bench`, the reproducible throughput/latency run.
//! - [`telemetry`]: logging set-up.
//! - [`procstats`]: this process's memory, CPU time and file descriptors from `/proc`, for
//!   `/metrics`.
//! - [`duration`]: `100ms` / `5s` / `1m` parsing.
//!
//! Wire formats live in `iiot-model`; the bus and the transport traits in `iiot-transport`; the
//! Kafka backend in `iiot-kafka`.

pub mod ack_relay;
pub mod alerts;
pub mod backend;
pub mod bench;
pub mod config;
pub mod duration;
pub mod http;
pub mod hub;
pub mod liveness;
pub mod pipeline;
pub mod processor;
pub mod procstats;
pub mod recovery;
pub mod roles;
pub mod serve;
pub mod server;
pub mod simulator;
pub mod store;
pub mod telemetry;

/// Milliseconds since the Unix epoch, from the system clock.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
