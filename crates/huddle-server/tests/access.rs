//! A server with access keys, over real sockets: joins, WHIP, WHEP and ICE servers with and
//! without tokens, moderation, and an address that keeps failing.

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{Event, TestServer};
use huddle_access::{Claims, Keys};
use huddle_server::{Config, MediaConfig};
use huddle_signal_proto::{ErrorCode, LeaveReason, PROTOCOL_VERSION, ServerMessage, close_code};
use serde_json::json;

const KEY: &str = "main:0123456789abcdef0123456789abcdef";

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn token(identity: &str, room: &str, edit: impl FnOnce(&mut Claims)) -> String {
    let mut claims = Claims::for_room(identity, room, now(), 600);
    edit(&mut claims);
    Keys::parse_list(&[KEY])
        .unwrap()
        .mint("main", &claims)
        .unwrap()
}

async fn server() -> TestServer {
    let mut config = Config::plain("127.0.0.1:0".parse().unwrap());
    config.rooms.access = Keys::parse_list(&[KEY]).unwrap();
    config.media = Some(MediaConfig::new("127.0.0.1:0".parse().unwrap()));
    TestServer::with(config).await
}

fn join(room: &str, name: &str, token: Option<&str>) -> serde_json::Value {
    json!({"type": "join", "v": PROTOCOL_VERSION, "room": room, "name": name, "token": token})
}

/// The error a refused join gets, and the close code after it.
async fn refused(client: &mut common::Client) -> (ErrorCode, String, Option<u16>) {
    let (code, message) = match client.next_msg().await {
        ServerMessage::Error { code, message } => (code, message),
        other => panic!("expected an error, got {other:?}"),
    };
    let close = match client.next().await {
        Event::Closed(frame) => frame.map(|(c, _)| u16::from(c)),
        other => panic!("expected the close, got {other:?}"),
    };
    (code, message, close)
}

/// A WHIP/WHEP request with `authorization` (`Bearer …`).
async fn post_sdp(s: &TestServer, path: &str, authorization: &str, sdp: &str) -> common::Response {
    let headers = [
        ("Content-Type", "application/sdp"),
        ("Authorization", authorization),
    ];
    s.request("POST", path, &headers, sdp.as_bytes()).await
}

fn fixture(name: &str) -> String {
    let dir = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../huddle-media/tests/fixtures"
    );
    std::fs::read_to_string(format!("{dir}/{name}")).unwrap()
}

#[tokio::test]
async fn joining_needs_a_token_for_the_room() {
    let s = server().await;
    let mut anon = s.client().await;
    anon.send_json(join("r", "Anon", None)).await;
    let (code, message, close) = refused(&mut anon).await;
    assert_eq!(code, ErrorCode::Unauthorized);
    assert!(message.contains("access token"), "{message}");
    assert_eq!(close, Some(close_code::UNAUTHORIZED));

    let mut elsewhere = s.client().await;
    let wrong = token("eve", "other", |_| {});
    elsewhere.send_json(join("r", "Eve", Some(&wrong))).await;
    let (code, message, close) = refused(&mut elsewhere).await;
    assert_eq!(
        (code, close),
        (ErrorCode::Forbidden, Some(close_code::FORBIDDEN))
    );
    assert!(message.contains("\"other\""), "{message}");

    let mut alice = s.client().await;
    let good = token("alice", "r", |c| c.name = Some("Alice Liddell".into()));
    alice.send_json(join("r", "whatever", Some(&good))).await;
    let ServerMessage::Welcome(w) = alice.next_msg().await else {
        panic!("no welcome")
    };
    assert!(!w.permissions.admin);
    let mut bob = s.client().await;
    bob.send_json(join("r", "Bob", Some(&token("bob", "r", |_| {}))))
        .await;
    let ServerMessage::Welcome(wb) = bob.next_msg().await else {
        panic!("no welcome")
    };
    assert_eq!(wb.peers[0].name, "Alice Liddell", "the token's name wins");
    s.shutdown().await.unwrap();
}

