//! Layered configuration: every setting, where its value came from, its validation, and hot
//! reload of the alert rules.
//!
//! Each setting is resolved on its own, highest layer first:
//! command-line flags > environment > `.env` > config file > default. The config file is the one
//! named by `--config`, else by `IIOT_CONFIG` (environment or `.env`), else `./iiot.toml` if it
//! exists. Every setting has one environment name and one path in the file; [`keys`] lists them
//! all with their defaults (`.env.example` is written from it). An invalid value stops loading
//! with a [`ConfigError`] naming the key, the value, its origin and what is allowed.
//!
//! The file mirrors the environment names (`DEVICE_COUNT` is `simulator.device_count`). Values
//! may be numbers or strings; durations are strings such as `"100ms"`, `"5s"`, `"1m"`:
//!
//! ```toml
//! [kafka]                       # no brokers = the embedded bus
//! brokers = "localhost:9092"
//! topic_device_data = "device-data"
//! topic_alerts = "alerts"
//! topic_dlq = "device-data-dlq"
//! topic_commands = "alert-commands"
//! topic_rules = "alert-rules"
//! topic_silences = "alert-silences"
//! topic_notify_log = "notify-log"
//! group_id = "iot-consumer-group"
//! group_notify = "iiot-notify"
//!
//! [http]
//! port = 8080
//! ingest_max_body_bytes = 4194304  # POST /api/ingest
//! header_timeout = "10s"        # also the longest idle keep-alive
//! idle_timeout = "30s"          # no byte either way for this long closes a connection
//! max_connections = 1024        # per port
//!
//! [mqtt]                        # no url = no MQTT source
//! url = "mqtt://localhost:1883"
//! topics = "iiot/devices/+/telemetry"
//! client_id = "iiot-plant-a"    # fixed: the broker keeps the session across restarts
//! max_in_flight = 1000
//! payload = "json"              # or "sparkplug"
//!
//! [sparkplug]                   # with mqtt.payload = "sparkplug"
//! device_id = "{device}"
//!
//! [websocket]
//! port = 8081
//! path = "/ws"
//! max_connections = 1000
//! ping_interval = "20s"         # silent for two intervals: closed
//! max_subscribed_ids = 100000   # all clients together
//! # auth_token = "…"          # clients send ?token= or Authorization: Bearer
//! # allowed_origins = "http://localhost:8080"
//!
//! [simulator]
//! enabled = "on"                # "off": only real devices (MQTT, HTTP ingest)
//! device_count = 1000
//! send_interval = "5s"
//! data_variance = 0.1
//! fault_rate = 0.0005
//! malformed_rate = 0
//! seed = 42                     # omit for a random fleet
//!
//! [processor]
//! max_message_bytes = 65536
//! max_future_skew = "5m"
//! bus_queue_capacity = 65536
//! max_devices = 200000
//! workers = 0                  # 0 = one per CPU core
//! status_interval = "10s"       # "0" = off
//!
//! [alerts]
//! temperature_high = 80
//! temperature_low = 0
//! humidity_high = 90
//! current_high = 10
//! battery_low = 20
//!
//! [[alerts.rules]]              # replaces the default rule of the same alert_type
//! alert_type = "temperature_high"
//! parameter = "temperature"
//! operator = ">"
//! value = 75.0
//! clear = 72.0
//! for = "30s"
//! severity = "critical"
//!
//! [notify]                      # notifications (docs/alerting.md)
//! dashboard_url = "http://localhost:8080"
//! queue_capacity = 10000
//!
//! [[notify.channels]]
//! name = "oncall"
//! kind = "webhook"              # webhook (format = json | slack | teams) | email
//! url = "http://localhost:9000/iiot"
//! max_per_minute = 30
//!
//! [[notify.routes]]             # none = every change to every channel
//! channels = ["oncall"]
//! severity = ["high", "critical"]
//!
//! [log]
//! format = "text"               # text | json
//! level = "info"                # RUST_LOG syntax
//! ```
//!
//! Unknown keys in the file are errors, so a typo never silently falls back to a default.
//! Only the alert rules (and the thresholds they derive from) are reloaded while running, by
//! [`watch_rules`]; other settings take effect on restart.
//!
//! Layout: [`keys`](self::keys()) is the key table (`keys.rs`), loading and layering live in
//! `load.rs`, the file watcher in `watch.rs`, the MQTT settings in `mqtt.rs`. This module never reads or changes the process
//! environment except in [`Sources::from_process`], which only takes a snapshot.

