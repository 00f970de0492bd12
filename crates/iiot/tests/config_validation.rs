//! Configuration as a user meets it when something is wrong or secret: one-line errors naming
//! key, value and origin, the config file with its alert rules, the redacted view, secrets
//! from files, and Kafka properties.

mod support;

use iiot::config::{Config, Origin, Sources};
use support::config::{config_file, from_env, from_file, refusal, temperature_high, write};

#[test]
fn bad_values_stop_loading_with_one_line_naming_key_value_and_origin() {
    let cases = [
        (
            "DEVICE_COUNT",
            "-5",
            "invalid configuration: DEVICE_COUNT=-5 (from environment): must be an integer from 0 to 1000000 (0: no simulator in `iiot run`)",
        ),
        (
            "DEVICE_COUNT",
            "abc",
            "invalid configuration: DEVICE_COUNT=abc (from environment): must be an integer from 0 to 1000000 (0: no simulator in `iiot run`)",
        ),
        (
            "SEND_INTERVAL",
            "5",
            "invalid configuration: SEND_INTERVAL=5 (from environment): must be a duration from 1ms to 1h, like 100ms, 5s or 1m",
        ),
        (
            "WEBSOCKET_PATH",
            "ws",
            "invalid configuration: WEBSOCKET_PATH=ws (from environment): must be a URL path starting with '/', without spaces",
        ),
        (
            "DATA_VARIANCE",
            "NaN",
            "invalid configuration: DATA_VARIANCE=NaN (from environment): must be a number from 0 to 10",
        ),
        (
            "LOG_FORMAT",
            "xml",
            "invalid configuration: LOG_FORMAT=xml (from environment): must be one of text, json",
        ),
        (
            "HTTP_PORT",
            "70000",
            "invalid configuration: HTTP_PORT=70000 (from environment): must be a port from 0 to 65535 (0 = any free port)",
        ),
    ];
    for (key, value, message) in cases {
        let sources = from_env(&[(key, value)]);
        let e = Config::load(&sources).expect_err(key);
        assert_eq!((e.key.as_str(), e.value.as_str()), (key, value));
        assert_eq!(e.origin, Origin::Env);
        assert_eq!(e.to_string(), message);
    }
}

#[test]
fn errors_name_the_layer_the_bad_value_came_from() {
    let dir = tempfile::tempdir().expect("temp dir");
    let dotenv = write(dir.path(), ".env", "DEVICE_COUNT=-1\n");
    let sources = Sources {
        dotenv: Some(dotenv),
        ..Sources::default()
    };
    let e = Config::load(&sources).expect_err("bad .env value");
    assert_eq!(e.origin, Origin::DotEnv);
    assert!(e.to_string().contains("DEVICE_COUNT=-1 (from .env)"), "{e}");

    let sources = Sources {
        flags: vec![("DEVICE_COUNT", "many".into())],
        ..sources
    };
    let e = Config::load(&sources).expect_err("bad flag");
    assert!(
        e.to_string()
            .contains("DEVICE_COUNT=many (from command line)"),
        "{e}"
    );

    let file = write(dir.path(), "iiot.toml", "[simulator]\nsend_interval = 5\n");
    let sources = from_file(file.clone());
    let e = Config::load(&sources).expect_err("bad file value");
    assert_eq!(
        e.key, "simulator.send_interval",
        "file values are named by their path"
    );
    assert_eq!(e.origin, Origin::File(file.clone()));
    assert!(
        e.to_string().contains(&format!(
            "simulator.send_interval=5 (from {})",
            file.display()
        )),
        "{e}"
    );
}

#[test]
fn unknown_keys_in_the_file_are_rejected() {
    let (_dir, file) = config_file("[simulator]\ndevcie_count = 100\n");
    let sources = from_file(file);
    let e = Config::load(&sources).expect_err("typo in file");
    assert_eq!(e.key, "simulator.devcie_count");
    assert!(e.allowed.contains("device_count"), "{e}");
}

