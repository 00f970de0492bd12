//! Hot reload of the alert rules: watch the config file, debounce, reload the whole
//! configuration, and publish the rules only when they changed and everything is valid.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::event::{AccessKind, AccessMode, MetadataKind, ModifyKind};
use notify::{Event, EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::{Config, Sources, load};
use crate::alerts::book::RuleBook;

/// Quiet time after the last change before reloading: editors save in bursts
/// (truncate, write, rename), and a half-written file must not be read.
const DEBOUNCE: Duration = Duration::from_millis(300);

/// Hot reload of alert rules.
///
/// Watches the config file selected by `sources` (through its directory, so editors that
/// replace the file are seen), waits ~300 ms after the last change, then re-runs
/// [`Config::load`]. On success it hands the file's rules to `book`, which publishes them (with
/// the rules made over the API) if they changed, and logs `alert rules reloaded (N rules)`. On failure it logs a warning with the
/// one-line [`ConfigError`](super::ConfigError) and keeps the old rules. Other settings take
/// effect on restart only (a change to them is logged).
///
/// Ends when `shutdown` is cancelled. Returns `None` when there is no config file to watch (or
/// the watch cannot be set up, which is logged). Must be called inside a Tokio runtime.
pub fn watch_rules(
    sources: Sources,
    book: Arc<RuleBook>,
    shutdown: CancellationToken,
) -> Option<JoinHandle<()>> {
    let path = match load::config_path(&sources) {
        Ok(path) => path?,
        Err(e) => {
            warn!("alert rule hot reload is off: {e}");
            return None;
        }
    };
    let Some(name) = path.file_name().map(|n| n.to_os_string()) else {
        warn!(file = %path.display(), "alert rule hot reload is off: not a file name");
        return None;
    };
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    };
    // Capacity 1 is enough: a queued signal already means "reload once the file is quiet".
    let (changed_tx, changed_rx) = mpsc::channel::<()>(1);
    let on_event = move |event: notify::Result<Event>| match event {
        Ok(event) if concerns(&event, &name) => {
            // Full means a reload is already due; closed means the task has ended.
            let _ = changed_tx.try_send(());
        }
        Ok(_) => {}
        Err(e) => warn!(error = %e, "config file watch error"),
    };
    // Set up synchronously so that no change made after this returns is missed.
    let watcher = match start_watcher(on_event, &dir) {
        Ok(watcher) => watcher,
        Err(e) => {
            warn!(dir = %dir.display(), error = %e, "alert rule hot reload is off: cannot watch");
            return None;
        }
    };
    info!(file = %path.display(), "watching the config file for alert rule changes");
    let reloader = Reloader {
        last: Config::load(&sources).ok(),
        sources,
        book,
    };
    Some(tokio::spawn(run(reloader, watcher, changed_rx, shutdown)))
}

fn start_watcher(
    handler: impl notify::EventHandler,
    dir: &Path,
) -> notify::Result<RecommendedWatcher> {
    let mut watcher = notify::recommended_watcher(handler)?;
    watcher.watch(dir, RecursiveMode::NonRecursive)?;
    Ok(watcher)
}

/// Whether `event` may have changed the file called `name`. Opening and reading it (as the
/// reload itself does) must not count, or every reload would trigger the next.
fn concerns(event: &Event, name: &OsString) -> bool {
    let kind_matters = match event.kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) => false,
        EventKind::Modify(ModifyKind::Metadata(MetadataKind::AccessTime)) => false,
        _ => true,
    };
    // `..data` is how Kubernetes swaps a mounted ConfigMap: the file itself is a symlink
    // that never sees an event.
    kind_matters
        && event
            .paths
            .iter()
            .filter_map(|p| p.file_name())
            .any(|n| n == name.as_os_str() || n == "..data")
}

async fn run(
    mut reloader: Reloader,
    watcher: RecommendedWatcher,
    mut changed: mpsc::Receiver<()>,
    shutdown: CancellationToken,
) {
    // Owned here so that the watch lives exactly as long as the task.
    let _watcher = watcher;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            signal = changed.recv() => if signal.is_none() { return },
        }
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(DEBOUNCE) => break,
                signal = changed.recv() => if signal.is_none() { return },
            }
        }
        reloader.reload();
    }
}

struct Reloader {
    sources: Sources,
    book: Arc<RuleBook>,
    /// The last configuration that loaded, to tell which other settings changed.
    last: Option<Config>,
}

impl Reloader {
    fn reload(&mut self) {
        let config = match Config::load(&self.sources) {
            Ok(config) => config,
            Err(e) => {
                warn!("config file change ignored, keeping the current alert rules: {e}");
                return;
            }
        };
        if self
            .book
            .file_changed(config.thresholds, config.rule_specs.clone())
        {
            let count = self.book.rules().rules.len();
            info!("alert rules reloaded ({count} rules)");
        }
        if let Some(last) = &self.last {
            let hot = Config {
                rules: last.rules.clone(),
                rule_specs: last.rule_specs.clone(),
                thresholds: last.thresholds,
                ..config.clone()
            };
            if hot != *last {
                info!("settings other than alert rules changed; they take effect on restart");
            }
        }
        self.last = Some(config);
    }
}
