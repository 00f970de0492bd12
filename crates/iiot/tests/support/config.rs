//! Configuration sources as a user writes them: environment variables and files.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use iiot::alerts::rules::{RuleKind, RuleSet};
use iiot::config::{Config, Sources};
use tempfile::TempDir;

/// An environment made of `pairs`.
pub fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Sources with only the environment `pairs`.
pub fn from_env(pairs: &[(&str, &str)]) -> Sources {
    Sources {
        env: env(pairs),
        ..Sources::default()
    }
}

/// Sources with only the config file `file`.
pub fn from_file(file: PathBuf) -> Sources {
    Sources {
        file: Some(file),
        ..Sources::default()
    }
}

/// The one-line error of loading only the environment `pairs`.
pub fn refusal(pairs: &[(&str, &str)]) -> String {
    Config::load(&from_env(pairs))
        .expect_err("the environment is refused")
        .to_string()
}

/// A fresh temp dir holding `iiot.toml` with `text`; the dir goes when dropped.
pub fn config_file(text: &str) -> (TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = write(dir.path(), "iiot.toml", text);
    (dir, file)
}

/// Writes `text` to `dir/name` and returns the path.
pub fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write test file");
    path
}

/// The threshold of the `temperature_high` rule.
pub fn temperature_high(rules: &RuleSet) -> f64 {
    match &rules.get("temperature_high").expect("default rule").kind {
        RuleKind::Threshold { value, .. } => *value,
        other => panic!("unexpected rule kind {other:?}"),
    }
}
