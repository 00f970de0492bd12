//! The simulated fleet as a [`Source`].

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use async_trait::async_trait;
use iiot_transport::{Publisher, TransportError};
use tokio_util::sync::CancellationToken;

use super::{Source, SourceReport};
use crate::simulator::{self, Fleet, Pace, RunOptions, SimStats, SimulatorConfig};

/// The fleet of a [`SimulatorConfig`], published at `pace` for `duration` (`None`: until
/// stopped).
pub struct SimulatorSource {
    /// What the fleet is made of.
    pub config: SimulatorConfig,
    /// Real time or full speed.
    pub pace: Pace,
    /// How long to publish.
    pub duration: Option<Duration>,
    /// A live progress line on a terminal.
    pub progress: bool,
    /// Counters, shared with whoever reports them (`/metrics`, the status line).
    pub stats: Arc<SimStats>,
}

#[async_trait]
impl Source for SimulatorSource {
    fn name(&self) -> &'static str {
        "simulator"
    }

    async fn run(
        self: Box<Self>,
        out: Arc<dyn Publisher>,
        topic: String,
        stop: CancellationToken,
    ) -> Result<SourceReport, TransportError> {
        let options = RunOptions {
            topic,
            pace: self.pace,
            duration: self.duration,
            progress: self.progress,
        };
        let stats = self.stats.clone();
        simulator::run(Fleet::new(&self.config), out, options, stop, stats.clone()).await?;
        Ok(SourceReport {
            sent: stats.sent.load(Ordering::Relaxed),
            errors: stats.errors.load(Ordering::Relaxed),
        })
    }
}
