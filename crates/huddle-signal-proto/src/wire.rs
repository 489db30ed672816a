//! The JSON wire format of `/ws`, version [`PROTOCOL_VERSION`]. `docs/protocol.md` is its prose.
//!
//! Every message is one WebSocket text frame holding one JSON object whose `type` names it.

use std::fmt;

pub use huddle_access::Source;
use serde::{Deserialize, Serialize};

/// The newest protocol version, the one a client names in `join` to use SFU rooms; bumped on
/// any incompatible change.
pub const PROTOCOL_VERSION: u32 = 2;
/// The oldest version still spoken: version 1 clients use mesh rooms as before.
pub const OLDEST_PROTOCOL_VERSION: u32 = 1;

/// How a room's media flows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RoomMode {
    /// Every browser sends to every other (up to six).
    #[default]
    Mesh,
    /// Every browser sends once to the server's media peer, which forwards to the others.
    Sfu,
    /// Peer-to-peer while two are in the room, through the server from three (the pages
    /// switch; the server serves it as an SFU room).
    Auto,
}

impl RoomMode {
    /// Whether pages of the room have connections with the server's media peer.
    pub fn has_media_peer(self) -> bool {
        matches!(self, RoomMode::Sfu | RoomMode::Auto)
    }
}

/// A participant's id within the server, random and opaque to clients.
///
/// Clients compare ids to pick roles in perfect negotiation: the peer with the greater id (byte-wise)
/// is *polite*.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PeerId(pub String);

impl PeerId {
    /// The server's media peer, the other end of a page's connections in an SFU room. Never a
    /// participant's id: those are eight characters.
    pub fn sfu() -> Self {
        PeerId("sfu".to_owned())
    }

    pub fn is_sfu(&self) -> bool {
        self.0 == "sfu"
    }
}

impl fmt::Display for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What a participant is sending, shown by the others (mute icons, screen tile labels).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MediaState {
    pub audio: bool,
    pub video: bool,
    /// The `MediaStream.id` of the screen share while one runs, so receivers can tell its track
    /// from the camera's in `ontrack` (stream ids survive SDP as `a=msid`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub screen: Option<String>,
}

/// An SDP offer or answer as `RTCSessionDescriptionInit` spells it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionDescription {
    #[serde(rename = "type")]
    pub kind: SdpKind,
    #[serde(default)]
    pub sdp: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SdpKind {
    Offer,
    Answer,
    Pranswer,
    Rollback,
}

/// Messages a client sends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum ClientMessage {
    /// Enter a room. `resume` is the token of an earlier `welcome`: within the grace period after
    /// a dropped socket it gives back the same peer id, so calls survive the reconnect.
    Join {
        v: u32,
        room: String,
        name: String,
        #[serde(default)]
        state: MediaState,
        #[serde(default)]
        resume: Option<String>,
        /// An access token (a LiveKit-compatible JWT), needed when the server has keys.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        token: Option<String>,
        /// (v2) The mode a room this join creates gets; a room that exists keeps its own.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        mode: Option<RoomMode>,
        /// (v2, SFU rooms) How many video tiles the page shows at once: until its first
        /// `view`, only that many of the tracks it receives count as on screen.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        tiles: Option<u16>,
    },
    /// An SDP description or an ICE candidate for one peer of the same room.
    Signal {
        to: PeerId,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        sdp: Option<SessionDescription>,
        /// An `RTCIceCandidateInit` object, relayed untouched.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        candidate: Option<serde_json::Map<String, serde_json::Value>>,
    },
    /// A text message to everyone in the room.
    Chat { text: String },
    /// The sender's media changed (mute, camera off, screen share).
    State(MediaState),
    /// Leave the room now; the others learn at once.
    Leave,
    /// Application-level keepalive: browsers cannot see WebSocket pings, so this is how a page
    /// notices a server that went silent.
    Ping,
    /// (Admins) turn off someone's microphone, camera or screen share.
    Mute { id: PeerId, source: Source },
    /// (Admins) remove someone; their token is refused in this room until it expires.
    Remove { id: PeerId },
    /// (Admins) let no one else join, or open the room again.
    Lock { locked: bool },
    /// (Admins) end the room for everyone.
    End,
    /// (SFU rooms) How the page shows the tracks it receives: each tile's size and whether it
    /// is on screen, so that it gets the layer it can use and nothing while hidden.
    View { tiles: Vec<TileView> },
}

