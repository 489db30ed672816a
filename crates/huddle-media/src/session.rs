//! One browser's peer connection with the server: a str0m [`Rtc`] and what it is for.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use huddle_sfu::{IdMap, Target, TrackId, TrackInfo};
use str0m::format::PayloadParams;
use str0m::media::{MediaKind, MediaTime, Mid, Pt, Rid};
use str0m::rtp::{ExtensionValues, RtpPacket, RtpWrite, Vp8Descriptor};
use str0m::{Rtc, RtcConfig};

use crate::engine::OfferError;
use crate::picture_id::PictureIds;
use crate::transform::Transform;

/// What a session does with the media it receives and which media it sends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SessionKind {
    /// aiortc's `POST /offer`: the browser's tracks come back, video through `transform`.
    Echo(Transform),
    /// WHIP ingest: the browser (or OBS, GStreamer) publishes into `room`.
    Publish { room: String },
    /// WHEP playback: the session receives what `room`'s publisher sends.
    Watch { room: String },
    /// A page in an SFU room, on the connection it sends its camera, microphone and screen
    /// on: the page offers, the server answers.
    Upstream { room: String, peer: String },
    /// A page in an SFU room, on the connection it receives everyone else's tracks on: the
    /// server offers (a sending line per track), the page answers.
    Downstream { room: String, peer: String },
}

/// What each kind of session is, in one place: the engine asks these, never the kind.
impl SessionKind {
    /// The SFU room the session is a member of; echo sessions are in none.
    pub fn room(&self) -> Option<&str> {
        match self {
            SessionKind::Publish { room }
            | SessionKind::Watch { room }
            | SessionKind::Upstream { room, .. }
            | SessionKind::Downstream { room, .. } => Some(room),
            SessionKind::Echo(_) => None,
        }
    }

    /// The room's participant (signaling peer id) the session belongs to.
    pub fn peer(&self) -> Option<&str> {
        match self {
            SessionKind::Upstream { peer, .. } | SessionKind::Downstream { peer, .. } => Some(peer),
            _ => None,
        }
    }

    /// Whether the media the browser sends is published into the room.
    pub fn publishes(&self) -> bool {
        matches!(
            self,
            SessionKind::Publish { .. } | SessionKind::Upstream { .. }
        )
    }

    /// Whether the session receives the room's tracks (a page's sending connection and a
    /// WHIP ingest do not).
    pub(crate) fn receives(&self) -> bool {
        matches!(
            self,
            SessionKind::Watch { .. } | SessionKind::Downstream { .. }
        )
    }

    /// Whether the room may have only this one publisher (WHIP: WHEP viewers see one camera).
    pub(crate) fn publishes_alone(&self) -> bool {
        matches!(self, SessionKind::Publish { .. })
    }

    /// Whether the server makes the offers on this connection.
    pub(crate) fn server_offers(&self) -> bool {
        matches!(self, SessionKind::Downstream { .. })
    }

    /// Echo's transform: the session's media comes back to it, video through this.
    pub fn echo(&self) -> Option<Transform> {
        match self {
            SessionKind::Echo(t) => Some(*t),
            _ => None,
        }
    }

    /// Whether an offer without video is of no use (echo shows the video coming back).
    fn needs_video(&self) -> bool {
        matches!(self, SessionKind::Echo(_))
    }

    /// Whether this session decodes and encodes video itself (a transforming echo).
    pub(crate) fn transcodes(&self) -> bool {
        self.echo().is_some_and(|t| t.decodes())
    }

    /// Why the offer cannot serve this kind, judged from the media sections it offers.
    pub(crate) fn check_offer(&self, video: bool, audio: bool) -> Result<(), OfferError> {
        if self.needs_video() && !video {
            return Err(OfferError::NoVideo);
        }
        // A page with camera and microphone off still offers both sections (transceivers
        // without tracks); an offer of neither has nothing to send or receive.
        if !video && !audio {
            return Err(OfferError::NoMedia);
        }
        Ok(())
    }

    /// Why the answer cannot serve this kind, from the media str0m accepted.
    pub(crate) fn check_answer(&self, video: bool, audio: bool) -> Result<(), OfferError> {
        match () {
            _ if self.transcodes() && !video => Err(OfferError::NoH264),
            _ if self.needs_video() && !video => Err(OfferError::NoCommonCodec),
            _ if !video && !audio => Err(OfferError::NoCommonCodec),
            _ => Ok(()),
        }
    }

