//! The rule book: the alert rules of a process from their three places — the defaults, the
//! rules made over `/api/rules` (kept where the module documentation says below), and the
//! config file's `[[alerts.rules]]` — combined into the [`RuleSet`] the processors run, which
//! is published on a watch channel at every change.
//!
//! The file wins: its specs come after the API's (see [`super::compose`]), a rule the file
//! defines cannot be changed or removed over the API, and a file reload replaces only the
//! file's part. Every change is validated on the whole combination before it is kept: what is
//! refused changes nothing.
//!
//! Where the API's rules are kept: in memory, in `DATA_DIR/rules.json` (one process: `iiot run`
//! on the bus), on Kafka in the compacted rules topic (`KAFKA_TOPIC_RULES`) as whole snapshots
//! under one key, or — whenever `HISTORY_DATABASE_URL` is set, on the bus or on Kafka — in
//! PostgreSQL ([`store_pg`]), which then is their only store (no `rules.json`, no snapshots).
//! On Kafka every processor and serve follows the topic from its beginning ([`follow::topic`]);
//! with the database every process follows it ([`follow::database`]: `LISTEN` plus a read
//! every 5 s). Either way a change made through any `serve` reaches every processor, and a
//! processor started later reads the rules at start. Concurrent changes are applied in the
//! topic's order (the later snapshot wins), or in the database serialised by a row lock
//! (each sees the other's: neither is lost).
//!
//! It does not watch the file ([`crate::config::watch_rules`] calls [`RuleBook::file_changed`])
//! and does not talk to the processors beyond the watch channel.

pub mod follow;
pub mod store_pg;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use iiot_transport::Publisher;
use serde::Serialize;
use tokio::sync::watch;

use super::compose::rule_id;
use super::rules::{RuleError, RuleSet, RuleSpec, Thresholds};
use crate::config::Config;
use crate::history::database::{DbError, HistoryDb};

/// At most this many rules can be made over the API.
pub const MAX_API_RULES: usize = 1000;

/// Where a rule comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RuleSource {
    /// The built-in defaults (`ALERT_*` thresholds).
    Default,
    /// `/api/rules`.
    Api,
    /// The config file.
    File,
}

/// A rule as `/api/rules` shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RuleView {
    /// `alert_type`, or `alert_type@scope` ([`rule_id`]).
    pub id: String,
    /// Where the spec in force comes from.
    pub source: RuleSource,
    /// The spec in force.
    pub rule: RuleSpec,
}

/// Why a change was refused.
#[derive(Debug, thiserror::Error)]
pub enum RuleBookError {
    /// The rules would not be valid (the key names the field).
    #[error("invalid rule: {0}")]
    Invalid(RuleError),
    /// The config file defines this rule, and the file wins.
    #[error("rule {0} is defined in the config file, which wins: change it there")]
    FromFile(String),
    /// No API rule has this id.
    #[error("no rule {0} was made over the API")]
    Unknown(String),
    /// An API rule with this id exists already (change it with PUT).
    #[error("rule {0} exists already: change it with PUT /api/rules/{0}")]
    Exists(String),
    /// The body's `alert_type` and scope make another id than the path's.
    #[error("the body describes rule {body}, not {path}")]
    IdMismatch {
        /// The id in the path.
        path: String,
        /// The id the body makes.
        body: String,
    },
    /// [`MAX_API_RULES`] reached.
    #[error("at most {MAX_API_RULES} rules can be made over the API")]
    Full,
    /// The rules could not be written to the data directory, the rules topic or the database
    /// (nothing was changed).
    #[error("could not save the rules: {0}")]
    Save(String),
}

/// Where the API's rules are kept.
enum Keep {
    Memory,
    File(PathBuf),
    Topic {
        publisher: Arc<dyn Publisher>,
        topic: String,
    },
    Database(Arc<HistoryDb>),
}

/// A change over the API.
enum Edit<'a> {
    Put {
        id: &'a str,
        spec: &'a RuleSpec,
        replace: bool,
    },
    Delete(&'a str),
}

/// The one key of the rules topic: compaction keeps its latest snapshot.
const SNAPSHOT_KEY: &[u8] = b"api-rules";

