/**
 * `telescope-http/cache`: a two-tier read-through cache around a typed client (`withCache`), with an
 * in-process LRU, a shared remote tier (in-memory, Redis (one server, Cluster or Sentinel),
 * memcached, zone replicas of any of those, or your own), request
 * coalescing, leases, stale-while-revalidate, stale-if-error and an invalidation bus.
 *
 * @module telescope-http/cache
 */
export { decodeEnvelope, ENVELOPE_VERSION, type Entry, encodeEnvelope, notPlainJson } from './envelope.js';
export { HashRing } from './hash-ring.js';
export {
  MEMCACHED_MAX_KEY_BYTES,
  type MemcachedCache,
  type MemcachedCacheOptions,
  type MemcachedServerInput,
  memcachedCache,
  memcachedCacheDefaults,
} from './memcached.js';
export { type MemoryCacheOptions, memoryCache, memoryCacheDefaults } from './memory.js';
export { type RedisCache, redisCache } from './redis.js';
export { type RedisCacheOptions, redisCacheDefaults } from './redis-options.js';
export {
  DEFAULT_REMOTE_TIMEOUT_MS,
  type InvalidationBus,
  type RemoteCache,
  RemoteCacheError,
  type RemoteCacheErrorCode,
  type RemoteOperationOptions,
} from './remote.js';
export {
  type CacheCounters,
  type CachedClient,
  type CachedClientEvents,
  type CacheErrorEvent,
  type CacheEvent,
  type CacheKeyArgs,
  type CacheOptions,
  type CacheResult,
  type CacheStats,
  type CacheStatus,
  cacheDefaults,
  type EndpointCacheOptions,
  type InvalidateResult,
  type LeaseOptions,
  type LocalTierOptions,
  type RemoteOperation,
} from './types.js';
export { withCache } from './with-cache.js';
export {
  type ZoneReplicaStats,
  type ZoneReplicatedCache,
  type ZoneReplicatedOptions,
  zoneReplicated,
  zoneReplicatedDefaults,
} from './zone-replicated.js';
