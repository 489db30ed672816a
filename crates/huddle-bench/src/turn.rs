//! `huddle-bench turn`: Huddle's TURN server against coturn's `turnserver`, alternating runs,
//! each server pinned to one CPU and started with equivalent settings (long-term credentials,
//! loopback peers allowed, the same relay port range).
//!
//! - allocations/s: clients doing the whole 401 → authenticated Allocate → Refresh(0) cycle;
//! - throughput, both ways at fixed offered rates (batched `sendmmsg`, Huddle's own batch
//!   helper): ChannelData from N allocations relayed to one peer socket, counted at the peer; and
//!   datagrams from that peer to the N relayed addresses, relayed as ChannelData and counted at
//!   the clients. Loss, and relayed packets per server CPU-second;
//! - added latency: one allocation at 1,000 packets/s, client → TURN → peer minus client → peer;
//! - RSS per idle allocation.

use std::io::ErrorKind;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use huddle_server::udp::batch;
use huddle_server::udp::epoll::{self, Epoll};
use huddle_turn_proto::auth::long_term_key;
use huddle_turn_proto::channel_data;
use huddle_turn_proto::stun::{
    AttrType, Class, ErrorCode, IntegrityAlg, Message, MessageWriter, Method,
};

use crate::awake::AwakeCpus;
use crate::median;
use crate::procstat::{cpu_seconds, rss_bytes};

#[derive(clap::Args)]
pub struct Args {
    #[arg(long, default_value = "target/release/huddle")]
    huddle: PathBuf,
    #[arg(long, default_value = "turnserver")]
    coturn: PathBuf,
    /// Another Huddle build to run in coturn's place: an A/B comparison of a change.
    #[arg(long)]
    baseline: Option<PathBuf>,
    #[arg(long, default_value_t = 5)]
    runs: usize,
    #[arg(long, default_value = "0")]
    server_cpus: String,
    /// Offered rates (packets/s) of the throughput ladder.
    #[arg(long, value_delimiter = ',', default_value = "20000,50000,100000")]
    rates: Vec<u64>,
    /// Seconds per throughput step.
    #[arg(long, default_value_t = 3)]
    seconds: u64,
    /// Allocation counts of the throughput ladder (narrow it to profile one step).
    #[arg(long, value_delimiter = ',', default_value = "1,1000")]
    allocs: Vec<usize>,
    /// Keep CPUs awake (PM QoS 0 µs, see `awake.rs`) for the whole run, not only for the second
    /// latency measurement: every figure then shows the servers without the cost of waking
    /// halted vCPUs.
    #[arg(long)]
    awake: bool,
    /// Packet sizes (bytes) of the throughput ladder.
    #[arg(long, value_delimiter = ',', default_value = "200,1200")]
    sizes: Vec<usize>,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Huddle,
    Coturn,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Huddle => "Huddle",
            Kind::Coturn => "coturn",
        }
    }
}

const USER: &str = "user1";
const PASS: &str = "pass1";
const REALM: &str = "test";

struct Server {
    child: Child,
    pid: u32,
    addr: SocketAddr,
    _dir: PathBuf,
}

