//! The accept loop of one listening port, with the limits a hostile client meets before any
//! handler runs: a cap on open connections, a header-read timeout, and an idle timeout.
//!
//! `axum::serve` has neither timeout (a client that never finishes its headers is held
//! forever), so connections are served here with hyper's HTTP/1 server directly: hyper's
//! `header_read_timeout` runs whenever the server waits for a request head (on a new
//! connection and between keep-alive requests), and a watchdog closes a connection on which no
//! byte moved either way for the idle timeout (a body that stalls, a client that stops reading
//! an answer). Upgrades (the WebSocket) are handed over as before; once upgraded the
//! connection leaves this loop and its limits, and the hub's own (connection limit, pings)
//! apply.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// The connection limits of a listener (`HTTP_HEADER_TIMEOUT`, `HTTP_IDLE_TIMEOUT`,
/// `HTTP_MAX_CONNECTIONS`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnLimits {
    /// A request head must arrive within this once the server waits for it.
    pub header_timeout: Duration,
    /// No byte either way for this long closes the connection.
    pub idle_timeout: Duration,
    /// Open connections; the next one gets 503 and is closed.
    pub max_connections: usize,
}

impl ConnLimits {
    /// The limits from `config`.
    pub fn from_config(config: &crate::config::Config) -> ConnLimits {
        ConnLimits {
            header_timeout: config.http_header_timeout,
            idle_timeout: config.http_idle_timeout,
            max_connections: config.http_max_connections as usize,
        }
    }
}

/// What the listeners did with connections, every port together (`/metrics`).
#[derive(Debug, Default)]
pub struct ConnStats {
    /// HTTP connections open now (upgraded WebSocket connections not included).
    pub open: AtomicU64,
    /// Connections refused because the limit was reached.
    pub rejected: AtomicU64,
    /// Connections closed because a request head did not arrive in time.
    pub header_timeouts: AtomicU64,
    /// Connections closed because no byte moved for the idle timeout.
    pub idle_timeouts: AtomicU64,
}

/// How long open requests may take to finish once the listener stops; then their connections
/// are dropped. Shorter than the wait of [`super::Server::stop`], so that it does not give up
/// first. (hyper's graceful shutdown closes idle keep-alive connections at once, but waits for
/// a connection that has not finished its first request — a half-open one — until the header
/// timeout.)
const DRAIN: Duration = Duration::from_secs(3);

