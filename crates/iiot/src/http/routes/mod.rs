//! The route table ([`ROUTES`]) and the handlers behind it.
//!
//! [`super::app`] registers exactly the rows of [`ROUTES`], with the method the row names, and
//! `/api/docs` is generated from the same rows: a route cannot be served undocumented or
//! documented unserved. An [`Endpoint`] missing from the table is dead code (a warning).
//!
//! - [`ops`]: `/health`, `/ready`, `/config`, `/metrics`, `/api/stats`, `/api/docs`.
//! - [`devices`]: the device list, one device, history.
//! - [`export`]: streamed CSV/JSON export of raw samples.
//! - [`alerts`]: the alert list and acknowledgement.
//! - [`silences`]: the notifier's silences.
//! - [`ingest`]: `POST /api/ingest`, readings from gateways onto the input topic.
//! - [`rules`]: `/api/rules`, alert rules over the API (its rows are [`rules::RULE_ROUTES`]).
//! - [`session`]: dashboard login, logout and "who am I".
//! - [`schemas`]: the request and reply bodies the API document states.

mod alerts;
mod devices;
mod export;
mod ingest;
mod ops;
mod rules;
mod schemas;
mod session;
mod silences;

pub use ingest::IngestStats;
pub(super) use schemas::{reply_schema, request_body};

use axum::routing::{MethodFilter, MethodRouter, on};

use super::openapi::{In, Param, Reply, RouteDoc, Schema, Verb, json};
use super::state::{AppState, OpsState};
use crate::auth::{Access, Role};
use crate::store::MAX_PER_PAGE;
use axum::extract::FromRef;

/// What a route does; each has one handler.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Endpoint {
    /// `GET /health`.
    Health,
    /// `GET /ready`.
    Ready,
    /// `GET /config`.
    Config,
    /// `GET /metrics`.
    Metrics,
    /// `GET /api/devices`.
    Devices,
    /// `GET /api/devices/{id}`.
    Device,
    /// `GET /api/devices/{id}/history`.
    History,
    /// `GET /api/devices/{id}/export`.
    Export,
    /// `GET /api/alerts`.
    Alerts,
    /// `POST /api/alerts/{alert_id}/ack`.
    Acknowledge,
    /// `GET /api/silences`.
    Silences,
    /// `POST /api/silences`.
    CreateSilence,
    /// `DELETE /api/silences/{id}`.
    DeleteSilence,
    /// `POST /api/ingest`.
    Ingest,
    /// `GET /api/stats`.
    Stats,
    /// `GET /api/docs`.
    Docs,
    /// `GET /api/rules`.
    Rules,
    /// `POST /api/rules`.
    CreateRule,
    /// `PUT /api/rules/{id}`.
    PutRule,
    /// `DELETE /api/rules/{id}`.
    DeleteRule,
    /// `POST /api/login`.
    Login,
    /// `POST /api/logout`.
    Logout,
    /// `GET /api/session`.
    Session,
}

