//! What the integration tests share: reading builders, clients (HTTP over TCP, WebSocket,
//! Kafka), real receivers for notifications ([`notify`]: webhook, SMTP), the `iiot` binary as a child process, and — in [`wiring`] — every construction of
//! the library's objects (`AppState`, the embedded pipeline, the bus, the store feeder, the
//! server, the hub), so that a change to that wiring is made here once.
//!
//! Each test binary includes this module with `mod support;` and uses a subset of it.

#![allow(dead_code)]

pub mod api;
pub mod config;
pub mod http;
pub mod kafka;
pub mod mqtt;
pub mod notify;
pub mod postgres;
pub mod python;
pub mod readings;
pub mod role;
pub mod timescale;
pub mod wiring;
pub mod ws;

use std::time::{Duration, Instant};

// Each binary uses some of these: re-exports are not covered by `dead_code`.
#[allow(unused_imports)]
pub use wiring::{
    StateParts, app_state, bus, hub, spawn_feed_store, spawn_processor, start_pipeline,
    start_pipeline_watching_alerts, start_server, start_ws_hub, start_ws_hub_adjusted,
};

/// Polls `cond` every 5 ms until it holds; fails naming `what` after `within`.
pub async fn wait_until(what: &str, within: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
