//! What admins removed from rooms, as the room core decided it (`Output::Revoked`): the HTTP
//! endpoints that take tokens refuse the same tokens and identities.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use huddle_access::{Access, LEEWAY};
use huddle_signal_proto::Revocation;

/// Room → (token revocation id or `KEY:identity`) → expiry (Unix seconds).
#[derive(Clone, Default)]
pub struct Revocations(Arc<Mutex<HashMap<String, HashMap<String, u64>>>>);

impl Revocations {
    pub fn add(&self, room: &str, r: &Revocation, now: u64) {
        let mut rooms = self.0.lock().unwrap_or_else(|e| e.into_inner());
        // Forget what has expired everywhere: removals are rare, rooms few.
        rooms.retain(|_, removed| {
            removed.retain(|_, expires| expires.saturating_add(LEEWAY) >= now);
            !removed.is_empty()
        });
        let removed = rooms.entry(room.to_owned()).or_default();
        removed.insert(r.token.clone(), r.expires);
        removed.insert(r.identity.clone(), r.expires);
    }

    /// Whether `access` (its token, or its identity) was removed from `room`.
    pub fn refuses(&self, room: &str, access: &Access, now: u64) -> bool {
        let rooms = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let Some(removed) = rooms.get(room) else {
            return false;
        };
        let holder = access.holder();
        [access.revocation_id.as_str(), holder.as_str()]
            .iter()
            .any(|k| {
                removed
                    .get(*k)
                    .is_some_and(|e| e.saturating_add(LEEWAY) >= now)
            })
    }
}
