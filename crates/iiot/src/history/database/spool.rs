//! The spool: readings the database could not take, kept on disk until it does
//! (`DATA_DIR/history-db-spool/`), so a process killed during an outage loses none of the
//! readings whose input it already committed.
//!
//! - Segment files `{id:016}.spool`, appended to in order; each holds checksummed frames (the
//!   write-ahead log's format, [`crate::history::wal`]), one frame per batch that could not be
//!   written: `[rows u32]` then per reading `[id length u32][device id][seq i64][row]` (the row
//!   as the write-ahead log keeps it), little-endian. A new segment is started past
//!   [`SpoolConfig::segment_bytes`], so written readings are deleted a whole file at a time.
//! - Appends reach the page cache before [`Spool::append`] returns (a SIGKILL keeps them);
//!   [`Spool::sync`] (the database's retry task, every second) makes them durable against a
//!   power loss, like `HISTORY_FLUSH_INTERVAL` for the embedded store.
//! - Replay reads the oldest segment into memory (at most one segment's readings) and hands
//!   it out in batches; a segment is deleted once every batch of it was written. A replay cut
//!   short by a crash writes some readings again: the database keeps each once.
//! - Past [`SpoolConfig::max_bytes`] the oldest segments are deleted and their readings
//!   counted as lost.
//! - At start the segments a previous process left are found again; a torn or corrupt frame
//!   (a crash or power loss mid-append) ends its segment's readable part: the bytes after it
//!   are counted as skipped and the rest replayed.
//! - `LOCK` (`flock`): one process per spool directory.

use std::collections::VecDeque;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::DbRow;
use crate::history::OpenError;
use crate::history::row::{Row, WAL_ROW_BYTES};
use crate::history::wal::{self, Log};

/// The spool's directory under the data directory.
pub const SPOOL_DIR: &str = "history-db-spool";
/// Largest segment file (smaller when the bound is small: an eighth of it).
const MAX_SEGMENT_BYTES: u64 = 4 * 1024 * 1024;
/// Smallest segment file.
const MIN_SEGMENT_BYTES: u64 = 4 * 1024;
/// Bytes a frame adds to its payload (length and checksum).
const FRAME_HEAD: u64 = 8;

/// Where the spool is and how large it may grow.
#[derive(Debug, Clone)]
pub struct SpoolConfig {
    /// Its directory (created if missing).
    pub dir: PathBuf,
    /// Bytes of segment files beyond which the oldest are dropped
    /// (`HISTORY_DATABASE_SPOOL_MAX_BYTES`).
    pub max_bytes: u64,
}

impl SpoolConfig {
    /// The spool of `config` (`DATA_DIR/history-db-spool`), or `None` when
    /// `HISTORY_DATABASE_SPOOL_MAX_BYTES` is 0.
    pub fn from_config(config: &crate::config::Config) -> Option<SpoolConfig> {
        let h = &config.history;
        (h.database_spool_max_bytes > 0).then(|| SpoolConfig {
            dir: h.data_dir.join(SPOOL_DIR),
            max_bytes: h.database_spool_max_bytes,
        })
    }

    /// Target size of one segment file.
    pub fn segment_bytes(&self) -> u64 {
        (self.max_bytes / 8).clamp(MIN_SEGMENT_BYTES, MAX_SEGMENT_BYTES)
    }
}

/// What opening found of a previous process's spool.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Found {
    /// Readings waiting.
    pub rows: u64,
    /// Bytes of segment files.
    pub bytes: u64,
    /// Bytes after a torn or corrupt frame, skipped.
    pub skipped_bytes: u64,
}

/// What the spool holds, for the gauges.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Level {
    /// Readings waiting (those being written now included).
    pub rows: u64,
    /// Bytes of segment files.
    pub bytes: u64,
}

/// A batch handed out for writing: give it back to [`Spool::done`].
#[derive(Debug)]
pub struct Batch {
    segment: u64,
    /// The readings, oldest first.
    pub rows: Vec<DbRow>,
}

#[derive(Debug)]
struct Segment {
    id: u64,
    bytes: u64,
    rows: u64,
}

/// The oldest segment's readings, read for replay.
#[derive(Debug)]
struct Loaded {
    id: u64,
    rows: Vec<DbRow>,
    /// Written already.
    done: usize,
    /// Handed out, not yet reported.
    in_flight: usize,
}

#[derive(Debug)]
struct Inner {
    /// Oldest first; the newest is the one `active` appends to, while that is open.
    segments: VecDeque<Segment>,
    active: Option<Log>,
    next_id: u64,
    loaded: Option<Loaded>,
    rows: u64,
    bytes: u64,
    /// Appended since the last sync.
    unsynced: bool,
    /// A segment file made or deleted since the last sync of the directory.
    dir_changed: bool,
}

