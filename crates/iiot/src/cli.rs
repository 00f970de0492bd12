//! Command-line interface. Value flags are taken as text and handed to the configuration loader
//! under their environment names, so a bad flag gets the same one-line error as a bad
//! environment value (`invalid configuration: DEVICE_COUNT=-5 (from command line): …`).

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use iiot::duration::parse_duration;

/// Industrial IoT Monitor: simulated or real sensors → validation and alerts → live dashboard.
#[derive(Debug, Parser)]
#[command(name = "iiot", version, propagate_version = true)]
pub struct Cli {
    /// What to run.
    #[command(subcommand)]
    pub command: Command,
}

/// The roles of the binary.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Everything in one process: simulator, processors, alert engine, store, API, WebSocket
    /// and dashboard — on the embedded bus, or on Kafka with --kafka-brokers.
    Run(RunArgs),
    /// The device simulator: publishes readings to Kafka, stdout (JSON lines) or the embedded
    /// bus.
    Simulate(SimulateArgs),
    /// Consumer-group processor on Kafka: validation, dead letters, alerts. Run several to
    /// share the partitions.
    Process(RoleArgs),
    /// Store, HTTP API, WebSocket hub and dashboard, fed from Kafka (every instance sees every
    /// reading).
    Serve(ServeArgs),
    /// MQTT → Kafka bridge: subscribes to the MQTT broker (QoS 1) and publishes each message
    /// onto device-data keyed by device id, acknowledging it to MQTT only once Kafka has it.
    Ingest(IngestArgs),
    /// Reproducible throughput/latency run of simulator → bus → processors → live store and
    /// hub; prints JSON.
    Bench(BenchArgs),
    /// Users and API tokens (the auth file): who may see and act. A running iiot applies
    /// changes within a second.
    Auth(AuthArgs),
}

/// `iiot auth`.
#[derive(Debug, Args)]
pub struct AuthArgs {
    #[command(flatten)]
    pub common: Common,
    /// Data directory whose auth.toml to manage [env: DATA_DIR] [default: ./data].
    #[arg(long, value_name = "DIR", global = true)]
    pub data_dir: Option<String>,
    /// The auth file instead [env: AUTH_FILE] [default: DATA_DIR/auth.toml].
    #[arg(long, value_name = "FILE", global = true)]
    pub auth_file: Option<String>,
    /// What to do.
    #[command(subcommand)]
    pub action: AuthAction,
}

/// The roles, least first.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum RoleArg {
    /// Reads the API, the stream, exports and metrics.
    Viewer,
    /// Also acknowledges alerts, manages silences, ingests readings.
    Operator,
    /// Also reads the configuration and changes rules.
    Admin,
}

/// `iiot auth` actions.
#[derive(Debug, Subcommand)]
pub enum AuthAction {
    /// Adds a user who signs in to the dashboard; the password is the first line of stdin.
    AddUser {
        /// Login name (A-Z a-z 0-9 . _ @ -).
        name: String,
        /// What the user may do.
        #[arg(long, value_enum)]
        role: RoleArg,
        /// Read the password from stdin (required: it never goes on a command line).
        #[arg(long, required = true)]
        password_stdin: bool,
    },
    /// Adds an API token and prints it on stdout, once (only its digest is stored).
    AddToken {
        /// What it is for (A-Z a-z 0-9 . _ @ -).
        name: String,
        /// What its bearer may do.
        #[arg(long, value_enum)]
        role: RoleArg,
    },
    /// Lists users and tokens with their roles.
    List,
    /// Removes a user or token; its sessions and requests are refused from then on.
    Remove {
        /// Its name.
        name: String,
    },
}

/// Flags shared by every role.
#[derive(Debug, Args)]
pub struct Common {
    /// Config file (TOML). Default: $IIOT_CONFIG, else ./iiot.toml if present.
    #[arg(long, value_name = "FILE", global = true)]
    pub config: Option<PathBuf>,
    /// Log format: text or json [env: LOG_FORMAT].
    #[arg(long, value_name = "FORMAT", global = true)]
    pub log_format: Option<String>,
}

/// Simulator flags.
#[derive(Debug, Args)]
pub struct FleetArgs {
    /// Number of simulated devices [env: DEVICE_COUNT] [default: 1000].
    #[arg(long, value_name = "N", allow_hyphen_values = true)]
    pub devices: Option<String>,
    /// Send interval per device, e.g. 5s, 100ms [env: SEND_INTERVAL] [default: 5s].
    #[arg(long, value_name = "DUR", allow_hyphen_values = true)]
    pub interval: Option<String>,
    /// Seed for reproducible values [env: SIM_SEED] [default: random, logged].
    #[arg(long, value_name = "S", allow_hyphen_values = true)]
    pub seed: Option<String>,
    /// Probability per reading that a device starts a fault episode [env: FAULT_RATE].
    #[arg(long, value_name = "F", allow_hyphen_values = true)]
    pub fault_rate: Option<String>,
    /// Probability per reading of a malformed message instead [env: MALFORMED_RATE] [default: 0].
    #[arg(long, value_name = "F", allow_hyphen_values = true)]
    pub malformed_rate: Option<String>,
}

