//! `huddle-bench signal`: Huddle's `/ws` against python-socketio on aiohttp, the stack the WebRTC
//! tutorials use, with the same room semantics (bench/signal_socketio.py). Each run starts each
//! server afresh, pinned to one core, and drives it from this process on the other core:
//!
//! - joins/s: clients connecting and joining rooms of two;
//! - throughput: pairs exchanging signals as fast as they can; deliveries per server CPU-second;
//! - latency: signals at a fixed total rate, send-to-delivery p50/p99;
//! - idle memory: server RSS growth per joined, idle connection.

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio::sync::{Mutex, Semaphore};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::pinned::Pinned;
use crate::procstat::{cpu_seconds, rss_bytes};

#[derive(clap::Args)]
pub struct Args {
    /// The huddle binary (a release build).
    #[arg(long, default_value = "target/release/huddle")]
    huddle: PathBuf,
    /// A python with python-socketio and aiohttp installed.
    #[arg(long, default_value = "target/bench-venv/bin/python")]
    python: PathBuf,
    /// The Socket.IO server script.
    #[arg(long, default_value = "bench/signal_socketio.py")]
    script: PathBuf,
    /// Alternating runs per server; medians are reported.
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// CPU list (taskset) for the servers; run this program on the others.
    #[arg(long, default_value = "0")]
    server_cpus: String,
    /// Idle connections opened against Huddle.
    #[arg(long, default_value_t = 10_000)]
    idle: usize,
    /// Idle connections opened against python-socketio (it is slower to fill).
    #[arg(long, default_value_t = 2_000)]
    idle_python: usize,
    #[command(flatten)]
    traffic: Traffic,
}

/// The signals a measurement sends: its options are shared by `signal` and `cluster`.
#[derive(clap::Args, Clone, Copy)]
pub(crate) struct Traffic {
    /// Client pairs in the throughput test.
    #[arg(long, default_value_t = 50)]
    pub pairs: usize,
    /// Signals each client sends in the throughput test.
    #[arg(long, default_value_t = 400)]
    pub per_client: usize,
    /// Total signals per second in the latency test.
    #[arg(long, default_value_t = 5_000)]
    pub rate: u32,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Kind {
    Huddle,
    SocketIo,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Huddle => "Huddle",
            Kind::SocketIo => "python-socketio",
        }
    }
}

#[derive(Default, Clone, Copy)]
pub(crate) struct Sample {
    pub joins_per_sec: f64,
    /// Joins per CPU-second of every server process (all nodes and Redis, on a cluster).
    pub joins_per_cpu_sec: f64,
    pub deliveries_per_cpu_sec: f64,
    pub cpu_ms_per_1000: f64,
    /// CPU microseconds per join of each server process, in `Target::pids` order (a cluster's
    /// nodes, then Redis).
    pub join_us_by_process: [f64; MAX_PROCESSES],
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub idle_rss_kib: f64,
}

/// What one measurement drives.
pub(crate) struct Load {
    /// Idle connections for the memory figure (0: not measured).
    pub idle: usize,
    pub traffic: Traffic,
}

/// The servers under test: where clients connect (spread over them in turn) and whose CPU
/// counts; the first process's RSS is the memory figure.
pub(crate) struct Target {
    pub ports: Vec<u16>,
    pub pids: Vec<u32>,
    /// On a cluster, each port's node's public URL: a client connects to its room's home node,
    /// as a page does from the nodes its HTML names.
    pub urls: Vec<String>,
}

/// Server processes a measurement tells apart (three nodes and Redis).
pub(crate) const MAX_PROCESSES: usize = 4;

impl Target {
    fn cpu_seconds(&self) -> f64 {
        self.cpu_by_process().iter().sum()
    }

    fn cpu_by_process(&self) -> Vec<f64> {
        self.pids.iter().map(|pid| cpu_seconds(*pid)).collect()
    }