struct Parts {
    thresholds: Thresholds,
    file: Vec<RuleSpec>,
    api: Vec<RuleSpec>,
    /// The database's version of `api` (0 without a database): an older read never replaces
    /// a newer one.
    version: i64,
}

/// The rules of a process; see the module documentation.
pub struct RuleBook {
    parts: Mutex<Parts>,
    tx: watch::Sender<Arc<RuleSet>>,
    keep: Keep,
    /// One change at a time (a change waits for its save, outside the parts' lock).
    writer: tokio::sync::Mutex<()>,
    /// API rules from before the database (and where from) not copied in yet because it
    /// could not be reached: tried again before every read and change until done.
    unseeded: Mutex<Option<(Vec<RuleSpec>, String)>>,
}

impl RuleBook {
    /// The rules of `config` (defaults and the file), none from the API, in memory only.
    pub fn new(config: &Config) -> RuleBook {
        RuleBook {
            parts: Mutex::new(Parts {
                thresholds: config.thresholds,
                file: config.rule_specs.clone(),
                api: Vec::new(),
                version: 0,
            }),
            tx: watch::channel(Arc::new(config.rules.clone())).0,
            keep: Keep::Memory,
            writer: tokio::sync::Mutex::new(()),
            unseeded: Mutex::new(None),
        }
    }

    /// As [`RuleBook::new`], with the API's rules kept in the rules topic `topic` (Kafka) via
    /// `publisher`; [`follow::topic`] brings in what is there and what others change.
    pub fn on_topic(config: &Config, publisher: Arc<dyn Publisher>, topic: String) -> RuleBook {
        RuleBook {
            keep: Keep::Topic { publisher, topic },
            ..RuleBook::new(config)
        }
    }

    /// As [`RuleBook::new`], with the API's rules kept in `DATA_DIR/rules.json` when history is
    /// on (read back now). A file that cannot be read as rules (torn, edited by hand) is set
    /// aside as `rules.json.bad`, logged, and the start goes on without those rules; API rules
    /// that no longer fit with the file are left out of the rules in force, logged.
    pub fn persisted(config: &Config) -> Result<RuleBook, String> {
        let mut book = RuleBook::new(config);
        let Some((path, api)) = kept_in_data_dir(config)? else {
            return Ok(book);
        };
        book.keep = Keep::File(path);
        if !api.is_empty() {
            let count = api.len();
            book.lock().api = api;
            book.publish();
            tracing::info!(count, "alert rules made over the API read back");
        }
        Ok(book)
    }

    /// As [`RuleBook::new`], with the API's rules kept in PostgreSQL. `before` are the API
    /// rules kept before the database (`rules.json`, named by `from`), copied in once when the
    /// database never held any (logged). Then reads what the database holds; unreachable, the
    /// start goes on without API rules until [`follow::database`] reaches it.
    pub async fn in_database(
        config: &Config,
        db: Arc<HistoryDb>,
        before: Vec<RuleSpec>,
        from: &str,
    ) -> RuleBook {
        let book = RuleBook {
            keep: Keep::Database(db.clone()),
            ..RuleBook::new(config)
        };
        book.carry_over(&db, &before, from).await;
        match book.refresh(&db).await {
            Ok(count) => tracing::info!(
                api_rules = count,
                "alert rules made over the API read from the database"
            ),
            Err(e) => {
                tracing::warn!(error = %e, "alert rules database unreachable at start: going on without the API's rules until it answers")
            }
        }
        book
    }

    /// The database the API's rules are kept in, if they are.
    pub fn database(&self) -> Option<Arc<HistoryDb>> {
        match &self.keep {
            Keep::Database(db) => Some(db.clone()),
            _ => None,
        }
    }

