//! Rollups of one device: a dense ring of fixed-width time buckets, each holding min, max, mean
//! and count of every parameter in 28 bytes.

use std::collections::VecDeque;

use super::codec::ROLLUP;

/// A bucket in full precision: what readings are folded into, and what queries read.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Bucket {
    pub(crate) count: u32,
    pub(crate) min: [f64; 6],
    pub(crate) max: [f64; 6],
    pub(crate) sum: [f64; 6],
}

impl Bucket {
    fn empty() -> Bucket {
        Bucket {
            count: 0,
            min: [f64::INFINITY; 6],
            max: [f64::NEG_INFINITY; 6],
            sum: [0.0; 6],
        }
    }

    fn add(&mut self, values: &[f64; 6]) {
        self.count = self.count.saturating_add(1);
        for (i, v) in values.iter().enumerate() {
            self.min[i] = self.min[i].min(*v);
            self.max[i] = self.max[i].max(*v);
            self.sum[i] += v;
        }
    }
}

/// The stored form of a bucket. Min and max are grid codes ([`ROLLUP`]: 0.01, pressure 0.02);
/// the mean is kept as where it lies between them, in 1/255 steps, so its error is at most
/// 1/510 of the bucket's spread (and zero when min = max).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Slot {
    min: [u16; 4],
    max: [u16; 4],
    /// Battery and signal strength: whole numbers in `0..=150`.
    small_min: [u8; 2],
    small_max: [u8; 2],
    mean: [u8; 6],
    count: u16,
}

const _: () = assert!(std::mem::size_of::<Slot>() == 28);

/// Size of one stored bucket, for memory accounting.
pub(crate) const SLOT_BYTES: usize = std::mem::size_of::<Slot>();

impl Slot {
    fn codes(&self, i: usize) -> (u32, u32) {
        if i < 4 {
            (u32::from(self.min[i]), u32::from(self.max[i]))
        } else {
            (
                u32::from(self.small_min[i - 4]),
                u32::from(self.small_max[i - 4]),
            )
        }
    }

    fn encode(b: &Bucket) -> Slot {
        let mut slot = Slot {
            count: b.count.min(u32::from(u16::MAX)) as u16,
            ..Slot::default()
        };
        if b.count == 0 {
            return slot;
        }
        for (i, grid) in ROLLUP.iter().enumerate() {
            let (lo, hi) = (grid.encode(b.min[i]), grid.encode(b.max[i]));
            // Every grid fits its field (checked by the codec tests), so the casts are exact.
            if i < 4 {
                (slot.min[i], slot.max[i]) = (lo as u16, hi as u16);
            } else {
                (slot.small_min[i - 4], slot.small_max[i - 4]) = (lo as u8, hi as u8);
            }
            if hi > lo {
                let mean = grid.position(b.sum[i] / f64::from(b.count));
                let frac = (mean - f64::from(lo)) / f64::from(hi - lo);
                slot.mean[i] = (frac * 255.0).round().clamp(0.0, 255.0) as u8;
            }
        }
        slot
    }

    fn decode(&self) -> Bucket {
        let mut b = Bucket::empty();
        b.count = u32::from(self.count);
        if b.count == 0 {
            return b;
        }
        for (i, grid) in ROLLUP.iter().enumerate() {
            let (lo, hi) = self.codes(i);
            let mean = f64::from(lo) + f64::from(hi - lo) * f64::from(self.mean[i]) / 255.0;
            b.min[i] = grid.decode(lo);
            b.max[i] = grid.decode(hi);
            b.sum[i] = grid.decode_position(mean) * f64::from(b.count);
        }
        b
    }
}

/// The rollup buckets of one device. Dense: slot `i` is bucket number `first + i` (bucket
/// number = event time / width), empty buckets have a count of 0.
#[derive(Debug)]
pub(crate) struct RollupRing {
    slots: VecDeque<Slot>,
    first: i64,
    /// The newest bucket in full precision, so the common in-order case never loses anything
    /// to the stored form (and does not pay for encoding at every reading); its slot is only
    /// current once sealed. Late readings for older buckets are merged into the stored form.
    open: Option<(i64, Bucket)>,
}

