//! A private PostgreSQL cluster per test: Debian's PostgreSQL 15 (`scripts/pg-up.sh
//! --install`), `initdb` in a temp dir owned by the unprivileged `postgres` user (initdb
//! refuses root; as root the tools run through `runuser -u postgres --`), on a port the OS
//! picked, listening on 127.0.0.1 only with trust authentication. Stopped and removed on drop,
//! so also when the test fails.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A running private cluster with a database `iiot`.
pub struct PgServer {
    dir: tempfile::TempDir,
    /// `fsync=off` (tests); benchmarks keep PostgreSQL's durable defaults.
    fast: bool,
    bin: PathBuf,
    /// Its port.
    pub port: u16,
}

/// The directory of the newest PostgreSQL installed (its `initdb`, `psql`, …).
pub fn pg_bin() -> PathBuf {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL is not installed: run scripts/pg-up.sh --install")
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|p| p.join("initdb").exists())
        .collect();
    dirs.sort();
    dirs.pop()
        .expect("no initdb under /usr/lib/postgresql: run scripts/pg-up.sh --install")
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// Runs a PostgreSQL tool as the cluster's owner.
fn as_owner(tool: &Path, args: &[&str]) -> Output {
    let mut cmd = if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(tool);
        c
    } else {
        Command::new(tool)
    };
    cmd.args(args).output().expect("run a PostgreSQL tool")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

impl PgServer {
    /// Starts a fresh cluster (`fsync=off`: tests) and creates the database `iiot`.
    pub fn start() -> PgServer {
        PgServer::start_with(true)
    }

    /// The same with PostgreSQL's durable defaults (benchmarks).
    pub fn start_durable() -> PgServer {
        PgServer::start_with(false)
    }

    fn start_with(fast: bool) -> PgServer {
        let bin = pg_bin();
        let dir = tempfile::Builder::new()
            .prefix("iiot-pg-")
            .tempdir()
            .expect("temp dir");
        if is_root() {
            let ok = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(dir.path())
                .status()
                .expect("chown");
            assert!(ok.success(), "chown the cluster's directory to postgres");
        }
        let data = dir.path().join("data");
        let data_s = data.to_str().expect("utf-8 path").to_owned();
        let out = as_owner(
            &bin.join("initdb"),
            &[
                "-D",
                &data_s,
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
            ],
        );
        assert!(
            out.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let server = PgServer {
            dir,
            fast,
            bin,
            port: free_port(),
        };
        server.start_again();
        let out = as_owner(
            &server.bin.join("createdb"),
            &[
                "-h",
                "127.0.0.1",
                "-p",
                &server.port.to_string(),
                "-U",
                "postgres",
                "iiot",
            ],
        );
        assert!(
            out.status.success(),
            "createdb: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        server
    }

    fn data(&self) -> String {
        self.dir
            .path()
            .join("data")
            .to_str()
            .expect("utf-8 path")
            .to_owned()
    }

    /// `postgres://postgres@127.0.0.1:PORT/iiot`.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/iiot", self.port)
    }

    /// Starts the (stopped) cluster again on the same port.
    pub fn start_again(&self) {
        let log = self.dir.path().join("postgres.log");
        let mut opts = format!(
            "-p {} -c listen_addresses=127.0.0.1 -k {} -c max_connections=50",
            self.port,
            self.dir.path().display()
        );
        if self.fast {
            opts.push_str(" -c fsync=off");
        }
        let out = as_owner(
            &self.bin.join("pg_ctl"),
            &[
                "-D",
                &self.data(),
                "-l",
                log.to_str().expect("utf-8"),
                "-w",
                "-o",
                &opts,
                "start",
            ],
        );
        assert!(
            out.status.success(),
            "pg_ctl start: {} {}",
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }

    /// Stops the cluster at once (connections cut), as a crash or an outage would.
    pub fn stop(&self) {
        let _ = as_owner(
            &self.bin.join("pg_ctl"),
            &["-D", &self.data(), "-m", "immediate", "-w", "stop"],
        );
    }

    /// Runs `sql` with psql and returns its unaligned, tuples-only output.
    pub fn psql(&self, sql: &str) -> String {
        let out = as_owner(
            &self.bin.join("psql"),
            &[
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                "-d",
                "iiot",
                "-tAqc",
                sql,
            ],
        );
        assert!(
            out.status.success(),
            "psql {sql}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        self.stop();
    }
}
