//! The room core under simulated time: every input, limit and timer.

use super::*;
use crate::wire::{ClientMessage, SdpKind};
use rand::SeedableRng;
use rand::rngs::StdRng;

/// The wall clock at the harness's start.
const UNIX: u64 = 1_800_000_000;

struct Harness {
    rooms: Rooms<StdRng>,
    now: Instant,
    next_conn: u64,
}

impl Harness {
    fn new() -> Self {
        Self::with(Config::default())
    }

    fn with(config: Config) -> Self {
        let now = Instant::now();
        Self {
            rooms: Rooms::new(config, StdRng::seed_from_u64(1), now, UNIX),
            now,
            next_conn: 0,
        }
    }

    fn connect(&mut self) -> ConnId {
        self.next_conn += 1;
        let conn = ConnId(self.next_conn);
        self.rooms.handle_connect(conn, self.now);
        conn
    }

    fn text(&mut self, conn: ConnId, text: &str) -> Vec<Output> {
        self.rooms.handle_text(conn, text, self.now);
        self.drain()
    }

    fn send(&mut self, conn: ConnId, msg: &ClientMessage) -> Vec<Output> {
        self.text(conn, &serde_json::to_string(msg).unwrap())
    }

    fn drain(&mut self) -> Vec<Output> {
        std::iter::from_fn(|| self.rooms.poll_output()).collect()
    }

    /// Connects and joins `room`, returning the connection and its peer id.
    fn join(&mut self, room: &str, name: &str) -> (ConnId, PeerId) {
        let conn = self.connect();
        let out = self.send(conn, &join(room, name, None));
        let welcome = welcome_of(&out, conn).expect("welcome");
        (conn, welcome.id)
    }

    /// Steps simulated time to `until`, firing each timer at its own instant.
    fn advance(&mut self, by: Duration) -> Vec<Output> {
        let until = self.now + by;
        let mut out = Vec::new();
        while let Some(at) = self.rooms.poll_timeout().filter(|at| *at <= until) {
            self.now = self.now.max(at);
            self.rooms.handle_timeout(self.now);
            out.extend(self.drain());
        }
        self.now = until;
        out
    }
}

fn join(room: &str, name: &str, resume: Option<String>) -> ClientMessage {
    ClientMessage::Join {
        v: PROTOCOL_VERSION,
        room: room.into(),
        name: name.into(),
        state: MediaState::default(),
        resume,
        token: None,
        mode: None,
        tiles: None,
    }
}

fn welcome_of(out: &[Output], to: ConnId) -> Option<Welcome> {
    out.iter().find_map(|o| match o {
        Output::Send {
            conn,
            msg: ServerMessage::Welcome(w),
        } if *conn == to => Some(w.clone()),
        _ => None,
    })
}

fn sent_to(out: &[Output], to: ConnId) -> Vec<ServerMessage> {
    out.iter()
        .filter_map(|o| match o {
            Output::Send { conn, msg } if *conn == to => Some(msg.clone()),
            _ => None,
        })
        .collect()
}

fn error_code(out: &[Output], to: ConnId) -> Option<ErrorCode> {
    sent_to(out, to).into_iter().find_map(|m| match m {
        ServerMessage::Error { code, .. } => Some(code),
        _ => None,
    })
}

fn closed(out: &[Output], to: ConnId) -> Option<u16> {
    out.iter().find_map(|o| match o {
        Output::Close { conn, code, .. } if *conn == to => Some(*code),
        _ => None,
    })
}

fn offer(to: &PeerId) -> ClientMessage {
    ClientMessage::Signal {
        to: to.clone(),
        sdp: Some(SessionDescription {
            kind: crate::wire::SdpKind::Offer,
            sdp: "v=0\r\n".into(),
        }),
        candidate: None,
    }
}

#[test]
fn join_welcomes_and_announces() {
    let mut h = Harness::new();
    let (a, pa) = h.join("demo", "Ada");
    let b = h.connect();
    let out = h.send(b, &join("Demo", "Bob", None));
    let w = welcome_of(&out, b).unwrap();
    assert_eq!(w.room, "demo");
    assert_eq!(w.peers.len(), 1);
    assert_eq!(w.peers[0].id, pa);
    assert_eq!(w.peers[0].name, "Ada");
    assert!(!w.resumed);
    assert_eq!(w.capacity, 6);
    let to_a = sent_to(&out, a);
    assert!(
        matches!(&to_a[..], [ServerMessage::PeerJoined { peer }] if peer.id == w.id && peer.name == "Bob")
    );
    let stats = h.rooms.stats();
    assert_eq!(
        (stats.rooms, stats.participants, stats.connections),
        (1, 2, 2)
    );
}

#[test]
fn signal_reaches_only_the_addressed_peer() {
    let mut h = Harness::new();
    let (a, pa) = h.join("r1", "A");
    let (b, pb) = h.join("r1", "B");
    let (c, _) = h.join("r1", "C");
    let out = h.send(a, &offer(&pb));
    assert_eq!(out.len(), 1);
    assert!(
        matches!(&sent_to(&out, b)[..], [ServerMessage::Signal { from, sdp: Some(_), .. }] if *from == pa)
    );
    assert!(sent_to(&out, c).is_empty());

    let cand = r#"{"type":"signal","to":"TO","candidate":{"candidate":"candidate:0 1 UDP 1 10.0.0.1 5000 typ host","sdpMLineIndex":0}}"#
        .replace("TO", &pa.0);
    let out = h.text(b, &cand);
    assert!(
        matches!(&sent_to(&out, a)[..], [ServerMessage::Signal { candidate: Some(c), .. }] if c["sdpMLineIndex"] == 0)
    );
}

#[test]
fn no_signal_across_rooms_or_to_unknown_peers() {
    let mut h = Harness::new();
    let (a, _) = h.join("one", "A");
    let (b, pb) = h.join("two", "B");
    let out = h.send(a, &offer(&pb));
    assert_eq!(error_code(&out, a), Some(ErrorCode::UnknownPeer));
    assert!(sent_to(&out, b).is_empty());
    let out = h.send(a, &offer(&PeerId("nobody".into())));
    assert_eq!(error_code(&out, a), Some(ErrorCode::UnknownPeer));
    // The connection stays usable.
    let out = h.send(a, &ClientMessage::Ping);
    assert_eq!(sent_to(&out, a), vec![ServerMessage::Pong]);
}

