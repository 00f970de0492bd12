//! The message backend a process runs on: the embedded in-process [`Bus`] (no `KAFKA_BROKERS`),
//! or Kafka through librdkafka ([`iiot_kafka::KafkaTransport`]).
//!
//! The roles only ever ask a [`Backend`] for what they need — a publisher, the processors'
//! consumer-group members, a subscription that sees every message (the serve side), the topics
//! — so `iiot run`, `process` and `serve` read the same whichever backend is configured.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use iiot_kafka::{KafkaSettings, KafkaTransport, ProducerSettings, Start, TopicSpec};
use iiot_transport::{Bus, BusConfig, Publisher, Subscriber, Transport, TransportError};
use tokio_util::sync::CancellationToken;

use crate::config::Config;

/// Consumer group of the serve side on the embedded bus (on Kafka the serve side reads every
/// partition without a group).
pub const SERVE_GROUP: &str = "iiot-serve";

/// How often topic creation is retried while no broker answers.
const TOPIC_RETRY: Duration = Duration::from_secs(2);
/// Broker errors are logged at most this often.
const BROKER_LOG_INTERVAL: Duration = Duration::from_secs(30);

/// Where messages go.
#[derive(Clone)]
pub enum Backend {
    /// The embedded in-process bus.
    Bus(Bus),
    /// Kafka.
    Kafka(KafkaTransport),
}

impl From<Bus> for Backend {
    fn from(bus: Bus) -> Self {
        Backend::Bus(bus)
    }
}

impl Backend {
    /// The backend `config` asks for: Kafka when `KAFKA_BROKERS` is set, else a bus sized from
    /// the config. Does not need a reachable broker.
    pub fn from_config(config: &Config) -> Result<Backend, TransportError> {
        match &config.kafka.brokers {
            Some(brokers) => Ok(Backend::Kafka(KafkaTransport::new(kafka_settings(
                config, brokers,
            ))?)),
            None => Ok(Backend::Bus(bus_for(config))),
        }
    }

    /// Kafka, whatever `config` says about brokers (for the roles that only exist on Kafka).
    pub fn kafka(config: &Config) -> Result<Backend, TransportError> {
        let brokers = config.kafka.brokers.as_deref().unwrap_or("127.0.0.1:9092");
        Ok(Backend::Kafka(KafkaTransport::new(kafka_settings(
            config, brokers,
        ))?))
    }

    /// The backend as a [`Transport`] (readiness, metrics).
    pub fn transport(&self) -> Arc<dyn Transport> {
        match self {
            Backend::Bus(bus) => Arc::new(bus.clone()),
            Backend::Kafka(kafka) => Arc::new(kafka.clone()),
        }
    }

    /// A publisher, shared by every task of the process.
    pub fn publisher(&self) -> Arc<dyn Publisher> {
        match self {
            Backend::Bus(bus) => bus.publisher(),
            Backend::Kafka(kafka) => kafka.publisher(),
        }
    }

    /// Short name for logs: `embedded bus` or `kafka <brokers>`.
    pub fn describe(&self, config: &Config) -> String {
        match self {
            Backend::Bus(_) => "embedded bus".into(),
            Backend::Kafka(_) => format!(
                "kafka {}",
                config.kafka.brokers.as_deref().unwrap_or("127.0.0.1:9092")
            ),
        }
    }

    /// `members` members of consumer group `group` on `topic`, splitting its partitions. On the
    /// bus the split is fixed; on Kafka each member is its own consumer and the group
    /// rebalances as members (in this process or others) come and go.
    pub async fn group_members(
        &self,
        topic: &str,
        group: &str,
        members: usize,
    ) -> Result<Vec<Box<dyn Subscriber>>, TransportError> {
        match self {
            Backend::Bus(bus) => bus.subscribe_group(topic, group, members),
            Backend::Kafka(kafka) => {
                let mut out = Vec::with_capacity(members);
                for _ in 0..members.max(1) {
                    out.push(kafka.subscribe(topic, group).await?);
                }
                Ok(out)
            }
        }
    }

