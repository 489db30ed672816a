// SFU rooms (protocol v2): every page sends once to the server's media peer and receives the
// others from it, on two connections with the server and none with the other pages.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { Lab, publishWhip, videoFlows, inbound, remoteIds, waitInPage, sleep } from './harness.mjs';

const lab = new Lab('sfu');
let browser;

before(async () => {
  lab.setup();
  await lab.startServer();
  browser = await lab.browser();
});

after(async () => {
  await lab.teardown();
});

/** The page's peer id, once its welcome came. */
const myId = (page) => waitInPage(page, () => window.huddle.me.id, null, { what: 'a welcome' });

const join = (room, name) => lab.page(browser, `/r/${room}?name=${name}&autojoin=1&mode=sfu`);

test('four pages in an SFU room each see and hear the other three through the server', async () => {
  const pages = [];
  for (const name of ['Ada', 'Bob', 'Cy', 'Dee']) pages.push(await join('forum', name));
  for (const p of pages) {
    await waitInPage(p, () => window.huddle.me.mode === 'sfu', null, { what: 'an SFU room' });
    await waitInPage(p, () => document.querySelectorAll('video[data-role="remote"]').length === 3, null, { what: 'three remote tiles' });
    for (const id of await remoteIds(p)) {
      await videoFlows(p, `video[data-role="remote"][data-peer="${id}"]`);
    }
    // Only the server: no connection to another page.
    assert.deepEqual(await p.evaluate(() => [...window.huddle.links.keys()]), ['sfu']);
    // Each tile says how well that person's video arrives.
    await waitInPage(p, () => [...document.querySelectorAll('.tile-remote .dot')]
      .every((d) => ['good', 'fair', 'poor'].includes(d.dataset.quality)), null, { what: 'quality dots' });
  }
  const before = await inbound(pages[0], 'audio', 'packetsReceived');
  await sleep(1000);
  const after = await inbound(pages[0], 'audio', 'packetsReceived');
  assert.ok(after > before, `audio packets ${before} -> ${after}`);
  // Sound plays from each audio line's own element (the server may move a line to another
  // voice), not from the tiles.
  const playing = await pages[0].evaluate(() => [...document.querySelectorAll('audio[data-mid]')]
    .filter((a) => !a.paused && !a.muted && a.srcObject?.getAudioTracks()[0]?.readyState === 'live').length);
  assert.equal(playing, 3, 'three audio lines playing');

  // A leaver is gone from the others within 2 s, and the rest keep flowing.
  const leaver = await myId(pages[3]);
  const t0 = Date.now();
  await pages[3].click('#btn-leave');
  for (const p of pages.slice(0, 3)) {
    await waitInPage(p, (id) => !document.querySelector(`video[data-peer="${id}"]`), leaver, { timeout: 2000, what: 'tile removed' });
  }
  assert.ok(Date.now() - t0 <= 2000);
  for (const id of await remoteIds(pages[0])) {
    await videoFlows(pages[0], `video[data-role="remote"][data-peer="${id}"]`);
  }
  for (const p of pages) await p.context().close();
});

test('a latecomer is seen by those already in the room, by renegotiation', async () => {
  const a = await join('late', 'Early');
  const b = await join('late', 'Later');
  const seen = await videoFlows(a, 'video[data-role="remote"]');
  console.log('remote video at', seen.w, 'x', seen.h);
  await videoFlows(b, 'video[data-role="remote"]');
  const c = await join('late', 'Last');
  const last = await myId(c);
  for (const p of [a, b]) {
    await videoFlows(p, `video[data-role="remote"][data-peer="${last}"]`);
  }
  for (const p of [a, b, c]) await p.context().close();
});