mod file;
mod kafka;
mod keys;
mod load;
mod mqtt;
mod sparkplug;
mod watch;

use std::collections::HashMap;
use std::fmt::{self, Write as _};
use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value as Json;

use crate::alerts::rules::{RuleSet, Thresholds};
use crate::sinks::notify::NotifySettings;

pub use kafka::{KafkaSettings, MANAGED_PROPERTIES};
pub use mqtt::MqttSettings;
pub(crate) use mqtt::parse_mqtt_url;
pub use sparkplug::SparkplugSettings;
pub use watch::watch_rules;

/// The effective configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Kafka connection and topics.
    pub kafka: KafkaSettings,
    /// `HTTP_PORT`: port of the HTTP API (8080).
    pub http_port: u16,
    /// `HTTP_HEADER_TIMEOUT`: a request's headers must arrive within this, counted from when
    /// the server waits for them, so it also ends idle keep-alive connections (10 s).
    pub http_header_timeout: Duration,
    /// `HTTP_IDLE_TIMEOUT`: a connection on which no byte moves either way for this long is
    /// closed: stalled bodies, clients that stop reading an answer (30 s).
    pub http_idle_timeout: Duration,
    /// `HTTP_MAX_CONNECTIONS`: open HTTP connections per listening port; the next one gets a
    /// 503 and is closed (1024). Upgraded WebSocket connections count under
    /// `WEBSOCKET_MAX_CONNECTIONS` instead.
    pub http_max_connections: u32,
    /// `LISTEN_ADDR`: where the listeners bind; `None` = 0.0.0.0 when anyone can sign in,
    /// 127.0.0.1 otherwise (see [`Config::listen_addr`]).
    pub listen_addr: Option<std::net::IpAddr>,
    /// Users, tokens and sessions.
    pub auth: AuthSettings,
    /// HTTPS and WSS.
    pub tls: TlsSettings,
    /// `INGEST_MAX_BODY_BYTES`: largest body `POST /api/ingest` takes (4 MiB); larger is 413.
    pub ingest_max_body_bytes: usize,
    /// The MQTT source.
    pub mqtt: MqttSettings,
    /// `MQTT_PAYLOAD` and the Sparkplug B settings.
    pub sparkplug: SparkplugSettings,
    /// The WebSocket server.
    pub websocket: WebSocketSettings,
    /// The simulated device fleet.
    pub simulator: SimulatorSettings,
    /// Validation and the bus between stages.
    pub processor: ProcessorSettings,
    /// Alert thresholds (`ALERT_*`), the inputs of the default rules.
    pub thresholds: Thresholds,
    /// The alert rules: the defaults for `thresholds`, then `[[alerts.rules]]` from the file.
    pub rules: RuleSet,
    /// The `[[alerts.rules]]` of the file as written (combined with `/api/rules` by the
    /// [`crate::alerts::book::RuleBook`]).
    pub rule_specs: Vec<crate::alerts::RuleSpec>,
    /// Notifications: channels, routes, the one-line webhook.
    pub notify: NotifySettings,
    /// History on disk.
    pub history: HistorySettings,
    /// Logging.
    pub log: LogSettings,
    /// The config file that was loaded, if any (watched for rule changes).
    pub config_file: Option<PathBuf>,
}

