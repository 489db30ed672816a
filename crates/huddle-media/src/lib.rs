//! Huddle's server-side WebRTC peers on [str0m], sans-IO like it: no sockets, no threads, no
//! clock. [`Engine`] holds every session behind one UDP port; the server crate feeds it
//! datagrams and time and runs the [`codec::Transcoder`]s on worker threads.
//!
//! - echo (aiortc's `POST /offer`): tracks come back, video through a [`Transform`];
//! - WHIP publish / WHEP watch: a room's tracks feed every watcher through the [`relay`].

#[cfg(feature = "h264")]
pub mod codec;
mod dtls;
mod engine;
pub mod frame;
mod offer_request;
pub mod relay;
mod session;
mod timers;
pub mod transform;

pub use engine::{
    Engine, EngineConfig, LocalAddr, MAX_MEDIA_SECTIONS, OfferError, Output, ReceiveError,
    TranscodeJob,
};
pub use offer_request::{OfferRequest, OfferRequestError};
pub use session::{CloseReason, SessionId, SessionKind};
pub use str0m::config::DtlsCert;
pub use str0m::media::MediaTime;
pub use str0m::net::Transmit;
pub use transform::{Transform, UnknownTransform};
