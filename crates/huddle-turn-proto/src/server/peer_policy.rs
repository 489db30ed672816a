//! Which peers a relay may talk to. By default only public unicast addresses: a TURN server that
//! relays to loopback, private networks or itself is a way into the network it sits in.

use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

/// An inclusive range of addresses, written as CIDR (`10.0.0.0/8`), coturn's `first-last` form
/// (`172.16.0.0-172.31.255.255`) or one address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpRange {
    first: IpAddr,
    last: IpAddr,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not an address range: {0:?} (use 10.0.0.0/8, 10.0.0.1-10.0.0.9 or one address)")]
pub struct BadRange(String);

impl FromStr for IpRange {
    type Err = BadRange;

    fn from_str(s: &str) -> Result<Self, BadRange> {
        let bad = || BadRange(s.to_owned());
        let s = s.trim();
        if let Some((net, prefix)) = s.split_once('/') {
            let net: IpAddr = net.parse().map_err(|_| bad())?;
            let prefix: u32 = prefix.parse().map_err(|_| bad())?;
            return match net {
                IpAddr::V4(ip) if prefix <= 32 => {
                    let mask = u32::MAX.checked_shl(32 - prefix).unwrap_or(0);
                    let base = u32::from(ip) & mask;
                    Ok(Self {
                        first: IpAddr::V4(base.into()),
                        last: IpAddr::V4((base | !mask).into()),
                    })
                }
                IpAddr::V6(ip) if prefix <= 128 => {
                    let mask = u128::MAX.checked_shl(128 - prefix).unwrap_or(0);
                    let base = u128::from(ip) & mask;
                    Ok(Self {
                        first: IpAddr::V6(base.into()),
                        last: IpAddr::V6((base | !mask).into()),
                    })
                }
                _ => Err(bad()),
            };
        }
        if let Some((a, b)) = s.split_once('-') {
            let (first, last): (IpAddr, IpAddr) = (
                a.trim().parse().map_err(|_| bad())?,
                b.trim().parse().map_err(|_| bad())?,
            );
            if first.is_ipv4() != last.is_ipv4() || first > last {
                return Err(bad());
            }
            return Ok(Self { first, last });
        }
        let ip: IpAddr = s.parse().map_err(|_| bad())?;
        Ok(Self {
            first: ip,
            last: ip,
        })
    }
}

impl IpRange {
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.first.is_ipv4() == ip.is_ipv4() && self.first <= ip && ip <= self.last
    }
}

/// The relay's rules for peer addresses, checked in this order: denied ranges, allowed ranges,
/// loopback (with `allow_loopback`), then the built-in refusals.
#[derive(Debug, Clone, Default)]
pub struct PeerPolicy {
    pub allow_loopback: bool,
    pub allowed: Vec<IpRange>,
    pub denied: Vec<IpRange>,
    /// The server's own addresses (listeners, relays): never a peer unless allowed explicitly.
    pub own: Vec<IpAddr>,
    /// Exact addresses a relay may reach whatever the rules above say: services of this same
    /// server (the media peer's UDP port), for clients that reach it only through TURN. The
    /// address's other ports stay refused.
    pub services: Vec<SocketAddr>,
}

impl PeerPolicy {
    /// Whether datagrams may go to `peer`: its address is permitted, or it is one of the services.
    pub fn permits_addr(&self, peer: SocketAddr) -> bool {
        self.permits(peer.ip()) || self.is_service(peer)
    }

    /// Whether `ip` hosts one of the services (at some port).
    pub fn is_service_ip(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.services.iter().any(|s| s.ip() == ip)
    }

    pub fn is_service(&self, peer: SocketAddr) -> bool {
        let canonical = SocketAddr::new(peer.ip().to_canonical(), peer.port());
        self.services.contains(&canonical)
    }

    pub fn permits(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        if self.denied.iter().any(|r| r.contains(ip)) {
            return false;
        }
        if self.allowed.iter().any(|r| r.contains(ip)) {
            return true;
        }
        if ip.is_loopback() {
            return self.allow_loopback;
        }
        !self.own.contains(&ip) && is_public_unicast(ip)
    }
}

fn is_public_unicast(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            !(v4.is_private()
                || v4.is_link_local()
                || v4.is_multicast()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || o[0] == 0                              // "this network"
                || (o[0] == 100 && (o[1] & 0xC0) == 64)   // CGNAT 100.64/10
                || o[0] >= 240) // reserved
        }
        IpAddr::V6(v6) => {
            let seg0 = v6.segments()[0];
            !(v6.is_unspecified()
                || v6.is_multicast()
                || v6.is_unicast_link_local()
                || (seg0 & 0xFE00) == 0xFC00               // unique local fc00::/7
                || (seg0 & 0xFFC0) == 0xFEC0) // site-local (deprecated)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn default_refuses_everything_internal() {
        let p = PeerPolicy::default();
        for s in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.0.1",
            "224.0.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "100.64.0.1",
            "::1",
            "::",
            "fe80::1",
            "fd00::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
        ] {
            assert!(!p.permits(ip(s)), "{s} must be refused");
        }
        for s in ["8.8.8.8", "203.0.113.9", "2001:db8::1", "::ffff:8.8.4.4"] {
            assert!(p.permits(ip(s)), "{s} must be allowed");
        }
    }

    #[test]
    fn flags_and_ranges() {
        let p = PeerPolicy {
            allow_loopback: true,
            allowed: vec!["10.0.0.0/8".parse().unwrap()],
            denied: vec![
                "10.9.0.0-10.9.255.255".parse().unwrap(),
                "8.8.8.8".parse().unwrap(),
            ],
            own: vec![ip("203.0.113.1")],
            services: Vec::new(),
        };
        assert!(p.permits(ip("127.0.0.1")));
        assert!(p.permits(ip("10.1.1.1")));
        assert!(!p.permits(ip("10.9.1.1")), "denied wins over allowed");
        assert!(!p.permits(ip("8.8.8.8")));
        assert!(!p.permits(ip("203.0.113.1")), "the server itself");
    }

    #[test]
    fn range_syntax() {
        assert!(
            "fc00::/7"
                .parse::<IpRange>()
                .unwrap()
                .contains(ip("fd12::1"))
        );
        assert!(
            "0.0.0.0/0"
                .parse::<IpRange>()
                .unwrap()
                .contains(ip("1.2.3.4"))
        );
        assert!(!"0.0.0.0/0".parse::<IpRange>().unwrap().contains(ip("::1")));
        for bad in [
            "10.0.0.0/33",
            "x",
            "10.0.0.9-10.0.0.1",
            "1.2.3.4-::1",
            "::/129",
        ] {
            assert!(bad.parse::<IpRange>().is_err(), "{bad}");
        }
    }
}
