//! The SFU core under simulated time: every input carries `now`, which the tests move.

use std::time::{Duration, Instant};

use proptest::prelude::*;

use crate::*;

const HZ: u32 = 90_000;

struct Call {
    sfu: Sfu,
    now: Instant,
    /// RTP time of the next frame per layer: each layer has its own clock offset, as at a
    /// real publisher.
    rtp: [u64; MAX_LAYERS],
    /// Sequence number of the next packet per layer, each layer its own stream.
    seq: [u64; MAX_LAYERS],
    /// Outputs taken from the core and not yet given to the test.
    taken: Vec<Output>,
}

impl Call {
    fn new() -> Self {
        Call {
            sfu: Sfu::new(),
            now: Instant::now(),
            rtp: [1_000, 5_000_000, 9_000_000, 0],
            seq: [100, 20_000, 65_000, 0],
            taken: Vec::new(),
        }
    }

    fn member(&mut self, room: &str, s: u64) -> SessionId {
        let id = SessionId(s);
        self.sfu.join(room, id, Owner(s), true, None, self.now);
        self.sfu.ready(id, self.now);
        id
    }

    /// A connection of `owner` that only sends (a page's upstream, WHIP).
    fn sender(&mut self, room: &str, s: u64, owner: u64) -> SessionId {
        let id = SessionId(s);
        self.sfu.join(room, id, Owner(owner), false, None, self.now);
        self.sfu.ready(id, self.now);
        id
    }

    /// The layers last reported active for `track`.
    fn active(out: &[Output], track: TrackId) -> Option<[bool; MAX_LAYERS]> {
        out.iter().rev().find_map(|o| match o {
            Output::Layers {
                track: t, active, ..
            } if *t == track => Some(*active),
            _ => None,
        })
    }

    /// What the core said since the last call.
    fn outputs(&mut self) -> Vec<Output> {
        self.act();
        std::mem::take(&mut self.taken)
    }

    /// Does what a host does with the core's outputs: here, an attached track's line is ready
    /// at once (a host with a negotiated free line for each).
    fn act(&mut self) {
        while let Some(o) = self.sfu.poll_output() {
            if let Output::Attach {
                subscriber, track, ..
            } = o
            {
                self.sfu.line_ready(subscriber, track, self.now);
            }
            self.taken.push(o);
        }
    }

    /// One frame (a packet here) of every layer of `track` (30 fps), the time moving 33 ms;
    /// `key` marks them keyframes. Returns who got which layer at which RTP time.
    fn frames(&mut self, track: TrackId, layers: u8, key: bool) -> Vec<(SessionId, Layer, u64)> {
        self.act();
        let mut got = Vec::new();
        for l in 0..layers {
            let packet = Packet {
                layer: Layer(l),
                keyframe: key,
                seq: self.seq[usize::from(l)],
                time: self.rtp[usize::from(l)],
                hz: HZ,
                bytes: [600, 2_000, 6_000][usize::from(l)],
                audio_level: None,
            };
            self.seq[usize::from(l)] += 1;
            for t in self.sfu.route(track, packet, self.now) {
                got.push((t.subscriber, Layer(l), t.time));
            }
        }
        for r in &mut self.rtp {
            *r += 3_000;
        }
        self.tick(Duration::from_millis(33));
        got
    }

    fn tick(&mut self, d: Duration) {
        self.now += d;
        self.sfu.handle_timeout(self.now);
    }
}

/// A camera in three simulcast layers whose top layer is 1280x720.
fn camera_720p() -> TrackInfo {
    TrackInfo {
        width: 1280,
        height: 720,
        ..TrackInfo::video(3)
    }
}

/// A video packet of `layer`.
fn frame(layer: u8) -> Packet {
    Packet {
        layer: Layer(layer),
        keyframe: false,
        seq: 0,
        time: 0,
        hz: HZ,
        bytes: 1_000,
        audio_level: None,
    }
}

/// An Opus packet at RFC 6464 `level` (-dBov).
fn voice(level: u8) -> Packet {
    Packet {
        layer: Layer(0),
        keyframe: false,
        seq: 0,
        time: 0,
        hz: 48_000,
        bytes: 80,
        audio_level: Some(level),
    }
}

