//! History on disk, measured with the public API (`History::open`, `append`, `history`, `raw`,
//! `close`) and the simulator's readings. No criterion: each mode prints one line of results.
//!
//! - `write DEVICES SECONDS [SPAN_MS]`: appends readings of DEVICES devices (20 rounds of the
//!   fleet, parsed once, re-stamped 5 s apart) as fast as the writer takes them for SECONDS,
//!   with `HISTORY_SEGMENT_SPAN` = SPAN_MS (default 1000) so seals happen; readings/s counts
//!   the time until `close` has sealed the last of them.
//! - `build DIR DEVICES HOURS`: writes HOURS of simulated event time (ending now, one reading
//!   per device every 5 s, the fleet's values) into DIR with the real writer; reports bytes
//!   per raw reading and per device-hour of each rollup tier.
//! - `query DIR DEVICE RUNS`: times `history` over 30 days and 1 hour (300 points) and `raw`
//!   over 1 hour, for one device: the first run after open, then the median of RUNS.
//! - `open DIR RUNS`: times `History::open` → return (then `close`).
//! - `wal DEVICES ROUNDS`: bytes of the write-ahead log per reading (no seal).
//! - `variants DIR DEVICE`: rewrites the raw segments of DIR with other encodings and
//!   compression levels; bytes per reading, write time, and time to read one device back.
//!
//! Run: `cargo bench -p iiot --bench history -- write 10000 10` (with no mode: `write 10000 5`).

#![allow(missing_docs)]

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use iiot::history::{History, HistoryConfig, Tier};
use iiot::simulator::{Emitted, Fleet, SimulatorConfig};
use iiot_model::{Parameter, Reading};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const INTERVAL_MS: i64 = 5_000;
/// The appender waits while more than this many readings wait for the writer (history drops
/// readings past a million).
const BACKLOG: usize = 600_000;

fn fleet(devices: u32) -> Fleet {
    Fleet::new(&SimulatorConfig {
        devices,
        interval: Duration::from_millis(INTERVAL_MS as u64),
        seed: 42,
        variance: 0.1,
        fault_rate: 0.0005,
        malformed_rate: 0.0,
    })
}

fn config(dir: &Path, span_ms: u64) -> HistoryConfig {
    let mut cfg = HistoryConfig::in_dir(dir);
    cfg.segment_span = Duration::from_millis(span_ms);
    cfg
}

fn wait_backlog(h: &History) {
    while h.pending_rows() > BACKLOG {
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn dir_bytes(dir: &Path, ext: &str) -> (u64, usize) {
    let mut total = (0, 0);
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.extension().is_some_and(|x| x == ext) {
                total.0 += e.metadata().map_or(0, |m| m.len());
                total.1 += 1;
            }
        }
    }
    total
}

fn arg<T: std::str::FromStr>(args: &[String], i: usize, default: T) -> T {
    args.get(i).and_then(|a| a.parse().ok()).unwrap_or(default)
}

fn tempdir() -> tempfile::TempDir {
    let base = std::env::var_os("HBENCH_TMP").map_or_else(std::env::temp_dir, PathBuf::from);
    tempfile::tempdir_in(base).expect("temp dir")
}

