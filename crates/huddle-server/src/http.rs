//! The HTTP surface: pages, `/ws`, health, metrics and the ICE-server API.

use axum::Router;
use axum::extract::{Path, State, WebSocketUpgrade};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::get;

use crate::hub::Hub;
use crate::ice::IceServers;
use crate::{metrics, web};

/// Frames above this are refused by the WebSocket layer itself, before the core's own (smaller)
/// message limit, so a hostile client cannot make the server buffer megabytes.
const WS_MAX_MESSAGE: usize = 1 << 20;

#[derive(Clone)]
pub struct AppState {
    pub hub: Hub,
    pub ice: IceServers,
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/", get(|| async { web::asset("index.html") }))
        .route("/r/{room}", get(|| async { web::asset("index.html") }))
        .route(
            "/assets/{file}",
            get(|Path(file): Path<String>| async move { web::asset(&file) }),
        )
        .route("/ws", get(ws))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/metrics", get(metrics))
        .route("/api/ice-servers", get(ice_servers))
        .with_state(state)
}

async fn ws(State(state): State<AppState>, upgrade: WebSocketUpgrade) -> Response {
    upgrade
        .max_message_size(WS_MAX_MESSAGE)
        .max_frame_size(WS_MAX_MESSAGE)
        .on_upgrade(move |socket| state.hub.serve_socket(socket))
}

async fn metrics(State(state): State<AppState>) -> Response {
    match state.hub.stats().await {
        Some(stats) => (
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            metrics::render(&stats),
        )
            .into_response(),
        None => (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n").into_response(),
    }
}

async fn ice_servers(State(state): State<AppState>) -> Response {
    Json(serde_json::json!({ "iceServers": state.ice.for_peer("api") })).into_response()
}
