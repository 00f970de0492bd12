//! `POST /api/login`, `POST /api/logout`, `GET /api/session`: the dashboard's sign-in.
//!
//! A login checks the password against its argon2id hash (on a blocking thread, at most two at
//! once: the hash is slow on purpose) and answers with a session cookie — `HttpOnly`,
//! `SameSite=Strict`, `Secure` under TLS — and the session's CSRF token, which the page sends
//! in `X-CSRF-Token` on every state-changing request.

use std::sync::OnceLock;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use super::super::error::AppError;
use super::super::state::OpsState;
use crate::auth::session::{COOKIE, cookie};
use crate::auth::store::{check_name, hash_password, sha256_hex, verify_password};
use crate::auth::{Access, Via};

/// How long a login waits for a free hashing slot before answering 503.
const LOGIN_WAIT: Duration = Duration::from_secs(5);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Login {
    username: String,
    password: String,
}

/// `POST /api/login`.
pub(super) async fn login(State(ops): State<OpsState>, body: Bytes) -> Result<Response, AppError> {
    let Login { username, password } = serde_json::from_slice(&body).map_err(|_| {
        AppError::BadRequest("the body must be JSON: {\"username\": …, \"password\": …}".into())
    })?;
    let gate = ops.gate.clone();
    let slot = tokio::time::timeout(LOGIN_WAIT, gate.login_slots.clone().acquire_owned())
        .await
        .map_err(|_| AppError::Unavailable("too many logins at once; try again"))?
        .map_err(|_| AppError::Unavailable("the server is shutting down"))?;
    let accounts = gate.accounts();
    let user = accounts.user(&username).map(|(h, r)| (h.to_string(), r));
    let hash = user.as_ref().map(|(h, _)| h.clone());
    // The slot goes with the hash: a client that hangs up does not free it early. An unknown
    // user costs the same hash as a known one, so timing tells nothing.
    let ok = tokio::task::spawn_blocking(move || {
        let ok = verify_password(hash.as_deref().unwrap_or_else(|| dummy_hash()), &password);
        drop(slot);
        ok
    })
    .await
    .unwrap_or(false);
    let Some((hash, role)) = user.filter(|_| ok) else {
        gate.stats.login_failures.fetch_add(1, Ordering::Relaxed);
        // What was typed as a name may be a password: named only if it could be a name.
        match check_name(&username) {
            Ok(()) => tracing::info!(user = %username, "auth: login refused"),
            Err(_) => tracing::info!(chars = username.chars().count(), "auth: login refused"),
        }
        return Err(AppError::Unauthorized("wrong user name or password".into()));
    };
    gate.stats.logins.fetch_add(1, Ordering::Relaxed);
    let (id, session) = gate.sessions.open(&username, &sha256_hex(&hash));
    let ttl = gate.sessions.ttl().as_secs();
    tracing::info!(user = %username, role = role.as_str(), "auth: signed in");
    let secure = if gate.secure_cookie() { "; Secure" } else { "" };
    let set = format!("{COOKIE}={id}; Path=/; HttpOnly; SameSite=Strict; Max-Age={ttl}{secure}");
    let body = json!({
        "user": username,
        "role": role.as_str(),
        "csrf_token": session.csrf,
        "expires_in_s": ttl,
    });
    let mut response = Json(body).into_response();
    if let Ok(v) = HeaderValue::from_str(&set) {
        response.headers_mut().insert(header::SET_COOKIE, v);
    }
    Ok(response)
}

/// `POST /api/logout`.
pub(super) async fn logout(State(ops): State<OpsState>, headers: HeaderMap) -> Response {
    let id = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|h| cookie(h, COOKIE));
    if let Some(id) = id {
        ops.gate.sessions.close(id);
    }
    let mut response = Json(json!({ "signed_out": true })).into_response();
    let clear = format!("{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0");
    if let Ok(v) = HeaderValue::from_str(&clear) {
        response.headers_mut().insert(header::SET_COOKIE, v);
    }
    response
}

/// `GET /api/session`: open, so that the page can ask whether to show its login form
/// without a failed request.
pub(super) async fn session(
    State(ops): State<OpsState>,
    method: Method,
    headers: HeaderMap,
) -> Json<serde_json::Value> {
    let Ok(p) = ops.gate.check(Access::SignedIn, &method, &headers, None) else {
        return Json(json!({ "user": null, "role": null, "via": null, "sign_in": true }));
    };
    let mut body = json!({ "user": p.name, "role": p.role.as_str() });
    body["via"] = json!(match &p.via {
        Via::Anonymous => "anonymous",
        Via::Token { .. } => "token",
        Via::Session { .. } => "session",
    });
    if let Via::Session { csrf, .. } = &p.via {
        body["csrf_token"] = json!(csrf);
    }
    Json(body)
}

/// A hash of nothing anyone knows, verified when the user does not exist.
fn dummy_hash() -> &'static str {
    static HASH: OnceLock<String> = OnceLock::new();
    HASH.get_or_init(|| hash_password(&crate::auth::store::random_hex()))
}
