//! The offline notice: a message on the input topic, beside the readings, saying a device went
//! offline now (a Sparkplug B NDEATH or DDEATH, see [`crate::mqtt::sparkplug`]). The
//! processor raises the device's offline alert at once instead of waiting for its silence to
//! exceed the offline limit.
//!
//! `{"device_offline":{"device_id":"…","timestamp":…,"cause":"DDEATH"}}`, keyed by the device
//! id like its readings (same partition, same order). Readers that only know readings (the
//! serve side's replica) skip it as unreadable; the processor recognises it by its first bytes
//! before decoding anything, so readings pay one prefix comparison.

use serde::{Deserialize, Serialize};

/// How every offline notice starts.
const PREFIX: &[u8] = b"{\"device_offline\":";

/// A device that went offline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OfflineNotice {
    /// The device.
    pub device_id: String,
    /// When it went offline (Unix ms, the sender's clock).
    pub timestamp: i64,
    /// What said so, e.g. `DDEATH` or `NDEATH`, for the alert message.
    pub cause: String,
}

#[derive(Serialize, Deserialize)]
struct Envelope {
    device_offline: OfflineNotice,
}

impl OfflineNotice {
    /// The notice as published on the input topic.
    pub fn encode(&self) -> Vec<u8> {
        #[derive(Serialize)]
        struct Ref<'a> {
            device_offline: &'a OfflineNotice,
        }
        // Serialising plain strings and integers into a Vec cannot fail.
        serde_json::to_vec(&Ref {
            device_offline: self,
        })
        .unwrap_or_default()
    }

    /// The notice `payload` is, if it is one.
    pub fn parse(payload: &[u8]) -> Option<OfflineNotice> {
        if !payload.starts_with(PREFIX) {
            return None;
        }
        serde_json::from_slice::<Envelope>(payload)
            .ok()
            .map(|e| e.device_offline)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_notice_reads_back_and_a_reading_is_no_notice() {
        let notice = OfflineNotice {
            device_id: "plc1".into(),
            timestamp: 1_700_000_000_000,
            cause: "DDEATH".into(),
        };
        assert_eq!(OfflineNotice::parse(&notice.encode()), Some(notice));
        assert_eq!(OfflineNotice::parse(br#"{"device_id":"d1","seq":1}"#), None);
        assert_eq!(OfflineNotice::parse(br#"{"device_offline":{}}"#), None);
    }
}