impl Server {
    fn start(kind: Kind, args: &Args, port: u16) -> anyhow::Result<Self> {
        let dir =
            std::env::temp_dir().join(format!("huddle-bench-turn-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let mut cmd = Command::new("taskset");
        cmd.arg("-c").arg(&args.server_cpus);
        let huddle = match (kind, &args.baseline) {
            (Kind::Huddle, _) => Some(&args.huddle),
            (Kind::Coturn, baseline) => baseline.as_ref(),
        };
        match huddle {
            Some(huddle) => {
                cmd.arg(huddle)
                    .args(["turn", "--listen", &format!("127.0.0.1:{port}")]);
                cmd.args([
                    "--user",
                    &format!("{USER}:{PASS}"),
                    "--realm",
                    REALM,
                    "--allow-loopback-peers",
                ]);
                cmd.args(["--relay-ports", "10000-30999", "--no-tls"]).env(
                    "RUST_LOG",
                    std::env::var("BENCH_RUST_LOG").unwrap_or_else(|_| "warn".into()),
                );
            }
            None => {
                let conf = dir.join("turnserver.conf");
                std::fs::write(
                    &conf,
                    format!(
                        "listening-ip=127.0.0.1\nlistening-port={port}\nrelay-ip=127.0.0.1\n\
                         min-port=10000\nmax-port=30999\nfingerprint\nlt-cred-mech\nuser={USER}:{PASS}\n\
                         realm={REALM}\nno-tls\nno-dtls\nno-cli\nallow-loopback-peers\nno-tcp-relay\n\
                         log-file=stdout\nsimple-log\npidfile={}\n",
                        dir.join("pid").display()
                    ),
                )?;
                cmd.arg(&args.coturn).arg("-c").arg(&conf);
            }
        }
        // BENCH_DEBUG=1 shows the servers' own logs (BENCH_RUST_LOG sets Huddle's filter).
        let debug = std::env::var_os("BENCH_DEBUG").is_some();
        let child = cmd
            .stdout(if debug {
                Stdio::inherit()
            } else {
                Stdio::null()
            })
            .stderr(if debug {
                Stdio::inherit()
            } else {
                Stdio::null()
            })
            .spawn()
            .context("start TURN server")?;
        let pid = child.id();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        // Ready when a Binding request is answered.
        let probe = UdpSocket::bind("127.0.0.1:0")?;
        probe.set_read_timeout(Some(Duration::from_millis(100)))?;
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let mut buf = Vec::new();
            MessageWriter::new(&mut buf, Class::Request, Method::BINDING, [1; 12]);
            probe.send_to(&buf, addr)?;
            let mut resp = [0u8; 512];
            if probe.recv(&mut resp).is_ok() {
                break;
            }
            if Instant::now() > deadline {
                bail!("{} did not answer on {addr}", kind.name());
            }
        }
        Ok(Self {
            child,
            pid,
            addr,
            _dir: dir,
        })
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A TURN client on one UDP socket: the 401 dance, then signed requests.
pub(crate) struct Client {
    sock: UdpSocket,
    server: SocketAddr,
    nonce: Option<String>,
    user: String,
    realm: String,
    key: [u8; 16],
    txid: u64,
    relay: Option<SocketAddr>,
}

impl Client {
    fn new(server: SocketAddr) -> anyhow::Result<Self> {
        Self::with_credentials(server, USER, REALM, PASS)
    }

    /// A client of `server` that signs as `user` of `realm`.
    pub(crate) fn with_credentials(
        server: SocketAddr,
        user: &str,
        realm: &str,
        pass: &str,
    ) -> anyhow::Result<Self> {
        let sock = UdpSocket::bind("127.0.0.1:0")?;
        sock.set_read_timeout(Some(Duration::from_millis(500)))?;
        Ok(Self {
            sock,
            server,
            nonce: None,
            user: user.to_owned(),
            realm: realm.to_owned(),
            key: long_term_key(user, realm, pass),
            txid: 0,
            relay: None,
        })
    }

    /// Sends a request (signed once a nonce is known) and returns the response; retries once on
    /// 401/438 with the new nonce, and on timeouts.
    pub(crate) fn request(
        &mut self,
        method: Method,
        attrs: impl Fn(&mut MessageWriter),
    ) -> anyhow::Result<Vec<u8>> {
        // A retransmit keeps its transaction id (RFC 8489 §6.2.1); a new nonce makes a new request.
        let mut fresh = true;
        let mut id = [0u8; 12];
        for _ in 0..6 {
            if fresh {
                self.txid += 1;
                id[4..].copy_from_slice(&self.txid.to_be_bytes());
                fresh = false;
            }
            let mut buf = Vec::with_capacity(128);
            let mut w = MessageWriter::new(&mut buf, Class::Request, method, id);
            attrs(&mut w);
            if let Some(nonce) = &self.nonce {
                w.attr(AttrType::USERNAME, self.user.as_bytes())
                    .attr(AttrType::REALM, self.realm.as_bytes())
                    .attr(AttrType::NONCE, nonce.as_bytes())
                    .integrity(IntegrityAlg::Sha1, &self.key);
            }
            w.fingerprint();
            self.sock.send_to(&buf, self.server)?;
            let mut resp = vec![0u8; 1500];
            let n = loop {
                match self.sock.recv(&mut resp) {
                    Ok(n) => match Message::parse(&resp[..n]) {
                        Ok(m) if m.transaction_id() == id => break Some(n),
                        _ => continue,
                    },
                    Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                        break None;
                    }
                    Err(e) => return Err(e.into()),
                }
            };
            let Some(n) = n else { continue };
            resp.truncate(n);
            let msg = Message::parse(&resp)?;
            let code = msg.get(AttrType::ERROR_CODE).and_then(ErrorCode::decode);
            if matches!(code, Some(401 | 438)) {
                if let Ok(Some(nonce)) = msg.get_str(AttrType::NONCE) {
                    let stale = self.nonce.as_deref() == Some(nonce) && code == Some(401);
                    self.nonce = Some(nonce.to_owned());
                    if !stale {
                        fresh = true;
                        continue;
                    }
                }
                bail!("authentication refused");
            }
            return Ok(resp);
        }
        bail!("no answer to {method:?}")
    }

    pub(crate) fn allocate(&mut self) -> anyhow::Result<SocketAddr> {
        let resp = self.request(Method::ALLOCATE, |w| {
            w.attr(AttrType::REQUESTED_TRANSPORT, &[17, 0, 0, 0]);
        })?;
        let msg = Message::parse(&resp)?;
        let relay = msg
            .get_xor_address(AttrType::XOR_RELAYED_ADDRESS)?
            .with_context(|| {
                format!(
                    "allocate failed: {:?}",
                    msg.get(AttrType::ERROR_CODE).and_then(ErrorCode::decode)
                )
            })?;
        self.relay = Some(relay);
        Ok(relay)
    }

    /// A client with an allocation: on 437/508 (a reused 5-tuple coturn has not forgotten yet)
    /// it tries again from a new socket.
    fn allocated(server: SocketAddr) -> anyhow::Result<Self> {
        let mut last = None;
        for _ in 0..5 {
            let mut c = Client::new(server)?;
            match c.allocate() {
                Ok(_) => return Ok(c),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| anyhow::anyhow!("no allocation")))
    }

    fn bind_channel(&mut self, channel: u16, peer: SocketAddr) -> anyhow::Result<()> {
        let resp = self.request(Method::CHANNEL_BIND, |w| {
            w.attr(
                AttrType::CHANNEL_NUMBER,
                &[(channel >> 8) as u8, channel as u8, 0, 0],
            )
            .xor_address(AttrType::XOR_PEER_ADDRESS, peer);
        })?;
        if Message::parse(&resp)?.class() != Class::Success {
            bail!("channel bind refused");
        }
        Ok(())
    }

    fn free(&mut self) -> anyhow::Result<()> {
        let resp = self.request(Method::REFRESH, |w| {
            w.u32(AttrType::LIFETIME, 0);
        })?;
        let msg = Message::parse(&resp)?;
        if msg.class() != Class::Success && std::env::var_os("BENCH_DEBUG").is_some() {
            eprintln!(
                "refresh refused: {:?}",
                msg.get(AttrType::ERROR_CODE).and_then(ErrorCode::decode)
            );
        }
        Ok(())
    }
}

/// A peer socket that counts what arrives, and records one-way latency from timestamps.
pub(crate) struct Sink {
    pub(crate) addr: SocketAddr,
    /// The sink's own socket, to send from it as the peer the channels are bound to.
    pub(crate) sock: UdpSocket,
    received: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<Vec<u64>>>,
}

impl Sink {
    pub(crate) fn start(base: Instant) -> anyhow::Result<Self> {
        let sock = UdpSocket::bind("127.0.0.1:0")?;
        set_buffers(&sock);
        sock.set_read_timeout(Some(Duration::from_millis(50)))?;
        let addr = sock.local_addr()?;
        let sender = sock.try_clone()?;
        let received = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (r, s) = (received.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            let mut latencies = Vec::new();
            while !s.load(Ordering::Relaxed) {
                if let Ok(n) = sock.recv(&mut buf) {
                    r.fetch_add(1, Ordering::Relaxed);
                    if n >= 9 && buf[0] == 0xEE {
                        let sent = u64::from_be_bytes(buf[1..9].try_into().unwrap_or_default());
                        latencies.push((base.elapsed().as_nanos() as u64).saturating_sub(sent));
                    }
                }
            }
            latencies
        });
        Ok(Self {
            addr,
            sock: sender,
            received,
            stop,
            thread: Some(thread),
        })
    }

    pub(crate) fn finish(mut self) -> (u64, Vec<u64>) {
        self.stop.store(true, Ordering::Relaxed);
        let lat = self
            .thread
            .take()
            .and_then(|t| t.join().ok())
            .unwrap_or_default();
        (self.received.load(Ordering::Relaxed), lat)
    }
}

pub(crate) fn set_buffers(sock: &UdpSocket) {
    batch::set_buffers(sock.as_raw_fd(), 8 << 20);
}

/// The load generator's sockets for one step of the throughput ladder.
pub(crate) struct Lanes<'a> {
    /// Client sockets and where their ChannelData goes (the server).
    pub(crate) to_server: &'a [(RawFd, SocketAddr)],
    /// What clients send: a ChannelData frame.
    pub(crate) frame: &'a [u8],
    /// The peer's socket and the relayed addresses it sends to.
    pub(crate) to_relays: &'a [(RawFd, SocketAddr)],
    /// What the peer sends: a plain datagram.
    pub(crate) datagram: &'a [u8],
    /// The client sockets, where relayed datagrams arrive.
    pub(crate) client_fds: &'a [RawFd],
    /// The peer, where relayed frames arrive.
    pub(crate) sink: &'a Sink,
}

