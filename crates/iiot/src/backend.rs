//! The message backend a process runs on: the embedded in-process [`Bus`] (no `KAFKA_BROKERS`),
//! or Kafka through librdkafka (`iiot-kafka`, cargo feature `kafka`).
//!
//! A [`Backend`] is a [`Transport`] and nothing more: the roles ask it for what they need — a
//! publisher, the processors' group members, subscriptions that see every message, the topics,
//! whether it keeps history — and never which backend it is. This file only builds one from
//! the configuration and prepares its topics.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use iiot_transport::{Bus, BusConfig, TopicSpec, Transport, TransportError};
use tokio_util::sync::CancellationToken;

use crate::config::Config;

/// The backend of a process, shared by every task in it.
pub type Backend = Arc<dyn Transport>;

/// How often topic creation is retried while no broker answers.
const TOPIC_RETRY: Duration = Duration::from_secs(2);
/// Broker errors are logged at most this often.
pub const BROKER_LOG_INTERVAL: Duration = Duration::from_secs(30);

/// Why no backend could be made.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// The Kafka client refused the settings.
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// Kafka was asked for, but this binary was built without it.
    #[error(
        "KAFKA_BROKERS is set, but this iiot was built without Kafka support (cargo feature `kafka`)"
    )]
    NoKafka,
}

/// The backend `config` asks for: Kafka when `KAFKA_BROKERS` is set, else a bus sized from the
/// config. Does not need a reachable broker.
pub fn from_config(config: &Config) -> Result<Backend, BackendError> {
    match &config.kafka.brokers {
        Some(brokers) => kafka(config, brokers),
        None => Ok(Arc::new(bus_for(config))),
    }
}

/// Kafka, whatever `config` says about brokers (for the roles that only exist on Kafka).
pub fn kafka_only(config: &Config) -> Result<Backend, BackendError> {
    kafka(
        config,
        config.kafka.brokers.as_deref().unwrap_or("127.0.0.1:9092"),
    )
}

#[cfg(feature = "kafka")]
fn kafka(config: &Config, brokers: &str) -> Result<Backend, BackendError> {
    let settings = kafka_settings(config, brokers);
    Ok(Arc::new(iiot_kafka::KafkaTransport::new(settings)?))
}

#[cfg(not(feature = "kafka"))]
fn kafka(_: &Config, _: &str) -> Result<Backend, BackendError> {
    Err(BackendError::NoKafka)
}

/// A topic that must be co-partitioned with another has a different partition count: a
/// setting to fix (exit 2), not something to retry.
#[derive(Debug, thiserror::Error)]
#[error(
    "KAFKA_TOPIC_ALERT_STATE: topic {state:?} has {state_partitions} partitions, but {readings:?} has {readings_partitions}; the alert state must have exactly as many partitions as the readings (delete it, or name a new topic, and it is created and migrated from the alerts topic)"
)]
pub struct PartitionMismatch {
    /// The alert-state topic.
    pub state: String,
    /// Its partitions.
    pub state_partitions: i32,
    /// The readings topic.
    pub readings: String,
    /// Its partitions.
    pub readings_partitions: i32,
}

