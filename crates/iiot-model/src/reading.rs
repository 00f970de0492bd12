//! The device reading (SPEC §2): what a device publishes on `device-data`, keyed by `device_id`.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

/// One reading of one device. Strings are [`Cow`] so that [`crate::decode`] borrows them from the
/// message buffer (no allocation per field) while the simulator can build owned ones.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reading<'a> {
    /// Stable device identifier, also the Kafka key (`device_001`).
    #[serde(borrow)]
    pub device_id: Cow<'a, str>,
    /// Counts up by one per device per reading; how every stage sees loss, duplicates, reordering.
    pub seq: u64,
    /// Event time, Unix milliseconds.
    pub timestamp: i64,
    /// Where the device is installed.
    #[serde(borrow)]
    pub location: Location<'a>,
    /// The five sensors of the device.
    #[serde(borrow)]
    pub sensors: Sensors<'a>,
    /// Hardware, firmware and radio facts.
    #[serde(borrow)]
    pub device_info: DeviceInfo<'a>,
}

/// Installation site of a device.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Location<'a> {
    /// Building name, e.g. `A栋`.
    #[serde(borrow)]
    pub building: Cow<'a, str>,
    /// Floor number (basements are negative).
    pub floor: i32,
    /// Room label, e.g. `301`.
    #[serde(borrow)]
    pub room: Cow<'a, str>,
}

/// The sensors every device carries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sensors<'a> {
    /// Temperature in °C.
    #[serde(borrow)]
    pub temperature: Measurement<'a>,
    /// Relative humidity in %.
    #[serde(borrow)]
    pub humidity: Measurement<'a>,
    /// Air pressure in hPa.
    #[serde(borrow)]
    pub pressure: Measurement<'a>,
    /// Whether the machine the device watches is switched on.
    pub switch_status: SwitchReading,
    /// Current drawn, in A.
    #[serde(borrow)]
    pub current: Measurement<'a>,
}

/// A numeric sensor value with its unit and the sensor's own view of its health.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Measurement<'a> {
    /// The measured value; must be finite.
    pub value: f64,
    /// Unit, which must match the sensor (see [`Parameter::unit`]).
    #[serde(borrow)]
    pub unit: Cow<'a, str>,
    /// The sensor's self-reported status.
    pub status: SensorStatus,
}

/// Status a sensor reports about itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SensorStatus {
    /// Working and in its normal band.
    Normal,
    /// Working, value outside its comfortable band.
    Warning,
    /// Working, value dangerous.
    Critical,
    /// The sensor itself is faulty; its value is not to be trusted.
    Fault,
}

/// The switch sensor: on/off as a boolean and as a word.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SwitchReading {
    /// `true` when on.
    pub value: bool,
    /// `on` or `off`; must agree with `value`.
    pub status: SwitchState,
}

/// Position of the machine's switch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SwitchState {
    /// Switched on.
    On,
    /// Switched off.
    Off,
}

/// Hardware, firmware and radio facts of a device.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceInfo<'a> {
    /// Hardware model, e.g. `IOT-SENSOR-V2`.
    #[serde(borrow)]
    pub model: Cow<'a, str>,
    /// Firmware version, e.g. `1.2.3`.
    #[serde(borrow)]
    pub firmware: Cow<'a, str>,
    /// Battery charge in percent (0–100). Wider type so that bad values are range errors.
    pub battery: i64,
    /// Radio signal strength in dBm (negative).
    pub signal_strength: i64,
}

/// A numeric quantity of a reading that alert rules and aggregates can look at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Parameter {
    /// `sensors.temperature.value`, °C.
    Temperature,
    /// `sensors.humidity.value`, %.
    Humidity,
    /// `sensors.pressure.value`, hPa.
    Pressure,
    /// `sensors.current.value`, A.
    Current,
    /// `device_info.battery`, %.
    Battery,
    /// `device_info.signal_strength`, dBm.
    SignalStrength,
}

