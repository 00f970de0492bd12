//! The conformance suite: behaviour every [`Transport`] backend must show. The embedded bus runs
//! it in `tests/conformance.rs`; the Kafka backend runs the same functions against a real broker.
//!
//! Each check takes a transport and the name of a topic nobody else uses (with at least 4
//! partitions where the backend needs topics created up front) and panics on a violation.

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;

use crate::{Message, Subscriber, Transport};

/// How long a check waits for messages before it fails.
pub const RECEIVE_TIMEOUT: Duration = Duration::from_secs(30);

/// Receives until `n` messages arrived, committing each; panics after [`RECEIVE_TIMEOUT`].
pub async fn receive(sub: &mut dyn Subscriber, n: usize) -> Vec<Message> {
    let mut got = Vec::with_capacity(n);
    let mut batch = Vec::new();
    let deadline = tokio::time::Instant::now() + RECEIVE_TIMEOUT;
    while got.len() < n {
        batch.clear();
        let r = tokio::time::timeout_at(deadline, sub.recv_batch(&mut batch, 1024)).await;
        let received = match r {
            Ok(Ok(k)) => k,
            Ok(Err(e)) => panic!("receive failed after {} of {n}: {e}", got.len()),
            Err(_) => panic!("timed out after {} of {n} messages", got.len()),
        };
        assert!(
            received > 0,
            "stream ended after {} of {n} messages",
            got.len()
        );
        for m in batch.drain(..) {
            sub.commit(&m).expect("commit");
            got.push(m);
        }
    }
    got
}

/// Messages of one key stay in one partition, arrive in publish order, and offsets grow.
pub async fn keyed_order_is_kept(t: &dyn Transport, topic: &str) {
    let mut sub = t
        .subscribe(topic, "conformance-order")
        .await
        .expect("subscribe");
    let publisher = t.publisher();
    let (keys, per_key) = (40, 50);
    // Publish from its own task: a bounded backend may make the publisher wait for the reader.
    let topic_owned = topic.to_string();
    let producer = tokio::spawn(async move {
        for i in 0..per_key {
            for k in 0..keys {
                let key = format!("device_{k:03}");
                let payload = Bytes::from(format!("{key}:{i}"));
                publisher
                    .publish(&topic_owned, key.as_bytes(), payload)
                    .await
                    .expect("publish");
            }
        }
        publisher.flush().await.expect("flush");
    });
    let got = receive(sub.as_mut(), keys * per_key).await;
    producer.await.expect("producer task");

    let mut next_index: HashMap<Bytes, usize> = HashMap::new();
    let mut partition_of: HashMap<Bytes, i32> = HashMap::new();
    let mut last_offset: HashMap<i32, i64> = HashMap::new();
    for m in &got {
        let body = std::str::from_utf8(&m.payload).expect("utf8 payload");
        let (key, i) = body.split_once(':').expect("key:index");
        assert_eq!(key.as_bytes(), &m.key[..], "key preserved");
        let i: usize = i.parse().expect("index");
        let expected = next_index.entry(m.key.clone()).or_insert(0);
        assert_eq!(i, *expected, "{key}: out of order");
        *expected += 1;
        let p = *partition_of.entry(m.key.clone()).or_insert(m.partition);
        assert_eq!(p, m.partition, "{key} moved partition");
        if let Some(prev) = last_offset.insert(m.partition, m.offset) {
            assert!(
                m.offset > prev,
                "offsets must grow in partition {}",
                m.partition
            );
        }
        assert_eq!(&*m.topic, topic);
    }
    assert!(next_index.values().all(|&n| n == per_key));
    assert!(
        partition_of
            .values()
            .collect::<std::collections::HashSet<_>>()
            .len()
            > 1,
        "40 keys should spread over more than one partition"
    );
}

/// Two consumer groups each receive every message.
pub async fn every_group_gets_everything(t: &dyn Transport, topic: &str) {
    let mut a = t
        .subscribe(topic, "conformance-a")
        .await
        .expect("subscribe a");
    let mut b = t
        .subscribe(topic, "conformance-b")
        .await
        .expect("subscribe b");
    let publisher = t.publisher();
    // Publish from its own task: a bounded backend waits for both groups to make room.
    let topic_owned = topic.to_string();
    let producer = tokio::spawn(async move {
        for i in 0..300u32 {
            let key = format!("k{}", i % 7);
            publisher
                .publish(&topic_owned, key.as_bytes(), Bytes::from(i.to_string()))
                .await
                .expect("publish");
        }
        publisher.flush().await.expect("flush");
    });
    let (got_a, got_b) = tokio::join!(receive(a.as_mut(), 300), receive(b.as_mut(), 300));
    producer.await.expect("producer task");
    for got in [got_a, got_b] {
        let mut bodies: Vec<u32> = got
            .iter()
            .map(|m| {
                std::str::from_utf8(&m.payload)
                    .expect("utf8")
                    .parse()
                    .expect("number")
            })
            .collect();
        bodies.sort_unstable();
        assert_eq!(bodies, (0..300).collect::<Vec<_>>());
    }
}

