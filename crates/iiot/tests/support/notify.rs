//! Real receivers for the notifier's channels, started by the tests: a webhook receiver (axum
//! on 127.0.0.1:0) that can answer 500 for a while, and an SMTP server (Python's `aiosmtpd`,
//! on a free port) that saves every message it receives as JSON. Plus a hand-moved clock and
//! the notifier built from a config file text.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use iiot::config::Config;
use iiot::sinks::notify::silences::Clock;
use iiot::sinks::notify::{Notifier, NotifyOptions, NotifyShared};
use iiot::sinks::{AlertChange, Sink, Verdicts};
use iiot_model::{Alert, AlertStatus, Operator, Severity, Threshold};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use super::config::{config_file, from_file};

/// One request the webhook receiver took.
#[derive(Debug, Clone)]
pub struct Received {
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Received {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("a JSON body")
    }
}

#[derive(Default)]
struct Inbox {
    received: Mutex<Vec<Received>>,
    /// Requests answered 500 before the receiver starts answering 200.
    fail_first: AtomicUsize,
    attempts: AtomicUsize,
}

/// An HTTP server recording every POST to any path.
pub struct WebhookReceiver {
    pub addr: SocketAddr,
    inbox: Arc<Inbox>,
    stop: CancellationToken,
}

impl WebhookReceiver {
    /// Listening on 127.0.0.1:0; the first `fail_first` requests are answered 500.
    pub async fn start(fail_first: usize) -> WebhookReceiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        WebhookReceiver::serve(listener, fail_first)
    }

    /// Listening on `addr` (a port the test kept free: the receiver was "down" until now).
    pub async fn start_on(addr: SocketAddr) -> WebhookReceiver {
        let listener = tokio::net::TcpListener::bind(addr).await.expect("rebind");
        WebhookReceiver::serve(listener, 0)
    }

    fn serve(listener: tokio::net::TcpListener, fail_first: usize) -> WebhookReceiver {
        let addr = listener.local_addr().expect("addr");
        let inbox = Arc::new(Inbox::default());
        inbox.fail_first.store(fail_first, Ordering::SeqCst);
        let app = Router::new()
            .route("/{*path}", post(take))
            .with_state(inbox.clone());
        let stop = CancellationToken::new();
        let done = stop.clone();
        tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(done.cancelled_owned())
                .await
                .expect("receiver");
        });
        WebhookReceiver { addr, inbox, stop }
    }

    /// `http://<addr>/hook`.
    pub fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    /// What was accepted (answered 200), in order.
    pub fn received(&self) -> Vec<Received> {
        self.inbox.received.lock().expect("inbox").clone()
    }

    /// From now on every request is answered 500 (the receiver breaks).
    pub fn break_down(&self) {
        self.inbox.fail_first.store(usize::MAX, Ordering::SeqCst);
    }

    /// From now on every request is answered 200 (the receiver is fixed).
    pub fn heal(&self) {
        self.inbox.fail_first.store(0, Ordering::SeqCst);
    }

    /// Requests seen, failed ones included.
    pub fn attempts(&self) -> usize {
        self.inbox.attempts.load(Ordering::SeqCst)
    }
}

impl Drop for WebhookReceiver {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn take(State(inbox): State<Arc<Inbox>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    inbox.attempts.fetch_add(1, Ordering::SeqCst);
    let failing = inbox
        .fail_first
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok();
    if failing {
        return StatusCode::INTERNAL_SERVER_ERROR;
    }
    inbox
        .received
        .lock()
        .expect("inbox")
        .push(Received { headers, body });
    StatusCode::OK
}

/// A port on 127.0.0.1 that was free a moment ago (the OS picks it: bind to port 0).
pub fn free_local_addr() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr")
}

/// `aiosmtpd`, started as a child process, saving each message into a directory.
pub struct SmtpServer {
    pub port: u16,
    dir: tempfile::TempDir,
    child: Child,
}

const SMTP_SINK: &str = r#"
import email, email.policy, json, os, sys, threading
from aiosmtpd.controller import Controller

class Save:
    def __init__(self, folder):
        self.folder, self.n = folder, 0
    async def handle_DATA(self, server, session, envelope):
        msg = email.message_from_bytes(envelope.content, policy=email.policy.default)
        self.n += 1
        path = os.path.join(self.folder, "%04d.json" % self.n)
        with open(path + ".tmp", "w") as f:
            json.dump({"mail_from": envelope.mail_from, "rcpt_tos": envelope.rcpt_tos,
                       "subject": str(msg["subject"]), "from": str(msg["from"]),
                       "body": msg.get_content()}, f)
        os.rename(path + ".tmp", path)
        return "250 OK"

