//! `huddle-bench`: side-by-side benchmarks of Huddle against the stacks it replaces.
//! Results are printed as Markdown rows for docs/benchmarks.md.

mod attack;
mod awake;
mod cluster;
mod floor;
mod http1;
mod media;
mod pinned;
mod procstat;
mod sfu;
mod signal;
mod source;
mod turn;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "huddle-bench",
    about = "Huddle's benchmarks, each run against its reference peer."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// WebSocket signaling: Huddle vs python-socketio + aiohttp.
    Signal(signal::Args),
    /// STUN/TURN: Huddle vs coturn's turnserver.
    Turn(turn::Args),
    /// Echo sessions through the media peer: Huddle vs aiortc's server.
    Media(media::Args),
    /// SFU rooms of simulcast publishers and subscribers: Huddle vs Janus's VideoRoom.
    Sfu(sfu::Args),
    /// Signaling on one node against three over one Redis, and recovery from a node's death.
    Cluster(cluster::Args),
    /// The relay latency floor of this machine: a bare UDP forwarder on the server's CPU.
    Floor(floor::Args),
    /// What one anonymous client can do to the server: each hardening case, measured.
    Attack(attack::Args),
}

/// The order of the two servers in run `run`: alternating, so drift on a noisy machine (thermal,
/// neighbours) does not always favour the same one.
pub(crate) fn alternate<K: Copy>(run: usize, [a, b]: [K; 2]) -> [K; 2] {
    if run.is_multiple_of(2) {
        [a, b]
    } else {
        [b, a]
    }
}

/// The median of `f` over the runs of `key` among `results`.
pub(crate) fn median_of<K: PartialEq, S>(results: &[(K, S)], key: K, f: impl Fn(&S) -> f64) -> f64 {
    median(
        results
            .iter()
            .filter(|(k, _)| *k == key)
            .map(|(_, s)| f(s))
            .collect(),
    )
}

/// The median of a benchmark's runs (0 when there were none).
pub(crate) fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Signal(args) => signal::run(args),
        Command::Turn(args) => turn::run(args),
        Command::Media(args) => media::run(args),
        Command::Sfu(args) => sfu::run(args),
        Command::Cluster(args) => cluster::run(args),
        Command::Floor(args) => floor::run(args),
        Command::Attack(args) => attack::run(args),
    }
}
