//! A subscriber's connection, MQTT 3.1.1 or 5 (`MQTT_PROTOCOL`): [`subscribe`] connects with
//! the persistent session and hands every received message, as a [`Message`], to a bounded
//! channel (waiting while it is full: backpressure on the broker); the [`Client`] acknowledges
//! them by packet id. Reconnects with backoff and subscribes again on every connect.
//!
//! Both protocol versions come from `rumqttc` (its `v5` module for MQTT 5); only what a QoS 1
//! subscriber needs is common to both here.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use rumqttc::v5::mqttbytes::v5 as v5_packet;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::{MAX_PACKET_BYTES, MqttStats, Reconnect, Session, client_options};
use crate::config::MqttSettings;

/// How long an MQTT 5 broker keeps our session while we are away: as long as it will (MQTT
/// 3.1.1's clean session off keeps it for good, too).
const SESSION_EXPIRY_S: u32 = u32::MAX;

/// A message received at QoS 1, to be acknowledged by its packet id.
#[derive(Debug, Clone)]
pub struct Message {
    /// The topic it was published to (never the shared-subscription filter).
    pub topic: String,
    /// Its payload.
    pub payload: Bytes,
    /// Its packet id: what the acknowledgement names.
    pub pkid: u16,
    /// Whether it was sent at QoS 1 or 2 and takes a PUBACK (QoS 0 takes none).
    pub needs_ack: bool,
}

/// The request side of a subscriber's connection.
#[derive(Clone)]
pub enum Client {
    /// MQTT 3.1.1.
    V4(rumqttc::AsyncClient),
    /// MQTT 5.
    V5(rumqttc::v5::AsyncClient),
}

impl Client {
    /// Queues the acknowledgement (PUBACK) of packet `pkid` if the request queue has room now;
    /// `false` if not (try again later: never wait here, see the source's `send_acks`).
    pub fn try_ack(&self, pkid: u16) -> bool {
        match self {
            Client::V4(client) => {
                // Only the packet id and QoS make the PUBACK.
                let mut ack =
                    rumqttc::Publish::new("", rumqttc::QoS::AtLeastOnce, Vec::<u8>::new());
                ack.pkid = pkid;
                client.try_ack(&ack).is_ok()
            }
            Client::V5(client) => {
                let mut ack = v5_packet::Publish::new(
                    "",
                    rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
                    Vec::<u8>::new(),
                    None,
                );
                ack.pkid = pkid;
                client.try_ack(&ack).is_ok()
            }
        }
    }

    /// Queues a QoS 0 publication (e.g. a Sparkplug rebirth request) if the request queue has
    /// room now; never waits.
    pub fn try_publish_at_most_once(&self, topic: &str, payload: Vec<u8>) -> Result<(), String> {
        match self {
            Client::V4(client) => client
                .try_publish(topic, rumqttc::QoS::AtMostOnce, false, payload)
                .map_err(|e| e.to_string()),
            Client::V5(client) => client
                .try_publish(
                    topic,
                    rumqttc::v5::mqttbytes::QoS::AtMostOnce,
                    false,
                    payload,
                )
                .map_err(|e| e.to_string()),
        }
    }

    /// Queues a disconnect (sent after the acknowledgements queued before it).
    pub async fn disconnect(&self) {
        // An error means the event loop is gone already: nothing left to disconnect.
        match self {
            Client::V4(client) => drop(client.disconnect().await),
            Client::V5(client) => drop(client.disconnect().await),
        }
    }
}

/// What a subscriber connects with.
pub struct Subscription<'a> {
    /// The broker and session settings.
    pub settings: &'a MqttSettings,
    /// The fixed client id of the persistent session.
    pub client_id: &'a str,
    /// The filters subscribed at QoS 1, as sent to the broker (`$share/…` included).
    pub filters: Vec<String>,
    /// Request-queue capacity of the client.
    pub capacity: usize,
}

/// Connects `subscription` in the background: received messages go to `tx`. The task ends when
/// the client disconnected, or when `tx` is closed after a failure. `None` without a URL.
pub fn subscribe(
    subscription: Subscription<'_>,
    tx: mpsc::Sender<Message>,
    stats: Arc<MqttStats>,
) -> Option<(Client, JoinHandle<()>)> {
    let Subscription {
        settings,
        client_id,
        filters,
        capacity,
    } = subscription;
    let url = settings.url.clone().unwrap_or_default();
    if settings.is_v5() {
        let options = v5_options(settings, client_id)?;
        let (client, eventloop) = rumqttc::v5::AsyncClient::new(options, capacity);
        let task = tokio::spawn(drive_v5(eventloop, client.clone(), filters, url, tx, stats));
        Some((Client::V5(client), task))
    } else {
        let options = client_options(settings, client_id, Session::Persistent)?;
        let (client, eventloop) = rumqttc::AsyncClient::new(options, capacity);
        let task = tokio::spawn(drive_v4(eventloop, client.clone(), filters, url, tx, stats));
        Some((Client::V4(client), task))
    }
}

