//! The topic sink: alert changes onto `alerts` (keyed by device id), rejected messages onto
//! `device-data-dlq`, and — on a backend with an alert-state topic — each changed device's open
//! alerts onto `alert-state`, into the partition with the number of the input partition its
//! readings came from (co-partitioned whatever the producers' partitioner), on whatever backend
//! the role runs on. [`TopicSink::take`] returns only
//! when every output of the batch is delivered, so the processor commits its input after its
//! outputs (at-least-once).
//!
//! A failed delivery (the broker unreachable past the delivery timeout) is counted, logged and
//! sent again with a growing pause: an outage stalls the processors instead of stopping them.
//! An output the broker refuses for good (too large, invalid) is counted, logged at most once
//! per [`REFUSED_LOG_EVERY`] and skipped: one bad record never stops or stalls a processor.
//! Every wait — a full producer queue, a pending receipt, the pause — gives way to the role's
//! stop token, so SIGTERM during an outage ends the role promptly without committing what was
//! not delivered.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use iiot_transport::{Ownership, Publisher, Receipt, Transport, TransportError};
use tokio_util::sync::CancellationToken;

use super::{Sink, SinkError, Verdicts};
use crate::processor::ProcessorStats;
use crate::processor::dead_letter::{self, Origin};

/// Longest pause between two attempts to deliver an output.
const RETRY_MAX: Duration = Duration::from_secs(5);
/// First pause after a failed delivery.
const RETRY_FIRST: Duration = Duration::from_millis(250);
/// Refused outputs are logged at most this often (the rest are counted).
const REFUSED_LOG_EVERY: Duration = Duration::from_secs(30);

/// The topics the processors write to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputTopics {
    /// Alert status changes.
    pub alerts: String,
    /// Dead letters.
    pub dead_letters: String,
    /// Each device's open alerts (written only once [`TopicSink::with_alert_state`] is set).
    pub alert_state: String,
}

impl OutputTopics {
    /// The topics named in `config`.
    pub fn from_config(config: &crate::config::Config) -> Self {
        OutputTopics {
            alerts: config.kafka.topic_alerts.clone(),
            dead_letters: config.kafka.topic_dlq.clone(),
            alert_state: config.kafka.topic_alert_state.clone(),
        }
    }
}

/// Alerts and dead letters onto the backend.
pub struct TopicSink {
    publisher: Arc<dyn Publisher>,
    topics: OutputTopics,
    /// `publish_errors` counts every failed attempt.
    stats: Arc<ProcessorStats>,
    /// When a refused output was last logged (Unix ms; 0: never).
    refused_logged_ms: AtomicI64,
    /// Where alert-state records go to a chosen partition (`None`: not written).
    state: Option<Arc<dyn Transport>>,
}

impl TopicSink {
    /// A sink publishing through `publisher` to `topics`, counting failures into `stats`.
    pub fn new(
        publisher: Arc<dyn Publisher>,
        topics: OutputTopics,
        stats: Arc<ProcessorStats>,
    ) -> TopicSink {
        TopicSink {
            publisher,
            topics,
            stats,
            refused_logged_ms: AtomicI64::new(0),
            state: None,
        }
    }

    /// Also writes the alert-state records of the verdicts, through `transport` (which can
    /// publish to a chosen partition).
    pub fn with_alert_state(mut self, transport: Arc<dyn Transport>) -> TopicSink {
        self.state = Some(transport);
        self
    }

