//! Real devices over MQTT as a [`Source`]: subscribes at QoS 1 to `MQTT_TOPICS` with a
//! persistent session and publishes each message onto the input topic, keyed by the payload's
//! `device_id`; the processors judge it from there like any other reading.
//!
//! Delivery: at least once. A message is acknowledged (PUBACK) only after its publication onto
//! the input topic is delivered, in the order the messages arrived, so a crash or an outage
//! means the broker sends it again (the processor dead-letters a repeat as `duplicate_seq`).
//! With the session kept (clean session off, fixed client id) the broker also keeps what is
//! published while `iiot` is away. At most `MQTT_MAX_IN_FLIGHT` messages are between the
//! broker and their acknowledgement; beyond that the source stops reading.
//!
//! The one judgement made here: a topic whose device segment (the `+` level) names another
//! device than the payload is dead-lettered `topic_mismatch` on the dead-letter topic, with the
//! normal envelope (`partition` and `offset` are -1: it never reached the input topic). A
//! payload whose device id cannot be read goes on to the processor, which says why.
//!
//! With `MQTT_PAYLOAD=sparkplug` each message is decoded by [`crate::mqtt::sparkplug`]
//! instead: its readings and offline notices go onto the input topic, a dead letter onto the
//! dead-letter topic, and a rebirth request back to the broker; the message is acknowledged
//! once all of them are delivered.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt as _;
use futures::stream::FuturesOrdered;
use iiot_model::{Invalid, InvalidReason};
use iiot_transport::{Publisher, TransportError};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{Source, SourceReport};
use crate::config::Config;
use crate::config::MqttSettings;
use crate::mqtt::connection::{self, Client, Message, Subscription};
use crate::mqtt::sparkplug::{Sparkplug, SparkplugConfig, route};
use crate::mqtt::{Arrivals, MqttStats, topics};
use crate::processor::ProcessorStats;
use crate::processor::dead_letter::{self, Origin};

/// How soon acknowledgements the event loop could not take yet are offered again.
const ACK_RETRY: Duration = Duration::from_millis(1);

/// How long a stop waits for pending deliveries and the last acknowledgements.
const STOP_DRAIN: Duration = Duration::from_secs(10);

/// The MQTT source of a [`Config`] (`MQTT_URL` set).
pub struct MqttSource {
    url: String,
    settings: MqttSettings,
    client_id: String,
    filters: Vec<String>,
    max_in_flight: usize,
    dlq_topic: String,
    max_message_bytes: usize,
    stats: Arc<MqttStats>,
    processor_stats: Arc<ProcessorStats>,
    /// `MQTT_PAYLOAD=sparkplug`: how to decode.
    sparkplug: Option<SparkplugConfig>,
}

impl MqttSource {
    /// The source `config` asks for, if `MQTT_URL` is set. `processor_stats` counts its
    /// `topic_mismatch` dead letters next to the processors' own.
    pub fn from_config(
        config: &Config,
        stats: Arc<MqttStats>,
        processor_stats: Arc<ProcessorStats>,
    ) -> Option<MqttSource> {
        let settings = &config.mqtt;
        settings.address()?;
        Some(MqttSource {
            url: settings.url.clone().unwrap_or_default(),
            settings: settings.clone(),
            client_id: settings.client_id_or_default(),
            filters: route::topic_filters(config),
            max_in_flight: usize::from(settings.max_in_flight),
            dlq_topic: config.kafka.topic_dlq.clone(),
            max_message_bytes: config.processor.max_message_bytes,
            stats,
            processor_stats,
            sparkplug: config
                .sparkplug
                .enabled()
                .then(|| SparkplugConfig::from_config(config)),
        })
    }
}