/// `iiot run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub common: Common,
    #[command(flatten)]
    pub fleet: FleetArgs,
    /// Stop by itself after this long, gracefully (exit 0).
    #[arg(long, value_name = "DUR", value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// HTTP port [env: HTTP_PORT] [default: 8080].
    #[arg(long, value_name = "P", allow_hyphen_values = true)]
    pub http_port: Option<String>,
    /// WebSocket port [env: WEBSOCKET_PORT] [default: 8081].
    #[arg(long, value_name = "P", allow_hyphen_values = true)]
    pub ws_port: Option<String>,
    /// Kafka bootstrap servers [env: KAFKA_BROKERS]; unset = the embedded bus.
    #[arg(long, value_name = "HOST:PORT,…")]
    pub kafka_brokers: Option<String>,
    /// MQTT broker real devices publish to, mqtt://host:port [env: MQTT_URL]; unset = none.
    #[arg(long, value_name = "URL")]
    pub mqtt_url: Option<String>,
    /// What MQTT devices publish: json or sparkplug (Sparkplug B) [env: MQTT_PAYLOAD]
    /// [default: json].
    #[arg(long, value_name = "FORMAT")]
    pub mqtt_payload: Option<String>,
    /// Where history is kept [env: DATA_DIR] [default: ./data].
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<String>,
    /// PostgreSQL history shared by every instance, postgres://user@host:port/db
    /// [env: HISTORY_DATABASE_URL]; unset = none.
    #[arg(long, value_name = "URL")]
    pub history_database_url: Option<String>,
}

/// Where `iiot simulate` sends readings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// One JSON reading per line on stdout (pipe into any Kafka console producer).
    Stdout,
    /// Kafka (KAFKA_BROKERS, default 127.0.0.1:9092), keyed by device id.
    Kafka,
    /// The embedded bus, drained by a counting consumer: measures generator + bus.
    Bus,
    /// An MQTT broker (--mqtt-url / MQTT_URL): each device publishes to
    /// iiot/devices/<id>/telemetry at QoS 1.
    Mqtt,
}

/// `iiot simulate`.
#[derive(Debug, Args)]
pub struct SimulateArgs {
    #[command(flatten)]
    pub common: Common,
    #[command(flatten)]
    pub fleet: FleetArgs,
    /// Stop by itself after this long (exit 0).
    #[arg(long, value_name = "DUR", value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Where readings go.
    #[arg(long, value_enum, default_value_t = Output::Stdout)]
    pub output: Output,
    /// Kafka bootstrap servers [env: KAFKA_BROKERS] (implies --output kafka).
    #[arg(long, value_name = "HOST:PORT,…")]
    pub kafka_brokers: Option<String>,
    /// MQTT broker for --output mqtt, mqtt://host:port [env: MQTT_URL] (implies --output mqtt).
    #[arg(long, value_name = "URL")]
    pub mqtt_url: Option<String>,
    /// With --output mqtt: one MQTT connection per device (broker load tests; needs an
    /// open-files limit above the device count).
    #[arg(long)]
    pub mqtt_connections_per_device: bool,
    /// With --output mqtt: json (iiot/devices/<id>/telemetry) or sparkplug (one Sparkplug B
    /// edge node, group iiot) [env: MQTT_PAYLOAD] [default: json].
    #[arg(long, value_name = "FORMAT")]
    pub mqtt_payload: Option<String>,
    /// Topic for readings [env: KAFKA_TOPIC_DEVICE_DATA] [default: device-data].
    #[arg(long, value_name = "NAME")]
    pub topic: Option<String>,
    /// HTTP port of /health, /ready, /metrics with --output kafka [env: HTTP_PORT] [default: 8080].
    #[arg(long, value_name = "P", allow_hyphen_values = true)]
    pub http_port: Option<String>,
}

