//! The schema: versioned migrations shipped in the binary, run at start under an advisory lock
//! (several instances starting at once apply each version once), and the time partitions —
//! created ahead of time, dropped whole by retention.
//!
//! Tables (values as the embedded store keeps them: sensors in hundredths, battery and signal
//! strength whole, in [`iiot_model::Parameter::ALL`] order as `v0`..`v5`):
//! - `iiot_readings`: one row per reading, unique by (`device_id`, `ts`, `seq`), partitioned by
//!   day of event time (`ts`, Unix ms). `ts` is in the key because a partitioned table's unique
//!   keys must hold the partition key; a redelivered reading has the same `ts` as the first.
//! - `iiot_rollup_1m`, `iiot_rollup_1h`: min/max/sum/count per device and bucket, partitioned
//!   by 30 days of bucket start.
//! - `iiot_devices`: every device with its first event time (updated only when an older
//!   reading arrives: one row write per device, not per reading).
//! - `iiot_readings_v`: the readings in their units with a `timestamptz` (for Grafana).
//! - `iiot_api_rules`, `iiot_api_rules_version` (version 2): the alert rules made over
//!   `/api/rules` ([`crate::alerts::book`]).
//!
//! A reading outside every partition (older than retention, or far ahead) goes to the table's
//! default partition, which retention trims with `DELETE`.

use tokio_postgres::Client;

use super::DbError;
use crate::history::Tier;

/// `pg_advisory_lock` key of migrations and partition upkeep ("iiot" in ASCII).
const LOCK_KEY: i64 = 0x6969_6f74;

const DAY_MS: i64 = 86_400_000;

/// Migrations: version, what it does, SQL. Never edit one that shipped; add the next.
const MIGRATIONS: &[(i32, &str, &str)] = &[
    (1, "readings, rollups, devices", V1),
    (2, "alert rules made over the API", V2),
];

const V1: &str = "
CREATE TABLE iiot_readings (
    device_id text NOT NULL, seq bigint NOT NULL, ts bigint NOT NULL,
    v0 integer NOT NULL, v1 integer NOT NULL, v2 integer NOT NULL, v3 integer NOT NULL,
    v4 integer NOT NULL, v5 integer NOT NULL,
    statuses smallint NOT NULL, switch_on boolean NOT NULL,
    PRIMARY KEY (device_id, ts, seq)
) PARTITION BY RANGE (ts);
CREATE TABLE iiot_readings_default PARTITION OF iiot_readings DEFAULT;
CREATE TABLE iiot_rollup_1m (
    device_id text NOT NULL, bucket bigint NOT NULL, count integer NOT NULL,
    min0 integer NOT NULL, min1 integer NOT NULL, min2 integer NOT NULL, min3 integer NOT NULL,
    min4 integer NOT NULL, min5 integer NOT NULL,
    max0 integer NOT NULL, max1 integer NOT NULL, max2 integer NOT NULL, max3 integer NOT NULL,
    max4 integer NOT NULL, max5 integer NOT NULL,
    sum0 bigint NOT NULL, sum1 bigint NOT NULL, sum2 bigint NOT NULL, sum3 bigint NOT NULL,
    sum4 bigint NOT NULL, sum5 bigint NOT NULL,
    PRIMARY KEY (device_id, bucket)
) PARTITION BY RANGE (bucket);
CREATE TABLE iiot_rollup_1m_default PARTITION OF iiot_rollup_1m DEFAULT;
CREATE TABLE iiot_rollup_1h (LIKE iiot_rollup_1m INCLUDING ALL) PARTITION BY RANGE (bucket);
CREATE TABLE iiot_rollup_1h_default PARTITION OF iiot_rollup_1h DEFAULT;
CREATE TABLE iiot_devices (
    device_id text PRIMARY KEY, first_ts bigint NOT NULL
);
CREATE VIEW iiot_readings_v AS
SELECT device_id, seq, to_timestamp(ts / 1000.0) AS time,
       v0 / 100.0 AS temperature, v1 / 100.0 AS humidity, v2 / 100.0 AS pressure,
       v3 / 100.0 AS current, v4 AS battery, v5 AS signal_strength, switch_on
FROM iiot_readings;
";

/// The API's alert rules ([`crate::alerts::book::store_pg`]): one row per rule id with its
/// spec, in the order they were made; one row holding the version every change bumps (and
/// locks, so changes are serialised) and whether rules from before the database were copied
/// in (`seeded`).
const V2: &str = "
CREATE TABLE iiot_api_rules (
    id text PRIMARY KEY, position integer NOT NULL, spec jsonb NOT NULL,
    changed_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE iiot_api_rules_version (
    one boolean PRIMARY KEY DEFAULT true CHECK (one),
    version bigint NOT NULL, seeded boolean NOT NULL
);
INSERT INTO iiot_api_rules_version (one, version, seeded) VALUES (true, 0, false);
";

/// The partitioned table of `tier`.
pub(crate) fn table(tier: Tier) -> &'static str {
    match tier {
        Tier::Raw => "iiot_readings",
        Tier::Minute => "iiot_rollup_1m",
        Tier::Hour => "iiot_rollup_1h",
    }
}

/// Span of one partition of `tier`, ms.
fn span(tier: Tier) -> i64 {
    match tier {
        Tier::Raw => DAY_MS,
        Tier::Minute | Tier::Hour => 30 * DAY_MS,
    }
}

/// The partition column of `tier`.
fn column(tier: Tier) -> &'static str {
    match tier {
        Tier::Raw => "ts",
        _ => "bucket",
    }
}

