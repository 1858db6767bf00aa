// The idiomatic JavaScript API over the wasm `Driver` (see index.d.ts for the documentation of
// every export). This layer only maps: operation ids to Promises, deliveries to handlers (with
// auto-ack) or async iterators, ack snapshots to AckHandle, error objects to SealbusError. Every
// protocol decision is made by the Rust engine inside the Driver.

/** An error from Sealbus, carrying the protocol's numeric `code` and its `codeName`. */
export class SealbusError extends Error {
  constructor(code, codeName, message) {
    super(message);
    this.name = 'SealbusError';
    this.code = code;
    this.codeName = codeName;
  }
}

function toError(raw) {
  if (raw instanceof Error) return raw;
  if (raw && typeof raw === 'object' && 'code' in raw) {
    return new SealbusError(raw.code, raw.codeName, raw.message);
  }
  return new Error(String(raw));
}

function call(fn) {
  try {
    return fn();
  } catch (raw) {
    throw toError(raw);
  }
}

function ackResult(snapshot) {
  const responses = {};
  for (const r of snapshot.responses) responses[r.clientId] = r;
  return {
    expected: snapshot.expected ?? [],
    responses,
    outcome: snapshot.finished,
    error: snapshot.error ? toError(snapshot.error) : null,
  };
}

/** A publishWithAck in progress. */
export class AckHandle {
  constructor(client, op) {
    this._client = client;
    this._op = op;
    this._snapshot = { expected: null, responses: [], finished: null, error: null };
    this._waiters = [];
  }

  _update(snapshot) {
    this._snapshot = snapshot;
    const waiters = this._waiters;
    this._waiters = [];
    for (const w of waiters) w();
  }

  _until(pred) {
    return new Promise((resolve) => {
      const check = () => (pred() ? resolve() : this._waiters.push(check));
      check();
    });
  }

  async wait() {
    await this._until(() => this._snapshot.finished !== null);
    return ackResult(this._snapshot);
  }

  async waitAny() {
    await this._until(() => this._snapshot.responses.length > 0 || this._snapshot.finished !== null);
    return this._snapshot.responses[0] ?? null;
  }

  status() {
    const status = {};
    for (const id of this._snapshot.expected ?? []) status[id] = false;
    for (const r of this._snapshot.responses) status[r.clientId] = true;
    return status;
  }

  get expected() {
    return this._snapshot.expected ?? [];
  }

  isComplete() {
    return this._snapshot.finished !== null;
  }

  cancel() {
    call(() => this._client._driver.cancelAck(this._op));
  }
}

/** One handler registration on a filter. */
export class Subscription {
  constructor(client, filter, handler) {
    this._client = client;
    this.filter = filter;
    this._handler = handler;
    this._op = null;
    this._tail = null;
    this._queue = [];
    this._readers = [];
    this._ended = false;
  }

  _deliver(message, token) {
    if (!this._handler) {
      if (this._readers.length) this._readers.shift()({ value: message, done: false });
      else this._queue.push(message);
      if (token !== null) this._client._driver.completeDelivery(token, undefined);
      return;
    }
    // One message at a time, in arrival order: a handler runs when the previous one's promise
    // settled. With nothing pending it runs now (no promise for a synchronous handler).
    if (this._tail === null) {
      const pending = this._run(message, token);
      if (pending) this._wait(pending);
    } else {
      this._wait(this._tail.then(() => this._run(message, token)));
    }
  }

  /** Remembers `pending` as the last handler run that has not finished. */
  _wait(pending) {
    const tail = pending.then(() => {
      if (this._tail === tail) this._tail = null;
    });
    this._tail = tail;
  }

  /** Runs the handler on `message`; returns a promise when it is still running. */
  _run(message, token) {
    let result;
    try {
      result = this._handler(message, this);
    } catch (err) {
      this._settle(token, false, err);
      return null;
    }
    if (result !== null && (typeof result === 'object' || typeof result === 'function') && typeof result.then === 'function') {
      return Promise.resolve(result).then(
        () => this._settle(token, true),
        (err) => this._settle(token, false, err),
      );
    }
    this._settle(token, true);
    return null;
  }

