//! `huddle turn`: the STUN/TURN server alone, as a coturn replacement.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use huddle_server::{Turn, TurnConfig};
use tokio::sync::watch;

use crate::LogFormat;
use crate::coturn::{self, CoturnConf};
use crate::relay::{RelayArgs, ips_of};

#[derive(Args, Debug)]
pub struct TurnArgs {
    /// A coturn `turnserver.conf` to read; the keys Huddle does not act on are listed at start.
    /// Flags given on the command line win over the file.
    #[arg(short = 'c', long = "config", value_name = "FILE")]
    coturn_config: Option<PathBuf>,

    /// UDP and TCP address to listen on; repeatable [default: 0.0.0.0:3478].
    #[arg(long, value_name = "ADDR:PORT")]
    listen: Vec<SocketAddr>,

    /// TLS address to listen on; repeatable [default: 0.0.0.0:5349 when --cert is given].
    #[arg(long, value_name = "ADDR:PORT")]
    tls_listen: Vec<SocketAddr>,

    /// PEM certificate chain for TURN over TLS.
    #[arg(long, value_name = "FILE", requires = "pkey")]
    cert: Option<PathBuf>,

    /// PEM private key for --cert.
    #[arg(long, value_name = "FILE", requires = "cert")]
    pkey: Option<PathBuf>,

    /// No UDP listener.
    #[arg(long)]
    no_udp: bool,
    /// No TCP listener.
    #[arg(long)]
    no_tcp: bool,
    /// No TLS listener.
    #[arg(long)]
    no_tls: bool,

    /// Serve Prometheus metrics and /healthz over plain HTTP here, e.g. 127.0.0.1:9641 (coturn's
    /// `prometheus` key turns it on at port 9641, or `prometheus-port`).
    #[arg(long, value_name = "ADDR:PORT")]
    metrics_listen: Option<SocketAddr>,

    #[command(flatten)]
    relay: RelayArgs,

    /// Log output format.
    #[arg(long, value_enum, default_value_t)]
    log_format: LogFormat,

    /// Log every allocation as it begins and ends (coturn's `verbose`); `RUST_LOG` overrides.
    #[arg(short, long)]
    verbose: bool,
}

/// The log filter of `--verbose`: the allocation log on top of the usual lines.
const VERBOSE: &str = "info,huddle_server::turn=debug";

impl TurnArgs {
    /// Folds the coturn file in: anything the command line left unset comes from it.
    fn merge(&mut self, conf: CoturnConf) -> anyhow::Result<()> {
        let port = conf.listening_port.unwrap_or(3478);
        let tls_port = conf.tls_listening_port.unwrap_or(5349);
        let ips: Vec<IpAddr> = if conf.listening_ips.is_empty() {
            vec![IpAddr::V4(Ipv4Addr::UNSPECIFIED)]
        } else {
            conf.listening_ips
                .iter()
                .filter_map(|ip| ip.parse().ok())
                .collect()
        };
        if self.listen.is_empty() {
            self.listen = ips.iter().map(|ip| SocketAddr::new(*ip, port)).collect();
        }
        if self.cert.is_none() {
            self.cert = conf.cert.map(PathBuf::from);
            self.pkey = conf.pkey.map(PathBuf::from);
        }
        if self.tls_listen.is_empty() && self.cert.is_some() && !conf.no_tls {
            self.tls_listen = ips
                .iter()
                .map(|ip| SocketAddr::new(*ip, tls_port))
                .collect();
        }
        if self.metrics_listen.is_none() && conf.prometheus {
            let ip = match &conf.prometheus_address {
                Some(ip) => ip
                    .parse()
                    .with_context(|| format!("prometheus-address={ip}"))?,
                None => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            };
            let port = conf.prometheus_port.unwrap_or(coturn::PROMETHEUS_PORT);
            self.metrics_listen = Some(SocketAddr::new(ip, port));
        }
        self.no_udp |= conf.no_udp;
        self.no_tcp |= conf.no_tcp;
        self.no_tls |= conf.no_tls;
        let r = &mut self.relay;
        r.realm = r.realm.take().or(conf.realm);
        if r.relay_ip.is_none() && !conf.relay_ips.is_empty() {
            r.relay_ip = Some(
                conf.relay_ips
                    .iter()
                    .map(|ip| ip.parse().with_context(|| format!("relay-ip={ip}")))
                    .collect::<anyhow::Result<_>>()?,
            );
        }
        if r.external_ip.is_none() && !conf.external_ips.is_empty() {
            r.external_ip = Some(conf.external_ips);
        }
        if r.relay_ports.is_none() && (conf.min_port.is_some() || conf.max_port.is_some()) {
            r.relay_ports = Some(format!(
                "{}-{}",
                conf.min_port.unwrap_or(49152),
                conf.max_port.unwrap_or(65535)
            ));
        }
        if r.user.is_none() && !conf.users.is_empty() {
            r.user = Some(conf.users);
        }
        if r.auth_secret.is_none() && conf.use_auth_secret {
            r.auth_secret = conf.static_auth_secret;
        }
        r.allow_loopback_peers = r
            .allow_loopback_peers
            .or(conf.allow_loopback_peers.then_some(true));
        if r.allowed_peer_ip.is_none() && !conf.allowed_peer_ips.is_empty() {
            r.allowed_peer_ip = Some(conf.allowed_peer_ips);
        }
        if r.denied_peer_ip.is_none() && !conf.denied_peer_ips.is_empty() {
            r.denied_peer_ip = Some(conf.denied_peer_ips);
        }
        r.user_quota = r.user_quota.or(conf.user_quota);
        r.total_quota = r.total_quota.or(conf.total_quota);
        r.max_bps = r.max_bps.or(conf.max_bps);
        r.max_allocate_lifetime = r.max_allocate_lifetime.or(conf.max_allocate_lifetime);
        r.stale_nonce = r.stale_nonce.or(conf.stale_nonce);
        r.permission_lifetime = r.permission_lifetime.or(conf.permission_lifetime);
        r.channel_lifetime = r.channel_lifetime.or(conf.channel_lifetime);
        Ok(())
    }

