//! Alerts as the API shows them: open ones (active or acknowledged) by id, and a bounded list of
//! recently resolved ones. Every update of an `alert_id` replaces the previous one in place.

use std::collections::VecDeque;

use hashbrown::HashMap;
use iiot_model::{Alert, AlertStatus, Severity};

use super::table_bytes;

/// Most alerts one [`super::Store::alerts`] call returns.
pub const MAX_ALERTS_LISTED: usize = 10_000;

/// Which alerts to list. Fields left `None` do not filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertFilter {
    /// Only alerts in this lifecycle position.
    pub status: Option<AlertStatus>,
    /// Only alerts of this severity.
    pub severity: Option<Severity>,
    /// Only alerts about this device.
    pub device_id: Option<String>,
    /// At most this many, newest first (clamped to `1..=`[`MAX_ALERTS_LISTED`]).
    pub limit: usize,
}

impl Default for AlertFilter {
    fn default() -> Self {
        AlertFilter {
            status: None,
            severity: None,
            device_id: None,
            limit: 1_000,
        }
    }
}

impl AlertFilter {
    fn matches(&self, a: &Alert) -> bool {
        self.status.is_none_or(|s| a.status == s)
            && self.severity.is_none_or(|s| a.severity == s)
            && self.device_id.as_deref().is_none_or(|d| a.device_id == d)
    }
}

/// Open alerts of one device.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct OpenCounts {
    pub(crate) open: u32,
    pub(crate) critical: u32,
    /// Open offline alerts (their limit is on `silence_seconds`): raised by silence, or at
    /// once by a device that said it went offline (a Sparkplug DEATH).
    pub(crate) offline: u32,
}

/// What [`AlertLog::record`] did with an alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AlertOutcome {
    /// A new open alert.
    Opened,
    /// An existing alert (open or resolved) was replaced by a newer version.
    Updated,
    /// An alert was resolved (moved to the resolved list, or added to it).
    Resolved,
    /// Older than the version already held; ignored.
    Stale,
    /// A new open alert beyond the configured maximum; ignored.
    Refused,
}

/// Position in the lifecycle; an update never moves an alert back at the same timestamp.
fn rank(s: AlertStatus) -> u8 {
    match s {
        AlertStatus::Active => 0,
        AlertStatus::Acknowledged => 1,
        AlertStatus::Resolved => 2,
    }
}

#[derive(Debug)]
pub(crate) struct AlertLog {
    open: HashMap<String, Alert>,
    by_device: HashMap<String, OpenCounts>,
    /// Oldest first; `resolved[i]` is resolved alert number `resolved_first + i`.
    resolved: VecDeque<Alert>,
    resolved_first: u64,
    resolved_index: HashMap<String, u64>,
    max_open: usize,
    max_resolved: usize,
}

impl AlertLog {
    pub(crate) fn new(max_open: usize, max_resolved: usize) -> AlertLog {
        AlertLog {
            open: HashMap::new(),
            by_device: HashMap::new(),
            resolved: VecDeque::new(),
            resolved_first: 0,
            resolved_index: HashMap::new(),
            max_open,
            max_resolved: max_resolved.max(1),
        }
    }

    /// Takes in a status change. Resolved is final: only a newer resolved copy replaces it.
    pub(crate) fn record(&mut self, a: &Alert) -> AlertOutcome {
        if let Some(&n) = self.resolved_index.get(&a.alert_id) {
            let held = &mut self.resolved[(n - self.resolved_first) as usize];
            if a.status != AlertStatus::Resolved || a.timestamp < held.timestamp {
                return AlertOutcome::Stale;
            }
            *held = a.clone();
            return AlertOutcome::Updated;
        }
        if let Some(held) = self.open.get(&a.alert_id) {
            if (a.timestamp, rank(a.status)) < (held.timestamp, rank(held.status)) {
                return AlertOutcome::Stale;
            }
        } else if a.status != AlertStatus::Resolved && self.open.len() >= self.max_open {
            return AlertOutcome::Refused;
        }
        let previous = self.open.remove(&a.alert_id);
        if let Some(p) = &previous {
            self.count(p, false);
        }
        if a.status == AlertStatus::Resolved {
            self.push_resolved(a.clone());
            return AlertOutcome::Resolved;
        }
        self.count(a, true);
        self.open.insert(a.alert_id.clone(), a.clone());
        if previous.is_some() {
            AlertOutcome::Updated
        } else {
            AlertOutcome::Opened
        }
    }