/// Sustained write: History::append + the writer thread, seals included.
fn write(devices: u32, seconds: u64, span_ms: u64) {
    const ROUNDS: usize = 20;
    let mut fleet = fleet(devices);
    let start = iiot::now_ms() - 3_600_000;
    let mut texts = Vec::with_capacity(ROUNDS * devices as usize);
    let mut buf = Vec::new();
    for round in 0..ROUNDS {
        for i in 0..devices as usize {
            let ts = start + round as i64 * INTERVAL_MS;
            if let Emitted::Reading { .. } = fleet.emit(i, ts, &mut buf) {
                texts.push(String::from_utf8(buf.clone()).expect("utf-8"));
            }
        }
    }
    let mut readings: Vec<Reading<'_>> = texts
        .iter()
        .map(|t| serde_json::from_str(t).expect("reading"))
        .collect();
    let base: Vec<i64> = readings.iter().map(|r| r.timestamp).collect();
    let dir = tempdir();
    let (h, _) = History::open(config(dir.path(), span_ms)).expect("open");
    let started = Instant::now();
    let deadline = started + Duration::from_secs(seconds);
    let mut appended = 0u64;
    let mut lap = 0i64;
    'outer: loop {
        let shift = lap * ROUNDS as i64 * INTERVAL_MS;
        for (k, r) in readings.iter_mut().enumerate() {
            r.timestamp = base[k] + shift;
        }
        for (chunk, texts) in readings.chunks(1_000).zip(texts.chunks(1_000)) {
            for (r, t) in chunk.iter().zip(texts) {
                h.append(r, t);
            }
            appended += chunk.len() as u64;
            wait_backlog(&h);
            if Instant::now() >= deadline {
                break 'outer;
            }
        }
        lap += 1;
    }
    let appending = started.elapsed().as_secs_f64();
    h.close();
    let total = started.elapsed().as_secs_f64();
    let s = h.stats();
    let dropped = s.dropped.load(Ordering::Relaxed);
    let seals = s.seals.load(Ordering::Relaxed);
    let (raw_bytes, raw_n) = dir_bytes(&dir.path().join("raw"), "parquet");
    println!(
        "write devices={devices} span_ms={span_ms} appended={appended} dropped={dropped} \
         seals={seals} raw_segments={raw_n} appending_s={appending:.2} total_s={total:.2} \
         readings_per_s={:.0} raw_bytes_per_reading={:.2}",
        (appended - dropped) as f64 / total,
        raw_bytes as f64 / (appended - dropped).max(1) as f64
    );
}

/// HOURS of event time for DEVICES devices, ending now, into DIR.
fn build(dir: &Path, devices: u32, hours: f64) {
    let mut fleet = fleet(devices);
    let now = iiot::now_ms();
    let rounds = (hours * 3_600_000.0 / INTERVAL_MS as f64) as i64;
    let start = now - rounds * INTERVAL_MS;
    // Large seals (a million readings or so): a fast build makes one about every second.
    let (h, _) = History::open(config(dir, 1_000)).expect("open");
    let started = Instant::now();
    let mut buf = Vec::new();
    let mut n = 0u64;
    for round in 0..rounds {
        for i in 0..devices as usize {
            let ts = start + round * INTERVAL_MS + i as i64 * INTERVAL_MS / i64::from(devices);
            if let Emitted::Reading { .. } = fleet.emit(i, ts, &mut buf) {
                let text = std::str::from_utf8(&buf).expect("utf-8");
                let r: Reading<'_> = serde_json::from_str(text).expect("reading");
                h.append(&r, text);
                n += 1;
            }
        }
        if round % 100 == 0 {
            wait_backlog(&h);
        }
    }
    h.close();
    let elapsed = started.elapsed().as_secs_f64();
    let dropped = h.stats().dropped.load(Ordering::Relaxed);
    let kept = n - dropped;
    let device_hours = f64::from(devices) * hours;
    let mut line = format!(
        "build devices={devices} hours={hours} readings={kept} dropped={dropped} \
         elapsed_s={elapsed:.1} readings_per_s={:.0}",
        kept as f64 / elapsed
    );
    for (tier, bytes, segments, _) in h.usage() {
        let per = match tier {
            Tier::Raw => format!("B_per_reading={:.2}", bytes as f64 / kept.max(1) as f64),
            _ => format!("B_per_device_hour={:.1}", bytes as f64 / device_hours),
        };
        line.push_str(&format!(
            " {}: bytes={bytes} segments={segments} {per}",
            tier.name()
        ));
    }
    println!("{line}");
}

fn median(v: &mut [f64]) -> (f64, f64, f64) {
    v.sort_by(f64::total_cmp);
    (v[v.len() / 2], v[0], v[v.len() - 1])
}

fn query(dir: &Path, device: &str, runs: usize) {
    let (h, _) = History::open(config(dir, 300_000)).expect("open");
    let now = iiot::now_ms();
    let day = 86_400_000;
    type Q<'a> = Box<dyn Fn() -> usize + 'a>;
    let cases: Vec<(&str, Q<'_>)> = vec![
        (
            "history_30d_300",
            Box::new(|| {
                h.history(
                    device,
                    Parameter::Temperature,
                    now - 30 * day,
                    now,
                    300,
                    now,
                )
                .expect("history")
                .len()
            }),
        ),
        (
            "history_1h_300",
            Box::new(|| {
                h.history(
                    device,
                    Parameter::Temperature,
                    now - 3_600_000,
                    now,
                    300,
                    now,
                )
                .expect("history")
                .len()
            }),
        ),
        (
            "raw_1h",
            Box::new(|| h.raw(device, now - 3_600_000, now).expect("raw").len()),
        ),
    ];
    for (name, q) in &cases {
        let t = Instant::now();
        let points = q();
        let first = t.elapsed().as_secs_f64() * 1e3;
        let mut times: Vec<f64> = (0..runs)
            .map(|_| {
                let t = Instant::now();
                std::hint::black_box(q());
                t.elapsed().as_secs_f64() * 1e3
            })
            .collect();
        let (m, lo, hi) = median(&mut times);
        println!(
            "query {name} device={device} points={points} first_ms={first:.2} \
             median_ms={m:.2} min_ms={lo:.2} max_ms={hi:.2} runs={runs}"
        );
    }
    h.close();
}

