//! Per-device sequence tracking: gaps, duplicates, reordering and device restarts.

/// How far back (in `seq` numbers) duplicates are told apart from late arrivals.
pub const WINDOW: u64 = 64;

/// Forward jumps larger than this are treated as a renumbering, not as that many lost readings.
pub const MAX_JUMP: u64 = 1_000_000;

/// What a reading's `seq` says about the stream of its device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeqVerdict {
    /// The next one (or the first one seen).
    InOrder,
    /// Newer than expected: this many readings are missing (so far).
    Gap(u64),
    /// Older than the newest, not seen before: a reordered (late) reading.
    Late,
    /// Already seen.
    Duplicate,
    /// Behind the newest `seq` but with a newer event time: the device restarted its count
    /// (reboot, firmware update) or the newest `seq` was a bogus jump; tracking starts again.
    Restart,
    /// Older than the window: cannot tell late from duplicate; treated as late.
    TooOld,
}

/// Sequence state of one device: the newest `seq`, its event time, and a bitmap of the
/// [`WINDOW`] before it.
#[derive(Debug, Clone, Copy, Default)]
pub struct SeqState {
    highest: u64,
    /// Event time of the reading that carried `highest`.
    highest_ts: i64,
    /// Bit `i` set ⇔ `highest - i` was seen.
    seen: u64,
}

impl SeqState {
    /// The newest `seq` seen (0 before any).
    pub fn highest(&self) -> u64 {
        self.highest
    }

    /// Records `seq` of a reading with event time `ts` and classifies it.
    ///
    /// A lower `seq` with a newer event time than the newest reading cannot be a late or repeated
    /// reading (those carry their original, older time): the device restarted its count, or the
    /// newest `seq` was a bogus jump. Either way tracking restarts, so one bad value cannot mute
    /// a device.
    pub fn check(&mut self, seq: u64, ts: i64) -> SeqVerdict {
        if self.seen == 0 {
            *self = SeqState {
                highest: seq,
                highest_ts: ts,
                seen: 1,
            };
            return SeqVerdict::InOrder;
        }
        if seq > self.highest && ts < self.highest_ts {
            // A higher number with an older time: a reading from before a restart, arriving
            // late. Not a gap, not in order.
            return SeqVerdict::Late;
        }
        if seq > self.highest && seq - self.highest > MAX_JUMP {
            // Not a plausible loss: a device that renumbered (or a corrupt seq). Start again
            // rather than report millions of missing readings.
            *self = SeqState {
                highest: seq,
                highest_ts: ts,
                seen: 1,
            };
            return SeqVerdict::Restart;
        }
        if seq > self.highest {
            let ahead = seq - self.highest;
            self.seen = if ahead >= WINDOW {
                0
            } else {
                self.seen << ahead
            };
            self.seen |= 1;
            self.highest = seq;
            self.highest_ts = ts;
            return if ahead == 1 {
                SeqVerdict::InOrder
            } else {
                SeqVerdict::Gap(ahead - 1)
            };
        }
        if ts > self.highest_ts {
            *self = SeqState {
                highest: seq,
                highest_ts: ts,
                seen: 1,
            };
            return SeqVerdict::Restart;
        }
        let behind = self.highest - seq;
        if behind < WINDOW {
            let bit = 1u64 << behind;
            if self.seen & bit != 0 {
                return SeqVerdict::Duplicate;
            }
            self.seen |= bit;
            return SeqVerdict::Late;
        }
        SeqVerdict::TooOld
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use SeqVerdict::*;

    /// Readings whose event time follows their seq (seq n sent at time n).
    fn verdicts(seqs: &[u64]) -> Vec<SeqVerdict> {
        let mut s = SeqState::default();
        seqs.iter().map(|q| s.check(*q, *q as i64)).collect()
    }

    /// (seq, event time) pairs.
    fn verdicts_at(readings: &[(u64, i64)]) -> Vec<SeqVerdict> {
        let mut s = SeqState::default();
        readings.iter().map(|(q, t)| s.check(*q, *t)).collect()
    }

    #[test]
    fn in_order_stream() {
        assert!(verdicts(&[1, 2, 3, 4]).iter().all(|v| *v == InOrder));
    }

    #[test]
    fn gap_then_late_fill_then_duplicate() {
        assert_eq!(
            verdicts(&[1, 2, 5, 3, 4, 4, 5, 6]),
            [
                InOrder,
                InOrder,
                Gap(2),
                Late,
                Late,
                Duplicate,
                Duplicate,
                InOrder
            ]
        );
    }

    #[test]
    fn far_jumps_clear_the_window() {
        assert_eq!(
            verdicts(&[10, 500, 10, 499, 499]),
            [InOrder, Gap(489), TooOld, Late, Duplicate]
        );
    }

    #[test]
    fn restart_is_recognised_by_newer_event_time() {
        // A reboot after 1001 readings, and one after 40 (inside the window).
        assert_eq!(
            verdicts_at(&[(1000, 10), (1001, 11), (1, 12), (2, 13), (3, 14)]),
            [InOrder, InOrder, Restart, InOrder, InOrder]
        );
        assert_eq!(
            verdicts_at(&[(39, 10), (40, 11), (1, 12), (2, 13)]),
            [InOrder, InOrder, Restart, InOrder]
        );
        // The first reading after the reboot was lost: still a restart, not "too old".
        assert_eq!(
            verdicts_at(&[(500, 10), (2, 12), (3, 13)]),
            [InOrder, Restart, InOrder]
        );
        // A repeat of an old reading carries its old time: a duplicate, not a restart.
        assert_eq!(
            verdicts_at(&[(1, 10), (2, 11), (3, 12), (1, 10)]),
            [InOrder, InOrder, InOrder, Duplicate]
        );
    }

    #[test]
    fn one_bogus_jump_ahead_does_not_mute_the_device() {
        assert_eq!(
            verdicts_at(&[(5, 10), (u64::MAX, 11), (6, 12), (7, 13)]),
            [InOrder, Restart, Restart, InOrder]
        );
        assert_eq!(
            verdicts_at(&[(5, 10), (5 + MAX_JUMP + 1, 11), (5 + MAX_JUMP + 2, 12)]),
            [InOrder, Restart, InOrder]
        );
    }

    #[test]
    fn a_pre_restart_reading_arriving_after_the_restart_is_late() {
        assert_eq!(
            verdicts_at(&[(1000, 10), (1, 12), (1001, 11), (2, 13)]),
            [InOrder, Restart, Late, InOrder]
        );
    }
}
