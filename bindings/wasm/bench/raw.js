// The benchmark's reference subscriber without the SDK: a bare WebSocket that says hello,
// subscribes and counts `message` frames by their first bytes (no parsing). Its rate is what
// the host's WebSocket delivers to JavaScript at all; runs in Node and in the page. With
// `batch` it announces that it reads messages of several frames (as the SDK does) and splits
// them at line feeds.

/** Subscribes `filter` on `url` (session demo); calls `onMessage()` per message frame. */
export function rawSubscribe(url, filter, onMessage, batch = false) {
  const ws = new WebSocket(url, 'sealbus.v1');
  return new Promise((resolve, reject) => {
    ws.onopen = () => ws.send(JSON.stringify({ type: 'hello', v: 1, session: 'demo', auth: { password: 'demo' }, batch }));
    ws.onerror = () => reject(new Error('raw subscriber: WebSocket error'));
    ws.onmessage = (event) => {
      for (const text of batch ? event.data.split('\n') : [event.data]) {
        if (text.startsWith('{"type":"message"')) onMessage();
        else if (text.startsWith('{"type":"welcome"')) ws.send(JSON.stringify({ type: 'subscribe', id: 1, filter }));
        else if (text.startsWith('{"type":"subscribed"')) resolve({ close: () => ws.close() });
        else if (text.startsWith('{"type":"error"')) reject(new Error(`raw subscriber: ${text}`));
      }
    };
  });
}
