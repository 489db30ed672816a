// Huddle's web client: lobby (preview, devices, name) and room (mesh or SFU call, chat, screen
// share).

import { Signaling } from './signaling.js';
import { PeerLink } from './peer.js';
import { SfuLink } from './sfu.js';
import { rtcConfig as iceConfig } from './ice.js';
import { tokenFromLink, readClaims, problemWith, describeRefusal, permissionsFromClaims } from './access.js';
import { openCamera, openTrack, openScreen, listDevices, describeMediaError } from './media.js';
import {
  $, showView, banner, showMessage, ensureTile, setTileName, setTileMedia, setTileConnection,
  removeTiles, updateGridSize, layoutGrid, setSpeakerView, feature, appendChat, fillDeviceSelect, setTileActions, renderPeople,
  setTilesPerPage, tilesPerPageNow, turnPage, setTileQuality,
} from './ui.js';

const params = new URLSearchParams(location.search);
const roomFromPath = decodeURIComponent((location.pathname.match(/^\/r\/([^/]+)/) || [])[1] || '');
/** The invitation's access token, if the link has one, and what it says. */
const invite = tokenFromLink(roomFromPath);
const inviteClaims = invite ? readClaims(invite) : null;

const me = {
  room: '',
  name: '',
  id: null,
  camStream: new MediaStream(),
  screenStream: new MediaStream(),
  audio: null, // the microphone track (muted by `enabled`, so the sender never renegotiates)
  video: null, // the camera track, null while the camera is off
  screen: null,
  micOn: true,
  camOn: true,
  mediaError: null,
  /** What the server lets this page do (from the welcome; before it, from the invitation). */
  permissions: permissionsFromClaims(inviteClaims),
  locked: false,
  devices: { video: localStorage.getItem('huddle.video') || '', audio: localStorage.getItem('huddle.audio') || '' },
};

/** Remote participants: id -> { name, state, streams: Map<streamId, MediaStream> }. */
const peers = new Map();
/** id -> PeerLink in a mesh room; in an SFU room the one SfuLink, under `sfu`. */
const links = new Map();
/** The room mode a room this page creates gets (`?mode=mesh|sfu`); the server's default if none. */
const requestedMode = ['mesh', 'sfu', 'auto'].includes(params.get('mode')) ? params.get('mode') : null;
/** Auto rooms: back to peer-to-peer this long after the room is down to two (Jitsi's
 *  backToP2PDelay), so that someone rejoining at once does not make the call switch twice. */
const BACK_TO_P2P_MS = 5000;
let backToP2p = null;
/** SFU rooms: every track the page receives, its id and the receiving line carrying it now, if
 *  any (the server's `tracks`). */
let sfuTracks = [];
/** SFU rooms: an <audio> element per audio line of the server's connection (mid -> element).
 *  The server moves its few audio lines to whoever speaks: sound plays apart from the tiles, so
 *  a tile's picture never restarts when a line changes hands. */
const sfuAudio = new Map();
/** WHIP publishers and WHEP viewers in the room: an auto room then goes through the server. */
let streaming = false;
let signaling = null;
let rtcConfig = { iceServers: [] };
let unread = 0;

// A stable handle for tests and for debugging from the console.
window.huddle = { me, peers, links };

const localView = () => ({
  camStream: me.camStream,
  screenStream: me.screenStream,
  audio: me.audio,
  video: me.video,
  screen: me.screen,
});

function mediaState() {
  return {
    audio: Boolean(me.audio && me.micOn),
    video: Boolean(me.video),
    ...(me.screen ? { screen: me.screenStream.id } : {}),
  };
}

// ---------------------------------------------------------------- lobby

/** What the server takes as a room name (docs/protocol.md). */
const ROOM_NAME = /^[A-Za-z0-9_-]{1,64}$/;

/** A room name close to `name` that the server takes (`café` → `cafe`), or '' if none is. */
function suggestRoom(name) {
  return name.normalize('NFD').replace(/[^A-Za-z0-9_-]/g, '').slice(0, 64);
}

function randomRoom() {
  const a = ['bright', 'calm', 'quick', 'brave', 'sunny', 'quiet', 'bold', 'merry', 'swift', 'clever'];
  const n = ['otter', 'falcon', 'maple', 'harbor', 'comet', 'meadow', 'cedar', 'lynx', 'river', 'ember'];
  const pick = (list) => list[Math.floor(Math.random() * list.length)];
  return `${pick(a)}-${pick(n)}-${Math.floor(10 + Math.random() * 90)}`;
}

async function startLobby() {
  showView('lobby');
  // A room name the server would refuse is said at once, with one it would take in its place.
  const usable = !roomFromPath || ROOM_NAME.test(roomFromPath);
  $('room-input').value = (usable ? roomFromPath : suggestRoom(roomFromPath))
    || inviteClaims?.video?.room || randomRoom();
  if (!usable) {
    const notice = $('room-notice');
    notice.textContent = `“${roomFromPath.slice(0, 64)}” cannot be a room name: use letters, digits, - and _ (up to 64).`;
    notice.hidden = false;
  }
  $('name-input').value = params.get('name') || localStorage.getItem('huddle.name') || '';
  const room = $('room-input').value;
  const label = () => {
    const r = $('room-input').value.trim();
    $('join-button').textContent = ROOM_NAME.test(r) ? `Join ${r}` : 'Join room';
  };
  if (roomFromPath || invite) label();
  $('room-input').addEventListener('input', label);
  if (invite && !showInvite(room)) return;
  if (usable && params.get('autojoin') === '1' && $('name-input').value.trim()) {
    // Join while the camera starts: signaling, negotiation, ICE and DTLS run meanwhile, and the
    // tracks go into the already negotiated transceivers when they arrive (replaceTrack).
    const media = acquireMedia();
    join();
    await media;
    for (const link of links.values()) {
      link.setTrack('audio', me.audio);
      link.setTrack('video', me.video);
    }
    signaling?.updateState(mediaState());
    if (me.mediaError) banner(me.mediaError, 'warn', 8000);
    return;
  }
  await acquireMedia();
  if (!$('name-input').value) $('name-input').focus();
}

