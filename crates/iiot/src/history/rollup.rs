//! Rollup buckets: min, max, sum and count of every parameter over one minute or one hour,
//! kept in the rows' integer units so that partial buckets (a late reading arriving in a later
//! segment) merge exactly.

use super::row::Row;

/// Parameters of a row ([`iiot_model::Parameter::ALL`] order).
pub(crate) const PARAMS: usize = 6;

/// One bucket of one device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Bucket {
    /// Start of the bucket, Unix ms (a multiple of its width).
    pub t: i64,
    /// Readings folded in.
    pub count: u32,
    /// Smallest code per parameter.
    pub min: [i32; PARAMS],
    /// Largest code per parameter.
    pub max: [i32; PARAMS],
    /// Sum of the codes per parameter.
    pub sum: [i64; PARAMS],
}

impl Bucket {
    /// A bucket of width `width` holding `row` alone.
    pub(crate) fn of(row: &Row, width: i64) -> Bucket {
        let codes: [i32; PARAMS] = std::array::from_fn(|i| row.code(i));
        Bucket {
            t: row.t.div_euclid(width) * width,
            count: 1,
            min: codes,
            max: codes,
            sum: codes.map(i64::from),
        }
    }

    /// Folds `other` (the same bucket, from elsewhere) in.
    pub(crate) fn merge(&mut self, other: &Bucket) {
        self.count = self.count.saturating_add(other.count);
        for i in 0..PARAMS {
            self.min[i] = self.min[i].min(other.min[i]);
            self.max[i] = self.max[i].max(other.max[i]);
            self.sum[i] = self.sum[i].saturating_add(other.sum[i]);
        }
    }
}

/// The buckets of `rows` (one device, sorted by time), in time order.
pub(crate) fn roll(rows: &[Row], width: i64) -> Vec<Bucket> {
    let mut out: Vec<Bucket> = Vec::new();
    for row in rows {
        let b = Bucket::of(row, width);
        match out.last_mut() {
            Some(last) if last.t == b.t => last.merge(&b),
            _ => out.push(b),
        }
    }
    out
}

/// Sorts buckets by time and merges those of the same start.
pub(crate) fn coalesce(buckets: &mut Vec<Bucket>) {
    buckets.sort_by_key(|b| b.t);
    buckets.dedup_by(|later, kept| {
        if later.t == kept.t {
            kept.merge(later);
            true
        } else {
            false
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(t: i64, temperature: i32) -> Row {
        Row {
            t,
            sensors: [temperature, 0, 100_000, 0],
            battery: 50,
            signal: -60,
            statuses: 0,
            switch_on: true,
        }
    }

    #[test]
    fn rows_fold_into_their_minutes_and_partial_buckets_merge_exactly() {
        let rows = [row(0, 10), row(30_000, 30), row(60_000, 5), row(119_999, 7)];
        let b = roll(&rows, 60_000);
        assert_eq!(b.len(), 2);
        assert_eq!(
            (b[0].t, b[0].count, b[0].min[0], b[0].max[0], b[0].sum[0]),
            (0, 2, 10, 30, 40)
        );
        assert_eq!((b[1].t, b[1].count, b[1].sum[0]), (60_000, 2, 12));
        // A late reading of the first minute, rolled up in a later segment.
        let mut all = vec![b[1], Bucket::of(&row(59_000, 1), 60_000), b[0]];
        coalesce(&mut all);
        assert_eq!(all.len(), 2);
        assert_eq!((all[0].count, all[0].min[0], all[0].sum[0]), (3, 1, 41));
    }

    #[test]
    fn negative_times_land_in_the_bucket_below() {
        assert_eq!(Bucket::of(&row(-1, 0), 60_000).t, -60_000);
    }
}
