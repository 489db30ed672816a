//! `huddle-bench floor`: what a relay cannot do better than on this machine.
//!
//! - Latency: a bare UDP forwarder thread (blocking receive, strip a 4-byte header, send on)
//!   pinned to the server's CPU, measured exactly like `huddle-bench turn`'s added latency. What
//!   remains above it in a TURN server's figure is the server's own doing; the floor itself is
//!   the kernel's and the hypervisor's cost of waking an idle CPU, twice (server, then the
//!   receiver) — measured again with CPUs kept awake ([`crate::awake`]) when this machine allows
//!   it.
//! - Throughput: a bare batched forwarder thread on the server's CPU, driven by `huddle-bench
//!   turn`'s load generator with the same lanes (N client sockets, one peer socket, both ways).
//!   It waits in `poll`, takes up to 32 datagrams per `recvmmsg` on its one socket and sends
//!   each on with one `sendmmsg` per batch, one message per datagram (no GSO: a TURN relay's
//!   datagrams leave from each allocation's own socket), doing nothing else per packet. Its
//!   relayed packets per CPU-second bound every relay here from above: a TURN relay also has a
//!   socket per allocation to receive from and send on, and protocol work.

use std::net::{SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::thread::JoinHandleExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::awake::AwakeCpus;
use crate::median;
use crate::turn::{Direction, Lanes, Sink, percentile_us, set_buffers, stamped_latency};
use huddle_server::udp::batch::{self, RecvBatch};

#[derive(clap::Args)]
pub struct Args {
    /// The CPU the forwarder runs on (the one the servers get in the other benchmarks).
    #[arg(long, default_value_t = 0)]
    cpu: usize,
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Offered rates (packets/s) of the throughput ladder (as `huddle-bench turn --rates`).
    #[arg(long, value_delimiter = ',', default_value = "20000,100000")]
    rates: Vec<u64>,
    /// Seconds per throughput step.
    #[arg(long, default_value_t = 2)]
    seconds: u64,
    /// Client socket counts ("allocations") of the throughput ladder.
    #[arg(long, value_delimiter = ',', default_value = "1,1000")]
    allocs: Vec<usize>,
    /// Packet sizes (bytes) of the throughput ladder.
    #[arg(long, value_delimiter = ',', default_value = "200,1200")]
    sizes: Vec<usize>,
    /// Keep CPUs awake for the throughput ladder too (as `huddle-bench turn --awake`).
    #[arg(long)]
    awake: bool,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    measure(&args, "bare UDP forwarder (floor)")?;
    if let Some(_awake) = AwakeCpus::hold() {
        measure(
            &args,
            "bare UDP forwarder (floor), CPUs kept awake (PM QoS 0 µs)",
        )?;
    }
    let _awake = args.awake.then(AwakeCpus::hold).flatten();
    throughput(&args)
}

/// The throughput ladder through [`BatchForwarder`]: medians of `runs`.
fn throughput(args: &Args) -> anyhow::Result<()> {
    let base = Instant::now();
    println!(
        "| bare batched forwarder (floor), median of {} | loss % / relayed pkts per CPU-s |",
        args.runs
    );
    println!("|---|---:|");
    for &allocs in &args.allocs {
        for &size in &args.sizes {
            for direction in [Direction::ToPeer, Direction::ToClient] {
                for &rate in &args.rates {
                    let mut loss = Vec::new();
                    let mut per_cpu = Vec::new();
                    for _ in 0..args.runs {
                        let (l, p) = throughput_step(args, base, allocs, size, direction, rate)?;
                        loss.push(l);
                        per_cpu.push(p);
                    }
                    println!(
                        "| {} · {allocs} alloc · {size} B · {rate} pps offered | {:.2} / {:.0} |",
                        direction.name(),
                        median(loss),
                        median(per_cpu),
                    );
                }
            }
        }
    }
    Ok(())
}

fn throughput_step(
    args: &Args,
    base: Instant,
    allocs: usize,
    size: usize,
    direction: Direction,
    rate: u64,
) -> anyhow::Result<(f64, f64)> {
    let sink = Sink::start(base)?;
    let clients = (0..allocs)
        .map(|_| {
            let c = UdpSocket::bind("127.0.0.1:0")?;
            set_buffers(&c);
            c.set_nonblocking(true)?;
            Ok(c)
        })
        .collect::<anyhow::Result<Vec<UdpSocket>>>()?;
    let targets = match direction {
        Direction::ToPeer => vec![sink.addr],
        Direction::ToClient => clients
            .iter()
            .map(UdpSocket::local_addr)
            .collect::<std::io::Result<_>>()?,
    };
    let forwarder = BatchForwarder::start(args.cpu, targets)?;
    let to_server: Vec<(RawFd, SocketAddr)> = clients
        .iter()
        .map(|c| (c.as_raw_fd(), forwarder.addr))
        .collect();
    let to_relays = vec![(sink.sock.as_raw_fd(), forwarder.addr); allocs];
    let client_fds: Vec<RawFd> = clients.iter().map(AsRawFd::as_raw_fd).collect();
    let payload = vec![0xCD; size];
    let lanes = Lanes {
        to_server: &to_server,
        frame: &payload,
        to_relays: &to_relays,
        datagram: &payload,
        client_fds: &client_fds,
        sink: &sink,
    };
    let result = lanes.offer(direction, rate, Duration::from_secs(args.seconds), || {
        forwarder.cpu_seconds()
    });
    drop(forwarder);
    drop(sink.finish());
    result
}

fn measure(args: &Args, name: &str) -> anyhow::Result<()> {
    let mut p50 = Vec::new();
    let mut p99 = Vec::new();
    for run in 0..args.runs {
        let base = Instant::now();
        let client = UdpSocket::bind("127.0.0.1:0")?;
        let direct = stamped_latency(base, &client, None, &[])?;
        let sink = Sink::start(base)?;
        let forwarder = Forwarder::start(args.cpu, sink.addr)?;
        let via = stamped_latency(base, &client, Some((forwarder.addr, sink)), &[0; 4])?;
        drop(forwarder);
        let (a, b) = (
            percentile_us(&via, 0.5) - percentile_us(&direct, 0.5),
            percentile_us(&via, 0.99) - percentile_us(&direct, 0.99),
        );
        eprintln!(
            "run {run}: {name} on CPU {}: added p50 {a:.1} µs p99 {b:.1} µs",
            args.cpu
        );
        p50.push(a);
        p99.push(b);
    }
    println!(
        "| {name}, added latency p50 / p99 (µs) | {:.1} / {:.1} |",
        median(p50),
        median(p99)
    );
    Ok(())
}

struct Forwarder {
    addr: std::net::SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Forwarder {
    fn start(cpu: usize, to: std::net::SocketAddr) -> anyhow::Result<Self> {
        let sock = UdpSocket::bind("127.0.0.1:0")?;
        sock.set_read_timeout(Some(Duration::from_millis(50)))?;
        let addr = sock.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let thread = std::thread::spawn(move || {
            pin_to(cpu);
            let mut buf = [0u8; 2048];
            while !s.load(Ordering::Relaxed) {
                if let Ok(n) = sock.recv(&mut buf)
                    && n > 4
                {
                    let _ = sock.send_to(&buf[4..n], to);
                }
            }
        });
        Ok(Self {
            addr,
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn pin_to(cpu: usize) {
    // SAFETY: cpu_set_t is plain data; CPU_SET writes within it; sched_setaffinity(0, …) pins the
    // calling thread only.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

/// The throughput floor's forwarder: see the module docs. Datagrams go to `targets` round robin
/// (one target: all to the peer; one per client: each to the next client, as a relay's
/// datagrams go to different clients).
struct BatchForwarder {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// The thread's CPU-time clock.
    clock: libc::clockid_t,
}

impl BatchForwarder {
    fn start(cpu: usize, targets: Vec<SocketAddr>) -> anyhow::Result<Self> {
        let sock = UdpSocket::bind("127.0.0.1:0")?;
        set_buffers(&sock);
        sock.set_nonblocking(true)?;
        let addr = sock.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let thread = std::thread::spawn(move || {
            pin_to(cpu);
            let fd = sock.as_raw_fd();
            let mut batch = RecvBatch::new();
            let mut next = 0;
            while !s.load(Ordering::Relaxed) {
                let mut pfd = libc::pollfd {
                    fd,
                    events: libc::POLLIN,
                    revents: 0,
                };
                // SAFETY: one live pollfd.
                unsafe { libc::poll(&mut pfd, 1, 50) };
                while let Ok(n) = batch.recv(fd) {
                    let datagrams: Vec<(&[u8], SocketAddr)> = (0..n)
                        .filter_map(|i| batch.get(i))
                        .map(|(data, _)| {
                            next += 1;
                            (data, targets[next % targets.len()])
                        })
                        .collect();
                    batch::send_each(fd, &datagrams);
                }
            }
        });
        let mut clock = 0;
        // SAFETY: the thread is alive (joined only on drop); `clock` is written by the call.
        let r = unsafe { libc::pthread_getcpuclockid(thread.as_pthread_t(), &mut clock) };
        anyhow::ensure!(r == 0, "no CPU clock for the forwarder thread: {r}");
        Ok(Self {
            addr,
            stop,
            thread: Some(thread),
            clock,
        })
    }

    /// CPU seconds the forwarder thread has used so far.
    fn cpu_seconds(&self) -> f64 {
        let mut t = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `clock` names a live thread's clock; `t` is written by the call.
        unsafe { libc::clock_gettime(self.clock, &mut t) };
        t.tv_sec as f64 + t.tv_nsec as f64 / 1e9
    }
}

impl Drop for BatchForwarder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
