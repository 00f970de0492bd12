//! `/api/alerts` and `/api/alerts/{alert_id}/ack`.

use std::time::Duration;

use axum::Json;
use axum::extract::{Extension, State};
use iiot_model::{Alert, AlertStatus, Severity};
use serde_json::{Value, json};
use tokio::sync::oneshot;

use super::super::error::AppError;
use super::super::params::{Params, PathId};
use super::super::state::AppState;
use crate::alerts::AckError;
use crate::auth::Principal;
use crate::processor::run::Command;
use crate::store::{AlertFilter, MAX_ALERTS_LISTED};

/// How long an acknowledgement waits for the processor, queueing included.
const ACK_TIMEOUT: Duration = Duration::from_secs(5);

fn alert_status(name: &str) -> Option<AlertStatus> {
    [
        AlertStatus::Active,
        AlertStatus::Acknowledged,
        AlertStatus::Resolved,
    ]
    .into_iter()
    .find(|s| s.as_str() == name)
}

/// `GET /api/alerts?status=&severity=&device_id=&limit=`.
pub(super) async fn list(
    State(state): State<AppState>,
    params: Params,
) -> Result<Json<Value>, AppError> {
    let filter = AlertFilter {
        status: params.parse_with(
            "status",
            || "one of active, acknowledged, resolved".into(),
            alert_status,
        )?,
        severity: params.parse_with(
            "severity",
            || "one of low, medium, high, critical".into(),
            Severity::parse,
        )?,
        device_id: params.get("device_id").map(str::to_owned),
        limit: params
            .int_in("limit", 1, MAX_ALERTS_LISTED)?
            .unwrap_or(AlertFilter::default().limit),
    };
    let items: Vec<Alert> = state.read_store().alerts(&filter);
    let Some(notify) = state.ops.notify.as_ref().filter(|n| !n.silences.is_empty()) else {
        return Ok(Json(json!({ "items": items })));
    };
    // Open alerts a silence matches now are marked (the alerts topic's format is unchanged).
    let (lookup, now) = (
        crate::sinks::notify::lookup_in(&state.live),
        notify.silences.now_ms(),
    );
    let marked: Vec<Value> = items
        .iter()
        .map(|a| {
            let mut v = serde_json::to_value(a).unwrap_or(Value::Null);
            let open = a.status != AlertStatus::Resolved;
            let silenced = open
                && notify
                    .silences
                    .silences(a, lookup(&a.device_id).as_ref(), now);
            if let Value::Object(map) = &mut v {
                map.insert("silenced".into(), Value::Bool(silenced));
            }
            v
        })
        .collect();
    Ok(Json(json!({ "items": marked })))
}

/// `POST /api/alerts/{alert_id}/ack`: asks the processor that owns the alert, which publishes
/// the acknowledged alert. The store is updated at once too, so a list right after the answer
/// already shows it (the store ignores the same version arriving again from the topic).
pub(super) async fn acknowledge(
    State(state): State<AppState>,
    principal: Option<Extension<Principal>>,
    PathId(alert_id): PathId,
) -> Result<Json<Alert>, AppError> {
    let (reply, answer) = oneshot::channel();
    let by = principal.and_then(|Extension(p)| p.name);
    let command = Command::Acknowledge {
        alert_id,
        by,
        reply,
    };
    let asked = async {
        state
            .commands
            .send(command)
            .await
            .map_err(|_| AppError::Unavailable("the processor is not running"))?;
        answer
            .await
            .map_err(|_| AppError::Unavailable("the processor stopped before answering"))
    };
    let result = tokio::time::timeout(ACK_TIMEOUT, asked)
        .await
        .map_err(|_| AppError::Unavailable("the processor did not answer in time"))??;
    match result {
        Ok(alert) => {
            state.write_store().record_alert(&alert);
            Ok(Json(alert))
        }
        Err(AckError::Unknown(id)) => Err(AppError::UnknownAlert(id)),
        Err(AckError::AlreadyAcknowledged(id)) => Err(AppError::AlreadyAcknowledged(id)),
    }
}