/// The MQTT 5 options of a persistent subscriber: clean start off with a session that does
/// not expire, manual acknowledgements, at most `MQTT_MAX_IN_FLIGHT` unacknowledged messages
/// from the broker (receive maximum).
fn v5_options(settings: &MqttSettings, client_id: &str) -> Option<rumqttc::v5::MqttOptions> {
    let (host, port) = settings.address()?;
    let mut options = rumqttc::v5::MqttOptions::new(client_id, host, port);
    options
        .set_keep_alive(super::KEEP_ALIVE)
        .set_clean_start(false)
        .set_session_expiry_interval(Some(SESSION_EXPIRY_S))
        .set_manual_acks(true)
        .set_receive_maximum(Some(settings.max_in_flight))
        .set_max_packet_size(Some(MAX_PACKET_BYTES as u32));
    if let Some(user) = &settings.username {
        options.set_credentials(user, settings.password.clone().unwrap_or_default());
    }
    if let Some(transport) = super::tls_transport(settings)? {
        options.set_transport(transport);
    }
    Some(options)
}

/// Hands `message` to the forwarder; a closed channel means the source is stopping (the
/// message stays unacknowledged and the broker sends it again next time).
async fn hand_over(tx: &mpsc::Sender<Message>, stats: &MqttStats, message: Message) {
    stats.received.fetch_add(1, Ordering::Relaxed);
    stats.in_flight.fetch_add(1, Ordering::Relaxed);
    if tx.send(message).await.is_err() {
        stats.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// After a failed poll: counts it and waits the backoff; `false` when the source is gone.
async fn failed(
    reconnect: &mut Reconnect,
    url: &str,
    error: &(dyn std::fmt::Display + Sync),
    tx: &mpsc::Sender<Message>,
    stats: &MqttStats,
) -> bool {
    stats.connected.store(false, Ordering::Relaxed);
    stats.connection_failures.fetch_add(1, Ordering::Relaxed);
    if tx.is_closed() {
        return false;
    }
    let wait = reconnect.failed(url, &error);
    tokio::select! {
        _ = tokio::time::sleep(wait) => true,
        _ = tx.closed() => false,
    }
}

async fn drive_v4(
    mut eventloop: rumqttc::EventLoop,
    client: rumqttc::AsyncClient,
    filters: Vec<String>,
    url: String,
    tx: mpsc::Sender<Message>,
    stats: Arc<MqttStats>,
) {
    use rumqttc::{Event, Incoming, Outgoing, QoS};
    let mut reconnect = Reconnect::new("MQTT source");
    loop {
        match eventloop.poll().await {
            Ok(Event::Incoming(Incoming::ConnAck(ack))) => {
                reconnect.connected(&url, ack.session_present);
                let subscriptions = filters
                    .iter()
                    .map(|f| rumqttc::SubscribeFilter::new(f.clone(), QoS::AtLeastOnce));
                if let Err(e) = client.try_subscribe_many(subscriptions) {
                    tracing::error!(error = %e, "MQTT subscribe could not be queued");
                }
            }
            Ok(Event::Incoming(Incoming::Publish(p))) => {
                let message = Message {
                    needs_ack: p.qos != rumqttc::QoS::AtMostOnce,
                    topic: p.topic,
                    payload: p.payload,
                    pkid: p.pkid,
                };
                hand_over(&tx, &stats, message).await;
            }
            // Ready once subscribed: from then on nothing published for us is missed.
            Ok(Event::Incoming(Incoming::SubAck(_))) => {
                stats.connected.store(true, Ordering::Relaxed);
            }
            Ok(Event::Outgoing(Outgoing::Disconnect)) => return,
            Ok(_) => {}
            Err(e) => {
                if !failed(&mut reconnect, &url, &e, &tx, &stats).await {
                    return;
                }
            }
        }
    }
}

async fn drive_v5(
    mut eventloop: rumqttc::v5::EventLoop,
    client: rumqttc::v5::AsyncClient,
    filters: Vec<String>,
    url: String,
    tx: mpsc::Sender<Message>,
    stats: Arc<MqttStats>,
) {
    use rumqttc::Outgoing;
    use rumqttc::v5::mqttbytes::QoS;
    use rumqttc::v5::{Event, Incoming};
    let mut reconnect = Reconnect::new("MQTT source");
    loop {
        match eventloop.poll().await {
            Ok(Event::Incoming(Incoming::ConnAck(ack))) => {
                reconnect.connected(&url, ack.session_present);
                let subscriptions = filters
                    .iter()
                    .map(|f| v5_packet::Filter::new(f.clone(), QoS::AtLeastOnce));
                if let Err(e) = client.try_subscribe_many(subscriptions) {
                    tracing::error!(error = %e, "MQTT subscribe could not be queued");
                }
            }
            Ok(Event::Incoming(Incoming::Publish(p))) => {
                let message = Message {
                    needs_ack: p.qos != rumqttc::v5::mqttbytes::QoS::AtMostOnce,
                    topic: String::from_utf8_lossy(&p.topic).into_owned(),
                    payload: p.payload,
                    pkid: p.pkid,
                };
                hand_over(&tx, &stats, message).await;
            }
            Ok(Event::Incoming(Incoming::SubAck(ack))) => {
                let refused = ack
                    .return_codes
                    .iter()
                    .any(|code| !matches!(code, v5_packet::SubscribeReasonCode::Success(_)));
                if refused {
                    tracing::error!(codes = ?ack.return_codes, filters = ?filters, "the MQTT broker refused a subscription");
                }
                stats.connected.store(true, Ordering::Relaxed);
            }
            Ok(Event::Outgoing(Outgoing::Disconnect)) => return,
            Ok(_) => {}
            Err(e) => {
                if !failed(&mut reconnect, &url, &e, &tx, &stats).await {
                    return;
                }
            }
        }
    }
}
