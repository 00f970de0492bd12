//! The HTTP API (SPEC §5, §8): devices, history, export, alerts, statistics, metrics and the
//! operations endpoints, as an axum [`Router`] built by [`app`].
//!
//! This module owns request parsing, answers and their error format; it reads the store (under
//! its lock, never across an `.await`), asks the processor to acknowledge alerts through its
//! command queue, and reads the shared counters. It does not bind sockets (the caller serves
//! the router) and it does not feed the store.
//!
//! # Layout
//! - this file: [`app`], which registers the rows of [`routes::ROUTES`].
//! - [`guard`]: every route behind the [`crate::auth::Gate`], by the access its row needs.
//! - [`state`]: [`AppState`] and [`OpsState`]. [`error`]: [`AppError`], every failure as JSON with its status.
//! - `params`: query and path extractors that answer bad values with an [`AppError`].
//! - [`routes`]: the route table and the handlers (ops, devices, export, alerts).
//! - [`openapi`]: the `/api/docs` document, generated from the route table.
//! - [`metrics`]: the snapshot behind `/api/stats` and `/metrics`, and the metric names.
//! - [`dashboard`]: the web dashboard at `/` and its embedded files under `/web/`.

pub mod dashboard;
pub mod error;
pub mod guard;
pub mod metrics;
pub mod openapi;
mod params;
pub mod routes;
pub mod state;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::Uri;

pub use error::AppError;
pub use routes::ROUTES;
pub use state::{AppState, OpsState};

/// The API router: every row of [`ROUTES`], the [`dashboard`] at `/`, and a JSON 404 for any
/// other path. [`crate::listeners`] serves it (tests may use `axum::serve`), with more routes
/// merged into it first (the WebSocket hub's `/ws`).
pub fn app(state: AppState) -> Router {
    let mut router = Router::new();
    let gate = state.ops.gate.clone();
    for route in ROUTES {
        let handlers = routes::method_router(route);
        let access = route.endpoint.access();
        router = router.route(
            route.path,
            guard::method_router(handlers, gate.clone(), access),
        );
    }
    router
        .merge(dashboard::router())
        .fallback(not_found)
        // Any body read through an extractor (`Bytes`, `Json`) stops at this; ingest reads its
        // body itself, bounded by `INGEST_MAX_BODY_BYTES`.
        .layer(DefaultBodyLimit::max(SMALL_BODY_BYTES))
        .with_state(state)
}

/// The most any request body but `POST /api/ingest`'s may hold.
pub const SMALL_BODY_BYTES: usize = 64 * 1024;

/// The operations routes only — `/health`, `/ready`, `/config`, `/metrics`, `/api/stats`,
/// `/api/docs` — for the roles that keep no store (`process`, `simulate`).
pub fn ops_app(state: OpsState) -> Router {
    let mut router = Router::new();
    let gate = state.gate.clone();
    for route in ROUTES.iter().filter(|r| routes::is_ops(r.endpoint)) {
        let handlers = routes::ops_method_router(route);
        let access = route.endpoint.access();
        router = router.route(
            route.path,
            guard::method_router(handlers, gate.clone(), access),
        );
    }
    router.fallback(not_found).with_state(state)
}

async fn not_found(uri: Uri) -> AppError {
    AppError::NotFound(uri.path().to_owned())
}
