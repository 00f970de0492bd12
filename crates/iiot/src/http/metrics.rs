//! The numbers behind `/api/stats` and `/metrics`: one [`Snapshot`] taken from the shared
//! counters and the store, rendered as JSON or as Prometheus text.
//!
//! Metric names, types and help texts live in [`METRICS`] (file `metrics/names.rs`) and nowhere
//! else; the monitoring rules and dashboard in `monitoring/` are checked against it. Labels take values from closed
//! sets only (outcome, dead-letter reason, device status, alert status, rejection reason), never
//! a device id, so the number of series is fixed.
//!
//! Every role renders every family's `# HELP`/`# TYPE`; a family whose source the role does not
//! have (the simulator's counters outside `simulate`/`run`, `/proc` figures off Linux) has no
//! samples, so an alert such as "generation stopped" only ever sees the roles that generate.

use std::fmt::Write as _;
use std::sync::atomic::Ordering;

use iiot_model::InvalidReason;
use iiot_transport::{BackendMetrics, SEND_DURATION_BOUNDS_MS};
use serde_json::{Map, Value, json};

use super::state::OpsState;
use crate::hub::{LATENCY_BOUNDS_MS, LatencySnapshot};
use crate::procstats::ProcessStats;
use crate::simulator::SimSnapshot;
use crate::sinks::notify::stats::{ChannelSnapshot, Failure, NotifySnapshot};
use crate::store::{DeviceStatus, StatusCounts};

mod names;
mod sparkplug;
#[cfg(test)]
mod tests;

pub use names::*;

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
    /// Alert state read back on assignment: open alerts, reads, seconds spent.
    pub restored: (u64, u64, f64),
    /// Alert-state records written again over another member's.
    pub states_rewritten: u64,
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
    /// The hub's delivery counters (zero without a hub).
    pub websocket: WebSocketCounters,
    /// The listeners' connection counters.
    pub http: HttpConnCounters,
    /// The transport's own counters (`kafka_*`).
    pub backend: BackendMetrics,
    /// The simulator's counters, when this process runs one.
    pub simulator: Option<SimSnapshot>,
    /// The notifier's counters, when this process notifies.
    pub notify: Option<NotifySnapshot>,
    /// The MQTT source's counters, when this process runs one.
    pub mqtt: Option<MqttSnapshot>,
    /// `POST /api/ingest`: readings accepted and rejected.
    pub ingest: [u64; 2],
    /// History on disk, where it is kept.
    pub history: Option<HistorySnapshot>,
    /// The PostgreSQL history's writes (rows written, duplicates, errors, lost, buffered,
    /// spool bytes, spool bytes skipped).
    pub history_db: Option<[u64; 7]>,
    /// This process's resource use.
    pub process: ProcessStats,
}

/// History on disk, as `/metrics` shows it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HistorySnapshot {
    /// Readings written.
    pub rows_written: u64,
    /// Failed writes.
    pub write_errors: u64,
    /// Readings dropped (too many waiting).
    pub dropped: u64,
    /// Readings in memory not in a segment yet.
    pub pending: u64,
    /// Flushes, and their total time in seconds.
    pub flushes: u64,
    /// Total flush time, seconds.
    pub flush_seconds: f64,
    /// By tier: name, bytes, segments, oldest event time (Unix s).
    pub tiers: Vec<(&'static str, u64, u64, Option<f64>)>,
}

impl HistorySnapshot {
    /// Reads `history`'s counters and usage.
    pub fn take(history: &crate::history::History) -> HistorySnapshot {
        let s = history.stats();
        let load = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
        HistorySnapshot {
            rows_written: load(&s.rows_written),
            write_errors: load(&s.write_errors),
            dropped: load(&s.dropped),
            pending: history.pending_rows() as u64,
            flushes: load(&s.flushes),
            flush_seconds: load(&s.flush_micros) as f64 / 1e6,
            tiers: history
                .usage()
                .into_iter()
                .map(|(t, bytes, n, oldest)| {
                    (
                        t.name(),
                        bytes,
                        n as u64,
                        oldest.map(|ms| ms as f64 / 1000.0),
                    )
                })
                .collect(),
        }
    }
}

/// The MQTT source's counters, as `/metrics` shows them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MqttSnapshot {
    /// Received from the broker.
    pub received: u64,
    /// Published onto the input topic and acknowledged.
    pub forwarded: u64,
    /// Received, not yet acknowledged.
    pub in_flight: u64,
    /// Connected now.
    pub connected: bool,
    /// Connections lost or refused.
    pub connection_failures: u64,
    /// Dead-lettered by the source itself (`topic_mismatch`).
    pub dead_lettered: u64,
    /// Age of the oldest message not yet acknowledged, ms (0: none).
    pub lag_ms: u64,
    /// The Sparkplug decoder's counts, with `MQTT_PAYLOAD=sparkplug`.
    pub sparkplug: Option<crate::mqtt::sparkplug::stats::SparkplugCounts>,
}