#[test]
fn unreadable_or_broken_files_are_named() {
    let dir = tempfile::tempdir().expect("temp dir");
    let missing = dir.path().join("missing.toml");
    let sources = from_file(missing.clone());
    let e = Config::load(&sources).expect_err("missing file");
    assert_eq!(
        (e.key.clone(), e.value.as_str()),
        (missing.display().to_string(), "")
    );
    assert!(
        e.to_string().starts_with(&format!(
            "invalid configuration: {}: cannot read",
            missing.display()
        )),
        "{e}"
    );

    let broken = write(dir.path(), "broken.toml", "[simulator\ndevice_count = 1\n");
    let sources = from_file(broken.clone());
    let e = Config::load(&sources).expect_err("broken file");
    assert_eq!(e.key, broken.display().to_string());
    assert!(e.allowed.starts_with("TOML parse error at line 1"), "{e}");
    assert!(!e.to_string().contains('\n'), "one line: {e}");
}

/// A valid rule of the config file.
const PRESSURE_LOW: &str = r#"
[[alerts.rules]]
alert_type = "pressure_low"
parameter = "pressure"
operator = "<"
value = 950.0
"#;

#[test]
fn rules_from_the_file_are_applied_and_bad_ones_named() {
    let (dir, file) = config_file(&format!(
        r#"
[alerts]
temperature_high = 70
current_high = "12.5"
{PRESSURE_LOW}
[[alerts.rules]]
alert_type = "sensor_stuck"
enabled = false
"#
    ));
    let sources = from_file(file);
    let c = Config::load(&sources).expect("valid");
    assert_eq!(c.thresholds.current_high, 12.5);
    assert_eq!(temperature_high(&c.rules), 70.0);
    assert!(c.rules.get("pressure_low").is_some());
    assert!(c.rules.get("sensor_stuck").is_none());

    let file = write(
        dir.path(),
        "bad.toml",
        &format!(
            r#"{PRESSURE_LOW}
[[alerts.rules]]
alert_type = "current_high"
parameter = "current"
operator = ">"
value = 10.0
clear = 12.0
"#
        ),
    );
    let sources = from_file(file.clone());
    let e = Config::load(&sources).expect_err("clear on the wrong side");
    assert_eq!(
        (e.key.as_str(), e.value.as_str()),
        ("alerts.rules[1].clear", "12")
    );
    assert_eq!(e.origin, Origin::File(file));

    // A file of rules that does not load: its error.
    let refused = |name: &str, text: &str| {
        Config::load(&from_file(write(dir.path(), name, text))).expect_err(name)
    };
    let e = refused(
        "typo.toml",
        "[[alerts.rules]]\nalert_type = \"x\"\nthreshhold = 3\n",
    );
    assert_eq!(
        (e.key.as_str(), e.value.as_str()),
        ("alerts.rules[0].threshhold", "3")
    );
    assert!(e.allowed.contains("unknown field"), "{e}");

    let e = refused(
        "type.toml",
        "[[alerts.rules]]\nalert_type = \"x\"\nparameter = \"current\"\noperator = \">\"\nvalue = \"abc\"\n",
    );
    assert_eq!(
        (e.key.as_str(), e.value.as_str()),
        ("alerts.rules[0].value", "abc")
    );
}

#[test]
fn redacted_shows_the_effective_config_without_secrets() {
    let sources = from_env(&[
        ("KAFKA_BROKERS", "kafka:9092"),
        ("KAFKA_SASL_USERNAME", "iot"),
        ("KAFKA_SASL_PASSWORD", "hunter2"),
        ("WEBSOCKET_AUTH_TOKEN", "s3cret-token"),
        ("DEVICE_COUNT", "12"),
    ]);
    let json = Config::load(&sources).expect("valid").redacted();
    assert_eq!(json["kafka"]["brokers"], "kafka:9092");
    assert_eq!(json["kafka"]["sasl_username"], "iot");
    assert_eq!(json["kafka"]["sasl_password"], "***");
    assert!(!json.to_string().contains("hunter2"));
    assert_eq!(json["websocket"]["auth_token"], "***");
    assert!(!json.to_string().contains("s3cret-token"));
    assert_eq!(json["simulator"]["device_count"], 12);
    assert_eq!(json["simulator"]["send_interval"], "5s");
    assert_eq!(json["http"]["port"], 8080);
    assert_eq!(json["alerts"]["temperature_high"], 80.0);
    assert_eq!(json["alerts"]["rules"][0]["id"], "temperature_high");
    assert_eq!(json["alerts"]["rules"][0]["source"], "default");
    assert_eq!(
        json["alerts"]["rules"][0]["rule"]["alert_type"],
        "temperature_high"
    );
    assert!(json["config_file"].is_null());

    let unset = Config::default().redacted();
    assert!(unset["kafka"]["sasl_password"].is_null(), "nothing to hide");
}

