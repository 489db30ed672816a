//! The TURN core under simulated time: every request, error path and timer.

use super::*;
use crate::auth::{Secret, long_term_key, mint_rest_credentials};
use crate::stun::{IntegrityAlg, MessageWriter};
use proptest::prelude::*;
use rand::SeedableRng;
use rand::rngs::StdRng;

const UNIX: u64 = 1_700_000_000;

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn udp(client: &str) -> FiveTuple {
    FiveTuple {
        transport: Transport::Udp,
        client: addr(client),
        server: addr("192.0.2.1:3478"),
    }
}

fn config() -> Config {
    let mut config = Config {
        relay_v4: Some(RelayAddr {
            bind: "192.0.2.1".parse().unwrap(),
            advertised: "198.51.100.1".parse().unwrap(),
        }),
        relay_ports: 50000..=50009,
        ..Config::default()
    };
    config.credentials.realm = "test".into();
    config
        .credentials
        .users
        .insert("user1".into(), Secret::Password("pass1".into()));
    config
        .credentials
        .users
        .insert("user2".into(), Secret::Password("pass2".into()));
    config.credentials.rest_secret = Some(b"rest-secret".to_vec());
    config
}

/// What a client packet made the server relay: (relay, peer, payload).
type RelayedCopy = (SocketAddr, SocketAddr, Vec<u8>);

/// A response as the test reads it.
struct Reply {
    bytes: Vec<u8>,
}

impl Reply {
    fn msg(&self) -> Message<'_> {
        Message::parse(&self.bytes).expect("server sends valid STUN")
    }
    fn class(&self) -> Class {
        self.msg().class()
    }
    fn error(&self) -> Option<u16> {
        self.msg()
            .get(AttrType::ERROR_CODE)
            .and_then(ErrorCode::decode)
    }
    fn nonce(&self) -> Option<String> {
        self.msg()
            .get_str(AttrType::NONCE)
            .unwrap()
            .map(str::to_owned)
    }
    fn xor(&self, t: AttrType) -> Option<SocketAddr> {
        self.msg().get_xor_address(t).unwrap()
    }
    fn lifetime(&self) -> Option<u32> {
        self.msg().get_u32(AttrType::LIFETIME).unwrap()
    }
}

struct Lab {
    server: Server<StdRng>,
    now: Instant,
    /// Ports the fake I/O refuses to bind.
    taken_ports: Vec<u16>,
    /// Sockets the I/O holds for reservations.
    held: Vec<SocketAddr>,
    freed: Vec<SocketAddr>,
    /// What the operator's log would say.
    events: Vec<AllocationEvent>,
    /// Whether the fake I/O reports freed relay sockets closed at once.
    report_closes: bool,
}

struct Client {
    from: FiveTuple,
    user: String,
    key: [u8; 16],
    nonce: Option<String>,
    alg: IntegrityAlg,
    next_txid: u8,
}

impl Client {
    fn new(from: FiveTuple, user: &str, pass: &str) -> Self {
        Self {
            from,
            user: user.into(),
            key: long_term_key(user, "test", pass),
            nonce: None,
            alg: IntegrityAlg::Sha1,
            next_txid: 0,
        }
    }

    fn txid(&mut self) -> [u8; 12] {
        self.next_txid += 1;
        let mut t = [self.next_txid; 12];
        t[0] = self.from.client.port() as u8;
        t
    }

    /// A request with `attrs`, signed when the client has a nonce.
    fn request(
        &mut self,
        method: Method,
        txid: [u8; 12],
        attrs: impl FnOnce(&mut MessageWriter),
    ) -> Vec<u8> {
        let mut buf = Vec::new();
        let mut w = MessageWriter::new(&mut buf, Class::Request, method, txid);
        attrs(&mut w);
        if let Some(nonce) = &self.nonce {
            w.attr(AttrType::USERNAME, self.user.as_bytes())
                .attr(AttrType::REALM, b"test")
                .attr(AttrType::NONCE, nonce.as_bytes())
                .integrity(self.alg, &self.key);
        }
        w.fingerprint();
        buf
    }
}

fn transport_udp(w: &mut MessageWriter) {
    w.attr(AttrType::REQUESTED_TRANSPORT, &[17, 0, 0, 0]);
}

impl Lab {
    fn new() -> Self {
        Self::with(config())
    }

    fn with(config: Config) -> Self {
        let now = Instant::now();
        Self {
            server: Server::new(config, StdRng::seed_from_u64(3), now, UNIX),
            now,
            taken_ports: Vec::new(),
            held: Vec::new(),
            freed: Vec::new(),
            events: Vec::new(),
            report_closes: true,
        }
    }

    /// Feeds a client packet and plays the I/O: binds relays (refusing `taken_ports`), collects
    /// what the server sends back to `c`.
    fn client_packet(&mut self, from: FiveTuple, data: &[u8]) -> (Option<RelayedCopy>, Vec<Reply>) {
        let relayed = self
            .server
            .handle_client(from, data, self.now)
            .map(|r| (r.relay, r.peer, r.payload.to_vec()));
        (relayed, self.drain(from))
    }

    fn held_ports(&self) -> Vec<u16> {
        self.held.iter().map(SocketAddr::port).collect()
    }

    /// Every output, as the I/O would act on it; what went to clients must all be for `to`.
    fn drain(&mut self, to: FiveTuple) -> Vec<Reply> {
        let mut replies = Vec::new();
        while let Some(out) = self.server.poll_output() {
            if let Some((client, data)) = self.io(out) {
                assert_eq!(client, to);
                replies.push(Reply { bytes: data });
            }
        }
        replies
    }