    /// Transformed echo decodes and encodes H.264 itself; every other kind forwards whatever
    /// codec the browser picked. Room sessions forward RTP packets as they come (str0m's RTP
    /// mode): no depacketizing and packetizing again per subscriber, and no wait for a whole
    /// frame; echo works on frames.
    pub(crate) fn rtc_config(&self) -> RtcConfig {
        // Audio is only ever forwarded, so any codec a browser may prefer will do.
        let mut config = Rtc::builder()
            .set_crypto_provider(crate::dtls::crypto_provider())
            .clear_codecs()
            .enable_opus(true, false)
            .enable_g722(true, false)
            .enable_pcmu(true, false)
            .enable_pcma(true, false);
        // Consent checks give up after ~5 s of silence instead of str0m's ~20 s: a browser
        // that left frees its session soon.
        config.set_max_stun_rto(STUN_MAX_RTO);
        config.set_max_stun_retransmits(STUN_MAX_RETRANSMITS);
        let config = config.set_rtp_mode(self.room().is_some());
        if self.transcodes() {
            // The encoder follows the receiver's bandwidth estimate (TWCC, paced sending).
            config
                .enable_h264(true)
                .enable_bwe(Some(str0m::bwe::Bitrate::kbps(1_000)))
        } else if self.server_offers() {
            // A page's receiving connection: the SFU picks each track's layer from this
            // estimate (TWCC), starting low so the first picture comes at once.
            config
                .enable_vp8(true)
                .enable_h264(true)
                .enable_vp9(true)
                .enable_bwe(Some(str0m::bwe::Bitrate::kbps(INITIAL_ESTIMATE_KBPS)))
        } else {
            // Forwarded frames cannot adapt to an estimate: no BWE, so no pacer — packets go
            // out as they come, without a timer wake-up per packet.
            config.enable_vp8(true).enable_h264(true).enable_vp9(true)
        }
    }
}

/// Where a page's receiving connection's estimate starts: the smallest layers of a few
/// cameras, which the estimator then probes up from.
const INITIAL_ESTIMATE_KBPS: u64 = 800;

const STUN_MAX_RTO: Duration = Duration::from_millis(1000);
const STUN_MAX_RETRANSMITS: usize = 5;

/// Why a session ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloseReason {
    /// The application closed it (WHIP/WHEP `DELETE`, shutdown).
    Closed,
    /// The browser closed the connection (DTLS close_notify, SCTP shutdown).
    RemoteClosed,
    /// ICE connectivity was lost: the browser left without a word, or the path broke.
    Disconnected,
    /// ICE never connected (no usable path, or the connect timeout passed).
    NeverConnected,
    /// The peer connection failed (DTLS, SCTP or str0m's own error).
    Failed,
}

pub(crate) struct Session {
    pub(crate) rtc: Rtc,
    pub(crate) kind: SessionKind,
    pub(crate) created: Instant,
    pub(crate) connected: bool,
    /// The negotiated media sections, in the order str0m reported them.
    pub(crate) lines: Vec<Line>,
    /// Tracks of the room this session subscribes to that wait for a sending line of their
    /// kind (a subscription can come before the offer's lines are reported, or before the
    /// server's next offer adds one).
    pub(crate) unbound: Vec<(TrackId, MediaKind)>,
    /// How each track is sent (the `Carries` lines of `lines`, by track): every forwarded
    /// packet looks its line up here.
    carried: IdMap<TrackId, Carried>,
    /// The server's offer the page has not answered yet (str0m allows one at a time).
    pub(crate) pending_offer: Option<str0m::change::SdpPendingOffer>,
    /// Whether the server made its first offer (later ones only add tracks).
    pub(crate) offered: bool,
    /// When the server's next offer goes out: tracks that wait for a line are gathered for
    /// [`RENEGOTIATION_DELAY`] first.
    pub(crate) offer_due: Option<Instant>,
    /// Media time of the first video frame, so transforms see time since the stream began.
    pub(crate) video_origin: Option<MediaTime>,
    /// Last keyframe request sent to this session's browser (requests are throttled).
    pub(crate) last_keyframe_request: Option<Instant>,
    /// Addresses this session received from, for the demultiplexing table.
    pub(crate) sources: Vec<SocketAddr>,
    /// Packets forwarded to str0m that its drain has not yet seen leave (as far as a count of
    /// datagrams tells): while some have not, the drain hands str0m's pacer its next turn at
    /// once instead of leaving it for the next packet.
    pub(crate) unsent: u32,
    /// Packets were forwarded to this session since its last drain: it is in the engine's list
    /// of sessions to drain.
    pub(crate) awaiting_drain: bool,
}

