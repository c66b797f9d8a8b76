/**
 * The memcached driver (meta text protocol over node:net) against real memcached processes
 * started here on free loopback ports: get/set/delete/TTL, pipelining, consistent hashing over
 * two servers, a dead or frozen server (fast misses, not errors, for calls), long and spaced
 * keys, leases, `withCache` end to end, and no connections or timers left after close().
 *
 * Skipped (with the reason printed) without memcached; failing instead under
 * TELESCOPE_REQUIRE_SERVICES=1.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  HashRing,
  MEMCACHED_MAX_KEY_BYTES,
  type MemcachedCache,
  memcachedCache,
  RemoteCacheError,
  withCache,
} from '../../src/cache/index.js';
import { createClient, systemClock, wheelOf } from '../../src/index.js';
import { waitFor } from '../helpers/assert.js';
import { movieById, movies } from '../helpers/movies.js';
import { activeCount } from '../helpers/process-resources.js';
import { delay, startServer } from '../helpers/server.js';
import { type MemcachedServer, requireServices, serviceAvailable, startMemcached } from '../helpers/services.js';

const haveMemcached = serviceAvailable('memcached');
const describeMemcached = haveMemcached || requireServices ? describe : describe.skip;

async function failure(promise: Promise<unknown>): Promise<RemoteCacheError> {
  try {
    await promise;
  } catch (error) {
    expect(error).toBeInstanceOf(RemoteCacheError);
    return error as RemoteCacheError;
  }
  throw new Error('expected a failure');
}

describeMemcached('memcachedCache', () => {
  let one: MemcachedServer;
  let two: MemcachedServer;
  const drivers: MemcachedCache[] = [];

  beforeAll(async () => {
    [one, two] = await Promise.all([startMemcached(), startMemcached()]);
  });
  afterAll(async () => {
    for (const driver of drivers) await driver.close();
    await Promise.all([one?.stop(), two?.stop()]);
  });

  function driver(servers: string[], options: Partial<Parameters<typeof memcachedCache>[0]> = {}): MemcachedCache {
    const created = memcachedCache({ servers, timeoutMs: 100, ...options });
    drivers.push(created);
    return created;
  }

  it('gets, sets and deletes, with unicode values and misses', async () => {
    const cache = driver([one.address]);
    expect(await cache.get('absent')).toBeUndefined();
    await cache.set('greeting', 'héllo wörld ✓\r\nsecond line', 60_000);
    expect(await cache.get('greeting')).toBe('héllo wörld ✓\r\nsecond line');
    await cache.set('greeting', '', 60_000);
    expect(await cache.get('greeting')).toBe('');
    await cache.delete('greeting');
    expect(await cache.get('greeting')).toBeUndefined();
    await cache.delete('greeting'); // deleting a missing key is fine
  });

  it('expires entries after their TTL (rounded up to whole seconds)', async () => {
    const cache = driver([one.address]);
    await cache.set('short', 'x', 900);
    expect(await cache.get('short')).toBe('x');
    await delay(2100);
    expect(await cache.get('short')).toBeUndefined();
    // Over 30 days becomes an absolute time, not "already expired".
    await cache.set('long', 'y', 40 * 24 * 60 * 60 * 1000);
    expect(await cache.get('long')).toBe('y');
  });

  it('pipelines many requests on one connection and keeps answers in order', async () => {
    const cache = driver([one.address]);
    const before = Number((await one.stats()).total_connections);
    await Promise.all(Array.from({ length: 500 }, (_, index) => cache.set(`p${index}`, `value ${index}`, 60_000)));
    const values = await Promise.all(Array.from({ length: 500 }, (_, index) => cache.get(`p${index}`)));
    expect(values).toEqual(Array.from({ length: 500 }, (_, index) => `value ${index}`));
    expect(Number((await one.stats()).total_connections) - before).toBe(2); // the driver's one + the stats query
  });

  it('hashes keys that are too long or not plain, and keeps them apart', async () => {
    const cache = driver([one.address]);
    const long = 'k'.repeat(MEMCACHED_MAX_KEY_BYTES + 50);
    const spaced = 'movie title with spaces\tand a tab';
    expect(cache.wireKey(long)).toMatch(/^sha256:[A-Za-z0-9_-]{43}$/);
    expect(cache.wireKey(spaced)).toMatch(/^sha256:/);
    expect(cache.wireKey('plain:key')).toBe('plain:key');
    await cache.set(long, 'long', 60_000);
    await cache.set(spaced, 'spaced', 60_000);
    await cache.set(`${long}x`, 'other long', 60_000);
    expect(await cache.get(long)).toBe('long');
    expect(await cache.get(spaced)).toBe('spaced');
    expect(await cache.get(`${long}x`)).toBe('other long');
    expect(await one.command(`mg ${cache.wireKey(spaced)} v\r\n`, /\r\n(?:.*\r\n)?$/)).toContain('spaced');
  });

  it('spreads keys over two servers by consistent hashing', async () => {
    const cache = driver([one.address, two.address]);
    const before = [Number((await one.stats()).curr_items), Number((await two.stats()).curr_items)];
    const keys = Array.from({ length: 400 }, (_, index) => `spread:${index}`);
    await Promise.all(keys.map((key) => cache.set(key, key, 60_000)));
    const added = [
      Number((await one.stats()).curr_items) - (before[0] as number),
      Number((await two.stats()).curr_items) - (before[1] as number),
    ];
    expect(added[0]! + added[1]!).toBe(400);
    expect(Math.min(...added)).toBeGreaterThan(100); // roughly even, not all on one
    for (const key of keys.slice(0, 40)) {
      const owner = cache.serverFor(key) === one.address ? one : two;
      const other = owner === one ? two : one;
      expect(await owner.command(`mg ${key} v\r\n`, /\r\n(?:.*\r\n)?$/)).toContain(key);
      expect(await other.command(`mg ${key} v\r\n`, /\r\n$/)).toBe('EN\r\n');
    }
    // Another process with the servers listed in another order places keys the same way.
    const reordered = driver([two.address, one.address]);
    for (const key of keys) expect(reordered.serverFor(key)).toBe(cache.serverFor(key));
  });

  it('moves only about 1/n of the keys when a server is added to the ring', () => {
    const server = (name: string) => ({ name, weight: 1 });
    const three = new HashRing([server('a:1'), server('b:1'), server('c:1')]);
    const four = new HashRing([server('a:1'), server('b:1'), server('c:1'), server('d:1')]);
    let moved = 0;
    const total = 10_000;
    for (let index = 0; index < total; index++) {
      const before = three.serverFor(`key:${index}`).name;
      const after = four.serverFor(`key:${index}`).name;
      if (before !== after) {
        moved++;
        expect(after).toBe('d:1'); // keys only move to the new server
      }
    }
    expect(moved / total).toBeGreaterThan(0.15);
    expect(moved / total).toBeLessThan(0.35);
  });

  it('fails fast for a dead server while the live one keeps working', async () => {
    const dead = await startMemcached();
    const cache = driver([one.address, dead.address], { reconnect: { minDelayMs: 5000, maxDelayMs: 5000 } });
    const keys = Array.from({ length: 60 }, (_, index) => `dead:${index}`);
    const onDead = keys.filter((key) => cache.serverFor(key) === dead.address);
    const onLive = keys.filter((key) => cache.serverFor(key) === one.address);
    expect(onDead.length).toBeGreaterThan(5);
    await dead.kill();
    await dead.stop();
    const first = await failure(cache.get(onDead[0]!)); // finds out: connection refused
    expect(first.code).toBe('REMOTE_UNAVAILABLE');
    const started = performance.now();
    for (const key of onDead.slice(1)) expect((await failure(cache.get(key))).code).toBe('REMOTE_UNAVAILABLE');
    expect(performance.now() - started).toBeLessThan(50); // no connect attempt, no timeout: at once
    for (const key of onLive) await cache.set(key, 'live', 60_000);
    for (const key of onLive) expect(await cache.get(key)).toBe('live');
    expect(cache.status().find((entry) => entry.server === dead.address)?.state).toBe('down');
  });

  it('times out on a frozen server, drops the connection, and recovers when it is back', async () => {
    const frozen = await startMemcached();
    try {
      const cache = driver([frozen.address], { timeoutMs: 50, reconnect: { minDelayMs: 20, maxDelayMs: 20 } });
      await cache.set('k', 'v', 60_000);
      frozen.pause();
      const started = performance.now();
      expect((await failure(cache.get('k'))).code).toBe('REMOTE_TIMEOUT');
      expect(performance.now() - started).toBeLessThan(50 + 100);
      expect(cache.status()[0]?.state).toBe('down');
      frozen.resume();
      await delay(30);
      await waitFor('the server to answer again', async () => (await cache.get('k').catch(() => 'error')) === 'v');
    } finally {
      frozen.resume();
      await frozen.stop();
    }
  });

  it('takes leases with add semantics and gives them back only to their holder', async () => {
    const cache = driver([one.address]);
    expect(await cache.acquireLease!('lease:a', 'token-1', 5000)).toBe(true);
    expect(await cache.acquireLease!('lease:a', 'token-2', 5000)).toBe(false);
    await cache.releaseLease!('lease:a', 'token-2');
    expect(await cache.acquireLease!('lease:a', 'token-3', 5000)).toBe(false);
    await cache.releaseLease!('lease:a', 'token-1');
    expect(await cache.acquireLease!('lease:a', 'token-3', 5000)).toBe(true);
  });

  it('refuses bad options with INVALID_OPTION', () => {
    for (const options of [
      { servers: [] },
      { servers: ['no-port'] },
      { servers: ['127.0.0.1:0'] },
      { servers: ['127.0.0.1:1', '127.0.0.1:1'] },
      { servers: ['127.0.0.1:1'], timeoutMs: 0 },
      { servers: ['127.0.0.1:1'], keyPrefix: 'has space' },
      { servers: [{ host: '127.0.0.1', port: 1, weight: 0 }] },
    ]) {
      expect(() => memcachedCache(options as never)).toThrow(expect.objectContaining({ code: 'INVALID_OPTION' }));
    }
  });

  describe('under withCache', () => {
    async function movieServer() {
      return startServer(movieById);
    }

    it('reads local → memcached → service, and a corrupt entry is a miss that gets overwritten', async () => {
      const server = await movieServer();
      const remote = memcachedCache({ servers: [one.address, two.address], timeoutMs: 100 });
      const make = () =>
        withCache(createClient(movies, { instances: [server.url] }), {
          remote,
          closeRemote: false,
          jitter: 0,
          endpoints: { getMovie: { ttlMs: 60_000, key: (p) => `mc-movie:${p.id}` } },
        });
      const a = make();
      const b = make();
      try {
        expect((await a.withMetadata.getMovie({ id: 1 })).cacheStatus).toBe('service');
        await waitFor(
          'the write-behind',
          async () => (await remote.get('telescope:movies:getMovie:mc-movie:1')) !== undefined,
        );
        expect((await b.withMetadata.getMovie({ id: 1 })).cacheStatus).toBe('remote');
        expect((await b.withMetadata.getMovie({ id: 1 })).cacheStatus).toBe('local');

        const key = 'telescope:movies:getMovie:mc-movie:2';
        await remote.set(key, '\u0000\u0001 definitely not an envelope', 60_000);
        expect((await a.withMetadata.getMovie({ id: 2 })).cacheStatus).toBe('service');
        await waitFor('the overwrite', async () => (await remote.get(key))?.startsWith('{"tc":1') === true);
        expect(a.stats().cache.totals.corrupt).toBe(1);
        expect(server.requests.filter((request) => request.url === '/movies/1')).toHaveLength(1);
      } finally {
        await a.close();
        await b.close();
        await remote.close();
      }
    });

    it('answers through the service, without errors, when every memcached server is dead', async () => {
      const server = await movieServer();
      const dead = await startMemcached();
      const address = dead.address;
      await dead.stop();
      const cached = withCache(createClient(movies, { instances: [server.url] }), {
        remote: memcachedCache({ servers: [address], timeoutMs: 50 }),
        endpoints: { getMovie: { ttlMs: 60_000, key: (p) => `movie:${p.id}` } },
      });
      try {
        for (let id = 0; id < 10; id++) {
          expect(await cached.withMetadata.getMovie({ id })).toMatchObject({ cacheStatus: 'service', value: { id } });
        }
        expect((await cached.withMetadata.getMovie({ id: 3 })).cacheStatus).toBe('local');
        expect(cached.stats().cache.remote?.errors.get).toBe(10);
        expect(cached.stats().cache.remote?.errors.set).toBe(0);
      } finally {
        await cached.close();
      }
    });

    it('leaves no memcached connection, socket or timer behind after close()', async () => {
      const server = await movieServer();
      const socketsBefore = activeCount('TCPSocketWrap');
      const timersBefore = activeCount('Timeout');
      const clientsBefore = [await one.connectedClients(), await two.connectedClients()];
      const cached = withCache(createClient(movies, { instances: [server.url] }), {
        remote: memcachedCache({ servers: [one.address, two.address] }),
        lease: true,
        endpoints: { getMovie: { ttlMs: 60_000, key: (p) => `leak:${p.id}` } },
      });
      for (let id = 0; id < 30; id++) await cached.getMovie({ id });
      await waitFor('a connection to each server', async () => {
        return (
          (await one.connectedClients()) === clientsBefore[0]! + 1 &&
          (await two.connectedClients()) === clientsBefore[1]! + 1
        );
      });
      await cached.close();
      await waitFor('memcached to see the connections close', async () => {
        return (
          (await one.connectedClients()) === clientsBefore[0] && (await two.connectedClients()) === clientsBefore[1]
        );
      });
      await waitFor('the sockets to close', () => activeCount('TCPSocketWrap') <= socketsBefore);
      await waitFor('the timers to go', () => activeCount('Timeout') <= timersBefore);
      expect(wheelOf(systemClock).size).toBe(0);
    });
  });
});