#[test]
fn a_keyframe_is_asked_for_a_new_line_only_once_it_can_carry_it() {
    let mut c = Call::new();
    let (a, b) = (c.member("r", 1), c.member("r", 2));
    let video = c.sfu.publish(a, TrackInfo::video(1), c.now).unwrap();
    // The host gives b's track a line of a new offer: not ready until the page answers.
    let out: Vec<_> = std::iter::from_fn(|| c.sfu.poll_output()).collect();
    assert!(out.contains(&Output::Attach {
        subscriber: b,
        track: video,
        kind: MediaKind::Video
    }));
    let asked = |out: &[Output]| {
        out.iter()
            .any(|o| matches!(o, Output::RequestKeyframe { .. }))
    };
    assert!(!asked(&out), "no keyframe for a line still negotiated");
    let early: Vec<_> = (0..3)
        .flat_map(|_| {
            c.sfu
                .route(
                    video,
                    Packet {
                        keyframe: true,
                        ..frame(0)
                    },
                    c.now,
                )
                .to_vec()
        })
        .collect();
    assert!(
        early.is_empty(),
        "nothing is sent on a line being negotiated"
    );

    c.sfu.line_ready(b, video, c.now);
    let out: Vec<_> = std::iter::from_fn(|| c.sfu.poll_output()).collect();
    assert!(asked(&out), "asked as soon as the line can carry it");
    let sent = c.sfu.route(
        video,
        Packet {
            keyframe: true,
            ..frame(0)
        },
        c.now,
    );
    assert_eq!(sent.iter().map(|t| t.subscriber).collect::<Vec<_>>(), [b]);
}

#[test]
fn tracks_reach_every_other_member_of_their_room_only() {
    let mut c = Call::new();
    let (a, b) = (c.member("r", 1), c.member("r", 2));
    let _elsewhere = c.member("elsewhere", 3);
    let video = c.sfu.publish(a, TrackInfo::video(1), c.now).unwrap();
    let audio = c.sfu.publish(a, TrackInfo::audio(), c.now).unwrap();
    let out = c.outputs();
    for (track, kind) in [(video, MediaKind::Video), (audio, MediaKind::Audio)] {
        assert!(out.contains(&Output::Subscribe {
            subscriber: b,
            track,
        }));
        assert!(out.contains(&Output::Attach {
            subscriber: b,
            track,
            kind
        }));
    }
    assert!(
        out.iter()
            .all(|o| !matches!(o, Output::Subscribe { subscriber, .. } if *subscriber != b)),
        "neither the publisher nor another room subscribes: {out:?}"
    );
    // Video starts at a keyframe, asked for at once.
    assert!(out.contains(&Output::RequestKeyframe {
        publisher: a,
        track: video,
        layer: Layer(0)
    }));
    assert!(
        c.frames(video, 1, false).is_empty(),
        "no picture before a keyframe"
    );
    let got = c.frames(video, 1, true);
    assert_eq!(got.iter().map(|g| g.0).collect::<Vec<_>>(), [b]);
    assert_eq!(c.frames(video, 1, false).len(), 1);
    // Audio flows from its first packet.
    assert_eq!(
        c.sfu.route(audio, voice(30), c.now),
        &[Target {
            subscriber: b,
            seq: 0,
            time: 0,
            starts_run: true,
        }]
    );
}

#[test]
fn a_latecomer_gets_what_is_published_and_a_leaver_takes_it_away() {
    let mut c = Call::new();
    let a = c.member("r", 1);
    let video = c.sfu.publish(a, TrackInfo::video(3), c.now).unwrap();
    let out = c.outputs();
    assert!(
        out.contains(&Output::Layers {
            publisher: a,
            track: video,
            active: [false; MAX_LAYERS]
        }),
        "nobody watches: every layer may pause ({out:?})"
    );
    let b = c.member("r", 2);
    let out = c.outputs();
    assert!(out.contains(&Output::Attach {
        subscriber: b,
        track: video,
        kind: MediaKind::Video
    }));
    assert!(
        out.contains(&Output::Layers {
            publisher: a,
            track: video,
            active: [true, false, true, false]
        }),
        "the top for the viewer, and the smallest as long as anyone watches: {out:?}"
    );
    c.sfu.leave(a, c.now);
    let out = c.outputs();
    assert!(out.contains(&Output::Unsubscribe {
        subscriber: b,
        track: video
    }));
    assert!(c.sfu.tracks("r").is_empty());
    c.sfu.leave(b, c.now);
    assert_eq!(c.sfu.room_count(), 0);
}

