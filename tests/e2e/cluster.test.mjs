// Three Huddle nodes over one Redis, in the lab's namespace on three addresses: pages that reach
// different nodes meet in one room (mesh and SFU), and when the room's node is killed they come
// back, with video, on another.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { Lab, HUDDLE, publishWhip, videoFlows, remoteIds, waitInPage, sleep } from './harness.mjs';
import { homeNode, weight } from '../../web/signaling.js';

const lab = new Lab('cluster');
const ADDRS = ['10.99.0.1', '10.99.0.3', '10.99.0.4'];
const REDIS = '10.99.0.1:6390';
const nodes = [];
let browser;

/** Starts node `i` on its own address; resolves when it serves. */
async function startNode(i) {
  const addr = ADDRS[i];
  const child = lab.spawn(HUDDLE, ['serve', '--listen', `${addr}:8443`, '--no-turn',
    '--data-dir', join(lab.dir, `node${i}`), '--redis', `redis://${REDIS}`,
    '--node-id', `node${i}`, '--public-url', `https://${addr}:8443`]);
  child.url = `https://${addr}:8443`;
  await lab.waitFor(child, 'Huddle is serving');
  nodes[i] = child;
  return child;
}

before(async () => {
  lab.setup();
  for (const addr of ADDRS.slice(1)) lab.exec('ip', ['addr', 'add', `${addr}/24`, 'dev', 'v0']);
  const [host, port] = REDIS.split(':');
  const redis = lab.spawn('redis-server', ['--bind', host, '--port', port, '--save', '', '--appendonly', 'no',
    // Bound to a namespace address without a password: its clients are not loopback.
    '--protected-mode', 'no']);
  await lab.waitFor(redis, 'Ready to accept connections');
  for (let i = 0; i < ADDRS.length; i++) await startNode(i);
  // Every node has seen the others (a heartbeat is 2 s).
  await sleep(2500);
  browser = await lab.browser();
});

after(async () => {
  await lab.teardown();
});

/** A page opened from node `i`. */
async function open(i, room, name, mode) {
  const context = await browser.newContext({ ignoreHTTPSErrors: true, viewport: { width: 1100, height: 700 } });
  const page = await context.newPage();
  page.logs = [];
  page.on('console', (m) => page.logs.push(`${m.type()}: ${m.text()}`));
  page.on('pageerror', (e) => page.logs.push(`pageerror: ${e.message}`));
  await page.goto(`${nodes[i].url}/r/${room}?name=${name}&autojoin=1&mode=${mode}`);
  await waitInPage(page, () => window.huddle.me.id, null, { what: 'a welcome' });
  return page;
}

const node = (page) => page.evaluate(() => new URL(window.huddle.signaling.url).host);

async function allSeeEachOther(pages) {
  for (const p of pages) {
    await waitInPage(p, (n) => document.querySelectorAll('video[data-role="remote"]').length === n,
      pages.length - 1, { timeout: 20000, what: `${pages.length - 1} remote tiles` });
    for (const id of await remoteIds(p)) await videoFlows(p, `video[data-role="remote"][data-peer="${id}"]`);
  }
}

for (const mode of ['mesh', 'sfu']) {
  test(`pages that reach three different nodes meet in one ${mode} room`, async () => {
    const pages = [];
    for (const [i, name] of ['Ada', 'Bo', 'Cy'].entries()) pages.push(await open(i, `${mode}-room`, name, mode));
    const hosts = new Set(await Promise.all(pages.map(node)));
    assert.equal(hosts.size, 1, `one node hosts the room: ${[...hosts]}`);
    await allSeeEachOther(pages);
    for (const p of pages) await p.context().close();
  });
}

/** The room's lease in Redis (`FENCE|NODE|URL`), or '' when there is none. */
async function lease(room) {
  const [host, port] = REDIS.split(':');
  return (await lab.run('redis-cli', ['-h', host, '-p', port, 'GET', `huddle:room:${room}`])).out.trim();
}

