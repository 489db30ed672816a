//! The ICE servers handed to each joining client: the operator's static ones, and short-lived
//! TURN REST credentials for Huddle's own TURN server. The shared secret never leaves the server.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use huddle_signal_proto::IceServer;
use huddle_turn_proto::auth::mint_rest_credentials;

#[derive(Clone, Default)]
pub struct IceServers {
    pub static_servers: Vec<IceServer>,
    /// The server's DNS name, for the `turns:` URLs: Firefox ignores them at an IP literal, and
    /// TLS checks the name.
    pub public_host: Option<String>,
    pub turn: Option<TurnIce>,
}

/// How clients reach Huddle's own TURN server.
#[derive(Clone)]
pub struct TurnIce {
    pub secret: Vec<u8>,
    pub ttl: Duration,
    pub udp_port: Option<u16>,
    pub tcp_port: Option<u16>,
    /// Ports that speak TURN over TLS: 5349 and/or the HTTPS port itself.
    pub tls_ports: Vec<u16>,
}

impl IceServers {
    /// ICE servers for `peer`, who reached us at `host` (the Host the browser used, so the TURN
    /// URLs name an address it can reach).
    pub fn for_peer(&self, peer: &str, host: &str) -> Vec<IceServer> {
        let mut servers = self.static_servers.clone();
        if let Some(turn) = &self.turn {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            let (username, credential) =
                mint_rest_credentials(&turn.secret, peer, now + turn.ttl.as_secs());
            let mut urls = Vec::new();
            if let Some(port) = turn.udp_port {
                urls.push(format!("turn:{host}:{port}?transport=udp"));
            }
            if let Some(port) = turn.tcp_port {
                urls.push(format!("turn:{host}:{port}?transport=tcp"));
            }
            let tls_host = self.public_host.as_deref().unwrap_or(host);
            for port in &turn.tls_ports {
                urls.push(format!("turns:{tls_host}:{port}?transport=tcp"));
            }
            servers.push(IceServer {
                urls,
                username: Some(username),
                credential: Some(credential),
            });
        }
        servers
    }
}

/// The host part of an HTTP `Host` header (`name`, `1.2.3.4` or `[v6]`), without the port.
pub fn host_only(host: &str) -> &str {
    if host.starts_with('[') {
        return host.split_inclusive(']').next().unwrap_or(host);
    }
    host.rsplit_once(':').map_or(host, |(h, _)| h)
}

#[cfg(test)]
mod tests {
    use super::*;
    use huddle_turn_proto::auth::{Credentials, long_term_key};

    #[test]
    fn minted_credentials_verify_against_the_turn_server() {
        let mut ice = IceServers {
            static_servers: vec![],
            public_host: None,
            turn: Some(TurnIce {
                secret: b"s".to_vec(),
                ttl: Duration::from_secs(3600),
                udp_port: Some(3478),
                tcp_port: Some(3478),
                tls_ports: vec![8443],
            }),
        };
        let servers = ice.for_peer("p1", "meet.example.org");
        let turn = &servers[0];
        assert_eq!(
            turn.urls,
            vec![
                "turn:meet.example.org:3478?transport=udp",
                "turn:meet.example.org:3478?transport=tcp",
                "turns:meet.example.org:8443?transport=tcp"
            ]
        );
        // A browser that came by IP is told the server's name for TLS.
        ice.public_host = Some("meet.example.org".into());
        let by_ip = ice.for_peer("p1", "203.0.113.4");
        assert_eq!(
            by_ip[0].urls,
            vec![
                "turn:203.0.113.4:3478?transport=udp",
                "turn:203.0.113.4:3478?transport=tcp",
                "turns:meet.example.org:8443?transport=tcp"
            ]
        );
        let user = turn.username.as_deref().unwrap();
        assert!(user.ends_with(":p1"));
        let creds = Credentials {
            realm: "huddle".into(),
            rest_secret: Some(b"s".to_vec()),
            ..Credentials::default()
        };
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let key = creds.key_for(user, now).unwrap();
        assert_eq!(
            key,
            long_term_key(user, "huddle", turn.credential.as_deref().unwrap())
        );
    }

    #[test]
    fn hosts() {
        assert_eq!(host_only("example.org:8443"), "example.org");
        assert_eq!(host_only("[::1]:8443"), "[::1]");
        assert_eq!(host_only("10.0.0.1"), "10.0.0.1");
    }
}
