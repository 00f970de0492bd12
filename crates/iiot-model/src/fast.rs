//! A schema-specific fast path for [`crate::decode`]: reads the common, well-formed reading
//! without serde's generic machinery (per-key identifier dispatch, per-string checks), which
//! is most of the processor stage's time.
//!
//! It is deliberately strict: it returns `None` for anything it is not sure about — escapes in
//! strings, unknown or repeated keys, numbers out of range or not finite, unexpected values —
//! and `decode` then uses serde_json, which gives the authoritative answer and error. So the
//! fast path can only be faster, never more lenient: the property tests check that whatever it
//! accepts, serde accepts identically.

use std::borrow::Cow;

use crate::reading::{
    DeviceInfo, Location, Measurement, Reading, SensorStatus, Sensors, SwitchReading, SwitchState,
};

/// Parses a reading, or `None` to let the general parser decide.
pub(crate) fn parse(text: &str) -> Option<Reading<'_>> {
    let mut c = Cursor { s: text, i: 0 };
    let r = c.reading()?;
    c.ws();
    (c.i == text.len()).then_some(r)
}

struct Cursor<'a> {
    s: &'a str,
    i: usize,
}

/// Marks a key as seen; `None` if it was seen before (serde rejects duplicate fields).
fn first(seen: &mut u32, bit: u32) -> Option<()> {
    if *seen & bit != 0 {
        return None;
    }
    *seen |= bit;
    Some(())
}

impl<'a> Cursor<'a> {
    fn peek(&self) -> Option<u8> {
        self.s.as_bytes().get(self.i).copied()
    }

    fn ws(&mut self) {
        while let Some(b' ' | b'\n' | b'\r' | b'\t') = self.peek() {
            self.i += 1;
        }
    }

    fn eat(&mut self, byte: u8) -> Option<()> {
        self.ws();
        (self.peek()? == byte).then(|| self.i += 1)
    }

    /// Calls `field` for each key of an object until its end.
    fn object(&mut self, mut field: impl FnMut(&mut Self, &'a str) -> Option<()>) -> Option<()> {
        self.eat(b'{')?;
        self.ws();
        if self.peek()? == b'}' {
            self.i += 1;
            return Some(());
        }
        loop {
            let key = self.string()?;
            self.eat(b':')?;
            field(self, key)?;
            self.ws();
            match self.peek()? {
                b',' => self.i += 1,
                b'}' => {
                    self.i += 1;
                    return Some(());
                }
                _ => return None,
            }
        }
    }

    /// A string without escapes or control characters, borrowed.
    fn string(&mut self) -> Option<&'a str> {
        self.eat(b'"')?;
        let bytes = self.s.as_bytes();
        let start = self.i;
        loop {
            match *bytes.get(self.i)? {
                b'"' => break,
                b'\\' | 0..=0x1f => return None,
                _ => self.i += 1,
            }
        }
        let s = self.s.get(start..self.i)?;
        self.i += 1;
        Some(s)
    }

    /// The text of a JSON number (grammar-checked), and whether it is an integer.
    fn number_text(&mut self) -> Option<(&'a str, bool)> {
        self.ws();
        let bytes = self.s.as_bytes();
        let start = self.i;
        let digits = |c: &mut Self| {
            let from = c.i;
            while c.peek().is_some_and(|b| b.is_ascii_digit()) {
                c.i += 1;
            }
            c.i > from
        };
        if self.peek() == Some(b'-') {
            self.i += 1;
        }
        match self.peek()? {
            b'0' => self.i += 1,
            b'1'..=b'9' => {
                digits(self);
            }
            _ => return None,
        }
        let mut integer = true;
        if self.peek() == Some(b'.') {
            self.i += 1;
            integer = false;
            if !digits(self) {
                return None;
            }
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.i += 1;
            integer = false;
            if let Some(b'+' | b'-') = self.peek() {
                self.i += 1;
            }
            if !digits(self) {
                return None;
            }
        }
        Some((std::str::from_utf8(&bytes[start..self.i]).ok()?, integer))
    }

    fn f64(&mut self) -> Option<f64> {
        let (text, _) = self.number_text()?;
        // std's parser is correctly rounded; a non-finite result (1e999) goes to the general
        // path, which reports it.
        text.parse::<f64>().ok().filter(|v| v.is_finite())
    }

