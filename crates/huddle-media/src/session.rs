//! One browser's peer connection with the server: a str0m [`Rtc`] and what it is for.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use str0m::media::{MediaKind, MediaTime, Mid};
use str0m::{Rtc, RtcConfig};

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
}

impl SessionKind {
    pub fn room(&self) -> Option<&str> {
        match self {
            SessionKind::Publish { room } | SessionKind::Watch { room } => Some(room),
            SessionKind::Echo(_) => None,
        }
    }

    /// Transformed echo decodes and encodes H.264 itself; every other kind forwards whatever
    /// codec the browser picked.
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
        match self {
            // The encoder follows the receiver's bandwidth estimate (TWCC, paced sending).
            SessionKind::Echo(t) if t.decodes() => config
                .enable_h264(true)
                .enable_bwe(Some(str0m::bwe::Bitrate::kbps(1_000))),
            // Forwarded frames cannot adapt to an estimate: no BWE, so no pacer — packets go
            // out as they come, without a timer wake-up per packet.
            _ => config.enable_vp8(true).enable_h264(true).enable_vp9(true),
        }
    }
}

const STUN_MAX_RTO: Duration = Duration::from_millis(1000);
const STUN_MAX_RETRANSMITS: usize = 5;

/// Opaque handle of a session, unique for the life of an [`Engine`](crate::Engine).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionId(pub u64);

impl std::fmt::Display for SessionId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "s{}", self.0)
    }
}

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
    pub(crate) audio: Option<Mid>,
    pub(crate) video: Option<Mid>,
    /// Media time of the first video frame, so transforms see time since the stream began.
    pub(crate) video_origin: Option<MediaTime>,
    /// Last keyframe request sent to this session's browser (requests are throttled).
    pub(crate) last_keyframe_request: Option<Instant>,
    /// Addresses this session received from, for the demultiplexing table.
    pub(crate) sources: Vec<SocketAddr>,
}

/// Keyframe requests towards one sender are at most this frequent: every new viewer and every
/// loss would otherwise ask, and each keyframe is many packets.
pub(crate) const KEYFRAME_REQUEST_INTERVAL: Duration = Duration::from_millis(500);

impl Session {
    pub(crate) fn new(rtc: Rtc, kind: SessionKind, now: Instant) -> Self {
        Session {
            rtc,
            kind,
            created: now,
            connected: false,
            audio: None,
            video: None,
            video_origin: None,
            last_keyframe_request: None,
            sources: Vec::new(),
        }
    }

    pub(crate) fn mid(&self, kind: MediaKind) -> Option<Mid> {
        match kind {
            MediaKind::Audio => self.audio,
            MediaKind::Video => self.video,
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
