//! Delivery records for the notifier of a Kafka deployment ([`super::group`]): which
//! notifications of which alert changes are done, so that a change read again — after a
//! restart, a takeover, or because a processor published it twice — is told once.
//!
//! A change read from the alerts topic travels through the notifier with a [`Ticket`]: a
//! *guard* while the dispatcher looks at it, then one ticket per channel it is told to (in
//! the channel's queue, in a digest, or held by a silence until it ends). Dropping a ticket
//! settles it: a channel ticket is then recorded (its key `alert_id|event|channel` goes to the
//! delivery log before the input offset may be committed), a guard just lets go. A ticket
//! dropped because the notifier stopped before it was told is *abandoned* instead: its offset
//! is never committed, and whoever reads the partition next tells it.
//!
//! The input offset of a change is committed once every ticket of it is settled (and
//! recorded), in offset order per partition ([`Pending`]).
//!
//! A ticket remembers the partition's *epoch* when its change was read: a partition taken
//! away ([`Ledger::forget`]) starts a new one, so what this member still holds from before
//! (an alert a silence holds back, above all) is [`Ticket::is_stale`]: the partition's owner
//! now reads that change again from the uncommitted offset and is the one to tell it.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;

/// Most delivery keys remembered per partition; beyond it the oldest are forgotten (a change
/// read again from that far back would be told again: repeats come from takeovers, minutes
/// apart, not from 100,000 notifications back).
pub const MAX_KEYS: usize = 100_000;

/// What a settled ticket tells the member.
#[derive(Debug)]
pub enum Settled {
    /// Write `key` to partition `partition` of the delivery log, then let go of `pending`.
    Record {
        /// `alert_id|event|channel`.
        key: String,
        /// The alerts partition the change was read from.
        partition: i32,
        /// The change's offset.
        pending: Arc<Pending>,
    },
    /// Nothing to write: one hold on `pending` less.
    Release(Arc<Pending>),
}

/// One input message of the alerts topic while some of its notifications are not settled.
#[derive(Debug)]
pub struct Pending {
    /// Its partition.
    pub partition: i32,
    /// Its offset.
    pub offset: i64,
    holds: AtomicUsize,
    abandoned: AtomicBool,
    /// Committed whatever holds it (too many messages were waiting behind it).
    forced: AtomicBool,
}

impl Pending {
    /// A message with one hold (its guard's).
    pub fn new(partition: i32, offset: i64) -> Arc<Pending> {
        Arc::new(Pending {
            partition,
            offset,
            holds: AtomicUsize::new(1),
            abandoned: AtomicBool::new(false),
            forced: AtomicBool::new(false),
        })
    }

    /// Lets go of one hold; true when none is left.
    pub fn release(&self) -> bool {
        self.holds.fetch_sub(1, Ordering::AcqRel) == 1
    }

    /// Whether it can be committed: nothing holds it and nothing of it was abandoned (or it is
    /// [`Pending::force`]d).
    pub fn settled(&self) -> bool {
        self.forced.load(Ordering::Acquire)
            || (self.holds.load(Ordering::Acquire) == 0 && !self.abandoned.load(Ordering::Acquire))
    }

    /// Lets it be committed while something still holds it (a silence holding an alert back
    /// for hours while the messages behind it pile up): what still holds it then does not
    /// survive a restart.
    pub fn force(&self) {
        self.forced.store(true, Ordering::Release);
    }

    /// Whether some notification of it was given up at shutdown.
    pub fn abandoned(&self) -> bool {
        self.abandoned.load(Ordering::Acquire)
    }
}

/// The delivery keys known per partition, and where settled tickets are sent.
pub struct Ledger {
    keys: Mutex<HashMap<i32, Keys>>,
    /// Per partition, how often it was taken away from this member.
    epochs: Mutex<HashMap<i32, u64>>,
    settled: mpsc::UnboundedSender<Settled>,
}

/// One partition's keys, the oldest forgotten first beyond [`MAX_KEYS`]. A key removed (an
/// abandoned ticket) leaves its place in the order behind, marked by its insertion number, so
/// removing is O(1) even when a stopping notifier abandons thousands at once.
#[derive(Default)]
struct Keys {
    /// Each key with the number it was inserted under.
    set: HashMap<String, u64>,
    order: VecDeque<(String, u64)>,
    next: u64,
}

impl Keys {
    /// Adds `key`; false if it was there.
    fn insert(&mut self, key: String) -> bool {
        if self.set.contains_key(&key) {
            return false;
        }
        let n = self.next;
        self.next += 1;
        self.set.insert(key.clone(), n);
        self.order.push_back((key, n));
        while self.order.len() > MAX_KEYS {
            if let Some((old, m)) = self.order.pop_front() {
                // Only if it is still that insertion (not removed and added again since).
                if self.set.get(&old) == Some(&m) {
                    self.set.remove(&old);
                }
            }
        }
        true
    }

