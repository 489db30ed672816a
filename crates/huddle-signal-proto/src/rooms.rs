//! The signaling state machine: connections, peers, rooms, routing, limits and keepalive.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use rand::RngCore;

use crate::names::{DisplayName, RoomName};
use crate::rate::TokenBucket;
use crate::wire::{
    ClientMessage, ErrorCode, LeaveReason, MediaState, OLDEST_PROTOCOL_VERSION, PROTOCOL_VERSION,
    PeerId, PeerInfo, RoomMode, ServerMessage, SessionDescription, TileView, Welcome,
};
use crate::wire::{Permissions, Source};

mod access;
mod moderation;
mod placement;

pub use placement::Placement;
#[cfg(test)]
mod tests;

/// A transport connection (one WebSocket), numbered by the I/O layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub u64);

/// How a connection ended, as the transport saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseKind {
    /// A WebSocket close frame: the participant left; the others are told at once.
    Clean,
    /// The stream broke without a close frame: the participant may come back with its resume
    /// token within [`Config::resume_grace`], so its peers keep their calls up meanwhile.
    Abrupt,
}

/// WebSocket close codes the core asks for.
pub mod close_code {
    /// The server is going away (shutdown, keepalive timeout).
    pub const GOING_AWAY: u16 = 1001;
    /// A frame that breaks the WebSocket protocol.
    pub const PROTOCOL: u16 = 1002;
    /// A text frame that is not UTF-8.
    pub const INVALID_DATA: u16 = 1007;
    /// Policy violation: flooding.
    pub const POLICY: u16 = 1008;
    /// A message over the size limit.
    pub const TOO_BIG: u16 = 1009;
    /// A newer connection resumed this peer.
    pub const REPLACED: u16 = 4000;
    /// No access token, or one that cannot be accepted.
    pub const UNAUTHORIZED: u16 = 4001;
    /// The token does not let its holder in (another room, no roomJoin, removed).
    pub const FORBIDDEN: u16 = 4003;
    /// An admin removed this participant.
    pub const REMOVED: u16 = 4004;
    /// An admin ended the room.
    pub const ENDED: u16 = 4005;
    /// (cluster) The room is hosted elsewhere: the `moved` message before it says where.
    pub const MOVED: u16 = 4010;
}

/// Limits and timers. Every field has a default that suits a mesh call.
#[derive(Debug, Clone)]
pub struct Config {
    /// Participants per mesh room (a full mesh costs every browser one encode per peer).
    pub capacity: usize,
    /// Participants per SFU room.
    pub sfu_capacity: usize,
    /// The mode of a room whose first join does not ask for one.
    pub default_mode: RoomMode,
    /// Largest text frame accepted; bigger ones close the connection. Each started
    /// `max_message_bytes` of a frame costs one message of the flood budget.
    pub max_message_bytes: usize,
    /// Largest text frame from a participant of a room with a media peer: its SDP answer has a
    /// line for every track of the room (~1.5 KiB each, a few hundred in a room of a hundred).
    pub max_sdp_bytes: usize,
    /// Sustained messages per second per connection before it is closed for flooding.
    pub rate_per_second: u32,
    /// Messages a connection may send at once (a join into a full room bursts offers and candidates).
    pub rate_burst: u32,
    /// Silence after which the server pings.
    pub ping_after: Duration,
    /// Silence after which the connection counts as dead and its peer leaves.
    pub dead_after: Duration,
    /// How long a peer whose socket broke stays in its room waiting for a resume.
    pub resume_grace: Duration,
    /// Longest chat message, in characters.
    pub max_chat_chars: usize,
    /// Messages held for a peer that is away (between an abrupt close and its resume).
    pub max_pending: usize,
    /// Keys of access tokens. Empty: rooms are open to anyone. Any key: a join needs a token.
    pub access: huddle_access::Keys,
    /// A connection in no room for this long is closed: a socket that only pings holds memory
    /// and a place in the hub for nothing.
    pub join_within: Duration,
    /// One node of a cluster: a room's first join waits until the I/O layer has placed the room
    /// ([`Output::Place`] → [`Rooms::handle_placed`]), and an emptied room is given back
    /// ([`Output::Vacated`]). Alone (`false`) every room is this server's.
    pub placement: bool,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            capacity: 6,
            sfu_capacity: 100,
            default_mode: RoomMode::Mesh,
            max_message_bytes: 64 * 1024,
            max_sdp_bytes: 1024 * 1024,
            rate_per_second: 50,
            rate_burst: 200,
            ping_after: Duration::from_secs(10),
            dead_after: Duration::from_secs(25),
            resume_grace: Duration::from_secs(10),
            max_chat_chars: 2000,
            max_pending: 256,
            access: huddle_access::Keys::default(),
            join_within: Duration::from_secs(30),
            placement: false,
        }
    }
}

