//! What the handlers can reach. [`OpsState`] is what every role has (the operations
//! endpoints: configuration, counters, the transport); [`AppState`] adds what only a serve side
//! has — the live store and hub, and the command queue to the processors.

use std::sync::{Arc, RwLockReadGuard, RwLockWriteGuard};
use std::time::Instant;

use axum::extract::FromRef;
use tokio::sync::mpsc;

use crate::auth::Gate;
use crate::config::Config;
use crate::http::routes::IngestStats;
use crate::listeners::ConnStats;
use crate::mqtt::MqttStats;
use crate::processor::ProcessorStats;
use crate::processor::run::Command;
use crate::simulator::SimStats;
use crate::sinks::live::Live;
use crate::sinks::notify::NotifyShared;
use crate::store::Store;

/// The state behind [`super::ops_app`], and the part of [`AppState`] the operations endpoints
/// read. Cheap to clone (every field is shared).
#[derive(Clone)]
pub struct OpsState {
    /// The effective configuration (`/config` shows it redacted).
    pub config: Arc<Config>,
    /// The processors' counters (`/api/stats`, `/metrics`); zero in a role without processors.
    pub stats: Arc<ProcessorStats>,
    /// The message transport (`/ready` asks it).
    pub transport: Arc<dyn iiot_transport::Transport>,
    /// When the process started (uptime).
    pub started: Instant,
    /// The simulator's counters when this process runs one (`device_data_generated_total`).
    pub simulator: Option<Arc<SimStats>>,
    /// The live store and hub, in a serve side (device counts, WebSocket counters).
    pub live: Option<Live>,
    /// The notifier's silences and counters, when this process notifies (`iiot run`).
    pub notify: Option<Arc<NotifyShared>>,
    /// The MQTT source's connection, when this process runs one (`/ready` needs it up).
    pub mqtt: Option<Arc<MqttStats>>,
    /// What `POST /api/ingest` did.
    pub ingest: Arc<IngestStats>,
    /// What the listeners did with HTTP connections (refused, timed out).
    pub connections: Arc<ConnStats>,
    /// Who may see and act ([`crate::listeners`] puts the configured one here; until then
    /// everyone may, as for tests that serve the router alone).
    pub gate: Arc<Gate>,
}

impl OpsState {
    /// The state of a role: `config`, its counters and transport; no simulator, no live data.
    pub fn new(
        config: &Config,
        stats: Arc<ProcessorStats>,
        transport: Arc<dyn iiot_transport::Transport>,
    ) -> OpsState {
        OpsState {
            config: Arc::new(config.clone()),
            stats,
            transport,
            started: Instant::now(),
            simulator: None,
            live: None,
            notify: None,
            mqtt: None,
            ingest: Arc::default(),
            connections: Arc::default(),
            gate: Arc::new(Gate::open_to_all()),
        }
    }
}

/// The state behind [`super::app`]. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    /// What the operations endpoints read (its `live` is this state's `live`).
    pub ops: OpsState,
    /// The live store and hub. Handlers hold the store's lock only while copying out what they
    /// answer with, never across an `.await`.
    pub live: Live,
    /// Requests to the processors (alert acknowledgements).
    pub commands: mpsc::Sender<Command>,
}

impl AppState {
    /// The serve side's state.
    pub fn new(mut ops: OpsState, live: Live, commands: mpsc::Sender<Command>) -> AppState {
        ops.live = Some(live.clone());
        AppState {
            ops,
            live,
            commands,
        }
    }

    /// Read access to the store (a poisoned lock is still read: see [`Live::read`]).
    pub(crate) fn read_store(&self) -> RwLockReadGuard<'_, Store> {
        self.live.read()
    }

    /// Write access to the store.
    pub(crate) fn write_store(&self) -> RwLockWriteGuard<'_, Store> {
        self.live.write()
    }
}

impl FromRef<AppState> for OpsState {
    fn from_ref(state: &AppState) -> OpsState {
        state.ops.clone()
    }
}

impl std::fmt::Debug for OpsState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpsState")
            .field("started", &self.started)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("ops", &self.ops)
            .finish_non_exhaustive()
    }
}
