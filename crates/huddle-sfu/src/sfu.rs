//! Rooms, members, published tracks and subscriptions, and what the host must do about them.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, Instant};

use crate::allocate::{self, LayerRates, View, Wanted};
use crate::forward::{Forwarding, Incoming};
use crate::lines::{self, AUDIO_LINES, VideoCandidate};
use crate::speakers::Speakers;
use crate::{IdMap, Layer, MAX_LAYERS, Owner, SessionId, TrackId};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MediaKind {
    Audio,
    Video,
}

/// What a publisher says of a track when it starts sending it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TrackInfo {
    pub kind: MediaKind,
    /// Simulcast layers (1 without simulcast; audio has 1).
    pub layers: u8,
    /// A screen share: placed before cameras when a link is short.
    pub screen: bool,
    /// Size of the top layer, 0 when unknown.
    pub width: u32,
    pub height: u32,
}

impl TrackInfo {
    pub fn audio() -> Self {
        TrackInfo {
            kind: MediaKind::Audio,
            layers: 1,
            screen: false,
            width: 0,
            height: 0,
        }
    }

    pub fn video(layers: u8) -> Self {
        TrackInfo {
            kind: MediaKind::Video,
            layers: layers.clamp(1, MAX_LAYERS as u8),
            screen: false,
            width: 0,
            height: 0,
        }
    }
}

/// One packet's destination: write it into `subscriber`'s sending track for the routed
/// track, with sequence number `seq` and RTP time `time`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Target {
    pub subscriber: SessionId,
    /// Sequence number in the subscription's own stream: 0 for its first packet, then
    /// continuous across layer switches (a gap only where a packet was lost on the way in).
    pub seq: u64,
    pub time: u64,
    /// The packet starts a run of forwarded packets (a subscriber's first, a layer switch, the
    /// first after withheld audio): codec-level counters continue from the last one sent.
    pub starts_run: bool,
}

/// What the host must do; drained with [`Sfu::poll_output`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    /// `subscriber` may receive `track` from now on (its page is told of it); it is on no line
    /// of its connection until [`Output::Attach`].
    Subscribe {
        subscriber: SessionId,
        track: TrackId,
    },
    /// `track` is to go out on a line of `kind` of `subscriber`'s connection: a free one, or
    /// a new one (server-side renegotiation), or one the client negotiated already (WHEP).
    /// Nothing is sent until the host says the line is ready ([`Sfu::line_ready`]).
    Attach {
        subscriber: SessionId,
        track: TrackId,
        kind: MediaKind,
    },
    /// `track` leaves its line of `subscriber`'s connection, free for another.
    Detach {
        subscriber: SessionId,
        track: TrackId,
    },
    /// `subscriber` no longer receives `track` (it leaves its line, if it had one).
    Unsubscribe {
        subscriber: SessionId,
        track: TrackId,
    },
    /// Ask `publisher` for a keyframe of `layer` of `track` (PLI).
    RequestKeyframe {
        publisher: SessionId,
        track: TrackId,
        layer: Layer,
    },
    /// The layers of `track` anyone receives changed: the publisher may stop encoding the
    /// others (`encodings[i].active`; LiveKit's dynacast).
    Layers {
        publisher: SessionId,
        track: TrackId,
        active: [bool; MAX_LAYERS],
    },
    /// Who speaks in `room`, loudest first.
    Speakers {
        room: String,
        sessions: Vec<SessionId>,
    },
    /// What `subscriber`'s link should carry: keep `minimum` bits per second flowing (what is
    /// sent plus the next layer up, padded if need be) and probe towards `desired` (every tile
    /// at the layer its size asks for) — str0m's `Bwe::set_bitrate`.
    Bitrate {
        subscriber: SessionId,
        minimum: u64,
        desired: u64,
    },
}

/// A publisher is asked for a keyframe of one layer at most this often (mediasoup and
/// LiveKit throttle PLI the same way): each keyframe is many packets for every subscriber.
pub const KEYFRAME_REQUEST_INTERVAL: Duration = Duration::from_secs(1);
/// How often layer choice and keyframe requests are revisited without any input.
const TICK: Duration = Duration::from_millis(250);
/// A layer asked for that sends nothing this long is taken as stopped by its encoder...
const LAYER_STALL: Duration = Duration::from_secs(1);
/// ...and is tried again after this long.
const LAYER_RETRY: Duration = Duration::from_secs(10);
/// The window over which a layer's bitrate is measured.
const RATE_WINDOW: Duration = Duration::from_secs(1);
/// A layer's cost until measured (a second after it starts): low, so that a new track is
/// upgraded soon on a fair link — the smallest at 150 kbit/s, each above about 3×.
const DEFAULT_BPS: [u64; MAX_LAYERS] = [150_000, 500_000, 1_500_000, 2_500_000];

