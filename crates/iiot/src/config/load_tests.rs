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

#[test]
fn a_value_or_key_with_a_newline_is_still_one_line() {
    // Found by `any_layers_give_a_config_or_one_line_without_secrets`: a TOML string's `\n`
    // escape (or a quoted key's) split the error over two lines.
    let (_dir, sources) = sources_with_file("x = \"\\n\"\n\"a\\nb\" = 1\n");
    let line = Config::load(&sources).expect_err("unknown key").to_string();
    assert!(!line.contains('\n'), "{line}");
    assert!(
        line.contains("a\\nb=1 (from ") || line.contains("x=\\n (from "),
        "{line}"
    );
    let (_dir, sources) = sources_with_file("[simulator]\ndevice_count = \"1\\n2\"\n");
    let line = Config::load(&sources)
        .expect_err("not a number")
        .to_string();
    assert!(line.contains("device_count=1\\n2 (from"), "{line}");
}

#[test]
fn known_sections_are_listed_once_each() {
    // Found by the same property: `http` keys are not adjacent in the table, so the list of
    // sections named `http` twice.
    let (_dir, sources) = sources_with_file("x = 1\n");
    let e = Config::load(&sources).expect_err("unknown key");
    let listed: Vec<&str> = e
        .allowed
        .rsplit(": ")
        .next()
        .unwrap_or("")
        .split(", ")
        .collect();
    let mut unique = listed.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(listed.len(), unique.len(), "{}", e.allowed);
    assert!(
        listed.contains(&"http") && listed.contains(&"simulator"),
        "{}",
        e.allowed
    );
}

#[test]
fn an_unparsable_dotenv_line_is_not_echoed() {
    // Found by `any_layers_give_a_config_or_one_line_without_secrets`: dotenvy's message
    // quotes the line, and with it a secret such as `KAFKA_SASL_PASSWORD="hunter2$"`.
    let dir = tempfile::tempdir().expect("temp dir");
    let dotenv = dir.path().join(".env");
    std::fs::write(
        &dotenv,
        "DEVICE_COUNT=3\nKAFKA_SASL_PASSWORD=\"hunter2$\"\n",
    )
    .expect("write");
    let sources = Sources {
        dotenv: Some(dotenv),
        ..Sources::default()
    };
    let line = Config::load(&sources).expect_err("unparsable").to_string();
    assert!(!line.contains("hunter2"), "{line}");
    assert!(line.contains(".env: entry 2 cannot be parsed"), "{line}");
}

#[test]
fn a_table_in_the_wrong_place_is_shown_without_its_secrets() {
    // Found by `any_layers_give_a_config_or_one_line_without_secrets`: an unknown field of a
    // rule whose value is a table was shown whole, password included.
    let (_dir, sources) =
        sources_with_file("[[alerts.rules]]\nkafka.sasl_password = \"hunter2\"\n");
    let line = Config::load(&sources)
        .expect_err("unknown field")
        .to_string();
    assert!(!line.contains("hunter2"), "{line}");
    assert!(line.contains("sasl_password = \"***\""), "{line}");
}

/// Properties of the whole loader over generated layers (the libFuzzer target
/// `fuzz/fuzz_targets/config_load.rs` runs the same entry point without bounds): a `Config`
/// or one line naming the problem, and a secret never in that line.
mod load_properties {
    use proptest::prelude::*;

    use super::*;

    /// Marks every secret value, so the error line can be searched for it.
    const MARK: &str = "s3cr3t";

