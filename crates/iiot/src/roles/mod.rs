//! The roles of the binary, each a small composition of sources, the processors and sinks on
//! one [`crate::backend::Backend`]:
//!
//! - [`process`] (`iiot process`): the consumer-group processors — validation, dead letters,
//!   alerts — with alert recovery, the acknowledgement relay, rule reload and the status line.
//! - [`serve`] (`iiot serve`): the live store and hub, the HTTP API, dashboard and WebSocket;
//!   fed by the processors directly in one process, or from the topics ([`crate::sources::replica`]).
//! - [`simulate`] (`iiot simulate`): the simulated fleet as a source.
//! - [`run`] (`iiot run`): all three in one process, on the bus or on Kafka.
//! - [`ingest`] (`iiot ingest`): the MQTT source over Kafka alone — MQTT → `device-data`.
//! - [`status`]: the periodic status line.
//!
//! Each role has `start(config, backend or publisher, …) -> handle` and a bounded `stop()` (or
//! `wait()`) on the handle; a `main` function per role adds what the command line needs around
//! it (the HTTP endpoint, topic creation, waiting for a signal).

pub mod ingest;
pub mod process;
pub mod run;
pub mod serve;
pub mod simulate;
pub mod status;

use std::time::Duration;

use tokio::task::JoinHandle;

/// How long a role's stop waits for one of its tasks before going on without it.
pub const STOP_LIMIT: Duration = Duration::from_secs(10);

/// Waits (at most [`STOP_LIMIT`]) for a helper task of a role; says so if it did not end.
pub(crate) async fn join_bounded<T>(what: &str, task: JoinHandle<T>) -> Option<T> {
    match tokio::time::timeout(STOP_LIMIT, task).await {
        Ok(Ok(value)) => Some(value),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "{what} task failed");
            None
        }
        Err(_) => {
            tracing::warn!("{what} did not stop within {STOP_LIMIT:?}");
            None
        }
    }
}

/// The operations endpoint of a role without the full API (`process`, `simulate`). A taken
/// port is not fatal for these roles (several often run on one machine next to a `serve` on
/// 8080): they run on without `/health` and `/metrics`, and say so.
pub(crate) async fn ops_endpoint(
    config: &crate::config::Config,
    state: crate::http::OpsState,
) -> Option<crate::listeners::Server> {
    match crate::listeners::start_ops(config, state).await {
        Ok(server) => Some(server),
        Err(e) => {
            tracing::warn!(
                "no /health, /ready or /metrics: {e:#}; set HTTP_PORT (--http-port) to a free port"
            );
            None
        }
    }
}

/// History in PostgreSQL when `HISTORY_DATABASE_URL` is set: connected, migrated, its
/// partitions made (or, while unreachable, to be made on the first retry that reaches it).
/// A `writer` (`run`, `process`) keeps what the database cannot take now in its spool in
/// `DATA_DIR` (unless `HISTORY_DATABASE_SPOOL_MAX_BYTES=0`); one that cannot be opened or is
/// in use by another process is a configuration error (exit 2).
pub(crate) async fn open_history_db(
    config: &crate::config::Config,
    writer: bool,
) -> anyhow::Result<Option<std::sync::Arc<crate::history::database::HistoryDb>>> {
    use crate::history::database::{DatabaseConfig, HistoryDb, Spool, SpoolConfig};
    let Some(cfg) = DatabaseConfig::from_config(config) else {
        return Ok(None);
    };
    let spool = match SpoolConfig::from_config(config).filter(|_| writer) {
        None => None,
        Some(spool) => {
            // It reads what a previous process left: blocking work.
            let opened = tokio::task::spawn_blocking(move || Spool::open(spool))
                .await
                .map_err(|e| anyhow::anyhow!("opening the history database spool: {e}"))?;
            Some(opened.map_err(anyhow::Error::new)?)
        }
    };
    let db = HistoryDb::open_with(cfg, spool)
        .await
        .map_err(anyhow::Error::msg)?;
    Ok(Some(db))
}