impl Parameter {
    /// Every parameter, in a fixed order.
    pub const ALL: [Parameter; 6] = [
        Parameter::Temperature,
        Parameter::Humidity,
        Parameter::Pressure,
        Parameter::Current,
        Parameter::Battery,
        Parameter::SignalStrength,
    ];

    /// The four sensor measurements (those with a unit and status of their own).
    pub const SENSORS: [Parameter; 4] = [
        Parameter::Temperature,
        Parameter::Humidity,
        Parameter::Pressure,
        Parameter::Current,
    ];

    /// The wire name (`temperature`, `signal_strength`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            Parameter::Temperature => "temperature",
            Parameter::Humidity => "humidity",
            Parameter::Pressure => "pressure",
            Parameter::Current => "current",
            Parameter::Battery => "battery",
            Parameter::SignalStrength => "signal_strength",
        }
    }

    /// Parses a wire name.
    pub fn parse(name: &str) -> Option<Parameter> {
        Parameter::ALL.into_iter().find(|p| p.as_str() == name)
    }

    /// The unit a device must report for this parameter.
    pub fn unit(self) -> &'static str {
        match self {
            Parameter::Temperature => "°C",
            Parameter::Humidity | Parameter::Battery => "%",
            Parameter::Pressure => "hPa",
            Parameter::Current => "A",
            Parameter::SignalStrength => "dBm",
        }
    }

    /// The physically plausible range; values outside are rejected as `out_of_range`. Wide on
    /// purpose: an overheating machine at 150 °C is real data an alert must see, not noise.
    pub fn plausible_range(self) -> (f64, f64) {
        match self {
            Parameter::Temperature => (-60.0, 250.0),
            Parameter::Humidity | Parameter::Battery => (0.0, 100.0),
            Parameter::Pressure => (300.0, 1200.0),
            Parameter::Current => (0.0, 200.0),
            Parameter::SignalStrength => (-150.0, 0.0),
        }
    }
}

