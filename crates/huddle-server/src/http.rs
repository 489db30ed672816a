//! The HTTP surface: pages, `/ws`, health, metrics and the ICE-server API.

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::extract::{Path, State, WebSocketUpgrade};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::{any, delete, get, post};

use crate::hub::Hub;
use crate::ice::IceServers;
use crate::media::routes;
use crate::{metrics, web};

/// Frames above this are refused by the WebSocket layer itself, before the core's own (smaller)
/// message limit, so a hostile client cannot make the server buffer megabytes.
const WS_MAX_MESSAGE: usize = 1 << 20;

#[derive(Clone)]
pub struct AppState {
    pub hub: Hub,
    pub ice: IceServers,
    /// The listen address as a URL host, for requests without a Host header.
    pub local_host: String,
    pub turn: Option<crate::turn::Turn>,
    pub media: Option<crate::media::Media>,
}

/// SDP offers are a few KiB; anything this large is not one.
const SDP_MAX: usize = 64 * 1024;

/// Prometheus's text exposition format.
const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/", get(|| async { web::asset("index.html") }))
        .route("/r/{room}", get(|| async { web::asset("index.html") }))
        .route(
            "/assets/{file}",
            get(|Path(file): Path<String>| async move { web::asset(&file) }),
        )
        // `any`: WebSockets come as GET over HTTP/1.1 and as CONNECT over HTTP/2 (RFC 8441).
        .route("/ws", any(ws))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/metrics", get(metrics))
        .route("/api/ice-servers", get(ice_servers))
        .route("/echo", get(|| async { web::asset("echo.html") }))
        .route("/offer", post(routes::offer))
        .route("/whip/{room}", post(routes::whip).options(routes::options))
        .route("/whep/{room}", post(routes::whep).options(routes::options))
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
        .layer(DefaultBodyLimit::max(SDP_MAX))
        .with_state(state)
}

async fn ws(
    State(state): State<AppState>,
    headers: HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Response {
    let host = request_host(&headers, &state);
    upgrade
        // tungstenite's default is a 128 KiB read buffer per socket; signaling frames are small,
        // the buffer grows for a large one, and idle rooms of thousands stay cheap.
        .read_buffer_size(4 * 1024)
        .write_buffer_size(0)
        .max_message_size(WS_MAX_MESSAGE)
        .max_frame_size(WS_MAX_MESSAGE)
        .on_upgrade(move |socket| state.hub.serve_socket(socket, host))
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

async fn ice_servers(State(state): State<AppState>, headers: HeaderMap) -> Response {
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
