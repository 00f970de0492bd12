//! The web dashboard (SPEC §6): the files under `crates/iiot/web/`, embedded into the binary at
//! build time and served at `/` (the page) and `/web/…` (its scripts, styles and vendored
//! libraries), so the dashboard works with no internet and no files next to the binary.
//!
//! This module owns the asset table, content types and caching headers. It knows nothing of the
//! API the page calls: the page talks to `/api/*` and `/ws` like any other client.
//!
//! Caching: the page and our own scripts change with the binary under the same names, so they
//! are answered with `Cache-Control: no-cache` and a strong `ETag` (a hash of the bytes computed
//! at compile time): the browser revalidates and gets a body-less 304 when nothing changed.
//! Vendored libraries live under a versioned folder (`vendor/uplot-1.6.32/`) and never change
//! under that name, so they may be cached for a year.

use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::AppError;

/// Where the assets are served from (the page's own URLs start with it).
pub const PREFIX: &str = "/web/";

const HTML: &str = "text/html; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";
const SVG: &str = "image/svg+xml";
const TEXT: &str = "text/plain; charset=utf-8";
const JSON: &str = "application/json";

/// Revalidate on every use (answered by a 304 while the `ETag` matches).
const REVALIDATE: &str = "no-cache";
/// Versioned vendor files never change under their name.
const IMMUTABLE: &str = "public, max-age=31536000, immutable";

/// The page may load only from its own origin: no CDN, no outside fonts, no beacons. Inline
/// `style` attributes are allowed because the chart library sizes its elements with them.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
                   img-src 'self' data: blob:; connect-src 'self'; worker-src 'self'; \
                   object-src 'none'; base-uri 'none'; frame-ancestors 'none'";

/// One embedded file.
#[derive(Debug, Clone, Copy)]
pub struct Asset {
    /// Path below `web/`, e.g. `js/main.js`.
    pub path: &'static str,
    /// `Content-Type` header value.
    pub content_type: &'static str,
    /// The file's bytes.
    pub body: &'static [u8],
    /// Strong validator: FNV-1a of `body`.
    pub hash: u64,
}

impl Asset {
    /// `Cache-Control` for this file.
    pub fn cache_control(&self) -> &'static str {
        if self.path.starts_with("vendor/") {
            IMMUTABLE
        } else {
            REVALIDATE
        }
    }

    fn etag(&self) -> String {
        format!("\"{:016x}\"", self.hash)
    }
}

/// FNV-1a, 64 bit: evaluated at compile time over each file.
const fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut i = 0;
    while i < bytes.len() {
        hash ^= bytes[i] as u64;
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        i += 1;
    }
    hash
}

macro_rules! asset {
    ($path:literal, $type:expr) => {
        Asset {
            path: $path,
            content_type: $type,
            body: include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/web/", $path)),
            hash: fnv1a(include_bytes!(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/web/",
                $path
            ))),
        }
    };
}

/// Every file of the dashboard. A test checks that it lists exactly the files under `web/`.
pub static ASSETS: &[Asset] = &[
    asset!("index.html", HTML),
    asset!("favicon.svg", SVG),
    asset!("css/app.css", CSS),
    asset!("js/main.js", JS),
    asset!("js/api.js", JS),
    asset!("js/util.js", JS),
    asset!("js/stream.js", JS),
    asset!("js/stream-worker.js", JS),
    asset!("js/charts.js", JS),
    asset!("js/alerts.js", JS),
    asset!("js/overview.js", JS),
    asset!("js/devices.js", JS),
    asset!("js/device.js", JS),
    asset!("js/silences.js", JS),
    asset!("js/session.js", JS),
    asset!("vendor/README.md", TEXT),
    asset!("vendor/uplot-1.6.32/uPlot.esm.js", JS),
    asset!("vendor/uplot-1.6.32/uPlot.min.css", CSS),
    asset!("vendor/uplot-1.6.32/LICENSE", TEXT),
    asset!("vendor/uplot-1.6.32/package.json", JSON),
];

/// The embedded file at `path` (below `web/`), if any.
pub fn asset(path: &str) -> Option<&'static Asset> {
    ASSETS.iter().find(|a| a.path == path)
}

/// `GET /` (the page) and `GET /web/{path}` (its files). Merge it into the API router; unknown
/// files fall through to the API's JSON 404.
pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", get(index))
        .route("/web/{*path}", get(file))
}

async fn index(headers: HeaderMap) -> Response {
    // The table always holds index.html (the asset test checks it); answer 404 rather than panic.
    match asset("index.html") {
        Some(page) => {
            let mut response = serve(page, &headers);
            response.headers_mut().insert(
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(CSP),
            );
            response
        }
        None => AppError::NotFound("/".into()).into_response(),
    }
}

async fn file(Path(path): Path<String>, headers: HeaderMap) -> Response {
    match asset(&path) {
        Some(found) => serve(found, &headers),
        None => AppError::NotFound(format!("{PREFIX}{path}")).into_response(),
    }
}

