//! Sources: where readings come from. A [`Source`] publishes raw readings (the SPEC §2 JSON,
//! keyed by device id) onto the input topic; the processors judge them from there.
//!
//! - [`simulator`]: the simulated fleet ([`crate::simulator`]).
//! - [`mqtt`]: real devices publishing to an MQTT broker (`MQTT_URL`).
//! - [`replica`]: the serve side's input on Kafka — every reading and alert from the topics,
//!   judged against the broker's timestamps, into the live sink.
//!
//! Adding a source is one module here and one line where the role is
//! composed (`roles/run.rs`).

pub mod mqtt;
pub mod replica;
pub mod simulator;

use std::sync::Arc;

use async_trait::async_trait;
use iiot_transport::{Publisher, TransportError};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// What a source did by the time it ended.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SourceReport {
    /// Messages published.
    pub sent: u64,
    /// Messages that could not be published or delivered.
    pub errors: u64,
}

/// Publishes readings onto the input topic.
#[async_trait]
pub trait Source: Send {
    /// Short name, for logs.
    fn name(&self) -> &'static str;

    /// Publishes to `topic` through `out` until the source is exhausted or `stop` is
    /// cancelled; waits for what it published to be delivered before returning.
    async fn run(
        self: Box<Self>,
        out: Arc<dyn Publisher>,
        topic: String,
        stop: CancellationToken,
    ) -> Result<SourceReport, TransportError>;
}

/// Sources running side by side onto one input topic, stopped by one token.
pub struct Running {
    stop: CancellationToken,
    tasks: Vec<(
        &'static str,
        JoinHandle<Result<SourceReport, TransportError>>,
    )>,
}

/// Starts every source of `sources`, publishing through `out` onto `topic`, until each is
/// exhausted or `stop` is cancelled.
pub fn start(
    sources: Vec<Box<dyn Source>>,
    out: Arc<dyn Publisher>,
    topic: &str,
    stop: CancellationToken,
) -> Running {
    let tasks = sources
        .into_iter()
        .map(|source| {
            let name = source.name();
            tracing::debug!(source = name, "source starting");
            let task = tokio::spawn(source.run(out.clone(), topic.to_string(), stop.clone()));
            (name, task)
        })
        .collect();
    Running { stop, tasks }
}

impl Running {
    /// Cancelled once the sources are asked to stop.
    pub fn stopping(&self) -> CancellationToken {
        self.stop.clone()
    }

    /// Waits until every source has ended (with no source at all: until the stop) and returns
    /// what they did together; a source that failed is logged and counts for nothing.
    pub async fn wait(self) -> SourceReport {
        if self.tasks.is_empty() {
            self.stop.cancelled().await;
        }
        let mut total = SourceReport::default();
        for (name, task) in self.tasks {
            match task.await {
                Ok(Ok(report)) => {
                    total.sent += report.sent;
                    total.errors += report.errors;
                }
                Ok(Err(e)) => tracing::warn!(source = name, error = %e, "source stopped early"),
                Err(e) => tracing::warn!(source = name, error = %e, "source task failed"),
            }
        }
        total
    }
}
