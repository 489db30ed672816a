//! `huddle serve`: flags and config file → [`huddle_server::Config`] → run.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use huddle_server::{Config, ServeTurn, Server, TlsSource, TurnConfig};
use rand::RngCore;
use serde::Deserialize;

use crate::LogFormat;
use crate::access::AccessArgs;
use crate::relay::{RelayArgs, ips_of};

/// Every option is a flag, an environment variable and a key of the `--config` file (TOML, the
/// flags' long names as keys). A flag beats the file; the file beats the default.
#[derive(Args, Deserialize, Default)]
#[serde(default, rename_all = "kebab-case")]
pub struct ServeArgs {
    /// TOML file with any of these options, e.g. `listen = "0.0.0.0:443"`.
    #[arg(short, long, env = "HUDDLE_CONFIG")]
    #[serde(skip)]
    config: Option<PathBuf>,

    /// Address and port for HTTPS, WebSocket signaling and the web client [default: 0.0.0.0:8443].
    #[arg(long, env = "HUDDLE_LISTEN", value_name = "ADDR:PORT")]
    listen: Option<SocketAddr>,

    /// Where the generated certificate is kept [default: the user's data dir, e.g. ~/.local/share/huddle].
    #[arg(long, env = "HUDDLE_DATA_DIR", value_name = "DIR")]
    data_dir: Option<PathBuf>,

