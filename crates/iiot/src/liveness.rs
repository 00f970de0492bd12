//! When a device counts as silent: its estimated send interval, when it was last heard from, and
//! the offline limit drawn from both.
//!
//! The alert engine (offline alerts) and the store (device status) each keep a [`Liveness`] per
//! device. The estimator and the limit live here once so the two cannot disagree about who is
//! offline; each caller decides which readings it feeds in. Time comes in as arguments: event
//! time for the interval, the receiver's clock for silence.

/// Offline limits shorter than this are raised to it: the processor checks once a second, so a
/// shorter limit would only measure scheduling jitter.
pub const MIN_OFFLINE_MS: i64 = 3_000;

/// Marks "never" in the time fields; below every real time, so `max` needs no special case.
const NEVER: i64 = i64::MIN;

/// How recently one device was heard from, and how often it sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Liveness {
    /// Smoothed gap between event times, 0 until two event times were observed.
    interval_ms: i64,
    /// Receiver clock when the device was last heard from.
    last_heard_ms: i64,
    /// Event time of the newest reading observed.
    newest_event_ms: i64,
}

impl Default for Liveness {
    fn default() -> Self {
        Liveness {
            interval_ms: 0,
            last_heard_ms: NEVER,
            newest_event_ms: NEVER,
        }
    }
}

impl Liveness {
    /// Learns from a reading with event time `ts`: a time newer than any seen so far refines
    /// the interval estimate (a moving average of the gaps). `default_interval_ms` caps the
    /// first gap, which may span a silence.
    pub fn observe_event(&mut self, ts: i64, default_interval_ms: i64) {
        if self.newest_event_ms != NEVER && ts > self.newest_event_ms {
            let gap = ts - self.newest_event_ms;
            // A device back from silence should not teach us a huge interval.
            self.interval_ms = if self.interval_ms > 0 {
                (self.interval_ms * 7 + gap.min(self.interval_ms * 4)) / 8
            } else {
                gap.min(default_interval_ms * 4)
            };
        }
        self.newest_event_ms = self.newest_event_ms.max(ts);
    }

    /// Records that the device was heard from at `received_ms` (receiver clock). Never moves
    /// back: a late reading handled after a newer one is still no newer sign of life.
    pub fn touch(&mut self, received_ms: i64) {
        self.last_heard_ms = self.last_heard_ms.max(received_ms);
    }

    /// The send interval: observed, or `default_interval_ms` until observed.
    pub fn interval_ms(&self, default_interval_ms: i64) -> i64 {
        if self.interval_ms > 0 {
            self.interval_ms
        } else {
            default_interval_ms
        }
    }

    /// Receiver clock when the device was last heard from, if ever.
    pub fn last_heard_ms(&self) -> Option<i64> {
        (self.last_heard_ms != NEVER).then_some(self.last_heard_ms)
    }

    /// Event time of the newest reading observed, if any.
    pub fn newest_event_ms(&self) -> Option<i64> {
        (self.newest_event_ms != NEVER).then_some(self.newest_event_ms)
    }

    /// How long the device has been silent at `now_ms` (receiver clock); `None` if never heard.
    pub fn silence_ms(&self, now_ms: i64) -> Option<i64> {
        self.last_heard_ms().map(|t| now_ms.saturating_sub(t))
    }

    /// The silence after which the device is offline: `missed_intervals` send intervals, but at
    /// least [`MIN_OFFLINE_MS`]. Fractional: `missed_intervals` need not be whole.
    pub fn offline_limit_ms(&self, missed_intervals: f64, default_interval_ms: i64) -> f64 {
        let interval = self.interval_ms(default_interval_ms) as f64;
        // The floor keeps millisecond intervals from flapping on scheduling hiccups.
        (interval * missed_intervals).max(MIN_OFFLINE_MS as f64)
    }

    /// Whether the device has been silent longer than its offline limit at `now_ms`. A device
    /// never heard from is not silent: there is nothing to miss yet.
    pub fn is_silent(&self, now_ms: i64, missed_intervals: f64, default_interval_ms: i64) -> bool {
        let limit = self.offline_limit_ms(missed_intervals, default_interval_ms);
        self.silence_ms(now_ms)
            .is_some_and(|silence| silence as f64 > limit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_700_000_000_000;

    fn every(interval: i64, readings: i64) -> Liveness {
        let mut l = Liveness::default();
        for i in 0..readings {
            l.observe_event(T0 + i * interval, 5_000);
            l.touch(T0 + i * interval);
        }
        l
    }

    #[test]
    fn the_interval_is_learned_from_gaps_between_event_times() {
        assert_eq!(every(2_000, 1).interval_ms(5_000), 5_000);
        assert_eq!(every(2_000, 2).interval_ms(5_000), 2_000);
        assert_eq!(every(2_000, 10).interval_ms(5_000), 2_000);
        // Smoothed: one 3 s gap after 2 s ones moves the estimate by an eighth.
        let mut l = every(2_000, 3);
        l.observe_event(T0 + 7_000, 5_000);
        assert_eq!(l.interval_ms(5_000), 2_125);
    }

    #[test]
    fn a_silence_does_not_teach_a_huge_interval() {
        // The first gap is capped at 4 default intervals, later ones at 4 observed intervals.
        let mut first = Liveness::default();
        first.observe_event(T0, 1_000);
        first.observe_event(T0 + 60_000, 1_000);
        assert_eq!(first.interval_ms(1_000), 4_000);
        let mut later = every(2_000, 2);
        later.observe_event(T0 + 2_000 + 60_000, 5_000);
        assert_eq!(later.interval_ms(5_000), (2_000 * 7 + 8_000) / 8);
    }

    #[test]
    fn late_and_repeated_times_change_nothing_but_never_move_back() {
        let mut l = every(2_000, 3);
        let before = l;
        l.observe_event(T0 + 1_000, 5_000);
        l.observe_event(T0 + 4_000, 5_000);
        l.touch(T0);
        assert_eq!(l, before);
        assert_eq!(l.newest_event_ms(), Some(T0 + 4_000));
        assert_eq!(l.last_heard_ms(), Some(T0 + 4_000));
    }

    #[test]
    fn silent_only_past_the_limit_and_never_below_the_floor() {
        let l = every(2_000, 3);
        let heard = T0 + 4_000;
        assert_eq!(l.silence_ms(heard + 7), Some(7));
        assert_eq!(l.offline_limit_ms(3.0, 5_000), 6_000.0);
        assert!(!l.is_silent(heard + 6_000, 3.0, 5_000));
        assert!(l.is_silent(heard + 6_001, 3.0, 5_000));
        assert!(!l.is_silent(heard + 10_000, 5.0, 5_000));
        assert!(l.is_silent(heard + 10_001, 5.0, 5_000));
        let fast = every(1, 5);
        assert_eq!(fast.offline_limit_ms(3.0, 5_000), MIN_OFFLINE_MS as f64);
        assert!(!fast.is_silent(T0 + 4 + MIN_OFFLINE_MS, 3.0, 5_000));
        assert!(fast.is_silent(T0 + 5 + MIN_OFFLINE_MS, 3.0, 5_000));
    }

    #[test]
    fn a_device_never_heard_from_is_not_silent() {
        let mut l = Liveness::default();
        assert_eq!(l.silence_ms(T0), None);
        assert!(!l.is_silent(T0, 3.0, 5_000));
        // Event times alone are no sign of life on the receiver's clock.
        l.observe_event(T0, 5_000);
        assert!(!l.is_silent(T0 + 60_000, 3.0, 5_000));
        assert_eq!(l.last_heard_ms(), None);
    }
}
