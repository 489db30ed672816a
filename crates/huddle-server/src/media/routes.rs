//! HTTP entry points of the media peer: aiortc's `POST /offer`, WHIP (RFC 9725) ingest and WHEP
//! playback. Every refusal says what was wrong in its body.

use axum::body::Body;
use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Json, Response};
use huddle_access::{Access, Source};
use huddle_media::{OfferError, OfferRequest, SessionKind};
use huddle_signal_proto::{Placement, RoomName};

use super::{AcceptError, Accepted, Media, Requester};
use crate::http::{AppState, SDP_MAX, TokenRefusal, bearer_token, read_body, unix_now};

/// `POST /offer`: `{"sdp", "type": "offer", "video_transform"}` → `{"sdp", "type": "answer"}`.
pub async fn offer(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    body: Body,
) -> Response {
    let body = match read_body(body, SDP_MAX).await {
        Ok(body) => body,
        Err(e) => return json_error(e.status(), e.to_string()),
    };
    let Some(media) = state.media else {
        return json_error(StatusCode::SERVICE_UNAVAILABLE, OFF.to_owned());
    };
    let request = match OfferRequest::decode(&body) {
        Ok(r) => r,
        Err(e) => return json_error(StatusCode::BAD_REQUEST, e.to_string()),
    };
    let from = Requester {
        client: crate::rate_limit::client_key(peer.ip()),
        owner: None,
    };
    match media
        .accept(SessionKind::Echo(request.transform), request.sdp, from)
        .await
    {
        Ok(Ok(Accepted { answer, .. })) => {
            Json(serde_json::json!({ "sdp": answer, "type": "answer" })).into_response()
        }
        Ok(Err(e)) => json_error(offer_status(&e), offer_message(&e)),
        Err(unavailable) => json_error(StatusCode::SERVICE_UNAVAILABLE, unavailable.to_string()),
    }
}

/// `POST /whip/{room}`: publish into a room.
pub async fn whip(
    state: State<AppState>,
    peer: ConnectInfo<SocketAddr>,
    room: Path<String>,
    headers: HeaderMap,
    uri: Uri,
    body: Body,
) -> Response {
    ingest_or_playback(state, peer, room, headers, uri, body, Direction::Whip).await
}

/// `POST /whep/{room}`: watch a room.
pub async fn whep(
    state: State<AppState>,
    peer: ConnectInfo<SocketAddr>,
    room: Path<String>,
    headers: HeaderMap,
    uri: Uri,
    body: Body,
) -> Response {
    ingest_or_playback(state, peer, room, headers, uri, body, Direction::Whep).await
}

#[derive(Clone, Copy)]
enum Direction {
    Whip,
    Whep,
}

async fn ingest_or_playback(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(room): Path<String>,
    headers: HeaderMap,
    uri: Uri,
    body: Body,
    direction: Direction,
) -> Response {
    let Some(media) = state.media.clone() else {
        return with_cors(off());
    };
    // The canonical name (case-folded) is what tokens and rooms are compared by.
    let room = match RoomName::parse(&room) {
        Ok(r) => r.as_str().to_owned(),
        Err(e) => return with_cors(text(StatusCode::BAD_REQUEST, format!("room name: {e}"))),
    };
    let owner = match refuse_access(&state, &media, &headers, &uri, &room) {
        Ok(owner) => owner,
        Err(refusal) => return with_cors(refusal.into_response()),
    };
    // On a cluster the room's media is on one node: another node's request goes there.
    if let Some(cluster) = &state.cluster {
        match cluster.locate(room.clone()).await {
            Placement::Here => {}
            Placement::Elsewhere { url } => return with_cors(redirect(&url, &uri)),
            Placement::Unavailable { why } => {
                return with_cors(text(StatusCode::SERVICE_UNAVAILABLE, why));
            }
        }
    }
    let sdp_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !sdp_type.trim().eq_ignore_ascii_case("application/sdp") {
        return with_cors(text(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("the offer must be sent as Content-Type: application/sdp, not {sdp_type:?}"),
        ));
    }
    let body = match read_body(body, SDP_MAX).await {
        Ok(body) => body,
        Err(e) => return with_cors(text(e.status(), e.to_string())),
    };
    let Ok(offer) = String::from_utf8(body.to_vec()) else {
        return with_cors(text(
            StatusCode::BAD_REQUEST,
            "the SDP offer is not UTF-8".into(),
        ));
    };
    if let Some(access) = &owner
        && let Err(why) = granted(access, direction, &offer)
    {
        return with_cors(text(StatusCode::FORBIDDEN, why));
    }
    let (kind, prefix) = match direction {
        Direction::Whip => (SessionKind::Publish { room: room.clone() }, "whip"),
        Direction::Whep => (SessionKind::Watch { room: room.clone() }, "whep"),
    };
    let from = Requester {
        client: crate::rate_limit::client_key(peer.ip()),
        owner: owner.map(|a| (a.revocation_id.clone(), a.holder())),
    };
    match media.accept(kind, offer, from).await {
        Ok(Ok(Accepted { answer, resource })) => {
            let mut r = (StatusCode::CREATED, answer).into_response();
            let h = r.headers_mut();
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/sdp"),
            );
            // Publish and watch sessions always have a resource name.
            if let Some(v) = resource
                .and_then(|name| HeaderValue::from_str(&format!("/{prefix}/{room}/{name}")).ok())
            {
                h.insert(header::LOCATION, v);
            }
            with_cors(r)
        }
        Ok(Err(e)) => with_cors(text(offer_status(&e), offer_message(&e))),
        Err(unavailable) => with_cors(text(
            StatusCode::SERVICE_UNAVAILABLE,
            unavailable.to_string(),
        )),
    }
}

