//! What `huddle serve` needs to run, already resolved from flags, config file and defaults.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use huddle_signal_proto::IceServer;

/// Where the HTTPS certificate comes from.
#[derive(Debug, Clone)]
pub enum TlsSource {
    /// Generate a self-signed certificate into this directory on first run, then reuse it.
    SelfSigned { dir: PathBuf },
    /// The operator's PEM files.
    Files { cert: PathBuf, key: PathBuf },
    /// Plain HTTP, for running behind a TLS-terminating reverse proxy (and for tests).
    Off,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub tls: TlsSource,
    pub rooms: huddle_signal_proto::Config,
    /// ICE servers handed to clients besides Huddle's own.
    pub ice_servers: Vec<IceServer>,
    /// How long shutdown waits for connections to close after clients were told.
    pub shutdown_grace: Duration,
    /// Huddle's own TURN server, and how clients are told about it.
    pub turn: Option<ServeTurn>,
    /// The server-side media peer (`/offer`, `/echo`, WHIP/WHEP).
    pub media: Option<crate::MediaConfig>,
}

/// TURN inside `huddle serve`: clients get short-lived REST credentials minted with `secret`.
#[derive(Clone)]
pub struct ServeTurn {
    /// Listeners and core settings. The certificate for TLS listeners is the HTTPS one.
    pub config: crate::TurnConfig,
    pub secret: Vec<u8>,
    pub credential_ttl: Duration,
    /// Also accept TURN over TLS on the HTTPS port, for networks that allow nothing but 443.
    pub on_https: bool,
}

impl std::fmt::Debug for ServeTurn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The secret stays out of logs.
        f.debug_struct("ServeTurn")
            .field("udp", &self.config.udp)
            .field("tcp", &self.config.tcp)
            .field("tls", &self.config.tls)
            .field("on_https", &self.on_https)
            .finish_non_exhaustive()
    }
}

impl Config {
    /// Defaults for a server on `listen` without TLS, as tests want it.
    pub fn plain(listen: SocketAddr) -> Self {
        Self {
            listen,
            tls: TlsSource::Off,
            rooms: huddle_signal_proto::Config::default(),
            ice_servers: Vec::new(),
            shutdown_grace: Duration::from_secs(3),
            turn: None,
            media: None,
        }
    }
}