impl RollupRing {
    pub(crate) fn new() -> RollupRing {
        RollupRing {
            slots: VecDeque::new(),
            first: 0,
            open: None,
        }
    }

    /// Bytes held by the ring's buffer.
    pub(crate) fn heap_bytes(&self) -> usize {
        self.slots.capacity() * SLOT_BYTES
    }

    /// Folds `values` (in [`iiot_model::Parameter::ALL`] order) into the bucket of event time
    /// `t`. At most `cap` buckets are kept: newer ones push the oldest out; a reading older than
    /// the ring can reach is refused (returns false).
    pub(crate) fn add(&mut self, t: i64, values: &[f64; 6], width: i64, cap: usize) -> bool {
        let cap = cap.max(1);
        let b = t.div_euclid(width);
        if self.slots.is_empty() {
            self.first = b;
        }
        let end = self.first + self.slots.len() as i64;
        if b >= end {
            let too_many = (b - self.first + 1 - cap as i64).max(0);
            if too_many >= self.slots.len() as i64 {
                self.slots.clear();
                self.first = b;
            } else {
                self.slots.drain(..too_many as usize);
                self.first += too_many;
            }
            let missing = (b - self.first + 1) as usize - self.slots.len();
            self.reserve(missing, cap);
            self.slots
                .extend(std::iter::repeat_n(Slot::default(), missing));
        } else if b < self.first {
            if (end - b) as usize > cap {
                return false;
            }
            let missing = (self.first - b) as usize;
            self.reserve(missing, cap);
            for _ in 0..missing {
                self.slots.push_front(Slot::default());
            }
            self.first = b;
        }
        let i = (b - self.first) as usize;
        match &mut self.open {
            Some((open, bucket)) if *open == b => {
                // Only the count is kept current in the slot (empty-bucket checks read it);
                // the bucket is encoded once, when the next one opens.
                bucket.add(values);
                self.slots[i].count = bucket.count.min(u32::from(u16::MAX)) as u16;
            }
            Some((open, _)) if *open > b => {
                let mut late = self.slots[i].decode();
                late.add(values);
                self.slots[i] = Slot::encode(&late);
            }
            _ => {
                self.seal();
                let mut bucket = self.slots[i].decode();
                bucket.add(values);
                self.slots[i] = Slot::encode(&bucket);
                self.open = Some((b, bucket));
            }
        }
        true
    }

    /// Writes the open bucket into its slot, if the ring still holds it.
    fn seal(&mut self) {
        if let Some((b, bucket)) = self.open.take()
            && let Some(slot) = usize::try_from(b - self.first)
                .ok()
                .and_then(|i| self.slots.get_mut(i))
        {
            *slot = Slot::encode(&bucket);
        }
    }

    /// Grows towards `cap` by doubling, never past it (the ring is dense, so a device that
    /// reports steadily fills it exactly).
    fn reserve(&mut self, additional: usize, cap: usize) {
        let len = self.slots.len();
        if len + additional <= self.slots.capacity() {
            return;
        }
        let target = (len * 2).max(16).min(cap).max(len + additional);
        self.slots.reserve_exact(target - len);
    }

    /// Drops buckets that end at or before `cutoff`. (The newest slot always holds the newest
    /// reading, so a ring that is not empty is never all empty buckets.)
    pub(crate) fn prune(&mut self, cutoff: i64, width: i64) {
        while !self.slots.is_empty() && (self.first + 1).saturating_mul(width) <= cutoff {
            self.slots.pop_front();
            self.first += 1;
        }
        if self
            .open
            .is_some_and(|(b, _)| b < self.first || self.slots.is_empty())
        {
            self.open = None;
        }
        let len = self.slots.len();
        if len == 0 || self.slots.capacity() > 2 * len + 16 {
            self.slots.shrink_to(len);
        }
    }

