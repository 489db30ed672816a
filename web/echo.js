// The echo test: the camera goes to the server's media peer (POST /offer, aiortc's contract) and
// comes back through the chosen transform. Shows both, the data-channel round trip and live stats.

import { rtcConfig } from './ice.js';

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const form = $('echo-form');
const state = { pc: null, stream: null, timers: [], pongs: 0, rtt: null, prev: null, error: null };
window.echo = state; // for tests and curious people

function cameraError(err) {
  switch (err && err.name) {
    case 'NotAllowedError':
    case 'SecurityError':
      return 'Camera access is blocked. The echo test sends your camera to the server and back: allow it in the address bar, then press Start.';
    case 'NotFoundError':
    case 'OverconstrainedError':
      return 'No camera was found. Connect one, then press Start.';
    case 'NotReadableError':
    case 'AbortError':
      return 'Your camera is in use by another application.';
    default:
      return window.isSecureContext
        ? `Cannot use the camera${err && err.message ? `: ${err.message}` : ''}.`
        : 'This page is not a secure context (https), so the browser offers no camera.';
  }
}

function showError(text) {
  state.error = text;
  $('echo-error').textContent = text;
  $('echo-error').hidden = !text;
}

function setState(text, dot) {
  $('s-state').textContent = text;
  $('state-dot').dataset.state = dot || text;
}

async function start(event) {
  event.preventDefault();
  showError('');
  $('start').disabled = true;
  const [width, height] = $('resolution').value.split('x').map(Number);
  const transform = $('transform').value;
  const codec = $('codec').value;
  try {
    state.stream = await navigator.mediaDevices.getUserMedia({
      video: { width: { ideal: width }, height: { ideal: height } },
      audio: $('audio').checked,
    });
  } catch (err) {
    $('start').disabled = false;
    showError(cameraError(err));
    return;
  }
  $('local').srcObject = state.stream;

  // Huddle's own TURN server too: a network that blocks UDP still reaches the media peer
  // through TURN over TLS on the HTTPS port.
  const pc = new RTCPeerConnection(rtcConfig(await iceServers(), params));
  state.pc = pc;
  pc.addEventListener('track', (e) => {
    if (e.track.kind === 'video') $('remote').srcObject = new MediaStream([e.track]);
    else if (e.streams[0] || e.track) {
      const audio = new Audio();
      audio.srcObject = new MediaStream([e.track]);
      audio.play().catch(() => {});
    }
  });
  pc.addEventListener('connectionstatechange', () => {
    setState(pc.connectionState);
    if (pc.connectionState === 'failed') showError('The media connection failed: UDP to the server may be blocked.');
  });
  for (const track of state.stream.getTracks()) {
    const t = pc.addTransceiver(track, { direction: 'sendrecv', streams: [state.stream] });
    if (track.kind === 'video' && codec !== 'default') preferCodec(t, codec);
  }
  const channel = pc.createDataChannel('chat', { ordered: true });
  channel.addEventListener('open', () => {
    state.timers.push(setInterval(() => channel.send(`ping ${performance.now()}`), 1000));
    channel.send(`ping ${performance.now()}`);
  });
  channel.addEventListener('message', (e) => {
    if (typeof e.data === 'string' && e.data.startsWith('pong ')) {
      state.pongs += 1;
      state.rtt = performance.now() - Number(e.data.slice(5));
      $('s-rtt').textContent = `${state.rtt.toFixed(1)} ms (data channel)`;
    }
  });

  setState('connecting', 'new');
  $('stop').disabled = false;
  $('remote-label').textContent = transform === 'none' ? 'Returned by the server' : `Returned by the server · ${transform}`;
  try {
    await pc.setLocalDescription(await pc.createOffer());
    // No waiting for ICE gathering: the server's answer lists its candidates and the browser
    // finds its way to them; the server learns the browser's address from its checks.
    let response;
    try {
      response = await fetch('/offer', {
        method: 'POST',
        headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify({ sdp: pc.localDescription.sdp, type: 'offer', video_transform: transform }),
      });
    } catch {
      throw new Error('The server cannot be reached. Is Huddle still running?');
    }
    const body = await response.json().catch(() => ({}));
    if (!response.ok) throw new Error(`The server refused the call: ${body.error || response.statusText}`);
    await pc.setRemoteDescription(body);
  } catch (err) {
    showError(err.message);
    stop();
    return;
  }
  state.timers.push(setInterval(updateStats, 1000));
}

