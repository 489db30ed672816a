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
        }
    }
}
