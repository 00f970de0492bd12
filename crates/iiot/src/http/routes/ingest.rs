//! `POST /api/ingest`: readings from gateways that cannot speak MQTT. The body is a JSON array
//! of readings or NDJSON (one reading per line); each reading that passes validation is
//! published onto the input topic, keyed by its device id, and the processors judge it like
//! any other (sequence, alerts, store). The answer, once the transport holds every accepted
//! reading: 202 `{"accepted": N, "rejected": [{"index", "reason", "detail"}]}`.

use std::sync::atomic::{AtomicU64, Ordering};

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::StatusCode;
use bytes::Bytes;
use serde_json::value::RawValue;
use serde_json::{Value, json};

use super::super::error::AppError;
use super::super::state::AppState;
use crate::processor::ProcessorConfig;

/// What `POST /api/ingest` did, for `/metrics`.
#[derive(Debug, Default)]
pub struct IngestStats {
    /// Readings published onto the input topic.
    pub accepted: AtomicU64,
    /// Readings refused (answered with their reason, not published).
    pub rejected: AtomicU64,
    /// Bodies refused for their size (413).
    pub too_large: AtomicU64,
}

/// One reading of the body, as sent.
struct Item<'a> {
    /// Position in the array, or among the non-blank lines of NDJSON.
    index: usize,
    bytes: &'a [u8],
}

/// `POST /api/ingest`.
pub(super) async fn ingest(
    State(state): State<AppState>,
    body: Body,
) -> Result<(StatusCode, Json<Value>), AppError> {
    let config = &state.ops.config;
    let limit = config.ingest_max_body_bytes;
    let stats = &state.ops.ingest;
    let body = axum::body::to_bytes(body, limit).await.map_err(|e| {
        if is_too_large(&e) {
            stats.too_large.fetch_add(1, Ordering::Relaxed);
            AppError::TooLarge {
                limit,
                what: "INGEST_MAX_BODY_BYTES",
            }
        } else {
            AppError::BadRequest(format!("cannot read the body: {e}"))
        }
    })?;
    let raw: Vec<&RawValue>;
    let items: Vec<Item<'_>> = if body.trim_ascii_start().starts_with(b"[") {
        raw = serde_json::from_slice(&body)
            .map_err(|e| AppError::BadRequest(format!("not a JSON array of readings: {e}")))?;
        raw.iter()
            .enumerate()
            .map(|(index, r)| Item {
                index,
                bytes: r.get().as_bytes(),
            })
            .collect()
    } else {
        body.split(|&b| b == b'\n')
            .map(<[u8]>::trim_ascii)
            .filter(|line| !line.is_empty())
            .enumerate()
            .map(|(index, bytes)| Item { index, bytes })
            .collect()
    };
    let limits = ProcessorConfig::from_config(config).limits;
    let now = crate::now_ms();
    let publisher = state.ops.transport.publisher();
    let topic = &config.kafka.topic_device_data;
    let mut receipts = Vec::with_capacity(items.len());
    let mut rejected = Vec::new();
    for item in &items {
        match iiot_model::decode(item.bytes, now, &limits) {
            Ok(reading) => {
                let published = publisher
                    .publish(
                        topic,
                        reading.device_id.as_bytes(),
                        Bytes::copy_from_slice(item.bytes),
                    )
                    .await;
                receipts.push(published.map_err(|_| unavailable())?);
            }
            Err(invalid) => rejected.push(json!({
                "index": item.index,
                "reason": invalid.reason.as_str(),
                "detail": invalid.detail,
            })),
        }
    }
    let accepted = receipts.len();
    for receipt in receipts {
        receipt.delivered().await.map_err(|_| unavailable())?;
    }
    stats.accepted.fetch_add(accepted as u64, Ordering::Relaxed);
    stats
        .rejected
        .fetch_add(rejected.len() as u64, Ordering::Relaxed);
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({"accepted": accepted, "rejected": rejected})),
    ))
}

fn unavailable() -> AppError {
    AppError::Unavailable("the message transport did not take the readings; send them again")
}

/// Whether reading the body failed on its size limit.
fn is_too_large(e: &axum::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if err.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        source = err.source();
    }
    false
}
