//! Configuration sources as a user writes them: environment variables and files.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use iiot::alerts::rules::{RuleKind, RuleSet};

/// An environment made of `pairs`.
pub fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
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