    /// Copies `before` into the database if it never held any rules ([`store_pg::carry_over`]).
    /// Unreachable: kept, and tried again by [`RuleBook::refresh`] and before every change, so
    /// a change made while it waits cannot mark the database seeded without them.
    async fn carry_over(&self, db: &HistoryDb, before: &[RuleSpec], from: &str) {
        match store_pg::carry_over(db, before).await {
            Ok(Some(version)) => tracing::info!(
                count = before.len(),
                from,
                version,
                "alert rules made over the API copied into the database (once; it keeps them from now on)"
            ),
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(error = %e, from, "alert rules made over the API not copied into the database yet: trying again while it is unreachable");
                *self.unseeded.lock().unwrap_or_else(|e| e.into_inner()) =
                    Some((before.to_vec(), from.to_string()));
            }
        }
    }

    /// Tries a carry-over that could not be made before; an error while it still waits.
    async fn seed_pending(&self, db: &HistoryDb) -> Result<(), DbError> {
        let pending = self
            .unseeded
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        let Some((before, from)) = pending else {
            return Ok(());
        };
        match store_pg::carry_over(db, &before).await {
            Ok(done) => {
                if let Some(version) = done {
                    tracing::info!(
                        count = before.len(),
                        from,
                        version,
                        "alert rules made over the API copied into the database (once; it keeps them from now on)"
                    );
                }
                Ok(())
            }
            Err(e) => {
                *self.unseeded.lock().unwrap_or_else(|e| e.into_inner()) = Some((before, from));
                Err(e)
            }
        }
    }

    /// Reads the database's version and, when newer than the one in force, its rules; applies
    /// them. Returns how many API rules are in force.
    pub async fn refresh(&self, db: &HistoryDb) -> Result<usize, DbError> {
        self.seed_pending(db).await?;
        let version = store_pg::version(db).await?;
        let known = self.lock().version;
        if version != known {
            let mut stored = store_pg::read(db).await?;
            if stored.version < self.lock().version {
                // Older than what is in force: a read that raced this process's own change,
                // or a database that went back (restored from a backup, tables recreated).
                // Read once more: still older is the latter, and the database is followed.
                stored = store_pg::read(db).await?;
                let mut parts = self.lock();
                if stored.version < parts.version {
                    tracing::warn!(
                        known = parts.version,
                        version = stored.version,
                        "the alert rules database's version went back (restored or recreated?): following it"
                    );
                    parts.version = stored.version;
                }
            }
            let count = stored.api.len();
            if self.set_api_at(stored.version, stored.api) {
                tracing::info!(
                    api_rules = count,
                    version = stored.version,
                    "alert rules changed over the API applied"
                );
            }
        }
        Ok(self.lock().api.len())
    }

    /// The channel the processors follow (every change is sent on it).
    pub fn sender(&self) -> watch::Sender<Arc<RuleSet>> {
        self.tx.clone()
    }

    /// The rules in force.
    pub fn rules(&self) -> Arc<RuleSet> {
        self.tx.borrow().clone()
    }

    /// Every rule in force by id, defaults first, then the API's, then the file's; an id
    /// defined in more than one place is shown once, as the place that wins.
    pub fn list(&self) -> Vec<RuleView> {
        let parts = self.lock();
        let defaults = RuleSet::defaults(&parts.thresholds);
        let mut views: Vec<RuleView> = Vec::new();
        let all = defaults
            .rules
            .iter()
            .map(|r| (RuleSource::Default, r.to_spec()))
            .chain(parts.api.iter().map(|s| (RuleSource::Api, s.clone())))
            .chain(parts.file.iter().map(|s| (RuleSource::File, s.clone())));
        for (source, rule) in all {
            let id = rule_id(&rule);
            let view = RuleView { id, source, rule };
            match views.iter_mut().find(|v| v.id == view.id) {
                Some(old) => *old = view,
                None => views.push(view),
            }
        }
        views
    }

    /// Makes (or, with `replace`, changes) the API rule `spec`; `path_id` is the id of the URL
    /// for a change. Validated with everything else in force; saved, then published.
    pub async fn put(
        &self,
        path_id: Option<&str>,
        mut spec: RuleSpec,
        replace: bool,
    ) -> Result<RuleView, RuleBookError> {
        if spec.scope.as_ref().is_some_and(|s| s.is_empty()) {
            spec.scope = None;
        }
        let id = rule_id(&spec);
        if let Some(path) = path_id.filter(|p| *p != id) {
            return Err(RuleBookError::IdMismatch {
                path: path.to_string(),
                body: id,
            });
        }
        self.change(Edit::Put {
            id: &id,
            spec: &spec,
            replace,
        })
        .await?;
        Ok(RuleView {
            id,
            source: RuleSource::Api,
            rule: spec,
        })
    }

    /// Removes the API rule `id` (a default or file rule it overrode applies again).
    pub async fn delete(&self, id: &str) -> Result<(), RuleBookError> {
        self.change(Edit::Delete(id)).await
    }

    /// Applies `edit`: validated with everything else in force, saved, then published. With
    /// the database, on the rules the database holds, inside its transaction.
    async fn change(&self, edit: Edit<'_>) -> Result<(), RuleBookError> {
        let _one = self.writer.lock().await;
        if let Keep::Database(db) = &self.keep {
            self.seed_pending(db)
                .await
                .map_err(|e| RuleBookError::Save(e.to_string()))?;
            let stored =
                store_pg::change(db, |api| self.edit(api, &edit).map(|(api, _)| api)).await?;
            self.set_api_at(stored.version, stored.api);
            return Ok(());
        }
        let current = self.lock().api.clone();
        let (api, rules) = self.edit(current, &edit)?;
        self.save(&api).await?;
        self.lock().api = api;
        self.tx.send_replace(Arc::new(rules));
        Ok(())
    }

    /// `api` with `edit` applied, and the rules that makes with the defaults and the file; or
    /// why not.
    fn edit(
        &self,
        mut api: Vec<RuleSpec>,
        edit: &Edit<'_>,
    ) -> Result<(Vec<RuleSpec>, RuleSet), RuleBookError> {
        let parts = self.lock();
        let id = match edit {
            Edit::Put { id, .. } | Edit::Delete(id) => *id,
        };
        if parts.file.iter().any(|s| rule_id(s) == id) {
            return Err(RuleBookError::FromFile(id.to_string()));
        }
        let making = match edit {
            Edit::Put { spec, replace, .. } => {
                match api.iter().position(|s| rule_id(s) == id) {
                    Some(_) if !replace => return Err(RuleBookError::Exists(id.to_string())),
                    Some(p) => api[p] = (*spec).clone(),
                    None if api.len() >= MAX_API_RULES => return Err(RuleBookError::Full),
                    None => api.push((*spec).clone()),
                }
                Some(id)
            }
            Edit::Delete(_) => {
                let before = api.len();
                api.retain(|s| rule_id(s) != id);
                if api.len() == before {
                    return Err(RuleBookError::Unknown(id.to_string()));
                }
                // Removing can break a scoped API rule that inherited from the removed one.
                None
            }
        };
        let rules = combine(&parts.thresholds, &api, &parts.file, making)
            .map_err(RuleBookError::Invalid)?;
        Ok((api, rules))
    }

    /// The API's rules as read from the rules topic (a snapshot): they replace the API's part.
    /// With the database instead, they are only copied into it if it never held any (rules
    /// from before the database was configured). Returns whether the rules in force changed.
    pub async fn from_topic(&self, api: Vec<RuleSpec>) -> bool {
        match &self.keep {
            Keep::Database(db) => {
                self.carry_over(db, &api, "the rules topic").await;
                // What the copy changed is applied (and logged) by the read.
                let _ = self.refresh(db).await;
                false
            }
            _ => self.set_api(api),
        }
    }

    /// The API's rules: they replace the API's part. Returns whether the rules in force
    /// changed.
    pub fn set_api(&self, api: Vec<RuleSpec>) -> bool {
        self.lock().api = api;
        self.publish()
    }

    /// As [`RuleBook::set_api`] for the database's `version`, unless a newer one is in force.
    fn set_api_at(&self, version: i64, api: Vec<RuleSpec>) -> bool {
        {
            let mut parts = self.lock();
            if version < parts.version {
                return false;
            }
            parts.version = version;
            parts.api = api;
        }
        self.publish()
    }

    /// The config file was loaded again with these thresholds and rules: they replace the
    /// file's part. Returns whether the rules in force changed.
    pub fn file_changed(&self, thresholds: Thresholds, file: Vec<RuleSpec>) -> bool {
        {
            let mut parts = self.lock();
            parts.thresholds = thresholds;
            parts.file = file;
        }
        self.publish()
    }

    /// Builds the rules in force from the parts and sends them if they changed. API rules that
    /// do not fit with the file are left out (logged); the file's rules always apply.
    fn publish(&self) -> bool {
        let parts = self.lock();
        let mut api = parts.api.clone();
        let rules = loop {
            match combine(&parts.thresholds, &api, &parts.file, None) {
                Ok(rules) => break rules,
                Err(e) => {
                    let culprit = api
                        .iter()
                        .position(|s| e.key.starts_with(&format!("rule {}.", rule_id(s))));
                    let left_out = match culprit {
                        Some(i) => vec![api.remove(i)],
                        None => std::mem::take(&mut api),
                    };
                    let ids: Vec<String> = left_out.iter().map(rule_id).collect();
                    tracing::warn!(error = %e, left_out = ?ids, "API alert rules left out: they do not fit with the config file");
                }
            }
        };
        drop(parts);
        self.tx.send_if_modified(|current| {
            let changed = **current != rules;
            if changed {
                *current = Arc::new(rules);
            }
            changed
        })
    }

    fn lock(&self) -> MutexGuard<'_, Parts> {
        // The parts are replaced whole under the lock: a panic leaves them usable.
        self.parts.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Keeps `api`: in `rules.json` (temporary file, fsync, rename, directory fsync), or as a
    /// snapshot on the rules topic, delivered before this returns.
    async fn save(&self, api: &[RuleSpec]) -> Result<(), RuleBookError> {
        let save = |e: String| RuleBookError::Save(e);
        match &self.keep {
            // Written by the change's own transaction.
            Keep::Memory | Keep::Database(_) => Ok(()),
            Keep::File(path) => {
                let bytes = serde_json::to_vec_pretty(api).map_err(|e| save(e.to_string()))?;
                write_atomically(path, &bytes).map_err(|e| save(e.to_string()))
            }
            Keep::Topic { publisher, topic } => {
                let bytes = serde_json::to_vec(api).map_err(|e| save(e.to_string()))?;
                let receipt = publisher
                    .publish(topic, SNAPSHOT_KEY, Bytes::from(bytes))
                    .await
                    .map_err(|e| save(e.to_string()))?;
                receipt.delivered().await.map_err(|e| save(e.to_string()))
            }
        }
    }
}

