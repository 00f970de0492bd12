//! The roles over a real Kafka-protocol broker (a private tansu per test, see
//! `iiot_kafka::testing`), driven as a user drives them: the `iiot` binary, environment
//! variables, the HTTP API, and a plain Kafka client (rdkafka) on the side.
//!
//! Needs the `tansu` binary (`scripts/kafka-up.sh --install`).

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use iiot_kafka::TopicSpec;
use iiot_kafka::testing::TestBroker;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Message as _, Offset, TopicPartitionList};
use serde_json::Value;

/// Generous: group joins and rebalances take seconds, and CI machines are shared.
const PATIENCE: Duration = Duration::from_secs(90);

/// A port below the ephemeral range (32768–60999) that nothing listens on now.
fn free_port() -> u16 {
    let start = 21_000 + (std::process::id() * 7919 + nanos()) % 9_000;
    (0..9_000)
        .map(|i| 21_000 + (start - 21_000 + i) % 9_000)
        .find(|&p| TcpListener::bind(("0.0.0.0", p as u16)).is_ok())
        .expect("a free port") as u16
}

fn nanos() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos())
}

/// A running `iiot` role; killed on drop. Its output goes to a log file named in failures.
struct Role {
    child: Child,
    http_port: u16,
    log: PathBuf,
}

impl Role {
    fn start(args: &[&str], brokers: &str, env: &[(&str, &str)]) -> Role {
        let http_port = free_port();
        let log = std::env::temp_dir().join(format!(
            "iiot-kafka-test-{}-{}-{http_port}.log",
            std::process::id(),
            args[0]
        ));
        let file = std::fs::File::create(&log).expect("log file");
        let dir = std::env::temp_dir().join(format!("iiot-kafka-cwd-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("work dir");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_iiot"));
        cmd.args(args)
            .current_dir(dir)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("KAFKA_BROKERS", brokers)
            .env("HTTP_PORT", http_port.to_string())
            .env("WEBSOCKET_PORT", free_port().to_string())
            .env("STATUS_INTERVAL", "2s")
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("log file"))
            .stderr(file);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("start iiot");
        Role {
            child,
            http_port,
            log,
        }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// GET `path`: status and body; `None` while nothing answers.
    fn get(&self, path: &str) -> Option<(u16, String)> {
        http_get(self.http_port, path)
    }

    fn json(&self, path: &str) -> Option<Value> {
        let (status, body) = self.get(path)?;
        (status == 200).then(|| serde_json::from_str(&body).ok())?
    }

    /// Waits until `check` holds, failing with the role's log after [`PATIENCE`].
    fn wait_for(&mut self, what: &str, mut check: impl FnMut(&Role) -> bool) {
        let deadline = Instant::now() + PATIENCE;
        while Instant::now() < deadline {
            if check(self) {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "iiot exited ({status}) waiting for {what}:\n{}",
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!("timed out waiting for {what}; log:\n{}", self.log_text());
    }

    fn ready(&self) -> bool {
        matches!(self.get("/ready"), Some((200, _)))
    }

    /// A sample of `/metrics` (sum over series whose labels contain `labels`).
    fn metric(&self, name: &str, labels: &str) -> f64 {
        let Some((200, text)) = self.get("/metrics") else {
            return 0.0;
        };
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .filter(|l| {
                let series = l.split_whitespace().next().unwrap_or("");
                (series == name || series.starts_with(&format!("{name}{{")))
                    && series.contains(labels)
            })
            .filter_map(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
            .sum()
    }

    /// SIGTERM, then waits for a clean exit.
    fn stop(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(40);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "no exit after SIGTERM:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Role {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    http(port, "GET", path)
}

fn http(port: u16, method: &str, path: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).ok()?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_string()
    };
    Some((status, body))
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].trim_start_matches("\r\n");
    }
    out
}

fn client(brokers: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", brokers);
    c
}

/// Every message of `topic`, read from the start by a plain client, until `until` holds.
fn read_topic(
    brokers: &str,
    topic: &str,
    mut until: impl FnMut(&[Vec<u8>]) -> bool,
) -> Vec<Vec<u8>> {
    let consumer: BaseConsumer = client(brokers)
        .set("group.id", format!("test-reader-{}", nanos()))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    consumer.subscribe(&[topic]).expect("subscribe");
    let mut seen = Vec::new();
    let deadline = Instant::now() + PATIENCE;
    while Instant::now() < deadline && !until(&seen) {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
            seen.push(m.payload().unwrap_or_default().to_vec());
        }
    }
    seen
}

/// `iiot simulate --output kafka` with `devices` devices every `interval` for `duration`.
fn simulate(
    brokers: &str,
    devices: &str,
    interval: &str,
    duration: &str,
    seed: &str,
    env: &[(&str, &str)],
) -> Role {
    let args = [
        "simulate",
        "--output",
        "kafka",
        "--devices",
        devices,
        "--interval",
        interval,
        "--duration",
        duration,
        "--seed",
        seed,
    ];
    Role::start(&args, brokers, env)
}

