//! The rule book: the alert rules of a process from their three places — the defaults, the
//! rules made over `/api/rules` (kept in `DATA_DIR/rules.json` when history is on), and the
//! config file's `[[alerts.rules]]` — combined into the [`RuleSet`] the processors run, which
//! is published on a watch channel at every change.
//!
//! The file wins: its specs come after the API's (see [`super::compose`]), a rule the file
//! defines cannot be changed or removed over the API, and a file reload replaces only the
//! file's part. Every change is validated on the whole combination before it is kept: what is
//! refused changes nothing.
//!
//! Where the API's rules are kept: in memory, in `DATA_DIR/rules.json` (one process: `iiot run`
//! on the bus), or on Kafka in the compacted rules topic (`KAFKA_TOPIC_RULES`) as whole
//! snapshots under one key. On Kafka every processor and serve follows that topic from its
//! beginning ([`follow`]): a change made through any `serve` reaches every processor, and a
//! processor started later reads the latest snapshot. Concurrent changes through two serves
//! are applied in the topic's order (the later snapshot wins).
//!
//! It does not watch the file ([`crate::config::watch_rules`] calls [`RuleBook::file_changed`])
//! and does not talk to the processors beyond the watch channel.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use iiot_transport::{Message, Publisher, Subscriber};
use serde::Serialize;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::compose::rule_id;
use super::rules::{RuleError, RuleSet, RuleSpec, Thresholds};
use crate::config::Config;

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
    /// The rules could not be written to the data directory or the rules topic (nothing was
    /// changed).
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
}

/// The one key of the rules topic: compaction keeps its latest snapshot.
const SNAPSHOT_KEY: &[u8] = b"api-rules";

struct Parts {
    thresholds: Thresholds,
    file: Vec<RuleSpec>,
    api: Vec<RuleSpec>,
}

/// The rules of a process; see the module documentation.
pub struct RuleBook {
    parts: Mutex<Parts>,
    tx: watch::Sender<Arc<RuleSet>>,
    keep: Keep,
    /// One change at a time (a change waits for its save, outside the parts' lock).
    writer: tokio::sync::Mutex<()>,
}

impl RuleBook {
    /// The rules of `config` (defaults and the file), none from the API, in memory only.
    pub fn new(config: &Config) -> RuleBook {
        RuleBook {
            parts: Mutex::new(Parts {
                thresholds: config.thresholds,
                file: config.rule_specs.clone(),
                api: Vec::new(),
            }),
            tx: watch::channel(Arc::new(config.rules.clone())).0,
            keep: Keep::Memory,
            writer: tokio::sync::Mutex::new(()),
        }
    }

    /// As [`RuleBook::new`], with the API's rules kept in the rules topic `topic` (Kafka) via
    /// `publisher`; [`follow`] brings in what is there and what others change.
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
        let dir = &config.history.data_dir;
        // Not a directory: opening history refuses it next, with the configuration error.
        if !config.history.enabled || (dir.exists() && !dir.is_dir()) {
            return Ok(book);
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
        book.keep = Keep::File(path);
        if !api.is_empty() {
            let count = api.len();
            book.lock().api = api;
            book.publish();
            tracing::info!(count, "alert rules made over the API read back");
        }
        Ok(book)
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
        let _one = self.writer.lock().await;
        let (api, rules) = {
            let parts = self.lock();
            if parts.file.iter().any(|s| rule_id(s) == id) {
                return Err(RuleBookError::FromFile(id));
            }
            let mut api = parts.api.clone();
            match api.iter().position(|s| rule_id(s) == id) {
                Some(_) if !replace => return Err(RuleBookError::Exists(id)),
                Some(p) => api[p] = spec.clone(),
                None if api.len() >= MAX_API_RULES => return Err(RuleBookError::Full),
                None => api.push(spec.clone()),
            }
            let rules = combine(&parts.thresholds, &api, &parts.file, Some(&id))
                .map_err(RuleBookError::Invalid)?;
            (api, rules)
        };
        self.save(&api).await?;
        self.lock().api = api;
        self.tx.send_replace(Arc::new(rules));
        Ok(RuleView {
            id,
            source: RuleSource::Api,
            rule: spec,
        })
    }

