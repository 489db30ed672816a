//! The TURN server's I/O around the sans-IO [`huddle_turn_proto::Server`]: UDP, TCP and TLS
//! listeners, one UDP socket per relayed address (all served by one task through an epoll set of
//! their own, [`crate::udp::epoll`]), and the timer.
//!
//! The core sits behind one `std::sync::Mutex`, held only for the synchronous handling of one
//! batch of datagrams and the sends it causes (UDP sends never wait: sockets are non-blocking and
//! registered for reading only, a full socket buffer drops the datagram as UDP would; a batch's
//! datagrams for many relay sockets leave in one io_uring submission, [`crate::udp::ring`]).
//! Stream clients get a bounded queue each; a client whose queue is full loses that frame rather
//! than making the server buffer for it.

mod prefixed;
mod relays;
mod stream;

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use huddle_turn_proto::{AllocationEvent, FiveTuple, Output, Server, Transport, channel_data};
use rand::SeedableRng;
use rand::rngs::StdRng;
use tokio::io::unix::AsyncFd;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::udp::batch::{self as batch, BATCH, ReadableUdp, RecvBatch};
use crate::udp::epoll::{self, Epoll};
use crate::udp::ring::SendRing;
pub use prefixed::Prefixed;
use relays::Relays;
pub use stream::looks_like_turn;

/// Batches a busy UDP listener handles before letting the runtime's other tasks run: at most
/// 8 × 32 datagrams between two chances for relay sockets and the timer.
const YIELD_EVERY: u32 = 8;

/// Largest UDP payload a peer may send.
const DATAGRAM: usize = 65_536;

/// Where the TURN server listens.
#[derive(Clone)]
pub struct TurnConfig {
    pub core: huddle_turn_proto::Config,
    pub udp: Vec<SocketAddr>,
    pub tcp: Vec<SocketAddr>,
    pub tls: Vec<SocketAddr>,
    /// Certificate for `tls` listeners (and for TURN sniffed on the HTTPS port).
    pub tls_config: Option<Arc<rustls::ServerConfig>>,
}

/// A running TURN server.
#[derive(Clone)]
pub struct Turn {
    shared: Arc<Shared>,
}

struct Shared {
    state: Mutex<State>,
    /// UDP listening sockets by local address: where replies to UDP clients leave from.
    listeners: HashMap<SocketAddr, Arc<ReadableUdp>>,
    /// Every relay socket, level-triggered: the relay task's wake-up, and its list of sockets to
    /// read in a round.
    relay_poll: AsyncFd<Epoll>,
}

struct State {
    core: Server<StdRng>,
    relays: Relays,
    streams: HashMap<FiveTuple, mpsc::Sender<Vec<u8>>>,
    ring: SendRing,
    /// Where relay sockets' datagrams arrive, up to a batch per round from all ready relays
    /// together, with room for the ChannelData header (and a stream's padding) around each:
    /// one buffer for all relays, used under the lock, instead of one per allocation.
    peer_batch: RecvBatch,
}

/// The addresses a started TURN server actually bound (port 0 resolved).
#[derive(Debug, Clone, Default)]
pub struct TurnAddrs {
    pub udp: Vec<SocketAddr>,
    pub tcp: Vec<SocketAddr>,
    pub tls: Vec<SocketAddr>,
}

