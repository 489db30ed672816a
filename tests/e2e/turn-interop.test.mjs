// Huddle's TURN server against coturn's own client tools (turnutils_uclient, turnutils_peer,
// turnutils_stunclient), over UDP, TCP, TLS and TLS on the HTTPS port; ChannelData and Send
// indications; long-term and TURN REST credentials. All inside a network namespace.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createHmac } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { Lab, HUDDLE } from './harness.mjs';

const lab = new Lab('turn');
const SECRET = 'north-wind';
/** `huddle turn -c turnserver.conf`, for its log. */
let turn;

before(async () => {
  lab.setup();
  // IPv6 on loopback only (the lab turns it off for Chromium's sake), for the IPv6 relay.
  lab.exec('sysctl', ['-qw', 'net.ipv6.conf.lo.disable_ipv6=0']);
  const cert = join(lab.dir, 'cert.pem');
  const key = join(lab.dir, 'key.pem');
  execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes',
    '-keyout', key, '-out', cert, '-days', '2', '-subj', '/CN=localhost'], { stdio: 'ignore' });
  // A coturn configuration file, as a coturn user would point Huddle at it.
  const conf = join(lab.dir, 'turnserver.conf');
  writeFileSync(conf, [
    'listening-ip=127.0.0.1', 'listening-port=3478', 'tls-listening-port=5349',
    'relay-ip=127.0.0.1', 'relay-ip=::1',
    'min-port=50000', 'max-port=50999', 'realm=test', 'lt-cred-mech', 'user=user1:pass1',
    'use-auth-secret', `static-auth-secret=${SECRET}`, 'fingerprint', 'allow-loopback-peers',
    `cert=${cert}`, `pkey=${key}`, 'prometheus', 'stale-nonce', 'max-allocate-lifetime=3600', 'no-cli', 'verbose', 'log-file=/dev/null', '',
  ].join('\n'));
  turn = lab.spawn(HUDDLE, ['turn', '-c', conf]);
  await lab.waitFor(turn, 'tls  127.0.0.1:5349');
  assert.match(turn.log, /keys ignored: log-file\n/, 'names every key it did not act on');
  const peer = lab.spawn('turnutils_peer', ['-L', '127.0.0.1', '-L', '::1', '-p', '3480']);
  await new Promise((r) => setTimeout(r, 300));
  assert.equal(peer.exitCode, null, peer.log);
});

after(() => lab.teardown());

/** Runs turnutils_uclient and reads its summary: it exits 0 even at 100 % loss. */
async function uclient(flags, { port = 3478, user = ['-u', 'user1', '-w', 'pass1'], peer = '127.0.0.1', clients = 4 } = {}) {
  const { out } = await lab.run('turnutils_uclient', [...flags, ...user, '-e', peer, '-r', '3480',
    '-n', '40', '-m', String(clients), '-l', '200', '-p', String(port), '127.0.0.1'], { timeout: 90000 });
  const totals = out.match(/tot_send_msgs=(\d+), tot_recv_msgs=(\d+)\s*$/m);
  const lost = out.match(/Total lost packets (\d+)/);
  return { out, sent: totals ? +totals[1] : 0, received: totals ? +totals[2] : 0, lost: lost ? +lost[1] : null };
}

function assertAllBack(r) {
  assert.ok(r.sent > 0, r.out.slice(-2000));
  assert.equal(r.received, r.sent, r.out.slice(-2000));
  assert.equal(r.lost, 0, r.out.slice(-2000));
}

test('stunclient gets its reflexive address', async () => {
  const { out } = await lab.run('timeout', ['10', 'turnutils_stunclient', '-p', '3478', '127.0.0.1']);
  assert.match(out, /UDP reflexive addr: 127\.0\.0\.1:\d+/);
});

for (const [name, flags, port] of [
  ['UDP ChannelData', [], 3478],
  ['UDP Send/Data indications', ['-s'], 3478],
  ['TCP ChannelData', ['-t'], 3478],
  ['TCP Send/Data indications', ['-t', '-s'], 3478],
  ['TLS ChannelData', ['-t', '-S'], 5349],
  ['TLS Send/Data indications', ['-t', '-S', '-s'], 5349],
]) {
  test(`every message comes back: ${name}`, async () => {
    assertAllBack(await uclient(flags, { port }));
  });
}

test('many allocations at once: 100 clients, every message comes back', async () => {
  // 100 allocations echoing at the same time: the relay task reads many relay sockets per
  // round, at times more than one batch's worth.
  assertAllBack(await uclient([], { clients: 100 }));
});

