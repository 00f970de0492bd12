//! Acknowledgements across processes on Kafka: a `serve` instance has no processor of its own,
//! so `POST /api/alerts/{id}/ack` becomes a request on the commands topic
//! (`KAFKA_TOPIC_COMMANDS`); every processor process reads that topic, and the one that owns
//! the alert acknowledges it and publishes the acknowledged alert on `alerts` as usual. The
//! serve instance answers the HTTP request when that alert reaches its store.
//!
//! - [`relay`] (serve side): answers what the store already knows (unknown, resolved,
//!   acknowledged) at once; otherwise publishes the request and waits (bounded) for the result.
//! - [`listen`] (processor side): feeds requests from the topic into the processors' command
//!   queue.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use iiot_model::AlertStatus;
use iiot_transport::{Message, Publisher, Subscriber};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::alerts::AckError;
use crate::processor::run::Command;
use crate::sinks::live::SharedStore;

/// How long the relay waits for the acknowledged alert to come back (the HTTP handler gives up
/// after 5 s).
const WAIT: Duration = Duration::from_millis(4_500);
/// How often the relay looks for it in the store.
const POLL: Duration = Duration::from_millis(50);

/// One request on the commands topic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Request {
    /// Acknowledge an open alert.
    Acknowledge {
        /// The alert.
        alert_id: String,
        /// When it was asked for (Unix ms).
        requested_at: i64,
        /// Who asked (absent from older serves, and for anonymous requests).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        by: Option<String>,
    },
}

/// Serve side: answers the HTTP API's commands from `commands` until it closes, publishing what
/// needs a processor to `topic`.
pub async fn relay(
    mut commands: mpsc::Receiver<Command>,
    store: SharedStore,
    publisher: Arc<dyn Publisher>,
    topic: String,
) {
    while let Some(command) = commands.recv().await {
        let Command::Acknowledge {
            alert_id,
            by,
            reply,
        } = command;
        let known = read(&store).alert(&alert_id);
        match known.map(|a| a.status) {
            None | Some(AlertStatus::Resolved) => {
                let _ = reply.send(Err(AckError::Unknown(alert_id)));
            }
            Some(AlertStatus::Acknowledged) => {
                let _ = reply.send(Err(AckError::AlreadyAcknowledged(alert_id)));
            }
            Some(AlertStatus::Active) => {
                let request = Request::Acknowledge {
                    alert_id: alert_id.clone(),
                    requested_at: crate::now_ms(),
                    by,
                };
                // Serializing a plain enum of strings and numbers cannot fail.
                let body = serde_json::to_vec(&request).unwrap_or_default();
                match publisher
                    .publish(&topic, alert_id.as_bytes(), Bytes::from(body))
                    .await
                {
                    Ok(receipt) => {
                        tokio::spawn(await_result(store.clone(), receipt, alert_id, reply));
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "could not publish an acknowledgement request");
                        // Dropping `reply` answers "processor not available".
                    }
                }
            }
        }
    }
}

/// Waits until the request is delivered and the acknowledged alert is in the store.
async fn await_result(
    store: SharedStore,
    receipt: iiot_transport::Receipt,
    alert_id: String,
    reply: oneshot::Sender<Result<iiot_model::Alert, AckError>>,
) {
    let deadline = tokio::time::Instant::now() + WAIT;
    if tokio::time::timeout_at(deadline, receipt.delivered())
        .await
        .map_or(true, |r| r.is_err())
    {
        return;
    }
    while tokio::time::Instant::now() < deadline {
        match read(&store).alert(&alert_id) {
            Some(a) if a.status != AlertStatus::Active => {
                let _ = reply.send(match a.status {
                    AlertStatus::Acknowledged => Ok(a),
                    _ => Err(AckError::Unknown(alert_id)),
                });
                return;
            }
            _ => {}
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Processor side: turns requests read from `subscriber` (every message of the commands topic)
/// into commands for the processors until `stop`.
pub async fn listen(
    mut subscriber: Box<dyn Subscriber>,
    commands: mpsc::Sender<Command>,
    stop: CancellationToken,
) {
    let mut batch: Vec<Message> = Vec::new();
    loop {
        batch.clear();
        let received = tokio::select! {
            _ = stop.cancelled() => return,
            r = subscriber.recv_batch(&mut batch, 64) => r,
        };
        match received {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %e, "reading acknowledgement requests failed");
                return;
            }
        }
        for m in &batch {
            let Ok(Request::Acknowledge { alert_id, by, .. }) = serde_json::from_slice(&m.payload)
            else {
                tracing::warn!(
                    offset = m.offset,
                    "unreadable request on the commands topic skipped"
                );
                continue;
            };
            let (reply, answer) = oneshot::channel();
            let command = Command::Acknowledge {
                alert_id: alert_id.clone(),
                by,
                reply,
            };
            if commands.send(command).await.is_err() {
                return;
            }
            // Only the processor owning the alert can say yes; another process may own it.
            match answer.await {
                Ok(Ok(_)) => tracing::info!(%alert_id, "acknowledged on request"),
                Ok(Err(e)) => tracing::debug!(%alert_id, "acknowledgement request not for us: {e}"),
                Err(_) => return,
            }
        }
        let _ = subscriber.commit_batch(&batch);
    }
}

fn read(store: &SharedStore) -> std::sync::RwLockReadGuard<'_, crate::store::Store> {
    store.read().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_have_a_stable_wire_form() {
        let r = Request::Acknowledge {
            alert_id: "alert_1".into(),
            requested_at: 5,
            by: None,
        };
        let json = serde_json::to_string(&r).expect("json");
        assert_eq!(
            json,
            r#"{"type":"acknowledge","alert_id":"alert_1","requested_at":5}"#
        );
        assert_eq!(serde_json::from_str::<Request>(&json).expect("back"), r);
        let by = Request::Acknowledge {
            alert_id: "alert_1".into(),
            requested_at: 5,
            by: Some("olga".into()),
        };
        let json = serde_json::to_string(&by).expect("json");
        assert!(json.ends_with(r#""by":"olga"}"#), "{json}");
        assert_eq!(serde_json::from_str::<Request>(&json).expect("back"), by);
    }
}
