//! Serving HTTP connections: hyper on each accepted connection (HTTP/1.1 or HTTP/2, WebSocket
//! upgrades on both), with the bounds `axum::serve` does not set — the time to a request head,
//! idle keep-alive, connections per client address — and a shutdown that waits only for
//! connections still open.
//!
//! A connection is *busy* while a request is being answered or a WebSocket it carries is open;
//! otherwise it is idle, and an idle connection is closed after [`Limits::idle`] (before its first
//! request, after [`Limits::request_head`]). Bytes alone do not count: HTTP/2 pings or a head
//! trickled in one byte at a time keep no connection open.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tower::ServiceExt;

use crate::Limits;
use crate::listener::{HttpListener, Io};

/// Concurrent HTTP/2 streams per connection.
const MAX_STREAMS: u32 = 32;

/// How long a connection told to close (idle, or shutting down) may take to finish.
const CLOSING: Duration = Duration::from_secs(1);

/// Open connections per client IP. A slot is taken at accept and given back when the
/// connection's socket is dropped, wherever it is by then (an upgraded WebSocket keeps it).
pub struct PerIp {
    open: Mutex<HashMap<IpAddr, usize>>,
    max: usize,
}

impl PerIp {
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(Self {
            open: Mutex::new(HashMap::new()),
            max,
        })
    }

    /// A slot for one more connection from `ip`; `None` when it has `max` open already.
    pub fn take(self: &Arc<Self>, ip: IpAddr) -> Option<IpSlot> {
        let ip = crate::rate_limit::client_key(ip);
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let n = open.entry(ip).or_default();
        if *n >= self.max {
            return None;
        }
        *n += 1;
        Some(IpSlot {
            per_ip: self.clone(),
            ip,
        })
    }
}

pub struct IpSlot {
    per_ip: Arc<PerIp>,
    ip: IpAddr,
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let mut open = self.per_ip.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = open.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

/// A connection's stream together with its slot, so the slot lives exactly as long as the socket.
pub struct Held<S> {
    stream: S,
    _slot: IpSlot,
}

impl<S> Held<S> {
    pub fn new(stream: S, slot: IpSlot) -> Self {
        Self {
            stream,
            _slot: slot,
        }
    }

    pub fn get_ref(&self) -> &S {
        &self.stream
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Held<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Held<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

/// Whether a connection is busy, and since when it is idle. Handlers that keep a connection
/// busy beyond their response (a WebSocket) hold a [`Busy`] from [`Activity::begin`].
pub struct Activity {
    epoch: Instant,
    in_flight: AtomicUsize,
    /// Milliseconds after `epoch` at which the connection last became idle.
    idle_since: AtomicU64,
    /// Whether it ever had a request: before the first, the shorter head timeout applies.
    served: AtomicBool,
}

impl Activity {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            epoch: Instant::now(),
            in_flight: AtomicUsize::new(0),
            idle_since: AtomicU64::new(0),
            served: AtomicBool::new(false),
        })
    }

    pub fn begin(self: &Arc<Self>) -> Busy {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.served.store(true, Ordering::Release);
        Busy(self.clone())
    }

    /// When an idle connection is to be closed; `None` while busy.
    fn deadline(&self, limits: &Limits) -> Option<Instant> {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return None;
        }
        let since = self.epoch + Duration::from_millis(self.idle_since.load(Ordering::Acquire));
        let allowed = if !self.served.load(Ordering::Acquire) {
            limits.request_head
        } else {
            limits.idle
        };
        Some(since + allowed)
    }
}

/// Keeps a connection from counting as idle while it lives.
pub struct Busy(Arc<Activity>);

impl Drop for Busy {
    fn drop(&mut self) {
        let ms = u64::try_from(self.0.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.0.idle_since.store(ms, Ordering::Release);
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Serves `app` on every connection `listener` accepts until `stop` flips; then tells each
/// connection to finish (HTTP/2 GOAWAY, HTTP/1.1 closes when idle) and resolves once none is left.
pub async fn serve(
    mut listener: HttpListener,
    app: Router,
    limits: Limits,
    mut stop: watch::Receiver<bool>,
) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.request_head);
    // The CONNECT protocol carries WebSockets over HTTP/2 (RFC 8441).
    // Streams at once on one HTTP/2 connection: a page with its modules and its WebSocket
    // needs a handful; hyper's default of 200 would multiply the per-address connection cap.
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(MAX_STREAMS)
        .enable_connect_protocol();
    let builder = Arc::new(builder);
    // Every connection task holds a sender; when the last is gone, `recv` returns `None`.
    let (live, mut all_done) = mpsc::channel::<()>(1);
    loop {
        let (io, peer) = tokio::select! {
            _ = stop.wait_for(|s| *s) => break,
            accepted = listener.accept() => accepted,
        };
        let task = Connection {
            builder: builder.clone(),
            app: app.clone(),
            limits: limits.clone(),
            stop: stop.clone(),
            _live: live.clone(),
        };
        tokio::spawn(task.run(io, peer));
    }
    drop(live);
    let _ = all_done.recv().await;
}

struct Connection {
    builder: Arc<auto::Builder<TokioExecutor>>,
    app: Router,
    limits: Limits,
    stop: watch::Receiver<bool>,
    _live: mpsc::Sender<()>,
}

impl Connection {
    async fn run(mut self, io: Box<dyn Io>, peer: SocketAddr) {
        let activity = Activity::new();
        let app = self.app.clone();
        let conn_activity = activity.clone();
        let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
            let app = app.clone();
            let activity = conn_activity.clone();
            async move {
                let _busy = activity.begin();
                req.extensions_mut().insert(ConnectInfo(peer));
                req.extensions_mut().insert(activity.clone());
                app.oneshot(req.map(Body::new)).await
            }
        });
        let conn = self
            .builder
            .serve_connection_with_upgrades(TokioIo::new(io), service);
        tokio::pin!(conn);
        // Set once the connection was told to finish because it is idle: it gets `CLOSING`.
        let mut closing: Option<Instant> = None;
        let mut stopping = false;
        loop {
            let wake = closing
                .or_else(|| activity.deadline(&self.limits))
                .unwrap_or_else(|| Instant::now() + self.limits.idle);
            tokio::select! {
                result = conn.as_mut() => {
                    if let Err(e) = result {
                        tracing::trace!(%peer, error = %e, "HTTP connection ended with an error");
                    }
                    return;
                }
                // Shutdown: finish what is in progress; the server's grace bounds the wait, and
                // WebSockets close as the hub tells them.
                _ = self.stop.wait_for(|s| *s), if !stopping => {
                    stopping = true;
                    conn.as_mut().graceful_shutdown();
                }
                () = tokio::time::sleep_until(wake) => {
                    if closing.is_some_and(|at| at <= Instant::now()) {
                        return; // did not finish in time: drop it
                    }
                    if closing.is_none()
                        && activity.deadline(&self.limits).is_some_and(|at| at <= Instant::now())
                    {
                        tracing::debug!(%peer, "closing an idle HTTP connection");
                        conn.as_mut().graceful_shutdown();
                        closing = Some(Instant::now() + CLOSING);
                    }
                }
            }
        }
    }
}
