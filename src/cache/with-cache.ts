/**
 * `withCache(client, options)`: a read-through cache around a typed client, in two tiers.
 *
 * Read path: local (in-process LRU of decoded, frozen values) → remote (a shared store of JSON
 * envelopes: memory, Redis, memcached or your own) → the service. A remote hit fills the local
 * tier; a service answer is put in the local tier at once and written to the remote tier behind
 * the caller's back (a failed write is logged and counted, never seen by the caller).
 *
 * - Concurrent misses of one key share one service call in a process; with `lease`, one process
 *   at a time refreshes a key (Redis `SET NX PX`) while the others wait briefly or serve stale.
 * - Stale-while-revalidate inside `staleMs`: the stale value is served at once and refreshed in
 *   the background (coalesced). Stale-if-error inside `staleIfErrorMs`: when the service is
 *   unavailable (circuit open, deadline, transport, 5xx, bulkhead, no instance) the stale value
 *   is served and marked `stale-if-error`.
 * - Every remote operation has its own short timeout, cut to half the call's remaining budget;
 *   a failure or timeout is a miss, and a call whose remote read failed does not write back.
 * - `invalidate()` deletes the key everywhere and publishes it (not the value) on the
 *   invalidation bus, so every process drops its local copy.
 * - Freshness is computed on the injectable clock (anchored to the wall clock once, so that
 *   `storedAt` means the same in every process).
 */
import { AsyncLocalStorage } from 'node:async_hooks';
import { randomUUID } from 'node:crypto';
import { LRUCache } from 'lru-cache';
import type { CallOptions, Client, ClientEvents } from '../client/index.js';
import type { Logger } from '../core/call.js';
import { channels } from '../core/channels.js';
import { type Clock, sleep, systemClock, type WheelEntry, wheelOf } from '../core/clock.js';
import { Deadline } from '../core/deadline.js';
import { ErrorCode, HttpStatusError, invalidOption, isTelescopeError, TelescopeError } from '../core/errors.js';
import { currentDeadline } from '../deadline/index.js';
import { fallbackApplies } from '../fallback/index.js';
import { type ClientStats, type LatencySummary, RollingHistogram } from '../observe/index.js';
import type {
  BodyArgs,
  Endpoint,
  EndpointMethod,
  ParamsArgs,
  ResponseOf,
  ServiceDefinition,
} from '../service/index.js';
import { decodeEnvelope, deepFreeze, type Entry, encodeEnvelope, makeEntry, notPlainJson } from './envelope.js';
import { memoryCache } from './memory.js';
import {
  DEFAULT_REMOTE_TIMEOUT_MS,
  type InvalidationBus,
  type RemoteCache,
  RemoteCacheError,
  type RemoteOperationOptions,
} from './remote.js';

// --- public types ------------------------------------------------------------------------------

/** What a key function gets: the method's arguments without the call options. */
export type CacheKeyArgs<E extends Endpoint> = [...ParamsArgs<E>, ...BodyArgs<E>];

/** How one endpoint is cached. */
export interface EndpointCacheOptions<E extends Endpoint = Endpoint> {
  /** How long an answer is fresh, in milliseconds (a jitter of up to `jitter` × ttl is taken off). Required, > 0. */
  ttlMs: number;
  /** After `ttlMs`, how long a stale answer is served at once while it is refreshed in the background. @default 0 */
  staleMs?: number;
  /** After `ttlMs`, how long a stale answer may stand in for a service that is unavailable. @default staleMs */
  staleIfErrorMs?: number;
  /** The cache key, from the method's arguments (options excluded). @default stable JSON of the arguments */
  key?: (...args: CacheKeyArgs<E>) => string;
  /** Caches 404 answers for this long (negative caching); 0 leaves them uncached. @default 0 */
  negativeTtlMs?: number;
}

/** The in-process tier. */
export interface LocalTierOptions {
  /** Most entries kept (least recently used go first). @default 1000 */
  maxEntries?: number;
  /**
   * Longest time an entry is served from this process without asking the remote tier again,
   * in milliseconds: bounds how long processes can disagree when an invalidation is missed.
   * Not applied when there is no remote tier. @default 5000
   */
  ttlMs?: number;
}

/** Cross-process refresh lease (needs a remote tier with `acquireLease`: Redis, memcached, memory). */
export interface LeaseOptions {
  /** Lifetime of a lease: longer than a service call takes. @default 2000 */
  ttlMs?: number;
  /** How long a process that did not get the lease waits for the holder's answer before calling the service itself. @default 200 */
  waitMs?: number;
  /** How often it looks while waiting. @default 20 */
  pollMs?: number;
}

/** Options of {@link withCache}. */
export interface CacheOptions<S extends ServiceDefinition = ServiceDefinition> {
  /** The endpoints to cache, with their TTLs and keys; the others pass through unchanged. */
  endpoints: { readonly [K in keyof S['endpoints']]?: EndpointCacheOptions<S['endpoints'][K]> };
  /** The in-process tier, or `false` for none. @default { maxEntries: 1000, ttlMs: 5000 } */
  local?: LocalTierOptions | false;
  /** The shared tier: `memoryCache()`, `redisCache()`, `memcachedCache()` or your own; `false` for none. @default memoryCache() */
  remote?: RemoteCache | false;
  /** Where invalidations are published; `false` for nowhere. @default the remote tier's bus (Redis pub/sub, memory) */
  bus?: InvalidationBus | false;
  /** One process refreshes a key at a time; `true` for the defaults. @default false */
  lease?: LeaseOptions | boolean;
  /** Prefix of every remote key. @default `telescope:<service name>:` */
  namespace?: string;
  /** Fraction of the TTL taken off at random so that entries written together expire apart. @default 0.1 */
  jitter?: number;
  /** Whether `close()` closes the remote tier too (false when several clients share one). @default true */
  closeRemote?: boolean;
  /** A pino logger (or the same shape): remote failures, stale-if-error serves. @default silent */
  logger?: Logger;
  /** Time source of TTLs, timeouts and waits. @default systemClock */
  clock?: Clock;
  /** Random source of the TTL jitter. @default Math.random */
  random?: () => number;
}

export const cacheDefaults = {
  localMaxEntries: 1000,
  localTtlMs: 5000,
  jitter: 0.1,
  lease: { ttlMs: 2000, waitMs: 200, pollMs: 20 },
  remoteTimeoutMs: DEFAULT_REMOTE_TIMEOUT_MS,
  /** Remote writes in flight at once; more are dropped (and counted). */
  maxPendingWrites: 1000,
} as const;

/**
 * Where a result came from: the local tier, the remote tier, the service, a stale value served
 * while it is refreshed, a stale value served because the service failed, or an endpoint that
 * is not cached.
 */
