//! Criterion benchmarks of the two hot stages, on one core:
//! - `processor/handle`: parse + validate + seq tracking + alert rules + aggregates per reading
//!   (SPEC §9 target: ≥ 500,000 readings/s/core);
//! - `processor/decode_only`: parse + validate alone, to see what the rest costs;
//! - `simulator/emit`: value generation + JSON serialization per reading.
//!
//! Run: `cargo bench -p iiot --bench pipeline`.

// criterion_group! generates undocumented functions.
#![allow(missing_docs)]

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use iiot::alerts::{RuleSet, Thresholds};
use iiot::processor::{Processor, ProcessorConfig, ProcessorStats};
use iiot::simulator::{Emitted, Fleet, SimulatorConfig};
use iiot_model::Limits;

/// The same allocator as the binary, so the figures are the binary's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const DEVICES: u32 = 10_000;
const ROUNDS: usize = 10;

fn fleet() -> Fleet {
    Fleet::new(&SimulatorConfig {
        devices: DEVICES,
        interval: Duration::from_secs(5),
        seed: 42,
        variance: 0.1,
        fault_rate: 0.0005,
        malformed_rate: 0.0,
    })
}

/// 100,000 readings of 10,000 devices, 10 rounds, 5 s apart, ending now.
fn payloads() -> (Vec<Vec<u8>>, i64) {
    let mut fleet = fleet();
    let now = iiot::now_ms();
    let start = now - ROUNDS as i64 * 5_000;
    let mut out = Vec::with_capacity(DEVICES as usize * ROUNDS);
    let mut buf = Vec::new();
    for round in 0..ROUNDS {
        for i in 0..DEVICES as usize {
            let ts = start + round as i64 * 5_000 + i as i64 * 5_000 / i64::from(DEVICES);
            if let Emitted::Reading { .. } = fleet.emit(i, ts, &mut buf) {
                out.push(buf.clone());
            }
        }
    }
    (out, now)
}

fn processor_bench(c: &mut Criterion) {
    let (payloads, now) = payloads();
    let mut group = c.benchmark_group("processor");
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(20));
    group.throughput(Throughput::Elements(payloads.len() as u64));
    let rules = Arc::new(RuleSet::defaults(&Thresholds::default()));
    group.bench_function("handle", |b| {
        b.iter_batched(
            // A fresh processor each time: the same readings again would all be duplicates.
            || {
                Processor::new(
                    ProcessorConfig::default(),
                    rules.clone(),
                    Arc::new(ProcessorStats::default()),
                )
            },
            |mut p| {
                let mut alerts = Vec::new();
                for payload in &payloads {
                    black_box(p.handle(payload, now, &mut alerts));
                    alerts.clear();
                }
                p
            },
            BatchSize::LargeInput,
        )
    });
    let limits = Limits::default();
    group.bench_function("decode_only", |b| {
        b.iter(|| {
            for payload in &payloads {
                let _ = black_box(iiot_model::decode(payload, now, &limits));
            }
        })
    });
    group.finish();
}

fn simulator_bench(c: &mut Criterion) {
    let mut fleet = fleet();
    let mut group = c.benchmark_group("simulator");
    group.throughput(Throughput::Elements(1));
    let mut buf = Vec::with_capacity(1024);
    let mut i = 0usize;
    let now = iiot::now_ms();
    group.bench_function("emit", |b| {
        b.iter(|| {
            i = (i + 1) % DEVICES as usize;
            black_box(fleet.emit(i, now, &mut buf));
        })
    });
    group.finish();
}

criterion_group!(benches, processor_bench, simulator_bench);
criterion_main!(benches);
