//! [`MqttPublisher`]: the simulator as real MQTT devices — each reading published at QoS 1 to
//! its device's own topic, `iiot/devices/<device_id>/telemetry`, over one connection (MQTT
//! 3.1.1, or 5 with `MQTT_PROTOCOL=5`).
//!
//! A receipt resolves once the broker has acknowledged as many messages as had been published
//! up to it (brokers acknowledge QoS 1 in order, so that is its own PUBACK); the client sends
//! unacknowledged messages again after a reconnect.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use bytes::Bytes;
use iiot_transport::{Publisher, Receipt, TransportError};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::client::{PollError, PubClient, PubEvent, PubLoop};
use super::{MqttStats, Reconnect, topics};
use crate::config::MqttSettings;

/// Publishes onto per-device MQTT topics (the key is the device id; the topic argument of
/// [`Publisher::publish`] is not used).
pub struct MqttPublisher {
    client: PubClient,
    published: AtomicU64,
    acked: watch::Receiver<u64>,
    stats: Arc<MqttStats>,
    connection: JoinHandle<()>,
}

impl MqttPublisher {
    /// Connects (in the background, retrying) to the broker of `settings` with a clean session,
    /// as `MQTT_CLIENT_ID` or else `iiot-sim-<pid>` (so simulators on one host do not take
    /// each other's connection, nor that of an `iiot run` there).
    pub fn connect(settings: &MqttSettings) -> Option<MqttPublisher> {
        let client_id = settings
            .client_id
            .clone()
            .unwrap_or_else(|| format!("iiot-sim-{}", std::process::id()));
        let url = settings.url.clone().unwrap_or_default();
        let (client, eventloop) = super::client::connect(settings, &client_id, None)?;
        let (acked_tx, acked) = watch::channel(0);
        let stats = Arc::new(MqttStats::default());
        let connection = tokio::spawn(drive(eventloop, url, acked_tx, stats.clone()));
        Some(MqttPublisher {
            client,
            published: AtomicU64::new(0),
            acked,
            stats,
            connection,
        })
    }

    /// The connection's counters.
    pub fn stats(&self) -> Arc<MqttStats> {
        self.stats.clone()
    }

    /// Disconnects once everything published is acknowledged (bounded by the caller).
    pub async fn close(self) {
        self.client.disconnect().await;
        let _ = self.connection.await;
    }

    async fn acked_up_to(mut acked: watch::Receiver<u64>, n: u64) -> Result<(), TransportError> {
        acked
            .wait_for(|&a| a >= n)
            .await
            .map(|_| ())
            .map_err(|_| TransportError::Closed)
    }
}

async fn drive(
    mut eventloop: PubLoop,
    url: String,
    acked: watch::Sender<u64>,
    stats: Arc<MqttStats>,
) {
    let mut reconnect = Reconnect::new("MQTT simulator output");
    loop {
        match eventloop.poll().await {
            Ok(PubEvent::ConnAck { session_present }) => {
                stats.connected.store(true, Ordering::Relaxed);
                reconnect.connected(&url, session_present);
            }
            Ok(PubEvent::PubAck) => {
                stats.forwarded.fetch_add(1, Ordering::Relaxed);
                acked.send_modify(|n| *n += 1);
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

#[async_trait]
impl Publisher for MqttPublisher {
    async fn publish(
        &self,
        _topic: &str,
        key: &[u8],
        payload: Bytes,
    ) -> Result<Receipt, TransportError> {
        let device = String::from_utf8_lossy(key);
        let topic = topics::telemetry_topic(&device);
        if !self.client.publish(topic, true, payload).await {
            return Err(TransportError::Closed);
        }
        let n = self.published.fetch_add(1, Ordering::Relaxed) + 1;
        Ok(Receipt::Pending(Box::pin(Self::acked_up_to(
            self.acked.clone(),
            n,
        ))))
    }

    async fn flush(&self) -> Result<(), TransportError> {
        let n = self.published.load(Ordering::Relaxed);
        Self::acked_up_to(self.acked.clone(), n).await
    }
}
