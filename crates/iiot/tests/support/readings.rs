//! Readings as devices send them, in the forms the tests need: a typed example, its JSON, a
//! full JSON reading with chosen values and site, and the small payloads the hub forwards.

use bytes::Bytes;
use iiot_model::Reading;

/// `iiot_model::Reading::example`: a normal reading of `device` with the given temperature.
pub fn reading(device: &str, seq: u64, ts: i64, temperature: f64) -> Reading<'static> {
    Reading::example(device, seq, ts, temperature)
}

/// [`reading`] as the JSON a device publishes.
pub fn reading_bytes(device: &str, seq: u64, ts: i64, temperature: f64) -> Bytes {
    let reading = reading(device, seq, ts, temperature);
    Bytes::from(serde_json::to_vec(&reading).expect("serializes"))
}

/// A payload the hub forwards as it is: only a temperature, no timestamp.
pub fn hub_reading(device: &str, seq: u64) -> Vec<u8> {
    format!(r#"{{"device_id":"{device}","seq":{seq},"sensors":{{"temperature":{{"value":21.5,"unit":"°C","status":"normal"}}}}}}"#)
        .into_bytes()
}

/// The values of reading number `i` of the test series (two decimals, as devices send them).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Values {
    pub temperature: f64,
    pub humidity: f64,
    pub pressure: f64,
    pub current: f64,
    pub battery: i64,
    pub signal: i64,
    pub on: bool,
}

impl Values {
    pub fn of(i: u64) -> Values {
        Values {
            temperature: 20.0 + (i % 50) as f64 * 0.25,
            humidity: 40.0 + (i % 30) as f64 * 0.5,
            pressure: 1000.0 + (i % 100) as f64 * 0.25,
            current: 1.0 + (i % 20) as f64 * 0.1,
            battery: 50 + (i % 50) as i64,
            signal: -40 - (i % 40) as i64,
            on: i % 3 >= 1,
        }
    }

    /// The numeric columns of an export row, in export order.
    pub fn as_row(&self) -> [f64; 6] {
        [
            self.temperature,
            self.humidity,
            self.pressure,
            self.current,
            self.battery as f64,
            self.signal as f64,
        ]
    }
}

/// Where a device is and how its temperature sensor feels.
#[derive(Clone, Copy)]
pub struct Site {
    pub building: &'static str,
    pub floor: i32,
    pub room: &'static str,
    pub temperature_status: &'static str,
}

pub const SITE_A: Site = Site {
    building: "A栋",
    floor: 3,
    room: "301",
    temperature_status: "normal",
};

/// A complete reading with values `v` at `site`, as JSON text.
pub fn reading_json(id: &str, seq: u64, t: i64, v: Values, site: Site) -> String {
    format!(
        r#"{{"device_id":"{id}","seq":{seq},"timestamp":{t},
        "location":{{"building":"{}","floor":{},"room":"{}"}},
        "sensors":{{"temperature":{{"value":{:.2},"unit":"°C","status":"{}"}},
          "humidity":{{"value":{:.2},"unit":"%","status":"normal"}},
          "pressure":{{"value":{:.2},"unit":"hPa","status":"normal"}},
          "switch_status":{{"value":{},"status":"{}"}},
          "current":{{"value":{:.2},"unit":"A","status":"normal"}}}},
        "device_info":{{"model":"IOT-SENSOR-V2","firmware":"1.2.3","battery":{},"signal_strength":{}}}}}"#,
        site.building,
        site.floor,
        site.room,
        v.temperature,
        site.temperature_status,
        v.humidity,
        v.pressure,
        v.on,
        if v.on { "on" } else { "off" },
        v.current,
        v.battery,
        v.signal,
    )
}