#[test]
fn the_estimate_picks_the_layer_and_switches_wait_for_its_keyframe() {
    let mut c = Call::new();
    let a = c.member("r", 1);
    let (rich, poor) = (c.member("r", 2), c.member("r", 3));
    let video = c.sfu.publish(a, TrackInfo::video(3), c.now).unwrap();
    // 30 fps of 600 / 2,000 / 6,000 bytes: ~144 kbit/s, 480 kbit/s and 1.44 Mbit/s, measured
    // after a second of keyframes.
    for _ in 0..35 {
        c.frames(video, 3, true);
    }
    c.sfu.set_estimate(rich, 5_000_000, c.now);
    c.sfu.set_estimate(poor, 300_000, c.now);
    // The poor link is asked to carry its layer and the next one up, and to probe for the top.
    let bitrate = c.outputs().into_iter().rev().find_map(|o| match o {
        Output::Bitrate {
            subscriber,
            minimum,
            desired,
        } if subscriber == poor => Some((minimum, desired)),
        _ => None,
    });
    let (minimum, desired) = bitrate.expect("a bitrate for the poor link");
    assert!((450_000..=520_000).contains(&minimum), "{minimum}");
    assert!((1_400_000..=1_600_000).contains(&desired), "{desired}");
    assert_eq!(c.sfu.target_layer(rich, video), Some(Layer(2)));
    assert_eq!(c.sfu.target_layer(poor, video), Some(Layer(0)));
    let got = c.frames(video, 3, true);
    assert!(got.contains(&(rich, Layer(2), got.iter().find(|g| g.0 == rich).unwrap().2)));
    assert!(got.iter().any(|g| g.0 == poor && g.1 == Layer(0)));
    assert_eq!(got.len(), 2, "one layer each: {got:?}");

    // The poor link improves: it moves up only at a keyframe of layer 1, and its RTP time
    // goes on from where it was (the layers' clocks are millions of ticks apart).
    let before = c.frames(video, 3, false);
    let last = before.iter().find(|g| g.0 == poor).unwrap().2;
    c.sfu.set_estimate(poor, 900_000, c.now);
    assert_eq!(c.sfu.target_layer(poor, video), Some(Layer(1)));
    assert!(c.outputs().contains(&Output::RequestKeyframe {
        publisher: a,
        track: video,
        layer: Layer(1)
    }));
    let during = c.frames(video, 3, false);
    let kept = during.iter().find(|g| g.0 == poor).unwrap();
    assert_eq!(kept.1, Layer(0), "the old layer flows until the switch");
    // Layer 0's frame of that instant still goes out (it arrives first), then the switch.
    let after = c.frames(video, 3, true);
    let switched = after.iter().rev().find(|g| g.0 == poor).unwrap();
    assert_eq!(switched.1, Layer(1));
    let step = switched.2.wrapping_sub(kept.2);
    assert!(
        (3_000..=3_010).contains(&step),
        "continuous: {} then {} (step {step})",
        kept.2,
        switched.2
    );
    assert!(kept.2 > last);
    let next = c.frames(video, 3, false);
    assert_eq!(
        next.iter().find(|g| g.0 == poor).unwrap().2,
        switched.2 + 3_000
    );
}

#[test]
fn a_participants_sending_connection_receives_nothing() {
    let mut c = Call::new();
    // Each participant sends on one connection and receives on another.
    let (a_up, b_up) = (c.sender("r", 1, 10), c.sender("r", 3, 20));
    let a_down = SessionId(2);
    c.sfu.join("r", a_down, Owner(10), true, None, c.now);
    c.sfu.ready(a_down, c.now);
    let b_down = SessionId(4);
    c.sfu.join("r", b_down, Owner(20), true, None, c.now);
    c.sfu.ready(b_down, c.now);
    let video = c.sfu.publish(b_up, camera_720p(), c.now).unwrap();
    let small = View {
        visible: true,
        width: 160,
        height: 90,
    };
    c.sfu.set_views(a_down, &[(video, small)], c.now);
    let out = c.outputs();
    let subscribers: Vec<SessionId> = out
        .iter()
        .filter_map(|o| match o {
            Output::Subscribe { subscriber, .. } => Some(*subscriber),
            _ => None,
        })
        .collect();
    assert_eq!(subscribers, [a_down], "{out:?}");
    assert!(
        !out.iter()
            .any(|o| matches!(o, Output::Bitrate { subscriber, .. } if *subscriber == a_up)),
        "no estimator to steer on a sending connection: {out:?}"
    );
    // The only tile is small: the publisher pauses everything above the smallest layer.
    assert_eq!(
        Call::active(&out, video),
        Some([true, false, false, false]),
        "{out:?}"
    );
    let got = c.frames(video, 3, true);
    assert_eq!(got, [(a_down, Layer(0), got[0].2)]);
}

#[test]
fn dynacast_keeps_the_layers_tiles_ask_for_while_a_link_is_short() {
    let mut c = Call::new();
    let (a, b) = (c.member("r", 1), c.member("r", 2));
    let video = c.sfu.publish(a, camera_720p(), c.now).unwrap();
    for _ in 0..35 {
        c.frames(video, 3, true);
    }
    c.outputs();
    // A short link receives the smallest layer, but its tile asks for the top: the top keeps
    // being encoded, so that the estimator's probe can be answered with it and the layer
    // does not pause and resume with every move of the estimate.
    c.sfu.set_estimate(b, 300_000, c.now);
    assert_eq!(c.sfu.target_layer(b, video), Some(Layer(0)));
    c.sfu.set_estimate(b, 350_000, c.now);
    c.frames(video, 3, true);
    let out = c.outputs();
    assert_eq!(Call::active(&out, video), None, "nothing paused: {out:?}");
    // Once the tile is small, the top is paused; hidden, only the smallest flows.
    let small = View {
        visible: true,
        width: 320,
        height: 180,
    };
    c.sfu.set_views(b, &[(video, small)], c.now);
    assert_eq!(
        Call::active(&c.outputs(), video),
        Some([true, false, false, false])
    );
}

