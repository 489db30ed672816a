// Browser-to-browser calls through `huddle serve`: video, audio, mesh, screen share, chat, leave,
// receive-only, server restart.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { Lab, videoFlows, inbound, remoteIds, waitInPage, sleep } from './harness.mjs';

const lab = new Lab('call');
let browser;

before(async () => {
  lab.setup();
  await lab.startServer();
  browser = await lab.browser();
});

after(async () => {
  await lab.teardown();
});

// The server's default room mode (auto): two pages call each other directly.
const join = (room, name) => lab.page(browser, `/r/${room}?name=${name}&autojoin=1`);

test('two pages see and hear each other', async () => {
  const a = await join('pair', 'Ada');
  const b = await join('pair', 'Bob');
  await videoFlows(a, 'video[data-role="remote"]');
  await videoFlows(b, 'video[data-role="remote"]');
  await videoFlows(a, 'video[data-role="local"]');
  const before = await inbound(a, 'audio', 'packetsReceived');
  await sleep(1000);
  const after = await inbound(a, 'audio', 'packetsReceived');
  assert.ok(after > before, `audio packets ${before} -> ${after}`);
  const framesBefore = await inbound(b, 'video', 'framesDecoded');
  await sleep(500);
  assert.ok(await inbound(b, 'video', 'framesDecoded') > framesBefore);
  await a.context().close();
  await b.context().close();
});

test('three pages form a mesh, chat arrives, a leaver disappears within 2 s', async () => {
  const pages = [];
  // A mesh by choice: the server's default (auto) would take three through its media peer.
  for (const name of ['One', 'Two', 'Three']) pages.push(await lab.page(browser, `/r/mesh?name=${name}&autojoin=1&mode=mesh`));
  await waitInPage(pages[0], () => window.huddle.me.mode === 'mesh', null, { what: 'a mesh room' });
  for (const p of pages) {
    await waitInPage(p, () => document.querySelectorAll('video[data-role="remote"]').length === 2, null, { what: 'two remote tiles' });
    const ids = await remoteIds(p);
    for (const id of ids) await videoFlows(p, `video[data-role="remote"][data-peer="${id}"]`);
  }

  await pages[0].click('#btn-chat');
  await pages[0].fill('#chat-input', 'hello mesh');
  await pages[0].press('#chat-input', 'Enter');
  for (const p of pages.slice(1)) {
    await waitInPage(p, () => document.querySelector('#chat-log')?.textContent.includes('hello mesh'), null, { what: 'chat' });
    assert.equal(await p.textContent('#chat-badge'), '1');
  }

  const leaverId = await pages[2].evaluate(() => window.huddle.me.id);
  const t0 = Date.now();
  await pages[2].click('#btn-leave');
  for (const p of pages.slice(0, 2)) {
    await waitInPage(p, (id) => !document.querySelector(`video[data-peer="${id}"]`), leaverId, { timeout: 2000, what: 'tile removed' });
  }
  assert.ok(Date.now() - t0 <= 2000);
  // Closing a tab (no Leave click) tells the others as fast.
  const closerId = await pages[1].evaluate(() => window.huddle.me.id);
  await pages[1].close({ runBeforeUnload: true });
  await waitInPage(pages[0], (id) => !document.querySelector(`video[data-peer="${id}"]`), closerId, { timeout: 2000, what: 'closed tab removed' });
  for (const p of pages) await p.context().close();
});

test('a screen share shows up on the others as a screen tile', async () => {
  const a = await join('share', 'Presenter');
  const b = await join('share', 'Viewer');
  await videoFlows(b, 'video[data-role="remote"]');
  const presenter = await a.evaluate(() => window.huddle.me.id);
  await a.click('#btn-screen');
  const screen = await videoFlows(b, `video[data-role="screen"][data-peer="${presenter}"]`);
  assert.ok(screen.w > 0);
  // Its dot says the connection it comes over, not "connecting" for as long as it runs.
  await waitInPage(b, () => document.querySelector('.tile.screen .dot')?.dataset.state === 'connected', null, { what: 'a connected screen tile' });
  // The camera tile keeps flowing next to it.
  await videoFlows(b, `video[data-role="remote"][data-peer="${presenter}"]`);
  await a.click('#btn-screen');
  await waitInPage(b, () => !document.querySelector('video[data-role="screen"]'), null, { what: 'screen tile gone' });
  await a.context().close();
  await b.context().close();
});