impl Lanes<'_> {
    /// Offers `rate` packets/s in `direction` for `duration`: the loss (%) and the relayed
    /// packets per CPU-second of `cpu_seconds` (the server's CPU time so far).
    pub(crate) fn offer(
        &self,
        direction: Direction,
        rate: u64,
        duration: Duration,
        cpu_seconds: impl Fn() -> f64,
    ) -> anyhow::Result<(f64, f64)> {
        let cpu0 = cpu_seconds();
        let (sent, got) = match direction {
            Direction::ToPeer => {
                let before = self.sink.received.load(Ordering::Relaxed);
                let sent = offer(self.to_server, self.frame, rate, duration);
                std::thread::sleep(Duration::from_millis(300));
                (sent, self.sink.received.load(Ordering::Relaxed) - before)
            }
            Direction::ToClient => {
                let stop = AtomicBool::new(false);
                std::thread::scope(|scope| {
                    let counter = scope.spawn(|| count_arrivals(self.client_fds, &stop));
                    let sent = offer(self.to_relays, self.datagram, rate, duration);
                    std::thread::sleep(Duration::from_millis(300));
                    stop.store(true, Ordering::Relaxed);
                    let got = counter
                        .join()
                        .map_err(|_| anyhow::anyhow!("arrival counter panicked"))??;
                    anyhow::Ok((sent, got))
                })?
            }
        };
        let cpu = (cpu_seconds() - cpu0).max(0.01);
        let loss = 100.0 * (1.0 - got as f64 / sent.max(1) as f64);
        Ok((loss.max(0.0), got as f64 / cpu))
    }
}

