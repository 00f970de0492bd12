//! History in PostgreSQL (`HISTORY_DATABASE_URL`), for deployments of more than one `serve`:
//! the consumer group writes each reading once (the member that owns the partition, before it
//! commits), every `serve` answers history and export from here, so all agree and a new one
//! has the full history at start.
//!
//! - [`pool`]: a small bounded pool of `tokio-postgres` connections (no TLS),
//!   `HISTORY_DATABASE_POOL_SIZE` of them (4).
//! - [`schema`]: migrations shipped in the binary, run at start under an advisory lock, and
//!   the [`Layout`] of the time-keyed tables: plain daily raw partitions and 30-day rollup
//!   partitions created ahead, or — on a new database of a server with TimescaleDB —
//!   hypertables with compression; retention drops whole partitions or chunks.
//! - [`write`]: one statement per batch, idempotent by (`device_id`, `ts`, `seq`), rollups
//!   updated from the rows actually inserted.
//! - [`query`]: the same answers as the embedded store.
//!
//! The same database keeps the alert rules made over `/api/rules` (migration 2); their SQL is
//! the rule book's ([`crate::alerts::book::store_pg`]), over `HistoryDb::connection`.
//!
//! # Database down
//! [`HistoryDb::write`] never waits long: a batch that cannot be written (or any batch while
//! the database is known to be down) is appended to the [`spool`] on disk before `write`
//! returns — so before the processor commits the input it came from — and
//! [`HistoryDb::spawn_upkeep`] writes the spool to the database every [`RETRY_EVERY`], oldest
//! first, deleting what was written a segment file at a time, and syncs what was appended
//! (a SIGKILL keeps what reached the page cache; the sync every second covers a power loss).
//! A spool left by a previous process (killed during an outage) is found at start and
//! replayed the same way; a replay cut short writes some readings twice, which the database
//! keeps once. Past `HISTORY_DATABASE_SPOOL_MAX_BYTES` the oldest segments are dropped and
//! their readings counted as lost (`iot_history_db_lost_total`).
//!
//! The spool belongs to the writers (`iiot run`, `iiot process`: `DATA_DIR/history-db-spool/`,
//! locked). Without it (`HISTORY_DATABASE_SPOOL_MAX_BYTES=0`, `iiot serve`, or while the
//! spool cannot be written, e.g. a full disk) readings wait in a bounded memory buffer
//! ([`MAX_BUFFERED_ROWS`]) instead, lost with the process. [`HistoryDb::problem`] says what is
//! wrong meanwhile, and that readings wait while any do (`/ready` answers 200 "degraded").
//!
//! # TimescaleDB
//! A database whose schema is made while the server offers the `timescaledb` extension (and
//! `HISTORY_DATABASE_TIMESCALEDB` is `auto`) gets hypertables instead of partitions
//! ([`Layout::Hypertables`]); one made before keeps its plain partitions. The layout is read
//! from the catalogue at every start and logged. Compression and retention run from this
//! process's upkeep, not from TimescaleDB's job scheduler. The tests run it on TimescaleDB
//! 2.23.0-dev inside PGlite (PostgreSQL 17 compiled to WebAssembly, `scripts/timescale/`), not
//! on a packaged server: Debian ships no TimescaleDB.

mod pool;
mod query;
mod schema;
pub mod spool;
mod write;

use std::collections::VecDeque;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub(crate) use pool::Conn;
pub use schema::{Layout, Upkeep};
pub use spool::{Spool, SpoolConfig};
pub use write::DbRow;

use super::Tier;
use pool::Pool;

/// Readings waiting for the database beyond which the oldest are dropped (counted as lost).
pub const MAX_BUFFERED_ROWS: usize = 200_000;
/// Readings per insert statement.
pub const BATCH_ROWS: usize = 5_000;
/// How often buffered readings are tried again (and partitions kept up, every hour).
pub const RETRY_EVERY: Duration = Duration::from_secs(1);
/// How long one write may take before it is treated as failed (and buffered).
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
const UPKEEP_EVERY: Duration = Duration::from_secs(3_600);

