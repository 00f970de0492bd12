//! The device routes of the HTTP API through `app().oneshot(..)`, against a real store filled
//! with decoded readings: the device list with its filters and pages, one device, history
//! and exports (parsed back), with their 400/404 answers.

mod support;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use futures::StreamExt;
use serde_json::{Value, json};
use support::api::{bad_param, call, fill_series, fixture, fleet_fixture, get, ids};
use support::readings::Values;
use tower::ServiceExt;

#[tokio::test]
async fn device_list_filters_pages_and_shows_latest_values() {
    let f = fleet_fixture();
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

    const ALL_SIX: [&str; 6] = [
        "device_001",
        "device_002",
        "device_003",
        "device_004",
        "device_005",
        "device_006",
    ];
    let cases = [
        ("/api/devices?building=B栋", vec!["device_005"]),
        ("/api/devices?floor=1", vec!["device_005"]),
        ("/api/devices?status=fault", vec!["device_004"]),
        ("/api/devices?status=offline", vec!["device_006"]),
        (
            "/api/devices?status=online&building=A栋",
            vec!["device_001", "device_002", "device_003"],
        ),
        ("/api/devices?q=ICE_00", ALL_SIX.to_vec()),
        ("/api/devices?q=101", vec!["device_005"]),
        (
            "/api/devices?per_page=2&page=2",
            vec!["device_003", "device_004"],
        ),
        ("/api/devices?per_page=4&page=3", vec![]),
        ("/api/devices?status=&building=&q=", ALL_SIX.to_vec()),
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
    // The document says int64 (schemathesis sent 2^63 and got 200).
    bad_param(&f.app, "/api/devices?page=9223372036854775808", "page").await;
    let (status, last) = get(&f.app, "/api/devices?page=9223372036854775807").await;
    assert_eq!(status, StatusCode::OK, "{last}");
    assert_eq!(last["items"], json!([]));
    bad_param(&f.app, "/api/devices?per_page=1001", "per_page").await;
    bad_param(&f.app, "/api/devices?per_page=1e3", "per_page").await;
}

#[tokio::test]
async fn one_device_with_its_latest_reading_or_a_json_404() {
    let f = fleet_fixture();
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
    // A week and a month: the window is that long whatever history there is (here minutes).
    for (range, ms) in [("7d", 7 * 86_400_000), ("30d", 30 * 86_400_000)] {
        let (status, h) = get(
            &f.app,
            &format!("/api/devices/device_001/history?range={range}"),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{range}: {h}");
        assert_eq!(
            h["to"].as_i64().expect("to") - h["from"].as_i64().expect("from"),
            ms,
            "{range}"
        );
        let points = h["points"].as_array().expect("points");
        assert!(!points.is_empty() && points.len() <= 300, "{range}: {h}");
    }
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
    let (_, body) = get(&f.app, &format!("{base}?range=1w")).await;
    assert!(
        body["error"]
            .as_str()
            .expect("message")
            .contains("one of 1m, 5m, 1h, 1d, 7d, 30d"),
        "{body}"
    );
    bad_param(&f.app, &format!("{base}?points=0"), "points").await;
    bad_param(&f.app, &format!("{base}?points=10001"), "points").await;
    bad_param(&f.app, &format!("{base}?points=many"), "points").await;
    bad_param(&f.app, &format!("{base}?from=yesterday&to=1"), "from").await;
    // Beyond what a timestamp can be (bucket arithmetic would wrap around).
    bad_param(
        &f.app,
        &format!("{base}?from=-9223372036854775808&to=1"),
        "from",
    )
    .await;
    bad_param(
        &f.app,
        &format!("{base}?from=0&to=9223372036854775807"),
        "to",
    )
    .await;
    // One end alone: the other comes from `range` (default 1 h), or is now.
    for (query, window) in [
        (format!("from={from}"), (from, None)),
        (
            format!("from={from}&range=5m"),
            (from, Some(from + 300_000)),
        ),
        (format!("to={to}"), (to - 3_600_000, Some(to))),
        (format!("to={to}&range=1m"), (to - 60_000, Some(to))),
    ] {
        let (status, body) = get(&f.app, &format!("{base}?{query}")).await;
        assert_eq!(status, StatusCode::OK, "{query}: {body}");
        assert_eq!(body["from"], window.0, "{query}");
        match window.1 {
            Some(end) => assert_eq!(body["to"], end, "{query}"),
            // Until now: not before the request was made.
            None => assert!(body["to"].as_i64() >= Some(from), "{query}: {body}"),
        }
    }
    // A window that ends before it starts, or is over-determined, is refused.
    for query in [
        format!("from={to}&to={from}"),
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

    // A week or a month covers every raw sample there is.
    for range in ["7d", "30d"] {
        let (status, _, body) = call(
            &f.app,
            Method::GET,
            &format!("/api/devices/device_007/export?range={range}"),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{range}");
        let lines = String::from_utf8_lossy(&body).lines().count();
        assert_eq!(lines, 1 + n as usize, "{range}");
    }

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
