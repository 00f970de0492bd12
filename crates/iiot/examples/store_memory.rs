//! Fills the live store as a day of a fleet would and reports the process's resident memory:
//! the SPEC §9 memory target (10,000 devices at a 5 s interval, 1 h raw + 24 h rollups).
//!
//! `cargo run --release --example store_memory -- 10000` (device count; default 10,000).
//! 23 h of readings every 5 minutes (one per rollup bucket) and then 1 h every 5 s, all with
//! simulated event times, through the same decode + record path as the server.

use std::time::{Duration, Instant};

use iiot::simulator::{Emitted, Fleet, SimulatorConfig};
use iiot::store::{Store, StoreConfig};
use iiot_model::Limits;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

fn main() {
    let devices: u32 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(10_000);
    let started = Instant::now();
    let baseline = rss_mb();
    let mut fleet = Fleet::new(&SimulatorConfig {
        devices,
        interval: Duration::from_secs(5),
        seed: 1,
        variance: 0.1,
        fault_rate: 0.0,
        malformed_rate: 0.0,
    });
    let mut store = Store::new(StoreConfig {
        max_devices: devices as usize,
        default_interval_ms: 5_000,
        ..StoreConfig::default()
    });
    let now = iiot::now_ms();
    let day_start = now - 24 * 3_600_000;
    let limits = Limits::default();
    let mut buf = Vec::new();
    let mut recorded = 0u64;
    let mut feed = |store: &mut Store, ts: i64| {
        for i in 0..devices as usize {
            let t = ts + i as i64 * 5_000 / i64::from(devices);
            if let Emitted::Reading { .. } = fleet.emit(i, t, &mut buf) {
                let reading = iiot_model::decode(&buf, now, &limits).expect("valid");
                store.record(&reading, t);
                recorded += 1;
            }
        }
    };
    // 23 h at one reading per 5-minute bucket, pruning every simulated hour.
    let mut ts = day_start;
    while ts < now - 3_600_000 {
        feed(&mut store, ts);
        ts += 300_000;
        if (ts - day_start) % 3_600_000 == 0 {
            store.prune(ts);
        }
    }
    // The last hour every 5 s: full raw retention.
    while ts < now {
        feed(&mut store, ts);
        ts += 5_000;
    }
    store.prune(now);
    println!(
        "{{\"devices\":{devices},\"readings_recorded\":{recorded},\"store_estimate_mb\":{:.1},\"rss_mb\":{:.1},\"rss_before_mb\":{:.1},\"seconds\":{:.1}}}",
        store.memory_estimate() as f64 / 1_048_576.0,
        rss_mb(),
        baseline,
        started.elapsed().as_secs_f64()
    );
}