    /// What the I/O does with one output; a message for a client is handed back.
    fn io(&mut self, out: Output) -> Option<(FiveTuple, Vec<u8>)> {
        match out {
            Output::ToClient { client, data } => return Some((client, data)),
            Output::BindRelay {
                client,
                addr,
                hold_next,
            } => {
                let next = SocketAddr::new(addr.ip(), addr.port() + 1);
                let taken = |a: SocketAddr| self.taken_ports.contains(&a.port());
                let result = if let Some(i) = self.held.iter().position(|h| *h == addr) {
                    self.held.remove(i); // the held socket becomes the relay
                    Ok(addr)
                } else if taken(addr) || (hold_next && taken(next)) {
                    Err(())
                } else {
                    if hold_next {
                        self.held.push(next);
                    }
                    Ok(addr)
                };
                self.server.handle_relay_bound(client, result, self.now);
            }
            Output::ReleaseHeld { addr } => {
                let i = self.held.iter().position(|h| *h == addr);
                assert!(i.is_some(), "released {addr}, which was not held");
                self.held.retain(|h| *h != addr);
            }
            Output::FreeRelay { relay } => {
                self.freed.push(relay);
                if self.report_closes {
                    self.server.handle_relay_closed(relay);
                }
            }
            Output::Allocation(event) => self.events.push(event),
        }
        None
    }

    /// Sends a request as a real client does: on 438 it takes the fresh nonce and retries once.
    fn send(
        &mut self,
        c: &mut Client,
        method: Method,
        attrs: impl Fn(&mut MessageWriter),
    ) -> Reply {
        let reply = self.send_once(c, method, &attrs);
        if reply.error() == Some(438) {
            c.nonce = reply.nonce();
            return self.send_once(c, method, &attrs);
        }
        reply
    }

    fn send_once(
        &mut self,
        c: &mut Client,
        method: Method,
        attrs: impl FnOnce(&mut MessageWriter),
    ) -> Reply {
        let txid = c.txid();
        let req = c.request(method, txid, attrs);
        let (_, mut replies) = self.client_packet(c.from, &req);
        assert_eq!(replies.len(), 1, "one response per request");
        let reply = replies.remove(0);
        assert_eq!(reply.msg().transaction_id(), txid);
        reply
    }

    /// Allocate with the 401 dance; returns the success response.
    fn allocate(&mut self, c: &mut Client) -> Reply {
        if c.nonce.is_none() {
            let challenge = self.send(c, Method::ALLOCATE, transport_udp);
            assert_eq!(challenge.error(), Some(401));
            c.nonce = challenge.nonce();
        }
        self.send(c, Method::ALLOCATE, transport_udp)
    }

    /// Allocate an even port and reserve the next (EVEN-PORT with the R bit), after the 401.
    fn allocate_reserving_next(&mut self, c: &mut Client) -> Reply {
        c.nonce = self.send(c, Method::ALLOCATE, transport_udp).nonce();
        self.send(c, Method::ALLOCATE, |w| {
            transport_udp(w);
            w.attr(AttrType::EVEN_PORT, &[0x80]);
        })
    }

    fn permit(&mut self, c: &mut Client, peer: SocketAddr) -> Reply {
        self.send(c, Method::CREATE_PERMISSION, |w| {
            w.xor_address(AttrType::XOR_PEER_ADDRESS, peer);
        })
    }

    fn bind_channel(&mut self, c: &mut Client, channel: u16, peer: SocketAddr) -> Reply {
        self.send(c, Method::CHANNEL_BIND, |w| {
            w.attr(
                AttrType::CHANNEL_NUMBER,
                &[(channel >> 8) as u8, channel as u8, 0, 0],
            )
            .xor_address(AttrType::XOR_PEER_ADDRESS, peer);
        })
    }

    fn advance(&mut self, by: Duration) {
        self.now += by;
        self.server.handle_timeout(self.now);
        while let Some(out) = self.server.poll_output() {
            self.io(out);
        }
    }
}

fn send_indication(peer: SocketAddr, data: &[u8]) -> Vec<u8> {
    let mut buf = Vec::new();
    MessageWriter::new(&mut buf, Class::Indication, Method::SEND, [9; 12])
        .xor_address(AttrType::XOR_PEER_ADDRESS, peer)
        .attr(AttrType::DATA, data);
    buf
}

fn channel_data(channel: u16, payload: &[u8]) -> Vec<u8> {
    let mut v = crate::channel_data::header(channel, payload.len()).to_vec();
    v.extend_from_slice(payload);
    v
}

const PEER: &str = "203.0.113.5:4000";

#[test]
fn binding_reports_the_reflexive_address() {
    let mut lab = Lab::new();
    let mut c = Client::new(udp("203.0.113.9:5555"), "user1", "pass1");
    let reply = lab.send(&mut c, Method::BINDING, |_| {});
    assert_eq!(reply.class(), Class::Success);
    assert_eq!(
        reply.xor(AttrType::XOR_MAPPED_ADDRESS),
        Some(addr("203.0.113.9:5555"))
    );
    assert!(reply.msg().get(AttrType::SOFTWARE).is_some());
}

