//! Several `huddle serve` processes over one real `redis-server` that the test starts itself on a
//! private port: rooms placed on one node whichever node a page reaches, capacity across nodes,
//! an owner killed, a node drained, Redis lost and back, tokens, resumes and TURN credentials
//! valid on every node, and nothing left in Redis afterwards.

#[path = "../../huddle-server/tests/common/mod.rs"]
mod common;

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Client, Event};
use huddle_signal_proto::{ErrorCode, PROTOCOL_VERSION, ServerMessage, Welcome};
use serde_json::json;

/// A port free on loopback now (the child binds it a moment later).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A `redis-server` of the test's own: no persistence, loopback only.
struct Redis {
    port: u16,
    child: Option<Child>,
}

impl Redis {
    /// `None` (and the test is skipped with a word) where redis-server is missing; in CI, where
    /// `scripts/test` installs it, a missing server fails the test.
    fn start() -> Option<Self> {
        if Command::new("redis-server")
            .arg("--version")
            .output()
            .is_err()
        {
            assert!(
                std::env::var_os("CI").is_none(),
                "redis-server is missing (scripts/install-test-deps installs it)"
            );
            eprintln!("skipped: redis-server is not installed");
            return None;
        }
        let mut redis = Self {
            port: free_port(),
            child: None,
        };
        redis.run();
        Some(redis)
    }