#[derive(Clone)]
struct Step {
    direction: Direction,
    allocs: usize,
    size: usize,
    offered_pps: u64,
    loss_percent: f64,
    /// Relayed packets per server CPU-second.
    per_cpu_second: f64,
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Direction {
    /// ChannelData from clients, relayed as UDP to the peer.
    ToPeer,
    /// UDP from the peer, relayed as ChannelData to the clients.
    ToClient,
}

impl Direction {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Direction::ToPeer => "client→peer",
            Direction::ToClient => "peer→client",
        }
    }
}

#[derive(Default, Clone)]
struct Sample {
    allocs_per_sec: f64,
    alloc_failures: u64,
    /// One per step of the throughput ladder.
    steps: Vec<Step>,
    added_p50_us: f64,
    added_p99_us: f64,
    /// The same with CPUs kept awake ([`crate::awake`]), when this machine allows it.
    awake_p50_us: Option<f64>,
    awake_p99_us: Option<f64>,
    rss_per_alloc_kib: f64,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let _awake = match args.awake {
        true => Some(AwakeCpus::hold().context("cannot write /dev/cpu_dma_latency (root only)")?),
        false => None,
    };
    let mut results: Vec<(Kind, Sample)> = Vec::new();
    for run in 0..args.runs {
        let order = crate::alternate(run, [Kind::Huddle, Kind::Coturn]);
        for kind in order {
            let port = 23478 + (run as u16) * 2 + u16::from(kind == Kind::Coturn);
            let server = Server::start(kind, &args, port)?;
            let sample =
                measure(&server, &args).with_context(|| format!("{} run {run}", kind.name()))?;
            eprintln!(
                "run {run} {:>6}: {:>6.0} allocs/s ({} failed)  added latency p50 {:.1} µs p99 {:.1} µs  {:.2} KiB/alloc",
                kind.name(),
                sample.allocs_per_sec,
                sample.alloc_failures,
                sample.added_p50_us,
                sample.added_p99_us,
                sample.rss_per_alloc_kib
            );
            if let (Some(p50), Some(p99)) = (sample.awake_p50_us, sample.awake_p99_us) {
                eprintln!("    CPUs kept awake: added latency p50 {p50:.1} µs p99 {p99:.1} µs");
            }
            for step in &sample.steps {
                eprintln!(
                    "    {} {:>4} allocs {:>4} B @ {:>6} pps: loss {:5.2}%  {:>8.0} pkts/CPU-s",
                    step.direction.name(),
                    step.allocs,
                    step.size,
                    step.offered_pps,
                    step.loss_percent,
                    step.per_cpu_second
                );
            }
            results.push((kind, sample));
            drop(server);
            std::thread::sleep(Duration::from_millis(500));
        }
    }
    report(
        &results,
        if args.baseline.is_some() {
            "baseline"
        } else {
            "coturn"
        },
    );
    Ok(())
}

