//! The alert engine: per-device rule state and the alert lifecycle.
//!
//! State lives in a [`DeviceAlerts`] per device, which the caller stores next to its other
//! per-device state (one hash lookup per reading for everything). The engine itself holds only
//! the rules, so it is cheap to share and to swap on hot reload.
//!
//! Time: rule conditions (`for`, rate windows, stuck spans) use event time from the readings, so
//! replaying a stream gives the same alerts; offline checks compare the receiver's clock with
//! when the device was last heard from. Both arrive as arguments: tests pass any clock.

use std::sync::Arc;

use iiot_model::{Alert, AlertStatus, Reading, Severity, Threshold};

use super::rules::{AlertRule, RuleKind, RuleSet};
use super::scope::DeviceContext;
use crate::liveness::Liveness;
pub use crate::liveness::MIN_OFFLINE_MS;
use steps::Step;

#[path = "steps.rs"]
mod steps;

/// Why an acknowledgement was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AckError {
    /// No open alert has this id (never existed, or already resolved).
    #[error("no open alert with id {0}")]
    Unknown(String),
    /// The alert was already acknowledged.
    #[error("alert {0} is already acknowledged")]
    AlreadyAcknowledged(String),
}

/// Alert state of one device.
#[derive(Debug, Clone, Default)]
pub struct DeviceAlerts {
    /// When last heard from and how often it sends, for offline rules.
    liveness: Liveness,
    /// One state per rule, in rule order.
    states: Vec<RuleState>,
    /// Location and model of the latest reading, for scoped rules (offline checks included).
    context: Option<Box<DeviceContext>>,
}

#[derive(Debug, Clone, Default)]
struct RuleState {
    /// Threshold: event time the condition started holding.
    pending_since: Option<i64>,
    /// Rate: (window start, value then). Stuck: (time the value was first seen, value).
    reference: Option<(i64, f64)>,
    /// Stuck: readings carrying the reference value.
    count: u32,
    open: Option<Box<Open>>,
}

#[derive(Debug, Clone)]
struct Open {
    alert_id: String,
    status: AlertStatus,
    message: String,
    value: f64,
    threshold: Threshold,
    /// The severity it was raised with (a scoped rule may set its own).
    severity: Severity,
    /// When it was raised (event time, or receiver time for offline alerts).
    raised_at: i64,
    /// Who acknowledged it.
    acknowledged_by: Option<String>,
}

impl DeviceAlerts {
    /// Open alerts of this device as (alert_id, status).
    pub fn open(&self) -> impl Iterator<Item = (&str, AlertStatus)> {
        self.states
            .iter()
            .filter_map(|s| s.open.as_ref().map(|o| (o.alert_id.as_str(), o.status)))
    }

    /// Records that the device was heard from at `received_ms` (receiver clock), whatever the
    /// reading's order: late or repeated readings are still signs of life.
    pub fn touch(&mut self, received_ms: i64) {
        self.liveness.touch(received_ms);
    }

    /// The estimated send interval in ms (0 when unknown yet).
    pub fn interval_ms(&self) -> i64 {
        self.liveness.interval_ms(0)
    }
}

/// The alert engine: the current rules and how they turn readings into alerts.
#[derive(Debug, Clone)]
pub struct AlertEngine {
    rules: Arc<RuleSet>,
    default_interval_ms: i64,
}

impl AlertEngine {
    /// An engine with `rules`; `default_interval_ms` is the send interval assumed for a device
    /// until its own interval has been observed (offline detection).
    pub fn new(rules: Arc<RuleSet>, default_interval_ms: i64) -> Self {
        AlertEngine {
            rules,
            default_interval_ms: default_interval_ms.max(1),
        }
    }

    /// The rules in force.
    pub fn rules(&self) -> &Arc<RuleSet> {
        &self.rules
    }

