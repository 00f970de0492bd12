//! The notifier's counters, per channel (the `channel` label: a configured name, so bounded)
//! and for the intake queue in front of it. `/metrics` renders them.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

/// Why a delivery failed (the `reason` label: a closed set).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// No answer within the channel's timeout.
    Timeout,
    /// The receiver could not be reached.
    Connect,
    /// It answered 5xx or 429 (retried).
    Http5xx,
    /// It answered another 4xx (not retried: the request would not change).
    Http4xx,
    /// The SMTP server failed for now (retried).
    Smtp,
    /// The SMTP server refused the message for good (not retried).
    SmtpRejected,
    /// The channel's queue was full: the message was never tried.
    QueueFull,
    /// Anything else.
    Other,
}

impl Failure {
    /// Every reason, in the order rendered.
    pub const ALL: [Failure; 8] = [
        Failure::Timeout,
        Failure::Connect,
        Failure::Http5xx,
        Failure::Http4xx,
        Failure::Smtp,
        Failure::SmtpRejected,
        Failure::QueueFull,
        Failure::Other,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Failure::Timeout => "timeout",
            Failure::Connect => "connect",
            Failure::Http5xx => "http_5xx",
            Failure::Http4xx => "http_4xx",
            Failure::Smtp => "smtp",
            Failure::SmtpRejected => "smtp_rejected",
            Failure::QueueFull => "queue_full",
            Failure::Other => "other",
        }
    }

    /// Whether another attempt may succeed.
    pub fn retriable(self) -> bool {
        !matches!(
            self,
            Failure::Http4xx | Failure::SmtpRejected | Failure::QueueFull
        )
    }

    fn index(self) -> usize {
        Failure::ALL.iter().position(|f| *f == self).unwrap_or(0)
    }
}

/// One channel's counters.
#[derive(Debug, Default)]
pub struct ChannelStats {
    /// The channel's name.
    pub name: String,
    sent: AtomicU64,
    failed: [AtomicU64; Failure::ALL.len()],
    retries: AtomicU64,
    queued: AtomicI64,
    silenced: AtomicU64,
    rate_limited: AtomicU64,
    overflowed: AtomicU64,
}

/// A channel's counters at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelSnapshot {
    /// The channel's name.
    pub name: String,
    /// Messages delivered.
    pub sent: u64,
    /// Messages given up on, by reason ([`Failure::ALL`] order).
    pub failed: [u64; Failure::ALL.len()],
    /// Attempts after a failed one.
    pub retries: u64,
    /// Messages waiting in its queue.
    pub queued: u64,
    /// Changes not sent because a silence matched.
    pub silenced: u64,
    /// Changes held back by the rate limit (told in a digest instead).
    pub rate_limited: u64,
    /// Messages its full queue could not take (told in one digest once it had room).
    pub overflowed: u64,
}

impl ChannelStats {
    /// Zeroed counters of channel `name`.
    pub fn new(name: &str) -> ChannelStats {
        ChannelStats {
            name: name.to_string(),
            ..ChannelStats::default()
        }
    }

    pub(crate) fn sent(&self) {
        self.sent.fetch_add(1, Ordering::Relaxed);
    }
    pub(crate) fn failed(&self, f: Failure) {
        self.failed[f.index()].fetch_add(1, Ordering::Relaxed);
    }
    pub(crate) fn retried(&self) {
        self.retries.fetch_add(1, Ordering::Relaxed);
    }
    pub(crate) fn enqueued(&self) {
        self.queued.fetch_add(1, Ordering::Relaxed);
    }
    pub(crate) fn dequeued(&self) {
        self.queued.fetch_sub(1, Ordering::Relaxed);
    }
    pub(crate) fn silenced(&self) {
        self.silenced.fetch_add(1, Ordering::Relaxed);
    }
    pub(crate) fn rate_limited(&self) {
        self.rate_limited.fetch_add(1, Ordering::Relaxed);
    }
    pub(crate) fn overflowed(&self) {
        self.overflowed.fetch_add(1, Ordering::Relaxed);
    }

    /// The counters now.
    pub fn snapshot(&self) -> ChannelSnapshot {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        ChannelSnapshot {
            name: self.name.clone(),
            sent: load(&self.sent),
            failed: std::array::from_fn(|i| load(&self.failed[i])),
            retries: load(&self.retries),
            queued: self.queued.load(Ordering::Relaxed).max(0) as u64,
            silenced: load(&self.silenced),
            rate_limited: load(&self.rate_limited),
            overflowed: load(&self.overflowed),
        }
    }
}

/// The notifier's counters.
#[derive(Debug, Default)]
pub struct NotifyStats {
    /// Per channel, in configuration order.
    pub channels: Vec<std::sync::Arc<ChannelStats>>,
    /// Alert changes dropped because the intake queue was full.
    pub dropped: AtomicU64,
    /// Alert changes waiting in the intake queue.
    pub intake: AtomicI64,
    /// Open alerts held back by a silence, to be told when it ends.
    pub held_silenced: AtomicU64,
    /// Notifications not told again because they were told already (an alert change read
    /// again from the alerts topic: a restart, a takeover, a repeat by a processor).
    pub repeats: AtomicU64,
}

/// The notifier's counters at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NotifySnapshot {
    /// Per channel.
    pub channels: Vec<ChannelSnapshot>,
    /// Dropped at the intake.
    pub dropped: u64,
    /// Waiting at the intake.
    pub intake: u64,
    /// Held back by silences.
    pub held_silenced: u64,
    /// Told already, not told again.
    pub repeats: u64,
}

impl NotifyStats {
    /// The counters now.
    pub fn snapshot(&self) -> NotifySnapshot {
        NotifySnapshot {
            channels: self.channels.iter().map(|c| c.snapshot()).collect(),
            dropped: self.dropped.load(Ordering::Relaxed),
            intake: self.intake.load(Ordering::Relaxed).max(0) as u64,
            held_silenced: self.held_silenced.load(Ordering::Relaxed),
            repeats: self.repeats.load(Ordering::Relaxed),
        }
    }

    pub(crate) fn note_repeat(&self) {
        self.repeats.fetch_add(1, Ordering::Relaxed);
    }

    /// Channel `name`'s counters.
    pub fn channel(&self, name: &str) -> Option<ChannelSnapshot> {
        self.channels
            .iter()
            .find(|c| c.name == name)
            .map(|c| c.snapshot())
    }
}
