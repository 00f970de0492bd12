//! Sources: where readings come from. A [`Source`] publishes raw readings (the SPEC §2 JSON,
//! keyed by device id) onto the input topic; the processors judge them from there.
//!
//! - [`simulator`]: the simulated fleet ([`crate::simulator`]).
//! - [`replica`]: the serve side's input on Kafka — every reading and alert from the topics,
//!   judged against the broker's timestamps, into the live sink.
//!
//! Adding a source (MQTT, HTTP ingest) is one module here and one line where the role is
//! composed (`roles/run.rs`).

pub mod replica;
pub mod simulator;

use std::sync::Arc;

use async_trait::async_trait;
use iiot_transport::{Publisher, TransportError};
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
