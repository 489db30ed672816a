//! The named secrets tokens are signed with (LiveKit's API key and secret).

use std::collections::HashMap;

use crate::claims::Claims;
use crate::jwt::{self, TokenError};
use crate::{Access, LEEWAY};

/// Shortest secret accepted, as LiveKit's server requires.
pub const MIN_SECRET: usize = 32;

/// Keys by name. Never printed with their secrets.
#[derive(Clone, Default)]
pub struct Keys {
    secrets: HashMap<String, Vec<u8>>,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut names: Vec<&String> = self.secrets.keys().collect();
        names.sort();
        f.debug_struct("Keys").field("names", &names).finish()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    #[error("a key is not NAME:SECRET")]
    NoSeparator,
    #[error("a key needs a name")]
    EmptyName,
    #[error("the secret of key {0:?} is shorter than {MIN_SECRET} characters")]
    ShortSecret(String),
    #[error("key {0:?} is given twice")]
    Duplicate(String),
    #[error("line {line}: {error}")]
    Line { line: usize, error: Box<KeyError> },
    #[error("no key named {0:?}")]
    Unknown(String),
}

impl Keys {
    pub fn is_empty(&self) -> bool {
        self.secrets.is_empty()
    }

    /// Key names, sorted.
    pub fn names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.secrets.keys().map(String::as_str).collect();
        names.sort_unstable();
        names
    }

    /// Keys from `NAME:SECRET` items (`--auth-key`, the config's `auth-keys`).
    pub fn parse_list<S: AsRef<str>>(items: &[S]) -> Result<Self, KeyError> {
        let mut keys = Self::default();
        for item in items {
            let item = item.as_ref();
            let (name, secret) = item.split_once(':').ok_or(KeyError::NoSeparator)?;
            keys.add(name.trim(), secret.trim())?;
        }
        Ok(keys)
    }

    /// Adds the keys of a file of `NAME: SECRET` lines (LiveKit's keys file, YAML): a line
    /// starting with `#`, or ` #` after a value, starts a comment (a `#` inside a secret does
    /// not); blank lines are skipped.
    pub fn add_file(&mut self, text: &str) -> Result<(), KeyError> {
        for (i, line) in text.lines().enumerate() {
            let line = line.trim_start();
            let line = if line.starts_with('#') {
                ""
            } else {
                line.split(" #").next().unwrap_or("").trim()
            };
            if line.is_empty() {
                continue;
            }
            let at = |error| KeyError::Line {
                line: i + 1,
                error: Box::new(error),
            };
            let (name, secret) = line
                .split_once(':')
                .ok_or_else(|| at(KeyError::NoSeparator))?;
            self.add(name.trim(), secret.trim()).map_err(at)?;
        }
        Ok(())
    }

    fn add(&mut self, name: &str, secret: &str) -> Result<(), KeyError> {
        if name.is_empty() {
            return Err(KeyError::EmptyName);
        }
        if secret.chars().count() < MIN_SECRET {
            return Err(KeyError::ShortSecret(name.to_owned()));
        }
        if self.secrets.contains_key(name) {
            return Err(KeyError::Duplicate(name.to_owned()));
        }
        self.secrets
            .insert(name.to_owned(), secret.as_bytes().to_vec());
        Ok(())
    }

    /// `claims` signed by key `name` (its `iss` set to the name).
    pub fn mint(&self, name: &str, claims: &Claims) -> Result<String, KeyError> {
        let secret = self
            .secrets
            .get(name)
            .ok_or_else(|| KeyError::Unknown(name.to_owned()))?;
        let claims = Claims {
            iss: name.to_owned(),
            ..claims.clone()
        };
        Ok(jwt::write(&claims, secret))
    }

    /// A token signed by one of these keys and valid at `now` (Unix seconds, with
    /// [`LEEWAY`]), for any room: what endpoints need that are not a room's (ICE servers).
    pub fn decode(&self, token: &str, now: u64) -> Result<Access, TokenError> {
        let t = jwt::read(token)?;
        let secret = self
            .secrets
            .get(&t.claims.iss)
            // Named in the message: kept short, it is the sender's text.
            .ok_or_else(|| TokenError::UnknownKey(t.claims.iss.chars().take(64).collect()))?;
        if !jwt::signature_matches(secret, t.signed, &t.signature) {
            return Err(TokenError::BadSignature);
        }
        let claims = t.claims;
        let expires = claims.exp.ok_or(TokenError::NoExpiry)?;
        if now > expires.saturating_add(LEEWAY) {
            return Err(TokenError::Expired(expires));
        }
        if let Some(nbf) = claims.nbf
            && now.saturating_add(LEEWAY) < nbf
        {
            return Err(TokenError::NotYetValid(nbf));
        }
        if claims.sub.is_empty() {
            return Err(TokenError::NoIdentity);
        }
        let revocation_id = claims
            .jti
            .clone()
            .unwrap_or_else(|| jwt_signature_id(&t.signature));
        Ok(Access {
            identity: claims.sub,
            name: claims.name.filter(|n| !n.is_empty()),
            metadata: claims.metadata,
            grant: claims.video,
            expires,
            revocation_id,
            key: claims.iss,
        })
    }

    /// [`Keys::decode`], then: the token is for `room` and grants joining it.
    pub fn verify(&self, token: &str, room: &str, now: u64) -> Result<Access, TokenError> {
        let access = self.decode(token, now)?;
        access.admit(room)?;
        Ok(access)
    }
}

impl Access {
    /// `KEY:identity`: who holds the token, in the namespace of the key that vouches for them.
    pub fn holder(&self) -> String {
        format!("{}:{}", self.key, self.identity)
    }

    /// Whether this token lets its holder into `room`. Room names compare without regard to
    /// ASCII case, as rooms are named (`Standup` and `standup` are one room).
    pub fn admit(&self, room: &str) -> Result<(), TokenError> {
        let same = |r: &str| r.eq_ignore_ascii_case(room);
        if !self.grant.room.as_deref().is_some_and(same) {
            return Err(TokenError::WrongRoom {
                token: self.grant.room.clone(),
                wanted: room.to_owned(),
            });
        }
        if !self.grant.can_join() {
            return Err(TokenError::JoinNotAllowed);
        }
        Ok(())
    }
}

/// A short stable name for a token without `jti`: its signature's first bytes, hex.
fn jwt_signature_id(signature: &[u8]) -> String {
    signature
        .iter()
        .take(16)
        .map(|b| format!("{b:02x}"))
        .collect()
}
