//! The live store the HTTP API answers from: the latest reading of every device, its recent raw
//! history, rollups for longer ranges, and the alerts that are open or recently resolved.
//!
//! Synchronous and I/O-free: time comes in as arguments (Unix ms), so tests drive any clock. The
//! store owns its data only; it publishes nothing and takes no locks (the caller wraps it).
//!
//! # Layout
//! - this file: [`Store`], [`StoreConfig`], errors and counters.
//! - [`view`]: [`DeviceView`], [`DeviceStatus`], filters and pages.
//! - `raw`: per-device ring of 16-byte samples ([`RawSample`] is the decoded form).
//! - `rollup`: per-device dense ring of 28-byte buckets (min/max/mean/count of all six
//!   parameters).
//! - `history`: downsampling to at most `points` buckets ([`HistoryPoint`]).
//! - `alert_log`: open alerts by id, recently resolved ones in a bounded list ([`AlertFilter`]).
//! - `codec`: the fixed-point grids history is stored on.
//!
//! # Memory budget
//! Memory is what this module is designed around (SPEC §9: 10,000 devices at a 5 s interval
//! with 1 h raw and 24 h rollups, whole process under 300 MB RSS). Per device at the defaults:
//!
//! | part | size |
//! |---|---|
//! | raw: 720 samples (1 h at 5 s) × 16 B, buffer ≤ 743 slots | ≤ 11,888 B |
//! | rollups: 289 five-minute buckets (24 h) × 28 B | 8,092 B |
//! | device record (latest reading, rings, open bucket, liveness) | 608 B |
//! | strings of the latest reading, index entry, order | ≈ 160 B |
//! | status last reported by `status_changes` | 1 B |
//! | **total** | **≈ 20.7 KB** |
//!
//! so 10,000 devices take ≈ 207 MB and 1,000 ≈ 21 MB (with history on disk, the default, the
//! store keeps 15 minutes of raw samples and one rollup bucket: ≈ 3.8 KB a device, ≈ 38 MB for
//! 10,000) (`memory_estimate`, checked by a test
//! that fills 1,000 devices; allocator rounding comes on top and is what the RSS benchmark
//! measures). Where the bytes went:
//! - A raw sample stores the time as a `u32` ms offset from a per-device base, the four sensors
//!   on a 0.01 grid in `u16` (pressure's 17th bit in a flag byte), battery and signal in a byte
//!   each, the four sensor statuses in two bits each and the switch in one bit. Values sent with
//!   two decimals come back exactly; `seq` is not kept (export gives time and every value).
//! - Rollups are five-minute buckets, not one-minute ones: 1,440 one-minute buckets would be
//!   40 KB per device (400 MB for 10,000) even at 28 B. Five minutes gives 288 points per day,
//!   RRDtool's classic daily resolution, and the 1 h range still comes from raw samples.
//!   A bucket keeps min and max exact on the grid (pressure 0.02 hPa) and the mean as its
//!   position between them in 1/255 steps.
//! - Ring buffers grow by doubling up to the expected length plus ~3 %, then by an eighth; a
//!   device that goes quiet gives its memory back as its history expires.
//!
//! Every part is bounded: devices by `max_devices` (new ones are refused and counted), raw
//! samples per device by `min(4 × retention / default interval, max_raw_samples_per_device)`
//! (the oldest are dropped and counted), rollups by retention / bucket width, open alerts by
//! `max_open_alerts`, resolved alerts by `max_resolved_alerts`. Worst case (every device
//! sending 4× too fast): `max_devices × (cap × 16 B + 8 KB)`.

mod alert_log;
pub(crate) mod codec;
mod device;
mod history;
mod raw;
mod rollup;
#[cfg(test)]
pub(crate) mod tests;
pub mod view;

use std::time::Duration;

use hashbrown::HashMap;
use iiot_model::{Alert, Parameter, Reading};
use serde::Serialize;

