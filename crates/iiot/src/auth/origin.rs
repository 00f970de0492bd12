//! Where a request comes from: the `Origin` of a web page against this server's own origin
//! (or the allow-list), and whether a `Host` names this machine (the DNS-rebinding check of
//! anonymous access on loopback).

use std::net::IpAddr;

use axum::http::{HeaderMap, header};

/// Whether a page at `origin` may use this server: `allowed` lists it (or `*`), or, with no
/// list, it is this server's own origin — the host and port the request is sent to, or the
/// same host on `http_port` (a dashboard page opening the WebSocket port). A page of another
/// port of the same host is another site's page.
pub fn origin_allowed(
    origin: &str,
    headers: &HeaderMap,
    allowed: &[String],
    http_port: u16,
) -> bool {
    if !allowed.is_empty() {
        return allowed
            .iter()
            .any(|a| a == "*" || a.trim_end_matches('/').eq_ignore_ascii_case(origin));
    }
    let Some((scheme, authority)) = origin.split_once("://") else {
        return false;
    };
    let default = if scheme.eq_ignore_ascii_case("https") {
        443
    } else {
        80
    };
    let (origin_host, origin_port) = host_and_port(authority, default);
    let Some(host) = headers.get(header::HOST).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let (host, port) = host_and_port(host, default);
    !origin_host.is_empty()
        && origin_host.eq_ignore_ascii_case(host)
        && (origin_port == port || (http_port != 0 && origin_port == Some(http_port)))
}

/// `host[:port]` → (`host`, port; `default` when none is given; `None` when unreadable).
fn host_and_port(authority: &str, default: u16) -> (&str, Option<u16>) {
    let authority = authority.split('/').next().unwrap_or("");
    let host = host_only(authority);
    let rest = &authority[host.len()..];
    let port = match rest.strip_prefix(':') {
        Some(p) => p.parse().ok(),
        None if rest.is_empty() => Some(default),
        None => None,
    };
    (host, port)
}

/// `host[:port]` → `host` (an IPv6 literal keeps its brackets).
fn host_only(authority: &str) -> &str {
    let authority = authority.split('/').next().unwrap_or("");
    if authority.starts_with('[') {
        return authority.split_inclusive(']').next().unwrap_or(authority);
    }
    authority.split(':').next().unwrap_or(authority)
}

/// Whether the request's `Host` is this machine by name or address.
pub(super) fn loopback_host(headers: &HeaderMap) -> bool {
    let Some(host) = headers.get(header::HOST).and_then(|v| v.to_str().ok()) else {
        // HTTP/1.0 without Host: not from a browser.
        return true;
    };
    let host = host_only(host).to_ascii_lowercase();
    if host == "localhost" || host.ends_with(".localhost") {
        return true;
    }
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>()
        .is_ok_and(|ip| ip.is_loopback())
}
