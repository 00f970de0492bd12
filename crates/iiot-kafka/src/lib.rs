//! The Kafka backend of the [`iiot_transport`] traits, on librdkafka (`rdkafka`).
//!
//! # Layout
//! - this file: [`KafkaTransport`] (publisher, consumer-group and all-partition subscribers,
//!   readiness, metrics) and [`TopicSpec`] / [`KafkaTransport::ensure_topics`].
//! - [`config`]: [`KafkaSettings`], [`ProducerSettings`] and their mapping onto librdkafka
//!   properties (extra properties applied last).
//! - `context`: counters shared by every client ([`iiot_transport::BackendMetrics`]), the
//!   readiness flag, rate-limited logging of broker trouble.
//! - `producer`: the idempotent producer; delivery reports resolve receipts and count.
//! - `readback`: chosen partitions read from their beginning to their end (state topics).
//! - `consumer`: consumer-group members (offsets stored on commit, committed in the
//!   background; revoked partitions) and the all-partition reader of `serve`.
//! - `testing` (feature `testing`): `TestBroker`, a private tansu broker for tests.
//!
//! Nothing here needs a reachable broker to be created: clients connect in the background,
//! [`Transport::is_ready`] says whether a broker answers (probed every second), and broker
//! errors are logged at most once per [`KafkaSettings::reconnect_log_interval`].
#![deny(missing_docs)]

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use iiot_transport::{
    BackendMetrics, Message, Publisher, Receipt, Subscriber, Transport, TransportError,
};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::config::FromClientConfigAndContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::producer::{Producer, ThreadedProducer};

pub mod config;
mod consumer;
mod context;
mod producer;
mod readback;
#[cfg(feature = "testing")]
pub mod testing;

pub use config::{Assignment, COMPRESSIONS, Headers, KafkaSettings, ProducerSettings};

use consumer::{ConsumerEvents, EventConsumer, GroupSubscriber, StandaloneSubscriber};
use context::{ClientEvents, PlainContext, Shared};
use producer::{KafkaPublisher, ProducerEvents};

/// How often the background probe asks a broker for metadata (readiness).
const PROBE_INTERVAL: Duration = Duration::from_secs(1);
/// How long one probe or one topic creation may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
const ADMIN_TIMEOUT: Duration = Duration::from_secs(10);

pub use iiot_transport::{Start, TopicSpec};

/// The Kafka backend: one shared idempotent producer, one consumer per subscriber. Clones share
/// the producer and the counters.
///
/// Call [`Publisher::flush`] before the last clone and publisher are dropped: dropping the
/// producer fails what it still holds (those receipts resolve to an error). Dropping a
/// consumer-group subscriber commits its stored offsets and leaves the group, on a blocking
/// thread.
#[derive(Clone)]
pub struct KafkaTransport {
    inner: Arc<Inner>,
}

struct Inner {
    settings: KafkaSettings,
    publisher: Arc<KafkaPublisher>,
    shared: Arc<Shared>,
}

impl KafkaTransport {
    /// Creates the producer and starts the readiness probe. Needs no reachable broker; fails
    /// only on invalid settings.
    pub fn new(settings: KafkaSettings) -> Result<KafkaTransport, TransportError> {
        let shared = Arc::new(Shared::new(settings.reconnect_log_interval));
        let context = ProducerEvents {
            events: ClientEvents {
                client: "producer",
                shared: shared.clone(),
            },
        };
        let producer: ThreadedProducer<ProducerEvents> = ThreadedProducer::from_config_and_context(
            &config::producer_config(&settings)?,
            context,
        )
        .map_err(|e| TransportError::Broker(format!("creating the Kafka producer: {e}")))?;
        let inner = Arc::new(Inner {
            settings,
            publisher: Arc::new(KafkaPublisher {
                producer,
                shared: shared.clone(),
            }),
            shared,
        });
        spawn_probe(Arc::downgrade(&inner))?;
        Ok(KafkaTransport { inner })
    }

    /// The settings this transport was made with.
    pub fn settings(&self) -> &KafkaSettings {
        &self.inner.settings
    }

    /// The partition count of every topic the brokers know and can serve (one metadata request
    /// for all topics: asking for one by name may have the broker auto-create it). A topic
    /// listed with an error or without partitions (just created) is left out.
    async fn topic_partitions(
        &self,
    ) -> Result<std::collections::HashMap<String, i32>, TransportError> {
        let producer = self.inner.publisher.clone();
        tokio::task::spawn_blocking(move || {
            let metadata = producer
                .producer
                .client()
                .fetch_metadata(None, ADMIN_TIMEOUT)
                .map_err(|e| TransportError::Broker(format!("reading the topics: {e}")))?;
            Ok(metadata
                .topics()
                .iter()
                .filter(|t| t.error().is_none() && !t.partitions().is_empty())
                .map(|t| (t.name().to_string(), t.partitions().len() as i32))
                .collect())
        })
        .await
        .map_err(|e| TransportError::Broker(format!("reading the topics: {e}")))?
    }

