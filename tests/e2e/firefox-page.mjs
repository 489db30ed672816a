// One Firefox page of a Huddle room, for firefox.test.mjs. Runs inside the test's namespace
// (puppeteer talks to Firefox's WebDriver BiDi socket on the namespace's loopback) and prints,
// every half second, one JSON line of what the page receives: its id and mode, the frames shown
// of each remote tile (counted with requestVideoFrameCallback: Firefox's totalVideoFrames stays
// 0 for WebRTC video) and the audio packets its connections received.
//
//   node firefox-page.mjs URL

import puppeteer from 'puppeteer-core';

const url = process.argv[2];
const browser = await puppeteer.launch({
  browser: 'firefox',
  executablePath: '/usr/bin/firefox-esr',
  headless: true,
  acceptInsecureCerts: true,
  extraPrefsFirefox: {
    'media.navigator.streams.fake': true,
    'media.navigator.permission.disabled': true,
    'permissions.default.camera': 1,
    'permissions.default.microphone': 1,
    // The server's candidates may be loopback addresses.
    'media.peerconnection.ice.loopback': true,
  },
});
const stop = async () => { await browser.close().catch(() => {}); process.exit(0); };
process.on('SIGTERM', stop);

const page = await browser.newPage();
page.on('console', (m) => { if (m.type() === 'error') console.log(JSON.stringify({ console: m.text() })); });
await page.goto(url);
for (;;) {
  const status = await page.evaluate(async () => {
    const h = window.huddle;
    if (!h?.me?.id) return { joined: false };
    const remote = {};
    for (const v of document.querySelectorAll('video[data-role="remote"]')) {
      if (!v.__frames) {
        v.__frames = { n: 0 };
        const count = () => { v.__frames.n += 1; v.requestVideoFrameCallback(count); };
        v.requestVideoFrameCallback(count);
      }
      remote[v.dataset.peer] = { frames: v.__frames.n, width: v.videoWidth };
    }
    let audio = 0;
    for (const link of h.links.values()) {
      const pc = link.down || link.pc;
      (await pc.getStats()).forEach((s) => {
        if (s.type === 'inbound-rtp' && s.kind === 'audio') audio += s.packetsReceived || 0;
      });
    }
    // The camera's simulcast layers towards the server, as Firefox sends them.
    const layers = h.links.get('sfu')?.videoTx?.sender.getParameters().encodings?.length ?? 0;
    return { joined: true, id: h.me.id, mode: h.me.mode, links: [...h.links.keys()], remote, audio, layers };
  }).catch((e) => ({ error: String(e) }));
  console.log(JSON.stringify(status));
  await new Promise((r) => setTimeout(r, 500));
}
