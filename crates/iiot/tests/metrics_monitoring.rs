//! The monitoring files that read `/metrics`: every metric a Prometheus rule, a promtool test
//! or a Grafana panel in `monitoring/` uses must be one `iiot` exports (or a recording rule,
//! or Prometheus's own `up`), so a renamed metric cannot leave a silent alert or an empty
//! panel behind.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use iiot::http::metrics::{METRICS, series_names};
use serde_json::Value;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn files_in(dir: &str, extension: &str) -> Vec<PathBuf> {
    let dir = repo_root().join(dir);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.expect("entry").path())
        .filter(|p| p.to_string_lossy().ends_with(extension))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no *{extension} in {}", dir.display());
    files
}

/// PromQL words that are not metric names.
const PROMQL_WORDS: &[&str] = &[
    "and", "or", "unless", "bool", "offset", "inf", "nan", "Inf", "NaN",
];
/// Clauses whose parenthesised list holds label names.
const LABEL_LISTS: &[&str] = &[
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];
/// Series Prometheus makes itself.
const PROMETHEUS_OWN: &[&str] = &["up"];

/// Skips from `chars[i]` (an opening `open`) past its matching `close`, minding quoted strings.
fn skip_group(chars: &[char], mut i: usize, open: char, close: char) -> usize {
    let mut depth = 0;
    while i < chars.len() {
        match chars[i] {
            '"' | '\'' | '`' => i = skip_string(chars, i),
            c if c == open => depth += 1,
            c if c == close => {
                depth -= 1;
                if depth == 0 {
                    return i + 1;
                }
            }
            _ => {}
        }
        i += 1;
    }
    i
}

/// Index of the closing quote of the string starting at `chars[i]`.
fn skip_string(chars: &[char], i: usize) -> usize {
    let quote = chars[i];
    let mut j = i + 1;
    while j < chars.len() && chars[j] != quote {
        j += if chars[j] == '\\' { 2 } else { 1 };
    }
    j
}

/// The metric (or recording rule) names a PromQL expression reads: identifiers outside label
/// matchers, ranges, strings and label lists that are not function calls or keywords.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let chars: Vec<char> = expr.chars().collect();
    let mut names = BTreeSet::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '"' || c == '\'' || c == '`' {
            i = skip_string(&chars, i) + 1;
        } else if c == '{' {
            i = skip_group(&chars, i, '{', '}');
        } else if c == '[' {
            i = skip_group(&chars, i, '[', ']');
        } else if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            let start = i;
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || "_:".contains(chars[i])) {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let mut next = i;
            while next < chars.len() && chars[next].is_whitespace() {
                next += 1;
            }
            // `sum by (job) (…)`: an aggregation whose modifier comes before its argument.
            let rest: String = chars[next..].iter().take(8).collect();
            let aggregation = ["by", "without"].iter().any(|m| {
                rest.strip_prefix(m)
                    .is_some_and(|r| r.starts_with([' ', '(']))
            });
            let call = chars.get(next) == Some(&'(') || aggregation;
            if call && LABEL_LISTS.contains(&word.as_str()) {
                i = skip_group(&chars, next, '(', ')');
            } else if !call && !PROMQL_WORDS.contains(&word.as_str()) {
                names.insert(word);
            }
        } else if c.is_ascii_digit() || c == '$' {
            // Numbers, durations (5m) and Grafana variables ($__rate_interval).
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || "._$".contains(chars[i]))
            {
                i += 1;
            }
        } else {
            i += 1;
        }
    }
    names
}

/// The value of every `key:` line of a YAML file (single-line values only; a block scalar
/// fails the test so that no expression escapes the check).
fn yaml_values(text: &str, key: &str) -> Vec<String> {
    let prefix = format!("{key}:");
    text.lines()
        .map(str::trim_start)
        .map(|l| l.strip_prefix("- ").unwrap_or(l))
        .filter_map(|l| l.strip_prefix(prefix.as_str()))
        .map(|v| {
            let v = v.trim();
            assert!(
                !v.is_empty() && !v.starts_with('|') && !v.starts_with('>'),
                "keep `{key}:` values on one line so this check can read them: {v:?}"
            );
            v.trim_matches(|c| c == '\'' || c == '"').to_owned()
        })
        .collect()
}

fn exported_series() -> BTreeSet<String> {
    METRICS.iter().flat_map(series_names).collect()
}

/// Every PromQL expression of the dashboard, with its panel title. (Panels on the PostgreSQL
/// history data source hold SQL: `history_postgres.rs` runs those against the schema.)
fn dashboard_exprs(dashboard: &Value) -> Vec<(String, String)> {
    dashboard["panels"]
        .as_array()
        .expect("panels")
        .iter()
        .filter(|p| p["datasource"]["type"] != "grafana-postgresql-datasource")
        .flat_map(|p| {
            let title = p["title"].as_str().expect("title").to_owned();
            p["targets"]
                .as_array()
                .expect("targets")
                .iter()
                .map(move |t| (title.clone(), t["expr"].as_str().expect("expr").to_owned()))
        })
        .collect()
}

