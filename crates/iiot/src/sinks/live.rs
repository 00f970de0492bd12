//! The live sink: the serve side's [`Store`] (latest reading, history, alert log) and the
//! WebSocket [`Hub`]. In one process (`iiot run` on the bus) the processors hand it their
//! verdicts directly, so a reading is decoded and judged once; a `serve` on Kafka feeds it from
//! the topics instead ([`crate::sources::replica`]).
//!
//! The store lock is taken once per batch and never across an await; fan-out to WebSocket
//! clients happens after it is released, so HTTP readers never wait on clients.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use async_trait::async_trait;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::{Sink, SinkError, Verdicts};
use crate::backend::Backend;
use crate::history::{History, HistoryStore};
use crate::hub::Hub;
use crate::now_ms;
use crate::store::{Recorded, Store};

/// How often old history is dropped.
const PRUNE_EVERY: Duration = Duration::from_secs(10);
/// How often device status changes are looked for and published.
const STATUS_EVERY: Duration = Duration::from_secs(1);

/// A store shared between its writers (sinks) and the HTTP API (readers).
pub type SharedStore = Arc<RwLock<Store>>;

/// The live state of a serve side: the store and the hub. Cheap to clone.
#[derive(Clone)]
pub struct Live {
    /// The live store.
    pub store: SharedStore,
    /// The WebSocket hub.
    pub hub: Arc<Hub>,
    /// History on disk, when kept: every new reading and alert change goes there too.
    pub history: Option<Arc<History>>,
    /// History in PostgreSQL, when configured: history and export are answered from it
    /// (the processors write it, not this sink).
    pub database: Option<HistoryStore>,
    applied: Arc<Applied>,
}

/// What the live state has taken so far (readings and alert changes applied).
#[derive(Debug, Default)]
struct Applied {
    readings: AtomicU64,
    alert_changes: AtomicU64,
}

impl Live {
    /// A live state around `store` and `hub`.
    pub fn new(store: Store, hub: Arc<Hub>) -> Live {
        Live::sharing(Arc::new(RwLock::new(store)), hub)
    }

    /// A live state around a store shared with someone else already.
    pub fn sharing(store: SharedStore, hub: Arc<Hub>) -> Live {
        Live {
            store,
            hub,
            history: None,
            database: None,
            applied: Arc::default(),
        }
    }

    /// The same, also keeping history in `history`.
    pub fn with_history(mut self, history: Option<Arc<History>>) -> Live {
        self.history = history;
        self
    }

    /// The same, answering history and export from `database` (PostgreSQL).
    pub fn with_database(mut self, database: Option<HistoryStore>) -> Live {
        self.database = database;
        self
    }

    /// Where history and export are answered from: the database when configured, else
    /// history on disk; `None` when neither is kept (the live store answers).
    pub fn history_store(&self) -> Option<HistoryStore> {
        self.database
            .clone()
            .or_else(|| self.history.clone().map(HistoryStore::Disk))
    }

    /// Readings and alert changes applied since the start.
    pub fn applied(&self) -> (u64, u64) {
        (
            self.applied.readings.load(Ordering::Relaxed),
            self.applied.alert_changes.load(Ordering::Relaxed),
        )
    }

    /// Waits until at least `readings` readings and `alert_changes` alert changes have been
    /// applied, or `timeout` passes; `true` if they were. A serve side that follows the topics
    /// uses it to show what its own processors decided before it stops.
    pub async fn caught_up(&self, readings: u64, alert_changes: u64, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let (r, a) = self.applied();
            if r >= readings && a >= alert_changes {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The store for reading. A writer that panicked leaves the data as consistent as any
    /// single `record` call does, so a poisoned lock is still read.
    pub fn read(&self) -> RwLockReadGuard<'_, Store> {
        self.store.read().unwrap_or_else(|e| e.into_inner())
    }

    /// The store for writing (see [`Live::read`] about poisoning).
    pub fn write(&self) -> RwLockWriteGuard<'_, Store> {
        self.store.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Records one batch: readings and alert changes into the store under one lock, then
    /// the same to the hub's clients.
    pub fn apply(&self, verdicts: &Verdicts<'_>) {
        if verdicts.accepted.is_empty() && verdicts.alerts.is_empty() {
            return;
        }
        {
            let mut store = self.write();
            // Only what the store had not seen: a redelivery (at-least-once) is not kept
            // twice, in memory or on disk. History takes the batch under one lock.
            match &self.history {
                None => {
                    for a in &verdicts.accepted {
                        store.record(&a.reading, verdicts.now_ms);
                    }
                }
                Some(h) => {
                    let new: Vec<bool> = verdicts
                        .accepted
                        .iter()
                        .map(|a| store.record_outcome(&a.reading, verdicts.now_ms) == Recorded::New)
                        .collect();
                    h.append_all(
                        verdicts
                            .accepted
                            .iter()
                            .zip(&new)
                            .filter(|(_, new)| **new)
                            .map(|(a, _)| (&a.reading, a.text)),
                    );
                }
            }
            for change in &verdicts.alerts {
                store.record_alert(&change.alert);
                if let Some(h) = &self.history {
                    h.append_alert(&change.json);
                }
            }
        }
        for a in &verdicts.accepted {
            let r = &a.reading;
            self.hub
                .publish_reading_text(&r.device_id, r.timestamp, a.text);
        }
        for change in &verdicts.alerts {
            self.hub
                .publish_alert(&change.alert.device_id, &change.json);
        }
        let add = |c: &AtomicU64, n: usize| c.fetch_add(n as u64, Ordering::Relaxed);
        add(&self.applied.readings, verdicts.accepted.len());
        add(&self.applied.alert_changes, verdicts.alerts.len());
    }

    /// Sweeps the store for devices whose status changed (under the write lock: the sweep
    /// remembers what it reported), then tells the hub's clients, outside the lock.
    pub fn publish_status_changes(&self, now_ms: i64) {
        let changes = self.write().status_changes(now_ms);
        for (device_id, status) in changes {
            self.hub.publish_status(&device_id, status, now_ms);
        }
    }

    /// Until `stop`: publishes device status changes every [`STATUS_EVERY`] (the server is
    /// the only judge of who is offline; the dashboard shows what it is told) and drops expired
    /// history every [`PRUNE_EVERY`]. While `backend` reaches no broker no sweep runs: silence
    /// then says nothing about the devices (as for the offline alert).
    pub fn spawn_upkeep(&self, stop: CancellationToken, backend: Backend) -> JoinHandle<()> {
        let live = self.clone();
        tokio::spawn(async move {
            let mut prune = tokio::time::interval(PRUNE_EVERY);
            prune.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            let mut status = tokio::time::interval(STATUS_EVERY);
            status.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = status.tick() => {
                        if backend.is_ready().await {
                            live.publish_status_changes(now_ms());
                        }
                    }
                    _ = prune.tick() => live.write().prune(now_ms()),
                }
            }
        })
    }
}

#[async_trait]
impl Sink for Live {
    fn name(&self) -> &'static str {
        "live"
    }

    async fn take(&self, verdicts: &Verdicts<'_>, _: &CancellationToken) -> Result<(), SinkError> {
        self.apply(verdicts);
        Ok(())
    }
}
