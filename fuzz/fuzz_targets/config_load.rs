//! The configuration loader over all its layers: the input is split at NUL bytes into an
//! `iiot.toml`, a `.env` file, environment lines and flag lines (`NAME=value` each), written
//! to a scratch directory and loaded with `Config::load`. It must give a `Config` or a
//! `ConfigError` whose message is one line — never a panic.
//!
//! Names that make the loader read another file (`IIOT_CONFIG`, `…_FILE`) are left out: the
//! fuzzer would otherwise point them at `/dev/zero`.
#![no_main]

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::LazyLock;

use iiot::config::{Config, Sources};
use libfuzzer_sys::fuzz_target;

static DIR: LazyLock<PathBuf> = LazyLock::new(|| {
    let dir = std::env::temp_dir().join(format!("iiot-fuzz-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("scratch directory");
    dir
});

/// The key names, so a flag can be given with the `&'static str` `Sources::flags` wants.
static NAMES: LazyLock<Vec<&'static str>> =
    LazyLock::new(|| iiot::config::keys().map(|(env, ..)| env).collect());

fn reads_a_file(name: &str) -> bool {
    name.contains("_FILE") || name.contains("IIOT_CONFIG")
}

fn pairs(text: &str) -> impl Iterator<Item = (&str, &str)> {
    text.lines()
        .filter_map(|line| line.split_once('='))
        .filter(|(name, _)| !reads_a_file(name))
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut parts = text.split('\0');
    let (toml, dotenv) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let (env, flags) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let dotenv: String = dotenv
        .lines()
        .filter(|line| !reads_a_file(line))
        .map(|line| format!("{line}\n"))
        .collect();
    let (file, dotenv_path) = (DIR.join("iiot.toml"), DIR.join(".env"));
    std::fs::write(&file, toml).expect("write iiot.toml");
    std::fs::write(&dotenv_path, dotenv).expect("write .env");
    let env: HashMap<String, String> = pairs(env)
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let flags = pairs(flags)
        .map(|(k, v)| {
            // An unknown flag name stands for any: the loader refuses it the same way.
            let name = NAMES
                .iter()
                .find(|n| **n == k)
                .copied()
                .unwrap_or("NOT_A_KEY");
            (name, v.to_string())
        })
        .collect();
    let sources = Sources {
        file: (!toml.is_empty()).then_some(file),
        dotenv: Some(dotenv_path),
        env,
        flags,
    };
    if let Err(e) = Config::load(&sources) {
        let line = e.to_string();
        assert!(!line.contains('\n'), "one line: {line:?}");
    }
});
