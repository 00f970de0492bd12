//! Who may see and act: users, roles and API tokens, checked on every interface.
//!
//! Three roles, each including the one before: `viewer` (read the API, the stream, exports,
//! metrics), `operator` (also acknowledge alerts, manage silences, ingest readings), `admin`
//! (also `/config` and rule changes). Who holds which role is in the auth file (`AUTH_FILE`,
//! default `DATA_DIR/auth.toml`, managed by `iiot auth …` and re-read when it changes), plus an
//! optional `AUTH_TOKEN` from the configuration (e.g. a container secret).
//!
//! A request proves who it is with `Authorization: Bearer <token>` (programs) or a session
//! cookie (the dashboard, after `POST /api/login`). With the auth file empty and no
//! `AUTH_TOKEN`, nobody can sign in, and requests are let in anonymously *only* while the
//! listeners are on loopback (the default then) or `ALLOW_ANONYMOUS=true` says so.
//!
//! [`Gate::check`] is the one decision; [`crate::http::guard`] applies it to each route by the
//! route's [`Access`], and to the WebSocket upgrade. The rules it adds for browsers:
//! state-changing requests carrying a session need its CSRF token (`X-CSRF-Token`), any
//! request with an `Origin` must come from the same host or the allow-list
//! (`WEBSOCKET_ALLOWED_ORIGINS`), and anonymous access on loopback also needs a loopback
//! `Host` (so a rebinding DNS name cannot reach it from a web page).
//!
//! - [`store`]: the auth file, password and token hashing, the lookup tables.
//! - [`session`]: dashboard sessions.
//! - `origin`: a page's `Origin` against this server's own, and the loopback `Host` check.
//! - [`cli`]: `iiot auth add-user | add-token | list | remove`.

pub mod cli;
mod origin;
pub mod session;
pub mod store;

use origin::loopback_host;
pub use origin::origin_allowed;

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock, Weak};
use std::time::Duration;

use axum::http::{HeaderMap, Method, header};
use serde::{Deserialize, Serialize};

use self::session::Sessions;
use self::store::{Accounts, AuthFile};
use crate::config::Config;

/// What a user or token may do; each role includes the ones before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Reads the API, the stream, exports and metrics.
    Viewer,
    /// Also acknowledges alerts, manages silences, ingests readings.
    Operator,
    /// Also reads the configuration and changes rules.
    Admin,
}

impl Role {
    /// Its name, as in the auth file.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }

    /// The role called `name`.
    pub fn parse(name: &str) -> Option<Role> {
        [Role::Viewer, Role::Operator, Role::Admin]
            .into_iter()
            .find(|r| r.as_str() == name)
    }
}

/// What a route asks of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone, unchecked (`/health`, `/ready`, the login page).
    Open,
    /// Anyone signed in, whatever the role (or anonymous where that is allowed).
    SignedIn,
    /// At least this role.
    Role(Role),
}

/// Who a request is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The user or token name; `None` when anonymous.
    pub name: Option<String>,
    /// What it may do.
    pub role: Role,
    /// How it proved it.
    pub via: Via,
}

/// How a request proved who it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Via {
    /// It did not: nobody can sign in and anonymous access is allowed.
    Anonymous,
    /// An API token (its SHA-256, to look it up again).
    Token {
        /// The token's digest.
        digest: String,
    },
    /// A dashboard session, with its CSRF token.
    Session {
        /// What state-changing requests must send in `X-CSRF-Token`.
        csrf: String,
        /// The session's key (the SHA-256 of its cookie value), to look it up again.
        key: String,
    },
}

/// Why a request is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denied {
    /// No valid credentials (401).
    Unauthorized(String),
    /// Valid credentials, not allowed (403).
    Forbidden(String),
}

/// Why auth could not start: the auth file is unusable, or listening beyond this machine
/// would be anonymous. A setting, so exit 2.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {0}")]
pub struct AuthError(pub String);

