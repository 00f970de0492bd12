//! The OpenAPI 3.0 document served at `/api/docs`, generated from [`super::routes::ROUTES`] —
//! the same table [`super::app`] builds the router from, so the two cannot drift.

use serde_json::{Map, Value, json};

use super::routes::Endpoint;
use crate::auth::Access;

const UNAUTHORIZED: &str = "No valid credentials (when users or tokens are set up): sign in, or send `Authorization: Bearer <token>`.";
const FORBIDDEN: &str = "The role is too low, the session's CSRF token is missing, or the request comes from another site's page.";

/// HTTP method of a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verb {
    /// `GET`.
    Get,
    /// `POST`.
    Post,
    /// `DELETE`.
    Delete,
}

impl Verb {
    /// Lower-case name, as OpenAPI keys operations.
    pub fn as_str(self) -> &'static str {
        match self {
            Verb::Get => "get",
            Verb::Post => "post",
            Verb::Delete => "delete",
        }
    }
}

/// Where a parameter is given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum In {
    /// A `{name}` segment of the path.
    Path,
    /// The query string.
    Query,
}

/// The type of a parameter's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Schema {
    /// Any string.
    Text,
    /// An integer from `min` to `max`; `i64::MIN` / `i64::MAX` mean no bound on that side.
    Integer {
        /// Smallest accepted.
        min: i64,
        /// Largest accepted.
        max: i64,
    },
    /// One of these words.
    OneOf(&'static [&'static str]),
}

/// One documented parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Param {
    /// Its name.
    pub name: &'static str,
    /// Path or query.
    pub location: In,
    /// Whether it must be given.
    pub required: bool,
    /// What it accepts.
    pub schema: Schema,
    /// What it means.
    pub description: &'static str,
}

/// One documented response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reply {
    /// HTTP status.
    pub status: u16,
    /// When it is given.
    pub description: &'static str,
    /// Media types of the body (none for an empty body).
    pub media: &'static [&'static str],
}

/// A route: what the router serves and what the document says about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteDoc {
    /// Method.
    pub verb: Verb,
    /// Path, with `{name}` for path parameters (the syntax axum and OpenAPI share).
    pub path: &'static str,
    /// The handler.
    pub endpoint: Endpoint,
    /// One line about it.
    pub summary: &'static str,
    /// Its parameters.
    pub params: &'static [Param],
    /// Its responses.
    pub replies: &'static [Reply],
}

/// A JSON response.
pub const fn json(status: u16, description: &'static str) -> Reply {
    Reply {
        status,
        description,
        media: &["application/json"],
    }
}

fn param(p: &Param) -> Value {
    let schema = match p.schema {
        Schema::Text => json!({"type": "string"}),
        Schema::Integer { min, max } => {
            let mut s = json!({"type": "integer", "format": "int64"});
            // The extremes of i64 stand for "no bound".
            if min > i64::MIN {
                s["minimum"] = json!(min);
            }
            if max < i64::MAX {
                s["maximum"] = json!(max);
            }
            s
        }
        Schema::OneOf(words) => json!({"type": "string", "enum": words}),
    };
    json!({
        "name": p.name,
        "in": match p.location { In::Path => "path", In::Query => "query" },
        // OpenAPI requires path parameters to say so.
        "required": p.required || p.location == In::Path,
        "description": p.description,
        "schema": schema,
    })
}

fn reply(r: &Reply) -> Value {
    let mut out = Map::new();
    out.insert("description".into(), json!(r.description));
    if !r.media.is_empty() {
        let schema = if r.status >= 400 {
            json!({"$ref": "#/components/schemas/Error"})
        } else {
            json!({})
        };
        let content: Map<String, Value> = r
            .media
            .iter()
            .map(|m| ((*m).to_owned(), json!({ "schema": schema })))
            .collect();
        out.insert("content".into(), Value::Object(content));
    }
    Value::Object(out)
}

/// The OpenAPI 3.0 document describing `routes`.
pub fn document(routes: &[RouteDoc]) -> Value {
    let mut paths = Map::new();
    for r in routes {
        let mut replies: Map<String, Value> = r
            .replies
            .iter()
            .map(|x| (x.status.to_string(), reply(x)))
            .collect();
        let access = r.endpoint.access();
        if access != Access::Open {
            replies.insert("401".into(), reply(&json(401, UNAUTHORIZED)));
        }
        if matches!(access, Access::Role(_)) {
            replies.insert("403".into(), reply(&json(403, FORBIDDEN)));
        }
        let mut op = json!({
            "operationId": r.endpoint.name(),
            "summary": r.summary,
            "responses": replies,
        });
        match access {
            Access::Open => op["security"] = json!([]),
            Access::SignedIn => {}
            Access::Role(role) => {
                op["description"] = json!(format!("Needs the `{}` role.", role.as_str()));
            }
        }
        if !r.params.is_empty() {
            op["parameters"] = r.params.iter().map(param).collect();
        }
        let item = paths
            .entry(r.path.to_owned())
            .or_insert_with(|| Value::Object(Map::new()));
        item[r.verb.as_str()] = op;
    }
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "Industrial IoT Monitor API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Devices, their history and alerts, live statistics and operations \
                endpoints. Errors are JSON objects with an `error` message and the fields it is \
                about. The WebSocket protocol (`/ws`) is described in docs/api.md.",
        },
        "paths": paths,
        "security": [{"bearer": []}, {"session": []}, {}],
        "components": {
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "An API token from `iiot auth add-token NAME --role ROLE`.",
                },
                "session": {
                    "type": "apiKey",
                    "in": "cookie",
                    "name": "iiot_session",
                    "description": "The dashboard's session from `POST /api/login`; \
                        state-changing requests also send its CSRF token in `X-CSRF-Token`.",
                },
            },
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["error"],
                    "properties": {
                        "error": {"type": "string", "description": "What went wrong."},
                        "parameter": {"type": "string", "description": "The offending parameter."},
                        "value": {"type": "string", "description": "Its value as given."},
                        "allowed": {"type": "string", "description": "What it accepts."},
                        "device_id": {"type": "string"},
                        "alert_id": {"type": "string"},
                    },
                },
            },
        },
    })
}
