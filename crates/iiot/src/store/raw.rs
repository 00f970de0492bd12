//! Raw history of one device: a time-ordered ring of 16-byte samples on the 0.01 grid.

use std::collections::VecDeque;

use iiot_model::{Parameter, Reading, SensorStatus};
use serde::Serialize;

use super::codec::{RAW, index, status_bits, status_from_bits};

/// One raw sample, as exported (CSV/JSON). Decoded on the fly from the compact stored form.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct RawSample {
    /// Event time, Unix milliseconds.
    pub t: i64,
    /// Values in [`Parameter::ALL`] order: the four sensors on a 0.01 grid (exact for values
    /// sent with two decimals), battery and signal strength as the whole numbers they were.
    pub values: [f64; 6],
    /// Whether the machine's switch was on.
    pub switch_on: bool,
    /// What each sensor reported about itself, in [`Parameter::SENSORS`] order.
    pub statuses: [SensorStatus; 4],
}

impl RawSample {
    /// The value of `parameter`.
    pub fn value(&self, parameter: Parameter) -> f64 {
        self.values[index(parameter)]
    }
}

/// The stored form of a sample: 16 bytes (a [`RawSample`] would be 72).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Slot {
    /// Milliseconds after [`RawRing::base_ms`].
    t_off: u32,
    /// Grid codes of the four sensors; pressure needs a 17th bit, kept in `flags`.
    sensors: [u16; 4],
    battery: u8,
    signal: u8,
    /// Two bits per sensor status.
    statuses: u8,
    flags: u8,
}

const _: () = assert!(std::mem::size_of::<Slot>() == 16);

/// Size of one stored sample, for memory accounting.
pub(crate) const SLOT_BYTES: usize = std::mem::size_of::<Slot>();

const SWITCH_ON: u8 = 1;
const PRESSURE_BIT_16: u8 = 2;

impl Slot {
    /// The compact form of `r`, whose values are `values` (its time is set by
    /// [`RawRing::insert`]).
    pub(crate) fn encode(r: &Reading<'_>, values: &[f64; 6]) -> Slot {
        let code = |i: usize| RAW[i].encode(values[i]);
        let pressure = code(2);
        let s = &r.sensors;
        let mut flags = if s.switch_status.value { SWITCH_ON } else { 0 };
        if pressure > 0xFFFF {
            flags |= PRESSURE_BIT_16;
        }
        Slot {
            t_off: 0,
            // Low 16 bits; pressure's 17th is in `flags`. The others fit (codec tests).
            sensors: [
                code(0) as u16,
                code(1) as u16,
                pressure as u16,
                code(3) as u16,
            ],
            // Both grids top out below 256 (checked by the codec tests).
            battery: code(4) as u8,
            signal: code(5) as u8,
            statuses: status_bits(s.temperature.status)
                | status_bits(s.humidity.status) << 2
                | status_bits(s.pressure.status) << 4
                | status_bits(s.current.status) << 6,
            flags,
        }
    }

    fn code(&self, i: usize) -> u32 {
        match i {
            2 if self.flags & PRESSURE_BIT_16 != 0 => u32::from(self.sensors[2]) | 1 << 16,
            0..4 => u32::from(self.sensors[i]),
            4 => u32::from(self.battery),
            _ => u32::from(self.signal),
        }
    }

    /// The value of the parameter at `i` ([`Parameter::ALL`] order).
    pub(crate) fn value(&self, i: usize) -> f64 {
        RAW[i].decode(self.code(i))
    }

    fn sample(&self, t: i64) -> RawSample {
        RawSample {
            t,
            values: std::array::from_fn(|i| self.value(i)),
            switch_on: self.flags & SWITCH_ON != 0,
            statuses: std::array::from_fn(|i| status_from_bits(self.statuses >> (2 * i))),
        }
    }
}

/// How long a ring may grow: `expected` samples for the device's interval, never beyond `cap`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RingSize {
    pub(crate) expected: usize,
    pub(crate) cap: usize,
}

/// What [`RawRing::insert`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RawInsert {
    /// Stored; `evicted` older samples were dropped to stay within the cap.
    Stored { evicted: usize },
    /// A sample with the same event time is already stored.
    Duplicate,
    /// Too old to store (before what the ring still holds); raw history is marked incomplete.
    Skipped,
}

/// The raw samples of one device, ordered by event time.
#[derive(Debug)]
pub(crate) struct RawRing {
    slots: VecDeque<Slot>,
    /// Event time that `t_off` counts from; at or before the oldest sample.
    base_ms: i64,
    /// Every sample recorded with an event time at or after this is still here: what lets a
    /// query tell whether raw history can answer it.
    complete_from: i64,
}

