//! MESSAGE-INTEGRITY (HMAC-SHA1), MESSAGE-INTEGRITY-SHA256 and FINGERPRINT (RFC 8489 §14.5–14.7).
//!
//! Both HMACs cover the message up to the attribute before them, with the header's length field
//! rewritten to end just after the integrity attribute itself; we feed the rewritten header and the
//! body to the HMAC separately instead of copying the message.

use aws_lc_rs::hmac;

use super::HEADER_LEN;

/// XORed into the CRC-32 so a FINGERPRINT never matches what another protocol would carry.
const FINGERPRINT_XOR: u32 = 0x5354_554E;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IntegrityAlg {
    Sha1,
    Sha256,
}

impl IntegrityAlg {
    /// The tag's length in bytes.
    pub fn tag_len(self) -> usize {
        match self {
            Self::Sha1 => 20,
            Self::Sha256 => 32,
        }
    }

    fn hmac(self) -> hmac::Algorithm {
        match self {
            Self::Sha1 => hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY,
            Self::Sha256 => hmac::HMAC_SHA256,
        }
    }
}

/// HMAC of `msg[..end]` (`end` = where the integrity attribute starts) with the length field set
/// to cover that attribute.
pub(super) fn compute(alg: IntegrityAlg, key: &[u8], msg: &[u8], end: usize) -> hmac::Tag {
    compute_with_len(alg, key, msg, end, alg.tag_len())
}

/// As [`compute`], for an attribute whose value is `value_len` bytes (a truncated SHA-256 tag).
pub(super) fn compute_with_len(
    alg: IntegrityAlg,
    key: &[u8],
    msg: &[u8],
    end: usize,
    value_len: usize,
) -> hmac::Tag {
    let key = hmac::Key::new(alg.hmac(), key);
    let mut ctx = hmac::Context::with_key(&key);
    let length = (end - HEADER_LEN + 4 + value_len) as u16;
    ctx.update(&msg[..2]);
    ctx.update(&length.to_be_bytes());
    ctx.update(&msg[4..end]);
    ctx.sign()
}

/// FINGERPRINT value for `msg[..end]`, with the length field covering the 8-byte attribute.
pub fn fingerprint_of(msg: &[u8], end: usize) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    let length = (end - HEADER_LEN + 8) as u16;
    hasher.update(&msg[..2]);
    hasher.update(&length.to_be_bytes());
    hasher.update(&msg[4..end]);
    hasher.finalize() ^ FINGERPRINT_XOR
}
