//! `huddle-bench attack`: what one anonymous client can do to a Huddle server, measured — each
//! case of the hardening issue, bounded in count and time, on loopback, against one build or two
//! (`--baseline`, for before/after figures). It reports; it asserts nothing (the integration
//! tests in `crates/huddle-server/tests/attacks.rs` do).
//!
//! The server runs under `prlimit --nofile=1024:1024`, the descriptor limit the issue was
//! reproduced with.

use std::net::{SocketAddr, TcpListener as StdListener};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use futures_util::{SinkExt, StreamExt};
use huddle_turn_proto::stun::{AttrType, ErrorCode, Message as Stun, Method};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::pinned::Pinned;
use crate::procstat::rss_bytes;

#[derive(clap::Args)]
pub struct Args {
    /// The Huddle binary to attack.
    #[arg(long, default_value = "target/release/huddle")]
    huddle: PathBuf,
    /// Another build to attack the same way first (e.g. the one before a fix).
    #[arg(long)]
    baseline: Option<PathBuf>,
    /// CPUs for the server (taskset list). Both by default: some races need two.
    #[arg(long, default_value = "0-1")]
    server_cpus: String,
    /// Only the cases whose names contain this.
    #[arg(long)]
    only: Option<String>,
}

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

struct Target {
    server: Pinned,
    http: SocketAddr,
    turn: SocketAddr,
}

impl Target {
    fn start(binary: &std::path::Path, cpus: &str) -> anyhow::Result<Self> {
        let free = || -> anyhow::Result<u16> {
            Ok(StdListener::bind("127.0.0.1:0")?.local_addr()?.port())
        };
        let http = SocketAddr::from(([127, 0, 0, 1], free()?));
        let turn = SocketAddr::from(([127, 0, 0, 1], free()?));
        let data = std::env::temp_dir().join(format!("huddle-attack-{}", http.port()));
        let server = Pinned::start(
            None,
            "huddle",
            cpus,
            std::path::Path::new("prlimit"),
            http,
            |cmd| {
                cmd.arg("--nofile=1024:1024")
                    .arg(binary)
                    .args(["serve", "--no-tls", "--listen"])
                    .arg(http.to_string())
                    .arg("--media-listen")
                    .arg(http.to_string())
                    .arg("--turn-listen")
                    .arg(turn.to_string())
                    .arg("--data-dir")
                    .arg(&data)
                    .env("RUST_LOG", "error");
            },
        )?;
        Ok(Self { server, http, turn })
    }

    fn pid(&self) -> u32 {
        self.server.pid
    }

    fn descriptors(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid())).map_or(0, |d| d.count())
    }

    fn rss_mib(&self) -> f64 {
        rss_bytes(self.pid()) as f64 / (1 << 20) as f64
    }

    fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.http)
    }

    async fn ws(&self) -> anyhow::Result<Ws> {
        Ok(tokio_tungstenite::connect_async(self.ws_url()).await?.0)
    }

    async fn healthy(&self) -> bool {
        let probe = crate::http1::request(self.http, "GET", "/healthz", &[], b"");
        matches!(
            tokio::time::timeout(Duration::from_secs(3), probe).await,
            Ok(Ok((200, _)))
        )
    }
}

async fn join(ws: &mut Ws, room: &str, name: &str) -> anyhow::Result<String> {
    let join = serde_json::json!({"type": "join", "v": 1, "room": room, "name": name});
    ws.send(Message::Text(join.to_string().into())).await?;
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await?
            .context("closed before welcome")??;
        if let Message::Text(text) = frame {
            let msg: serde_json::Value = serde_json::from_str(text.as_str())?;
            if msg["type"] == "welcome" {
                return Ok(msg["id"].as_str().unwrap_or_default().to_owned());
            }
        }
    }
}

pub fn run(args: Args) -> anyhow::Result<()> {
    raise_own_descriptor_limit();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let builds: Vec<(&str, PathBuf)> = args
        .baseline
        .iter()
        .map(|b| ("baseline", b.clone()))
        .chain([("huddle", args.huddle.clone())])
        .collect();
    type Case = fn(&Target) -> std::pin::Pin<Box<dyn Future<Output = anyhow::Result<String>> + '_>>;
    let cases: [(&str, Case); 7] = [
        ("stalled-reader", |t| Box::pin(stalled_reader(t))),
        ("binary-flood", |t| Box::pin(binary_flood(t))),
        ("slow-http", |t| Box::pin(slow_http(t))),
        ("turn-descriptors", |t| Box::pin(turn_descriptors(t))),
        ("sdp-amplification", |t| Box::pin(sdp_amplification(t))),
        ("clean-leave", |t| Box::pin(clean_leave(t))),
        ("oversize-body", |t| Box::pin(oversize_body(t))),
    ];
    println!("| case | build | result |\n|---|---|---|");
    for (name, case) in cases {
        if args.only.as_deref().is_some_and(|o| !name.contains(o)) {
            continue;
        }
        for (build, binary) in &builds {
            let target = Target::start(binary, &args.server_cpus)?;
            let result = runtime
                .block_on(case(&target))
                .unwrap_or_else(|e| format!("case failed: {e:#}"));
            let healthy = runtime.block_on(target.healthy());
            println!(
                "| {name} | {build} | {result}; afterwards /healthz {} |",
                if healthy { "answers" } else { "FAILS" }
            );
        }
    }
    Ok(())
}

