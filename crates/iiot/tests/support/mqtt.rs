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
    /// What `mosquitto_pub` needs besides host and port (TLS files, credentials).
    client_args: Vec<String>,
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
        Broker::start_with(|_| "allow_anonymous true\n".to_string())
    }

    /// A broker whose only listener is TLS with `pki`'s server certificate, asking for a client
    /// certificate signed by `pki`'s CA and the user `iiot` with password [`PASSWORD`].
    pub fn start_tls(pki: &Pki) -> Broker {
        let mut broker = Broker::start_with(|dir| {
            let passwd = dir.join("passwd");
            let status = Command::new("mosquitto_passwd")
                .args(["-c", "-b"])
                .arg(&passwd)
                .args(["iiot", PASSWORD])
                .status()
                .expect("mosquitto_passwd (scripts/mqtt-up.sh --install)");
            assert!(status.success());
            format!(
                "allow_anonymous false\npassword_file {}\ncafile {}\ncertfile {}\n\
                 keyfile {}\nrequire_certificate true\n",
                passwd.display(),
                pki.path("ca.pem"),
                pki.path("server.pem"),
                pki.path("server.key"),
            )
        });
        broker.client_args = [
            "--cafile",
            &pki.path("ca.pem"),
            "--cert",
            &pki.path("client.pem"),
            "--key",
            &pki.path("client.key"),
            "-u",
            "iiot",
            "-P",
            PASSWORD,
        ]
        .map(String::from)
        .to_vec();
        broker
    }

    /// A broker on a free port with persistence on and the `listener`-scoped lines `extra`
    /// returns (given the broker's directory).
    fn start_with(extra: impl FnOnce(&std::path::Path) -> String) -> Broker {
        let dir = tempfile::tempdir().expect("temp dir");
        let port = free_port();
        let config = format!(
            "per_listener_settings false\nlistener {port} 127.0.0.1\n{}persistence true\n\
             persistence_location {}/\nmax_queued_messages 100000\n\
             max_inflight_messages 100\nuser root\n",
            extra(dir.path()),
            dir.path().display()
        );
        std::fs::write(dir.path().join("mosquitto.conf"), config).expect("config");
        let mut broker = Broker {
            port,
            dir,
            child: None,
            client_args: Vec::new(),
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
                .args(&self.client_args)
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

/// The password of the TLS broker's user `iiot`.
pub const PASSWORD: &str = "s3cret-mqtt-pw";

/// Certificates made with the openssl CLI for one test: a CA (`ca.pem`), a server
/// certificate for 127.0.0.1 and localhost (`server.pem`, `server.key`) and a client
/// certificate (`client.pem`, `client.key`) signed by it, and an unrelated CA (`other-ca.pem`).
pub struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    pub fn generate() -> Pki {
        let dir = tempfile::tempdir().expect("temp dir");
        let pki = Pki { dir };
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        for ca in ["ca", "other-ca"] {
            pki.openssl(
                &[
                    &[
                        "req",
                        "-x509",
                        "-days",
                        "2",
                        "-subj",
                        &format!("/CN=iiot test {ca}"),
                    ][..],
                    &ec,
                    &[
                        "-keyout",
                        &format!("{ca}.key"),
                        "-out",
                        &format!("{ca}.pem"),
                    ],
                    &["-addext", "basicConstraints=critical,CA:TRUE"],
                    &["-addext", "keyUsage=critical,keyCertSign,cRLSign"],
                ]
                .concat(),
            );
        }
        std::fs::write(
            pki.dir.path().join("server.ext"),
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n",
        )
        .expect("ext");
        std::fs::write(
            pki.dir.path().join("client.ext"),
            "extendedKeyUsage=clientAuth\n",
        )
        .expect("ext");
        for (name, cn) in [("server", "127.0.0.1"), ("client", "iiot-ingest")] {
            pki.openssl(
                &[
                    &["req", "-subj", &format!("/CN={cn}")][..],
                    &ec,
                    &[
                        "-keyout",
                        &format!("{name}.key"),
                        "-out",
                        &format!("{name}.csr"),
                    ],
                ]
                .concat(),
            );
            pki.openssl(&[
                "x509",
                "-req",
                "-days",
                "2",
                "-in",
                &format!("{name}.csr"),
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                &format!("{name}.pem"),
                "-extfile",
                &format!("{name}.ext"),
            ]);
        }
        pki
    }

    /// The path of the file `name`.
    pub fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    fn openssl(&self, args: &[&str]) {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(self.dir.path())
            .output()
            .expect("openssl (scripts/mqtt-up.sh --install)");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
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
