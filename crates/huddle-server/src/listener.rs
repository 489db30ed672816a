//! The HTTPS listener: TCP accept, then the TLS handshake off the accept loop, so one slow client
//! never holds up the next. `connections::serve` takes the connections from here.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use huddle_turn_proto::{FiveTuple, Transport};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio_rustls::TlsAcceptor;

use crate::connections::{Held, PerIp};
use crate::turn::{Prefixed, Turn, looks_like_turn};

/// Handshakes that take longer than this are dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

pub trait Io: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Io for T {}

pub struct HttpListener {
    ready: mpsc::Receiver<(Box<dyn Io>, SocketAddr)>,
}

impl HttpListener {
    /// Starts accepting on `tcp`; with `tls`, every connection is a TLS one, and with `turn` as
    /// well, a TLS connection whose first bytes are STUN goes to the TURN server instead of HTTP
    /// (TURN on 443 for networks that allow nothing else). A client address with `per_ip`'s
    /// share of connections open already has the next one closed at once. Accepting ends when
    /// `stop` flips.
    pub fn spawn(
        tcp: TcpListener,
        tls: Option<Arc<rustls::ServerConfig>>,
        turn: Option<Turn>,
        per_ip: Arc<PerIp>,
        mut stop: watch::Receiver<bool>,
    ) -> io::Result<Self> {
        let local = tcp.local_addr()?;
        let (tx, ready) = mpsc::channel(256);
        let acceptor = tls.map(TlsAcceptor::from);
        tokio::spawn(async move {
            loop {
                // At shutdown the port is let go: nothing new is accepted or handshaken.
                let (stream, peer) = tokio::select! {
                    _ = stop.wait_for(|s| *s) => return,
                    accepted = accept(&tcp) => accepted,
                };
                let Some(slot) = per_ip.take(peer.ip()) else {
                    tracing::debug!(%peer, "too many connections from this address; closed");
                    continue;
                };
                let stream = Held::new(stream, slot);
                let tx = tx.clone();
                let acceptor = acceptor.clone();
                let turn = turn.clone();
                tokio::spawn(async move {
                    let io: Box<dyn Io> = match acceptor {
                        None => Box::new(stream),
                        Some(acceptor) => {
                            if crate::redirect::is_plain_http(stream.get_ref()).await {
                                return crate::redirect::redirect(stream, local).await;
                            }
                            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream))
                                .await
                            {
                                Ok(Ok(tls)) => match turn {
                                    None => Box::new(tls),
                                    Some(turn) => match sniff(tls, turn, peer, local).await {
                                        Some(http) => http,
                                        None => return,
                                    },
                                },
                                Ok(Err(e)) => {
                                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                                    return;
                                }
                                Err(_) => {
                                    tracing::debug!(%peer, "TLS handshake timed out");
                                    return;
                                }
                            }
                        }
                    };
                    let _ = tx.send((io, peer)).await;
                });
            }
        });
        Ok(Self { ready })
    }
}

/// The next connection, with Nagle off (signaling and TURN frames are small and latency-bound).
/// Accept errors (EMFILE and friends) are logged and waited out instead of spun on.
pub(crate) async fn accept(listener: &TcpListener) -> (tokio::net::TcpStream, SocketAddr) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                let _ = stream.set_nodelay(true);
                return (stream, peer);
            }
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Reads the first bytes of a TLS connection: STUN goes to `turn` (and `None` comes back),
/// anything else is returned, bytes put back, for HTTP.
async fn sniff<S>(
    mut tls: S,
    turn: Turn,
    peer: SocketAddr,
    local: SocketAddr,
) -> Option<Box<dyn Io>>
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let mut first = vec![0u8; 2048];
    let n = match tokio::time::timeout(HANDSHAKE_TIMEOUT, tls.read(&mut first)).await {
        Ok(Ok(n)) if n > 0 => n,
        _ => return None,
    };
    first.truncate(n);
    let is_turn = looks_like_turn(first[0]);
    let stream = Prefixed::new(first, tls);
    if is_turn {
        let five = FiveTuple {
            transport: Transport::Tls,
            client: peer,
            server: local,
        };
        turn.serve_stream(stream, five).await;
        return None;
    }
    Some(Box::new(stream))
}

impl HttpListener {
    /// The next connection, handshake done.
    pub async fn accept(&mut self) -> (Box<dyn Io>, SocketAddr) {
        match self.ready.recv().await {
            Some(conn) => conn,
            // The accept task never ends while the listener lives; if it somehow did, park.
            None => std::future::pending().await,
        }
    }
}
