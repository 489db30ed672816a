//! The signaling core under any sequence of connects, frames, closes and time steps: it never
//! panics, never routes outside a room, and its bookkeeping stays consistent.
#![no_main]

use std::time::{Duration, Instant};

use huddle_signal_proto::{CloseKind, Config, ConnId, Output, Rooms};
use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use rand::SeedableRng;
use rand::rngs::StdRng;

#[derive(Arbitrary, Debug)]
enum Op {
    Connect(u8),
    Join { conn: u8, room: u8, resume: bool },
    Text { conn: u8, text: String },
    Signal { conn: u8, to_conn: u8 },
    Close { conn: u8, clean: bool },
    Pong(u8),
    Advance(u16),
}

fuzz_target!(|ops: Vec<Op>| {
    let mut now = Instant::now();
    let config = Config {
        capacity: 3,
        ..Config::default()
    };
    let mut rooms = Rooms::new(config, StdRng::seed_from_u64(0), now, 1_800_000_000);
    let mut ids: Vec<Option<String>> = vec![None; 8];
    let mut tokens: Vec<Option<String>> = vec![None; 8];
    for op in ops.into_iter().take(128) {
        match op {
            Op::Connect(c) => rooms.handle_connect(ConnId(u64::from(c % 8)), now),
            Op::Join { conn, room, resume } => {
                let c = usize::from(conn % 8);
                let token = if resume { tokens[c].clone() } else { None };
                let msg = format!(
                    r#"{{"type":"join","v":1,"room":"r{}","name":"n{c}"{}}}"#,
                    room % 3,
                    token
                        .map(|t| format!(r#","resume":"{t}""#))
                        .unwrap_or_default()
                );
                rooms.handle_text(ConnId(c as u64), &msg, now);
            }
            Op::Text { conn, text } => rooms.handle_text(ConnId(u64::from(conn % 8)), &text, now),
            Op::Signal { conn, to_conn } => {
                if let Some(to) = &ids[usize::from(to_conn % 8)] {
                    let msg = format!(
                        r#"{{"type":"signal","to":"{to}","candidate":{{"candidate":""}}}}"#
                    );
                    rooms.handle_text(ConnId(u64::from(conn % 8)), &msg, now);
                }
            }
            Op::Close { conn, clean } => {
                let kind = if clean {
                    CloseKind::Clean
                } else {
                    CloseKind::Abrupt
                };
                rooms.handle_close(ConnId(u64::from(conn % 8)), kind, now);
            }
            Op::Pong(c) => rooms.handle_frame(ConnId(u64::from(c % 8)), now),
            Op::Advance(ms) => {
                now += Duration::from_millis(u64::from(ms) * 10);
                rooms.handle_timeout(now);
            }
        }
        while let Some(out) = rooms.poll_output() {
            if let Output::Send {
                conn,
                msg: huddle_signal_proto::ServerMessage::Welcome(w),
            } = out
            {
                let c = conn.0 as usize % 8;
                ids[c] = Some(w.id.0.clone());
                tokens[c] = Some(w.resume.clone());
                assert!(w.peers.len() < 3, "capacity respected");
            }
        }
        let stats = rooms.stats();
        assert!(stats.connections <= 8);
        assert!(stats.rooms <= stats.participants);
    }
});
