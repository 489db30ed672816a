//! The participants of SFU rooms on the media thread: which sessions are whose, and the
//! signaling messages the engine's outputs become.
//!
//! A page in an SFU room has two sessions: upstream (it offers what it sends) and downstream
//! (the server offers what it receives). Their SDP travels on the page's signaling WebSocket,
//! addressed to or from the peer id `sfu`; the hub carries it between the room core and here.

use std::collections::HashMap;
use std::time::Instant;

use huddle_media::{CarriedTrack, Engine, MediaKind, SessionId, SessionKind, TrackId, View};
use huddle_signal_proto::{
    ErrorCode, MediaRequest, PeerId, SdpKind, ServerMessage, SessionDescription, Source, TrackLabel,
};

/// What the media thread tells the hub, for the room core to deliver.
#[derive(Debug)]
pub enum SfuEvent {
    ToPeer { peer: PeerId, msg: ServerMessage },
    ToRoom { room: String, msg: ServerMessage },
}

/// One participant's two connections with the media peer.
#[derive(Debug, Default)]
struct Connections {
    upstream: Option<SessionId>,
    downstream: Option<SessionId>,
}

#[derive(Debug, Default)]
pub(super) struct Participants {
    by_peer: HashMap<(String, PeerId), Connections>,
    by_session: HashMap<SessionId, (String, PeerId)>,
}

impl Participants {
    /// Carries out one request of the room core; the messages for the page are returned.
    pub(super) fn request(
        &mut self,
        engine: &mut Engine,
        request: MediaRequest,
        now: Instant,
    ) -> Vec<SfuEvent> {
        match request {
            MediaRequest::Join { room, peer, tiles } => {
                let kind = SessionKind::Downstream {
                    room: room.clone(),
                    peer: peer.0.clone(),
                };
                match engine.open_downstream(kind, tiles.map(usize::from), now) {
                    Ok((id, offer)) => {
                        self.insert(id, &room, &peer, |c| &mut c.downstream);
                        vec![signal(peer, SdpKind::Offer, offer)]
                    }
                    Err(e) => vec![failed(peer, &e)],
                }
            }
            MediaRequest::Sdp { room, peer, sdp } => {
                let key = (room.clone(), peer.clone());
                let conns = self.by_peer.get(&key);
                match sdp.kind {
                    SdpKind::Offer => {
                        let result = match conns.and_then(|c| c.upstream) {
                            Some(id) => engine.reoffer(id, &sdp.sdp, now),
                            None => {
                                let kind = SessionKind::Upstream {
                                    room: room.clone(),
                                    peer: peer.0.clone(),
                                };
                                engine.accept(kind, &sdp.sdp, now).map(|(id, answer)| {
                                    self.insert(id, &room, &peer, |c| &mut c.upstream);
                                    answer
                                })
                            }
                        };
                        match result {
                            Ok(answer) => vec![signal(peer, SdpKind::Answer, answer)],
                            Err(e) => vec![failed(peer, &e)],
                        }
                    }
                    SdpKind::Answer => {
                        let Some(id) = conns.and_then(|c| c.downstream) else {
                            return vec![failed(peer, &"no offer of the server to answer")];
                        };
                        match engine.accept_answer(id, &sdp.sdp, now) {
                            Ok(()) => Vec::new(),
                            Err(e) => vec![failed(peer, &e)],
                        }
                    }
                    SdpKind::Pranswer | SdpKind::Rollback => vec![failed(
                        peer,
                        &"the media peer takes offers and answers only",
                    )],
                }
            }
            MediaRequest::View { room, peer, tiles } => {
                let downstream = self.by_peer.get(&(room, peer)).and_then(|c| c.downstream);
                if let Some(id) = downstream {
                    // A tile naming no track the page receives is ignored, as one that has
                    // just left.
                    let views: Vec<(TrackId, View)> = tiles
                        .iter()
                        .filter_map(|t| {
                            let view = View {
                                visible: t.visible,
                                width: t.width,
                                height: t.height,
                            };
                            Some((t.track.parse().ok()?, view))
                        })
                        .collect();
                    engine.set_views(id, &views, now);
                }
                Vec::new()
            }
            MediaRequest::Leave { room, peer } => {
                if let Some(c) = self.by_peer.remove(&(room, peer)) {
                    for id in [c.upstream, c.downstream].into_iter().flatten() {
                        self.by_session.remove(&id);
                        engine.close(id);
                    }
                }
                Vec::new()
            }
        }
    }

