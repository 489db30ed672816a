//! The media peer's I/O: media workers, each a thread that owns a sans-IO
//! [`huddle_media::Engine`] and the UDP sockets of its own port, and the transcoder threads for
//! transformed video.
//!
//! A worker drives its engine (str0m wants one owner per `Rtc`) and reads its sockets itself,
//! handing each datagram to the engine straight from the receive buffer. There is one worker per
//! core (mediasoup's model): a room's sessions all live on the worker its name picks, so a room
//! is never split and its frames never cross threads, while a machine's rooms use every core.
//! Decoding and encoding run on a thread per transformed session, never on a worker.

mod alarm;
pub(crate) mod routes;
mod sfu;
mod transcode;

pub use sfu::SfuEvent;

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Instant;

use futures_util::FutureExt;
use huddle_media::{
    CloseReason, Engine, EngineConfig, LocalAddr, OfferError, Output, SessionId, SessionKind,
    Transmit,
};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot, watch};

use std::os::fd::AsRawFd;

use self::alarm::Alarm;
use self::transcode::Transcoders;
use crate::udp::batch::{self, ReadableUdp, RecvBatch, SendRoom};

/// `huddle serve`'s media settings.
#[derive(Debug, Clone)]
pub struct MediaConfig {
    /// UDP address of the first worker's sessions; worker `i` uses the port after it by `i`
    /// (port 0: each picks one). An unspecified IP binds each interface address on the port,
    /// so that arriving datagrams tell which local address they were sent to.
    pub listen: SocketAddr,
    /// Media workers: threads with an engine and a port each.
    pub workers: usize,
    /// The address to put in candidates when the host is behind a 1:1 NAT.
    pub public_ip: Option<IpAddr>,
    /// WHIP/WHEP need `Authorization: Bearer <token>` when set.
    pub whip_token: Option<String>,
    pub max_sessions: usize,
    /// Sessions one client address may hold at once (429 beyond).
    pub max_sessions_per_client: usize,
}

impl MediaConfig {
    pub fn new(listen: SocketAddr) -> Self {
        MediaConfig {
            listen,
            workers: std::thread::available_parallelism().map_or(1, usize::from),
            public_ip: None,
            whip_token: None,
            max_sessions: 1000,
            max_sessions_per_client: 32,
        }
    }
}

/// Counters for `/metrics`.
#[derive(Debug, Default)]
pub struct MediaCounters {
    pub sessions_created: AtomicU64,
    pub frames_transcoded: AtomicU64,
    /// Frames not transformed because a newer one was waiting (the worker was behind).
    pub frames_skipped: AtomicU64,
    /// Frames dropped because a worker's queue was full.
    pub frames_dropped: AtomicU64,
    pub datagrams_unmatched: AtomicU64,
    /// Datagrams dropped because a socket's send buffer stayed full past the backlog.
    pub datagrams_dropped: AtomicU64,
}

#[derive(Debug, Clone, Default)]
pub struct MediaStats {
    pub echo: usize,
    pub publish: usize,
    pub watch: usize,
    /// SFU room pages' sending and receiving connections.
    pub upstream: usize,
    pub downstream: usize,
    /// Rooms with a WHIP publisher or a WHEP viewer (a cluster node keeps their leases).
    pub streamed_rooms: std::collections::BTreeSet<String>,
}

impl std::ops::AddAssign for MediaStats {
    fn add_assign(&mut self, other: MediaStats) {
        self.echo += other.echo;
        self.publish += other.publish;
        self.watch += other.watch;
        self.upstream += other.upstream;
        self.downstream += other.downstream;
        self.streamed_rooms.extend(other.streamed_rooms);
    }
}

/// Requests from the HTTP handlers waiting for the media thread. A full queue answers 503
/// rather than queueing without bound.
const COMMANDS: usize = 256;

/// Encoded frames and keyframe requests from the transcoders waiting for the media thread; a
/// transcoder that finds it full drops that frame (its encoder then starts afresh with a
/// keyframe).
const RESULTS: usize = 1024;