/// `307 Temporary Redirect` to the same request on the node at `node_url`: the client sends
/// its offer again there (WHIP, RFC 9725, lets an endpoint redirect), and the session's
/// `Location` is then that node's.
fn redirect(node_url: &str, uri: &Uri) -> Response {
    let target = match uri.path_and_query() {
        Some(path) => format!("{node_url}{path}"),
        None => node_url.to_owned(),
    };
    match HeaderValue::from_str(&target) {
        Ok(location) => {
            let mut r = text(
                StatusCode::TEMPORARY_REDIRECT,
                format!("this room is served by {node_url}"),
            );
            r.headers_mut().insert(header::LOCATION, location);
            r
        }
        Err(_) => text(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the room's node has an unusable URL".into(),
        ),
    }
}

/// Whether the token's grant covers this request: WHIP publishing the offer's sources (audio
/// is the microphone, video the camera), WHEP subscribing.
fn granted(access: &Access, direction: Direction, offer: &str) -> Result<(), String> {
    let grant = &access.grant;
    match direction {
        Direction::Whep if !grant.can_subscribe() => {
            Err("the token does not allow watching (canSubscribe)".into())
        }
        Direction::Whep => Ok(()),
        Direction::Whip => {
            let sections = [
                ("m=audio ", Source::Microphone),
                ("m=video ", Source::Camera),
            ];
            match sections.into_iter().find(|(m, source)| {
                offer.lines().any(|l| l.starts_with(m)) && !grant.can_publish_source(*source)
            }) {
                Some((_, source)) => Err(format!(
                    "the token does not allow publishing {} (canPublish, canPublishSources)",
                    source.name()
                )),
                None => Ok(()),
            }
        }
    }
}

/// `DELETE /whip/{room}/{resource}` and `/whep/…`: end the session.
pub async fn delete(
    State(state): State<AppState>,
    Path((room, resource)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let Some(media) = state.media.clone() else {
        return with_cors(off());
    };
    // The unguessable resource name is the capability to end the session (a stream may
    // outlive its token); `--whip-token`, where set, is still asked for.
    if state.keys.is_empty()
        && let Err(refusal) = whip_token_check(&media, bearer_token(&headers, &Uri::default()))
    {
        return with_cors(refusal.into_response());
    }
    let room = RoomName::parse(&room).map_or(room, |r| r.as_str().to_owned());
    let r = match media.delete(room, resource).await {
        Ok(true) => StatusCode::OK.into_response(),
        Ok(false) => text(
            StatusCode::NOT_FOUND,
            "no such session (it may have ended already)".into(),
        ),
        Err(unavailable) => text(StatusCode::SERVICE_UNAVAILABLE, unavailable.to_string()),
    };
    with_cors(r)
}

/// Trickle ICE and ICE restarts (`PATCH`) are not supported: the answer carries every server
/// candidate, so a client has nothing to wait for (RFC 9725 §4.3.1 allows 405).
pub async fn patch() -> Response {
    let mut r = text(
        StatusCode::METHOD_NOT_ALLOWED,
        "trickle ICE is not needed: the answer has all of the server's candidates".into(),
    );
    r.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static("DELETE"));
    with_cors(r)
}