    /// Puts back an alert `dev` had open before this processor started (read back from the
    /// alerts topic), raised at `raised_at`: its rule then keeps, acknowledges or resolves that
    /// alert instead of raising a second one for the same condition. `false` if no rule of its
    /// type exists any more, or the rule already has an open alert.
    pub fn restore(&self, dev: &mut DeviceAlerts, alert: &Alert, raised_at: i64) -> bool {
        let Some(i) = self
            .rules
            .rules
            .iter()
            .position(|r| r.alert_type == alert.alert_type)
        else {
            return false;
        };
        dev.states
            .resize_with(self.rules.rules.len(), RuleState::default);
        let state = &mut dev.states[i];
        if state.open.is_some() || alert.status == AlertStatus::Resolved {
            return false;
        }
        state.open = Some(Box::new(Open {
            alert_id: alert.alert_id.clone(),
            status: alert.status,
            message: alert.message.clone(),
            value: alert.current_value,
            threshold: alert.threshold.clone(),
            severity: alert.severity,
            raised_at,
            acknowledged_by: alert.acknowledged_by.clone(),
        }));
        true
    }

    /// Feeds one in-order reading of `dev` to every rule; alerts raised or resolved are appended
    /// to `out`. `received_ms` is the receiver's clock.
    pub fn observe(
        &self,
        dev: &mut DeviceAlerts,
        reading: &Reading<'_>,
        received_ms: i64,
        out: &mut Vec<Alert>,
    ) {
        let ts = reading.timestamp;
        dev.liveness.observe_event(ts, self.default_interval_ms);
        dev.liveness.touch(received_ms);
        dev.states
            .resize_with(self.rules.rules.len(), RuleState::default);
        remember_context(&mut dev.context, reading);
        let ctx = dev.context.as_deref();
        for (rule, state) in self.rules.rules.iter().zip(dev.states.iter_mut()) {
            let (severity, step) = match rule.for_device(&reading.device_id, ctx) {
                Some((severity, kind)) => (severity, steps::on_reading(kind, state, reading)),
                None => (rule.severity, switched_off(state)),
            };
            apply(
                &reading.device_id,
                &rule.alert_type,
                severity,
                state,
                ts,
                step,
                out,
            );
        }
    }

    /// Raises `device_offline`-style alerts for `dev` if it has been silent too long at `now_ms`
    /// (receiver clock). Call periodically for every known device.
    pub fn check_offline(
        &self,
        device_id: &str,
        dev: &mut DeviceAlerts,
        now_ms: i64,
        out: &mut Vec<Alert>,
    ) {
        if dev.liveness.last_heard_ms().is_none() {
            return;
        }
        dev.states
            .resize_with(self.rules.rules.len(), RuleState::default);
        let ctx = dev.context.as_deref();
        for (rule, state) in self.rules.rules.iter().zip(dev.states.iter_mut()) {
            let Some((severity, &RuleKind::Offline { missed_intervals })) =
                rule.for_device(device_id, ctx)
            else {
                continue;
            };
            let default_interval = self.default_interval_ms;
            let step = steps::offline(
                state,
                &dev.liveness,
                missed_intervals,
                default_interval,
                now_ms,
            );
            apply(
                device_id,
                &rule.alert_type,
                severity,
                state,
                now_ms,
                step,
                out,
            );
        }
    }

    /// Raises the offline alerts of `dev` at `now_ms` (receiver clock) without waiting for a
    /// silence: the device said it went offline (`cause`, e.g. a Sparkplug DDEATH). Its next
    /// reading resolves them as it would after a silence.
    pub fn declare_offline(
        &self,
        device_id: &str,
        dev: &mut DeviceAlerts,
        now_ms: i64,
        cause: &str,
        out: &mut Vec<Alert>,
    ) {
        dev.states
            .resize_with(self.rules.rules.len(), RuleState::default);
        let ctx = dev.context.as_deref();
        for (rule, state) in self.rules.rules.iter().zip(dev.states.iter_mut()) {
            // The device's scope decides whether (and how severely) it is watched for silence.
            let Some((severity, &RuleKind::Offline { missed_intervals })) =
                rule.for_device(device_id, ctx)
            else {
                continue;
            };
            let step = steps::declared_offline(
                state,
                &dev.liveness,
                missed_intervals,
                self.default_interval_ms,
                now_ms,
                cause,
            );
            apply(
                device_id,
                &rule.alert_type,
                severity,
                state,
                now_ms,
                step,
                out,
            );
        }
    }