test('a freed relay port is handed out again at once', async () => {
  // A server with a single relay port: a second allocation must wait for the first to be freed,
  // and gets the port the moment the first client's Refresh(0) is answered.
  const one = lab.spawn(HUDDLE, ['turn', '--listen', '127.0.0.1:3490', '--no-tls', '--realm', 'test',
    '--user', 'user1:pass1', '--relay-ip', '127.0.0.1', '--relay-ports', '52000-52000']);
  try {
    await lab.waitFor(one, 'udp  127.0.0.1:3490');
    const { out } = await lab.run(process.execPath, [join(import.meta.dirname, 'turn-reuse.mjs'), '3490', 'user1',
      'pass1', 'test']);
    const r = JSON.parse(out.trim().split('\n').pop());
    assert.deepEqual(r.first, { code: null, relayPort: 52000 }, out);
    assert.deepEqual(r.whileTaken, { code: 508 }, out);
    assert.deepEqual(r.freed, { type: 0x0104, code: null }, out);
    assert.deepEqual(r.afterFree, { code: null, relayPort: 52000 }, out);
  } finally {
    one.kill('SIGTERM');
  }
});

test('an IPv6 relay beside the IPv4 one: a client over IPv4 relays to an IPv6 peer', async () => {
  // The peer is IPv6: only an IPv6 relay can reach it (the core answers an IPv4 allocation's
  // permission for it with 443, a unit test shows), so every message back means the IPv6 relay.
  assertAllBack(await uclient(['-x'], { peer: '::1' }));
});

test('TURN REST credentials work, wrong ones do not', async () => {
  assertAllBack(await uclient([], { user: ['-W', SECRET, '-u', 'alice'] }));
  const now = Math.floor(Date.now() / 1000);
  const sign = (u) => createHmac('sha1', SECRET).update(u).digest('base64');
  const fresh = `${now + 600}:bob`;
  assertAllBack(await uclient([], { user: ['-u', fresh, '-w', sign(fresh)] }));
  const expired = `${now - 5}:bob`;
  const stale = await uclient([], { user: ['-u', expired, '-w', sign(expired)] });
  assert.equal(stale.received, 0);
  assert.match(stale.out, /Cannot complete Allocation/);
});

test('a wrong password gets no allocation', async () => {
  const r = await uclient([], { user: ['-u', 'user1', '-w', 'wrong'] });
  assert.equal(r.received, 0);
  assert.match(r.out, /Cannot complete Allocation/);
});

test("coturn's prometheus key: metrics at :9641 count what the tests above relayed", async () => {
  const { out } = await lab.run('curl', ['-s', 'http://127.0.0.1:9641/metrics']);
  const value = (name) => Number(out.match(new RegExp(`^${name} (\\d+)$`, 'm'))?.[1]);
  assert.ok(value('huddle_turn_allocations_created_total') > 100, out);
  assert.ok(value('huddle_turn_relayed_to_peer_packets_total') > 1000, out);
  assert.ok(value('huddle_turn_relayed_to_client_packets_total') > 1000, out);
  assert.ok(value('huddle_turn_allocations') >= 0, out);
  const health = await lab.run('curl', ['-s', 'http://127.0.0.1:9641/healthz']);
  assert.equal(health.out, 'ok\n');
});

test("coturn's verbose key: a log line as each allocation begins and ends, and why it ended", () => {
  assert.match(turn.log, /allocation created user=user1 client=127\.0\.0\.1:\d+ transport=Udp relay=127\.0\.0\.1:\d+ lifetime_s=\d+/);
  assert.match(turn.log, /allocation created user=user1 client=127\.0\.0\.1:\d+ transport=Tcp relay=/);
  // uclient refreshes its allocations to 0 as it leaves (why else one ends: the core's tests).
  assert.match(turn.log, /allocation ended user=user1 client=127\.0\.0\.1:\d+ transport=Udp relay=127\.0\.0\.1:\d+ reason="released"/);
  assert.doesNotMatch(turn.log, /\x1b\[/, 'no terminal colours in a log that is not a terminal');
});

test('huddle serve carries TURN over TLS on its HTTPS port', async () => {
  const serve = lab.spawn(HUDDLE, ['serve', '--listen', '127.0.0.1:8443', '--data-dir', join(lab.dir, 'serve'),
    '--turn-listen', '127.0.0.1:13478', '--relay-ports', '51000-51999', '--allow-loopback-peers',
    '--auth-secret', SECRET, '--realm', 'test']);
  await lab.waitFor(serve, 'Huddle is serving');
  assertAllBack(await uclient(['-t', '-S'], { port: 8443, user: ['-W', SECRET, '-u', 'carol'] }));
  assertAllBack(await uclient([], { port: 13478, user: ['-W', SECRET, '-u', 'carol'] }));
  // The same port still serves the web client.
  const { out } = await lab.run('curl', ['-sk', 'https://127.0.0.1:8443/healthz']);
  assert.equal(out, 'ok\n');
  serve.kill('SIGTERM');
});