/// One tile of a page in an SFU room, by the track it shows (`tracks`' `id`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TileView {
    pub track: String,
    pub visible: bool,
    /// In device pixels.
    #[serde(default)]
    pub width: u32,
    #[serde(default)]
    pub height: u32,
}

impl ClientMessage {
    /// The `type` tag, for metrics and errors.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Join { .. } => "join",
            Self::Signal { .. } => "signal",
            Self::Chat { .. } => "chat",
            Self::State(_) => "state",
            Self::Leave => "leave",
            Self::Ping => "ping",
            Self::Mute { .. } => "mute",
            Self::Remove { .. } => "remove",
            Self::Lock { .. } => "lock",
            Self::End => "end",
            Self::View { .. } => "view",
        }
    }

    /// Decodes one text frame, telling apart broken JSON, an unknown `type` and a message whose
    /// fields are wrong.
    pub fn decode(text: &str) -> Result<Self, DecodeError> {
        serde_json::from_str(text).map_err(|e| {
            use serde_json::error::Category;
            let detail = e.to_string();
            match e.classify() {
                Category::Syntax | Category::Eof | Category::Io => DecodeError::Json(detail),
                Category::Data if detail.starts_with("unknown variant") => {
                    DecodeError::UnknownType(detail)
                }
                Category::Data => DecodeError::Fields(detail),
            }
        })
    }
}

/// Why a text frame is not a [`ClientMessage`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    #[error("not valid JSON: {0}")]
    Json(String),
    #[error("unknown message type: {0}")]
    UnknownType(String),
    #[error("invalid message: {0}")]
    Fields(String),
}

impl DecodeError {
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::Json(_) => ErrorCode::BadJson,
            Self::UnknownType(_) => ErrorCode::UnknownType,
            Self::Fields(_) => ErrorCode::BadMessage,
        }
    }
}

/// An ICE server as `RTCIceServer` spells it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IceServer {
    pub urls: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
}

/// Someone in a room.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerInfo {
    pub id: PeerId,
    pub name: String,
    pub state: MediaState,
    /// Receives, and is to be shown to nobody (a recorder, an observer). In a mesh the others
    /// still send it their media, so they must know it is there.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub hidden: bool,
}

/// What a participant may do, from its access token (everything but moderation when the server
/// has no keys).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Permissions {
    /// The sources it may publish (empty: none, joins receive-only).
    pub sources: Vec<Source>,
    pub subscribe: bool,
    /// Chat.
    pub publish_data: bool,
    /// May mute, remove, lock and end.
    pub admin: bool,
    pub hidden: bool,
}

impl Permissions {
    /// Everyone's, on a server without keys.
    pub fn open() -> Self {
        Self {
            sources: Source::ALL.to_vec(),
            subscribe: true,
            publish_data: true,
            admin: false,
            hidden: false,
        }
    }

    pub fn from_grant(grant: &huddle_access::VideoGrant) -> Self {
        Self {
            sources: Source::ALL
                .into_iter()
                .filter(|s| grant.can_publish_source(*s))
                .collect(),
            subscribe: grant.can_subscribe(),
            publish_data: grant.can_publish_data(),
            admin: grant.is_admin(),
            hidden: grant.is_hidden(),
        }
    }

    pub fn may_publish(&self, source: Source) -> bool {
        self.sources.contains(&source)
    }
}

/// The answer to a successful `join`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Welcome {
    pub v: u32,
    pub id: PeerId,
    pub room: String,
    /// Everyone else in the room, in the order they joined.
    pub peers: Vec<PeerInfo>,
    /// Filled by the transport, which mints short-lived TURN credentials against wall-clock time.
    pub ice_servers: Vec<IceServer>,
    /// Send this back in `join.resume` after a dropped socket to keep the same id.
    pub resume: String,
    /// True when this join took over an earlier session of the same peer.
    pub resumed: bool,
    pub capacity: usize,
    /// What this participant may do.
    pub permissions: Permissions,
    /// No one else may join (an admin locked the room).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub locked: bool,
    /// How the room's media flows (v2; always `mesh` for a v1 client).
    #[serde(default)]
    pub mode: RoomMode,
    /// (cluster) The public URLs of the cluster's live nodes, this one first: where to
    /// reconnect when this node stops answering. Filled by the transport; empty alone.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nodes: Vec<String>,
}

