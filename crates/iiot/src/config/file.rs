//! The config file (`iiot.toml`): reading it, flattening its tables into a layer of keys, and
//! the rule, channel and route arrays it holds; errors that point into the file.

use std::path::{Path, PathBuf};

use super::keys::{self, KEYS};
use super::load::{Layer, one_line};
use super::{ConfigError, Origin};
use crate::alerts::rules::RuleSpec;
use crate::sinks::notify::config::{ChannelSpec, RouteSpec};

/// A parsed config file.
pub(super) struct ConfigFile {
    pub(super) path: PathBuf,
    pub(super) layer: Layer,
    pub(super) specs: Vec<RuleSpec>,
    /// `[[alerts.rules]]` as written, to quote values in rule errors.
    pub(super) raw_rules: Vec<toml::Table>,
    /// `[[notify.channels]]`.
    pub(super) channels: Vec<ChannelSpec>,
    /// `[[notify.routes]]`.
    pub(super) routes: Vec<RouteSpec>,
}

pub(super) fn read_file(path: &Path) -> Result<ConfigFile, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| whole_file(path, format!("cannot read the file: {e}")))?;
    let table: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| whole_file(path, toml_error(&text, &e)))?;
    let mut file = ConfigFile {
        path: path.to_path_buf(),
        layer: Layer::empty(Origin::File(path.to_path_buf())),
        specs: Vec::new(),
        raw_rules: Vec::new(),
        channels: Vec::new(),
        routes: Vec::new(),
    };
    collect(&table, "", &mut file)?;
    Ok(file)
}

/// Walks the file's tables: known keys become layer values, `[[alerts.rules]]` become specs,
/// anything else is an error naming the key.
fn collect(table: &toml::Table, prefix: &str, file: &mut ConfigFile) -> Result<(), ConfigError> {
    for (name, value) in table {
        let path = if prefix.is_empty() {
            name.clone()
        } else {
            format!("{prefix}.{name}")
        };
        if path == "alerts.rules" {
            collect_rules(value, file)?;
        } else if path == "notify.channels" {
            file.channels = collect_tables(value, &path, file)?;
        } else if path == "notify.routes" {
            file.routes = collect_tables(value, &path, file)?;
        } else if let Some(key) = keys::by_toml(&path) {
            let text = scalar_text(value)
                .ok_or_else(|| file_error(file, &path, value, "must be a number or a string"))?;
            file.layer.values.insert(key.env.to_string(), text);
        } else if let (toml::Value::Table(inner), false) = (value, children(&path).is_empty()) {
            collect(inner, &path, file)?;
        } else {
            let place = if prefix.is_empty() {
                "at the top level".to_string()
            } else {
                format!("in [{prefix}]")
            };
            let known = children(prefix).join(", ");
            let problem = format!("is not a known key; known {place}: {known}");
            return Err(file_error(file, &path, value, &problem));
        }
    }
    Ok(())
}

fn collect_rules(value: &toml::Value, file: &mut ConfigFile) -> Result<(), ConfigError> {
    let toml::Value::Array(items) = value else {
        let problem = "must be a list of [[alerts.rules]] tables";
        return Err(file_error(file, "alerts.rules", value, problem));
    };
    for (i, item) in items.iter().enumerate() {
        let key = format!("alerts.rules[{i}]");
        let toml::Value::Table(table) = item else {
            return Err(file_error(file, &key, item, "must be a table"));
        };
        let spec = match item.clone().try_into::<RuleSpec>() {
            Ok(spec) => spec,
            Err(e) => {
                return Err(match bad_rule_field(table) {
                    Some((field, value, problem)) => {
                        file_error(file, &format!("{key}.{field}"), value, &problem)
                    }
                    None => file_error(file, &key, item, &one_line(e.message())),
                });
            }
        };
        file.specs.push(spec);
        file.raw_rules.push(table.clone());
    }
    Ok(())
}

