/**
 * The public types of the cache extension: options, results, events, counters and stats, and
 * the defaults. Nothing here runs; `with-cache.ts` puts the parts together.
 */
import type { CallOptions, Client, ClientEvents } from '../client/index.js';
import type { Logger } from '../core/call.js';
import type { Clock } from '../core/clock.js';
import type { ClientStats, LatencySummary } from '../observe/index.js';
import type {
  BodyArgs,
  Endpoint,
  EndpointMethod,
  ParamsArgs,
  ResponseOf,
  ServiceDefinition,
} from '../service/index.js';
import { DEFAULT_REMOTE_TIMEOUT_MS, type InvalidationBus, type RemoteCache } from './remote.js';

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
  /** Longest a write waits for a remote tier's first connection (cold start). */
  coldStartWaitMs: 5000,
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
