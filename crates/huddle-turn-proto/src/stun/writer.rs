//! Writing a message into a caller-owned buffer, attribute by attribute.

use std::net::SocketAddr;

use super::attr::{AttrType, ErrorCode, encode_xor_address, xor_address_len};
use super::integrity::{self, IntegrityAlg};
use super::{Class, HEADER_LEN, MAGIC_COOKIE, Method, TransactionId, message_type};

/// Appends one STUN message to a `Vec<u8>`. The header's length is kept current after every
/// attribute, so integrity and fingerprint can be computed at any point.
pub struct MessageWriter<'b> {
    buf: &'b mut Vec<u8>,
    start: usize,
    txid: TransactionId,
}

impl<'b> MessageWriter<'b> {
    pub fn new(buf: &'b mut Vec<u8>, class: Class, method: Method, txid: TransactionId) -> Self {
        let start = buf.len();
        buf.extend_from_slice(&message_type(class, method).to_be_bytes());
        buf.extend_from_slice(&[0, 0]);
        buf.extend_from_slice(&MAGIC_COOKIE.to_be_bytes());
        buf.extend_from_slice(&txid);
        Self { buf, start, txid }
    }

    /// Appends an attribute whose value `fill` writes into a zeroed slice of `len` bytes.
    fn attr_with(&mut self, ty: AttrType, len: usize, fill: impl FnOnce(&mut [u8])) -> &mut Self {
        debug_assert!(len <= usize::from(u16::MAX));
        self.buf.extend_from_slice(&ty.0.to_be_bytes());
        self.buf.extend_from_slice(&(len as u16).to_be_bytes());
        let at = self.buf.len();
        self.buf.resize(at + len.div_ceil(4) * 4, 0);
        fill(&mut self.buf[at..at + len]);
        self.sync_length();
        self
    }

    pub fn attr(&mut self, ty: AttrType, value: &[u8]) -> &mut Self {
        self.attr_with(ty, value.len(), |out| out.copy_from_slice(value))
    }

    pub fn u32(&mut self, ty: AttrType, value: u32) -> &mut Self {
        self.attr(ty, &value.to_be_bytes())
    }

    pub fn xor_address(&mut self, ty: AttrType, addr: SocketAddr) -> &mut Self {
        let txid = self.txid;
        self.attr_with(ty, xor_address_len(&addr), |out| {
            encode_xor_address(&addr, &txid, out)
        })
    }

    pub fn error_code(&mut self, error: ErrorCode) -> &mut Self {
        let reason = error.reason.as_bytes();
        self.attr_with(AttrType::ERROR_CODE, 4 + reason.len(), |out| {
            out[2] = (error.code / 100) as u8;
            out[3] = (error.code % 100) as u8;
            out[4..].copy_from_slice(reason);
        })
    }

    pub fn unknown_attributes(&mut self, types: &[AttrType]) -> &mut Self {
        self.attr_with(AttrType::UNKNOWN_ATTRIBUTES, types.len() * 2, |out| {
            for (i, t) in types.iter().enumerate() {
                out[i * 2..i * 2 + 2].copy_from_slice(&t.0.to_be_bytes());
            }
        })
    }

    /// Appends MESSAGE-INTEGRITY or MESSAGE-INTEGRITY-SHA256 computed with `key`.
    pub fn integrity(&mut self, alg: IntegrityAlg, key: &[u8]) -> &mut Self {
        let msg = &self.buf[self.start..];
        let tag = integrity::compute(alg, key, msg, msg.len());
        let ty = match alg {
            IntegrityAlg::Sha1 => AttrType::MESSAGE_INTEGRITY,
            IntegrityAlg::Sha256 => AttrType::MESSAGE_INTEGRITY_SHA256,
        };
        self.attr(ty, tag.as_ref())
    }

    /// Appends FINGERPRINT; nothing may follow it.
    pub fn fingerprint(&mut self) -> &mut Self {
        let msg = &self.buf[self.start..];
        let crc = integrity::fingerprint_of(msg, msg.len());
        self.u32(AttrType::FINGERPRINT, crc)
    }

    fn sync_length(&mut self) {
        let len = (self.buf.len() - self.start - HEADER_LEN) as u16;
        self.buf[self.start + 2..self.start + 4].copy_from_slice(&len.to_be_bytes());
    }
}