fn report(results: &[(Kind, Sample)], other: &str) {
    let of = |kind: Kind, f: &dyn Fn(&Sample) -> f64| {
        median(
            results
                .iter()
                .filter(|(k, _)| *k == kind)
                .map(|(_, s)| f(s))
                .collect(),
        )
    };
    println!("| metric (median) | Huddle | {other} | ratio |");
    println!("|---|---:|---:|---:|");
    let (h, c) = (
        of(Kind::Huddle, &|s| s.allocs_per_sec),
        of(Kind::Coturn, &|s| s.allocs_per_sec),
    );
    println!(
        "| allocations/s (401 + Allocate + Refresh 0) | {h:.0} | {c:.0} | {:.2}× |",
        h / c
    );
    let steps = results.first().map(|(_, s)| s.steps.len()).unwrap_or(0);
    for i in 0..steps {
        let step = &results[0].1.steps[i];
        let (direction, allocs, size, rate) = (
            step.direction.name(),
            step.allocs,
            step.size,
            step.offered_pps,
        );
        let loss = |k| of(k, &|s: &Sample| s.steps[i].loss_percent);
        let per = |k| of(k, &|s: &Sample| s.steps[i].per_cpu_second);
        println!(
            "| {direction} · {allocs} alloc · {size} B · {rate} pps offered: loss % / relayed pkts per CPU-s | {:.2} / {:.0} | {:.2} / {:.0} | {:.2}× |",
            loss(Kind::Huddle),
            per(Kind::Huddle),
            loss(Kind::Coturn),
            per(Kind::Coturn),
            per(Kind::Huddle) / per(Kind::Coturn)
        );
    }
    for (name, f) in [
        (
            "added latency p50 (µs)",
            (|s: &Sample| s.added_p50_us) as fn(&Sample) -> f64,
        ),
        ("added latency p99 (µs)", |s| s.added_p99_us),
        (
            "added latency p50 (µs), CPUs kept awake (PM QoS 0 µs)",
            |s| s.awake_p50_us.unwrap_or(f64::NAN),
        ),
        (
            "added latency p99 (µs), CPUs kept awake (PM QoS 0 µs)",
            |s| s.awake_p99_us.unwrap_or(f64::NAN),
        ),
        ("RSS per idle allocation (KiB)", |s| s.rss_per_alloc_kib),
    ] {
        let (h, c) = (of(Kind::Huddle, &f), of(Kind::Coturn, &f));
        if h.is_nan() && c.is_nan() {
            continue; // CPUs could not be kept awake here
        }
        println!("| {name} | {h:.1} | {c:.1} | {:.2}× |", c / h);
    }
}

