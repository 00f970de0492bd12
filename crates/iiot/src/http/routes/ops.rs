//! Operations endpoints: liveness, readiness, configuration, metrics, statistics, the OpenAPI
//! document.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use serde_json::{Value, json};

use super::super::metrics::Snapshot;
use super::super::openapi;
use super::super::state::OpsState;

/// How long `/ready` waits for the transport's answer (a broker that hangs is not ready).
const READY_TIMEOUT: Duration = Duration::from_secs(2);

/// `GET /health`: the process is alive and serving.
pub(super) async fn health() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// `GET /ready`: 200 while the transport can move messages (and, with an MQTT source, the
/// MQTT broker is connected), 503 otherwise.
pub(super) async fn ready(State(state): State<OpsState>) -> impl IntoResponse {
    let ready = tokio::time::timeout(READY_TIMEOUT, state.transport.is_ready())
        .await
        .unwrap_or(false);
    let mqtt_down = state.mqtt.as_ref().is_some_and(|m| !m.is_connected());
    let error = if !ready {
        "the message transport is not reachable"
    } else if mqtt_down {
        "the MQTT broker is not reachable"
    } else {
        // History that cannot write does not stop the live view: still ready, but degraded.
        let history = state.live.as_ref().and_then(|l| l.history.as_ref());
        let problem = state
            .history_db
            .as_ref()
            .and_then(|db| db.problem())
            .or_else(|| history.and_then(|h| h.problem()));
        if let Some(problem) = problem {
            return (
                StatusCode::OK,
                Json(json!({"status": "degraded", "error": format!("history: {problem}")})),
            );
        }
        return (StatusCode::OK, Json(json!({"status": "ready"})));
    };
    (
        StatusCode::SERVICE_UNAVAILABLE,
        Json(json!({"status": "not_ready", "error": error})),
    )
}

/// `GET /config`: the effective configuration, secrets redacted, with the rules in force
/// (those made over the API too) as `alerts.rules: [{id, source, rule}]`.
pub(super) async fn config(State(state): State<OpsState>) -> Json<Value> {
    let mut config = state.config.redacted();
    if let Some(book) = &state.rules {
        config["alerts"]["rules"] = json!(book.list());
    }
    Json(config)
}

/// `GET /api/stats`.
pub(super) async fn stats(State(state): State<OpsState>) -> Json<Value> {
    Json(Snapshot::take(&state).to_json())
}

/// `GET /metrics`.
pub(super) async fn metrics(State(state): State<OpsState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        Snapshot::take(&state).to_prometheus(),
    )
}

/// `GET /api/docs`.
pub(super) async fn docs() -> Json<Value> {
    Json(openapi::document(super::all_routes()))
}
