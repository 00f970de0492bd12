//! The processor workers of a role as one consumer group on `device-data`: the members split
//! the partitions, so each device's state lives in exactly one worker (on the bus, of this
//! process; on Kafka, of every `iiot process` in the group). Acknowledgements are routed to the
//! worker that holds the alert; rules reload into every worker.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::run::{Command, ProcessorIo, Recovery};
use super::{DeviceState, Processor, ProcessorConfig, ProcessorStats};
use crate::alerts::book::RuleBook;
use crate::alerts::{AckError, RuleSet};
use crate::backend::Backend;
use crate::config::Config;
use crate::sinks::Sink;

/// Capacity of the command queue into the processors (acknowledgements).
pub const COMMAND_QUEUE: usize = 256;

/// How long an acknowledgement waits for the workers (one busy delivering must not hold up the
/// others' answers forever).
const ACK_TIMEOUT: Duration = Duration::from_secs(5);

/// What a group is started with besides the configuration and the backend.
pub struct GroupInputs {
    /// Where every worker's verdicts go.
    pub sinks: Vec<Arc<dyn Sink>>,
    /// Counters shared by the workers (made beforehand when an HTTP endpoint shows them first).
    pub stats: Arc<ProcessorStats>,
    /// The command queue (made beforehand for the same reason).
    pub commands: (mpsc::Sender<Command>, mpsc::Receiver<Command>),
    /// Alerts left open by an earlier run, by device (from history on disk), handed to every
    /// worker: each puts back those of the devices it is given.
    pub recovered: super::RecoveredAlerts,
    /// The rules to follow (the API's and the file's); `None`: the config's, in memory.
    pub rules: Option<Arc<RuleBook>>,
}

impl GroupInputs {
    /// Fresh counters and command queue, verdicts to `sinks`.
    pub fn new(sinks: Vec<Arc<dyn Sink>>) -> GroupInputs {
        GroupInputs {
            sinks,
            stats: Arc::default(),
            commands: mpsc::channel(COMMAND_QUEUE),
            recovered: super::RecoveredAlerts::new(),
            rules: None,
        }
    }
}

/// The running workers.
pub struct ProcessorGroup {
    /// Where they read.
    pub backend: Backend,
    /// Their counters.
    pub stats: Arc<ProcessorStats>,
    /// Send new rules here (hot reload); every worker applies them.
    pub rules: watch::Sender<Arc<RuleSet>>,
    /// Requests to the processors (acknowledge); routed to the worker that owns the alert.
    pub commands: mpsc::Sender<Command>,
    /// Cancelled when a worker ends — normally only after [`ProcessorGroup::finish`]; any
    /// earlier means it failed, and producers should stop.
    pub processor_done: CancellationToken,
    input_topic: String,
    /// Stops the workers where the input never ends by itself (Kafka).
    stop: CancellationToken,
    workers: Vec<JoinHandle<Result<Processor, iiot_transport::TransportError>>>,
}

/// The workers of a finished [`ProcessorGroup`].
pub struct Processors {
    workers: Vec<Processor>,
    stats: Arc<ProcessorStats>,
}

impl Processors {
    /// The shared counters.
    pub fn stats(&self) -> &Arc<ProcessorStats> {
        &self.stats
    }

    /// State of one device, from whichever worker owned it.
    pub fn device(&self, device_id: &str) -> Option<&DeviceState> {
        self.workers.iter().find_map(|p| p.device(device_id))
    }

    /// The workers.
    pub fn workers(&self) -> &[Processor] {
        &self.workers
    }
}

/// How many workers `config` asks for: `PROCESSOR_WORKERS`, or one per CPU core.
pub fn worker_count(config: &Config) -> usize {
    match config.processor.workers {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    }
}