/// The on-disk spool of readings waiting for the database.
#[derive(Debug)]
pub struct Spool {
    cfg: SpoolConfig,
    inner: Mutex<Inner>,
    /// Held for the life of the spool: the directory's lock.
    _lock: File,
}

fn unusable(path: &Path, reason: impl std::fmt::Display) -> OpenError {
    OpenError::Unusable {
        path: path.display().to_string(),
        reason: reason.to_string(),
    }
}

fn segment_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{id:016}.spool"))
}

/// The frame payload of `rows`.
pub fn encode(rows: &[DbRow]) -> Vec<u8> {
    let per_row: usize = 4 + 8 + WAL_ROW_BYTES;
    let ids: usize = rows.iter().map(|r| r.device_id.len()).sum();
    let mut out = Vec::with_capacity(4 + rows.len() * per_row + ids);
    // A batch is bounded far below u32::MAX readings (the processors' batches).
    out.extend_from_slice(&(rows.len() as u32).to_le_bytes());
    for r in rows {
        out.extend_from_slice(&(r.device_id.len() as u32).to_le_bytes());
        out.extend_from_slice(r.device_id.as_bytes());
        out.extend_from_slice(&r.seq.to_le_bytes());
        r.row.write_to(&mut out);
    }
    out
}

/// The readings of a frame payload; `None` if it does not parse (a checksum collision or a
/// foreign file).
fn decode(payload: &[u8]) -> Option<Vec<DbRow>> {
    let u32_at = |at: usize| -> Option<u32> {
        Some(u32::from_le_bytes(
            payload.get(at..at + 4)?.try_into().ok()?,
        ))
    };
    let n = u32_at(0)? as usize;
    // Every reading takes at least this much: a count beyond it is corruption.
    if n > payload.len() / (4 + 8 + WAL_ROW_BYTES) {
        return None;
    }
    let mut rows = Vec::with_capacity(n);
    let mut at = 4;
    for _ in 0..n {
        let len = u32_at(at)? as usize;
        at += 4;
        let id = std::str::from_utf8(payload.get(at..at.checked_add(len)?)?).ok()?;
        at += len;
        let seq = i64::from_le_bytes(payload.get(at..at + 8)?.try_into().ok()?);
        at += 8;
        let row = Row::read_from(payload.get(at..)?)?;
        at += WAL_ROW_BYTES;
        rows.push(DbRow {
            device_id: id.to_owned(),
            seq,
            row,
        });
    }
    (at == payload.len()).then_some(rows)
}