async function iceServers() {
  try {
    const r = await fetch('/api/ice-servers');
    if (r.ok) return (await r.json()).iceServers;
  } catch {
    // Without them the direct path is still tried.
  }
  return [];
}

function preferCodec(transceiver, name) {
  const caps = RTCRtpReceiver.getCapabilities('video');
  if (!caps || !transceiver.setCodecPreferences) return;
  const wanted = caps.codecs.filter((c) => c.mimeType.toLowerCase() === `video/${name.toLowerCase()}`);
  const rest = caps.codecs.filter((c) => /rtx|red|ulpfec/i.test(c.mimeType));
  if (wanted.length) transceiver.setCodecPreferences([...wanted, ...rest]);
}

function rate(bytes, prevBytes, ms) {
  if (prevBytes == null || !ms) return '–';
  return `${(((bytes - prevBytes) * 8) / ms).toFixed(0)} kbit/s`;
}

async function updateStats() {
  if (!state.pc) return;
  const stats = await state.pc.getStats();
  let out, inb, pair, codecs = {}, candidates = {};
  stats.forEach((s) => {
    if (s.type === 'outbound-rtp' && s.kind === 'video') out = s;
    if (s.type === 'inbound-rtp' && s.kind === 'video') inb = s;
    if (s.type === 'codec') codecs[s.id] = s;
    if (s.type === 'local-candidate' || s.type === 'remote-candidate') candidates[s.id] = s;
    if (s.type === 'transport' && s.selectedCandidatePairId) pair = stats.get(s.selectedCandidatePairId);
  });
  const now = performance.now();
  const prev = state.prev;
  if (out) $('s-out').textContent = rate(out.bytesSent, prev?.sent, prev && now - prev.at);
  if (inb) {
    $('s-in').textContent = rate(inb.bytesReceived, prev?.received, prev && now - prev.at);
    $('s-fps').textContent = inb.framesPerSecond != null
      ? `${inb.framesPerSecond} fps${inb.frameWidth ? ` · ${inb.frameWidth}×${inb.frameHeight}` : ''}` : '–';
    const c = codecs[inb.codecId];
    if (c) {
      const profile = /profile-level-id=([0-9a-f]+)/i.exec(c.sdpFmtpLine || '');
      $('s-codec').textContent = `${c.mimeType.replace('video/', '')}${profile ? ` · profile ${profile[1]}` : ''}`;
    }
  }
  if (pair) {
    const l = candidates[pair.localCandidateId], r = candidates[pair.remoteCandidateId];
    if (l && r) $('s-pair').textContent = `${l.candidateType} ${l.address}:${l.port} ⇄ ${r.candidateType} ${r.address}:${r.port} (${l.protocol})`;
  }
  state.prev = { at: now, sent: out?.bytesSent, received: inb?.bytesReceived };
}

function stop() {
  state.timers.forEach(clearInterval);
  state.timers = [];
  state.pc?.close();
  state.pc = null;
  state.stream?.getTracks().forEach((t) => t.stop());
  state.stream = null;
  state.prev = null;
  $('local').srcObject = null;
  $('remote').srcObject = null;
  $('start').disabled = false;
  $('stop').disabled = true;
  setState('idle', 'closed');
}

form.addEventListener('submit', start);
$('stop').addEventListener('click', stop);
window.addEventListener('pagehide', stop);

// ?transform=edges&autostart — links and tests can start a run directly.
for (const key of ['transform', 'codec', 'resolution']) {
  if (params.has(key)) $(key).value = params.get(key);
}
if (params.has('autostart')) form.requestSubmit();
