//! Faults around the roles over a real Kafka-protocol broker (a private tansu per test, see
//! `iiot_kafka::testing`): a malformed message from a plain client (rdkafka), a processor
//! killed with SIGKILL, a broker that comes late, a metrics port already taken.
//!
//! Needs the `tansu` binary (`scripts/kafka-up.sh --install`).
#![cfg(feature = "kafka")]
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod support;

use std::net::TcpListener;
use std::process::Command;
use std::time::Duration;

use iiot_kafka::testing::TestBroker;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use serde_json::Value;
use support::kafka::{
    TAKEOVER_ENV, client, committed_short_of, partition_ends, read_topic, topics,
};
use support::role::{Role, free_port, log_field, simulate};

#[test]
fn a_malformed_message_from_a_plain_client_is_dead_lettered_and_processing_continues() {
    let broker = TestBroker::start(&topics());
    let mut process = Role::start(&["process"], &broker.brokers, &[]);
    process.wait_for("process ready", Role::ready);

    let producer: BaseProducer = client(&broker.brokers).create().expect("producer");
    let valid = iiot_model::Reading::example("device_042", 1, iiot::now_ms(), 21.5);
    let valid = serde_json::to_vec(&valid).expect("json");
    // Keep sending until the processor's group has formed and taken a valid reading after the
    // bad one (a group joins in seconds, and the first messages are read from the start).
    producer
        .send(
            BaseRecord::to("device-data")
                .key("device_bad")
                .payload("{not json"),
        )
        .expect("send");
    producer
        .send(
            BaseRecord::to("device-data")
                .key("device_042")
                .payload(&valid),
        )
        .expect("send");
    producer.flush(Duration::from_secs(30)).expect("flush");

    let letters = read_topic(&broker.brokers, "device-data-dlq", |seen| !seen.is_empty());
    assert_eq!(letters.len(), 1, "one dead letter");
    let letter: Value = serde_json::from_slice(&letters[0]).expect("dead letter is JSON");
    let text = letter.to_string();
    assert!(text.contains("malformed_json"), "{text}");
    assert!(
        text.contains("{not json"),
        "keeps the original payload: {text}"
    );
    process.wait_for("the valid reading after it processed", |r| {
        r.metric("iot_messages_total", "status=\"success\"") >= 1.0
    });
    assert_eq!(
        process.metric("iot_dead_letters_total", "reason=\"malformed_json\""),
        1.0
    );
}

/// Whatever a producer writes — a 450 KB key, a key that is not the payload's device, a key
/// that is not UTF-8, a header value that is not UTF-8, a 300 KB value — is dead-lettered with
/// its reason (a dead letter the broker takes: key and payload are cut), and the records behind
/// it are processed: no record stops a processor.
#[test]
fn poison_records_are_dead_lettered_and_the_records_behind_them_processed() {
    use rdkafka::message::{Header, OwnedHeaders};
    let broker = TestBroker::start(&topics());
    let mut process = Role::start(&["process"], &broker.brokers, &[]);
    process.wait_for("process ready", Role::ready);

    let producer: BaseProducer = client(&broker.brokers).create().expect("producer");
    let reading = |device: &str| {
        let r = iiot_model::Reading::example(device, 1, iiot::now_ms(), 21.5);
        serde_json::to_vec(&r).expect("json")
    };
    let huge_key = "k".repeat(450_000);
    let (r900, r902, r903, r904, r906) = (
        reading("device_900"),
        reading("device_902"),
        reading("device_903"),
        reading("device_904"),
        reading("device_906"),
    );
    let not_utf8: &[u8] = &[0xff, 0xfe];
    // A reading padded past MAX_MESSAGE_BYTES (64 KiB) with an extra field.
    let oversized = {
        let mut r: Value = serde_json::from_slice(&reading("device_905")).expect("json");
        r["padding"] = Value::String("p".repeat(300_000));
        serde_json::to_vec(&r).expect("json")
    };
    let records = [
        BaseRecord::to("device-data")
            .key(huge_key.as_bytes())
            .payload(&r900[..]),
        BaseRecord::to("device-data")
            .key(&b"device_901"[..])
            .payload(&r902[..]),
        BaseRecord::to("device-data")
            .key(not_utf8)
            .payload(&b"{not json"[..]),
        BaseRecord::to("device-data")
            .key(&b"device_903"[..])
            .payload(&r903[..])
            .headers(OwnedHeaders::new().insert(Header {
                key: "origin",
                value: Some(not_utf8),
            })),
        BaseRecord::to("device-data")
            .key(&b"device_906"[..])
            .payload(&r906[..]),
        BaseRecord::to("device-data")
            .key(&b"device_905"[..])
            .payload(&oversized[..]),
        BaseRecord::to("device-data")
            .key(&b"device_904"[..])
            .payload(&r904[..]),
    ];
    for record in records {
        producer.send(record).expect("send");
    }
    producer.flush(Duration::from_secs(30)).expect("flush");

    process.wait_for("the records behind the poison processed", |r| {
        r.metric("iot_messages_total", "status=\"success\"") >= 2.0
    });
    process.wait_for("both key mismatches dead-lettered", |r| {
        r.metric("iot_dead_letters_total", "reason=\"key_mismatch\"") >= 2.0
    });
    process.wait_for("the oversized value dead-lettered", |r| {
        r.metric("iot_dead_letters_total", "reason=\"oversize\"") >= 1.0
    });
    process.wait_for("the header that is not UTF-8 dead-lettered", |r| {
        r.metric("iot_dead_letters_total", "reason=\"bad_header\"") >= 1.0
    });
    assert_eq!(
        process.metric("iot_dead_letters_total", "reason=\"malformed_json\""),
        1.0
    );
    let letters = read_topic(&broker.brokers, "device-data-dlq", |seen| seen.len() >= 5);
    let letters: Vec<Value> = letters
        .iter()
        .map(|l| serde_json::from_slice(l).expect("dead letter is JSON"))
        .collect();
    let huge = letters
        .iter()
        .find(|l| l["key_bytes"] == 450_000)
        .expect("the huge key's dead letter was delivered");
    assert_eq!(huge["reason"], "key_mismatch");
    assert!(huge["key"].as_str().expect("key text").len() <= 256);
    let big = letters
        .iter()
        .find(|l| l["reason"] == "oversize")
        .expect("the oversized value's dead letter was delivered");
    assert_eq!(big["payload_bytes"], oversized.len());
    assert_eq!(big["key"], "device_905");
    let header = letters
        .iter()
        .find(|l| l["reason"] == "bad_header")
        .expect("the bad header's dead letter was delivered");
    assert_eq!(header["key"], "device_903");
    assert_eq!(header["payload"], std::str::from_utf8(&r903).expect("text"));
    assert!(
        header["detail"]
            .as_str()
            .expect("detail")
            .contains("origin")
    );
    assert_eq!(
        process.metric("iot_dead_letters_total", "reason=\"bad_header\""),
        1.0
    );
    assert!(process.ready(), "the processor is still running");
}

