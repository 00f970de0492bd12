//! Reading the layers (flags, environment, `.env`, config file) and resolving every key of the
//! table, highest layer first. Nothing here touches the process environment.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::file::{ConfigFile, read_file, scalar_text, whole_file};
use super::keys::{self, KEYS, Key};
use super::{
    AuthSettings, Config, ConfigError, HistorySettings, KafkaSettings, LogFormat, LogSettings,
    MqttSettings, Origin, ProcessorSettings, SimulatorSettings, Sources, TlsSettings,
    WebSocketSettings,
};
use crate::alerts::rules::{RuleError, RuleSet, Thresholds};
use crate::sinks::notify::NotifySettings;

/// The environment name that points at the config file.
const CONFIG_KEY: &str = "IIOT_CONFIG";
/// Used when no file is named and it exists in the working directory.
const DEFAULT_FILE: &str = "iiot.toml";

/// The values one layer gives, by environment name, as text.
pub(super) struct Layer {
    pub(super) origin: Origin,
    pub(super) values: HashMap<String, String>,
}

impl Layer {
    pub(super) fn empty(origin: Origin) -> Layer {
        Layer {
            origin,
            values: HashMap::new(),
        }
    }

    /// The text this layer gives `key`, if it sets it.
    pub(super) fn get(&self, key: &Key) -> Option<&str> {
        let value = self.values.get(key.env)?;
        if key.unset_if_empty && value.trim().is_empty() {
            return None;
        }
        Some(value)
    }
}

/// [`Config::load`].
pub(super) fn load(sources: &Sources) -> Result<Config, ConfigError> {
    let flags = flag_layer(sources)?;
    let mut env = Layer {
        origin: Origin::Env,
        values: sources.env.clone(),
    };
    let mut dotenv = read_dotenv(sources.dotenv.as_deref())?;
    read_secret_files(&mut env)?;
    read_secret_files(&mut dotenv)?;
    let file = match find_file(sources, [&flags, &env, &dotenv]) {
        Some(path) => Some(read_file(&path)?),
        None => None,
    };
    resolve(&[&flags, &env, &dotenv], file.as_ref())
}

/// The config file `sources` select, if any (for the watcher).
pub(super) fn config_path(sources: &Sources) -> Result<Option<PathBuf>, ConfigError> {
    let flags = flag_layer(sources)?;
    let env = Layer {
        origin: Origin::Env,
        values: sources.env.clone(),
    };
    let dotenv = read_dotenv(sources.dotenv.as_deref())?;
    Ok(find_file(sources, [&flags, &env, &dotenv]))
}

/// Every key at its default.
pub(super) fn defaults() -> Config {
    // The table's defaults are valid text for their own parsers, which the
    // `defaults_resolve` test checks, and no layer is involved, so this cannot fail.
    resolve(&[], None).expect("the key table's defaults are valid")
}

fn flag_layer(sources: &Sources) -> Result<Layer, ConfigError> {
    let mut layer = Layer::empty(Origin::Flag);
    for (name, value) in &sources.flags {
        if keys::by_env(name).is_none() {
            return Err(ConfigError {
                key: name.to_string(),
                value: value.clone(),
                origin: Origin::Flag,
                allowed: "is not a configuration key".into(),
            });
        }
        // A later flag wins, as on any command line.
        layer.values.insert(name.to_string(), value.clone());
    }
    Ok(layer)
}

fn read_dotenv(path: Option<&Path>) -> Result<Layer, ConfigError> {
    let mut layer = Layer::empty(Origin::DotEnv);
    let Some(path) = path else {
        return Ok(layer);
    };
    let lines = match dotenvy::from_path_iter(path) {
        Ok(lines) => lines,
        Err(dotenvy::Error::Io(e)) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(layer);
        }
        Err(e) => return Err(whole_file(path, e.to_string())),
    };
    for (n, line) in lines.enumerate() {
        let (name, value) = line.map_err(|e| match e {
            // dotenvy's message quotes the line, and the line may hold a secret.
            dotenvy::Error::LineParse(_, at) => whole_file(
                path,
                format!(
                    "entry {} cannot be parsed (at character {at} of it; its text is not shown: \
                     it may hold a secret)",
                    n + 1
                ),
            ),
            e => whole_file(path, e.to_string()),
        })?;
        layer.values.insert(name, value);
    }
    Ok(layer)
}

