//! The dispatcher: decides, for each alert change, which channels hear of it and when —
//! routes and `notify_on`, silences (an open alert held back is told when its silence ends),
//! and each channel's rate limit (what is held back is told in a digest when the minute ends).
//! It runs on one task and only ever `try_send`s to the channel queues, so it never waits on a
//! channel.

use std::collections::HashMap;
use std::sync::Arc;

use iiot_model::{Alert, AlertStatus};
use tokio::sync::mpsc;

use super::channels::{Digest, Notice, Outgoing, Queued};
use super::config::Event;
use super::ledger::{Ticket, Tickets};
use super::routing::{DeviceLookup, DeviceMeta, Routes};
use super::silences::Silences;
use super::stats::{ChannelStats, NotifyStats};

/// The rate limit's window.
pub const WINDOW_MS: i64 = 60_000;
/// Most open alerts held back by silences at once; beyond it they are not told on expiry.
pub const MAX_HELD: usize = 10_000;
/// Most changes one digest-interval message lists; the rest are counted in it.
pub const MAX_BATCH: usize = 500;
/// Most delivery tickets an overflow digest keeps (a hung channel in a long storm): beyond it a
/// change's ticket is recorded at once, as told by the digest that counts it. A notifier that
/// stops (or dies) before that digest goes out does not tell those changes again: the
/// digest's count is what can be lost then, never memory.
pub const MAX_OVERFLOW_TICKETS: usize = 10_000;

/// One channel as the dispatcher sees it.
pub(super) struct Slot {
    pub notify_on: Vec<Event>,
    pub limiter: Option<Limiter>,
    pub batch: Option<Batch>,
    pub queue: mpsc::Sender<Queued>,
    pub stats: Arc<ChannelStats>,
    /// What did not fit in the queue (a storm), told in one digest once there is room.
    pub overflow: Overflow,
}

/// The changes a full channel queue could not take, told as one digest when it has room
/// again rather than lost.
#[derive(Debug, Default)]
pub(super) struct Overflow {
    digest: Digest,
    tickets: Tickets,
}

impl Overflow {
    fn add(&mut self, out: Outgoing, tickets: Tickets, meta: Option<&DeviceMeta>) {
        let d = &mut self.digest;
        match out {
            Outgoing::Change(n) => d.count(&n.alert, meta),
            Outgoing::Batch { notices, more } => {
                for n in &notices {
                    d.count(&n.alert, None);
                }
                d.held += more;
            }
            Outgoing::Digest(other) => d.merge(other),
        }
        let room = MAX_OVERFLOW_TICKETS.saturating_sub(self.tickets.0.len());
        let mut tickets = tickets.0;
        // Dropped: settled (recorded as told) now, see MAX_OVERFLOW_TICKETS.
        drop(tickets.split_off(room.min(tickets.len())));
        self.tickets.extend(Tickets(tickets));
    }
}

/// A channel's digest interval: the changes collected since the first of them.
#[derive(Debug)]
pub(super) struct Batch {
    every_ms: i64,
    since: i64,
    notices: Vec<Arc<Notice>>,
    more: u64,
    tickets: Tickets,
}

impl Batch {
    pub(super) fn new(every: std::time::Duration) -> Batch {
        Batch {
            every_ms: every.as_millis() as i64,
            since: 0,
            notices: Vec::new(),
            more: 0,
            tickets: Tickets::default(),
        }
    }

    fn push(&mut self, notice: Arc<Notice>, tickets: Tickets, now_ms: i64) {
        if self.notices.is_empty() && self.more == 0 {
            self.since = now_ms;
        }
        self.tickets.extend(tickets);
        if self.notices.len() < MAX_BATCH {
            self.notices.push(notice);
        } else {
            self.more += 1;
        }
    }

