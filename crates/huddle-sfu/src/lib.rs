//! The SFU's forwarding decisions as a sans-IO core: no sockets, no clock, no WebRTC stack.
//!
//! The host (`huddle-media`'s engine, which owns the str0m peer connections) tells the core
//! who is in which room ([`Sfu::join`]), which tracks each session publishes
//! ([`Sfu::publish`]), and what arrives: every RTP packet ([`Sfu::route`]), each subscriber's
//! bandwidth estimate and the size at which its page shows each tile. The core answers, for
//! every packet, which subscribers get it and with which sequence number and RTP time
//! ([`Target`]: one continuous stream per subscriber across layer switches), and drains
//! [`Output`]s: subscriptions to add or remove, and which of them go out on the few lines of
//! each receiving connection (renegotiation when a line must be added), keyframe requests towards a
//! publisher, layers to pause or resume at the publisher (dynacast), the loudest speakers.
//!
//! Time comes in as `now` on each call; nothing here reads a clock.

mod allocate;
mod forward;
mod id_map;
mod lines;
mod sfu;
mod speakers;

pub use allocate::{LayerRates, View};
pub use id_map::{IdHasher, IdMap};
pub use lines::{AUDIO_LINES, VIDEO_LINES};
pub use sfu::{KEYFRAME_REQUEST_INTERVAL, MediaKind, Output, Packet, Sfu, Target, TrackInfo};
pub use speakers::MAX_FORWARDED_SPEAKERS;

/// A peer connection of the host: one browser (or WHIP/WHEP client) with the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionId(pub u64);

impl std::fmt::Display for SessionId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "s{}", self.0)
    }
}

/// Whose sessions these are: one participant may publish on one connection and receive on
/// another (or both on one); it never receives its own tracks. A WHIP or WHEP session is its
/// own owner.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Owner(pub u64);

/// A published track, unique for the life of an [`Sfu`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TrackId(pub u64);

impl std::fmt::Display for TrackId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "t{}", self.0)
    }
}

/// A track id as [`TrackId`]'s `Display` writes it (`t7`): what pages name tracks by.
impl std::str::FromStr for TrackId {
    type Err = std::num::ParseIntError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.strip_prefix('t').unwrap_or(s).parse().map(TrackId)
    }
}

/// A simulcast layer of a video track, 0 the smallest; a track without simulcast has layer 0
/// only. The host maps the publisher's RTP stream ids (`rid`) to these in the order the
/// publisher lists them, which browsers list from the smallest up.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Layer(pub u8);

/// Layers a track may have (browsers send at most three).
pub const MAX_LAYERS: usize = 4;

#[cfg(test)]
mod tests;
