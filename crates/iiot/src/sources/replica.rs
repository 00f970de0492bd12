//! The serve side's source on Kafka: two subscriptions that each see everything —
//! `device-data` (every reading) and `alerts` (every status change) — fed into the
//! [`Live`] sink.
//!
//! The processors of the group judged each reading already, but in other processes. This side
//! judges it again, against the same clock — the broker's timestamp of the message — so it keeps
//! exactly what the processor accepted (except `device_limit` and `duplicate_seq`, which depend
//! on a processor's state; the store bounds its own devices and ignores repeats). In one process
//! on the bus there is no replica: the processors hand their verdicts to the live sink directly.

use iiot_model::{Alert, Limits, decode_text};
use iiot_transport::{Message, Subscriber, TransportError};
use tokio_util::sync::CancellationToken;

use crate::now_ms;
use crate::processor::keyed_right;
use crate::sinks::live::Live;
use crate::sinks::{Accepted, AlertChange, Verdicts};

/// Largest batch taken from a subscription at once.
const BATCH: usize = 1024;

/// Feeds `live` from the two subscriptions until both end (their topics closed and drained) or
/// `stop` is cancelled.
pub async fn feed(
    live: Live,
    mut readings: Box<dyn Subscriber>,
    mut alerts: Box<dyn Subscriber>,
    limits: Limits,
    stop: CancellationToken,
) -> Result<(), TransportError> {
    let mut reading_batch: Vec<Message> = Vec::with_capacity(BATCH);
    let mut alert_batch: Vec<Message> = Vec::with_capacity(BATCH);
    let (mut readings_open, mut alerts_open) = (true, true);
    while readings_open || alerts_open {
        tokio::select! {
            _ = stop.cancelled() => break,
            got = readings.recv_batch(&mut reading_batch, BATCH), if readings_open => {
                if got? == 0 {
                    readings_open = false;
                    continue;
                }
                live.apply(&judge_readings(&reading_batch, &limits));
                readings.commit_batch(&reading_batch)?;
                reading_batch.clear();
            }
            got = alerts.recv_batch(&mut alert_batch, BATCH), if alerts_open => {
                if got? == 0 {
                    alerts_open = false;
                    continue;
                }
                live.apply(&read_alerts(&alert_batch));
                alerts.commit_batch(&alert_batch)?;
                alert_batch.clear();
            }
        }
    }
    Ok(())
}

/// The valid readings of `batch`, each judged at its broker timestamp (what the processor
/// judged it at); what the processor dead-letters is skipped: invalid payloads, and records
/// with a header that is not text (`bad_header`) or keyed by another device (`key_mismatch`).
fn judge_readings<'a>(batch: &'a [Message], limits: &Limits) -> Verdicts<'a> {
    let now = now_ms();
    let mut verdicts = Verdicts::empty(now);
    for message in batch {
        if message.bad_header.is_some() {
            continue;
        }
        let Ok((reading, text)) = decode_text(&message.payload, message.judged_at(now), limits)
        else {
            continue;
        };
        if keyed_right(&message.key, &reading.device_id) {
            verdicts.accepted.push(Accepted {
                message,
                reading,
                text,
            });
        }
    }
    verdicts
}

/// The alert changes of `batch`; an unreadable one is logged and skipped.
fn read_alerts(batch: &[Message]) -> Verdicts<'_> {
    let mut verdicts = Verdicts::empty(now_ms());
    for m in batch {
        match serde_json::from_slice::<Alert>(&m.payload) {
            Ok(alert) => verdicts.alerts.push(AlertChange {
                alert,
                json: m.payload.clone(),
            }),
            Err(e) => tracing::warn!(error = %e, "unreadable alert on the alerts topic skipped"),
        }
    }
    verdicts
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use bytes::Bytes;

    use super::*;
    use crate::test_support::reading;

    fn message(key: &str, device: &str, bad_header: Option<&str>) -> Message {
        let now = now_ms();
        Message {
            topic: Arc::from("device-data"),
            partition: 0,
            offset: 0,
            key: Bytes::copy_from_slice(key.as_bytes()),
            payload: Bytes::from(reading(device, 1, now, 21.5)),
            timestamp_ms: Some(now),
            bad_header: bad_header.map(Box::from),
        }
    }

    /// Issue 12: `serve` keeps exactly what the processors accepted — a reading the processors
    /// dead-letter for its key or its headers must not reach the live store either.
    #[test]
    fn readings_the_processors_dead_letter_for_their_key_or_headers_are_skipped() {
        let batch = [
            message(
                "device_001",
                "device_001",
                Some("header \"x\" is not UTF-8"),
            ),
            message("device_999", "device_002", None),
            message("device_003", "device_003", None),
            message("", "device_004", None),
        ];
        let verdicts = judge_readings(&batch, &Limits::default());
        let kept: Vec<_> = verdicts
            .accepted
            .iter()
            .map(|a| &*a.reading.device_id)
            .collect();
        assert_eq!(kept, ["device_003", "device_004"]);
    }
}
