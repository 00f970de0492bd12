//! History on disk (`DATA_DIR`): every accepted reading and every alert status change, kept
//! for as long as retention says, and the queries that answer any range inside it.
//!
//! # Layout of `DATA_DIR` (documented for operators in `docs/storage.md`)
//! - `LOCK`: held (`flock`) by the running `iiot`; a second one on the directory is refused.
//! - `wal/{seal}.wal`: the write-ahead log of readings not yet in a segment, appended and
//!   synced every `HISTORY_FLUSH_INTERVAL` ([`wal`]).
//! - `raw/`, `1m/`, `1h/`: Parquet segments ([`segment`], named as [`catalog`] describes).
//!   Every `HISTORY_SEGMENT_SPAN` (or [`MAX_SEGMENT_ROWS`] readings) the readings since the last seal are
//!   sorted by device and time and written as one raw segment plus one segment per rollup
//!   tier; then their log is deleted. Rollup segments are merged as they accumulate.
//!   Retention deletes whole segments whose newest event is older than the tier's retention.
//! - `alerts/{n}.log`: every alert status change ([`alert_log`]).
//! - `latest.json`: the latest full reading of every device (written at every seal and at
//!   shutdown), so a restart lists the devices it knew.
//!
//! # Threads
//! Appends ([`History::append`], called by the live sink under the store's lock) only push onto
//! in-memory vectors. One writer thread ([`writer`]) does all the I/O: log, seal, merges,
//! retention. Queries read segments on the caller's thread (HTTP handlers call them through
//! `spawn_blocking`) and the not-yet-sealed readings from memory.
//!
//! # Failures
//! A write that fails (disk full, I/O error) is counted, logged at most once a minute, and
//! makes [`History::problem`] say so (`/ready` reports it); the readings stay in memory and
//! are written when the disk takes them again. Past [`MAX_PENDING_ROWS`] waiting readings
//! (a seal waiting to be tried again included; ~32 MB of rows, plus a 40-byte copy of each not
//! yet in the log), further ones are dropped and counted, so memory stays bounded; alert
//! changes likewise past 100,000.

mod alert_log;
mod catalog;
pub mod database;
mod pending;
mod query;
mod rollup;
mod row;
mod segment;
pub mod store;
#[cfg(test)]
mod tests;
mod wal;
mod writer;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::time::Duration;

use iiot_model::{Alert, Reading};

use catalog::Catalog;
pub use catalog::Tier;
use pending::Pending;
pub use store::{HistoryError, HistoryStore};

use crate::processor::RecoveredAlerts;

/// Readings waiting for the disk (not yet in a segment) beyond which new ones are dropped
/// (and counted): ~32 MB of rows.
pub const MAX_PENDING_ROWS: usize = 1_000_000;
/// A seal happens after this many readings even before `HISTORY_SEGMENT_SPAN` is up.
pub const MAX_SEGMENT_ROWS: usize = 500_000;

/// Where and how long history is kept.
#[derive(Debug, Clone, PartialEq)]
pub struct HistoryConfig {
    /// `DATA_DIR`.
    pub data_dir: PathBuf,
    /// `HISTORY_FLUSH_INTERVAL`.
    pub flush_interval: Duration,
    /// `HISTORY_SEGMENT_SPAN`.
    pub segment_span: Duration,
    /// `HISTORY_RAW_RETENTION`.
    pub raw_retention: Duration,
    /// `HISTORY_ROLLUP_1M_RETENTION`.
    pub minute_retention: Duration,
    /// `HISTORY_ROLLUP_1H_RETENTION`.
    pub hour_retention: Duration,
    /// `HISTORY_ALERT_RETENTION`.
    pub alert_retention: Duration,
}

impl HistoryConfig {
    /// The settings of `config`, or `None` with `HISTORY=off`.
    pub fn from_config(config: &crate::config::Config) -> Option<HistoryConfig> {
        let h = &config.history;
        h.enabled.then(|| HistoryConfig {
            data_dir: h.data_dir.clone(),
            flush_interval: h.flush_interval,
            segment_span: h.segment_span,
            raw_retention: h.raw_retention,
            minute_retention: h.rollup_1m_retention,
            hour_retention: h.rollup_1h_retention,
            alert_retention: h.alert_retention,
        })
    }