/// Applies the migrations this database lacks, once, however many instances start at once.
/// Returns the schema version now in force.
pub(crate) async fn migrate(client: &mut Client) -> Result<i32, DbError> {
    client
        .execute("SELECT pg_advisory_lock($1)", &[&LOCK_KEY])
        .await
        .map_err(DbError::from_pg)?;
    let applied = apply(client).await;
    // The lock is the session's: released here, or when the connection closes on error.
    let _ = client
        .execute("SELECT pg_advisory_unlock($1)", &[&LOCK_KEY])
        .await;
    applied
}

async fn apply(client: &mut Client) -> Result<i32, DbError> {
    client
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS iiot_schema_migrations (
                version integer PRIMARY KEY, description text NOT NULL,
                applied_at timestamptz NOT NULL DEFAULT now())",
        )
        .await
        .map_err(DbError::from_pg)?;
    let mut version = 0;
    for &(v, description, sql) in MIGRATIONS {
        let done = client
            .query_opt(
                "SELECT 1 FROM iiot_schema_migrations WHERE version = $1",
                &[&v],
            )
            .await
            .map_err(DbError::from_pg)?
            .is_some();
        if !done {
            let tx = client.transaction().await.map_err(DbError::from_pg)?;
            tx.batch_execute(sql).await.map_err(DbError::from_pg)?;
            tx.execute(
                "INSERT INTO iiot_schema_migrations (version, description) VALUES ($1, $2)",
                &[&v, &description],
            )
            .await
            .map_err(DbError::from_pg)?;
            tx.commit().await.map_err(DbError::from_pg)?;
            tracing::info!(
                version = v,
                description,
                "history database: migration applied"
            );
        }
        version = v;
    }
    Ok(version)
}

/// Name of the partition of `tier` starting at `start` (ms): `iiot_readings_p20261202`.
fn partition_name(tier: Tier, start: i64) -> String {
    let day = jiff::Timestamp::from_millisecond(start)
        .map(|t| t.strftime("%Y%m%d").to_string())
        .unwrap_or_else(|_| start.to_string());
    format!("{}_p{day}", table(tier))
}

/// What [`maintain`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Upkeep {
    /// Partitions created.
    pub created: usize,
    /// Partitions dropped by retention.
    pub dropped: usize,
}

/// Creates the partitions of every tier from its retention horizon to two spans ahead of
/// `now_ms`, drops those wholly older than retention, and trims the default partitions.
/// `retention_ms(tier)` is the tier's retention. One instance at a time (advisory lock).
pub(crate) async fn maintain(
    client: &mut Client,
    now_ms: i64,
    retention_ms: impl Fn(Tier) -> i64,
) -> Result<Upkeep, DbError> {
    let tx = client.transaction().await.map_err(DbError::from_pg)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&LOCK_KEY])
        .await
        .map_err(DbError::from_pg)?;
    let mut upkeep = Upkeep::default();
    for tier in Tier::ALL {
        let (table, span, column) = (table(tier), span(tier), column(tier));
        let horizon = now_ms.saturating_sub(retention_ms(tier));
        let existing: Vec<(String, i64)> = tx
            .query(
                "SELECT c.relname, \
                        substring(pg_get_expr(c.relpartbound, c.oid) from 'FROM \\(''?(-?[0-9]+)')::bigint \
                 FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
                 WHERE i.inhparent = $1::text::regclass \
                   AND pg_get_expr(c.relpartbound, c.oid) <> 'DEFAULT'",
                &[&table],
            )
            .await
            .map_err(DbError::from_pg)?
            .iter()
            .map(|r| (r.get(0), r.get::<_, Option<i64>>(1).unwrap_or(i64::MAX)))
            .collect();
        for (name, start) in &existing {
            if start.saturating_add(span) <= horizon {
                tx.batch_execute(&format!("DROP TABLE IF EXISTS {name}"))
                    .await
                    .map_err(DbError::from_pg)?;
                upkeep.dropped += 1;
            }
        }
        let first = horizon.div_euclid(span) * span;
        let last = now_ms.saturating_add(2 * span).div_euclid(span) * span;
        let mut start = first;
        while start <= last {
            if !existing.iter().any(|(_, s)| *s == start) {
                let name = partition_name(tier, start);
                // A default partition holding rows of this range would refuse it: those rows
                // stay where they are (still answered), and the partition is not made.
                // Rollup rows are updated in place by every batch: room on their pages keeps
                // those updates HOT (no new index entries).
                let storage = if tier == Tier::Raw {
                    ""
                } else {
                    " WITH (fillfactor = 70)"
                };
                let sql = format!(
                    "CREATE TABLE IF NOT EXISTS {name} PARTITION OF {table} \
                     FOR VALUES FROM ({start}) TO ({}){storage}",
                    start + span
                );
                tx.batch_execute("SAVEPOINT p")
                    .await
                    .map_err(DbError::from_pg)?;
                match tx.batch_execute(&sql).await {
                    Ok(()) => {
                        tx.batch_execute("RELEASE SAVEPOINT p")
                            .await
                            .map_err(DbError::from_pg)?;
                        upkeep.created += 1;
                    }
                    Err(e) => {
                        tracing::warn!(partition = %name, error = %e, "history database: partition not created");
                        tx.batch_execute("ROLLBACK TO SAVEPOINT p")
                            .await
                            .map_err(DbError::from_pg)?;
                    }
                }
            }
            start += span;
        }
        tx.execute(
            &format!("DELETE FROM {table}_default WHERE {column} < $1"),
            &[&horizon],
        )
        .await
        .map_err(DbError::from_pg)?;
    }
    tx.commit().await.map_err(DbError::from_pg)?;
    Ok(upkeep)
}
