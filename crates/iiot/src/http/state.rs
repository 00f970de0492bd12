//! What every handler can reach: the store, the processor's command queue, the configuration,
//! the shared counters and the transport.

use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Instant;

use tokio::sync::mpsc;

use crate::config::Config;
use crate::processor::ProcessorStats;
use crate::processor::run::Command;
use crate::store::Store;

/// The state behind [`super::app`]. Cheap to clone (every field is shared).
#[derive(Clone)]
pub struct AppState {
    /// The live store. Handlers hold its lock only while copying out what they answer with,
    /// never across an `.await`.
    pub store: Arc<RwLock<Store>>,
    /// Requests to the processor (alert acknowledgements).
    pub commands: mpsc::Sender<Command>,
    /// The effective configuration (`/config` shows it redacted).
    pub config: Arc<Config>,
    /// The processor's counters (`/api/stats`, `/metrics`).
    pub stats: Arc<ProcessorStats>,
    /// The message transport (`/ready` asks it).
    pub transport: Arc<dyn iiot_transport::Transport>,
    /// When the server started (uptime, throughput since start).
    pub started: Instant,
    /// The WebSocket hub, for its connection count and drop counters (`None` when the API is
    /// served without one).
    pub hub: Option<Arc<crate::hub::Hub>>,
    /// The simulator's counters when this process runs one (`device_data_generated_total`).
    pub simulator: Option<Arc<crate::simulator::SimStats>>,
}

impl AppState {
    /// Read access to the store. A writer that panicked leaves the data as consistent as any
    /// single `record` call does, so a poisoned lock is still read rather than failing every
    /// request from then on.
    pub(crate) fn read_store(&self) -> RwLockReadGuard<'_, Store> {
        self.store.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Write access to the store (see [`AppState::read_store`] about poisoning).
    pub(crate) fn write_store(&self) -> RwLockWriteGuard<'_, Store> {
        self.store.write().unwrap_or_else(|e| e.into_inner())
    }
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("started", &self.started)
            .finish_non_exhaustive()
    }
}
