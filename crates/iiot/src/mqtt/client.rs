//! A publisher's connection, MQTT 3.1.1 or 5 (`MQTT_PROTOCOL`): what the simulator's MQTT
//! outputs ([`super::publisher`], [`super::fleet`], [`super::sparkplug::edge`]) need of either
//! `rumqttc` client — a clean session, publications, one subscription (Sparkplug's NCMD), a will,
//! and the events their connection tasks act on. The subscriber's side is
//! [`super::connection`].

use bytes::Bytes;
use rumqttc::v5::mqttbytes::QoS as QoS5;
use rumqttc::v5::mqttbytes::v5 as v5_packet;
use rumqttc::{QoS, v5};

use super::{KEEP_ALIVE, MAX_PACKET_BYTES, Session, client_options};
use crate::config::MqttSettings;

/// The last will of a connection.
pub struct Will {
    /// Where the broker publishes it.
    pub topic: String,
    /// What it publishes.
    pub payload: Vec<u8>,
    /// At least once (QoS 1) or at most once (QoS 0).
    pub at_least_once: bool,
}

/// The request side of a publisher's connection.
#[derive(Clone)]
pub enum PubClient {
    /// MQTT 3.1.1.
    V4(rumqttc::AsyncClient),
    /// MQTT 5.
    V5(v5::AsyncClient),
}

/// The event loop of a publisher's connection (poll it in its own task).
pub enum PubLoop {
    /// MQTT 3.1.1.
    V4(Box<rumqttc::EventLoop>),
    /// MQTT 5.
    V5(Box<v5::EventLoop>),
}

/// What a poll of the event loop saw, in either protocol.
#[derive(Debug)]
pub enum PubEvent {
    /// Connected; whether the broker had a session for us.
    ConnAck {
        /// The broker's session-present flag.
        session_present: bool,
    },
    /// A QoS 1 publication was acknowledged.
    PubAck,
    /// A message on a subscribed topic.
    Publish {
        /// Its topic.
        topic: String,
        /// Its payload.
        payload: Bytes,
    },
    /// Our DISCONNECT went out: the connection is over.
    Disconnected,
    /// Anything else.
    Other,
}

/// Why a poll failed.
#[derive(Debug)]
pub enum PollError {
    /// Every client handle is gone: stop polling.
    Done,
    /// The connection failed or dropped (the next poll reconnects).
    Failed(String),
}

/// Opens (lazily: the first poll connects) a clean-session connection for `settings` as
/// `client_id`, in the protocol `MQTT_PROTOCOL` names, with at most `MQTT_MAX_IN_FLIGHT`
/// publications unacknowledged. `None` without a URL or when TLS cannot be set up.
pub fn connect(
    settings: &MqttSettings,
    client_id: &str,
    will: Option<Will>,
) -> Option<(PubClient, PubLoop)> {
    let capacity = usize::from(settings.max_in_flight);
    if !settings.is_v5() {
        let mut options = client_options(settings, client_id, Session::Clean)?;
        if let Some(w) = will {
            let qos = if w.at_least_once {
                QoS::AtLeastOnce
            } else {
                QoS::AtMostOnce
            };
            options.set_last_will(rumqttc::LastWill::new(w.topic, w.payload, qos, false));
        }
        let (client, eventloop) = rumqttc::AsyncClient::new(options, capacity);
        return Some((PubClient::V4(client), PubLoop::V4(Box::new(eventloop))));
    }
    let (host, port) = settings.address()?;
    let mut options = v5::MqttOptions::new(client_id, host, port);
    options
        .set_keep_alive(KEEP_ALIVE)
        .set_clean_start(true)
        .set_outgoing_inflight_upper_limit(settings.max_in_flight)
        .set_max_packet_size(Some(MAX_PACKET_BYTES as u32));
    if let Some(user) = &settings.username {
        options.set_credentials(user, settings.password.clone().unwrap_or_default());
    }
    if let Some(transport) = super::tls_transport(settings)? {
        options.set_transport(transport);
    }
    if let Some(w) = will {
        let qos = if w.at_least_once {
            QoS5::AtLeastOnce
        } else {
            QoS5::AtMostOnce
        };
        options.set_last_will(v5_packet::LastWill::new(
            w.topic, w.payload, qos, false, None,
        ));
    }
    let (client, eventloop) = v5::AsyncClient::new(options, capacity);
    Some((PubClient::V5(client), PubLoop::V5(Box::new(eventloop))))
}