#[test]
fn allocate_challenges_then_succeeds() {
    let mut lab = Lab::new();
    let mut c = Client::new(udp("203.0.113.9:5555"), "user1", "pass1");
    let challenge = lab.send(&mut c, Method::ALLOCATE, transport_udp);
    assert_eq!(challenge.error(), Some(401));
    assert_eq!(challenge.msg().get(AttrType::REALM), Some(&b"test"[..]));
    assert!(
        challenge.msg().integrity_alg().is_none(),
        "a challenge carries no integrity"
    );
    c.nonce = challenge.nonce();
    let ok = lab.send(&mut c, Method::ALLOCATE, transport_udp);
    assert_eq!(ok.class(), Class::Success, "{:?}", ok.error());
    let relayed = ok.xor(AttrType::XOR_RELAYED_ADDRESS).unwrap();
    assert_eq!(
        relayed.ip(),
        "198.51.100.1".parse::<IpAddr>().unwrap(),
        "advertised (external) address"
    );
    assert!((50000..=50009).contains(&relayed.port()));
    assert_eq!(
        ok.xor(AttrType::XOR_MAPPED_ADDRESS),
        Some(addr("203.0.113.9:5555"))
    );
    assert_eq!(ok.lifetime(), Some(600));
    assert!(ok.msg().verify_integrity(&c.key));
    assert_eq!(lab.server.allocation_count(), 1);
}

#[test]
fn allocate_retransmit_and_mismatch() {
    let mut lab = Lab::new();
    let mut c = Client::new(udp("203.0.113.9:5555"), "user1", "pass1");
    let challenge = lab.send(&mut c, Method::ALLOCATE, transport_udp);
    c.nonce = challenge.nonce();
    let txid = c.txid();
    let req = c.request(Method::ALLOCATE, txid, transport_udp);
    let first = lab.client_packet(c.from, &req).1.remove(0);
    let again = lab.client_packet(c.from, &req).1.remove(0);
    assert_eq!(
        first.bytes, again.bytes,
        "a retransmit gets the same answer"
    );
    let other = lab.send(&mut c, Method::ALLOCATE, transport_udp);
    assert_eq!(other.error(), Some(437));
    assert!(
        other.msg().verify_integrity(&c.key),
        "errors after authentication are signed"
    );
}

#[test]
fn wrong_credentials_get_401() {
    let mut lab = Lab::new();
    for (user, pass) in [("user1", "nope"), ("nobody", "x")] {
        let mut c = Client::new(udp("203.0.113.9:5555"), user, pass);
        let challenge = lab.send(&mut c, Method::ALLOCATE, transport_udp);
        c.nonce = challenge.nonce();
        let reply = lab.send(&mut c, Method::ALLOCATE, transport_udp);
        assert_eq!(reply.error(), Some(401), "{user}");
        assert!(reply.nonce().is_some());
    }
    assert_eq!(lab.server.allocation_count(), 0);
    assert_eq!(lab.server.stats().auth_failures, 4);
}

#[test]
fn nonces_go_stale() {
    let mut lab = Lab::new();
    let mut c = Client::new(udp("203.0.113.9:5555"), "user1", "pass1");
    lab.allocate(&mut c);
    lab.advance(Duration::from_secs(500));
    assert_eq!(
        lab.send_once(&mut c, Method::REFRESH, |_| {}).class(),
        Class::Success
    );
    lab.advance(Duration::from_secs(101));
    let stale = lab.send_once(&mut c, Method::REFRESH, |_| {});
    assert_eq!(stale.error(), Some(438));
    let fresh = stale.nonce().unwrap();
    assert_ne!(Some(&fresh), c.nonce.as_ref());
    c.nonce = Some(fresh);
    assert_eq!(
        lab.send_once(&mut c, Method::REFRESH, |_| {}).class(),
        Class::Success
    );
    // A nonce from another client address is stale for this one.
    let mut other = Client::new(udp("203.0.113.10:5555"), "user1", "pass1");
    other.nonce = c.nonce.clone();
    assert_eq!(
        lab.send_once(&mut other, Method::ALLOCATE, transport_udp)
            .error(),
        Some(438)
    );
}

#[test]
fn allocate_attribute_errors() {
    let mut lab = Lab::new();
    let mut c = Client::new(udp("203.0.113.9:5555"), "user1", "pass1");
    c.nonce = lab.send(&mut c, Method::ALLOCATE, transport_udp).nonce();
    assert_eq!(
        lab.send(&mut c, Method::ALLOCATE, |_| {}).error(),
        Some(400)
    );
    let tcp = lab.send(&mut c, Method::ALLOCATE, |w| {
        w.attr(AttrType::REQUESTED_TRANSPORT, &[6, 0, 0, 0]);
    });
    assert_eq!(tcp.error(), Some(442));
    let v6 = lab.send(&mut c, Method::ALLOCATE, |w| {
        transport_udp(w);
        w.attr(AttrType::REQUESTED_ADDRESS_FAMILY, &[2, 0, 0, 0]);
    });
    assert_eq!(v6.error(), Some(440), "no IPv6 relay configured");
    let df = lab.send(&mut c, Method::ALLOCATE, |w| {
        transport_udp(w);
        w.attr(AttrType::DONT_FRAGMENT, &[]);
    });
    assert_eq!(
        df.error(),
        Some(420),
        "DF cannot be honoured, so it is not understood"
    );
    assert_eq!(
        df.msg().get(AttrType::UNKNOWN_ATTRIBUTES),
        Some(&[0x00, 0x1A][..])
    );
    let both = lab.send(&mut c, Method::ALLOCATE, |w| {
        transport_udp(w);
        w.attr(AttrType::EVEN_PORT, &[0])
            .attr(AttrType::RESERVATION_TOKEN, &[1; 8]);
    });
    assert_eq!(both.error(), Some(400));
    let bad_lifetime = lab.send(&mut c, Method::ALLOCATE, |w| {
        transport_udp(w);
        w.attr(AttrType::LIFETIME, &[1, 2]);
    });
    assert_eq!(bad_lifetime.error(), Some(400));
    let unknown_method = lab.send(&mut c, Method(0x0FF), |_| {});
    assert_eq!(unknown_method.error(), Some(400));
    assert_eq!(lab.server.allocation_count(), 0);
}

