//! The WebSocket hub over real TCP: a tokio-tungstenite client against `axum::serve` on
//! 127.0.0.1:0. Every wait has a generous timeout and waits for a condition, never a fixed time.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::serve::ListenerExt;
use futures::{SinkExt, StreamExt};
use iiot::hub::{Hub, HubConfig, router};
use iiot::store::{Store, StoreConfig};
use iiot_model::Reading;
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{
    MaybeTlsStream, WebSocketStream, connect_async, connect_async_with_config,
};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

const WAIT: Duration = Duration::from_secs(20);

async fn start(cfg: HubConfig) -> (Arc<Hub>, String) {
    let hub = Hub::new(cfg);
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local addr");
    // As the real server must: without TCP_NODELAY small frames wait for delayed ACKs.
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    let app = router(hub.clone(), "/ws");
    tokio::spawn(async move { axum::serve(listener, app).await.expect("serve") });
    (hub, format!("ws://{addr}/ws"))
}

/// Connects and returns the socket and the welcome.
async fn connect(url: &str) -> (Ws, Value) {
    let (mut ws, _) = connect_async_with_config(url, None, true)
        .await
        .expect("upgrade");
    let welcome = recv(&mut ws).await;
    assert_eq!(welcome["type"], "welcome", "{welcome}");
    (ws, welcome)
}

/// Connects and subscribes to `device_ids`; the subscription is in force when this returns.
async fn subscribed(url: &str, device_ids: &[&str]) -> Ws {
    let (mut ws, _) = connect(url).await;
    send(
        &mut ws,
        json!({"type": "subscribe", "device_ids": device_ids}),
    )
    .await;
    sync(&mut ws).await;
    ws
}

/// The HTTP status of a refused upgrade.
async fn refused(request: impl IntoClientRequest + Unpin) -> u16 {
    match connect_async(request).await {
        Err(WsError::Http(response)) => response.status().as_u16(),
        Err(e) => panic!("expected an HTTP refusal, got {e}"),
        Ok(_) => panic!("expected an HTTP refusal, the upgrade succeeded"),
    }
}

/// The next server message as JSON, heartbeats skipped.
async fn recv(ws: &mut Ws) -> Value {
    loop {
        let msg = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("a message within the timeout")
            .expect("the connection is open")
            .expect("a good frame");
        match msg {
            Message::Text(text) => {
                let v: Value = serde_json::from_str(&text).expect("server sends JSON");
                if v["type"] != "heartbeat" {
                    return v;
                }
            }
            Message::Close(frame) => panic!("unexpected close: {frame:?}"),
            _ => {}
        }
    }
}

async fn send(ws: &mut Ws, v: Value) {
    ws.send(Message::text(v.to_string())).await.expect("send");
}

/// Pings and returns what arrived before the pong: the server has applied everything sent
/// before the ping when the pong arrives.
async fn sync(ws: &mut Ws) -> Vec<Value> {
    send(ws, json!({"type": "ping"})).await;
    let mut before = Vec::new();
    loop {
        let v = recv(ws).await;
        if v["type"] == "pong" {
            return before;
        }
        before.push(v);
    }
}

/// Reads until the server's close frame and returns its code.
async fn close_code(ws: &mut Ws) -> u16 {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let next = tokio::time::timeout_at(deadline, ws.next())
            .await
            .expect("a close frame within the timeout");
        match next {
            Some(Ok(Message::Close(Some(frame)))) => return frame.code.into(),
            Some(Ok(Message::Close(None))) => panic!("close frame without a code"),
            Some(Ok(_)) => {}
            Some(Err(e)) => panic!("connection failed before a close frame: {e}"),
            None => panic!("connection ended without a close frame"),
        }
    }
}

async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn reading(device: &str, seq: u64) -> Vec<u8> {
    format!(r#"{{"device_id":"{device}","seq":{seq},"sensors":{{"temperature":{{"value":21.5,"unit":"°C","status":"normal"}}}}}}"#)
        .into_bytes()
}

fn as_json(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes).expect("test payloads are JSON")
}