impl PubClient {
    /// Queues a publication, waiting while the request queue is full; `false` means the
    /// connection task is gone.
    pub async fn publish(&self, topic: String, at_least_once: bool, payload: Bytes) -> bool {
        match self {
            PubClient::V4(c) => {
                let qos = match at_least_once {
                    true => QoS::AtLeastOnce,
                    false => QoS::AtMostOnce,
                };
                c.publish_bytes(topic, qos, false, payload).await.is_ok()
            }
            PubClient::V5(c) => {
                let qos = match at_least_once {
                    true => QoS5::AtLeastOnce,
                    false => QoS5::AtMostOnce,
                };
                c.publish_bytes(topic, qos, false, payload).await.is_ok()
            }
        }
    }

    /// Queues a QoS 1 subscription to `topic` if the request queue has room now.
    pub fn try_subscribe(&self, topic: String) -> Result<(), String> {
        match self {
            PubClient::V4(c) => c
                .try_subscribe(topic, QoS::AtLeastOnce)
                .map_err(|e| e.to_string()),
            PubClient::V5(c) => c
                .try_subscribe(topic, QoS5::AtLeastOnce)
                .map_err(|e| e.to_string()),
        }
    }

    /// Queues a disconnect (sent after what was queued before it).
    pub async fn disconnect(&self) {
        // An error means the event loop is gone already: nothing left to disconnect.
        match self {
            PubClient::V4(c) => drop(c.disconnect().await),
            PubClient::V5(c) => drop(c.disconnect().await),
        }
    }
}

impl PubLoop {
    /// The next event of the connection (connecting first if it is not up).
    pub async fn poll(&mut self) -> Result<PubEvent, PollError> {
        match self {
            PubLoop::V4(eventloop) => {
                use rumqttc::{ConnectionError, Event, Incoming, Outgoing};
                match eventloop.poll().await {
                    Ok(Event::Incoming(Incoming::ConnAck(ack))) => Ok(PubEvent::ConnAck {
                        session_present: ack.session_present,
                    }),
                    Ok(Event::Incoming(Incoming::PubAck(_))) => Ok(PubEvent::PubAck),
                    Ok(Event::Incoming(Incoming::Publish(p))) => Ok(PubEvent::Publish {
                        topic: p.topic,
                        payload: p.payload,
                    }),
                    Ok(Event::Outgoing(Outgoing::Disconnect)) => Ok(PubEvent::Disconnected),
                    Ok(_) => Ok(PubEvent::Other),
                    Err(ConnectionError::RequestsDone) => Err(PollError::Done),
                    Err(e) => Err(PollError::Failed(e.to_string())),
                }
            }
            PubLoop::V5(eventloop) => {
                use rumqttc::Outgoing;
                use v5::{ConnectionError, Event, Incoming};
                match eventloop.poll().await {
                    Ok(Event::Incoming(Incoming::ConnAck(ack))) => Ok(PubEvent::ConnAck {
                        session_present: ack.session_present,
                    }),
                    Ok(Event::Incoming(Incoming::PubAck(_))) => Ok(PubEvent::PubAck),
                    Ok(Event::Incoming(Incoming::Publish(p))) => Ok(PubEvent::Publish {
                        topic: String::from_utf8_lossy(&p.topic).into_owned(),
                        payload: p.payload,
                    }),
                    Ok(Event::Outgoing(Outgoing::Disconnect)) => Ok(PubEvent::Disconnected),
                    Ok(_) => Ok(PubEvent::Other),
                    Err(ConnectionError::RequestsDone) => Err(PollError::Done),
                    Err(e) => Err(PollError::Failed(e.to_string())),
                }
            }
        }
    }
}
