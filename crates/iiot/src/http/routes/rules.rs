//! `/api/rules`: list, make, change and remove alert rules over the API ([`RULE_ROUTES`], the
//! table's part for these routes). Changes are validated with every rule in force exactly like
//! the config file's, kept in the data directory and applied to the running processors at once
//! ([`crate::alerts::book`]; on Kafka through the rules topic, with `HISTORY_DATABASE_URL`
//! through PostgreSQL, so every processor follows).
//! A process without a rule book answers 503.
//!
//! Roles (for the authentication being built alongside): `GET` needs a viewer, `POST`, `PUT`
//! and `DELETE` need an admin.

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::{Value, json};

use super::super::error::AppError;
use super::super::openapi::{In, Param, Reply, RouteDoc, Schema, Verb, json as reply};
use super::super::params::PathId;
use super::super::state::AppState;
use super::Endpoint;
use crate::alerts::RuleSpec;
use crate::alerts::book::{RuleBook, RuleBookError};

/// Largest request body accepted.
const MAX_BODY: usize = 64 * 1024;

const RULE_ID: Param = Param {
    name: "id",
    location: In::Path,
    required: true,
    schema: Schema::Text,
    description: "Rule id: `temperature_high`, or with a scope `temperature_high@building=C,floor=2` (percent-encoded).",
};

const REMOVED: Reply = Reply {
    status: 204,
    description: "Removed.",
    media: &[],
};

/// The routes of this file, part of the route table ([`super::all_routes`]).
pub const RULE_ROUTES: &[RouteDoc] = &[
    RouteDoc {
        verb: Verb::Get,
        path: "/api/rules",
        endpoint: Endpoint::Rules,
        summary: "The alert rules in force, by id, each with its source (default, api, file) and spec.",
        params: &[],
        replies: &[
            reply(200, "`{items: [{id, source, rule}]}`."),
            reply(
                503,
                "This process keeps no alert rules, or the rules topic or database is unreachable (nothing changed).",
            ),
        ],
    },
    RouteDoc {
        verb: Verb::Post,
        path: "/api/rules",
        endpoint: Endpoint::CreateRule,
        summary: "Makes a rule (a spec as in `[[alerts.rules]]`, with an optional `scope`); applied at once.",
        params: &[],
        replies: &[
            reply(201, "`{id, source, rule}`."),
            reply(
                400,
                "Invalid rule; `error` names the field and what it accepts.",
            ),
            reply(
                409,
                "The id exists already (use PUT) or the config file defines it.",
            ),
            reply(
                503,
                "This process keeps no alert rules, or the rules topic or database is unreachable (nothing changed).",
            ),
        ],
    },
    RouteDoc {
        verb: Verb::Put,
        path: "/api/rules/{id}",
        endpoint: Endpoint::PutRule,
        summary: "Makes or replaces the API rule `id` (e.g. a default's new threshold); applied at once.",
        params: &[RULE_ID],
        replies: &[
            reply(200, "`{id, source, rule}`."),
            reply(
                400,
                "Invalid rule, or the body's alert_type and scope make another id.",
            ),
            reply(409, "The config file defines this rule (the file wins)."),
            reply(
                503,
                "This process keeps no alert rules, or the rules topic or database is unreachable (nothing changed).",
            ),
        ],
    },
    RouteDoc {
        verb: Verb::Delete,
        path: "/api/rules/{id}",
        endpoint: Endpoint::DeleteRule,
        summary: "Removes the API rule `id`: the default or file rule it replaced applies again.",
        params: &[RULE_ID],
        replies: &[
            REMOVED,
            reply(404, "No rule with this id was made over the API."),
            reply(409, "The config file defines this rule."),
            reply(
                503,
                "This process keeps no alert rules, or the rules topic or database is unreachable (nothing changed).",
            ),
        ],
    },
];

fn book(state: &AppState) -> Result<&RuleBook, AppError> {
    state
        .ops
        .rules
        .as_deref()
        .ok_or(AppError::Unavailable("this process keeps no alert rules"))
}

/// The answer to a refused change.
fn refused(e: RuleBookError) -> AppError {
    let text = e.to_string();
    match e {
        RuleBookError::Invalid(_) | RuleBookError::IdMismatch { .. } | RuleBookError::Full => {
            AppError::BadRequest(text)
        }
        RuleBookError::Unknown(id) => AppError::UnknownRule(id),
        RuleBookError::FromFile(_) | RuleBookError::Exists(_) => AppError::Conflict(text),
        RuleBookError::Save(_) => {
            AppError::Unavailable("could not save the rules; nothing changed")
        }
    }
}

async fn spec(body: Body) -> Result<RuleSpec, AppError> {
    let body = axum::body::to_bytes(body, MAX_BODY)
        .await
        .map_err(|_| AppError::TooLarge {
            limit: MAX_BODY,
            what: "the largest rule",
        })?;
    let spec: RuleSpec = serde_json::from_slice(&body)
        .map_err(|e| AppError::BadRequest(format!("invalid rule: {e}")))?;
    // The alert type names alerts, metrics labels and the rule's id: a word.
    let word = |t: &str| {
        (1..=64).contains(&t.len())
            && t.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    };
    if !word(&spec.alert_type) {
        return Err(AppError::bad(
            "alert_type",
            &spec.alert_type,
            "1 to 64 of a-z 0-9 _",
        ));
    }
    Ok(spec)
}

/// `GET /api/rules`.
pub(super) async fn list(State(state): State<AppState>) -> Result<Json<Value>, AppError> {
    Ok(Json(json!({ "items": book(&state)?.list() })))
}

/// `POST /api/rules` with a [`RuleSpec`].
pub(super) async fn create(
    State(state): State<AppState>,
    body: Body,
) -> Result<(StatusCode, Json<Value>), AppError> {
    let book = book(&state)?;
    let view = book
        .put(None, spec(body).await?, false)
        .await
        .map_err(refused)?;
    tracing::info!(id = %view.id, "alert rule made over the API");
    Ok((StatusCode::CREATED, Json(json!(view))))
}

/// `PUT /api/rules/{id}` with a [`RuleSpec`].
pub(super) async fn put(
    State(state): State<AppState>,
    PathId(id): PathId,
    body: Body,
) -> Result<Json<Value>, AppError> {
    let book = book(&state)?;
    let view = book
        .put(Some(&id), spec(body).await?, true)
        .await
        .map_err(refused)?;
    tracing::info!(id = %view.id, "alert rule changed over the API");
    Ok(Json(json!(view)))
}

/// `DELETE /api/rules/{id}`.
pub(super) async fn delete(
    State(state): State<AppState>,
    PathId(id): PathId,
) -> Result<StatusCode, AppError> {
    book(&state)?.delete(&id).await.map_err(refused)?;
    tracing::info!(%id, "alert rule removed over the API");
    Ok(StatusCode::NO_CONTENT)
}
