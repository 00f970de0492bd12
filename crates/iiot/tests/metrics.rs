//! `/metrics` as Prometheus sees it, and the monitoring files that read it.
//!
//! - A real server (both listeners on port 0) is scraped over TCP; the text is parsed and every
//!   SPEC §8 family must be there with `# HELP`, `# TYPE` and samples, with the transport's and
//!   the simulator's figures.
//! - Every metric a Prometheus rule, a promtool test or a Grafana panel in `monitoring/` uses
//!   must be one `iiot` exports (or a recording rule, or Prometheus's own `up`), so a renamed
//!   metric cannot leave a silent alert or an empty panel behind.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, RwLock};
use std::time::Instant;

use async_trait::async_trait;
use iiot::config::Config;
use iiot::http::AppState;
use iiot::http::metrics::{METRICS, series_names};
use iiot::processor::ProcessorStats;
use iiot::simulator::SimStats;
use iiot::store::{Store, StoreConfig};
use iiot_model::InvalidReason;
use iiot_transport::{
    BackendMetrics, Bus, Publisher, SEND_DURATION_BOUNDS_MS, Subscriber, Transport, TransportError,
};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
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

    async fn is_ready(&self) -> bool {
        true
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

/// GET `path` from `addr` over a plain TCP connection; returns the head and the body.
async fn http_get(addr: std::net::SocketAddr, path: &str) -> (String, String) {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", addr.port()))
        .await
        .expect("connect");
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("request");
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .await
        .expect("response");
    let (head, body) = response.split_once("\r\n\r\n").expect("head and body");
    (head.to_owned(), body.to_owned())
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
    let hub = iiot::hub::Hub::new(iiot::server::hub_config(&config));
    let (commands, _keep_open) = mpsc::channel(1);
    let state = AppState {
        store: Arc::new(RwLock::new(Store::new(StoreConfig::default()))),
        commands,
        config: Arc::new(config.clone()),
        stats,
        transport: Arc::new(Reporting {
            bus: iiot::pipeline::bus_for(&config),
            metrics: backend_figures(),
        }),
        started: Instant::now(),
        hub: Some(hub.clone()),
        simulator: Some(simulator),
    };
    let server = iiot::server::start(&config, state, hub)
        .await
        .expect("server starts");

    let (head, body) = http_get(server.http_addr, "/metrics").await;
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
    for (name, labels, want) in [
        ("kafka_messages_sent_total", &[][..], 50.0),
        ("kafka_send_errors_total", &[], 3.0),
        ("kafka_batches_sent_total", &[], 5.0),
        ("kafka_producer_buffer_depth", &[], 12.0),
        ("kafka_consumer_lag", &[], 77.0),
        ("kafka_broker_connected", &[], 1.0),
        (
            "kafka_send_duration_seconds_bucket",
            &[("le", "0.0025")],
            0.0,
        ),
        (
            "kafka_send_duration_seconds_bucket",
            &[("le", "0.005")],
            40.0,
        ),
        (
            "kafka_send_duration_seconds_bucket",
            &[("le", "0.05")],
            50.0,
        ),
        (
            "kafka_send_duration_seconds_bucket",
            &[("le", "+Inf")],
            50.0,
        ),
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

// ---- monitoring/ -------------------------------------------------------------------------------

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn files_in(dir: &str, extension: &str) -> Vec<PathBuf> {
    let dir = repo_root().join(dir);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.expect("entry").path())
        .filter(|p| p.to_string_lossy().ends_with(extension))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no *{extension} in {}", dir.display());
    files
}

/// PromQL words that are not metric names.
const PROMQL_WORDS: &[&str] = &[
    "and", "or", "unless", "bool", "offset", "inf", "nan", "Inf", "NaN",
];
/// Clauses whose parenthesised list holds label names.
const LABEL_LISTS: &[&str] = &[
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];
/// Series Prometheus makes itself.
const PROMETHEUS_OWN: &[&str] = &["up"];

/// Skips from `chars[i]` (an opening `open`) past its matching `close`, minding quoted strings.
fn skip_group(chars: &[char], mut i: usize, open: char, close: char) -> usize {
    let mut depth = 0;
    while i < chars.len() {
        match chars[i] {
            '"' | '\'' | '`' => i = skip_string(chars, i),
            c if c == open => depth += 1,
            c if c == close => {
                depth -= 1;
                if depth == 0 {
                    return i + 1;
                }
            }
            _ => {}
        }
        i += 1;
    }
    i
}

/// Index of the closing quote of the string starting at `chars[i]`.
fn skip_string(chars: &[char], i: usize) -> usize {
    let quote = chars[i];
    let mut j = i + 1;
    while j < chars.len() && chars[j] != quote {
        j += if chars[j] == '\\' { 2 } else { 1 };
    }
    j
}

/// The metric (or recording rule) names a PromQL expression reads: identifiers outside label
/// matchers, ranges, strings and label lists that are not function calls or keywords.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let chars: Vec<char> = expr.chars().collect();
    let mut names = BTreeSet::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '"' || c == '\'' || c == '`' {
            i = skip_string(&chars, i) + 1;
        } else if c == '{' {
            i = skip_group(&chars, i, '{', '}');
        } else if c == '[' {
            i = skip_group(&chars, i, '[', ']');
        } else if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            let start = i;
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || "_:".contains(chars[i])) {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let mut next = i;
            while next < chars.len() && chars[next].is_whitespace() {
                next += 1;
            }
            // `sum by (job) (…)`: an aggregation whose modifier comes before its argument.
            let rest: String = chars[next..].iter().take(8).collect();
            let aggregation = ["by", "without"].iter().any(|m| {
                rest.strip_prefix(m)
                    .is_some_and(|r| r.starts_with([' ', '(']))
            });
            let call = chars.get(next) == Some(&'(') || aggregation;
            if call && LABEL_LISTS.contains(&word.as_str()) {
                i = skip_group(&chars, next, '(', ')');
            } else if !call && !PROMQL_WORDS.contains(&word.as_str()) {
                names.insert(word);
            }
        } else if c.is_ascii_digit() || c == '$' {
            // Numbers, durations (5m) and Grafana variables ($__rate_interval).
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || "._$".contains(chars[i]))
            {
                i += 1;
            }
        } else {
            i += 1;
        }
    }
    names
}