/// Readings a frame payload claims to hold.
fn count(payload: &[u8]) -> u64 {
    payload.get(..4).map_or(0, |b| {
        u64::from(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    })
}

impl Spool {
    /// Opens (creating it if missing) and locks `cfg.dir`, and finds the segments a previous
    /// process left. Blocking: call it off the async threads (it reads every segment once).
    pub fn open(cfg: SpoolConfig) -> Result<(Spool, Found), OpenError> {
        let dir = cfg.dir.clone();
        if dir.exists() && !dir.is_dir() {
            return Err(unusable(&dir, "not a directory"));
        }
        std::fs::create_dir_all(&dir).map_err(|e| unusable(&dir, e))?;
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join("LOCK"))
            .map_err(|e| unusable(&dir, format!("not writable ({e})")))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(OpenError::Locked(dir.display().to_string()));
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(unusable(&dir, e)),
        }
        let mut ids = Vec::new();
        for entry in std::fs::read_dir(&dir).map_err(|e| unusable(&dir, e))? {
            let entry = entry.map_err(|e| unusable(&dir, e))?;
            let name = entry.file_name();
            let Some(id) = name
                .to_str()
                .and_then(|n| n.strip_suffix(".spool"))
                .and_then(|n| n.parse::<u64>().ok())
            else {
                continue;
            };
            ids.push(id);
        }
        ids.sort_unstable();
        let mut found = Found::default();
        let mut segments = VecDeque::new();
        for &id in &ids {
            let path = segment_path(&dir, id);
            let read = wal::read(&path).map_err(|e| unusable(&path, e))?;
            let rows: u64 = read.frames.iter().map(|f| count(f)).sum();
            let bytes = std::fs::metadata(&path)
                .map_err(|e| unusable(&path, e))?
                .len();
            if read.skipped > 0 {
                tracing::warn!(
                    file = %path.display(),
                    skipped_bytes = read.skipped,
                    "history database spool: a torn or corrupt record; the bytes after it are skipped"
                );
                found.skipped_bytes += read.skipped;
            }
            if rows == 0 {
                std::fs::remove_file(&path).map_err(|e| unusable(&path, e))?;
                continue;
            }
            found.rows += rows;
            found.bytes += bytes;
            segments.push_back(Segment { id, bytes, rows });
        }
        let next_id = ids.last().map_or(0, |id| id + 1);
        let spool = Spool {
            cfg,
            inner: Mutex::new(Inner {
                segments,
                active: None,
                next_id,
                loaded: None,
                rows: found.rows,
                bytes: found.bytes,
                unsynced: false,
                dir_changed: false,
            }),
            _lock: lock,
        };
        Ok((spool, found))
    }

    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The settings.
    pub fn config(&self) -> &SpoolConfig {
        &self.cfg
    }

    /// What it holds now.
    pub fn level(&self) -> Level {
        let i = self.inner();
        Level {
            rows: i.rows,
            bytes: i.bytes,
        }
    }

    /// Appends `payload` ([`encode`]d, `rows` readings) behind what is waiting; the oldest
    /// segments are dropped first as far as the bound needs. Returns the readings lost to the
    /// bound (this batch's own when it alone is larger than the bound). Blocking (a write to the
    /// page cache; no sync). On an error nothing of the batch is kept.
    pub fn append(&self, payload: &[u8], rows: u64) -> io::Result<u64> {
        let frame = FRAME_HEAD + payload.len() as u64;
        let mut i = self.inner();
        let mut lost = 0;
        while i.bytes + frame > self.cfg.max_bytes && !i.segments.is_empty() {
            lost += self.drop_oldest(&mut i);
        }
        if frame > self.cfg.max_bytes {
            return Ok(lost + rows);
        }
        let roll = i
            .active
            .as_ref()
            .is_some_and(|log| log.len() > 0 && log.len() + frame > self.cfg.segment_bytes());
        if roll {
            i.active = None;
        }
        if i.active.is_none() {
            let id = i.next_id;
            let (log, _) = Log::open(&segment_path(&self.cfg.dir, id))?;
            i.next_id += 1;
            i.active = Some(log);
            i.segments.push_back(Segment {
                id,
                bytes: 0,
                rows: 0,
            });
            i.dir_changed = true;
        }
        let Some(log) = i.active.as_mut() else {
            unreachable!("opened above")
        };
        let before = log.len();
        log.append(payload)?;
        let grew = log.len() - before;
        if let Some(seg) = i.segments.back_mut() {
            seg.bytes += grew;
            seg.rows += rows;
        }
        i.bytes += grew;
        i.rows += rows;
        i.unsynced = true;
        Ok(lost)
    }

    /// Deletes the oldest segment; returns its readings not written (nor being written).
    fn drop_oldest(&self, i: &mut Inner) -> u64 {
        let Some(seg) = i.segments.pop_front() else {
            return 0;
        };
        if i.segments.is_empty() {
            // It was the one appended to.
            i.active = None;
        }
        let left = match i.loaded.take_if(|l| l.id == seg.id) {
            Some(l) => {
                let waiting = (l.rows.len() - l.done) as u64;
                i.rows -= waiting;
                // The batch being written counts itself if it fails ([`Spool::done`]).
                waiting - l.in_flight as u64
            }
            None => {
                i.rows -= seg.rows;
                seg.rows
            }
        };
        i.bytes -= seg.bytes;
        self.remove(seg.id);
        i.dir_changed = true;
        left
    }

    fn remove(&self, id: u64) {
        let path = segment_path(&self.cfg.dir, id);
        if let Err(e) = std::fs::remove_file(&path)
            && e.kind() != io::ErrorKind::NotFound
        {
            tracing::warn!(file = %path.display(), error = %e, "history database spool: cannot delete a written segment");
        }
    }

    /// The next readings to write, oldest first, at most `max`; `None` when nothing waits.
    /// Reads the oldest segment when none is read yet (blocking). A segment that cannot be
    /// read is set aside (renamed `….spool.bad`) and its readings returned as lost in
    /// `Err`.
    pub fn next(&self, max: usize) -> Result<Option<Batch>, (String, u64)> {
        let mut i = self.inner();
        if i.loaded.is_none() {
            let Some(seg) = i.segments.front() else {
                return Ok(None);
            };
            let (id, rows) = (seg.id, seg.rows);
            if i.segments.len() == 1 && i.active.is_some() {
                // The one appended to: appends go to a new segment from now on.
                i.active = None;
            }
            let path = segment_path(&self.cfg.dir, id);
            let read = match wal::read(&path) {
                Ok(read) => read,
                Err(e) => {
                    let why = format!("reading {}: {e}", path.display());
                    let _ = std::fs::rename(&path, path.with_extension("spool.bad"));
                    if let Some(seg) = i.segments.pop_front() {
                        i.rows -= seg.rows;
                        i.bytes -= seg.bytes;
                    }
                    return Err((why, rows));
                }
            };
            let mut all = Vec::with_capacity(rows as usize);
            let mut unreadable = 0;
            for frame in &read.frames {
                match decode(frame) {
                    Some(rows) => all.extend(rows),
                    None => unreadable += count(frame),
                }
            }
            if unreadable > 0 {
                tracing::warn!(file = %path.display(), readings = unreadable, "history database spool: records that do not parse are skipped (lost)");
            }
            // What the index expected and what was read agree unless the file was damaged
            // since it was opened: the gauge follows what was read.
            i.rows = i.rows - rows + all.len() as u64;
            if let Some(seg) = i.segments.front_mut() {
                seg.rows = all.len() as u64;
            }
            i.loaded = Some(Loaded {
                id,
                rows: all,
                done: 0,
                in_flight: 0,
            });
            if unreadable > 0 {
                return Err(("records that do not parse".to_owned(), unreadable));
            }
        }
        let Some(l) = i.loaded.as_mut() else {
            return Ok(None);
        };
        let end = (l.done + max).min(l.rows.len());
        l.in_flight = end - l.done;
        let batch = Batch {
            segment: l.id,
            rows: l.rows[l.done..end].to_vec(),
        };
        if batch.rows.is_empty() {
            // An empty segment (everything in it unreadable): done with it.
            drop(batch);
            self.finish_loaded(&mut i);
            return Ok(None);
        }
        Ok(Some(batch))
    }

    fn finish_loaded(&self, i: &mut Inner) {
        if let Some(l) = i.loaded.take() {
            if i.segments.front().is_some_and(|s| s.id == l.id)
                && let Some(seg) = i.segments.pop_front()
            {
                i.bytes -= seg.bytes;
                if i.segments.is_empty() {
                    i.active = None;
                }
            }
            self.remove(l.id);
            i.dir_changed = true;
        }
    }

    /// Reports `batch` written (`ok`) or not. Written: its readings leave the spool, and a
    /// segment written to its end is deleted. Returns readings lost: those of a batch not
    /// written whose segment the bound dropped meanwhile.
    pub fn done(&self, batch: Batch, ok: bool) -> u64 {
        let mut i = self.inner();
        let n = batch.rows.len();
        let Some(l) = i.loaded.as_mut().filter(|l| l.id == batch.segment) else {
            return if ok { 0 } else { n as u64 };
        };
        l.in_flight = 0;
        if ok {
            l.done += n;
            let finished = l.done >= l.rows.len();
            i.rows -= n as u64;
            if finished {
                self.finish_loaded(&mut i);
            }
        }
        0
    }

    /// Makes what was appended durable (data and the directory's entries). Blocking.
    pub fn sync(&self) -> io::Result<()> {
        let (file, dir) = {
            let mut i = self.inner();
            let file = match (&i.active, i.unsynced) {
                (Some(log), true) => Some(log.sync_handle()?),
                _ => None,
            };
            i.unsynced = false;
            (file, std::mem::take(&mut i.dir_changed))
        };
        if let Some(file) = file {
            file.sync_data()?;
        }
        if dir {
            File::open(&self.cfg.dir)?.sync_all()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(device: &str, seq: i64) -> DbRow {
        DbRow {
            device_id: device.to_owned(),
            seq,
            row: Row {
                t: 1_700_000_000_000 + seq,
                sensors: [2561, 4512, 101_325, -3],
                battery: 87,
                signal: -67,
                statuses: 0b01,
                switch_on: true,
            },
        }
    }

    fn rows(device: &str, seqs: std::ops::Range<i64>) -> Vec<DbRow> {
        seqs.map(|s| row(device, s)).collect()
    }

    fn cfg(dir: &Path, max_bytes: u64) -> SpoolConfig {
        SpoolConfig {
            dir: dir.to_owned(),
            max_bytes,
        }
    }

    fn drain(spool: &Spool) -> Vec<DbRow> {
        let mut out = Vec::new();
        while let Some(b) = spool.next(100).expect("next") {
            out.extend(b.rows.iter().cloned());
            spool.done(b, true);
        }
        out
    }

    #[test]
    fn a_batch_encodes_and_decodes_to_itself() {
        let rs = rows("dev-ä", 0..3);
        assert_eq!(decode(&encode(&rs)), Some(rs.clone()));
        let e = encode(&rs);
        assert_eq!(decode(&e[..e.len() - 1]), None);
        assert_eq!(count(&e), 3);
    }

    #[test]
    fn readings_come_back_in_order_after_reopening_and_written_segments_are_deleted() {
        let dir = tempfile::tempdir().expect("dir");
        let c = cfg(dir.path(), 1 << 20);
        {
            let (spool, found) = Spool::open(c.clone()).expect("open");
            assert_eq!(found, Found::default());
            for k in 0..50 {
                let b = rows("a", k * 10..k * 10 + 10);
                assert_eq!(spool.append(&encode(&b), 10).expect("append"), 0);
            }
            spool.sync().expect("sync");
            assert_eq!(spool.level().rows, 500);
            // Dropped without writing anything: a kill.
        }
        let (spool, found) = Spool::open(c.clone()).expect("open again");
        assert_eq!(found.rows, 500);
        assert!(found.bytes > 0);
        // A failed write gives the batch back: the same readings come again.
        let b = spool.next(7).expect("next").expect("a batch");
        let first = b.rows.clone();
        assert_eq!(spool.done(b, false), 0);
        let again = spool.next(7).expect("next").expect("a batch");
        assert_eq!(again.rows, first);
        spool.done(again, true);
        let rest = drain(&spool);
        let seqs: Vec<i64> = first.iter().chain(&rest).map(|r| r.seq).collect();
        assert_eq!(seqs, (0..500).collect::<Vec<_>>());
        assert_eq!(spool.level(), Level::default());
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .expect("list")
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().ends_with(".spool"))
            .collect();
        assert!(left.is_empty(), "written segments deleted: {left:?}");
    }

    #[test]
    fn past_the_bound_the_oldest_segments_are_dropped_and_counted() {
        let dir = tempfile::tempdir().expect("dir");
        let c = cfg(dir.path(), 64 * 1024);
        let (spool, _) = Spool::open(c.clone()).expect("open");
        let mut lost = 0;
        for k in 0..200 {
            lost += spool
                .append(&encode(&rows("b", k * 20..k * 20 + 20)), 20)
                .expect("append");
        }
        let level = spool.level();
        assert!(level.bytes <= c.max_bytes, "{level:?}");
        assert!(lost > 0);
        assert_eq!(level.rows + lost, 4_000, "every reading kept or counted");
        let kept = drain(&spool);
        assert_eq!(kept.len() as u64, level.rows);
        // The newest are the ones kept, in order.
        assert_eq!(kept.last().map(|r| r.seq), Some(3_999));
        assert!(kept.windows(2).all(|w| w[0].seq + 1 == w[1].seq));
        // A batch larger than the bound alone is lost whole.
        let huge = rows("c", 0..2_000);
        assert_eq!(spool.append(&encode(&huge), 2_000).expect("append"), 2_000);
    }

    #[test]
    fn a_torn_last_record_is_skipped_and_the_rest_replayed() {
        let dir = tempfile::tempdir().expect("dir");
        let c = cfg(dir.path(), 1 << 20);
        {
            let (spool, _) = Spool::open(c.clone()).expect("open");
            spool.append(&encode(&rows("t", 0..5)), 5).expect("append");
            spool.append(&encode(&rows("t", 5..9)), 4).expect("append");
        }
        let path = segment_path(dir.path(), 0);
        let len = std::fs::metadata(&path).expect("meta").len();
        // A crash in the middle of the second record.
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .expect("open");
        f.set_len(len - 10).expect("truncate");
        drop(f);
        let (spool, found) = Spool::open(c).expect("open again");
        assert_eq!(found.rows, 5);
        assert!(found.skipped_bytes > 0);
        let seqs: Vec<i64> = drain(&spool).iter().map(|r| r.seq).collect();
        assert_eq!(seqs, vec![0, 1, 2, 3, 4]);
        // And it appends on after that.
        spool.append(&encode(&rows("t", 9..10)), 1).expect("append");
        assert_eq!(drain(&spool).len(), 1);
    }

    #[test]
    fn a_second_process_on_the_directory_is_refused() {
        let dir = tempfile::tempdir().expect("dir");
        let (_spool, _) = Spool::open(cfg(dir.path(), 1 << 20)).expect("open");
        assert!(matches!(
            Spool::open(cfg(dir.path(), 1 << 20)),
            Err(OpenError::Locked(_))
        ));
    }
}