    /// Whose session `id` is.
    pub(super) fn peer(&self, id: SessionId) -> Option<&PeerId> {
        self.by_session.get(&id).map(|(_, p)| p)
    }

    /// The session ended (closed by the engine: ICE lost, DTLS failed).
    pub(super) fn closed(&mut self, id: SessionId) {
        let Some(key) = self.by_session.remove(&id) else {
            return;
        };
        if let Some(c) = self.by_peer.get_mut(&key) {
            for slot in [&mut c.upstream, &mut c.downstream] {
                if *slot == Some(id) {
                    *slot = None;
                }
            }
        }
    }

    fn insert(
        &mut self,
        id: SessionId,
        room: &str,
        peer: &PeerId,
        slot: impl FnOnce(&mut Connections) -> &mut Option<SessionId>,
    ) {
        let key = (room.to_owned(), peer.clone());
        *slot(self.by_peer.entry(key.clone()).or_default()) = Some(id);
        self.by_session.insert(id, key);
    }
}

/// The WHIP publishers and WHEP viewers of each room (not SFU participants: they have no page
/// and no peer id), counted for the room's pages.
#[derive(Debug, Default)]
pub(super) struct Streaming {
    /// Each session's room, and whether it publishes (WHIP) or views (WHEP).
    sessions: HashMap<SessionId, (String, bool)>,
}

impl Streaming {
    /// A new WHIP (`publishes`) or WHEP session: the room's new counts.
    pub(super) fn added(&mut self, id: SessionId, room: String, publishes: bool) -> SfuEvent {
        self.sessions.insert(id, (room.clone(), publishes));
        self.counts(room)
    }

    /// A session ended: the new counts of its room, if it was one of these.
    pub(super) fn removed(&mut self, id: SessionId) -> Option<SfuEvent> {
        let (room, _) = self.sessions.remove(&id)?;
        Some(self.counts(room))
    }

    /// For a page joining `room`: the counts, if there are streams.
    pub(super) fn tell(&self, room: &str, peer: &PeerId) -> Option<SfuEvent> {
        let msg = self.message(room);
        matches!(msg, ServerMessage::Streaming { publishers, viewers } if publishers + viewers > 0)
            .then(|| SfuEvent::ToPeer {
                peer: peer.clone(),
                msg,
            })
    }

    fn counts(&self, room: String) -> SfuEvent {
        let msg = self.message(&room);
        SfuEvent::ToRoom { room, msg }
    }

    fn message(&self, room: &str) -> ServerMessage {
        let (mut publishers, mut viewers) = (0, 0);
        for (r, publishes) in self.sessions.values() {
            if r == room {
                *(if *publishes {
                    &mut publishers
                } else {
                    &mut viewers
                }) += 1;
            }
        }
        ServerMessage::Streaming {
            publishers,
            viewers,
        }
    }
}

/// The server's offer on a page's receiving connection.
pub(super) fn offer(peer: PeerId, sdp: String) -> SfuEvent {
    signal(peer, SdpKind::Offer, sdp)
}

/// The tracks a page receives, and the lines of its receiving connection that carry them.
pub(super) fn tracks(peer: PeerId, tracks: Vec<CarriedTrack>) -> SfuEvent {
    let tracks = tracks
        .into_iter()
        .map(|t| TrackLabel {
            id: t.track.to_string(),
            mid: t.mid,
            peer: t.peer.map(PeerId),
            kind: match t.kind {
                MediaKind::Audio => "audio",
                MediaKind::Video => "video",
            }
            .to_owned(),
            source: match (t.kind, t.screen) {
                (MediaKind::Audio, _) => Source::Microphone,
                (MediaKind::Video, false) => Source::Camera,
                (MediaKind::Video, true) => Source::ScreenShare,
            },
        })
        .collect();
    SfuEvent::ToPeer {
        peer,
        msg: ServerMessage::Tracks { tracks },
    }
}

fn signal(peer: PeerId, kind: SdpKind, sdp: String) -> SfuEvent {
    SfuEvent::ToPeer {
        peer,
        msg: ServerMessage::Signal {
            from: PeerId::sfu(),
            sdp: Some(SessionDescription { kind, sdp }),
            candidate: None,
        },
    }
}

fn failed(peer: PeerId, why: &dyn std::fmt::Display) -> SfuEvent {
    SfuEvent::ToPeer {
        peer,
        msg: ServerMessage::error(ErrorCode::MediaFailed, format!("media: {why}")),
    }
}
