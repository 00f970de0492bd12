//! The gate's decisions, request by request.

use std::net::{IpAddr, Ipv4Addr};

use axum::http::{HeaderMap, HeaderValue, Method, header};

use super::*;
use crate::auth::store::{TokenEntry, UserEntry, hash_password, new_token, sha256_hex};

fn config_in(dir: &Path) -> Config {
    let mut c = Config::default();
    c.history.data_dir = dir.to_path_buf();
    c.auth.session_ttl = Duration::from_secs(60);
    c
}

fn headers(pairs: &[(header::HeaderName, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.append(k.clone(), HeaderValue::from_str(v).expect("ok"));
    }
    h
}

const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
const ANY: IpAddr = IpAddr::V4(Ipv4Addr::UNSPECIFIED);

/// A gate with one token per role and a user `olga` (operator).
fn gate_with_accounts(dir: &Path) -> (Gate, [String; 3]) {
    let tokens = [new_token(), new_token(), new_token()];
    let file = AuthFile {
        users: vec![UserEntry {
            name: "olga".into(),
            role: Role::Operator,
            password: hash_password("password1"),
        }],
        tokens: [Role::Viewer, Role::Operator, Role::Admin]
            .iter()
            .zip(&tokens)
            .map(|(role, t)| TokenEntry {
                name: role.as_str().to_string(),
                role: *role,
                sha256: sha256_hex(t),
            })
            .collect(),
    };
    file.write(&dir.join("auth.toml")).expect("ok");
    (Gate::from_config(&config_in(dir), ANY).expect("ok"), tokens)
}

fn status(r: Result<Principal, Denied>) -> u16 {
    match r {
        Ok(_) => 200,
        Err(Denied::Unauthorized(_)) => 401,
        Err(Denied::Forbidden(_)) => 403,
    }
}

#[test]
fn nobody_to_sign_in_is_anonymous_on_loopback_only() {
    let dir = tempfile::tempdir().expect("ok");
    let config = config_in(dir.path());
    let gate = Gate::from_config(&config, LOOPBACK).expect("ok");
    let local = headers(&[(header::HOST, "127.0.0.1:8080")]);
    let p = gate
        .check(Access::Role(Role::Admin), &Method::POST, &local, None)
        .expect("ok");
    assert_eq!(p.via, Via::Anonymous);
    // A DNS name that resolves to 127.0.0.1 from a web page (rebinding) is refused.
    let rebound = headers(&[(header::HOST, "evil.example:8080")]);
    assert_eq!(
        status(gate.check(Access::Role(Role::Viewer), &Method::GET, &rebound, None)),
        403
    );
    let e = Gate::from_config(&config, ANY)
        .expect_err("refused")
        .to_string();
    assert!(
        e.starts_with("invalid configuration: LISTEN_ADDR=0.0.0.0"),
        "{e}"
    );
    assert!(e.contains("ALLOW_ANONYMOUS=true"), "{e}");
    let mut open = config.clone();
    open.auth.allow_anonymous = true;
    let gate = Gate::from_config(&open, ANY).expect("ok");
    assert_eq!(
        status(gate.check(Access::Role(Role::Admin), &Method::GET, &rebound, None)),
        200
    );
}

#[test]
fn each_role_reaches_what_it_may_and_no_more() {
    let dir = tempfile::tempdir().expect("ok");
    let (gate, tokens) = gate_with_accounts(dir.path());
    let needs = [Role::Viewer, Role::Operator, Role::Admin];
    for (held, token) in needs.iter().zip(&tokens) {
        let h = headers(&[(header::AUTHORIZATION, &format!("Bearer {token}"))]);
        for needed in needs {
            let got = status(gate.check(Access::Role(needed), &Method::POST, &h, None));
            assert_eq!(
                got,
                if *held >= needed { 200 } else { 403 },
                "{held:?} {needed:?}"
            );
        }
    }
    let none = HeaderMap::new();
    assert_eq!(
        status(gate.check(Access::Role(Role::Viewer), &Method::GET, &none, None)),
        401
    );
    assert_eq!(
        status(gate.check(Access::SignedIn, &Method::GET, &none, None)),
        401
    );
    assert_eq!(
        status(gate.check(Access::Open, &Method::GET, &none, None)),
        200
    );
    let wrong = headers(&[(header::AUTHORIZATION, "Bearer iiot_0000")]);
    assert_eq!(
        status(gate.check(Access::Role(Role::Viewer), &Method::GET, &wrong, None)),
        401
    );
    let basic = headers(&[(header::AUTHORIZATION, "Basic b2xnYTpwYXNzd29yZDE=")]);
    assert_eq!(
        status(gate.check(Access::Role(Role::Viewer), &Method::GET, &basic, None)),
        401
    );
    // `?token=` (the WebSocket upgrade's) works like the header.
    let p = gate
        .check(
            Access::Role(Role::Viewer),
            &Method::GET,
            &none,
            Some(&tokens[0]),
        )
        .expect("ok");
    assert_eq!(p.name.as_deref(), Some("viewer"));
}

#[test]
fn sessions_need_their_csrf_token_to_change_anything() {
    let dir = tempfile::tempdir().expect("ok");
    let (gate, _) = gate_with_accounts(dir.path());
    let hash = gate.accounts().user("olga").expect("olga").0.to_string();
    let (id, session) = gate.sessions.open("olga", &sha256_hex(&hash));
    let cookie = format!("{}={id}", session::COOKIE);
    let h = headers(&[(header::COOKIE, &cookie)]);
    let p = gate
        .check(Access::Role(Role::Viewer), &Method::GET, &h, None)
        .expect("ok");
    assert_eq!(p.name.as_deref(), Some("olga"));
    assert_eq!(
        status(gate.check(Access::Role(Role::Operator), &Method::POST, &h, None)),
        403
    );
    let with = headers(&[
        (header::COOKIE, &cookie),
        (HeaderName::from_static("x-csrf-token"), &session.csrf),
    ]);
    assert_eq!(
        status(gate.check(Access::Role(Role::Operator), &Method::POST, &with, None)),
        200
    );
    assert_eq!(
        status(gate.check(Access::Role(Role::Admin), &Method::POST, &with, None)),
        403
    );
    // The same name added again with another password: the old session is over.
    let path = dir.path().join("auth.toml");
    let mut file = AuthFile::read(&path).expect("ok");
    file.remove("olga");
    file.users.push(UserEntry {
        name: "olga".into(),
        role: Role::Operator,
        password: hash_password("a new password"),
    });
    file.write(&path).expect("ok");
    gate.refresh();
    assert_eq!(
        status(gate.check(Access::Role(Role::Viewer), &Method::GET, &h, None)),
        401
    );
    gate.sessions.close(&id);
    assert_eq!(
        status(gate.check(Access::Role(Role::Viewer), &Method::GET, &h, None)),
        401
    );
}

#[test]
fn pages_of_other_sites_cannot_change_state() {
    let dir = tempfile::tempdir().expect("ok");
    let (gate, tokens) = gate_with_accounts(dir.path());
    let bearer = format!("Bearer {}", tokens[2]);
    let foreign = headers(&[
        (header::AUTHORIZATION, &bearer),
        (header::HOST, "plant:8080"),
        (header::ORIGIN, "https://evil.example"),
    ]);
    assert_eq!(
        status(gate.check(Access::Role(Role::Viewer), &Method::POST, &foreign, None)),
        403
    );
    assert_eq!(
        status(gate.check(Access::Role(Role::Viewer), &Method::GET, &foreign, None)),
        200
    );
    let same = headers(&[
        (header::AUTHORIZATION, &bearer),
        (header::HOST, "plant:8080"),
        (header::ORIGIN, "http://plant:8080"),
    ]);
    assert_eq!(
        status(gate.check(Access::Role(Role::Viewer), &Method::POST, &same, None)),
        200
    );
    // Anonymous mode on loopback too: a page elsewhere cannot acknowledge through the browser.
    let empty = tempfile::tempdir().expect("ok");
    let anon = Gate::from_config(&config_in(empty.path()), LOOPBACK).expect("ok");
    let drive_by = headers(&[
        (header::HOST, "localhost:8080"),
        (header::ORIGIN, "https://evil.example"),
    ]);
    assert_eq!(
        status(anon.check(Access::Role(Role::Operator), &Method::POST, &drive_by, None)),
        403
    );
}

#[test]
fn a_changed_file_applies_without_a_restart_and_a_broken_one_keeps_the_last() {
    let dir = tempfile::tempdir().expect("ok");
    let (gate, tokens) = gate_with_accounts(dir.path());
    let h = headers(&[(header::AUTHORIZATION, &format!("Bearer {}", tokens[0]))]);
    assert_eq!(
        status(gate.check(Access::Role(Role::Viewer), &Method::GET, &h, None)),
        200
    );
    let path = dir.path().join("auth.toml");
    let mut file = AuthFile::read(&path).expect("ok");
    file.remove("viewer");
    file.write(&path).expect("ok");
    gate.refresh();
    assert_eq!(
        status(gate.check(Access::Role(Role::Viewer), &Method::GET, &h, None)),
        401
    );
    assert_eq!(gate.stats.reloads.load(Ordering::Relaxed), 1);
    std::fs::write(&path, "not toml [").expect("ok");
    gate.refresh();
    assert_eq!(
        gate.stats.reloads.load(Ordering::Relaxed),
        1,
        "a broken file is not taken"
    );
    let op = headers(&[(header::AUTHORIZATION, &format!("Bearer {}", tokens[1]))]);
    assert_eq!(
        status(gate.check(Access::Role(Role::Viewer), &Method::GET, &op, None)),
        200
    );
}

#[test]
fn origins_are_this_server_or_listed() {
    let h = headers(&[(header::HOST, "[::1]:8081")]);
    // A page of the HTTP port opening the WebSocket port: the same host, on HTTP_PORT.
    assert!(origin_allowed("http://[::1]:8080", &h, &[], 8080));
    let h = headers(&[(header::HOST, "localhost:8081")]);
    assert!(origin_allowed("http://localhost:8080", &h, &[], 8080));
    assert!(origin_allowed("http://localhost:8081", &h, &[], 8080));
    // Another port of the same host is another site (a dev server, another local app).
    assert!(!origin_allowed("http://localhost:3000", &h, &[], 8080));
    assert!(!origin_allowed("http://localhost.evil:8080", &h, &[], 8080));
    assert!(!origin_allowed("null", &h, &[], 8080));
    // Default ports: no port in Host and Origin is the same port.
    let h = headers(&[(header::HOST, "plant.example")]);
    assert!(origin_allowed("https://plant.example", &h, &[], 8080));
    assert!(!origin_allowed("https://plant.example:8443", &h, &[], 8080));
    let h = headers(&[(header::HOST, "localhost:8081")]);
    assert!(origin_allowed(
        "https://a.example",
        &h,
        &["https://a.example/".into()],
        8080
    ));
    assert!(!origin_allowed(
        "http://localhost:8080",
        &h,
        &["https://a.example".into()],
        8080
    ));
}

use axum::http::HeaderName;
use std::sync::atomic::Ordering;