impl Endpoint {
    /// The OpenAPI `operationId`.
    pub fn name(self) -> &'static str {
        match self {
            Endpoint::Health => "health",
            Endpoint::Ready => "ready",
            Endpoint::Config => "config",
            Endpoint::Metrics => "metrics",
            Endpoint::Devices => "listDevices",
            Endpoint::Device => "getDevice",
            Endpoint::History => "getHistory",
            Endpoint::Export => "exportSamples",
            Endpoint::Alerts => "listAlerts",
            Endpoint::Acknowledge => "acknowledgeAlert",
            Endpoint::Silences => "listSilences",
            Endpoint::CreateSilence => "createSilence",
            Endpoint::DeleteSilence => "deleteSilence",
            Endpoint::Ingest => "ingestReadings",
            Endpoint::Stats => "stats",
            Endpoint::Docs => "openapi",
            Endpoint::Rules => "listRules",
            Endpoint::CreateRule => "createRule",
            Endpoint::PutRule => "putRule",
            Endpoint::DeleteRule => "deleteRule",
            Endpoint::Login => "login",
            Endpoint::Logout => "logout",
            Endpoint::Session => "session",
        }
    }

    /// Who may use it (see [`crate::auth`]). Exhaustive on purpose: a new route must say.
    pub fn access(self) -> Access {
        match self {
            Endpoint::Health
            | Endpoint::Ready
            | Endpoint::Docs
            | Endpoint::Login
            | Endpoint::Session => Access::Open,
            Endpoint::Logout => Access::SignedIn,
            Endpoint::Metrics
            | Endpoint::Stats
            | Endpoint::Devices
            | Endpoint::Device
            | Endpoint::History
            | Endpoint::Export
            | Endpoint::Alerts
            | Endpoint::Silences => Access::Role(Role::Viewer),
            Endpoint::Acknowledge
            | Endpoint::CreateSilence
            | Endpoint::DeleteSilence
            | Endpoint::Ingest => Access::Role(Role::Operator),
            Endpoint::Config => Access::Role(Role::Admin),
            // The rules of every processor: reading them is a viewer's, changing them an admin's.
            Endpoint::Rules => Access::Role(Role::Viewer),
            Endpoint::CreateRule | Endpoint::PutRule | Endpoint::DeleteRule => {
                Access::Role(Role::Admin)
            }
        }
    }
}

/// Whether `endpoint` is about the process itself (health, readiness, configuration, metrics,
/// statistics, the API document) rather than the store's data.
pub(super) fn is_ops(endpoint: Endpoint) -> bool {
    matches!(
        endpoint,
        Endpoint::Health
            | Endpoint::Ready
            | Endpoint::Config
            | Endpoint::Metrics
            | Endpoint::Stats
            | Endpoint::Docs
    )
}

/// The handler of `route`, answering only its method.
pub(super) fn method_router(route: &RouteDoc) -> MethodRouter<AppState> {
    let m = verb_filter(route.verb);
    match route.endpoint {
        Endpoint::Devices => on(m, devices::list),
        Endpoint::Device => on(m, devices::one),
        Endpoint::History => on(m, devices::history),
        Endpoint::Export => on(m, export::export),
        Endpoint::Alerts => on(m, alerts::list),
        Endpoint::Acknowledge => on(m, alerts::acknowledge),
        Endpoint::Silences => on(m, silences::list),
        Endpoint::CreateSilence => on(m, silences::create),
        Endpoint::DeleteSilence => on(m, silences::delete),
        Endpoint::Ingest => on(m, ingest::ingest),
        Endpoint::Rules => on(m, rules::list),
        Endpoint::CreateRule => on(m, rules::create),
        Endpoint::PutRule => on(m, rules::put),
        Endpoint::DeleteRule => on(m, rules::delete),
        Endpoint::Login => on(m, session::login),
        Endpoint::Logout => on(m, session::logout),
        Endpoint::Session => on(m, session::session),
        _ => ops_method_router(route),
    }
}

/// The handler of an operations route, on any state the operations state can be taken from
/// (the full API's, or that of a role without a store). Other routes get none.
pub(super) fn ops_method_router<S>(route: &RouteDoc) -> MethodRouter<S>
where
    OpsState: FromRef<S>,
    S: Clone + Send + Sync + 'static,
{
    let m = verb_filter(route.verb);
    match route.endpoint {
        Endpoint::Health => on(m, ops::health),
        Endpoint::Ready => on(m, ops::ready),
        Endpoint::Config => on(m, ops::config),
        Endpoint::Metrics => on(m, ops::metrics),
        Endpoint::Stats => on(m, ops::stats),
        Endpoint::Docs => on(m, ops::docs),
        _ => MethodRouter::new(),
    }
}

fn verb_filter(verb: Verb) -> MethodFilter {
    match verb {
        Verb::Get => MethodFilter::GET,
        Verb::Post => MethodFilter::POST,
        Verb::Delete => MethodFilter::DELETE,
        Verb::Put => MethodFilter::PUT,
    }
}

