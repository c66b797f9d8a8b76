/**
 * `startInstances(definition, handlers, { count })`: a group of real node:http instances of a
 * service on loopback, for integration tests and the retry-storm lab. Each has server-side
 * counts, can be stopped and started on the same port, and takes faults (`chaos`).
 */
import type { Server } from 'node:http';
import { type Client, type ClientOptions, createClient } from '../client/index.js';
import { invalidOption, TelescopeError } from '../core/errors.js';
import type { DeadlineServerOptions } from '../server/index.js';
import type { ServiceDefinition } from '../service/index.js';
import type { ChaosOptions } from './chaos.js';
import { checkHandlers } from './fake.js';
import { seededRandom } from './random.js';
import { track, untrack } from './registry.js';
import type { AnyHandlers, ServiceHandlers } from './router.js';
import { type RequestCounts, ServiceServer } from './server.js';

/** Options of {@link startInstances}. */
export interface StartInstancesOptions {
  /** How many instances. @default 1 */
  count?: number;
  /** Address every instance listens on. @default '127.0.0.1' */
  host?: string;
  /** Seed of the chaos random sources (instance `i` gets `seed + i`). @default Math.random */
  seed?: number;
  /**
   * Run handlers inside the caller's deadline (`telescope-http/server` middleware); `false` to
   * ignore the header. @default {} (maxMs 30000)
   */
  deadlines?: DeadlineServerOptions | false;
  /** Request bodies larger than this are answered 413. @default 1048576 */
  maxBodyBytes?: number;
}

/** One instance of a group. */
export interface TestInstance<S extends ServiceDefinition> {
  readonly index: number;
  /** Origin, e.g. `http://127.0.0.1:40123`; the same after `stop()`/`start()`. */
  readonly url: string;
  /** Whether it accepts connections (false after `stop()` or under `refuse`). */
  readonly running: boolean;
  /** The node:http server. */
  readonly server: Server;
  /** Sets faults on this instance; no argument clears them. Resolves once in effect. */
  chaos(options?: ChaosOptions): Promise<void>;
  /** Down: the listener closes (connection refused on this port) and every socket is destroyed. */
  stop(): Promise<void>;
  /** Up again on the same port. */
  start(): Promise<void>;
  /** Server-side counts of this instance. */
  requests(): RequestCounts;
  /** Replaces the handlers of the endpoints given, on this instance only. */
  handle(handlers: ServiceHandlers<S>): this;
  /** Sockets open on the server side. */
  openConnections(): number;
}

/** A running group of instances of service `S`. */
export interface InstanceGroup<S extends ServiceDefinition> {
  readonly service: S;
  /** Every instance's origin, in order: `createClient(def, { instances: group.instances })`. */
  readonly instances: readonly string[];
  /** The instance at `index` (0-based). */
  instance(index: number): TestInstance<S>;
  /** Server-side counts, one entry per instance, in order. */
  requests(): RequestCounts[];
  /** Zeroes every instance's counts. */
  resetRequests(): void;
  /** Sets the same faults on every instance (each draws from its own random source). */
  chaos(options?: ChaosOptions): Promise<void>;
  /** Handler contract violations on any instance (see `FakeService.errors`). */
  readonly errors: readonly Error[];
  /** A client of the whole group; closed with the group. */
  client(options?: Omit<ClientOptions, 'instances' | 'discovery'>): Client<S>;
  /** Closes every instance (sockets destroyed) and every client from `client()`. Idempotent. */
  close(): Promise<void>;
}

/**
 * Starts `count` real node:http instances of `definition` on loopback, answering with
 * `handlers` (or `(index) => handlers`, for instances that differ). Routing, validation and
 * response checks are those of `fakeService`.
 *
 * @example
 * const group = await startInstances(movies, { getMovie: ({ id }) => ({ id, title: 'Heat' }) }, { count: 3 });
 * await group.instance(1).chaos({ hang: true });
 * const client = group.client({ attemptTimeoutMs: 150 });
 * await client.getMovie({ id: 1 });
 * group.requests();   // [{ url, total, byEndpoint: { getMovie: 1 }, … }, …]
 * await group.close();
 */
export async function startInstances<S extends ServiceDefinition>(
  definition: S,
  handlers: ServiceHandlers<S> | ((index: number) => ServiceHandlers<S>),
  options: StartInstancesOptions = {},
): Promise<InstanceGroup<S>> {
  const count = options.count ?? 1;
  if (!(Number.isInteger(count) && count >= 1 && count <= 256)) {
    invalidOption('startInstances count', 'an integer from 1 to 256', count);
  }
  const host = options.host ?? '127.0.0.1';
  if (typeof host !== 'string' || host.length === 0) invalidOption('startInstances host', 'an address', host);
  if (options.seed !== undefined && !Number.isFinite(options.seed)) {
    invalidOption('startInstances seed', 'a finite number', options.seed);
  }
  const maxBodyBytes = options.maxBodyBytes ?? 1024 * 1024;
  if (!(Number.isInteger(maxBodyBytes) && maxBodyBytes > 0)) {
    invalidOption('startInstances maxBodyBytes', 'a positive integer', maxBodyBytes);
  }
  const servers: ServiceServer[] = [];
  for (let index = 0; index < count; index++) {
    const own = typeof handlers === 'function' ? handlers(index) : handlers;
    checkHandlers(definition, own);
    servers.push(
      new ServiceServer({
        definition,
        handlers: { ...(own as AnyHandlers) },
        index,
        random: options.seed === undefined ? Math.random : seededRandom(options.seed + index),
        deadlines: options.deadlines ?? {},
        maxBodyBytes,
      }),
    );
  }
  try {
    await Promise.all(servers.map((server) => server.listenOn(host)));
  } catch (error) {
    await Promise.all(servers.map((server) => server.close()));
    throw error;
  }
  const instances = Object.freeze(servers.map((server) => server.url));
  const views = servers.map((server, index): TestInstance<S> => {
    const view: TestInstance<S> = {
      index,
      url: server.url,
      get running() {
        return server.running;
      },
      server: server.server,
      chaos: (chaosOptions) => server.setChaos(chaosOptions),
      stop: () => server.stop(),
      start: () => server.start(),
      requests: () => server.requests(),
      handle(more) {
        checkHandlers(definition, more);
        server.handlers = { ...server.handlers, ...(more as AnyHandlers) };
        return view;
      },
      openConnections: () => server.openConnections(),
    };
    return view;
  });
  const clients = new Set<Client<S>>();
  let closing: Promise<void> | undefined;
  const group: InstanceGroup<S> = {
    service: definition,
    instances,
    instance(index) {
      const view = views[index];
      if (view === undefined) {
        throw new TelescopeError('INVALID_OPTION', `instance(${index}): the group has instances 0 to ${count - 1}`);
      }
      return view;
    },
    requests: () => servers.map((server) => server.requests()),
    resetRequests() {
      for (const server of servers) server.resetRequests();
    },
    async chaos(chaosOptions) {
      await Promise.all(servers.map((server) => server.setChaos(chaosOptions)));
    },
    get errors() {
      return servers.flatMap((server) => server.errors);
    },
    client(clientOptions = {}) {
      const client = createClient(definition, { ...clientOptions, instances });
      clients.add(client);
      return client;
    },
    close() {
      closing ??= (async () => {
        untrack(group);
        await Promise.all([...clients].map((client) => client.close()));
        await Promise.all(servers.map((server) => server.close()));
      })();
      return closing;
    },
  };
  track(group);
  return group;
}
