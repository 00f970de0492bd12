//! `KAFKA_ASSIGNMENT_STRATEGY` both ways, on librdkafka's mock cluster: when a second member
//! joins, the first reports revoked exactly the partitions the second now owns, and reports
//! nothing newly assigned — so a processor reads back the alert state of the moved partitions
//! only, and keeps the state of those it keeps.
//!
//! The mock cluster rather than tansu: tansu 0.6 evicts a dead member late and, after repeated
//! kills and restarts, may keep partitions assigned to a dead member; with
//! `cooperative-sticky` the SIGKILL takeover over tansu did not finish within the takeover
//! test's patience (see `crates/iiot/tests/kafka_rebalance.rs`). The mock's group coordinator
//! does what Kafka's does.

use std::collections::BTreeSet;
use std::time::Duration;

use bytes::Bytes;
use iiot_kafka::{Assignment, KafkaSettings, KafkaTransport};
use iiot_transport::{Message, Subscriber, Transport};
use rdkafka::mocking::MockCluster;
use tokio::time::{Instant, sleep, timeout};

const TOPIC: &str = "device-data";
const PARTITIONS: i32 = 6;
const LONG: Duration = Duration::from_secs(60);

async fn receive_some(sub: &mut dyn Subscriber, wait: Duration) -> Vec<Message> {
    let mut batch = Vec::new();
    if let Ok(r) = timeout(wait, sub.recv_batch(&mut batch, 256)).await {
        r.expect("receive");
    }
    sub.commit_batch(&batch).expect("commit");
    batch
}

/// Publishes one message to every partition, so each member receives from each it holds.
async fn one_each(t: &KafkaTransport) {
    for p in 0..PARTITIONS {
        t.publish_to(TOPIC, p, b"k", Bytes::from_static(b"x"))
            .await
            .expect("publish")
            .delivered()
            .await
            .expect("delivered");
    }
}

/// The first member alone, then a second joins; returns what each reported.
struct Split {
    first_gained_at_start: BTreeSet<i32>,
    first_revoked: BTreeSet<i32>,
    first_gained_after_join: BTreeSet<i32>,
    second_gained: BTreeSet<i32>,
}

async fn split(assignment: Assignment) -> Split {
    let cluster = MockCluster::new(1).expect("mock cluster");
    cluster.create_topic(TOPIC, PARTITIONS, 1).expect("topic");
    let mut s = KafkaSettings::new(cluster.bootstrap_servers());
    s.assignment = assignment;
    s.properties = vec![
        ("session.timeout.ms".into(), "6000".into()),
        ("heartbeat.interval.ms".into(), "500".into()),
    ];
    let t = KafkaTransport::new(s).expect("transport");
    let mut a = t.subscribe(TOPIC, "processors").await.expect("member a");
    let deadline = Instant::now() + LONG;
    let mut first_gained_at_start = BTreeSet::new();
    while first_gained_at_start.len() < PARTITIONS as usize {
        assert!(
            Instant::now() < deadline,
            "a should be given every partition"
        );
        one_each(&t).await;
        receive_some(a.as_mut(), Duration::from_millis(200)).await;
        first_gained_at_start.extend(a.take_assigned());
    }
    assert!(a.take_revoked().is_empty());

    let mut b = t.subscribe(TOPIC, "processors").await.expect("member b");
    let (mut second_gained, mut first_revoked, mut first_gained_after_join) =
        (BTreeSet::new(), BTreeSet::new(), BTreeSet::new());
    while second_gained.is_empty() || first_revoked.len() < second_gained.len() {
        assert!(
            Instant::now() < deadline,
            "b should be given partitions: b {second_gained:?}, a lost {first_revoked:?}"
        );
        one_each(&t).await;
        let _ = tokio::join!(
            receive_some(a.as_mut(), Duration::from_millis(200)),
            receive_some(b.as_mut(), Duration::from_millis(200))
        );
        second_gained.extend(b.take_assigned());
        // What the processor does once a second: revoked first, then newly assigned.
        first_revoked.extend(a.take_revoked());
        first_gained_after_join.extend(a.take_assigned());
    }
    // Let the group settle, then look once more.
    sleep(Duration::from_secs(1)).await;
    let _ = tokio::join!(
        receive_some(a.as_mut(), Duration::from_millis(300)),
        receive_some(b.as_mut(), Duration::from_millis(300))
    );
    first_revoked.extend(a.take_revoked());
    first_gained_after_join.extend(a.take_assigned());
    second_gained.extend(b.take_assigned());
    Split {
        first_gained_at_start,
        first_revoked,
        first_gained_after_join,
        second_gained,
    }
}

fn assert_b_holds_some(s: &Split, how: &str) {
    let all: BTreeSet<i32> = (0..PARTITIONS).collect();
    assert_eq!(s.first_gained_at_start, all, "{how}: a alone holds all");
    assert!(
        !s.second_gained.is_empty() && s.second_gained.len() < all.len(),
        "{how}: b holds some: {:?}",
        s.second_gained
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eager_a_join_revokes_everything_and_what_comes_back_may_be_read_again() {
    let s = split(Assignment::Eager).await;
    assert_b_holds_some(&s, "eager");
    // Every partition is revoked and some given back: if the processor looked in between, it
    // saw them all revoked and the kept ones gained again (their state is read again);
    // otherwise only the moved ones. Either way what a lost for good is exactly b's.
    let lost: BTreeSet<i32> = s
        .first_revoked
        .difference(&s.first_gained_after_join)
        .copied()
        .collect();
    assert_eq!(
        lost, s.second_gained,
        "eager: a lost exactly what b was given"
    );
    assert!(s.first_gained_after_join.is_disjoint(&s.second_gained));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cooperative_sticky_a_join_moves_only_the_partitions_the_new_member_takes() {
    let s = split(Assignment::CooperativeSticky).await;
    assert_b_holds_some(&s, "cooperative-sticky");
    assert_eq!(
        s.first_revoked, s.second_gained,
        "cooperative-sticky: only the moved partitions are revoked"
    );
    assert!(
        s.first_gained_after_join.is_empty(),
        "cooperative-sticky: the kept partitions are not assigned again (their state is kept, \
         not read back): {:?}",
        s.first_gained_after_join
    );
}