/** Shows what the invitation is for, or why it cannot work; whether joining may go on. */
function showInvite(room) {
  const notice = $('invite-notice');
  const problem = problemWith(inviteClaims, room);
  if (problem) {
    showMessage('This invitation does not work', problem, { retry: false });
    return false;
  }
  if (inviteClaims.name) {
    $('name-input').value = inviteClaims.name;
    $('name-input').readOnly = true;
  }
  $('room-input').readOnly = true;
  const p = me.permissions;
  // Nothing to send: no devices to pick, and the preview says why it is dark.
  const watchOnly = !p.sources.includes('camera') && !p.sources.includes('microphone');
  document.querySelector('.devices').hidden = watchOnly;
  if (watchOnly) $('preview-avatar').textContent = 'You will watch and listen';
  const parts = [`You are invited to “${room}”`];
  if (p.admin) parts.push('as a host');
  if (p.sources.length === 0) parts.push('to watch and listen');
  notice.textContent = `${parts.join(' ')}.`;
  notice.hidden = false;
  return true;
}

async function acquireMedia() {
  const may = (source) => me.permissions.sources.includes(source);
  if (!may('camera') && !may('microphone')) {
    me.audio = null;
    me.video = null;
    me.camOn = false;
    rebuildCamStream();
    await refreshDevices();
    renderLocal();
    return;
  }
  const { stream, error } = await openCamera({ videoId: me.devices.video, audioId: me.devices.audio });
  // Only what the invitation allows is sent.
  if (!may('microphone')) stream.getAudioTracks().forEach((t) => { t.stop(); stream.removeTrack(t); });
  if (!may('camera')) stream.getVideoTracks().forEach((t) => { t.stop(); stream.removeTrack(t); });
  me.audio = stream.getAudioTracks()[0] || null;
  me.video = stream.getVideoTracks()[0] || null;
  me.camOn = Boolean(me.video);
  me.mediaError = error;
  rebuildCamStream();
  const notice = $('media-notice');
  notice.textContent = error || '';
  notice.hidden = !error;
  await refreshDevices();
  renderLocal();
}

function rebuildCamStream() {
  for (const t of me.camStream.getTracks()) me.camStream.removeTrack(t);
  if (me.audio) me.camStream.addTrack(me.audio);
  if (me.video) me.camStream.addTrack(me.video);
  const preview = document.querySelector('video[data-role="local"]');
  preview.srcObject = me.video ? new MediaStream([me.video]) : null;
}

async function refreshDevices() {
  const devices = await listDevices();
  const videoId = me.video?.getSettings().deviceId || me.devices.video;
  const audioId = me.audio?.getSettings().deviceId || me.devices.audio;
  for (const id of ['video-device', 'call-video-device']) fillDeviceSelect($(id), devices.video, videoId);
  for (const id of ['audio-device', 'call-audio-device']) fillDeviceSelect($(id), devices.audio, audioId);
}

function renderLocal() {
  for (const id of ['lobby-mic', 'btn-mic']) {
    const b = $(id);
    b.setAttribute('aria-pressed', String(me.micOn && Boolean(me.audio)));
    b.disabled = !me.audio;
    b.title = !me.audio ? 'No microphone' : me.micOn ? 'Mute microphone (M)' : 'Unmute microphone (M)';
  }
  // The state in words too, not by colour alone (the icon is also crossed out when off).
  $('btn-mic').querySelector('.label').textContent = me.micOn && me.audio ? 'Mute' : 'Unmute';
  const may = (source) => me.permissions.sources.includes(source);
  for (const id of ['lobby-mic', 'btn-mic']) {
    if (!may('microphone')) $(id).title = 'Your invitation does not allow the microphone';
  }
  for (const id of ['lobby-cam', 'btn-cam']) {
    const b = $(id);
    b.setAttribute('aria-pressed', String(Boolean(me.video)));
    b.disabled = !may('camera');
    b.title = !may('camera') ? 'Your invitation does not allow the camera'
      : me.video ? 'Turn camera off (V)' : 'Turn camera on (V)';
  }
  $('btn-cam').querySelector('.label').textContent = me.video ? 'Stop video' : 'Start video';
  $('btn-screen').setAttribute('aria-pressed', String(Boolean(me.screen)));
  $('btn-screen').hidden = !may('screen_share');
  const chatAllowed = me.permissions.publishData;
  $('chat-input').disabled = !chatAllowed;
  $('chat-input').placeholder = chatAllowed ? 'Message everyone' : 'Your invitation does not allow chat';
  // Each guest of an invitation-only room needs their own invitation: a bare link would not do.
  $('copy-link').hidden = Boolean(invite);
  $('btn-lock').hidden = !me.permissions.admin;
  $('btn-end').hidden = !me.permissions.admin;
  $('btn-lock').setAttribute('aria-pressed', String(me.locked));
  $('btn-lock').textContent = me.locked ? 'Unlock room' : 'Lock room';
  $('preview-avatar').hidden = Boolean(me.video);
  if (me.audio) me.audio.enabled = me.micOn;
  const tile = document.querySelector('.tile[data-key="self"]');
  if (tile) setTileMedia(tile, mediaState());
  if (!$('room').hidden) refreshPeople();
}

// ---------------------------------------------------------------- local controls

async function toggleMic() {
  if (!me.audio) return;
  me.micOn = !me.micOn;
  renderLocal();
  signaling?.updateState(mediaState());
}

