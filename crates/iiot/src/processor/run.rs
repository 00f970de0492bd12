//! The processor loop: subscriber in, alerts and dead letters out, offsets committed only after
//! a message's outputs are delivered (at-least-once).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use iiot_model::Alert;
use iiot_transport::{Message, Publisher, Receipt, Subscriber, Transport, TransportError};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

use super::dead_letter::{self, Origin};
use super::{Outcome, Processor};
use crate::alerts::{AckError, RuleSet};
use crate::now_ms;

/// Largest batch taken from the subscriber at once.
pub const BATCH: usize = 1024;

/// Where the processor reads and writes.
pub struct ProcessorIo {
    /// The `device-data` subscription.
    pub subscriber: Box<dyn Subscriber>,
    /// Publisher for alerts and dead letters.
    pub publisher: Arc<dyn Publisher>,
    /// Topic of alerts.
    pub alerts_topic: String,
    /// Topic of dead letters.
    pub dlq_topic: String,
    /// Asked before offline checks: while it cannot reach its broker, silence says nothing
    /// about the devices (`None`: always checked).
    pub transport: Option<Arc<dyn Transport>>,
}

/// The output half of [`ProcessorIo`] (shared across awaits, so it must be `Sync`).
struct Outputs {
    publisher: Arc<dyn Publisher>,
    alerts_topic: String,
    dlq_topic: String,
}

/// A request to the running processor from elsewhere in the process (the HTTP API).
#[derive(Debug)]
pub enum Command {
    /// Acknowledge an alert; the reply carries the published alert or why not.
    Acknowledge {
        /// The alert.
        alert_id: String,
        /// Where the answer goes.
        reply: oneshot::Sender<Result<Alert, AckError>>,
    },
}

/// Runs until the subscription ends (its topic was closed and drained) or `stop` is cancelled.
/// Rule sets sent on `rules` are applied between batches. Returns the processor for inspection.
pub async fn run(
    mut processor: Processor,
    io: ProcessorIo,
    rules: watch::Receiver<Arc<RuleSet>>,
    commands: mpsc::Receiver<Command>,
    stop: CancellationToken,
) -> Result<Processor, TransportError> {
    let ProcessorIo {
        mut subscriber,
        publisher,
        alerts_topic,
        dlq_topic,
        transport,
    } = io;
    let out = Outputs {
        publisher,
        alerts_topic,
        dlq_topic,
    };
    let result = serve(
        &mut processor,
        subscriber.as_mut(),
        &out,
        transport.as_deref(),
        rules,
        commands,
        stop,
    )
    .await;
    // Closing a Kafka consumer commits its offsets and leaves the group, which can block for
    // seconds: not on a runtime thread.
    let _ = tokio::task::spawn_blocking(move || drop(subscriber)).await;
    // Whatever ended the loop, what was counted so far reaches the shared stats.
    processor.flush_stats();
    processor.flush_latency();
    result?;
    out.publisher.flush().await?;
    Ok(processor)
}

async fn serve(
    processor: &mut Processor,
    subscriber: &mut dyn Subscriber,
    out: &Outputs,
    transport: Option<&dyn Transport>,
    mut rules: watch::Receiver<Arc<RuleSet>>,
    mut commands: mpsc::Receiver<Command>,
    stop: CancellationToken,
) -> Result<(), TransportError> {
    let mut batch: Vec<Message> = Vec::with_capacity(BATCH);
    let mut alerts: Vec<Alert> = Vec::new();
    let mut receipts: Vec<Pending> = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let (mut rules_open, mut commands_open) = (true, true);
    // A full batch means readings are queued: "no data for 3 intervals" would then be about
    // our backlog, not the devices, so offline checks wait until we have caught up.
    let mut backlogged = false;
    loop {
        tokio::select! {
            biased;
            _ = stop.cancelled() => return Ok(()),
            changed = rules.changed(), if rules_open => {
                if changed.is_err() {
                    rules_open = false;
                    continue;
                }
                let new = rules.borrow_and_update().clone();
                processor.set_rules(new, now_ms(), &mut alerts);
                tracing::info!(rules = processor.rules().rules.len(), "processor uses reloaded alert rules");
                publish_alerts(processor, out, &mut alerts, &mut receipts).await?;
                settle(processor, out, &mut receipts).await?;
            }
            command = commands.recv(), if commands_open => match command {
                None => commands_open = false,
                Some(Command::Acknowledge { alert_id, reply }) => {
                    let result = processor.acknowledge(&alert_id, now_ms());
                    if let Ok(alert) = &result {
                        alerts.push(alert.clone());
                        publish_alerts(processor, out, &mut alerts, &mut receipts).await?;
                        settle(processor, out, &mut receipts).await?;
                    }
                    // The asker may have given up waiting; nothing to do then.
                    let _ = reply.send(result);
                }
            },
            _ = tick.tick() => {
                // A rebalance can take every partition away: then no message comes to report
                // it, and the devices now owned elsewhere must not be declared offline here.
                drop_revoked(processor, subscriber);
                let reachable = match transport {
                    Some(t) => t.is_ready().await,
                    None => true,
                };
                if !backlogged && reachable {
                    processor.tick(now_ms(), &mut alerts);
                    publish_alerts(processor, out, &mut alerts, &mut receipts).await?;
                    settle(processor, out, &mut receipts).await?;
                }
                // Merging the latency histogram scans all its buckets: once a second, not
                // once a batch.
                processor.flush_latency();
            }
            received = subscriber.recv_batch(&mut batch, BATCH) => {
                let received = received?;
                if received == 0 {
                    return Ok(());
                }
                backlogged = received == BATCH;
                let revoked = drop_revoked(processor, subscriber);
                if !revoked.is_empty() {
                    // Fetched before the rebalance: their new owner reads them again from the
                    // last committed offset, so they are neither processed nor committed here.
                    batch.retain(|m| !revoked.contains(&m.partition));
                }
                process_batch(processor, out, &mut batch, &mut alerts, &mut receipts).await?;
                processor.flush_stats();
                // At-least-once: the outputs are delivered (settled above); now the offsets.
                subscriber.commit_batch(&batch)?;
                batch.clear();
            }
        }
    }
}