    fn remove(&mut self, key: &str) {
        self.set.remove(key);
    }
}

impl Ledger {
    /// A ledger sending settled tickets to `settled`.
    pub fn new(settled: mpsc::UnboundedSender<Settled>) -> Arc<Ledger> {
        Arc::new(Ledger {
            keys: Mutex::new(HashMap::new()),
            epochs: Mutex::new(HashMap::new()),
            settled,
        })
    }

    fn keys(&self) -> std::sync::MutexGuard<'_, HashMap<i32, Keys>> {
        self.keys.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds what the delivery log holds for `partition` (read back on assignment, oldest
    /// first).
    pub fn load(&self, partition: i32, keys: impl IntoIterator<Item = String>) {
        let mut all = self.keys();
        let known = all.entry(partition).or_default();
        for key in keys {
            known.insert(key);
        }
    }

    /// Forgets `partition` (revoked: another member records it now, or this one again after
    /// reading it anew) and starts its next epoch.
    pub fn forget(&self, partition: i32) {
        self.keys().remove(&partition);
        *self
            .epochs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(partition)
            .or_default() += 1;
    }

    fn epoch(&self, partition: i32) -> u64 {
        let epochs = self.epochs.lock().unwrap_or_else(|e| e.into_inner());
        epochs.get(&partition).copied().unwrap_or_default()
    }

    /// How many keys are remembered.
    pub fn len(&self) -> usize {
        self.keys().values().map(|k| k.set.len()).sum()
    }

    /// Whether nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Claims `key` of `partition`: false if it was told (or is being told) already.
    fn claim(&self, partition: i32, key: &str) -> bool {
        self.keys()
            .entry(partition)
            .or_default()
            .insert(key.to_string())
    }
}

/// A hold on one input message's commit; see the module documentation.
pub struct Ticket {
    ledger: Arc<Ledger>,
    pending: Arc<Pending>,
    /// Empty for a guard.
    key: String,
    abandoned: bool,
    /// The partition's epoch when the change was read.
    epoch: u64,
}

impl std::fmt::Debug for Ticket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Ticket({}@{}:{})",
            self.key, self.pending.partition, self.pending.offset
        )
    }
}

impl Ticket {
    /// The guard of a message just read (holds `pending`'s first hold).
    pub fn guard(ledger: Arc<Ledger>, pending: Arc<Pending>) -> Ticket {
        let epoch = ledger.epoch(pending.partition);
        Ticket {
            ledger,
            pending,
            key: String::new(),
            abandoned: false,
            epoch,
        }
    }

    /// The partition of the change it holds.
    pub fn partition(&self) -> i32 {
        self.pending.partition
    }

    /// Whether its partition was taken away from this member since the change was read: the
    /// owner now reads it again and tells it, so this member must not.
    pub fn is_stale(&self) -> bool {
        self.ledger.epoch(self.pending.partition) != self.epoch
    }

    /// The ticket of telling `channel` of `event` of `alert_id`, or `None` if that was told
    /// already (a change read again).
    pub fn for_channel(&self, alert_id: &str, event: &str, channel: &str) -> Option<Ticket> {
        let key = format!("{alert_id}|{event}|{channel}");
        if !self.ledger.claim(self.pending.partition, &key) {
            return None;
        }
        self.pending.holds.fetch_add(1, Ordering::AcqRel);
        Some(Ticket {
            ledger: self.ledger.clone(),
            pending: self.pending.clone(),
            key,
            abandoned: false,
            epoch: self.epoch,
        })
    }

    /// Another hold on the same message, recording nothing (a change a silence holds back).
    pub fn hold(&self) -> Ticket {
        self.pending.holds.fetch_add(1, Ordering::AcqRel);
        Ticket {
            ledger: self.ledger.clone(),
            pending: self.pending.clone(),
            key: String::new(),
            abandoned: false,
            epoch: self.epoch,
        }
    }

    /// Gives it up: it was not told (the notifier stopped first).
    pub fn abandon(mut self) {
        self.abandoned = true;
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if self.abandoned {
            self.pending.abandoned.store(true, Ordering::Release);
            // The key is free again for whoever tells it next in this process.
            if let Some(keys) = self.ledger.keys().get_mut(&self.pending.partition) {
                keys.remove(&self.key);
            }
        }
        let settled = if self.key.is_empty() || self.abandoned {
            Settled::Release(self.pending.clone())
        } else {
            Settled::Record {
                key: std::mem::take(&mut self.key),
                partition: self.pending.partition,
                pending: self.pending.clone(),
            }
        };
        // The member is gone (shutting down): nothing is committed any more anyway.
        let _ = self.ledger.settled.send(settled);
    }
}

/// The tickets one queued message carries (none outside the Kafka notify group).
#[derive(Debug, Default)]
pub struct Tickets(pub Vec<Ticket>);

