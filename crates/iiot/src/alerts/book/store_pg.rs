//! The API's rules in PostgreSQL (`HISTORY_DATABASE_URL`): the tables `iiot_api_rules` (one
//! row per rule id, its spec as JSON, in the order made) and `iiot_api_rules_version` (one
//! row: the version every change bumps, and `seeded`), made by migration 2
//! ([`crate::history::database`]).
//!
//! A change is one transaction: it locks the version row (`SELECT … FOR UPDATE`), so changes
//! through several processes are serialised; reads the rules in force *from the database*
//! (not this process's copy), hands them to the caller to edit and validate, writes the
//! result whole, bumps the version and `NOTIFY`s [`CHANNEL`] with it. Refused or failed,
//! nothing is written. Owns the SQL only: what a valid change is stays in [`super::RuleBook`].

use std::time::Duration;

use tokio_postgres::GenericClient;

use super::{RuleBookError, RuleSpec};
use crate::history::database::{DbError, HistoryDb};

/// The channel a change is announced on (its payload: the new version).
pub const CHANNEL: &str = "iiot_api_rules";

/// How long a change may wait for the database before it is answered as failed.
pub const CHANGE_TIMEOUT: Duration = Duration::from_secs(5);

/// The API's rules as the database holds them.
#[derive(Debug, Clone, PartialEq)]
pub struct Stored {
    /// Bumped by every change.
    pub version: i64,
    /// In the order they were made.
    pub api: Vec<RuleSpec>,
}

/// The version in force (cheap: the followers poll it).
pub async fn version(db: &HistoryDb) -> Result<i64, DbError> {
    let c = db.connection().await?;
    let row = c
        .query_one("SELECT version FROM iiot_api_rules_version WHERE one", &[])
        .await
        .map_err(DbError::from_pg)?;
    Ok(row.get(0))
}

/// The rules and their version, read in one statement (one snapshot).
pub async fn read(db: &HistoryDb) -> Result<Stored, DbError> {
    let c = db.connection().await?;
    let rows = c
        .query(
            "SELECT v.version, r.spec::text FROM iiot_api_rules_version v \
             LEFT JOIN iiot_api_rules r ON true WHERE v.one ORDER BY r.position, r.id",
            &[],
        )
        .await
        .map_err(DbError::from_pg)?;
    let version = rows.first().map(|r| r.get::<_, i64>(0)).unwrap_or(0);
    let specs = rows.iter().filter_map(|r| r.get::<_, Option<String>>(1));
    Ok(Stored {
        version,
        api: parse(specs),
    })
}

/// Specs from their JSON; one that does not read as a rule (edited by hand) is left out,
/// logged, rather than stopping every process.
fn parse(specs: impl Iterator<Item = String>) -> Vec<RuleSpec> {
    specs
        .filter_map(|text| match serde_json::from_str::<RuleSpec>(&text) {
            Ok(spec) => Some(spec),
            Err(e) => {
                tracing::warn!(error = %e, spec = %text, "unreadable API alert rule in the database left out");
                None
            }
        })
        .collect()
}

/// The rules a change starts from. Unlike [`read`], a row that does not read as a rule is an
/// error here: the change rewrites the whole table, and would delete it.
async fn rules_in(c: &impl GenericClient) -> Result<Vec<RuleSpec>, DbError> {
    let rows = c
        .query(
            "SELECT id, spec::text FROM iiot_api_rules ORDER BY position, id",
            &[],
        )
        .await
        .map_err(DbError::from_pg)?;
    rows.iter()
        .map(|r| {
            let (id, text): (String, String) = (r.get(0), r.get(1));
            serde_json::from_str::<RuleSpec>(&text).map_err(|e| {
                DbError::Query(format!(
                    "stored rule {id} is not a rule ({e}); mend or delete that row of iiot_api_rules first"
                ))
            })
        })
        .collect()
}

