//! The notifier's outbox in one process (`iiot run` with history on): every alert change the
//! processors hand over is written to `DATA_DIR/notify-outbox.log` before it is told, and so
//! is every notification of it that is settled ([`super::ledger`]), then the change itself once
//! all are. A process that is killed leaves the changes it had not told in the file; the next
//! start tells them — only on the channels that had not been told yet — so a restart, even by
//! SIGKILL, neither loses nor repeats a notification. (On Kafka the alerts topic and the
//! delivery log do this; see [`super::group`].)
//!
//! The file is JSON lines: `{"seq":n,"alert":{…}}` (a change), `{"key":"id|event|channel"}` (a
//! notification settled), `{"done":n}` (the change settled). It is rewritten with only what is
//! still open at start-up and whenever it outgrows [`COMPACT_AT`]. A line that cannot be read (a
//! write torn by the kill) is skipped.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use iiot_model::Alert;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use super::Change;
use super::ledger::{Ledger, Pending, Settled, Ticket};
use super::stats::NotifyStats;

/// The outbox is rewritten with only its open changes once it is this large.
pub const COMPACT_AT: u64 = 64 * 1024 * 1024;
/// The file's name in the data directory.
pub const FILE: &str = "notify-outbox.log";

#[derive(Debug, Serialize, Deserialize)]
#[serde(untagged)]
enum Line {
    Change { seq: u64, alert: Alert },
    Key { key: String },
    Done { done: u64 },
}

/// What the file holds that is still to be told: the open changes in order, and the
/// notifications of them already settled.
#[derive(Debug, Default)]
pub struct Backlog {
    /// Open changes by sequence number.
    pub open: BTreeMap<u64, Alert>,
    /// Settled notifications (`alert_id|event|channel`) of the open changes.
    pub keys: Vec<String>,
    /// The next sequence number.
    pub next: u64,
}

/// Reads `path` (missing: empty). A line that cannot be read — torn by a crash mid-append,
/// or damaged (not even UTF-8) — is skipped and counted in a warning; the rest is kept.
pub fn read(path: &Path) -> std::io::Result<Backlog> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Backlog::default()),
        Err(e) => return Err(e),
    };
    let mut backlog = Backlog::default();
    let mut keys: Vec<String> = Vec::new();
    let mut skipped = 0usize;
    for line in bytes.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        match serde_json::from_slice::<Line>(line) {
            Ok(Line::Change { seq, alert }) => {
                backlog.next = backlog.next.max(seq + 1);
                backlog.open.insert(seq, alert);
            }
            Ok(Line::Key { key }) => keys.push(key),
            Ok(Line::Done { done }) => {
                backlog.open.remove(&done);
            }
            Err(_) => skipped += 1,
        }
    }
    if skipped > 0 {
        tracing::warn!(skipped, path = %path.display(), "notification outbox: unreadable lines skipped");
    }
    // Only the keys of changes still open matter.
    let open: std::collections::HashSet<&str> =
        backlog.open.values().map(|a| a.alert_id.as_str()).collect();
    let keys: Vec<String> = keys
        .into_iter()
        .filter(|k| open.contains(k.split('|').next().unwrap_or_default()))
        .collect();
    backlog.keys = keys;
    Ok(backlog)
}