fn measure(server: &Server, args: &Args) -> anyhow::Result<Sample> {
    let mut sample = Sample::default();
    let base = Instant::now();

    // Idle allocations first, on a fresh process: RSS growth per allocation.
    let rss0 = rss_bytes(server.pid);
    let mut idle = Vec::new();
    for _ in 0..1000 {
        idle.push(Client::allocated(server.addr).context("idle allocations")?);
    }
    std::thread::sleep(Duration::from_millis(300));
    sample.rss_per_alloc_kib = rss_bytes(server.pid).saturating_sub(rss0) as f64 / 1000.0 / 1024.0;
    for c in &mut idle {
        c.free()?;
    }
    drop(idle);

    // Allocations per second: 16 clients cycling for 2 s.
    let done = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let t0 = Instant::now();
    let workers: Vec<_> = (0..16)
        .map(|_| {
            let (done, failed, addr) = (done.clone(), failed.clone(), server.addr);
            std::thread::spawn(move || -> anyhow::Result<()> {
                // Sockets stay open a while after their allocation is freed, so the kernel does
                // not hand a just-used port (and so a just-used 5-tuple) to the next client:
                // coturn forgets freed allocations lazily and would answer 437.
                let mut recent = std::collections::VecDeque::new();
                while t0.elapsed() < Duration::from_secs(2) {
                    // A fresh socket each time: a new 5-tuple, so the full challenge every time.
                    let mut c = Client::new(addr)?;
                    match c.allocate() {
                        Ok(_) => {}
                        // coturn answers a retransmitted Allocate (its first answer took over
                        // 500 ms) with 437 instead of the cached success, and frees relay ports
                        // lazily (508 when they run out): failed attempts, counted.
                        Err(e) if ["437", "508"].iter().any(|c| e.to_string().contains(c)) => {
                            if std::env::var_os("BENCH_DEBUG").is_some() {
                                eprintln!("{e}");
                            }
                            failed.fetch_add(1, Ordering::Relaxed);
                            continue;
                        }
                        Err(e) => return Err(e.context("allocation rate")),
                    }
                    c.free()?;
                    done.fetch_add(1, Ordering::Relaxed);
                    recent.push_back(c);
                    if recent.len() > 512 {
                        recent.pop_front();
                    }
                }
                Ok(())
            })
        })
        .collect();
    for w in workers {
        w.join().map_err(|_| anyhow::anyhow!("worker panicked"))??;
    }
    sample.allocs_per_sec = done.load(Ordering::Relaxed) as f64 / t0.elapsed().as_secs_f64();
    sample.alloc_failures = failed.load(Ordering::Relaxed);
    // Let the server settle (coturn frees lazily) before the next phase.
    std::thread::sleep(Duration::from_secs(2));

    // Throughput ladder.
    for &allocs in &args.allocs {
        for &size in &args.sizes {
            let sink = Sink::start(base)?;
            let mut clients = Vec::new();
            for _ in 0..allocs {
                let mut c = Client::allocated(server.addr)?;
                set_buffers(&c.sock);
                c.bind_channel(0x4000, sink.addr)?;
                clients.push(c);
            }
            let mut frame = channel_data::header(0x4000, size).to_vec();
            frame.resize(4 + size, 0xAB);
            let to_server: Vec<(RawFd, SocketAddr)> = clients
                .iter()
                .map(|c| (c.sock.as_raw_fd(), server.addr))
                .collect();
            let client_fds: Vec<RawFd> = clients.iter().map(|c| c.sock.as_raw_fd()).collect();
            let to_relays = clients
                .iter()
                .map(|c| {
                    let relay = c.relay.context("client without relay")?;
                    Ok((sink.sock.as_raw_fd(), relay))
                })
                .collect::<anyhow::Result<Vec<(RawFd, SocketAddr)>>>()?;
            let lanes = Lanes {
                to_server: &to_server,
                frame: &frame,
                to_relays: &to_relays,
                datagram: &vec![0xCD; size],
                client_fds: &client_fds,
                sink: &sink,
            };
            for direction in [Direction::ToPeer, Direction::ToClient] {
                for &rate in &args.rates {
                    let duration = Duration::from_secs(args.seconds);
                    let (loss_percent, per_cpu_second) =
                        lanes.offer(direction, rate, duration, || cpu_seconds(server.pid))?;
                    sample.steps.push(Step {
                        direction,
                        allocs,
                        size,
                        offered_pps: rate,
                        loss_percent,
                        per_cpu_second,
                    });
                }
            }
            for c in &mut clients {
                let _ = c.free();
            }
            drop(sink.finish());
        }
    }

    (sample.added_p50_us, sample.added_p99_us) = added_latency(base, server.addr, 0x4002)?;
    if let Some(_awake) = AwakeCpus::hold().filter(|_| !args.awake) {
        let (p50, p99) = added_latency(base, server.addr, 0x4003)?;
        (sample.awake_p50_us, sample.awake_p99_us) = (Some(p50), Some(p99));
    }
    Ok(sample)
}