    /// Defaults in `dir` (tests).
    pub fn in_dir(dir: &Path) -> HistoryConfig {
        let day = 86_400;
        HistoryConfig {
            data_dir: dir.to_owned(),
            flush_interval: Duration::from_secs(1),
            segment_span: Duration::from_secs(300),
            raw_retention: Duration::from_secs(7 * day),
            minute_retention: Duration::from_secs(90 * day),
            hour_retention: Duration::from_secs(730 * day),
            alert_retention: Duration::from_secs(365 * day),
        }
    }

    /// Retention of `tier`, ms.
    pub(crate) fn retention_ms(&self, tier: Tier) -> i64 {
        let d = match tier {
            Tier::Raw => self.raw_retention,
            Tier::Minute => self.minute_retention,
            Tier::Hour => self.hour_retention,
        };
        i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
    }
}

/// Why `DATA_DIR` cannot be used; one line, a configuration error (exit 2).
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// Missing and cannot be created, not a directory, or not writable.
    #[error("invalid configuration: DATA_DIR={path}: {reason}")]
    Unusable {
        /// The directory.
        path: String,
        /// What went wrong.
        reason: String,
    },
    /// Another running `iiot` holds it.
    #[error(
        "invalid configuration: DATA_DIR={0}: in use by another running iiot (one process per data directory)"
    )]
    Locked(String),
}

/// What a start found in `DATA_DIR`.
#[derive(Debug, Default)]
pub struct Restored {
    /// The latest reading of every device known, as JSON text.
    pub latest: Vec<String>,
    /// Every alert's latest status change, oldest first.
    pub alerts: Vec<Alert>,
    /// The alerts still open, by device, for the alert engine.
    pub open: RecoveredAlerts,
    /// Readings read back from the write-ahead log (written after the last seal).
    pub replayed: usize,
    /// Bytes of torn or corrupt log tails skipped.
    pub skipped_bytes: u64,
    /// The newest event time held (Unix ms), if any: where a serve side following Kafka picks
    /// up again ([`crate::roles::serve::Serve::follow_topics`]).
    pub newest_ms: Option<i64>,
}

/// Counters, for `/metrics`.
#[derive(Debug, Default)]
pub struct HistoryStats {
    /// Readings written to the log.
    pub rows_written: AtomicU64,
    /// Alert changes written.
    pub alerts_written: AtomicU64,
    /// Failed writes (log, segments, merges, alert log).
    pub write_errors: AtomicU64,
    /// Readings (and alert changes) dropped because too many were waiting for the disk.
    pub dropped: AtomicU64,
    /// Flushes and their total duration (µs).
    pub flushes: AtomicU64,
    /// Total flush time, µs.
    pub flush_micros: AtomicU64,
    /// Seals done.
    pub seals: AtomicU64,
    /// Segments deleted by retention.
    pub expired: AtomicU64,
}

/// State shared by the writer thread, appenders and queries.
pub(crate) struct Shared {
    pub cfg: HistoryConfig,
    pub root: PathBuf,
    pub pending: Mutex<Pending>,
    pub catalog: RwLock<Catalog>,
    pub stats: HistoryStats,
    /// The last write failure, until a write succeeds again.
    pub problem: Mutex<Option<String>>,
    /// Set to stop the writer; the condvar wakes it.
    pub stopping: Mutex<bool>,
    pub wake: Condvar,
    /// Held for the life of the process: the directory's lock.
    _lock: File,
}

impl Shared {
    pub(crate) fn pending(&self) -> std::sync::MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn catalog(&self) -> std::sync::RwLockReadGuard<'_, Catalog> {
        self.catalog.read().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn catalog_mut(&self) -> std::sync::RwLockWriteGuard<'_, Catalog> {
        self.catalog.write().unwrap_or_else(|e| e.into_inner())
    }
}

/// History on disk. Cheap to share (`Arc`); [`History::close`] flushes and stops the writer.
pub struct History {
    shared: Arc<Shared>,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl std::fmt::Debug for History {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("History")
            .field("data_dir", &self.shared.root)
            .finish()
    }
}

fn unusable(path: &Path, reason: impl std::fmt::Display) -> OpenError {
    OpenError::Unusable {
        path: path.display().to_string(),
        reason: reason.to_string(),
    }
}

