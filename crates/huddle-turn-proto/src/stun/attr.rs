//! Attribute types and the codecs of the few attributes with structure (addresses, error codes).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use super::{MAGIC_COOKIE, TransactionId};

/// Attribute type numbers (RFC 8489 §18.3, RFC 8656 §18).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AttrType(pub u16);

impl AttrType {
    pub const MAPPED_ADDRESS: AttrType = AttrType(0x0001);
    pub const USERNAME: AttrType = AttrType(0x0006);
    pub const MESSAGE_INTEGRITY: AttrType = AttrType(0x0008);
    pub const ERROR_CODE: AttrType = AttrType(0x0009);
    pub const UNKNOWN_ATTRIBUTES: AttrType = AttrType(0x000A);
    pub const CHANNEL_NUMBER: AttrType = AttrType(0x000C);
    pub const LIFETIME: AttrType = AttrType(0x000D);
    pub const XOR_PEER_ADDRESS: AttrType = AttrType(0x0012);
    pub const DATA: AttrType = AttrType(0x0013);
    pub const REALM: AttrType = AttrType(0x0014);
    pub const NONCE: AttrType = AttrType(0x0015);
    pub const XOR_RELAYED_ADDRESS: AttrType = AttrType(0x0016);
    pub const REQUESTED_ADDRESS_FAMILY: AttrType = AttrType(0x0017);
    pub const EVEN_PORT: AttrType = AttrType(0x0018);
    pub const REQUESTED_TRANSPORT: AttrType = AttrType(0x0019);
    pub const DONT_FRAGMENT: AttrType = AttrType(0x001A);
    pub const MESSAGE_INTEGRITY_SHA256: AttrType = AttrType(0x001C);
    pub const PASSWORD_ALGORITHM: AttrType = AttrType(0x001D);
    pub const USERHASH: AttrType = AttrType(0x001E);
    pub const XOR_MAPPED_ADDRESS: AttrType = AttrType(0x0020);
    pub const RESERVATION_TOKEN: AttrType = AttrType(0x0022);
    pub const PASSWORD_ALGORITHMS: AttrType = AttrType(0x8002);
    pub const ALTERNATE_DOMAIN: AttrType = AttrType(0x8003);
    pub const SOFTWARE: AttrType = AttrType(0x8022);
    pub const ALTERNATE_SERVER: AttrType = AttrType(0x8023);
    pub const FINGERPRINT: AttrType = AttrType(0x8028);
    pub const ADDITIONAL_ADDRESS_FAMILY: AttrType = AttrType(0x8000);
    pub const ICE_CONTROLLED: AttrType = AttrType(0x8029);
    pub const ICE_CONTROLLING: AttrType = AttrType(0x802A);
    pub const PRIORITY: AttrType = AttrType(0x0024);
    pub const USE_CANDIDATE: AttrType = AttrType(0x0025);

    /// Attributes below 0x8000 must be understood or the request refused with 420 (RFC 8489 §14).
    pub fn comprehension_required(self) -> bool {
        self.0 < 0x8000
    }
}

/// A STUN error (RFC 8489 §14.8): the class/number and a reason phrase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ErrorCode {
    pub code: u16,
    pub reason: &'static str,
}

impl ErrorCode {
    pub const BAD_REQUEST: ErrorCode = ErrorCode::new(400, "Bad Request");
    pub const UNAUTHORIZED: ErrorCode = ErrorCode::new(401, "Unauthorized");
    pub const FORBIDDEN: ErrorCode = ErrorCode::new(403, "Forbidden");
    pub const UNKNOWN_ATTRIBUTE: ErrorCode = ErrorCode::new(420, "Unknown Attribute");
    pub const ALLOCATION_MISMATCH: ErrorCode = ErrorCode::new(437, "Allocation Mismatch");
    pub const STALE_NONCE: ErrorCode = ErrorCode::new(438, "Stale Nonce");
    pub const ADDRESS_FAMILY_NOT_SUPPORTED: ErrorCode =
        ErrorCode::new(440, "Address Family not Supported");
    pub const WRONG_CREDENTIALS: ErrorCode = ErrorCode::new(441, "Wrong Credentials");
    pub const UNSUPPORTED_TRANSPORT: ErrorCode =
        ErrorCode::new(442, "Unsupported Transport Protocol");
    pub const PEER_ADDRESS_FAMILY_MISMATCH: ErrorCode =
        ErrorCode::new(443, "Peer Address Family Mismatch");
    pub const ALLOCATION_QUOTA_REACHED: ErrorCode = ErrorCode::new(486, "Allocation Quota Reached");
    pub const SERVER_ERROR: ErrorCode = ErrorCode::new(500, "Server Error");
    pub const INSUFFICIENT_CAPACITY: ErrorCode = ErrorCode::new(508, "Insufficient Capacity");

    pub const fn new(code: u16, reason: &'static str) -> Self {
        Self { code, reason }
    }

    /// Decodes an ERROR-CODE value into its number (the reason is not kept).
    pub fn decode(value: &[u8]) -> Option<u16> {
        if value.len() < 4 {
            return None;
        }
        Some(u16::from(value[2] & 0x07) * 100 + u16::from(value[3]))
    }
}

/// Bytes an XOR address attribute value takes for `addr`.
pub fn xor_address_len(addr: &SocketAddr) -> usize {
    if addr.is_ipv4() { 8 } else { 20 }
}

/// Writes an XOR-*-ADDRESS value (RFC 8489 §14.2) into `out`, which is
/// [`xor_address_len`] bytes long.
pub(super) fn encode_xor_address(addr: &SocketAddr, txid: &TransactionId, out: &mut [u8]) {
    let cookie = MAGIC_COOKIE.to_be_bytes();
    out[0] = 0;
    let port = addr.port() ^ (MAGIC_COOKIE >> 16) as u16;
    out[2..4].copy_from_slice(&port.to_be_bytes());
    match addr.ip() {
        IpAddr::V4(ip) => {
            out[1] = 0x01;
            for (i, b) in ip.octets().iter().enumerate() {
                out[4 + i] = b ^ cookie[i];
            }
        }
        IpAddr::V6(ip) => {
            out[1] = 0x02;
            for (i, b) in ip.octets().iter().enumerate() {
                let key = if i < 4 { cookie[i] } else { txid[i - 4] };
                out[4 + i] = b ^ key;
            }
        }
    }
}

/// Reads an XOR-*-ADDRESS value; `None` if the family or length is wrong.
pub fn decode_xor_address(value: &[u8], txid: &TransactionId) -> Option<SocketAddr> {
    if value.len() < 4 {
        return None;
    }
    let cookie = MAGIC_COOKIE.to_be_bytes();
    let port = u16::from_be_bytes([value[2], value[3]]) ^ (MAGIC_COOKIE >> 16) as u16;
    match (value[1], value.len()) {
        (0x01, 8) => {
            let mut ip = [0u8; 4];
            for i in 0..4 {
                ip[i] = value[4 + i] ^ cookie[i];
            }
            Some(SocketAddr::new(Ipv4Addr::from(ip).into(), port))
        }
        (0x02, 20) => {
            let mut ip = [0u8; 16];
            for i in 0..16 {
                let key = if i < 4 { cookie[i] } else { txid[i - 4] };
                ip[i] = value[4 + i] ^ key;
            }
            Some(SocketAddr::new(Ipv6Addr::from(ip).into(), port))
        }
        _ => None,
    }
}
