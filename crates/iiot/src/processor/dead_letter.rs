//! The dead-letter envelope published on `device-data-dlq`: the reason, where the message came
//! from, and the original bytes (bounded).

use iiot_model::Invalid;
use serde::Serialize;

/// Most bytes of the original payload kept in a dead letter, so one oversize message cannot make
/// an oversize dead letter.
pub const MAX_PAYLOAD_KEPT: usize = 4096;
/// Most bytes of the original key kept, in the envelope and as the dead letter's own key: a
/// producer's 450 KB key must not make a dead letter the broker refuses.
pub const MAX_KEY_KEPT: usize = 256;

/// The key a dead letter is published with: the original one, cut to [`MAX_KEY_KEPT`] bytes.
pub fn dead_letter_key(key: &[u8]) -> &[u8] {
    &key[..key.len().min(MAX_KEY_KEPT)]
}

/// A rejected message, as published on the dead-letter topic.
#[derive(Debug, Serialize)]
pub struct DeadLetter<'a> {
    /// Snake-case reason (`out_of_range`, `malformed_json`, …).
    pub reason: &'static str,
    /// What exactly was wrong.
    pub detail: &'a str,
    /// Topic the message was read from.
    pub source_topic: &'a str,
    /// Its partition.
    pub partition: i32,
    /// Its offset.
    pub offset: i64,
    /// Its key (the first [`MAX_KEY_KEPT`] bytes), if UTF-8.
    pub key: Option<&'a str>,
    /// Size of the original key in bytes.
    pub key_bytes: usize,
    /// When it was rejected, Unix ms.
    pub received_at: i64,
    /// Size of the original payload in bytes.
    pub payload_bytes: usize,
    /// Whether `payload`/`payload_hex` hold only the first [`MAX_PAYLOAD_KEPT`] bytes.
    pub payload_truncated: bool,
    /// The original payload when it is UTF-8.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payload: Option<&'a str>,
    /// The original payload in hex when it is not UTF-8.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payload_hex: Option<String>,
}

/// Where a rejected message came from.
#[derive(Debug, Clone, Copy)]
pub struct Origin<'a> {
    /// Topic.
    pub topic: &'a str,
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
    /// Key bytes.
    pub key: &'a [u8],
}

/// Serializes the dead letter for `payload` rejected with `invalid`.
pub fn encode(invalid: &Invalid, origin: Origin<'_>, payload: &[u8], now_ms: i64) -> Vec<u8> {
    let kept = &payload[..payload.len().min(MAX_PAYLOAD_KEPT)];
    let text = utf8_prefix(kept, payload.len());
    let letter = DeadLetter {
        reason: invalid.reason.as_str(),
        detail: &invalid.detail,
        source_topic: origin.topic,
        partition: origin.partition,
        offset: origin.offset,
        key: utf8_prefix(dead_letter_key(origin.key), origin.key.len()),
        key_bytes: origin.key.len(),
        received_at: now_ms,
        payload_bytes: payload.len(),
        payload_truncated: kept.len() < payload.len(),
        payload: text,
        payload_hex: match text {
            Some(_) => None,
            None => Some(kept.iter().map(|b| format!("{b:02x}")).collect()),
        },
    };
    // Serializing plain strings and numbers into a Vec cannot fail.
    serde_json::to_vec(&letter).unwrap_or_default()
}

/// `kept` (a prefix of something `whole` bytes long) as text. A cut may split a UTF-8
/// character: the valid prefix is kept rather than none.
fn utf8_prefix(kept: &[u8], whole: usize) -> Option<&str> {
    match std::str::from_utf8(kept) {
        Ok(s) => Some(s),
        Err(e) if e.error_len().is_none() && kept.len() < whole => {
            std::str::from_utf8(&kept[..e.valid_up_to()]).ok()
        }
        Err(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use iiot_model::InvalidReason;

    fn origin() -> Origin<'static> {
        Origin {
            topic: "device-data",
            partition: 3,
            offset: 17,
            key: b"device_001",
        }
    }

    #[test]
    fn utf8_payload_is_kept_as_text() {
        let inv = Invalid::new(InvalidReason::MalformedJson, "EOF while parsing");
        let v: serde_json::Value =
            serde_json::from_slice(&encode(&inv, origin(), b"{\"a\":", 5)).expect("json");
        assert_eq!(v["reason"], "malformed_json");
        assert_eq!(v["payload"], "{\"a\":");
        assert_eq!(v["key"], "device_001");
        assert_eq!(v["partition"], 3);
        assert_eq!(v["offset"], 17);
        assert!(v.get("payload_hex").is_none());
    }

    #[test]
    fn binary_payload_is_hex_and_large_payload_is_truncated() {
        let inv = Invalid::new(InvalidReason::MalformedJson, "x");
        let v: serde_json::Value =
            serde_json::from_slice(&encode(&inv, origin(), &[0xff, 0x00], 5)).expect("json");
        assert_eq!(v["payload_hex"], "ff00");
        let big = "温".repeat(10_000);
        let v: serde_json::Value =
            serde_json::from_slice(&encode(&inv, origin(), big.as_bytes(), 5)).expect("json");
        assert_eq!(v["payload_truncated"], true);
        assert_eq!(v["payload_bytes"], 30_000);
        assert!(v["payload"].as_str().expect("text kept").len() <= MAX_PAYLOAD_KEPT);
    }

    #[test]
    fn a_huge_key_is_cut_in_the_envelope_and_as_the_letters_key() {
        let key = "k".repeat(450_000);
        let o = Origin {
            key: key.as_bytes(),
            ..origin()
        };
        let inv = Invalid::new(InvalidReason::KeyMismatch, "x");
        let letter = encode(&inv, o, b"{}", 5);
        assert!(
            letter.len() < 2 * MAX_KEY_KEPT + 1024,
            "{} bytes",
            letter.len()
        );
        let v: serde_json::Value = serde_json::from_slice(&letter).expect("json");
        assert_eq!(v["key"].as_str().expect("text").len(), MAX_KEY_KEPT);
        assert_eq!(v["key_bytes"], 450_000);
        assert_eq!(dead_letter_key(key.as_bytes()).len(), MAX_KEY_KEPT);
    }
}
