//! The `iiot` binary as a user meets it: exit codes, one-line errors, `--duration`, stdout output.

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use support::http::http_get;
use support::role::{iiot_command, work_dir};

fn iiot() -> Command {
    // A clean environment for configuration: no config file, no .env, no stray keys.
    let mut cmd = iiot_command("cli");
    cmd.env_remove("KAFKA_BROKERS")
        .env_remove("IIOT_CONFIG")
        .env_remove("DEVICE_COUNT")
        // Tests run in parallel: any free ports.
        .env("HTTP_PORT", "0")
        .env("WEBSOCKET_PORT", "0")
        .env("RUST_LOG", "info");
    cmd
}

fn stderr_lines(out: &std::process::Output) -> Vec<String> {
    String::from_utf8_lossy(&out.stderr)
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn bad_environment_value_is_one_line_and_exit_2() {
    let out = iiot()
        .args(["run", "--duration", "1s"])
        .env("DEVICE_COUNT", "-5")
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2));
    let lines = stderr_lines(&out);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].contains("DEVICE_COUNT=-5"), "{}", lines[0]);
    assert!(lines[0].contains("environment"), "{}", lines[0]);
}

#[test]
fn data_dir_flag_names_where_history_goes_and_a_file_there_is_exit_2() {
    let file = work_dir("cli").join(format!("not-a-dir-{}", std::process::id()));
    std::fs::write(&file, b"x").expect("file");
    let expected = format!("DATA_DIR={}: not a directory", file.display());
    let out = iiot()
        .args(["run", "--data-dir"])
        .arg(&file)
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2));
    let lines = stderr_lines(&out);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].contains(&expected), "{lines:?}");
    // serve (Kafka) takes the flag too; its client may log about the absent broker.
    let out = iiot()
        .args(["serve", "--data-dir"])
        .arg(&file)
        .env("KAFKA_BROKERS", "127.0.0.1:1")
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains(&expected));
}

#[test]
fn bad_flags_are_exit_2() {
    let out = iiot()
        .args(["run", "--devices", "-5"])
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2));
    let lines = stderr_lines(&out);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        lines[0].contains("DEVICE_COUNT=-5") && lines[0].contains("command line"),
        "{lines:?}"
    );

    let out = iiot()
        .args(["run", "--duration", "soon"])
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2));
    let out = iiot()
        .args(["simulate", "--interval", "5"])
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("SEND_INTERVAL=5"));
}

#[test]
fn kafka_roles_refuse_bad_kafka_settings_with_one_line() {
    let cases: [(&[&str], (&str, &str), &str); 3] = [
        (
            &["process"],
            ("KAFKA_COMPRESSION", "brotli"),
            "KAFKA_COMPRESSION=brotli",
        ),
        (
            &["serve"],
            (
                "KAFKA_PROPERTIES",
                "enable.ssl.certificate.verification=false",
            ),
            "KAFKA_ALLOW_INSECURE_TLS",
        ),
        (
            &["simulate", "--output", "kafka"],
            ("KAFKA_SASL_PASSWORD_FILE", "/nonexistent/secret"),
            "KAFKA_SASL_PASSWORD_FILE",
        ),
    ];
    for (args, (key, value), expected) in cases {
        let out = iiot().args(args).env(key, value).output().expect("runs");
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let lines = stderr_lines(&out);
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert!(lines[0].contains(expected), "{lines:?}");
    }
}

#[test]
fn simulate_to_stdout_writes_valid_json_lines_and_stops_by_itself() {
    let out = iiot()
        .args([
            "simulate",
            "--devices",
            "5",
            "--interval",
            "100ms",
            "--duration",
            "1s",
            "--seed",
            "3",
        ])
        .output()
        .expect("runs");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).expect("utf8");
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(
        lines.len() >= 20,
        "5 devices × ~10 rounds, got {}",
        lines.len()
    );
    let now = iiot::now_ms();
    for line in &lines {
        iiot_model::decode(line.as_bytes(), now, &iiot_model::Limits::default())
            .expect("valid reading");
    }
    assert!(lines.iter().any(|l| l.contains("\"device_005\"")));
}

#[test]
fn same_seed_same_values() {
    let values = |seed: &str| -> Vec<(String, u64, f64)> {
        let out = iiot()
            .args([
                "simulate",
                "--devices",
                "3",
                "--interval",
                "50ms",
                "--duration",
                "400ms",
                "--seed",
                seed,
            ])
            .output()
            .expect("runs");
        String::from_utf8(out.stdout)
            .expect("utf8")
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).expect("json");
                (
                    v["device_id"].as_str().expect("id").to_string(),
                    v["seq"].as_u64().expect("seq"),
                    v["sensors"]["temperature"]["value"].as_f64().expect("t"),
                )
            })
            .collect()
    };
    let (mut a, mut b) = (values("9"), values("9"));
    a.sort_by(|x, y| (&x.0, x.1).cmp(&(&y.0, y.1)));
    b.sort_by(|x, y| (&x.0, x.1).cmp(&(&y.0, y.1)));
    let n = a.len().min(b.len());
    assert!(n >= 6);
    // Same (device, seq) → same temperature; runs may differ in length by a round.
    let common: Vec<_> = a
        .iter()
        .filter(|x| b.iter().any(|y| y.0 == x.0 && y.1 == x.1))
        .collect();
    for x in common {
        let y = b
            .iter()
            .find(|y| y.0 == x.0 && y.1 == x.1)
            .expect("present");
        assert_eq!(x.2, y.2, "{} seq {}", x.0, x.1);
    }
}

