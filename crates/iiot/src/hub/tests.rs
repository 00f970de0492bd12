//! Unit tests of the hub's parts; the protocol over real sockets is in `tests/ws.rs`.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::connection::{Client, TokenBucket};
use super::protocol::{self, ClientMessage};
use super::writer::Batch;
use super::*;
use crate::test_support::reading_stub;

/// A client registered directly in the hub, without a socket.
fn attach(hub: &Hub, queue: usize) -> (Arc<Client>, mpsc::Receiver<Arc<Frame>>) {
    let (tx, rx) = mpsc::channel(queue);
    let client = Arc::new(Client::new(hub.client_id(), tx, CancellationToken::new()));
    write(&hub.subscriptions).insert(client.clone());
    (client, rx)
}

fn json(text: &str) -> Value {
    serde_json::from_str(text).expect("server frames are JSON")
}

#[test]
fn client_messages_parse_and_bad_ones_are_explained() {
    assert_eq!(
        protocol::parse(r#"{"type":"subscribe","device_ids":["device_001","d-2"]}"#),
        Ok(ClientMessage::Subscribe(vec![
            "device_001".into(),
            "d-2".into()
        ]))
    );
    assert_eq!(
        protocol::parse(r#"{"type":"subscribe_all","extra":1}"#),
        Ok(ClientMessage::SubscribeAll)
    );
    assert_eq!(
        protocol::parse(r#"{"type":"ping"}"#),
        Ok(ClientMessage::Ping)
    );
    assert_eq!(
        protocol::parse(r#"{"type":"resume","epoch":"abc","offset":7}"#),
        Ok(ClientMessage::Resume {
            epoch: Some("abc".into()),
            offset: 7
        })
    );
    assert_eq!(
        protocol::parse(r#"{"type":"resume","epoch":12,"offset":7}"#),
        Ok(ClientMessage::Resume {
            epoch: None,
            offset: 7
        })
    );
    assert_eq!(
        protocol::parse(r#"{"type":"options","conflate":true}"#),
        Ok(ClientMessage::Options {
            batch_ms: None,
            conflate: Some(true)
        })
    );

    let err = |text: &str| protocol::parse(text).expect_err(text);
    assert!(err("{nope").starts_with("invalid JSON"));
    assert!(err(r#"{"type":"dance"}"#).contains("unknown variant"));
    assert!(err(r#"{"device_ids":[]}"#).contains("type"));
    assert!(err(r#"{"type":"subscribe"}"#).contains("device_ids"));
    assert!(err(r#"{"type":"subscribe","device_ids":[1]}"#).contains("invalid type"));
    assert!(err(r#"{"type":"subscribe","device_ids":["bad id"]}"#).contains("bad id"));
    assert!(err(r#"{"type":"resume","epoch":"e","offset":-1}"#).contains("invalid"));
    assert!(err(r#"{"type":"options","batch_ms":1001}"#).contains("out of range"));
    assert!(err(r#"{"type":"options","batch_ms":1}"#).contains("out of range"));
    assert!(protocol::parse(r#"{"type":"options","batch_ms":10}"#).is_ok());
    assert!(protocol::parse(r#"{"type":"options","batch_ms":0}"#).is_ok());
    let many: Vec<String> = (0..=protocol::MAX_IDS_PER_MESSAGE)
        .map(|i| format!("d{i}"))
        .collect();
    let text = serde_json::json!({"type": "subscribe", "device_ids": many}).to_string();
    assert!(err(&text).contains("at most"));
}

#[test]
fn frames_embed_the_payload_as_is_and_carry_epoch_and_offset() {
    let payload = r#"{"device_id":"device_001","value":1.50}"#;
    let text = protocol::stream_frame(Kind::DeviceData, "00ff", 42, payload);
    assert!(
        text.contains(payload),
        "payload is not re-serialized: {text}"
    );
    let v = json(&text);
    assert_eq!(v["type"], "device_data");
    assert_eq!(v["epoch"], "00ff");
    assert_eq!(v["offset"], 42);
    assert_eq!(v["payload"]["device_id"], "device_001");

    let v = json(&protocol::error("00ff", 3, "bad \"quote\"\n"));
    assert_eq!(v["type"], "error");
    assert_eq!(v["offset"], 3);
    assert_eq!(v["message"], "bad \"quote\"\n");
}

#[test]
fn batches_keep_offset_order_and_conflation_keeps_the_newest_reading() {
    let hub = Hub::new(HubConfig::default());
    let (_client, mut rx) = attach(&hub, 64);
    write(&hub.subscriptions).subscribe_all(_client.id);
    hub.publish_reading("a", &reading_stub("a", 1));
    hub.publish_reading("b", &reading_stub("b", 1));
    hub.publish_alert("a", br#"{"alert_id":"x"}"#);
    hub.publish_reading("a", &reading_stub("a", 2));
    let mut batch = Batch::default();
    while let Ok(frame) = rx.try_recv() {
        batch.push(frame, true);
    }
    assert_eq!(batch.len, 3, "a@1 replaced by a@2");
    let text = protocol::batch(
        hub.epoch(),
        batch.last,
        batch.frames.iter().flatten().map(|f| f.as_ref()),
        batch.bytes,
    );
    let v = json(&text);
    assert_eq!(v["type"], "batch");
    assert_eq!(v["offset"], 4);
    let messages = v["messages"].as_array().expect("messages");
    let offsets: Vec<u64> = messages
        .iter()
        .map(|m| m["offset"].as_u64().expect("offset"))
        .collect();
    assert_eq!(offsets, [2, 3, 4]);
    assert_eq!(messages[1]["type"], "alert");
    assert_eq!(messages[2]["payload"]["seq"], 2);
    assert!(batch.bytes >= text.len() - 100);
}

#[test]
fn token_bucket_allows_bursts_of_twice_the_rate_then_refills() {
    let t0 = Instant::now();
    let mut bucket = TokenBucket::new(20, t0);
    assert_eq!((0..100).filter(|_| bucket.take(t0)).count(), 40);
    assert!(!bucket.take(t0));
    let t1 = t0 + Duration::from_millis(500);
    assert_eq!((0..100).filter(|_| bucket.take(t1)).count(), 10);
    let mut unlimited = TokenBucket::new(0, t0);
    assert!((0..10_000).all(|_| unlimited.take(t0)));
}

#[test]
fn publish_fans_out_by_subscription() {
    let hub = Hub::new(HubConfig::default());
    let (one, mut rx_one) = attach(&hub, 16);
    let (all, mut rx_all) = attach(&hub, 16);
    let (_none, mut rx_none) = attach(&hub, 16);
    write(&hub.subscriptions)
        .subscribe(one.id, vec!["device_001".into(), "device_001".into()])
        .expect("subscribe");
    write(&hub.subscriptions).subscribe_all(all.id);

    hub.publish_reading("device_001", &reading_stub("device_001", 1));
    hub.publish_reading("device_002", &reading_stub("device_002", 1));
    hub.publish_alert("device_002", br#"{"alert_id":"a"}"#);

    let offsets = |rx: &mut mpsc::Receiver<Arc<Frame>>| {
        std::iter::from_fn(|| rx.try_recv().ok())
            .map(|f| f.offset)
            .collect::<Vec<_>>()
    };
    assert_eq!(offsets(&mut rx_one), [1]);
    assert_eq!(offsets(&mut rx_all), [1, 2, 3]);
    assert!(offsets(&mut rx_none).is_empty());

    write(&hub.subscriptions).unsubscribe(one.id, &["device_001".into()]);
    write(&hub.subscriptions).unsubscribe_all(all.id);
    hub.publish_reading("device_001", &reading_stub("device_001", 2));
    assert!(offsets(&mut rx_one).is_empty());
    assert!(offsets(&mut rx_all).is_empty());
    assert_eq!(hub.stats().offset, 4);
}

#[test]
fn a_full_queue_drops_counts_and_finally_disconnects_without_blocking() {
    let hub = Hub::new(HubConfig {
        slow_max_consecutive_drops: 50,
        ..HubConfig::default()
    });
    let (slow, _rx_slow) = attach(&hub, 4);
    let (fast, mut rx_fast) = attach(&hub, 1024);
    write(&hub.subscriptions).subscribe_all(slow.id);
    write(&hub.subscriptions).subscribe_all(fast.id);

    for seq in 1..=20 {
        hub.publish_reading("device_001", &reading_stub("device_001", seq));
    }
    let stats = hub.stats();
    assert_eq!(stats.messages_dropped, 16);
    assert_eq!(stats.queued_messages, 4 + 20);
    assert_eq!(slow.take_unreported_drops(), 16);
    assert!(!slow.stop.is_cancelled());

    for seq in 21..=100 {
        hub.publish_reading("device_001", &reading_stub("device_001", seq));
    }
    assert!(slow.stop.is_cancelled(), "more than 50 misses in a row");
    assert_eq!(hub.stats().clients_disconnected_slow, 1);
    // Once marked slow the client is skipped, not counted again.
    let dropped = hub.stats().messages_dropped;
    hub.publish_reading("device_001", &reading_stub("device_001", 101));
    assert_eq!(hub.stats().messages_dropped, dropped);

    let got = std::iter::from_fn(|| rx_fast.try_recv().ok()).count();
    assert_eq!(got, 101, "the fast client misses nothing");
}

#[tokio::test(start_paused = true)]
async fn a_queue_full_for_too_long_disconnects() {
    let hub = Hub::new(HubConfig {
        slow_max_full: Duration::from_secs(10),
        ..HubConfig::default()
    });
    let (slow, _rx) = attach(&hub, 1);
    write(&hub.subscriptions).subscribe_all(slow.id);
    hub.publish_reading("d", &reading_stub("d", 1));
    hub.publish_reading("d", &reading_stub("d", 2));
    tokio::time::advance(Duration::from_secs(9)).await;
    hub.publish_reading("d", &reading_stub("d", 3));
    assert!(!slow.is_slow());
    tokio::time::advance(Duration::from_secs(2)).await;
    hub.publish_reading("d", &reading_stub("d", 4));
    assert!(slow.is_slow());
}

#[test]
fn the_replay_ring_is_bounded_and_knows_what_it_can_recover() {
    let hub = Hub::new(HubConfig {
        replay_capacity: 5,
        ..HubConfig::default()
    });
    assert_eq!(
        hub.recoverable(0),
        Some(0),
        "nothing published, nothing missed"
    );
    for seq in 1..=10 {
        hub.publish_reading("d", &reading_stub("d", seq));
    }
    assert_eq!(hub.stats().replay_len, 5);
    assert_eq!(hub.recoverable(4), None, "offset 5 is gone");
    assert_eq!(hub.recoverable(5), Some(10));
    assert_eq!(hub.recoverable(10), Some(10));
    assert_eq!(hub.recoverable(11), None, "an offset from the future");

    let offsets = |after, upto, max| {
        hub.replay_chunk(after, upto, max)
            .map(|frames| frames.iter().map(|f| f.offset).collect::<Vec<_>>())
    };
    assert_eq!(offsets(5, 10, 100), Some(vec![6, 7, 8, 9, 10]));
    assert_eq!(offsets(5, 10, 2), Some(vec![6, 7]));
    assert_eq!(offsets(6, 8, 100), Some(vec![7, 8]));
    assert_eq!(offsets(10, 10, 100), Some(vec![]));
    assert_eq!(offsets(3, 10, 100), None);
}

#[test]
fn subscriptions_are_bounded_per_client() {
    let hub = Hub::new(HubConfig::default());
    let (client, _rx) = attach(&hub, 1);
    let mut subs = write(&hub.subscriptions);
    let ids = (0..10_000).map(|i| format!("d_{i}")).collect();
    subs.subscribe(client.id, ids).expect("within the limit");
    let err = subs
        .subscribe(client.id, vec!["one_more".into()])
        .expect_err("over the limit");
    assert!(err.contains("subscribe_all"));
    assert_eq!(subs.subscribed_ids(), 10_000);
    subs.remove(client.id);
    assert!(!subs.matches(client.id, "d_0"));
    assert_eq!(subs.subscribed_ids(), 0);
}

#[test]
fn subscriptions_are_bounded_for_all_clients_together() {
    let hub = Hub::new(HubConfig {
        max_subscribed_ids: 15,
        ..HubConfig::default()
    });
    let (a, _rx_a) = attach(&hub, 1);
    let (b, _rx_b) = attach(&hub, 2);
    let ids = |prefix: &str, n: usize| (0..n).map(|i| format!("{prefix}{i}")).collect();
    let mut subs = write(&hub.subscriptions);
    subs.subscribe(a.id, ids("a", 10)).expect("within the cap");
    // Ids already held by this client cost nothing more.
    subs.subscribe(a.id, ids("a", 10)).expect("again");
    let err = subs.subscribe(b.id, ids("b", 6)).expect_err("over the cap");
    assert!(err.contains("all clients together"), "{err}");
    assert!(
        !subs.matches(b.id, "b0"),
        "a refused subscribe adds nothing"
    );
    subs.subscribe(b.id, ids("b", 5))
        .expect("exactly at the cap");
    assert_eq!(subs.subscribed_ids(), 15);

    subs.unsubscribe(a.id, &ids("a", 3));
    assert_eq!(subs.subscribed_ids(), 12);
    subs.subscribe_all(a.id);
    assert_eq!(subs.subscribed_ids(), 5, "subscribe_all holds no ids");
    subs.unsubscribe_all(b.id);
    assert_eq!(subs.subscribed_ids(), 0);
    drop(subs);
    assert_eq!(hub.stats().subscribed_ids, 0);
}

#[test]
fn publish_skips_payloads_that_are_not_utf8() {
    let hub = Hub::new(HubConfig::default());
    hub.publish_reading("d", &[0xff, 0xfe]);
    assert_eq!(hub.offset(), 0);
    assert_eq!(hub.stats().invalid_payloads, 1);
}

/// Properties of the client-message parser over generated frames (the libFuzzer target
/// `fuzz/fuzz_targets/client_message.rs` runs the same entry point without bounds).
mod parse_properties {
    use proptest::prelude::*;
    use serde_json::json;

    use super::protocol::{self, ClientMessage, MAX_BATCH_MS, MAX_IDS_PER_MESSAGE, MIN_BATCH_MS};

    /// A JSON value of any shape, a few levels deep.
    fn any_json() -> impl Strategy<Value = serde_json::Value> {
        let leaf = prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(serde_json::Value::from),
            any::<i64>().prop_map(serde_json::Value::from),
            any::<u64>().prop_map(serde_json::Value::from),
            any::<f64>().prop_map(serde_json::Value::from),
            "[a-z_0-9 .:-]{0,12}".prop_map(serde_json::Value::from),
            ".{0,8}".prop_map(serde_json::Value::from),
        ];
        leaf.prop_recursive(3, 24, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::from),
                prop::collection::btree_map("[a-z_]{1,10}", inner, 0..5)
                    .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
            ]
        })
    }

    /// A frame that looks like a client message: a known or unknown `type`, the fields the
    /// messages have, with values of any type, and extra fields.
    fn message_like() -> impl Strategy<Value = String> {
        let kind = prop_oneof![
            Just("subscribe"),
            Just("subscribe_all"),
            Just("unsubscribe"),
            Just("unsubscribe_all"),
            Just("ping"),
            Just("resume"),
            Just("options"),
            Just("dance"),
        ];
        let ids = prop_oneof![
            prop::collection::vec("[A-Za-z0-9_.:-]{1,64}", 0..20).prop_map(|v| json!(v)),
            prop::collection::vec(".{0,70}", 0..5).prop_map(|v| json!(v)),
            any_json(),
        ];
        let number = prop_oneof![
            (0u64..2000).prop_map(|n| json!(n)),
            any::<i64>().prop_map(|n| json!(n)),
            any_json()
        ];
        (
            kind,
            ids,
            number.clone(),
            number,
            any_json(),
            any_json(),
            any::<u8>(),
        )
            .prop_map(|(kind, ids, n1, n2, epoch, extra, mask)| {
                let mut m = serde_json::Map::new();
                m.insert("type".into(), json!(kind));
                let fields = [
                    ("device_ids", ids),
                    ("batch_ms", n1),
                    ("offset", n2),
                    ("epoch", epoch),
                    ("conflate", extra.clone()),
                    ("extra", extra),
                ];
                for (i, (name, value)) in fields.into_iter().enumerate() {
                    if mask & (1 << i) != 0 {
                        m.insert(name.into(), value);
                    }
                }
                serde_json::Value::Object(m).to_string()
            })
    }

    /// What a parsed message promises the connection that acts on it.
    fn holds_its_bounds(message: &ClientMessage) -> bool {
        match message {
            ClientMessage::Subscribe(ids) | ClientMessage::Unsubscribe(ids) => {
                ids.len() <= MAX_IDS_PER_MESSAGE
                    && ids.iter().all(|id| iiot_model::device_id_is_valid(id))
            }
            ClientMessage::Options {
                batch_ms: Some(ms), ..
            } => *ms == 0 || (MIN_BATCH_MS..=MAX_BATCH_MS).contains(ms),
            _ => true,
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(500))]

        #[test]
        fn any_text_gets_a_message_or_an_explained_error(text in ".{0,200}") {
            match protocol::parse(&text) {
                Ok(message) => prop_assert!(holds_its_bounds(&message), "{message:?}"),
                Err(reply) => prop_assert!(!reply.is_empty()),
            }
        }

        #[test]
        fn message_like_frames_are_parsed_within_bounds_or_explained(text in message_like()) {
            match protocol::parse(&text) {
                Ok(message) => prop_assert!(holds_its_bounds(&message), "{text} -> {message:?}"),
                Err(reply) => prop_assert!(!reply.is_empty()),
            }
        }
    }
}
