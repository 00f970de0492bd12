//! Who may see and act, against the real binary: every route of the table and the WebSocket
//! on both ports answer each role as the route's access says (401 without credentials, 403
//! below the role), the dashboard's login sets a strict session cookie whose state-changing
//! requests need the CSRF token, an acknowledgement records who made it, the auth file
//! applies without a restart, and with nobody to sign in the server stays on loopback.

#![allow(clippy::unwrap_used)]

mod support;

use std::io::Write as _;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use iiot::auth::{Access, Role as AuthRole};
use serde_json::Value;
use support::http::send;
use support::role::{Role, fresh_data_dir, iiot_command};

/// Runs `iiot auth <args>` on `data_dir`, with `stdin`: (exit code, stdout, stderr).
fn auth_cli(data_dir: &Path, args: &[&str], stdin: &str) -> (i32, String, String) {
    let mut child = iiot_command("auth")
        .arg("auth")
        .arg("--data-dir")
        .arg(data_dir)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("iiot auth");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("password");
    let out = child.wait_with_output().expect("iiot auth ends");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn add_token(data_dir: &Path, name: &str, role: &str) -> String {
    let (code, stdout, stderr) = auth_cli(data_dir, &["add-token", name, "--role", role], "");
    assert_eq!(code, 0, "{stderr}");
    let token = stdout.trim().to_string();
    assert!(
        token.starts_with("iiot_"),
        "only the token on stdout: {stdout:?}"
    );
    token
}

fn bearer(token: &str) -> Vec<String> {
    vec![format!("Authorization: Bearer {token}")]
}

/// A data directory with one token per role and the user `olga` (operator).
fn provisioned(tag: &str) -> (std::path::PathBuf, [String; 3]) {
    let dir = fresh_data_dir(tag);
    let tokens = [
        add_token(&dir, "viewer-token", "viewer"),
        add_token(&dir, "operator-token", "operator"),
        add_token(&dir, "admin-token", "admin"),
    ];
    let (code, _, stderr) = auth_cli(
        &dir,
        &["add-user", "olga", "--role", "operator", "--password-stdin"],
        "olga's long password\n",
    );
    assert_eq!(code, 0, "{stderr}");
    (dir, tokens)
}

fn start(dir: &Path, env: &[(&str, &str)]) -> Role {
    let data_dir = dir.to_string_lossy().into_owned();
    let mut all = vec![
        ("DATA_DIR", data_dir.as_str()),
        ("ALERT_TEMPERATURE_HIGH", "10"),
        ("ALERT_TEMPERATURE_LOW", "-30"),
    ];
    all.extend_from_slice(env);
    let mut role = Role::embedded(&["run", "--devices", "20", "--interval", "200ms"], &all);
    role.wait_for("the API", |r| r.get("/health").is_some());
    role
}

/// A concrete path for a route's template.
fn concrete(path: &str) -> String {
    path.replace("{id}", "device_001")
        .replace("{alert_id}", "alert_unknown")
}

#[test]
fn every_route_answers_each_role_as_its_access_says() {
    let (dir, tokens) = provisioned("auth-routes");
    let server = start(&dir, &[]);
    let port = server.http_port;
    let roles = [AuthRole::Viewer, AuthRole::Operator, AuthRole::Admin];
    for route in iiot::http::routes::all_routes() {
        let method = format!("{:?}", route.verb).to_ascii_uppercase();
        let path = concrete(route.path);
        let access = route.endpoint.access();
        let anonymous = send(port, &method, &path, &[], b"{}").expect("answers");
        match access {
            Access::Open => assert_ne!(anonymous.status, 401, "{method} {path}"),
            _ => {
                assert_eq!(anonymous.status, 401, "{method} {path}: {}", anonymous.body);
                assert!(
                    anonymous
                        .head
                        .to_ascii_lowercase()
                        .contains("www-authenticate: bearer")
                );
                let body: Value = serde_json::from_str(&anonymous.body).expect("JSON error");
                assert!(body["error"].is_string(), "{body}");
            }
        }
        for (held, token) in roles.iter().zip(&tokens) {
            let got = send(port, &method, &path, &bearer(token), b"{}").expect("answers");
            let allowed = match access {
                Access::Open | Access::SignedIn => true,
                Access::Role(needed) => *held >= needed,
            };
            if allowed {
                assert!(
                    got.status != 401 && got.status != 403,
                    "{held:?} on {method} {path}: {} {}",
                    got.status,
                    got.body
                );
            } else {
                assert_eq!(got.status, 403, "{held:?} on {method} {path}: {}", got.body);
            }
        }
    }
    // A wrong token is 401 even where the role would do.
    let wrong = send(port, "GET", "/api/devices", &bearer("iiot_0123"), b"").unwrap();
    assert_eq!(wrong.status, 401);
    // /health and /ready stay open.
    assert_eq!(send(port, "GET", "/health", &[], b"").unwrap().status, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_websocket_needs_a_viewer_on_both_ports() {
    let (dir, tokens) = provisioned("auth-ws");
    let data_dir = dir.to_string_lossy().into_owned();
    let ws_port = support::role::free_port();
    let port_text = ws_port.to_string();
    let server = tokio::task::spawn_blocking(move || {
        let dir = std::path::PathBuf::from(data_dir);
        start(&dir, &[("WEBSOCKET_PORT", port_text.as_str())])
    })
    .await
    .unwrap();
    for url in [
        format!("ws://127.0.0.1:{}/ws", server.http_port),
        format!("ws://127.0.0.1:{ws_port}/ws"),
    ] {
        assert_eq!(support::ws::refused(url.as_str()).await, 401, "{url}");
        let wrong = format!("{url}?token=iiot_00");
        assert_eq!(support::ws::refused(wrong.as_str()).await, 401, "{url}");
        let (_ws, welcome) = support::ws::connect(&format!("{url}?token={}", tokens[0])).await;
        assert_eq!(welcome["type"], "welcome");
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let mut request = url.as_str().into_client_request().unwrap();
        request.headers_mut().insert(
            "authorization",
            format!("Bearer {}", tokens[0]).parse().unwrap(),
        );
        let (ws, _) = tokio_tungstenite::connect_async(request)
            .await
            .expect("upgrade");
        drop(ws);
        // A page on another site cannot open it, even with a valid token in the URL.
        let mut foreign = format!("{url}?token={}", tokens[0])
            .into_client_request()
            .unwrap();
        foreign
            .headers_mut()
            .insert("origin", "https://evil.example".parse().unwrap());
        assert_eq!(support::ws::refused(foreign).await, 403, "{url}");
    }
    drop(server);
}

fn cookie_of(head: &str) -> String {
    let line = head
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("set-cookie:"))
        .expect("a Set-Cookie header");
    let value = line.split_once(':').unwrap().1.trim();
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/", "Max-Age="] {
        assert!(value.contains(attribute), "{value}");
    }
    value.split(';').next().unwrap().to_string()
}

#[test]
fn a_dashboard_session_acts_with_its_csrf_token_and_signs_its_acknowledgements() {
    let (dir, _) = provisioned("auth-session");
    let mut server = start(&dir, &[]);
    let port = server.http_port;
    let json = vec!["Content-Type: application/json".to_string()];
    let wrong = br#"{"username":"olga","password":"not it"}"#;
    assert_eq!(
        send(port, "POST", "/api/login", &json, wrong)
            .unwrap()
            .status,
        401
    );
    let unknown = br#"{"username":"nobody","password":"x"}"#;
    assert_eq!(
        send(port, "POST", "/api/login", &json, unknown)
            .unwrap()
            .status,
        401
    );
    assert_eq!(
        send(port, "POST", "/api/login", &json, b"[]")
            .unwrap()
            .status,
        400
    );
    let good = br#"{"username":"olga","password":"olga's long password"}"#;
    let login = send(port, "POST", "/api/login", &json, good).unwrap();
    assert_eq!(login.status, 200, "{}", login.body);
    let cookie = cookie_of(&login.head);
    let answer: Value = serde_json::from_str(&login.body).unwrap();
    assert_eq!(
        (answer["user"].as_str(), answer["role"].as_str()),
        (Some("olga"), Some("operator"))
    );
    let csrf = answer["csrf_token"].as_str().unwrap().to_string();
    let with_cookie = vec![format!("Cookie: {cookie}")];
    let nobody = send(port, "GET", "/api/session", &[], b"").unwrap();
    assert_eq!(nobody.status, 200);
    assert!(nobody.body.contains(r#""sign_in":true"#), "{}", nobody.body);
    let me = send(port, "GET", "/api/session", &with_cookie, b"").unwrap();
    let me: Value = serde_json::from_str(&me.body).unwrap();
    assert_eq!(me["csrf_token"].as_str(), Some(csrf.as_str()));
    // Reading needs only the cookie; /config needs admin.
    assert_eq!(
        send(port, "GET", "/api/devices", &with_cookie, b"")
            .unwrap()
            .status,
        200
    );
    assert_eq!(
        send(port, "GET", "/config", &with_cookie, b"")
            .unwrap()
            .status,
        403
    );

    let deadline = Instant::now() + Duration::from_secs(30);
    let alerts = loop {
        let list = send(
            port,
            "GET",
            "/api/alerts?status=active&limit=1",
            &with_cookie,
            b"",
        );
        let list: Value = serde_json::from_str(&list.expect("answers").body).unwrap();
        if list["items"].as_array().is_some_and(|a| !a.is_empty()) {
            break list;
        }
        assert!(Instant::now() < deadline, "no alert was raised");
        std::thread::sleep(Duration::from_millis(100));
    };
    let id = alerts["items"][0]["alert_id"].as_str().unwrap().to_string();
    let ack = format!("/api/alerts/{id}/ack");
    // Without the CSRF token, or from another site's page, the cookie alone does nothing.
    let no_csrf = send(port, "POST", &ack, &with_cookie, b"").unwrap();
    assert_eq!(no_csrf.status, 403, "{}", no_csrf.body);
    let mut foreign = with_cookie.clone();
    foreign.push(format!("X-CSRF-Token: {csrf}"));
    foreign.push("Origin: https://evil.example".into());
    assert_eq!(send(port, "POST", &ack, &foreign, b"").unwrap().status, 403);
    let mut signed = with_cookie.clone();
    signed.push(format!("X-CSRF-Token: {csrf}"));
    signed.push("Origin: http://localhost".into());
    let done = send(port, "POST", &ack, &signed, b"").unwrap();
    assert_eq!(done.status, 200, "{}", done.body);
    let acked: Value = serde_json::from_str(&done.body).unwrap();
    assert_eq!(acked["acknowledged_by"], "olga", "{acked}");
    server.wait_for_log("the acknowledgement's log line", "by=olga");

    // Logging out ends the session.
    let out = send(port, "POST", "/api/logout", &signed, b"").unwrap();
    assert_eq!(out.status, 200, "{}", out.body);
    assert!(out.head.contains("Max-Age=0"), "{}", out.head);
    assert_eq!(
        send(port, "GET", "/api/devices", &with_cookie, b"")
            .unwrap()
            .status,
        401
    );
}

#[test]
fn auth_file_changes_apply_without_a_restart() {
    let dir = fresh_data_dir("auth-reload");
    let first = add_token(&dir, "first", "viewer");
    let mut server = start(&dir, &[]);
    let port = server.http_port;
    assert_eq!(
        send(port, "GET", "/api/devices", &bearer(&first), b"")
            .unwrap()
            .status,
        200
    );
    let second = add_token(&dir, "second", "operator");
    let deadline = Instant::now() + Duration::from_secs(10);
    while send(port, "GET", "/api/devices", &bearer(&second), b"")
        .unwrap()
        .status
        != 200
    {
        assert!(
            Instant::now() < deadline,
            "the new token was never accepted"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let (code, _, stderr) = auth_cli(&dir, &["remove", "first"], "");
    assert_eq!(code, 0, "{stderr}");
    while send(port, "GET", "/api/devices", &bearer(&first), b"")
        .unwrap()
        .status
        != 401
    {
        assert!(
            Instant::now() < deadline,
            "the removed token was still accepted"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let (_, listed, _) = auth_cli(&dir, &["list"], "");
    assert_eq!(listed, "NAME\tKIND\tROLE\nsecond\ttoken\toperator\n");
    server.wait_for_log("the reload's log line", "read again");
}

#[test]
fn with_nobody_to_sign_in_it_stays_on_loopback_unless_told() {
    let dir = fresh_data_dir("auth-default");
    let mut server = start(&dir, &[]);
    server.wait_for_log("the loopback notice", "listening on 127.0.0.1 only");
    // Anonymous on loopback, as before: the README's command needs no set-up.
    assert_eq!(
        send(server.http_port, "GET", "/api/devices", &[], b"")
            .unwrap()
            .status,
        200
    );
    // …but not under a DNS name that points here from a web page.
    let rebound = vec!["Host: evil.example:8080".to_string()];
    assert_eq!(
        send(server.http_port, "GET", "/api/devices", &rebound, b"")
            .unwrap()
            .status,
        403
    );
    drop(server);

    let refused = iiot_command("auth-default")
        .args(["run", "--devices", "1", "--duration", "1s"])
        .env("DATA_DIR", fresh_data_dir("auth-default-any"))
        .env("LISTEN_ADDR", "0.0.0.0")
        .env("HTTP_PORT", "0")
        .env("WEBSOCKET_PORT", "0")
        .output()
        .expect("iiot run");
    assert_eq!(refused.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with("invalid configuration: LISTEN_ADDR=0.0.0.0"),
        "{stderr}"
    );
    assert!(stderr.contains("ALLOW_ANONYMOUS=true"), "{stderr}");

    let allowed = iiot_command("auth-default")
        .args(["run", "--devices", "1", "--duration", "1s"])
        .env("DATA_DIR", fresh_data_dir("auth-default-open"))
        .env("LISTEN_ADDR", "0.0.0.0")
        .env("ALLOW_ANONYMOUS", "true")
        .env("HTTP_PORT", "0")
        .env("WEBSOCKET_PORT", "0")
        .output()
        .expect("iiot run");
    assert_eq!(
        allowed.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&allowed.stderr)
    );
}

#[test]
fn secrets_stay_out_of_errors_and_the_token_is_printed_alone() {
    let secret = "hunter2 hunter2 with spaces";
    let out = iiot_command("auth-secret")
        .args(["run", "--duration", "1s"])
        .env("DATA_DIR", fresh_data_dir("auth-secret"))
        .env("AUTH_TOKEN", secret)
        .output()
        .expect("iiot run");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("AUTH_TOKEN=***"), "{stderr}");
    assert!(!stderr.contains("hunter2"), "{stderr}");
    // An AUTH_TOKEN from a file (a container secret) is a credential like any other.
    let dir = fresh_data_dir("auth-secret-file");
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("token");
    std::fs::write(&file, "a-long-enough-secret-token\n").unwrap();
    let file_text = file.to_string_lossy().into_owned();
    let server = start(
        &dir,
        &[
            ("AUTH_TOKEN_FILE", file_text.as_str()),
            ("AUTH_TOKEN_ROLE", "viewer"),
        ],
    );
    let port = server.http_port;
    let token = bearer("a-long-enough-secret-token");
    assert_eq!(
        send(port, "GET", "/api/devices", &token, b"")
            .unwrap()
            .status,
        200
    );
    assert_eq!(
        send(port, "GET", "/config", &token, b"").unwrap().status,
        403
    );
    assert_eq!(
        send(port, "GET", "/api/devices", &[], b"").unwrap().status,
        401
    );
    assert!(!server.log_text().contains("a-long-enough-secret-token"));
}

#[tokio::test(flavor = "multi_thread")]
async fn an_open_stream_ends_when_its_token_is_revoked() {
    use futures::StreamExt as _;
    use tokio_tungstenite::tungstenite::Message;
    let dir = fresh_data_dir("auth-ws-revoke");
    let token = add_token(&dir, "dashboard-wall", "viewer");
    let keep = add_token(&dir, "keeper", "viewer");
    let data_dir = dir.to_string_lossy().into_owned();
    let server = tokio::task::spawn_blocking(move || {
        let dir = std::path::PathBuf::from(data_dir);
        start(&dir, &[("WEBSOCKET_PING_INTERVAL", "1s")])
    })
    .await
    .unwrap();
    let url = format!("ws://127.0.0.1:{}/ws", server.http_port);
    let (mut revoked, _) = support::ws::connect(&format!("{url}?token={token}")).await;
    let (mut kept, _) = support::ws::connect(&format!("{url}?token={keep}")).await;
    let (code, _, stderr) = auth_cli(&dir, &["remove", "dashboard-wall"], "");
    assert_eq!(code, 0, "{stderr}");
    // The revoked one is closed with 1008 within a few ping intervals…
    let closed = tokio::time::timeout(Duration::from_secs(15), async {
        while let Some(msg) = revoked.next().await {
            if let Ok(Message::Close(frame)) = msg {
                return frame.map(|f| u16::from(f.code));
            }
        }
        None
    })
    .await
    .expect("the revoked stream is closed");
    assert_eq!(closed, Some(1008));
    // …the other one still streams.
    let watched = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(msg) = kept.next().await {
            match msg {
                Ok(Message::Close(frame)) => return Some(frame),
                Err(e) => panic!("the kept stream failed: {e}"),
                Ok(_) => {}
            }
        }
        None
    })
    .await;
    assert!(watched.is_err(), "the kept stream ended: {watched:?}");
    drop(server);
}
