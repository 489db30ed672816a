// Benchmark: the server-side media peer against aiortc's server pattern (bench/aiortc_server.py),
// both driven by the same headless Chromium fake camera (640×480, 30 fps, video only), in a
// network namespace. The server runs on CPU 0, Chromium on CPU 1. For each transform and run,
// servers alternate; each run starts the server afresh and measures:
//   - first frame: from POST /offer to the first returned frame presented (gathering done before);
//   - CPU: the server's CPU time over a steady 10 s window, per returned frame and per second.
// Usage: HUDDLE_BIN=target/release/huddle PYTHON=target/bench-venv/bin/python \
//        node tests/e2e/media-bench.mjs [RUNS] [SECONDS]

import { spawn } from 'node:child_process';
import { readFileSync, writeFileSync, chmodSync } from 'node:fs';
import { join } from 'node:path';
import { chromium } from 'playwright-core';
import { Lab, HUDDLE, CHROMIUM_ARGS, sleep } from './harness.mjs';

const runs = Number(process.argv[2] || 5);
const seconds = Number(process.argv[3] || 10);
const PYTHON = process.env.PYTHON || 'target/bench-venv/bin/python';
const PORT = 18080;
const lab = new Lab('mediabench').setup();

const TICK = 100; // USER_HZ
function cpuSeconds(pid) {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  // utime and stime are fields 14 and 15 of stat; after the command they are 11 and 12 (0-based).
  return (Number(fields[11]) + Number(fields[12])) / TICK;
}

async function startServer(kind) {
  const args = kind === 'huddle'
    ? [HUDDLE, 'serve', '--no-tls', '--no-turn', '--listen', `127.0.0.1:${PORT}`]
    : [PYTHON, 'bench/aiortc_server.py', String(PORT)];
  const child = spawn('ip', ['netns', 'exec', lab.ns, 'taskset', '-c', '0', ...args], {
    stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, RUST_LOG: 'warn' },
  });
  child.log = '';
  child.stdout.on('data', (d) => { child.log += d; });
  child.stderr.on('data', (d) => { child.log += d; });
  const deadline = Date.now() + 20000;
  while (Date.now() < deadline) {
    const r = await lab.run('curl', ['-s', '-o', '/dev/null', '-w', '%{http_code}', `http://127.0.0.1:${PORT}/`], { timeout: 2000 });
    if (r.out === '200') return child;
    if (child.exitCode !== null) throw new Error(`${kind} exited:\n${child.log}`);
    await sleep(100);
  }
  throw new Error(`${kind} did not start:\n${child.log}`);
}

async function stopServer(child) {
  const exited = new Promise((r) => child.once('exit', r));
  child.kill('SIGKILL');
  await exited;
}

// In the page: camera → POST /offer → returned video; resolves with the time to first frame.
async function call(transform) {
  const stream = await navigator.mediaDevices.getUserMedia({ video: { width: 640, height: 480, frameRate: 30 }, audio: false });
  const pc = new RTCPeerConnection({ iceServers: [] });
  window.pc = pc;
  const { sender } = pc.addTransceiver(stream.getVideoTracks()[0], { direction: 'sendrecv', streams: [stream] });
  // Both servers get the same 640×480 picture: no downscaling on the browser's side.
  const params = sender.getParameters();
  params.degradationPreference = 'maintain-resolution';
  await sender.setParameters(params);
  const video = document.createElement('video');
  video.muted = true; video.autoplay = true; video.playsInline = true;
  document.body.append(video);
  const firstFrame = new Promise((resolve) => {
    pc.ontrack = (e) => {
      video.srcObject = new MediaStream([e.track]);
      video.requestVideoFrameCallback((now) => resolve(now));
    };
  });
  await pc.setLocalDescription(await pc.createOffer());
  await new Promise((resolve) => {
    if (pc.iceGatheringState === 'complete') resolve();
    pc.onicegatheringstatechange = () => pc.iceGatheringState === 'complete' && resolve();
  });
  const t0 = performance.now();
  const r = await fetch('/offer', {
    method: 'POST', headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ sdp: pc.localDescription.sdp, type: 'offer', video_transform: transform }),
  });
  if (!r.ok) throw new Error(`offer: ${r.status} ${await r.text()}`);
  await pc.setRemoteDescription(await r.json());
  return (await firstFrame) - t0;
}

async function inboundVideo() {
  const stats = await window.pc.getStats();
  let out = {};
  stats.forEach((s) => {
    if (s.type === 'inbound-rtp' && s.kind === 'video') {
      const codec = stats.get(s.codecId);
      Object.assign(out, { frames: s.framesDecoded, bytesIn: s.bytesReceived, width: s.frameWidth, height: s.frameHeight, codec: codec && codec.mimeType });
    }
    if (s.type === 'outbound-rtp' && s.kind === 'video') Object.assign(out, { sent: s.framesEncoded, bytesOut: s.bytesSent });
  });
  return out;
}

