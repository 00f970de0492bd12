//! The alert engine (SPEC §4): rules from config, one alert per (device, alert type), lifecycle
//! `active → acknowledged → resolved`, published at every change.
//!
//! - [`rules`]: rule config, validation and defaults; [`scope`]: where a rule applies;
//!   [`compose`]: how specs (defaults, API, file) combine into one rule set, scoped overrides
//!   included; [`book`]: the rules of a process from the defaults, `/api/rules` and the file.
//! - [`engine`]: per-device rule state and the lifecycle; one step function per rule kind
//!   (`steps.rs`) says what each reading or silence does to a rule's alert.
//!
//! The engine is synchronous and takes time as arguments (event time from readings, receive time
//! for offline checks), so tests drive it with any clock. It owns alert state; it does not publish.

pub mod book;
pub mod compose;
pub mod engine;
pub mod rules;
pub mod scope;

pub use compose::rule_id;
pub use engine::{AckError, AlertEngine, DeviceAlerts, alert_id};
pub use rules::{AlertRule, RuleError, RuleKind, RuleSet, RuleSpec, ScopedRule, Thresholds};
pub use scope::{DeviceContext, Scope, ScopeSpec};