/// Drops the state of the devices on partitions revoked since the last call; returns those
/// partitions.
fn drop_revoked(processor: &mut Processor, subscriber: &mut dyn Subscriber) -> Vec<i32> {
    let revoked = subscriber.take_revoked();
    if !revoked.is_empty() {
        let dropped = processor.drop_partitions(&revoked);
        tracing::info!(
            ?revoked,
            dropped,
            "partitions revoked by a rebalance; their devices' state dropped"
        );
    }
    revoked
}

async fn process_batch(
    processor: &mut Processor,
    io: &Outputs,
    batch: &mut [Message],
    alerts: &mut Vec<Alert>,
    receipts: &mut Vec<Pending>,
) -> Result<(), TransportError> {
    let now = now_ms();
    for message in batch.iter() {
        let outcome = processor.handle_from(Some(message.partition), &message.payload, now, alerts);
        if let Outcome::DeadLetter(invalid) = outcome {
            let origin = Origin {
                topic: &message.topic,
                partition: message.partition,
                offset: message.offset,
                key: &message.key,
            };
            let letter = dead_letter::encode(&invalid, origin, &message.payload, now);
            tracing::debug!(reason = %invalid.reason, detail = %invalid.detail, "dead letter");
            let output = Output {
                topic: io.dlq_topic.clone(),
                key: message.key.clone(),
                payload: Bytes::from(letter),
            };
            receipts.push(send(processor, io, output).await?);
        }
        if !alerts.is_empty() {
            publish_alerts(processor, io, alerts, receipts).await?;
        }
    }
    settle(processor, io, receipts).await
}

async fn publish_alerts(
    processor: &Processor,
    io: &Outputs,
    alerts: &mut Vec<Alert>,
    receipts: &mut Vec<Pending>,
) -> Result<(), TransportError> {
    for alert in alerts.drain(..) {
        tracing::info!(
            alert_id = %alert.alert_id, device_id = %alert.device_id, alert_type = %alert.alert_type,
            severity = alert.severity.as_str(), status = alert.status.as_str(), "{}", alert.message
        );
        // Serializing a plain struct of strings and numbers cannot fail.
        let body = serde_json::to_vec(&alert).unwrap_or_default();
        let output = Output {
            topic: io.alerts_topic.clone(),
            key: Bytes::copy_from_slice(alert.device_id.as_bytes()),
            payload: Bytes::from(body),
        };
        receipts.push(send(processor, io, output).await?);
    }
    Ok(())
}

fn counted(
    processor: &Processor,
    r: Result<Receipt, TransportError>,
) -> Result<Receipt, TransportError> {
    r.inspect_err(|_| {
        processor
            .stats()
            .publish_errors
            .fetch_add(1, Ordering::Relaxed);
    })
}

/// One output message, kept until the broker has it so that a failed delivery can be sent again.
#[derive(Clone)]
struct Output {
    topic: String,
    key: Bytes,
    payload: Bytes,
}

/// An output on its way: the message and its receipt.
struct Pending {
    output: Output,
    receipt: Receipt,
}

/// Longest pause between two attempts to deliver an output.
const RETRY_MAX: Duration = Duration::from_secs(5);

async fn send(
    processor: &Processor,
    io: &Outputs,
    output: Output,
) -> Result<Pending, TransportError> {
    let receipt = io
        .publisher
        .publish(&output.topic, &output.key, output.payload.clone())
        .await;
    Ok(Pending {
        receipt: counted(processor, receipt)?,
        output,
    })
}

/// Waits for every pending delivery. A failed delivery (the broker unreachable past the delivery
/// timeout) is counted, logged and sent again, with a growing pause, until it goes through: the
/// input is committed only afterwards, and a broker outage stalls the processor instead of
/// stopping it. Other errors (the transport closed) end the loop before the commit, so the input
/// is read again after a restart.
async fn settle(
    processor: &Processor,
    io: &Outputs,
    receipts: &mut Vec<Pending>,
) -> Result<(), TransportError> {
    for Pending { output, receipt } in receipts.drain(..) {
        let mut receipt = receipt;
        let mut pause = Duration::from_millis(250);
        loop {
            match receipt.delivered().await {
                Ok(()) => break,
                Err(TransportError::Delivery(reason)) => {
                    processor
                        .stats()
                        .publish_errors
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(
                        topic = %output.topic,
                        "delivery failed ({reason}); sending it again in {pause:?}"
                    );
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(RETRY_MAX);
                    receipt = send(processor, io, output.clone()).await?.receipt;
                }
                Err(e) => {
                    processor
                        .stats()
                        .publish_errors
                        .fetch_add(1, Ordering::Relaxed);
                    return Err(e);
                }
            }
        }
    }
    Ok(())
}
