//! `/api/silences`: create, list and delete the notifier's silences. A process without a
//! notifier answers 503.

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::{Value, json};

use super::super::error::AppError;
use super::super::params::PathId;
use super::super::state::AppState;
use crate::sinks::notify::NotifyShared;
use crate::sinks::notify::silences::SilenceSpec;

/// Largest request body accepted.
const MAX_BODY: usize = 64 * 1024;

fn notify(state: &AppState) -> Result<&NotifyShared, AppError> {
    state
        .ops
        .notify
        .as_deref()
        .ok_or(AppError::Unavailable("this process sends no notifications"))
}

/// `GET /api/silences`.
pub(super) async fn list(State(state): State<AppState>) -> Result<Json<Value>, AppError> {
    let items = notify(&state)?.silences.list();
    Ok(Json(json!({ "items": items })))
}

/// `POST /api/silences` with a [`SilenceSpec`] as JSON.
pub(super) async fn create(
    State(state): State<AppState>,
    body: Body,
) -> Result<(StatusCode, Json<Value>), AppError> {
    let shared = notify(&state)?;
    // Read no more than a silence can take, whatever the client sends.
    let body = axum::body::to_bytes(body, MAX_BODY).await.map_err(|e| {
        // Only a body over the limit is 413; one that broke off is the client's 400.
        let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&e);
        while let Some(err) = source {
            if err.is::<http_body_util::LengthLimitError>() {
                return AppError::TooLarge {
                    limit: MAX_BODY,
                    what: "the largest silence",
                };
            }
            source = err.source();
        }
        AppError::BadRequest(format!("could not read the body: {e}"))
    })?;
    let spec: SilenceSpec = serde_json::from_slice(&body)
        .map_err(|e| AppError::BadRequest(format!("invalid silence: {e}")))?;
    let silence = shared
        .silences
        .create(spec)
        .map_err(|e| AppError::BadRequest(format!("invalid silence: {e}")))?;
    tracing::info!(id = %silence.id, created_by = %silence.created_by, "silence created");
    let value = serde_json::to_value(&silence).unwrap_or(Value::Null);
    Ok((StatusCode::CREATED, Json(value)))
}

/// `DELETE /api/silences/{id}`.
pub(super) async fn delete(
    State(state): State<AppState>,
    PathId(id): PathId,
) -> Result<StatusCode, AppError> {
    if notify(&state)?.silences.delete(&id) {
        tracing::info!(%id, "silence deleted");
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(AppError::UnknownSilence(id))
    }
}
