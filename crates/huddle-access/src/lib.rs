//! Access tokens: who may join which room, and what they may do there. Sans-IO — the caller
//! passes the time (`now`, Unix seconds) and keeps the keys.
//!
//! Tokens are LiveKit's: a JWT signed with HS256 by a named key (`iss`), the participant's
//! identity in `sub`, its grants under `video` ([`VideoGrant`]). A token made by `lk token
//! create` or LiveKit's server SDKs works unchanged.
//!
//! ```
//! use huddle_access::{Claims, Keys, VideoGrant};
//! let keys = Keys::parse_list(&["main:a-secret-of-at-least-32-characters!"]).unwrap();
//! let claims = Claims::for_room("alice", "standup", 1_000, 3_600);
//! let token = keys.mint("main", &claims).unwrap();
//! let access = keys.verify(&token, "standup", 1_100).unwrap();
//! assert_eq!(access.identity, "alice");
//! assert!(access.grant.can_publish());
//! ```

mod claims;
mod jwt;
mod keys;
#[cfg(test)]
mod tests;

pub use claims::{Claims, Source, VideoGrant};
pub use jwt::{TokenError, unverified_payload};
pub use keys::{KeyError, Keys, MIN_SECRET};

/// A verified token: the participant it names and what it may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Access {
    /// `sub`: who this is, stable across their tokens.
    pub identity: String,
    /// `name`: how to show them, if the token says.
    pub name: Option<String>,
    pub metadata: Option<String>,
    pub grant: VideoGrant,
    /// When the token stops being valid (Unix seconds): a removal is remembered until then.
    pub expires: u64,
    /// What a removal refuses from then on: the token's `jti`, or its signature when it has none
    /// (LiveKit's SDKs send none).
    pub revocation_id: String,
    /// The key that signed it (`iss`).
    pub key: String,
}

/// Clock skew between the token's maker and us that `exp` and `nbf` allow, in seconds.
pub const LEEWAY: u64 = 60;

/// Tokens longer than this are refused before any decoding (a header can carry them, and a
/// LiveKit token is a few hundred bytes).
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;
