//! A real server on an ephemeral port and WebSocket clients that speak to it.

#![allow(dead_code)] // each test binary uses its own subset

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use huddle_server::{Config, Server};
use huddle_signal_proto::{PROTOCOL_VERSION, ServerMessage, Welcome};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub struct TestServer {
    pub addr: SocketAddr,
    /// The TURN server's UDP listener, when the config runs one.
    pub turn_udp: Option<SocketAddr>,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<(), huddle_server::ServerError>>,
}

impl TestServer {
    pub async fn start() -> Self {
        Self::with(Config::plain("127.0.0.1:0".parse().unwrap())).await
    }

    pub async fn with(config: Config) -> Self {
        let server = Server::bind(config).await.expect("bind");
        let addr = server.local_addr();
        let turn_udp = server.turn_addrs().and_then(|a| a.udp.first().copied());
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(server.run(async {
            let _ = stopped.await;
        }));
        Self {
            addr,
            turn_udp,
            stop: Some(stop),
            task,
        }
    }

    pub fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    pub async fn client(&self) -> Client {
        let (ws, _) = tokio_tungstenite::connect_async(self.ws_url())
            .await
            .expect("connect");
        Client { ws }
    }

    /// Stops the server and waits for `run` to return.
    pub async fn shutdown(mut self) -> Result<(), huddle_server::ServerError> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        (&mut self.task).await.expect("server task")
    }

    pub async fn get(&self, path: &str) -> (u16, String) {
        let r = self.request("GET", path, &[], b"").await;
        (r.status, r.body)
    }

    /// One HTTP/1.1 request over a fresh connection.
    pub async fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Response {
        let mut tcp = TcpStream::connect(self.addr).await.unwrap();
        let mut req = format!(
            "{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\nContent-Length: {}\r\n",
            body.len()
        );
        for (name, value) in headers {
            req.push_str(&format!("{name}: {value}\r\n"));
        }
        req.push_str("\r\n");
        tcp.write_all(req.as_bytes()).await.unwrap();
        tcp.write_all(body).await.unwrap();
        let mut raw = Vec::new();
        tcp.read_to_end(&mut raw).await.unwrap();
        let text = String::from_utf8_lossy(&raw).into_owned();
        let status = text[9..12].parse().unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        Response {
            status,
            head: head.to_ascii_lowercase(),
            body: body.to_owned(),
        }
    }
}

pub struct Response {
    pub status: u16,
    /// Status line and headers, lower-cased.
    pub head: String,
    pub body: String,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}: ")))
    }
}

pub struct Client {
    pub ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

/// What a client saw next.
#[derive(Debug)]
pub enum Event {
    Msg(ServerMessage),
    Closed(Option<(CloseCode, String)>),
}

impl Client {
    pub async fn send_text(&mut self, text: impl Into<String>) {
        self.ws
            .send(Message::Text(text.into().into()))
            .await
            .expect("send");
    }

    pub async fn send_json(&mut self, value: serde_json::Value) {
        self.send_text(value.to_string()).await;
    }

    pub async fn join(&mut self, room: &str, name: &str) -> Welcome {
        self.send_json(
            serde_json::json!({"type": "join", "v": PROTOCOL_VERSION, "room": room, "name": name}),
        )
        .await;
        match self.next_msg().await {
            ServerMessage::Welcome(w) => w,
            other => panic!("expected welcome, got {other:?}"),
        }
    }

    /// The next event within 5 s; panics on silence.
    pub async fn next(&mut self) -> Event {
        self.next_within(Duration::from_secs(5))
            .await
            .expect("no message within 5 s")
    }

    pub async fn next_within(&mut self, wait: Duration) -> Option<Event> {
        loop {
            let frame = tokio::time::timeout(wait, self.ws.next()).await.ok()?;
            return Some(match frame {
                Some(Ok(Message::Text(text))) => Event::Msg(
                    serde_json::from_str(text.as_str()).expect("server sends valid JSON"),
                ),
                Some(Ok(Message::Close(frame))) => {
                    Event::Closed(frame.map(|f| (f.code, f.reason.as_str().to_owned())))
                }
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => Event::Closed(None),
            });
        }
    }

    pub async fn next_msg(&mut self) -> ServerMessage {
        match self.next().await {
            Event::Msg(m) => m,
            Event::Closed(c) => panic!("closed: {c:?}"),
        }
    }

