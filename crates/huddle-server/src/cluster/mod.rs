//! Several Huddle nodes over one Redis: a node registry, one owner per room, and the pages sent
//! to the owner.
//!
//! Every node keeps `huddle:node:{id}` (its [`NodeRecord`]) alive with a heartbeat; the key's
//! expiry is its liveness — no node ever deletes another's state. A room is hosted by the node
//! its lease names (`huddle:room:{name}`, see [`lease`]); the first join anywhere places it on
//! its home node — the first of its rendezvous order, where its pages connect first — unless
//! that node is clearly busier than the room's second choice ([`node::choose`]). A node that
//! does not host a room sends its pages to the owner's URL (`moved`), so a room's signaling, capacity and media all live in one process
//! and nothing about a call crosses Redis but its placement. A node that dies stops renewing:
//! its record expires, and the next join of its rooms anywhere takes them over.
//!
//! One task (the [`Runner`]) talks to Redis, so placing, renewing and giving back a room happen
//! in order; the hub asks it with [`Cluster::place`] and hears back through [`ClusterEvent`]s.

mod lease;
mod node;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use huddle_signal_proto::Placement;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{AsyncCommands, RedisError};
use serde::Serialize;
use tokio::sync::{mpsc, oneshot, watch};

use crate::hub::Hub;
use crate::media::Media;
use lease::{Lease, Renewed};
pub use node::NodeRecord;

/// How often a node refreshes its record and renews its leases.
const HEARTBEAT: Duration = Duration::from_secs(2);
/// A record and a lease outlive two missed heartbeats, no more: a node that dies is forgotten,
/// and its rooms can be taken over, within this.
const TTL: Duration = Duration::from_secs(6);
/// A Redis command that takes longer than this fails (Redis counts as unreachable).
const REDIS_TIMEOUT: Duration = Duration::from_millis(1500);
/// Requests from the hub waiting for the runner; past it a placement is refused at once.
const COMMANDS: usize = 1024;
/// Answers for the hub waiting to be taken.
const EVENTS: usize = 1024;

const NODE_PREFIX: &str = "huddle:node:";
const ROOM_PREFIX: &str = "huddle:room:";

/// `huddle serve --redis …`: this node and where the cluster's state lives.
#[derive(Clone)]
pub struct ClusterConfig {
    /// `redis://` or `rediss://`, with a password if any.
    pub redis: String,
    pub node_id: String,
    /// Where browsers reach this node: `https://host:port`.
    pub public_url: String,
    /// How long a stopping node waits for its pages to move before it closes what is left.
    pub drain_timeout: Duration,
}

impl std::fmt::Debug for ClusterConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The Redis URL may carry a password.
        f.debug_struct("ClusterConfig")
            .field("node_id", &self.node_id)
            .field("public_url", &self.public_url)
            .field("drain_timeout", &self.drain_timeout)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClusterError {
    #[error("invalid Redis URL: {0}")]
    Url(RedisError),
    #[error("node id {0:?}: use 1 to 64 letters, digits, '-', '_' or '.'")]
    NodeId(String),
    #[error("public URL {0:?}: expected http(s)://host[:port] with no '|'")]
    PublicUrl(String),
}

/// What the runner tells the hub.
pub enum ClusterEvent {
    /// Where a room asked about with [`Cluster::place`] lives.
    Placed { room: String, placement: Placement },
    /// Another node holds this room's lease now: this node must let its pages go.
    Lost { room: String },
}

enum Command {
    Place(String),
    /// A WHIP/WHEP request reached this node: where the room's media is.
    Locate(String, oneshot::Sender<Placement>),
    Vacate(String),
    Drain(oneshot::Sender<()>),
    Stop(oneshot::Sender<()>),
}

/// What the runner last read of the cluster, for `welcome` and `/api/cluster`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct View {
    /// Live nodes, this one first.
    pub nodes: Vec<NodeRecord>,
    /// Whether the last heartbeat reached Redis.
    pub reachable: bool,
}

/// A handle on this node's membership of the cluster, cheap to clone.
#[derive(Clone)]
pub struct Cluster {
    commands: mpsc::Sender<Command>,
    view: watch::Receiver<View>,
    redis: ConnectionManager,
    node_id: std::sync::Arc<str>,
    drain_timeout: Duration,
}

