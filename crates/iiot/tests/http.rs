//! The HTTP API through `app().oneshot(..)`: a real store filled with decoded readings, the
//! embedded bus as transport, and (for acknowledgements) a real processor on that bus.
//! Every route of the table is exercised, with its 400/404 answers; exports are parsed back.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::Ordering;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use futures::StreamExt;
use iiot::config::Config;
use iiot::http::metrics::METRICS;
use iiot::http::{AppState, ROUTES, app};
use iiot::pipeline::{Embedded, bus_for};
use iiot::processor::ProcessorStats;
use iiot::processor::run::Command;
use iiot::store::{Store, StoreConfig};
use iiot_model::{Alert, AlertStatus, InvalidReason, Limits};
use iiot_transport::{Bus, Transport};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tower::ServiceExt;

/// The values of reading number `i` of the test series (two decimals, as devices send them).
#[derive(Debug, Clone, Copy, PartialEq)]
struct Values {
    temperature: f64,
    humidity: f64,
    pressure: f64,
    current: f64,
    battery: i64,
    signal: i64,
    on: bool,
}

impl Values {
    fn of(i: u64) -> Values {
        Values {
            temperature: 20.0 + (i % 50) as f64 * 0.25,
            humidity: 40.0 + (i % 30) as f64 * 0.5,
            pressure: 1000.0 + (i % 100) as f64 * 0.25,
            current: 1.0 + (i % 20) as f64 * 0.1,
            battery: 50 + (i % 50) as i64,
            signal: -40 - (i % 40) as i64,
            on: i % 3 >= 1,
        }
    }

    fn as_row(&self) -> [f64; 6] {
        [
            self.temperature,
            self.humidity,
            self.pressure,
            self.current,
            self.battery as f64,
            self.signal as f64,
        ]
    }
}

/// Where a device is and how its temperature sensor feels.
#[derive(Clone, Copy)]
struct Site {
    building: &'static str,
    floor: i32,
    room: &'static str,
    temperature_status: &'static str,
}

const SITE_A: Site = Site {
    building: "A栋",
    floor: 3,
    room: "301",
    temperature_status: "normal",
};

fn reading_json(id: &str, seq: u64, t: i64, v: Values, site: Site) -> String {
    format!(
        r#"{{"device_id":"{id}","seq":{seq},"timestamp":{t},
        "location":{{"building":"{}","floor":{},"room":"{}"}},
        "sensors":{{"temperature":{{"value":{:.2},"unit":"°C","status":"{}"}},
          "humidity":{{"value":{:.2},"unit":"%","status":"normal"}},
          "pressure":{{"value":{:.2},"unit":"hPa","status":"normal"}},
          "switch_status":{{"value":{},"status":"{}"}},
          "current":{{"value":{:.2},"unit":"A","status":"normal"}}}},
        "device_info":{{"model":"IOT-SENSOR-V2","firmware":"1.2.3","battery":{},"signal_strength":{}}}}}"#,
        site.building,
        site.floor,
        site.room,
        v.temperature,
        site.temperature_status,
        v.humidity,
        v.pressure,
        v.on,
        if v.on { "on" } else { "off" },
        v.current,
        v.battery,
        v.signal,
    )
}

/// Decodes `json` as the processor would and records it, received at `received_ms`.
fn record(store: &RwLock<Store>, json: &str, received_ms: i64) {
    let reading =
        iiot_model::decode(json.as_bytes(), received_ms, &Limits::default()).expect("valid");
    assert!(store.write().expect("lock").record(&reading, received_ms));
}

struct Fixture {
    app: Router,
    store: Arc<RwLock<Store>>,
    stats: Arc<ProcessorStats>,
    bus: Bus,
    /// Keeps the command queue open for tests that do not acknowledge.
    _commands: Option<mpsc::Receiver<Command>>,
}

