/**
 * `fakeService(definition, handlers)`: an implementation of a service definition in this
 * process, for a dependency that does not exist yet or that a test wants to control.
 *
 * It is in-memory in the sense that matters (no other process, handlers are plain
 * functions), but the client talks to it over its normal transport: the fake is a real
 * node:http server on a loopback port, so connection pooling, deadlines, retries, timeouts
 * and chaos all behave as in production.
 */
import type { IncomingMessage } from 'node:http';
import { type Client, type ClientOptions, createClient } from '../client/index.js';
import { invalidOption } from '../core/errors.js';
import type { DeadlineServerOptions } from '../server/index.js';
import type { ServiceDefinition } from '../service/index.js';
import type { ChaosOptions } from './chaos.js';
import { seededRandom } from './random.js';
import { track, untrack } from './registry.js';
import type { AnyHandlers, ServiceHandlers } from './router.js';
import { type RequestCounts, ServiceServer } from './server.js';

/** One request a fake answered (requests answered by chaos are counted in `requests()` only). */
export interface FakeCall {
  /** The endpoint matched, or `undefined` (answered 404 or 405). */
  readonly endpoint: string | undefined;
  readonly method: string;
  /** Path and query string as received. */
  readonly url: string;
  /** Validated params and query values (the handler's first argument), when they were valid. */
  readonly params: unknown;
  /** Validated body (the handler's second argument), when it was valid. */
  readonly body: unknown;
  /** Status answered. */
  readonly status: number;
  /** Set when the handler broke its contract (see `FakeService.errors`). */
  readonly error: Error | undefined;
}

/** Options of {@link fakeService}. */
export interface FakeServiceOptions {
  /**
   * Run handlers inside the caller's deadline (`telescope-http/server` middleware), so their own
   * telescope calls inherit it; `false` to ignore the header. @default {} (maxMs 30000)
   */
  deadlines?: DeadlineServerOptions | false;
  /** Seed of the random source chaos draws from. @default Math.random */
  seed?: number;
  /** Faults from the start (see `chaos()`). */
  chaos?: ChaosOptions;
  /** Request bodies larger than this are answered 413. @default 1048576 */
  maxBodyBytes?: number;
  /** Told at once about each handler error (they are also kept in `errors`). */
  onError?: (error: Error) => void;
}

/** A running fake of service `S`. */
export interface FakeService<S extends ServiceDefinition> {
  readonly service: S;
  /** The fake's origin, e.g. `http://127.0.0.1:40123`. */
  readonly url: string;
  /** `[url]`, ready for `createClient(def, { instances: fake.instances })` as soon as `fakeService` returns. */
  readonly instances: readonly string[];
  /** Requests answered so far, in order. */
  readonly calls: readonly FakeCall[];
  /**
   * Handler contract violations so far: a response the response schema rejects (a
   * `ValidationError`, code `INVALID_RESPONSE`, naming the endpoint), a response that is not
   * JSON, a handler that threw anything but `httpError(...)`, a call to an endpoint without
   * a handler. Each was answered 500 (501 for a missing handler). A test that expects none
   * should check `expect(fake.errors).toEqual([])`.
   */
  readonly errors: readonly Error[];
  /** The node:http server, for anything the kit does not cover. */
  readonly server: import('node:http').Server;
  /** Replaces the handlers of the endpoints given (others keep theirs). */
  handle(handlers: ServiceHandlers<S>): this;
  /** A client of this fake; closed with the fake. */
  client(options?: Omit<ClientOptions, 'instances' | 'discovery'>): Client<S>;
  /** Sets faults (see `ChaosOptions`); no argument clears them. */
  chaos(options?: ChaosOptions): Promise<void>;
  /** Server-side counts. */
  requests(): RequestCounts;
  /** Forgets calls, errors and counts. */
  reset(): void;
  /** Closes the server (every socket destroyed) and the clients from `client()`. Idempotent. */
  close(): Promise<void>;
}