enum Command {
    Accept {
        kind: SessionKind,
        offer: String,
        from: Requester,
        reply: oneshot::Sender<Result<Accepted, AcceptError>>,
    },
    /// Ends the session behind a WHIP/WHEP resource of `room`; replies whether there was one.
    Delete {
        room: String,
        resource: String,
        reply: oneshot::Sender<bool>,
    },
    /// Ends the sessions of a token or identity an admin removed from `room`.
    Revoke {
        room: String,
        revocation: huddle_signal_proto::Revocation,
    },
    Encoded {
        session: SessionId,
        media_time: huddle_media::MediaTime,
        frame: Vec<u8>,
    },
    NeedKeyframe(SessionId),
    Stats(oneshot::Sender<MediaStats>),
    /// A participant of an SFU room, from the room core.
    Sfu(huddle_signal_proto::MediaRequest),
    /// Where messages for SFU room pages go (the hub, which delivers them).
    Hub(mpsc::Sender<SfuEvent>),
}

/// Which of `workers` media workers serves `room` (its name's hash): the benchmark places its
/// rooms by it too.
pub fn room_worker(room: &str, workers: usize) -> usize {
    let mut h = std::hash::DefaultHasher::new();
    std::hash::Hash::hash(room, &mut h);
    std::hash::Hasher::finish(&h) as usize % workers.max(1)
}

/// Handle to the media workers. Cheap to clone.
#[derive(Clone)]
pub struct Media {
    workers: Arc<[Worker]>,
    /// Where the next session of no room goes (they take turns).
    next: Arc<AtomicUsize>,
    addrs: Arc<Vec<LocalAddr>>,
    pub(crate) config: Arc<MediaConfig>,
    pub(crate) counters: Arc<MediaCounters>,
}

/// One media worker's thread, as the handle sees it.
struct Worker {
    commands: mpsc::Sender<Command>,
    /// Closed when the thread has ended (its sender is dropped with the thread's state).
    finished: watch::Receiver<()>,
}

/// What the workers share: the limits that hold for the server as a whole.
struct Shared {
    counters: Arc<MediaCounters>,
    /// Sessions per client address.
    per_client: Mutex<HashMap<IpAddr, usize>>,
    max_per_client: usize,
    /// Sessions each worker holds, as it last said.
    sessions: Vec<AtomicUsize>,
    max_sessions: usize,
}

impl Shared {
    fn sessions(&self) -> usize {
        self.sessions
            .iter()
            .map(|n| n.load(Ordering::Relaxed))
            .sum()
    }

    /// Counts a session of `client` if it may have one more, checked and counted under one
    /// lock so two workers cannot both take the last; else the number it holds.
    fn take_slot(&self, client: IpAddr) -> Result<(), usize> {
        let mut clients = self.clients();
        let held = clients.entry(client).or_default();
        if *held >= self.max_per_client {
            return Err(*held);
        }
        *held += 1;
        Ok(())
    }

    /// Gives back a slot `take_slot` counted (the session ended, or was never made).
    fn release_slot(&self, client: IpAddr) {
        let mut clients = self.clients();
        if let Some(n) = clients.get_mut(&client) {
            *n -= 1;
            if *n == 0 {
                clients.remove(&client);
            }
        }
    }