fn fixture_with(bus: Bus, commands: mpsc::Sender<Command>, stats: Arc<ProcessorStats>) -> Fixture {
    let store = Arc::new(RwLock::new(Store::new(StoreConfig::default())));
    let state = AppState {
        store: store.clone(),
        commands,
        config: Arc::new(Config::default()),
        stats: stats.clone(),
        transport: Arc::new(bus.clone()),
        started: Instant::now(),
        hub: None,
        simulator: None,
    };
    Fixture {
        app: app(state),
        store,
        stats,
        bus,
        _commands: None,
    }
}

fn fixture() -> Fixture {
    let (tx, rx) = mpsc::channel(8);
    let mut f = fixture_with(
        bus_for(&Config::default()),
        tx,
        Arc::new(ProcessorStats::default()),
    );
    f._commands = Some(rx);
    f
}

async fn call(app: &Router, method: Method, uri: &str) -> (StatusCode, HeaderMap, Bytes) {
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

async fn get(app: &Router, uri: &str) -> (StatusCode, Value) {
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
async fn bad_param(app: &Router, uri: &str, param: &str) {
    let (status, body) = get(app, uri).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{uri}: {body}");
    assert_eq!(body["parameter"], param, "{uri}: {body}");
    assert!(body["error"].as_str().expect("message").contains(param));
}

#[tokio::test]
async fn health_ready_and_config() {
    let f = fixture();
    assert_eq!(
        get(&f.app, "/health").await,
        (StatusCode::OK, json!({"status": "ok"}))
    );
    let (status, _) = get(&f.app, "/ready").await;
    assert_eq!(status, StatusCode::OK);
    let (status, config) = get(&f.app, "/config").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(config, Config::default().redacted());
    assert_eq!(config["kafka"]["topic_device_data"], "device-data");

    f.bus.close();
    let (status, body) = get(&f.app, "/ready").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(body["error"].is_string());
}

/// device_001..device_006: 001–004 in A栋 floor 3 (004 with a faulty temperature sensor),
/// 005 in B栋 floor 1, 006 silent for a minute.
fn fill_fleet(store: &RwLock<Store>) -> i64 {
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

fn ids(list: &Value) -> Vec<&str> {
    list["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|d| d["device_id"].as_str().expect("id"))
        .collect()
}

#[tokio::test]
async fn device_list_filters_pages_and_shows_latest_values() {
    let f = fixture();
    fill_fleet(&f.store);
    let (status, all) = get(&f.app, "/api/devices").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(all["total"], 6);
    assert_eq!(
        (all["page"].clone(), all["per_page"].clone()),
        (json!(1), json!(100))
    );
    let first = &all["items"][0];
    let v = Values::of(1);
    assert_eq!(first["device_id"], "device_001");
    assert_eq!(first["status"], "online");
    assert_eq!(
        first["location"],
        json!({"building": "A栋", "floor": 3, "room": "301"})
    );
    assert_eq!(first["model"], "IOT-SENSOR-V2");
    assert_eq!(first["firmware"], "1.2.3");
    assert_eq!(first["battery"], v.battery);
    assert_eq!(first["signal_strength"], v.signal);
    assert_eq!(first["open_alerts"], 0);
    assert!(first["last_seen"].as_i64().expect("ms") > 1_600_000_000_000);
    assert_eq!(first["sensors"]["temperature"]["value"], v.temperature);
    assert_eq!(first["sensors"]["switch_status"]["value"], v.on);
    assert!(
        first.get("latest").is_none(),
        "the list carries sensors only"
    );

    let cases = [
        ("/api/devices?building=B栋", vec!["device_005"]),
        ("/api/devices?floor=1", vec!["device_005"]),
        ("/api/devices?status=fault", vec!["device_004"]),
        ("/api/devices?status=offline", vec!["device_006"]),
        (
            "/api/devices?status=online&building=A栋",
            vec!["device_001", "device_002", "device_003"],
        ),
        (
            "/api/devices?q=ICE_00",
            vec![
                "device_001",
                "device_002",
                "device_003",
                "device_004",
                "device_005",
                "device_006",
            ],
        ),
        ("/api/devices?q=101", vec!["device_005"]),
        (
            "/api/devices?per_page=2&page=2",
            vec!["device_003", "device_004"],
        ),
        ("/api/devices?per_page=4&page=3", vec![]),
        (
            "/api/devices?status=&building=&q=",
            vec![
                "device_001",
                "device_002",
                "device_003",
                "device_004",
                "device_005",
                "device_006",
            ],
        ),
    ];
    for (uri, expected) in cases {
        let uri = uri
            .replace("B栋", "B%E6%A0%8B")
            .replace("A栋", "A%E6%A0%8B");
        let (status, list) = get(&f.app, &uri).await;
        assert_eq!(status, StatusCode::OK, "{uri}");
        assert_eq!(ids(&list), expected, "{uri}");
    }
    let (_, paged) = get(&f.app, "/api/devices?per_page=2&page=2").await;
    assert_eq!(
        (paged["total"].clone(), paged["page"].clone()),
        (json!(6), json!(2))
    );

    bad_param(&f.app, "/api/devices?status=sleeping", "status").await;
    bad_param(&f.app, "/api/devices?floor=third", "floor").await;
    bad_param(&f.app, "/api/devices?floor=99999999999", "floor").await;
    bad_param(&f.app, "/api/devices?page=0", "page").await;
    bad_param(&f.app, "/api/devices?page=-1", "page").await;
    bad_param(&f.app, "/api/devices?per_page=1001", "per_page").await;
    bad_param(&f.app, "/api/devices?per_page=1e3", "per_page").await;
}

#[tokio::test]
async fn one_device_with_its_latest_reading_or_a_json_404() {
    let f = fixture();
    fill_fleet(&f.store);
    let (status, dev) = get(&f.app, "/api/devices/device_004").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(dev["device_id"], "device_004");
    assert_eq!(dev["status"], "fault");
    assert_eq!(dev["latest"]["seq"], 1);
    assert_eq!(dev["latest"]["device_id"], "device_004");
    assert_eq!(dev["latest"]["sensors"]["temperature"]["status"], "fault");
    assert_eq!(dev["latest"]["device_info"]["model"], "IOT-SENSOR-V2");
    assert_eq!(dev["sensors"], dev["latest"]["sensors"]);

    let (status, body) = get(&f.app, "/api/devices/device_999").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(
        body,
        json!({"error": "unknown device", "device_id": "device_999"})
    );
}

/// `n` readings of `id`, one a second, the last one at `end`; returns their event times.
fn fill_series(store: &RwLock<Store>, id: &str, n: u64, end: i64) -> Vec<i64> {
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

#[tokio::test]
async fn history_is_downsampled_to_at_most_the_points_asked_and_summarises_right() {
    let f = fixture();
    let end = iiot::now_ms() - 1_000;
    let times = fill_series(&f.store, "device_001", 120, end);
    let (from, to) = (times[0], end);
    let uri =
        format!("/api/devices/device_001/history?sensor=temperature&from={from}&to={to}&points=12");
    let (status, h) = get(&f.app, &uri).await;
    assert_eq!(status, StatusCode::OK, "{h}");
    assert_eq!(h["device_id"], "device_001");
    assert_eq!(h["sensor"], "temperature");
    assert_eq!(
        (h["from"].as_i64(), h["to"].as_i64()),
        (Some(from), Some(to))
    );
    let points = h["points"].as_array().expect("points");
    assert!(!points.is_empty() && points.len() <= 12, "{}", points.len());
    let temps: Vec<f64> = (0..120).map(|i| Values::of(i).temperature).collect();
    let count: u64 = points
        .iter()
        .map(|p| p["count"].as_u64().expect("count"))
        .sum();
    assert_eq!(count, 120);
    let min = points
        .iter()
        .map(|p| p["min"].as_f64().expect("min"))
        .fold(f64::MAX, f64::min);
    let max = points
        .iter()
        .map(|p| p["max"].as_f64().expect("max"))
        .fold(f64::MIN, f64::max);
    assert_eq!(min, temps.iter().copied().fold(f64::MAX, f64::min));
    assert_eq!(max, temps.iter().copied().fold(f64::MIN, f64::max));
    let weighted: f64 = points
        .iter()
        .map(|p| p["avg"].as_f64().expect("avg") * p["count"].as_f64().expect("count"))
        .sum();
    let mean = temps.iter().sum::<f64>() / 120.0;
    assert!(
        (weighted / 120.0 - mean).abs() < 1e-6,
        "{} vs {mean}",
        weighted / 120.0
    );
    // Buckets are in time order and inside the range.
    let starts: Vec<i64> = points.iter().map(|p| p["t"].as_i64().expect("t")).collect();
    assert!(starts.windows(2).all(|w| w[0] < w[1]));
    assert!(starts[0] <= from && *starts.last().expect("one") <= to);

    // One point per reading when enough are asked for; each point is the reading itself.
    let uri =
        format!("/api/devices/device_001/history?sensor=battery&from={from}&to={to}&points=10000");
    let (_, h) = get(&f.app, &uri).await;
    let points = h["points"].as_array().expect("points");
    assert_eq!(points.len(), 120);
    for (i, p) in points.iter().enumerate() {
        let b = Values::of(i as u64).battery as f64;
        assert_eq!(
            (p["min"].as_f64(), p["max"].as_f64(), p["avg"].as_f64()),
            (Some(b), Some(b), Some(b))
        );
    }

    // A named range ending now, default sensor and points.
    let (status, h) = get(&f.app, "/api/devices/device_001/history?range=5m").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(h["sensor"], "temperature");
    let points = h["points"].as_array().expect("points");
    assert!(!points.is_empty() && points.len() <= 300);
    assert_eq!(
        h["to"].as_i64().expect("to") - h["from"].as_i64().expect("from"),
        300_000
    );
    for sensor in [
        "humidity",
        "pressure",
        "current",
        "battery",
        "signal_strength",
    ] {
        let (status, h) = get(
            &f.app,
            &format!("/api/devices/device_001/history?range=1m&sensor={sensor}"),
        )
        .await;
        assert_eq!(
            (status, h["sensor"].as_str()),
            (StatusCode::OK, Some(sensor))
        );
    }

    let base = "/api/devices/device_001/history";
    bad_param(&f.app, &format!("{base}?sensor=voltage"), "sensor").await;
    bad_param(&f.app, &format!("{base}?range=2h"), "range").await;
    bad_param(&f.app, &format!("{base}?points=0"), "points").await;
    bad_param(&f.app, &format!("{base}?points=10001"), "points").await;
    bad_param(&f.app, &format!("{base}?points=many"), "points").await;
    bad_param(&f.app, &format!("{base}?from=yesterday&to=1"), "from").await;
    for query in [
        format!("from={to}&to={from}"),
        format!("from={from}"),
        format!("to={to}"),
        format!("range=1h&from={from}&to={to}"),
    ] {
        let (status, body) = get(&f.app, &format!("{base}?{query}")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}: {body}");
        assert!(body["error"].is_string());
    }
    let (status, body) = get(&f.app, "/api/devices/nope/history?range=1h").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["device_id"], "nope");
}

#[tokio::test]
async fn csv_export_streams_every_sample_and_parses_back() {
    let f = fixture();
    let end = iiot::now_ms() - 1_000;
    // More than two chunks of 1,000, well inside the default 1 h range.
    let n = 2_500;
    let times = fill_series(&f.store, "device_007", n, end);

    let request = Request::builder()
        .uri("/api/devices/device_007/export?format=csv")
        .body(Body::empty())
        .expect("request");
    let response = f.app.clone().oneshot(request).await.expect("infallible");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()[header::CONTENT_TYPE],
        "text/csv; charset=utf-8"
    );
    assert_eq!(
        response.headers()[header::CONTENT_DISPOSITION],
        "attachment; filename=\"device_007.csv\""
    );
    assert!(
        response.headers().get(header::CONTENT_LENGTH).is_none(),
        "streamed, length unknown"
    );
    let mut pieces = response.into_body().into_data_stream();
    let mut text = Vec::new();
    let mut frames = 0;
    while let Some(piece) = pieces.next().await {
        text.extend_from_slice(&piece.expect("data"));
        frames += 1;
    }
    assert!(frames >= 4, "header plus three chunks, got {frames}");
    let text = String::from_utf8(text).expect("UTF-8");
    let mut lines = text.lines();
    assert_eq!(
        lines.next(),
        Some("timestamp,temperature,humidity,pressure,current,battery,signal_strength,switch_on")
    );
    let rows: Vec<&str> = lines.collect();
    assert_eq!(rows.len(), n as usize);
    for (i, row) in rows.iter().enumerate() {
        let cols: Vec<&str> = row.split(',').collect();
        assert_eq!(cols.len(), 8, "{row}");
        assert_eq!(cols[0].parse::<i64>().expect("timestamp"), times[i]);
        let v = Values::of(i as u64);
        for (col, expected) in cols[1..7].iter().zip(v.as_row()) {
            let got: f64 = col.parse().expect("number");
            assert!((got - expected).abs() < 1e-9, "row {i}: {row}");
        }
        assert_eq!(cols[7].parse::<bool>().expect("bool"), v.on, "row {i}");
    }

    // from/to selects exactly the samples inside, both ends included.
    let (from, to) = (times[10], times[19]);
    let (status, _, body) = call(
        &f.app,
        Method::GET,
        &format!("/api/devices/device_007/export?from={from}&to={to}"),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(String::from_utf8_lossy(&body).lines().count(), 1 + 10);

    bad_param(
        &f.app,
        "/api/devices/device_007/export?format=xml",
        "format",
    )
    .await;
    bad_param(&f.app, "/api/devices/device_007/export?range=1y", "range").await;
    let (status, body) = get(&f.app, "/api/devices/device_007/export?from=5&to=1").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (status, body) = get(&f.app, "/api/devices/nope/export").await;
    assert_eq!(
        (status, body["device_id"].as_str()),
        (StatusCode::NOT_FOUND, Some("nope"))
    );
}

#[tokio::test]
async fn json_export_is_one_array_of_samples() {
    let f = fixture();
    let end = iiot::now_ms() - 1_000;
    let n = 1_200;
    let times = fill_series(&f.store, "device_008", n, end);
    let (status, headers, body) = call(
        &f.app,
        Method::GET,
        "/api/devices/device_008/export?format=json&range=1h",
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers[header::CONTENT_TYPE], "application/json");
    assert_eq!(
        headers[header::CONTENT_DISPOSITION],
        "attachment; filename=\"device_008.json\""
    );
    let rows: Vec<Value> = serde_json::from_slice(&body).expect("a JSON array");
    assert_eq!(rows.len(), n as usize);
    for (i, row) in rows.iter().enumerate() {
        let v = Values::of(i as u64);
        assert_eq!(row["timestamp"], times[i]);
        assert_eq!(row["temperature"].as_f64(), Some(v.temperature));
        assert_eq!(row["pressure"].as_f64(), Some(v.pressure));
        assert_eq!(row["battery"].as_f64(), Some(v.battery as f64));
        assert_eq!(row["signal_strength"].as_f64(), Some(v.signal as f64));
        assert_eq!(row["switch_on"], v.on);
    }
    // An empty range is still a valid document.
    let (status, _, body) = call(
        &f.app,
        Method::GET,
        "/api/devices/device_008/export?format=json&from=1&to=2",
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        serde_json::from_slice::<Value>(&body).expect("JSON"),
        json!([])
    );
}

/// Waits for the next alert on `sub`.
async fn next_alert(sub: &mut dyn iiot_transport::Subscriber) -> Alert {
    let mut batch = Vec::new();
    let n = tokio::time::timeout(Duration::from_secs(10), sub.recv_batch(&mut batch, 1))
        .await
        .expect("an alert within 10 s")
        .expect("receive");
    assert_eq!(n, 1);
    sub.commit(&batch[0]).expect("commit");
    serde_json::from_slice(&batch[0].payload).expect("alert JSON")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_are_listed_filtered_and_acknowledged_through_the_processor() {
    let config = Config::default();
    let bus = bus_for(&config);
    let mut alerts_sub = bus
        .subscribe(&config.kafka.topic_alerts, "http-test")
        .await
        .expect("subscribe");
    let embedded = Embedded::start(&config, bus.clone())
        .await
        .expect("processor");
    let f = fixture_with(
        bus.clone(),
        embedded.commands.clone(),
        embedded.stats.clone(),
    );

    // An 85 °C reading raises temperature_high in the real processor.
    let now = iiot::now_ms();
    let hot = Values {
        temperature: 85.0,
        ..Values::of(1)
    };
    let json = reading_json("device_042", 1, now, hot, SITE_A);
    embedded
        .publisher()
        .publish(
            &config.kafka.topic_device_data,
            b"device_042",
            Bytes::from(json.clone()),
        )
        .await
        .expect("publish");
    let raised = next_alert(alerts_sub.as_mut()).await;
    assert_eq!(
        (raised.alert_type.as_str(), raised.status),
        ("temperature_high", AlertStatus::Active)
    );
    // What the server's consumer of the topics does: readings and alerts into the store.
    record(&f.store, &json, now);
    f.store.write().expect("lock").record_alert(&raised);

    let (status, list) = get(&f.app, "/api/alerts").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        list["items"],
        json!([serde_json::to_value(&raised).expect("json")])
    );
    let id = raised.alert_id.clone();
    for (query, expected) in [
        ("status=active", 1),
        ("status=resolved", 0),
        ("severity=high", 1),
        ("severity=low", 0),
        ("device_id=device_042", 1),
        ("device_id=device_001", 0),
        (
            "status=active&severity=high&device_id=device_042&limit=1",
            1,
        ),
    ] {
        let (status, list) = get(&f.app, &format!("/api/alerts?{query}")).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            list["items"].as_array().expect("items").len(),
            expected,
            "{query}"
        );
    }
    bad_param(&f.app, "/api/alerts?status=open", "status").await;
    bad_param(&f.app, "/api/alerts?severity=urgent", "severity").await;
    bad_param(&f.app, "/api/alerts?limit=0", "limit").await;
    let (_, dev) = get(&f.app, "/api/devices/device_042").await;
    assert_eq!(dev["open_alerts"], 1);

    // Acknowledge: 200 with the alert, then 409; an unknown id is 404.
    let ack = format!("/api/alerts/{id}/ack");
    let (status, _, body) = call(&f.app, Method::POST, &ack).await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    let acked: Alert = serde_json::from_slice(&body).expect("alert");
    assert_eq!(
        (acked.alert_id.as_str(), acked.status),
        (id.as_str(), AlertStatus::Acknowledged)
    );
    let published = next_alert(alerts_sub.as_mut()).await;
    assert_eq!(published, acked, "the acknowledgement is published");
    let (_, list) = get(&f.app, "/api/alerts?status=acknowledged").await;
    assert_eq!(
        list["items"][0]["alert_id"],
        id.as_str(),
        "the store shows it at once"
    );

    let (status, _, body) = call(&f.app, Method::POST, &ack).await;
    let body: Value = serde_json::from_slice(&body).expect("JSON");
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(body["alert_id"], id.as_str());
    let (status, _, body) = call(&f.app, Method::POST, "/api/alerts/alert_nope/ack").await;
    let body: Value = serde_json::from_slice(&body).expect("JSON");
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(
        body,
        json!({"error": "unknown alert", "alert_id": "alert_nope"})
    );
    let (status, _, _) = call(&f.app, Method::GET, &ack).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);

    assert_eq!(
        embedded.stats.alerts_acknowledged.load(Ordering::Relaxed),
        1
    );
    embedded.finish().await.expect("drained");
}

#[tokio::test]
async fn acknowledging_without_a_processor_is_503() {
    let (tx, rx) = mpsc::channel(1);
    drop(rx);
    let f = fixture_with(
        bus_for(&Config::default()),
        tx,
        Arc::new(ProcessorStats::default()),
    );
    let (status, _, body) = call(&f.app, Method::POST, "/api/alerts/a1/ack").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    let body: Value = serde_json::from_slice(&body).expect("JSON");
    assert!(body["error"].is_string());

    // A processor that takes the question but never answers: 503 after the timeout.
    let (tx, mut rx) = mpsc::channel(1);
    let f = fixture_with(
        bus_for(&Config::default()),
        tx,
        Arc::new(ProcessorStats::default()),
    );
    let hold = tokio::spawn(async move {
        let _held = rx.recv().await;
        std::future::pending::<()>().await;
    });
    tokio::time::pause();
    let (status, _, _) = call(&f.app, Method::POST, "/api/alerts/a1/ack").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    hold.abort();
}

#[tokio::test]
async fn stats_report_throughput_latency_dead_letters_and_devices() {
    let f = fixture();
    fill_fleet(&f.store);
    f.stats.processed.store(500, Ordering::Relaxed);
    f.stats.dead_letters[InvalidReason::Schema.index()].store(7, Ordering::Relaxed);
    f.stats.seq_gaps.store(3, Ordering::Relaxed);
    f.stats.alerts_open.store(2, Ordering::Relaxed);
    {
        let mut h = f.stats.latency_us.lock().expect("lock");
        for us in [1_000, 2_000, 3_000, 100_000] {
            h.record(us).expect("in range");
        }
    }
    let (status, s) = get(&f.app, "/api/stats").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(s["throughput"]["processed_total"], 500);
    assert!(s["throughput"]["per_second"].as_f64().expect("rate") > 0.0);
    assert_eq!(s["dead_letters"]["schema"], 7);
    assert_eq!(
        s["dead_letters"].as_object().expect("reasons").len(),
        InvalidReason::ALL.len()
    );
    assert_eq!(s["seq_gaps"], 3);
    assert_eq!(
        s["devices"],
        json!({"online": 4, "offline": 1, "fault": 1, "total": 6})
    );
    assert_eq!(s["alerts"]["open"], 2);
    assert_eq!(s["latency_ms"]["p50"], 2.0);
    assert_eq!(s["latency_ms"]["max"].as_f64().map(f64::round), Some(100.0));
    assert!(s["store"]["memory_bytes"].as_u64().expect("bytes") > 0);
    assert_eq!(s["websocket"]["connections"], 0);
    assert!(s["uptime_seconds"].as_f64().expect("uptime") >= 0.0);
}

#[tokio::test]
async fn metrics_are_prometheus_text_with_bounded_labels() {
    let f = fixture();
    fill_fleet(&f.store);
    f.stats.processed.store(42, Ordering::Relaxed);
    f.stats.dead_letters[InvalidReason::MalformedJson.index()].store(2, Ordering::Relaxed);
    let (status, headers, body) = call(&f.app, Method::GET, "/metrics").await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        headers[header::CONTENT_TYPE]
            .to_str()
            .expect("ascii")
            .starts_with("text/plain; version=0.0.4")
    );
    let text = String::from_utf8(body.to_vec()).expect("UTF-8");
    for m in METRICS {
        assert!(text.contains(&format!("# HELP {} ", m.name)), "{}", m.name);
        assert!(text.contains(&format!("# TYPE {} ", m.name)), "{}", m.name);
    }
    for line in [
        "iot_messages_total{status=\"success\"} 42",
        "iot_messages_total{status=\"failed\"} 2",
        "iot_dead_letters_total{reason=\"malformed_json\"} 2",
        "iot_sequence_gaps_total 0",
        "iot_active_devices_total 4",
        "iot_devices{status=\"offline\"} 1",
        "iot_alerts_open 0",
        "iot_websocket_connections_total 0",
    ] {
        assert!(text.lines().any(|l| l == line), "missing {line:?}");
    }
    for r in InvalidReason::ALL {
        assert!(text.contains(&format!(
            "iot_dead_letters_total{{reason=\"{}\"}}",
            r.as_str()
        )));
    }
    assert!(text.contains("iot_message_processing_duration_seconds{quantile=\"0.99\"}"));
    assert!(!text.contains("device_00"), "no device id in any label");
}

#[tokio::test]
async fn the_openapi_document_lists_every_served_route() {
    let f = fixture();
    let (status, doc) = get(&f.app, "/api/docs").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(doc["openapi"], "3.0.3");
    let paths = doc["paths"].as_object().expect("paths");
    let documented: BTreeSet<(String, String)> = paths
        .iter()
        .flat_map(|(p, ops)| {
            ops.as_object()
                .expect("operations")
                .keys()
                .map(move |m| (m.clone(), p.clone()))
        })
        .collect();
    let contract: BTreeSet<(String, String)> = [
        ("get", "/health"),
        ("get", "/ready"),
        ("get", "/metrics"),
        ("get", "/config"),
        ("get", "/api/devices"),
        ("get", "/api/devices/{id}"),
        ("get", "/api/devices/{id}/history"),
        ("get", "/api/devices/{id}/export"),
        ("get", "/api/alerts"),
        ("post", "/api/alerts/{alert_id}/ack"),
        ("get", "/api/stats"),
        ("get", "/api/docs"),
    ]
    .into_iter()
    .map(|(m, p)| (m.to_owned(), p.to_owned()))
    .collect();
    assert_eq!(documented, contract);
    let history = &paths["/api/devices/{id}/history"]["get"];
    let names: Vec<&str> = history["parameters"]
        .as_array()
        .expect("parameters")
        .iter()
        .map(|p| p["name"].as_str().expect("name"))
        .collect();
    assert_eq!(names, ["id", "sensor", "range", "from", "to", "points"]);
    assert!(history["responses"]["400"].is_object());

    // Every documented route is served: none falls through to the 404 fallback or a 405.
    let (tx, mut rx) = mpsc::channel(8);
    let answer = tokio::spawn(async move {
        while let Some(Command::Acknowledge { alert_id, reply }) = rx.recv().await {
            let _ = reply.send(Err(iiot::alerts::AckError::Unknown(alert_id)));
        }
    });
    let f = fixture_with(
        bus_for(&Config::default()),
        tx,
        Arc::new(ProcessorStats::default()),
    );
    for route in ROUTES {
        let uri = route
            .path
            .replace("{id}", "device_001")
            .replace("{alert_id}", "a1");
        let method =
            Method::from_bytes(route.verb.as_str().to_uppercase().as_bytes()).expect("method");
        let (status, _, body) = call(&f.app, method, &uri).await;
        assert_ne!(status, StatusCode::METHOD_NOT_ALLOWED, "{uri}");
        let fell_through =
            serde_json::from_slice::<Value>(&body).is_ok_and(|b| b["error"] == "not found");
        assert!(!fell_through, "{uri} is not routed");
    }
    drop(f);
    answer.abort();
}

#[tokio::test]
async fn unknown_paths_and_hostile_queries_get_json_errors_never_a_panic() {
    let f = fixture();
    fill_fleet(&f.store);
    let (status, body) = get(&f.app, "/api/nothing").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body, json!({"error": "not found", "path": "/api/nothing"}));
    let hostile = [
        "/api/devices?page=99999999999999999999999999",
        "/api/devices?floor=%ZZ",
        "/api/devices?per_page=%00",
        "/api/devices?page=18446744073709551615&per_page=1000",
        "/api/devices?q=%F0%28%8C%28",
        "/api/devices/device_001/history?from=-9223372036854775808&to=9223372036854775807&points=10000",
        "/api/devices/device_001/history?from=9223372036854775807&to=9223372036854775807",
        "/api/devices/device_001/export?from=-9223372036854775808&to=9223372036854775807",
        "/api/devices/device_001/history?range=1h&range=5m&&&=",
        "/api/alerts?limit=-1&status[]=x",
        "/api/devices/%FF%FE/history",
    ];
    let mut seen = HashMap::new();
    for uri in hostile {
        let (status, headers, body) = call(&f.app, Method::GET, uri).await;
        assert!(status.as_u16() < 500, "{uri}: {status}");
        if status != StatusCode::OK || !uri.contains("export") {
            assert_eq!(headers[header::CONTENT_TYPE], "application/json", "{uri}");
            serde_json::from_slice::<Value>(&body).expect("JSON");
        }
        seen.insert(uri, status);
    }
    assert_eq!(seen.len(), hostile.len());
}