/// One track a page receives in an SFU room, and the line of the server's offer that carries
/// it now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrackLabel {
    /// The track's id, for `view`.
    pub id: String,
    /// The line's `mid` (`RTCRtpTransceiver.mid`); absent while the track is on no line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mid: Option<String>,
    /// Whose track it is; absent for a WHIP publisher.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer: Option<PeerId>,
    /// `audio` or `video`.
    pub kind: String,
    /// `microphone`, `camera` or `screen_share`.
    pub source: Source,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LeaveReason {
    /// Sent `leave` or closed the socket cleanly.
    Left,
    /// The socket dropped and did not come back within the resume grace period.
    Disconnected,
    /// No sign of life within the keepalive timeout.
    Timeout,
    /// Closed by the server for oversize messages or flooding.
    Kicked,
    /// An admin removed them.
    Removed,
}

/// Every error a client can be sent; the `code` of an `error` message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum ErrorCode {
    BadJson,
    UnknownType,
    BadMessage,
    UnsupportedVersion,
    NotJoined,
    AlreadyJoined,
    BadRoomName,
    BadName,
    RoomFull,
    UnknownPeer,
    TooLarge,
    Flood,
    ServerShutdown,
    /// No access token, or one this server cannot accept (the message says why).
    Unauthorized,
    /// The token is good but does not allow this (the message says why).
    Forbidden,
    /// An admin locked the room.
    RoomLocked,
    /// The server's media peer could not take the page's SDP, or is not running.
    MediaFailed,
    /// (cluster) The room cannot be placed now (the cluster's store is unreachable); the page
    /// may try again.
    Unavailable,
}

impl ErrorCode {
    pub const ALL: [ErrorCode; 18] = [
        Self::BadJson,
        Self::UnknownType,
        Self::BadMessage,
        Self::UnsupportedVersion,
        Self::NotJoined,
        Self::AlreadyJoined,
        Self::BadRoomName,
        Self::BadName,
        Self::RoomFull,
        Self::UnknownPeer,
        Self::TooLarge,
        Self::Flood,
        Self::ServerShutdown,
        Self::Unauthorized,
        Self::Forbidden,
        Self::RoomLocked,
        Self::MediaFailed,
        Self::Unavailable,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::BadJson => "bad-json",
            Self::UnknownType => "unknown-type",
            Self::BadMessage => "bad-message",
            Self::UnsupportedVersion => "unsupported-version",
            Self::NotJoined => "not-joined",
            Self::AlreadyJoined => "already-joined",
            Self::BadRoomName => "bad-room-name",
            Self::BadName => "bad-name",
            Self::RoomFull => "room-full",
            Self::UnknownPeer => "unknown-peer",
            Self::TooLarge => "too-large",
            Self::Flood => "flood",
            Self::ServerShutdown => "server-shutdown",
            Self::Unauthorized => "unauthorized",
            Self::Forbidden => "forbidden",
            Self::RoomLocked => "room-locked",
            Self::MediaFailed => "media-failed",
            Self::Unavailable => "unavailable",
        }
    }
}

/// Messages the server sends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum ServerMessage {
    Welcome(Welcome),
    PeerJoined {
        peer: PeerInfo,
    },
    PeerUpdated {
        peer: PeerInfo,
    },
    PeerLeft {
        id: PeerId,
        reason: LeaveReason,
    },
    Signal {
        from: PeerId,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        sdp: Option<SessionDescription>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        candidate: Option<serde_json::Map<String, serde_json::Value>>,
    },
    Chat {
        from: PeerId,
        name: String,
        text: String,
    },
    Error {
        code: ErrorCode,
        message: String,
    },
    Pong,
    /// An admin turned off one of your sources; the page stops sending it.
    Muted {
        source: Source,
        by: PeerId,
    },
    /// An admin removed you; the connection closes next.
    Removed {
        by: PeerId,
    },
    /// The room was locked or opened again.
    RoomLocked {
        locked: bool,
        by: PeerId,
    },
    /// An admin ended the room; the connection closes next.
    RoomEnded {
        by: PeerId,
    },
    /// (SFU rooms) What each line of the page's receiving connection carries now.
    Tracks {
        tracks: Vec<TrackLabel>,
    },
    /// (SFU rooms) Which simulcast layers of the page's track on line `mid` anyone receives:
    /// the page may pause the others.
    Layers {
        mid: String,
        active: Vec<bool>,
    },
    /// (cluster) This room is hosted by another node: reconnect there (`url`, its public
    /// URL), or to any other node of the cluster when `url` is absent (this one is draining or
    /// lost the room), and join again with the resume token. The connection closes next.
    Moved {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        url: Option<String>,
    },
    /// (SFU rooms) Who speaks, loudest first.
    Speakers {
        ids: Vec<PeerId>,
    },
    /// The room's WHIP publishers and WHEP viewers: while there are any, an auto room's pages
    /// send through the server, where those are.
    Streaming {
        publishers: usize,
        viewers: usize,
    },
}