async function measure(browser, kind, transform) {
  const server = await startServer(kind);
  try {
    const context = await browser.newContext();
    const page = await context.newPage();
    await page.goto(`http://127.0.0.1:${PORT}/`);
    const firstFrameMs = await page.evaluate(call, transform);
    await sleep(3000);
    const a = await page.evaluate(inboundVideo);
    const cpu0 = cpuSeconds(server.pid);
    // BENCH_PERF=DIR records a profile of the server over the window (for looking, not reporting).
    const perf = process.env.BENCH_PERF && spawn('perf', ['record', '-F', '2000', '-g', '-o', `${process.env.BENCH_PERF}/${kind}-${transform}.data`, '-p', String(server.pid), '--', 'sleep', String(seconds)], { stdio: 'ignore' });
    await sleep(seconds * 1000);
    if (perf) await new Promise((r) => perf.once('exit', r));
    const b = await page.evaluate(inboundVideo);
    const cpu = cpuSeconds(server.pid) - cpu0;
    await context.close();
    const frames = b.frames - a.frames;
    return {
      firstFrameMs,
      cpuMsPerFrame: (cpu * 1000) / Math.max(frames, 1),
      cpuPerSecond: cpu / seconds,
      fps: frames / seconds,
      sentFps: (b.sent - a.sent) / seconds,
      kbpsOut: ((b.bytesOut - a.bytesOut) * 8) / seconds / 1000,
      kbpsBack: ((b.bytesIn - a.bytesIn) * 8) / seconds / 1000,
      size: `${b.width}x${b.height}`,
      codec: b.codec,
    };
  } finally {
    await stopServer(server);
  }
}

const median = (xs) => { const s = [...xs].sort((a, b) => a - b); const m = s.length >> 1; return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2; };

try {
  const wrapper = join(lab.dir, 'chromium-cpu1');
  writeFileSync(wrapper, `#!/bin/sh\nexec ip netns exec ${lab.ns} taskset -c 1 ${process.env.CHROMIUM || '/usr/bin/chromium'} "$@"\n`);
  chmodSync(wrapper, 0o755);
  const args = CHROMIUM_ARGS.map((a) => (a === '--use-fake-device-for-media-stream' ? '--use-fake-device-for-media-stream=fps=30' : a));
  const browser = await chromium.launch({ executablePath: wrapper, args: [...args, '--use-fake-ui-for-media-stream'] });
  lab.browsers.push(browser);
  const results = {};
  for (const transform of (process.env.BENCH_TRANSFORMS || 'edges,none').split(',')) {
    for (let run = 0; run < runs; run += 1) {
      const order = run % 2 === 0 ? ['huddle', 'aiortc'] : ['aiortc', 'huddle'];
      for (const kind of order) {
        const r = await measure(browser, kind, transform);
        (results[`${kind}/${transform}`] ||= []).push(r);
        console.error(`run ${run} ${kind.padEnd(6)} ${transform.padEnd(5)}: first frame ${r.firstFrameMs.toFixed(0)} ms, ` +
          `${r.cpuMsPerFrame.toFixed(2)} CPU-ms/frame, ${(r.cpuPerSecond * 100).toFixed(1)} % CPU, ` +
          `${r.fps.toFixed(1)} fps back of ${r.sentFps.toFixed(1)} sent, ${r.kbpsOut.toFixed(0)} kbit/s out, ${r.kbpsBack.toFixed(0)} back, ${r.size} ${r.codec}`);
      }
    }
  }
  const med = (key, field) => median(results[key].map((r) => r[field]));
  console.log(`| ${runs} runs, medians | Huddle | aiortc | ratio |`);
  console.log('|---|---|---|---|');
  for (const transform of Object.keys(results).filter((k) => k.startsWith('huddle/')).map((k) => k.slice(7))) {
    const h = med(`huddle/${transform}`, 'cpuMsPerFrame');
    const p = med(`aiortc/${transform}`, 'cpuMsPerFrame');
    console.log(`| \`${transform}\`: server CPU-ms per returned frame | ${h.toFixed(2)} | ${p.toFixed(2)} | ${(p / h).toFixed(1)}× |`);
    const hs = med(`huddle/${transform}`, 'cpuPerSecond');
    const ps = med(`aiortc/${transform}`, 'cpuPerSecond');
    console.log(`| \`${transform}\`: server CPU-seconds per stream-second | ${hs.toFixed(3)} | ${ps.toFixed(3)} | ${(ps / hs).toFixed(1)}× |`);
    const hf = med(`huddle/${transform}`, 'fps');
    const pf = med(`aiortc/${transform}`, 'fps');
    console.log(`| \`${transform}\`: frames/s returned | ${hf.toFixed(1)} | ${pf.toFixed(1)} | |`);
    const h1 = med(`huddle/${transform}`, 'firstFrameMs');
    const p1 = med(`aiortc/${transform}`, 'firstFrameMs');
    console.log(`| \`${transform}\`: POST /offer → first returned frame, ms | ${h1.toFixed(0)} | ${p1.toFixed(0)} | ${(p1 / h1).toFixed(1)}× |`);
  }
} finally {
  await lab.teardown();
}
