// Starts a real `sealbus serve --demo` on 127.0.0.1 (port 0 unless given) for the tests, reads
// the ws:// URL it prints, and stops it. By default with `--memory`: no store file in the
// working tree, and every start begins from nothing. With `{ store: file }` it keeps its state
// in that SQLite file, so a server started again on the same file recovers it (sessions, the
// stream's epoch, offsets and history, retained messages, persistent clients' queues).
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
export const repo = process.env.SEALBUS_REPO ?? path.resolve(here, '../../../..');
export const serverBin = process.env.SEALBUS_BIN ?? path.join(repo, 'target/debug/sealbus');
export const peerBin = process.env.SEALBUS_E2E_PEER ?? path.join(repo, 'target/debug/examples/e2e_peer');

/** A fresh temporary directory for a store file: `{ file, remove() }`. */
export function tempStore() {
  const dir = mkdtempSync(path.join(tmpdir(), 'sealbus-store-'));
  return { file: path.join(dir, 'sealbus.db'), remove: () => rmSync(dir, { recursive: true, force: true }) };
}

/**
 * A running server: `{ url, port, stop() }`. `options` is either an array of extra arguments
 * for `sealbus serve`, or `{ store, args }`: `store` is an SQLite file (`--store`) instead of
 * `--memory`, `args` the extra arguments. `stop()` kills the process (SIGKILL): what survives is
 * what the store had committed, as after a crash.
 */
export function startServer(port = 0, options = []) {
  const { store = null, args: extraArgs = [] } = Array.isArray(options) ? { args: options } : options;
  const storeArgs = store ? ['--store', store] : ['--memory'];
  const args = ['serve', '--demo', ...storeArgs, '--listen', `127.0.0.1:${port}`, ...extraArgs];
  const child = spawn(serverBin, args, {
    stdio: ['ignore', 'pipe', 'inherit'],
    env: { ...process.env, RUST_LOG: process.env.RUST_LOG ?? 'warn' },
  });
  return new Promise((resolve, reject) => {
    let out = '';
    const timer = setTimeout(() => {
      child.kill();
      reject(new Error(`server printed no ws:// URL: ${out}`));
    }, 15000);
    child.on('error', reject);
    child.on('exit', (code) => reject(new Error(`server exited (${code}): ${out}`)));
    child.stdout.on('data', (chunk) => {
      out += chunk;
      const match = /ws:\/\/(127\.0\.0\.1:(\d+))\/ws/.exec(out);
      if (match) {
        clearTimeout(timer);
        child.stdout.resume();
        resolve({
          url: `ws://${match[1]}/ws`,
          port: Number(match[2]),
          stop: () =>
            new Promise((done) => {
              if (child.exitCode !== null || child.signalCode !== null) return done();
              child.removeAllListeners('exit');
              child.on('exit', () => done());
              child.kill('SIGKILL');
            }),
        });
      }
    });
  });
}

/** Runs the Rust peer (core/examples/e2e_peer.rs); resolves with its stdout lines as printed. */
export function runPeer(args, onLine = () => {}) {
  const child = spawn(peerBin, args, { stdio: ['ignore', 'pipe', 'inherit'] });
  const lines = [];
  let buffer = '';
  child.stdout.on('data', (chunk) => {
    buffer += chunk;
    let nl;
    while ((nl = buffer.indexOf('\n')) >= 0) {
      const line = buffer.slice(0, nl);
      buffer = buffer.slice(nl + 1);
      lines.push(line);
      onLine(line);
    }
  });
  return new Promise((resolve, reject) => {
    child.on('error', reject);
    child.on('exit', (code) => (code === 0 ? resolve(lines) : reject(new Error(`e2e_peer exited ${code}: ${lines.join('|')}`))));
  });
}
