//! The key table: for every setting its environment name, its path in the config file, its
//! default, what is allowed, and how the text is parsed into (and shown from) [`Config`].
//!
//! Adding a setting is one `key!` line plus its field. All layers hand values over as text (TOML
//! numbers are formatted first), so one parser per key serves flags, environment, `.env` and
//! file alike.

use std::marker::PhantomData;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value as Json;

use super::{Config, LogFormat};
use crate::duration::{format_duration, parse_duration};

/// One setting.
pub(crate) struct Key {
    /// The environment name, e.g. `DEVICE_COUNT`.
    pub env: &'static str,
    /// The dotted path in the config file, e.g. `simulator.device_count`; empty when the key
    /// cannot be set from the file.
    pub toml: &'static str,
    /// The default as text; empty for optional keys (`None`).
    pub default: &'static str,
    /// What is allowed, completing "must be …".
    pub allowed: &'static str,
    /// An empty value means "not set here": the next layer down decides.
    pub unset_if_empty: bool,
    /// Parses the text into its field; `None` if the text is not allowed.
    pub set: fn(&mut Config, &str) -> Option<()>,
    /// The field's current value, for [`Config::redacted`].
    pub get: fn(&Config) -> Json,
}

/// Parses one kind of value and shows it back as JSON.
trait Codec {
    type Out;
    fn parse(&self, text: &str) -> Option<Self::Out>;
    fn show(&self, value: &Self::Out) -> Json;
}

macro_rules! key {
    (optional $($rest:tt)*) => { key!(@ true, $($rest)*) };
    (@ $unset:literal, $env:literal, $toml:literal, $default:literal, $allowed:expr,
        $($field:ident).+ = $codec:expr) => {
        Key {
            env: $env,
            toml: $toml,
            default: $default,
            allowed: $allowed,
            unset_if_empty: $unset,
            set: |c, text| {
                c.$($field).+ = Codec::parse(&$codec, text)?;
                Some(())
            },
            get: |c| Codec::show(&$codec, &c.$($field).+),
        }
    };
    ($($rest:tt)*) => { key!(@ false, $($rest)*) };
}

