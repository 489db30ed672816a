//! One simulated participant's media, as a page of an SFU room has it: a str0m peer that sends
//! (a microphone and a camera in three simulcast layers) and one that receives what the server
//! forwards, each on its own UDP socket. The signaling half (Huddle's WebSocket or Janus's HTTP
//! API) talks to this one through two channels, so the media loop is the same for both servers.
//!
//! Every video frame starts with an SEI NAL unit (user data unregistered) that names it: the
//! time it was written, its publisher and its layer. The receiving peer reads it back for the
//! latency to the kernel's stamp of the datagram that completed the frame ([`super::arrival`]),
//! from two starting points: the frame's writing, and the moment the last packet of that layer's
//! frame left the publisher's socket (so without the publisher's own sending of a keyframe's
//! dozens of packets — what the server adds). Neither server looks inside H.264 frames beyond
//! their parameter sets.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::Context;
use huddle_media::MediaTime;
use str0m::change::{SdpAnswer, SdpOffer, SdpPendingOffer};
use str0m::format::Codec;
use str0m::media::{Direction, MediaKind, Mid, Rid, Simulcast, SimulcastLayer};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, Input, Output, Rtc, RtcError};
use tokio::io::Interest;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

use super::arrival;

/// The simulcast layers, smallest first, as Huddle's pages name them.
pub const RIDS: [&str; 3] = ["q", "h", "f"];
/// Marks the bench's SEI payload (a UUID, as H.264's user data unregistered requires).
const STAMP_UUID: [u8; 16] = *b"huddle-bench-sei";

/// What the camera loops over: each layer's frames and where its IDRs are.
pub struct Source {
    pub layers: [Vec<Vec<u8>>; 3],
    /// Indices of each layer's IDR frames (a keyframe request jumps to the last one).
    idr: [Vec<usize>; 3],
}

impl Source {
    pub fn new(layers: [Vec<Vec<u8>>; 3]) -> Self {
        let idr = layers.each_ref().map(|frames| {
            frames
                .iter()
                .enumerate()
                .filter(|(_, f)| is_idr(f))
                .map(|(i, _)| i)
                .collect()
        });
        Source { layers, idr }
    }
}

/// Whether an Annex B frame holds an IDR slice (NAL unit type 5).
fn is_idr(frame: &[u8]) -> bool {
    frame
        .windows(4)
        .any(|w| w[..3] == [0, 0, 1] && w[3] & 0x1f == 5)
}

/// Signaling → media.
pub enum ToMedia {
    /// The server's answer to the sending peer's offer.
    UpAnswer(String),
    /// An offer for the receiving peer (the first one or a renegotiation).
    DownOffer(String),
    /// Which layers anyone receives, smallest first (Huddle's `layers`, dynacast).
    Layers([bool; 3]),
}

/// Media → signaling.
pub enum FromMedia {
    UpOffer(String),
    DownAnswer(String),
}

/// What all participants of a measurement add up.
#[derive(Default)]
pub struct Counters {
    pub publishing: AtomicUsize,
    /// Receiving lines that have delivered a video frame at least once.
    pub streams_flowing: AtomicUsize,
    pub failed: AtomicUsize,
    /// Only while set are frames, bytes and latencies counted.
    pub measuring: AtomicBool,
    pub video_frames: AtomicU64,
    pub video_bytes: AtomicU64,
    pub audio_packets: AtomicU64,
    /// Camera frames the publishers sent (all their active layers).
    pub video_frames_sent: AtomicU64,
    /// Microseconds from a frame's writing to its arrival at a subscriber.
    pub latency_us: Mutex<Vec<u32>>,
    /// When the last packet of each recent frame of each layer left its publisher.
    pub left: Mutex<HashMap<Stamp, Instant>>,
    /// Microseconds from then to the frame's arrival at a subscriber: the latency the server
    /// adds, without the publisher's own sending of the frame.
    pub forward_latency_us: Mutex<Vec<u32>>,
    /// The same for frames other than IDRs. The source has one every 2 s (a browser sends
    /// them only when asked), and a keyframe is ten or so times a frame's packets: the slowest
    /// percent of all frames is mostly keyframes, which this tells apart.
    pub delta_latency_us: Mutex<Vec<u32>>,
}

/// How this participant behaves.
pub struct Role {
    pub index: usize,
    /// The address its sockets bind to.
    pub host: IpAddr,
    /// Whether its microphone carries speech (its audio level says so, RFC 6464).
    pub speaking: bool,
}

