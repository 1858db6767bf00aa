// Compile-only check of index.d.ts (`tsc -p tests/types`): typical uses must type-check under
// `strict`, and misuse must not.
import {
  AckHandle,
  Client,
  SealbusError,
  Subscription,
  connect,
  generateKey,
  openEnvelope,
  sealEnvelope,
  type AckResult,
  type DeliveryReport,
  type Message,
  type StateChange,
} from 'sealbus';

export async function typical(): Promise<void> {
  const key: string = generateKey();
  const client: Client = await connect({ url: 'ws://127.0.0.1:7070/ws', session: 'demo', password: 'demo', key });
  const off: () => void = client.on('state', (s: StateChange) => console.log(s.state, s.attempt));
  off();
  client.on('error', (err: SealbusError) => console.log(err.code + 1, err.codeName.length));
  const sub: Subscription = await client.subscribe('a/+', async (m: Message, s: Subscription) => {
    if (m.data instanceof Uint8Array) console.log(m.data.byteLength, s.filter);
  });
  for await (const m of sub) {
    console.log(m.topic, m.offset ?? 0);
    break;
  }
  const published = await client.publish('a/b', { any: ['json', 1, null, true] }, { qos: 1, retain: false });
  console.log(published.mid, published.offset);
  if (published.mid !== null) {
    const report: DeliveryReport = await client.deliveryStatus(published.mid);
    for (const copy of report.copies) console.log(copy.client, copy.state === 'dead', copy.attempts + 1);
  }
  await client.publishToId('other', new Uint8Array([1]));
  const ack: AckHandle = await client.publishWithAck('a/b', 'x', { timeoutMs: 1000 });
  const result: AckResult = await ack.wait();
  console.log(result.outcome, result.responses['id']?.ok, ack.status()['id'], ack.isComplete());
  const first = await ack.waitAny();
  console.log(first?.codeName);
  ack.cancel();
  const plain: Uint8Array = openEnvelope(key, 't', sealEnvelope(key, 't', new Uint8Array()));
  console.log(plain, Client.connect, client.limits.maxMessageBytes);
  await client.close({ discard: true });
}

export async function misuse(client: Client): Promise<void> {
  // @ts-expect-error qos is 0 or 1
  await client.publish('a', 1, { qos: 2 });
  // @ts-expect-error undefined is not data
  await client.publish('a', undefined);
  // @ts-expect-error a message id is a string
  await client.deliveryStatus(42);
  // @ts-expect-error unknown event
  client.on('nope', () => {});
}
