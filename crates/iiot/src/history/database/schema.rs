//! The schema: versioned migrations shipped in the binary, run at start under an advisory lock
//! (several instances starting at once apply each version once), and the upkeep of the
//! time-keyed tables in one of two [`Layout`]s, fixed when version 1 is applied:
//!
//! - [`Layout::Partitions`] (plain PostgreSQL): declarative range partitions, created ahead
//!   of time and dropped whole by retention.
//! - [`Layout::Hypertables`] (TimescaleDB): when version 1 is applied on a server that offers
//!   the `timescaledb` extension (`pg_available_extensions`, version 2.11 or later, which
//!   takes `INSERT … ON CONFLICT` into compressed chunks) and `HISTORY_DATABASE_TIMESCALEDB`
//!   is `auto`, the extension is created and the same tables — same columns, same keys —
//!   are hypertables with chunks of the same spans, compressed (segment by `device_id`,
//!   ordered by time). Upkeep drops the chunks wholly older than retention (`drop_chunks`)
//!   and compresses those ended more than [`COMPRESS_AFTER_MS`] ago (`compress_chunk`, which
//!   also recompresses a chunk that late readings reached since). It runs here, under the
//!   same advisory lock, not as TimescaleDB jobs: the same on every server, and on servers
//!   without background workers.
//!
//! A migration that shipped is never edited: a database made with partitions keeps them
//! (nothing converts it), whatever the server offers later. The layout in force is read from
//! the catalogue (`timescaledb_information.hypertables`) at every start, and version 1's
//! row in `iiot_schema_migrations` says which one it made.
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
//! With partitions, a reading outside every partition (older than retention, or far ahead)
//! goes to the table's default partition, which retention trims with `DELETE`. With
//! hypertables a chunk is made for any time; one older than retention goes at the next upkeep.

use tokio_postgres::Client;

use super::DbError;
use crate::history::Tier;

/// `pg_advisory_lock` key of migrations and partition upkeep ("iiot" in ASCII).
const LOCK_KEY: i64 = 0x6969_6f74;

const DAY_MS: i64 = 86_400_000;

/// With hypertables, a chunk is compressed once its whole range is older than this: readings
/// arriving more than two days late are rare, and those still land (compressed chunks take
/// inserts and upserts; the next upkeep recompresses the chunk).
pub(crate) const COMPRESS_AFTER_MS: i64 = 2 * DAY_MS;

/// The oldest TimescaleDB used: `INSERT … ON CONFLICT` into compressed chunks came in 2.11.
const TIMESCALEDB_MIN: (u32, u32) = (2, 11);

/// How the time-keyed tables (`iiot_readings`, `iiot_rollup_1m`, `iiot_rollup_1h`) are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// Plain declarative partitions, made ahead by upkeep.
    Partitions,
    /// TimescaleDB hypertables with compression.
    Hypertables,
}

impl Layout {
    /// For logs.
    pub fn describe(self) -> &'static str {
        match self {
            Layout::Partitions => "plain partitions",
            Layout::Hypertables => "TimescaleDB hypertables",
        }
    }
}

/// Migrations: version, what it does, SQL. Never edit one that shipped; add the next.
/// Version 1 is [`V1_HYPERTABLES`] instead where TimescaleDB is used (see [`apply`]).
const MIGRATIONS: &[(i32, &str, &str)] = &[
    (1, "readings, rollups, devices", V1),
    (2, "alert rules made over the API", V2),
];

/// Version 1's description where it made hypertables.
const V1_HYPERTABLES_DESCRIPTION: &str = "readings, rollups, devices (TimescaleDB hypertables)";

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

/// Version 1 on TimescaleDB: the same tables, columns and keys (each key holds the time column,
/// as a hypertable's unique keys must), the same chunk spans as [`span`], compression enabled;
/// `iiot_devices` and the view as in [`V1`].
const V1_HYPERTABLES: &str = "
CREATE EXTENSION IF NOT EXISTS timescaledb;
CREATE TABLE iiot_readings (
    device_id text NOT NULL, seq bigint NOT NULL, ts bigint NOT NULL,
    v0 integer NOT NULL, v1 integer NOT NULL, v2 integer NOT NULL, v3 integer NOT NULL,
    v4 integer NOT NULL, v5 integer NOT NULL,
    statuses smallint NOT NULL, switch_on boolean NOT NULL,
    PRIMARY KEY (device_id, ts, seq)
);
SELECT create_hypertable('iiot_readings', 'ts', chunk_time_interval => 86400000::bigint);
ALTER TABLE iiot_readings SET (timescaledb.compress,
    timescaledb.compress_segmentby = 'device_id', timescaledb.compress_orderby = 'ts, seq');
