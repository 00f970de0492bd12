//! The service routes of the HTTP API through `app().oneshot(..)`: health, readiness and
//! config, alerts and their acknowledgement through a real processor on the embedded bus,
//! stats, `/metrics`, the OpenAPI document against the route table, and JSON errors for
//! unknown paths and hostile queries.

mod support;

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{Method, StatusCode, header};
use iiot::config::Config;
use iiot::http::ROUTES;
use iiot::http::metrics::METRICS;
use iiot::processor::run::Command;
use iiot_model::{Alert, AlertStatus, InvalidReason};
use serde_json::{Value, json};
use support::api::{
    bad_param, call, fixture, fixture_commanding, fixture_with, fleet_fixture, get, record,
};
use support::readings::{SITE_A, Values, reading_json};
use tokio::sync::mpsc;

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
    let (bus, mut alerts_sub, embedded) =
        support::start_pipeline_watching_alerts(&config, "http-test").await;
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
    let f = fixture_commanding(tx);
    let (status, _, body) = call(&f.app, Method::POST, "/api/alerts/a1/ack").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    let body: Value = serde_json::from_slice(&body).expect("JSON");
    assert!(body["error"].is_string());

    // A processor that takes the question but never answers: 503 after the timeout.
    let (tx, mut rx) = mpsc::channel(1);
    let f = fixture_commanding(tx);
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
    let f = fleet_fixture();
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
    let f = fleet_fixture();
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
        ("post", "/api/ingest"),
        ("get", "/api/silences"),
        ("post", "/api/silences"),
        ("delete", "/api/silences/{id}"),
        ("get", "/api/stats"),
        ("get", "/api/docs"),
        ("post", "/api/login"),
        ("post", "/api/logout"),
        ("get", "/api/session"),
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
        while let Some(Command::Acknowledge {
            alert_id, reply, ..
        }) = rx.recv().await
        {
            let _ = reply.send(Err(iiot::alerts::AckError::Unknown(alert_id)));
        }
    });
    let f = fixture_commanding(tx);
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
    let f = fleet_fixture();
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
