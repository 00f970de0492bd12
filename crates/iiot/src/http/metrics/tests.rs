use super::*;

fn snapshot() -> Snapshot {
    let mut dead_letters = [0; InvalidReason::ALL.len()];
    dead_letters[InvalidReason::Schema.index()] = 3;
    Snapshot {
        uptime_s: 10.0,
        processed: 100,
        late: 2,
        dead_letters,
        seq_gaps: 4,
        seq_restarts: 0,
        alerts_open: 1,
        alerts: [2, 1, 1],
        publish_errors: 0,
        restored: (3, 2, 0.25),
        states_rewritten: 0,
        devices: StatusCounts {
            online: 5,
            offline: 1,
            fault: 2,
        },
        store_memory: 1234,
        latency: Latency {
            p50_us: 1_500,
            p99_us: 20_000,
            max_us: 30_000,
            count: 100,
            sum_us: 250_000.0,
        },
        websocket_connections: 0,
        event_to_client: LatencySnapshot::default(),
        websocket: WebSocketCounters {
            messages_dropped: 7,
            rejected_unauthorized: 1,
            ..WebSocketCounters::default()
        },
        http: HttpConnCounters {
            rejected: 3,
            ..HttpConnCounters::default()
        },
        backend: BackendMetrics {
            messages_sent: 90,
            send_errors: 2,
            batches_sent: 9,
            // 0.5 ms: 3, 1 ms: 0, 2.5 ms: 5, …, +Inf: 1.
            send_duration_buckets: {
                let mut b = vec![0; SEND_DURATION_BOUNDS_MS.len() + 1];
                b[0] = 3;
                b[2] = 5;
                b[SEND_DURATION_BOUNDS_MS.len()] = 1;
                b
            },
            send_duration_sum_s: 12.5,
            consumer_lag: 40,
            connected: true,
            ..BackendMetrics::default()
        },
        simulator: Some(SimSnapshot {
            sent: 95,
            errors: 1,
            ..SimSnapshot::default()
        }),
        notify: Some(NotifySnapshot {
            channels: vec![ChannelSnapshot {
                name: "ops".into(),
                sent: 3,
                failed: [0, 1, 0, 0, 0, 0, 0, 0],
                retries: 2,
                queued: 0,
                silenced: 1,
                rate_limited: 4,
                overflowed: 2,
            }],
            ..NotifySnapshot::default()
        }),
        mqtt: Some(MqttSnapshot {
            received: 10,
            forwarded: 8,
            in_flight: 1,
            connected: true,
            connection_failures: 2,
            dead_lettered: 1,
            lag_ms: 1500,
            sparkplug: Some(crate::mqtt::sparkplug::stats::SparkplugCounts {
                node_births: 2,
                device_births: 3,
                node_deaths: 1,
                device_deaths: 1,
                rebirths_requested: 1,
                nodes_tracked: 1,
                devices_tracked: 2,
            }),
        }),
        ingest: [5, 1],
        history: Some(HistorySnapshot {
            rows_written: 500,
            write_errors: 1,
            flushes: 4,
            flush_seconds: 0.02,
            tiers: vec![
                ("raw", 4096, 2, Some(1_700_000_000.0)),
                ("1m", 512, 1, None),
            ],
            ..HistorySnapshot::default()
        }),
        history_db: Some([400, 3, 1, 0, 0, 0, 0]),
        process: ProcessStats {
            resident_memory_bytes: Some(50 << 20),
            virtual_memory_bytes: Some(300 << 20),
            cpu_seconds: Some(1.25),
            open_fds: Some(12),
            threads: Some(4),
        },
    }
}

#[test]
fn every_family_has_help_type_and_a_sample() {
    let text = snapshot().to_prometheus();
    for m in METRICS {
        assert!(text.contains(&format!("# HELP {} ", m.name)), "{}", m.name);
        assert!(
            text.contains(&format!("# TYPE {} {}\n", m.name, m.kind.as_str())),
            "{}",
            m.name
        );
        assert!(
            text.lines()
                .any(|l| !l.starts_with('#') && l.starts_with(m.name)),
            "{}",
            m.name
        );
    }
    let families = text.lines().filter(|l| l.starts_with("# TYPE")).count();
    assert_eq!(families, METRICS.len(), "every family rendered once");
}