/// A joined client that stops reading while another floods its room: how long until the
/// server lets go of its socket.
async fn stalled_reader(t: &Target) -> anyhow::Result<String> {
    let fds_before = t.descriptors();
    let socket = TcpSocket::new_v4()?;
    socket.set_recv_buffer_size(4096)?;
    let tcp = socket.connect(t.http).await?;
    let port = tcp.local_addr()?.port();
    let (mut slow, _) =
        tokio_tungstenite::client_async(t.ws_url(), MaybeTlsStream::Plain(tcp)).await?;
    join(&mut slow, "stall", "Slow").await?;
    // Five members chatting within the flood budget (45 of 50/s each), 2 KB a message: more
    // than the server's socket buffer holds within seconds.
    let chat = serde_json::json!({"type": "chat", "text": "x".repeat(2000)}).to_string();
    let mut chatters = Vec::new();
    for i in 0..5 {
        let mut chatty = t.ws().await?;
        join(&mut chatty, "stall", &format!("Chatty{i}")).await?;
        let (mut tx, mut rx) = chatty.split();
        let chat = chat.clone();
        chatters.push(tokio::spawn(
            async move { while rx.next().await.is_some() {} },
        ));
        chatters.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(22));
            for _ in 0..2700 {
                tick.tick().await;
                if tx.send(Message::Text(chat.clone().into())).await.is_err() {
                    break;
                }
            }
        }));
    }
    let t0 = Instant::now();
    let limit = Duration::from_secs(100);
    let held = loop {
        let established = tcp_states(t.http.port(), port).contains(&1);
        if !established || t0.elapsed() > limit {
            break established;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    chatters.iter().for_each(|c| c.abort());
    let fds = t.descriptors();
    drop(slow);
    Ok(if held {
        format!(
            "socket still held after {}s; descriptors {fds_before} → {fds}",
            limit.as_secs()
        )
    } else {
        format!(
            "socket let go after {:.1}s; descriptors {fds_before} → {fds}",
            t0.elapsed().as_secs_f64()
        )
    })
}

/// Two connections sending empty binary frames as fast as they can, while a client in another
/// room pings: server memory, and the slowest ping.
async fn binary_flood(t: &Target) -> anyhow::Result<String> {
    let rss_before = t.rss_mib();
    let mut bystander = t.ws().await?;
    join(&mut bystander, "elsewhere", "Bystander").await?;
    let mut flooders = Vec::new();
    for i in 0..2 {
        let mut ws = t.ws().await?;
        join(&mut ws, "flood", &format!("Flooder{i}")).await?;
        flooders.push(tokio::spawn(async move {
            let mut sent = 0u64;
            'flood: for _ in 0..4_000 {
                for _ in 0..1_000 {
                    if ws.feed(Message::Binary(Default::default())).await.is_err() {
                        break 'flood;
                    }
                    sent += 1;
                }
                if ws.flush().await.is_err() {
                    break;
                }
            }
            sent
        }));
    }
    let t0 = Instant::now();
    let mut slowest = Duration::ZERO;
    let mut peak = rss_before;
    while flooders.iter().any(|f| !f.is_finished()) && t0.elapsed() < Duration::from_secs(60) {
        let sent = Instant::now();
        bystander
            .send(Message::Text(r#"{"type":"ping"}"#.into()))
            .await?;
        let pong = tokio::time::timeout(Duration::from_secs(30), bystander.next()).await;
        if pong.is_err() {
            slowest = Duration::from_secs(30);
            break;
        }
        slowest = slowest.max(sent.elapsed());
        peak = peak.max(t.rss_mib());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut frames = Vec::new();
    for f in flooders {
        f.abort();
        frames.push(f.await.map_or("unfinished".to_owned(), |n| n.to_string()));
    }
    Ok(format!(
        "frames sent before the server cut off: {}; RSS {rss_before:.0} → peak {peak:.0} MiB; slowest ping elsewhere {:.0} ms",
        frames.join(" / "),
        slowest.as_secs_f64() * 1e3
    ))
}

/// 100 connections trickling a request head (a byte every 5 s) and 100 left idle after one
/// request: how many the server still holds after 40 s and after 90 s.
async fn slow_http(t: &Target) -> anyhow::Result<String> {
    let mut trickling = Vec::new();
    for _ in 0..100 {
        let mut tcp = TcpStream::connect(t.http).await?;
        let port = tcp.local_addr()?.port();
        trickling.push(port);
        tokio::spawn(async move {
            for byte in b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: "
                .iter()
                .cycle()
                .take(40)
            {
                if tcp.write_all(&[*byte]).await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
        });
    }
    let mut idle = Vec::new();
    let mut kept = Vec::new();
    for _ in 0..100 {
        let mut tcp = TcpStream::connect(t.http).await?;
        idle.push(tcp.local_addr()?.port());
        tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .await?;
        kept.push(tcp);
    }
    let held = |ports: &[u16]| {
        ports
            .iter()
            .filter(|&&p| tcp_states(t.http.port(), p).contains(&1))
            .count()
    };
    tokio::time::sleep(Duration::from_secs(40)).await;
    let (heads_40, idle_40) = (held(&trickling), held(&idle));
    tokio::time::sleep(Duration::from_secs(50)).await;
    let (heads_90, idle_90) = (held(&trickling), held(&idle));
    Ok(format!(
        "held of 100 trickling heads: {heads_40} at 40 s, {heads_90} at 90 s; of 100 idle keep-alives: {idle_40} at 40 s, {idle_90} at 90 s"
    ))
}

/// 1,100 TURN allocations with the credentials `GET /api/ice-servers` hands anyone, each from
/// its own socket: how many are granted, how the rest are refused, and whether HTTPS still
/// accepts meanwhile.
async fn turn_descriptors(t: &Target) -> anyhow::Result<String> {
    let (_, body) = crate::http1::request(t.http, "GET", "/api/ice-servers", &[], b"").await?;
    let ice: serde_json::Value = serde_json::from_str(&body)?;
    let turn = ice["iceServers"]
        .as_array()
        .and_then(|a| a.iter().find(|s| s["username"].is_string()))
        .context("no TURN credentials handed out")?;
    let user = turn["username"].as_str().unwrap_or_default().to_owned();
    let pass = turn["credential"].as_str().unwrap_or_default().to_owned();
    let server = t.turn;
    let outcome = tokio::task::spawn_blocking(move || {
        let mut clients = Vec::new();
        let mut refusals = std::collections::BTreeMap::<String, usize>::new();
        for _ in 0..1_100 {
            let result = crate::turn::Client::with_credentials(server, &user, "huddle", &pass)
                .and_then(|mut c| {
                    let answer = c.request(Method::ALLOCATE, |w| {
                        w.attr(AttrType::REQUESTED_TRANSPORT, &[17, 0, 0, 0]);
                    })?;
                    let code = Stun::parse(&answer)?
                        .get(AttrType::ERROR_CODE)
                        .and_then(ErrorCode::decode);
                    Ok((c, code))
                });
            match result {
                Ok((c, None)) => clients.push(c),
                Ok((_, Some(code))) => *refusals.entry(code.to_string()).or_default() += 1,
                Err(e) => *refusals.entry(format!("{e}")).or_default() += 1,
            }
        }
        (clients, refusals)
    })
    .await?;
    let (clients, refusals) = outcome;
    let healthy = t.healthy().await;
    let fds = t.descriptors();
    drop(clients);
    Ok(format!(
        "granted {}, refused {refusals:?}; server descriptors {fds} of 1024; /healthz with them held: {}",
        1_100 - refusals.values().sum::<usize>(),
        if healthy { "answers" } else { "FAILS" }
    ))
}

/// 150 WHIP offers of 380 m-lines (just under 64 KB each) into 150 rooms: their answers, and
/// the memory the server holds afterwards.
async fn sdp_amplification(t: &Target) -> anyhow::Result<String> {
    let rss_before = t.rss_mib();
    let sections = 380;
    let mids: Vec<String> = (0..sections).map(|m| m.to_string()).collect();
    let mut offer = format!(
        "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE {}\r\na=fingerprint:sha-256 \
         00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF\r\n",
        mids.join(" ")
    );
    for mid in mids {
        offer.push_str(&format!(
            "m=audio 9 UDP/TLS/RTP/SAVPF 0\r\nc=IN IP4 0.0.0.0\r\na=mid:{mid}\r\na=ice-ufrag:abcd\r\n\
             a=ice-pwd:abcdefghijklmnopqrstuvwx\r\na=setup:actpass\r\na=sendonly\r\na=rtcp-mux\r\n"
        ));
    }
    let mut statuses = std::collections::BTreeMap::<u16, usize>::new();
    let sdp = [("Content-Type", "application/sdp")];
    for room in 0..150 {
        let path = format!("/whip/amp{room}");
        let status = crate::http1::request(t.http, "POST", &path, &sdp, offer.as_bytes())
            .await
            .map_or(0, |(s, _)| s);
        *statuses.entry(status).or_default() += 1;
    }
    Ok(format!(
        "offer {} KB; answers {statuses:?}; RSS {rss_before:.0} → {:.0} MiB",
        offer.len() / 1024,
        t.rss_mib()
    ))
}

/// 100 trials of three in a room, one chatting while another closes cleanly: how often the
/// third hears `disconnected` instead of `left`.
async fn clean_leave(t: &Target) -> anyhow::Result<String> {
    let mut wrong = 0;
    let trials = 100;
    for trial in 0..trials {
        let room = format!("leave{trial}");
        let mut talker = t.ws().await?;
        let mut leaver = t.ws().await?;
        let mut watcher = t.ws().await?;
        join(&mut talker, &room, "Talker").await?;
        let gone = join(&mut leaver, &room, "Leaver").await?;
        join(&mut watcher, &room, "Watcher").await?;
        let (mut tx, mut rx) = talker.split();
        let drain = tokio::spawn(async move { while rx.next().await.is_some() {} });
        let chatter = tokio::spawn(async move {
            for i in 0..60 {
                let msg = serde_json::json!({"type": "chat", "text": format!("m{i}")});
                if tx
                    .send(Message::Text(msg.to_string().into()))
                    .await
                    .is_err()
                {
                    break;
                }
            }
        });
        tokio::time::sleep(Duration::from_millis(2)).await;
        leaver.close(None).await?;
        let reason = loop {
            let frame = tokio::time::timeout(Duration::from_secs(15), watcher.next())
                .await?
                .context("watcher closed")??;
            let Message::Text(text) = frame else { continue };
            let msg: serde_json::Value = serde_json::from_str(text.as_str())?;
            if msg["type"] == "peer-left" && msg["id"] == gone.as_str() {
                break msg["reason"].as_str().unwrap_or_default().to_owned();
            }
        };
        if reason != "left" {
            wrong += 1;
        }
        chatter.abort();
        drain.abort();
    }
    Ok(format!(
        "clean leaves reported as `disconnected`: {wrong} of {trials}"
    ))
}

/// 150 `POST /offer`s of 300 KB over HTTP/1.1, then 150 on one HTTP/2 connection: how many
/// read an answer (413, or 429 once rate-limited) rather than a reset, and whether the 413 is
/// the documented JSON.
async fn oversize_body(t: &Target) -> anyhow::Result<String> {
    let body = vec![b'x'; 300 * 1024];
    let json = [("Content-Type", "application/json")];
    let mut http1 = std::collections::BTreeMap::<String, usize>::new();
    let mut json_413 = 0;
    for _ in 0..150 {
        let outcome = match crate::http1::request(t.http, "POST", "/offer", &json, &body).await {
            Ok((status, text)) => {
                json_413 += usize::from(status == 413 && text.starts_with("{\"error\""));
                status.to_string()
            }
            Err(_) => "reset".to_owned(),
        };
        *http1.entry(outcome).or_default() += 1;
    }
    let mut http2 = std::collections::BTreeMap::<String, usize>::new();
    let tcp = TcpStream::connect(t.http).await?;
    let (mut h2, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tcp),
    )
    .await?;
    tokio::spawn(conn);
    let body = bytes::Bytes::from(body);
    for _ in 0..150 {
        let req = hyper::Request::post(format!("http://{}/offer", t.http))
            .header("content-type", "application/json")
            .body(http_body_util::Full::new(body.clone()))?;
        let outcome = match h2.send_request(req).await {
            Ok(r) => r.status().as_u16().to_string(),
            Err(_) => "reset".to_owned(),
        };
        *http2.entry(outcome).or_default() += 1;
    }
    Ok(format!(
        "answers to 300 KB bodies, HTTP/1.1: {http1:?} ({json_413} of the 413s JSON); HTTP/2: {http2:?}"
    ))
}

/// The TCP states (`0x01` ESTABLISHED) of the server's end of connections from `client_port`.
fn tcp_states(server_port: u16, client_port: u16) -> Vec<u8> {
    let mut states = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            let port = |i: usize| {
                cols.get(i)
                    .and_then(|a| a.rsplit(':').next())
                    .and_then(|p| u16::from_str_radix(p, 16).ok())
            };
            if port(1) == Some(server_port)
                && port(2) == Some(client_port)
                && let Some(state) = cols.get(3).and_then(|s| u8::from_str_radix(s, 16).ok())
            {
                states.push(state);
            }
        }
    }
    states
}

/// The load needs more sockets than a default soft limit allows.
fn raise_own_descriptor_limit() {
    let _ = huddle_server::raise_limit();
}
