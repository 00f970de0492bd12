//! One WebSocket connection: its [`Client`] handle (what the publisher sees), the reader that
//! applies client messages, and the clean-up. The writer is in [`super::writer`].

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use axum::extract::ws::{Message, WebSocket, close_code};
use futures::StreamExt;
use futures::stream::SplitStream;
use tokio::sync::{OwnedSemaphorePermit, mpsc};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::protocol::{self, ClientMessage};
use super::writer::Writer;
use super::{Frame, Hub, write};

/// Control messages the reader queues for the writer; few, since the client is rate-limited.
const CONTROL_QUEUE: usize = 64;

/// What the publisher holds of a connection: its queue and its overflow accounting.
pub(crate) struct Client {
    pub(crate) id: u64,
    pub(crate) queue: mpsc::Sender<Arc<Frame>>,
    /// Cancelled to make the writer close the connection (shutdown or too slow).
    pub(crate) stop: CancellationToken,
    slow: AtomicBool,
    /// Nothing arrived from the client for two ping intervals.
    silent: AtomicBool,
    /// Misses not yet reported to the client with a `dropped` notice.
    unreported_drops: AtomicU64,
    drops: AtomicU64,
    drops_in_a_row: AtomicU64,
    /// Hub time (ms) of the first miss of the current run of misses; 0 when none.
    full_since_ms: AtomicU64,
}

impl Client {
    pub(crate) fn new(id: u64, queue: mpsc::Sender<Arc<Frame>>, stop: CancellationToken) -> Self {
        Client {
            id,
            queue,
            stop,
            slow: AtomicBool::new(false),
            silent: AtomicBool::new(false),
            unreported_drops: AtomicU64::new(0),
            drops: AtomicU64::new(0),
            drops_in_a_row: AtomicU64::new(0),
            full_since_ms: AtomicU64::new(0),
        }
    }

    pub(crate) fn is_slow(&self) -> bool {
        self.slow.load(Ordering::Relaxed)
    }

    /// A message made it into the queue: any run of misses is over.
    pub(crate) fn delivered_to_queue(&self) {
        if self.drops_in_a_row.load(Ordering::Relaxed) != 0 {
            self.drops_in_a_row.store(0, Ordering::Relaxed);
            self.full_since_ms.store(0, Ordering::Relaxed);
        }
    }

    /// Counts a miss; returns the misses in a row and since when (hub ms) the queue is full.
    pub(crate) fn missed(&self, now_ms: u64) -> (u64, u64) {
        self.unreported_drops.fetch_add(1, Ordering::Relaxed);
        self.drops.fetch_add(1, Ordering::Relaxed);
        let in_a_row = self.drops_in_a_row.fetch_add(1, Ordering::Relaxed) + 1;
        let since = match self.full_since_ms.load(Ordering::Relaxed) {
            0 => {
                self.full_since_ms.store(now_ms, Ordering::Relaxed);
                now_ms
            }
            since => since,
        };
        (in_a_row, since)
    }

    /// Marks the client too slow and stops it; true the first time only.
    pub(crate) fn mark_slow(&self) -> bool {
        let first = !self.slow.swap(true, Ordering::Relaxed);
        if first {
            self.stop.cancel();
        }
        first
    }

    /// Whether the client was closed for answering no pings.
    pub(crate) fn is_silent(&self) -> bool {
        self.silent.load(Ordering::Relaxed)
    }

    /// Marks the client silent and stops it; true the first time only.
    fn mark_silent(&self) -> bool {
        let first = !self.silent.swap(true, Ordering::Relaxed);
        if first {
            self.stop.cancel();
        }
        first
    }

    pub(crate) fn take_unreported_drops(&self) -> u64 {
        self.unreported_drops.swap(0, Ordering::Relaxed)
    }

    pub(crate) fn queued(&self) -> usize {
        self.queue.max_capacity() - self.queue.capacity()
    }
}