#[test]
fn lifetimes_are_clamped() {
    let mut lab = Lab::new();
    let mut c = Client::new(udp("203.0.113.9:1"), "user1", "pass1");
    c.nonce = lab.send(&mut c, Method::ALLOCATE, transport_udp).nonce();
    let short = lab.send(&mut c, Method::ALLOCATE, |w| {
        transport_udp(w);
        w.u32(AttrType::LIFETIME, 10);
    });
    assert_eq!(short.lifetime(), Some(600));
    let long = lab.send(&mut c, Method::REFRESH, |w| {
        w.u32(AttrType::LIFETIME, 100_000);
    });
    assert_eq!(long.lifetime(), Some(3600));
}

#[test]
fn quotas() {
    let mut cfg = config();
    cfg.user_quota = Some(1);
    cfg.total_quota = Some(2);
    let mut lab = Lab::with(cfg);
    let mut a = Client::new(udp("203.0.113.9:1"), "user1", "pass1");
    let mut a2 = Client::new(udp("203.0.113.9:2"), "user1", "pass1");
    let mut b = Client::new(udp("203.0.113.9:3"), "user2", "pass2");
    let (user3, pass3) = mint_rest_credentials(b"rest-secret", "carol", UNIX + 60);
    let mut c = Client::new(udp("203.0.113.9:4"), &user3, &pass3);
    assert_eq!(lab.allocate(&mut a).class(), Class::Success);
    assert_eq!(lab.allocate(&mut a2).error(), Some(486), "user quota");
    assert_eq!(lab.allocate(&mut b).class(), Class::Success);
    assert_eq!(lab.allocate(&mut c).error(), Some(486), "total quota");
    // Freeing one makes room again.
    assert_eq!(
        lab.send(&mut a, Method::REFRESH, |w| {
            w.u32(AttrType::LIFETIME, 0);
        })
        .lifetime(),
        Some(0)
    );
    assert_eq!(
        lab.send(&mut a2, Method::ALLOCATE, transport_udp).class(),
        Class::Success
    );
}

#[test]
fn ip_quota_bounds_a_client_whatever_credentials_it_mints() {
    let mut cfg = config();
    cfg.ip_quota = Some(2);
    let mut lab = Lab::with(cfg);
    // Each credential fresh, as `GET /api/ice-servers` hands out one per call.
    let mut clients: Vec<Client> = (0..3)
        .map(|i| {
            let (user, pass) = mint_rest_credentials(b"rest-secret", &format!("p{i}"), UNIX + 60);
            Client::new(udp(&format!("203.0.113.9:{}", i + 1)), &user, &pass)
        })
        .collect();
    assert_eq!(lab.allocate(&mut clients[0]).class(), Class::Success);
    assert_eq!(lab.allocate(&mut clients[1]).class(), Class::Success);
    assert_eq!(lab.allocate(&mut clients[2]).error(), Some(486), "IP quota");
    // Another address is not affected.
    let (user, pass) = mint_rest_credentials(b"rest-secret", "other", UNIX + 60);
    let mut other = Client::new(udp("198.51.100.7:1"), &user, &pass);
    assert_eq!(lab.allocate(&mut other).class(), Class::Success);
    // Releasing one gives its slot back.
    let released = lab.send(&mut clients[0], Method::REFRESH, |w| {
        w.u32(AttrType::LIFETIME, 0);
    });
    assert_eq!(released.lifetime(), Some(0));
    assert_eq!(lab.allocate(&mut clients[2]).class(), Class::Success);

    // Addresses of one IPv6 /64 are one client.
    let mut v6: Vec<Client> = ["[2001:db8::1]:1", "[2001:db8::2]:1", "[2001:db8::3]:1"]
        .iter()
        .enumerate()
        .map(|(i, a)| {
            let (user, pass) = mint_rest_credentials(b"rest-secret", &format!("v{i}"), UNIX + 60);
            Client::new(udp(a), &user, &pass)
        })
        .collect();
    assert_eq!(lab.allocate(&mut v6[0]).class(), Class::Success);
    assert_eq!(lab.allocate(&mut v6[1]).class(), Class::Success);
    assert_eq!(lab.allocate(&mut v6[2]).error(), Some(486), "one /64");
}

#[test]
fn rest_credentials_and_their_expiry() {
    let mut lab = Lab::new();
    let (user, pass) = mint_rest_credentials(b"rest-secret", "alice", UNIX + 100);
    let mut ok = Client::new(udp("203.0.113.9:1"), &user, &pass);
    assert_eq!(lab.allocate(&mut ok).class(), Class::Success);
    let (old_user, old_pass) = mint_rest_credentials(b"rest-secret", "bob", UNIX - 1);
    let mut expired = Client::new(udp("203.0.113.9:2"), &old_user, &old_pass);
    assert_eq!(lab.allocate(&mut expired).error(), Some(401));
    // Time passes inside the core too: the first credential expires for new allocations.
    lab.advance(Duration::from_secs(101));
    let mut late = Client::new(udp("203.0.113.9:3"), &user, &pass);
    assert_eq!(lab.allocate(&mut late).error(), Some(401));
}

#[test]
fn sha256_integrity_is_answered_in_kind() {
    let mut lab = Lab::new();
    let mut c = Client::new(udp("203.0.113.9:1"), "user1", "pass1");
    c.alg = IntegrityAlg::Sha256;
    let ok = lab.allocate(&mut c);
    assert_eq!(ok.class(), Class::Success);
    assert_eq!(ok.msg().integrity_alg(), Some(IntegrityAlg::Sha256));
    assert!(ok.msg().verify_integrity(&c.key));
}