#[tokio::test]
async fn an_admin_removes_someone_whose_link_then_stays_refused() {
    let s = server().await;
    let mut admin = s.client().await;
    let admin_token = token("host", "r", |c| c.video.room_admin = Some(true));
    admin.send_json(join("r", "Host", Some(&admin_token))).await;
    assert!(matches!(admin.next_msg().await, ServerMessage::Welcome(_)));
    let bob_token = token("bob", "r", |_| {});
    let mut bob = s.client().await;
    bob.send_json(join("r", "Bob", Some(&bob_token))).await;
    let ServerMessage::Welcome(wb) = bob.next_msg().await else {
        panic!("no welcome")
    };
    assert!(matches!(
        admin.next_msg().await,
        ServerMessage::PeerJoined { .. }
    ));
    admin
        .send_json(json!({"type": "remove", "id": wb.id}))
        .await;
    assert!(matches!(
        bob.next_msg().await,
        ServerMessage::Removed { .. }
    ));
    assert!(matches!(
        bob.next().await,
        Event::Closed(Some((code, _))) if u16::from(code) == close_code::REMOVED
    ));
    assert!(matches!(
        admin.next_msg().await,
        ServerMessage::PeerLeft {
            reason: LeaveReason::Removed,
            ..
        }
    ));
    let mut again = s.client().await;
    again.send_json(join("r", "Bob", Some(&bob_token))).await;
    let (code, message, _) = refused(&mut again).await;
    assert_eq!(code, ErrorCode::Forbidden);
    assert!(message.contains("removed"), "{message}");
    s.shutdown().await.unwrap();
}

#[tokio::test]
async fn whip_whep_and_ice_servers_need_tokens_with_their_grants() {
    let s = server().await;
    let sdp = [("Content-Type", "application/sdp")];
    let offer = fixture("chromium-sendonly.sdp");
    let bearer = |t: &str| format!("Bearer {t}");

    let r = s.request("POST", "/whip/r", &sdp, offer.as_bytes()).await;
    assert_eq!(r.status, 401);
    assert_eq!(r.header("www-authenticate"), Some("bearer"));
    let viewer = token("viewer", "r", |c| c.video.can_publish = Some(false));
    let auth = bearer(&viewer);
    let r = post_sdp(&s, "/whip/r", &auth, &offer).await;
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(r.body.contains("canPublish"));
    let elsewhere = bearer(&token("p", "other", |_| {}));
    let r = post_sdp(&s, "/whip/r", &elsewhere, &offer).await;
    assert_eq!(r.status, 403);
    let publisher = bearer(&token("p", "r", |_| {}));
    let r = post_sdp(&s, "/whip/r", &publisher, &offer).await;
    assert_eq!(r.status, 201, "{}", r.body);

    let watch = fixture("chromium-recvonly.sdp");
    let deaf = bearer(&token("d", "r", |c| c.video.can_subscribe = Some(false)));
    let r = post_sdp(&s, "/whep/r", &deaf, &watch).await;
    assert_eq!(r.status, 403);
    let r = post_sdp(&s, "/whep/r", &auth, &watch).await;
    assert_eq!(r.status, 201, "{}", r.body);

    assert_eq!(s.get("/api/ice-servers").await.0, 401);
    let expired = token("x", "r", |c| c.exp = Some(now() - 3600));
    let (status, body) = s
        .get(&format!("/api/ice-servers?access_token={expired}"))
        .await;
    assert_eq!(status, 401);
    assert!(body.contains("expired"), "{body}");
    let r = s
        .request("GET", "/api/ice-servers", &[("Authorization", &auth)], b"")
        .await;
    assert_eq!(r.status, 200);
    s.shutdown().await.unwrap();
}

