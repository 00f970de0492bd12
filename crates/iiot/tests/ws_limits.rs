//! The WebSocket hub's limits over real TCP: frame size, message rate, connection count,
//! token and origin checks, heartbeats and shutdown, slow clients (dropped messages,
//! disconnection) while the others get everything, clients that answer no pings, and floods of
//! made-up subscriptions. Every wait has a generous timeout and
//! waits for a condition, never a fixed time.

mod support;

use std::time::{Duration, Instant};

use futures::SinkExt;
use iiot::hub::HubConfig;
use serde_json::json;
use support::readings::hub_reading;
use support::ws::{
    WAIT, close_code, connect, connect_to_all, next_json, recv, refused, send, sync,
};
use support::{start_ws_hub, start_ws_hub_adjusted, wait_until};
use tokio_tungstenite::connect_async;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

#[tokio::test]
async fn a_frame_over_the_limit_closes_with_1009() {
    let (_hub, url) = start_ws_hub(HubConfig::default()).await;
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
    let (_hub, url) = start_ws_hub_adjusted(|c| c.client_msgs_per_sec = 5).await;
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
    let (hub, url) = start_ws_hub_adjusted(|c| c.max_connections = 2).await;
    let (mut first, _) = connect(&url).await;
    let (_second, _) = connect(&url).await;
    assert_eq!(refused(url.as_str()).await, 503);
    assert_eq!(hub.stats().rejected_connections, 1);

    first.close(None).await.expect("close");
    let h = hub.clone();
    wait_until("the first connection to end", WAIT, move || {
        h.connections() == 1
    })
    .await;
    let (_third, _) = connect(&url).await;
}

