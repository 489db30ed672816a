//! Parsing: one pass that validates the whole structure, then cheap lookups.

use super::attr::{AttrType, decode_xor_address};
use super::integrity::{self, IntegrityAlg};
use super::{Class, HEADER_LEN, MAGIC_COOKIE, Method, TransactionId, split_type};
use std::net::SocketAddr;

/// Why bytes are not a well-formed STUN message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StunError {
    #[error("shorter than a STUN header")]
    TooShort,
    #[error("not a STUN message (leading bits or magic cookie)")]
    NotStun,
    #[error("header length {declared} does not match the {actual} bytes that follow")]
    LengthMismatch { declared: usize, actual: usize },
    #[error("attribute at offset {0} runs past the end of the message")]
    TruncatedAttribute(usize),
    #[error("FINGERPRINT is not the last attribute")]
    FingerprintNotLast,
    #[error("FINGERPRINT does not match the message")]
    BadFingerprint,
    #[error("malformed {0:?} attribute")]
    BadAttribute(AttrType),
}

/// A parsed STUN message borrowing its datagram.
#[derive(Debug, Clone, Copy)]
pub struct Message<'a> {
    buf: &'a [u8],
    class: Class,
    method: Method,
    /// Where MESSAGE-INTEGRITY / -SHA256 start, if present: attributes after the first of them are
    /// not covered by it and are ignored (but for each other and FINGERPRINT).
    integrity: Option<usize>,
    integrity_sha256: Option<usize>,
    /// End of the attributes that count: the first integrity attribute, FINGERPRINT or the end.
    covered_end: usize,
}

impl<'a> Message<'a> {
    /// Parses and checks the structure of a whole message; the buffer must hold exactly one.
    pub fn parse(buf: &'a [u8]) -> Result<Self, StunError> {
        if buf.len() < HEADER_LEN {
            return Err(StunError::TooShort);
        }
        if buf[0] & 0xC0 != 0 || buf[4..8] != MAGIC_COOKIE.to_be_bytes() {
            return Err(StunError::NotStun);
        }
        let declared = usize::from(u16::from_be_bytes([buf[2], buf[3]]));
        let actual = buf.len() - HEADER_LEN;
        if declared != actual || declared % 4 != 0 {
            return Err(StunError::LengthMismatch { declared, actual });
        }
        let (class, method) = split_type(u16::from_be_bytes([buf[0], buf[1]]) & 0x3FFF);
        let mut msg = Message {
            buf,
            class,
            method,
            integrity: None,
            integrity_sha256: None,
            covered_end: buf.len(),
        };
        let mut offset = HEADER_LEN;
        while offset < buf.len() {
            let (ty, len) =
                attr_header(buf, offset).ok_or(StunError::TruncatedAttribute(offset))?;
            let next = offset + 4 + len.div_ceil(4) * 4;
            if next > buf.len() {
                return Err(StunError::TruncatedAttribute(offset));
            }
            match ty {
                AttrType::MESSAGE_INTEGRITY if msg.integrity.is_none() => {
                    if len != 20 {
                        return Err(StunError::BadAttribute(ty));
                    }
                    msg.integrity = Some(offset);
                    msg.covered_end = msg.covered_end.min(offset);
                }
                AttrType::MESSAGE_INTEGRITY_SHA256 if msg.integrity_sha256.is_none() => {
                    // RFC 8489 §14.6: 16 to 32 bytes, a multiple of 4 (truncation allowed).
                    if !(16..=32).contains(&len) || len % 4 != 0 {
                        return Err(StunError::BadAttribute(ty));
                    }
                    msg.integrity_sha256 = Some(offset);
                    msg.covered_end = msg.covered_end.min(offset);
                }
                AttrType::FINGERPRINT => {
                    if next != buf.len() {
                        return Err(StunError::FingerprintNotLast);
                    }
                    if len != 4 {
                        return Err(StunError::BadAttribute(ty));
                    }
                    let value = u32::from_be_bytes([
                        buf[offset + 4],
                        buf[offset + 5],
                        buf[offset + 6],
                        buf[offset + 7],
                    ]);
                    if value != integrity::fingerprint_of(buf, offset) {
                        return Err(StunError::BadFingerprint);
                    }
                    msg.covered_end = msg.covered_end.min(offset);
                }
                _ => {}
            }
            offset = next;
        }
        Ok(msg)
    }