pub use alert_log::{AlertFilter, MAX_ALERTS_LISTED};
use device::Device;
pub(crate) use history::{Acc, Buckets, Downsampler};
pub use history::{HistoryPoint, MAX_POINTS};
pub use raw::RawSample;
use raw::{RawInsert, RingSize, Slot};
pub use view::{DeviceFilter, DeviceStatus, DeviceView, MAX_PER_PAGE, Page, StatusCounts};

/// Sizes and retention of the store.
#[derive(Debug, Clone, PartialEq)]
pub struct StoreConfig {
    /// How long raw samples are kept (by event time). At most 30 days (offsets are 32-bit ms).
    pub raw_retention: Duration,
    /// How long rollup buckets are kept.
    pub rollup_retention: Duration,
    /// Width of a rollup bucket; the resolution of ranges beyond raw retention.
    pub rollup_bucket: Duration,
    /// Most devices tracked; readings of further devices are refused (and counted).
    pub max_devices: usize,
    /// Send interval assumed for a device until its own is observed, ms. Sizes the raw rings.
    pub default_interval_ms: i64,
    /// Hard cap on raw samples per device. The cap in force is the smaller of this and
    /// 4 × `raw_retention` / `default_interval_ms`; beyond it the oldest samples are dropped.
    pub max_raw_samples_per_device: usize,
    /// Most open (active or acknowledged) alerts held; further new ones are refused (and
    /// counted).
    pub max_open_alerts: usize,
    /// How many resolved alerts are kept for the API (oldest dropped first).
    pub max_resolved_alerts: usize,
    /// A device is `offline` after this many send intervals of silence (never less than
    /// [`MIN_OFFLINE_MS`](crate::liveness::MIN_OFFLINE_MS)). Set it to the offline rule's
    /// `missed_intervals` so status and the offline alert agree. At least 1.
    pub offline_missed_intervals: f64,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            raw_retention: Duration::from_secs(3_600),
            rollup_retention: Duration::from_secs(24 * 3_600),
            rollup_bucket: Duration::from_secs(300),
            max_devices: 20_000,
            default_interval_ms: 5_000,
            max_raw_samples_per_device: 10_000,
            max_open_alerts: 100_000,
            max_resolved_alerts: 10_000,
            offline_missed_intervals: 3.0,
        }
    }
}

/// Why a query could not be answered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// No reading of this device was ever recorded.
    #[error("unknown device `{0}`")]
    UnknownDevice(String),
    /// The time range or number of points is not acceptable.
    #[error("bad range: {0}")]
    BadRange(&'static str),
}

/// What [`Store::record_outcome`] made of a reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    /// Not seen before (within raw retention): recorded.
    New,
    /// The same device and event time is held already: ignored.
    Duplicate,
    /// A new device beyond `max_devices`: refused.
    Refused,
}

/// What the store refused or dropped to stay within its bounds (monotonic counts).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct StoreCounters {
    /// Readings of new devices refused at `max_devices`.
    pub devices_refused: u64,
    /// Raw samples dropped because a device exceeded its ring's cap.
    pub raw_evicted: u64,
    /// Readings too old for raw history (still folded into rollups when young enough).
    pub raw_too_old: u64,
    /// Readings too old for rollups.
    pub rollup_too_old: u64,
    /// Readings already stored (same device and event time), ignored.
    pub duplicates: u64,
    /// New open alerts refused at `max_open_alerts`.
    pub alerts_refused: u64,
    /// Alert updates older than the version held, ignored.
    pub alerts_stale: u64,
}