    /// PEM certificate chain to serve instead of the self-signed one (needs --tls-key).
    #[arg(
        long,
        env = "HUDDLE_TLS_CERT",
        value_name = "FILE",
        requires = "tls_key"
    )]
    tls_cert: Option<PathBuf>,

    /// PEM private key for --tls-cert.
    #[arg(
        long,
        env = "HUDDLE_TLS_KEY",
        value_name = "FILE",
        requires = "tls_cert"
    )]
    tls_key: Option<PathBuf>,

    /// Serve plain HTTP, for use behind a TLS-terminating reverse proxy. Browsers allow camera
    /// and microphone only in a secure context: https, or http://localhost.
    #[arg(long, env = "HUDDLE_NO_TLS", num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    no_tls: Option<bool>,

    /// Participants per mesh room [default: 6]. SFU rooms take 100.
    #[arg(long, env = "HUDDLE_ROOM_CAPACITY", value_name = "N")]
    room_capacity: Option<usize>,

    /// How a new room's media flows when its first page does not say (`?mode=` on a room
    /// link): `mesh`, every browser to every other (up to the room capacity); `sfu`, through
    /// the server's media peer (up to 100); `auto`, peer-to-peer while two are in the room and
    /// through the server from three [default: auto; mesh with --no-media].
    #[arg(long, env = "HUDDLE_ROOM_MODE", value_name = "MODE", value_parser = ["mesh", "sfu", "auto"])]
    room_mode: Option<String>,

    /// Messages per second a client may sustain before it is closed for flooding; bursts of
    /// four seconds' worth pass [default: 50].
    #[arg(long, env = "HUDDLE_MESSAGE_RATE", value_name = "N")]
    message_rate: Option<u32>,

    /// An extra STUN/TURN URL handed to clients (repeatable), e.g. stun:stun.example.org:3478.
    #[arg(
        long = "ice-server",
        env = "HUDDLE_ICE_SERVERS",
        value_name = "URL",
        value_delimiter = ','
    )]
    ice_server: Option<Vec<String>>,

    /// Run no TURN server (clients then connect only where direct paths exist).
    #[arg(long, env = "HUDDLE_NO_TURN", num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    no_turn: Option<bool>,

    /// UDP and TCP address of the built-in TURN server [default: 0.0.0.0:3478].
    #[arg(long, env = "HUDDLE_TURN_LISTEN", value_name = "ADDR:PORT")]
    turn_listen: Option<SocketAddr>,

    /// Also serve TURN over TLS here (e.g. 0.0.0.0:5349), with the HTTPS certificate. TURN over
    /// TLS is always offered on the HTTPS port itself.
    #[arg(long, env = "HUDDLE_TURN_TLS_LISTEN", value_name = "ADDR:PORT")]
    turn_tls_listen: Option<SocketAddr>,

    /// How long the TURN credentials handed to a client stay valid, in seconds [default: 43200].
    #[arg(long, env = "HUDDLE_TURN_CREDENTIAL_TTL", value_name = "SECONDS")]
    turn_credential_ttl: Option<u64>,

    /// Run no server-side media peer (no /offer, /echo, WHIP or WHEP).
    #[arg(long, env = "HUDDLE_NO_MEDIA", num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    no_media: Option<bool>,

    /// UDP address of the first media worker; the others take the ports after it (with two
    /// workers, 8443 and 8444). An unspecified IP binds each interface address
    /// [default: 0.0.0.0 and the HTTPS port, e.g. 0.0.0.0:8443].
    #[arg(long, env = "HUDDLE_MEDIA_LISTEN", value_name = "ADDR:PORT")]
    media_listen: Option<SocketAddr>,

    /// Media worker threads, each with a UDP port of its own; a room lives on one
    /// [default: one per core].
    #[arg(long, env = "HUDDLE_MEDIA_WORKERS", value_name = "N")]
    media_workers: Option<usize>,

    /// The public IP of a host behind 1:1 NAT (a cloud VM), put in the media peer's candidates.
    #[arg(long, env = "HUDDLE_PUBLIC_IP", value_name = "IP")]
    public_ip: Option<IpAddr>,

    /// The DNS name browsers reach this server by: the TURN-over-TLS URLs handed to clients name
    /// it (Firefox ignores `turns:` at an IP address) and the generated certificate covers it.
    #[arg(long, env = "HUDDLE_PUBLIC_HOST", value_name = "NAME")]
    public_host: Option<String>,

    /// Require `Authorization: Bearer TOKEN` for WHIP and WHEP.
    #[arg(long, env = "HUDDLE_WHIP_TOKEN", value_name = "TOKEN")]
    whip_token: Option<String>,

    /// Media sessions at once; more are refused with 503 [default: 1000].
    #[arg(long, env = "HUDDLE_MEDIA_MAX_SESSIONS", value_name = "N")]
    media_max_sessions: Option<usize>,

    /// Media sessions one client address may hold; more are refused with 429 [default: 32].
    #[arg(long, env = "HUDDLE_MEDIA_SESSIONS_PER_CLIENT", value_name = "N")]
    media_sessions_per_client: Option<usize>,

    /// Open connections to the HTTPS port from one IP address; more are closed at once
    /// [default: 256].
    #[arg(long, env = "HUDDLE_CONNECTIONS_PER_IP", value_name = "N")]
    connections_per_ip: Option<usize>,

    /// Open WebSockets (participants) from one client address; more are refused with 429
    /// [default: 64].
    #[arg(long, env = "HUDDLE_WEBSOCKETS_PER_IP", value_name = "N")]
    websockets_per_ip: Option<usize>,

    /// Redis shared by the nodes of a cluster, e.g. redis://:password@10.0.0.5:6379 (or
    /// rediss:// for TLS). Without it this server runs alone.
    #[arg(long, env = "HUDDLE_REDIS", value_name = "URL")]
    redis: Option<String>,

    /// This node's id in the cluster [default: generated once and kept in the data dir].
    #[arg(long, env = "HUDDLE_NODE_ID", value_name = "ID", requires = "redis")]
    node_id: Option<String>,

    /// Where browsers reach this node, e.g. https://node1.example.org:8443; pages of the rooms
    /// it hosts are sent there [default: the scheme, --public-host (or the first interface
    /// address) and the listen port].
    #[arg(
        long,
        env = "HUDDLE_PUBLIC_URL",
        value_name = "URL",
        requires = "redis"
    )]
    public_url: Option<String>,

    /// How long a node stopping (SIGTERM) waits for its pages to move to other nodes, in
    /// seconds [default: 10].
    #[arg(
        long,
        env = "HUDDLE_DRAIN_TIMEOUT",
        value_name = "SECONDS",
        requires = "redis"
    )]
    drain_timeout: Option<u64>,

    #[command(flatten)]
    #[serde(flatten)]
    relay: RelayArgs,

    #[command(flatten)]
    #[serde(flatten)]
    access: AccessArgs,

    /// Log output format [default: human].
    #[arg(long, env = "HUDDLE_LOG_FORMAT", value_enum)]
    log_format: Option<LogFormat>,
}

/// TURN allocations one credential may hold in `huddle serve` unless configured.
const DEFAULT_USER_QUOTA: usize = 32;
/// TURN allocations one client IP may hold in `huddle serve` unless configured: a few dozen
/// people behind one NAT, each with a call's worth.
const DEFAULT_IP_QUOTA: usize = 256;

macro_rules! fill_from {
    ($target:expr, $source:expr, $($field:ident),+ $(,)?) => {
        $( if $target.$field.is_none() { $target.$field = $source.$field; } )+
    };
}