#[async_trait]
impl Source for MqttSource {
    fn name(&self) -> &'static str {
        "mqtt"
    }

    async fn run(
        self: Box<Self>,
        out: Arc<dyn Publisher>,
        topic: String,
        stop: CancellationToken,
    ) -> Result<SourceReport, TransportError> {
        let this = *self;
        tracing::info!(
            broker = %this.url,
            client_id = %this.client_id,
            protocol = %this.settings.protocol,
            topics = ?this.settings.shared(this.filters.clone()),
            "MQTT source subscribing"
        );
        let (tx, rx) = mpsc::channel(this.max_in_flight.clamp(1, 256));
        let subscription = Subscription {
            settings: &this.settings,
            client_id: &this.client_id,
            filters: this.settings.shared(this.filters.clone()),
            // Room for every acknowledgement the forwarder can owe, plus the subscriptions.
            capacity: 2 * this.max_in_flight + 64,
        };
        let Some((client, connection)) =
            connection::subscribe(subscription, tx, this.stats.clone())
        else {
            return Err(TransportError::Broker(format!(
                "not an MQTT URL: {}",
                this.url
            )));
        };
        if this.sparkplug.is_some() {
            this.stats.sparkplug.enabled.store(true, Ordering::Relaxed);
        }
        let forwarder = Forwarder {
            out,
            topic,
            client: client.clone(),
            source: &this,
            sparkplug: this.sparkplug.clone().map(Sparkplug::new),
        };
        let report = forwarder.run(rx, stop).await;
        // The acknowledgements are queued before the disconnect: the event loop sends both.
        // The request queue only empties while connected: neither wait may hold up a stop.
        let _ = tokio::time::timeout(STOP_DRAIN, client.disconnect()).await;
        let mut connection = connection;
        if tokio::time::timeout(STOP_DRAIN, &mut connection)
            .await
            .is_err()
        {
            tracing::warn!("MQTT connection did not close within {STOP_DRAIN:?}");
            connection.abort();
        }
        this.stats.connected.store(false, Ordering::Relaxed);
        Ok(report)
    }
}

/// Publishes received messages onto the input topic and acknowledges each, in order, once
/// delivered.
struct Forwarder<'a> {
    out: Arc<dyn Publisher>,
    topic: String,
    client: Client,
    source: &'a MqttSource,
    /// The Sparkplug decoder and its state, with `MQTT_PAYLOAD=sparkplug`.
    sparkplug: Option<Sparkplug>,
}

/// The wait for one message's delivery; yields the message to acknowledge and why it was
/// dead-lettered, if it was.
type Delivery =
    std::pin::Pin<Box<dyn std::future::Future<Output = (Message, Option<InvalidReason>)> + Send>>;

