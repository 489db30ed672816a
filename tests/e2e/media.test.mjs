// The server-side media peer with real Chromium: the echo page through every transform, the
// returned picture checked by its pixels, data-channel ping/pong, WHIP publish watched over WHEP.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { Lab, publishWhip, videoFlows, waitInPage, sleep } from './harness.mjs';

const lab = new Lab('media');
let browser;

before(async () => {
  lab.setup();
  await lab.startServer(['--no-turn']);
  browser = await lab.browser();
});

after(async () => {
  await lab.teardown();
});

/** Mean colour of a video element and how far from grey its pixels are, from a 64×48 sample. */
async function sample(page, selector) {
  return page.evaluate((selector) => {
    const v = document.querySelector(selector);
    const c = document.createElement('canvas');
    c.width = 64; c.height = 48;
    const g = c.getContext('2d');
    g.drawImage(v, 0, 0, 64, 48);
    const d = g.getImageData(0, 0, 64, 48).data;
    let r = 0, gr = 0, b = 0, chroma = 0, dark = 0;
    const n = d.length / 4;
    for (let i = 0; i < d.length; i += 4) {
      r += d[i]; gr += d[i + 1]; b += d[i + 2];
      chroma += Math.max(d[i], d[i + 1], d[i + 2]) - Math.min(d[i], d[i + 1], d[i + 2]);
      if (d[i] + d[i + 1] + d[i + 2] < 3 * 40) dark += 1;
    }
    return { r: r / n, g: gr / n, b: b / n, chroma: chroma / n, dark: dark / n };
  }, selector);
}

async function echo(transform) {
  const page = await lab.page(browser, `/echo?transform=${transform}&autostart`);
  await videoFlows(page, '#remote', { frames: 10 });
  return page;
}

test('echo: every transform returns advancing frames', async () => {
  for (const transform of ['none', 'edges', 'cartoon', 'rotate', 'grayscale', 'blur']) {
    const page = await echo(transform);
    const codec = await waitInPage(page, () => document.getElementById('s-codec').textContent !== '–' && document.getElementById('s-codec').textContent, null, { what: `codec stats (${transform})` });
    if (transform !== 'none') assert.match(codec, /H264/, `${transform} is transcoded as H.264`);
    await page.context().close();
  }
});

test('echo none returns the camera picture; grayscale is grey; edges is mostly dark', async () => {
  const none = await echo('none');
  await sleep(500);
  const local = await sample(none, '#local');
  const back = await sample(none, '#remote');
  assert.ok(local.chroma > 20, `the fake camera is coloured: ${JSON.stringify(local)}`);
  for (const k of ['r', 'g', 'b']) assert.ok(Math.abs(local[k] - back[k]) < 25, `none: ${k} ${local[k]} vs ${back[k]}`);
  await none.context().close();

  const grey = await echo('grayscale');
  await sleep(500);
  const g = await sample(grey, '#remote');
  const gl = await sample(grey, '#local');
  assert.ok(g.chroma < 8, `grayscale: R≈G≈B (${JSON.stringify(g)}) while the camera is coloured (${gl.chroma})`);
  await grey.context().close();

  const edges = await echo('edges');
  await sleep(500);
  const e = await sample(edges, '#remote');
  assert.ok(e.dark > 0.6, `edges: mostly dark, ${JSON.stringify(e)}`);
  await edges.context().close();
});

test('echo: data-channel ping gets its pong, and stats show the pair', async () => {
  const page = await echo('none');
  await waitInPage(page, () => window.echo.pongs >= 2 && window.echo.rtt, null, { what: 'pongs' });
  const pair = await waitInPage(page, () => document.getElementById('s-pair').textContent.includes('host') && document.getElementById('s-pair').textContent, null, { what: 'candidate pair' });
  // One of the media workers' ports: 8443 and the ones after it.
  assert.match(pair, /127\.0\.0\.1:84(4[3-9]|[5-9]\d)\b/);
  await page.context().close();
  // The server frees the session when the page goes (DTLS close, or ICE consent at worst).
  await waitInPage(await lab.page(browser, '/healthz'), async () => {
    const m = await (await fetch('/metrics')).text();
    return /huddle_media_sessions\{kind="echo"\} 0/.test(m);
  }, null, { what: 'echo sessions freed', timeout: 25000 });
});

