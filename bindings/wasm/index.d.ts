// Type declarations of the npm package `sealbus` (hand-written; the implementation is
// lib/sdk.js over the wasm module built from bindings/wasm/src).

/** Application data: any JSON value, or raw bytes as a `Uint8Array`. Each round-trips exactly. */
export type Data = null | boolean | number | string | Uint8Array | Data[] | { [key: string]: Data };

/** Options of {@link connect}. Give exactly one of `password` and `token`. */
export interface ClientOptions {
  /** Server WebSocket URL, e.g. `ws://127.0.0.1:7070/ws`. */
  url: string;
  /** Session name. */
  session: string;
  /** The session password. */
  password?: string;
  /** A client token signed for the session (instead of `password`). */
  token?: string;
  /** Requested client id; the server assigns one when absent. */
  clientId?: string;
  /** Ask the server to keep subscriptions and QoS 1 messages while this client is away. */
  persistent?: boolean;
  /** End-to-end encryption master key (standard base64, 32 bytes; see {@link generateKey}). */
  key?: string;
  /** Reconnect policy: exponential backoff with full jitter. */
  reconnect?: ReconnectOptions;
  /** Send a ping after this long without sending (default: the server's keep-alive). */
  keepaliveMs?: number;
  /** How long to wait for any frame after a ping (default: the keep-alive interval). */
  keepaliveTimeoutMs?: number;
  /** Publishes kept while disconnected (default 1000); one more fails with `offline_buffer_full`. */
  offlineBuffer?: number;
  /** How long a request may wait for its answer (default 10000 ms). */
  requestTimeoutMs?: number;
  /** Default timeout of {@link Client.publishWithAck} (default 5000 ms). */
  ackTimeoutMs?: number;
}

/** How the client reconnects after a connection drops. */
export interface ReconnectOptions {
  /** Upper bound of the first delay in ms (default 250). */
  initialDelayMs?: number;
  /** Cap of the delay bound in ms (default 30000). */
  maxDelayMs?: number;
  /** Attempts after a drop before giving up; unlimited when absent. */
  maxAttempts?: number;
  /** Whether a failure of the very first connection is retried too (default false). */
  retryInitialConnect?: boolean;
}

/** Options of a publish. */
export interface PublishOptions {
  /** 0: fire and forget (default); 1: resolves when the server has stored the message. */
  qos?: 0 | 1;
  /** Keep as the topic's retained message (an empty payload clears it). */
  retain?: boolean;
  /** Seal with the client's key when it has one (default true); false publishes plain data. */
  encrypt?: boolean;
}

/** Options of {@link Client.publishWithAck}. */
export interface AckOptions extends PublishOptions {
  /** How long to collect responses (default: the client's `ackTimeoutMs`). */
  timeoutMs?: number;
}

/** What a publish resolved with. */
export interface PublishResult {
  /** The message id (absent for a QoS 0 publish the server did not answer). */
  mid: string | null;
  /** Offset in the session stream, when the server answered with one. */
  offset: number | null;
  /** The server had seen this message id before and did not deliver it again. */
  duplicate: boolean;
  /** A direct message was queued for a persistent client that is away. */
  queued: boolean;
}

/** The per-subscriber state of a QoS 1 message ({@link Client.deliveryStatus}). */
export interface DeliveryReport {
  /** The message id. */
  mid: string;
  /** The message's topic (`@client` for a direct message). */
  topic: string;
  /** One entry per subscriber the message was routed to. */
  copies: Array<{
    /** The subscriber's client id. */
    client: string;
    /** `pending` (stored, not written yet), `delivered` (written, not acknowledged), `acknowledged`, or `dead` (retries ran out). */
    state: 'pending' | 'delivered' | 'acknowledged' | 'dead';
    /** Deliveries made so far. */
    attempts: number;
  }>;
}

