//! One anonymous client trying to hurt everyone else, against the real server (port 0, real
//! sockets): each case is bounded, and after each the server still answers `/healthz` and a
//! fresh join, and holds no connection it should have let go.

mod common;

use std::time::{Duration, Instant};

use common::{Event, TestServer, closed_by_server, established_to, eventually, server_side_states};
use futures_util::{SinkExt, StreamExt};
use huddle_server::{Config, Limits};
use huddle_signal_proto::{LeaveReason, ServerMessage, close_code};
use serde_json::json;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

fn config(limits: Limits) -> Config {
    let mut config = Config::plain("127.0.0.1:0".parse().unwrap());
    config.limits = limits;
    config
}

/// The server still serves: health, and a join into a room of its own.
async fn still_serves(server: &TestServer) {
    assert_eq!(server.get("/healthz").await.0, 200);
    let mut fresh = server.client().await;
    fresh.join("after-the-attack", "Fresh").await;
}

#[tokio::test]
async fn a_client_that_stops_reading_is_disconnected() {
    let mut cfg = config(Limits {
        ws_write: Duration::from_secs(2),
        ..Limits::default()
    });
    // The sender may send as fast as it likes: the reader's stall is the subject here.
    cfg.rooms.rate_per_second = 1_000_000;
    cfg.rooms.rate_burst = 1_000_000;
    let server = TestServer::with(cfg).await;

    // A socket with a tiny receive buffer that never reads after joining.
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let tcp = socket.connect(server.addr).await.unwrap();
    let slow_port = tcp.local_addr().unwrap().port();
    let tcp = tokio_tungstenite::MaybeTlsStream::Plain(tcp);
    let (ws, _) = tokio_tungstenite::client_async(server.ws_url(), tcp)
        .await
        .unwrap();
    let mut slow = common::Client { ws };
    slow.join("r", "Slow").await;

    let sender = server.client().await;
    let (mut tx, mut rx) = sender.ws.split();
    tx.send(Message::Text(
        json!({"type": "join", "v": 1, "room": "r", "name": "Chatty"})
            .to_string()
            .into(),
    ))
    .await
    .unwrap();
    let drain = tokio::spawn(async move { while rx.next().await.is_some() {} });
    let text = "x".repeat(2000);
    let chat = json!({"type": "chat", "text": text}).to_string();
    for _ in 0..4000 {
        if tx.send(Message::Text(chat.clone().into())).await.is_err() {
            break;
        }
    }

    let t0 = Instant::now();
    let let_go = eventually(Duration::from_secs(15), || {
        !server_side_states(server.addr, slow_port).contains(&1)
    })
    .await;
    assert!(
        let_go,
        "the server still holds the stalled socket after 15 s"
    );
    eprintln!("stalled reader let go {:?} after the flood", t0.elapsed());
    drain.abort();
    still_serves(&server).await;
    drop(slow);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn frames_that_are_not_text_count_against_the_flood_limit() {
    let server = TestServer::start().await;
    let mut bystander = server.client().await;
    bystander.join("elsewhere", "Bystander").await;

    for flood in [
        Message::Binary(Default::default()),
        Message::Ping(Default::default()),
    ] {
        let mut flooder = server.client().await;
        flooder.join("r", "Flooder").await;
        // Frames in a tight loop, flushed together; far past the burst.
        for _ in 0..20_000 {
            if flooder.ws.feed(flood.clone()).await.is_err() {
                break;
            }
        }
        let _ = flooder.ws.flush().await;
        let code = loop {
            match flooder.next().await {
                Event::Closed(frame) => break frame.map(|(code, _)| code),
                Event::Msg(_) => continue, // the `flood` error before the close
            }
        };
        // Cut off. The close frame usually arrives; a reset may overtake it, since the flooder's
        // unread frames are still in the server's receive buffer when it closes.
        assert!(
            matches!(code, Some(CloseCode::Policy) | None),
            "{flood:?}: {code:?}"
        );
    }
    // Someone in another room was never held up for long.
    bystander.send_json(json!({"type": "ping"})).await;
    assert!(matches!(bystander.next_msg().await, ServerMessage::Pong));
    still_serves(&server).await;
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_clean_leave_during_traffic_is_reported_as_a_leave() {
    let server = TestServer::start().await;
    for trial in 0..40 {
        let room = format!("leave-{trial}");
        let mut talker = server.client().await;
        let mut leaver = server.client().await;
        let mut watcher = server.client().await;
        talker.join(&room, "Talker").await;
        let gone = leaver.join(&room, "Leaver").await.id;
        watcher.join(&room, "Watcher").await;
        // The talker's chat keeps the leaver's outbox busy while it closes.
        let (mut tx, mut rx) = talker.ws.split();
        let drain = tokio::spawn(async move { while rx.next().await.is_some() {} });
        let chatter = tokio::spawn(async move {
            for i in 0..100 {
                let msg = json!({"type": "chat", "text": format!("message {i}")});
                if tx
                    .send(Message::Text(msg.to_string().into()))
                    .await
                    .is_err()
                {
                    break;
                }
            }
            tx
        });
        tokio::time::sleep(Duration::from_millis(2)).await;
        leaver.ws.close(None).await.unwrap();
        let reason = loop {
            match watcher.next_msg().await {
                ServerMessage::PeerLeft { id, reason } if id == gone => break reason,
                _ => continue,
            }
        };
        assert_eq!(reason, LeaveReason::Left, "trial {trial}");
        let _ = chatter.await;
        drain.abort();
    }
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn close_frames_are_answered_and_protocol_errors_get_their_codes() {
    let server = TestServer::start().await;

    // A client's close is answered with a close (RFC 6455 §5.5.1).
    let mut client = server.client().await;
    client.join("r", "Polite").await;
    client.ws.send(Message::Close(None)).await.unwrap();
    let reply = tokio::time::timeout(Duration::from_secs(5), client.ws.next())
        .await
        .expect("an answer to the close");
    assert!(matches!(reply, Some(Ok(Message::Close(_)))), "{reply:?}");

    // A frame over the WebSocket layer's limit (2 MiB): 1009.
    let mut big = server.client().await;
    big.send_text("x".repeat(3 << 20)).await;
    assert!(
        matches!(big.next().await, Event::Closed(Some((CloseCode::Size, _)))),
        "oversize frame"
    );

    // Raw frames the client library would never send: bad UTF-8 (1007), a reserved bit (1002).
    // Client frames are masked; a zero mask leaves the payload as it is.
    for (frame, code) in [
        (
            &[0x81u8, 0x82, 0, 0, 0, 0, 0xff, 0xfe][..],
            close_code::INVALID_DATA,
        ),
        (&[0xc1u8, 0x80, 0, 0, 0, 0][..], close_code::PROTOCOL),
    ] {
        let mut raw = server.client().await;
        match raw.ws.get_mut() {
            tokio_tungstenite::MaybeTlsStream::Plain(tcp) => tcp.write_all(frame).await.unwrap(),
            _ => unreachable!("plain test server"),
        }
        match raw.next().await {
            Event::Closed(Some((got, _))) => assert_eq!(u16::from(got), code, "{frame:x?}"),
            other => panic!("{frame:x?}: {other:?}"),
        }
    }
    still_serves(&server).await;
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn slow_heads_and_idle_connections_are_closed() {
    let server = TestServer::with(config(Limits {
        request_head: Duration::from_secs(1),
        idle: Duration::from_secs(2),
        ..Limits::default()
    }))
    .await;

    // A request head trickled in a byte at a time.
    let mut trickle = TcpStream::connect(server.addr).await.unwrap();
    let head = b"GET /healthz HTTP/1.1\r\nHost: test\r\nX-Slow: ";
    let t0 = Instant::now();
    // A byte every 200 ms for up to 5 s (a write fails once the server has closed).
    for byte in head.iter().cycle().take(25) {
        tokio::time::sleep(Duration::from_millis(200)).await;
        if trickle.write_all(&[*byte]).await.is_err() {
            break;
        }
    }
    assert!(
        closed_by_server(&mut trickle, Duration::from_secs(1)).await,
        "the trickling connection is still open after {:?}",
        t0.elapsed()
    );

    // A connection that never sends anything.
    let mut silent = TcpStream::connect(server.addr).await.unwrap();
    assert!(closed_by_server(&mut silent, Duration::from_secs(4)).await);

    // Keep-alive after a request: idle, then closed.
    let mut keep = TcpStream::connect(server.addr).await.unwrap();
    keep.write_all(b"GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n")
        .await
        .unwrap();
    assert!(closed_by_server(&mut keep, Duration::from_secs(5)).await);

    // HTTP/2 (prior knowledge): one request, then idle.
    let tcp = TcpStream::connect(server.addr).await.unwrap();
    let (mut h2, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tcp),
    )
    .await
    .unwrap();
    let conn = tokio::spawn(conn);
    let req = hyper::Request::get(format!("http://{}/healthz", server.addr))
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    assert_eq!(h2.send_request(req).await.unwrap().status(), 200);
    let ended = tokio::time::timeout(Duration::from_secs(5), conn).await;
    assert!(ended.is_ok(), "an idle HTTP/2 connection stayed open");

    assert_eq!(established_to(server.addr), 0);
    still_serves(&server).await;
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn connections_per_address_are_capped() {
    let server = TestServer::with(config(Limits {
        connections_per_ip: 4,
        ..Limits::default()
    }))
    .await;
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(TcpStream::connect(server.addr).await.unwrap());
    }
    let mut fifth = TcpStream::connect(server.addr).await.unwrap();
    assert!(
        closed_by_server(&mut fifth, Duration::from_secs(2)).await,
        "a fifth connection from one address was kept"
    );
    // A WebSocket holds its slot: with it open, only three more fit.
    held.pop();
    let _ws = server.client().await;
    let mut over = TcpStream::connect(server.addr).await.unwrap();
    assert!(closed_by_server(&mut over, Duration::from_secs(2)).await);
    // Slots come back when connections close.
    held.clear();
    assert!(
        eventually(Duration::from_secs(2), || established_to(server.addr) <= 1).await,
        "closed connections still counted"
    );
    assert_eq!(server.get("/healthz").await.0, 200);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn shutdown_waits_only_for_open_connections_and_only_its_grace() {
    // Nothing open: at once.
    let server = TestServer::start().await;
    let addr = server.addr;
    assert_eq!(server.get("/healthz").await.0, 200);
    let t0 = Instant::now();
    server.shutdown().await.unwrap();
    let idle_exit = t0.elapsed();
    assert!(idle_exit < Duration::from_secs(1), "{idle_exit:?}");
    // And the port is let go: nothing is accepted any more.
    let mut refused = false;
    for _ in 0..40 {
        if TcpStream::connect(addr).await.is_err() {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(refused, "still accepting after shutdown");

    // A connection stuck in its request head: no longer than the grace (3 s in tests).
    let server = TestServer::start().await;
    let mut stuck = TcpStream::connect(server.addr).await.unwrap();
    stuck.write_all(b"GET / HTTP/1.1\r\nHost").await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let t0 = Instant::now();
    server.shutdown().await.unwrap();
    let stuck_exit = t0.elapsed();
    assert!(stuck_exit < Duration::from_secs(5), "{stuck_exit:?}");
    eprintln!("shutdown: {idle_exit:?} with nothing open, {stuck_exit:?} with a stuck head");
}

#[tokio::test]
async fn rated_endpoints_refuse_a_client_past_its_budget() {
    let server = TestServer::with(config(Limits {
        api_per_second: 1,
        api_burst: 10,
        ..Limits::default()
    }))
    .await;
    let mut statuses = Vec::new();
    for _ in 0..20 {
        statuses.push(server.request("GET", "/api/ice-servers", &[], b"").await);
    }
    assert!(statuses[..10].iter().all(|r| r.status == 200));
    let refused: Vec<_> = statuses.iter().filter(|r| r.status == 429).collect();
    assert!(refused.len() >= 8, "{} refused", refused.len());
    assert!(refused[0].header("retry-after").is_some());
    let body: serde_json::Value = serde_json::from_str(&refused[0].body).unwrap();
    assert!(body["error"].as_str().unwrap().contains("too many"));
    // Other routes are not rated.
    assert_eq!(server.get("/healthz").await.0, 200);
    server.shutdown().await.unwrap();
}