    /// Moves the open alert `alert_id` of `dev` to `acknowledged` (by `by`, when known) and
    /// returns it to publish.
    pub fn acknowledge(
        &self,
        device_id: &str,
        dev: &mut DeviceAlerts,
        alert_id: &str,
        by: Option<&str>,
        now_ms: i64,
    ) -> Result<Alert, AckError> {
        for (rule, state) in self.rules.rules.iter().zip(dev.states.iter_mut()) {
            let Some(open) = state.open.as_mut().filter(|o| o.alert_id == alert_id) else {
                continue;
            };
            if open.status == AlertStatus::Acknowledged {
                return Err(AckError::AlreadyAcknowledged(alert_id.to_string()));
            }
            open.status = AlertStatus::Acknowledged;
            open.acknowledged_by = by.map(str::to_owned);
            let (message, value) = (open.message.clone(), open.value);
            return Ok(build(
                device_id,
                &rule.alert_type,
                open,
                now_ms,
                value,
                message,
            ));
        }
        Err(AckError::Unknown(alert_id.to_string()))
    }

    /// Replaces the rules (hot reload) and returns the old ones. Call [`AlertEngine::migrate`]
    /// for every device afterwards.
    pub fn set_rules(&mut self, rules: Arc<RuleSet>) -> Arc<RuleSet> {
        std::mem::replace(&mut self.rules, rules)
    }

    /// Re-keys `dev`'s state from `old` rules to the current ones by `alert_type`. Open alerts of
    /// rule types that no longer exist are resolved (appended to `out`).
    pub fn migrate(
        &self,
        device_id: &str,
        dev: &mut DeviceAlerts,
        old: &RuleSet,
        now_ms: i64,
        out: &mut Vec<Alert>,
    ) {
        let mut previous: Vec<Option<RuleState>> = std::mem::take(&mut dev.states)
            .into_iter()
            .map(Some)
            .collect();
        dev.states = self
            .rules
            .rules
            .iter()
            .map(|rule| carried_over(old, rule, &mut previous))
            .collect();
        // What was not carried over belongs to rules that are gone.
        for (rule, state) in old.rules.iter().zip(previous.iter_mut()) {
            if let Some(state) = state.as_mut().filter(|s| s.open.is_some()) {
                let value = state.open.as_ref().map_or(0.0, |o| o.value);
                let message = "rule removed from configuration".into();
                apply(
                    device_id,
                    &rule.alert_type,
                    rule.severity,
                    state,
                    now_ms,
                    Step::Resolve { value, message },
                    out,
                );
            }
        }
    }
}

/// The state `rule` takes over from the rule of the same `alert_type` in `old`, taken out of
/// `previous` (that rule's state, by position in `old`); fresh state if there is none.
fn carried_over(old: &RuleSet, rule: &AlertRule, previous: &mut [Option<RuleState>]) -> RuleState {
    let Some(i) = old
        .rules
        .iter()
        .position(|r| r.alert_type == rule.alert_type)
    else {
        return RuleState::default();
    };
    let Some(state) = previous.get_mut(i).and_then(Option::take) else {
        return RuleState::default();
    };
    // Same kind and parameter: keep everything. Otherwise the partial state (windows, pending
    // times) means something else now: keep only the open alert, judged by the new rule from
    // here on.
    if same_measure(&old.rules[i].kind, &rule.kind) {
        state
    } else {
        RuleState {
            open: state.open,
            ..RuleState::default()
        }
    }
}

/// Whether two rules measure the same thing the same way (so their partial state carries over,
/// and a scoped override may share its rule's state).
pub(super) fn same_measure(a: &RuleKind, b: &RuleKind) -> bool {
    let parameter = |k: &RuleKind| match k {
        RuleKind::Threshold { parameter, .. }
        | RuleKind::RateOfChange { parameter, .. }
        | RuleKind::Stuck { parameter, .. } => Some(*parameter),
        RuleKind::Offline { .. } => None,
    };
    std::mem::discriminant(a) == std::mem::discriminant(b) && parameter(a) == parameter(b)
}