fn open(dir: &Path, runs: usize) {
    let mut times = Vec::new();
    for _ in 0..runs {
        let t = Instant::now();
        let (h, restored) = History::open(config(dir, 300_000)).expect("open");
        let ms = t.elapsed().as_secs_f64() * 1e3;
        println!(
            "open ms={ms:.1} devices={} replayed={}",
            restored.latest.len(),
            restored.replayed
        );
        times.push(ms);
        h.close();
    }
    let (m, lo, hi) = median(&mut times);
    println!("open median_ms={m:.1} min_ms={lo:.1} max_ms={hi:.1} runs={runs}");
}

/// Bytes of the write-ahead log per reading: ROUNDS rounds appended, one flush, no seal.
fn wal(devices: u32, rounds: usize) {
    let mut fleet = fleet(devices);
    let dir = tempdir();
    let (h, _) = History::open(config(dir.path(), 3_600_000)).expect("open");
    let start = iiot::now_ms() - 3_600_000;
    let mut buf = Vec::new();
    let mut n = 0u64;
    for round in 0..rounds {
        for i in 0..devices as usize {
            if let Emitted::Reading { .. } = fleet.emit(i, start + round as i64 * 5_000, &mut buf) {
                let text = std::str::from_utf8(&buf).expect("utf-8");
                let r: Reading<'_> = serde_json::from_str(text).expect("reading");
                h.append(&r, text);
                n += 1;
            }
        }
    }
    while h.stats().rows_written.load(Ordering::Relaxed) < n {
        std::thread::sleep(Duration::from_millis(50));
    }
    let (bytes, files) = dir_bytes(&dir.path().join("wal"), "wal");
    println!(
        "wal devices={devices} readings={n} files={files} bytes={bytes} B_per_reading={:.2}",
        bytes as f64 / n as f64
    );
    h.close();
}

fn main() {
    // `cargo bench` passes `--bench`; flags are not modes.
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    match args.first().map(String::as_str) {
        None => write(10_000, 5, 1_000),
        Some("write") => write(
            arg(&args, 1, 10_000),
            arg(&args, 2, 10),
            arg(&args, 3, 1_000),
        ),
        Some("build") => build(Path::new(&args[1]), arg(&args, 2, 100), arg(&args, 3, 1.0)),
        Some("query") => query(
            Path::new(&args[1]),
            args.get(2).map_or("device_0001", String::as_str),
            arg(&args, 3, 20),
        ),
        Some("open") => open(Path::new(&args[1]), arg(&args, 2, 3)),
        Some("variants") => variants::run(
            Path::new(&args[1]),
            args.get(2).map_or("device_0001", String::as_str),
        ),
        Some("wal") => wal(arg(&args, 1, 10_000), arg(&args, 2, 40)),
        Some(other) => eprintln!("unknown mode {other}: write | build | query | open | wal"),
    }
}

/// The raw segments rewritten with other writer properties (the same schema and row groups as
/// `history::segment`).
mod variants {
    use std::fs::File;
    use std::path::Path;
    use std::sync::Arc;
    use std::time::Instant;

    use parquet::basic::{Compression, Encoding, ZstdLevel};
    use parquet::column::reader::ColumnReader;
    use parquet::data_type::{BoolType, ByteArray, ByteArrayType, Int32Type, Int64Type};
    use parquet::file::properties::{EnabledStatistics, WriterProperties, WriterVersion};
    use parquet::file::reader::FileReader;
    use parquet::file::serialized_reader::SerializedFileReader;
    use parquet::file::statistics::Statistics;
    use parquet::file::writer::SerializedFileWriter;
    use parquet::schema::types::{ColumnPath, Type};

