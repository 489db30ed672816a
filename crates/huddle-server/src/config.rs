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
    /// The DNS name browsers reach this server by (`--public-host`): TURN-over-TLS URLs name
    /// it — Firefox ignores `turns:` at an IP literal — and a generated certificate covers it.
    pub public_host: Option<String>,
    /// How long shutdown waits for connections to close after clients were told.
    pub shutdown_grace: Duration,
    /// Huddle's own TURN server, and how clients are told about it.
    pub turn: Option<ServeTurn>,
    /// The server-side media peer (`/offer`, `/echo`, WHIP/WHEP).
    pub media: Option<crate::MediaConfig>,
    /// What one client may hold or ask for before it is cut off or refused.
    pub limits: Limits,
    /// One node of several sharing a Redis (`--redis`); `None`: this server is alone.
    pub cluster: Option<crate::ClusterConfig>,
}

/// Bounds on what one client can make the server hold, wait for or do. The defaults are nginx's
/// where nginx has one; a real call stays far below each.
#[derive(Debug, Clone)]
pub struct Limits {
    /// A new connection must send its first request head within this (hyper's header-read
    /// timeout on HTTP/1.1; on HTTP/2 the time to its first request).
    pub request_head: Duration,
    /// A connection with no request in progress is closed after this (nginx `keepalive_timeout`).
    pub idle: Duration,
    /// Open TCP connections to the HTTPS port from one IP address; more are closed at accept.
    pub connections_per_ip: usize,
    /// Open WebSockets from one client address (each is a participant: a family or an office
    /// behind one address has a few dozen); more upgrades get 429.
    pub websockets_per_ip: usize,
    /// A WebSocket frame that cannot be written within this ends the connection
    /// (nginx `send_timeout`).
    pub ws_write: Duration,
    /// `POST /offer`, WHIP, WHEP and `GET /api/ice-servers` per client IP: sustained per second,
    /// and at once. Beyond it: 429.
    pub api_per_second: u32,
    pub api_burst: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            request_head: Duration::from_secs(30),
            idle: Duration::from_secs(75),
            connections_per_ip: 256,
            websockets_per_ip: 64,
            ws_write: Duration::from_secs(60),
            api_per_second: 2,
            api_burst: 30,
        }
    }
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
            public_host: None,
            shutdown_grace: Duration::from_secs(3),
            turn: None,
            media: None,
            limits: Limits::default(),
            cluster: None,
        }
    }
}
