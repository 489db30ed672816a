//! The TURN server's input handler driven by sequences of operations: raw datagrams, and
//! correctly signed requests built from fuzzed parts, so the fuzzer reaches allocations,
//! permissions, channels and timers instead of stopping at authentication.
#![no_main]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use huddle_turn_proto::auth::{Secret, long_term_key};
use huddle_turn_proto::stun::{AttrType, Class, IntegrityAlg, Message, MessageWriter, Method};
use huddle_turn_proto::{
    AllocationEvent, Config, FiveTuple, Output, RelayAddr, Server, Transport, channel_data,
};
use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use rand::SeedableRng;
use rand::rngs::StdRng;

#[derive(Arbitrary, Debug)]
enum Op {
    Raw {
        client: u8,
        data: Vec<u8>,
    },
    Signed {
        client: u8,
        method: u8,
        lifetime: Option<u32>,
        peer: Option<(u8, u16)>,
        channel: Option<u16>,
        extra: Vec<(u16, Vec<u8>)>,
    },
    ChannelData {
        client: u8,
        channel: u16,
        payload: Vec<u8>,
    },
    Send {
        client: u8,
        peer: (u8, u16),
        payload: Vec<u8>,
    },
    FromPeer {
        relay: u8,
        peer: (u8, u16),
        payload: Vec<u8>,
    },
    BindFails {
        port_taken: bool,
    },
    Closed {
        client: u8,
    },
    Advance {
        secs: u16,
    },
}

fn client(i: u8) -> FiveTuple {
    FiveTuple {
        transport: if i % 3 == 0 {
            Transport::Tcp
        } else {
            Transport::Udp
        },
        client: SocketAddr::from(([203, 0, 113, i % 4], 40000 + u16::from(i % 4))),
        server: SocketAddr::from(([192, 0, 2, 1], 3478)),
    }
}

fn peer((ip, port): (u8, u16)) -> SocketAddr {
    // Mostly public peers, some of our own relay address.
    if ip % 5 == 0 {
        SocketAddr::from(([192, 0, 2, 1], 50000 + port % 8))
    } else {
        SocketAddr::from(([198, 51, 100, ip], port))
    }
}

fuzz_target!(|ops: Vec<Op>| {
    let mut config = Config {
        relay_v4: Some(RelayAddr {
            bind: "192.0.2.1".parse().unwrap(),
            advertised: "192.0.2.1".parse().unwrap(),
        }),
        relay_ports: 50000..=50007,
        max_bps: Some(100_000),
        ..Config::default()
    };
    config
        .credentials
        .users
        .insert("u".into(), Secret::Password("p".into()));
    let key = long_term_key("u", "huddle", "p");
    let mut now = Instant::now();
    let mut server = Server::new(config, StdRng::seed_from_u64(0), now, 1_700_000_000);
    let mut nonce: Option<String> = None;
    let mut txid = 0u64;
    let mut relays: Vec<SocketAddr> = Vec::new();
    let mut bind_ok = true;
    // Allocations the log says began and have not ended.
    let mut logged = 0i64;

    for op in ops.into_iter().take(64) {
        match op {
            Op::Raw { client: c, data } => {
                let _ = server.handle_client(client(c), &data, now);
            }
            Op::Signed {
                client: c,
                method,
                lifetime,
                peer: p,
                channel,
                extra,
            } => {
                txid += 1;
                let mut id = [0u8; 12];
                id[..8].copy_from_slice(&txid.to_be_bytes());
                let method = [
                    Method::ALLOCATE,
                    Method::REFRESH,
                    Method::CREATE_PERMISSION,
                    Method::CHANNEL_BIND,
                    Method::BINDING,
                ][usize::from(method % 5)];
                let mut buf = Vec::new();
                let mut w = MessageWriter::new(&mut buf, Class::Request, method, id);
                if method == Method::ALLOCATE {
                    w.attr(AttrType::REQUESTED_TRANSPORT, &[17, 0, 0, 0]);
                }
                if let Some(l) = lifetime {
                    w.u32(AttrType::LIFETIME, l);
                }
                if let Some(p) = p {
                    w.xor_address(AttrType::XOR_PEER_ADDRESS, peer(p));
                }
                if let Some(ch) = channel {
                    w.attr(AttrType::CHANNEL_NUMBER, &[(ch >> 8) as u8, ch as u8, 0, 0]);
                }
                for (t, v) in extra.into_iter().take(3) {
                    w.attr(AttrType(t), &v[..v.len().min(64)]);
                }
                if let Some(n) = &nonce {
                    w.attr(AttrType::USERNAME, b"u")
                        .attr(AttrType::REALM, b"huddle")
                        .attr(AttrType::NONCE, n.as_bytes());
                    w.integrity(IntegrityAlg::Sha1, &key);
                }
                let _ = server.handle_client(client(c), &buf, now);
            }
            Op::ChannelData {
                client: c,
                channel,
                payload,
            } => {
                let mut d = channel_data::header(channel, payload.len()).to_vec();
                d.extend_from_slice(&payload);
                let _ = server.handle_client(client(c), &d, now);
            }
            Op::Send {
                client: c,
                peer: p,
                payload,
            } => {
                let mut buf = Vec::new();
                MessageWriter::new(&mut buf, Class::Indication, Method::SEND, [7; 12])
                    .xor_address(AttrType::XOR_PEER_ADDRESS, peer(p))
                    .attr(AttrType::DATA, &payload);
                let _ = server.handle_client(client(c), &buf, now);
            }
            Op::FromPeer {
                relay,
                peer: p,
                payload,
            } => {
                if let Some(r) = relays.get(usize::from(relay) % relays.len().max(1)) {
                    let _ = server.handle_peer(*r, peer(p), &payload, now);
                }
            }
            Op::BindFails { port_taken } => bind_ok = !port_taken,
            Op::Closed { client: c } => server.handle_client_closed(client(c)),
            Op::Advance { secs } => {
                now += Duration::from_secs(u64::from(secs % 900));
                server.handle_timeout(now);
            }
        }
        while let Some(out) = server.poll_output() {
            match out {
                Output::ToClient { data, .. } => {
                    // Every message the server sends is well-formed; pick up the nonce like a client.
                    if let Ok(msg) = Message::parse(&data)
                        && let Ok(Some(n)) = msg.get_str(AttrType::NONCE)
                    {
                        nonce = Some(n.to_owned());
                    }
                }
                Output::BindRelay { client, addr, .. } => {
                    let result = if bind_ok { Ok(addr) } else { Err(()) };
                    if bind_ok {
                        relays.push(addr);
                    }
                    server.handle_relay_bound(client, result, now);
                }
                Output::ReleaseHeld { .. } => {}
                Output::FreeRelay { relay } => {
                    relays.retain(|r| *r != relay);
                    server.handle_relay_closed(relay);
                }
                Output::Allocation(AllocationEvent::Created { .. }) => logged += 1,
                Output::Allocation(AllocationEvent::Ended { .. }) => logged -= 1,
            }
        }
        assert!(
            server.allocation_count() <= 8,
            "more allocations than relay ports"
        );
        assert_eq!(
            logged,
            server.allocation_count() as i64,
            "the operator's log tells every allocation's start and end"
        );
    }
});
