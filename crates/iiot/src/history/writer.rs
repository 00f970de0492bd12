//! The writer thread: the log every flush interval, seals, merges, retention, the alert log;
//! and what a start does before it (recovery).

use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use iiot_model::Reading;

use super::alert_log::AlertLog;
use super::catalog::{Catalog, Segment, Tier};
use super::pending::{Pending, Sealing};
use super::rollup::{self, Bucket};
use super::row::{Row, WAL_ROW_BYTES};
use super::segment;
use super::wal::{self, Log};
use super::{HistoryConfig, Restored, Shared};

/// How often retention, merges and the alert log's rotation run.
const UPKEEP: Duration = Duration::from_secs(5);
/// A failing write is logged at most this often.
const WARN_EVERY: Duration = Duration::from_secs(60);
/// `latest.json` is written at least this often while readings arrive.
const LATEST_EVERY: Duration = Duration::from_secs(30);
/// Merges per tier per upkeep (each is bounded: at most 24 inputs).
const MERGES_PER_UPKEEP: usize = 2;
/// Log frame kind: a batch of readings.
const READINGS: u8 = 1;

/// What recovery hands to [`super::History::open`].
pub(crate) struct Recovered {
    pub catalog: Catalog,
    pub pending: Pending,
    pub restored: Restored,
    pub writer: Writer,
}

/// The writer's own state.
pub(crate) struct Writer {
    /// The log of the readings since the last seal, and that seal's number.
    wal: Option<(u64, Log)>,
    alerts: AlertLog,
    last_warned: Option<Instant>,
    /// A seal failed and waits to be tried again.
    seal_failed: bool,
    /// Something failed in this round of the loop.
    round_failed: bool,
    /// When `latest.json` was last written, and the readings written by then.
    latest_written: Instant,
    latest_rows: u64,
    /// The writer's copy of the device ids by index (they are only ever added), so a log
    /// frame is encoded without holding the lock appenders wait on.
    names: Vec<Box<str>>,
}

fn wal_path(root: &Path, seal: u64) -> PathBuf {
    root.join("wal").join(format!("{seal:010}.wal"))
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// Writes `bytes` to `path` through a temporary file and a rename.
fn write_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_data()?;
    std::fs::rename(&tmp, path)
}

