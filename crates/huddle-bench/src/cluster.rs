//! `huddle-bench cluster`: one Huddle node against three over one Redis, under the signaling
//! load of `huddle-bench signal` (clients spread over the nodes, following `moved` to each
//! room's node), with every server process — the nodes and redis-server — pinned to the same
//! core, so the figures are per CPU-second of all of them. Then the time for a room's two pages
//! to be back in it after its node is SIGKILLed.
//!
//! No message is relayed between nodes (a page is sent to its room's node), so there is no
//! relay latency to add: the latency rows compare the same path with and without the cluster.

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::pinned::Pinned;
use crate::signal::{Client, Kind, Load, Sample, Target, Traffic, measure};

#[derive(clap::Args)]
pub struct Args {
    /// The huddle binary (a release build).
    #[arg(long, default_value = "target/release/huddle")]
    huddle: PathBuf,
    /// Alternating runs per setup; medians are reported.
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// CPU list (taskset) for every server process; run this program on the others.
    #[arg(long, default_value = "0")]
    server_cpus: String,
    #[command(flatten)]
    traffic: Traffic,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Setup {
    One,
    Three,
}

impl Setup {
    fn nodes(self) -> usize {
        match self {
            Setup::One => 1,
            Setup::Three => 3,
        }
    }
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let load = Load {
        idle: 0,
        traffic: args.traffic,
    };
    let mut results: Vec<(Setup, Sample)> = Vec::new();
    let mut recoveries = Vec::new();
    for run in 0..args.runs {
        for setup in crate::alternate(run, [Setup::One, Setup::Three]) {
            let mut cluster = Cluster::start(setup, &args)?;
            let sample = rt
                .block_on(measure(Kind::Huddle, &cluster.target(), &load))
                .with_context(|| format!("{} node(s), run {run}", setup.nodes()))?;
            eprintln!(
                "run {run} {} node(s): {:>6.0} joins/s {:>6.0} joins/CPU-s {:>7.0} deliveries/CPU-s  p50 {:.2} ms  p99 {:.2} ms",
                setup.nodes(),
                sample.joins_per_sec,
                sample.joins_per_cpu_sec,
                sample.deliveries_per_cpu_sec,
                sample.p50_ms,
                sample.p99_ms
            );
            eprintln!(
                "run {run} {} node(s): CPU µs per join by process (nodes, then Redis): {:.0?}",
                setup.nodes(),
                &sample.join_us_by_process[..setup.nodes() + usize::from(setup == Setup::Three)]
            );
            results.push((setup, sample));
            if setup == Setup::Three {
                let took = rt.block_on(recovery(&mut cluster))?;
                eprintln!("run {run} owner SIGKILLed → both pages back in {took:?}");
                recoveries.push(took.as_secs_f64());
            }
        }
    }
    report(&results, &recoveries);
    Ok(())
}

/// A report row: its name and the figure.
type Row = (&'static str, fn(&Sample) -> f64);

fn report(results: &[(Setup, Sample)], recoveries: &[f64]) {
    let median = |setup: Setup, f: fn(&Sample) -> f64| crate::median_of(results, setup, f);
    println!("| metric (median) | 1 node | 3 nodes + Redis | 3 nodes / 1 node |");
    println!("|---|---:|---:|---:|");
    let rows: [Row; 5] = [
        ("joins/s", |s| s.joins_per_sec),
        ("joins per CPU-second (all servers)", |s| {
            s.joins_per_cpu_sec
        }),
        ("deliveries per CPU-second (all servers)", |s| {
            s.deliveries_per_cpu_sec
        }),
        ("signal latency p50 (ms)", |s| s.p50_ms),
        ("signal latency p99 (ms)", |s| s.p99_ms),
    ];
    for (name, f) in rows {
        let (one, three) = (median(Setup::One, f), median(Setup::Three, f));
        println!(
            "| {name} | {one:.2} | {three:.2} | {:.0} % |",
            three / one * 100.0
        );
    }
    println!(
        "| owner SIGKILLed → its room's pages back (s) | | {:.2} | |",
        crate::median(recoveries.to_vec())
    );
}

/// redis-server and the nodes, all on the server CPUs.
struct Cluster {
    redis: Option<Child>,
    redis_pid: Option<u32>,
    nodes: Vec<(u16, Pinned)>,
}

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl Cluster {
    fn start(setup: Setup, args: &Args) -> anyhow::Result<Self> {
        let (redis, redis_url) = match setup {
            Setup::One => (None, None),
            Setup::Three => {
                let port = free_port()?;
                let child = Command::new("taskset")
                    .args([
                        "-c",
                        &args.server_cpus,
                        "redis-server",
                        "--bind",
                        "127.0.0.1",
                    ])
                    .args([
                        "--port",
                        &port.to_string(),
                        "--save",
                        "",
                        "--appendonly",
                        "no",
                    ])
                    .stdout(Stdio::null())
                    .spawn()
                    .context("start redis-server")?;
                let ready = SocketAddr::from(([127, 0, 0, 1], port));
                let deadline = Instant::now() + Duration::from_secs(10);
                while std::net::TcpStream::connect(ready).is_err() {
                    if Instant::now() > deadline {
                        bail!("redis-server did not start");
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
                (Some(child), Some(format!("redis://127.0.0.1:{port}")))
            }
        };
        let mut nodes = Vec::new();
        for i in 0..setup.nodes() {
            let port = free_port()?;
            let ready = SocketAddr::from(([127, 0, 0, 1], port));
            let node = Pinned::start(
                None,
                "huddle",
                &args.server_cpus,
                &args.huddle,
                ready,
                |cmd| {
                    cmd.args(["serve", "--no-tls", "--no-turn", "--no-media"])
                        // Every client is on loopback: lift the per-address limits.
                        .args([
                            "--websockets-per-ip",
                            "1000000",
                            "--connections-per-ip",
                            "1000000",
                        ])
                        .args(["--message-rate", "1000000", "--listen"])
                        .arg(ready.to_string())
                        .env("RUST_LOG", "warn");
                    if let Some(url) = &redis_url {
                        cmd.args(["--redis", url, "--node-id", &format!("node{i}")])
                            .args(["--public-url", &format!("http://{ready}")]);
                    }
                },
            )?;
            nodes.push((port, node));
        }
        let redis_pid = redis.as_ref().map(Child::id);
        let cluster = Self {
            redis,
            redis_pid,
            nodes,
        };
        // Every node has registered and seen the others (heartbeats are 2 s apart).
        if setup == Setup::Three {
            std::thread::sleep(Duration::from_millis(2500));
        }
        Ok(cluster)
    }

    fn target(&self) -> Target {
        Target {
            ports: self.nodes.iter().map(|(port, _)| *port).collect(),
            pids: self
                .nodes
                .iter()
                .map(|(_, node)| node.pid)
                .chain(self.redis_pid)
                .collect(),
            // The nodes' `--public-url`s, which a page's HTML names.
            urls: match self.redis_pid {
                Some(_) => self
                    .nodes
                    .iter()
                    .map(|(port, _)| format!("http://127.0.0.1:{port}"))
                    .collect(),
                None => Vec::new(),
            },
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if let Some(mut redis) = self.redis.take() {
            let _ = redis.kill();
            let _ = redis.wait();
        }
    }
}

/// Two pages in a room, its node SIGKILLed: how long until both are in the room again, each
/// trying the other nodes every 250 ms.
async fn recovery(cluster: &mut Cluster) -> anyhow::Result<Duration> {
    let ports: Vec<u16> = cluster.nodes.iter().map(|(port, _)| *port).collect();
    let (a, _) = Client::join(Kind::Huddle, ports[0], "recovery").await?;
    let (b, _) = Client::join(Kind::Huddle, ports[1], "recovery").await?;
    let owner = a.port;
    let at = cluster
        .nodes
        .iter()
        .position(|(port, _)| *port == owner)
        .context("the room's node")?;
    let (_, node) = cluster.nodes.remove(at);
    let t0 = Instant::now();
    drop(node); // SIGKILL
    drop((a, b));
    let others: Vec<u16> = ports.into_iter().filter(|p| *p != owner).collect();
    for (i, _) in others.iter().enumerate() {
        let mut attempt = i;
        loop {
            if Client::join(Kind::Huddle, others[attempt % others.len()], "recovery")
                .await
                .is_ok()
            {
                break;
            }
            if t0.elapsed() > Duration::from_secs(30) {
                bail!("the room did not come back within 30 s");
            }
            attempt += 1;
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
    Ok(t0.elapsed())
}
