//! The records of the alert-state topic: one per device, keyed by its id, holding its open
//! alerts (each with the time it was raised, and which assignment wrote the record) as JSON —
//! an empty payload once none is open — and, per partition, the marker that says the
//! partition was migrated from the alerts topic.
//!
//! The writer (`writer` on each open alert, see [`writer_tag`]) lets the owner of a partition
//! tell a record it wrote from one written by anybody else after it read the partition back
//! (a member that was dropped from the group and did not know yet): the owner writes its own
//! view again over those (`crate::processor::run`). Older readers ignore the field. The
//! claims ([`CLAIM_KEY`]) say who read a partition back last, and how far.

use bytes::Bytes;
use iiot_model::Alert;
use serde::{Deserialize, Serialize};

/// Key of the marker record written into an alert-state partition once the alerts topic was
/// folded for it: later assignments read only the alert-state topic. Not a device id (device
/// ids are validated to start with a letter or digit).
pub const MIGRATED_KEY: &[u8] = b"#alert-state-migrated";

/// Key of the claim a worker writes into each alert-state partition it is given, once it has
/// read the partition back ([`claim`]): who claims it, and where the partition ended when its
/// read back began. A claim whose read began past one's own claim is a successor's — the
/// group gave the partition to somebody after one — so records one writes there afterwards
/// are stale (`crate::processor::run`, [`crate::recovery::fold_state`]). Where the read
/// began, not where it ended: a member paused in the middle of its read back reads on past a
/// successor's claim when it resumes. Not a device id, like [`MIGRATED_KEY`].
pub const CLAIM_KEY: &[u8] = b"#claimed";

/// A claim ([`CLAIM_KEY`]) as it is written and read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claim {
    /// Who claims the partition ([`writer_tag`]).
    pub writer: String,
    /// The partition's end (the offset of the next record) when the claimer began reading it
    /// back; 0 if unknown (such a claim supersedes nobody).
    pub from: i64,
}

/// The payload of a claim.
pub fn claim(writer: &str, from: i64) -> Bytes {
    let claim = Claim {
        writer: writer.to_string(),
        from,
    };
    // Plain strings and numbers always serialize.
    Bytes::from(serde_json::to_vec(&claim).unwrap_or_default())
}

/// A claim's payload read back (`None`: not a claim).
pub fn decode_claim(payload: &[u8]) -> Option<Claim> {
    serde_json::from_slice(payload).ok()
}

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
    #[serde(skip_serializing_if = "Option::is_none")]
    writer: Option<&'a str>,
}

#[derive(Deserialize)]
struct Open {
    raised_at: i64,
    alert: Alert,
    #[serde(default)]
    writer: Option<String>,
}

/// Who wrote a record: one assignment of one partition to one worker (`worker`, random per
/// worker; `epoch`, the assignment's, [`iiot_transport::Ownership`]).
pub fn writer_tag(worker: u64, epoch: u64) -> String {
    format!("{worker:016x}.{epoch}")
}

/// The payload of a device's record: its open alerts (each marked with `writer`), or empty
/// when none is open.
pub fn encode(open: &[(Alert, i64)], writer: Option<&str>) -> Bytes {
    if open.is_empty() {
        return Bytes::new();
    }
    let refs: Vec<OpenRef<'_>> = open
        .iter()
        .map(|(alert, raised_at)| OpenRef {
            raised_at: *raised_at,
            alert,
            writer,
        })
        .collect();
    // A list of plain structs of strings and numbers always serializes.
    Bytes::from(serde_json::to_vec(&refs).unwrap_or_default())
}

/// The open alerts a device's record holds (none for an empty payload).
pub fn decode(payload: &[u8]) -> Result<Vec<(Alert, i64)>, serde_json::Error> {
    decode_written(payload).map(|(open, _)| open)
}

/// A device's open alerts, each with the time it was raised, and who wrote the record they
/// came in (`None`: an empty payload, or a record from before writers were marked).
pub type Written = (Vec<(Alert, i64)>, Option<String>);

