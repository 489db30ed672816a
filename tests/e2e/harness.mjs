// A lab for browser tests: a network namespace of our own, Huddle serving inside it, and Debian's
// Chromium (fake camera and mic) started inside it too. Nothing leaves the namespace: it has
// loopback plus a veth pair whose two ends are both inside (Chromium gathers no ICE candidates on
// loopback alone), and no route out. Playwright talks to Chromium over a pipe, across the
// namespace boundary.

import { execFile, execFileSync, spawn } from 'node:child_process';
import { mkdtempSync, writeFileSync, chmodSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';
import { chromium } from 'playwright-core';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
export const HUDDLE = process.env.HUDDLE_BIN || join(ROOT, 'target', 'debug', 'huddle');
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';

function sh(cmd, args) {
  return execFileSync(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] }).toString();
}

export const CHROMIUM_ARGS = [
  '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
  '--use-fake-device-for-media-stream', '--autoplay-policy=no-user-gesture-required',
  '--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE localhost , EXCLUDE 127.0.0.1 , EXCLUDE 10.99.0.1 , EXCLUDE 10.99.0.3 , EXCLUDE 10.99.0.4',
];

export class Lab {
  constructor(name) {
    this.ns = `huddle-${name}-${process.pid}`;
    this.dir = mkdtempSync(join(tmpdir(), 'huddle-e2e-'));
    this.port = 8443;
    /** The server's address in the namespace (Firefox needs one that is not loopback). */
    this.host = '127.0.0.1';
    this.server = null;
    this.serverLog = '';
    this.browsers = [];
    this.children = [];
    /** Namespaces of shaped browsers (`shapedBrowser`), deleted at teardown. */
    this.edges = [];
  }

  /** Creates the namespace; fails loudly when it cannot (these tests never skip). */
  setup() {
    sh('ip', ['netns', 'add', this.ns]);
    // No IPv6: its link-local addresses appear a moment after link-up, and Chromium takes that
    // for a network change and aborts navigations under way (ERR_NETWORK_CHANGED).
    sh('ip', ['netns', 'exec', this.ns, 'sysctl', '-qw', 'net.ipv6.conf.all.disable_ipv6=1']);
    sh('ip', ['netns', 'exec', this.ns, 'sysctl', '-qw', 'net.ipv6.conf.default.disable_ipv6=1']);
    sh('ip', ['-n', this.ns, 'link', 'set', 'lo', 'up']);
    sh('ip', ['-n', this.ns, 'link', 'add', 'v0', 'type', 'veth', 'peer', 'name', 'v1']);
    sh('ip', ['-n', this.ns, 'addr', 'add', '10.99.0.1/24', 'dev', 'v0']);
    sh('ip', ['-n', this.ns, 'addr', 'add', '10.99.0.2/24', 'dev', 'v1']);
    sh('ip', ['-n', this.ns, 'link', 'set', 'v0', 'up']);
    sh('ip', ['-n', this.ns, 'link', 'set', 'v1', 'up']);
    this.wrapper = join(this.dir, 'chromium-in-ns');
    writeFileSync(this.wrapper, `#!/bin/sh\nexec ip netns exec ${this.ns} ${CHROMIUM} "$@"\n`);
    chmodSync(this.wrapper, 0o755);
    return this;
  }

  /** Runs a command inside the namespace. */
  exec(cmd, args) {
    return sh('ip', ['netns', 'exec', this.ns, cmd, ...args]);
  }

  /** Runs a command inside the namespace to its end (or `timeout` ms); resolves to its output
   *  and exit code, never rejects. */
  run(cmd, args, { timeout = 60000 } = {}) {
    return new Promise((resolve) => {
      execFile('ip', ['netns', 'exec', this.ns, cmd, ...args], { timeout, maxBuffer: 16 << 20 },
        (err, stdout, stderr) => resolve({ code: err ? (err.code ?? -1) : 0, out: `${stdout}${stderr}` }));
    });
  }