#[test]
fn a_room_of_many_microphones_reserves_audio_only_for_the_loudest() {
    let mut c = Call::new();
    let watcher = c.member("r", 100);
    let a = c.member("r", 1);
    let video = c.sfu.publish(a, TrackInfo::video(3), c.now).unwrap();
    for s in 2..60 {
        let m = c.member("r", s);
        c.sfu.publish(m, TrackInfo::audio(), c.now).unwrap();
    }
    for _ in 0..35 {
        c.frames(video, 3, true);
    }
    // 59 microphones at 48 kbit/s each would take 2.8 Mbit/s of this 1.6 Mbit/s link; three
    // are ever forwarded, which leaves the camera's middle layer room.
    c.sfu.set_estimate(watcher, 1_600_000, c.now);
    assert_eq!(c.sfu.target_layer(watcher, video), Some(Layer(1)));
}

#[test]
fn tile_size_caps_the_layer_and_hidden_tiles_get_nothing() {
    let mut c = Call::new();
    let a = c.member("r", 1);
    let b = c.member("r", 2);
    let video = c.sfu.publish(a, camera_720p(), c.now).unwrap();
    let small = View {
        visible: true,
        width: 320,
        height: 180,
    };
    c.sfu.set_views(b, &[(video, small)], c.now);
    assert_eq!(c.sfu.target_layer(b, video), Some(Layer(0)));
    let mid = View {
        width: 400,
        height: 225,
        ..small
    };
    c.sfu.set_views(b, &[(video, mid)], c.now);
    assert_eq!(c.sfu.target_layer(b, video), Some(Layer(1)));
    c.frames(video, 3, true);
    assert_eq!(c.sfu.current_layer(b, video), Some(Layer(1)));
    c.outputs();
    let hidden = View {
        visible: false,
        ..mid
    };
    c.sfu.set_views(b, &[(video, hidden)], c.now);
    assert_eq!(c.sfu.current_layer(b, video), None, "paused at once");
    assert!(c.frames(video, 3, true).is_empty());
    assert!(c.outputs().contains(&Output::Layers {
        publisher: a,
        track: video,
        active: [true, false, false, false]
    }));
}

#[test]
fn layer_sizes_seen_in_keyframes_guide_the_choice() {
    let mut c = Call::new();
    let a = c.member("r", 1);
    let b = c.member("r", 2);
    let video = c.sfu.publish(a, TrackInfo::video(3), c.now).unwrap();
    let view = |width, height| View {
        visible: true,
        width,
        height,
    };
    c.sfu.set_views(b, &[(video, view(300, 170))], c.now);
    assert_eq!(
        c.sfu.target_layer(b, video),
        Some(Layer(2)),
        "no size known: the top"
    );
    // The smallest layer is 320×180: the others are taken as 640×360 and 1280×720.
    c.sfu.set_layer_size(video, Layer(0), 320, 180, c.now);
    assert_eq!(c.sfu.target_layer(b, video), Some(Layer(0)));
    c.sfu.set_views(b, &[(video, view(600, 340))], c.now);
    assert_eq!(c.sfu.target_layer(b, video), Some(Layer(1)));
    c.sfu.set_views(b, &[(video, view(1920, 1080))], c.now);
    assert_eq!(
        c.sfu.target_layer(b, video),
        Some(Layer(2)),
        "larger than any: the top"
    );
}

#[test]
fn a_layer_the_encoder_does_not_send_is_given_up_for_one_it_does() {
    let mut c = Call::new();
    let a = c.member("r", 1);
    let b = c.member("r", 2);
    let video = c.sfu.publish(a, TrackInfo::video(3), c.now).unwrap();
    assert_eq!(c.sfu.target_layer(b, video), Some(Layer(2)));
    // The publisher's encoder sends only its two smaller layers (a small camera, a busy CPU).
    let mut got = Vec::new();
    for i in 0..60 {
        got = c.frames(video, 2, i % 15 == 0);
    }
    assert_eq!(
        c.sfu.target_layer(b, video),
        Some(Layer(1)),
        "the top never came"
    );
    assert_eq!(got, [(b, Layer(1), got[0].2)], "layer h flows");
}

#[test]
fn screen_share_is_sharpened_first_when_the_link_is_short() {
    let mut c = Call::new();
    let a = c.member("r", 1);
    let b = c.member("r", 2);
    let camera = c.sfu.publish(a, TrackInfo::video(3), c.now).unwrap();
    let screen = TrackInfo {
        screen: true,
        ..TrackInfo::video(2)
    };
    let share = c.sfu.publish(a, screen, c.now).unwrap();
    // Unmeasured, layers count as 150 kbit/s, 500 kbit/s and 1.5 Mbit/s: both smallest
    // layers and one step up fit, and the step goes to the share.
    c.sfu.set_estimate(b, 900_000, c.now);
    assert_eq!(c.sfu.target_layer(b, share), Some(Layer(1)));
    assert_eq!(c.sfu.target_layer(b, camera), Some(Layer(0)));
    c.sfu.set_estimate(b, 1_600_000, c.now);
    assert_eq!(c.sfu.target_layer(b, camera), Some(Layer(1)));
}