/// Who may see and act: see [`crate::auth`].
#[derive(Debug, Clone, PartialEq)]
pub struct AuthSettings {
    /// `ALLOW_ANONYMOUS`: with no users or tokens, serve anyone on any `LISTEN_ADDR` (false:
    /// anonymous access only on loopback).
    pub allow_anonymous: bool,
    /// `AUTH_FILE`: the users and tokens; `None` = `DATA_DIR/auth.toml`.
    pub file: Option<PathBuf>,
    /// `AUTH_TOKEN` (or `AUTH_TOKEN_FILE`): one more API token, e.g. from a container secret;
    /// shown as `***`.
    pub token: Option<String>,
    /// `AUTH_TOKEN_ROLE`: what `AUTH_TOKEN` may do (admin).
    pub token_role: crate::auth::Role,
    /// `AUTH_SESSION_TTL`: how long a dashboard login lasts (12 h).
    pub session_ttl: Duration,
}

/// HTTPS and WSS on both ports, with rustls.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TlsSettings {
    /// `TLS_CERT_FILE`: PEM certificate chain.
    pub cert_file: Option<PathBuf>,
    /// `TLS_KEY_FILE`: PEM private key.
    pub key_file: Option<PathBuf>,
}

/// The WebSocket server.
#[derive(Debug, Clone, PartialEq)]
pub struct WebSocketSettings {
    /// `WEBSOCKET_PORT` (8081).
    pub port: u16,
    /// `WEBSOCKET_PATH`, starts with `/` (`/ws`).
    pub path: String,
    /// `WEBSOCKET_MAX_CONNECTIONS`: clients beyond this are refused (1000).
    pub max_connections: u32,
    /// `WEBSOCKET_REPLAY_CAPACITY`: messages kept for clients that reconnect and resume
    /// (~0.5 KB each; 100000); 0 turns resume off.
    pub replay_capacity: usize,
    /// `WEBSOCKET_PING_INTERVAL`: the server pings every client this often; one that sends
    /// nothing (not even a pong) for two intervals is closed (20 s).
    pub ping_interval: Duration,
    /// `WEBSOCKET_MAX_SUBSCRIBED_IDS`: device ids held by the subscriptions of all clients
    /// together; a `subscribe` beyond it gets an `error` (100000).
    pub max_subscribed_ids: usize,
    /// `WEBSOCKET_AUTH_TOKEN`: when set, clients must present it; shown as `***`.
    pub auth_token: Option<String>,
    /// `WEBSOCKET_ALLOWED_ORIGINS`: comma-separated `Origin` allow-list; `None` = this server's
    /// own pages only (see [`crate::auth::origin_allowed`]).
    pub allowed_origins: Option<String>,
}

/// The simulated device fleet.
#[derive(Debug, Clone, PartialEq)]
pub struct SimulatorSettings {
    /// `SIMULATOR`: whether `iiot run` runs the simulator (on); off, or `DEVICE_COUNT=0`,
    /// monitors only real devices.
    pub enabled: bool,
    /// `DEVICE_COUNT` (1000); 0 = no simulator in `iiot run`.
    pub device_count: u32,
    /// `SEND_INTERVAL`: time between two readings of one device (5 s).
    pub send_interval: Duration,
    /// `DATA_VARIANCE`: relative noise of the values (0.1).
    pub data_variance: f64,
    /// `FAULT_RATE`: probability per reading that a device starts a fault episode (0.0005).
    pub fault_rate: f64,
    /// `MALFORMED_RATE`: share of messages sent broken on purpose (0).
    pub malformed_rate: f64,
    /// `SIM_SEED`: makes the fleet reproducible; `None` = random.
    pub seed: Option<u64>,
}

