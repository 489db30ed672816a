//! The TURN server core (RFC 8656) with STUN Binding (RFC 8489): `Server<R>`.
//!
//! Inputs are datagrams (or stream frames) from clients and from peers, stamped with `now`.
//! The two hot paths answer directly, borrowing the input: a client's ChannelData or Send
//! indication becomes [`Relayed`] (send this payload from that relay socket to that peer), a
//! peer's datagram on a bound channel becomes [`ToChannel`] (prepend a ChannelData header, send to
//! the client). Everything else — responses, Data indications, relay sockets to open or close —
//! is queued as [`Output`].

mod allocation;
mod handlers;
mod peer_policy;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;
use std::time::{Duration, Instant};

use rand::RngCore;

pub use peer_policy::{BadRange, IpRange, PeerPolicy};

use crate::auth::{Credentials, Nonces};
use crate::channel_data;
use crate::stun::{
    AttrType, Class, ErrorCode, IntegrityAlg, Message, MessageWriter, Method, TransactionId,
};
use allocation::Allocation;

#[cfg(test)]
mod tests;

/// The hash maps of the core. Their keys come from clients (addresses, channel numbers, peer
/// IPs), so the hash is keyed with a seed drawn from the injected RNG; foldhash rather than std's
/// SipHash because hashing was a visible share of each relayed packet's cost.
pub(crate) type Map<K, V> = HashMap<K, V, foldhash::fast::FixedState>;

/// How a client reached the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Transport {
    Udp,
    Tcp,
    Tls,
}

impl Transport {
    /// Streams need ChannelData padded to four bytes (RFC 8656 §12.5).
    pub fn is_stream(self) -> bool {
        !matches!(self, Transport::Udp)
    }
}

/// The 5-tuple that names a client's allocation: transport, client address, server address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FiveTuple {
    pub transport: Transport,
    pub client: SocketAddr,
    pub server: SocketAddr,
}

/// A relay address family: the address to bind relay sockets on and the one to tell clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RelayAddr {
    pub bind: IpAddr,
    /// What goes into XOR-RELAYED-ADDRESS; differs from `bind` behind a NAT (`--external-ip`).
    pub advertised: IpAddr,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub credentials: Credentials,
    /// The SOFTWARE attribute in responses.
    pub software: String,
    pub relay_v4: Option<RelayAddr>,
    pub relay_v6: Option<RelayAddr>,
    pub relay_ports: RangeInclusive<u16>,
    pub default_lifetime: Duration,
    pub max_lifetime: Duration,
    pub permission_lifetime: Duration,
    pub channel_lifetime: Duration,
    pub nonce_lifetime: Duration,
    pub peers: PeerPolicy,
    /// Allocations one user may hold at once (486 beyond).
    pub user_quota: Option<usize>,
    /// Allocations the server holds at once (486 beyond).
    pub total_quota: Option<usize>,
    /// Allocations (so relay ports) one client address may hold at once (486 beyond; an IPv6
    /// client counts by its /64, [`crate::client_key`]): TURN REST credentials are minted per
    /// page, so a per-user quota alone does not bound a client.
    pub ip_quota: Option<usize>,
    /// Bytes per second one allocation may relay, each direction counted; beyond it packets drop.
    pub max_bps: Option<u64>,
    /// Permissions one allocation may hold (508 beyond): each is state a client makes us keep.
    pub max_permissions: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            credentials: Credentials {
                realm: "huddle".into(),
                ..Credentials::default()
            },
            software: concat!("huddle/", env!("CARGO_PKG_VERSION")).into(),
            relay_v4: None,
            relay_v6: None,
            relay_ports: 49152..=65535,
            default_lifetime: Duration::from_secs(600),
            max_lifetime: Duration::from_secs(3600),
            permission_lifetime: Duration::from_secs(300),
            channel_lifetime: Duration::from_secs(600),
            nonce_lifetime: Duration::from_secs(600),
            peers: PeerPolicy::default(),
            user_quota: None,
            total_quota: None,
            ip_quota: None,
            max_bps: None,
            max_permissions: 256,
        }
    }
}

/// Send `payload` from the relay socket bound at `relay` to `peer`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Relayed<'a> {
    pub relay: SocketAddr,
    pub peer: SocketAddr,
    pub payload: &'a [u8],
}