async function toggleCamera() {
  if (!me.video && !me.permissions.sources.includes('camera')) return;
  if (me.video) {
    me.video.stop();
    me.video = null;
  } else {
    try {
      me.video = await openTrack('video', me.devices.video);
    } catch (e) {
      banner(describeMediaError(e), 'warn', 6000);
      return;
    }
  }
  rebuildCamStream();
  for (const link of links.values()) link.setTrack('video', me.video);
  renderLocal();
  signaling?.updateState(mediaState());
}

async function switchDevice(kind, deviceId) {
  me.devices[kind] = deviceId;
  localStorage.setItem(`huddle.${kind}`, deviceId);
  if (kind === 'video' && !me.video) return; // used when the camera comes back on
  let track;
  try {
    track = await openTrack(kind, deviceId);
  } catch (e) {
    banner(describeMediaError(e), 'warn', 6000);
    return;
  }
  const old = me[kind];
  me[kind] = track;
  if (old) old.stop();
  rebuildCamStream();
  // replaceTrack: the other side sees the new device without a renegotiation.
  for (const link of links.values()) link.setTrack(kind, track);
  renderLocal();
  refreshDevices();
}

async function toggleScreen() {
  if (!me.screen && !me.permissions.sources.includes('screen_share')) return;
  if (me.screen) {
    stopScreen();
    return;
  }
  let stream;
  try {
    stream = await openScreen();
  } catch (e) {
    if (e.name !== 'NotAllowedError') banner(`Screen sharing failed: ${e.message}`, 'warn', 6000);
    return;
  }
  me.screen = stream.getVideoTracks()[0];
  me.screenStream.addTrack(me.screen);
  me.screen.addEventListener('ended', stopScreen); // the browser's own "Stop sharing"
  // The state goes out before the track, so receivers can tell the new stream is a screen.
  signaling?.updateState(mediaState());
  for (const link of links.values()) link.setScreen(me.screen);
  const tile = ensureTile({ key: 'self-screen', role: 'local-screen', name: 'Your screen' });
  tile.querySelector('video').srcObject = new MediaStream([me.screen]);
  tile.classList.add('screen');
  updateGridSize();
  renderLocal();
}

function stopScreen() {
  if (!me.screen) return;
  me.screenStream.removeTrack(me.screen);
  me.screen.stop();
  me.screen = null;
  for (const link of links.values()) link.setScreen(null);
  signaling?.updateState(mediaState());
  removeTiles((t) => t.dataset.key === 'self-screen');
  renderLocal();
}

function toggleChat(open = $('chat').hidden) {
  // Focus goes back to the button that opened the panel: a hidden input would keep it (Chromium
  // moves it away only at its next style update) and take the keys meant for the call.
  if (!open && $('chat').contains(document.activeElement)) $('btn-chat').focus();
  $('chat').hidden = !open;
  $('btn-chat').setAttribute('aria-pressed', String(open));
  if (open) {
    unread = 0;
    $('chat-badge').hidden = true;
    $('chat-input').focus();
  }
}

// ---------------------------------------------------------------- the call

function join() {
  const name = $('name-input').value.trim();
  const room = $('room-input').value.trim();
  if (!name || !room) return;
  me.name = name;
  me.room = room.toLowerCase();
  localStorage.setItem('huddle.name', name);
  if (location.pathname !== `/r/${me.room}`) {
    history.replaceState(null, '', `/r/${encodeURIComponent(me.room)}${location.search}${location.hash}`);
  }

  showView('room');
  $('room-label').textContent = me.room;
  const self = ensureTile({ key: 'self', role: 'self', name: `${name} (you)` });
  // The preview element itself moves into the grid: one local <video data-role="local">.
  const preview = document.querySelector('video[data-role="local"]');
  self.querySelector('video').replaceWith(preview);
  self.classList.add('self');
  setTileConnection(self, 'connected');
  updateGridSize();
  renderLocal();
  if (me.mediaError) banner(me.mediaError, 'warn', 8000);

  const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
  // On a cluster the page names its nodes: the signaling goes to the room's own.
  const nodes = document.querySelector('meta[name="huddle-nodes"]')?.content.split(' ').filter(Boolean);
  signaling = new Signaling(`${scheme}://${location.host}/ws`, nodes);
  window.huddle.signaling = signaling;
  signaling.addEventListener('status', (e) => onStatus(e.detail));
  signaling.addEventListener('welcome', (e) => onWelcome(e.detail));
  signaling.addEventListener('peer-joined', (e) => {
    addPeer(e.detail.peer);
    if (!e.detail.peer.hidden) announce(`${e.detail.peer.name} joined`);
  });
  signaling.addEventListener('peer-updated', (e) => updatePeer(e.detail.peer));
  signaling.addEventListener('peer-left', (e) => dropPeer(e.detail.id));
  signaling.addEventListener('signal', (e) => onSignal(e.detail));
  signaling.addEventListener('chat', (e) => onChat(e.detail));
  signaling.addEventListener('error', (e) => onServerError(e.detail));
  signaling.addEventListener('muted', (e) => onMuted(e.detail));
  signaling.addEventListener('removed', () => endedBy('You were removed from the room', 'A host of this room removed you.'));
  signaling.addEventListener('room-ended', () => endedBy('The meeting has ended', 'A host ended the room for everyone.'));
  signaling.addEventListener('room-locked', (e) => onLocked(e.detail));
  signaling.addEventListener('tracks', (e) => onTracks(e.detail.tracks));
  signaling.addEventListener('speakers', (e) => onSpeakers(e.detail.ids));
  signaling.addEventListener('streaming', (e) => {
    streaming = e.detail.publishers + e.detail.viewers > 0;
    updateAutoMode();
  });
  signaling.addEventListener('layers', (e) => links.get('sfu')?.setLayers(e.detail.mid, e.detail.active));
  signaling.join(me.room, name, mediaState(), invite, requestedMode, tilesPerPageNow());
}

