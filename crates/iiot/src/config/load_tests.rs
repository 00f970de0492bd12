//! Tests of the layered loading (`super::load`).

use super::*;

fn sources_with_file(text: &str) -> (tempfile::TempDir, Sources) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("iiot.toml");
    std::fs::write(&path, text).expect("write");
    let sources = Sources {
        file: Some(path),
        ..Sources::default()
    };
    (dir, sources)
}

#[test]
fn the_documented_example_file_loads() {
    let doc = include_str!("mod.rs");
    let example: String = doc
        .lines()
        .map(|line| {
            line.strip_prefix("//!")
                .unwrap_or(line)
                .trim_start_matches(' ')
        })
        .skip_while(|line| *line != "```toml")
        .skip(1)
        .take_while(|line| *line != "```")
        .map(|line| format!("{line}\n"))
        .collect();
    assert!(example.contains("[[alerts.rules]]"), "example found");
    let (_dir, sources) = sources_with_file(&example);
    let config = Config::load(&sources).expect("the module doc example is valid");
    assert_eq!(config.simulator.seed, Some(42));
    assert_eq!(config.kafka.brokers.as_deref(), Some("localhost:9092"));
}

#[test]
fn defaults_resolve() {
    assert!(resolve(&[], None).is_ok());
}

#[test]
fn toml_syntax_errors_give_line_and_column_on_one_line() {
    let (_dir, sources) = sources_with_file("[http]\nport = 80\nport = = 3\n");
    let e = Config::load(&sources).expect_err("broken file");
    assert!(e.allowed.starts_with("TOML parse error at line 3"), "{e}");
    assert!(!e.to_string().contains('\n'), "{e}");
    assert!(e.value.is_empty());
}

#[test]
fn unknown_sections_and_keys_list_what_is_known() {
    let (_dir, sources) = sources_with_file("[simulatr]\ndevice_count = 3\n");
    let e = Config::load(&sources).expect_err("unknown section");
    assert_eq!(e.key, "simulatr");
    assert!(e.allowed.contains("simulator"), "{e}");

    let (_dir, sources) = sources_with_file("[alerts]\ntemprature_high = 3\n");
    let e = Config::load(&sources).expect_err("unknown key");
    assert_eq!(e.key, "alerts.temprature_high");
    assert!(
        e.allowed.contains("temperature_high") && e.allowed.contains("rules"),
        "{e}"
    );
}

#[test]
fn tables_where_values_belong_are_rejected() {
    let (_dir, sources) = sources_with_file("[http.port]\nx = 1\n");
    let e = Config::load(&sources).expect_err("table as value");
    assert_eq!(e.key, "http.port");
    assert_eq!(e.allowed, "must be a number or a string");
}

#[test]
fn unknown_flag_names_are_rejected() {
    let sources = Sources {
        flags: vec![("DEVICE_COUNTS", "3".into())],
        ..Sources::default()
    };
    let e = Config::load(&sources).expect_err("typo");
    assert_eq!((e.key.as_str(), e.origin), ("DEVICE_COUNTS", Origin::Flag));
}

#[test]
fn temperature_low_must_stay_below_high() {
    let sources = Sources {
        env: HashMap::from([("ALERT_TEMPERATURE_LOW".into(), "85".into())]),
        ..Sources::default()
    };
    let e = Config::load(&sources).expect_err("low above high");
    assert_eq!(
        (e.key.as_str(), e.value.as_str()),
        ("ALERT_TEMPERATURE_LOW", "85")
    );
    assert!(e.allowed.contains("80"), "{e}");
}

#[test]
fn iiot_config_from_dotenv_selects_the_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("custom.toml");
    std::fs::write(&file, "[simulator]\ndevice_count = 7\n").expect("write");
    let dotenv = dir.path().join(".env");
    std::fs::write(&dotenv, format!("IIOT_CONFIG={}\n", file.display())).expect("write");
    let sources = Sources {
        dotenv: Some(dotenv),
        ..Sources::default()
    };
    let config = Config::load(&sources).expect("valid");
    assert_eq!(config.simulator.device_count, 7);
    assert_eq!(config.config_file, Some(file));
}

#[test]
fn a_refused_secret_is_never_echoed() {
    let mut sources = Sources::default();
    sources
        .env
        .insert("WEBSOCKET_AUTH_TOKEN".into(), "hunter2 with spaces".into());
    let err = Config::load(&sources).expect_err("a token with spaces is refused");
    let line = err.to_string();
    assert!(line.contains("WEBSOCKET_AUTH_TOKEN=***"), "{line}");
    assert!(!line.contains("hunter2"), "{line}");
    let (_dir, sources) = sources_with_file("[websocket]\nauth_token = \"hunter2 again\"\n");
    let line = Config::load(&sources).expect_err("refused").to_string();
    assert!(!line.contains("hunter2"), "{line}");
    let mut sources = Sources::default();
    sources.env.insert(
        "KAFKA_PROPERTIES".into(),
        "sasl.password=hunter2;not a pair".into(),
    );
    let line = Config::load(&sources).expect_err("refused").to_string();
    assert!(!line.contains("hunter2"), "{line}");
}