#[test]
fn samples_carry_the_counts() {
    let text = snapshot().to_prometheus();
    for line in [
        "iot_messages_total{status=\"success\"} 102",
        "iot_messages_total{status=\"failed\"} 3",
        "iot_dead_letters_total{reason=\"schema\"} 3",
        "iot_dead_letters_total{reason=\"device_limit\"} 0",
        "iot_devices{status=\"fault\"} 2",
        "iot_active_devices_total 5",
        "iot_message_processing_duration_seconds{quantile=\"0.5\"} 0.0015",
        "iot_message_processing_duration_seconds{quantile=\"0.99\"} 0.02",
        "iot_message_processing_duration_seconds_sum 0.25",
        "iot_message_processing_duration_seconds_count 100",
        "iot_websocket_connections_total 0",
        "iot_websocket_messages_dropped_total 7",
        "iot_websocket_rejected_connections_total{reason=\"unauthorized\"} 1",
        "kafka_messages_sent_total 90",
        "kafka_send_errors_total 2",
        "kafka_batches_sent_total 9",
        "kafka_send_duration_seconds_bucket{le=\"0.0005\"} 3",
        "kafka_send_duration_seconds_bucket{le=\"0.001\"} 3",
        "kafka_send_duration_seconds_bucket{le=\"0.0025\"} 8",
        "kafka_send_duration_seconds_bucket{le=\"10\"} 8",
        "kafka_send_duration_seconds_bucket{le=\"+Inf\"} 9",
        "kafka_send_duration_seconds_sum 12.5",
        "kafka_send_duration_seconds_count 9",
        "kafka_consumer_lag 40",
        "kafka_broker_connected 1",
        "device_data_generated_total 95",
        "device_data_generation_errors_total 1",
        "process_resident_memory_bytes 52428800",
        "process_cpu_seconds_total 1.25",
        "process_open_fds 12",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing {line:?} in\n{text}"
        );
    }
}

#[test]
fn metric_names_are_unique_and_well_formed() {
    let mut names: Vec<_> = METRICS.iter().map(|m| m.name).collect();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), METRICS.len());
    for n in names {
        assert!(
            n.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
            "{n}"
        );
    }
}

#[test]
fn families_without_a_source_have_a_header_but_no_sample() {
    let mut s = snapshot();
    s.simulator = None;
    s.process = ProcessStats::default();
    let text = s.to_prometheus();
    for m in [DEVICE_DATA_GENERATED, PROCESS_RESIDENT_MEMORY, PROCESS_CPU] {
        assert!(text.contains(&format!("# TYPE {} ", m.name)), "{}", m.name);
        assert!(
            !text
                .lines()
                .any(|l| !l.starts_with('#') && l.starts_with(m.name)),
            "{} has no source here",
            m.name
        );
    }
}

#[test]
fn histogram_buckets_are_cumulative_and_end_at_the_count() {
    let text = snapshot().to_prometheus();
    for family in [KAFKA_SEND_DURATION.name, EVENT_TO_CLIENT.name] {
        let prefix = format!("{family}_bucket{{le=\"");
        let buckets: Vec<(f64, u64)> = text
            .lines()
            .filter_map(|l| l.strip_prefix(prefix.as_str()))
            .map(|rest| {
                let (le, value) = rest.split_once("\"} ").expect("bucket line");
                let le = if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse().expect("le")
                };
                (le, value.parse().expect("count"))
            })
            .collect();
        assert!(buckets.len() > 5, "{family}");
        assert!(
            buckets
                .windows(2)
                .all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1)
        );
        assert_eq!(buckets.last().map(|b| b.0), Some(f64::INFINITY));
        let count = text
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{family}_count ")))
            .expect("count");
        assert_eq!(
            buckets.last().map(|b| b.1.to_string()),
            Some(count.to_owned())
        );
    }
}
