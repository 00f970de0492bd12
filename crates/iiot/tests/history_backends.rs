//! One suite of history behaviour, run against every backend of [`HistoryStore`]: the
//! embedded store on disk (`DATA_DIR`), PostgreSQL (`HISTORY_DATABASE_URL`, a private
//! cluster per test from `support::postgres`) with plain partitions, and TimescaleDB
//! hypertables (`support::timescale`: TimescaleDB 2.23.0-dev in PGlite, PostgreSQL 17 in
//! WebAssembly, taking one connection, with a pool of one). Then what only the database
//! promises: redeliveries add nothing (rows nor rollups), migrations applied once however many
//! instances start at once, retention dropping whole partitions, and a database that goes
//! away and comes back; and on TimescaleDB: the tables are hypertables, retention drops whole
//! chunks, old chunks are compressed and answer as before, late and redelivered readings into
//! compressed chunks, a database made with plain partitions stays so, and a pool of one.
//!
//! Needs Debian's PostgreSQL (`scripts/pg-up.sh --install`) and the TimescaleDB test server
//! (`npm ci --prefix scripts/timescale`; both installed by `scripts/test.sh`).
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod support;

use std::sync::Arc;

use iiot::history::database::spool::{Found as SpoolFound, SPOOL_DIR};
use iiot::history::database::{
    DatabaseConfig, DbRow, HistoryDb, Layout, MAX_BUFFERED_ROWS, Spool, SpoolConfig,
};
use iiot::history::{History, HistoryConfig, HistoryError, HistoryStore};
use iiot::store::HistoryPoint;
use iiot_model::{Parameter, Reading};
use support::postgres::PgServer;
use support::timescale::TimescaleServer;

const SEC: i64 = 1_000;