/// An effect for the I/O layer to carry out.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    Send {
        conn: ConnId,
        msg: ServerMessage,
    },
    /// Send a WebSocket ping frame; its pong comes back as [`Rooms::handle_frame`].
    Ping {
        conn: ConnId,
    },
    /// Send a close frame and drop the connection. The core has already forgotten it.
    Close {
        conn: ConnId,
        code: u16,
        reason: String,
    },
    /// An admin removed someone: refuse their token and identity in `room` elsewhere too
    /// (WHIP, WHEP, ICE servers) and end their media sessions, until `expires` (Unix seconds).
    Revoked {
        room: String,
        revocation: Revocation,
    },
    /// Something for the server's media peer (SFU rooms): the I/O layer carries it there and
    /// brings what it answers back through [`Rooms::handle_media`].
    Media(MediaRequest),
    /// (cluster) Find or choose the node that hosts `room`, and answer with
    /// [`Rooms::handle_placed`]; the joins for it wait meanwhile. Asked once per room at a time.
    Place {
        room: String,
    },
    /// (cluster) `room` emptied, or this node gave it up: it is no longer hosted here.
    Vacated {
        room: String,
    },
}

/// A participant of an SFU room, as the media peer needs to hear of it.
#[derive(Debug, Clone, PartialEq)]
pub enum MediaRequest {
    /// `peer` joined `room`: open the connection it receives on (the server offers).
    Join {
        room: String,
        peer: PeerId,
        /// How many video tiles the page shows at once, if it said (`join`'s `tiles`).
        tiles: Option<u16>,
    },
    /// `peer`'s SDP for the media peer: an offer on the connection it sends on, or its answer
    /// to the server's offer.
    Sdp {
        room: String,
        peer: PeerId,
        sdp: SessionDescription,
    },
    /// `peer` left `room` (whatever the reason): end its media connections.
    Leave { room: String, peer: PeerId },
    /// How `peer`'s page shows what it receives.
    View {
        room: String,
        peer: PeerId,
        tiles: Vec<TileView>,
    },
}

impl MediaRequest {
    /// The room the request is of (the media worker that serves it).
    pub fn room(&self) -> &str {
        match self {
            MediaRequest::Join { room, .. }
            | MediaRequest::Sdp { room, .. }
            | MediaRequest::Leave { room, .. }
            | MediaRequest::View { room, .. } => room,
        }
    }
}

/// Tiles one `view` may describe: more than a page of a grid of a hundred ever shows.
pub const MAX_TILES: usize = 256;

/// What a removal refuses: a token (its `jti`, or its signature) and the identity it named.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revocation {
    pub token: String,
    /// `KEY:sub`: identities are the key's namespace.
    pub identity: String,
    pub expires: u64,
}

/// Counters for `/metrics`.
#[derive(Debug, Clone, Default)]
pub struct Stats {
    /// Well-formed client messages by `type`.
    pub messages_in: HashMap<&'static str, u64>,
    /// Messages queued for sending.
    pub messages_out: u64,
    /// `error` messages sent, by code.
    pub errors: HashMap<ErrorCode, u64>,
    pub rooms: usize,
    pub participants: usize,
    pub connections: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Timer {
    Keepalive(ConnId),
    Resume(PeerId),
}

struct Conn {
    peer: Option<PeerId>,
    last_rx: Instant,
    pinged: bool,
    bucket: TokenBucket,
    /// Since when it is in no room (from connect, or its `leave`): past
    /// [`Config::join_within`] it is closed.
    unjoined_since: Option<Instant>,
}

struct Peer {
    /// The protocol version it joined with (its `welcome` says the same).
    v: u32,
    name: DisplayName,
    room: RoomName,
    state: MediaState,
    resume: String,
    /// `None` while away: between an abrupt close and a resume.
    conn: Option<ConnId>,
    detached_at: Option<Instant>,
    /// What arrived for the peer while away, delivered on resume.
    pending: VecDeque<ServerMessage>,
    permissions: Permissions,
    /// What removing it refuses, and until when; `None` on a server without keys.
    revocation: Option<Revocation>,
}

impl Peer {
    fn info(&self, id: &PeerId) -> PeerInfo {
        PeerInfo {
            id: id.clone(),
            name: self.name.as_str().to_owned(),
            state: self.state.clone(),
            hidden: self.permissions.hidden,
        }
    }
}

type Failure = (ErrorCode, String);

/// The signaling core. See the crate docs for the drive loop.
pub struct Rooms<R> {
    config: Config,
    rng: R,
    conns: HashMap<ConnId, Conn>,
    peers: HashMap<PeerId, Peer>,
    /// Members of each room in join order; a room exists while it has members.
    rooms: HashMap<RoomName, Vec<PeerId>>,
    resume_index: HashMap<String, PeerId>,
    /// Rooms an admin locked; forgotten with the room.
    locked: HashSet<RoomName>,
    /// Each room's mode, set by the join that made it; forgotten with the room.
    modes: HashMap<RoomName, RoomMode>,
    /// Tokens removed from each room (revocation id → expiry, Unix seconds): refused there
    /// until they expire, even after the room has emptied.
    revoked: HashMap<RoomName, HashMap<String, u64>>,
    timers: BinaryHeap<Reverse<(Instant, Timer)>>,
    outputs: VecDeque<Output>,
    stats: Stats,
    /// `now` and the Unix time at that instant: tokens expire by the wall clock.
    clock: (Instant, u64),
    /// (cluster) The rooms this node hosts, and the joins waiting for a room's placement.
    placement: placement::Placements,
}

impl<R: RngCore> Rooms<R> {
    /// A core for `config`; `now` and `unix_now` (seconds) anchor the wall clock that access
    /// tokens are checked against.
    pub fn new(config: Config, rng: R, now: Instant, unix_now: u64) -> Self {
        Self {
            config,
            rng,
            conns: HashMap::new(),
            peers: HashMap::new(),
            rooms: HashMap::new(),
            resume_index: HashMap::new(),
            locked: HashSet::new(),
            modes: HashMap::new(),
            revoked: HashMap::new(),
            timers: BinaryHeap::new(),
            outputs: VecDeque::new(),
            stats: Stats::default(),
            clock: (now, unix_now),
            placement: placement::Placements::default(),
        }
    }

