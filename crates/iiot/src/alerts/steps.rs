//! One step function per rule kind: from a reading (or, for offline rules, the receiver's
//! clock) and what the rule remembers, the [`Step`] its alert takes.
//!
//! Step functions keep the rule's condition tracking (pending since, reference value, count)
//! up to date; they never open or close an alert themselves. The engine applies the step, so
//! the lifecycle and the building of [`Alert`](iiot_model::Alert)s stay in one place.

use std::time::Duration;

use iiot_model::{Operator, Parameter, Reading, Threshold};

use super::RuleState;
use crate::alerts::rules::RuleKind;
use crate::liveness::Liveness;

/// What a rule's alert does after one look at the device.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Step {
    /// Nothing changes.
    Hold,
    /// The condition holds: open an alert.
    Raise {
        /// The measured value (reading value, rate, stuck seconds or silence seconds).
        value: f64,
        /// The limit crossed, as published with every status change of the alert.
        threshold: Threshold,
        /// What happened, for people.
        message: String,
    },
    /// The condition is over: resolve the open alert.
    Resolve {
        /// The measured value.
        value: f64,
        /// What happened, for people.
        message: String,
    },
}

/// One reading as one rule sees it.
#[derive(Debug, Clone, Copy)]
struct Sample {
    /// The parameter the rule looks at.
    parameter: Parameter,
    /// Its value in the reading.
    v: f64,
    /// The reading's event time.
    ts: i64,
}

/// The step of a rule of kind `kind` on an in-order `reading`.
pub(super) fn on_reading(kind: &RuleKind, state: &mut RuleState, reading: &Reading<'_>) -> Step {
    let sample = |parameter: Parameter| Sample {
        parameter,
        v: reading.value(parameter),
        ts: reading.timestamp,
    };
    match *kind {
        RuleKind::Threshold {
            parameter,
            operator,
            value,
            clear,
            hold,
        } => threshold(state, sample(parameter), operator, value, clear, hold),
        RuleKind::RateOfChange {
            parameter,
            value,
            clear,
            window,
        } => rate_of_change(state, sample(parameter), value, clear, window),
        RuleKind::Stuck { parameter, hold } => stuck(state, sample(parameter), hold),
        // Any reading ends a silence.
        RuleKind::Offline { .. } if state.open.is_some() => Step::Resolve {
            value: 0.0,
            message: "device reporting again".into(),
        },
        RuleKind::Offline { .. } => Step::Hold,
    }
}

/// `parameter operator value` for `hold`; an open alert resolves once past `clear`.
fn threshold(
    state: &mut RuleState,
    s: Sample,
    operator: Operator,
    value: f64,
    clear: f64,
    hold: Duration,
) -> Step {
    let Sample { parameter, v, ts } = s;
    let unit = parameter.unit();
    if state.open.is_some() {
        let cleared = match operator {
            Operator::Below => v >= clear,
            _ => v <= clear,
        };
        if !cleared {
            return Step::Hold;
        }
        let message = format!("{parameter} back to {v} {unit} (clears at {clear} {unit})");
        return Step::Resolve { value: v, message };
    }
    let violated = match operator {
        Operator::Below => v < value,
        Operator::Above => v > value,
        Operator::AtLeast => v >= value,
    };
    if !violated {
        state.pending_since = None;
        return Step::Hold;
    }
    let since = *state.pending_since.get_or_insert(ts);
    if ts - since < hold.as_millis() as i64 {
        return Step::Hold;
    }
    let word = if operator == Operator::Below {
        "below"
    } else {
        "above"
    };
    Step::Raise {
        value: v,
        threshold: Threshold {
            parameter: parameter.as_str().to_string(),
            operator,
            value,
        },
        message: format!("{parameter} {v} {unit} {word} threshold {value} {unit}"),
    }
}

