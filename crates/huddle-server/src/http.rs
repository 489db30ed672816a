//! The HTTP surface: pages, `/ws`, health, metrics and the ICE-server API.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Extension, Path, Request, State, WebSocketUpgrade};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::{any, delete, get, post};
use http_body_util::BodyExt;

use crate::connections::Activity;
use crate::hub::Hub;
use crate::ice::IceServers;
use crate::media::routes;
pub use crate::rate_limit::PerIpRate;
use crate::{metrics, web};

/// Frames above this are refused by the WebSocket layer itself (close 1009), so a hostile client
/// cannot make the server buffer much; between the core's own limits (64 KiB, or 1 MiB for an
/// SFU room's SDP) and this, the client gets the core's `too-large` error saying why.
const WS_MAX_MESSAGE: usize = 2 * 1024 * 1024;

#[derive(Clone)]
pub struct AppState {
    pub hub: Hub,
    /// This node's cluster, when it is one of several.
    pub cluster: Option<crate::cluster::Cluster>,
    pub ice: IceServers,
    /// The listen address as a URL host, for requests without a Host header.
    pub local_host: String,
    pub turn: Option<crate::turn::Turn>,
    pub media: Option<crate::media::Media>,
    pub api_rate: PerIpRate,
    /// Failed authentications per client IP: past the budget, WebSocket upgrades are refused.
    pub auth_failures: PerIpRate,
    /// Access-token keys; empty: everything is open.
    pub keys: huddle_access::Keys,
    /// Tokens and identities admins removed from rooms.
    pub revocations: crate::revocations::Revocations,
    /// Open WebSockets per client address (over HTTP/2, many share one connection).
    pub ws_per_client: Arc<crate::connections::PerIp>,
}

/// SDP offers are a few KiB; anything this large is not one.
pub const SDP_MAX: usize = 64 * 1024;

/// How much of a body over the limit is read and thrown away before the 413 goes out, so that
/// the client, still sending, reads the answer instead of a reset (nginx's lingering close).
const DRAIN_MAX: usize = 4 << 20;

/// The web client; on a cluster it names the nodes, so that a page connects to its room's
/// home node first.
async fn page(State(state): State<AppState>) -> Response {
    match &state.cluster {
        Some(cluster) => web::page_with_nodes(&cluster.node_urls()),
        None => web::asset("index.html"),
    }
}

/// Prometheus's text exposition format.
const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

pub fn router(state: AppState) -> Router {
    // What costs a media session or TURN credentials: rate-limited per client IP.
    let rated = Router::new()
        .route("/api/ice-servers", get(ice_servers))
        .route("/offer", post(routes::offer))
        .route("/whip/{room}", post(routes::whip).options(routes::options))
        .route("/whep/{room}", post(routes::whep).options(routes::options))
        .route_layer(middleware::from_fn_with_state(state.clone(), api_rate));
    let router = Router::new()
        .route("/", get(page))
        .route("/r/{room}", get(page))
        .route(
            "/assets/{file}",
            get(|Path(file): Path<String>| async move { web::asset(&file) }),
        )
        // `any`: WebSockets come as GET over HTTP/1.1 and as CONNECT over HTTP/2 (RFC 8441).
        .route("/ws", any(ws))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/metrics", get(metrics))
        .route("/api/cluster", get(cluster))
        .route("/echo", get(|| async { web::asset("echo.html") }))
        .merge(rated)
        .route(
            "/whip/{room}/{resource}",
            delete(routes::delete)
                .patch(routes::patch)
                .options(routes::options),
        )
        .route(
            "/whep/{room}/{resource}",
            delete(routes::delete)
                .patch(routes::patch)
                .options(routes::options),
        )
        .fallback(|| async { web::not_found() });
    let router = if state.cluster.is_some() {
        router.layer(middleware::map_response(web::cluster_csp))
    } else {
        router
    };
    router.with_state(state)
}

async fn api_rate(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
    next: Next,
) -> Response {
    if state.api_rate.admit(peer.ip(), Instant::now()) {
        return next.run(request).await;
    }
    let message = "too many requests from this address; try again in a few seconds";
    let whip = ["/whip/", "/whep/"]
        .iter()
        .any(|p| request.uri().path().starts_with(p));
    let mut r = if whip {
        routes::with_cors(routes::text(StatusCode::TOO_MANY_REQUESTS, message.into()))
    } else {
        routes::json_error(StatusCode::TOO_MANY_REQUESTS, message.into())
    };
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("2"));
    r
}