#[test]
fn a_tile_on_screen_keeps_a_picture_however_low_the_estimate() {
    // Seen in the browser tests on a busy machine: a page's estimate fell to 92 kbit/s while
    // the server sent it little, and the cameras of those who joined next were paused for
    // good (nothing sent, so nothing to raise the estimate with).
    let mut c = Call::new();
    let watcher = c.member("r", 1);
    let cameras: Vec<TrackId> = (2..5)
        .map(|s| {
            let m = c.member("r", s);
            c.sfu.publish(m, camera_720p(), c.now).unwrap()
        })
        .collect();
    c.sfu.set_estimate(watcher, 92_000, c.now);
    for &camera in &cameras {
        assert_eq!(c.sfu.target_layer(watcher, camera), Some(Layer(0)));
    }
    // A hidden tile still gets nothing.
    let hidden = View {
        visible: false,
        width: 0,
        height: 0,
    };
    c.sfu.set_views(watcher, &[(cameras[0], hidden)], c.now);
    assert_eq!(c.sfu.target_layer(watcher, cameras[0]), None);
}

#[test]
fn keyframe_requests_are_at_most_one_a_second_per_layer() {
    let mut c = Call::new();
    let a = c.member("r", 1);
    let video = c.sfu.publish(a, TrackInfo::video(1), c.now).unwrap();
    let b = c.member("r", 2);
    let count = |c: &mut Call| {
        c.outputs()
            .iter()
            .filter(|o| matches!(o, Output::RequestKeyframe { .. }))
            .count()
    };
    assert_eq!(count(&mut c), 1);
    for _ in 0..10 {
        c.sfu.keyframe_wanted(b, video, c.now);
        c.tick(Duration::from_millis(50));
    }
    assert_eq!(count(&mut c), 0, "within the second");
    c.tick(Duration::from_millis(600));
    c.sfu.keyframe_wanted(b, video, c.now);
    assert_eq!(count(&mut c), 1, "unanswered, asked again after a second");
}

#[test]
fn only_the_loudest_microphones_are_forwarded_and_the_pages_are_told() {
    let mut c = Call::new();
    let listener = c.member("r", 100);
    let mut mics = Vec::new();
    for s in 1..=6 {
        let id = c.member("r", s);
        mics.push((id, c.sfu.publish(id, TrackInfo::audio(), c.now).unwrap()));
    }
    // Two speak (levels 20 and 30 -dBov), four are near silence.
    let mut forwarded = vec![0; mics.len()];
    for _ in 0..100 {
        c.act();
        for (i, (_, track)) in mics.iter().enumerate() {
            let level = [20, 30, 110, 115, 120, 127][i];
            let frame = voice(level);
            if c.sfu
                .route(*track, frame, c.now)
                .iter()
                .any(|t| t.subscriber == listener)
            {
                forwarded[i] += 1;
            }
        }
        c.tick(Duration::from_millis(20));
    }
    assert!(forwarded[0] > 90 && forwarded[1] > 90, "{forwarded:?}");
    assert!(forwarded[2..].iter().all(|&n| n == 0), "{forwarded:?}");
    let speakers = c
        .outputs()
        .into_iter()
        .filter_map(|o| match o {
            Output::Speakers { room, sessions } => Some((room, sessions)),
            _ => None,
        })
        .next_back();
    assert_eq!(speakers, Some(("r".to_owned(), vec![mics[0].0, mics[1].0])));
}

/// The tracks on `subscriber`'s lines after `out`, given those before.
fn lined(out: &[Output], subscriber: SessionId, before: &mut Vec<TrackId>) {
    for o in out {
        match o {
            Output::Attach {
                subscriber: s,
                track,
                ..
            } if *s == subscriber => {
                assert!(!before.contains(track), "{track} attached twice");
                before.push(*track);
            }
            Output::Detach {
                subscriber: s,
                track,
            }
            | Output::Unsubscribe {
                subscriber: s,
                track,
            } if *s == subscriber => before.retain(|t| t != track),
            _ => {}
        }
    }
}