test('a tile off the screen gets no video, and gets it back when shown', async () => {
  const a = await join('hide', 'Shown');
  const b = await join('hide', 'Watcher');
  await videoFlows(b, 'video[data-role="remote"]');
  // Out of sight: the page says so and the server stops sending it video.
  await b.evaluate(() => { document.querySelector('#grid').style.display = 'none'; });
  await sleep(1500);
  const paused = await inbound(b, 'video', 'framesDecoded');
  await sleep(1500);
  assert.equal(await inbound(b, 'video', 'framesDecoded'), paused, 'no frames while hidden');
  assert.ok(await inbound(b, 'audio', 'packetsReceived') > 0, 'audio goes on');
  await b.evaluate(() => { document.querySelector('#grid').style.display = ''; });
  await waitInPage(b, () => true, null);
  const t0 = Date.now();
  for (;;) {
    if (await inbound(b, 'video', 'framesDecoded') > paused + 5) break;
    assert.ok(Date.now() - t0 < 5000, 'video back within 5 s');
    await sleep(100);
  }
  for (const p of [a, b]) await p.context().close();
});

test('a screen share through the SFU shows up as a screen tile next to the camera', async () => {
  const a = await join('present', 'Presenter');
  const b = await join('present', 'Viewer');
  await videoFlows(b, 'video[data-role="remote"]');
  const presenter = await myId(a);
  await a.click('#btn-screen');
  const screen = await videoFlows(b, `video[data-role="screen"][data-peer="${presenter}"]`);
  assert.ok(screen.w > 0);
  await videoFlows(b, `video[data-role="remote"][data-peer="${presenter}"]`);
  // Stopped, the tile goes; shared again, it comes back on the same line.
  await a.click('#btn-screen');
  await waitInPage(b, () => !document.querySelector('video[data-role="screen"]'), null, { what: 'screen tile gone' });
  await a.click('#btn-screen');
  await videoFlows(b, `video[data-role="screen"][data-peer="${presenter}"]`);
  for (const p of [a, b]) await p.context().close();
});

test('a screen share is sent sharp, and a pinned screen tile gets its full resolution', async () => {
  const a = await join('slides', 'Presenter');
  const b = await join('slides', 'Viewer');
  await videoFlows(b, 'video[data-role="remote"]');
  const presenter = await myId(a);
  await a.click('#btn-screen');
  const selector = `video[data-role="screen"][data-peer="${presenter}"]`;
  await videoFlows(b, selector);
  // Two layers (half and full size), frames dropped before pixels, the track marked as detail.
  const sent = await a.evaluate(() => {
    const link = [...window.huddle.links.values()].find((l) => l.screenTx);
    const params = link.screenTx.sender.getParameters();
    return {
      rids: params.encodings.map((e) => e.rid),
      degradation: params.degradationPreference,
      hint: link.screenTx.sender.track.contentHint,
    };
  });
  assert.deepEqual(sent, { rids: ['h', 'f'], degradation: 'maintain-resolution', hint: 'detail' });
  // Pinned, the tile is larger than the half-size layer: the full 1080p layer comes.
  await b.evaluate((selector) => {
    document.querySelector(selector).closest('.tile').querySelector('[data-view="pin"]').click();
  }, selector);
  const full = await waitInPage(b, (selector) => {
    const v = document.querySelector(selector);
    return { ok: v.videoWidth === 1920, w: v.videoWidth, h: v.videoHeight };
  }, selector, { timeout: 30000, what: 'the screen share at 1920 wide' });
  assert.equal(full.h, 1080);
  for (const p of [a, b]) await p.context().close();
});

/** Records, in the page, when each frame of `selector`'s video is shown. */
async function recordFrames(page, selector) {
  await page.evaluate((selector) => {
    const v = document.querySelector(selector);
    v.__shown = [];
    const count = (now) => { v.__shown.push(now); v.requestVideoFrameCallback(count); };
    v.requestVideoFrameCallback(count);
  }, selector);
}

/** The longest wait between two shown frames of `selector`'s video since `recordFrames`. */
async function longestGap(page, selector) {
  return page.evaluate((selector) => {
    const t = document.querySelector(selector).__shown;
    let gap = 0;
    for (let i = 1; i < t.length; i += 1) gap = Math.max(gap, t[i] - t[i - 1]);
    return { gap, frames: t.length };
  }, selector);
}

