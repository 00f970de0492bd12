//! The numbers behind `/api/stats` and `/metrics`: one [`Snapshot`] taken from the shared
//! counters and the store, rendered as JSON or as Prometheus text.
//!
//! Metric names, types and help texts live in [`METRICS`] and nowhere else. Labels take values
//! from closed sets only (outcome, dead-letter reason, device status, alert status), never a
//! device id, so the number of series is fixed.

use std::fmt::Write as _;
use std::sync::atomic::Ordering;

use iiot_model::InvalidReason;
use serde_json::{Map, Value, json};

use super::state::AppState;
use crate::hub::{LATENCY_BOUNDS_MS, LatencySnapshot};
use crate::store::{DeviceStatus, StatusCounts};

/// The Prometheus type of a metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    /// Only goes up.
    Counter,
    /// Goes up and down.
    Gauge,
    /// Quantiles plus `_sum` and `_count`.
    Summary,
    /// Cumulative `_bucket{le}` plus `_sum` and `_count`.
    Histogram,
}

impl MetricKind {
    fn as_str(self) -> &'static str {
        match self {
            MetricKind::Counter => "counter",
            MetricKind::Gauge => "gauge",
            MetricKind::Summary => "summary",
            MetricKind::Histogram => "histogram",
        }
    }
}

/// One metric family of `/metrics`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetricDef {
    /// Its name.
    pub name: &'static str,
    /// Its type.
    pub kind: MetricKind,
    /// Its `# HELP` text.
    pub help: &'static str,
}

const fn def(name: &'static str, kind: MetricKind, help: &'static str) -> MetricDef {
    MetricDef { name, kind, help }
}

/// `status="success"` (valid readings, late ones included) or `status="failed"` (dead letters).
pub const MESSAGES: MetricDef = def(
    "iot_messages_total",
    MetricKind::Counter,
    "Messages consumed from the device-data topic, by outcome (success: a valid reading; failed: dead-lettered).",
);
/// Dead letters by `reason` (every reason always present).
pub const DEAD_LETTERS: MetricDef = def(
    "iot_dead_letters_total",
    MetricKind::Counter,
    "Messages sent to the dead-letter topic, by reason.",
);
/// Readings missing according to `seq` jumps.
pub const SEQ_GAPS: MetricDef = def(
    "iot_sequence_gaps_total",
    MetricKind::Counter,
    "Readings missing according to per-device seq jumps.",
);
/// Valid readings older than one already processed for their device.
pub const LATE: MetricDef = def(
    "iot_late_messages_total",
    MetricKind::Counter,
    "Valid readings that arrived after a newer reading of the same device.",
);
/// Devices whose `seq` started over.
pub const RESTARTS: MetricDef = def(
    "iot_device_restarts_total",
    MetricKind::Counter,
    "Device restarts detected from seq (a lower seq with a newer event time).",
);
/// Devices online now (the design notes' name).
pub const ACTIVE_DEVICES: MetricDef = def(
    "iot_active_devices_total",
    MetricKind::Gauge,
    "Devices online now (fresh data, no fault).",
);
/// Devices by `status`.
pub const DEVICES: MetricDef = def(
    "iot_devices",
    MetricKind::Gauge,
    "Devices known to the store, by status.",
);
/// Alerts open (active or acknowledged).
pub const ALERTS_OPEN: MetricDef = def(
    "iot_alerts_open",
    MetricKind::Gauge,
    "Alerts open now (active or acknowledged).",
);
/// Alert status changes by `status`.
pub const ALERTS: MetricDef = def(
    "iot_alerts_total",
    MetricKind::Counter,
    "Alert status changes published, by the status moved to.",
);
/// Alerts and dead letters that failed to publish.
pub const PUBLISH_ERRORS: MetricDef = def(
    "iot_publish_errors_total",
    MetricKind::Counter,
    "Processor outputs (alerts, dead letters) that failed to publish.",
);
/// Event time → processed, as a summary.
pub const PROCESSING_DURATION: MetricDef = def(
    "iot_message_processing_duration_seconds",
    MetricKind::Summary,
    "Time from a reading's event timestamp to its processing, since start.",
);
/// WebSocket clients connected now.
pub const WEBSOCKET_CONNECTIONS: MetricDef = def(
    "iot_websocket_connections_total",
    MetricKind::Gauge,
    "WebSocket clients connected now.",
);
/// Event time → written to a WebSocket client, as a histogram.
pub const EVENT_TO_CLIENT: MetricDef = def(
    "iot_event_to_client_latency_seconds",
    MetricKind::Histogram,
    "Time from a reading's event timestamp to its delivery to a WebSocket client, per delivery.",
);
/// Bytes held by the live store.
pub const STORE_MEMORY: MetricDef = def(
    "iot_store_memory_bytes",
    MetricKind::Gauge,
    "Bytes held by the live store (estimated from capacities).",
);
/// Seconds since the server started.
pub const UPTIME: MetricDef = def(
    "iot_uptime_seconds",
    MetricKind::Gauge,
    "Seconds since the server started.",
);

