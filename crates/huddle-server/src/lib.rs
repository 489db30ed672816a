//! All of Huddle's I/O: the HTTPS listener, WebSocket signaling around the sans-IO room core,
//! the embedded web client, metrics and graceful shutdown.
//!
//! ```no_run
//! # async fn demo() -> Result<(), huddle_server::ServerError> {
//! let config = huddle_server::Config::plain("127.0.0.1:0".parse().unwrap());
//! let server = huddle_server::Server::bind(config).await?;
//! println!("listening on {}", server.local_addr());
//! server.run(async { let _ = tokio::signal::ctrl_c().await; }).await
//! # }
//! ```

mod config;
mod http;
mod hub;
mod ice;
mod listener;
mod metrics;
mod tls;
mod turn;
mod web;

use std::future::Future;
use std::net::SocketAddr;

pub use config::{Config, TlsSource};
pub use tls::{Identity, TlsError};
pub use turn::{Turn, TurnAddrs, TurnConfig};

use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::hub::Hub;
use crate::ice::IceServers;
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
}

/// This host's interface addresses (IPv6 link-local ones left out: a URL cannot use them without a
/// zone), for printing where the server can be reached.
pub fn interface_addresses() -> Vec<std::net::IpAddr> {
    if_addrs::get_if_addrs()
        .unwrap_or_default()
        .into_iter()
        .map(|iface| iface.ip())
        .filter(|ip| !matches!(ip, std::net::IpAddr::V6(v6) if v6.is_unicast_link_local()))
        .collect()
}

/// A bound, not yet running server. Binding first lets a caller learn the port (tests bind port 0)
/// and the certificate before serving.
pub struct Server {
    config: Config,
    tcp: TcpListener,
    identity: Option<Identity>,
}

impl Server {
    pub async fn bind(config: Config) -> Result<Self, ServerError> {
        let identity = match &config.tls {
            TlsSource::SelfSigned { dir } => Some(Identity::self_signed(dir)?),
            TlsSource::Files { cert, key } => Some(Identity::from_files(cert, key)?),
            TlsSource::Off => None,
        };
        let addr = config.listen;
        let tcp = TcpListener::bind(addr)
            .await
            .map_err(|source| ServerError::Bind { addr, source })?;
        Ok(Self {
            config,
            tcp,
            identity,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        // A bound listener always has an address.
        self.tcp
            .local_addr()
            .expect("bound listener has an address")
    }

    /// The certificate's SHA-256 fingerprint, when serving HTTPS.
    pub fn fingerprint(&self) -> Option<&str> {
        self.identity.as_ref().map(|i| i.fingerprint.as_str())
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
        let tls = match &self.identity {
            Some(identity) => Some(identity.server_config(&[b"http/1.1"])?),
            None => None,
        };
        let listener = HttpListener::spawn(self.tcp, tls, None).map_err(ServerError::Serve)?;
        let (stop_tx, stop_rx) = watch::channel(false);
        let ice = IceServers {
            static_servers: self.config.ice_servers.clone(),
        };
        let (hub, hub_task) = Hub::spawn(self.config.rooms.clone(), ice.clone(), stop_rx.clone());
        let app = http::router(http::AppState { hub, ice });

        let mut stopped = stop_rx.clone();
        let serve = axum::serve(listener, app).with_graceful_shutdown(async move {
            let _ = stopped.wait_for(|stop| *stop).await;
        });
        let serve = tokio::spawn(async move { serve.await });
        shutdown.await;
        tracing::info!("shutting down: telling clients");
        let _ = stop_tx.send(true);
        let _ = hub_task.await;
        match tokio::time::timeout(self.config.shutdown_grace, serve).await {
            Ok(Ok(result)) => result.map_err(ServerError::Serve),
            Ok(Err(join)) => Err(ServerError::Serve(std::io::Error::other(join))),
            Err(_) => {
                tracing::info!("connections still open after the grace period; exiting anyway");
                Ok(())
            }
        }
    }
}