/// The WebSocket hub's delivery counters, as `/metrics` shows them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WebSocketCounters {
    /// Stream messages written to clients.
    pub messages_sent: u64,
    /// Stream messages dropped for full client queues.
    pub messages_dropped: u64,
    /// Clients disconnected for staying too slow.
    pub slow_disconnects: u64,
    /// Upgrades refused with 503.
    pub rejected_limit: u64,
    /// Upgrades refused with 401/403.
    pub rejected_unauthorized: u64,
    /// Messages in client queues now.
    pub queued: u64,
    /// Clients closed for answering no pings.
    pub ping_timeouts: u64,
    /// Device ids held by per-device subscriptions now.
    pub subscribed_ids: u64,
}

/// What the listeners did with HTTP connections.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HttpConnCounters {
    /// Open now.
    pub open: u64,
    /// Refused at the limit.
    pub rejected: u64,
    /// Closed: request head not in time.
    pub header_timeouts: u64,
    /// Closed: no byte for the idle timeout.
    pub idle_timeouts: u64,
    /// Refused by the auth gate: 401.
    pub unauthorized: u64,
    /// Refused by the auth gate: 403.
    pub forbidden: u64,
    /// Dashboard logins that succeeded.
    pub logins: u64,
    /// Dashboard logins refused.
    pub login_failures: u64,
}