/// Validation and the bus between stages.
#[derive(Debug, Clone, PartialEq)]
pub struct ProcessorSettings {
    /// `MAX_MESSAGE_BYTES`: larger messages are dead-lettered unparsed (65536).
    pub max_message_bytes: usize,
    /// `MAX_FUTURE_SKEW`: readings stamped further ahead are invalid (5 min).
    pub max_future_skew: Duration,
    /// `BUS_QUEUE_CAPACITY`: bound of the embedded bus queues (65536).
    pub bus_queue_capacity: usize,
    /// `MAX_DEVICES`: most devices each processor worker tracks; readings of further new devices
    /// are dead-lettered `device_limit`, so memory stays bounded (~1 KB each; 200000).
    pub max_devices: usize,
    /// `PROCESSOR_WORKERS`: processors sharing the input's partitions in `iiot run` (each
    /// device on exactly one); 0 = one per CPU core, at most the partition count (0).
    pub workers: usize,
    /// `STATUS_INTERVAL`: period of the status log line; zero = off (10 s).
    pub status_interval: Duration,
}

/// History on disk (`DATA_DIR`): see [`crate::history`].
#[derive(Debug, Clone, PartialEq)]
pub struct HistorySettings {
    /// `HISTORY`: whether readings and alert changes are kept on disk (on).
    pub enabled: bool,
    /// `DATA_DIR`: where (`./data`); one running `iiot` per directory.
    pub data_dir: PathBuf,
    /// `HISTORY_FLUSH_INTERVAL`: writes reach the disk at least this often (1 s).
    pub flush_interval: Duration,
    /// `HISTORY_SEGMENT_SPAN`: arrival time one raw segment covers (5 min).
    pub segment_span: Duration,
    /// `HISTORY_RAW_RETENTION`: raw readings kept (7 d).
    pub raw_retention: Duration,
    /// `HISTORY_ROLLUP_1M_RETENTION`: one-minute rollups kept (90 d).
    pub rollup_1m_retention: Duration,
    /// `HISTORY_ROLLUP_1H_RETENTION`: one-hour rollups kept (2 y).
    pub rollup_1h_retention: Duration,
    /// `HISTORY_ALERT_RETENTION`: resolved alerts kept in the alert log (1 y).
    pub alert_retention: Duration,
    /// `HISTORY_DATABASE_URL`: PostgreSQL history shared by every instance (none).
    pub database_url: Option<String>,
    /// `HISTORY_DATABASE_PASSWORD`: its password, when not in the URL (none; never shown).
    pub database_password: Option<String>,
    /// `HISTORY_DATABASE_POOL_SIZE`: connections per process to that database (4).
    pub database_pool_size: usize,
    /// `HISTORY_DATABASE_TIMESCALEDB`: `auto` (a new database uses TimescaleDB when the server
    /// has it) or `off` (`auto`).
    pub database_timescaledb: String,
    /// `HISTORY_DATABASE_SPOOL_MAX_BYTES`: readings waiting for the database kept on disk
    /// (`DATA_DIR/history-db-spool/`) up to this many bytes (1 GiB); 0 = in memory only.
    pub database_spool_max_bytes: u64,
}

/// Logging.
#[derive(Debug, Clone, PartialEq)]
pub struct LogSettings {
    /// `LOG_FORMAT`.
    pub format: LogFormat,
    /// `RUST_LOG`: a `tracing` filter, kept as given (`info`).
    pub level: String,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

impl SimulatorSettings {
    /// Whether `iiot run` runs the simulator: `SIMULATOR=on` and at least one device.
    pub fn runs(&self) -> bool {
        self.enabled && self.device_count > 0
    }
}

impl LogFormat {
    /// `text` or `json`, as written in the configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        }
    }
}

/// Where a value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// A command-line flag.
    Flag,
    /// The process environment.
    Env,
    /// The `.env` file.
    DotEnv,
    /// The config file at this path.
    File(PathBuf),
    /// The built-in default.
    Default,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Flag => f.write_str("command line"),
            Origin::Env => f.write_str("environment"),
            Origin::DotEnv => f.write_str(".env"),
            Origin::File(path) => write!(f, "{}", path.display()),
            Origin::Default => f.write_str("default"),
        }
    }
}

