//! Every media session of one media worker behind its UDP port: the host half of the media peer.
//! Demultiplexing, str0m's run loop (mutate → drain to `Timeout`), timers, session lifecycle,
//! echo and the hand-off of frames to transcoders; for room sessions it feeds the SFU core
//! (`huddle-sfu`) what str0m reports and carries out what the core decides.
//!
//! Sans-IO: datagrams and time come in through `handle_*`, datagrams and jobs go out through
//! [`Engine::poll_output`], and [`Engine::poll_timeout`] says when to call back.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use huddle_sfu::{IdMap, Layer, Owner, Packet, SessionId, Sfu, TrackId};
use str0m::bwe::BweKind;
use str0m::change::{SdpAnswer, SdpOffer};
use str0m::channel::ChannelData;
use str0m::config::DtlsCert;
use str0m::format::{Codec, PayloadParams};
use str0m::media::{
    Direction, KeyframeRequestKind, MediaAdded, MediaChanged, MediaData, MediaKind, MediaTime, Mid,
};
use str0m::net::{Protocol, Receive, Transmit};
use str0m::rtp::{RtpPacket, Vp8Descriptor};
use str0m::{
    Candidate, Event, IceConnectionState, Input, Output as RtcOutput, PacerReason, Reason, Rtc,
};

use crate::session::{CloseReason, Line, LineUse, RENEGOTIATION_DELAY, Session, SessionKind};
use crate::timers::Timers;
use crate::transform::Transform;

/// Where the server's media socket(s) are, and how the outside sees them.
#[derive(Clone, Debug)]
pub struct LocalAddr {
    /// The address a socket is bound to; packets arrive with this destination.
    pub local: SocketAddr,
    /// The address browsers must send to when the host is behind a 1:1 NAT (`--public-ip`).
    pub public: Option<SocketAddr>,
}

#[derive(Clone, Debug)]
pub struct EngineConfig {
    pub addrs: Vec<LocalAddr>,
    /// Sessions whose ICE has not connected by then are closed.
    pub connect_timeout: Duration,
    pub max_sessions: usize,
}

impl EngineConfig {
    pub fn new(addrs: Vec<LocalAddr>) -> Self {
        EngineConfig {
            addrs,
            connect_timeout: Duration::from_secs(20),
            max_sessions: 1000,
        }
    }
}

/// Why an offer was not accepted. Each says what to fix; the HTTP layer maps them to 4xx/5xx.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OfferError {
    #[error("the SDP offer does not parse: {0}")]
    BadSdp(String),
    #[error("the offer has no video track; send a camera track (m=video)")]
    NoVideo,
    #[error("the offer has neither audio nor video")]
    NoMedia,
    #[error(
        "no video codec in common: transformed video is H.264 (constrained baseline), and the offer has none"
    )]
    NoH264,
    #[error("no codec in common for any of the offered media")]
    NoCommonCodec,
    #[error("the offer was refused: {0}")]
    Refused(String),
    #[error(
        "the offer's media sections contradict each other (a payload type defined twice?) and cannot be negotiated"
    )]
    Unnegotiable,
    #[error("the server has {0} media sessions, its limit; try again later")]
    Full(usize),
    #[error("room {0:?} already has a publisher")]
    RoomTaken(String),
    #[error(
        "the offer has {0} media sections (m= lines); at most {MAX_MEDIA_SECTIONS} are accepted"
    )]
    TooManyMedia(usize),
}

/// Media sections (m= lines) an offer may have. A browser sends a handful; each one costs the
/// session state and answer text, so hundreds would turn a small offer into megabytes held.
pub const MAX_MEDIA_SECTIONS: usize = 16;

/// Timeouts a session is handed within one drain to let its queued packets out. A keyframe
/// forwarded to a subscriber is a few dozen packets; the bound keeps one session that always
/// has something due from holding the loop while others wait.
const RELEASE_PER_DRAIN: u32 = 256;

/// How long the pacer's turn after a packet waits when nothing is queued behind it. str0m asks
/// for a timeout right after each packet it lets out (its gate before the next); handing it
/// over at once costs a walk of every stream of the session per forwarded packet and lets
/// nothing out. Taken with the next packet forwarded to the session instead — a subscriber
/// gets one every millisecond or two — or by the timer after this, whichever comes first.
const AFTER_SEND_DELAY: Duration = Duration::from_millis(2);

/// A transformed session's encoded video frame, to decode → transform → encode off the loop.
#[derive(Debug, Clone)]
pub struct TranscodeJob {
    pub session: SessionId,
    pub transform: Transform,
    /// One H.264 access unit (Annex B) as the browser sent it.
    pub access_unit: Arc<[u8]>,
    /// RTP media time: give it back with the encoded frame.
    pub media_time: MediaTime,
    /// Time since the stream's first frame (for time-dependent transforms).
    pub elapsed: Duration,
}

#[derive(Debug)]
pub enum Output {
    /// A datagram to send from `source` (one of the configured local addresses).
    Transmit(Transmit),
    Transcode(TranscodeJob),
    /// The browser asked for a keyframe of the transformed stream: tell its encoder.
    EncoderKeyframe(SessionId),
    /// The receiver's bandwidth estimate for the transformed stream: the encoder follows it.
    EncoderBitrate {
        session: SessionId,
        bps: u64,
    },
    /// The session ended and its state is gone; free what the I/O layer holds for it.
    Closed {
        session: SessionId,
        reason: CloseReason,
    },
    /// The server's offer on a page's receiving connection (tracks to add): give it to the
    /// page, whose answer goes to [`Engine::accept_answer`]. Preceded by `Tracks`.
    Offer {
        session: SessionId,
        sdp: String,
    },
    /// Every track `session` receives, and the line that carries it now if any: the page
    /// labels its tiles by it, and names the tracks in its views.
    Tracks {
        session: SessionId,
        tracks: Vec<CarriedTrack>,
    },
    /// The layers of a page's published track anyone receives: the page pauses the others
    /// (`RTCRtpEncodingParameters.active`).
    Layers {
        session: SessionId,
        mid: String,
        active: Vec<bool>,
    },
    /// Who speaks in `room`, loudest first (signaling peer ids).
    Speakers {
        room: String,
        peers: Vec<String>,
    },
}