    const INTS: [&str; 7] = [
        "temperature",
        "humidity",
        "pressure",
        "current",
        "battery",
        "signal_strength",
        "statuses",
    ];

    #[derive(Default)]
    struct Columns {
        ids: Vec<ByteArray>,
        t: Vec<i64>,
        ints: [Vec<i32>; 7],
        switch: Vec<bool>,
    }

    fn read_all(path: &Path) -> (Arc<Type>, Columns) {
        let reader = SerializedFileReader::new(File::open(path).expect("open")).expect("parquet");
        let schema = reader
            .metadata()
            .file_metadata()
            .schema_descr()
            .root_schema_ptr();
        let mut c = Columns::default();
        for i in 0..reader.num_row_groups() {
            let rg = reader.get_row_group(i).expect("row group");
            let n = rg.metadata().num_rows() as usize;
            for col in 0..10 {
                match rg.get_column_reader(col).expect("column") {
                    ColumnReader::ByteArrayColumnReader(mut r) => {
                        r.read_records(n, None, None, &mut c.ids).expect("read");
                    }
                    ColumnReader::Int64ColumnReader(mut r) => {
                        r.read_records(n, None, None, &mut c.t).expect("read");
                    }
                    ColumnReader::Int32ColumnReader(mut r) => {
                        let k = if col == 9 { 6 } else { col - 2 };
                        r.read_records(n, None, None, &mut c.ints[k]).expect("read");
                    }
                    ColumnReader::BoolColumnReader(mut r) => {
                        r.read_records(n, None, None, &mut c.switch).expect("read");
                    }
                    _ => panic!("unexpected column type"),
                }
            }
        }
        (schema, c)
    }

    fn props(ints: Encoding, t: Encoding, level: i32) -> WriterProperties {
        let mut b = WriterProperties::builder()
            .set_writer_version(WriterVersion::PARQUET_1_0)
            .set_compression(Compression::ZSTD(ZstdLevel::try_new(level).expect("level")))
            .set_statistics_enabled(EnabledStatistics::Chunk)
            .set_dictionary_enabled(false)
            .set_column_dictionary_enabled(ColumnPath::from("device_id"), true)
            .set_column_encoding(ColumnPath::from("t"), t);
        for c in INTS {
            b = b.set_column_encoding(ColumnPath::from(c), ints);
        }
        b.build()
    }

    fn write(path: &Path, schema: &Arc<Type>, c: &Columns, props: &WriterProperties, group: usize) {
        let file = File::create(path).expect("create");
        let mut w = SerializedFileWriter::new(file, schema.clone(), Arc::new(props.clone()))
            .expect("writer");
        let mut start = 0;
        while start < c.ids.len() {
            let end = (start + group).min(c.ids.len());
            let mut rg = w.next_row_group().expect("row group");
            let mut k = 0;
            while let Some(mut col) = rg.next_column().expect("column") {
                let r = start..end;
                match k {
                    0 => col
                        .typed::<ByteArrayType>()
                        .write_batch(&c.ids[r], None, None),
                    1 => col.typed::<Int64Type>().write_batch(&c.t[r], None, None),
                    2..=7 => col
                        .typed::<Int32Type>()
                        .write_batch(&c.ints[k - 2][r], None, None),
                    8 => col
                        .typed::<BoolType>()
                        .write_batch(&c.switch[r], None, None),
                    _ => col
                        .typed::<Int32Type>()
                        .write_batch(&c.ints[6][r], None, None),
                }
                .expect("write");
                col.close().expect("close");
                k += 1;
            }
            rg.close().expect("close");
            start = end;
        }
        w.into_inner().expect("finish").sync_data().expect("sync");
    }

