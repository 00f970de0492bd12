//! The writing half of a connection: the only place that sends to the client socket.
//!
//! It drains the client's data queue (one frame per message, or batches), answers the reader's
//! control messages in order, replays for `resume`, reports drops and sends heartbeats. Every
//! send races the client's stop token, so a client that stopped reading cannot hold it.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, close_code};
use futures::SinkExt;
use futures::stream::SplitSink;
use tokio::sync::mpsc;
use tokio::time::{Instant, Interval, MissedTickBehavior, interval_at, timeout};
use tokio_util::sync::CancellationToken;

use super::connection::{Client, Control};
use super::{Frame, Hub, Kind, protocol, read};

/// A batch is sent early once it holds this many bytes, so batches stay bounded.
pub(crate) const MAX_BATCH_BYTES: usize = 1024 * 1024;
/// Replayed messages copied out of the ring per lock.
const REPLAY_CHUNK: usize = 1024;
/// How long a close frame may take to go out (a client that stopped reading never takes it).
const CLOSE_SEND_TIMEOUT: Duration = Duration::from_secs(1);
/// How long to wait for the client's answer to our close frame.
const CLOSE_REPLY_TIMEOUT: Duration = Duration::from_secs(5);

/// Why the writer stops.
enum End {
    /// The socket failed or the client went away: nothing more to send.
    Gone,
    /// Close the connection with this code and reason.
    Close(u16, String),
}

pub(crate) struct Writer {
    hub: Arc<Hub>,
    client: Arc<Client>,
    sink: SplitSink<WebSocket, Message>,
    /// Highest stream offset sent or batched; after a resume, queued messages up to the
    /// replayed ones are skipped.
    delivered: u64,
    conflate: bool,
    batch: Option<Batch>,
    flush_every: Option<Interval>,
}

impl Writer {
    pub(crate) fn new(
        hub: Arc<Hub>,
        client: Arc<Client>,
        sink: SplitSink<WebSocket, Message>,
    ) -> Self {
        Writer {
            hub,
            client,
            sink,
            delivered: 0,
            conflate: false,
            batch: None,
            flush_every: None,
        }
    }

