/**
 * Transport: the innermost call. Sends one attempt to `context.instance` over an undici
 * `Pool` kept per instance (keep-alive), or with `http2` one HTTP/2 connection per instance
 * (h2.ts, on node:http2, speaking the same dispatch-handler contract);
 * buffers the body up to `maxResponseBytes` (after decompression, when `decompress` is on) and
 * decodes it by content type, or hands it over as a web stream for `responseType: 'stream'`;
 * maps every failure to a {@link TelescopeError}.
 *
 * Timeouts: the connect timeout is the connection's, per hop and short; the attempt's own deadline
 * (`context.attemptExpiresAt`, set by the attempt layer) is enforced through the clock's
 * shared timer wheel, so no timer or AbortSignal is created per call.
 */
import type { Dispatcher } from 'undici';
import type { Call, CallContext, IncomingResponse, OutgoingRequest } from '../core/call.js';
import { type Clock, systemClock, wheelOf } from '../core/clock.js';
import { ErrorCode, invalidOption, TelescopeError } from '../core/errors.js';
import { H2Origin } from './h2.js';
import { AttemptHandler, type HandlerSettings } from './handler.js';
import { type ConnectionSettings, freshHttp1Client, h1Pool, type OriginDispatcher } from './origin.js';
import { type TlsOptions, tlsConnectOptions } from './tls.js';

export { acceptEncoding, supportedCodings } from './decode.js';
export { mapTransportError } from './errors.js';
export { decodeBody, parseRetryAfter } from './handler.js';
export type { Pem, TlsOptions } from './tls.js';

/** Options of the undici transport. */
export interface TransportOptions {
  /** Time allowed to establish a TCP connection, per hop. @default 1000 */
  connectTimeoutMs?: number;
  /** Larger response bodies are aborted while streaming, never buffered. @default 10485760 (10 MiB) */
  maxResponseBytes?: number;
  /** Maximum sockets per instance; `null` for no limit (undici's default). @default null */
  connections?: number | null;
  /** How long an idle keep-alive socket is kept. @default 4000 */
  keepAliveTimeoutMs?: number;
  /**
   * TLS for `https://` instances: `ca` (PEM) to trust, `cert` and `key` to present (mTLS),
   * `servername`, `minVersion`. Certificates are always verified unless `insecureSkipVerify`.
   * @default Node's root CAs, no client certificate, TLS 1.2 or later
   */
  tls?: TlsOptions;
  /**
   * HTTP/2: over TLS negotiated by ALPN (an instance that offers only HTTP/1.1 gets it), and
   * h2c with prior knowledge for `http://` instances. One connection per instance carries
   * every attempt as a stream (`connections` does not apply). @default false
   */
  http2?: boolean;
  /**
   * Ask for compressed responses (`accept-encoding: gzip, deflate, br`, and `zstd` where this
   * Node has it) and decode them; `maxResponseBytes` bounds the decoded size. Off, the client
   * asks for `identity` and a compressed body is an `INVALID_RESPONSE`. @default false
   */
  decompress?: boolean;
  /** @default systemClock */
  clock?: Clock;
}

/** Resolved transport defaults. */
export const transportDefaults = {
  connectTimeoutMs: 1000,
  maxResponseBytes: 10 * 1024 * 1024,
  connections: null as number | null,
  keepAliveTimeoutMs: 4000,
  http2: false,
  decompress: false,
} as const;

/**
 * What a client needs from a transport: one attempt against `context.instance`, and a way to
 * stop. The undici {@link Transport} is one; the storm simulator's virtual network is another.
 */
export interface AttemptTransport {
  /** Sends one attempt to `context.instance`; rejects with a {@link TelescopeError}. */
  readonly call: Call;
  /** Fails calls in flight with `CLIENT_CLOSED` and releases everything. Idempotent. */
  close(): Promise<void>;
  /** Forgets one instance (discovery removed it); calls in flight may finish. */
  drop?(url: string): Promise<void>;
}

/** The transport: a call plus the pools behind it. */
export interface Transport extends AttemptTransport {
  readonly call: Call;
  /** Fails calls in flight with `CLIENT_CLOSED` and closes every socket. Idempotent. */
  close(): Promise<void>;
  /** Closes and forgets the pool of one instance (e.g. when discovery removes it). */
  drop(url: string): Promise<void>;
  /** Number of instance pools currently open. */
  readonly poolCount: number;
}

/**
 * Creates the undici transport.
 *
 * @example
 * const { call, close } = transport({ connectTimeoutMs: 500 });
 */
