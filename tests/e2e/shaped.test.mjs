// An SFU room whose pages sit behind links of different speeds: each receiving page gets the
// simulcast layer its own link carries (the server's bandwidth estimate for it), so one slow
// link costs the others nothing.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { Lab, videoFlows, waitInPage, sleep } from './harness.mjs';

const lab = new Lab('shaped');
let fast;
let slow;

before(async () => {
  lab.setup();
  // Not loopback: the shaped browser reaches the server from a namespace of its own.
  lab.host = '10.99.0.1';
  await lab.startServer();
  fast = await lab.browser();
  slow = await lab.shapedBrowser('300kbit');
});

after(async () => {
  await lab.teardown();
});

const join = (browser, name) => lab.page(browser, `/r/shaped?name=${name}&autojoin=1&mode=sfu`);

/** The width of the frames `page` shows of `peer`'s camera, 0 before any. */
const widthOf = (page, peer) => page.evaluate((peer) =>
  document.querySelector(`video[data-role="remote"][data-peer="${peer}"]`)?.videoWidth || 0, peer);

test('a page on a 300 kbit/s link gets a smaller layer while the others keep a larger one', async () => {
  const ada = await join(fast, 'Ada');
  const presenter = await waitInPage(ada, () => window.huddle.me.id, null, { what: 'a welcome' });
  const bob = await join(fast, 'Bob');
  const cy = await join(slow, 'Cy');
  const selector = `video[data-role="remote"][data-peer="${presenter}"]`;
  await videoFlows(bob, selector, { timeout: 30000 });
  await videoFlows(cy, selector, { timeout: 45000 });
  // The estimates settle within seconds; then the slow page's frames of Ada stay smaller.
  const deadline = Date.now() + 40000;
  let held = 0;
  let last;
  while (held < 5) {
    last = { fast: await widthOf(bob, presenter), slow: await widthOf(cy, presenter) };
    held = last.slow > 0 && last.slow < last.fast ? held + 1 : 0;
    if (Date.now() > deadline) assert.fail(`the slow page never settled on a smaller layer: ${JSON.stringify(last)}`);
    await sleep(500);
  }
  assert.ok(last.fast >= 2 * last.slow, `a layer at least twice as wide on the fast link: ${JSON.stringify(last)}`);
  // And its frames keep coming at that layer.
  await videoFlows(cy, selector, { frames: 30 });
  for (const p of [ada, bob, cy]) await p.context().close();
});
