//! MQTT plumbing shared by the MQTT source ([`crate::sources::mqtt`]) and the simulator's MQTT
//! output ([`publisher`]): client options from the settings, topic filters, the connection's
//! counters and its reconnect policy.
//!
//! MQTT 3.1.1 and 5 through `rumqttc`, `mqtts://` with rustls (the `tls` feature). QoS 1
//! both ways.
//!
//! - [`client`]: a publisher's connection in either protocol version.
//! - [`connection`]: a subscriber's connection in either protocol version.
//! - [`tls`]: the TLS client configuration of `mqtts://` (CA, client certificate and key).
//! - [`topics`]: filter matching and the device segment of a topic.
//! - [`fleet`]: the simulator's devices, one MQTT connection each.
//! - [`publisher`]: a [`iiot_transport::Publisher`] onto `iiot/devices/<id>/telemetry`.
//! - [`sparkplug`]: Sparkplug B payloads decoded into readings (`MQTT_PAYLOAD=sparkplug`).

pub mod client;
pub mod connection;
pub mod fleet;
pub mod publisher;
pub mod sparkplug;
#[cfg(feature = "tls")]
pub mod tls;
pub mod topics;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rumqttc::MqttOptions;

use crate::config::MqttSettings;

/// Largest MQTT packet read or written. Far above `MAX_MESSAGE_BYTES` (at most 10 MiB) on
/// purpose: an oversize reading must reach the processor and be dead-lettered `oversize`; a
/// packet the client refused would drop the connection, and the broker would send it again.
pub const MAX_PACKET_BYTES: usize = 16 * 1024 * 1024;

/// Keep-alive interval of our connections.
pub(crate) const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// Longest pause between two connection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// An outage is logged at most this often.
pub const OUTAGE_LOG_INTERVAL: Duration = Duration::from_secs(30);

/// What an MQTT connection did, shared with `/metrics` and `/ready`.
#[derive(Debug, Default)]
pub struct MqttStats {
    /// Connected to the broker now.
    pub connected: AtomicBool,
    /// Messages received from the broker (redeliveries included).
    pub received: AtomicU64,
    /// Messages published onto the input topic and acknowledged to the broker.
    pub forwarded: AtomicU64,
    /// Messages dead-lettered by the source itself (`topic_mismatch`).
    pub dead_lettered: AtomicU64,
    /// Received and not yet acknowledged.
    pub in_flight: AtomicU64,
    /// Connections lost or refused.
    pub connection_failures: AtomicU64,
    /// Failed deliveries onto the input topic (each sent again).
    pub delivery_errors: AtomicU64,
    /// When the oldest message received and not yet acknowledged was taken from the broker
    /// (Unix ms; 0 when none is): the lag `/metrics` shows is its age.
    pub oldest_unacked_ms: AtomicI64,
    /// The Sparkplug decoder's counts (`MQTT_PAYLOAD=sparkplug`).
    pub sparkplug: sparkplug::stats::SparkplugStats,
}

impl MqttStats {
    /// Whether the connection is up (`/ready`).
    pub fn is_connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }
}

/// The arrival times of the messages between the broker and their acknowledgement, oldest
/// first (acknowledgements go in arrival order), kept in [`MqttStats::oldest_unacked_ms`].
/// Bounded by the in-flight limit of its owner.
#[derive(Debug, Default)]
pub struct Arrivals(VecDeque<i64>);

impl Arrivals {
    /// A message arrived now.
    pub fn arrived(&mut self, stats: &MqttStats) {
        let now = crate::now_ms();
        if self.0.is_empty() {
            stats.oldest_unacked_ms.store(now, Ordering::Relaxed);
        }
        self.0.push_back(now);
    }

    /// The oldest message was acknowledged (or given up: the broker sends it again).
    pub fn done(&mut self, stats: &MqttStats) {
        self.0.pop_front();
        let oldest = self.0.front().copied().unwrap_or(0);
        stats.oldest_unacked_ms.store(oldest, Ordering::Relaxed);
    }
}

