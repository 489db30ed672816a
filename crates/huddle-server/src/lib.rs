//! All of Huddle's I/O: the HTTPS listener, WebSocket signaling around the sans-IO room core,
//! the TURN server around the sans-IO TURN core, the embedded web client, metrics and graceful
//! shutdown.
//!
//! ```no_run
//! # async fn demo() -> Result<(), huddle_server::ServerError> {
//! let config = huddle_server::Config::plain("127.0.0.1:0".parse().unwrap());
//! let server = huddle_server::Server::bind(config).await?;
//! println!("listening on {}", server.local_addr());
//! server.run(async { let _ = tokio::signal::ctrl_c().await; }).await
//! # }
//! ```

mod cluster;
mod config;
mod connections;
mod descriptors;
mod http;
mod hub;
mod ice;
mod listener;
mod media;
mod metrics;
mod rate_limit;
mod redirect;
mod revocations;
mod tls;
mod turn;
pub mod udp;
mod web;

use std::future::Future;
use std::net::{IpAddr, SocketAddr};

pub use cluster::{ClusterConfig, ClusterError};
pub use config::{Config, Limits, ServeTurn, TlsSource};
pub use descriptors::raise_limit;
pub use media::{AcceptError, Media, MediaConfig, Requester, room_worker};
pub use tls::{Identity, TlsError};
pub use turn::{Turn, TurnAddrs, TurnConfig};