#[test]
fn refresh_extends_deletes_and_checks_owner() {
    let mut lab = Lab::new();
    let mut c = Client::new(udp("203.0.113.9:1"), "user1", "pass1");
    let relay = lab
        .allocate(&mut c)
        .xor(AttrType::XOR_RELAYED_ADDRESS)
        .unwrap();
    lab.advance(Duration::from_secs(500));
    assert_eq!(
        lab.send(&mut c, Method::REFRESH, |_| {}).lifetime(),
        Some(600)
    );
    lab.advance(Duration::from_secs(500));
    assert_eq!(lab.server.allocation_count(), 1, "the refresh moved expiry");
    // Another user on the same 5-tuple cannot touch it.
    let mut intruder = Client::new(c.from, "user2", "pass2");
    intruder.nonce = c.nonce.clone();
    assert_eq!(
        lab.send(&mut intruder, Method::REFRESH, |_| {}).error(),
        Some(441)
    );
    let gone = lab.send(&mut c, Method::REFRESH, |w| {
        w.u32(AttrType::LIFETIME, 0);
    });
    assert_eq!(gone.lifetime(), Some(0));
    assert_eq!(lab.freed.len(), 1);
    assert_eq!(lab.freed[0].port(), relay.port());
    assert_eq!(
        lab.events,
        [
            AllocationEvent::Created {
                client: c.from,
                username: "user1".into(),
                relay,
                lifetime: Duration::from_secs(600),
            },
            AllocationEvent::Ended {
                client: c.from,
                username: "user1".into(),
                relay,
                reason: EndReason::Released,
            },
        ],
        "the operator's log: who, from where, which relay, and why it ended"
    );
    assert_eq!(lab.send(&mut c, Method::REFRESH, |_| {}).error(), Some(437));
}

#[test]
fn allocations_expire() {
    let mut lab = Lab::new();
    let mut c = Client::new(udp("203.0.113.9:1"), "user1", "pass1");
    lab.allocate(&mut c);
    lab.advance(Duration::from_secs(599));
    assert_eq!(lab.server.allocation_count(), 1);
    lab.advance(Duration::from_secs(2));
    assert_eq!(lab.server.allocation_count(), 0);
    assert_eq!(lab.freed.len(), 1);
    assert_eq!(lab.server.poll_timeout(), None);
    assert!(matches!(
        lab.events.last(),
        Some(AllocationEvent::Ended {
            reason: EndReason::Expired,
            ..
        })
    ));
}

#[test]
fn permissions_gate_send_and_expire() {
    let mut lab = Lab::new();
    let mut c = Client::new(udp("203.0.113.9:1"), "user1", "pass1");
    let ok = lab.allocate(&mut c);
    let relay = SocketAddr::new(
        "192.0.2.1".parse().unwrap(),
        ok.xor(AttrType::XOR_RELAYED_ADDRESS).unwrap().port(),
    );
    let (relayed, _) = lab.client_packet(c.from, &send_indication(addr(PEER), b"early"));
    assert!(relayed.is_none(), "no permission yet");
    assert_eq!(lab.permit(&mut c, addr(PEER)).class(), Class::Success);
    let (relayed, _) = lab.client_packet(c.from, &send_indication(addr(PEER), b"hello"));
    assert_eq!(relayed, Some((relay, addr(PEER), b"hello".to_vec())));
    // The permission is per IP: another port of the same peer is fine.
    let (relayed, _) = lab.client_packet(c.from, &send_indication(addr("203.0.113.5:9"), b"x"));
    assert!(relayed.is_some());
    // Peer to client without a channel: a Data indication.
    assert_eq!(
        lab.server.handle_peer(relay, addr(PEER), b"back", lab.now),
        None
    );
    let data = lab.drain(c.from).remove(0);
    assert_eq!(
        (data.class(), data.msg().method()),
        (Class::Indication, Method::DATA)
    );
    assert_eq!(data.xor(AttrType::XOR_PEER_ADDRESS), Some(addr(PEER)));
    assert_eq!(data.msg().get(AttrType::DATA), Some(&b"back"[..]));
    // Unpermitted peers are dropped inbound too.
    assert_eq!(
        lab.server
            .handle_peer(relay, addr("203.0.113.77:1"), b"spam", lab.now),
        None
    );
    assert!(lab.drain(c.from).is_empty());
    lab.advance(Duration::from_secs(301));
    let (relayed, _) = lab.client_packet(c.from, &send_indication(addr(PEER), b"late"));
    assert!(relayed.is_none(), "permission expired after 300 s");
    assert_eq!(
        lab.server.handle_peer(relay, addr(PEER), b"late", lab.now),
        None
    );
    assert!(lab.drain(c.from).is_empty());
}

#[test]
fn forbidden_and_mismatched_peers() {
    let mut lab = Lab::new();
    let mut c = Client::new(udp("203.0.113.9:1"), "user1", "pass1");
    lab.allocate(&mut c);
    for peer in [
        "127.0.0.1:9",
        "10.0.0.1:9",
        "192.168.1.1:9",
        "169.254.1.1:9",
        "224.0.0.1:9",
        "0.0.0.0:9",
        "100.64.0.1:9",
    ] {
        let reply = lab.permit(&mut c, addr(peer));
        assert_eq!(reply.error(), Some(403), "{peer}");
        assert!(reply.msg().verify_integrity(&c.key));
    }
    assert_eq!(
        lab.permit(&mut c, addr("[2001:db8::1]:9")).error(),
        Some(443)
    );
    assert_eq!(
        lab.bind_channel(&mut c, 0x4000, addr("10.0.0.1:9")).error(),
        Some(403)
    );
    assert_eq!(
        lab.send(&mut c, Method::CREATE_PERMISSION, |_| {}).error(),
        Some(400)
    );
}

