//! `iiot ingest`: the MQTT → Kafka bridge. It is the MQTT source ([`crate::sources::mqtt`])
//! over the Kafka backend and nothing else — no processors, no store: each message goes onto
//! `device-data` keyed by its payload's `device_id`, and is acknowledged to the MQTT broker
//! (PUBACK) only once Kafka has acknowledged the record. A crash therefore loses nothing: what
//! was not acknowledged is sent again by the broker (at least once; the processors recognise a
//! repeat by its `seq`).
//!
//! Bad input is handled as the source handles it: a topic naming another device than the
//! payload goes to the dead-letter topic (`topic_mismatch`); anything unreadable goes on to
//! `device-data`, where the processors dead-letter it with the precise reason.
//!
//! Several instances split the load with an MQTT shared subscription (`MQTT_SHARED_GROUP`,
//! each with its own `MQTT_CLIENT_ID`). Its own operations endpoint answers `/health`,
//! `/ready` (Kafka and the MQTT broker reachable) and `/metrics` (received, forwarded, rejected
//! by reason, in flight, lag).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio_util::sync::CancellationToken;

use super::ops_endpoint;
use super::process::stop_server;
use crate::backend;
use crate::config::Config;
use crate::http::OpsState;
use crate::mqtt::MqttStats;
use crate::processor::ProcessorStats;
use crate::sources::mqtt::MqttSource;
use crate::sources::{self as source, Source, SourceReport};

/// Why `iiot ingest` cannot start with this configuration (a usage error: exit 2).
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// No broker to read from.
    #[error(
        "invalid configuration: MQTT_URL is not set: `iiot ingest` needs the broker devices publish to (--mqtt-url mqtt://host:port)"
    )]
    NoMqttUrl,
}

/// `iiot ingest`: bridges `MQTT_URL`'s `MQTT_TOPICS` onto Kafka's `device-data` until
/// `shutdown`; then stops reading and waits (bounded) for what is in flight to be delivered
/// and acknowledged.
pub async fn main(config: Config, shutdown: CancellationToken) -> anyhow::Result<SourceReport> {
    let mqtt_stats = Arc::new(MqttStats::default());
    // The source counts its `topic_mismatch` dead letters here: `/metrics` shows them by reason.
    let rejected = Arc::new(ProcessorStats::default());
    let Some(source) = MqttSource::from_config(&config, mqtt_stats.clone(), rejected.clone())
    else {
        return Err(IngestError::NoMqttUrl.into());
    };
    let backend = backend::kafka_only(&config)?;
    let mut ops = OpsState::new(&config, rejected, backend.clone());
    ops.mqtt = Some(mqtt_stats.clone());
    let server = ops_endpoint(&config, ops).await;
    if !backend::prepare_topics_besides_state(&backend, &config, &shutdown).await {
        stop_server(server).await;
        return Ok(SourceReport::default());
    }
    tracing::info!(
        broker = ?config.mqtt.url,
        backend = %backend.describe(),
        topic = %config.kafka.topic_device_data,
        "ingesting MQTT into Kafka"
    );
    let sources: Vec<Box<dyn Source>> = vec![Box::new(source)];
    let running = source::start(
        sources,
        backend.publisher(),
        &config.kafka.topic_device_data,
        shutdown.child_token(),
    );
    let report = running.wait().await;
    stop_server(server).await;
    backend.close();
    let load = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
    tracing::info!(
        received = load(&mqtt_stats.received),
        forwarded = load(&mqtt_stats.forwarded),
        dead_lettered = load(&mqtt_stats.dead_lettered),
        "ingest stopped"
    );
    Ok(report)
}
