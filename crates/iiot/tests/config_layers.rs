//! Configuration as a user meets it, the parts that hold: defaults, layering per key, every
//! key listed and documented, and hot reload of the alert rules.

mod support;

use std::sync::Arc;
use std::time::Duration;

use iiot::alerts::book::RuleBook;
use iiot::alerts::rules::RuleSet;
use iiot::config::{Config, LogFormat, Sources, keys, watch_rules};
use support::config::{config_file, env, from_file, temperature_high, write};
use tokio_util::sync::CancellationToken;

#[test]
fn defaults_match_the_documented_values() {
    let c = Config::load(&Sources::default()).expect("defaults are valid");
    assert_eq!(c, Config::default());
    assert_eq!(c.kafka.brokers, None);
    assert_eq!(c.kafka.topic_device_data, "device-data");
    assert_eq!(c.kafka.topic_alerts, "alerts");
    assert_eq!(c.kafka.topic_dlq, "device-data-dlq");
    assert_eq!(c.kafka.group_id, "iot-consumer-group");
    assert_eq!(c.http_port, 8080);
    assert_eq!(
        (
            c.websocket.port,
            c.websocket.path.as_str(),
            c.websocket.max_connections
        ),
        (8081, "/ws", 1000)
    );
    assert_eq!(c.simulator.device_count, 1000);
    assert_eq!(c.simulator.send_interval, Duration::from_secs(5));
    assert_eq!(c.simulator.data_variance, 0.1);
    assert_eq!(c.simulator.fault_rate, 0.0005);
    assert_eq!(c.simulator.malformed_rate, 0.0);
    assert_eq!(c.simulator.seed, None);
    assert_eq!(c.processor.max_message_bytes, 65536);
    assert_eq!(c.processor.max_future_skew, Duration::from_secs(300));
    assert_eq!(c.processor.bus_queue_capacity, 65536);
    assert_eq!(c.processor.status_interval, Duration::from_secs(10));
    assert_eq!(c.thresholds, iiot::alerts::rules::Thresholds::default());
    assert_eq!(c.rules, RuleSet::defaults(&c.thresholds));
    assert_eq!(
        (c.log.format, c.log.level.as_str()),
        (LogFormat::Text, "info")
    );
    assert_eq!(c.config_file, None);
}

#[test]
fn each_layer_overrides_the_one_below() {
    let (dir, file) = config_file("[simulator]\ndevice_count = 10\n");
    let dotenv = write(dir.path(), ".env", "DEVICE_COUNT=20\n");
    let mut sources = from_file(file.clone());
    let count = |s: &Sources| Config::load(s).expect("valid").simulator.device_count;

    assert_eq!(count(&sources), 10, "file over default");
    sources.dotenv = Some(dotenv);
    assert_eq!(count(&sources), 20, ".env over file");
    sources.env = env(&[("DEVICE_COUNT", "30")]);
    assert_eq!(count(&sources), 30, "environment over .env");
    sources.flags = vec![("DEVICE_COUNT", "40".into())];
    assert_eq!(count(&sources), 40, "flag over environment");
    assert_eq!(
        Config::load(&sources).expect("valid").config_file,
        Some(file)
    );
}

#[test]
fn layers_are_resolved_per_key() {
    let (_dir, file) = config_file("[simulator]\ndevice_count = 10\nsend_interval = \"250ms\"\n");
    let sources = Sources {
        file: Some(file),
        env: env(&[("DEVICE_COUNT", "30")]),
        ..Sources::default()
    };
    let c = Config::load(&sources).expect("valid");
    assert_eq!(c.simulator.device_count, 30);
    assert_eq!(c.simulator.send_interval, Duration::from_millis(250));
}