const directLinks = (p) => p.evaluate(() => [...window.huddle.links.entries()]
  .filter(([k, l]) => k !== 'sfu' && l.pc.connectionState === 'connected').map(([k]) => k));

test('auto: two are peer-to-peer, a third moves everyone to the SFU, and back to two goes direct', async () => {
  // No ?mode=: auto is what a new room is by default.
  const auto = (name) => lab.page(browser, `/r/duo?name=${name}&autojoin=1`);
  const a = await auto('Ann');
  await waitInPage(a, () => window.huddle.me.mode === 'auto', null, { what: 'an auto room by default' });
  const b = await auto('Ben');
  const [ia, ib] = [await myId(a), await myId(b)];
  for (const [p, other] of [[a, ib], [b, ia]]) {
    await waitInPage(p, (o) => [...window.huddle.links.keys()].includes(o)
      && window.huddle.links.get(o).pc.connectionState === 'connected', other, { what: 'a direct call' });
    await videoFlows(p, `video[data-role="remote"][data-peer="${other}"]`);
  }
  const tileOfBen = `video[data-role="remote"][data-peer="${ib}"]`;
  await recordFrames(a, tileOfBen);
  const c = await auto('Cat');
  const ic = await myId(c);
  for (const p of [a, b]) {
    await waitInPage(p, () => [...window.huddle.links.keys()].join() === 'sfu', null, { what: 'only the server' });
  }
  for (const p of [a, b, c]) {
    for (const id of await remoteIds(p)) await videoFlows(p, `video[data-role="remote"][data-peer="${id}"]`);
  }
  await sleep(1000);
  const { gap, frames } = await longestGap(a, tileOfBen);
  console.log(`video gap at the switch to the SFU: ${Math.round(gap)} ms (${frames} frames)`);
  assert.ok(gap <= 1500, `video stopped for ${Math.round(gap)} ms at the switch`);

  // Back to two: direct again after a few seconds.
  await c.context().close();
  for (const p of [a, b]) {
    await waitInPage(p, (id) => !document.querySelector(`video[data-peer="${id}"]`), ic, { what: 'Cat gone' });
  }
  await waitInPage(a, (o) => window.huddle.links.get(o)?.pc.connectionState === 'connected', ib, { timeout: 20000, what: 'direct again' });
  assert.deepEqual(await directLinks(b), [ia]);
  await videoFlows(a, tileOfBen);
  for (const p of [a, b]) await p.context().close();
});

test('a grid of many pages: tiles on other pages get no video until their page is shown', async () => {
  // Two tiles a page (yours and one other): of three others, two wait on page 2.
  const a = await lab.page(browser, '/r/pages?name=Pager&autojoin=1&mode=sfu&per-page=2');
  const others = [];
  for (const name of ['P1', 'P2', 'P3']) others.push(await join('pages', name));
  await waitInPage(a, () => document.querySelectorAll('video[data-role="remote"]').length === 3, null, { what: 'three remote tiles' });
  await waitInPage(a, () => document.querySelector('#pager-label')?.textContent === 'Page 1 of 2 · 2 more'
    || document.querySelector('#pager-label')?.textContent, null, { what: 'the pager' });
  assert.equal(await a.textContent('#pager-label'), 'Page 1 of 2 · 2 more');
  const shown = await a.evaluate(() => [...document.querySelectorAll('video[data-role="remote"]')]
    .filter((v) => !v.closest('.tile').hidden).map((v) => v.dataset.peer));
  assert.equal(shown.length, 1);
  await videoFlows(a, `video[data-peer="${shown[0]}"]`);
  // Only the shown tile's video decodes.
  const decoded = () => a.evaluate(async () => {
    const link = window.huddle.links.get('sfu');
    const by = {};
    (await link.down.getStats()).forEach((s) => {
      if (s.type === 'inbound-rtp' && s.kind === 'video') by[s.mid] = s.framesDecoded || 0;
    });
    return Object.entries(by).filter(([mid]) => {
      const v = [...document.querySelectorAll('video[data-role="remote"]')]
        .find((x) => x.srcObject?.getVideoTracks()[0] === link.track(mid));
      return v && v.closest('.tile').hidden;
    }).map(([, n]) => n);
  });
  await sleep(2000);
  const before = await decoded();
  await sleep(1500);
  assert.deepEqual(await decoded(), before, 'tiles on page 2 decode nothing');
  await a.click('#pager-next');
  assert.equal(await a.textContent('#pager-label'), 'Page 2 of 2 · 2 more');
  for (const id of await remoteIds(a)) {
    const hidden = await a.evaluate((id) => document.querySelector(`video[data-peer="${id}"]`).closest('.tile').hidden, id);
    if (!hidden) await videoFlows(a, `video[data-peer="${id}"]`);
  }
  for (const p of [a, ...others]) await p.context().close();
});

