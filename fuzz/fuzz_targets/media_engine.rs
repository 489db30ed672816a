//! The media engine's two decoders of untrusted input: SDP offers (`POST /offer`, WHIP, WHEP)
//! and datagrams on the shared media port. The first byte picks which; neither may panic, and
//! a refused offer leaves no session behind.
#![no_main]

use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use huddle_media::{Engine, EngineConfig, LocalAddr, SessionKind, Transform};
use libfuzzer_sys::fuzz_target;

const SERVER: &str = "10.0.0.1:7000";
const OFFER: &str = include_str!("../../crates/huddle-media/tests/fixtures/chromium-sendrecv.sdp");

fn engine() -> Engine {
    static CERT: OnceLock<huddle_media::DtlsCert> = OnceLock::new();
    let addrs = vec![LocalAddr { local: SERVER.parse().unwrap(), public: None }];
    Engine::new(EngineConfig::new(addrs), CERT.get_or_init(Engine::generate_cert).clone())
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, payload)) = data.split_first() else { return };
    let now = Instant::now();
    let mut e = engine();
    if selector % 2 == 0 {
        let sdp = String::from_utf8_lossy(payload);
        let kind = match selector / 2 % 4 {
            0 => SessionKind::Echo(Transform::None),
            1 => SessionKind::Echo(Transform::Edges),
            2 => SessionKind::Publish { room: "r".into() },
            _ => SessionKind::Watch { room: "r".into() },
        };
        let accepted = e.accept(kind, &sdp, now).is_ok();
        assert_eq!(e.session_count(), usize::from(accepted));
    } else {
        // A real session, then the datagram from its would-be peer and from a stranger.
        e.accept(SessionKind::Echo(Transform::None), OFFER, now).unwrap();
        let server: SocketAddr = SERVER.parse().unwrap();
        for source in ["192.0.2.10:35244", "10.9.9.9:1"] {
            let _ = e.handle_receive(now, source.parse().unwrap(), server, payload);
        }
        e.handle_timeout(now + Duration::from_millis(50));
        while e.poll_output().is_some() {}
    }
});
