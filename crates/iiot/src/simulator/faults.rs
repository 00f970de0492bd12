//! Fault episodes: what a device does wrong, step by step, so that alert rules and error paths
//! are exercised with data that looks like the real failure.

use rand::Rng;
use rand_pcg::Pcg64Mcg;

/// A kind of fault episode a device can go through. A device has at most one episode at a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FaultKind {
    /// Temperature ramps up about 3 °C per step from its last reading to a peak of 95–105 °C,
    /// holds there for 5 steps, then cools about 3 °C per step back to its normal level. Both
    /// ramps are monotonic, so any threshold in between is crossed exactly once each way.
    Overheat,
    /// Current jumps to 12–20 A for 3 steps.
    CurrentSpike,
    /// The temperature sensor repeats its last reading for 24 more steps while still reporting
    /// itself `normal` (the processor has to notice).
    Stuck,
    /// The device sends nothing for 6 steps (and uses no `seq`).
    Silent,
}

impl FaultKind {
    /// Every kind, in a fixed order.
    pub const ALL: [FaultKind; 4] = [
        FaultKind::Overheat,
        FaultKind::CurrentSpike,
        FaultKind::Stuck,
        FaultKind::Silent,
    ];
}

/// Temperature change per step of an overheat ramp, before a little jitter (°C).
const OVERHEAT_STEP: f64 = 3.0;
/// Extra random ramp per step, uniform in `[0, OVERHEAT_JITTER)`; always positive so the ramp
/// is monotonic and crosses any threshold exactly once each way.
const OVERHEAT_JITTER: f64 = 0.4;
/// Steps an overheat holds at its peak.
const HOLD_STEPS: u8 = 5;
/// Steps of a current spike.
const SPIKE_STEPS: u8 = 3;
/// Steps a stuck sensor repeats its value.
const STUCK_STEPS: u8 = 24;
/// Steps a silent device sends nothing.
const SILENT_STEPS: u8 = 6;

/// An episode in progress on one device.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Episode {
    Overheat { level: f64, peak: f64, phase: Heat },
    CurrentSpike { left: u8 },
    Stuck { value: f64, left: u8 },
    Silent { left: u8 },
}

/// Where an overheat episode is.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Heat {
    Rising,
    Holding(u8),
    Cooling,
}

/// What an episode does to one emission; `None` leaves the normal value.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(super) struct Override {
    pub(super) temperature: Option<f64>,
    pub(super) current: Option<f64>,
    pub(super) silent: bool,
}

impl Episode {
    /// Starts an episode of `kind` on a device whose (rounded, reported) temperature is
    /// `temperature`.
    pub(super) fn start(kind: FaultKind, temperature: f64, rng: &mut Pcg64Mcg) -> Episode {
        match kind {
            FaultKind::Overheat => Episode::Overheat {
                level: temperature,
                peak: rng.random_range(95.0..105.0),
                phase: Heat::Rising,
            },
            FaultKind::CurrentSpike => Episode::CurrentSpike { left: SPIKE_STEPS },
            FaultKind::Stuck => Episode::Stuck {
                value: temperature,
                left: STUCK_STEPS,
            },
            FaultKind::Silent => Episode::Silent { left: SILENT_STEPS },
        }
    }

    /// Advances the episode by one emission. `normal_temperature` is what the sensor would read
    /// without the fault (an overheat ends when it has cooled down to it). Returns the override
    /// for this emission and whether the episode is over afterwards.
    pub(super) fn step(&mut self, normal_temperature: f64, rng: &mut Pcg64Mcg) -> (Override, bool) {
        let mut o = Override::default();
        let done = match self {
            Episode::Overheat { level, peak, phase } => match *phase {
                Heat::Rising => {
                    *level += OVERHEAT_STEP + rng.random::<f64>() * OVERHEAT_JITTER;
                    if *level >= *peak {
                        *level = *peak;
                        *phase = Heat::Holding(HOLD_STEPS);
                    }
                    o.temperature = Some(*level);
                    false
                }
                Heat::Holding(left) => {
                    o.temperature = Some(*peak + (rng.random::<f64>() - 0.5) * 0.6);
                    *phase = if left <= 1 {
                        Heat::Cooling
                    } else {
                        Heat::Holding(left - 1)
                    };
                    false
                }
                Heat::Cooling => {
                    *level -= OVERHEAT_STEP + rng.random::<f64>() * OVERHEAT_JITTER;
                    if *level <= normal_temperature {
                        true
                    } else {
                        o.temperature = Some(*level);
                        false
                    }
                }
            },
            Episode::CurrentSpike { left } => {
                o.current = Some(rng.random_range(12.0..20.0));
                *left = left.saturating_sub(1);
                *left == 0
            }
            Episode::Stuck { value, left } => {
                o.temperature = Some(*value);
                *left = left.saturating_sub(1);
                *left == 0
            }
            Episode::Silent { left } => {
                o.silent = true;
                *left = left.saturating_sub(1);
                *left == 0
            }
        };
        (o, done)
    }
}