#[derive(Debug, Default)]
struct Room {
    members: Vec<SessionId>,
    tracks: Vec<TrackId>,
    speakers: Speakers,
}

#[derive(Debug)]
struct Member {
    room: String,
    owner: Owner,
    /// Whether the connection receives the room's tracks: a page's sending connection and a
    /// WHIP session do not, and subscribing them would keep layers encoded and keyframes
    /// asked for that nobody sees.
    receives: bool,
    /// Ready to receive (its connection is up): frames and keyframe requests wait for it.
    ready: bool,
    estimate: Option<u64>,
    /// The last `Bitrate` reported (minimum, desired).
    bitrate: (u64, u64),
    published: Vec<TrackId>,
    /// How many video tiles the page shows at once, if it said: a video track that arrives
    /// while that many are on screen waits off screen until the page names it. Every line is a
    /// stream the connection walks at each of its timeouts, and an offer never takes one back.
    tiles: Option<usize>,
    /// By track, so a frame finds its subscription at once; track ids grow as tracks are
    /// published, so this is also the order subscribed.
    subscriptions: BTreeMap<TrackId, Subscription>,
}

#[derive(Debug)]
struct Subscription {
    track: TrackId,
    kind: MediaKind,
    view: View,
    /// The layer the tile asks for (the allocator's cap): kept encoded at the publisher.
    cap: Option<Layer>,
    fwd: Forwarding,
    /// On a line of the subscriber's connection (see `lines`): only then is anything sent.
    lined: bool,
    /// The host said the line can carry it ([`Sfu::line_ready`]; a new line is negotiated
    /// first): only then is a keyframe asked for it or a packet sent. A keyframe sent while
    /// the line is being negotiated would be lost, and the next is a second away.
    line_ready: bool,
    /// When a packet was last forwarded: an audio line goes to a new speaker from the one
    /// forwarded longest ago.
    forwarded: Option<Instant>,
}

#[derive(Debug)]
struct Track {
    publisher: SessionId,
    owner: Owner,
    room: String,
    info: TrackInfo,
    subscribers: Vec<SessionId>,
    /// The subscribers that have it on a line, the only ones a video packet may go to: a room
    /// of fifty whose pages show eight tiles each has eight of its forty-nine subscribers.
    lined: Vec<SessionId>,
    rates: [Meter; MAX_LAYERS],
    last_keyframe_request: [Option<Instant>; MAX_LAYERS],
    /// Layers last reported as active (dynacast); all at first, as a page starts them.
    active: [bool; MAX_LAYERS],
    /// The last packet was withheld from everyone (a quiet microphone): the next starts a run.
    withheld: bool,
    /// Each layer's size as the host last saw it (0, 0 unknown).
    sizes: [(u32, u32); MAX_LAYERS],
    /// Per layer: its last frame, since when it is asked for, and since when it is taken as
    /// stopped (asked for, nothing sent).
    last_frame: [Option<Instant>; MAX_LAYERS],
    asked_since: [Option<Instant>; MAX_LAYERS],
    stalled: [Option<Instant>; MAX_LAYERS],
}

/// Bytes of one layer over the last window.
#[derive(Debug, Default, Clone, Copy)]
struct Meter {
    started: Option<Instant>,
    bytes: u64,
    bps: Option<u64>,
}

impl Meter {
    fn add(&mut self, bytes: usize, now: Instant) {
        let started = *self.started.get_or_insert(now);
        self.bytes += bytes as u64;
        let elapsed = now.saturating_duration_since(started);
        if elapsed >= RATE_WINDOW {
            self.bps = Some(self.bytes * 8 * 1000 / elapsed.as_millis().max(1) as u64);
            self.bytes = 0;
            self.started = Some(now);
        }
    }
}