  /** Acknowledges delivery `token` (if any): ok, or failed with `err`'s message. */
  _settle(token, ok, err) {
    if (token === null) return;
    const error = ok ? undefined : err instanceof Error ? err.message : String(err);
    try {
      this._client._driver.completeDelivery(token, error);
    } catch {
      // The client is gone; nothing to acknowledge.
    }
  }

  _end() {
    this._ended = true;
    for (const r of this._readers.splice(0)) r({ value: undefined, done: true });
  }

  /** Whether the last resubscribe recovered every missed message. */
  get recovered() {
    return this._client._driver.isRecovered(this.filter) ?? true;
  }

  async unsubscribe() {
    const client = this._client;
    client._handlers.delete(this._op);
    this._end();
    await client._await(call(() => client._driver.unsubscribe(this._op)));
  }

  [Symbol.asyncIterator]() {
    return {
      next: () => {
        if (this._queue.length) return Promise.resolve({ value: this._queue.shift(), done: false });
        if (this._ended) return Promise.resolve({ value: undefined, done: true });
        return new Promise((resolve) => this._readers.push(resolve));
      },
      return: async () => {
        if (!this._ended) await this.unsubscribe();
        return { value: undefined, done: true };
      },
      [Symbol.asyncIterator]() {
        return this;
      },
    };
  }
}

/** A Sealbus client. */
export class Client {
  static async connect(options) {
    return new Client(options, Client._Driver)._ready();
  }

  constructor(options, Driver) {
    this._handlers = new Map();
    this._ops = new Map();
    this._acks = new Map();
    this._listeners = new Map();
    this.state = 'connecting';
    this.ackTimeoutMs = options.ackTimeoutMs ?? 5000;
    this._closed = new Promise((resolve) => (this._resolveClosed = resolve));
    this._driver = call(
      () =>
        new Driver(
          options,
          (event) => this._event(event),
          (...args) => this._deliver(...args),
        ),
    );
  }

  _await(op) {
    return new Promise((resolve, reject) => this._ops.set(op, { resolve, reject }));
  }

  _emit(name, value) {
    for (const listener of this._listeners.get(name) ?? []) {
      try {
        listener(value);
      } catch (err) {
        queueMicrotask(() => {
          throw err;
        });
      }
    }
  }

  /** A message from the driver (see `Driver` in src/lib.rs for the arguments). */
  _deliver(handlers, token, topic, data, from, ts, offset, mid, qos, flags) {
    const message = {
      topic,
      data,
      from,
      ts,
      offset: offset ?? null,
      mid: mid ?? null,
      qos,
      encrypted: (flags & 1) !== 0,
      direct: (flags & 2) !== 0,
      retained: (flags & 4) !== 0,
      replay: (flags & 8) !== 0,
      dup: (flags & 16) !== 0,
    };
    const delivery = token ?? null;
    for (const op of handlers) {
      const sub = this._handlers.get(op);
      if (sub) sub._deliver(message, delivery);
      else if (delivery !== null) this._driver.completeDelivery(delivery, undefined);
    }
  }

  _event(event) {
    switch (event.type) {
      case 'state': {
        this.state = event.state;
        if (event.state === 'connected') this.clientId = event.clientId;
        const change = { state: event.state };
        if (event.attempt !== undefined) change.attempt = event.attempt;
        if (event.reason !== undefined) change.reason = event.reason;
        if (event.error) change.error = toError(event.error);
        this._emit('state', change);
        if (event.state === 'closed') {
          for (const sub of this._handlers.values()) sub._end();
          this._resolveClosed(change);
        }
        break;
      }
      case 'completed': {
        const waiter = this._ops.get(event.op);
        if (!waiter) break;
        this._ops.delete(event.op);
        if (event.error) waiter.reject(toError(event.error));
        else waiter.resolve(event.outcome);
        break;
      }
      case 'ack': {
        const entry = this._acks.get(event.op);
        if (!entry) break;
        entry.handle._update(event.snapshot);
        const known = event.snapshot.expected !== null;
        const finished = event.snapshot.finished !== null;
        if (entry.pending && (known || finished)) {
          entry.pending = false;
          if (finished && !known && event.snapshot.finished === 'failed') {
            entry.reject(toError(event.snapshot.error));
          } else {
            entry.resolve(entry.handle);
          }
        }
        if (finished) this._acks.delete(event.op);
        break;
      }
      case 'notRecovered':
        this._emit('notRecovered', { filter: event.filter });
        break;
      case 'deadLetter':
        this._emit('deadLetter', { mid: event.mid, topic: event.topic, clientId: event.clientId });
        break;
      case 'error':
        this._emit('error', toError(event.error));
        break;
      default:
        break;
    }
  }