/// Every setting, in the order of `.env.example`.
#[rustfmt::skip]
pub(crate) static KEYS: &[Key] = &[
    key!(optional "IIOT_CONFIG", "", "", "a path to a TOML config file (default: ./iiot.toml if it exists)",
        config_file = Opt(FilePath)),
    key!(optional "KAFKA_BROKERS", "kafka.brokers", "", "a comma-separated list of host:port (empty = embedded bus)",
        kafka.brokers = Opt(Text(is_broker_list))),
    key!("KAFKA_TOPIC_DEVICE_DATA", "kafka.topic_device_data", "device-data", TOPIC,
        kafka.topic_device_data = Text(is_topic)),
    key!("KAFKA_TOPIC_ALERTS", "kafka.topic_alerts", "alerts", TOPIC,
        kafka.topic_alerts = Text(is_topic)),
    key!("KAFKA_TOPIC_DLQ", "kafka.topic_dlq", "device-data-dlq", TOPIC,
        kafka.topic_dlq = Text(is_topic)),
    key!("KAFKA_TOPIC_COMMANDS", "kafka.topic_commands", "alert-commands", TOPIC,
        kafka.topic_commands = Text(is_topic)),
    key!("KAFKA_TOPIC_RULES", "kafka.topic_rules", "alert-rules", TOPIC,
        kafka.topic_rules = Text(is_topic)),
    key!("KAFKA_TOPIC_SILENCES", "kafka.topic_silences", "alert-silences", TOPIC,
        kafka.topic_silences = Text(is_topic)),
    key!("KAFKA_TOPIC_NOTIFY_LOG", "kafka.topic_notify_log", "notify-log", TOPIC,
        kafka.topic_notify_log = Text(is_topic)),
    key!("KAFKA_TOPIC_ALERT_STATE", "kafka.topic_alert_state", "alert-state", TOPIC,
        kafka.topic_alert_state = Text(is_topic)),
    key!("KAFKA_ASSIGNMENT_STRATEGY", "kafka.assignment_strategy", "eager", "one of eager, cooperative-sticky",
        kafka.assignment_strategy = OneOf(&["eager", "cooperative-sticky"])),
    key!("KAFKA_HEADERS", "kafka.headers", "text", "one of text, any (text: a reading whose record has a header that is not UTF-8 is dead-lettered bad_header; any: headers are not looked at)",
        kafka.headers = OneOf(&["text", "any"])),
    key!("KAFKA_GROUP_ID", "kafka.group_id", "iot-consumer-group", "a non-empty consumer group id without spaces",
        kafka.group_id = Text(is_word)),
    key!("KAFKA_GROUP_NOTIFY", "kafka.group_notify", "iiot-notify", "a non-empty consumer group id without spaces",
        kafka.group_notify = Text(is_word)),
    key!(optional "KAFKA_SECURITY_PROTOCOL", "kafka.security_protocol", "", "one of plaintext, ssl, sasl_plaintext, sasl_ssl",
        kafka.security_protocol = Opt(OneOf(&["plaintext", "ssl", "sasl_plaintext", "sasl_ssl"]))),
    key!(optional "KAFKA_SASL_MECHANISM", "kafka.sasl_mechanism", "", "one of PLAIN, SCRAM-SHA-256, SCRAM-SHA-512",
        kafka.sasl_mechanism = Opt(OneOf(&["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]))),
    key!(optional "KAFKA_SASL_USERNAME", "kafka.sasl_username", "", "a SASL user name",
        kafka.sasl_username = Opt(Text(|_| true))),
    key!(optional "KAFKA_SASL_PASSWORD", "kafka.sasl_password", "", "a SASL password (never shown; or KAFKA_SASL_PASSWORD_FILE)",
        kafka.sasl_password = Opt(Text(|_| true))),
    key!(optional "KAFKA_SSL_CA_LOCATION", "kafka.ssl_ca_location", "", "a path to a PEM file of CA certificates",
        kafka.ssl_ca_location = Opt(Text(is_word))),
    key!(optional "KAFKA_SSL_CERTIFICATE_LOCATION", "kafka.ssl_certificate_location", "", "a path to the client's PEM certificate (mutual TLS)",
        kafka.ssl_certificate_location = Opt(Text(is_word))),
    key!(optional "KAFKA_SSL_KEY_LOCATION", "kafka.ssl_key_location", "", "a path to the client's PEM private key (mutual TLS)",
        kafka.ssl_key_location = Opt(Text(is_word))),
    key!(optional "KAFKA_SSL_KEY_PASSWORD", "kafka.ssl_key_password", "", "the private key's password (never shown; or KAFKA_SSL_KEY_PASSWORD_FILE)",
        kafka.ssl_key_password = Opt(Text(|_| true))),
    key!(optional "KAFKA_PROPERTIES", "kafka.properties", "", "librdkafka properties as name=value pairs separated by ';', e.g. socket.keepalive.enable=true;fetch.min.bytes=1",
        kafka.properties = Opt(Text(is_property_list))),
    key!("KAFKA_ALLOW_INSECURE_TLS", "kafka.allow_insecure_tls", "false", "true or false (true lets KAFKA_PROPERTIES turn off TLS certificate verification: never in production)",
        kafka.allow_insecure_tls = Bool),
    key!("KAFKA_CLIENT_ID", "kafka.client_id", "iiot", "a non-empty client id without spaces",
        kafka.client_id = Text(is_word)),
    key!("KAFKA_COMPRESSION", "kafka.compression", "lz4", "one of none, gzip, snappy, lz4, zstd",
        kafka.compression = OneOf(&["none", "gzip", "snappy", "lz4", "zstd"])),
    key!("KAFKA_LINGER", "kafka.linger", "5ms", "a duration from 0ms to 10s, like 5ms",
        kafka.linger = Dur(Duration::ZERO, Duration::from_secs(10))),
    key!("KAFKA_BATCH_SIZE", "kafka.batch_size", "1000000", "an integer from 1 to 2147483647 (bytes per partition batch)",
        kafka.batch_size = int::<usize>(1, 2_147_483_647)),
    key!("KAFKA_QUEUE_MAX_MESSAGES", "kafka.queue_max_messages", "100000", "an integer from 1 to 10000000 (messages waiting for delivery; publishers wait beyond)",
        kafka.queue_max_messages = int::<usize>(1, 10_000_000)),
    key!("KAFKA_PARTITIONS_DEVICE_DATA", "kafka.partitions_device_data", "10", PARTITIONS,
        kafka.partitions_device_data = int::<i32>(1, 10_000)),
    key!("KAFKA_PARTITIONS_ALERTS", "kafka.partitions_alerts", "3", PARTITIONS,
        kafka.partitions_alerts = int::<i32>(1, 10_000)),
    key!("KAFKA_PARTITIONS_DLQ", "kafka.partitions_dlq", "1", PARTITIONS,
        kafka.partitions_dlq = int::<i32>(1, 10_000)),
    key!("KAFKA_REPLICATION_FACTOR", "kafka.replication_factor", "1", "an integer from 1 to 32 (used when creating missing topics)",
        kafka.replication_factor = int::<i32>(1, 32)),
    key!("HTTP_PORT", "http.port", "8080", PORT,
        http_port = int::<u16>(0, 65535)),
    key!("HTTP_HEADER_TIMEOUT", "http.header_timeout", "10s", "a duration from 100ms to 30s (time to send a request's headers, and longest idle keep-alive)",
        http_header_timeout = Dur(Duration::from_millis(100), Duration::from_secs(30))),
    key!("HTTP_IDLE_TIMEOUT", "http.idle_timeout", "30s", "a duration from 100ms to 10m (a connection on which no byte moves for this long is closed)",
        http_idle_timeout = Dur(Duration::from_millis(100), Duration::from_secs(600))),
    key!("HTTP_MAX_CONNECTIONS", "http.max_connections", "1024", "an integer from 1 to 1000000 (open HTTP connections per port; more get 503 and are closed)",
        http_max_connections = int::<u32>(1, 1_000_000)),
    key!(optional "LISTEN_ADDR", "http.listen_addr", "", "an IP address to listen on, e.g. 0.0.0.0 or ::1 (empty = 0.0.0.0 when users or tokens exist, else 127.0.0.1)",
        listen_addr = Opt(Ip)),
    key!("ALLOW_ANONYMOUS", "auth.allow_anonymous", "false", "true or false (true: with no users or tokens, serve anyone who can reach the port, on any LISTEN_ADDR)",
        auth.allow_anonymous = Bool),
    key!(optional "AUTH_FILE", "auth.file", "", "a file path (empty = DATA_DIR/auth.toml; managed with `iiot auth`)",
        auth.file = Opt(FilePath)),
    key!(optional "AUTH_TOKEN", "auth.token", "", "an API token of 16 to 512 characters without whitespace (never shown; or AUTH_TOKEN_FILE, e.g. a container secret)",
        auth.token = Opt(Text(|t| (16..=512).contains(&t.len()) && !t.contains(char::is_whitespace)))),
    key!("AUTH_TOKEN_ROLE", "auth.token_role", "admin", "one of viewer, operator, admin (the role of AUTH_TOKEN)",
        auth.token_role = RoleName),
    key!("AUTH_SESSION_TTL", "auth.session_ttl", "12h", "a duration from 1m to 30d (a dashboard login lasts this long)",
        auth.session_ttl = Dur(Duration::from_secs(60), Duration::from_secs(30 * 86_400))),
    key!(optional "TLS_CERT_FILE", "tls.cert_file", "", "a PEM file with the certificate chain (with TLS_KEY_FILE: serve HTTPS and WSS; re-read when it changes)",
        tls.cert_file = Opt(FilePath)),
    key!(optional "TLS_KEY_FILE", "tls.key_file", "", "a PEM file with the private key of TLS_CERT_FILE",
        tls.key_file = Opt(FilePath)),
    key!("WEBSOCKET_PORT", "websocket.port", "8081", PORT,
        websocket.port = int::<u16>(0, 65535)),
    key!("WEBSOCKET_PATH", "websocket.path", "/ws", "a URL path starting with '/', without spaces",
        websocket.path = Text(is_url_path)),
    key!("WEBSOCKET_MAX_CONNECTIONS", "websocket.max_connections", "1000", "an integer from 1 to 1000000",
        websocket.max_connections = int::<u32>(1, 1_000_000)),
    key!("WEBSOCKET_REPLAY_CAPACITY", "websocket.replay_capacity", "100000", "an integer from 0 to 10000000 (0 = no resume)",
        websocket.replay_capacity = int::<usize>(0, 10_000_000)),
    key!("WEBSOCKET_PING_INTERVAL", "websocket.ping_interval", "20s", "a duration from 100ms to 10m (a client that sends nothing, not even a pong, for two intervals is closed)",
        websocket.ping_interval = Dur(Duration::from_millis(100), Duration::from_secs(600))),
    key!("WEBSOCKET_MAX_SUBSCRIBED_IDS", "websocket.max_subscribed_ids", "100000", "an integer from 0 to 10000000 (device ids held by all clients' subscriptions together)",
        websocket.max_subscribed_ids = int::<usize>(0, 10_000_000)),
    key!(optional "WEBSOCKET_AUTH_TOKEN", "websocket.auth_token", "", "a token clients must send (?token= or Authorization: Bearer); empty = none (never shown)",
        websocket.auth_token = Opt(Text(|t| !t.contains(char::is_whitespace)))),
    key!(optional "WEBSOCKET_ALLOWED_ORIGINS", "websocket.allowed_origins", "", "a comma-separated list of the Origin values of pages allowed to use the WebSocket and the API's state-changing requests; empty = this server's own pages only",
        websocket.allowed_origins = Opt(Text(|t| !t.contains(char::is_whitespace)))),
    key!(optional "MQTT_URL", "mqtt.url", "", "an mqtt://host[:port] or mqtts://host[:port] (TLS) URL (empty = no MQTT)",
        mqtt.url = Opt(Text(is_mqtt_url))),
    key!("MQTT_TOPICS", "mqtt.topics", "iiot/devices/+/telemetry", "a comma-separated list of MQTT topic filters ('+' and '#' only as whole levels, '#' last)",
        mqtt.topics = Text(is_topic_filter_list)),
    key!(optional "MQTT_CLIENT_ID", "mqtt.client_id", "", "a client id of 1 to 128 of a-z A-Z 0-9 . _ - (empty = iiot-<hostname>)",
        mqtt.client_id = Opt(Text(is_client_id))),
    key!(optional "MQTT_USERNAME", "mqtt.username", "", "an MQTT user name",
        mqtt.username = Opt(Text(|_| true))),
    key!(optional "MQTT_PASSWORD", "mqtt.password", "", "an MQTT password (never shown; or MQTT_PASSWORD_FILE)",
        mqtt.password = Opt(Text(|_| true))),
    key!("MQTT_MAX_IN_FLIGHT", "mqtt.max_in_flight", "1000", "an integer from 1 to 65535 (MQTT messages received but not yet acknowledged)",
        mqtt.max_in_flight = int::<u16>(1, 65_535)),
    key!("MQTT_PROTOCOL", "mqtt.protocol", "3.1.1", "one of 3.1.1, 5 (the protocol version of the MQTT source and of the simulator's MQTT output)",
        mqtt.protocol = OneOf(&["3.1.1", "5"])),
    key!(optional "MQTT_SHARED_GROUP", "mqtt.shared_group", "", "a shared subscription group name of a-z A-Z 0-9 . _ - (subscribes to $share/<group>/<filter>: instances in one group split the messages; empty = none)",
        mqtt.shared_group = Opt(Text(is_client_id))),
    key!(optional "MQTT_CA_LOCATION", "mqtt.ca_location", "", "a path to a PEM file of CA certificates for mqtts:// (empty = the system's)",
        mqtt.ca_location = Opt(Text(is_word))),
    key!(optional "MQTT_CERTIFICATE_LOCATION", "mqtt.certificate_location", "", "a path to the client's PEM certificate (mutual TLS)",
        mqtt.certificate_location = Opt(Text(is_word))),
    key!(optional "MQTT_KEY_LOCATION", "mqtt.key_location", "", "a path to the client's unencrypted PEM private key (mutual TLS)",
        mqtt.key_location = Opt(Text(is_word))),
    key!("MQTT_PAYLOAD", "mqtt.payload", "json", "one of json, sparkplug (Sparkplug B; MQTT_TOPICS left at its default then means spBv1.0/+/+/+,spBv1.0/+/+/+/+)",
        sparkplug.payload = OneOf(&["json", "sparkplug"])),
    key!("SPARKPLUG_DEVICE_ID", "sparkplug.device_id", "{device}", "a template of {group}, {node}, {device} and text naming {device} or {node}",
        sparkplug.device_id = Text(super::sparkplug::is_device_id_template)),
    key!(optional "SPARKPLUG_METRICS", "sparkplug.metrics", "", "comma-separated 'metric name=field' pairs, field one of temperature, humidity, pressure, current, switch_status, battery, signal_strength, ignore",
        sparkplug.metrics = Text(super::sparkplug::is_metric_mapping)),
    key!("SPARKPLUG_MAX_DEVICES", "sparkplug.max_devices", "100000", "an integer from 1 to 10000000 (Sparkplug edge nodes and devices tracked together)",
        sparkplug.max_devices = int::<usize>(1, 10_000_000)),
    key!("INGEST_MAX_BODY_BYTES", "http.ingest_max_body_bytes", "4194304", "an integer from 1024 to 1073741824 (largest POST /api/ingest body)",
        ingest_max_body_bytes = int::<usize>(1024, 1 << 30)),
    key!("SIMULATOR", "simulator.enabled", "on", "on or off (off: `iiot run` monitors only real devices)",
        simulator.enabled = OnOff),
    key!("DEVICE_COUNT", "simulator.device_count", "1000", "an integer from 0 to 1000000 (0: no simulator in `iiot run`)",
        simulator.device_count = int::<u32>(0, 1_000_000)),
    key!("SEND_INTERVAL", "simulator.send_interval", "5s", "a duration from 1ms to 1h, like 100ms, 5s or 1m",
        simulator.send_interval = Dur(Duration::from_millis(1), Duration::from_secs(3600))),
    key!("DATA_VARIANCE", "simulator.data_variance", "0.1", "a number from 0 to 10",
        simulator.data_variance = Float(0.0, 10.0)),
    key!("FAULT_RATE", "simulator.fault_rate", "0.0005", "a number from 0 to 1",
        simulator.fault_rate = Float(0.0, 1.0)),
    key!("MALFORMED_RATE", "simulator.malformed_rate", "0", "a number from 0 to 1",
        simulator.malformed_rate = Float(0.0, 1.0)),
    key!(optional "SIM_SEED", "simulator.seed", "", "an integer from 0 to 18446744073709551615 (empty = random)",
        simulator.seed = Opt(int::<u64>(0, u64::MAX as i128))),
    key!("MAX_MESSAGE_BYTES", "processor.max_message_bytes", "65536", "an integer from 1024 to 10485760",
        processor.max_message_bytes = int::<usize>(1024, 10 * 1024 * 1024)),
    key!("MAX_FUTURE_SKEW", "processor.max_future_skew", "5m", "a duration from 0s to 24h, like 30s or 5m",
        processor.max_future_skew = Dur(Duration::ZERO, Duration::from_secs(24 * 3600))),
    key!("BUS_QUEUE_CAPACITY", "processor.bus_queue_capacity", "65536", "an integer from 16 to 16777216",
        processor.bus_queue_capacity = int::<usize>(16, 16 * 1024 * 1024)),
    key!("MAX_DEVICES", "processor.max_devices", "200000", "an integer from 1 to 10000000",
        processor.max_devices = int::<usize>(1, 10_000_000)),
    key!("PROCESSOR_WORKERS", "processor.workers", "0", "an integer from 0 to 64 (0 = one per CPU core)",
        processor.workers = int::<usize>(0, 64)),
    key!("STATUS_INTERVAL", "processor.status_interval", "10s", "a duration up to 24h, like 10s or 1m (0 = off)",
        processor.status_interval = Dur(Duration::ZERO, Duration::from_secs(24 * 3600))),
    key!("ALERT_TEMPERATURE_HIGH", "alerts.temperature_high", "80", NUMBER,
        thresholds.temperature_high = Float(f64::MIN, f64::MAX)),
    key!("ALERT_TEMPERATURE_LOW", "alerts.temperature_low", "0", NUMBER,
        thresholds.temperature_low = Float(f64::MIN, f64::MAX)),
    key!("ALERT_HUMIDITY_HIGH", "alerts.humidity_high", "90", NUMBER,
        thresholds.humidity_high = Float(f64::MIN, f64::MAX)),
    key!("ALERT_CURRENT_HIGH", "alerts.current_high", "10", NUMBER,
        thresholds.current_high = Float(f64::MIN, f64::MAX)),
    key!("ALERT_BATTERY_LOW", "alerts.battery_low", "20", NUMBER,
        thresholds.battery_low = Float(f64::MIN, f64::MAX)),
    key!(optional "NOTIFY_WEBHOOK_URL", "notify.webhook_url", "", "an http:// or https:// URL: every alert change is POSTed there as JSON (a channel named webhook)",
        notify.webhook_url = Opt(Text(is_http_url))),
    key!(optional "NOTIFY_WEBHOOK_SECRET", "notify.webhook_secret", "", "the HMAC-SHA256 secret of NOTIFY_WEBHOOK_URL's X-IIoT-Signature header (never shown; or NOTIFY_WEBHOOK_SECRET_FILE)",
        notify.webhook_secret = Opt(Text(|_| true))),
    key!(optional "DASHBOARD_URL", "notify.dashboard_url", "", "the dashboard's address as people reach it, for links in notifications (empty = http://localhost:HTTP_PORT)",
        notify.dashboard_url = Opt(Text(is_http_url))),
    key!("NOTIFY_QUEUE_CAPACITY", "notify.queue_capacity", "10000", "an integer from 16 to 1000000 (alert changes waiting for the notifier; beyond it they are dropped and counted)",
        notify.queue_capacity = int::<usize>(16, 1_000_000)),
    key!("HISTORY", "history.enabled", "on", "on or off (off: history is kept in memory only, as far back as the live store goes)",
        history.enabled = OnOff),
    key!("DATA_DIR", "history.data_dir", "./data", "a directory path (created if missing; one running iiot per directory)",
        history.data_dir = FilePath),
    key!("HISTORY_FLUSH_INTERVAL", "history.flush_interval", "1s", "a duration from 10ms to 1m (at most this much is lost on a crash)",
        history.flush_interval = Dur(Duration::from_millis(10), Duration::from_secs(60))),
    key!("HISTORY_SEGMENT_SPAN", "history.segment_span", "5m", "a duration from 1s to 1h (arrival time one raw segment covers; the unit retention drops)",
        history.segment_span = Dur(Duration::from_secs(1), Duration::from_secs(3600))),
    key!("HISTORY_RAW_RETENTION", "history.raw_retention", "7d", "a duration from 1s to 366d",
        history.raw_retention = Dur(Duration::from_secs(1), Duration::from_secs(366 * 86_400))),
    key!("HISTORY_ROLLUP_1M_RETENTION", "history.rollup_1m_retention", "90d", "a duration from 1s to 10y",
        history.rollup_1m_retention = Dur(Duration::from_secs(1), Duration::from_secs(3653 * 86_400))),
    key!("HISTORY_ROLLUP_1H_RETENTION", "history.rollup_1h_retention", "2y", "a duration from 1s to 20y",
        history.rollup_1h_retention = Dur(Duration::from_secs(1), Duration::from_secs(7305 * 86_400))),
    key!("HISTORY_ALERT_RETENTION", "history.alert_retention", "1y", "a duration from 1s to 20y (resolved alerts; open ones are always kept)",
        history.alert_retention = Dur(Duration::from_secs(1), Duration::from_secs(7305 * 86_400))),
    key!(optional "HISTORY_DATABASE_URL", "history.database_url", "", "a postgres://user@host:port/database URL (never shown; or HISTORY_DATABASE_URL_FILE); history and export are then answered from PostgreSQL",
        history.database_url = Opt(Text(crate::history::database::is_database_url))),
    key!(optional "HISTORY_DATABASE_PASSWORD", "history.database_password", "", "the PostgreSQL password, when not in HISTORY_DATABASE_URL (never shown; or HISTORY_DATABASE_PASSWORD_FILE)",
        history.database_password = Opt(Text(|_| true))),
    key!("HISTORY_DATABASE_POOL_SIZE", "history.database_pool_size", "4", "an integer from 1 to 64 (connections each process keeps to the history database; 1 for a server that takes one connection)",
        history.database_pool_size = int::<usize>(1, 64)),
    key!("HISTORY_DATABASE_TIMESCALEDB", "history.database_timescaledb", "auto", "one of auto, off (auto: a new history database is made of TimescaleDB hypertables when the server has the extension; existing ones keep their layout)",
        history.database_timescaledb = OneOf(&["auto", "off"])),
    key!("HISTORY_DATABASE_SPOOL_MAX_BYTES", "history.database_spool_max_bytes", "1073741824", "an integer from 0 to 1099511627776 (bytes of readings waiting for the database kept on disk in DATA_DIR/history-db-spool, surviving a restart or kill; past it the oldest are dropped and counted; 0 = in memory only, lost at exit)",
        history.database_spool_max_bytes = int::<u64>(0, 1 << 40)),
    key!("LOG_FORMAT", "log.format", "text", "one of text, json",
        log.format = Format),
    key!(optional "RUST_LOG", "log.level", "info", "a tracing filter such as info or iiot=debug,warn",
        log.level = Text(|s| !s.trim().is_empty())),
];

const TOPIC: &str = "a Kafka topic name: 1 to 249 of a-z A-Z 0-9 . _ -";
const PORT: &str = "a port from 0 to 65535 (0 = any free port)";
const NUMBER: &str = "a finite number";
const PARTITIONS: &str = "an integer from 1 to 10000 (used when creating missing topics)";

/// The key named `env`.
pub(crate) fn by_env(env: &str) -> Option<&'static Key> {
    KEYS.iter().find(|k| k.env == env)
}

/// The key at the dotted file path `toml`.
pub(crate) fn by_toml(toml: &str) -> Option<&'static Key> {
    KEYS.iter().find(|k| !k.toml.is_empty() && k.toml == toml)
}

fn is_topic(s: &str) -> bool {
    (1..=249).contains(&s.len())
        && s != "."
        && s != ".."
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

fn is_word(s: &str) -> bool {
    !s.is_empty() && !s.chars().any(char::is_whitespace)
}

fn is_broker_list(s: &str) -> bool {
    s.split(',').all(is_word)
}

/// `name=value` pairs separated by `;` (see [`super::KafkaSettings::extra_properties`]).
fn is_property_list(s: &str) -> bool {
    super::kafka::parse_properties(s).is_some()
}

fn is_http_url(s: &str) -> bool {
    (s.starts_with("http://") || s.starts_with("https://"))
        && reqwest::Url::parse(s).is_ok()
        && !s.contains(char::is_whitespace)
}

/// `mqtt://host[:port]`, or `mqtts://host[:port]` with the `tls` feature (see
/// [`super::MqttSettings::address`]).
fn is_mqtt_url(s: &str) -> bool {
    (cfg!(feature = "tls") || !s.trim().starts_with("mqtts://"))
        && super::parse_mqtt_url(s).is_some()
}

/// MQTT topic filters: levels separated by `/`; `+` and `#` only as a whole level, `#` last.
fn is_topic_filter_list(s: &str) -> bool {
    s.split(',').all(|filter| {
        let filter = filter.trim();
        let levels: Vec<&str> = filter.split('/').collect();
        !filter.is_empty()
            && !filter.contains(char::is_whitespace)
            && levels.iter().enumerate().all(|(i, level)| {
                (!level.contains(['+', '#']) || *level == "+" || *level == "#")
                    && (*level != "#" || i == levels.len() - 1)
            })
    })
}

fn is_client_id(s: &str) -> bool {
    (1..=128).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

fn is_url_path(s: &str) -> bool {
    s.starts_with('/') && !s.chars().any(|c| c.is_whitespace() || c == '?' || c == '#')
}

/// `true` or `false` (also `1`/`0`, `yes`/`no`, any case).
struct Bool;

impl Codec for Bool {
    type Out = bool;
    fn parse(&self, text: &str) -> Option<bool> {
        match text.trim().to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" => Some(true),
            "false" | "0" | "no" => Some(false),
            _ => None,
        }
    }
    fn show(&self, value: &bool) -> Json {
        Json::from(*value)
    }
}

/// `on` or `off` (also `true`/`false`, `1`/`0`, `yes`/`no`, any case), shown as `on`/`off`.
struct OnOff;

impl Codec for OnOff {
    type Out = bool;
    fn parse(&self, text: &str) -> Option<bool> {
        match text.trim().to_ascii_lowercase().as_str() {
            "on" => Some(true),
            "off" => Some(false),
            other => Bool.parse(other),
        }
    }
    fn show(&self, value: &bool) -> Json {
        Json::from(if *value { "on" } else { "off" })
    }
}

/// An integer in `min..=max`, stored as `T`.
struct Int<T>(i128, i128, PhantomData<T>);

const fn int<T>(min: i128, max: i128) -> Int<T> {
    Int(min, max, PhantomData)
}

impl<T: TryFrom<i128> + Copy + Into<Json>> Codec for Int<T> {
    type Out = T;
    fn parse(&self, text: &str) -> Option<T> {
        let n: i128 = text.trim().parse().ok()?;
        if !(self.0..=self.1).contains(&n) {
            return None;
        }
        T::try_from(n).ok()
    }
    fn show(&self, value: &T) -> Json {
        (*value).into()
    }
}

/// A finite number in `min..=max`.
struct Float(f64, f64);

impl Codec for Float {
    type Out = f64;
    fn parse(&self, text: &str) -> Option<f64> {
        let x: f64 = text.trim().parse().ok()?;
        (x.is_finite() && x >= self.0 && x <= self.1).then_some(x)
    }
    fn show(&self, value: &f64) -> Json {
        Json::from(*value)
    }
}

/// A duration like `5s` in `min..=max`.
struct Dur(Duration, Duration);

impl Codec for Dur {
    type Out = Duration;
    fn parse(&self, text: &str) -> Option<Duration> {
        let d = parse_duration(text).ok()?;
        (self.0..=self.1).contains(&d).then_some(d)
    }
    fn show(&self, value: &Duration) -> Json {
        Json::from(format_duration(*value))
    }
}

/// Text accepted by a check, kept exactly as given.
struct Text(fn(&str) -> bool);

impl Codec for Text {
    type Out = String;
    fn parse(&self, text: &str) -> Option<String> {
        (self.0)(text).then(|| text.to_string())
    }
    fn show(&self, value: &String) -> Json {
        Json::from(value.as_str())
    }
}

/// One of a fixed list of words (exact spelling).
struct OneOf(&'static [&'static str]);

impl Codec for OneOf {
    type Out = String;
    fn parse(&self, text: &str) -> Option<String> {
        let text = text.trim();
        self.0.contains(&text).then(|| text.to_string())
    }
    fn show(&self, value: &String) -> Json {
        Json::from(value.as_str())
    }
}

/// `text` or `json`, any case.
struct Format;

impl Codec for Format {
    type Out = LogFormat;
    fn parse(&self, text: &str) -> Option<LogFormat> {
        match text.trim().to_ascii_lowercase().as_str() {
            "text" => Some(LogFormat::Text),
            "json" => Some(LogFormat::Json),
            _ => None,
        }
    }
    fn show(&self, value: &LogFormat) -> Json {
        Json::from(value.as_str())
    }
}

/// A file path.
struct FilePath;

impl Codec for FilePath {
    type Out = PathBuf;
    fn parse(&self, text: &str) -> Option<PathBuf> {
        Some(PathBuf::from(text))
    }
    fn show(&self, value: &PathBuf) -> Json {
        Json::from(value.display().to_string())
    }
}

/// An IP address.
struct Ip;

impl Codec for Ip {
    type Out = std::net::IpAddr;
    fn parse(&self, text: &str) -> Option<std::net::IpAddr> {
        text.trim()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse()
            .ok()
    }
    fn show(&self, value: &std::net::IpAddr) -> Json {
        Json::from(value.to_string())
    }
}

/// A role name.
struct RoleName;

impl Codec for RoleName {
    type Out = crate::auth::Role;
    fn parse(&self, text: &str) -> Option<crate::auth::Role> {
        crate::auth::Role::parse(text.trim())
    }
    fn show(&self, value: &crate::auth::Role) -> Json {
        Json::from(value.as_str())
    }
}

/// An optional value: empty text is `None`.
struct Opt<C>(C);

impl<C: Codec> Codec for Opt<C> {
    type Out = Option<C::Out>;
    fn parse(&self, text: &str) -> Option<Option<C::Out>> {
        if text.trim().is_empty() {
            return Some(None);
        }
        self.0.parse(text).map(Some)
    }
    fn show(&self, value: &Option<C::Out>) -> Json {
        value.as_ref().map_or(Json::Null, |v| self.0.show(v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_well_formed() {
        for (i, key) in KEYS.iter().enumerate() {
            assert!(
                key.env
                    .bytes()
                    .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_'),
                "{}",
                key.env
            );
            assert!(
                KEYS[..i].iter().all(|k| k.env != key.env),
                "{} twice",
                key.env
            );
            assert!(
                key.toml.is_empty() || KEYS[..i].iter().all(|k| k.toml != key.toml),
                "{} twice",
                key.toml
            );
            assert!(!key.allowed.is_empty(), "{} needs an allowed text", key.env);
        }
    }

    #[test]
    fn every_default_parses() {
        let mut config = Config::default();
        for key in KEYS {
            assert_eq!((key.set)(&mut config, key.default), Some(()), "{}", key.env);
        }
        assert_eq!(config, Config::default());
    }

    #[test]
    fn every_key_rejects_garbage_unless_free_text() {
        let free_text = [
            "IIOT_CONFIG",
            "DATA_DIR",
            "AUTH_FILE",
            "TLS_CERT_FILE",
            "TLS_KEY_FILE",
            "KAFKA_SASL_USERNAME",
            "KAFKA_SASL_PASSWORD",
            "KAFKA_SSL_KEY_PASSWORD",
            "NOTIFY_WEBHOOK_SECRET",
            "MQTT_USERNAME",
            "MQTT_PASSWORD",
            "HISTORY_DATABASE_PASSWORD",
            "RUST_LOG",
        ];
        let mut config = Config::default();
        for key in KEYS.iter().filter(|k| !free_text.contains(&k.env)) {
            assert_eq!((key.set)(&mut config, "not valid ?"), None, "{}", key.env);
        }
    }

    #[test]
    fn numbers_respect_their_ranges() {
        let mut c = Config::default();
        let set = |c: &mut Config, env: &str, v: &str| (by_env(env).expect("known").set)(c, v);
        assert_eq!(set(&mut c, "DEVICE_COUNT", "1000000"), Some(()));
        assert_eq!(set(&mut c, "DEVICE_COUNT", "1000001"), None);
        assert_eq!(set(&mut c, "DEVICE_COUNT", "0"), Some(()));
        assert_eq!(set(&mut c, "DEVICE_COUNT", "-1"), None);
        assert_eq!(set(&mut c, "HTTP_PORT", "65535"), Some(()));
        assert_eq!(set(&mut c, "HTTP_PORT", "65536"), None);
        assert_eq!(set(&mut c, "SEND_INTERVAL", "0"), None);
        assert_eq!(set(&mut c, "SEND_INTERVAL", "1h"), Some(()));
        assert_eq!(set(&mut c, "SEND_INTERVAL", "61m"), None);
        assert_eq!(set(&mut c, "STATUS_INTERVAL", "0"), Some(()));
        assert_eq!(set(&mut c, "FAULT_RATE", "1.5"), None);
        assert_eq!(set(&mut c, "ALERT_CURRENT_HIGH", "inf"), None);
        assert_eq!(set(&mut c, "SIM_SEED", "18446744073709551615"), Some(()));
        assert_eq!(c.simulator.seed, Some(u64::MAX));
        assert_eq!(set(&mut c, "SIM_SEED", ""), Some(()));
        assert_eq!(c.simulator.seed, None);
    }

    #[test]
    fn mqtt_settings_are_checked() {
        let mut c = Config::default();
        let set = |c: &mut Config, env: &str, v: &str| (by_env(env).expect("known").set)(c, v);
        assert_eq!(set(&mut c, "MQTT_URL", "mqtt://broker:1884"), Some(()));
        assert_eq!(c.mqtt.address(), Some(("broker".to_string(), 1884)));
        assert_eq!(set(&mut c, "MQTT_URL", "mqtt://127.0.0.1"), Some(()));
        assert_eq!(c.mqtt.address(), Some(("127.0.0.1".to_string(), 1883)));
        if cfg!(feature = "tls") {
            assert_eq!(set(&mut c, "MQTT_URL", "mqtts://broker"), Some(()));
            assert_eq!(c.mqtt.address(), Some(("broker".to_string(), 8883)));
            assert!(c.mqtt.is_tls());
        }
        for bad in [
            "broker:1883",
            "mqtts://",
            "mqtt://",
            "mqtt://b:x",
            "mqtt://b:1/x",
        ] {
            assert_eq!(set(&mut c, "MQTT_URL", bad), None, "{bad}");
        }
        assert_eq!(set(&mut c, "MQTT_TOPICS", "a/+/b, plant/#"), Some(()));
        assert_eq!(c.mqtt.topic_filters(), ["a/+/b", "plant/#"]);
        for bad in ["a/b+/c", "a/#/c", "a,,b", "a b"] {
            assert_eq!(set(&mut c, "MQTT_TOPICS", bad), None, "{bad}");
        }
        assert_eq!(set(&mut c, "MQTT_PROTOCOL", "5"), Some(()));
        assert!(c.mqtt.is_v5());
        assert_eq!(set(&mut c, "MQTT_PROTOCOL", "4"), None);
        assert_eq!(set(&mut c, "MQTT_SHARED_GROUP", "iiot"), Some(()));
        assert_eq!(
            c.mqtt.subscription_filters(),
            ["$share/iiot/a/+/b", "$share/iiot/plant/#"]
        );
        assert_eq!(set(&mut c, "MQTT_SHARED_GROUP", "a/b"), None);
        assert_eq!(set(&mut c, "SIMULATOR", "off"), Some(()));
        assert!(!c.simulator.enabled);
        assert_eq!(set(&mut c, "SIMULATOR", "ON"), Some(()));
        assert!(c.simulator.enabled);
    }
}