/// An RTP packet as the host received it from a publisher.
#[derive(Clone, Copy, Debug)]
pub struct Packet {
    pub layer: Layer,
    /// The first packet of a keyframe: a subscriber may start, or switch to its layer, here.
    pub keyframe: bool,
    /// Extended sequence number in the layer's own stream (no gaps but losses).
    pub seq: u64,
    /// RTP time in the track's clock, `hz` ticks a second.
    pub time: u64,
    pub hz: u32,
    pub bytes: usize,
    /// RFC 6464 audio level (0 loudest … 127 silence), for audio.
    pub audio_level: Option<u8>,
}

#[derive(Debug, Default)]
pub struct Sfu {
    rooms: HashMap<String, Room>,
    members: IdMap<SessionId, Member>,
    tracks: IdMap<TrackId, Track>,
    next_track: u64,
    /// `route`'s answer, reused: no allocation per frame.
    targets: Vec<Target>,
    /// Subscribers `route` found without a line for a forwarded microphone, reused.
    unlined: Vec<SessionId>,
    out: VecDeque<Output>,
    next_tick: Option<Instant>,
}

impl Sfu {
    pub fn new() -> Self {
        Self::default()
    }

    /// `session` joins `room` for `owner` and, if it `receives`, subscribes to every track
    /// published there by other owners; its page shows `tiles` video tiles at once, if it said.
    /// A session in another room leaves it first.
    pub fn join(
        &mut self,
        room: &str,
        session: SessionId,
        owner: Owner,
        receives: bool,
        tiles: Option<usize>,
        now: Instant,
    ) {
        if self.members.get(&session).is_some_and(|m| m.room == room) {
            return;
        }
        self.leave(session, now);
        let r = self.rooms.entry(room.to_owned()).or_default();
        r.members.push(session);
        let tracks = r.tracks.clone();
        self.members.insert(
            session,
            Member {
                room: room.to_owned(),
                owner,
                receives,
                ready: false,
                estimate: None,
                bitrate: (0, 0),
                published: Vec::new(),
                tiles,
                subscriptions: BTreeMap::new(),
            },
        );
        for t in tracks {
            self.subscribe(session, t);
        }
        self.reallocate(session, now);
        self.next_tick.get_or_insert(now + TICK);
    }

    /// `session` is gone: its tracks are unpublished, its subscriptions end.
    pub fn leave(&mut self, session: SessionId, now: Instant) {
        let Some(m) = self.members.remove(&session) else {
            return;
        };
        for t in m.published {
            self.remove_track(t, now);
        }
        for s in m.subscriptions.into_values() {
            if let Some(t) = self.tracks.get_mut(&s.track) {
                t.subscribers.retain(|x| *x != session);
                t.lined.retain(|x| *x != session);
            }
            self.out.push_back(Output::Unsubscribe {
                subscriber: session,
                track: s.track,
            });
            self.update_layers(s.track, now);
        }
        if let Some(r) = self.rooms.get_mut(&m.room) {
            r.members.retain(|x| *x != session);
            if r.members.is_empty() {
                self.rooms.remove(&m.room);
            }
        }
    }

    /// The line `subscriber`'s connection was given for `track` (`Output::Attach`) can carry
    /// it now: bound to a line already negotiated, or the offer that made the line answered.
    pub fn line_ready(&mut self, subscriber: SessionId, track: TrackId, now: Instant) {
        let Some(s) = self.subscription_mut(subscriber, track) else {
            return;
        };
        if !s.lined || s.line_ready {
            return;
        }
        s.line_ready = true;
        self.request_pending_keyframes(subscriber, now);
    }

    /// `session`'s connection is up: it receives from now on, starting at a keyframe.
    pub fn ready(&mut self, session: SessionId, now: Instant) {
        if let Some(m) = self.members.get_mut(&session) {
            m.ready = true;
        }
        self.request_pending_keyframes(session, now);
    }

