//! Settings of the Kafka backend and how they map onto librdkafka properties.
//!
//! This module owns every librdkafka property the crate sets; the clients only call the
//! `*_config` builders. [`KafkaSettings::properties`] are applied last to every client, so an
//! operator can override anything (security, timeouts, tuning) without a code change.

use std::time::Duration;

use iiot_transport::TransportError;
use rdkafka::ClientConfig;

/// Compression codecs the producer accepts ([`ProducerSettings::compression`]).
pub const COMPRESSIONS: [&str; 5] = ["none", "gzip", "snappy", "lz4", "zstd"];

/// Longest a fetch waits for data, in milliseconds (librdkafka's default is 500). A broker
/// answers as soon as data arrives anyway; tansu waits the full time, which put ~400 ms into
/// event → processed latency at 20,000 readings/s (p50 416 ms → 43 ms at 20 ms, measured with
/// `iiot bench --kafka-brokers … --devices 20000 --interval 1s`).
const FETCH_WAIT_MAX_MS: &str = "20";

/// How often librdkafka reports statistics (batches sent, consumer lag), in milliseconds.
const STATISTICS_INTERVAL_MS: &str = "1000";

/// How the producer batches, compresses and acknowledges.
#[derive(Debug, Clone, PartialEq)]
pub struct ProducerSettings {
    /// Compression codec: one of [`COMPRESSIONS`] (`compression.codec`).
    pub compression: String,
    /// How long a batch waits for more messages before it is sent (`linger.ms`).
    pub linger_ms: u64,
    /// Upper bound of one batch, in bytes (`batch.size`).
    pub batch_size_bytes: usize,
    /// Upper bound of one batch, in messages (`batch.num.messages`).
    pub batch_num_messages: usize,
    /// Bound on messages queued or in flight in the producer
    /// (`queue.buffering.max.messages`); a full queue makes `publish` wait.
    pub queue_max_messages: usize,
    /// How long a message may take to be acknowledged, retries included, before its delivery
    /// fails (`delivery.timeout.ms`).
    pub delivery_timeout_ms: u64,
    /// Acknowledgements required from the broker: `all` (or `-1`), `1` or `0` (`acks`).
    pub acks: String,
    /// Idempotent producer (`enable.idempotence`): retries never duplicate or reorder
    /// messages. Requires `acks = all`.
    pub idempotence: bool,
}

impl Default for ProducerSettings {
    fn default() -> Self {
        ProducerSettings {
            compression: "lz4".to_string(),
            linger_ms: 5,
            batch_size_bytes: 1_000_000,
            batch_num_messages: 10_000,
            queue_max_messages: 100_000,
            delivery_timeout_ms: 30_000,
            acks: "all".to_string(),
            idempotence: true,
        }
    }
}

/// Everything the Kafka backend needs to reach its brokers.
#[derive(Debug, Clone, PartialEq)]
pub struct KafkaSettings {
    /// Bootstrap brokers, comma-separated `host:port` (`bootstrap.servers`).
    pub brokers: String,
    /// Client id the brokers see in their logs and quotas (`client.id`).
    pub client_id: String,
    /// Extra librdkafka properties (`security.protocol`, `sasl.*`, `ssl.*`, anything), applied
    /// last to every client, so they override the crate's own choices.
    pub properties: Vec<(String, String)>,
    /// Producer batching, compression and acknowledgements.
    pub producer: ProducerSettings,
    /// Broker errors (unreachable, disconnected) are logged at most once per interval.
    pub reconnect_log_interval: Duration,
    /// How consumer groups split partitions on a rebalance (`partition.assignment.strategy`).
    pub assignment: Assignment,
    /// How consumed records' headers are taken.
    pub headers: Headers,
}

/// How a consumed record's headers are taken (iiot's own format has none).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Headers {
    /// Each header key and value must be UTF-8: a record with one that is not is marked
    /// ([`iiot_transport::Message::bad_header`]) and dead-lettered `bad_header`.
    #[default]
    Text,
    /// Headers are not looked at (producers that add binary ones: tracing, schema ids).
    Any,
}

/// How a consumer group's members split partitions when one joins or leaves.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Assignment {
    /// Every rebalance revokes every partition and assigns them again (librdkafka's
    /// `range,roundrobin`): works on every broker, tansu 0.6 included.
    #[default]
    Eager,
    /// Only the partitions that move are revoked (`cooperative-sticky`, KIP-429): the others
    /// keep being processed, and their members keep their state.
    CooperativeSticky,
}

impl Assignment {
    /// The librdkafka `partition.assignment.strategy` value.
    pub fn librdkafka_value(self) -> &'static str {
        match self {
            Assignment::Eager => "range,roundrobin",
            Assignment::CooperativeSticky => "cooperative-sticky",
        }
    }
}

impl KafkaSettings {
    /// Settings for `brokers` with every other field at its default.
    pub fn new(brokers: impl Into<String>) -> Self {
        KafkaSettings {
            brokers: brokers.into(),
            ..KafkaSettings::default()
        }
    }
}