impl Tickets {
    /// Gives every ticket up (see [`Ticket::abandon`]).
    pub fn abandon(self) {
        for t in self.0 {
            t.abandon();
        }
    }

    /// Adds `more`.
    pub fn extend(&mut self, more: Tickets) {
        self.0.extend(more.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(rx: &mut mpsc::UnboundedReceiver<Settled>) -> Vec<Settled> {
        std::iter::from_fn(|| rx.try_recv().ok()).collect()
    }

    #[test]
    fn a_message_settles_once_every_ticket_is_dropped_and_a_key_is_told_once() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let ledger = Ledger::new(tx);
        let pending = Pending::new(2, 40);
        let guard = Ticket::guard(ledger.clone(), pending.clone());
        let webhook = guard.for_channel("a1", "raised", "ops").expect("first");
        assert!(
            guard.for_channel("a1", "raised", "ops").is_none(),
            "the same key twice"
        );
        let mail = guard
            .for_channel("a1", "raised", "mail")
            .expect("other channel");
        drop(guard);
        drop(webhook);
        assert!(!pending.settled(), "mail still holds it");
        let got = drain(&mut rx);
        assert_eq!(got.len(), 2, "{got:?}");
        assert!(
            matches!(&got[1], Settled::Record { key, partition: 2, .. } if key == "a1|raised|ops")
        );
        // The member lets go of each record once it is written.
        for s in got {
            match s {
                Settled::Record { pending, .. } | Settled::Release(pending) => {
                    pending.release();
                }
            }
        }
        drop(mail);
        for s in drain(&mut rx) {
            if let Settled::Record { pending, .. } = s {
                assert!(pending.release(), "the last hold");
            }
        }
        assert!(pending.settled());
    }

    #[test]
    fn an_abandoned_ticket_keeps_the_message_uncommitted_and_its_key_free() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let ledger = Ledger::new(tx);
        let pending = Pending::new(0, 7);
        let guard = Ticket::guard(ledger.clone(), pending.clone());
        let t = guard.for_channel("a1", "resolved", "ops").expect("first");
        t.abandon();
        drop(guard);
        for s in drain(&mut rx) {
            assert!(matches!(s, Settled::Release(_)), "nothing recorded: {s:?}");
            if let Settled::Release(p) = s {
                p.release();
            }
        }
        assert!(pending.abandoned() && !pending.settled());
        let again = Ticket::guard(ledger.clone(), Pending::new(0, 8));
        assert!(again.for_channel("a1", "resolved", "ops").is_some());
    }

    #[test]
    fn the_oldest_keys_are_forgotten_beyond_the_bound_and_a_forced_message_commits() {
        let (tx, _rx) = mpsc::unbounded_channel();
        let ledger = Ledger::new(tx);
        ledger.load(0, (0..MAX_KEYS + 10).map(|i| format!("a{i}|raised|ops")));
        assert_eq!(ledger.len(), MAX_KEYS);
        let guard = Ticket::guard(ledger.clone(), Pending::new(0, 1));
        assert!(
            guard.for_channel("a0", "raised", "ops").is_some(),
            "forgotten"
        );
        assert!(
            guard
                .for_channel(&format!("a{}", MAX_KEYS + 9), "raised", "ops")
                .is_none(),
            "the newest are kept"
        );
        let pending = Pending::new(0, 2);
        let held = Ticket::guard(ledger.clone(), pending.clone());
        assert!(!pending.settled());
        pending.force();
        assert!(pending.settled(), "forced, though still held");
        drop(held);
    }

    #[test]
    fn a_key_removed_and_claimed_again_outlives_its_old_place_in_the_order() {
        let mut keys = Keys::default();
        assert!(keys.insert("k".into()));
        keys.remove("k");
        assert!(keys.insert("k".into()), "free again once removed");
        for i in 0..MAX_KEYS - 1 {
            keys.insert(format!("x{i}"));
        }
        // The first place of "k" was the oldest and is gone; its second one is not.
        assert!(keys.set.contains_key("k"));
        assert_eq!(keys.set.len(), MAX_KEYS);
        assert!(!keys.insert("k".into()), "still told");
    }

    #[test]
    fn keys_read_back_are_told_already_and_a_revoked_partition_is_forgotten() {
        let (tx, _rx) = mpsc::unbounded_channel();
        let ledger = Ledger::new(tx);
        ledger.load(1, ["a1|raised|ops".to_string()]);
        let guard = Ticket::guard(ledger.clone(), Pending::new(1, 3));
        assert!(guard.for_channel("a1", "raised", "ops").is_none());
        let other = Ticket::guard(ledger.clone(), Pending::new(0, 3));
        assert!(
            other.for_channel("a1", "raised", "ops").is_some(),
            "per partition"
        );
        ledger.forget(1);
        assert_eq!(ledger.len(), 1);
    }
}
