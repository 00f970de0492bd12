//! The wire protocol: client messages parsed, server frames written.
//!
//! Server frames are written by hand around the already-serialized payloads, so a reading is
//! embedded exactly as it came from the bus and never re-serialized.

use serde::Deserialize;

use super::{Frame, Kind};
use crate::store::DeviceStatus;

/// Most device ids one `subscribe` or `unsubscribe` may carry.
pub(crate) const MAX_IDS_PER_MESSAGE: usize = 10_000;
/// Largest `batch_ms` a client may ask for.
pub(crate) const MAX_BATCH_MS: u64 = 1000;
/// Smallest `batch_ms` other than 0 (off): a batch timer firing every millisecond per client
/// would cost more than the frames it saves.
pub(crate) const MIN_BATCH_MS: u64 = 10;

/// A message from a client, checked.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum ClientMessage {
    Subscribe(Vec<String>),
    SubscribeAll,
    Unsubscribe(Vec<String>),
    UnsubscribeAll,
    Ping,
    Resume {
        epoch: Option<String>,
        offset: u64,
    },
    Options {
        batch_ms: Option<u64>,
        conflate: Option<bool>,
    },
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Wire {
    Subscribe {
        device_ids: Vec<String>,
    },
    SubscribeAll,
    Unsubscribe {
        device_ids: Vec<String>,
    },
    UnsubscribeAll,
    Ping,
    Resume {
        // Any JSON value: an epoch this server never issued simply does not match.
        epoch: serde_json::Value,
        offset: u64,
    },
    Options {
        #[serde(default)]
        batch_ms: Option<u64>,
        #[serde(default)]
        conflate: Option<bool>,
    },
}

/// Parses one client text frame. The error is the message for the client's `error` reply.
pub(crate) fn parse(text: &str) -> Result<ClientMessage, String> {
    let wire: Wire = serde_json::from_str(text).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => format!("invalid message: {e}"),
        _ => format!("invalid JSON: {e}"),
    })?;
    Ok(match wire {
        Wire::Subscribe { device_ids } => ClientMessage::Subscribe(check_ids(device_ids)?),
        Wire::SubscribeAll => ClientMessage::SubscribeAll,
        Wire::Unsubscribe { device_ids } => ClientMessage::Unsubscribe(check_ids(device_ids)?),
        Wire::UnsubscribeAll => ClientMessage::UnsubscribeAll,
        Wire::Ping => ClientMessage::Ping,
        Wire::Resume { epoch, offset } => ClientMessage::Resume {
            epoch: match epoch {
                serde_json::Value::String(s) => Some(s),
                _ => None,
            },
            offset,
        },
        Wire::Options { batch_ms, conflate } => {
            if let Some(ms) =
                batch_ms.filter(|&ms| ms != 0 && !(MIN_BATCH_MS..=MAX_BATCH_MS).contains(&ms))
            {
                return Err(format!(
                    "batch_ms {ms} is out of range: 0 (off) or {MIN_BATCH_MS}..={MAX_BATCH_MS}"
                ));
            }
            ClientMessage::Options { batch_ms, conflate }
        }
    })
}

fn check_ids(ids: Vec<String>) -> Result<Vec<String>, String> {
    if ids.len() > MAX_IDS_PER_MESSAGE {
        return Err(format!(
            "{} device_ids in one message; at most {MAX_IDS_PER_MESSAGE}",
            ids.len()
        ));
    }
    if let Some(bad) = ids.iter().find(|id| !iiot_model::device_id_is_valid(id)) {
        let shown: String = bad.chars().take(70).collect();
        return Err(format!(
            "device_id {shown:?} must be 1-64 characters of [A-Za-z0-9_.:-]"
        ));
    }
    Ok(ids)
}

/// The payload of a `device_status` message: `{"device_id":…,"status":…,"timestamp":…}`.
pub(crate) fn status_payload(device_id: &str, status: DeviceStatus, timestamp_ms: i64) -> String {
    // Ids are checked upstream, but quoting costs nothing next to a broken frame.
    let id = serde_json::Value::from(device_id).to_string();
    let status = status.as_str();
    format!(r#"{{"device_id":{id},"status":"{status}","timestamp":{timestamp_ms}}}"#)
}

/// `{"type":"device_data"|"alert"|"device_status","epoch":…,"offset":…,"payload":<payload as is>}`.
pub(crate) fn stream_frame(kind: Kind, epoch: &str, offset: u64, payload: &str) -> String {
    let mut s = String::with_capacity(64 + epoch.len() + payload.len());
    s.push_str(r#"{"type":""#);
    s.push_str(kind.as_str());
    push_position(&mut s, epoch, offset);
    s.push_str(r#","payload":"#);
    s.push_str(payload);
    s.push('}');
    s
}

/// A message that is not from the stream: `{"type":kind,"epoch":…,"offset":…<extra>}`, where
/// `extra` is empty or starts with a comma.
pub(crate) fn notice(kind: &str, epoch: &str, offset: u64, extra: &str) -> String {
    let mut s = String::with_capacity(48 + kind.len() + epoch.len() + extra.len());
    s.push_str(r#"{"type":""#);
    s.push_str(kind);
    push_position(&mut s, epoch, offset);
    s.push_str(extra);
    s.push('}');
    s
}

/// An `error` notice; `message` is escaped.
pub(crate) fn error(epoch: &str, offset: u64, message: &str) -> String {
    let quoted = serde_json::Value::from(message).to_string();
    notice("error", epoch, offset, &format!(r#","message":{quoted}"#))
}

/// A `batch` of stream frames, in the order given; `last` is the offset of the last one and
/// `bytes` their total size.
pub(crate) fn batch<'a>(
    epoch: &str,
    last: u64,
    frames: impl Iterator<Item = &'a Frame>,
    bytes: usize,
) -> String {
    let mut s = String::with_capacity(64 + epoch.len() + bytes);
    s.push_str(r#"{"type":"batch"#);
    push_position(&mut s, epoch, last);
    s.push_str(r#","messages":["#);
    for (i, frame) in frames.enumerate() {
        if i > 0 {
            s.push(',');
        }
        s.push_str(&frame.text);
    }
    s.push_str("]}");
    s
}

fn push_position(s: &mut String, epoch: &str, offset: u64) {
    use std::fmt::Write;
    // The epoch is hex from `Hub::new`: nothing to escape. Writing to a String cannot fail.
    let _ = write!(s, r#"","epoch":"{epoch}","offset":{offset}"#);
}
