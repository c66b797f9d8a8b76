/**
 * Faults on real sockets. A {@link ChaosEngine} sits first on a node:http server's `request`
 * event and, per request, may hang it, delay it, answer 503 instead of the handler, cut the
 * connection halfway through the response, or trickle the response body. `refuse` closes the
 * listening socket (new connections are refused) and is undone by clearing it.
 *
 * Every instance of `startInstances` and every fake has its engine (`instance.chaos(opts)`);
 * `chaos(server, opts)` installs one on any node:http server (an Express or Fastify app's);
 * `chaosProxy(target, opts)` starts a loopback HTTP proxy with one, in front of any URL.
 */
import {
  createServer,
  request as httpRequest,
  type IncomingMessage,
  type OutgoingHttpHeaders,
  type Server,
  type ServerResponse,
} from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { ErrorCode, invalidOption, TelescopeError } from '../core/errors.js';
import { seededRandom } from './random.js';

/** What `chaos(...)` does to the requests of a server. Every field is off by default. */
export interface ChaosOptions {
  /** Accept each request and never answer it (the connection stays open until the caller gives up). */
  hang?: boolean;
  /** Delay before the request is handled: a number, or `[min, max]` drawn uniformly per request. */
  latencyMs?: number | readonly [min: number, max: number];
  /** Share of requests (0..1) answered `errorStatus` (503) without running the handler. */
  errorRate?: number;
  /** Status of `errorRate` answers. @default 503 */
  errorStatus?: number;
  /**
   * Share of requests (0..1; `true` = 1) whose connection is destroyed mid-response: the
   * handler runs, then the status line, headers and half the body are sent and the socket is
   * reset (an empty body: reset before any byte).
   */
  reset?: number | boolean;
  /** Send the response body at this many bytes per second (the headers go at once). */
  slowBodyBytesPerSecond?: number;
  /** Stop listening: new connections are refused, open ones are destroyed. Cleared by `chaos()`. */
  refuse?: boolean;
  /** Seed of the random source that draws `errorRate`, `reset` and latency ranges (reseeded on each call). */
  seed?: number;
  /** A random source of your own, in [0, 1); wins over `seed`. */
  random?: () => number;
  /** Only requests for which this returns true get faults; others pass through untouched. */
  match?: (request: IncomingMessage) => boolean;
}

/** Faults injected so far, by kind. */
export interface FaultCounts {
  hang: number;
  latency: number;
  error: number;
  reset: number;
  slow: number;
}

/** A fault applied to one request (for counters). */
export type Fault = keyof FaultCounts;

interface ResolvedChaos {
  readonly hang: boolean;
  readonly latency: readonly [number, number] | undefined;
  readonly errorRate: number;
  readonly errorStatus: number;
  readonly reset: number;
  readonly slow: number | undefined;
  readonly refuse: boolean;
  readonly match: ((request: IncomingMessage) => boolean) | undefined;
}

const rate = (name: string, value: unknown): number => {
  if (value === undefined || value === false) return 0;
  if (value === true && name === 'chaos reset') return 1;
  if (typeof value !== 'number' || !(value >= 0 && value <= 1)) invalidOption(name, 'a number from 0 to 1', value);
  return value;
};

const knownKeys = new Set([
  'hang',
  'latencyMs',
  'errorRate',
  'errorStatus',
  'reset',
  'slowBodyBytesPerSecond',
  'refuse',
  'seed',
  'random',
  'match',
]);