use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::hub::Hub;
use crate::ice::{IceServers, TurnIce};
use crate::listener::HttpListener;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("HTTP server failed: {0}")]
    Serve(std::io::Error),
    #[error("cannot start the TURN server: {0}")]
    Turn(std::io::Error),
    #[error("cannot join the cluster: {0}")]
    Cluster(#[from] ClusterError),
    #[error("cannot start the media peer on UDP {addr}: {source}")]
    Media {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// Failed authentications (a WebSocket closed for its token) one client IP may have at once
/// before its WebSocket upgrades are refused; one more is forgiven each second.
const AUTH_FAILURE_BURST: u32 = 20;

/// Serves `huddle turn`'s metrics (`/metrics`, `/healthz`, plain HTTP — what coturn's
/// `prometheus` option gives) on `addr` until `shutdown` flips; returns the bound address.
pub async fn serve_turn_metrics(
    addr: SocketAddr,
    turn: Turn,
    mut shutdown: watch::Receiver<bool>,
) -> Result<SocketAddr, ServerError> {
    let bind = |source| ServerError::Bind { addr, source };
    let listener = TcpListener::bind(addr).await.map_err(bind)?;
    let local = listener.local_addr().map_err(bind)?;
    let serve =
        axum::serve(listener, http::turn_metrics_router(turn)).with_graceful_shutdown(async move {
            let _ = shutdown.wait_for(|stop| *stop).await;
        });
    tokio::spawn(async move {
        if let Err(e) = serve.await {
            tracing::warn!(error = %e, "metrics server failed");
        }
    });
    Ok(local)
}

/// This host's interface addresses (IPv6 link-local ones left out: a URL cannot use them without a
/// zone), for printing where the server can be reached.
pub fn interface_addresses() -> Vec<IpAddr> {
    if_addrs::get_if_addrs()
        .unwrap_or_default()
        .into_iter()
        .map(|iface| iface.ip())
        .filter(|ip| !matches!(ip, IpAddr::V6(v6) if v6.is_unicast_link_local()))
        .collect()
}

/// A bound, not yet running server. Binding first lets a caller learn the ports (tests bind port
/// 0) and the certificate before serving. The TURN server, if any, already runs.
pub struct Server {
    config: Config,
    tcp: TcpListener,
    identity: Option<Identity>,
    turn: Option<(Turn, TurnAddrs)>,
    media: Option<Media>,
    cluster: Option<(cluster::Cluster, ClusterEvents, cluster::Runner)>,
    stop: (watch::Sender<bool>, watch::Receiver<bool>),
}

type ClusterEvents = tokio::sync::mpsc::Receiver<cluster::ClusterEvent>;

impl Server {
    pub async fn bind(config: Config) -> Result<Self, ServerError> {
        let identity = match &config.tls {
            TlsSource::SelfSigned { dir } => {
                Some(Identity::self_signed(dir, config.public_host.as_deref())?)
            }
            TlsSource::Files { cert, key } => Some(Identity::from_files(cert, key)?),
            TlsSource::Off => None,
        };
        let addr = config.listen;
        let tcp = TcpListener::bind(addr)
            .await
            .map_err(|source| ServerError::Bind { addr, source })?;
        let stop = watch::channel(false);
        let cluster = config
            .cluster
            .clone()
            .map(cluster::Cluster::new)
            .transpose()?;
        let media = match &config.media {
            Some(media_config) => Some(
                Media::start(media_config.clone(), stop.1.clone())
                    .await
                    .map_err(|source| ServerError::Media {
                        addr: media_config.listen,
                        source,
                    })?,
            ),
            None => None,
        };
        let turn = match &config.turn {
            Some(serve_turn) => {
                let mut turn_config = serve_turn.config.clone();
                turn_config.core.credentials.rest_secret = Some(serve_turn.secret.clone());
                match &identity {
                    Some(identity) => turn_config.tls_config = Some(identity.server_config(&[])?),
                    None => turn_config.tls.clear(),
                }
                // Browsers that reach nothing but our TURN server (UDP blocked, TLS on 443 only)
                // still reach the media peer through it: its addresses, and only those ports.
                if let Some(media) = &media {
                    turn_config
                        .core
                        .peers
                        .services
                        .extend(media.reachable_addrs());
                }
                Some(
                    Turn::start(turn_config, stop.1.clone())
                        .await
                        .map_err(ServerError::Turn)?,
                )
            }
            None => None,
        };
        Ok(Self {
            config,
            tcp,
            identity,
            turn,
            media,
            cluster,
            stop,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        // A bound listener always has an address.
        self.tcp
            .local_addr()
            .expect("bound listener has an address")
    }

    /// Where the TURN server listens, when it runs.
    pub fn turn_addrs(&self) -> Option<&TurnAddrs> {
        self.turn.as_ref().map(|(_, addrs)| addrs)
    }

    /// The media workers' UDP ports, when the media peer runs.
    pub fn media_ports(&self) -> Option<Vec<u16>> {
        self.media.as_ref().map(Media::ports)
    }

    /// The certificate's SHA-256 fingerprint, when serving HTTPS.
    pub fn fingerprint(&self) -> Option<&str> {
        self.identity.as_ref().map(|i| i.fingerprint.as_str())
    }

    /// The keys access tokens are checked against (empty: rooms are open).
    pub fn access_keys(&self) -> &huddle_access::Keys {
        &self.config.rooms.access
    }

    /// The certificate file in use, when serving HTTPS.
    pub fn cert_path(&self) -> Option<&std::path::Path> {
        self.identity.as_ref().map(|i| i.cert_path.as_path())
    }

    /// Serves until `shutdown` resolves, then tells every client, waits up to the configured grace
    /// for connections to close, and returns.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServerError> {
        let local = self.local_addr();
        let tls = match &self.identity {
            // h2 lets the page and its modules share one connection; WebSockets use HTTP/1.1.
            Some(identity) => Some(identity.server_config(&[b"h2", b"http/1.1"])?),
            None => None,
        };
        let turn = self.turn.as_ref().map(|(turn, _)| turn.clone());
        let on_https = tls.is_some() && self.config.turn.as_ref().is_some_and(|t| t.on_https);
        let sniffing = turn.clone().filter(|_| on_https);
        let limits = self.config.limits.clone();
        let per_ip = connections::PerIp::new(limits.connections_per_ip);
        let listener = HttpListener::spawn(self.tcp, tls, sniffing, per_ip, self.stop.1.clone())
            .map_err(ServerError::Serve)?;
        let ice = IceServers {
            static_servers: self.config.ice_servers.clone(),
            public_host: self.config.public_host.clone(),
            turn: self
                .config
                .turn
                .as_ref()
                .zip(self.turn.as_ref())
                .map(|(cfg, (_, addrs))| TurnIce {
                    secret: cfg.secret.clone(),
                    ttl: cfg.credential_ttl,
                    udp_port: addrs.udp.first().map(|a| a.port()),
                    tcp_port: addrs.tcp.first().map(|a| a.port()),
                    tls_ports: addrs
                        .tls
                        .iter()
                        .map(|a| a.port())
                        .chain(on_https.then_some(local.port()))
                        .collect(),
                }),
        };
        let (stop_tx, stop_rx) = self.stop;
        let revocations = revocations::Revocations::default();
        let (cluster, cluster_events, cluster_runner) = match self.cluster {
            Some((cluster, events, runner)) => (Some(cluster), Some(events), Some(runner)),
            None => (None, None, None),
        };
        let effects = hub::Effects {
            ice: ice.clone(),
            revocations: revocations.clone(),
            media: self.media.clone(),
            cluster: cluster.clone(),
        };
        let rooms = huddle_signal_proto::Config {
            placement: cluster.is_some(),
            ..self.config.rooms.clone()
        };
        let (hub, hub_task) = Hub::spawn(
            rooms,
            effects,
            cluster_events,
            limits.ws_write,
            stop_rx.clone(),
        );
        if let Some(runner) = cluster_runner {
            runner.spawn(hub.clone(), self.media.clone());
        }
        let local_host = match local.ip() {
            ip if ip.is_unspecified() => "localhost".to_owned(),
            IpAddr::V6(v6) => format!("[{v6}]"),
            IpAddr::V4(v4) => v4.to_string(),
        };
        let app = http::router(http::AppState {
            hub: hub.clone(),
            cluster: cluster.clone(),
            ice,
            local_host,
            turn,
            media: self.media.clone(),
            api_rate: http::PerIpRate::new(limits.api_per_second, limits.api_burst),
            auth_failures: http::PerIpRate::new(1, AUTH_FAILURE_BURST),
            keys: self.config.rooms.access.clone(),
            revocations,
            ws_per_client: connections::PerIp::new(limits.websockets_per_ip),
        });

        let serve = tokio::spawn(connections::serve(listener, app, limits, stop_rx.clone()));
        shutdown.await;
        if let Some(cluster) = &cluster {
            drain(cluster, &hub).await;
        }
        tracing::info!("shutting down: telling clients");
        let _ = stop_tx.send(true);
        let _ = hub_task.await;
        if let Some(cluster) = &cluster {
            cluster.stop().await;
        }
        // Connections and the media thread (which says goodbye to every browser over DTLS)
        // finish together, within the one grace.
        let media = self.media.clone();
        let media_done = async move {
            if let Some(media) = media {
                media.finished().await;
            }
        };
        let (served, ()) = match tokio::time::timeout(
            self.config.shutdown_grace,
            futures_util::future::join(serve, media_done),
        )
        .await
        {
            Ok(done) => done,
            Err(_) => {
                tracing::info!("connections still open after the grace period; exiting anyway");
                return Ok(());
            }
        };
        served.map_err(|join| ServerError::Serve(std::io::Error::other(join)))
    }
}

/// A stopping node of a cluster: no new rooms come here, every page is told to move to another
/// node, and the node waits (up to `--drain-timeout`) for them to go.
async fn drain(cluster: &cluster::Cluster, hub: &Hub) {
    tracing::info!("draining: sending every page to another node");
    cluster.drain().await;
    // Every node's view of the cluster (refreshed each heartbeat) learns that this one is
    // draining before its pages arrive there, so none is sent back here.
    tokio::time::sleep(cluster.heartbeat() + std::time::Duration::from_millis(500)).await;
    hub.drain().await;
    let deadline = tokio::time::Instant::now() + cluster.drain_timeout();
    while tokio::time::Instant::now() < deadline {
        if hub.stats().await.is_none_or(|s| s.connections == 0) {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    tracing::info!("drain timeout: closing the connections still open");
}