/** A host turned off one of our sources: stop sending it, and say so. */
function onMuted({ source }) {
  const words = { microphone: 'microphone', camera: 'camera', screen_share: 'screen share', screen_share_audio: 'screen share' };
  if (source === 'microphone' && me.micOn) {
    me.micOn = false;
    renderLocal();
  } else if (source === 'camera' && me.video) {
    toggleCamera();
  } else if (source.startsWith('screen_share')) {
    stopScreen();
  }
  signaling?.updateState(mediaState());
  const again = me.permissions.sources.includes(source) ? ' You can turn it back on.' : '';
  banner(`A host turned off your ${words[source] || source}.${again}`, 'warn', 8000);
}

function onLocked({ locked }) {
  me.locked = locked;
  renderLocal();
  banner(locked ? 'The room is locked: no one else can join.' : 'The room is open again.', 'info', 5000);
}

/** The server is done with us (removed, room ended): no reconnecting. */
function endedBy(title, text) {
  leaveCall();
  releaseDevices();
  showMessage(title, text, { retry: false });
}

function onStatus({ state, reason, retryInMs }) {
  if (state === 'open') {
    banner('');
  } else if (state === 'offline') {
    const secs = Math.max(1, Math.round(retryInMs / 1000));
    // Media flows browser to browser or through the media peer, not over this socket: a call
    // under way goes on while signaling comes back.
    const call = !$('room').hidden && peers.size > 0 ? ' Your call goes on;' : '';
    banner(`${reason[0].toUpperCase()}${reason.slice(1)}.${call} reconnecting in ${secs}s…`, 'warn');
  } else if (state === 'kicked') {
    leaveCall();
    showMessage('Disconnected by the server', reason || 'The server closed the connection.', { retry: true });
  } else if (state === 'ended' && !$('room').hidden) {
    // The error or notice that came before the close usually said why already.
    endedBy('Disconnected', reason || 'The server will not take this connection back.');
  }
}

function onWelcome(w) {
  me.id = w.id;
  me.permissions = w.permissions;
  me.locked = Boolean(w.locked);
  renderLocal();
  document.querySelectorAll('.tile-remote').forEach((tile) => renderActions(tile));
  rtcConfig = iceConfig(w.ice_servers, params);
  me.mode = w.mode || 'mesh';
  if (!w.resumed) {
    // A new session (first join, or the server forgot us): start every call afresh.
    for (const id of [...peers.keys()]) dropPeer(id, { quiet: true });
    links.get('sfu')?.close();
    links.delete('sfu');
    stopSfuAudio();
    sfuTracks = [];
    streaming = false;
    renderBroadcast([], []);
    for (const p of w.peers) {
      addPeer(p);
      if (me.mode === 'mesh') linkTo(p.id).start();
    }
    // Auto rooms: the joiner of a room of two calls the other directly (it also has its
    // connections with the server, ready for a third).
    const others = w.peers.filter((p) => !p.hidden);
    if (me.mode === 'auto' && others.length === 1) linkTo(others[0].id).start();
    if (me.mode !== 'mesh') {
      // Sent once, in three layers of which each viewer gets one: the top can be 720p (a mesh
      // encodes once per peer, so it captures at 360p).
      me.video?.applyConstraints({ width: { ideal: 1280 }, height: { ideal: 720 } }).catch(() => {});
      sfuLink().start();
      lastView = '';
    }
  } else {
    // Same id, same peers: the calls never stopped. Paths that broke meanwhile get an ICE restart.
    for (const link of links.values()) {
      if (['failed', 'disconnected'].includes(link.pc.iceConnectionState)) link.restartIce();
    }
  }
  updateCount();
}

function linkTo(id) {
  let link = links.get(id);
  if (link) return link;
  link = new PeerLink({
    id,
    polite: me.id > id,
    rtcConfig,
    signal: (payload) => signaling.send({ type: 'signal', to: id, ...payload }),
    local: localView, // local tracks change over the call; the link reads the current ones
  });
  link.addEventListener('track', (e) => onRemoteTrack(id, e.detail));
  link.addEventListener('state', (e) => {
    showConnection(id, e.detail.state);
    // Auto rooms: once the direct call is up, the server no longer needs our media.
    if (me.mode === 'auto' && e.detail.state === 'connected' && !streaming) {
      links.get('sfu')?.setPaused(true);
      renderPeer(id);
    }
  });
  links.set(id, link);
  return link;
}

/** SFU rooms: each participant's connection quality, from what arrives of their camera over
 *  the last two seconds (loss and frame rate), shown by the colour of their tile's dot. */
const lastQuality = new Map();
async function measureQuality() {
  const link = links.get('sfu');
  if (!link || me.mode === 'mesh') return;
  const byMid = new Map();
  (await link.down.getStats()).forEach((s) => {
    if (s.type === 'inbound-rtp' && s.kind === 'video') byMid.set(s.mid, s);
  });
  for (const [id, peer] of peers) {
    const track = peer.streams.get('sfu')?.getVideoTracks()[0];
    const s = track && byMid.get(link.midOf(track));
    const tile = document.querySelector(`.tile[data-key="${CSS.escape(id)}"]`);
    if (!s || !tile || !peer.state.video) continue;
    const before = lastQuality.get(id) || { lost: 0, received: 0 };
    const lost = (s.packetsLost || 0) - before.lost;
    const received = (s.packetsReceived || 0) - before.received;
    lastQuality.set(id, { lost: s.packetsLost || 0, received: s.packetsReceived || 0 });
    const loss = received + lost > 0 ? lost / (received + lost) : 0;
    const fps = s.framesPerSecond || 0;
    const quality = loss > 0.1 || fps < 5 ? 'poor' : loss > 0.02 || fps < 15 ? 'fair' : 'good';
    setTileQuality(tile, quality, `${(loss * 100).toFixed(1)}% lost, ${Math.round(fps)} fps`);
  }
}
setInterval(() => { measureQuality().catch(() => {}); }, 2000);