/// Added latency p50 and p99 (µs): 1,000 timestamped packets/s for 3 s through a fresh
/// allocation's `channel`, against the same straight to a sink.
fn added_latency(base: Instant, server: SocketAddr, channel: u16) -> anyhow::Result<(f64, f64)> {
    let mut c = Client::allocated(server)?;
    let direct = stamped_latency(base, &c.sock, None, &[])?;
    let s = Sink::start(base)?;
    c.bind_channel(channel, s.addr)?;
    let relayed = stamped_latency(
        base,
        &c.sock,
        Some((server, s)),
        &channel_data::header(channel, 100),
    )?;
    let _ = c.free();
    Ok((
        percentile_us(&relayed, 0.5) - percentile_us(&direct, 0.5),
        percentile_us(&relayed, 0.99) - percentile_us(&direct, 0.99),
    ))
}

/// One-way latencies (ns, sorted) of 3,000 stamped 100-byte payloads sent from `sock` at 1,000/s,
/// with `header` in front: to `via` (an intermediary that delivers to its sink), or straight to a
/// fresh sink when `via` is `None`.
pub(crate) fn stamped_latency(
    base: Instant,
    sock: &UdpSocket,
    via: Option<(SocketAddr, Sink)>,
    header: &[u8],
) -> anyhow::Result<Vec<u64>> {
    let (target, sink) = match via {
        Some((addr, sink)) => (addr, sink),
        None => {
            let sink = Sink::start(base)?;
            (sink.addr, sink)
        }
    };
    let start = Instant::now();
    for i in 0..3000u32 {
        let mut p = header.to_vec();
        p.push(0xEE);
        p.extend_from_slice(&(base.elapsed().as_nanos() as u64).to_be_bytes());
        p.resize(header.len() + 100, 0);
        sock.send_to(&p, target)?;
        let next = start + Duration::from_millis(u64::from(i));
        if let Some(wait) = next.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
    std::thread::sleep(Duration::from_millis(100));
    let (_, mut lat) = sink.finish();
    lat.sort_unstable();
    Ok(lat)
}

/// The `p` percentile of sorted nanoseconds, in microseconds.
pub(crate) fn percentile_us(v: &[u64], p: f64) -> f64 {
    v.get(((v.len() as f64 * p) as usize).min(v.len().saturating_sub(1)))
        .copied()
        .unwrap_or(0) as f64
        / 1000.0
}

/// Offers `rate` packets/s of `payload` for `duration`, spread over the `(socket, destination)`
/// lanes round robin, in 1 ms batches.
fn offer(lanes: &[(RawFd, SocketAddr)], payload: &[u8], rate: u64, duration: Duration) -> u64 {
    let start = Instant::now();
    let mut sent = 0u64;
    let mut next = 0usize;
    let mut tick = 0u64;
    while start.elapsed() < duration {
        tick += 1;
        let due = rate * tick / 1000;
        let batch = due.saturating_sub(sent) as usize;
        let mut remaining = batch;
        while remaining > 0 {
            let per = remaining.min((batch / lanes.len()).max(1)).min(64);
            let (fd, to) = lanes[next % lanes.len()];
            next += 1;
            let datagrams: Vec<(&[u8], SocketAddr)> = (0..per).map(|_| (payload, to)).collect();
            sent += batch::send(fd, &datagrams) as u64;
            remaining -= per;
        }
        if let Some(wait) =
            (start + Duration::from_millis(tick)).checked_duration_since(Instant::now())
        {
            std::thread::sleep(wait);
        }
    }
    sent
}

/// Counts the datagrams that arrive on any of `fds` (the clients' sockets) until `stop`.
fn count_arrivals(fds: &[RawFd], stop: &AtomicBool) -> anyhow::Result<u64> {
    let set = Epoll::new()?;
    for &fd in fds {
        set.add(fd)?;
    }
    let mut events = epoll::events();
    let mut buf = [0u8; 2048];
    let mut got = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let Ok(ready) = set.wait(&mut events, Duration::from_millis(50)) else {
            continue;
        };
        for fd in ready {
            // SAFETY: `fd` is a live client socket, `buf` is valid for its length; MSG_DONTWAIT
            // keeps the blocking sockets from blocking here.
            while unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT) }
                >= 0
            {
                got += 1;
            }
        }
    }
    Ok(got)
}
