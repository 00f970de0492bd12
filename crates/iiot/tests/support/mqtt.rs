//! A real MQTT broker for the tests: Debian's Mosquitto (`scripts/mqtt-up.sh --install`), one
//! per test, on a free port, with a generated config in its own temp dir; killed on drop.
//! Outside clients publish with `mosquitto_pub`, as a plant's devices would.

use std::io::Write as _;
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::role::{Role, free_port};

/// How long the broker may take to listen, and a publisher to finish.
const PATIENCE: Duration = Duration::from_secs(20);

/// A running Mosquitto.
pub struct Broker {
    pub port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

fn mosquitto() -> PathBuf {
    ["/usr/sbin/mosquitto", "/usr/bin/mosquitto"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .expect("mosquitto is not installed: run scripts/mqtt-up.sh --install")
}

impl Broker {
    /// A broker with persistence on (its store survives [`Broker::restart`]).
    pub fn start() -> Broker {
        let dir = tempfile::tempdir().expect("temp dir");
        let port = free_port();
        let config = format!(
            "listener {port} 127.0.0.1\nallow_anonymous true\npersistence true\n\
             persistence_location {}/\nmax_queued_messages 100000\n\
             max_inflight_messages 100\nuser root\n",
            dir.path().display()
        );
        std::fs::write(dir.path().join("mosquitto.conf"), config).expect("config");
        let mut broker = Broker {
            port,
            dir,
            child: None,
        };
        broker.launch();
        broker
    }

    /// `mqtt://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }

    fn launch(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("mosquitto.log"))
            .expect("log");
        let child = Command::new(mosquitto())
            .arg("-c")
            .arg(self.dir.path().join("mosquitto.conf"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start mosquitto");
        self.child = Some(child);
        let deadline = Instant::now() + PATIENCE;
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "mosquitto did not listen on {}:\n{}",
                self.port,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops the broker gracefully (SIGTERM: it saves its store) and waits for it to exit.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let _ = child.wait();
        }
    }

    /// Starts the stopped broker again on the same port with the same store.
    pub fn restart(&mut self) {
        self.stop();
        self.launch();
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("mosquitto.log")).unwrap_or_default()
    }

    /// Publishes each of `messages` (topic, payload) at QoS 1 and waits until the broker has
    /// acknowledged them all (`mosquitto_pub` exits only then).
    pub fn publish_all(&self, messages: &[(String, Vec<u8>)]) {
        // One connection per topic, payloads as lines (readings are single-line JSON).
        let mut by_topic: Vec<(&str, Vec<&[u8]>)> = Vec::new();
        for (topic, payload) in messages {
            match by_topic.iter_mut().find(|(t, _)| t == topic) {
                Some((_, list)) => list.push(payload),
                None => by_topic.push((topic, vec![payload])),
            }
        }
        for (topic, payloads) in by_topic {
            let mut child = Command::new("mosquitto_pub")
                .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
                .args(["-q", "1", "-t", topic, "-l"])
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .expect("mosquitto_pub (scripts/mqtt-up.sh --install)");
            let mut stdin = child.stdin.take().expect("stdin");
            for p in payloads {
                assert!(!p.contains(&b'\n'), "one payload per line");
                stdin.write_all(p).expect("write");
                stdin.write_all(b"\n").expect("write");
            }
            drop(stdin);
            let out = child.wait_with_output().expect("mosquitto_pub ran");
            assert!(
                out.status.success(),
                "mosquitto_pub failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }

    /// Publishes one message at QoS 1.
    pub fn publish(&self, topic: &str, payload: &[u8]) {
        self.publish_all(&[(topic.to_string(), payload.to_vec())]);
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The telemetry topic of `device`.
pub fn topic(device: &str) -> String {
    format!("iiot/devices/{device}/telemetry")
}

/// `iiot run` monitoring only the devices of `broker` (no simulator), subscribed.
pub fn run_against(broker: &Broker, client_id: &str) -> Role {
    let url = broker.url();
    let mut role = Role::embedded(
        &["run"],
        &[
            ("MQTT_URL", &url),
            ("MQTT_CLIENT_ID", client_id),
            ("SIMULATOR", "off"),
        ],
    );
    role.wait_for("subscribed to the MQTT broker (/ready 200)", Role::ready);
    role
}

/// Readings the processors took as valid and in order.
pub fn processed(role: &Role) -> f64 {
    role.metric("iot_messages_total", "status=\"success\"")
}