    /// Reads every column of the row groups that may hold `device` (as `segment::read_raw`).
    fn read_device(path: &Path, device: &str) -> usize {
        let reader = SerializedFileReader::new(File::open(path).expect("open")).expect("parquet");
        let md = reader.metadata();
        let mut found = 0;
        for i in 0..md.num_row_groups() {
            let rgm = md.row_group(i);
            if let Some(Statistics::ByteArray(s)) = rgm.column(0).statistics()
                && let (Some(lo), Some(hi)) = (s.min_opt(), s.max_opt())
                && (device.as_bytes() < lo.data() || device.as_bytes() > hi.data())
            {
                continue;
            }
            let rg = reader.get_row_group(i).expect("row group");
            let n = rgm.num_rows() as usize;
            let mut ids = Vec::new();
            let mut t = Vec::new();
            let mut ints = Vec::new();
            let mut sw = Vec::new();
            for col in 0..10 {
                match rg.get_column_reader(col).expect("column") {
                    ColumnReader::ByteArrayColumnReader(mut r) => {
                        r.read_records(n, None, None, &mut ids).expect("read");
                    }
                    ColumnReader::Int64ColumnReader(mut r) => {
                        r.read_records(n, None, None, &mut t).expect("read");
                    }
                    ColumnReader::Int32ColumnReader(mut r) => {
                        r.read_records(n, None, None, &mut ints).expect("read");
                    }
                    ColumnReader::BoolColumnReader(mut r) => {
                        r.read_records(n, None, None, &mut sw).expect("read");
                    }
                    _ => panic!("unexpected column type"),
                }
            }
            found += ids
                .iter()
                .filter(|id| id.data() == device.as_bytes())
                .count();
        }
        found
    }

    pub fn run(dir: &Path, device: &str) {
        let mut segments: Vec<_> = std::fs::read_dir(dir.join("raw"))
            .expect("raw")
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "parquet"))
            .collect();
        segments.sort();
        let data: Vec<_> = segments.iter().map(|p| read_all(p)).collect();
        let rows: usize = data.iter().map(|(_, c)| c.ids.len()).sum();
        let out = super::tempdir();
        let variants = [
            (
                "BSS ints, DELTA t, zstd 3, 8192-row groups (current)",
                Encoding::BYTE_STREAM_SPLIT,
                Encoding::DELTA_BINARY_PACKED,
                3,
                8_192,
            ),
            (
                "DELTA ints, DELTA t, zstd 3",
                Encoding::DELTA_BINARY_PACKED,
                Encoding::DELTA_BINARY_PACKED,
                3,
                8_192,
            ),
            (
                "PLAIN ints, PLAIN t, zstd 3",
                Encoding::PLAIN,
                Encoding::PLAIN,
                3,
                8_192,
            ),
            (
                "BSS ints, DELTA t, zstd 1",
                Encoding::BYTE_STREAM_SPLIT,
                Encoding::DELTA_BINARY_PACKED,
                1,
                8_192,
            ),
            (
                "BSS ints, DELTA t, zstd 9",
                Encoding::BYTE_STREAM_SPLIT,
                Encoding::DELTA_BINARY_PACKED,
                9,
                8_192,
            ),
            (
                "BSS ints, DELTA t, zstd 3, 2048-row groups",
                Encoding::BYTE_STREAM_SPLIT,
                Encoding::DELTA_BINARY_PACKED,
                3,
                2_048,
            ),
            (
                "DELTA ints, DELTA t, zstd 3, 2048-row groups",
                Encoding::DELTA_BINARY_PACKED,
                Encoding::DELTA_BINARY_PACKED,
                3,
                2_048,
            ),
        ];
        for (name, ints, t, level, group) in variants {
            let p = props(ints, t, level);
            let mut writes = Vec::new();
            let mut bytes = 0;
            for _ in 0..3 {
                bytes = 0;
                let started = Instant::now();
                for (k, (schema, c)) in data.iter().enumerate() {
                    let path = out.path().join(format!("{k}.parquet"));
                    write(&path, schema, c, &p, group);
                    bytes += std::fs::metadata(&path).expect("meta").len();
                }
                writes.push(rows as f64 / started.elapsed().as_secs_f64());
            }
            let mut reads: Vec<f64> = (0..11)
                .map(|_| {
                    let started = Instant::now();
                    let n: usize = (0..data.len())
                        .map(|k| read_device(&out.path().join(format!("{k}.parquet")), device))
                        .sum();
                    std::hint::black_box(n);
                    started.elapsed().as_secs_f64() * 1e3
                })
                .collect();
            let (w, wlo, whi) = super::median(&mut writes);
            let (r, rlo, rhi) = super::median(&mut reads);
            println!(
                "variant \"{name}\": rows={rows} B_per_reading={:.2} write_rows_per_s={w:.0} \
                 ({wlo:.0}-{whi:.0}) read_device_ms={r:.1} ({rlo:.1}-{rhi:.1})",
                bytes as f64 / rows as f64
            );
        }
    }
}