/// `KAFKA_HEADERS=any`: headers are not looked at, so a reading whose record carries a binary
/// header (tracing, schema ids) is processed like any other.
#[test]
fn with_kafka_headers_any_a_reading_with_a_binary_header_is_processed() {
    use rdkafka::message::{Header, OwnedHeaders};
    let broker = TestBroker::start(&topics());
    let mut process = Role::start(&["process"], &broker.brokers, &[("KAFKA_HEADERS", "any")]);
    process.wait_for("process ready", Role::ready);
    let producer: BaseProducer = client(&broker.brokers).create().expect("producer");
    let reading = serde_json::to_vec(&iiot_model::Reading::example(
        "device_920",
        1,
        iiot::now_ms(),
        21.5,
    ))
    .expect("json");
    let binary: &[u8] = &[0xff, 0xfe];
    producer
        .send(
            BaseRecord::to("device-data")
                .key("device_920")
                .payload(&reading[..])
                .headers(OwnedHeaders::new().insert(Header {
                    key: "schema-id",
                    value: Some(binary),
                })),
        )
        .expect("send");
    producer.flush(Duration::from_secs(30)).expect("flush");
    process.wait_for("the reading processed", |r| {
        r.metric("iot_messages_total", "status=\"success\"") >= 1.0
    });
    assert_eq!(
        process.metric("iot_dead_letters_total", "reason=\"bad_header\""),
        0.0
    );
}

/// A dead letter the producer refuses for good (larger than `message.max.bytes`, here set
/// down to librdkafka's least, 1,000 bytes, so that a 4 KB payload excerpt is too large) is
/// counted, logged and skipped: its input is committed and the records behind it are
/// processed. librdkafka's own size check refuses it before any broker sees it.
#[test]
fn a_dead_letter_that_cannot_be_delivered_is_counted_and_skipped() {
    let broker = TestBroker::start(&topics());
    let mut process = Role::start(
        &["process"],
        &broker.brokers,
        &[("KAFKA_PROPERTIES", "message.max.bytes=1000")],
    );
    process.wait_for("process ready", Role::ready);

    let producer: BaseProducer = client(&broker.brokers).create().expect("producer");
    let garbage = format!("{{not json {}", "x".repeat(3_000));
    let reading = serde_json::to_vec(&iiot_model::Reading::example(
        "device_911",
        1,
        iiot::now_ms(),
        21.5,
    ))
    .expect("json");
    for (key, payload) in [
        ("device_910", garbage.as_bytes()),
        ("device_911", &reading[..]),
    ] {
        producer
            .send(BaseRecord::to("device-data").key(key).payload(payload))
            .expect("send");
    }
    producer.flush(Duration::from_secs(30)).expect("flush");

    // Two keys, so two partitions: either may be read first.
    process.wait_for("the reading behind it processed", |r| {
        r.metric("iot_messages_total", "status=\"success\"") >= 1.0
    });
    process.wait_for("the garbage judged", |r| {
        r.metric("iot_dead_letters_total", "reason=\"malformed_json\"") >= 1.0
    });
    assert_eq!(
        process.metric("iot_dead_letters_total", "reason=\"malformed_json\""),
        1.0
    );
    process.wait_for("the refused dead letter counted", |r| {
        r.metric("iot_publish_errors_total", "") >= 1.0
    });
    let ends = partition_ends(&broker.brokers, "device-data", 10);
    process.wait_for("both records committed", |_| {
        committed_short_of(&broker.brokers, "iot-consumer-group", "device-data", &ends).is_empty()
    });
    assert!(
        process.log_text().contains("refused"),
        "the refusal is logged"
    );
    assert!(process.ready(), "the processor is still running");
}