#[test]
fn loopback_peers_when_allowed() {
    let mut cfg = config();
    cfg.peers.allow_loopback = true;
    cfg.peers.own = vec!["192.0.2.1".parse().unwrap()];
    let mut lab = Lab::with(cfg);
    let mut c = Client::new(udp("203.0.113.9:1"), "user1", "pass1");
    lab.allocate(&mut c);
    assert_eq!(
        lab.permit(&mut c, addr("127.0.0.1:3480")).class(),
        Class::Success
    );
    assert_eq!(
        lab.permit(&mut c, addr("192.0.2.1:3480")).error(),
        Some(403),
        "the server's own address"
    );
}

#[test]
fn channels_relay_both_ways_and_expire() {
    let mut lab = Lab::new();
    let mut c = Client::new(udp("203.0.113.9:1"), "user1", "pass1");
    let ok = lab.allocate(&mut c);
    let relay = SocketAddr::new(
        "192.0.2.1".parse().unwrap(),
        ok.xor(AttrType::XOR_RELAYED_ADDRESS).unwrap().port(),
    );
    assert_eq!(
        lab.bind_channel(&mut c, 0x4001, addr(PEER)).class(),
        Class::Success
    );
    let (relayed, _) = lab.client_packet(c.from, &channel_data(0x4001, b"ping"));
    assert_eq!(relayed, Some((relay, addr(PEER), b"ping".to_vec())));
    assert_eq!(
        lab.server.handle_peer(relay, addr(PEER), b"pong", lab.now),
        Some(ToChannel {
            client: c.from,
            channel: 0x4001
        })
    );
    // Unbound channel numbers are dropped.
    assert!(
        lab.client_packet(c.from, &channel_data(0x4002, b"x"))
            .0
            .is_none()
    );
    // Refreshing the same binding is fine; conflicting ones are not.
    assert_eq!(
        lab.bind_channel(&mut c, 0x4001, addr(PEER)).class(),
        Class::Success
    );
    assert_eq!(
        lab.bind_channel(&mut c, 0x4001, addr("203.0.113.6:1"))
            .error(),
        Some(400)
    );
    assert_eq!(
        lab.bind_channel(&mut c, 0x4003, addr(PEER)).error(),
        Some(400)
    );
    assert_eq!(
        lab.bind_channel(&mut c, 0x3FFF, addr("203.0.113.6:1"))
            .error(),
        Some(400)
    );
    assert_eq!(
        lab.bind_channel(&mut c, 0x8000, addr("203.0.113.6:1"))
            .error(),
        Some(400)
    );
    // Keep the allocation and permission alive, let the channel lapse.
    lab.advance(Duration::from_secs(290));
    lab.permit(&mut c, addr(PEER));
    lab.send(&mut c, Method::REFRESH, |_| {});
    lab.advance(Duration::from_secs(290));
    lab.permit(&mut c, addr(PEER));
    lab.advance(Duration::from_secs(30));
    assert!(
        lab.client_packet(c.from, &channel_data(0x4001, b"x"))
            .0
            .is_none(),
        "channel expired at 600 s"
    );
    // With the permission still there, the peer now arrives as a Data indication.
    assert_eq!(
        lab.server.handle_peer(relay, addr(PEER), b"d", lab.now),
        None
    );
    assert_eq!(lab.drain(c.from).len(), 1);
    // For five minutes the number may not go to another peer; after that it may.
    assert_eq!(
        lab.bind_channel(&mut c, 0x4001, addr("203.0.113.6:1"))
            .error(),
        Some(400)
    );
    lab.send(&mut c, Method::REFRESH, |_| {});
    lab.advance(Duration::from_secs(301));
    assert_eq!(
        lab.bind_channel(&mut c, 0x4001, addr("203.0.113.6:1"))
            .class(),
        Class::Success
    );
}

#[test]
fn bandwidth_cap_drops_the_excess() {
    let mut cfg = config();
    cfg.max_bps = Some(1000);
    let mut lab = Lab::with(cfg);
    let mut c = Client::new(udp("203.0.113.9:1"), "user1", "pass1");
    lab.allocate(&mut c);
    lab.bind_channel(&mut c, 0x4000, addr(PEER));
    let payload = [0u8; 300];
    let passed = (0..10)
        .filter(|_| {
            lab.client_packet(c.from, &channel_data(0x4000, &payload))
                .0
                .is_some()
        })
        .count();
    assert_eq!(
        passed, 3,
        "1000 bytes/s lets three 300-byte packets through at once"
    );
    lab.advance(Duration::from_secs(1));
    assert!(
        lab.client_packet(c.from, &channel_data(0x4000, &payload))
            .0
            .is_some()
    );
    assert_eq!(
        lab.server.allocation_count(),
        1,
        "over-cap packets never cost the allocation"
    );
}

#[test]
fn busy_relay_ports_are_skipped_then_capacity_runs_out() {
    let mut lab = Lab::new();
    lab.taken_ports = (50000..=50004).collect();
    let mut c = Client::new(udp("203.0.113.9:1"), "user1", "pass1");
    let ok = lab.allocate(&mut c);
    assert_eq!(ok.class(), Class::Success, "{:?}", ok.error());
    assert!(ok.xor(AttrType::XOR_RELAYED_ADDRESS).unwrap().port() >= 50005);
    // Ten ports, five taken by others, one used: four more allocations, then 508.
    let mut results = Vec::new();
    for i in 2..=6 {
        let mut c = Client::new(udp(&format!("203.0.113.9:{i}")), "user1", "pass1");
        results.push(lab.allocate(&mut c).error());
    }
    assert_eq!(results, vec![None, None, None, None, Some(508)]);
}