impl RawRing {
    pub(crate) fn new() -> RawRing {
        RawRing {
            slots: VecDeque::new(),
            base_ms: 0,
            complete_from: i64::MIN,
        }
    }

    fn t(&self, s: &Slot) -> i64 {
        self.base_ms + i64::from(s.t_off)
    }

    /// Raw history is complete from this event time on (`i64::MIN`: nothing was ever dropped).
    pub(crate) fn complete_from(&self) -> i64 {
        self.complete_from
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.slots.len()
    }

    /// Bytes held by the ring's buffer.
    pub(crate) fn heap_bytes(&self) -> usize {
        self.slots.capacity() * SLOT_BYTES
    }

    /// Records that samples before `t + 1` may be missing.
    pub(crate) fn mark_incomplete_through(&mut self, t: i64) {
        self.complete_from = self.complete_from.max(t.saturating_add(1));
    }

    /// Stores `slot` at event time `t`, keeping time order (late samples go in the middle).
    pub(crate) fn insert(&mut self, t: i64, mut slot: Slot, size: RingSize) -> RawInsert {
        if t < self.complete_from {
            return RawInsert::Skipped;
        }
        let mut evicted = 0;
        if self.slots.is_empty() {
            self.base_ms = t;
        } else if t < self.base_ms || t - self.base_ms > i64::from(u32::MAX) {
            match self.rebase(t) {
                Some(n) => evicted = n,
                None => {
                    self.mark_incomplete_through(t);
                    return RawInsert::Skipped;
                }
            }
        }
        let newest = self.slots.back().map(|s| self.t(s));
        let mut pos = match newest {
            Some(newest) if t <= newest => {
                let i = self.slots.partition_point(|s| self.t(s) < t);
                if self.slots.get(i).is_some_and(|s| self.t(s) == t) {
                    return RawInsert::Duplicate;
                }
                i
            }
            _ => self.slots.len(),
        };
        if self.slots.len() >= size.cap.max(1) {
            if pos == 0 {
                // Older than everything in a full ring: it would be the next one evicted.
                self.mark_incomplete_through(t);
                return RawInsert::Skipped;
            }
            self.evict_oldest();
            evicted += 1;
            pos -= 1;
        } else {
            self.grow(size);
        }
        slot.t_off = (t - self.base_ms) as u32; // in range: ensured by `rebase` above
        if pos == self.slots.len() {
            self.slots.push_back(slot);
        } else {
            self.slots.insert(pos, slot);
        }
        RawInsert::Stored { evicted }
    }

    fn evict_oldest(&mut self) {
        if let Some(s) = self.slots.pop_front() {
            let t = self.t(&s);
            self.mark_incomplete_through(t);
        }
    }

    /// Moves `base_ms` so that `t` fits next to the stored samples. A time more than `u32::MAX`
    /// ms (49 days) away from them cannot share the ring: if `t` is the newer side the old
    /// samples go (returns how many), if it is the older side `t` is refused (`None`).
    fn rebase(&mut self, t: i64) -> Option<usize> {
        let span = i64::from(u32::MAX);
        let oldest = self.slots.front().map_or(t, |s| self.t(s));
        let newest = self.slots.back().map_or(t, |s| self.t(s));
        if t < oldest && newest - t > span {
            return None;
        }
        let mut evicted = 0;
        while self.slots.front().is_some_and(|s| t - self.t(s) > span) {
            self.evict_oldest();
            evicted += 1;
        }
        let new_base = self.slots.front().map_or(t, |s| self.t(s)).min(t);
        let old_base = self.base_ms;
        for s in &mut self.slots {
            s.t_off = (old_base + i64::from(s.t_off) - new_base) as u32;
        }
        self.base_ms = new_base;
        Some(evicted)
    }

    /// Makes room for one more sample. Grows by doubling up to the expected length (plus a
    /// little for samples that arrive between prunes), then by an eighth: a steady device ends
    /// up with a buffer a few percent over what it needs, not the next power of two.
    fn grow(&mut self, size: RingSize) {
        let len = self.slots.len();
        if len < self.slots.capacity() {
            return;
        }
        let target = if len < size.expected {
            (len * 2)
                .max(16)
                .min(size.expected + size.expected / 32 + 1)
        } else {
            len + (len / 8).max(16)
        };
        let target = target.min(size.cap).max(len + 1);
        self.slots.reserve_exact(target - len);
    }

    /// Drops samples older than `cutoff` and gives back memory a quiet device no longer needs.
    pub(crate) fn prune(&mut self, cutoff: i64) {
        while self.slots.front().is_some_and(|s| self.t(s) < cutoff) {
            self.slots.pop_front();
        }
        self.complete_from = self.complete_from.max(cutoff);
        let len = self.slots.len();
        if len == 0 || self.slots.capacity() > 2 * len + 64 {
            self.slots.shrink_to(len + len / 8);
        }
    }

