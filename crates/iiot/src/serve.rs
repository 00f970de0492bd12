//! The serve role's data path: keeps the live [`Store`] and the WebSocket hub current from two
//! subscriptions that each see everything — `device-data` (every reading) and `alerts` (every
//! status change) — on the embedded bus or on Kafka.
//!
//! Readings are validated again here (the processor dead-letters bad ones; this side only skips
//! them), so the store never holds what the processor rejected. The store lock is taken once per
//! batch, never across an await.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use iiot_model::{Alert, Limits, decode};
use iiot_transport::{Message, Subscriber, TransportError};

use tokio_util::sync::CancellationToken;

use crate::hub::Hub;
use crate::now_ms;
use crate::store::Store;

/// Largest batch taken from a subscription at once.
const BATCH: usize = 1024;
/// How often old history is dropped.
const PRUNE_EVERY: Duration = Duration::from_secs(10);
/// How often device status changes are looked for and published.
const STATUS_EVERY: Duration = Duration::from_secs(1);

/// A store shared between the feeder (writer) and the HTTP API (readers).
pub type SharedStore = Arc<RwLock<Store>>;

/// Feeds `store` (and, when given, the WebSocket `hub`) from the two subscriptions until both
/// end (their topics closed and drained) or `stop` is cancelled.
pub async fn feed_store(
    store: SharedStore,
    hub: Option<Arc<Hub>>,
    mut readings: Box<dyn Subscriber>,
    mut alerts: Box<dyn Subscriber>,
    limits: Limits,
    stop: CancellationToken,
) -> Result<(), TransportError> {
    let mut reading_batch: Vec<Message> = Vec::with_capacity(BATCH);
    let mut alert_batch: Vec<Message> = Vec::with_capacity(BATCH);
    let (mut readings_open, mut alerts_open) = (true, true);
    let mut valid: Vec<(usize, i64, Box<str>)> = Vec::with_capacity(BATCH);
    let mut prune = tokio::time::interval(PRUNE_EVERY);
    prune.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut status = tokio::time::interval(STATUS_EVERY);
    status.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    while readings_open || alerts_open {
        tokio::select! {
            _ = stop.cancelled() => break,
            got = readings.recv_batch(&mut reading_batch, BATCH), if readings_open => {
                if got? == 0 {
                    readings_open = false;
                    continue;
                }
                let now = now_ms();
                valid.clear();
                {
                    let mut store = write(&store);
                    for (i, m) in reading_batch.iter().enumerate() {
                        if let Ok(reading) = decode(&m.payload, now, &limits) {
                            store.record(&reading, now);
                            valid.push((i, reading.timestamp, Box::<str>::from(&*reading.device_id)));
                        }
                    }
                }
                // Fan-out happens outside the store lock: HTTP readers never wait on clients.
                if let Some(hub) = &hub {
                    for (i, event_ms, device_id) in &valid {
                        hub.publish_reading_at(device_id, *event_ms, &reading_batch[*i].payload);
                    }
                }
                readings.commit_batch(&reading_batch)?;
                reading_batch.clear();
            }
            got = alerts.recv_batch(&mut alert_batch, BATCH), if alerts_open => {
                if got? == 0 {
                    alerts_open = false;
                    continue;
                }
                for m in &alert_batch {
                    match serde_json::from_slice::<Alert>(&m.payload) {
                        Ok(alert) => {
                            write(&store).record_alert(&alert);
                            if let Some(hub) = &hub {
                                hub.publish_alert(&alert.device_id, &m.payload);
                            }
                        }
                        Err(e) => tracing::warn!(error = %e, "unreadable alert on the alerts topic skipped"),
                    }
                }
                alerts.commit_batch(&alert_batch)?;
                alert_batch.clear();
            }
            _ = prune.tick() => write(&store).prune(now_ms()),
            _ = status.tick() => {
                if let Some(hub) = &hub {
                    publish_status_changes(&store, hub, now_ms());
                }
            }
        }
    }
    Ok(())
}

/// Sweeps the store for devices whose status changed (under the write lock: the sweep
/// remembers what it reported), then publishes the changes to the hub outside the lock.
fn publish_status_changes(store: &SharedStore, hub: &Hub, now_ms: i64) {
    let changes = write(store).status_changes(now_ms);
    for (device_id, status) in changes {
        hub.publish_status(&device_id, status, now_ms);
    }
}

/// The store for writing. A poisoned lock means a reader panicked mid-read; the data is intact.
fn write(store: &SharedStore) -> std::sync::RwLockWriteGuard<'_, Store> {
    store.write().unwrap_or_else(|e| e.into_inner())
}