/// Counters for `/metrics`.
#[derive(Debug, Default)]
pub struct AuthStats {
    /// Requests refused with 401.
    pub unauthorized: AtomicU64,
    /// Requests refused with 403 (role, CSRF, Origin, Host).
    pub forbidden: AtomicU64,
    /// Logins that succeeded.
    pub logins: AtomicU64,
    /// Logins refused (unknown user or wrong password).
    pub login_failures: AtomicU64,
    /// Times the auth file was read again after a change.
    pub reloads: AtomicU64,
}

/// The policy and the accounts every request is checked against. One per process, shared.
#[derive(Debug)]
pub struct Gate {
    file: Option<PathBuf>,
    extra: Vec<(String, String, Role)>,
    accounts: RwLock<Arc<Accounts>>,
    stamp: std::sync::Mutex<Option<Stamp>>,
    /// Dashboard sessions.
    pub sessions: Sessions,
    anonymous: Anonymous,
    allowed_origins: Vec<String>,
    /// The port the HTTP API is served on (pages come from it), once bound.
    http_port: std::sync::atomic::AtomicU16,
    secure_cookie: bool,
    /// Logins verify argon2 hashes, which is slow on purpose: at most this many at once (the
    /// permit travels with the blocking hash, so a client that hangs up frees no slot early).
    pub login_slots: Arc<tokio::sync::Semaphore>,
    /// What was refused.
    pub stats: AuthStats,
}

/// When anonymous requests are let in (always only while nobody can sign in).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Anonymous {
    /// Never.
    Never,
    /// Only with a loopback `Host` (the listeners are on loopback).
    Loopback,
    /// Whatever the host (`ALLOW_ANONYMOUS=true`).
    Anywhere,
}

/// What identifies a version of the auth file.
type Stamp = (std::time::SystemTime, u64);

/// How often the auth file is looked at for changes.
const RELOAD_POLL: Duration = Duration::from_secs(1);

/// Checks before anything starts what [`listen`] would refuse (an unusable auth file,
/// anonymous access beyond loopback), so the refusal is the only line printed.
pub fn preflight(config: &Config) -> Result<(), AuthError> {
    let (_, bind) = choose(config)?;
    Gate::from_config(config, bind).map(drop)
}

/// The auth file's users and tokens, and the address to bind.
fn choose(config: &Config) -> Result<(AuthFile, IpAddr), AuthError> {
    if config.tls.cert_file.is_some() != config.tls.key_file.is_some() {
        return Err(AuthError(
            "TLS_CERT_FILE and TLS_KEY_FILE: set both (HTTPS and WSS) or neither".into(),
        ));
    }
    let path = auth_file(config);
    let file = AuthFile::read(&path).map_err(|e| AuthError(format!("AUTH_FILE={e}")))?;
    let bind = match config.listen_addr {
        Some(ip) => ip,
        None if file.is_empty() && config.auth.token.is_none() => {
            IpAddr::V4(std::net::Ipv4Addr::LOCALHOST)
        }
        None => IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
    };
    Ok((file, bind))
}

/// What the listeners of a process need: the gate, and the address to bind — `LISTEN_ADDR`,
/// else all interfaces when anyone can sign in and loopback only when nobody can. Watches the
/// auth file from now on.
pub fn listen(config: &Config) -> Result<(Arc<Gate>, IpAddr), AuthError> {
    let (_, bind) = choose(config)?;
    let gate = Arc::new(Gate::from_config(config, bind)?);
    if !gate.has_accounts() {
        if bind.is_loopback() {
            tracing::info!(
                "no users or tokens in {}: listening on {bind} only, open to anyone on this machine \
                 (add one with `iiot auth add-user` or `add-token` to sign in and listen \
                 beyond it)",
                auth_file(config).display()
            );
        } else {
            tracing::warn!(
                "ALLOW_ANONYMOUS=true: serving anyone who can reach {bind}, without credentials"
            );
        }
    }
    gate.watch();
    Ok((gate, bind))
}