/// `--config`, else `IIOT_CONFIG` from a flag, the environment or `.env`, else `./iiot.toml`
/// if it exists.
fn find_file(sources: &Sources, layers: [&Layer; 3]) -> Option<PathBuf> {
    if let Some(path) = &sources.file {
        return Some(path.clone());
    }
    let named = layers.iter().find_map(|layer| {
        let value = layer.values.get(CONFIG_KEY)?;
        (!value.trim().is_empty()).then(|| PathBuf::from(value))
    });
    named.or_else(|| {
        let default = Path::new(DEFAULT_FILE);
        default.is_file().then(|| default.to_path_buf())
    })
}

/// Resolves every key, highest layer first, then the rules (from the file only).
fn resolve(layers: &[&Layer], file: Option<&ConfigFile>) -> Result<Config, ConfigError> {
    let layers: Vec<&Layer> = layers
        .iter()
        .copied()
        .chain(file.map(|f| &f.layer))
        .collect();
    let mut config = blank();
    // IIOT_CONFIG (no file path) was used to find the file, it is not a setting.
    for key in KEYS.iter().filter(|k| !k.toml.is_empty()) {
        let (text, origin) = pick(key, &layers);
        (key.set)(&mut config, text).ok_or_else(|| invalid(key, text, origin))?;
    }
    check_temperature_band(&config, &layers)?;
    check_tls_verification(&config, &layers)?;
    check_mqtt_tls(&config, &layers)?;
    let specs = file.map_or(&[][..], |f| &f.specs[..]);
    config.rules = RuleSet::build(&config.thresholds, specs).map_err(|e| rule_error(e, file))?;
    config.rule_specs = specs.to_vec();
    config.config_file = file.map(|f| f.path.clone());
    if let Some(file) = file {
        config.notify.channels = file.channels.clone();
        config.notify.routes = file.routes.clone();
    }
    check_notify(&config, &layers, file)?;
    Ok(config)
}

/// The text of the highest layer that sets `key`, else its default.
fn pick<'a>(key: &'a Key, layers: &[&'a Layer]) -> (&'a str, Origin) {
    layers
        .iter()
        .find_map(|layer| Some((layer.get(key)?, layer.origin.clone())))
        .unwrap_or((key.default, Origin::Default))
}

fn check_temperature_band(config: &Config, layers: &[&Layer]) -> Result<(), ConfigError> {
    let t = &config.thresholds;
    if t.temperature_low < t.temperature_high {
        return Ok(());
    }
    let key = keys::by_env("ALERT_TEMPERATURE_LOW").ok_or_else(|| ConfigError {
        key: "ALERT_TEMPERATURE_LOW".into(),
        value: t.temperature_low.to_string(),
        origin: Origin::Default,
        allowed: "is missing from the key table".into(),
    })?;
    let (text, origin) = pick(key, layers);
    let mut error = invalid(key, text, origin);
    error.allowed = format!(
        "must be below the high temperature threshold (ALERT_TEMPERATURE_HIGH = {})",
        t.temperature_high
    );
    Err(error)
}

/// Suffix of the variables that name a file holding a secret (`KAFKA_SASL_PASSWORD_FILE`).
pub(super) const FILE_SUFFIX: &str = "_FILE";

/// For every secret key, `NAME_FILE` in this layer means "the value of `NAME` is this file's
/// content" (trailing newline removed), so secrets need not sit in the environment or on a
/// command line (Docker and Kubernetes secrets are mounted as files).
fn read_secret_files(layer: &mut Layer) -> Result<(), ConfigError> {
    for key in KEYS.iter().filter(|k| super::is_secret(k.env)) {
        let file_var = format!("{}{FILE_SUFFIX}", key.env);
        let Some(path) = layer.values.get(&file_var).filter(|p| !p.trim().is_empty()) else {
            continue;
        };
        let path = path.clone();
        let error = |allowed: String| ConfigError {
            key: file_var.clone(),
            value: path.clone(),
            origin: layer.origin.clone(),
            allowed,
        };
        if layer.get(key).is_some() {
            return Err(error(format!(
                "must not be set together with {} (set one of them)",
                key.env
            )));
        }
        let text = std::fs::read_to_string(&path).map_err(|e| {
            error(format!(
                "must name a readable file holding {} ({e})",
                key.env
            ))
        })?;
        let secret = text.trim_end_matches(['\n', '\r']).to_string();
        layer.values.insert(key.env.to_string(), secret);
    }
    Ok(())
}

