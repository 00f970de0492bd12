//! The gate in front of every route: each row of the route table names the [`Access`] it
//! needs ([`super::routes::Endpoint::access`]), and [`layer`] refuses what the
//! [`Gate`] refuses — 401 without valid credentials, 403 for a role too low, a missing CSRF
//! token or a foreign page — as JSON errors, before the handler runs. What it lets through
//! carries its [`Principal`] in the request's extensions (who acknowledged an alert).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Router;
use axum::extract::Request;
use axum::http::{HeaderValue, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::MethodRouter;

use super::AppError;
use crate::auth::{Access, Denied, Gate};

/// `routes` behind `gate`, each request needing `access`. `query_token` also takes a
/// `?token=` (the WebSocket upgrade's, where browsers cannot send headers).
pub fn router<S>(routes: Router<S>, gate: Arc<Gate>, access: Access, query_token: bool) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    routes.route_layer(middleware::from_fn(move |request: Request, next: Next| {
        let gate = gate.clone();
        async move { guard(gate, access, query_token, request, next).await }
    }))
}

/// Asks whether the credentials a WebSocket connection was opened with still hold (a
/// revoked token, a closed session, a removed user: no); the hub closes it when they do not.
#[derive(Clone)]
pub struct StillValid(pub Arc<dyn Fn() -> bool + Send + Sync>);

/// One route's handlers behind `gate`, needing `access`.
pub fn method_router<S>(routes: MethodRouter<S>, gate: Arc<Gate>, access: Access) -> MethodRouter<S>
where
    S: Clone + Send + Sync + 'static,
{
    routes.route_layer(middleware::from_fn(move |request: Request, next: Next| {
        let gate = gate.clone();
        async move { guard(gate, access, false, request, next).await }
    }))
}

async fn guard(
    gate: Arc<Gate>,
    access: Access,
    upgrade: bool,
    mut request: Request,
    next: Next,
) -> Response {
    let token = upgrade
        .then(|| request.uri().query().and_then(token_param))
        .flatten();
    if upgrade && let Err(denied) = gate.check_upgrade_origin(request.headers()) {
        return refuse(&gate, denied);
    }
    let checked = gate.check(
        access,
        request.method(),
        request.headers(),
        token.as_deref(),
    );
    match checked {
        Ok(principal) => {
            if upgrade {
                let (gate, who) = (gate.clone(), principal.clone());
                let check = StillValid(Arc::new(move || gate.still_valid(&who)));
                request.extensions_mut().insert(check);
            }
            request.extensions_mut().insert(principal);
            next.run(request).await
        }
        Err(denied) => refuse(&gate, denied),
    }
}

/// The 401 or 403 answer for `denied`, counted.
pub fn refuse(gate: &Gate, denied: Denied) -> Response {
    match denied {
        Denied::Unauthorized(why) => {
            gate.stats.unauthorized.fetch_add(1, Ordering::Relaxed);
            let mut response = AppError::Unauthorized(why).into_response();
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            response
        }
        Denied::Forbidden(why) => {
            gate.stats.forbidden.fetch_add(1, Ordering::Relaxed);
            AppError::Forbidden(why).into_response()
        }
    }
}

/// The value of `token=` in a query string (percent-decoding is not needed: tokens are
/// `iiot_` and hex digits, and a secret that needs escaping is refused by the config).
fn token_param(query: &str) -> Option<String> {
    query
        .split('&')
        .find_map(|kv| kv.strip_prefix("token="))
        .map(str::to_owned)
}