#[test]
fn a_closed_tcp_connection_takes_its_allocation() {
    let mut lab = Lab::new();
    let from = FiveTuple {
        transport: Transport::Tcp,
        ..udp("203.0.113.9:1")
    };
    let mut c = Client::new(from, "user1", "pass1");
    lab.allocate(&mut c);
    lab.server.handle_client_closed(from);
    assert_eq!(lab.server.allocation_count(), 0);
    assert!(matches!(
        lab.server.poll_output(),
        Some(Output::Allocation(AllocationEvent::Ended {
            reason: EndReason::ConnectionClosed,
            ..
        }))
    ));
    assert!(matches!(
        lab.server.poll_output(),
        Some(Output::FreeRelay { .. })
    ));
}

#[test]
fn junk_is_dropped_silently() {
    let mut lab = Lab::new();
    let from = udp("203.0.113.9:1");
    for junk in [
        &b""[..],
        b"\x00",
        b"GET / HTTP/1.1\r\n\r\n",
        b"\x40\x00\x00\x10abc",
        &[0u8; 20],
        b"\xff\xff\xff\xff",
    ] {
        let (relayed, replies) = lab.client_packet(from, junk);
        assert!(relayed.is_none() && replies.is_empty(), "{junk:?}");
    }
    // A success response sent to the server is not for it.
    let mut buf = Vec::new();
    MessageWriter::new(&mut buf, Class::Success, Method::BINDING, [1; 12]);
    assert!(lab.client_packet(from, &buf).1.is_empty());
}

proptest! {
    #[test]
    fn any_datagram_is_safe(data in proptest::collection::vec(any::<u8>(), 0..200), first in any::<u8>()) {
        let mut lab = Lab::new();
        let mut data = data;
        if let Some(b) = data.first_mut() { *b = first; }
        let _ = lab.client_packet(udp("203.0.113.9:1"), &data);
        prop_assert_eq!(lab.server.allocation_count(), 0);
    }
}

#[test]
fn a_service_of_this_server_is_reachable_at_its_port_only() {
    let mut cfg = config();
    // The media peer on a private address of this host, UDP 8443.
    cfg.peers.services = vec![addr("10.0.0.7:8443")];
    let mut lab = Lab::with(cfg);
    let mut a = Client::new(udp("203.0.113.9:1"), "user1", "pass1");
    lab.allocate(&mut a);
    assert_eq!(
        lab.permit(&mut a, addr("10.0.0.7:8443")).class(),
        Class::Success
    );
    assert_eq!(lab.permit(&mut a, addr("10.0.0.8:8443")).error(), Some(403));
    let to_media = lab
        .server
        .handle_client(
            a.from,
            &send_indication(addr("10.0.0.7:8443"), b"stun"),
            lab.now,
        )
        .map(|r| r.peer);
    assert_eq!(to_media, Some(addr("10.0.0.7:8443")));
    // The permission is per IP, but other ports of the service's host stay closed.
    let to_ssh = lab
        .server
        .handle_client(
            a.from,
            &send_indication(addr("10.0.0.7:22"), b"ssh"),
            lab.now,
        )
        .map(|r| r.peer);
    assert_eq!(to_ssh, None);
    assert_eq!(
        lab.bind_channel(&mut a, 0x4001, addr("10.0.0.7:22"))
            .error(),
        Some(403)
    );
}

#[test]
fn relay_to_relay_stays_inside_the_server() {
    let mut cfg = config();
    cfg.relay_v4 = Some(RelayAddr {
        bind: "10.0.0.1".parse().unwrap(),
        advertised: "10.0.0.1".parse().unwrap(),
    });
    let mut lab = Lab::with(cfg);
    let mut a = Client::new(udp("203.0.113.9:1"), "user1", "pass1");
    let mut b = Client::new(udp("203.0.113.9:2"), "user2", "pass2");
    let ra = lab
        .allocate(&mut a)
        .xor(AttrType::XOR_RELAYED_ADDRESS)
        .unwrap();
    let rb = lab
        .allocate(&mut b)
        .xor(AttrType::XOR_RELAYED_ADDRESS)
        .unwrap();
    // 10.0.0.1 is private, refused as a peer in general, but it is our own relay.
    assert_eq!(lab.permit(&mut a, rb).class(), Class::Success);
    assert_eq!(lab.permit(&mut b, ra).class(), Class::Success);
    assert_eq!(
        lab.permit(&mut a, "10.0.0.2:1".parse().unwrap()).error(),
        Some(403)
    );

    // A → B by Send indication: nothing goes to the network, B gets a Data indication.
    assert!(
        lab.server
            .handle_client(a.from, &send_indication(rb, b"hi b"), lab.now)
            .is_none()
    );
    let mut got = Vec::new();
    while let Some(out) = lab.server.poll_output() {
        got.push(out);
    }
    let [Output::ToClient { client, data }] = &got[..] else {
        panic!("{got:?}")
    };
    assert_eq!(*client, b.from);
    let msg = Message::parse(data).unwrap();
    assert_eq!(msg.method(), Method::DATA);
    assert_eq!(
        msg.get_xor_address(AttrType::XOR_PEER_ADDRESS).unwrap(),
        Some(ra)
    );
    assert_eq!(msg.get(AttrType::DATA), Some(&b"hi b"[..]));

    // B → A on a channel both ways.
    assert_eq!(lab.bind_channel(&mut a, 0x4000, rb).class(), Class::Success);
    assert_eq!(lab.bind_channel(&mut b, 0x4009, ra).class(), Class::Success);
    assert!(
        lab.server
            .handle_client(b.from, &channel_data(0x4009, b"hey a"), lab.now)
            .is_none()
    );
    let out = lab.server.poll_output();
    assert_eq!(
        out,
        Some(Output::ToClient {
            client: a.from,
            data: channel_data(0x4000, b"hey a")
        })
    );

    // Our own address at a port that is no allocation: dropped, never sent anywhere.
    let stray = SocketAddr::new(ra.ip(), 53);
    lab.permit(&mut a, stray);
    assert!(
        lab.server
            .handle_client(a.from, &send_indication(stray, b"dns?"), lab.now)
            .is_none()
    );
    assert_eq!(lab.server.poll_output(), None);
}