impl Default for KafkaSettings {
    fn default() -> Self {
        KafkaSettings {
            brokers: "127.0.0.1:9092".to_string(),
            client_id: "iiot".to_string(),
            properties: Vec::new(),
            producer: ProducerSettings::default(),
            reconnect_log_interval: Duration::from_secs(30),
            assignment: Assignment::default(),
            headers: Headers::default(),
        }
    }
}

fn invalid(what: String) -> TransportError {
    TransportError::Broker(format!("invalid Kafka setting: {what}"))
}

/// Properties every client shares: where the brokers are, who we are, how fast we reconnect.
fn common_config(s: &KafkaSettings) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &s.brokers)
        .set("client.id", &s.client_id)
        .set("statistics.interval.ms", STATISTICS_INTERVAL_MS)
        // librdkafka's default backs off up to 10 s; a broker that comes back should be used
        // again within a couple of seconds.
        .set("reconnect.backoff.ms", "100")
        .set("reconnect.backoff.max.ms", "2000")
        // Disconnects are reported (rate-limited) through the error callback already.
        .set("log.connection.close", "false");
    c
}

fn apply_properties(c: &mut ClientConfig, s: &KafkaSettings) {
    for (k, v) in &s.properties {
        c.set(k, v);
    }
}

/// The producer's configuration, after validating the producer settings.
pub(crate) fn producer_config(s: &KafkaSettings) -> Result<ClientConfig, TransportError> {
    let p = &s.producer;
    if !COMPRESSIONS.contains(&p.compression.as_str()) {
        return Err(invalid(format!(
            "compression {:?} (allowed: {})",
            p.compression,
            COMPRESSIONS.join(", ")
        )));
    }
    let acks = match p.acks.as_str() {
        "all" | "-1" => "all",
        "1" => "1",
        "0" => "0",
        other => {
            return Err(invalid(format!("acks {other:?} (allowed: all, -1, 1, 0)")));
        }
    };
    if p.idempotence && acks != "all" {
        return Err(invalid(format!(
            "acks {:?} with idempotence (an idempotent producer needs acks=all)",
            p.acks
        )));
    }
    if p.queue_max_messages == 0 || p.batch_num_messages == 0 || p.batch_size_bytes == 0 {
        return Err(invalid(
            "queue_max_messages, batch_num_messages and batch_size_bytes must be above 0"
                .to_string(),
        ));
    }
    let mut c = common_config(s);
    c.set("compression.codec", &p.compression)
        .set("linger.ms", p.linger_ms.to_string())
        .set("batch.size", p.batch_size_bytes.to_string())
        .set("batch.num.messages", p.batch_num_messages.to_string())
        .set(
            "queue.buffering.max.messages",
            p.queue_max_messages.to_string(),
        )
        .set("delivery.timeout.ms", p.delivery_timeout_ms.to_string())
        .set("acks", acks)
        .set("enable.idempotence", p.idempotence.to_string())
        // Same key → same partition as the Java client (murmur2), so other producers agree.
        .set("partitioner", "murmur2_random");
    apply_properties(&mut c, s);
    Ok(c)
}

/// A consumer-group member: offsets are stored by `Subscriber::commit` only, and committed in
/// the background and on revoke/close (at-least-once).
pub(crate) fn group_consumer_config(s: &KafkaSettings, group: &str) -> ClientConfig {
    let mut c = common_config(s);
    c.set("group.id", group)
        .set("enable.auto.commit", "true")
        .set("auto.commit.interval.ms", "1000")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("fetch.wait.max.ms", FETCH_WAIT_MAX_MS)
        .set("enable.partition.eof", "false")
        .set(
            "partition.assignment.strategy",
            s.assignment.librdkafka_value(),
        );
    apply_properties(&mut c, s);
    c
}

/// A consumer outside any group that reads every partition it is assigned from the end.
pub(crate) fn standalone_consumer_config(s: &KafkaSettings) -> ClientConfig {
    let mut c = common_config(s);
    // librdkafka wants a group id even for a consumer that only uses `assign`; it is never
    // joined and nothing is committed under it.
    c.set("group.id", format!("{}-standalone", s.client_id))
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "latest")
        .set("fetch.wait.max.ms", FETCH_WAIT_MAX_MS)
        .set("enable.partition.eof", "false");
    apply_properties(&mut c, s);
    c
}

