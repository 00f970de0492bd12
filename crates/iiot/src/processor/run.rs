//! The processor loop: subscriber in, alerts and dead letters out, offsets committed only after
//! a message's outputs are delivered (at-least-once).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use iiot_model::Alert;
use iiot_transport::{Message, Publisher, Receipt, Subscriber, TransportError};
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
        rules,
        commands,
        stop,
    )
    .await;
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
    mut rules: watch::Receiver<Arc<RuleSet>>,
    mut commands: mpsc::Receiver<Command>,
    stop: CancellationToken,
) -> Result<(), TransportError> {
    let mut batch: Vec<Message> = Vec::with_capacity(BATCH);
    let mut alerts: Vec<Alert> = Vec::new();
    let mut receipts: Vec<Receipt> = Vec::new();
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
                settle(processor, &mut receipts).await?;
            }
            command = commands.recv(), if commands_open => match command {
                None => commands_open = false,
                Some(Command::Acknowledge { alert_id, reply }) => {
                    let result = processor.acknowledge(&alert_id, now_ms());
                    if let Ok(alert) = &result {
                        alerts.push(alert.clone());
                        publish_alerts(processor, out, &mut alerts, &mut receipts).await?;
                        settle(processor, &mut receipts).await?;
                    }
                    // The asker may have given up waiting; nothing to do then.
                    let _ = reply.send(result);
                }
            },
            _ = tick.tick() => {
                if !backlogged {
                    processor.tick(now_ms(), &mut alerts);
                    publish_alerts(processor, out, &mut alerts, &mut receipts).await?;
                    settle(processor, &mut receipts).await?;
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
                let revoked = subscriber.take_revoked();
                if !revoked.is_empty() {
                    let dropped = processor.drop_partitions(&revoked);
                    tracing::info!(?revoked, dropped, "partitions revoked by a rebalance; their devices' state dropped");
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

async fn process_batch(
    processor: &mut Processor,
    io: &Outputs,
    batch: &mut [Message],
    alerts: &mut Vec<Alert>,
    receipts: &mut Vec<Receipt>,
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
            let receipt = io
                .publisher
                .publish(&io.dlq_topic, &message.key, Bytes::from(letter))
                .await;
            receipts.push(counted(processor, receipt)?);
        }
        if !alerts.is_empty() {
            publish_alerts(processor, io, alerts, receipts).await?;
        }
    }
    settle(processor, receipts).await
}

async fn publish_alerts(
    processor: &Processor,
    io: &Outputs,
    alerts: &mut Vec<Alert>,
    receipts: &mut Vec<Receipt>,
) -> Result<(), TransportError> {
    for alert in alerts.drain(..) {
        tracing::info!(
            alert_id = %alert.alert_id, device_id = %alert.device_id, alert_type = %alert.alert_type,
            severity = alert.severity.as_str(), status = alert.status.as_str(), "{}", alert.message
        );
        // Serializing a plain struct of strings and numbers cannot fail.
        let body = serde_json::to_vec(&alert).unwrap_or_default();
        let receipt = io
            .publisher
            .publish(
                &io.alerts_topic,
                alert.device_id.as_bytes(),
                Bytes::from(body),
            )
            .await;
        receipts.push(counted(processor, receipt)?);
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

/// Waits for every pending delivery; a failed one stops the loop before its input is committed,
/// so the message is read again after a restart.
async fn settle(processor: &Processor, receipts: &mut Vec<Receipt>) -> Result<(), TransportError> {
    for receipt in receipts.drain(..) {
        counted(
            processor,
            receipt.delivered().await.map(|()| Receipt::Delivered),
        )?;
    }
    Ok(())
}