export type CacheStatus = 'local' | 'remote' | 'service' | 'stale-while-revalidate' | 'stale-if-error' | 'bypass';

/** What `withMetadata` resolves to. */
export interface CacheResult<T> {
  value: T;
  cacheStatus: CacheStatus;
  /** True when this call shared another call's request (in this process, or waited on another process's lease). */
  coalesced: boolean;
  /** The remote key; undefined for endpoints that are not cached. */
  key: string | undefined;
  /** Age of the value in milliseconds (0 when it comes straight from the service). */
  ageMs: number;
  /** For `stale-if-error`: the service's error the stale value stands in for. */
  error?: unknown;
}

/** One event per cached call, on `on('cache', …)`. */
export interface CacheEvent {
  service: string;
  endpoint: string;
  key: string;
  cacheStatus: Exclude<CacheStatus, 'bypass'>;
  coalesced: boolean;
  /** A cached 404 (negative caching); the call rejected with it. */
  negative: boolean;
  /** The service's fallback answered; it was not cached. */
  fallback: boolean;
  ageMs: number;
  /** For `stale-if-error`: the error the stale value stands in for. */
  error: unknown;
}

/** A failed remote operation, on `on('cache-error', …)`. Calls never see these errors. */
export interface CacheErrorEvent {
  service: string;
  operation: RemoteOperation;
  key: string | undefined;
  error: unknown;
}

/** Remote operations, as counted. */
export type RemoteOperation = 'get' | 'set' | 'delete' | 'lease' | 'publish';

/** Events of a cached client: the client's, plus `cache` and `cache-error`. */
export interface CachedClientEvents extends ClientEvents {
  cache: CacheEvent;
  'cache-error': CacheErrorEvent;
}

/**
 * Counters of one endpoint (totals since the cached client was made). Every cached call counts
 * in exactly one of hits.local, hits.remote, misses, staleWhileRevalidate, staleIfError,
 * coalesced and errors.
 */
export interface CacheCounters {
  hits: { local: number; remote: number };
  /** Calls that went to the service themselves. */
  misses: number;
  staleWhileRevalidate: number;
  staleIfError: number;
  /** Calls that shared another call's request (or waited on another process's lease). */
  coalesced: number;
  /** Calls that failed on the way (the service's errors, aborts, deadlines while waiting). */
  errors: number;
  /** Cached 404s served (counted as hits or coalesced too; the call rejects with the 404). */
  negativeHits: number;
  /** Fallback answers (never cached). */
  fallbacks: number;
  /** Background refreshes that reached the service, and those that failed. */
  refreshes: number;
  refreshErrors: number;
  /** Remote entries that were not a valid envelope for their key (treated as misses, overwritten). */
  corrupt: number;
  /** Service answers that are not plain JSON (served, not cached). */
  uncacheable: number;
  invalidations: number;
  leases: { acquired: number; contended: number; waitHits: number };
}

/** `stats().cache`. */
export interface CacheStats {
  service: string;
  totals: CacheCounters;
  endpoints: Record<string, CacheCounters>;
  local: { entries: number; maxEntries: number } | undefined;
  remote:
    | {
        name: string;
        errors: Record<RemoteOperation, number>;
        /** Of those errors, timeouts. */
        timeouts: number;
        /** Remote operations skipped because the call's budget was nearly spent. */
        skipped: number;
        /** Writes dropped because too many were in flight. */
        droppedWrites: number;
        pendingWrites: number;
        /** Latency of remote reads over the last 10 s. */
        latency: LatencySummary;
      }
    | undefined;
}

/** What `invalidate()` did. */
export interface InvalidateResult {
  key: string;
  /** Whether the remote delete succeeded (undefined without a remote tier). */
  remoteDeleted: boolean | undefined;
  /** Whether the key was published on the bus (undefined without a bus). */
  published: boolean | undefined;
}

type MetadataMethod<E extends Endpoint> = (
  ...args: Parameters<EndpointMethod<E, CallOptions>>
) => Promise<CacheResult<ResponseOf<E>>>;

/** The cached client: the client's own type, plus metadata, invalidation, cache events and stats. */
export type CachedClient<S extends ServiceDefinition> = Omit<Client<S>, 'on' | 'stats'> & {
  /** The same methods, resolving to `{ value, cacheStatus, coalesced, key, ageMs }`. */
  readonly withMetadata: { readonly [K in keyof S['endpoints']]: MetadataMethod<S['endpoints'][K]> };
  /** The wrapped client (uncached). */
  readonly client: Client<S>;
  /** Drops a key from every tier, and from every process's local tier through the bus. */
  invalidate<K extends keyof S['endpoints'] & string>(
    endpoint: K,
    ...args: CacheKeyArgs<S['endpoints'][K]>
  ): Promise<InvalidateResult>;
  /** Listens to the client's events and to `cache` / `cache-error`; returns a function that stops listening. */
  on<E extends keyof CachedClientEvents>(event: E, listener: (payload: CachedClientEvents[E]) => void): () => void;
  /** The client's stats, plus `cache`. */
  stats(): ClientStats & { cache: CacheStats };
};

/** Members a cached client adds; an endpoint may not have these names. */
const cachedMembers = new Set(['withMetadata', 'client', 'invalidate']);

// --- internals ---------------------------------------------------------------------------------

interface EndpointState {
  readonly name: string;
  readonly method: (...args: unknown[]) => Promise<unknown>;
  readonly keyArgCount: number;
  readonly definitionTimeoutMs: number | undefined;
  readonly hasFallback: boolean;
  readonly ttlMs: number;
  readonly staleMs: number;
  readonly staleIfErrorMs: number;
  readonly negativeTtlMs: number;
  readonly key: ((...args: unknown[]) => unknown) | undefined;
  /** namespace + endpoint + ':' */
  readonly prefix: string;
  readonly counters: CacheCounters;
}

interface Outcome {
  readonly entry: Entry;
  readonly status: Exclude<CacheStatus, 'bypass'>;
  readonly waited: boolean;
  /** Rejects the callers with this (the service's 404 when it was just cached as negative). */
  readonly reject?: unknown;
  /** The error a stale-if-error value stands in for. */
  readonly error?: unknown;
  readonly fallback?: boolean;
  /** A stale remote value was served: refresh it in the background. */
  readonly refresh?: boolean;
}

interface Flight {
  promise: Promise<Outcome>;
  readonly background: boolean;
  /** The leader's budget (foreground flights). */
  readonly deadline: Deadline | undefined;
  /** Aborts the shared request once every waiter that can abort has (only when the leader had a signal). */
  readonly controller: AbortController | undefined;
  waiters: number;
  /** Set when the key is invalidated while the flight runs: its answer is not stored. */
  invalidated: boolean;
}