impl std::fmt::Display for Parameter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Reading<'_> {
    /// The value of `parameter` in this reading.
    pub fn value(&self, parameter: Parameter) -> f64 {
        match parameter {
            Parameter::Temperature => self.sensors.temperature.value,
            Parameter::Humidity => self.sensors.humidity.value,
            Parameter::Pressure => self.sensors.pressure.value,
            Parameter::Current => self.sensors.current.value,
            // Battery and signal are small integers: the conversion is exact.
            Parameter::Battery => self.device_info.battery as f64,
            Parameter::SignalStrength => self.device_info.signal_strength as f64,
        }
    }

    /// The measurement of a sensor parameter, `None` for battery and signal strength.
    pub fn measurement(&self, parameter: Parameter) -> Option<&Measurement<'_>> {
        match parameter {
            Parameter::Temperature => Some(&self.sensors.temperature),
            Parameter::Humidity => Some(&self.sensors.humidity),
            Parameter::Pressure => Some(&self.sensors.pressure),
            Parameter::Current => Some(&self.sensors.current),
            Parameter::Battery | Parameter::SignalStrength => None,
        }
    }

    /// Whether any sensor reports itself faulty.
    pub fn has_sensor_fault(&self) -> bool {
        Parameter::SENSORS
            .iter()
            .filter_map(|p| self.measurement(*p))
            .any(|m| m.status == SensorStatus::Fault)
    }

    /// The SPEC §2 example reading (building A栋, floor 3, room 301, 65.2 %, 1013.25 hPa, switch
    /// on, 2.5 A, IOT-SENSOR-V2 1.2.3, battery 85, −45 dBm) with the given device, `seq`, event
    /// time and temperature: one valid reading for docs, tests and tools to vary.
    pub fn example(
        device_id: &str,
        seq: u64,
        timestamp: i64,
        temperature: f64,
    ) -> Reading<'static> {
        let m = |value: f64, p: Parameter| Measurement {
            value,
            unit: Cow::Borrowed(p.unit()),
            status: SensorStatus::Normal,
        };
        Reading {
            device_id: Cow::Owned(device_id.to_owned()),
            seq,
            timestamp,
            location: Location {
                building: Cow::Borrowed("A栋"),
                floor: 3,
                room: Cow::Borrowed("301"),
            },
            sensors: Sensors {
                temperature: m(temperature, Parameter::Temperature),
                humidity: m(65.2, Parameter::Humidity),
                pressure: m(1013.25, Parameter::Pressure),
                switch_status: SwitchReading {
                    value: true,
                    status: SwitchState::On,
                },
                current: m(2.5, Parameter::Current),
            },
            device_info: DeviceInfo {
                model: Cow::Borrowed("IOT-SENSOR-V2"),
                firmware: Cow::Borrowed("1.2.3"),
                battery: 85,
                signal_strength: -45,
            },
        }
    }

    /// An owned copy, detached from the buffer it was parsed from.
    pub fn into_owned(self) -> Reading<'static> {
        fn own(c: Cow<'_, str>) -> Cow<'static, str> {
            Cow::Owned(c.into_owned())
        }
        fn own_m(m: Measurement<'_>) -> Measurement<'static> {
            Measurement {
                value: m.value,
                unit: own(m.unit),
                status: m.status,
            }
        }
        Reading {
            device_id: own(self.device_id),
            seq: self.seq,
            timestamp: self.timestamp,
            location: Location {
                building: own(self.location.building),
                floor: self.location.floor,
                room: own(self.location.room),
            },
            sensors: Sensors {
                temperature: own_m(self.sensors.temperature),
                humidity: own_m(self.sensors.humidity),
                pressure: own_m(self.sensors.pressure),
                switch_status: self.sensors.switch_status,
                current: own_m(self.sensors.current),
            },
            device_info: DeviceInfo {
                model: own(self.device_info.model),
                firmware: own(self.device_info.firmware),
                battery: self.device_info.battery,
                signal_strength: self.device_info.signal_strength,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The exact example of SPEC §2.
    pub(crate) const SPEC_EXAMPLE: &str = r#"{"device_id":"device_001","seq":42,"timestamp":1640995200000,"location":{"building":"A栋","floor":3,"room":"301"},"sensors":{"temperature":{"value":25.6,"unit":"°C","status":"normal"},"humidity":{"value":65.2,"unit":"%","status":"normal"},"pressure":{"value":1013.25,"unit":"hPa","status":"normal"},"switch_status":{"value":true,"status":"on"},"current":{"value":2.5,"unit":"A","status":"normal"}},"device_info":{"model":"IOT-SENSOR-V2","firmware":"1.2.3","battery":85,"signal_strength":-45}}"#;

    #[test]
    fn spec_example_parses_borrowed_and_serializes_back_identically() {
        let r: Reading<'_> = serde_json::from_str(SPEC_EXAMPLE).expect("spec example parses");
        assert!(matches!(r.device_id, Cow::Borrowed(_)));
        assert!(matches!(r.location.building, Cow::Borrowed("A栋")));
        assert_eq!(r.seq, 42);
        assert_eq!(r.value(Parameter::Pressure), 1013.25);
        assert_eq!(r.value(Parameter::SignalStrength), -45.0);
        assert_eq!(serde_json::to_string(&r).expect("serializes"), SPEC_EXAMPLE);
    }

    #[test]
    fn the_example_is_the_spec_example() {
        let spec: Reading<'_> = serde_json::from_str(SPEC_EXAMPLE).expect("parses");
        assert_eq!(
            Reading::example("device_001", 42, 1640995200000, 25.6),
            spec
        );
    }

    #[test]
    fn parameter_names_round_trip() {
        for p in Parameter::ALL {
            assert_eq!(Parameter::parse(p.as_str()), Some(p));
            let json = serde_json::to_string(&p).expect("serializes");
            assert_eq!(json, format!("\"{}\"", p.as_str()));
        }
        assert_eq!(Parameter::parse("voltage"), None);
    }

    #[test]
    fn sensor_fault_is_seen() {
        let mut r: Reading<'_> = serde_json::from_str(SPEC_EXAMPLE).expect("parses");
        assert!(!r.has_sensor_fault());
        r.sensors.humidity.status = SensorStatus::Fault;
        assert!(r.has_sensor_fault());
    }
}