/// What the reader asks the writer to do, in the order the client asked.
#[derive(Debug)]
pub(crate) enum Control {
    /// Send this notice (pong, error).
    Notice(String),
    Resume {
        epoch: Option<String>,
        offset: u64,
    },
    Options {
        batch_ms: Option<u64>,
        conflate: Option<bool>,
    },
    /// Close the connection with this code and reason.
    Close(u16, String),
}

/// Registers the client, runs its reader and writer until the connection ends, cleans up.
pub(crate) async fn serve(
    hub: Arc<Hub>,
    socket: WebSocket,
    permit: OwnedSemaphorePermit,
    still_valid: Option<crate::http::guard::StillValid>,
) {
    let (queue, data_rx) = mpsc::channel(hub.cfg.client_queue.max(1));
    let client = Arc::new(Client::new(
        hub.client_id(),
        queue,
        hub.shutdown.child_token(),
    ));
    write(&hub.subscriptions).insert(client.clone());
    hub.connections.fetch_add(1, Ordering::Relaxed);
    tracing::debug!(client = client.id, "hub: client connected");

    let (ctl_tx, ctl_rx) = mpsc::channel(CONTROL_QUEUE);
    let reader_done = CancellationToken::new();
    let writer_done = CancellationToken::new();
    let (sink, stream) = socket.split();
    let writer = Writer::new(hub.clone(), client.clone(), sink);
    let revalidate = revalidate(&hub, still_valid, ctl_tx.clone(), &writer_done);
    tokio::join!(
        revalidate,
        async {
            read_loop(&hub, &client, stream, ctl_tx, &writer_done).await;
            reader_done.cancel();
        },
        async {
            writer.run(data_rx, ctl_rx, &reader_done).await;
            writer_done.cancel();
        },
    );

    write(&hub.subscriptions).remove(client.id);
    // Free the slot first: once `connections()` has gone down, an upgrade is accepted again.
    drop(permit);
    if hub.connections.fetch_sub(1, Ordering::Relaxed) == 1 {
        hub.all_closed.notify_waiters();
    }
    tracing::debug!(
        client = client.id,
        dropped = client.drops.load(Ordering::Relaxed),
        "hub: client disconnected"
    );
}

/// Closes the connection (1008) once the credentials it was opened with no longer hold:
/// asked every ping interval (at most every 5 s), until the writer has finished.
async fn revalidate(
    hub: &Hub,
    still_valid: Option<crate::http::guard::StillValid>,
    ctl: mpsc::Sender<Control>,
    writer_done: &CancellationToken,
) {
    let Some(still_valid) = still_valid else {
        return;
    };
    let every = hub
        .cfg
        .ping_interval
        .clamp(Duration::from_millis(100), Duration::from_secs(5));
    loop {
        tokio::select! {
            () = writer_done.cancelled() => return,
            () = tokio::time::sleep(every) => {}
        }
        if !(still_valid.0)() {
            tracing::info!("hub: closing a client whose credentials were revoked or expired");
            let reason = "credentials revoked or expired: sign in again".to_string();
            tokio::select! {
                _ = ctl.send(Control::Close(close_code::POLICY, reason)) => {}
                () = writer_done.cancelled() => {}
            }
            return;
        }
    }
}

