//! The TURN relay's options, shared by `huddle turn` and `huddle serve`.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

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

    /// Address relay sockets bind to; give an IPv4 and an IPv6 address (repeat the flag or
    /// separate with commas) to relay both families, chosen per allocation by the client's
    /// REQUESTED-ADDRESS-FAMILY [default: the listen address if specific, else this host's first
    /// non-loopback IPv4 address and, if it has one, its first non-link-local IPv6 address].
    #[arg(
        long = "relay-ip",
        env = "HUDDLE_RELAY_IP",
        value_name = "IP",
        value_delimiter = ','
    )]
    pub relay_ip: Option<Vec<IpAddr>>,

    /// The public address to advertise for relays behind a NAT: IP, or PUBLIC/PRIVATE as coturn
    /// writes it (binds PRIVATE, advertises PUBLIC); once per address family.
    #[arg(
        long = "external-ip",
        env = "HUDDLE_EXTERNAL_IP",
        value_name = "IP[/PRIVATE]",
        value_delimiter = ','
    )]
    pub external_ip: Option<Vec<String>>,

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

    /// Allocations one user may hold at once (0: no limit, as in coturn).
    #[arg(long, value_name = "N")]
    pub user_quota: Option<usize>,

    /// Allocations the server holds at once (0: no limit, as in coturn).
    #[arg(long, value_name = "N")]
    pub total_quota: Option<usize>,

    /// Allocations (relay ports) one client IP address may hold at once (0: no limit)
    /// [default: 256 in `huddle serve`, no limit in `huddle turn`].
    #[arg(long, value_name = "N")]
    pub ip_quota: Option<usize>,

    /// Bytes per second one allocation may relay (0: no limit, as in coturn).
    #[arg(long, value_name = "BYTES")]
    pub max_bps: Option<u64>,

    /// Longest lifetime a client may ask for an allocation, in seconds [default: 3600].
    #[arg(long, value_name = "SECONDS")]
    pub max_allocate_lifetime: Option<u64>,

    /// Seconds a nonce stays good before the client must retry with a fresh one (438 Stale
    /// Nonce) [default: 600].
    #[arg(long, value_name = "SECONDS")]
    pub stale_nonce: Option<u64>,

    /// Seconds a permission lasts unless refreshed [default: 300, what RFC 8656 fixes; other
    /// values are for tests].
    #[arg(long, value_name = "SECONDS")]
    pub permission_lifetime: Option<u64>,

    /// Seconds a channel binding lasts unless refreshed [default: 600, what RFC 8656 fixes;
    /// other values are for tests].
    #[arg(long, value_name = "SECONDS")]
    pub channel_lifetime: Option<u64>,
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
        let relays = self.relay_addresses(listen_ips)?;
        for relay in &relays {
            let slot = if relay.bind.is_ipv4() {
                &mut config.relay_v4
            } else {
                &mut config.relay_v6
            };
            *slot = Some(*relay);
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
        own.extend(relays.iter().flat_map(|r| [r.bind, r.advertised]));
        config.peers = PeerPolicy {
            allow_loopback: self.allow_loopback_peers.unwrap_or(false),
            allowed: ranges(&self.allowed_peer_ip)?,
            denied: ranges(&self.denied_peer_ip)?,
            own,
            // `huddle serve` adds its media peer once its sockets are bound.
            services: Vec::new(),
        };
        // coturn's files say 0 for "no limit" (Nextcloud Talk's guide writes `total-quota=0`);
        // taken literally it would refuse every allocation.
        config.user_quota = self.user_quota.filter(|&n| n > 0);
        config.total_quota = self.total_quota.filter(|&n| n > 0);
        config.ip_quota = self.ip_quota.filter(|&n| n > 0);
        config.max_bps = self.max_bps.filter(|&n| n > 0);
        let seconds = |value: Option<u64>, flag: &str, default: Duration| match value {
            Some(0) => bail!("--{flag} 0: a lifetime must be at least a second"),
            Some(s) => Ok(Duration::from_secs(s)),
            None => Ok(default),
        };
        config.max_lifetime = seconds(
            self.max_allocate_lifetime,
            "max-allocate-lifetime",
            config.max_lifetime,
        )?;
        // A client that names no lifetime gets the default, never more than the maximum.
        config.default_lifetime = config.default_lifetime.min(config.max_lifetime);
        config.nonce_lifetime = seconds(self.stale_nonce, "stale-nonce", config.nonce_lifetime)?;
        config.permission_lifetime = seconds(
            self.permission_lifetime,
            "permission-lifetime",
            config.permission_lifetime,
        )?;
        config.channel_lifetime = seconds(
            self.channel_lifetime,
            "channel-lifetime",
            config.channel_lifetime,
        )?;
        Ok(config)
    }

    /// At most one relay address per family: from `--external-ip` (PUBLIC[/PRIVATE]), then
    /// `--relay-ip`, then the defaults.
    fn relay_addresses(&self, listen_ips: &[IpAddr]) -> anyhow::Result<Vec<RelayAddr>> {
        let relay_ips = self.relay_ip.clone().unwrap_or_default();
        let mut relays: Vec<RelayAddr> = Vec::new();
        for external in self.external_ip.iter().flatten() {
            let what = format!("--external-ip {external:?}");
            let (public, private) = match external.split_once('/') {
                Some((p, q)) => (p, Some(q)),
                None => (external.as_str(), None),
            };
            let public: IpAddr = public.parse().with_context(|| what.clone())?;
            let bind = match private {
                Some(p) => p.parse().with_context(|| what.clone())?,
                None => relay_ips
                    .iter()
                    .copied()
                    .find(|ip| ip.is_ipv4() == public.is_ipv4())
                    .unwrap_or_else(|| default_relay_ip(listen_ips)),
            };
            add_relay(
                &mut relays,
                RelayAddr {
                    bind,
                    advertised: public,
                },
                &what,
            )?;
        }
        for ip in &relay_ips {
            if relays.iter().any(|r| r.bind.is_ipv4() == ip.is_ipv4()) && self.external_ip.is_some()
            {
                continue; // the external address of this family already says where to bind
            }
            add_relay(
                &mut relays,
                RelayAddr {
                    bind: *ip,
                    advertised: *ip,
                },
                &format!("--relay-ip {ip}"),
            )?;
        }
        if relays.is_empty() {
            let v4 = default_relay_ip(listen_ips);
            add_relay(
                &mut relays,
                RelayAddr {
                    bind: v4,
                    advertised: v4,
                },
                "the default relay address",
            )?;
            let listen_specific = listen_ips.iter().any(|ip| !ip.is_unspecified());
            if !listen_specific
                && let Some(v6) = huddle_server::interface_addresses()
                    .into_iter()
                    .find(|ip| ip.is_ipv6() && !ip.is_loopback())
            {
                add_relay(
                    &mut relays,
                    RelayAddr {
                        bind: v6,
                        advertised: v6,
                    },
                    "the default IPv6 relay address",
                )?;
            }
        }
        Ok(relays)
    }
}

