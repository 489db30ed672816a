//! HTTP entry points of the media peer: aiortc's `POST /offer`, WHIP (RFC 9725) ingest and WHEP
//! playback. Every refusal says what was wrong in its body.

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Json, Response};
use huddle_media::{OfferError, OfferRequest, SessionKind};
use huddle_signal_proto::RoomName;

use super::{Accepted, Media};
use crate::http::{AppState, SDP_MAX, TokenRefusal, bearer_token, read_body, unix_now};

/// `POST /offer`: `{"sdp", "type": "offer", "video_transform"}` → `{"sdp", "type": "answer"}`.
pub async fn offer(State(state): State<AppState>, body: Body) -> Response {
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
    match media
        .accept(SessionKind::Echo(request.transform), request.sdp)
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
    room: Path<String>,
    headers: HeaderMap,
    uri: Uri,
    body: Body,
) -> Response {
    ingest_or_playback(state, room, headers, uri, body, Direction::Whip).await
}

/// `POST /whep/{room}`: watch a room.
pub async fn whep(
    state: State<AppState>,
    room: Path<String>,
    headers: HeaderMap,
    uri: Uri,
    body: Body,
) -> Response {
    ingest_or_playback(state, room, headers, uri, body, Direction::Whep).await
}

#[derive(Clone, Copy)]
enum Direction {
    Whip,
    Whep,
}

async fn ingest_or_playback(
    State(state): State<AppState>,
    Path(room): Path<String>,
    headers: HeaderMap,
    uri: Uri,
    body: Body,
    direction: Direction,
) -> Response {
    let Some(media) = state.media.clone() else {
        return with_cors(off());
    };
    let need = match direction {
        Direction::Whip => Need::Publish,
        Direction::Whep => Need::Subscribe,
    };
    if let Some(r) = refuse_access(&state, &media, &headers, &uri, &room, need) {
        return with_cors(r);
    }
    let room = match RoomName::parse(&room) {
        Ok(r) => r.as_str().to_owned(),
        Err(e) => return with_cors(text(StatusCode::BAD_REQUEST, format!("room name: {e}"))),
    };
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
    let (kind, prefix) = match direction {
        Direction::Whip => (SessionKind::Publish { room: room.clone() }, "whip"),
        Direction::Whep => (SessionKind::Watch { room: room.clone() }, "whep"),
    };
    match media.accept(kind, offer).await {
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

/// `DELETE /whip/{room}/{resource}` and `/whep/…`: end the session.
pub async fn delete(
    State(state): State<AppState>,
    Path((room, resource)): Path<(String, String)>,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    let Some(media) = state.media.clone() else {
        return with_cors(off());
    };
    if let Some(r) = refuse_access(&state, &media, &headers, &uri, &room, Need::Join) {
        return with_cors(r);
    }
    let r = match media.delete(resource).await {
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

/// What a WHIP/WHEP request's token must grant.
#[derive(Clone, Copy)]
enum Need {
    /// Entry to the room (ending one's own session).
    Join,
    /// WHIP: publishing.
    Publish,
    /// WHEP: subscribing.
    Subscribe,
}

/// The refusal for a request that may not do `need` in `room`; `None` when it may. With access
/// keys the bearer token is a room token (LiveKit's); without, `--whip-token` if one is set.
fn refuse_access(
    state: &AppState,
    media: &Media,
    headers: &HeaderMap,
    uri: &Uri,
    room: &str,
    need: Need,
) -> Option<Response> {
    let given = bearer_token(headers, uri);
    if !state.keys.is_empty() {
        let Some(token) = given else {
            return Some(challenge(TokenRefusal::Missing.to_string()));
        };
        let access = match state.keys.decode(&token, unix_now()) {
            Ok(access) => access,
            Err(e) => return Some(challenge(e.to_string())),
        };
        let allowed = access
            .admit(room)
            .map_err(|e| e.to_string())
            .and_then(|()| match need {
                Need::Publish if !access.grant.can_publish() => {
                    Err("the token does not allow publishing (canPublish)".to_owned())
                }
                Need::Subscribe if !access.grant.can_subscribe() => {
                    Err("the token does not allow watching (canSubscribe)".to_owned())
                }
                _ => Ok(()),
            });
        return allowed.err().map(|why| text(StatusCode::FORBIDDEN, why));
    }
    let expected = media.config.whip_token.as_ref()?;
    let given = given.unwrap_or_default();
    if aws_lc_rs::constant_time::verify_slices_are_equal(given.as_bytes(), expected.as_bytes())
        .is_ok()
    {
        return None;
    }
    Some(challenge(
        "a valid bearer token is required (Authorization: Bearer …)".into(),
    ))
}

/// A 401 asking for a bearer token.
fn challenge(why: String) -> Response {
    let mut r = text(StatusCode::UNAUTHORIZED, why);
    r.headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    r
}

fn offer_status(e: &OfferError) -> StatusCode {
    match e {
        OfferError::Full(_) => StatusCode::SERVICE_UNAVAILABLE,
        OfferError::RoomTaken(_) => StatusCode::CONFLICT,
        _ => StatusCode::BAD_REQUEST,
    }
}

/// str0m's SDP parse errors carry the parser's internals (a pointer offset, its grammar
/// notes); keep what a person can act on: the unexpected and expected tokens.
fn offer_message(e: &OfferError) -> String {
    match e {
        OfferError::BadSdp(detail) => {
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