    /// Creates the topics that do not exist yet (existing ones are left as they are). One
    /// attempt, bounded by a timeout: the caller retries while the broker is unreachable.
    /// When every topic exists already no creation is asked for, so a deployment whose user
    /// may not create topics (or a broker without `CreateTopics`) starts on topics made
    /// beforehand.
    pub async fn ensure_topics(&self, topics: &[TopicSpec]) -> Result<(), TransportError> {
        let existing = self.topic_partitions().await?;
        let missing: Vec<TopicSpec> = topics
            .iter()
            .filter(|t| !existing.contains_key(&t.name))
            .cloned()
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        let topics = &missing[..];
        let context = PlainContext(ClientEvents {
            client: "admin",
            shared: self.inner.shared.clone(),
        });
        let admin: AdminClient<PlainContext> = AdminClient::from_config_and_context(
            &config::admin_config(&self.inner.settings),
            context,
        )
        .map_err(|e| TransportError::Broker(format!("creating the Kafka admin client: {e}")))?;
        // Kept apart: a topic's settings borrow their strings.
        let retention: Vec<Option<String>> = topics
            .iter()
            .map(|t| t.retention_ms.map(|ms| ms.to_string()))
            .collect();
        let new: Vec<NewTopic<'_>> = topics
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let topic = NewTopic::new(
                    &t.name,
                    t.partitions,
                    TopicReplication::Fixed(t.replication),
                );
                let topic = match t.compacted {
                    true => topic.set("cleanup.policy", "compact"),
                    false => topic,
                };
                match &retention[i] {
                    Some(ms) => topic.set("retention.ms", ms),
                    None => topic,
                }
            })
            .collect();
        let options = AdminOptions::new()
            .request_timeout(Some(ADMIN_TIMEOUT))
            .operation_timeout(Some(ADMIN_TIMEOUT));
        let results = tokio::time::timeout(
            ADMIN_TIMEOUT + Duration::from_secs(1),
            admin.create_topics(&new, &options),
        )
        .await
        .map_err(|_| TransportError::Broker("creating topics: timed out".to_string()))?
        .map_err(|e| TransportError::Broker(format!("creating topics: {e}")))?;
        let mut failed = Vec::new();
        for r in results {
            match r {
                Ok(name) => tracing::info!(topic = %name, "kafka: topic created"),
                Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((name, code)) => failed.push(format!("{name}: {code}")),
            }
        }
        if failed.is_empty() {
            Ok(())
        } else {
            Err(TransportError::Broker(format!(
                "creating topics: {}",
                failed.join("; ")
            )))
        }
    }

    /// Reads every partition of `topic` from `start`, outside any consumer group, committing
    /// nothing: each `serve` instance sees every message ([`Start::Beginning`] replays what the
    /// topic still holds: the serve side rebuilds its alert log that way). Without a reachable
    /// broker it returns at once and assigns itself on a later receive. (The [`Transport`]
    /// method `subscribe_all` is this.)
    pub async fn subscribe_all_from(
        &self,
        topic: &str,
        start: Start,
    ) -> Result<Box<dyn Subscriber>, TransportError> {
        let consumer = self.consumer(
            &config::standalone_consumer_config(&self.inner.settings),
            topic,
        )?;
        let mut sub = StandaloneSubscriber {
            consumer: Arc::new(consumer),
            topic: Arc::from(topic),
            assigned: false,
            start,
            headers: self.inner.settings.headers,
        };
        if let Err(e) = sub.try_assign().await {
            tracing::warn!("kafka: {e}; will assign on the first receive");
        }
        Ok(Box::new(sub))
    }

    /// Runs `work` on `partitions` of `topic` with a consumer outside any group (nothing
    /// assigned yet), on a blocking thread: reading partitions back, asking their ends.
    async fn on_partitions<T: Send + 'static>(
        &self,
        topic: &str,
        partitions: &[i32],
        what: &'static str,
        work: impl FnOnce(&BaseConsumer<PlainContext>, &str, &[i32]) -> T + Send + 'static,
    ) -> Result<T, TransportError> {
        let consumer: BaseConsumer<PlainContext> = BaseConsumer::from_config_and_context(
            &config::standalone_consumer_config(&self.inner.settings),
            PlainContext(ClientEvents {
                client: "consumer",
                shared: self.inner.shared.clone(),
            }),
        )
        .map_err(|e| TransportError::Broker(format!("creating a Kafka consumer: {e}")))?;
        let (topic, partitions) = (topic.to_string(), partitions.to_vec());
        tokio::task::spawn_blocking(move || work(&consumer, &topic, &partitions))
            .await
            .map_err(|e| TransportError::Broker(format!("{what}: {e}")))
    }

    fn consumer(
        &self,
        config: &rdkafka::ClientConfig,
        topic: &str,
    ) -> Result<EventConsumer, TransportError> {
        let context = ConsumerEvents {
            events: ClientEvents {
                client: "consumer",
                shared: self.inner.shared.clone(),
            },
            topic: Arc::from(topic),
            partitions: Mutex::default(),
            lag: self.inner.shared.register_consumer(),
        };
        EventConsumer::from_config_and_context(config, context)
            .map_err(|e| TransportError::Broker(format!("creating a Kafka consumer: {e}")))
    }
}