#[test]
fn a_room_of_a_hundred_gives_each_page_a_few_lines_and_tells_it_of_every_track() {
    let mut c = Call::new();
    let mut members = Vec::new();
    let mut lines: Vec<Vec<TrackId>> = Vec::new();
    let mut subscribed = vec![0; 100];
    for s in 0..100 {
        let m = c.member("r", s);
        c.sfu.publish(m, camera_720p(), c.now).unwrap();
        c.sfu.publish(m, TrackInfo::audio(), c.now).unwrap();
        members.push(m);
        lines.push(Vec::new());
        let out = c.outputs();
        for (i, m) in members.iter().enumerate() {
            lined(&out, *m, &mut lines[i]);
            subscribed[i] += out
                .iter()
                .filter(|o| matches!(o, Output::Subscribe { subscriber, .. } if subscriber == m))
                .count();
        }
    }
    for (i, m) in members.iter().enumerate() {
        assert_eq!(subscribed[i], 198, "{m} hears of every other track");
        let kind = |t: &TrackId| c.sfu.info(*t).unwrap().kind;
        let video = lines[i]
            .iter()
            .filter(|t| kind(t) == MediaKind::Video)
            .count();
        let audio = lines[i].len() - video;
        assert_eq!((video, audio), (VIDEO_LINES, AUDIO_LINES), "{m}");
    }
}

#[test]
fn a_tile_coming_on_screen_takes_the_line_of_a_hidden_one() {
    let mut c = Call::new();
    let watcher = c.member("r", 1000);
    let mut cameras = Vec::new();
    for s in 0..VIDEO_LINES as u64 + 8 {
        let m = c.member("r", s);
        cameras.push(c.sfu.publish(m, TrackInfo::video(1), c.now).unwrap());
    }
    let mut on = Vec::new();
    lined(&c.outputs(), watcher, &mut on);
    assert_eq!(on, cameras[..VIDEO_LINES], "the oldest tracks first");
    // The page shows none of them at first, then the newest eight, which have no line.
    let hidden = View {
        visible: false,
        ..View::default()
    };
    let views: Vec<_> = cameras.iter().map(|t| (*t, hidden)).collect();
    c.sfu.set_views(watcher, &views, c.now);
    lined(&c.outputs(), watcher, &mut on);
    assert_eq!(on, cameras[..VIDEO_LINES], "hidden tiles keep their lines");
    let last = *cameras.last().unwrap();
    assert!(c.frames(last, 1, true).iter().all(|(s, ..)| *s != watcher));
    let views: Vec<_> = cameras[VIDEO_LINES..]
        .iter()
        .map(|t| (*t, View::default()))
        .collect();
    c.sfu.set_views(watcher, &views, c.now);
    let out = c.outputs();
    lined(&out, watcher, &mut on);
    assert_eq!(on.len(), VIDEO_LINES);
    assert!(cameras[VIDEO_LINES..].iter().all(|t| on.contains(t)));
    // A line is given up before it is taken: the page's connection never needs a new one.
    let first_attach = out.iter().position(|o| matches!(o, Output::Attach { .. }));
    let last_detach = out.iter().rposition(|o| matches!(o, Output::Detach { .. }));
    assert!(last_detach < first_attach, "{out:?}");
    // Its picture starts at the next keyframe, which was asked for.
    assert!(out.contains(&Output::RequestKeyframe {
        publisher: c.sfu.publisher(last).unwrap(),
        track: last,
        layer: Layer(0)
    }));
    let got = c.frames(last, 1, true);
    assert!(got.iter().any(|(s, ..)| *s == watcher), "{got:?}");
}

#[test]
fn a_new_speaker_takes_the_audio_line_of_one_gone_quiet() {
    let mut c = Call::new();
    let listener = c.member("r", 1000);
    let mut mics = Vec::new();
    for s in 0..AUDIO_LINES as u64 + 4 {
        let m = c.member("r", s);
        mics.push(c.sfu.publish(m, TrackInfo::audio(), c.now).unwrap());
    }
    let mut on = Vec::new();
    lined(&c.outputs(), listener, &mut on);
    assert_eq!(on, mics[..AUDIO_LINES]);
    // The first speaks for a while; then one without a line starts.
    let talk = |c: &mut Call, track: TrackId| {
        c.sfu
            .route(track, voice(20), c.now)
            .iter()
            .any(|t| t.subscriber == listener)
    };
    for _ in 0..50 {
        talk(&mut c, mics[0]);
        c.tick(Duration::from_millis(20));
    }
    assert!(talk(&mut c, mics[0]));
    c.tick(Duration::from_millis(20));
    // A newcomer speaks: when its voice is loud enough to be forwarded, it takes a line.
    let newcomer = *mics.last().unwrap();
    let mut out = Vec::new();
    for _ in 0..50 {
        assert!(
            !talk(&mut c, newcomer),
            "nothing is sent before it has a line"
        );
        out = c.outputs();
        if out.iter().any(|o| matches!(o, Output::Attach { subscriber, track, .. } if *subscriber == listener && *track == newcomer)) {
            break;
        }
        c.tick(Duration::from_millis(20));
    }
    lined(&out, listener, &mut on);
    assert!(on.contains(&newcomer) && on.contains(&mics[0]), "{out:?}");
    assert_eq!(on.len(), AUDIO_LINES);
    c.tick(Duration::from_millis(20));
    assert!(talk(&mut c, newcomer), "and the next is heard");
}