/// Every route: [`ROUTES`], then the tables of the files that keep their own rows.
pub fn all_routes() -> impl Iterator<Item = &'static RouteDoc> {
    ROUTES.iter().chain(rules::RULE_ROUTES)
}

/// Range names and their length in ms, for `range=`.
pub(crate) const RANGES: &[(&str, i64)] = &[
    ("1m", 60_000),
    ("5m", 300_000),
    ("1h", 3_600_000),
    ("1d", 86_400_000),
    ("7d", 7 * 86_400_000),
    ("30d", 30 * 86_400_000),
];
/// The names of [`RANGES`], for the OpenAPI enum and error messages.
pub(crate) const RANGE_NAMES: &[&str] = &["1m", "5m", "1h", "1d", "7d", "30d"];
/// The device statuses, for `status=`.
pub(crate) const DEVICE_STATUSES: &[&str] = &["online", "offline", "fault"];
/// The alert statuses, for `status=`.
pub(crate) const ALERT_STATUSES: &[&str] = &["active", "acknowledged", "resolved"];
/// The alert severities, for `severity=`.
pub(crate) const SEVERITIES: &[&str] = &["low", "medium", "high", "critical"];
/// The history parameters, for `sensor=`.
pub(crate) const SENSORS: &[&str] = &[
    "temperature",
    "humidity",
    "pressure",
    "current",
    "battery",
    "signal_strength",
];

const fn query(name: &'static str, schema: Schema, description: &'static str) -> Param {
    Param {
        name,
        location: In::Query,
        required: false,
        schema,
        description,
    }
}

const DEVICE_ID: Param = Param {
    name: "id",
    location: In::Path,
    required: true,
    schema: Schema::Text,
    description: "Device id, e.g. `device_001`.",
};
const RANGE: Param = query(
    "range",
    Schema::OneOf(RANGE_NAMES),
    "Length of the window (default 1h): it ends at `to` (default now), or starts at `from`. \
     At most two of `from`, `to` and `range` (400 otherwise).",
);
const FROM: Param = query(
    "from",
    Schema::Integer {
        min: 0,
        max: devices::MAX_TIME_MS,
    },
    "Start, Unix ms, inclusive. Alone: from then until now. Not after `to` (400 otherwise).",
);
const TO: Param = query(
    "to",
    Schema::Integer {
        min: 0,
        max: devices::MAX_TIME_MS,
    },
    "End, Unix ms, inclusive. Alone: the `range` (default 1h) ending then.",
);

const BAD_PARAM: Reply = json(400, "A parameter has a value outside what it accepts.");
const NO_DEVICE: Reply = json(404, "No reading of this device was ever recorded.");