/// CORS preflight, and WHIP's way to advertise the accepted offer type.
pub async fn options() -> Response {
    let mut r = StatusCode::NO_CONTENT.into_response();
    r.headers_mut()
        .insert("accept-post", HeaderValue::from_static("application/sdp"));
    with_cors(r)
}

/// Why a WHIP/WHEP request's token was not enough.
enum Refusal {
    /// No token, or one that is not good (401).
    Unauthorized(String),
    /// A good token that does not allow this (403).
    Forbidden(String),
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        match self {
            Refusal::Unauthorized(why) => challenge(why),
            Refusal::Forbidden(why) => text(StatusCode::FORBIDDEN, why),
        }
    }
}

/// The token of a WHIP/WHEP request for `room`: `Ok(Some)` with access keys (a room token, not
/// removed from the room), `Ok(None)` without keys when `--whip-token` (if set) matches.
fn refuse_access(
    state: &AppState,
    media: &Media,
    headers: &HeaderMap,
    uri: &Uri,
    room: &str,
) -> Result<Option<Access>, Refusal> {
    let given = bearer_token(headers, uri);
    if state.keys.is_empty() {
        return whip_token_check(media, given).map(|()| None);
    }
    let token = given.ok_or_else(|| Refusal::Unauthorized(TokenRefusal::Missing.to_string()))?;
    let now = unix_now();
    let access = state
        .keys
        .decode(&token, now)
        .map_err(|e| Refusal::Unauthorized(e.to_string()))?;
    access
        .admit(room)
        .map_err(|e| Refusal::Forbidden(e.to_string()))?;
    if state.revocations.refuses(room, &access, now) {
        return Err(Refusal::Forbidden("you were removed from this room".into()));
    }
    Ok(Some(access))
}

/// Without access keys: refused when `--whip-token` is set and `given` is not it.
fn whip_token_check(media: &Media, given: Option<String>) -> Result<(), Refusal> {
    let Some(expected) = media.config.whip_token.as_ref() else {
        return Ok(());
    };
    let given = given.unwrap_or_default();
    aws_lc_rs::constant_time::verify_slices_are_equal(given.as_bytes(), expected.as_bytes())
        .map_err(|_| {
            Refusal::Unauthorized(
                "a valid bearer token is required (Authorization: Bearer …)".into(),
            )
        })
}

/// A 401 asking for a bearer token.
fn challenge(why: String) -> Response {
    let mut r = text(StatusCode::UNAUTHORIZED, why);
    r.headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    r
}

fn offer_status(e: &AcceptError) -> StatusCode {
    match e {
        AcceptError::TooManyFromAddress(_) => StatusCode::TOO_MANY_REQUESTS,
        AcceptError::Offer(OfferError::Full(_)) => StatusCode::SERVICE_UNAVAILABLE,
        AcceptError::Offer(OfferError::RoomTaken(_)) => StatusCode::CONFLICT,
        _ => StatusCode::BAD_REQUEST,
    }
}

/// str0m's SDP parse errors carry the parser's internals (a pointer offset, its grammar
/// notes); keep what a person can act on: the unexpected and expected tokens.
fn offer_message(e: &AcceptError) -> String {
    match e {
        AcceptError::Offer(OfferError::BadSdp(detail)) => {
            let useful: Vec<&str> = detail
                .lines()
                .map(str::trim)
                .filter(|l| l.starts_with("Unexpected") || l.starts_with("Expected"))
                .collect();
            if useful.is_empty() {
                "the SDP offer does not parse".to_owned()
            } else {
                format!("the SDP offer does not parse: {}", useful.join("; "))
            }
        }
        other => other.to_string(),
    }
}

const OFF: &str = "the media peer is turned off on this server";

fn off() -> Response {
    text(StatusCode::SERVICE_UNAVAILABLE, OFF.into())
}

pub(crate) fn text(status: StatusCode, message: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        message + "\n",
    )
        .into_response()
}

pub(crate) fn json_error(status: StatusCode, message: String) -> Response {
    (status, Json(serde_json::json!({ "error": message }))).into_response()
}

/// WHIP/WHEP clients are often pages on other origins (players, dashboards).
pub(crate) fn with_cors(mut r: Response) -> Response {
    let h = r.headers_mut();
    h.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("POST, DELETE, PATCH, OPTIONS"),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("Authorization, Content-Type, If-Match"),
    );
    h.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static("Location, Accept-Post"),
    );
    r
}
