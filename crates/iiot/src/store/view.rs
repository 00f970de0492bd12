//! What the store answers with: device views, their status, filters and pages.

use std::cmp::Ordering;

use iiot_model::Reading;
use serde::{Deserialize, Serialize};

/// Most devices on one page.
pub const MAX_PER_PAGE: usize = 1_000;

/// Health of a device as the dashboard shows it.
///
/// When a device is both silent and faulty it is `offline`: with no fresh data the store cannot
/// tell whether the fault persists, and "we hear nothing" is the more urgent fact.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeviceStatus {
    /// Reporting, no critical alert open, no sensor reporting a fault.
    Online,
    /// Nothing received for `offline_missed_intervals` (3 by default) times its send interval.
    Offline,
    /// A critical alert is open (active or acknowledged), or its latest reading has a sensor
    /// reporting `fault`.
    Fault,
}

impl DeviceStatus {
    /// Every status.
    pub const ALL: [DeviceStatus; 3] = [
        DeviceStatus::Online,
        DeviceStatus::Offline,
        DeviceStatus::Fault,
    ];

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            DeviceStatus::Online => "online",
            DeviceStatus::Offline => "offline",
            DeviceStatus::Fault => "fault",
        }
    }

    /// Parses a wire name.
    pub fn parse(name: &str) -> Option<DeviceStatus> {
        DeviceStatus::ALL.into_iter().find(|s| s.as_str() == name)
    }
}

/// One device as the API shows it. Location, model, firmware, battery and signal strength are
/// those of [`DeviceView::latest`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeviceView {
    /// The device id.
    pub device_id: String,
    /// Its status at the time asked.
    pub status: DeviceStatus,
    /// When the store last received data from it (receiver clock), Unix milliseconds.
    pub last_seen_ms: i64,
    /// Its send interval as observed (or the configured default until observed), ms.
    pub interval_ms: i64,
    /// Open (active or acknowledged) alerts about it.
    pub open_alerts: u32,
    /// Of those, how many are critical.
    pub critical_alerts: u32,
    /// Its newest reading by event time (late readings never replace it).
    pub latest: Reading<'static>,
}

/// Which devices to list, and which page. Fields left `None` do not filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceFilter {
    /// Exact building name.
    pub building: Option<String>,
    /// Exact floor.
    pub floor: Option<i32>,
    /// Only devices in this status.
    pub status: Option<DeviceStatus>,
    /// Substring (ASCII case-insensitive) of the device id, room, building or model.
    pub q: Option<String>,
    /// 1-based page number (0 is read as 1).
    pub page: usize,
    /// Devices per page, clamped to `1..=`[`MAX_PER_PAGE`].
    pub per_page: usize,
}

impl Default for DeviceFilter {
    fn default() -> Self {
        DeviceFilter {
            building: None,
            floor: None,
            status: None,
            q: None,
            page: 1,
            per_page: 100,
        }
    }
}

impl DeviceFilter {
    /// Whether `r`, the latest reading of a device in `status`, passes the filter.
    pub(crate) fn matches(&self, r: &Reading<'_>, status: DeviceStatus) -> bool {
        self.building
            .as_deref()
            .is_none_or(|b| r.location.building == b)
            && self.floor.is_none_or(|f| r.location.floor == f)
            && self.status.is_none_or(|s| s == status)
            && self.q.as_deref().is_none_or(|q| {
                [
                    &r.device_id,
                    &r.location.room,
                    &r.location.building,
                    &r.device_info.model,
                ]
                .into_iter()
                .any(|field| contains_ignore_ascii_case(field, q))
            })
    }
}

/// One page of a list.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Page<T> {
    /// The items of this page.
    pub items: Vec<T>,
    /// How many items match in all pages.
    pub total: usize,
    /// This page's number (1-based, as used).
    pub page: usize,
    /// Page size, as used.
    pub per_page: usize,
}

/// How many devices are in each status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct StatusCounts {
    /// Reporting and healthy.
    pub online: usize,
    /// Silent.
    pub offline: usize,
    /// Reporting, with a fault.
    pub fault: usize,
}

impl StatusCounts {
    pub(crate) fn add(&mut self, s: DeviceStatus) {
        match s {
            DeviceStatus::Online => self.online += 1,
            DeviceStatus::Offline => self.offline += 1,
            DeviceStatus::Fault => self.fault += 1,
        }
    }
}

/// Whether `needle` occurs in `hay`, ignoring ASCII case (other characters must match exactly).
pub(crate) fn contains_ignore_ascii_case(hay: &str, needle: &str) -> bool {
    let (hay, needle) = (hay.as_bytes(), needle.as_bytes());
    needle.is_empty()
        || hay
            .windows(needle.len())
            .any(|w| w.eq_ignore_ascii_case(needle))
}

/// Order for device ids in which runs of digits compare as numbers, so `device_2` comes before
/// `device_10` and `device_999` before `device_1000`. Ties (`device_01` vs `device_1`) fall back
/// to byte order, so the order is total.
pub(crate) fn natural_cmp(a: &str, b: &str) -> Ordering {
    let (x, y) = (a.as_bytes(), b.as_bytes());
    let (mut i, mut j) = (0, 0);
    while i < x.len() && j < y.len() {
        if x[i].is_ascii_digit() && y[j].is_ascii_digit() {
            let (si, sj) = (i, j);
            while i < x.len() && x[i].is_ascii_digit() {
                i += 1;
            }
            while j < y.len() && y[j].is_ascii_digit() {
                j += 1;
            }
            let (n, m) = (trim_zeros(&x[si..i]), trim_zeros(&y[sj..j]));
            let ord = n.len().cmp(&m.len()).then_with(|| n.cmp(m));
            if ord != Ordering::Equal {
                return ord;
            }
        } else {
            if x[i] != y[j] {
                return x[i].cmp(&y[j]);
            }
            i += 1;
            j += 1;
        }
    }
    (x.len() - i).cmp(&(y.len() - j)).then_with(|| a.cmp(b))
}

fn trim_zeros(digits: &[u8]) -> &[u8] {
    let first = digits
        .iter()
        .position(|d| *d != b'0')
        .unwrap_or(digits.len());
    &digits[first..]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_ids_sort_naturally() {
        let mut ids = vec![
            "device_1000",
            "device_101",
            "device_999",
            "device_010",
            "device_2",
            "device_10",
            "device_01",
            "device_1",
            "pump",
            "device_a",
        ];
        ids.sort_by(|a, b| natural_cmp(a, b));
        assert_eq!(
            ids,
            [
                "device_01",
                "device_1",
                "device_2",
                "device_010",
                "device_10",
                "device_101",
                "device_999",
                "device_1000",
                "device_a",
                "pump"
            ]
        );
    }

    #[test]
    fn search_ignores_ascii_case_only() {
        assert!(contains_ignore_ascii_case("IOT-SENSOR-V2", "sensor"));
        assert!(contains_ignore_ascii_case("A栋", "a栋"));
        assert!(!contains_ignore_ascii_case("A栋", "B"));
        assert!(contains_ignore_ascii_case("x", ""));
    }

    #[test]
    fn statuses_have_snake_case_wire_names() {
        for s in DeviceStatus::ALL {
            let json = serde_json::to_string(&s).expect("serializes");
            assert_eq!(json, format!("\"{}\"", s.as_str()));
            assert_eq!(DeviceStatus::parse(s.as_str()), Some(s));
        }
    }
}