test('a WHIP publisher moves an auto room of two onto the server, where its pages see it', async () => {
  const a = await lab.page(browser, '/r/cast?name=Ann&autojoin=1');
  const b = await lab.page(browser, '/r/cast?name=Ben&autojoin=1');
  const [ia, ib] = [await myId(a), await myId(b)];
  const direct = (p, other) => waitInPage(p, (o) => window.huddle.links.get(o)?.pc.connectionState === 'connected',
    other, { what: 'a direct call', timeout: 20000 });
  await direct(a, ib);
  // What OBS does: publish camera and mic to the room over WHIP, from no page of the room.
  const obs = await lab.page(browser, '/healthz');
  const location = await publishWhip(obs, 'cast', { width: 640, height: 360 });
  for (const [p, other] of [[a, ib], [b, ia]]) {
    await videoFlows(p, 'video[data-peer="whip"]');
    await waitInPage(p, (o) => !window.huddle.links.has(o), other, { what: 'the direct call closed' });
    await videoFlows(p, `video[data-role="remote"][data-peer="${other}"]`);
  }
  // The broadcast ends: its tile goes, and the two call each other directly again.
  assert.equal(await obs.evaluate(async (loc) => (await fetch(loc, { method: 'DELETE' })).status, location), 200);
  for (const p of [a, b]) {
    await waitInPage(p, () => !document.querySelector('video[data-peer="whip"]'), null, { what: 'the broadcast tile gone' });
  }
  await direct(a, ib);
  await videoFlows(a, `video[data-role="remote"][data-peer="${ib}"]`);
  for (const p of [a, b, obs]) await p.context().close();
});

test('a killed and restarted server: an SFU room comes back, everyone seen again', async () => {
  const pages = [];
  for (const name of ['Ann', 'Ben', 'Cat']) pages.push(await join('phoenix', name));
  for (const p of pages) {
    await waitInPage(p, () => document.querySelectorAll('video[data-role="remote"]').length === 2, null, { what: 'two remote tiles' });
  }
  await videoFlows(pages[0], 'video[data-role="remote"]');
  const old = await Promise.all(pages.map(myId));
  await lab.stopServer('SIGKILL');
  await lab.startServer();
  for (const [i, p] of pages.entries()) {
    // The new server knows nobody: each page joins afresh, with new connections to it.
    await waitInPage(p, (was) => window.huddle.me.id && window.huddle.me.id !== was, old[i], { timeout: 20000, what: 'a new session' });
  }
  for (const p of pages) {
    await waitInPage(p, () => document.querySelectorAll('video[data-role="remote"]').length === 2, null, { what: 'two remote tiles again' });
    for (const id of await remoteIds(p)) await videoFlows(p, `video[data-role="remote"][data-peer="${id}"]`);
    assert.deepEqual(await p.evaluate(() => [...window.huddle.links.keys()]), ['sfu']);
  }
  for (const p of pages) await p.context().close();
});