impl Turn {
    /// Binds every listener and starts serving until `shutdown` flips.
    pub async fn start(
        config: TurnConfig,
        shutdown: watch::Receiver<bool>,
    ) -> io::Result<(Turn, TurnAddrs)> {
        let mut addrs = TurnAddrs::default();
        let mut listeners = HashMap::new();
        for addr in &config.udp {
            let socket = Arc::new(batch::readable_only(std::net::UdpSocket::bind(addr)?)?);
            batch::set_buffers(socket.as_raw_fd(), 4 << 20);
            let local = socket.get_ref().local_addr()?;
            addrs.udp.push(local);
            listeners.insert(local, socket);
        }
        let mut tcp = Vec::new();
        for addr in &config.tcp {
            let l = TcpListener::bind(addr).await?;
            addrs.tcp.push(l.local_addr()?);
            tcp.push((l, Transport::Tcp));
        }
        for addr in &config.tls {
            let l = TcpListener::bind(addr).await?;
            addrs.tls.push(l.local_addr()?);
            tcp.push((l, Transport::Tls));
        }
        let unix_now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let core = Server::new(
            config.core,
            StdRng::from_os_rng(),
            Instant::now().into_std(),
            unix_now,
        );
        // SAFETY: the epoll descriptor is owned by the `Epoll` moved into the AsyncFd and is
        // closed only when the AsyncFd drops it.
        let relay_poll = unsafe {
            AsyncFd::register_with_interest(Epoll::new()?, tokio::io::Interest::READABLE)
        }
        .map_err(|e| e.into_parts().1)?;
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                core,
                relays: Relays::new(),
                streams: HashMap::new(),
                ring: SendRing::new(),
                peer_batch: RecvBatch::with_slots(DATAGRAM, channel_data::HEADER, 3),
            }),
            listeners,
            relay_poll,
        });
        let turn = Turn { shared };
        let mut tasks = tokio::task::JoinSet::new();
        for (local, socket) in &turn.shared.listeners {
            tasks.spawn(turn.clone().udp_loop(socket.clone(), *local));
        }
        let acceptor = config.tls_config.map(tokio_rustls::TlsAcceptor::from);
        for (listener, transport) in tcp {
            tasks.spawn(
                turn.clone()
                    .accept_loop(listener, transport, acceptor.clone()),
            );
        }
        tasks.spawn(turn.clone().relay_loop());
        tasks.spawn(turn.clone().timer_loop());
        let mut stop = shutdown;
        let stopping = turn.clone();
        tokio::spawn(async move {
            let _ = stop.wait_for(|s| *s).await;
            tasks.shutdown().await;
            let mut st = stopping.lock();
            st.relays.clear(); // closes the relay sockets
            st.streams.clear(); // ends the stream writers
        });
        Ok((turn, addrs))
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock would be a bug in the core; keep serving the others.
        self.shared
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Counters of the core, for `/metrics`.
    pub fn stats(&self) -> (huddle_turn_proto::Stats, usize) {
        let st = self.lock();
        (st.core.stats().clone(), st.core.allocation_count())
    }

    async fn udp_loop(self, socket: Arc<ReadableUdp>, local: SocketAddr) {
        let fd = socket.as_raw_fd();
        let mut batch = RecvBatch::new();
        let mut since_yield = 0;
        loop {
            let Ok(mut ready) = socket.readable().await else {
                continue;
            };
            // Drain the socket a batch at a time until it would block.
            loop {
                match ready.try_io(|_| batch.recv(fd)) {
                    Ok(Ok(n)) => {
                        self.handle_client_batch(local, &batch, n);
                        // A socket that never runs dry must not starve the other tasks (relay
                        // sockets, the timer): every few batches, let them run.
                        since_yield += 1;
                        if since_yield == YIELD_EVERY {
                            since_yield = 0;
                            drop(ready);
                            tokio::task::yield_now().await;
                            break;
                        }
                    }
                    Ok(Err(e)) => {
                        // ICMP errors for earlier sends surface here on some systems; not fatal.
                        tracing::debug!(error = %e, "turn udp recv");
                        break;
                    }
                    Err(_would_block) => break,
                }
            }
        }
    }

    /// A batch of client datagrams under one lock; what they relay leaves through the
    /// [`SendRing`]: one `sendmmsg` per run for one relay socket, one io_uring submission for
    /// datagrams alone on theirs.
    fn handle_client_batch(&self, local: SocketAddr, batch: &RecvBatch, n: usize) {
        let mut st = self.lock();
        let now = Instant::now().into_std();
        let State {
            core, relays, ring, ..
        } = &mut *st;
        let mut relayed: Vec<(RawFd, &[u8], SocketAddr)> = Vec::with_capacity(n);
        // Consecutive datagrams of one allocation (a video frame) look its socket up once.
        let mut last: Option<(SocketAddr, RawFd)> = None;
        for i in 0..n {
            let Some((data, from)) = batch.get(i) else {
                continue;
            };
            let five = FiveTuple {
                transport: Transport::Udp,
                client: from,
                server: local,
            };
            let Some(r) = core.handle_client(five, data, now) else {
                continue;
            };
            let fd = match last {
                Some((relay, fd)) if relay == r.relay => fd,
                _ => match relays.get(&r.relay) {
                    Some(relay) => relay.as_raw_fd(),
                    None => continue,
                },
            };
            last = Some((r.relay, fd));
            relayed.push((fd, r.payload, r.peer));
        }
        // Datagrams that do not fit a socket buffer are dropped, as UDP would.
        ring.send(&relayed);
        self.drain(&mut st);
    }

    /// One datagram or stream frame from a client.
    fn handle_client_frame(&self, five: FiveTuple, frame: &[u8]) {
        let mut st = self.lock();
        let now = Instant::now().into_std();
        if let Some(relayed) = st.core.handle_client(five, frame, now)
            && let Some(relay) = st.relays.get(&relayed.relay)
        {
            // A failed send (unreachable peer, full buffer) loses this packet only.
            let _ = relay.send_to(relayed.payload, relayed.peer);
        }
        self.drain(&mut st);
    }

    /// Serves every relay socket: woken when any has data, each round reads the ready ones.
    async fn relay_loop(self) {
        let mut events = epoll::events();
        loop {
            let Ok(mut ready) = self.shared.relay_poll.readable().await else {
                return;
            };
            // Round after round until every relay is drained; peers that never pause let the
            // other tasks run after a few rounds.
            let mut drained = false;
            for _ in 0..YIELD_EVERY {
                if ready
                    .try_io(|poll| self.relay_round(poll.get_ref(), &mut events))
                    .is_err()
                {
                    drained = true;
                    break;
                }
            }
            if !drained {
                drop(ready);
                tokio::task::yield_now().await;
            }
        }
    }

    /// One round, under one lock: up to a batch from each ready relay socket (level-triggered,
    /// so a socket with more is reported again next round), in batches of [`BATCH`] datagrams
    /// from any mix of relays.
    ///
    /// `WouldBlock` once every relay is drained — when none is ready, or when this round read
    /// every ready one dry — so that the runtime waits for the set again. Ending on a drained
    /// round without asking the set once more is safe: every datagram that arrives on a member
    /// from then on wakes the set's own waiters, and so the runtime, anew (the level-triggered
    /// reports of the sockets read dry here are dropped by the set's next `epoll_wait`).
    fn relay_round(&self, poll: &Epoll, events: &mut epoll::Events) -> io::Result<()> {
        let mut guard = self.lock();
        let st = &mut *guard;
        let ready = poll.ready(events)?;
        let mut drained = ready.len() < epoll::EVENTS;
        // Which relay each slot of the batch came to.
        let mut slot_relay = [SocketAddr::from(([0, 0, 0, 0], 0)); BATCH];
        let mut filled = 0;
        for fd in ready {
            let Some(relay) = st.relays.addr_of(fd) else {
                continue;
            };
            if filled == BATCH {
                self.relay_batch(st, &slot_relay);
                filled = 0;
            }
            match st.peer_batch.recv_at(fd, filled) {
                Ok(n) => {
                    // A full batch may have left more behind.
                    drained &= filled + n < BATCH;
                    slot_relay[filled..filled + n].fill(relay);
                    filled += n;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                // An ICMP error for an earlier send surfaces as a failed receive; the socket is
                // fine, and may have data behind the error: another round.
                Err(_) => drained = false,
            }
        }
        self.relay_batch(st, &slot_relay[..filled]);
        self.drain(st);
        if drained {
            Err(io::ErrorKind::WouldBlock.into())
        } else {
            Ok(())
        }
    }

    /// The peer datagrams in the first `slot_relay.len()` slots of the shared batch, slot `i`
    /// having come to relay `slot_relay[i]`, on their way to the clients. The ChannelData header
    /// is written in place in front of each payload; frames for UDP clients leave in one
    /// `sendmmsg` per listener (UDP GSO for a video frame's run of equal packets).
    fn relay_batch(&self, st: &mut State, slot_relay: &[SocketAddr]) {
        let now = Instant::now().into_std();
        // Each slot's headroom is a ChannelData header: the frame is the slot's start.
        let mut frames: Vec<(usize, FiveTuple, usize)> = Vec::with_capacity(slot_relay.len());
        for (i, &relay) in slot_relay.iter().enumerate() {
            let Some((payload, peer)) = st.peer_batch.get(i) else {
                continue;
            };
            let len = payload.len();
            if let Some(to) = st.core.handle_peer(relay, peer, payload, now) {
                let stream = to.client.transport.is_stream();
                let slot = st.peer_batch.slot_mut(i);
                let framed = channel_data::frame_in_place(slot, to.channel, len, stream);
                frames.push((i, to.client, framed));
            }
        }
        let mut udp: Vec<(SocketAddr, &[u8], SocketAddr)> = Vec::with_capacity(frames.len());
        for &(i, client, framed) in &frames {
            let frame = &st.peer_batch.slot(i)[..framed];
            match client.transport {
                Transport::Udp => udp.push((client.server, frame, client.client)),
                Transport::Tcp | Transport::Tls => self.send_to_client(st, client, frame),
            }
        }
        // Grouped by listener (usually there is one per address family), each group in order.
        udp.sort_by_key(|(listener, _, _)| *listener);
        for run in udp.chunk_by(|a, b| a.0 == b.0) {
            if let Some(listener) = self.shared.listeners.get(&run[0].0) {
                let datagrams: Vec<(&[u8], SocketAddr)> =
                    run.iter().map(|(_, frame, to)| (*frame, *to)).collect();
                // What does not fit the socket buffer is dropped, as UDP would.
                batch::send(listener.as_raw_fd(), &datagrams);
            }
        }
    }

    async fn timer_loop(self) {
        loop {
            let next = self.lock().core.poll_timeout().map(Instant::from_std);
            // Allocations made meanwhile expire no sooner than the default lifetime; waking at
            // least every second keeps that simple without a wake-up channel.
            let cap = Instant::now() + Duration::from_secs(1);
            tokio::time::sleep_until(next.map_or(cap, |n| n.min(cap))).await;
            let mut st = self.lock();
            st.core.handle_timeout(Instant::now().into_std());
            self.drain(&mut st);
        }
    }

    fn send_to_client(&self, st: &State, client: FiveTuple, data: &[u8]) {
        match client.transport {
            Transport::Udp => {
                if let Some(socket) = self.shared.listeners.get(&client.server) {
                    let _ = socket.get_ref().send_to(data, client.client);
                }
            }
            Transport::Tcp | Transport::Tls => {
                if let Some(tx) = st.streams.get(&client) {
                    let _ = tx.try_send(data.to_vec());
                }
            }
        }
    }

    fn drain(&self, st: &mut State) {
        while let Some(out) = st.core.poll_output() {
            match out {
                Output::ToClient { client, data } => self.send_to_client(st, client, &data),
                Output::BindRelay {
                    client,
                    addr,
                    hold_next,
                } => {
                    let bound = st
                        .relays
                        .bind(addr, hold_next, self.shared.relay_poll.get_ref());
                    let now = Instant::now().into_std();
                    st.core.handle_relay_bound(
                        client,
                        bound.map_err(|e| {
                            tracing::debug!(%addr, error = %e, "relay port unavailable");
                        }),
                        now,
                    );
                }
                Output::ReleaseHeld { addr } => st.relays.release(addr),
                Output::Allocation(event) => log_allocation(&event),
                Output::FreeRelay { relay } => {
                    // The relay task reads the set only under this lock, so it never sees a
                    // report for the closed descriptor; the port is free for the next
                    // allocation at once.
                    if st.relays.close(relay, self.shared.relay_poll.get_ref()) {
                        st.core.handle_relay_closed(relay);
                    }
                }
            }
        }
    }
}

/// One line per allocation begun or ended, as coturn logs its sessions: at debug level, since a
/// busy server makes thousands a second (`RUST_LOG=huddle_server::turn=debug`, or coturn's
/// `verbose` key, shows them).
fn log_allocation(event: &AllocationEvent) {
    match event {
        AllocationEvent::Created {
            client,
            username,
            relay,
            lifetime,
        } => tracing::debug!(
            user = %username,
            client = %client.client,
            transport = ?client.transport,
            %relay,
            lifetime_s = lifetime.as_secs(),
            "allocation created"
        ),
        AllocationEvent::Ended {
            client,
            username,
            relay,
            reason,
        } => tracing::debug!(
            user = %username,
            client = %client.client,
            transport = ?client.transport,
            %relay,
            reason = reason.as_str(),
            "allocation ended"
        ),
    }
}
