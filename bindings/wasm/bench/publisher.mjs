// The benchmark's publisher: a worker thread that speaks the protocol directly (no SDK), so that
// it costs far less per message than the subscriber it feeds. It sends precomputed `publish`
// frames (QoS 0, 128-byte payloads, plain or already sealed) while fewer than `window` are
// unreceived: `shared[0]` is what the subscriber has received so far (written by the main
// thread), `shared[1]` set to 1 stops it; it counts its sends in `shared[2]` and the
// milliseconds it spent waiting for room in the window in `shared[3]`.
import { parentPort, workerData } from 'node:worker_threads';

const { url, frames, window } = workerData;
const shared = new Int32Array(workerData.shared);

const ws = new WebSocket(url, 'sealbus.v1');
const welcome = new Promise((resolve, reject) => {
  ws.onmessage = (event) => {
    const frame = JSON.parse(event.data);
    if (frame.type === 'welcome') resolve();
    else if (frame.type === 'error') reject(new Error(`publisher: ${event.data}`));
  };
  ws.onerror = () => reject(new Error('publisher: WebSocket error'));
});
ws.onopen = () => ws.send(JSON.stringify({ type: 'hello', v: 1, session: 'demo', auth: { password: 'demo' } }));
await welcome;
ws.onmessage = (event) => parentPort.postMessage({ unexpected: String(event.data).slice(0, 200) });
parentPort.postMessage({ ready: true });

const yieldToLoop = () => new Promise((resolve) => setImmediate(resolve));
let sent = 0;
let waitedMs = 0;
while (Atomics.load(shared, 1) === 0) {
  const room = window - (sent - Atomics.load(shared, 0));
  if (room <= 0) {
    const t = performance.now();
    await new Promise((resolve) => setTimeout(resolve, 1));
    waitedMs += performance.now() - t;
    Atomics.store(shared, 3, Math.round(waitedMs));
    continue;
  }
  // Small bursts, then back to the event loop so the socket writes.
  for (let n = Math.min(room, 256); n > 0; n -= 1) {
    ws.send(frames[sent % frames.length]);
    sent += 1;
  }
  Atomics.store(shared, 2, sent);
  await yieldToLoop();
}
ws.close();
parentPort.postMessage({ done: true, sent });
