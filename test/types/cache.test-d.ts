import { describe, expectTypeOf, it } from 'vitest';
import {
  type CachedClient,
  type CacheEvent,
  type CacheResult,
  type CacheStats,
  type CacheStatus,
  type InvalidateResult,
  memcachedCache,
  memoryCache,
  type RedisCache,
  type RedisCacheOptions,
  type RemoteCache,
  redisCache,
  withCache,
  type ZoneReplicaStats,
  type ZoneReplicatedCache,
  zoneReplicated,
} from '../../src/cache/index.js';
import { type CallOptions, type Client, type ClientStats, createClient } from '../../src/index.js';
import { movies } from '../helpers/movies.js';

const client = createClient(movies, { instances: ['http://127.0.0.1:1'] });
const cached = withCache(client, {
  local: { maxEntries: 10_000 },
  remote: redisCache({ url: 'redis://127.0.0.1:6379', timeoutMs: 50 }),
  endpoints: {
    getMovie: { ttlMs: 60_000, staleMs: 600_000, key: (p) => `movie:${p.id}` },
    search: { ttlMs: 1000, key: (query) => `${query.q}:${query.limit ?? 10}` },
    rate: { ttlMs: 1000, key: (params, body) => `${params.id}:${body.stars}` },
    health: { ttlMs: 1000, key: () => 'health' },
  },
});

describe('withCache', () => {
  it('returns the client type plus the cache members', () => {
    expectTypeOf(cached).toEqualTypeOf<CachedClient<typeof movies>>();
    expectTypeOf(cached.getMovie).toEqualTypeOf(client.getMovie);
    expectTypeOf(cached.rate).toEqualTypeOf(client.rate);
    expectTypeOf(cached.search).toEqualTypeOf(client.search);
    expectTypeOf(cached.health).toEqualTypeOf(client.health);
    expectTypeOf(cached.getMovie({ id: 7 })).resolves.toEqualTypeOf<{ id: number; title: string }>();
    expectTypeOf(cached.close).toEqualTypeOf<() => Promise<void>>();
    expectTypeOf(cached.service).toEqualTypeOf<typeof movies>();
    expectTypeOf(cached.client).toEqualTypeOf<Client<typeof movies>>();
  });

  it('can stand in for the client it wraps', () => {
    const takesClient = (_client: Client<typeof movies>) => {};
    takesClient(cached);
  });

  it('types the key functions from the endpoint arguments', () => {
    withCache(client, {
      endpoints: {
        getMovie: {
          ttlMs: 1,
          key: (p) => {
            expectTypeOf(p).toEqualTypeOf<{ id: number }>();
            return String(p.id);
          },
        },
      },
    });
    // @ts-expect-error the key must be a string
    withCache(client, { endpoints: { getMovie: { ttlMs: 1, key: (p) => p.id } } });
    // @ts-expect-error params have no `name`
    withCache(client, { endpoints: { getMovie: { ttlMs: 1, key: (p) => p.name } } });
    // @ts-expect-error not an endpoint of the service
    withCache(client, { endpoints: { getMovies: { ttlMs: 1 } } });
    // @ts-expect-error ttlMs is required
    withCache(client, { endpoints: { getMovie: { staleMs: 1 } } });
  });

  it('types withMetadata like the methods, resolving to CacheResult', () => {
    expectTypeOf(cached.withMetadata.getMovie({ id: 7 })).resolves.toEqualTypeOf<
      CacheResult<{ id: number; title: string }>
    >();
    expectTypeOf(cached.withMetadata.rate({ id: 7 }, { stars: 5 }, { timeoutMs: 100 })).resolves.toEqualTypeOf<
      CacheResult<{ ok: boolean }>
    >();
    expectTypeOf(cached.withMetadata.health()).resolves.toEqualTypeOf<CacheResult<unknown>>();
    expectTypeOf<CacheResult<number>['cacheStatus']>().toEqualTypeOf<CacheStatus>();
    expectTypeOf<CacheResult<number>['coalesced']>().toEqualTypeOf<boolean>();
    expectTypeOf(cached.withMetadata.getMovie).parameter(1).toEqualTypeOf<CallOptions | undefined>();
    // @ts-expect-error params are checked
    void cached.withMetadata.getMovie({ id: 'seven' });
  });

  it('types invalidate by endpoint', () => {
    expectTypeOf(cached.invalidate('getMovie', { id: 7 })).resolves.toEqualTypeOf<InvalidateResult>();
    void cached.invalidate('rate', { id: 1 }, { stars: 2 });
    void cached.invalidate('health');
    // @ts-expect-error wrong params
    void cached.invalidate('getMovie', { title: 'x' });
    // @ts-expect-error unknown endpoint
    void cached.invalidate('nope');
  });

  it('adds cache events and stats to the client ones', () => {
    cached.on('cache', (event) => expectTypeOf(event).toEqualTypeOf<CacheEvent>());
    cached.on('retry', (event) => expectTypeOf(event.type).toEqualTypeOf<'retry'>());
    expectTypeOf(cached.stats()).toEqualTypeOf<ClientStats & { cache: CacheStats }>();
    // @ts-expect-error unknown event
    cached.on('nope', () => {});
  });

  it('takes any RemoteCache', () => {
    expectTypeOf(memoryCache()).toExtend<RemoteCache>();
    expectTypeOf(memcachedCache({ servers: ['127.0.0.1:11211'] })).toExtend<RemoteCache>();
    expectTypeOf(redisCache()).toExtend<RemoteCache>();
  });

  it('takes Redis Cluster and Sentinel topologies', () => {
    expectTypeOf(
      redisCache({ cluster: { rootNodes: ['redis://10.0.0.1:7000', { url: 'redis://10.0.0.2:7000' }] } }),
    ).toEqualTypeOf<RedisCache>();
    expectTypeOf(
      redisCache({
        sentinel: { name: 'cache', sentinelRootNodes: ['10.0.0.1:26379', { host: '10.0.0.2', port: 26379 }] },
      }),
    ).toEqualTypeOf<RedisCache>();
    expectTypeOf<RedisCacheOptions['cluster']>().toEqualTypeOf<
      { rootNodes: ReadonlyArray<string | { readonly url: string }>; topologyRefreshMs?: number } | undefined
    >();
    expectTypeOf(redisCache().connecting).toEqualTypeOf<boolean | undefined>();
    // @ts-expect-error a sentinel set needs the master's name
    redisCache({ sentinel: { sentinelRootNodes: ['10.0.0.1:26379'] } });
    // @ts-expect-error cluster nodes are URLs, not numbers
    redisCache({ cluster: { rootNodes: [7000] } });
  });

  it('takes zone replicas as a remote tier', () => {
    const remote = zoneReplicated({ zone: 'a', replicas: { a: memoryCache(), b: redisCache() } });
    expectTypeOf(remote).toEqualTypeOf<ZoneReplicatedCache>();
    expectTypeOf(remote).toExtend<RemoteCache>();
    expectTypeOf(remote.stats()).toEqualTypeOf<Record<string, ZoneReplicaStats>>();
    expectTypeOf(remote.fallbacks).toEqualTypeOf<number>();
    withCache(client, { remote, endpoints: { getMovie: { ttlMs: 1000 } } });
    // @ts-expect-error the local zone is required
    zoneReplicated({ replicas: { a: memoryCache() } });
  });
});