const FAILED: unique symbol = Symbol('remote operation failed');
type Failed = typeof FAILED;

class Timer implements WheelEntry {
  wheelSlot = -1;
  wheelPrev: WheelEntry | null = null;
  wheelNext: WheelEntry | null = null;
  constructor(readonly onTimer: () => void) {}
}

function newCounters(): CacheCounters {
  return {
    hits: { local: 0, remote: 0 },
    misses: 0,
    staleWhileRevalidate: 0,
    staleIfError: 0,
    coalesced: 0,
    errors: 0,
    negativeHits: 0,
    fallbacks: 0,
    refreshes: 0,
    refreshErrors: 0,
    corrupt: 0,
    uncacheable: 0,
    invalidations: 0,
    leases: { acquired: 0, contended: 0, waitHits: 0 },
  };
}

function addCounters(into: CacheCounters, from: CacheCounters): void {
  into.hits.local += from.hits.local;
  into.hits.remote += from.hits.remote;
  into.misses += from.misses;
  into.staleWhileRevalidate += from.staleWhileRevalidate;
  into.staleIfError += from.staleIfError;
  into.coalesced += from.coalesced;
  into.errors += from.errors;
  into.negativeHits += from.negativeHits;
  into.fallbacks += from.fallbacks;
  into.refreshes += from.refreshes;
  into.refreshErrors += from.refreshErrors;
  into.corrupt += from.corrupt;
  into.uncacheable += from.uncacheable;
  into.invalidations += from.invalidations;
  into.leases.acquired += from.leases.acquired;
  into.leases.contended += from.leases.contended;
  into.leases.waitHits += from.leases.waitHits;
}

function cloneCounters(counters: CacheCounters): CacheCounters {
  const copy = newCounters();
  addCounters(copy, counters);
  return copy;
}

/** JSON with object keys sorted, so `{ a, b }` and `{ b, a }` make the same key. */
function stableStringify(value: unknown): string {
  if (value === undefined) return 'undefined';
  return JSON.stringify(value, (_key, item: unknown) => {
    if (typeof item === 'bigint') return `${item}n`;
    if (typeof item !== 'object' || item === null || Array.isArray(item)) return item;
    const sorted: Record<string, unknown> = {};
    for (const name of Object.keys(item).sort()) sorted[name] = (item as Record<string, unknown>)[name];
    return sorted;
  });
}

function describeValue(value: unknown): string {
  if (typeof value === 'string') return value === '' ? 'an empty string' : JSON.stringify(value.slice(0, 60));
  if (value === null || typeof value !== 'object') return String(value);
  return Array.isArray(value) ? 'an array' : 'an object';
}

function nonNegative(name: string, value: number | undefined, fallback: number): number {
  if (value === undefined) return fallback;
  if (typeof value !== 'number' || !Number.isFinite(value) || value < 0) {
    invalidOption(name, 'a finite number ≥ 0', value);
  }
  return value;
}

function positive(name: string, value: number | undefined, fallback: number): number {
  if (value === undefined) return fallback;
  if (typeof value !== 'number' || !Number.isFinite(value) || value <= 0) {
    invalidOption(name, 'a positive finite number', value);
  }
  return value;
}

// --- withCache ---------------------------------------------------------------------------------

/**
 * Wraps a client with a two-tier read-through cache. Only the endpoints listed in
 * `options.endpoints` are cached; every other method is the client's own.
 *
 * @example
 * const cachedMovies = withCache(moviesClient, {
 *   local: { maxEntries: 10_000 },
 *   remote: redisCache({ url: 'redis://127.0.0.1:6379', timeoutMs: 50 }),
 *   endpoints: { getMovie: { ttlMs: 60_000, staleMs: 600_000, key: (p) => `movie:${p.id}` } },
 * });
 * await cachedMovies.getMovie({ id: 7 });
 * const { value, cacheStatus } = await cachedMovies.withMetadata.getMovie({ id: 7 });
 * await cachedMovies.invalidate('getMovie', { id: 7 });
 */
