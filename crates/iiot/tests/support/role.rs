//! The `iiot` binary as a child process: a clean working directory, roles started with
//! environment variables, waiting on HTTP answers and on log lines.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::http::{http_get, request};

/// Generous: group joins and rebalances take seconds, and CI machines are shared.
pub const PATIENCE: Duration = Duration::from_secs(90);

/// A directory `iiot-{tag}-{pid}` under the temp dir, created if missing.
pub fn work_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("iiot-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// The `iiot` binary, to run in [`work_dir`]`(tag)`: no config file or `.env` there.
pub fn iiot_command(tag: &str) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_iiot"));
    cmd.env("DATA_DIR", fresh_data_dir(tag));
    cmd.current_dir(work_dir(tag));
    cmd
}

/// A data directory no other role uses, under [`work_dir`]`(tag)`: roles started side by side
/// never share (and lock) one; a test that restarts a role on the same history sets DATA_DIR
/// itself.
pub fn fresh_data_dir(tag: &str) -> PathBuf {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    work_dir(tag).join(format!("data-{n}-{}", nanos()))
}

/// A port below the ephemeral range (32768–60999) that nothing listens on now.
pub fn free_port() -> u16 {
    let start = 21_000 + (std::process::id() * 7919 + nanos()) % 9_000;
    (0..9_000)
        .map(|i| 21_000 + (start - 21_000 + i) % 9_000)
        .find(|&p| TcpListener::bind(("0.0.0.0", p as u16)).is_ok())
        .expect("a free port") as u16
}

/// The sub-second part of the clock: a cheap source of distinct names.
pub fn nanos() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos())
}

/// The number after `name=` on the first log line containing `marker` and `name=`.
pub fn log_field(log: &str, marker: &str, name: &str) -> Option<u64> {
    let prefix = format!("{name}=");
    log.lines()
        .filter(|l| l.contains(marker))
        .find_map(|l| l.split_whitespace().find_map(|w| w.strip_prefix(&prefix)))
        .and_then(|v| v.parse().ok())
}

/// A running `iiot` role; killed on drop. Its output goes to a log file named in failures.
pub struct Role {
    pub child: Child,
    pub http_port: u16,
    pub log: PathBuf,
}

impl Role {
    /// `iiot <args>` against `brokers`, on free ports, with only `env` besides.
    pub fn start(args: &[&str], brokers: &str, env: &[(&str, &str)]) -> Role {
        let mut all = vec![("KAFKA_BROKERS", brokers)];
        all.extend_from_slice(env);
        Role::embedded(args, &all)
    }

    /// `iiot <args>` on the embedded bus (no Kafka), on free ports, with only `env` besides.
    pub fn embedded(args: &[&str], env: &[(&str, &str)]) -> Role {
        let http_port = free_port();
        let log = std::env::temp_dir().join(format!(
            "iiot-kafka-test-{}-{}-{http_port}.log",
            std::process::id(),
            args[0]
        ));
        let file = std::fs::File::create(&log).expect("log file");
        let mut cmd = iiot_command("kafka-cwd");
        cmd.args(args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("DATA_DIR", fresh_data_dir("kafka-cwd"))
            .env("HTTP_PORT", http_port.to_string())
            .env("WEBSOCKET_PORT", free_port().to_string())
            .env("STATUS_INTERVAL", "2s")
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("log file"))
            .stderr(file);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("start iiot");
        Role {
            child,
            http_port,
            log,
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// GET `path`: status and body; `None` while nothing answers.
    pub fn get(&self, path: &str) -> Option<(u16, String)> {
        http_get(self.http_port, path)
    }

    /// POST `path` (an empty body): status and body; `None` while nothing answers.
    pub fn post(&self, path: &str) -> Option<(u16, String)> {
        request(self.http_port, "POST", path)
    }

    /// POST `body` to `path`: status and body; `None` while nothing answers.
    pub fn post_body(&self, path: &str, body: &[u8]) -> Option<(u16, String)> {
        super::http::request_with_body(self.http_port, "POST", path, body)
    }

    pub fn json(&self, path: &str) -> Option<Value> {
        let (status, body) = self.get(path)?;
        (status == 200).then(|| serde_json::from_str(&body).ok())?
    }

    /// Waits until `check` holds, failing with the role's log after [`PATIENCE`].
    pub fn wait_for(&mut self, what: &str, mut check: impl FnMut(&Role) -> bool) {
        let deadline = Instant::now() + PATIENCE;
        while Instant::now() < deadline {
            if check(self) {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "iiot exited ({status}) waiting for {what}:\n{}",
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!("timed out waiting for {what}; log:\n{}", self.log_text());
    }

    /// Waits until the log contains `text`.
    pub fn wait_for_log(&mut self, what: &str, text: &str) {
        self.wait_for(what, |r| r.log_text().contains(text));
    }

    pub fn ready(&self) -> bool {
        matches!(self.get("/ready"), Some((200, _)))
    }

    /// A sample of `/metrics` (sum over series whose labels contain `labels`).
    pub fn metric(&self, name: &str, labels: &str) -> f64 {
        let Some((200, text)) = self.get("/metrics") else {
            return 0.0;
        };
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .filter(|l| {
                let series = l.split_whitespace().next().unwrap_or("");
                (series == name || series.starts_with(&format!("{name}{{")))
                    && series.contains(labels)
            })
            .filter_map(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
            .sum()
    }

    /// Waits (up to [`PATIENCE`]) for the role to exit by itself (`--duration`).
    pub fn wait_exit(mut self) -> std::process::ExitStatus {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status;
            }
            assert!(Instant::now() < deadline, "no exit:\n{}", self.log_text());
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// SIGTERM, then waits for a clean exit.
    pub fn stop(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(40);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "no exit after SIGTERM:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Role {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `iiot simulate --output kafka` with `devices` devices every `interval` for `duration`.
pub fn simulate(
    brokers: &str,
    devices: &str,
    interval: &str,
    duration: &str,
    seed: &str,
    env: &[(&str, &str)],
) -> Role {
    let args = [
        "simulate",
        "--output",
        "kafka",
        "--devices",
        devices,
        "--interval",
        interval,
        "--duration",
        duration,
        "--seed",
        seed,
    ];
    Role::start(&args, brokers, env)
}
