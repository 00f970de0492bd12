//! [`SparkplugEdge`]: the simulator as one Sparkplug B edge node (`iiot simulate --output mqtt
//! --mqtt-payload sparkplug`). Group [`GROUP`], edge node id = the MQTT client id
//! (`iiot-sim-<pid>` by default), one Sparkplug device per simulated device.
//!
//! NBIRTH (with `bdSeq` and `Node Control/Rebirth`) goes out before the first message of every
//! connection, a device's DBIRTH (names, aliases, datatypes, values) before its first DDATA of
//! the connection, then DDATA by alias only. The NDEATH is the MQTT will (QoS 1), and is also
//! published on a clean close (a clean disconnect suppresses the will). As the specification
//! asks, BIRTH and DATA go at QoS 0: a message counts as delivered once the client took it.
//! An NCMD `Node Control/Rebirth = true` (as `iiot run` sends for a DATA it cannot place) makes
//! the next message go out after a new NBIRTH, and each device's next after its DBIRTH.
//! A reading that is not JSON (the simulator's malformed faults) goes out as raw bytes on the
//! device's DDATA topic, so the receiver's `sparkplug_malformed` path is exercised.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use async_trait::async_trait;
use bytes::Bytes;
use hashbrown::HashSet;
use iiot_model::Reading;
use iiot_transport::{Publisher, Receipt, TransportError};
use prost::Message as _;
use tokio::sync::Mutex;
use tokio::task::JoinHandle;

use super::proto::{Metric, Payload, Value, datatype};
use crate::config::MqttSettings;
use crate::mqtt::client::{PollError, PubClient, PubEvent, PubLoop, Will};
use crate::mqtt::{MqttStats, Reconnect};

/// The Sparkplug group of the simulator's edge node.
pub const GROUP: &str = "iiot";

/// A device's metrics: (name, alias, datatype).
const METRICS: [(&str, u64, u32); 7] = [
    ("Sensors/Temperature", 1, datatype::DOUBLE),
    ("Sensors/Humidity", 2, datatype::DOUBLE),
    ("Sensors/Pressure", 3, datatype::DOUBLE),
    ("Motor/Current", 4, datatype::DOUBLE),
    ("Switch", 5, datatype::BOOLEAN),
    ("Battery", 6, datatype::INT64),
    ("Signal Strength", 7, datatype::INT64),
];

/// What the edge node has said on the current connection.
#[derive(Debug, Default)]
struct Session {
    /// The connection (count of CONNACKs so far) the NBIRTH went out on; `None` = none yet.
    born_on: Option<u64>,
    /// The next `seq`.
    seq: u8,
    /// Devices whose DBIRTH went out on this connection.
    born: HashSet<String>,
}

/// The simulator's edge node (a [`Publisher`]: the key is the device id, the topic unused).
pub struct SparkplugEdge {
    client: PubClient,
    node: String,
    bd_seq: u64,
    connections: Arc<AtomicU64>,
    /// Set by an NCMD rebirth request, taken by the next publication.
    rebirth: Arc<AtomicBool>,
    session: Mutex<Session>,
    stats: Arc<MqttStats>,
    connection: JoinHandle<()>,
}

impl SparkplugEdge {
    /// Connects (in the background, retrying) to the broker of `settings`, its NDEATH as will.
    pub fn connect(settings: &MqttSettings) -> Option<SparkplugEdge> {
        let node = settings
            .client_id
            .clone()
            .unwrap_or_else(|| format!("iiot-sim-{}", std::process::id()));
        // Differs between runs, so a late will of an earlier run ends nothing of this one.
        let bd_seq = (crate::now_ms() / 1000 % 256) as u64;
        let will = Will {
            topic: format!("spBv1.0/{GROUP}/NDEATH/{node}"),
            payload: death(bd_seq).encode_to_vec(),
            at_least_once: true,
        };
        let url = settings.url.clone().unwrap_or_default();
        let (client, eventloop) = crate::mqtt::client::connect(settings, &node, Some(will))?;
        let stats = Arc::new(MqttStats::default());
        let connections = Arc::new(AtomicU64::new(0));
        let rebirth = Arc::new(AtomicBool::new(false));
        let commands = Commands {
            client: client.clone(),
            topic: format!("spBv1.0/{GROUP}/NCMD/{node}"),
            rebirth: rebirth.clone(),
        };
        let connection = tokio::spawn(drive(
            eventloop,
            url,
            connections.clone(),
            commands,
            stats.clone(),
        ));
        Some(SparkplugEdge {
            client,
            node,
            bd_seq,
            connections,
            rebirth,
            session: Mutex::new(Session::default()),
            stats,
            connection,
        })
    }

    /// The connection's counters.
    pub fn stats(&self) -> Arc<MqttStats> {
        self.stats.clone()
    }

    /// Publishes the NDEATH, then disconnects.
    pub async fn close(self) {
        let topic = format!("spBv1.0/{GROUP}/NDEATH/{}", self.node);
        let death = death(self.bd_seq).encode_to_vec();
        self.client.publish(topic, true, Bytes::from(death)).await;
        self.client.disconnect().await;
        let _ = self.connection.await;
    }