/// A database failure, one line; never shows the password (nor the URL, which may hold it).
#[derive(Debug, Clone, thiserror::Error)]
pub enum DbError {
    /// Not reachable, refused, or too slow.
    #[error("history database unavailable: {0}")]
    Unavailable(String),
    /// A statement failed.
    #[error("history database: {0}")]
    Query(String),
}

impl DbError {
    pub(crate) fn from_pg(e: tokio_postgres::Error) -> DbError {
        let closed = e.is_closed() || e.as_db_error().is_none();
        // `Display` of a tokio-postgres error holds the server's message or the I/O error,
        // never the connection parameters.
        let text = match e.as_db_error() {
            Some(db) => format!("{} ({})", db.message(), db.code().code()),
            None => e.to_string(),
        };
        if closed {
            DbError::Unavailable(text)
        } else {
            DbError::Query(text)
        }
    }
}

/// Where the database is and how long history is kept there.
#[derive(Debug, Clone)]
pub struct DatabaseConfig {
    /// `HISTORY_DATABASE_URL`.
    pub url: String,
    /// `HISTORY_DATABASE_PASSWORD` (or its `_FILE`), when not in the URL.
    pub password: Option<String>,
    /// `HISTORY_RAW_RETENTION`, `HISTORY_ROLLUP_1M_RETENTION`, `HISTORY_ROLLUP_1H_RETENTION`.
    pub retention: [Duration; 3],
    /// `HISTORY_DATABASE_POOL_SIZE`: connections this process keeps at most (1 to 64).
    pub pool_size: usize,
    /// `HISTORY_DATABASE_TIMESCALEDB`: `auto` (true) lets a new database be made of
    /// TimescaleDB hypertables when the server has the extension; `off` (false) never.
    pub timescaledb: bool,
}

impl DatabaseConfig {
    /// The settings of `config`, or `None` without `HISTORY_DATABASE_URL`.
    pub fn from_config(config: &crate::config::Config) -> Option<DatabaseConfig> {
        let h = &config.history;
        h.database_url.as_ref().map(|url| DatabaseConfig {
            url: url.clone(),
            password: h.database_password.clone(),
            retention: [
                h.raw_retention,
                h.rollup_1m_retention,
                h.rollup_1h_retention,
            ],
            pool_size: h.database_pool_size,
            timescaledb: h.database_timescaledb != "off",
        })
    }

    /// `url` with the defaults' retention, pool size and `auto` (tests).
    pub fn at(url: &str) -> DatabaseConfig {
        let day = 86_400;
        DatabaseConfig {
            url: url.to_owned(),
            password: None,
            retention: [7 * day, 90 * day, 730 * day].map(Duration::from_secs),
            pool_size: 4,
            timescaledb: true,
        }
    }

    /// Retention of `tier`, ms.
    pub(crate) fn retention_ms(&self, tier: Tier) -> i64 {
        let d = match tier {
            Tier::Raw => self.retention[0],
            Tier::Minute => self.retention[1],
            Tier::Hour => self.retention[2],
        };
        i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
    }

    fn pg_config(&self) -> Result<tokio_postgres::Config, DbError> {
        let mut c = tokio_postgres::Config::from_str(&self.url)
            .map_err(|_| DbError::Query("HISTORY_DATABASE_URL is not a postgres:// URL".into()))?;
        if let Some(p) = &self.password {
            c.password(p.as_bytes());
        }
        Ok(c)
    }
}

/// Whether `url` is a `postgres://` (or `postgresql://`) URL the client accepts.
pub fn is_database_url(url: &str) -> bool {
    (url.starts_with("postgres://") || url.starts_with("postgresql://"))
        && tokio_postgres::Config::from_str(url).is_ok()
}