    fn clients(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, usize>> {
        // A worker that panicked holding the lock left whole counts behind (each update is a
        // single insert or decrement), so the map is still right.
        self.per_client
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}
/// Who asks for a session: the client's address (sessions are capped per address) and, on a
/// server with access keys, the token's revocation id and `KEY:identity` (a removal ends the
/// session).
#[derive(Debug, Clone)]
pub struct Requester {
    pub client: IpAddr,
    pub owner: Option<(String, String)>,
}

/// Why a session was not made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AcceptError {
    #[error(transparent)]
    Offer(#[from] OfferError),
    #[error("this address has {0} media sessions, the most one address may hold")]
    TooManyFromAddress(usize),
}

/// A new session: the SDP answer and, for WHIP/WHEP, the unguessable name of its resource (the
/// `Location` a client deletes to end it).
#[derive(Debug)]
pub struct Accepted {
    pub answer: String,
    pub resource: Option<String>,
}

/// The media thread cannot take a request now.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MediaUnavailable {
    #[error("the media server is shutting down")]
    ShuttingDown,
    #[error("the media server has too many requests waiting; try again")]
    Busy,
}

impl<T> From<mpsc::error::TrySendError<T>> for MediaUnavailable {
    fn from(e: mpsc::error::TrySendError<T>) -> Self {
        match e {
            mpsc::error::TrySendError::Full(_) => Self::Busy,
            mpsc::error::TrySendError::Closed(_) => Self::ShuttingDown,
        }
    }
}

impl Media {
    /// Binds the workers' sockets and starts their threads.
    ///
    /// Each worker gets a thread of its own with a single-threaded runtime: datagrams, timers
    /// and commands are handled where the sockets are polled, with no hand-off between threads
    /// per datagram. Transcoding runs on further threads (see `transcode`).
    pub async fn start(config: MediaConfig, stop: watch::Receiver<bool>) -> std::io::Result<Media> {
        let n = config.workers.max(1);
        let counters = Arc::new(MediaCounters::default());
        let shared = Arc::new(Shared {
            counters: counters.clone(),
            per_client: Mutex::new(HashMap::new()),
            max_per_client: config.max_sessions_per_client,
            sessions: (0..n).map(|_| AtomicUsize::new(0)).collect(),
            max_sessions: config.max_sessions,
        });
        // One certificate: a page's two connections may land on one worker or, for a WHEP
        // viewer of another room, on two; the fingerprint it pins is the server's either way.
        let cert = Engine::generate_cert();
        let mut workers = Vec::with_capacity(n);
        let mut addrs = Vec::new();
        for index in 0..n {
            let port = match config.listen.port() {
                0 => 0,
                first => u16::try_from(usize::from(first) + index).map_err(|_| {
                    std::io::Error::new(
                        std::io::ErrorKind::InvalidInput,
                        format!("{n} media workers need {n} ports from {first}"),
                    )
                })?,
            };
            let sockets = bind(SocketAddr::new(config.listen.ip(), port)).await?;
            let (worker, locals) =
                spawn_worker(index, sockets, &config, cert.clone(), &shared, stop.clone())?;
            workers.push(worker);
            addrs.extend(locals);
        }
        tracing::info!(workers = n, addrs = ?addrs.iter().map(|a| a.local).collect::<Vec<_>>(), "media peer listening (UDP)");
        Ok(Media {
            workers: workers.into(),
            next: Arc::new(AtomicUsize::new(0)),
            addrs: Arc::new(addrs),
            config: Arc::new(config),
            counters,
        })
    }

    /// Resolves once every worker has ended (after shutdown, its sessions told goodbye).
    pub async fn finished(&self) {
        for w in self.workers.iter() {
            let mut finished = w.finished.clone();
            while finished.changed().await.is_ok() {}
        }
    }

    /// Every address a browser may be told to send media to: the bound ones and, with
    /// `--public-ip`, their public counterparts — the candidates the answers carry.
    pub fn reachable_addrs(&self) -> Vec<SocketAddr> {
        self.addrs
            .iter()
            .flat_map(|a| std::iter::once(a.local).chain(a.public))
            .collect()
    }

    /// The UDP ports media is served on, a worker's each (every bound address of a worker
    /// shares its port).
    pub fn ports(&self) -> Vec<u16> {
        let mut ports: Vec<u16> = self.addrs.iter().map(|a| a.local.port()).collect();
        ports.dedup();
        ports
    }

    /// The worker that serves `room`: always the same one, so a room is never split. Sessions
    /// of no room (echo) take turns.
    fn worker(&self, room: Option<&str>) -> &Worker {
        let n = self.workers.len();
        match room {
            Some(room) => &self.workers[room_worker(room, n)],
            None => &self.workers[self.next.fetch_add(1, Ordering::Relaxed) % n],
        }
    }

    pub async fn accept(
        &self,
        kind: SessionKind,
        offer: String,
        from: Requester,
    ) -> Result<Result<Accepted, AcceptError>, MediaUnavailable> {
        let (reply, rx) = oneshot::channel();
        let worker = self.worker(kind.room());
        let accept = Command::Accept {
            kind,
            offer,
            from,
            reply,
        };
        worker.commands.try_send(accept)?;
        rx.await.map_err(|_| MediaUnavailable::ShuttingDown)
    }

    /// Ends the session behind `resource` of `room`; whether there was one.
    pub async fn delete(&self, room: String, resource: String) -> Result<bool, MediaUnavailable> {
        let (reply, rx) = oneshot::channel();
        let worker = self.worker(Some(&room));
        let delete = Command::Delete {
            room,
            resource,
            reply,
        };
        worker.commands.try_send(delete)?;
        rx.await.map_err(|_| MediaUnavailable::ShuttingDown)
    }