impl ServerMessage {
    pub fn error(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::Error {
            code,
            message: message.into(),
        }
    }

    pub fn to_json(&self) -> String {
        // Serializing these types cannot fail: every map key is a string and no impl errors.
        serde_json::to_string(self).expect("ServerMessage serializes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn decode_tells_errors_apart() {
        assert!(matches!(
            ClientMessage::decode("{not json"),
            Err(DecodeError::Json(_))
        ));
        assert!(matches!(
            ClientMessage::decode(r#"{"type":"dance"}"#),
            Err(DecodeError::UnknownType(_))
        ));
        let e = ClientMessage::decode(r#"{"type":"join","v":1,"name":"a"}"#).unwrap_err();
        assert_eq!(e.code(), ErrorCode::BadMessage);
        assert!(e.to_string().contains("room"), "{e}");
        assert!(matches!(
            ClientMessage::decode(r#"{"room":"x"}"#),
            Err(DecodeError::Fields(_))
        ));
        assert!(matches!(
            ClientMessage::decode("[1,2]"),
            Err(DecodeError::Fields(_))
        ));
    }

    #[test]
    fn decode_signal() {
        let m = ClientMessage::decode(
            r#"{"type":"signal","to":"abc","candidate":{"candidate":"candidate:1 1 udp 1 10.0.0.1 9 typ host","sdpMid":"0"}}"#,
        )
        .unwrap();
        let ClientMessage::Signal { to, sdp, candidate } = m else {
            panic!("not a signal")
        };
        assert_eq!(to.0, "abc");
        assert!(sdp.is_none());
        assert_eq!(candidate.unwrap()["sdpMid"], "0");
    }

    #[test]
    fn server_messages_use_kebab_case_tags() {
        let json = ServerMessage::PeerLeft {
            id: PeerId("p".into()),
            reason: LeaveReason::Timeout,
        }
        .to_json();
        assert_eq!(json, r#"{"type":"peer-left","id":"p","reason":"timeout"}"#);
        for code in ErrorCode::ALL {
            let json = serde_json::to_string(&code).unwrap();
            assert_eq!(json, format!("\"{}\"", code.as_str()));
        }
    }

    fn arb_state() -> impl Strategy<Value = MediaState> {
        (
            any::<bool>(),
            any::<bool>(),
            proptest::option::of("[a-z0-9-]{1,20}"),
        )
            .prop_map(|(audio, video, screen)| MediaState {
                audio,
                video,
                screen,
            })
    }

    fn arb_client() -> impl Strategy<Value = ClientMessage> {
        prop_oneof![
            (
                any::<u32>(),
                ".{0,20}",
                ".{0,20}",
                arb_state(),
                proptest::option::of(".{0,8}")
            )
                .prop_map(|(v, room, name, state, resume)| ClientMessage::Join {
                    v,
                    room,
                    name,
                    state,
                    resume,
                    token: None,
                    mode: None,
                    tiles: None,
                }),
            (".{0,10}", ".{0,200}").prop_map(|(to, sdp)| ClientMessage::Signal {
                to: PeerId(to),
                sdp: Some(SessionDescription {
                    kind: SdpKind::Offer,
                    sdp
                }),
                candidate: None,
            }),
            ".{0,100}".prop_map(|text| ClientMessage::Chat { text }),
            arb_state().prop_map(ClientMessage::State),
            Just(ClientMessage::Leave),
            Just(ClientMessage::Ping),
            (".{0,10}", 0..Source::ALL.len()).prop_map(|(id, s)| ClientMessage::Mute {
                id: PeerId(id),
                source: Source::ALL[s]
            }),
            ".{0,10}".prop_map(|id| ClientMessage::Remove { id: PeerId(id) }),
            any::<bool>().prop_map(|locked| ClientMessage::Lock { locked }),
            Just(ClientMessage::End),
        ]
    }

    proptest! {
        #[test]
        fn client_messages_round_trip(msg in arb_client()) {
            let json = serde_json::to_string(&msg).unwrap();
            prop_assert_eq!(ClientMessage::decode(&json).unwrap(), msg);
        }

        #[test]
        fn decode_never_panics(text in ".{0,300}") {
            let _ = ClientMessage::decode(&text);
        }
    }
}
