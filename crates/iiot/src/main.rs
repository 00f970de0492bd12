//! The `iiot` binary: parses the command line, loads the configuration, installs logging and
//! signal handling, and hands over to the library. Exit codes: 0 done, 1 runtime failure,
//! 2 bad command line or configuration.

mod cli;

use std::process::ExitCode;

use clap::Parser;
use iiot::config::{Config, LogFormat, Sources};
use iiot::roles::simulate::{self, SimulateOptions};
use iiot::simulator::Pace;
use iiot::telemetry;
use tokio_util::sync::CancellationToken;

use cli::{Cli, Command, Output, push};

/// mimalloc instead of the system allocator: messages are allocated on the simulator's thread
/// and freed on the processor's, a pattern glibc malloc handles poorly (about a tenth of the
/// pipeline's time went to malloc/free and consolidation under `perf`).
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("iiot: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    runtime.block_on(dispatch(cli))
}

/// A failure that maps to an exit code, printed as one line.
enum Failure {
    /// Bad configuration or usage: exit 2.
    Usage(String),
    /// Anything else: exit 1.
    Runtime(anyhow::Error),
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Self {
        // An unusable or locked DATA_DIR is found when history opens, but it is a setting.
        let data_dir = e
            .chain()
            .find_map(|c| c.downcast_ref::<iiot::history::OpenError>());
        if let Some(open) = data_dir {
            return Failure::Usage(open.to_string());
        }
        if let Some(mismatch) = e
            .chain()
            .find_map(|c| c.downcast_ref::<iiot::backend::PartitionMismatch>())
        {
            return Failure::Usage(mismatch.to_string());
        }
        if let Some(usage) = e.downcast_ref::<iiot::roles::ingest::IngestError>() {
            return Failure::Usage(usage.to_string());
        }
        // So is an unusable auth file, or anonymous access beyond loopback.
        match e
            .chain()
            .find_map(|c| c.downcast_ref::<iiot::auth::AuthError>())
        {
            Some(auth) => Failure::Usage(auth.to_string()),
            None => Failure::Runtime(e),
        }
    }
}

