//! What a room admin (a token with `roomAdmin`) may do to the others: mute a source, remove
//! someone (their token then refused in the room until it expires), lock the room, end it.

use rand::RngCore;

use super::{Failure, LeaveReason, Output, Rooms, close_code};
use crate::wire::{ErrorCode, PeerId, ServerMessage, Source};

impl<R: RngCore> Rooms<R> {
    pub(super) fn handle_mute(
        &mut self,
        admin: &PeerId,
        target: &PeerId,
        source: Source,
    ) -> Result<(), Failure> {
        self.check_admin(admin, "mute someone")?;
        self.check_same_room(admin, target)?;
        let Some(p) = self.peers.get_mut(target) else {
            return Ok(());
        };
        match source {
            Source::Microphone => p.state.audio = false,
            Source::Camera => p.state.video = false,
            Source::ScreenShare | Source::ScreenShareAudio => p.state.screen = None,
        }
        let info = p.info(target);
        let by = admin.clone();
        self.deliver(target, ServerMessage::Muted { source, by });
        self.broadcast(target, ServerMessage::PeerUpdated { peer: info });
        Ok(())
    }

    /// Removes `target` — and anyone else in the room under the same identity — and refuses
    /// its token and identity in the room until the token expires.
    pub(super) fn handle_remove(
        &mut self,
        admin: &PeerId,
        target: &PeerId,
        now: std::time::Instant,
    ) -> Result<(), Failure> {
        self.check_admin(admin, "remove someone")?;
        if admin == target {
            return Err((ErrorCode::BadMessage, "to go, send 'leave'".into()));
        }
        self.check_same_room(admin, target)?;
        let unix = self.unix(now);
        let room = self.peers[target].room.clone();
        let revocation = self.peers[target].revocation.clone();
        let mut gone = vec![target.clone()];
        if let Some(r) = &revocation {
            self.forget_expired_removals(&room, unix);
            if r.expires.saturating_add(huddle_access::LEEWAY) >= unix {
                let removed = self.revoked.entry(room.clone()).or_default();
                removed.insert(r.token.clone(), r.expires);
                removed.insert(r.identity.clone(), r.expires);
            }
            // The same person in another tab, or with another token: gone too.
            let same = |p: &super::Peer| {
                p.revocation
                    .as_ref()
                    .is_some_and(|o| o.identity == r.identity)
            };
            gone.extend(
                self.members(&room)
                    .filter(|(id, p)| *id != target && *id != admin && same(p))
                    .map(|(id, _)| id.clone())
                    .collect::<Vec<_>>(),
            );
            self.outputs.push_back(Output::Revoked {
                room: room.to_string(),
                revocation: r.clone(),
            });
        }
        for pid in gone {
            let conn = self.peers.get(&pid).and_then(|p| p.conn);
            self.deliver(&pid, ServerMessage::Removed { by: admin.clone() });
            if let Some(conn) = conn {
                self.conns.remove(&conn);
                self.outputs.push_back(Output::Close {
                    conn,
                    code: close_code::REMOVED,
                    reason: "removed by an admin".into(),
                });
            }
            self.remove_peer(&pid, LeaveReason::Removed);
        }
        Ok(())
    }

    pub(super) fn handle_lock(&mut self, admin: &PeerId, locked: bool) -> Result<(), Failure> {
        self.check_admin(admin, "lock the room")?;
        let room = self.peers[admin].room.clone();
        if locked {
            self.locked.insert(room.clone());
        } else {
            self.locked.remove(&room);
        }
        let msg = ServerMessage::RoomLocked {
            locked,
            by: admin.clone(),
        };
        for pid in self.rooms[&room].clone() {
            self.deliver(&pid, msg.clone());
        }
        Ok(())
    }

    /// Everyone is told and disconnected; the room is gone (its removals are kept).
    pub(super) fn handle_end(&mut self, admin: &PeerId) -> Result<(), Failure> {
        self.check_admin(admin, "end the room")?;
        let room = self.peers[admin].room.clone();
        let msg = ServerMessage::RoomEnded { by: admin.clone() };
        self.evict(&room, &msg, close_code::ENDED, "the room was ended");
        Ok(())
    }

    fn check_admin(&self, pid: &PeerId, what: &str) -> Result<(), Failure> {
        if self.peers[pid].permissions.admin {
            Ok(())
        } else {
            Err((
                ErrorCode::Forbidden,
                format!("only a room admin (a token with roomAdmin) may {what}"),
            ))
        }
    }

    fn check_same_room(&self, admin: &PeerId, target: &PeerId) -> Result<(), Failure> {
        let room = &self.peers[admin].room;
        if self.peers.get(target).is_some_and(|p| p.room == *room) {
            Ok(())
        } else {
            Err((
                ErrorCode::UnknownPeer,
                format!("no peer '{target}' in room '{room}'"),
            ))
        }
    }
}
