// The shared scenario list of the JS SDK, run by Node (tests/node) and by headless Chromium
// (tests/browser). Each scenario is `async ({ sdk, url, assert }) => void`; `assert` offers
// `ok`, `equal`, `deepEqual` (node:assert semantics) so the same code runs in both hosts.

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** Waits until `pred()` is true (polling), failing after `ms`. */
export async function until(pred, ms = 5000, what = 'condition') {
  const deadline = Date.now() + ms;
  while (!pred()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(10);
  }
}

function connect(sdk, url, extra = {}) {
  return sdk.connect({ url, session: 'demo', password: 'demo', ...extra });
}

let topicCounter = 0;
function unique(prefix) {
  topicCounter += 1;
  return `${prefix}${Date.now().toString(36)}${topicCounter}`;
}

export const scenarios = {
  async 'publish and subscribe round-trip JSON, strings and bytes exactly'({ sdk, url, assert }) {
    const a = await connect(sdk, url);
    const b = await connect(sdk, url);
    const topic = `${unique('chat/')}/room`;
    const got = [];
    await b.subscribe(topic, (m) => {
      got.push(m);
    });
    const values = [
      { zebra: 1, alpha: { y: [1, 2.5, 'x'], b: null }, middle: true },
      'plain text',
      42.25,
      null,
      [3, 2, 1],
      new Uint8Array([0, 1, 2, 254, 255]),
    ];
    for (const value of values) await a.publish(topic, value);
    await until(() => got.length === values.length, 5000, 'all messages');
    for (let i = 0; i < values.length; i += 1) {
      const data = got[i].data;
      if (values[i] instanceof Uint8Array) {
        assert.ok(data instanceof Uint8Array, 'bytes arrive as Uint8Array');
        assert.deepEqual(Array.from(data), Array.from(values[i]));
      } else {
        assert.equal(JSON.stringify(data), JSON.stringify(values[i]), 'JSON and key order survive');
      }
      assert.equal(got[i].topic, topic);
      assert.equal(got[i].from, a.clientId);
      assert.equal(typeof got[i].ts, 'number');
    }
    await a.close();
    await b.close();
  },

  async 'wildcards match, one copy per client, unsubscribe stops delivery'({ sdk, url, assert }) {
    const a = await connect(sdk, url);
    const b = await connect(sdk, url);
    const root = unique('w');
    const plus = [];
    const hash = [];
    await b.subscribe(`${root}/+/temp`, (m) => plus.push(m.topic));
    const all = await b.subscribe(`${root}/#`, (m) => hash.push(m.topic));
    let copies = 0;
    const off = b.on('state', () => {});
    await a.publish(`${root}/kitchen/temp`, 1);
    await a.publish(`${root}/kitchen/humidity`, 2);
    await a.publish(`${root}/a/b/c`, 3);
    await until(() => hash.length === 3, 5000, 'hash deliveries');
    assert.deepEqual(plus, [`${root}/kitchen/temp`]);
    assert.deepEqual(hash, [`${root}/kitchen/temp`, `${root}/kitchen/humidity`, `${root}/a/b/c`]);
    off();
    copies = plus.length + hash.length;
    assert.equal(copies, 4);
    await all.unsubscribe();
    await a.publish(`${root}/x/temp`, 4, { qos: 1 });
    await until(() => plus.length === 2, 5000, 'plus delivery after unsubscribe');
    await sleep(100);
    assert.equal(hash.length, 3, 'unsubscribed handler gets nothing more');
    await assert.rejects(() => b.subscribe('bad/#/filter', () => {}), (err) => err.codeName === 'invalid_filter' && typeof err.code === 'number');
    await assert.rejects(() => a.publish('no/+/wildcards', 1), (err) => err instanceof sdk.SealbusError && err.codeName === 'invalid_topic');
    await a.close();
    await b.close();
  },

  async 'QoS 1 publishes resolve with mid and offset and arrive as QoS 1'({ sdk, url, assert }) {
    const a = await connect(sdk, url);
    const b = await connect(sdk, url);
    const topic = unique('q1/');
    const got = [];
    await b.subscribe(topic, async (m) => {
      await sleep(5);
      got.push(m);
    });
    const first = await a.publish(topic, { n: 1 }, { qos: 1 });
    const second = await a.publish(topic, { n: 2 }, { qos: 1 });
    assert.equal(typeof first.mid, 'string');
    assert.ok(second.offset > first.offset, 'offsets grow');
    await until(() => got.length === 2, 5000, 'QoS 1 deliveries');
    assert.deepEqual(got.map((m) => m.data.n), [1, 2]);
    assert.equal(got[0].qos, 1);
    await a.close();
    await b.close();
  },

  async 'a new process of a persistent client gets what was queued while it was away'({ sdk, url, assert }) {
    const id = unique('worker-');
    const topic = unique('jobs/');
    const first = await connect(sdk, url, { clientId: id, persistent: true });
    await first.subscribe(`${topic}/#`, () => {});
    await first.close();
    const boss = await connect(sdk, url);
    for (let n = 0; n < 5; n += 1) await boss.publish(`${topic}/x`, n, { qos: 1 });
    // The queued copies come with the welcome, before this process subscribes: the SDK keeps
    // them for the subscription (the demo session redelivers only after 5 s).
    const again = await connect(sdk, url, { clientId: id, persistent: true });
    const got = [];
    await again.subscribe(`${topic}/#`, (m) => {
      got.push(m.data);
    });
    await until(() => got.length === 5, 4000, 'the messages queued while away');
    assert.deepEqual(got, [0, 1, 2, 3, 4]);
    await again.close({ discard: true });
    await boss.close();
  },

  async 'a burst of QoS 1 messages (joined on the wire) arrives in order and every copy is acked'({ sdk, url, assert }) {
    // Both sides announce messages of several frames: the server joins the burst's copies, the
    // subscriber's engine splits them and joins its acks, the publisher's joins its publishes.
    const a = await connect(sdk, url);
    const b = await connect(sdk, url);
    const topic = unique('burst/');
    const got = [];
    await b.subscribe(topic, (m) => {
      got.push(m.data.n);
    });
    const count = 300;
    const published = await Promise.all(
      Array.from({ length: count }, (_, n) => a.publish(topic, { n }, { qos: 1 })),
    );
    await until(() => got.length === count, 10000, 'the burst');
    assert.deepEqual(got, Array.from({ length: count }, (_, n) => n));
    // Every copy's ack reached the server: the last message's copy is acknowledged, once.
    const { mid } = published[count - 1];
    let report = await a.deliveryStatus(mid);
    for (let i = 0; i < 250 && report.copies[0]?.state !== 'acknowledged'; i += 1) {
      await sleep(20);
      report = await a.deliveryStatus(mid);
    }
    assert.deepEqual(report.copies, [{ client: b.clientId, state: 'acknowledged', attempts: 1 }]);
    await a.close();
    await b.close();
  },

  async 'deliveryStatus reports each subscriber copy of a QoS 1 message'({ sdk, url, assert }) {
    const a = await connect(sdk, url);
    const b = await connect(sdk, url);
    const topic = unique('ds/');
    let got = 0;
    await b.subscribe(topic, () => {
      got += 1;
    });
    const { mid } = await a.publish(topic, 'hello', { qos: 1 });
    await until(() => got === 1, 5000, 'the delivery');
    // The handler returned, so the SDK acknowledges; ask until the answer shows it.
    let report = await a.deliveryStatus(mid);
    for (let i = 0; i < 250 && !report.copies.every((c) => c.state === 'acknowledged'); i += 1) {
      await sleep(20);
      report = await a.deliveryStatus(mid);
    }
    assert.equal(report.mid, mid);
    assert.equal(report.topic, topic);
    assert.deepEqual(report.copies, [{ client: b.clientId, state: 'acknowledged', attempts: 1 }]);
    await assert.rejects(() => b.deliveryStatus(mid), (err) => err.codeName === 'unknown_message_id');
    await a.close();
    await b.close();
  },

  async 'publishWithAck: wait, waitAny, status, isComplete, handler errors'({ sdk, url, assert }) {
    const pub = await connect(sdk, url);
    const good = await connect(sdk, url);
    const bad = await connect(sdk, url);
    const rejecting = await connect(sdk, url);
    const topic = unique('jobs/');
    await good.subscribe(topic, async () => {
      await sleep(10);
    });
    await bad.subscribe(topic, () => {
      throw new Error('boom');
    });
    await rejecting.subscribe(topic, async () => {
      throw new Error('async boom');
    });
    const ack = await pub.publishWithAck(topic, { job: 1 }, { timeoutMs: 5000 });
    assert.deepEqual([...ack.expected].sort(), [good.clientId, bad.clientId, rejecting.clientId].sort());
    const first = await ack.waitAny();
    assert.ok(first && typeof first.clientId === 'string', 'waitAny gives a response');
    const result = await ack.wait();
    assert.equal(result.outcome, 'complete');
    assert.equal(result.responses[good.clientId].ok, true);
    assert.equal(result.responses[bad.clientId].ok, false);
    assert.equal(result.responses[bad.clientId].codeName, 'handler_failed');
    assert.ok(result.responses[bad.clientId].error.includes('boom'));
    assert.ok(result.responses[rejecting.clientId].error.includes('async boom'));
    assert.ok(ack.isComplete());
    assert.deepEqual(Object.values(ack.status()), [true, true, true]);

    const none = await pub.publishWithAck(unique('nobody/'), 1);
    assert.ok(none.isComplete(), 'no subscribers: complete at once');
    const empty = await none.wait();
    assert.deepEqual(empty.responses, {});
    assert.equal(await none.waitAny(), null);
    for (const c of [pub, good, bad, rejecting]) await c.close();
  },

  async 'publishWithAck: cancel wakes waiters, is idempotent; timeout keeps what arrived'({ sdk, url, assert }) {
    const pub = await connect(sdk, url);
    const slow = await connect(sdk, url);
    const topic = unique('slow/');
    await slow.subscribe(topic, () => sleep(1500));
    const ack = await pub.publishWithAck(topic, 'x', { timeoutMs: 10000 });
    assert.deepEqual(ack.status(), { [slow.clientId]: false });
    assert.equal(ack.isComplete(), false);
    const waiting = ack.wait();
    const any = ack.waitAny();
    ack.cancel();
    ack.cancel();
    const result = await waiting;
    assert.equal(result.outcome, 'cancelled');
    assert.equal(await any, null);
    assert.ok(ack.isComplete());

    const timed = await pub.publishWithAck(topic, 'y', { timeoutMs: 300 });
    const late = await timed.wait();
    assert.equal(late.outcome, 'timeout');
    assert.deepEqual(late.responses, {});
    await pub.close();
    await slow.close();
  },

  async 'publishToId reaches one client; unknown client is a typed error'({ sdk, url, assert }) {
    const a = await connect(sdk, url);
    const b = await connect(sdk, url);
    const got = [];
    await b.onDirect((m) => {
      got.push(m);
    });
    await a.publishToId(b.clientId, { hello: 'b' }, { qos: 1 });
    await until(() => got.length === 1, 5000, 'direct message');
    assert.equal(got[0].direct, true);
    assert.equal(got[0].from, a.clientId);
    assert.deepEqual(got[0].data, { hello: 'b' });
    const ack = await a.publishToIdWithAck(b.clientId, 'ping');
    assert.equal((await ack.wait()).responses[b.clientId].ok, true);
    await assert.rejects(() => a.publishToId('nobody-here', 1, { qos: 1 }), (err) => err.codeName === 'no_such_client' && err.code === 3004);
    await a.close();
    await b.close();
  },

  async 'subscriptions are async iterators; connection state events; bad password'({ sdk, url, assert }) {
    const a = await connect(sdk, url);
    const b = await connect(sdk, url);
    const states = [];
    b.on('state', (s) => states.push(s.state));
    const topic = unique('iter/');
    const sub = await b.subscribe(topic);
    for (let i = 0; i < 3; i += 1) await a.publish(topic, i);
    const seen = [];
    for await (const m of sub) {
      seen.push(m.data);
      if (seen.length === 3) break;
    }
    assert.deepEqual(seen, [0, 1, 2]);
    await a.close();
    await b.close();
    assert.equal(states.at(-1), 'closed');
    await assert.rejects(() => sdk.connect({ url, session: 'demo', password: 'wrong' }), (err) => err.codeName === 'auth_failed');
    await assert.rejects(() => sdk.connect({ url, session: 'demo' }), (err) => err instanceof sdk.SealbusError && /password/.test(err.message));
    await assert.rejects(() => sdk.connect({ url, session: 'demo', password: 'demo', key: 'not a key' }), (err) => err instanceof sdk.SealbusError);
  },

  async 'end-to-end encryption between JS clients; generateKey'({ sdk, url, assert }) {
    const key = sdk.generateKey();
    assert.equal(typeof key, 'string');
    const a = await connect(sdk, url, { key });
    const b = await connect(sdk, url, { key });
    const topic = unique('secret/');
    const got = [];
    await b.subscribe(topic, (m) => got.push(m));
    await a.publish(topic, { s: 'hidden', z: [1] }, { qos: 1 });
    await a.publish(topic, new Uint8Array([9, 8, 7]));
    await until(() => got.length === 2, 5000, 'sealed messages');
    assert.equal(got[0].encrypted, true);
    assert.equal(JSON.stringify(got[0].data), '{"s":"hidden","z":[1]}');
    assert.deepEqual(Array.from(got[1].data), [9, 8, 7]);
    await a.close();
    await b.close();
  },
};

/** Checks the shared envelope vectors (core/tests/vectors/envelope.json) with `openEnvelope`. */
export function checkVectors({ sdk, assert, vectors }) {
  let checked = 0;
  for (const v of vectors.vectors) {
    const plain = sdk.openEnvelope(v.key, v.topic, v.envelope);
    const hex = Array.from(plain, (x) => x.toString(16).padStart(2, '0')).join('');
    const expected = v.plaintext_hex ?? Array.from(new TextEncoder().encode(v.plaintext_utf8), (x) => x.toString(16).padStart(2, '0')).join('');
    assert.equal(hex, expected, v.name);
    const sealed = sdk.sealEnvelope(v.key, v.topic, plain);
    assert.equal(Array.from(sdk.openEnvelope(v.key, v.topic, sealed)).length, plain.length);
    checked += 1;
  }
  for (const t of vectors.tamper) {
    let code = null;
    try {
      if (t.envelope === undefined) sdk.sealEnvelope(t.key, t.topic ?? 't', new Uint8Array());
      else sdk.openEnvelope(t.key, t.topic, t.envelope);
    } catch (err) {
      code = err.codeName;
    }
    assert.equal(code, t.expect, t.name);
    checked += 1;
  }
  return checked;
}