    /// Unix seconds at `now`.
    fn unix(&self, now: Instant) -> u64 {
        self.clock.1 + now.saturating_duration_since(self.clock.0).as_secs()
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// A message from the server's media peer for `peer` (its SDP, what its lines carry):
    /// delivered like any other, held while the peer is away. Unknown peers are ignored (the
    /// media peer may speak of one that just left).
    pub fn handle_media(&mut self, peer: &PeerId, msg: ServerMessage) {
        self.deliver(peer, msg);
    }

    /// A message from the media peer for everyone in `room` (who speaks).
    pub fn handle_media_room(&mut self, room: &str, msg: ServerMessage) {
        let Ok(room) = RoomName::parse(room) else {
            return;
        };
        let members = self.rooms.get(&room).cloned().unwrap_or_default();
        for pid in members {
            self.deliver(&pid, msg.clone());
        }
    }

    /// A new transport connection; it must `join` before anything else.
    pub fn handle_connect(&mut self, conn: ConnId, now: Instant) {
        let bucket = TokenBucket::new(self.config.rate_per_second, self.config.rate_burst, now);
        self.conns.insert(
            conn,
            Conn {
                peer: None,
                last_rx: now,
                pinged: false,
                bucket,
                unjoined_since: Some(now),
            },
        );
        self.timers.push(Reverse((
            now + self.config.ping_after,
            Timer::Keepalive(conn),
        )));
    }

    /// A frame that is not text (a pong, a ping, a binary frame): a sign of life, and one more
    /// frame against the same flood budget as text — every frame costs the server work.
    pub fn handle_frame(&mut self, conn: ConnId, now: Instant) {
        self.count_frame(conn, 1, now);
    }

    /// One text frame from a connection: size and rate limits, decoding, then the message itself.
    pub fn handle_text(&mut self, conn: ConnId, text: &str, now: Instant) {
        let cost = text.len().div_ceil(self.config.max_message_bytes).max(1);
        if !self.count_frame(conn, u32::try_from(cost).unwrap_or(u32::MAX), now) {
            return;
        }
        let limit = self.max_text_bytes(conn);
        if text.len() > limit {
            let why = format!(
                "message of {} bytes exceeds the {limit}-byte limit",
                text.len()
            );
            self.kick(conn, ErrorCode::TooLarge, close_code::TOO_BIG, why);
            return;
        }
        let msg = match ClientMessage::decode(text) {
            Ok(msg) => msg,
            Err(e) => return self.send_error(conn, e.code(), e.to_string()),
        };
        *self.stats.messages_in.entry(msg.kind()).or_default() += 1;
        if let Err((code, why)) = self.handle_message(conn, msg, now) {
            self.send_error(conn, code, why);
        }
    }

    /// The largest text frame `conn` may send: SDP-sized in a room with a media peer.
    fn max_text_bytes(&self, conn: ConnId) -> usize {
        let room = self
            .conns
            .get(&conn)
            .and_then(|c| c.peer.as_ref())
            .and_then(|p| self.peers.get(p));
        match room {
            Some(p) if self.mode(&p.room).has_media_peer() => self.config.max_sdp_bytes,
            _ => self.config.max_message_bytes,
        }
    }

    /// Notes a frame from `conn` that costs `cost` messages against its flood budget; `false`
    /// (and the connection closed) when the budget is spent or the connection is unknown.
    fn count_frame(&mut self, conn: ConnId, cost: u32, now: Instant) -> bool {
        let Some(c) = self.conns.get_mut(&conn) else {
            return false;
        };
        c.last_rx = now;
        c.pinged = false;
        if c.bucket.take_n(cost, now) {
            return true;
        }
        let why = format!(
            "more than {} frames per second; closing",
            self.config.rate_per_second
        );
        self.kick(conn, ErrorCode::Flood, close_code::POLICY, why);
        false
    }

    /// The transport connection is gone.
    pub fn handle_close(&mut self, conn: ConnId, kind: CloseKind, now: Instant) {
        let Some(c) = self.conns.remove(&conn) else {
            return;
        };
        self.placement.unpark(conn);
        let Some(pid) = c.peer else { return };
        match kind {
            CloseKind::Clean => self.remove_peer(&pid, LeaveReason::Left),
            CloseKind::Abrupt => {
                if let Some(p) = self.peers.get_mut(&pid) {
                    p.conn = None;
                    p.detached_at = Some(now);
                    self.timers.push(Reverse((
                        now + self.config.resume_grace,
                        Timer::Resume(pid),
                    )));
                }
            }
        }
    }

    /// Fires keepalive pings, declares silent connections dead and ends expired resume windows.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(Reverse((at, _))) = self.timers.peek() {
            if *at > now {
                break;
            }
            let Some(Reverse((_, timer))) = self.timers.pop() else {
                break;
            };
            match timer {
                Timer::Keepalive(conn) => self.keepalive(conn, now),
                Timer::Resume(pid) => self.resume_expired(&pid, now),
            }
        }
    }