fn epoch() -> Instant {
    static START: OnceLock<Instant> = OnceLock::new();
    *START.get_or_init(Instant::now)
}

/// Which frame a stamp names: one layer's frame of one publisher.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Stamp {
    /// Microseconds from the generator's epoch to the frame's writing.
    us: u64,
    /// The publisher's number in this process (modulo 256).
    publisher: u8,
    /// Its index in [`RIDS`].
    layer: u8,
}

impl Stamp {
    fn new(written: Instant, publisher: u8, layer: u8) -> Self {
        let us = written.duration_since(epoch()).as_micros() as u64;
        Stamp {
            us,
            publisher,
            layer,
        }
    }

    fn written(&self) -> Instant {
        epoch() + Duration::from_micros(self.us)
    }

    /// The SEI NAL unit that carries it: 7 bits of its 56 in each byte, the top bit set, so
    /// the payload never holds the zeros that would need emulation prevention.
    fn nal(&self) -> [u8; 32] {
        let bits = self.us << 10 | u64::from(self.publisher) << 2 | u64::from(self.layer);
        let mut nal = [0u8; 32];
        nal[..7].copy_from_slice(&[0, 0, 0, 1, 0x06, 0x05, 24]);
        nal[7..23].copy_from_slice(&STAMP_UUID);
        for (i, b) in nal[23..31].iter_mut().enumerate() {
            *b = 0x80 | ((bits >> (7 * i)) & 0x7f) as u8;
        }
        nal[31] = 0x80; // rbsp_trailing_bits
        nal
    }

    /// The stamp a frame carries.
    fn of(frame: &[u8]) -> Option<Stamp> {
        let head = &frame[..frame.len().min(96)];
        let at = head.windows(16).position(|w| w == STAMP_UUID)? + 16;
        let bytes = head.get(at..at + 8)?;
        let bits = bytes
            .iter()
            .enumerate()
            .fold(0u64, |acc, (i, b)| acc | (u64::from(b & 0x7f) << (7 * i)));
        Some(Stamp {
            us: bits >> 10,
            publisher: (bits >> 2) as u8,
            layer: (bits & 3) as u8,
        })
    }
}

/// The SSRC of an RTP packet and whether it ends a frame (its marker bit); `None` for RTCP
/// (told apart by RFC 5761's payload type range), STUN and DTLS.
fn rtp_ssrc_and_marker(datagram: &[u8]) -> Option<(u32, bool)> {
    let ssrc = datagram.get(8..12)?;
    if datagram[0] >> 6 != 2 || (64..=95).contains(&(datagram[1] & 0x7f)) {
        return None;
    }
    let ssrc = u32::from_be_bytes([ssrc[0], ssrc[1], ssrc[2], ssrc[3]]);
    Some((ssrc, datagram[1] & 0x80 != 0))
}

/// Frames whose leaving a publisher keeps on record: two seconds of three layers.
const LEFT_KEPT: usize = 3 * 30 * 2;

/// Why a negotiated line has no writer: str0m gives none once the connection is closed.
const SENDER_CLOSED: &str = "the sending connection closed (timed out, or closed by the server)";

/// Timeouts a peer is handed within one drain, so one that always has something due cannot
/// keep the generator from the other participants.
const MAX_DUE_PER_DRAIN: u32 = 256;

/// A str0m peer on its own socket.
struct Peer {
    rtc: Rtc,
    socket: UdpSocket,
    local: SocketAddr,
}

impl Peer {
    async fn new(host: IpAddr, now: Instant) -> anyhow::Result<Self> {
        let socket = UdpSocket::bind((host, 0)).await?;
        let local = socket.local_addr()?;
        let mut rtc = Rtc::builder()
            .clear_codecs()
            .enable_h264(true)
            .enable_opus(true, false)
            .build(now);
        rtc.add_local_candidate(Candidate::host(local, "udp")?);
        Ok(Peer { rtc, socket, local })
    }

    /// `data` from `source`, which reached the socket at `arrived`: the estimator's feedback
    /// then says when a packet arrived, as a browser's network thread does, not when this
    /// generator, busy with every other participant, got to it.
    fn receive(&mut self, data: &[u8], source: SocketAddr, arrived: Instant) -> anyhow::Result<()> {
        let input = Input::Receive(
            arrived,
            Receive::new(Protocol::Udp, source, self.local, data)?,
        );
        Ok(self.rtc.handle_input(input)?)
    }