    /// Hands the room's worker a request of the room core about an SFU room's participant.
    pub fn sfu(&self, request: huddle_signal_proto::MediaRequest) -> Result<(), MediaUnavailable> {
        let worker = self.worker(Some(request.room()));
        Ok(worker.commands.try_send(Command::Sfu(request))?)
    }

    /// Tells the workers where messages for SFU room pages go.
    pub async fn connect_hub(&self, hub: mpsc::Sender<SfuEvent>) {
        for w in self.workers.iter() {
            let _ = w.commands.send(Command::Hub(hub.clone())).await;
        }
    }

    /// Ends the media sessions of what an admin removed from `room` (best effort: a full queue
    /// drops the request, and the refused token cannot make new ones).
    pub fn revoke(&self, room: String, revocation: huddle_signal_proto::Revocation) {
        let worker = self.worker(Some(&room));
        let _ = worker
            .commands
            .try_send(Command::Revoke { room, revocation });
    }

    /// Sessions of every worker, by kind; None if a worker cannot answer.
    pub async fn stats(&self) -> Option<MediaStats> {
        let mut total = MediaStats::default();
        for w in self.workers.iter() {
            let (reply, rx) = oneshot::channel();
            w.commands.try_send(Command::Stats(reply)).ok()?;
            total += rx.await.ok()?;
        }
        Some(total)
    }
}

/// Starts worker `index` on its sockets; its handle and the addresses it serves.
fn spawn_worker(
    index: usize,
    sockets: Vec<UdpSocket>,
    config: &MediaConfig,
    cert: huddle_media::DtlsCert,
    shared: &Arc<Shared>,
    stop: watch::Receiver<bool>,
) -> std::io::Result<(Worker, Vec<LocalAddr>)> {
    let locals: Vec<LocalAddr> = sockets
        .iter()
        .map(|s| {
            let a = s.local_addr()?;
            Ok(LocalAddr {
                local: a,
                public: config
                    .public_ip
                    .filter(|ip| !a.ip().is_loopback() && ip.is_ipv4() == a.is_ipv4())
                    .map(|ip| SocketAddr::new(ip, a.port())),
            })
        })
        .collect::<std::io::Result<_>>()?;
    let mut engine_config = EngineConfig::new(locals.clone());
    // The whole server's cap is checked against every worker's count (`Shared`); one worker
    // may hold all of it.
    engine_config.max_sessions = config.max_sessions;
    let engine = Engine::new(engine_config, cert);
    let (commands, command_rx) = mpsc::channel(COMMANDS);
    let (results, result_rx) = mpsc::channel(RESULTS);
    let transcoders = Transcoders::new(results, shared.counters.clone());
    let std_sockets = sockets
        .into_iter()
        .map(|s| s.into_std())
        .collect::<std::io::Result<Vec<_>>>()?;
    let shared = shared.clone();
    let (finishing, finished) = watch::channel(());
    std::thread::Builder::new()
        .name(format!("media-{index}"))
        .spawn(move || {
            // Dropped however the thread ends: `Media::finished` then resolves.
            let _finishing = finishing;
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => return tracing::error!(error = %e, "media worker has no runtime"),
            };
            rt.block_on(async move {
                let mut sockets = Vec::new();
                for s in std_sockets {
                    match (s.local_addr(), batch::readable_only(s)) {
                        (Ok(addr), Ok(socket)) => sockets.push((addr, socket)),
                        (_, Err(e)) | (Err(e), _) => {
                            return tracing::error!(error = %e, "media socket unusable");
                        }
                    }
                }
                let runner = Runner {
                    index,
                    backlog: sockets.iter().map(|_| Backlog::default()).collect(),
                    engine,
                    sockets,
                    transcoders,
                    shared,
                    resources: HashMap::new(),
                    requesters: HashMap::new(),
                    participants: sfu::Participants::default(),
                    streaming: sfu::Streaming::default(),
                    hub: None,
                };
                runner.run(command_rx, result_rx, stop).await;
            });
        })?;
    Ok((Worker { commands, finished }, locals))
}