CREATE TABLE iiot_rollup_1m (
    device_id text NOT NULL, bucket bigint NOT NULL, count integer NOT NULL,
    min0 integer NOT NULL, min1 integer NOT NULL, min2 integer NOT NULL, min3 integer NOT NULL,
    min4 integer NOT NULL, min5 integer NOT NULL,
    max0 integer NOT NULL, max1 integer NOT NULL, max2 integer NOT NULL, max3 integer NOT NULL,
    max4 integer NOT NULL, max5 integer NOT NULL,
    sum0 bigint NOT NULL, sum1 bigint NOT NULL, sum2 bigint NOT NULL, sum3 bigint NOT NULL,
    sum4 bigint NOT NULL, sum5 bigint NOT NULL,
    PRIMARY KEY (device_id, bucket)
) WITH (fillfactor = 70);
SELECT create_hypertable('iiot_rollup_1m', 'bucket', chunk_time_interval => 2592000000::bigint);
ALTER TABLE iiot_rollup_1m SET (timescaledb.compress,
    timescaledb.compress_segmentby = 'device_id', timescaledb.compress_orderby = 'bucket');
CREATE TABLE iiot_rollup_1h (LIKE iiot_rollup_1m INCLUDING ALL) WITH (fillfactor = 70);
SELECT create_hypertable('iiot_rollup_1h', 'bucket', chunk_time_interval => 2592000000::bigint);
ALTER TABLE iiot_rollup_1h SET (timescaledb.compress,
    timescaledb.compress_segmentby = 'device_id', timescaledb.compress_orderby = 'bucket');
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

/// The time-keyed table of `tier`.
pub(crate) fn table(tier: Tier) -> &'static str {
    match tier {
        Tier::Raw => "iiot_readings",
        Tier::Minute => "iiot_rollup_1m",
        Tier::Hour => "iiot_rollup_1h",
    }
}

/// Span of one partition (or chunk) of `tier`, ms.
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

/// What [`migrate`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Schema {
    /// The schema version now in force.
    pub version: i32,
    /// The layout of the time-keyed tables.
    pub layout: Layout,
    /// Whether the server offers the `timescaledb` extension (at any version).
    pub timescaledb_available: bool,
}

/// Applies the migrations this database lacks, once, however many instances start at once.
/// `timescaledb`: whether a new database may be made of hypertables.
pub(crate) async fn migrate(client: &mut Client, timescaledb: bool) -> Result<Schema, DbError> {
    client
        .execute("SELECT pg_advisory_lock($1)", &[&LOCK_KEY])
        .await
        .map_err(DbError::from_pg)?;
    let applied = apply(client, timescaledb).await;
    // The lock is the session's: released here, or when the connection closes on error.
    let _ = client
        .execute("SELECT pg_advisory_unlock($1)", &[&LOCK_KEY])
        .await;
    applied
}

/// `major.minor` of a version such as `2.23.0-dev`.
fn major_minor(version: &str) -> Option<(u32, u32)> {
    let mut parts = version.split('.');
    let major = parts.next()?.parse().ok()?;
    let minor: String = parts
        .next()?
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    Some((major, minor.parse().ok()?))
}

/// The version of `timescaledb` the server would use here: the one created in this database,
/// else the one `CREATE EXTENSION` would install; `None` when the server has none.
async fn timescaledb_version(client: &Client) -> Result<Option<String>, DbError> {
    let row = client
        .query_opt(
            "SELECT coalesce(installed_version, default_version) FROM pg_available_extensions \
             WHERE name = 'timescaledb'",
            &[],
        )
        .await
        .map_err(DbError::from_pg)?;
    Ok(row.and_then(|r| r.get(0)))
}

/// The layout the time-keyed tables have, from the catalogue.
async fn layout_in_force(client: &Client) -> Result<Layout, DbError> {
    let created = client
        .query_opt(
            "SELECT 1 FROM pg_extension WHERE extname = 'timescaledb'",
            &[],
        )
        .await
        .map_err(DbError::from_pg)?
        .is_some();
    if !created {
        return Ok(Layout::Partitions);
    }
    let hyper = client
        .query_opt(
            "SELECT 1 FROM timescaledb_information.hypertables \
             WHERE to_regclass(format('%I.%I', hypertable_schema, hypertable_name)) \
                 = to_regclass('iiot_readings')",
            &[],
        )
        .await
        .map_err(DbError::from_pg)?
        .is_some();
    Ok(if hyper {
        Layout::Hypertables
    } else {
        Layout::Partitions
    })
}

async fn apply(client: &mut Client, timescaledb: bool) -> Result<Schema, DbError> {
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
            let (sql, description) =
                if v == 1 && timescaledb && hypertables_possible(client).await? {
                    (V1_HYPERTABLES, V1_HYPERTABLES_DESCRIPTION)
                } else {
                    (sql, description)
                };
            let tx = client.transaction().await.map_err(DbError::from_pg)?;
            tx.batch_execute(sql).await.map_err(|e| {
                let e = DbError::from_pg(e);
                match e {
                    DbError::Query(why) if sql == V1_HYPERTABLES => DbError::Query(format!(
                        "TimescaleDB is offered by the server but could not be used ({why}): \
                         create the extension beforehand as a superuser (CREATE EXTENSION \
                         timescaledb, with timescaledb in shared_preload_libraries), or set \
                         HISTORY_DATABASE_TIMESCALEDB=off for plain partitions"
                    )),
                    e => e,
                }
            })?;
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
    Ok(Schema {
        version,
        layout: layout_in_force(client).await?,
        timescaledb_available: timescaledb_version(client).await?.is_some(),
    })
}