/** Checks chaos options; `undefined` when they inject nothing. Throws `INVALID_OPTION`. */
export function resolveChaos(options: ChaosOptions | undefined): ResolvedChaos | undefined {
  if (options === undefined) return undefined;
  if (typeof options !== 'object' || options === null) invalidOption('chaos options', 'an object', options);
  for (const key of Object.keys(options)) {
    if (!knownKeys.has(key)) invalidOption(`chaos option ${key}`, `one of ${[...knownKeys].join(', ')}`, key);
  }
  let latency: [number, number] | undefined;
  const latencyMs = options.latencyMs;
  if (latencyMs !== undefined) {
    const [min, max] = typeof latencyMs === 'number' ? [latencyMs, latencyMs] : [latencyMs[0], latencyMs[1]];
    if (!(Number.isFinite(min) && Number.isFinite(max) && min >= 0 && max >= min)) {
      invalidOption('chaos latencyMs', 'a finite number ≥ 0, or [min, max] with 0 ≤ min ≤ max', latencyMs);
    }
    if (max > 0) latency = [min, max];
  }
  const errorStatus = options.errorStatus ?? 503;
  if (!(Number.isInteger(errorStatus) && errorStatus >= 400 && errorStatus <= 599)) {
    invalidOption('chaos errorStatus', 'an integer from 400 to 599', errorStatus);
  }
  const slow = options.slowBodyBytesPerSecond;
  if (slow !== undefined && !(Number.isFinite(slow) && slow > 0)) {
    invalidOption('chaos slowBodyBytesPerSecond', 'a positive finite number', slow);
  }
  if (options.match !== undefined && typeof options.match !== 'function') {
    invalidOption('chaos match', 'a function', options.match);
  }
  if (options.random !== undefined && typeof options.random !== 'function') {
    invalidOption('chaos random', 'a function returning numbers in [0, 1)', options.random);
  }
  if (options.seed !== undefined && !Number.isFinite(options.seed)) {
    invalidOption('chaos seed', 'a finite number', options.seed);
  }
  const resolved: ResolvedChaos = {
    hang: options.hang === true,
    latency,
    errorRate: rate('chaos errorRate', options.errorRate),
    errorStatus,
    reset: rate('chaos reset', options.reset),
    slow,
    refuse: options.refuse === true,
    match: options.match,
  };
  const active =
    resolved.hang ||
    resolved.latency !== undefined ||
    resolved.errorRate > 0 ||
    resolved.reset > 0 ||
    resolved.slow !== undefined ||
    resolved.refuse;
  return active ? resolved : undefined;
}

/** Resets a socket (RST) where the platform can, else closes it. */
export function resetSocket(socket: Socket | null | undefined): void {
  if (socket === null || socket === undefined || socket.destroyed) return;
  if (typeof socket.resetAndDestroy === 'function') socket.resetAndDestroy();
  else socket.destroy();
}

type Callback = (error?: Error | null) => void;
/** `response.write` / `response.end`, called as `(chunk, callback?)` only. */
type Write = (this: ServerResponse, chunk: unknown, callback?: Callback) => unknown;
type End = (this: ServerResponse, chunk?: unknown, callback?: Callback) => unknown;

/**
 * The per-server fault injector. `handle(request, response, next)` either applies a fault or
 * calls `next()` (after the latency, with the body intercepted for `reset`/`slowBody`).
 */
export class ChaosEngine {
  #active: ResolvedChaos | undefined;
  #options: Readonly<ChaosOptions> | undefined;
  #random: () => number;
  readonly #timers = new Set<ReturnType<typeof setTimeout>>();
  readonly #hung = new Set<ServerResponse>();
  readonly faults: FaultCounts = { hang: 0, latency: 0, error: 0, reset: 0, slow: 0 };

  constructor(random: () => number = Math.random) {
    this.#random = random;
  }

  /** The options in effect (`undefined` when nothing is injected). */
  get options(): Readonly<ChaosOptions> | undefined {
    return this.#options;
  }

  /** Whether `refuse` is in effect. */
  get refusing(): boolean {
    return this.#active?.refuse === true;
  }

  /** Replaces the options (none: clear). Requests already hanging stay hung; their sockets close with the server. */
  set(options?: ChaosOptions): void {
    const resolved = resolveChaos(options);
    if (options?.random !== undefined) this.#random = options.random;
    else if (options?.seed !== undefined) this.#random = seededRandom(options.seed);
    this.#active = resolved;
    this.#options = resolved === undefined ? undefined : Object.freeze({ ...options });
  }

  /** Requests currently held by `hang`. */
  get hanging(): number {
    return this.#hung.size;
  }