async fn bind(listen: SocketAddr) -> std::io::Result<Vec<UdpSocket>> {
    let ip = listen.ip();
    if !ip.is_unspecified() {
        return Ok(vec![UdpSocket::bind(listen).await?]);
    }
    let mut ips: Vec<IpAddr> = crate::interface_addresses()
        .into_iter()
        .filter(|a| a.is_ipv4() || ip.is_ipv6())
        .collect();
    ips.sort_by_key(|a| (a.is_loopback(), a.is_ipv6()));
    ips.dedup();
    let mut port = listen.port();
    let mut sockets = Vec::new();
    for a in ips {
        match UdpSocket::bind(SocketAddr::new(a, port)).await {
            Ok(s) => {
                // Port 0 picks one for the first address; the others follow it.
                port = s.local_addr()?.port();
                sockets.push(s);
            }
            Err(e) => {
                tracing::warn!(addr = %a, port, error = %e, "media socket not bound on this address")
            }
        }
    }
    if sockets.is_empty() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::AddrNotAvailable,
            "no interface address to bind media on",
        ));
    }
    Ok(sockets)
}

/// Datagrams read from one socket before the others get their turn.
const RECV_BATCH: usize = 256;

struct Runner {
    /// Which worker this is (its slot in `Shared::sessions`).
    index: usize,
    engine: Engine,
    /// Each socket with its bound address (the source of what it sends).
    sockets: Vec<(SocketAddr, ReadableUdp)>,
    transcoders: Transcoders,
    shared: Arc<Shared>,
    /// WHIP/WHEP resource name → session (forgotten when the session ends).
    resources: HashMap<String, SessionId>,
    /// Who asked for each session.
    requesters: HashMap<SessionId, Requester>,
    /// Per socket, datagrams its full send buffer did not take yet, in order; sent when it is
    /// writable again, while the loop goes on serving everything else.
    backlog: Vec<Backlog>,
    /// SFU room pages and their sessions.
    participants: sfu::Participants,
    /// The WHIP publishers and WHEP viewers of rooms, whose pages are told of them.
    streaming: sfu::Streaming,
    /// Where messages for those pages go.
    hub: Option<mpsc::Sender<SfuEvent>>,
}

/// Datagrams a flush collects before it sends them: the engine's next subscribers are
/// drained after these leave. A GSO message's most (`UDP_MAX_SEGMENTS`).
const SEND_CHUNK: usize = 64;

/// Datagrams one socket may have waiting for room in its send buffer; past it the oldest are
/// dropped (UDP may lose them; the browsers' NACKs and keyframe requests recover).
const BACKLOG: usize = 4096;

impl Runner {
    async fn run(
        mut self,
        mut commands: mpsc::Receiver<Command>,
        mut results: mpsc::Receiver<Command>,
        mut stop: watch::Receiver<bool>,
    ) {
        let mut batch = RecvBatch::new();
        let mut alarm = match Alarm::new() {
            Ok(alarm) => alarm,
            Err(e) => return tracing::error!(error = %e, "media worker has no timer"),
        };
        // One stop future for the life of the loop: re-created per iteration it costs an
        // allocation per datagram.
        let stopped = stop.wait_for(|s| *s);
        tokio::pin!(stopped);
        loop {
            if let Err(e) = alarm.set(self.engine.poll_timeout()) {
                tracing::error!(error = %e, "media worker cannot set its timer");
                break;
            }
            tokio::select! {
                biased;
                _ = &mut stopped => break,
                c = commands.recv() => match c {
                    Some(c) => self.command(c),
                    None => break,
                },
                Some(c) = results.recv() => self.command(c),
                () = readable(&self.sockets) => self.receive(&mut batch),
                () = writable(&self.backlog), if self.has_backlog() => {
                    self.send_backlog();
                }
                r = alarm.rung() => {
                    if let Err(e) = r {
                        tracing::error!(error = %e, "media worker's timer failed");
                        break;
                    }
                }
            }
            // Timers fire even while datagrams keep coming.
            let now = Instant::now();
            if self.engine.poll_timeout().is_some_and(|t| t <= now) {
                self.engine.handle_timeout(now);
            }
            self.flush();
        }
        // Shutdown: tell every browser (DTLS close_notify), then stop — after waiting a moment
        // for room in the send buffers, so the goodbyes are not lost.
        let ids: Vec<SessionId> = self.engine.sessions().collect();
        for id in ids {
            self.engine.close(id);
        }
        self.flush();
        let goodbye = tokio::time::Instant::now() + std::time::Duration::from_millis(500);
        while self.has_backlog() {
            let wait = writable(&self.backlog);
            if tokio::time::timeout_at(goodbye, wait).await.is_err() {
                break;
            }
            self.send_backlog();
        }
    }

    fn has_backlog(&self) -> bool {
        self.backlog.iter().any(|b| !b.datagrams.is_empty())
    }

