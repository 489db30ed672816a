//! Huddle's server-side WebRTC peers on [str0m], sans-IO like it: no sockets, no threads, no
//! clock. An [`Engine`] holds every session behind one UDP port (a media worker's); the server
//! crate feeds it datagrams and time and runs the [`codec::Transcoder`]s on threads of their own.
//!
//! - echo (aiortc's `POST /offer`): tracks come back, video through a [`Transform`];
//! - WHIP publish / WHEP watch: members of a room of the SFU core (`huddle-sfu`), which
//!   decides where each published frame goes.

#[cfg(feature = "h264")]
pub mod codec;
mod dtls;
mod engine;
pub mod frame;
pub mod h264;
mod offer_request;
mod picture_id;
pub mod rtp_payload;
mod session;
mod timers;
pub mod transform;
pub mod vp8;

pub use engine::{
    AnswerError, CarriedTrack, Engine, EngineConfig, LocalAddr, MAX_MEDIA_SECTIONS, OfferError,
    Output, ReceiveError, TranscodeJob,
};
pub use huddle_sfu::SessionId;
pub use huddle_sfu::{MediaKind, TrackId, View};
pub use offer_request::{OfferRequest, OfferRequestError};
pub use session::{CloseReason, SessionKind};
pub use str0m::config::DtlsCert;
pub use str0m::format::Codec;
pub use str0m::media::MediaTime;
pub use str0m::net::Transmit;
pub use transform::{Transform, UnknownTransform};