    /// Where the `i`th client, of `room`, connects: its room's home node on a cluster, else the
    /// next server in turn (a load balancer's round robin).
    fn port_for(&self, room: &str, i: usize) -> u16 {
        let urls: Vec<&str> = self.urls.iter().map(String::as_str).collect();
        match huddle_signal_proto::home::rendezvous_order(room, &urls).first() {
            Some(&home) => self.ports[home],
            None => self.ports[i % self.ports.len()],
        }
    }
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let mut results: Vec<(Kind, Sample)> = Vec::new();
    for run in 0..args.runs {
        let order = crate::alternate(run, [Kind::Huddle, Kind::SocketIo]);
        for kind in order {
            let server = Server::start(kind, &args)?;
            let load = Load {
                idle: match kind {
                    Kind::Huddle => args.idle,
                    Kind::SocketIo => args.idle_python,
                },
                traffic: args.traffic,
            };
            let target = Target {
                ports: vec![server.port],
                pids: vec![server.process.pid],
                urls: Vec::new(),
            };
            let sample = rt.block_on(measure(kind, &target, &load));
            drop(server);
            let sample = sample.with_context(|| format!("{} run {run}", kind.name()))?;
            eprintln!(
                "run {run} {:>15}: {:>7.0} joins/s  {:>8.0} deliveries/CPU-s  p50 {:.2} ms  p99 {:.2} ms  {:.1} KiB/idle conn",
                kind.name(),
                sample.joins_per_sec,
                sample.deliveries_per_cpu_sec,
                sample.p50_ms,
                sample.p99_ms,
                sample.idle_rss_kib
            );
            results.push((kind, sample));
        }
    }
    report(&results);
    Ok(())
}

