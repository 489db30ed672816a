//! Janus's side: its VideoRoom plugin (an SFU) run from a private configuration, and a
//! participant's signaling over Janus's HTTP API (sessions, plugin handles, long-polled events),
//! as janus.js would do it: one handle publishes (join as publisher, `publish` with the offer),
//! one subscribes to the feeds it watches in one multistream subscription (`join` as subscriber,
//! Janus offers, `start` with the answer), at the simulcast substream the tile asks for.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::View;
use super::participant::{Counters, FromMedia, ToMedia};

const PLUGINS: &str = "/usr/lib/x86_64-linux-gnu/janus";

/// Writes a configuration that loads only the VideoRoom plugin and the HTTP transport on
/// `http`, with ICE on `http`'s address only; returns the main file's path. Janus never
/// gathers on a loopback interface, hence `--host` and scripts/bench's namespace.
pub fn configure(dir: &Path, http: SocketAddr) -> anyhow::Result<std::path::PathBuf> {
    let (plugins, transports) = (dir.join("plugins"), dir.join("transports"));
    for (d, lib) in [
        (&plugins, "plugins/libjanus_videoroom.so"),
        (&transports, "transports/libjanus_http.so"),
    ] {
        std::fs::create_dir_all(d)?;
        let link = d.join(Path::new(lib).file_name().expect("a file name"));
        if !link.exists() {
            std::os::unix::fs::symlink(Path::new(PLUGINS).join(lib), link)?;
        }
    }
    let main = dir.join("janus.jcfg");
    std::fs::write(
        &main,
        format!(
            "general: {{\n  configs_folder = \"{dir}\"\n  plugins_folder = \"{plugins}\"\n  \
             transports_folder = \"{transports}\"\n  debug_level = 2\n  session_timeout = 120\n}}\n\
             media: {{\n  rtp_port_range = \"20000-40000\"\n}}\n\
             nat: {{\n  ice_enforce_list = \"{ip}\"\n  ignore_mdns = true\n}}\n",
            dir = dir.display(),
            plugins = plugins.display(),
            transports = transports.display(),
            ip = http.ip(),
        ),
    )?;
    std::fs::write(
        dir.join("janus.transport.http.jcfg"),
        format!(
            "general: {{\n  base_path = \"/janus\"\n  http = true\n  port = {}\n  ip = \"{}\"\n  https = false\n}}\n\
             admin: {{\n  admin_http = false\n}}\n",
            http.port(),
            http.ip()
        ),
    )?;
    std::fs::write(dir.join("janus.plugin.videoroom.jcfg"), "general: {\n}\n")?;
    Ok(main)
}

/// One Janus session and its event queue.
struct Session {
    http: SocketAddr,
    id: u64,
    /// Events that came in a long poll but were not the one waited for.
    backlog: Vec<Value>,
}

