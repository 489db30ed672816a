//! `huddle-bench media`: concurrent echo sessions (`video_transform: none`) at a fixed bitrate
//! through Huddle's media peer and, in the same run, through aiortc's server pattern
//! (bench/aiortc_server.py). Each session is a str0m peer in this process (DTLS-SRTP, real
//! H.264 from openh264 at `--bitrate`, 640×480, 30 fps) that POSTs `/offer` and counts the
//! frames that come back. The server runs pinned to `--server-cpus`; this program runs on the
//! others.
//!
//! Reported per session count: server CPU-seconds per session-second, frames returned, and
//! sessions per core (sessions ÷ server CPU share) where no frames were lost.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use huddle_media::MediaTime;
use str0m::change::SdpAnswer;
use str0m::media::{Direction, MediaKind};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, Input, Output, Rtc};
use tokio::net::UdpSocket;

use crate::median;
use crate::pinned::Pinned;
use crate::procstat::cpu_seconds;

#[derive(clap::Args)]
pub struct Args {
    /// The huddle binary (a release build).
    #[arg(long, default_value = "target/release/huddle")]
    huddle: PathBuf,
    /// A python with aiortc, aiohttp and opencv installed.
    #[arg(long, default_value = "target/bench-venv/bin/python")]
    python: PathBuf,
    /// The aiortc server script.
    #[arg(long, default_value = "bench/aiortc_server.py")]
    script: PathBuf,
    /// Alternating runs per server; medians are reported.
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Concurrent sessions against Huddle (comma-separated: one measurement each).
    #[arg(long, value_delimiter = ',', default_value = "50,100,200")]
    sessions: Vec<usize>,
    /// Concurrent sessions against aiortc (it decodes and re-encodes every frame).
    #[arg(long, default_value_t = 2)]
    aiortc_sessions: usize,
    /// Video bitrate each session sends, bits per second.
    #[arg(long, default_value_t = 1_000_000)]
    bitrate: u32,
    /// Measurement window, after a warm-up.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// CPU list (taskset) for the server.
    #[arg(long, default_value = "0")]
    server_cpus: String,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Huddle,
    Aiortc,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Huddle => "Huddle",
            Kind::Aiortc => "aiortc",
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Sample {
    sessions: usize,
    /// Server CPU-seconds per second of wall time.
    cpu_share: f64,
    /// Frames returned ÷ frames sent in the window.
    returned: f64,
    /// The load generator's own CPU share (near 1.0 means it, not the server, was the limit).
    generator_share: f64,
}

impl Sample {
    fn cpu_per_session(&self) -> f64 {
        self.cpu_share / self.sessions as f64
    }
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let frames = Arc::new(crate::source::h264(640, 480, args.bitrate)?);
    let avg = frames.iter().map(Vec::len).sum::<usize>() as f64 / frames.len() as f64;
    eprintln!(
        "source: {} H.264 frames, 640x480 at 30 fps, {:.0} kbit/s average ({})",
        frames.len(),
        avg * 8.0 * 30.0 / 1000.0,
        huddle_media::codec::BUILD
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut results: Vec<(Kind, Sample)> = Vec::new();
    for run in 0..args.runs {
        let order = crate::alternate(run, [Kind::Huddle, Kind::Aiortc]);
        for kind in order {
            let counts: Vec<usize> = match kind {
                Kind::Huddle => args.sessions.clone(),
                Kind::Aiortc => vec![args.aiortc_sessions],
            };
            for n in counts {
                let server = Server::start(kind, &args)?;
                let sample = rt.block_on(measure(&server, n, frames.clone(), &args));
                drop(server);
                let sample = sample
                    .with_context(|| format!("{} run {run} with {n} sessions", kind.name()))?;
                eprintln!(
                    "run {run} {:>6} {:>4} sessions: server {:>5.1} % CPU, {:.4} CPU-s per session-s, {:.2} % frames back, generator {:.0} % CPU",
                    kind.name(),
                    n,
                    sample.cpu_share * 100.0,
                    sample.cpu_per_session(),
                    sample.returned * 100.0,
                    sample.generator_share * 100.0
                );
                results.push((kind, sample));
            }
        }
    }
    report(&results, &args);
    Ok(())
}

fn report(results: &[(Kind, Sample)], args: &Args) {
    let of = |kind: Kind, n: usize, f: &dyn Fn(&Sample) -> f64| {
        median(
            results
                .iter()
                .filter(|(k, s)| *k == kind && s.sessions == n)
                .map(|(_, s)| f(s))
                .collect(),
        )
    };
    println!(
        "| {} runs, medians, {} kbit/s per session | server CPU | CPU-s per session-s | frames back | sessions per core |",
        args.runs,
        args.bitrate / 1000
    );
    println!("|---|---|---|---|---|");
    let mut rows: Vec<(Kind, usize)> = args.sessions.iter().map(|n| (Kind::Huddle, *n)).collect();
    rows.push((Kind::Aiortc, args.aiortc_sessions));
    for (kind, n) in &rows {
        let share = of(*kind, *n, &|s| s.cpu_share);
        println!(
            "| {} `none`, {n} sessions | {:.1} % | {:.4} | {:.2} % | {:.0} |",
            kind.name(),
            share * 100.0,
            of(*kind, *n, &|s| s.cpu_per_session()),
            of(*kind, *n, &|s| s.returned) * 100.0,
            *n as f64 / share
        );
    }
    let aiortc = of(Kind::Aiortc, args.aiortc_sessions, &|s| s.cpu_per_session());
    for n in &args.sessions {
        let huddle = of(Kind::Huddle, *n, &|s| s.cpu_per_session());
        println!(
            "| CPU per session, aiortc ÷ Huddle at {n} sessions | | {:.1}× | | |",
            aiortc / huddle
        );
    }
}

struct Server {
    process: Pinned,
    http: SocketAddr,
}

impl Server {
    fn start(kind: Kind, args: &Args) -> anyhow::Result<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let http: SocketAddr = ([127, 0, 0, 1], port).into();
        let process = match kind {
            Kind::Huddle => Pinned::start(
                None,
                kind.name(),
                &args.server_cpus,
                &args.huddle,
                http,
                |cmd| {
                    cmd.args(["serve", "--no-tls", "--no-turn", "--listen"])
                        .arg(http.to_string())
                        .env("RUST_LOG", "warn");
                },
            )?,
            Kind::Aiortc => Pinned::start(
                None,
                kind.name(),
                &args.server_cpus,
                &args.python,
                http,
                |cmd| {
                    cmd.arg(&args.script).arg(port.to_string());
                },
            )?,
        };
        Ok(Self { process, http })
    }
}

#[derive(Default)]
struct Counters {
    connected: AtomicUsize,
    failed: AtomicUsize,
    sent: AtomicU64,
    received: AtomicU64,
}

async fn measure(
    server: &Server,
    n: usize,
    frames: Arc<Vec<Vec<u8>>>,
    args: &Args,
) -> anyhow::Result<Sample> {
    let counters = Arc::new(Counters::default());
    let stop = Arc::new(tokio::sync::Notify::new());
    let local = tokio::task::LocalSet::new();
    let http = server.http;
    let result = local
        .run_until(async {
            for i in 0..n {
                let (counters, frames, stop) = (counters.clone(), frames.clone(), stop.clone());
                tokio::task::spawn_local(async move {
                    if let Err(e) = session(http, frames, counters.clone(), stop, i).await {
                        counters.failed.fetch_add(1, Ordering::Relaxed);
                        eprintln!("session {i}: {e:#}");
                    }
                });
                // Offers one after another, as browsers arriving.
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            let deadline = Instant::now() + Duration::from_secs(30);
            while counters.connected.load(Ordering::Relaxed)
                + counters.failed.load(Ordering::Relaxed)
                < n
            {
                if Instant::now() > deadline {
                    bail!(
                        "only {} of {n} sessions connected",
                        counters.connected.load(Ordering::Relaxed)
                    );
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            if counters.failed.load(Ordering::Relaxed) > 0 {
                bail!(
                    "{} sessions failed",
                    counters.failed.load(Ordering::Relaxed)
                );
            }
            tokio::time::sleep(Duration::from_secs(3)).await;
            let (cpu0, me0, t0) = (
                cpu_seconds(server.process.pid),
                cpu_seconds(std::process::id()),
                Instant::now(),
            );
            let (sent0, recv0) = (
                counters.sent.load(Ordering::Relaxed),
                counters.received.load(Ordering::Relaxed),
            );
            tokio::time::sleep(Duration::from_secs(args.seconds)).await;
            let wall = t0.elapsed().as_secs_f64();
            let cpu = cpu_seconds(server.process.pid) - cpu0;
            let me = cpu_seconds(std::process::id()) - me0;
            let sent = counters.sent.load(Ordering::Relaxed) - sent0;
            let received = counters.received.load(Ordering::Relaxed) - recv0;
            stop.notify_waiters();
            Ok(Sample {
                sessions: n,
                cpu_share: cpu / wall,
                returned: received as f64 / sent.max(1) as f64,
                generator_share: me / wall,
            })
        })
        .await;
    stop.notify_waiters();
    result
}

/// One echo session: offer, then send the source at 30 fps and count what comes back.
async fn session(
    http: SocketAddr,
    frames: Arc<Vec<Vec<u8>>>,
    counters: Arc<Counters>,
    stop: Arc<tokio::sync::Notify>,
    index: usize,
) -> anyhow::Result<()> {
    let socket = UdpSocket::bind("127.0.0.1:0").await?;
    let local = socket.local_addr()?;
    let now = Instant::now();
    let mut rtc = Rtc::builder().clear_codecs().enable_h264(true).build(now);
    rtc.add_local_candidate(Candidate::host(local, "udp")?);
    let mut change = rtc.sdp_api();
    let mid = change.add_media(MediaKind::Video, Direction::SendRecv, None, None, None);
    let (offer, pending) = change.apply().context("offer")?;
    let body = serde_json::json!({ "sdp": offer.to_sdp_string(), "type": "offer", "video_transform": "none" });
    let answer = post_json(http, "/offer", &body.to_string()).await?;
    let answer: serde_json::Value = serde_json::from_str(&answer).context("answer JSON")?;
    let sdp = answer["sdp"].as_str().context("answer without sdp")?;
    rtc.sdp_api()
        .accept_answer(pending, SdpAnswer::from_sdp_string(sdp)?)?;

    let mut buf = vec![0u8; 2048];
    let mut connected = false;
    let mut next_frame = Instant::now();
    // Sessions start at different points of the loop, as different cameras would.
    let mut frame_no = (index * 7) % frames.len() / 60 * 60;
    let mut sent_frames = 0u64;
    let stopped = stop.notified();
    tokio::pin!(stopped);
    loop {
        let timeout = loop {
            match rtc.poll_output()? {
                Output::Timeout(t) => break t,
                Output::Transmit(t) => {
                    let _ = socket.send_to(&t.contents, t.destination).await;
                }
                Output::Event(Event::Connected) => {
                    connected = true;
                    counters.connected.fetch_add(1, Ordering::Relaxed);
                }
                Output::Event(Event::MediaData(_)) => {
                    counters.received.fetch_add(1, Ordering::Relaxed);
                }
                Output::Event(_) => {}
            }
        };
        let wake = if connected {
            timeout.min(next_frame)
        } else {
            timeout
        };
        tokio::select! {
            _ = &mut stopped => return Ok(()),
            r = socket.recv_from(&mut buf) => {
                let (n, source) = r?;
                let input = Input::Receive(Instant::now(), Receive::new(Protocol::Udp, source, local, &buf[..n])?);
                rtc.handle_input(input)?;
            }
            () = tokio::time::sleep_until(wake.into()) => {
                let now = Instant::now();
                if connected && now >= next_frame {
                    let writer = rtc.writer(mid).context("writer")?;
                    let pt = writer.payload_params().next().context("no payload type")?.pt();
                    let time = MediaTime::from_90khz(sent_frames * 3000);
                    writer.write(pt, now, time, frames[frame_no].clone())?;
                    frame_no = (frame_no + 1) % frames.len();
                    sent_frames += 1;
                    counters.sent.fetch_add(1, Ordering::Relaxed);
                    next_frame += Duration::from_micros(33_333);
                } else {
                    rtc.handle_input(Input::Timeout(now))?;
                }
            }
        }
    }
}

/// POSTs JSON over HTTP/1.1 and returns the body of a 200 response.
async fn post_json(addr: SocketAddr, path: &str, body: &str) -> anyhow::Result<String> {
    let json = [("Content-Type", "application/json")];
    let (status, body) = crate::http1::request(addr, "POST", path, &json, body.as_bytes()).await?;
    if status != 200 {
        bail!("{status}: {body}");
    }
    Ok(body)
}
