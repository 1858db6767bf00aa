// The shared scenarios in headless Chromium (Debian's /usr/bin/chromium through playwright-core)
// in a real page served on loopback, against a real `sealbus serve`; plus the envelope vectors,
// E2E interop with the Rust client, and reconnect after a server restart, driven from Node.
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';

import { chromium } from 'playwright-core';

import { scenarios } from '../scenarios.js';
import { startProxy } from '../node/proxy.mjs';
import { repo, runPeer, startServer, tempStore } from '../node/server.mjs';
import { packageRoot, serveStatic } from '../node/static.mjs';

describe('sealbus in headless Chromium', () => {
  let sealbus;
  let http;
  let context;
  let page;
  let userDir;
  before(async () => {
    sealbus = await startServer();
    http = await serveStatic();
    userDir = mkdtempSync(path.join(tmpdir(), 'sealbus-chromium-'));
    context = await chromium.launchPersistentContext(userDir, {
      executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
      headless: true,
      args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    });
    page = await context.newPage();
    page.on('pageerror', (err) => console.error('page error:', err));
    await page.goto(`http://127.0.0.1:${http.address().port}/tests/browser/index.html`);
    await page.waitForFunction(() => window.sealbusReady === true, null, { timeout: 20000 });
  });
  after(async () => {
    await context?.close();
    http?.close();
    await sealbus?.stop();
    if (userDir) rmSync(userDir, { recursive: true, force: true });
  });

  const check = (result) => {
    if (!result.ok) assert.fail(result.error);
    return result.value;
  };

  for (const name of Object.keys(scenarios)) {
    test(name, async () => {
      check(await page.evaluate(([n, u]) => window.sealbusTest.run(n, u), [name, sealbus.url]));
    });
  }

  test('the shared envelope vectors open (and tamper cases fail) in the browser', async () => {
    const vectors = JSON.parse(readFileSync(path.join(repo, 'core/tests/vectors/envelope.json'), 'utf8'));
    const checked = check(await page.evaluate((v) => window.sealbusTest.vectors(v), vectors));
    assert.equal(checked, vectors.vectors.length + vectors.tamper.length);
  });

  test('E2E interop with the Rust client, then reconnect after a server restart with recovery', async () => {
    // The server keeps its state in an SQLite file. The page reaches it through a proxy that is
    // held closed while the server is killed and restarted on the same file and port, and until
    // the Rust client has published a sealed QoS 1 message there: the page can only get it by
    // recovering it from the stream's history, which must have survived the restart.
    const store = tempStore();
    const own = await startServer(0, { store: store.file });
    const proxy = await startProxy(`127.0.0.1:${own.port}`);
    const secret = check(await page.evaluate(() => window.sealbusTest.generateKey()));
    const options = { url: `ws://${proxy.address}/ws`, session: 'demo', password: 'demo', key: secret, reconnect: { initialDelayMs: 50, maxDelayMs: 300 } };
    check(await page.evaluate(([o, f]) => window.sealbusTest.open(o, f), [options, 'web/#']));
    const got = () => page.evaluate(() => window.sealbusTest.got().filter((m) => m.topic));
    const states = () => page.evaluate(() => window.sealbusTest.got().filter((m) => m.state).map((m) => m.state));
    let again;
    try {
      await runPeer([own.url, secret, 'publish', 'web/rust', '{"zeta":1,"alpha":"from rust"}']);
      await waitFor(async () => (await got()).length === 1);
      const [fromRust] = await got();
      assert.equal(fromRust.encrypted, true);
      assert.equal(JSON.stringify(fromRust.data), '{"zeta":1,"alpha":"from rust"}');

      let ready;
      const isReady = new Promise((resolve) => (ready = resolve));
      const peer = runPeer([own.url, secret, 'echo', 'web/js'], (line) => line === 'ready' && ready());
      await Promise.race([isReady, peer]); // a peer that fails before `ready` rejects here
      check(await page.evaluate(() => window.sealbusTest.publish('web/js', [1, 2, 255], true)));
      const lines = await peer;
      assert.ok(lines.at(-1).includes('echoed bytes encrypted=true'), lines.join('|'));
      await waitFor(async () => (await got()).some((m) => m.topic === 'web/js/echo'));
      const echo = (await got()).find((m) => m.topic === 'web/js/echo');
      assert.deepEqual(echo.data, [1, 2, 255]);

      proxy.hold(true);
      await own.stop();
      await waitFor(async () => (await states()).includes('reconnecting'));
      again = await startServer(own.port, { store: store.file });
      await runPeer([own.url, secret, 'publish', 'web/missed', '{"while":"away"}']);
      assert.notEqual(await page.evaluate(() => window.sealbusTest.state()), 'connected', 'the page is still away');
      proxy.hold(false);
      check(await page.evaluate(() => window.sealbusTest.waitState('connected', 10000)));
      await waitFor(async () => (await got()).some((m) => m.topic === 'web/missed'));
      const missed = (await got()).filter((m) => m.topic === 'web/missed');
      assert.equal(missed.length, 1);
      assert.equal(missed[0].replay, true, 'replayed from history');
      assert.equal(missed[0].encrypted, true);
      assert.equal(JSON.stringify(missed[0].data), '{"while":"away"}');
      assert.equal(check(await page.evaluate(() => window.sealbusTest.recovered())), true);
      await runPeer([own.url, secret, 'publish', 'web/after', '"after restart"']);
      await waitFor(async () => (await got()).some((m) => m.topic === 'web/after'));
      assert.deepEqual(
        (await got()).map((m) => m.topic),
        ['web/rust', 'web/js', 'web/js/echo', 'web/missed', 'web/after'],
      );
    } finally {
      check(await page.evaluate(() => window.sealbusTest.close()));
      await proxy.close();
      await again?.stop();
      await own.stop();
      store.remove();
    }
  });
});

