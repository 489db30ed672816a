//! TURN over TCP and TLS (RFC 8656 §3.1, §12.5): frames are STUN messages and padded ChannelData
//! back to back; the allocation lives as long as the connection.

use std::os::fd::AsRawFd;
use std::time::Duration;

use huddle_turn_proto::channel_data::frame_len;
use huddle_turn_proto::{FiveTuple, Transport};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;

use super::Turn;

/// A connection that sends nothing for this long is closed (a client with an allocation sends a
/// Refresh at least every ten minutes).
const IDLE: Duration = Duration::from_secs(11 * 60);
/// Frames queued for one stream client before new ones are dropped.
const QUEUE: usize = 256;
/// The largest frame: a STUN message or ChannelData of 64 KiB plus header and padding.
const MAX_FRAME: usize = 20 + 65_535 + 3;

/// Whether the first byte a client sent on a stream starts a STUN message. A TURN client opens
/// with a request (ChannelData needs a channel bound first), and no HTTP request starts with a
/// byte below 0x40, so one byte tells TURN from HTTP on a shared port.
pub fn looks_like_turn(first: u8) -> bool {
    first & 0xC0 == 0x00
}

impl Turn {
    pub(super) async fn accept_loop(
        self,
        listener: TcpListener,
        transport: Transport,
        tls: Option<TlsAcceptor>,
    ) {
        let Ok(local) = listener.local_addr() else {
            return;
        };
        loop {
            let (tcp, peer) = crate::listener::accept(&listener).await;
            if !crate::descriptors::admits(tcp.as_raw_fd()) {
                tracing::debug!(%peer, "TURN connection refused: descriptors are kept for the listeners");
                continue;
            }
            let five = FiveTuple {
                transport,
                client: peer,
                server: local,
            };
            let turn = self.clone();
            match (transport, tls.clone()) {
                (Transport::Tls, Some(acceptor)) => {
                    tokio::spawn(async move {
                        if let Ok(Ok(stream)) =
                            tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp))
                                .await
                        {
                            turn.serve_stream(stream, five).await;
                        }
                    });
                }
                (Transport::Tls, None) => {
                    tracing::error!("TURN TLS listener without a certificate");
                    return;
                }
                _ => {
                    tokio::spawn(turn.serve_stream(tcp, five));
                }
            }
        }
    }

    /// Serves one TCP or TLS client (also one sniffed off the HTTPS port) until it goes away.
    pub async fn serve_stream<S>(self, stream: S, five: FiveTuple)
    where
        S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        let (mut rd, mut wr) = tokio::io::split(stream);
        let (tx, mut rx) = mpsc::channel::<Vec<u8>>(QUEUE);
        self.lock().streams.insert(five, tx);
        let writer = tokio::spawn(async move {
            while let Some(frame) = rx.recv().await {
                if wr.write_all(&frame).await.is_err() {
                    break;
                }
            }
            let _ = wr.shutdown().await;
        });
        let mut buf = Vec::with_capacity(4096);
        let mut chunk = vec![0u8; 16 * 1024];
        'read: loop {
            let n = match tokio::time::timeout(IDLE, rd.read(&mut chunk)).await {
                Ok(Ok(n)) if n > 0 => n,
                _ => break,
            };
            buf.extend_from_slice(&chunk[..n]);
            loop {
                match frame_len(&buf) {
                    Ok(Some(len)) => {
                        self.handle_client_frame(five, &buf[..len]);
                        buf.drain(..len);
                    }
                    Ok(None) if buf.len() <= MAX_FRAME => break,
                    // Not TURN, or a frame larger than any valid one: this is no TURN client.
                    Ok(None) | Err(_) => break 'read,
                }
            }
        }
        {
            let mut st = self.lock();
            st.streams.remove(&five);
            st.core.handle_client_closed(five);
            self.drain(&mut st);
        }
        writer.abort();
    }
}
