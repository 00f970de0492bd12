//! Following the API's rules made by other processes: on Kafka the rules topic ([`topic`]),
//! with `HISTORY_DATABASE_URL` the database ([`database`]). Both only hand what they read to
//! the [`RuleBook`], which publishes it to the processors; neither ever blocks them.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use iiot_transport::{Message, Subscriber};
use tokio::sync::mpsc;
use tokio_postgres::AsyncMessage;
use tokio_util::sync::CancellationToken;

use super::RuleBook;
use super::store_pg::CHANNEL;
use crate::alerts::RuleSpec;
use crate::history::database::{DbError, HistoryDb};

/// How often the database's version is read even without a notification (one missed while
/// the listening connection was down, or a notification lost).
pub const REREAD_EVERY: Duration = Duration::from_secs(5);
/// The rules topic counts as read to its end once nothing arrived for this long.
const TOPIC_QUIET: Duration = Duration::from_secs(2);

/// Applies every snapshot read from `subscriber` (the rules topic, from its beginning) to
/// `book` until `stop`; unreadable messages are skipped, logged. With the rules in the
/// database, a snapshot is only carried over into it (once, see [`RuleBook::from_topic`]).
pub async fn topic(
    book: Arc<RuleBook>,
    mut subscriber: Box<dyn Subscriber>,
    stop: CancellationToken,
) {
    let mut batch: Vec<Message> = Vec::new();
    // With the database, only the topic's latest snapshot is carried over: read to the end
    // (nothing more for a while) first, then offer it once.
    let carry_only = matches!(book.keep, super::Keep::Database(_));
    let mut latest: Option<Vec<RuleSpec>> = None;
    loop {
        batch.clear();
        let received = tokio::select! {
            _ = stop.cancelled() => return,
            r = subscriber.recv_batch(&mut batch, 64) => r,
            _ = tokio::time::sleep(TOPIC_QUIET), if carry_only => {
                if let Some(api) = latest.take() {
                    book.from_topic(api).await;
                }
                return;
            }
        };
        match received {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %e, "reading the rules topic failed");
                return;
            }
        }
        if carry_only {
            if let Some(api) = newest_snapshot(&batch) {
                latest = Some(api);
            }
            let _ = subscriber.commit_batch(&batch);
            continue;
        }
        if let Some(api) = newest_snapshot(&batch) {
            let count = api.len();
            if book.from_topic(api).await {
                tracing::info!(
                    api_rules = count,
                    "alert rules changed over the API applied"
                );
            }
        }
        let _ = subscriber.commit_batch(&batch);
    }
}

/// The newest readable snapshot of `batch` (only it matters); unreadable ones are skipped.
fn newest_snapshot(batch: &[Message]) -> Option<Vec<RuleSpec>> {
    batch.iter().rev().find_map(
        |m| match serde_json::from_slice::<Vec<RuleSpec>>(&m.payload) {
            Ok(api) => Some(api),
            Err(e) => {
                tracing::warn!(offset = m.offset, error = %e, "unreadable rules snapshot skipped");
                None
            }
        },
    )
}

/// Follows the API's rules in `db` until `stop`: `LISTEN`s on [`super::store_pg::CHANNEL`] and reads
/// the version every [`REREAD_EVERY`] as well; each newer version is read and applied to
/// `book`. While the database is down the rules in force stay and it tries again each period.
pub async fn database(book: Arc<RuleBook>, db: Arc<HistoryDb>, stop: CancellationToken) {
    let (wake_tx, mut wake) = mpsc::channel::<()>(1);
    let mut listening: Option<tokio_postgres::Client> = None;
    let mut every = tokio::time::interval(REREAD_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut down = false;
    loop {
        if listening.as_ref().is_none_or(|c| c.is_closed()) {
            listening = listen(&db, wake_tx.clone()).await.ok();
        }
        match book.refresh(&db).await {
            Ok(_) if down => {
                down = false;
                tracing::info!("alert rules database reachable again: following it");
            }
            Ok(_) => {}
            Err(e) if !down => {
                down = true;
                tracing::warn!(error = %e, "alert rules database unreachable: the rules in force stay");
            }
            Err(_) => {}
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = wake.recv() => {}
            _ = every.tick() => {}
        }
    }
}

/// A connection of its own that `LISTEN`s; each notification wakes the follower (at most one
/// waiting: the follower reads the latest version anyway).
async fn listen(db: &HistoryDb, wake: mpsc::Sender<()>) -> Result<tokio_postgres::Client, DbError> {
    let (client, mut connection) = db.dedicated().await?;
    tokio::spawn(async move {
        let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(message) = messages.next().await {
            match message {
                Ok(AsyncMessage::Notification(_)) => {
                    let _ = wake.try_send(());
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::debug!(error = %e, "alert rules listening connection closed");
                    break;
                }
            }
        }
    });
    client
        .batch_execute(&format!("LISTEN {CHANNEL}"))
        .await
        .map_err(DbError::from_pg)?;
    // A change made while nobody listened is caught by the read that follows.
    Ok(client)
}