/// How a connection uses its session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Session {
    /// A subscriber's: clean session off, so the broker keeps what is published for us while we
    /// are away; messages acknowledged by hand once delivered.
    Persistent,
    /// A publisher's: a clean session, acknowledgements handled by the client.
    Clean,
}

/// The client options for `settings` under `client_id`.
pub fn client_options(
    settings: &MqttSettings,
    client_id: &str,
    session: Session,
) -> Option<MqttOptions> {
    let persistent = session == Session::Persistent;
    let (host, port) = settings.address()?;
    let mut options = MqttOptions::new(client_id, host, port);
    options
        .set_keep_alive(KEEP_ALIVE)
        .set_clean_session(!persistent)
        .set_manual_acks(persistent)
        .set_inflight(settings.max_in_flight)
        .set_max_packet_size(MAX_PACKET_BYTES, MAX_PACKET_BYTES);
    if let Some(user) = &settings.username {
        options.set_credentials(user, settings.password.clone().unwrap_or_default());
    }
    if let Some(transport) = tls_transport(settings)? {
        options.set_transport(transport);
    }
    Some(options)
}

/// The TLS transport of an `mqtts://` URL (`Some(None)` for `mqtt://`); `None` when it cannot
/// be built now (it could at start-up: a file changed since), which is logged.
pub(crate) fn tls_transport(settings: &MqttSettings) -> Option<Option<rumqttc::Transport>> {
    #[cfg(feature = "tls")]
    return match tls::transport(settings) {
        Ok(transport) => Some(transport),
        Err(e) => {
            tracing::error!("cannot connect to the MQTT broker over TLS: {e}");
            None
        }
    };
    // Without TLS the configuration refuses mqtts:// URLs.
    #[cfg(not(feature = "tls"))]
    return Some(None).filter(|_| !settings.is_tls());
}

/// Pauses between connection attempts, growing from 100 ms to [`MAX_BACKOFF`], and logs an
/// outage at most once per [`OUTAGE_LOG_INTERVAL`].
#[derive(Debug)]
pub struct Reconnect {
    what: &'static str,
    next: Duration,
    down_since: Option<Instant>,
    logged_at: Option<Instant>,
}

impl Reconnect {
    /// For the connection called `what` in logs.
    pub fn new(what: &'static str) -> Reconnect {
        Reconnect {
            what,
            next: Duration::from_millis(100),
            down_since: None,
            logged_at: None,
        }
    }

    /// A connection attempt failed or the connection dropped: logs (rate-limited) and returns
    /// how long to wait before the next attempt.
    pub fn failed(&mut self, url: &str, error: &dyn std::fmt::Display) -> Duration {
        let now = Instant::now();
        let since = *self.down_since.get_or_insert(now);
        if self
            .logged_at
            .is_none_or(|at| now.duration_since(at) >= OUTAGE_LOG_INTERVAL)
        {
            self.logged_at = Some(now);
            tracing::warn!(
                broker = url,
                error = %error,
                down_for_s = now.duration_since(since).as_secs(),
                "{} cannot reach the MQTT broker; retrying (logged at most every {}s)",
                self.what,
                OUTAGE_LOG_INTERVAL.as_secs()
            );
        }
        let wait = self.next;
        self.next = (self.next * 2).min(MAX_BACKOFF);
        wait
    }

    /// Connected: resets the pause and says so if there was an outage.
    pub fn connected(&mut self, url: &str, session_present: bool) {
        self.next = Duration::from_millis(100);
        self.logged_at = None;
        match self.down_since.take() {
            Some(since) => tracing::info!(
                broker = url,
                session_present,
                down_for_s = since.elapsed().as_secs_f64(),
                "{} reconnected to the MQTT broker",
                self.what
            ),
            None => tracing::info!(
                broker = url,
                session_present,
                "{} connected to the MQTT broker",
                self.what
            ),
        }
    }
}