/// One track a page's receiving connection receives, and whose it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CarriedTrack {
    pub track: TrackId,
    /// The sending line that carries it now; None while it is on none (the page's lines go to
    /// the tiles it shows).
    pub mid: Option<String>,
    pub kind: huddle_sfu::MediaKind,
    /// A screen share (else a camera or microphone).
    pub screen: bool,
    /// The publishing participant; None for a WHIP publisher.
    pub peer: Option<String>,
}

/// Why a page's answer to the server's offer was not taken.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AnswerError {
    #[error("no media session {0}")]
    NoSession(SessionId),
    #[error("the server has no offer waiting for an answer on this connection")]
    NoOffer,
    #[error("the SDP answer does not parse: {0}")]
    BadSdp(String),
    #[error("the answer was refused: {0}")]
    Refused(String),
}

/// A datagram nobody could take.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReceiveError {
    #[error("not STUN, DTLS, RTP or RTCP")]
    Unparsable,
    #[error("no session for this datagram")]
    NoSession,
}

pub struct Engine {
    config: EngineConfig,
    cert: DtlsCert,
    sessions: IdMap<SessionId, Session>,
    /// Remote address → session, learnt from accepted datagrams; a miss falls back to asking
    /// every session (`Rtc::accepts`, which knows the ICE credentials).
    by_source: HashMap<SocketAddr, SessionId>,
    /// Who is in which room, what they publish, and where each frame goes.
    sfu: Sfu,
    timers: Timers,
    /// The latest time an input carried: what the calls without one (`close`) act at.
    now: Option<Instant>,
    /// Participants (room, peer) with sessions here, as the SFU core's owners, with how many
    /// sessions each has (a page has two: upstream and downstream).
    owners: HashMap<(String, String), (Owner, usize)>,
    next_owner: u64,
    next_id: u64,
    out: VecDeque<Output>,
    /// Subscribers packets were forwarded to since their last drain, drained when outputs are
    /// polled: every packet of a batch of datagrams fans out first, and each subscriber then
    /// lets its share out in one drain instead of one drain per packet. One at a time, in the
    /// order written to, so the I/O layer can send a subscriber's datagrams while the next
    /// subscriber's are made.
    forwarded: VecDeque<SessionId>,
}

impl Engine {
    /// `cert` is the DTLS certificate every session presents (generated once: key generation per
    /// session would cost each `POST /offer` a few milliseconds).
    pub fn new(config: EngineConfig, cert: DtlsCert) -> Self {
        Engine {
            config,
            cert,
            sessions: IdMap::default(),
            by_source: HashMap::new(),
            sfu: Sfu::new(),
            timers: Timers::default(),
            now: None,
            owners: HashMap::new(),
            next_owner: 0,
            next_id: 1,
            out: VecDeque::new(),
            forwarded: VecDeque::new(),
        }
    }