impl ServeArgs {
    /// Fills every option the command line left unset from the config file.
    fn with_file(mut self) -> anyhow::Result<Self> {
        let Some(path) = &self.config else {
            return Ok(self);
        };
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config file {}", path.display()))?;
        let table: toml::Table = toml::from_str(&text)
            .with_context(|| format!("invalid config file {}", path.display()))?;
        // The keys are the flags' long names; anything else is a typo worth stopping for.
        let known: Vec<String> = ServeArgs::augment_args(clap::Command::new("serve"))
            .get_arguments()
            .flat_map(|a| {
                let aliases = a.get_all_aliases().unwrap_or_default();
                a.get_long().into_iter().chain(aliases).map(str::to_owned)
            })
            .filter(|k| k != "config")
            .collect();
        if let Some(unknown) = table.keys().find(|k| !known.contains(k)) {
            anyhow::bail!(
                "{}: unknown key {unknown:?}; the keys are the flags of `huddle serve`: {}",
                path.display(),
                known.join(", ")
            );
        }
        let file: ServeArgs = table
            .try_into()
            .with_context(|| format!("invalid config file {}", path.display()))?;
        fill_from!(
            self,
            file,
            listen,
            data_dir,
            tls_cert,
            tls_key,
            no_tls,
            room_capacity,
            room_mode,
            message_rate,
            ice_server,
            no_media,
            media_listen,
            media_workers,
            public_ip,
            public_host,
            whip_token,
            media_max_sessions,
            media_sessions_per_client,
            connections_per_ip,
            websockets_per_ip,
            no_turn,
            turn_listen,
            turn_tls_listen,
            turn_credential_ttl,
            redis,
            node_id,
            public_url,
            drain_timeout,
            log_format,
        );
        fill_from!(
            self.relay,
            file.relay,
            realm,
            user,
            auth_secret,
            relay_ip,
            external_ip,
            relay_ports,
            allow_loopback_peers,
            allowed_peer_ip,
            denied_peer_ip,
            user_quota,
            total_quota,
            ip_quota,
            max_bps,
        );
        self.access.fill_from(file.access);
        Ok(self)
    }

