//! The engine against real str0m peers playing the browser, in simulated time: datagrams are
//! handed across directly, and time jumps to the next deadline instead of sleeping.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use str0m::change::SdpAnswer;
use str0m::channel::ChannelId;
use str0m::media::{Direction, Frequency, KeyframeRequestKind, MediaKind, Mid};
use str0m::{Candidate, Event, Input, Output as RtcOutput, Rtc};

use super::*;

const SERVER: &str = "10.0.0.1:7000";

fn fixture(name: &str) -> String {
    std::fs::read_to_string(format!(
        "{}/tests/fixtures/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

fn engine() -> Engine {
    let addrs = vec![LocalAddr {
        local: SERVER.parse().unwrap(),
        public: None,
    }];
    Engine::new(EngineConfig::new(addrs), Engine::generate_cert())
}

/// A str0m peer standing in for a browser.
struct Browser {
    rtc: Rtc,
    addr: SocketAddr,
    timeout: Instant,
    video: Option<Mid>,
    audio: Option<Mid>,
    channel: Option<ChannelId>,
    received: Vec<(MediaKind, Vec<u8>)>,
    messages: Vec<String>,
    /// Keyframe requests (PLI/FIR) the server sent this browser.
    keyframe_requests: usize,
    /// Every frame received, by the line it came on, and its RTP time.
    frames: Vec<(Mid, Vec<u8>)>,
    frame_times: Vec<(Mid, MediaTime)>,
    connected: bool,
    closed: bool,
}

impl Browser {
    /// A browser at `addr` with Chromium's usual codecs (VP8 left out if `h264_only`).
    fn new(addr: &str, h264_only: bool, now: Instant) -> Browser {
        let mut cfg = Rtc::builder()
            .clear_codecs()
            .enable_opus(true, false)
            .enable_h264(true);
        if !h264_only {
            cfg = cfg.enable_vp8(true);
        }
        let mut rtc = cfg.build(now);
        let addr: SocketAddr = addr.parse().unwrap();
        rtc.add_local_candidate(Candidate::host(addr, "udp").unwrap());
        Browser {
            rtc,
            addr,
            timeout: now,
            video: None,
            audio: None,
            channel: None,
            received: Vec::new(),
            messages: Vec::new(),
            keyframe_requests: 0,
            frames: Vec::new(),
            frame_times: Vec::new(),
            connected: false,
            closed: false,
        }
    }

    /// Offers what `kinds` says in direction `dir`, plus a data channel when `channel`.
    fn offer(
        addr: &str,
        kinds: &[MediaKind],
        dir: Direction,
        channel: bool,
        h264_only: bool,
        now: Instant,
    ) -> (Browser, String, str0m::change::SdpPendingOffer) {
        let mut b = Browser::new(addr, h264_only, now);
        let mut change = b.rtc.sdp_api();
        for k in kinds {
            let mid = Some(change.add_media(*k, dir, None, None, None));
            match k {
                MediaKind::Video => b.video = mid,
                MediaKind::Audio => b.audio = mid,
            }
        }
        if channel {
            change.add_channel("chat".into());
        }
        let (offer, pending) = change.apply().unwrap();
        (b, offer.to_sdp_string(), pending)
    }

    /// A page's receiving connection: answers the server's first offer.
    fn answering(addr: &str, offer: &str, now: Instant) -> (Browser, String) {
        let mut b = Browser::new(addr, false, now);
        let answer = b.answer(offer);
        (b, answer)
    }

    fn answer(&mut self, offer: &str) -> String {
        let offer = str0m::change::SdpOffer::from_sdp_string(offer).unwrap();
        self.rtc
            .sdp_api()
            .accept_offer(offer)
            .unwrap()
            .to_sdp_string()
    }

    fn accept(&mut self, pending: str0m::change::SdpPendingOffer, answer: &str) {
        let answer = SdpAnswer::from_sdp_string(answer).unwrap();
        self.rtc.sdp_api().accept_answer(pending, answer).unwrap();
    }

    /// Drains to the next timeout, returning datagrams for the server.
    fn drain(&mut self) -> Vec<(SocketAddr, SocketAddr, Vec<u8>)> {
        let mut sent = Vec::new();
        loop {
            match self.rtc.poll_output().unwrap() {
                RtcOutput::Timeout(t) => {
                    self.timeout = t;
                    return sent;
                }
                RtcOutput::Transmit(t) => sent.push((t.source, t.destination, t.contents.to_vec())),
                RtcOutput::Event(e) => match e {
                    Event::Connected => self.connected = true,
                    Event::Closed => self.closed = true,
                    Event::MediaAdded(m) if m.kind == MediaKind::Video => self.video = Some(m.mid),
                    Event::MediaAdded(m) => self.audio = Some(m.mid),
                    Event::ChannelOpen(id, _) => self.channel = Some(id),
                    Event::KeyframeRequest(_) => self.keyframe_requests += 1,
                    Event::ChannelData(d) => self.messages.push(String::from_utf8(d.data).unwrap()),
                    Event::MediaData(d) => {
                        let kind = if Some(d.mid) == self.video {
                            MediaKind::Video
                        } else {
                            MediaKind::Audio
                        };
                        self.received.push((kind, d.data.to_vec()));
                        self.frames.push((d.mid, d.data.to_vec()));
                        self.frame_times.push((d.mid, d.time));
                    }
                    _ => {}
                },
            }
        }
    }

    fn write(&mut self, kind: MediaKind, time: MediaTime, data: &[u8], now: Instant) {
        let mid = if kind == MediaKind::Video {
            self.video
        } else {
            self.audio
        }
        .expect("media");
        let writer = self.rtc.writer(mid).unwrap();
        let pt = writer
            .payload_params()
            .find(|p| p.spec().codec.is_video() == (kind == MediaKind::Video))
            .unwrap()
            .pt();
        writer.write(pt, now, time, data.to_vec()).unwrap();
    }
}

/// Runs the engine and browsers for `dur` of simulated time, `transcode` answering jobs.
struct Net {
    engine: Engine,
    browsers: Vec<Browser>,
    now: Instant,
    closed: Vec<(SessionId, CloseReason)>,
    jobs: Vec<TranscodeJob>,
    keyframes: usize,
    bitrates: Vec<u64>,
    /// Datagrams from browsers not yet delivered to the engine.
    pending: Vec<(SocketAddr, SocketAddr, Vec<u8>)>,
    /// Downstream sessions and the browser that receives on each.
    downstreams: HashMap<SessionId, usize>,
    /// The last `Tracks` of each downstream session.
    tracks: HashMap<SessionId, Vec<CarriedTrack>>,
    /// A lossy link: of the datagrams the server sends to this address, every `n`th in `range`
    /// is lost (`(address, n, range)`, counted from 1); what comes later, retransmissions among
    /// it, arrives.
    lossy: Option<(SocketAddr, usize, std::ops::Range<usize>)>,
    /// Datagrams the server sent over the lossy link, and how many of them were lost.
    lossy_sent: usize,
    lost: usize,
    /// Offers the server made to receiving connections.
    offers: usize,
    /// The first offer of each receiving connection.
    first_offers: HashMap<SessionId, String>,
    /// Of the datagrams the server sends to this address, how many of at least `.1` bytes
    /// each step delivered.
    watched: Option<(SocketAddr, usize, Vec<usize>)>,
}

impl Net {
    /// Browser 0 sends `frames` video frames (`fake_h264(0..frames)`), one every `interval`
    /// 90 kHz ticks, a step of the network after each, with `transcode` as the transcoder.
    fn send_video(
        &mut self,
        frames: u8,
        interval: u64,
        transcode: &mut dyn FnMut(&TranscodeJob) -> Option<Vec<u8>>,
    ) {
        for i in 0..frames {
            let now = self.now;
            let time = MediaTime::from_90khz(interval * u64::from(i));
            self.browsers[0].write(MediaKind::Video, time, &fake_h264(i), now);
            self.step(transcode);
        }
    }

    fn step(&mut self, transcode: &mut dyn FnMut(&TranscodeJob) -> Option<Vec<u8>>) {
        let mut to_server = std::mem::take(&mut self.pending);
        for b in &mut self.browsers {
            to_server.extend(b.drain());
        }
        for (src, dst, data) in to_server {
            self.engine.handle_receive(self.now, src, dst, &data).ok();
        }
        if let Some((_, _, per_step)) = &mut self.watched {
            per_step.push(0);
        }
        while let Some(o) = self.engine.poll_output() {
            match o {
                Output::Transmit(t) => {
                    if let Some((to, size, per_step)) = &mut self.watched
                        && t.destination == *to
                        && t.contents.len() >= *size
                        && let Some(n) = per_step.last_mut()
                    {
                        *n += 1;
                    }
                    if let Some((to, n, range)) = &self.lossy
                        && t.destination == *to
                    {
                        self.lossy_sent += 1;
                        if range.contains(&self.lossy_sent) && self.lossy_sent.is_multiple_of(*n) {
                            self.lost += 1;
                            continue;
                        }
                    }
                    if let Some(b) = self.browsers.iter_mut().find(|b| b.addr == t.destination) {
                        let r = Receive::new(Protocol::Udp, t.source, t.destination, &t.contents)
                            .unwrap();
                        b.rtc.handle_input(Input::Receive(self.now, r)).unwrap();
                        self.pending.extend(b.drain());
                    }
                }
                Output::Transcode(job) => {
                    if let Some(frame) = transcode(&job) {
                        self.engine
                            .handle_encoded(job.session, job.media_time, frame, self.now);
                    }
                    self.jobs.push(job);
                }
                Output::EncoderKeyframe(_) => self.keyframes += 1,
                Output::EncoderBitrate { bps, .. } => self.bitrates.push(bps),
                Output::Closed { session, reason } => self.closed.push((session, reason)),
                Output::Offer { session, sdp } => {
                    self.offers += 1;
                    let i = self.downstreams[&session];
                    let answer = self.browsers[i].answer(&sdp);
                    self.engine
                        .accept_answer(session, &answer, self.now)
                        .unwrap();
                    self.pending.extend(self.browsers[i].drain());
                }
                Output::Tracks { session, tracks } => {
                    self.tracks.insert(session, tracks);
                }
                Output::Layers { .. } | Output::Speakers { .. } => {}
            }
        }
        // Advance to the next deadline, at most 10 ms (media is written every step).
        let next = self
            .browsers
            .iter()
            .map(|b| b.timeout)
            .chain(self.engine.poll_timeout())
            .min()
            .unwrap_or(self.now)
            .clamp(self.now, self.now + Duration::from_millis(10));
        self.now = next.max(self.now + Duration::from_micros(100));
        for b in &mut self.browsers {
            if b.timeout <= self.now {
                b.rtc.handle_input(Input::Timeout(self.now)).unwrap();
            }
        }
        self.engine.handle_timeout(self.now);
    }

    fn run_until(&mut self, what: &str, mut done: impl FnMut(&Net) -> bool) {
        let deadline = self.now + Duration::from_secs(60);
        while !done(self) {
            assert!(self.now < deadline, "timed out waiting for {what}");
            self.step(&mut |_| None);
        }
    }
}

/// A browser at `addr` offering audio, video and a data channel in the direction `kind` wants,
/// connected to a new session.
fn connect(net: &mut Net, kind: SessionKind, addr: &str) -> SessionId {
    let dir = match kind {
        SessionKind::Echo(_) => Direction::SendRecv,
        SessionKind::Publish { .. } => Direction::SendOnly,
        SessionKind::Watch { .. } => Direction::RecvOnly,
        SessionKind::Upstream { .. } => Direction::SendOnly,
        SessionKind::Downstream { .. } => unreachable!("the server offers: use `join_sfu`"),
    };
    let (mut b, offer, pending) = Browser::offer(addr, &AV, dir, true, false, net.now);
    let (id, answer) = net.engine.accept(kind, &offer, net.now).unwrap();
    b.accept(pending, &answer);
    net.browsers.push(b);
    let i = net.browsers.len() - 1;
    // Until the data channel is open too: str0m cannot close an SCTP association mid-handshake.
    net.run_until("connection", |n| {
        n.browsers[i].connected && n.browsers[i].channel.is_some()
    });
    id
}

/// A WHIP publisher (browser 0, 10.0.0.2) and a WHEP viewer (browser 1, 10.0.0.3) in `room`.
fn publish_and_watch(net: &mut Net, room: &str) {
    let publisher = SessionKind::Publish { room: room.into() };
    connect(net, publisher, "10.0.0.2:5000");
    connect(
        net,
        SessionKind::Watch { room: room.into() },
        "10.0.0.3:5000",
    );
}

fn net() -> Net {
    let now = Instant::now();
    Net {
        engine: engine(),
        browsers: Vec::new(),
        now,
        closed: Vec::new(),
        jobs: Vec::new(),
        keyframes: 0,
        bitrates: Vec::new(),
        pending: Vec::new(),
        downstreams: HashMap::new(),
        tracks: HashMap::new(),
        lossy: None,
        lossy_sent: 0,
        lost: 0,
        offers: 0,
        first_offers: HashMap::new(),
        watched: None,
    }
}

const AV: [MediaKind; 2] = [MediaKind::Audio, MediaKind::Video];

/// A single-slice H.264 IDR access unit is not needed for `none`: it reflects without looking.
fn fake_h264(i: u8) -> Vec<u8> {
    vec![0, 0, 0, 1, 0x65, 0x88, i, 1, 2, 3, 4, 5, 6, 7]
}

#[test]
fn echo_none_reflects_video_and_audio_without_decoding() {
    let mut net = net();
    connect(
        &mut net,
        SessionKind::Echo(Transform::None),
        "10.0.0.2:5000",
    );
    for i in 0..10u8 {
        let now = net.now;
        let t = MediaTime::from_90khz(3000 * u64::from(i));
        net.browsers[0].write(MediaKind::Video, t, &fake_h264(i), now);
        net.browsers[0].write(
            MediaKind::Audio,
            MediaTime::from_millis(20 * u64::from(i)),
            &[0xf8, i, 0xfe],
            now,
        );
        net.step(&mut |_| None);
    }
    net.run_until("frames back", |n| n.browsers[0].received.len() >= 16);
    let b = &net.browsers[0];
    assert!(
        b.received
            .iter()
            .any(|(k, d)| *k == MediaKind::Video && *d == fake_h264(3))
    );
    assert!(
        b.received
            .iter()
            .any(|(k, d)| *k == MediaKind::Audio && d[..] == [0xf8, 5, 0xfe])
    );
    assert!(
        net.jobs.is_empty(),
        "none never hands frames to a transcoder"
    );
}

#[test]
fn echo_with_transform_hands_video_to_the_transcoder_and_sends_its_output() {
    let mut net = net();
    let id = connect(
        &mut net,
        SessionKind::Echo(Transform::Edges),
        "10.0.0.2:5000",
    );
    net.send_video(6, 9000, &mut |job| {
        Some(vec![0, 0, 0, 1, 0x65, 0x99, job.access_unit[6]])
    });
    net.run_until("transcoded frames", |n| {
        n.browsers[0]
            .received
            .iter()
            .filter(|(k, _)| *k == MediaKind::Video)
            .count()
            >= 5
    });
    assert!(net.jobs.iter().all(|j| j.session == id));
    assert_eq!(net.jobs[0].elapsed, Duration::ZERO);
    assert_eq!(
        net.jobs[2].elapsed,
        Duration::from_millis(200),
        "time since the first frame"
    );
    let back: Vec<&Vec<u8>> = net.browsers[0].received.iter().map(|(_, d)| d).collect();
    assert!(
        back.contains(&&vec![0, 0, 0, 1, 0x65, 0x99, 4]),
        "the transcoder's frame, not the original"
    );
    // The bandwidth estimate reaches the encoder (str0m's TWCC estimate, 1 Mbit/s to start).
    assert!(
        net.bitrates.iter().any(|b| *b >= 100_000),
        "{:?}",
        net.bitrates
    );
}

#[test]
fn a_browsers_keyframe_request_reaches_the_encoder_of_a_transformed_stream() {
    let mut net = net();
    let id = connect(
        &mut net,
        SessionKind::Echo(Transform::Blur),
        "10.0.0.2:5000",
    );
    // Frames through the transcoder, so the stream exists on the browser's side.
    net.send_video(6, 3000, &mut |_| Some(vec![0, 0, 0, 1, 0x65, 0x99, 1]));
    net.run_until("stream back", |n| !n.browsers[0].received.is_empty());
    let mid = net.browsers[0].video.unwrap();
    let mut writer = net.browsers[0].rtc.writer(mid).unwrap();
    writer
        .request_keyframe(None, KeyframeRequestKind::Pli)
        .unwrap();
    net.run_until("PLI at the encoder", |n| n.keyframes > 0);
    assert_eq!(
        net.engine.kind(id),
        Some(&SessionKind::Echo(Transform::Blur))
    );
}

#[test]
fn data_channel_ping_gets_pong() {
    let mut net = net();
    connect(
        &mut net,
        SessionKind::Echo(Transform::None),
        "10.0.0.2:5000",
    );
    net.run_until("channel open", |n| n.browsers[0].channel.is_some());
    let id = net.browsers[0].channel.unwrap();
    net.browsers[0]
        .rtc
        .channel(id)
        .unwrap()
        .write(false, b"ping 1234.5")
        .unwrap();
    net.browsers[0]
        .rtc
        .channel(id)
        .unwrap()
        .write(false, b"hello")
        .unwrap();
    net.run_until("pong", |n| !n.browsers[0].messages.is_empty());
    assert_eq!(net.browsers[0].messages, ["pong 1234.5"]);
}

#[test]
fn whip_publisher_feeds_every_whep_viewer_of_its_room_only() {
    let mut net = net();
    let room = |r: &str| r.to_owned();
    connect(
        &mut net,
        SessionKind::Publish { room: room("a") },
        "10.0.0.2:5000",
    );
    connect(
        &mut net,
        SessionKind::Watch { room: room("a") },
        "10.0.0.3:5000",
    );
    connect(
        &mut net,
        SessionKind::Watch { room: room("a") },
        "10.0.0.4:5000",
    );
    connect(
        &mut net,
        SessionKind::Watch { room: room("b") },
        "10.0.0.5:5000",
    );
    net.send_video(8, 3000, &mut |_| None);
    let got_last = |b: &Browser| b.received.iter().any(|(_, d)| *d == fake_h264(7));
    net.run_until("both viewers", |n| {
        got_last(&n.browsers[1]) && got_last(&n.browsers[2])
    });
    assert!(
        net.browsers[3].received.is_empty(),
        "room b sees nothing of room a"
    );
    assert_eq!(net.browsers[0].received.len(), 0);
}

#[test]
fn a_viewer_on_a_lossy_link_gets_every_frame_again_from_the_servers_cache() {
    // The server forwards packets with the sequence numbers the SFU core gave them; a viewer
    // that lost one NACKs that number, and the server resends it (RTX) from what it sent.
    let mut net = net();
    publish_and_watch(&mut net, "r");
    // Lost once the stream is under way (str0m's receiver asks for nothing in its first few
    // packets); the last frames only show the losses before them (a loss is seen as a gap).
    net.lossy = Some(("10.0.0.3:5000".parse().unwrap(), 5, 15..50));
    net.send_video(45, 3000, &mut |_| None);
    let frames: Vec<Vec<u8>> = (0..40).map(fake_h264).collect();
    net.run_until("every frame at the viewer", |n| {
        frames
            .iter()
            .all(|f| n.browsers[1].received.iter().any(|(_, d)| d == f))
    });
    assert!(net.lost >= 5, "the link lost {} datagrams", net.lost);
}

#[test]
fn a_subscribers_resends_leave_together_when_its_nack_arrives() {
    // A page's receiving connection is paced (its bandwidth estimate needs it): str0m lets one
    // packet out per timeout. Resends asked for in one NACK go in the drain that took it, not
    // one per turn of the server's loop.
    let mut net = net();
    let a = join_sfu(&mut net, "r", "ada", "10.0.1.1:5000", "10.0.1.1:5001");
    let b = join_sfu(&mut net, "r", "bob", "10.0.1.2:5000", "10.0.1.2:5001");
    net.run_until("renegotiated", |n| n.lined(&a) == 2 && n.lined(&b) == 2);
    for i in 0..10 {
        net.send_from(&a, i);
    }
    net.run_until("video at bob", |n| {
        n.video_from(&b, "ada").contains(&fake_h264(9))
    });

    // A keyframe of ten or so full packets, four of them lost on the way to Bob.
    let mut big = fake_h264(10);
    big.extend((0..12_000).map(|i| (i % 251) as u8));
    let down: SocketAddr = "10.0.1.2:5001".parse().unwrap();
    net.lossy = Some((down, 1, 3..7));
    net.watched = Some((down, 1_000, Vec::new()));
    let time = MediaTime::from_90khz(3000 * 10);
    net.browsers[a.up].write(MediaKind::Video, time, &big, net.now);
    net.step(&mut |_| None);
    net.run_until("the keyframe at bob", |n| {
        n.video_from(&b, "ada").contains(&big)
    });
    assert_eq!(net.lost, 4);
    let per_step = &net.watched.as_ref().unwrap().2;
    assert_eq!(
        per_step.last(),
        Some(&4),
        "full-size datagrams to bob per step: {per_step:?}"
    );
}

#[test]
fn second_publisher_in_a_room_is_refused() {
    let mut net = net();
    connect(
        &mut net,
        SessionKind::Publish { room: "a".into() },
        "10.0.0.2:5000",
    );
    let (_, offer, _) = Browser::offer(
        "10.0.0.3:5000",
        &AV,
        Direction::SendOnly,
        false,
        false,
        net.now,
    );
    let err = net
        .engine
        .accept(SessionKind::Publish { room: "a".into() }, &offer, net.now)
        .unwrap_err();
    assert!(
        matches!(err, OfferError::RoomTaken(ref r) if r == "a"),
        "{err}"
    );
}

#[test]
fn offers_that_cannot_work_are_refused_with_a_reason() {
    let mut e = engine();
    let now = Instant::now();
    let echo = SessionKind::Echo(Transform::None);
    assert!(matches!(
        e.accept(echo.clone(), "hello", now),
        Err(OfferError::BadSdp(_))
    ));
    let audio = fixture("chromium-audioonly.sdp");
    assert!(matches!(
        e.accept(echo.clone(), &audio, now),
        Err(OfferError::NoVideo)
    ));
    // Hundreds of media sections: refused before parsing, naming the count.
    let sendrecv = fixture("chromium-sendrecv.sdp");
    let (head, first) = sendrecv.split_at(sendrecv.find("m=").unwrap());
    let bloated = format!("{head}{}", first.repeat(300));
    let err = e.accept(echo.clone(), &bloated, now).unwrap_err();
    let sections = 300 * first.lines().filter(|l| l.starts_with("m=")).count();
    assert!(
        matches!(err, OfferError::TooManyMedia(n) if n == sections),
        "{err}"
    );
    assert_eq!(e.session_count(), 0);
    // A payload type the audio section maps to H.264 while the video section uses it too
    // makes str0m's negotiation panic (found by fuzz/media_engine): refused, engine intact.
    let twice = sendrecv.replacen(
        "a=rtpmap:111 opus/48000/2",
        "a=rtpmap:111 opus/48000/2\r\na=rtpmap:39 H264/90000",
        1,
    );
    assert_ne!(twice, sendrecv);
    let err = e.accept(echo.clone(), &twice, now).unwrap_err();
    assert!(matches!(err, OfferError::Unnegotiable), "{err}");
    assert_eq!(e.session_count(), 0);
    // Transformed video needs H.264: a VP8-only offer cannot be transformed…
    let (_, vp8_only, _) = {
        let mut rtc = Rtc::builder().clear_codecs().enable_vp8(true).build(now);
        rtc.add_local_candidate(Candidate::host("10.0.0.2:5000".parse().unwrap(), "udp").unwrap());
        let mut change = rtc.sdp_api();
        change.add_media(MediaKind::Video, Direction::SendRecv, None, None, None);
        let (offer, pending) = change.apply().unwrap();
        (rtc, offer.to_sdp_string(), pending)
    };
    let err = e
        .accept(SessionKind::Echo(Transform::Edges), &vp8_only, now)
        .unwrap_err();
    assert!(matches!(err, OfferError::NoH264), "{err}");
    // …but it can be echoed.
    e.accept(echo, &vp8_only, now).unwrap();
    // A page's sending connection with neither audio nor video (a data channel alone) has
    // nothing to publish.
    let (_, channel_only, _) =
        Browser::offer("10.0.0.3:5000", &[], Direction::SendOnly, true, false, now);
    let upstream = SessionKind::Upstream {
        room: "r".into(),
        peer: "ada".into(),
    };
    let err = e.accept(upstream, &channel_only, now).unwrap_err();
    assert!(matches!(err, OfferError::NoMedia), "{err}");
    assert_eq!(e.session_count(), 1);
}

#[test]
fn chromium_offers_are_answered_with_the_server_candidate() {
    let now = Instant::now();
    let mut e = engine();
    for (name, kind) in [
        ("chromium-sendrecv.sdp", SessionKind::Echo(Transform::Edges)),
        ("chromium-sendrecv.sdp", SessionKind::Echo(Transform::None)),
        (
            "chromium-sendonly.sdp",
            SessionKind::Publish { room: "r".into() },
        ),
        (
            "chromium-recvonly.sdp",
            SessionKind::Watch { room: "r".into() },
        ),
    ] {
        let (_, answer) = e.accept(kind.clone(), &fixture(name), now).unwrap();
        assert!(
            answer.contains("10.0.0.1 7000 typ host"),
            "{name} {kind:?}: {answer}"
        );
        if kind == SessionKind::Echo(Transform::Edges) {
            let video = answer.split("m=video").nth(1).unwrap();
            assert!(
                video.contains("H264/90000") && !video.contains("VP8/90000"),
                "{answer}"
            );
            assert!(
                video.contains("profile-level-id=42e01f"),
                "constrained baseline: {answer}"
            );
        }
    }
    assert_eq!(e.session_count(), 4);
}

#[test]
fn sessions_that_never_connect_time_out_and_free_their_state() {
    let now = Instant::now();
    let mut e = engine();
    let (id, _) = e
        .accept(
            SessionKind::Watch { room: "r".into() },
            &fixture("chromium-recvonly.sdp"),
            now,
        )
        .unwrap();
    let deadline = e.poll_timeout().unwrap();
    assert!(deadline <= now + Duration::from_secs(20));
    let mut t = now;
    while e.session_count() > 0 {
        t += Duration::from_secs(1);
        assert!(t < now + Duration::from_secs(25), "still there");
        e.handle_timeout(t);
    }
    let mut closed = None;
    while let Some(o) = e.poll_output() {
        if let Output::Closed { session, reason } = o {
            closed = Some((session, reason));
        }
    }
    assert_eq!(closed, Some((id, CloseReason::NeverConnected)));
    assert_eq!(e.sfu.room_count(), 0, "the room went with its last viewer");
}

#[test]
fn a_browser_that_goes_away_is_disconnected_and_freed() {
    let mut net = net();
    let id = connect(
        &mut net,
        SessionKind::Echo(Transform::None),
        "10.0.0.2:5000",
    );
    net.browsers.clear(); // gone without a word: no more STUN, no more media
    let t0 = net.now;
    net.run_until("disconnect", |n| !n.closed.is_empty());
    assert_eq!(net.closed, [(id, CloseReason::Disconnected)]);
    // str0m keeps a pair alive for 15 s after the peer's last binding request.
    assert!(
        net.now - t0 < Duration::from_secs(20),
        "took {:?}",
        net.now - t0
    );
    assert_eq!(net.engine.session_count(), 0);
    assert!(net.engine.by_source.is_empty());
}

#[test]
fn a_browser_that_closes_is_freed_at_once() {
    let mut net = net();
    let id = connect(
        &mut net,
        SessionKind::Echo(Transform::None),
        "10.0.0.2:5000",
    );
    net.browsers[0].rtc.close().unwrap();
    let t0 = net.now;
    net.run_until("close", |n| !n.closed.is_empty());
    assert_eq!(net.closed, [(id, CloseReason::RemoteClosed)]);
    assert!(
        net.now - t0 < Duration::from_millis(100),
        "took {:?}",
        net.now - t0
    );
}

#[test]
fn closing_a_session_tells_the_browser() {
    let mut net = net();
    let id = connect(
        &mut net,
        SessionKind::Publish { room: "a".into() },
        "10.0.0.2:5000",
    );
    net.engine.close(id);
    net.run_until("browser sees the close", |n| {
        !n.browsers[0].rtc.is_alive() || n.browsers[0].closed
    });
    assert_eq!(net.closed, [(id, CloseReason::Closed)]);
    assert_eq!(net.engine.sfu.room_count(), 0);
}

#[test]
fn stray_datagrams_are_refused_and_change_nothing() {
    let mut net = net();
    connect(
        &mut net,
        SessionKind::Echo(Transform::None),
        "10.0.0.2:5000",
    );
    let server: SocketAddr = SERVER.parse().unwrap();
    let stranger: SocketAddr = "10.9.9.9:1".parse().unwrap();
    assert_eq!(
        net.engine.handle_receive(net.now, stranger, server, &[]),
        Err(ReceiveError::Unparsable)
    );
    // An RTP-looking datagram from an unknown address.
    let rtp = [0x80, 96, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1, 0xde, 0xad];
    assert_eq!(
        net.engine.handle_receive(net.now, stranger, server, &rtp),
        Err(ReceiveError::NoSession)
    );
    assert_eq!(net.engine.session_count(), 1);
}

#[test]
fn viewers_keyframe_requests_reach_the_publisher_throttled() {
    let mut net = net();
    publish_and_watch(&mut net, "a");
    // The viewer connecting asked the publisher for a keyframe…
    net.run_until("a keyframe request", |n| {
        n.browsers[0].keyframe_requests > 0
    });
    assert_eq!(net.browsers[0].keyframe_requests, 1);
    // …and its own requests, however many, reach the publisher once a second at most.
    let viewer_mid = net.browsers[1].video.unwrap();
    for _ in 0..20 {
        let mut w = net.browsers[1]
            .rtc
            .writer(viewer_mid)
            .expect("the viewer's video");
        w.request_keyframe(None, KeyframeRequestKind::Pli)
            .expect("a viewer may ask");
        net.step(&mut |_| None);
    }
    assert!(
        net.browsers[0].keyframe_requests <= 2,
        "{} requests",
        net.browsers[0].keyframe_requests
    );
}

#[test]
fn behind_one_to_one_nat_the_answer_names_the_public_address() {
    let addrs = vec![LocalAddr {
        local: "10.0.0.1:7000".parse().unwrap(),
        public: Some("203.0.113.7:7000".parse().unwrap()),
    }];
    let mut e = Engine::new(EngineConfig::new(addrs), Engine::generate_cert());
    let (_, answer) = e
        .accept(
            SessionKind::Echo(Transform::None),
            &fixture("chromium-sendrecv.sdp"),
            Instant::now(),
        )
        .unwrap();
    assert!(answer.contains("203.0.113.7 7000 typ srflx"), "{answer}");
    // The host candidate stays: it is what arriving datagrams are matched against.
    assert!(answer.contains("10.0.0.1 7000 typ host"), "{answer}");
}

/// A page in SFU room `room` as `peer`: its sending connection (audio and video) from
/// `up`, its receiving connection from `down`. Returns both sessions and both browsers.
fn join_sfu(net: &mut Net, room: &str, peer: &str, up: &str, down: &str) -> SfuPage {
    let kind = |r: &str, p: &str| (r.to_owned(), p.to_owned());
    let (room, peer) = kind(room, peer);
    let upstream = connect(
        net,
        SessionKind::Upstream {
            room: room.clone(),
            peer: peer.clone(),
        },
        up,
    );
    let up_browser = net.browsers.len() - 1;
    let (downstream, down_browser) = watch_sfu(net, &room, &peer, down);
    SfuPage {
        upstream,
        downstream,
        up: up_browser,
        down: down_browser,
    }
}

/// A page's receiving connection in SFU room `room`, from `addr`: the session and browser.
fn watch_sfu(net: &mut Net, room: &str, peer: &str, addr: &str) -> (SessionId, usize) {
    let kind = SessionKind::Downstream {
        room: room.to_owned(),
        peer: peer.to_owned(),
    };
    let (downstream, offer) = net.engine.open_downstream(kind, None, net.now).unwrap();
    let (mut b, answer) = Browser::answering(addr, &offer, net.now);
    net.first_offers.insert(downstream, offer);
    net.engine
        .accept_answer(downstream, &answer, net.now)
        .unwrap();
    net.pending.extend(b.drain());
    net.browsers.push(b);
    let i = net.browsers.len() - 1;
    net.downstreams.insert(downstream, i);
    net.run_until("the receiving connection", |n| n.browsers[i].connected);
    (downstream, i)
}

struct SfuPage {
    upstream: SessionId,
    downstream: SessionId,
    up: usize,
    down: usize,
}

impl Net {
    /// `page` sends video frame `i` (an IDR) and audio.
    fn send_from(&mut self, page: &SfuPage, i: u8) {
        self.send_from_clock(page, i, 0);
    }

    /// `send_from` with the camera's clock starting at `clock` (90 kHz ticks), as a browser's
    /// starts at a random point.
    fn send_from_clock(&mut self, page: &SfuPage, i: u8, clock: u64) {
        let now = self.now;
        let time = MediaTime::from_90khz(clock + 3000 * u64::from(i));
        self.browsers[page.up].write(MediaKind::Video, time, &fake_h264(i), now);
        self.browsers[page.up].write(
            MediaKind::Audio,
            MediaTime::new(960 * u64::from(i), str0m::media::Frequency::FORTY_EIGHT_KHZ),
            &[0xf8, i, 1, 2],
            now,
        );
        self.step(&mut |_| None);
    }

    /// Whose tracks `page`'s receiving connection carries, by peer, as the engine said.
    fn carried(&self, page: &SfuPage) -> Vec<(String, huddle_sfu::MediaKind)> {
        let mut v: Vec<_> = self.tracks[&page.downstream]
            .iter()
            .map(|t| (t.peer.clone().unwrap_or_default(), t.kind))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0).then((a.1 as u8).cmp(&(b.1 as u8))));
        v
    }

    /// How many of the tracks `page` receives the engine said are on a line.
    fn lined(&self, page: &SfuPage) -> usize {
        self.tracks
            .get(&page.downstream)
            .map_or(0, |t| t.iter().filter(|t| t.mid.is_some()).count())
    }

    /// Video frames `page` received from `peer`, by the line the engine said carries it.
    fn video_from(&self, page: &SfuPage, peer: &str) -> Vec<Vec<u8>> {
        let mids: Vec<String> = self.tracks[&page.downstream]
            .iter()
            .filter(|t| t.peer.as_deref() == Some(peer) && t.kind == huddle_sfu::MediaKind::Video)
            .filter_map(|t| t.mid.clone())
            .collect();
        self.browsers[page.down]
            .frames
            .iter()
            .filter(|(mid, _)| mids.contains(&mid.to_string()))
            .map(|(_, d)| d.clone())
            .collect()
    }
}

#[test]
fn an_sfu_room_sends_every_page_everyone_elses_tracks_and_renegotiates_for_latecomers() {
    use huddle_sfu::MediaKind::{Audio as A, Video as V};
    let mut net = net();
    let a = join_sfu(&mut net, "r", "ada", "10.0.1.1:5000", "10.0.1.1:5001");
    let b = join_sfu(&mut net, "r", "bob", "10.0.1.2:5000", "10.0.1.2:5001");
    let other = join_sfu(&mut net, "s", "eve", "10.0.1.9:5000", "10.0.1.9:5001");
    // Bob's first offer had Ada's tracks; Ada got a new offer with Bob's when he published.
    net.run_until("renegotiated", |n| n.lined(&a) == 2 && n.lined(&b) == 2);
    assert_eq!(net.carried(&a), [("bob".into(), A), ("bob".into(), V)]);
    assert_eq!(net.carried(&b), [("ada".into(), A), ("ada".into(), V)]);
    assert!(
        net.tracks[&other.downstream].is_empty(),
        "room s has nobody else"
    );

    for i in 0..30 {
        net.send_from(&a, i);
        net.send_from(&b, i);
    }
    net.run_until("video both ways", |n| {
        n.video_from(&a, "bob").contains(&fake_h264(29))
            && n.video_from(&b, "ada").contains(&fake_h264(29))
    });
    assert!(
        net.browsers[other.down].frames.is_empty(),
        "nothing crosses rooms"
    );

    // A latecomer gets both in its first offer; both get its tracks by renegotiation.
    let c = join_sfu(&mut net, "r", "cy", "10.0.1.3:5000", "10.0.1.3:5001");
    net.run_until("three-way", |n| {
        [&a, &b, &c].iter().all(|p| n.lined(p) == 4)
    });
    assert_eq!(
        net.carried(&c),
        [
            ("ada".into(), A),
            ("ada".into(), V),
            ("bob".into(), A),
            ("bob".into(), V)
        ]
    );
    for i in 30..60 {
        net.send_from(&c, i);
    }
    net.run_until("cy's video at both", |n| {
        n.video_from(&a, "cy").contains(&fake_h264(59))
            && n.video_from(&b, "cy").contains(&fake_h264(59))
    });

    // Cy leaves: its lines are freed at the others (kept for the next track).
    net.engine.close(c.upstream);
    net.engine.close(c.downstream);
    net.step(&mut |_| None);
    assert_eq!(net.carried(&a), [("bob".into(), A), ("bob".into(), V)]);
}

#[test]
fn a_page_alone_in_its_room_is_offered_one_audio_line_that_the_first_microphone_takes() {
    use huddle_sfu::MediaKind::Audio as A;
    let mut net = net();
    let a = join_sfu(&mut net, "r", "ada", "10.0.1.1:5000", "10.0.1.1:5001");
    let first = &net.first_offers[&a.downstream];
    assert_eq!(first.matches("m=").count(), 1, "one line: {first}");
    assert!(first.contains("m=audio"), "an audio line, no data channel");
    let mid = first
        .lines()
        .find_map(|l| l.strip_prefix("a=mid:"))
        .expect("the line's mid")
        .to_owned();

    let _b = join_sfu(&mut net, "r", "bob", "10.0.1.2:5000", "10.0.1.2:5001");
    net.run_until("bob's tracks at ada", |n| n.lined(&a) == 2);
    let bobs_audio = net.tracks[&a.downstream]
        .iter()
        .find(|t| t.kind == A)
        .and_then(|t| t.mid.clone());
    assert_eq!(bobs_audio, Some(mid), "bob's microphone on the free line");
}

#[test]
fn a_line_that_carries_another_track_keeps_its_rtp_time_following_the_clock() {
    use huddle_sfu::MediaKind::{Audio as A, Video as V};
    let mut net = net();
    let a = join_sfu(&mut net, "r", "ada", "10.0.1.1:5000", "10.0.1.1:5001");
    let b = join_sfu(&mut net, "r", "bob", "10.0.1.2:5000", "10.0.1.2:5001");
    net.run_until("ada receives bob", |n| n.lined(&a) == 2);
    for i in 0..30 {
        net.send_from(&b, i);
    }
    net.run_until("bob's video at ada", |n| {
        n.video_from(&a, "bob").contains(&fake_h264(29))
    });
    let bob_at = net.now;
    let line = net.browsers[a.down].video.expect("ada's video line");
    let bob_last = net.browsers[a.down]
        .frame_times
        .iter()
        .rev()
        .find(|(mid, _)| *mid == line)
        .map(|(_, t)| t.rebase(Frequency::NINETY_KHZ).numer())
        .unwrap();

    // Bob leaves; Cy comes, whose camera's clock started ten hours from Bob's, on Bob's line.
    net.engine.close(b.upstream);
    net.engine.close(b.downstream);
    net.step(&mut |_| None);
    let c = join_sfu(&mut net, "r", "cy", "10.0.1.3:5000", "10.0.1.3:5001");
    net.run_until("ada receives cy", |n| n.lined(&a) == 2);
    assert_eq!(net.carried(&a), [("cy".into(), A), ("cy".into(), V)]);
    let before = net.browsers[a.down].frame_times.len();
    let on_line = |n: &Net| {
        n.browsers[a.down].frame_times[before..]
            .iter()
            .any(|(m, _)| *m == line)
    };
    for i in 0..30 {
        net.send_from_clock(&c, i, 90_000 * 36_000);
    }
    net.run_until("cy's video on bob's line", on_line);
    let cy_first = net.browsers[a.down].frame_times[before..]
        .iter()
        .find(|(mid, _)| *mid == line)
        .map(|(_, t)| t.rebase(Frequency::NINETY_KHZ).numer())
        .expect("cy's video on bob's line");
    // The line's clock went on by about the wall time between the two frames, not ten hours.
    let wall = (net.now - bob_at).as_secs() + 1;
    assert!(
        cy_first > bob_last && cy_first - bob_last <= 90_000 * wall,
        "bob's last frame at {bob_last}, cy's first at {cy_first}"
    );
}

#[test]
fn a_room_filling_up_renegotiates_a_page_once_for_all_who_arrived_meanwhile() {
    let mut net = net();
    let a = join_sfu(&mut net, "r", "ada", "10.0.1.1:5000", "10.0.1.1:5001");
    let before = net.offers;
    // Four people arrive 20 ms apart (their tracks are published once their sending
    // connections are up).
    for (i, peer) in ["bob", "cy", "dee", "eve"].into_iter().enumerate() {
        let kind = SessionKind::Upstream {
            room: "r".into(),
            peer: peer.into(),
        };
        let addr = format!("10.0.2.{}:5000", i + 1);
        let (mut b, offer, pending) =
            Browser::offer(&addr, &AV, Direction::SendOnly, true, false, net.now);
        let (_, answer) = net.engine.accept(kind, &offer, net.now).unwrap();
        b.accept(pending, &answer);
        net.browsers.push(b);
        let until = net.now + Duration::from_millis(20);
        while net.now < until {
            net.step(&mut |_| None);
        }
    }
    net.run_until("everyone's tracks at ada", |n| n.lined(&a) == 8);
    // Each offer is Ada's whole session: one per arrival would be four.
    assert_eq!(net.offers - before, 1, "offers");
}

#[test]
fn a_room_larger_than_a_pages_lines_moves_them_instead_of_renegotiating() {
    use huddle_sfu::MediaKind::{Audio as A, Video as V};
    let mut net = net();
    let a = join_sfu(&mut net, "r", "ada", "10.0.1.1:5000", "10.0.1.1:5001");
    let publish = |net: &mut Net, i: usize| {
        let kind = SessionKind::Upstream {
            room: "r".into(),
            peer: format!("p{i}"),
        };
        let addr = format!("10.0.{}.{}:5000", 2 + i / 200, 1 + i % 200);
        let (mut b, offer, pending) =
            Browser::offer(&addr, &AV, Direction::SendOnly, true, false, net.now);
        let (_, answer) = net.engine.accept(kind, &offer, net.now).unwrap();
        b.accept(pending, &answer);
        net.browsers.push(b);
    };
    let count = |n: &Net, kind| {
        let t = &n.tracks[&a.downstream];
        let all = t.iter().filter(|t| t.kind == kind).count();
        let lined = t
            .iter()
            .filter(|t| t.kind == kind && t.mid.is_some())
            .count();
        (all, lined)
    };
    let people = huddle_sfu::VIDEO_LINES + 4;
    for i in 0..people {
        publish(&mut net, i);
    }
    net.run_until("every track known, the lines full", |n| {
        count(n, V) == (people, huddle_sfu::VIDEO_LINES)
            && count(n, A) == (people, huddle_sfu::AUDIO_LINES)
    });
    // More people arrive: Ada hears of their tracks, and is offered nothing.
    let offers = net.offers;
    for i in people..people + 4 {
        publish(&mut net, i);
    }
    net.run_until("the newcomers' tracks known", |n| {
        count(n, V).0 == people + 4
    });
    for _ in 0..20 {
        net.step(&mut |_| None);
    }
    assert_eq!(net.offers, offers, "no new line, no offer");

    // Ada's page shows a newcomer's tile and hides the rest: a line moves to it, unoffered.
    let tracks = net.tracks[&a.downstream].clone();
    let shown = tracks
        .iter()
        .find(|t| t.kind == V && t.mid.is_none())
        .expect("a track without a line")
        .track;
    let views: Vec<_> = tracks
        .iter()
        .filter(|t| t.kind == V)
        .map(|t| {
            let view = huddle_sfu::View {
                visible: t.track == shown,
                ..huddle_sfu::View::default()
            };
            (t.track, view)
        })
        .collect();
    net.engine.set_views(a.downstream, &views, net.now);
    net.step(&mut |_| None);
    let now_on = net.tracks[&a.downstream]
        .iter()
        .find(|t| t.track == shown)
        .and_then(|t| t.mid.clone());
    assert!(now_on.is_some(), "the tile shown has a line");
    assert_eq!(count(&net, V).1, huddle_sfu::VIDEO_LINES);
    assert_eq!(net.offers, offers);
}

/// A VP8 frame of simulcast layer `layer` (0 = q at 320×180, 1 = h, 2 = f at 1280×720), a
/// keyframe when `key`; its last byte says the layer, the one before the frame number.
fn vp8_frame(layer: u8, i: u8, key: bool) -> Vec<u8> {
    let (w, h) = (320u16 << layer, 180u16 << layer);
    let mut f = vec![if key { 0x50 } else { 0x51 }, 0x42, 0x00, 0x9d, 0x01, 0x2a];
    f.extend_from_slice(&w.to_le_bytes());
    f.extend_from_slice(&h.to_le_bytes());
    f.extend_from_slice(&[0; 20]);
    f.extend_from_slice(&[i, layer]);
    f
}

#[test]
fn simulcast_layers_follow_each_tile_switch_at_keyframes_and_keep_time_continuous() {
    use str0m::media::{Rid, Simulcast, SimulcastLayer};
    let mut net = net();
    // A page publishing VP8 in three layers, as Chromium does with `sendEncodings`.
    let mut publisher = Browser::new("10.0.2.1:5000", false, net.now);
    let mut change = publisher.rtc.sdp_api();
    let mut layers = Simulcast::new();
    for rid in ["q", "h", "f"] {
        layers.add_send_layer(SimulcastLayer::new(rid));
    }
    let mid = change.add_media(
        MediaKind::Video,
        Direction::SendOnly,
        None,
        None,
        Some(layers),
    );
    let (offer, pending) = change.apply().unwrap();
    let kind = SessionKind::Upstream {
        room: "r".into(),
        peer: "pub".into(),
    };
    let (upstream, answer) = net
        .engine
        .accept(kind, &offer.to_sdp_string(), net.now)
        .unwrap();
    publisher.accept(pending, &answer);
    publisher.video = Some(mid);
    net.browsers.push(publisher);
    net.run_until("the publisher", |n| n.browsers[0].connected);

    let (_, big_b) = watch_sfu(&mut net, "r", "big", "10.0.2.2:5000");
    let (small, small_b) = watch_sfu(&mut net, "r", "small", "10.0.2.3:5000");
    let small_track = net.tracks[&small]
        .iter()
        .find(|t| t.peer.as_deref() == Some("pub"))
        .map(|t| t.track)
        .expect("the publisher's video");
    let send = |net: &mut Net, i: u8| {
        let key = i.is_multiple_of(30);
        let now = net.now;
        let time = MediaTime::from_90khz(3000 * u64::from(i) + 100_000);
        let b = &mut net.browsers[0];
        for (layer, rid) in ["q", "h", "f"].into_iter().enumerate() {
            let w = b.rtc.writer(mid).unwrap();
            let pt = w
                .payload_params()
                .find(|p| p.spec().codec == str0m::format::Codec::Vp8)
                .unwrap()
                .pt();
            w.rid(Rid::from(rid))
                .write(pt, now, time, vp8_frame(layer as u8, i, key))
                .unwrap();
        }
        // 30 frames a second.
        while net.now < now + Duration::from_millis(33) {
            net.step(&mut |_| None);
        }
    };
    let layers_at = |n: &Net, b: usize| -> Vec<u8> {
        n.browsers[b]
            .frames
            .iter()
            .filter_map(|(_, d)| d.last().copied())
            .collect()
    };
    // Until the layers' rates are measured (a second) the estimate may hold a page to a
    // middle layer; then every layer fits these links, and a tile of unknown size gets the top.
    for i in 0..120 {
        send(&mut net, i);
    }
    for b in [big_b, small_b] {
        let got = layers_at(&net, b);
        assert_eq!(got.last(), Some(&2), "the top layer: {got:?}");
    }

    // The small page shows the tile at 320×180: it moves to layer q at q's next keyframe, not
    // before, and its RTP time goes on without a jump.
    let now = net.now;
    let view = huddle_sfu::View {
        visible: true,
        width: 320,
        height: 180,
    };
    net.engine.set_views(small, &[(small_track, view)], now);
    let before = net.browsers[small_b].frames.len();
    let big_before = net.browsers[big_b].frames.len();
    for i in 120..180 {
        send(&mut net, i);
    }
    // Layer f until q's keyframe (frame 150), then q only.
    let after: Vec<u8> = layers_at(&net, small_b)[before..].to_vec();
    let switch = after.iter().position(|l| *l == 0).expect("a switch to q");
    assert!(after[..switch].iter().all(|l| *l == 2), "{after:?}");
    assert!(after[switch..].iter().all(|l| *l == 0), "{after:?}");
    let frame_of = |k: usize| net.browsers[small_b].frames[before + k].1[26];
    assert_eq!(frame_of(switch) % 30, 0, "the switch is at a keyframe");
    assert!(
        layers_at(&net, big_b)[big_before..].iter().all(|l| *l == 2),
        "the other page keeps the top"
    );
    let times: Vec<u64> = net.browsers[small_b]
        .frame_times
        .iter()
        .map(|(_, t)| t.rebase(str0m::media::Frequency::NINETY_KHZ).numer())
        .collect();
    for pair in times.windows(2) {
        assert!(
            pair[1] > pair[0] && pair[1] - pair[0] <= 6_000,
            "RTP time continuous: {pair:?} in {times:?}"
        );
    }

    // The page stops sending on the line and starts again (a direction change, renegotiated):
    // the track comes back in its three layers, and the big page gets the top one again.
    for direction in [Direction::Inactive, Direction::SendOnly] {
        let mut change = net.browsers[0].rtc.sdp_api();
        change.set_direction(mid, direction);
        let (offer, pending) = change.apply().expect("a direction change to offer");
        let now = net.now;
        let answer = net
            .engine
            .reoffer(upstream, &offer.to_sdp_string(), now)
            .unwrap();
        net.browsers[0].accept(pending, &answer);
        for _ in 0..10 {
            net.step(&mut |_| None);
        }
    }
    let big_before = net.browsers[big_b].frames.len();
    for i in 180..255 {
        send(&mut net, i);
    }
    let got = layers_at(&net, big_b)[big_before..].to_vec();
    assert_eq!(got.last(), Some(&2), "the top layer again: {got:?}");
}
