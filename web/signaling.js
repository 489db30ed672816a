// The signaling connection: one WebSocket to /ws, protocol v2 (docs/protocol.md).
// Reconnects with backoff and resumes the same peer id when the server still remembers it.
// On a cluster, connects first to the room's home node (named by the page's HTML), follows
// `moved` to the node that hosts the room, and when its node stops answering tries the other
// nodes its `welcome` named.

export const PROTOCOL_VERSION = 2;

const PING_EVERY_MS = 5000;
const PONG_TIMEOUT_MS = 12000;
const BACKOFF_MS = [500, 1000, 2000, 4000, 8000];
const CLUSTER_RETRY_MAX_MS = 1000;
/** Close codes after which the server will not take this page back (docs/protocol.md). */
const FINAL_CLOSES = new Set([4001, 4003, 4004, 4005]);
/** The room is on another node: the `moved` message before it said where. */
const MOVED = 4010;

/** The signaling URL of a node's public URL (`https://host:port` → `wss://host:port/ws`). */
function socketUrl(nodeUrl) {
  const url = new URL('/ws', nodeUrl);
  url.protocol = url.protocol === 'http:' ? 'ws:' : 'wss:';
  return url.href;
}

/** The weight of the node at public URL `url` for `room` (its canonical name): FNV-1a over
 *  room, NUL, URL, finished with MurmurHash3's fmix32 — as the server computes it
 *  (huddle_signal_proto::home, docs/protocol.md). */