#[test]
fn signal_shape_is_checked() {
    let mut h = Harness::new();
    let (a, pa) = h.join("r", "A");
    let (_, pb) = h.join("r", "B");
    let both = format!(
        r#"{{"type":"signal","to":"{pb}","sdp":{{"type":"offer","sdp":""}},"candidate":{{}}}}"#
    );
    assert_eq!(
        error_code(&h.text(a, &both), a),
        Some(ErrorCode::BadMessage)
    );
    let neither = format!(r#"{{"type":"signal","to":"{pb}"}}"#);
    assert_eq!(
        error_code(&h.text(a, &neither), a),
        Some(ErrorCode::BadMessage)
    );
    assert_eq!(
        error_code(&h.send(a, &offer(&pa)), a),
        Some(ErrorCode::BadMessage)
    );
}

#[test]
fn bad_input_gets_named_errors_and_the_connection_stays() {
    let mut h = Harness::new();
    let a = h.connect();
    let cases = [
        ("{oops", ErrorCode::BadJson),
        (r#"{"type":"teleport"}"#, ErrorCode::UnknownType),
        (r#"{"type":"join","v":1,"name":"x"}"#, ErrorCode::BadMessage),
        (r#"{"type":"chat","text":"hi"}"#, ErrorCode::NotJoined),
        (
            r#"{"type":"join","v":9,"room":"r","name":"x"}"#,
            ErrorCode::UnsupportedVersion,
        ),
        (
            r#"{"type":"join","v":1,"room":"no spaces","name":"x"}"#,
            ErrorCode::BadRoomName,
        ),
        (
            r#"{"type":"join","v":1,"room":"r","name":"  "}"#,
            ErrorCode::BadName,
        ),
    ];
    for (text, code) in cases {
        let out = h.text(a, text);
        assert_eq!(error_code(&out, a), Some(code), "{text}");
        assert_eq!(closed(&out, a), None, "{text}");
    }
    h.send(a, &join("r", "A", None));
    assert_eq!(
        error_code(&h.send(a, &join("r", "A", None)), a),
        Some(ErrorCode::AlreadyJoined)
    );
    let stats = h.rooms.stats();
    assert_eq!(stats.errors[&ErrorCode::BadJson], 1);
    assert_eq!(stats.messages_in["join"], 5);
}

#[test]
fn oversize_message_closes_with_1009() {
    let mut h = Harness::new();
    let (a, pa) = h.join("r", "A");
    let (b, _) = h.join("r", "B");
    let big = format!(r#"{{"type":"chat","text":"{}"}}"#, "x".repeat(70_000));
    let out = h.text(a, &big);
    assert_eq!(error_code(&out, a), Some(ErrorCode::TooLarge));
    assert_eq!(closed(&out, a), Some(close_code::TOO_BIG));
    assert!(
        matches!(&sent_to(&out, b)[..], [ServerMessage::PeerLeft { id, reason: LeaveReason::Kicked }] if *id == pa)
    );
    assert!(
        h.text(a, r#"{"type":"ping"}"#).is_empty(),
        "closed connection is forgotten"
    );
}

#[test]
fn flooding_closes_with_1008_but_bursts_pass() {
    let mut h = Harness::new();
    let (a, _) = h.join("r", "A");
    // A burst of 150 at once is a join into a full room; fine.
    for _ in 0..150 {
        assert!(closed(&h.text(a, r#"{"type":"ping"}"#), a).is_none());
    }
    // 100 messages/s sustained is not.
    let mut closed_at = None;
    for i in 0..1000 {
        h.now += Duration::from_millis(10);
        let out = h.text(a, r#"{"type":"ping"}"#);
        if closed(&out, a) == Some(close_code::POLICY) {
            assert_eq!(error_code(&out, a), Some(ErrorCode::Flood));
            closed_at = Some(i);
            break;
        }
    }
    assert!(closed_at.is_some_and(|i| i < 300), "{closed_at:?}");
}

#[test]
fn frames_that_are_not_text_count_against_the_same_budget() {
    let mut h = Harness::new();
    let (a, _) = h.join("r", "A");
    let (b, _) = h.join("r", "B");
    h.drain();
    // Empty binary frames (or pings) in a tight loop: closed within the burst, as text would be.
    let mut closed_after = None;
    for i in 0..10_000 {
        h.rooms.handle_frame(a, h.now);
        let out = h.drain();
        if closed(&out, a) == Some(close_code::POLICY) {
            assert_eq!(error_code(&out, a), Some(ErrorCode::Flood));
            closed_after = Some(i);
            break;
        }
    }
    assert!(closed_after.is_some_and(|i| i <= 200), "{closed_after:?}");
    // The other member is untouched and still gets through.
    assert!(closed(&h.text(b, r#"{"type":"ping"}"#), b).is_none());
}

#[test]
fn room_capacity() {
    let mut h = Harness::with(Config {
        capacity: 2,
        ..Config::default()
    });
    h.join("r", "A");
    h.join("r", "B");
    let c = h.connect();
    let out = h.send(c, &join("r", "C", None));
    assert_eq!(error_code(&out, c), Some(ErrorCode::RoomFull));
    // Other rooms are unaffected.
    assert!(welcome_of(&h.send(c, &join("other", "C", None)), c).is_some());
}

#[test]
fn clean_close_and_leave_tell_the_others_at_once() {
    let mut h = Harness::new();
    let (a, pa) = h.join("r", "A");
    let (b, pb) = h.join("r", "B");
    let (c, _) = h.join("r", "C");
    h.rooms.handle_close(a, CloseKind::Clean, h.now);
    let out = h.drain();
    assert!(
        matches!(&sent_to(&out, b)[..], [ServerMessage::PeerLeft { id, reason: LeaveReason::Left }] if *id == pa)
    );
    let out = h.send(b, &ClientMessage::Leave);
    assert!(matches!(&sent_to(&out, c)[..], [ServerMessage::PeerLeft { id, .. }] if *id == pb));
    // After leave the connection may join again.
    assert!(welcome_of(&h.send(b, &join("r", "B2", None)), b).is_some());
}

#[test]
fn last_one_out_removes_the_room() {
    let mut h = Harness::new();
    let (a, _) = h.join("r", "A");
    h.rooms.handle_close(a, CloseKind::Clean, h.now);
    assert_eq!(h.rooms.stats().rooms, 0);
    assert_eq!(h.rooms.stats().participants, 0);
}

#[test]
fn silent_connection_is_pinged_then_dropped_within_30s() {
    let mut h = Harness::new();
    let (a, pa) = h.join("r", "A");
    let (b, _) = h.join("r", "B");
    let mut pinged = false;
    let mut left_at = None;
    for s in 1..=40 {
        // B stays alive by answering pings; A is silent.
        let out = h.advance(Duration::from_secs(1));
        if out.contains(&Output::Ping { conn: b }) {
            h.rooms.handle_frame(b, h.now);
        }
        pinged |= out.contains(&Output::Ping { conn: a });
        if sent_to(&out, b)
            .iter()
            .any(|m| matches!(m, ServerMessage::PeerLeft { id, reason: LeaveReason::Timeout } if *id == pa))
        {
            assert_eq!(closed(&out, a), Some(close_code::GOING_AWAY));
            left_at = Some(s);
            break;
        }
    }
    assert!(pinged);
    assert!(left_at.is_some_and(|s| s <= 30), "{left_at:?}");
    assert_eq!(h.rooms.stats().participants, 1);
}

#[test]
fn pong_keeps_a_connection_alive() {
    let mut h = Harness::new();
    let (a, _) = h.join("r", "A");
    for _ in 0..120 {
        let out = h.advance(Duration::from_secs(1));
        assert_eq!(closed(&out, a), None);
        if out.contains(&Output::Ping { conn: a }) {
            h.rooms.handle_frame(a, h.now);
        }
    }
    assert_eq!(h.rooms.stats().participants, 1);
}

#[test]
fn abrupt_close_then_resume_keeps_the_peer_and_its_messages() {
    let mut h = Harness::new();
    let a = h.connect();
    let w = welcome_of(&h.send(a, &join("r", "A", None)), a).unwrap();
    let (b, pb) = h.join("r", "B");
    h.drain();
    h.rooms.handle_close(a, CloseKind::Abrupt, h.now);
    assert!(
        sent_to(&h.drain(), b).is_empty(),
        "no peer-left during the grace period"
    );
    // B's offer waits for A.
    h.send(b, &offer(&w.id));
    h.advance(Duration::from_secs(5));

    let a2 = h.connect();
    let out = h.send(a2, &join("r", "A", Some(w.resume.clone())));
    let w2 = welcome_of(&out, a2).unwrap();
    assert!(w2.resumed);
    assert_eq!(w2.id, w.id);
    assert_eq!(
        w2.peers.iter().map(|p| &p.id).collect::<Vec<_>>(),
        vec![&pb]
    );
    let to_a2 = sent_to(&out, a2);
    assert!(
        matches!(&to_a2[1], ServerMessage::Signal { from, .. } if *from == pb),
        "{to_a2:?}"
    );
    assert!(matches!(
        &sent_to(&out, b)[..],
        [ServerMessage::PeerUpdated { .. }]
    ));
    // The grace timer that was armed no longer removes anyone.
    let out = h.advance(Duration::from_secs(30));
    assert!(
        !sent_to(&out, b)
            .iter()
            .any(|m| matches!(m, ServerMessage::PeerLeft { .. }))
    );
}

#[test]
fn resume_window_expires() {
    let mut h = Harness::new();
    let (a, pa) = h.join("r", "A");
    let (b, _) = h.join("r", "B");
    h.rooms.handle_close(a, CloseKind::Abrupt, h.now);
    let out = h.advance(Duration::from_secs(11));
    assert!(sent_to(&out, b).iter().any(
        |m| matches!(m, ServerMessage::PeerLeft { id, reason: LeaveReason::Disconnected } if *id == pa)
    ));
}

#[test]
fn resume_on_a_new_socket_closes_the_old_one() {
    let mut h = Harness::new();
    let a = h.connect();
    let w = welcome_of(&h.send(a, &join("r", "A", None)), a).unwrap();
    let a2 = h.connect();
    let out = h.send(a2, &join("r", "A", Some(w.resume)));
    assert_eq!(closed(&out, a), Some(close_code::REPLACED));
    assert!(welcome_of(&out, a2).unwrap().resumed);
    assert_eq!(h.rooms.stats().participants, 1);
}

#[test]
fn a_resume_token_does_not_open_another_room() {
    let mut h = Harness::new();
    let a = h.connect();
    let w = welcome_of(&h.send(a, &join("r", "A", None)), a).unwrap();
    let x = h.connect();
    let w2 = welcome_of(&h.send(x, &join("other", "X", Some(w.resume))), x).unwrap();
    assert!(!w2.resumed);
    assert_ne!(w2.id, w.id);
}

#[test]
fn chat_goes_to_the_room_only() {
    let mut h = Harness::new();
    let (a, pa) = h.join("r", "A");
    let (b, _) = h.join("r", "B");
    let (c, _) = h.join("elsewhere", "C");
    let out = h.send(
        a,
        &ClientMessage::Chat {
            text: "hello".into(),
        },
    );
    for conn in [a, b] {
        assert!(
            matches!(&sent_to(&out, conn)[..], [ServerMessage::Chat { from, name, text }] if *from == pa && name == "A" && text == "hello")
        );
    }
    assert!(sent_to(&out, c).is_empty());
    let long = "y".repeat(2001);
    assert_eq!(
        error_code(&h.send(a, &ClientMessage::Chat { text: long }), a),
        Some(ErrorCode::BadMessage)
    );
    assert_eq!(
        error_code(&h.send(a, &ClientMessage::Chat { text: " ".into() }), a),
        Some(ErrorCode::BadMessage)
    );
}

#[test]
fn state_updates_are_broadcast() {
    let mut h = Harness::new();
    let (a, _) = h.join("r", "A");
    let (b, _) = h.join("r", "B");
    let state = MediaState {
        audio: true,
        video: false,
        screen: Some("stream-1".into()),
    };
    let out = h.send(a, &ClientMessage::State(state.clone()));
    assert!(
        matches!(&sent_to(&out, b)[..], [ServerMessage::PeerUpdated { peer }] if peer.state == state)
    );
    assert!(sent_to(&out, a).is_empty());
    let bad = MediaState {
        screen: Some(String::new()),
        ..state
    };
    assert_eq!(
        error_code(&h.send(a, &ClientMessage::State(bad)), a),
        Some(ErrorCode::BadMessage)
    );
}

#[test]
fn shutdown_tells_everyone() {
    let mut h = Harness::new();
    let (a, _) = h.join("r", "A");
    let b = h.connect();
    h.rooms.shutdown();
    let out = h.drain();
    for conn in [a, b] {
        assert_eq!(error_code(&out, conn), Some(ErrorCode::ServerShutdown));
        assert_eq!(closed(&out, conn), Some(close_code::GOING_AWAY));
    }
    assert_eq!(h.rooms.poll_timeout(), None);
}

#[test]
fn an_away_peer_that_falls_too_far_behind_is_dropped() {
    let mut h = Harness::with(Config {
        max_pending: 3,
        ..Config::default()
    });
    let (a, pa) = h.join("r", "A");
    let (b, _) = h.join("r", "B");
    h.rooms.handle_close(a, CloseKind::Abrupt, h.now);
    let mut left = false;
    for _ in 0..4 {
        let out = h.send(b, &offer(&pa));
        left |= sent_to(&out, b)
            .iter()
            .any(|m| matches!(m, ServerMessage::PeerLeft { .. }));
    }
    assert!(left);
}

/// Access tokens and moderation: a server with a key.
mod access {
    use super::*;
    use huddle_access::{Claims, Keys};

    const KEY: &str = "main:0123456789abcdef0123456789abcdef";

    fn keyed() -> Harness {
        Harness::with(Config {
            access: Keys::parse_list(&[KEY]).unwrap(),
            ..Config::default()
        })
    }

    fn token(edit: impl FnOnce(&mut Claims)) -> String {
        let mut claims = Claims::for_room("alice", "r", UNIX, 3600);
        edit(&mut claims);
        Keys::parse_list(&[KEY])
            .unwrap()
            .mint("main", &claims)
            .unwrap()
    }

    fn join_with(
        room: &str,
        name: &str,
        token: Option<String>,
        state: MediaState,
    ) -> ClientMessage {
        ClientMessage::Join {
            v: PROTOCOL_VERSION,
            room: room.into(),
            name: name.into(),
            state,
            resume: None,
            token,
            mode: None,
            tiles: None,
        }
    }

    #[test]
    fn a_cluster_node_refuses_a_bad_token_before_asking_where_the_room_is() {
        let mut h = Harness::with(Config {
            access: Keys::parse_list(&[KEY]).unwrap(),
            placement: true,
            ..Config::default()
        });
        let (a, b) = (h.connect(), h.connect());
        let out = h.send(
            a,
            &join_with("r", "A", Some("not-a-jwt".into()), MediaState::default()),
        );
        assert_eq!(closed(&out, a), Some(close_code::UNAUTHORIZED));
        assert!(!out.iter().any(|o| matches!(o, Output::Place { .. })));
        let other_room = token(|c| c.video.room = Some("elsewhere".into()));
        let out = h.send(
            b,
            &join_with("r", "B", Some(other_room), MediaState::default()),
        );
        assert_eq!(closed(&out, b), Some(close_code::FORBIDDEN));
        let c = h.connect();
        let out = h.send(
            c,
            &join_with("r", "C", Some(token(|_| {})), MediaState::default()),
        );
        assert!(
            out.iter()
                .any(|o| matches!(o, Output::Place { room } if room == "r"))
        );
    }

    impl Harness {
        /// Joins `r` with a token for `identity`; the connection and the welcome.
        fn join_as(&mut self, identity: &str, edit: impl FnOnce(&mut Claims)) -> (ConnId, Welcome) {
            let conn = self.connect();
            let t = token(|c| {
                c.sub = identity.into();
                edit(c);
            });
            let out = self.send(
                conn,
                &join_with("r", identity, Some(t), MediaState::default()),
            );
            (conn, welcome_of(&out, conn).expect("welcome"))
        }
    }

    fn error_text(out: &[Output], to: ConnId) -> String {
        sent_to(out, to)
            .into_iter()
            .find_map(|m| match m {
                ServerMessage::Error { message, .. } => Some(message),
                _ => None,
            })
            .unwrap_or_default()
    }

    #[test]
    fn without_a_good_token_the_join_is_refused_with_its_reason_and_closed() {
        let mut h = keyed();
        let cases = [
            (
                None,
                ErrorCode::Unauthorized,
                close_code::UNAUTHORIZED,
                "needs an access token",
            ),
            (
                Some("junk".to_owned()),
                ErrorCode::Unauthorized,
                close_code::UNAUTHORIZED,
                "not a JWT",
            ),
            (
                Some(token(|c| c.exp = Some(UNIX - 120))),
                ErrorCode::Unauthorized,
                close_code::UNAUTHORIZED,
                "expired",
            ),
            (
                Some(token(|c| c.video.room = Some("elsewhere".into()))),
                ErrorCode::Forbidden,
                close_code::FORBIDDEN,
                "not \"r\"",
            ),
            (
                Some(token(|c| c.video.room_join = Some(false))),
                ErrorCode::Forbidden,
                close_code::FORBIDDEN,
                "roomJoin",
            ),
        ];
        for (t, code, close, words) in cases {
            let conn = h.connect();
            let out = h.send(conn, &join_with("r", "A", t, MediaState::default()));
            assert_eq!(error_code(&out, conn), Some(code), "{words}");
            assert_eq!(closed(&out, conn), Some(close), "{words}");
            assert!(
                error_text(&out, conn).contains(words),
                "{}",
                error_text(&out, conn)
            );
        }
        assert_eq!(h.rooms.stats().participants, 0);
    }

    #[test]
    fn the_tokens_name_and_grant_come_with_the_welcome() {
        let mut h = keyed();
        let (_, w) = h.join_as("alice", |c| {
            c.name = Some("Alice Liddell".into());
            c.video.room_admin = Some(true);
        });
        assert!(w.permissions.admin);
        assert_eq!(w.permissions.sources, Source::ALL.to_vec());
        let (_, w2) = h.join_as("bob", |c| {
            c.video.can_publish_sources = Some(vec![Source::Microphone]);
        });
        assert_eq!(w2.peers[0].name, "Alice Liddell");
        assert_eq!(w2.permissions.sources, vec![Source::Microphone]);
        assert!(!w2.permissions.admin);
    }

    #[test]
    fn what_the_grant_does_not_allow_is_refused() {
        let mut h = keyed();
        // Receive-only: may join with nothing on, not turn the camera on.
        let conn = h.connect();
        let t = token(|c| c.video.can_publish = Some(false));
        let on = MediaState {
            audio: true,
            ..MediaState::default()
        };
        let out = h.send(conn, &join_with("r", "A", Some(t.clone()), on.clone()));
        assert_eq!(error_code(&out, conn), Some(ErrorCode::Forbidden));
        assert!(error_text(&out, conn).contains("microphone"));
        let out = h.send(conn, &join_with("r", "A", Some(t), MediaState::default()));
        assert!(welcome_of(&out, conn).is_some());
        let out = h.send(conn, &ClientMessage::State(on));
        assert_eq!(error_code(&out, conn), Some(ErrorCode::Forbidden));
        // No data: no chat.
        let (quiet, _) = h.join_as("q", |c| c.video.can_publish_data = Some(false));
        let out = h.send(quiet, &ClientMessage::Chat { text: "hi".into() });
        assert_eq!(error_code(&out, quiet), Some(ErrorCode::Forbidden));
        // Not an admin: no moderation.
        let out = h.send(quiet, &ClientMessage::Lock { locked: true });
        assert_eq!(error_code(&out, quiet), Some(ErrorCode::Forbidden));
        assert!(error_text(&out, quiet).contains("roomAdmin"));
    }

    #[test]
    fn an_admin_mutes_someone_who_is_told_and_the_others_see_it() {
        let mut h = keyed();
        let (admin, _) = h.join_as("admin", |c| c.video.room_admin = Some(true));
        let (bob, wb) = h.join_as("bob", |_| {});
        let (carol, _) = h.join_as("carol", |_| {});
        let on = MediaState {
            audio: true,
            video: true,
            screen: None,
        };
        h.send(bob, &ClientMessage::State(on));
        h.drain();
        let out = h.send(
            admin,
            &ClientMessage::Mute {
                id: wb.id.clone(),
                source: Source::Microphone,
            },
        );
        assert!(sent_to(&out, bob).iter().any(|m| matches!(
            m,
            ServerMessage::Muted {
                source: Source::Microphone,
                ..
            }
        )));
        let seen = sent_to(&out, carol).into_iter().find_map(|m| match m {
            ServerMessage::PeerUpdated { peer } => Some(peer.state),
            _ => None,
        });
        assert_eq!(
            seen,
            Some(MediaState {
                audio: false,
                video: true,
                screen: None
            })
        );
        // Bob's grant allows the microphone: he may turn it back on.
        let back = MediaState {
            audio: true,
            video: true,
            screen: None,
        };
        assert_eq!(
            error_code(&h.send(bob, &ClientMessage::State(back)), bob),
            None
        );
    }

    #[test]
    fn a_removed_participant_cannot_come_back_with_the_same_token() {
        let mut h = keyed();
        let (admin, _) = h.join_as("admin", |c| c.video.room_admin = Some(true));
        let bob_token = token(|c| c.sub = "bob".into());
        let bob = h.connect();
        let out = h.send(
            bob,
            &join_with("r", "Bob", Some(bob_token.clone()), MediaState::default()),
        );
        let bob_id = welcome_of(&out, bob).unwrap().id;
        let (carol, _) = h.join_as("carol", |_| {});
        h.drain();
        let out = h.send(admin, &ClientMessage::Remove { id: bob_id.clone() });
        assert!(
            sent_to(&out, bob)
                .iter()
                .any(|m| matches!(m, ServerMessage::Removed { .. }))
        );
        assert_eq!(closed(&out, bob), Some(close_code::REMOVED));
        assert!(sent_to(&out, carol).iter().any(|m| matches!(
            m,
            ServerMessage::PeerLeft { id, reason: LeaveReason::Removed } if *id == bob_id
        )));
        // The same link again: refused, even once the room has emptied and started afresh.
        let again = h.connect();
        let out = h.send(
            again,
            &join_with("r", "Bob", Some(bob_token.clone()), MediaState::default()),
        );
        assert_eq!(error_code(&out, again), Some(ErrorCode::Forbidden));
        assert!(error_text(&out, again).contains("removed"));
        h.rooms.handle_close(admin, CloseKind::Clean, h.now);
        h.rooms.handle_close(carol, CloseKind::Clean, h.now);
        let later = h.connect();
        let out = h.send(
            later,
            &join_with("r", "Bob", Some(bob_token), MediaState::default()),
        );
        assert_eq!(error_code(&out, later), Some(ErrorCode::Forbidden));
        // A fresh token for the same identity (what a backend mints on every page load) is
        // refused too, until the removed token would have expired; someone else gets in.
        let fresh = h.connect();
        let t = token(|c| {
            c.sub = "bob".into();
            c.jti = Some("a-second-token".into());
        });
        let out = h.send(
            fresh,
            &join_with("r", "Bob", Some(t), MediaState::default()),
        );
        assert_eq!(error_code(&out, fresh), Some(ErrorCode::Forbidden));
        let (_, w) = h.join_as("dave", |_| {});
        assert!(w.peers.is_empty());
        h.now += Duration::from_secs(3600 + 61);
        let (_, back) = h.join_as("bob", |c| {
            c.nbf = Some(UNIX + 3600);
            c.exp = Some(UNIX + 7200);
        });
        assert_eq!(back.peers.len(), 1, "after the removed token's expiry");
    }

    #[test]
    fn the_outputs_of_a_removal_name_the_token_and_identity_for_the_io() {
        let mut h = keyed();
        let (admin, _) = h.join_as("admin", |c| c.video.room_admin = Some(true));
        let (_, wb) = h.join_as("bob", |_| {});
        let (bob2, _) = h.join_as("bob", |c| c.jti = Some("other-tab".into()));
        let out = h.send(admin, &ClientMessage::Remove { id: wb.id });
        let revoked: Vec<&Revocation> = out
            .iter()
            .filter_map(|o| match o {
                Output::Revoked { room, revocation } if room == "r" => Some(revocation),
                _ => None,
            })
            .collect();
        assert_eq!(revoked.len(), 1);
        assert_eq!(revoked[0].identity, "main:bob");
        assert_eq!(
            closed(&out, bob2),
            Some(close_code::REMOVED),
            "bob's other tab goes too"
        );
    }

    #[test]
    fn a_resume_needs_the_same_persons_token() {
        let mut h = keyed();
        let (bob, wb) = h.join_as("bob", |_| {});
        h.rooms.handle_close(bob, CloseKind::Abrupt, h.now);
        let eve = h.connect();
        let mut steal = join_with(
            "r",
            "Eve",
            Some(token(|c| c.sub = "eve".into())),
            MediaState::default(),
        );
        if let ClientMessage::Join { resume, .. } = &mut steal {
            *resume = Some(wb.resume.clone());
        }
        let out = h.send(eve, &steal);
        let w = welcome_of(&out, eve).unwrap();
        assert!(
            !w.resumed && w.id != wb.id,
            "Eve gets her own seat, not Bob's"
        );
    }

    #[test]
    fn a_connection_that_never_joins_is_closed() {
        let mut h = keyed();
        let idle = h.connect();
        let mut closed_at = None;
        for _ in 0..10 {
            let out = h.advance(Duration::from_secs(5));
            h.rooms.handle_text(idle, r#"{"type":"ping"}"#, h.now);
            let out: Vec<Output> = out.into_iter().chain(h.drain()).collect();
            if closed(&out, idle) == Some(close_code::POLICY) {
                closed_at = Some(h.now);
                break;
            }
        }
        assert!(
            closed_at.is_some(),
            "a pinging, never-joining socket stayed"
        );
    }

    #[test]
    fn a_locked_room_takes_only_admins_and_opens_again() {
        let mut h = keyed();
        let (admin, _) = h.join_as("admin", |c| c.video.room_admin = Some(true));
        let (bob, _) = h.join_as("bob", |_| {});
        let out = h.send(admin, &ClientMessage::Lock { locked: true });
        assert!(
            sent_to(&out, bob)
                .iter()
                .any(|m| matches!(m, ServerMessage::RoomLocked { locked: true, .. }))
        );
        let late = h.connect();
        let t = token(|c| c.sub = "late".into());
        let out = h.send(
            late,
            &join_with("r", "Late", Some(t.clone()), MediaState::default()),
        );
        assert_eq!(error_code(&out, late), Some(ErrorCode::RoomLocked));
        let (_, w) = h.join_as("admin2", |c| c.video.room_admin = Some(true));
        assert!(w.locked);
        h.send(admin, &ClientMessage::Lock { locked: false });
        let out = h.send(
            late,
            &join_with("r", "Late", Some(t), MediaState::default()),
        );
        assert!(welcome_of(&out, late).is_some());
    }

    #[test]
    fn an_admin_ends_the_room_for_everyone() {
        let mut h = keyed();
        let (admin, _) = h.join_as("admin", |c| c.video.room_admin = Some(true));
        let (bob, _) = h.join_as("bob", |_| {});
        h.drain();
        let out = h.send(admin, &ClientMessage::End);
        for conn in [admin, bob] {
            assert!(
                sent_to(&out, conn)
                    .iter()
                    .any(|m| matches!(m, ServerMessage::RoomEnded { .. }))
            );
            assert_eq!(closed(&out, conn), Some(close_code::ENDED));
        }
        let stats = h.rooms.stats();
        assert_eq!(
            (stats.rooms, stats.participants, stats.connections),
            (0, 0, 0)
        );
    }

    #[test]
    fn hidden_participants_are_marked_for_the_others() {
        let mut h = keyed();
        h.join_as("watcher", |_| {});
        h.join_as("recorder", |c| c.video.hidden = Some(true));
        let (_, w) = h.join_as("late", |_| {});
        assert!(w.peers.iter().any(|p| p.hidden && p.name == "recorder"));
        assert!(w.peers.iter().any(|p| !p.hidden && p.name == "watcher"));
    }

    #[test]
    fn without_keys_rooms_are_open_and_no_one_moderates() {
        let mut h = Harness::new();
        let (a, _) = h.join("r", "A");
        let b = h.connect();
        let out = h.send(b, &join("r", "B", None));
        let wb = welcome_of(&out, b).unwrap();
        assert_eq!(wb.permissions, Permissions::open());
        let out = h.send(a, &ClientMessage::Remove { id: wb.id });
        assert_eq!(error_code(&out, a), Some(ErrorCode::Forbidden));
    }
}

fn join_v(v: u32, room: &str, name: &str, mode: Option<RoomMode>) -> ClientMessage {
    ClientMessage::Join {
        v,
        room: room.into(),
        name: name.into(),
        state: MediaState::default(),
        resume: None,
        token: None,
        mode,
        tiles: None,
    }
}

fn media(out: &[Output]) -> Vec<MediaRequest> {
    out.iter()
        .filter_map(|o| match o {
            Output::Media(r) => Some(r.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn a_pages_tile_count_reaches_the_media_peer() {
    let mut h = Harness::new();
    let a = h.connect();
    let mut join = join_v(2, "big", "Ada", Some(RoomMode::Sfu));
    if let ClientMessage::Join { tiles, .. } = &mut join {
        *tiles = Some(8);
    }
    let out = h.send(a, &join);
    assert!(
        matches!(
            &media(&out)[..],
            [MediaRequest::Join { tiles: Some(8), .. }]
        ),
        "{:?}",
        media(&out)
    );
}

#[test]
fn an_sfu_room_sends_its_members_sdp_to_the_media_peer_and_back() {
    let mut h = Harness::new();
    let a = h.connect();
    let out = h.send(a, &join_v(2, "big", "Ada", Some(RoomMode::Sfu)));
    let w = welcome_of(&out, a).unwrap();
    assert_eq!((w.mode, w.capacity), (RoomMode::Sfu, 100));
    let pa = w.id;
    assert_eq!(
        media(&out),
        [MediaRequest::Join {
            room: "big".into(),
            peer: pa.clone(),
            tiles: None,
        }]
    );
    // The room keeps its mode whatever a later join asks; a v1 client cannot use it.
    let b = h.connect();
    let out = h.send(b, &join_v(2, "big", "Bob", Some(RoomMode::Mesh)));
    assert_eq!(welcome_of(&out, b).unwrap().mode, RoomMode::Sfu);
    let old = h.connect();
    let out = h.send(old, &join_v(1, "big", "Old", None));
    assert_eq!(error_code(&out, old), Some(ErrorCode::UnsupportedVersion));

    // An offer to "sfu" goes to the media peer; a candidate is not needed there.
    let out = h.send(a, &offer(&PeerId::sfu()));
    assert!(matches!(
        &media(&out)[..],
        [MediaRequest::Sdp { peer, sdp, .. }] if *peer == pa && sdp.kind == SdpKind::Offer
    ));
    let candidate = ClientMessage::Signal {
        to: PeerId::sfu(),
        sdp: None,
        candidate: Some(Default::default()),
    };
    let out = h.send(a, &candidate);
    assert!(media(&out).is_empty() && error_code(&out, a).is_none());

    // How the page shows its tiles goes to the media peer too.
    let tile = crate::wire::TileView {
        track: "t3".into(),
        visible: false,
        width: 0,
        height: 0,
    };
    let out = h.send(
        a,
        &ClientMessage::View {
            tiles: vec![tile.clone()],
        },
    );
    assert_eq!(
        media(&out),
        [MediaRequest::View {
            room: "big".into(),
            peer: pa.clone(),
            tiles: vec![tile]
        }]
    );

    // What the media peer says reaches the page; leaving ends its media.
    h.rooms
        .handle_media(&pa, ServerMessage::Tracks { tracks: vec![] });
    assert_eq!(
        sent_to(&h.drain(), a),
        [ServerMessage::Tracks { tracks: vec![] }]
    );
    let out = h.send(a, &ClientMessage::Leave);
    assert_eq!(
        media(&out),
        [MediaRequest::Leave {
            room: "big".into(),
            peer: pa
        }]
    );
}

#[test]
fn mesh_rooms_have_no_media_peer() {
    let mut h = Harness::new();
    let (a, _) = h.join("small", "Ada");
    let out = h.send(a, &offer(&PeerId::sfu()));
    assert_eq!(error_code(&out, a), Some(ErrorCode::UnknownPeer));
    assert!(media(&out).is_empty());
    let out = h.send(a, &ClientMessage::View { tiles: vec![] });
    assert_eq!(error_code(&out, a), Some(ErrorCode::BadMessage));
    // v1 clients keep working in mesh rooms.
    let old = h.connect();
    let out = h.send(old, &join_v(1, "small", "Old", None));
    assert_eq!(welcome_of(&out, old).unwrap().mode, RoomMode::Mesh);
}

#[test]
fn an_sfu_rooms_answer_may_name_a_hundred_tracks() {
    let mut h = Harness::new();
    let a = h.connect();
    let pa = welcome_of(&h.send(a, &join_v(2, "big", "Ada", Some(RoomMode::Sfu))), a)
        .unwrap()
        .id;
    // ~1.5 KiB per line, two hundred lines: far over the 64 KiB of other messages.
    let sdp = format!("v=0\r\n{}", "a=x\r\n".repeat(60_000));
    let answer = format!(
        r#"{{"type":"signal","to":"sfu","sdp":{{"type":"answer","sdp":"{}"}}}}"#,
        sdp.replace("\r\n", "\\r\\n")
    );
    assert!(answer.len() > 300_000);
    let out = h.text(a, &answer);
    assert_eq!(error_code(&out, a), None);
    assert!(matches!(&media(&out)[..], [MediaRequest::Sdp { peer, .. }] if *peer == pa));
    // It costs its size in the flood budget: a few hundred of those a second are a flood.
    let mut closed_after = None;
    for i in 0..200 {
        if closed(&h.text(a, &answer), a) == Some(close_code::POLICY) {
            closed_after = Some(i);
            break;
        }
    }
    assert!(closed_after.is_some_and(|i| i < 50), "{closed_after:?}");

    // The same frame from a mesh room's participant is too large.
    let (m, _) = h.join("small", "Bob");
    let out = h.text(m, &answer);
    assert_eq!(error_code(&out, m), Some(ErrorCode::TooLarge));
    assert_eq!(closed(&out, m), Some(close_code::TOO_BIG));
}

// ---- Placement (a node of a cluster) ----

fn clustered() -> Harness {
    Harness::with(Config {
        placement: true,
        capacity: 2,
        ..Config::default()
    })
}

fn placed(out: &[Output]) -> Vec<&str> {
    out.iter()
        .filter_map(|o| match o {
            Output::Place { room } => Some(room.as_str()),
            _ => None,
        })
        .collect()
}

fn vacated(out: &[Output]) -> Vec<&str> {
    out.iter()
        .filter_map(|o| match o {
            Output::Vacated { room } => Some(room.as_str()),
            _ => None,
        })
        .collect()
}

#[test]
fn a_first_join_waits_for_its_room_to_be_placed_and_is_asked_once() {
    let mut h = clustered();
    let (a, b) = (h.connect(), h.connect());
    let out = h.send(a, &join("demo", "Ada", None));
    assert_eq!(placed(&out), ["demo"]);
    assert!(welcome_of(&out, a).is_none(), "no welcome before placement");
    let out = h.send(b, &join("demo", "Bo", None));
    assert!(placed(&out).is_empty(), "one question per room at a time");

    h.rooms.handle_placed("demo", Placement::Here, h.now);
    let out = h.drain();
    let (wa, wb) = (welcome_of(&out, a).unwrap(), welcome_of(&out, b).unwrap());
    assert_eq!(wb.peers[0].id, wa.id, "admitted in the order they came");

    // The room is hosted now: the next join goes straight in, and a full room is still full.
    let c = h.connect();
    let out = h.send(c, &join("demo", "Cy", None));
    assert!(placed(&out).is_empty());
    assert_eq!(error_code(&out, c), Some(ErrorCode::RoomFull));
}

#[test]
fn a_room_hosted_elsewhere_sends_its_pages_there() {
    let mut h = clustered();
    let a = h.connect();
    h.send(a, &join("demo", "Ada", None));
    let url = "https://node-b.example:8443".to_owned();
    h.rooms
        .handle_placed("demo", Placement::Elsewhere { url: url.clone() }, h.now);
    let out = h.drain();
    assert_eq!(sent_to(&out, a), [ServerMessage::Moved { url: Some(url) }]);
    assert_eq!(closed(&out, a), Some(close_code::MOVED));
    // Not hosted here: the next join asks again.
    let b = h.connect();
    assert_eq!(placed(&h.send(b, &join("demo", "Bo", None))), ["demo"]);
}

#[test]
fn an_unplaceable_room_refuses_its_joins_but_keeps_their_connections() {
    let mut h = clustered();
    let a = h.connect();
    h.send(a, &join("demo", "Ada", None));
    let why = "the cluster's store cannot be reached".to_owned();
    h.rooms
        .handle_placed("demo", Placement::Unavailable { why }, h.now);
    let out = h.drain();
    assert_eq!(error_code(&out, a), Some(ErrorCode::Unavailable));
    assert_eq!(closed(&out, a), None);
    // The page tries again: the room is asked for again.
    assert_eq!(placed(&h.send(a, &join("demo", "Ada", None))), ["demo"]);
}

#[test]
fn an_emptied_room_is_given_back_and_a_closed_waiting_join_is_forgotten() {
    let mut h = clustered();
    let a = h.connect();
    h.send(a, &join("demo", "Ada", None));
    let b = h.connect();
    h.send(b, &join("demo", "Bo", None));
    h.rooms.handle_close(b, CloseKind::Clean, h.now);
    h.rooms.handle_placed("demo", Placement::Here, h.now);
    let out = h.drain();
    assert!(welcome_of(&out, a).is_some());
    assert!(welcome_of(&out, b).is_none(), "closed while waiting");
    assert!(vacated(&out).is_empty());
    h.rooms.handle_close(a, CloseKind::Clean, h.now);
    assert_eq!(vacated(&h.drain()), ["demo"]);
    // A peer that dropped is kept for its resume grace; the room goes back after it.
    let c = h.connect();
    h.send(c, &join("demo", "Cy", None));
    h.rooms.handle_placed("demo", Placement::Here, h.now);
    h.drain();
    h.rooms.handle_close(c, CloseKind::Abrupt, h.now);
    assert!(vacated(&h.drain()).is_empty());
    let out = h.advance(Duration::from_secs(11));
    assert_eq!(vacated(&out), ["demo"]);
}

#[test]
fn a_room_whose_placement_admits_no_one_is_given_back() {
    let mut h = clustered();
    let a = h.connect();
    h.send(a, &join("demo", "", None)); // a bad name: refused after placement
    h.rooms.handle_placed("demo", Placement::Here, h.now);
    let out = h.drain();
    assert_eq!(error_code(&out, a), Some(ErrorCode::BadName));
    assert_eq!(vacated(&out), ["demo"]);
}

#[test]
fn a_lost_room_moves_its_pages_and_draining_gives_every_room_back() {
    let mut h = clustered();
    let (a, b) = (h.connect(), h.connect());
    h.send(a, &join("one", "Ada", None));
    h.send(b, &join("two", "Bo", None));
    h.rooms.handle_placed("one", Placement::Here, h.now);
    h.rooms.handle_placed("two", Placement::Here, h.now);
    h.drain();
    assert_eq!(h.rooms.hosted_rooms(), ["one", "two"]);

    h.rooms.handle_lost("one");
    let out = h.drain();
    assert_eq!(sent_to(&out, a), [ServerMessage::Moved { url: None }]);
    assert_eq!(closed(&out, a), Some(close_code::MOVED));
    assert!(
        vacated(&out).is_empty(),
        "a lost room is not ours to give back"
    );
    assert!(sent_to(&out, b).is_empty(), "other rooms are untouched");

    h.rooms.handle_drain();
    let out = h.drain();
    assert_eq!(sent_to(&out, b), [ServerMessage::Moved { url: None }]);
    assert_eq!(vacated(&out), ["two"]);
    assert_eq!(h.rooms.stats().participants, 0);
    assert!(h.rooms.hosted_rooms().is_empty());
}

#[test]
fn alone_every_room_is_this_servers() {
    let mut h = Harness::new();
    let a = h.connect();
    let out = h.send(a, &join("demo", "Ada", None));
    assert!(placed(&out).is_empty());
    assert!(welcome_of(&out, a).is_some());
    h.rooms.handle_close(a, CloseKind::Clean, h.now);
    assert!(vacated(&h.drain()).is_empty());
}