#[test]
fn even_port_with_a_reservation_for_the_next() {
    let mut lab = Lab::new();
    let mut a = Client::new(udp("203.0.113.9:1"), "user1", "pass1");
    let ok = lab.allocate_reserving_next(&mut a);
    let relay = ok.xor(AttrType::XOR_RELAYED_ADDRESS).unwrap();
    let port = relay.port();
    assert_eq!(port % 2, 0);
    let token = ok.msg().get(AttrType::RESERVATION_TOKEN).unwrap().to_vec();
    assert_eq!(token.len(), 8);
    // The I/O holds the next port's socket, so nothing else on the host can take it.
    assert_eq!(lab.held_ports(), [port + 1]);
    // Another client brings the token and gets the next port.
    let mut b = Client::new(udp("203.0.113.9:2"), "user1", "pass1");
    b.nonce = lab.send(&mut b, Method::ALLOCATE, transport_udp).nonce();
    let odd = lab.send(&mut b, Method::ALLOCATE, |w| {
        transport_udp(w);
        w.attr(AttrType::RESERVATION_TOKEN, &token);
    });
    assert_eq!(
        odd.xor(AttrType::XOR_RELAYED_ADDRESS).unwrap().port(),
        port + 1
    );
    assert!(lab.held.is_empty(), "the held socket became the relay");
    // A token is good once.
    let mut c = Client::new(udp("203.0.113.9:3"), "user1", "pass1");
    c.nonce = lab.send(&mut c, Method::ALLOCATE, transport_udp).nonce();
    let again = lab.send(&mut c, Method::ALLOCATE, |w| {
        transport_udp(w);
        w.attr(AttrType::RESERVATION_TOKEN, &token);
    });
    assert_eq!(again.error(), Some(508));
}

#[test]
fn unclaimed_reservations_expire() {
    let mut cfg = config();
    cfg.relay_ports = 50000..=50001;
    let mut lab = Lab::with(cfg);
    let mut a = Client::new(udp("203.0.113.9:1"), "user1", "pass1");
    let ok = lab.allocate_reserving_next(&mut a);
    assert_eq!(ok.xor(AttrType::XOR_RELAYED_ADDRESS).unwrap().port(), 50000);
    let mut b = Client::new(udp("203.0.113.9:2"), "user1", "pass1");
    assert_eq!(lab.allocate(&mut b).error(), Some(508), "50001 is held");
    assert_eq!(lab.held_ports(), [50001]);
    lab.advance(Duration::from_secs(31));
    assert!(
        lab.held.is_empty(),
        "the unclaimed port's socket is released"
    );
    assert_eq!(
        lab.send(&mut b, Method::ALLOCATE, transport_udp).class(),
        Class::Success
    );
}

#[test]
fn a_reservation_whose_next_port_is_taken_on_the_host_gets_another_pair() {
    let mut cfg = config();
    cfg.relay_ports = 50000..=50003;
    let mut lab = Lab::with(cfg);
    lab.taken_ports = vec![50001]; // another program's socket
    let mut a = Client::new(udp("203.0.113.9:1"), "user1", "pass1");
    let ok = lab.allocate_reserving_next(&mut a);
    let relay = ok.xor(AttrType::XOR_RELAYED_ADDRESS).unwrap();
    assert_eq!(relay.port(), 50002);
    assert_eq!(lab.held_ports(), [50003]);
}

#[test]
fn a_freed_port_waits_for_its_socket_to_close() {
    let mut cfg = config();
    cfg.relay_ports = 50000..=50000;
    let mut lab = Lab::with(cfg);
    lab.report_closes = false;
    let mut a = Client::new(udp("203.0.113.9:1"), "user1", "pass1");
    lab.allocate(&mut a);
    lab.send(&mut a, Method::REFRESH, |w| {
        w.u32(AttrType::LIFETIME, 0);
    });
    let relay = lab.freed[0];
    // The only port is not handed out while its old socket may still be open...
    let mut b = Client::new(udp("203.0.113.9:2"), "user1", "pass1");
    assert_eq!(lab.allocate(&mut b).error(), Some(508));
    // ...and is once the I/O says it closed.
    lab.server.handle_relay_closed(relay);
    assert_eq!(
        lab.send(&mut b, Method::ALLOCATE, transport_udp).class(),
        Class::Success
    );
}

#[test]
fn churn_never_leaks_ports() {
    let mut cfg = config();
    cfg.relay_ports = 50000..=50009;
    let mut lab = Lab::with(cfg);
    for i in 0..2000u32 {
        let mut c = Client::new(
            udp(&format!("203.0.113.{}:{}", i % 200, 1000 + i)),
            "user1",
            "pass1",
        );
        let ok = lab.allocate(&mut c);
        assert_eq!(ok.error(), None, "cycle {i}");
        let gone = lab.send(&mut c, Method::REFRESH, |w| {
            w.u32(AttrType::LIFETIME, 0);
        });
        assert_eq!(gone.lifetime(), Some(0));
    }
    assert_eq!(lab.server.allocation_count(), 0);
}
