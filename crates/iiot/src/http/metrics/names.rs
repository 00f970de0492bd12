//! The metric table: every family's name, type and help text, and [`METRICS`], the list
//! `/metrics` renders in order (and tests and `monitoring/` are checked against).

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
    /// The word of the `# TYPE` line.
    pub fn as_str(self) -> &'static str {
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
/// Open alerts read back from the alert-state topic on partition assignment.
pub const ALERTS_RESTORED: MetricDef = def(
    "iot_alerts_restored_total",
    MetricKind::Counter,
    "Open alerts read back from the alert-state topic for newly assigned partitions.",
);
/// How long reading the alert state of newly assigned partitions took.
pub const ALERT_STATE_RESTORE_DURATION: MetricDef = def(
    "iot_alert_state_restore_duration_seconds",
    MetricKind::Summary,
    "Time to read back the alert state of newly assigned partitions (sum and count of reads).",
);
/// Alert-state records another member wrote late, written again with the owner's view.
pub const ALERT_STATES_REWRITTEN: MetricDef = def(
    "iot_alert_states_rewritten_total",
    MetricKind::Counter,
    "Alert-state records another member wrote into a partition after its owner read it back, written again with the owner's view.",
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

/// Stream messages written to WebSocket clients (one per client).
pub const WEBSOCKET_MESSAGES_SENT: MetricDef = def(
    "iot_websocket_messages_sent_total",
    MetricKind::Counter,
    "Stream messages (device_data, alert) written to WebSocket clients, one per client.",
);
/// Stream messages a WebSocket client missed because its queue was full.
pub const WEBSOCKET_DROPPED: MetricDef = def(
    "iot_websocket_messages_dropped_total",
    MetricKind::Counter,
    "Stream messages a WebSocket client missed because its bounded queue was full (slow client).",
);
/// WebSocket clients disconnected for staying too slow.
pub const WEBSOCKET_SLOW_DISCONNECTS: MetricDef = def(
    "iot_websocket_slow_disconnects_total",
    MetricKind::Counter,
    "WebSocket clients disconnected because they stayed too slow to keep up.",
);
/// Refused WebSocket upgrades by `reason` (`limit`: 503; `unauthorized`: 401/403).
pub const WEBSOCKET_REJECTED: MetricDef = def(
    "iot_websocket_rejected_connections_total",
    MetricKind::Counter,
    "WebSocket upgrades refused, by reason (limit: connection limit or shutdown; unauthorized: token or Origin).",
);
/// Messages waiting in WebSocket client queues.
pub const WEBSOCKET_QUEUED: MetricDef = def(
    "iot_websocket_queued_messages",
    MetricKind::Gauge,
    "Messages waiting in WebSocket client queues now, all clients together.",
);
/// WebSocket clients closed for answering no pings.
pub const WEBSOCKET_PING_TIMEOUTS: MetricDef = def(
    "iot_websocket_ping_timeouts_total",
    MetricKind::Counter,
    "WebSocket clients closed because nothing, not even a pong, arrived for two ping intervals.",
);
/// Device ids held by per-device WebSocket subscriptions.
pub const WEBSOCKET_SUBSCRIBED_IDS: MetricDef = def(
    "iot_websocket_subscribed_ids",
    MetricKind::Gauge,
    "Device ids held by per-device WebSocket subscriptions now, all clients together (capped by WEBSOCKET_MAX_SUBSCRIBED_IDS).",
);
/// HTTP connections open.
pub const HTTP_CONNECTIONS: MetricDef = def(
    "iot_http_connections",
    MetricKind::Gauge,
    "HTTP connections open now, every port together (upgraded WebSocket connections not included).",
);
/// HTTP connections refused at the limit.
pub const HTTP_REJECTED: MetricDef = def(
    "iot_http_connections_rejected_total",
    MetricKind::Counter,
    "HTTP connections answered 503 and closed at once because HTTP_MAX_CONNECTIONS were open.",
);
/// HTTP connections closed by a timeout, by `reason` (`header`, `idle`).
pub const HTTP_TIMEOUTS: MetricDef = def(
    "iot_http_connections_timed_out_total",
    MetricKind::Counter,
    "HTTP connections closed by the server, by reason (header: request head not in within HTTP_HEADER_TIMEOUT; idle: no byte for HTTP_IDLE_TIMEOUT).",
);
/// Requests the auth gate refused, by `reason` (`unauthorized`: 401, `forbidden`: 403).
pub const AUTH_REFUSED: MetricDef = def(
    "iot_auth_refused_total",
    MetricKind::Counter,
    "Requests and WebSocket upgrades refused by the auth gate, by reason (unauthorized: 401, no valid credentials; forbidden: 403, role too low, CSRF token missing, foreign page or host).",
);
/// Dashboard logins, by `result` (`ok`, `refused`).
pub const AUTH_LOGINS: MetricDef = def(
    "iot_auth_logins_total",
    MetricKind::Counter,
    "Dashboard logins, by result (ok; refused: unknown user or wrong password).",
);
/// Messages the transport delivered (broker acknowledged; the embedded bus: enqueued).
pub const KAFKA_MESSAGES_SENT: MetricDef = def(
    "kafka_messages_sent_total",
    MetricKind::Counter,
    "Messages this process published that the broker acknowledged (embedded bus: enqueued).",
);
/// Messages that failed delivery.
pub const KAFKA_SEND_ERRORS: MetricDef = def(
    "kafka_send_errors_total",
    MetricKind::Counter,
    "Messages this process published whose delivery failed.",
);
/// Publish → delivered, as a histogram.
pub const KAFKA_SEND_DURATION: MetricDef = def(
    "kafka_send_duration_seconds",
    MetricKind::Histogram,
    "Time from publishing a message to its acknowledgement by the broker.",
);
/// Produce requests sent to brokers.
pub const KAFKA_BATCHES_SENT: MetricDef = def(
    "kafka_batches_sent_total",
    MetricKind::Counter,
    "Produce requests (batches of messages) sent to the brokers.",
);
/// Messages waiting in the producer.
pub const KAFKA_BUFFER_DEPTH: MetricDef = def(
    "kafka_producer_buffer_depth",
    MetricKind::Gauge,
    "Messages waiting in the producer for delivery now.",
);
/// Times a publisher found the producer queue full and waited.
pub const KAFKA_BACKPRESSURE: MetricDef = def(
    "kafka_producer_backpressure_waits_total",
    MetricKind::Counter,
    "Times a publisher found the producer queue full and waited (backpressure, never a drop).",
);
/// Messages this process's consumers have yet to read.
pub const KAFKA_CONSUMER_LAG: MetricDef = def(
    "kafka_consumer_lag",
    MetricKind::Gauge,
    "Messages this process's consumers have yet to read (high watermark minus position, summed over assigned partitions).",
);
/// 1 while the transport reaches its broker.
pub const KAFKA_CONNECTED: MetricDef = def(
    "kafka_broker_connected",
    MetricKind::Gauge,
    "1 while the transport reached its broker lately, 0 otherwise.",
);
/// Readings the simulator published.
pub const DEVICE_DATA_GENERATED: MetricDef = def(
    "device_data_generated_total",
    MetricKind::Counter,
    "Simulated device messages handed to the transport and delivered (valid and malformed alike).",
);
/// Readings the simulator failed to publish.
pub const DEVICE_DATA_ERRORS: MetricDef = def(
    "device_data_generation_errors_total",
    MetricKind::Counter,
    "Simulated device messages the transport failed to take or deliver.",
);
/// MQTT messages received by the MQTT source.
pub const MQTT_RECEIVED: MetricDef = def(
    "iot_mqtt_messages_received_total",
    MetricKind::Counter,
    "Messages the MQTT source received from the broker (redeliveries included).",
);
/// MQTT messages published onto the input topic and acknowledged.
pub const MQTT_FORWARDED: MetricDef = def(
    "iot_mqtt_messages_forwarded_total",
    MetricKind::Counter,
    "MQTT messages published onto the input topic and then acknowledged to the broker (topic_mismatch dead letters not included).",
);
/// MQTT messages received and not yet acknowledged.
pub const MQTT_IN_FLIGHT: MetricDef = def(
    "iot_mqtt_messages_in_flight",
    MetricKind::Gauge,
    "MQTT messages received and not yet acknowledged (at most MQTT_MAX_IN_FLIGHT plus a small read-ahead).",
);
/// 1 while the MQTT source is connected.
pub const MQTT_CONNECTED: MetricDef = def(
    "iot_mqtt_broker_connected",
    MetricKind::Gauge,
    "1 while the MQTT source is connected to its broker, 0 otherwise.",
);
/// MQTT connections lost or refused.
pub const MQTT_CONNECTION_FAILURES: MetricDef = def(
    "iot_mqtt_connection_failures_total",
    MetricKind::Counter,
    "MQTT connections lost or refused (each followed by a reconnect with backoff).",
);
/// MQTT messages the MQTT source dead-lettered itself, by reason.
pub const MQTT_REJECTED: MetricDef = def(
    "iot_mqtt_messages_rejected_total",
    MetricKind::Counter,
    "MQTT messages the MQTT source sent to the dead-letter topic instead of the input topic, by reason (acknowledged once the dead letter is delivered).",
);
/// Age of the oldest MQTT message not yet acknowledged.
pub const MQTT_LAG: MetricDef = def(
    "iot_mqtt_oldest_unacked_age_seconds",
    MetricKind::Gauge,
    "Age of the oldest MQTT message received and not yet acknowledged to the broker, seconds (0 when none is in flight).",
);
/// Sparkplug BIRTH certificates taken, by kind.
pub const SPARKPLUG_BIRTHS: MetricDef = def(
    "iot_sparkplug_births_total",
    MetricKind::Counter,
    "Sparkplug BIRTH certificates the MQTT source took, by kind (node: NBIRTH, device: DBIRTH).",
);
/// Sparkplug DEATH certificates taken, by kind.
pub const SPARKPLUG_DEATHS: MetricDef = def(
    "iot_sparkplug_deaths_total",
    MetricKind::Counter,
    "Sparkplug DEATH certificates that took devices offline, by kind (node: NDEATH, stale wills not counted; device: DDEATH).",
);
/// Sparkplug rebirth requests sent.
pub const SPARKPLUG_REBIRTHS: MetricDef = def(
    "iot_sparkplug_rebirths_requested_total",
    MetricKind::Counter,
    "Rebirth requests (NCMD Node Control/Rebirth) sent to edge nodes after a DATA before BIRTH or with an unknown alias (at most one per node every 5 s).",
);
/// Sparkplug edge nodes tracked.
pub const SPARKPLUG_NODES: MetricDef = def(
    "iot_sparkplug_nodes_tracked",
    MetricKind::Gauge,
    "Sparkplug edge nodes the MQTT source tracks (with the devices, at most SPARKPLUG_MAX_DEVICES).",
);
/// Sparkplug devices tracked.
pub const SPARKPLUG_DEVICES: MetricDef = def(
    "iot_sparkplug_devices_tracked",
    MetricKind::Gauge,
    "Sparkplug devices the MQTT source tracks, edge nodes not included.",
);
/// Readings `POST /api/ingest` took or refused.
pub const INGEST_READINGS: MetricDef = def(
    "iot_ingest_readings_total",
    MetricKind::Counter,
    "Readings sent to POST /api/ingest, by status (accepted: published onto the input topic; rejected: answered with their reason).",
);
/// Resident memory.
pub const PROCESS_RESIDENT_MEMORY: MetricDef = def(
    "process_resident_memory_bytes",
    MetricKind::Gauge,
    "Resident memory size in bytes.",
);
/// Virtual memory.
pub const PROCESS_VIRTUAL_MEMORY: MetricDef = def(
    "process_virtual_memory_bytes",
    MetricKind::Gauge,
    "Virtual memory size in bytes.",
);
/// CPU time.
pub const PROCESS_CPU: MetricDef = def(
    "process_cpu_seconds_total",
    MetricKind::Counter,
    "Total user and system CPU time spent in seconds.",
);
/// Open file descriptors.
pub const PROCESS_OPEN_FDS: MetricDef = def(
    "process_open_fds",
    MetricKind::Gauge,
    "Number of open file descriptors (sockets included).",
);
/// Threads.
pub const PROCESS_THREADS: MetricDef = def(
    "process_threads",
    MetricKind::Gauge,
    "Number of OS threads in the process.",
);

/// Notifications delivered, by `channel` (a configured channel name).
pub const NOTIFY_SENT: MetricDef = def(
    "iot_notifications_sent_total",
    MetricKind::Counter,
    "Notifications delivered, by channel (digests of rate-limited changes included).",
);
/// Notifications given up on, by `channel` and `reason`.
pub const NOTIFY_FAILED: MetricDef = def(
    "iot_notifications_failed_total",
    MetricKind::Counter,
    "Notifications given up on after their retries (or not tried: queue_full), by channel and reason.",
);
/// Attempts after a failed one, by `channel`.
pub const NOTIFY_RETRIES: MetricDef = def(
    "iot_notification_retries_total",
    MetricKind::Counter,
    "Notification attempts after a failed one, by channel.",
);
/// Messages waiting for a channel, by `channel`.
pub const NOTIFY_QUEUE: MetricDef = def(
    "iot_notification_queue_depth",
    MetricKind::Gauge,
    "Notifications waiting in a channel's queue, by channel.",
);
/// Changes a silence kept from a channel, by `channel`.
pub const NOTIFY_SILENCED: MetricDef = def(
    "iot_notifications_silenced_total",
    MetricKind::Counter,
    "Alert changes not notified because a silence matched, by channel.",
);
/// Changes the rate limit held back (told in a digest), by `channel`.
pub const NOTIFY_RATE_LIMITED: MetricDef = def(
    "iot_notifications_rate_limited_total",
    MetricKind::Counter,
    "Alert changes held back by a channel's rate limit and told in a digest instead, by channel.",
);
/// Messages a full channel queue could not take (told in one digest once it had room).
pub const NOTIFY_OVERFLOWED: MetricDef = def(
    "iot_notifications_overflowed_total",
    MetricKind::Counter,
    "Notifications a channel's full queue could not take, told in one digest once it had room, by channel.",
);
/// Notifications not told again: the change was read again and told already.
pub const NOTIFY_REPEATS: MetricDef = def(
    "iot_notifications_repeats_skipped_total",
    MetricKind::Counter,
    "Notifications not sent again because that alert change was told already (read again after a restart, a takeover or a repeat).",
);
/// Changes dropped before the notifier (its intake queue was full).
pub const NOTIFY_DROPPED: MetricDef = def(
    "iot_notifications_dropped_total",
    MetricKind::Counter,
    "Alert changes dropped because the notifier's intake queue was full.",
);
/// Changes waiting for the notifier's dispatcher.
pub const NOTIFY_INTAKE: MetricDef = def(
    "iot_notification_intake_depth",
    MetricKind::Gauge,
    "Alert changes waiting in the notifier's intake queue.",
);
/// Open alerts a silence holds back, told when it ends.
pub const NOTIFY_HELD: MetricDef = def(
    "iot_notifications_held_by_silence",
    MetricKind::Gauge,
    "Open alerts held back by a silence, to be notified when it ends if still open.",
);

/// Readings written to history on disk.
pub const HISTORY_ROWS_WRITTEN: MetricDef = def(
    "iot_history_rows_written_total",
    MetricKind::Counter,
    "Readings written to history on disk (its write-ahead log).",
);
/// Failed history writes.
pub const HISTORY_WRITE_ERRORS: MetricDef = def(
    "iot_history_write_errors_total",
    MetricKind::Counter,
    "Failed history writes (disk full, I/O errors); the readings wait in memory and are written when the disk takes them again.",
);
/// Readings history dropped.
pub const HISTORY_DROPPED: MetricDef = def(
    "iot_history_dropped_total",
    MetricKind::Counter,
    "Readings (and alert changes) not kept in history because too many were waiting for the disk.",
);
/// Readings in memory not yet in a segment.
pub const HISTORY_PENDING: MetricDef = def(
    "iot_history_pending_rows",
    MetricKind::Gauge,
    "Readings held in memory that are not in a segment yet.",
);
/// Flushes of the write-ahead log.
pub const HISTORY_FLUSH_DURATION: MetricDef = def(
    "iot_history_flush_duration_seconds",
    MetricKind::Summary,
    "Time spent writing and syncing the write-ahead log and the alert log, per flush.",
);
/// Bytes on disk, by `tier`.
pub const HISTORY_BYTES: MetricDef = def(
    "iot_history_bytes",
    MetricKind::Gauge,
    "Bytes of history segments on disk, by tier (raw, 1m, 1h).",
);
/// Segment files, by `tier`.
pub const HISTORY_SEGMENTS: MetricDef = def(
    "iot_history_segments",
    MetricKind::Gauge,
    "History segment files, by tier.",
);
/// Oldest event time held, by `tier`.
pub const HISTORY_OLDEST: MetricDef = def(
    "iot_history_oldest_timestamp_seconds",
    MetricKind::Gauge,
    "Event time of the oldest reading or bucket held, by tier (Unix seconds).",
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
    ALERTS_RESTORED,
    ALERT_STATE_RESTORE_DURATION,
    ALERT_STATES_REWRITTEN,
    PUBLISH_ERRORS,
    PROCESSING_DURATION,
    WEBSOCKET_CONNECTIONS,
    EVENT_TO_CLIENT,
    WEBSOCKET_MESSAGES_SENT,
    WEBSOCKET_DROPPED,
    WEBSOCKET_SLOW_DISCONNECTS,
    WEBSOCKET_REJECTED,
    WEBSOCKET_QUEUED,
    WEBSOCKET_PING_TIMEOUTS,
    WEBSOCKET_SUBSCRIBED_IDS,
    HTTP_CONNECTIONS,
    HTTP_REJECTED,
    HTTP_TIMEOUTS,
    AUTH_REFUSED,
    AUTH_LOGINS,
    STORE_MEMORY,
    UPTIME,
    KAFKA_MESSAGES_SENT,
    KAFKA_SEND_ERRORS,
    KAFKA_SEND_DURATION,
    KAFKA_BATCHES_SENT,
    KAFKA_BUFFER_DEPTH,
    KAFKA_BACKPRESSURE,
    KAFKA_CONSUMER_LAG,
    KAFKA_CONNECTED,
    DEVICE_DATA_GENERATED,
    DEVICE_DATA_ERRORS,
    NOTIFY_SENT,
    NOTIFY_FAILED,
    NOTIFY_RETRIES,
    NOTIFY_QUEUE,
    NOTIFY_SILENCED,
    NOTIFY_RATE_LIMITED,
    NOTIFY_OVERFLOWED,
    NOTIFY_REPEATS,
    NOTIFY_DROPPED,
    NOTIFY_INTAKE,
    NOTIFY_HELD,
    MQTT_RECEIVED,
    MQTT_FORWARDED,
    MQTT_IN_FLIGHT,
    MQTT_CONNECTED,
    MQTT_CONNECTION_FAILURES,
    MQTT_REJECTED,
    MQTT_LAG,
    SPARKPLUG_BIRTHS,
    SPARKPLUG_DEATHS,
    SPARKPLUG_REBIRTHS,
    SPARKPLUG_NODES,
    SPARKPLUG_DEVICES,
    INGEST_READINGS,
    HISTORY_ROWS_WRITTEN,
    HISTORY_WRITE_ERRORS,
    HISTORY_DROPPED,
    HISTORY_PENDING,
    HISTORY_FLUSH_DURATION,
    HISTORY_BYTES,
    HISTORY_SEGMENTS,
    HISTORY_OLDEST,
    HISTORY_DB_ROWS_WRITTEN,
    HISTORY_DB_DUPLICATES,
    HISTORY_DB_WRITE_ERRORS,
    HISTORY_DB_LOST,
    HISTORY_DB_BUFFERED,
    HISTORY_DB_SPOOL_BYTES,
    HISTORY_DB_SPOOL_SKIPPED,
    PROCESS_RESIDENT_MEMORY,
    PROCESS_VIRTUAL_MEMORY,
    PROCESS_CPU,
    PROCESS_OPEN_FDS,
    PROCESS_THREADS,
];

/// The series names a Prometheus server stores for `m`: the name itself, plus `_bucket`, `_sum`
/// and `_count` for histograms and `_sum`, `_count` for summaries. Queries may use any of them.
pub fn series_names(m: &MetricDef) -> Vec<String> {
    let suffixes: &[&str] = match m.kind {
        MetricKind::Counter | MetricKind::Gauge => &[""],
        MetricKind::Summary => &["", "_sum", "_count"],
        MetricKind::Histogram => &["_bucket", "_sum", "_count"],
    };
    suffixes.iter().map(|s| format!("{}{s}", m.name)).collect()
}

/// Readings inserted into the history database.
pub const HISTORY_DB_ROWS_WRITTEN: MetricDef = def(
    "iot_history_db_rows_written_total",
    MetricKind::Counter,
    "Readings inserted into the PostgreSQL history by this process (new ones only).",
);
/// Readings the history database held already.
pub const HISTORY_DB_DUPLICATES: MetricDef = def(
    "iot_history_db_duplicates_total",
    MetricKind::Counter,
    "Readings offered to the PostgreSQL history that it held already (redeliveries), not added again.",
);
/// Failed history database writes.
pub const HISTORY_DB_WRITE_ERRORS: MetricDef = def(
    "iot_history_db_write_errors_total",
    MetricKind::Counter,
    "Failed writes to the PostgreSQL history; the readings wait (in the spool on disk, or a bounded memory buffer) and are retried.",
);
/// Readings lost because the history database's buffer was full.
pub const HISTORY_DB_LOST: MetricDef = def(
    "iot_history_db_lost_total",
    MetricKind::Counter,
    "Readings not written to the PostgreSQL history because the spool (or memory buffer) of readings waiting for it was full.",
);
/// Readings waiting for the history database.
pub const HISTORY_DB_BUFFERED: MetricDef = def(
    "iot_history_db_buffered_rows",
    MetricKind::Gauge,
    "Readings waiting for the PostgreSQL history to take them again, in the spool on disk or in memory.",
);
/// Bytes of the history database's spool.
pub const HISTORY_DB_SPOOL_BYTES: MetricDef = def(
    "iot_history_db_spool_bytes",
    MetricKind::Gauge,
    "Bytes of the spool files (DATA_DIR/history-db-spool) holding readings waiting for the PostgreSQL history.",
);
/// Bytes of the spool skipped at start.
pub const HISTORY_DB_SPOOL_SKIPPED: MetricDef = def(
    "iot_history_db_spool_skipped_bytes_total",
    MetricKind::Counter,
    "Bytes of the history database spool skipped at start-up: torn or corrupt records a crash left.",
);