/// Every metric family `/metrics` exposes, in the order rendered.
pub const METRICS: &[MetricDef] = &[
    MESSAGES,
    DEAD_LETTERS,
    SEQ_GAPS,
    LATE,
    RESTARTS,
    ACTIVE_DEVICES,
    DEVICES,
    ALERTS_OPEN,
    ALERTS,
    PUBLISH_ERRORS,
    PROCESSING_DURATION,
    WEBSOCKET_CONNECTIONS,
    EVENT_TO_CLIENT,
    STORE_MEMORY,
    UPTIME,
];

/// Event → processed latency over everything so far, in microseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Latency {
    /// Median.
    pub p50_us: u64,
    /// 99th percentile.
    pub p99_us: u64,
    /// Largest.
    pub max_us: u64,
    /// Readings measured.
    pub count: u64,
    /// Sum of all latencies.
    pub sum_us: f64,
}

/// The counters at one moment.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    /// Seconds since start.
    pub uptime_s: f64,
    /// Valid, in-order readings.
    pub processed: u64,
    /// Valid readings that came late.
    pub late: u64,
    /// Dead letters, in [`InvalidReason::ALL`] order.
    pub dead_letters: [u64; InvalidReason::ALL.len()],
    /// Readings missing by `seq`.
    pub seq_gaps: u64,
    /// Device restarts by `seq`.
    pub seq_restarts: u64,
    /// Open alerts.
    pub alerts_open: u64,
    /// Alerts raised, acknowledged, resolved.
    pub alerts: [u64; 3],
    /// Failed publications.
    pub publish_errors: u64,
    /// Devices by status.
    pub devices: StatusCounts,
    /// Bytes held by the store.
    pub store_memory: usize,
    /// Event → processed latency.
    pub latency: Latency,
    /// WebSocket clients connected (0 until the hub is wired in).
    pub websocket_connections: u64,
    /// Event → client latency of WebSocket deliveries (empty without a hub).
    pub event_to_client: LatencySnapshot,
}

impl Snapshot {
    /// Reads the counters, and the store under its read lock (one pass over the devices).
    pub fn take(state: &AppState) -> Snapshot {
        let s = &state.stats;
        let load = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
        let (devices, store_memory) = {
            let store = state.read_store();
            (
                store.counts_by_status(crate::now_ms()),
                store.memory_estimate(),
            )
        };
        let latency = {
            let h = s.latency_us.lock().unwrap_or_else(|e| e.into_inner());
            Latency {
                p50_us: h.value_at_quantile(0.5),
                p99_us: h.value_at_quantile(0.99),
                max_us: h.max(),
                count: h.len(),
                sum_us: h.mean() * h.len() as f64,
            }
        };
        Snapshot {
            uptime_s: state.started.elapsed().as_secs_f64(),
            processed: load(&s.processed),
            late: load(&s.late),
            dead_letters: InvalidReason::ALL.map(|r| s.dead_letters_of(r)),
            seq_gaps: load(&s.seq_gaps),
            seq_restarts: load(&s.seq_restarts),
            alerts_open: s.alerts_open.load(Ordering::Relaxed).max(0) as u64,
            alerts: [
                load(&s.alerts_raised),
                load(&s.alerts_acknowledged),
                load(&s.alerts_resolved),
            ],
            publish_errors: load(&s.publish_errors),
            devices,
            store_memory,
            latency,
            websocket_connections: state.hub.as_ref().map_or(0, |h| h.connections() as u64),
            event_to_client: state.hub.as_ref().map(|h| h.latency()).unwrap_or_default(),
        }
    }

    fn dead_letters_total(&self) -> u64 {
        self.dead_letters.iter().sum()
    }