/// One negotiated media section of a session.
#[derive(Debug)]
pub(crate) struct Line {
    pub(crate) mid: Mid,
    pub(crate) kind: MediaKind,
    pub(crate) use_: LineUse,
    /// A sending line's stream while no track is bound to it (the bound track's `Carried`
    /// holds it meanwhile).
    stream: LineStream,
    /// Offered and answered: str0m has its stream, and what is written to it goes out. A line
    /// of the server's own offer is not until the page's answer.
    pub(crate) negotiated: bool,
}

impl Line {
    /// A line of a negotiation done (the browser's offer, the server's answer).
    pub(crate) fn new(mid: Mid, kind: MediaKind, use_: LineUse) -> Self {
        Line {
            mid,
            kind,
            use_,
            stream: LineStream::default(),
            negotiated: true,
        }
    }

    /// A line of the server's offer, waiting for the answer.
    fn offered(mid: Mid, kind: MediaKind, use_: LineUse) -> Self {
        Line {
            negotiated: false,
            ..Line::new(mid, kind, use_)
        }
    }
}

/// What keeps a sending line one RTP stream across the tracks it carries in turn: the
/// browser sees one SSRC, whose sequence numbers its SRTP replay check and jitter buffer want
/// ever increasing, whose RTP time its jitter buffer wants to follow the wall clock (each
/// publisher's clock starts at its own random point), and whose VP8 picture ids its decoder
/// wants continuous.
#[derive(Debug, Default)]
struct LineStream {
    /// Added to the SFU core's sequence numbers for the track carried now (they start at 0).
    base: u64,
    /// One past the highest sequence number sent.
    next: u64,
    /// Added (wrapping) to the SFU core's RTP time for the track carried now.
    time_offset: u64,
    /// The last RTP time sent and when: the next track's first packet follows it.
    last_time: Option<(u64, Instant)>,
    /// The next packet is the first of the track carried now.
    new_track: bool,
    /// The line's str0m stream is set up for forwarding: unpaced, with [`RESEND_WINDOW`].
    configured: bool,
    picture_ids: PictureIds,
}

impl LineStream {
    /// The stream goes on with another track.
    fn rebound(mut self) -> Self {
        self.base = self.next;
        self.new_track = true;
        self
    }

    /// The RTP time on the line of a packet at the core's `time`, in a clock of `hz`.
    fn time(&mut self, time: u64, hz: u32, now: Instant) -> u64 {
        if std::mem::take(&mut self.new_track)
            && let Some((last, at)) = self.last_time
        {
            let elapsed = now.saturating_duration_since(at).as_micros() as u64;
            let ticks = (elapsed * u64::from(hz) / 1_000_000).max(1);
            self.time_offset = last.wrapping_add(ticks).wrapping_sub(time);
        }
        let time = time.wrapping_add(self.time_offset);
        self.last_time = Some((time, now));
        time
    }
}

/// What a media section of a room session does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum LineUse {
    /// Echo: whatever arrives goes back out on the same line.
    Echo,
    /// The browser publishes `track` on it, in the simulcast layers `rids` (smallest first;
    /// empty without simulcast).
    Publishes { track: TrackId, rids: Vec<Rid> },
    /// It sends `track` of another member to the browser.
    Carries(TrackId),
    /// A sending line with nothing to send yet.
    Free,
    /// Neither: a line the browser sends on where the session does not publish.
    Idle,
    /// The browser published on it in `rids` and stopped: sending again publishes the same.
    Stopped { rids: Vec<Rid> },
}

