//! Compact JWS with HS256 (RFC 7515 / 7519): reading a token with a reason for every way it can
//! be wrong, and writing one. Nothing else of JOSE is accepted.

use base64::Engine;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};

use crate::claims::Claims;

/// base64url as JWTs use it: no padding written; padding tolerated when read.
const B64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::URL_SAFE,
    GeneralPurposeConfig::new()
        .with_encode_padding(false)
        .with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Why a token was refused. The messages name the problem and never repeat the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    #[error("the token is over {} KiB", crate::MAX_TOKEN_BYTES / 1024)]
    TooLong,
    #[error("the token is not a JWT (three dot-separated parts)")]
    Malformed,
    #[error("the token's {0} is not base64url")]
    BadBase64(&'static str),
    #[error("the token's {0} is not the JSON of a JWT")]
    BadJson(&'static str),
    #[error("unsigned tokens (alg none) are not accepted")]
    AlgNone,
    #[error("the token is signed with {0:?}; this server's keys sign HS256")]
    WrongAlgorithm(String),
    #[error("the token was signed by key {0:?}, which this server does not have")]
    UnknownKey(String),
    #[error("the token's signature does not match its key")]
    BadSignature,
    #[error("the token has no expiry (exp)")]
    NoExpiry,
    #[error("the token expired at {0} (Unix time)")]
    Expired(u64),
    #[error("the token is not valid before {0} (Unix time)")]
    NotYetValid(u64),
    #[error("the token names no identity (sub)")]
    NoIdentity,
    #[error("the token is for {}, not {wanted:?}", token.as_deref().map_or("no room".to_owned(), |r| format!("room {r:?}")))]
    WrongRoom {
        token: Option<String>,
        wanted: String,
    },
    #[error("the token does not grant joining the room (roomJoin)")]
    JoinNotAllowed,
    #[error("this token was removed from the room")]
    Revoked,
}

#[derive(serde::Deserialize)]
struct Header {
    alg: String,
}

/// A token whose form, algorithm and claims are readable; its signature not yet checked.
pub(crate) struct Unverified<'t> {
    pub(crate) claims: Claims,
    /// `header.payload`, what the signature covers.
    pub(crate) signed: &'t str,
    pub(crate) signature: Vec<u8>,
}

pub(crate) fn read(token: &str) -> Result<Unverified<'_>, TokenError> {
    if token.len() > crate::MAX_TOKEN_BYTES {
        return Err(TokenError::TooLong);
    }
    let mut parts = token.split('.');
    let (Some(header), Some(payload), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(TokenError::Malformed);
    };
    let header = B64
        .decode(header)
        .map_err(|_| TokenError::BadBase64("header"))?;
    let header: Header =
        serde_json::from_slice(&header).map_err(|_| TokenError::BadJson("header"))?;
    if header.alg.eq_ignore_ascii_case("none") {
        return Err(TokenError::AlgNone);
    }
    if header.alg != "HS256" {
        // Named in the message: kept short, it is the sender's text.
        return Err(TokenError::WrongAlgorithm(
            header.alg.chars().take(16).collect(),
        ));
    }
    let payload = B64
        .decode(payload)
        .map_err(|_| TokenError::BadBase64("payload"))?;
    let claims: Claims =
        serde_json::from_slice(&payload).map_err(|_| TokenError::BadJson("payload"))?;
    let signature = B64
        .decode(signature)
        .map_err(|_| TokenError::BadBase64("signature"))?;
    let signed_len = token.len() - token.rsplit('.').next().map_or(0, str::len) - 1;
    Ok(Unverified {
        claims,
        signed: &token[..signed_len],
        signature,
    })
}

/// A token's payload as JSON, unverified: for showing what a token says (`huddle token verify`),
/// never for deciding anything.
pub fn unverified_payload(token: &str) -> Option<serde_json::Value> {
    let payload = token.split('.').nth(1)?;
    serde_json::from_slice(&B64.decode(payload).ok()?).ok()
}

/// Whether `signature` is `secret`'s HMAC-SHA256 of `signed`, compared in constant time.
pub(crate) fn signature_matches(secret: &[u8], signed: &str, signature: &[u8]) -> bool {
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, secret);
    aws_lc_rs::hmac::verify(&key, signed.as_bytes(), signature).is_ok()
}

/// `claims` as a compact HS256 JWT signed with `secret`.
pub(crate) fn write(claims: &Claims, secret: &[u8]) -> String {
    let header = B64.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    // Claims are plain data: serializing them cannot fail.
    let payload = B64.encode(serde_json::to_vec(claims).unwrap_or_default());
    let signed = format!("{header}.{payload}");
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, secret);
    let tag = aws_lc_rs::hmac::sign(&key, signed.as_bytes());
    format!("{signed}.{}", B64.encode(tag.as_ref()))
}

/// base64url, for the tests' hand-made tokens.
#[cfg(test)]
pub(crate) fn encode(bytes: &[u8]) -> String {
    B64.encode(bytes)
}
