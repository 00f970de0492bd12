//! Logging set-up: `tracing` to stderr (stdout carries data: `simulate --output stdout`, bench
//! reports), as text or JSON lines, filtered by a `RUST_LOG`-style directive.

use tracing_subscriber::EnvFilter;

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Installs the global subscriber. `filter` is a `RUST_LOG` directive such as `info` or
/// `iiot=debug,warn`; an unparsable one falls back to `info` with a warning.
pub fn init(format: Format, filter: &str) {
    let (env_filter, bad) = match EnvFilter::try_new(filter) {
        Ok(f) => (f, None),
        Err(e) => (EnvFilter::new("info"), Some(e)),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(env_filter)
        .with_writer(std::io::stderr)
        // Colours only for a person at a terminal, never into files or log collectors.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false);
    // A second init (tests) keeps the first subscriber.
    let _ = match format {
        Format::Text => builder.try_init(),
        Format::Json => builder.json().flatten_event(true).try_init(),
    };
    if let Some(e) = bad {
        tracing::warn!("RUST_LOG {filter:?} not understood ({e}); using info");
    }
}
