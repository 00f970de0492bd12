//! Alert rules: their config form ([`RuleSpec`], as written in `iiot.toml`), their checked form
//! ([`AlertRule`]), and the defaults of the design notes ([`RuleSet::defaults`]).

use std::time::Duration;

use iiot_model::{Operator, Parameter, Severity};
use serde::{Deserialize, Serialize};

use super::scope::{DeviceContext, Scope, ScopeSpec};
use crate::duration::parse_duration;

/// The threshold values of the design notes' environment keys (`ALERT_TEMPERATURE_HIGH`, …).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Thresholds {
    /// `ALERT_TEMPERATURE_HIGH`, °C (80).
    pub temperature_high: f64,
    /// `ALERT_TEMPERATURE_LOW`, °C (0).
    pub temperature_low: f64,
    /// `ALERT_HUMIDITY_HIGH`, % (90).
    pub humidity_high: f64,
    /// `ALERT_CURRENT_HIGH`, A (10).
    pub current_high: f64,
    /// `ALERT_BATTERY_LOW`, % (20).
    pub battery_low: f64,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            temperature_high: 80.0,
            temperature_low: 0.0,
            humidity_high: 90.0,
            current_high: 10.0,
            battery_low: 20.0,
        }
    }
}

/// One rule as written in the config file under `[[alerts.rules]]`.
///
/// ```toml
/// [[alerts.rules]]
/// alert_type = "temperature_high"   # at most one open alert per (device, alert_type)
/// kind = "threshold"                # threshold | rate_of_change | stuck | offline
/// parameter = "temperature"         # temperature humidity pressure current battery signal_strength
/// operator = ">"                    # threshold: ">" or "<"
/// value = 80.0                      # threshold: the limit; rate_of_change: units per minute
/// clear = 78.0                      # threshold/rate: resolves only past this (hysteresis)
/// for = "30s"                       # threshold: must hold this long; stuck: unchanged this long
/// window = "1m"                     # rate_of_change: span the rate is measured over
/// missed_intervals = 3.0            # offline: silence of this many send intervals
/// severity = "high"                 # low | medium | high | critical
/// scope = { building = "C", floor = 2 }   # optional: building floor model device_id (glob)
/// ```
/// A rule whose `alert_type` matches a default replaces it; `enabled = false` removes it.
/// A rule with a `scope` overrides the rule of its `alert_type` for the devices in the scope
/// only, taking what it does not give from that rule (see [`super::compose`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RuleSpec {
    /// Name of the condition, e.g. `temperature_high`.
    pub alert_type: String,
    /// `threshold`, `rate_of_change`, `stuck` or `offline`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// The reading parameter the rule looks at.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameter: Option<String>,
    /// `>` or `<` (threshold rules).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operator: Option<String>,
    /// The limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<f64>,
    /// The clear threshold (hysteresis).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clear: Option<f64>,
    /// How long the condition must hold.
    #[serde(rename = "for", default, skip_serializing_if = "Option::is_none")]
    pub for_: Option<String>,
    /// Measurement window of rate rules.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<String>,
    /// Offline rules: intervals of silence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub missed_intervals: Option<f64>,
    /// `low`, `medium`, `high`, `critical`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub severity: Option<String>,
    /// `false` removes a default rule of the same `alert_type`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// Devices the rule applies to; none (or empty): every device.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<ScopeSpec>,
}

/// Longest `for`/`window` a rule may have (keeps millisecond arithmetic far from overflow).
pub const MAX_RULE_DURATION: Duration = Duration::from_secs(7 * 24 * 3600);

/// A checked rule.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertRule {
    /// Name of the condition; one open alert per (device, alert_type).
    pub alert_type: String,
    /// Severity of the alerts it raises.
    pub severity: Severity,
    /// What it checks.
    pub kind: RuleKind,
    /// Overrides for the devices in a scope, the most specific first.
    pub scoped: Vec<ScopedRule>,
    /// Whether `severity` and `kind` apply to devices in none of the scopes; `false` for a rule
    /// that was only ever given with a scope.
    pub everywhere: bool,
}

