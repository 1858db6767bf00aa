// A loopback TCP proxy whose connections the test can cut, to drop a client's connection while
// the server (and its history) keeps running.
import net from 'node:net';

/** Proxies 127.0.0.1:(random port) to `target` (host:port); `cut()` drops every connection. */
export function startProxy(target) {
  const [host, port] = target.split(':');
  const sockets = new Set();
  const server = net.createServer((client) => {
    const upstream = net.connect(Number(port), host);
    for (const s of [client, upstream]) {
      sockets.add(s);
      s.on('close', () => sockets.delete(s));
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
        close: () => {
          for (const s of sockets) s.destroy();
          return new Promise((done) => server.close(() => done()));
        },
      }),
    );
  });
}
