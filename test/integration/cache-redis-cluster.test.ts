/**
 * `redisCache({ cluster })` and `redisCache({ sentinel })` on real servers started here: a
 * 3-master Redis Cluster with one replica per master (`redis-cli --cluster create`, short
 * `cluster-node-timeout`), and a master, a replica and a sentinel. A master is killed while calls
 * run: no call fails, only keys whose slot was on the dead master reach the service, and the
 * cache serves hits again after the failover. Bad topologies are INVALID_OPTION at creation, or
 * counted misses at run time.
 *
 * Skipped (with the reason printed) without redis-server, redis-cli or redis-sentinel; failing
 * instead under TELESCOPE_REQUIRE_SERVICES=1. Every process is stopped in afterAll.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type CachedClient, redisCache, withCache } from '../../src/cache/index.js';
import { createClient } from '../../src/index.js';
import { waitFor } from '../helpers/assert.js';
import { movieById, movies } from '../helpers/movies.js';
import { closedPort, delay, startServer, type TestServer } from '../helpers/server.js';
import {
  type RedisCluster,
  type RedisSentinelSet,
  requireServices,
  serviceAvailable,
  startRedisCluster,
  startRedisSentinel,
} from '../helpers/services.js';

type Movies = typeof movies;
const haveCluster = serviceAvailable('redis-server') && serviceAvailable('redis-cli');
const haveSentinel = serviceAvailable('redis-server') && serviceAvailable('redis-sentinel');
const describeCluster = haveCluster || requireServices ? describe : describe.skip;
const describeSentinel = haveSentinel || requireServices ? describe : describe.skip;

async function movieServer(): Promise<TestServer> {
  return startServer(movieById, { autoClose: false });
}

const requestsFor = (server: TestServer, id: number) =>
  server.requests.filter((request) => request.url === `/movies/${id}`).length;

/**
 * Calls `getMovie` for ids 0..keys-1 round-robin, `perSecond` a second for `ms`; returns the
 * number of calls that threw (must stay 0) and of those answered by the cache.
 */
async function drive(cached: CachedClient<Movies>, keys: number, perSecond: number, ms: number) {
  let errors = 0;
  let cacheHits = 0;
  let calls = 0;
  const started = Date.now();
  const inFlight: Array<Promise<void>> = [];
  while (Date.now() - started < ms) {
    const id = calls++ % keys;
    inFlight.push(
      cached.withMetadata.getMovie({ id }).then(
        (result) => {
          if (result.cacheStatus === 'remote' || result.cacheStatus === 'local') cacheHits++;
        },
        () => {
          errors++;
        },
      ),
    );
    await delay(1000 / perSecond);
  }
  await Promise.all(inFlight);
  return { calls, errors, cacheHits };
}

async function preload(redisImport: Promise<unknown>) {
  // Loading the driver can take longer than a connect timeout on a busy machine.
  await redisImport;
}