/// The value of every `key:` line of a YAML file (single-line values only; a block scalar
/// fails the test so that no expression escapes the check).
fn yaml_values(text: &str, key: &str) -> Vec<String> {
    let prefix = format!("{key}:");
    text.lines()
        .map(str::trim_start)
        .map(|l| l.strip_prefix("- ").unwrap_or(l))
        .filter_map(|l| l.strip_prefix(prefix.as_str()))
        .map(|v| {
            let v = v.trim();
            assert!(
                !v.is_empty() && !v.starts_with('|') && !v.starts_with('>'),
                "keep `{key}:` values on one line so this check can read them: {v:?}"
            );
            v.trim_matches(|c| c == '\'' || c == '"').to_owned()
        })
        .collect()
}

fn exported_series() -> BTreeSet<String> {
    METRICS.iter().flat_map(series_names).collect()
}

/// Every PromQL expression of the dashboard, with its panel title.
fn dashboard_exprs(dashboard: &Value) -> Vec<(String, String)> {
    dashboard["panels"]
        .as_array()
        .expect("panels")
        .iter()
        .flat_map(|p| {
            let title = p["title"].as_str().expect("title").to_owned();
            p["targets"]
                .as_array()
                .expect("targets")
                .iter()
                .map(move |t| (title.clone(), t["expr"].as_str().expect("expr").to_owned()))
        })
        .collect()
}

#[test]
fn the_name_extractor_finds_metrics_and_skips_the_rest() {
    let got = metric_names(
        r#"sum by (job, le) (rate(a_total{job=~"x.*",le!="{b}"}[5m])) / on (job) group_left (x) job:b:rate5m > bool 0.5 and c offset 1m unless max(d[$__rate_interval]) or 1e3"#,
    );
    let want: BTreeSet<String> = ["a_total", "job:b:rate5m", "c", "d"]
        .map(String::from)
        .into();
    assert_eq!(got, want);
}

