//! The HTTP side of the hub: the checks made before upgrading (token, Origin, connection
//! limit), then the hand-over to a connection.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Router;
use axum::extract::rejection::QueryRejection;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;

use super::{Hub, connection};

/// A router with one route: `GET path` upgrades to the hub's WebSocket, with every limit of
/// [`super::HubConfig`] applied. Merge it into the HTTP app, or serve it alone.
pub fn router(hub: Arc<Hub>, path: &str) -> Router {
    Router::new().route(path, get(upgrade)).with_state(hub)
}

#[derive(Debug, Deserialize)]
struct ConnectQuery {
    token: Option<String>,
}

async fn upgrade(
    State(hub): State<Arc<Hub>>,
    still_valid: Option<axum::extract::Extension<crate::http::guard::StillValid>>,
    headers: HeaderMap,
    query: Result<Query<ConnectQuery>, QueryRejection>,
    ws: WebSocketUpgrade,
) -> Response {
    let token = query.ok().and_then(|Query(q)| q.token);
    if let Some(refusal) = check_access(&hub, &headers, token.as_deref()) {
        hub.counters.unauthorized.fetch_add(1, Ordering::Relaxed);
        return refusal;
    }
    if hub.shutdown.is_cancelled() {
        hub.counters.rejected.fetch_add(1, Ordering::Relaxed);
        return unavailable("the server is shutting down");
    }
    let Ok(permit) = hub.permits.clone().try_acquire_owned() else {
        hub.counters.rejected.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(
            limit = hub.cfg.max_connections,
            "hub: WebSocket connection limit reached, refusing an upgrade"
        );
        return unavailable(&format!(
            "too many WebSocket connections (limit {})",
            hub.cfg.max_connections
        ));
    };
    let max = hub.cfg.max_frame_bytes;
    // Small per-connection buffers: tungstenite's defaults (128 KiB each way) cost ~110 KB of
    // resident memory per client, 1.5 GB at 10,000 clients. Client messages are tiny and our
    // frames are a few hundred bytes, so a few KiB suffice (a larger frame still goes out; the
    // buffer only sets when writes are flushed).
    ws.max_message_size(max)
        .max_frame_size(max)
        .read_buffer_size(4 * 1024)
        .write_buffer_size(8 * 1024)
        .on_failed_upgrade(|e| tracing::debug!(error = %e, "hub: WebSocket upgrade failed"))
        .on_upgrade(move |socket| connection::serve(hub, socket, permit, still_valid.map(|e| e.0)))
}

/// The 401 or 403 response, if the request may not connect.
fn check_access(hub: &Hub, headers: &HeaderMap, query_token: Option<&str>) -> Option<Response> {
    if let Some(expected) = &hub.cfg.auth_token {
        let bearer = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
        let given = query_token.or(bearer);
        if !given.is_some_and(|g| same_secret(g.as_bytes(), expected.as_bytes())) {
            let mut response = error(
                StatusCode::UNAUTHORIZED,
                "a valid token is required: ?token=… or Authorization: Bearer …",
            );
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            return Some(response);
        }
    }
    // With an allow-list a browser must be on it (programs send no Origin). Without one, the
    // gate in front of this route ([`crate::http::guard`]) lets only this server's own pages
    // through.
    let allowed = &hub.cfg.allowed_origins;
    let origin = headers
        .get(header::ORIGIN)
        .map(|v| v.to_str().unwrap_or(""));
    let ok = match origin {
        Some(origin) => {
            allowed.is_empty() || crate::auth::origin_allowed(origin, headers, allowed, 0)
        }
        None => allowed.is_empty(),
    };
    {
        if !ok {
            return Some(error(
                StatusCode::FORBIDDEN,
                "this Origin may not open a WebSocket here",
            ));
        }
    }
    None
}

/// Compares in time independent of where the first difference is.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn unavailable(message: &str) -> Response {
    let mut response = error(StatusCode::SERVICE_UNAVAILABLE, message);
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
    response
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, axum::Json(serde_json::json!({ "error": message }))).into_response()
}