describe('the web console served by sealbus serve --console', () => {
  test('connects, subscribes, publishes and publishes with ack from the page', async () => {
    const server = await startServer(0, ['--console', packageRoot]);
    const userDir = mkdtempSync(path.join(tmpdir(), 'sealbus-console-'));
    const context = await chromium.launchPersistentContext(userDir, {
      executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
      headless: true,
      args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    });
    try {
      const page = await context.newPage();
      const origin = server.url.replace('ws://', 'http://').replace(/\/ws$/, '');
      await page.goto(`${origin}/console`);
      await page.waitForFunction(() => window.sealbusConsoleReady === true, null, { timeout: 20000 });
      const log = () => page.evaluate(() => document.getElementById('log').textContent);
      await page.click('#genkey');
      await page.click('#connect');
      await page.waitForFunction(() => document.getElementById('state').textContent === 'connected');
      await page.fill('#filter', 'console/#');
      await page.click('#subscribe');
      await waitFor(async () => (await log()).includes('subscribed to console/#'));
      await page.fill('#data', '{"b":2,"a":1}');
      await page.click('#publish');
      await waitFor(async () => (await log()).includes('console/hello from'));
      assert.ok((await log()).includes('{"b":2,"a":1} sealed'), await log());
      await page.click('#publishAck');
      await waitFor(async () => (await log()).includes('ack complete'));
      if (process.env.SEALBUS_CONSOLE_SCREENSHOT) await page.screenshot({ path: process.env.SEALBUS_CONSOLE_SCREENSHOT });
    } finally {
      await context.close();
      rmSync(userDir, { recursive: true, force: true });
      await server.stop();
    }
  });
});

async function waitFor(pred, ms = 10000) {
  const deadline = Date.now() + ms;
  while (!(await pred())) {
    if (Date.now() > deadline) throw new Error('timed out');
    await new Promise((r) => setTimeout(r, 25));
  }
}
