//! Who may join: the access token a `join` carries, checked against the server's keys, the
//! room, and the tokens removed from it.

use std::time::Instant;

use rand::RngCore;

use super::{ConnId, Revocation, Rooms, close_code};
use crate::names::RoomName;
use crate::wire::{ErrorCode, Permissions};

/// What a join is allowed, once its token (if any is needed) passed.
pub(super) struct Admitted {
    pub(super) permissions: Permissions,
    /// The token's display name, which wins over the page's.
    pub(super) name: Option<String>,
    /// What removing this participant will refuse.
    pub(super) revocation: Option<Revocation>,
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
                revocation: None,
            });
        }
        let unauthorized = |why: String| (ErrorCode::Unauthorized, close_code::UNAUTHORIZED, why);
        let forbidden = |why: String| (ErrorCode::Forbidden, close_code::FORBIDDEN, why);
        let unix = self.unix(now);
        let refusal = match token {
            None => unauthorized("this server needs an access token to join".into()),
            Some(token) => match self.config.access.decode(token, unix) {
                Err(e) => unauthorized(e.to_string()),
                Ok(access) => {
                    let revocation = Revocation {
                        token: access.revocation_id.clone(),
                        identity: access.holder(),
                        expires: access.expires,
                    };
                    match access.admit(room.as_str()) {
                        Err(e) => forbidden(e.to_string()),
                        Ok(()) if self.is_revoked(room, &revocation, unix) => {
                            forbidden("you were removed from this room".into())
                        }
                        Ok(()) => {
                            return Some(Admitted {
                                permissions: Permissions::from_grant(&access.grant),
                                name: access.name,
                                revocation: Some(revocation),
                            });
                        }
                    }
                }
            },
        };
        let (code, close, why) = refusal;
        self.kick(conn, code, close, why);
        None
    }

    /// Whether this token, or anyone with its identity, was removed from `room` and that
    /// removal has not expired.
    fn is_revoked(&mut self, room: &RoomName, r: &Revocation, unix: u64) -> bool {
        self.forget_expired_removals(room, unix);
        self.revoked.get(room).is_some_and(|removed| {
            removed.contains_key(&r.token) || removed.contains_key(&r.identity)
        })
    }

    /// Drops `room`'s removals whose tokens have expired.
    pub(super) fn forget_expired_removals(&mut self, room: &RoomName, unix: u64) {
        if let Some(removed) = self.revoked.get_mut(room) {
            removed.retain(|_, expires| expires.saturating_add(huddle_access::LEEWAY) >= unix);
            if removed.is_empty() {
                self.revoked.remove(room);
            }
        }
    }
}
