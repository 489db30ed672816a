//! A participant's signaling with Huddle: protocol v2 over the WebSocket, as a page in an SFU
//! room speaks it (docs/protocol.md, "SFU rooms") — join, the sending offer, the server's offers
//! for the receiving peer, `view` for the tiles it shows and `layers` it is told to send.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, bail};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

use super::View;
use super::participant::{FromMedia, ToMedia};

pub async fn signal(
    http: SocketAddr,
    room: &str,
    index: usize,
    view: View,
    to_media: mpsc::UnboundedSender<ToMedia>,
    mut from_media: mpsc::UnboundedReceiver<FromMedia>,
) -> anyhow::Result<()> {
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{http}/ws"))
        .await
        .context("WebSocket")?;
    // It says how many tiles it shows, as the web client does (its grid page): lines for those.
    let join = json!({"type": "join", "v": 2, "room": room, "name": format!("bench {index}"), "mode": "sfu", "tiles": view.watch});
    ws.send(Message::text(join.to_string())).await?;
    // Nothing goes to `sfu` before the welcome; the sending offer waits in its channel.
    loop {
        let msg = next_json(&mut ws).await?;
        match msg["type"].as_str() {
            Some("welcome") => break,
            Some("error") => bail!("join refused: {msg}"),
            _ => {}
        }
    }
    let mut ping = tokio::time::interval(Duration::from_secs(10));
    loop {
        tokio::select! {
            m = from_media.recv() => {
                let Some(m) = m else { return Ok(()) };
                let (kind, sdp) = match m {
                    FromMedia::UpOffer(sdp) => ("offer", sdp),
                    FromMedia::DownAnswer(sdp) => ("answer", sdp),
                };
                let signal = json!({"type": "signal", "to": "sfu", "sdp": {"type": kind, "sdp": sdp}});
                ws.send(Message::text(signal.to_string())).await?;
            }
            msg = next_json(&mut ws) => {
                let msg = msg?;
                match msg["type"].as_str() {
                    Some("signal") => {
                        let sdp = msg["sdp"]["sdp"].as_str().context("signal without SDP")?.to_owned();
                        let m = match msg["sdp"]["type"].as_str() {
                            Some("offer") => ToMedia::DownOffer(sdp),
                            Some("answer") => ToMedia::UpAnswer(sdp),
                            other => bail!("an SDP of type {other:?}"),
                        };
                        if to_media.send(m).is_err() {
                            return Ok(());
                        }
                    }
                    Some("tracks") => {
                        let tiles = tiles(&msg["tracks"], view);
                        ws.send(Message::text(json!({"type": "view", "tiles": tiles}).to_string())).await?;
                    }
                    Some("layers") => {
                        let active: Vec<bool> = msg["active"]
                            .as_array()
                            .context("layers without active")?
                            .iter()
                            .map(|a| a.as_bool().unwrap_or(true))
                            .collect();
                        if let [q, h, f] = active[..] {
                            let _ = to_media.send(ToMedia::Layers([q, h, f]));
                        }
                    }
                    Some("error") => bail!("server error: {msg}"),
                    _ => {}
                }
            }
            _ = ping.tick() => {
                ws.send(Message::text(r#"{"type":"ping"}"#)).await?;
            }
        }
    }
}

/// The page's tiles: the first `view.watch` video tracks shown at the view's size, the others
/// off screen (no video for them, and no line once the page has more tracks than lines).
fn tiles(tracks: &Value, view: View) -> Vec<Value> {
    let videos = tracks
        .as_array()
        .into_iter()
        .flatten()
        .filter(|t| t["kind"] == "video")
        .filter_map(|t| t["id"].as_str());
    videos
        .enumerate()
        .map(|(i, track)| {
            let visible = i < view.watch;
            json!({"track": track, "visible": visible, "width": view.width, "height": view.height})
        })
        .collect()
}

async fn next_json<S>(ws: &mut S) -> anyhow::Result<Value>
where
    S: StreamExt<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    loop {
        match ws
            .next()
            .await
            .context("the server closed the WebSocket")??
        {
            Message::Text(t) => return Ok(serde_json::from_str(&t)?),
            Message::Close(c) => bail!("closed: {c:?}"),
            _ => {}
        }
    }
}
