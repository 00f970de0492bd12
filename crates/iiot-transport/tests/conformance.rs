//! The conformance suite against the embedded bus.

use std::collections::HashMap;

use iiot_transport::{Bus, BusConfig, Publisher, Transport, TransportError, conformance};

fn bus(capacity: usize) -> Bus {
    Bus::new(BusConfig {
        default_partitions: 4,
        partitions: HashMap::new(),
        queue_capacity: capacity,
    })
}

#[tokio::test]
async fn keyed_order_is_kept() {
    conformance::keyed_order_is_kept(&bus(1024), "t-order").await;
}

#[tokio::test]
async fn every_group_gets_everything() {
    conformance::every_group_gets_everything(&bus(1024), "t-groups").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backpressure_never_drops() {
    let b = bus(16);
    conformance::backpressure_never_drops(&b, "t-slow").await;
    assert!(
        b.stats()
            .backpressure_waits
            .load(std::sync::atomic::Ordering::Relaxed)
            > 0,
        "a 16-slot queue under 20,000 messages must have made the publisher wait"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receive_is_cancel_safe() {
    conformance::receive_is_cancel_safe(&bus(1024), "t-cancel").await;
}

#[tokio::test]
async fn every_group_gets_everything_through_a_small_queue() {
    conformance::every_group_gets_everything(&bus(16), "t-groups-small").await;
}

#[tokio::test]
async fn payloads_are_preserved() {
    conformance::payloads_are_preserved(&bus(1024), "t-bytes").await;
}

#[tokio::test]
async fn a_group_has_one_member_and_can_rejoin_after_leaving() {
    let b = bus(8);
    let first = b.subscribe("t", "g").await.expect("first member");
    assert!(matches!(
        b.subscribe("t", "g").await,
        Err(TransportError::GroupBusy { .. })
    ));
    drop(first);
    b.subscribe("t", "g").await.expect("rejoin after leaving");
}

#[tokio::test]
async fn unrouted_messages_are_counted_and_close_ends_streams() {
    let b = bus(8);
    b.publish("nobody", b"k", "x".into())
        .await
        .expect("publish");
    assert_eq!(
        b.stats()
            .unrouted
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );

    let mut sub = b.subscribe("t", "g").await.expect("subscribe");
    b.publish("t", b"k", "queued".into())
        .await
        .expect("publish");
    b.close();
    assert!(matches!(
        b.publish("t", b"k", "late".into()).await,
        Err(TransportError::Closed)
    ));
    // What was queued before close is still delivered, then the stream ends.
    let mut out = Vec::new();
    assert_eq!(sub.recv_batch(&mut out, 10).await.expect("recv"), 1);
    assert_eq!(&out[0].payload[..], b"queued");
    out.clear();
    assert_eq!(sub.recv_batch(&mut out, 10).await.expect("recv"), 0);
}

#[tokio::test]
async fn lag_counts_uncommitted_messages() {
    let b = bus(64);
    let mut sub = b.subscribe("t", "g").await.expect("subscribe");
    for i in 0..10 {
        b.publish("t", format!("k{i}").as_bytes(), "x".into())
            .await
            .expect("publish");
    }
    assert_eq!(b.lag("t", "g"), Some(10));
    let got = conformance::receive(sub.as_mut(), 10).await;
    assert_eq!(got.len(), 10);
    assert_eq!(b.lag("t", "g"), Some(0));
    // A group that joins later starts at the end: what came before is not its lag.
    let _late = b.subscribe("t", "late").await.expect("subscribe");
    assert_eq!(b.lag("t", "late"), Some(0));
}

#[tokio::test]
async fn closing_one_topic_leaves_the_others_open() {
    let b = bus(8);
    let mut input = b.subscribe("in", "g").await.expect("subscribe");
    let mut output = b.subscribe("out", "g").await.expect("subscribe");
    b.publish("in", b"k", "last".into()).await.expect("publish");
    b.close_topic("in");
    assert!(matches!(
        b.publish("in", b"k", "x".into()).await,
        Err(TransportError::Closed)
    ));
    let mut got = Vec::new();
    assert_eq!(input.recv_batch(&mut got, 10).await.expect("recv"), 1);
    assert_eq!(input.recv_batch(&mut got, 10).await.expect("recv"), 0);
    b.publish("out", b"k", "alert".into())
        .await
        .expect("other topics still open");
    assert_eq!(output.recv_batch(&mut got, 10).await.expect("recv"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_members_split_partitions_and_keep_keys_together() {
    let b = Bus::new(BusConfig {
        default_partitions: 10,
        partitions: HashMap::new(),
        queue_capacity: 64,
    });
    let members = b.subscribe_group("t", "g", 3).expect("three members");
    assert_eq!(members.len(), 3);
    let publisher = b.clone();
    let producer = tokio::spawn(async move {
        for i in 0..3000u32 {
            let key = format!("device_{:03}", i % 100);
            publisher
                .publish("t", key.as_bytes(), i.to_string().into())
                .await
                .expect("publish");
        }
    });
    let mut handles = Vec::new();
    for mut m in members {
        handles.push(tokio::spawn(async move {
            let mut got = Vec::new();
            let mut batch = Vec::new();
            loop {
                batch.clear();
                match tokio::time::timeout(
                    std::time::Duration::from_millis(500),
                    m.recv_batch(&mut batch, 128),
                )
                .await
                {
                    Ok(Ok(n)) if n > 0 => got.append(&mut batch),
                    _ => return got,
                }
            }
        }));
    }
    producer.await.expect("producer");
    let mut owner: HashMap<bytes::Bytes, usize> = HashMap::new();
    let mut total = 0;
    for (i, h) in handles.into_iter().enumerate() {
        let got = h.await.expect("member");
        assert!(!got.is_empty(), "member {i} got nothing");
        total += got.len();
        for m in got {
            assert_eq!(
                m.partition as usize % 3,
                i,
                "partition {} went to member {i}",
                m.partition
            );
            assert_eq!(
                *owner.entry(m.key.clone()).or_insert(i),
                i,
                "a key moved between members"
            );
        }
    }
    assert_eq!(total, 3000, "each message to exactly one member");
}

#[tokio::test]
async fn publish_to_lands_in_the_partition_asked() {
    conformance::publish_to_lands_in_the_partition_asked(&bus(1024), "t-partition").await;
}