  handle(request: IncomingMessage, response: ServerResponse, next: () => void, onFault?: (fault: Fault) => void): void {
    const active = this.#active;
    if (active === undefined || (active.match !== undefined && !active.match(request))) {
      next();
      return;
    }
    const count = (fault: Fault) => {
      this.faults[fault]++;
      onFault?.(fault);
    };
    if (active.hang) {
      count('hang');
      this.#hung.add(response);
      response.once('close', () => this.#hung.delete(response));
      // Drain the request body so a large upload cannot stall on flow control.
      request.resume();
      return;
    }
    // Draws happen in a fixed order, whatever their outcome, so a seed replays exactly.
    const failing = active.errorRate > 0 && this.#random() < active.errorRate;
    const resetting = active.reset > 0 && this.#random() < active.reset;
    const [min, max] = active.latency ?? [0, 0];
    const latency = max > min ? min + (max - min) * this.#random() : max;
    const proceed = () => {
      if (response.destroyed) return;
      if (failing) {
        count('error');
        request.resume();
        const body = JSON.stringify({
          error: 'CHAOS',
          message: `fault injected by telescope-http/testing chaos (errorRate ${active.errorRate})`,
        });
        response.writeHead(active.errorStatus, {
          'content-type': 'application/json',
          'content-length': Buffer.byteLength(body),
        });
        response.end(body);
        return;
      }
      if (resetting) {
        count('reset');
        this.#intercept(response, (body, _end, write) => {
          const socket = response.socket;
          if (body.length === 0) {
            resetSocket(socket);
            return;
          }
          write.call(response, body.subarray(0, Math.ceil(body.length / 2)), () => resetSocket(socket));
        });
      } else if (active.slow !== undefined) {
        count('slow');
        const bytesPerSecond = active.slow;
        this.#intercept(response, (body, end, write, callback) =>
          this.#trickle(response, body, bytesPerSecond, end, write, callback),
        );
      }
      next();
    };
    if (latency > 0) {
      count('latency');
      const timer = setTimeout(() => {
        this.#timers.delete(timer);
        response.off('close', cancel);
        proceed();
      }, latency);
      const cancel = () => {
        clearTimeout(timer);
        this.#timers.delete(timer);
      };
      this.#timers.add(timer);
      response.once('close', cancel);
      return;
    }
    proceed();
  }

  /** Buffers what the handler writes; `deliver` decides what reaches the socket at `end()`. */
  #intercept(
    response: ServerResponse,
    deliver: (body: Buffer, end: End, write: Write, callback: Callback | undefined) => void,
  ): void {
    const write = response.write as unknown as Write;
    const end = response.end as unknown as End;
    const chunks: Buffer[] = [];
    const collect = (chunk: unknown, encoding: unknown) => {
      if (chunk === undefined || chunk === null || typeof chunk === 'function') return;
      chunks.push(
        Buffer.isBuffer(chunk)
          ? chunk
          : chunk instanceof Uint8Array
            ? Buffer.from(chunk)
            : Buffer.from(String(chunk), typeof encoding === 'string' ? (encoding as BufferEncoding) : 'utf8'),
      );
    };
    response.write = ((chunk: unknown, encoding?: unknown, callback?: unknown) => {
      collect(chunk, encoding);
      const done = typeof encoding === 'function' ? encoding : callback;
      if (typeof done === 'function') queueMicrotask(() => (done as Callback)());
      return true;
    }) as ServerResponse['write'];
    response.end = ((chunk?: unknown, encoding?: unknown, callback?: unknown) => {
      collect(chunk, encoding);
      const done = [chunk, encoding, callback].find((value) => typeof value === 'function') as Callback | undefined;
      response.write = write as unknown as ServerResponse['write'];
      response.end = end as unknown as ServerResponse['end'];
      deliver(Buffer.concat(chunks), end, write, done);
      return response;
    }) as ServerResponse['end'];
  }

  #trickle(
    response: ServerResponse,
    body: Buffer,
    bytesPerSecond: number,
    end: End,
    write: Write,
    callback: Callback | undefined,
  ): void {
    const tickMs = Math.min(100, Math.max(10, 1000 / bytesPerSecond));
    const step = Math.max(1, Math.round((bytesPerSecond * tickMs) / 1000));
    let offset = 0;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const stop = () => {
      if (timer !== undefined) {
        clearTimeout(timer);
        this.#timers.delete(timer);
      }
    };
    response.once('close', stop);
    const send = () => {
      if (timer !== undefined) this.#timers.delete(timer);
      timer = undefined;
      if (response.destroyed) return;
      const slice = body.subarray(offset, offset + step);
      offset += slice.length;
      if (offset >= body.length) {
        response.off('close', stop);
        end.call(response, slice, () => callback?.());
        return;
      }
      write.call(response, slice);
      timer = setTimeout(send, tickMs);
      this.#timers.add(timer);
    };
    // The headers go out with the first slice at once; the rest follows at the given rate.
    if (body.length === 0) {
      end.call(response, undefined, () => callback?.());
      return;
    }
    send();
  }

  /** Stops pending latency and trickle timers and destroys hung requests' sockets. */
  dispose(): void {
    for (const timer of this.#timers) clearTimeout(timer);
    this.#timers.clear();
    for (const response of this.#hung) response.socket?.destroy();
    this.#hung.clear();
  }
}

// --- chaos(server, options) ----------------------------------------------------------------

/** Control of faults installed on a server by {@link chaos}. */
export interface Chaos {
  /** Replaces the faults; with no argument, clears them (and listens again after `refuse`). */
  set(options?: ChaosOptions): Promise<void>;
  /** The options in effect. */
  readonly options: Readonly<ChaosOptions> | undefined;
  /** Faults injected so far. */
  readonly faults: Readonly<FaultCounts>;
  /** Clears the faults and restores the server's own `request` listeners. */
  remove(): Promise<void>;
}

/** Listens on `port`/`host`; resolves once listening, rejects on a bind error. */
export function listen(server: Server, port: number, host: string | undefined): Promise<void> {
  return new Promise((resolve, reject) => {
    const onError = (error: Error) => {
      server.off('listening', onListening);
      reject(error);
    };
    const onListening = () => {
      server.off('error', onError);
      resolve();
    };
    server.once('error', onError);
    server.once('listening', onListening);
    if (host === undefined) server.listen({ port });
    else server.listen({ port, host });
  });
}

/**
 * Stops listening and destroys `sockets`. Resolves once the listening handle and every socket
 * handle are released (libuv closes handles in a later phase of the event loop), so that
 * nothing of the server is left when the promise settles.
 */
export async function stopListening(server: Server, sockets: Iterable<Socket>): Promise<void> {
  const released = [...sockets].map((socket) =>
    socket.closed ? undefined : new Promise<void>((resolve) => socket.once('close', () => resolve())),
  );
  const closed = server.listening ? new Promise<void>((resolve) => server.close(() => resolve())) : Promise.resolve();
  for (const socket of sockets) socket.destroy();
  server.closeAllConnections?.();
  await Promise.all([closed, ...released]);
  // The listening handle is released in the close phase of this loop iteration; two nested
  // setImmediate callbacks run after it.
  await new Promise<void>((resolve) => setImmediate(() => setImmediate(resolve)));
}

/**
 * Installs faults on any node:http server (plain, Express's `app.listen()`, Fastify's
 * `fastify.server`): its `request` listeners are moved behind a {@link ChaosEngine}.
 * Listeners added later bypass it. For `startInstances` and fakes, use `instance.chaos()`.
 *
 * @example
 * const faults = chaos(server, { latencyMs: 200, errorRate: 0.3, seed: 7 });
 * await faults.set({ hang: true });
 * await faults.remove();
 */
export function chaos(server: Server, options?: ChaosOptions): Chaos {
  if (typeof server?.listeners !== 'function' || typeof server.listen !== 'function') {
    invalidOption('chaos server', 'a node:http Server', server);
  }
  const engine = new ChaosEngine();
  engine.set(options);
  const own = server.listeners('request') as Array<(request: IncomingMessage, response: ServerResponse) => void>;
  const sockets = new Set<Socket>();
  const track = (socket: Socket) => {
    sockets.add(socket);
    socket.once('close', () => sockets.delete(socket));
  };
  const onRequest = (request: IncomingMessage, response: ServerResponse) =>
    engine.handle(request, response, () => {
      for (const listener of own) listener.call(server, request, response);
    });
  server.removeAllListeners('request');
  server.on('request', onRequest);
  server.on('connection', track);
  let where: { port: number; host: string } | undefined;
  let removed = false;
  let queue: Promise<void> = Promise.resolve();
  const reconcile = (): Promise<void> => {
    const run = queue.then(async () => {
      const address = server.address();
      if (address !== null && typeof address === 'object') {
        where = { port: (address as AddressInfo).port, host: (address as AddressInfo).address };
      }
      if (engine.refusing && server.listening) await stopListening(server, sockets);
      else if (!engine.refusing && !server.listening && where !== undefined)
        await listen(server, where.port, where.host);
    });
    queue = run.catch(() => {});
    return run;
  };
  const control: Chaos = {
    set(next) {
      if (removed) throw new TelescopeError(ErrorCode.INVALID_OPTION, 'chaos was removed from this server');
      engine.set(next);
      return reconcile();
    },
    get options() {
      return engine.options;
    },
    get faults() {
      return { ...engine.faults };
    },
    async remove() {
      if (removed) return;
      engine.set(undefined);
      await reconcile();
      removed = true;
      engine.dispose();
      server.off('request', onRequest);
      server.off('connection', track);
      for (const listener of own) server.on('request', listener);
    },
  };
  if (engine.refusing) void reconcile();
  return control;
}

// --- chaosProxy(target, options) -------------------------------------------------------------

/** A loopback HTTP proxy with faults, from {@link chaosProxy}. */
export interface ChaosProxy extends Omit<Chaos, 'remove'> {
  /** The proxy's origin: give it to clients instead of the target's. */
  readonly url: string;
  /** Requests that reached the proxy. */
  requests(): number;
  /** Stops the proxy and destroys its connections. */
  close(): Promise<void>;
}

/**
 * Starts an HTTP proxy on 127.0.0.1 in front of `target` (an origin such as
 * `http://127.0.0.1:8080`, or a real service), with faults applied to the requests it
 * relays. Each request is relayed on a fresh upstream connection.
 *
 * @example
 * const proxy = await chaosProxy(movies.url, { latencyMs: 150 });
 * const client = createClient(movies, { instances: [proxy.url] });
 */
export async function chaosProxy(target: string, options?: ChaosOptions): Promise<ChaosProxy> {
  let upstream: URL;
  try {
    upstream = new URL(target);
  } catch {
    return invalidOption('chaosProxy target', 'an http:// origin', target);
  }
  if (upstream.protocol !== 'http:') invalidOption('chaosProxy target', 'an http:// origin', target);
  resolveChaos(options);
  let count = 0;
  const relays = new Set<ReturnType<typeof httpRequest>>();
  const server = createServer((request, response) => {
    count++;
    const headers: OutgoingHttpHeaders = { ...request.headers, host: upstream.host, connection: 'close' };
    const relay = httpRequest(
      {
        protocol: upstream.protocol,
        hostname: upstream.hostname,
        port: upstream.port,
        method: request.method,
        path: request.url,
        headers,
        agent: false,
      },
      (answer) => {
        const out: OutgoingHttpHeaders = { ...answer.headers };
        delete out.connection;
        delete out['keep-alive'];
        response.writeHead(answer.statusCode ?? 502, out);
        answer.pipe(response);
      },
    );
    relays.add(relay);
    relay.once('close', () => relays.delete(relay));
    relay.on('error', (error) => {
      if (response.headersSent) {
        response.destroy(error);
        return;
      }
      const body = JSON.stringify({ error: 'BAD_GATEWAY', message: `chaosProxy: ${error.message}` });
      response.writeHead(502, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
      response.end(body);
    });
    response.once('close', () => {
      if (!response.writableFinished) relay.destroy();
    });
    request.pipe(relay);
  });
  const faults = chaos(server);
  await listen(server, 0, '127.0.0.1');
  const port = (server.address() as AddressInfo).port;
  const sockets = new Set<Socket>();
  server.on('connection', (socket) => {
    sockets.add(socket);
    socket.once('close', () => sockets.delete(socket));
  });
  let closing: Promise<void> | undefined;
  const proxy: ChaosProxy = {
    url: `http://127.0.0.1:${port}`,
    set: (next) => faults.set(next),
    get options() {
      return faults.options;
    },
    get faults() {
      return faults.faults;
    },
    requests: () => count,
    close() {
      closing ??= (async () => {
        await faults.remove();
        for (const relay of relays) relay.destroy();
        await stopListening(server, sockets);
      })();
      return closing;
    },
  };
  await faults.set(options);
  return proxy;
}