/// The rules of `api` then `file` over the defaults. Errors name an API rule `rule <id>.field`
/// (the one being made: `rule.field`) and a file rule `alerts.rules[i].field`.
fn combine(
    thresholds: &Thresholds,
    api: &[RuleSpec],
    file: &[RuleSpec],
    making: Option<&str>,
) -> Result<RuleSet, RuleError> {
    let all: Vec<RuleSpec> = api.iter().chain(file).cloned().collect();
    let name = |i: usize| match api.get(i) {
        Some(s) if Some(rule_id(s).as_str()) == making => "rule".to_string(),
        Some(s) => format!("rule {}", rule_id(s)),
        None => format!("alerts.rules[{}]", i - api.len()),
    };
    RuleSet::build_named(thresholds, &all, &name)
}

/// The path of `DATA_DIR/rules.json` and the API rules it holds, when history is on; a file
/// that cannot be read as rules is set aside as `rules.json.bad` (logged) and counts as none.
pub fn kept_in_data_dir(config: &Config) -> Result<Option<(PathBuf, Vec<RuleSpec>)>, String> {
    let dir = &config.history.data_dir;
    // Not a directory: opening history refuses it next, with the configuration error.
    if !config.history.enabled || (dir.exists() && !dir.is_dir()) {
        return Ok(None);
    }
    let path = dir.join("rules.json");
    let api = match read_specs(&path) {
        Ok(api) => api,
        Err(e) => {
            let aside = path.with_extension("json.bad");
            std::fs::rename(&path, &aside).map_err(|r| {
                format!("cannot read the API's rules ({e}) nor set them aside: {r}")
            })?;
            tracing::warn!(error = %e, kept = %aside.display(), "API rules unreadable: starting without them");
            Vec::new()
        }
    };
    Ok(Some((path, api)))
}

fn read_specs(path: &Path) -> Result<Vec<RuleSpec>, String> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| format!("{}: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("json.tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
