// Renders the lobby and a three-person call to PNGs (docs/ uses the call one in the README).
// Usage: node tests/e2e/screenshot.mjs OUT_DIR

import { Lab, videoFlows, waitInPage, sleep } from './harness.mjs';

const out = process.argv[2] || '.';
const lab = new Lab('shot').setup();
try {
  await lab.startServer();
  const browser = await lab.browser();
  const lobby = await lab.page(browser, '/');
  await sleep(1500);
  await lobby.screenshot({ path: `${out}/lobby.png` });
  const pages = [];
  for (const name of ['Ada Lovelace', 'Grace Hopper', 'Alan Turing']) {
    pages.push(await lab.page(browser, `/r/design-review?name=${encodeURIComponent(name)}&autojoin=1`));
  }
  const [a] = pages;
  await waitInPage(a, () => document.querySelectorAll('video[data-role="remote"]').length === 2, null, {});
  for (const v of ['video[data-role="remote"]']) await videoFlows(a, v);
  await pages[2].click('#btn-mic');
  await a.click('#btn-mic');
  await a.click('#btn-chat');
  await pages[1].click('#btn-chat');
  await pages[1].fill('#chat-input', 'Can everyone see my slides?');
  await pages[1].press('#chat-input', 'Enter');
  await sleep(2500);
  await a.screenshot({ path: `${out}/call.png` });
  await a.setViewportSize({ width: 390, height: 760 });
  await a.click('#btn-chat');
  await sleep(800);
  await a.screenshot({ path: `${out}/call-phone.png` });
} finally {
  await lab.teardown();
}
