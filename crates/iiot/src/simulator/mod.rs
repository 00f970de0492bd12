//! The device simulator (SPEC §3): a fleet of virtual sensors and the paced loop that publishes
//! their readings.
//!
//! # Layout
//! - this file: [`SimulatorConfig`], what a fleet is made from.
//! - `fleet`: [`Fleet`], per-device state and value generation (baselines, mean-reverting noise,
//!   daily cycle, switch, battery, signal) and serialization of SPEC §2 readings.
//! - `faults`: [`FaultKind`] and the episodes (overheat ramp, current spike, stuck sensor, silence).
//! - `malformed`: the deliberately broken messages that exercise the processor's dead-letter path.
//! - `runner`: [`run`], which spreads devices across the interval, publishes, counts in
//!   [`SimStats`], and stops on a deadline or the shutdown token.
//! - `progress`: the live progress line on a terminal, or a periodic log line otherwise.
//! - `stdout`: [`StdoutSink`], a [`iiot_transport::Publisher`] that writes JSON lines to stdout.
//!
//! Everything a device produces comes from its own random stream seeded from `(seed, device
//! index)` and from simulated time (step × interval), never from the wall clock, so a run is
//! reproducible. This module owns no transport and no configuration parsing: the caller builds a
//! [`SimulatorConfig`] and hands [`run`] a publisher.

use std::time::Duration;

mod faults;
mod fleet;
mod malformed;
mod progress;
mod runner;
mod stdout;
#[cfg(test)]
mod tests;

pub use faults::FaultKind;
pub use fleet::{Emitted, Fleet};
pub use runner::{Pace, RunOptions, SimSnapshot, SimStats, run};
pub use stdout::StdoutSink;

/// What a simulated fleet is made from. Equal configs give equal fleets: the same values, `seq`
/// numbers and faults per device.
#[derive(Debug, Clone, PartialEq)]
pub struct SimulatorConfig {
    /// Number of devices, `device_001` to `device_{devices}`.
    pub devices: u32,
    /// Time between two readings of one device (simulated and, with [`Pace::RealTime`], real).
    pub interval: Duration,
    /// Seed of every device's random stream.
    pub seed: u64,
    /// `DATA_VARIANCE`: scales the noise of every sensor (0.1 gives a temperature step noise of
    /// about 0.25 °C). Negative or non-finite values count as 0.
    pub variance: f64,
    /// Probability, per device and reading, of starting a random fault episode (0..=1; values
    /// outside are clamped, NaN counts as 0).
    pub fault_rate: f64,
    /// Probability, per reading, of sending a malformed message instead (0..=1; clamped likewise).
    pub malformed_rate: f64,
}

impl SimulatorConfig {
    /// The simulator settings of `config`, with a seed (a random one when none is configured).
    pub fn from_config(config: &crate::config::Config) -> SimulatorConfig {
        let s = &config.simulator;
        SimulatorConfig {
            devices: s.device_count,
            interval: s.send_interval,
            seed: s.seed.unwrap_or_else(rand::random),
            variance: s.data_variance,
            fault_rate: s.fault_rate,
            malformed_rate: s.malformed_rate,
        }
    }
}

impl Default for SimulatorConfig {
    fn default() -> Self {
        SimulatorConfig {
            devices: 100,
            interval: Duration::from_secs(5),
            seed: 0,
            variance: 0.1,
            fault_rate: 0.0,
            malformed_rate: 0.0,
        }
    }
}