/// A track this session's browser receives: its line, and the line's stream.
#[derive(Debug)]
struct Carried {
    mid: Mid,
    /// The publisher's payload type and this session's for the same codec, as last looked up
    /// (a publisher keeps to one codec, so this is looked up once).
    pt: Option<(Pt, Pt)>,
    stream: LineStream,
}

impl Carried {
    /// A track now carried on line `mid`, whose stream goes on as `stream`.
    fn on(mid: Mid, stream: LineStream) -> Self {
        Carried {
            mid,
            pt: None,
            stream,
        }
    }
}

/// How long the server gathers tracks for its next offer to a page. Each offer is the whole
/// session description (two media sections per member), so a room filling up — people arriving
/// a few a second — would otherwise renegotiate every page once per arrival: the work grows with
/// the square of the room, and at 50 arrivals a second a room of 20–30 filled the media worker's
/// queue. LiveKit's clients debounce their negotiation by 150 ms too.
pub(crate) const RENEGOTIATION_DELAY: Duration = Duration::from_millis(150);

/// How long a forwarded video packet is kept for a subscriber's NACK: mediasoup keeps video two
/// seconds (audio is not resent); str0m's default is three.
const RESEND_WINDOW: Duration = Duration::from_secs(2);

/// Keyframe requests towards one sender are at most this frequent: every new viewer and every
/// loss would otherwise ask, and each keyframe is many packets.
pub(crate) const KEYFRAME_REQUEST_INTERVAL: Duration = Duration::from_millis(500);

impl Session {
    /// What a track the browser publishes on line `mid` is, in simulcast layers `rids`: a
    /// page's first video line is its camera, a later one a screen share.
    pub(crate) fn published(&self, mid: Mid, kind: MediaKind, rids: &[Rid]) -> TrackInfo {
        match kind {
            MediaKind::Audio => TrackInfo::audio(),
            MediaKind::Video => TrackInfo {
                screen: self
                    .lines
                    .iter()
                    .find(|l| l.kind == MediaKind::Video)
                    .is_some_and(|first| first.mid != mid),
                ..TrackInfo::video(u8::try_from(rids.len().max(1)).unwrap_or(u8::MAX))
            },
        }
    }

    pub(crate) fn new(rtc: Rtc, kind: SessionKind, now: Instant) -> Self {
        Session {
            rtc,
            kind,
            created: now,
            connected: false,
            lines: Vec::new(),
            unbound: Vec::new(),
            carried: IdMap::default(),
            pending_offer: None,
            offered: false,
            offer_due: None,
            unsent: 0,
            awaiting_drain: false,
            video_origin: None,
            last_keyframe_request: None,
            sources: Vec::new(),
        }
    }

    /// The first media section of `kind` (echo sends its video back there).
    pub(crate) fn first(&self, kind: MediaKind) -> Option<Mid> {
        self.lines.iter().find(|l| l.kind == kind).map(|l| l.mid)
    }

    pub(crate) fn line(&self, mid: Mid) -> Option<&Line> {
        self.lines.iter().find(|l| l.mid == mid)
    }

