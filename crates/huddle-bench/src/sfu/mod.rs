//! `huddle-bench sfu`: rooms of simulated participants through Huddle's SFU and, in the same
//! run, through Janus's VideoRoom. Each participant is a pair of str0m peers in this process
//! that publishes real H.264 in three simulcast layers (320×180, 640×360, 1280×720 at 30 fps,
//! about 0.15, 0.5 and 1.5 Mbit/s) plus Opus with audio levels, and receives the cameras of
//! the others it shows (`--watch`) at the tile size `--layer` names. The server runs pinned to
//! `--server-cpus`; this program runs on the others.
//!
//! Reported per room size: server CPU per forwarded video stream-second, the streams a core
//! forwards at that cost, frames delivered (loss), latency p50/p99 to the kernel's arrival stamp
//! of a frame's last packet at the receiving socket — from the frame's writing, and from the
//! moment its last packet left the publisher's socket (what the server adds, without the
//! publisher's own sending of a keyframe's dozens of packets); both clocks in this process —
//! and server RSS per participant.

mod arrival;
mod huddle;
mod janus;
mod participant;

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use participant::{Counters, Role, Source};
use tokio::sync::mpsc;

use crate::median;
use crate::pinned::Pinned;
use crate::procstat::{cpu_seconds, named_threads_cpu_seconds, rss_bytes};

#[derive(clap::Args)]
pub struct Args {
    /// The huddle binary (a release build).
    #[arg(long, default_value = "target/release/huddle")]
    huddle: PathBuf,
    /// Janus's binary (Debian's `janus` package).
    #[arg(long, default_value = "/usr/bin/janus")]
    janus: PathBuf,
    /// Which servers to run, alternating.
    #[arg(long, value_delimiter = ',', default_value = "huddle,janus")]
    servers: Vec<ServerKind>,
    /// Alternating runs per server and room size; medians are reported.
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Participants per room (comma-separated: one measurement each).
    #[arg(long, value_delimiter = ',', default_value = "4,10,25")]
    rooms: Vec<usize>,
    /// Cameras each participant shows (at most the others in the room).
    #[arg(long, default_value_t = 25)]
    watch: usize,
    /// The simulcast layer each shown tile needs: q (320×180), h (640×360) or f (1280×720).
    #[arg(long, default_value = "h")]
    layer: String,
    /// Measurement window, after every stream flows and a settling time.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// The address servers and participants use. Janus gathers no candidates on a loopback
    /// interface: scripts/bench runs this in a namespace of its own with a veth address.
    #[arg(long, default_value = "127.0.0.1")]
    host: IpAddr,
    /// The participants' address, when it is not `--host`: `scripts/bench sfu-apart` runs the
    /// servers in a namespace of their own, so that each side's kernel receives its own
    /// datagrams on its own CPU, as on two machines (see docs/benchmarks.md).
    #[arg(long)]
    bind: Option<IpAddr>,
    /// The network namespace (`ip netns`) to run the server in; `--host` is its address.
    #[arg(long)]
    server_netns: Option<String>,
    /// CPU list (taskset) for the server.
    #[arg(long, default_value = "0")]
    server_cpus: String,
    /// Rooms of each size at once, each its own name: with `--server-cpus` naming two CPUs,
    /// Huddle has a media worker on each and a room lives on one of them (what the second core
    /// gains).
    #[arg(long, default_value_t = 1)]
    copies: usize,
}

impl Args {
    /// The address the participants' sockets are bound to.
    fn participants(&self) -> IpAddr {
        self.bind.unwrap_or(self.host)
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug, clap::ValueEnum)]
pub enum ServerKind {
    Huddle,
    Janus,
}

impl ServerKind {
    fn name(self) -> &'static str {
        match self {
            ServerKind::Huddle => "Huddle",
            ServerKind::Janus => "Janus",
        }
    }
}

/// How a participant shows the others: how many tiles, how big, which layer that is.
#[derive(Clone, Copy)]
pub struct View {
    pub watch: usize,
    pub width: u32,
    pub height: u32,
    /// The simulcast layer (0 smallest) that fills such a tile: Janus is told it directly.
    pub layer: u8,
}

/// Each layer's size and the bitrate it is encoded at.
const LAYERS: [(usize, usize, u32); 3] = [
    (320, 180, 150_000),
    (640, 360, 500_000),
    (1280, 720, 1_500_000),
];

