//! `huddle token create` and `huddle token verify`: access tokens for this server's keys, made
//! and checked the way the server does.

use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use huddle_access::{Claims, Source};

use crate::access::AccessArgs;

#[derive(Args)]
pub struct TokenArgs {
    #[command(subcommand)]
    command: TokenCommand,

    /// The `huddle serve` config file whose keys to use.
    #[arg(short, long, env = "HUDDLE_CONFIG", global = true)]
    config: Option<PathBuf>,

    #[command(flatten)]
    access: AccessArgs,
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Make a token for one participant of one room; prints it and a join link.
    Create(CreateArgs),
    /// Print a token's claims and whether this server's keys accept it, and why not.
    Verify(VerifyArgs),
}

#[derive(Args)]
struct CreateArgs {
    #[arg(long)]
    room: String,
    /// Who this is: stable across their tokens (LiveKit's identity).
    #[arg(long)]
    identity: String,
    /// The name shown to the others.
    #[arg(long)]
    name: Option<String>,
    /// How long it is valid: 90s, 30m, 6h, 2d [default: 6h].
    #[arg(long, default_value = "6h")]
    ttl: String,
    /// May moderate the room: mute, remove, lock, end.
    #[arg(long)]
    admin: bool,
    /// Joins receive-only.
    #[arg(long)]
    no_publish: bool,
    /// Receives nothing (e.g. a publisher only).
    #[arg(long)]
    no_subscribe: bool,
    /// Receives, and appears to nobody (recorders, observers).
    #[arg(long)]
    hidden: bool,
    /// The only sources it may publish, of camera, microphone, screen_share, screen_share_audio.
    #[arg(long, value_delimiter = ',')]
    sources: Option<Vec<String>>,
    /// Metadata for the participant (free text, e.g. JSON).
    #[arg(long)]
    metadata: Option<String>,
    /// The key to sign with [default: the only one, or the first by name].
    #[arg(long)]
    key: Option<String>,
    /// The server's address, for the join link.
    #[arg(long, default_value = "https://localhost:8443")]
    url: String,
}

#[derive(Args)]
struct VerifyArgs {
    token: String,
    /// Also check it admits to this room [default: the room it names].
    #[arg(long)]
    room: Option<String>,
}

pub fn run(mut args: TokenArgs) -> anyhow::Result<()> {
    if let Some(path) = &args.config {
        args.access.fill_from(AccessArgs::from_config_file(path)?);
    }
    let keys = args.access.keys()?;
    if keys.is_empty() {
        bail!("no keys: give --auth-key NAME:SECRET, --auth-keys-file or --config");
    }
    let now = unix_now();
    match args.command {
        TokenCommand::Create(c) => {
            let room = huddle_signal_proto::RoomName::parse(&c.room)
                .map_err(|e| anyhow::anyhow!("--room: {e}"))?;
            let ttl = ttl_seconds(&c.ttl)?;
            anyhow::ensure!(ttl <= TTL_MAX, "--ttl {:?}: at most ten years", c.ttl);
            let mut claims = Claims::for_room(&c.identity, room.as_str(), now, ttl);
            claims.name = c.name;
            claims.metadata = c.metadata;
            claims.jti = Some(random_id());
            let grant = &mut claims.video;
            grant.room_admin = c.admin.then_some(true);
            grant.can_publish = c.no_publish.then_some(false);
            grant.can_subscribe = c.no_subscribe.then_some(false);
            grant.hidden = c.hidden.then_some(true);
            if let Some(sources) = c.sources {
                let parsed: Result<Vec<Source>, String> =
                    sources.iter().map(|s| s.parse()).collect();
                grant.can_publish_sources =
                    Some(parsed.map_err(|e| anyhow::anyhow!("--sources: {e}"))?);
            }
            let key = match c.key {
                Some(key) => key,
                // Not empty: checked above.
                None => keys.names()[0].to_owned(),
            };
            let token = keys.mint(&key, &claims)?;
            println!("{token}");
            println!(
                "{}/r/{}#token={token}",
                c.url.trim_end_matches('/'),
                room.as_str()
            );
        }
        TokenCommand::Verify(v) => {
            let payload = huddle_access::unverified_payload(&v.token);
            match &payload {
                Some(claims) => println!("{}", serde_json::to_string_pretty(claims)?),
                None => println!("(the claims cannot be read)"),
            }
            let result = keys.decode(&v.token, now).and_then(|access| {
                let room = v.room.clone().or_else(|| access.grant.room.clone());
                match room {
                    Some(room) => access.admit(&room).map(|()| (access, Some(room))),
                    None => Ok((access, None)),
                }
            });
            match result {
                Ok((access, room)) => {
                    let room = room.map_or(String::new(), |r| format!(" into room {r:?}"));
                    println!(
                        "accepted{room}: {} (key {:?}), valid for {} more seconds",
                        access.identity,
                        access.key,
                        access.expires.saturating_sub(now)
                    );
                }
                Err(e) => bail!("refused: {e}"),
            }
        }
    }
    Ok(())
}

/// The longest `--ttl`: ten years is every invitation's due; further is a typo.
const TTL_MAX: u64 = 10 * 365 * 86_400;

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// `90s`, `30m`, `6h`, `2d` or plain seconds.
fn ttl_seconds(ttl: &str) -> anyhow::Result<u64> {
    let (digits, unit) = ttl.split_at(ttl.find(|c: char| !c.is_ascii_digit()).unwrap_or(ttl.len()));
    let n: u64 = digits
        .parse()
        .with_context(|| format!("--ttl {ttl:?}: a number with s, m, h or d"))?;
    let scale = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => bail!("--ttl {ttl:?}: the unit is s, m, h or d"),
    };
    match n.checked_mul(scale) {
        Some(0) | None => bail!("--ttl {ttl:?}: from one second to some years"),
        Some(s) => Ok(s),
    }
}

/// 128 random bits, hex: the token's `jti`, what a removal refuses.
fn random_id() -> String {
    let bits: u128 = rand::random();
    format!("{bits:032x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttls_in_their_units() {
        assert_eq!(ttl_seconds("90").unwrap(), 90);
        assert_eq!(ttl_seconds("90s").unwrap(), 90);
        assert_eq!(ttl_seconds("30m").unwrap(), 1800);
        assert_eq!(ttl_seconds("6h").unwrap(), 21_600);
        assert_eq!(ttl_seconds("2d").unwrap(), 172_800);
        for bad in ["", "h", "0s", "5w", "-1h"] {
            assert!(ttl_seconds(bad).is_err(), "{bad}");
        }
    }
}
