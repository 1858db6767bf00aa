// Entry point for Node >= 20: loads the wasm-bindgen `--target nodejs` build synchronously.
// Node 20 needs `--experimental-websocket` (or `globalThis.WebSocket = (await import('ws')).WebSocket`);
// Node >= 22 has a global WebSocket.
import wasm from './dist/node/sealbus_wasm.js';
import { createSdk } from './lib/sdk.js';

const sdk = createSdk(wasm);
export const { SealbusError, Client, Subscription, AckHandle, connect, generateKey, openEnvelope, sealEnvelope } = sdk;
