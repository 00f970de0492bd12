//! The WebSocket hub: fans readings, alerts and device status changes out to dashboard clients,
//! with resume.
//!
//! The hub owns the live stream that clients see: it numbers every published message (the
//! stream `offset`), keeps the newest ones in a bounded replay ring so a reconnecting client can
//! resume, and hands each message to the bounded queue of every subscribed client. It does not
//! touch the store, the bus or the HTTP API: the serve loop calls [`Hub::publish_reading`],
//! [`Hub::publish_alert`] and [`Hub::publish_status`], and [`router`] is merged into whichever
//! axum app serves `/ws`.
//!
//! Publishing never waits for a client. A client whose queue is full misses messages (counted,
//! and told later with one `dropped` notice); a client that keeps overflowing is disconnected.
//!
//! # Protocol
//!
//! Every server message is one JSON text frame with `type`, `epoch` and `offset`:
//! - `epoch` is an opaque string chosen at hub start; a restarted server has a new one.
//! - `offset` counts the messages the hub has published (`device_data`, `alert` and
//!   `device_status`), from 1.
//!   Data messages carry their own offset; every other message (`welcome`, `pong`, `error`,
//!   `heartbeat`, `dropped`, `resumed`) carries the stream position when it was written, so data
//!   still queued for the client may have lower offsets.
//!
//! On connect the server sends
//! `{"type":"welcome","epoch":"…","offset":N,"heartbeat_ms":15000}`. A new connection gets no
//! device data until it subscribes.
//!
//! Client → server (text frames, processed in order; a `pong` therefore confirms that everything
//! sent before the `ping` has been applied):
//! ```text
//! {"type":"subscribe","device_ids":["device_001","device_002"]}  add devices (≤ 10,000 ids per message)
//! {"type":"subscribe_all"}                                        every device
//! {"type":"unsubscribe","device_ids":["device_001"]}              remove devices
//! {"type":"unsubscribe_all"}                                      remove everything, `all` included
//! {"type":"ping"}                                                 → {"type":"pong",…}
//! {"type":"resume","epoch":"…","offset":O}                        see below
//! {"type":"options","batch_ms":N,"conflate":true}                 both optional, see below
//! ```
//! `subscribe_all` replaces any per-device subscription, and `unsubscribe` by id does not narrow
//! it (send `unsubscribe_all`). Ids must be 1–64 characters of `[A-Za-z0-9_.:-]`; a client may
//! hold at most 10,000 ids, and all clients together `WEBSOCKET_MAX_SUBSCRIBED_IDS` (100,000):
//! a `subscribe` beyond either gets an `error` and adds none of its ids. An id costs the same
//! whether or not it names a device the server has seen, so these caps bound the memory.
//!
//! Server → client:
//! ```text
//! {"type":"device_data","epoch":"…","offset":N,"payload":{…reading, SPEC §2…}}
//! {"type":"alert","epoch":"…","offset":N,"payload":{…alert…}}     to clients of that device or of all
//! {"type":"device_status","epoch":"…","offset":N,"payload":{"device_id":"…","status":"offline","timestamp":T}}
//! {"type":"heartbeat","epoch":"…","offset":N}                     every heartbeat_ms
//! {"type":"pong","epoch":"…","offset":N}
//! {"type":"error","epoch":"…","offset":N,"message":"…"}           bad client message; connection stays
//! {"type":"dropped","epoch":"…","offset":N,"count":K}             K messages were dropped: client too slow
//! {"type":"resumed","epoch":"…","offset":N,"recovered":true,"replayed":K}
//! {"type":"batch","epoch":"…","offset":N,"messages":[…device_data, alert, device_status…]}
//! ```
//! `device_status` goes, like `alert`, to the clients of that device or of all, when the
//! server's status of the device (`online`, `offline`, `fault`) changes, and once when the
//! device is first seen; `timestamp` is when the server noticed (Unix ms, server clock). A
//! client learns the status of devices that did not change since it connected from the HTTP
//! API (`/api/devices`).
//!
//! **Resume.** A client remembers the epoch and the highest data offset it has processed (or
//! the welcome's offset if it has had no data). After reconnecting it subscribes again, then
//! sends `resume` with them. If the epoch is the current one and every message after `O` is
//! still in the replay ring, the server sends every later message matching the subscription, in
//! offset order, then `resumed` with `recovered: true`; live messages follow without a gap or a
//! repeat. Otherwise it answers `recovered: false` and the client must reload its state through
//! the HTTP API. Data delivered between the `subscribe` and the `resume` is replayed again with
//! the same offset: send `resume` right after subscribing.
//!
//! **Batching.** `options` with `batch_ms` in 10..=1000 makes the server send at most one `batch`
//! frame per `batch_ms` (or sooner, when a batch reaches 1 MiB) holding the messages in offset
//! order; the batch's `offset` is that of its last message. `batch_ms: 0` returns to one frame per
//! message. With `conflate: true` a batch keeps only the newest `device_data` per device (alerts
//! and status changes are never conflated); conflation has no effect without batching.
//!
//! **Limits.** An upgrade beyond the connection limit gets HTTP 503; with an auth token
//! configured the upgrade needs `?token=…` or `Authorization: Bearer …` (else 401); with an
//! Origin allow-list the `Origin` header must be on it (else 403). Invalid JSON, an unknown
//! `type` or a missing or ill-typed field gets an `error` reply. A frame larger than the limit
//! (64 KiB) closes the connection with 1009, exceeding the message rate (20/s, bursts of 40)
//! with 1008, a client that stays too slow with 1008, and server shutdown with 1001. The server
//! sends a WebSocket ping every `WEBSOCKET_PING_INTERVAL` (20 s); a client from which nothing
//! arrives (no pong, no message) for two intervals is closed with 1008, so silent sockets
//! cannot hold the connection slots.

