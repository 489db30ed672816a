//! The media engine's two decoders of untrusted input: SDP offers (`POST /offer`, WHIP, WHEP)
//! and datagrams on the shared media port. The first byte picks which; neither may panic, and
//! a refused offer leaves no session behind.
//!
//! One engine lives across inputs: building one per input, and accepting the fixture offer
//! for every datagram input, cost milliseconds (see docs/fuzzing.md).
//! Offer inputs close the session they opened, so the engine holds nothing of theirs
//! afterwards. Datagram inputs share one session made from the fixture offer, re-made when an
//! input (or the connect timeout) closed it; a virtual clock moves 50 ms per datagram input,
//! so a session that never connects is replaced every ~400 of them. `HUDDLE_FUZZ_FRESH=1`
//! starts every input from a new engine, to check whether a crash depends on earlier inputs.
//!
//! Selector byte: even → the rest is an offer (bits 1–2 pick the session kind); `% 4 == 1` →
//! the rest is a datagram, sent from the fixture's candidate and from a stranger; `% 4 == 3` →
//! a Binding request correctly signed with the session's ICE credentials (so the fuzzer gets
//! past ICE, to DTLS, as a browser would), the server's own checks answered, and then the rest
//! as a datagram from the same peer.
#![no_main]

use std::cell::RefCell;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Once, OnceLock};
use std::time::{Duration, Instant};

use huddle_media::{Engine, EngineConfig, LocalAddr, Output, SessionId, SessionKind, Transform};
use huddle_turn_proto::stun::{AttrType, Class, IntegrityAlg, Message, MessageWriter, Method};
use libfuzzer_sys::fuzz_target;

const SERVER: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)), 7000);
/// The fixture's UDP host candidate (a=candidate … 192.0.2.10 40521). STUN from it reaches the
/// session by its ICE credentials; DTLS, RTP and RTCP only once ICE has a working pair with it
/// (a signed input below makes one), as with a browser.
const PEER: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 10)), 40521);
const STRANGER: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 9, 9, 9)), 1);
const OFFER: &str = include_str!("../../crates/huddle-media/tests/fixtures/chromium-sendrecv.sdp");
/// Time per datagram input: the timers due within it run.
const STEP: Duration = Duration::from_millis(50);
/// Datagram inputs one fixture session serves at most (a connected session that keeps being
/// answered would otherwise live, and gather state, for the whole run).
const MAX_USES: u32 = 1000;

/// The fixture session and the ICE credentials of both ends.
struct Echo {
    id: SessionId,
    /// The server's ufrag and pwd, from the answer.
    ufrag: String,
    pwd: String,
    uses: u32,
}

struct State {
    engine: Engine,
    /// Virtual time: never goes back, moves only as inputs say.
    now: Instant,
    echo: Option<Echo>,
    txid: u64,
}

impl State {
    fn new() -> Self {
        static CERT: OnceLock<huddle_media::DtlsCert> = OnceLock::new();
        static HOOK: Once = Once::new();
        // libfuzzer-sys aborts at any panic, caught or not. `Engine::accept` catches str0m's
        // panics while negotiating (its asserts on the remote description) and refuses the
        // offer, which is the behaviour under test, so those alone may unwind; a str0m panic
        // that the engine does not catch still reaches libfuzzer-sys, which aborts.
        HOOK.call_once(|| {
            let abort = std::panic::take_hook();
            std::panic::set_hook(Box::new(move |info| {
                let in_str0m = info
                    .location()
                    .is_some_and(|l| l.file().contains("/str0m-"));
                if !in_str0m {
                    abort(info);
                }
            }));
        });
        let addrs = vec![LocalAddr {
            local: SERVER,
            public: None,
        }];
        let engine = Engine::new(
            EngineConfig::new(addrs),
            CERT.get_or_init(Engine::generate_cert).clone(),
        );
        State {
            engine,
            now: Instant::now(),
            echo: None,
            txid: 0,
        }
    }

    /// The fixture session, accepted now if the last one is gone or has served its inputs.
    fn echo(&mut self) -> &Echo {
        if let Some(e) = &mut self.echo {
            e.uses += 1;
            if e.uses > MAX_USES {
                self.engine.close(e.id);
                while self.engine.poll_output().is_some() {}
            }
            if !self.engine.sessions().any(|s| s == e.id) {
                self.echo = None;
            }
        }
        let now = self.now;
        let engine = &mut self.engine;
        self.echo.get_or_insert_with(|| {
            let (id, answer) = engine
                .accept(SessionKind::Echo(Transform::None), OFFER, now)
                .unwrap();
            let attr = |name: &str| {
                answer
                    .lines()
                    .find_map(|l| l.strip_prefix(name))
                    .expect("the answer has ICE credentials")
                    .trim()
                    .to_owned()
            };
            Echo {
                id,
                ufrag: attr("a=ice-ufrag:"),
                pwd: attr("a=ice-pwd:"),
                uses: 1,
            }
        })
    }

    fn next_txid(&mut self) -> [u8; 12] {
        self.txid += 1;
        let mut id = [0x5a; 12];
        id[4..].copy_from_slice(&self.txid.to_be_bytes());
        id
    }