/// Adds `relay` unless it is unusable or its family already has one.
fn add_relay(relays: &mut Vec<RelayAddr>, relay: RelayAddr, what: &str) -> anyhow::Result<()> {
    if relay.bind.is_ipv4() != relay.advertised.is_ipv4() {
        bail!("{what}: the public and private addresses are of different families");
    }
    if relay.bind.is_unspecified() {
        bail!("{what}: a relay address must be a specific address (clients are told it)");
    }
    if relays
        .iter()
        .any(|r| r.bind.is_ipv4() == relay.bind.is_ipv4())
    {
        bail!("{what}: one relay address per family (an IPv4 and an IPv6 one at most)");
    }
    relays.push(relay);
    Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;

    fn args(relay_ip: &[&str], external_ip: &[&str]) -> RelayArgs {
        RelayArgs {
            relay_ip: (!relay_ip.is_empty())
                .then(|| relay_ip.iter().map(|s| s.parse().unwrap()).collect()),
            external_ip: (!external_ip.is_empty())
                .then(|| external_ip.iter().map(|s| s.to_string()).collect()),
            ..RelayArgs::default()
        }
    }

    fn listen() -> Vec<IpAddr> {
        vec!["10.0.0.4".parse().unwrap()]
    }

    #[test]
    fn lifetimes_from_flags_the_default_never_above_the_maximum() {
        let c = RelayArgs {
            max_allocate_lifetime: Some(120),
            stale_nonce: Some(30),
            channel_lifetime: Some(60),
            ..args(&["10.0.0.4"], &[])
        }
        .core_config(&listen(), None)
        .unwrap();
        assert_eq!(c.max_lifetime, Duration::from_secs(120));
        assert_eq!(c.default_lifetime, Duration::from_secs(120));
        assert_eq!(c.nonce_lifetime, Duration::from_secs(30));
        assert_eq!(c.channel_lifetime, Duration::from_secs(60));
        assert_eq!(c.permission_lifetime, Duration::from_secs(300));

        let err = RelayArgs {
            stale_nonce: Some(0),
            ..args(&["10.0.0.4"], &[])
        }
        .core_config(&listen(), None)
        .unwrap_err();
        assert!(err.to_string().contains("--stale-nonce 0"), "{err}");
    }

    #[test]
    fn zero_quotas_and_bandwidth_mean_no_limit_as_in_coturn() {
        let limits = |n| {
            let c = RelayArgs {
                user_quota: Some(n),
                total_quota: Some(n),
                max_bps: Some(n as u64),
                ..args(&["10.0.0.4"], &[])
            }
            .core_config(&listen(), None)
            .unwrap();
            (c.user_quota, c.total_quota, c.max_bps)
        };
        assert_eq!(limits(0), (None, None, None));
        assert_eq!(limits(12), (Some(12), Some(12), Some(12)));
    }

    #[test]
    fn one_relay_per_family_both_at_once() {
        let c = args(&["10.0.0.4", "2001:db8::4"], &[])
            .core_config(&listen(), None)
            .unwrap();
        assert_eq!(
            c.relay_v4.unwrap().bind,
            "10.0.0.4".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            c.relay_v6.unwrap().advertised,
            "2001:db8::4".parse::<IpAddr>().unwrap()
        );
        assert!(
            c.peers.own.contains(&"2001:db8::4".parse().unwrap()),
            "own addresses"
        );

        let err = args(&["10.0.0.4", "10.0.0.5"], &[])
            .core_config(&listen(), None)
            .unwrap_err();
        assert!(
            err.to_string().contains("one relay address per family"),
            "{err}"
        );
        let err = args(&["0.0.0.0"], &[])
            .core_config(&listen(), None)
            .unwrap_err();
        assert!(err.to_string().contains("specific address"), "{err}");
    }

    #[test]
    fn external_addresses_per_family_like_coturn() {
        let c = args(&["2001:db8::4"], &["203.0.113.4/10.0.0.4"])
            .core_config(&listen(), None)
            .unwrap();
        let v4 = c.relay_v4.unwrap();
        assert_eq!(
            (v4.bind, v4.advertised),
            ("10.0.0.4".parse().unwrap(), "203.0.113.4".parse().unwrap())
        );
        assert_eq!(
            c.relay_v6.unwrap().bind,
            "2001:db8::4".parse::<IpAddr>().unwrap()
        );
        // Without PRIVATE, the relay IP of the same family is bound.
        let c = args(&["10.0.0.9"], &["203.0.113.4"])
            .core_config(&listen(), None)
            .unwrap();
        let v4 = c.relay_v4.unwrap();
        assert_eq!(
            (v4.bind, v4.advertised),
            ("10.0.0.9".parse().unwrap(), "203.0.113.4".parse().unwrap())
        );
        assert!(c.relay_v6.is_none());
        let err = args(&[], &["203.0.113.4/2001:db8::1"])
            .core_config(&listen(), None)
            .unwrap_err();
        assert!(err.to_string().contains("different families"), "{err}");
    }

    #[test]
    fn a_specific_listen_address_is_the_default_relay() {
        let c = args(&[], &[]).core_config(&listen(), None).unwrap();
        assert_eq!(
            c.relay_v4.unwrap().bind,
            "10.0.0.4".parse::<IpAddr>().unwrap()
        );
        assert!(
            c.relay_v6.is_none(),
            "no IPv6 relay guessed when the listen address is specific"
        );
    }
}
