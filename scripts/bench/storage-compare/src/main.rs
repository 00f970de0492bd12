//! Storage engine comparison for the sensor history: Parquet segments (as
//! `crates/iiot/src/history/segment.rs` writes them), SQLite (rusqlite, bundled), redb and fjall.
//!
//! Every engine gets the same deterministic data (a random walk per device, fixed seed),
//! arriving in time order (all devices' readings for t, then t + 5 s, ...), written by one
//! thread in the batches a live system would commit. Measured: write rate, bytes per reading
//! (after the writes and after the engine's compaction / VACUUM) and the time of two queries
//! (one device, 1 h of raw rows; one device, the whole range).
//!
//! Usage: `cargo run --release -- [--engines parquet,sqlite,redb,fjall] [--hours 24]
//!        [--devices 1000] [--runs 3] [--dir /tmp/storecmp] [--redb-durability immediate|none]`

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::Rng;
use rand_pcg::Pcg64Mcg;

type Res<T> = Result<T, Box<dyn std::error::Error>>;

/// 2026-01-01T00:00:00Z in Unix ms.
const T0: i64 = 1_767_225_600_000;
const STEP_MS: i64 = 5_000;
const SEED: u128 = 0x1107_5eed_2026;

// ---------------------------------------------------------------------------------------------
// Data

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Row {
    dev: u32,
    t: i64,
    /// temperature, humidity, pressure, current in hundredths
    sensors: [i32; 4],
    battery: i32,
    signal: i32,
    switch_on: bool,
    statuses: i32,
}

const VALUE_LEN: usize = 26;

impl Row {
    fn key(&self) -> [u8; 12] {
        key(self.dev, self.t)
    }
    /// 6 × i32 little-endian + switch byte + statuses byte = 26 bytes.
    fn value(&self) -> [u8; VALUE_LEN] {
        let mut v = [0u8; VALUE_LEN];
        let ints = [
            self.sensors[0],
            self.sensors[1],
            self.sensors[2],
            self.sensors[3],
            self.battery,
            self.signal,
        ];
        for (i, x) in ints.iter().enumerate() {
            v[i * 4..i * 4 + 4].copy_from_slice(&x.to_le_bytes());
        }
        v[24] = u8::from(self.switch_on);
        v[25] = self.statuses as u8;
        v
    }
    fn from_kv(k: &[u8], v: &[u8]) -> Row {
        let dev = u32::from_be_bytes(k[0..4].try_into().unwrap());
        let t = (u64::from_be_bytes(k[4..12].try_into().unwrap()) ^ (1 << 63)) as i64;
        let i = |n: usize| i32::from_le_bytes(v[n * 4..n * 4 + 4].try_into().unwrap());
        Row {
            dev,
            t,
            sensors: [i(0), i(1), i(2), i(3)],
            battery: i(4),
            signal: i(5),
            switch_on: v[24] != 0,
            statuses: i32::from(v[25]),
        }
    }
}

/// (device u32, t i64) big-endian; the sign bit of t flipped so byte order is numeric order.
fn key(dev: u32, t: i64) -> [u8; 12] {
    let mut k = [0u8; 12];
    k[0..4].copy_from_slice(&dev.to_be_bytes());
    k[4..12].copy_from_slice(&((t as u64) ^ (1 << 63)).to_be_bytes());
    k
}

fn device_name(dev: u32) -> String {
    format!("device_{dev:05}")
}

struct DevState {
    sensors: [i32; 4],
    battery: i32,
    signal: i32,
    switch_on: bool,
    statuses: i32,
}

/// A random walk per device, like a real sensor.
struct Generator {
    rng: Pcg64Mcg,
    devs: Vec<DevState>,
}

const LIMITS: [(i32, i32); 4] = [
    (2_000, 3_000),     // temperature 20..30 °C
    (4_000, 7_000),     // humidity 40..70 %
    (101_100, 101_500), // pressure ~1013 hPa (hundredths of hPa)
    (0, 1_500),         // current 0..15 A
];
/// Largest step per reading, hundredths (0.01..0.3 for temperature).
const MAX_STEP: [i32; 4] = [30, 30, 5, 20];

