// Sealbus from Node: subscribe, publish, publishWithAck, end-to-end encryption.
//
//   cargo xtask serve                  # terminal 1: a server with session demo/demo
//   cargo xtask wasm                   # once: builds bindings/wasm/dist
//   node --experimental-websocket examples/js/node/pubsub.mjs [ws://127.0.0.1:7070/ws]
//
// (Node >= 22 needs no flag.) In an application, `import ... from 'sealbus'` instead.
import { connect, generateKey } from '../../../bindings/wasm/node.js';

const url = process.argv[2] ?? 'ws://127.0.0.1:7070/ws';
const key = generateKey();
const options = { url, session: 'demo', password: 'demo', key };

const alice = await connect(options);
const bob = await connect(options);
console.log('connected as', alice.clientId, 'and', bob.clientId);

await bob.subscribe('example/+', async (msg) => {
  console.log(`bob got ${JSON.stringify(msg.data)} on ${msg.topic} (encrypted: ${msg.encrypted})`);
  if (msg.data?.fail) throw new Error('bob refuses this one');
});

await alice.publish('example/hello', { text: 'hi bob' }, { qos: 1 });
const ack = await alice.publishWithAck('example/job', { fail: true });
const result = await ack.wait();
for (const [id, reply] of Object.entries(result.responses)) {
  console.log(`response from ${id}: ok=${reply.ok} ${reply.error ?? ''}`);
}

await alice.close();
await bob.close();