describeCluster('redisCache on a Redis Cluster', { timeout: 90_000 }, () => {
  let cluster: RedisCluster;
  let server: TestServer;
  const open: Array<{ close(): Promise<void> }> = [];

  beforeAll(async () => {
    await preload(import('redis'));
    cluster = await startRedisCluster({ masters: 3, replicasPerMaster: 1, nodeTimeoutMs: 1000 });
    server = await movieServer();
  }, 60_000);
  afterAll(async () => {
    for (const item of open.splice(0)) await item.close().catch(() => {});
    await server?.close();
    await cluster?.stop();
  });

  async function cachedOnCluster(options: { local?: false } = {}) {
    const remote = redisCache({ cluster: { rootNodes: [cluster.urls[0] as string] }, timeoutMs: 200 });
    await remote.connect();
    const cached = withCache(createClient(movies, { instances: [server.url], timeoutMs: 2000 }), {
      remote,
      lease: { ttlMs: 2000, waitMs: 300, pollMs: 20 },
      jitter: 0,
      ...(options.local === false ? { local: false as const } : {}),
      endpoints: { getMovie: { ttlMs: 600_000, key: (p) => `movie:${p.id}` } },
    });
    open.push(cached);
    return cached;
  }

  it('reads through the cluster with hash-tagged keys and leases, and invalidates over sharded pub/sub', async () => {
    const first = await cachedOnCluster();
    const second = await cachedOnCluster();
    expect((await first.withMetadata.getMovie({ id: 1000 })).cacheStatus).toBe('service');
    const key = 'telescope:movies:getMovie:movie:1000';
    // Stored as {key} on the master of its slot; the lease {key}#lease hashes to the same slot.
    const owner = await cluster.masterOf(`{${key}}`);
    await waitFor('the write-behind', async () => (await owner.command('GET', `{${key}}`)) !== null);
    expect(await owner.command('CLUSTER', 'KEYSLOT', `{${key}}#lease`)).toBe(
      await owner.command('CLUSTER', 'KEYSLOT', `{${key}}`),
    );
    expect(first.stats().cache.totals.leases.acquired).toBe(1);
    expect((await second.withMetadata.getMovie({ id: 1000 })).cacheStatus).toBe('remote');
    expect((await second.withMetadata.getMovie({ id: 1000 })).cacheStatus).toBe('local');
    // The invalidation reaches the other client's local tier.
    expect(await first.invalidate('getMovie', { id: 1000 })).toMatchObject({ remoteDeleted: true, published: true });
    await waitFor(
      'the invalidation',
      async () => (await second.withMetadata.getMovie({ id: 1000 })).cacheStatus === 'service',
    );
    expect(requestsFor(server, 1000)).toBe(2);
    expect(first.stats().cache.remote?.errors).toMatchObject({ get: 0, set: 0, lease: 0, publish: 0 });
  });

  it('keeps answering when a master dies; only its keys reach the service; hits come back after the failover', async () => {
    const cached = await cachedOnCluster({ local: false });
    const keys = 60;
    for (let id = 0; id < keys; id++) await cached.getMovie({ id });
    await waitFor('the writes', () => cached.stats().cache.remote?.pendingWrites === 0);
    const masters = await cluster.masters();
    const victim = masters[0] as (typeof masters)[number];
    const onVictim = new Set<number>();
    for (let id = 0; id < keys; id++) {
      if ((await cluster.masterOf(`{telescope:movies:getMovie:movie:${id}}`)).port === victim.port) onVictim.add(id);
    }
    expect(onVictim.size).toBeGreaterThan(0);
    // Replicas have every key before the master goes.
    for (const node of cluster.nodes) if ((await node.role()) === 'slave') await node.command('WAIT', '0', '100');
    const before = Array.from({ length: keys }, (_, id) => requestsFor(server, id));

    const seen = new Map<string, number>();
    cached.on('cache-error', (event) => {
      const id = Number(event.key?.split(':').pop());
      if (onVictim.has(id)) return;
      const message = String((event.error as Error).message);
      seen.set(message, (seen.get(message) ?? 0) + 1);
    });
    await victim.kill();
    const during = await drive(cached, keys, 100, 6000);
    expect(during.errors).toBe(0);
    const strays = Array.from({ length: keys }, (_, id) => id).filter(
      (id) => !onVictim.has(id) && requestsFor(server, id) !== before[id],
    );
    expect(strays, JSON.stringify([...seen])).toEqual([]);
    // After the failover the promoted replica serves the victim's keys from the cache again.
    await waitFor(
      'hits on the failed-over slots',
      async () => {
        const results = await Promise.all([...onVictim].map((id) => cached.withMetadata.getMovie({ id })));
        return results.every((result) => result.cacheStatus === 'remote');
      },
      20_000,
    );
  });

  it('treats a cluster with no reachable node as a counted miss, never an error', async () => {
    const remote = redisCache({
      cluster: { rootNodes: [`redis://127.0.0.1:${await closedPort()}`, `redis://127.0.0.1:${await closedPort()}`] },
      timeoutMs: 100,
      connectTimeoutMs: 200,
    });
    const cached = withCache(createClient(movies, { instances: [server.url], timeoutMs: 2000 }), {
      remote,
      endpoints: { getMovie: { ttlMs: 60_000 } },
    });
    open.push(cached);
    expect((await cached.withMetadata.getMovie({ id: 2000 })).cacheStatus).toBe('service');
    expect((await cached.withMetadata.getMovie({ id: 2001 })).cacheStatus).toBe('service');
    expect(cached.stats().cache.remote?.errors.get).toBe(2);
  });
});

