// Firefox (Debian's firefox-esr, driven by puppeteer-core over WebDriver BiDi) in a room with
// Chromium, in a mesh and in an SFU room: each sees and hears the other. Firefox's SDP and
// simulcast differ from Chromium's, so this is the server's and the page's second dialect.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { fileURLToPath } from 'node:url';
import { Lab, videoFlows, inbound, waitInPage, sleep } from './harness.mjs';

const lab = new Lab('firefox');
let browser;

before(async () => {
  lab.setup();
  // Firefox gathers no ICE candidates in a namespace without a default route (it takes itself
  // to be offline), and will not reach a server on loopback from its 10.x sockets: the server
  // listens on the namespace's veth address. Nothing leaves the namespace either way.
  lab.exec('ip', ['route', 'add', 'default', 'via', '10.99.0.2', 'dev', 'v0']);
  lab.host = '10.99.0.1';
  await lab.startServer();
  browser = await lab.browser();
});

after(async () => {
  await lab.teardown();
});

/** A Firefox page of `path`, in its own process in the namespace (see firefox-page.mjs). */
function firefox(path) {
  const script = fileURLToPath(new URL('./firefox-page.mjs', import.meta.url));
  const child = lab.spawn('node', [script, lab.url(path)]);
  child.status = () => {
    const lines = child.log.split('\n').filter((l) => l.startsWith('{"joined":true'));
    return lines.length ? JSON.parse(lines.at(-1)) : null;
  };
  child.close = async () => {
    if (child.exitCode !== null) return;
    const exited = new Promise((resolve) => child.once('exit', resolve));
    child.kill('SIGTERM');
    await exited;
  };
  return child;
}

async function untilStatus(child, pred, what, timeout = 30000) {
  const deadline = Date.now() + timeout;
  while (Date.now() < deadline) {
    const s = child.status();
    if (s && pred(s)) return s;
    if (child.exitCode !== null) break;
    await sleep(250);
  }
  throw new Error(`Firefox: timed out waiting for ${what}; last: ${JSON.stringify(child.status())}\n${child.log.slice(-3000)}`);
}

const rooms = { mesh: 'a mesh room', sfu: 'an SFU room', auto: 'an auto room (peer-to-peer for two)' };
for (const [mode, room] of Object.entries(rooms)) {
  test(`Firefox and Chromium see and hear each other in ${room}`, async (t) => {
    const chrome = await lab.page(browser, `/r/fox-${mode}?name=Chrome&autojoin=1&mode=${mode}`);
    const chromeId = await waitInPage(chrome, () => window.huddle.me.id, null, { what: 'a welcome' });
    const fox = firefox(`/r/fox-${mode}?name=Fox&autojoin=1&mode=${mode}`);
    try {
      const seen = await untilStatus(fox, (s) => s.remote[chromeId]?.frames >= 10 && s.audio > 0,
        "Chromium's video and audio");
      assert.equal(seen.mode, mode);
      if (mode === 'sfu') {
        assert.deepEqual(seen.links, ['sfu'], 'only the server');
        t.diagnostic(`Firefox sends its camera in ${seen.layers} simulcast layers`);
      }
      await videoFlows(chrome, `video[data-role="remote"][data-peer="${seen.id}"]`);
      const before = await inbound(chrome, 'audio', 'packetsReceived');
      await sleep(1000);
      const after = await inbound(chrome, 'audio', 'packetsReceived');
      assert.ok(after > before, `Firefox's audio reaches Chromium: ${before} -> ${after}`);
    } finally {
      await fox.close();
      await chrome.context().close();
    }
  });
}