    /// The message of the interval, once it is over (or at once with `force`).
    fn due(&mut self, now_ms: i64, force: bool) -> Option<(Outgoing, Tickets)> {
        let empty = self.notices.is_empty() && self.more == 0;
        if empty || (!force && now_ms < self.since.saturating_add(self.every_ms)) {
            return None;
        }
        let out = Outgoing::Batch {
            notices: std::mem::take(&mut self.notices),
            more: std::mem::take(&mut self.more),
        };
        Some((out, std::mem::take(&mut self.tickets)))
    }
}

/// A fixed-window rate limit with the digest of what it held back.
#[derive(Debug)]
pub(super) struct Limiter {
    max: u32,
    window_start: i64,
    count: u32,
    held: Digest,
    tickets: Tickets,
}

impl Limiter {
    pub(super) fn new(max_per_minute: u32) -> Limiter {
        Limiter {
            max: max_per_minute,
            window_start: i64::MIN,
            count: 0,
            held: Digest::default(),
            tickets: Tickets::default(),
        }
    }

    /// Starts a new window if the current one is over, returning the digest of what the old one
    /// held back, if anything.
    fn roll(&mut self, now_ms: i64) -> Option<(Digest, Tickets)> {
        if now_ms < self.window_start.saturating_add(WINDOW_MS) {
            return None;
        }
        self.window_start = now_ms;
        self.count = 0;
        self.take()
    }

    /// Whether one more may go out now; if not, it is added to the digest.
    fn admit(&mut self, alert: &Alert, meta: Option<&DeviceMeta>) -> bool {
        if self.count < self.max {
            self.count += 1;
            return true;
        }
        self.held.count(alert, meta);
        false
    }

    /// The digest so far, whatever the window (at shutdown).
    fn take(&mut self) -> Option<(Digest, Tickets)> {
        let held = std::mem::take(&mut self.held);
        let tickets = std::mem::take(&mut self.tickets);
        (held.held > 0).then_some((held, tickets))
    }
}

/// The dispatcher's state.
pub(super) struct Dispatcher {
    pub slots: Vec<Slot>,
    pub routes: Routes,
    pub silences: Arc<Silences>,
    pub lookup: Option<DeviceLookup>,
    pub dashboard: String,
    pub stats: Arc<NotifyStats>,
    /// Open alerts a silence held back, by id (their latest state, and the hold on the
    /// message they were read from, on Kafka).
    held: HashMap<String, (Alert, Option<Ticket>)>,
    /// When a full channel queue was last logged (at most once per [`super::WARN_EVERY`]).
    warned_full: Option<std::time::Instant>,
}

impl Dispatcher {
    pub(super) fn new(
        slots: Vec<Slot>,
        routes: Routes,
        silences: Arc<Silences>,
        lookup: Option<DeviceLookup>,
        dashboard: String,
        stats: Arc<NotifyStats>,
    ) -> Dispatcher {
        Dispatcher {
            slots,
            routes,
            silences,
            lookup,
            dashboard,
            stats,
            held: HashMap::new(),
            warned_full: None,
        }
    }

    fn meta(&self, device_id: &str) -> Option<DeviceMeta> {
        // Looking up costs a store read: only when something could use the answer.
        let wanted = self.routes.needs_meta() || !self.silences.is_empty();
        self.lookup.as_ref().filter(|_| wanted)?(device_id)
    }

    /// One alert change at `now_ms`; `guard` is the hold on the message it was read from
    /// (the Kafka notify group: each channel's notification of it is told once, and recorded).
    pub(super) fn handle(&mut self, alert: Alert, now_ms: i64, guard: Option<Ticket>) {
        self.roll(now_ms);
        let event = Event::of(alert.status);
        let meta = self.meta(&alert.device_id);
        let targets = self.targets(&alert, meta.as_ref(), event);
        if self.silences.silences(&alert, meta.as_ref(), now_ms) {
            for &t in &targets {
                self.slots[t].stats.silenced();
            }
            if alert.status == AlertStatus::Resolved {
                self.held.remove(&alert.alert_id);
            } else if self.held.len() < MAX_HELD || self.held.contains_key(&alert.alert_id) {
                let hold = guard.as_ref().map(Ticket::hold);
                self.held.insert(alert.alert_id.clone(), (alert, hold));
            }
        } else {
            self.held.remove(&alert.alert_id);
            self.tell(
                alert,
                event,
                meta.as_ref(),
                &targets,
                now_ms,
                guard.as_ref(),
            );
        }
        self.count_held();
    }

