//! Writing readings: one statement per batch inserts the readings not yet held (by
//! `device_id`, `ts`, `seq`) and adds exactly those — the rows the insert returned — to the
//! one-minute and one-hour rollups and the device list. The statement is one transaction, so
//! a batch read again after a crash adds nothing anywhere. It is prepared once per connection.

use std::sync::OnceLock;

use iiot_model::Reading;

use super::DbError;
use crate::history::row::Row;

/// A reading as the database keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DbRow {
    /// The device.
    pub device_id: String,
    /// Its sequence number.
    pub seq: i64,
    /// The stored values (event time, grid codes, statuses, switch).
    pub(crate) row: Row,
}

impl DbRow {
    /// The stored form of `r`.
    pub fn of(r: &Reading<'_>) -> DbRow {
        DbRow {
            device_id: r.device_id.to_string(),
            // `seq` past i64::MAX does not happen (one per reading); saturate rather than wrap.
            seq: i64::try_from(r.seq).unwrap_or(i64::MAX),
            row: Row::of(r),
        }
    }
}

/// The rollup upsert of one tier (`table`, bucket `width` ms), from the CTE `ins`.
fn rollup_cte(name: &str, table: &str, width: i64) -> String {
    let cols = |p: &str| {
        (0..6)
            .map(|i| format!("{p}{i}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let aggs = (0..6)
        .map(|i| format!("min(v{i}), "))
        .chain((0..6).map(|i| format!("max(v{i}), ")))
        .chain((0..6).map(|i| format!("sum(v{i}), ")))
        .collect::<String>();
    let sets = (0..6)
        .map(|i| format!("min{i} = least(r.min{i}, EXCLUDED.min{i})"))
        .chain((0..6).map(|i| format!("max{i} = greatest(r.max{i}, EXCLUDED.max{i})")))
        .chain((0..6).map(|i| format!("sum{i} = r.sum{i} + EXCLUDED.sum{i}")))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "{name} AS (INSERT INTO {table} AS r (device_id, bucket, count, {}, {}, {}) \
         SELECT device_id, ts - ((ts % {width}) + {width}) % {width}, count(*), {} \
         FROM ins GROUP BY 1, 2 \
         ON CONFLICT (device_id, bucket) DO UPDATE SET count = r.count + EXCLUDED.count, {sets})",
        cols("min"),
        cols("max"),
        cols("sum"),
        aggs.trim_end_matches(", "),
    )
}

/// The batch statement (built once).
fn statement() -> &'static str {
    static SQL: OnceLock<String> = OnceLock::new();
    SQL.get_or_init(|| {
        format!(
            "WITH ins AS (\
               INSERT INTO iiot_readings \
                 (device_id, seq, ts, v0, v1, v2, v3, v4, v5, statuses, switch_on) \
               SELECT * FROM unnest($1::text[], $2::int8[], $3::int8[], $4::int4[], $5::int4[], \
                 $6::int4[], $7::int4[], $8::int4[], $9::int4[], $10::int2[], $11::bool[]) \
               ON CONFLICT DO NOTHING \
               RETURNING device_id, ts, v0, v1, v2, v3, v4, v5), \
             {}, {}, \
             dev AS (INSERT INTO iiot_devices AS d (device_id, first_ts) \
               SELECT device_id, min(ts) FROM ins GROUP BY 1 \
               ON CONFLICT (device_id) DO UPDATE SET first_ts = EXCLUDED.first_ts \
               WHERE d.first_ts > EXCLUDED.first_ts) \
             SELECT count(*) FROM ins",
            rollup_cte("m", "iiot_rollup_1m", 60_000),
            rollup_cte("h", "iiot_rollup_1h", 3_600_000),
        )
    })
}

/// Inserts `rows` (any number; the caller bounds batches); returns how many were new.
pub(crate) async fn insert(
    client: &mut super::pool::Conn<'_>,
    rows: &[DbRow],
) -> Result<u64, DbError> {
    if rows.is_empty() {
        return Ok(0);
    }
    let ids: Vec<&str> = rows.iter().map(|r| r.device_id.as_str()).collect();
    let seqs: Vec<i64> = rows.iter().map(|r| r.seq).collect();
    let ts: Vec<i64> = rows.iter().map(|r| r.row.t).collect();
    let v = |i: usize| -> Vec<i32> { rows.iter().map(|r| r.row.code(i)).collect() };
    let (v0, v1, v2, v3, v4, v5) = (v(0), v(1), v(2), v(3), v(4), v(5));
    let statuses: Vec<i16> = rows.iter().map(|r| i16::from(r.row.statuses)).collect();
    let switch: Vec<bool> = rows.iter().map(|r| r.row.switch_on).collect();
    let statement = client.prepare_cached(statement()).await?;
    let row = client
        .query_one(
            &statement,
            &[
                &ids, &seqs, &ts, &v0, &v1, &v2, &v3, &v4, &v5, &statuses, &switch,
            ],
        )
        .await
        .map_err(|e| {
            // The statement may be what failed (gone from the server session behind a
            // pooler, say): prepared afresh next time rather than failing every batch.
            client.forget_statements();
            DbError::from_pg(e)
        })?;
    Ok(row.get::<_, i64>(0).max(0) as u64)
}