/**
 * Starts a fake of `definition` answering with `handlers`, typed from the schemas: each
 * handler gets the validated params and query values, the validated body and a context, and
 * returns the response, which is checked against the response schema.
 *
 * Synchronous: the fake listens before `fakeService` returns, so `fake.instances` can go
 * straight into `createClient`. It binds the unspecified address (the only synchronous bind
 * node:net offers) and destroys connections that do not come from loopback.
 *
 * @example
 * const fake = fakeService(movies, { getMovie: async ({ id }) => ({ id, title: 'Heat' }) });
 * const client = createClient(movies, { instances: fake.instances });
 * await client.getMovie({ id: 1 });   // { id: 1, title: 'Heat' }
 * await fake.close();
 */
export function fakeService<S extends ServiceDefinition>(
  definition: S,
  handlers: ServiceHandlers<S>,
  options: FakeServiceOptions = {},
): FakeService<S> {
  checkHandlers(definition, handlers);
  const maxBodyBytes = options.maxBodyBytes ?? 1024 * 1024;
  if (!(Number.isInteger(maxBodyBytes) && maxBodyBytes > 0)) {
    invalidOption('fakeService maxBodyBytes', 'a positive integer', maxBodyBytes);
  }
  let calls: FakeCall[] = [];
  const clients = new Set<Client<S>>();
  const server = new ServiceServer({
    definition,
    handlers: { ...(handlers as AnyHandlers) },
    index: 0,
    random: options.seed === undefined ? Math.random : seededRandom(options.seed),
    deadlines: options.deadlines ?? {},
    maxBodyBytes,
    onAnswer: (answer, request: IncomingMessage) => {
      calls.push({
        endpoint: answer.endpoint,
        method: request.method ?? 'GET',
        url: request.url ?? '/',
        params: answer.params,
        body: answer.requestBody,
        status: answer.status,
        error: answer.error,
      });
      if (answer.error !== undefined) options.onError?.(answer.error);
    },
  });
  if (options.chaos !== undefined) server.chaos.set(options.chaos);
  server.listenSync();
  if (server.chaos.refusing) void server.setChaos(options.chaos);
  const instances = Object.freeze([server.url]);
  let closing: Promise<void> | undefined;
  const fake: FakeService<S> = {
    service: definition,
    url: server.url,
    instances,
    get calls() {
      return calls;
    },
    get errors() {
      return server.errors;
    },
    server: server.server,
    handle(more) {
      checkHandlers(definition, more);
      server.handlers = { ...server.handlers, ...(more as AnyHandlers) };
      return this;
    },
    client(clientOptions = {}) {
      const client = createClient(definition, { ...clientOptions, instances });
      clients.add(client);
      return client;
    },
    chaos: (chaosOptions) => server.setChaos(chaosOptions),
    requests: () => server.requests(),
    reset() {
      calls = [];
      server.errors.length = 0;
      server.resetRequests();
    },
    close() {
      closing ??= (async () => {
        untrack(fake);
        await Promise.all([...clients].map((client) => client.close()));
        await server.close();
      })();
      return closing;
    },
  };
  track(fake);
  return fake;
}

/** Throws `INVALID_OPTION` for a handler of an unknown endpoint or one that is not a function. */
export function checkHandlers(definition: ServiceDefinition, handlers: unknown): void {
  if (typeof definition !== 'object' || definition === null || typeof definition.endpoints !== 'object') {
    invalidOption('service definition', 'the result of defineService()', definition);
  }
  if (typeof handlers !== 'object' || handlers === null) invalidOption('handlers', 'an object of functions', handlers);
  for (const [name, handler] of Object.entries(handlers)) {
    if (!(name in definition.endpoints)) {
      invalidOption(
        `handlers.${name}`,
        `an endpoint of ${definition.name} (${Object.keys(definition.endpoints).join(', ')})`,
        name,
      );
    }
    if (handler !== undefined && typeof handler !== 'function')
      invalidOption(`handlers.${name}`, 'a function', handler);
  }
}