/** A message handed to a handler or an async iterator. */
export interface Message {
  /** The topic; `@<own client id>` for a direct message. */
  topic: string;
  /** The data, opened if it was sealed. */
  data: Data;
  /** The publisher's client id. */
  from: string;
  /** Server time of the publish, ms since the Unix epoch. */
  ts: number;
  /** Offset in the session stream (null for direct messages). */
  offset: number | null;
  /** The message id, when there is one. */
  mid: string | null;
  /** Quality of service of this copy. */
  qos: 0 | 1;
  /** Whether the data arrived sealed and was opened. */
  encrypted: boolean;
  /** Whether this is a direct message (publishToId). */
  direct: boolean;
  /** Sent because the filter matched the topic's retained message. */
  retained: boolean;
  /** Replayed from history while recovering after a reconnect. */
  replay: boolean;
  /** A redelivery of a QoS 1 copy the server did not see acknowledged. */
  dup: boolean;
}

/**
 * A message handler. Its message is acknowledged once it returns (or its promise settles):
 * successfully, or, when it throws or rejects, with an error response carrying the message.
 */
export type Handler = (message: Message, subscription: Subscription) => void | Promise<void>;

/** One subscriber's response to a publishWithAck. */
export interface AckReply {
  /** The responding client. */
  clientId: string;
  /** Whether its handler succeeded. */
  ok: boolean;
  /** The failure's numeric code (e.g. 6006 handler_failed), or null. */
  code: number | null;
  /** The failure's code name (`handler_failed`, `decrypt_failed`, `disconnected`, ...), or null. */
  codeName: string | null;
  /** The failure's message, or null. */
  error: string | null;
}

/** Why a publishWithAck stopped collecting. */
export type AckOutcome = 'complete' | 'timeout' | 'cancelled' | 'disconnected' | 'failed';

/** What a finished publishWithAck collected. */
export interface AckResult {
  /** The subscribers the server waited for. */
  expected: string[];
  /** Responses by client id. */
  responses: Record<string, AckReply>;
  /** Why it finished. */
  outcome: AckOutcome;
  /** The error when `outcome` is `failed`. */
  error: SealbusError | null;
}

/** A publishWithAck in progress. */
export declare class AckHandle {
  private constructor();
  /** The subscribers the server waits for. */
  readonly expected: string[];
  /** All responses once every one arrived, or what arrived by the timeout or cancel. */
  wait(): Promise<AckResult>;
  /** The first response, or null when it finished without any. */
  waitAny(): Promise<AckReply | null>;
  /** Every expected client id mapped to whether its response has arrived. */
  status(): Record<string, boolean>;
  /** Whether it finished (all answered, timed out, cancelled, disconnected or failed). */
  isComplete(): boolean;
  /** Finishes now with what arrived; wakes every waiter; later responses are ignored. Idempotent. */
  cancel(): void;
}

/** One handler registration on a filter (or on direct messages); also an async iterator. */
export declare class Subscription implements AsyncIterable<Message> {
  private constructor();
  /** The filter (null for direct messages). */
  readonly filter: string | null;
  /** Whether the last resubscribe recovered every missed message. */
  readonly recovered: boolean;
  /** Stops this registration; the server subscription ends with the filter's last one. */
  unsubscribe(): Promise<void>;
  /** Messages in arrival order (subscribe without a handler); breaking out unsubscribes. */
  [Symbol.asyncIterator](): AsyncIterator<Message>;
}

/** A connection state change. */
export interface StateChange {
  /** The new state. */
  state: 'connecting' | 'connected' | 'reconnecting' | 'disconnected' | 'closed';
  /** The reconnect attempt (for `reconnecting`). */
  attempt?: number;
  /** Why the connection dropped (for `disconnected`). */
  reason?: string;
  /** The fatal error that closed the client (for `closed`). */
  error?: SealbusError;
}