    pub fn class(&self) -> Class {
        self.class
    }

    pub fn method(&self) -> Method {
        self.method
    }

    pub fn transaction_id(&self) -> TransactionId {
        let mut id = [0u8; 12];
        id.copy_from_slice(&self.buf[8..20]);
        id
    }

    pub fn as_bytes(&self) -> &'a [u8] {
        self.buf
    }

    /// The attributes that count (those before any integrity attribute or FINGERPRINT).
    pub fn attributes(&self) -> impl Iterator<Item = (AttrType, &'a [u8])> + 'a {
        let (buf, end) = (self.buf, self.covered_end);
        let mut offset = HEADER_LEN;
        std::iter::from_fn(move || {
            if offset >= end {
                return None;
            }
            // `parse` checked every header and bound.
            let (ty, len) = attr_header(buf, offset)?;
            let value = &buf[offset + 4..offset + 4 + len];
            offset += 4 + len.div_ceil(4) * 4;
            Some((ty, value))
        })
    }

    /// The value of the first attribute of type `ty` that counts.
    pub fn get(&self, ty: AttrType) -> Option<&'a [u8]> {
        self.attributes().find(|(t, _)| *t == ty).map(|(_, v)| v)
    }

    pub fn get_xor_address(&self, ty: AttrType) -> Result<Option<SocketAddr>, StunError> {
        match self.get(ty) {
            None => Ok(None),
            Some(v) => decode_xor_address(v, &self.transaction_id())
                .map(Some)
                .ok_or(StunError::BadAttribute(ty)),
        }
    }

    pub fn get_u32(&self, ty: AttrType) -> Result<Option<u32>, StunError> {
        match self.get(ty) {
            None => Ok(None),
            Some(v) if v.len() == 4 => Ok(Some(u32::from_be_bytes([v[0], v[1], v[2], v[3]]))),
            Some(_) => Err(StunError::BadAttribute(ty)),
        }
    }

    pub fn get_str(&self, ty: AttrType) -> Result<Option<&'a str>, StunError> {
        match self.get(ty) {
            None => Ok(None),
            Some(v) => std::str::from_utf8(v)
                .map(Some)
                .map_err(|_| StunError::BadAttribute(ty)),
        }
    }

    /// The strongest integrity attribute present: SHA-256 wins over SHA-1 (RFC 8489 §9.2.4).
    pub fn integrity_alg(&self) -> Option<IntegrityAlg> {
        match (self.integrity_sha256, self.integrity) {
            (Some(_), _) => Some(IntegrityAlg::Sha256),
            (None, Some(_)) => Some(IntegrityAlg::Sha1),
            (None, None) => None,
        }
    }

    /// Checks the message's integrity attribute with `key`.
    pub fn verify_integrity(&self, key: &[u8]) -> bool {
        let (alg, offset) = match (self.integrity_sha256, self.integrity) {
            (Some(o), _) => (IntegrityAlg::Sha256, o),
            (None, Some(o)) => (IntegrityAlg::Sha1, o),
            (None, None) => return false,
        };
        let len = usize::from(u16::from_be_bytes([
            self.buf[offset + 2],
            self.buf[offset + 3],
        ]));
        let got = &self.buf[offset + 4..offset + 4 + len];
        // A truncated SHA-256 tag (16..32 bytes) is compared on its prefix.
        let expected = integrity::compute_with_len(alg, key, self.buf, offset, len);
        aws_lc_rs::constant_time::verify_slices_are_equal(&expected.as_ref()[..len], got).is_ok()
    }
}

fn attr_header(buf: &[u8], offset: usize) -> Option<(AttrType, usize)> {
    let h = buf.get(offset..offset + 4)?;
    Some((
        AttrType(u16::from_be_bytes([h[0], h[1]])),
        usize::from(u16::from_be_bytes([h[2], h[3]])),
    ))
}
