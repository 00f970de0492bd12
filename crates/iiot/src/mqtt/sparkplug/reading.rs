//! A node's or device's last values as a SPEC §2 reading.
//!
//! Every reading has every field, and a Sparkplug device often reports only some of them: a
//! field it never reported gets a fixed stand-in (temperature 0 °C, humidity 0 %, pressure
//! 1013.25 hPa, current 0 A, switch off, battery 100 %, signal 0 dBm), status `normal`.
//! Values are taken to be in our units (°C, %, hPa, A, dBm). The location is the group
//! (building) and the edge node (room), floor 0; the model is `sparkplug`.

use std::borrow::Cow;

use iiot_model::{
    DeviceInfo, Location, Measurement, Reading, SensorStatus, Sensors, SwitchReading, SwitchState,
};

use super::mapping::Field;
use super::state::Device;
use super::{Decoded, Output, Topic};

/// The stand-ins of fields never reported, by [`Field::index`].
const STAND_IN: [f64; Field::ALL.len()] = [0.0, 0.0, 1013.25, 0.0, 0.0, 100.0, 0.0];

/// Appends the reading of `device` (our id `device_id`) at `ts`, if it has any value.
pub(super) fn push(
    out: &mut Decoded,
    device: &mut Device,
    device_id: String,
    t: &Topic<'_>,
    ts: i64,
) {
    if !device.has_values() {
        return;
    }
    let value = |f: Field| device.values[f.index()].unwrap_or(STAND_IN[f.index()]);
    let measurement = |f: Field, unit: &'static str| Measurement {
        value: value(f),
        unit: Cow::Borrowed(unit),
        status: SensorStatus::Normal,
    };
    let on = value(Field::Switch) != 0.0;
    device.next_seq += 1;
    let reading = Reading {
        device_id: Cow::Borrowed(&device_id),
        seq: device.next_seq,
        timestamp: ts,
        location: Location {
            building: Cow::Borrowed(t.group),
            floor: 0,
            room: Cow::Borrowed(t.node),
        },
        sensors: Sensors {
            temperature: measurement(Field::Temperature, "°C"),
            humidity: measurement(Field::Humidity, "%"),
            pressure: measurement(Field::Pressure, "hPa"),
            switch_status: SwitchReading {
                value: on,
                status: if on {
                    SwitchState::On
                } else {
                    SwitchState::Off
                },
            },
            current: measurement(Field::Current, "A"),
        },
        device_info: DeviceInfo {
            model: Cow::Borrowed("sparkplug"),
            firmware: Cow::Borrowed(""),
            // Saturating float-to-int casts: an out-of-range value stays out of range and the
            // processor dead-letters it as such.
            battery: value(Field::Battery).round() as i64,
            signal_strength: value(Field::SignalStrength).round() as i64,
        },
    };
    // Strings, finite or not numbers and plain enums: serialising cannot fail; NaN becomes
    // null, which the processor rejects as a schema error.
    let payload = serde_json::to_vec(&reading).unwrap_or_default();
    out.outputs.push(Output::Reading { device_id, payload });
}