mod connection;
mod latency;
mod protocol;
mod subscriptions;
mod upgrade;
mod writer;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use axum::extract::ws::Utf8Bytes;
use serde::Serialize;
use tokio::sync::{Notify, Semaphore, mpsc};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

pub use latency::{BOUNDS_MS as LATENCY_BOUNDS_MS, LatencySnapshot};
pub use upgrade::router;

use crate::store::DeviceStatus;
use connection::Client;
use subscriptions::Subscriptions;

/// Checks one client text frame as a connection does: `Err` is the text of the `error` reply
/// it would get. For the fuzz targets in `fuzz/`, which see only the public API.
pub fn check_client_message(text: &str) -> Result<(), String> {
    protocol::parse(text).map(|_| ())
}

/// Limits and behaviour of the WebSocket hub.
#[derive(Debug, Clone)]
pub struct HubConfig {
    /// Concurrent connections (`WEBSOCKET_MAX_CONNECTIONS`); the next upgrade gets HTTP 503.
    pub max_connections: usize,
    /// Messages queued per client before it starts missing messages.
    pub client_queue: usize,
    /// Largest client frame (and message) accepted, in bytes; larger ones close with 1009.
    pub max_frame_bytes: usize,
    /// Client messages per second (token bucket, bursts of twice this); more closes with 1008.
    /// 0 turns the limit off.
    pub client_msgs_per_sec: u32,
    /// Published messages kept for `resume`.
    pub replay_capacity: usize,
    /// How often each client gets a `heartbeat`.
    pub heartbeat: Duration,
    /// How often the server sends each client a WebSocket ping; a client from which nothing
    /// (not even a pong) arrives for two of these is closed with 1008.
    pub ping_interval: Duration,
    /// Device ids the subscriptions of all clients may hold together; a `subscribe` beyond it
    /// gets an `error` (each client also holds at most 10,000).
    pub max_subscribed_ids: usize,
    /// When set, an upgrade must carry this token (`?token=` or `Authorization: Bearer`).
    pub auth_token: Option<String>,
    /// Allowed `Origin` header values; empty allows any (and none). `*` allows any.
    pub allowed_origins: Vec<String>,
    /// A client that misses more than this many messages in a row is disconnected.
    pub slow_max_consecutive_drops: u64,
    /// A client whose queue stays full for longer than this is disconnected.
    pub slow_max_full: Duration,
}

impl Default for HubConfig {
    fn default() -> Self {
        HubConfig {
            max_connections: 1000,
            client_queue: 256,
            max_frame_bytes: 64 * 1024,
            client_msgs_per_sec: 20,
            replay_capacity: 100_000,
            heartbeat: Duration::from_secs(15),
            ping_interval: Duration::from_secs(20),
            max_subscribed_ids: 100_000,
            auth_token: None,
            allowed_origins: Vec::new(),
            slow_max_consecutive_drops: 1000,
            slow_max_full: Duration::from_secs(10),
        }
    }
}

