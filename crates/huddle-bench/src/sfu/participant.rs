//! One simulated participant's media, as a page of an SFU room has it: a str0m peer that sends
//! (a microphone and a camera in three simulcast layers) and one that receives what the server
//! forwards, each on its own UDP socket. The signaling half (Huddle's WebSocket or Janus's HTTP
//! API) talks to this one through two channels, so the media loop is the same for both servers.
//!
//! Every video frame starts with an SEI NAL unit (user data unregistered) that carries the
//! time it was sent; the receiving peer reads it back for the forwarding latency, to the kernel's
//! stamp of the datagram that completed the frame ([`super::arrival`]). Neither
//! server looks inside H.264 frames beyond their parameter sets.

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
    /// Microseconds from a frame's sending to its arrival at a subscriber.
    pub latency_us: Mutex<Vec<u32>>,
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

/// The SEI NAL unit for a frame sent at `now`: 7 bits of the microsecond count in each byte,
/// the top bit set, so the payload never holds the zeros that would need emulation prevention.
fn stamp(now: Instant) -> [u8; 32] {
    let us = now.duration_since(epoch()).as_micros() as u64;
    let mut nal = [0u8; 32];
    nal[..7].copy_from_slice(&[0, 0, 0, 1, 0x06, 0x05, 24]);
    nal[7..23].copy_from_slice(&STAMP_UUID);
    for (i, b) in nal[23..31].iter_mut().enumerate() {
        *b = 0x80 | ((us >> (7 * i)) & 0x7f) as u8;
    }
    nal[31] = 0x80; // rbsp_trailing_bits
    nal
}

/// The sending time a frame's stamp carries.
fn stamped(frame: &[u8]) -> Option<Instant> {
    let head = &frame[..frame.len().min(96)];
    let at = head.windows(16).position(|w| w == STAMP_UUID)? + 16;
    let bytes = head.get(at..at + 8)?;
    let us = bytes
        .iter()
        .enumerate()
        .fold(0u64, |acc, (i, b)| acc | (u64::from(b & 0x7f) << (7 * i)));
    Some(epoch() + Duration::from_micros(us))
}

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

    fn receive(&mut self, data: &[u8], source: SocketAddr) -> anyhow::Result<()> {
        let input = Input::Receive(
            Instant::now(),
            Receive::new(Protocol::Udp, source, self.local, data)?,
        );
        Ok(self.rtc.handle_input(input)?)
    }

    /// Sends what str0m has to send and hands its events to `event`; returns when str0m next
    /// wants the time.
    async fn drain(&mut self, mut event: impl FnMut(Event)) -> anyhow::Result<Instant> {
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
    let mut up_buf = vec![0u8; 2048];
    let mut down_buf = vec![0u8; 2048];
    // When the datagram the receiving peer was last handed reached its socket.
    let mut down_arrival: Option<Instant> = None;
    let stopped = stop.notified();
    tokio::pin!(stopped);
    loop {
        let mut keyframes = Vec::new();
        let up_wake = up
            .drain(|e| match e {
                Event::Connected => connected = true,
                Event::KeyframeRequest(r) => keyframes.push(r.rid),
                _ => {}
            })
            .await?;
        for rid in keyframes {
            let layer = rid.and_then(|r| RIDS.iter().position(|&x| *r == *x));
            camera.keyframe(layer.unwrap_or(2));
        }
        let measuring = counters.measuring.load(Ordering::Relaxed);
        let down_wake = down
            .drain(|e| {
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
                    if let Some(sent) = stamped(&d.data) {
                        // To the kernel's arrival of the packet that completed the frame.
                        let arrived = down_arrival.unwrap_or_else(Instant::now);
                        let us = arrived.saturating_duration_since(sent).as_micros();
                        let us = us.min(u128::from(u32::MAX)) as u32;
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
            })
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
                up.receive(&up_buf[..n], from)?;
            }
            r = down.socket.readable() => {
                r?;
                let fd = down.socket.as_raw_fd();
                match down.socket.try_io(Interest::READABLE, || arrival::recv_from(fd, &mut down_buf)) {
                    Ok((n, from, at)) => {
                        down_arrival = at;
                        down.receive(&down_buf[..n], from)?;
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(e) => return Err(e.into()),
                }
            }
            () = tokio::time::sleep_until(wake.into()) => {
                let now = Instant::now();
                if connected && now >= next_video {
                    if send_video(&mut up.rtc, video, &mut camera, now)? && measuring {
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

/// One frame of each active layer, each behind its stamp, at the same capture time. False if
/// str0m has too many frames waiting to go out (the generator's core cannot keep up): the
/// frame is skipped, and `Sample::sent` shows it.
fn send_video(rtc: &mut Rtc, mid: Mid, camera: &mut Camera, now: Instant) -> anyhow::Result<bool> {
    let time = MediaTime::from_90khz(camera.frames * 3000);
    let sei = stamp(now);
    for (layer, rid) in RIDS.into_iter().enumerate() {
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
        let mut frame = stamp(at).to_vec();
        assert!(!frame[4..].windows(2).any(|w| w == [0, 0]));
        frame.extend_from_slice(&[0, 0, 0, 1, 0x65, 1, 2, 3]);
        assert_eq!(stamped(&frame), Some(at));
        assert_eq!(stamped(&frame[8..]), None);
    }
}