    /// `publisher` sends a new track; every other member of its room subscribes to it.
    /// None if `publisher` has not joined a room.
    pub fn publish(
        &mut self,
        publisher: SessionId,
        info: TrackInfo,
        now: Instant,
    ) -> Option<TrackId> {
        let info = TrackInfo {
            layers: info.layers.clamp(1, MAX_LAYERS as u8),
            ..info
        };
        let m = self.members.get_mut(&publisher)?;
        let owner = m.owner;
        let id = TrackId(self.next_track);
        self.next_track += 1;
        m.published.push(id);
        let room = m.room.clone();
        let r = self.rooms.get_mut(&room)?;
        r.tracks.push(id);
        if info.kind == MediaKind::Audio {
            r.speakers.add(id, now);
        }
        let others: Vec<SessionId> = r
            .members
            .iter()
            .copied()
            .filter(|s| *s != publisher)
            .collect();
        self.tracks.insert(
            id,
            Track {
                publisher,
                owner,
                room,
                info,
                subscribers: Vec::new(),
                lined: Vec::new(),
                rates: [Meter::default(); MAX_LAYERS],
                last_keyframe_request: [None; MAX_LAYERS],
                active: [true; MAX_LAYERS],
                withheld: false,
                sizes: {
                    let mut sizes = [(0, 0); MAX_LAYERS];
                    sizes[usize::from(info.layers - 1)] = (info.width, info.height);
                    sizes
                },
                last_frame: [None; MAX_LAYERS],
                asked_since: [Some(now); MAX_LAYERS],
                stalled: [None; MAX_LAYERS],
            },
        );
        for s in others {
            self.subscribe(s, id);
            self.reallocate(s, now);
        }
        self.update_layers(id, now);
        Some(id)
    }

    /// The publisher stopped sending `track` (or removed it): its subscribers let it go.
    pub fn unpublish(&mut self, track: TrackId, now: Instant) {
        if let Some(t) = self.tracks.get(&track)
            && let Some(m) = self.members.get_mut(&t.publisher)
        {
            m.published.retain(|x| *x != track);
        }
        self.remove_track(track, now);
    }

    /// The tracks `session` publishes.
    pub fn published(&self, session: SessionId) -> &[TrackId] {
        self.members.get(&session).map_or(&[], |m| &m.published)
    }

    /// The room `session` is in.
    pub fn room_of(&self, session: SessionId) -> Option<&str> {
        self.members.get(&session).map(|m| m.room.as_str())
    }

    pub fn members(&self, room: &str) -> &[SessionId] {
        self.rooms.get(room).map_or(&[], |r| &r.members)
    }

    pub fn tracks(&self, room: &str) -> &[TrackId] {
        self.rooms.get(room).map_or(&[], |r| &r.tracks)
    }

    pub fn publisher(&self, track: TrackId) -> Option<SessionId> {
        self.tracks.get(&track).map(|t| t.publisher)
    }

    /// What the publisher said of `track`.
    pub fn info(&self, track: TrackId) -> Option<&TrackInfo> {
        self.tracks.get(&track).map(|t| &t.info)
    }

    pub fn owner(&self, track: TrackId) -> Option<Owner> {
        self.tracks.get(&track).map(|t| t.owner)
    }

    pub fn room_count(&self) -> usize {
        self.rooms.len()
    }