impl History {
    /// Opens (creating it if missing) and locks `cfg.data_dir`, repairs what a crash left
    /// (torn log tails, unfinished segments, a seal cut short), seals what the log held, reads
    /// the alert log and the devices back, and starts the writer.
    pub fn open(cfg: HistoryConfig) -> Result<(History, Restored), OpenError> {
        let root = cfg.data_dir.clone();
        if root.exists() && !root.is_dir() {
            return Err(unusable(&root, "not a directory"));
        }
        std::fs::create_dir_all(&root).map_err(|e| unusable(&root, e))?;
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(root.join("LOCK"))
            .map_err(|e| unusable(&root, format!("not writable ({e})")))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(OpenError::Locked(root.display().to_string()));
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(unusable(&root, e)),
        }
        let recovered = writer::recover(&cfg, &root).map_err(|e| unusable(&root, e))?;
        let writer::Recovered {
            catalog,
            pending,
            restored,
            writer: state,
        } = recovered;
        let shared = Arc::new(Shared {
            cfg,
            root,
            pending: Mutex::new(pending),
            catalog: RwLock::new(catalog),
            stats: HistoryStats::default(),
            problem: Mutex::new(None),
            stopping: Mutex::new(false),
            wake: Condvar::new(),
            _lock: lock,
        });
        let thread = {
            let for_thread = shared.clone();
            std::thread::Builder::new()
                .name("iiot-history".into())
                .spawn(move || writer::run(&for_thread, state))
                .map_err(|e| unusable(&shared.root, e))?
        };
        Ok((
            History {
                shared,
                writer: Mutex::new(Some(thread)),
            },
            restored,
        ))
    }

    /// Keeps `reading` (new: the caller checked it is not a redelivery); `text` is its JSON.
    pub fn append(&self, reading: &Reading<'_>, text: &str) {
        self.append_all([(reading, text)]);
    }

    /// Keeps a batch of new readings with their JSON, under one lock of what the writer shares.
    pub fn append_all<'r, 'a: 'r>(
        &self,
        readings: impl IntoIterator<Item = (&'r Reading<'a>, &'r str)>,
    ) {
        let mut dropped = 0;
        {
            let mut pending = self.shared.pending();
            for (reading, text) in readings {
                if !pending.append(reading, text) {
                    dropped += 1;
                }
            }
        }
        if dropped > 0 {
            self.shared
                .stats
                .dropped
                .fetch_add(dropped, Ordering::Relaxed);
        }
    }

    /// Keeps an alert status change.
    pub fn append_alert(&self, json: &[u8]) {
        if !self.shared.pending().append_alert(json) {
            self.shared.stats.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Whether a reading of device `id` was ever kept (and is still known).
    pub fn knows(&self, id: &str) -> bool {
        self.shared.pending().knows(id)
    }

    /// The directory.
    pub fn data_dir(&self) -> &Path {
        &self.shared.root
    }

    /// The counters.
    pub fn stats(&self) -> &HistoryStats {
        &self.shared.stats
    }

    /// Bytes, segments and oldest event time (Unix ms) of each tier.
    pub fn usage(&self) -> Vec<(Tier, u64, usize, Option<i64>)> {
        let catalog = self.shared.catalog();
        Tier::ALL
            .iter()
            .map(|&t| {
                let (bytes, n, oldest) = catalog.usage(t);
                (t, bytes, n, oldest)
            })
            .collect()
    }

    /// Readings in memory not yet in a segment.
    pub fn pending_rows(&self) -> usize {
        self.shared.pending().len()
    }

    /// The last write failure, while writes keep failing.
    pub fn problem(&self) -> Option<String> {
        self.shared
            .problem
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Flushes, seals what is pending, and stops the writer. Later appends are not kept.
    pub fn close(&self) {
        {
            let mut stopping = self
                .shared
                .stopping
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            *stopping = true;
            self.shared.wake.notify_all();
        }
        let handle = self.writer.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(h) = handle {
            let _ = h.join();
        }
    }

    pub(crate) fn shared(&self) -> &Shared {
        &self.shared
    }
}

impl Drop for History {
    fn drop(&mut self) {
        self.close();
    }
}