    /// Sends what each socket has waiting, as far as its buffer takes it.
    fn send_backlog(&mut self) {
        for ((_, socket), backlog) in self.sockets.iter().zip(&mut self.backlog) {
            while let Some((data, to)) = backlog.datagrams.front() {
                match socket.get_ref().send_to(data, *to) {
                    Ok(_) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(e) => tracing::trace!(error = %e, %to, "media send failed"),
                }
                backlog.datagrams.pop_front();
            }
            backlog.wait_for_room(socket);
        }
    }

    /// Feeds the engine what the sockets hold, [`batch::BATCH`] datagrams per `recvmmsg`,
    /// straight from the receive buffers.
    fn receive(&mut self, batch: &mut RecvBatch) {
        let now = Instant::now();
        for (local, socket) in &self.sockets {
            // Only a socket tokio saw readable (its guard at once, without waiting).
            let Some(Ok(mut ready)) = socket.readable().now_or_never() else {
                continue;
            };
            for _ in 0..RECV_BATCH.div_ceil(batch::BATCH) {
                // Through the guard, so that running dry clears the socket's readiness. A short
                // read ran dry too: told so, tokio waits for the next datagram's edge rather
                // than have the next turn of the loop find nothing with another `recvmmsg`.
                let mut got = 0;
                let read = ready.try_io(|s| {
                    got = batch.recv(s.as_raw_fd())?;
                    if got < batch::BATCH {
                        return Err(std::io::ErrorKind::WouldBlock.into());
                    }
                    Ok(())
                });
                let n = match read {
                    Ok(Ok(())) => got,
                    // ICMP errors from earlier sends surface here on Linux; the socket is fine.
                    Ok(Err(e)) => {
                        tracing::trace!(error = %e, "media recv");
                        continue;
                    }
                    Err(_ran_dry) if got > 0 => got,
                    Err(_ran_dry) => break,
                };
                for (data, source) in (0..n).filter_map(|i| batch.get(i)) {
                    if self
                        .engine
                        .handle_receive(now, source, *local, data)
                        .is_err()
                    {
                        self.shared
                            .counters
                            .datagrams_unmatched
                            .fetch_add(1, Ordering::Relaxed);
                    }
                }
                if n < batch::BATCH {
                    break; // drained
                }
            }
        }
    }

    fn accept(
        &mut self,
        kind: SessionKind,
        offer: &str,
        from: Requester,
        now: Instant,
    ) -> Result<Accepted, AcceptError> {
        let total = self.shared.sessions();
        if total >= self.shared.max_sessions {
            return Err(OfferError::Full(total).into());
        }
        let named = kind.room().is_some();
        let streams = match &kind {
            SessionKind::Publish { room } => Some((room.clone(), true)),
            SessionKind::Watch { room } => Some((room.clone(), false)),
            _ => None,
        };
        // The slot is taken before the offer is negotiated (which takes a while, and must not
        // hold the lock the other workers check against), and given back if it fails.
        self.shared
            .take_slot(from.client)
            .map_err(AcceptError::TooManyFromAddress)?;
        let (session, answer) = match self.engine.accept(kind, offer, now) {
            Ok(accepted) => accepted,
            Err(e) => {
                self.shared.release_slot(from.client);
                return Err(e.into());
            }
        };
        // Before the reply: the client's next request may reach another worker at once.
        self.shared.sessions[self.index].store(self.engine.session_count(), Ordering::Relaxed);
        self.shared
            .counters
            .sessions_created
            .fetch_add(1, Ordering::Relaxed);
        self.requesters.insert(session, from);
        if let Some((room, publishes)) = streams {
            let event = self.streaming.added(session, room, publishes);
            self.tell_hub(event);
        }
        let resource = named.then(|| {
            let name = resource_name();
            self.resources.insert(name.clone(), session);
            name
        });
        Ok(Accepted { answer, resource })
    }

