// Receive benchmark of the JS SDK: messages/s that one subscriber receives (and, with an E2E
// key, opens) through the SDK's handler API, in Node and in headless Chromium, against a real
// `sealbus serve` on loopback. 128-byte byte payloads, QoS 0.
//
//   node --experimental-websocket bench/receive.mjs [--seconds N] [--hosts node,chromium]
//
// (`cargo xtask bench js` builds a release server and the package, then runs this.)
// SEALBUS_BIN names the server binary (default target/debug/sealbus; use a release build).
// SEALBUS_BENCH_PROFILE=DIR writes a CPU profile of the page for each Chromium run there
// (open it in Chrome DevTools); for Node, run with `node --cpu-prof`.
//
// A worker thread publishes precomputed frames on its own connection (bench/publisher.mjs),
// keeping at most WINDOW messages unreceived, so the subscriber is never idle and the server's
// outbound queue never overflows. The figure is the subscriber's rate over the measured seconds
// after a warm-up. Also printed: "backlog", the average number of messages sent and not yet
// received (near the window: the subscriber always had work waiting, so it, or the host's
// WebSocket path to it, is the limit); "publisher waited", the share of the time the publisher
// slept on a full window (approximate); in Node, "subscriber thread busy", the event loop
// utilization of the subscriber's thread (near 100%: the subscriber's thread is the limit).
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Worker } from 'node:worker_threads';

import * as sdk from '../node.js';
import { startServer } from '../tests/node/server.mjs';
import { serveStatic } from '../tests/node/static.mjs';
import { rawSubscribe } from './raw.js';

const PAYLOAD = 128;
const WINDOW = 8192;
const DISTINCT_FRAMES = 1024;

function option(name, fallback) {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 && process.argv[i + 1] ? process.argv[i + 1] : fallback;
}
const seconds = Number(option('seconds', '5'));
const warmupSeconds = Number(option('warmup', '1'));
const hosts = option('hosts', 'node,chromium').split(',');
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** `count` distinct `publish` frames for `topic`: 128 random bytes each, sealed with `key` if given. */
function publishFrames(topic, key) {
  const frames = [];
  for (let i = 0; i < DISTINCT_FRAMES; i += 1) {
    const payload = crypto.getRandomValues(new Uint8Array(PAYLOAD));
    let data;
    if (key) {
      const plain = new Uint8Array(PAYLOAD + 1); // content-kind byte 0x00: bytes
      plain.set(payload, 1);
      data = { sealed: sdk.sealEnvelope(key, topic, plain) };
    } else {
      data = { bytes: Buffer.from(payload).toString('base64') };
    }
    frames.push(JSON.stringify({ type: 'publish', topic, data }));
  }
  return frames;
}

/** Starts the publisher worker; resolves once it is connected. */
function startPublisher(url, frames, shared) {
  const worker = new Worker(new URL('./publisher.mjs', import.meta.url), { workerData: { url, frames, window: WINDOW, shared } });
  const done = new Promise((resolve, reject) => {
    worker.on('message', (m) => {
      if (m.done) resolve(m.sent);
      if (m.unexpected) console.error('publisher got:', m.unexpected);
    });
    worker.on('error', reject);
  });
  const ready = new Promise((resolve, reject) => {
    worker.on('message', (m) => m.ready && resolve());
    worker.on('error', reject);
  });
  return { ready, done, worker };
}

/** The Node subscriber: the SDK (or, `raw`, a bare WebSocket) in this process. */
function nodeHost() {
  let client = null;
  let count = 0;
  return {
    name: 'Node ' + process.version,
    async start(options, filter, encrypted, shared, raw) {
      count = 0;
      const counter = new Int32Array(shared);
      if (raw) {
        client = await rawSubscribe(options.url, filter, () => {
          count += 1;
          Atomics.store(counter, 0, count);
        }, raw === 'batch');
        return;
      }
      client = await sdk.connect(options);
      await client.subscribe(filter, (m) => {
        if (m.data.length === PAYLOAD && m.encrypted === encrypted) {
          count += 1;
          Atomics.store(counter, 0, count);
        }
      });
    },
    read: async () => [performance.now(), count, performance.eventLoopUtilization()],
    async stop() {
      await client.close();
    },
    async close() {},
  };
}