/// The in-memory live store. See the module documentation for its memory budget.
#[derive(Debug)]
pub struct Store {
    cfg: StoreConfig,
    raw_retention_ms: i64,
    rollup_retention_ms: i64,
    rollup_width_ms: i64,
    rollup_slots: usize,
    raw_cap: usize,
    devices: Vec<Device>,
    index: HashMap<Box<str>, u32>,
    /// Indices into `devices`, in natural device-id order.
    order: Vec<u32>,
    alerts: alert_log::AlertLog,
    counters: StoreCounters,
    /// By index into `devices`: the status [`Store::status_changes`] last reported (`None`:
    /// not yet, or not swept since the device appeared). One byte per device.
    reported: Vec<Option<DeviceStatus>>,
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// `missed_intervals` clamped to at least 1; not a number falls back to the default 3.
fn clamp_missed_intervals(missed_intervals: f64) -> f64 {
    if missed_intervals.is_nan() {
        3.0
    } else {
        missed_intervals.max(1.0)
    }
}

/// Bytes of a hashbrown table holding `capacity` entries of `entry` bytes (buckets are a power
/// of two at most 7/8 full, plus one control byte each).
pub(crate) fn table_bytes(capacity: usize, entry: usize) -> usize {
    if capacity == 0 {
        return 0;
    }
    let buckets = if capacity < 8 {
        (capacity + 1).next_power_of_two()
    } else {
        (capacity * 8 / 7).next_power_of_two()
    };
    buckets * (entry + 1) + 16
}

impl Store {
    /// An empty store. Out-of-range settings are clamped: retention of raw samples to 1 s..30
    /// days, rollup width to at least 1 s, intervals to at least 1 ms, caps and missed
    /// intervals to at least 1.
    pub fn new(cfg: StoreConfig) -> Store {
        let raw_retention_ms = ms(cfg.raw_retention).clamp(1_000, 30 * 86_400_000);
        let rollup_width_ms = ms(cfg.rollup_bucket).max(1_000);
        let rollup_retention_ms = ms(cfg.rollup_retention).max(rollup_width_ms);
        let default_interval = cfg.default_interval_ms.max(1);
        let expected = (raw_retention_ms as u64).div_ceil(default_interval as u64);
        let raw_cap = usize::try_from(expected.saturating_mul(4))
            .unwrap_or(usize::MAX)
            .min(cfg.max_raw_samples_per_device)
            .max(1);
        Store {
            raw_retention_ms,
            rollup_retention_ms,
            rollup_width_ms,
            // +1: a retention window rarely starts on a bucket boundary.
            rollup_slots: (rollup_retention_ms as u64).div_ceil(rollup_width_ms as u64) as usize
                + 1,
            raw_cap,
            devices: Vec::new(),
            index: HashMap::new(),
            order: Vec::new(),
            alerts: alert_log::AlertLog::new(cfg.max_open_alerts, cfg.max_resolved_alerts),
            counters: StoreCounters::default(),
            reported: Vec::new(),
            cfg: StoreConfig {
                raw_retention: Duration::from_millis(raw_retention_ms as u64),
                rollup_retention: Duration::from_millis(rollup_retention_ms as u64),
                rollup_bucket: Duration::from_millis(rollup_width_ms as u64),
                default_interval_ms: default_interval,
                offline_missed_intervals: clamp_missed_intervals(cfg.offline_missed_intervals),
                ..cfg
            },
        }
    }

    /// The configuration in force (after clamping).
    pub fn config(&self) -> &StoreConfig {
        &self.cfg
    }

    /// Sets after how many send intervals of silence a device is `offline` (rules hot
    /// reload), clamped as in [`Store::new`].
    pub fn set_offline_missed_intervals(&mut self, missed_intervals: f64) {
        self.cfg.offline_missed_intervals = clamp_missed_intervals(missed_intervals);
    }

    /// What was refused or dropped so far.
    pub fn counters(&self) -> StoreCounters {
        self.counters
    }

    /// Number of devices tracked.
    pub fn device_count(&self) -> usize {
        self.devices.len()
    }