/// Whether version 1 can make hypertables here: the server offers TimescaleDB at
/// [`TIMESCALEDB_MIN`] or later (an older one is logged and passed over).
async fn hypertables_possible(client: &Client) -> Result<bool, DbError> {
    let Some(version) = timescaledb_version(client).await? else {
        return Ok(false);
    };
    let recent = major_minor(&version).is_some_and(|v| v >= TIMESCALEDB_MIN);
    if !recent {
        tracing::warn!(
            timescaledb = %version,
            "history database: TimescaleDB older than 2.11 is not used; plain partitions"
        );
    }
    Ok(recent)
}

/// Name of the partition of `tier` starting at `start` (ms): `iiot_readings_p20261202`.
fn partition_name(tier: Tier, start: i64) -> String {
    let day = jiff::Timestamp::from_millisecond(start)
        .map(|t| t.strftime("%Y%m%d").to_string())
        .unwrap_or_else(|_| start.to_string());
    format!("{}_p{day}", table(tier))
}

/// What one upkeep did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Upkeep {
    /// Partitions created (none with hypertables: TimescaleDB makes chunks as rows arrive).
    pub created: usize,
    /// Partitions or chunks dropped by retention.
    pub dropped: usize,
    /// Chunks compressed for the first time (hypertables only).
    pub compressed: usize,
}

/// Upkeep of every tier as of `now_ms` in `layout`; `retention_ms(tier)` is the tier's
/// retention. One instance at a time (advisory lock).
pub(crate) async fn maintain(
    client: &mut Client,
    layout: Layout,
    now_ms: i64,
    retention_ms: impl Fn(Tier) -> i64,
) -> Result<Upkeep, DbError> {
    match layout {
        Layout::Partitions => maintain_partitions(client, now_ms, retention_ms).await,
        Layout::Hypertables => maintain_hypertables(client, now_ms, retention_ms).await,
    }
}

/// Drops the chunks of every tier wholly older than its retention (one transaction), then
/// compresses each chunk ended more than [`COMPRESS_AFTER_MS`] before `now_ms` (one
/// transaction per chunk, so that its locks are held no longer than its own compression).
async fn maintain_hypertables(
    client: &mut Client,
    now_ms: i64,
    retention_ms: impl Fn(Tier) -> i64,
) -> Result<Upkeep, DbError> {
    let mut upkeep = Upkeep::default();
    let tx = client.transaction().await.map_err(DbError::from_pg)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&LOCK_KEY])
        .await
        .map_err(DbError::from_pg)?;
    for tier in Tier::ALL {
        let horizon = now_ms.saturating_sub(retention_ms(tier));
        let dropped: i64 = tx
            .query_one(
                "SELECT count(*) FROM drop_chunks($1::text::regclass, older_than => $2::bigint)",
                &[&table(tier), &horizon],
            )
            .await
            .map_err(DbError::from_pg)?
            .get(0);
        upkeep.dropped += usize::try_from(dropped).unwrap_or(0);
    }
    tx.commit().await.map_err(DbError::from_pg)?;
    let cutoff = now_ms.saturating_sub(COMPRESS_AFTER_MS);
    for tier in Tier::ALL {
        let chunks: Vec<(String, bool)> = client
            .query(
                "SELECT format('%I.%I', chunk_schema, chunk_name), is_compressed \
                 FROM timescaledb_information.chunks \
                 WHERE to_regclass(format('%I.%I', hypertable_schema, hypertable_name)) \
                     = $1::text::regclass \
                   AND range_end_integer <= $2 \
                 ORDER BY range_start_integer",
                &[&table(tier), &cutoff],
            )
            .await
            .map_err(DbError::from_pg)?
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        for (chunk, was_compressed) in chunks {
            let tx = client.transaction().await.map_err(DbError::from_pg)?;
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&LOCK_KEY])
                .await
                .map_err(DbError::from_pg)?;
            // Another instance's upkeep may have dropped it meanwhile. Already compressed:
            // nothing, unless late readings reached it since (then it is recompressed).
            let done = tx
                .query(
                    "SELECT compress_chunk(c, if_not_compressed => true) \
                     FROM to_regclass($1) c WHERE c IS NOT NULL",
                    &[&chunk],
                )
                .await
                .map_err(DbError::from_pg)?;
            tx.commit().await.map_err(DbError::from_pg)?;
            if !was_compressed && !done.is_empty() {
                upkeep.compressed += 1;
            }
        }
    }
    Ok(upkeep)
}

/// Creates the partitions of every tier from its retention horizon to two spans ahead of
/// `now_ms`, drops those wholly older than retention, and trims the default partitions.
async fn maintain_partitions(
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