/// Reads back what `root` holds: segments (cleaning up after a crash), the log (sealing what it
/// holds), the devices' latest readings and the alert log.
pub(crate) fn recover(cfg: &HistoryConfig, root: &Path) -> io::Result<Recovered> {
    let (mut catalog, cleanup) = Catalog::scan(root)?;
    if cleanup.unfinished + cleanup.merged > 0 {
        tracing::warn!(
            unfinished = cleanup.unfinished,
            merged = cleanup.merged,
            "history: removed files of writes a crash interrupted"
        );
    }
    for path in &cleanup.unknown {
        tracing::warn!(path = %path.display(), "history: not a segment name; left alone");
    }
    let mut pending = Pending::new(0);
    // Any device's readings up to the newest on disk may be there already (see `write_seal`).
    pending.disk_floor = catalog.newest(Tier::Raw).unwrap_or(i64::MIN);
    let latest = root.join("latest.json");
    match std::fs::read(&latest) {
        Ok(bytes) => restore_latest(&mut pending, &bytes),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => tracing::warn!(error = %e, "history: latest.json unreadable; skipped"),
    }
    let wal_dir = root.join("wal");
    std::fs::create_dir_all(&wal_dir)?;
    let mut logs: Vec<(u64, PathBuf)> = Vec::new();
    for entry in std::fs::read_dir(&wal_dir)? {
        let path = entry?.path();
        let n = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".wal"))
            .and_then(|n| n.parse().ok());
        if let Some(n) = n {
            logs.push((n, path));
        }
    }
    logs.sort();
    let (mut replayed, mut skipped) = (0usize, 0u64);
    for (n, path) in &logs {
        if pending.sealing.is_some() {
            // A seal failed below: this log stays as it is and is read at the next start.
            continue;
        }
        if catalog.has_raw_seal(*n) {
            std::fs::remove_file(path)?;
            continue;
        }
        let frames = wal::read(path)?;
        if frames.skipped > 0 {
            tracing::warn!(
                path = %path.display(),
                bytes = frames.skipped,
                "history: torn or corrupt end of the write-ahead log skipped"
            );
        }
        skipped += frames.skipped;
        pending.seal = *n;
        for frame in &frames.frames {
            replayed += decode_frame(&mut pending, frame);
        }
        if let Some(sealing) = pending.start_seal() {
            forget_partial_seal(root, &mut catalog, sealing.seal);
            let raw = catalog.overlapping(Tier::Raw, i64::MIN, i64::MAX);
            match write_seal(root, &sealing, &raw) {
                Ok(written) => {
                    for s in written {
                        catalog.add(s);
                    }
                    pending.finish_seal();
                }
                Err(e) => {
                    // A full disk, say: start anyway (the live view does not need the disk);
                    // the writer tries the seal again, its log stays until it succeeds.
                    tracing::warn!(
                        error = %e,
                        seal = sealing.seal,
                        "history: sealing the write-ahead log failed at start-up; it is tried again"
                    );
                    continue;
                }
            }
        }
        std::fs::remove_file(path)?;
    }
    let last_log = logs.last().map_or(0, |(n, _)| *n);
    pending.seal = catalog.last_seal().max(last_log) + 1;
    let (alerts, replayed_alerts) = AlertLog::open(&root.join("alerts"))?;
    skipped += replayed_alerts.skipped;
    if replayed_alerts.unreadable > 0 {
        tracing::warn!(
            frames = replayed_alerts.unreadable,
            "history: alert log entries that are not alerts skipped"
        );
    }
    let open = crate::recovery::open_by_device(replayed_alerts.latest.iter().cloned());
    let restored = Restored {
        latest: pending
            .latest_texts()
            .into_iter()
            .map(str::to_owned)
            .collect(),
        alerts: replayed_alerts.latest.into_iter().map(|(a, _)| a).collect(),
        open,
        replayed,
        skipped_bytes: skipped,
        newest_ms: catalog.newest(Tier::Raw),
    };
    let usage: Vec<String> = Tier::ALL
        .iter()
        .map(|&t| {
            let (bytes, n, _) = catalog.usage(t);
            format!("{} {n} ({bytes} B)", t.name())
        })
        .collect();
    tracing::info!(
        data_dir = %root.display(),
        segments = %usage.join(", "),
        devices = restored.latest.len(),
        replayed_readings = replayed,
        skipped_bytes = skipped,
        alerts = restored.alerts.len(),
        open_alerts = restored.open.values().map(Vec::len).sum::<usize>(),
        retention_raw = ?cfg.raw_retention,
        "history recovered"
    );
    Ok(Recovered {
        catalog,
        pending,
        restored,
        writer: Writer {
            wal: None,
            alerts,
            last_warned: None,
            seal_failed: false,
            round_failed: false,
            latest_written: Instant::now(),
            latest_rows: 0,
            names: Vec::new(),
        },
    })
}

fn restore_latest(pending: &mut Pending, bytes: &[u8]) {
    let texts: Vec<Box<serde_json::value::RawValue>> = match serde_json::from_slice(bytes) {
        Ok(t) => t,
        Err(e) => {
            tracing::warn!(error = %e, "history: latest.json is not a JSON array; skipped");
            return;
        }
    };
    for text in texts {
        if let Ok(r) = serde_json::from_str::<Reading<'_>>(text.get()) {
            pending.restore_latest(&r.device_id, r.timestamp, text.get().to_owned());
        }
    }
}

/// Adds the readings of one log frame to `pending`; how many.
fn decode_frame(pending: &mut Pending, frame: &[u8]) -> usize {
    let Some((&READINGS, mut rest)) = frame.split_first() else {
        return 0;
    };
    let mut n = 0;
    while rest.len() >= 2 {
        let len = u16::from_le_bytes([rest[0], rest[1]]) as usize;
        let Some(id) = rest
            .get(2..2 + len)
            .and_then(|b| std::str::from_utf8(b).ok())
        else {
            break;
        };
        let Some(row) = rest.get(2 + len..).and_then(Row::read_from) else {
            break;
        };
        let i = pending.device(id);
        pending.push(i, row);
        n += 1;
        rest = &rest[2 + len + WAL_ROW_BYTES..];
    }
    n
}