    /// Samples with `from <= t <= to`, oldest first.
    pub(crate) fn range(&self, from: i64, to: i64) -> impl Iterator<Item = (i64, &Slot)> + '_ {
        let start = self.slots.partition_point(|s| self.t(s) < from);
        self.slots
            .range(start..)
            .map(|s| (self.t(s), s))
            .take_while(move |(t, _)| *t <= to)
    }

    /// Decoded samples with `from <= t <= to`, oldest first.
    pub(crate) fn samples(&self, from: i64, to: i64) -> impl Iterator<Item = RawSample> + '_ {
        self.range(from, to).map(|(t, s)| s.sample(t))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::codec::values;
    use crate::store::tests::reading;

    const SIZE: RingSize = RingSize {
        expected: 720,
        cap: 2880,
    };

    fn slot(t: i64) -> Slot {
        let r = reading("d", 1, t, 20.0);
        Slot::encode(&r, &values(&r))
    }

    fn ring_with(times: &[i64], size: RingSize) -> RawRing {
        let mut ring = RawRing::new();
        for &t in times {
            ring.insert(t, slot(t), size);
        }
        ring
    }

    fn times(ring: &RawRing) -> Vec<i64> {
        ring.range(i64::MIN, i64::MAX).map(|(t, _)| t).collect()
    }

    #[test]
    fn a_sample_decodes_to_what_was_sent() {
        let mut r = reading("d", 1, 1_000, 25.6);
        r.sensors.humidity.status = SensorStatus::Fault;
        r.sensors.pressure.value = 1199.99;
        let s = Slot::encode(&r, &values(&r)).sample(1_000);
        assert_eq!(
            s.values,
            [25.6, 65.2, 1199.99, 2.5, 85.0, -45.0],
            "every value exact"
        );
        assert!(s.switch_on);
        assert_eq!(s.statuses[1], SensorStatus::Fault);
        assert_eq!(s.statuses[0], SensorStatus::Normal);
    }

    #[test]
    fn late_samples_are_inserted_in_time_order_and_duplicates_refused() {
        let mut ring = ring_with(&[1_000, 3_000, 5_000], SIZE);
        let slot = slot(0);
        assert_eq!(
            ring.insert(2_000, slot, SIZE),
            RawInsert::Stored { evicted: 0 }
        );
        assert_eq!(
            ring.insert(500, slot, SIZE),
            RawInsert::Stored { evicted: 0 }
        );
        assert_eq!(ring.insert(3_000, slot, SIZE), RawInsert::Duplicate);
        assert_eq!(times(&ring), [500, 1_000, 2_000, 3_000, 5_000]);
    }

    #[test]
    fn a_full_ring_drops_its_oldest_and_says_raw_is_incomplete() {
        let size = RingSize {
            expected: 2,
            cap: 3,
        };
        let mut ring = ring_with(&[10, 20, 30], size);
        let slot = slot(0);
        assert_eq!(
            ring.insert(40, slot, size),
            RawInsert::Stored { evicted: 1 }
        );
        assert_eq!(times(&ring), [20, 30, 40]);
        assert_eq!(ring.complete_from(), 11);
        assert_eq!(ring.insert(5, slot, size), RawInsert::Skipped);
        assert_eq!(ring.len(), 3);
    }

    #[test]
    fn far_apart_times_rebase_without_losing_order() {
        let day = 86_400_000;
        let mut ring = ring_with(&[100 * day, 100 * day + 5], SIZE);
        let slot = slot(0);
        // 60 days later: the old samples cannot share a u32 offset with it and go.
        assert_eq!(
            ring.insert(160 * day, slot, SIZE),
            RawInsert::Stored { evicted: 2 }
        );
        // And something 60 days older than everything is refused.
        assert_eq!(ring.insert(100 * day, slot, SIZE), RawInsert::Skipped);
        assert_eq!(times(&ring), [160 * day]);
    }

    #[test]
    fn a_steady_device_gets_a_buffer_just_over_its_need_and_a_quiet_one_gives_it_back() {
        let times: Vec<i64> = (0..720).map(|i| i * 5_000).collect();
        let mut ring = ring_with(&times, SIZE);
        assert!(ring.slots.capacity() >= 720 && ring.slots.capacity() <= 745);
        ring.prune(3_500_000);
        assert!(ring.slots.capacity() < 100, "{}", ring.slots.capacity());
        assert_eq!(ring.complete_from(), 3_500_000);
    }
}
