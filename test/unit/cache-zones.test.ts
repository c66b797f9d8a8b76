/**
 * `zoneReplicated()` over in-memory replicas that count their calls: where reads, writes,
 * deletes and invalidations go, how many round trips a fallback costs, and bad input (a replica
 * map without the local zone is INVALID_OPTION; a corrupt or foreign entry in a zone is a
 * counted miss that falls back to another zone).
 */
import { describe, expect, it } from 'vitest';
import { makeEntry } from '../../src/cache/envelope.js';
import {
  encodeEnvelope,
  memoryCache,
  type RemoteCache,
  RemoteCacheError,
  withCache,
  zoneReplicated,
} from '../../src/cache/index.js';
import { createClient } from '../../src/index.js';
import { manualClock } from '../helpers/clock.js';
import { movies } from '../helpers/movies.js';

interface Counted extends RemoteCache {
  calls: Record<'get' | 'set' | 'delete', number>;
  down: boolean;
  inner: RemoteCache;
}

function counted(): Counted {
  const inner = memoryCache();
  const replica: Counted = {
    name: 'memory',
    timeoutMs: 50,
    inner,
    down: false,
    calls: { get: 0, set: 0, delete: 0 },
    async get(key, op) {
      replica.calls.get++;
      if (replica.down) throw new RemoteCacheError('REMOTE_UNAVAILABLE', 'down');
      return inner.get(key, op);
    },
    async set(key, value, ttlMs, op) {
      replica.calls.set++;
      if (replica.down) throw new RemoteCacheError('REMOTE_UNAVAILABLE', 'down');
      return inner.set(key, value, ttlMs, op);
    },
    async delete(key, op) {
      replica.calls.delete++;
      if (replica.down) throw new RemoteCacheError('REMOTE_UNAVAILABLE', 'down');
      return inner.delete(key, op);
    },
    bus: inner.bus,
    close: () => inner.close(),
  };
  return replica;
}

const storedAt = Date.now();
const envelope = (key: string, value: unknown) => encodeEnvelope(key, makeEntry(value, undefined, storedAt, 60_000));

describe('zoneReplicated', () => {
  it('writes every zone, reads the local one, and falls back to one other zone in one more round trip', async () => {
    const [a, b, c] = [counted(), counted(), counted()];
    const remote = zoneReplicated({ zone: 'a', replicas: { a, b, c } });
    expect(remote.timeoutMs).toBe(100);
    await remote.set('k', envelope('k', 1), 60_000);
    await new Promise((resolve) => setImmediate(resolve));
    expect([a.calls.set, b.calls.set, c.calls.set]).toEqual([1, 1, 1]);

    expect(await remote.get('k')).toBe(envelope('k', 1));
    expect([a.calls.get, b.calls.get, c.calls.get]).toEqual([1, 0, 0]);

    // A local miss: one more read, in one other zone (they take turns).
    await a.inner.delete('k');
    expect(await remote.get('k')).toBeDefined();
    expect(await remote.get('k')).toBeDefined();
    expect([a.calls.get, b.calls.get + c.calls.get, b.calls.get, c.calls.get]).toEqual([3, 2, 1, 1]);
    expect(remote.fallbacks).toBe(2);

    // The local zone down: still one fallback read each, never an error.
    a.down = true;
    expect(await remote.get('k')).toBeDefined();
    expect(remote.stats().a).toMatchObject({ errors: 1 });
    await remote.close();
  });

  it('deletes in every zone and publishes invalidations on every zone bus', async () => {
    const [a, b] = [counted(), counted()];
    const remote = zoneReplicated({ zone: 'a', replicas: { a, b } });
    const heardInB: string[] = [];
    await b.bus?.subscribe((message) => heardInB.push(message));
    await remote.set('k', envelope('k', 1), 60_000);
    await remote.delete('k');
    expect([a.calls.delete, b.calls.delete]).toEqual([1, 1]);
    expect(await b.inner.get('k')).toBeUndefined();
    await remote.bus?.publish('drop k');
    expect(heardInB).toEqual(['drop k']);
    await remote.close();
  });

  it('treats a corrupt or foreign entry in the local zone as a counted miss and reads another zone', async () => {
    const [a, b] = [counted(), counted()];
    const remote = zoneReplicated({ zone: 'a', replicas: { a, b } });
    const key = 'telescope:movies:getMovie:7';
    await b.inner.set(key, envelope(key, { id: 7, title: 'seven' }), 60_000);
    for (const bad of ['not json', envelope('another-key', { id: 8 }), '{"tc":99}']) {
      await a.inner.set(key, bad, 60_000);
      expect(await remote.get(key)).toBe(envelope(key, { id: 7, title: 'seven' }));
    }
    expect(remote.stats().a).toMatchObject({ corrupt: 3, hits: 0 });
    expect(remote.stats().b).toMatchObject({ hits: 3 });

    // Through withCache: the call is a remote hit, never an error.
    const clock = manualClock();
    const client = createClient(movies, { instances: ['http://127.0.0.1:9'], timeoutMs: 500, clock });
    const cached = withCache(client, { remote, local: false, clock, endpoints: { getMovie: { ttlMs: 60_000 } } });
    const stored = JSON.parse(envelope(key, { id: 7, title: 'seven' }));
    await b.inner.set(
      'telescope:movies:getMovie:{"id":7}',
      JSON.stringify({ ...stored, key: 'telescope:movies:getMovie:{"id":7}', storedAt: Date.now() }),
      60_000,
    );
    await a.inner.set('telescope:movies:getMovie:{"id":7}', 'garbage', 60_000);
    expect((await cached.withMetadata.getMovie({ id: 7 })).cacheStatus).toBe('remote');
    await cached.close();
  });

  it.each([
    ['a replica map without the local zone', { zone: 'c', replicas: { a: memoryCache(), b: memoryCache() } }],
    ['an empty zone', { zone: '', replicas: { a: memoryCache() } }],
    ['a replica that is not a remote tier', { zone: 'a', replicas: { a: memoryCache(), b: { get() {} } } }],
    ['replicas that are not an object', { zone: 'a', replicas: [memoryCache()] }],
    ['a zero timeout', { zone: 'a', replicas: { a: memoryCache() }, timeoutMs: 0 }],
  ])('rejects %s with INVALID_OPTION', (_name, options) => {
    expect(() => zoneReplicated(options as never)).toThrow(expect.objectContaining({ code: 'INVALID_OPTION' }));
  });
});
