// A loopback TCP proxy whose connections the test can cut, to drop a client's connection while
// the server (and its history) keeps running, and which the test can hold closed, to keep a
// client away while the server restarts and others publish.
import net from 'node:net';

/**
 * Proxies 127.0.0.1:(random port) to `target` (host:port). `cut()` drops every connection;
 * `hold(true)` refuses new connections (accepted, then closed at once) until `hold(false)`.
 * When either side of a connection ends, the other is closed too.
 */
export function startProxy(target) {
  const [host, port] = target.split(':');
  const sockets = new Set();
  let held = false;
  const server = net.createServer((client) => {
    if (held) {
      client.on('error', () => {});
      client.destroy();
      return;
    }
    const upstream = net.connect(Number(port), host);
    for (const [s, other] of [
      [client, upstream],
      [upstream, client],
    ]) {
      sockets.add(s);
      s.on('close', () => {
        sockets.delete(s);
        other.destroy();
      });
      s.on('error', () => {});
    }
    client.pipe(upstream);
    upstream.pipe(client);
  });
  return new Promise((resolve) => {
    server.listen(0, '127.0.0.1', () =>
      resolve({
        address: `127.0.0.1:${server.address().port}`,
        cut: () => {
          for (const s of sockets) s.destroy();
        },
        hold: (on) => {
          held = on;
        },
        close: () => {
          for (const s of sockets) s.destroy();
          return new Promise((done) => server.close(() => done()));
        },
      }),
    );
  });
}