    fn resolve(self) -> anyhow::Result<Config> {
        let listen = self
            .listen
            .unwrap_or(SocketAddr::from(([0, 0, 0, 0], 8443)));
        let data_dir = || -> anyhow::Result<PathBuf> {
            match &self.data_dir {
                Some(dir) => Ok(dir.clone()),
                None => Ok(dirs::data_dir()
                    .context("no user data directory; pass --data-dir")?
                    .join("huddle")),
            }
        };
        let tls = match (self.no_tls.unwrap_or(false), &self.tls_cert, &self.tls_key) {
            (true, _, _) => TlsSource::Off,
            (false, Some(cert), Some(key)) => TlsSource::Files {
                cert: cert.clone(),
                key: key.clone(),
            },
            (false, None, None) => TlsSource::SelfSigned { dir: data_dir()? },
            _ => anyhow::bail!("--tls-cert and --tls-key go together"),
        };
        let cluster = match &self.redis {
            None => None,
            Some(redis) => {
                let scheme = match tls {
                    TlsSource::Off => "http",
                    _ => "https",
                };
                let public_url = match &self.public_url {
                    Some(url) => url.trim_end_matches('/').to_owned(),
                    None => default_public_url(scheme, self.public_host.as_deref(), listen),
                };
                let node_id = match &self.node_id {
                    Some(id) => id.clone(),
                    None => kept_node_id(&data_dir()?)?,
                };
                Some(huddle_server::ClusterConfig {
                    redis: redis.clone(),
                    node_id,
                    public_url,
                    drain_timeout: Duration::from_secs(self.drain_timeout.unwrap_or(10)),
                })
            }
        };
        let mut rooms = huddle_signal_proto::Config {
            access: self.access.keys()?,
            ..huddle_signal_proto::Config::default()
        };
        if let Some(capacity) = self.room_capacity {
            anyhow::ensure!(capacity >= 1, "--room-capacity must be at least 1");
            rooms.capacity = capacity;
        }
        rooms.default_mode = match self.room_mode.as_deref() {
            Some("mesh") => huddle_signal_proto::RoomMode::Mesh,
            // Without the media peer there is no server to move a third person to.
            None if self.no_media.unwrap_or(false) => huddle_signal_proto::RoomMode::Mesh,
            None => huddle_signal_proto::RoomMode::Auto,
            Some("sfu" | "auto") if self.no_media.unwrap_or(false) => {
                anyhow::bail!(
                    "--room-mode sfu and auto need the media peer, which --no-media turns off"
                )
            }
            Some("sfu") => huddle_signal_proto::RoomMode::Sfu,
            Some("auto") => huddle_signal_proto::RoomMode::Auto,
            Some(other) => anyhow::bail!("--room-mode is mesh, sfu or auto, not {other:?}"),
        };
        if let Some(rate) = self.message_rate {
            anyhow::ensure!(rate >= 1, "--message-rate must be at least 1");
            rooms.rate_per_second = rate;
            rooms.rate_burst = rate.saturating_mul(4);
        }
        let turn = if self.no_turn.unwrap_or(false) {
            None
        } else {
            let turn_listen = self
                .turn_listen
                .unwrap_or(SocketAddr::from(([0, 0, 0, 0], 3478)));
            let listen_ips = ips_of(&[turn_listen, listen]);
            // A fresh secret per start unless one is configured: clients get new credentials
            // with every welcome anyway.
            let mut secret = vec![0u8; 32];
            rand::rng().fill_bytes(&mut secret);
            let secret = self
                .relay
                .auth_secret
                .clone()
                .map_or(secret, String::into_bytes);
            let mut core = self.relay.core_config(&listen_ips, Some(secret.clone()))?;
            // Quotas a real call never reaches (a page's peer connections allocate once per
            // TURN URL each), so that one anonymous client cannot hold the relay's ports.
            if self.relay.user_quota.is_none() {
                core.user_quota = Some(DEFAULT_USER_QUOTA);
            }
            if self.relay.ip_quota.is_none() {
                core.ip_quota = Some(DEFAULT_IP_QUOTA);
            }
            Some(ServeTurn {
                config: TurnConfig {
                    core,
                    udp: vec![turn_listen],
                    tcp: vec![turn_listen],
                    tls: self.turn_tls_listen.into_iter().collect(),
                    tls_config: None,
                },
                secret,
                credential_ttl: Duration::from_secs(self.turn_credential_ttl.unwrap_or(43_200)),
                on_https: true,
            })
        };
        let ice_servers = self
            .ice_server
            .unwrap_or_default()
            .into_iter()
            .map(|url| huddle_signal_proto::IceServer {
                urls: vec![url],
                username: None,
                credential: None,
            })
            .collect();
        let mut limits = huddle_server::Limits::default();
        if let Some(n) = self.connections_per_ip {
            anyhow::ensure!(n >= 1, "--connections-per-ip must be at least 1");
            limits.connections_per_ip = n;
        }
        if let Some(n) = self.websockets_per_ip {
            anyhow::ensure!(n >= 1, "--websockets-per-ip must be at least 1");
            limits.websockets_per_ip = n;
        }
        let media = if self.no_media.unwrap_or(false) {
            None
        } else {
            let mut media = huddle_server::MediaConfig::new(
                self.media_listen
                    .unwrap_or(SocketAddr::new(listen.ip(), listen.port())),
            );
            if let Some(n) = self.media_workers {
                anyhow::ensure!(n >= 1, "--media-workers must be at least 1");
                media.workers = n;
            }
            media.public_ip = self.public_ip;
            media.whip_token = self.whip_token.filter(|t| !t.is_empty());
            if let Some(n) = self.media_max_sessions {
                anyhow::ensure!(n >= 1, "--media-max-sessions must be at least 1");
                media.max_sessions = n;
            }
            if let Some(n) = self.media_sessions_per_client {
                anyhow::ensure!(n >= 1, "--media-sessions-per-client must be at least 1");
                media.max_sessions_per_client = n;
            }
            Some(media)
        };
        Ok(Config {
            listen,
            tls,
            rooms,
            ice_servers,
            // Checked here, where the flag and the config file's key meet.
            public_host: self
                .public_host
                .as_deref()
                .map(parse_host)
                .transpose()
                .map_err(anyhow::Error::msg)?,
            shutdown_grace: Duration::from_secs(3),
            turn,
            media,
            limits,
            cluster,
        })
    }
}

/// `scheme://host:port` for this node: the public name, else the listen address, else (listening
/// on every address) the first interface address that is not loopback.
fn default_public_url(scheme: &str, public_host: Option<&str>, listen: SocketAddr) -> String {
    let host = match public_host {
        Some(name) => name.to_owned(),
        None => {
            let ip = if listen.ip().is_unspecified() {
                if_addrs_or_loopback()
                    .into_iter()
                    .find(|ip| !ip.is_loopback())
                    .unwrap_or(listen.ip())
            } else {
                listen.ip()
            };
            match ip {
                IpAddr::V6(v6) => format!("[{v6}]"),
                IpAddr::V4(v4) => v4.to_string(),
            }
        }
    };
    format!("{scheme}://{host}:{}", listen.port())
}