  /** Starts a long-running process inside the namespace; it is killed at teardown. */
  spawn(cmd, args) {
    const child = spawn('ip', ['netns', 'exec', this.ns, cmd, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    child.log = '';
    child.stdout.on('data', (d) => { child.log += d; });
    child.stderr.on('data', (d) => { child.log += d; });
    this.children.push(child);
    return child;
  }

  /** Waits until `child` has printed `text`. */
  async waitFor(child, text, timeout = 15000) {
    const deadline = Date.now() + timeout;
    while (Date.now() < deadline) {
      if (child.log.includes(text)) return;
      if (child.exitCode !== null) throw new Error(`exited early:\n${child.log}`);
      await sleep(50);
    }
    throw new Error(`never printed ${JSON.stringify(text)}:\n${child.log}`);
  }

  async startServer(extra = []) {
    const args = ['netns', 'exec', this.ns, HUDDLE, 'serve', '--listen', `${this.host}:${this.port}`,
      '--data-dir', join(this.dir, 'data'), ...extra];
    const server = spawn('ip', args, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, RUST_LOG: 'info' } });
    this.server = server;
    const collect = (chunk) => { this.serverLog += chunk.toString(); };
    server.stdout.on('data', collect);
    server.stderr.on('data', collect);
    const deadline = Date.now() + 15000;
    while (Date.now() < deadline) {
      if (server.exitCode !== null) throw new Error(`huddle exited early:\n${this.serverLog}`);
      if (this.serverLog.includes('Huddle is serving')) return server;
      await sleep(50);
    }
    throw new Error(`huddle did not start:\n${this.serverLog}`);
  }

  async stopServer(signal = 'SIGTERM') {
    const server = this.server;
    if (!server || server.exitCode !== null) return;
    this.server = null;
    const exited = new Promise((resolve) => server.once('exit', resolve));
    // `ip netns exec` execs the server, so the signal reaches huddle itself.
    server.kill(signal);
    await exited;
  }

  url(path) {
    return `https://${this.host}:${this.port}${path}`;
  }

  async browser({ args = [], fakeUi = true } = {}) {
    const browser = await chromium.launch({
      executablePath: this.wrapper,
      args: [...CHROMIUM_ARGS, ...(fakeUi ? ['--use-fake-ui-for-media-stream'] : []), ...args],
    });
    this.browsers.push(browser);
    return browser;
  }

