//! The bodies the API document states: request bodies, and the schemas of JSON replies.
//! They are kept next to the handlers' shapes by schemathesis (`scripts/api-check.sh`):
//! every reply is checked against its schema, every generated body is sent.

use serde_json::{Value, json};

use super::{ALERT_STATUSES, DEVICE_STATUSES, Endpoint, SENSORS, SEVERITIES};

/// The request body `endpoint` takes, as an OpenAPI `requestBody`; `None` for none.
pub(crate) fn request_body(endpoint: Endpoint) -> Option<Value> {
    use crate::sinks::notify::silences::{MAX_COMMENT_CHARS, MAX_CREATED_BY_CHARS};
    let strings = json!({"type": "array", "items": {"type": "string"}});
    let hh_mm = json!({"type": "string", "pattern": "^([01][0-9]|2[0-3]):[0-5][0-9]$"});
    let days = [
        "mon",
        "tue",
        "wed",
        "thu",
        "fri",
        "sat",
        "sun",
        "monday",
        "tuesday",
        "wednesday",
        "thursday",
        "friday",
        "saturday",
        "sunday",
    ];
    Some(match endpoint {
        Endpoint::CreateSilence => json!({
            "required": true,
            "description": "`ends_at` or `schedule` is required; `ends_at` must be after \
                `starts_at` (default now) and, without a schedule, in the future; `tz` must be \
                a known IANA time zone and `device_id` a well-formed glob (400 otherwise).",
            "content": {"application/json": {"schema": {
                "type": "object",
                "additionalProperties": false,
                "properties": {
                    "matchers": {
                        "type": "object",
                        "additionalProperties": false,
                        "description": "Which alerts it holds back; a list matches any of its \
                            values, fields left out match everything.",
                        "properties": {
                            "severity": {"type": "array", "items": {"type": "string", "enum": SEVERITIES}},
                            "alert_type": strings,
                            "building": strings,
                            "floor": {"type": "array", "items": {
                                "type": "integer", "format": "int32",
                                "minimum": i32::MIN, "maximum": i32::MAX,
                            }},
                            "model": strings,
                            "device_id": {
                                "type": "string", "nullable": true,
                                "description": "A glob: `*`, `?`, `[…]`.",
                            },
                        },
                    },
                    "starts_at": {"type": "integer", "format": "int64", "nullable": true,
                        "description": "Unix ms (default now)."},
                    "ends_at": {"type": "integer", "format": "int64", "nullable": true,
                        "description": "Unix ms."},
                    "schedule": {
                        "type": "object",
                        "nullable": true,
                        "additionalProperties": false,
                        "required": ["days", "start", "end"],
                        "description": "Every week on `days` from `start` to `end` local time \
                            (an `end` at or before `start` runs into the next day).",
                        "properties": {
                            "days": {"type": "array", "minItems": 1, "items": {
                                "type": "string", "enum": days,
                                "description": "Upper case is accepted too.",
                            }},
                            "start": hh_mm,
                            "end": hh_mm,
                            "tz": {"type": "string", "description": "IANA time zone (default UTC)."},
                        },
                    },
                    "comment": {"type": "string", "maxLength": MAX_COMMENT_CHARS},
                    "created_by": {"type": "string", "maxLength": MAX_CREATED_BY_CHARS},
                },
            }}},
        }),
        Endpoint::Ingest => json!({
            // An empty body is zero readings: 202 with nothing accepted.
            "required": false,
            "description": "A JSON array of readings (SPEC §2), or NDJSON: one reading per \
                line. Any body is taken: each reading is judged on its own and the reply lists \
                the rejected ones.",
            "content": {
                "application/json": {"schema": {}},
                "application/x-ndjson": {"schema": {"type": "string"}},
            },
        }),
        Endpoint::CreateRule | Endpoint::PutRule => json!({
            "required": true,
            "description": "One alert rule, as in `[[alerts.rules]]` of the config file \
                (docs/alerting.md). It is validated together with every rule in force, as the \
                file's are: a kind, parameter or threshold that does not fit is a 400 naming \
                the field.",
            "content": {"application/json": {"schema": {
                "type": "object",
                "additionalProperties": false,
                "required": ["alert_type"],
                // Every field but alert_type may also be null (the same as leaving it out).
                "properties": {
                    "alert_type": {"type": "string", "pattern": "^[a-z0-9_]{1,64}$"},
                    "kind": {"type": "string", "nullable": true, "enum": ["threshold", "rate_of_change", "stuck", "offline", null]},
                    "parameter": {"type": "string", "nullable": true},
                    "operator": {"type": "string", "nullable": true, "enum": [">", "<", null]},
                    "value": {"type": "number", "nullable": true},
                    "clear": {"type": "number", "nullable": true},
                    "for": {"type": "string", "nullable": true},
                    "window": {"type": "string", "nullable": true},
                    "missed_intervals": {"type": "number", "nullable": true},
                    "severity": {"type": "string", "nullable": true, "enum": ["low", "medium", "high", "critical", null]},
                    "enabled": {"type": "boolean", "nullable": true},
                    "scope": {"type": "object", "nullable": true},
                },
            }}},
        }),
        Endpoint::Login => json!({
            "required": true,
            "content": {"application/json": {"schema": {
                "type": "object",
                "additionalProperties": false,
                "required": ["username", "password"],
                "properties": {"username": {"type": "string"}, "password": {"type": "string"}},
            }}},
        }),
        _ => return None,
    })
}