/// Rewrites `path` with `backlog` only (temporary file, then rename).
fn rewrite(path: &Path, backlog: &Backlog) -> std::io::Result<std::fs::File> {
    let tmp = path.with_extension("log.tmp");
    {
        let mut f = std::fs::File::create(&tmp)?;
        let mut text = String::new();
        for (&seq, alert) in &backlog.open {
            let line = Line::Change {
                seq,
                alert: alert.clone(),
            };
            text.push_str(&serde_json::to_string(&line).map_err(std::io::Error::other)?);
            text.push('\n');
        }
        for key in &backlog.keys {
            let line = Line::Key { key: key.clone() };
            text.push_str(&serde_json::to_string(&line).map_err(std::io::Error::other)?);
            text.push('\n');
        }
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    std::fs::OpenOptions::new().append(true).open(path)
}

/// The outbox's writer: owns the file, numbers the changes, hands them on to the dispatcher.
pub(super) struct Outbox {
    path: PathBuf,
    file: std::fs::File,
    written: u64,
    next: u64,
    /// Open changes, for compaction.
    open: BTreeMap<u64, Alert>,
    keys: Vec<(u64, String)>,
    ledger: Arc<Ledger>,
    settled: mpsc::UnboundedReceiver<Settled>,
    intake: mpsc::Sender<Change>,
    stats: Arc<NotifyStats>,
}

impl Outbox {
    /// Opens the outbox in `dir`, compacted; returns it and the changes left open by the last
    /// run (to tell before anything new).
    pub(super) fn open(
        dir: &Path,
        intake: mpsc::Sender<Change>,
        stats: Arc<NotifyStats>,
    ) -> std::io::Result<(Outbox, Vec<(u64, Alert)>)> {
        let path = dir.join(FILE);
        let backlog = read(&path)?;
        let file = rewrite(&path, &backlog)?;
        let written = file.metadata().map(|m| m.len()).unwrap_or(0);
        let (tx, settled) = mpsc::unbounded_channel();
        let ledger = Ledger::new(tx);
        ledger.load(0, backlog.keys.iter().cloned());
        let left: Vec<(u64, Alert)> = backlog.open.iter().map(|(s, a)| (*s, a.clone())).collect();
        if !left.is_empty() {
            tracing::info!(
                changes = left.len(),
                "alert changes not yet notified when the last run stopped: notifying them now"
            );
        }
        let keys = Vec::new();
        Ok((
            Outbox {
                path,
                file,
                written,
                next: backlog.next,
                open: backlog.open,
                keys,
                ledger,
                settled,
                intake,
                stats,
            },
            left,
        ))
    }

    /// Runs until `changes` closes and every settled notice is written.
    pub(super) async fn run(
        mut self,
        left: Vec<(u64, Alert)>,
        mut changes: mpsc::Receiver<Change>,
        finish: tokio_util::sync::CancellationToken,
    ) {
        for (seq, alert) in left {
            self.stats
                .intake
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            self.hand_on(seq, alert).await;
        }
        loop {
            tokio::select! {
                biased;
                Some(s) = self.settled.recv() => self.on_settled(s),
                change = changes.recv() => match change {
                    Some(change) => {
                        let alert = change.alert.clone();
                        let seq = self.next;
                        self.next += 1;
                        // Kept before it is appended: a compaction on the way keeps it too.
                        self.open.insert(seq, alert.clone());
                        self.append(&Line::Change { seq, alert: alert.clone() });
                        self.hand_on(seq, alert).await;
                    }
                    None => break,
                },
                _ = finish.cancelled() => break,
            }
        }
        // What settles while the notifier stops is still written, and what is still queued
        // is kept for the next start (not told now: the channels have stopped).
        while let Ok(s) = self.settled.try_recv() {
            self.on_settled(s);
        }
        changes.close();
        while let Ok(change) = changes.try_recv() {
            let seq = self.next;
            self.next += 1;
            self.append(&Line::Change {
                seq,
                alert: change.alert.clone(),
            });
        }
    }

    /// Tells the dispatcher of change `seq` (waiting while its intake is full: this task is
    /// not the pipeline). It is counted in the intake gauge already.
    async fn hand_on(&mut self, seq: u64, alert: Alert) {
        let guard = Ticket::guard(self.ledger.clone(), Pending::new(0, seq as i64));
        let change = Change {
            alert,
            guard: Some(guard),
        };
        if self.intake.send(change).await.is_err() {
            self.stats
                .intake
                .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        }
    }

    fn on_settled(&mut self, settled: Settled) {
        let pending = match settled {
            Settled::Record { key, pending, .. } => {
                self.keys.push((pending.offset as u64, key.clone()));
                self.append(&Line::Key { key });
                pending
            }
            Settled::Release(pending) => pending,
        };
        if pending.release() && pending.settled() {
            let seq = pending.offset as u64;
            self.append(&Line::Done { done: seq });
            self.open.remove(&seq);
            self.keys.retain(|(s, _)| *s != seq);
        }
    }

    fn append(&mut self, line: &Line) {
        let Ok(mut text) = serde_json::to_string(line) else {
            return;
        };
        text.push('\n');
        // One write per line: a kill leaves at most the last line torn (skipped when read).
        if let Err(e) = self.file.write_all(text.as_bytes()) {
            tracing::warn!(file = %self.path.display(), error = %e, "could not write the notifier's outbox");
            return;
        }
        self.written += text.len() as u64;
        if self.written >= COMPACT_AT {
            self.compact();
        }
    }

    fn compact(&mut self) {
        let backlog = Backlog {
            open: self.open.clone(),
            keys: self.keys.iter().map(|(_, k)| k.clone()).collect(),
            next: self.next,
        };
        match rewrite(&self.path, &backlog) {
            Ok(file) => {
                self.written = file.metadata().map(|m| m.len()).unwrap_or(0);
                self.file = file;
            }
            Err(e) => {
                tracing::warn!(file = %self.path.display(), error = %e, "could not compact the notifier's outbox");
                // Try again only after as much again.
                self.written = 0;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::alert;

    #[test]
    fn what_was_not_done_is_read_back_with_the_channels_already_told() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join(FILE);
        let a = alert("device_001", "temperature_high");
        let b = alert("device_002", "temperature_high");
        let lines = [
            serde_json::to_string(&Line::Change {
                seq: 0,
                alert: a.clone(),
            })
            .expect("json"),
            serde_json::to_string(&Line::Change {
                seq: 1,
                alert: b.clone(),
            })
            .expect("json"),
            serde_json::to_string(&Line::Key {
                key: format!("{}|raised|ops", a.alert_id),
            })
            .expect("json"),
            serde_json::to_string(&Line::Done { done: 0 }).expect("json"),
            serde_json::to_string(&Line::Key {
                key: format!("{}|raised|ops", b.alert_id),
            })
            .expect("json"),
            "{\"seq\":2,\"alert\":{\"alert_id\"".to_string(),
        ];
        std::fs::write(&path, lines.join("\n")).expect("write");
        let backlog = read(&path).expect("read");
        assert_eq!(backlog.open.keys().copied().collect::<Vec<_>>(), [1]);
        assert_eq!(backlog.keys, [format!("{}|raised|ops", b.alert_id)]);
        assert_eq!(backlog.next, 2, "the torn line is skipped");
        let file = rewrite(&path, &backlog).expect("compact");
        drop(file);
        let again = read(&path).expect("read again");
        assert_eq!(again.open.len(), 1);
        assert_eq!(again.keys.len(), 1);
    }

    #[test]
    fn a_damaged_line_that_is_not_utf8_loses_only_itself() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join(FILE);
        let a = alert("device_001", "temperature_high");
        let b = alert("device_002", "temperature_high");
        let mut bytes = Vec::new();
        for (seq, alert) in [(0, &a), (1, &b)] {
            let line = Line::Change {
                seq,
                alert: alert.clone(),
            };
            bytes.extend(serde_json::to_vec(&line).expect("json"));
            bytes.push(b'\n');
            // Bytes that are not UTF-8 between the two.
            bytes.extend([0xff, 0xfe, 0x80, b'\n']);
        }
        std::fs::write(&path, bytes).expect("write");
        let backlog = read(&path).expect("read despite the damage");
        assert_eq!(backlog.open.keys().copied().collect::<Vec<_>>(), [0, 1]);
    }
}
