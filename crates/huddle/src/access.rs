//! The access-token keys, shared by `huddle serve` and `huddle token`: `--auth-key NAME:SECRET`
//! (repeatable; `auth-keys` in the config file) and `--auth-keys-file` (LiveKit's keys file,
//! `NAME: SECRET` lines).

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;
use huddle_access::Keys;
use serde::Deserialize;

#[derive(Args, Deserialize, Default, Clone)]
#[serde(default, rename_all = "kebab-case")]
pub struct AccessArgs {
    /// A key that signs access tokens, NAME:SECRET (LiveKit's API key and secret; the secret at
    /// least 32 characters); repeatable. With any key, joining, WHIP, WHEP and ICE servers need
    /// a token.
    #[arg(
        long = "auth-key",
        alias = "auth-keys",
        env = "HUDDLE_AUTH_KEYS",
        value_name = "NAME:SECRET",
        value_delimiter = ',',
        global = true
    )]
    #[serde(rename = "auth-keys", alias = "auth-key")]
    pub auth_key: Option<Vec<String>>,

    /// A file of `NAME: SECRET` lines (LiveKit's keys file), read at start.
    #[arg(
        long,
        env = "HUDDLE_AUTH_KEYS_FILE",
        value_name = "FILE",
        global = true
    )]
    pub auth_keys_file: Option<PathBuf>,
}

impl std::fmt::Debug for AccessArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Names only: the secrets stay out of any log or panic message.
        let names: Vec<&str> = self
            .auth_key
            .iter()
            .flatten()
            // Without a `:` the whole item may be a secret: show nothing of it.
            .map(|k| k.split_once(':').map_or("…", |(name, _)| name))
            .collect();
        f.debug_struct("AccessArgs")
            .field("auth_key", &names)
            .field("auth_keys_file", &self.auth_keys_file)
            .finish()
    }
}

impl AccessArgs {
    /// Fills what the command line left unset from a config file's keys.
    pub fn fill_from(&mut self, file: AccessArgs) {
        if self.auth_key.is_none() {
            self.auth_key = file.auth_key;
        }
        if self.auth_keys_file.is_none() {
            self.auth_keys_file = file.auth_keys_file;
        }
    }

    /// Only the access keys of a `huddle serve` config file (its other keys are not ours).
    pub fn from_config_file(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config file {}", path.display()))?;
        let table: toml::Table = toml::from_str(&text)
            .with_context(|| format!("invalid config file {}", path.display()))?;
        let ours: toml::Table = table
            .into_iter()
            .filter(|(k, _)| ["auth-keys", "auth-key", "auth-keys-file"].contains(&k.as_str()))
            .collect();
        ours.try_into()
            .with_context(|| format!("invalid access keys in {}", path.display()))
    }

    pub fn keys(&self) -> anyhow::Result<Keys> {
        let mut keys =
            Keys::parse_list(self.auth_key.as_deref().unwrap_or_default()).context("--auth-key")?;
        if let Some(path) = &self.auth_keys_file {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read keys file {}", path.display()))?;
            keys.add_file(&text)
                .with_context(|| format!("keys file {}", path.display()))?;
        }
        Ok(keys)
    }
}
