// Entry point for browsers and bundlers: loads the wasm-bindgen `--target web` build (the
// `.wasm` file next to it, resolved from import.meta.url) before anything else runs.
import init, * as wasm from './dist/web/sealbus_wasm.js';
import { createSdk } from './lib/sdk.js';

await init();
const sdk = createSdk(wasm);
export const { SealbusError, Client, Subscription, AckHandle, connect, generateKey, openEnvelope, sealEnvelope } = sdk;