#[derive(Clone, Debug)]
struct Sample {
    /// Participants per room.
    participants: usize,
    /// Video streams subscribers receive (participants × cameras each shows).
    streams: usize,
    /// Server CPU-seconds per second of wall time.
    cpu_share: f64,
    /// Video frames delivered ÷ frames the streams carry at 30 fps.
    delivered: f64,
    /// Camera frames the publishers sent ÷ 30 fps each: below 100 % the generator fell behind,
    /// and frames delivered falls with it.
    sent: f64,
    /// Video bits forwarded per second.
    bps: f64,
    audio_pps: f64,
    p50_ms: f64,
    p99_ms: f64,
    /// p99 of the frames other than keyframes.
    p99_delta_ms: f64,
    /// From the moment a frame's last packet left its publisher.
    p50_forward_ms: f64,
    p99_forward_ms: f64,
    rss_per_participant: f64,
    generator_share: f64,
    /// Each of Huddle's media workers' CPU-seconds per second of wall time (none for Janus).
    workers: Vec<f64>,
}

impl Sample {
    fn cpu_per_stream(&self) -> f64 {
        self.cpu_share / self.streams as f64
    }
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let layer = match args.layer.as_str() {
        "q" => 0u8,
        "h" => 1,
        "f" => 2,
        other => bail!("--layer {other}: q, h or f"),
    };
    let mut layers = Vec::new();
    for (w, h, bps) in LAYERS {
        layers.push(crate::source::h264(w, h, bps)?);
    }
    let layers: [Vec<Vec<u8>>; 3] = layers.try_into().expect("three layers");
    for (frames, (w, h, _)) in layers.iter().zip(LAYERS) {
        let avg = frames.iter().map(Vec::len).sum::<usize>() as f64 / frames.len() as f64;
        eprintln!(
            "source: {w}x{h}, {} frames, {:.0} kbit/s",
            frames.len(),
            avg * 8.0 * 30.0 / 1000.0
        );
    }
    let source = Arc::new(Source::new(layers));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut results: Vec<(ServerKind, Sample)> = Vec::new();
    for run in 0..args.runs {
        for &n in &args.rooms {
            let mut order = args.servers.clone();
            if run % 2 == 1 {
                order.reverse();
            }
            for kind in order {
                let (w, h, _) = LAYERS[usize::from(layer)];
                let view = View {
                    watch: args.watch.min(n - 1),
                    width: w as u32,
                    height: h as u32,
                    layer,
                };
                let server = Server::start(kind, &args, run)?;
                let sample = rt
                    .block_on(measure(&server, n, view, source.clone(), &args))
                    .with_context(|| format!("{} run {run}, room of {n}", kind.name()))?;
                drop(server);
                let workers: Vec<String> = sample
                    .workers
                    .iter()
                    .map(|w| format!("{:.0} %", w * 100.0))
                    .collect();
                eprintln!(
                    "run {run} {:>6} {}: {} streams, server {:.1} % CPU, {:.2} µs CPU per stream-s, {:.2} % frames, {:.1} Mbit/s, {:.0} audio packets/s, p50 {:.2} ms p99 {:.2} ms ({:.2} ms without keyframes), after the frame left p50 {:.2} ms p99 {:.2} ms, {:.1} MB RSS per participant, generator {:.0} % CPU, {:.1} % of frames sent{}",
                    kind.name(),
                    rooms_label(n, args.copies),
                    sample.streams,
                    sample.cpu_share * 100.0,
                    sample.cpu_per_stream() * 1e6,
                    sample.delivered * 100.0,
                    sample.bps / 1e6,
                    sample.audio_pps,
                    sample.p50_ms,
                    sample.p99_ms,
                    sample.p99_delta_ms,
                    sample.p50_forward_ms,
                    sample.p99_forward_ms,
                    sample.rss_per_participant / 1e6,
                    sample.generator_share * 100.0,
                    sample.sent * 100.0,
                    if workers.is_empty() {
                        String::new()
                    } else {
                        format!(", media workers {}", workers.join(" / "))
                    }
                );
                results.push((kind, sample));
            }
        }
    }
    report(&results, &args);
    Ok(())
}

/// The `p` quantile of sorted microseconds, in milliseconds (0 with none).
fn percentile_ms(sorted_us: &[u32], p: f64) -> f64 {
    let i = ((sorted_us.len() as f64 * p) as usize).min(sorted_us.len().saturating_sub(1));
    sorted_us.get(i).map_or(0.0, |&us| f64::from(us) / 1000.0)
}