/// A setting that cannot be used. Displays as one line, e.g.
/// `invalid configuration: DEVICE_COUNT=-5 (from environment): must be an integer from 1 to
/// 1000000`.
///
/// `key` is the environment name, or the path in the file when the value came from the file
/// (`simulator.device_count`, `alerts.rules[1].clear`). When the file itself cannot be read or
/// parsed, `key` is its path and `value` is empty.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    /// The offending key.
    pub key: String,
    /// The value as given (empty for an unreadable file).
    pub value: String,
    /// Where the value came from.
    pub origin: Origin,
    /// What is wrong and what is allowed, e.g. `must be an integer from 1 to 1000000`.
    pub allowed: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let whole_file =
            matches!(&self.origin, Origin::File(p) if p.display().to_string() == self.key);
        let line = if whole_file && self.value.is_empty() {
            format!("invalid configuration: {}: {}", self.key, self.allowed)
        } else {
            // A secret is never shown, whatever its characters; librdkafka properties are
            // shown with their secret values masked.
            let upper = self.key.to_ascii_uppercase();
            // (`…_FILE` names where a secret is read from: a path, shown.)
            let value = if is_secret(&upper) && !upper.ends_with("_FILE") {
                "***".to_string()
            } else if upper == PROPERTIES_KEY || upper == "KAFKA.PROPERTIES" {
                redact_properties(&self.value)
            } else if let Some((first, rest)) = self
                .value
                .split_once('\n')
                .filter(|(_, rest)| rest.contains('='))
            {
                // A quote left open takes the lines after it into the value, other settings
                // (secrets among them) included: only the first line is shown.
                let more = rest.lines().count().max(1);
                format!("{first}… ({more} more lines not shown: is a quote left open?)")
            } else {
                self.value.clone()
            };
            format!(
                "invalid configuration: {}={} (from {}): {}",
                self.key, value, self.origin, self.allowed
            )
        };
        // One line whatever the input held: a TOML string or key may carry `\n` escapes.
        for c in line.chars() {
            if c.is_control() {
                write!(f, "{}", c.escape_debug())?;
            } else {
                f.write_char(c)?;
            }
        }
        Ok(())
    }
}

/// The inputs of [`Config::load`].
///
/// [`Default`] is no file, no `.env`, an empty environment and no flags (for tests).
#[derive(Debug, Clone, Default)]
pub struct Sources {
    /// `--config`. If `None`: `IIOT_CONFIG` from the environment or `.env`, else `./iiot.toml`
    /// if it exists, else no file.
    pub file: Option<PathBuf>,
    /// The `.env` file, normally `Some(".env")`; a missing file is fine.
    pub dotenv: Option<PathBuf>,
    /// A snapshot of the process environment.
    pub env: HashMap<String, String>,
    /// `(ENV_NAME, value)` from command-line flags, e.g. `("DEVICE_COUNT", "100")`.
    pub flags: Vec<(&'static str, String)>,
}

impl Sources {
    /// The sources of a normal start: `./.env` and a snapshot of the process environment
    /// (variables that are not valid UTF-8 are skipped; none of ours can be).
    pub fn from_process(file: Option<PathBuf>, flags: Vec<(&'static str, String)>) -> Sources {
        let env = std::env::vars_os()
            .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
            .collect();
        Sources {
            file,
            dotenv: Some(PathBuf::from(".env")),
            env,
            flags,
        }
    }
}

/// Every key as `(environment name, path in the config file, default, allowed values)`.
///
/// The file path is empty for `IIOT_CONFIG` (it names the file), the default is empty for
/// optional keys. `.env.example` documents exactly these keys.
pub fn keys() -> impl Iterator<Item = (&'static str, &'static str, &'static str, &'static str)> {
    keys::KEYS
        .iter()
        .map(|k| (k.env, k.toml, k.default, k.allowed))
}

impl Config {
    /// Resolves every key from `sources` (flags > environment > `.env` > file > default) and
    /// validates the result, including the alert rules.
    pub fn load(sources: &Sources) -> Result<Config, ConfigError> {
        load::load(sources)
    }

