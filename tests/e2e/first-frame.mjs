// Benchmark: time from navigation to the first remote video frame, two pages on loopback through
// `huddle serve`, in the same lab as the browser tests. Prints each run and the median.
// Usage: HUDDLE_BIN=target/release/huddle node tests/e2e/first-frame.mjs [RUNS] [MODE]
// MODE is the room's (`mesh`, `sfu` or `auto`, the server's default when absent).

import { Lab, waitInPage } from './harness.mjs';

const runs = Number(process.argv[2] || 7);
const mode = process.argv[3] ? `&mode=${process.argv[3]}` : '';
const lab = new Lab('frame').setup();

// Installed before any page script: stamps the first presented frame of every remote video,
// in milliseconds since navigation start (the page's time origin).
const stamp = () => {
  window.__firstRemoteFrame = null;
  new MutationObserver(() => {
    for (const v of document.querySelectorAll('video[data-role="remote"]:not([data-watched])')) {
      v.dataset.watched = '1';
      v.requestVideoFrameCallback((now) => {
        if (window.__firstRemoteFrame === null) window.__firstRemoteFrame = now;
      });
    }
  }).observe(document, { childList: true, subtree: true });
};

try {
  await lab.startServer();
  const browser = await lab.browser();
  const times = { first: [], second: [] };
  for (let i = 0; i < runs; i += 1) {
    const room = `frame-${i}`;
    const pages = [];
    for (const name of ['A', 'B']) {
      const context = await browser.newContext({ ignoreHTTPSErrors: true });
      await context.addInitScript(stamp);
      const page = await context.newPage();
      page.logs = [];
      pages.push(page);
    }
    // Both navigate at once, as two people opening the same link.
    await Promise.all(pages.map((p, k) => p.goto(lab.url(`/r/${room}?name=${k}&autojoin=1${mode}`))));
    const [a, b] = await Promise.all(pages.map((p) =>
      waitInPage(p, () => window.__firstRemoteFrame, null, { what: 'first remote frame' })));
    const [first, second] = [a, b].sort((x, y) => x - y);
    times.first.push(first);
    times.second.push(second);
    console.log(`run ${i + 1}: first page ${first.toFixed(0)} ms, second page ${second.toFixed(0)} ms`);
    for (const p of pages) await p.context().close();
  }
  const median = (v) => [...v].sort((x, y) => x - y)[Math.floor(v.length / 2)];
  console.log(`median over ${runs} runs: ${median(times.first).toFixed(0)} ms (first page to see video), ` +
    `${median(times.second).toFixed(0)} ms (both pages)`);
} finally {
  await lab.teardown();
}