    /// Tells every connection the server is going away and forgets them all.
    pub fn shutdown(&mut self) {
        let mut conns: Vec<ConnId> = self.conns.keys().copied().collect();
        conns.sort();
        for conn in conns {
            self.send_error(conn, ErrorCode::ServerShutdown, "server is shutting down");
            self.outputs.push_back(Output::Close {
                conn,
                code: close_code::GOING_AWAY,
                reason: "server shutting down".into(),
            });
        }
        self.conns.clear();
        self.peers.clear();
        self.rooms.clear();
        self.resume_index.clear();
        self.timers.clear();
    }

    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// When [`Rooms::handle_timeout`] wants to run next. May be early (a timer of a connection
    /// that closed since), never late.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.peek().map(|Reverse((at, _))| *at)
    }

    pub fn stats(&self) -> Stats {
        Stats {
            rooms: self.rooms.len(),
            participants: self.peers.len(),
            connections: self.conns.len(),
            ..self.stats.clone()
        }
    }

    fn handle_message(
        &mut self,
        conn: ConnId,
        msg: ClientMessage,
        now: Instant,
    ) -> Result<(), Failure> {
        if let ClientMessage::Join {
            v,
            room,
            name,
            state,
            resume,
            token,
            mode,
            tiles,
        } = msg
        {
            let join = Join {
                v,
                room: &room,
                name: &name,
                state,
                resume,
                token,
                mode,
                tiles,
            };
            return self.handle_join(conn, join, now);
        }
        if matches!(msg, ClientMessage::Ping) {
            self.send(conn, ServerMessage::Pong);
            return Ok(());
        }
        let pid = self
            .conns
            .get(&conn)
            .and_then(|c| c.peer.clone())
            .ok_or_else(|| {
                (
                    ErrorCode::NotJoined,
                    format!("join a room before sending '{}'", msg.kind()),
                )
            })?;
        match msg {
            ClientMessage::Signal { to, sdp, candidate } => {
                self.handle_signal(&pid, to, sdp, candidate)
            }
            ClientMessage::Chat { text } => self.handle_chat(&pid, text),
            ClientMessage::State(state) => self.handle_state(&pid, state),
            ClientMessage::Leave => {
                if let Some(c) = self.conns.get_mut(&conn) {
                    c.peer = None;
                    c.unjoined_since = Some(now);
                }
                self.remove_peer(&pid, LeaveReason::Left);
                Ok(())
            }
            ClientMessage::Mute { id, source } => self.handle_mute(&pid, &id, source),
            ClientMessage::Remove { id } => self.handle_remove(&pid, &id, now),
            ClientMessage::Lock { locked } => self.handle_lock(&pid, locked),
            ClientMessage::End => self.handle_end(&pid),
            ClientMessage::View { tiles } => self.handle_view(&pid, tiles),
            ClientMessage::Join { .. } | ClientMessage::Ping => unreachable!("handled above"),
        }
    }

    fn handle_join(&mut self, conn: ConnId, join: Join<'_>, now: Instant) -> Result<(), Failure> {
        if self.conns.get(&conn).is_some_and(|c| c.peer.is_some()) {
            return Err((
                ErrorCode::AlreadyJoined,
                "this connection already joined a room; send 'leave' first".into(),
            ));
        }
        if !(OLDEST_PROTOCOL_VERSION..=PROTOCOL_VERSION).contains(&join.v) {
            return Err((
                ErrorCode::UnsupportedVersion,
                format!(
                    "server speaks protocol v{OLDEST_PROTOCOL_VERSION} to v{PROTOCOL_VERSION}, client sent v{}",
                    join.v
                ),
            ));
        }
        let room = RoomName::parse(join.room)
            .map_err(|e| (ErrorCode::BadRoomName, format!("room name {e}")))?;
        if self.config.placement && !self.placement.is_hosted(&room) {
            // A token that cannot open the room is refused here, before the cluster is asked
            // about the room; the room's node checks it again, with its removals.
            if self
                .admit(conn, &room, join.token.as_deref(), now)
                .is_none()
            {
                return Ok(());
            }
            self.park(conn, room, join);
            return Ok(());
        }
        let mode = self.modes.get(&room).copied().unwrap_or(match join.v {
            OLDEST_PROTOCOL_VERSION => RoomMode::Mesh,
            _ => join.mode.unwrap_or(self.config.default_mode),
        });
        if mode.has_media_peer() && join.v < PROTOCOL_VERSION {
            return Err((
                ErrorCode::UnsupportedVersion,
                format!(
                    "room '{room}' goes through the server: it needs protocol v{PROTOCOL_VERSION}"
                ),
            ));
        }
        let Some(admitted) = self.admit(conn, &room, join.token.as_deref(), now) else {
            return Ok(()); // refused and closed
        };
        // A token's name wins over the one the page sends.
        let name = admitted.name.as_deref().unwrap_or(join.name);
        let name = DisplayName::parse(name)
            .map_err(|e| (ErrorCode::BadName, format!("display name {e}")))?;
        let state = join.state;
        check_state(&state)?;
        check_publish(&admitted.permissions, &state)?;
        let resume = join.resume;
        // A resume needs the same person's token: the resume token alone does not carry a grant.
        let identity = admitted.revocation.as_ref().map(|r| &r.identity);
        let resumable = resume
            .and_then(|token| self.resume_index.get(&token).cloned())
            .filter(|pid| {
                self.peers.get(pid).is_some_and(|p| {
                    p.room == room && p.revocation.as_ref().map(|r| &r.identity) == identity
                })
            });
        if let Some(pid) = resumable {
            // The new token's grant and expiry from now on (a page may come back with a fresh one).
            if let Some(p) = self.peers.get_mut(&pid) {
                p.permissions = admitted.permissions;
                p.revocation = admitted.revocation;
            }
            self.resume(conn, pid, name, state);
            return Ok(());
        }

        if self.locked.contains(&room) && !admitted.permissions.admin {
            return Err((
                ErrorCode::RoomLocked,
                format!("room '{room}' is locked: no one else may join"),
            ));
        }
        let members = self.rooms.get(&room).map_or(0, Vec::len);
        let capacity = self.capacity(mode);
        if members >= capacity {
            return Err((
                ErrorCode::RoomFull,
                format!("room '{room}' is full ({capacity} participants)"),
            ));
        }
        let pid = self.new_peer_id();
        let resume = self.new_token();
        let others: Vec<PeerInfo> = self.members(&room).map(|(id, p)| p.info(id)).collect();
        self.peers.insert(
            pid.clone(),
            Peer {
                v: join.v,
                name,
                room: room.clone(),
                state,
                resume: resume.clone(),
                conn: Some(conn),
                detached_at: None,
                pending: VecDeque::new(),
                permissions: admitted.permissions,
                revocation: admitted.revocation,
            },
        );
        self.rooms
            .entry(room.clone())
            .or_default()
            .push(pid.clone());
        self.modes.insert(room.clone(), mode);
        self.resume_index.insert(resume.clone(), pid.clone());
        if let Some(c) = self.conns.get_mut(&conn) {
            c.peer = Some(pid.clone());
            c.unjoined_since = None;
        }
        self.send(conn, self.welcome(&pid, others, resume, false));
        let info = self.peers[&pid].info(&pid);
        self.broadcast(&pid, ServerMessage::PeerJoined { peer: info });
        if mode.has_media_peer() {
            self.outputs.push_back(Output::Media(MediaRequest::Join {
                room: room.to_string(),
                peer: pid,
                tiles: join.tiles,
            }));
        }
        Ok(())
    }

    /// Binds a peer that was away (or whose old socket has not been noticed dead yet) to `conn`.
    fn resume(&mut self, conn: ConnId, pid: PeerId, name: DisplayName, state: MediaState) {
        let room = self.peers[&pid].room.clone();
        let others: Vec<PeerInfo> = self
            .members(&room)
            .filter(|(id, _)| **id != pid)
            .map(|(id, p)| p.info(id))
            .collect();
        let Some(p) = self.peers.get_mut(&pid) else {
            return;
        };
        if let Some(old) = p.conn.replace(conn) {
            self.conns.remove(&old);
            self.outputs.push_back(Output::Close {
                conn: old,
                code: close_code::REPLACED,
                reason: "resumed on a newer connection".into(),
            });
        }
        p.detached_at = None;
        p.name = name;
        p.state = state;
        let pending = std::mem::take(&mut p.pending);
        let token = p.resume.clone();
        if let Some(c) = self.conns.get_mut(&conn) {
            c.peer = Some(pid.clone());
            c.unjoined_since = None;
        }
        self.send(conn, self.welcome(&pid, others, token, true));
        for msg in pending {
            self.send(conn, msg);
        }
        let info = self.peers[&pid].info(&pid);
        self.broadcast(&pid, ServerMessage::PeerUpdated { peer: info });
    }

    fn handle_signal(
        &mut self,
        from: &PeerId,
        to: PeerId,
        sdp: Option<SessionDescription>,
        candidate: Option<serde_json::Map<String, serde_json::Value>>,
    ) -> Result<(), Failure> {
        if sdp.is_some() == candidate.is_some() {
            return Err((
                ErrorCode::BadMessage,
                "a signal carries exactly one of 'sdp' or 'candidate'".into(),
            ));
        }
        if *from == to {
            return Err((ErrorCode::BadMessage, "a peer cannot signal itself".into()));
        }
        let room = &self.peers[from].room;
        if to.is_sfu() && self.mode(room).has_media_peer() {
            // The media peer puts its candidates in its SDP and learns the page's from the
            // page's connectivity checks: trickled candidates are not needed there.
            if let Some(sdp) = sdp {
                self.outputs.push_back(Output::Media(MediaRequest::Sdp {
                    room: room.to_string(),
                    peer: from.clone(),
                    sdp,
                }));
            }
            return Ok(());
        }
        if self.peers.get(&to).is_none_or(|p| p.room != *room) {
            return Err((
                ErrorCode::UnknownPeer,
                format!("no peer '{to}' in room '{room}'"),
            ));
        }
        let msg = ServerMessage::Signal {
            from: from.clone(),
            sdp,
            candidate,
        };
        self.deliver(&to, msg);
        Ok(())
    }

    fn handle_view(&mut self, pid: &PeerId, tiles: Vec<TileView>) -> Result<(), Failure> {
        let room = &self.peers[pid].room;
        if !self.mode(room).has_media_peer() {
            return Err((
                ErrorCode::BadMessage,
                "'view' is for SFU rooms; this room is a mesh".into(),
            ));
        }
        if tiles.len() > MAX_TILES {
            return Err((
                ErrorCode::BadMessage,
                format!("a view of {} tiles; at most {MAX_TILES}", tiles.len()),
            ));
        }
        self.outputs.push_back(Output::Media(MediaRequest::View {
            room: room.to_string(),
            peer: pid.clone(),
            tiles,
        }));
        Ok(())
    }

    fn handle_chat(&mut self, from: &PeerId, text: String) -> Result<(), Failure> {
        if !self.peers[from].permissions.publish_data {
            return Err((
                ErrorCode::Forbidden,
                "your token does not allow chat (canPublishData)".into(),
            ));
        }
        if text.trim().is_empty() {
            return Err((ErrorCode::BadMessage, "chat text is empty".into()));
        }
        let max = self.config.max_chat_chars;
        if text.chars().count() > max {
            return Err((
                ErrorCode::BadMessage,
                format!("chat text longer than {max} characters"),
            ));
        }
        let peer = &self.peers[from];
        let msg = ServerMessage::Chat {
            from: from.clone(),
            name: peer.name.as_str().to_owned(),
            text,
        };
        // The sender gets its own message back: the echo confirms delivery and fixes the order.
        let room = peer.room.clone();
        let members: Vec<PeerId> = self.rooms[&room].clone();
        for pid in members {
            self.deliver(&pid, msg.clone());
        }
        Ok(())
    }

    fn handle_state(&mut self, pid: &PeerId, state: MediaState) -> Result<(), Failure> {
        check_state(&state)?;
        let Some(p) = self.peers.get_mut(pid) else {
            return Ok(());
        };
        check_publish(&p.permissions, &state)?;
        p.state = state;
        let info = p.info(pid);
        self.broadcast(pid, ServerMessage::PeerUpdated { peer: info });
        Ok(())
    }

    fn keepalive(&mut self, conn: ConnId, now: Instant) {
        let (ping_after, dead_after) = (self.config.ping_after, self.config.dead_after);
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        if c.unjoined_since
            .is_some_and(|since| now >= since + self.config.join_within)
        {
            self.conns.remove(&conn);
            self.outputs.push_back(Output::Close {
                conn,
                code: close_code::POLICY,
                reason: "no join in time".into(),
            });
            return;
        }
        if now >= c.last_rx + dead_after {
            let peer = c.peer.take();
            self.conns.remove(&conn);
            self.outputs.push_back(Output::Close {
                conn,
                code: close_code::GOING_AWAY,
                reason: "keepalive timeout".into(),
            });
            if let Some(pid) = peer {
                self.remove_peer(&pid, LeaveReason::Timeout);
            }
            return;
        }
        if !c.pinged && now >= c.last_rx + ping_after {
            c.pinged = true;
            self.outputs.push_back(Output::Ping { conn });
        }
        let next = c.last_rx + if c.pinged { dead_after } else { ping_after };
        self.timers.push(Reverse((next, Timer::Keepalive(conn))));
    }

    fn resume_expired(&mut self, pid: &PeerId, now: Instant) {
        let expired = self.peers.get(pid).is_some_and(|p| {
            p.conn.is_none()
                && p.detached_at
                    .is_some_and(|t| now >= t + self.config.resume_grace)
        });
        if expired {
            self.remove_peer(pid, LeaveReason::Disconnected);
        }
    }

    /// Sends an error, closes the connection and removes its peer.
    fn kick(&mut self, conn: ConnId, code: ErrorCode, close: u16, why: String) {
        self.send_error(conn, code, why.clone());
        self.outputs.push_back(Output::Close {
            conn,
            code: close,
            reason: why,
        });
        if let Some(pid) = self.conns.remove(&conn).and_then(|c| c.peer) {
            self.remove_peer(&pid, LeaveReason::Kicked);
        }
    }

    fn remove_peer(&mut self, pid: &PeerId, reason: LeaveReason) {
        let Some(peer) = self.peers.remove(pid) else {
            return;
        };
        self.resume_index.remove(&peer.resume);
        if self.mode(&peer.room).has_media_peer() {
            self.outputs.push_back(Output::Media(MediaRequest::Leave {
                room: peer.room.to_string(),
                peer: pid.clone(),
            }));
        }
        if let Some(members) = self.rooms.get_mut(&peer.room) {
            members.retain(|m| m != pid);
            if members.is_empty() {
                self.forget_room(&peer.room);
                return;
            }
        }
        let msg = ServerMessage::PeerLeft {
            id: pid.clone(),
            reason,
        };
        let members = self.rooms[&peer.room].clone();
        for other in members {
            self.deliver(&other, msg.clone());
        }
    }

    /// Everyone in `room` gets `msg` and is disconnected with `code`; the room is gone.
    fn evict(&mut self, room: &RoomName, msg: &ServerMessage, code: u16, reason: &str) {
        let media = self.mode(room).has_media_peer();
        for pid in self.rooms.get(room).cloned().unwrap_or_default() {
            self.deliver(&pid, msg.clone());
            let Some(peer) = self.peers.remove(&pid) else {
                continue;
            };
            self.resume_index.remove(&peer.resume);
            if media {
                self.outputs.push_back(Output::Media(MediaRequest::Leave {
                    room: room.to_string(),
                    peer: pid,
                }));
            }
            if let Some(conn) = peer.conn {
                self.conns.remove(&conn);
                self.outputs.push_back(Output::Close {
                    conn,
                    code,
                    reason: reason.into(),
                });
            }
        }
        self.forget_room(room);
    }

    /// The last member of `room` is gone: so is everything known of it, and a cluster node
    /// gives it back.
    fn forget_room(&mut self, room: &RoomName) {
        self.rooms.remove(room);
        self.locked.remove(room);
        self.modes.remove(room);
        if self.placement.vacate(room) {
            self.outputs.push_back(Output::Vacated {
                room: room.to_string(),
            });
        }
    }

    /// Sends to everyone in `from`'s room but `from`.
    fn broadcast(&mut self, from: &PeerId, msg: ServerMessage) {
        let room = &self.peers[from].room;
        let members: Vec<PeerId> = self.rooms[room]
            .iter()
            .filter(|m| *m != from)
            .cloned()
            .collect();
        for pid in members {
            self.deliver(&pid, msg.clone());
        }
    }

    /// Sends to a peer, or holds the message while it is away. A peer that falls too far behind
    /// is dropped: when it comes back it joins afresh and learns the whole room from `welcome`.
    fn deliver(&mut self, pid: &PeerId, msg: ServerMessage) {
        let Some(peer) = self.peers.get_mut(pid) else {
            return;
        };
        match peer.conn {
            Some(conn) => self.send(conn, msg),
            None if peer.pending.len() < self.config.max_pending => peer.pending.push_back(msg),
            None => self.remove_peer(&pid.clone(), LeaveReason::Disconnected),
        }
    }

    fn send(&mut self, conn: ConnId, msg: ServerMessage) {
        self.stats.messages_out += 1;
        self.outputs.push_back(Output::Send { conn, msg });
    }

    fn send_error(&mut self, conn: ConnId, code: ErrorCode, why: impl Into<String>) {
        *self.stats.errors.entry(code).or_default() += 1;
        self.send(conn, ServerMessage::error(code, why));
    }

    fn welcome(
        &self,
        pid: &PeerId,
        peers: Vec<PeerInfo>,
        resume: String,
        resumed: bool,
    ) -> ServerMessage {
        ServerMessage::Welcome(Welcome {
            v: self.peers[pid].v,
            id: pid.clone(),
            room: self.peers[pid].room.to_string(),
            peers,
            ice_servers: Vec::new(),
            resume,
            resumed,
            permissions: self.peers[pid].permissions.clone(),
            locked: self.locked.contains(&self.peers[pid].room),
            capacity: self.capacity(self.mode(&self.peers[pid].room)),
            mode: self.mode(&self.peers[pid].room),
            nodes: Vec::new(),
        })
    }

    fn mode(&self, room: &RoomName) -> RoomMode {
        self.modes.get(room).copied().unwrap_or_default()
    }

    fn capacity(&self, mode: RoomMode) -> usize {
        match mode {
            RoomMode::Mesh => self.config.capacity,
            RoomMode::Sfu | RoomMode::Auto => self.config.sfu_capacity,
        }
    }

    fn members<'a>(&'a self, room: &RoomName) -> impl Iterator<Item = (&'a PeerId, &'a Peer)> + 'a {
        self.rooms
            .get(room)
            .into_iter()
            .flatten()
            .filter_map(|id| self.peers.get_key_value(id))
    }

    fn new_peer_id(&mut self) -> PeerId {
        const ALPHABET: &[u8; 32] = b"abcdefghijkmnpqrstuvwxyz23456789";
        loop {
            let bits = self.rng.next_u64();
            let id: String = (0..8)
                .map(|i| char::from(ALPHABET[((bits >> (i * 5)) & 31) as usize]))
                .collect();
            let id = PeerId(id);
            if !self.peers.contains_key(&id) {
                return id;
            }
        }
    }

    fn new_token(&mut self) -> String {
        let mut bytes = [0u8; 16];
        self.rng.fill_bytes(&mut bytes);
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// A `join` as it arrived, its fields still unchecked.
struct Join<'a> {
    v: u32,
    room: &'a str,
    name: &'a str,
    state: MediaState,
    resume: Option<String>,
    token: Option<String>,
    mode: Option<RoomMode>,
    tiles: Option<u16>,
}