/** Frames the server's connection has decoded of `id`'s camera. */
async function serverFrames(id) {
  const link = links.get('sfu');
  const track = peers.get(id)?.streams.get('sfu')?.getVideoTracks()[0];
  const mid = link && track && link.midOf(track);
  if (!mid) return 0;
  let frames = 0;
  (await link.down.getStats()).forEach((s) => {
    if (s.type === 'inbound-rtp' && s.mid === mid) frames = s.framesDecoded || 0;
  });
  return frames;
}

/** How long a direct call is kept, at most, while the server's video of that person does not
 *  decode yet. A busy machine took over 5 s to start it (the tile went blank for 2 s when this
 *  was 3 s); a tile hidden on another page of the grid never gets it. */
const SERVER_VIDEO_WAIT_MS = 10000;
/** Frames of the server's video decoded before the direct call goes: half a second of it, so
 *  that a start that stutters (a layer switch, a busy encoder) stays behind the direct picture. */
const SERVER_FRAMES_BEFORE_SWITCH = 15;

function closeDirectWhenServerFlows(id) {
  const started = Date.now();
  let before = null;
  const close = () => {
    links.get(id)?.close();
    links.delete(id);
    const peer = peers.get(id);
    if (!peer) return;
    for (const key of [...peer.streams.keys()]) if (!key.startsWith('sfu')) peer.streams.delete(key);
    renderPeer(id);
  };
  const check = async () => {
    if (!links.has(id) || !peers.has(id)) return;
    const frames = await serverFrames(id);
    before ??= frames;
    if (frames >= before + SERVER_FRAMES_BEFORE_SWITCH || Date.now() - started > SERVER_VIDEO_WAIT_MS) close();
    else setTimeout(check, 100);
  };
  check();
}

/** Auto rooms: peer-to-peer with the one other person, through the server from three. */
function updateAutoMode() {
  if (me.mode !== 'auto') return;
  const others = [...peers.entries()].filter(([, p]) => !p.hidden).map(([id]) => id);
  clearTimeout(backToP2p);
  const direct = [...links.keys()].filter((k) => k !== 'sfu');
  if (others.length === 1 && !streaming) {
    if (direct.includes(others[0])) return;
    // One side calls (the smaller id), the other answers when the offer comes.
    const other = others[0];
    if (me.id < other) {
      backToP2p = setTimeout(() => { if (!links.has(other) && peers.has(other)) linkTo(other).start(); }, BACK_TO_P2P_MS);
    }
    return;
  }
  // Three or more, or a WHIP publisher or WHEP viewer (they are on the server): through the
  // server. The direct calls go once the server's video of that person is decoding (or after
  // SERVER_VIDEO_WAIT_MS), so the picture does not stop for the switch.
  links.get('sfu')?.setPaused(false);
  for (const id of direct) closeDirectWhenServerFlows(id);
}

/** The page's connections with the server's media peer (SFU rooms). */
function sfuLink() {
  let link = links.get('sfu');
  if (link) return link;
  link = new SfuLink({
    rtcConfig,
    signal: (payload) => signaling.send({ type: 'signal', to: 'sfu', ...payload }),
    local: localView,
  });
  link.addEventListener('track', () => onTracks(sfuTracks));
  link.addEventListener('state', (e) => {
    for (const id of peers.keys()) showConnection(id, e.detail.state);
  });
  links.set('sfu', link);
  return link;
}

/** SFU rooms: tells the server how each remote tile shows (its size in device pixels, and
 *  whether it is on screen at all), so it sends the layer that fills the tile and nothing to
 *  a hidden one. Debounced; sent only when something changed. */
let viewTimer = null;
let lastView = '';
function reportViews() {
  clearTimeout(viewTimer);
  viewTimer = setTimeout(() => {
    const link = links.get('sfu');
    if (!link || !signaling) return;
    const tiles = [];
    for (const video of document.querySelectorAll('video[data-role="remote"], video[data-role="screen"]')) {
      const track = videoTrackOf(video.dataset.peer, video.dataset.role === 'screen');
      if (!track) continue;
      const r = video.getBoundingClientRect();
      const visible = !document.hidden && r.width > 0 && r.bottom > 0 && r.top < innerHeight
        && r.right > 0 && r.left < innerWidth;
      const px = (v) => Math.round(v * devicePixelRatio);
      tiles.push({ track, visible, width: px(r.width), height: px(r.height) });
    }
    const text = JSON.stringify(tiles);
    if (text === lastView) return;
    lastView = text;
    window.huddle.view = tiles;
    signaling.send({ type: 'view', tiles });
  }, 300);
}

/** The id of the video track a tile shows (SFU rooms): `peer`'s camera or screen share (a WHIP
 *  publisher's tile is `whip`). */
function videoTrackOf(peer, screen) {
  const source = screen ? 'screen_share' : 'camera';
  return sfuTracks.find((t) => t.kind === 'video' && (t.peer || 'whip') === peer
    && (peer === 'whip' || t.source === source))?.id;
}

/** Gives each participant the video the server's lines carry for them (SFU rooms): the camera
 *  in one stream, a screen share in another; sound plays from the audio lines' own elements. */
