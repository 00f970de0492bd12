//! The records of the alert-state topic: one per device, keyed by its id, holding its open
//! alerts (each with the time it was raised) as JSON — an empty payload once none is open —
//! and, per partition, the marker that says the partition was migrated from the alerts topic.

use bytes::Bytes;
use iiot_model::Alert;
use serde::{Deserialize, Serialize};

/// Key of the marker record written into an alert-state partition once the alerts topic was
/// folded for it: later assignments read only the alert-state topic. Not a device id (device
/// ids are validated to start with a letter or digit).
pub const MIGRATED_KEY: &[u8] = b"#alert-state-migrated";

/// Key prefix of the migration's copies of a device's folded alerts (`#migrated:<device_id>`),
/// one in every partition: a copy is not the device's own record (which only its owner writes,
/// under the device id), so a processor can tell the two apart.
pub const COPY_PREFIX: &str = "#migrated:";

/// The key of the migration's copy for `device`.
pub fn copy_key(device: &str) -> String {
    format!("{COPY_PREFIX}{device}")
}

/// One open alert as the record holds it.
#[derive(Serialize)]
struct OpenRef<'a> {
    raised_at: i64,
    alert: &'a Alert,
}

#[derive(Deserialize)]
struct Open {
    raised_at: i64,
    alert: Alert,
}

/// The payload of a device's record: its open alerts, or empty when none is open.
pub fn encode(open: &[(Alert, i64)]) -> Bytes {
    if open.is_empty() {
        return Bytes::new();
    }
    let refs: Vec<OpenRef<'_>> = open
        .iter()
        .map(|(alert, raised_at)| OpenRef {
            raised_at: *raised_at,
            alert,
        })
        .collect();
    // A list of plain structs of strings and numbers always serializes.
    Bytes::from(serde_json::to_vec(&refs).unwrap_or_default())
}

/// The open alerts a device's record holds (none for an empty payload).
pub fn decode(payload: &[u8]) -> Result<Vec<(Alert, i64)>, serde_json::Error> {
    if payload.is_empty() {
        return Ok(Vec::new());
    }
    let open: Vec<Open> = serde_json::from_slice(payload)?;
    Ok(open.into_iter().map(|o| (o.alert, o.raised_at)).collect())
}

/// The marker's payload: when the migration happened (for whoever reads the topic by hand).
pub fn migrated_marker(now_ms: i64) -> Bytes {
    Bytes::from(format!("{{\"migrated_at\":{now_ms}}}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use iiot_model::AlertStatus;

    #[test]
    fn a_record_round_trips_and_none_open_is_empty() {
        let alert: Alert = serde_json::from_value(serde_json::json!({
            "alert_id": "a1", "device_id": "device_001", "alert_type": "temperature_high",
            "severity": "high", "message": "hot", "timestamp": 20, "status": "acknowledged",
            "threshold": {"parameter": "temperature", "operator": ">", "value": 80.0},
            "current_value": 85.0, "acknowledged_by": "ops"
        }))
        .expect("alert");
        let payload = encode(&[(alert.clone(), 10)]);
        let back = decode(&payload).expect("decodes");
        assert_eq!(back.len(), 1);
        assert_eq!(back[0].0.status, AlertStatus::Acknowledged);
        assert_eq!(back[0].0.acknowledged_by.as_deref(), Some("ops"));
        assert_eq!(back[0].1, 10);
        assert!(encode(&[]).is_empty());
        assert!(decode(b"").expect("none").is_empty());
        assert!(decode(b"{not json").is_err());
    }
}
