//! What history holds in memory: the device dictionary, the readings since the last seal (by
//! device, queryable), those not yet in the log, the alert changes not yet in the alert log,
//! and the latest full reading of every device.

use std::sync::Arc;
use std::time::Instant;

use hashbrown::HashMap;
use iiot_model::Reading;

use super::row::Row;
use super::{MAX_PENDING_ROWS, MAX_SEGMENT_ROWS};

/// Alert changes waiting for the alert log beyond which new ones are dropped (and counted).
pub(crate) const MAX_PENDING_ALERTS: usize = 100_000;

/// Readings being written into segments (still answered from memory until they are there).
#[derive(Debug)]
pub(crate) struct Sealing {
    /// The seal number.
    pub seal: u64,
    /// By device index (ascending), the device's readings in arrival order.
    pub rows: Vec<(u32, Vec<Row>)>,
    /// The ids of the devices of `rows`, in the same order.
    pub names: Vec<Box<str>>,
    /// By device, in the same order: the newest event time that may already be in a raw
    /// segment. Rows at or before it may repeat a reading on disk (sent again after a restart,
    /// or late) and are checked against the segments before they are rolled up.
    pub on_disk: Vec<i64>,
}

/// The in-memory side of history.
#[derive(Debug, Default)]
pub(crate) struct Pending {
    names: Vec<Box<str>>,
    index: HashMap<Box<str>, u32>,
    /// By device index: readings since the last seal, in arrival order.
    rows: Vec<Vec<Row>>,
    count: usize,
    /// The seal in progress (or failed and waiting to be tried again).
    pub sealing: Option<Arc<Sealing>>,
    /// Readings not yet in the log, in arrival order.
    pub unlogged: Vec<(u32, Row)>,
    /// Alert changes (JSON) not yet in the alert log.
    pub alerts_unlogged: Vec<Vec<u8>>,
    /// By device index: event time and text of the latest reading.
    latest: Vec<Option<(i64, String)>>,
    /// The seal the rows since the last one will get.
    pub seal: u64,
    /// When the first reading since the last seal arrived.
    pub opened: Option<Instant>,
    /// Readings in `sealing`.
    sealing_rows: usize,
    /// By device index: the newest event time that may already be in a raw segment.
    on_disk: Vec<i64>,
    /// [`Pending::on_disk`] of a device added from now on: the newest event time of any raw
    /// segment found at start-up (`i64::MIN` in an empty directory).
    pub disk_floor: i64,
}

impl Pending {
    /// Empty, the next seal numbered `seal`.
    pub(crate) fn new(seal: u64) -> Pending {
        Pending {
            seal,
            disk_floor: i64::MIN,
            ..Pending::default()
        }
    }

    /// The index of device `id`, added if new.
    pub(crate) fn device(&mut self, id: &str) -> u32 {
        if let Some(&i) = self.index.get(id) {
            return i;
        }
        let i = self.names.len() as u32;
        self.names.push(id.into());
        self.index.insert(id.into(), i);
        self.rows.push(Vec::new());
        self.latest.push(None);
        self.on_disk.push(self.disk_floor);
        i
    }

    /// The ids of the devices from index `from` on (those added since a caller last looked).
    pub(crate) fn names_from(&self, from: usize) -> &[Box<str>] {
        self.names.get(from..).unwrap_or(&[])
    }

    /// The newest event time of device `id` that may already be in a raw segment.
    pub(crate) fn on_disk(&self, id: &str) -> i64 {
        self.index
            .get(id)
            .map_or(self.disk_floor, |&i| self.on_disk[i as usize])
    }

    /// Whether device `id` is known.
    pub(crate) fn knows(&self, id: &str) -> bool {
        self.index.contains_key(id)
    }

    /// Readings waiting for a segment (since the last seal, and in a seal not yet done).
    pub(crate) fn len(&self) -> usize {
        self.count + self.sealing_rows
    }

    /// The seal in progress is in its segments now (or was abandoned): forget it.
    pub(crate) fn finish_seal(&mut self) {
        self.sealing = None;
        self.sealing_rows = 0;
    }