export function weight(room, url) {
  let h = 0x811c9dc5;
  for (const b of new TextEncoder().encode(`${room}\u0000${url}`)) {
    h ^= b;
    h = Math.imul(h, 0x01000193);
  }
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

/** A room's home node among the cluster's public URLs (the heaviest; equal weights go to the
 *  smaller URL), or undefined without a cluster. */
export function homeNode(room, nodeUrls) {
  const canonical = room.toLowerCase();
  let best;
  for (const url of nodeUrls) {
    const w = weight(canonical, url);
    if (!best || w > best.w || (w === best.w && url < best.url)) best = { url, w };
  }
  return best?.url;
}

export class Signaling extends EventTarget {
  /** `url`: this server's /ws; `nodeUrls`: on a cluster, its nodes' public URLs. */
  constructor(url, nodeUrls = []) {
    super();
    this.url = url;
    /** The cluster's nodes' public URLs, from the page and then the last `welcome`. */
    this.nodeUrls = nodeUrls;
    /** Their signaling URLs (empty: one server). */
    this.nodes = nodeUrls.map(socketUrl);
    /** Where the last `moved` sent us (`null`: any other node). */
    this.movedTo = undefined;
    this.ws = null;
    this.joinRequest = null;
    this.resumeToken = null;
    this.attempt = 0;
    this.closedByUs = false;
    this.lastPong = 0;
    this.pinger = null;
    this.retryTimer = null;
  }

  /** Connects (and reconnects until `leave`) and joins `room`, with an access token if any;
   *  `mode` (`mesh` or `sfu`) is what a room this join creates becomes; `tiles` is how many
   *  video tiles the page shows at once (an SFU room's server gives lines to no more at first). */
  join(room, name, state, token = null, mode = null, tiles = null) {
    this.joinRequest = { room, name, state, token, mode, tiles };
    this.closedByUs = false;
    // Straight to the node the room lives on, rather than through another (`moved`).
    const home = homeNode(room, this.nodeUrls);
    if (home && !this.ws) this.url = socketUrl(home);
    this.connect();
  }

  leave() {
    this.closedByUs = true;
    clearTimeout(this.retryTimer);
    clearInterval(this.pinger);
    if (this.ws && this.ws.readyState === WebSocket.OPEN) {
      this.send({ type: 'leave' });
      this.ws.close(1000, 'left');
    }
    this.ws = null;
  }

  send(msg) {
    if (this.ws && this.ws.readyState === WebSocket.OPEN) {
      this.ws.send(JSON.stringify(msg));
      return true;
    }
    return false;
  }

  updateState(state) {
    if (this.joinRequest) this.joinRequest.state = state;
    this.send({ type: 'state', ...state });
  }

  emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }

  connect() {
    clearTimeout(this.retryTimer);
    this.emit('status', { state: this.attempt === 0 ? 'connecting' : 'reconnecting', attempt: this.attempt });
    let ws;
    try {
      ws = new WebSocket(this.url);
    } catch (e) {
      this.scheduleRetry(`cannot open ${this.url}: ${e.message}`);
      return;
    }
    this.ws = ws;
    let opened = false;
    ws.onopen = () => {
      opened = true;
      this.lastPong = performance.now();
      this.sendJoin();
      clearInterval(this.pinger);
      this.pinger = setInterval(() => this.keepalive(), PING_EVERY_MS);
    };
    ws.onmessage = (event) => {
      let msg;
      try {
        msg = JSON.parse(event.data);
      } catch {
        console.warn('huddle: unparsable message from server', event.data);
        return;
      }
      if (msg.type === 'pong') {
        this.lastPong = performance.now();
        return;
      }
      if (msg.type === 'welcome') {
        this.attempt = 0;
        this.resumeToken = msg.resume;
        this.nodeUrls = msg.nodes || [];
        this.nodes = this.nodeUrls.map(socketUrl);
        this.emit('status', { state: 'open' });
      }
      if (msg.type === 'moved') {
        this.movedTo = msg.url ? socketUrl(msg.url) : null;
        return;
      }
      this.emit(msg.type, msg);
    };
    ws.onclose = (event) => {
      clearInterval(this.pinger);
      if (this.ws !== ws) return;
      this.ws = null;
      if (this.closedByUs) return;
      if (event.code === 1009 || event.code === 1008) {
        this.emit('status', { state: 'kicked', reason: event.reason });
        return;
      }
      if (event.code === MOVED && this.movedTo !== undefined) {
        // Another node hosts the room (or this one is going away): go there now, quietly.
        this.url = this.movedTo || this.otherNode();
        this.movedTo = undefined;
        this.connect();
        return;
      }
      // Refused token, removed, room ended: reconnecting would only be refused again.
      if (FINAL_CLOSES.has(event.code)) {
        this.emit('status', { state: 'ended', code: event.code, reason: event.reason });
        return;
      }
      this.scheduleRetry(opened ? 'connection to the server lost' : 'cannot reach the server');
    };
  }

  /** Sends the join (again: a cluster that could not place the room a moment ago). */
  sendJoin() {
    const { room, name, state, token, mode, tiles } = this.joinRequest;
    const join = { type: 'join', v: PROTOCOL_VERSION, room, name, state };
    if (this.resumeToken) join.resume = this.resumeToken;
    if (token) join.token = token;
    if (mode) join.mode = mode;
    if (tiles) join.tiles = Math.min(tiles, 256);
    return this.send(join);
  }

  keepalive() {
    if (performance.now() - this.lastPong > PONG_TIMEOUT_MS) {
      // The server went silent (no FIN ever came): give up on this socket.
      const ws = this.ws;
      this.ws = null;
      if (ws) ws.close();
      this.scheduleRetry('the server stopped answering');
      return;
    }
    this.send({ type: 'ping' });
  }

  /** The next node of the cluster after the current one (the current one alone). */
  otherNode() {
    const others = this.nodes.filter((url) => url !== this.url);
    if (others.length === 0) return this.url;
    return others[this.attempt % others.length];
  }

  scheduleRetry(reason) {
    if (this.closedByUs) return;
    // A node that does not answer may be gone for good: the next try goes to another.
    this.url = this.otherNode();
    // On a cluster, the room comes back on another node within seconds of its node dying
    // (docs/protocol.md): keep asking every second rather than backing off further.
    const cap = this.nodes.length > 1 ? CLUSTER_RETRY_MAX_MS : Infinity;
    const delay = Math.min(cap, BACKOFF_MS[Math.min(this.attempt, BACKOFF_MS.length - 1)]);
    const jittered = delay / 2 + Math.random() * delay / 2;
    this.attempt += 1;
    this.emit('status', { state: 'offline', reason, retryInMs: jittered });
    this.retryTimer = setTimeout(() => this.connect(), jittered);
  }
}
