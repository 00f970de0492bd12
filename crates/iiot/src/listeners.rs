//! Binds the sockets of a role: the HTTP API (with the WebSocket hub also at `/ws`) on
//! `HTTP_PORT`, and the hub alone on `WEBSOCKET_PORT` at `WEBSOCKET_PATH` (the design notes'
//! `ws://localhost:8081/ws`). Both stop gracefully when asked; WebSocket clients are closed first
//! so that graceful shutdown does not wait on them. Every port applies the connection limits of
//! [`ConnLimits`] (`HTTP_MAX_CONNECTIONS`, `HTTP_HEADER_TIMEOUT`, `HTTP_IDLE_TIMEOUT`).

mod accept;
#[cfg(feature = "tls")]
mod tls;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::auth::{Access, Role};
use crate::config::Config;
use crate::http::{AppState, OpsState, app, guard};
use crate::hub::Hub;

pub use accept::{ConnLimits, ConnStats};

/// How long open HTTP requests may take to finish at shutdown.
const GRACE: Duration = Duration::from_secs(5);

/// The running listeners.
pub struct Server {
    /// Where the HTTP API listens.
    pub http_addr: SocketAddr,
    /// Where the dedicated WebSocket listener listens.
    pub ws_addr: Option<SocketAddr>,
    hub: Option<Arc<Hub>>,
    stop: CancellationToken,
    tasks: Vec<JoinHandle<std::io::Result<()>>>,
}

/// Binds both ports (0 = any free port) on the address [`crate::auth::listen`] chooses and
/// starts serving, every route behind the configured gate.
pub async fn start(config: &Config, mut state: AppState) -> anyhow::Result<Server> {
    let hub = state.live.hub.clone();
    let (gate, ip) = crate::auth::listen(config)?;
    state.ops.gate = gate.clone();
    let http = TcpListener::bind((ip, config.http_port))
        .await
        .with_context(|| format!("binding HTTP_PORT={} on {ip}", config.http_port))?;
    let ws = TcpListener::bind((ip, config.websocket.port))
        .await
        .with_context(|| format!("binding WEBSOCKET_PORT={} on {ip}", config.websocket.port))?;
    let (http_addr, ws_addr) = (http.local_addr()?, ws.local_addr()?);
    gate.set_http_port(http_addr.port());
    let tls = load_tls(config)?;
    let stream = |path: &str| {
        let hub_routes = crate::hub::router(hub.clone(), path);
        guard::router(hub_routes, gate.clone(), Access::Role(Role::Viewer), true)
    };
    let api = app(state.clone()).merge(stream("/ws"));
    let ws_only = stream(&config.websocket.path);
    let stop = CancellationToken::new();
    let limits = ConnLimits::from_config(config);
    let stats = state.ops.connections.clone();
    let tasks = [(http, api), (ws, ws_only)]
        .into_iter()
        .map(|(listener, router)| {
            let serving = accept::serve(
                listener,
                router,
                limits,
                stats.clone(),
                stop.clone(),
                tls.clone(),
            );
            tokio::spawn(serving)
        })
        .collect();
    let (http_scheme, ws_scheme) = if tls.is_some() {
        ("https", "wss")
    } else {
        ("http", "ws")
    };
    tracing::info!(
        "serving the HTTP API on {http_scheme}://{http_addr}/ and WebSocket on \
         {ws_scheme}://{ws_addr}{}",
        config.websocket.path
    );
    Ok(Server {
        http_addr,
        ws_addr: Some(ws_addr),
        hub: Some(hub),
        stop,
        tasks,
    })
}

/// Binds `HTTP_PORT` and serves the operations routes only ([`crate::http::ops_app`]): the
/// endpoint of the roles without a store or WebSocket hub (`process`, `simulate`).
pub async fn start_ops(config: &Config, mut state: OpsState) -> anyhow::Result<Server> {
    let (gate, ip) = crate::auth::listen(config)?;
    state.gate = gate;
    let http = TcpListener::bind((ip, config.http_port))
        .await
        .with_context(|| format!("binding HTTP_PORT={} on {ip}", config.http_port))?;
    let http_addr = http.local_addr()?;
    let stop = CancellationToken::new();
    let limits = ConnLimits::from_config(config);
    let stats = state.connections.clone();
    let router = crate::http::ops_app(state);
    let tls = load_tls(config)?;
    let task = tokio::spawn(accept::serve(
        http,
        router,
        limits,
        stats,
        stop.clone(),
        tls,
    ));
    tracing::info!("serving /health, /ready and /metrics on http://{http_addr}/");
    Ok(Server {
        http_addr,
        ws_addr: None,
        hub: None,
        stop,
        tasks: vec![task],
    })
}

/// Whether `TLS_CERT_FILE` / `TLS_KEY_FILE` load (checked before anything starts).
pub fn check_tls(config: &Config) -> Result<(), crate::auth::AuthError> {
    let (Some(cert), Some(key)) = (&config.tls.cert_file, &config.tls.key_file) else {
        return Ok(());
    };
    #[cfg(feature = "tls")]
    return tls::Tls::check(cert, key).map_err(crate::auth::AuthError);
    #[cfg(not(feature = "tls"))]
    {
        let _ = (cert, key);
        Err(crate::auth::AuthError(
            "TLS_CERT_FILE: this iiot was built without the `tls` feature".into(),
        ))
    }
}

/// The certificate of `TLS_CERT_FILE` / `TLS_KEY_FILE`, if set (a bad one is exit 2).
fn load_tls(config: &Config) -> anyhow::Result<accept::TlsConfig> {
    let (Some(cert), Some(key)) = (&config.tls.cert_file, &config.tls.key_file) else {
        return Ok(None);
    };
    #[cfg(feature = "tls")]
    {
        let tls = tls::Tls::load(cert, key).map_err(crate::auth::AuthError)?;
        Ok(Some(tls))
    }
    #[cfg(not(feature = "tls"))]
    {
        let _ = (cert, key);
        Err(crate::auth::AuthError(
            "TLS_CERT_FILE: this iiot was built without the `tls` feature".into(),
        )
        .into())
    }
}

impl Server {
    /// Closes WebSocket clients, stops accepting, and waits (bounded) for open requests.
    pub async fn stop(self) {
        if let Some(hub) = &self.hub {
            hub.shutdown();
            // Let the close frames go out before the listeners stop.
            if tokio::time::timeout(GRACE, hub.closed()).await.is_err() {
                tracing::warn!("WebSocket clients did not close within {GRACE:?}");
            }
        }
        self.stop.cancel();
        for task in self.tasks {
            match tokio::time::timeout(GRACE, task).await {
                Ok(Ok(Ok(()))) => {}
                Ok(Ok(Err(e))) => tracing::warn!(error = %e, "listener ended with an error"),
                Ok(Err(e)) => tracing::warn!(error = %e, "listener task failed"),
                Err(_) => tracing::warn!("open connections did not finish within {GRACE:?}"),
            }
        }
    }
}