    fn command(&mut self, c: Command) {
        let now = Instant::now();
        match c {
            Command::Accept {
                kind,
                offer,
                from,
                reply,
            } => {
                let _ = reply.send(self.accept(kind, &offer, from, now));
            }
            Command::Delete {
                room,
                resource,
                reply,
            } => {
                // The resource name is the capability; it must also be of the room in the path.
                let found =
                    self.resources.get(&resource).copied().filter(|id| {
                        self.engine.kind(*id).and_then(SessionKind::room) == Some(&room)
                    });
                if let Some(id) = found {
                    self.resources.remove(&resource);
                    self.engine.close(id);
                }
                let _ = reply.send(found.is_some());
            }
            Command::Revoke { room, revocation } => {
                let removed = |r: &Requester| {
                    r.owner.as_ref().is_some_and(|(token, identity)| {
                        *token == revocation.token || *identity == revocation.identity
                    })
                };
                let ended: Vec<SessionId> = self
                    .requesters
                    .iter()
                    .filter(|(id, r)| {
                        removed(r)
                            && self.engine.kind(**id).and_then(SessionKind::room) == Some(&room)
                    })
                    .map(|(id, _)| *id)
                    .collect();
                for id in ended {
                    self.engine.close(id);
                }
            }
            Command::Encoded {
                session,
                media_time,
                frame,
            } => self.engine.handle_encoded(session, media_time, frame, now),
            Command::NeedKeyframe(id) => self.engine.request_keyframe(id, now),
            Command::Stats(reply) => {
                let mut stats = MediaStats::default();
                for id in self.engine.sessions() {
                    match self.engine.kind(id) {
                        Some(SessionKind::Echo(_)) => stats.echo += 1,
                        Some(SessionKind::Publish { room }) => {
                            stats.publish += 1;
                            stats.streamed_rooms.insert(room.clone());
                        }
                        Some(SessionKind::Watch { room }) => {
                            stats.watch += 1;
                            stats.streamed_rooms.insert(room.clone());
                        }
                        Some(SessionKind::Upstream { .. }) => stats.upstream += 1,
                        Some(SessionKind::Downstream { .. }) => stats.downstream += 1,
                        None => {}
                    }
                }
                let _ = reply.send(stats);
            }
            Command::Sfu(request) => {
                // A page joining a room with streams hears of them first.
                if let huddle_signal_proto::MediaRequest::Join { room, peer, .. } = &request
                    && let Some(event) = self.streaming.tell(room, peer)
                {
                    self.tell_hub(event);
                }
                let events = self.participants.request(&mut self.engine, request, now);
                for e in events {
                    self.tell_hub(e);
                }
            }
            Command::Hub(tx) => self.hub = Some(tx),
        }
    }

    /// Hands a message for a page to the hub. Never waits: a hub that far behind is
    /// overwhelmed, and the page recovers by rejoining (its media connections fail).
    fn tell_hub(&mut self, event: SfuEvent) {
        let Some(hub) = &self.hub else { return };
        if let Err(e) = hub.try_send(event) {
            tracing::warn!(error = %e, "signaling hub behind; a message for a page was dropped");
        }
    }

    /// Carries out everything the engine asked for. Datagrams are sent [`SEND_CHUNK`] or so at a
    /// time, one `sendmmsg` per socket. What a full send buffer does not take waits in the
    /// socket's backlog; nothing here waits.
    fn flush(&mut self) {
        // What the other workers check the server's session cap against.
        self.shared.sessions[self.index].store(self.engine.session_count(), Ordering::Relaxed);
        let mut transmits = Vec::new();
        while let Some(o) = self.engine.poll_output() {
            match o {
                Output::Transmit(t) => {
                    transmits.push(t);
                    // The engine makes one subscriber's datagrams at a time: the first
                    // subscribers' go while the others' are made, not after all of them.
                    if transmits.len() >= SEND_CHUNK {
                        self.send(&mut transmits);
                    }
                }
                Output::Transcode(job) => self.transcoders.push(job),
                Output::EncoderKeyframe(id) => self.transcoders.keyframe(id),
                Output::EncoderBitrate { session, bps } => self.transcoders.bitrate(session, bps),
                Output::Offer { session, sdp } => {
                    if let Some(peer) = self.participants.peer(session).cloned() {
                        self.tell_hub(sfu::offer(peer, sdp));
                    }
                }
                Output::Tracks { session, tracks } => {
                    if let Some(peer) = self.participants.peer(session).cloned() {
                        self.tell_hub(sfu::tracks(peer, tracks));
                    }
                }
                Output::Layers {
                    session,
                    mid,
                    active,
                } => {
                    if let Some(peer) = self.participants.peer(session).cloned() {
                        let msg = huddle_signal_proto::ServerMessage::Layers { mid, active };
                        self.tell_hub(SfuEvent::ToPeer { peer, msg });
                    }
                }
                Output::Speakers { room, peers } => {
                    let ids = peers.into_iter().map(huddle_signal_proto::PeerId).collect();
                    let msg = huddle_signal_proto::ServerMessage::Speakers { ids };
                    self.tell_hub(SfuEvent::ToRoom { room, msg });
                }
                Output::Closed { session, reason } => {
                    self.participants.closed(session);
                    if let Some(event) = self.streaming.removed(session) {
                        self.tell_hub(event);
                    }
                    self.transcoders.remove(session);
                    self.resources.retain(|_, s| *s != session);
                    if let Some(from) = self.requesters.remove(&session) {
                        self.shared.release_slot(from.client);
                    }
                    log_close(session, reason);
                }
            }
        }
        self.send(&mut transmits);
    }