/// The node id kept in `dir/node-id`, made on first start: a node keeps its id across restarts,
/// so the rooms it hosted are still its own when it comes back quickly.
fn kept_node_id(dir: &std::path::Path) -> anyhow::Result<String> {
    let path = dir.join("node-id");
    if let Ok(id) = std::fs::read_to_string(&path) {
        return Ok(id.trim().to_owned());
    }
    let mut bytes = [0u8; 6];
    rand::rng().fill_bytes(&mut bytes);
    let id: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let id = format!("node-{id}");
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    std::fs::write(&path, &id).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(id)
}

/// A DNS name: letters, digits, `-` and `.`, as a certificate's name and a URL's host need.
fn parse_host(name: &str) -> Result<String, String> {
    let valid = !name.is_empty()
        && name.len() <= 253
        && name.parse::<IpAddr>().is_err()
        && name.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    if valid {
        Ok(name.to_ascii_lowercase())
    } else {
        Err(format!(
            "{name:?} is not a DNS name (an IP address goes in --public-ip)"
        ))
    }
}

pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let args = args.with_file()?;
    crate::init_logging(args.log_format.unwrap_or_default(), "info");
    crate::raise_descriptor_limit();
    let config = args.resolve()?;
    let server = Server::bind(config).await?;
    announce(&server);
    server.run(crate::stop_signal()).await?;
    Ok(())
}

/// Prints where to point a browser, and the certificate to expect there.
fn announce(server: &Server) {
    let addr = server.local_addr();
    let scheme = if server.fingerprint().is_some() {
        "https"
    } else {
        "http"
    };
    let hosts: Vec<IpAddr> = if addr.ip().is_unspecified() {
        let mut ips: Vec<IpAddr> = if_addrs_or_loopback();
        ips.sort_by_key(|ip| (!ip.is_loopback(), ip.is_ipv6()));
        ips
    } else {
        vec![addr.ip()]
    };
    println!("Huddle is serving. Open one of:");
    for ip in hosts {
        let host = match ip {
            IpAddr::V6(v6) => format!("[{v6}]"),
            IpAddr::V4(v4) => v4.to_string(),
        };
        println!("  {scheme}://{host}:{}/", addr.port());
    }
    if let Some(turn) = server.turn_addrs() {
        let list = |addrs: &[SocketAddr]| {
            addrs
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut tls: Vec<String> = turn.tls.iter().map(ToString::to_string).collect();
        if server.fingerprint().is_some() {
            tls.insert(0, "the HTTPS port".into());
        }
        let tls = if tls.is_empty() {
            String::new()
        } else {
            format!(" · tls {}", tls.join(", "))
        };
        println!(
            "TURN: udp {} · tcp {}{tls}",
            list(&turn.udp),
            list(&turn.tcp)
        );
    }
    if let Some(ports) = server.media_ports() {
        let ports: Vec<String> = ports.iter().map(u16::to_string).collect();
        println!(
            "Media peer: UDP port {} · echo test at /echo · WHIP/WHEP at /whip/ROOM, /whep/ROOM",
            ports.join(", ")
        );
    }
    let keys = server.access_keys();
    if keys.is_empty() {
        println!("Rooms are open to anyone who can reach this server (no --auth-key).");
    } else {
        println!(
            "Access tokens are required (keys: {}); make one with `huddle token create`.",
            keys.names().join(", ")
        );
    }
    if let (Some(fp), Some(path)) = (server.fingerprint(), server.cert_path()) {
        println!(
            "Certificate {} SHA-256 fingerprint:\n  {fp}",
            path.display()
        );
        println!(
            "A self-signed certificate makes the browser warn once; compare the fingerprint, then proceed."
        );
    }
}

fn if_addrs_or_loopback() -> Vec<IpAddr> {
    let mut ips: Vec<IpAddr> = huddle_server::interface_addresses();
    if ips.is_empty() {
        ips.push(IpAddr::from([127, 0, 0, 1]));
    }
    ips
}

#[cfg(test)]
mod tests {
    use super::parse_host;

    #[test]
    fn public_host_is_a_dns_name() {
        assert_eq!(
            parse_host("Meet.Example.org").as_deref(),
            Ok("meet.example.org")
        );
        for bad in ["", "203.0.113.4", "::1", "a..b", "bad_name", "x y", "a/b"] {
            assert!(parse_host(bad).is_err(), "{bad:?}");
        }
    }
}
