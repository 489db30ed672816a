//! Sans-IO STUN (RFC 8489) and TURN (RFC 8656) server core for Huddle.
//!
//! [`Server`] never touches a socket or a clock: every input carries `now`, randomness (nonce
//! secret, relay ports, Data indication ids) comes from the injected `R: RngCore`, and effects are
//! drained with [`Server::poll_output`]. The I/O layer runs it like this:
//!
//! ```
//! use std::time::Instant;
//! use huddle_turn_proto::{Config, FiveTuple, Output, RelayAddr, Server, Transport};
//! use rand::{SeedableRng, rngs::StdRng};
//!
//! let config = Config {
//!     relay_v4: Some(RelayAddr { bind: "127.0.0.1".parse().unwrap(), advertised: "127.0.0.1".parse().unwrap() }),
//!     ..Config::default()
//! };
//! let now = Instant::now();
//! let mut server = Server::new(config, StdRng::seed_from_u64(1), now, 1_700_000_000);
//! let from = FiveTuple { transport: Transport::Udp, client: "127.0.0.1:5000".parse().unwrap(), server: "127.0.0.1:3478".parse().unwrap() };
//! # let datagram: &[u8] = &[];
//! if let Some(relayed) = server.handle_client(from, datagram, now) {
//!     // send relayed.payload from the socket bound at relayed.relay to relayed.peer
//! }
//! while let Some(output) = server.poll_output() {
//!     match output {
//!         Output::ToClient { client, data } => { /* send to client */ }
//!         Output::BindRelay { client, addr, hold_next } => {
//!             // bind a UDP socket at addr (and hold one at the next port if asked), then:
//!             server.handle_relay_bound(client, Ok(addr), now);
//!         }
//!         Output::FreeRelay { relay } => { /* close that socket */ }
//!         Output::ReleaseHeld { addr } => { /* close the socket held there */ }
//!         Output::Allocation(event) => { /* a line in the operator's log */ }
//!     }
//! }
//! ```

pub mod auth;
pub mod channel_data;
mod client_key;
mod server;
pub mod stun;

pub use client_key::client_key;
pub use server::{
    AllocationEvent, BadRange, Config, EndReason, FiveTuple, IpRange, Output, PeerPolicy,
    RelayAddr, Relayed, Server, Stats, ToChannel, Transport,
};