    /// Counts and (rate-limited) logs an output the broker refused for good; it is skipped.
    fn refused(&self, output: &Output, reason: &str) {
        self.count_failure();
        let now = crate::now_ms();
        let last = self.refused_logged_ms.load(Ordering::Relaxed);
        if now - last >= REFUSED_LOG_EVERY.as_millis() as i64
            && self
                .refused_logged_ms
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::warn!(
                topic = %output.topic,
                key_bytes = output.key.len(),
                payload_bytes = output.payload.len(),
                "output refused by the broker ({reason}); skipped (counted in \
                 iot_publish_errors_total; logged at most every {REFUSED_LOG_EVERY:?})"
            );
        }
    }

    fn outputs(&self, verdicts: &Verdicts<'_>) -> Vec<Output> {
        let mut out = Vec::with_capacity(verdicts.rejected.len() + verdicts.alerts.len());
        for r in &verdicts.rejected {
            let m = r.message;
            let origin = Origin {
                topic: &m.topic,
                partition: m.partition,
                offset: m.offset,
                key: &m.key,
            };
            let letter = dead_letter::encode(&r.invalid, origin, &m.payload, verdicts.now_ms);
            tracing::debug!(reason = %r.invalid.reason, detail = %r.invalid.detail, "dead letter");
            out.push(Output {
                topic: self.topics.dead_letters.clone(),
                partition: None,
                key: m.key.slice(..dead_letter::dead_letter_key(&m.key).len()),
                payload: Bytes::from(letter),
                fence: None,
            });
        }
        for change in &verdicts.alerts {
            let a = &change.alert;
            tracing::info!(
                alert_id = %a.alert_id, device_id = %a.device_id, alert_type = %a.alert_type,
                severity = a.severity.as_str(), status = a.status.as_str(), "{}", a.message
            );
            out.push(Output {
                topic: self.topics.alerts.clone(),
                partition: None,
                key: Bytes::copy_from_slice(a.device_id.as_bytes()),
                payload: change.json.clone(),
                fence: None,
            });
        }
        if self.state.is_some() {
            for state in &verdicts.states {
                let fence = match (&verdicts.ownership, state.epoch) {
                    (Some(ownership), Some(epoch)) => Some(Fence {
                        ownership: ownership.clone(),
                        partition: state.partition,
                        epoch,
                    }),
                    _ => None,
                };
                out.push(Output {
                    topic: self.topics.alert_state.clone(),
                    partition: Some(state.partition),
                    key: Bytes::copy_from_slice(state.device_id.as_bytes()),
                    payload: crate::recovery::record::encode(&state.open, state.writer.as_deref()),
                    fence,
                });
            }
        }
        out
    }

    fn count_failure(&self) {
        self.stats.publish_errors.fetch_add(1, Ordering::Relaxed);
    }

    /// Publishes one output, waiting (until `stop`) while the backend's queue is full. `None`:
    /// refused for good, counted and skipped.
    async fn send(
        &self,
        output: &Output,
        stop: &CancellationToken,
    ) -> Result<Option<Receipt>, SinkError> {
        if let Some(fence) = &output.fence
            && !fence.holds()
        {
            // Taken away (or lost) since the state was built: the partition's new owner may
            // have read it back already and writes it from now on; this member's view would
            // overwrite a newer one. The input it came from is not committed here either, so
            // the new owner makes the same changes again.
            tracing::info!(
                topic = %output.topic,
                partition = fence.partition,
                "alert-state record not written: the partition is no longer on the assignment \
                 it was built under"
            );
            return Ok(None);
        }
        let payload = output.payload.clone();
        let publish = async {
            match (output.partition, &self.state) {
                (Some(p), Some(t)) => t.publish_to(&output.topic, p, &output.key, payload).await,
                _ => {
                    self.publisher
                        .publish(&output.topic, &output.key, payload)
                        .await
                }
            }
        };
        let published = tokio::select! {
            biased;
            _ = stop.cancelled() => return Err(SinkError::Stopped),
            r = publish => r,
        };
        match published {
            Ok(receipt) => Ok(Some(receipt)),
            Err(TransportError::Refused(reason)) => {
                self.refused(output, &reason);
                Ok(None)
            }
            Err(e) => {
                self.count_failure();
                Err(SinkError::Transport(e))
            }
        }
    }

    /// Waits for `receipt`; a failed delivery is sent again, with a growing pause, until it
    /// goes through or `stop`. Other errors (the transport closed) end the wait.
    async fn settle(
        &self,
        output: &Output,
        mut receipt: Receipt,
        stop: &CancellationToken,
    ) -> Result<(), SinkError> {
        let mut pause = RETRY_FIRST;
        loop {
            let delivered = tokio::select! {
                biased;
                _ = stop.cancelled() => return Err(SinkError::Stopped),
                r = receipt.delivered() => r,
            };
            match delivered {
                Ok(()) => return Ok(()),
                Err(TransportError::Refused(reason)) => {
                    self.refused(output, &reason);
                    return Ok(());
                }
                Err(TransportError::Delivery(reason)) => {
                    self.count_failure();
                    tracing::warn!(
                        topic = %output.topic,
                        "delivery failed ({reason}); sending it again in {pause:?}"
                    );
                    tokio::select! {
                        biased;
                        _ = stop.cancelled() => return Err(SinkError::Stopped),
                        _ = tokio::time::sleep(pause) => {}
                    }
                    pause = (pause * 2).min(RETRY_MAX);
                    match self.send(output, stop).await? {
                        Some(again) => receipt = again,
                        None => return Ok(()),
                    }
                }
                Err(e) => {
                    self.count_failure();
                    return Err(SinkError::Transport(e));
                }
            }
        }
    }
}