#[test]
fn every_metric_the_rules_tests_and_dashboard_use_is_exported() {
    let exported = exported_series();
    let mut recorded = BTreeSet::new();
    let mut alerts = BTreeSet::new();
    let mut uses: Vec<(String, String)> = Vec::new(); // (where, expression)
    for path in files_in("monitoring/rules", ".yml") {
        let text = read(&path);
        recorded.extend(yaml_values(&text, "record"));
        alerts.extend(yaml_values(&text, "alert"));
        let file = path.display().to_string();
        uses.extend(
            yaml_values(&text, "expr")
                .into_iter()
                .map(|e| (file.clone(), e)),
        );
    }
    for path in files_in("monitoring/tests", ".test.yml") {
        let text = read(&path);
        let file = path.display().to_string();
        uses.extend(
            yaml_values(&text, "expr")
                .into_iter()
                .map(|e| (file.clone(), e)),
        );
        // Input series are written as series selectors: `name{labels}`.
        uses.extend(
            yaml_values(&text, "series")
                .into_iter()
                .map(|e| (file.clone(), e)),
        );
    }
    let dashboards = files_in("monitoring/grafana/dashboards", ".json");
    let mut titles = BTreeSet::new();
    for path in &dashboards {
        let dashboard: Value = serde_json::from_str(&read(path)).expect("dashboard JSON");
        for (title, expr) in dashboard_exprs(&dashboard) {
            titles.insert(title.clone());
            uses.push((format!("{} panel {title:?}", path.display()), expr));
        }
    }

    let mut unknown = Vec::new();
    for (place, expr) in &uses {
        for name in metric_names(expr) {
            let known = exported.contains(&name)
                || recorded.contains(&name)
                || PROMETHEUS_OWN.contains(&name.as_str());
            if !known {
                unknown.push(format!("{place}: {name} (in {expr})"));
            }
        }
    }
    assert!(
        unknown.is_empty(),
        "metrics not exported by iiot:\n{}",
        unknown.join("\n")
    );

    // What the design notes ask for is all there.
    for alert in [
        "HighErrorRate",
        "HighSendLatency",
        "HighMemoryUsage",
        "HighCPUUsage",
        "HighQueueDepth",
        "KafkaConnectionFailure",
        "DeviceDataGenerationStopped",
        "LowBatchEfficiency",
    ] {
        assert!(alerts.contains(alert), "alert rule {alert}");
    }
    assert!(recorded.len() >= 7, "{} recording rules", recorded.len());
    for title in [
        "Messages Sent Rate",
        "Error Rate",
        "Send Latency (95th percentile)",
        "Active Devices",
        "Message Throughput Over Time",
        "Latency Distribution",
        "System Resources",
        "Queue Depth",
        "Device Data Generation",
        "Batch Processing Efficiency",
    ] {
        assert!(titles.contains(title), "dashboard panel {title:?}");
    }
    // Every recording rule is read by an alert or a panel (no dead rules).
    let used: BTreeSet<String> = uses.iter().flat_map(|(_, e)| metric_names(e)).collect();
    for r in &recorded {
        assert!(used.contains(r), "recording rule {r} is used nowhere");
    }
}

#[test]
fn the_dashboard_uses_the_provisioned_datasource() {
    let provisioned =
        read(&repo_root().join("monitoring/grafana/provisioning/datasources/prometheus.yml"));
    let uids = yaml_values(&provisioned, "uid");
    for path in files_in("monitoring/grafana/dashboards", ".json") {
        let dashboard: Value = serde_json::from_str(&read(&path)).expect("dashboard JSON");
        for panel in dashboard["panels"].as_array().expect("panels") {
            let uid = panel["datasource"]["uid"].as_str().expect("datasource uid");
            assert!(uids.iter().any(|u| u == uid), "{}: {uid}", panel["title"]);
        }
    }
}
