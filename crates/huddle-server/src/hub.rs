//! The signaling hub: one task owns the sans-IO [`Rooms`] core; every WebSocket task feeds it
//! inputs over a channel and receives its outputs on a bounded channel of its own.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use futures_util::{SinkExt, StreamExt};
use huddle_signal_proto::{CloseKind, ConnId, Output, Rooms, ServerMessage, Stats};
use rand::SeedableRng;
use rand::rngs::StdRng;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use crate::ice::IceServers;

/// Messages queued for one socket before it counts as too slow and is dropped.
const OUTBOX: usize = 512;

enum Input {
    Connect {
        conn: ConnId,
        outbox: mpsc::Sender<Outbound>,
        host: String,
    },
    Text {
        conn: ConnId,
        text: Utf8Bytes,
    },
    Activity {
        conn: ConnId,
    },
    Closed {
        conn: ConnId,
        kind: CloseKind,
    },
    Stats(oneshot::Sender<Stats>),
}

enum Outbound {
    Msg(ServerMessage),
    Ping,
    Close(u16, String),
}

/// A handle to the hub task, cheap to clone into request handlers.
#[derive(Clone)]
pub struct Hub {
    inputs: mpsc::UnboundedSender<Input>,
    next_conn: Arc<AtomicU64>,
}

impl Hub {
    /// Starts the hub. When `shutdown` flips, every client is told and disconnected.
    pub fn spawn(
        config: huddle_signal_proto::Config,
        ice: IceServers,
        shutdown: watch::Receiver<bool>,
    ) -> (Self, tokio::task::JoinHandle<()>) {
        let (inputs, rx) = mpsc::unbounded_channel();
        let rooms = Rooms::new(config, StdRng::from_os_rng());
        let task = tokio::spawn(run(rooms, ice, rx, shutdown));
        let hub = Self {
            inputs,
            next_conn: Arc::new(AtomicU64::new(1)),
        };
        (hub, task)
    }

    pub async fn stats(&self) -> Option<Stats> {
        let (tx, rx) = oneshot::channel();
        self.inputs.send(Input::Stats(tx)).ok()?;
        rx.await.ok()
    }

    /// Serves one WebSocket until either side closes it. `host` is the host the client reached
    /// us by, for the TURN URLs in its `welcome`.
    pub async fn serve_socket(self, socket: WebSocket, host: String) {
        let conn = ConnId(self.next_conn.fetch_add(1, Ordering::Relaxed));
        let (outbox, mut outbound) = mpsc::channel(OUTBOX);
        if self
            .inputs
            .send(Input::Connect { conn, outbox, host })
            .is_err()
        {
            return; // shutting down
        }
        let (mut sink, mut stream) = socket.split();
        let writer = async {
            while let Some(out) = outbound.recv().await {
                let frame = match out {
                    Outbound::Msg(msg) => Message::Text(msg.to_json().into()),
                    Outbound::Ping => Message::Ping(Default::default()),
                    Outbound::Close(code, reason) => {
                        let frame = CloseFrame {
                            code,
                            reason: reason.into(),
                        };
                        let _ = sink.send(Message::Close(Some(frame))).await;
                        break;
                    }
                };
                if sink.send(frame).await.is_err() {
                    break;
                }
            }
        };
        let reader = async {
            while let Some(frame) = stream.next().await {
                let input = match frame {
                    Ok(Message::Text(text)) => Input::Text { conn, text },
                    Ok(Message::Close(_)) => return CloseKind::Clean,
                    Ok(_) => Input::Activity { conn },
                    Err(e) => {
                        tracing::debug!(?conn, error = %e, "websocket read failed");
                        return CloseKind::Abrupt;
                    }
                };
                if self.inputs.send(input).is_err() {
                    break;
                }
            }
            CloseKind::Abrupt
        };
        // Whichever ends first ends the connection: the writer after a close the core asked for,
        // the reader when the client goes away.
        let kind = tokio::select! {
            () = writer => CloseKind::Clean,
            kind = reader => kind,
        };
        let _ = self.inputs.send(Input::Closed { conn, kind });
    }
}

async fn run(
    mut rooms: Rooms<StdRng>,
    ice: IceServers,
    mut inputs: mpsc::UnboundedReceiver<Input>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut outboxes: HashMap<ConnId, Outbox> = HashMap::new();
    loop {
        let wake = rooms.poll_timeout().map(Instant::from_std);
        tokio::select! {
            biased;
            _ = shutdown.wait_for(|stop| *stop) => {
                rooms.shutdown();
                drain(&mut rooms, &mut outboxes, &ice);
                return;
            }
            input = inputs.recv() => {
                let Some(input) = input else { return };
                let now = Instant::now().into_std();
                match input {
                    Input::Connect { conn, outbox, host } => {
                        outboxes.insert(conn, Outbox { tx: outbox, host });
                        rooms.handle_connect(conn, now);
                    }
                    Input::Text { conn, text } => rooms.handle_text(conn, text.as_str(), now),
                    Input::Activity { conn } => rooms.handle_activity(conn, now),
                    Input::Closed { conn, kind } => {
                        outboxes.remove(&conn);
                        rooms.handle_close(conn, kind, now);
                    }
                    Input::Stats(reply) => {
                        let _ = reply.send(rooms.stats());
                    }
                }
            }
            () = sleep_until(wake) => rooms.handle_timeout(Instant::now().into_std()),
        }
        drain(&mut rooms, &mut outboxes, &ice);
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
    host: String,
}

fn drain(rooms: &mut Rooms<StdRng>, outboxes: &mut HashMap<ConnId, Outbox>, ice: &IceServers) {
    loop {
        let mut too_slow = Vec::new();
        while let Some(out) = rooms.poll_output() {
            let (conn, outbound) = match out {
                Output::Send { conn, mut msg } => {
                    if let (ServerMessage::Welcome(welcome), Some(outbox)) =
                        (&mut msg, outboxes.get(&conn))
                    {
                        welcome.ice_servers = ice.for_peer(&welcome.id.0, &outbox.host);
                    }
                    (conn, Outbound::Msg(msg))
                }
                Output::Ping { conn } => (conn, Outbound::Ping),
                Output::Close { conn, code, reason } => {
                    if let Some(outbox) = outboxes.remove(&conn) {
                        // A full outbox means the client is gone in all but name; dropping the
                        // sender ends its writer either way.
                        let _ = outbox.tx.try_send(Outbound::Close(code, reason));
                    }
                    continue;
                }
            };
            if let Some(outbox) = outboxes.get(&conn)
                && outbox.tx.try_send(outbound).is_err()
            {
                too_slow.push(conn);
            }
        }
        if too_slow.is_empty() {
            return;
        }
        // A socket that cannot keep up is cut off rather than buffered without bound; its peer
        // gets the resume grace like any dropped connection.
        for conn in too_slow {
            tracing::warn!(?conn, "client too slow; dropping its connection");
            outboxes.remove(&conn);
            rooms.handle_close(conn, CloseKind::Abrupt, Instant::now().into_std());
        }
    }
}