/// `KAFKA_PROPERTIES` may not set the properties the delivery guarantees rest on, and turning
/// off TLS certificate verification through it needs the loudly named
/// `KAFKA_ALLOW_INSECURE_TLS=true`.
fn check_tls_verification(config: &Config, layers: &[&Layer]) -> Result<(), ConfigError> {
    let problem = if let Some((name, _)) = config.kafka.managed_property() {
        format!(
            "sets {name}, which iiot manages itself (offsets are stored only after a reading's \
             outputs are delivered; the producer is idempotent with acks=all)"
        )
    } else if let Some((name, value)) = config.kafka.insecure_tls_property() {
        if config.kafka.allow_insecure_tls {
            return Ok(());
        }
        format!(
            "turns off TLS certificate verification ({name}={value}); refused unless \
             KAFKA_ALLOW_INSECURE_TLS=true (never in production)"
        )
    } else {
        return Ok(());
    };
    let key = keys::by_env("KAFKA_PROPERTIES").ok_or_else(|| ConfigError {
        key: "KAFKA_PROPERTIES".into(),
        value: String::new(),
        origin: Origin::Default,
        allowed: "is missing from the key table".into(),
    })?;
    let (text, origin) = pick(key, layers);
    let mut error = invalid(key, text, origin);
    error.allowed = problem;
    Err(error)
}

/// An `mqtts://` source's CA, certificate and key files can be read and go together.
#[cfg(feature = "tls")]
fn check_mqtt_tls(config: &Config, layers: &[&Layer]) -> Result<(), ConfigError> {
    let Err(e) = crate::mqtt::tls::client_config(&config.mqtt) else {
        return Ok(());
    };
    let Some(key) = keys::by_env(e.key) else {
        return Err(ConfigError {
            key: e.key.into(),
            value: e.path,
            origin: Origin::Default,
            allowed: e.reason,
        });
    };
    let (text, origin) = pick(key, layers);
    let mut error = invalid(key, text, origin);
    error.allowed = e.reason;
    Err(error)
}

#[cfg(not(feature = "tls"))]
fn check_mqtt_tls(_: &Config, _: &[&Layer]) -> Result<(), ConfigError> {
    Ok(())
}

/// The channels and routes make sense together (names, URLs, addresses, TLS in this build).
fn check_notify(
    config: &Config,
    layers: &[&Layer],
    file: Option<&ConfigFile>,
) -> Result<(), ConfigError> {
    let Err((key, problem)) = config.notify.check() else {
        return Ok(());
    };
    let from_file = file.map_or(0, |f| f.channels.len());
    let index = key
        .strip_prefix("notify.channels[")
        .and_then(|rest| rest.split_once(']'))
        .and_then(|(i, _)| i.parse::<usize>().ok());
    // A channel past the file's own is NOTIFY_WEBHOOK_URL's.
    if index.is_some_and(|i| i >= from_file)
        && let Some(k) = keys::by_env("NOTIFY_WEBHOOK_URL")
    {
        let (text, origin) = pick(k, layers);
        let mut error = invalid(k, text, origin);
        error.allowed = problem;
        return Err(error);
    }
    Err(ConfigError {
        key,
        value: String::new(),
        origin: file.map_or(Origin::Default, |f| f.layer.origin.clone()),
        allowed: problem,
    })
}

fn invalid(key: &Key, text: &str, origin: Origin) -> ConfigError {
    let name = if matches!(origin, Origin::File(_)) {
        key.toml
    } else {
        key.env
    };
    let value = if key.env == super::PROPERTIES_KEY {
        super::redact_properties(text)
    } else {
        text.to_string()
    };
    ConfigError {
        key: name.to_string(),
        value,
        origin,
        allowed: format!("must be {}", key.allowed),
    }
}