controller = Controller(Save(sys.argv[2]), hostname="127.0.0.1", port=int(sys.argv[1]))
controller.start()
print("ready", flush=True)
threading.Event().wait()
"#;

impl SmtpServer {
    /// Starts `aiosmtpd` on a free port and waits until it accepts connections. Fails the test
    /// if Python or `aiosmtpd` is missing (`scripts/test.sh` installs it).
    pub fn start() -> SmtpServer {
        let dir = tempfile::tempdir().expect("dir");
        let script = dir.path().join("smtp_sink.py");
        std::fs::write(&script, SMTP_SINK).expect("script");
        let mailbox = dir.path().join("mail");
        std::fs::create_dir(&mailbox).expect("mailbox");
        let port = free_local_addr().port();
        let mut child = Command::new("python3")
            .arg(&script)
            .arg(port.to_string())
            .arg(&mailbox)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("python3 (with aiosmtpd: python3 -m pip install aiosmtpd)");
        let mut line = String::new();
        let stdout = child.stdout.take().expect("stdout");
        std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line).expect("read");
        assert_eq!(
            line.trim(),
            "ready",
            "aiosmtpd did not start (python3 -m pip install aiosmtpd)"
        );
        SmtpServer { port, dir, child }
    }

    /// The messages received so far, in order.
    pub fn messages(&self) -> Vec<Value> {
        let folder = self.dir.path().join("mail");
        let mut names: Vec<PathBuf> = std::fs::read_dir(&folder)
            .expect("mailbox")
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect();
        names.sort();
        names.iter().map(|p| read_json(p)).collect()
    }
}

fn read_json(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).expect("message")).expect("json")
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A clock the test moves by hand.
#[derive(Clone)]
pub struct ManualClock(pub Arc<AtomicI64>);

impl ManualClock {
    pub fn at(ms: i64) -> ManualClock {
        ManualClock(Arc::new(AtomicI64::new(ms)))
    }
    pub fn set(&self, ms: i64) {
        self.0.store(ms, Ordering::SeqCst);
    }
    pub fn clock(&self) -> Clock {
        let now = self.0.clone();
        Arc::new(move || now.load(Ordering::SeqCst))
    }
}

/// The config of `toml` (a config file's text).
pub fn config(toml: &str) -> Config {
    let (_dir, file) = config_file(toml);
    Config::load(&from_file(file)).expect("a valid config")
}

/// A notifier for `config` on `clock`, looking at it every 10 ms, without device metadata,
/// giving channels 2 s at stop.
pub fn notifier(config: &Config, clock: Clock) -> (Notifier, Arc<NotifyShared>) {
    let shared = NotifyShared::new(config, clock);
    let options = NotifyOptions {
        lookup: None,
        tick: Duration::from_millis(10),
        stop_grace: Duration::from_secs(2),
        outbox: None,
    };
    let n = Notifier::start(config, shared.clone(), options).expect("channels start");
    (n, shared)
}

/// Hands `alerts` to `sink` as one batch.
pub async fn tell(sink: &dyn Sink, alerts: &[Alert]) {
    let verdicts = Verdicts {
        alerts: alerts.iter().cloned().map(AlertChange::new).collect(),
        ..Verdicts::empty(iiot::now_ms())
    };
    sink.take(&verdicts, &CancellationToken::new())
        .await
        .expect("the notifier never refuses");
}

/// An active `high` `temperature_high` alert about `device`.
pub fn alert(device: &str) -> Alert {
    Alert {
        alert_id: format!("alert_{device}_temperature_high"),
        device_id: device.to_string(),
        alert_type: "temperature_high".into(),
        severity: Severity::High,
        message: format!("temperature above 80 °C on {device}"),
        timestamp: iiot::now_ms(),
        status: AlertStatus::Active,
        threshold: Threshold {
            parameter: "temperature".into(),
            operator: Operator::Above,
            value: 80.0,
        },
        current_value: 85.2,
        acknowledged_by: None,
    }
}

/// `alert` in `status`.
pub fn with_status(mut alert: Alert, status: AlertStatus) -> Alert {
    alert.status = status;
    alert
}