impl Forwarder<'_> {
    async fn run(
        mut self,
        mut rx: mpsc::Receiver<Message>,
        stop: CancellationToken,
    ) -> SourceReport {
        let mut pending: FuturesOrdered<Delivery> = FuturesOrdered::new();
        let mut acks = VecDeque::new();
        let mut report = SourceReport::default();
        let mut arrivals = Arrivals::default();
        let stats = &self.source.stats;
        let limit = self.source.max_in_flight.max(1);
        loop {
            self.send_acks(&mut acks);
            tokio::select! {
                biased;
                _ = stop.cancelled() => break,
                Some(delivered) = pending.next(), if !pending.is_empty() => {
                    self.delivered(delivered, &mut acks, &mut report);
                    arrivals.done(stats);
                }
                // The event loop takes one request per turn: try the queued ones again soon.
                _ = tokio::time::sleep(ACK_RETRY), if !acks.is_empty() => {}
                got = rx.recv(), if pending.len() < limit => match got {
                    Some(publish) => {
                        arrivals.arrived(stats);
                        pending.push_back(self.forward(publish, &stop).await);
                    }
                    None => break,
                },
            }
        }
        // Stop reading; what was received and not forwarded is sent again by the broker.
        rx.close();
        while rx.try_recv().is_ok() {
            self.source.stats.in_flight.fetch_sub(1, Ordering::Relaxed);
        }
        let drained = tokio::time::timeout(STOP_DRAIN, async {
            while let Some(delivered) = pending.next().await {
                self.delivered(delivered, &mut acks, &mut report);
                arrivals.done(stats);
            }
            loop {
                self.send_acks(&mut acks);
                if acks.is_empty() {
                    break;
                }
                tokio::time::sleep(ACK_RETRY).await;
            }
        })
        .await;
        stats.oldest_unacked_ms.store(0, Ordering::Relaxed);
        if drained.is_err() {
            tracing::warn!(
                "MQTT source stopped with deliveries pending: the broker sends them again"
            );
        }
        report
    }

    /// Publishes `publish` (onto the input topic, or as a dead letter) and returns the wait
    /// for its delivery, which yields the message to acknowledge.
    async fn forward(&mut self, publish: Message, stop: &CancellationToken) -> Delivery {
        let (publications, dead_letter) = match self.sparkplug.is_some() {
            true => self.route_sparkplug(&publish),
            false => {
                let (topic, key, payload) = self.route(&publish);
                let dead_letter =
                    (topic == self.source.dlq_topic).then_some(InvalidReason::TopicMismatch);
                (vec![(topic, key, payload)], dead_letter)
            }
        };
        let mut deliveries = Vec::with_capacity(publications.len());
        for (topic, key, payload) in publications {
            deliveries.push(self.deliver(topic, key, payload, stop).await);
        }
        Box::pin(async move {
            // All are published already: waiting in turn waits for the slowest.
            for delivery in deliveries {
                delivery.await;
            }
            (publish, dead_letter)
        })
    }

    /// Decodes a Sparkplug message: its publications, and its rebirth request sent at once.
    fn route_sparkplug(
        &mut self,
        publish: &Message,
    ) -> (Vec<route::Publication>, Option<InvalidReason>) {
        let now = crate::now_ms();
        let Some(sparkplug) = self.sparkplug.as_mut() else {
            return (Vec::new(), None);
        };
        let decoded = sparkplug.decode(&publish.topic, &publish.payload, now);
        self.source.stats.sparkplug.store(sparkplug.counts());
        let stats = &self.source.processor_stats;
        stats
            .seq_gaps
            .fetch_add(decoded.seq_gaps, Ordering::Relaxed);
        if let Some(command) = &decoded.command {
            let sent = self
                .client
                .try_publish_at_most_once(&command.topic, command.payload.clone());
            match sent {
                Ok(()) => tracing::info!(topic = %command.topic, "Sparkplug rebirth requested"),
                Err(e) => {
                    tracing::warn!(topic = %command.topic, error = %e, "Sparkplug rebirth request not sent")
                }
            }
        }
        let (input, dlq) = (&self.topic, &self.source.dlq_topic);
        route::publications(decoded, input, dlq, &publish.topic, &publish.payload, now)
    }

    /// Publishes one message and returns the wait for its delivery (sent again until it is).
    async fn deliver(
        &self,
        topic: String,
        key: Vec<u8>,
        payload: Bytes,
        stop: &CancellationToken,
    ) -> impl std::future::Future<Output = ()> + Send + 'static {
        let out = self.out.clone();
        let stats = self.source.stats.clone();
        let stop = stop.clone();
        // The first publication happens here, in arrival order (per-device order on the
        // input); only a failed delivery is sent again later.
        let mut first = Some(out.publish(&topic, &key, payload.clone()).await);
        async move {
            let mut pause = Duration::from_millis(100);
            loop {
                let attempt = match first.take() {
                    Some(published) => published,
                    None => out.publish(&topic, &key, payload.clone()).await,
                };
                let delivered = match attempt {
                    Ok(receipt) => receipt.delivered().await,
                    Err(e) => Err(e),
                };
                match delivered {
                    Ok(()) => return,
                    Err(e) => {
                        stats.delivery_errors.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(error = %e, "MQTT message not delivered; sending it again");
                        tokio::select! {
                            _ = tokio::time::sleep(pause) => {}
                            // Unacknowledged: the broker sends it again next time.
                            _ = stop.cancelled() => std::future::pending::<()>().await,
                        }
                        pause = (pause * 2).min(Duration::from_secs(5));
                    }
                }
            }
        }
    }

    /// Where `publish` goes: `(topic, key, payload)`.
    fn route(&self, publish: &Message) -> (String, Vec<u8>, Bytes) {
        let segment = topics::device_segment(&self.source.filters, &publish.topic);
        let payload = publish.payload.clone();
        let Some(device_id) = self.payload_device_id(&payload) else {
            // Unreadable: the processor dead-letters it with the precise reason.
            let key = segment.unwrap_or_default().as_bytes().to_vec();
            return (self.topic.clone(), key, payload);
        };
        match segment {
            Some(seg) if seg != device_id => {
                let invalid = Invalid::new(
                    InvalidReason::TopicMismatch,
                    format!(
                        "topic {} names device {seg:?}, the payload {device_id:?}",
                        publish.topic
                    ),
                );
                let origin = Origin {
                    topic: &publish.topic,
                    partition: -1,
                    offset: -1,
                    key: device_id.as_bytes(),
                };
                let letter = dead_letter::encode(&invalid, origin, &payload, crate::now_ms());
                let key = device_id.as_bytes().to_vec();
                (self.source.dlq_topic.clone(), key, Bytes::from(letter))
            }
            _ => (
                self.topic.clone(),
                device_id.as_bytes().to_vec(),
                payload.clone(),
            ),
        }
    }

    /// The payload's `device_id`, if it is small enough to read and has one.
    fn payload_device_id<'p>(&self, payload: &'p [u8]) -> Option<Cow<'p, str>> {
        #[derive(serde::Deserialize)]
        struct Id<'a> {
            #[serde(borrow)]
            device_id: Cow<'a, str>,
        }
        if payload.len() > self.source.max_message_bytes {
            return None;
        }
        if let Some(id) = leading_device_id(payload) {
            return Some(Cow::Borrowed(id));
        }
        let id: Id<'p> = serde_json::from_slice(payload).ok()?;
        Some(id.device_id)
    }

    /// Counts a delivered message and queues its acknowledgement.
    fn delivered(
        &self,
        (publish, dead_letter): (Message, Option<InvalidReason>),
        acks: &mut VecDeque<u16>,
        report: &mut SourceReport,
    ) {
        let stats = &self.source.stats;
        stats.in_flight.fetch_sub(1, Ordering::Relaxed);
        // A QoS 0 message (a publisher's choice, e.g. Sparkplug edge nodes) has no packet id
        // and takes no acknowledgement: a PUBACK for it makes the broker drop the connection.
        if publish.needs_ack {
            acks.push_back(publish.pkid);
        }
        report.sent += 1;
        if let Some(reason) = dead_letter {
            stats.dead_lettered.fetch_add(1, Ordering::Relaxed);
            self.source.processor_stats.dead_letters[reason.index()]
                .fetch_add(1, Ordering::Relaxed);
        } else {
            stats.forwarded.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Hands the queued acknowledgements, in order, to the event loop, as many as its request
    /// queue takes now. Never waits: the event loop takes requests only while it is polled,
    /// and it is polled by a task that may itself be waiting for this one (a wait here could
    /// deadlock both under load). What is left is tried again shortly.
    fn send_acks(&self, acks: &mut VecDeque<u16>) {
        while let Some(&pkid) = acks.front() {
            if !self.client.try_ack(pkid) {
                return;
            }
            acks.pop_front();
        }
    }
}

/// The `device_id` of a payload that opens with it, `{"device_id":"…"` with no escape in the
/// value, as the simulator and SPEC §2 readings are written, without reading the rest: the
/// first key of the top-level object cannot be a nested one. Anything else (spaces, another
/// key first, an escape) is `None` and left to the full parse. The processor still decodes the
/// whole payload and dead-letters it if the rest is not a reading.
fn leading_device_id(payload: &[u8]) -> Option<&str> {
    let rest = payload.strip_prefix(br#"{"device_id":""#)?;
    let end = rest.iter().position(|&b| b == b'"')?;
    let id = &rest[..end];
    if id.contains(&b'\\') {
        return None;
    }
    std::str::from_utf8(id).ok()
}

#[cfg(test)]
mod tests {
    use super::leading_device_id;

    #[test]
    fn the_leading_device_id_is_read_only_when_it_opens_the_payload_unescaped() {
        assert_eq!(
            leading_device_id(br#"{"device_id":"press_07","seq":1}"#),
            Some("press_07")
        );
        // Another key first: it could be the nested one, so the full parse decides.
        assert_eq!(
            leading_device_id(br#"{"seq":1,"device_id":"press_07"}"#),
            None
        );
        assert_eq!(leading_device_id(br#"{ "device_id":"a"}"#), None);
        assert_eq!(leading_device_id(br#"{"device_id":"a\"b"}"#), None);
        assert_eq!(leading_device_id(br#"{"device_id":"unterminated"#), None);
        assert_eq!(leading_device_id(b"not json"), None);
    }
}
