//! UDP the way TURN and the media peer need it at volume, shared by both and by the benchmarks:
//! batched receives and sends with GSO runs ([`batch`]), sends across many sockets in one
//! io_uring submission ([`ring`]), and an epoll set of one's own for sockets tokio does not own
//! ([`epoll`]).

pub mod batch;
pub mod epoll;
pub(crate) mod ring;