/// `|Δvalue| / minute` over `window` above `value`; resolves at or below `clear`.
fn rate_of_change(
    state: &mut RuleState,
    s: Sample,
    value: f64,
    clear: f64,
    window: Duration,
) -> Step {
    let Sample { parameter, v, ts } = s;
    let (start, v0) = *state.reference.get_or_insert((ts, v));
    let span = ts - start;
    if span < window.as_millis() as i64 || span <= 0 {
        return Step::Hold;
    }
    state.reference = Some((ts, v));
    let rate = round2((v - v0).abs() * 60_000.0 / span as f64);
    let unit = parameter.unit();
    if state.open.is_some() {
        if rate > clear {
            return Step::Hold;
        }
        let message = format!("{parameter} rate back to {rate} {unit}/min");
        return Step::Resolve {
            value: rate,
            message,
        };
    }
    if rate <= value {
        return Step::Hold;
    }
    Step::Raise {
        value: rate,
        threshold: Threshold {
            parameter: format!("{parameter}_rate_per_min"),
            operator: Operator::Above,
            value,
        },
        message: format!("{parameter} changing {rate} {unit}/min (limit {value} {unit}/min)"),
    }
}

/// The value has not changed at all for `hold` and at least 3 readings; resolves when it moves.
fn stuck(state: &mut RuleState, s: Sample, hold: Duration) -> Step {
    let Sample { parameter, v, ts } = s;
    let unit = parameter.unit();
    match state.reference {
        // Bitwise: a sensor that is stuck repeats exactly the same value.
        Some((_, same)) if same.to_bits() == v.to_bits() => {
            state.count = state.count.saturating_add(1);
        }
        _ => {
            state.reference = Some((ts, v));
            state.count = 1;
            if state.open.is_none() {
                return Step::Hold;
            }
            let message = format!("{parameter} sensor changing again ({v} {unit})");
            return Step::Resolve { value: v, message };
        }
    }
    let since = state.reference.map_or(ts, |(t, _)| t);
    let stuck_ms = ts - since;
    if state.open.is_some() || state.count < 3 || stuck_ms < hold.as_millis() as i64 {
        return Step::Hold;
    }
    let secs = stuck_ms as f64 / 1000.0;
    Step::Raise {
        value: secs,
        threshold: Threshold {
            parameter: format!("{parameter}_unchanged_seconds"),
            operator: Operator::AtLeast,
            value: hold.as_secs_f64(),
        },
        message: format!("{parameter} sensor stuck at {v} {unit} for {secs} s"),
    }
}

/// The step of an offline rule at `now_ms` (receiver clock): raise once the device has been
/// silent for longer than `missed_intervals` send intervals. Readings resolve it
/// ([`on_reading`]).
pub(super) fn offline(
    state: &RuleState,
    liveness: &Liveness,
    missed_intervals: f64,
    default_interval_ms: i64,
    now_ms: i64,
) -> Step {
    let Some(silence) = liveness.silence_ms(now_ms) else {
        return Step::Hold;
    };
    if state.open.is_some() || !liveness.is_silent(now_ms, missed_intervals, default_interval_ms) {
        return Step::Hold;
    }
    let limit = liveness.offline_limit_ms(missed_intervals, default_interval_ms);
    let (secs, limit_secs) = (round2(silence as f64 / 1000.0), round2(limit / 1000.0));
    Step::Raise {
        value: secs,
        threshold: Threshold {
            parameter: "silence_seconds".into(),
            operator: Operator::Above,
            value: limit_secs,
        },
        message: format!("no data for {secs} s (limit {limit_secs} s)"),
    }
}

/// The device said it went offline (`cause`): raise now, whatever the silence so far.
pub(super) fn declared_offline(
    state: &RuleState,
    liveness: &Liveness,
    missed_intervals: f64,
    default_interval_ms: i64,
    now_ms: i64,
    cause: &str,
) -> Step {
    if state.open.is_some() {
        return Step::Hold;
    }
    let silence = liveness.silence_ms(now_ms).unwrap_or(0);
    let limit = liveness.offline_limit_ms(missed_intervals, default_interval_ms);
    Step::Raise {
        value: round2(silence as f64 / 1000.0),
        threshold: Threshold {
            parameter: "silence_seconds".into(),
            operator: Operator::Above,
            value: round2(limit / 1000.0),
        },
        message: format!("{cause}: the device reported itself offline"),
    }
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}
