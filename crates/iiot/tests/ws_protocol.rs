//! The WebSocket protocol over real TCP: a tokio-tungstenite client against the hub served on
//! 127.0.0.1:0 — welcome, subscriptions, alerts, client errors, resume by epoch and offset,
//! batching and conflation, delivery latency. Every wait has a generous timeout and waits for
//! a condition, never a fixed time.

mod support;

use futures::SinkExt;
use iiot::hub::HubConfig;
use iiot::sinks::live::Live;
use iiot::store::{Store, StoreConfig};
use iiot_model::Reading;
use serde_json::{Value, json};
use support::readings::hub_reading;
use support::ws::{WAIT, as_json, connect, connect_to_all, recv, send, subscribe, sync};
use support::{start_ws_hub, start_ws_hub_adjusted, wait_until};
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn a_new_connection_is_welcomed_and_gets_no_data_before_subscribing() {
    let (hub, url) = start_ws_hub(HubConfig::default()).await;
    hub.publish_reading("device_001", &hub_reading("device_001", 1));
    let (mut ws, welcome) = connect(&url).await;
    assert_eq!(welcome["epoch"], hub.epoch());
    assert_eq!(welcome["offset"], 1);
    assert_eq!(welcome["heartbeat_ms"], 15_000);
    assert_eq!(hub.connections(), 1);

    hub.publish_reading("device_001", &hub_reading("device_001", 2));
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
    let (hub, url) = start_ws_hub(HubConfig::default()).await;
    let (mut ws, _) = connect(&url).await;
    subscribe(&mut ws, &["device_001", "device_003"]).await;
    sync(&mut ws).await;

    for (device, seq) in [
        ("device_001", 1),
        ("device_002", 1),
        ("device_003", 1),
        ("device_001", 2),
    ] {
        hub.publish_reading(device, &hub_reading(device, seq));
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
            (1, as_json(&hub_reading("device_001", 1))),
            (3, as_json(&hub_reading("device_003", 1))),
            (4, as_json(&hub_reading("device_001", 2))),
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
    let (hub, url) = start_ws_hub(HubConfig::default()).await;
    let mut ws = connect_to_all(&url).await;
    hub.publish_reading("device_001", &hub_reading("device_001", 1));
    hub.publish_reading("device_777", &hub_reading("device_777", 1));
    assert_eq!(recv(&mut ws).await["offset"], 1);
    assert_eq!(recv(&mut ws).await["offset"], 2);

    send(&mut ws, json!({"type": "unsubscribe_all"})).await;
    subscribe(&mut ws, &["device_001", "device_002"]).await;
    send(
        &mut ws,
        json!({"type": "unsubscribe", "device_ids": ["device_001"]}),
    )
    .await;
    sync(&mut ws).await;
    hub.publish_reading("device_001", &hub_reading("device_001", 2));
    hub.publish_reading("device_777", &hub_reading("device_777", 2));
    hub.publish_reading("device_002", &hub_reading("device_002", 1));
    let v = recv(&mut ws).await;
    assert_eq!(
        (v["offset"].as_u64(), &v["payload"]["device_id"]),
        (Some(5), &json!("device_002"))
    );
    assert_eq!(sync(&mut ws).await, Vec::<Value>::new());
}

#[tokio::test]
async fn alerts_go_to_clients_of_that_device_or_of_all() {
    let (hub, url) = start_ws_hub(HubConfig::default()).await;
    let (mut one, _) = connect(&url).await;
    let (mut all, _) = connect(&url).await;
    let (mut other, _) = connect(&url).await;
    subscribe(&mut one, &["device_001"]).await;
    send(&mut all, json!({"type": "subscribe_all"})).await;
    subscribe(&mut other, &["device_002"]).await;
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

#[tokio::test]
async fn bad_client_messages_get_an_error_and_the_connection_stays() {
    let (hub, url) = start_ws_hub(HubConfig::default()).await;
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
    subscribe(&mut ws, &["device_001"]).await;
    sync(&mut ws).await;
    hub.publish_reading("device_001", &hub_reading("device_001", 1));
    assert_eq!(recv(&mut ws).await["type"], "device_data");
    assert_eq!(hub.stats().client_errors, count);
}

#[tokio::test]
async fn resume_inside_the_window_replays_what_was_missed_in_order() {
    let (hub, url) = start_ws_hub(HubConfig::default()).await;
    let (mut ws, welcome) = connect(&url).await;
    let epoch = welcome["epoch"].clone();
    subscribe(&mut ws, &["device_001"]).await;
    sync(&mut ws).await;
    hub.publish_reading("device_001", &hub_reading("device_001", 1));
    let last = recv(&mut ws).await["offset"].as_u64().expect("offset");
    drop(ws);

    // Missed while away: two of ours, one of another device.
    hub.publish_reading("device_002", &hub_reading("device_002", 1));
    hub.publish_reading("device_001", &hub_reading("device_001", 2));
    hub.publish_reading("device_001", &hub_reading("device_001", 3));

    let (mut ws, _) = connect(&url).await;
    subscribe(&mut ws, &["device_001"]).await;
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

    hub.publish_reading("device_001", &hub_reading("device_001", 4));
    assert_eq!(
        recv(&mut ws).await["offset"],
        5,
        "live data follows without a gap"
    );
}

#[tokio::test]
async fn a_long_resume_replays_everything_matching_across_chunks() {
    let (hub, url) = start_ws_hub(HubConfig::default()).await;
    for seq in 1..=3000 {
        let device = if seq % 2 == 1 {
            "device_001"
        } else {
            "device_002"
        };
        hub.publish_reading(device, &hub_reading(device, seq));
    }
    let (mut ws, welcome) = connect(&url).await;
    subscribe(&mut ws, &["device_001"]).await;
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
    let (hub, url) = start_ws_hub_adjusted(|c| c.replay_capacity = 3).await;
    for seq in 1..=10 {
        hub.publish_reading("device_001", &hub_reading("device_001", seq));
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
    let (restarted, url2) = start_ws_hub(HubConfig::default()).await;
    assert_ne!(restarted.epoch(), hub.epoch());
    restarted.publish_reading("device_001", &hub_reading("device_001", 1));
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
    let (hub, url) = start_ws_hub(HubConfig::default()).await;
    let (mut ws, _) = connect(&url).await;
    send(&mut ws, json!({"type": "subscribe_all"})).await;
    send(&mut ws, json!({"type": "options", "batch_ms": 50})).await;
    sync(&mut ws).await;

    for seq in 1..=10 {
        hub.publish_reading("device_001", &hub_reading("device_001", seq));
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
        hub.publish_reading("device_001", &hub_reading("device_001", 10 + seq));
        hub.publish_reading("device_002", &hub_reading("device_002", seq));
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
    hub.publish_reading("device_001", &hub_reading("device_001", 99));
    assert_eq!(recv(&mut ws).await["type"], "device_data");
}

#[tokio::test]
async fn deliveries_of_readings_with_an_event_time_are_measured() {
    let (hub, url) = start_ws_hub(HubConfig::default()).await;
    let mut ws = connect_to_all(&url).await;
    // Stamped 300 ms ago: delivered at least 300 ms after its event.
    hub.publish_reading_at(
        "device_001",
        iiot::now_ms() - 300,
        &hub_reading("device_001", 1),
    );
    // Without an event time: delivered, not measured.
    hub.publish_reading("device_002", &hub_reading("device_002", 1));
    recv(&mut ws).await;
    recv(&mut ws).await;
    wait_until("the delivery is measured", WAIT, || {
        hub.latency().count == 1
    })
    .await;
    let latency = hub.latency();
    assert!(latency.sum_ms >= 300, "{latency:?}");
    assert_eq!(
        latency.quantile_ms(0.5),
        Some(500),
        "the 200–500 ms bucket: {latency:?}"
    );
}

#[tokio::test]
async fn a_subscriber_is_told_when_its_device_goes_offline_and_comes_back() {
    let (hub, url) = start_ws_hub(HubConfig::default()).await;
    let (mut ws, _) = connect(&url).await;
    subscribe(&mut ws, &["device_001"]).await;
    sync(&mut ws).await;
    let status = |v: &Value| (v["type"].clone(), v["offset"].clone(), v["payload"].clone());
    let expected = |offset: u64, status: &str, timestamp: i64| {
        let payload = json!({"device_id": "device_001", "status": status, "timestamp": timestamp});
        (json!("device_status"), json!(offset), payload)
    };

    // What the serve side's upkeep does once a second, here on an explicit clock.
    let live = Live::new(Store::new(StoreConfig::default()), hub.clone());
    let record = |device: &str, seq: u64, t: i64| {
        live.write()
            .record(&Reading::example(device, seq, t, 21.5), t)
    };
    let t0 = 1_700_000_000_000;
    record("device_001", 1, t0);
    record("device_002", 1, t0);
    live.publish_status_changes(t0);
    assert_eq!(status(&recv(&mut ws).await), expected(1, "online", t0));

    // A minute of silence from both: offline, far beyond any send interval.
    let t1 = t0 + 60_000;
    live.publish_status_changes(t1);
    assert_eq!(status(&recv(&mut ws).await), expected(3, "offline", t1));
    live.publish_status_changes(t1 + 1_000);

    let t2 = t1 + 2_000;
    record("device_001", 2, t2);
    live.publish_status_changes(t2);
    assert_eq!(status(&recv(&mut ws).await), expected(5, "online", t2));
    assert_eq!(
        sync(&mut ws).await,
        Vec::<Value>::new(),
        "nothing of device_002, no repeats"
    );
    assert_eq!(hub.offset(), 5);
}