/// Counters, for `/metrics`.
#[derive(Debug, Default)]
pub struct DbStats {
    /// Readings inserted (new ones only).
    pub rows_written: AtomicU64,
    /// Readings offered that the database held already (redeliveries).
    pub duplicates: AtomicU64,
    /// Failed writes (each retried).
    pub write_errors: AtomicU64,
    /// Readings dropped because the buffer (memory or spool) was full.
    pub lost: AtomicU64,
    /// Readings waiting for the database, in memory or in the spool.
    pub buffered: AtomicU64,
    /// Bytes of the spool's segment files.
    pub spool_bytes: AtomicU64,
    /// Bytes of the spool skipped at start: torn or corrupt records a crash left.
    pub spool_skipped_bytes: AtomicU64,
}

/// History in PostgreSQL. Cheap to share (`Arc`).
pub struct HistoryDb {
    cfg: DatabaseConfig,
    pool: Pool,
    stats: DbStats,
    buffer: Mutex<VecDeque<DbRow>>,
    /// Readings waiting on disk (the writers'; `None`: only the memory buffer).
    spool: Option<Arc<Spool>>,
    /// Set while the spool cannot be written (the memory buffer takes its place).
    spool_failing: AtomicBool,
    /// Set while writes fail; cleared by the first write that succeeds.
    problem: Mutex<Option<String>>,
    down: AtomicBool,
    /// Migrations applied and partitions made by this process.
    prepared: AtomicBool,
    /// The layout found once migrated.
    layout: std::sync::OnceLock<Layout>,
}

impl std::fmt::Debug for HistoryDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HistoryDb").finish_non_exhaustive()
    }
}

impl HistoryDb {
    /// Connects, applies the migrations this database lacks and creates the partitions
    /// ahead. A database that cannot be reached yet is not an error: writes are buffered and
    /// the schema is prepared on the first retry that reaches it. Fails (one line) when the
    /// database refuses (wrong password, missing database, a failed migration).
    pub async fn open(cfg: DatabaseConfig) -> Result<Arc<HistoryDb>, DbError> {
        HistoryDb::open_with(cfg, None).await
    }

    /// [`HistoryDb::open`] for a writer: readings that cannot be written now go to `spool`
    /// ([`Spool::open`], with what it found of a previous process, which is written first).
    pub async fn open_with(
        cfg: DatabaseConfig,
        spool: Option<(Spool, spool::Found)>,
    ) -> Result<Arc<HistoryDb>, DbError> {
        let pool = Pool::new(cfg.pg_config()?, cfg.pool_size);
        let stats = DbStats::default();
        let spool = spool.map(|(spool, found)| {
            stats.buffered.store(found.rows, Ordering::Relaxed);
            stats.spool_bytes.store(found.bytes, Ordering::Relaxed);
            stats
                .spool_skipped_bytes
                .store(found.skipped_bytes, Ordering::Relaxed);
            if found.rows > 0 {
                tracing::info!(
                    readings = found.rows,
                    bytes = found.bytes,
                    skipped_bytes = found.skipped_bytes,
                    dir = %spool.config().dir.display(),
                    "history database: readings spooled by a previous run are written first"
                );
            }
            Arc::new(spool)
        });
        let db = Arc::new(HistoryDb {
            cfg,
            pool,
            stats,
            buffer: Mutex::new(VecDeque::new()),
            spool,
            spool_failing: AtomicBool::new(false),
            problem: Mutex::new(None),
            down: AtomicBool::new(false),
            prepared: AtomicBool::new(false),
            layout: std::sync::OnceLock::new(),
        });
        match db.prepare().await {
            Ok(()) => {}
            Err(DbError::Unavailable(why)) => {
                tracing::warn!(error = %why, "history database not reachable at start; readings are buffered until it is");
                db.failed(&format!("unavailable: {why}"));
            }
            Err(e) => return Err(e),
        }
        Ok(db)
    }