    async fn send(&self, topic: String, payload: Vec<u8>) -> Result<(), TransportError> {
        if !self
            .client
            .publish(topic, false, Bytes::from(payload))
            .await
        {
            return Err(TransportError::Closed);
        }
        self.stats.forwarded.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

/// Where the edge node hears its commands.
struct Commands {
    client: PubClient,
    topic: String,
    rebirth: Arc<AtomicBool>,
}

impl Commands {
    /// Notes a rebirth request in `payload`, if it is one.
    fn take(&self, payload: &[u8]) {
        let Ok(command) = Payload::decode(payload) else {
            return;
        };
        let asked = command.metrics.iter().any(|m| {
            m.name.as_deref() == Some("Node Control/Rebirth")
                && m.value == Some(Value::BooleanValue(true))
        });
        if asked {
            tracing::info!(topic = %self.topic, "Sparkplug rebirth requested: BIRTH certificates go out again");
            self.rebirth.store(true, Ordering::Relaxed);
        }
    }
}

async fn drive(
    mut eventloop: PubLoop,
    url: String,
    connections: Arc<AtomicU64>,
    commands: Commands,
    stats: Arc<MqttStats>,
) {
    let mut reconnect = Reconnect::new("MQTT simulator output (Sparkplug B)");
    loop {
        match eventloop.poll().await {
            Ok(PubEvent::ConnAck { session_present }) => {
                stats.connected.store(true, Ordering::Relaxed);
                connections.fetch_add(1, Ordering::Relaxed);
                reconnect.connected(&url, session_present);
                let topic = commands.topic.clone();
                if let Err(e) = commands.client.try_subscribe(topic) {
                    tracing::warn!(error = %e, "Sparkplug NCMD subscription could not be queued");
                }
            }
            Ok(PubEvent::Publish { topic, payload }) if topic == commands.topic => {
                commands.take(&payload);
            }
            Ok(PubEvent::Disconnected) | Err(PollError::Done) => return,
            Ok(_) => {}
            Err(PollError::Failed(e)) => {
                stats.connected.store(false, Ordering::Relaxed);
                stats.connection_failures.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(reconnect.failed(&url, &e)).await;
            }
        }
    }
}

fn death(bd_seq: u64) -> Payload {
    Payload {
        timestamp: Some(crate::now_ms().max(0) as u64),
        metrics: vec![Metric {
            name: Some("bdSeq".into()),
            datatype: Some(datatype::INT64),
            value: Some(Value::LongValue(bd_seq)),
            ..Metric::default()
        }],
        ..Payload::default()
    }
}

/// The metrics of `r`: named with datatypes (DBIRTH) or by alias only (DDATA).
fn metrics(r: &Reading<'_>, birth: bool) -> Vec<Metric> {
    let s = &r.sensors;
    let values = [
        Value::DoubleValue(s.temperature.value),
        Value::DoubleValue(s.humidity.value),
        Value::DoubleValue(s.pressure.value),
        Value::DoubleValue(s.current.value),
        Value::BooleanValue(s.switch_status.value),
        Value::LongValue(r.device_info.battery as u64),
        Value::LongValue(r.device_info.signal_strength as u64),
    ];
    METRICS
        .iter()
        .zip(values)
        .map(|(&(name, alias, datatype), value)| Metric {
            name: birth.then(|| name.to_string()),
            alias: Some(alias),
            datatype: birth.then_some(datatype),
            value: Some(value),
            ..Metric::default()
        })
        .collect()
}

#[async_trait]
impl Publisher for SparkplugEdge {
    async fn publish(
        &self,
        _topic: &str,
        key: &[u8],
        payload: Bytes,
    ) -> Result<Receipt, TransportError> {
        let device = String::from_utf8_lossy(key).into_owned();
        let base = format!("spBv1.0/{GROUP}");
        // One lock: seq numbers go out in the order they are given.
        let mut session = self.session.lock().await;
        let connection = self.connections.load(Ordering::Relaxed);
        if session.born_on != Some(connection) || self.rebirth.swap(false, Ordering::Relaxed) {
            let rebirth = Metric {
                name: Some("Node Control/Rebirth".into()),
                datatype: Some(datatype::BOOLEAN),
                value: Some(Value::BooleanValue(false)),
                ..Metric::default()
            };
            let mut birth = death(self.bd_seq);
            birth.metrics.push(rebirth);
            birth.seq = Some(0);
            *session = Session {
                born_on: Some(connection),
                seq: 1,
                born: HashSet::new(),
            };
            self.send(
                format!("{base}/NBIRTH/{}", self.node),
                birth.encode_to_vec(),
            )
            .await?;
        }
        let Ok(reading) = serde_json::from_slice::<Reading<'_>>(&payload) else {
            self.send(
                format!("{base}/DDATA/{}/{device}", self.node),
                payload.to_vec(),
            )
            .await?;
            return Ok(Receipt::Delivered);
        };
        let next = |birth: bool, session: &mut Session| {
            let seq = session.seq;
            session.seq = seq.wrapping_add(1);
            Payload {
                timestamp: Some(reading.timestamp.max(0) as u64),
                metrics: metrics(&reading, birth),
                seq: Some(u64::from(seq)),
                ..Payload::default()
            }
            .encode_to_vec()
        };
        if !session.born.contains(&device) {
            let birth = next(true, &mut session);
            self.send(format!("{base}/DBIRTH/{}/{device}", self.node), birth)
                .await?;
            session.born.insert(device);
            return Ok(Receipt::Delivered);
        }
        let data = next(false, &mut session);
        self.send(format!("{base}/DDATA/{}/{device}", self.node), data)
            .await?;
        Ok(Receipt::Delivered)
    }

    async fn flush(&self) -> Result<(), TransportError> {
        Ok(())
    }
}