#[tokio::test]
async fn a_token_is_required_when_configured() {
    let (hub, url) = start_ws_hub_adjusted(|c| c.auth_token = Some("s3cret".into())).await;
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
    let (_hub, url) =
        start_ws_hub_adjusted(|c| c.allowed_origins = vec!["http://dashboard.example:8080".into()])
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
async fn heartbeats_arrive_on_time_and_shutdown_closes_with_1001() {
    let (hub, url) = start_ws_hub_adjusted(|c| c.heartbeat = Duration::from_millis(50)).await;
    let (mut ws, welcome) = connect(&url).await;
    assert_eq!(welcome["heartbeat_ms"], 50);
    loop {
        let v = next_json(&mut ws).await;
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
    let (hub, url) = start_ws_hub_adjusted(|c| c.client_queue = queue).await;
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
    wait_until("the stalled client to be disconnected", WAIT, move || {
        h.stats().clients_disconnected_slow == 1 && h.connections() == 1
    })
    .await;
    drop(stalled);
    drop(fast);
}

#[tokio::test]
async fn a_client_that_fell_behind_is_told_how_many_messages_it_missed() {
    let (hub, url) = start_ws_hub_adjusted(|c| c.client_queue = 4).await;
    let mut ws = connect_to_all(&url).await;
    // This test's runtime has one thread: the connection's writer cannot drain the queue while
    // this loop runs, so all but the first 4 messages are dropped.
    for seq in 1..=200 {
        hub.publish_reading("device_001", &hub_reading("device_001", seq));
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
    hub.publish_reading("device_001", &hub_reading("device_001", 201));
    assert_eq!(
        recv(&mut ws).await["offset"],
        201,
        "still connected and receiving"
    );
    assert_eq!(hub.stats().clients_disconnected_slow, 0);
}

/// Opens a WebSocket on `url` by hand and returns the raw socket: nothing will ever read from
/// it again, so nothing answers the server's pings (a tungstenite client answers them as soon as
/// it reads).
async fn silent_client(url: &str) -> tokio::net::TcpStream {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = url
        .strip_prefix("ws://")
        .and_then(|rest| rest.split('/').next())
        .expect("a ws:// URL");
    let mut tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let request = format!(
        "GET /ws HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    tcp.write_all(request.as_bytes()).await.expect("upgrade");
    // Read the 101 head only, one byte at a time, so that no frame is consumed.
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        tcp.read_exact(&mut byte).await.expect("upgrade answer");
        head.push(byte[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    tcp
}

/// Keeps reading `ws` (so its pings are answered) until `done` holds; fails if it closes.
async fn read_until(ws: &mut support::ws::Ws, what: &str, mut done: impl FnMut() -> bool) {
    use futures::StreamExt;
    let deadline = Instant::now() + WAIT;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        let next = tokio::time::timeout(Duration::from_millis(20), ws.next()).await;
        if let Ok(next) = next {
            let msg = next.expect("still open").expect("a good frame");
            assert!(!matches!(msg, Message::Close(_)), "closed: {msg:?}");
        }
    }
}

#[tokio::test]
async fn a_client_that_answers_no_pings_is_closed_and_a_reading_one_stays() {
    let interval = Duration::from_millis(200);
    let (hub, url) = start_ws_hub_adjusted(|c| c.ping_interval = interval).await;
    let (mut good, _) = connect(&url).await;
    let silent = silent_client(&url).await;
    let opened = Instant::now();

    let h = hub.clone();
    read_until(&mut good, "the silent client to be closed", move || {
        h.stats().ping_timeouts == 1 && h.connections() == 1
    })
    .await;
    assert!(
        opened.elapsed() >= interval * 2,
        "closed before two intervals: {:?}",
        opened.elapsed()
    );
    // The reading client has been pinged many times meanwhile and is still served.
    let start = Instant::now();
    read_until(&mut good, "a few more intervals", || {
        start.elapsed() > interval * 4
    })
    .await;
    assert_eq!(hub.stats().ping_timeouts, 1);
    send(&mut good, json!({"type": "ping"})).await;
    assert_eq!(recv(&mut good).await["type"], "pong");
    drop(silent);
}

#[tokio::test]
async fn a_flood_of_made_up_subscriptions_is_capped_and_real_clients_still_get_the_stream() {
    let (hub, url) = start_ws_hub_adjusted(|c| {
        c.max_subscribed_ids = 25_000;
        c.client_msgs_per_sec = 0;
    })
    .await;
    // Each flooder asks for 100,000 made-up ids, 4,000 per message (a frame is at most 64 KiB).
    let mut flooders = Vec::new();
    for f in 0..3 {
        let (mut ws, _) = connect(&url).await;
        for chunk in 0..25 {
            let ids: Vec<String> = (0..4_000)
                .map(|i| format!("f{f}_{}", chunk * 4_000 + i))
                .collect();
            send(&mut ws, json!({"type": "subscribe", "device_ids": ids})).await;
        }
        let replies = sync(&mut ws).await;
        let errors: Vec<&str> = replies
            .iter()
            .filter(|r| r["type"] == "error")
            .filter_map(|r| r["message"].as_str())
            .collect();
        // 8,000 ids each: the third message would pass the per-client cap of 10,000, so it
        // and every later one is refused whole.
        assert_eq!(errors.len(), 23, "flooder {f}: {:?}", errors.first());
        assert!(errors[0].contains("at most 10000"), "{}", errors[0]);
        flooders.push(ws);
    }
    // 300,000 ids asked for; what the server holds is bounded by the caps.
    assert_eq!(hub.stats().subscribed_ids, 24_000);

    // A fourth client finds the global cap reached: told so, the stream unharmed.
    let (mut late, _) = connect(&url).await;
    let ids: Vec<String> = (0..2_000).map(|i| format!("late_{i}")).collect();
    send(&mut late, json!({"type": "subscribe", "device_ids": ids})).await;
    let replies = sync(&mut late).await;
    assert!(
        replies.iter().any(|r| r["type"] == "error"
            && r["message"]
                .as_str()
                .is_some_and(|m| m.contains("all clients together"))),
        "{replies:?}"
    );

    // Well-behaved clients: one subscribed to a real device (room is left for one id), one to all.
    let (mut one, _) = connect(&url).await;
    support::ws::subscribe(&mut one, &["device_001"]).await;
    let replies = sync(&mut one).await;
    assert!(replies.iter().all(|r| r["type"] != "error"), "{replies:?}");
    let mut all = connect_to_all(&url).await;
    hub.publish_reading("device_001", &hub_reading("device_001", 1));
    for ws in [&mut one, &mut all] {
        let v = recv(ws).await;
        assert_eq!(v["type"], "device_data", "{v}");
        assert_eq!(v["payload"]["device_id"], "device_001");
    }

    // Leaving frees what they held.
    drop(flooders);
    let h = hub.clone();
    wait_until("the flooders' ids to be released", WAIT, move || {
        h.stats().subscribed_ids == 1
    })
    .await;
}