    /// Time passes: digests of ended windows go out, and open alerts whose silence ended are
    /// told now.
    pub(super) fn tick(&mut self, now_ms: i64) {
        self.roll(now_ms);
        if self.held.is_empty() {
            return;
        }
        // Alerts of partitions this notifier lost: their new owner holds them now.
        self.held.retain(|_, (_, hold)| {
            if !hold.as_ref().is_some_and(Ticket::is_stale) {
                return true;
            }
            if let Some(h) = hold.take() {
                h.abandon();
            }
            false
        });
        let mut released = Vec::new();
        for (alert, _) in self.held.values() {
            let meta = self.meta(&alert.device_id);
            if !self.silences.silences(alert, meta.as_ref(), now_ms) {
                released.push(alert.alert_id.clone());
            }
        }
        for id in released {
            if let Some((alert, hold)) = self.held.remove(&id) {
                if let Some(stale) = hold.as_ref().filter(|h| h.is_stale()) {
                    // Its partition moved to another notifier (or came back to this one and
                    // was read again): the one that holds it now tells it.
                    tracing::debug!(alert_id = %alert.alert_id, partition = stale.partition(), "held alert left to its partition's owner");
                    if let Some(h) = hold {
                        h.abandon();
                    }
                    continue;
                }
                // Nobody heard of it being raised: it is told as raised, in its current state.
                let meta = self.meta(&alert.device_id);
                let targets = self.targets(&alert, meta.as_ref(), Event::Raised);
                self.tell(
                    alert,
                    Event::Raised,
                    meta.as_ref(),
                    &targets,
                    now_ms,
                    hold.as_ref(),
                );
            }
        }
        self.count_held();
    }

    fn flush_batches(&mut self, now_ms: i64, force: bool) {
        for i in 0..self.slots.len() {
            let due = self.slots[i]
                .batch
                .as_mut()
                .and_then(|b| b.due(now_ms, force));
            if let Some((out, tickets)) = due {
                self.send(i, out, tickets, None);
            }
        }
    }

    /// At shutdown: what the rate limits and digest intervals still hold is told now; the
    /// alerts silences still hold back were not told (on Kafka, their messages stay
    /// uncommitted for the next reader).
    pub(super) fn finish(&mut self) {
        self.flush_batches(i64::MAX, true);
        let link = format!("{}/#/", self.dashboard);
        for i in 0..self.slots.len() {
            if let Some((mut digest, tickets)) =
                self.slots[i].limiter.as_mut().and_then(Limiter::take)
            {
                digest.link = link.clone();
                self.send(i, Outgoing::Digest(digest), tickets, None);
            }
            self.release_overflow(i);
            let left = std::mem::take(&mut self.slots[i].overflow);
            left.tickets.abandon();
        }
        for (_, (_, hold)) in self.held.drain() {
            if let Some(hold) = hold {
                hold.abandon();
            }
        }
    }

    fn targets(&self, alert: &Alert, meta: Option<&DeviceMeta>, event: Event) -> Vec<usize> {
        let mut t = self.routes.targets(alert, meta);
        t.retain(|&i| self.slots[i].notify_on.contains(&event));
        t
    }