function onTracks(tracks) {
  sfuTracks = tracks;
  const link = links.get('sfu');
  if (!link) return;
  playSfuAudio(link);
  const byPeer = new Map();
  for (const { mid, peer, kind, source } of tracks) {
    const track = mid && link.track(mid);
    if (!peer || !track || track.kind !== kind || kind !== 'video') continue;
    if (!byPeer.has(peer)) byPeer.set(peer, { sfu: [], 'sfu:screen': [] });
    byPeer.get(peer)[source === 'screen_share' ? 'sfu:screen' : 'sfu'].push(track);
  }
  for (const [id, peer] of peers) {
    const groups = byPeer.get(id) || { sfu: [], 'sfu:screen': [] };
    let changed = false;
    for (const [key, wanted] of Object.entries(groups)) {
      const have = peer.streams.get(key)?.getTracks() || [];
      if (have.length === wanted.length && wanted.every((t) => have.includes(t))) continue;
      changed = true;
      if (wanted.length) {
        // A new stream object, so the tile's <video> takes the new set of tracks.
        peer.streams.set(key, new MediaStream(wanted));
        for (const t of wanted) t.addEventListener('unmute', () => renderPeer(id));
      } else {
        peer.streams.delete(key);
      }
    }
    if (changed) renderPeer(id);
  }
  // A WHIP publisher (OBS, say) has no page and no peer id: its tracks get a tile of their own.
  const whip = tracks.filter((t) => !t.peer);
  renderBroadcast(whip, whip.filter((t) => t.kind === 'video' && link.track(t.mid)?.kind === 'video')
    .map((t) => link.track(t.mid)));
  reportViews();
}

/** Plays each audio line of the server's connection in an element of its own, muted while the
 *  microphone it carries is heard over a direct call (auto rooms), so nobody is heard twice. */
function playSfuAudio(link) {
  for (const t of link.down.getTransceivers()) {
    const track = t.receiver.track;
    if (!t.mid || track.kind !== 'audio' || sfuAudio.has(t.mid)) continue;
    const audio = document.createElement('audio');
    audio.dataset.mid = t.mid;
    audio.hidden = true;
    document.body.append(audio);
    sfuAudio.set(t.mid, audio);
    attach(audio, new MediaStream([track]));
  }
  const carried = new Map(sfuTracks.filter((t) => t.mid && t.kind === 'audio').map((t) => [t.mid, t.peer]));
  for (const [mid, audio] of sfuAudio) {
    const peer = carried.get(mid);
    audio.muted = Boolean(peer && links.get(peer)?.pc.connectionState === 'connected');
  }
}

/** The server's connection is closed: its audio lines' elements go with it. */
function stopSfuAudio() {
  for (const audio of sfuAudio.values()) audio.remove();
  sfuAudio.clear();
}

/** The room's WHIP publisher, if it has one (`labels`, its tracks as `tracks` names them): a
 *  tile like a participant's, showing `video` (its sound plays from the audio lines). */
let broadcast = null;
function renderBroadcast(labels, video) {
  if (!labels.length) {
    broadcast = null;
    removeTiles((t) => t.dataset.key === 'whip');
    updateGridSize();
    return;
  }
  const tile = ensureTile({ key: 'whip', role: 'remote', peer: 'whip', name: 'Broadcast' });
  setTileMedia(tile, { audio: labels.some((t) => t.kind === 'audio'), video: labels.some((t) => t.kind === 'video') });
  const have = broadcast?.getTracks() || [];
  if (have.length !== video.length || !video.every((t) => have.includes(t))) {
    broadcast = video.length ? new MediaStream(video) : null;
    attach(tile.querySelector('video'), broadcast);
  }
  updateGridSize();
}

/** SFU rooms: who speaks, loudest first — their tiles light up. */
function onSpeakers(ids) {
  const speaking = new Set(ids);
  if (ids.length) feature(ids[0]);
  for (const tile of document.querySelectorAll('.tile-remote')) {
    tile.classList.toggle('speaking', speaking.has(tile.dataset.key));
  }
}

function addPeer(p) {
  if (!peers.has(p.id)) peers.set(p.id, { name: p.name, state: p.state, hidden: Boolean(p.hidden), streams: new Map() });
  if (p.hidden) {
    // A recorder or observer: it gets our media, and no one sees it.
    updateCount();
    return;
  }
  const tile = ensureTile({ key: p.id, role: 'remote', peer: p.id, name: p.name });
  renderActions(tile);
  const link = me.mode === 'mesh' ? links.get(p.id)?.pc : links.get('sfu')?.down;
  setTileConnection(tile, link?.connectionState || 'new');
  if (me.mode !== 'mesh') onTracks(sfuTracks);
  updateAutoMode();
  updatePeer(p);
  updateCount();
}

/** A host's actions on someone: turn off their mic or camera, remove them (none for others). */
function moderation(id) {
  if (!me.permissions.admin || !peers.has(id)) return [];
  const name = peers.get(id).name;
  return [
    { action: 'mute-mic', label: 'Mute', title: `Turn off ${name}'s microphone`,
      run: () => signaling?.send({ type: 'mute', id, source: 'microphone' }) },
    { action: 'camera-off', label: 'Stop video', title: `Turn off ${name}'s camera`,
      run: () => signaling?.send({ type: 'mute', id, source: 'camera' }) },
    { action: 'remove', label: 'Remove', title: `Remove ${name} from the room`,
      run: () => {
        if (confirm(`Remove ${name} from the room? Their invitation will not let them back in.`)) {
          signaling?.send({ type: 'remove', id });
        }
      } },
  ];
}

function renderActions(tile) {
  setTileActions(tile, moderation(tile.dataset.key));
}

/** The people panel: everyone visible, you first, with a host's actions. */
function refreshPeople() {
  const self = { id: me.id || 'self', name: me.name, ...mediaState(), you: true, actions: [] };
  const others = [...peers.entries()]
    .filter(([, p]) => !p.hidden)
    .map(([id, p]) => ({ id, name: p.name, ...p.state, you: false, actions: moderation(id) }));
  renderPeople([self, ...others]);
}

function togglePeople(open = $('people').hidden) {
  if (!open && $('people').contains(document.activeElement)) $('btn-people').focus();
  $('people').hidden = !open;
  $('btn-people').setAttribute('aria-pressed', String(open));
}