/// The file, or a 304 when the client's `If-None-Match` holds its `ETag`.
fn serve(asset: &'static Asset, request: &HeaderMap) -> Response {
    let etag = asset.etag();
    let fresh = request
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|tag| {
            let tag = tag.trim();
            tag == "*" || tag.trim_start_matches("W/") == etag
        });
    let common = [
        (header::CACHE_CONTROL, asset.cache_control()),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
    ];
    if fresh {
        return (StatusCode::NOT_MODIFIED, common, [(header::ETAG, etag)]).into_response();
    }
    (
        common,
        [
            (header::CONTENT_TYPE, asset.content_type.to_owned()),
            (header::ETAG, etag),
        ],
        asset.body,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::path::Path;

    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    use super::*;

    fn files_under(dir: &Path, root: &Path, out: &mut BTreeSet<String>) {
        for entry in std::fs::read_dir(dir).expect("web/ is readable") {
            let path = entry.expect("a directory entry").path();
            if path.is_dir() {
                files_under(&path, root, out);
            } else {
                let rel = path.strip_prefix(root).expect("below web/");
                out.insert(rel.to_string_lossy().replace('\\', "/"));
            }
        }
    }

    /// A file added to `web/` but not to the table would be a 404 in the browser.
    #[test]
    fn the_table_lists_every_file_under_web() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("web");
        let mut on_disk = BTreeSet::new();
        files_under(&root, &root, &mut on_disk);
        let listed: BTreeSet<String> = ASSETS.iter().map(|a| a.path.to_owned()).collect();
        assert_eq!(listed, on_disk);
    }

    async fn get(uri: &str, if_none_match: Option<&str>) -> Response {
        let mut request = Request::get(uri);
        if let Some(tag) = if_none_match {
            request = request.header(header::IF_NONE_MATCH, tag);
        }
        router::<()>()
            .oneshot(request.body(Body::empty()).expect("a valid request"))
            .await
            .expect("the router is infallible")
    }

    fn header_of(response: &Response, name: header::HeaderName) -> &str {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    #[tokio::test]
    async fn the_page_is_html_and_revalidated() {
        let response = get("/", None).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(header_of(&response, header::CONTENT_TYPE), HTML);
        assert_eq!(header_of(&response, header::CACHE_CONTROL), "no-cache");
        assert!(
            header_of(&response, header::CONTENT_SECURITY_POLICY).contains("default-src 'self'")
        );
        let body = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .expect("the body");
        let text = String::from_utf8_lossy(&body);
        assert!(text.starts_with("<!doctype html>"), "{text:.60}");
        // Offline: the page names no other host.
        assert!(!text.contains("http://") && !text.contains("https://"));
    }

    #[tokio::test]
    async fn assets_have_their_content_types() {
        for (uri, expected) in [
            ("/web/js/main.js", JS),
            ("/web/css/app.css", CSS),
            ("/web/favicon.svg", SVG),
            ("/web/vendor/uplot-1.6.32/uPlot.esm.js", JS),
            ("/web/vendor/uplot-1.6.32/LICENSE", TEXT),
        ] {
            let response = get(uri, None).await;
            assert_eq!(response.status(), StatusCode::OK, "{uri}");
            assert_eq!(
                header_of(&response, header::CONTENT_TYPE),
                expected,
                "{uri}"
            );
            assert_eq!(
                header_of(&response, header::X_CONTENT_TYPE_OPTIONS),
                "nosniff"
            );
        }
        let vendor = get("/web/vendor/uplot-1.6.32/uPlot.esm.js", None).await;
        assert!(header_of(&vendor, header::CACHE_CONTROL).contains("immutable"));
    }

    #[tokio::test]
    async fn a_matching_etag_gets_a_304_without_a_body() {
        let first = get("/web/js/main.js", None).await;
        let etag = header_of(&first, header::ETAG).to_owned();
        assert!(etag.starts_with('"') && etag.len() == 18, "{etag}");
        let again = get("/web/js/main.js", Some(&etag)).await;
        assert_eq!(again.status(), StatusCode::NOT_MODIFIED);
        let body = axum::body::to_bytes(again.into_body(), 1024)
            .await
            .expect("the body");
        assert!(body.is_empty());
        let changed = get("/web/js/main.js", Some("\"0000000000000000\"")).await;
        assert_eq!(changed.status(), StatusCode::OK);
    }

    #[tokio::test]
    async fn unknown_assets_are_a_json_404() {
        for uri in [
            "/web/nope.js",
            "/web/js/",
            "/web/../Cargo.toml",
            "/web/js/main.js.map",
        ] {
            let response = get(uri, None).await;
            assert_eq!(response.status(), StatusCode::NOT_FOUND, "{uri}");
            assert!(header_of(&response, header::CONTENT_TYPE).starts_with("application/json"));
        }
    }
}