    fn tell(
        &mut self,
        alert: Alert,
        event: Event,
        meta: Option<&DeviceMeta>,
        targets: &[usize],
        now_ms: i64,
        guard: Option<&Ticket>,
    ) {
        if targets.is_empty() {
            return;
        }
        let link = device_link(&self.dashboard, &alert.device_id);
        let notice = Arc::new(Notice { alert, event, link });
        for &t in targets {
            let tickets = match guard {
                None => Tickets::default(),
                Some(g) => {
                    let name = &self.slots[t].stats.name;
                    match g.for_channel(&notice.alert.alert_id, event.as_str(), name) {
                        Some(ticket) => Tickets(vec![ticket]),
                        None => {
                            // Told already: a change read again (a restart, a takeover, or a
                            // processor that published it twice).
                            self.stats.note_repeat();
                            continue;
                        }
                    }
                }
            };
            // A digest channel sends one message per interval: no rate limit needed.
            if let Some(batch) = &mut self.slots[t].batch {
                batch.push(notice.clone(), tickets, now_ms);
                continue;
            }
            let admitted = match &mut self.slots[t].limiter {
                Some(limiter) => limiter.admit(&notice.alert, meta),
                None => true,
            };
            if admitted {
                self.send(t, Outgoing::Change(notice.clone()), tickets, meta);
            } else {
                if let Some(limiter) = &mut self.slots[t].limiter {
                    limiter.tickets.extend(tickets);
                }
                self.slots[t].stats.rate_limited();
            }
        }
    }

    fn roll(&mut self, now_ms: i64) {
        self.flush_batches(now_ms, false);
        let link = format!("{}/#/", self.dashboard);
        for i in 0..self.slots.len() {
            self.release_overflow(i);
            let digest = self.slots[i].limiter.as_mut().and_then(|l| l.roll(now_ms));
            if let Some((mut digest, tickets)) = digest {
                digest.link = link.clone();
                self.send(i, Outgoing::Digest(digest), tickets, None);
            }
        }
    }

    /// What a full queue could not take goes out as one digest once the queue has room.
    fn release_overflow(&mut self, slot: usize) {
        let s = &mut self.slots[slot];
        if s.overflow.digest.held == 0 {
            return;
        }
        let Ok(permit) = s.queue.try_reserve() else {
            return;
        };
        let Overflow {
            mut digest,
            tickets,
        } = std::mem::take(&mut s.overflow);
        digest.link = format!("{}/#/", self.dashboard);
        permit.send(Queued {
            out: Outgoing::Digest(digest),
            tickets,
        });
        s.stats.enqueued();
    }

    /// Queues `out` for channel `slot`; a full queue (a storm the channel cannot keep up
    /// with) keeps it for the overflow digest instead.
    fn send(&mut self, slot: usize, out: Outgoing, tickets: Tickets, meta: Option<&DeviceMeta>) {
        let s = &mut self.slots[slot];
        // Whatever overflowed goes first, so the channel tells things in order.
        let queued = Queued { out, tickets };
        let refused = if s.overflow.digest.held > 0 {
            Some(queued)
        } else {
            match s.queue.try_send(queued) {
                Ok(()) => {
                    s.stats.enqueued();
                    None
                }
                Err(e) => Some(e.into_inner()),
            }
        };
        let Some(Queued { out, tickets }) = refused else {
            return;
        };
        s.stats.overflowed();
        s.overflow.add(out, tickets, meta);
        let due = self
            .warned_full
            .is_none_or(|t| t.elapsed() >= super::WARN_EVERY);
        if due {
            self.warned_full = Some(std::time::Instant::now());
            tracing::warn!(channel = %s.stats.name, "channel queue full: what does not fit is told in one digest when there is room (iot_notifications_overflowed_total)");
        }
    }

    fn count_held(&self) {
        self.stats
            .held_silenced
            .store(self.held.len() as u64, std::sync::atomic::Ordering::Relaxed);
    }
}