/// A publisher faster than its consumer waits; nothing is lost.
pub async fn backpressure_never_drops(t: &dyn Transport, topic: &str) {
    let mut sub = t
        .subscribe(topic, "conformance-slow")
        .await
        .expect("subscribe");
    let publisher = t.publisher();
    let total = 20_000u32;
    let topic_owned = topic.to_string();
    let producer = tokio::spawn(async move {
        for i in 0..total {
            let key = format!("k{}", i % 13);
            publisher
                .publish(&topic_owned, key.as_bytes(), Bytes::from(i.to_string()))
                .await
                .expect("publish");
        }
        publisher.flush().await.expect("flush");
    });
    // Let the producer run ahead before consuming slowly in small batches.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut seen = vec![false; total as usize];
    let mut batch = Vec::new();
    let mut count = 0usize;
    let deadline = tokio::time::Instant::now() + RECEIVE_TIMEOUT;
    while count < total as usize {
        batch.clear();
        let n = tokio::time::timeout_at(deadline, sub.recv_batch(&mut batch, 64))
            .await
            .expect("timed out: messages lost?")
            .expect("receive");
        assert!(n > 0, "stream ended early");
        for m in &batch {
            let i: usize = std::str::from_utf8(&m.payload)
                .expect("utf8")
                .parse()
                .expect("n");
            assert!(!seen[i], "message {i} delivered twice");
            seen[i] = true;
            count += 1;
            sub.commit(m).expect("commit");
        }
        tokio::task::yield_now().await;
    }
    producer.await.expect("producer task");
    assert!(seen.iter().all(|s| *s));
}

/// Empty, binary and large payloads and non-UTF-8 keys pass unchanged.
pub async fn payloads_are_preserved(t: &dyn Transport, topic: &str) {
    let mut sub = t
        .subscribe(topic, "conformance-bytes")
        .await
        .expect("subscribe");
    let publisher = t.publisher();
    let payloads: Vec<Bytes> = vec![
        Bytes::from_static(b""),
        Bytes::from_static(&[0, 159, 146, 150, 255]),
        Bytes::from(vec![b'x'; 60 * 1024]),
        Bytes::from("温度 °C".as_bytes()),
    ];
    let key: &[u8] = &[0xff, 0x00, 0x7f];
    for p in &payloads {
        publisher
            .publish(topic, key, p.clone())
            .await
            .expect("publish");
    }
    publisher.flush().await.expect("flush");
    let got = receive(sub.as_mut(), payloads.len()).await;
    let bodies: Vec<Bytes> = got.iter().map(|m| m.payload.clone()).collect();
    assert_eq!(bodies, payloads, "same key: same order, same bytes");
    assert!(got.iter().all(|m| &m.key[..] == key));
}

/// `publish_to` puts each message in the partition asked, whatever its key; a partition the
/// topic (of 4 partitions) does not have is refused, at once or on delivery.
pub async fn publish_to_lands_in_the_partition_asked(t: &dyn Transport, topic: &str) {
    let mut sub = t
        .subscribe(topic, "conformance-partition")
        .await
        .expect("subscribe");
    for i in 0..20i32 {
        let receipt = t
            .publish_to(topic, i % 4, b"one-key", Bytes::from(i.to_string()))
            .await
            .expect("publish_to");
        receipt.delivered().await.expect("delivered");
    }
    let got = receive(sub.as_mut(), 20).await;
    for m in &got {
        let i: i32 = std::str::from_utf8(&m.payload)
            .expect("utf-8")
            .parse()
            .expect("number");
        assert_eq!(m.partition, i % 4, "message {i}");
    }
    let refused = match t.publish_to(topic, 4, b"k", Bytes::new()).await {
        Ok(receipt) => receipt.delivered().await.is_err(),
        Err(_) => true,
    };
    assert!(refused, "partition 4 of a 4-partition topic");
}

/// Dropping a pending `recv_batch` (as `select!` does when a timer wins) loses nothing.
pub async fn receive_is_cancel_safe(t: &dyn Transport, topic: &str) {
    let mut sub = t
        .subscribe(topic, "conformance-cancel")
        .await
        .expect("subscribe");
    let publisher = t.publisher();
    let total = 200u32;
    let topic_owned = topic.to_string();
    let producer = tokio::spawn(async move {
        for i in 0..total {
            publisher
                .publish(&topic_owned, b"k", Bytes::from(i.to_string()))
                .await
                .expect("publish");
            if i % 10 == 0 {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
        publisher.flush().await.expect("flush");
    });
    let mut got = Vec::new();
    let mut batch = Vec::new();
    let deadline = tokio::time::Instant::now() + RECEIVE_TIMEOUT;
    while got.len() < total as usize {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {}",
            got.len()
        );
        batch.clear();
        // A very short timeout cancels most calls mid-wait.
        if let Ok(r) =
            tokio::time::timeout(Duration::from_micros(200), sub.recv_batch(&mut batch, 7)).await
        {
            assert!(r.expect("receive") > 0, "stream ended early");
        }
        for m in batch.drain(..) {
            sub.commit(&m).expect("commit");
            got.push(
                std::str::from_utf8(&m.payload)
                    .expect("utf8")
                    .parse::<u32>()
                    .expect("n"),
            );
        }
    }
    producer.await.expect("producer task");
    assert_eq!(
        got,
        (0..total).collect::<Vec<_>>(),
        "one key: every message, in order"
    );
}