fn report(results: &[(ServerKind, Sample)], args: &Args) {
    let of = |kind: ServerKind, n: usize, f: &dyn Fn(&Sample) -> f64| {
        median(
            results
                .iter()
                .filter(|(k, s)| *k == kind && s.participants == n)
                .map(|(_, s)| f(s))
                .collect(),
        )
    };
    println!(
        "| {} runs, medians, layer {} | streams | server CPU | µs CPU per stream-s | streams per core | frames delivered | Mbit/s out | p50 / p99 ms (p99 without keyframes) | after the frame left: p50 / p99 ms | RSS per participant |",
        args.runs, args.layer
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for &n in &args.rooms {
        for &kind in &args.servers {
            let share = of(kind, n, &|s| s.cpu_share);
            let streams = of(kind, n, &|s| s.streams as f64);
            println!(
                "| {} {} | {streams:.0} | {:.1} % | {:.2} | {:.0} | {:.2} % | {:.1} | {:.2} / {:.2} ({:.2}) | {:.2} / {:.2} | {:.1} MB |",
                kind.name(),
                rooms_label(n, args.copies),
                share * 100.0,
                of(kind, n, &|s| s.cpu_per_stream()) * 1e6,
                streams / share,
                of(kind, n, &|s| s.delivered) * 100.0,
                of(kind, n, &|s| s.bps) / 1e6,
                of(kind, n, &|s| s.p50_ms),
                of(kind, n, &|s| s.p99_ms),
                of(kind, n, &|s| s.p99_delta_ms),
                of(kind, n, &|s| s.p50_forward_ms),
                of(kind, n, &|s| s.p99_forward_ms),
                of(kind, n, &|s| s.rss_per_participant) / 1e6,
            );
        }
        if args.servers.len() == 2 {
            let cost = |k| of(k, n, &|s| s.cpu_per_stream());
            println!(
                "| {}: CPU per stream, Janus ÷ Huddle | | | {:.1}× | | | | | | |",
                rooms_label(n, args.copies),
                cost(ServerKind::Janus) / cost(ServerKind::Huddle)
            );
        }
    }
}

/// The name of room `copy` (< `copies`): the first `bench-N` that Huddle places on media
/// worker `copy` of `copies`, so that with as many workers as copies each room has its own.
fn room_name(copy: usize, copies: usize) -> String {
    (0..)
        .map(|i| format!("bench-{i}"))
        .find(|name| huddle_server::room_worker(name, copies) == copy)
        .expect("some name hashes to each worker")
}

/// "room of 16", or "2 rooms of 16" with `--copies 2`.
fn rooms_label(n: usize, copies: usize) -> String {
    match copies {
        1 => format!("room of {n}"),
        k => format!("{k} rooms of {n}"),
    }
}

struct Server {
    kind: ServerKind,
    process: Pinned,
    http: SocketAddr,
    /// Configuration and data; removed with the server.
    dir: PathBuf,
}

impl Server {
    fn start(kind: ServerKind, args: &Args, run: usize) -> anyhow::Result<Self> {
        // A free port here is taken as free in the server's namespace too (nothing else runs
        // there).
        let port = std::net::TcpListener::bind((args.participants(), 0))?
            .local_addr()?
            .port();
        let http = SocketAddr::new(args.host, port);
        let dir =
            std::env::temp_dir().join(format!("huddle-bench-sfu-{}-{run}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let (netns, cpus) = (args.server_netns.as_deref(), &args.server_cpus);
        let process = match kind {
            ServerKind::Huddle => {
                Pinned::start(netns, kind.name(), cpus, &args.huddle, http, |cmd| {
                    cmd.args(["serve", "--no-tls", "--no-turn", "--room-mode", "sfu"])
                        .arg("--media-listen")
                        .arg(SocketAddr::new(args.host, 0).to_string())
                        // One address is every participant here: lift the per-client caps.
                        .args(["--media-max-sessions", "1000"])
                        .args(["--media-sessions-per-client", "1000"])
                        .args(["--connections-per-ip", "1000"])
                        .args(["--websockets-per-ip", "1000"])
                        .arg("--listen")
                        .arg(http.to_string())
                        .arg("--data-dir")
                        .arg(&dir)
                        .env("RUST_LOG", "warn");
                })?
            }
            ServerKind::Janus => {
                let config = janus::configure(&dir, http)?;
                Pinned::start(netns, kind.name(), cpus, &args.janus, http, |cmd| {
                    cmd.arg("-C").arg(&config).arg("-F").arg(&dir);
                })?
            }
        };
        Ok(Self {
            kind,
            process,
            http,
            dir,
        })
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn measure(
    server: &Server,
    n: usize,
    view: View,
    source: Arc<Source>,
    args: &Args,
) -> anyhow::Result<Sample> {
    let counters = Arc::new(Counters::default());
    let stop = Arc::new(tokio::sync::Notify::new());
    let rss0 = rss_bytes(server.process.pid);
    let local = tokio::task::LocalSet::new();
    let (http, kind) = (server.http, server.kind);
    const ROOM: u64 = 1234;
    let copies = args.copies.max(1);
    if kind == ServerKind::Janus {
        for copy in 0..copies {
            janus::create_room(http, ROOM + copy as u64, n).await?;
        }
    }
    let streams = copies * n * view.watch;
    local
        .run_until(async {
            // Rooms fill side by side, a participant of each in turn.
            for (index, copy) in (0..n).flat_map(|i| (0..copies).map(move |c| (i, c))) {
                let (to_media, signals) = mpsc::unbounded_channel();
                let (replies, from_media) = mpsc::unbounded_channel();
                // Three speak; the others listen (the loudest-speaker rule has its case).
                let role = Role {
                    index: copy * n + index,
                    host: args.participants(),
                    speaking: index < 3,
                };
                let (c, s) = (counters.clone(), stop.clone());
                let media = participant::run(role, source.clone(), c, signals, replies, s);
                let c = counters.clone();
                tokio::task::spawn_local(async move {
                    if let Err(e) = media.await {
                        c.failed.fetch_add(1, Ordering::Relaxed);
                        eprintln!("participant {index} media: {e:#}");
                    }
                });
                let c = counters.clone();
                tokio::task::spawn_local(async move {
                    let r = match kind {
                        ServerKind::Huddle => {
                            let room = room_name(copy, copies);
                            huddle::signal(http, &room, index, view, to_media, from_media).await
                        }
                        ServerKind::Janus => {
                            janus::signal(
                                http,
                                ROOM + copy as u64,
                                index,
                                n,
                                view,
                                c.clone(),
                                to_media,
                                from_media,
                            )
                            .await
                        }
                    };
                    if let Err(e) = r {
                        c.failed.fetch_add(1, Ordering::Relaxed);
                        eprintln!("participant {index} signaling: {e:#}");
                    }
                });
                // Participants arrive one after another, as people do.
                tokio::time::sleep(Duration::from_millis(20 / copies as u64)).await;
            }
            let deadline = Instant::now() + Duration::from_secs(60);
            while counters.streams_flowing.load(Ordering::Relaxed) < streams {
                if counters.failed.load(Ordering::Relaxed) > 0 {
                    bail!(
                        "{} participants failed",
                        counters.failed.load(Ordering::Relaxed)
                    );
                }
                if Instant::now() > deadline {
                    bail!(
                        "only {} of {streams} streams flowing ({} publishing)",
                        counters.streams_flowing.load(Ordering::Relaxed),
                        counters.publishing.load(Ordering::Relaxed)
                    );
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            // Estimates settle and layers switch up before the window.
            tokio::time::sleep(Duration::from_secs(3)).await;
            let (cpu0, me0, t0) = (
                cpu_seconds(server.process.pid),
                cpu_seconds(std::process::id()),
                Instant::now(),
            );
            let workers0 = named_threads_cpu_seconds(server.process.pid, "media-");
            counters.measuring.store(true, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_secs(args.seconds)).await;
            counters.measuring.store(false, Ordering::Relaxed);
            let wall = t0.elapsed().as_secs_f64();
            let cpu = cpu_seconds(server.process.pid) - cpu0;
            let me = cpu_seconds(std::process::id()) - me0;
            let workers = named_threads_cpu_seconds(server.process.pid, "media-")
                .into_iter()
                .map(|(name, s)| {
                    let before = workers0
                        .iter()
                        .find(|(n, _)| *n == name)
                        .map_or(0.0, |w| w.1);
                    (s - before) / wall
                })
                .collect();
            let rss = rss_bytes(server.process.pid);
            stop.notify_waiters();
            let frames = counters.video_frames.load(Ordering::Relaxed) as f64;
            let taken = |l: &std::sync::Mutex<Vec<u32>>| {
                let mut l = std::mem::take(&mut *l.lock().expect("no panics under it"));
                l.sort_unstable();
                l
            };
            let latency = taken(&counters.latency_us);
            let delta_latency = taken(&counters.delta_latency_us);
            let forward_latency = taken(&counters.forward_latency_us);
            Ok(Sample {
                participants: n,
                streams,
                cpu_share: cpu / wall,
                delivered: frames / (streams as f64 * 30.0 * wall),
                sent: counters.video_frames_sent.load(Ordering::Relaxed) as f64
                    / ((copies * n) as f64 * 30.0 * wall),
                bps: counters.video_bytes.load(Ordering::Relaxed) as f64 * 8.0 / wall,
                audio_pps: counters.audio_packets.load(Ordering::Relaxed) as f64 / wall,
                p50_ms: percentile_ms(&latency, 0.5),
                p99_ms: percentile_ms(&latency, 0.99),
                p99_delta_ms: percentile_ms(&delta_latency, 0.99),
                p50_forward_ms: percentile_ms(&forward_latency, 0.5),
                p99_forward_ms: percentile_ms(&forward_latency, 0.99),
                rss_per_participant: rss.saturating_sub(rss0) as f64 / (copies * n) as f64,
                generator_share: me / wall,
                workers,
            })
        })
        .await
}