/// Replaces the rules with `api`, bumps the version to `version` (marking the table seeded)
/// and announces it, inside the caller's transaction.
async fn write_all(c: &impl GenericClient, api: &[RuleSpec], version: i64) -> Result<(), DbError> {
    let ids: Vec<String> = api.iter().map(super::rule_id).collect();
    let positions: Vec<i32> = (0..api.len() as i32).collect();
    let specs = api
        .iter()
        .map(serde_json::to_string)
        .collect::<Result<Vec<String>, _>>()
        .map_err(|e| DbError::Query(e.to_string()))?;
    c.execute("DELETE FROM iiot_api_rules", &[])
        .await
        .map_err(DbError::from_pg)?;
    c.execute(
        "INSERT INTO iiot_api_rules (id, position, spec) \
         SELECT id, position, spec::jsonb FROM unnest($1::text[], $2::int4[], $3::text[]) \
         AS t(id, position, spec)",
        &[&ids, &positions, &specs],
    )
    .await
    .map_err(DbError::from_pg)?;
    c.execute(
        "UPDATE iiot_api_rules_version SET version = $1, seeded = true WHERE one",
        &[&version],
    )
    .await
    .map_err(DbError::from_pg)?;
    c.execute(
        "SELECT pg_notify($1, $2)",
        &[&CHANNEL, &version.to_string()],
    )
    .await
    .map_err(DbError::from_pg)?;
    Ok(())
}

/// One change (see the module documentation): `edit` gets the rules in force in the database
/// and returns the new ones, or why not (then nothing is written). Returns what was written.
pub async fn change(
    db: &HistoryDb,
    edit: impl FnOnce(Vec<RuleSpec>) -> Result<Vec<RuleSpec>, RuleBookError>,
) -> Result<Stored, RuleBookError> {
    let unavailable = |e: DbError| RuleBookError::Save(e.to_string());
    let attempt = async move {
        let mut c = db.connection().await.map_err(unavailable)?;
        let tx = c
            .transaction()
            .await
            .map_err(|e| unavailable(DbError::from_pg(e)))?;
        let row = tx
            .query_one(
                "SELECT version FROM iiot_api_rules_version WHERE one FOR UPDATE",
                &[],
            )
            .await
            .map_err(|e| unavailable(DbError::from_pg(e)))?;
        let version: i64 = row.get::<_, i64>(0) + 1;
        let current = rules_in(&tx).await.map_err(unavailable)?;
        // Refused: the transaction is dropped, rolled back.
        let api = edit(current)?;
        write_all(&tx, &api, version).await.map_err(unavailable)?;
        tx.commit()
            .await
            .map_err(|e| unavailable(DbError::from_pg(e)))?;
        Ok(Stored { version, api })
    };
    match tokio::time::timeout(CHANGE_TIMEOUT, attempt).await {
        Ok(done) => done,
        Err(_) => Err(RuleBookError::Save(format!(
            "the database did not answer within {CHANGE_TIMEOUT:?}"
        ))),
    }
}

/// Copies `api` (the rules kept before the database: `rules.json` or the rules topic) into
/// the database once: only while it was never seeded (no change made, nothing copied) and
/// holds no rule. Returns the version written, or `None` when nothing was copied.
pub async fn carry_over(db: &HistoryDb, api: &[RuleSpec]) -> Result<Option<i64>, DbError> {
    if api.is_empty() {
        return Ok(None);
    }
    let mut c = db.connection().await?;
    let tx = c.transaction().await.map_err(DbError::from_pg)?;
    let row = tx
        .query_one(
            "SELECT version, seeded FROM iiot_api_rules_version WHERE one FOR UPDATE",
            &[],
        )
        .await
        .map_err(DbError::from_pg)?;
    let (version, seeded): (i64, bool) = (row.get(0), row.get(1));
    let count: i64 = tx
        .query_one("SELECT count(*) FROM iiot_api_rules", &[])
        .await
        .map_err(DbError::from_pg)?
        .get(0);
    if seeded || count > 0 {
        return Ok(None);
    }
    write_all(&tx, api, version + 1).await?;
    tx.commit().await.map_err(DbError::from_pg)?;
    Ok(Some(version + 1))
}
