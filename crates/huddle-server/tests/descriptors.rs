//! Anonymous TURN allocations against a low descriptor limit: the relay refuses them before
//! they take the descriptors the HTTPS listener needs. Its own test binary, since it lowers the
//! limit of the whole process.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::TestServer;
use huddle_server::{Config, ServeTurn, TurnConfig};
use huddle_turn_proto::RelayAddr;
use huddle_turn_proto::auth::mint_rest_credentials;

const SECRET: &[u8] = b"descriptor-test-secret";
const LIMIT: u64 = 512;

/// One Allocate from its own socket, signed with fresh REST credentials after the 401; the
/// error code, or `None` for success.
fn allocate(server: SocketAddr, n: u32) -> std::io::Result<Option<u16>> {
    let expiry = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 3600;
    let (user, pass) = mint_rest_credentials(SECRET, &format!("anon{n}"), expiry);
    let mut txid = [0u8; 12];
    txid[..4].copy_from_slice(&n.to_be_bytes());
    let (answer, socket) = common::turn_allocate(server, &user, &pass, txid)?;
    // The allocation lives as long as its client's address: keep the socket open.
    std::mem::forget(socket);
    Ok(answer)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn turn_allocations_never_take_the_listeners_descriptors() {
    let lowered = libc::rlimit {
        rlim_cur: LIMIT,
        rlim_max: LIMIT.max(hard_limit()),
    };
    // SAFETY: setrlimit reads the struct we pass.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lowered) }, 0);
    let mut core = huddle_turn_proto::Config {
        relay_v4: Some(RelayAddr {
            bind: [127, 0, 0, 1].into(),
            advertised: [127, 0, 0, 1].into(),
        }),
        ..huddle_turn_proto::Config::default()
    };
    core.credentials.rest_secret = Some(SECRET.to_vec());
    let mut config = Config::plain("127.0.0.1:0".parse().unwrap());
    config.turn = Some(ServeTurn {
        config: TurnConfig {
            core,
            udp: vec!["127.0.0.1:0".parse().unwrap()],
            tcp: Vec::new(),
            tls: Vec::new(),
            tls_config: None,
        },
        secret: SECRET.to_vec(),
        credential_ttl: Duration::from_secs(3600),
        on_https: false,
    });
    let server = TestServer::with(config).await;
    let turn = server.turn_udp.expect("TURN runs");

    // Allocate until the relay refuses; each holds a relay socket and a client socket here.
    let mut granted = 0;
    let mut refusal = None;
    for n in 0..LIMIT as u32 {
        match tokio::task::spawn_blocking(move || allocate(turn, n))
            .await
            .unwrap()
        {
            Ok(None) => granted += 1,
            Ok(Some(code)) => {
                refusal = Some(code);
                break;
            }
            // This process ran out of descriptors: the relay took them all.
            Err(e) => panic!("after {granted} allocations: {e}"),
        }
    }
    eprintln!("{granted} allocations granted, then {refusal:?} (descriptor limit {LIMIT})");
    assert_eq!(refusal, Some(508), "after {granted} allocations");
    assert!(granted > 100, "{granted}");

    // Everything else still answers.
    assert_eq!(server.get("/healthz").await.0, 200);
    assert_eq!(server.get("/api/ice-servers").await.0, 200);
    let mut client = server.client().await;
    client.join("r", "Still here").await;
    server.shutdown().await.unwrap();
}

fn hard_limit() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes the struct we pass.
    unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) };
    lim.rlim_max
}