function updatePeer(p) {
  const peer = peers.get(p.id);
  if (!peer) return;
  if (peer.hidden) {
    peer.state = p.state;
    return;
  }
  peer.name = p.name;
  peer.state = p.state;
  renderPeer(p.id);
  refreshPeople();
}

function onRemoteTrack(id, { track, stream }) {
  const peer = peers.get(id);
  if (!peer) return;
  peer.streams.set(stream.id, stream);
  track.addEventListener('unmute', () => renderPeer(id));
  renderPeer(id);
}

/** Puts a peer's camera stream and (while it shares) its screen stream into their tiles. */
function renderPeer(id) {
  const peer = peers.get(id);
  if (!peer || peer.hidden) return;
  const screenId = peer.state.screen;
  // Through the server, the server says which track is which; directly, the stream ids do.
  // An auto room shows the direct call once it is up, the server's tracks until then.
  const direct = [...peer.streams.entries()].filter(([k]) => !k.startsWith('sfu')).map(([, v]) => v);
  const useDirect = me.mode === 'mesh' || links.get(id)?.pc.connectionState === 'connected';
  const camera = (useDirect && direct.find((s) => s.id !== screenId)) || peer.streams.get('sfu');
  const tile = ensureTile({ key: id, role: 'remote', peer: id, name: peer.name });
  setTileName(tile, peer.name);
  // No picture yet (connecting, or a room larger than the server's lines and this tile off
  // screen until now): their initials rather than a black box.
  setTileMedia(tile, { audio: peer.state.audio, video: peer.state.video && Boolean(camera) });
  attach(tile.querySelector('video'), camera);

  const screenKey = `${id}:screen`;
  // Shown while the sharer's state says it shares: the server's screen line outlives a share
  // (it is reused by the next), and its last frame would otherwise stay on screen.
  const screen = screenId && ((useDirect && peer.streams.get(screenId)) || peer.streams.get('sfu:screen'));
  if (screen) {
    const st = ensureTile({ key: screenKey, role: 'screen', peer: id, name: `${peer.name} — screen` });
    st.classList.add('screen');
    // It comes over the same connection as the camera: the same state.
    setTileConnection(st, tile.querySelector('.dot').dataset.state || 'new');
    setTileMedia(st, { audio: true, video: true });
    attach(st.querySelector('video'), screen);
  } else {
    removeTiles((t) => t.dataset.key === screenKey);
  }
  // Their sound from the server is muted while the direct call carries it, and back after.
  const sfu = links.get('sfu');
  if (sfu) playSfuAudio(sfu);
  updateGridSize();
}

/** Plays `stream` in a <video> or <audio> element; none empties it (a server's line that
 *  carried this person's video may carry someone else's next). */
function attach(element, stream) {
  if ((element.srcObject || null) === (stream || null)) return;
  element.srcObject = stream || null;
  if (!stream) return;
  element.play().catch(() => {
    // Autoplay with sound needs a gesture (an invite link with autojoin has none): ask for one.
    banner('Click anywhere to turn on sound.', 'info');
    document.addEventListener('click', () => {
      document.querySelectorAll('video, audio').forEach((v) => v.play().catch(() => {}));
      banner('');
    }, { once: true });
  });
}

/** The state of the connection `id`'s media comes over, on their camera and screen tiles. */
function showConnection(id, state) {
  for (const key of [id, `${id}:screen`]) {
    const tile = document.querySelector(`.tile[data-key="${CSS.escape(key)}"]`);
    if (tile) setTileConnection(tile, state);
  }
}

/** Tells screen-reader users what changed in the room (the region is visually hidden). */
function announce(text) {
  const region = $('announce');
  region.textContent = '';
  // A fresh text node each time, so the same words twice are read twice.
  setTimeout(() => { region.textContent = text; }, 50);
}

function dropPeer(id, { quiet = false } = {}) {
  const peer = peers.get(id);
  if (peer && !peer.hidden && !quiet) announce(`${peer.name} left`);
  links.get(id)?.close();
  links.delete(id);
  peers.delete(id);
  removeTiles((t) => t.dataset.key === id || t.dataset.key === `${id}:screen`);
  updateCount();
  updateAutoMode();
}

function onSignal({ from, sdp, candidate }) {
  if (from === 'sfu') {
    links.get('sfu')?.handleSignal({ sdp });
    return;
  }
  if (!peers.has(from)) return; // a stale signal from someone who already left
  if (me.mode === 'sfu') return; // nobody calls directly in an SFU room
  linkTo(from).handleSignal({ sdp, candidate });
}

function onChat({ from, name, text }) {
  appendChat({ name, text, mine: from === me.id });
  if ($('chat').hidden && from !== me.id) {
    unread += 1;
    const badge = $('chat-badge');
    badge.textContent = String(unread);
    badge.hidden = false;
  }
}

function onServerError({ code, message }) {
  const refusal = describeRefusal(code, message);
  if (refusal && (!me.id || code === 'room-locked')) {
    // Refused at the door: nothing to retry with this link.
    endedBy(refusal.title, refusal.text);
    return;
  }
  switch (code) {
    case 'room-full':
      leaveCall();
      releaseDevices();
      showMessage('This room is full', `${message}. Try again later, or start another room.`, { retry: true });
      break;
    case 'bad-room-name':
    case 'bad-name':
    case 'unsupported-version':
      leaveCall();
      releaseDevices();
      showMessage('Cannot join', message, { retry: false });
      break;
    case 'server-shutdown':
      banner('The server is restarting — reconnecting…', 'warn');
      break;
    case 'unavailable':
      // A cluster that cannot place the room right now (its Redis is away): ask again shortly.
      banner('The service cannot open this room right now — trying again…', 'warn', 4000);
      setTimeout(() => signaling?.sendJoin(), 2000);
      break;
    case 'media-failed':
      links.get('sfu')?.refused();
      console.warn(`huddle: ${message}`);
      banner(`The server could not take your audio or video: ${message}`, 'error', 8000);
      break;
    default:
      console.warn(`huddle: server error ${code}: ${message}`);
      banner(`Server: ${message}`, 'error', 5000);
  }
}