    /// A fresh DTLS certificate from str0m's crypto provider (aws-lc-rs).
    pub fn generate_cert() -> DtlsCert {
        str0m::crypto::from_feature_flags()
            .dtls_provider
            .generate_certificate()
            // Key generation only fails if the crypto library itself is broken.
            .expect("aws-lc-rs generates a DTLS certificate")
    }

    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    pub fn sessions(&self) -> impl Iterator<Item = SessionId> + '_ {
        self.sessions.keys().copied()
    }

    pub fn kind(&self, session: SessionId) -> Option<&SessionKind> {
        self.sessions.get(&session).map(|s| &s.kind)
    }

    /// Accepts a browser's offer for a new session and returns the answer, which carries the
    /// server's candidates (no trickle needed).
    pub fn accept(
        &mut self,
        kind: SessionKind,
        offer: &str,
        now: Instant,
    ) -> Result<(SessionId, String), OfferError> {
        if kind.server_offers() {
            return Err(OfferError::Refused(
                "the server makes the offers on this connection".into(),
            ));
        }
        if self.sessions.len() >= self.config.max_sessions {
            return Err(OfferError::Full(self.sessions.len()));
        }
        // Counted before parsing: the parse itself is what a huge offer would make expensive.
        let sections = offer.lines().filter(|l| l.starts_with("m=")).count();
        if sections > MAX_MEDIA_SECTIONS {
            return Err(OfferError::TooManyMedia(sections));
        }
        let parsed =
            SdpOffer::from_sdp_string(offer).map_err(|e| OfferError::BadSdp(e.to_string()))?;
        let has = |m: &str| offer.lines().any(|l| l.starts_with(m));
        kind.check_offer(has("m=video "), has("m=audio "))?;
        self.now = Some(now);

        // str0m asserts some invariants of the remote description while negotiating (a payload
        // type claimed twice panics, found by fuzz/media_engine); the Rtc is new and dropped on
        // failure, and nothing of the engine changes before it returns, so a panic is only a
        // refused offer, not the end of the media thread that serves every session.
        let negotiated =
            std::panic::catch_unwind(AssertUnwindSafe(|| self.negotiate(&kind, parsed, now)));
        let (rtc, answer) = negotiated.map_err(|_| OfferError::Unnegotiable)??;
        check_answer(&kind, &answer)?;

        let id = SessionId(self.next_id);
        self.next_id += 1;
        if let Some(room) = kind.room() {
            // A WHIP room has one publisher: WHEP viewers see one camera.
            let taken = kind.publishes_alone()
                && self.sfu.members(room).iter().any(|m| {
                    self.sessions
                        .get(m)
                        .is_some_and(|s| s.kind.publishes_alone())
                });
            if taken {
                return Err(OfferError::RoomTaken(room.to_owned()));
            }
        }
        self.admit(id, Session::new(rtc, kind, now), None, now);
        Ok((id, answer))
    }

    /// Opens the connection a page of an SFU room receives on (`kind` is
    /// [`SessionKind::Downstream`]) and returns the server's first offer: a data channel and a
    /// sending line for every track the room has. Later tracks come as [`Output::Offer`].
    pub fn open_downstream(
        &mut self,
        kind: SessionKind,
        tiles: Option<usize>,
        now: Instant,
    ) -> Result<(SessionId, String), OfferError> {
        if !kind.server_offers() {
            return Err(OfferError::Refused(
                "the page makes the offers on this connection".into(),
            ));
        }
        if self.sessions.len() >= self.config.max_sessions {
            return Err(OfferError::Full(self.sessions.len()));
        }
        self.now = Some(now);
        let rtc = self.new_rtc(&kind, now);
        let id = SessionId(self.next_id);
        self.next_id += 1;
        self.admit(id, Session::new(rtc, kind, now), tiles, now);
        // A new Rtc with a data channel to add always has an offer to make; were it not so,
        // the session would be of no use, so it goes at once.
        let Some(offer) = self.offer_unbound(id, true) else {
            self.close(id);
            return Err(OfferError::Refused("nothing to offer".into()));
        };
        self.emit_tracks(id);
        Ok((id, offer))
    }

    /// The page's answer to the server's last offer on `session`.
    pub fn accept_answer(
        &mut self,
        session: SessionId,
        answer: &str,
        now: Instant,
    ) -> Result<(), AnswerError> {
        self.now = Some(now);
        let s = self
            .sessions
            .get_mut(&session)
            .ok_or(AnswerError::NoSession(session))?;
        let answer =
            SdpAnswer::from_sdp_string(answer).map_err(|e| AnswerError::BadSdp(e.to_string()))?;
        let pending = s.pending_offer.take().ok_or(AnswerError::NoOffer)?;
        let rtc = &mut s.rtc;
        let taken = std::panic::catch_unwind(AssertUnwindSafe(|| {
            rtc.sdp_api().accept_answer(pending, answer)
        }));
        match taken {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(AnswerError::Refused(e.to_string())),
            Err(_) => {
                // str0m may have been left mid-update: this connection cannot go on.
                self.close_with(session, CloseReason::Failed);
                return Err(AnswerError::Refused(
                    "the answer contradicts the offer".into(),
                ));
            }
        }
        for track in s.answered() {
            self.sfu.line_ready(session, track, now);
        }
        // Tracks that came while the offer was out go in the next one.
        self.schedule_offer(session, now);
        self.drive(session, now);
        Ok(())
    }

    /// A new offer from the page on its sending connection `session` (it added, replaced or
    /// stopped a track); returns the answer.
    pub fn reoffer(
        &mut self,
        session: SessionId,
        offer: &str,
        now: Instant,
    ) -> Result<String, OfferError> {
        self.now = Some(now);
        let sections = offer.lines().filter(|l| l.starts_with("m=")).count();
        if sections > MAX_MEDIA_SECTIONS {
            return Err(OfferError::TooManyMedia(sections));
        }
        let parsed =
            SdpOffer::from_sdp_string(offer).map_err(|e| OfferError::BadSdp(e.to_string()))?;
        let s = self
            .sessions
            .get_mut(&session)
            .ok_or(OfferError::Refused(format!("no media session {session}")))?;
        if s.kind.server_offers() {
            return Err(OfferError::Refused(
                "the server makes the offers on this connection".into(),
            ));
        }
        let rtc = &mut s.rtc;
        let taken =
            std::panic::catch_unwind(AssertUnwindSafe(|| rtc.sdp_api().accept_offer(parsed)));
        let answer = match taken {
            Ok(Ok(answer)) => answer.to_sdp_string(),
            Ok(Err(e)) => return Err(OfferError::Refused(e.to_string())),
            Err(_) => {
                self.close_with(session, CloseReason::Failed);
                return Err(OfferError::Unnegotiable);
            }
        };
        self.drive(session, now);
        Ok(answer)
    }

    /// How the page of downstream `session` shows the tiles of some of the tracks it receives:
    /// which get a line, and the layer each receives (nothing while hidden). Unknown sessions
    /// and tracks are ignored.
    pub fn set_views(
        &mut self,
        session: SessionId,
        views: &[(TrackId, huddle_sfu::View)],
        now: Instant,
    ) {
        self.now = Some(now);
        if !self.sessions.contains_key(&session) {
            return;
        }
        self.sfu.set_views(session, views, now);
        let mut work = VecDeque::new();
        self.apply_sfu(&mut work);
        self.drive_all(work, now);
    }

    /// Takes a new session in: the SFU room it is a member of (`tiles`: how many video tiles a
    /// receiving page shows at once, if it said), its first drive.
    fn admit(&mut self, id: SessionId, session: Session, tiles: Option<usize>, now: Instant) {
        if let Some(room) = session.kind.room() {
            let owner = match session.kind.peer() {
                Some(peer) => {
                    let key = (room.to_owned(), peer.to_owned());
                    let next = &mut self.next_owner;
                    let entry = self.owners.entry(key).or_insert_with(|| {
                        *next += 1;
                        // Apart from the session ids that WHIP and WHEP sessions own by.
                        (Owner((1 << 63) | *next), 0)
                    });
                    entry.1 += 1;
                    entry.0
                }
                None => Owner(id.0),
            };
            self.sfu
                .join(room, id, owner, session.kind.receives(), tiles, now);
        }
        tracing::debug!(session = %id, kind = ?session.kind, "media session created");
        self.sessions.insert(id, session);
        self.drive(id, now);
    }

    /// A new peer connection that has accepted `offer`, and its answer.
    fn negotiate(
        &self,
        kind: &SessionKind,
        offer: SdpOffer,
        now: Instant,
    ) -> Result<(Rtc, String), OfferError> {
        let mut rtc = self.new_rtc(kind, now);
        let answer = rtc
            .sdp_api()
            .accept_offer(offer)
            .map_err(|e| OfferError::Refused(e.to_string()))?
            .to_sdp_string();
        Ok((rtc, answer))
    }

    /// A peer connection for `kind` with the server's candidates.
    fn new_rtc(&self, kind: &SessionKind, now: Instant) -> Rtc {
        let mut rtc = kind
            .rtc_config()
            .set_dtls_cert(self.cert.clone())
            .build(now);
        for a in &self.config.addrs {
            let candidate = match a.public {
                Some(public) => Candidate::server_reflexive(public, a.local, Protocol::Udp),
                None => Candidate::host(a.local, Protocol::Udp),
            };
            match candidate {
                Ok(c) => {
                    rtc.add_local_candidate(c);
                }
                Err(e) => tracing::warn!(addr = %a.local, error = %e, "unusable media candidate"),
            }
            if a.public.is_some() {
                // The host candidate is what str0m matches arriving datagrams against.
                if let Ok(c) = Candidate::host(a.local, Protocol::Udp) {
                    rtc.add_local_candidate(c);
                }
            }
        }
        rtc
    }

    /// Makes the server's next offer on a downstream session: a sending line for each track
    /// waiting for one; the `first` has a free audio line if none waits (an offer needs a
    /// line). None if there is nothing to add or an offer is still unanswered (its answer
    /// brings the next one).
    fn offer_unbound(&mut self, id: SessionId, first: bool) -> Option<String> {
        let s = self.sessions.get_mut(&id)?;
        if !s.kind.server_offers() || s.pending_offer.is_some() || s.offered == first {
            return None;
        }
        if s.unbound.is_empty() && !first {
            return None;
        }
        let unbound = std::mem::take(&mut s.unbound);
        let mut change = s.rtc.sdp_api();
        let added: Vec<(Mid, MediaKind, TrackId)> = unbound
            .into_iter()
            .map(|(track, kind)| {
                let mid = change.add_media(kind, Direction::SendOnly, None, None, None);
                (mid, kind, track)
            })
            .collect();
        // Not a data channel, which the page never uses: each would be an SCTP association
        // that str0m polls at every packet forwarded to the page. The first microphone
        // forwarded takes the line.
        let free = (first && added.is_empty())
            .then(|| change.add_media(MediaKind::Audio, Direction::SendOnly, None, None, None));
        let (offer, pending) = change.apply()?;
        for (mid, kind, track) in added {
            s.carry_on_new_line(mid, kind, track);
        }
        if let Some(mid) = free {
            s.add_free_line(mid, MediaKind::Audio);
        }
        s.pending_offer = Some(pending);
        s.offered = true;
        Some(offer.to_sdp_string())
    }

    /// Tells the page of downstream `id` the tracks it receives and the lines carrying them.
    fn emit_tracks(&mut self, id: SessionId) {
        let Some(s) = self.sessions.get(&id) else {
            return;
        };
        if !s.kind.server_offers() {
            return;
        }
        let tracks = self
            .sfu
            .subscriptions(id)
            .filter_map(|track| {
                let info = self.sfu.info(track)?;
                Some(CarriedTrack {
                    track,
                    mid: s.carrier(track).map(|mid| mid.to_string()),
                    kind: info.kind,
                    screen: info.screen,
                    peer: self
                        .sfu
                        .publisher(track)
                        .and_then(|p| self.sessions.get(&p))
                        .and_then(|p| p.kind.peer())
                        .map(str::to_owned),
                })
            })
            .collect();
        self.out.push_back(Output::Tracks {
            session: id,
            tracks,
        });
    }

    /// A datagram arrived at `destination` (one of the configured local addresses).
    pub fn handle_receive(
        &mut self,
        now: Instant,
        source: SocketAddr,
        destination: SocketAddr,
        datagram: &[u8],
    ) -> Result<(), ReceiveError> {
        self.now = Some(now);
        let receive = Receive::new(Protocol::Udp, source, destination, datagram)
            .map_err(|_| ReceiveError::Unparsable)?;
        let input = Input::Receive(now, receive);
        let known = self
            .by_source
            .get(&source)
            .copied()
            .filter(|id| self.sessions.get(id).is_some_and(|s| s.rtc.accepts(&input)));
        let id = match known {
            Some(id) => id,
            None => {
                let id = self
                    .sessions
                    .iter()
                    .find(|(_, s)| s.rtc.accepts(&input))
                    .map(|(id, _)| *id)
                    .ok_or(ReceiveError::NoSession)?;
                self.by_source.insert(source, id);
                if let Some(s) = self.sessions.get_mut(&id)
                    && !s.sources.contains(&source)
                {
                    s.sources.push(source);
                }
                id
            }
        };
        let session = self.sessions.get_mut(&id).ok_or(ReceiveError::NoSession)?;
        if let Err(e) = session.rtc.handle_input(input) {
            tracing::debug!(session = %id, error = %e, "datagram refused");
        }
        self.drive(id, now);
        Ok(())
    }

    /// Time has reached `now`: run every session whose deadline passed.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.now = Some(now);
        if self.sfu.poll_timeout().is_some_and(|t| t <= now) {
            self.sfu.handle_timeout(now);
            let mut work = VecDeque::new();
            self.apply_sfu(&mut work);
            self.drive_all(work, now);
        }
        for id in self.timers.pop_due(now) {
            let Some(s) = self.sessions.get_mut(&id) else {
                continue;
            };
            if !s.connected && now >= s.created + self.config.connect_timeout {
                self.close_with(id, CloseReason::NeverConnected);
                continue;
            }
            if let Err(e) = s.rtc.handle_input(Input::Timeout(now)) {
                tracing::debug!(session = %id, error = %e, "timeout handling failed");
            }
            self.offer_if_due(id, now);
            self.drive(id, now);
        }
    }

    /// The transcoder's output for `session`: send it as the session's video.
    pub fn handle_encoded(
        &mut self,
        session: SessionId,
        media_time: MediaTime,
        frame: Vec<u8>,
        now: Instant,
    ) {
        let Some(s) = self.sessions.get_mut(&session) else {
            return;
        };
        let Some(mid) = s.first(MediaKind::Video) else {
            return;
        };
        let Some(writer) = s.rtc.writer(mid) else {
            return;
        };
        let Some(pt) = writer.payload_params().next().map(|p| p.pt()) else {
            return;
        };
        if let Err(e) = writer.write(pt, now, media_time, frame) {
            tracing::debug!(session = %session, error = %e, "encoded frame not written");
        }
        self.drive(session, now);
    }

    /// Asks the browser of `session` for a keyframe of its video (the transcoder lost its place).
    pub fn request_keyframe(&mut self, session: SessionId, now: Instant) {
        if let Some(s) = self.sessions.get_mut(&session) {
            request_keyframe_from(s, now);
            self.drive(session, now);
        }
    }

    /// Ends a session now (WHIP/WHEP `DELETE`, shutdown). Unknown ids are ignored.
    pub fn close(&mut self, session: SessionId) {
        self.close_with(session, CloseReason::Closed);
        if let Some(now) = self.now {
            let mut work = VecDeque::new();
            self.apply_sfu(&mut work);
            self.drive_all(work, now);
        }
    }

    /// What the engine has for the I/O layer. Subscribers that packets were forwarded to are
    /// drained here, one when the last one's outputs are taken, so call it until `None` after
    /// every input.
    pub fn poll_output(&mut self) -> Option<Output> {
        while self.out.is_empty() {
            let (Some(now), Some(id)) = (self.now, self.forwarded.pop_front()) else {
                break;
            };
            self.drive(id, now);
        }
        self.out.pop_front()
    }

    pub fn poll_timeout(&mut self) -> Option<Instant> {
        match (self.timers.next(), self.sfu.poll_timeout()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Drains `id` to its next timeout, then acts on what it reported; acting may mutate this
    /// and other sessions, which are drained in turn (a worklist, so no recursion).
    fn drive(&mut self, id: SessionId, now: Instant) {
        self.drive_all(VecDeque::from([id]), now);
    }

    fn drive_all(&mut self, mut work: VecDeque<SessionId>, now: Instant) {
        while let Some(id) = work.pop_front() {
            let events = self.drain(id, now);
            for event in events {
                self.on_event(id, event, now, &mut work);
            }
            if let Some(s) = self.sessions.get(&id)
                && !s.rtc.is_alive()
            {
                self.close_with(id, CloseReason::Disconnected);
            }
            self.apply_sfu(&mut work);
        }
    }

    /// Carries out what the SFU core decided; sessions it wrote to join `work`.
    fn apply_sfu(&mut self, work: &mut VecDeque<SessionId>) {
        let mut rebound = Vec::new();
        while let Some(out) = self.sfu.poll_output() {
            match out {
                huddle_sfu::Output::Subscribe { subscriber, .. } => rebound.push(subscriber),
                huddle_sfu::Output::Attach {
                    subscriber,
                    track,
                    kind,
                } => {
                    let Some(s) = self.sessions.get_mut(&subscriber) else {
                        continue;
                    };
                    let kind = str0m_kind(kind);
                    match s.bind(track, kind) {
                        Some(true) => {
                            if let Some(now) = self.now {
                                self.sfu.line_ready(subscriber, track, now);
                            }
                        }
                        // Ready when the offer that made the line is answered.
                        Some(false) => {}
                        None => s.unbound.push((track, kind)),
                    }
                    rebound.push(subscriber);
                }
                huddle_sfu::Output::Detach { subscriber, track }
                | huddle_sfu::Output::Unsubscribe { subscriber, track } => {
                    if let Some(s) = self.sessions.get_mut(&subscriber) {
                        s.unbind(track);
                        rebound.push(subscriber);
                    }
                }
                huddle_sfu::Output::RequestKeyframe {
                    publisher,
                    track,
                    layer,
                } => {
                    if let Some(s) = self.sessions.get_mut(&publisher) {
                        request_layer_keyframe(s, track, layer);
                        work.push_back(publisher);
                    }
                }
                huddle_sfu::Output::Layers {
                    publisher,
                    track,
                    active,
                } => {
                    // A WHIP encoder has no channel to be told on; a page has.
                    let Some(s) = self.sessions.get(&publisher) else {
                        continue;
                    };
                    let Some(line) = s.lines.iter().find(
                        |l| matches!(&l.use_, LineUse::Publishes { track: t, .. } if *t == track),
                    ) else {
                        continue;
                    };
                    if s.kind.peer().is_some() {
                        let layers = match &line.use_ {
                            LineUse::Publishes { rids, .. } => rids.len().max(1),
                            _ => 1,
                        };
                        self.out.push_back(Output::Layers {
                            session: publisher,
                            mid: line.mid.to_string(),
                            active: active[..layers].to_vec(),
                        });
                    }
                }
                huddle_sfu::Output::Bitrate {
                    subscriber,
                    minimum,
                    desired,
                } => {
                    if let Some(s) = self.sessions.get_mut(&subscriber) {
                        s.rtc.bwe().set_bitrate(
                            str0m::bwe::Bitrate::bps(minimum),
                            str0m::bwe::Bitrate::bps(desired),
                        );
                        work.push_back(subscriber);
                    }
                }
                huddle_sfu::Output::Speakers { room, sessions } => {
                    let peers = sessions
                        .iter()
                        .filter_map(|s| self.sessions.get(s)?.kind.peer().map(str::to_owned))
                        .collect();
                    self.out.push_back(Output::Speakers { room, peers });
                }
            }
        }
        rebound.sort_unstable();
        rebound.dedup();
        for id in rebound {
            // Lines bound now are told at once; tracks that need a new line wait for the offer.
            self.emit_tracks(id);
            if let Some(now) = self.now {
                self.schedule_offer(id, now);
            }
            work.push_back(id);
        }
    }

    /// Arranges the server's next offer to downstream `id` if tracks wait for a line: after
    /// [`RENEGOTIATION_DELAY`], so that the tracks of everyone arriving meanwhile go in one.
    fn schedule_offer(&mut self, id: SessionId, now: Instant) {
        if let Some(s) = self.sessions.get_mut(&id)
            && s.kind.server_offers()
            && s.offered
            && !s.unbound.is_empty()
            && s.offer_due.is_none()
        {
            s.offer_due = Some(now + RENEGOTIATION_DELAY);
        }
    }

    /// Sends downstream `id` the offer it is due at `now`, if any.
    fn offer_if_due(&mut self, id: SessionId, now: Instant) {
        let Some(s) = self.sessions.get_mut(&id) else {
            return;
        };
        if s.offer_due.is_none_or(|due| now < due) {
            return;
        }
        s.offer_due = None;
        if let Some(sdp) = self.offer_unbound(id, false) {
            self.emit_tracks(id);
            self.out.push_back(Output::Offer { session: id, sdp });
        }
    }

    fn drain(&mut self, id: SessionId, now: Instant) -> Vec<Event> {
        let mut events = Vec::new();
        let Some(s) = self.sessions.get_mut(&id) else {
            return events;
        };
        s.awaiting_drain = false;
        let mut released = 0;
        let mut sent = Sent::Nothing;
        // Packets forwarded here wait for the pacer's next turn: it is handed over without
        // asking str0m for its deadline first (a walk of the session's streams per packet).
        let mut turn = s.connected && s.unsent > 0;
        loop {
            if turn {
                turn = false;
                released += 1;
                sent = Sent::Nothing;
                if let Err(e) = s.rtc.handle_input(Input::Timeout(now)) {
                    tracing::debug!(session = %id, error = %e, "timeout handling failed");
                }
            }
            match s.rtc.poll_output() {
                // str0m's pacer lets one queued packet out per timeout, so a connected session
                // with packets waiting is handed the timeout here: the queue leaves in this
                // drain instead of one packet per turn of the I/O loop. A session still
                // connecting has no media to let out; its timeouts (ICE, DTLS, and a refusal
                // found there) keep to the timer, after `accept` returns.
                Ok(RtcOutput::Timeout(t))
                    if s.connected
                        && released < RELEASE_PER_DRAIN
                        && if gate(&s.rtc, sent) {
                            s.unsent > 0 || sent == Sent::Str0ms
                        } else {
                            t <= now
                        } =>
                {
                    turn = true;
                }
                Ok(RtcOutput::Timeout(t)) => {
                    let deadline = if !s.connected {
                        t.min(s.created + self.config.connect_timeout)
                    } else if gate(&s.rtc, sent) && released < RELEASE_PER_DRAIN {
                        // The pacer's turn after its last packet, with nothing behind it: left
                        // for the next packet forwarded here to take (one timeout per packet,
                        // not two), or for the timer a moment later.
                        t.max(now + AFTER_SEND_DELAY)
                    } else {
                        t
                    };
                    if released < RELEASE_PER_DRAIN {
                        // str0m had nothing more to let out: what was counted has left.
                        s.unsent = 0;
                    }
                    let deadline = s.offer_due.map_or(deadline, |due| due.min(deadline));
                    self.timers.arm(id, deadline);
                    break;
                }
                Ok(RtcOutput::Transmit(t)) => {
                    sent = if s.unsent > 0 {
                        s.unsent -= 1;
                        // More of ours behind it: the pacer's gate is next, so its turn is
                        // handed over straight away.
                        turn = s.unsent > 0 && released < RELEASE_PER_DRAIN;
                        sent.max(Sent::Ours)
                    } else {
                        Sent::Str0ms
                    };
                    self.out.push_back(Output::Transmit(t));
                }
                Ok(RtcOutput::Event(e)) => events.push(e),
                Err(e) => {
                    tracing::debug!(session = %id, error = %e, "peer connection failed");
                    self.close_with(id, CloseReason::Failed);
                    break;
                }
            }
        }
        events
    }

    fn on_event(
        &mut self,
        id: SessionId,
        event: Event,
        now: Instant,
        work: &mut VecDeque<SessionId>,
    ) {
        let Some(s) = self.sessions.get_mut(&id) else {
            return;
        };
        match event {
            Event::Connected => {
                s.connected = true;
                tracing::debug!(session = %id, "media session connected");
                self.sfu.ready(id, now);
            }
            Event::IceConnectionStateChange(IceConnectionState::Disconnected) => {
                let reason = if s.connected {
                    CloseReason::Disconnected
                } else {
                    CloseReason::NeverConnected
                };
                self.close_with(id, reason);
            }
            Event::Closed => self.close_with(id, CloseReason::RemoteClosed),
            Event::MediaAdded(m) => self.on_media_added(id, m, now),
            Event::MediaChanged(c) => self.on_media_changed(id, c, now),
            Event::MediaData(data) => self.on_media(id, data, work),
            Event::RtpPacket(packet) => self.on_rtp(id, packet, now),
            Event::KeyframeRequest(req) => {
                if s.kind.transcodes() {
                    self.out.push_back(Output::EncoderKeyframe(id));
                } else if s.kind.echo().is_some() {
                    request_keyframe_from(s, now);
                    work.push_back(id);
                } else if let Some(LineUse::Carries(track)) =
                    s.line(req.mid).map(|l| l.use_.clone())
                {
                    self.sfu.keyframe_wanted(id, track, now);
                }
            }
            Event::ChannelData(d) if answer_ping(s, &d) => {
                work.push_back(id);
            }
            Event::EgressBitrateEstimate(
                BweKind::Twcc { estimate, .. } | BweKind::Remb { estimate, .. },
            ) => {
                if s.kind.transcodes() {
                    self.out.push_back(Output::EncoderBitrate {
                        session: id,
                        bps: estimate.as_u64(),
                    });
                } else if s.kind.room().is_some() {
                    self.sfu.set_estimate(id, estimate.as_u64(), now);
                }
            }
            _ => {}
        }
    }

    /// A media section was negotiated: an echo line, a track the browser publishes into the
    /// room, or a line to send another member's track on.
    fn on_media_added(&mut self, id: SessionId, m: MediaAdded, now: Instant) {
        let Some(s) = self.sessions.get_mut(&id) else {
            return;
        };
        if s.line(m.mid).is_some() {
            // A line the server added to its own offer.
            return;
        }
        let use_ = if s.kind.echo().is_some() {
            LineUse::Echo
        } else if s.kind.publishes() && m.direction.is_receiving() {
            let rids: Vec<_> = m
                .simulcast
                .iter()
                .flat_map(|sc| sc.recv.iter().map(|l| l.rid))
                .collect();
            let info = s.published(m.mid, m.kind, &rids);
            match self.sfu.publish(id, info, now) {
                Some(track) => LineUse::Publishes { track, rids },
                None => LineUse::Idle,
            }
        } else if m.direction.is_sending() {
            LineUse::Free
        } else {
            LineUse::Idle
        };
        let Some(s) = self.sessions.get_mut(&id) else {
            return;
        };
        s.lines.push(Line::new(m.mid, m.kind, use_));
        // Subscriptions that came before this line take it if they can.
        let unbound = std::mem::take(&mut s.unbound);
        for (track, kind) in unbound {
            match s.bind(track, kind) {
                Some(_) => self.sfu.line_ready(id, track, now),
                None => s.unbound.push((track, kind)),
            }
        }
    }

    /// The page stopped (or started again) sending on a line: its track leaves (or joins)
    /// the room.
    fn on_media_changed(&mut self, id: SessionId, c: MediaChanged, now: Instant) {
        let Some(s) = self.sessions.get_mut(&id) else {
            return;
        };
        if !s.kind.publishes() {
            return;
        }
        let Some(line) = s.lines.iter_mut().find(|l| l.mid == c.mid) else {
            return;
        };
        match (&line.use_, c.direction.is_receiving()) {
            (LineUse::Publishes { track, rids }, false) => {
                let track = *track;
                line.use_ = LineUse::Stopped { rids: rids.clone() };
                self.sfu.unpublish(track, now);
            }
            (LineUse::Stopped { rids }, true) => {
                let (rids, kind) = (rids.clone(), line.kind);
                let info = s.published(c.mid, kind, &rids);
                if let Some(track) = self.sfu.publish(id, info, now)
                    && let Some(line) = s.lines.iter_mut().find(|l| l.mid == c.mid)
                {
                    line.use_ = LineUse::Publishes { track, rids };
                }
            }
            _ => {}
        }
    }

    /// A frame from an echo session's browser (room sessions deliver packets, `on_rtp`).
    fn on_media(&mut self, id: SessionId, data: MediaData, work: &mut VecDeque<SessionId>) {
        let Some(s) = self.sessions.get_mut(&id) else {
            return;
        };
        let Some(line) = s.line(data.mid) else {
            return;
        };
        match line.use_ {
            LineUse::Echo if s.kind.transcodes() && line.kind == MediaKind::Video => {
                let elapsed = s.video_elapsed(data.time);
                if let Some(transform) = s.kind.echo() {
                    self.out.push_back(Output::Transcode(TranscodeJob {
                        session: id,
                        transform,
                        access_unit: data.data,
                        media_time: data.time,
                        elapsed,
                    }));
                }
            }
            LineUse::Echo => {
                write_media(s, data.mid, &data, data.time);
                work.push_back(id);
            }
            LineUse::Publishes { .. }
            | LineUse::Carries(_)
            | LineUse::Free
            | LineUse::Idle
            | LineUse::Stopped { .. } => {}
        }
    }

    /// An RTP packet from a room session's browser (room sessions run in str0m's RTP mode):
    /// a published track's goes to the SFU core and on to the subscribers.
    fn on_rtp(&mut self, id: SessionId, packet: RtpPacket, now: Instant) {
        let Some(s) = self.sessions.get_mut(&id) else {
            return;
        };
        let Some((mid, rid)) = s
            .rtc
            .direct_api()
            .stream_rx(&packet.header.ssrc)
            .map(|rx| (rx.mid(), rx.rid()))
        else {
            return;
        };
        let Some(Line {
            use_: LineUse::Publishes { track, rids },
            ..
        }) = s.line(mid)
        else {
            return;
        };
        let layer = match rid {
            None => Layer(0),
            Some(rid) => match rids.iter().position(|r| *r == rid) {
                Some(i) => Layer(i as u8),
                None => return,
            },
        };
        let track = *track;
        let pt = packet.header.payload_type;
        let Some(params) = s.rtc.codec_config().find(|p| p.pt() == pt).copied() else {
            return;
        };
        self.forward(track, layer, &params, &packet, now);
    }

    /// A packet of a published track: to every subscriber the SFU core routes it to, with the
    /// sequence number and RTP time it says (one continuous stream across layer switches).
    /// The subscribers are drained later, in [`Engine::poll_output`].
    fn forward(
        &mut self,
        track: TrackId,
        layer: Layer,
        params: &PayloadParams,
        packet: &RtpPacket,
        now: Instant,
    ) {
        let codec = params.spec().codec;
        // A keyframe's first packet starts a stream or a switch, and says its picture size
        // (VP8 in its header, VP9 in its scalability structure, H.264 in its SPS): tiles pick
        // layers by it.
        let inspected = crate::rtp_payload::inspect(codec, &packet.payload);
        if let Some((w, h)) = inspected.size {
            self.sfu.set_layer_size(track, layer, w, h, now);
        }
        let vp8 = match codec {
            Codec::Vp8 => Vp8Descriptor::parse(&packet.payload).ok(),
            _ => None,
        };
        let routed = Packet {
            layer,
            keyframe: inspected.keyframe,
            seq: *packet.seq_no,
            time: packet.time.numer(),
            hz: packet.time.frequency().get(),
            bytes: packet.payload.len(),
            audio_level: packet.header.ext_vals.audio_level.map(i8::unsigned_abs),
        };
        for target in self.sfu.route(track, routed, now) {
            let Some(sub) = self.sessions.get_mut(&target.subscriber) else {
                continue;
            };
            sub.write_forwarded(track, params, packet, vp8.as_ref(), target, now);
            if !sub.awaiting_drain {
                sub.awaiting_drain = true;
                self.forwarded.push_back(target.subscriber);
            }
        }
    }

    fn close_with(&mut self, id: SessionId, reason: CloseReason) {
        let Some(mut s) = self.sessions.remove(&id) else {
            return;
        };
        self.timers.disarm(id);
        // A graceful close tells the browser at once (RTCP BYE, DTLS close_notify).
        if s.rtc.is_alive() && s.rtc.close().is_ok() {
            while let Ok(o) = s.rtc.poll_output() {
                match o {
                    RtcOutput::Transmit(t) => self.out.push_back(Output::Transmit(t)),
                    RtcOutput::Event(_) => {}
                    RtcOutput::Timeout(_) => break,
                }
                if !s.rtc.is_alive() {
                    break;
                }
            }
        }
        for source in &s.sources {
            if self.by_source.get(source) == Some(&id) {
                self.by_source.remove(source);
            }
        }
        if let Some(room) = s.kind.room()
            && let Some(now) = self.now
        {
            self.sfu.leave(id, now);
            if let Some(peer) = s.kind.peer() {
                let key = (room.to_owned(), peer.to_owned());
                if let Some(entry) = self.owners.get_mut(&key) {
                    entry.1 -= 1;
                    if entry.1 == 0 {
                        self.owners.remove(&key);
                    }
                }
            }
        }
        tracing::debug!(session = %id, ?reason, "media session closed");
        self.out.push_back(Output::Closed {
            session: id,
            reason,
        });
    }
}

fn str0m_kind(kind: huddle_sfu::MediaKind) -> MediaKind {
    match kind {
        huddle_sfu::MediaKind::Audio => MediaKind::Audio,
        huddle_sfu::MediaKind::Video => MediaKind::Video,
    }
}

/// Echo: writes a received frame into `session`'s `mid` at RTP `time`, with the payload type
/// matching the frame's codec; frames in a codec the session did not negotiate are dropped.
fn write_media(session: &mut Session, mid: Mid, data: &MediaData, time: MediaTime) {
    let Some(writer) = session.rtc.writer(mid) else {
        return;
    };
    let Some(pt) = writer.match_params(data.params) else {
        return;
    };
    if let Err(e) = writer.write(pt, data.network_time, time, data.data.clone()) {
        tracing::debug!(error = %e, "frame not forwarded");
    }
}

/// Asks an echo session's browser for a keyframe of its video, throttled per session.
fn request_keyframe_from(session: &mut Session, now: Instant) {
    let Some(mid) = session.first(MediaKind::Video) else {
        return;
    };
    if !session.may_request_keyframe(now) {
        return;
    }
    if let Some(mut writer) = session.rtc.writer(mid)
        && writer.is_request_keyframe_possible(KeyframeRequestKind::Pli)
    {
        let _ = writer.request_keyframe(None, KeyframeRequestKind::Pli);
    }
}

/// Asks a publisher's browser for a keyframe of one layer of `track` (the SFU throttles).
fn request_layer_keyframe(session: &mut Session, track: TrackId, layer: Layer) {
    let Some((mid, rid)) = session.lines.iter().find_map(|l| match &l.use_ {
        LineUse::Publishes { track: t, rids } if *t == track => {
            Some((l.mid, rids.get(usize::from(layer.0)).copied()))
        }
        _ => None,
    }) else {
        return;
    };
    if let Some(rx) = session.rtc.direct_api().stream_rx_by_mid(mid, rid) {
        rx.request_keyframe(KeyframeRequestKind::Pli);
    }
}

/// aiortc's data channel contract: `ping X` is answered `pong X`. Returns whether it wrote.
fn answer_ping(session: &mut Session, d: &ChannelData) -> bool {
    if d.binary || !d.data.starts_with(b"ping") {
        return false;
    }
    let mut pong = b"pong".to_vec();
    pong.extend_from_slice(&d.data[4..]);
    session
        .rtc
        .channel(d.id)
        .is_some_and(|mut c| c.write(false, &pong).is_ok())
}

/// Refuses answers in which str0m had to reject the media the session needs.
fn check_answer(kind: &SessionKind, answer: &str) -> Result<(), OfferError> {
    // A rejected m-line has port 0 in the answer.
    let accepted = |m: &str| {
        answer
            .lines()
            .any(|l| l.starts_with(m) && !l.starts_with(&format!("{m}0 ")))
    };
    kind.check_answer(accepted("m=video "), accepted("m=audio "))
}

/// What a drain saw leave a session since it last handed the session a timeout.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Sent {
    Nothing,
    /// Only packets the engine forwarded (as far as a count of datagrams tells).
    Ours,
    /// Something str0m sent of its own (a resend, a probe's padding, a report): more of its
    /// own may be queued behind it.
    Str0ms,
}

/// Whether `rtc`'s deadline is its pacer's gate after a packet went out, `sent` since the last
/// timeout. The pacer asks for the same "at once" when a probe starts; that one is not a gate.
fn gate(rtc: &Rtc, sent: Sent) -> bool {
    sent != Sent::Nothing && rtc.last_timeout_reason() == Reason::Pacer(PacerReason::Immediate)
}

#[cfg(test)]
mod tests;