/** Events of {@link Client.on}. */
export interface ClientEvents {
  /** The connection state changed. */
  state: StateChange;
  /** After a reconnect, the server could not replay every message missed on `filter`. */
  notRecovered: { filter: string };
  /** A QoS 1 copy ran out of retries. */
  deadLetter: { mid: string; topic: string; clientId: string };
  /** An error not tied to one call (e.g. a message that could not be opened). */
  error: SealbusError;
}

/** A Sealbus client. Create one with {@link connect}. */
export declare class Client {
  private constructor();
  /** Connects; resolves once authenticated. Same as {@link connect}. */
  static connect(options: ClientOptions): Promise<Client>;
  /** The client id the server confirmed. */
  readonly clientId: string;
  /** The current connection state. */
  readonly state: StateChange['state'];
  /** The session's limits from the server. */
  readonly limits: { maxMessageBytes: number; maxFrameBytes: number };
  /** Listens to an event; returns a function that stops listening. */
  on<K extends keyof ClientEvents>(name: K, listener: (value: ClientEvents[K]) => void): () => void;
  /** Stops a listener. */
  off<K extends keyof ClientEvents>(name: K, listener: (value: ClientEvents[K]) => void): void;
  /**
   * Subscribes to `filter` (`+` one level, `#` the rest); resolves when the server confirms.
   * Without a handler, iterate the subscription with `for await`.
   */
  subscribe(filter: string, handler?: Handler): Promise<Subscription>;
  /** Registers a handler (or an async iterator) for direct messages sent to this client. */
  onDirect(handler?: Handler): Promise<Subscription>;
  /** Removes every handler of `filter`; an unknown filter is a no-op. */
  unsubscribe(filter: string): Promise<void>;
  /** Publishes to `topic`; QoS 0 resolves when sent (or buffered), QoS 1 when stored. */
  publish(topic: string, data: Data, options?: PublishOptions): Promise<PublishResult>;
  /** Sends directly to the client `clientId` of the same session. */
  publishToId(clientId: string, data: Data, options?: PublishOptions): Promise<PublishResult>;
  /** Publishes and collects each subscriber's response; resolves once the server said whom it waits for. */
  publishWithAck(topic: string, data: Data, options?: AckOptions): Promise<AckHandle>;
  /** {@link Client.publishToId} collecting the recipient's response. */
  publishToIdWithAck(clientId: string, data: Data, options?: AckOptions): Promise<AckHandle>;
  /**
   * Each subscriber's copy of a QoS 1 message this client published (`mid` from
   * {@link PublishResult.mid}), while the server holds it. Rejects with `code`
   * `unknown_message_id` for a message it does not hold, `disconnected` while offline.
   */
  deliveryStatus(mid: string): Promise<DeliveryReport>;
  /** Closes the client (`discard`: a persistent client's stored state is dropped too). */
  close(options?: { discard?: boolean }): Promise<void>;
}

/** An error from Sealbus, with the protocol's stable error code. */
export declare class SealbusError extends Error {
  /** Always `SealbusError`. */
  readonly name: 'SealbusError';
  /** The numeric code (docs/PROTOCOL.md §9), e.g. 2001. */
  readonly code: number;
  /** The code's name, e.g. `auth_failed`. */
  readonly codeName: string;
}

/** Connects to a Sealbus server; resolves once authenticated, rejects with a {@link SealbusError}. */
export declare function connect(options: ClientOptions): Promise<Client>;

/** A random 32-byte end-to-end encryption key as standard base64. */
export declare function generateKey(): string;

/**
 * Opens a sealed envelope (standard base64) for `topic` with the master key; returns the plaintext
 * bytes (for sealed client data a content-kind byte comes first). Throws a {@link SealbusError}
 * (`decrypt_failed`, `unknown_key_id`, `malformed_envelope`, `bad_base64`, `invalid_key`).
 */
export declare function openEnvelope(key: string, topic: string, envelope: string): Uint8Array;

/** Seals `plaintext` for `topic` with the master key and a random IV; returns standard base64. */
export declare function sealEnvelope(key: string, topic: string, plaintext: Uint8Array): string;
