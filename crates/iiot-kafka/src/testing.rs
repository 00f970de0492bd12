//! A private Kafka broker for tests (feature `testing`): [`TestBroker`] runs
//! [tansu](https://github.com/tansu-io/tansu) with memory storage on a free local port.
//!
//! Ports are taken below 32768, outside Linux's ephemeral range (32768–60999), so a broker
//! restarted on the same port cannot find it taken by some client's outgoing connection.
//!
//! Known tansu 0.6 limitations a test must allow for:
//! - a fetch from an offset inside a record batch returns nothing (Kafka returns the batch and
//!   the client skips to the offset), so a consumer resuming mid-batch — after a rebalance or a
//!   restart — misses the rest of that batch. Tests that resume mid-stream publish one message
//!   per batch (`ProducerSettings::batch_num_messages = 1`).
//! - memory storage: [`TestBroker::stop`] loses every topic, message, committed offset and
//!   producer id; [`TestBroker::start_again`] creates the topics again, empty, and an idempotent
//!   producer that was connected before never gets a message accepted again (its deliveries
//!   time out). Tests of a broker restart use [`TestBroker::start_persistent`] (SQLite
//!   storage), which comes back with everything, as a Kafka broker does.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::TopicSpec;

/// How long a starting broker may take to answer.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// A tansu broker owned by a test; killed on drop.
pub struct TestBroker {
    /// Its address for `bootstrap.servers` (`127.0.0.1:port`).
    pub brokers: String,
    port: u16,
    topics: Vec<TopicSpec>,
    bin: PathBuf,
    log: PathBuf,
    /// Where a persistent broker keeps its database; `None` for memory storage.
    data_dir: Option<PathBuf>,
    child: Option<Child>,
}

/// The tansu binary: `$TANSU_BIN`, else `tansu` on `PATH`, else `~/.cargo/bin/tansu`.
///
/// # Panics
/// If none exists, with a message telling how to install it.
pub fn tansu_bin() -> PathBuf {
    let from_env = std::env::var_os("TANSU_BIN").map(PathBuf::from);
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("tansu"))
            .find(|p| p.is_file())
    });
    let in_cargo = std::env::var_os("HOME").map(|h| Path::new(&h).join(".cargo/bin/tansu"));
    from_env
        .into_iter()
        .chain(on_path)
        .chain(in_cargo)
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "the Kafka tests need the tansu broker: run `scripts/kafka-up.sh --install` \
                 (or set TANSU_BIN to its path)"
            )
        })
}

impl TestBroker {
    /// Starts a broker on a free port and creates `topics`.
    ///
    /// # Panics
    /// If tansu is missing or does not start.
    pub fn start(topics: &[TopicSpec]) -> TestBroker {
        let mut broker = TestBroker::reserve(topics);
        broker.start_again();
        broker
    }

    /// Chooses a free port but does not start the broker (for tests that begin with no
    /// broker); [`TestBroker::start_again`] starts it there.
    pub fn reserve(topics: &[TopicSpec]) -> TestBroker {
        let bin = tansu_bin();
        let port = free_port();
        TestBroker {
            brokers: format!("127.0.0.1:{port}"),
            port,
            topics: topics.to_vec(),
            log: std::env::temp_dir().join(format!("iiot-tansu-{port}.log")),
            bin,
            data_dir: None,
            child: None,
        }
    }

    /// Like [`TestBroker::start`], but the broker keeps its topics, messages, offsets and
    /// producer state in a SQLite file across [`TestBroker::stop`] / [`TestBroker::start_again`],
    /// as a Kafka broker restart does.
    pub fn start_persistent(topics: &[TopicSpec]) -> TestBroker {
        let mut broker = TestBroker::reserve(topics);
        let dir = std::env::temp_dir().join(format!("iiot-tansu-{}-data", broker.port));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("tansu data directory");
        broker.data_dir = Some(dir);
        broker.start_again();
        broker
    }

    /// The broker's port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Whether the broker process runs.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Kills the broker (its memory storage goes with it). Idempotent.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// (Re)starts the broker on the same port, waits until it answers, and creates the topics
    /// again. Idempotent while it runs.
    ///
    /// # Panics
    /// If it does not answer within 20 s.
    pub fn start_again(&mut self) {
        if self.is_running() {
            return;
        }
        let url = format!("tcp://127.0.0.1:{}", self.port);
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let log = std::fs::File::create(&self.log).expect("tansu log file");
            let mut command = Command::new(&self.bin);
            command.args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
            ]);
            match &self.data_dir {
                // tansu reads a sqlite URL's path relative to its working directory.
                Some(dir) => command
                    .args(["--storage-engine", "sqlite://tansu.db"])
                    .current_dir(dir),
                None => command.args(["--storage-engine", "memory://tansu/"]),
            };
            let child = command
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("tansu log file"))
                .stderr(log)
                .spawn()
                .unwrap_or_else(|e| panic!("starting {}: {e}", self.bin.display()));
            self.child = Some(child);
            if self.wait_until_answering(deadline) {
                break;
            }
            // The port may still be held by the previous process: try again.
            self.stop();
            assert!(
                Instant::now() < deadline,
                "tansu did not start on port {}; see {}",
                self.port,
                self.log.display()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        let topics = self.topics.clone();
        self.create_topics(&topics);
    }

    fn wait_until_answering(&mut self, deadline: Instant) -> bool {
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        while Instant::now() < deadline {
            if !self.is_running() {
                return false;
            }
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    /// Creates topics (existing ones are fine) with the tansu CLI.
    ///
    /// # Panics
    /// If a topic cannot be created.
    pub fn create_topics(&self, topics: &[TopicSpec]) {
        let url = format!("tcp://127.0.0.1:{}", self.port);
        for t in topics {
            let mut attempt = 0;
            loop {
                attempt += 1;
                let out = Command::new(&self.bin)
                    .args(["topic", "create", &t.name, "--broker", &url])
                    .args(["--partitions", &t.partitions.to_string()])
                    .output()
                    .unwrap_or_else(|e| panic!("running {}: {e}", self.bin.display()));
                let said = format!(
                    "{}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                );
                if out.status.success() || said.contains("already exists") {
                    break;
                }
                assert!(
                    attempt < 20,
                    "creating topic {}: {said}; broker log: {}",
                    t.name,
                    self.log.display()
                );
                std::thread::sleep(Duration::from_millis(250));
            }
        }
    }
}

impl Drop for TestBroker {
    fn drop(&mut self) {
        self.stop();
        if let Some(dir) = &self.data_dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// A port below the ephemeral range that nothing listens on now. Tests run in parallel
/// processes, so the start is spread by process id and time.
fn free_port() -> u16 {
    const LOW: u32 = 20_000;
    const SPAN: u32 = 12_000;
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let mut seed = std::process::id().wrapping_mul(2_654_435_761) ^ nanos;
    for _ in 0..1000 {
        seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12_345);
        // Below LOW + SPAN = 32,000, so it fits a u16.
        let port = (LOW + (seed >> 8) % SPAN) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port between {LOW} and {}", LOW + SPAN);
}
