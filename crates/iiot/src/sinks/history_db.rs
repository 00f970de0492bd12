//! The history database sink: a processor's accepted readings into PostgreSQL before its
//! input is committed ([`crate::history::database`]). Every member of the consumer group
//! writes what its partitions brought, so each reading is written once; a redelivery after a
//! crash is absorbed by the database (idempotent by device, event time and `seq`).
//!
//! While the database is down the sink does not hold the processor up: readings go to the
//! writer's spool on disk (or, without one, a bounded memory buffer) before `take` returns,
//! so before the input is committed, and are retried from there; alerting goes on.

use std::sync::Arc;

use async_trait::async_trait;
use tokio_util::sync::CancellationToken;

use super::{Sink, SinkError, Verdicts};
use crate::history::database::{DbRow, HistoryDb};

/// Writes accepted readings to the history database.
#[derive(Debug, Clone)]
pub struct HistoryDbSink {
    db: Arc<HistoryDb>,
}

impl HistoryDbSink {
    /// A sink writing to `db`.
    pub fn new(db: Arc<HistoryDb>) -> HistoryDbSink {
        HistoryDbSink { db }
    }
}

#[async_trait]
impl Sink for HistoryDbSink {
    fn name(&self) -> &'static str {
        "history database"
    }

    async fn take(
        &self,
        verdicts: &Verdicts<'_>,
        stop: &CancellationToken,
    ) -> Result<(), SinkError> {
        let rows: Vec<DbRow> = verdicts
            .accepted
            .iter()
            .map(|a| DbRow::of(&a.reading))
            .collect();
        tokio::select! {
            _ = self.db.write(rows) => Ok(()),
            _ = stop.cancelled() => Err(SinkError::Stopped),
        }
    }
}
