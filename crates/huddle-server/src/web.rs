//! The web client, embedded at build time from `web/`: one binary, nothing to install beside it.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

macro_rules! assets {
    ($($name:literal => $mime:literal),* $(,)?) => {
        const ASSETS: &[(&str, &str, &[u8])] = &[
            $(($name, $mime, include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/../../web/", $name)))),*
        ];
    };
}

assets! {
    "index.html" => "text/html; charset=utf-8",
    "style.css" => "text/css; charset=utf-8",
    "app.js" => "text/javascript; charset=utf-8",
    "signaling.js" => "text/javascript; charset=utf-8",
    "peer.js" => "text/javascript; charset=utf-8",
    "sfu.js" => "text/javascript; charset=utf-8",
    "media.js" => "text/javascript; charset=utf-8",
    "ui.js" => "text/javascript; charset=utf-8",
    "ice.js" => "text/javascript; charset=utf-8",
    "access.js" => "text/javascript; charset=utf-8",
    "icon.svg" => "image/svg+xml",
    "echo.html" => "text/html; charset=utf-8",
    "echo.js" => "text/javascript; charset=utf-8",
    "not-found.html" => "text/html; charset=utf-8",
}

/// Everything the page loads comes from this server; media may be blob: or a live stream.
const CSP: &str = "default-src 'self'; connect-src 'self'; img-src 'self' data:; \
    media-src 'self' blob: mediastream:; style-src 'self'; script-src 'self'; object-src 'none'; \
    base-uri 'none'; frame-ancestors 'none'";

/// The same on a node of a cluster, whose page may be sent to another node's WebSocket (`moved`);
/// the nodes come and go, so any `wss:` origin — scripts still come from this server alone.
const CLUSTER_CSP: &str = "default-src 'self'; connect-src 'self' wss:; img-src 'self' data:; \
    media-src 'self' blob: mediastream:; style-src 'self'; script-src 'self'; object-src 'none'; \
    base-uri 'none'; frame-ancestors 'none'";

/// On a node of a cluster, a response's CSP lets the page reach the other nodes' WebSockets.
pub async fn cluster_csp(mut response: Response) -> Response {
    if let Some(csp) = response
        .headers_mut()
        .get_mut(header::CONTENT_SECURITY_POLICY)
    {
        *csp = HeaderValue::from_static(CLUSTER_CSP);
    }
    response
}

/// Any other address: a page saying so, with the way to the lobby (a bare 404 leaves a person
/// on the browser's own error page).
pub fn not_found() -> Response {
    let mut response = asset("not-found.html");
    *response.status_mut() = StatusCode::NOT_FOUND;
    response
}

/// The page, naming the cluster's nodes (their public URLs) for it to find its room's home
/// node (`huddle_signal_proto::home`) without a detour through another.
pub fn page_with_nodes(urls: &[String]) -> Response {
    let mut response = asset("index.html");
    let Some((_, _, body)) = ASSETS.iter().find(|(n, _, _)| *n == "index.html") else {
        return response;
    };
    let listed = urls
        .iter()
        .map(|u| escape_attribute(u))
        .collect::<Vec<_>>()
        .join(" ");
    let page = String::from_utf8_lossy(body).replacen(
        NODES_META,
        &format!(r#"<meta name="huddle-nodes" content="{listed}">"#),
        1,
    );
    *response.body_mut() = page.into();
    response
}

/// Where `page_with_nodes` writes the list into web/index.html.
const NODES_META: &str = r#"<meta name="huddle-nodes" content="">"#;

fn escape_attribute(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('"', "&quot;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Serves an embedded file by name, or 404.
pub fn asset(name: &str) -> Response {
    let Some((_, mime, body)) = ASSETS.iter().find(|(n, _, _)| *n == name) else {
        return (StatusCode::NOT_FOUND, "no such file\n").into_response();
    };
    let mut response = (*body).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(mime));
    // Pages and modules change with the binary; revalidating costs little on a LAN.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}
