//! One stored reading: event time and the values on the grids the segments use (hundredths
//! for the four sensors, whole numbers for battery and signal strength), the four sensor
//! statuses and the switch. 32 bytes in memory; `seq` and the device's metadata are not kept
//! (the latest full reading of every device is, in `latest.json`).

use iiot_model::Reading;

use crate::store::RawSample;
use crate::store::codec::{status_bits, status_from_bits};

/// A reading as history keeps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Row {
    /// Event time, Unix ms.
    pub t: i64,
    /// Temperature, humidity, pressure, current in hundredths (25.61 °C is 2561).
    pub sensors: [i32; 4],
    /// Battery, %.
    pub battery: i32,
    /// Signal strength, dBm.
    pub signal: i32,
    /// Two bits per sensor status (temperature lowest), as in [`status_bits`].
    pub statuses: u8,
    /// The machine's switch.
    pub switch_on: bool,
}

/// Bytes of one row in the write-ahead log, after the device id.
pub(crate) const WAL_ROW_BYTES: usize = 8 + 4 * 4 + 4 + 4 + 1 + 1;

fn hundredths(v: f64) -> i32 {
    // `as` saturates and maps NaN to 0; values were validated upstream.
    (v * 100.0).round() as i32
}

impl Row {
    /// The stored form of `r`.
    pub(crate) fn of(r: &Reading<'_>) -> Row {
        let s = &r.sensors;
        Row {
            t: r.timestamp,
            sensors: [
                hundredths(s.temperature.value),
                hundredths(s.humidity.value),
                hundredths(s.pressure.value),
                hundredths(s.current.value),
            ],
            battery: r.device_info.battery as i32,
            signal: r.device_info.signal_strength as i32,
            statuses: status_bits(s.temperature.status)
                | status_bits(s.humidity.status) << 2
                | status_bits(s.pressure.status) << 4
                | status_bits(s.current.status) << 6,
            switch_on: s.switch_status.value,
        }
    }

    /// Parameter `i` ([`iiot_model::Parameter::ALL`] order) as the integer it is stored as.
    pub(crate) fn code(&self, i: usize) -> i32 {
        match i {
            0..=3 => self.sensors[i],
            4 => self.battery,
            _ => self.signal,
        }
    }

    /// The six values in [`iiot_model::Parameter::ALL`] order.
    pub(crate) fn values(&self) -> [f64; 6] {
        let mut v = [0.0; 6];
        for (i, out) in v.iter_mut().enumerate() {
            *out = decode(i, i64::from(self.code(i)));
        }
        v
    }

    /// As exported.
    pub(crate) fn sample(&self) -> RawSample {
        RawSample {
            t: self.t,
            values: self.values(),
            switch_on: self.switch_on,
            statuses: [0, 2, 4, 6].map(|shift| status_from_bits(self.statuses >> shift)),
        }
    }

    /// Appends the log form (after the device id).
    pub(crate) fn write_to(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.t.to_le_bytes());
        for s in self.sensors {
            out.extend_from_slice(&s.to_le_bytes());
        }
        out.extend_from_slice(&self.battery.to_le_bytes());
        out.extend_from_slice(&self.signal.to_le_bytes());
        out.push(self.statuses);
        out.push(u8::from(self.switch_on));
    }

    /// Reads the log form; `None` if `b` is too short.
    pub(crate) fn read_from(b: &[u8]) -> Option<Row> {
        let b = b.get(..WAL_ROW_BYTES)?;
        let i32_at = |o: usize| i32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
        let mut t = [0u8; 8];
        t.copy_from_slice(&b[..8]);
        Some(Row {
            t: i64::from_le_bytes(t),
            sensors: [i32_at(8), i32_at(12), i32_at(16), i32_at(20)],
            battery: i32_at(24),
            signal: i32_at(28),
            statuses: b[32],
            switch_on: b[33] != 0,
        })
    }
}

/// The value of parameter `i` stored as `code` (hundredths for the sensors): an exact integer
/// over the scale, so a value sent with two decimals comes back as the same `f64`.
pub(crate) fn decode(i: usize, code: i64) -> f64 {
    if i < 4 {
        code as f64 / 100.0
    } else {
        code as f64
    }
}

/// Scale of parameter `i`'s codes (sums are kept in the same units).
pub(crate) fn scale(i: usize) -> f64 {
    if i < 4 { 100.0 } else { 1.0 }
}

#[cfg(test)]
mod tests {
    use super::*;
    use iiot_model::SensorStatus;

    #[test]
    fn log_form_round_trips_and_values_come_back_exactly() {
        let r = Row {
            t: 1_700_000_000_123,
            sensors: [2561, 4512, 101_325, -3],
            battery: 87,
            signal: -67,
            statuses: 0b11_10_01_00,
            switch_on: true,
        };
        let mut b = Vec::new();
        r.write_to(&mut b);
        assert_eq!(b.len(), WAL_ROW_BYTES);
        assert_eq!(Row::read_from(&b), Some(r));
        assert_eq!(Row::read_from(&b[..10]), None);
        let s = r.sample();
        assert_eq!(s.values, [25.61, 45.12, 1013.25, -0.03, 87.0, -67.0]);
        assert_eq!(
            s.statuses,
            [
                SensorStatus::Normal,
                SensorStatus::Warning,
                SensorStatus::Critical,
                SensorStatus::Fault
            ]
        );
    }
}