/// The auth file `config` names.
pub fn auth_file(config: &Config) -> PathBuf {
    config
        .auth
        .file
        .clone()
        .unwrap_or_else(|| config.history.data_dir.join("auth.toml"))
}

impl Gate {
    /// Lets everyone in as admin, as before auth existed: for tests that build the API alone.
    pub fn open_to_all() -> Gate {
        Gate::build(
            None,
            Vec::new(),
            Accounts::default(),
            Anonymous::Anywhere,
            Vec::new(),
            false,
            Duration::from_secs(3600),
        )
    }

    /// The gate of a process whose listeners bind `bind`: reads the auth file, and refuses to
    /// start if that would serve anonymously beyond loopback without `ALLOW_ANONYMOUS=true`.
    pub fn from_config(config: &Config, bind: IpAddr) -> Result<Gate, AuthError> {
        let path = auth_file(config);
        let file = AuthFile::read(&path).map_err(|e| AuthError(format!("AUTH_FILE={e}")))?;
        let extra: Vec<(String, String, Role)> = config
            .auth
            .token
            .iter()
            .map(|t| ("AUTH_TOKEN".to_string(), t.clone(), config.auth.token_role))
            .collect();
        let accounts = Accounts::new(&file, &extra);
        let anonymous = if config.auth.allow_anonymous {
            Anonymous::Anywhere
        } else if bind.is_loopback() {
            Anonymous::Loopback
        } else {
            Anonymous::Never
        };
        if anonymous == Anonymous::Never && accounts.is_empty() {
            return Err(AuthError(format!(
                "LISTEN_ADDR={bind}: listening beyond this machine needs credentials, and {} \
                 has no user or token: add one (`iiot auth add-token NAME --role viewer`), set \
                 AUTH_TOKEN, or set ALLOW_ANONYMOUS=true to serve anyone who can reach the port",
                path.display()
            )));
        }
        let gate = Gate::build(
            Some(path.clone()),
            extra,
            accounts,
            anonymous,
            crate::hub::HubConfig::from_config(config).allowed_origins,
            config.tls.cert_file.is_some(),
            config.auth.session_ttl,
        );
        *gate.stamp_lock() = stamp(&path);
        Ok(gate)
    }

    fn build(
        file: Option<PathBuf>,
        extra: Vec<(String, String, Role)>,
        accounts: Accounts,
        anonymous: Anonymous,
        allowed_origins: Vec<String>,
        secure_cookie: bool,
        ttl: Duration,
    ) -> Gate {
        Gate {
            file,
            extra,
            accounts: RwLock::new(Arc::new(accounts)),
            stamp: std::sync::Mutex::new(None),
            sessions: Sessions::new(ttl),
            anonymous,
            allowed_origins,
            http_port: std::sync::atomic::AtomicU16::new(0),
            secure_cookie,
            login_slots: Arc::new(tokio::sync::Semaphore::new(2)),
            stats: AuthStats::default(),
        }
    }

    /// Whether anyone can sign in (then every guarded request needs credentials).
    pub fn has_accounts(&self) -> bool {
        !self.accounts().is_empty()
    }

    /// Whether anonymous requests are let in now.
    pub fn anonymous_allowed(&self) -> bool {
        self.anonymous != Anonymous::Never && !self.has_accounts()
    }

    /// Records the port the HTTP API was bound to: a page served from it may use the
    /// WebSocket port too.
    pub fn set_http_port(&self, port: u16) {
        self.http_port.store(port, Ordering::Relaxed);
    }