    /// Migrations and partitions, once per process.
    async fn prepare(&self) -> Result<(), DbError> {
        if self.prepared.load(Ordering::Acquire) {
            return Ok(());
        }
        {
            let mut c = self.pool.get().await?;
            let s = schema::migrate(&mut c, self.cfg.timescaledb).await?;
            let _ = self.layout.set(s.layout);
            tracing::info!(
                schema_version = s.version,
                layout = s.layout.describe(),
                timescaledb_available = s.timescaledb_available,
                "history database ready"
            );
            if s.layout == Layout::Partitions && s.timescaledb_available && self.cfg.timescaledb {
                tracing::info!(
                    "history database: TimescaleDB is available, but this database has plain \
                     partitions (made without it, or with a version older than 2.11); they are \
                     kept: no migration converts them"
                );
            }
        }
        self.upkeep(crate::now_ms()).await?;
        self.prepared.store(true, Ordering::Release);
        Ok(())
    }

    /// Upkeep as of `now_ms`: with partitions, creates them ahead and drops expired ones; with
    /// hypertables, drops expired chunks and compresses old ones.
    pub async fn upkeep(&self, now_ms: i64) -> Result<Upkeep, DbError> {
        // Set by `prepare` (which runs this once it is set): not yet while never reached.
        let Some(&layout) = self.layout.get() else {
            return Err(DbError::Unavailable(
                "the history database was not reached yet".into(),
            ));
        };
        let mut c = self.pool.get().await?;
        schema::maintain(&mut c, layout, now_ms, |t| self.cfg.retention_ms(t)).await
    }

    /// How the time-keyed tables are kept; `None` until the database was first reached.
    pub fn layout(&self) -> Option<Layout> {
        self.layout.get().copied()
    }

