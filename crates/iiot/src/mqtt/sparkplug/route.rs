//! Where the MQTT source sends what [`Sparkplug::decode`](super::Sparkplug::decode) made of a
//! message: readings and offline notices onto the input topic, keyed by device id; a dead
//! letter onto the dead-letter topic with the normal envelope (`partition` and `offset` -1:
//! it never reached the input topic; the raw protobuf as the payload).

use bytes::Bytes;
use iiot_model::InvalidReason;

use super::{Decoded, Output};
use crate::config::Config;
use crate::processor::dead_letter::{self, Origin};

/// One publication: `(topic, key, payload)`.
pub type Publication = (String, Vec<u8>, Bytes);

/// The topic filters of `config`: `MQTT_TOPICS`, or with `MQTT_PAYLOAD=sparkplug` and
/// `MQTT_TOPICS` at its JSON default, [`super::DEFAULT_TOPICS`].
pub fn topic_filters(config: &Config) -> Vec<String> {
    let filters = config.mqtt.topic_filters();
    if config.sparkplug.enabled() && filters == ["iiot/devices/+/telemetry"] {
        return super::DEFAULT_TOPICS.split(',').map(String::from).collect();
    }
    filters
}

/// The publications of `decoded` (a message on MQTT topic `source`, payload `raw`), and the
/// reason if it was dead-lettered.
pub fn publications(
    decoded: Decoded,
    input: &str,
    dlq: &str,
    source: &str,
    raw: &Bytes,
    now_ms: i64,
) -> (Vec<Publication>, Option<InvalidReason>) {
    let mut reason = None;
    let publications = decoded
        .outputs
        .into_iter()
        .map(|output| match output {
            Output::Reading { device_id, payload } | Output::Offline { device_id, payload } => (
                input.to_string(),
                device_id.into_bytes(),
                Bytes::from(payload),
            ),
            Output::DeadLetter(invalid) => {
                reason = Some(invalid.reason);
                let origin = Origin {
                    topic: source,
                    partition: -1,
                    offset: -1,
                    key: b"",
                };
                let letter = dead_letter::encode(&invalid, origin, raw, now_ms);
                (
                    dlq.to_string(),
                    source.as_bytes().to_vec(),
                    Bytes::from(letter),
                )
            }
        })
        .collect();
    (publications, reason)
}