    /// Non-empty buckets overlapping `[from, to]`, oldest first, as (bucket start, bucket).
    pub(crate) fn buckets(
        &self,
        from: i64,
        to: i64,
        width: i64,
    ) -> impl Iterator<Item = (i64, Bucket)> + '_ {
        let skip = (from.div_euclid(width) - self.first).clamp(0, self.slots.len() as i64);
        let last = to.div_euclid(width);
        self.slots
            .iter()
            .enumerate()
            .skip(skip as usize)
            .map(move |(i, s)| (self.first + i as i64, s))
            .take_while(move |(b, _)| *b <= last)
            .filter(|(_, s)| s.count > 0)
            .map(move |(b, s)| match self.open {
                Some((open, bucket)) if open == b => (b * width, bucket),
                _ => (b * width, s.decode()),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: i64 = 60_000;

    fn values(v: f64) -> [f64; 6] {
        [v, 50.0, 1013.25, 2.5, 80.0, -45.0]
    }

    #[test]
    fn the_stored_form_keeps_min_max_exact_and_the_mean_close() {
        let mut b = Bucket::empty();
        for v in [20.0, 21.37, 25.0, 24.1] {
            b.add(&values(v));
        }
        let back = Slot::encode(&b).decode();
        assert_eq!(back.count, 4);
        assert_eq!((back.min[0], back.max[0]), (20.0, 25.0));
        let (mean, exact) = (back.sum[0] / 4.0, b.sum[0] / 4.0);
        assert!(
            (mean - exact).abs() <= 5.0 / 510.0 + 1e-9,
            "{mean} vs {exact}"
        );
        assert_eq!(back.sum[4] / 4.0, 80.0, "a constant comes back exactly");
        assert_eq!((back.min[5], back.max[5]), (-45.0, -45.0));
    }

    #[test]
    fn buckets_are_dense_bounded_and_late_readings_merge() {
        let mut ring = RollupRing::new();
        assert!(ring.add(0, &values(10.0), MIN, 4));
        assert!(ring.add(3 * MIN, &values(30.0), MIN, 4));
        assert!(
            ring.add(MIN + 5, &values(11.0), MIN, 4),
            "late, inside the ring"
        );
        assert!(
            ring.add(10, &values(12.0), MIN, 4),
            "late, into the first bucket"
        );
        let got: Vec<(i64, u32)> = ring
            .buckets(i64::MIN, i64::MAX, MIN)
            .map(|(t, b)| (t, b.count))
            .collect();
        assert_eq!(got, [(0, 2), (MIN, 1), (3 * MIN, 1)]);
        // Two buckets later the ring (4 buckets) has let bucket 0 and 1 go...
        assert!(ring.add(5 * MIN, &values(50.0), MIN, 4));
        let starts: Vec<i64> = ring.buckets(i64::MIN, i64::MAX, MIN).map(|b| b.0).collect();
        assert_eq!(starts, [3 * MIN, 5 * MIN]);
        // ...and cannot take a reading for them any more.
        assert!(!ring.add(MIN, &values(1.0), MIN, 4));
        assert!(ring.slots.capacity() <= 16);
    }

    #[test]
    fn prune_drops_whole_buckets_before_the_cutoff() {
        let mut ring = RollupRing::new();
        for m in 0..10 {
            ring.add(m * MIN, &values(m as f64), MIN, 1440);
        }
        ring.prune(4 * MIN + 1, MIN);
        let starts: Vec<i64> = ring.buckets(i64::MIN, i64::MAX, MIN).map(|b| b.0).collect();
        assert_eq!(starts, (4..10).map(|m| m * MIN).collect::<Vec<_>>());
        ring.prune(100 * MIN, MIN);
        assert_eq!(ring.buckets(i64::MIN, i64::MAX, MIN).count(), 0);
        assert_eq!(
            ring.heap_bytes(),
            0,
            "a silent device holds no rollup memory"
        );
    }
}