fn transaction() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    format!("t{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

async fn post(http: SocketAddr, path: &str, body: Value) -> anyhow::Result<Value> {
    let json = [("Content-Type", "application/json")];
    let (status, text) =
        crate::http1::request(http, "POST", path, &json, body.to_string().as_bytes()).await?;
    if status != 200 {
        bail!("Janus {path}: {status} {text}");
    }
    let v: Value = serde_json::from_str(&text).context("Janus's JSON")?;
    if v["janus"] == "error" {
        bail!("Janus {path}: {}", v["error"]);
    }
    Ok(v)
}

impl Session {
    async fn create(http: SocketAddr) -> anyhow::Result<Self> {
        let v = post(
            http,
            "/janus",
            json!({"janus": "create", "transaction": transaction()}),
        )
        .await?;
        let id = v["data"]["id"].as_u64().context("no session id")?;
        Ok(Session {
            http,
            id,
            backlog: Vec::new(),
        })
    }

    async fn attach(&self) -> anyhow::Result<u64> {
        let body = json!({"janus": "attach", "plugin": "janus.plugin.videoroom", "transaction": transaction()});
        let v = post(self.http, &format!("/janus/{}", self.id), body).await?;
        v["data"]["id"].as_u64().context("no handle id")
    }

    /// A plugin request; a synchronous one's answer is returned, an asynchronous one's "ack".
    async fn message(
        &self,
        handle: u64,
        body: Value,
        jsep: Option<Value>,
    ) -> anyhow::Result<Value> {
        let mut m = json!({"janus": "message", "transaction": transaction(), "body": body});
        if let Some(jsep) = jsep {
            m["jsep"] = jsep;
        }
        let v = post(self.http, &format!("/janus/{}/{handle}", self.id), m).await?;
        if let Some(err) = v["plugindata"]["data"]["error"].as_str() {
            bail!("VideoRoom: {err}");
        }
        Ok(v)
    }

    /// Waits for the next event of `handle` that `wanted` accepts.
    async fn event(
        &mut self,
        handle: u64,
        wanted: impl Fn(&Value) -> bool,
    ) -> anyhow::Result<Value> {
        let matches = |e: &Value| e["sender"].as_u64() == Some(handle) && wanted(e);
        loop {
            if let Some(i) = self.backlog.iter().position(matches) {
                return Ok(self.backlog.remove(i));
            }
            let path = format!("/janus/{}?maxev=10", self.id);
            let (status, text) = crate::http1::request(self.http, "GET", &path, &[], &[]).await?;
            if status != 200 {
                bail!("Janus events: {status} {text}");
            }
            let v: Value = serde_json::from_str(&text)?;
            for e in v.as_array().cloned().unwrap_or_else(|| vec![v]) {
                if let Some(err) = e["plugindata"]["data"]["error"].as_str() {
                    bail!("VideoRoom: {err}");
                }
                if e["janus"] != "keepalive" {
                    self.backlog.push(e);
                }
            }
        }
    }

    /// Long-polls forever, which keeps the session alive.
    async fn keep_alive(mut self) -> anyhow::Result<()> {
        loop {
            self.backlog.clear();
            let path = format!("/janus/{}?maxev=10", self.id);
            crate::http1::request(self.http, "GET", &path, &[], &[]).await?;
        }
    }
}

/// Creates room `room` for `publishers` (H.264 and Opus, RFC 6464 levels, TWCC).
pub async fn create_room(http: SocketAddr, room: u64, publishers: usize) -> anyhow::Result<()> {
    let session = Session::create(http).await?;
    let handle = session.attach().await?;
    let body = json!({
        "request": "create", "room": room, "publishers": publishers,
        "videocodec": "h264", "audiocodec": "opus", "bitrate": 0,
        "audiolevel_ext": true, "transport_wide_cc_ext": true, "notify_joining": false,
    });
    let v = session.message(handle, body, None).await?;
    anyhow::ensure!(
        v["plugindata"]["data"]["videoroom"] == "created",
        "room not created: {v}"
    );
    Ok(())
}

/// The feed id of participant `index` (Janus lets the publisher choose it).
fn feed(index: usize) -> u64 {
    index as u64 + 1
}

/// Publishes, waits until all `n` of the room are connected, then subscribes to the watched feeds.
#[allow(clippy::too_many_arguments)]
pub async fn signal(
    http: SocketAddr,
    room: u64,
    index: usize,
    n: usize,
    view: View,
    counters: Arc<Counters>,
    to_media: mpsc::UnboundedSender<ToMedia>,
    mut from_media: mpsc::UnboundedReceiver<FromMedia>,
) -> anyhow::Result<()> {
    let mut session = Session::create(http).await?;
    let publisher = session.attach().await?;
    let subscriber = session.attach().await?;
    let join = json!({"request": "join", "ptype": "publisher", "room": room, "id": feed(index), "display": format!("bench {index}")});
    session.message(publisher, join, None).await?;
    session
        .event(publisher, |e| {
            e["plugindata"]["data"]["videoroom"] == "joined"
        })
        .await?;
    let Some(FromMedia::UpOffer(offer)) = from_media.recv().await else {
        bail!("no sending offer");
    };
    let body = json!({"request": "publish", "audio": true, "video": true});
    session
        .message(
            publisher,
            body,
            // The rids are listed smallest first, as a Huddle page lists them; Janus takes the
            // first as the highest unless told, and its substream 0 would be the full layer.
            Some(json!({"type": "offer", "sdp": offer, "rid_order": "lmh"})),
        )
        .await?;
    let answer = session
        .event(publisher, |e| e["jsep"]["type"] == "answer")
        .await?;
    let sdp = answer["jsep"]["sdp"]
        .as_str()
        .context("answer without SDP")?;
    to_media.send(ToMedia::UpAnswer(sdp.to_owned()))?;
    // Janus knows a feed once its peer connection is up: wait for every publisher's.
    while counters.publishing.load(Ordering::Relaxed) < n {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Janus announces a feed once its media flows; give the last ones a moment.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let streams: Vec<Value> = (0..n)
        .filter(|&i| i != index)
        .take(view.watch)
        .map(|i| json!({"feed": feed(i)}))
        .collect();
    let join = json!({"request": "join", "ptype": "subscriber", "room": room, "streams": streams});
    session.message(subscriber, join, None).await?;
    let offer = session
        .event(subscriber, |e| e["jsep"]["type"] == "offer")
        .await?;
    let sdp = offer["jsep"]["sdp"].as_str().context("offer without SDP")?;
    let videos = video_mids(sdp);
    to_media.send(ToMedia::DownOffer(sdp.to_owned()))?;
    let Some(FromMedia::DownAnswer(answer)) = from_media.recv().await else {
        bail!("no receiving answer");
    };
    session
        .message(
            subscriber,
            json!({"request": "start"}),
            Some(json!({"type": "answer", "sdp": answer})),
        )
        .await?;
    let streams: Vec<Value> = videos
        .iter()
        .map(|mid| json!({"mid": mid, "substream": view.layer}))
        .collect();
    session
        .message(
            subscriber,
            json!({"request": "configure", "streams": streams}),
            None,
        )
        .await?;
    session.keep_alive().await
}

/// The mids of an SDP's video sections.
fn video_mids(sdp: &str) -> Vec<String> {
    let mut video = false;
    let mut mids = Vec::new();
    for line in sdp.lines() {
        if let Some(m) = line.strip_prefix("m=") {
            video = m.starts_with("video");
        } else if let Some(mid) = line.strip_prefix("a=mid:")
            && video
        {
            mids.push(mid.trim().to_owned());
        }
    }
    mids
}