#[test]
fn two_processors_share_the_partitions_and_one_takes_over_after_sigkill() {
    let broker = TestBroker::start(&topics());
    let mut first = Role::start(&["process"], &broker.brokers, &TAKEOVER_ENV);
    let mut second = Role::start(&["process"], &broker.brokers, &TAKEOVER_ENV);
    first.wait_for("first ready", Role::ready);
    second.wait_for("second ready", Role::ready);
    // tansu cannot serve a fetch that starts inside a record batch (it skips to the next
    // batch), which a member taking over at a committed offset does; one record per batch
    // keeps every committed offset on a batch boundary. Apache Kafka needs no such setting.
    let simulate = simulate(
        &broker.brokers,
        "50",
        "100ms",
        "12s",
        "11",
        &[("KAFKA_PROPERTIES", "batch.num.messages=1")],
    );
    // Both members get work: the group split the partitions.
    first.wait_for("both processors busy", |r| {
        r.metric("iot_messages_total", "status=\"success\"") > 0.0
            && second.metric("iot_messages_total", "status=\"success\"") > 0.0
    });
    let before_kill = first.metric("iot_messages_total", "");
    let _ = Command::new("kill")
        .args(["-KILL", &first.child.id().to_string()])
        .status();
    let _ = first.child.wait();
    let status = {
        let mut simulate = simulate;
        simulate.wait_for("simulator done", |r| {
            r.log_text().contains("simulator stopped")
        });
        simulate.stop()
    };
    assert!(status.success());

    // Every message of every partition is processed and committed by the group: the committed
    // offsets reach the end of each partition (offsets are committed only after a reading's
    // outputs are delivered, so this is "each reading processed at least once").
    let ends = partition_ends(&broker.brokers, "device-data", 10);
    let produced: i64 = ends.values().sum();
    assert!(produced > 1000, "the simulator produced {produced}");
    let mut behind = Vec::new();
    second.wait_for("the survivor committed every partition to its end", |_| {
        behind = committed_short_of(&broker.brokers, "iot-consumer-group", "device-data", &ends);
        behind.is_empty()
    });
    let survivor = second.metric("iot_messages_total", "");
    let duplicates = second.metric("iot_dead_letters_total", "reason=\"duplicate_seq\"");
    eprintln!(
        "produced {produced}; killed member had processed ≥{before_kill}, survivor {survivor} \
         ({duplicates} recognised as duplicates by seq)"
    );
    // The survivor read at least what the killed member had not committed.
    assert!(before_kill + survivor >= produced as f64, "{behind:?}");
    assert!(second.stop().success());
}

#[test]
fn ready_is_503_without_a_broker_and_200_once_it_comes() {
    let mut broker = TestBroker::reserve(&[]);
    let mut process = Role::start(&["process"], &broker.brokers, &[]);
    process.wait_for("HTTP up", |r| r.get("/health").is_some());
    for _ in 0..10 {
        let (status, body) = process.get("/ready").expect("answers");
        assert_eq!(status, 503, "{body}");
        std::thread::sleep(Duration::from_millis(300));
    }
    broker.start_again();
    process.wait_for("ready once the broker answers", Role::ready);
    process.wait_for("topics created", |r| {
        r.log_text().contains("Kafka topics ready")
    });
    // The broker being away was logged a few times, not once per attempt or message.
    let log = process.log_text();
    let complaints = log
        .lines()
        .filter(|l| l.contains("WARN") || l.contains("ERROR"))
        .count();
    assert!(complaints <= 10, "{complaints} warnings:\n{log}");
    assert!(process.stop().success());
}

#[test]
fn simulate_runs_on_when_its_metrics_port_is_taken() {
    let broker = TestBroker::start(&topics());
    let taken = TcpListener::bind(("0.0.0.0", free_port())).expect("bind");
    let port = taken.local_addr().expect("addr").port().to_string();
    let mut simulate = simulate(
        &broker.brokers,
        "5",
        "100ms",
        "2s",
        "1",
        &[("HTTP_PORT", &port)],
    );
    simulate.wait_for("the simulator to finish", |r| {
        r.log_text().contains("simulator stopped")
    });
    let status = simulate.child.wait().expect("exit");
    let log = simulate.log_text();
    assert!(status.success(), "{log}");
    assert!(log.contains("no /health, /ready or /metrics"), "{log}");
    let sent = log_field(&log, "simulator stopped", "sent").unwrap_or(0);
    assert!(sent > 0, "{log}");
}
