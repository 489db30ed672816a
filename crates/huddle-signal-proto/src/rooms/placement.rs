//! A cluster node's side of room placement: which rooms this node hosts, and the joins that wait
//! while the I/O layer asks the cluster where a room lives.
//!
//! The core never learns how placement is decided (Redis, leases, load): it asks with
//! [`Output::Place`], is answered with a [`Placement`], and reports a room it no longer hosts with
//! [`Output::Vacated`]. A node admits joins only to the rooms it hosts, so a room's limits are
//! counted in one place.

use std::collections::{HashMap, HashSet};
use std::time::Instant;

use super::{ConnId, Join, Output, Rooms, close_code};
use crate::names::RoomName;
use crate::wire::{ClientMessage, ErrorCode, ServerMessage};
use rand::RngCore;

/// Where the cluster says a room lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placement {
    /// On this node: admit its joins.
    Here,
    /// On the node at `url` (its public URL): the waiting pages are sent there.
    Elsewhere { url: String },
    /// Not known now (the cluster's store cannot be reached): the waiting joins are refused
    /// with `why`, and may be sent again.
    Unavailable { why: String },
}

/// Joins that wait for one room's placement, most a room's first page and whoever came in the
/// same few milliseconds.
const MAX_WAITING: usize = 256;

#[derive(Default)]
pub(super) struct Placements {
    hosted: HashSet<RoomName>,
    waiting: HashMap<RoomName, Vec<(ConnId, ClientMessage)>>,
}

impl Placements {
    pub(super) fn is_hosted(&self, room: &RoomName) -> bool {
        self.hosted.contains(room)
    }

    /// Forgets a closed connection's waiting join.
    pub(super) fn unpark(&mut self, conn: ConnId) {
        self.waiting.retain(|_, joins| {
            joins.retain(|(c, _)| *c != conn);
            !joins.is_empty()
        });
    }

    /// `room` is no longer hosted here; `true` if it was.
    pub(super) fn vacate(&mut self, room: &RoomName) -> bool {
        self.hosted.remove(room)
    }

    fn is_waiting(&self, conn: ConnId) -> bool {
        self.waiting.values().flatten().any(|(c, _)| *c == conn)
    }
}

impl<R: RngCore> Rooms<R> {
    /// Holds `join` until `room` is placed; the first join of a room asks where it lives.
    pub(super) fn park(&mut self, conn: ConnId, room: RoomName, join: Join<'_>) {
        if self.placement.is_waiting(conn) {
            let why = "this connection's join is still waiting for its room";
            return self.send_error(conn, ErrorCode::AlreadyJoined, why);
        }
        let waiting = self.placement.waiting.entry(room.clone()).or_default();
        if waiting.len() >= MAX_WAITING {
            let why = format!("room '{room}' is being placed; try again in a moment");
            return self.send_error(conn, ErrorCode::Unavailable, why);
        }
        waiting.push((conn, join.to_message()));
        if waiting.len() == 1 {
            self.outputs.push_back(Output::Place {
                room: room.to_string(),
            });
        }
    }

    /// The cluster's answer to [`Output::Place`] for `room`: its waiting joins are admitted, sent
    /// to the node that hosts it, or refused.
    pub fn handle_placed(&mut self, room: &str, placement: Placement, now: Instant) {
        let Ok(room) = RoomName::parse(room) else {
            return;
        };
        let waiting = self.placement.waiting.remove(&room).unwrap_or_default();
        match placement {
            Placement::Here => {
                self.placement.hosted.insert(room.clone());
                for (conn, join) in waiting {
                    // A connection closed meanwhile (its join window ran out) is not admitted.
                    if !self.conns.contains_key(&conn) {
                        continue;
                    }
                    if let Err((code, why)) = self.handle_message(conn, join, now) {
                        self.send_error(conn, code, why);
                    }
                }
                // Every join may have been refused (full, bad token): an empty room goes back.
                if !self.rooms.contains_key(&room) && self.placement.vacate(&room) {
                    self.outputs.push_back(Output::Vacated {
                        room: room.to_string(),
                    });
                }
            }
            Placement::Elsewhere { url } => {
                for (conn, _) in waiting {
                    self.send(
                        conn,
                        ServerMessage::Moved {
                            url: Some(url.clone()),
                        },
                    );
                    self.conns.remove(&conn);
                    self.outputs.push_back(Output::Close {
                        conn,
                        code: close_code::MOVED,
                        reason: "the room is on another server".into(),
                    });
                }
            }
            Placement::Unavailable { why } => {
                for (conn, _) in waiting {
                    self.send_error(conn, ErrorCode::Unavailable, why.clone());
                }
            }
        }
    }

    /// The rooms this node hosts (what its cluster leases must cover), sorted.
    pub fn hosted_rooms(&self) -> Vec<String> {
        let mut rooms: Vec<String> = self
            .placement
            .hosted
            .iter()
            .map(|r| r.to_string())
            .collect();
        rooms.sort();
        rooms
    }

    /// This node no longer hosts `room` (its lease went to another node): everyone in it is
    /// told to reconnect, which places the room again.
    pub fn handle_lost(&mut self, room: &str) {
        let Ok(room) = RoomName::parse(room) else {
            return;
        };
        if !self.placement.vacate(&room) {
            return;
        }
        let msg = ServerMessage::Moved { url: None };
        self.evict(
            &room,
            &msg,
            close_code::MOVED,
            "the room moved to another server",
        );
    }

    /// This node is draining: every room it hosts is given back and its pages told to reconnect
    /// to another node; joins that arrive from now on are placed elsewhere.
    pub fn handle_drain(&mut self) {
        let mut rooms: Vec<RoomName> = self.placement.hosted.iter().cloned().collect();
        rooms.sort();
        let msg = ServerMessage::Moved { url: None };
        for room in rooms {
            // Each is given back (`Output::Vacated`) as it empties.
            self.evict(&room, &msg, close_code::MOVED, "this server is going away");
        }
    }
}
