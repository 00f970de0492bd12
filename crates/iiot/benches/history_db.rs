//! History in PostgreSQL, measured with the public API (`HistoryDb::insert`, `HistoryStore`)
//! against a private PostgreSQL 15 cluster on this machine (durable defaults: fsync on), the
//! database sharing the cores with the writers. No criterion: each mode prints its figures.
//!
//! - `write DEVICES ROUNDS WRITERS RUNS`: each run inserts ROUNDS readings of DEVICES devices
//!   (5 s apart, ending now) from WRITERS concurrent writers — as many consumer-group members,
//!   each owning its share of the devices — in batches of `BATCH_ROWS`; readings/s per run,
//!   then the median and range. Each run writes into a fresh database.
//! - `query DAYS RUNS`: one device with DAYS days of readings every 5 s, written through the
//!   same path; then `history` over those days in 300 points (the 1 h rollups answer) and
//!   `raw` over one hour, RUNS times each: median, min, max.
//!
//! Run: `cargo bench -p iiot --bench history_db -- write 10000 30 2 5` and
//! `cargo bench -p iiot --bench history_db -- query 30 50`.
//! Needs Debian's PostgreSQL (`scripts/pg-up.sh --install`).

#![allow(missing_docs, clippy::expect_used, clippy::unwrap_used)]

// Shared with the tests; the bench uses only part of it.
#[allow(dead_code)]
#[path = "../tests/support/postgres.rs"]
mod postgres;

use std::sync::Arc;
use std::time::{Duration, Instant};

use iiot::history::HistoryStore;
use iiot::history::database::{BATCH_ROWS, DatabaseConfig, DbRow, HistoryDb};
use iiot_model::{Parameter, Reading};
use postgres::PgServer;

const INTERVAL_MS: i64 = 5_000;

fn rows(devices: u32, rounds: u32, now: i64) -> Vec<Vec<DbRow>> {
    (0..rounds)
        .map(|round| {
            let t = now - i64::from(rounds - 1 - round) * INTERVAL_MS;
            (0..devices)
                .map(|d| {
                    let r = Reading::example(
                        &format!("device_{d:06}"),
                        u64::from(round),
                        t + i64::from(d % 5_000),
                        20.0 + f64::from(d % 700) / 100.0,
                    );
                    DbRow::of(&r)
                })
                .collect()
        })
        .collect()
}

fn median(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    (v[v.len() / 2], v[0], v[v.len() - 1])
}

fn write(devices: u32, rounds: u32, writers: u32, runs: u32) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut rates = Vec::new();
    for run in 0..runs {
        let pg = PgServer::start_durable();
        let db = rt
            .block_on(HistoryDb::open(DatabaseConfig::at(&pg.url())))
            .unwrap();
        let all = rows(devices, rounds, iiot::now_ms());
        let n: usize = all.iter().map(Vec::len).sum();
        // Each writer owns devices d with d % writers == w, as partitions split a group.
        let mut per_writer: Vec<Vec<Vec<DbRow>>> = (0..writers).map(|_| Vec::new()).collect();
        for round in all {
            let mut parts: Vec<Vec<DbRow>> = (0..writers).map(|_| Vec::new()).collect();
            for (i, r) in round.into_iter().enumerate() {
                parts[i % writers as usize].push(r);
            }
            for (w, p) in parts.into_iter().enumerate() {
                for chunk in p.chunks(BATCH_ROWS) {
                    per_writer[w].push(chunk.to_vec());
                }
            }
        }
        let started = Instant::now();
        rt.block_on(async {
            let tasks: Vec<_> = per_writer
                .into_iter()
                .map(|batches| {
                    let db: Arc<HistoryDb> = db.clone();
                    tokio::spawn(async move {
                        for b in batches {
                            db.insert(&b).await.unwrap();
                        }
                    })
                })
                .collect();
            for t in tasks {
                t.await.unwrap();
            }
        });
        let secs = started.elapsed().as_secs_f64();
        let rate = n as f64 / secs;
        println!("run {run}: {n} readings in {secs:.2} s = {rate:.0} readings/s");
        assert_eq!(pg.psql("SELECT count(*) FROM iiot_readings"), n.to_string());
        rates.push(rate);
    }
    let (m, lo, hi) = median(rates);
    println!(
        "write {devices} devices x {rounds} rounds, {writers} writers: median {m:.0} readings/s (min {lo:.0}, max {hi:.0}) over {runs} runs"
    );
}