#[test]
fn secrets_come_from_files_and_never_show() {
    let dir = tempfile::tempdir().expect("tempdir");
    let password = write(dir.path(), "sasl", "from-a-file\n");
    let sources = from_env(&[
        (
            "KAFKA_SASL_PASSWORD_FILE",
            password.to_str().expect("utf-8"),
        ),
        ("KAFKA_SECURITY_PROTOCOL", "sasl_ssl"),
        ("KAFKA_SASL_MECHANISM", "SCRAM-SHA-512"),
        ("KAFKA_SASL_USERNAME", "iot"),
    ]);
    let config = Config::load(&sources).expect("valid");
    assert_eq!(config.kafka.sasl_password.as_deref(), Some("from-a-file"));
    let props = config.kafka.client_properties();
    assert!(props.contains(&("sasl.password".into(), "from-a-file".into())));
    assert!(props.contains(&("security.protocol".into(), "sasl_ssl".into())));
    assert!(!config.redacted().to_string().contains("from-a-file"));

    // A missing file is named, and both forms at once are refused.
    let missing = from_env(&[("KAFKA_SASL_PASSWORD_FILE", "/nonexistent/secret")]);
    let e = Config::load(&missing).expect_err("unreadable").to_string();
    assert!(e.starts_with("invalid configuration: KAFKA_SASL_PASSWORD_FILE=/nonexistent/secret (from environment): must name a readable file"), "{e}");
    let both = from_env(&[
        (
            "KAFKA_SASL_PASSWORD_FILE",
            password.to_str().expect("utf-8"),
        ),
        ("KAFKA_SASL_PASSWORD", "inline"),
    ]);
    let e = Config::load(&both).expect_err("ambiguous").to_string();
    assert!(
        e.contains("KAFKA_SASL_PASSWORD_FILE") && e.contains("not be set together"),
        "{e}"
    );
    assert!(!e.contains('\n'));
}

#[test]
fn kafka_properties_pass_through_and_cannot_silently_drop_tls_verification() {
    let ok = from_env(&[(
        "KAFKA_PROPERTIES",
        "socket.keepalive.enable=true; fetch.min.bytes=1",
    )]);
    let config = Config::load(&ok).expect("valid");
    assert_eq!(
        config.kafka.extra_properties(),
        vec![
            ("socket.keepalive.enable".to_string(), "true".to_string()),
            ("fetch.min.bytes".to_string(), "1".to_string())
        ]
    );

    let malformed = from_env(&[("KAFKA_PROPERTIES", "no-equals-sign")]);
    let e = Config::load(&malformed).expect_err("malformed").to_string();
    assert!(
        e.starts_with("invalid configuration: KAFKA_PROPERTIES=no-equals-sign"),
        "{e}"
    );

    let insecure = [(
        "KAFKA_PROPERTIES",
        "enable.ssl.certificate.verification=false",
    )];
    let e = refusal(&insecure);
    assert!(e.contains("KAFKA_ALLOW_INSECURE_TLS=true"), "{e}");
    for sneaky in [
        "enable.ssl.certificate.verification=0",
        "enable.ssl.certificate.verification=OFF",
    ] {
        let e = refusal(&[("KAFKA_PROPERTIES", sneaky)]);
        assert!(e.contains("KAFKA_ALLOW_INSECURE_TLS=true"), "{e}");
    }
    for managed in [
        "enable.auto.offset.store=true",
        "enable.auto.commit=false",
        "acks=1",
    ] {
        let e = refusal(&[("KAFKA_PROPERTIES", managed)]);
        assert!(e.contains("which iiot manages itself"), "{e}");
    }
    let mut allowed = insecure.to_vec();
    allowed.push(("KAFKA_ALLOW_INSECURE_TLS", "true"));
    Config::load(&from_env(&allowed)).expect("allowed with the override");
}

