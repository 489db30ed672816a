//! What the forwarding decision costs per packet: `Sfu::route` in rooms of 4, 25 and 100 where
//! every member publishes a camera in three simulcast layers and receives everyone else's, for
//! three seconds of 30 fps (one packet a frame and layer, keyframes every second), with the
//! core's timer run between frames. Prints the time per `route` call and per forwarded packet,
//! the median of five runs. It is the SFU's work per packet on the media worker, before str0m
//! encrypts and sends it.
//!
//! `cargo run --release -p huddle-sfu --example route`

use std::time::{Duration, Instant};

use huddle_sfu::{Layer, Output, Owner, Packet, SessionId, Sfu, TrackInfo};

const FRAMES: u64 = 90;
const BYTES: [usize; 3] = [600, 2_000, 6_000];

fn main() {
    for n in [4, 25, 100] {
        let mut runs: Vec<(Duration, f64)> = (0..5).map(|_| run(n)).collect();
        runs.sort_by_key(|r| r.0);
        let (per_call, per_target) = runs[2];
        println!(
            "room of {n:>3}: {:>7.0} ns per route() call, {per_target:>6.1} ns per forwarded packet",
            per_call.as_nanos()
        );
    }
}

/// One run in a room of `n`: the time per call, and per forwarded packet in ns.
/// What a host does with the core's outputs, as far as forwarding needs: every attached
/// track's line is ready at once.
fn act(sfu: &mut Sfu, now: Instant) {
    while let Some(o) = sfu.poll_output() {
        if let Output::Attach {
            subscriber, track, ..
        } = o
        {
            sfu.line_ready(subscriber, track, now);
        }
    }
}

fn run(n: u64) -> (Duration, f64) {
    let mut sfu = Sfu::new();
    let mut now = Instant::now();
    for s in 0..n {
        sfu.join("r", SessionId(s), Owner(s), true, None, now);
        sfu.ready(SessionId(s), now);
    }
    let tracks: Vec<_> = (0..n)
        .map(|s| {
            sfu.publish(SessionId(s), TrackInfo::video(3), now)
                .expect("a member publishes")
        })
        .collect();
    act(&mut sfu, now);
    let (mut calls, mut targets, mut spent) = (0u32, 0usize, Duration::ZERO);
    for i in 0..FRAMES {
        let start = Instant::now();
        for &track in &tracks {
            for (l, bytes) in BYTES.into_iter().enumerate() {
                let packet = Packet {
                    layer: Layer(l as u8),
                    keyframe: i % 30 == 0,
                    seq: i,
                    time: i * 3_000,
                    hz: 90_000,
                    bytes,
                    audio_level: None,
                };
                targets += sfu.route(track, packet, now).len();
                calls += 1;
            }
        }
        spent += start.elapsed();
        now += Duration::from_millis(33);
        sfu.handle_timeout(now);
        act(&mut sfu, now);
    }
    (
        spent / calls,
        spent.as_nanos() as f64 / targets.max(1) as f64,
    )
}
