/**
 * `memoryCache()`: the default remote tier, kept in this process. No setup; useful alone, in
 * tests, and as the shared tier of several cached clients in one process (it has leases and an
 * in-process invalidation bus too).
 */
import { LRUCache } from 'lru-cache';
import { type Clock, systemClock } from '../core/clock.js';
import { invalidOption } from '../core/errors.js';
import { type InvalidationBus, type RemoteCache, RemoteCacheError } from './remote.js';

/** Options of {@link memoryCache}. */
export interface MemoryCacheOptions {
  /** Most entries kept; the least recently used go first. @default 10000 */
  maxEntries?: number;
  /** Time source of expiry. @default systemClock */
  clock?: Clock;
}

export const memoryCacheDefaults = { maxEntries: 10_000 } as const;

interface Stored {
  value: string;
  expiresAt: number;
}

/**
 * An in-process remote tier: strings with a hard expiry in an LRU, leases, and an in-process
 * invalidation bus.
 *
 * @example
 * const shared = memoryCache({ maxEntries: 50_000 });
 * const a = withCache(moviesA, { remote: shared, closeRemote: false, endpoints: { ... } });
 */
export function memoryCache(options: MemoryCacheOptions = {}): RemoteCache & { readonly size: number } {
  if (typeof options !== 'object' || options === null) invalidOption('memoryCache options', 'an object', options);
  const maxEntries = options.maxEntries ?? memoryCacheDefaults.maxEntries;
  if (!Number.isInteger(maxEntries) || maxEntries < 1)
    invalidOption('memoryCache maxEntries', 'an integer ≥ 1', maxEntries);
  const clock = options.clock ?? systemClock;
  const entries = new LRUCache<string, Stored>({ max: maxEntries });
  const leases = new Map<string, Stored>();
  const subscribers = new Set<(message: string) => void>();
  let closed = false;

  const live = (map: { get(key: string): Stored | undefined; delete(key: string): unknown }, key: string) => {
    const stored = map.get(key);
    if (stored === undefined) return undefined;
    if (stored.expiresAt <= clock.now()) {
      map.delete(key);
      return undefined;
    }
    return stored;
  };
  const ensureOpen = () => {
    if (closed) throw new RemoteCacheError('REMOTE_CLOSED', 'memoryCache is closed');
  };

  const bus: InvalidationBus = {
    async publish(message) {
      ensureOpen();
      // Delivered asynchronously, like a real bus.
      for (const subscriber of subscribers) queueMicrotask(() => subscriber(message));
    },
    async subscribe(onMessage) {
      ensureOpen();
      const listener = (message: string) => onMessage(message);
      subscribers.add(listener);
      return async () => {
        subscribers.delete(listener);
      };
    },
  };

  return {
    name: 'memory',
    bus,
    get size() {
      return entries.size;
    },
    async get(key) {
      ensureOpen();
      return live(entries, key)?.value;
    },
    async set(key, value, ttlMs) {
      ensureOpen();
      entries.set(key, { value, expiresAt: clock.now() + ttlMs });
    },
    async delete(key) {
      ensureOpen();
      entries.delete(key);
    },
    async acquireLease(key, token, ttlMs) {
      ensureOpen();
      if (live(leases, key) !== undefined) return false;
      if (leases.size >= maxEntries) {
        for (const [leaseKey, lease] of leases) if (lease.expiresAt <= clock.now()) leases.delete(leaseKey);
      }
      leases.set(key, { value: token, expiresAt: clock.now() + ttlMs });
      return true;
    },
    async releaseLease(key, token) {
      ensureOpen();
      if (leases.get(key)?.value === token) leases.delete(key);
    },
    async close() {
      closed = true;
      entries.clear();
      leases.clear();
      subscribers.clear();
    },
  };
}