#[test]
fn secret_kafka_properties_never_show_in_config_or_errors() {
    let sources = from_env(&[(
        "KAFKA_PROPERTIES",
        "sasl.oauthbearer.client.secret=s3cr3t;ssl.keystore.password=hunter2;fetch.min.bytes=1",
    )]);
    let config = Config::load(&sources).expect("valid");
    let shown = config.redacted().to_string();
    assert!(
        !shown.contains("s3cr3t") && !shown.contains("hunter2"),
        "{shown}"
    );
    assert!(shown.contains("fetch.min.bytes=1"), "{shown}");
    // The real values still reach librdkafka.
    assert!(
        config
            .kafka
            .client_properties()
            .contains(&("ssl.keystore.password".into(), "hunter2".into()))
    );

    let bad = from_env(&[("KAFKA_PROPERTIES", "sasl.password=hunter2;Not-A-Name")]);
    let e = Config::load(&bad).expect_err("malformed").to_string();
    assert!(e.contains("KAFKA_PROPERTIES=sasl.password=***;***"), "{e}");
    assert!(!e.contains("hunter2"), "{e}");
}

#[test]
fn sparkplug_settings_are_checked_and_its_topics_follow_the_payload() {
    for (key, value) in [
        ("MQTT_PAYLOAD", "protobuf"),
        ("SPARKPLUG_DEVICE_ID", "{group}"),
        ("SPARKPLUG_DEVICE_ID", "{plant}:{device}"),
        ("SPARKPLUG_METRICS", "Inputs/Volts=voltage"),
        ("SPARKPLUG_MAX_DEVICES", "0"),
    ] {
        let e = Config::load(&from_env(&[(key, value)])).expect_err(key);
        assert_eq!((e.key.as_str(), e.value.as_str()), (key, value));
        assert!(e.to_string().contains("must be"), "{e}");
    }
    let sparkplug = |env: &[(&str, &str)]| {
        let config = Config::load(&from_env(env)).expect("valid");
        iiot::mqtt::sparkplug::route::topic_filters(&config)
    };
    assert_eq!(sparkplug(&[]), ["iiot/devices/+/telemetry"]);
    assert_eq!(
        sparkplug(&[("MQTT_PAYLOAD", "sparkplug")]),
        ["spBv1.0/+/+/+", "spBv1.0/+/+/+/+"]
    );
    assert_eq!(
        sparkplug(&[
            ("MQTT_PAYLOAD", "sparkplug"),
            ("MQTT_TOPICS", "spBv1.0/plant/#")
        ]),
        ["spBv1.0/plant/#"]
    );
    let config = Config::load(&from_env(&[
        ("MQTT_PAYLOAD", "sparkplug"),
        ("SPARKPLUG_DEVICE_ID", "{node}:{device}"),
        ("SPARKPLUG_METRICS", "Inputs/Temp=temperature"),
    ]))
    .expect("valid");
    assert!(config.sparkplug.enabled());
    assert_eq!(config.sparkplug.device_id, "{node}:{device}");
}

#[test]
fn history_database_pool_size_and_timescaledb_are_checked_and_reach_the_database() {
    for (key, value, allowed) in [
        (
            "HISTORY_DATABASE_POOL_SIZE",
            "0",
            "must be an integer from 1 to 64",
        ),
        (
            "HISTORY_DATABASE_POOL_SIZE",
            "65",
            "must be an integer from 1 to 64",
        ),
        (
            "HISTORY_DATABASE_POOL_SIZE",
            "two",
            "must be an integer from 1 to 64",
        ),
        (
            "HISTORY_DATABASE_TIMESCALEDB",
            "on",
            "must be one of auto, off",
        ),
    ] {
        let e = Config::load(&from_env(&[(key, value)])).expect_err(key);
        assert_eq!((e.key.as_str(), e.value.as_str()), (key, value));
        assert!(
            e.to_string().starts_with(&format!(
                "invalid configuration: {key}={value} (from environment): {allowed}"
            )),
            "{e}"
        );
    }
    let database = |env: &[(&str, &str)]| {
        let mut env = env.to_vec();
        env.push(("HISTORY_DATABASE_URL", "postgres://iiot@db:5432/iiot"));
        let config = Config::load(&from_env(&env)).expect("valid");
        let db = iiot::history::database::DatabaseConfig::from_config(&config).expect("a URL");
        (db.pool_size, db.timescaledb)
    };
    assert_eq!(database(&[]), (4, true), "the defaults");
    assert_eq!(
        database(&[
            ("HISTORY_DATABASE_POOL_SIZE", "1"),
            ("HISTORY_DATABASE_TIMESCALEDB", "off")
        ]),
        (1, false)
    );
    assert_eq!(
        database(&[("HISTORY_DATABASE_POOL_SIZE", "64")]),
        (64, true)
    );
}