#[derive(Debug, Clone)]
enum Op {
    Join(u8, u8),
    Leave(u8),
    Ready(u8),
    Publish(u8, bool, u8),
    Unpublish(u8),
    Frame(u8, u8, bool),
    Estimate(u8, u32),
    View(u8, u8, bool, u16),
    Tick(u16),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0..8u8, 0..3u8).prop_map(|(s, r)| Op::Join(s, r)),
        (0..8u8).prop_map(Op::Leave),
        (0..8u8).prop_map(Op::Ready),
        (0..8u8, any::<bool>(), 0..5u8).prop_map(|(s, a, l)| Op::Publish(s, a, l)),
        (0..16u8).prop_map(Op::Unpublish),
        (0..16u8, 0..5u8, any::<bool>()).prop_map(|(t, l, k)| Op::Frame(t, l, k)),
        (0..8u8, any::<u32>()).prop_map(|(s, b)| Op::Estimate(s, b)),
        (0..8u8, 0..16u8, any::<bool>(), any::<u16>())
            .prop_map(|(s, t, v, w)| Op::View(s, t, v, w)),
        (0..2000u16).prop_map(Op::Tick),
    ]
}

proptest! {
    /// Whatever happens, a packet goes only to members of its track's room other than the
    /// publisher, and a member that left gets nothing.
    #[test]
    fn packets_never_leave_their_room(ops in proptest::collection::vec(op(), 1..200)) {
        let mut c = Call::new();
        let mut rooms: std::collections::HashMap<SessionId, String> = Default::default();
        for op in ops {
            match op {
                Op::Join(s, r) => {
                    // Sessions 2k and 2k+1 are one participant's two connections: the
                    // first sends, the second receives.
                    c.sfu.join(&format!("r{r}"), SessionId(s.into()), Owner((s / 2).into()), s % 2 == 1, None, c.now);
                    rooms.insert(SessionId(s.into()), format!("r{r}"));
                }
                Op::Leave(s) => {
                    c.sfu.leave(SessionId(s.into()), c.now);
                    rooms.remove(&SessionId(s.into()));
                }
                Op::Ready(s) => c.sfu.ready(SessionId(s.into()), c.now),
                Op::Publish(s, audio, layers) => {
                    let info = if audio { TrackInfo::audio() } else { TrackInfo::video(layers) };
                    let _ = c.sfu.publish(SessionId(s.into()), info, c.now);
                }
                Op::Unpublish(t) => c.sfu.unpublish(TrackId(t.into()), c.now),
                Op::Frame(t, l, key) => {
                    let track = TrackId(t.into());
                    let publisher = c.sfu.publisher(track);
                    let packet = Packet { layer: Layer(l), keyframe: key, seq: 7, time: 7, hz: HZ, bytes: 100, audio_level: Some(10) };
                    let targets = c.sfu.route(track, packet, c.now).to_vec();
                    for t in targets {
                        let p = publisher.expect("a routed packet has a publisher");
                        prop_assert_ne!(t.subscriber.0 / 2, p.0 / 2, "not to its own participant");
                        prop_assert_eq!(t.subscriber.0 % 2, 1, "only to a receiving connection");
                        prop_assert_eq!(rooms.get(&t.subscriber), rooms.get(&p));
                    }
                }
                Op::Estimate(s, b) => c.sfu.set_estimate(SessionId(s.into()), b.into(), c.now),
                Op::View(s, t, visible, w) => {
                    let view = View { visible, width: w.into(), height: u32::from(w) / 2 };
                    c.sfu.set_views(SessionId(s.into()), &[(TrackId(t.into()), view)], c.now);
                }
                Op::Tick(ms) => c.tick(Duration::from_millis(ms.into())),
            }
            for o in c.outputs() {
                if let Output::Subscribe { subscriber, .. } | Output::Bitrate { subscriber, .. } = o {
                    prop_assert_eq!(subscriber.0 % 2, 1, "a sending connection subscribes to nothing");
                }
            }
        }
    }
}

#[derive(Debug, Clone)]
enum LineOp {
    Join(u8),
    Leave(u8),
    Publish(u8, bool),
    View(u8, u8, bool),
    Voice(u8, u8),
    Tick(u16),
}