async fn dispatch(cli: Cli) -> ExitCode {
    let result = match cli.command {
        Command::Run(args) => run(args).await,
        Command::Simulate(args) => simulate(args).await,
        Command::Bench(args) => bench(args).await,
        Command::Process(args) => process(args).await,
        Command::Serve(args) => serve(args).await,
        Command::Ingest(args) => ingest(args).await,
        Command::Auth(args) => auth(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Usage(line)) => {
            eprintln!("{line}");
            ExitCode::from(2)
        }
        Err(Failure::Runtime(e)) => {
            tracing::error!("{e:#}");
            eprintln!("iiot: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// Loads the configuration and installs logging; a bad value is a one-line exit 2.
fn load(
    config_file: Option<std::path::PathBuf>,
    flags: Vec<(&'static str, String)>,
) -> Result<(Config, Sources), Failure> {
    let sources = Sources::from_process(config_file, flags);
    let config = Config::load(&sources).map_err(|e| Failure::Usage(e.to_string()))?;
    let format = match config.log.format {
        LogFormat::Text => telemetry::Format::Text,
        LogFormat::Json => telemetry::Format::Json,
    };
    telemetry::init(format, &config.log.level);
    Ok((config, sources))
}

/// Cancels the returned token on Ctrl-C or SIGTERM; a second signal exits at once.
fn shutdown_on_signals() -> CancellationToken {
    let token = CancellationToken::new();
    let t = token.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutting down (signal again to stop immediately)");
        t.cancel();
        wait_for_signal().await;
        tracing::warn!("second signal: exiting without draining");
        std::process::exit(130);
    });
    token
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// The embedded processor tracks at most `MAX_DEVICES`; simulating more would dead-letter
/// the rest, so refuse up front like any other bad setting.
fn check_capacity(config: &Config) -> Result<(), Failure> {
    let (devices, max) = (config.simulator.device_count, config.processor.max_devices);
    if devices as usize > max {
        return Err(Failure::Usage(format!(
            "invalid configuration: DEVICE_COUNT={devices}: must not exceed MAX_DEVICES={max} \
             (raise MAX_DEVICES or simulate fewer devices)"
        )));
    }
    Ok(())
}

/// What the listeners would refuse (auth file, anonymous access beyond loopback), before
/// anything starts.
fn preflight(config: &Config) -> Result<(), Failure> {
    iiot::auth::preflight(config).map_err(|e| Failure::Usage(e.to_string()))?;
    iiot::listeners::check_tls(config).map_err(|e| Failure::Usage(e.to_string()))
}

/// `iiot simulate` and `iiot bench` need devices to simulate (`iiot run` takes 0: no simulator).
fn check_fleet(config: &Config) -> Result<(), Failure> {
    if config.simulator.device_count == 0 {
        return Err(Failure::Usage(
            "invalid configuration: DEVICE_COUNT=0: must be at least 1 to simulate              (0 only turns the simulator of `iiot run` off)"
                .into(),
        ));
    }
    Ok(())
}

async fn run(args: cli::RunArgs) -> Result<(), Failure> {
    let mut flags = args.common.flags();
    flags.extend(args.fleet.flags());
    push(&mut flags, "HTTP_PORT", &args.http_port);
    push(&mut flags, "WEBSOCKET_PORT", &args.ws_port);
    push(&mut flags, "KAFKA_BROKERS", &args.kafka_brokers);
    push(&mut flags, "MQTT_URL", &args.mqtt_url);
    push(&mut flags, "MQTT_PAYLOAD", &args.mqtt_payload);
    push(&mut flags, "DATA_DIR", &args.data_dir);
    push(
        &mut flags,
        "HISTORY_DATABASE_URL",
        &args.history_database_url,
    );
    let (config, sources) = load(args.common.config.clone(), flags)?;
    check_capacity(&config)?;
    preflight(&config)?;
    let shutdown = shutdown_on_signals();
    iiot::roles::run::run(config, sources, args.duration, shutdown).await?;
    Ok(())
}

async fn simulate(args: cli::SimulateArgs) -> Result<(), Failure> {
    let mut flags = args.common.flags();
    flags.extend(args.fleet.flags());
    push(&mut flags, "KAFKA_BROKERS", &args.kafka_brokers);
    push(&mut flags, "KAFKA_TOPIC_DEVICE_DATA", &args.topic);
    push(&mut flags, "HTTP_PORT", &args.http_port);
    push(&mut flags, "MQTT_URL", &args.mqtt_url);
    push(&mut flags, "MQTT_PAYLOAD", &args.mqtt_payload);
    let (config, _) = load(args.common.config.clone(), flags)?;
    check_fleet(&config)?;
    preflight(&config)?;
    let output = match args.output {
        _ if args.kafka_brokers.is_some() => simulate::Output::Kafka,
        _ if args.mqtt_url.is_some() => simulate::Output::Mqtt,
        Output::Kafka => simulate::Output::Kafka,
        Output::Stdout => simulate::Output::Stdout,
        Output::Bus => simulate::Output::Bus,
        Output::Mqtt => simulate::Output::Mqtt,
    };
    let output = match output {
        simulate::Output::Mqtt if args.mqtt_connections_per_device => {
            simulate::Output::MqttPerDevice
        }
        other => other,
    };
    let to_mqtt = matches!(
        output,
        simulate::Output::Mqtt | simulate::Output::MqttPerDevice
    );
    if args.mqtt_connections_per_device && !to_mqtt {
        return Err(Failure::Usage(
            "iiot simulate --mqtt-connections-per-device needs --output mqtt".into(),
        ));
    }
    if output == simulate::Output::MqttPerDevice {
        iiot::mqtt::fleet::check_fd_limit(config.simulator.device_count)
            .map_err(|e| Failure::Usage(e.to_string()))?;
    }
    if to_mqtt && config.mqtt.url.is_none() {
        return Err(Failure::Usage(
            "iiot simulate --output mqtt needs a broker: --mqtt-url mqtt://host:port (or MQTT_URL)"
                .into(),
        ));
    }
    let options = SimulateOptions {
        pace: Pace::RealTime,
        duration: args.duration,
        // A progress line on a terminal, a log line every 10 s otherwise.
        progress: true,
    };
    let report = simulate::main(config, output, options, shutdown_on_signals()).await?;
    tracing::info!(
        sent = report.sent,
        errors = report.errors,
        "simulator stopped"
    );
    Ok(())
}

async fn process(args: cli::RoleArgs) -> Result<(), Failure> {
    let mut flags = args.common.flags();
    push(&mut flags, "KAFKA_BROKERS", &args.kafka_brokers);
    push(&mut flags, "KAFKA_GROUP_ID", &args.group_id);
    push(&mut flags, "HTTP_PORT", &args.http_port);
    push(
        &mut flags,
        "HISTORY_DATABASE_URL",
        &args.history_database_url,
    );
    let (config, sources) = load(args.common.config.clone(), flags)?;
    preflight(&config)?;
    iiot::roles::process::main(config, sources, shutdown_on_signals()).await?;
    Ok(())
}

async fn serve(args: cli::ServeArgs) -> Result<(), Failure> {
    let mut flags = args.common.flags();
    push(&mut flags, "KAFKA_BROKERS", &args.kafka_brokers);
    push(&mut flags, "HTTP_PORT", &args.http_port);
    push(&mut flags, "WEBSOCKET_PORT", &args.ws_port);
    push(&mut flags, "DATA_DIR", &args.data_dir);
    push(
        &mut flags,
        "HISTORY_DATABASE_URL",
        &args.history_database_url,
    );
    let (config, _) = load(args.common.config.clone(), flags)?;
    preflight(&config)?;
    iiot::roles::serve::main(config, shutdown_on_signals()).await?;
    Ok(())
}

async fn ingest(args: cli::IngestArgs) -> Result<(), Failure> {
    let mut flags = args.common.flags();
    push(&mut flags, "MQTT_URL", &args.mqtt_url);
    push(&mut flags, "KAFKA_BROKERS", &args.kafka_brokers);
    push(&mut flags, "HTTP_PORT", &args.http_port);
    let (config, _) = load(args.common.config.clone(), flags)?;
    iiot::roles::ingest::main(config, shutdown_on_signals()).await?;
    Ok(())
}

fn auth(args: cli::AuthArgs) -> Result<(), Failure> {
    use iiot::auth::Role;
    use iiot::auth::cli::Action;
    let mut flags = args.common.flags();
    push(&mut flags, "DATA_DIR", &args.data_dir);
    push(&mut flags, "AUTH_FILE", &args.auth_file);
    let (config, _) = load(args.common.config.clone(), flags)?;
    let role = |r: cli::RoleArg| match r {
        cli::RoleArg::Viewer => Role::Viewer,
        cli::RoleArg::Operator => Role::Operator,
        cli::RoleArg::Admin => Role::Admin,
    };
    let action = match args.action {
        cli::AuthAction::AddUser { name, role: r, .. } => Action::AddUser {
            name,
            role: role(r),
        },
        cli::AuthAction::AddToken { name, role: r } => Action::AddToken {
            name,
            role: role(r),
        },
        cli::AuthAction::List => Action::List,
        cli::AuthAction::Remove { name } => Action::Remove { name },
    };
    let path = iiot::auth::auth_file(&config);
    let outcome = iiot::auth::cli::run(&path, &action, &mut std::io::stdin().lock())
        .map_err(|e| Failure::Usage(format!("iiot auth: {e}")))?;
    print!("{}", outcome.stdout);
    if !outcome.note.is_empty() {
        eprintln!("{} ({})", outcome.note, path.display());
    }
    Ok(())
}

async fn bench(args: cli::BenchArgs) -> Result<(), Failure> {
    let mut flags = args.common.flags();
    flags.push(("DEVICE_COUNT", args.devices.clone()));
    flags.push(("SIM_SEED", args.seed.clone()));
    push(&mut flags, "SEND_INTERVAL", &args.interval);
    push(&mut flags, "FAULT_RATE", &args.fault_rate);
    push(&mut flags, "MALFORMED_RATE", &args.malformed_rate);
    push(&mut flags, "KAFKA_BROKERS", &args.kafka_brokers);
    // Status lines would interleave with the report; the bench reports at the end.
    flags.push(("STATUS_INTERVAL", "0".into()));
    let (config, _) = load(args.common.config.clone(), flags)?;
    check_fleet(&config)?;
    check_capacity(&config)?;
    let options = iiot::bench::BenchOptions {
        duration: args.duration,
        runs: args.runs,
        pace: if args.interval.is_some() {
            Pace::RealTime
        } else {
            Pace::FullSpeed
        },
        command: std::env::args().collect::<Vec<_>>().join(" "),
        store: !args.no_store,
        history: args.history,
    };
    let report = iiot::bench::run(&config, &options).await?;
    let json = serde_json::to_string_pretty(&report).map_err(anyhow::Error::from)?;
    println!("{json}");
    Ok(())
}
