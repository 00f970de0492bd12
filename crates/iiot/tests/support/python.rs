//! Outside MQTT clients from PyPI, as a plant would run them: a Sparkplug B edge node
//! (`pysparkplug`) and a JSON gateway (`paho-mqtt`). The scripts live in `support/python/`;
//! `scripts/test.sh` installs both packages.

use std::io::{BufRead as _, BufReader, Write as _};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// How long a script may take to answer one command.
const PATIENCE: Duration = Duration::from_secs(30);

fn script(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/support/python")
        .join(name)
}

/// A pysparkplug edge node (`sparkplug_edge.py`), driven a command at a time; killed on drop.
pub struct EdgeNode {
    child: Child,
    stdin: ChildStdin,
    lines: mpsc::Receiver<String>,
    /// NCMD lines received so far (`ncmd NAME=VALUE`).
    pub commands: Vec<String>,
}

impl EdgeNode {
    /// Edge node `node` of `group` with `devices`, for the broker on `port` (not connected).
    pub fn start(port: u16, group: &str, node: &str, devices: &[&str]) -> EdgeNode {
        let mut child = Command::new("python3")
            .arg(script("sparkplug_edge.py"))
            .args(["127.0.0.1", &port.to_string(), group, node])
            .args(devices)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("python3 (pysparkplug: see scripts/test.sh)");
        let stdin = child.stdin.take().expect("stdin");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        EdgeNode {
            child,
            stdin,
            lines,
            commands: Vec::new(),
        }
    }

    /// Sends `command` and returns its answer (NCMD lines seen meanwhile are kept).
    pub fn send(&mut self, command: &str) -> String {
        writeln!(self.stdin, "{command}").expect("write to the edge node");
        self.stdin.flush().expect("flush");
        loop {
            let line = self
                .lines
                .recv_timeout(PATIENCE)
                .unwrap_or_else(|_| panic!("the edge node did not answer {command:?}"));
            if line.starts_with("ncmd ") {
                self.commands.push(line);
            } else {
                return line;
            }
        }
    }

    /// Waits for an NCMD line containing `text`.
    pub fn wait_for_command(&mut self, text: &str) -> String {
        if let Some(c) = self.commands.iter().find(|c| c.contains(text)) {
            return c.clone();
        }
        loop {
            let line = self
                .lines
                .recv_timeout(PATIENCE)
                .unwrap_or_else(|_| panic!("no NCMD with {text:?}; saw {:?}", self.commands));
            if line.starts_with("ncmd ") {
                self.commands.push(line.clone());
                if line.contains(text) {
                    return line;
                }
            }
        }
    }
}

impl Drop for EdgeNode {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Publishes `messages` (topic, JSON payload) at QoS 1 with paho-mqtt; returns once the
/// broker acknowledged them all.
pub fn paho_publish(port: u16, messages: &[(String, Vec<u8>)]) {
    let mut child = Command::new("python3")
        .arg(script("paho_publish.py"))
        .args(["127.0.0.1", &port.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 (paho-mqtt: see scripts/test.sh)");
    let mut stdin = child.stdin.take().expect("stdin");
    for (topic, payload) in messages {
        assert!(!payload.contains(&b'\n'), "one payload per line");
        stdin.write_all(topic.as_bytes()).expect("write");
        stdin.write_all(b" ").expect("write");
        stdin.write_all(payload).expect("write");
        stdin.write_all(b"\n").expect("write");
    }
    drop(stdin);
    let out = child.wait_with_output().expect("paho_publish.py ran");
    assert!(
        out.status.success(),
        "paho_publish.py failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
