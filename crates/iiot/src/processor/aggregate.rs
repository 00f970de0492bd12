//! Per-device aggregates: min/max/sum/count of each sensor per minute of event time.

use iiot_model::{Parameter, Reading};

/// Width of an aggregation bucket.
pub const BUCKET_MS: i64 = 60_000;

/// min/max/sum/count of one sensor in one bucket.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stat {
    /// Smallest value.
    pub min: f64,
    /// Largest value.
    pub max: f64,
    /// Sum of values (for the mean).
    pub sum: f64,
}

impl Stat {
    fn new(v: f64) -> Stat {
        Stat {
            min: v,
            max: v,
            sum: v,
        }
    }

    fn add(&mut self, v: f64) {
        self.min = self.min.min(v);
        self.max = self.max.max(v);
        self.sum += v;
    }
}

/// One minute of one device: a [`Stat`] per sensor of [`Parameter::SENSORS`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rollup {
    /// Start of the minute, Unix ms.
    pub start_ms: i64,
    /// Readings folded in.
    pub count: u32,
    /// Stats in the order of [`Parameter::SENSORS`].
    pub sensors: [Stat; 4],
}

impl Rollup {
    fn new(r: &Reading<'_>) -> Rollup {
        Rollup {
            start_ms: r.timestamp.div_euclid(BUCKET_MS) * BUCKET_MS,
            count: 1,
            sensors: Parameter::SENSORS.map(|p| Stat::new(r.value(p))),
        }
    }

    /// Mean of `parameter` (a sensor parameter) over the bucket.
    pub fn mean(&self, parameter: Parameter) -> Option<f64> {
        let i = Parameter::SENSORS.iter().position(|p| *p == parameter)?;
        Some(self.sensors[i].sum / f64::from(self.count.max(1)))
    }
}

/// The current and the last completed minute of a device.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Aggregates {
    /// The minute being filled.
    pub current: Option<Rollup>,
    /// The minute before it, complete.
    pub previous: Option<Rollup>,
}

impl Aggregates {
    /// Folds `r` in. A reading for an older minute than the current one is ignored (returns
    /// false): late data does not reopen a closed minute.
    pub fn add(&mut self, r: &Reading<'_>) -> bool {
        let bucket = r.timestamp.div_euclid(BUCKET_MS) * BUCKET_MS;
        match &mut self.current {
            Some(cur) if cur.start_ms == bucket => {
                cur.count += 1;
                for (stat, p) in cur.sensors.iter_mut().zip(Parameter::SENSORS) {
                    stat.add(r.value(p));
                }
                true
            }
            Some(cur) if bucket < cur.start_ms => false,
            _ => {
                self.previous = self.current.take();
                self.current = Some(Rollup::new(r));
                true
            }
        }
    }
}