/// A `[[path]]` array of tables, each deserialized as `T`; the error names the table and, when
/// serde says, the field.
fn collect_tables<T: serde::de::DeserializeOwned>(
    value: &toml::Value,
    path: &str,
    file: &ConfigFile,
) -> Result<Vec<T>, ConfigError> {
    let toml::Value::Array(items) = value else {
        let problem = format!("must be a list of [[{path}]] tables");
        return Err(file_error(file, path, value, &problem));
    };
    items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            item.clone().try_into::<T>().map_err(|e| {
                file_error(file, &format!("{path}[{i}]"), item, &one_line(e.message()))
            })
        })
        .collect()
}

/// The field of a rule that does not deserialize (unknown, or of the wrong type), found by
/// trying each field on its own: serde's message does not say which field it was.
fn bad_rule_field(rule: &toml::Table) -> Option<(&str, &toml::Value, String)> {
    rule.iter().find_map(|(field, value)| {
        let mut alone = toml::Table::new();
        // `alert_type` is the one required field; a placeholder keeps it out of the way.
        alone.insert("alert_type".into(), toml::Value::String("x".into()));
        alone.insert(field.clone(), value.clone());
        let e = toml::Value::Table(alone).try_into::<RuleSpec>().err()?;
        Some((field.as_str(), value, one_line(e.message())))
    })
}

/// The names directly below the dotted `prefix` in the key table ("" = the sections).
fn children(prefix: &str) -> Vec<&'static str> {
    let mut names: Vec<&'static str> = KEYS
        .iter()
        .filter_map(|k| {
            let rest = if prefix.is_empty() {
                k.toml
            } else {
                k.toml.strip_prefix(prefix)?.strip_prefix('.')?
            };
            rest.split('.').next().filter(|s| !s.is_empty())
        })
        .collect();
    if prefix == "alerts" {
        names.push("rules");
    }
    if prefix == "notify" {
        names.extend(["channels", "routes"]);
    }
    // Keys of one section need not be adjacent in the table: keep the first of each name.
    let mut seen = std::collections::HashSet::new();
    names.retain(|name| seen.insert(*name));
    names
}

/// A TOML scalar as the text a flag or environment variable would give.
pub(super) fn scalar_text(value: &toml::Value) -> Option<String> {
    Some(match value {
        toml::Value::String(s) => s.clone(),
        toml::Value::Integer(i) => i.to_string(),
        toml::Value::Float(x) => x.to_string(),
        toml::Value::Boolean(b) => b.to_string(),
        toml::Value::Datetime(d) => d.to_string(),
        toml::Value::Array(_) | toml::Value::Table(_) => return None,
    })
}

pub(super) fn file_error(
    file: &ConfigFile,
    key: &str,
    value: &toml::Value,
    problem: &str,
) -> ConfigError {
    ConfigError {
        key: key.to_string(),
        value: scalar_text(value).unwrap_or_else(|| one_line(&redacted(value).to_string())),
        origin: file.layer.origin.clone(),
        allowed: problem.to_string(),
    }
}

/// `value` with every entry whose name looks secret shown as `***`, however deep: a table in
/// the wrong place is shown whole in the error, and may hold a password (found by the
/// property `any_layers_give_a_config_or_one_line_without_secrets`).
fn redacted(value: &toml::Value) -> toml::Value {
    match value {
        toml::Value::Table(table) => toml::Value::Table(
            table
                .iter()
                .map(|(name, v)| {
                    let v = if super::is_secret(&name.to_ascii_uppercase()) {
                        toml::Value::String("***".into())
                    } else {
                        redacted(v)
                    };
                    (name.clone(), v)
                })
                .collect(),
        ),
        toml::Value::Array(items) => toml::Value::Array(items.iter().map(redacted).collect()),
        other => other.clone(),
    }
}

/// The file at `path` cannot be read or parsed.
pub(super) fn whole_file(path: &Path, problem: String) -> ConfigError {
    ConfigError {
        key: path.display().to_string(),
        value: String::new(),
        origin: Origin::File(path.to_path_buf()),
        allowed: one_line(&problem),
    }
}

/// `TOML parse error at line 3, column 7: <message>`.
fn toml_error(text: &str, e: &toml::de::Error) -> String {
    let message = one_line(e.message());
    let Some(span) = e.span() else {
        return format!("TOML parse error: {message}");
    };
    let before = text.get(..span.start).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().unwrap_or("").chars().count() + 1;
    format!("TOML parse error at line {line}, column {column}: {message}")
}