/// The access token of a request: `Authorization: Bearer …`, or LiveKit's `?access_token=`.
pub fn bearer_token(headers: &HeaderMap, uri: &axum::http::Uri) -> Option<String> {
    let header = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty());
    if let Some(token) = header {
        return Some(token.to_owned());
    }
    uri.query()?
        .split('&')
        .find_map(|pair| pair.strip_prefix("access_token="))
        .filter(|t| !t.is_empty())
        .map(str::to_owned)
}

/// Why a request's token was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum TokenRefusal {
    #[error("an access token is required (Authorization: Bearer …)")]
    Missing,
    #[error(transparent)]
    Bad(#[from] huddle_access::TokenError),
}

/// Seconds since the Unix epoch, what tokens expire by.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A request body over its limit.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("the body is over {} KiB", .0 / 1024)]
    TooLarge(usize),
    #[error("the body could not be read: {0}")]
    Broken(axum::Error),
    #[error("the body did not arrive within {} s", BODY_DEADLINE.as_secs())]
    TooSlow,
}

impl BodyError {
    pub fn status(&self) -> StatusCode {
        match self {
            Self::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Broken(_) => StatusCode::BAD_REQUEST,
            Self::TooSlow => StatusCode::REQUEST_TIMEOUT,
        }
    }
}

/// How long a body may take to arrive whole: a request trickled in is a connection held.
const BODY_DEADLINE: std::time::Duration = std::time::Duration::from_secs(30);

/// Reads a body of at most `limit` bytes within [`BODY_DEADLINE`]. One that is larger is read
/// on (and thrown away) up to [`DRAIN_MAX`] before the error, so that the client gets to read
/// the 413.
pub async fn read_body(body: Body, limit: usize) -> Result<Bytes, BodyError> {
    tokio::time::timeout(BODY_DEADLINE, read_within(body, limit))
        .await
        .unwrap_or(Err(BodyError::TooSlow))
}

async fn read_within(body: Body, limit: usize) -> Result<Bytes, BodyError> {
    let mut body = body;
    let mut kept = Vec::new();
    let mut seen = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(BodyError::Broken)?;
        let Ok(data) = frame.into_data() else {
            continue; // trailers
        };
        seen += data.len();
        if seen > DRAIN_MAX {
            break;
        }
        if seen <= limit {
            kept.extend_from_slice(&data);
        }
    }
    if seen > limit {
        return Err(BodyError::TooLarge(limit));
    }
    Ok(Bytes::from(kept))
}

async fn ws(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    activity: Option<Extension<Arc<Activity>>>,
    headers: HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Response {
    if state.auth_failures.exhausted(peer.ip(), Instant::now()) {
        let mut r = (
            StatusCode::TOO_MANY_REQUESTS,
            "too many refused access tokens from this address; try again in a minute\n",
        )
            .into_response();
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("60"));
        return r;
    }
    let Some(slot) = state.ws_per_client.take(peer.ip()) else {
        let why = "too many open WebSockets from this address\n";
        return (StatusCode::TOO_MANY_REQUESTS, why).into_response();
    };
    let host = request_host(&headers, &state);
    let refusals = (state.auth_failures.clone(), peer.ip());
    // The connection stays busy while the socket is open (an HTTP/2 one carries it as a stream).
    let busy = activity.map(|Extension(a)| a.begin());
    upgrade
        // tungstenite's default is a 128 KiB read buffer per socket; signaling frames are small,
        // the buffer grows for a large one, and idle rooms of thousands stay cheap.
        .read_buffer_size(4 * 1024)
        .write_buffer_size(0)
        .max_message_size(WS_MAX_MESSAGE)
        .max_frame_size(WS_MAX_MESSAGE)
        .on_upgrade(move |socket| async move {
            state.hub.serve_socket(socket, host, refusals).await;
            drop((busy, slot));
        })
}

/// The host the client used to reach us, for URLs it can reach back; our address without one.
fn request_host(headers: &HeaderMap, state: &AppState) -> String {
    headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(|h| crate::ice::host_only(h).to_owned())
        .unwrap_or_else(|| state.local_host.clone())
}

