//! Reading coturn's `turnserver.conf`, so a coturn user can point `huddle turn -c` at their file.
//!
//! Lines are `key=value`, `key value` or a bare `key` (a flag); `#` starts a comment. The keys
//! Huddle understands fill [`CoturnConf`]; every other key is named back to the operator.

use std::collections::BTreeSet;

/// The subset of coturn's options Huddle acts on.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct CoturnConf {
    pub listening_ips: Vec<String>,
    pub listening_port: Option<u16>,
    pub tls_listening_port: Option<u16>,
    pub relay_ips: Vec<String>,
    pub external_ips: Vec<String>,
    pub min_port: Option<u16>,
    pub max_port: Option<u16>,
    pub realm: Option<String>,
    pub users: Vec<String>,
    pub lt_cred_mech: bool,
    pub use_auth_secret: bool,
    pub static_auth_secret: Option<String>,
    pub no_tls: bool,
    pub no_udp: bool,
    pub no_tcp: bool,
    pub cert: Option<String>,
    pub pkey: Option<String>,
    pub denied_peer_ips: Vec<String>,
    pub allowed_peer_ips: Vec<String>,
    pub allow_loopback_peers: bool,
    pub user_quota: Option<usize>,
    pub total_quota: Option<usize>,
    pub max_bps: Option<u64>,
    pub max_allocate_lifetime: Option<u64>,
    /// `stale-nonce` (bare: coturn's 600 s).
    pub stale_nonce: Option<u64>,
    pub permission_lifetime: Option<u64>,
    pub channel_lifetime: Option<u64>,
    /// `prometheus`: serve metrics over HTTP, on `prometheus-address` (default all addresses)
    /// and `prometheus-port` (default [`PROMETHEUS_PORT`]), as coturn does.
    pub prometheus: bool,
    pub prometheus_port: Option<u16>,
    pub prometheus_address: Option<String>,
    /// `verbose` (or `Verbose`): log every allocation.
    pub verbose: bool,
    /// Keys present in the file that Huddle does not act on, for the operator to review.
    pub ignored: BTreeSet<String>,
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConfError {
    #[error("line {line}: {key} needs a value")]
    MissingValue { line: usize, key: String },
    #[error("line {line}: {key}: {value:?} is not a valid number")]
    BadNumber {
        line: usize,
        key: String,
        value: String,
    },
}

/// Where coturn's `prometheus` exporter listens unless `prometheus-port` says otherwise.
pub const PROMETHEUS_PORT: u16 = 9641;

/// coturn's nonce lifetime for a bare `stale-nonce`, in seconds.
const STALE_NONCE: u64 = 600;

/// Keys that are implied by how Huddle works and need no action (nor a warning).
const IMPLIED: &[&str] = &[
    "fingerprint",
    "no-cli",
    "no-dtls",
    "no-multicast-peers",
    // coturn's old switch for what is now its default, and Huddle's: no loopback peers.
    "no-loopback-peers",
    // Huddle relays UDP only (no RFC 6062 TCP relay) and does no RFC 5780 NAT discovery.
    "no-tcp-relay",
    "no-rfc5780",
    "no-tlsv1",
    "no-tlsv1_1",
];

/// `value` as the number type of its key: out of range is an error, never a truncated number.
fn number<T: std::str::FromStr>(line: usize, key: &str, value: String) -> Result<T, ConfError> {
    value.parse().map_err(|_| ConfError::BadNumber {
        line,
        key: key.to_owned(),
        value,
    })
}