  on(name, listener) {
    if (!this._listeners.has(name)) this._listeners.set(name, new Set());
    this._listeners.get(name).add(listener);
    return () => this.off(name, listener);
  }

  off(name, listener) {
    this._listeners.get(name)?.delete(listener);
  }

  _ready() {
    return new Promise((resolve, reject) => {
      const off = this.on('state', (change) => {
        if (change.state === 'connected') {
          off();
          resolve(this);
        } else if (change.state === 'closed') {
          off();
          reject(change.error ?? new SealbusError(0, 'closed', 'the client is closed'));
        }
      });
    });
  }

  async subscribe(filter, handler) {
    const sub = new Subscription(this, filter, handler ?? null);
    const op = call(() => this._driver.subscribe(filter));
    sub._op = op;
    this._handlers.set(op, sub);
    try {
      await this._await(op);
    } catch (err) {
      this._handlers.delete(op);
      throw err;
    }
    return sub;
  }

  async onDirect(handler) {
    const sub = new Subscription(this, null, handler ?? null);
    sub._op = call(() => this._driver.registerDirect());
    this._handlers.set(sub._op, sub);
    return sub;
  }

  async unsubscribe(filter) {
    for (const op of call(() => this._driver.handlers(filter))) {
      this._handlers.get(op)?._end();
      this._handlers.delete(op);
    }
    await this._await(call(() => this._driver.unsubscribeFilter(filter)));
  }

  _publish(target, data, options, direct, ackTimeoutMs) {
    const o = options ?? {};
    return call(() =>
      this._driver.publish(target, data, o.qos ?? 0, o.retain ?? false, o.encrypt ?? true, direct, ackTimeoutMs),
    );
  }

  async publish(topic, data, options) {
    return this._await(this._publish(topic, data, options, false, undefined));
  }

  async publishToId(clientId, data, options) {
    return this._await(this._publish(clientId, data, options, true, undefined));
  }

  _withAck(target, data, options, direct) {
    const timeout = options?.timeoutMs ?? this.ackTimeoutMs;
    const op = this._publish(target, data, options, direct, timeout);
    const handle = new AckHandle(this, op);
    return new Promise((resolve, reject) => {
      this._acks.set(op, { handle, pending: true, resolve, reject });
    });
  }

  async publishWithAck(topic, data, options) {
    return this._withAck(topic, data, options, false);
  }

  async publishToIdWithAck(clientId, data, options) {
    return this._withAck(clientId, data, options, true);
  }

  async deliveryStatus(mid) {
    return this._await(call(() => this._driver.deliveryStatus(mid)));
  }

  get limits() {
    return this._driver.limits();
  }

  async close(options) {
    if (this.state !== 'closed') call(() => this._driver.close(options?.discard ?? false));
    await this._closed;
  }
}

/** Builds the public API over one loaded wasm module. */
export function createSdk(wasm) {
  Client._Driver = wasm.Driver;
  return {
    SealbusError,
    Client,
    Subscription,
    AckHandle,
    connect: (options) => Client.connect(options),
    generateKey: () => call(() => wasm.generateKey()),
    openEnvelope: (key, topic, envelope) => call(() => wasm.openEnvelope(key, topic, envelope)),
    sealEnvelope: (key, topic, plaintext) => call(() => wasm.sealEnvelope(key, topic, plaintext)),
  };
}
