//! The signaling hub: one task owns the sans-IO [`Rooms`] core; every WebSocket task feeds it
//! inputs over a bounded channel and receives its outputs on a bounded channel of its own.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use futures_util::{SinkExt, StreamExt};
use huddle_signal_proto::{
    CloseKind, ConnId, ErrorCode, MediaRequest, Output, Placement, Rooms, ServerMessage, Stats,
    close_code,
};
use rand::SeedableRng;
use rand::rngs::StdRng;
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use crate::cluster::{Cluster, ClusterEvent};
use crate::ice::IceServers;
use crate::media::{Media, SfuEvent};
use crate::rate_limit::PerIpRate;
use crate::revocations::Revocations;

/// Messages queued for one socket before it counts as too slow and is dropped.
const OUTBOX: usize = 512;

/// Inputs waiting for the hub across all sockets. A socket task that finds it full waits — and
/// so stops reading its client — instead of queueing more: a flooding client holds at most one
/// waiting input, and the hub's channel is FIFO, so everyone else still gets a turn.
const INBOX: usize = 4096;

/// Messages of the media peer for SFU room pages waiting for the hub; the media thread drops
/// what does not fit rather than wait (see `media::Runner::to_hub`).
const FROM_MEDIA: usize = 4096;

/// How long a clean close waits to deliver our reply to the client's close frame.
const CLOSE_REPLY: Duration = Duration::from_secs(1);

enum Input {
    Connect {
        conn: ConnId,
        outbox: mpsc::Sender<Outbound>,
        kick: oneshot::Sender<Kick>,
        host: String,
    },
    Text {
        conn: ConnId,
        text: Utf8Bytes,
    },
    /// A frame that is not text (binary, ping, pong): counted like any other.
    Frame {
        conn: ConnId,
    },
    Closed {
        conn: ConnId,
        kind: CloseKind,
    },
    Stats(oneshot::Sender<Stats>),
    /// (cluster) This node is stopping: move every page elsewhere, give every room back.
    Drain(oneshot::Sender<()>),
    /// (cluster) The rooms the core hosts, sorted.
    Hosted(oneshot::Sender<Vec<String>>),
}

enum Outbound {
    Msg(ServerMessage),
    Ping,
    Close(u16, String),
}

/// What the hub tells a socket's task beside its outbox, so that it acts at once.
enum Kick {
    /// Too slow: end now.
    Drop,
    /// The core closed the connection: stop reading; send what is queued (the error that says
    /// why, then the close frame) within [`CLOSE_REPLY`].
    Close,
}

/// Longest close reason: a control frame's payload is at most 125 bytes, two of them the code.
const CLOSE_REASON_MAX: usize = 123;

/// A handle to the hub task, cheap to clone into request handlers.
#[derive(Clone)]
pub struct Hub {
    inputs: mpsc::Sender<Input>,
    next_conn: Arc<AtomicU64>,
    write_timeout: Duration,
}

impl Hub {
    /// Starts the hub. When `shutdown` flips, every client is told and disconnected. A frame that
    /// cannot be written to a socket within `write_timeout` ends that socket.
    pub fn spawn(
        config: huddle_signal_proto::Config,
        effects: Effects,
        cluster_events: Option<mpsc::Receiver<ClusterEvent>>,
        write_timeout: Duration,
        shutdown: watch::Receiver<bool>,
    ) -> (Self, tokio::task::JoinHandle<()>) {
        let (inputs, rx) = mpsc::channel(INBOX);
        let unix = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let rooms = Rooms::new(
            config,
            StdRng::from_os_rng(),
            Instant::now().into_std(),
            unix,
        );
        let task = tokio::spawn(run(rooms, effects, rx, cluster_events, shutdown));
        let hub = Self {
            inputs,
            next_conn: Arc::new(AtomicU64::new(1)),
            write_timeout,
        };
        (hub, task)
    }

    pub async fn stats(&self) -> Option<Stats> {
        let (tx, rx) = oneshot::channel();
        self.inputs.send(Input::Stats(tx)).await.ok()?;
        rx.await.ok()
    }

    /// (cluster) The rooms this node hosts, sorted; `None` when the hub is gone.
    pub async fn hosted_rooms(&self) -> Option<Vec<String>> {
        let (tx, rx) = oneshot::channel();
        self.inputs.send(Input::Hosted(tx)).await.ok()?;
        rx.await.ok()
    }