/// Send the peer's datagram to `client` behind a ChannelData header for `channel`
/// ([`channel_data::frame_in_place`]; padded to four bytes when `client.transport.is_stream()`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ToChannel {
    pub client: FiveTuple,
    pub channel: u16,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// A STUN message (response or Data indication) for a client.
    ToClient { client: FiveTuple, data: Vec<u8> },
    /// Bind a UDP relay socket at `addr`, then report with [`Server::handle_relay_bound`]. With
    /// `hold_next`, also bind the next port and hold that socket unused: it is reserved for a
    /// later allocation (EVEN-PORT with the R bit, RFC 8656 §14.6), and nothing else on the host
    /// may take the port meanwhile — report `Err` if either port is taken. A later `BindRelay`
    /// for a held address takes the held socket.
    BindRelay {
        client: FiveTuple,
        addr: SocketAddr,
        hold_next: bool,
    },
    /// Close the socket held at `addr` for a reservation nobody claimed in time.
    ReleaseHeld { addr: SocketAddr },
    /// Close the relay socket at `relay`: its allocation is gone. Report the socket closed with
    /// [`Server::handle_relay_closed`]; until then its port is not handed out again.
    FreeRelay { relay: SocketAddr },
    /// An allocation began or ended: for the operator's log (coturn logs each session), nothing
    /// to do.
    Allocation(AllocationEvent),
}

/// An allocation's life, as the operator's log tells it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AllocationEvent {
    Created {
        client: FiveTuple,
        username: String,
        /// The relayed address the client was given.
        relay: SocketAddr,
        lifetime: Duration,
    },
    Ended {
        client: FiveTuple,
        username: String,
        relay: SocketAddr,
        reason: EndReason,
    },
}

/// Why an allocation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReason {
    /// The client refreshed it with a lifetime of 0.
    Released,
    /// Its lifetime ran out without a refresh.
    Expired,
    /// Its TCP or TLS connection closed.
    ConnectionClosed,
}

impl EndReason {
    pub fn as_str(self) -> &'static str {
        match self {
            EndReason::Released => "released",
            EndReason::Expired => "expired",
            EndReason::ConnectionClosed => "connection closed",
        }
    }
}

/// Counters for metrics and benchmarks.
#[derive(Debug, Clone, Default)]
pub struct Stats {
    pub allocations_created: u64,
    pub to_peer_packets: u64,
    pub to_peer_bytes: u64,
    pub to_client_packets: u64,
    pub to_client_bytes: u64,
    /// Packets dropped: no permission or channel, over the bandwidth cap, malformed.
    pub dropped: u64,
    pub auth_failures: u64,
    pub error_responses: u64,
}

/// An Allocate waiting for its relay socket.
struct Pending {
    txid: TransactionId,
    username: String,
    key: [u8; 16],
    alg: IntegrityAlg,
    lifetime: Duration,
    v6: bool,
    port: u16,
    attempts: u8,
    /// How the port was chosen, to choose again the same way if binding fails.
    ports: PortRequest,
}

/// What an Allocate asked of its relay port (RFC 8656 §7.2, EVEN-PORT and RESERVATION-TOKEN).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PortRequest {
    Any,
    Even,
    /// An even port, with the next one held for a later Allocate that brings the token.
    EvenReserveNext,
    /// The port a RESERVATION-TOKEN held.
    Reserved,
}

/// A port held by EVEN-PORT's R bit, for about 30 seconds (RFC 8656 §7.2).
struct Reservation {
    v6: bool,
    port: u16,
    expires: Instant,
}

const RESERVATION_LIFETIME: Duration = Duration::from_secs(30);

/// A refused request: the error code, and whether to challenge (REALM and NONCE attached).
struct Reject {
    code: ErrorCode,
    challenge: bool,
    unknown: Vec<AttrType>,
}

impl From<ErrorCode> for Reject {
    fn from(code: ErrorCode) -> Self {
        Self {
            code,
            challenge: false,
            unknown: Vec::new(),
        }
    }
}

impl Reject {
    fn challenge(code: ErrorCode) -> Self {
        Self {
            code,
            challenge: true,
            unknown: Vec::new(),
        }
    }
}

/// A request that passed authentication.
struct Authed {
    username: String,
    key: [u8; 16],
    alg: IntegrityAlg,
}

