//! The alerts topic folded by `alert_id`: each alert's latest status, and the ones not
//! resolved, by device. What a deployment without alert-state records migrates from (once per
//! partition, [`super::restore`]), and what the serve side's alert log and the history replay
//! use too.

use std::time::Duration;

use hashbrown::HashMap;
use iiot_model::{Alert, AlertStatus};
use iiot_transport::{Message, Start, TransportError};

use crate::backend::Backend;
use crate::processor::RecoveredAlerts;

/// The topic counts as read to its end once nothing arrived for this long.
const QUIET: Duration = Duration::from_secs(2);
/// Reading back never takes longer than this; what came later is not recovered.
const LIMIT: Duration = Duration::from_secs(60);

/// Reads the whole alerts topic `topic` from its start until it goes quiet and returns the
/// alerts still open, by device. A backend that keeps no history (the embedded bus) has nothing to read back.
pub async fn open_alerts(
    backend: &Backend,
    topic: &str,
) -> Result<RecoveredAlerts, TransportError> {
    Ok(open_alerts_to_end(backend, topic).await?.0)
}

/// As [`open_alerts`], and whether the topic was read to its end (false: the read hit its
/// time limit, and what came later is missing).
pub async fn open_alerts_to_end(
    backend: &Backend,
    topic: &str,
) -> Result<(RecoveredAlerts, bool), TransportError> {
    if !backend.keeps_history() {
        return Ok((RecoveredAlerts::new(), true));
    }
    let mut subscriber = backend.subscribe_all(topic, Start::Beginning).await?;
    let mut latest: HashMap<String, (Alert, i64)> = HashMap::new();
    let mut batch: Vec<Message> = Vec::new();
    let deadline = tokio::time::Instant::now() + LIMIT;
    let mut read = 0usize;
    let mut complete = false;
    while tokio::time::Instant::now() < deadline {
        batch.clear();
        match tokio::time::timeout(QUIET, subscriber.recv_batch(&mut batch, 1024)).await {
            Err(_) | Ok(Ok(0)) => {
                complete = true;
                break;
            }
            Ok(Err(e)) => return Err(e),
            Ok(Ok(_)) => {}
        }
        read += batch.len();
        for m in &batch {
            if let Ok(alert) = serde_json::from_slice::<Alert>(&m.payload) {
                fold(&mut latest, alert);
            }
        }
    }
    let by_device = open_by_device(latest.into_values());
    let open: usize = by_device.values().map(Vec::len).sum();
    tracing::info!(
        read,
        open,
        devices = by_device.len(),
        complete,
        "open alerts read back from {topic} (the whole topic)"
    );
    Ok((by_device, complete))
}

/// The alerts of `latest` (each with the time it was first raised) that are not resolved, by
/// device.
pub(crate) fn open_by_device(latest: impl IntoIterator<Item = (Alert, i64)>) -> RecoveredAlerts {
    let mut by_device = RecoveredAlerts::new();
    for (alert, raised_at) in latest {
        if alert.status != AlertStatus::Resolved {
            by_device
                .entry(alert.device_id.clone())
                .or_default()
                .push((alert, raised_at));
        }
    }
    by_device
}

/// Keeps, per alert id, the latest status change and the time the alert was first raised.
pub(crate) fn fold(latest: &mut HashMap<String, (Alert, i64)>, alert: Alert) {
    match latest.get_mut(&alert.alert_id) {
        None => {
            let raised_at = alert.timestamp;
            latest.insert(alert.alert_id.clone(), (alert, raised_at));
        }
        Some((known, raised_at)) => {
            *raised_at = (*raised_at).min(alert.timestamp);
            // A resolved alert stays resolved; otherwise the newer change wins.
            if known.status != AlertStatus::Resolved && alert.timestamp >= known.timestamp {
                *known = alert;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(id: &str, status: AlertStatus, ts: i64) -> Alert {
        let mut a: Alert = serde_json::from_value(serde_json::json!({
            "alert_id": id, "device_id": "device_001", "alert_type": "temperature_high",
            "severity": "high", "message": "hot", "timestamp": ts, "status": "active",
            "threshold": {"parameter": "temperature", "operator": ">", "value": 80.0},
            "current_value": 85.0
        }))
        .expect("alert");
        a.status = status;
        a
    }

    #[test]
    fn the_latest_change_wins_and_resolved_stays_resolved() {
        let mut latest = HashMap::new();
        fold(&mut latest, change("a", AlertStatus::Active, 10));
        fold(&mut latest, change("a", AlertStatus::Acknowledged, 20));
        fold(&mut latest, change("b", AlertStatus::Active, 5));
        fold(&mut latest, change("b", AlertStatus::Resolved, 30));
        // A redelivered older change (at-least-once) does not reopen anything.
        fold(&mut latest, change("b", AlertStatus::Active, 5));
        fold(&mut latest, change("a", AlertStatus::Active, 10));
        assert_eq!(latest["a"].0.status, AlertStatus::Acknowledged);
        assert_eq!(latest["a"].1, 10, "raised at the first change");
        assert_eq!(latest["b"].0.status, AlertStatus::Resolved);
    }
}
