//! The Kafka settings (`KAFKA_*`): what the roles pass to librdkafka, which properties
//! `KAFKA_PROPERTIES` may not touch, and turning TLS verification off only on purpose.

use std::time::Duration;

/// Kafka connection and topics.
#[derive(Debug, Clone, PartialEq)]
pub struct KafkaSettings {
    /// `KAFKA_BROKERS`: `host:port` list; `None` runs the embedded bus instead of Kafka.
    pub brokers: Option<String>,
    /// `KAFKA_TOPIC_DEVICE_DATA`: readings from devices (`device-data`).
    pub topic_device_data: String,
    /// `KAFKA_TOPIC_ALERTS`: alert lifecycle events (`alerts`).
    pub topic_alerts: String,
    /// `KAFKA_TOPIC_DLQ`: messages that failed validation (`device-data-dlq`).
    pub topic_dlq: String,
    /// `KAFKA_TOPIC_COMMANDS`: acknowledgements from `serve` instances to the processors
    /// (`alert-commands`, one partition).
    pub topic_commands: String,
    /// `KAFKA_TOPIC_RULES`: the alert rules made over `/api/rules`, as whole snapshots
    /// (`alert-rules`, one partition, compacted); every processor and serve follows it.
    pub topic_rules: String,
    /// `KAFKA_TOPIC_SILENCES`: the silences, as whole snapshots (`alert-silences`, one
    /// partition, compacted); every serve follows it.
    pub topic_silences: String,
    /// `KAFKA_TOPIC_NOTIFY_LOG`: which notifications were delivered (`notify-log`, as many
    /// partitions as the alerts topic: the record of a change read from alerts partition `p`
    /// is in its partition `p`).
    pub topic_notify_log: String,
    /// `KAFKA_TOPIC_ALERT_STATE`: each device's open alerts, keyed by device id (`alert-state`,
    /// compacted, exactly as many partitions as the readings topic: the state of a device
    /// read from `device-data` partition `p` is in its partition `p`); a member given
    /// partitions reads back exactly those.
    pub topic_alert_state: String,
    /// `KAFKA_ASSIGNMENT_STRATEGY`: how the processors' group splits partitions — `eager`
    /// (every rebalance revokes all, librdkafka's `range,roundrobin`) or `cooperative-sticky`
    /// (only the partitions that move are revoked; the others keep their state).
    pub assignment_strategy: String,
    /// `KAFKA_HEADERS`: `text` (each header of a consumed record must be UTF-8, else the
    /// reading is dead-lettered `bad_header`) or `any` (headers are not looked at).
    pub headers: String,
    /// `KAFKA_GROUP_ID`: consumer group of the processor (`iot-consumer-group`).
    pub group_id: String,
    /// `KAFKA_GROUP_NOTIFY`: consumer group of the notifiers on the alerts topic
    /// (`iiot-notify`).
    pub group_notify: String,
    /// `KAFKA_SECURITY_PROTOCOL`: `plaintext`, `ssl`, `sasl_plaintext` or `sasl_ssl`.
    pub security_protocol: Option<String>,
    /// `KAFKA_SASL_MECHANISM`: `PLAIN`, `SCRAM-SHA-256` or `SCRAM-SHA-512`.
    pub sasl_mechanism: Option<String>,
    /// `KAFKA_SASL_USERNAME`.
    pub sasl_username: Option<String>,
    /// `KAFKA_SASL_PASSWORD` (or the file `KAFKA_SASL_PASSWORD_FILE` names); shown as `***` by
    /// [`super::Config::redacted`].
    pub sasl_password: Option<String>,
    /// `KAFKA_SSL_CA_LOCATION`: CA certificates (PEM) that verify the brokers.
    pub ssl_ca_location: Option<String>,
    /// `KAFKA_SSL_CERTIFICATE_LOCATION`: the client certificate, for mutual TLS.
    pub ssl_certificate_location: Option<String>,
    /// `KAFKA_SSL_KEY_LOCATION`: the client's private key, for mutual TLS.
    pub ssl_key_location: Option<String>,
    /// `KAFKA_SSL_KEY_PASSWORD` (or `KAFKA_SSL_KEY_PASSWORD_FILE`); shown as `***`.
    pub ssl_key_password: Option<String>,
    /// `KAFKA_PROPERTIES`: further librdkafka properties, `name=value;…`, applied last.
    pub properties: Option<String>,
    /// `KAFKA_ALLOW_INSECURE_TLS`: lets `KAFKA_PROPERTIES` turn off certificate verification.
    pub allow_insecure_tls: bool,
    /// `KAFKA_CLIENT_ID` (`iiot`).
    pub client_id: String,
    /// `KAFKA_COMPRESSION`: `none`, `gzip`, `snappy`, `lz4` or `zstd` (`lz4`).
    pub compression: String,
    /// `KAFKA_LINGER`: how long the producer waits to fill a batch (5 ms).
    pub linger: Duration,
    /// `KAFKA_BATCH_SIZE`: largest batch per partition, in bytes (1000000).
    pub batch_size: usize,
    /// `KAFKA_QUEUE_MAX_MESSAGES`: messages waiting for delivery before publishers wait
    /// (100000).
    pub queue_max_messages: usize,
    /// `KAFKA_PARTITIONS_DEVICE_DATA`: partitions of a missing readings topic when created (10).
    pub partitions_device_data: i32,
    /// `KAFKA_PARTITIONS_ALERTS` (3).
    pub partitions_alerts: i32,
    /// `KAFKA_PARTITIONS_DLQ` (1).
    pub partitions_dlq: i32,
    /// `KAFKA_REPLICATION_FACTOR` of topics created at start-up (1).
    pub replication_factor: i32,
}