fn encode_frame(names: &[Box<str>], rows: &[(u32, Row)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + rows.len() * (WAL_ROW_BYTES + 16));
    out.push(READINGS);
    for (i, row) in rows {
        let id = names[*i as usize].as_bytes();
        out.extend_from_slice(&(id.len() as u16).to_le_bytes());
        out.extend_from_slice(id);
        row.write_to(&mut out);
    }
    out
}

/// Deletes what an earlier, interrupted attempt at seal `seal` left behind.
fn forget_partial_seal(root: &Path, catalog: &mut Catalog, seal: u64) {
    for s in catalog.partial_seal(seal) {
        let _ = std::fs::remove_file(s.path(root));
        catalog.remove(&s);
    }
}

/// Writes the segments of one seal: both rollup tiers, then the raw segment (whose presence
/// marks the seal done), then syncs the directories. Returns them, for the catalog (no lock is
/// held while writing: queries go on).
pub(crate) fn write_seal(
    root: &Path,
    sealing: &Sealing,
    raw: &[Segment],
) -> io::Result<Vec<Segment>> {
    let mut written = Vec::new();
    match write_seal_into(root, sealing, raw, &mut written) {
        Ok(()) => Ok(written),
        Err(e) => {
            // What was placed before the failure goes too: a retry (or the next start) writes
            // the seal whole, and nothing half-sealed is left for a later scan to count.
            for s in &written {
                let _ = std::fs::remove_file(s.path(root));
            }
            Err(e)
        }
    }
}

fn write_seal_into(
    root: &Path,
    sealing: &Sealing,
    raw: &[Segment],
    written: &mut Vec<Segment>,
) -> io::Result<()> {
    let mut devices: Vec<(&str, Vec<Row>)> = sealing
        .names
        .iter()
        .zip(&sealing.rows)
        .zip(&sealing.on_disk)
        .map(|((name, (_, rows)), &on_disk)| {
            let mut rows = rows.clone();
            rows.sort_by_key(|r| r.t);
            rows.dedup_by_key(|r| r.t);
            drop_found_in(root, raw, name, on_disk, &mut rows);
            (&**name, rows)
        })
        .filter(|(_, rows)| !rows.is_empty())
        .collect();
    if devices.is_empty() {
        // Every reading was on disk already: nothing to write.
        return Ok(());
    }
    devices.sort_unstable_by(|a, b| a.0.cmp(b.0));
    for tier in [Tier::Minute, Tier::Hour] {
        let buckets: Vec<(&str, Vec<Bucket>)> = devices
            .iter()
            .map(|(name, rows)| (*name, rollup::roll(rows, tier.width_ms())))
            .collect();
        let (min_t, max_t) = span(buckets.iter().flat_map(|(_, b)| b.iter().map(|b| b.t)));
        let seg = Segment {
            tier,
            level: 0,
            seals: (sealing.seal, sealing.seal),
            min_t,
            max_t,
            bytes: 0,
        };
        written.push(place(root, seg, |tmp| {
            segment::write_rollups(tmp, &buckets)
        })?);
    }
    let (min_t, max_t) = span(devices.iter().flat_map(|(_, r)| r.iter().map(|r| r.t)));
    let seg = Segment {
        tier: Tier::Raw,
        level: 0,
        seals: (sealing.seal, sealing.seal),
        min_t,
        max_t,
        bytes: 0,
    };
    written.push(place(root, seg, |tmp| segment::write_raw(tmp, &devices))?);
    for tier in Tier::ALL {
        sync_dir(&root.join(tier.name()))?;
    }
    Ok(())
}

/// Removes from `rows` (one device, sorted) those whose event time a raw segment of `raw`
/// already holds: a reading sent again after a restart, or a late one seen before, must not be
/// counted twice in the rollups. Only rows at or before `on_disk` (the newest event time of
/// the device that may be in a segment) are looked up, so readings arriving in order cost
/// nothing.
pub(crate) fn drop_found_in(
    root: &Path,
    raw: &[Segment],
    device: &str,
    on_disk: i64,
    rows: &mut Vec<Row>,
) {
    let Some(first) = rows.first().map(|r| r.t).filter(|&t| t <= on_disk) else {
        return;
    };
    let mut seen = hashbrown::HashSet::new();
    for s in raw.iter().filter(|s| s.overlaps(first, on_disk)) {
        match segment::read_raw(&s.path(root), device, segment::Columns::Time) {
            Ok(r) => seen.extend(r.into_iter().map(|r| r.t)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(error = %e, path = %s.path(root).display(), "history: unreadable segment skipped")
            }
        }
    }
    if !seen.is_empty() {
        rows.retain(|r| r.t > on_disk || !seen.contains(&r.t));
    }
}