    /// A key of the table, as `(environment name, file path, default)`.
    type KeyNames = (&'static str, &'static str, &'static str);

    fn key() -> impl Strategy<Value = KeyNames> {
        // Keys that name files are left out: the loader would read whatever they name.
        let usable: Vec<KeyNames> = KEYS
            .iter()
            .filter(|k| k.env != CONFIG_KEY && !k.env.ends_with("_FILE"))
            .map(|k| (k.env, k.toml, k.default))
            .collect();
        prop::sample::select(usable)
    }

    /// Text as a flag or environment variable gives it: the key's default, a number, a
    /// duration, a word, or any line.
    fn text_for((env, _, default): KeyNames) -> impl Strategy<Value = String> {
        let secret = crate::config::is_secret(env);
        prop_oneof![
            Just(default.to_string()),
            any::<i64>().prop_map(|n| n.to_string()),
            (0u32..100_000).prop_map(|n| n.to_string()),
            (
                0u32..5000,
                prop::sample::select(vec!["ms", "s", "m", "h", "x", ""])
            )
                .prop_map(|(n, unit)| format!("{n}{unit}")),
            "-?[0-9]{1,4}\\.[0-9]{0,3}",
            prop::sample::select(vec!["true", "false", "text", "json", "", " "])
                .prop_map(str::to_string),
            "[ -~]{0,24}",
        ]
        .prop_map(move |v| if secret { format!("{MARK}{v}") } else { v })
    }

    fn pair() -> impl Strategy<Value = (KeyNames, String)> {
        key().prop_flat_map(|k| (Just(k), text_for(k)))
    }

    /// A TOML value for a file key: text quoted (escapes included), numbers and booleans
    /// bare, or something of the wrong shape.
    fn toml_value(text: String) -> impl Strategy<Value = String> {
        prop_oneof![
            Just(toml::Value::String(text.clone()).to_string()),
            Just(text),
            Just("[1, \"a\"]".to_string()),
            Just("{ x = 1 }".to_string()),
            Just("\"line one\\nline two\\t\\u0007\"".to_string()),
            any::<f64>().prop_map(|x| toml::Value::Float(x).to_string()),
        ]
    }

    fn file_line() -> impl Strategy<Value = String> {
        prop_oneof![
            4 => pair().prop_flat_map(|(k, text)| {
                (Just(k.1), toml_value(text)).prop_map(|(path, v)| format!("{path} = {v}"))
            }),
            1 => ("[a-z_.]{1,20}", "[ -~]{0,10}").prop_map(|(k, v)| format!("{k} = {v}")),
            1 => Just("[[alerts.rules]]".to_string()),
            1 => prop::sample::select(vec![
                "alert_type = \"hot\"", "parameter = \"temperature\"", "operator = \">\"",
                "value = 50", "for = \"10s\"", "severity = \"critical\"", "kind = \"stuck\"",
                "clear = 45", "x = \"\\n\"",
            ])
            .prop_map(str::to_string),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        #[test]
        fn any_layers_give_a_config_or_one_line_without_secrets(
            file in prop::option::of(prop::collection::vec(file_line(), 0..12)),
            dotenv in prop::collection::vec(pair(), 0..6),
            env in prop::collection::vec(pair(), 0..6),
            flags in prop::collection::vec(pair(), 0..4),
        ) {
            let dir = tempfile::tempdir().expect("temp dir");
            let file = file.map(|lines| {
                let path = dir.path().join("iiot.toml");
                std::fs::write(&path, lines.join("\n")).expect("write");
                path
            });
            let dotenv_path = dir.path().join(".env");
            let dotenv_text: String = dotenv
                .iter()
                .map(|(k, v)| format!("{}={}\n", k.0, toml::Value::String(v.clone())))
                .collect();
            std::fs::write(&dotenv_path, dotenv_text).expect("write");
            let sources = Sources {
                file,
                dotenv: Some(dotenv_path),
                env: env.iter().map(|(k, v)| (k.0.to_string(), v.clone())).collect(),
                flags: flags.iter().map(|(k, v)| (k.0, v.clone())).collect(),
            };
            if let Err(e) = Config::load(&sources) {
                let line = e.to_string();
                prop_assert!(!line.contains('\n'), "more than one line: {line:?}");
                prop_assert!(!line.contains(MARK), "a secret shown: {line}");
            }
        }
    }
}