/// A backend under test and what keeps it alive.
struct Backend {
    store: HistoryStore,
    rt: tokio::runtime::Runtime,
    _dir: Option<tempfile::TempDir>,
    pg: Option<PgServer>,
    _ts: Option<TimescaleServer>,
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

fn disk() -> Backend {
    let dir = tempfile::tempdir().expect("dir");
    let (h, _) = History::open(HistoryConfig::in_dir(dir.path())).expect("open");
    Backend {
        store: HistoryStore::Disk(Arc::new(h)),
        rt: runtime(),
        _dir: Some(dir),
        pg: None,
        _ts: None,
    }
}

fn database() -> Backend {
    let pg = PgServer::start();
    let rt = runtime();
    let db = rt
        .block_on(HistoryDb::open(DatabaseConfig::at(&pg.url())))
        .expect("open the database");
    let store = {
        let _in = rt.enter();
        HistoryStore::database(db)
    };
    Backend {
        store,
        rt,
        _dir: None,
        pg: Some(pg),
        _ts: None,
    }
}

/// `url` (a TimescaleDB test server) with a pool of one connection.
fn timescale_config(url: &str) -> DatabaseConfig {
    let mut cfg = DatabaseConfig::at(url);
    cfg.pool_size = 1;
    cfg
}

fn timescale() -> Backend {
    let ts = TimescaleServer::start();
    let rt = runtime();
    let db = rt
        .block_on(HistoryDb::open(timescale_config(&ts.url())))
        .expect("open the database");
    assert_eq!(db.layout(), Some(Layout::Hypertables));
    let store = {
        let _in = rt.enter();
        HistoryStore::database(db)
    };
    Backend {
        store,
        rt,
        _dir: None,
        pg: None,
        _ts: Some(ts),
    }
}

/// Reading `k` of `device` (temperature 20 + k/100), `n` of them 5 s apart ending at `last`.
fn series(device: &str, n: i64, last: i64) -> Vec<(Reading<'static>, String)> {
    spaced(device, n, last, 5 * SEC)
}

/// The same `step` ms apart.
fn spaced(device: &str, n: i64, last: i64, step: i64) -> Vec<(Reading<'static>, String)> {
    (0..n)
        .map(|k| {
            let r = support::readings::reading(
                device,
                k as u64,
                last - (n - 1 - k) * step,
                20.0 + k as f64 / 100.0,
            );
            let text = serde_json::to_string(&r).expect("json");
            (r, text)
        })
        .collect()
}

fn write(store: &HistoryStore, readings: &[(Reading<'static>, String)]) -> u64 {
    let batch: Vec<(&Reading<'static>, &str)> =
        readings.iter().map(|(r, t)| (r, t.as_str())).collect();
    store.write(&batch).expect("write")
}

fn total(points: &[HistoryPoint]) -> u32 {
    points.iter().map(|p| p.count).sum()
}

/// The ranges a dashboard asks for, with the tier each is answered from.
const RANGES: [(i64, &str); 3] = [
    (3_600 * SEC, "raw"),
    (86_400 * SEC, "1m"),
    (30 * 86_400 * SEC, "1h"),
];

// ---- the suite: each case takes a backend ----

fn answers_every_tier_and_knows_its_devices(b: Backend) {
    let now = iiot::now_ms();
    for d in ["d1", "d2", "d3"] {
        assert_eq!(write(&b.store, &series(d, 120, now)), 120);
    }
    assert!(b.store.knows("d1").unwrap());
    assert!(!b.store.knows("d9").unwrap());
    let raw = b.store.raw("d2", now - 3_600 * SEC, now).unwrap();
    assert_eq!(raw.len(), 120);
    assert_eq!(raw[0].value(Parameter::Temperature), 20.0);
    assert_eq!(raw[119].value(Parameter::Temperature), 21.19);
    assert_eq!(raw[119].t, now);
    for (range, label) in RANGES {
        let points = b
            .store
            .history("d2", Parameter::Temperature, now - range, now, 300, now)
            .unwrap();
        assert_eq!(total(&points), 120, "{label}");
        let min = points.iter().map(|p| p.min).fold(f64::MAX, f64::min);
        let max = points.iter().map(|p| p.max).fold(f64::MIN, f64::max);
        assert_eq!((min, max), (20.0, 21.19), "{label}");
        assert!(points.len() <= 300, "{label}");
        assert!(
            points.windows(2).all(|w| w[0].t < w[1].t),
            "{label}: in time order"
        );
    }
}

fn late_readings_come_back_in_time_order(b: Backend) {
    let now = iiot::now_ms();
    let mut s = series("late", 50, now);
    s.reverse();
    write(&b.store, &s[..25]);
    write(&b.store, &s[25..]);
    let raw = b.store.raw("late", now - 3_600 * SEC, now).unwrap();
    assert_eq!(raw.len(), 50);
    assert!(raw.windows(2).all(|w| w[0].t < w[1].t));
    let avg = b
        .store
        .history("late", Parameter::Temperature, now - 600 * SEC, now, 1, now)
        .unwrap();
    assert_eq!(avg.len(), 1);
    assert!((avg[0].avg - (20.0 + 0.245)).abs() < 1e-9, "{}", avg[0].avg);
}

fn bad_requests_are_refused_and_empty_ranges_are_empty(b: Backend) {
    let now = iiot::now_ms();
    write(&b.store, &series("e", 10, now));
    let bad_range = b.store.raw("e", now, now - 1);
    assert!(
        matches!(bad_range, Err(HistoryError::Store(_))),
        "{bad_range:?}"
    );
    let bad_points = b
        .store
        .history("e", Parameter::Humidity, now - SEC, now, 0, now);
    assert!(matches!(bad_points, Err(HistoryError::Store(_))));
    let before = b
        .store
        .raw("e", now - 7_200 * SEC, now - 3_600 * SEC)
        .unwrap();
    assert!(before.is_empty());
    let (lo, hi) = b.store.raw_bounds("e", now).unwrap();
    assert!(
        lo <= now - 45 * SEC && hi >= now,
        "bounds {lo}..{hi} hold every reading"
    );
}

fn gives_the_same_answers_as_the_disk_store(b: Backend) {
    let now = iiot::now_ms();
    let a = disk();
    let s = series("same", 2_000, now);
    write(&a.store, &s);
    write(&b.store, &s);
    for (range, label) in RANGES {
        for p in [
            Parameter::Temperature,
            Parameter::Pressure,
            Parameter::Battery,
        ] {
            let x = a
                .store
                .history("same", p, now - range, now, 97, now)
                .unwrap();
            let y = b
                .store
                .history("same", p, now - range, now, 97, now)
                .unwrap();
            assert_eq!(x.len(), y.len(), "{label} {p:?}");
            for (x, y) in x.iter().zip(&y) {
                assert_eq!((x.t, x.count, x.min, x.max), (y.t, y.count, y.min, y.max));
                assert!((x.avg - y.avg).abs() < 1e-9);
            }
        }
    }
    let x = a.store.raw("same", now - 86_400 * SEC, now).unwrap();
    let y = b.store.raw("same", now - 86_400 * SEC, now).unwrap();
    assert_eq!(x, y);
    drop(b.rt);
}

macro_rules! on_every_backend {
    ($($case:ident),* $(,)?) => {
        mod disk_backend {
            $(#[test] fn $case() { super::$case(super::disk()) })*
        }
        mod database_backend {
            $(#[test] fn $case() { super::$case(super::database()) })*
        }
        mod timescale_backend {
            $(#[test] fn $case() { super::$case(super::timescale()) })*
        }
    };
}

on_every_backend!(
    answers_every_tier_and_knows_its_devices,
    late_readings_come_back_in_time_order,
    bad_requests_are_refused_and_empty_ranges_are_empty,
);

#[test]
fn the_database_answers_exactly_as_the_disk_store() {
    gives_the_same_answers_as_the_disk_store(database());
}

#[test]
fn timescaledb_answers_exactly_as_the_disk_store() {
    gives_the_same_answers_as_the_disk_store(timescale());
}

// ---- what only the database promises ----

#[test]
fn a_redelivered_batch_adds_no_rows_and_no_rollup_counts() {
    let b = database();
    let now = iiot::now_ms();
    let s = series("again", 300, now);
    assert_eq!(write(&b.store, &s), 300);
    // Read again after a crash: half of it overlapping, the whole of it again.
    assert_eq!(write(&b.store, &s[150..]), 0);
    assert_eq!(write(&b.store, &s), 0);
    let pg = b.pg.as_ref().unwrap();
    assert_eq!(pg.psql("SELECT count(*) FROM iiot_readings"), "300");
    assert_eq!(pg.psql("SELECT sum(count) FROM iiot_rollup_1m"), "300");
    assert_eq!(pg.psql("SELECT sum(count) FROM iiot_rollup_1h"), "300");
    for (range, label) in RANGES {
        let points = b
            .store
            .history("again", Parameter::Current, now - range, now, 300, now)
            .unwrap();
        assert_eq!(total(&points), 300, "{label}");
    }
}

#[test]
fn migrations_run_once_however_many_instances_start_at_once() {
    let pg = PgServer::start();
    let rt = runtime();
    let url = pg.url();
    let opened = rt.block_on(async {
        let starts = (0..6).map(|_| HistoryDb::open(DatabaseConfig::at(&url)));
        futures::future::join_all(starts).await
    });
    for db in &opened {
        assert!(db.is_ok(), "{:?}", db.as_ref().err());
    }
    assert_eq!(
        pg.psql(
            "SELECT string_agg(version::text, ',' ORDER BY version) FROM iiot_schema_migrations"
        ),
        "1,2",
        "each migration shipped (history, then the API's alert rules) applied once"
    );
    // Today's raw partition exists (made ahead), and readings land in it, not the default.
    let db = opened.into_iter().next().unwrap().unwrap();
    let now = iiot::now_ms();
    let rows: Vec<DbRow> = series("p", 10, now)
        .iter()
        .map(|(r, _)| DbRow::of(r))
        .collect();
    assert_eq!(rt.block_on(db.insert(&rows)).unwrap(), 10);
    assert_eq!(pg.psql("SELECT count(*) FROM iiot_readings_default"), "0");
    assert_eq!(pg.psql("SELECT count(*) FROM ONLY iiot_readings"), "0");
    assert_eq!(
        pg.psql("SELECT count(*) FROM iiot_readings_v WHERE temperature >= 20"),
        "10"
    );
}

#[test]
fn retention_drops_whole_partitions_and_old_rows_in_the_default_one() {
    let pg = PgServer::start();
    let rt = runtime();
    let mut cfg = DatabaseConfig::at(&pg.url());
    cfg.retention[0] = std::time::Duration::from_secs(2 * 86_400);
    let db = rt.block_on(HistoryDb::open(cfg)).unwrap();
    let now = iiot::now_ms();
    let rows: Vec<DbRow> = series("r", 10, now)
        .iter()
        .map(|(r, _)| DbRow::of(r))
        .collect();
    rt.block_on(db.insert(&rows)).unwrap();
    let partitions = |pg: &PgServer| {
        pg.psql("SELECT count(*) FROM pg_inherits WHERE inhparent = 'iiot_readings'::regclass")
            .parse::<u32>()
            .unwrap()
    };
    let before = partitions(&pg);
    // Ten days later: today's partition is past a two-day retention and goes whole.
    let dropped = rt
        .block_on(db.upkeep(now + 10 * 86_400 * SEC))
        .unwrap()
        .dropped;
    assert!(dropped >= 1, "dropped {dropped}");
    assert_eq!(pg.psql("SELECT count(*) FROM iiot_readings"), "0");
    assert!(partitions(&pg) >= before, "new partitions were made ahead");
    // The rollups keep their longer retention.
    assert_eq!(pg.psql("SELECT sum(count) FROM iiot_rollup_1h"), "10");
}

#[test]
fn a_database_that_goes_away_buffers_bounded_then_takes_the_rest() {
    let b = database();
    let pg = b.pg.as_ref().unwrap();
    let HistoryStore::Database(db, _) = &b.store else {
        unreachable!()
    };
    let now = iiot::now_ms();
    let rows = |device: &str, n: i64| -> Vec<DbRow> {
        series(device, n, now)
            .iter()
            .map(|(r, _)| DbRow::of(r))
            .collect()
    };
    b.rt.block_on(db.write(rows("up", 10)));
    assert!(db.problem().is_none());
    pg.stop();
    // Never waits long, never fails: buffered, and /ready's reason set.
    b.rt.block_on(db.write(rows("down", 100)));
    assert!(db.problem().is_some());
    assert!(!b.rt.block_on(db.retry()), "still down");
    let load = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(load(&db.stats().buffered), 100);
    assert_eq!(load(&db.stats().lost), 0);
    // Past the bound the oldest are counted as lost, and memory stays bounded.
    let many: Vec<DbRow> = (0..MAX_BUFFERED_ROWS as i64 + 50)
        .map(|k| {
            let mut r = rows("flood", 1).remove(0);
            r.seq = k;
            r
        })
        .collect();
    b.rt.block_on(db.write(many));
    assert_eq!(load(&db.stats().buffered), MAX_BUFFERED_ROWS as u64);
    assert_eq!(load(&db.stats().lost), 150);
    pg.start_again();
    assert!(
        b.rt.block_on(db.retry()),
        "written once the database is back"
    );
    assert!(db.problem().is_none());
    assert_eq!(load(&db.stats().buffered), 0);
    // 10 before, then the flood's last MAX_BUFFERED_ROWS (one event time: one raw row each
    // by seq); the 100 "down" readings were the oldest in the buffer and were lost.
    assert_eq!(
        pg.psql("SELECT count(*) FROM iiot_readings"),
        (10 + MAX_BUFFERED_ROWS).to_string()
    );
    assert!(b.store.knows("flood").unwrap());
}

// ---- TimescaleDB (hypertables) ----

const DAY: i64 = 86_400 * SEC;

/// A TimescaleDB test server taking two connections (the pool's and psql's), and a history
/// database on it with `cfg`'s settings (pool of one).
fn timescale_db(
    cfg: impl FnOnce(&mut DatabaseConfig),
) -> (TimescaleServer, tokio::runtime::Runtime, Arc<HistoryDb>) {
    let ts = TimescaleServer::start_with(2);
    let rt = runtime();
    let mut c = timescale_config(&ts.url());
    cfg(&mut c);
    let db = rt.block_on(HistoryDb::open(c)).expect("open the database");
    (ts, rt, db)
}

fn rows_of(readings: &[(Reading<'static>, String)]) -> Vec<DbRow> {
    readings.iter().map(|(r, _)| DbRow::of(r)).collect()
}

/// The chunks of `table`: how many, how many compressed.
fn chunks(ts: &TimescaleServer, table: &str) -> (u32, u32) {
    let out = ts.psql(&format!(
        "SELECT count(*) || ',' || count(*) FILTER (WHERE is_compressed) \
         FROM timescaledb_information.chunks WHERE hypertable_name = '{table}'"
    ));
    let (all, compressed) = out.split_once(',').unwrap();
    (all.parse().unwrap(), compressed.parse().unwrap())
}

/// Everything a dashboard could ask of `device` over the last `span` ms before `now`, and
/// its raw readings.
fn answers(
    db: &Arc<HistoryDb>,
    rt: &tokio::runtime::Runtime,
    device: &str,
    now: i64,
    span: i64,
) -> String {
    let store = {
        let _in = rt.enter();
        HistoryStore::database(db.clone())
    };
    let mut out = Vec::new();
    for range in [3_600 * SEC, DAY, span, 30 * DAY] {
        for p in [Parameter::Temperature, Parameter::Battery] {
            for points in [1, 97, 300] {
                let h = store
                    .history(device, p, now - range, now, points, now)
                    .unwrap();
                out.push(format!("{range} {p:?} {points}: {h:?}"));
            }
        }
    }
    out.push(format!("{:?}", store.raw(device, now - span, now).unwrap()));
    out.join("\n")
}

#[test]
fn timescaledb_tables_are_hypertables_with_compression_and_the_same_columns() {
    let (ts, rt, db) = timescale_db(|_| {});
    assert_eq!(db.layout(), Some(Layout::Hypertables));
    let now = iiot::now_ms();
    assert_eq!(
        rt.block_on(db.insert(&rows_of(&series("h", 10, now))))
            .unwrap(),
        10
    );
    assert_eq!(
        ts.psql(
            "SELECT string_agg(hypertable_name || ' ' || compression_enabled, ', ' \
             ORDER BY hypertable_name) FROM timescaledb_information.hypertables"
        ),
        "iiot_readings true, iiot_rollup_1h true, iiot_rollup_1m true"
    );
    assert_eq!(
        ts.psql(
            "SELECT string_agg(hypertable_name || ' ' || column_name || ' ' || integer_interval, \
             ', ' ORDER BY hypertable_name) FROM timescaledb_information.dimensions"
        ),
        "iiot_readings ts 86400000, iiot_rollup_1h bucket 2592000000, \
         iiot_rollup_1m bucket 2592000000"
    );
    // Segmented by device, ordered by time.
    assert_eq!(
        ts.psql(
            "SELECT string_agg(format('%s %s %s', hypertable_name, attname, \
               CASE WHEN segmentby_column_index IS NOT NULL THEN 'segment' \
                    ELSE 'order ' || orderby_column_index END), ', ' \
             ORDER BY hypertable_name, attname) FROM timescaledb_information.compression_settings"
        ),
        "iiot_readings device_id segment, iiot_readings seq order 2, iiot_readings ts order 1, \
         iiot_rollup_1h bucket order 1, iiot_rollup_1h device_id segment, \
         iiot_rollup_1m bucket order 1, iiot_rollup_1m device_id segment"
    );
    // The same keys as the partitioned layout, no partitions, the device list a plain table.
    assert_eq!(
        ts.psql(
            "SELECT string_agg(pg_get_constraintdef(oid), ', ' ORDER BY conrelid::regclass::text) \
             FROM pg_constraint WHERE contype = 'p' AND conrelid IN \
             ('iiot_readings'::regclass, 'iiot_rollup_1m'::regclass, 'iiot_rollup_1h'::regclass, \
              'iiot_devices'::regclass)"
        ),
        "PRIMARY KEY (device_id), PRIMARY KEY (device_id, ts, seq), \
         PRIMARY KEY (device_id, bucket), PRIMARY KEY (device_id, bucket)"
    );
    assert_eq!(ts.psql("SELECT count(*) FROM pg_partitioned_table"), "0");
    assert_eq!(
        ts.psql("SELECT description FROM iiot_schema_migrations WHERE version = 1"),
        "readings, rollups, devices (TimescaleDB hypertables)"
    );
    assert_eq!(
        ts.psql(
            "SELECT string_agg(version::text, ',' ORDER BY version) FROM iiot_schema_migrations"
        ),
        "1,2"
    );
    assert_eq!(
        ts.psql("SELECT count(*) FROM iiot_readings_v WHERE temperature >= 20"),
        "10"
    );
    assert_eq!(ts.psql("SELECT sum(count) FROM iiot_rollup_1m"), "10");
    assert_eq!(
        chunks(&ts, "iiot_readings").0,
        1,
        "today's chunk, made by the insert"
    );
}

#[test]
fn timescaledb_retention_drops_whole_chunks() {
    let (ts, rt, db) =
        timescale_db(|c| c.retention[0] = std::time::Duration::from_secs(2 * 86_400));
    let now = iiot::now_ms();
    // Today's readings, and three days ago's (already past retention: a chunk of its own).
    rt.block_on(db.insert(&rows_of(&series("r", 10, now))))
        .unwrap();
    rt.block_on(db.insert(&rows_of(&series("old", 5, now - 3 * DAY))))
        .unwrap();
    assert_eq!(chunks(&ts, "iiot_readings").0, 2);
    let u = rt.block_on(db.upkeep(now)).unwrap();
    assert_eq!((u.created, u.dropped), (0, 1), "{u:?}");
    assert_eq!(rt.block_on(db.count_readings()).unwrap(), 10);
    // Ten days later: today's chunk is past a two-day retention and goes whole.
    let u = rt.block_on(db.upkeep(now + 10 * DAY)).unwrap();
    assert_eq!(u.dropped, 1, "{u:?}");
    assert_eq!(rt.block_on(db.count_readings()).unwrap(), 0);
    assert_eq!(chunks(&ts, "iiot_readings").0, 0);
    // The rollups keep their longer retention.
    assert_eq!(ts.psql("SELECT sum(count) FROM iiot_rollup_1h"), "15");
    assert_eq!(ts.psql("SELECT count(*) FROM iiot_readings"), "0");
}

#[test]
fn timescaledb_compresses_old_chunks_and_they_answer_as_before() {
    let year = std::time::Duration::from_secs(366 * 86_400);
    let (ts, rt, db) = timescale_db(|c| c.retention = [year; 3]);
    let now = iiot::now_ms();
    // Three days of two devices, one reading every ten minutes: four daily raw chunks.
    let a = spaced("a", 432, now, 600 * SEC);
    let b = spaced("b", 432, now, 600 * SEC);
    rt.block_on(db.insert(&rows_of(&a))).unwrap();
    rt.block_on(db.insert(&rows_of(&b))).unwrap();
    let before = answers(&db, &rt, "a", now, 3 * DAY);
    let disk = disk();
    write(&disk.store, &a);
    let raw = |s: &HistoryStore| s.raw("a", now - 3 * DAY, now).unwrap();
    assert_eq!(raw(&disk.store), {
        let _in = rt.enter();
        raw(&HistoryStore::database(db.clone()))
    });
    let (raw_chunks, none) = chunks(&ts, "iiot_readings");
    assert!(raw_chunks >= 3 && none == 0, "{raw_chunks} {none}");

    // Chunks ended more than two days ago are compressed: the raw ones of three days ago.
    let u = rt.block_on(db.upkeep(now)).unwrap();
    assert!(u.compressed >= 1, "{u:?}");
    let (_, compressed) = chunks(&ts, "iiot_readings");
    assert_eq!(
        compressed as usize, u.compressed,
        "only raw chunks are that old"
    );
    assert_eq!(answers(&db, &rt, "a", now, 3 * DAY), before);
    // Sixty days on, every chunk of every tier has ended two days before: all compressed.
    rt.block_on(db.upkeep(now + 60 * DAY)).unwrap();
    for table in ["iiot_readings", "iiot_rollup_1m", "iiot_rollup_1h"] {
        let (all, compressed) = chunks(&ts, table);
        assert!(
            all >= 1 && compressed == all,
            "{table}: {compressed} of {all}"
        );
    }
    assert_eq!(answers(&db, &rt, "a", now, 3 * DAY), before);
    assert_eq!(rt.block_on(db.count_readings()).unwrap(), 864);
    // Again: nothing left to compress for the first time.
    assert_eq!(
        rt.block_on(db.upkeep(now + 60 * DAY)).unwrap().compressed,
        0
    );
}

#[test]
fn timescaledb_redelivered_and_late_readings_into_compressed_chunks() {
    let year = std::time::Duration::from_secs(366 * 86_400);
    let (ts, rt, db) = timescale_db(|c| c.retention = [year; 3]);
    let now = iiot::now_ms();
    let s = spaced("c", 300, now - 3 * DAY, 10 * SEC);
    assert_eq!(rt.block_on(db.insert(&rows_of(&s))).unwrap(), 300);
    // Every chunk of every tier compressed (as sixty days on).
    rt.block_on(db.upkeep(now + 60 * DAY)).unwrap();
    for table in ["iiot_readings", "iiot_rollup_1m", "iiot_rollup_1h"] {
        let (all, compressed) = chunks(&ts, table);
        assert!(
            all >= 1 && compressed == all,
            "{table}: {compressed} of {all}"
        );
    }
    let before = answers(&db, &rt, "c", now, 4 * DAY);
    // Read again after a crash: half of it, then all of it. Nothing new anywhere.
    assert_eq!(rt.block_on(db.insert(&rows_of(&s[150..]))).unwrap(), 0);
    assert_eq!(rt.block_on(db.insert(&rows_of(&s))).unwrap(), 0);
    assert_eq!(ts.psql("SELECT count(*) FROM iiot_readings"), "300");
    assert_eq!(ts.psql("SELECT sum(count) FROM iiot_rollup_1m"), "300");
    assert_eq!(ts.psql("SELECT sum(count) FROM iiot_rollup_1h"), "300");
    assert_eq!(answers(&db, &rt, "c", now, 4 * DAY), before);
    // A late reading (a new seq) into a compressed chunk lands, and its rollups count it.
    let late = support::readings::reading("c", 10_000, s[10].0.timestamp, -5.0);
    let late = vec![(late, String::new())];
    assert_eq!(rt.block_on(db.insert(&rows_of(&late))).unwrap(), 1);
    assert_eq!(ts.psql("SELECT count(*) FROM iiot_readings"), "301");
    assert_eq!(ts.psql("SELECT sum(count) FROM iiot_rollup_1m"), "301");
    assert_eq!(ts.psql("SELECT sum(count) FROM iiot_rollup_1h"), "301");
    assert_eq!(ts.psql("SELECT min(min0) FROM iiot_rollup_1h"), "-500");
    let store = {
        let _in = rt.enter();
        HistoryStore::database(db.clone())
    };
    let day = store
        .history("c", Parameter::Temperature, now - 4 * DAY, now, 1, now)
        .unwrap();
    assert_eq!((day[0].count, day[0].min), (301, -5.0));
    // The next upkeep compresses what the late reading left uncompressed; answers hold.
    rt.block_on(db.upkeep(now + 60 * DAY)).unwrap();
    assert_eq!(ts.psql("SELECT count(*) FROM iiot_readings"), "301");
    let again = store
        .history("c", Parameter::Temperature, now - 4 * DAY, now, 1, now)
        .unwrap();
    assert_eq!(again, day);
}

#[test]
fn a_database_made_with_plain_partitions_stays_plain_on_timescaledb() {
    let ts = TimescaleServer::start_with(2);
    let rt = runtime();
    let now = iiot::now_ms();
    let mut off = timescale_config(&ts.url());
    off.timescaledb = false;
    let db = rt.block_on(HistoryDb::open(off)).unwrap();
    assert_eq!(db.layout(), Some(Layout::Partitions));
    assert_eq!(
        rt.block_on(db.insert(&rows_of(&series("p", 10, now))))
            .unwrap(),
        10
    );
    drop(db);
    // Meanwhile the extension was created in this database (by hand, or by another tool).
    ts.psql("CREATE EXTENSION IF NOT EXISTS timescaledb");
    let db = rt
        .block_on(HistoryDb::open(timescale_config(&ts.url())))
        .unwrap();
    assert_eq!(db.layout(), Some(Layout::Partitions), "kept as it was made");
    assert_eq!(
        rt.block_on(db.insert(&rows_of(&series("p", 10, now))))
            .unwrap(),
        0
    );
    assert_eq!(
        rt.block_on(db.insert(&rows_of(&series("q", 10, now))))
            .unwrap(),
        10
    );
    let u = rt.block_on(db.upkeep(now)).unwrap();
    assert_eq!((u.dropped, u.compressed), (0, 0), "{u:?}");
    assert_eq!(
        ts.psql("SELECT count(*) FROM timescaledb_information.hypertables"),
        "0"
    );
    assert_eq!(
        ts.psql("SELECT description FROM iiot_schema_migrations WHERE version = 1"),
        "readings, rollups, devices"
    );
    // Readings in today's partition, not the default one.
    assert_eq!(ts.psql("SELECT count(*) FROM iiot_readings_default"), "0");
    assert_eq!(ts.psql("SELECT count(*) FROM iiot_readings"), "20");
    let store = {
        let _in = rt.enter();
        HistoryStore::database(db.clone())
    };
    assert_eq!(store.raw("p", now - 3_600 * SEC, now).unwrap().len(), 10);
    assert!(store.knows("q").unwrap());
}

#[test]
fn a_pool_of_one_takes_turns_on_a_server_of_one_connection() {
    let ts = TimescaleServer::start();
    let rt = runtime();
    let db = rt
        .block_on(HistoryDb::open(timescale_config(&ts.url())))
        .unwrap();
    let now = iiot::now_ms();
    // Writes, queries and upkeep at once: with one connection they wait for each other.
    let results = rt.block_on(async {
        let work = (0..8).map(|k| {
            let db = db.clone();
            async move {
                let rows = rows_of(&series(&format!("t{k}"), 50, now));
                let written = db.insert(&rows).await?;
                let upkeep = db.upkeep(now).await?;
                let known = db.knows(&format!("t{k}")).await?;
                Ok::<_, iiot::history::database::DbError>((written, upkeep.dropped, known))
            }
        });
        futures::future::join_all(work).await
    });
    for r in results {
        assert_eq!(r.unwrap(), (50, 0, true));
    }
    assert_eq!(rt.block_on(db.count_readings()).unwrap(), 400);
}

/// The spool of a writer in `dir`, bounded at `max_bytes`, as `iiot run` / `iiot process` open it.
fn spool_in(dir: &std::path::Path, max_bytes: u64) -> Option<(Spool, SpoolFound)> {
    let cfg = SpoolConfig {
        dir: dir.join(SPOOL_DIR),
        max_bytes,
    };
    Some(Spool::open(cfg).expect("open the spool"))
}

/// A writer on `pg` with its spool in `dir` (see [`spool_in`]).
fn spooled_writer(
    rt: &tokio::runtime::Runtime,
    pg: &PgServer,
    dir: &std::path::Path,
    max_bytes: u64,
) -> Arc<HistoryDb> {
    rt.block_on(HistoryDb::open_with(
        DatabaseConfig::at(&pg.url()),
        spool_in(dir, max_bytes),
    ))
    .expect("open the database")
}

fn load(c: &std::sync::atomic::AtomicU64) -> u64 {
    c.load(std::sync::atomic::Ordering::Relaxed)
}

fn db_rows(device: &str, n: i64) -> Vec<DbRow> {
    series(device, n, iiot::now_ms())
        .iter()
        .map(|(r, _)| DbRow::of(r))
        .collect()
}

fn spool_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(dir.join(SPOOL_DIR))
        .expect("spool dir")
        .filter_map(|e| Some(e.ok()?.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "spool"))
        .collect();
    files.sort();
    files
}

#[test]
fn readings_spooled_during_an_outage_survive_a_kill_and_arrive_once() {
    let pg = PgServer::start();
    let rt = runtime();
    let dir = tempfile::tempdir().expect("dir");
    let all = db_rows("kill", 1_010);
    {
        let db = spooled_writer(&rt, &pg, dir.path(), 1 << 30);
        rt.block_on(db.write(all[..10].to_vec()));
        assert_eq!(load(&db.stats().buffered), 0, "written directly");
        pg.stop();
        for batch in all[10..].chunks(50) {
            rt.block_on(db.write(batch.to_vec()));
        }
        assert!(!rt.block_on(db.retry()), "still down");
        assert_eq!(load(&db.stats().buffered), 1_000);
        assert!(load(&db.stats().spool_bytes) > 0);
        assert!(db.problem().is_some());
        // Dropped without flushing or a last retry: what a SIGKILL leaves.
    }
    assert!(!spool_files(dir.path()).is_empty());
    pg.start_again();
    let db = spooled_writer(&rt, &pg, dir.path(), 1 << 30);
    assert_eq!(load(&db.stats().buffered), 1_000, "found again at start");
    let problem = db.problem().expect("degraded while readings wait");
    assert!(problem.contains("1000 readings waiting"), "{problem}");
    assert!(rt.block_on(db.retry()), "the spool written");
    assert_eq!(load(&db.stats().rows_written), 1_000);
    assert_eq!(load(&db.stats().duplicates), 0);
    assert_eq!(load(&db.stats().buffered), 0);
    assert_eq!(load(&db.stats().spool_bytes), 0);
    assert_eq!(load(&db.stats().lost), 0);
    assert!(db.problem().is_none());
    assert_eq!(pg.psql("SELECT count(*) FROM iiot_readings"), "1010");
    assert_eq!(pg.psql("SELECT sum(count) FROM iiot_rollup_1m"), "1010");
    assert!(
        spool_files(dir.path()).is_empty(),
        "written segments deleted"
    );
    // Writes go straight to the database again.
    rt.block_on(db.write(db_rows("after", 5)));
    assert_eq!(pg.psql("SELECT count(*) FROM iiot_readings"), "1015");
}

#[test]
fn past_the_spool_bound_the_oldest_readings_are_counted_lost_and_the_newest_kept() {
    let pg = PgServer::start();
    let rt = runtime();
    let dir = tempfile::tempdir().expect("dir");
    let max: u64 = 256 * 1024;
    let all = db_rows("bound", 20_000);
    let kept = {
        let db = spooled_writer(&rt, &pg, dir.path(), max);
        pg.stop();
        for batch in all.chunks(500) {
            rt.block_on(db.write(batch.to_vec()));
        }
        let (kept, lost) = (load(&db.stats().buffered), load(&db.stats().lost));
        assert!(lost > 0, "past {max} bytes the oldest are dropped");
        assert_eq!(kept + lost, 20_000, "every reading kept or counted");
        assert!(load(&db.stats().spool_bytes) <= max);
        let on_disk: u64 = spool_files(dir.path())
            .iter()
            .map(|p| std::fs::metadata(p).unwrap().len())
            .sum();
        assert!(on_disk <= max, "{on_disk} bytes on disk");
        kept
    };
    pg.start_again();
    let db = spooled_writer(&rt, &pg, dir.path(), max);
    assert_eq!(load(&db.stats().buffered), kept);
    assert!(rt.block_on(db.retry()));
    assert_eq!(
        pg.psql("SELECT count(*) FROM iiot_readings"),
        kept.to_string()
    );
    // The newest were kept: seqs from 20,000 - kept to the last.
    assert_eq!(
        pg.psql("SELECT min(seq) || ' ' || max(seq) FROM iiot_readings"),
        format!("{} 19999", 20_000 - kept)
    );
}

#[test]
fn a_torn_last_spool_record_is_skipped_and_counted_and_the_rest_written() {
    let pg = PgServer::start();
    let rt = runtime();
    let dir = tempfile::tempdir().expect("dir");
    let all = db_rows("torn", 300);
    {
        let db = spooled_writer(&rt, &pg, dir.path(), 1 << 30);
        pg.stop();
        for batch in all.chunks(100) {
            rt.block_on(db.write(batch.to_vec()));
        }
        assert_eq!(load(&db.stats().buffered), 300);
    }
    // A crash in the middle of the last append.
    let last = spool_files(dir.path()).pop().expect("a segment");
    let len = std::fs::metadata(&last).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&last)
        .unwrap()
        .set_len(len - 100)
        .unwrap();
    pg.start_again();
    let db = spooled_writer(&rt, &pg, dir.path(), 1 << 30);
    let skipped = load(&db.stats().spool_skipped_bytes);
    assert!(skipped > 0 && skipped < len, "{skipped}");
    assert_eq!(load(&db.stats().buffered), 200);
    assert!(rt.block_on(db.retry()), "not a stop");
    assert_eq!(pg.psql("SELECT count(*) FROM iiot_readings"), "200");
    assert_eq!(pg.psql("SELECT max(seq) FROM iiot_readings"), "199");
}