  /** Chromium in a namespace of its own, joined to the lab's by a veth pair whose lab side
   *  shapes what reaches it to `rate` (its downlink; what it sends is not shaped). This kernel
   *  has no `netem`, so the shaper is `tbf`, with a 100 ms queue as a home router's. The lab's
   *  server at `host` 10.99.0.1 is reachable from it; loopback is not. */
  async shapedBrowser(rate) {
    const n = this.edges.length + 1;
    const ns = `${this.ns}-e${n}`;
    sh('ip', ['netns', 'add', ns]);
    this.edges.push(ns);
    sh('ip', ['netns', 'exec', ns, 'sysctl', '-qw', 'net.ipv6.conf.all.disable_ipv6=1']);
    sh('ip', ['netns', 'exec', ns, 'sysctl', '-qw', 'net.ipv6.conf.default.disable_ipv6=1']);
    sh('ip', ['-n', ns, 'link', 'set', 'lo', 'up']);
    const side = `e${n}`;
    sh('ip', ['-n', this.ns, 'link', 'add', side, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', ns]);
    sh('ip', ['-n', this.ns, 'addr', 'add', `10.98.${n}.1/24`, 'dev', side]);
    sh('ip', ['-n', this.ns, 'link', 'set', side, 'up']);
    sh('ip', ['-n', ns, 'addr', 'add', `10.98.${n}.2/24`, 'dev', 'eth0']);
    sh('ip', ['-n', ns, 'link', 'set', 'eth0', 'up']);
    sh('ip', ['-n', ns, 'route', 'add', 'default', 'via', `10.98.${n}.1`]);
    this.exec('tc', ['qdisc', 'add', 'dev', side, 'root', 'tbf', 'rate', rate, 'burst', '4kb', 'latency', '100ms']);
    const wrapper = join(this.dir, `chromium-in-${side}`);
    writeFileSync(wrapper, `#!/bin/sh\nexec ip netns exec ${ns} ${CHROMIUM} "$@"\n`);
    chmodSync(wrapper, 0o755);
    const browser = await chromium.launch({
      executablePath: wrapper,
      args: [...CHROMIUM_ARGS, '--use-fake-ui-for-media-stream'],
    });
    this.browsers.push(browser);
    return browser;
  }

  /** A page in a fresh context of `browser`, with console errors collected. */
  async page(browser, path) {
    const context = await browser.newContext({ ignoreHTTPSErrors: true, viewport: { width: 1100, height: 700 } });
    const page = await context.newPage();
    page.logs = [];
    page.on('console', (m) => page.logs.push(`${m.type()}: ${m.text()}`));
    page.on('pageerror', (e) => page.logs.push(`pageerror: ${e.message}`));
    if (path) await page.goto(this.url(path));
    return page;
  }

  async teardown() {
    for (const b of this.browsers) await b.close().catch(() => {});
    for (const c of this.children) if (c.exitCode === null) c.kill('SIGKILL');
    await this.stopServer('SIGKILL');
    for (const ns of [...this.edges, this.ns]) {
      try { sh('ip', ['netns', 'del', ns]); } catch { /* already gone */ }
    }
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/** Waits until `fn` (run in the page) returns truthy, or fails with what it last returned. */
export async function waitInPage(page, fn, arg, { timeout = 15000, what = 'condition' } = {}) {
  const deadline = Date.now() + timeout;
  let last;
  while (Date.now() < deadline) {
    last = await page.evaluate(fn, arg);
    if (last && last.ok !== false) return last;
    await sleep(100);
  }
  throw new Error(`timed out waiting for ${what}: ${JSON.stringify(last)}\n${page.logs.slice(-20).join('\n')}`);
}

/** Resolves when the video matching `selector` shows frames that keep coming. */
export async function videoFlows(page, selector, { timeout = 20000, frames = 5 } = {}) {
  return waitInPage(page, ({ selector, frames }) => {
    const v = document.querySelector(selector);
    if (!v) return { ok: false, why: 'no element' };
    if (!v.__frames) {
      v.__frames = 0;
      const count = () => { v.__frames += 1; v.requestVideoFrameCallback(count); };
      v.requestVideoFrameCallback(count);
    }
    return { ok: v.videoWidth > 0 && v.__frames >= frames, w: v.videoWidth, h: v.videoHeight, frames: v.__frames };
  }, { selector, frames }, { timeout, what: `video ${selector}` });
}

/** Sum of a getStats() field over every inbound-rtp of `kind`, across all of the page's links. */
export async function inbound(page, kind, field) {
  return page.evaluate(async ({ kind, field }) => {
    let total = 0;
    for (const link of window.huddle.links.values()) {
      // A mesh link has one connection; an SFU room's link two (it receives on `down`).
      for (const pc of link.down ? [link.up, link.down] : [link.pc]) {
        const stats = await pc.getStats();
        stats.forEach((s) => {
          if (s.type === 'inbound-rtp' && s.kind === kind) total += s[field] || 0;
        });
      }
    }
    return total;
  }, { kind, field });
}

export async function remoteIds(page, role = 'remote') {
  return page.evaluate((role) => [...document.querySelectorAll(`video[data-role="${role}"]`)].map((v) => v.dataset.peer), role);
}

/** Publishes the page's fake camera and mic to `room` over WHIP, as OBS would; resolves to the
 *  resource's Location (the page keeps its connection as `window.pc`). */
export async function publishWhip(page, room, { width = 640, height = 480 } = {}) {
  return page.evaluate(async ({ room, width, height }) => {
    const stream = await navigator.mediaDevices.getUserMedia({ video: { width, height }, audio: true });
    const pc = new RTCPeerConnection();
    for (const t of stream.getTracks()) pc.addTransceiver(t, { direction: 'sendonly', streams: [stream] });
    await pc.setLocalDescription(await pc.createOffer());
    const r = await fetch(`/whip/${room}`, { method: 'POST', headers: { 'Content-Type': 'application/sdp' }, body: pc.localDescription.sdp });
    if (r.status !== 201) throw new Error(`WHIP ${r.status}: ${await r.text()}`);
    await pc.setRemoteDescription({ type: 'answer', sdp: await r.text() });
    window.pc = pc;
    return r.headers.get('Location');
  }, { room, width, height });
}

export { sleep };