/// What a record `writer` wrote holds in its bytes, for [`written_by`] (a writer tag is hex
/// digits, a dot and digits: never escaped in JSON).
pub fn writer_mark(writer: &str) -> Vec<u8> {
    format!("\"writer\":\"{writer}\"").into_bytes()
}

/// Whether the record `payload` was written by the writer of `mark` ([`writer_mark`]), told
/// from its bytes without decoding the alerts.
pub fn written_by(payload: &[u8], mark: &[u8]) -> bool {
    payload.windows(mark.len()).any(|w| w == mark)
}

/// The open alerts a device's record holds, and who wrote it.
pub fn decode_written(payload: &[u8]) -> Result<Written, serde_json::Error> {
    if payload.is_empty() {
        return Ok((Vec::new(), None));
    }
    let open: Vec<Open> = serde_json::from_slice(payload)?;
    let writer = open.first().and_then(|o| o.writer.clone());
    Ok((
        open.into_iter().map(|o| (o.alert, o.raised_at)).collect(),
        writer,
    ))
}

/// The marker's payload: when the migration happened (for whoever reads the topic by hand).
pub fn migrated_marker(now_ms: i64) -> Bytes {
    Bytes::from(format!("{{\"migrated_at\":{now_ms}}}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use iiot_model::AlertStatus;

    /// An open `temperature_high` alert `a1` of device_001.
    fn hot() -> Alert {
        serde_json::from_value(serde_json::json!({
            "alert_id": "a1", "device_id": "device_001", "alert_type": "temperature_high",
            "severity": "high", "message": "hot", "timestamp": 20, "status": "active",
            "threshold": {"parameter": "temperature", "operator": ">", "value": 80.0},
            "current_value": 85.0
        }))
        .expect("alert")
    }

    #[test]
    fn a_record_round_trips_and_none_open_is_empty() {
        let mut alert = hot();
        alert.status = AlertStatus::Acknowledged;
        alert.acknowledged_by = Some("ops".into());
        let payload = encode(&[(alert.clone(), 10)], None);
        let back = decode(&payload).expect("decodes");
        assert_eq!(back.len(), 1);
        assert_eq!(back[0].0.status, AlertStatus::Acknowledged);
        assert_eq!(back[0].0.acknowledged_by.as_deref(), Some("ops"));
        assert_eq!(back[0].1, 10);
        assert!(encode(&[], Some("w")).is_empty());
        assert!(decode(b"").expect("none").is_empty());
        assert!(decode(b"{not json").is_err());
    }

    /// The writer rides on each open alert: a reader from before writers were marked (the
    /// same alert struct without the field) still reads the record.
    #[test]
    fn a_record_says_who_wrote_it_and_older_readers_still_read_it() {
        let alert = hot();
        let tag = writer_tag(0xabc, 7);
        assert_eq!(tag, "0000000000000abc.7");
        let payload = encode(&[(alert.clone(), 10)], Some(&tag));
        let (open, writer) = decode_written(&payload).expect("decodes");
        assert_eq!(writer.as_deref(), Some(tag.as_str()));
        assert!(written_by(&payload, &writer_mark(&tag)));
        assert!(!written_by(&payload, &writer_mark(&writer_tag(0xabc, 8))));
        assert_eq!(open[0].0.alert_id, "a1");

        #[derive(Deserialize)]
        struct OlderOpen {
            raised_at: i64,
            #[allow(dead_code)]
            alert: Alert,
        }
        let older: Vec<OlderOpen> = serde_json::from_slice(&payload).expect("older reader");
        assert_eq!(older[0].raised_at, 10);
        let unmarked = encode(&[(alert, 10)], None);
        assert_eq!(decode_written(&unmarked).expect("decodes").1, None);
    }

    #[test]
    fn a_claim_round_trips() {
        let back = decode_claim(&claim("0000000000000abc.7", 42)).expect("a claim");
        assert_eq!(
            (back.writer.as_str(), back.from),
            ("0000000000000abc.7", 42)
        );
        assert_eq!(decode_claim(b"[]"), None);
    }
}