    /// The tracks `subscriber` receives (on a line or not), oldest first.
    pub fn subscriptions(&self, subscriber: SessionId) -> impl Iterator<Item = TrackId> + '_ {
        self.members
            .get(&subscriber)
            .into_iter()
            .flat_map(|m| m.subscriptions.keys().copied())
    }

    /// The layer `subscriber` receives of `track` now (None: nothing yet, or paused).
    pub fn current_layer(&self, subscriber: SessionId, track: TrackId) -> Option<Layer> {
        self.subscription(subscriber, track)?.fwd.current
    }

    /// The layer `subscriber` is to receive of `track` once a keyframe of it arrives.
    pub fn target_layer(&self, subscriber: SessionId, track: TrackId) -> Option<Layer> {
        self.subscription(subscriber, track)?.fwd.target
    }

    /// `subscriber`'s bandwidth estimate (bits per second, for everything it receives).
    pub fn set_estimate(&mut self, subscriber: SessionId, bps: u64, now: Instant) {
        if let Some(m) = self.members.get_mut(&subscriber) {
            m.estimate = Some(bps);
            self.reallocate(subscriber, now);
        }
    }

    /// How `subscriber`'s page shows the tiles of some tracks (the others' views are kept):
    /// lines and layers are chosen again once for all of them.
    pub fn set_views(&mut self, subscriber: SessionId, views: &[(TrackId, View)], now: Instant) {
        let Some(m) = self.members.get_mut(&subscriber) else {
            return;
        };
        let mut changed = false;
        for (track, view) in views {
            if let Some(s) = m.subscriptions.get_mut(track)
                && s.view != *view
            {
                s.view = *view;
                changed = true;
            }
        }
        if changed {
            self.reallocate(subscriber, now);
        }
    }

    /// The host saw the size of `layer` of `track` (in a keyframe): tiles pick layers by it.
    pub fn set_layer_size(
        &mut self,
        track: TrackId,
        layer: Layer,
        width: u32,
        height: u32,
        now: Instant,
    ) {
        let Some(t) = self.tracks.get_mut(&track) else {
            return;
        };
        let Some(size) = t.sizes.get_mut(usize::from(layer.0)) else {
            return;
        };
        if *size == (width, height) {
            return;
        }
        *size = (width, height);
        for s in t.subscribers.clone() {
            self.reallocate(s, now);
        }
    }

    /// `subscriber`'s browser asked for a keyframe of `track` (it lost its place).
    pub fn keyframe_wanted(&mut self, subscriber: SessionId, track: TrackId, now: Instant) {
        let Some(s) = self.subscription(subscriber, track) else {
            return;
        };
        if let Some(layer) = s.fwd.current.or(s.fwd.target) {
            self.request_keyframe(track, layer, now);
        }
    }

    /// A packet of `track` arrived: the subscribers to write it to, with the sequence number
    /// and RTP time each receives it at.
    pub fn route(&mut self, track: TrackId, packet: Packet, now: Instant) -> &[Target] {
        self.targets.clear();
        let Some(t) = self.tracks.get_mut(&track) else {
            return &self.targets;
        };
        let l = usize::from(packet.layer.0);
        if l >= usize::from(t.info.layers) {
            return &self.targets;
        }
        t.rates[l].add(packet.bytes, now);
        t.last_frame[l] = Some(now);
        t.stalled[l] = None;
        if t.info.kind == MediaKind::Audio {
            let Some(r) = self.rooms.get_mut(&t.room) else {
                return &self.targets;
            };
            if !r.speakers.on_audio(track, packet.audio_level, now) {
                t.withheld = true;
                return &self.targets;
            }
        }
        let incoming = Incoming {
            layer: packet.layer,
            keyframe: packet.keyframe,
            seq: packet.seq,
            time: packet.time,
            hz: packet.hz,
            after_gap: std::mem::take(&mut t.withheld),
        };
        let audio = t.info.kind == MediaKind::Audio;
        self.unlined.clear();
        // A microphone being forwarded goes to every subscriber (those without a line take
        // one); video only to those with a line.
        let subscribers = if audio { &t.subscribers } else { &t.lined };
        for sub in subscribers {
            let Some(m) = self.members.get_mut(sub) else {
                continue;
            };
            if !m.ready {
                continue;
            }
            let Some(s) = m.subscriptions.get_mut(&track) else {
                continue;
            };
            if !s.lined {
                // A microphone forwarded to a page with no line for it takes one: this packet
                // is not sent, the next starts the line's new run.
                if audio {
                    self.unlined.push(*sub);
                }
                continue;
            }
            if !s.line_ready {
                continue;
            }
            if let Some(out) = s.fwd.on_packet(incoming, now) {
                s.forwarded = Some(now);
                self.targets.push(Target {
                    subscriber: *sub,
                    seq: out.seq,
                    time: out.time,
                    starts_run: out.starts_run,
                });
            }
        }
        for i in 0..self.unlined.len() {
            let sub = self.unlined[i];
            self.line_audio(sub, track, now);
        }
        &self.targets
    }

    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    /// When [`Sfu::handle_timeout`] wants to run.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.next_tick
    }

    /// Revisits layer choice (measured rates change), repeats keyframe requests that went
    /// unanswered, and reports the speakers of every room.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.next_tick.is_none_or(|t| now < t) {
            return;
        }
        self.next_tick = (!self.members.is_empty()).then_some(now + TICK);
        for t in self.tracks.values_mut() {
            t.check_layers(now);
        }
        let sessions: Vec<SessionId> = self.members.keys().copied().collect();
        for s in sessions {
            self.reallocate(s, now);
            self.request_pending_keyframes(s, now);
        }
        for (name, room) in &mut self.rooms {
            if let Some(ranking) = room.speakers.changed_ranking(now) {
                let sessions = ranking
                    .iter()
                    .filter_map(|t| self.tracks.get(t).map(|t| t.publisher))
                    .collect();
                self.out.push_back(Output::Speakers {
                    room: name.clone(),
                    sessions,
                });
            }
        }
    }

    fn subscription(&self, subscriber: SessionId, track: TrackId) -> Option<&Subscription> {
        self.members.get(&subscriber)?.subscriptions.get(&track)
    }

    fn subscription_mut(
        &mut self,
        subscriber: SessionId,
        track: TrackId,
    ) -> Option<&mut Subscription> {
        self.members
            .get_mut(&subscriber)?
            .subscriptions
            .get_mut(&track)
    }

    fn subscribe(&mut self, subscriber: SessionId, track: TrackId) {
        let Some(t) = self.tracks.get_mut(&track) else {
            return;
        };
        let Some(m) = self.members.get_mut(&subscriber) else {
            return;
        };
        if !m.receives || t.owner == m.owner || m.subscriptions.contains_key(&track) {
            return;
        }
        t.subscribers.push(subscriber);
        let kind = t.info.kind;
        let on_screen = m
            .subscriptions
            .values()
            .filter(|s| s.kind == MediaKind::Video && s.view.visible)
            .count();
        let view = match m.tiles {
            Some(tiles) if kind == MediaKind::Video && on_screen >= tiles => View::HIDDEN,
            _ => View::default(),
        };
        m.subscriptions.insert(
            track,
            Subscription {
                track,
                kind,
                view,
                cap: None,
                fwd: Forwarding::new(None),
                lined: false,
                line_ready: false,
                forwarded: None,
            },
        );
        self.out.push_back(Output::Subscribe { subscriber, track });
        // A microphone takes a free audio line at once; video lines are chosen with the layers.
        if kind == MediaKind::Audio && m.lined_audio().count() < AUDIO_LINES {
            self.attach(subscriber, track);
        }
    }

    /// Puts `subscriber`'s subscription to `track` on a line.
    fn attach(&mut self, subscriber: SessionId, track: TrackId) {
        let Some(s) = self.subscription_mut(subscriber, track) else {
            return;
        };
        let was_lined = std::mem::replace(&mut s.lined, true);
        s.line_ready = false;
        // A line's stream starts again with each track; video waits for the allocator's
        // choice and then a keyframe of it.
        let kind = s.kind;
        s.fwd = match kind {
            MediaKind::Audio => Forwarding::flowing(Layer(0)),
            MediaKind::Video => Forwarding::new(None),
        };
        if let Some(t) = self.tracks.get_mut(&track)
            && !was_lined
        {
            t.lined.push(subscriber);
        }
        self.out.push_back(Output::Attach {
            subscriber,
            track,
            kind,
        });
    }

    /// Takes `subscriber`'s subscription to `track` off its line.
    fn detach(&mut self, subscriber: SessionId, track: TrackId) {
        let Some(s) = self.subscription_mut(subscriber, track) else {
            return;
        };
        s.lined = false;
        s.line_ready = false;
        s.cap = None;
        s.fwd = Forwarding::new(None);
        if let Some(t) = self.tracks.get_mut(&track) {
            t.lined.retain(|x| *x != subscriber);
        }
        self.out.push_back(Output::Detach { subscriber, track });
    }

    /// `subscriber` has no line for `track`, a microphone being forwarded: it takes a free
    /// audio line, else the one whose microphone was forwarded longest ago and is no longer.
    fn line_audio(&mut self, subscriber: SessionId, track: TrackId, now: Instant) {
        let Some(m) = self.members.get(&subscriber) else {
            return;
        };
        let speakers = self.rooms.get(&m.room).map(|r| &r.speakers);
        let lined: Vec<&Subscription> = m.lined_audio().collect();
        if lined.len() >= AUDIO_LINES {
            let quiet = lined
                .iter()
                .filter(|s| !speakers.is_some_and(|sp| sp.held(s.track, now)))
                .min_by_key(|s| s.forwarded)
                .map(|s| s.track);
            let Some(quiet) = quiet else {
                // Every line carries a voice forwarded now: this one waits.
                return;
            };
            self.detach(subscriber, quiet);
        }
        self.attach(subscriber, track);
    }

    /// Gives `subscriber`'s video lines to the tiles that need them most; the tracks that lost
    /// theirs.
    fn choose_video_lines(&mut self, subscriber: SessionId) -> Vec<TrackId> {
        let Some(m) = self.members.get(&subscriber) else {
            return Vec::new();
        };
        let candidates: Vec<VideoCandidate> = m
            .subscriptions
            .values()
            .filter(|s| s.kind == MediaKind::Video)
            .map(|s| VideoCandidate {
                track: s.track,
                visible: s.view.visible,
                screen: self.tracks.get(&s.track).is_some_and(|t| t.info.screen),
                lined: s.lined,
            })
            .collect();
        let chosen = lines::choose_video(&candidates);
        // Lines are given up before they are taken, so the freed ones are reused.
        let mut detached = Vec::new();
        for (c, lined) in candidates.iter().zip(&chosen) {
            if c.lined && !lined {
                self.detach(subscriber, c.track);
                detached.push(c.track);
            }
        }
        for (c, lined) in candidates.iter().zip(&chosen) {
            if !c.lined && *lined {
                self.attach(subscriber, c.track);
            }
        }
        detached
    }

    fn remove_track(&mut self, track: TrackId, now: Instant) {
        let Some(t) = self.tracks.remove(&track) else {
            return;
        };
        if let Some(r) = self.rooms.get_mut(&t.room) {
            r.tracks.retain(|x| *x != track);
            r.speakers.remove(track);
        }
        for sub in t.subscribers {
            if let Some(m) = self.members.get_mut(&sub) {
                m.subscriptions.remove(&track);
            }
            self.out.push_back(Output::Unsubscribe {
                subscriber: sub,
                track,
            });
            self.reallocate(sub, now);
        }
    }

    /// Chooses `subscriber`'s video layers again and acts on what changed.
    fn reallocate(&mut self, subscriber: SessionId, now: Instant) {
        for track in self.choose_video_lines(subscriber) {
            self.update_layers(track, now);
        }
        let Some(m) = self.members.get(&subscriber) else {
            return;
        };
        let mut video = Vec::new();
        let mut wanted = Vec::new();
        let mut audio = 0;
        for s in m.subscriptions.values() {
            let Some(t) = self.tracks.get(&s.track) else {
                continue;
            };
            match s.kind {
                MediaKind::Audio => audio += 1,
                MediaKind::Video if !s.lined => {}
                MediaKind::Video => {
                    video.push(s.track);
                    wanted.push(Wanted {
                        view: s.view,
                        rates: rates(t),
                        sizes: t.sizes,
                        usable: t.stalled.map(|s| s.is_none()),
                        screen: t.info.screen,
                    });
                }
            }
        }
        // A room of many microphones forwards only its loudest few: a subscriber's link never
        // carries more, and reserving for every microphone of a room of a hundred would leave
        // a typical estimate no room for video.
        let audio = audio.min(crate::speakers::MAX_FORWARDED_SPEAKERS);
        let allocation = allocate::allocate(&wanted, audio, m.estimate);
        let ready = m.ready;
        let mut changed = Vec::new();
        if let Some(m) = self.members.get_mut(&subscriber) {
            let bitrate = (
                allocation.used + allocation.next_upgrade,
                allocation.desired,
            );
            // Small moves of the measured rates are not worth telling the estimator.
            let moved = |a: u64, b: u64| a.abs_diff(b) * 10 > a.max(b);
            if moved(bitrate.0, m.bitrate.0) || moved(bitrate.1, m.bitrate.1) {
                m.bitrate = bitrate;
                self.out.push_back(Output::Bitrate {
                    subscriber,
                    minimum: bitrate.0,
                    desired: bitrate.1,
                });
            }
            for ((track, layer), cap) in video.iter().zip(allocation.layers).zip(allocation.caps) {
                let Some(s) = m.subscriptions.get_mut(track) else {
                    continue;
                };
                let retarget = s.fwd.target != layer;
                if retarget {
                    s.fwd.retarget(layer);
                }
                if retarget || s.cap != cap {
                    s.cap = cap;
                    changed.push(*track);
                }
            }
        }
        for track in changed {
            self.update_layers(track, now);
        }
        if ready {
            self.request_pending_keyframes(subscriber, now);
        }
    }

    /// Asks for a keyframe of every layer `subscriber` waits for.
    fn request_pending_keyframes(&mut self, subscriber: SessionId, now: Instant) {
        let Some(m) = self.members.get(&subscriber) else {
            return;
        };
        if !m.ready {
            return;
        }
        let pending: Vec<(TrackId, Layer)> = m
            .subscriptions
            .values()
            .filter(|s| s.kind == MediaKind::Video && s.line_ready && s.fwd.waiting())
            .filter_map(|s| Some((s.track, s.fwd.target?)))
            .collect();
        for (track, layer) in pending {
            self.request_keyframe(track, layer, now);
        }
    }

    fn request_keyframe(&mut self, track: TrackId, layer: Layer, now: Instant) {
        let Some(t) = self.tracks.get_mut(&track) else {
            return;
        };
        let last = &mut t.last_keyframe_request[usize::from(layer.0)];
        if last.is_some_and(|at| now.saturating_duration_since(at) < KEYFRAME_REQUEST_INTERVAL) {
            return;
        }
        *last = Some(now);
        self.out.push_back(Output::RequestKeyframe {
            publisher: t.publisher,
            track,
            layer,
        });
    }

    /// Reports the layers of `track` that some subscriber receives, waits for, or would
    /// receive on a better link. A layer is paused for its tiles (hidden, or small enough for
    /// a smaller layer), never because a link is short now: the estimator probes towards the
    /// tile's layer, and a paused layer would have to restart, and send a keyframe, at each
    /// move of the estimate (LiveKit's dynacast follows the subscribers' wanted quality too).
    fn update_layers(&mut self, track: TrackId, now: Instant) {
        let Some(t) = self.tracks.get(&track) else {
            return;
        };
        if t.info.kind != MediaKind::Video {
            return;
        }
        let mut active = [false; MAX_LAYERS];
        // While anyone subscribes, the smallest layer keeps flowing: it is cheap, it tells a
        // layer the encoder does not send from one it was told to pause, and a switch down
        // finds it ready.
        active[0] = !t.subscribers.is_empty();
        for sub in &t.subscribers {
            let Some(s) = self.subscription(*sub, track) else {
                continue;
            };
            for l in [s.fwd.current, s.fwd.target, s.cap].into_iter().flatten() {
                active[usize::from(l.0)] = true;
            }
        }
        let Some(t) = self.tracks.get_mut(&track) else {
            return;
        };
        if t.active != active {
            // A layer asked for anew gets its time to start before it counts as stopped.
            for ((now_on, was_on), since) in active.iter().zip(t.active).zip(&mut t.asked_since) {
                if *now_on && !was_on {
                    *since = Some(now);
                }
            }
            t.active = active;
            self.out.push_back(Output::Layers {
                publisher: t.publisher,
                track,
                active,
            });
        }
    }
}