    /// Sends what str0m has to send and hands its events to `event` and each datagram, once
    /// sent, to `sent`; returns when str0m next wants the time.
    async fn drain(
        &mut self,
        mut event: impl FnMut(Event),
        mut sent: impl FnMut(&[u8]),
    ) -> anyhow::Result<Instant> {
        let mut due = 0;
        loop {
            match self.rtc.poll_output()? {
                // A deadline already passed (a frame just written is packetized and stamped at
                // timeouts) is handed back here: tokio's timer rounds a deadline up to its next
                // millisecond tick, and that wait would be counted as the server's latency.
                Output::Timeout(t) if due < MAX_DUE_PER_DRAIN => {
                    let now = Instant::now();
                    if t > now {
                        return Ok(t);
                    }
                    due += 1;
                    self.rtc.handle_input(Input::Timeout(now))?;
                }
                Output::Timeout(t) => return Ok(t),
                Output::Transmit(t) => {
                    let _ = self.socket.send_to(&t.contents, t.destination).await;
                    sent(&t.contents);
                }
                Output::Event(e) => event(e),
            }
        }
    }
}

/// The camera: where each layer is in its loop, and which layers to send.
struct Camera {
    source: Arc<Source>,
    position: [usize; 3],
    active: [bool; 3],
    frames: u64,
}

impl Camera {
    /// Back to the IDR that starts the current group of `layer`, so the next frame is a
    /// keyframe (what a keyframe request asks for).
    fn keyframe(&mut self, layer: usize) {
        let p = self.position[layer];
        let idr = &self.source.idr[layer];
        self.position[layer] = idr.iter().rev().find(|&&i| i <= p).copied().unwrap_or(0);
    }
}

