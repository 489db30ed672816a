//! The TURN relay's options, shared by `huddle turn` and `huddle serve`.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use anyhow::{Context, bail};
use clap::Args;
use huddle_turn_proto::auth::{Credentials, Secret};
use huddle_turn_proto::{Config as CoreConfig, IpRange, PeerPolicy, RelayAddr};
use serde::Deserialize;

#[derive(Args, Deserialize, Default, Debug, Clone)]
#[serde(default, rename_all = "kebab-case")]
pub struct RelayArgs {
    /// Realm of the long-term credentials [default: huddle].
    #[arg(long, env = "HUDDLE_TURN_REALM")]
    pub realm: Option<String>,

    /// A static TURN user, NAME:PASSWORD or NAME:0xKEY (coturn's precomputed key); repeatable.
    #[arg(long = "user", value_name = "NAME:PASS")]
    pub user: Option<Vec<String>>,

    /// TURN REST shared secret (coturn's static-auth-secret): usernames `EXPIRY:NAME`, passwords
    /// base64(HMAC-SHA1(secret, username)).
    #[arg(long, env = "HUDDLE_TURN_SECRET", value_name = "SECRET")]
    pub auth_secret: Option<String>,

    /// Address relay sockets bind to [default: the listen address if specific, else this host's
    /// first non-loopback IPv4 address].
    #[arg(long, env = "HUDDLE_RELAY_IP", value_name = "IP")]
    pub relay_ip: Option<IpAddr>,

    /// The public address to advertise for relays behind a NAT: IP, or PUBLIC/PRIVATE as coturn
    /// writes it (binds PRIVATE, advertises PUBLIC).
    #[arg(long, env = "HUDDLE_EXTERNAL_IP", value_name = "IP[/PRIVATE]")]
    pub external_ip: Option<String>,

    /// Relay port range [default: 49152-65535].
    #[arg(long, env = "HUDDLE_RELAY_PORTS", value_name = "MIN-MAX")]
    pub relay_ports: Option<String>,

    /// Let clients relay to loopback addresses (tests; never on a public server).
    #[arg(long, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    pub allow_loopback_peers: Option<bool>,

    /// A peer range to allow despite the built-in refusals (CIDR, FIRST-LAST or one IP); repeatable.
    #[arg(long = "allowed-peer-ip", value_name = "RANGE")]
    pub allowed_peer_ip: Option<Vec<String>>,

    /// A peer range to refuse (CIDR, FIRST-LAST or one IP); repeatable.
    #[arg(long = "denied-peer-ip", value_name = "RANGE")]
    pub denied_peer_ip: Option<Vec<String>>,

    /// Allocations one user may hold at once.
    #[arg(long, value_name = "N")]
    pub user_quota: Option<usize>,

    /// Allocations the server holds at once.
    #[arg(long, value_name = "N")]
    pub total_quota: Option<usize>,

    /// Bytes per second one allocation may relay.
    #[arg(long, value_name = "BYTES")]
    pub max_bps: Option<u64>,
}

impl RelayArgs {
    /// The core configuration; `listen_ips` pick the relay address when none is given and are
    /// among the server's own addresses no client may relay to.
    pub fn core_config(
        &self,
        listen_ips: &[IpAddr],
        rest_secret: Option<Vec<u8>>,
    ) -> anyhow::Result<CoreConfig> {
        let credentials = Credentials {
            realm: self.realm.clone().unwrap_or_else(|| "huddle".into()),
            users: self
                .user
                .iter()
                .flatten()
                .map(|u| {
                    let (name, secret) = u
                        .split_once(':')
                        .with_context(|| format!("--user {u:?}: expected NAME:PASSWORD"))?;
                    Ok((name.to_owned(), Secret::parse(secret)))
                })
                .collect::<anyhow::Result<_>>()?,
            rest_secret: self
                .auth_secret
                .clone()
                .map(String::into_bytes)
                .or(rest_secret),
        };
        let mut config = CoreConfig {
            credentials,
            ..CoreConfig::default()
        };
        let (bind, advertised) = self.relay_addresses(listen_ips)?;
        let relay = RelayAddr { bind, advertised };
        if bind.is_ipv4() {
            config.relay_v4 = Some(relay);
        } else {
            config.relay_v6 = Some(relay);
        }
        if let Some(range) = &self.relay_ports {
            let (lo, hi) = range
                .split_once('-')
                .and_then(|(a, b)| {
                    Some((a.trim().parse::<u16>().ok()?, b.trim().parse::<u16>().ok()?))
                })
                .filter(|(lo, hi)| lo <= hi && *lo > 0)
                .with_context(|| {
                    format!("--relay-ports {range:?}: expected MIN-MAX, e.g. 49152-65535")
                })?;
            config.relay_ports = lo..=hi;
        }
        let ranges = |list: &Option<Vec<String>>| -> anyhow::Result<Vec<IpRange>> {
            list.iter()
                .flatten()
                .map(|r| r.parse::<IpRange>().map_err(anyhow::Error::from))
                .collect()
        };
        let mut own: Vec<IpAddr> = listen_ips
            .iter()
            .copied()
            .filter(|ip| !ip.is_unspecified())
            .collect();
        own.extend([bind, advertised]);
        config.peers = PeerPolicy {
            allow_loopback: self.allow_loopback_peers.unwrap_or(false),
            allowed: ranges(&self.allowed_peer_ip)?,
            denied: ranges(&self.denied_peer_ip)?,
            own,
            // `huddle serve` adds its media peer once its sockets are bound.
            services: Vec::new(),
        };
        config.user_quota = self.user_quota;
        config.total_quota = self.total_quota;
        config.max_bps = self.max_bps;
        Ok(config)
    }

    fn relay_addresses(&self, listen_ips: &[IpAddr]) -> anyhow::Result<(IpAddr, IpAddr)> {
        if let Some(external) = &self.external_ip {
            let (public, private) = match external.split_once('/') {
                Some((p, q)) => (p, Some(q)),
                None => (external.as_str(), None),
            };
            let public: IpAddr = public
                .parse()
                .with_context(|| format!("--external-ip {external:?}"))?;
            let bind = match private {
                Some(p) => p
                    .parse()
                    .with_context(|| format!("--external-ip {external:?}"))?,
                None => self
                    .relay_ip
                    .unwrap_or_else(|| default_relay_ip(listen_ips)),
            };
            return Ok((bind, public));
        }
        let bind = self
            .relay_ip
            .unwrap_or_else(|| default_relay_ip(listen_ips));
        if bind.is_unspecified() {
            bail!("--relay-ip must be a specific address (clients are told it)");
        }
        Ok((bind, bind))
    }
}

/// A listen address if one is specific, else this host's first non-loopback IPv4 address, else
/// loopback.
fn default_relay_ip(listen_ips: &[IpAddr]) -> IpAddr {
    listen_ips
        .iter()
        .copied()
        .find(|ip| !ip.is_unspecified())
        .or_else(|| {
            huddle_server::interface_addresses()
                .into_iter()
                .find(|ip| ip.is_ipv4() && !ip.is_loopback())
        })
        .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST))
}

/// The IPs of `addrs`, deduplicated in order.
pub fn ips_of(addrs: &[SocketAddr]) -> Vec<IpAddr> {
    let mut ips: Vec<IpAddr> = Vec::new();
    for a in addrs {
        if !ips.contains(&a.ip()) {
            ips.push(a.ip());
        }
    }
    ips
}