/// The sans-IO STUN/TURN server.
pub struct Server<R> {
    config: Config,
    rng: R,
    nonces: Nonces,
    /// Instants are turned into seconds (nonce expiry) and Unix time (REST credentials) from here.
    epoch: Instant,
    unix_at_epoch: u64,
    /// Seeds every map below and those of each allocation.
    hasher: foldhash::fast::FixedState,
    allocations: Map<FiveTuple, Allocation>,
    by_relay: Map<SocketAddr, FiveTuple>,
    by_advertised: Map<SocketAddr, FiveTuple>,
    pending: HashMap<FiveTuple, Pending>,
    ports_in_use: HashSet<(bool, u16)>,
    reservations: HashMap<[u8; 8], Reservation>,
    per_user: HashMap<String, usize>,
    per_ip: HashMap<IpAddr, usize>,
    timers: BinaryHeap<Reverse<(Instant, FiveTuple)>>,
    outputs: VecDeque<Output>,
    stats: Stats,
}

impl<R: RngCore> Server<R> {
    /// `unix_now` is the wall-clock time at `now`, in seconds since 1970: TURN REST usernames carry
    /// an absolute expiry, and this is how the core knows the date without reading a clock.
    pub fn new(config: Config, mut rng: R, now: Instant, unix_now: u64) -> Self {
        let mut secret = [0u8; 32];
        rng.fill_bytes(&mut secret);
        let hasher = foldhash::fast::FixedState::with_seed(rng.next_u64());
        Self {
            config,
            rng,
            nonces: Nonces::new(secret),
            epoch: now,
            unix_at_epoch: unix_now,
            allocations: Map::with_hasher(hasher.clone()),
            by_relay: Map::with_hasher(hasher.clone()),
            by_advertised: Map::with_hasher(hasher.clone()),
            hasher,
            pending: HashMap::new(),
            ports_in_use: HashSet::new(),
            reservations: HashMap::new(),
            per_user: HashMap::new(),
            per_ip: HashMap::new(),
            timers: BinaryHeap::new(),
            outputs: VecDeque::new(),
            stats: Stats::default(),
        }
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    pub fn allocation_count(&self) -> usize {
        self.allocations.len()
    }

    /// A datagram (UDP) or one frame (TCP/TLS, see [`channel_data::frame_len`]) from a client.
    pub fn handle_client<'a>(
        &mut self,
        from: FiveTuple,
        data: &'a [u8],
        now: Instant,
    ) -> Option<Relayed<'a>> {
        let first = *data.first()?;
        if channel_data::is_channel_data(first) {
            return self.handle_channel_data(from, data, now);
        }
        let Ok(msg) = Message::parse(data) else {
            // Not STUN, or broken STUN: silently dropped (RFC 8489 §6.3).
            self.stats.dropped += 1;
            return None;
        };
        match (msg.class(), msg.method()) {
            (Class::Indication, Method::SEND) => return self.handle_send(from, &msg, now),
            (Class::Request, method) => {
                let unknown: Vec<AttrType> = msg
                    .attributes()
                    .map(|(t, _)| t)
                    .filter(|t| t.comprehension_required() && !handlers::understood(*t))
                    .collect();
                let result = if !unknown.is_empty() {
                    Err(Reject {
                        code: ErrorCode::UNKNOWN_ATTRIBUTE,
                        challenge: false,
                        unknown,
                    })
                } else {
                    match method {
                        Method::BINDING => {
                            self.handle_binding(from, &msg);
                            Ok(())
                        }
                        Method::ALLOCATE => self.handle_allocate(from, &msg, now),
                        Method::REFRESH => self.handle_refresh(from, &msg, now),
                        Method::CREATE_PERMISSION => self.handle_create_permission(from, &msg, now),
                        Method::CHANNEL_BIND => self.handle_channel_bind(from, &msg, now),
                        _ => Err(ErrorCode::BAD_REQUEST.into()),
                    }
                };
                if let Err(reject) = result {
                    self.reject(from, &msg, reject, now);
                }
            }
            // Responses and other indications are not for a server.
            _ => self.stats.dropped += 1,
        }
        None
    }

    /// A datagram that arrived on the relay socket bound at `relay` from `peer`.
    pub fn handle_peer(
        &mut self,
        relay: SocketAddr,
        peer: SocketAddr,
        data: &[u8],
        now: Instant,
    ) -> Option<ToChannel> {
        let client = *self.by_relay.get(&relay)?;
        self.peer_to_client(client, peer, data, now)
    }

    /// Delivers a peer's datagram to `client`: on its channel if one is bound (returned, for the
    /// caller to frame), else queued as a Data indication.
    fn peer_to_client(
        &mut self,
        client: FiveTuple,
        peer: SocketAddr,
        data: &[u8],
        now: Instant,
    ) -> Option<ToChannel> {
        let alloc = self.allocations.get_mut(&client)?;
        if !alloc.permitted(peer.ip(), now) || !alloc.take_bandwidth(data.len(), now) {
            self.stats.dropped += 1;
            return None;
        }
        self.stats.to_client_packets += 1;
        self.stats.to_client_bytes += data.len() as u64;
        if let Some(channel) = alloc.peer_channel(peer, now) {
            return Some(ToChannel { client, channel });
        }
        let mut txid = [0u8; 12];
        self.rng.fill_bytes(&mut txid);
        let mut buf = Vec::with_capacity(data.len() + 48);
        MessageWriter::new(&mut buf, Class::Indication, Method::DATA, txid)
            .xor_address(AttrType::XOR_PEER_ADDRESS, peer)
            .attr(AttrType::DATA, data)
            .fingerprint();
        self.outputs
            .push_back(Output::ToClient { client, data: buf });
        None
    }

    /// Relay-to-relay on this server (both browsers of a call behind TURN): the datagram goes
    /// straight into the other allocation, never onto the network.
    fn relay_internally(&mut self, from: SocketAddr, to: SocketAddr, payload: &[u8], now: Instant) {
        let Some(client) = self.by_advertised.get(&to).copied() else {
            return;
        };
        if let Some(to) = self.peer_to_client(client, from, payload, now) {
            let stream = client.transport.is_stream();
            let mut frame = vec![0; channel_data::framed_len(payload.len(), stream)];
            frame[channel_data::HEADER..][..payload.len()].copy_from_slice(payload);
            channel_data::frame_in_place(&mut frame, to.channel, payload.len(), stream);
            self.outputs.push_back(Output::ToClient {
                client,
                data: frame,
            });
        }
    }

    fn is_own_relay_ip(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        [self.config.relay_v4, self.config.relay_v6]
            .iter()
            .flatten()
            .any(|r| r.advertised == ip)
    }

    /// The I/O's answer to [`Output::BindRelay`]: the bound address, or `Err` if that port was
    /// taken (another one is tried, up to eight, then 508).
    pub fn handle_relay_bound(
        &mut self,
        client: FiveTuple,
        bound: Result<SocketAddr, ()>,
        now: Instant,
    ) {
        let Some(mut pending) = self.pending.remove(&client) else {
            return;
        };
        match bound {
            Ok(relay) => self.finish_allocate(client, pending, relay, now),
            Err(()) => {
                // Busy for now (another program, or a socket of ours still closing): let it go
                // and try another; a port held for a pair goes with it.
                self.ports_in_use.remove(&(pending.v6, pending.port));
                if pending.ports == PortRequest::EvenReserveNext {
                    self.ports_in_use.remove(&(pending.v6, pending.port + 1));
                }
                pending.attempts += 1;
                let retry = pending.attempts < 8 && pending.ports != PortRequest::Reserved;
                match retry
                    .then(|| self.pick_port(pending.v6, pending.ports))
                    .flatten()
                {
                    Some(port) => {
                        pending.port = port;
                        self.request_bind(client, pending);
                    }
                    None => self.fail_pending(client, pending),
                }
            }
        }
    }

    /// The relay socket at `relay` is closed: its port may serve a new allocation.
    pub fn handle_relay_closed(&mut self, relay: SocketAddr) {
        self.ports_in_use.remove(&(relay.is_ipv6(), relay.port()));
    }

    /// A TCP/TLS client connection closed: its allocation goes with it (RFC 8656 §3.1).
    pub fn handle_client_closed(&mut self, client: FiveTuple) {
        if let Some(pending) = self.pending.remove(&client) {
            self.ports_in_use.remove(&(pending.v6, pending.port));
            self.release_quota(&pending.username, client.client.ip());
        }
        self.delete_allocation(&client, EndReason::ConnectionClosed);
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        let ports = &mut self.ports_in_use;
        let mut expired = Vec::new();
        self.reservations.retain(|_, r| {
            let keep = r.expires > now;
            if !keep {
                ports.remove(&(r.v6, r.port));
                expired.push((r.v6, r.port));
            }
            keep
        });
        // The held socket closes as the I/O drains this, before any later bind is asked for.
        for (v6, port) in expired {
            if let Some(addr) = self.relay_bind_addr(v6, port) {
                self.outputs.push_back(Output::ReleaseHeld { addr });
            }
        }
        while let Some(Reverse((at, client))) = self.timers.peek().copied() {
            if at > now {
                break;
            }
            self.timers.pop();
            let Some(alloc) = self.allocations.get_mut(&client) else {
                continue;
            };
            if alloc.expires <= now {
                self.delete_allocation(&client, EndReason::Expired);
            } else {
                alloc.forget_expired(now);
                // Wake again at expiry, or sooner to sweep permissions of a long-lived allocation.
                let next = alloc.expires.min(now + self.config.permission_lifetime);
                self.timers.push(Reverse((next, client)));
            }
        }
    }

    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// The next allocation expiry (possibly early: a refreshed allocation is rechecked then).
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.peek().map(|Reverse((at, _))| *at)
    }

    fn handle_channel_data<'a>(
        &mut self,
        from: FiveTuple,
        data: &'a [u8],
        now: Instant,
    ) -> Option<Relayed<'a>> {
        let Some((channel, payload)) = channel_data::parse(data) else {
            self.stats.dropped += 1;
            return None;
        };
        self.relay(from, payload, now, |alloc| alloc.channel_peer(channel, now))
    }

    fn handle_send<'a>(
        &mut self,
        from: FiveTuple,
        msg: &Message<'a>,
        now: Instant,
    ) -> Option<Relayed<'a>> {
        let peer = msg
            .get_xor_address(AttrType::XOR_PEER_ADDRESS)
            .ok()
            .flatten();
        let payload = msg.get(AttrType::DATA);
        self.relay(from, payload.unwrap_or_default(), now, |alloc| {
            peer.filter(|p| {
                alloc.permitted(p.ip(), now)
                    && alloc.relay.is_ipv4() == p.ip().to_canonical().is_ipv4()
            })
        })
    }

    /// The last step of both client-to-peer paths: the sender's allocation (looked up once),
    /// the peer `peer_of` finds in it, bandwidth, counters, and either the network or another
    /// allocation of ours.
    fn relay<'a>(
        &mut self,
        from: FiveTuple,
        payload: &'a [u8],
        now: Instant,
        peer_of: impl FnOnce(&Allocation) -> Option<SocketAddr>,
    ) -> Option<Relayed<'a>> {
        let Some(alloc) = self.allocations.get_mut(&from) else {
            self.stats.dropped += 1;
            return None;
        };
        let Some(peer) = peer_of(alloc) else {
            self.stats.dropped += 1;
            return None;
        };
        if !alloc.take_bandwidth(payload.len(), now) {
            self.stats.dropped += 1;
            return None;
        }
        let (relay, advertised) = (alloc.relay, alloc.advertised);
        self.stats.to_peer_packets += 1;
        self.stats.to_peer_bytes += payload.len() as u64;
        // Permissions are per IP, but some were granted only for relay-to-relay or for one
        // service port of this server: any other port there is subject to the policy. Only
        // those IPs need the checks, so the usual datagram pays for two short scans, not the
        // whole policy.
        if self.is_own_relay_ip(peer.ip()) || self.config.peers.is_service_ip(peer.ip()) {
            if self.by_advertised.contains_key(&peer) {
                self.relay_internally(advertised, peer, payload, now);
                return None;
            }
            if !self.config.peers.permits_addr(peer) {
                self.stats.dropped += 1;
                return None;
            }
        }
        Some(Relayed {
            relay,
            peer,
            payload,
        })
    }

    fn secs(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.epoch).as_secs()
    }

    fn unix(&self, now: Instant) -> u64 {
        self.unix_at_epoch + self.secs(now)
    }

    /// Writes a response: `attrs`, then SOFTWARE, MESSAGE-INTEGRITY(-SHA256) with `key` when the
    /// request was authenticated, and FINGERPRINT.
    fn response(
        &self,
        req: &Message,
        class: Class,
        key: Option<(&[u8; 16], IntegrityAlg)>,
        attrs: impl FnOnce(&mut MessageWriter),
    ) -> Vec<u8> {
        let mut buf = Vec::with_capacity(128);
        let mut w = MessageWriter::new(&mut buf, class, req.method(), req.transaction_id());
        attrs(&mut w);
        w.attr(AttrType::SOFTWARE, self.config.software.as_bytes());
        if let Some((key, alg)) = key {
            w.integrity(alg, key);
        }
        w.fingerprint();
        buf
    }

    fn send(&mut self, client: FiveTuple, data: Vec<u8>) {
        self.outputs.push_back(Output::ToClient { client, data });
    }

    fn reject(&mut self, to: FiveTuple, req: &Message, reject: Reject, now: Instant) {
        self.stats.error_responses += 1;
        if reject.code.code == 401 {
            self.stats.auth_failures += 1;
        }
        let nonce = reject.challenge.then(|| {
            let expires = self.secs(now) + self.config.nonce_lifetime.as_secs();
            self.nonces.issue(to.client.ip(), expires)
        });
        // Errors after successful authentication carry integrity (RFC 8489 §9.2.4); a challenge
        // cannot, the client has no key yet.
        let key = if reject.challenge {
            None
        } else {
            self.request_key(req, now)
        };
        let realm = self.config.credentials.realm.clone();
        let data = self.response(req, Class::Error, key.as_ref().map(|(k, a)| (k, *a)), |w| {
            w.error_code(reject.code);
            if !reject.unknown.is_empty() {
                w.unknown_attributes(&reject.unknown);
            }
            if let Some(nonce) = &nonce {
                w.attr(AttrType::REALM, realm.as_bytes());
                w.attr(AttrType::NONCE, nonce.as_bytes());
            }
        });
        self.send(to, data);
    }

    /// The key of a request that carries valid integrity, for signing an error response to it.
    fn request_key(&self, req: &Message, now: Instant) -> Option<([u8; 16], IntegrityAlg)> {
        let alg = req.integrity_alg()?;
        let username = req.get_str(AttrType::USERNAME).ok()??;
        let key = self
            .config
            .credentials
            .key_for(username, self.unix(now))
            .ok()?;
        req.verify_integrity(&key).then_some((key, alg))
    }

    /// An allocation of `username` from `ip` ended or never came to be.
    pub(super) fn release_quota(&mut self, username: &str, ip: IpAddr) {
        if let Some(n) = self.per_user.get_mut(username) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.per_user.remove(username);
            }
        }
        let ip = crate::client_key(ip);
        if let Some(n) = self.per_ip.get_mut(&ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.per_ip.remove(&ip);
            }
        }
    }

    fn delete_allocation(&mut self, client: &FiveTuple, reason: EndReason) {
        let Some(alloc) = self.allocations.remove(client) else {
            return;
        };
        self.by_relay.remove(&alloc.relay);
        self.by_advertised.remove(&alloc.advertised);
        self.release_quota(&alloc.username, client.client.ip());
        self.outputs
            .push_back(Output::Allocation(AllocationEvent::Ended {
                client: *client,
                username: alloc.username,
                relay: alloc.advertised,
                reason,
            }));
        self.outputs
            .push_back(Output::FreeRelay { relay: alloc.relay });
    }

    /// A free relay port, chosen at random (RFC 8656 §7.2 wants ports hard to guess); even, and
    /// with its successor free and held too, when asked.
    fn pick_port(&mut self, v6: bool, request: PortRequest) -> Option<u16> {
        let (lo, hi) = (
            *self.config.relay_ports.start(),
            *self.config.relay_ports.end(),
        );
        let span = u32::from(hi - lo) + 1;
        let start = self.rng.next_u32() % span;
        let even = request != PortRequest::Any;
        let pair = request == PortRequest::EvenReserveNext;
        let free = |p: u16| !self.ports_in_use.contains(&(v6, p));
        // Linear probing from a random start: uniform enough, and terminates on a full range.
        let port = (0..span)
            .map(|i| lo + ((start + i) % span) as u16)
            .find(|&p| (!even || p % 2 == 0) && free(p) && (!pair || (p < hi && free(p + 1))))?;
        self.ports_in_use.insert((v6, port));
        if pair {
            self.ports_in_use.insert((v6, port + 1));
        }
        Some(port)
    }
}
