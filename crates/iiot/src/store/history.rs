//! Downsampling: a time range cut into at most `points` equal buckets, each summarised as
//! min/max/avg/count, from raw samples or from rollups.

use serde::Serialize;

use super::StoreError;
use super::raw::RawRing;
use super::rollup::RollupRing;

/// Most points one history query may ask for.
pub const MAX_POINTS: usize = 10_000;

/// One point of a history series: a summary of the samples of one bucket.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct HistoryPoint {
    /// Start of the bucket, Unix milliseconds.
    pub t: i64,
    /// Smallest value in the bucket.
    pub min: f64,
    /// Largest value in the bucket.
    pub max: f64,
    /// Mean of the bucket's samples.
    pub avg: f64,
    /// Number of readings summarised.
    pub count: u32,
}

/// Bucket `k` is `[origin + k·width, origin + (k+1)·width)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Buckets {
    pub(crate) origin: i64,
    pub(crate) width: i64,
}

impl Buckets {
    /// Cuts `[from, to]` into at most `points` buckets no narrower than `resolution` (the
    /// source's own: 1 ms for raw samples, the rollup width for rollups). Buckets start at
    /// `from` rounded down to the resolution, so rollup buckets are never split.
    pub(crate) fn new(
        from: i64,
        to: i64,
        points: usize,
        resolution: i64,
    ) -> Result<Buckets, StoreError> {
        if !(1..=MAX_POINTS).contains(&points) {
            return Err(StoreError::BadRange("points must be between 1 and 10000"));
        }
        if from > to {
            return Err(StoreError::BadRange("from is after to"));
        }
        let origin = from.div_euclid(resolution) * resolution;
        let span = to
            .checked_sub(origin)
            .and_then(|s| s.checked_add(1))
            .ok_or(StoreError::BadRange("range too long"))?;
        // Both positive here: span >= 1, points >= 1, resolution >= 1.
        let ceil = |a: i64, b: i64| (a as u64).div_ceil(b as u64) as i64;
        let width = ceil(span, points as i64).max(resolution);
        Ok(Buckets {
            origin,
            width: ceil(width, resolution).saturating_mul(resolution),
        })
    }

    fn index(&self, t: i64) -> i64 {
        (t - self.origin) / self.width
    }
}

/// Folds summaries, in time order, into one [`HistoryPoint`] per bucket.
pub(crate) struct Downsampler {
    buckets: Buckets,
    out: Vec<HistoryPoint>,
    current: Option<(i64, Acc)>,
}

/// A summary of some samples.
#[derive(Clone, Copy)]
pub(crate) struct Acc {
    pub(crate) min: f64,
    pub(crate) max: f64,
    pub(crate) sum: f64,
    pub(crate) count: u64,
}

impl Downsampler {
    pub(crate) fn new(buckets: Buckets) -> Downsampler {
        Downsampler {
            buckets,
            out: Vec::new(),
            current: None,
        }
    }

    /// Adds a summary starting at `t` (calls come in time order).
    pub(crate) fn push(&mut self, t: i64, add: Acc) {
        let k = self.buckets.index(t);
        match &mut self.current {
            Some((ck, acc)) if *ck == k => {
                acc.min = acc.min.min(add.min);
                acc.max = acc.max.max(add.max);
                acc.sum += add.sum;
                acc.count += add.count;
            }
            _ => {
                self.flush();
                self.current = Some((k, add));
            }
        }
    }

    fn flush(&mut self) {
        if let Some((k, acc)) = self.current.take().filter(|(_, a)| a.count > 0) {
            self.out.push(HistoryPoint {
                t: self.buckets.origin + k * self.buckets.width,
                min: acc.min,
                max: acc.max,
                avg: acc.sum / acc.count as f64,
                count: u32::try_from(acc.count).unwrap_or(u32::MAX),
            });
        }
    }

    pub(crate) fn finish(mut self) -> Vec<HistoryPoint> {
        self.flush();
        self.out
    }
}

/// Parameter `i` of the raw samples in `[from, to]`, downsampled.
pub(crate) fn from_raw(
    ring: &RawRing,
    i: usize,
    from: i64,
    to: i64,
    points: usize,
) -> Result<Vec<HistoryPoint>, StoreError> {
    let mut d = Downsampler::new(Buckets::new(from, to, points, 1)?);
    for (t, slot) in ring.range(from, to) {
        let v = slot.value(i);
        d.push(
            t,
            Acc {
                min: v,
                max: v,
                sum: v,
                count: 1,
            },
        );
    }
    Ok(d.finish())
}

/// Parameter `i` of the rollup buckets overlapping `[from, to]`, downsampled.
pub(crate) fn from_rollups(
    ring: &RollupRing,
    width: i64,
    i: usize,
    from: i64,
    to: i64,
    points: usize,
) -> Result<Vec<HistoryPoint>, StoreError> {
    let mut d = Downsampler::new(Buckets::new(from, to, points, width)?);
    for (start, b) in ring.buckets(from, to, width) {
        d.push(
            start,
            Acc {
                min: b.min[i],
                max: b.max[i],
                sum: b.sum[i],
                count: u64::from(b.count),
            },
        );
    }
    Ok(d.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_never_exceed_points_and_respect_the_resolution() {
        for (from, to, points, res) in [
            (0, 59_999, 60, 1),
            (1, 3_600_000, 7, 1),
            (-5_000, 5_000, 3, 1),
            (123_456, 86_523_456, 300, 300_000),
            (0, 0, 1, 1),
            (10, 86_400_000, 10_000, 300_000),
        ] {
            let b = Buckets::new(from, to, points, res).expect("valid");
            assert_eq!(b.width % res, 0);
            assert!(b.origin <= from);
            let n = b.index(to) - b.index(from) + 1;
            assert!(n as usize <= points, "{from}..{to}/{points}: {n} buckets");
        }
    }

    #[test]
    fn bad_ranges_are_refused() {
        for (from, to, points) in [(2, 1, 10), (0, 1, 0), (0, 1, 10_001)] {
            assert!(matches!(
                Buckets::new(from, to, points, 1),
                Err(StoreError::BadRange(_))
            ));
        }
        assert!(Buckets::new(i64::MIN, i64::MAX, 10, 1).is_err());
    }
}