/// A report row: name, the field, and whether higher is better.
type Row = (&'static str, fn(&Sample) -> f64, bool);

fn report(results: &[(Kind, Sample)]) {
    let median = |kind: Kind, f: fn(&Sample) -> f64| crate::median_of(results, kind, f);
    println!("| metric (median) | Huddle | python-socketio | ratio |");
    println!("|---|---:|---:|---:|");
    let rows: [Row; 6] = [
        ("joins/s", |s| s.joins_per_sec, true),
        (
            "deliveries per server CPU-second",
            |s| s.deliveries_per_cpu_sec,
            true,
        ),
        (
            "server CPU-ms per 1,000 deliveries",
            |s| s.cpu_ms_per_1000,
            false,
        ),
        ("relay latency p50 (ms)", |s| s.p50_ms, false),
        ("relay latency p99 (ms)", |s| s.p99_ms, false),
        ("RSS per idle connection (KiB)", |s| s.idle_rss_kib, false),
    ];
    for (name, f, higher_better) in rows {
        let (h, p) = (median(Kind::Huddle, f), median(Kind::SocketIo, f));
        let ratio = if higher_better { h / p } else { p / h };
        println!("| {name} | {h:.2} | {p:.2} | {ratio:.1}× |");
    }
}

struct Server {
    process: Pinned,
    port: u16,
}

impl Server {
    fn start(kind: Kind, args: &Args) -> anyhow::Result<Self> {
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let ready = SocketAddr::from(([127, 0, 0, 1], port));
        let process = match kind {
            // python-socketio has no flood limit; lift ours so both relay the same load.
            Kind::Huddle => {
                Pinned::start(
                    None,
                    kind.name(),
                    &args.server_cpus,
                    &args.huddle,
                    ready,
                    |cmd| {
                        cmd.args([
                            "serve",
                            "--no-tls",
                            "--no-turn",
                            "--message-rate",
                            "1000000",
                            // Every client is on loopback: lift the per-address limits.
                            "--websockets-per-ip",
                            "1000000",
                            "--connections-per-ip",
                            "1000000",
                            "--listen",
                        ])
                        .arg(ready.to_string())
                        .env("RUST_LOG", "warn");
                    },
                )?
            }
            Kind::SocketIo => Pinned::start(
                None,
                kind.name(),
                &args.server_cpus,
                &args.python,
                ready,
                |cmd| {
                    cmd.arg(&args.script).arg(port.to_string());
                },
            )?,
        };
        Ok(Self { process, port })
    }
}

type Sink = SplitSink<WebSocketStream<MaybeTlsStream<TcpStream>>, Message>;
type Stream = SplitStream<WebSocketStream<MaybeTlsStream<TcpStream>>>;

/// A signaling client speaking either Huddle's protocol or Socket.IO v5 (Engine.IO v4) framing.
pub(crate) struct Client {
    kind: Kind,
    /// The port it is connected to (on a cluster, the room's node's).
    pub port: u16,
    sink: Arc<Mutex<Sink>>,
    stream: Stream,
}

fn since_start() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

impl Client {
    async fn connect(kind: Kind, port: u16) -> anyhow::Result<Self> {
        let url = match kind {
            Kind::Huddle => format!("ws://127.0.0.1:{port}/ws"),
            Kind::SocketIo => format!("ws://127.0.0.1:{port}/socket.io/?EIO=4&transport=websocket"),
        };
        let (ws, _) = tokio_tungstenite::connect_async(url).await?;
        let (sink, stream) = ws.split();
        let mut client = Client {
            kind,
            port,
            sink: Arc::new(Mutex::new(sink)),
            stream,
        };
        if kind == Kind::SocketIo {
            // Engine.IO open packet, then the Socket.IO connect handshake for namespace "/".
            client.raw_until(|t| t.starts_with('0')).await?;
            client
                .sink
                .lock()
                .await
                .send(Message::Text("40".into()))
                .await?;
            client.raw_until(|t| t.starts_with("40")).await?;
        }
        Ok(client)
    }

    async fn raw_until(&mut self, want: impl Fn(&str) -> bool) -> anyhow::Result<()> {
        while let Some(frame) = self.stream.next().await {
            if let Message::Text(t) = frame?
                && want(t.as_str())
            {
                return Ok(());
            }
        }
        bail!("closed during handshake")
    }

    async fn emit(
        sink: &Mutex<Sink>,
        kind: Kind,
        event: &str,
        mut payload: Value,
    ) -> anyhow::Result<()> {
        let text = match kind {
            Kind::Huddle => {
                payload["type"] = json!(event);
                payload.to_string()
            }
            Kind::SocketIo => format!("42{}", json!([event, payload])),
        };
        sink.lock().await.send(Message::Text(text.into())).await?;
        Ok(())
    }

    async fn send(&self, event: &str, payload: Value) -> anyhow::Result<()> {
        Self::emit(&self.sink, self.kind, event, payload).await
    }

    /// The next event and its payload; answers Engine.IO pings on the way.
    async fn recv(&mut self) -> anyhow::Result<(String, Value)> {
        while let Some(frame) = self.stream.next().await {
            let Message::Text(text) = frame? else {
                continue;
            };
            let text = text.as_str();
            match self.kind {
                Kind::Huddle => {
                    let v: Value = serde_json::from_str(text)?;
                    let event = v["type"].as_str().unwrap_or_default().to_owned();
                    return Ok((event, v));
                }
                Kind::SocketIo => {
                    if text == "2" {
                        self.sink
                            .lock()
                            .await
                            .send(Message::Text("3".into()))
                            .await?;
                    } else if let Some(body) = text.strip_prefix("42") {
                        let v: Value = serde_json::from_str(body)?;
                        let event = v[0].as_str().unwrap_or_default().to_owned();
                        return Ok((event, v[1].clone()));
                    }
                }
            }
        }
        bail!("connection closed")
    }

    async fn recv_event(&mut self, want: &str) -> anyhow::Result<Value> {
        loop {
            let (event, v) = self.recv().await?;
            if event == want {
                return Ok(v);
            }
            if event == "error" {
                bail!("server error: {v}");
            }
        }
    }

    /// Connects to `port` and joins `room` — on a cluster, at the node the server sends it to
    /// (`moved`), as the page does. The client and its peer id.
    pub(crate) async fn join(
        kind: Kind,
        mut port: u16,
        room: &str,
    ) -> anyhow::Result<(Self, String)> {
        for _ in 0..3 {
            let mut client = Self::connect(kind, port).await?;
            let payload = json!({"v": 1, "room": room, "name": "bench"});
            client.send("join", payload).await?;
            loop {
                let (event, v) = client.recv().await?;
                match event.as_str() {
                    "welcome" => {
                        return Ok((client, v["id"].as_str().unwrap_or_default().to_owned()));
                    }
                    "moved" => {
                        let url = v["url"].as_str().unwrap_or_default();
                        port = url
                            .rsplit(':')
                            .next()
                            .and_then(|p| p.parse().ok())
                            .context("moved to a URL without a port")?;
                        break;
                    }
                    "error" => bail!("server error: {v}"),
                    _ => {}
                }
            }
        }
        bail!("moved more than twice")
    }
}

/// Connects `n` clients into rooms of two (`prefix-i/2`), `parallel` at a time, each where
/// [`Target::port_for`] says.
async fn join_pairs(
    kind: Kind,
    target: &Target,
    n: usize,
    prefix: &str,
    parallel: usize,
) -> anyhow::Result<Vec<(Client, String)>> {
    let gate = Arc::new(Semaphore::new(parallel));
    // Even clients join first so their partner finds them in the room.
    let mut out: Vec<Option<(Client, String)>> = (0..n).map(|_| None).collect();
    for half in [0, 1] {
        let mut tasks = Vec::new();
        for i in (half..n).step_by(2) {
            let gate = gate.clone();
            let room = format!("{prefix}-{}", i / 2);
            let port = target.port_for(&room, i);
            tasks.push(tokio::spawn(async move {
                let _permit = gate.acquire_owned().await?;
                let (c, id) = Client::join(kind, port, &room).await?;
                anyhow::Ok((i, c, id))
            }));
        }
        for t in tasks {
            let (i, c, id) = t.await??;
            out[i] = Some((c, id));
        }
    }
    Ok(out.into_iter().flatten().collect())
}

pub(crate) async fn measure(kind: Kind, target: &Target, load: &Load) -> anyhow::Result<Sample> {
    let mut sample = Sample::default();

    // Idle memory first, on a fresh process: RSS growth per joined connection.
    if load.idle > 0 {
        let before = rss_bytes(target.pids[0]);
        let idle = join_pairs(kind, target, load.idle, "idle", 200).await?;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let after = rss_bytes(target.pids[0]);
        sample.idle_rss_kib = after.saturating_sub(before) as f64 / idle.len() as f64 / 1024.0;
        drop(idle);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    // Joins per second: 1,000 clients into 500 rooms, 100 at a time.
    let (t0, cpu0) = (Instant::now(), target.cpu_by_process());
    let joined = join_pairs(kind, target, 1000, "join", 100).await?;
    sample.joins_per_sec = joined.len() as f64 / t0.elapsed().as_secs_f64();
    let used: Vec<f64> = target
        .cpu_by_process()
        .iter()
        .zip(&cpu0)
        .map(|(after, before)| after - before)
        .collect();
    sample.joins_per_cpu_sec = joined.len() as f64 / used.iter().sum::<f64>().max(1e-6);
    for (slot, cpu) in sample.join_us_by_process.iter_mut().zip(&used) {
        *slot = cpu * 1e6 / joined.len() as f64;
    }
    drop(joined);
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Throughput: pairs flood each other; count deliveries against server CPU time.
    let pairs = join_pairs(kind, target, load.traffic.pairs * 2, "flood", 50).await?;
    let ids: Vec<String> = pairs.iter().map(|(_, id)| id.clone()).collect();
    let cpu0 = target.cpu_seconds();
    let per_client = load.traffic.per_client;
    let mut tasks = Vec::new();
    for (i, (mut client, _)) in pairs.into_iter().enumerate() {
        let partner = ids[i ^ 1].clone();
        let sink = client.sink.clone();
        tasks.push(tokio::spawn(async move {
            let writer = tokio::spawn(async move {
                for n in 0..per_client {
                    let payload =
                        json!({"to": partner, "candidate": {"candidate": "bench", "n": n}});
                    Client::emit(&sink, kind, "signal", payload).await?;
                }
                anyhow::Ok(())
            });
            for _ in 0..per_client {
                client.recv_event("signal").await?;
            }
            writer.await??;
            anyhow::Ok(client)
        }));
    }
    let mut clients = Vec::new();
    for t in tasks {
        clients.push(t.await??);
    }
    let cpu = (target.cpu_seconds() - cpu0).max(0.01);
    let delivered = (per_client * clients.len()) as f64;
    sample.deliveries_per_cpu_sec = delivered / cpu;
    sample.cpu_ms_per_1000 = cpu * 1000.0 / (delivered / 1000.0);
    drop(clients);
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Latency at a fixed rate: 50 clients (25 pairs), each sending rate/50 per second, 4 s.
    let clients = join_pairs(kind, target, 50, "latency", 50).await?;
    let ids: Vec<String> = clients.iter().map(|(_, id)| id.clone()).collect();
    let per_client_rate = f64::from(load.traffic.rate) / clients.len() as f64;
    let count = (per_client_rate * 4.0) as usize;
    let mut tasks = Vec::new();
    for (i, (mut client, _)) in clients.into_iter().enumerate() {
        let partner = ids[i ^ 1].clone();
        let sink = client.sink.clone();
        tasks.push(tokio::spawn(async move {
            let writer = tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / per_client_rate));
                for _ in 0..count {
                    tick.tick().await;
                    let payload = json!({"to": partner, "candidate": {"candidate": "bench", "t": since_start()}});
                    Client::emit(&sink, kind, "signal", payload).await?;
                }
                anyhow::Ok(())
            });
            let mut latencies = Vec::with_capacity(count);
            for _ in 0..count {
                let v = client.recv_event("signal").await?;
                let sent = v["candidate"]["t"].as_u64().unwrap_or(0);
                latencies.push(since_start().saturating_sub(sent));
            }
            writer.await??;
            anyhow::Ok(latencies)
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await??);
    }
    all.sort_unstable();
    let pct = |p: f64| {
        all.get(((all.len() as f64 * p) as usize).min(all.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0) as f64
            / 1e6
    };
    sample.p50_ms = pct(0.50);
    sample.p99_ms = pct(0.99);
    tokio::time::sleep(Duration::from_millis(300)).await;

    Ok(sample)
}