fn query(days: i64, runs: u32) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let pg = PgServer::start_durable();
    let mut cfg = DatabaseConfig::at(&pg.url());
    cfg.retention[0] = Duration::from_secs((days as u64 + 1) * 86_400);
    let db = rt.block_on(HistoryDb::open(cfg)).unwrap();
    let now = iiot::now_ms();
    let n = days * 86_400_000 / INTERVAL_MS;
    let started = Instant::now();
    let batch: Vec<DbRow> = Vec::with_capacity(BATCH_ROWS);
    rt.block_on(async {
        let mut batch = batch;
        for k in 0..n {
            let t = now - (n - 1 - k) * INTERVAL_MS;
            let r = Reading::example(
                "device_000001",
                k as u64,
                t,
                20.0 + (k % 1000) as f64 / 100.0,
            );
            batch.push(DbRow::of(&r));
            if batch.len() == BATCH_ROWS {
                db.insert(&batch).await.unwrap();
                batch.clear();
            }
        }
        db.insert(&batch).await.unwrap();
    });
    println!(
        "filled {n} readings ({days} days of one device) in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let _ = pg.psql("VACUUM ANALYZE");
    for (table, what) in [
        ("iiot_readings", "raw reading"),
        ("iiot_rollup_1m", "1 m bucket"),
        ("iiot_rollup_1h", "1 h bucket"),
    ] {
        let size = pg.psql(&format!(
            "SELECT sum(pg_total_relation_size(inhrelid)) FROM pg_inherits \
             WHERE inhparent = '{table}'::regclass"
        ));
        let rows = pg.psql(&format!("SELECT count(*) FROM {table}"));
        let (size, rows): (f64, f64) = (size.parse().unwrap(), rows.parse().unwrap());
        println!(
            "{table}: {rows} rows, {:.0} bytes per {what} (table + index)",
            size / rows
        );
    }
    let store = {
        let _in = rt.enter();
        HistoryStore::database(db)
    };
    let time = |f: &dyn Fn() -> usize| {
        let mut ms = Vec::new();
        let mut points = 0;
        for _ in 0..runs {
            let t = Instant::now();
            points = f();
            ms.push(t.elapsed().as_secs_f64() * 1e3);
        }
        (median(ms), points)
    };
    let ((m, lo, hi), points) = time(&|| {
        store
            .history(
                "device_000001",
                Parameter::Temperature,
                now - days * 86_400_000,
                now,
                300,
                now,
            )
            .unwrap()
            .len()
    });
    println!(
        "history {days} d, 300 points: {points} points, median {m:.2} ms (min {lo:.2}, max {hi:.2}) over {runs} runs"
    );
    let ((m, lo, hi), points) = time(&|| {
        store
            .history(
                "device_000001",
                Parameter::Temperature,
                now - 86_400_000,
                now,
                300,
                now,
            )
            .unwrap()
            .len()
    });
    println!(
        "history 1 d, 300 points: {points} points, median {m:.2} ms (min {lo:.2}, max {hi:.2}) over {runs} runs"
    );
    let ((m, lo, hi), rows) = time(&|| {
        store
            .raw("device_000001", now - 3_600_000, now)
            .unwrap()
            .len()
    });
    println!(
        "raw 1 h: {rows} readings, median {m:.2} ms (min {lo:.2}, max {hi:.2}) over {runs} runs"
    );
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let num = |i: usize, d: u32| args.get(i).and_then(|a| a.parse().ok()).unwrap_or(d);
    match args.first().map(String::as_str) {
        Some("query") => query(i64::from(num(1, 30)), num(2, 50)),
        _ => write(num(1, 10_000), num(2, 30), num(3, 2), num(4, 5)),
    }
}