export function transport(options: TransportOptions = {}): Transport {
  const connectTimeoutMs = positiveOption(
    'connectTimeoutMs',
    options.connectTimeoutMs,
    transportDefaults.connectTimeoutMs,
  );
  const maxResponseBytes = positiveOption(
    'maxResponseBytes',
    options.maxResponseBytes,
    transportDefaults.maxResponseBytes,
  );
  const keepAliveTimeoutMs = positiveOption(
    'keepAliveTimeoutMs',
    options.keepAliveTimeoutMs,
    transportDefaults.keepAliveTimeoutMs,
  );
  const connections = options.connections ?? null;
  if (connections !== null && !(Number.isInteger(connections) && connections > 0)) {
    invalidOption('connections', 'a positive integer or null', connections);
  }
  for (const name of ['http2', 'decompress'] as const) {
    if (options[name] !== undefined && typeof options[name] !== 'boolean')
      invalidOption(name, 'a boolean', options[name]);
  }
  const settings: ConnectionSettings = {
    connectTimeoutMs,
    connections,
    keepAliveTimeoutMs,
    tls: tlsConnectOptions(options.tls),
    http2: options.http2 ?? transportDefaults.http2,
  };
  const handlerSettings: HandlerSettings = {
    maxResponseBytes,
    decompress: options.decompress ?? transportDefaults.decompress,
  };
  const clock = options.clock ?? systemClock;
  const wheel = wheelOf(clock);
  const pools = new Map<string, OriginDispatcher>();
  const freshClients = new Set<OriginDispatcher>();
  let closed = false;

  function poolFor(url: string): OriginDispatcher {
    let pool = pools.get(url);
    if (pool === undefined) {
      pool = settings.http2 ? new H2Origin(url, settings) : h1Pool(url, settings);
      pools.set(url, pool);
    }
    return pool;
  }

  const call: Call = (request: OutgoingRequest, context: CallContext): Promise<IncomingResponse> => {
    const instance = context.instance;
    if (closed || instance === undefined) return Promise.reject(cannotSend(closed, context));
    const handler = new AttemptHandler(request, context, instance.url, handlerSettings, wheel);
    if (context.callerAborted) {
      handler.handleEvent();
      return handler.promise;
    }
    handler.arm();
    if (context.freshConnection) {
      dispatchOnFreshConnection(instance.url, request, handler);
      return handler.promise;
    }
    poolFor(instance.url).dispatch(
      { path: request.path, method: request.method, headers: request.headers, body: wireBody(request) },
      handler,
    );
    return handler.promise;
  };

  /**
   * A retry that must go to an instance already tried (the only one left) goes over a new
   * connection: the pooled one may be the broken part. Failure path only.
   */
  function dispatchOnFreshConnection(url: string, request: OutgoingRequest, handler: AttemptHandler): void {
    const client: OriginDispatcher = settings.http2 ? new H2Origin(url, settings) : freshHttp1Client(url, settings);
    freshClients.add(client);
    const release = () => {
      freshClients.delete(client);
      void client.destroy();
    };
    // After the body too: a streamed response still reads from this connection.
    handler.onFinished = release;
    client.dispatch(
      { path: request.path, method: request.method, headers: request.headers, body: wireBody(request) },
      handler,
    );
  }

  return {
    call,
    get poolCount() {
      return pools.size;
    },
    async close() {
      if (closed) return;
      closed = true;
      const all = [...pools.values(), ...freshClients];
      pools.clear();
      freshClients.clear();
      // undici fails each pending request with UND_ERR_DESTROYED, mapped per call to CLIENT_CLOSED.
      await Promise.all(all.map((pool) => pool.destroy()));
    },
    async drop(url) {
      const pool = pools.get(url);
      if (pool === undefined) return;
      pools.delete(url);
      // Let calls in flight finish; new calls get a fresh pool.
      await pool.close();
    },
  };
}

/**
 * Why a transport cannot send an attempt: it is closed (`CLIENT_CLOSED`), or no balancer chose
 * an instance (`INVALID_OPTION`, a stack built without one). Shared by every transport.
 */
export function cannotSend(closed: boolean, context: CallContext): TelescopeError {
  return closed
    ? new TelescopeError(ErrorCode.CLIENT_CLOSED, 'client is closed', {
        service: context.service,
        endpoint: context.endpoint,
      })
    : new TelescopeError(ErrorCode.INVALID_OPTION, 'no instance chosen for the attempt', {
        service: context.service,
        endpoint: context.endpoint,
      });
}

/** undici sends async iterables (a one-shot body) as they are read; its types do not say so. */
function wireBody(request: OutgoingRequest): Dispatcher.DispatchOptions['body'] {
  return (request.body ?? null) as Dispatcher.DispatchOptions['body'];
}

function positiveOption(name: string, value: number | undefined, fallback: number): number {
  if (value === undefined) return fallback;
  if (typeof value !== 'number' || !Number.isFinite(value) || value <= 0) {
    invalidOption(name, 'a positive finite number', value);
  }
  return value;
}