fn span(times: impl Iterator<Item = i64>) -> (i64, i64) {
    times.fold((i64::MAX, i64::MIN), |(lo, hi), t| (lo.min(t), hi.max(t)))
}

/// Writes a segment through a temporary file; its size is filled in.
fn place(
    root: &Path,
    mut seg: Segment,
    write: impl FnOnce(&Path) -> io::Result<()>,
) -> io::Result<Segment> {
    let path = seg.path(root);
    let tmp = path.with_extension("parquet.tmp");
    if let Err(e) = write(&tmp).and_then(|()| std::fs::rename(&tmp, &path)) {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    seg.bytes = std::fs::metadata(&path)?.len();
    Ok(seg)
}

/// Merges rollup segments into one of the next level; the inputs are deleted after the output
/// is in place.
fn merge(root: &Path, catalog: &std::sync::RwLock<Catalog>, inputs: &[Segment]) -> io::Result<()> {
    let (Some(first), Some(last)) = (inputs.first(), inputs.last()) else {
        return Ok(());
    };
    let mut by_device: hashbrown::HashMap<String, Vec<Bucket>> = hashbrown::HashMap::new();
    for s in inputs {
        let path = s.path(root);
        let found = match segment::read_rollups(&path, None) {
            Ok(found) => found,
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                // Unreadable (corrupt): set aside, or every later merge of the tier would stop
                // on it. Its buckets are lost to queries; the file stays for inspection.
                set_aside(root, catalog, s, &e);
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        for (device, bucket) in found {
            by_device.entry(device).or_default().push(bucket);
        }
    }
    let mut devices: Vec<(String, Vec<Bucket>)> = by_device.into_iter().collect();
    devices.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    for (_, b) in &mut devices {
        rollup::coalesce(b);
    }
    let buckets: Vec<(&str, Vec<Bucket>)> = devices
        .iter()
        .map(|(d, b)| (d.as_str(), b.clone()))
        .collect();
    let (min_t, max_t) = span(buckets.iter().flat_map(|(_, b)| b.iter().map(|b| b.t)));
    let seg = Segment {
        tier: first.tier,
        level: first.level + 1,
        seals: (first.seals.0, last.seals.1),
        min_t,
        max_t,
        bytes: 0,
    };
    let seg = place(root, seg, |tmp| segment::write_rollups(tmp, &buckets))?;
    sync_dir(&root.join(first.tier.name()))?;
    {
        // Output in, inputs out, in one step for queries; the files go afterwards (start-up
        // deletes inputs a merged segment covers, should a delete fail).
        let mut c = catalog.write().unwrap_or_else(|e| e.into_inner());
        c.add(seg);
        for s in inputs {
            c.remove(s);
        }
    }
    for s in inputs {
        if let Err(e) = std::fs::remove_file(s.path(root)) {
            tracing::warn!(error = %e, path = %s.path(root).display(), "history: a merged segment could not be deleted");
        }
    }
    Ok(())
}

/// Takes an unreadable segment out of the catalog and renames it `….parquet.bad`.
fn set_aside(root: &Path, catalog: &std::sync::RwLock<Catalog>, s: &Segment, e: &io::Error) {
    let path = s.path(root);
    let bad = path.with_extension("parquet.bad");
    tracing::warn!(error = %e, path = %path.display(), "history: unreadable segment set aside as {}", bad.display());
    catalog.write().unwrap_or_else(|e| e.into_inner()).remove(s);
    let _ = std::fs::rename(&path, &bad);
}

/// Sleeps `interval` or until stopped; true when stopping.
fn wait(shared: &Shared, interval: Duration) -> bool {
    let guard = shared.stopping.lock().unwrap_or_else(|e| e.into_inner());
    if *guard {
        return true;
    }
    let (guard, _) = shared
        .wake
        .wait_timeout(guard, interval)
        .unwrap_or_else(|e| e.into_inner());
    *guard
}

/// The writer thread's loop, until [`super::History::close`].
pub(crate) fn run(shared: &Shared, mut w: Writer) {
    let mut last_upkeep: Option<Instant> = None;
    loop {
        let stopping = wait(shared, shared.cfg.flush_interval);
        let started = Instant::now();
        let flushed = w.flush(shared);
        let stats = &shared.stats;
        stats.flushes.fetch_add(1, Ordering::Relaxed);
        stats
            .flush_micros
            .fetch_add(started.elapsed().as_micros() as u64, Ordering::Relaxed);
        let due = {
            let p = shared.pending();
            p.sealing.is_some() || p.seal_due(shared.cfg.segment_span) || (stopping && p.len() > 0)
        };
        if due {
            w.seal(shared);
        }
        if stopping || last_upkeep.is_none_or(|t| t.elapsed() >= UPKEEP) {
            w.upkeep(shared);
            last_upkeep = Some(Instant::now());
        }
        // Cleared only by a round that wrote something and failed nowhere (an idle second
        // says nothing about the disk).
        if flushed && !w.round_failed && !w.seal_failed {
            w.recovered(shared);
        }
        w.round_failed = false;
        if stopping {
            if let Err(e) = w.write_latest(shared) {
                w.failed(shared, "writing latest.json", &e);
            }
            return;
        }
    }
}

impl Writer {
    /// Logs and syncs what arrived since the last flush; true if it wrote something (a
    /// failure is recorded by [`Writer::failed`]).
    fn flush(&mut self, shared: &Shared) -> bool {
        let (rows, alerts, seal) = {
            let mut p = shared.pending();
            let rows = std::mem::take(&mut p.unlogged);
            let alerts = std::mem::take(&mut p.alerts_unlogged);
            self.names
                .extend(p.names_from(self.names.len()).iter().cloned());
            (rows, alerts, p.seal)
        };
        // Encoded after the lock is released: appends (under the live store's lock) do not
        // wait for it.
        let frame = (!rows.is_empty()).then(|| encode_frame(&self.names, &rows));
        let mut wrote = false;
        if let Some(frame) = frame {
            match self.log_readings(shared, seal, &frame) {
                Ok(()) => {
                    wrote = true;
                    let n = rows.len() as u64;
                    shared.stats.rows_written.fetch_add(n, Ordering::Relaxed);
                }
                Err(e) => {
                    self.failed(shared, "writing the write-ahead log", &e);
                    let mut p = shared.pending();
                    // Still waiting for this seal: try again with the next flush. (If the
                    // seal has started meanwhile, the rows are in it.)
                    if p.seal == seal {
                        let newer = std::mem::replace(&mut p.unlogged, rows);
                        p.unlogged.extend(newer);
                    }
                }
            }
        }
        if !alerts.is_empty() {
            match self
                .alerts
                .append(&alerts)
                .and_then(|()| self.alerts.sync())
            {
                Ok(()) => {
                    wrote = true;
                    let n = alerts.len() as u64;
                    shared.stats.alerts_written.fetch_add(n, Ordering::Relaxed);
                }
                Err(e) => {
                    self.failed(shared, "writing the alert log", &e);
                    let mut p = shared.pending();
                    let newer = std::mem::replace(&mut p.alerts_unlogged, alerts);
                    p.alerts_unlogged.extend(newer);
                }
            }
        }
        wrote
    }

    fn log_readings(&mut self, shared: &Shared, seal: u64, frame: &[u8]) -> io::Result<()> {
        if self.wal.as_ref().is_none_or(|(n, _)| *n != seal) {
            let (log, _) = Log::open(&wal_path(&shared.root, seal))?;
            self.wal = Some((seal, log));
        }
        let Some((_, log)) = self.wal.as_mut() else {
            return Ok(());
        };
        log.append(frame)?;
        log.sync()
    }

    /// Seals the readings since the last seal (or tries a failed seal again).
    fn seal(&mut self, shared: &Shared) {
        let sealing = {
            let mut p = shared.pending();
            match p.sealing.clone() {
                Some(s) => Some(s),
                None => p.start_seal(),
            }
        };
        let Some(sealing) = sealing else {
            return;
        };
        forget_partial_seal(&shared.root, &mut shared.catalog_mut(), sealing.seal);
        let raw = shared.catalog().overlapping(Tier::Raw, i64::MIN, i64::MAX);
        match write_seal(&shared.root, &sealing, &raw) {
            Ok(written) => {
                {
                    // Segments in and the rows out of memory in one step for queries (they
                    // hold the catalog while they copy the rows in memory).
                    let mut catalog = shared.catalog_mut();
                    for s in written {
                        catalog.add(s);
                    }
                    shared.pending().finish_seal();
                }
                self.seal_failed = false;
                shared.stats.seals.fetch_add(1, Ordering::Relaxed);
                if self.wal.as_ref().is_some_and(|(n, _)| *n == sealing.seal) {
                    self.wal = None;
                }
                let _ = std::fs::remove_file(wal_path(&shared.root, sealing.seal));
                if let Err(e) = self.write_latest(shared) {
                    self.failed(shared, "writing latest.json", &e);
                }
            }
            Err(e) => {
                self.seal_failed = true;
                self.failed(shared, "writing a segment", &e);
            }
        }
    }

    /// Retention, merges, the alert log's rotation.
    fn upkeep(&mut self, shared: &Shared) {
        let now = crate::now_ms();
        for tier in Tier::ALL {
            let cutoff = now.saturating_sub(shared.cfg.retention_ms(tier));
            let expired = shared.catalog().expired(tier, cutoff);
            for s in expired {
                match std::fs::remove_file(s.path(&shared.root)) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => {
                        self.failed(shared, "deleting an expired segment", &e);
                        continue;
                    }
                }
                shared.catalog_mut().remove(&s);
                shared.stats.expired.fetch_add(1, Ordering::Relaxed);
            }
        }
        for tier in [Tier::Minute, Tier::Hour] {
            for _ in 0..MERGES_PER_UPKEEP {
                let Some(inputs) = shared.catalog().next_merge(tier) else {
                    break;
                };
                if let Err(e) = merge(&shared.root, &shared.catalog, &inputs) {
                    self.failed(shared, "merging rollup segments", &e);
                    break;
                }
            }
        }
        // Besides every seal: so that after a crash the devices first seen since the last
        // seal are listed too (at most this long before the crash is missing from it).
        let rows = shared.stats.rows_written.load(Ordering::Relaxed);
        if self.latest_written.elapsed() >= LATEST_EVERY
            && rows != self.latest_rows
            && let Err(e) = self.write_latest(shared)
        {
            self.failed(shared, "writing latest.json", &e);
        }
        if let Err(e) = self.alerts.rotate(shared.cfg.alert_retention) {
            self.failed(shared, "rotating the alert log", &e);
        }
    }

    fn write_latest(&mut self, shared: &Shared) -> io::Result<()> {
        self.latest_written = Instant::now();
        self.latest_rows = shared.stats.rows_written.load(Ordering::Relaxed);
        let bytes = {
            let p = shared.pending();
            let texts = p.latest_texts();
            let mut out = Vec::with_capacity(texts.iter().map(|t| t.len() + 2).sum::<usize>() + 2);
            out.push(b'[');
            for (k, t) in texts.iter().enumerate() {
                if k > 0 {
                    out.extend_from_slice(b",\n");
                }
                out.extend_from_slice(t.as_bytes());
            }
            out.push(b']');
            out
        };
        write_atomically(&shared.root.join("latest.json"), &bytes)
    }

    fn failed(&mut self, shared: &Shared, what: &str, e: &io::Error) {
        self.round_failed = true;
        let errors = shared.stats.write_errors.fetch_add(1, Ordering::Relaxed) + 1;
        *shared.problem.lock().unwrap_or_else(|e| e.into_inner()) = Some(format!("{what}: {e}"));
        if self.last_warned.is_none_or(|t| t.elapsed() >= WARN_EVERY) {
            self.last_warned = Some(Instant::now());
            tracing::warn!(
                error = %e,
                errors,
                "history: {what} failed; readings wait in memory and are written when the disk \
                 takes them again (logged at most once a minute)"
            );
        }
    }

    fn recovered(&mut self, shared: &Shared) {
        let mut problem = shared.problem.lock().unwrap_or_else(|e| e.into_inner());
        if problem.take().is_some() {
            tracing::info!("history: writing again");
        }
    }
}