/// librdkafka properties, and the values of theirs, that turn off TLS certificate verification
/// (librdkafka reads `false`, `f`, `0`, `no` and `off` as false).
const INSECURE_TLS: &[(&str, &[&str])] = &[
    (
        "enable.ssl.certificate.verification",
        &["false", "f", "0", "no", "off"],
    ),
    ("ssl.endpoint.identification.algorithm", &["none"]),
];

/// librdkafka properties `KAFKA_PROPERTIES` may not set: the delivery guarantees rest on them
/// (offsets stored only after outputs are delivered; an idempotent producer with acks=all).
pub const MANAGED_PROPERTIES: &[&str] = &[
    "enable.auto.offset.store",
    "enable.auto.commit",
    "group.id",
    "enable.idempotence",
    "acks",
    "request.required.acks",
    "enable.partition.eof",
];

impl KafkaSettings {
    /// `KAFKA_PROPERTIES` as `(name, value)` pairs (validated when the config was loaded).
    pub fn extra_properties(&self) -> Vec<(String, String)> {
        self.properties
            .as_deref()
            .and_then(parse_properties)
            .unwrap_or_default()
    }

    /// Every librdkafka property the settings imply: security first, then `KAFKA_PROPERTIES`
    /// (so an explicit property wins).
    pub fn client_properties(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let mut put = |name: &str, value: &Option<String>| {
            if let Some(v) = value {
                out.push((name.to_string(), v.clone()));
            }
        };
        put("security.protocol", &self.security_protocol);
        put("sasl.mechanism", &self.sasl_mechanism);
        put("sasl.username", &self.sasl_username);
        put("sasl.password", &self.sasl_password);
        put("ssl.ca.location", &self.ssl_ca_location);
        put("ssl.certificate.location", &self.ssl_certificate_location);
        put("ssl.key.location", &self.ssl_key_location);
        put("ssl.key.password", &self.ssl_key_password);
        out.extend(self.extra_properties());
        out
    }

    /// The property of `KAFKA_PROPERTIES` that turns off certificate verification, if any.
    pub fn insecure_tls_property(&self) -> Option<(String, String)> {
        self.extra_properties().into_iter().find(|(k, v)| {
            INSECURE_TLS
                .iter()
                .any(|(name, bad)| k == name && bad.iter().any(|b| v.eq_ignore_ascii_case(b)))
        })
    }

    /// The property of `KAFKA_PROPERTIES` that iiot manages itself, if any
    /// ([`MANAGED_PROPERTIES`]).
    pub fn managed_property(&self) -> Option<(String, String)> {
        self.extra_properties()
            .into_iter()
            .find(|(k, _)| MANAGED_PROPERTIES.contains(&k.as_str()))
    }
}

/// Parses `name=value;name=value` (blank entries ignored; names are librdkafka property names:
/// lower-case letters, digits, `.` and `_`). `None` if an entry is malformed.
pub(crate) fn parse_properties(text: &str) -> Option<Vec<(String, String)>> {
    let mut out = Vec::new();
    for entry in text.split(';').map(str::trim).filter(|e| !e.is_empty()) {
        let (name, value) = entry.split_once('=')?;
        let name = name.trim();
        let ok = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._".contains(&b));
        if !ok {
            return None;
        }
        out.push((name.to_string(), value.trim().to_string()));
    }
    Some(out)
}