/// What a reading does to a rule that is off for its device (a scope switched it off): its
/// open alert, if any, is resolved.
fn switched_off(state: &RuleState) -> Step {
    match &state.open {
        Some(open) => Step::Resolve {
            value: open.value,
            message: "rule switched off for this device's scope".into(),
        },
        None => Step::Hold,
    }
}

/// Keeps `ctx` equal to the location and model of `reading` (allocating only on a change).
fn remember_context(ctx: &mut Option<Box<DeviceContext>>, reading: &Reading<'_>) {
    let (building, floor, model) = (
        &reading.location.building,
        reading.location.floor,
        &reading.device_info.model,
    );
    let same = ctx
        .as_deref()
        .is_some_and(|c| c.building == *building && c.floor == floor && c.model == *model);
    if !same {
        *ctx = Some(Box::new(DeviceContext {
            building: building.to_string(),
            floor,
            model: model.to_string(),
        }));
    }
}

/// Carries out `step` of the rule `alert_type` (at `severity` for this device) at `ts`: opens
/// or resolves its alert and appends the change to `out`. The one place the lifecycle moves on
/// readings, silences and rule removal.
fn apply(
    device_id: &str,
    alert_type: &str,
    severity: Severity,
    state: &mut RuleState,
    ts: i64,
    step: Step,
    out: &mut Vec<Alert>,
) {
    match step {
        Step::Hold => return,
        Step::Raise {
            value,
            threshold,
            message,
        } => {
            let open = Open {
                alert_id: alert_id(device_id, alert_type, ts),
                status: AlertStatus::Active,
                message: message.clone(),
                value,
                threshold,
                severity,
                raised_at: ts,
                acknowledged_by: None,
            };
            out.push(build(device_id, alert_type, &open, ts, value, message));
            state.open = Some(Box::new(open));
        }
        Step::Resolve { value, message } => {
            if let Some(mut open) = state.open.take() {
                open.status = AlertStatus::Resolved;
                // Offline alerts are raised on the receiver's clock and resolved on the
                // device's: a device clock behind ours must not make an alert end before it
                // began.
                let ts = ts.max(open.raised_at);
                out.push(build(device_id, alert_type, &open, ts, value, message));
            }
        }
    }
    state.pending_since = None;
}

/// The alert `open` of the rule `alert_type` as published at `ts`: the only place an
/// [`Alert`] is built.
fn build(
    device_id: &str,
    alert_type: &str,
    open: &Open,
    ts: i64,
    value: f64,
    message: String,
) -> Alert {
    Alert {
        alert_id: open.alert_id.clone(),
        device_id: device_id.to_string(),
        alert_type: alert_type.to_string(),
        severity: open.severity,
        message,
        timestamp: ts,
        status: open.status,
        threshold: open.threshold.clone(),
        current_value: value,
        acknowledged_by: open.acknowledged_by.clone(),
    }
}

/// `alert_YYYYMMDD_<12 hex>`: date of the triggering event and a hash of (device, type, event
/// time). For rules on readings the time is the reading's event time, so the same reading
/// processed twice (at-least-once delivery) yields the same id; offline alerts are raised on
/// the receiver's clock and so are not reproducible across processors.
pub fn alert_id(device_id: &str, alert_type: &str, ts_ms: i64) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in device_id
        .bytes()
        .chain([0])
        .chain(alert_type.bytes())
        .chain([0])
        .chain(ts_ms.to_le_bytes())
    {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    let (y, m, d) = civil_date(ts_ms.div_euclid(86_400_000));
    format!("alert_{y:04}{m:02}{d:02}_{:012x}", h & 0xffff_ffff_ffff)
}

/// Proleptic Gregorian date of a day count since 1970-01-01 (Howard Hinnant's algorithm).
fn civil_date(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
#[path = "engine_tests.rs"]
mod tests;