    fn status_count(&self, status: DeviceStatus) -> usize {
        match status {
            DeviceStatus::Online => self.devices.online,
            DeviceStatus::Offline => self.devices.offline,
            DeviceStatus::Fault => self.devices.fault,
        }
    }

    /// The `/api/stats` body.
    pub fn to_json(&self) -> Value {
        // Event timestamps have millisecond resolution: finer digits would be noise.
        let ms = |us: u64| (us as f64 / 1000.0).round();
        let dead: Map<String, Value> = InvalidReason::ALL
            .iter()
            .zip(self.dead_letters)
            .map(|(r, n)| (r.as_str().to_owned(), json!(n)))
            .collect();
        let d = &self.devices;
        json!({
            "uptime_seconds": self.uptime_s,
            "throughput": {
                "processed_total": self.processed,
                "late_total": self.late,
                "dead_letters_total": self.dead_letters_total(),
                "per_second": self.processed as f64 / self.uptime_s.max(1e-3),
            },
            "latency_ms": {
                "p50": ms(self.latency.p50_us),
                "p99": ms(self.latency.p99_us),
                "max": ms(self.latency.max_us),
                "count": self.latency.count,
            },
            "dead_letters": dead,
            "seq_gaps": self.seq_gaps,
            "devices": {
                "online": d.online,
                "offline": d.offline,
                "fault": d.fault,
                "total": d.online + d.offline + d.fault,
            },
            "alerts": {
                "open": self.alerts_open,
                "raised_total": self.alerts[0],
                "acknowledged_total": self.alerts[1],
                "resolved_total": self.alerts[2],
            },
            "store": { "memory_bytes": self.store_memory },
            "websocket": {
                "connections": self.websocket_connections,
                "event_to_client_ms": {
                    "p50_at_most": self.event_to_client.quantile_ms(0.5),
                    "p99_at_most": self.event_to_client.quantile_ms(0.99),
                    "count": self.event_to_client.count,
                },
            },
        })
    }

    /// The `/metrics` body (Prometheus text exposition format 0.0.4).
    pub fn to_prometheus(&self) -> String {
        let mut out = Exposition(String::with_capacity(4096));
        let e = &mut out;
        e.family(&MESSAGES);
        e.sample(
            &MESSAGES,
            "",
            &[("status", "success")],
            self.processed + self.late,
        );
        e.sample(
            &MESSAGES,
            "",
            &[("status", "failed")],
            self.dead_letters_total(),
        );
        e.family(&DEAD_LETTERS);
        for (r, n) in InvalidReason::ALL.iter().zip(self.dead_letters) {
            e.sample(&DEAD_LETTERS, "", &[("reason", r.as_str())], n);
        }
        e.single(&SEQ_GAPS, self.seq_gaps);
        e.single(&LATE, self.late);
        e.single(&RESTARTS, self.seq_restarts);
        e.single(&ACTIVE_DEVICES, self.devices.online);
        e.family(&DEVICES);
        for s in DeviceStatus::ALL {
            e.sample(
                &DEVICES,
                "",
                &[("status", s.as_str())],
                self.status_count(s),
            );
        }
        e.single(&ALERTS_OPEN, self.alerts_open);
        e.family(&ALERTS);
        for (status, n) in ["active", "acknowledged", "resolved"]
            .into_iter()
            .zip(self.alerts)
        {
            e.sample(&ALERTS, "", &[("status", status)], n);
        }
        e.single(&PUBLISH_ERRORS, self.publish_errors);
        e.family(&PROCESSING_DURATION);
        let secs = |us: u64| us as f64 / 1e6;
        let l = &self.latency;
        e.sample(
            &PROCESSING_DURATION,
            "",
            &[("quantile", "0.5")],
            secs(l.p50_us),
        );
        e.sample(
            &PROCESSING_DURATION,
            "",
            &[("quantile", "0.99")],
            secs(l.p99_us),
        );
        e.sample(&PROCESSING_DURATION, "_sum", &[], l.sum_us / 1e6);
        e.sample(&PROCESSING_DURATION, "_count", &[], l.count);
        e.single(&WEBSOCKET_CONNECTIONS, self.websocket_connections);
        e.family(&EVENT_TO_CLIENT);
        let l = &self.event_to_client;
        let mut cumulative = 0;
        for (i, bound) in LATENCY_BOUNDS_MS.iter().enumerate() {
            cumulative += l.buckets.get(i).copied().unwrap_or(0);
            let le = format!("{}", *bound as f64 / 1000.0);
            e.sample(&EVENT_TO_CLIENT, "_bucket", &[("le", &le)], cumulative);
        }
        e.sample(&EVENT_TO_CLIENT, "_bucket", &[("le", "+Inf")], l.count);
        e.sample(&EVENT_TO_CLIENT, "_sum", &[], l.sum_ms as f64 / 1000.0);
        e.sample(&EVENT_TO_CLIENT, "_count", &[], l.count);
        e.single(&STORE_MEMORY, self.store_memory);
        e.single(&UPTIME, self.uptime_s);
        out.0
    }
}