    fn count(&mut self, a: &Alert, opened: bool) {
        let critical = u32::from(a.severity == Severity::Critical);
        let offline = u32::from(a.threshold.parameter == "silence_seconds");
        if opened {
            let c = self.by_device.entry_ref(a.device_id.as_str()).or_default();
            c.open += 1;
            c.critical += critical;
            c.offline += offline;
        } else if let Some(c) = self.by_device.get_mut(a.device_id.as_str()) {
            c.open = c.open.saturating_sub(1);
            c.critical = c.critical.saturating_sub(critical);
            c.offline = c.offline.saturating_sub(offline);
            if c.open == 0 {
                self.by_device.remove(a.device_id.as_str());
            }
        }
    }

    fn push_resolved(&mut self, a: Alert) {
        if self.resolved.len() >= self.max_resolved
            && let Some(old) = self.resolved.pop_front()
        {
            self.resolved_index.remove(&old.alert_id);
            self.resolved_first += 1;
        }
        let n = self.resolved_first + self.resolved.len() as u64;
        self.resolved_index.insert(a.alert_id.clone(), n);
        self.resolved.push_back(a);
    }

    /// Open alerts of `device_id`.
    pub(crate) fn open_counts(&self, device_id: &str) -> OpenCounts {
        self.by_device.get(device_id).copied().unwrap_or_default()
    }

    /// One alert by id, open or recently resolved.
    pub(crate) fn get(&self, alert_id: &str) -> Option<&Alert> {
        self.open.get(alert_id).or_else(|| {
            let n = *self.resolved_index.get(alert_id)?;
            self.resolved.get((n - self.resolved_first) as usize)
        })
    }

    /// Alerts matching `filter`, newest first.
    pub(crate) fn list(&self, filter: &AlertFilter) -> Vec<Alert> {
        let want_open = filter.status != Some(AlertStatus::Resolved);
        let want_resolved = filter.status.is_none_or(|s| s == AlertStatus::Resolved);
        let open = self.open.values().filter(|_| want_open);
        let resolved = self.resolved.iter().filter(|_| want_resolved);
        let mut found: Vec<&Alert> = open.chain(resolved).filter(|a| filter.matches(a)).collect();
        found.sort_unstable_by(|a, b| {
            (b.timestamp.cmp(&a.timestamp)).then_with(|| a.alert_id.cmp(&b.alert_id))
        });
        found.truncate(filter.limit.clamp(1, MAX_ALERTS_LISTED));
        found.into_iter().cloned().collect()
    }

    /// Bytes held, from capacities.
    pub(crate) fn heap_bytes(&self) -> usize {
        let alert = std::mem::size_of::<Alert>();
        let strings = |a: &Alert| {
            a.alert_id.capacity()
                + a.device_id.capacity()
                + a.alert_type.capacity()
                + a.message.capacity()
                + a.threshold.parameter.capacity()
        };
        table_bytes(self.open.capacity(), std::mem::size_of::<(String, Alert)>())
            + self
                .open
                .iter()
                .map(|(k, a)| k.capacity() + strings(a))
                .sum::<usize>()
            + table_bytes(
                self.by_device.capacity(),
                std::mem::size_of::<(String, OpenCounts)>(),
            )
            + self.by_device.keys().map(String::capacity).sum::<usize>()
            + self.resolved.capacity() * alert
            + self.resolved.iter().map(strings).sum::<usize>()
            + table_bytes(
                self.resolved_index.capacity(),
                std::mem::size_of::<(String, u64)>(),
            )
            + self
                .resolved_index
                .keys()
                .map(String::capacity)
                .sum::<usize>()
    }
}