impl Snapshot {
    /// Reads the counters, and the store under its read lock (one pass over the devices).
    pub fn take(state: &OpsState) -> Snapshot {
        let s = &state.stats;
        let load = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
        let (devices, store_memory) = state.live.as_ref().map_or_else(Default::default, |live| {
            let store = live.read();
            (
                store.counts_by_status(crate::now_ms()),
                store.memory_estimate(),
            )
        });
        let hub = state.live.as_ref().map(|live| &live.hub);
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
            restored: (
                load(&s.alerts_restored),
                load(&s.restores),
                load(&s.restore_us) as f64 / 1e6,
            ),
            states_rewritten: load(&s.alert_states_rewritten),
            devices,
            store_memory,
            latency,
            websocket_connections: hub.map_or(0, |h| h.connections() as u64),
            event_to_client: hub.map(|h| h.latency()).unwrap_or_default(),
            websocket: hub.map_or_else(WebSocketCounters::default, |h| {
                let h = h.stats();
                WebSocketCounters {
                    messages_sent: h.messages_sent,
                    messages_dropped: h.messages_dropped,
                    slow_disconnects: h.clients_disconnected_slow,
                    rejected_limit: h.rejected_connections,
                    rejected_unauthorized: h.rejected_unauthorized,
                    queued: h.queued_messages as u64,
                    ping_timeouts: h.ping_timeouts,
                    subscribed_ids: h.subscribed_ids as u64,
                }
            }),
            http: HttpConnCounters {
                open: load(&state.connections.open),
                rejected: load(&state.connections.rejected),
                header_timeouts: load(&state.connections.header_timeouts),
                idle_timeouts: load(&state.connections.idle_timeouts),
                unauthorized: load(&state.gate.stats.unauthorized),
                forbidden: load(&state.gate.stats.forbidden),
                logins: load(&state.gate.stats.logins),
                login_failures: load(&state.gate.stats.login_failures),
            },
            backend: state.transport.metrics(),
            simulator: state.simulator.as_ref().map(|s| s.snapshot()),
            notify: state.notify.as_ref().map(|n| n.stats.snapshot()),
            mqtt: state.mqtt.as_ref().map(|m| MqttSnapshot {
                received: load(&m.received),
                forwarded: load(&m.forwarded),
                in_flight: load(&m.in_flight),
                connected: m.is_connected(),
                connection_failures: load(&m.connection_failures),
                dead_lettered: load(&m.dead_lettered),
                lag_ms: match m.oldest_unacked_ms.load(Ordering::Relaxed) {
                    0 => 0,
                    at => (crate::now_ms() - at).max(0) as u64,
                },
                sparkplug: m.sparkplug.load(),
            }),
            ingest: [load(&state.ingest.accepted), load(&state.ingest.rejected)],
            history: state
                .live
                .as_ref()
                .and_then(|l| l.history.as_deref())
                .map(HistorySnapshot::take),
            history_db: state.history_db.as_ref().map(|db| {
                let s = db.stats();
                [
                    load(&s.rows_written),
                    load(&s.duplicates),
                    load(&s.write_errors),
                    load(&s.lost),
                    load(&s.buffered),
                    load(&s.spool_bytes),
                    load(&s.spool_skipped_bytes),
                ]
            }),
            process: ProcessStats::current(),
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
                "messages_dropped_total": self.websocket.messages_dropped,
                "ping_timeouts_total": self.websocket.ping_timeouts,
                "subscribed_ids": self.websocket.subscribed_ids,
            },
            "http": {
                "connections": self.http.open,
                "connections_rejected_total": self.http.rejected,
                "header_timeouts_total": self.http.header_timeouts,
                "idle_timeouts_total": self.http.idle_timeouts,
            },
            "transport": {
                "connected": self.backend.connected,
                "messages_sent_total": self.backend.messages_sent,
                "send_errors_total": self.backend.send_errors,
                "consumer_lag": self.backend.consumer_lag,
            },
            "process": {
                "resident_memory_bytes": self.process.resident_memory_bytes,
                "cpu_seconds_total": self.process.cpu_seconds,
            },
        })
    }

    /// The `/metrics` body (Prometheus text exposition format 0.0.4).
    pub fn to_prometheus(&self) -> String {
        let mut out = Exposition(String::with_capacity(4096));
        let e = &mut out;
        self.render_messages(e);
        self.render_devices_and_alerts(e);
        self.render_processing_duration(e);
        self.render_websocket(e);
        self.render_http(e);
        e.single(&STORE_MEMORY, self.store_memory);
        e.single(&UPTIME, self.uptime_s);
        self.render_backend(e);
        self.render_simulator(e);
        self.render_notify(e);
        self.render_ingestion(e);
        self.render_history(e);
        self.render_history_db(e);
        self.render_process(e);
        out.0
    }

    /// Readings by outcome, dead letters by reason, and the `seq` counters.
    fn render_messages(&self, e: &mut Exposition) {
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
            // topic_mismatch and the sparkplug_* reasons are judged before the input topic:
            // never consumed from it.
            self.dead_letters_total()
                - InvalidReason::ALL
                    .iter()
                    .filter(|r| r.judged_at_source())
                    .map(|r| self.dead_letters[r.index()])
                    .sum::<u64>(),
        );
        e.family(&DEAD_LETTERS);
        for (r, n) in InvalidReason::ALL.iter().zip(self.dead_letters) {
            e.sample(&DEAD_LETTERS, "", &[("reason", r.as_str())], n);
        }
        e.single(&SEQ_GAPS, self.seq_gaps);
        e.single(&LATE, self.late);
        e.single(&RESTARTS, self.seq_restarts);
    }

    /// Devices by status, alerts by status, and failed publications.
    fn render_devices_and_alerts(&self, e: &mut Exposition) {
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
        let (restored, reads, seconds) = self.restored;
        e.single(&ALERTS_RESTORED, restored);
        e.family(&ALERT_STATE_RESTORE_DURATION);
        e.sample(&ALERT_STATE_RESTORE_DURATION, "_sum", &[], seconds);
        e.sample(&ALERT_STATE_RESTORE_DURATION, "_count", &[], reads);
        e.single(&ALERT_STATES_REWRITTEN, self.states_rewritten);
        e.single(&PUBLISH_ERRORS, self.publish_errors);
    }

    /// Event → processed latency as a summary, in seconds.
    fn render_processing_duration(&self, e: &mut Exposition) {
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
    }

    /// The hub's connections, event → client histogram and delivery counters.
    fn render_websocket(&self, e: &mut Exposition) {
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
        let w = &self.websocket;
        e.single(&WEBSOCKET_MESSAGES_SENT, w.messages_sent);
        e.single(&WEBSOCKET_DROPPED, w.messages_dropped);
        e.single(&WEBSOCKET_SLOW_DISCONNECTS, w.slow_disconnects);
        e.family(&WEBSOCKET_REJECTED);
        e.sample(
            &WEBSOCKET_REJECTED,
            "",
            &[("reason", "limit")],
            w.rejected_limit,
        );
        e.sample(
            &WEBSOCKET_REJECTED,
            "",
            &[("reason", "unauthorized")],
            w.rejected_unauthorized,
        );
        e.single(&WEBSOCKET_QUEUED, w.queued);
        e.single(&WEBSOCKET_PING_TIMEOUTS, w.ping_timeouts);
        e.single(&WEBSOCKET_SUBSCRIBED_IDS, w.subscribed_ids);
    }

    /// The listeners' connection families.
    fn render_http(&self, e: &mut Exposition) {
        let h = &self.http;
        e.single(&HTTP_CONNECTIONS, h.open);
        e.single(&HTTP_REJECTED, h.rejected);
        e.family(&HTTP_TIMEOUTS);
        e.sample(
            &HTTP_TIMEOUTS,
            "",
            &[("reason", "header")],
            h.header_timeouts,
        );
        e.sample(&HTTP_TIMEOUTS, "", &[("reason", "idle")], h.idle_timeouts);
        e.family(&AUTH_REFUSED);
        e.sample(
            &AUTH_REFUSED,
            "",
            &[("reason", "unauthorized")],
            h.unauthorized,
        );
        e.sample(&AUTH_REFUSED, "", &[("reason", "forbidden")], h.forbidden);
        e.family(&AUTH_LOGINS);
        e.sample(&AUTH_LOGINS, "", &[("result", "ok")], h.logins);
        e.sample(&AUTH_LOGINS, "", &[("result", "refused")], h.login_failures);
    }

    /// The simulator's families: always described, with samples only where a simulator runs.
    fn render_simulator(&self, e: &mut Exposition) {
        e.family(&DEVICE_DATA_GENERATED);
        e.family(&DEVICE_DATA_ERRORS);
        if let Some(sim) = &self.simulator {
            e.sample(&DEVICE_DATA_GENERATED, "", &[], sim.sent);
            e.sample(&DEVICE_DATA_ERRORS, "", &[], sim.errors);
        }
    }

    /// The notifier's families: described always, sampled where a notifier runs, per channel.
    fn render_notify(&self, e: &mut Exposition) {
        let n = self.notify.as_ref();
        let channels = n.map_or(&[][..], |n| &n.channels[..]);
        let per_channel =
            |e: &mut Exposition, m: &MetricDef, value: fn(&ChannelSnapshot) -> u64| {
                e.family(m);
                for c in channels {
                    e.sample(m, "", &[("channel", &c.name)], value(c));
                }
            };
        per_channel(e, &NOTIFY_SENT, |c| c.sent);
        e.family(&NOTIFY_FAILED);
        for c in channels {
            for (reason, count) in Failure::ALL.iter().zip(c.failed) {
                let labels = [("channel", c.name.as_str()), ("reason", reason.as_str())];
                e.sample(&NOTIFY_FAILED, "", &labels, count);
            }
        }
        per_channel(e, &NOTIFY_RETRIES, |c| c.retries);
        per_channel(e, &NOTIFY_QUEUE, |c| c.queued);
        per_channel(e, &NOTIFY_SILENCED, |c| c.silenced);
        per_channel(e, &NOTIFY_RATE_LIMITED, |c| c.rate_limited);
        per_channel(e, &NOTIFY_OVERFLOWED, |c| c.overflowed);
        e.optional(&NOTIFY_REPEATS, n.map(|n| n.repeats));
        e.optional(&NOTIFY_DROPPED, n.map(|n| n.dropped));
        e.optional(&NOTIFY_INTAKE, n.map(|n| n.intake));
        e.optional(&NOTIFY_HELD, n.map(|n| n.held_silenced));
    }

    /// The MQTT source's families (samples only where it runs) and HTTP ingest's.
    fn render_ingestion(&self, e: &mut Exposition) {
        let families = [
            &MQTT_RECEIVED,
            &MQTT_FORWARDED,
            &MQTT_IN_FLIGHT,
            &MQTT_CONNECTED,
            &MQTT_CONNECTION_FAILURES,
        ];
        let values = self.mqtt.map(|s| {
            [
                s.received,
                s.forwarded,
                s.in_flight,
                u64::from(s.connected),
                s.connection_failures,
            ]
        });
        for (i, m) in families.into_iter().enumerate() {
            e.family(m);
            if let Some(values) = values {
                e.sample(m, "", &[], values[i]);
            }
        }
        e.family(&MQTT_REJECTED);
        if let Some(s) = self.mqtt {
            e.sample(
                &MQTT_REJECTED,
                "",
                &[("reason", "topic_mismatch")],
                s.dead_lettered,
            );
        }
        let lag = self.mqtt.map(|s| s.lag_ms as f64 / 1000.0);
        e.optional(&MQTT_LAG, lag);
        self.render_sparkplug(e);
        e.family(&INGEST_READINGS);
        for (status, n) in ["accepted", "rejected"].into_iter().zip(self.ingest) {
            e.sample(&INGEST_READINGS, "", &[("status", status)], n);
        }
    }

    /// History's families: described always, sampled where history is kept.
    fn render_history(&self, e: &mut Exposition) {
        let h = self.history.as_ref();
        e.optional(&HISTORY_ROWS_WRITTEN, h.map(|h| h.rows_written));
        e.optional(&HISTORY_WRITE_ERRORS, h.map(|h| h.write_errors));
        e.optional(&HISTORY_DROPPED, h.map(|h| h.dropped));
        e.optional(&HISTORY_PENDING, h.map(|h| h.pending));
        e.family(&HISTORY_FLUSH_DURATION);
        if let Some(h) = h {
            e.sample(&HISTORY_FLUSH_DURATION, "_sum", &[], h.flush_seconds);
            e.sample(&HISTORY_FLUSH_DURATION, "_count", &[], h.flushes);
        }
        let tiers = h.map_or(&[][..], |h| &h.tiers[..]);
        e.family(&HISTORY_BYTES);
        for (tier, bytes, _, _) in tiers {
            e.sample(&HISTORY_BYTES, "", &[("tier", tier)], bytes);
        }
        e.family(&HISTORY_SEGMENTS);
        for (tier, _, n, _) in tiers {
            e.sample(&HISTORY_SEGMENTS, "", &[("tier", tier)], n);
        }
        e.family(&HISTORY_OLDEST);
        for (tier, _, _, oldest) in tiers {
            if let Some(t) = oldest {
                e.sample(&HISTORY_OLDEST, "", &[("tier", tier)], t);
            }
        }
    }

    /// The PostgreSQL history's families: described always, sampled where it is written.
    fn render_history_db(&self, e: &mut Exposition) {
        let h = self.history_db;
        let defs = [
            &HISTORY_DB_ROWS_WRITTEN,
            &HISTORY_DB_DUPLICATES,
            &HISTORY_DB_WRITE_ERRORS,
            &HISTORY_DB_LOST,
            &HISTORY_DB_BUFFERED,
            &HISTORY_DB_SPOOL_BYTES,
            &HISTORY_DB_SPOOL_SKIPPED,
        ];
        for (i, def) in defs.into_iter().enumerate() {
            e.optional(def, h.map(|h| h[i]));
        }
    }

    /// The `process_*` families, each sampled only where the platform reports it.
    fn render_process(&self, e: &mut Exposition) {
        let p = &self.process;
        e.optional(&PROCESS_RESIDENT_MEMORY, p.resident_memory_bytes);
        e.optional(&PROCESS_VIRTUAL_MEMORY, p.virtual_memory_bytes);
        e.optional(&PROCESS_CPU, p.cpu_seconds);
        e.optional(&PROCESS_OPEN_FDS, p.open_fds);
        e.optional(&PROCESS_THREADS, p.threads);
    }

    /// The `kafka_*` families, from the transport's [`BackendMetrics`].
    fn render_backend(&self, e: &mut Exposition) {
        let b = &self.backend;
        e.single(&KAFKA_MESSAGES_SENT, b.messages_sent);
        e.single(&KAFKA_SEND_ERRORS, b.send_errors);
        e.family(&KAFKA_SEND_DURATION);
        // A backend that does not measure durations leaves the buckets empty: render zeros.
        let mut cumulative = 0;
        for (i, bound_ms) in SEND_DURATION_BOUNDS_MS.iter().enumerate() {
            cumulative += b.send_duration_buckets.get(i).copied().unwrap_or(0);
            let le = format!("{}", bound_ms / 1000.0);
            e.sample(&KAFKA_SEND_DURATION, "_bucket", &[("le", &le)], cumulative);
        }
        let count: u64 = b.send_duration_buckets.iter().sum();
        e.sample(&KAFKA_SEND_DURATION, "_bucket", &[("le", "+Inf")], count);
        e.sample(&KAFKA_SEND_DURATION, "_sum", &[], b.send_duration_sum_s);
        e.sample(&KAFKA_SEND_DURATION, "_count", &[], count);
        e.single(&KAFKA_BATCHES_SENT, b.batches_sent);
        e.single(&KAFKA_BUFFER_DEPTH, b.buffer_depth);
        e.single(&KAFKA_BACKPRESSURE, b.backpressure_waits);
        e.single(&KAFKA_CONSUMER_LAG, b.consumer_lag);
        e.single(&KAFKA_CONNECTED, u8::from(b.connected));
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
                // Label values are closed sets of plain words, or channel names (checked to be plain).
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

    /// The family, and its sample only if the value is known.
    fn optional(&mut self, m: &MetricDef, value: Option<impl std::fmt::Display>) {
        self.family(m);
        if let Some(v) = value {
            self.sample(m, "", &[], v);
        }
    }
}