/// Writes the text format. Writing to a `String` cannot fail, hence the ignored results.
struct Exposition(String);

impl Exposition {
    fn family(&mut self, m: &MetricDef) {
        let _ = writeln!(self.0, "# HELP {} {}", m.name, m.help);
        let _ = writeln!(self.0, "# TYPE {} {}", m.name, m.kind.as_str());
    }

    fn sample(
        &mut self,
        m: &MetricDef,
        suffix: &str,
        labels: &[(&str, &str)],
        value: impl std::fmt::Display,
    ) {
        let _ = write!(self.0, "{}{suffix}", m.name);
        if !labels.is_empty() {
            self.0.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                // Label values come from closed sets of plain words: nothing to escape.
                let _ = write!(self.0, "{}{k}=\"{v}\"", if i == 0 { "" } else { "," });
            }
            self.0.push('}');
        }
        let _ = writeln!(self.0, " {value}");
    }

    fn single(&mut self, m: &MetricDef, value: impl std::fmt::Display) {
        self.family(m);
        self.sample(m, "", &[], value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot() -> Snapshot {
        let mut dead_letters = [0; InvalidReason::ALL.len()];
        dead_letters[InvalidReason::Schema.index()] = 3;
        Snapshot {
            uptime_s: 10.0,
            processed: 100,
            late: 2,
            dead_letters,
            seq_gaps: 4,
            seq_restarts: 0,
            alerts_open: 1,
            alerts: [2, 1, 1],
            publish_errors: 0,
            devices: StatusCounts {
                online: 5,
                offline: 1,
                fault: 2,
            },
            store_memory: 1234,
            latency: Latency {
                p50_us: 1_500,
                p99_us: 20_000,
                max_us: 30_000,
                count: 100,
                sum_us: 250_000.0,
            },
            websocket_connections: 0,
            event_to_client: LatencySnapshot::default(),
        }
    }

    #[test]
    fn every_family_has_help_type_and_a_sample() {
        let text = snapshot().to_prometheus();
        for m in METRICS {
            assert!(text.contains(&format!("# HELP {} ", m.name)), "{}", m.name);
            assert!(
                text.contains(&format!("# TYPE {} {}\n", m.name, m.kind.as_str())),
                "{}",
                m.name
            );
            assert!(
                text.lines()
                    .any(|l| !l.starts_with('#') && l.starts_with(m.name)),
                "{}",
                m.name
            );
        }
        let families = text.lines().filter(|l| l.starts_with("# TYPE")).count();
        assert_eq!(families, METRICS.len(), "every family rendered once");
    }

    #[test]
    fn samples_carry_the_counts() {
        let text = snapshot().to_prometheus();
        for line in [
            "iot_messages_total{status=\"success\"} 102",
            "iot_messages_total{status=\"failed\"} 3",
            "iot_dead_letters_total{reason=\"schema\"} 3",
            "iot_dead_letters_total{reason=\"device_limit\"} 0",
            "iot_devices{status=\"fault\"} 2",
            "iot_active_devices_total 5",
            "iot_message_processing_duration_seconds{quantile=\"0.5\"} 0.0015",
            "iot_message_processing_duration_seconds{quantile=\"0.99\"} 0.02",
            "iot_message_processing_duration_seconds_sum 0.25",
            "iot_message_processing_duration_seconds_count 100",
            "iot_websocket_connections_total 0",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
    }

    #[test]
    fn metric_names_are_unique_and_well_formed() {
        let mut names: Vec<_> = METRICS.iter().map(|m| m.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), METRICS.len());
        for n in names {
            assert!(
                n.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
                "{n}"
            );
        }
    }
}