    /// The effective configuration as JSON, laid out like the config file, with secrets
    /// (keys whose name contains `PASSWORD`, `SECRET` or `TOKEN`) shown as `"***"`, and the
    /// rules as `alerts.rules: [{id, source, rule}]` ([`crate::alerts::book::RuleView`]).
    pub fn redacted(&self) -> Json {
        let mut root = serde_json::Map::new();
        for key in keys::KEYS {
            let mut value = (key.get)(self);
            if is_secret(key.env) && !value.is_null() {
                value = Json::from("***");
            }
            if let (true, Json::String(text)) = (key.env == PROPERTIES_KEY, &value) {
                value = Json::from(redact_properties(text));
            }
            let path = if key.toml.is_empty() {
                "config_file"
            } else {
                key.toml
            };
            insert_at(&mut root, path, value);
        }
        // The defaults and the file's rules by id, scopes included; `/config` shows the rules
        // in force instead (API rules too) when the process keeps a rule book.
        let rules = crate::alerts::book::RuleBook::new(self).list();
        insert_at(
            &mut root,
            "alerts.rules",
            serde_json::to_value(rules).unwrap_or(Json::Null),
        );
        let channels = self.notify.channels.iter().map(|c| c.redacted()).collect();
        insert_at(&mut root, "notify.channels", Json::Array(channels));
        let routes = self.notify.routes.iter().map(|r| {
            let mut v = serde_json::to_value(&r.matchers).unwrap_or(Json::Null);
            if let Json::Object(m) = &mut v {
                m.insert("channels".into(), Json::from(r.channels.clone()));
            }
            v
        });
        insert_at(&mut root, "notify.routes", Json::Array(routes.collect()));
        Json::Object(root)
    }
}

impl Default for Config {
    /// Every key at its default, no config file.
    fn default() -> Self {
        load::defaults()
    }
}

/// The key whose value carries librdkafka properties, some of which may be secrets.
pub(crate) const PROPERTIES_KEY: &str = "KAFKA_PROPERTIES";

/// `name=value;…` with the values of secret-looking properties (passwords, secrets, tokens,
/// JAAS configs, inline keys) replaced by `***`, for `/config` and error messages.
pub(crate) fn redact_properties(text: &str) -> String {
    // A secret may itself contain ';': everything after a secret entry up to the next
    // `name=` is part of it.
    let mut in_secret = false;
    text.split(';')
        .map(|entry| match entry.split_once('=') {
            Some((name, _)) if is_secret_property(name) => {
                in_secret = true;
                format!("{name}=***")
            }
            Some(_) => {
                in_secret = false;
                entry.to_string()
            }
            None if in_secret => "***".to_string(),
            None => entry.to_string(),
        })
        .collect::<Vec<_>>()
        .join(";")
}

fn is_secret_property(name: &str) -> bool {
    let name = name.trim().to_ascii_lowercase();
    [
        "password",
        "secret",
        "token",
        "jaas",
        "key.pem",
        "credential",
        "oauthbearer.config",
    ]
    .iter()
    .any(|word| name.contains(word))
}

pub(crate) fn is_secret(env_name: &str) -> bool {
    // A database URL may hold the password.
    ["PASSWORD", "SECRET", "TOKEN", "DATABASE_URL"]
        .iter()
        .any(|word| env_name.contains(word))
}

/// Puts `value` at the dotted `path`, creating the objects on the way.
fn insert_at(root: &mut serde_json::Map<String, Json>, path: &str, value: Json) {
    match path.split_once('.') {
        None => {
            root.insert(path.to_string(), value);
        }
        Some((head, rest)) => {
            let child = root
                .entry(head)
                .or_insert_with(|| Json::Object(serde_json::Map::new()));
            if let Json::Object(map) = child {
                insert_at(map, rest, value);
            }
        }
    }
}
