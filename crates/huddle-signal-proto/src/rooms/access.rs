//! Who may join: the access token a `join` carries, checked against the server's keys, the
//! room, and the tokens removed from it.

use std::time::Instant;

use rand::RngCore;

use super::{ConnId, Rooms, close_code};
use crate::names::RoomName;
use crate::wire::{ErrorCode, Permissions};

/// What a join is allowed, once its token (if any is needed) passed.
pub(super) struct Admitted {
    pub(super) permissions: Permissions,
    /// The token's display name, which wins over the page's.
    pub(super) name: Option<String>,
    /// The token's revocation id and expiry.
    pub(super) token: Option<(String, u64)>,
}

impl<R: RngCore> Rooms<R> {
    /// Checks a join's token. `None`: refused, the client told why and its connection closed
    /// (a client without a valid token has nothing else to do here).
    pub(super) fn admit(
        &mut self,
        conn: ConnId,
        room: &RoomName,
        token: Option<&str>,
        now: Instant,
    ) -> Option<Admitted> {
        if self.config.access.is_empty() {
            return Some(Admitted {
                permissions: Permissions::open(),
                name: None,
                token: None,
            });
        }
        let unauthorized = |why: String| (ErrorCode::Unauthorized, close_code::UNAUTHORIZED, why);
        let forbidden = |why: String| (ErrorCode::Forbidden, close_code::FORBIDDEN, why);
        let unix = self.unix(now);
        let refusal = match token {
            None => unauthorized(
                "this server needs an access token to join; open the link you were given".into(),
            ),
            Some(token) => match self.config.access.decode(token, unix) {
                Err(e) => unauthorized(e.to_string()),
                Ok(access) => match access.admit(room.as_str()) {
                    Err(e) => forbidden(e.to_string()),
                    Ok(()) if self.is_revoked(room, &access.revocation_id, unix) => {
                        forbidden("you were removed from this room".into())
                    }
                    Ok(()) => {
                        return Some(Admitted {
                            permissions: Permissions::from_grant(&access.grant),
                            name: access.name,
                            token: Some((access.revocation_id, access.expires)),
                        });
                    }
                },
            },
        };
        let (code, close, why) = refusal;
        self.kick(conn, code, close, why);
        None
    }

    /// Whether `id` was removed from `room` and has not expired since; forgets what has.
    fn is_revoked(&mut self, room: &RoomName, id: &str, unix: u64) -> bool {
        let Some(removed) = self.revoked.get_mut(room) else {
            return false;
        };
        removed.retain(|_, expires| *expires + huddle_access::LEEWAY >= unix);
        let revoked = removed.contains_key(id);
        if removed.is_empty() {
            self.revoked.remove(room);
        }
        revoked
    }
}