/// What a rule is for the devices in one scope.
#[derive(Debug, Clone, PartialEq)]
pub struct ScopedRule {
    /// The devices.
    pub scope: Scope,
    /// Severity of the alerts it raises there.
    pub severity: Severity,
    /// What it checks there; `None`: the rule is off there (`enabled = false`).
    pub kind: Option<RuleKind>,
}

impl AlertRule {
    /// The severity and check for `device_id` (with `ctx`, its latest location and model):
    /// those of the most specific scope it is in, else the rule's own; `None` when the rule is
    /// off for it.
    pub fn for_device(
        &self,
        device_id: &str,
        ctx: Option<&DeviceContext>,
    ) -> Option<(Severity, &RuleKind)> {
        if let Some(s) = self.scoped.iter().find(|s| s.scope.matches(device_id, ctx)) {
            return s.kind.as_ref().map(|k| (s.severity, k));
        }
        self.everywhere.then_some((self.severity, &self.kind))
    }
}

/// What a rule checks.
#[derive(Debug, Clone, PartialEq)]
pub enum RuleKind {
    /// `parameter operator value` for at least `hold`; resolves once past `clear`.
    Threshold {
        /// Looked-at parameter.
        parameter: Parameter,
        /// [`Operator::Above`] or [`Operator::Below`].
        operator: Operator,
        /// The limit.
        value: f64,
        /// Hysteresis: the value must come back past this to resolve.
        clear: f64,
        /// How long the condition must hold before the alert is raised.
        hold: Duration,
    },
    /// `|Δvalue| / minute` over `window` above `value`; resolves when at or below `clear`.
    RateOfChange {
        /// Looked-at parameter.
        parameter: Parameter,
        /// Limit, in units per minute.
        value: f64,
        /// Clear limit, in units per minute.
        clear: f64,
        /// Span over which the rate is measured (noise-robust).
        window: Duration,
    },
    /// The value has not changed at all for `hold` (and at least 3 readings).
    Stuck {
        /// Looked-at parameter.
        parameter: Parameter,
        /// How long unchanged before raising.
        hold: Duration,
    },
    /// No reading for `missed_intervals` × the device's send interval.
    Offline {
        /// Intervals of silence.
        missed_intervals: f64,
    },
}

/// A validated set of rules, in evaluation order.
#[derive(Debug, Clone, PartialEq)]
pub struct RuleSet {
    /// The rules; `alert_type`s are unique.
    pub rules: Vec<AlertRule>,
}

/// A rule that cannot be used, naming the key that is wrong.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{key}: {problem}")]
pub struct RuleError {
    /// The offending key, e.g. `alerts.rules[2].clear`.
    pub key: String,
    /// What is wrong and what is allowed.
    pub problem: String,
}

/// Default hysteresis: 2.5 % of the limit, at least 0.5 of the unit.
fn default_clear(operator: Operator, value: f64) -> f64 {
    let band = (value.abs() * 0.025).max(0.5);
    match operator {
        Operator::Below => value + band,
        Operator::Above | Operator::AtLeast => value - band,
    }
}

fn threshold(
    alert_type: &str,
    parameter: Parameter,
    operator: Operator,
    value: f64,
    severity: Severity,
) -> AlertRule {
    AlertRule {
        alert_type: alert_type.to_string(),
        severity,
        kind: RuleKind::Threshold {
            parameter,
            operator,
            value,
            clear: default_clear(operator, value),
            hold: Duration::ZERO,
        },
        scoped: Vec::new(),
        everywhere: true,
    }
}

