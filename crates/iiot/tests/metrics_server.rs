//! `/metrics` as Prometheus sees it: a real server (both listeners on port 0) is scraped over
//! TCP; the text is parsed and every SPEC §8 family must be there with `# HELP`, `# TYPE` and
//! samples, with the transport's and the simulator's figures. The monitoring files that read
//! it are checked in `metrics_monitoring.rs`.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use async_trait::async_trait;
use iiot::config::Config;
use iiot::http::metrics::METRICS;
use iiot::processor::ProcessorStats;
use iiot::simulator::SimStats;
use iiot_model::InvalidReason;
use iiot_transport::{
    BackendMetrics, Bus, Publisher, SEND_DURATION_BOUNDS_MS, Subscriber, Transport, TransportError,
};
use support::StateParts;
use support::http::{Response, get_async};
use tokio::sync::mpsc;

/// The families SPEC §8 names (design notes' names, then ours), with one label they must carry
/// where the SPEC asks for a breakdown.
const SPEC_FAMILIES: &[(&str, Option<&str>)] = &[
    ("iot_messages_total", Some("status")),
    ("iot_message_processing_duration_seconds", None),
    ("iot_active_devices_total", None),
    ("iot_websocket_connections_total", None),
    ("kafka_messages_sent_total", None),
    ("kafka_send_errors_total", None),
    ("kafka_send_duration_seconds", Some("le")),
    ("kafka_batches_sent_total", None),
    ("kafka_producer_buffer_depth", None),
    ("device_data_generated_total", None),
    ("process_cpu_seconds_total", None),
    ("process_resident_memory_bytes", None),
    // end-to-end latency, consumer lag, dead letters by reason, sequence gaps, dropped WebSocket
    // messages:
    ("iot_event_to_client_latency_seconds", Some("le")),
    ("kafka_consumer_lag", None),
    ("iot_dead_letters_total", Some("reason")),
    ("iot_sequence_gaps_total", None),
    ("iot_websocket_messages_dropped_total", None),
];

/// The embedded bus, reporting fixed backend figures as a Kafka producer would.
struct Reporting {
    bus: Bus,
    metrics: BackendMetrics,
}

#[async_trait]
impl Transport for Reporting {
    fn publisher(&self) -> Arc<dyn Publisher> {
        self.bus.publisher()
    }

    async fn subscribe(
        &self,
        topic: &str,
        group: &str,
    ) -> Result<Box<dyn Subscriber>, TransportError> {
        self.bus.subscribe(topic, group).await
    }

    async fn subscribe_all(
        &self,
        topic: &str,
        start: iiot_transport::Start,
    ) -> Result<Box<dyn Subscriber>, TransportError> {
        self.bus.subscribe_all(topic, start).await
    }

    async fn publish_to(
        &self,
        topic: &str,
        partition: i32,
        key: &[u8],
        payload: bytes::Bytes,
    ) -> Result<iiot_transport::Receipt, TransportError> {
        self.bus.publish_to(topic, partition, key, payload).await
    }

    async fn is_ready(&self) -> bool {
        true
    }

    fn describe(&self) -> String {
        "reporting test backend".into()
    }

    fn metrics(&self) -> BackendMetrics {
        self.metrics.clone()
    }
}

fn backend_figures() -> BackendMetrics {
    let mut buckets = vec![0; SEND_DURATION_BOUNDS_MS.len() + 1];
    buckets[3] = 40; // ≤ 5 ms
    buckets[6] = 10; // ≤ 50 ms
    BackendMetrics {
        messages_sent: 50,
        send_errors: 3,
        batches_sent: 5,
        buffer_depth: 12,
        backpressure_waits: 1,
        send_duration_buckets: buckets,
        send_duration_sum_s: 0.4,
        consumer_lag: 77,
        connected: true,
    }
}

/// One parsed sample line.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// The exposition format, parsed strictly enough to catch malformed output: `# HELP` and
/// `# TYPE` per family (once each), and samples `name{k="v",…} value`.
#[derive(Debug, Default)]
struct Exposition {
    help: BTreeMap<String, String>,
    kind: BTreeMap<String, String>,
    samples: Vec<Sample>,
}

fn parse_exposition(text: &str) -> Exposition {
    let mut e = Exposition::default();
    for line in text.lines().filter(|l| !l.is_empty()) {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').expect("HELP name text");
            assert!(!help.is_empty(), "{line}");
            assert!(
                e.help.insert(name.into(), help.into()).is_none(),
                "HELP twice: {name}"
            );
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("TYPE name kind");
            assert!(
                e.kind.insert(name.into(), kind.into()).is_none(),
                "TYPE twice: {name}"
            );
        } else {
            assert!(!line.starts_with('#'), "unexpected comment {line:?}");
            let (series, value) = line.rsplit_once(' ').expect("series value");
            let value: f64 = match value {
                "+Inf" => f64::INFINITY,
                "-Inf" => f64::NEG_INFINITY,
                v => v.parse().unwrap_or_else(|_| panic!("value in {line:?}")),
            };
            let (name, labels) = match series.split_once('{') {
                None => (series, BTreeMap::new()),
                Some((name, rest)) => {
                    let inner = rest.strip_suffix('}').expect("closing brace");
                    let labels = inner
                        .split(',')
                        .map(|kv| {
                            let (k, v) = kv.split_once('=').expect("label=value");
                            let v = v.strip_prefix('"').and_then(|v| v.strip_suffix('"'));
                            (k.to_owned(), v.expect("quoted label value").to_owned())
                        })
                        .collect();
                    (name, labels)
                }
            };
            e.samples.push(Sample {
                name: name.into(),
                labels,
                value,
            });
        }
    }
    e
}