/// The answer to a connection beyond the limit, written without reading the request.
const FULL: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
retry-after: 1\r\nconnection: close\r\ncontent-length: 50\r\n\r\n\
{\"error\":\"too many HTTP connections; retry later\"}";

/// The certificate connections are wrapped in, when serving HTTPS.
#[cfg(feature = "tls")]
pub(crate) type TlsConfig = Option<Arc<super::tls::Tls>>;
/// Without the `tls` feature there is no HTTPS.
#[cfg(not(feature = "tls"))]
pub(crate) type TlsConfig = Option<Arc<std::convert::Infallible>>;

/// Serves `router` on `listener` (over TLS when `tls` is set) until `stop`, then lets open
/// requests finish: returns once every connection has ended (the caller bounds the wait).
pub(crate) async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ConnLimits,
    stats: Arc<ConnStats>,
    stop: CancellationToken,
    tls: TlsConfig,
) -> io::Result<()> {
    let max = limits.max_connections.clamp(1, Semaphore::MAX_PERMITS);
    let slots = Arc::new(Semaphore::new(max));
    loop {
        let tcp = tokio::select! {
            () = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((tcp, _)) => tcp,
                Err(e) => {
                    // Out of file descriptors and the like: pause rather than spin.
                    tracing::warn!(error = %e, "accepting an HTTP connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            refuse(&tcp, &stats, max);
            continue;
        };
        // Small frames must not wait for Nagle and delayed ACKs.
        let _ = tcp.set_nodelay(true);
        tokio::spawn(connection(
            tcp,
            router.clone(),
            limits,
            stats.clone(),
            stop.clone(),
            slot,
            tls.clone(),
        ));
    }
    drop(listener);
    // Every slot back means every connection has ended.
    let _ = slots.acquire_many(max as u32).await;
    Ok(())
}

fn refuse(tcp: &TcpStream, stats: &ConnStats, max: usize) {
    let refused = stats.rejected.fetch_add(1, Ordering::Relaxed) + 1;
    // A fresh socket's send buffer takes this at once; if it does not, closing says enough.
    let _ = tcp.try_write(FULL);
    if refused.is_power_of_two() {
        tracing::warn!(
            limit = max,
            refused,
            "HTTP connection limit reached: refusing connections (HTTP_MAX_CONNECTIONS)"
        );
    }
}

async fn connection(
    tcp: TcpStream,
    router: Router,
    limits: ConnLimits,
    stats: Arc<ConnStats>,
    stop: CancellationToken,
    slot: OwnedSemaphorePermit,
    tls: TlsConfig,
) {
    stats.open.fetch_add(1, Ordering::Relaxed);
    match tls {
        #[cfg(feature = "tls")]
        Some(tls) => {
            // The handshake counts as the first request head: it gets the same deadline.
            let accepting = tls.acceptor().accept(tcp);
            match tokio::time::timeout(limits.header_timeout, accepting).await {
                Ok(Ok(stream)) => serve_connection(stream, router, limits, &stats, stop).await,
                Ok(Err(e)) => tracing::debug!(error = %e, "TLS handshake failed"),
                Err(_) => {
                    stats.header_timeouts.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!("closing a connection whose TLS handshake did not finish");
                }
            }
        }
        #[cfg(not(feature = "tls"))]
        Some(never) => match *never {},
        None => serve_connection(tcp, router, limits, &stats, stop).await,
    }
    stats.open.fetch_sub(1, Ordering::Relaxed);
    drop(slot);
}

async fn serve_connection<S>(
    stream: S,
    router: Router,
    limits: ConnLimits,
    stats: &ConnStats,
    stop: CancellationToken,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let tcp = stream;
    let activity = Arc::new(Activity::new());
    let io = TokioIo::new(Tracked {
        inner: tcp,
        activity: activity.clone(),
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    let conn = builder
        .serve_connection(io, TowerToHyperService::new(router))
        .with_upgrades();
    tokio::pin!(conn);
    let mut drained_by = None;
    let ended = loop {
        tokio::select! {
            result = conn.as_mut() => break result.err(),
            () = stop.cancelled(), if drained_by.is_none() => {
                drained_by = Some(Instant::now() + DRAIN);
                conn.as_mut().graceful_shutdown();
            }
            () = sleep_until_some(drained_by) => {
                tracing::debug!("dropping an HTTP connection still open {DRAIN:?} after stop");
                break None;
            }
            () = activity.idle_for(limits.idle_timeout) => {
                stats.idle_timeouts.fetch_add(1, Ordering::Relaxed);
                tracing::debug!("closing an HTTP connection idle for {:?}", limits.idle_timeout);
                break None;
            }
        }
    };
    if let Some(e) = ended {
        if e.is_timeout() {
            stats.header_timeouts.fetch_add(1, Ordering::Relaxed);
            tracing::debug!("closing an HTTP connection whose request head did not arrive in time");
        } else {
            tracing::trace!(error = %e, "HTTP connection ended with an error");
        }
    }
}

async fn sleep_until_some(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// When a byte last moved on a connection, in ms since it opened.
struct Activity {
    opened: Instant,
    last_ms: AtomicU64,
}

impl Activity {
    fn new() -> Self {
        Activity {
            opened: Instant::now(),
            last_ms: AtomicU64::new(0),
        }
    }

    fn touch(&self) {
        let ms = self.opened.elapsed().as_millis() as u64;
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    /// Resolves once no byte has moved for `idle`.
    async fn idle_for(&self, idle: Duration) {
        loop {
            let last = self.opened + Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
            let deadline = last + idle;
            if Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep_until(deadline).await;
        }
    }
}

/// A socket that notes every byte read or written in its [`Activity`].
struct Tracked<S> {
    inner: S,
    activity: Arc<Activity>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Tracked<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let poll = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(poll, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.touch();
        }
        poll
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Tracked<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(poll, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        poll
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(poll, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        poll
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
