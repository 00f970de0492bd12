//! Per-device sequence tracking: gaps, duplicates, reordering and device restarts.

/// How far back (in `seq` numbers) duplicates are told apart from late arrivals.
pub const WINDOW: u64 = 64;

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
    /// Far behind the newest and at the start of a count (0 or 1): the device restarted.
    Restart,
    /// Older than the window: cannot tell late from duplicate; treated as late.
    TooOld,
}

/// Sequence state of one device: the newest `seq` and a bitmap of the [`WINDOW`] before it.
#[derive(Debug, Clone, Copy, Default)]
pub struct SeqState {
    highest: u64,
    /// Bit `i` set ⇔ `highest - i` was seen.
    seen: u64,
}

impl SeqState {
    /// The newest `seq` seen (0 before any).
    pub fn highest(&self) -> u64 {
        self.highest
    }

    /// Records `seq` and classifies it.
    pub fn check(&mut self, seq: u64) -> SeqVerdict {
        if self.seen == 0 {
            self.highest = seq;
            self.seen = 1;
            return SeqVerdict::InOrder;
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
            return if ahead == 1 {
                SeqVerdict::InOrder
            } else {
                SeqVerdict::Gap(ahead - 1)
            };
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
        if seq <= 1 {
            *self = SeqState {
                highest: seq,
                seen: 1,
            };
            return SeqVerdict::Restart;
        }
        SeqVerdict::TooOld
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verdicts(seqs: &[u64]) -> Vec<SeqVerdict> {
        let mut s = SeqState::default();
        seqs.iter().map(|q| s.check(*q)).collect()
    }

    #[test]
    fn in_order_stream() {
        assert!(
            verdicts(&[1, 2, 3, 4])
                .iter()
                .all(|v| *v == SeqVerdict::InOrder)
        );
    }

    #[test]
    fn gap_then_late_fill_then_duplicate() {
        use SeqVerdict::*;
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
        use SeqVerdict::*;
        assert_eq!(
            verdicts(&[10, 500, 10, 499, 499]),
            [InOrder, Gap(489), TooOld, Late, Duplicate]
        );
    }

    #[test]
    fn restart_from_one_is_recognised() {
        use SeqVerdict::*;
        assert_eq!(
            verdicts(&[1000, 1001, 1, 2, 3]),
            [InOrder, InOrder, Restart, InOrder, InOrder]
        );
        // Within the window, an old 1 is just a duplicate.
        assert_eq!(
            verdicts(&[1, 2, 3, 1]),
            [InOrder, InOrder, InOrder, Duplicate]
        );
    }
}