    fn run(&mut self) {
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string()])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.connection().is_err() {
            assert!(Instant::now() < deadline, "redis-server did not come up");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn connection(&self) -> redis::RedisResult<redis::Connection> {
        let client = redis::Client::open(self.url())?;
        let mut con = client.get_connection_with_timeout(Duration::from_secs(1))?;
        redis::cmd("PING").query::<String>(&mut con)?;
        Ok(con)
    }

    /// Huddle's keys in Redis now.
    fn keys(&self) -> Vec<String> {
        let mut con = self.connection().expect("redis");
        let mut keys: Vec<String> = redis::cmd("KEYS").arg("huddle:*").query(&mut con).unwrap();
        keys.sort();
        keys
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// One `huddle serve` of the cluster, plain HTTP on loopback.
struct Node {
    id: String,
    port: u16,
    child: Child,
    _dir: tempdir::Dir,
}

mod tempdir {
    /// A directory removed with its value.
    pub struct Dir(pub std::path::PathBuf);

    impl Dir {
        pub fn new(name: &str) -> Self {
            let path = std::env::temp_dir().join(format!(
                "huddle-cluster-{name}-{}-{}",
                std::process::id(),
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos()
            ));
            std::fs::create_dir_all(&path).unwrap();
            Self(path)
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

impl Node {
    fn start(id: &str, redis: &Redis, extra: &[&str]) -> Self {
        Self::start_with(id, redis, &["--no-media", "--no-turn"], extra)
    }

    /// A node with its media peer (one worker, on UDP at its HTTP port).
    fn with_media(id: &str, redis: &Redis) -> Self {
        Self::start_with(id, redis, &["--media-workers", "1", "--no-turn"], &[])
    }

    /// A node with its TURN server on a port of its own, minting and checking REST credentials
    /// with `secret`; the TURN address.
    fn with_turn(id: &str, redis: &Redis, secret: &str) -> (Self, std::net::SocketAddr) {
        let turn = std::net::SocketAddr::from(([127, 0, 0, 1], free_port()));
        let node = Self::start_with(
            id,
            redis,
            &["--no-media"],
            &["--turn-listen", &turn.to_string(), "--auth-secret", secret],
        );
        (node, turn)
    }

    fn start_with(id: &str, redis: &Redis, services: &[&str], extra: &[&str]) -> Self {
        let port = free_port();
        let dir = tempdir::Dir::new(id);
        let child = Command::new(env!("CARGO_BIN_EXE_huddle"))
            .arg("serve")
            .args(["--no-tls", "--room-capacity", "3"])
            .args(services)
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--redis", &redis.url(), "--node-id", id])
            .args(["--public-url", &format!("http://127.0.0.1:{port}")])
            .arg("--data-dir")
            .arg(&dir.0)
            .args(extra)
            .env_remove("HUDDLE_CONFIG")
            .env_remove("HUDDLE_AUTH_KEYS")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .expect("huddle serve");
        Self {
            id: id.to_owned(),
            port,
            child,
            _dir: dir,
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn signal(&self, signal: libc_signal::Signal) {
        libc_signal::send(self.child.id(), signal);
    }

    /// Waits for the process to exit; how long it took.
    fn wait_exit(&mut self, within: Duration) -> Duration {
        let t0 = Instant::now();
        loop {
            if self.child.try_wait().unwrap().is_some() {
                return t0.elapsed();
            }
            assert!(t0.elapsed() < within, "node {} did not exit", self.id);
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `kill(2)` without a libc dependency in the tests: through the `kill` command.
mod libc_signal {
    pub enum Signal {
        Term,
        Kill,
    }

    pub fn send(pid: u32, signal: Signal) {
        let name = match signal {
            Signal::Term => "-TERM",
            Signal::Kill => "-KILL",
        };
        let status = std::process::Command::new("kill")
            .args([name, &pid.to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }
}

/// An HTTP GET to `url` + `path`: status and body.
async fn get(url: &str, path: &str) -> Option<(u16, String)> {
    let (status, _, body) = request(url, "GET", path, "", b"").await?;
    Some((status, body))
}

/// One HTTP/1.1 request: status, lower-cased head and body.
async fn request(
    url: &str,
    method: &str,
    path: &str,
    content_type: &str,
    body: &[u8],
) -> Option<(u16, String, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = url.strip_prefix("http://")?;
    let mut tcp = tokio::net::TcpStream::connect(addr).await.ok()?;
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
         Content-Type: {content_type}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    tcp.write_all(req.as_bytes()).await.ok()?;
    tcp.write_all(body).await.ok()?;
    let mut raw = Vec::new();
    tcp.read_to_end(&mut raw).await.ok()?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text.get(9..12)?.parse().ok()?;
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    Some((status, head.to_ascii_lowercase(), body.to_owned()))
}

/// Waits until every node answers and sees the whole cluster.
async fn wait_cluster(nodes: &[&Node]) {
    wait_cluster_as(nodes, "/api/cluster").await;
}

/// The same through `path` (with a token, on nodes with keys).
async fn wait_cluster_as(nodes: &[&Node], path: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    for node in nodes {
        loop {
            let seen = get(&node.url(), path)
                .await
                .filter(|(status, _)| *status == 200)
                .and_then(|(_, body)| serde_json::from_str::<serde_json::Value>(&body).ok())
                .and_then(|v| v["nodes"].as_array().map(Vec::len));
            if seen == Some(nodes.len()) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "node {} never saw the cluster",
                node.id
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

async fn connect(url: &str) -> Option<Client> {
    let ws_url = format!("{}/ws", url.replacen("http://", "ws://", 1));
    let (ws, _) = tokio_tungstenite::connect_async(ws_url).await.ok()?;
    Some(Client { ws })
}

/// A join that got in: the page's connection, its welcome and the URL of the node that took it.
type Joined = (Client, Welcome, String);

/// Joins `room` from `entry`, following `moved` as the page does; `None` if a node on the way
/// cannot be reached.
async fn join_from(
    entry: &str,
    room: &str,
    name: &str,
    resume: Option<&str>,
) -> Option<Result<Joined, ErrorCode>> {
    let mut url = entry.to_owned();
    for _ in 0..4 {
        let mut client = connect(&url).await?;
        let mut join = json!({"type": "join", "v": PROTOCOL_VERSION, "room": room, "name": name});
        if let Some(token) = resume {
            join["resume"] = json!(token);
        }
        client.send_json(join).await;
        match client.next_within(Duration::from_secs(5)).await? {
            Event::Msg(ServerMessage::Welcome(welcome)) => {
                return Some(Ok((client, welcome, url)));
            }
            Event::Msg(ServerMessage::Moved { url: to }) => {
                let closed = client.next().await;
                assert!(
                    matches!(&closed, Event::Closed(Some((code, _))) if u16::from(*code) == 4010),
                    "{closed:?}"
                );
                url = to?;
            }
            Event::Msg(ServerMessage::Error { code, .. }) => return Some(Err(code)),
            other => panic!("unexpected answer to a join: {other:?}"),
        }
    }
    panic!("moved more than three times");
}

async fn join_in(entry: &str, room: &str, name: &str) -> Joined {
    match join_from(entry, room, name, None).await {
        Some(Ok(joined)) => joined,
        Some(Err(code)) => panic!("refused: {code:?}"),
        None => panic!("a node on the way did not answer"),
    }
}

#[tokio::test]
async fn a_room_lives_on_one_node_whichever_node_its_pages_reach() {
    let Some(redis) = Redis::start() else { return };
    let nodes: Vec<Node> = (1..=3)
        .map(|i| Node::start(&format!("n{i}"), &redis, &[]))
        .collect();
    wait_cluster(&nodes.iter().collect::<Vec<_>>()).await;

    // Three pages of one room reach three different nodes; all end on the room's owner.
    let (mut a, wa, owner) = join_in(&nodes[0].url(), "standup", "Ada").await;
    let (_b, wb, at_b) = join_in(&nodes[1].url(), "standup", "Bo").await;
    let (_c, _, at_c) = join_in(&nodes[2].url(), "standup", "Cy").await;
    assert_eq!((&at_b, &at_c), (&owner, &owner));
    assert_eq!(wb.peers[0].id, wa.id);
    assert!(matches!(
        a.next_msg().await,
        ServerMessage::PeerJoined { .. }
    ));
    // The room's capacity (3) holds across nodes: a fourth is refused, whichever node it reaches.
    for node in &nodes {
        let refused = join_from(&node.url(), "standup", "Dee", None).await;
        assert!(matches!(refused, Some(Err(ErrorCode::RoomFull))));
    }
    // Every page knows the cluster's nodes, its own first.
    assert_eq!(wa.nodes.len(), 3);
    assert_eq!(wa.nodes[0], owner);

    // Rooms spread over the nodes; the cluster lists each with its owner.
    let mut clients = Vec::new();
    let mut owners = std::collections::BTreeSet::new();
    for i in 0..12 {
        let (client, _, at) = join_in(&nodes[i % 3].url(), &format!("room-{i}"), "P").await;
        owners.insert(at);
        clients.push(client);
    }
    assert!(owners.len() >= 2, "12 rooms all on one node: {owners:?}");
    let (status, body) = get(&nodes[1].url(), "/api/cluster").await.unwrap();
    assert_eq!(status, 200);
    let view: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(view["rooms"].as_array().unwrap().len(), 13, "{view}");
    for node in &nodes {
        let (_, metrics) = get(&node.url(), "/metrics").await.unwrap();
        assert!(metrics.contains(&format!("huddle_node_info{{node=\"{}\"}} 1", node.id)));
    }

    // Rooms that empty are given back at once; nodes that stop leave nothing behind.
    for mut client in clients {
        client.send_json(json!({"type": "leave"})).await;
    }
    let rooms_left = || {
        redis
            .keys()
            .iter()
            .filter(|k| k.starts_with("huddle:room:"))
            .count()
    };
    assert!(common::eventually(Duration::from_secs(5), || rooms_left() == 1).await);
    drop((a, _b, _c));
    for node in &nodes {
        node.signal(libc_signal::Signal::Term);
    }
    for mut node in nodes {
        node.wait_exit(Duration::from_secs(15));
    }
    assert_eq!(redis.keys(), Vec::<String>::new());
}

#[tokio::test]
async fn a_killed_owner_s_room_is_placed_again_and_its_pages_resume_within_ten_seconds() {
    let Some(redis) = Redis::start() else { return };
    let mut nodes: Vec<Node> = (1..=3)
        .map(|i| Node::start(&format!("k{i}"), &redis, &[]))
        .collect();
    wait_cluster(&nodes.iter().collect::<Vec<_>>()).await;
    let (mut a, wa, owner) = join_in(&nodes[0].url(), "call", "Ada").await;
    let (mut b, wb, _) = join_in(&nodes[1].url(), "call", "Bo").await;
    assert!(matches!(
        a.next_msg().await,
        ServerMessage::PeerJoined { .. }
    ));

    let dead = nodes.iter().position(|n| n.url() == owner).unwrap();
    let t0 = Instant::now();
    nodes[dead].signal(libc_signal::Signal::Kill);
    nodes[dead].wait_exit(Duration::from_secs(5));
    assert!(matches!(a.next().await, Event::Closed(_)));
    assert!(matches!(b.next().await, Event::Closed(_)));

    // Each page retries the other nodes it was told of, every half second, as the page does.
    let survivors: Vec<String> = wa.nodes.iter().filter(|u| **u != owner).cloned().collect();
    let mut rejoined = Vec::new();
    for (welcome, name) in [(&wa, "Ada"), (&wb, "Bo")] {
        let mut attempt = 0;
        let back = loop {
            let entry = &survivors[attempt % survivors.len()];
            attempt += 1;
            if let Some(Ok((client, welcome, _))) =
                join_from(entry, "call", name, Some(&welcome.resume)).await
            {
                break (client, welcome);
            }
            assert!(t0.elapsed() < Duration::from_secs(20), "never came back");
            tokio::time::sleep(Duration::from_millis(500)).await;
        };
        rejoined.push(back);
    }
    let recovered = t0.elapsed();
    eprintln!("owner killed → both pages back in the room: {recovered:?}");
    assert!(recovered <= Duration::from_secs(10), "{recovered:?}");
    // The second page finds the first in the room again.
    assert_eq!(rejoined[1].1.peers.len(), 1);
    assert_eq!(rejoined[1].1.peers[0].name, "Ada");

    // The dead node's record expires by itself; nobody deleted it.
    let dead_key = format!("huddle:node:{}", nodes[dead].id);
    assert!(common::eventually(Duration::from_secs(8), || !redis.keys().contains(&dead_key)).await);
    drop(rejoined);
    for node in nodes.iter().filter(|n| n.url() != owner) {
        node.signal(libc_signal::Signal::Term);
    }
    for (i, node) in nodes.iter_mut().enumerate() {
        if i != dead {
            node.wait_exit(Duration::from_secs(15));
        }
    }
    assert_eq!(redis.keys(), Vec::<String>::new());
}

#[tokio::test]
async fn a_draining_node_sends_its_pages_away_and_takes_no_new_rooms() {
    let Some(redis) = Redis::start() else { return };
    let mut nodes: Vec<Node> = (1..=2)
        .map(|i| Node::start(&format!("d{i}"), &redis, &["--drain-timeout", "5"]))
        .collect();
    wait_cluster(&nodes.iter().collect::<Vec<_>>()).await;
    let (mut a, wa, owner) = join_in(&nodes[0].url(), "drained", "Ada").await;
    let leaving = nodes.iter().position(|n| n.url() == owner).unwrap();
    let other = nodes[1 - leaving].url();

    nodes[leaving].signal(libc_signal::Signal::Term);
    assert_eq!(a.next_msg().await, ServerMessage::Moved { url: None });
    assert!(matches!(a.next().await, Event::Closed(Some((code, _))) if u16::from(code) == 4010));
    // The page goes to another node and is in the room again at once.
    let (_a, back, at) = join_in(&other, "drained", "Ada").await;
    assert_eq!((at.as_str(), back.id == wa.id), (other.as_str(), false));
    let took = nodes[leaving].wait_exit(Duration::from_secs(10));
    assert!(took < Duration::from_secs(6), "{took:?}");
    let gone = format!("huddle:node:{}", nodes[leaving].id);
    assert!(!redis.keys().contains(&gone));
}

#[tokio::test]
async fn without_redis_running_rooms_go_on_new_ones_wait_and_all_comes_back() {
    let Some(mut redis) = Redis::start() else {
        return;
    };
    let node = Node::start("r1", &redis, &[]);
    wait_cluster(&[&node]).await;
    let (mut a, _, _) = join_in(&node.url(), "ongoing", "Ada").await;
    let (mut b, _, _) = join_in(&node.url(), "ongoing", "Bo").await;
    assert!(matches!(
        a.next_msg().await,
        ServerMessage::PeerJoined { .. }
    ));

    redis.kill();
    a.send_json(json!({"type": "chat", "text": "still here?"}))
        .await;
    assert!(matches!(b.next_msg().await, ServerMessage::Chat { .. }));
    let refused = join_from(&node.url(), "new-room", "Cy", None).await;
    assert!(matches!(refused, Some(Err(ErrorCode::Unavailable))));

    // Redis comes back empty: the node registers again and writes its room's lease back.
    redis.run();
    let restored = common::eventually(Duration::from_secs(8), || {
        redis.keys() == ["huddle:node:r1", "huddle:room:ongoing"]
    })
    .await;
    assert!(restored, "{:?}", redis.keys());
    let (_c, _, _) = join_in(&node.url(), "new-room", "Cy").await;
    a.send_json(json!({"type": "chat", "text": "and now?"}))
        .await;
    assert!(matches!(b.next_msg().await, ServerMessage::Chat { .. }));
}

#[tokio::test]
async fn whip_and_whep_of_a_room_go_to_the_node_that_hosts_it() {
    let Some(redis) = Redis::start() else { return };
    let nodes: Vec<Node> = (1..=2)
        .map(|i| Node::with_media(&format!("w{i}"), &redis))
        .collect();
    wait_cluster(&nodes.iter().collect::<Vec<_>>()).await;
    let offer = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../huddle-media/tests/fixtures/chromium-sendonly.sdp"
    ))
    .unwrap();
    // The first WHIP request's node takes the room.
    let sdp = "application/sdp";
    let (status, head, _) = request(&nodes[0].url(), "POST", "/whip/stage", sdp, &offer)
        .await
        .unwrap();
    assert_eq!(status, 201, "{head}");
    // Another node's WHEP request for it is redirected there, to the same path.
    let (status, head, _) = request(&nodes[1].url(), "POST", "/whep/stage", sdp, &offer)
        .await
        .unwrap();
    assert_eq!(status, 307, "{head}");
    let location = format!("location: {}/whep/stage\r\n", nodes[0].url());
    assert!(head.contains(&location), "{head}");
    // Held while the publisher's session lives; given back once it ended (this one has no
    // ICE peer: it ends after a few seconds).
    let rooms = || async {
        let (_, body) = get(&nodes[1].url(), "/api/cluster").await.unwrap();
        let view: serde_json::Value = serde_json::from_str(&body).unwrap();
        view["rooms"].clone()
    };
    assert_eq!(rooms().await[0]["node"], "w1");
    // The publisher shows in its node's load from the next heartbeat on.
    let sessions = || async {
        let (_, body) = get(&nodes[0].url(), "/api/cluster").await.unwrap();
        let view: serde_json::Value = serde_json::from_str(&body).unwrap();
        let w1 = view["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["id"] == "w1")
            .cloned();
        w1.map_or(0, |n| n["media_sessions"].as_u64().unwrap_or(0))
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    while sessions().await == 0 {
        assert!(
            Instant::now() < deadline,
            "the WHIP session never showed in w1's load"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(15);
    while rooms().await != json!([]) {
        assert!(Instant::now() < deadline, "the lease outlived its session");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn tokens_and_resumes_work_through_any_node() {
    let Some(redis) = Redis::start() else { return };
    const KEY: &str = "main:0123456789abcdef0123456789abcdef";
    let nodes: Vec<Node> = (1..=3)
        .map(|i| Node::start(&format!("t{i}"), &redis, &["--auth-key", KEY]))
        .collect();
    let keys = huddle_access::Keys::parse_list(&[KEY]).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    // Listing the cluster needs a token with roomList on nodes with keys.
    let mut lister = huddle_access::Claims::for_room("ops", "secure", now, 3600);
    lister.video.room_list = Some(true);
    let lister = keys.mint("main", &lister).unwrap();
    let path = format!("/api/cluster?access_token={lister}");
    wait_cluster_as(&nodes.iter().collect::<Vec<_>>(), &path).await;
    let (status, _) = get(&nodes[0].url(), "/api/cluster").await.unwrap();
    assert_eq!(status, 401);
    let token = |who: &str| {
        let claims = huddle_access::Claims::for_room(who, "secure", now, 3600);
        keys.mint("main", &claims).unwrap()
    };
    // One node minted nothing and knows nothing of the room: the shared key opens it anyway.
    let join_with = |entry: String, who: &'static str, resume: Option<String>| {
        let token = token(who);
        async move {
            let mut url = entry;
            loop {
                let mut client = connect(&url).await.expect("node answers");
                let mut join = json!({"type": "join", "v": PROTOCOL_VERSION, "room": "secure",
                    "name": who, "token": token});
                if let Some(resume) = &resume {
                    join["resume"] = json!(resume);
                }
                client.send_json(join).await;
                match client.next_msg().await {
                    ServerMessage::Welcome(w) => return (client, w, url),
                    ServerMessage::Moved { url: Some(to) } => url = to,
                    other => panic!("{other:?}"),
                }
            }
        }
    };
    let (a, wa, owner) = join_with(nodes[0].url(), "ada", None).await;
    let (mut b, _, _) = join_with(nodes[1].url(), "bo", None).await;
    // A bad token is refused by whichever node it reaches, before any placement.
    for node in &nodes {
        let mut c = connect(&node.url()).await.unwrap();
        c.send_json(
            json!({"type": "join", "v": PROTOCOL_VERSION, "room": "secure",
            "name": "eve", "token": "not-a-jwt"}),
        )
        .await;
        assert!(matches!(
            c.next_msg().await,
            ServerMessage::Error {
                code: ErrorCode::Unauthorized,
                ..
            }
        ));
    }
    // Ada's socket breaks; she comes back through a node that is not the room's, and resumes.
    drop(a);
    let entry = nodes.iter().find(|n| n.url() != owner).unwrap().url();
    let (_a, back, at) = join_with(entry, "ada", Some(wa.resume.clone())).await;
    assert_eq!(at, owner);
    assert!(back.resumed);
    assert_eq!(back.id, wa.id);
    // Bo saw no one leave: only Ada, resumed.
    let seen = b.next_msg().await;
    assert!(
        matches!(&seen, ServerMessage::PeerUpdated { peer } if peer.id == wa.id),
        "{seen:?}"
    );
}

#[tokio::test]
async fn turn_credentials_from_one_node_open_another_nodes_turn() {
    let Some(redis) = Redis::start() else { return };
    let (a, _) = Node::with_turn("turn-a", &redis, "shared-secret");
    let (b, b_turn) = Node::with_turn("turn-b", &redis, "shared-secret");
    let (c, c_turn) = Node::with_turn("turn-c", &redis, "another-secret");
    wait_cluster(&[&a, &b, &c]).await;
    // What a page loaded from node A is handed.
    let (status, body) = get(&a.url(), "/api/ice-servers").await.unwrap();
    assert_eq!(status, 200, "{body}");
    let ice: serde_json::Value = serde_json::from_str(&body).unwrap();
    let turn = ice["iceServers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["username"].is_string())
        .unwrap_or_else(|| panic!("a TURN server with credentials: {body}"));
    let (user, pass) = (
        turn["username"].as_str().unwrap(),
        turn["credential"].as_str().unwrap(),
    );
    // The same secret on node B: A's credential allocates there; node C's secret differs and
    // its TURN refuses the same credential (401), so the first answer is not a given.
    let (code, _socket) = common::turn_allocate(b_turn, user, pass, [1; 12]).unwrap();
    assert_eq!(code, None, "node B's TURN takes node A's credential");
    let (code, _) = common::turn_allocate(c_turn, user, pass, [2; 12]).unwrap();
    assert_eq!(code, Some(401), "a node with another secret refuses it");
}