function updateCount() {
  refreshPeople();
  const n = [...peers.values()].filter((p) => !p.hidden).length + 1;
  $('people-count').textContent = `${n} ${n === 1 ? 'person' : 'people'}`;
  document.title = `${me.room} · Huddle`;
}

function leaveCall() {
  signaling?.leave();
  signaling = null;
  for (const id of [...peers.keys()]) dropPeer(id);
  links.get('sfu')?.close();
  links.delete('sfu');
  stopSfuAudio();
  stopScreen();
}

/** Camera and microphone off: nothing is captured once the call cannot go on. */
function releaseDevices() {
  for (const t of me.camStream.getTracks()) t.stop();
}

function leave() {
  leaveCall();
  releaseDevices();
  showMessage('You left the room', `Thanks for joining ${me.room}.`, { retry: true });
}

// ---------------------------------------------------------------- wiring

function wire() {
  // `?per-page=N`: tiles on one page of the grid (25 by default).
  const perPage = Number(params.get('per-page'));
  if (perPage >= 1) setTilesPerPage(perPage);
  $('btn-layout').addEventListener('click', () => {
    const speaker = $('btn-layout').getAttribute('aria-pressed') !== 'true';
    $('btn-layout').setAttribute('aria-pressed', String(speaker));
    $('btn-layout').textContent = speaker ? 'Grid view' : 'Speaker view';
    setSpeakerView(speaker);
  });
  for (const [id, delta] of [['pager-prev', -1], ['pager-next', 1]]) {
    $(id).addEventListener('click', () => {
      turnPage(delta);
      if (me.mode && me.mode !== 'mesh') reportViews();
    });
  }
  // SFU rooms: a tile that changes size, scrolls away or hides with the tab changes its layer.
  // The grid's tiles are sized to fill it: again when it changes size.
  new ResizeObserver(() => layoutGrid()).observe($('grid'));
  for (const [target, event] of [[document, 'grid-layout'], [document, 'visibilitychange'], [$('grid'), 'scroll']]) {
    target.addEventListener(event, () => { if (me.mode && me.mode !== 'mesh') reportViews(); });
  }
  $('join-form').addEventListener('submit', (e) => {
    e.preventDefault();
    join();
  });
  $('lobby-mic').addEventListener('click', toggleMic);
  $('lobby-cam').addEventListener('click', toggleCamera);
  $('btn-mic').addEventListener('click', toggleMic);
  $('btn-cam').addEventListener('click', toggleCamera);
  $('btn-screen').addEventListener('click', toggleScreen);
  $('btn-chat').addEventListener('click', () => toggleChat());
  $('btn-people').addEventListener('click', () => togglePeople());
  $('people-close').addEventListener('click', () => togglePeople(false));
  $('chat-close').addEventListener('click', () => toggleChat(false));
  $('btn-devices').addEventListener('click', () => $('devices-dialog').showModal());
  $('btn-leave').addEventListener('click', leave);
  $('btn-lock').addEventListener('click', () => signaling?.send({ type: 'lock', locked: !me.locked }));
  $('btn-end').addEventListener('click', () => {
    if (confirm('End the meeting for everyone?')) signaling?.send({ type: 'end' });
  });
  // Back into the same room as the same person, not to the lobby.
  $('message-retry').addEventListener('click', () => {
    if (!me.name || !me.room) return location.reload();
    const q = new URLSearchParams(location.search);
    q.set('name', me.name);
    q.set('autojoin', '1');
    location.assign(`/r/${encodeURIComponent(me.room)}?${q}${location.hash}`);
  });
  $('copy-link').addEventListener('click', async () => {
    const url = `${location.origin}/r/${encodeURIComponent(me.room)}`;
    try {
      await navigator.clipboard.writeText(url);
      banner('Invite link copied.', 'info', 2500);
    } catch {
      banner(`Invite link: ${url}`, 'info', 10000);
    }
  });
  $('chat-form').addEventListener('submit', (e) => {
    e.preventDefault();
    const input = $('chat-input');
    const text = input.value.trim();
    if (text && signaling?.send({ type: 'chat', text })) input.value = '';
  });
  for (const [id, kind] of [['video-device', 'video'], ['call-video-device', 'video'], ['audio-device', 'audio'], ['call-audio-device', 'audio']]) {
    $(id).addEventListener('change', (e) => switchDevice(kind, e.target.value));
  }
  document.addEventListener('keydown', (e) => {
    if (e.ctrlKey || e.metaKey || e.altKey || e.repeat) return;
    // Esc closes the panel that is open, even from its own input (a dialog closes itself).
    if (e.key === 'Escape' && !e.target.closest('dialog')) {
      if (!$('chat').hidden) toggleChat();
      else if (!$('people').hidden) togglePeople();
      return;
    }
    if (e.target.closest('input, textarea, select, dialog')) return;
    if (e.key === '?') {
      $('shortcuts').showModal();
      e.preventDefault();
      return;
    }
    const inRoom = !$('room').hidden;
    switch (e.key.toLowerCase()) {
      case 'm': toggleMic(); break;
      case 'v': toggleCamera(); break;
      case 's': if (inRoom) toggleScreen(); break;
      case 'c': if (inRoom) toggleChat(); break;
      case 'p': if (inRoom) togglePeople(); break;
      default: return;
    }
    e.preventDefault();
  });
  navigator.mediaDevices?.addEventListener('devicechange', refreshDevices);
  // Tell the room at once when the tab closes, instead of leaving it to wait for a timeout.
  window.addEventListener('pagehide', () => signaling?.leave());
}

wire();
startLobby().catch((e) => {
  console.error(e);
  showMessage('Something went wrong', e.message || String(e), { retry: true });
});