impl Generator {
    fn new(devices: u32) -> Self {
        let mut rng = Pcg64Mcg::new(SEED);
        let devs = (0..devices)
            .map(|_| DevState {
                sensors: std::array::from_fn(|i| rng.random_range(LIMITS[i].0..=LIMITS[i].1)),
                battery: rng.random_range(70..=100),
                signal: rng.random_range(-90..=-40),
                switch_on: rng.random_bool(0.95),
                statuses: 0,
            })
            .collect();
        Generator { rng, devs }
    }

    /// All devices' readings for time `t`, in device order.
    fn tick(&mut self, t: i64, out: &mut Vec<Row>) {
        out.clear();
        let rng = &mut self.rng;
        for (d, s) in self.devs.iter_mut().enumerate() {
            for i in 0..4 {
                // Most readings move by a small step, some stay.
                if rng.random_bool(0.8) {
                    let step = rng.random_range(1..=MAX_STEP[i]);
                    let v = if rng.random_bool(0.5) {
                        s.sensors[i] + step
                    } else {
                        s.sensors[i] - step
                    };
                    let (lo, hi) = LIMITS[i];
                    s.sensors[i] = if v < lo {
                        2 * lo - v
                    } else if v > hi {
                        2 * hi - v
                    } else {
                        v
                    };
                }
            }
            if s.battery > 0 && rng.random_bool(1.0 / 4_000.0) {
                s.battery -= 1;
            }
            if rng.random_bool(0.01) {
                s.signal = (s.signal + rng.random_range(-3..=3)).clamp(-90, -40);
            }
            if s.switch_on {
                if rng.random_bool(0.001) {
                    s.switch_on = false;
                }
            } else if rng.random_bool(0.05) {
                s.switch_on = true;
            }
            if s.statuses == 0 {
                if rng.random_bool(0.002) {
                    let sensor = rng.random_range(0..4);
                    s.statuses = rng.random_range(1..=3) << (2 * sensor);
                }
            } else if rng.random_bool(0.1) {
                s.statuses = 0;
            }
            out.push(Row {
                dev: d as u32,
                t,
                sensors: s.sensors,
                battery: s.battery,
                signal: s.signal,
                switch_on: s.switch_on,
                statuses: s.statuses,
            });
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Engines

trait Engine {
    /// One commit's worth of arrivals (all devices' readings for one timestamp).
    fn write_batch(&mut self, rows: &[Row]) -> Res<()>;
    /// End of the write phase: flush buffers, make everything durable.
    fn finish(&mut self) -> Res<()>;
    /// Compaction / VACUUM where the engine has one; `false` if it has none.
    fn compact(&mut self) -> Res<bool>;
    /// The rows of `dev` with `t0 <= t < t1`, all columns decoded.
    fn query(&mut self, dev: u32, t0: i64, t1: i64) -> Res<Vec<Row>>;
}

// --- Parquet ---------------------------------------------------------------------------------

mod pq {
    use super::*;
    use parquet::basic::{Compression, Encoding, ZstdLevel};
    use parquet::column::reader::ColumnReader;
    use parquet::data_type::{BoolType, ByteArray, ByteArrayType, Int32Type, Int64Type};
    use parquet::file::properties::{EnabledStatistics, WriterProperties, WriterVersion};
    use parquet::file::reader::{FileReader, RowGroupReader};
    use parquet::file::serialized_reader::SerializedFileReader;
    use parquet::file::statistics::Statistics;
    use parquet::file::writer::SerializedFileWriter;
    use parquet::schema::parser::parse_message_type;
    use parquet::schema::types::ColumnPath;

    /// Copied from crates/iiot/src/history/segment.rs.
    const ROW_GROUP: usize = 8_192;
    const RAW_SCHEMA: &str = "
message raw {
  required binary device_id (STRING);
  required int64 t (TIMESTAMP(MILLIS,true));
  required int32 temperature (DECIMAL(9,2));
  required int32 humidity (DECIMAL(9,2));
  required int32 pressure (DECIMAL(9,2));
  required int32 current (DECIMAL(9,2));
  required int32 battery;
  required int32 signal_strength;
  required boolean switch_on;
  required int32 statuses;
}";
    const INTS: [&str; 7] = [
        "temperature",
        "humidity",
        "pressure",
        "current",
        "battery",
        "signal_strength",
        "statuses",
    ];
    /// Segment span: 5 minutes of arrivals per file.
    pub const SPAN_MS: i64 = 300_000;

    fn properties() -> WriterProperties {
        let mut b = WriterProperties::builder()
            .set_writer_version(WriterVersion::PARQUET_1_0)
            .set_compression(Compression::ZSTD(ZstdLevel::try_new(3).unwrap_or_default()))
            .set_statistics_enabled(EnabledStatistics::Chunk)
            .set_dictionary_enabled(false)
            .set_column_dictionary_enabled(ColumnPath::from("device_id"), true)
            .set_column_encoding(ColumnPath::from("t"), Encoding::DELTA_BINARY_PACKED)
            .set_created_by("storage-compare".to_string());
        for c in INTS {
            b = b.set_column_encoding(ColumnPath::from(c), Encoding::BYTE_STREAM_SPLIT);
        }
        b.build()
    }

    pub struct Parquet {
        dir: PathBuf,
        names: Vec<ByteArray>,
        buf: Vec<Row>,
        buf_start: Option<i64>,
        /// (first t, path) of each segment, in time order: the catalog.
        files: Vec<(i64, PathBuf)>,
        props: Arc<WriterProperties>,
        schema: Arc<parquet::schema::types::Type>,
    }

    impl Parquet {
        pub fn open(dir: &Path, devices: u32) -> Res<Self> {
            Ok(Parquet {
                dir: dir.to_path_buf(),
                names: (0..devices)
                    .map(|d| ByteArray::from(device_name(d).as_str()))
                    .collect(),
                buf: Vec::new(),
                buf_start: None,
                files: Vec::new(),
                props: Arc::new(properties()),
                schema: Arc::new(parse_message_type(RAW_SCHEMA)?),
            })
        }

        fn seal(&mut self) -> Res<()> {
            let Some(start) = self.buf_start.take() else {
                return Ok(());
            };
            // Arrivals are in time order; a stable sort by device gives (device, t) order.
            self.buf.sort_by_key(|r| r.dev);
            let path = self.dir.join(format!("{start}.parquet"));
            let file = fs::File::create(&path)?;
            let mut w = SerializedFileWriter::new(file, self.schema.clone(), self.props.clone())?;
            for chunk in self.buf.chunks(ROW_GROUP) {
                let mut rg = w.next_row_group()?;
                let mut k = 0;
                while let Some(mut col) = rg.next_column()? {
                    match k {
                        0 => {
                            let v: Vec<ByteArray> = chunk
                                .iter()
                                .map(|r| self.names[r.dev as usize].clone())
                                .collect();
                            col.typed::<ByteArrayType>().write_batch(&v, None, None)?;
                        }
                        1 => {
                            let v: Vec<i64> = chunk.iter().map(|r| r.t).collect();
                            col.typed::<Int64Type>().write_batch(&v, None, None)?;
                        }
                        8 => {
                            let v: Vec<bool> = chunk.iter().map(|r| r.switch_on).collect();
                            col.typed::<BoolType>().write_batch(&v, None, None)?;
                        }
                        _ => {
                            let v: Vec<i32> = chunk
                                .iter()
                                .map(|r| match k {
                                    2..=5 => r.sensors[k - 2],
                                    6 => r.battery,
                                    7 => r.signal,
                                    _ => r.statuses,
                                })
                                .collect();
                            col.typed::<Int32Type>().write_batch(&v, None, None)?;
                        }
                    }
                    col.close()?;
                    k += 1;
                }
                rg.close()?;
            }
            let file = w.into_inner()?;
            file.sync_data()?;
            self.files.push((start, path));
            self.buf.clear();
            Ok(())
        }
    }

    macro_rules! reader {
        ($name:ident, $t:ty, $variant:ident) => {
            fn $name(rg: &dyn RowGroupReader, col: usize, n: usize) -> Res<Vec<$t>> {
                let mut out: Vec<$t> = Vec::with_capacity(n);
                match rg.get_column_reader(col)? {
                    ColumnReader::$variant(mut r) => {
                        while out.len() < n {
                            let (records, _, _) =
                                r.read_records(n - out.len(), None, None, &mut out)?;
                            if records == 0 {
                                break;
                            }
                        }
                    }
                    _ => return Err("column type".into()),
                }
                Ok(out)
            }
        };
    }
    reader!(read_i32, i32, Int32ColumnReader);
    reader!(read_i64, i64, Int64ColumnReader);
    reader!(read_bool, bool, BoolColumnReader);
    reader!(read_bytes, ByteArray, ByteArrayColumnReader);

    impl Engine for Parquet {
        fn write_batch(&mut self, rows: &[Row]) -> Res<()> {
            let t = rows[0].t;
            let start = t - t.rem_euclid(SPAN_MS);
            if self.buf_start.is_some_and(|s| s != start) {
                self.seal()?;
            }
            self.buf_start = Some(start);
            self.buf.extend_from_slice(rows);
            Ok(())
        }
        fn finish(&mut self) -> Res<()> {
            self.seal()?;
            fs::File::open(&self.dir)?.sync_all()?;
            Ok(())
        }
        fn compact(&mut self) -> Res<bool> {
            Ok(false)
        }
        /// As segment.rs reads: the catalog picks the files, row-group statistics of device_id
        /// pick the row groups, then rows are filtered.
        fn query(&mut self, dev: u32, t0: i64, t1: i64) -> Res<Vec<Row>> {
            let name = device_name(dev);
            let id = name.as_bytes();
            let mut out = Vec::new();
            for (start, path) in &self.files {
                if *start >= t1 || *start + SPAN_MS <= t0 {
                    continue;
                }
                let reader = SerializedFileReader::new(fs::File::open(path)?)?;
                let md = reader.metadata();
                for i in 0..md.num_row_groups() {
                    let rgm = md.row_group(i);
                    if let Some(Statistics::ByteArray(s)) = rgm.column(0).statistics()
                        && let (Some(lo), Some(hi)) = (s.min_opt(), s.max_opt())
                        && (id < lo.data() || id > hi.data())
                    {
                        continue;
                    }
                    let rg = reader.get_row_group(i)?;
                    let n = rgm.num_rows() as usize;
                    let ids = read_bytes(rg.as_ref(), 0, n)?;
                    let t = read_i64(rg.as_ref(), 1, n)?;
                    let mut ints = Vec::with_capacity(6);
                    for c in 2..=7 {
                        ints.push(read_i32(rg.as_ref(), c, n)?);
                    }
                    let sw = read_bool(rg.as_ref(), 8, n)?;
                    let st = read_i32(rg.as_ref(), 9, n)?;
                    for k in 0..n {
                        if ids[k].data() == id && t[k] >= t0 && t[k] < t1 {
                            out.push(Row {
                                dev,
                                t: t[k],
                                sensors: [ints[0][k], ints[1][k], ints[2][k], ints[3][k]],
                                battery: ints[4][k],
                                signal: ints[5][k],
                                switch_on: sw[k],
                                statuses: st[k],
                            });
                        }
                    }
                }
            }
            Ok(out)
        }
    }
}

// --- SQLite ----------------------------------------------------------------------------------

mod sq {
    use super::*;
    use rusqlite::{Connection, params};

    pub struct Sqlite {
        conn: Connection,
    }

    const INSERT: &str = "INSERT INTO readings VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)";
    const SELECT: &str = "SELECT device_id, t, temperature, humidity, pressure, current, battery, \
         signal_strength, switch_on, statuses FROM readings \
         WHERE device_id = ?1 AND t >= ?2 AND t < ?3 ORDER BY t";

    impl Sqlite {
        pub fn open(dir: &Path) -> Res<Self> {
            let conn = Connection::open(dir.join("history.sqlite"))?;
            conn.pragma_update(None, "journal_mode", "WAL")?;
            conn.pragma_update(None, "synchronous", "NORMAL")?;
            conn.execute_batch(
                "CREATE TABLE readings (
                   device_id INTEGER NOT NULL,
                   t INTEGER NOT NULL,
                   temperature INTEGER NOT NULL,
                   humidity INTEGER NOT NULL,
                   pressure INTEGER NOT NULL,
                   current INTEGER NOT NULL,
                   battery INTEGER NOT NULL,
                   signal_strength INTEGER NOT NULL,
                   switch_on INTEGER NOT NULL,
                   statuses INTEGER NOT NULL,
                   PRIMARY KEY (device_id, t)
                 ) WITHOUT ROWID;",
            )?;
            Ok(Sqlite { conn })
        }
    }

    impl Engine for Sqlite {
        fn write_batch(&mut self, rows: &[Row]) -> Res<()> {
            let tx = self.conn.transaction()?;
            {
                let mut st = tx.prepare_cached(INSERT)?;
                for r in rows {
                    st.execute(params![
                        r.dev,
                        r.t,
                        r.sensors[0],
                        r.sensors[1],
                        r.sensors[2],
                        r.sensors[3],
                        r.battery,
                        r.signal,
                        r.switch_on,
                        r.statuses
                    ])?;
                }
            }
            tx.commit()?;
            Ok(())
        }
        fn finish(&mut self) -> Res<()> {
            self.conn
                .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
            Ok(())
        }
        fn compact(&mut self) -> Res<bool> {
            self.conn.execute_batch("VACUUM")?;
            self.conn
                .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
            Ok(true)
        }
        fn query(&mut self, dev: u32, t0: i64, t1: i64) -> Res<Vec<Row>> {
            let mut st = self.conn.prepare_cached(SELECT)?;
            let rows = st.query_map(params![dev, t0, t1], |r| {
                Ok(Row {
                    dev: r.get(0)?,
                    t: r.get(1)?,
                    sensors: [r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?],
                    battery: r.get(6)?,
                    signal: r.get(7)?,
                    switch_on: r.get(8)?,
                    statuses: r.get(9)?,
                })
            })?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        }
    }
}

// --- redb ------------------------------------------------------------------------------------

mod rd {
    use super::*;
    use redb::{Database, Durability, ReadableDatabase, TableDefinition};

    const TABLE: TableDefinition<[u8; 12], [u8; VALUE_LEN]> = TableDefinition::new("readings");

    pub struct Redb {
        db: Database,
        durability: Durability,
    }

    impl Redb {
        pub fn open(dir: &Path, immediate: bool) -> Res<Self> {
            let db = Database::create(dir.join("history.redb"))?;
            let durability = if immediate {
                Durability::Immediate
            } else {
                Durability::None
            };
            Ok(Redb { db, durability })
        }
    }

    impl Engine for Redb {
        fn write_batch(&mut self, rows: &[Row]) -> Res<()> {
            let mut tx = self.db.begin_write()?;
            tx.set_durability(self.durability)?;
            {
                let mut t = tx.open_table(TABLE)?;
                for r in rows {
                    t.insert(r.key(), r.value())?;
                }
            }
            tx.commit()?;
            Ok(())
        }
        fn finish(&mut self) -> Res<()> {
            // An empty durable commit makes earlier non-durable ones persistent.
            let mut tx = self.db.begin_write()?;
            tx.set_durability(Durability::Immediate)?;
            tx.commit()?;
            Ok(())
        }
        fn compact(&mut self) -> Res<bool> {
            while self.db.compact()? {}
            Ok(true)
        }
        fn query(&mut self, dev: u32, t0: i64, t1: i64) -> Res<Vec<Row>> {
            let tx = self.db.begin_read()?;
            let t = tx.open_table(TABLE)?;
            let mut out = Vec::new();
            for e in t.range(key(dev, t0)..key(dev, t1))? {
                let (k, v) = e?;
                out.push(Row::from_kv(&k.value(), &v.value()));
            }
            Ok(out)
        }
    }
}

// --- fjall -----------------------------------------------------------------------------------

mod fj {
    use super::*;
    use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};

    pub struct Fjall {
        db: Database,
        ks: Keyspace,
    }

    impl Fjall {
        pub fn open(dir: &Path) -> Res<Self> {
            let db = Database::builder(dir.join("fjall")).open()?;
            // Default options: data blocks uncompressed in L0/L1, LZ4 from L2 on.
            let ks = db.keyspace("readings", KeyspaceCreateOptions::default)?;
            Ok(Fjall { db, ks })
        }
    }

    impl Engine for Fjall {
        fn write_batch(&mut self, rows: &[Row]) -> Res<()> {
            // PersistMode::Buffer: the journal is handed to the OS at each commit (survives a
            // process crash, as SQLite's WAL with synchronous=NORMAL), fsync at the end.
            let mut b = self.db.batch().durability(Some(PersistMode::Buffer));
            for r in rows {
                b.insert(&self.ks, r.key(), r.value());
            }
            b.commit()?;
            Ok(())
        }
        fn finish(&mut self) -> Res<()> {
            self.db.persist(PersistMode::SyncAll)?;
            Ok(())
        }
        fn compact(&mut self) -> Res<bool> {
            self.ks.rotate_memtable_and_wait()?;
            self.ks.major_compact()?;
            self.db.persist(PersistMode::SyncAll)?;
            // Obsolete tables and journals are deleted in the background: wait for it.
            for _ in 0..100 {
                if self.db.outstanding_flushes() == 0 && self.db.active_compactions() == 0 {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            std::thread::sleep(Duration::from_secs(1));
            Ok(true)
        }
        fn query(&mut self, dev: u32, t0: i64, t1: i64) -> Res<Vec<Row>> {
            let mut out = Vec::new();
            for g in self.ks.range(key(dev, t0)..key(dev, t1)) {
                let (k, v) = g.into_inner()?;
                out.push(Row::from_kv(&k, &v));
            }
            Ok(out)
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Driver

struct Opts {
    engines: Vec<String>,
    hours: i64,
    devices: u32,
    runs: usize,
    dir: PathBuf,
    redb_immediate: bool,
    query_runs: usize,
    /// Timestamps (of 5 s) per commit: 1 = every tick of 1,000 rows.
    commit_ticks: i64,
}

fn parse() -> Res<Opts> {
    let mut o = Opts {
        engines: ["parquet", "sqlite", "redb", "fjall"]
            .map(String::from)
            .to_vec(),
        hours: 24,
        devices: 1000,
        runs: 3,
        dir: PathBuf::from("/tmp/storecmp"),
        redb_immediate: true,
        query_runs: 20,
        commit_ticks: 1,
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < args.len() {
        let v = args.get(i + 1).ok_or("missing value")?.clone();
        match args[i].as_str() {
            "--engines" => o.engines = v.split(',').map(String::from).collect(),
            "--hours" => o.hours = v.parse()?,
            "--devices" => o.devices = v.parse()?,
            "--runs" => o.runs = v.parse()?,
            "--dir" => o.dir = PathBuf::from(v),
            "--query-runs" => o.query_runs = v.parse()?,
            "--commit-ticks" => o.commit_ticks = v.parse()?,
            "--redb-durability" => o.redb_immediate = v == "immediate",
            a => return Err(format!("unknown argument {a}").into()),
        }
        i += 2;
    }
    Ok(o)
}

/// (apparent bytes, allocated bytes, apparent bytes of preallocated journal files `*.jnl`).
fn dir_bytes(p: &Path) -> io::Result<(u64, u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let mut len = 0;
    let mut alloc = 0;
    let mut jnl = 0;
    for e in fs::read_dir(p)? {
        let e = e?;
        let m = e.metadata()?;
        if m.is_dir() {
            let (l, a, j) = dir_bytes(&e.path())?;
            len += l;
            alloc += a;
            jnl += j;
        } else {
            len += m.len();
            alloc += m.blocks() * 512;
            if e.path().extension().is_some_and(|x| x == "jnl") {
                jnl += m.len();
            }
        }
    }
    Ok((len, alloc, jnl))
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn checksum(rows: &[Row]) -> i64 {
    rows.iter()
        .map(|r| {
            r.t % 1_000_003
                + i64::from(r.sensors.iter().sum::<i32>())
                + i64::from(r.battery + r.signal + r.statuses)
                + i64::from(r.switch_on)
        })
        .sum()
}

/// Median ms of `n` runs after one warm-up, and the row count and checksum.
fn time_query(e: &mut dyn Engine, n: usize, dev: u32, t0: i64, t1: i64) -> Res<(f64, usize, i64)> {
    let warm = e.query(dev, t0, t1)?;
    let mut v = Vec::with_capacity(n);
    for _ in 0..n {
        let s = Instant::now();
        let r = e.query(dev, t0, t1)?;
        v.push(s.elapsed().as_secs_f64() * 1e3);
        assert_eq!(r.len(), warm.len());
    }
    Ok((median(&mut v), warm.len(), checksum(&warm)))
}

fn run_one(o: &Opts, engine: &str, run: usize) -> Res<()> {
    let dir = o.dir.join(format!("{engine}-{run}"));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir)?;
    let mut e: Box<dyn Engine> = match engine {
        "parquet" => Box::new(pq::Parquet::open(&dir, o.devices)?),
        "sqlite" => Box::new(sq::Sqlite::open(&dir)?),
        "redb" => Box::new(rd::Redb::open(&dir, o.redb_immediate)?),
        "fjall" => Box::new(fj::Fjall::open(&dir)?),
        x => return Err(format!("unknown engine {x}").into()),
    };
    let ticks = o.hours * 3_600_000 / STEP_MS;
    let mut g = Generator::new(o.devices);
    let mut rows = Vec::with_capacity(o.devices as usize);
    let mut batch = Vec::with_capacity(o.devices as usize * o.commit_ticks as usize);
    let mut engine_time = Duration::ZERO;
    let wall = Instant::now();
    let mut n = 0u64;
    for k in 0..ticks {
        g.tick(T0 + k * STEP_MS, &mut rows);
        batch.extend_from_slice(&rows);
        if (k + 1) % o.commit_ticks == 0 || k + 1 == ticks {
            let s = Instant::now();
            e.write_batch(&batch)?;
            engine_time += s.elapsed();
            n += batch.len() as u64;
            batch.clear();
        }
    }
    let s = Instant::now();
    e.finish()?;
    engine_time += s.elapsed();
    let wall = wall.elapsed();
    let (len1, alloc1, jnl1) = dir_bytes(&dir)?;

    let dev = 421 % o.devices;
    let end = T0 + ticks * STEP_MS;
    let h0 = T0 + (ticks * STEP_MS / 2) / 3_600_000 * 3_600_000;
    let (q1, c1, s1) = time_query(e.as_mut(), o.query_runs, dev, h0, h0 + 3_600_000)?;
    let (qa, ca, sa) = time_query(e.as_mut(), o.query_runs, dev, T0, end)?;

    let s = Instant::now();
    let compacted = e.compact()?;
    let compact_s = s.elapsed().as_secs_f64();
    let (len2, alloc2, jnl2, q1c, qac) = if compacted {
        let (l, a, j) = dir_bytes(&dir)?;
        let (q1c, c, s) = time_query(e.as_mut(), o.query_runs, dev, h0, h0 + 3_600_000)?;
        assert_eq!((c, s), (c1, s1));
        let (qac, c, s) = time_query(e.as_mut(), o.query_runs, dev, T0, end)?;
        assert_eq!((c, s), (ca, sa));
        (l, a, j, q1c, qac)
    } else {
        (len1, alloc1, jnl1, q1, qa)
    };
    drop(e);
    // After close (fjall deletes the tables a compaction made obsolete only when they are
    // no longer referenced).
    let (len3, _, jnl3) = dir_bytes(&dir)?;
    if std::env::var_os("STORECMP_LIST").is_some() {
        let _ = std::process::Command::new("find")
            .arg(&dir)
            .arg("-type")
            .arg("f")
            .arg("-size")
            .arg("+100k")
            .arg("-ls")
            .status();
    }
    let nf = n as f64;
    println!(
        "RESULT engine={engine} run={run} commit_ticks={} rows={n} write_rows_per_s={:.0} wall_rows_per_s={:.0} \
         bytes_per_reading={:.2} alloc_bytes_per_reading={:.2} journal_bytes={jnl1} \
         compacted={compacted} compact_s={compact_s:.1} bytes_per_reading_compacted={:.2} \
         alloc_bytes_per_reading_compacted={:.2} journal_bytes_compacted={jnl2} \
         bytes_per_reading_closed={:.2} journal_bytes_closed={jnl3} q1h_ms={q1:.3} q1h_rows={c1} q1h_sum={s1} \
         qall_ms={qa:.3} qall_rows={ca} qall_sum={sa} q1h_ms_compacted={q1c:.3} \
         qall_ms_compacted={qac:.3}",
        o.commit_ticks,
        nf / engine_time.as_secs_f64(),
        nf / wall.as_secs_f64(),
        len1 as f64 / nf,
        alloc1 as f64 / nf,
        len2 as f64 / nf,
        alloc2 as f64 / nf,
        len3 as f64 / nf,
    );
    fs::remove_dir_all(&dir)?;
    Ok(())
}

fn main() -> Res<()> {
    let o = parse()?;
    fs::create_dir_all(&o.dir)?;
    eprintln!(
        "{} devices × {} h at 5 s = {} rows per engine, {} runs, dir {}",
        o.devices,
        o.hours,
        o.devices as i64 * o.hours * 720,
        o.runs,
        o.dir.display()
    );
    // Runs interleaved (engine A, B, C, D, then again) so load from other builds on the shared
    // machine spreads over all engines.
    for run in 1..=o.runs {
        for engine in &o.engines {
            eprintln!("run {run}: {engine} ...");
            run_one(&o, engine, run)?;
        }
    }
    Ok(())
}
