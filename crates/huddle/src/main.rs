//! `huddle`: self-hosted video rooms in one binary.

mod access;
mod coturn;
mod relay;
mod serve;
mod token_cmd;
mod turn_cmd;

use clap::{Parser, Subcommand, ValueEnum};

#[derive(Parser)]
#[command(
    name = "huddle",
    version,
    about = "Self-hosted real-time video rooms in one binary."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the web client, signaling and TURN over HTTPS.
    Serve(Box<serve::ServeArgs>),
    /// Run only the STUN/TURN server (a coturn replacement; reads coturn's config with -c).
    Turn(Box<turn_cmd::TurnArgs>),
    /// Make and check access tokens (LiveKit-compatible JWTs) for this server's keys.
    Token(Box<token_cmd::TokenArgs>),
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Human,
    /// One JSON object per line.
    Json,
}

/// Logs as `RUST_LOG` says, or else as `default_filter` says (e.g. `"info"`).
pub fn init_logging(format: LogFormat, default_filter: &str) {
    use tracing_subscriber::EnvFilter;
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    // Colours for a person at a terminal; none in a file or the journal.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi);
    match format {
        LogFormat::Human => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = tokio::runtime::Runtime::new()
        .map_err(anyhow::Error::from)
        .and_then(|runtime| match cli.command {
            Command::Serve(args) => runtime.block_on(serve::run(*args)),
            Command::Turn(args) => runtime.block_on(turn_cmd::run(*args)),
            Command::Token(args) => token_cmd::run(*args),
        });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // `{:#}` prints the whole chain of causes on one line, without a backtrace.
            eprintln!("huddle: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Raises the descriptor limit to the hard limit (each TURN allocation and connection holds
/// one) and logs what is in force; call once logging is set up.
pub fn raise_descriptor_limit() {
    match huddle_server::raise_limit() {
        Ok((soft, hard)) => tracing::info!(limit = soft, hard, "file descriptors"),
        Err(e) => tracing::warn!(error = %e, "cannot read the file descriptor limit"),
    }
}

/// Resolves when the process is asked to stop (SIGINT or SIGTERM).
pub async fn stop_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(term) => term,
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch SIGTERM; only Ctrl-C stops the server");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