#[test]
fn empty_optional_values_mean_unset() {
    let (_dir, file) = config_file("[kafka]\nbrokers = \"kafka:9092\"\n");
    let sources = Sources {
        file: Some(file),
        env: env(&[("KAFKA_BROKERS", ""), ("SIM_SEED", "")]),
        ..Sources::default()
    };
    let c = Config::load(&sources).expect("valid");
    assert_eq!(c.kafka.brokers.as_deref(), Some("kafka:9092"));
    assert_eq!(c.simulator.seed, None);
}

#[test]
fn every_key_is_listed_once_with_a_default_and_allowed_values() {
    let all: Vec<_> = keys().collect();
    for name in [
        "IIOT_CONFIG",
        "KAFKA_BROKERS",
        "KAFKA_TOPIC_DEVICE_DATA",
        "KAFKA_TOPIC_ALERTS",
        "KAFKA_GROUP_ID",
        "WEBSOCKET_PORT",
        "WEBSOCKET_PATH",
        "WEBSOCKET_MAX_CONNECTIONS",
        "DEVICE_COUNT",
        "SEND_INTERVAL",
        "DATA_VARIANCE",
        "ALERT_TEMPERATURE_HIGH",
        "ALERT_TEMPERATURE_LOW",
        "ALERT_HUMIDITY_HIGH",
        "ALERT_CURRENT_HIGH",
        "HTTP_PORT",
    ] {
        assert_eq!(
            all.iter().filter(|k| k.0 == name).count(),
            1,
            "{name} (SPEC §7)"
        );
    }
}

#[test]
fn env_example_documents_every_key() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../.env.example");
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{path} must exist and document every key: {e}"));
    let documented: Vec<&str> = text
        .lines()
        .map(|line| line.trim_start_matches(|c: char| c == '#' || c.is_whitespace()))
        .filter_map(|line| line.split_once('=').map(|(name, _)| name.trim()))
        .collect();
    let missing: Vec<&str> = keys()
        .map(|(name, ..)| name)
        .filter(|name| !documented.contains(name))
        .collect();
    assert!(missing.is_empty(), "not in .env.example: {missing:?}");
}

#[test]
fn watch_rules_reloads_valid_changes_and_keeps_the_old_rules_otherwise() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let (dir, file) = config_file("[alerts]\ntemperature_high = 80\n");
        let sources = from_file(file.clone());
        let book = Arc::new(RuleBook::new(&Config::load(&sources).expect("valid")));
        let mut rx = book.sender().subscribe();
        let shutdown = CancellationToken::new();
        let task = watch_rules(sources, book, shutdown.clone()).expect("a file to watch");

        write(dir.path(), "iiot.toml", "[alerts]\ntemperature_high = 70\n");
        tokio::time::timeout(Duration::from_secs(5), rx.changed())
            .await
            .expect("reload within 5 s")
            .expect("sender alive");
        assert_eq!(temperature_high(&rx.borrow_and_update()), 70.0);

        write(
            dir.path(),
            "iiot.toml",
            "[alerts]\ntemperature_high = \"hot\"\n",
        );
        let sent = tokio::time::timeout(Duration::from_millis(1500), rx.changed()).await;
        assert!(sent.is_err(), "an invalid file must not replace the rules");
        assert_eq!(temperature_high(&rx.borrow()), 70.0);

        // Replaced the way editors save: a new file renamed over the old one.
        let next = write(
            dir.path(),
            "iiot.toml.tmp",
            "[alerts]\ntemperature_high = 60\n",
        );
        std::fs::rename(&next, &file).expect("replace the file");
        tokio::time::timeout(Duration::from_secs(5), rx.changed())
            .await
            .expect("reload within 5 s")
            .expect("sender alive");
        assert_eq!(temperature_high(&rx.borrow_and_update()), 60.0);

        shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("watcher ends on shutdown")
            .expect("no panic");
    });
}

#[test]
fn watch_rules_has_nothing_to_watch_without_a_file() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let book = Arc::new(RuleBook::new(
            &Config::load(&Sources::default()).expect("defaults"),
        ));
        assert!(watch_rules(Sources::default(), book, CancellationToken::new()).is_none());
    });
}
