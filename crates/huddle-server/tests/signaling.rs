//! `/ws` end to end: a real server on port 0, real WebSocket clients.

mod common;

use std::time::{Duration, Instant};

use common::{Event, TestServer};
use futures_util::SinkExt;
use huddle_signal_proto::{ErrorCode, LeaveReason, ServerMessage};
use serde_json::json;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

fn error_code(msg: &ServerMessage) -> ErrorCode {
    match msg {
        ServerMessage::Error { code, .. } => *code,
        other => panic!("expected error, got {other:?}"),
    }
}

#[tokio::test]
async fn join_signal_and_leave_between_two_clients() {
    let server = TestServer::start().await;
    let mut a = server.client().await;
    let mut b = server.client().await;
    let wa = a.join("room-1", "Ada").await;
    assert!(wa.peers.is_empty());
    let wb = b.join("room-1", "Bob").await;
    assert_eq!(wb.peers[0].id, wa.id);
    assert!(matches!(a.next_msg().await, ServerMessage::PeerJoined { peer } if peer.id == wb.id));

    b.send_json(json!({"type": "signal", "to": wa.id, "sdp": {"type": "offer", "sdp": "v=0\r\n"}}))
        .await;
    match a.next_msg().await {
        ServerMessage::Signal {
            from,
            sdp: Some(sdp),
            ..
        } => {
            assert_eq!(from, wb.id);
            assert_eq!(sdp.sdp, "v=0\r\n");
        }
        other => panic!("{other:?}"),
    }
    a.send_json(json!({"type": "signal", "to": wb.id, "candidate": {"candidate": "candidate:1 1 udp 2122260223 10.0.0.1 50000 typ host", "sdpMid": "0"}}))
        .await;
    assert!(matches!(
        b.next_msg().await,
        ServerMessage::Signal {
            candidate: Some(_),
            ..
        }
    ));

    // A clean close reaches the other side well within 2 s.
    let t0 = Instant::now();
    b.ws.close(None).await.unwrap();
    match a.next_msg().await {
        ServerMessage::PeerLeft { id, reason } => {
            assert_eq!(id, wb.id);
            assert_eq!(reason, LeaveReason::Left);
        }
        other => panic!("{other:?}"),
    }
    assert!(t0.elapsed() < Duration::from_secs(2));
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn every_bad_input_gets_a_named_error_and_the_socket_stays_open() {
    let server = TestServer::start().await;
    let mut a = server.client().await;
    let mut other_room = server.client().await;
    let stranger = other_room.join("elsewhere", "Eve").await;
    let cases: Vec<(String, ErrorCode)> = vec![
        ("{\"type\":".into(), ErrorCode::BadJson),
        ("not json at all".into(), ErrorCode::BadJson),
        (json!({"type": "warp"}).to_string(), ErrorCode::UnknownType),
        (json!({"v": 1}).to_string(), ErrorCode::BadMessage),
        (
            json!({"type": "join", "v": 1, "room": "r"}).to_string(),
            ErrorCode::BadMessage,
        ),
        (
            json!({"type": "signal", "to": "x", "sdp": {"type": "offer", "sdp": ""}}).to_string(),
            ErrorCode::NotJoined,
        ),
        (
            json!({"type": "join", "v": 3, "room": "r", "name": "A"}).to_string(),
            ErrorCode::UnsupportedVersion,
        ),
        (
            json!({"type": "join", "v": 1, "room": "../etc", "name": "A"}).to_string(),
            ErrorCode::BadRoomName,
        ),
        (
            json!({"type": "join", "v": 1, "room": "r", "name": ""}).to_string(),
            ErrorCode::BadName,
        ),
    ];
    for (text, code) in &cases {
        a.send_text(text.clone()).await;
        assert_eq!(error_code(&a.next_msg().await), *code, "{text}");
    }
    let me = a.join("r", "Ada").await;
    let joined_cases = vec![
        (
            json!({"type": "signal", "to": stranger.id, "sdp": {"type": "offer", "sdp": ""}}),
            ErrorCode::UnknownPeer,
        ),
        (
            json!({"type": "signal", "to": "nobody", "candidate": {}}),
            ErrorCode::UnknownPeer,
        ),
        (
            json!({"type": "signal", "to": me.id, "candidate": {}}),
            ErrorCode::BadMessage,
        ),
        (
            json!({"type": "join", "v": 1, "room": "r", "name": "again"}),
            ErrorCode::AlreadyJoined,
        ),
        (json!({"type": "chat", "text": ""}), ErrorCode::BadMessage),
    ];
    for (msg, code) in joined_cases {
        a.send_json(msg.clone()).await;
        assert_eq!(error_code(&a.next_msg().await), code, "{msg}");
    }
    // Nothing leaked to the other room, and the socket still works.
    other_room.expect_silence().await;
    a.send_json(json!({"type": "ping"})).await;
    assert_eq!(a.next_msg().await, ServerMessage::Pong);

    let (status, metrics) = server.get("/metrics").await;
    assert_eq!(status, 200);
    assert!(
        metrics.contains("huddle_signaling_errors_total{code=\"unknown-peer\"} 2"),
        "{metrics}"
    );
    assert!(metrics.contains("huddle_rooms 2"));
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn an_oversize_message_closes_with_1009_and_others_carry_on() {
    let server = TestServer::start().await;
    let mut a = server.client().await;
    let mut b = server.client().await;
    let wa = a.join("r", "A").await;
    b.join("r", "B").await;
    a.next_msg().await; // peer-joined
    b.send_json(json!({"type": "chat", "text": "x".repeat(70 * 1024)}))
        .await;
    assert_eq!(error_code(&b.next_msg().await), ErrorCode::TooLarge);
    match b.next().await {
        Event::Closed(Some((code, reason))) => {
            assert_eq!(code, CloseCode::Size);
            assert!(reason.contains("65536"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        a.next_msg().await,
        ServerMessage::PeerLeft {
            reason: LeaveReason::Kicked,
            ..
        }
    ));
    // Frames beyond the transport's own cap end the connection too, without hurting the server.
    let mut c = server.client().await;
    c.send_text("y".repeat(3 << 20)).await;
    assert!(matches!(c.next().await, Event::Closed(_)));
    a.send_json(json!({"type": "chat", "text": "still here"}))
        .await;
    assert!(matches!(a.next_msg().await, ServerMessage::Chat { from, .. } if from == wa.id));
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_flooding_client_is_closed_with_1008() {
    let server = TestServer::start().await;
    let mut a = server.client().await;
    a.join("r", "A").await;
    let mut watcher = server.client().await;
    watcher.join("r", "W").await;
    a.next_msg().await; // peer-joined
    // Far above 50/s, sustained: the burst allowance runs out and the server closes.
    let flood = tokio::spawn(async move {
        for _ in 0..2000 {
            if a.ws
                .send(tokio_tungstenite::tungstenite::Message::Text(
                    r#"{"type":"ping"}"#.into(),
                ))
                .await
                .is_err()
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let mut saw_flood = false;
        while let Some(e) = a.next_within(Duration::from_secs(5)).await {
            match e {
                Event::Msg(ServerMessage::Error {
                    code: ErrorCode::Flood,
                    ..
                }) => saw_flood = true,
                Event::Msg(_) => {}
                Event::Closed(c) => return (saw_flood, c),
            }
        }
        (saw_flood, None)
    });
    let (saw_flood, closed) = flood.await.unwrap();
    assert!(saw_flood);
    assert!(matches!(closed, Some((CloseCode::Policy, _))), "{closed:?}");
    assert!(matches!(
        watcher.next_msg().await,
        ServerMessage::PeerLeft {
            reason: LeaveReason::Kicked,
            ..
        }
    ));
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_full_room_says_so() {
    let mut config = huddle_server::Config::plain("127.0.0.1:0".parse().unwrap());
    config.rooms.capacity = 2;
    let server = TestServer::with(config).await;
    let mut a = server.client().await;
    let mut b = server.client().await;
    let mut c = server.client().await;
    a.join("small", "A").await;
    b.join("small", "B").await;
    c.send_json(json!({"type": "join", "v": 1, "room": "small", "name": "C"}))
        .await;
    match c.next_msg().await {
        ServerMessage::Error {
            code: ErrorCode::RoomFull,
            message,
        } => assert!(message.contains("full")),
        other => panic!("{other:?}"),
    }
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_dropped_socket_can_resume_its_peer() {
    let server = TestServer::start().await;
    let mut a = server.client().await;
    let mut b = server.client().await;
    let wa = a.join("r", "A").await;
    let wb = b.join("r", "B").await;
    a.next_msg().await;
    // Drop A's TCP connection without a close frame.
    drop(a);
    tokio::time::sleep(Duration::from_millis(200)).await;
    b.send_json(json!({"type": "signal", "to": wa.id, "sdp": {"type": "offer", "sdp": "held"}}))
        .await;
    b.expect_silence().await; // no peer-left: A may come back
    let mut a2 = server.client().await;
    a2.send_json(json!({"type": "join", "v": 1, "room": "r", "name": "A", "resume": wa.resume}))
        .await;
    match a2.next_msg().await {
        ServerMessage::Welcome(w) => {
            assert!(w.resumed);
            assert_eq!(w.id, wa.id);
        }
        other => panic!("{other:?}"),
    }
    // The offer sent while A was away is delivered now.
    assert!(matches!(a2.next_msg().await, ServerMessage::Signal { from, .. } if from == wb.id));
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn shutdown_tells_clients_then_returns() {
    let server = TestServer::start().await;
    let mut a = server.client().await;
    a.join("r", "A").await;
    let t0 = Instant::now();
    let stopping = tokio::spawn(server.shutdown());
    assert_eq!(error_code(&a.next_msg().await), ErrorCode::ServerShutdown);
    assert!(matches!(
        a.next().await,
        Event::Closed(Some((CloseCode::Away, _)))
    ));
    stopping.await.unwrap().unwrap();
    assert!(t0.elapsed() < Duration::from_secs(4));
}

#[tokio::test]
async fn health_pages_and_ice_servers() {
    let server = TestServer::start().await;
    assert_eq!(server.get("/healthz").await, (200, "ok\n".into()));
    let (status, page) = server.get("/r/some-room").await;
    assert_eq!(status, 200);
    assert!(page.contains("<title>Huddle</title>"));
    assert_eq!(server.get("/assets/app.js").await.0, 200);
    assert_eq!(server.get("/assets/nope.js").await.0, 404);
    // A wrong address gets a page with the way back, not an empty 404.
    let (status, page) = server.get("/rooms/typo").await;
    assert_eq!(status, 404);
    assert!(page.contains("href=\"/\""), "{page}");
    let (status, body) = server.get("/api/ice-servers").await;
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(v["iceServers"].is_array());
    server.shutdown().await.unwrap();
}