test('a page with camera and mic denied joins receive-only and is told why', async () => {
  const denied = await lab.browser({ fakeUi: false, args: ['--deny-permission-prompts'] });
  const a = await join('deny', 'Sender');
  const b = await lab.page(denied, '/r/deny?name=Watcher&autojoin=1');
  await waitInPage(b, () => document.querySelector('#media-notice')?.textContent.includes('blocked'), null, { what: 'notice' });
  await videoFlows(b, 'video[data-role="remote"]');
  const watcher = await b.evaluate(() => window.huddle.me.id);
  await waitInPage(a, (id) => document.querySelector(`.tile[data-key="${id}"]`)?.classList.contains('video-off'), watcher, { what: 'avatar tile' });
  await a.context().close();
  await b.context().close();
});

test('a killed and restarted server: pages reconnect and video flows again', async () => {
  const a = await join('restart', 'Ann');
  const b = await join('restart', 'Ben');
  await videoFlows(a, 'video[data-role="remote"]');
  await lab.stopServer('SIGKILL');
  await waitInPage(a, () => document.querySelector('#banner')?.textContent.includes('reconnecting'), null, { what: 'offline banner' });
  await lab.startServer();
  const oldId = await b.evaluate(() => window.huddle.me.id);
  await waitInPage(b, (old) => window.huddle.me.id && window.huddle.me.id !== old, oldId, { timeout: 20000, what: 'new session' });
  // Ann may still show Ben's tile of before the restart until she has rejoined herself: wait
  // for her one remote tile to be Ben's new session (a stale one must go).
  const ben = await b.evaluate(() => window.huddle.me.id);
  await waitInPage(a, (id) => {
    const peers = [...document.querySelectorAll('video[data-role="remote"]')].map((v) => v.dataset.peer);
    return peers.length === 1 && peers[0] === id;
  }, ben, { timeout: 20000, what: "Ben's new tile, and only it" });
  await videoFlows(a, `video[data-role="remote"][data-peer="${ben}"]`);
  await videoFlows(b, 'video[data-role="remote"]');
  await a.context().close();
  await b.context().close();
});

test('the page: room names checked in the lobby, states in words, keys, announcements', async () => {
  // A name the server would refuse is said before joining, with one it takes instead.
  const lobby = await lab.page(browser, '/r/caf%C3%A9');
  await waitInPage(lobby, () => !document.querySelector('#room-notice').hidden, null, { what: 'the room name notice' });
  assert.match(await lobby.textContent('#room-notice'), /“café” cannot be a room name/);
  assert.equal(await lobby.inputValue('#room-input'), 'cafe');
  assert.equal(await lobby.textContent('#join-button'), 'Join cafe');
  await lobby.fill('#room-input', 'bad!room');
  assert.equal(await lobby.textContent('#join-button'), 'Join room');
  await lobby.context().close();

  const a = await join('manners', 'Ada');
  await waitInPage(a, () => window.huddle.me.id, null, { what: 'a welcome' });
  const b = await join('manners', 'Bob');
  await waitInPage(a, () => document.querySelector('#announce').textContent === 'Bob joined', null, { what: 'the join announced' });
  // Mic and camera state in words, not only colour.
  assert.equal(await a.textContent('#btn-mic .label'), 'Mute');
  await a.keyboard.press('m');
  assert.equal(await a.textContent('#btn-mic .label'), 'Unmute');
  assert.equal(await a.getAttribute('#btn-mic', 'aria-pressed'), 'false');
  await a.keyboard.press('m');
  // C opens chat, Esc closes it — from its input too; ? lists the shortcuts.
  await a.keyboard.press('c');
  assert.equal(await a.isVisible('#chat'), true);
  await a.keyboard.press('Escape');
  assert.equal(await a.isVisible('#chat'), false);
  await a.keyboard.press('?');
  assert.equal(await a.isVisible('#shortcuts'), true);
  await a.keyboard.press('Escape');
  assert.equal(await a.isVisible('#shortcuts'), false);
  // A call of two: yourself small in the corner; a pinned tile takes the stage, the rest in a strip.
  await waitInPage(a, () => document.querySelector('.tile.self').classList.contains('pip'), null, { what: 'the self-view in the corner' });
  const bob = await b.evaluate(() => window.huddle.me.id);
  await a.hover(`.tile[data-key="${bob}"]`);
  await a.click(`.tile[data-key="${bob}"] [data-view="pin"]`);
  await waitInPage(a, (id) => document.querySelector(`.tile[data-key="${id}"]`).classList.contains('staged')
    && !document.querySelector('.tile.self').classList.contains('pip'), bob, { what: 'the pinned tile on the stage' });
  await b.click('#btn-leave');
  await waitInPage(a, () => document.querySelector('#announce').textContent === 'Bob left', null, { what: 'the leave announced' });
  for (const p of [a, b]) await p.context().close();
});