/// The number after `name=` on the first log line containing `marker` and `name=`.
fn log_field(log: &str, marker: &str, name: &str) -> Option<u64> {
    let prefix = format!("{name}=");
    log.lines()
        .filter(|l| l.contains(marker))
        .find_map(|l| l.split_whitespace().find_map(|w| w.strip_prefix(&prefix)))
        .and_then(|v| v.parse().ok())
}

fn topics() -> Vec<TopicSpec> {
    vec![
        TopicSpec::new("device-data", 10),
        TopicSpec::new("alerts", 3),
        TopicSpec::new("device-data-dlq", 1),
    ]
}

#[test]
fn simulate_process_serve_end_to_end_with_topics_created_at_start_up() {
    // No topics: the roles create them.
    let broker = TestBroker::start(&[]);
    let mut serve = Role::start(&["serve"], &broker.brokers, &[]);
    serve.wait_for("serve ready", Role::ready);
    serve.wait_for("serve subscribed", |r| {
        r.log_text().contains("serving live data")
    });
    // Every reading is above the (lowered) temperature threshold: each device raises an alert.
    let mut process = Role::start(
        &["process"],
        &broker.brokers,
        &[
            ("ALERT_TEMPERATURE_HIGH", "5"),
            ("ALERT_TEMPERATURE_LOW", "-100"),
        ],
    );
    process.wait_for("process ready", Role::ready);
    let simulate = simulate(&broker.brokers, "20", "250ms", "60s", "7", &[]);

    serve.wait_for("every device in the API", |r| {
        r.json("/api/devices?per_page=100")
            .and_then(|v| Some(v["total"].as_u64()? == 20))
            .unwrap_or(false)
    });
    serve.wait_for("an alert for every device", |r| {
        r.json("/api/alerts?status=active&limit=100")
            .and_then(|v| {
                let alerts = v["items"].as_array()?;
                let devices: std::collections::HashSet<&str> = alerts
                    .iter()
                    .filter_map(|a| a["device_id"].as_str())
                    .collect();
                Some(devices.len() == 20)
            })
            .unwrap_or(false)
    });
    // Acknowledged through serve, which has no processor: the request travels over the
    // commands topic to the process that owns the alert, and the result comes back on alerts.
    let alert_id = serve
        .json("/api/alerts?status=active&limit=1")
        .and_then(|v| Some(v["items"][0]["alert_id"].as_str()?.to_string()))
        .expect("an active alert");
    let (status, body) = http(
        serve.http_port,
        "POST",
        &format!("/api/alerts/{alert_id}/ack"),
    )
    .expect("answers");
    assert_eq!(status, 200, "{body}");
    let acked: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(acked["status"], "acknowledged", "{body}");
    let (status, body) = http(
        serve.http_port,
        "POST",
        &format!("/api/alerts/{alert_id}/ack"),
    )
    .expect("answers");
    assert_eq!(status, 409, "{body}");
    let (status, _) = http(serve.http_port, "POST", "/api/alerts/alert_nope/ack").expect("answers");
    assert_eq!(status, 404);

    // A serve instance started now rebuilds the alert log from the alerts topic and sees the
    // acknowledgement; each instance sees every reading.
    let mut late = Role::start(&["serve"], &broker.brokers, &[]);
    late.wait_for("the late serve to know every alert", |r| {
        r.json("/api/alerts?limit=100")
            .and_then(|v| {
                let alerts = v["items"].as_array()?;
                let acked = alerts
                    .iter()
                    .any(|a| a["alert_id"] == alert_id.as_str() && a["status"] == "acknowledged");
                Some(alerts.len() >= 20 && acked)
            })
            .unwrap_or(false)
    });
    late.wait_for("the late serve to see readings", |r| {
        r.json("/api/devices?per_page=100")
            .and_then(|v| Some(v["total"].as_u64()? == 20))
            .unwrap_or(false)
    });
    assert!(late.stop().success());

    let device = serve.json("/api/devices/device_001").expect("device_001");
    assert_eq!(device["device_id"], "device_001", "{device}");
    assert!(process.metric("iot_messages_total", "status=\"success\"") > 0.0);
    assert!(
        process.metric("kafka_messages_sent_total", "") > 0.0,
        "alerts were produced"
    );
    assert!(simulate.metric("device_data_generated_total", "") > 0.0);

    // A clean stop of each role.
    assert!(simulate.stop().success());
    assert!(process.stop().success());
    assert!(serve.stop().success());
}

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

/// The real end of each partition (last offset + 1), read by a plain client from the start.
/// tansu's reported high watermark can lag behind the records it serves, so it is not used.
fn partition_ends(brokers: &str, topic: &str, partitions: i32) -> HashMap<i32, i64> {
    let consumer: BaseConsumer = client(brokers)
        .set("group.id", format!("test-scan-{}", nanos()))
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .expect("partition");
    }
    consumer.assign(&tpl).expect("assign");
    let mut ends: HashMap<i32, i64> = (0..partitions).map(|p| (p, 0)).collect();
    let mut quiet_since = Instant::now();
    while quiet_since.elapsed() < Duration::from_secs(5) {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
            let end = ends.entry(m.partition()).or_default();
            *end = (*end).max(m.offset() + 1);
            quiet_since = Instant::now();
        }
    }
    ends
}

