// Access tokens in the browser: invitations minted by LiveKit's own server SDK open a room on a
// server with a key; a host mutes one participant and removes another, who cannot come back
// with the same link; a page without an invitation is told why in words.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { AccessToken, TrackSource } from 'livekit-server-sdk';
import { SignJWT } from 'jose';
import { Lab, videoFlows, waitInPage } from './harness.mjs';

const KEY = 'lkdevkey';
const SECRET = 'a-livekit-secret-of-32-characters!!';
const ROOM = 'board';

const lab = new Lab('access');
let browser;

before(async () => {
  lab.setup();
  await lab.startServer(['--auth-key', `${KEY}:${SECRET}`]);
  browser = await lab.browser();
});

after(async () => {
  await lab.teardown();
});

/** A join link with a token made the way a LiveKit backend makes one. */
async function invitation(identity, name, grant = {}) {
  const at = new AccessToken(KEY, SECRET, { identity, name, ttl: '10m' });
  at.addGrant({ room: ROOM, roomJoin: true, ...grant });
  return `/r/${ROOM}?autojoin=1#token=${await at.toJwt()}`;
}

async function joined(page) {
  await waitInPage(page, () => Boolean(window.huddle.me.id), null, { what: 'welcome' });
}

test('a host mutes one participant and removes another, who cannot come back', async () => {
  const host = await lab.page(browser, await invitation('host', 'Hana Host', { roomAdmin: true }));
  await joined(host);
  const bob = await lab.page(browser, await invitation('bob', 'Bob'));
  const carol = await lab.page(browser, await invitation('carol', 'Carol', {
    canPublishSources: [TrackSource.CAMERA, TrackSource.MICROPHONE],
  }));
  await joined(bob);
  await joined(carol);
  await waitInPage(host, () => document.querySelectorAll('video[data-role="remote"]').length === 2, null, { what: 'two remote tiles' });
  await videoFlows(host, 'video[data-role="remote"]');

  // The invitation leaves the address bar (a copied URL hands out nobody's token), and the
  // page offers no bare invite link.
  assert.ok(!host.url().includes('token='), host.url());
  assert.equal(await host.isHidden('#copy-link'), true);

  // The names come from the tokens; Carol's grant has no screen share, so no Share button.
  assert.equal(await bob.evaluate(() => window.huddle.me.permissions.admin), false);
  assert.equal(await host.evaluate(() => window.huddle.me.permissions.admin), true);
  assert.equal(await carol.isHidden('#btn-screen'), true);
  assert.equal(await bob.isHidden('#btn-screen'), false);
  assert.equal(await bob.isHidden('#btn-lock'), true);
  const names = await host.$$eval('.tile-remote .name', (els) => els.map((e) => e.textContent).sort());
  assert.deepEqual(names, ['Bob', 'Carol']);

  // Mute Bob: his page stops sending and says so; the host sees his mic crossed out.
  const bobId = await bob.evaluate(() => window.huddle.me.id);
  const bobTile = `.tile[data-key="${bobId}"]`;
  await host.hover(bobTile);
  await host.click(`${bobTile} button[data-action="mute-mic"]`);
  await waitInPage(bob, () => window.huddle.me.micOn === false, null, { what: 'Bob muted' });
  assert.match(await bob.textContent('#banner'), /host turned off your microphone/i);
  await waitInPage(host, (sel) => !document.querySelector(`${sel} .mic-off`).hasAttribute('hidden'), bobTile, { what: 'mute shown' });

  // The list of people says it in words too, and holds the same actions.
  await host.click('#btn-people');
  await waitInPage(host, (id) => document.querySelector(`#people-list li[data-peer="${id}"] .media`)?.textContent.includes('mic off'), bobId, { what: 'mic off in the list' });
  assert.equal(await bob.$$eval('#people-list button', (b) => b.length), 0, 'no actions for a non-host');

  // Remove Carol from the list (the host confirms): she is told, and is gone for the others.
  const carolId = await carol.evaluate(() => window.huddle.me.id);
  host.once('dialog', (d) => d.accept());
  await host.click(`#people-list li[data-peer="${carolId}"] button[data-action="remove"]`);
  await waitInPage(carol, () => !document.getElementById('message').hidden, null, { what: 'removed message' });
  assert.match(await carol.textContent('#message-title'), /removed/i);
  await waitInPage(bob, (id) => !document.querySelector(`.tile[data-key="${id}"]`), carolId, { what: 'Carol gone for Bob' });

  // The same link again, as a refresh does (LiveKit's issue #2804): refused, in words.
  await carol.reload();
  await waitInPage(carol, () => !document.getElementById('message').hidden, null, { what: 'refusal' });
  assert.match(await carol.textContent('#message-title'), /cannot join/i);
  assert.match(await carol.textContent('#message-text'), /removed/i);
  for (const p of [host, bob, carol]) await p.context().close();
});

test('without an invitation, or with one for another room, the page says why', async () => {
  const anon = await lab.page(browser, `/r/${ROOM}?name=Anon&autojoin=1`);
  await waitInPage(anon, () => !document.getElementById('message').hidden, null, { what: 'refusal' });
  assert.match(await anon.textContent('#message-title'), /needs an invitation/i);

  const at = new AccessToken(KEY, SECRET, { identity: 'x', name: 'X', ttl: '10m' });
  at.addGrant({ room: 'elsewhere', roomJoin: true });
  const wrong = await lab.page(browser, `/r/${ROOM}?autojoin=1#token=${await at.toJwt()}`);
  await waitInPage(wrong, () => !document.getElementById('message').hidden, null, { what: 'wrong room' });
  assert.match(await wrong.textContent('#message-text'), /for the room “elsewhere”/);

  // LiveKit's claims, expired two minutes ago (past the minute of skew allowed), signed with
  // the library LiveKit's SDK signs with.
  const now = Math.floor(Date.now() / 1000);
  const expired = await new SignJWT({ name: 'Y', video: { room: ROOM, roomJoin: true } })
    .setProtectedHeader({ alg: 'HS256' }).setIssuer(KEY).setSubject('y')
    .setNotBefore(now - 600).setExpirationTime(now - 120)
    .sign(new TextEncoder().encode(SECRET));
  const late = await lab.page(browser, `/r/${ROOM}?autojoin=1#token=${expired}`);
  await waitInPage(late, () => !document.getElementById('message').hidden, null, { what: 'expired' });
  assert.match(await late.textContent('#message-text'), /expired/i);
  for (const p of [anon, wrong, late]) await p.context().close();
});
