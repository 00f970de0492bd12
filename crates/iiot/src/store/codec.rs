//! Fixed-point grids that history is stored on: small integers instead of floats, which is what
//! makes a raw sample 16 bytes and a rollup bucket 28.
//!
//! Every grid covers the parameter's [`Parameter::plausible_range`] (values outside it are
//! rejected upstream, and clamped here should one slip through). Decoding divides an exact
//! integer by the scale, so a value sent with two decimals (all the simulator sends, and the SPEC
//! example) comes back as exactly the same `f64`, and prints the same.

use iiot_model::{Parameter, Reading, SensorStatus};

/// `value = (code + lo) / scale`, with `code` in `0..=max_code`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Grid {
    /// Codes per unit (100 = steps of 0.01).
    scale: f64,
    /// The lowest value of the range, in steps.
    lo: i64,
    /// The highest code (the top of the range).
    max_code: u32,
}

impl Grid {
    const fn new(scale: f64, lo: i64, max_code: u32) -> Grid {
        Grid {
            scale,
            lo,
            max_code,
        }
    }

    /// The nearest code of `v`, clamped into the grid.
    pub(crate) fn encode(self, v: f64) -> u32 {
        let steps = (v * self.scale).round();
        // `as` saturates and maps NaN to 0; the clamp keeps a stray value inside the grid.
        (steps as i64 - self.lo).clamp(0, i64::from(self.max_code)) as u32
    }

    /// A code as a (fractional) position on the grid, for means.
    pub(crate) fn position(self, v: f64) -> f64 {
        (v * self.scale - self.lo as f64).clamp(0.0, f64::from(self.max_code))
    }

    /// The value of `code`.
    pub(crate) fn decode(self, code: u32) -> f64 {
        // An exact integer over the scale: correctly rounded, so `25.6` comes back as `25.6`.
        (i64::from(code) + self.lo) as f64 / self.scale
    }

    /// The value at a fractional grid position.
    pub(crate) fn decode_position(self, position: f64) -> f64 {
        (position + self.lo as f64) / self.scale
    }

    /// The highest code.
    #[cfg(test)]
    pub(crate) fn max_code(self) -> u32 {
        self.max_code
    }
}

/// Grids of raw samples, in [`Parameter::ALL`] order: 0.01 for the four sensors (pressure needs
/// 17 bits), whole numbers for battery and signal strength (integers on the wire).
pub(crate) const RAW: [Grid; 6] = [
    Grid::new(100.0, -6_000, 31_000),
    Grid::new(100.0, 0, 10_000),
    Grid::new(100.0, 30_000, 90_000),
    Grid::new(100.0, 0, 20_000),
    Grid::new(1.0, 0, 100),
    Grid::new(1.0, -150, 150),
];

/// Grids of rollups: as [`RAW`], except pressure in steps of 0.02 hPa so that it fits 16 bits.
pub(crate) const ROLLUP: [Grid; 6] = [
    RAW[0],
    RAW[1],
    Grid::new(50.0, 15_000, 45_000),
    RAW[3],
    RAW[4],
    RAW[5],
];

/// Position of `p` in [`Parameter::ALL`] (and in every per-parameter array of this module).
pub(crate) fn index(p: Parameter) -> usize {
    match p {
        Parameter::Temperature => 0,
        Parameter::Humidity => 1,
        Parameter::Pressure => 2,
        Parameter::Current => 3,
        Parameter::Battery => 4,
        Parameter::SignalStrength => 5,
    }
}

/// The six values of `r` in [`Parameter::ALL`] order (spelled out: this is on the hot path).
pub(crate) fn values(r: &Reading<'_>) -> [f64; 6] {
    [
        r.sensors.temperature.value,
        r.sensors.humidity.value,
        r.sensors.pressure.value,
        r.sensors.current.value,
        r.device_info.battery as f64,
        r.device_info.signal_strength as f64,
    ]
}

/// Two bits per sensor status.
pub(crate) fn status_bits(s: SensorStatus) -> u8 {
    match s {
        SensorStatus::Normal => 0,
        SensorStatus::Warning => 1,
        SensorStatus::Critical => 2,
        SensorStatus::Fault => 3,
    }
}

/// Inverse of [`status_bits`] (only the low two bits are looked at).
pub(crate) fn status_from_bits(bits: u8) -> SensorStatus {
    match bits & 0b11 {
        0 => SensorStatus::Normal,
        1 => SensorStatus::Warning,
        2 => SensorStatus::Critical,
        _ => SensorStatus::Fault,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grids_cover_exactly_the_plausible_ranges_and_fit_their_fields() {
        for p in Parameter::ALL {
            let (lo, hi) = p.plausible_range();
            for (grid, width_bits) in [(RAW[index(p)], 17), (ROLLUP[index(p)], 16)] {
                assert_eq!(grid.decode(0), lo, "{p}");
                assert_eq!(grid.decode(grid.max_code()), hi, "{p}");
                let bits = match p {
                    Parameter::Battery | Parameter::SignalStrength => 8,
                    Parameter::Pressure => width_bits,
                    _ => 16,
                };
                assert!(grid.max_code() < 1 << bits, "{p} does not fit {bits} bits");
            }
        }
    }

    #[test]
    fn two_decimal_values_round_trip_exactly() {
        let t = RAW[index(Parameter::Temperature)];
        for v in [25.6, -12.34, 0.29, 249.99, -60.0] {
            assert_eq!(t.decode(t.encode(v)), v);
        }
        let p = RAW[index(Parameter::Pressure)];
        assert_eq!(p.decode(p.encode(1013.25)), 1013.25);
        assert_eq!(p.decode(p.encode(5000.0)), 1200.0, "clamped into the grid");
        assert_eq!(t.encode(f64::NAN), t.encode(0.0), "NaN lands on the grid");
    }

    #[test]
    fn statuses_round_trip() {
        for s in [
            SensorStatus::Normal,
            SensorStatus::Warning,
            SensorStatus::Critical,
            SensorStatus::Fault,
        ] {
            assert_eq!(status_from_bits(status_bits(s)), s);
        }
    }
}
