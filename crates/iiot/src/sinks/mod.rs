//! Sinks: where the processor's verdicts go. A sink takes one judged input batch
//! ([`Verdicts`]: the accepted readings, the rejected messages and the alert changes) and
//! returns once it holds them as firmly as it promises, so that the input can be committed.
//!
//! - [`topics`]: alerts, dead letters and alert-state records onto the backend's topics,
//!   delivered before the input is committed (at-least-once), failed deliveries sent again
//!   until they go through or the role stops.
//! - [`history_db`]: accepted readings into the PostgreSQL history (`HISTORY_DATABASE_URL`),
//!   written before the input is committed; a database that is down does not hold it up.
//! - [`live`]: the live store and the WebSocket hub the serve side answers from.
//! - [`notify`]: notifications to people (webhooks, Slack, Teams, e-mail), routed, rate-limited
//!   and silenced; it only enqueues, a background task delivers.
//!
//! A role composes its sinks (`iiot run` on the bus: both; `iiot process`: topics only); adding
//! a sink (history on disk, say) is one module here and one line where the role is
//! composed. Sinks see every verdict exactly once per delivery of the input; a redelivered
//! input (after a crash) reaches them again, so each must tolerate seeing a reading twice.

pub mod history_db;
pub mod live;
pub mod notify;
pub mod topics;

use async_trait::async_trait;
use bytes::Bytes;
use iiot_model::{Alert, Invalid, Reading};
use iiot_transport::{Message, TransportError};
use tokio_util::sync::CancellationToken;

/// A reading the processor accepted (in order or late), with the message it came in.
#[derive(Debug)]
pub struct Accepted<'a> {
    /// The message as received (its payload is what clients are sent).
    pub message: &'a Message,
    /// The decoded reading, borrowing from the message.
    pub reading: Reading<'a>,
    /// The message's payload as the text it was checked to be (what clients are sent).
    pub text: &'a str,
}

/// A message the processor rejected, with the reason.
#[derive(Debug)]
pub struct Rejected<'a> {
    /// The message as received.
    pub message: &'a Message,
    /// Why it was rejected.
    pub invalid: Invalid,
}

/// One alert status change, with its wire form serialized once for every sink.
#[derive(Debug, Clone)]
pub struct AlertChange {
    /// The alert as it now is.
    pub alert: Alert,
    /// Its JSON (SPEC §2).
    pub json: Bytes,
}

impl AlertChange {
    /// The change and its JSON.
    pub fn new(alert: Alert) -> AlertChange {
        // Serializing a plain struct of strings and numbers cannot fail.
        let json = Bytes::from(serde_json::to_vec(&alert).unwrap_or_default());
        AlertChange { alert, json }
    }
}

/// What the processor made of one input batch (or of a tick, a rule reload or an
/// acknowledgement, which carry alert changes only).
#[derive(Debug, Default)]
pub struct Verdicts<'a> {
    /// Accepted readings, in input order.
    pub accepted: Vec<Accepted<'a>>,
    /// Rejected messages, in input order.
    pub rejected: Vec<Rejected<'a>>,
    /// Alert changes, in the order they happened.
    pub alerts: Vec<AlertChange>,
    /// The open alerts of each device whose alerts changed, for the alert-state topic (empty
    /// on a backend without one).
    pub states: Vec<crate::processor::AlertState>,
    /// Which assignment of each input partition the worker is on, when its backend moves
    /// partitions: a state record is sent (and sent again) only while its partition is still on
    /// the assignment stamped in [`crate::processor::AlertState::epoch`].
    pub ownership: Option<std::sync::Arc<dyn iiot_transport::Ownership>>,
    /// Receiver clock when the batch was judged, Unix ms.
    pub now_ms: i64,
}

impl Verdicts<'_> {
    /// Verdicts with nothing in them, judged at `now_ms`.
    pub fn empty(now_ms: i64) -> Self {
        Verdicts {
            now_ms,
            ..Verdicts::default()
        }
    }

    /// Whether there is nothing for a sink to do.
    pub fn is_empty(&self) -> bool {
        self.accepted.is_empty()
            && self.rejected.is_empty()
            && self.alerts.is_empty()
            && self.states.is_empty()
    }
}

/// Why a sink could not take a batch. The input is then not committed: it is read again
/// after a restart (or by the partition's next owner).
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// The role is stopping; what was not delivered is left uncommitted.
    #[error("stopped before the outputs were delivered")]
    Stopped,
    /// The backend can no longer take anything (closed).
    #[error(transparent)]
    Transport(#[from] TransportError),
}

/// Where verdicts go. Shared by every processor worker of a role, so it takes `&self`.
#[async_trait]
pub trait Sink: Send + Sync {
    /// Short name, for logs.
    fn name(&self) -> &'static str;

    /// Takes one batch of verdicts. Returns once the sink holds them as firmly as it promises
    /// (a topic sink: delivered to the broker). Retriable faults are retried inside, until
    /// `stop` is cancelled ([`SinkError::Stopped`]).
    async fn take(
        &self,
        verdicts: &Verdicts<'_>,
        stop: &CancellationToken,
    ) -> Result<(), SinkError>;
}