impl RuleSet {
    /// The design notes' rules (temperature high/low, humidity high, current high) plus battery
    /// low, temperature rate of change, stuck temperature sensor and device offline.
    pub fn defaults(t: &Thresholds) -> RuleSet {
        use Parameter::*;
        RuleSet {
            rules: vec![
                threshold(
                    "temperature_high",
                    Temperature,
                    Operator::Above,
                    t.temperature_high,
                    Severity::High,
                ),
                threshold(
                    "temperature_low",
                    Temperature,
                    Operator::Below,
                    t.temperature_low,
                    Severity::Medium,
                ),
                threshold(
                    "humidity_high",
                    Humidity,
                    Operator::Above,
                    t.humidity_high,
                    Severity::Medium,
                ),
                threshold(
                    "current_high",
                    Current,
                    Operator::Above,
                    t.current_high,
                    Severity::Critical,
                ),
                threshold(
                    "battery_low",
                    Battery,
                    Operator::Below,
                    t.battery_low,
                    Severity::Low,
                ),
                AlertRule {
                    alert_type: "temperature_rate".into(),
                    severity: Severity::Medium,
                    kind: RuleKind::RateOfChange {
                        parameter: Temperature,
                        value: 10.0,
                        clear: 8.0,
                        window: Duration::from_secs(60),
                    },
                    scoped: Vec::new(),
                    everywhere: true,
                },
                AlertRule {
                    alert_type: "sensor_stuck".into(),
                    severity: Severity::Medium,
                    kind: RuleKind::Stuck {
                        parameter: Temperature,
                        hold: Duration::from_secs(60),
                    },
                    scoped: Vec::new(),
                    everywhere: true,
                },
                AlertRule {
                    alert_type: "device_offline".into(),
                    severity: Severity::High,
                    kind: RuleKind::Offline {
                        missed_intervals: 3.0,
                    },
                    scoped: Vec::new(),
                    everywhere: true,
                },
            ],
        }
    }

    /// The rule named `alert_type`.
    pub fn get(&self, alert_type: &str) -> Option<&AlertRule> {
        self.rules.iter().find(|r| r.alert_type == alert_type)
    }

    /// The `missed_intervals` of the offline rule, for the store's device status; `None` without
    /// one. Of several offline rules the smallest wins: a device is offline once any of them
    /// fires.
    pub fn offline_missed_intervals(&self) -> Option<f64> {
        self.rules
            .iter()
            .filter_map(|r| match r.kind {
                RuleKind::Offline { missed_intervals } => Some(missed_intervals),
                _ => None,
            })
            .reduce(f64::min)
    }
}

/// Turns a field name into its full key: `clear` → `alerts.rules[2].clear`.
pub(super) type Key<'a> = &'a dyn Fn(&str) -> String;

pub(super) fn err(key: Key<'_>, field: &str, problem: String) -> RuleError {
    RuleError {
        key: key(field),
        problem,
    }
}

impl RuleSpec {
    /// The checked rule, or the first problem found, naming its key.
    pub(super) fn check(&self, key: Key<'_>) -> Result<AlertRule, RuleError> {
        self.check_alert_type(key)?;
        let severity = self.severity(key)?;
        let value = finite(key, "value", self.value)?;
        let clear = finite(key, "clear", self.clear)?;
        let kind = match self.kind.as_deref().unwrap_or("threshold") {
            "threshold" => self.threshold(key, value, clear)?,
            "rate_of_change" => self.rate_of_change(key, value, clear)?,
            "stuck" => self.stuck(key)?,
            "offline" => self.offline(key)?,
            other => {
                return Err(err(
                    key,
                    "kind",
                    format!("{other:?} is not one of threshold, rate_of_change, stuck, offline"),
                ));
            }
        };
        Ok(AlertRule {
            alert_type: self.alert_type.clone(),
            severity,
            kind,
            scoped: Vec::new(),
            everywhere: true,
        })
    }

    fn check_alert_type(&self, key: Key<'_>) -> Result<(), RuleError> {
        let snake = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_';
        if self.alert_type.is_empty() || !self.alert_type.bytes().all(snake) {
            return Err(err(
                key,
                "alert_type",
                format!(
                    "{:?} must be non-empty snake_case ([a-z0-9_])",
                    self.alert_type
                ),
            ));
        }
        Ok(())
    }

    fn severity(&self, key: Key<'_>) -> Result<Severity, RuleError> {
        let Some(s) = self.severity.as_deref() else {
            return Ok(Severity::Medium);
        };
        Severity::parse(s).ok_or_else(|| {
            err(
                key,
                "severity",
                format!("{s:?} is not one of low, medium, high, critical"),
            )
        })
    }

    fn parameter(&self, key: Key<'_>) -> Result<Parameter, RuleError> {
        let p = self
            .parameter
            .as_deref()
            .ok_or_else(|| err(key, "parameter", "is required for this kind".into()))?;
        Parameter::parse(p).ok_or_else(|| {
            err(key, "parameter", format!(
                "{p:?} is not one of temperature, humidity, pressure, current, battery, signal_strength"
            ))
        })
    }

