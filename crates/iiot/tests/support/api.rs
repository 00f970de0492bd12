//! The HTTP API in process, through `app().oneshot(..)`: a fixture with a real store on the
//! embedded bus, request helpers, and store fillers.

use std::sync::{Arc, RwLock};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use iiot::config::Config;
use iiot::http::app;
use iiot::processor::ProcessorStats;
use iiot::processor::run::Command;
use iiot::store::Store;
use iiot_model::Limits;
use iiot_transport::Bus;
use serde_json::Value;
use tokio::sync::mpsc;
use tower::ServiceExt;

use super::readings::{SITE_A, Site, Values, reading_json};
use super::{StateParts, app_state, bus};

pub struct Fixture {
    pub app: Router,
    pub store: Arc<RwLock<Store>>,
    pub stats: Arc<ProcessorStats>,
    pub bus: Bus,
    /// Keeps the command queue open for tests that do not acknowledge.
    pub _commands: Option<mpsc::Receiver<Command>>,
}

/// The API over `bus`, with `commands` going to whatever processor the test provides.
pub fn fixture_with(
    bus: Bus,
    commands: mpsc::Sender<Command>,
    stats: Arc<ProcessorStats>,
) -> Fixture {
    let parts = StateParts {
        stats: stats.clone(),
        ..StateParts::new(Arc::new(bus.clone()), commands)
    };
    let store = parts.store.clone();
    Fixture {
        app: app(app_state(parts)),
        store,
        stats,
        bus,
        _commands: None,
    }
}

/// The API over a default bus, its commands going to `commands`.
pub fn fixture_commanding(commands: mpsc::Sender<Command>) -> Fixture {
    fixture_with(
        bus(&Config::default()),
        commands,
        Arc::new(ProcessorStats::default()),
    )
}

/// The API over a default bus, without a processor (commands are queued, never answered).
pub fn fixture() -> Fixture {
    let (tx, rx) = mpsc::channel(8);
    let mut f = fixture_commanding(tx);
    f._commands = Some(rx);
    f
}

/// [`fixture`] with the store holding the fleet of [`fill_fleet`].
pub fn fleet_fixture() -> Fixture {
    let f = fixture();
    fill_fleet(&f.store);
    f
}

pub async fn call(app: &Router, method: Method, uri: &str) -> (StatusCode, HeaderMap, Bytes) {
    let request = Request::builder()
        .method(method)
        .uri(uri)
        .body(Body::empty())
        .expect("request");
    let response = app.clone().oneshot(request).await.expect("infallible");
    let (parts, body) = response.into_parts();
    let bytes = axum::body::to_bytes(body, usize::MAX).await.expect("body");
    (parts.status, parts.headers, bytes)
}

/// `method uri` with `body` as JSON; the answer's status and JSON (`null` if empty).
pub async fn send_json(
    app: &Router,
    method: Method,
    uri: &str,
    body: &Value,
) -> (StatusCode, Value) {
    let request = Request::builder()
        .method(method)
        .uri(uri)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_string()))
        .expect("request");
    let response = app.clone().oneshot(request).await.expect("infallible");
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .expect("body");
    let value = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).expect("a JSON answer")
    };
    (status, value)
}

pub async fn get(app: &Router, uri: &str) -> (StatusCode, Value) {
    let (status, headers, body) = call(app, Method::GET, uri).await;
    assert_eq!(
        headers[header::CONTENT_TYPE],
        "application/json",
        "{uri} answers JSON"
    );
    let value = serde_json::from_slice(&body).expect("JSON body");
    (status, value)
}

/// Asserts a 400 whose JSON error names `param`.
pub async fn bad_param(app: &Router, uri: &str, param: &str) {
    let (status, body) = get(app, uri).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{uri}: {body}");
    assert_eq!(body["parameter"], param, "{uri}: {body}");
    assert!(body["error"].as_str().expect("message").contains(param));
}

/// Decodes `json` as the processor would and records it, received at `received_ms`.
pub fn record(store: &RwLock<Store>, json: &str, received_ms: i64) {
    let reading =
        iiot_model::decode(json.as_bytes(), received_ms, &Limits::default()).expect("valid");
    assert!(store.write().expect("lock").record(&reading, received_ms));
}

/// device_001..device_006: 001–004 in A栋 floor 3 (004 with a faulty temperature sensor),
/// 005 in B栋 floor 1, 006 silent for a minute.
pub fn fill_fleet(store: &RwLock<Store>) -> i64 {
    let now = iiot::now_ms();
    let b = Site {
        building: "B栋",
        floor: 1,
        room: "101",
        temperature_status: "normal",
    };
    let fault = Site {
        temperature_status: "fault",
        ..SITE_A
    };
    for n in 1..=6u64 {
        let id = format!("device_{n:03}");
        let (site, received) = match n {
            4 => (fault, now),
            5 => (b, now),
            6 => (SITE_A, now - 60_000),
            _ => (SITE_A, now),
        };
        record(
            store,
            &reading_json(&id, 1, received - 100, Values::of(n), site),
            received,
        );
    }
    now
}

/// `n` readings of `id`, one a second, the last one at `end`; returns their event times.
pub fn fill_series(store: &RwLock<Store>, id: &str, n: u64, end: i64) -> Vec<i64> {
    let mut times = Vec::new();
    for i in 0..n {
        let t = end - (n - 1 - i) as i64 * 1_000;
        record(
            store,
            &reading_json(id, i + 1, t, Values::of(i), SITE_A),
            end,
        );
        times.push(t);
    }
    times
}

/// The device ids of a device list page.
pub fn ids(list: &Value) -> Vec<&str> {
    list["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|d| d["device_id"].as_str().expect("id"))
        .collect()
}