impl Cluster {
    /// A handle, the hub's end of the runner's answers, and the runner to start once the hub
    /// runs. Nothing is sent to Redis before [`Runner::spawn`]; an unreachable Redis is not an
    /// error here (the node comes up and joins the cluster when Redis answers).
    pub fn new(
        config: ClusterConfig,
    ) -> Result<(Self, mpsc::Receiver<ClusterEvent>, Runner), ClusterError> {
        if !node::valid_id(&config.node_id) {
            return Err(ClusterError::NodeId(config.node_id));
        }
        let url_ok = (config.public_url.starts_with("https://")
            || config.public_url.starts_with("http://"))
            && !config.public_url.contains('|');
        if !url_ok {
            return Err(ClusterError::PublicUrl(config.public_url));
        }
        let client = redis::Client::open(config.redis.as_str()).map_err(ClusterError::Url)?;
        let manager = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(REDIS_TIMEOUT))
            .set_response_timeout(Some(REDIS_TIMEOUT))
            .set_number_of_retries(1);
        let redis =
            ConnectionManager::new_lazy_with_config(client, manager).map_err(ClusterError::Url)?;
        let (commands, inbox) = mpsc::channel(COMMANDS);
        let (events, events_rx) = mpsc::channel(EVENTS);
        let (view_tx, view) = watch::channel(View::default());
        let cluster = Self {
            commands,
            view,
            redis: redis.clone(),
            node_id: config.node_id.as_str().into(),
            drain_timeout: config.drain_timeout,
        };
        let runner = Runner {
            config,
            redis,
            inbox,
            events,
            view: view_tx,
            owned: HashMap::new(),
            draining: false,
            reachable: None,
            cpu: CpuSampler::default(),
            sessions: 0,
            started: crate::http::unix_now(),
        };
        Ok((cluster, events_rx, runner))
    }

    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// How often every node refreshes its view of the others.
    pub fn heartbeat(&self) -> Duration {
        HEARTBEAT
    }

    pub fn drain_timeout(&self) -> Duration {
        self.drain_timeout
    }

    /// Asks where `room` lives; the answer comes as [`ClusterEvent::Placed`]. When the runner
    /// is too far behind to ask, the answer is now: unavailable.
    pub fn place(&self, room: String) -> Result<(), Placement> {
        self.commands
            .try_send(Command::Place(room))
            .map_err(|_| Placement::Unavailable {
                why: "the cluster is busy placing rooms; try again in a moment".into(),
            })
    }

    /// Where `room`'s media is, for a WHIP or WHEP request that reached this node: a room with
    /// no owner yet is taken here (a WHIP client may not follow a redirect to another node).
    pub async fn locate(&self, room: String) -> Placement {
        let (tx, rx) = oneshot::channel();
        let unavailable = || Placement::Unavailable {
            why: "the cluster is busy placing rooms; try again in a moment".into(),
        };
        if self.commands.try_send(Command::Locate(room, tx)).is_err() {
            return unavailable();
        }
        rx.await.unwrap_or_else(|_| unavailable())
    }

    /// `room` is no longer hosted here: its lease is given back.
    pub fn vacate(&self, room: String) {
        if self.commands.try_send(Command::Vacate(room)).is_err() {
            tracing::info!("cluster runner behind; its next heartbeat gives the lease back");
        }
    }

    /// The public URLs of the live nodes, this one first.
    pub fn node_urls(&self) -> Vec<String> {
        self.view
            .borrow()
            .nodes
            .iter()
            .map(|n| n.url.clone())
            .collect()
    }

    pub fn view(&self) -> View {
        self.view.borrow().clone()
    }

    /// Every room lease in Redis, for `/api/cluster`: room → (node, fence).
    pub async fn rooms(&self) -> Result<Vec<(String, String, u64)>, RedisError> {
        let mut redis = self.redis.clone();
        let keys = scan(&mut redis, &format!("{ROOM_PREFIX}*")).await?;
        let values = mget(&mut redis, &keys).await?;
        let mut rooms: Vec<(String, String, u64)> = keys
            .iter()
            .zip(values)
            .filter_map(|(key, raw)| {
                let lease = Lease::parse(&raw?)?;
                Some((key[ROOM_PREFIX.len()..].to_owned(), lease.node, lease.fence))
            })
            .collect();
        rooms.sort();
        Ok(rooms)
    }

    /// Marks this node draining (no new rooms come here) and waits until the cluster knows.
    pub async fn drain(&self) {
        let (tx, rx) = oneshot::channel();
        if self.commands.send(Command::Drain(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }

    /// Gives back every lease and removes this node's record.
    pub async fn stop(&self) {
        let (tx, rx) = oneshot::channel();
        if self.commands.send(Command::Stop(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }
}

/// A lease this node holds, and what holds it: signaling (the room core hosts the room) or
/// media (the media peer has WHIP/WHEP sessions of it). It is given back when neither does; each
/// heartbeat asks both, so a lost `vacate` costs a heartbeat, not a lease held forever.
struct Held {
    lease: Lease,
    signaling: bool,
    media: bool,
    /// When a request last found the room here: its join or session may not be in place yet.
    since: Instant,
}

/// How long a room just found here is held before the hub or the media peer must show it in use.
const HOLD_GRACE: Duration = Duration::from_secs(5);

/// Who asks for a room's placement.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Asker {
    /// A page's join: the room goes to its home node, or its second choice ([`node::choose`]).
    Signaling,
    /// A WHIP/WHEP request: the room is taken by the node it reached.
    Media,
}

/// The one task that talks to Redis for this node.
pub struct Runner {
    config: ClusterConfig,
    redis: ConnectionManager,
    inbox: mpsc::Receiver<Command>,
    events: mpsc::Sender<ClusterEvent>,
    view: watch::Sender<View>,
    /// The leases this node holds, by room.
    owned: HashMap<String, Held>,
    draining: bool,
    /// Whether Redis answered last time (`None` before the first try), to log changes once.
    reachable: Option<bool>,
    cpu: CpuSampler,
    /// The media peer's sessions at the last heartbeat.
    sessions: usize,
    started: u64,
}

impl Runner {
    /// Runs until [`Cluster::stop`]; `hub` tells it this node's load, `media` which rooms
    /// have WHIP/WHEP sessions.
    pub fn spawn(self, hub: Hub, media: Option<Media>) -> tokio::task::JoinHandle<()> {
        tokio::spawn(self.run(hub, media))
    }

    async fn run(mut self, hub: Hub, media: Option<Media>) {
        let mut tick = tokio::time::interval(HEARTBEAT);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // A command taken from the inbox while gathering placements, to run next.
        let mut deferred = None;
        loop {
            let command = match deferred.take() {
                Some(command) => command,
                None => tokio::select! {
                    command = self.inbox.recv() => match command {
                        Some(command) => command,
                        None => return,
                    },
                    _ = tick.tick() => {
                        self.heartbeat(&hub, media.as_ref()).await;
                        continue;
                    }
                },
            };
            match command {
                Command::Place(room) => {
                    // Every placement waiting goes in one round trip.
                    let mut rooms = vec![room];
                    while rooms.len() < PIPELINE {
                        match self.inbox.try_recv() {
                            Ok(Command::Place(room)) => rooms.push(room),
                            Ok(other) => {
                                deferred = Some(other);
                                break;
                            }
                            Err(_) => break,
                        }
                    }
                    for (room, placement) in self.place_all(rooms, &hub).await {
                        let event = ClusterEvent::Placed { room, placement };
                        if self.events.send(event).await.is_err() {
                            return; // the hub is gone
                        }
                    }
                }
                Command::Locate(room, reply) => {
                    let _ = reply.send(self.place(&room, Asker::Media, &hub).await);
                }
                Command::Vacate(room) => {
                    if let Some(held) = self.owned.get_mut(&room) {
                        held.signaling = false;
                    }
                    self.release_unheld().await;
                }
                Command::Drain(done) => {
                    self.draining = true;
                    self.heartbeat(&hub, media.as_ref()).await;
                    let _ = done.send(());
                }
                Command::Stop(done) => {
                    self.stop().await;
                    let _ = done.send(());
                    return;
                }
            }
        }
    }

    /// Places pages' rooms: one claim each, all in one pipeline; a room the claims do not settle
    /// (a dead owner to take over, a lost race, a stale view) goes on alone ([`Runner::place`]).
    async fn place_all(&mut self, rooms: Vec<String>, hub: &Hub) -> Vec<(String, Placement)> {
        let mut placed = Vec::with_capacity(rooms.len());
        let mut claims = Vec::new();
        match self.nodes_and_me(hub).await {
            Ok((nodes, _)) => {
                for room in rooms {
                    match node::choose(&nodes, &room) {
                        Some(target) => claims.push((room, target.clone())),
                        None => placed.push((room, no_node_takes_rooms())),
                    }
                }
            }
            Err(e) => {
                self.note_reachable(false, &e.to_string());
                placed.extend(rooms.into_iter().map(|room| {
                    let placement = redis_down(&room);
                    (room, placement)
                }));
            }
        }
        let replies = {
            let invocations: Vec<_> = claims
                .iter()
                .map(|(room, target)| claim_for(room, target, ""))
                .collect();
            pipelined(&mut self.redis, lease::claim(), &invocations).await
        };
        let replies: Vec<(i64, String)> = match replies {
            Ok(replies) => replies,
            Err(e) => {
                self.note_reachable(false, &e.to_string());
                placed.extend(claims.into_iter().map(|(room, _)| {
                    let placement = redis_down(&room);
                    (room, placement)
                }));
                return placed;
            }
        };
        for ((room, target), (won, value)) in claims.into_iter().zip(replies) {
            let settled = match self
                .settle(&room, Asker::Signaling, &target, won, value)
                .await
            {
                Ok(Settled::Placed(placement)) => placement,
                Ok(_) => self.place(&room, Asker::Signaling, hub).await,
                Err(e) => {
                    self.note_reachable(false, &e.to_string());
                    redis_down(&room)
                }
            };
            placed.push((room, settled));
        }
        placed
    }

    async fn place(&mut self, room: &str, asker: Asker, hub: &Hub) -> Placement {
        match self.try_place(room, asker, hub).await {
            Ok(placement) => placement,
            Err(e) => {
                self.note_reachable(false, &e.to_string());
                redis_down(room)
            }
        }
    }

    async fn try_place(
        &mut self,
        room: &str,
        asker: Asker,
        hub: &Hub,
    ) -> Result<Placement, RedisError> {
        // The claim answers with the owner when there is one. What it saw of a dead or foreign
        // owner is claimed over on the next turn; a lost race tries again; three turns in a row
        // means the room is being fought over.
        let mut seen = String::new();
        for _ in 0..3 {
            let (nodes, me) = self.nodes_and_me(hub).await?;
            let target = match asker {
                Asker::Media if !self.draining => Some(me),
                _ => node::choose(&nodes, room).cloned(),
            };
            let Some(target) = target else {
                return Ok(no_node_takes_rooms());
            };
            let (won, value): (i64, String) = claim_for(room, &target, &seen)
                .invoke_async(&mut self.redis)
                .await?;
            match self.settle(room, asker, &target, won, value).await? {
                Settled::Placed(placement) => return Ok(placement),
                Settled::ClaimOver(value) => seen = value,
                Settled::StaleView => {
                    // The chosen node left since the last heartbeat: choose from a fresh view.
                    let nodes = self.nodes().await?;
                    self.publish(nodes, None);
                    seen = String::new();
                }
            }
        }
        Ok(Placement::Unavailable {
            why: format!("room '{room}' is being placed by several nodes at once; try again"),
        })
    }

    /// The nodes as of the last heartbeat (at most 2 s old: no scan of the registry per room),
    /// and this node's record among them.
    async fn nodes_and_me(
        &mut self,
        hub: &Hub,
    ) -> Result<(Vec<NodeRecord>, NodeRecord), RedisError> {
        let mut nodes = self.view.borrow().nodes.clone();
        if nodes.is_empty() {
            nodes = self.nodes().await?;
        }
        let me = match nodes.iter().find(|n| n.id == self.config.node_id) {
            Some(me) => NodeRecord {
                draining: self.draining,
                ..me.clone()
            },
            None => {
                let me = self.record(hub).await;
                nodes.insert(0, me.clone());
                me
            }
        };
        Ok((nodes, me))
    }

    /// What a claim of `room` for `target` answered (`won`, `value`: see [`lease::claim`]).
    async fn settle(
        &mut self,
        room: &str,
        asker: Asker,
        target: &NodeRecord,
        won: i64,
        value: String,
    ) -> Result<Settled, RedisError> {
        match won {
            1 => {
                tracing::info!(room, node = %target.id, "room placed");
                if target.id != self.config.node_id {
                    return Ok(Settled::Placed(Placement::Elsewhere {
                        url: target.url.clone(),
                    }));
                }
                if let Some(lease) = Lease::parse(&value) {
                    self.hold(room, lease, asker);
                }
                return Ok(Settled::Placed(Placement::Here));
            }
            2 => return Ok(Settled::StaleView),
            _ => {}
        }
        // Held already (`value`), or changed since it was seen (`value`, maybe empty).
        Ok(match Lease::parse(&value) {
            Some(lease) if lease.node == self.config.node_id && !self.draining => {
                self.hold(room, lease, asker);
                Settled::Placed(Placement::Here)
            }
            Some(lease) => {
                // The last heartbeat's view saves a round trip; a node it does not know yet
                // (just started) is asked for.
                let owner = match self.known(&lease.node) {
                    Some(node) => Some(node),
                    None => self.node(&lease.node).await?,
                };
                if owner.is_some_and(|n| !n.draining && n.id != self.config.node_id) {
                    Settled::Placed(Placement::Elsewhere { url: lease.url })
                } else {
                    // Its owner is gone or leaving: take it over, if nobody else did first.
                    Settled::ClaimOver(lease.raw)
                }
            }
            None => Settled::ClaimOver(value), // nothing now, or not a lease of ours: replaced
        })
    }

    fn hold(&mut self, room: &str, lease: Lease, asker: Asker) {
        let held = self.owned.entry(room.to_owned()).or_insert(Held {
            lease: lease.clone(),
            signaling: false,
            media: false,
            since: Instant::now(),
        });
        held.lease = lease;
        held.since = Instant::now();
        match asker {
            Asker::Signaling => held.signaling = true,
            Asker::Media => held.media = true,
        }
    }

    /// Gives back the leases nothing holds any more.
    async fn release_unheld(&mut self) {
        let unheld: Vec<String> = self
            .owned
            .iter()
            .filter(|(_, held)| !held.signaling && !held.media)
            .map(|(room, _)| room.clone())
            .collect();
        self.release(unheld).await;
    }

    /// Gives back the leases of `rooms`, in one round trip.
    async fn release(&mut self, rooms: Vec<String>) {
        let invocations: Vec<_> = rooms
            .iter()
            .filter_map(|room| {
                let held = self.owned.remove(room)?;
                let mut release = lease::release().key(format!("{ROOM_PREFIX}{room}"));
                release.arg(held.lease.raw);
                Some(release)
            })
            .collect();
        let released: Result<Vec<i64>, _> =
            pipelined(&mut self.redis, lease::release(), &invocations).await;
        if let Err(e) = released {
            tracing::debug!(error = %e, "leases not given back; they expire by themselves");
        }
    }

    /// Refreshes this node's record, renews its leases (writing back those Redis lost) and reads
    /// the cluster's nodes.
    async fn heartbeat(&mut self, hub: &Hub, media: Option<&Media>) {
        // A room keeps its lease while the room core hosts it or the media peer has WHIP/WHEP
        // sessions of it. Either that cannot answer now keeps what it held.
        let hosted = hub.hosted_rooms().await;
        let streamed = match media {
            Some(media) => media.stats().await.map(|s| {
                self.sessions = s.echo + s.publish + s.watch + s.upstream + s.downstream;
                s.streamed_rooms
            }),
            None => Some(Default::default()),
        };
        for (room, held) in &mut self.owned {
            if held.since.elapsed() < HOLD_GRACE {
                continue;
            }
            if let Some(hosted) = &hosted {
                held.signaling = hosted.binary_search(room).is_ok();
            }
            if let Some(streamed) = &streamed {
                held.media = streamed.contains(room);
            }
        }
        self.release_unheld().await;
        let me = self.record(hub).await;
        match self.try_heartbeat(&me).await {
            Ok((nodes, restored, lost)) => {
                let again = self.reachable == Some(false);
                self.note_reachable(true, "");
                if again || restored > 0 {
                    tracing::info!(
                        node = %me.id,
                        leases = self.owned.len(),
                        restored,
                        "registered with the cluster's Redis; leases reconciled"
                    );
                }
                for room in lost {
                    tracing::warn!(room, "another node holds this room now; moving its pages");
                    self.owned.remove(&room);
                    let _ = self.events.send(ClusterEvent::Lost { room }).await;
                }
                self.publish(nodes, Some(me));
            }
            Err(e) => {
                self.note_reachable(false, &e.to_string());
                self.view.send_modify(|v| v.reachable = false);
            }
        }
    }

    async fn try_heartbeat(
        &mut self,
        me: &NodeRecord,
    ) -> Result<(Vec<NodeRecord>, usize, Vec<String>), RedisError> {
        let record = serde_json::to_string(me).unwrap_or_default();
        let _: () = redis::cmd("SET")
            .arg(format!("{NODE_PREFIX}{}", me.id))
            .arg(record)
            .arg("PX")
            .arg(TTL.as_millis() as u64)
            .query_async(&mut self.redis)
            .await?;
        let (mut restored, mut lost) = (0, Vec::new());
        let owned: Vec<(String, String)> = self
            .owned
            .iter()
            .map(|(room, held)| (room.clone(), held.lease.raw.clone()))
            .collect();
        let invocations: Vec<_> = owned
            .iter()
            .map(|(room, raw)| {
                let mut renew = lease::renew().key(format!("{ROOM_PREFIX}{room}"));
                renew.arg(raw).arg(TTL.as_millis() as u64);
                renew
            })
            .collect();
        let replies: Vec<i64> = pipelined(&mut self.redis, lease::renew(), &invocations).await?;
        for ((room, _), reply) in owned.into_iter().zip(replies) {
            match Renewed::from_reply(reply) {
                Renewed::Held => {}
                Renewed::Restored => restored += 1,
                Renewed::Lost => lost.push(room),
            }
        }
        Ok((self.nodes().await?, restored, lost))
    }

    async fn stop(&mut self) {
        let rooms: Vec<String> = self.owned.keys().cloned().collect();
        self.release(rooms).await;
        let key = format!("{NODE_PREFIX}{}", self.config.node_id);
        let deleted: Result<i64, _> = self.redis.del(&key).await;
        if let Err(e) = deleted {
            tracing::info!(error = %e, "node record not removed; it expires by itself");
        }
    }

    /// This node's record as of now.
    async fn record(&mut self, hub: &Hub) -> NodeRecord {
        let stats = hub.stats().await.unwrap_or_default();
        NodeRecord {
            id: self.config.node_id.clone(),
            url: self.config.public_url.clone(),
            draining: self.draining,
            rooms: stats.rooms,
            participants: stats.participants,
            media_sessions: self.sessions,
            cpu: self.cpu.sample(),
            started: self.started,
        }
    }

    /// Makes `nodes` the view: this node first (`me`, fresher than what Redis had, when given),
    /// the others by id.
    fn publish(&mut self, mut nodes: Vec<NodeRecord>, me: Option<NodeRecord>) {
        let me = me.or_else(|| nodes.iter().find(|n| n.id == self.config.node_id).cloned());
        nodes.retain(|n| n.id != self.config.node_id);
        nodes.sort_by(|a, b| a.id.cmp(&b.id));
        nodes.splice(0..0, me);
        self.view.send_replace(View {
            nodes,
            reachable: true,
        });
    }

    /// A node as the last heartbeat saw it.
    fn known(&self, id: &str) -> Option<NodeRecord> {
        self.view
            .borrow()
            .nodes
            .iter()
            .find(|n| n.id == id)
            .cloned()
    }

    async fn node(&mut self, id: &str) -> Result<Option<NodeRecord>, RedisError> {
        let raw: Option<String> = self.redis.get(format!("{NODE_PREFIX}{id}")).await?;
        Ok(raw.and_then(|raw| serde_json::from_str(&raw).ok()))
    }

    async fn nodes(&mut self) -> Result<Vec<NodeRecord>, RedisError> {
        let keys = scan(&mut self.redis, &format!("{NODE_PREFIX}*")).await?;
        let values = mget(&mut self.redis, &keys).await?;
        Ok(values
            .into_iter()
            .flatten()
            .filter_map(|raw| serde_json::from_str(&raw).ok())
            .collect())
    }

    fn note_reachable(&mut self, reachable: bool, error: &str) {
        if self.reachable == Some(reachable) {
            return;
        }
        if !reachable {
            tracing::warn!(
                error,
                "the cluster's Redis does not answer: running rooms go on, new rooms are refused \
                 until it is back"
            );
        }
        self.reachable = Some(reachable);
    }
}

/// What a claim's answer leaves to do.
enum Settled {
    Placed(Placement),
    /// Claim again over this value (a dead or draining owner's lease, or what is there now).
    ClaimOver(String),
    /// The chosen node is gone or draining: the view of the nodes is stale.
    StaleView,
}

/// Commands a pipeline carries at most: a round trip for many rooms, and a bounded reply.
const PIPELINE: usize = 256;

/// The claim of `room` for `target`, over `seen` (`""`: over nothing).
fn claim_for<'a>(room: &str, target: &NodeRecord, seen: &str) -> redis::ScriptInvocation<'a> {
    let mut claim = lease::claim().key(format!("{ROOM_PREFIX}{room}"));
    claim
        .key(format!("{NODE_PREFIX}{}", target.id))
        .arg(seen)
        .arg(&target.id)
        .arg(&target.url)
        .arg(TTL.as_millis() as u64);
    claim
}

/// Runs `invocations` of `script` in pipelines of [`PIPELINE`]; the replies in order. A pipeline
/// cannot load the script on a miss the way one invocation does: on `NOSCRIPT` (Redis restarted)
/// it is loaded and the pipeline sent again.
async fn pipelined<T: redis::FromRedisValue>(
    redis: &mut ConnectionManager,
    script: &redis::Script,
    invocations: &[redis::ScriptInvocation<'_>],
) -> Result<Vec<T>, RedisError> {
    let mut replies = Vec::with_capacity(invocations.len());
    // An empty slice makes no round trip (no chunks).
    for chunk in invocations.chunks(PIPELINE) {
        let mut pipe = redis::pipe();
        for invocation in chunk {
            pipe.invoke_script(invocation);
        }
        let chunk_replies: Vec<T> = match pipe.query_async(redis).await {
            Err(e) if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) => {
                script.load_async(redis).await?;
                pipe.query_async(redis).await?
            }
            other => other?,
        };
        replies.extend(chunk_replies);
    }
    Ok(replies)
}

fn redis_down(room: &str) -> Placement {
    Placement::Unavailable {
        why: format!("room '{room}' cannot be placed now: the cluster's Redis does not answer"),
    }
}

fn no_node_takes_rooms() -> Placement {
    Placement::Unavailable {
        why: "no node of the cluster takes new rooms now (all are draining)".into(),
    }
}

/// Every key matching `pattern` (SCAN: never blocks Redis the way KEYS does).
async fn scan(redis: &mut ConnectionManager, pattern: &str) -> Result<Vec<String>, RedisError> {
    let mut cursor: u64 = 0;
    let mut keys = Vec::new();
    loop {
        let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(256)
            .query_async(redis)
            .await?;
        keys.extend(batch);
        if next == 0 {
            keys.sort();
            keys.dedup();
            return Ok(keys);
        }
        cursor = next;
    }
}

async fn mget(
    redis: &mut ConnectionManager,
    keys: &[String],
) -> Result<Vec<Option<String>>, RedisError> {
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    redis::cmd("MGET").arg(keys).query_async(redis).await
}

/// This process's CPU use between samples, from `/proc/self/stat`.
#[derive(Default)]
struct CpuSampler {
    last: Option<(Instant, u64)>,
}

impl CpuSampler {
    /// Cores' worth used since the last call (0 the first time, or off Linux).
    fn sample(&mut self) -> f64 {
        let Some(ticks) = cpu_ticks() else { return 0.0 };
        let now = Instant::now();
        let used = match self.last {
            Some((at, before)) => {
                // SAFETY: sysconf only reads a configuration value.
                let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
                let secs = now.duration_since(at).as_secs_f64().max(1e-3);
                ticks.saturating_sub(before) as f64 / hz / secs
            }
            None => 0.0,
        };
        self.last = Some((now, ticks));
        used
    }
}

/// utime + stime of this process, in clock ticks.
fn cpu_ticks() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name (field 2) may hold spaces; the fields after its ')' are fixed.
    let rest = stat.rsplit_once(')')?.1;
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}