#[test]
fn the_name_extractor_finds_metrics_and_skips_the_rest() {
    let got = metric_names(
        r#"sum by (job, le) (rate(a_total{job=~"x.*",le!="{b}"}[5m])) / on (job) group_left (x) job:b:rate5m > bool 0.5 and c offset 1m unless max(d[$__rate_interval]) or 1e3"#,
    );
    let want: BTreeSet<String> = ["a_total", "job:b:rate5m", "c", "d"]
        .map(String::from)
        .into();
    assert_eq!(got, want);
}

#[test]
fn every_metric_the_rules_tests_and_dashboard_use_is_exported() {
    let exported = exported_series();
    let mut recorded = BTreeSet::new();
    let mut alerts = BTreeSet::new();
    let mut uses: Vec<(String, String)> = Vec::new(); // (where, expression)
    for path in files_in("monitoring/rules", ".yml") {
        let text = read(&path);
        recorded.extend(yaml_values(&text, "record"));
        alerts.extend(yaml_values(&text, "alert"));
        let file = path.display().to_string();
        uses.extend(
            yaml_values(&text, "expr")
                .into_iter()
                .map(|e| (file.clone(), e)),
        );
    }
    for path in files_in("monitoring/tests", ".test.yml") {
        let text = read(&path);
        let file = path.display().to_string();
        uses.extend(
            yaml_values(&text, "expr")
                .into_iter()
                .map(|e| (file.clone(), e)),
        );
        // Input series are written as series selectors: `name{labels}`.
        uses.extend(
            yaml_values(&text, "series")
                .into_iter()
                .map(|e| (file.clone(), e)),
        );
    }
    let dashboards = files_in("monitoring/grafana/dashboards", ".json");
    let mut titles = BTreeSet::new();
    for path in &dashboards {
        let dashboard: Value = serde_json::from_str(&read(path)).expect("dashboard JSON");
        for (title, expr) in dashboard_exprs(&dashboard) {
            titles.insert(title.clone());
            uses.push((format!("{} panel {title:?}", path.display()), expr));
        }
    }

    let mut unknown = Vec::new();
    for (place, expr) in &uses {
        for name in metric_names(expr) {
            let known = exported.contains(&name)
                || recorded.contains(&name)
                || PROMETHEUS_OWN.contains(&name.as_str());
            if !known {
                unknown.push(format!("{place}: {name} (in {expr})"));
            }
        }
    }
    assert!(
        unknown.is_empty(),
        "metrics not exported by iiot:\n{}",
        unknown.join("\n")
    );

    // What the design notes ask for is all there.
    for alert in [
        "HighErrorRate",
        "HighSendLatency",
        "HighMemoryUsage",
        "HighCPUUsage",
        "HighQueueDepth",
        "KafkaConnectionFailure",
        "DeviceDataGenerationStopped",
        "LowBatchEfficiency",
    ] {
        assert!(alerts.contains(alert), "alert rule {alert}");
    }
    assert!(recorded.len() >= 7, "{} recording rules", recorded.len());
    for title in [
        "Messages Sent Rate",
        "Error Rate",
        "Send Latency (95th percentile)",
        "Active Devices",
        "Message Throughput Over Time",
        "Latency Distribution",
        "System Resources",
        "Queue Depth",
        "Device Data Generation",
        "Batch Processing Efficiency",
    ] {
        assert!(titles.contains(title), "dashboard panel {title:?}");
    }
    // Every recording rule is read by an alert or a panel (no dead rules).
    let used: BTreeSet<String> = uses.iter().flat_map(|(_, e)| metric_names(e)).collect();
    for r in &recorded {
        assert!(used.contains(r), "recording rule {r} is used nowhere");
    }
}

#[test]
fn the_dashboard_uses_the_provisioned_datasource() {
    let uids: Vec<String> = files_in("monitoring/grafana/provisioning/datasources", ".yml")
        .iter()
        .flat_map(|p| yaml_values(&read(p), "uid"))
        .collect();
    for path in files_in("monitoring/grafana/dashboards", ".json") {
        let dashboard: Value = serde_json::from_str(&read(&path)).expect("dashboard JSON");
        for panel in dashboard["panels"].as_array().expect("panels") {
            let uid = panel["datasource"]["uid"].as_str().expect("datasource uid");
            assert!(uids.iter().any(|u| u == uid), "{}: {uid}", panel["title"]);
        }
    }
}