/// Asks a broker for metadata every [`PROBE_INTERVAL`] and keeps `ready` current; logs the
/// transitions. Stops once the transport is dropped.
fn spawn_probe(inner: Weak<Inner>) -> Result<(), TransportError> {
    std::thread::Builder::new()
        .name("iiot-kafka-probe".to_string())
        .spawn(move || {
            loop {
                let Some(inner) = inner.upgrade() else { return };
                let reachable = inner
                    .publisher
                    .producer
                    .client()
                    .fetch_metadata(None, PROBE_TIMEOUT)
                    .is_ok();
                let was = inner.shared.ready.swap(reachable, Ordering::Relaxed);
                if reachable && !was {
                    tracing::info!(brokers = %inner.settings.brokers, "kafka: broker reachable");
                } else if !reachable && was {
                    tracing::warn!(brokers = %inner.settings.brokers, "kafka: no broker reachable");
                }
                drop(inner);
                std::thread::sleep(PROBE_INTERVAL);
            }
        })
        .map(|_| ())
        .map_err(|e| TransportError::Broker(format!("starting the Kafka probe thread: {e}")))
}

#[async_trait]
impl Transport for KafkaTransport {
    fn publisher(&self) -> Arc<dyn Publisher> {
        self.inner.publisher.clone()
    }

    async fn subscribe(
        &self,
        topic: &str,
        group: &str,
    ) -> Result<Box<dyn Subscriber>, TransportError> {
        let consumer = self.consumer(
            &config::group_consumer_config(&self.inner.settings, group),
            topic,
        )?;
        consumer
            .subscribe(&[topic])
            .map_err(|e| TransportError::Broker(format!("subscribing to {topic}: {e}")))?;
        let headers = self.inner.settings.headers;
        Ok(Box::new(GroupSubscriber::new(consumer, topic, headers)))
    }

    async fn subscribe_all(
        &self,
        topic: &str,
        start: Start,
    ) -> Result<Box<dyn Subscriber>, TransportError> {
        self.subscribe_all_from(topic, start).await
    }

    async fn publish_to(
        &self,
        topic: &str,
        partition: i32,
        key: &[u8],
        payload: Bytes,
    ) -> Result<Receipt, TransportError> {
        self.inner
            .publisher
            .publish_record(topic, Some(partition), key, payload)
            .await
    }

    async fn read_partitions(
        &self,
        topic: &str,
        partitions: &[i32],
        limit: Duration,
    ) -> Result<Vec<Message>, TransportError> {
        if partitions.is_empty() {
            return Ok(Vec::new());
        }
        self.on_partitions(
            topic,
            partitions,
            "reading partitions back",
            move |c, t, ps| readback::read_to_end(c, t, ps, limit),
        )
        .await?
    }

    async fn partition_ends(
        &self,
        topic: &str,
        partitions: &[i32],
    ) -> Result<Vec<(i32, i64)>, TransportError> {
        if partitions.is_empty() {
            return Ok(Vec::new());
        }
        self.on_partitions(
            topic,
            partitions,
            "learning partition ends",
            readback::high_watermarks,
        )
        .await
    }

    async fn partition_count(&self, topic: &str) -> Result<Option<i32>, TransportError> {
        Ok(self.topic_partitions().await?.get(topic).copied())
    }

    fn keeps_history(&self) -> bool {
        true
    }

    fn is_shared(&self) -> bool {
        true
    }

    async fn ensure_topics(&self, topics: &[TopicSpec]) -> Result<(), TransportError> {
        KafkaTransport::ensure_topics(self, topics).await
    }

    fn describe(&self) -> String {
        format!("kafka {}", self.inner.settings.brokers)
    }

    async fn is_ready(&self) -> bool {
        self.inner.shared.ready.load(Ordering::Relaxed)
    }

    fn metrics(&self) -> BackendMetrics {
        self.inner.shared.metrics()
    }
}