    /// Records a valid reading (validated upstream), received at `received_ms` (receiver
    /// clock). Late and out-of-order readings go into history but never move "latest" backwards
    /// (compared by event time, then seq); a redelivered reading is ignored. Returns false when
    /// the reading is of a new device and `max_devices` are already tracked.
    pub fn record(&mut self, reading: &Reading<'_>, received_ms: i64) -> bool {
        self.record_outcome(reading, received_ms) != Recorded::Refused
    }

    /// [`Store::record`], saying whether the reading was new (what history on disk keeps), a
    /// redelivery, or refused.
    pub fn record_outcome(&mut self, reading: &Reading<'_>, received_ms: i64) -> Recorded {
        let (i, new) = match self.index.get(reading.device_id.as_ref()) {
            Some(&i) => (i as usize, false),
            None => match self.add_device(reading, received_ms) {
                Some(i) => (i, true),
                None => return Recorded::Refused,
            },
        };
        let default_interval = self.cfg.default_interval_ms;
        let dev = &mut self.devices[i];
        if !new && dev.is_latest(reading) {
            self.counters.duplicates += 1;
            return Recorded::Duplicate;
        }
        dev.liveness.touch(received_ms);
        dev.advance_latest(reading, default_interval);

        let t = reading.timestamp;
        let values = codec::values(reading);
        if t < received_ms.saturating_sub(self.raw_retention_ms) {
            self.counters.raw_too_old += 1;
            dev.raw.mark_incomplete_through(t);
        } else {
            let expected =
                self.raw_retention_ms / dev.liveness.interval_ms(default_interval).max(1);
            let size = RingSize {
                expected: usize::try_from(expected).unwrap_or(usize::MAX),
                cap: self.raw_cap,
            };
            match dev.raw.insert(t, Slot::encode(reading, &values), size) {
                RawInsert::Duplicate => {
                    self.counters.duplicates += 1;
                    return Recorded::Duplicate;
                }
                RawInsert::Stored { evicted } => self.counters.raw_evicted += evicted as u64,
                RawInsert::Skipped => self.counters.raw_too_old += 1,
            }
        }
        let young = t >= received_ms.saturating_sub(self.rollup_retention_ms);
        if !(young
            && dev
                .rollups
                .add(t, &values, self.rollup_width_ms, self.rollup_slots))
        {
            self.counters.rollup_too_old += 1;
        }
        Recorded::New
    }

    fn add_device(&mut self, reading: &Reading<'_>, received_ms: i64) -> Option<usize> {
        if self.devices.len() >= self.cfg.max_devices {
            if self.counters.devices_refused == 0 {
                tracing::warn!(
                    max_devices = self.cfg.max_devices,
                    device_id = %reading.device_id,
                    "store full: readings of new devices are refused"
                );
            }
            self.counters.devices_refused += 1;
            return None;
        }
        let i = self.devices.len();
        let id: &str = &reading.device_id;
        let pos = self
            .order
            .partition_point(|&k| view::natural_cmp(self.id(k as usize), id).is_lt());
        // `max_devices` far below u32::MAX is the only sane setting; refuse rather than wrap.
        let key = u32::try_from(i).ok()?;
        // Grow by an eighth, not by doubling: a device record is ~0.5 KB.
        if self.devices.len() == self.devices.capacity() {
            self.devices.reserve_exact(i / 8 + 16);
            self.order.reserve_exact(i / 8 + 16);
        }
        self.devices.push(Device::new(reading, received_ms));
        self.index.insert(id.into(), key);
        self.order.insert(pos, key);
        Some(i)
    }

    fn id(&self, i: usize) -> &str {
        &self.devices[i].latest.device_id
    }

    /// Records an alert status change; the same `alert_id` is updated in place.
    pub fn record_alert(&mut self, alert: &Alert) {
        match self.alerts.record(alert) {
            alert_log::AlertOutcome::Stale => self.counters.alerts_stale += 1,
            alert_log::AlertOutcome::Refused => self.counters.alerts_refused += 1,
            _ => {}
        }
    }