fn line_op() -> impl Strategy<Value = LineOp> {
    prop_oneof![
        3 => (0..80u8).prop_map(LineOp::Join),
        1 => (0..80u8).prop_map(LineOp::Leave),
        6 => (0..80u8, any::<bool>()).prop_map(|(s, a)| LineOp::Publish(s, a)),
        3 => (0..80u8, 0..250u8, any::<bool>()).prop_map(|(s, t, v)| LineOp::View(s, t, v)),
        4 => (0..250u8, 0..128u8).prop_map(|(t, l)| LineOp::Voice(t, l)),
        1 => (0..2_000u16).prop_map(LineOp::Tick),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    /// Whatever joins, leaves, views and voices come, a member's lines stay within the budget,
    /// a track is attached only while subscribed and never twice, and packets go only to
    /// subscriptions on a line, once each.
    #[test]
    fn lines_stay_within_their_budget_and_carry_only_what_is_attached(
        ops in proptest::collection::vec(line_op(), 1..500),
    ) {
        let mut c = Call::new();
        let mut subscribed = std::collections::HashSet::new();
        let mut attached: std::collections::HashMap<(SessionId, TrackId), MediaKind> =
            Default::default();
        for op in ops {
            let mut targets = Vec::new();
            match op {
                LineOp::Join(s) => {
                    c.member("r", s.into());
                }
                LineOp::Leave(s) => c.sfu.leave(SessionId(s.into()), c.now),
                LineOp::Publish(s, audio) => {
                    let info = if audio { TrackInfo::audio() } else { TrackInfo::video(1) };
                    let _ = c.sfu.publish(SessionId(s.into()), info, c.now);
                }
                LineOp::View(s, t, visible) => {
                    let view = View { visible, ..View::default() };
                    c.sfu.set_views(SessionId(s.into()), &[(TrackId(t.into()), view)], c.now);
                }
                LineOp::Voice(t, level) => {
                    let track = TrackId(t.into());
                    let mut packet = voice(level);
                    if c.sfu.info(track).is_some_and(|i| i.kind == MediaKind::Video) {
                        packet = Packet { keyframe: true, hz: HZ, audio_level: None, ..packet };
                    }
                    targets = c.sfu.route(track, packet, c.now).iter().map(|t| (t.subscriber, track)).collect();
                }
                LineOp::Tick(ms) => c.tick(Duration::from_millis(ms.into())),
            }
            for o in c.outputs() {
                match o {
                    Output::Subscribe { subscriber, track } => {
                        prop_assert!(subscribed.insert((subscriber, track)), "subscribed twice");
                    }
                    Output::Attach { subscriber, track, kind } => {
                        prop_assert!(subscribed.contains(&(subscriber, track)), "attached unsubscribed");
                        prop_assert!(attached.insert((subscriber, track), kind).is_none(), "attached twice");
                    }
                    Output::Detach { subscriber, track } => {
                        prop_assert!(attached.remove(&(subscriber, track)).is_some(), "detached unattached");
                    }
                    Output::Unsubscribe { subscriber, track } => {
                        prop_assert!(subscribed.remove(&(subscriber, track)), "unsubscribed unsubscribed");
                        attached.remove(&(subscriber, track));
                    }
                    _ => {}
                }
            }
            let mut once = targets.clone();
            once.sort_unstable();
            once.dedup();
            prop_assert_eq!(once.len(), targets.len(), "a packet sent twice to one subscriber");
            for (s, t) in &targets {
                // A packet routed before this op's outputs were drained may have attached its
                // subscription in the same call; it is not sent then, so it must be on a line.
                prop_assert!(attached.contains_key(&(*s, *t)), "{t} sent to {s} with no line");
            }
            for s in 0..80u64 {
                let count = |kind| attached.iter().filter(|((x, _), k)| x.0 == s && **k == kind).count();
                prop_assert!(count(MediaKind::Video) <= VIDEO_LINES);
                prop_assert!(count(MediaKind::Audio) <= AUDIO_LINES);
            }
        }
    }
}

#[test]
fn a_page_that_shows_two_tiles_gets_lines_for_two_until_it_names_another() {
    let mut c = Call::new();
    let publishers: Vec<SessionId> = (1..=4).map(|s| c.member("r", s)).collect();
    let tracks: Vec<TrackId> = publishers
        .iter()
        .map(|p| c.sfu.publish(*p, TrackInfo::video(1), c.now).unwrap())
        .collect();
    let page = SessionId(10);
    c.sfu.join("r", page, Owner(10), true, Some(2), c.now);
    c.sfu.ready(page, c.now);
    let attached = |out: &[Output]| -> Vec<TrackId> {
        out.iter()
            .filter_map(|o| match o {
                Output::Attach {
                    subscriber, track, ..
                } if *subscriber == page => Some(*track),
                _ => None,
            })
            .collect()
    };
    let out = c.outputs();
    assert_eq!(attached(&out), tracks[..2], "two tiles, two lines");

    // A newcomer waits off screen too; the page naming it on screen gives it a line.
    let newcomer = c.member("r", 5);
    let fifth = c.sfu.publish(newcomer, TrackInfo::video(1), c.now).unwrap();
    assert!(!attached(&c.outputs()).contains(&fifth));
    let on_screen = View {
        visible: true,
        width: 320,
        height: 180,
    };
    c.sfu.set_views(page, &[(fifth, on_screen)], c.now);
    assert_eq!(attached(&c.outputs()), [fifth]);
}
