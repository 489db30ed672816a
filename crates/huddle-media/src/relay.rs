//! One source, many consumers (aiortc's `MediaRelay`): a room's published tracks feed every
//! session watching the room. Frames are shared (`Arc<[u8]>`), never decoded again, and each
//! consumer repacketizes them into its own RTP stream — the base of the SFU.

use std::collections::HashMap;

use crate::session::SessionId;

#[derive(Debug, Default)]
struct Room {
    publisher: Option<SessionId>,
    viewers: Vec<SessionId>,
}

/// Who publishes into and who watches each room.
#[derive(Debug, Default)]
pub struct Relay {
    rooms: HashMap<String, Room>,
}

/// The room already has a publisher.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RoomTaken;

impl Relay {
    pub fn publish(&mut self, room: &str, session: SessionId) -> Result<(), RoomTaken> {
        let r = self.rooms.entry(room.to_owned()).or_default();
        match r.publisher {
            Some(p) if p != session => Err(RoomTaken),
            _ => {
                r.publisher = Some(session);
                Ok(())
            }
        }
    }

    pub fn watch(&mut self, room: &str, session: SessionId) {
        let r = self.rooms.entry(room.to_owned()).or_default();
        if !r.viewers.contains(&session) {
            r.viewers.push(session);
        }
    }

    pub fn publisher(&self, room: &str) -> Option<SessionId> {
        self.rooms.get(room).and_then(|r| r.publisher)
    }

    pub fn viewers(&self, room: &str) -> &[SessionId] {
        self.rooms.get(room).map_or(&[], |r| &r.viewers)
    }

    /// Forgets `session` in `room`; the room goes when nobody is left.
    pub fn leave(&mut self, room: &str, session: SessionId) {
        let Some(r) = self.rooms.get_mut(room) else {
            return;
        };
        if r.publisher == Some(session) {
            r.publisher = None;
        }
        r.viewers.retain(|v| *v != session);
        if r.publisher.is_none() && r.viewers.is_empty() {
            self.rooms.remove(room);
        }
    }

    pub fn room_count(&self) -> usize {
        self.rooms.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_publisher_many_viewers_and_rooms_are_apart() {
        let mut relay = Relay::default();
        let (p, v1, v2, other) = (SessionId(1), SessionId(2), SessionId(3), SessionId(4));
        relay.watch("a", v1);
        assert_eq!(
            relay.publisher("a"),
            None,
            "watching before anyone publishes is fine"
        );
        relay.publish("a", p).unwrap();
        assert_eq!(relay.publish("a", other), Err(RoomTaken));
        relay.publish("a", p).unwrap();
        relay.watch("a", v2);
        relay.watch("a", v2);
        assert_eq!(relay.viewers("a"), &[v1, v2]);
        relay.publish("b", other).unwrap();
        assert!(relay.viewers("b").is_empty());
        relay.leave("a", p);
        assert_eq!(relay.publisher("a"), None);
        assert_eq!(
            relay.viewers("a"),
            &[v1, v2],
            "viewers wait for the next publisher"
        );
        relay.leave("a", v1);
        relay.leave("a", v2);
        assert_eq!(relay.room_count(), 1, "room a is gone, b stays");
    }
}
