//! `huddle-bench floor`: the latency a relay cannot go below on this machine. A bare UDP
//! forwarder thread (blocking receive, strip a 4-byte header, send on) pinned to the server's CPU,
//! measured exactly like `huddle-bench turn`'s added latency. What remains above it in a TURN
//! server's figure is the server's own doing; the floor itself is the kernel's and the
//! hypervisor's cost of waking an idle CPU, twice (server, then the receiver) — measured again
//! with CPUs kept awake ([`crate::awake`]) when this machine allows it.

use std::net::UdpSocket;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::awake::AwakeCpus;
use crate::turn::{Sink, percentile_us, stamped_latency};

#[derive(clap::Args)]
pub struct Args {
    /// The CPU the forwarder runs on (the one the servers get in the other benchmarks).
    #[arg(long, default_value_t = 0)]
    cpu: usize,
    #[arg(long, default_value_t = 5)]
    runs: usize,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    measure(&args, "bare UDP forwarder (floor)")?;
    if let Some(_awake) = AwakeCpus::hold() {
        measure(
            &args,
            "bare UDP forwarder (floor), CPUs kept awake (PM QoS 0 µs)",
        )?;
    }
    Ok(())
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
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
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
