//! What accepting an offer costs the media thread: `Engine::accept` of a Chromium offer and
//! the session's close, the median of five runs of 300. Each WHIP, WHEP and `POST /offer`
//! pays it on the thread that serves every session (figures in docs/decisions.md).
//!
//! `cargo run --release -p huddle-media --example accept`

use std::time::{Duration, Instant};

use huddle_media::{Engine, EngineConfig, LocalAddr, SessionKind, Transform};

const OFFER: &str = include_str!("../tests/fixtures/chromium-sendrecv.sdp");
const PER_RUN: u32 = 300;

fn main() {
    let addrs = vec![LocalAddr {
        local: ([10, 0, 0, 1], 7000).into(),
        public: None,
    }];
    let mut engine = Engine::new(EngineConfig::new(addrs), Engine::generate_cert());
    let mut runs: Vec<Duration> = (0..5)
        .map(|_| {
            let start = Instant::now();
            for _ in 0..PER_RUN {
                let (id, _answer) = engine
                    .accept(SessionKind::Echo(Transform::None), OFFER, Instant::now())
                    .expect("the fixture offer is accepted");
                engine.close(id);
                while engine.poll_output().is_some() {}
            }
            start.elapsed() / PER_RUN
        })
        .collect();
    runs.sort();
    println!(
        "accept + close: {:?} per offer (median of 5 × {PER_RUN})",
        runs[2]
    );
}
