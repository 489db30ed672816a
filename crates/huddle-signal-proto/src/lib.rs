//! Sans-IO rooms and signaling for Huddle.
//!
//! [`Rooms`] is the whole signaling state machine: connections, peers, rooms, routing, limits and
//! keepalive. It never touches a socket, never spawns, never reads the clock: every input carries
//! `now`, every effect is an [`Output`] the caller drains with [`Rooms::poll_output`], and the next
//! wake-up is [`Rooms::poll_timeout`]. Randomness (peer ids, resume tokens) comes from the injected
//! `R: RngCore`, so tests are deterministic.
//!
//! ```
//! use std::time::{Duration, Instant};
//! use huddle_signal_proto::{CloseKind, ConnId, Config, Output, Rooms};
//! use rand::{SeedableRng, rngs::StdRng};
//!
//! let now = Instant::now();
//! let unix_now = 1_800_000_000; // what tokens' expiry is read against
//! let mut rooms = Rooms::new(Config::default(), StdRng::seed_from_u64(7), now, unix_now);
//! rooms.handle_connect(ConnId(1), now);
//! rooms.handle_text(ConnId(1), r#"{"type":"join","v":1,"room":"demo","name":"Ada"}"#, now);
//! while let Some(out) = rooms.poll_output() {
//!     match out {
//!         Output::Send { conn, msg } => println!("to {conn:?}: {}", msg.to_json()),
//!         Output::Ping { conn } => println!("ping {conn:?}"),
//!         Output::Close { conn, code, reason } => println!("close {conn:?} {code} {reason}"),
//!         Output::Revoked { room, revocation } => println!("refuse {revocation:?} in {room}"),
//!         Output::Media(request) => println!("for the media peer: {request:?}"),
//!         Output::Place { room } | Output::Vacated { room } => println!("cluster: {room}"),
//!     }
//! }
//! // An I/O loop sleeps until `poll_timeout()` and then calls `handle_timeout(now)`.
//! let _wake_at = rooms.poll_timeout();
//! rooms.handle_close(ConnId(1), CloseKind::Clean, now + Duration::from_secs(1));
//! ```

pub mod home;
mod names;
mod rate;
mod rooms;
mod wire;

pub use names::{DisplayName, NameError, RoomName};
pub use rate::TokenBucket;
pub use rooms::{
    CloseKind, Config, ConnId, MediaRequest, Output, Placement, Revocation, Rooms, Stats,
    close_code,
};
pub use wire::{
    ClientMessage, DecodeError, ErrorCode, IceServer, LeaveReason, MediaState,
    OLDEST_PROTOCOL_VERSION, PROTOCOL_VERSION, PeerId, PeerInfo, Permissions, RoomMode, SdpKind,
    ServerMessage, SessionDescription, Source, TileView, TrackLabel, Welcome,
};