/** The Chromium subscriber: the SDK in a page of headless Chromium (bench/index.html). */
async function chromiumHost() {
  const { chromium } = await import('playwright-core');
  const http = await serveStatic();
  const userDir = mkdtempSync(path.join(tmpdir(), 'sealbus-bench-chromium-'));
  const context = await chromium.launchPersistentContext(userDir, {
    executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  const page = await context.newPage();
  page.on('pageerror', (err) => console.error('page error:', err));
  await page.goto(`http://127.0.0.1:${http.address().port}/bench/index.html`);
  await page.waitForFunction(() => window.benchReady === true, null, { timeout: 20000 });
  const version = context.browser()?.version() ?? '';
  let polling = false;
  let poller = null;
  const profileDir = process.env.SEALBUS_BENCH_PROFILE;
  const cdp = profileDir ? await context.newCDPSession(page) : null;
  let run = 0;
  return {
    name: `Chromium ${version}`.trim(),
    async start(options, filter, encrypted, shared, raw) {
      await page.evaluate(([o, f, e, r]) => window.bench.start(o, f, e, r), [options, filter, encrypted, raw]);
      if (cdp) {
        await cdp.send('Profiler.enable');
        await cdp.send('Profiler.start');
      }
      // The page's count reaches the publisher through this process, polled every ~2 ms;
      // the window is large enough for that delay.
      const counter = new Int32Array(shared);
      polling = true;
      poller = (async () => {
        while (polling) {
          const [, count] = await page.evaluate(() => window.bench.read());
          Atomics.store(counter, 0, count);
          await sleep(2);
        }
      })();
    },
    read: () => page.evaluate(() => window.bench.read()),
    async stop() {
      polling = false;
      await poller;
      if (cdp) {
        const { profile } = await cdp.send('Profiler.stop');
        run += 1;
        const file = path.join(profileDir, `chromium-${run}.cpuprofile`);
        writeFileSync(file, JSON.stringify(profile));
        console.log(`profile: ${file}`);
      }
      await page.evaluate(() => window.bench.stop());
    },
    async close() {
      await context.close();
      http.close();
      rmSync(userDir, { recursive: true, force: true });
    },
  };
}

/**
 * Runs: a bare WebSocket (the host's ceiling) reading one frame per message and reading
 * messages of several frames (as the SDK announces), the SDK, the SDK with E2E.
 */
const MODES = [
  { label: 'raw WebSocket, no SDK, one frame per message', raw: 'single', e2e: false },
  { label: 'raw WebSocket, no SDK, batches', raw: 'batch', e2e: false },
  { label: 'SDK, plain', raw: false, e2e: false },
  { label: 'SDK, E2E (opened)', raw: false, e2e: true },
];

async function measure(host, url, { raw, e2e }) {
  const key = e2e ? sdk.generateKey() : undefined;
  const topic = `bench/${host.name.split(' ')[0].toLowerCase()}/${raw ? 'raw' : e2e ? 'e2e' : 'plain'}`;
  const frames = publishFrames(topic, key);
  const shared = new SharedArrayBuffer(16);
  const state = new Int32Array(shared);
  await host.start({ url, session: 'demo', password: 'demo', ...(key ? { key } : {}) }, topic, e2e, shared, raw);
  const publisher = startPublisher(url, frames, shared);
  await publisher.ready;
  await sleep(warmupSeconds * 1000);
  const [t0, c0, elu0] = await host.read();
  const waited0 = Atomics.load(state, 3);
  // Messages sent and not yet received, every 10 ms: thousands means the subscriber always had
  // work waiting.
  const backlog = [];
  const sampler = setInterval(() => backlog.push(Atomics.load(state, 2) - Atomics.load(state, 0)), 10);
  await sleep(seconds * 1000);
  clearInterval(sampler);
  const [t1, c1, elu1] = await host.read();
  const waited1 = Atomics.load(state, 3);
  Atomics.store(state, 1, 1);
  const sent = await publisher.done;
  await host.stop();
  const elapsed = (t1 - t0) / 1000;
  return {
    host: host.name,
    raw,
    e2e,
    received: c1 - c0,
    seconds: elapsed,
    perSecond: (c1 - c0) / elapsed,
    publisherWaited: (waited1 - waited0) / 1000 / elapsed,
    backlog: backlog.length ? backlog.reduce((a, b) => a + b, 0) / backlog.length : 0,
    // Node only: the share of the time the subscriber's thread was busy (1: it is the limit).
    busy: elu0 ? performance.eventLoopUtilization(elu1, elu0).utilization : null,
    sent,
  };
}

const config = mkdtempSync(path.join(tmpdir(), 'sealbus-bench-'));
const configFile = path.join(config, 'sealbus.toml');
// A roomy outbound queue: the window, not the queue, bounds what is in flight.
writeFileSync(configFile, '[[sessions]]\nname = "demo"\npassword = "demo"\noutbound_queue = 65536\nslow_consumer_drops = 1000000\n');
const server = await startServer(0, ['--config', configFile]);
const results = [];
try {
  console.log(`server: ${process.env.SEALBUS_BIN ?? 'target/debug/sealbus'} at ${server.url}; ${PAYLOAD}-byte payloads, QoS 0, ${warmupSeconds} s warm-up, ${seconds} s measured, window ${WINDOW}`);
  for (const name of hosts) {
    const host = name === 'chromium' ? await chromiumHost() : nodeHost();
    try {
      for (const mode of MODES) {
        const r = await measure(host, server.url, mode);
        results.push(r);
        const rate = Math.round(r.perSecond).toLocaleString('en-US');
        console.log(
          `${r.host.padEnd(24)} ${mode.label.padEnd(46)} ${rate.padStart(9)} messages/s  ` +
            `(${r.received} in ${r.seconds.toFixed(2)} s; backlog ${Math.round(r.backlog)}; publisher waited ${(r.publisherWaited * 100).toFixed(0)}% of the time` +
            `${r.busy === null ? '' : `; subscriber thread busy ${(r.busy * 100).toFixed(0)}%`})`,
        );
      }
    } finally {
      await host.close();
    }
  }
} finally {
  await server.stop();
  rmSync(config, { recursive: true, force: true });
}
if (results.some((r) => r.received === 0)) {
  console.error('a run received nothing');
  process.exit(1);
}