/// Reads client frames until the client goes away or the writer has finished.
async fn read_loop(
    hub: &Hub,
    client: &Client,
    mut stream: SplitStream<WebSocket>,
    ctl: mpsc::Sender<Control>,
    writer_done: &CancellationToken,
) {
    let send = |c: Control| async {
        tokio::select! {
            r = ctl.send(c) => r.is_ok(),
            () = writer_done.cancelled() => false,
        }
    };
    let mut bucket = TokenBucket::new(hub.cfg.client_msgs_per_sec, Instant::now());
    // After asking the writer to close, keep reading (and ignoring) until the client's close
    // reply ends the stream: dropping unread data would make the close a TCP reset.
    let mut closing = false;
    // The writer pings every interval; a live client answers (its WebSocket library does, as
    // long as it reads). Two intervals without a frame of any kind: it is gone or not reading.
    let deadline = hub.cfg.ping_interval.max(Duration::from_millis(10)) * 2;
    let mut heard = Instant::now();
    loop {
        let next = tokio::select! {
            next = stream.next() => next,
            () = writer_done.cancelled() => return,
            () = tokio::time::sleep_until(heard + deadline), if !client.is_silent() => {
                if client.mark_silent() {
                    hub.counters.ping_timeouts.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(
                        client = client.id,
                        silent_ms = deadline.as_millis() as u64,
                        "hub: closing a client that answers no pings"
                    );
                }
                continue;
            }
        };
        heard = Instant::now();
        let msg = match next {
            None => return,
            Some(Ok(msg)) => msg,
            Some(Err(e)) => {
                if !closing && is_too_large(e) {
                    let reason = format!("frame larger than {} bytes", hub.cfg.max_frame_bytes);
                    send(Control::Close(close_code::SIZE, reason)).await;
                }
                // tungstenite reads nothing more after an error; the writer closes.
                return;
            }
        };
        if closing || matches!(msg, Message::Close(_)) {
            // tungstenite answers a client's close itself; the stream then ends.
            continue;
        }
        if !bucket.take(Instant::now()) {
            let reason = format!(
                "more than {} messages per second",
                hub.cfg.client_msgs_per_sec
            );
            closing = true;
            if !send(Control::Close(close_code::POLICY, reason)).await {
                return;
            }
            continue;
        }
        let reply = match msg {
            Message::Text(text) => apply(hub, client, &text),
            Message::Binary(_) => Err("binary frames are not supported; send JSON text".into()),
            // tungstenite answers pings itself; pongs need nothing.
            Message::Ping(_) | Message::Pong(_) | Message::Close(_) => Ok(None),
        };
        let control = match reply {
            Ok(None) => continue,
            Ok(Some(control)) => control,
            Err(message) => {
                hub.counters.client_errors.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(client = client.id, %message, "hub: bad client message");
                Control::Notice(protocol::error(&hub.epoch, hub.offset(), &message))
            }
        };
        if !send(control).await {
            return;
        }
    }
}

/// Applies one client text message: subscriptions here, the rest for the writer.
fn apply(hub: &Hub, client: &Client, text: &str) -> Result<Option<Control>, String> {
    Ok(match protocol::parse(text)? {
        ClientMessage::Subscribe(ids) => {
            write(&hub.subscriptions).subscribe(client.id, ids)?;
            None
        }
        ClientMessage::SubscribeAll => {
            write(&hub.subscriptions).subscribe_all(client.id);
            None
        }
        ClientMessage::Unsubscribe(ids) => {
            write(&hub.subscriptions).unsubscribe(client.id, &ids);
            None
        }
        ClientMessage::UnsubscribeAll => {
            write(&hub.subscriptions).unsubscribe_all(client.id);
            None
        }
        ClientMessage::Ping => Some(Control::Notice(protocol::notice(
            "pong",
            &hub.epoch,
            hub.offset(),
            "",
        ))),
        ClientMessage::Resume { epoch, offset } => Some(Control::Resume { epoch, offset }),
        ClientMessage::Options { batch_ms, conflate } => {
            Some(Control::Options { batch_ms, conflate })
        }
    })
}

fn is_too_large(e: axum::Error) -> bool {
    use tokio_tungstenite::tungstenite::Error;
    matches!(
        e.into_inner().downcast::<Error>().map(|e| *e),
        Ok(Error::Capacity(_))
    )
}

/// A token bucket: `rate` messages per second, bursts of twice that; rate 0 is unlimited.
#[derive(Debug)]
pub(crate) struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    pub(crate) fn new(rate: u32, now: Instant) -> Self {
        let rate = f64::from(rate);
        TokenBucket {
            rate,
            burst: 2.0 * rate,
            tokens: 2.0 * rate,
            last: now,
        }
    }

    /// Takes one token if there is one.
    pub(crate) fn take(&mut self, now: Instant) -> bool {
        if self.rate == 0.0 {
            return true;
        }
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}