impl Join<'_> {
    /// The join kept while its room is being placed.
    fn to_message(&self) -> ClientMessage {
        ClientMessage::Join {
            v: self.v,
            room: self.room.to_owned(),
            name: self.name.to_owned(),
            state: self.state.clone(),
            resume: self.resume.clone(),
            token: self.token.clone(),
            mode: self.mode,
            tiles: self.tiles,
        }
    }
}

/// Refuses a state that claims a source the participant may not publish.
fn check_publish(permissions: &Permissions, state: &MediaState) -> Result<(), Failure> {
    let claimed = [
        (state.audio, Source::Microphone),
        (state.video, Source::Camera),
        (state.screen.is_some(), Source::ScreenShare),
    ];
    match claimed
        .into_iter()
        .find(|(on, source)| *on && !permissions.may_publish(*source))
    {
        Some((_, source)) => Err((
            ErrorCode::Forbidden,
            format!("your token does not allow publishing {}", source.name()),
        )),
        None => Ok(()),
    }
}

fn check_state(state: &MediaState) -> Result<(), Failure> {
    match &state.screen {
        Some(id) if id.is_empty() || id.len() > 64 => Err((
            ErrorCode::BadMessage,
            "state.screen must be a stream id of 1-64 bytes".into(),
        )),
        _ => Ok(()),
    }
}
