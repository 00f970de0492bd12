//! Criterion benchmark of the Sparkplug B decoder on one core: protobuf decode + alias lookup +
//! metric mapping + the SPEC §2 reading as JSON, per DDATA (what the MQTT source does per
//! message before publishing onto the input topic).
//!
//! 1,000 devices on 10 edge nodes, born once (NBIRTH, DBIRTH); then 100,000 DDATA of 7 metrics
//! by alias, as `iiot simulate --mqtt-payload sparkplug` sends them.
//!
//! Run: `cargo bench -p iiot --bench sparkplug`.

// criterion_group! generates undocumented functions.
#![allow(missing_docs)]

use std::hint::black_box;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use iiot::mqtt::sparkplug::mapping::{DeviceIdTemplate, MetricMapping};
use iiot::mqtt::sparkplug::proto::{Metric, Payload, Value, datatype};
use iiot::mqtt::sparkplug::{Output, Sparkplug, SparkplugConfig};
use prost::Message as _;

/// The same allocator as the binary, so the figures are the binary's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const NODES: usize = 10;
const DEVICES_PER_NODE: usize = 100;
const MESSAGES: usize = 100_000;

const METRICS: [(&str, u32); 7] = [
    ("Sensors/Temperature", datatype::DOUBLE),
    ("Sensors/Humidity", datatype::DOUBLE),
    ("Sensors/Pressure", datatype::DOUBLE),
    ("Motor/Current", datatype::DOUBLE),
    ("Switch", datatype::BOOLEAN),
    ("Battery", datatype::INT64),
    ("Signal Strength", datatype::INT64),
];

fn metrics(i: usize, birth: bool) -> Vec<Metric> {
    let x = (i % 97) as f64 / 10.0;
    let values = [
        Value::DoubleValue(20.0 + x),
        Value::DoubleValue(50.0 + x),
        Value::DoubleValue(1010.0 + x),
        Value::DoubleValue(2.0 + x / 10.0),
        Value::BooleanValue(i.is_multiple_of(2)),
        Value::LongValue(80),
        Value::LongValue((-50i64) as u64),
    ];
    METRICS
        .iter()
        .zip(values)
        .enumerate()
        .map(|(alias, (&(name, dt), value))| Metric {
            name: birth.then(|| name.to_string()),
            alias: Some(alias as u64 + 1),
            datatype: birth.then_some(dt),
            value: Some(value),
            ..Metric::default()
        })
        .collect()
}

fn encode(seq: usize, ts: i64, metrics: Vec<Metric>) -> Vec<u8> {
    Payload {
        timestamp: Some(ts as u64),
        seq: Some((seq % 256) as u64),
        metrics,
        ..Payload::default()
    }
    .encode_to_vec()
}

/// MQTT messages: (topic, payload).
type Messages = Vec<(String, Vec<u8>)>;

/// The births and the DDATA stream, each node's seq running on.
fn messages() -> (Messages, Messages, i64) {
    let now = iiot::now_ms();
    let mut seq = [0usize; NODES];
    let mut births = Vec::new();
    for (n, s) in seq.iter_mut().enumerate() {
        births.push((
            format!("spBv1.0/bench/NBIRTH/edge{n}"),
            encode(0, now, Vec::new()),
        ));
        *s = 1;
        for d in 0..DEVICES_PER_NODE {
            let topic = format!("spBv1.0/bench/DBIRTH/edge{n}/plc{d}");
            births.push((topic, encode(*s, now, metrics(d, true))));
            *s += 1;
        }
    }
    let data = (0..MESSAGES)
        .map(|i| {
            let (n, d) = (i % NODES, (i / NODES) % DEVICES_PER_NODE);
            let topic = format!("spBv1.0/bench/DDATA/edge{n}/plc{d}");
            let payload = encode(seq[n], now - 1_000, metrics(i, false));
            seq[n] += 1;
            (topic, payload)
        })
        .collect();
    (births, data, now)
}

fn born(births: &[(String, Vec<u8>)], now: i64) -> Sparkplug {
    let mut decoder = Sparkplug::new(SparkplugConfig {
        mapping: MetricMapping::default(),
        device_id: DeviceIdTemplate::parse("{node}:{device}").expect("a valid template"),
        max_tracked: 100_000,
    });
    for (topic, payload) in births {
        decoder.decode(topic, payload, now);
    }
    decoder
}

fn decode_bench(c: &mut Criterion) {
    let (births, data, now) = messages();
    // Every DDATA must become exactly one reading, or the figure measures something else.
    let mut check = born(&births, now);
    let readings = data
        .iter()
        .filter(|(t, p)| {
            let d = check.decode(t, p, now);
            matches!(&d.outputs[..], [Output::Reading { .. }]) && d.seq_gaps == 0
        })
        .count();
    assert_eq!(readings, MESSAGES);

    let mut group = c.benchmark_group("sparkplug");
    group.throughput(Throughput::Elements(MESSAGES as u64));
    group.sample_size(20);
    group.bench_function("decode_ddata_to_reading", |b| {
        b.iter_batched(
            || born(&births, now),
            |mut decoder| {
                for (topic, payload) in &data {
                    black_box(decoder.decode(topic, payload, now));
                }
                decoder
            },
            BatchSize::PerIteration,
        )
    });
    group.finish();
}

criterion_group!(benches, decode_bench);
criterion_main!(benches);