/// The admin client (topic creation).
pub(crate) fn admin_config(s: &KafkaSettings) -> ClientConfig {
    let mut c = common_config(s);
    apply_properties(&mut c, s);
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get<'a>(c: &'a ClientConfig, k: &str) -> Option<&'a str> {
        c.get(k)
    }

    #[test]
    fn defaults_make_an_idempotent_lz4_producer() {
        let c = producer_config(&KafkaSettings::new("b1:9092,b2:9092")).expect("valid");
        assert_eq!(get(&c, "bootstrap.servers"), Some("b1:9092,b2:9092"));
        assert_eq!(get(&c, "client.id"), Some("iiot"));
        assert_eq!(get(&c, "compression.codec"), Some("lz4"));
        assert_eq!(get(&c, "linger.ms"), Some("5"));
        assert_eq!(get(&c, "queue.buffering.max.messages"), Some("100000"));
        assert_eq!(get(&c, "delivery.timeout.ms"), Some("30000"));
        assert_eq!(get(&c, "acks"), Some("all"));
        assert_eq!(get(&c, "enable.idempotence"), Some("true"));
        assert!(get(&c, "statistics.interval.ms").is_some());
    }

    #[test]
    fn every_producer_setting_reaches_librdkafka() {
        let mut s = KafkaSettings::new("b:1");
        s.producer = ProducerSettings {
            compression: "zstd".into(),
            linger_ms: 20,
            batch_size_bytes: 65_536,
            batch_num_messages: 500,
            queue_max_messages: 1000,
            delivery_timeout_ms: 5000,
            acks: "1".into(),
            idempotence: false,
        };
        let c = producer_config(&s).expect("valid");
        assert_eq!(get(&c, "compression.codec"), Some("zstd"));
        assert_eq!(get(&c, "linger.ms"), Some("20"));
        assert_eq!(get(&c, "batch.size"), Some("65536"));
        assert_eq!(get(&c, "batch.num.messages"), Some("500"));
        assert_eq!(get(&c, "queue.buffering.max.messages"), Some("1000"));
        assert_eq!(get(&c, "delivery.timeout.ms"), Some("5000"));
        assert_eq!(get(&c, "acks"), Some("1"));
        assert_eq!(get(&c, "enable.idempotence"), Some("false"));
    }

    #[test]
    fn compression_is_validated() {
        for ok in COMPRESSIONS {
            let mut s = KafkaSettings::default();
            s.producer.compression = ok.to_string();
            assert!(producer_config(&s).is_ok(), "{ok} should be accepted");
        }
        let mut s = KafkaSettings::default();
        s.producer.compression = "brotli".into();
        let err = producer_config(&s).expect_err("brotli is not a Kafka codec");
        assert!(err.to_string().contains("brotli"), "{err}");
    }

    #[test]
    fn acks_are_validated_and_idempotence_needs_all() {
        let mut s = KafkaSettings::default();
        s.producer.acks = "-1".into();
        assert_eq!(
            get(&producer_config(&s).expect("valid"), "acks"),
            Some("all")
        );
        s.producer.acks = "1".into();
        assert!(producer_config(&s).is_err(), "idempotence needs acks=all");
        s.producer.idempotence = false;
        assert!(producer_config(&s).is_ok());
        s.producer.acks = "some".into();
        assert!(producer_config(&s).is_err());
    }

    #[test]
    fn zero_bounds_are_rejected() {
        let mut s = KafkaSettings::default();
        s.producer.queue_max_messages = 0;
        assert!(producer_config(&s).is_err());
    }

    #[test]
    fn properties_are_applied_last_to_every_client() {
        let mut s = KafkaSettings::new("b:1");
        s.properties = vec![
            ("security.protocol".into(), "sasl_ssl".into()),
            ("compression.codec".into(), "gzip".into()),
            ("enable.auto.commit".into(), "false".into()),
            ("statistics.interval.ms".into(), "5000".into()),
        ];
        let producer = producer_config(&s).expect("valid");
        assert_eq!(get(&producer, "compression.codec"), Some("gzip"));
        let configs = [
            producer,
            group_consumer_config(&s, "g"),
            standalone_consumer_config(&s),
            admin_config(&s),
        ];
        for c in &configs {
            assert_eq!(get(c, "security.protocol"), Some("sasl_ssl"));
            assert_eq!(get(c, "statistics.interval.ms"), Some("5000"));
        }
        assert_eq!(get(&configs[1], "enable.auto.commit"), Some("false"));
    }

    #[test]
    fn group_members_store_offsets_only_on_commit() {
        let c = group_consumer_config(&KafkaSettings::default(), "processors");
        assert_eq!(get(&c, "group.id"), Some("processors"));
        assert_eq!(get(&c, "enable.auto.offset.store"), Some("false"));
        assert_eq!(get(&c, "enable.auto.commit"), Some("true"));
        assert_eq!(get(&c, "auto.offset.reset"), Some("earliest"));
        assert_eq!(
            get(&c, "partition.assignment.strategy"),
            Some("range,roundrobin")
        );
        let cooperative = KafkaSettings {
            assignment: Assignment::CooperativeSticky,
            ..KafkaSettings::default()
        };
        assert_eq!(
            get(
                &group_consumer_config(&cooperative, "p"),
                "partition.assignment.strategy"
            ),
            Some("cooperative-sticky")
        );
        let all = standalone_consumer_config(&KafkaSettings::default());
        assert_eq!(get(&all, "enable.auto.commit"), Some("false"));
        assert_eq!(get(&all, "auto.offset.reset"), Some("latest"));
    }
}