impl Member {
    /// The member's microphones on an audio line.
    fn lined_audio(&self) -> impl Iterator<Item = &Subscription> {
        self.subscriptions
            .values()
            .filter(|s| s.kind == MediaKind::Audio && s.lined)
    }
}

impl Track {
    /// Marks the layers asked for that send nothing as stopped, and forgets old stops.
    fn check_layers(&mut self, now: Instant) {
        if self.info.kind != MediaKind::Video {
            return;
        }
        // A publisher that sends nothing at all (paused, camera off) says nothing of its layers.
        let flowing = self
            .last_frame
            .iter()
            .flatten()
            .any(|t| now.saturating_duration_since(*t) < LAYER_STALL);
        for l in 0..usize::from(self.info.layers) {
            match self.stalled[l] {
                Some(since) if now.saturating_duration_since(since) >= LAYER_RETRY => {
                    self.stalled[l] = None;
                    self.asked_since[l] = Some(now);
                }
                Some(_) => {}
                None => {
                    let heard = self.last_frame[l].max(self.asked_since[l]);
                    if self.active[l]
                        && flowing
                        && heard.is_some_and(|t| now.saturating_duration_since(t) >= LAYER_STALL)
                    {
                        self.stalled[l] = Some(now);
                    }
                }
            }
        }
    }
}

/// What each layer of `t` costs: measured where it has been, assumed where not.
fn rates(t: &Track) -> LayerRates {
    let n = usize::from(t.info.layers);
    let mut bps = [0; MAX_LAYERS];
    for (l, b) in bps.iter_mut().enumerate().take(n) {
        *b = t.rates[l].bps.unwrap_or(DEFAULT_BPS[l]);
    }
    LayerRates {
        bps,
        layers: t.info.layers,
    }
}