    /// A subscription that receives every message of `topic` (the serve side: each serve
    /// instance sees everything). On Kafka it reads every partition from the end, outside any
    /// group, so several instances can sit behind a load balancer.
    pub async fn subscribe_everything(
        &self,
        topic: &str,
    ) -> Result<Box<dyn Subscriber>, TransportError> {
        match self {
            Backend::Bus(bus) => bus.subscribe(topic, SERVE_GROUP).await,
            Backend::Kafka(kafka) => kafka.subscribe_all(topic).await,
        }
    }

    /// [`Backend::subscribe_everything`], but on Kafka from the oldest message the topic still
    /// holds: a serve instance that starts late rebuilds its alert log from `alerts` this way.
    /// (The bus keeps no history: same as from now on.)
    pub async fn replay_everything(
        &self,
        topic: &str,
    ) -> Result<Box<dyn Subscriber>, TransportError> {
        match self {
            Backend::Bus(bus) => bus.subscribe(topic, SERVE_GROUP).await,
            Backend::Kafka(kafka) => kafka.subscribe_all_from(topic, Start::Beginning).await,
        }
    }

    /// Messages of `topic` the consumer group `group` has yet to process: the bus counts them
    /// exactly; on Kafka it is librdkafka's consumer lag of this process's members.
    pub fn lag(&self, topic: &str, group: &str) -> u64 {
        match self {
            Backend::Bus(bus) => bus.lag(topic, group).unwrap_or(0).max(0) as u64,
            Backend::Kafka(kafka) => kafka.metrics().consumer_lag,
        }
    }

    /// Makes sure the topics of `config` exist: nothing to do on the bus; on Kafka, creates the
    /// missing ones, retrying until a broker answers or `stop` is cancelled. Returns `false`
    /// only if stopped first.
    pub async fn prepare_topics(&self, config: &Config, stop: &CancellationToken) -> bool {
        let Backend::Kafka(kafka) = self else {
            return true;
        };
        let topics = topic_specs(config);
        let mut last_log: Option<tokio::time::Instant> = None;
        loop {
            match kafka.ensure_topics(&topics).await {
                Ok(()) => {
                    tracing::info!(
                        topics = ?topics.iter().map(|t| &t.name).collect::<Vec<_>>(),
                        "Kafka topics ready"
                    );
                    return true;
                }
                Err(e) => {
                    if last_log.is_none_or(|t| t.elapsed() >= BROKER_LOG_INTERVAL) {
                        tracing::warn!(error = %e, "cannot create or check the Kafka topics yet; retrying");
                        last_log = Some(tokio::time::Instant::now());
                    }
                }
            }
            tokio::select! {
                _ = stop.cancelled() => return false,
                _ = tokio::time::sleep(TOPIC_RETRY) => {}
            }
        }
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
    ]);
    Bus::new(BusConfig {
        default_partitions: 1,
        partitions,
        queue_capacity: config.processor.bus_queue_capacity,
    })
}

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
    ]
    .into_iter()
    .map(|(name, partitions)| TopicSpec {
        name: name.clone(),
        partitions,
        replication: k.replication_factor,
    })
    .collect()
}

/// The librdkafka-facing settings of `config`.
pub fn kafka_settings(config: &Config, brokers: &str) -> KafkaSettings {
    let k = &config.kafka;
    KafkaSettings {
        brokers: brokers.to_string(),
        client_id: k.client_id.clone(),
        properties: k.client_properties(),
        producer: ProducerSettings {
            compression: k.compression.clone(),
            linger_ms: k.linger.as_millis() as u64,
            batch_size_bytes: k.batch_size,
            queue_max_messages: k.queue_max_messages,
            ..ProducerSettings::default()
        },
        reconnect_log_interval: BROKER_LOG_INTERVAL,
    }
}
