//! The history seam: what the HTTP routes (history, export) and the conformance suite ask of
//! history, answered by the embedded store ([`History`], `DATA_DIR`) or by PostgreSQL
//! ([`HistoryDb`], `HISTORY_DATABASE_URL`) alike.
//!
//! The methods block (disk reads; database round trips on the runtime the store was made on):
//! call them from a blocking thread (`spawn_blocking`), never from async code directly.

use std::sync::Arc;

use iiot_model::{Parameter, Reading};

use super::database::{DbError, DbRow, HistoryDb};
use super::{History, Tier};
use crate::store::{Buckets, HistoryPoint, RawSample, StoreError};

/// Why history could not answer.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    /// The request itself is wrong (range, points).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The database failed.
    #[error(transparent)]
    Database(#[from] DbError),
}

/// History, wherever it is kept. Cheap to clone.
#[derive(Clone, Debug)]
pub enum HistoryStore {
    /// On disk, in this process.
    Disk(Arc<History>),
    /// In PostgreSQL, shared by every instance; queries run on `runtime`.
    Database(Arc<HistoryDb>, tokio::runtime::Handle),
}

/// The tier that answers buckets of `width` ms starting at `from`: the coarsest whose buckets
/// fit, and whose retention still covers `from` (else the next coarser one).
pub(crate) fn tier_for(
    retention_ms: impl Fn(Tier) -> i64,
    width: i64,
    from: i64,
    now: i64,
) -> Tier {
    let fits = [Tier::Hour, Tier::Minute, Tier::Raw]
        .into_iter()
        .find(|t| t.width_ms() <= width)
        .unwrap_or(Tier::Raw);
    let order = [Tier::Raw, Tier::Minute, Tier::Hour];
    let start = order.iter().position(|t| *t == fits).unwrap_or(0);
    order[start..]
        .iter()
        .copied()
        .find(|&t| from >= now.saturating_sub(retention_ms(t)))
        .unwrap_or(Tier::Hour)
}

impl HistoryStore {
    /// PostgreSQL history, its queries run on the current runtime. Call from async code.
    pub fn database(db: Arc<HistoryDb>) -> HistoryStore {
        HistoryStore::Database(db, tokio::runtime::Handle::current())
    }

    /// Whether any reading of device `id` is held.
    pub fn knows(&self, id: &str) -> Result<bool, HistoryError> {
        match self {
            HistoryStore::Disk(h) => Ok(h.knows(id)),
            HistoryStore::Database(db, rt) => Ok(rt.block_on(db.knows(id))?),
        }
    }

    /// `parameter` of device `id` over `[from, to]` (event time) as at most `points` buckets;
    /// empty buckets left out ([`History::history`]).
    pub fn history(
        &self,
        id: &str,
        parameter: Parameter,
        from: i64,
        to: i64,
        points: usize,
        now_ms: i64,
    ) -> Result<Vec<HistoryPoint>, HistoryError> {
        match self {
            HistoryStore::Disk(h) => Ok(h.history(id, parameter, from, to, points, now_ms)?),
            HistoryStore::Database(db, rt) => {
                let probe = Buckets::new(from, to, points, 1)?;
                let tier = tier_for(|t| db.config().retention_ms(t), probe.width, from, now_ms);
                let buckets = Buckets::new(from, to, points, tier.width_ms())?;
                Ok(rt.block_on(db.history(id, parameter, buckets, tier, to))?)
            }
        }
    }

    /// Event times outside which no raw reading of `id` is held: exports walk only this span.
    pub fn raw_bounds(&self, id: &str, now_ms: i64) -> Result<(i64, i64), HistoryError> {
        match self {
            HistoryStore::Disk(h) => Ok(h.raw_bounds(now_ms)),
            HistoryStore::Database(db, rt) => {
                let horizon = now_ms.saturating_sub(db.config().retention_ms(Tier::Raw));
                // Up to a day ahead of now: the furthest an event time is accepted.
                Ok(match rt.block_on(db.first_seen(id))? {
                    Some(first) => (first.max(horizon), now_ms.saturating_add(86_400_000)),
                    None => (0, -1),
                })
            }
        }
    }

    /// The raw readings of `id` with `from <= t <= to`, oldest first, each event time once.
    pub fn raw(&self, id: &str, from: i64, to: i64) -> Result<Vec<RawSample>, HistoryError> {
        if from > to {
            return Err(StoreError::BadRange("from is after to").into());
        }
        match self {
            HistoryStore::Disk(h) => Ok(h.raw(id, from, to)?),
            HistoryStore::Database(db, rt) => Ok(rt.block_on(db.raw(id, from, to))?),
        }
    }

    /// Keeps new readings (with their JSON). The disk store trusts the caller that they are
    /// new; the database checks by (`device_id`, `ts`, `seq`) and returns how many were.
    pub fn write<'r, 'a: 'r>(
        &self,
        readings: &[(&'r Reading<'a>, &'r str)],
    ) -> Result<u64, HistoryError> {
        match self {
            HistoryStore::Disk(h) => {
                h.append_all(readings.iter().copied());
                Ok(readings.len() as u64)
            }
            HistoryStore::Database(db, rt) => {
                let rows: Vec<DbRow> = readings.iter().map(|(r, _)| DbRow::of(r)).collect();
                Ok(rt.block_on(db.insert(&rows))?)
            }
        }
    }

    /// What is wrong with writing, while it fails (`/ready` says so).
    pub fn problem(&self) -> Option<String> {
        match self {
            HistoryStore::Disk(h) => h.problem(),
            HistoryStore::Database(db, _) => db.problem(),
        }
    }
}
