// SFU rooms (protocol v2): every page sends once to the server's media peer and receives the
// others from it, on two connections with the server and none with the other pages.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { Lab, videoFlows, inbound, remoteIds, waitInPage, sleep } from './harness.mjs';

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
  }
  const before = await inbound(pages[0], 'audio', 'packetsReceived');
  await sleep(1000);
  const after = await inbound(pages[0], 'audio', 'packetsReceived');
  assert.ok(after > before, `audio packets ${before} -> ${after}`);

  // A leaver is gone from the others within 2 s, and the rest keep flowing.
  const leaver = await pages[3].evaluate(() => window.huddle.me.id);
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
  const last = await c.evaluate(() => window.huddle.me.id);
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
  const presenter = await a.evaluate(() => window.huddle.me.id);
  await a.click('#btn-screen');
  const screen = await videoFlows(b, `video[data-role="screen"][data-peer="${presenter}"]`);
  assert.ok(screen.w > 0);
  await videoFlows(b, `video[data-role="remote"][data-peer="${presenter}"]`);
  for (const p of [a, b]) await p.context().close();
});