/// Every route of the API. Paths are a contract (SPEC §5).
pub const ROUTES: &[RouteDoc] = &[
    RouteDoc {
        verb: Verb::Get,
        path: "/health",
        endpoint: Endpoint::Health,
        summary: "Liveness: the process answers.",
        params: &[],
        replies: &[json(200, "`{\"status\":\"ok\"}`.")],
    },
    RouteDoc {
        verb: Verb::Get,
        path: "/ready",
        endpoint: Endpoint::Ready,
        summary: "Readiness: the message transport (embedded bus or Kafka) is reachable.",
        params: &[],
        replies: &[
            json(200, "Ready."),
            json(503, "The transport is closed or unreachable."),
        ],
    },
    RouteDoc {
        verb: Verb::Get,
        path: "/config",
        endpoint: Endpoint::Config,
        summary: "The effective configuration, secrets shown as `***`; the alert rules in force (defaults, API, file) as `alerts.rules: [{id, source, rule}]`, scopes included.",
        params: &[],
        replies: &[json(200, "The configuration, laid out like iiot.toml.")],
    },
    RouteDoc {
        verb: Verb::Get,
        path: "/metrics",
        endpoint: Endpoint::Metrics,
        summary: "Prometheus metrics (text exposition format 0.0.4).",
        params: &[],
        replies: &[Reply {
            status: 200,
            description: "Metrics.",
            media: &["text/plain"],
        }],
    },
    RouteDoc {
        verb: Verb::Get,
        path: "/api/devices",
        endpoint: Endpoint::Devices,
        summary: "Devices with status, location and latest values; filtered and paged, in natural id order.",
        params: &[
            query("building", Schema::Text, "Exact building name."),
            query(
                "floor",
                Schema::Integer {
                    min: i32::MIN as i64,
                    max: i32::MAX as i64,
                },
                "Exact floor.",
            ),
            query(
                "status",
                Schema::OneOf(DEVICE_STATUSES),
                "Only devices in this status.",
            ),
            query(
                "q",
                Schema::Text,
                "Substring of device id, room, building or model (ASCII case-insensitive).",
            ),
            query(
                "page",
                Schema::Integer {
                    min: 1,
                    max: i64::MAX,
                },
                "Page number, from 1 (default 1).",
            ),
            query(
                "per_page",
                Schema::Integer {
                    min: 1,
                    max: MAX_PER_PAGE as i64,
                },
                "Devices per page (default 100).",
            ),
        ],
        replies: &[json(200, "`{items, total, page, per_page}`."), BAD_PARAM],
    },
    RouteDoc {
        verb: Verb::Get,
        path: "/api/devices/{id}",
        endpoint: Endpoint::Device,
        summary: "One device, with its full latest reading under `latest`.",
        params: &[DEVICE_ID],
        replies: &[json(200, "The device."), NO_DEVICE],
    },
    RouteDoc {
        verb: Verb::Get,
        path: "/api/devices/{id}/history",
        endpoint: Endpoint::History,
        summary: "One sensor over a time range, downsampled on the server to at most `points` buckets of min/max/avg/count.",
        params: &[
            DEVICE_ID,
            query(
                "sensor",
                Schema::OneOf(SENSORS),
                "The parameter (default temperature).",
            ),
            RANGE,
            FROM,
            TO,
            query(
                "points",
                Schema::Integer {
                    min: 1,
                    max: crate::store::MAX_POINTS as i64,
                },
                "Most points returned (default 300). Empty buckets are left out.",
            ),
        ],
        replies: &[
            json(
                200,
                "`{device_id, sensor, unit, from, to, points: [{t, min, max, avg, count}]}`.",
            ),
            BAD_PARAM,
            NO_DEVICE,
        ],
    },
    RouteDoc {
        verb: Verb::Get,
        path: "/api/devices/{id}/export",
        endpoint: Endpoint::Export,
        summary: "Raw samples of one device, streamed as CSV or a JSON array (raw retention only).",
        params: &[
            DEVICE_ID,
            query(
                "format",
                Schema::OneOf(&["csv", "json"]),
                "Body format (default csv).",
            ),
            RANGE,
            FROM,
            TO,
        ],
        replies: &[
            Reply {
                status: 200,
                description: "One row per sample: timestamp,temperature,humidity,pressure,current,battery,signal_strength,switch_on.",
                media: &["text/csv", "application/json"],
            },
            BAD_PARAM,
            NO_DEVICE,
        ],
    },
    RouteDoc {
        verb: Verb::Get,
        path: "/api/alerts",
        endpoint: Endpoint::Alerts,
        summary: "Open and recently resolved alerts, newest first.",
        params: &[
            query(
                "status",
                Schema::OneOf(ALERT_STATUSES),
                "Only alerts in this status.",
            ),
            query(
                "severity",
                Schema::OneOf(SEVERITIES),
                "Only alerts of this severity.",
            ),
            query("device_id", Schema::Text, "Only alerts about this device."),
            query(
                "limit",
                Schema::Integer {
                    min: 1,
                    max: crate::store::MAX_ALERTS_LISTED as i64,
                },
                "At most this many (default 1000).",
            ),
        ],
        replies: &[
            json(
                200,
                "`{items: [alert…]}` (alerts as on the alerts topic; while silences exist each also carries `silenced`: a silence holds its notifications back now).",
            ),
            BAD_PARAM,
        ],
    },
    RouteDoc {
        verb: Verb::Post,
        path: "/api/alerts/{alert_id}/ack",
        endpoint: Endpoint::Acknowledge,
        summary: "Acknowledge an open alert; the acknowledged alert is published and returned.",
        params: &[Param {
            name: "alert_id",
            location: In::Path,
            required: true,
            schema: Schema::Text,
            description: "The alert id.",
        }],
        replies: &[
            json(200, "The alert, now `acknowledged`."),
            json(404, "No open alert has this id."),
            json(409, "Already acknowledged."),
            json(503, "The processor did not answer in time or is stopped."),
        ],
    },
    RouteDoc {
        verb: Verb::Post,
        path: "/api/ingest",
        endpoint: Endpoint::Ingest,
        summary: "Readings from a gateway: a JSON array of readings, or NDJSON (one per line). Each valid reading is published onto the input topic, keyed by its device id, and judged by the processors like any other; the answer comes once the transport holds them.",
        params: &[],
        replies: &[
            json(
                202,
                "`{accepted: N, rejected: [{index, reason, detail}]}`: `index` counts array items, or non-blank NDJSON lines, from 0; `reason` is a dead-letter reason (`malformed_json`, `schema`, `out_of_range`, …). Rejected readings are not published.",
            ),
            json(400, "The body starts with `[` but is not a JSON array."),
            json(413, "The body is larger than INGEST_MAX_BODY_BYTES."),
            json(
                503,
                "The message transport did not take the readings; send them again.",
            ),
        ],
    },
    RouteDoc {
        verb: Verb::Get,
        path: "/api/silences",
        endpoint: Endpoint::Silences,
        summary: "The notifier's silences, oldest first, each with `active` (in force now) and `expired`.",
        params: &[],
        replies: &[
            json(200, "`{items: [silence…]}`."),
            json(503, "This process sends no notifications."),
        ],
    },
    RouteDoc {
        verb: Verb::Post,
        path: "/api/silences",
        endpoint: Endpoint::CreateSilence,
        summary: "Create a silence: JSON `{matchers: {severity, alert_type, building, floor, model, device_id}, starts_at, ends_at, schedule: {days, start, end, tz}, comment, created_by}` (times in Unix ms; `ends_at` or `schedule` required). Matching alerts are recorded and shown but not notified; those still open when it ends are notified then.",
        params: &[],
        replies: &[
            json(201, "The silence, with its `id`."),
            json(
                400,
                "The body is not a valid silence; `error` says which field.",
            ),
            json(413, "The body is larger than 64 KiB."),
            json(503, "This process sends no notifications."),
        ],
    },
    RouteDoc {
        verb: Verb::Delete,
        path: "/api/silences/{id}",
        endpoint: Endpoint::DeleteSilence,
        summary: "Delete (expire) a silence.",
        params: &[Param {
            name: "id",
            location: In::Path,
            required: true,
            schema: Schema::Text,
            description: "The silence id.",
        }],
        replies: &[
            Reply {
                status: 204,
                description: "Deleted.",
                media: &[],
            },
            json(404, "No silence has this id."),
            json(503, "This process sends no notifications."),
        ],
    },
    RouteDoc {
        verb: Verb::Post,
        path: "/api/login",
        endpoint: Endpoint::Login,
        summary: "Signs a user in: a JSON body `{username, password}`; sets the session cookie and answers `{user, role, csrf_token, expires_in_s}`. State-changing requests of the session must send the CSRF token in `X-CSRF-Token`.",
        params: &[],
        replies: &[
            json(200, "Signed in."),
            json(400, "The body is not `{username, password}`."),
            json(401, "Wrong user name or password."),
            json(503, "Too many logins at once."),
        ],
    },
    RouteDoc {
        verb: Verb::Post,
        path: "/api/logout",
        endpoint: Endpoint::Logout,
        summary: "Ends the session and clears its cookie.",
        params: &[],
        replies: &[json(200, "`{\"signed_out\": true}`.")],
    },
    RouteDoc {
        verb: Verb::Get,
        path: "/api/session",
        endpoint: Endpoint::Session,
        summary: "Who the request is: `{user, role, via, csrf_token?}` (`via`: anonymous, token or session); `{user: null, via: null, sign_in: true}` when it must sign in first.",
        params: &[],
        replies: &[json(
            200,
            "The signed-in user, token, anonymous access, or that a sign-in is needed.",
        )],
    },
    RouteDoc {
        verb: Verb::Get,
        path: "/api/stats",
        endpoint: Endpoint::Stats,
        summary: "Live statistics: throughput, latency percentiles, dead letters, devices by status, alerts, store memory, connections.",
        params: &[],
        replies: &[json(200, "Statistics.")],
    },
    RouteDoc {
        verb: Verb::Get,
        path: "/api/docs",
        endpoint: Endpoint::Docs,
        summary: "This OpenAPI document.",
        params: &[],
        replies: &[json(200, "OpenAPI 3.0 document.")],
    },
];

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn each_route_and_endpoint_appears_once() {
        let routes: HashSet<_> = ROUTES.iter().map(|r| (r.verb, r.path)).collect();
        let endpoints: HashSet<_> = ROUTES.iter().map(|r| r.endpoint).collect();
        assert_eq!(routes.len(), ROUTES.len());
        assert_eq!(endpoints.len(), ROUTES.len());
    }

    #[test]
    fn path_parameters_are_documented_and_nothing_else_is_a_path_parameter() {
        for r in ROUTES {
            let in_path: Vec<_> = r
                .path
                .split('/')
                .filter_map(|s| s.strip_prefix('{')?.strip_suffix('}'))
                .collect();
            let documented: Vec<_> = r
                .params
                .iter()
                .filter(|p| p.location == In::Path)
                .map(|p| p.name)
                .collect();
            assert_eq!(in_path, documented, "{}", r.path);
        }
    }

    #[test]
    fn every_json_success_reply_has_a_schema_and_every_body_taking_route_a_request_body() {
        // schemathesis checks replies against these schemas: a route without one is unchecked.
        for r in ROUTES {
            for reply in r.replies {
                if reply.status < 400 && reply.media == ["application/json"] {
                    assert!(
                        reply_schema(r.endpoint, reply.status).is_some(),
                        "{} {}",
                        r.path,
                        reply.status
                    );
                }
            }
            let takes_body = matches!(
                r.endpoint,
                Endpoint::CreateSilence
                    | Endpoint::Ingest
                    | Endpoint::Login
                    | Endpoint::CreateRule
                    | Endpoint::PutRule
            );
            assert_eq!(request_body(r.endpoint).is_some(), takes_body, "{}", r.path);
        }
    }

    #[test]
    fn week_and_month_ranges_are_seven_and_thirty_days() {
        let ms = |name| RANGES.iter().find(|(n, _)| *n == name).map(|(_, ms)| *ms);
        assert_eq!(ms("1d"), Some(86_400_000));
        assert_eq!(ms("7d"), Some(604_800_000));
        assert_eq!(ms("30d"), Some(2_592_000_000));
        // Longest last, so the list reads as a scale.
        assert!(RANGES.windows(2).all(|w| w[0].1 < w[1].1));
    }

    #[test]
    fn range_names_match_the_documented_enum() {
        let names: Vec<_> = RANGES.iter().map(|(n, _)| *n).collect();
        assert_eq!(names, RANGE_NAMES);
        let sensors: Vec<_> = iiot_model::Parameter::ALL.map(|p| p.as_str()).to_vec();
        assert_eq!(sensors, SENSORS);
        let statuses: Vec<_> = crate::store::DeviceStatus::ALL.map(|s| s.as_str()).to_vec();
        assert_eq!(statuses, DEVICE_STATUSES);
        let severities: Vec<_> = iiot_model::Severity::ALL.map(|s| s.as_str()).to_vec();
        assert_eq!(severities, SEVERITIES);
    }
}
