//! HTTPS and WSS end to end, with certificates the test makes (openssl): the API and the
//! stream on both ports answer over TLS only, session cookies are `Secure`, and a replaced
//! certificate is served to new connections without a restart.
#![cfg(feature = "tls")]
#![allow(clippy::unwrap_used)]

mod support;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use support::role::{Role, free_port, fresh_data_dir, iiot_command};

/// A certificate for localhost / 127.0.0.1 signed by a CA of its own, in `dir`:
/// (ca.pem, cert.pem, key.pem) paths.
fn make_cert(dir: &Path, name: &str) -> (PathBuf, PathBuf, PathBuf) {
    std::fs::create_dir_all(dir).unwrap();
    let file = |ext: &str| dir.join(format!("{name}.{ext}"));
    let openssl = |args: &[&std::ffi::OsStr]| {
        let out = std::process::Command::new("openssl")
            .args(args)
            .output()
            .expect("openssl (Debian's openssl package)");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let os = |s: &'static str| std::ffi::OsStr::new(s);
    let ec = [
        os("-newkey"),
        os("ec"),
        os("-pkeyopt"),
        os("ec_paramgen_curve:prime256v1"),
        os("-nodes"),
    ];
    let (ca, ca_key, csr) = (file("ca.crt"), file("ca.key"), file("csr"));
    let (cert, key, ext) = (file("crt"), file("key"), file("ext"));
    let mut args = vec![
        os("req"),
        os("-x509"),
        os("-days"),
        os("2"),
        os("-subj"),
        os("/CN=iiot test CA"),
    ];
    args.extend(ec);
    args.extend([
        os("-keyout"),
        ca_key.as_os_str(),
        os("-out"),
        ca.as_os_str(),
    ]);
    openssl(&args);
    let mut args = vec![os("req"), os("-subj"), os("/CN=localhost")];
    args.extend(ec);
    args.extend([os("-keyout"), key.as_os_str(), os("-out"), csr.as_os_str()]);
    openssl(&args);
    std::fs::write(
        &ext,
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
    )
    .unwrap();
    openssl(&[
        os("x509"),
        os("-req"),
        os("-days"),
        os("2"),
        os("-in"),
        csr.as_os_str(),
        os("-CA"),
        ca.as_os_str(),
        os("-CAkey"),
        ca_key.as_os_str(),
        os("-CAcreateserial"),
        os("-extfile"),
        ext.as_os_str(),
        os("-out"),
        cert.as_os_str(),
    ]);
    (ca, cert, key)
}

fn client(ca: &Path) -> reqwest::Client {
    let pem = std::fs::read(ca).unwrap();
    reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap())
        .tls_built_in_root_certs(false)
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

async fn wait_https(client: &reqwest::Client, url: &str) -> reqwest::Response {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let e = match client.get(url).send().await {
            Ok(r) => return r,
            Err(e) => e,
        };
        assert!(
            Instant::now() < deadline,
            "{url} never answered over TLS: {e:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Opens `wss://localhost:port/ws` trusting only `ca`; the first message.
async fn wss_welcome(ca: &Path, port: u16) -> serde_json::Value {
    let mut roots = rustls::RootCertStore::empty();
    use rustls::pki_types::pem::PemObject as _;
    for cert in rustls::pki_types::CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let tls = connector.connect(name, tcp).await.expect("TLS handshake");
    let url = format!("wss://localhost:{port}/ws");
    let (mut ws, _) = tokio_tungstenite::client_async(url, tls)
        .await
        .expect("upgrade");
    let msg = tokio::time::timeout(Duration::from_secs(10), ws.next())
        .await
        .expect("a message")
        .unwrap()
        .unwrap();
    serde_json::from_str(msg.to_text().unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn https_and_wss_on_both_ports_with_a_secure_cookie_and_certificate_reload() {
    let dir = fresh_data_dir("tls");
    let (ca, cert, key) = make_cert(&dir.join("tls"), "first");
    let mut add = iiot_command("tls")
        .args(["auth", "--data-dir"])
        .arg(&dir)
        .args(["add-user", "olga", "--role", "operator", "--password-stdin"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write as _;
    add.stdin
        .take()
        .unwrap()
        .write_all(b"a long password\n")
        .unwrap();
    assert!(add.wait().unwrap().success());
    let ws_port = free_port();
    let env = [
        ("DATA_DIR", dir.to_string_lossy().into_owned()),
        ("TLS_CERT_FILE", cert.to_string_lossy().into_owned()),
        ("TLS_KEY_FILE", key.to_string_lossy().into_owned()),
        ("WEBSOCKET_PORT", ws_port.to_string()),
        ("LISTEN_ADDR", "127.0.0.1".to_string()),
    ];
    let env_refs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let server = Role::embedded(&["run", "--devices", "5", "--interval", "200ms"], &env_refs);
    let port = server.http_port;
    let https = client(&ca);
    let health = wait_https(&https, &format!("https://localhost:{port}/health")).await;
    assert_eq!(health.status(), 200);
    // Plain HTTP on the TLS port gets no HTTP answer.
    assert!(support::http::http_get(port, "/health").is_none_or(|(s, _)| s != 200));
    // Sign in over HTTPS: the session cookie is Secure.
    let login = https
        .post(format!("https://localhost:{port}/api/login"))
        .header("content-type", "application/json")
        .body(r#"{"username":"olga","password":"a long password"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), 200);
    let cookie = login.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(cookie.contains("; Secure"), "{cookie}");
    let devices = https
        .get(format!("https://localhost:{port}/api/devices"))
        .header("cookie", cookie.split(';').next().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(devices.status(), 200);
    // The stream needs a session or token too; over WSS on either port it is refused without.
    for p in [port, ws_port] {
        let welcome = tokio::time::timeout(Duration::from_secs(10), async {
            // No credentials: 401 after the handshake, so the TLS part worked.
            let r = https
                .get(format!("https://localhost:{p}/ws"))
                .header("connection", "upgrade")
                .header("upgrade", "websocket")
                .header("sec-websocket-version", "13")
                .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
                .send()
                .await
                .unwrap();
            r.status().as_u16()
        })
        .await
        .unwrap();
        assert_eq!(welcome, 401, "port {p}");
    }
    drop(server);

    // Anonymous (no users) over WSS, and a replaced certificate served without a restart.
    let open_dir = fresh_data_dir("tls-open");
    let (first, cert, key) = make_cert(&open_dir.join("tls"), "live");
    let ws_port = free_port();
    let env = [
        ("DATA_DIR", open_dir.to_string_lossy().into_owned()),
        ("TLS_CERT_FILE", cert.to_string_lossy().into_owned()),
        ("TLS_KEY_FILE", key.to_string_lossy().into_owned()),
        ("WEBSOCKET_PORT", ws_port.to_string()),
    ];
    let env_refs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let server = Role::embedded(&["run", "--devices", "5", "--interval", "200ms"], &env_refs);
    let port = server.http_port;
    wait_https(&client(&first), &format!("https://localhost:{port}/health")).await;
    for p in [port, ws_port] {
        let welcome = wss_welcome(&first, p).await;
        assert_eq!(welcome["type"], "welcome", "{welcome}");
    }
    let (next_ca, next_cert, next_key) = make_cert(&open_dir.join("next"), "next");
    // Replace key and certificate the way a renewal does: each by a rename.
    std::fs::copy(&next_key, open_dir.join("tls/live.key.tmp")).unwrap();
    std::fs::rename(open_dir.join("tls/live.key.tmp"), &key).unwrap();
    std::fs::copy(&next_cert, open_dir.join("tls/live.crt.tmp")).unwrap();
    std::fs::rename(open_dir.join("tls/live.crt.tmp"), &cert).unwrap();
    let trusting_next = client(&next_ca);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let ok = trusting_next
            .get(format!("https://localhost:{port}/health"))
            .send()
            .await
            .is_ok();
        if ok {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the renewed certificate was never served"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        client(&first)
            .get(format!("https://localhost:{port}/health"))
            .send()
            .await
            .is_err(),
        "the old certificate is no longer served"
    );
    assert!(server.log_text().contains("read again"));
}

#[test]
fn a_certificate_that_does_not_load_is_exit_2_naming_the_file() {
    let dir = fresh_data_dir("tls-bad");
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("bad.pem");
    std::fs::write(&bad, "not a certificate").unwrap();
    let out = iiot_command("tls-bad")
        .args(["run", "--duration", "1s"])
        .env("DATA_DIR", &dir)
        .env("TLS_CERT_FILE", &bad)
        .env("TLS_KEY_FILE", &bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("TLS_CERT_FILE=") && stderr.contains("bad.pem"),
        "{stderr}"
    );
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    let only_cert = iiot_command("tls-bad")
        .args(["run", "--duration", "1s"])
        .env("DATA_DIR", &dir)
        .env("TLS_CERT_FILE", &bad)
        .output()
        .unwrap();
    assert_eq!(only_cert.status.code(), Some(2));
}