#[test]
fn simulate_into_a_closed_pipe_ends_cleanly() {
    let mut child = iiot()
        .args(["simulate", "--devices", "100", "--interval", "10ms"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawns");
    let stdout = child.stdout.take().expect("piped");
    let first: Vec<String> = BufReader::new(stdout)
        .lines()
        .take(3)
        .map(|l| l.expect("line"))
        .collect();
    assert_eq!(first.len(), 3);
    // Reader gone (like `| head -3`): the simulator must notice and exit by itself, not panic.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            assert!(status.code() == Some(0), "exit {status:?}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "did not stop after its pipe closed"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn run_stops_by_itself_after_duration_with_a_status_line() {
    let out = iiot()
        .args([
            "run",
            "--devices",
            "200",
            "--interval",
            "100ms",
            "--duration",
            "2500ms",
            "--fault-rate",
            "0",
        ])
        .env("STATUS_INTERVAL", "1s")
        .output()
        .expect("runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("status:"), "{stderr}");
    assert!(stderr.contains("stopped"), "{stderr}");
}

#[cfg(unix)]
#[test]
fn sigterm_drains_and_exits_0() {
    let child = iiot()
        .args(["run", "--devices", "100", "--interval", "100ms"])
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawns");
    std::thread::sleep(Duration::from_millis(1500));
    let pid = child.id().to_string();
    let killed = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    assert!(killed.success());
    let out = child.wait_with_output().expect("exits");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("draining"), "{stderr}");
}

#[test]
fn more_devices_than_the_processor_tracks_is_refused() {
    let out = iiot()
        .args(["run", "--devices", "500", "--duration", "1s"])
        .env("MAX_DEVICES", "100")
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2));
    let lines = stderr_lines(&out);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].contains("MAX_DEVICES=100"), "{lines:?}");
}

fn repo_file(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(name)
}

#[test]
fn the_example_config_and_env_files_are_accepted() {
    // iiot.example.toml through --config.
    let out = iiot()
        .args(["run", "--devices", "5", "--duration", "500ms", "--config"])
        .arg(repo_file("iiot.example.toml"))
        .output()
        .expect("runs");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // .env.example copied to .env in the working directory.
    let dir = work_dir("dotenv");
    std::fs::copy(repo_file(".env.example"), dir.join(".env")).expect("copy");
    let out = iiot()
        .current_dir(&dir)
        .args(["run", "--devices", "5", "--duration", "500ms"])
        .output()
        .expect("runs");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_bad_value_in_dotenv_names_its_origin() {
    let dir = work_dir("baddotenv");
    std::fs::write(dir.join(".env"), "SEND_INTERVAL=soon\n").expect("write");
    let out = iiot()
        .current_dir(&dir)
        .args(["run", "--duration", "1s"])
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2));
    let lines = stderr_lines(&out);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        lines[0].contains("SEND_INTERVAL=soon") && lines[0].contains(".env"),
        "{lines:?}"
    );
}

#[test]
fn run_serves_the_http_api_while_it_runs() {
    let mut child = iiot()
        .args([
            "run",
            "--devices",
            "20",
            "--interval",
            "100ms",
            "--duration",
            "20s",
        ])
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawns");
    let stderr = child.stderr.take().expect("piped");
    let mut lines = BufReader::new(stderr).lines();
    let port = loop {
        let line = lines
            .next()
            .expect("the server announces its address")
            .expect("line");
        if let Some(rest) = line.split("serving the HTTP API on http://").nth(1) {
            let port: u16 = rest
                .split('/')
                .next()
                .expect("addr")
                .rsplit(':')
                .next()
                .expect("port")
                .parse()
                .expect("a port number");
            break port;
        }
    };
    // Keep reading stderr so the child never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    assert_eq!(http_get(port, "/health").expect("answers").0, 200);
    assert_eq!(http_get(port, "/ready").expect("answers").0, 200);
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let (status, body) = http_get(port, "/api/devices?per_page=100").expect("answers");
        assert_eq!(status, 200, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).expect("json");
        if v["total"] == 20 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "devices never all appeared: {body}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let (status, body) = http_get(
        port,
        "/api/devices/device_007/history?sensor=temperature&range=1m&points=10",
    )
    .expect("answers");
    assert_eq!(status, 200, "{body}");
    let (status, body) = http_get(port, "/metrics").expect("answers");
    assert_eq!(status, 200);
    assert!(body.contains("iot_messages_total"), "{body}");
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(killed.success());
    assert_eq!(child.wait().expect("exits").code(), Some(0));
}