describeSentinel('redisCache behind Sentinel', { timeout: 90_000 }, () => {
  let sentinel: RedisSentinelSet;
  let server: TestServer;
  const open: Array<{ close(): Promise<void> }> = [];

  beforeAll(async () => {
    await preload(import('redis'));
    sentinel = await startRedisSentinel({ sentinels: 1, downAfterMs: 1000 });
    server = await movieServer();
  }, 60_000);
  afterAll(async () => {
    for (const item of open.splice(0)) await item.close().catch(() => {});
    await server?.close();
    await sentinel?.stop();
  });

  it('reads through the master and follows it through a failover without a failed call', async () => {
    const remote = redisCache({
      sentinel: { name: sentinel.name, sentinelRootNodes: sentinel.sentinelAddresses },
      timeoutMs: 200,
    });
    await remote.connect();
    const cached = withCache(createClient(movies, { instances: [server.url], timeoutMs: 2000 }), {
      remote,
      local: false,
      jitter: 0,
      endpoints: { getMovie: { ttlMs: 600_000, key: (p) => `movie:${p.id}` } },
    });
    open.push(cached);
    const keys = 20;
    for (let id = 0; id < keys; id++) await cached.getMovie({ id });
    await waitFor('the writes', () => cached.stats().cache.remote?.pendingWrites === 0);
    expect((await cached.withMetadata.getMovie({ id: 0 })).cacheStatus).toBe('remote');
    await sentinel.master.command('WAIT', '1', '1000');

    await sentinel.master.kill();
    const during = await drive(cached, keys, 50, 4000);
    expect(during.errors).toBe(0);
    await waitFor('the failover', async () => (await sentinel.currentMasterPort()) === sentinel.replica.port, 20_000);
    await waitFor(
      'hits from the new master',
      async () => (await cached.withMetadata.getMovie({ id: 1 })).cacheStatus === 'remote',
      20_000,
    );
  });

  it('treats a sentinel that names an unknown master as a counted miss, never an error', async () => {
    const remote = redisCache({
      sentinel: { name: 'no-such-master', sentinelRootNodes: sentinel.sentinelAddresses },
      timeoutMs: 100,
      connectTimeoutMs: 300,
    });
    const cached = withCache(createClient(movies, { instances: [server.url], timeoutMs: 2000 }), {
      remote,
      endpoints: { getMovie: { ttlMs: 60_000 } },
    });
    open.push(cached);
    expect((await cached.withMetadata.getMovie({ id: 3000 })).cacheStatus).toBe('service');
    expect((await cached.withMetadata.getMovie({ id: 3001 })).cacheStatus).toBe('service');
    expect(cached.stats().cache.remote?.errors.get).toBeGreaterThanOrEqual(1);
  });
});

describe('redisCache topology options', () => {
  it.each([
    ['url and cluster together', { url: 'redis://127.0.0.1:6379', cluster: { rootNodes: ['redis://127.0.0.1:7000'] } }],
    ['an empty cluster', { cluster: { rootNodes: [] } }],
    ['a cluster node that is not a URL', { cluster: { rootNodes: ['127.0.0.1:7000'] } }],
    ['a zero topology refresh', { cluster: { rootNodes: ['redis://127.0.0.1:7000'], topologyRefreshMs: 0 } }],
    ['a sentinel without a name', { sentinel: { name: '', sentinelRootNodes: ['127.0.0.1:26379'] } }],
    ['no sentinels', { sentinel: { name: 'cache', sentinelRootNodes: [] } }],
    ['a sentinel that is not host:port', { sentinel: { name: 'cache', sentinelRootNodes: ['127.0.0.1'] } }],
    ['a sentinel port out of range', { sentinel: { name: 'cache', sentinelRootNodes: [{ host: 'a', port: 70_000 }] } }],
  ])('rejects %s with INVALID_OPTION', (_name, options) => {
    expect(() => redisCache(options as never)).toThrow(expect.objectContaining({ code: 'INVALID_OPTION' }));
  });
});