#[test]
fn two_processors_share_the_partitions_and_one_takes_over_after_sigkill() {
    let broker = TestBroker::start(&topics());
    // tansu drops a member that died only after the rebalance timeout (max.poll.interval.ms,
    // 5 min by default); Apache Kafka after the session timeout. Shorter here, so the survivor
    // takes over within the test's patience.
    let env = [
        ("PROCESSOR_WORKERS", "1"),
        (
            "KAFKA_PROPERTIES",
            "session.timeout.ms=6000;max.poll.interval.ms=15000",
        ),
    ];
    let mut first = Role::start(&["process"], &broker.brokers, &env);
    let mut second = Role::start(&["process"], &broker.brokers, &env);
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
    let consumer: BaseConsumer = client(&broker.brokers)
        .set("group.id", "iot-consumer-group")
        .create()
        .expect("consumer");
    let mut all = TopicPartitionList::new();
    for p in 0..10 {
        all.add_partition("device-data", p);
    }
    let mut behind = Vec::new();
    second.wait_for("the survivor committed every partition to its end", |_| {
        let Ok(committed) = consumer.committed_offsets(all.clone(), Duration::from_secs(10)) else {
            return false;
        };
        behind = committed
            .elements()
            .iter()
            .filter(|e| !matches!(e.offset(), Offset::Offset(o) if o >= ends[&e.partition()]))
            .map(|e| (e.partition(), e.offset(), ends[&e.partition()]))
            .collect();
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
fn run_with_kafka_brokers_runs_every_role_in_one_process() {
    let broker = TestBroker::start(&[]);
    let mut run = Role::start(
        &[
            "run",
            "--devices",
            "10",
            "--interval",
            "200ms",
            "--duration",
            "6s",
            "--seed",
            "5",
        ],
        &broker.brokers,
        &[],
    );
    run.wait_for("the run to finish", |r| r.log_text().contains("stopped"));
    let status = run.child.wait().expect("exit");
    let log = run.log_text();
    assert!(status.success(), "{log}");
    let stopped = log
        .lines()
        .find(|l| l.contains(" stopped") && l.contains("processed="))
        .unwrap_or_else(|| panic!("no final line:\n{log}"));
    let field = |name: &str| -> u64 {
        log_field(stopped, "processed=", name).unwrap_or_else(|| panic!("{name} in {stopped}"))
    };
    assert!(field("sent") > 100, "{stopped}");
    assert_eq!(field("processed"), field("sent"), "{stopped}");
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

#[test]
fn a_restarted_processor_keeps_the_alerts_already_open_instead_of_raising_them_again() {
    let broker = TestBroker::start(&[]);
    let mut serve = Role::start(&["serve"], &broker.brokers, &[]);
    serve.wait_for("serve subscribed", |r| {
        r.log_text().contains("serving live data")
    });
    let hot = [
        ("ALERT_TEMPERATURE_HIGH", "5"),
        ("ALERT_TEMPERATURE_LOW", "-100"),
    ];
    let mut first = Role::start(&["process"], &broker.brokers, &hot);
    first.wait_for("process ready", Role::ready);
    let _simulate = simulate(&broker.brokers, "10", "200ms", "120s", "3", &[]);
    let active = |r: &Role| -> Option<Vec<String>> {
        let v = r.json("/api/alerts?status=active&limit=100")?;
        Some(
            v["items"]
                .as_array()?
                .iter()
                .filter_map(|a| Some(a["alert_id"].as_str()?.to_string()))
                .collect(),
        )
    };
    serve.wait_for("an alert per device", |r| {
        active(r).is_some_and(|a| a.len() == 10)
    });
    let before = active(&serve).expect("alerts");
    assert!(first.stop().success());

    let mut second = Role::start(&["process"], &broker.brokers, &hot);
    second.wait_for("the new processor read back the open alerts", |r| {
        r.log_text().contains("open alerts read back")
    });
    assert!(
        second.log_text().contains("open=10"),
        "{}",
        second.log_text()
    );
    second.wait_for("the new processor busy", |r| {
        r.metric("iot_messages_total", "status=\"success\"") >= 200.0
    });
    // Same conditions, same alerts: nothing raised again under new ids.
    assert_eq!(second.metric("iot_alerts_total", "status=\"active\""), 0.0);
    let mut after = active(&serve).expect("alerts");
    let mut expected = before.clone();
    after.sort();
    expected.sort();
    assert_eq!(after, expected);
    // And the new processor owns them: acknowledging through serve works.
    let (status, body) = http(
        serve.http_port,
        "POST",
        &format!("/api/alerts/{}/ack", before[0]),
    )
    .expect("answers");
    assert_eq!(status, 200, "{body}");
}