/// A rule error, quoting the value from the file when the rule sets it.
fn rule_error(e: RuleError, file: Option<&ConfigFile>) -> ConfigError {
    let Some(file) = file else {
        return ConfigError {
            key: e.key,
            value: String::new(),
            origin: Origin::Default,
            allowed: e.problem,
        };
    };
    let value = e
        .key
        .strip_prefix("alerts.rules[")
        .and_then(|rest| rest.split_once("]."))
        .and_then(|(index, field)| {
            let table = file.raw_rules.get(index.parse::<usize>().ok()?)?;
            scalar_text(table.get(field)?)
        })
        .unwrap_or_default();
    ConfigError {
        key: e.key,
        value,
        origin: file.layer.origin.clone(),
        allowed: e.problem,
    }
}

pub(super) fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// A config whose fields the key table overwrites one by one; the placeholders never escape
/// [`resolve`], which sets every key (and the rules and file) before returning.
fn blank() -> Config {
    Config {
        kafka: KafkaSettings {
            brokers: None,
            topic_device_data: String::new(),
            topic_alerts: String::new(),
            topic_dlq: String::new(),
            topic_commands: String::new(),
            topic_rules: String::new(),
            topic_silences: String::new(),
            topic_notify_log: String::new(),
            topic_alert_state: String::new(),
            assignment_strategy: String::new(),
            headers: String::new(),
            group_id: String::new(),
            group_notify: String::new(),
            security_protocol: None,
            sasl_mechanism: None,
            sasl_username: None,
            sasl_password: None,
            ssl_ca_location: None,
            ssl_certificate_location: None,
            ssl_key_location: None,
            ssl_key_password: None,
            properties: None,
            allow_insecure_tls: false,
            client_id: String::new(),
            compression: String::new(),
            linger: Duration::ZERO,
            batch_size: 0,
            queue_max_messages: 0,
            partitions_device_data: 0,
            partitions_alerts: 0,
            partitions_dlq: 0,
            replication_factor: 0,
        },
        http_port: 0,
        http_header_timeout: Duration::ZERO,
        http_idle_timeout: Duration::ZERO,
        http_max_connections: 0,
        ingest_max_body_bytes: 0,
        listen_addr: None,
        auth: AuthSettings {
            allow_anonymous: false,
            file: None,
            token: None,
            token_role: crate::auth::Role::Admin,
            session_ttl: Duration::ZERO,
        },
        tls: TlsSettings::default(),
        mqtt: MqttSettings {
            url: None,
            topics: String::new(),
            client_id: None,
            username: None,
            password: None,
            max_in_flight: 0,
            protocol: String::new(),
            shared_group: None,
            ca_location: None,
            certificate_location: None,
            key_location: None,
        },
        sparkplug: super::SparkplugSettings {
            payload: String::new(),
            device_id: String::new(),
            metrics: String::new(),
            max_devices: 0,
        },
        websocket: WebSocketSettings {
            port: 0,
            path: String::new(),
            max_connections: 0,
            replay_capacity: 0,
            ping_interval: Duration::ZERO,
            max_subscribed_ids: 0,
            auth_token: None,
            allowed_origins: None,
        },
        simulator: SimulatorSettings {
            enabled: false,
            device_count: 0,
            send_interval: Duration::ZERO,
            data_variance: 0.0,
            fault_rate: 0.0,
            malformed_rate: 0.0,
            seed: None,
        },
        processor: ProcessorSettings {
            max_message_bytes: 0,
            max_future_skew: Duration::ZERO,
            bus_queue_capacity: 0,
            max_devices: 0,
            workers: 0,
            status_interval: Duration::ZERO,
        },
        thresholds: Thresholds::default(),
        rules: RuleSet { rules: Vec::new() },
        rule_specs: Vec::new(),
        notify: NotifySettings::default(),
        history: HistorySettings {
            enabled: false,
            data_dir: PathBuf::new(),
            flush_interval: Duration::ZERO,
            segment_span: Duration::ZERO,
            raw_retention: Duration::ZERO,
            rollup_1m_retention: Duration::ZERO,
            rollup_1h_retention: Duration::ZERO,
            alert_retention: Duration::ZERO,
            database_url: None,
            database_password: None,
            database_pool_size: 0,
            database_timescaledb: String::new(),
            database_spool_max_bytes: 0,
        },
        log: LogSettings {
            format: LogFormat::Text,
            level: String::new(),
        },
        config_file: None,
    }
}

#[cfg(test)]
#[path = "load_tests.rs"]
mod tests;