    /// Removes the API rule `id` (a default or file rule it overrode applies again).
    pub async fn delete(&self, id: &str) -> Result<(), RuleBookError> {
        let _one = self.writer.lock().await;
        let (api, rules) = {
            let parts = self.lock();
            if parts.file.iter().any(|s| rule_id(s) == id) {
                return Err(RuleBookError::FromFile(id.to_string()));
            }
            let mut api = parts.api.clone();
            let before = api.len();
            api.retain(|s| rule_id(s) != id);
            if api.len() == before {
                return Err(RuleBookError::Unknown(id.to_string()));
            }
            // Removing can break a scoped API rule that inherited from the removed one.
            let rules = combine(&parts.thresholds, &api, &parts.file, None)
                .map_err(RuleBookError::Invalid)?;
            (api, rules)
        };
        self.save(&api).await?;
        self.lock().api = api;
        self.tx.send_replace(Arc::new(rules));
        Ok(())
    }

    /// The API's rules as read from the rules topic (a snapshot): they replace the API's part.
    /// Returns whether the rules in force changed.
    pub fn set_api(&self, api: Vec<RuleSpec>) -> bool {
        self.lock().api = api;
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
            Keep::Memory => Ok(()),
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

/// Applies every snapshot read from `subscriber` (the rules topic, from its beginning) to
/// `book` until `stop`; unreadable messages are skipped, logged.
pub async fn follow(
    book: Arc<RuleBook>,
    mut subscriber: Box<dyn Subscriber>,
    stop: CancellationToken,
) {
    let mut batch: Vec<Message> = Vec::new();
    loop {
        batch.clear();
        let received = tokio::select! {
            _ = stop.cancelled() => return,
            r = subscriber.recv_batch(&mut batch, 64) => r,
        };
        match received {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %e, "reading the rules topic failed");
                return;
            }
        }
        // Only the newest snapshot of a batch matters.
        let newest = batch.iter().rev().find_map(|m| {
            match serde_json::from_slice::<Vec<RuleSpec>>(&m.payload) {
                Ok(api) => Some(api),
                Err(e) => {
                    tracing::warn!(offset = m.offset, error = %e, "unreadable rules snapshot skipped");
                    None
                }
            }
        });
        if let Some(api) = newest {
            let count = api.len();
            if book.set_api(api) {
                tracing::info!(
                    api_rules = count,
                    "alert rules changed over the API applied"
                );
            }
        }
        let _ = subscriber.commit_batch(&batch);
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
mod tests {
    use super::*;
    use crate::alerts::ScopeSpec;

    fn config(dir: &Path) -> Config {
        let mut config = Config::default();
        config.history.enabled = true;
        config.history.data_dir = dir.to_path_buf();
        config
    }

    fn scoped(value: f64) -> RuleSpec {
        RuleSpec {
            alert_type: "temperature_high".into(),
            value: Some(value),
            scope: Some(ScopeSpec {
                building: Some("B".into()),
                ..ScopeSpec::default()
            }),
            ..RuleSpec::default()
        }
    }

    #[tokio::test]
    async fn api_rules_are_read_back_and_a_refused_change_changes_nothing() {
        let dir = tempfile::tempdir().expect("dir");
        let book = RuleBook::persisted(&config(dir.path())).expect("book");
        let rx = book.sender().subscribe();
        book.put(None, scoped(60.0), false).await.expect("valid");
        assert!(rx.has_changed().expect("open"), "published");
        let refused = book
            .put(
                Some("temperature_high@building=B"),
                RuleSpec {
                    clear: Some(65.0),
                    ..scoped(60.0)
                },
                true,
            )
            .await;
        assert!(matches!(refused, Err(RuleBookError::Invalid(e)) if e.key == "rule.clear"));

        let again = RuleBook::persisted(&config(dir.path())).expect("book");
        let ids: Vec<String> = again
            .list()
            .into_iter()
            .filter(|v| v.source == RuleSource::Api)
            .map(|v| v.id)
            .collect();
        assert_eq!(ids, ["temperature_high@building=B"]);
        assert_eq!(again.rules(), book.rules());
    }

    #[tokio::test]
    async fn a_torn_rules_file_is_set_aside_and_the_start_goes_on() {
        let dir = tempfile::tempdir().expect("dir");
        std::fs::write(dir.path().join("rules.json"), b"[{\"alert_type\": \"temp").expect("torn");
        let book = RuleBook::persisted(&config(dir.path())).expect("starts");
        assert!(book.list().iter().all(|v| v.source == RuleSource::Default));
        assert!(dir.path().join("rules.json.bad").exists());
        book.put(None, scoped(60.0), false).await.expect("valid");
        assert!(
            read_specs(&dir.path().join("rules.json"))
                .expect("whole")
                .len()
                == 1
        );
    }
}