    /// Runs until the connection ends; closes it when asked to.
    pub(crate) async fn run(
        mut self,
        mut data: mpsc::Receiver<Arc<Frame>>,
        mut ctl: mpsc::Receiver<Control>,
        reader_done: &CancellationToken,
    ) {
        let period = self.hub.cfg.heartbeat.max(Duration::from_millis(10));
        let mut heartbeat = interval_at(Instant::now() + period, period);
        heartbeat.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let every = self.hub.cfg.ping_interval.max(Duration::from_millis(10));
        let mut ping = interval_at(Instant::now() + every, every);
        ping.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let heartbeat_ms = self.hub.cfg.heartbeat.as_millis();
        let welcome = format!(r#","heartbeat_ms":{heartbeat_ms}"#);
        let mut result = self.notice("welcome", &welcome).await;
        while result.is_ok() {
            result = tokio::select! {
                biased;
                () = self.client.stop.cancelled() => Err(self.stop_reason()),
                c = ctl.recv() => match c {
                    Some(c) => self.control(c).await,
                    None => Err(End::Gone),
                },
                () = reader_done.cancelled() => Err(End::Gone),
                Some(frame) = data.recv() => self.data(frame).await,
                () = tick(&mut self.flush_every) => self.flush().await,
                _ = heartbeat.tick() => self.notice("heartbeat", "").await,
                _ = ping.tick() => self.send(Message::Ping(Default::default())).await,
            };
        }
        if let Err(End::Close(code, reason)) = result {
            self.close(code, reason, reader_done).await;
        }
    }

    async fn control(&mut self, c: Control) -> Result<(), End> {
        match c {
            Control::Notice(text) => self.send(Message::Text(text.into())).await,
            Control::Resume { epoch, offset } => self.resume(epoch, offset).await,
            Control::Options { batch_ms, conflate } => self.options(batch_ms, conflate).await,
            Control::Close(code, reason) => Err(End::Close(code, reason)),
        }
    }

    async fn data(&mut self, frame: Arc<Frame>) -> Result<(), End> {
        if frame.offset <= self.delivered {
            return Ok(());
        }
        self.delivered = frame.offset;
        self.emit(frame).await?;
        let dropped = self.client.take_unreported_drops();
        if dropped > 0 {
            self.notice("dropped", &format!(r#","count":{dropped}"#))
                .await?;
        }
        Ok(())
    }

    /// Sends a stream frame now, or adds it to the batch.
    async fn emit(&mut self, frame: Arc<Frame>) -> Result<(), End> {
        if let Some(batch) = &mut self.batch {
            batch.push(frame, self.conflate);
            if batch.bytes >= MAX_BATCH_BYTES {
                self.flush().await?;
            }
            return Ok(());
        }
        self.send(Message::Text(frame.text.clone())).await?;
        self.hub.counters.sent.fetch_add(1, Ordering::Relaxed);
        self.hub.latency.record(frame.event_ms, crate::now_ms());
        Ok(())
    }

    async fn flush(&mut self) -> Result<(), End> {
        let Some(batch) = self.batch.as_mut().filter(|b| b.len > 0) else {
            return Ok(());
        };
        let text = protocol::batch(
            &self.hub.epoch,
            batch.last,
            batch.frames.iter().flatten().map(|f| f.as_ref()),
            batch.bytes,
        );
        let sent = batch.len as u64;
        let events: Vec<i64> = batch.frames.iter().flatten().map(|f| f.event_ms).collect();
        batch.clear();
        self.send(Message::Text(text.into())).await?;
        self.hub.counters.sent.fetch_add(sent, Ordering::Relaxed);
        let now = crate::now_ms();
        for event_ms in events {
            self.hub.latency.record(event_ms, now);
        }
        Ok(())
    }

    async fn resume(&mut self, epoch: Option<String>, after: u64) -> Result<(), End> {
        let newest = match epoch {
            Some(e) if e == self.hub.epoch => self.hub.recoverable(after),
            _ => None,
        };
        let Some(newest) = newest else {
            return self
                .notice("resumed", r#","recovered":false,"replayed":0"#)
                .await;
        };
        let mut cursor = after;
        let mut replayed = 0;
        let mut recovered = true;
        while cursor < newest {
            let Some(chunk) = self.hub.replay_chunk(cursor, newest, REPLAY_CHUNK) else {
                // The ring moved past us while we were sending: the rest is gone.
                recovered = false;
                break;
            };
            let Some(last) = chunk.last().map(|f| f.offset) else {
                break;
            };
            cursor = last;
            let matching: Vec<Arc<Frame>> = {
                let subscriptions = read(&self.hub.subscriptions);
                chunk
                    .into_iter()
                    .filter(|f| subscriptions.matches(self.client.id, &f.device))
                    .collect()
            };
            replayed += matching.len();
            for frame in matching {
                self.emit(frame).await?;
            }
        }
        // Everything up to `newest` that matched was replayed: skip it in the live queue.
        self.delivered = self.delivered.max(newest);
        self.flush().await?;
        self.notice(
            "resumed",
            &format!(r#","recovered":{recovered},"replayed":{replayed}"#),
        )
        .await
    }

    async fn options(&mut self, batch_ms: Option<u64>, conflate: Option<bool>) -> Result<(), End> {
        if let Some(conflate) = conflate {
            self.conflate = conflate;
        }
        match batch_ms {
            None => {}
            Some(0) => {
                self.flush().await?;
                self.batch = None;
                self.flush_every = None;
            }
            Some(ms) => {
                let every = Duration::from_millis(ms);
                self.batch.get_or_insert_with(Batch::default);
                let mut interval = interval_at(Instant::now() + every, every);
                interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
                self.flush_every = Some(interval);
            }
        }
        Ok(())
    }

    /// Sends a notice carrying the current offset; `extra` is empty or starts with a comma.
    async fn notice(&mut self, kind: &str, extra: &str) -> Result<(), End> {
        let text = protocol::notice(kind, &self.hub.epoch, self.hub.offset(), extra);
        self.send(Message::Text(text.into())).await
    }

    async fn send(&mut self, msg: Message) -> Result<(), End> {
        tokio::select! {
            biased;
            () = self.client.stop.cancelled() => Err(self.stop_reason()),
            r = self.sink.send(msg) => r.map_err(|_| End::Gone),
        }
    }

    fn stop_reason(&self) -> End {
        if self.hub.shutdown.is_cancelled() {
            End::Close(close_code::AWAY, "server shutting down".into())
        } else if self.client.is_silent() {
            End::Close(
                close_code::POLICY,
                "no answer to pings: client closed as idle".into(),
            )
        } else if self.client.is_slow() {
            End::Close(
                close_code::POLICY,
                "client too slow: messages were dropped".into(),
            )
        } else {
            End::Close(close_code::NORMAL, String::new())
        }
    }

    /// Sends a close frame and waits a little for the client's answer.
    async fn close(&mut self, code: u16, reason: String, reader_done: &CancellationToken) {
        tracing::debug!(client = self.client.id, code, %reason, "hub: closing connection");
        let frame = Message::Close(Some(CloseFrame {
            code,
            reason: Utf8Bytes::from(reason),
        }));
        if let Ok(Ok(())) = timeout(CLOSE_SEND_TIMEOUT, self.sink.send(frame)).await {
            let _ = timeout(CLOSE_REPLY_TIMEOUT, reader_done.cancelled()).await;
        }
    }
}

async fn tick(interval: &mut Option<Interval>) {
    match interval {
        Some(interval) => {
            interval.tick().await;
        }
        None => std::future::pending().await,
    }
}

/// Stream frames waiting for the next `batch`, in offset order.
#[derive(Debug, Default)]
pub(crate) struct Batch {
    /// `None` where a newer reading of the same device replaced the frame (conflation).
    pub(crate) frames: Vec<Option<Arc<Frame>>>,
    /// Position of the newest reading per device in `frames`.
    newest: HashMap<Arc<str>, usize>,
    /// Frames held (not counting replaced ones).
    pub(crate) len: usize,
    /// Their size, with one separator each.
    pub(crate) bytes: usize,
    /// Offset of the last frame.
    pub(crate) last: u64,
}

impl Batch {
    pub(crate) fn push(&mut self, frame: Arc<Frame>, conflate: bool) {
        if conflate && frame.kind == Kind::DeviceData {
            let at = self.frames.len();
            let replaced = self
                .newest
                .insert(frame.device.clone(), at)
                .and_then(|older| self.frames.get_mut(older))
                .and_then(Option::take);
            if let Some(replaced) = replaced {
                self.len -= 1;
                self.bytes -= replaced.text.len() + 1;
            }
        }
        self.len += 1;
        self.bytes += frame.text.len() + 1;
        self.last = frame.offset;
        self.frames.push(Some(frame));
    }

    pub(crate) fn clear(&mut self) {
        self.frames.clear();
        self.newest.clear();
        self.len = 0;
        self.bytes = 0;
    }
}
