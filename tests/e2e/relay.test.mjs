// Calls whose only path is Huddle's own TURN server (iceTransportPolicy 'relay'), reaching it
// over UDP, TCP, and TLS on the HTTPS port: video flows and the selected pair is a relay one.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { Lab, videoFlows } from './harness.mjs';

const lab = new Lab('relay');
let browser;

before(async () => {
  lab.setup();
  await lab.startServer(['--turn-listen', '127.0.0.1:3478']);
  browser = await lab.browser({ args: ['--ignore-certificate-errors'] });
});

after(() => lab.teardown());

/** The local candidate of the selected pair of the page's first link. */
async function selectedLocalCandidate(page) {
  return page.evaluate(async () => {
    const [link] = window.huddle.links.values();
    const stats = await link.pc.getStats();
    let pair;
    stats.forEach((s) => {
      if (s.type === 'transport' && s.selectedCandidatePairId) pair = stats.get(s.selectedCandidatePairId);
    });
    if (!pair) return null;
    const local = stats.get(pair.localCandidateId);
    return { type: local.candidateType, relayProtocol: local.relayProtocol, state: pair.state };
  });
}

for (const transport of ['udp', 'tcp', 'tls']) {
  test(`relay-only call through TURN over ${transport}`, async () => {
    const room = `relay-${transport}`;
    const q = `ice=relay&turn=${transport}&autojoin=1`;
    const a = await lab.page(browser, `/r/${room}?name=A&${q}`);
    const b = await lab.page(browser, `/r/${room}?name=B&${q}`);
    await videoFlows(a, 'video[data-role="remote"]', { timeout: 30000 });
    await videoFlows(b, 'video[data-role="remote"]', { timeout: 30000 });
    for (const page of [a, b]) {
      const local = await selectedLocalCandidate(page);
      assert.equal(local?.type, 'relay', JSON.stringify(local));
      assert.equal(local.relayProtocol, transport, JSON.stringify(local));
    }
    await a.context().close();
    await b.context().close();
  });
}

test('the media peer is reached through TURN over TLS when nothing else is allowed', async () => {
  // The media peer listens on 127.0.0.1:8443/udp and the ports after it (a media worker each),
  // a loopback address TURN refuses as a peer — except for these service ports of its own server.
  const page = await lab.page(browser, '/echo?transform=grayscale&ice=relay&turn=tls&autostart');
  await videoFlows(page, '#remote', { timeout: 30000 });
  const pair = await page.evaluate(async () => {
    const stats = await window.echo.pc.getStats();
    let pair;
    stats.forEach((s) => {
      if (s.type === 'transport' && s.selectedCandidatePairId) pair = stats.get(s.selectedCandidatePairId);
    });
    const local = stats.get(pair.localCandidateId);
    const remote = stats.get(pair.remoteCandidateId);
    return { type: local.candidateType, relayProtocol: local.relayProtocol, remote: `${remote.address}:${remote.port}` };
  });
  assert.equal(pair.type, 'relay', JSON.stringify(pair));
  assert.equal(pair.relayProtocol, 'tls', JSON.stringify(pair));
  assert.match(pair.remote, /^127\.0\.0\.1:84(4[3-9]|[5-9]\d)$/, JSON.stringify(pair));
  await page.context().close();
});