    /// One alert by id, open or recently resolved.
    pub fn alert(&self, alert_id: &str) -> Option<Alert> {
        self.alerts.get(alert_id).cloned()
    }

    fn view(&self, i: usize, now_ms: i64) -> DeviceView {
        let dev = &self.devices[i];
        let counts = self.alerts.open_counts(&dev.latest.device_id);
        DeviceView {
            device_id: dev.latest.device_id.to_string(),
            status: self.status(i, now_ms),
            // Every device was heard from: it exists because a reading arrived.
            last_seen_ms: dev.liveness.last_heard_ms().unwrap_or_default(),
            interval_ms: dev.liveness.interval_ms(self.cfg.default_interval_ms),
            open_alerts: counts.open,
            critical_alerts: counts.critical,
            latest: dev.latest.clone(),
        }
    }

    fn status(&self, i: usize, now_ms: i64) -> DeviceStatus {
        let dev = &self.devices[i];
        let open = self.alerts.open_counts(&dev.latest.device_id);
        dev.status(
            now_ms,
            self.cfg.offline_missed_intervals,
            self.cfg.default_interval_ms,
            open.critical > 0,
            open.offline > 0,
        )
    }

    /// One device as of `now_ms`, or `None` if it never reported.
    pub fn device(&self, id: &str, now_ms: i64) -> Option<DeviceView> {
        let &i = self.index.get(id)?;
        Some(self.view(i as usize, now_ms))
    }

    /// Devices passing `filter`, in natural id order (`device_2` before `device_10`), one page.
    pub fn devices(&self, filter: &DeviceFilter, now_ms: i64) -> Page<DeviceView> {
        let per_page = filter.per_page.clamp(1, MAX_PER_PAGE);
        let page = filter.page.max(1);
        let skip = (page - 1).saturating_mul(per_page);
        let mut total = 0;
        let mut items = Vec::new();
        for &k in &self.order {
            let i = k as usize;
            if filter.matches(&self.devices[i].latest, self.status(i, now_ms)) {
                if total >= skip && items.len() < per_page {
                    items.push(self.view(i, now_ms));
                }
                total += 1;
            }
        }
        Page {
            items,
            total,
            page,
            per_page,
        }
    }

    /// How many devices are online, offline and in fault at `now_ms`.
    pub fn counts_by_status(&self, now_ms: i64) -> StatusCounts {
        let mut counts = StatusCounts::default();
        for i in 0..self.devices.len() {
            counts.add(self.status(i, now_ms));
        }
        counts
    }

    /// The devices whose status at `now_ms` differs from the one this sweep last reported for
    /// them, with the new status, in the order they were first seen; a device not reported
    /// yet counts as changed. It remembers what it returns, so there must be one caller (the
    /// serve loop's periodic sweep): a second one would take the first one's changes.
    pub fn status_changes(&mut self, now_ms: i64) -> Vec<(String, DeviceStatus)> {
        self.reported.resize(self.devices.len(), None);
        let mut changes = Vec::new();
        for i in 0..self.devices.len() {
            let status = self.status(i, now_ms);
            if self.reported[i] != Some(status) {
                self.reported[i] = Some(status);
                changes.push((self.id(i).to_owned(), status));
            }
        }
        changes
    }

    /// `parameter` of device `id` over `[from_ms, to_ms]` (event time), as at most `points`
    /// buckets (`1..=`[`MAX_POINTS`]) of min/max/avg/count; empty buckets are left out. Raw
    /// samples answer when they still hold the whole range, rollups otherwise (buckets then
    /// are a multiple of the rollup width).
    pub fn history(
        &self,
        id: &str,
        parameter: Parameter,
        from_ms: i64,
        to_ms: i64,
        points: usize,
    ) -> Result<Vec<HistoryPoint>, StoreError> {
        let dev = self.device_ref(id)?;
        let p = codec::index(parameter);
        if from_ms >= dev.raw.complete_from() {
            history::from_raw(&dev.raw, p, from_ms, to_ms, points)
        } else {
            history::from_rollups(
                &dev.rollups,
                self.rollup_width_ms,
                p,
                from_ms,
                to_ms,
                points,
            )
        }
    }

