//! [`MqttFleet`]: the simulator as a fleet of real MQTT clients — one connection per device
//! (`iiot simulate --output mqtt --mqtt-connections-per-device`), for broker load tests. Each
//! device connects (as `<client id>-<device id>`, clean session) when it first publishes, so
//! connections open spread over the first interval like the readings, not all at once.
//!
//! Bounded: at most `DEVICE_COUNT` connections, each with a small in-flight window
//! ([`PER_DEVICE_IN_FLIGHT`]). [`check_fd_limit`] refuses a fleet the open-files limit cannot
//! hold before anything connects.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use iiot_transport::{Publisher, Receipt, TransportError};

use super::publisher::MqttPublisher;
use crate::config::MqttSettings;

/// Messages one device's connection may have unacknowledged (a device sends one reading per
/// interval; a large window per connection would cost memory times the fleet).
pub const PER_DEVICE_IN_FLIGHT: u16 = 8;

/// File descriptors kept for everything but the devices' connections.
const SPARE_FDS: u64 = 128;

/// One MQTT connection per device.
pub struct MqttFleet {
    settings: MqttSettings,
    prefix: String,
    devices: usize,
    connections: Mutex<HashMap<Vec<u8>, Arc<MqttPublisher>>>,
}

/// The fleet would need more file descriptors than the process may open.
#[derive(Debug, thiserror::Error)]
#[error(
    "--mqtt-connections-per-device opens one connection per device: DEVICE_COUNT={devices} needs about {needed} open files, but the limit is {limit} (raise it, e.g. `ulimit -n {needed}`, or simulate fewer devices)"
)]
pub struct FdLimitError {
    /// Devices asked for.
    pub devices: u32,
    /// Descriptors needed.
    pub needed: u64,
    /// The soft limit.
    pub limit: u64,
}

/// Whether `devices` connections fit under this process's open-files limit (unknown limits
/// pass).
pub fn check_fd_limit(devices: u32) -> Result<(), FdLimitError> {
    let needed = u64::from(devices) + SPARE_FDS;
    match open_files_limit() {
        Some(limit) if limit < needed => Err(FdLimitError {
            devices,
            needed,
            limit,
        }),
        _ => Ok(()),
    }
}

/// The soft `Max open files` limit, from `/proc/self/limits`.
fn open_files_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    let soft = line.split_whitespace().nth(3)?;
    match soft {
        "unlimited" => Some(u64::MAX),
        n => n.parse().ok(),
    }
}

impl MqttFleet {
    /// A fleet of `devices` devices publishing to the broker of `settings`; `None` without a URL.
    pub fn new(settings: &MqttSettings, devices: u32) -> Option<MqttFleet> {
        settings.address()?;
        let prefix = settings
            .client_id
            .clone()
            .unwrap_or_else(|| format!("iiot-sim-{}", std::process::id()));
        let mut settings = settings.clone();
        settings.max_in_flight = settings.max_in_flight.min(PER_DEVICE_IN_FLIGHT);
        Some(MqttFleet {
            settings,
            prefix,
            devices: devices as usize,
            connections: Mutex::new(HashMap::new()),
        })
    }

    /// Connections opened so far.
    pub fn connections(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Vec<u8>, Arc<MqttPublisher>>> {
        // A panic while holding the map leaves it whole: it only ever gains entries.
        self.connections
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The connection of device `key`, opened on first use (up to the fleet's size).
    fn connection(&self, key: &[u8]) -> Result<Arc<MqttPublisher>, TransportError> {
        let mut connections = self.lock();
        if let Some(c) = connections.get(key) {
            return Ok(c.clone());
        }
        if connections.len() >= self.devices {
            return Err(TransportError::Broker(format!(
                "more devices than the {} the fleet was sized for",
                self.devices
            )));
        }
        let device = String::from_utf8_lossy(key);
        let mut settings = self.settings.clone();
        settings.client_id = Some(format!("{}-{device}", self.prefix));
        let publisher = MqttPublisher::connect(&settings)
            .map(Arc::new)
            .ok_or(TransportError::Closed)?;
        connections.insert(key.to_vec(), publisher.clone());
        Ok(publisher)
    }

    /// Disconnects every device once what it published is acknowledged (bounded by the caller).
    pub async fn close(self) {
        let connections = self
            .connections
            .into_inner()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let closing = connections
            .into_values()
            .filter_map(Arc::into_inner)
            .map(MqttPublisher::close);
        futures::future::join_all(closing).await;
    }
}

#[async_trait]
impl Publisher for MqttFleet {
    async fn publish(
        &self,
        topic: &str,
        key: &[u8],
        payload: Bytes,
    ) -> Result<Receipt, TransportError> {
        self.connection(key)?.publish(topic, key, payload).await
    }

    async fn flush(&self) -> Result<(), TransportError> {
        let all: Vec<_> = self.lock().values().cloned().collect();
        for connection in all {
            connection.flush().await?;
        }
        Ok(())
    }
}