/// `<dashboard>/#/device/<id>` (the dashboard's route for a device page).
pub fn device_link(dashboard: &str, device_id: &str) -> String {
    let mut id = String::with_capacity(device_id.len());
    for b in device_id.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            id.push(b as char);
        } else {
            id.push_str(&format!("%{b:02X}"));
        }
    }
    format!("{dashboard}/#/device/{id}")
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicI64, Ordering};

    use super::*;
    use crate::sinks::notify::config::RouteSpec;
    use crate::sinks::notify::silences::{Clock, SilenceSpec};
    use crate::test_support::{T0, alert};

    struct Fixture {
        d: Dispatcher,
        rx: mpsc::Receiver<Queued>,
        now: Arc<AtomicI64>,
    }

    fn fixture(max_per_minute: Option<u32>, notify_on: Vec<Event>) -> Fixture {
        let now = Arc::new(AtomicI64::new(T0));
        let c = now.clone();
        let clock: Clock = Arc::new(move || c.load(Ordering::SeqCst));
        let (queue, rx) = mpsc::channel(100);
        let stats = Arc::new(ChannelStats::new("ops"));
        let slot = Slot {
            notify_on,
            limiter: max_per_minute.map(Limiter::new),
            batch: None,
            queue,
            stats: stats.clone(),
            overflow: Overflow::default(),
        };
        let d = Dispatcher::new(
            vec![slot],
            Routes::new(&[] as &[RouteSpec], &["ops".into()]),
            Arc::new(Silences::in_memory(clock)),
            None,
            "http://dash".into(),
            Arc::new(NotifyStats {
                channels: vec![stats],
                ..NotifyStats::default()
            }),
        );
        Fixture { d, rx, now }
    }

    fn drain(rx: &mut mpsc::Receiver<Queued>) -> Vec<Outgoing> {
        std::iter::from_fn(|| rx.try_recv().ok().map(|q| q.out)).collect()
    }

    fn events(out: &[Outgoing]) -> Vec<String> {
        out.iter()
            .map(|o| match o {
                Outgoing::Change(n) => format!("{} {}", n.event.as_str(), n.alert.device_id),
                Outgoing::Digest(d) => format!("digest {}", d.held),
                Outgoing::Batch { notices, more } => format!("batch {} +{more}", notices.len()),
            })
            .collect()
    }

    #[test]
    fn raise_and_resolve_by_default_acknowledge_only_when_asked() {
        let mut f = fixture(None, vec![Event::Raised, Event::Resolved]);
        let mut a = alert("device_001", "temperature_high");
        f.d.handle(a.clone(), T0, None);
        a.status = AlertStatus::Acknowledged;
        f.d.handle(a.clone(), T0, None);
        a.status = AlertStatus::Resolved;
        f.d.handle(a, T0, None);
        let out = drain(&mut f.rx);
        assert_eq!(events(&out), ["raised device_001", "resolved device_001"]);
        match &out[0] {
            Outgoing::Change(n) => assert_eq!(n.link, "http://dash/#/device/device_001"),
            _ => unreachable!("a change"),
        }
    }

    #[test]
    fn rate_limit_holds_back_and_sends_a_digest_when_the_window_ends() {
        let mut f = fixture(Some(2), vec![Event::Raised]);
        for i in 0..5 {
            f.d.handle(
                alert(&format!("device_{i:03}"), "temperature_high"),
                T0 + i,
                None,
            );
        }
        assert_eq!(
            events(&drain(&mut f.rx)),
            ["raised device_000", "raised device_001"]
        );
        f.d.tick(T0 + WINDOW_MS - 1);
        assert!(
            drain(&mut f.rx).is_empty(),
            "nothing before the window ends"
        );
        f.d.tick(T0 + WINDOW_MS);
        let out = drain(&mut f.rx);
        assert_eq!(events(&out), ["digest 3"]);
        if let Outgoing::Digest(d) = &out[0] {
            assert!(d.text().starts_with("3 more alert changes"), "{}", d.text());
            assert_eq!(d.by_alert_type["temperature_high"], 3);
        }
        assert_eq!(f.d.slots[0].stats.snapshot().rate_limited, 3);
    }

    #[test]
    fn silenced_alert_is_told_when_the_silence_ends_if_still_open() {
        let mut f = fixture(None, vec![Event::Raised, Event::Resolved]);
        let spec: SilenceSpec =
            serde_json::from_value(serde_json::json!({"ends_at": T0 + 1000})).expect("spec");
        f.d.silences.create(spec).expect("valid");
        let open = alert("device_001", "temperature_high");
        let mut gone = alert("device_002", "temperature_high");
        f.d.handle(open, T0 + 10, None);
        f.d.handle(gone.clone(), T0 + 10, None);
        gone.status = AlertStatus::Resolved;
        f.d.handle(gone, T0 + 20, None);
        assert!(drain(&mut f.rx).is_empty(), "silenced");
        assert_eq!(f.d.slots[0].stats.snapshot().silenced, 3);
        f.now.store(T0 + 1000, Ordering::SeqCst);
        f.d.tick(T0 + 1000);
        assert_eq!(events(&drain(&mut f.rx)), ["raised device_001"]);
    }

    #[test]
    fn a_held_alert_whose_partition_moved_is_left_to_its_new_owner() {
        use crate::sinks::notify::ledger::{Ledger, Pending, Ticket};
        let mut f = fixture(None, vec![Event::Raised]);
        let spec: SilenceSpec =
            serde_json::from_value(serde_json::json!({"ends_at": T0 + 1000})).expect("spec");
        f.d.silences.create(spec).expect("valid");
        let (tx, _settled) = mpsc::unbounded_channel();
        let ledger = Ledger::new(tx);
        let moved = Pending::new(0, 7);
        let kept = Pending::new(1, 8);
        let a = alert("device_001", "temperature_high");
        let b = alert("device_002", "temperature_high");
        f.d.handle(a, T0, Some(Ticket::guard(ledger.clone(), moved.clone())));
        f.d.handle(b, T0, Some(Ticket::guard(ledger.clone(), kept)));
        // Partition 0 is taken away while the silence holds its alert.
        ledger.forget(0);
        f.now.store(T0 + 1000, Ordering::SeqCst);
        f.d.tick(T0 + 1000);
        assert_eq!(
            events(&drain(&mut f.rx)),
            ["raised device_002"],
            "only the alert of the partition still owned"
        );
        assert!(moved.abandoned(), "not committed by this member");
    }

    #[test]
    fn a_digest_channel_sends_one_message_per_interval_with_every_change() {
        let mut f = fixture(None, vec![Event::Raised, Event::Resolved]);
        f.d.slots[0].batch = Some(Batch::new(std::time::Duration::from_secs(300)));
        let a = alert("device_001", "temperature_high");
        f.d.handle(a.clone(), T0, None);
        f.d.handle(alert("device_002", "temperature_high"), T0 + 1, None);
        f.d.handle(with(a, AlertStatus::Resolved), T0 + 2, None);
        f.d.tick(T0 + 299_999);
        assert!(drain(&mut f.rx).is_empty(), "not before the interval ends");
        f.d.tick(T0 + 300_000);
        assert_eq!(events(&drain(&mut f.rx)), ["batch 3 +0"]);
        f.d.handle(alert("device_003", "temperature_high"), T0 + 400_000, None);
        f.d.finish();
        assert_eq!(
            events(&drain(&mut f.rx)),
            ["batch 1 +0"],
            "told at shutdown"
        );
    }

    fn with(mut a: Alert, status: AlertStatus) -> Alert {
        a.status = status;
        a
    }

    #[test]
    fn a_full_queue_is_told_as_one_digest_once_it_has_room_not_dropped() {
        let mut f = fixture(None, vec![Event::Raised]);
        let (queue, mut rx) = mpsc::channel(2);
        f.d.slots[0].queue = queue;
        for i in 0..5 {
            f.d.handle(
                alert(&format!("device_{i:03}"), "temperature_high"),
                T0,
                None,
            );
        }
        assert_eq!(
            events(&drain(&mut rx)),
            ["raised device_000", "raised device_001"]
        );
        assert_eq!(f.d.slots[0].stats.snapshot().overflowed, 3);
        // Room again: what overflowed goes first, as one digest, then the new change.
        f.d.handle(alert("device_009", "temperature_high"), T0 + 1, None);
        let out = drain(&mut rx);
        assert_eq!(events(&out), ["digest 3", "raised device_009"]);
        assert_eq!(f.d.slots[0].stats.snapshot().failed, [0; 8], "nothing lost");
    }

    #[test]
    fn an_overflow_keeps_a_bounded_number_of_tickets_and_settles_the_rest() {
        use crate::sinks::notify::ledger::{Ledger, Pending, Ticket};
        let mut f = fixture(None, vec![Event::Raised]);
        // A hung channel: its queue never empties.
        let (queue, _rx) = mpsc::channel(1);
        f.d.slots[0].queue = queue;
        let (tx, mut settled) = mpsc::unbounded_channel();
        let ledger = Ledger::new(tx);
        let n = MAX_OVERFLOW_TICKETS + 50;
        for i in 0..=n {
            let guard = Ticket::guard(ledger.clone(), Pending::new(0, i as i64));
            f.d.handle(
                alert(&format!("device_{i:05}"), "temperature_high"),
                T0,
                Some(guard),
            );
        }
        let overflow = &f.d.slots[0].overflow;
        assert_eq!(overflow.digest.held as usize, n, "every change is counted");
        assert_eq!(overflow.tickets.0.len(), MAX_OVERFLOW_TICKETS);
        // Guards (one per change) and the 50 tickets beyond the bound settled; the queued
        // change's and the kept ones' not yet.
        let records = std::iter::from_fn(|| settled.try_recv().ok())
            .filter(|s| matches!(s, crate::sinks::notify::ledger::Settled::Record { .. }))
            .count();
        assert_eq!(
            records, 50,
            "the tickets beyond the bound are recorded as told"
        );
    }

    #[test]
    fn a_change_read_again_is_told_once_and_its_input_settles_when_delivered() {
        use crate::sinks::notify::ledger::{Ledger, Pending, Settled, Ticket};
        let mut f = fixture(None, vec![Event::Raised, Event::Resolved]);
        let (tx, mut settled) = mpsc::unbounded_channel();
        let ledger = Ledger::new(tx);
        let a = alert("device_001", "temperature_high");
        let first = Pending::new(0, 10);
        f.d.handle(
            a.clone(),
            T0,
            Some(Ticket::guard(ledger.clone(), first.clone())),
        );
        // The same change again (a processor published it twice), at a later offset.
        let again = Pending::new(0, 11);
        f.d.handle(a, T0, Some(Ticket::guard(ledger.clone(), again.clone())));
        let queued: Vec<Queued> = std::iter::from_fn(|| f.rx.try_recv().ok()).collect();
        assert_eq!(queued.len(), 1, "told once");
        assert_eq!(f.d.stats.snapshot().repeats, 1);
        let release = |settled: &mut mpsc::UnboundedReceiver<Settled>| {
            while let Ok(s) = settled.try_recv() {
                match s {
                    Settled::Record { pending, .. } | Settled::Release(pending) => {
                        pending.release();
                    }
                }
            }
        };
        release(&mut settled);
        assert!(again.settled(), "the repeat holds nothing");
        assert!(!first.settled(), "the first waits for its delivery");
        drop(queued);
        release(&mut settled);
        assert!(first.settled());
    }

    #[test]
    fn links_escape_the_device_id() {
        assert_eq!(
            device_link("http://d", "a b/c"),
            "http://d/#/device/a%20b%2Fc"
        );
    }
}