    /// (cluster) Tells every page to move to another node and gives this node's rooms back.
    pub async fn drain(&self) {
        let (tx, rx) = oneshot::channel();
        if self.inputs.send(Input::Drain(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }

    /// Serves one WebSocket until either side closes it, or the hub drops it. `host` is the host
    /// the client reached us by, for the TURN URLs in its `welcome`; a close for a refused token
    /// counts against the client's address in `refusals`.
    pub async fn serve_socket(
        self,
        socket: WebSocket,
        host: String,
        refusals: (PerIpRate, IpAddr),
    ) {
        let conn = ConnId(self.next_conn.fetch_add(1, Ordering::Relaxed));
        let (outbox, mut outbound) = mpsc::channel(OUTBOX);
        let (kick, kicked) = oneshot::channel();
        let connect = Input::Connect {
            conn,
            outbox,
            kick,
            host,
        };
        if self.inputs.send(connect).await.is_err() {
            return; // shutting down
        }
        let (mut sink, mut stream) = socket.split();
        let write_timeout = self.write_timeout;
        let writer = async {
            while let Some(out) = outbound.recv().await {
                let (frame, last) = match out {
                    Outbound::Msg(msg) => (Message::Text(msg.to_json().into()), false),
                    Outbound::Ping => (Message::Ping(Default::default()), false),
                    Outbound::Close(code, mut reason) => {
                        if [close_code::UNAUTHORIZED, close_code::FORBIDDEN].contains(&code) {
                            let (rate, ip) = &refusals;
                            rate.admit(*ip, std::time::Instant::now());
                        }
                        // Longer, and browsers fail the connection (1006) and lose the code.
                        if reason.len() > CLOSE_REASON_MAX {
                            let cut = (0..=CLOSE_REASON_MAX)
                                .rev()
                                .find(|i| reason.is_char_boundary(*i))
                                .unwrap_or(0);
                            reason.truncate(cut);
                        }
                        let frame = CloseFrame {
                            code,
                            reason: reason.into(),
                        };
                        (Message::Close(Some(frame)), true)
                    }
                };
                match tokio::time::timeout(write_timeout, sink.send(frame)).await {
                    Ok(Ok(())) if !last => {}
                    Ok(Ok(())) => return Ended::Closed,
                    Ok(Err(_)) => return Ended::Broken,
                    Err(_) => {
                        tracing::info!(?conn, "client stopped reading; closing its socket");
                        return Ended::Broken;
                    }
                }
            }
            // The hub forgot this connection (shutdown, or it closed it).
            Ended::Closed
        };
        let reader = async {
            while let Some(frame) = stream.next().await {
                let input = match frame {
                    Ok(Message::Text(text)) => Input::Text { conn, text },
                    Ok(Message::Close(_)) => return Ended::ClosedByClient,
                    Ok(_) => Input::Frame { conn },
                    Err(e) => return Ended::from_read_error(conn, e),
                };
                if self.inputs.send(input).await.is_err() {
                    break;
                }
            }
            Ended::Broken
        };
        // Whichever ends first ends the connection: the writer after a close the core asked for
        // or a write that timed out, the reader when the client goes away, or the hub when it cut
        // the connection off as too slow.
        let ended = {
            tokio::pin!(writer, reader);
            tokio::select! {
                biased;
                Ok(kick) = kicked => match kick {
                    Kick::Drop => Ended::Broken,
                    Kick::Close => tokio::time::timeout(CLOSE_REPLY, &mut writer)
                        .await
                        .unwrap_or(Ended::Broken),
                },
                ended = &mut writer => ended,
                ended = &mut reader => ended,
            }
        };
        let kind = match ended {
            Ended::Closed => CloseKind::Clean,
            Ended::ClosedByClient => {
                // Our answering close frame (RFC 6455 §5.5.1), queued by the WebSocket layer.
                let _ = tokio::time::timeout(CLOSE_REPLY, sink.close()).await;
                CloseKind::Clean
            }
            Ended::Refused(code, reason) => {
                let frame = CloseFrame {
                    code,
                    reason: reason.into(),
                };
                let close = sink.send(Message::Close(Some(frame)));
                let _ = tokio::time::timeout(CLOSE_REPLY, close).await;
                CloseKind::Abrupt
            }
            Ended::Broken => CloseKind::Abrupt,
        };
        let _ = self.inputs.send(Input::Closed { conn, kind }).await;
    }
}

/// How a socket's task ended.
enum Ended {
    /// We sent a close frame (the core asked), or the hub forgot the connection.
    Closed,
    /// The client sent a close frame: it left.
    ClosedByClient,
    /// The client broke the protocol: we close with this code and reason.
    Refused(u16, &'static str),
    /// The stream broke, a write timed out, or the hub cut the client off.
    Broken,
}

impl Ended {
    /// RFC 6455 §7.4.1's codes for what the WebSocket layer refused to read.
    fn from_read_error(conn: ConnId, e: axum::Error) -> Self {
        use tungstenite::error::{CapacityError, Error};
        tracing::debug!(?conn, error = %e, "websocket read failed");
        match e.into_inner().downcast_ref::<Error>() {
            Some(Error::Capacity(CapacityError::MessageTooLong { .. })) => {
                Self::Refused(close_code::TOO_BIG, "frame too large")
            }
            Some(Error::Capacity(_) | Error::Protocol(_)) => {
                Self::Refused(close_code::PROTOCOL, "WebSocket protocol error")
            }
            Some(Error::Utf8(_)) => Self::Refused(close_code::INVALID_DATA, "text is not UTF-8"),
            _ => Self::Broken,
        }
    }
}

/// What the hub acts on besides sockets: the ICE servers for each `welcome`, and where a
/// removal takes effect outside signaling.
pub struct Effects {
    pub ice: IceServers,
    pub revocations: Revocations,
    pub media: Option<Media>,
    /// Where rooms are placed when this node is one of several.
    pub cluster: Option<Cluster>,
}

async fn run(
    mut rooms: Rooms<StdRng>,
    effects: Effects,
    mut inputs: mpsc::Receiver<Input>,
    mut cluster_events: Option<mpsc::Receiver<ClusterEvent>>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut outboxes: HashMap<ConnId, Outbox> = HashMap::new();
    let (to_hub, mut from_media) = mpsc::channel(FROM_MEDIA);
    if let Some(media) = &effects.media {
        media.connect_hub(to_hub).await;
    }
    loop {
        let wake = rooms.poll_timeout().map(Instant::from_std);
        tokio::select! {
            biased;
            _ = shutdown.wait_for(|stop| *stop) => {
                rooms.shutdown();
                drain(&mut rooms, &mut outboxes, &effects);
                return;
            }
            input = inputs.recv() => {
                let Some(input) = input else { return };
                let now = Instant::now().into_std();
                match input {
                    Input::Connect { conn, outbox, kick, host } => {
                        outboxes.insert(conn, Outbox { tx: outbox, kick, host });
                        rooms.handle_connect(conn, now);
                    }
                    Input::Text { conn, text } => rooms.handle_text(conn, text.as_str(), now),
                    Input::Frame { conn } => rooms.handle_frame(conn, now),
                    Input::Closed { conn, kind } => {
                        outboxes.remove(&conn);
                        rooms.handle_close(conn, kind, now);
                    }
                    Input::Stats(reply) => {
                        let _ = reply.send(rooms.stats());
                    }
                    Input::Drain(done) => {
                        rooms.handle_drain();
                        let _ = done.send(());
                    }
                    Input::Hosted(reply) => {
                        let _ = reply.send(rooms.hosted_rooms());
                    }
                }
            }
            Some(event) = next_event(&mut cluster_events) => match event {
                ClusterEvent::Placed { room, placement } => {
                    rooms.handle_placed(&room, placement, Instant::now().into_std());
                }
                ClusterEvent::Lost { room } => rooms.handle_lost(&room),
            },
            Some(event) = from_media.recv() => match event {
                SfuEvent::ToPeer { peer, msg } => rooms.handle_media(&peer, msg),
                SfuEvent::ToRoom { room, msg } => rooms.handle_media_room(&room, msg),
            },
            () = sleep_until(wake) => rooms.handle_timeout(Instant::now().into_std()),
        }
        drain(&mut rooms, &mut outboxes, &effects);
    }
}

async fn next_event(events: &mut Option<mpsc::Receiver<ClusterEvent>>) -> Option<ClusterEvent> {
    match events {
        Some(events) => events.recv().await,
        None => std::future::pending().await,
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Where one connection's messages go, and the host it reached us by.
struct Outbox {
    tx: mpsc::Sender<Outbound>,
    /// Reaches the socket's task at once, even while its writer waits on a full socket.
    kick: oneshot::Sender<Kick>,
    host: String,
}

fn drain(rooms: &mut Rooms<StdRng>, outboxes: &mut HashMap<ConnId, Outbox>, effects: &Effects) {
    loop {
        let mut too_slow = Vec::new();
        let mut unplaced = Vec::new();
        while let Some(out) = rooms.poll_output() {
            let (conn, outbound) = match out {
                Output::Send { conn, mut msg } => {
                    if let (ServerMessage::Welcome(welcome), Some(outbox)) =
                        (&mut msg, outboxes.get(&conn))
                    {
                        welcome.ice_servers = effects.ice.for_peer(&welcome.id.0, &outbox.host);
                        if let Some(cluster) = &effects.cluster {
                            welcome.nodes = cluster.node_urls();
                        }
                    }
                    (conn, Outbound::Msg(msg))
                }
                Output::Place { room } => {
                    let asked = match &effects.cluster {
                        Some(cluster) => cluster.place(room.clone()),
                        None => Err(Placement::Here), // alone, every room is ours
                    };
                    if let Err(placement) = asked {
                        unplaced.push((room, placement));
                    }
                    continue;
                }
                Output::Vacated { room } => {
                    if let Some(cluster) = &effects.cluster {
                        cluster.vacate(room);
                    }
                    continue;
                }
                Output::Ping { conn } => (conn, Outbound::Ping),
                Output::Revoked { room, revocation } => {
                    effects
                        .revocations
                        .add(&room, &revocation, crate::http::unix_now());
                    if let Some(media) = &effects.media {
                        media.revoke(room, revocation);
                    }
                    continue;
                }
                Output::Media(request) => {
                    let peer = match &request {
                        MediaRequest::Join { peer, .. } | MediaRequest::Sdp { peer, .. } => {
                            Some(peer.clone())
                        }
                        MediaRequest::Leave { .. } | MediaRequest::View { .. } => None,
                    };
                    let refused = match &effects.media {
                        Some(media) => media.sfu(request).err().map(|e| e.to_string()),
                        None => Some("the media peer is turned off on this server".to_owned()),
                    };
                    if let (Some(peer), Some(why)) = (peer, refused) {
                        let msg = ServerMessage::error(ErrorCode::MediaFailed, why);
                        rooms.handle_media(&peer, msg);
                    }
                    continue;
                }
                Output::Close { conn, code, reason } => {
                    if let Some(outbox) = outboxes.remove(&conn) {
                        // A full outbox means the client is gone in all but name; the kick
                        // bounds the wait either way, and stops its reading at once.
                        let _ = outbox.tx.try_send(Outbound::Close(code, reason));
                        let _ = outbox.kick.send(Kick::Close);
                    }
                    continue;
                }
            };
            if let Some(outbox) = outboxes.get(&conn)
                && let Err(TrySendError::Full(_)) = outbox.tx.try_send(outbound)
            {
                too_slow.push(conn);
            }
            // `Closed`: the socket's task has ended and its `Closed` input, which says how, is
            // on its way — a clean leave must not be taken for a slow client.
        }
        // Placements answered at once (alone, or the cluster too busy to ask) have outputs of
        // their own: drain again.
        let answered = !unplaced.is_empty();
        let now = Instant::now().into_std();
        for (room, placement) in unplaced {
            rooms.handle_placed(&room, placement, now);
        }
        if too_slow.is_empty() {
            if answered {
                continue;
            }
            return;
        }
        // A socket that cannot keep up is cut off rather than buffered without bound; its peer
        // gets the resume grace like any dropped connection.
        for conn in too_slow {
            tracing::warn!(?conn, "client too slow; dropping its connection");
            if let Some(outbox) = outboxes.remove(&conn) {
                let _ = outbox.kick.send(Kick::Drop);
            }
            rooms.handle_close(conn, CloseKind::Abrupt, Instant::now().into_std());
        }
    }
}