test('a page goes straight to its room\'s home node, which the page it loaded names', async () => {
  // The page's weights are the server's (huddle_signal_proto::home's unit test has the same).
  assert.equal(weight('standup', 'https://a.example:8443'), 0x0b28fb5c);
  assert.equal(weight('standup', 'https://b.example:8443'), 0x4f255098);
  assert.equal(weight('', ''), 0x0578ab1b);
  const urls = nodes.map((n) => n.url);
  // A room whose home is not node 0, the node the page is loaded from.
  let room = 'home-0';
  for (let i = 1; homeNode(room, urls) === urls[0]; i++) room = `home-${i}`;
  const home = homeNode(room, urls);
  const context = await browser.newContext({ ignoreHTTPSErrors: true });
  const page = await context.newPage();
  page.logs = [];
  const sockets = [];
  page.on('websocket', (ws) => sockets.push(new URL(ws.url()).host));
  await page.goto(`${nodes[0].url}/r/${room}?name=Di&autojoin=1&mode=mesh`);
  await waitInPage(page, () => window.huddle.me.id, null, { what: 'a welcome' });
  const named = await page.evaluate(() => document.querySelector('meta[name="huddle-nodes"]').content.split(' '));
  assert.deepEqual([...named].sort(), [...urls].sort());
  // One WebSocket, to the home node (no detour through node 0 and `moved`), which holds the room.
  assert.deepEqual(sockets, [new URL(home).host]);
  assert.match(await lease(room), new RegExp(`\\|node${urls.indexOf(home)}\\|`));
  await context.close();
});

test('a WHIP publisher reaching another node is sent to the room\'s node, and holds it', async () => {
  const viewer = await open(0, 'broadcast', 'Viewer', 'sfu');
  const owner = await node(viewer);
  const other = nodes.findIndex((n) => new URL(n.url).host !== owner);
  // As OBS would: a client of its own, not under our pages' CSP (which lets them reach only
  // the nodes' WebSockets), so the redirect to another node is followed.
  const whipClient = () => browser.newContext({ ignoreHTTPSErrors: true, bypassCSP: true }).then((c) => c.newPage());
  const publisher = await whipClient();
  await publisher.goto(`${nodes[other].url}/echo`);
  // The page posts to its own node, which redirects the offer (307) to the room's node.
  const location = await publishWhip(publisher, 'broadcast');
  assert.match(location, /^\/whip\/broadcast\//);
  await waitInPage(viewer, () => document.querySelectorAll('video[data-role="remote"]').length === 1, null, { what: 'the WHIP tile' });
  await videoFlows(viewer, 'video[data-role="remote"]');

  // A room with nothing but a WHIP publisher keeps its lease while it publishes.
  const solo = await whipClient();
  await solo.goto(`${nodes[other].url}/echo`);
  await publishWhip(solo, 'solo-stream');
  await sleep(8000);
  assert.match(await lease('solo-stream'), new RegExp(`\\|node${other}\\|`));
  await solo.context().close();
  await publisher.context().close();
  await viewer.context().close();
});

test('the room\'s node is killed: its pages come back with video on another node', async () => {
  const pages = [];
  for (const [i, name] of ['Ann', 'Ben', 'Cat'].entries()) pages.push(await open(i, 'phoenix', name, 'sfu'));
  await allSeeEachOther(pages);
  const owner = await node(pages[0]);
  const dead = nodes.findIndex((n) => new URL(n.url).host === owner);
  const old = await Promise.all(pages.map((p) => p.evaluate(() => window.huddle.me.id)));
  const t0 = Date.now();
  nodes[dead].kill('SIGKILL');
  for (const [i, p] of pages.entries()) {
    await waitInPage(p, (was) => window.huddle.me.id && window.huddle.me.id !== was, old[i],
      { timeout: 20000, what: 'a new session on another node' });
  }
  const rejoined = Date.now() - t0;
  await allSeeEachOther(pages);
  const video = Date.now() - t0;
  console.log(`owner killed → pages rejoined in ${rejoined} ms, video back in ${video} ms`);
  const hosts = new Set(await Promise.all(pages.map(node)));
  assert.equal(hosts.size, 1);
  assert.ok(!hosts.has(owner), 'on another node');
  assert.ok(rejoined <= 10000, `rejoined in ${rejoined} ms`);
  for (const p of pages) await p.context().close();
  await startNode(dead);
});