pub fn parse(text: &str) -> Result<CoturnConf, ConfError> {
    let mut conf = CoturnConf::default();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let (key, value) = match line.split_once(['=', ' ', '\t']) {
            Some((k, v)) => (k.trim(), Some(v.trim().trim_matches('"'))),
            None => (line, None),
        };
        let key = key.trim_start_matches("--");
        let lineno = i + 1;
        let need = || {
            value
                .filter(|v| !v.is_empty())
                .map(str::to_owned)
                .ok_or_else(|| ConfError::MissingValue {
                    line: lineno,
                    key: key.to_owned(),
                })
        };
        match key {
            "listening-ip" => conf.listening_ips.push(need()?),
            "listening-port" => conf.listening_port = Some(number(lineno, key, need()?)?),
            "tls-listening-port" => conf.tls_listening_port = Some(number(lineno, key, need()?)?),
            "relay-ip" => conf.relay_ips.push(need()?),
            "external-ip" => conf.external_ips.push(need()?),
            "min-port" => conf.min_port = Some(number(lineno, key, need()?)?),
            "max-port" => conf.max_port = Some(number(lineno, key, need()?)?),
            "realm" => conf.realm = Some(need()?),
            "user" => conf.users.push(need()?),
            "lt-cred-mech" => conf.lt_cred_mech = true,
            "use-auth-secret" => conf.use_auth_secret = true,
            "static-auth-secret" => conf.static_auth_secret = Some(need()?),
            "no-tls" => conf.no_tls = true,
            "no-udp" => conf.no_udp = true,
            "no-tcp" => conf.no_tcp = true,
            "cert" => conf.cert = Some(need()?),
            "pkey" => conf.pkey = Some(need()?),
            "denied-peer-ip" => conf.denied_peer_ips.push(need()?),
            "allowed-peer-ip" => conf.allowed_peer_ips.push(need()?),
            "allow-loopback-peers" => conf.allow_loopback_peers = true,
            "user-quota" => conf.user_quota = Some(number(lineno, key, need()?)?),
            "total-quota" => conf.total_quota = Some(number(lineno, key, need()?)?),
            "max-bps" => conf.max_bps = Some(number(lineno, key, need()?)?),
            "max-allocate-lifetime" => {
                conf.max_allocate_lifetime = Some(number(lineno, key, need()?)?)
            }
            "stale-nonce" => {
                conf.stale_nonce = Some(match value.filter(|v| !v.is_empty()) {
                    Some(v) => number(lineno, key, v.to_owned())?,
                    None => STALE_NONCE,
                })
            }
            "permission-lifetime" => conf.permission_lifetime = Some(number(lineno, key, need()?)?),
            "channel-lifetime" => conf.channel_lifetime = Some(number(lineno, key, need()?)?),
            // The server's total bandwidth: 0, coturn's "no limit", is what Huddle does; a limit
            // is not acted on, and so named like any other ignored key.
            "bps-capacity" if value.is_some_and(|v| v.parse() == Ok(0u64)) => {}
            "verbose" | "Verbose" => conf.verbose = true,
            "prometheus" => conf.prometheus = true,
            "prometheus-port" => conf.prometheus_port = Some(number(lineno, key, need()?)?),
            "prometheus-address" => conf.prometheus_address = Some(need()?),
            k if IMPLIED.contains(&k) => {}
            other => {
                conf.ignored.insert(other.to_owned());
            }
        }
    }
    Ok(conf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_typical_coturn_file() {
        let conf = parse(
            "# coturn for our office\n\
             listening-port=3478\n\
             tls-listening-port 5349\n\
             listening-ip=0.0.0.0\n\
             external-ip=203.0.113.4/10.0.0.4\n\
             min-port=49160\nmax-port=49200\n\
             fingerprint\nlt-cred-mech\n\
             user=user1:pass1\nuser=user2:0x0123456789abcdef0123456789abcdef\n\
             realm=\"example.org\"\n\
             use-auth-secret\nstatic-auth-secret=north\n\
             denied-peer-ip=10.0.0.0-10.255.255.255\nallowed-peer-ip=10.0.5.1\n\
             allow-loopback-peers\nuser-quota=12\ntotal-quota=1200\nmax-bps=64000\n\
             no-tls\ncert=/etc/ssl/turn.pem\npkey=/etc/ssl/turn.key\n\
             prometheus\nprometheus-port=9642\n\
             max-allocate-lifetime=1800\nstale-nonce\nchannel-lifetime=300\n\
             bps-capacity=0\nno-tcp-relay\n\
             verbose\nlog-file=/var/log/turn.log\nno-cli\nmobility\n",
        )
        .unwrap();
        assert_eq!(conf.listening_port, Some(3478));
        assert_eq!(conf.tls_listening_port, Some(5349));
        assert_eq!(conf.external_ips, ["203.0.113.4/10.0.0.4"]);
        assert_eq!((conf.min_port, conf.max_port), (Some(49160), Some(49200)));
        assert_eq!(conf.users.len(), 2);
        assert_eq!(conf.realm.as_deref(), Some("example.org"));
        assert!(
            conf.use_auth_secret && conf.lt_cred_mech && conf.allow_loopback_peers && conf.no_tls
        );
        assert_eq!(conf.static_auth_secret.as_deref(), Some("north"));
        assert_eq!(conf.max_bps, Some(64000));
        assert!(conf.prometheus);
        assert_eq!(conf.max_allocate_lifetime, Some(1800));
        assert_eq!(conf.stale_nonce, Some(600));
        assert_eq!(conf.channel_lifetime, Some(300));
        assert_eq!(parse("stale-nonce=120\n").unwrap().stale_nonce, Some(120));
        let capped = parse("bps-capacity=1000000\n").unwrap();
        assert_eq!(capped.ignored.iter().collect::<Vec<_>>(), ["bps-capacity"]);
        assert_eq!(conf.prometheus_port, Some(9642));
        let ignored: Vec<_> = conf.ignored.iter().map(String::as_str).collect();
        assert_eq!(ignored, vec!["log-file", "mobility"]);
        assert!(conf.verbose);
    }

    #[test]
    fn errors_name_the_line() {
        assert_eq!(
            parse("realm=x\nmin-port=lots\n"),
            Err(ConfError::BadNumber {
                line: 2,
                key: "min-port".into(),
                value: "lots".into()
            })
        );
        assert_eq!(
            parse("listening-port=70000\n"),
            Err(ConfError::BadNumber {
                line: 1,
                key: "listening-port".into(),
                value: "70000".into()
            })
        );
        assert_eq!(
            parse("user\n"),
            Err(ConfError::MissingValue {
                line: 1,
                key: "user".into()
            })
        );
    }
}