    /// Drains the engine; answers the server's Binding requests to `PEER` if `answer_checks`.
    fn drain(&mut self, answer_checks: bool) {
        let mut replies = Vec::new();
        while let Some(out) = self.engine.poll_output() {
            if let Output::Transmit(t) = out
                && answer_checks
                && t.destination == PEER
                && let Ok(msg) = Message::parse(&t.contents)
                && msg.class() == Class::Request
                && msg.method() == Method::BINDING
            {
                replies.push(msg.transaction_id());
            }
        }
        // The browser's side of the check, signed with its pwd (the fixture's a=ice-pwd).
        for txid in replies {
            let mut buf = Vec::new();
            MessageWriter::new(&mut buf, Class::Success, Method::BINDING, txid)
                .xor_address(AttrType::XOR_MAPPED_ADDRESS, SERVER)
                .integrity(IntegrityAlg::Sha1, b"5aI/4THkaraEkrw8MeXIsynf")
                .fingerprint();
            let _ = self.engine.handle_receive(self.now, PEER, SERVER, &buf);
            while self.engine.poll_output().is_some() {}
        }
    }
}

/// A Binding request from the browser: `flags` bit 0 USE-CANDIDATE, bit 1 ICE-CONTROLLED
/// (a role conflict) instead of ICE-CONTROLLING, bit 2 no PRIORITY, bit 3 no FINGERPRINT;
/// `attrs` are extra attributes, each a type (2 bytes), a length (1 byte) and the value.
fn binding_request(echo: &Echo, txid: [u8; 12], flags: u8, mut attrs: &[u8]) -> Vec<u8> {
    let mut buf = Vec::new();
    let mut w = MessageWriter::new(&mut buf, Class::Request, Method::BINDING, txid);
    w.attr(
        AttrType::USERNAME,
        format!("{}:RxzM", echo.ufrag).as_bytes(),
    );
    if flags & 4 == 0 {
        w.u32(AttrType::PRIORITY, 1_853_824_767);
    }
    let role = if flags & 2 == 0 {
        AttrType::ICE_CONTROLLING
    } else {
        AttrType::ICE_CONTROLLED
    };
    w.attr(role, &[1, 2, 3, 4, 5, 6, 7, 8]);
    if flags & 1 != 0 {
        w.attr(AttrType::USE_CANDIDATE, &[]);
    }
    while let [t0, t1, len, rest @ ..] = attrs {
        let len = usize::from(*len).min(rest.len());
        w.attr(AttrType(u16::from_be_bytes([*t0, *t1])), &rest[..len]);
        attrs = &rest[len..];
    }
    w.integrity(IntegrityAlg::Sha1, echo.pwd.as_bytes());
    if flags & 8 == 0 {
        w.fingerprint();
    }
    buf
}

thread_local! {
    static STATE: RefCell<Option<State>> = const { RefCell::new(None) };
}

fn fresh() -> bool {
    static FRESH: OnceLock<bool> = OnceLock::new();
    *FRESH.get_or_init(|| std::env::var_os("HUDDLE_FUZZ_FRESH").is_some_and(|v| v != "0"))
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, payload)) = data.split_first() else {
        return;
    };
    STATE.with_borrow_mut(|state| {
        if fresh() {
            *state = None;
        }
        let st = state.get_or_insert_with(State::new);
        if selector % 2 == 0 {
            offer(st, selector, payload);
        } else {
            datagram(st, selector, payload);
        }
    });
});

fn offer(st: &mut State, selector: u8, payload: &[u8]) {
    let sdp = String::from_utf8_lossy(payload);
    let kind = match selector / 2 % 4 {
        0 => SessionKind::Echo(Transform::None),
        1 => SessionKind::Echo(Transform::Edges),
        2 => SessionKind::Publish { room: "r".into() },
        _ => SessionKind::Watch { room: "r".into() },
    };
    let e = &mut st.engine;
    let before = e.session_count();
    if let Ok((id, _answer)) = e.accept(kind, &sdp, st.now) {
        assert_eq!(
            e.session_count(),
            before + 1,
            "an accepted offer adds one session"
        );
        assert!(e.sessions().any(|s| s == id));
        e.close(id);
    }
    assert_eq!(
        e.session_count(),
        before,
        "a refused offer leaves no session behind"
    );
    st.drain(false);
}

fn datagram(st: &mut State, selector: u8, payload: &[u8]) {
    let now = st.now;
    if selector % 4 == 1 {
        st.echo();
        for source in [PEER, STRANGER] {
            let _ = st.engine.handle_receive(now, source, SERVER, payload);
        }
        st.drain(false);
    } else {
        let (flags, attrs, rest) = match payload {
            [flags, n, rest @ ..] => {
                let n = usize::from(*n).min(rest.len());
                (*flags, &rest[..n], &rest[n..])
            }
            [flags] => (*flags, &[][..], &[][..]),
            [] => (0, &[][..], &[][..]),
        };
        let txid = st.next_txid();
        let request = binding_request(st.echo(), txid, flags, attrs);
        let _ = st.engine.handle_receive(now, PEER, SERVER, &request);
        st.drain(true);
        if !rest.is_empty() {
            let _ = st.engine.handle_receive(now, PEER, SERVER, rest);
            st.drain(true);
        }
    }
    st.now += STEP;
    st.engine.handle_timeout(st.now);
    st.drain(selector % 4 == 3);
}