    /// Asserts nothing arrives for a short while.
    pub async fn expect_silence(&mut self) {
        if let Some(e) = self.next_within(Duration::from_millis(300)).await {
            panic!("expected silence, got {e:?}");
        }
    }
}

/// The kernel's TCP states of the server's end of each connection from `client_port` to
/// `server` (`/proc/net/tcp{,6}`; `0x01` is ESTABLISHED). Tells from outside whether the server
/// still holds a connection, without reading from it.
pub fn server_side_states(server: SocketAddr, client_port: u16) -> Vec<u8> {
    tcp_table()
        .into_iter()
        .filter(|&(local, remote, _)| local == server.port() && remote == client_port)
        .map(|(_, _, state)| state)
        .collect()
}

/// Connections to `server`'s port that the server holds ESTABLISHED.
pub fn established_to(server: SocketAddr) -> usize {
    tcp_table()
        .into_iter()
        .filter(|&(local, _, state)| local == server.port() && state == 1)
        .count()
}

/// (local port, remote port, state) of every TCP socket of this network namespace.
fn tcp_table() -> Vec<(u16, u16, u8)> {
    let mut rows = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            let port = |addr: &str| {
                addr.rsplit(':')
                    .next()
                    .and_then(|p| u16::from_str_radix(p, 16).ok())
            };
            if let (Some(local), Some(remote), Some(state)) = (
                cols.get(1).and_then(|a| port(a)),
                cols.get(2).and_then(|a| port(a)),
                cols.get(3).and_then(|s| u8::from_str_radix(s, 16).ok()),
            ) {
                rows.push((local, remote, state));
            }
        }
    }
    rows
}

/// Waits up to `within` for `done`, checking every 50 ms; whether it came true.
pub async fn eventually(within: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if done() {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Whether the server closes `tcp` within `within` (a read sees the end, or a reset).
pub async fn closed_by_server(tcp: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, tcp.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue, // a response (408, or the one asked for): read on
            Err(_) => return false,
        }
    }
}

/// One UDP Allocate at the TURN server `server` as `user`/`pass` (long-term credentials, realm
/// `huddle`), signed after the 401 that brings the nonce: the error code (`None`: allocated)
/// and the client's socket, which the allocation lives as long as.
pub fn turn_allocate(
    server: SocketAddr,
    user: &str,
    pass: &str,
    mut txid: [u8; 12],
) -> std::io::Result<(Option<u16>, std::net::UdpSocket)> {
    use huddle_turn_proto::auth::long_term_key;
    use huddle_turn_proto::stun::{AttrType, Class, IntegrityAlg, Message, MessageWriter, Method};
    let socket = std::net::UdpSocket::bind("127.0.0.1:0")?;
    socket.set_read_timeout(Some(Duration::from_secs(5)))?;
    let request = |txid: [u8; 12], signed: Option<(&str, &[u8; 16])>| {
        let mut buf = Vec::new();
        let mut w = MessageWriter::new(&mut buf, Class::Request, Method::ALLOCATE, txid);
        w.attr(AttrType::REQUESTED_TRANSPORT, &[17, 0, 0, 0]);
        if let Some((nonce, key)) = signed {
            w.attr(AttrType::USERNAME, user.as_bytes())
                .attr(AttrType::REALM, b"huddle")
                .attr(AttrType::NONCE, nonce.as_bytes())
                .integrity(IntegrityAlg::Sha1, key);
        }
        w.fingerprint();
        buf
    };
    socket.send_to(&request(txid, None), server)?;
    let mut buf = [0u8; 1500];
    let len = socket.recv(&mut buf)?;
    let challenge = Message::parse(&buf[..len]).expect("a STUN answer");
    let nonce = challenge
        .get_str(AttrType::NONCE)
        .unwrap()
        .expect("a nonce")
        .to_owned();
    let key = long_term_key(user, "huddle", pass);
    txid[11] ^= 1;
    socket.send_to(&request(txid, Some((&nonce, &key))), server)?;
    let len = socket.recv(&mut buf)?;
    let answer = Message::parse(&buf[..len]).expect("a STUN answer");
    let code = match answer.class() {
        Class::Success => None,
        _ => answer
            .get(AttrType::ERROR_CODE)
            .map(|v| u16::from(v[2]) * 100 + u16::from(v[3])),
    };
    Ok((code, socket))
}