export function withCache<S extends ServiceDefinition>(client: Client<S>, options: CacheOptions<S>): CachedClient<S> {
  if (typeof client !== 'object' || client === null || typeof client.service?.endpoints !== 'object') {
    invalidOption('withCache client', 'a client made by createClient', client);
  }
  if (typeof options !== 'object' || options === null) invalidOption('withCache options', 'an object', options);
  const service = client.service;
  if (typeof options.endpoints !== 'object' || options.endpoints === null) {
    invalidOption('withCache endpoints', 'an object of endpoint names to { ttlMs, … }', options.endpoints);
  }
  for (const name of Object.keys(service.endpoints)) {
    if (cachedMembers.has(name)) invalidOption(`endpoint name ${name}`, 'not a member of cached clients', name);
  }
  const clock = options.clock ?? systemClock;
  const random = options.random ?? Math.random;
  if (typeof random !== 'function') invalidOption('withCache random', 'a function', random);
  const jitter = nonNegative('withCache jitter', options.jitter, cacheDefaults.jitter);
  if (jitter >= 1) invalidOption('withCache jitter', 'a fraction in [0, 1)', jitter);
  const namespace = options.namespace ?? `telescope:${service.name}:`;
  if (typeof namespace !== 'string') invalidOption('withCache namespace', 'a string', namespace);

  // Tiers.
  let localOptions: LocalTierOptions | undefined;
  if (options.local !== false) {
    localOptions = options.local ?? {};
    if (typeof localOptions !== 'object' || localOptions === null) {
      invalidOption('withCache local', 'an object or false', localOptions);
    }
  }
  const localMaxEntries = localOptions?.maxEntries ?? cacheDefaults.localMaxEntries;
  if (localOptions !== undefined && !(Number.isInteger(localMaxEntries) && localMaxEntries >= 1)) {
    invalidOption('withCache local.maxEntries', 'an integer ≥ 1', localMaxEntries);
  }
  const localTtlMs = positive('withCache local.ttlMs', localOptions?.ttlMs, cacheDefaults.localTtlMs);
  const local = localOptions === undefined ? undefined : new LRUCache<string, Entry>({ max: localMaxEntries });
  const remote: RemoteCache | undefined =
    options.remote === false ? undefined : (options.remote ?? memoryCache({ clock }));
  if (remote !== undefined) {
    for (const method of ['get', 'set', 'delete', 'close'] as const) {
      if (typeof remote[method] !== 'function') {
        invalidOption('withCache remote', 'a RemoteCache (get, set, delete, close)', remote);
      }
    }
  }
  if (local === undefined && remote === undefined) invalidOption('withCache local and remote', 'not both false', false);
  const remoteTimeoutMs = positive('remote timeoutMs', remote?.timeoutMs, cacheDefaults.remoteTimeoutMs);
  const bus: InvalidationBus | undefined = options.bus === false ? undefined : (options.bus ?? remote?.bus);
  if (bus !== undefined && (typeof bus.publish !== 'function' || typeof bus.subscribe !== 'function')) {
    invalidOption('withCache bus', 'an InvalidationBus (publish, subscribe) or false', bus);
  }
  let lease: Required<LeaseOptions> | undefined;
  if (options.lease !== undefined && options.lease !== false) {
    const given = options.lease === true ? {} : options.lease;
    if (typeof given !== 'object' || given === null)
      invalidOption('withCache lease', 'true, false or an object', given);
    lease = {
      ttlMs: positive('withCache lease.ttlMs', given.ttlMs, cacheDefaults.lease.ttlMs),
      waitMs: nonNegative('withCache lease.waitMs', given.waitMs, cacheDefaults.lease.waitMs),
      pollMs: positive('withCache lease.pollMs', given.pollMs, cacheDefaults.lease.pollMs),
    };
    if (typeof remote?.acquireLease !== 'function') {
      invalidOption(
        'withCache lease',
        'used with a remote tier that has acquireLease (Redis, memcached, memory)',
        remote?.name,
      );
    }
  }
  const closeRemote = options.closeRemote ?? true;
  const logger = options.logger?.child({ service: service.name, component: 'cache' });

  // Endpoints.
  const endpoints = new Map<string, EndpointState>();
  for (const [name, config] of Object.entries(options.endpoints as Record<string, EndpointCacheOptions | undefined>)) {
    if (config === undefined) continue;
    const definition = service.endpoints[name] as Endpoint | undefined;
    if (definition === undefined) {
      invalidOption(`withCache endpoints.${name}`, `an endpoint of ${service.name}`, name);
    }
    if (typeof config !== 'object' || config === null)
      invalidOption(`endpoints.${name}`, 'an object { ttlMs, … }', config);
    if (config.ttlMs === undefined) invalidOption(`endpoints.${name}.ttlMs`, 'a positive finite number', undefined);
    const ttlMs = positive(`endpoints.${name}.ttlMs`, config.ttlMs, 0);
    const staleMs = nonNegative(`endpoints.${name}.staleMs`, config.staleMs, 0);
    const staleIfErrorMs = nonNegative(`endpoints.${name}.staleIfErrorMs`, config.staleIfErrorMs, staleMs);
    const negativeTtlMs = nonNegative(`endpoints.${name}.negativeTtlMs`, config.negativeTtlMs, 0);
    if (config.key !== undefined && typeof config.key !== 'function') {
      invalidOption(`endpoints.${name}.key`, 'a function returning a string', config.key);
    }
    const method = (client as unknown as Record<string, unknown>)[name];
    if (typeof method !== 'function') invalidOption(`withCache client.${name}`, 'a method', method);
    endpoints.set(name, {
      name,
      method: method as (...args: unknown[]) => Promise<unknown>,
      keyArgCount:
        (definition.params !== undefined || definition.query !== undefined ? 1 : 0) +
        (definition.body !== undefined ? 1 : 0),
      definitionTimeoutMs: definition.timeoutMs,
      hasFallback: definition.hasFallback === true,
      ttlMs,
      staleMs,
      staleIfErrorMs,
      negativeTtlMs,
      key: config.key as EndpointState['key'],
      prefix: `${namespace}${name}:`,
      counters: newCounters(),
    });
  }

  // State.
  const origin = randomUUID();
  let leaseSequence = 0;
  const anchorWall = Date.now();
  const anchorMono = clock.now();
  /** Epoch milliseconds on the injectable clock. */
  const epochNow = () => anchorWall + (clock.now() - anchorMono);
  const unbounded = new Deadline(Number.POSITIVE_INFINITY, clock);
  const inflight = new Map<string, Flight>();
  const background = new Set<Promise<unknown>>();
  const pendingWrites = new Map<string, Promise<void>>();
  let pendingWriteCount = 0;
  const remoteStats = {
    errors: { get: 0, set: 0, delete: 0, lease: 0, publish: 0 } as Record<RemoteOperation, number>,
    timeouts: 0,
    skipped: 0,
    droppedWrites: 0,
    latency: new RollingHistogram(clock, 10_000),
  };
  const cacheListeners = new Set<(event: CacheEvent) => void>();
  const errorListeners = new Set<(event: CacheErrorEvent) => void>();
  const lastLogged = new Map<string, { at: number; suppressed: number }>();
  const fallbackMarks = new AsyncLocalStorage<{ endpoint: string; fellBack: boolean; code: string | undefined }>();
  let closed = false;
  let closing: Promise<void> | undefined;

  let stopFallbackListener: (() => void) | undefined;
  if ([...endpoints.values()].some((endpoint) => endpoint.hasFallback) && typeof client.on === 'function') {
    stopFallbackListener = client.on('fallback', (event) => {
      const mark = fallbackMarks.getStore();
      if (mark !== undefined && mark.endpoint === event.endpoint && !event.failed) {
        mark.fellBack = true;
        mark.code = event.code;
      }
    });
  }

  // The bus: drop what other processes invalidated.
  let unsubscribe: Promise<(() => Promise<void>) | undefined> | undefined;
  if (bus !== undefined && local !== undefined) {
    unsubscribe = bus
      .subscribe(
        (message) => {
          let parsed: { o?: unknown; k?: unknown };
          try {
            parsed = JSON.parse(message);
          } catch {
            return;
          }
          if (parsed?.o === origin || !Array.isArray(parsed?.k)) return;
          for (const key of parsed.k) if (typeof key === 'string') dropLocal(key);
        },
        () => local.clear(),
      )
      .catch((error: unknown) => {
        logLimited('subscribe', 'warn', { err: (error as Error)?.message }, 'invalidation bus unavailable');
        return undefined;
      });
  }

  // --- helpers -------------------------------------------------------------------------------

  function logLimited(
    kind: string,
    level: 'warn' | 'error' | 'info',
    fields: Record<string, unknown>,
    message: string,
  ) {
    if (logger === undefined) return;
    const now = clock.now();
    const last = lastLogged.get(kind);
    if (last !== undefined && now - last.at < 1000) {
      last.suppressed++;
      return;
    }
    logger[level](last?.suppressed ? { ...fields, suppressed: last.suppressed } : fields, message);
    lastLogged.set(kind, { at: now, suppressed: 0 });
  }

  /** Calls listeners; one that throws is logged and never changes the call's outcome. */
  function notify<T>(listeners: Set<(event: T) => void>, event: T): void {
    for (const listener of listeners) {
      try {
        listener(event);
      } catch (error) {
        logLimited(
          'listener',
          'error',
          { err: (error as Error)?.message ?? String(error) },
          'cache event listener threw',
        );
      }
    }
  }

  function dropLocal(key: string): void {
    local?.delete(key);
    const flight = inflight.get(key);
    if (flight !== undefined) flight.invalidated = true;
  }

  function jittered(ms: number): number {
    return Math.max(1, Math.round(ms * (1 - jitter * random())));
  }

  function retainMs(endpoint: EndpointState, entry: Entry): number {
    return entry.notFound === undefined ? Math.max(endpoint.staleMs, endpoint.staleIfErrorMs) : 0;
  }

  function localGet(key: string, endpoint: EndpointState, now: number): Entry | undefined {
    const entry = local?.get(key);
    if (entry === undefined) return undefined;
    if (now >= entry.freshUntil + retainMs(endpoint, entry)) {
      local?.delete(key);
      return undefined;
    }
    return entry;
  }

  function localSet(key: string, entry: Entry): void {
    if (local === undefined) return;
    entry.localFreshUntil =
      remote === undefined ? entry.freshUntil : Math.min(entry.freshUntil, epochNow() + localTtlMs);
    local.set(key, entry);
  }

  function keyOf(endpoint: EndpointState, args: unknown[]): string {
    let raw: unknown;
    try {
      raw =
        endpoint.key === undefined
          ? args.length === 0
            ? '-'
            : stableStringify(args.length === 1 ? args[0] : args)
          : endpoint.key(...args);
    } catch (error) {
      throw new TelescopeError(
        ErrorCode.INVALID_OPTION,
        `cache key function of ${service.name}.${endpoint.name} threw: ${(error as Error)?.message ?? String(error)}`,
        { service: service.name, endpoint: endpoint.name, requestSent: false, cause: error },
      );
    }
    if (typeof raw !== 'string' || raw === '') {
      throw new TelescopeError(
        ErrorCode.INVALID_OPTION,
        `cache key function of ${service.name}.${endpoint.name} must return a non-empty string, got ${describeValue(raw)}`,
        { service: service.name, endpoint: endpoint.name, requestSent: false },
      );
    }
    return endpoint.prefix + raw;
  }

  function callDeadline(endpoint: EndpointState, callOptions: CallOptions | undefined): Deadline | undefined {
    let budget = callOptions?.deadline ?? currentDeadline();
    const timeoutMs = callOptions?.timeoutMs ?? endpoint.definitionTimeoutMs;
    if (typeof timeoutMs === 'number' && Number.isFinite(timeoutMs) && timeoutMs > 0) {
      budget = Deadline.min(Deadline.after(timeoutMs, clock), budget);
    }
    return budget;
  }

  function withTimeout<T>(promise: Promise<T>, ms: number): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      const timer = new Timer(() =>
        reject(new RemoteCacheError('REMOTE_TIMEOUT', `remote cache did not answer within ${Math.round(ms)} ms`)),
      );
      wheelOf(clock).schedule(timer, clock.now() + ms);
      promise.then(
        (value) => {
          wheelOf(clock).cancel(timer);
          resolve(value);
        },
        (error: unknown) => {
          wheelOf(clock).cancel(timer);
          reject(error);
        },
      );
    });
  }

  /** One remote operation: its own timeout (≤ half the call's remaining budget), errors counted, never thrown. */
  async function remoteCall<T>(
    operation: RemoteOperation,
    key: string | undefined,
    deadline: Deadline | undefined,
    run: (op: RemoteOperationOptions) => Promise<T>,
  ): Promise<T | Failed> {
    let limit = remoteTimeoutMs;
    if (deadline !== undefined) {
      const half = deadline.remainingMs() / 2;
      if (half < 1) {
        remoteStats.skipped++;
        return FAILED;
      }
      if (half < limit) limit = half;
    }
    const startedAt = clock.now();
    try {
      const result = await withTimeout(run({ timeoutMs: limit }), limit);
      if (operation === 'get') remoteStats.latency.record(clock.now() - startedAt);
      return result;
    } catch (error) {
      remoteStats.errors[operation]++;
      const timedOut = error instanceof RemoteCacheError && error.code === 'REMOTE_TIMEOUT';
      if (timedOut) remoteStats.timeouts++;
      if (operation === 'get') remoteStats.latency.record(clock.now() - startedAt);
      logLimited(
        `remote-${operation}`,
        'warn',
        { remote: remote?.name, operation, key, err: (error as Error)?.message ?? String(error) },
        `remote cache ${operation} failed`,
      );
      if (errorListeners.size > 0) notify(errorListeners, { service: service.name, operation, key, error });
      return FAILED;
    }
  }

  function track(promise: Promise<unknown>): void {
    background.add(promise);
    void promise.finally(() => background.delete(promise));
  }

  function releaseLease(key: string, token: string): void {
    if (remote?.releaseLease === undefined) return;
    const release = remote.releaseLease.bind(remote);
    track(remoteCall('lease', key, undefined, (op) => release(`${key}#lease`, token, op)));
  }

  /** Writes an entry to the remote tier behind the caller's back. */
  function writeBehind(key: string, entry: Entry, endpoint: EndpointState, leaseToken: string | undefined): void {
    const target = remote as RemoteCache;
    if (pendingWriteCount >= cacheDefaults.maxPendingWrites) {
      remoteStats.droppedWrites++;
      if (leaseToken !== undefined) releaseLease(key, leaseToken);
      return;
    }
    let payload: string;
    try {
      payload = encodeEnvelope(key, entry);
    } catch (error) {
      logLimited('encode', 'warn', { key, err: (error as Error)?.message }, 'cache entry could not be encoded');
      return;
    }
    const hardTtlMs = entry.ttl + retainMs(endpoint, entry);
    pendingWriteCount++;
    const write = remoteCall('set', key, undefined, (op) => target.set(key, payload, hardTtlMs, op)).then(() => {
      pendingWriteCount--;
      if (pendingWrites.get(key) === write) pendingWrites.delete(key);
      if (leaseToken !== undefined) releaseLease(key, leaseToken);
    });
    pendingWrites.set(key, write);
  }

  function store(
    key: string,
    entry: Entry,
    endpoint: EndpointState,
    flight: Flight,
    writeRemote: boolean,
    leaseToken: string | undefined,
  ) {
    if (flight.invalidated || closed) {
      if (leaseToken !== undefined) releaseLease(key, leaseToken);
      return;
    }
    localSet(key, entry);
    if (remote !== undefined && writeRemote) writeBehind(key, entry, endpoint, leaseToken);
    else if (leaseToken !== undefined) releaseLease(key, leaseToken);
  }

  async function callService(
    endpoint: EndpointState,
    args: unknown[],
    callOptions: CallOptions | undefined,
    flight: Flight,
  ): Promise<{ value: unknown; fellBack: boolean; code: string | undefined }> {
    const callArgs = args.slice(0, endpoint.keyArgCount);
    let passed: CallOptions | undefined;
    if (flight.background) {
      // Detached from the caller: its signal, deadline and ambient budget are not the refresh's.
      const { signal: _signal, deadline: _deadline, ...rest } = callOptions ?? {};
      passed = { ...rest, deadline: unbounded };
    } else if (callOptions !== undefined || flight.deadline !== undefined || flight.controller !== undefined) {
      const { signal: _signal, ...rest } = callOptions ?? {};
      passed = rest;
      if (flight.deadline !== undefined) passed.deadline = flight.deadline;
      if (flight.controller !== undefined) passed.signal = flight.controller.signal;
    }
    if (passed !== undefined) callArgs.push(passed);
    if (!endpoint.hasFallback) return { value: await endpoint.method(...callArgs), fellBack: false, code: undefined };
    const mark = { endpoint: endpoint.name, fellBack: false, code: undefined as string | undefined };
    const value = await fallbackMarks.run(mark, () => endpoint.method(...callArgs));
    return { value, fellBack: mark.fellBack, code: mark.code };
  }

  function staleIfError(
    endpoint: EndpointState,
    key: string,
    stale: Entry,
    error: unknown,
    background: boolean,
  ): Outcome {
    if (!background) {
      logLimited(
        `stale-if-error:${endpoint.name}`,
        'warn',
        {
          endpoint: endpoint.name,
          key,
          code: isTelescopeError(error) ? error.code : undefined,
          err: (error as Error)?.message ?? String(error),
          ageMs: Math.max(0, Math.round(epochNow() - stale.storedAt)),
        },
        'service failed; serving a stale cached value',
      );
    }
    return { entry: stale, status: 'stale-if-error', waited: false, error };
  }

  /** Waits for another process's lease holder to write the key. */
  async function waitForHolder(key: string, deadline: Deadline | undefined): Promise<Entry | undefined> {
    const options = lease as Required<LeaseOptions>;
    let waitMs = options.waitMs;
    if (deadline !== undefined) waitMs = Math.min(waitMs, deadline.remainingMs() / 2);
    const until = clock.now() + waitMs;
    const target = remote as RemoteCache;
    while (clock.now() + options.pollMs <= until && !closed) {
      await sleep(clock, options.pollMs);
      const read = await remoteCall('get', key, deadline, (op) => target.get(key, op));
      if (read === FAILED) return undefined;
      if (read === undefined) continue;
      const entry = decodeEnvelope(read, key);
      if (entry !== undefined && epochNow() < entry.freshUntil) return entry;
    }
    return undefined;
  }

  /** The work of a flight: remote tier, then (under a lease if configured) the service. */
  async function load(
    endpoint: EndpointState,
    key: string,
    args: unknown[],
    callOptions: CallOptions | undefined,
    localEntry: Entry | undefined,
    flight: Flight,
  ): Promise<Outcome> {
    const deadline = flight.deadline;
    let stale = localEntry !== undefined && localEntry.notFound === undefined ? localEntry : undefined;
    let readFailed = false;
    if (remote !== undefined) {
      const read = await remoteCall('get', key, deadline, (op) => remote.get(key, op));
      if (read === FAILED) {
        readFailed = true;
        // The remote tier is sick; a local entry still inside its own TTL is good enough.
        if (localEntry !== undefined && epochNow() < localEntry.freshUntil) {
          return { entry: localEntry, status: 'local', waited: false };
        }
      } else if (read !== undefined) {
        const entry = decodeEnvelope(read, key);
        if (entry === undefined) {
          endpoint.counters.corrupt++;
          logLimited(
            `corrupt:${endpoint.name}`,
            'warn',
            { endpoint: endpoint.name, key },
            'corrupt or foreign cache entry; treated as a miss',
          );
        } else {
          const now = epochNow();
          if (now < entry.freshUntil) {
            localSet(key, entry);
            return { entry, status: 'remote', waited: false };
          }
          if (entry.notFound === undefined) {
            if (!flight.background && now < entry.freshUntil + endpoint.staleMs) {
              localSet(key, entry);
              return { entry, status: 'stale-while-revalidate', waited: false, refresh: true };
            }
            if (stale === undefined || entry.storedAt > stale.storedAt) stale = entry;
          }
        }
      }
    }
    if (stale !== undefined && epochNow() >= stale.freshUntil + endpoint.staleIfErrorMs) stale = undefined;

    let leaseToken: string | undefined;
    if (lease !== undefined && !readFailed) {
      const token = `${origin}:${++leaseSequence}`;
      const target = remote as RemoteCache;
      const acquire = (target.acquireLease as NonNullable<RemoteCache['acquireLease']>).bind(target);
      const got = await remoteCall('lease', key, deadline, (op) => acquire(`${key}#lease`, token, lease.ttlMs, op));
      if (got === true) {
        leaseToken = token;
        endpoint.counters.leases.acquired++;
      } else if (got === false) {
        endpoint.counters.leases.contended++;
        // Another process is refreshing: a background refresh has nothing to do.
        const current = stale ?? localEntry;
        if (flight.background && current !== undefined) {
          return { entry: current, status: 'stale-while-revalidate', waited: false };
        }
        const entry = await waitForHolder(key, deadline);
        if (entry !== undefined) {
          endpoint.counters.leases.waitHits++;
          localSet(key, entry);
          return { entry, status: 'remote', waited: true };
        }
      }
    }

    let answer: { value: unknown; fellBack: boolean; code: string | undefined };
    try {
      answer = await callService(endpoint, args, callOptions, flight);
    } catch (error) {
      if (leaseToken !== undefined) releaseLease(key, leaseToken);
      if (endpoint.negativeTtlMs > 0 && error instanceof HttpStatusError && error.status === 404) {
        const entry = makeEntry(
          undefined,
          { status: 404, body: error.bodyExcerpt },
          epochNow(),
          jittered(endpoint.negativeTtlMs),
        );
        store(key, entry, endpoint, flight, !readFailed, undefined);
        return { entry, status: 'service', waited: false, reject: error };
      }
      if (stale !== undefined && fallbackApplies(error)) {
        return staleIfError(endpoint, key, stale, error, flight.background);
      }
      throw error;
    }
    if (answer.fellBack) {
      if (leaseToken !== undefined) releaseLease(key, leaseToken);
      if (stale !== undefined) {
        const error = new TelescopeError(
          (answer.code as ErrorCode | undefined) ?? ErrorCode.CONNECT_FAILED,
          `${service.name}.${endpoint.name} failed (${answer.code}); its fallback answered`,
          { service: service.name, endpoint: endpoint.name },
        );
        return staleIfError(endpoint, key, stale, error, flight.background);
      }
      return {
        entry: makeEntry(answer.value, undefined, epochNow(), 1),
        status: 'service',
        waited: false,
        fallback: true,
      };
    }
    const reason = notPlainJson(answer.value);
    if (reason !== undefined) {
      endpoint.counters.uncacheable++;
      if (leaseToken !== undefined) releaseLease(key, leaseToken);
      logLimited(
        `uncacheable:${endpoint.name}`,
        'warn',
        { endpoint: endpoint.name, key, reason },
        'service answer is not plain JSON; served but not cached',
      );
      return { entry: makeEntry(answer.value, undefined, epochNow(), 1), status: 'service', waited: false };
    }
    const entry = makeEntry(deepFreeze(answer.value), undefined, epochNow(), jittered(endpoint.ttlMs));
    store(key, entry, endpoint, flight, !readFailed, leaseToken);
    return { entry, status: 'service', waited: false };
  }

  function startFlight(
    endpoint: EndpointState,
    key: string,
    args: unknown[],
    callOptions: CallOptions | undefined,
    localEntry: Entry | undefined,
    isBackground: boolean,
  ): Flight {
    const flight: Flight = {
      promise: undefined as unknown as Promise<Outcome>,
      background: isBackground,
      deadline: isBackground ? undefined : callDeadline(endpoint, callOptions),
      controller: !isBackground && callOptions?.signal !== undefined ? new AbortController() : undefined,
      waiters: 0,
      invalidated: false,
    };
    flight.promise = load(endpoint, key, args, callOptions, localEntry, flight);
    inflight.set(key, flight);
    const settled = flight.promise.then(
      (outcome) => {
        if (inflight.get(key) === flight) inflight.delete(key);
        if (isBackground) {
          if (outcome.status === 'service') endpoint.counters.refreshes++;
          else if (outcome.status === 'stale-if-error') {
            endpoint.counters.refreshes++;
            endpoint.counters.refreshErrors++;
          }
        }
        if (outcome.refresh && !closed) refresh(endpoint, key, args, callOptions, outcome.entry);
      },
      (error: unknown) => {
        if (inflight.get(key) === flight) inflight.delete(key);
        if (isBackground) {
          endpoint.counters.refreshes++;
          endpoint.counters.refreshErrors++;
          logLimited(
            `refresh:${endpoint.name}`,
            'warn',
            { endpoint: endpoint.name, key, err: (error as Error)?.message ?? String(error) },
            'background refresh failed; the stale value stays',
          );
        }
      },
    );
    if (isBackground) track(settled);
    return flight;
  }

  function refresh(
    endpoint: EndpointState,
    key: string,
    args: unknown[],
    callOptions: CallOptions | undefined,
    entry: Entry,
  ): void {
    if (closed || inflight.has(key)) return;
    startFlight(endpoint, key, args, callOptions, entry, true);
  }

  /** A caller's wait on a flight, bounded by its own signal (and, for followers, its own deadline). */
  function wait(
    endpoint: EndpointState,
    flight: Flight,
    callOptions: CallOptions | undefined,
    coalesced: boolean,
  ): Promise<Outcome> {
    const signal = callOptions?.signal;
    let own = coalesced ? callDeadline(endpoint, callOptions) : undefined;
    if (own !== undefined && flight.deadline !== undefined && own.at >= flight.deadline.at) own = undefined;
    if (flight.controller !== undefined) flight.waiters++;
    if (signal === undefined && own === undefined) return flight.promise;
    const details = { service: service.name, endpoint: endpoint.name, requestSent: true };
    if (signal?.aborted) {
      leave(flight);
      return Promise.reject(
        new TelescopeError(ErrorCode.ABORTED, 'call aborted by the caller before it started', {
          ...details,
          requestSent: false,
          cause: signal.reason,
        }),
      );
    }
    return new Promise<Outcome>((resolve, reject) => {
      const ownSignal = own?.signal;
      const cleanup = () => {
        signal?.removeEventListener('abort', onAbort);
        ownSignal?.removeEventListener('abort', onDeadline);
      };
      const onAbort = () => {
        cleanup();
        leave(flight);
        reject(
          new TelescopeError(ErrorCode.ABORTED, 'call aborted by the caller', { ...details, cause: signal?.reason }),
        );
      };
      const onDeadline = () => {
        cleanup();
        leave(flight);
        reject(
          new TelescopeError(
            ErrorCode.DEADLINE_EXCEEDED,
            'deadline exceeded while waiting for a shared request',
            details,
          ),
        );
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      ownSignal?.addEventListener('abort', onDeadline, { once: true });
      flight.promise.then(
        (outcome) => {
          cleanup();
          resolve(outcome);
        },
        (error: unknown) => {
          cleanup();
          reject(error);
        },
      );
    });
  }

  function leave(flight: Flight): void {
    if (flight.controller === undefined) return;
    flight.waiters--;
    if (flight.waiters <= 0) flight.controller.abort(new Error('every caller waiting for this request aborted'));
  }

  /** Counts a result, emits its event, and gives the caller its value (or error). */
  function settle(
    endpoint: EndpointState,
    key: string,
    outcome: Outcome,
    coalesced: boolean,
    withMetadata: boolean,
  ): unknown {
    const { entry, status } = outcome;
    const counters = endpoint.counters;
    const negative = entry.notFound !== undefined && outcome.reject === undefined;
    if (coalesced) counters.coalesced++;
    else if (status === 'local') counters.hits.local++;
    else if (status === 'remote') counters.hits.remote++;
    else if (status === 'stale-while-revalidate') counters.staleWhileRevalidate++;
    else if (status === 'stale-if-error') counters.staleIfError++;
    else counters.misses++;
    if (negative) counters.negativeHits++;
    if (outcome.fallback) counters.fallbacks++;
    const ageMs = status === 'service' ? 0 : Math.max(0, epochNow() - entry.storedAt);
    if (cacheListeners.size > 0 || channels.clientEvent.hasSubscribers) {
      const event: CacheEvent = {
        service: service.name,
        endpoint: endpoint.name,
        key,
        cacheStatus: status,
        coalesced,
        negative,
        fallback: outcome.fallback === true,
        ageMs,
        error: outcome.error,
      };
      if (channels.clientEvent.hasSubscribers) {
        channels.clientEvent.publish({ service: service.name, event: 'cache', payload: event });
      }
      if (cacheListeners.size > 0) notify(cacheListeners, event);
    }
    if (outcome.reject !== undefined) throw outcome.reject;
    if (entry.notFound !== undefined) {
      throw new HttpStatusError(entry.notFound.status, entry.notFound.body, undefined, {
        service: service.name,
        endpoint: endpoint.name,
        requestSent: false,
      });
    }
    if (!withMetadata) return entry.value;
    const result: CacheResult<unknown> = { value: entry.value, cacheStatus: status, coalesced, key, ageMs };
    if (outcome.error !== undefined) result.error = outcome.error;
    return result;
  }

  function cachedMethod(endpoint: EndpointState, withMetadata: boolean) {
    const bypass = bypassMethod(endpoint.name, withMetadata);
    return (...args: unknown[]): Promise<unknown> => {
      // Wrong arity: the client reports it exactly as it would without the cache.
      if (args.length !== endpoint.keyArgCount && args.length !== endpoint.keyArgCount + 1) return bypass(...args);
      if (closed) {
        return Promise.reject(
          new TelescopeError(ErrorCode.CLIENT_CLOSED, 'client is closed', {
            service: service.name,
            endpoint: endpoint.name,
            requestSent: false,
          }),
        );
      }
      const keyArgs = args.length > endpoint.keyArgCount ? args.slice(0, endpoint.keyArgCount) : args;
      const callOptions = args[endpoint.keyArgCount] as CallOptions | undefined;
      try {
        const key = keyOf(endpoint, keyArgs);
        const now = epochNow();
        const entry = local === undefined ? undefined : localGet(key, endpoint, now);
        if (entry !== undefined) {
          if (now < entry.localFreshUntil) {
            return Promise.resolve(
              settle(endpoint, key, { entry, status: 'local', waited: false }, false, withMetadata),
            );
          }
          if (now >= entry.freshUntil && now < entry.freshUntil + endpoint.staleMs && entry.notFound === undefined) {
            refresh(endpoint, key, keyArgs, callOptions, entry);
            return Promise.resolve(
              settle(endpoint, key, { entry, status: 'stale-while-revalidate', waited: false }, false, withMetadata),
            );
          }
        }
        let flight = inflight.get(key);
        // A shared request every waiter gave up on is being aborted: do not join it.
        if (flight?.controller?.signal.aborted) flight = undefined;
        const coalesced = flight !== undefined;
        if (flight === undefined) flight = startFlight(endpoint, key, keyArgs, callOptions, entry, false);
        return wait(endpoint, flight, callOptions, coalesced).then(
          (outcome) => settle(endpoint, key, outcome, coalesced || outcome.waited, withMetadata),
          (error: unknown) => {
            endpoint.counters.errors++;
            throw error;
          },
        );
      } catch (error) {
        return Promise.reject(error);
      }
    };
  }

  function bypassMethod(name: string, withMetadata: boolean) {
    const method = (client as unknown as Record<string, (...args: unknown[]) => Promise<unknown>>)[name] as (
      ...args: unknown[]
    ) => Promise<unknown>;
    if (!withMetadata) return method;
    return (...args: unknown[]) =>
      method(...args).then(
        (value): CacheResult<unknown> => ({ value, cacheStatus: 'bypass', coalesced: false, key: undefined, ageMs: 0 }),
      );
  }

  // --- the cached client ------------------------------------------------------------------------

  const withMetadataMethods: Record<string, unknown> = {};
  const cached: Record<string, unknown> = {
    service,
    client,
    withMetadata: withMetadataMethods,
    retryTokens: () => client.retryTokens(),
    on(event: string, listener: (payload: never) => void): () => void {
      if (typeof listener !== 'function') invalidOption(`on('${String(event)}') listener`, 'a function', listener);
      if (event === 'cache' || event === 'cache-error') {
        const set = (event === 'cache' ? cacheListeners : errorListeners) as Set<unknown>;
        set.add(listener);
        return () => {
          set.delete(listener);
        };
      }
      return (client.on as (event: string, listener: (payload: never) => void) => () => void)(event, listener);
    },
    stats(): ClientStats & { cache: CacheStats } {
      const totals = newCounters();
      const perEndpoint: Record<string, CacheCounters> = {};
      for (const [name, endpoint] of endpoints) {
        addCounters(totals, endpoint.counters);
        perEndpoint[name] = cloneCounters(endpoint.counters);
      }
      return {
        ...client.stats(),
        cache: {
          service: service.name,
          totals,
          endpoints: perEndpoint,
          local: local === undefined ? undefined : { entries: local.size, maxEntries: localMaxEntries },
          remote:
            remote === undefined
              ? undefined
              : {
                  name: remote.name,
                  errors: { ...remoteStats.errors },
                  timeouts: remoteStats.timeouts,
                  skipped: remoteStats.skipped,
                  droppedWrites: remoteStats.droppedWrites,
                  pendingWrites: pendingWriteCount,
                  latency: remoteStats.latency.summary(),
                },
        },
      };
    },
    async invalidate(name: string, ...args: unknown[]): Promise<InvalidateResult> {
      const endpoint = endpoints.get(name);
      if (endpoint === undefined) invalidOption('invalidate endpoint', `a cached endpoint of ${service.name}`, name);
      const key = keyOf(endpoint, args.slice(0, endpoint.keyArgCount));
      endpoint.counters.invalidations++;
      dropLocal(key);
      // A write of this key still on its way would bring the old value back.
      await pendingWrites.get(key);
      let remoteDeleted: boolean | undefined;
      if (remote !== undefined) {
        remoteDeleted = (await remoteCall('delete', key, undefined, (op) => remote.delete(key, op))) !== FAILED;
      }
      let published: boolean | undefined;
      if (bus !== undefined) {
        // After the delete: a process that drops its copy must not read the old value back.
        const message = JSON.stringify({ o: origin, k: [key] });
        published = (await remoteCall('publish', key, undefined, () => bus.publish(message))) !== FAILED;
      }
      return { key, remoteDeleted, published };
    },
    close(): Promise<void> {
      closing ??= (async () => {
        closed = true;
        stopFallbackListener?.();
        const stop = await unsubscribe;
        await stop?.().catch(() => {});
        await client.close();
        await Promise.allSettled([...inflight.values()].map((flight) => flight.promise));
        await Promise.allSettled([...background, ...pendingWrites.values()]);
        if (closeRemote && remote !== undefined) await remote.close();
        local?.clear();
      })();
      return closing;
    },
  };
  for (const name of Object.keys(service.endpoints)) {
    const endpoint = endpoints.get(name);
    cached[name] = endpoint === undefined ? bypassMethod(name, false) : cachedMethod(endpoint, false);
    withMetadataMethods[name] = endpoint === undefined ? bypassMethod(name, true) : cachedMethod(endpoint, true);
  }
  Object.freeze(withMetadataMethods);
  return Object.freeze(cached) as unknown as CachedClient<S>;
}
