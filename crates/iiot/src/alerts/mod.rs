//! The alert engine (SPEC §4): rules from config, one alert per (device, alert type), lifecycle
//! `active → acknowledged → resolved`, published at every change.
//!
//! - [`rules`]: rule config, validation and defaults.
//! - [`engine`]: per-device rule state and the lifecycle; one step function per rule kind
//!   (`steps.rs`) says what each reading or silence does to a rule's alert.
//!
//! The engine is synchronous and takes time as arguments (event time from readings, receive time
//! for offline checks), so tests drive it with any clock. It owns alert state; it does not publish.

pub mod engine;
pub mod rules;

pub use engine::{AckError, AlertEngine, DeviceAlerts, alert_id};
pub use rules::{AlertRule, RuleError, RuleKind, RuleSet, RuleSpec, Thresholds};
