//! Everything the store keeps about one device.

use std::borrow::Cow;

use iiot_model::{Parameter, Reading};

use super::raw::RawRing;
use super::rollup::RollupRing;
use super::view::DeviceStatus;
use crate::liveness::Liveness;

/// One device: its newest reading, when it was last heard from, its send interval, and its
/// history.
#[derive(Debug)]
pub(crate) struct Device {
    /// Newest by (event time, seq); strings are reused across readings, units are `'static`.
    pub(crate) latest: Reading<'static>,
    /// Heard from at every reading that arrived (late ones included: data did arrive); the
    /// interval learned from readings that became latest. The alert engine judges offline
    /// with the same type, so status and offline alert agree on who is silent.
    pub(crate) liveness: Liveness,
    pub(crate) raw: RawRing,
    pub(crate) rollups: RollupRing,
}

impl Device {
    pub(crate) fn new(r: &Reading<'_>, received_ms: i64) -> Device {
        let mut latest = r.clone().into_owned();
        for p in Parameter::SENSORS {
            if let Some(m) = measurement_mut(&mut latest, p) {
                set_unit(&mut m.unit, p);
            }
        }
        let mut liveness = Liveness::default();
        liveness.touch(received_ms);
        // The first event time only marks where the next gap starts (no default needed).
        liveness.observe_event(r.timestamp, 0);
        Device {
            latest,
            liveness,
            raw: RawRing::new(),
            rollups: RollupRing::new(),
        }
    }

    /// Whether `r` is the reading already held as latest (a redelivery).
    pub(crate) fn is_latest(&self, r: &Reading<'_>) -> bool {
        (r.timestamp, r.seq) == (self.latest.timestamp, self.latest.seq)
    }

    /// Makes `r` the latest reading if it is newer by event time, then seq; late and
    /// out-of-order readings never move it back. Returns whether it did.
    pub(crate) fn advance_latest(&mut self, r: &Reading<'_>, default_interval_ms: i64) -> bool {
        if (r.timestamp, r.seq) <= (self.latest.timestamp, self.latest.seq) {
            return false;
        }
        self.liveness
            .observe_event(r.timestamp, default_interval_ms);
        refresh(&mut self.latest, r);
        true
    }

    /// Status at `now_ms`: offline after `missed_intervals` send intervals of silence (as the
    /// offline alert), or while an offline alert is open (`offline_open`: also raised at once
    /// when the device said it went offline). Offline wins over fault (see [`DeviceStatus`]).
    pub(crate) fn status(
        &self,
        now_ms: i64,
        missed_intervals: f64,
        default_interval_ms: i64,
        critical_open: bool,
        offline_open: bool,
    ) -> DeviceStatus {
        if offline_open
            || self
                .liveness
                .is_silent(now_ms, missed_intervals, default_interval_ms)
        {
            DeviceStatus::Offline
        } else if critical_open || self.latest.has_sensor_fault() {
            DeviceStatus::Fault
        } else {
            DeviceStatus::Online
        }
    }

    /// Heap bytes held by this device (its struct itself is counted by the caller).
    pub(crate) fn heap_bytes(&self) -> usize {
        let r = &self.latest;
        let owned = |s: &Cow<'static, str>| match s {
            Cow::Owned(s) => s.capacity(),
            Cow::Borrowed(_) => 0,
        };
        let strings = [
            &r.device_id,
            &r.location.building,
            &r.location.room,
            &r.device_info.model,
            &r.device_info.firmware,
            &r.sensors.temperature.unit,
            &r.sensors.humidity.unit,
            &r.sensors.pressure.unit,
            &r.sensors.current.unit,
        ];
        strings.into_iter().map(owned).sum::<usize>()
            + self.raw.heap_bytes()
            + self.rollups.heap_bytes()
    }
}

fn measurement_mut<'r>(
    r: &'r mut Reading<'static>,
    p: Parameter,
) -> Option<&'r mut iiot_model::Measurement<'static>> {
    match p {
        Parameter::Temperature => Some(&mut r.sensors.temperature),
        Parameter::Humidity => Some(&mut r.sensors.humidity),
        Parameter::Pressure => Some(&mut r.sensors.pressure),
        Parameter::Current => Some(&mut r.sensors.current),
        Parameter::Battery | Parameter::SignalStrength => None,
    }
}

/// Units are validated to be the parameter's own, so they can point at the `'static` name.
fn set_unit(unit: &mut Cow<'static, str>, p: Parameter) {
    if unit.as_ref() == p.unit() {
        *unit = Cow::Borrowed(p.unit());
    }
}

/// Replaces `dst` with `src`, allocating only for strings that changed (they rarely do).
fn refresh(dst: &mut Reading<'static>, src: &Reading<'_>) {
    fn set(dst: &mut Cow<'static, str>, src: &str) {
        if dst.as_ref() != src {
            *dst = Cow::Owned(src.to_owned());
        }
    }
    dst.seq = src.seq;
    dst.timestamp = src.timestamp;
    set(&mut dst.location.building, &src.location.building);
    dst.location.floor = src.location.floor;
    set(&mut dst.location.room, &src.location.room);
    for p in Parameter::SENSORS {
        if let (Some(d), Some(s)) = (measurement_mut(dst, p), src.measurement(p)) {
            d.value = s.value;
            d.status = s.status;
            if d.unit != s.unit {
                d.unit = Cow::Owned(s.unit.to_string());
                set_unit(&mut d.unit, p);
            }
        }
    }
    dst.sensors.switch_status = src.sensors.switch_status;
    set(&mut dst.device_info.model, &src.device_info.model);
    set(&mut dst.device_info.firmware, &src.device_info.firmware);
    dst.device_info.battery = src.device_info.battery;
    dst.device_info.signal_strength = src.device_info.signal_strength;
}