/// `iiot process`.
#[derive(Debug, Args)]
pub struct RoleArgs {
    #[command(flatten)]
    pub common: Common,
    /// Kafka bootstrap servers [env: KAFKA_BROKERS] [default: 127.0.0.1:9092].
    #[arg(long, value_name = "HOST:PORT,…")]
    pub kafka_brokers: Option<String>,
    /// Consumer group [env: KAFKA_GROUP_ID] [default: iot-consumer-group].
    #[arg(long, value_name = "ID")]
    pub group_id: Option<String>,
    /// HTTP port of /health, /ready, /metrics [env: HTTP_PORT] [default: 8080].
    #[arg(long, value_name = "P", allow_hyphen_values = true)]
    pub http_port: Option<String>,
    /// PostgreSQL history shared by every instance, postgres://user@host:port/db
    /// [env: HISTORY_DATABASE_URL]; unset = none.
    #[arg(long, value_name = "URL")]
    pub history_database_url: Option<String>,
}

/// `iiot serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub common: Common,
    /// Kafka bootstrap servers [env: KAFKA_BROKERS] [default: 127.0.0.1:9092].
    #[arg(long, value_name = "HOST:PORT,…")]
    pub kafka_brokers: Option<String>,
    /// HTTP port [env: HTTP_PORT] [default: 8080].
    #[arg(long, value_name = "P", allow_hyphen_values = true)]
    pub http_port: Option<String>,
    /// WebSocket port [env: WEBSOCKET_PORT] [default: 8081].
    #[arg(long, value_name = "P", allow_hyphen_values = true)]
    pub ws_port: Option<String>,
    /// Where history is kept [env: DATA_DIR] [default: ./data].
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<String>,
    /// PostgreSQL history shared by every instance, postgres://user@host:port/db
    /// [env: HISTORY_DATABASE_URL]; unset = none.
    #[arg(long, value_name = "URL")]
    pub history_database_url: Option<String>,
}

/// `iiot bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    #[command(flatten)]
    pub common: Common,
    /// Simulated devices [default: 10000].
    #[arg(
        long,
        value_name = "N",
        default_value = "10000",
        allow_hyphen_values = true
    )]
    pub devices: String,
    /// Hold this send interval per device (rate = devices / interval) instead of full speed.
    #[arg(long, value_name = "DUR")]
    pub interval: Option<String>,
    /// Seed [default: 42, so runs are comparable].
    #[arg(long, value_name = "S", default_value = "42")]
    pub seed: String,
    /// Publishing time of each run.
    #[arg(long, value_name = "DUR", default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Number of runs (median and spread are reported).
    #[arg(long, value_name = "N", default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub runs: u32,
    /// Probability of a fault episode per reading [default: 0.0005].
    #[arg(long, value_name = "F")]
    pub fault_rate: Option<String>,
    /// Probability of a malformed message per reading [default: 0].
    #[arg(long, value_name = "F")]
    pub malformed_rate: Option<String>,
    /// Leave the live store and WebSocket hub out: processors → topics only.
    #[arg(long)]
    pub no_store: bool,
    /// Also keep history on disk (in a temporary DATA_DIR per run, removed after it) [default:
    /// off, so figures compare with those taken before history].
    #[arg(long, conflicts_with = "no_store")]
    pub history: bool,
    /// Benchmark Kafka mode against these brokers (fresh topics per run) instead of the
    /// embedded bus [env: KAFKA_BROKERS].
    #[arg(long, value_name = "HOST:PORT,…")]
    pub kafka_brokers: Option<String>,
}

impl FleetArgs {
    /// The flags that were given, under their configuration key names.
    pub fn flags(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        push(&mut out, "DEVICE_COUNT", &self.devices);
        push(&mut out, "SEND_INTERVAL", &self.interval);
        push(&mut out, "SIM_SEED", &self.seed);
        push(&mut out, "FAULT_RATE", &self.fault_rate);
        push(&mut out, "MALFORMED_RATE", &self.malformed_rate);
        out
    }
}

impl Common {
    /// The flags that were given, under their configuration key names.
    pub fn flags(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        push(&mut out, "LOG_FORMAT", &self.log_format);
        out
    }
}

/// Appends `(key, value)` when the flag was given.
pub fn push(out: &mut Vec<(&'static str, String)>, key: &'static str, value: &Option<String>) {
    if let Some(v) = value {
        out.push((key, v.clone()));
    }
}

/// `iiot ingest`.
#[derive(Debug, Args)]
pub struct IngestArgs {
    #[command(flatten)]
    pub common: Common,
    /// MQTT broker to read from, mqtt://host:port [env: MQTT_URL] (required).
    #[arg(long, value_name = "URL")]
    pub mqtt_url: Option<String>,
    /// Kafka bootstrap servers [env: KAFKA_BROKERS] [default: 127.0.0.1:9092].
    #[arg(long, value_name = "HOST:PORT,…")]
    pub kafka_brokers: Option<String>,
    /// HTTP port of /health, /ready, /metrics [env: HTTP_PORT] [default: 8080].
    #[arg(long, value_name = "P", allow_hyphen_values = true)]
    pub http_port: Option<String>,
}