    fn int<T: std::str::FromStr>(&mut self) -> Option<T> {
        let (text, integer) = self.number_text()?;
        if !integer {
            return None;
        }
        text.parse().ok()
    }

    fn bool(&mut self) -> Option<bool> {
        self.ws();
        let rest = self.s.get(self.i..)?;
        if rest.starts_with("true") {
            self.i += 4;
            Some(true)
        } else if rest.starts_with("false") {
            self.i += 5;
            Some(false)
        } else {
            None
        }
    }

    fn reading(&mut self) -> Option<Reading<'a>> {
        let (mut device_id, mut seq, mut timestamp) = (None, None, None);
        let (mut location, mut sensors, mut device_info) = (None, None, None);
        let mut seen = 0u32;
        self.object(|c, key| {
            match key {
                "device_id" => {
                    first(&mut seen, 1)?;
                    device_id = Some(c.string()?);
                }
                "seq" => {
                    first(&mut seen, 2)?;
                    seq = Some(c.int::<u64>()?);
                }
                "timestamp" => {
                    first(&mut seen, 4)?;
                    timestamp = Some(c.int::<i64>()?);
                }
                "location" => {
                    first(&mut seen, 8)?;
                    location = Some(c.location()?);
                }
                "sensors" => {
                    first(&mut seen, 16)?;
                    sensors = Some(c.sensors()?);
                }
                "device_info" => {
                    first(&mut seen, 32)?;
                    device_info = Some(c.device_info()?);
                }
                _ => return None,
            };
            Some(())
        })?;
        Some(Reading {
            device_id: Cow::Borrowed(device_id?),
            seq: seq?,
            timestamp: timestamp?,
            location: location?,
            sensors: sensors?,
            device_info: device_info?,
        })
    }

    fn location(&mut self) -> Option<Location<'a>> {
        let (mut building, mut floor, mut room) = (None, None, None);
        let mut seen = 0u32;
        self.object(|c, key| {
            match key {
                "building" => {
                    first(&mut seen, 1)?;
                    building = Some(c.string()?);
                }
                "floor" => {
                    first(&mut seen, 2)?;
                    floor = Some(c.int::<i32>()?);
                }
                "room" => {
                    first(&mut seen, 4)?;
                    room = Some(c.string()?);
                }
                _ => return None,
            };
            Some(())
        })?;
        Some(Location {
            building: Cow::Borrowed(building?),
            floor: floor?,
            room: Cow::Borrowed(room?),
        })
    }

    fn sensors(&mut self) -> Option<Sensors<'a>> {
        let (mut temperature, mut humidity, mut pressure) = (None, None, None);
        let (mut switch_status, mut current) = (None, None);
        let mut seen = 0u32;
        self.object(|c, key| {
            match key {
                "temperature" => {
                    first(&mut seen, 1)?;
                    temperature = Some(c.measurement()?);
                }
                "humidity" => {
                    first(&mut seen, 2)?;
                    humidity = Some(c.measurement()?);
                }
                "pressure" => {
                    first(&mut seen, 4)?;
                    pressure = Some(c.measurement()?);
                }
                "switch_status" => {
                    first(&mut seen, 8)?;
                    switch_status = Some(c.switch()?);
                }
                "current" => {
                    first(&mut seen, 16)?;
                    current = Some(c.measurement()?);
                }
                _ => return None,
            };
            Some(())
        })?;
        Some(Sensors {
            temperature: temperature?,
            humidity: humidity?,
            pressure: pressure?,
            switch_status: switch_status?,
            current: current?,
        })
    }

    fn measurement(&mut self) -> Option<Measurement<'a>> {
        let (mut value, mut unit, mut status) = (None, None, None);
        let mut seen = 0u32;
        self.object(|c, key| {
            match key {
                "value" => {
                    first(&mut seen, 1)?;
                    value = Some(c.f64()?);
                }
                "unit" => {
                    first(&mut seen, 2)?;
                    unit = Some(c.string()?);
                }
                "status" => {
                    first(&mut seen, 4)?;
                    status = Some(match c.string()? {
                        "normal" => SensorStatus::Normal,
                        "warning" => SensorStatus::Warning,
                        "critical" => SensorStatus::Critical,
                        "fault" => SensorStatus::Fault,
                        _ => return None,
                    });
                }
                _ => return None,
            };
            Some(())
        })?;
        Some(Measurement {
            value: value?,
            unit: Cow::Borrowed(unit?),
            status: status?,
        })
    }

    fn switch(&mut self) -> Option<SwitchReading> {
        let (mut value, mut status) = (None, None);
        let mut seen = 0u32;
        self.object(|c, key| {
            match key {
                "value" => {
                    first(&mut seen, 1)?;
                    value = Some(c.bool()?);
                }
                "status" => {
                    first(&mut seen, 2)?;
                    status = Some(match c.string()? {
                        "on" => SwitchState::On,
                        "off" => SwitchState::Off,
                        _ => return None,
                    });
                }
                _ => return None,
            };
            Some(())
        })?;
        Some(SwitchReading {
            value: value?,
            status: status?,
        })
    }

    fn device_info(&mut self) -> Option<DeviceInfo<'a>> {
        let (mut model, mut firmware, mut battery, mut signal) = (None, None, None, None);
        let mut seen = 0u32;
        self.object(|c, key| {
            match key {
                "model" => {
                    first(&mut seen, 1)?;
                    model = Some(c.string()?);
                }
                "firmware" => {
                    first(&mut seen, 2)?;
                    firmware = Some(c.string()?);
                }
                "battery" => {
                    first(&mut seen, 4)?;
                    battery = Some(c.int::<i64>()?);
                }
                "signal_strength" => {
                    first(&mut seen, 8)?;
                    signal = Some(c.int::<i64>()?);
                }
                _ => return None,
            };
            Some(())
        })?;
        Some(DeviceInfo {
            model: Cow::Borrowed(model?),
            firmware: Cow::Borrowed(firmware?),
            battery: battery?,
            signal_strength: signal?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Equal, except that floats may differ by one unit in the last place: serde_json's default
    /// float parser is not correctly rounded for 16–17-digit inputs, std's (used here) is.
    fn same(a: &Reading<'_>, b: &Reading<'_>) -> bool {
        let close = |x: f64, y: f64| x.to_bits().abs_diff(y.to_bits()) <= 1;
        let mut b2 = b.clone();
        for (m, n) in [
            (&a.sensors.temperature, &mut b2.sensors.temperature),
            (&a.sensors.humidity, &mut b2.sensors.humidity),
            (&a.sensors.pressure, &mut b2.sensors.pressure),
            (&a.sensors.current, &mut b2.sensors.current),
        ] {
            if !close(m.value, n.value) {
                return false;
            }
            n.value = m.value;
        }
        *a == b2
    }

    fn arbitrary_reading() -> impl Strategy<Value = String> {
        (
            "[a-z_0-9]{1,12}",
            any::<u64>(),
            any::<i64>(),
            any::<i32>(),
            prop::array::uniform4(any::<f64>().prop_filter("finite", |v| v.is_finite())),
            any::<bool>(),
            any::<i64>(),
            any::<i64>(),
            "[a-zA-Z0-9 栋°%.:/-]{0,8}",
        )
            .prop_map(|(id, seq, ts, floor, v, on, battery, signal, text)| {
                let m = |value: f64, unit: &'static str| Measurement {
                    value,
                    unit: Cow::Borrowed(unit),
                    status: SensorStatus::Warning,
                };
                let r = Reading {
                    device_id: Cow::Owned(id),
                    seq,
                    timestamp: ts,
                    location: Location {
                        building: Cow::Owned(text.clone()),
                        floor,
                        room: Cow::Owned(text),
                    },
                    sensors: Sensors {
                        temperature: m(v[0], "°C"),
                        humidity: m(v[1], "%"),
                        pressure: m(v[2], "hPa"),
                        switch_status: SwitchReading {
                            value: on,
                            status: if on {
                                SwitchState::On
                            } else {
                                SwitchState::Off
                            },
                        },
                        current: m(v[3], "A"),
                    },
                    device_info: DeviceInfo {
                        model: Cow::Borrowed("m"),
                        firmware: Cow::Borrowed("f"),
                        battery,
                        signal_strength: signal,
                    },
                };
                serde_json::to_string(&r).expect("serializes")
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(3000))]

        /// Anything serde_json writes, the fast path reads back exactly (floats included).
        #[test]
        fn reads_back_what_serde_writes(text in arbitrary_reading()) {
            let fast = parse(&text).expect("fast path takes well-formed readings");
            let back = serde_json::to_string(&fast).expect("serializes");
            prop_assert_eq!(back, text);
        }

        /// The fast path is never more lenient than serde, and agrees with it.
        #[test]
        fn accepts_only_what_serde_accepts(text in arbitrary_reading(), at in any::<usize>(), byte in 0x20u8..0x7f, cut in any::<bool>()) {
            let mut bytes = text.into_bytes();
            let i = at % bytes.len();
            if cut { bytes.truncate(i) } else { bytes[i] = byte }
            let Ok(text) = String::from_utf8(bytes) else { return Ok(()) };
            if let Some(fast) = parse(&text) {
                let slow: Reading<'_> = serde_json::from_str(&text)
                    .map_err(|e| TestCaseError::fail(format!("serde rejects what the fast path took: {e}: {text}")))?;
                prop_assert!(same(&fast, &slow), "{:?} vs {:?}", fast, slow);
            }
        }
    }

    const SPEC: &str = r#"{"device_id":"device_001","seq":42,"timestamp":1640995200000,"location":{"building":"A栋","floor":3,"room":"301"},"sensors":{"temperature":{"value":25.6,"unit":"°C","status":"normal"},"humidity":{"value":65.2,"unit":"%","status":"normal"},"pressure":{"value":1013.25,"unit":"hPa","status":"normal"},"switch_status":{"value":true,"status":"on"},"current":{"value":2.5,"unit":"A","status":"normal"}},"device_info":{"model":"IOT-SENSOR-V2","firmware":"1.2.3","battery":85,"signal_strength":-45}}"#;

    fn serde(text: &str) -> Reading<'_> {
        serde_json::from_str(text).expect("serde accepts")
    }

    #[test]
    fn reads_the_spec_example_like_serde() {
        assert_eq!(parse(SPEC), Some(serde(SPEC)));
    }

    #[test]
    fn accepts_whitespace_reordering_and_integer_values() {
        let text = r#" {
            "seq" : 7, "device_id":"d1", "timestamp":1640995200000,
            "device_info":{"signal_strength":-45,"battery":85,"firmware":"1","model":"m"},
            "location":{"room":"1","floor":-2,"building":"B"},
            "sensors":{"current":{"status":"fault","unit":"A","value":3},
              "switch_status":{"status":"off","value":false},
              "pressure":{"value":1e3,"unit":"hPa","status":"warning"},
              "humidity":{"value":0,"unit":"%","status":"critical"},
              "temperature":{"value":-0.5,"unit":"°C","status":"normal"}}
        } "#;
        assert_eq!(parse(text), Some(serde(text)));
    }

    #[test]
    fn leaves_anything_unusual_to_serde() {
        let unusual = [
            SPEC.replace("device_001", "device\\u0030"), // escape
            SPEC.replace("\"seq\":42", "\"seq\":42,\"seq\":43"), // duplicate key
            SPEC.replace("\"seq\":42", "\"seq\":42,\"extra\":1"), // unknown key
            SPEC.replace("\"seq\":42,", ""),             // missing key
            SPEC.replace("42", "4.2"),                   // not an integer
            SPEC.replace("42", "-42"),                   // negative u64
            SPEC.replace("25.6", "1e999"),               // not finite
            SPEC.replace("25.6", "NaN"),
            SPEC.replace("25.6", "01"), // bad number grammar
            SPEC.replace("25.6", ".5"),
            SPEC.replace("\"normal\"", "\"ok\""), // unknown enum
            SPEC.replace("\"floor\":3", "\"floor\":3000000000"), // i32 overflow
            format!("{SPEC}x"),                   // trailing garbage
            SPEC[..SPEC.len() - 1].to_string(),   // truncated
        ];
        for text in &unusual {
            assert_eq!(parse(text), None, "{text}");
        }
    }
}