    fn resolve(mut self) -> anyhow::Result<TurnConfig> {
        if self.listen.is_empty() {
            self.listen.push(SocketAddr::from(([0, 0, 0, 0], 3478)));
        }
        let tls_config = match (&self.cert, &self.pkey) {
            (Some(cert), Some(key)) if !self.no_tls => {
                if self.tls_listen.is_empty() {
                    let ip = self.listen[0].ip();
                    self.tls_listen.push(SocketAddr::new(ip, 5349));
                }
                let identity = huddle_server::Identity::from_files(cert, key)?;
                Some(identity.server_config(&[])?)
            }
            _ => {
                self.tls_listen.clear();
                None
            }
        };
        let core = self.relay.core_config(&ips_of(&self.listen), None)?;
        anyhow::ensure!(
            !core.credentials.users.is_empty() || core.credentials.rest_secret.is_some(),
            "no way to authenticate: give --user NAME:PASS or --auth-secret (or user= / static-auth-secret in the config)"
        );
        Ok(TurnConfig {
            core,
            udp: if self.no_udp {
                Vec::new()
            } else {
                self.listen.clone()
            },
            tcp: if self.no_tcp {
                Vec::new()
            } else {
                self.listen.clone()
            },
            tls: self.tls_listen,
            tls_config,
        })
    }
}

pub async fn run(mut args: TurnArgs) -> anyhow::Result<()> {
    // The file is read before logging starts: its `verbose` key sets the level.
    let file = match args.coturn_config.clone() {
        Some(path) => {
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            let conf = coturn::parse(&text).with_context(|| format!("in {}", path.display()))?;
            Some((path, conf))
        }
        None => None,
    };
    let verbose = args.verbose || file.as_ref().is_some_and(|(_, conf)| conf.verbose);
    crate::init_logging(args.log_format, if verbose { VERBOSE } else { "info" });
    crate::raise_descriptor_limit();
    if let Some((path, conf)) = file {
        if !conf.ignored.is_empty() {
            let keys: Vec<&str> = conf.ignored.iter().map(String::as_str).collect();
            tracing::warn!(
                "{}: ignored keys Huddle does not act on: {}",
                path.display(),
                keys.join(", ")
            );
            eprintln!("note: {} keys ignored: {}", path.display(), keys.join(", "));
        }
        args.merge(conf)?;
    }
    let metrics_listen = args.metrics_listen;
    let config = args.resolve()?;
    let relays = [config.core.relay_v4, config.core.relay_v6];
    let (stop_tx, stop_rx) = watch::channel(false);
    let (turn, addrs) = Turn::start(config, stop_rx.clone())
        .await
        .context("cannot start the TURN server")?;
    let metrics = match metrics_listen {
        Some(addr) => Some(huddle_server::serve_turn_metrics(addr, turn, stop_rx).await?),
        None => None,
    };
    println!("Huddle TURN is serving.");
    for a in &addrs.udp {
        println!("  udp  {a}");
    }
    for a in &addrs.tcp {
        println!("  tcp  {a}");
    }
    for a in &addrs.tls {
        println!("  tls  {a}");
    }
    for r in relays.into_iter().flatten() {
        println!("  relay {} (advertised as {})", r.bind, r.advertised);
    }
    if let Some(addr) = metrics {
        println!("  metrics http://{addr}/metrics");
    }
    crate::stop_signal().await;
    let _ = stop_tx.send(true);
    Ok(())
}
