//! Wire formats of Industrial IoT Monitor (SPEC §2) and the stateless half of validation (SPEC §4).
//!
//! # Layout
//! - [`reading`]: [`Reading`], the JSON a device publishes on `device-data`, borrowed from the
//!   input buffer where it can be so the processor's hot path allocates little.
//! - [`alert`]: [`Alert`], the JSON published on `alerts`, with its [`Severity`] and [`AlertStatus`].
//! - [`validate`]: [`decode`] turns bytes into a checked [`Reading`] or an [`Invalid`] with a typed
//!   [`InvalidReason`] — the reason a message is dead-lettered and counted.
//!
//! This crate owns the wire formats only: no I/O, no clocks (callers pass `now`), no async.
#![deny(missing_docs)]

pub mod alert;
pub mod reading;
pub mod validate;

pub use alert::{Alert, AlertStatus, Operator, Severity, Threshold};
pub use reading::{
    DeviceInfo, Location, Measurement, Parameter, Reading, SensorStatus, Sensors, SwitchReading,
    SwitchState,
};
pub use validate::{Invalid, InvalidReason, Limits, decode, decode_text, device_id_is_valid};

/// The device id of the `n`th simulated device, counting from 1: `device_001`, `device_002`, …
/// (`device_%03d`; ids past 999 simply get more digits).
pub fn device_id(n: u32) -> String {
    format!("device_{n:03}")
}