    /// A connection from the pool to the migrated schema (the alert rules' store uses it).
    pub(crate) async fn connection(&self) -> Result<Conn<'_>, DbError> {
        self.prepare().await?;
        self.pool.get().await
    }

    /// A connection of its own, outside the pool, whose notifications (`LISTEN`) the caller
    /// reads from the returned connection half.
    pub(crate) async fn dedicated(
        &self,
    ) -> Result<
        (
            tokio_postgres::Client,
            tokio_postgres::Connection<tokio_postgres::Socket, tokio_postgres::tls::NoTlsStream>,
        ),
        DbError,
    > {
        let mut c = self.cfg.pg_config()?;
        c.connect_timeout(pool::CONNECT_TIMEOUT);
        c.application_name("iiot");
        tokio::time::timeout(pool::CONNECT_TIMEOUT, c.connect(tokio_postgres::NoTls))
            .await
            .map_err(|_| DbError::Unavailable("connecting timed out".into()))?
            .map_err(DbError::from_pg)
    }

    /// The counters.
    pub fn stats(&self) -> &DbStats {
        &self.stats
    }

    /// What is wrong, while writes fail, or else how many readings wait, while any do.
    pub fn problem(&self) -> Option<String> {
        let problem = self
            .problem
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        problem.or_else(|| match self.stats.buffered.load(Ordering::Relaxed) {
            0 => None,
            n => Some(format!(
                "{n} readings waiting to be written to the database"
            )),
        })
    }

    /// The settings.
    pub fn config(&self) -> &DatabaseConfig {
        &self.cfg
    }

    /// Inserts `rows` now, in batches of [`BATCH_ROWS`]; returns how many were new. Errors
    /// are returned, not buffered (see [`HistoryDb::write`]).
    pub async fn insert(&self, rows: &[DbRow]) -> Result<u64, DbError> {
        self.prepare().await?;
        let mut c = self.pool.get().await?;
        let mut new = 0;
        for chunk in rows.chunks(BATCH_ROWS) {
            let n = write::insert(&mut c, chunk).await?;
            new += n;
            self.stats.rows_written.fetch_add(n, Ordering::Relaxed);
            self.stats.duplicates.fetch_add(
                chunk.len() as u64 - n.min(chunk.len() as u64),
                Ordering::Relaxed,
            );
        }
        Ok(new)
    }

    /// Writes `rows` before returning when the database takes them within
    /// [`WRITE_TIMEOUT`]; otherwise (or at once while the database is known to be down)
    /// appends them to the spool (or, without one, keeps them in the bounded memory buffer)
    /// for [`HistoryDb::spawn_upkeep`] to retry. Never fails.
    pub async fn write(&self, rows: Vec<DbRow>) {
        if rows.is_empty() {
            return;
        }
        if !self.down.load(Ordering::Relaxed) {
            match tokio::time::timeout(WRITE_TIMEOUT, self.insert(&rows)).await {
                Ok(Ok(_)) => return,
                Ok(Err(e)) => self.failed(&e.to_string()),
                Err(_) => self.failed("a write took longer than 5s"),
            }
        }
        if let Some(spool) = &self.spool {
            let payload = spool::encode(&rows);
            let n = rows.len() as u64;
            let s = spool.clone();
            let appended = tokio::task::spawn_blocking(move || s.append(&payload, n))
                .await
                .map_err(|e| std::io::Error::other(e.to_string()))
                .and_then(|r| r);
            match appended {
                Ok(lost) => {
                    self.stats.lost.fetch_add(lost, Ordering::Relaxed);
                    if self.spool_failing.swap(false, Ordering::Relaxed) {
                        tracing::info!("history database spool: writing again");
                    }
                    self.gauges();
                    return;
                }
                Err(e) => {
                    if !self.spool_failing.swap(true, Ordering::Relaxed) {
                        tracing::warn!(error = %e, dir = %spool.config().dir.display(), "history database spool: cannot append; readings wait in memory (lost if the process dies)");
                    }
                    *self.problem.lock().unwrap_or_else(|e| e.into_inner()) =
                        Some(format!("the spool cannot be written: {e}"));
                }
            }
        }
        self.keep(rows);
    }

    fn failed(&self, why: &str) {
        self.stats.write_errors.fetch_add(1, Ordering::Relaxed);
        if !self.down.swap(true, Ordering::Relaxed) {
            tracing::warn!(error = %why, "history database: writes failing; buffering readings");
        }
        *self.problem.lock().unwrap_or_else(|e| e.into_inner()) = Some(why.to_owned());
    }

    /// The waiting readings' gauges, from the buffer and the spool.
    fn gauges(&self) {
        let memory = self.buffer.lock().unwrap_or_else(|e| e.into_inner()).len() as u64;
        let level = self.spool.as_ref().map(|s| s.level()).unwrap_or_default();
        self.stats
            .buffered
            .store(memory + level.rows, Ordering::Relaxed);
        self.stats.spool_bytes.store(level.bytes, Ordering::Relaxed);
    }

    fn keep(&self, rows: Vec<DbRow>) {
        {
            let mut buffer = self.buffer.lock().unwrap_or_else(|e| e.into_inner());
            buffer.extend(rows);
            let over = buffer.len().saturating_sub(MAX_BUFFERED_ROWS);
            if over > 0 {
                buffer.drain(..over);
                self.stats.lost.fetch_add(over as u64, Ordering::Relaxed);
            }
        }
        self.gauges();
    }

    /// The database took a write again: writes go to it directly from now on (what waits is
    /// written by the retries; [`HistoryDb::problem`] says so until it is).
    fn resumed(&self) {
        if self.down.swap(false, Ordering::Relaxed) {
            tracing::info!("history database: writes resumed");
        }
        *self.problem.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }

    /// Tries the waiting readings once, the spool's first: `true` when none are left.
    pub async fn retry(&self) -> bool {
        self.sync_spool().await;
        if let Err(e) = self.prepare().await {
            self.failed(&e.to_string());
            return false;
        }
        if let Some(spool) = &self.spool
            && !self.replay(spool).await
        {
            return false;
        }
        loop {
            let batch: Vec<DbRow> = {
                let mut b = self.buffer.lock().unwrap_or_else(|e| e.into_inner());
                let n = b.len().min(BATCH_ROWS);
                b.drain(..n).collect()
            };
            if batch.is_empty() {
                self.gauges();
                let spooled = self.spool.as_ref().map_or(0, |s| s.level().rows);
                if spooled == 0 {
                    self.resumed();
                }
                return spooled == 0;
            }
            match tokio::time::timeout(WRITE_TIMEOUT, self.insert(&batch)).await {
                Ok(Ok(_)) => self.gauges(),
                failed => {
                    let why = match failed {
                        Ok(Err(e)) => e.to_string(),
                        _ => "a write took longer than 5s".to_owned(),
                    };
                    self.failed(&why);
                    // Back in front, oldest first; the bound still holds.
                    let mut b = self.buffer.lock().unwrap_or_else(|e| e.into_inner());
                    for r in batch.into_iter().rev() {
                        b.push_front(r);
                    }
                    let over = b.len().saturating_sub(MAX_BUFFERED_ROWS);
                    if over > 0 {
                        b.drain(..over);
                        self.stats.lost.fetch_add(over as u64, Ordering::Relaxed);
                    }
                    drop(b);
                    self.gauges();
                    return false;
                }
            }
        }
    }

    /// Writes the spool to the database, oldest first, until it is empty (`true`) or a write
    /// fails (`false`, the batch kept for the next try).
    async fn replay(&self, spool: &Arc<Spool>) -> bool {
        loop {
            let s = spool.clone();
            let next = tokio::task::spawn_blocking(move || s.next(BATCH_ROWS)).await;
            let batch = match next {
                Ok(Ok(Some(batch))) => batch,
                Ok(Ok(None)) => return true,
                Ok(Err((why, lost))) => {
                    tracing::warn!(error = %why, readings = lost, "history database spool: readings that cannot be read back are lost");
                    self.stats.lost.fetch_add(lost, Ordering::Relaxed);
                    self.gauges();
                    continue;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "history database spool: reading it back failed");
                    return false;
                }
            };
            let written = tokio::time::timeout(WRITE_TIMEOUT, self.insert(&batch.rows)).await;
            let ok = matches!(written, Ok(Ok(_)));
            let s = spool.clone();
            let lost = tokio::task::spawn_blocking(move || s.done(batch, ok))
                .await
                .unwrap_or(0);
            self.stats.lost.fetch_add(lost, Ordering::Relaxed);
            self.gauges();
            match written {
                Ok(Ok(_)) => self.resumed(),
                Ok(Err(e)) => {
                    self.failed(&e.to_string());
                    return false;
                }
                Err(_) => {
                    self.failed("a write took longer than 5s");
                    return false;
                }
            }
        }
    }

    /// Makes what was appended to the spool durable (every [`RETRY_EVERY`] and at stop).
    async fn sync_spool(&self) {
        let Some(spool) = &self.spool else {
            return;
        };
        let s = spool.clone();
        match tokio::task::spawn_blocking(move || s.sync()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "history database spool: sync failed");
            }
            Err(e) => tracing::warn!(error = %e, "history database spool: sync failed"),
        }
    }

    /// Until `stop`: retries buffered readings every [`RETRY_EVERY`] and keeps partitions up
    /// every hour. At `stop`, one last try of what is buffered.
    pub fn spawn_upkeep(self: &Arc<Self>, stop: CancellationToken) -> JoinHandle<()> {
        let db = self.clone();
        tokio::spawn(async move {
            let mut retry = tokio::time::interval(RETRY_EVERY);
            retry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            let mut upkeep = tokio::time::interval(UPKEEP_EVERY);
            upkeep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            upkeep.tick().await;
            loop {
                tokio::select! {
                    _ = stop.cancelled() => {
                        let _ = tokio::time::timeout(WRITE_TIMEOUT, db.retry()).await;
                        db.sync_spool().await;
                        return;
                    }
                    _ = retry.tick() => { db.retry().await; }
                    _ = upkeep.tick() => {
                        if let Err(e) = db.upkeep(crate::now_ms()).await {
                            tracing::warn!(error = %e, "history database: partition upkeep failed");
                        }
                    }
                }
            }
        })
    }
}