    fn operator(&self, key: Key<'_>) -> Result<Operator, RuleError> {
        match self.operator.as_deref() {
            Some(">") => Ok(Operator::Above),
            Some("<") => Ok(Operator::Below),
            Some(o) => Err(err(
                key,
                "operator",
                format!("{o:?} must be \">\" or \"<\""),
            )),
            None => Err(err(key, "operator", "is required: \">\" or \"<\"".into())),
        }
    }

    fn threshold(
        &self,
        key: Key<'_>,
        value: Option<f64>,
        clear: Option<f64>,
    ) -> Result<RuleKind, RuleError> {
        let operator = self.operator(key)?;
        let value = value.ok_or_else(|| err(key, "value", "is required".into()))?;
        let clear = clear.unwrap_or_else(|| default_clear(operator, value));
        let wrong_side = match operator {
            Operator::Below => clear < value,
            _ => clear > value,
        };
        if wrong_side {
            return Err(err(
                key,
                "clear",
                format!(
                    "{clear} must be on the safe side of value {value} (operator {})",
                    operator.as_str()
                ),
            ));
        }
        Ok(RuleKind::Threshold {
            parameter: self.parameter(key)?,
            operator,
            value,
            clear,
            hold: duration(key, "for", &self.for_, Duration::ZERO)?,
        })
    }

    fn rate_of_change(
        &self,
        key: Key<'_>,
        value: Option<f64>,
        clear: Option<f64>,
    ) -> Result<RuleKind, RuleError> {
        let value =
            value.ok_or_else(|| err(key, "value", "is required (units per minute)".into()))?;
        if value <= 0.0 {
            return Err(err(key, "value", format!("{value} must be > 0")));
        }
        let clear = clear.unwrap_or(value * 0.8);
        if clear > value || clear < 0.0 {
            return Err(err(
                key,
                "clear",
                format!("{clear} must be between 0 and value {value}"),
            ));
        }
        let window = positive_duration(key, "window", &self.window, Duration::from_secs(60))?;
        Ok(RuleKind::RateOfChange {
            parameter: self.parameter(key)?,
            value,
            clear,
            window,
        })
    }

    fn stuck(&self, key: Key<'_>) -> Result<RuleKind, RuleError> {
        let hold = positive_duration(key, "for", &self.for_, Duration::from_secs(60))?;
        Ok(RuleKind::Stuck {
            parameter: self.parameter(key)?,
            hold,
        })
    }

    fn offline(&self, key: Key<'_>) -> Result<RuleKind, RuleError> {
        let missed = self.missed_intervals.unwrap_or(3.0);
        if !(missed.is_finite() && missed >= 1.0) {
            return Err(err(
                key,
                "missed_intervals",
                format!("{missed} must be a number >= 1"),
            ));
        }
        Ok(RuleKind::Offline {
            missed_intervals: missed,
        })
    }
}

/// `text` as a duration of at most [`MAX_RULE_DURATION`], `default` when absent.
fn duration(
    key: Key<'_>,
    field: &str,
    text: &Option<String>,
    default: Duration,
) -> Result<Duration, RuleError> {
    let Some(t) = text else {
        return Ok(default);
    };
    match parse_duration(t) {
        Ok(d) if d > MAX_RULE_DURATION => {
            Err(err(key, field, format!("{t:?} is longer than 7 days")))
        }
        Ok(d) => Ok(d),
        Err(e) => Err(err(key, field, e)),
    }
}

/// [`duration`], refusing zero.
fn positive_duration(
    key: Key<'_>,
    field: &str,
    text: &Option<String>,
    default: Duration,
) -> Result<Duration, RuleError> {
    let d = duration(key, field, text, default)?;
    if d.is_zero() {
        return Err(err(key, field, "must be longer than 0".into()));
    }
    Ok(d)
}

fn finite(key: Key<'_>, field: &str, v: Option<f64>) -> Result<Option<f64>, RuleError> {
    match v {
        Some(x) if !x.is_finite() => Err(err(key, field, format!("{x} is not a finite number"))),
        other => Ok(other),
    }
}

#[cfg(test)]
#[path = "rules_tests.rs"]
mod tests;
