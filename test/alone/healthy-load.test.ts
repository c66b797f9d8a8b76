/**
 * Default options never shed healthy load: a burst of 1,000 calls, and an open loop of 2,000
 * calls/s to three instances answering in 100 ms. The servers run in the test's own process,
 * so the test needs the CPU to itself: `npm test` runs the files of test/alone one at a time
 * after the rest (on a starved event loop every answer is late, the dependency is no longer
 * healthy, and the adaptive limit is right to hold back).
 */
import { describe, expect, it } from 'vitest';
import { runHealthyLoad, startHealthyServers } from '../../bench/overload/healthy-load.js';
import { createClient, defineService, endpoint } from '../../src/index.js';

const service = defineService({ name: 'dependency', endpoints: { get: endpoint({ method: 'GET', path: '/item' }) } });

describe('defaults never shed healthy load', () => {
  it('Promise.all of 1,000 calls to a healthy instance: all succeed', async () => {
    const servers = await startHealthyServers(1, 50);
    const client = createClient(service, { instances: servers.urls });
    try {
      const results = await Promise.allSettled(Array.from({ length: 1000 }, () => client.get()));
      const failed = results.filter((result) => result.status === 'rejected');
      expect(failed.map((result) => (result as PromiseRejectedResult).reason?.code)).toEqual([]);
      expect(client.stats().endpoints.get?.shed).toBe(0);
      // The burst was above the starting limit (100): the limit grew to carry it.
      expect(client.stats().bulkhead?.limit).toBeGreaterThan(100);
    } finally {
      await client.close();
      await servers.close();
    }
  }, 20_000);

  it('2,000 calls/s to 3 instances answering in 100 ms (about 200 in flight): 0 shed, 0 failures', async () => {
    // The full 20 s run is `node --import tsx bench/overload/healthy-load.ts` (docs/overload.md).
    const result = await runHealthyLoad({ rate: 2000, durationS: 3, instances: 3, latencyMs: 100 });
    expect(result.failures).toEqual({});
    expect(result.ok).toBe(result.sent);
    expect(result.peakInflight).toBeGreaterThan(150);
  }, 30_000);
});
