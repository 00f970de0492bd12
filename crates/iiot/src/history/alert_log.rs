//! The alert log: every alert status change, as JSON in checksummed frames
//! (`alerts/{n:010}.log`).
//!
//! A new file is started every day (or past 8 MB) and begins with the alerts open at that
//! moment, so files older than `HISTORY_ALERT_RETENTION` can be deleted whole without losing
//! an alert that is still open. Reading the files in order and keeping each alert's latest
//! change ([`crate::recovery::fold`]: a resolved alert stays resolved) gives the state to
//! restore.

use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use hashbrown::HashMap;
use iiot_model::{Alert, AlertStatus};

use super::wal::{self, Log};

/// A file is not appended to past this size.
const MAX_FILE_BYTES: u64 = 8 * 1024 * 1024;
/// Nor past this age.
const MAX_FILE_AGE: Duration = Duration::from_secs(86_400);

/// The open alert log.
#[derive(Debug)]
pub(crate) struct AlertLog {
    dir: PathBuf,
    current: Log,
    number: u64,
    started: SystemTime,
    /// The alerts open now (id → latest change as JSON), for the next file's head.
    open: HashMap<String, Vec<u8>>,
}

/// What the alert log held at start-up.
#[derive(Debug, Default)]
pub(crate) struct Replayed {
    /// Every alert's latest change and when it was first raised.
    pub latest: Vec<(Alert, i64)>,
    /// Bytes of torn or corrupt tails skipped.
    pub skipped: u64,
    /// Frames that were not alerts (skipped).
    pub unreadable: usize,
}

fn file_number(path: &Path) -> Option<u64> {
    path.file_name()?
        .to_str()?
        .strip_suffix(".log")?
        .parse()
        .ok()
}

fn files(dir: &Path) -> io::Result<Vec<(u64, PathBuf)>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if let Some(n) = file_number(&path) {
            out.push((n, path));
        }
    }
    out.sort();
    Ok(out)
}

impl AlertLog {
    /// Opens `dir` (created if missing) and reads it back.
    pub(crate) fn open(dir: &Path) -> io::Result<(AlertLog, Replayed)> {
        std::fs::create_dir_all(dir)?;
        let list = files(dir)?;
        let mut latest: HashMap<String, (Alert, i64)> = HashMap::new();
        let mut replayed = Replayed::default();
        let last = list.last().cloned();
        for (n, path) in &list {
            // The newest file is reopened for appending, which cuts a bad tail off; older
            // ones are only read.
            let frames = if Some(*n) == last.as_ref().map(|l| l.0) {
                Log::open(path)?.1
            } else {
                wal::read(path)?
            };
            replayed.skipped += frames.skipped;
            for frame in frames.frames {
                match serde_json::from_slice::<Alert>(&frame) {
                    Ok(alert) => crate::recovery::fold(&mut latest, alert),
                    Err(_) => replayed.unreadable += 1,
                }
            }
        }
        let open: HashMap<String, Vec<u8>> = latest
            .values()
            .filter(|(a, _)| a.status != AlertStatus::Resolved)
            .filter_map(|(a, _)| Some((a.alert_id.clone(), serde_json::to_vec(a).ok()?)))
            .collect();
        let (number, current) = match last {
            Some((n, path)) => (n, Log::open(&path)?.0),
            None => (1, Log::open(&dir.join(format!("{:010}.log", 1)))?.0),
        };
        let started = std::fs::metadata(current.path())
            .and_then(|m| m.created().or_else(|_| m.modified()))
            .unwrap_or_else(|_| SystemTime::now());
        let mut list: Vec<(Alert, i64)> = latest.into_values().collect();
        list.sort_by_key(|(a, _)| a.timestamp);
        replayed.latest = list;
        Ok((
            AlertLog {
                dir: dir.to_owned(),
                current,
                number,
                started,
                open,
            },
            replayed,
        ))
    }

    /// Appends changes (not yet synced).
    pub(crate) fn append(&mut self, changes: &[Vec<u8>]) -> io::Result<()> {
        for json in changes {
            self.current.append(json)?;
            if let Ok(a) = serde_json::from_slice::<Alert>(json) {
                if a.status == AlertStatus::Resolved {
                    self.open.remove(&a.alert_id);
                } else {
                    self.open.insert(a.alert_id, json.clone());
                }
            }
        }
        Ok(())
    }

    /// Makes the appended changes durable.
    pub(crate) fn sync(&mut self) -> io::Result<()> {
        self.current.sync()
    }

    /// Starts a new file when the current one is old or large (headed by the open alerts),
    /// and deletes files last written before `now - retention`.
    pub(crate) fn rotate(&mut self, retention: Duration) -> io::Result<usize> {
        let age = self.started.elapsed().unwrap_or_default();
        if self.current.len() >= MAX_FILE_BYTES || age >= MAX_FILE_AGE {
            let number = self.number + 1;
            let (mut next, _) = Log::open(&self.dir.join(format!("{number:010}.log")))?;
            for json in self.open.values() {
                next.append(json)?;
            }
            next.sync()?;
            self.current = next;
            self.number = number;
            self.started = SystemTime::now();
        }
        let mut deleted = 0;
        let cutoff = SystemTime::now().checked_sub(retention);
        for (n, path) in files(&self.dir)? {
            if n >= self.number {
                continue;
            }
            let written = std::fs::metadata(&path)?.modified()?;
            if cutoff.is_some_and(|c| written < c) {
                std::fs::remove_file(&path)?;
                deleted += 1;
            }
        }
        Ok(deleted)
    }
}