#[tokio::test]
async fn an_address_that_keeps_failing_is_refused_for_a_while() {
    let s = server().await;
    let mut refused_upgrade = false;
    for _ in 0..40 {
        let Ok((ws, _)) = tokio_tungstenite::connect_async(s.ws_url()).await else {
            refused_upgrade = true;
            break;
        };
        let mut c = common::Client { ws };
        c.send_json(join("r", "Guess", Some("not.a.token"))).await;
        let _ = c.next_within(Duration::from_secs(2)).await;
    }
    assert!(
        refused_upgrade,
        "forty bad tokens in a row and still let in"
    );
    // Health is not affected.
    assert_eq!(s.get("/healthz").await.0, 200);
    s.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_removal_reaches_whip_whep_and_ice_servers_and_ends_the_media_session() {
    let s = server().await;
    let mut admin = s.client().await;
    admin
        .send_json(join(
            "r",
            "Host",
            Some(&token("host", "r", |c| c.video.room_admin = Some(true))),
        ))
        .await;
    assert!(matches!(admin.next_msg().await, ServerMessage::Welcome(_)));
    let bob_token = token("bob", "r", |_| {});
    let auth = format!("Bearer {bob_token}");
    let offer = fixture("chromium-sendonly.sdp");
    let r = post_sdp(&s, "/whip/r", &auth, &offer).await;
    assert_eq!(r.status, 201, "{}", r.body);
    let location = r.header("location").unwrap().to_owned();
    let mut bob = s.client().await;
    bob.send_json(join("r", "Bob", Some(&bob_token))).await;
    let ServerMessage::Welcome(wb) = bob.next_msg().await else {
        panic!("no welcome")
    };
    admin
        .send_json(json!({"type": "remove", "id": wb.id}))
        .await;
    assert!(matches!(
        bob.next_msg().await,
        ServerMessage::Removed { .. }
    ));

    // The same token, and a fresh one for the same identity, are refused everywhere.
    let fresh = format!(
        "Bearer {}",
        token("bob", "r", |c| c.jti = Some("fresh".into()))
    );
    let watch = fixture("chromium-recvonly.sdp");
    for bearer in [&auth, &fresh] {
        let r = post_sdp(&s, "/whep/r", bearer, &watch).await;
        assert_eq!(r.status, 403, "{}", r.body);
        assert!(r.body.contains("removed"), "{}", r.body);
        let r = s
            .request("GET", "/api/ice-servers", &[("Authorization", bearer)], b"")
            .await;
        assert_eq!(r.status, 403, "{}", r.body);
    }
    // Bob's WHIP session was ended: its resource is gone.
    let mut gone = false;
    for _ in 0..50 {
        if s.request("DELETE", &location, &[], b"").await.status == 404 {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(gone, "the removed publisher's WHIP session still runs");
    s.shutdown().await.unwrap();
}

#[tokio::test]
async fn grants_and_room_names_are_read_as_livekit_writes_them() {
    let s = server().await;
    // A microphone-only token may not publish video over WHIP.
    let mic = format!(
        "Bearer {}",
        token("m", "r", |c| c.video.can_publish_sources =
            Some(vec![huddle_access::Source::Microphone]))
    );
    let offer = fixture("chromium-sendonly.sdp");
    let r = post_sdp(&s, "/whip/r", &mic, &offer).await;
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(r.body.contains("camera"), "{}", r.body);
    // A token for "Standup" opens the room `standup` (room names fold case), over WS and WHIP.
    let mut c = s.client().await;
    c.send_json(join(
        "standup",
        "Ada",
        Some(&token("ada", "Standup", |_| {})),
    ))
    .await;
    assert!(matches!(c.next_msg().await, ServerMessage::Welcome(_)));
    let upper = format!("Bearer {}", token("p", "Standup", |_| {}));
    let r = post_sdp(&s, "/whip/STANDUP", &upper, &offer).await;
    assert_eq!(r.status, 201, "{}", r.body);
    // A refusal whose words are long still closes with its code (reasons fit a control frame).
    let long = "a".repeat(64);
    let mut refused_client = s.client().await;
    refused_client
        .send_json(join(
            &long,
            "Eve",
            Some(&token("eve", &"b".repeat(64), |_| {})),
        ))
        .await;
    let (code, _, close) = refused(&mut refused_client).await;
    assert_eq!(
        (code, close),
        (ErrorCode::Forbidden, Some(close_code::FORBIDDEN))
    );
    s.shutdown().await.unwrap();
}
