//! Answers from the database, shaped exactly as the embedded store shapes them: the same tier
//! choice, the same buckets, the same downsampling.

use iiot_model::Parameter;

use super::schema::table;
use super::{DbError, HistoryDb};
use crate::history::Tier;
use crate::history::row::{Row, decode, scale};
use crate::store::{Acc, Buckets, Downsampler, HistoryPoint, RawSample};

/// Index of `parameter` in [`Parameter::ALL`] (the column suffix).
fn index(parameter: Parameter) -> usize {
    Parameter::ALL
        .iter()
        .position(|q| *q == parameter)
        .unwrap_or(0)
}

impl HistoryDb {
    /// Whether the database holds any reading of device `id`.
    pub async fn knows(&self, id: &str) -> Result<bool, DbError> {
        let c = self.pool.get().await?;
        let row = c
            .query_opt("SELECT 1 FROM iiot_devices WHERE device_id = $1", &[&id])
            .await
            .map_err(DbError::from_pg)?;
        Ok(row.is_some())
    }

    /// `parameter` of `id` over `[from, to]` as at most `points` buckets (as
    /// [`crate::history::History::history`]).
    pub(crate) async fn history(
        &self,
        id: &str,
        parameter: Parameter,
        buckets: Buckets,
        tier: Tier,
        to: i64,
    ) -> Result<Vec<HistoryPoint>, DbError> {
        let p = index(parameter);
        let c = self.pool.get().await?;
        let mut d = Downsampler::new(buckets);
        if tier == Tier::Raw {
            let sql = format!(
                "SELECT DISTINCT ON (ts) ts, v{p} FROM iiot_readings \
                 WHERE device_id = $1 AND ts BETWEEN $2 AND $3 ORDER BY ts"
            );
            for r in c
                .query(&sql, &[&id, &buckets.origin, &to])
                .await
                .map_err(DbError::from_pg)?
            {
                let v = decode(p, i64::from(r.get::<_, i32>(1)));
                let acc = Acc {
                    min: v,
                    max: v,
                    sum: v,
                    count: 1,
                };
                d.push(r.get(0), acc);
            }
        } else {
            let sql = format!(
                "SELECT bucket, count, min{p}, max{p}, sum{p} FROM {} \
                 WHERE device_id = $1 AND bucket BETWEEN $2 AND $3 ORDER BY bucket",
                table(tier)
            );
            for r in c
                .query(&sql, &[&id, &buckets.origin, &to])
                .await
                .map_err(DbError::from_pg)?
            {
                let acc = Acc {
                    min: decode(p, i64::from(r.get::<_, i32>(2))),
                    max: decode(p, i64::from(r.get::<_, i32>(3))),
                    sum: r.get::<_, i64>(4) as f64 / scale(p),
                    count: r.get::<_, i32>(1).max(0) as u64,
                };
                d.push(r.get(0), acc);
            }
        }
        Ok(d.finish())
    }

    /// The first event time held of device `id`, if any.
    pub async fn first_seen(&self, id: &str) -> Result<Option<i64>, DbError> {
        let c = self.pool.get().await?;
        let row = c
            .query_opt(
                "SELECT first_ts FROM iiot_devices WHERE device_id = $1",
                &[&id],
            )
            .await
            .map_err(DbError::from_pg)?;
        Ok(row.map(|r| r.get(0)))
    }

    /// The raw readings of `id` with `from <= t <= to`, oldest first, each event time once.
    pub async fn raw(&self, id: &str, from: i64, to: i64) -> Result<Vec<RawSample>, DbError> {
        let c = self.pool.get().await?;
        let rows = c
            .query(
                "SELECT DISTINCT ON (ts) ts, v0, v1, v2, v3, v4, v5, statuses, switch_on \
                 FROM iiot_readings WHERE device_id = $1 AND ts BETWEEN $2 AND $3 ORDER BY ts",
                &[&id, &from, &to],
            )
            .await
            .map_err(DbError::from_pg)?;
        Ok(rows
            .iter()
            .map(|r| {
                Row {
                    t: r.get(0),
                    sensors: [r.get(1), r.get(2), r.get(3), r.get(4)],
                    battery: r.get(5),
                    signal: r.get(6),
                    statuses: r.get::<_, i16>(7) as u8,
                    switch_on: r.get(8),
                }
                .sample()
            })
            .collect())
    }

    /// Readings held in all, for tests and operators.
    pub async fn count_readings(&self) -> Result<i64, DbError> {
        let c = self.pool.get().await?;
        let r = c
            .query_one("SELECT count(*) FROM iiot_readings", &[])
            .await
            .map_err(DbError::from_pg)?;
        Ok(r.get(0))
    }
}
