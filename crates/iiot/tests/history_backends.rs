//! One suite of history behaviour, run against both backends of [`HistoryStore`]: the
//! embedded store on disk (`DATA_DIR`) and PostgreSQL (`HISTORY_DATABASE_URL`, a private
//! cluster per test from `support::postgres`). Then what only the database promises:
//! redeliveries add nothing (rows nor rollups), migrations applied once however many
//! instances start at once, retention dropping whole partitions, and a database that goes
//! away and comes back.
//!
//! Needs Debian's PostgreSQL (`scripts/pg-up.sh --install`).
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod support;

use std::sync::Arc;

use iiot::history::database::spool::{Found as SpoolFound, SPOOL_DIR};
use iiot::history::database::{
    DatabaseConfig, DbRow, HistoryDb, MAX_BUFFERED_ROWS, Spool, SpoolConfig,
};
use iiot::history::{History, HistoryConfig, HistoryError, HistoryStore};
use iiot::store::HistoryPoint;
use iiot_model::{Parameter, Reading};
use support::postgres::PgServer;

const SEC: i64 = 1_000;

/// A backend under test and what keeps it alive.
struct Backend {
    store: HistoryStore,
    rt: tokio::runtime::Runtime,
    _dir: Option<tempfile::TempDir>,
    pg: Option<PgServer>,
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
    }
}

/// Reading `k` of `device` (temperature 20 + k/100), `n` of them 5 s apart ending at `last`.
fn series(device: &str, n: i64, last: i64) -> Vec<(Reading<'static>, String)> {
    (0..n)
        .map(|k| {
            let r = support::readings::reading(
                device,
                k as u64,
                last - (n - 1 - k) * 5 * SEC,
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

fn both_backends_give_the_same_answers() {
    let now = iiot::now_ms();
    let (a, b) = (disk(), database());
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

macro_rules! on_both {
    ($($case:ident),* $(,)?) => {
        mod disk_backend {
            $(#[test] fn $case() { super::$case(super::disk()) })*
        }
        mod database_backend {
            $(#[test] fn $case() { super::$case(super::database()) })*
        }
    };
}

on_both!(
    answers_every_tier_and_knows_its_devices,
    late_readings_come_back_in_time_order,
    bad_requests_are_refused_and_empty_ranges_are_empty,
);

#[test]
fn the_database_answers_exactly_as_the_disk_store() {
    both_backends_give_the_same_answers();
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
    let (_, dropped) = rt.block_on(db.upkeep(now + 10 * 86_400 * SEC)).unwrap();
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