/// A snapshot of the hub's counters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HubStats {
    /// Open WebSocket connections.
    pub connections: usize,
    /// Stream messages (`device_data`, `alert`, `device_status`) written to clients, one per
    /// client.
    pub messages_sent: u64,
    /// Stream messages a client missed because its queue was full.
    pub messages_dropped: u64,
    /// Clients disconnected for staying too slow.
    pub clients_disconnected_slow: u64,
    /// Clients closed because nothing, not even a pong, arrived for two ping intervals.
    pub ping_timeouts: u64,
    /// Upgrades refused with 503 (connection limit or shutting down).
    pub rejected_connections: u64,
    /// Upgrades refused with 401 or 403 (token or Origin).
    pub rejected_unauthorized: u64,
    /// Published payloads refused because they were not UTF-8.
    pub invalid_payloads: u64,
    /// Client messages answered with an `error` (bad JSON, unknown type, bad field).
    pub client_errors: u64,
    /// Messages waiting in client queues right now, all clients together.
    pub queued_messages: usize,
    /// Device ids held by per-device subscriptions right now, all clients together.
    pub subscribed_ids: usize,
    /// Messages held in the replay ring.
    pub replay_len: usize,
    /// The stream epoch.
    pub epoch: String,
    /// The offset of the newest published message (0 before the first).
    pub offset: u64,
}

/// What kind of stream message a frame carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    DeviceData,
    Alert,
    DeviceStatus,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::DeviceData => "device_data",
            Kind::Alert => "alert",
            Kind::DeviceStatus => "device_status",
        }
    }
}

/// One published message, serialized once and shared by every client queue and the ring.
#[derive(Debug)]
pub(crate) struct Frame {
    offset: u64,
    kind: Kind,
    /// Event time of the reading, Unix ms (0 = not measured).
    event_ms: i64,
    device: Arc<str>,
    text: Utf8Bytes,
}

/// The numbered stream: the newest offset and the replay ring.
struct Stream {
    offset: u64,
    ring: VecDeque<Arc<Frame>>,
}

#[derive(Default)]
struct Counters {
    sent: AtomicU64,
    dropped: AtomicU64,
    slow: AtomicU64,
    ping_timeouts: AtomicU64,
    rejected: AtomicU64,
    unauthorized: AtomicU64,
    invalid: AtomicU64,
    client_errors: AtomicU64,
}

/// The WebSocket hub, shared as `Arc<Hub>` by the publisher and every connection.
pub struct Hub {
    cfg: HubConfig,
    epoch: String,
    started: Instant,
    stream: Mutex<Stream>,
    /// The newest offset, readable without the stream lock (for notices).
    offset: AtomicU64,
    subscriptions: RwLock<Subscriptions>,
    permits: Arc<Semaphore>,
    shutdown: CancellationToken,
    next_client: AtomicU64,
    connections: AtomicUsize,
    /// Notified whenever the last open connection ends.
    all_closed: Notify,
    counters: Counters,
    latency: latency::Latency,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub")
            .field("epoch", &self.epoch)
            .field("offset", &self.offset())
            .field("connections", &self.connections())
            .finish_non_exhaustive()
    }
}

impl Hub {
    /// A hub with a fresh random epoch and an empty stream.
    pub fn new(cfg: HubConfig) -> Arc<Hub> {
        let permits = Arc::new(Semaphore::new(
            cfg.max_connections.min(Semaphore::MAX_PERMITS),
        ));
        Arc::new(Hub {
            epoch: format!("{:016x}", rand::random::<u64>()),
            started: Instant::now(),
            stream: Mutex::new(Stream {
                offset: 0,
                ring: VecDeque::with_capacity(cfg.replay_capacity.min(4096)),
            }),
            offset: AtomicU64::new(0),
            subscriptions: RwLock::new(Subscriptions::new(cfg.max_subscribed_ids)),
            permits,
            shutdown: CancellationToken::new(),
            next_client: AtomicU64::new(1),
            connections: AtomicUsize::new(0),
            all_closed: Notify::new(),
            counters: Counters::default(),
            latency: latency::Latency::default(),
            cfg,
        })
    }

    /// Publishes a reading: `json` is its wire form (SPEC §2, valid JSON), embedded as the
    /// `payload` as it is. Never blocks or awaits.
    pub fn publish_reading(&self, device_id: &str, json: &[u8]) {
        self.publish(Kind::DeviceData, device_id, 0, json);
    }