/// Runs one participant until `stop` or until signaling hangs up.
pub async fn run(
    role: Role,
    source: Arc<Source>,
    counters: Arc<Counters>,
    mut signals: mpsc::UnboundedReceiver<ToMedia>,
    replies: mpsc::UnboundedSender<FromMedia>,
    stop: Arc<tokio::sync::Notify>,
) -> anyhow::Result<()> {
    let now = Instant::now();
    let mut up = Peer::new(role.host, now).await?;
    let mut down = Peer::new(role.host, now).await?;
    // Only the receiving peer's arrivals are read.
    arrival::enable(down.socket.as_raw_fd())?;

    let mut change = up.rtc.sdp_api();
    let audio = change.add_media(MediaKind::Audio, Direction::SendOnly, None, None, None);
    let mut simulcast = Simulcast::new();
    for rid in RIDS {
        simulcast.add_send_layer(SimulcastLayer::new(rid));
    }
    let video = change.add_media(
        MediaKind::Video,
        Direction::SendOnly,
        None,
        None,
        Some(simulcast),
    );
    let (offer, pending) = change.apply().context("the sending offer")?;
    let mut pending: Option<SdpPendingOffer> = Some(pending);
    replies.send(FromMedia::UpOffer(offer.to_sdp_string()))?;

    let mut camera = Camera {
        position: [0; 3],
        active: [true; 3],
        frames: 0,
        source,
    };
    // Cameras start at different points of the loop, as different people would.
    let start = role.index * 7 % camera.source.layers[0].len();
    camera.position = [start; 3].map(|p| p.min(camera.source.layers[0].len() - 1));
    for l in 0..3 {
        camera.keyframe(l);
    }
    let level: i8 = if role.speaking { -20 } else { -127 };
    let mut audio_packets = 0u64;
    let mut connected = false;
    // Whether `counters.publishing` counts this one yet.
    let mut announced = false;
    let mut flowing: Vec<Mid> = Vec::new();
    let mut next_video = Instant::now();
    let mut next_audio = Instant::now();
    // This publisher's number in its frames' stamps.
    static PUBLISHERS: AtomicUsize = AtomicUsize::new(0);
    let publisher = PUBLISHERS.fetch_add(1, Ordering::Relaxed) as u8;
    // Per layer, the frame written last and its stream's SSRC, until its last packet leaves.
    let mut leaving: [Option<(u32, Stamp)>; 3] = [None; 3];
    // The stamps this publisher put on record in `counters.left`, oldest first.
    let mut recorded: VecDeque<Stamp> = VecDeque::new();
    let mut up_buf = vec![0u8; 2048];
    let mut down_buf = vec![0u8; 2048];
    // When the datagram the receiving peer was last handed reached its socket.
    let mut down_arrival: Option<Instant> = None;
    let stopped = stop.notified();
    tokio::pin!(stopped);
    loop {
        let mut keyframes = Vec::new();
        let up_wake = up
            .drain(
                |e| match e {
                    Event::Connected => connected = true,
                    Event::KeyframeRequest(r) => keyframes.push(r.rid),
                    _ => {}
                },
                |datagram| {
                    let Some((ssrc, true)) = rtp_ssrc_and_marker(datagram) else {
                        return;
                    };
                    let Some(slot) = leaving
                        .iter_mut()
                        .find(|l| l.is_some_and(|(s, _)| s == ssrc))
                    else {
                        return;
                    };
                    let Some((_, stamp)) = slot.take() else {
                        return;
                    };
                    let mut left = counters.left.lock().expect("no panics under it");
                    left.insert(stamp, Instant::now());
                    recorded.push_back(stamp);
                    if recorded.len() > LEFT_KEPT
                        && let Some(old) = recorded.pop_front()
                    {
                        left.remove(&old);
                    }
                },
            )
            .await?;
        for rid in keyframes {
            let layer = rid.and_then(|r| RIDS.iter().position(|&x| *r == *x));
            camera.keyframe(layer.unwrap_or(2));
        }
        let measuring = counters.measuring.load(Ordering::Relaxed);
        let down_wake = down
            .drain(
                |e| {
                    let Event::MediaData(d) = e else {
                        return;
                    };
                    if d.params.spec().codec == Codec::Opus {
                        if measuring {
                            counters.audio_packets.fetch_add(1, Ordering::Relaxed);
                        }
                        return;
                    }
                    if !flowing.contains(&d.mid) {
                        flowing.push(d.mid);
                        counters.streams_flowing.fetch_add(1, Ordering::Relaxed);
                    }
                    if measuring {
                        counters.video_frames.fetch_add(1, Ordering::Relaxed);
                        counters
                            .video_bytes
                            .fetch_add(d.data.len() as u64, Ordering::Relaxed);
                        if let Some(stamp) = Stamp::of(&d.data) {
                            // To the kernel's arrival of the packet that completed the frame.
                            let arrived = down_arrival.unwrap_or_else(Instant::now);
                            let micros = |since: Instant| {
                                let us = arrived.saturating_duration_since(since).as_micros();
                                us.min(u128::from(u32::MAX)) as u32
                            };
                            let left = counters
                                .left
                                .lock()
                                .expect("no panics under it")
                                .get(&stamp)
                                .copied();
                            if let Some(left) = left {
                                counters
                                    .forward_latency_us
                                    .lock()
                                    .expect("no panics under it")
                                    .push(micros(left));
                            }
                            let us = micros(stamp.written());
                            counters
                                .latency_us
                                .lock()
                                .expect("no panics under it")
                                .push(us);
                            if !is_idr(&d.data) {
                                let mut l = counters
                                    .delta_latency_us
                                    .lock()
                                    .expect("no panics under it");
                                l.push(us);
                            }
                        }
                    }
                },
                |_| {},
            )
            .await?;
        down_arrival = None;
        if connected && !announced {
            announced = true;
            counters.publishing.fetch_add(1, Ordering::Relaxed);
        }
        let mut wake = up_wake.min(down_wake);
        if connected {
            wake = wake.min(next_video).min(next_audio);
        }
        tokio::select! {
            _ = &mut stopped => return Ok(()),
            m = signals.recv() => match m {
                None => return Ok(()),
                Some(ToMedia::UpAnswer(sdp)) => {
                    let pending = pending.take().context("an answer with no offer out")?;
                    up.rtc.sdp_api().accept_answer(pending, SdpAnswer::from_sdp_string(&sdp)?)?;
                }
                Some(ToMedia::DownOffer(sdp)) => {
                    let answer = down.rtc.sdp_api().accept_offer(SdpOffer::from_sdp_string(&sdp)?)?;
                    replies.send(FromMedia::DownAnswer(answer.to_sdp_string()))?;
                }
                Some(ToMedia::Layers(active)) => camera.active = active,
            },
            r = up.socket.recv_from(&mut up_buf) => {
                let (n, from) = r?;
                up.receive(&up_buf[..n], from, Instant::now())?;
            }
            r = down.socket.readable() => {
                r?;
                let fd = down.socket.as_raw_fd();
                match down.socket.try_io(Interest::READABLE, || arrival::recv_from(fd, &mut down_buf)) {
                    Ok((n, from, at)) => {
                        down_arrival = at;
                        down.receive(&down_buf[..n], from, at.unwrap_or_else(Instant::now))?;
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(e) => return Err(e.into()),
                }
            }
            () = tokio::time::sleep_until(wake.into()) => {
                let now = Instant::now();
                if connected && now >= next_video {
                    let sent = send_video(&mut up.rtc, video, &mut camera, now, publisher, &mut leaving)?;
                    if sent && measuring {
                        counters.video_frames_sent.fetch_add(1, Ordering::Relaxed);
                    }
                    next_video += Duration::from_micros(33_333);
                }
                if connected && now >= next_audio {
                    let writer = up.rtc.writer(audio).context(SENDER_CLOSED)?;
                    let pt = writer.payload_params().next().context("no Opus")?.pt();
                    let time = MediaTime::new(audio_packets * 960, str0m::media::Frequency::FORTY_EIGHT_KHZ);
                    // An Opus TOC byte (CELT, 20 ms, mono) and a plausible payload: nobody decodes it.
                    let mut packet = vec![0xf8u8; 80];
                    packet[1..].fill(0x5a);
                    writer.audio_level(level, role.speaking).write(pt, now, time, packet)?;
                    audio_packets += 1;
                    next_audio += Duration::from_millis(20);
                }
                up.rtc.handle_input(Input::Timeout(now))?;
                down.rtc.handle_input(Input::Timeout(now))?;
            }
        }
    }
}

/// One frame of each active layer, each behind its stamp, at the same capture time; each
/// layer's stamp and SSRC go to `leaving`. False if str0m has too many frames waiting to go out
/// (the generator's core cannot keep up): the frame is skipped, and `Sample::sent` shows it.
fn send_video(
    rtc: &mut Rtc,
    mid: Mid,
    camera: &mut Camera,
    now: Instant,
    publisher: u8,
    leaving: &mut [Option<(u32, Stamp)>; 3],
) -> anyhow::Result<bool> {
    let time = MediaTime::from_90khz(camera.frames * 3000);
    for (layer, rid) in RIDS.into_iter().enumerate() {
        let stamp = Stamp::new(now, publisher, layer as u8);
        let sei = stamp.nal();
        let frames = &camera.source.layers[layer];
        let position = camera.position[layer];
        camera.position[layer] = (position + 1) % frames.len();
        if !camera.active[layer] {
            continue;
        }
        let mut data = Vec::with_capacity(sei.len() + frames[position].len());
        data.extend_from_slice(&sei);
        data.extend_from_slice(&frames[position]);
        let writer = rtc.writer(mid).context(SENDER_CLOSED)?;
        let pt = writer
            .payload_params()
            .find(|p| p.spec().codec == Codec::H264)
            .context("no H.264")?
            .pt();
        match writer.rid(Rid::from(rid)).write(pt, now, time, data) {
            Ok(()) => {}
            Err(RtcError::WriteWithoutPoll) => return Ok(false),
            Err(e) => return Err(e.into()),
        }
        let ssrc = rtc
            .direct_api()
            .stream_tx_by_mid(mid, Some(Rid::from(rid)))
            .map(|tx| *tx.ssrc());
        leaving[layer] = ssrc.map(|ssrc| (ssrc, stamp));
    }
    camera.frames += 1;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stamp_reads_back_to_the_microsecond_and_holds_no_zero_pair() {
        let at = epoch() + Duration::from_micros(123_456_789);
        let stamp = Stamp::new(at, 201, 2);
        let mut frame = stamp.nal().to_vec();
        assert!(!frame[4..].windows(2).any(|w| w == [0, 0]));
        frame.extend_from_slice(&[0, 0, 0, 1, 0x65, 1, 2, 3]);
        assert_eq!(Stamp::of(&frame), Some(stamp));
        assert_eq!(Stamp::of(&frame).map(|s| s.written()), Some(at));
        assert_eq!(Stamp::of(&frame[8..]), None);
    }

    #[test]
    fn rtp_is_told_from_rtcp_and_its_marker_read() {
        let mut rtp = [0u8; 20];
        rtp[0] = 0x80;
        rtp[1] = 0x80 | 102; // marker, H.264's payload type
        rtp[8..12].copy_from_slice(&0x1234_5678u32.to_be_bytes());
        assert_eq!(rtp_ssrc_and_marker(&rtp), Some((0x1234_5678, true)));
        rtp[1] = 102;
        assert_eq!(rtp_ssrc_and_marker(&rtp), Some((0x1234_5678, false)));
        rtp[1] = 200; // a sender report
        assert_eq!(rtp_ssrc_and_marker(&rtp), None);
        // STUN's first byte is 0 or 1; a short datagram is nothing.
        assert_eq!(rtp_ssrc_and_marker(&[0u8; 20]), None);
        assert_eq!(rtp_ssrc_and_marker(&[0x80; 8]), None);
    }
}