/// The schema of the body `endpoint` answers with status `status`, where the document states
/// one (error bodies have theirs from the generator); `None` leaves it open.
pub(crate) fn reply_schema(endpoint: Endpoint, status: u16) -> Option<Value> {
    let int = json!({"type": "integer", "format": "int64"});
    let number = json!({"type": "number"});
    let string = json!({"type": "string"});
    let object = |required: &[&str], properties: Value| json!({"type": "object", "required": required, "properties": properties});
    let measurement = object(
        &["value", "unit", "status"],
        json!({"value": number, "unit": string,
               "status": {"type": "string", "enum": ["normal", "warning", "critical", "fault"]}}),
    );
    let device = object(
        &[
            "device_id",
            "status",
            "location",
            "model",
            "firmware",
            "battery",
            "signal_strength",
            "last_seen",
            "timestamp",
            "seq",
            "interval_ms",
            "open_alerts",
            "critical_alerts",
            "sensors",
        ],
        json!({
            "device_id": string,
            "status": {"type": "string", "enum": DEVICE_STATUSES},
            "location": object(&["building", "floor", "room"],
                json!({"building": string, "floor": int, "room": string})),
            "model": string, "firmware": string, "battery": int, "signal_strength": int,
            "last_seen": int, "timestamp": int, "seq": int, "interval_ms": int,
            "open_alerts": int, "critical_alerts": int,
            "sensors": object(
                &["temperature", "humidity", "pressure", "switch_status", "current"],
                json!({"temperature": measurement, "humidity": measurement,
                       "pressure": measurement, "current": measurement,
                       "switch_status": object(&["value", "status"], json!({
                           "value": {"type": "boolean"},
                           "status": {"type": "string", "enum": ["on", "off"]}}))}),
            ),
            "latest": {"type": "object", "description": "The whole latest reading (SPEC §2)."},
        }),
    );
    let alert = object(
        &[
            "alert_id",
            "device_id",
            "alert_type",
            "severity",
            "message",
            "timestamp",
            "status",
            "threshold",
            "current_value",
        ],
        json!({
            "alert_id": string, "device_id": string, "alert_type": string,
            "severity": {"type": "string", "enum": SEVERITIES},
            "message": string, "timestamp": int,
            "status": {"type": "string", "enum": ALERT_STATUSES},
            "threshold": object(&["parameter", "operator", "value"], json!({
                "parameter": string,
                "operator": {"type": "string", "enum": [">", "<", ">="]},
                "value": number})),
            "current_value": number,
            "acknowledged_by": {"type": "string", "description": "Who acknowledged it."},
            "silenced": {"type": "boolean"},
        }),
    );
    let silence = object(
        &[
            "id",
            "matchers",
            "starts_at",
            "comment",
            "created_by",
            "created_at",
        ],
        json!({"id": string, "matchers": {"type": "object"}, "starts_at": int,
               "ends_at": {"type": "integer", "format": "int64", "nullable": true},
               "schedule": {"type": "object"}, "comment": string, "created_by": string,
               "created_at": int, "active": {"type": "boolean"}, "expired": {"type": "boolean"}}),
    );
    let items = |item: Value| {
        object(
            &["items"],
            json!({"items": {"type": "array", "items": item}}),
        )
    };
    Some(match (endpoint, status) {
        (Endpoint::Health, 200) => object(&["status"], json!({"status": {"enum": ["ok"]}})),
        (Endpoint::Ready, 200) => object(&["status"], json!({"status": string})),
        (Endpoint::Devices, 200) => object(
            &["items", "total", "page", "per_page"],
            json!({"items": {"type": "array", "items": device}, "total": int, "page": int,
                   "per_page": int}),
        ),
        (Endpoint::Device, 200) => device,
        (Endpoint::History, 200) => object(
            &["device_id", "sensor", "unit", "from", "to", "points"],
            json!({"device_id": string, "sensor": {"type": "string", "enum": SENSORS},
                   "unit": string, "from": int, "to": int,
                   "points": {"type": "array", "items": object(
                       &["t", "min", "max", "avg", "count"],
                       json!({"t": int, "min": number, "max": number, "avg": number,
                              "count": int}))}}),
        ),
        (Endpoint::Alerts, 200) => items(alert),
        (Endpoint::Acknowledge, 200) => alert,
        (Endpoint::Silences, 200) => items(silence),
        (Endpoint::CreateSilence, 201) => silence,
        (Endpoint::Ingest, 202) => object(
            &["accepted", "rejected"],
            json!({"accepted": int, "rejected": {"type": "array", "items": object(
                &["index", "reason", "detail"],
                json!({"index": int, "reason": string, "detail": string}))}}),
        ),
        (Endpoint::Config | Endpoint::Stats | Endpoint::Docs, 200) => json!({"type": "object"}),
        (Endpoint::Login, 200) => object(
            &["user", "role", "csrf_token", "expires_in_s"],
            json!({"user": string, "role": {"type": "string", "enum": ["viewer", "operator", "admin"]},
                "csrf_token": string, "expires_in_s": int}),
        ),
        (Endpoint::Logout, 200) => {
            object(&["signed_out"], json!({"signed_out": {"type": "boolean"}}))
        }
        (Endpoint::Session, 200) => json!({
            "type": "object",
            "properties": {
                "user": {"type": "string", "nullable": true},
                "role": {"type": "string", "nullable": true, "enum": ["viewer", "operator", "admin", null]},
                "via": {"type": "string", "nullable": true, "enum": ["anonymous", "token", "session", null]},
                "csrf_token": string,
                "sign_in": {"type": "boolean"},
            },
        }),
        _ => return None,
    })
}