    /// [`Hub::publish_reading`] for a reading with event time `event_ms` (Unix ms): its
    /// deliveries are measured for [`Hub::latency`].
    pub fn publish_reading_at(&self, device_id: &str, event_ms: i64, json: &[u8]) {
        self.publish(Kind::DeviceData, device_id, event_ms, json);
    }

    /// [`Hub::publish_reading_at`] for a reading already checked to be text (decoded upstream):
    /// its UTF-8 is not checked again.
    pub fn publish_reading_text(&self, device_id: &str, event_ms: i64, json: &str) {
        self.publish_text(Kind::DeviceData, device_id, event_ms, json);
    }

    /// Publishes an alert of `device_id` (its JSON, embedded as the `payload`). Never blocks.
    pub fn publish_alert(&self, device_id: &str, json: &[u8]) {
        self.publish(Kind::Alert, device_id, 0, json);
    }

    /// Publishes that the server's status of `device_id` became `status` at `now_ms` (Unix
    /// ms), to the clients of that device or of all. Never blocks.
    pub fn publish_status(&self, device_id: &str, status: DeviceStatus, now_ms: i64) {
        let payload = protocol::status_payload(device_id, status, now_ms);
        self.publish(Kind::DeviceStatus, device_id, 0, payload.as_bytes());
    }

    /// Event → client latency of the readings published with an event time, over every
    /// delivery to every client so far.
    pub fn latency(&self) -> LatencySnapshot {
        self.latency.snapshot()
    }