/// One output message, kept until the broker has it so that a failed delivery can be sent
/// again.
struct Output {
    topic: String,
    /// A chosen partition (alert-state records), else the key's.
    partition: Option<i32>,
    key: Bytes,
    payload: Bytes,
    /// An alert-state record is sent only while this holds.
    fence: Option<Fence>,
}

/// The assignment an alert-state record's partition must still be on when it is sent.
struct Fence {
    ownership: Arc<dyn Ownership>,
    partition: i32,
    epoch: u64,
}

impl Fence {
    fn holds(&self) -> bool {
        self.ownership.epoch(self.partition) == Some(self.epoch)
    }
}

#[async_trait]
impl Sink for TopicSink {
    fn name(&self) -> &'static str {
        "topics"
    }

    async fn take(
        &self,
        verdicts: &Verdicts<'_>,
        stop: &CancellationToken,
    ) -> Result<(), SinkError> {
        if verdicts.rejected.is_empty() && verdicts.alerts.is_empty() && verdicts.states.is_empty()
        {
            return Ok(());
        }
        let outputs = self.outputs(verdicts);
        // Everything is enqueued first (the producer batches it), then awaited.
        let mut pending = Vec::with_capacity(outputs.len());
        for output in &outputs {
            pending.push(self.send(output, stop).await?);
        }
        for (output, receipt) in outputs.iter().zip(pending) {
            if let Some(receipt) = receipt {
                self.settle(output, receipt, stop).await?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicU64;

    use iiot_transport::{Bus, BusConfig, Subscriber};

    use super::*;
    use crate::processor::AlertState;

    /// Which assignment the partitions are on: `0` stands for none (revoked or lost).
    #[derive(Debug, Default)]
    struct Assignments(AtomicU64);

    impl Ownership for Assignments {
        fn epoch(&self, _: i32) -> Option<u64> {
            Some(self.0.load(Ordering::Relaxed)).filter(|&e| e > 0)
        }
    }

    async fn written(sub: &mut dyn Subscriber) -> usize {
        let mut got = Vec::new();
        let _ =
            tokio::time::timeout(Duration::from_millis(200), sub.recv_batch(&mut got, 16)).await;
        got.len()
    }

    /// Issue 12, hole 1: a member whose partition was taken away while its batch was in
    /// flight (its poll interval exceeded, its session lost, or the partition revoked and
    /// given back after another member owned it) must not write that partition's state: the
    /// new owner may have read the partition back already, and the old view written after it
    /// would be the latest record of the device.
    #[tokio::test]
    async fn a_state_record_is_written_only_while_its_partition_is_on_the_assignment_it_was_built_under()
     {
        let bus = Bus::new(BusConfig {
            default_partitions: 4,
            ..BusConfig::default()
        });
        let topics = OutputTopics {
            alerts: "alerts".into(),
            dead_letters: "dlq".into(),
            alert_state: "alert-state".into(),
        };
        let mut state = bus
            .subscribe("alert-state", "test")
            .await
            .expect("subscribe");
        let sink = TopicSink::new(bus.publisher(), topics, Arc::new(ProcessorStats::default()))
            .with_alert_state(Arc::new(bus.clone()));
        let assignments = Arc::new(Assignments(AtomicU64::new(1)));
        let verdicts = |epoch: u64| {
            let mut v = Verdicts::empty(0);
            v.states.push(AlertState {
                device_id: "device_001".into(),
                partition: 2,
                open: Vec::new(),
                epoch: Some(epoch),
                writer: None,
            });
            v.ownership = Some(assignments.clone() as Arc<dyn Ownership>);
            v
        };
        let stop = CancellationToken::new();

        sink.take(&verdicts(1), &stop).await.expect("taken");
        assert_eq!(written(state.as_mut()).await, 1, "still on assignment 1");

        // Revoked and given back (another member may have owned it in between).
        assignments.0.store(2, Ordering::Relaxed);
        sink.take(&verdicts(1), &stop).await.expect("taken");
        assert_eq!(
            written(state.as_mut()).await,
            0,
            "built under assignment 1, now on 2"
        );
        sink.take(&verdicts(2), &stop).await.expect("taken");
        assert_eq!(
            written(state.as_mut()).await,
            1,
            "built under the current one"
        );

        // The assignment is lost (not held at all).
        assignments.0.store(0, Ordering::Relaxed);
        sink.take(&verdicts(2), &stop).await.expect("taken");
        assert_eq!(written(state.as_mut()).await, 0, "not held");
    }
}
