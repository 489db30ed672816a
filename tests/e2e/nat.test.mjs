// A NAT lab: two browsers behind separate symmetric NATs, UDP between the NATs dropped, Huddle on
// a "public" network. They meet only through Huddle's TURN server; with TURN off they do not meet
// at all (the control that shows the lab blocks every direct path).
//
//   h1 (10.1.0.2) ── nat1 (10.1.0.1 | 198.18.0.11) ─┐
//                                                    ├─ pub: br0 198.18.0.1, huddle serve
//   h2 (10.2.0.2) ── nat2 (10.2.0.1 | 198.18.0.12) ─┘

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { mkdtempSync, writeFileSync, chmodSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';
import { CHROMIUM_ARGS, HUDDLE, videoFlows, sleep } from './harness.mjs';

const id = process.pid % 100000;
const ns = Object.fromEntries(['pub', 'nat1', 'nat2', 'h1', 'h2'].map((n) => [n, `hd${n}-${id}`]));
const dir = mkdtempSync(join(tmpdir(), 'huddle-nat-'));
const SERVER = '198.18.0.1';
let server = null;
let serverLog = '';
const browsers = [];

const ip = (...args) => execFileSync('ip', args, { stdio: ['ignore', 'pipe', 'pipe'] });
const inNs = (n, cmd, ...args) => execFileSync('ip', ['netns', 'exec', ns[n], cmd, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });

function buildLab() {
  for (const n of Object.values(ns)) {
    ip('netns', 'add', n);
    ip('netns', 'exec', n, 'sysctl', '-qw', 'net.ipv6.conf.all.disable_ipv6=1');
    ip('netns', 'exec', n, 'sysctl', '-qw', 'net.ipv6.conf.default.disable_ipv6=1');
    ip('-n', n, 'link', 'set', 'lo', 'up');
  }
  ip('-n', ns.pub, 'link', 'add', 'br0', 'type', 'bridge');
  ip('-n', ns.pub, 'addr', 'add', `${SERVER}/24`, 'dev', 'br0');
  ip('-n', ns.pub, 'link', 'set', 'br0', 'up');
  for (const i of [1, 2]) {
    const [nat, host] = [ns[`nat${i}`], ns[`h${i}`]];
    ip('-n', ns.pub, 'link', 'add', `pw${i}`, 'type', 'veth', 'peer', 'name', 'wan', 'netns', nat);
    ip('-n', ns.pub, 'link', 'set', `pw${i}`, 'master', 'br0', 'up');
    ip('-n', nat, 'addr', 'add', `198.18.0.1${i}/24`, 'dev', 'wan');
    ip('-n', nat, 'link', 'set', 'wan', 'up');
    ip('-n', nat, 'link', 'add', 'lan', 'type', 'veth', 'peer', 'name', 'eth0', 'netns', host);
    ip('-n', nat, 'addr', 'add', `10.${i}.0.1/24`, 'dev', 'lan');
    ip('-n', nat, 'link', 'set', 'lan', 'up');
    ip('-n', host, 'addr', 'add', `10.${i}.0.2/24`, 'dev', 'eth0');
    ip('-n', host, 'link', 'set', 'eth0', 'up');
    ip('-n', host, 'route', 'add', 'default', 'via', `10.${i}.0.1`);
    inNs(`nat${i}`, 'sysctl', '-qw', 'net.ipv4.ip_forward=1');
    // A symmetric NAT: a new external port for every destination.
    inNs(`nat${i}`, 'iptables', '-t', 'nat', '-A', 'POSTROUTING', '-o', 'wan', '-j', 'MASQUERADE', '--random-fully');
    // No UDP between the two sites, whatever the ports.
    inNs(`nat${i}`, 'iptables', '-A', 'FORWARD', '-p', 'udp', '-d', `198.18.0.1${3 - i}`, '-j', 'DROP');
    const wrapper = join(dir, `chromium-h${i}`);
    writeFileSync(wrapper, `#!/bin/sh\nexec ip netns exec ${host} /usr/bin/chromium "$@"\n`);
    chmodSync(wrapper, 0o755);
  }
}

async function startServer(extra = []) {
  serverLog = '';
  server = spawn('ip', ['netns', 'exec', ns.pub, HUDDLE, 'serve', '--listen', `${SERVER}:8443`,
    '--turn-listen', `${SERVER}:3478`, '--data-dir', join(dir, 'data'), ...extra], { stdio: ['ignore', 'pipe', 'pipe'] });
  server.stdout.on('data', (d) => { serverLog += d; });
  server.stderr.on('data', (d) => { serverLog += d; });
  for (let i = 0; i < 300 && !serverLog.includes('Huddle is serving'); i += 1) await sleep(50);
  assert.ok(serverLog.includes('Huddle is serving'), serverLog);
}

async function stopServer() {
  if (!server) return;
  const exited = new Promise((r) => server.once('exit', r));
  server.kill('SIGKILL');
  await exited;
  server = null;
}

async function pageIn(browser, room, name) {
  const context = await browser.newContext({ ignoreHTTPSErrors: true });
  const page = await context.newPage();
  page.logs = [];
  page.on('console', (m) => page.logs.push(`${m.type()}: ${m.text()}`));
  // Browser to browser: through the server, which is on the public side, there would be no NAT
  // to traverse.
  await page.goto(`https://${SERVER}:8443/r/${room}?name=${name}&autojoin=1&mode=mesh`);
  return page;
}

async function selectedPair(page) {
  return page.evaluate(async () => {
    const [link] = window.huddle.links.values();
    if (!link) return null;
    const stats = await link.pc.getStats();
    let pair;
    stats.forEach((s) => {
      if (s.type === 'transport' && s.selectedCandidatePairId) pair = stats.get(s.selectedCandidatePairId);
    });
    if (!pair) return null;
    return { local: stats.get(pair.localCandidateId)?.candidateType, remote: stats.get(pair.remoteCandidateId)?.candidateType };
  });
}

before(async () => {
  buildLab();
  for (const i of [1, 2]) {
    browsers.push(await chromium.launch({
      executablePath: join(dir, `chromium-h${i}`),
      args: [...CHROMIUM_ARGS.map((a) => a.startsWith('--host-resolver-rules')
        ? `--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE ${SERVER}` : a),
      '--use-fake-ui-for-media-stream', '--ignore-certificate-errors'],
    }));
  }
});

after(async () => {
  for (const b of browsers) await b.close().catch(() => {});
  await stopServer();
  for (const n of Object.values(ns)) {
    try { ip('netns', 'del', n); } catch { /* gone */ }
  }
  rmSync(dir, { recursive: true, force: true });
});

test('control: with TURN off, the two NATed browsers cannot connect', async () => {
  await startServer(['--no-turn']);
  const a = await pageIn(browsers[0], 'nat-control', 'A');
  const b = await pageIn(browsers[1], 'nat-control', 'B');
  await sleep(12000);
  const frames = await a.evaluate(() => {
    const v = document.querySelector('video[data-role="remote"]');
    return v ? v.videoWidth : -1;
  });
  assert.ok(frames <= 0, 'no video may flow without a relay');
  const state = await a.evaluate(() => [...window.huddle.links.values()][0]?.pc.iceConnectionState);
  assert.notEqual(state, 'connected');
  assert.notEqual(state, 'completed');
  await a.context().close();
  await b.context().close();
  await stopServer();
});

test('through Huddle’s TURN, the two NATed browsers see each other', async () => {
  await startServer();
  const a = await pageIn(browsers[0], 'nat-call', 'A');
  const b = await pageIn(browsers[1], 'nat-call', 'B');
  await videoFlows(a, 'video[data-role="remote"]', { timeout: 30000 });
  await videoFlows(b, 'video[data-role="remote"]', { timeout: 30000 });
  for (const page of [a, b]) {
    const pair = await selectedPair(page);
    assert.ok(pair && (pair.local === 'relay' || pair.remote === 'relay'), JSON.stringify(pair));
  }
  await a.context().close();
  await b.context().close();
});