#[tokio::test]
async fn a_new_connection_is_welcomed_and_gets_no_data_before_subscribing() {
    let (hub, url) = start(HubConfig::default()).await;
    hub.publish_reading("device_001", &reading("device_001", 1));
    let (mut ws, welcome) = connect(&url).await;
    assert_eq!(welcome["epoch"], hub.epoch());
    assert_eq!(welcome["offset"], 1);
    assert_eq!(welcome["heartbeat_ms"], 15_000);
    assert_eq!(hub.connections(), 1);

    hub.publish_reading("device_001", &reading("device_001", 2));
    hub.publish_alert("device_001", br#"{"alert_id":"a1"}"#);
    assert_eq!(sync(&mut ws).await, Vec::<Value>::new());
    let pong = json!({"type": "ping"});
    send(&mut ws, pong).await;
    let pong = recv(&mut ws).await;
    assert_eq!(pong["type"], "pong");
    assert_eq!(pong["epoch"], hub.epoch());
    assert_eq!(pong["offset"], 3);
}

#[tokio::test]
async fn subscribers_get_only_their_devices_with_the_reading_as_payload() {
    let (hub, url) = start(HubConfig::default()).await;
    let mut ws = subscribed(&url, &["device_001", "device_003"]).await;

    for (device, seq) in [
        ("device_001", 1),
        ("device_002", 1),
        ("device_003", 1),
        ("device_001", 2),
    ] {
        hub.publish_reading(device, &reading(device, seq));
    }
    let mut got = Vec::new();
    for _ in 0..3 {
        let v = recv(&mut ws).await;
        assert_eq!(v["type"], "device_data");
        assert_eq!(v["epoch"], hub.epoch());
        got.push((v["offset"].as_u64().expect("offset"), v["payload"].clone()));
    }
    assert_eq!(
        got,
        [
            (1, as_json(&reading("device_001", 1))),
            (3, as_json(&reading("device_003", 1))),
            (4, as_json(&reading("device_001", 2))),
        ]
    );
    assert_eq!(
        sync(&mut ws).await,
        Vec::<Value>::new(),
        "nothing of device_002"
    );
}

#[tokio::test]
async fn subscribe_all_and_unsubscribe() {
    let (hub, url) = start(HubConfig::default()).await;
    let (mut ws, _) = connect(&url).await;
    send(&mut ws, json!({"type": "subscribe_all"})).await;
    sync(&mut ws).await;
    hub.publish_reading("device_001", &reading("device_001", 1));
    hub.publish_reading("device_777", &reading("device_777", 1));
    assert_eq!(recv(&mut ws).await["offset"], 1);
    assert_eq!(recv(&mut ws).await["offset"], 2);

    send(&mut ws, json!({"type": "unsubscribe_all"})).await;
    send(
        &mut ws,
        json!({"type": "subscribe", "device_ids": ["device_001", "device_002"]}),
    )
    .await;
    send(
        &mut ws,
        json!({"type": "unsubscribe", "device_ids": ["device_001"]}),
    )
    .await;
    sync(&mut ws).await;
    hub.publish_reading("device_001", &reading("device_001", 2));
    hub.publish_reading("device_777", &reading("device_777", 2));
    hub.publish_reading("device_002", &reading("device_002", 1));
    let v = recv(&mut ws).await;
    assert_eq!(
        (v["offset"].as_u64(), &v["payload"]["device_id"]),
        (Some(5), &json!("device_002"))
    );
    assert_eq!(sync(&mut ws).await, Vec::<Value>::new());
}

#[tokio::test]
async fn alerts_go_to_clients_of_that_device_or_of_all() {
    let (hub, url) = start(HubConfig::default()).await;
    let (mut one, _) = connect(&url).await;
    let (mut all, _) = connect(&url).await;
    let (mut other, _) = connect(&url).await;
    send(
        &mut one,
        json!({"type": "subscribe", "device_ids": ["device_001"]}),
    )
    .await;
    send(&mut all, json!({"type": "subscribe_all"})).await;
    send(
        &mut other,
        json!({"type": "subscribe", "device_ids": ["device_002"]}),
    )
    .await;
    for ws in [&mut one, &mut all, &mut other] {
        sync(ws).await;
    }

    let alert = br#"{"alert_id":"device_001:HIGH_TEMPERATURE","device_id":"device_001","severity":"critical"}"#;
    hub.publish_alert("device_001", alert);
    for ws in [&mut one, &mut all] {
        let v = recv(ws).await;
        assert_eq!(v["type"], "alert");
        assert_eq!(v["offset"], 1);
        assert_eq!(v["payload"], as_json(alert));
    }
    assert_eq!(sync(&mut other).await, Vec::<Value>::new());
}

/// What the serve loop does once a second, on an explicit clock: the store says which devices
/// changed status, the hub tells their clients.
fn sweep(store: &mut Store, hub: &Hub, now_ms: i64) {
    for (device_id, status) in store.status_changes(now_ms) {
        hub.publish_status(&device_id, status, now_ms);
    }
}

#[tokio::test]
async fn a_subscriber_is_told_when_its_device_goes_offline_and_comes_back() {
    let (hub, url) = start(HubConfig::default()).await;
    let mut ws = subscribed(&url, &["device_001"]).await;
    let status = |v: &Value| (v["type"].clone(), v["offset"].clone(), v["payload"].clone());
    let expected = |offset: u64, status: &str, timestamp: i64| {
        let payload = json!({"device_id": "device_001", "status": status, "timestamp": timestamp});
        (json!("device_status"), json!(offset), payload)
    };

    let mut store = Store::new(StoreConfig::default());
    let t0 = 1_700_000_000_000;
    store.record(&Reading::example("device_001", 1, t0, 21.5), t0);
    store.record(&Reading::example("device_002", 1, t0, 21.5), t0);
    sweep(&mut store, &hub, t0);
    assert_eq!(status(&recv(&mut ws).await), expected(1, "online", t0));

    // A minute of silence from both: offline, far beyond any send interval.
    let t1 = t0 + 60_000;
    sweep(&mut store, &hub, t1);
    assert_eq!(status(&recv(&mut ws).await), expected(3, "offline", t1));
    sweep(&mut store, &hub, t1 + 1_000);

    let t2 = t1 + 2_000;
    store.record(&Reading::example("device_001", 2, t2, 21.5), t2);
    sweep(&mut store, &hub, t2);
    assert_eq!(status(&recv(&mut ws).await), expected(5, "online", t2));
    assert_eq!(
        sync(&mut ws).await,
        Vec::<Value>::new(),
        "nothing of device_002, no repeats"
    );
    assert_eq!(hub.offset(), 5);
}

#[tokio::test]
async fn bad_client_messages_get_an_error_and_the_connection_stays() {
    let (hub, url) = start(HubConfig::default()).await;
    let (mut ws, _) = connect(&url).await;
    let bad = [
        Message::text("this is not json"),
        Message::text(r#"{"type":"dance"}"#),
        Message::text(r#"{"type":"subscribe","device_ids":"device_001"}"#),
        Message::text(r#"{"type":"subscribe","device_ids":["has space"]}"#),
        Message::text(r#"{"type":"resume","offset":1}"#),
        Message::binary(vec![1, 2, 3]),
    ];
    let count = bad.len() as u64;
    for msg in bad {
        ws.send(msg).await.expect("send");
        let v = recv(&mut ws).await;
        assert_eq!(v["type"], "error", "{v}");
        assert!(v["message"].as_str().is_some_and(|m| !m.is_empty()));
        assert_eq!(v["epoch"], hub.epoch());
    }
    send(
        &mut ws,
        json!({"type": "subscribe", "device_ids": ["device_001"]}),
    )
    .await;
    sync(&mut ws).await;
    hub.publish_reading("device_001", &reading("device_001", 1));
    assert_eq!(recv(&mut ws).await["type"], "device_data");
    assert_eq!(hub.stats().client_errors, count);
}

#[tokio::test]
async fn a_frame_over_the_limit_closes_with_1009() {
    let (_hub, url) = start(HubConfig::default()).await;
    let (mut ws, _) = connect(&url).await;
    let big = format!(
        r#"{{"type":"subscribe","device_ids":["{}"]}}"#,
        "x".repeat(100 * 1024)
    );
    // The server may close before it has read the whole frame: a failed send is fine.
    let _ = ws.send(Message::text(big)).await;
    assert_eq!(close_code(&mut ws).await, 1009);
}

#[tokio::test]
async fn too_many_messages_close_with_1008() {
    let (_hub, url) = start(HubConfig {
        client_msgs_per_sec: 5,
        ..HubConfig::default()
    })
    .await;
    let (mut ws, _) = connect(&url).await;
    for _ in 0..50 {
        if ws.send(Message::text(r#"{"type":"ping"}"#)).await.is_err() {
            break;
        }
    }
    assert_eq!(close_code(&mut ws).await, 1008);
}

#[tokio::test]
async fn the_connection_limit_answers_503_and_frees_up_on_disconnect() {
    let (hub, url) = start(HubConfig {
        max_connections: 2,
        ..HubConfig::default()
    })
    .await;
    let (mut first, _) = connect(&url).await;
    let (_second, _) = connect(&url).await;
    assert_eq!(refused(url.as_str()).await, 503);
    assert_eq!(hub.stats().rejected_connections, 1);

    first.close(None).await.expect("close");
    let h = hub.clone();
    wait_until("the first connection to end", move || h.connections() == 1).await;
    let (_third, _) = connect(&url).await;
}

#[tokio::test]
async fn a_token_is_required_when_configured() {
    let (hub, url) = start(HubConfig {
        auth_token: Some("s3cret".into()),
        ..HubConfig::default()
    })
    .await;
    assert_eq!(refused(url.as_str()).await, 401);
    assert_eq!(refused(format!("{url}?token=wrong")).await, 401);
    connect(&format!("{url}?token=s3cret")).await;

    let mut request = url.as_str().into_client_request().expect("request");
    request
        .headers_mut()
        .insert("Authorization", HeaderValue::from_static("Bearer s3cret"));
    let (mut ws, _) = connect_async(request).await.expect("bearer token accepted");
    assert_eq!(recv(&mut ws).await["type"], "welcome");
    assert_eq!(hub.stats().rejected_unauthorized, 2);
}

#[tokio::test]
async fn the_origin_must_be_allowed_when_a_list_is_configured() {
    let (_hub, url) = start(HubConfig {
        allowed_origins: vec!["http://dashboard.example:8080".into()],
        ..HubConfig::default()
    })
    .await;
    let with_origin = |origin: &'static str| {
        let mut request = url.as_str().into_client_request().expect("request");
        request
            .headers_mut()
            .insert("Origin", HeaderValue::from_static(origin));
        request
    };
    assert_eq!(refused(with_origin("http://evil.example")).await, 403);
    assert_eq!(refused(url.as_str()).await, 403);
    let (mut ws, _) = connect_async(with_origin("http://dashboard.example:8080"))
        .await
        .expect("allowed origin");
    assert_eq!(recv(&mut ws).await["type"], "welcome");
}

#[tokio::test]
async fn resume_inside_the_window_replays_what_was_missed_in_order() {
    let (hub, url) = start(HubConfig::default()).await;
    let (mut ws, welcome) = connect(&url).await;
    let epoch = welcome["epoch"].clone();
    send(
        &mut ws,
        json!({"type": "subscribe", "device_ids": ["device_001"]}),
    )
    .await;
    sync(&mut ws).await;
    hub.publish_reading("device_001", &reading("device_001", 1));
    let last = recv(&mut ws).await["offset"].as_u64().expect("offset");
    drop(ws);

    // Missed while away: two of ours, one of another device.
    hub.publish_reading("device_002", &reading("device_002", 1));
    hub.publish_reading("device_001", &reading("device_001", 2));
    hub.publish_reading("device_001", &reading("device_001", 3));

    let (mut ws, _) = connect(&url).await;
    send(
        &mut ws,
        json!({"type": "subscribe", "device_ids": ["device_001"]}),
    )
    .await;
    send(
        &mut ws,
        json!({"type": "resume", "epoch": epoch, "offset": last}),
    )
    .await;
    let replayed: Vec<Value> = vec![recv(&mut ws).await, recv(&mut ws).await];
    assert_eq!(
        replayed
            .iter()
            .map(|v| (
                v["offset"].as_u64().expect("offset"),
                v["payload"]["seq"].as_u64().expect("seq")
            ))
            .collect::<Vec<_>>(),
        [(3, 2), (4, 3)]
    );
    let resumed = recv(&mut ws).await;
    assert_eq!(resumed["type"], "resumed");
    assert_eq!(resumed["recovered"], true);
    assert_eq!(resumed["replayed"], 2);

    hub.publish_reading("device_001", &reading("device_001", 4));
    assert_eq!(
        recv(&mut ws).await["offset"],
        5,
        "live data follows without a gap"
    );
}

#[tokio::test]
async fn a_long_resume_replays_everything_matching_across_chunks() {
    let (hub, url) = start(HubConfig::default()).await;
    for seq in 1..=3000 {
        let device = if seq % 2 == 1 {
            "device_001"
        } else {
            "device_002"
        };
        hub.publish_reading(device, &reading(device, seq));
    }
    let (mut ws, welcome) = connect(&url).await;
    send(
        &mut ws,
        json!({"type": "subscribe", "device_ids": ["device_001"]}),
    )
    .await;
    send(
        &mut ws,
        json!({"type": "resume", "epoch": welcome["epoch"], "offset": 0}),
    )
    .await;
    for expected in (1..=3000u64).step_by(2) {
        let v = recv(&mut ws).await;
        assert_eq!(
            (v["type"].as_str(), v["offset"].as_u64()),
            (Some("device_data"), Some(expected))
        );
    }
    let resumed = recv(&mut ws).await;
    assert_eq!(resumed["recovered"], true);
    assert_eq!(resumed["replayed"], 1500);
}

#[tokio::test]
async fn resume_outside_the_window_or_from_another_epoch_is_not_recovered() {
    let (hub, url) = start(HubConfig {
        replay_capacity: 3,
        ..HubConfig::default()
    })
    .await;
    for seq in 1..=10 {
        hub.publish_reading("device_001", &reading("device_001", seq));
    }
    let (mut ws, welcome) = connect(&url).await;
    send(&mut ws, json!({"type": "subscribe_all"})).await;
    let resume =
        |epoch: &Value, offset: u64| json!({"type": "resume", "epoch": epoch, "offset": offset});
    let epoch = welcome["epoch"].clone();

    send(&mut ws, resume(&epoch, 2)).await;
    let v = recv(&mut ws).await;
    assert_eq!(
        (v["type"].as_str(), v["recovered"].as_bool()),
        (Some("resumed"), Some(false))
    );

    send(&mut ws, resume(&epoch, 99)).await;
    assert_eq!(
        recv(&mut ws).await["recovered"],
        false,
        "an offset from the future"
    );

    send(&mut ws, resume(&epoch, 7)).await;
    assert_eq!(recv(&mut ws).await["offset"], 8);
    assert_eq!(recv(&mut ws).await["offset"], 9);
    assert_eq!(recv(&mut ws).await["offset"], 10);
    assert_eq!(
        recv(&mut ws).await["recovered"],
        true,
        "7 + 1 is still in the ring"
    );

    // A restarted server has a new epoch: offsets of the old one mean nothing there.
    let (restarted, url2) = start(HubConfig::default()).await;
    assert_ne!(restarted.epoch(), hub.epoch());
    restarted.publish_reading("device_001", &reading("device_001", 1));
    let (mut ws2, _) = connect(&url2).await;
    send(&mut ws2, json!({"type": "subscribe_all"})).await;
    send(&mut ws2, resume(&epoch, 0)).await;
    let v = recv(&mut ws2).await;
    assert_eq!(
        (v["type"].as_str(), v["recovered"].as_bool()),
        (Some("resumed"), Some(false))
    );
}

#[tokio::test]
async fn batching_sends_few_frames_in_order_and_conflation_keeps_the_newest() {
    let (hub, url) = start(HubConfig::default()).await;
    let (mut ws, _) = connect(&url).await;
    send(&mut ws, json!({"type": "subscribe_all"})).await;
    send(&mut ws, json!({"type": "options", "batch_ms": 50})).await;
    sync(&mut ws).await;

    for seq in 1..=10 {
        hub.publish_reading("device_001", &reading("device_001", seq));
    }
    let mut offsets = Vec::new();
    let mut frames = 0;
    while offsets.len() < 10 {
        let v = recv(&mut ws).await;
        assert_eq!(v["type"], "batch", "{v}");
        frames += 1;
        let messages = v["messages"].as_array().expect("messages");
        assert_eq!(v["offset"], messages.last().expect("not empty")["offset"]);
        offsets.extend(
            messages
                .iter()
                .map(|m| m["offset"].as_u64().expect("offset")),
        );
    }
    assert_eq!(offsets, (1..=10).collect::<Vec<u64>>());
    assert!(frames < 10, "{frames} frames for 10 messages");

    send(
        &mut ws,
        json!({"type": "options", "batch_ms": 200, "conflate": true}),
    )
    .await;
    sync(&mut ws).await;
    for seq in 1..=5 {
        hub.publish_reading("device_001", &reading("device_001", 10 + seq));
        hub.publish_reading("device_002", &reading("device_002", seq));
    }
    hub.publish_alert("device_001", br#"{"alert_id":"a"}"#);
    let mut received = Vec::new();
    while received.last().map(|m: &Value| m["offset"].as_u64()) != Some(Some(21)) {
        let v = recv(&mut ws).await;
        assert_eq!(v["type"], "batch", "{v}");
        received.extend(v["messages"].as_array().expect("messages").iter().cloned());
    }
    let offsets: Vec<u64> = received
        .iter()
        .map(|m| m["offset"].as_u64().expect("offset"))
        .collect();
    assert!(
        offsets.windows(2).all(|w| w[0] < w[1]),
        "in order: {offsets:?}"
    );
    assert!(received.len() < 11, "conflated: {offsets:?}");
    let data: Vec<&Value> = received
        .iter()
        .filter(|m| m["type"] == "device_data")
        .collect();
    assert_eq!(data[data.len() - 2]["payload"]["seq"], 15);
    assert_eq!(data[data.len() - 1]["payload"]["seq"], 5);
    assert_eq!(received.last().expect("alert")["type"], "alert");

    send(&mut ws, json!({"type": "options", "batch_ms": 0})).await;
    sync(&mut ws).await;
    hub.publish_reading("device_001", &reading("device_001", 99));
    assert_eq!(recv(&mut ws).await["type"], "device_data");
}

#[tokio::test]
async fn heartbeats_arrive_on_time_and_shutdown_closes_with_1001() {
    let (hub, url) = start(HubConfig {
        heartbeat: Duration::from_millis(50),
        ..HubConfig::default()
    })
    .await;
    let (mut ws, welcome) = connect(&url).await;
    assert_eq!(welcome["heartbeat_ms"], 50);
    loop {
        let msg = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("a heartbeat")
            .expect("open")
            .expect("frame");
        let v: Value = serde_json::from_str(msg.to_text().expect("text")).expect("json");
        if v["type"] == "heartbeat" {
            assert_eq!(v["epoch"], hub.epoch());
            break;
        }
    }
    hub.shutdown();
    assert_eq!(close_code(&mut ws).await, 1001);
    drop(ws);
    tokio::time::timeout(WAIT, hub.closed())
        .await
        .expect("every connection ends after shutdown");
    assert_eq!(refused(url.as_str()).await, 503);
}

/// Payloads big enough that the socket buffers between server and a stalled client fill up.
fn big_reading(seq: u64) -> Vec<u8> {
    format!(
        r#"{{"device_id":"device_001","seq":{seq},"pad":"{}"}}"#,
        "x".repeat(1000)
    )
    .into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_client_loses_messages_while_the_others_get_everything() {
    let queue = 64;
    let (hub, url) = start(HubConfig {
        client_queue: queue,
        ..HubConfig::default()
    })
    .await;
    let (mut stalled, _) = connect(&url).await;
    let (mut fast, _) = connect(&url).await;
    for ws in [&mut stalled, &mut fast] {
        send(ws, json!({"type": "subscribe_all"})).await;
        sync(ws).await;
    }
    // From here on `stalled` is never read.

    let (progress, mut received) = tokio::sync::watch::channel(0u64);
    let reader = tokio::spawn(async move {
        for expected in 1..=50_000u64 {
            let v = recv(&mut fast).await;
            assert_eq!(v["type"], "device_data", "{v}");
            assert_eq!(v["offset"], expected, "the fast client misses nothing");
            progress.send_replace(expected);
        }
        fast
    });

    let mut publishing = Duration::ZERO;
    let mut max_queued = 0;
    // Rounds smaller than the queue, each waiting for the fast client: it never overflows.
    let round_size = 50;
    for round in 0..50_000 / round_size {
        let started = Instant::now();
        for i in 1..=round_size {
            hub.publish_reading("device_001", &big_reading(round * round_size + i));
        }
        publishing += started.elapsed();
        max_queued = max_queued.max(hub.stats().queued_messages);
        let published = (round + 1) * round_size;
        tokio::time::timeout(WAIT, received.wait_for(|n| *n >= published))
            .await
            .expect("the fast client keeps up")
            .expect("the fast client is still reading");
    }
    let fast = reader.await.expect("fast client got all 50,000 in order");

    let stats = hub.stats();
    assert!(stats.messages_dropped > 0, "{stats:?}");
    assert!(
        max_queued <= 2 * queue,
        "client queues stay bounded: {max_queued}"
    );
    assert!(
        publishing < Duration::from_secs(10),
        "publishing 50,000 messages took {publishing:?}"
    );
    let h = hub.clone();
    wait_until("the stalled client to be disconnected", move || {
        h.stats().clients_disconnected_slow == 1 && h.connections() == 1
    })
    .await;
    drop(stalled);
    drop(fast);
}

#[tokio::test]
async fn a_client_that_fell_behind_is_told_how_many_messages_it_missed() {
    let (hub, url) = start(HubConfig {
        client_queue: 4,
        ..HubConfig::default()
    })
    .await;
    let (mut ws, _) = connect(&url).await;
    send(&mut ws, json!({"type": "subscribe_all"})).await;
    sync(&mut ws).await;
    // This test's runtime has one thread: the connection's writer cannot drain the queue while
    // this loop runs, so all but the first 4 messages are dropped.
    for seq in 1..=200 {
        hub.publish_reading("device_001", &reading("device_001", seq));
    }
    assert_eq!(hub.stats().messages_dropped, 196);
    let mut got = Vec::new();
    loop {
        let v = recv(&mut ws).await;
        if v["type"] == "dropped" {
            assert_eq!(v["count"], 196);
            assert_eq!(v["offset"], 200);
            break;
        }
        assert_eq!(v["type"], "device_data", "{v}");
        got.push(v["offset"].as_u64().expect("offset"));
    }
    assert_eq!(
        got,
        [1],
        "the notice follows the first message after the gap"
    );
    let rest: Vec<_> = sync(&mut ws)
        .await
        .iter()
        .map(|v| v["offset"].clone())
        .collect();
    assert_eq!(rest, [2, 3, 4]);
    hub.publish_reading("device_001", &reading("device_001", 201));
    assert_eq!(
        recv(&mut ws).await["offset"],
        201,
        "still connected and receiving"
    );
    assert_eq!(hub.stats().clients_disconnected_slow, 0);
}

#[tokio::test]
async fn deliveries_of_readings_with_an_event_time_are_measured() {
    let (hub, url) = start(HubConfig::default()).await;
    let (mut ws, _) = connect(&url).await;
    send(&mut ws, json!({"type": "subscribe_all"})).await;
    sync(&mut ws).await;
    // Stamped 300 ms ago: delivered at least 300 ms after its event.
    hub.publish_reading_at(
        "device_001",
        iiot::now_ms() - 300,
        &reading("device_001", 1),
    );
    // Without an event time: delivered, not measured.
    hub.publish_reading("device_002", &reading("device_002", 1));
    recv(&mut ws).await;
    recv(&mut ws).await;
    wait_until("the delivery is measured", || hub.latency().count == 1).await;
    let latency = hub.latency();
    assert!(latency.sum_ms >= 300, "{latency:?}");
    assert_eq!(
        latency.quantile_ms(0.5),
        Some(500),
        "the 200–500 ms bucket: {latency:?}"
    );
}
