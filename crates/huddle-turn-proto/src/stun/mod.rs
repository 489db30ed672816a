//! The STUN message format (RFC 8489 §5–6, §14): header, attributes, integrity, fingerprint.
//!
//! [`Message::parse`] borrows the datagram and checks its whole structure once (header, every
//! attribute's bounds, where MESSAGE-INTEGRITY and FINGERPRINT sit) so that later lookups cannot
//! fail on framing. [`MessageWriter`] writes into a caller's buffer, reused across messages.

mod attr;
mod integrity;
mod reader;
mod writer;

pub use attr::{AttrType, ErrorCode, decode_xor_address, xor_address_len};
pub use integrity::{IntegrityAlg, fingerprint_of};
pub use reader::{Message, StunError};
pub use writer::MessageWriter;

/// The fixed value in every STUN header since RFC 5389.
pub const MAGIC_COOKIE: u32 = 0x2112_A442;
pub const HEADER_LEN: usize = 20;

pub type TransactionId = [u8; 12];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    Request,
    Indication,
    Success,
    Error,
}

/// A STUN method (12 bits).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Method(pub u16);

impl Method {
    pub const BINDING: Method = Method(0x001);
    pub const ALLOCATE: Method = Method(0x003);
    pub const REFRESH: Method = Method(0x004);
    pub const SEND: Method = Method(0x006);
    pub const DATA: Method = Method(0x007);
    pub const CREATE_PERMISSION: Method = Method(0x008);
    pub const CHANNEL_BIND: Method = Method(0x009);
}

/// Interleaves method and class bits into the 14-bit message type (RFC 8489 §5, figure 3).
pub fn message_type(class: Class, method: Method) -> u16 {
    let m = method.0;
    let (c0, c1) = match class {
        Class::Request => (0, 0),
        Class::Indication => (1, 0),
        Class::Success => (0, 1),
        Class::Error => (1, 1),
    };
    (m & 0x000F) | ((m & 0x0070) << 1) | ((m & 0x0F80) << 2) | (c0 << 4) | (c1 << 8)
}

pub fn split_type(t: u16) -> (Class, Method) {
    let method = (t & 0x000F) | ((t & 0x00E0) >> 1) | ((t & 0x3E00) >> 2);
    let class = match ((t >> 4) & 1, (t >> 8) & 1) {
        (0, 0) => Class::Request,
        (1, 0) => Class::Indication,
        (0, 1) => Class::Success,
        _ => Class::Error,
    };
    (class, Method(method))
}

/// Whether `buf` starts like a STUN message: the two top bits zero and the magic cookie in place.
/// A cheap test to demultiplex STUN from ChannelData and other protocols on one socket.
pub fn looks_like_stun(buf: &[u8]) -> bool {
    buf.len() >= HEADER_LEN && buf[0] & 0xC0 == 0 && buf[4..8] == MAGIC_COOKIE.to_be_bytes()
}

#[cfg(test)]
mod tests;