    /// Sends `transmits` (and empties it), one `sendmmsg` per socket; what a full send buffer
    /// does not take waits in the socket's backlog.
    fn send(&mut self, transmits: &mut Vec<Transmit>) {
        for ((local, socket), backlog) in self.sockets.iter().zip(&mut self.backlog) {
            let mut datagrams: Vec<(&[u8], SocketAddr)> = transmits
                .iter()
                .filter(|t| t.source == *local)
                .map(|t| (&t.contents[..], t.destination))
                .collect();
            // Side by side, one subscriber's packets go as one UDP GSO message. The engine
            // makes them together, but a session's own datagrams (a NACK's resends, reports)
            // may come between. The sort is stable: each destination's order is kept.
            datagrams.sort_by_key(|&(_, to)| to);
            if datagrams.is_empty() {
                continue;
            }
            // Behind a backlog, new datagrams queue after it: order per socket is kept.
            let sent = if backlog.datagrams.is_empty() {
                batch::send(socket.as_raw_fd(), &datagrams)
            } else {
                0
            };
            for (data, to) in &datagrams[sent..] {
                if backlog.datagrams.len() == BACKLOG {
                    backlog.datagrams.pop_front();
                    self.shared
                        .counters
                        .datagrams_dropped
                        .fetch_add(1, Ordering::Relaxed);
                }
                backlog.datagrams.push_back((data.to_vec(), *to));
            }
            backlog.wait_for_room(socket);
        }
        transmits.clear();
    }
}

/// Datagrams a socket's full send buffer did not take yet, in order, and the wait for room.
#[derive(Default)]
struct Backlog {
    datagrams: VecDeque<(Vec<u8>, SocketAddr)>,
    /// Registered while datagrams wait, and only then (see [`SendRoom`]).
    room: Option<SendRoom>,
}

impl Backlog {
    /// Registers the wait for room when datagrams wait, and drops it when none do.
    fn wait_for_room(&mut self, socket: &ReadableUdp) {
        if self.datagrams.is_empty() {
            self.room = None;
        } else if self.room.is_none() {
            // Out of descriptors, say: `writable` then tries again in a moment.
            self.room = SendRoom::new(socket.get_ref())
                .inspect_err(|e| tracing::debug!(error = %e, "media send wait unregistered"))
                .ok();
        }
    }
}

/// Resolves when a socket with a backlog may take a datagram.
async fn writable(backlog: &[Backlog]) {
    let waits: Vec<_> = backlog
        .iter()
        .filter(|b| !b.datagrams.is_empty())
        .map(|b| {
            Box::pin(async move {
                match &b.room {
                    // An error here is the socket's pending error; the next send reports it.
                    Some(room) => drop(room.ready().await),
                    None => tokio::time::sleep(std::time::Duration::from_millis(1)).await,
                }
            })
        })
        .collect();
    if waits.is_empty() {
        return std::future::pending().await;
    }
    futures_util::future::select_all(waits).await;
}

/// Resolves when any socket may have a datagram.
async fn readable(sockets: &[(SocketAddr, ReadableUdp)]) {
    if let [(_, only)] = sockets {
        drop(only.readable().await);
        return;
    }
    let waits = sockets.iter().map(|(_, s)| Box::pin(s.readable()));
    // An error here is the socket's pending error; the next `recvmmsg` reports it.
    drop(futures_util::future::select_all(waits).await);
}

/// 128 random bits, hex: a resource URL nobody can guess.
fn resource_name() -> String {
    let bits: u128 = rand::random();
    format!("{bits:032x}")
}

fn log_close(session: SessionId, reason: CloseReason) {
    tracing::debug!(%session, ?reason, "media session ended");
}