    /// Open WebSocket connections.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::Relaxed)
    }

    /// The stream epoch (changes with every hub start).
    pub fn epoch(&self) -> &str {
        &self.epoch
    }

    /// The offset of the newest published message (0 before the first).
    pub fn offset(&self) -> u64 {
        self.offset.load(Ordering::Acquire)
    }

    /// The hub's counters.
    pub fn stats(&self) -> HubStats {
        let replay_len = lock(&self.stream).ring.len();
        let (queued_messages, subscribed_ids) = {
            let subscriptions = read(&self.subscriptions);
            (
                subscriptions.queued_messages(),
                subscriptions.subscribed_ids(),
            )
        };
        let c = &self.counters;
        HubStats {
            connections: self.connections(),
            messages_sent: c.sent.load(Ordering::Relaxed),
            messages_dropped: c.dropped.load(Ordering::Relaxed),
            clients_disconnected_slow: c.slow.load(Ordering::Relaxed),
            ping_timeouts: c.ping_timeouts.load(Ordering::Relaxed),
            rejected_connections: c.rejected.load(Ordering::Relaxed),
            rejected_unauthorized: c.unauthorized.load(Ordering::Relaxed),
            invalid_payloads: c.invalid.load(Ordering::Relaxed),
            client_errors: c.client_errors.load(Ordering::Relaxed),
            queued_messages,
            subscribed_ids,
            replay_len,
            epoch: self.epoch.clone(),
            offset: self.offset(),
        }
    }

    /// Closes every client with 1001 (going away) and refuses new upgrades with 503. Returns
    /// at once; [`Hub::closed`] waits for the connections to end.
    pub fn shutdown(&self) {
        self.shutdown.cancel();
    }

    /// Resolves once no connection is open (at once if none is). After [`Hub::shutdown`] that
    /// takes at most a few seconds: a client gets 1 s to take the close frame and 5 s to answer.
    pub async fn closed(&self) {
        loop {
            let notified = self.all_closed.notified();
            tokio::pin!(notified);
            // Registered before the check, so a connection ending in between still wakes us.
            notified.as_mut().enable();
            if self.connections() == 0 {
                return;
            }
            notified.await;
        }
    }

    fn publish(&self, kind: Kind, device_id: &str, event_ms: i64, json: &[u8]) {
        let Ok(payload) = std::str::from_utf8(json) else {
            self.counters.invalid.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(device_id, "hub: not publishing a message that is not UTF-8");
            return;
        };
        self.publish_text(kind, device_id, event_ms, payload);
    }

    fn publish_text(&self, kind: Kind, device_id: &str, event_ms: i64, payload: &str) {
        let device: Arc<str> = Arc::from(device_id);
        let now_ms = self.elapsed_ms();
        // One lock around numbering, the ring and the fan-out: every client queue then holds
        // its messages in offset order, which resume relies on.
        let mut stream = lock(&self.stream);
        let offset = stream.offset + 1;
        stream.offset = offset;
        self.offset.store(offset, Ordering::Release);
        let text = protocol::stream_frame(kind, &self.epoch, offset, payload);
        let frame = Arc::new(Frame {
            offset,
            kind,
            event_ms,
            device,
            text: Utf8Bytes::from(text),
        });
        if self.cfg.replay_capacity > 0 {
            if stream.ring.len() >= self.cfg.replay_capacity {
                stream.ring.pop_front();
            }
            stream.ring.push_back(frame.clone());
        }
        let subscriptions = read(&self.subscriptions);
        subscriptions.for_each_recipient(&frame.device, |client| {
            self.offer(client, &frame, now_ms);
        });
    }

    /// Puts `frame` on `client`'s queue, or counts the miss and disconnects a client that
    /// stays too slow.
    fn offer(&self, client: &Client, frame: &Arc<Frame>, now_ms: u64) {
        if client.is_slow() {
            return;
        }
        match client.queue.try_send(frame.clone()) {
            Ok(()) => client.delivered_to_queue(),
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.counters.dropped.fetch_add(1, Ordering::Relaxed);
                let (in_a_row, full_since_ms) = client.missed(now_ms);
                let full_for = Duration::from_millis(now_ms.saturating_sub(full_since_ms));
                if (in_a_row > self.cfg.slow_max_consecutive_drops
                    || full_for > self.cfg.slow_max_full)
                    && client.mark_slow()
                {
                    self.counters.slow.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(
                        client = client.id,
                        in_a_row,
                        full_ms = full_for.as_millis() as u64,
                        "hub: disconnecting a client that is too slow"
                    );
                }
            }
            // The connection is going away; its clean-up removes it from the subscriptions.
            Err(mpsc::error::TrySendError::Closed(_)) => {}
        }
    }

    /// The newest offset, if every message after `after` is still in the replay ring (`None`
    /// too for an offset from the future).
    fn recoverable(&self, after: u64) -> Option<u64> {
        let stream = lock(&self.stream);
        let newest = stream.offset;
        if after > newest {
            return None;
        }
        if after < newest && stream.ring.front()?.offset > after + 1 {
            return None;
        }
        Some(newest)
    }

    /// Up to `max` messages after `after` and not after `upto`, in offset order; `None` if the
    /// ring no longer holds `after + 1`. Chunks keep the stream lock short and the copy small.
    fn replay_chunk(&self, after: u64, upto: u64, max: usize) -> Option<Vec<Arc<Frame>>> {
        if after >= upto {
            return Some(Vec::new());
        }
        let stream = lock(&self.stream);
        let first = stream.ring.front()?.offset;
        if first > after + 1 {
            return None;
        }
        // Offsets in the ring are consecutive, so the position of `after + 1` is known.
        let start = usize::try_from(after + 1 - first).ok()?;
        let count = usize::try_from(upto - after).map_or(max, |n| n.min(max));
        Some(stream.ring.range(start..).take(count).cloned().collect())
    }

    fn elapsed_ms(&self) -> u64 {
        // Never 0, which `Client` reads as "not full".
        (self.started.elapsed().as_millis() as u64).max(1)
    }

    fn client_id(&self) -> u64 {
        self.next_client.fetch_add(1, Ordering::Relaxed)
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic elsewhere while holding the lock leaves data that is still consistent here
    // (plain counters and queues), so keep serving rather than propagate the panic.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn read<T>(l: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(PoisonError::into_inner)
}

fn write<T>(l: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests;

impl HubConfig {
    /// The hub's limits from `config` (`WEBSOCKET_*`).
    pub fn from_config(config: &crate::config::Config) -> HubConfig {
        let ws = &config.websocket;
        HubConfig {
            max_connections: ws.max_connections as usize,
            replay_capacity: ws.replay_capacity,
            ping_interval: ws.ping_interval,
            max_subscribed_ids: ws.max_subscribed_ids,
            auth_token: ws.auth_token.clone(),
            allowed_origins: ws
                .allowed_origins
                .as_deref()
                .map(|list| {
                    list.split(',')
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .map(String::from)
                        .collect()
                })
                .unwrap_or_default(),
            ..HubConfig::default()
        }
    }
}