    /// Keeps a reading; false if too many are waiting already (dropped): the bound counts a
    /// seal that failed and waits to be tried again too.
    pub(crate) fn append(&mut self, reading: &Reading<'_>, text: &str) -> bool {
        if self.len() >= MAX_PENDING_ROWS {
            return false;
        }
        let i = self.device(&reading.device_id);
        let row = Row::of(reading);
        self.push(i, row);
        self.unlogged.push((i, row));
        let latest = &mut self.latest[i as usize];
        match latest {
            Some((t, kept)) if *t <= row.t => {
                *t = row.t;
                kept.clear();
                kept.push_str(text);
            }
            Some(_) => {}
            None => *latest = Some((row.t, text.to_owned())),
        }
        true
    }

    /// Adds a reading read back from the log (already logged).
    pub(crate) fn push(&mut self, i: u32, row: Row) {
        if self.opened.is_none() {
            self.opened = Some(Instant::now());
        }
        self.rows[i as usize].push(row);
        self.count += 1;
    }

    /// Sets the latest reading of a device read back from `latest.json`.
    pub(crate) fn restore_latest(&mut self, id: &str, t: i64, text: String) {
        let i = self.device(id);
        self.latest[i as usize] = Some((t, text));
    }

    /// Keeps an alert change; false if [`MAX_PENDING_ALERTS`] wait already (the alert log
    /// has been failing for long).
    pub(crate) fn append_alert(&mut self, json: &[u8]) -> bool {
        if self.alerts_unlogged.len() >= MAX_PENDING_ALERTS {
            return false;
        }
        self.alerts_unlogged.push(json.to_vec());
        true
    }

    /// Whether a seal is due: the span is up, or enough readings are waiting.
    pub(crate) fn seal_due(&self, span: std::time::Duration) -> bool {
        self.count >= MAX_SEGMENT_ROWS || self.opened.is_some_and(|o| o.elapsed() >= span)
    }

    /// Hands the readings since the last seal over to a new seal and starts the next one.
    pub(crate) fn start_seal(&mut self) -> Option<Arc<Sealing>> {
        if self.sealing.is_some() || self.count == 0 {
            return None;
        }
        let (mut rows, mut names, mut on_disk) = (Vec::new(), Vec::new(), Vec::new());
        for (i, r) in self.rows.iter_mut().enumerate() {
            if !r.is_empty() {
                on_disk.push(self.on_disk[i]);
                let newest = r.iter().map(|row| row.t).max().unwrap_or(i64::MIN);
                self.on_disk[i] = self.on_disk[i].max(newest);
                rows.push((i as u32, std::mem::take(r)));
                names.push(self.names[i].clone());
            }
        }
        let sealing = Arc::new(Sealing {
            seal: self.seal,
            rows,
            names,
            on_disk,
        });
        self.seal += 1;
        self.sealing_rows = self.count;
        self.count = 0;
        self.opened = None;
        // What was not logged yet is in the seal now: the segment will hold it.
        self.unlogged.clear();
        self.sealing = Some(sealing.clone());
        Some(sealing)
    }

    /// The readings of device `id` in memory with `from <= t <= to`, unordered.
    pub(crate) fn rows_of(&self, id: &str, from: i64, to: i64) -> Vec<Row> {
        let (mut out, sealing) = self.rows_split(id, from, to);
        if let Some((_, rows)) = sealing {
            out.extend(rows);
        }
        out
    }

    /// [`Pending::rows_of`] apart: those since the last seal, and those of the seal in
    /// progress (with its number), if any.
    pub(crate) fn rows_split(
        &self,
        id: &str,
        from: i64,
        to: i64,
    ) -> (Vec<Row>, Option<(u64, Vec<Row>)>) {
        let Some(&i) = self.index.get(id) else {
            return (Vec::new(), None);
        };
        let current: Vec<Row> = self.rows[i as usize]
            .iter()
            .filter(|r| (from..=to).contains(&r.t))
            .copied()
            .collect();
        let sealing = self.sealing.as_ref().map(|s| {
            let rows = match s.rows.binary_search_by_key(&i, |(d, _)| *d) {
                Ok(k) => s.rows[k]
                    .1
                    .iter()
                    .filter(|r| (from..=to).contains(&r.t))
                    .copied()
                    .collect(),
                Err(_) => Vec::new(),
            };
            (s.seal, rows)
        });
        (current, sealing)
    }

    /// The latest reading of every device, as JSON text.
    pub(crate) fn latest_texts(&self) -> Vec<&str> {
        self.latest
            .iter()
            .flatten()
            .map(|(_, text)| text.as_str())
            .collect()
    }
}