    /// Raw samples of device `id` with `from_ms <= t <= to_ms`, oldest first, decoded one at a
    /// time so an export can stream them. Only raw retention is covered.
    pub fn raw(
        &self,
        id: &str,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<impl Iterator<Item = RawSample> + '_, StoreError> {
        if from_ms > to_ms {
            return Err(StoreError::BadRange("from is after to"));
        }
        Ok(self.device_ref(id)?.raw.samples(from_ms, to_ms))
    }

    fn device_ref(&self, id: &str) -> Result<&Device, StoreError> {
        let &i = self
            .index
            .get(id)
            .ok_or_else(|| StoreError::UnknownDevice(id.to_owned()))?;
        Ok(&self.devices[i as usize])
    }

    /// Alerts passing `filter`, newest first, at most `filter.limit`.
    pub fn alerts(&self, filter: &AlertFilter) -> Vec<Alert> {
        self.alerts.list(filter)
    }

    /// Drops raw samples older than `now_ms - raw_retention` and rollup buckets that ended
    /// before `now_ms - rollup_retention`; quiet devices give memory back. Call periodically
    /// (every few seconds): between calls rings hold what arrived since.
    pub fn prune(&mut self, now_ms: i64) {
        let raw_cutoff = now_ms.saturating_sub(self.raw_retention_ms);
        let rollup_cutoff = now_ms.saturating_sub(self.rollup_retention_ms);
        for dev in &mut self.devices {
            dev.raw.prune(raw_cutoff);
            dev.rollups.prune(rollup_cutoff, self.rollup_width_ms);
        }
    }

    /// Bytes held by the store, counted from capacities (not including allocator rounding).
    pub fn memory_estimate(&self) -> usize {
        std::mem::size_of::<Store>()
            + self.devices.capacity() * std::mem::size_of::<Device>()
            + self.devices.iter().map(Device::heap_bytes).sum::<usize>()
            + table_bytes(
                self.index.capacity(),
                std::mem::size_of::<(Box<str>, u32)>(),
            )
            + self.index.keys().map(|k| k.len()).sum::<usize>()
            + self.order.capacity() * std::mem::size_of::<u32>()
            + self.alerts.heap_bytes()
            + self.reported.capacity() * std::mem::size_of::<Option<DeviceStatus>>()
    }
}

/// The live store's raw window when history is on disk (see [`StoreConfig::from_config`]).
pub const HISTORY_ON_RAW_RETENTION: Duration = Duration::from_secs(15 * 60);

impl StoreConfig {
    /// The store's bounds from `config`: as many devices as a processor tracks, rings sized for
    /// the configured send interval.
    pub fn from_config(config: &crate::config::Config) -> StoreConfig {
        let defaults = StoreConfig::default();
        let history = config.history.enabled;
        StoreConfig {
            // With history on disk, ranges are answered from there: the store keeps the raw
            // samples of the last 15 minutes (the window in which it recognises a redelivery;
            // older ones are recognised against the raw segments when they are sealed) and one
            // rollup bucket, instead of an hour and 24 h of them (~17 KB less per device).
            raw_retention: if history {
                HISTORY_ON_RAW_RETENTION
            } else {
                defaults.raw_retention
            },
            rollup_retention: if history {
                defaults.rollup_bucket
            } else {
                defaults.rollup_retention
            },
            max_devices: config.processor.max_devices,
            default_interval_ms: config.simulator.send_interval.as_millis() as i64,
            // Offline means what the offline alert rule says it means.
            offline_missed_intervals: config
                .rules
                .offline_missed_intervals()
                .unwrap_or(defaults.offline_missed_intervals),
            ..defaults
        }
    }
}
