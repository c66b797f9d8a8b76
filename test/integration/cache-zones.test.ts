/**
 * `zoneReplicated()` with one real memcached per zone (three zones, on loopback): a miss is
 * written to every zone, and when the local zone's memcached is killed, fresh clients in that
 * zone keep getting hits from another zone without calling the service.
 *
 * Skipped (with the reason printed) without memcached; failing instead under
 * TELESCOPE_REQUIRE_SERVICES=1.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { memcachedCache, withCache, zoneReplicated } from '../../src/cache/index.js';
import { createClient } from '../../src/index.js';
import { waitFor } from '../helpers/assert.js';
import { movieById, movies } from '../helpers/movies.js';
import { startServer, type TestServer } from '../helpers/server.js';
import { type MemcachedServer, requireServices, serviceAvailable, startMemcached } from '../helpers/services.js';

const haveMemcached = serviceAvailable('memcached');
const describeMemcached = haveMemcached || requireServices ? describe : describe.skip;

describeMemcached('zone replicas on memcached', () => {
  const zones = ['a', 'b', 'c'] as const;
  const servers = new Map<string, MemcachedServer>();
  let service: TestServer;
  const open: Array<{ close(): Promise<void> }> = [];

  beforeAll(async () => {
    for (const zone of zones) servers.set(zone, await startMemcached());
    service = await startServer(movieById, { autoClose: false });
  });
  afterAll(async () => {
    for (const item of open.splice(0)) await item.close().catch(() => {});
    await service?.close();
    for (const server of servers.values()) await server.stop();
  });

  /** A fresh client in `zone`, with no local tier (every call asks the remote tier). */
  function clientIn(zone: string) {
    const replicas = Object.fromEntries(
      zones.map((name) => [
        name,
        memcachedCache({ servers: [(servers.get(name) as MemcachedServer).address], timeoutMs: 200 }),
      ]),
    );
    const remote = zoneReplicated({ zone, replicas });
    const cached = withCache(createClient(movies, { instances: [service.url], timeoutMs: 2000 }), {
      remote,
      local: false,
      jitter: 0,
      endpoints: { getMovie: { ttlMs: 60_000, key: (p) => `movie:${p.id}` } },
    });
    open.push(cached);
    return { remote, cached, replicas };
  }

  const requests = (id: number) => service.requests.filter((request) => request.url === `/movies/${id}`).length;

  it('writes a miss to every zone; with the local memcached killed, hits come from another zone', async () => {
    const writer = clientIn('a');
    expect((await writer.cached.withMetadata.getMovie({ id: 1 })).cacheStatus).toBe('service');
    const key = 'telescope:movies:getMovie:movie:1';
    for (const zone of zones) {
      const replica = writer.replicas[zone] as ReturnType<typeof memcachedCache>;
      await waitFor(`the write in zone ${zone}`, async () => (await replica.get(key)) !== undefined);
    }

    await (servers.get('a') as MemcachedServer).kill();
    for (let round = 0; round < 3; round++) {
      const reader = clientIn('a');
      const result = await reader.cached.withMetadata.getMovie({ id: 1 });
      expect(result).toMatchObject({ cacheStatus: 'remote', value: { id: 1, title: 'movie 1' } });
      expect(reader.remote.fallbacks).toBe(1);
      expect(reader.remote.stats().a?.errors).toBe(1);
    }
    expect(requests(1)).toBe(1);

    // Invalidation reaches the zones that are up, and the call still answers.
    const result = await writer.cached.invalidate('getMovie', { id: 1 });
    expect(result.remoteDeleted).toBe(false); // zone a is down: the delete did not reach every zone
    for (const zone of ['b', 'c']) {
      expect(await (writer.replicas[zone] as ReturnType<typeof memcachedCache>).get(key)).toBeUndefined();
    }
    expect((await writer.cached.withMetadata.getMovie({ id: 1 })).cacheStatus).toBe('service');
  });
});