impl Exposition {
    /// The family a sample belongs to (its name, or its name without a histogram/summary
    /// suffix), if declared.
    fn family_of(&self, sample: &str) -> Option<String> {
        if self.kind.contains_key(sample) {
            return Some(sample.to_owned());
        }
        ["_bucket", "_sum", "_count"].iter().find_map(|s| {
            let base = sample.strip_suffix(s)?;
            matches!(
                self.kind.get(base).map(String::as_str),
                Some("histogram" | "summary")
            )
            .then(|| base.to_owned())
        })
    }

    fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.samples
            .iter()
            .find(|s| {
                s.name == name
                    && s.labels.len() == labels.len()
                    && labels
                        .iter()
                        .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|s| s.value)
    }
}

#[tokio::test]
async fn a_running_server_exports_every_spec_family_with_help_type_and_samples() {
    let mut config = Config {
        http_port: 0,
        ..Config::default()
    };
    config.websocket.port = 0;
    let stats = Arc::new(ProcessorStats::default());
    stats.processed.store(10, Ordering::Relaxed);
    stats.dead_letters[InvalidReason::Schema.index()].store(2, Ordering::Relaxed);
    stats.seq_gaps.store(4, Ordering::Relaxed);
    let simulator = Arc::new(SimStats::default());
    simulator.sent.store(123, Ordering::Relaxed);
    let hub = support::hub(&config);
    let (commands, _keep_open) = mpsc::channel(1);
    let transport = Arc::new(Reporting {
        bus: support::bus(&config),
        metrics: backend_figures(),
    });
    let state = support::app_state(StateParts {
        config: config.clone(),
        stats,
        hub: Some(hub.clone()),
        simulator: Some(simulator),
        ..StateParts::new(transport, commands)
    });
    let server = support::start_server(&config, state).await;

    let Response { head, body, .. } = get_async(server.http_addr, "/metrics").await;
    server.stop().await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: text/plain; version=0.0.4"),
        "{head}"
    );
    let e = parse_exposition(&body);

    // The table and the output agree, family by family, with the right types.
    let declared: BTreeSet<&str> = e.kind.keys().map(String::as_str).collect();
    let table: BTreeSet<&str> = METRICS.iter().map(|m| m.name).collect();
    assert_eq!(declared, table, "families rendered = the METRICS table");
    for m in METRICS {
        assert_eq!(e.kind[m.name], m.kind.as_str(), "{}", m.name);
        assert_eq!(e.help[m.name], m.help, "{}", m.name);
    }
    for s in &e.samples {
        assert!(
            e.family_of(&s.name).is_some(),
            "sample {} of no declared family",
            s.name
        );
        assert!(
            !s.labels.values().any(|v| v
                .strip_prefix("device_")
                .is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()))),
            "a device id as a label value: {s:?}"
        );
    }

    for (name, label) in SPEC_FAMILIES {
        assert!(e.help.contains_key(*name), "# HELP {name}");
        assert!(e.kind.contains_key(*name), "# TYPE {name}");
        let mine: Vec<&Sample> = e
            .samples
            .iter()
            .filter(|s| e.family_of(&s.name).as_deref() == Some(*name))
            .collect();
        assert!(!mine.is_empty(), "{name} has samples");
        if let Some(label) = label {
            assert!(
                mine.iter().any(|s| s.labels.contains_key(*label)),
                "{name} carries label {label}"
            );
        }
    }

    // Figures come from their sources: transport, simulator, processor counters, /proc.
    let bucket = "kafka_send_duration_seconds_bucket";
    for (name, labels, want) in [
        ("kafka_messages_sent_total", &[][..], 50.0),
        ("kafka_send_errors_total", &[], 3.0),
        ("kafka_batches_sent_total", &[], 5.0),
        ("kafka_producer_buffer_depth", &[], 12.0),
        ("kafka_consumer_lag", &[], 77.0),
        ("kafka_broker_connected", &[], 1.0),
        (bucket, &[("le", "0.0025")], 0.0),
        (bucket, &[("le", "0.005")], 40.0),
        (bucket, &[("le", "0.05")], 50.0),
        (bucket, &[("le", "+Inf")], 50.0),
        ("kafka_send_duration_seconds_count", &[], 50.0),
        ("device_data_generated_total", &[], 123.0),
        ("iot_messages_total", &[("status", "success")], 10.0),
        ("iot_messages_total", &[("status", "failed")], 2.0),
        ("iot_dead_letters_total", &[("reason", "schema")], 2.0),
        ("iot_sequence_gaps_total", &[], 4.0),
        ("iot_websocket_messages_dropped_total", &[], 0.0),
    ] {
        assert_eq!(e.value(name, labels), Some(want), "{name}{labels:?}");
    }
    let rss = e
        .value("process_resident_memory_bytes", &[])
        .expect("RSS on Linux");
    assert!(rss > 1e6, "resident memory {rss}");
    // A fresh test process may not have used a whole 10 ms tick yet.
    assert!(e.value("process_cpu_seconds_total", &[]).expect("CPU") >= 0.0);
}