impl ProcessorGroup {
    /// Starts the workers on `backend`, their verdicts going to `inputs.sinks`. On the bus,
    /// subscribe other consumers (tests) before publishing.
    pub async fn start(
        config: &Config,
        backend: Backend,
        inputs: GroupInputs,
    ) -> anyhow::Result<ProcessorGroup> {
        let k = &config.kafka;
        let subscribers = backend
            .subscribe_group(&k.topic_device_data, &k.group_id, worker_count(config))
            .await
            .context("subscribing the processors")?;
        let rules_tx = match &inputs.rules {
            Some(book) => book.sender(),
            None => watch::channel(Arc::new(config.rules.clone())).0,
        };
        let rules_rx = rules_tx.subscribe();
        let rules = rules_rx.borrow().clone();
        let (processor_done, stop) = (CancellationToken::new(), CancellationToken::new());
        let (commands_tx, commands_rx) = inputs.commands;
        let mut workers = Vec::new();
        let mut worker_commands = Vec::new();
        for subscriber in subscribers {
            // On a backend with history, each worker reads back the alerts left open by the
            // earlier owners of the partitions it is given, on every assignment (the first one
            // included), from exactly those alert-state partitions: see
            // `run::Worker::restore_gained` and `crate::recovery`.
            let mut processor = Processor::new(
                ProcessorConfig::from_config(config),
                rules.clone(),
                inputs.stats.clone(),
            );
            if !inputs.recovered.is_empty() {
                processor.set_recovered(inputs.recovered.clone());
            }
            let recovery = backend.keeps_history().then(|| Recovery {
                backend: backend.clone(),
                topics: crate::recovery::StateTopics {
                    state: k.topic_alert_state.clone(),
                    alerts: k.topic_alerts.clone(),
                },
            });
            if recovery.is_some() {
                processor.keep_alert_states();
            }
            let (tx, rx) = mpsc::channel(COMMAND_QUEUE);
            worker_commands.push(tx);
            let io = ProcessorIo {
                subscriber,
                sinks: inputs.sinks.clone(),
                transport: Some(backend.clone()),
                recovery,
            };
            let (rules_rx, done, stop) = (rules_rx.clone(), processor_done.clone(), stop.clone());
            // On the bus a worker ends when its input topic is ended and drained (see
            // `finish`), so nothing queued is lost on shutdown; on Kafka, when stopped (what it
            // has not committed is read again by the group).
            workers.push(tokio::spawn(async move {
                // Cancels on every way out of the task, a panic included.
                let _done = done.drop_guard();
                let result = super::run::run(processor, io, rules_rx, rx, stop).await;
                if let Err(e) = &result {
                    tracing::error!(error = %e, "processor stopped");
                }
                result
            }));
        }
        tokio::spawn(route_commands(commands_rx, worker_commands));
        Ok(ProcessorGroup {
            backend,
            stats: inputs.stats,
            rules: rules_tx,
            commands: commands_tx,
            processor_done,
            input_topic: k.topic_device_data.clone(),
            stop,
            workers,
        })
    }

    /// A publisher onto the backend.
    pub fn publisher(&self) -> Arc<dyn iiot_transport::Publisher> {
        self.backend.publisher()
    }

    /// Waits until the workers have taken `expected` messages (valid, late or dead-lettered)
    /// or `timeout` passes; `true` if they did. On Kafka this is how a run that produced
    /// `expected` readings lets the processors catch up before [`ProcessorGroup::finish`].
    pub async fn wait_for(&self, expected: u64, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if self.stats.taken() >= expected {
                return true;
            }
            if tokio::time::Instant::now() >= deadline || self.processor_done.is_cancelled() {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stops the workers and returns them. Where the input can end (the bus) it is ended and
    /// every worker drains it first; elsewhere (Kafka) they stop between batches, and offsets of
    /// everything delivered are committed as the consumers close. The backend stays open (the
    /// role closes it once every part of it has stopped).
    pub async fn finish(self) -> anyhow::Result<Processors> {
        if !self.backend.end_topic(&self.input_topic) {
            self.stop.cancel();
        }
        let mut workers = Vec::with_capacity(self.workers.len());
        for handle in self.workers {
            workers.push(
                handle
                    .await
                    .context("processor task panicked")?
                    .context("processor stopped")?,
            );
        }
        Ok(Processors {
            workers,
            stats: self.stats,
        })
    }
}

/// Sends each acknowledgement to every worker at once (only the one holding the alert can say
/// yes) and replies with that answer, or the most telling refusal.
async fn route_commands(
    mut commands: mpsc::Receiver<Command>,
    workers: Vec<mpsc::Sender<Command>>,
) {
    while let Some(Command::Acknowledge {
        alert_id,
        by,
        reply,
    }) = commands.recv().await
    {
        let deadline = tokio::time::Instant::now() + ACK_TIMEOUT;
        let mut pending = Vec::with_capacity(workers.len());
        for worker in &workers {
            let (tx, rx) = oneshot::channel();
            let ask = Command::Acknowledge {
                alert_id: alert_id.clone(),
                by: by.clone(),
                reply: tx,
            };
            // A worker that has stopped, or cannot take the question in time, cannot be
            // holding the alert for us.
            if let Ok(Ok(())) = tokio::time::timeout_at(deadline, worker.send(ask)).await {
                pending.push(rx);
            }
        }
        let mut answer = Err(AckError::Unknown(alert_id));
        for rx in pending {
            match tokio::time::timeout_at(deadline, rx).await {
                Ok(Ok(Ok(alert))) => {
                    answer = Ok(alert);
                    break;
                }
                Ok(Ok(Err(e @ AckError::AlreadyAcknowledged(_)))) => answer = Err(e),
                _ => {}
            }
        }
        let _ = reply.send(answer);
    }
}