async fn metrics(State(state): State<AppState>) -> Response {
    let Some(stats) = state.hub.stats().await else {
        return (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n").into_response();
    };
    let mut text = metrics::render(&stats);
    if let Some(cluster) = &state.cluster {
        text.push_str(&metrics::render_node(cluster.node_id()));
    }
    if let Some(turn) = &state.turn {
        let (turn_stats, allocations) = turn.stats();
        text.push_str(&metrics::render_turn(&turn_stats, allocations));
    }
    if let Some(media) = &state.media
        && let Some(stats) = media.stats().await
    {
        text.push_str(&metrics::render_media(&stats, &media.counters));
    }
    ([(header::CONTENT_TYPE, METRICS_CONTENT_TYPE)], text).into_response()
}

/// The cluster's nodes, their load and their rooms: for a token with `roomList`, or from
/// loopback on a server without keys.
async fn cluster(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    uri: axum::http::Uri,
) -> Response {
    if state.keys.is_empty() {
        if !peer.ip().is_loopback() {
            let why = "the cluster is shown to loopback only on a server without access keys";
            return routes::json_error(StatusCode::FORBIDDEN, why.into());
        }
    } else {
        let checked = bearer_token(&headers, &uri)
            .ok_or(TokenRefusal::Missing)
            .and_then(|t| state.keys.decode(&t, unix_now()).map_err(TokenRefusal::Bad));
        match checked {
            Err(refusal) => {
                return routes::json_error(StatusCode::UNAUTHORIZED, refusal.to_string());
            }
            Ok(access) if !access.grant.can_list() => {
                let why = "listing the cluster needs a token with roomList".to_owned();
                return routes::json_error(StatusCode::FORBIDDEN, why);
            }
            Ok(_) => {}
        }
    }
    let Some(cluster) = &state.cluster else {
        let why = "this server is not part of a cluster (no --redis)".to_owned();
        return routes::json_error(StatusCode::NOT_FOUND, why);
    };
    let view = cluster.view();
    let rooms = match cluster.rooms().await {
        Ok(rooms) => rooms,
        Err(e) => {
            let why = format!("the cluster's Redis does not answer: {e}");
            return routes::json_error(StatusCode::SERVICE_UNAVAILABLE, why);
        }
    };
    let rooms: Vec<serde_json::Value> = rooms
        .into_iter()
        .map(
            |(room, node, fence)| serde_json::json!({ "room": room, "node": node, "fence": fence }),
        )
        .collect();
    Json(serde_json::json!({
        "node": cluster.node_id(),
        "reachable": view.reachable,
        "nodes": view.nodes,
        "rooms": rooms,
    }))
    .into_response()
}

async fn ice_servers(
    State(state): State<AppState>,
    headers: HeaderMap,
    uri: axum::http::Uri,
) -> Response {
    if !state.keys.is_empty() {
        let now = unix_now();
        let checked = bearer_token(&headers, &uri)
            .ok_or(TokenRefusal::Missing)
            .and_then(|t| state.keys.decode(&t, now).map_err(TokenRefusal::Bad));
        match checked {
            Err(refusal) => {
                return routes::json_error(StatusCode::UNAUTHORIZED, refusal.to_string());
            }
            Ok(access) => {
                let room = access.grant.room.clone().unwrap_or_default();
                if state.revocations.refuses(&room, &access, now) {
                    let why = "you were removed from this room".to_owned();
                    return routes::json_error(StatusCode::FORBIDDEN, why);
                }
            }
        }
    }
    let host = request_host(&headers, &state);
    Json(serde_json::json!({ "iceServers": state.ice.for_peer("api", &host) })).into_response()
}

/// `huddle turn`'s own HTTP surface, plain HTTP as coturn's Prometheus exporter is: the TURN
/// server's counters at `/metrics`, and `/healthz`.
pub fn turn_metrics_router(turn: crate::turn::Turn) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/metrics", get(turn_metrics))
        .with_state(turn)
}

async fn turn_metrics(State(turn): State<crate::turn::Turn>) -> Response {
    let (stats, allocations) = turn.stats();
    let text = metrics::render_turn(&stats, allocations);
    ([(header::CONTENT_TYPE, METRICS_CONTENT_TYPE)], text).into_response()
}