/// Makes sure the topics of `config` exist (nothing to do on the bus; on Kafka, creates the
/// missing ones), retrying until a broker answers or `stop` is cancelled, and that the
/// alert-state topic has exactly the readings topic's partitions. Returns `Ok(false)` only if
/// stopped first.
pub async fn prepare_topics(
    backend: &Backend,
    config: &Config,
    stop: &CancellationToken,
) -> Result<bool, PartitionMismatch> {
    let mut topics = topic_specs(config);
    let mut last_log: Option<tokio::time::Instant> = None;
    loop {
        match ensure_co_partitioned(backend, config, &mut topics).await {
            Ok(Some(mismatch)) => return Err(mismatch),
            Ok(None) => {
                if backend.keeps_history() {
                    tracing::info!(
                        topics = ?topics.iter().map(|t| &t.name).collect::<Vec<_>>(),
                        "Kafka topics ready"
                    );
                }
                return Ok(true);
            }
            Err(e) => {
                if last_log.is_none_or(|t| t.elapsed() >= BROKER_LOG_INTERVAL) {
                    tracing::warn!(error = %e, "cannot create or check the topics yet; retrying");
                    last_log = Some(tokio::time::Instant::now());
                }
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return Ok(false),
            _ = tokio::time::sleep(TOPIC_RETRY) => {}
        }
    }
}

/// As [`prepare_topics`] for a role that does not use the alert state (serve, ingest,
/// simulate): a mismatched alert-state topic is logged as an error, and the role goes on —
/// only the processors must refuse it. Returns `false` only if stopped first.
pub async fn prepare_topics_besides_state(
    backend: &Backend,
    config: &Config,
    stop: &CancellationToken,
) -> bool {
    match prepare_topics(backend, config, stop).await {
        Ok(ready) => ready,
        Err(mismatch) => {
            tracing::error!("{mismatch} (the processors refuse to start; this role goes on)");
            true
        }
    }
}

/// Creates the missing topics, the alert-state topic with as many partitions as the readings
/// topic really has (an existing one may differ from `KAFKA_PARTITIONS_DEVICE_DATA`), then
/// checks that an existing alert-state topic has that count too. A backend that cannot tell
/// partition counts (the bus) is taken at its word.
async fn ensure_co_partitioned(
    backend: &Backend,
    config: &Config,
    topics: &mut [TopicSpec],
) -> Result<Option<PartitionMismatch>, TransportError> {
    let k = &config.kafka;
    if let Some(readings) = backend.partition_count(&k.topic_device_data).await?
        && let Some(spec) = topics.iter_mut().find(|t| t.name == k.topic_alert_state)
    {
        spec.partitions = readings;
    }
    backend.ensure_topics(topics).await?;
    let Some(readings) = backend.partition_count(&k.topic_device_data).await? else {
        return Ok(None);
    };
    match backend.partition_count(&k.topic_alert_state).await? {
        Some(state) if state != readings => Ok(Some(PartitionMismatch {
            state: k.topic_alert_state.clone(),
            state_partitions: state,
            readings: k.topic_device_data.clone(),
            readings_partitions: readings,
        })),
        _ => Ok(None),
    }
}

/// The bus sized from `config`: `device-data` 10 partitions, `alerts` 3, dead letters 1 (or the
/// configured counts).
pub fn bus_for(config: &Config) -> Bus {
    let k = &config.kafka;
    let partitions = HashMap::from([
        (k.topic_device_data.clone(), k.partitions_device_data as u32),
        (k.topic_alerts.clone(), k.partitions_alerts as u32),
        (k.topic_dlq.clone(), k.partitions_dlq as u32),
        (k.topic_alert_state.clone(), k.partitions_device_data as u32),
    ]);
    Bus::new(BusConfig {
        default_partitions: 1,
        partitions,
        queue_capacity: config.processor.bus_queue_capacity,
    })
}

/// How long the delivery log keeps a record: a notifier reads a change again only while its
/// offset is not committed, and commits go in offset order, so one alert a silence holds back
/// keeps the changes behind it uncommitted for as long as it lasts. 30 days is past any
/// maintenance window; a change held back longer than that may be told again after a restart.
/// A member given a partition reads back at most that, not the topic's whole life.
pub const NOTIFY_LOG_RETENTION_MS: u64 = 30 * 24 * 3600 * 1000;

/// The topics the system uses, with the partition counts and replication factor to create them
/// with.
pub fn topic_specs(config: &Config) -> Vec<TopicSpec> {
    let k = &config.kafka;
    [
        (&k.topic_device_data, k.partitions_device_data),
        (&k.topic_alerts, k.partitions_alerts),
        (&k.topic_dlq, k.partitions_dlq),
        // Acknowledgements are rare and every processor reads all of them.
        (&k.topic_commands, 1),
        // So are rule changes; the topic holds the latest snapshot (compacted). Silences too.
        (&k.topic_rules, 1),
        (&k.topic_silences, 1),
        // Delivery records, co-partitioned with the alerts they record.
        (&k.topic_notify_log, k.partitions_alerts),
        // Each device's open alerts, co-partitioned with the readings (checked once created).
        (&k.topic_alert_state, k.partitions_device_data),
    ]
    .into_iter()
    .map(|(name, partitions)| TopicSpec {
        name: name.clone(),
        partitions,
        replication: k.replication_factor,
        compacted: *name == k.topic_rules
            || *name == k.topic_silences
            || *name == k.topic_alert_state,
        retention_ms: (*name == k.topic_notify_log).then_some(NOTIFY_LOG_RETENTION_MS),
    })
    .collect()
}

/// The librdkafka-facing settings of `config`.
#[cfg(feature = "kafka")]
pub fn kafka_settings(config: &Config, brokers: &str) -> iiot_kafka::KafkaSettings {
    let k = &config.kafka;
    iiot_kafka::KafkaSettings {
        brokers: brokers.to_string(),
        client_id: k.client_id.clone(),
        properties: k.client_properties(),
        producer: iiot_kafka::ProducerSettings {
            compression: k.compression.clone(),
            linger_ms: k.linger.as_millis() as u64,
            batch_size_bytes: k.batch_size,
            queue_max_messages: k.queue_max_messages,
            ..iiot_kafka::ProducerSettings::default()
        },
        reconnect_log_interval: BROKER_LOG_INTERVAL,
        assignment: match k.assignment_strategy.as_str() {
            "cooperative-sticky" => iiot_kafka::Assignment::CooperativeSticky,
            _ => iiot_kafka::Assignment::Eager,
        },
        headers: match k.headers.as_str() {
            "any" => iiot_kafka::Headers::Any,
            _ => iiot_kafka::Headers::Text,
        },
    }
}