test('a page publishing over WHIP is watched by another over WHEP', async () => {
  const publisher = await lab.page(browser, '/healthz');
  const location = await publishWhip(publisher, 'stage');
  assert.match(location, /^\/whip\/stage\/[0-9a-f]{32}$/);

  const viewer = await lab.page(browser, '/healthz');
  await viewer.evaluate(async () => {
    document.body.innerHTML = '<video id="v" autoplay muted playsinline></video>';
    const pc = new RTCPeerConnection();
    pc.addTransceiver('audio', { direction: 'recvonly' });
    pc.addTransceiver('video', { direction: 'recvonly' });
    pc.ontrack = (e) => { if (e.track.kind === 'video') document.getElementById('v').srcObject = new MediaStream([e.track]); };
    await pc.setLocalDescription(await pc.createOffer());
    const r = await fetch('/whep/stage', { method: 'POST', headers: { 'Content-Type': 'application/sdp' }, body: pc.localDescription.sdp });
    if (r.status !== 201) throw new Error(`WHEP ${r.status}: ${await r.text()}`);
    await pc.setRemoteDescription({ type: 'answer', sdp: await r.text() });
    window.pc = pc;
  });
  const flow = await videoFlows(viewer, '#v', { frames: 10 });
  assert.equal(flow.w * 3, flow.h * 4, `the publisher's 4:3 picture: ${flow.w}x${flow.h}`);

  // Ending the WHIP resource ends the publishing session.
  const status = await publisher.evaluate(async (loc) => (await fetch(loc, { method: 'DELETE' })).status, location);
  assert.equal(status, 200);
  const state = await waitInPage(publisher, () => ['closed', 'failed', 'disconnected'].includes(window.pc.connectionState) && window.pc.connectionState, null, { what: 'publisher told' });
  assert.ok(state, 'the publisher saw the session end');
  await publisher.context().close();
  await viewer.context().close();
});

test("aiortc's client flow works unchanged: gathered offer, codecs filtered in the SDP, unordered channel", async () => {
  const page = await lab.page(browser, '/healthz');
  await page.evaluate(async () => {
    document.body.innerHTML = '<video id="v" autoplay muted playsinline></video>';
    // What aiortc's examples/server client does: addTrack, a 'chat' channel with
    // {ordered: false, maxRetransmits: 0}, wait for gathering, keep one codec per kind by
    // editing the SDP, POST {sdp, type, video_transform}, apply the answer.
    const stream = await navigator.mediaDevices.getUserMedia({ audio: true, video: { width: 640, height: 480 } });
    const pc = new RTCPeerConnection({ sdpSemantics: 'unified-plan' });
    window.pc = pc;
    window.pongs = 0;
    pc.ontrack = (e) => { if (e.track.kind === 'video') document.getElementById('v').srcObject = new MediaStream([e.track]); };
    stream.getTracks().forEach((t) => pc.addTrack(t, stream));
    const dc = pc.createDataChannel('chat', { ordered: false, maxRetransmits: 0 });
    dc.onopen = () => setInterval(() => dc.send(`ping ${Date.now()}`), 300);
    dc.onmessage = (e) => { if (e.data.startsWith('pong ')) window.pongs += 1; };
    await pc.setLocalDescription(await pc.createOffer());
    await new Promise((resolve) => {
      if (pc.iceGatheringState === 'complete') resolve();
      pc.addEventListener('icegatheringstatechange', () => pc.iceGatheringState === 'complete' && resolve());
    });
    const keepOnly = (sdp, kind, codec) => {
      const lines = sdp.split('\r\n');
      const start = lines.findIndex((l) => l.startsWith(`m=${kind} `));
      let end = lines.findIndex((l, i) => i > start && l.startsWith('m='));
      if (end < 0) end = lines.length;
      const section = lines.slice(start, end);
      const keep = new Set(section.filter((l) => new RegExp(`^a=rtpmap:\\d+ ${codec}/`, 'i').test(l)).map((l) => l.split(/[: ]/)[1]));
      // RTX payloads that repair a kept codec stay too.
      for (const l of section) {
        const m = /^a=fmtp:(\d+) apt=(\d+)/.exec(l);
        if (m && keep.has(m[2])) keep.add(m[1]);
      }
      const out = section.filter((l) => {
        const m = /^a=(?:rtpmap|fmtp|rtcp-fb):(\d+)/.exec(l);
        return !m || keep.has(m[1]);
      }).map((l, i) => (i === 0 ? [...l.split(' ').slice(0, 3), ...l.split(' ').slice(3).filter((pt) => keep.has(pt))].join(' ') : l));
      return [...lines.slice(0, start), ...out, ...lines.slice(end)].join('\r\n');
    };
    let sdp = keepOnly(pc.localDescription.sdp, 'video', 'H264');
    sdp = keepOnly(sdp, 'audio', 'PCMU');
    const r = await fetch('/offer', {
      body: JSON.stringify({ sdp, type: 'offer', video_transform: 'cartoon' }),
      headers: { 'Content-Type': 'application/json' },
      method: 'POST',
    });
    if (!r.ok) throw new Error(`offer ${r.status}: ${await r.text()}`);
    await pc.setRemoteDescription(await r.json());
  });
  await videoFlows(page, '#v', { frames: 10 });
  await waitInPage(page, () => window.pongs >= 2, null, { what: 'pongs on an unordered channel' });
  const audio = await waitInPage(page, async () => {
    const stats = await window.pc.getStats();
    let packets = 0, codec = '';
    stats.forEach((s) => {
      if (s.type === 'inbound-rtp' && s.kind === 'audio') { packets = s.packetsReceived; codec = stats.get(s.codecId)?.mimeType; }
    });
    return packets > 20 && { packets, codec };
  }, null, { what: 'audio echoed' });
  assert.equal(audio.codec, 'audio/PCMU');
  await page.context().close();
});
