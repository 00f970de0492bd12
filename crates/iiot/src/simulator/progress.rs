//! Live progress of a run: a spinner line on a terminal, a log line every 10 s otherwise.
//!
//! It runs as its own task reading the [`SimStats`] atomics, so the publishing loop never pays
//! for drawing or formatting.

use std::io::IsTerminal as _;
use std::sync::Arc;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use super::runner::{SimSnapshot, SimStats};

/// How often the terminal line is redrawn.
const BAR_EVERY: Duration = Duration::from_millis(250);
/// How often a progress line is logged when not on a terminal.
const LOG_EVERY: Duration = Duration::from_secs(10);

/// The running progress reporter of one run.
pub(super) struct Progress {
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl Progress {
    /// Starts reporting: a live line if `want_bar` and stderr is a terminal, log lines otherwise.
    pub(super) fn start(stats: Arc<SimStats>, want_bar: bool) -> Progress {
        let stop = CancellationToken::new();
        let bar = want_bar && std::io::stderr().is_terminal();
        let task = tokio::spawn(report(stats, bar, stop.clone()));
        Progress { stop, task }
    }

    /// Stops reporting and clears the live line.
    pub(super) async fn finish(self) {
        self.stop.cancel();
        if self.task.await.is_err() {
            tracing::debug!("simulator progress task failed");
        }
    }
}

async fn report(stats: Arc<SimStats>, bar: bool, stop: CancellationToken) {
    let every = if bar { BAR_EVERY } else { LOG_EVERY };
    let bar = bar.then(spinner);
    let mut ticks = tokio::time::interval_at(Instant::now() + every, every);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut last = (Instant::now(), stats.snapshot());
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            () = stop.cancelled() => break,
        }
        let now = (Instant::now(), stats.snapshot());
        let secs = now.0.duration_since(last.0).as_secs_f64();
        let rate = if secs > 0.0 {
            now.1.sent.saturating_sub(last.1.sent) as f64 / secs
        } else {
            0.0
        };
        match &bar {
            Some(bar) => bar.set_message(line(rate, &now.1)),
            None => tracing::info!(
                rate = format_args!("{rate:.0}"),
                sent = now.1.sent,
                errors = now.1.errors,
                malformed = now.1.malformed,
                silent = now.1.silent,
                "simulator progress"
            ),
        }
        last = now;
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
}

fn spinner() -> ProgressBar {
    let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr_with_hz(4));
    // The template is a constant known to be valid; fall back to the default style regardless.
    let style = ProgressStyle::with_template("{spinner} [{elapsed_precise}] {msg}")
        .unwrap_or_else(|_| ProgressStyle::default_spinner());
    bar.set_style(style);
    bar.enable_steady_tick(BAR_EVERY);
    bar.set_message("starting…");
    bar
}

fn line(rate: f64, s: &SimSnapshot) -> String {
    format!(
        "{rate:>9.0} msg/s  sent {}  errors {}  malformed {}  silent {}",
        s.sent, s.errors, s.malformed, s.silent
    )
}