    /// Writes a packet of `track`, published in `params`, to this session's browser where the
    /// SFU core placed it (`target`). A codec the session did not negotiate is dropped.
    pub(crate) fn write_forwarded(
        &mut self,
        track: TrackId,
        params: &PayloadParams,
        packet: &RtpPacket,
        vp8: Option<&Vp8Descriptor>,
        target: &Target,
        now: Instant,
    ) {
        let Some(carried) = self.carried.get_mut(&track) else {
            return;
        };
        let pt = match carried.pt {
            Some((from, to)) if from == params.pt() => to,
            _ => {
                let Some(to) = self
                    .rtc
                    .codec_config()
                    .match_params(*params)
                    .map(|p| p.pt())
                else {
                    return;
                };
                carried.pt = Some((params.pt(), to));
                to
            }
        };
        let from = &packet.header.ext_vals;
        let ext_vals = ExtensionValues {
            audio_level: from.audio_level,
            voice_activity: from.voice_activity,
            video_orientation: from.video_orientation,
            ..Default::default()
        };
        let video = params.spec().codec.is_video();
        let stream = &mut carried.stream;
        let seq = stream.base.wrapping_add(target.seq);
        stream.next = stream.next.max(seq + 1);
        let time = stream.time(target.time, packet.time.frequency().get(), now);
        let mut write = RtpWrite::new(
            pt,
            seq.into(),
            // RTP time is 32 bits on the wire; the core's is extended.
            time as u32,
            packet.timestamp,
            packet.payload.clone(),
        )
        .marker(packet.header.marker)
        .ext_vals(ext_vals)
        .nackable(video);
        if let Some(patch) = vp8.and_then(|d| stream.picture_ids.patch(d, target.starts_run)) {
            write = write.vp8_patch(patch);
        }
        if let Some(tx) = self.rtc.direct_api().stream_tx_by_mid(carried.mid, None) {
            if !stream.configured {
                // Forwarded as it comes, as Janus and mediasoup do: str0m's pacer would hold a
                // keyframe's packets to 1.1× the estimate. The estimate still comes from every
                // packet's feedback, and probes still go through the pacer.
                tx.set_unpaced(true);
                if video {
                    // A NACK comes within a round trip; str0m keeps 3 s by default.
                    tx.set_rtx_cache(1024, RESEND_WINDOW, Some(0.15));
                }
                stream.configured = true;
            }
            tx.write_rtp(write);
            self.unsent += 1;
        }
    }

    /// The sending line that carries `track` now.
    pub(crate) fn carrier(&self, track: TrackId) -> Option<Mid> {
        self.carried.get(&track).map(|c| c.mid)
    }

    /// A new sending line with nothing to send yet.
    pub(crate) fn add_free_line(&mut self, mid: Mid, kind: MediaKind) {
        self.lines.push(Line::offered(mid, kind, LineUse::Free));
    }

    /// A new sending line, made for `track`.
    pub(crate) fn carry_on_new_line(&mut self, mid: Mid, kind: MediaKind, track: TrackId) {
        self.lines
            .push(Line::offered(mid, kind, LineUse::Carries(track)));
        self.carried
            .insert(track, Carried::on(mid, LineStream::default()));
    }

    /// Binds `track` to a free sending line of `kind`: None if there is none, else whether
    /// that line is negotiated (ready to carry it now).
    pub(crate) fn bind(&mut self, track: TrackId, kind: MediaKind) -> Option<bool> {
        let l = self
            .lines
            .iter_mut()
            .find(|l| l.kind == kind && l.use_ == LineUse::Free)?;
        l.use_ = LineUse::Carries(track);
        let stream = std::mem::take(&mut l.stream).rebound();
        self.carried.insert(track, Carried::on(l.mid, stream));
        Some(l.negotiated)
    }

    /// The page answered the server's offer: its lines are negotiated. Returns the tracks on
    /// the lines that just were.
    pub(crate) fn answered(&mut self) -> Vec<TrackId> {
        let mut ready = Vec::new();
        for l in self.lines.iter_mut().filter(|l| !l.negotiated) {
            l.negotiated = true;
            if let LineUse::Carries(track) = l.use_ {
                ready.push(track);
            }
        }
        ready
    }

    /// Frees the line that carried `track`, if one did, and forgets it if it waited for one.
    pub(crate) fn unbind(&mut self, track: TrackId) {
        self.unbound.retain(|(t, _)| *t != track);
        let mut carried = self.carried.remove(&track);
        for l in self
            .lines
            .iter_mut()
            .filter(|l| l.use_ == LineUse::Carries(track))
        {
            l.use_ = LineUse::Free;
            if let Some(c) = carried.take() {
                l.stream = c.stream;
            }
        }
    }

    /// Time since the first video frame, for time-dependent transforms.
    pub(crate) fn video_elapsed(&mut self, time: MediaTime) -> Duration {
        let origin = *self.video_origin.get_or_insert(time);
        Duration::from_micros(time.saturating_sub(origin).as_micros())
    }

    /// Whether a keyframe request may go out now (and records it if so).
    pub(crate) fn may_request_keyframe(&mut self, now: Instant) -> bool {
        match self.last_keyframe_request {
            Some(t) if now.saturating_duration_since(t) < KEYFRAME_REQUEST_INTERVAL => false,
            _ => {
                self.last_keyframe_request = Some(now);
                true
            }
        }
    }
}
