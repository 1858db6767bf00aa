// The shared scenarios, the envelope vectors and the Node-only scenarios (E2E interop with the
// Rust client, reconnect after a server restart) against a real `sealbus serve`.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';

import * as sdk from '../../node.js';
import { checkVectors, scenarios, until } from '../scenarios.js';
import { startProxy } from './proxy.mjs';
import { repo, runPeer, startServer, tempStore } from './server.mjs';

describe('sealbus in Node', () => {
  let server;
  before(async () => {
    server = await startServer();
  });
  after(async () => {
    await server?.stop();
  });

  for (const [name, scenario] of Object.entries(scenarios)) {
    test(name, () => scenario({ sdk, url: server.url, assert }));
  }

  test('the shared envelope vectors open (and tamper cases fail) in JS', () => {
    const vectors = JSON.parse(readFileSync(path.join(repo, 'core/tests/vectors/envelope.json'), 'utf8'));
    const checked = checkVectors({ sdk, assert, vectors });
    assert.equal(checked, vectors.vectors.length + vectors.tamper.length);
  });

  test('a message sealed by the Rust client opens in JS, and one sealed in JS opens in Rust', async () => {
    const key = sdk.generateKey();
    const js = await sdk.connect({ url: server.url, session: 'demo', password: 'demo', key });
    const fromRust = [];
    const topic = `interop/${Date.now()}`;
    await js.subscribe(`${topic}/#`, (m) => {
      fromRust.push(m);
    });
    await runPeer([server.url, key, 'publish', `${topic}/rust`, '{"zeta":1,"alpha":"from rust"}']);
    await until(() => fromRust.length === 1, 5000, 'the Rust message');
    assert.equal(fromRust[0].encrypted, true);
    assert.equal(JSON.stringify(fromRust[0].data), '{"zeta":1,"alpha":"from rust"}');

    // Rust opens what JS sealed and seals it again (echo); JS opens the echo.
    for (const data of [{ b: [1, 2], a: 'from js' }, new Uint8Array([1, 2, 3, 250])]) {
      fromRust.length = 0;
      let ready;
      const isReady = new Promise((resolve) => (ready = resolve));
      const peer = runPeer([server.url, key, 'echo', `${topic}/js`], (line) => line === 'ready' && ready());
      await Promise.race([isReady, peer]); // a peer that fails before `ready` rejects here
      await js.publish(`${topic}/js`, data, { qos: 1 });
      const lines = await peer;
      assert.ok(lines.at(-1).includes('encrypted=true'), lines.join('|'));
      await until(() => fromRust.some((m) => m.topic === `${topic}/js/echo`), 5000, 'the echo');
      const echo = fromRust.find((m) => m.topic === `${topic}/js/echo`);
      assert.equal(echo.encrypted, true);
      if (data instanceof Uint8Array) assert.deepEqual(Array.from(echo.data), Array.from(data));
      else assert.equal(JSON.stringify(echo.data), JSON.stringify(data));
    }
    await js.close();
  });

  test('after a dropped connection: resubscribes and gets what it missed replayed from history', async () => {
    // A proxy drops only this client's connection; the server and its stream keep running.
    const proxy = await startProxy(server.url.replace('ws://', '').replace('/ws', ''));
    const sub = await sdk.connect({
      url: `ws://${proxy.address}/ws`,
      session: 'demo',
      password: 'demo',
      reconnect: { initialDelayMs: 300, maxDelayMs: 300 },
    });
    const pub = await sdk.connect({ url: server.url, session: 'demo', password: 'demo' });
    const topic = `recover/${Date.now()}`;
    const got = [];
    const notRecovered = [];
    sub.on('notRecovered', (e) => notRecovered.push(e.filter));
    const subscription = await sub.subscribe(topic, (m) => {
      got.push(m);
    });
    await pub.publish(topic, 1, { qos: 1 });
    await until(() => got.length === 1, 5000, 'the first message');
    // Held while the missed message is published: the reconnect delay has full jitter and may
    // be a few milliseconds, too short for the test to see the drop or to publish meanwhile.
    proxy.hold(true);
    proxy.cut();
    await until(() => sub.state !== 'connected', 5000, 'the drop');
    await pub.publish(topic, 2, { qos: 1 });
    proxy.hold(false);
    await until(() => sub.state === 'connected', 10000, 'the reconnect');
    await until(() => got.length === 2, 5000, 'the missed message');
    assert.equal(got[1].data, 2);
    assert.equal(got[1].replay, true);
    assert.equal(subscription.recovered, true);
    assert.deepEqual(notRecovered, []);
    await pub.publish(topic, 3, { qos: 1 });
    await until(() => got.some((m) => m.data === 3), 5000, 'a live message after the reconnect');
    await sub.close();
    await pub.close();
    await proxy.close();
  });

  test('reconnects after a server restart on the same port and resubscribes', async () => {
    // The server keeps its state in an SQLite file; it is killed and started again on the same
    // file and port. The subscriber reaches it through a proxy that is held closed while the
    // server is down and until another client has published a QoS 1 message on the restarted
    // server: the subscriber can only get that message by recovering it from the stream's
    // history (resubscribe with `since`), which must have survived the restart.
    const store = tempStore();
    const own = await startServer(0, { store: store.file });
    const proxy = await startProxy(`127.0.0.1:${own.port}`);
    const reconnect = { initialDelayMs: 50, maxDelayMs: 300 };
    const sub = await sdk.connect({ url: `ws://${proxy.address}/ws`, session: 'demo', password: 'demo', reconnect });
    const pub = await sdk.connect({ url: own.url, session: 'demo', password: 'demo', reconnect });
    const states = [];
    sub.on('state', (s) => states.push(s.state));
    const notRecovered = [];
    sub.on('notRecovered', (e) => notRecovered.push(e.filter));
    const got = [];
    const subscription = await sub.subscribe('restart/+', (m) => {
      got.push(m);
    });
    let again;
    try {
      await pub.publish('restart/a', 'before', { qos: 1 });
      await until(() => got.length === 1, 5000, 'the first message');
      proxy.hold(true);
      await own.stop();
      await until(() => states.includes('reconnecting'), 5000, 'reconnecting');
      // Published by the subscriber while the server is down: kept in its offline buffer and
      // sent after the reconnect, after the resubscribe (so its own subscription gets it).
      const queued = sub.publish('restart/b', 'while away', { qos: 1 });
      queued.catch(() => {}); // awaited below; a failure before then must not hide the first error
      again = await startServer(own.port, { store: store.file });
      await until(() => pub.state === 'connected', 10000, 'the publisher reconnected');
      // Stored (committed) by the restarted server while the subscriber cannot reach it.
      const missed = await pub.publish('restart/m', 'missed', { qos: 1 });
      assert.equal(sub.state === 'connected', false, 'the subscriber is still away');
      assert.ok(missed.offset > got[0].offset, `offsets continue across the restart: ${got[0].offset} then ${missed.offset}`);
      proxy.hold(false);
      await until(() => sub.state === 'connected', 10000, 'the subscriber reconnected');
      await queued;
      await until(() => got.some((m) => m.data === 'missed'), 5000, 'the message published while the subscriber was away');
      await until(() => got.some((m) => m.data === 'while away'), 5000, 'the buffered message');
      await pub.publish('restart/c', 'after', { qos: 1 });
      await until(() => got.some((m) => m.data === 'after'), 5000, 'a message after the restart');
      const recovered = got.find((m) => m.data === 'missed');
      assert.equal(recovered.replay, true, 'replayed from history');
      assert.equal(recovered.topic, 'restart/m');
      assert.equal(recovered.offset, missed.offset);
      assert.equal(subscription.recovered, true);
      assert.deepEqual(notRecovered, []);
      // Each message exactly once; the live one after the reconnect comes last.
      assert.deepEqual(got.map((m) => m.data).sort(), ['after', 'before', 'missed', 'while away']);
      assert.equal(got.at(-1).data, 'after');
      assert.ok(states.indexOf('disconnected') < states.lastIndexOf('connected'));
    } finally {
      await sub.close();
      await pub.close();
      await proxy.close();
      await again?.stop();
      await own.stop();
      store.remove();
    }
  });
});