    /// Whether the credentials `principal` came with still hold: the token is still in the
    /// auth file, the session still open and its user unchanged, or (anonymous) nobody can
    /// sign in yet. Open WebSocket connections ask this periodically.
    pub fn still_valid(&self, principal: &Principal) -> bool {
        let accounts = self.accounts();
        match &principal.via {
            Via::Anonymous => self.anonymous != Anonymous::Never && accounts.is_empty(),
            Via::Token { digest } => accounts.token_digest(digest).is_some(),
            Via::Session { key, .. } => self
                .sessions
                .get_by_key(key)
                .is_some_and(|s| session_holds(&accounts, &s)),
        }
    }

    /// The check a WebSocket upgrade adds (a GET, so [`Gate::check`] does not look at its
    /// `Origin`): a page must come from this server's own origin or an allowed one.
    pub fn check_upgrade_origin(&self, headers: &HeaderMap) -> Result<(), Denied> {
        self.check_origin(headers)
    }

    /// Whether session cookies are marked `Secure` (served over TLS).
    pub fn secure_cookie(&self) -> bool {
        self.secure_cookie
    }

    /// The current lookup tables.
    pub fn accounts(&self) -> Arc<Accounts> {
        self.accounts
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    fn stamp_lock(&self) -> std::sync::MutexGuard<'_, Option<Stamp>> {
        self.stamp
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Reads the auth file again if it changed. A file that no longer parses keeps the last
    /// good accounts (logged once per change).
    pub fn refresh(&self) {
        let Some(path) = &self.file else { return };
        let now = stamp(path);
        {
            let mut seen = self.stamp_lock();
            if *seen == now {
                return;
            }
            *seen = now;
        }
        match AuthFile::read(path) {
            Ok(file) => {
                let accounts = Accounts::new(&file, &self.extra);
                *self
                    .accounts
                    .write()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(accounts);
                self.stats.reloads.fetch_add(1, Ordering::Relaxed);
                tracing::info!(
                    users = file.users.len(),
                    tokens = file.tokens.len(),
                    "auth: {} read again",
                    path.display()
                );
            }
            Err(e) => tracing::warn!("auth: keeping the previous accounts: {e}"),
        }
    }

    /// Re-reads the auth file whenever it changes, for as long as the gate lives.
    pub fn watch(self: &Arc<Self>) {
        let weak: Weak<Gate> = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(RELOAD_POLL).await;
                let Some(gate) = weak.upgrade() else { return };
                // Reading a small file; off the async threads anyway.
                let _ = tokio::task::spawn_blocking(move || gate.refresh()).await;
            }
        });
    }

    /// The decision for one request: who it is, or why not. `query_token` is a `?token=`
    /// (taken on the WebSocket upgrade only, where browsers cannot set headers).
    pub fn check(
        &self,
        access: Access,
        method: &Method,
        headers: &HeaderMap,
        query_token: Option<&str>,
    ) -> Result<Principal, Denied> {
        let changes_state = !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS);
        if changes_state {
            self.check_origin(headers)?;
        }
        if access == Access::Open {
            return Ok(anonymous());
        }
        let accounts = self.accounts();
        let principal = match self.credentials(&accounts, headers, query_token)? {
            Some(p) => p,
            None if self.anonymous != Anonymous::Never && accounts.is_empty() => {
                if self.anonymous == Anonymous::Loopback && !loopback_host(headers) {
                    return Err(Denied::Forbidden(
                        "anonymous access is for localhost only: use http://localhost or \
                         127.0.0.1 (or set up users and tokens)"
                            .into(),
                    ));
                }
                anonymous()
            }
            None => {
                return Err(Denied::Unauthorized(
                    "sign in, or send Authorization: Bearer <token>".into(),
                ));
            }
        };
        if let Access::Role(needed) = access
            && principal.role < needed
        {
            return Err(Denied::Forbidden(format!(
                "this needs the {} role; {} has {}",
                needed.as_str(),
                principal.name.as_deref().unwrap_or("this request"),
                principal.role.as_str()
            )));
        }
        if let Via::Session { csrf, .. } = &principal.via
            && changes_state
        {
            let sent = headers.get("x-csrf-token").and_then(|v| v.to_str().ok());
            if !sent.is_some_and(|s| same_secret(s.as_bytes(), csrf.as_bytes())) {
                return Err(Denied::Forbidden(
                    "missing or wrong X-CSRF-Token for this session".into(),
                ));
            }
        }
        Ok(principal)
    }

    /// The principal the request's credentials name, `None` if it sent none (a stale or
    /// unknown session cookie counts as none; a wrong bearer token does not).
    fn credentials(
        &self,
        accounts: &Accounts,
        headers: &HeaderMap,
        query_token: Option<&str>,
    ) -> Result<Option<Principal>, Denied> {
        let bearer = headers
            .get(header::AUTHORIZATION)
            .map(|v| v.to_str().unwrap_or(""))
            .map(|v| v.strip_prefix("Bearer ").map(str::trim));
        let token = match bearer {
            Some(Some(t)) => Some(t),
            Some(None) => {
                return Err(Denied::Unauthorized(
                    "the Authorization header must be `Bearer <token>`".into(),
                ));
            }
            None => None,
        };
        if let Some(token) = token.or(query_token) {
            return match accounts.token(token) {
                Some((name, role)) => Ok(Some(Principal {
                    name: Some(name.to_string()),
                    role,
                    via: Via::Token {
                        digest: store::sha256_hex(token),
                    },
                })),
                // With no accounts there is nothing to check it against: it may be the
                // WebSocket's own WEBSOCKET_AUTH_TOKEN, which the hub checks.
                None if accounts.is_empty() => Ok(None),
                None => Err(Denied::Unauthorized("invalid or revoked token".into())),
            };
        }
        let cookie = headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find_map(|h| session::cookie(h, session::COOKIE));
        let Some(id) = cookie else {
            return Ok(None);
        };
        let key = store::sha256_hex(id);
        let Some(session) = self.sessions.get_by_key(&key) else {
            return Ok(None);
        };
        // The role is today's, not the one at login; a removed user (or one removed and added
        // again with a new password) is signed out.
        if !session_holds(accounts, &session) {
            self.sessions.close_key(&key);
            return Ok(None);
        }
        let Some((_, role)) = accounts.user(&session.user) else {
            return Ok(None);
        };
        Ok(Some(Principal {
            name: Some(session.user),
            role,
            via: Via::Session {
                csrf: session.csrf,
                key,
            },
        }))
    }

    /// A request from a web page (`Origin`) must come from the same host as it is sent to, or
    /// from an allowed origin.
    fn check_origin(&self, headers: &HeaderMap) -> Result<(), Denied> {
        let Some(origin) = headers.get(header::ORIGIN) else {
            return Ok(());
        };
        let origin = origin.to_str().unwrap_or("");
        let http_port = self.http_port.load(Ordering::Relaxed);
        if origin_allowed(origin, headers, &self.allowed_origins, http_port) {
            Ok(())
        } else {
            Err(Denied::Forbidden(format!(
                "requests from the page at {origin:?} are not allowed here"
            )))
        }
    }
}

/// Whether `session` still belongs to its user as they are now (same password hash).
fn session_holds(accounts: &Accounts, session: &session::Session) -> bool {
    accounts
        .user(&session.user)
        .is_some_and(|(hash, _)| store::sha256_hex(hash) == session.password)
}

fn anonymous() -> Principal {
    Principal {
        name: None,
        role: Role::Admin,
        via: Via::Anonymous,
    }
}

fn stamp(path: &Path) -> Option<Stamp> {
    let meta = std::fs::metadata(path).ok()?;
    #[cfg(unix)]
    let id = std::os::unix::fs::MetadataExt::ino(&meta) ^ meta.len().rotate_left(32);
    #[cfg(not(unix))]
    let id = meta.len();
    Some((meta.modified().ok()?, id))
}

/// Compares in time independent of where the first difference is.
pub fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests;
