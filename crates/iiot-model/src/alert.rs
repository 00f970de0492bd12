//! The alert (SPEC §2): what the alert engine publishes on `alerts`, once per state change.

use serde::{Deserialize, Serialize};

/// An alert about one device. The same `alert_id` is published again at every status change
/// (`active → acknowledged → resolved`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    /// Deterministic id: the same triggering reading always yields the same id, so a reading
    /// processed twice (at-least-once delivery) cannot create two alerts.
    pub alert_id: String,
    /// The device the alert is about.
    pub device_id: String,
    /// What kind of condition, e.g. `temperature_high`; at most one alert per (device, type) is open.
    pub alert_type: String,
    /// How bad it is.
    pub severity: Severity,
    /// Human-readable description with the current value and the threshold.
    pub message: String,
    /// Event time of this status change, Unix milliseconds.
    pub timestamp: i64,
    /// Lifecycle position.
    pub status: AlertStatus,
    /// The condition that was crossed.
    pub threshold: Threshold,
    /// The value that crossed it (for `resolved`, the value that cleared it).
    pub current_value: f64,
    /// Who acknowledged it (a user or token name), once someone did; absent before, and
    /// when the acknowledgement came without a signed-in user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acknowledged_by: Option<String>,
}

/// The condition of an alert: `parameter operator value`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Threshold {
    /// What is compared, e.g. `temperature`, `temperature_rate_per_min`, `silence_seconds`.
    pub parameter: String,
    /// The comparison that raises the alert.
    pub operator: Operator,
    /// The limit.
    pub value: f64,
}

/// Comparison operator of a threshold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Operator {
    /// Raised when the value is above the limit.
    #[serde(rename = ">")]
    Above,
    /// Raised when the value is below the limit.
    #[serde(rename = "<")]
    Below,
    /// Raised when the value is at or above the limit.
    #[serde(rename = ">=")]
    AtLeast,
}

impl Operator {
    /// The operator as written on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Operator::Above => ">",
            Operator::Below => "<",
            Operator::AtLeast => ">=",
        }
    }
}

/// Alert severity, lowest first (so `Ord` sorts by urgency).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// Worth a look.
    Low,
    /// Needs attention soon.
    Medium,
    /// Needs attention now.
    High,
    /// The device is in a dangerous state; it is shown as `fault`.
    Critical,
}

impl Severity {
    /// Every severity, lowest first.
    pub const ALL: [Severity; 4] = [
        Severity::Low,
        Severity::Medium,
        Severity::High,
        Severity::Critical,
    ];

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }

    /// Parses a wire name.
    pub fn parse(name: &str) -> Option<Severity> {
        Severity::ALL.into_iter().find(|s| s.as_str() == name)
    }
}

/// Lifecycle position of an alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertStatus {
    /// The condition holds and nobody has acknowledged it.
    Active,
    /// The condition holds and an operator has acknowledged it.
    Acknowledged,
    /// The condition cleared; the alert is closed.
    Resolved,
}

impl AlertStatus {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            AlertStatus::Active => "active",
            AlertStatus::Acknowledged => "acknowledged",
            AlertStatus::Resolved => "resolved",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPEC_EXAMPLE: &str = r#"{"alert_id":"alert_20240130_001","device_id":"device_001","alert_type":"temperature_high","severity":"high","message":"设备温度超过阈值 (当前: 85.2°C, 阈值: 80°C)","timestamp":1640995200000,"status":"active","threshold":{"parameter":"temperature","operator":">","value":80.0},"current_value":85.2}"#;

    #[test]
    fn spec_example_round_trips_exactly() {
        let a: Alert = serde_json::from_str(SPEC_EXAMPLE).expect("parses");
        assert_eq!(a.severity, Severity::High);
        assert_eq!(a.status, AlertStatus::Active);
        assert_eq!(a.threshold.operator, Operator::Above);
        assert_eq!(serde_json::to_string(&a).expect("serializes"), SPEC_EXAMPLE);
    }

    #[test]
    fn severities_order_by_urgency_and_round_trip() {
        assert!(Severity::Critical > Severity::High && Severity::Medium > Severity::Low);
        for s in Severity::ALL {
            assert_eq!(Severity::parse(s.as_str()), Some(s));
        }
    }
}
