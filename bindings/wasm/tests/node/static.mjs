// Serves the package directory (bindings/wasm) over HTTP on 127.0.0.1, port 0, for the pages of
// the Chromium tests and the Chromium benchmark.

import { readFileSync } from 'node:fs';
import { createServer } from 'node:http';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

/** The package directory the pages load the SDK from. */
export const packageRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');

const types = { '.html': 'text/html', '.js': 'text/javascript', '.mjs': 'text/javascript', '.wasm': 'application/wasm', '.json': 'application/json' };

/** Starts the file server; resolves to the listening `http.Server`. */
export function serveStatic() {
  const server = createServer((req, res) => {
    const file = path.join(packageRoot, decodeURIComponent(new URL(req.url, 'http://x').pathname));
    if (!file.startsWith(packageRoot)) {
      res.writeHead(403).end();
      return;
    }
    try {
      const body = readFileSync(file);
      res.writeHead(200, { 'content-type': types[path.extname(file)] ?? 'application/octet-stream' }).end(body);
    } catch {
      res.writeHead(404).end();
    }
  });
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve(server)));
}
