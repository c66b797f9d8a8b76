/**
 * The adaptive bulkhead end to end against real node:http servers on 127.0.0.1 (that default
 * options never shed healthy load is test/alone/healthy-load.test.ts): the limit falls when the server's latency doubles and
 * rises again when it recovers, drops (503s) bring it down, `stats()` shows it, and every
 * option is checked.
 */
import { describe, expect, it } from 'vitest';
import {
  type AdaptiveBulkheadOptions,
  createClient,
  defineService,
  ErrorCode,
  endpoint,
  isTelescopeError,
} from '../../src/index.js';
import { delay, startServer } from '../helpers/server.js';

const service = defineService({ name: 'dependency', endpoints: { get: endpoint({ method: 'GET', path: '/item' }) } });

/** A server answering after `latencyMs()`, or with `status()` when it is not 200. */
async function adjustableServer(latencyMs: () => number, status: () => number = () => 200) {
  return startServer(async (_request, response) => {
    await delay(latencyMs());
    const code = status();
    response.writeHead(code, { 'content-type': 'application/json', 'content-length': '2' });
    response.end('{}');
  });
}

/** `workers` callers calling one after another until `stop()`. */
function closedLoop(call: () => Promise<unknown>, workers: number) {
  let running = true;
  const codes: Record<string, number> = {};
  const loops = Array.from({ length: workers }, async () => {
    while (running) {
      await call().then(
        () => undefined,
        (error: unknown) => {
          const code = isTelescopeError(error) ? error.code : 'UNKNOWN';
          codes[code] = (codes[code] ?? 0) + 1;
        },
      );
    }
  });
  return {
    codes,
    stop: async () => {
      running = false;
      await Promise.all(loops);
    },
  };
}

describe('the adaptive limit on a real server', () => {
  it('falls when the server’s latency doubles under it, and rises again when it recovers', async () => {
    let latencyMs = 40;
    const server = await adjustableServer(() => latencyMs);
    const client = createClient(service, {
      instances: [server.url],
      timeoutMs: 10_000,
      retry: false,
      breaker: false,
      // Demand (80 callers) above the highest limit: the client is limit-bound, as under load.
      // With spare limit (inflight under half of it) Gradient2 leaves the limit alone, as
      // Netflix's does: a client that is not limited has nothing to learn.
      bulkhead: { adaptive: 'gradient2', minConcurrent: 5, maxConcurrent: 60, maxQueue: 1000 },
    });
    const load = closedLoop(() => client.get(), 80);
    const limit = () => client.stats().bulkhead?.limit ?? 0;
    try {
      // Long enough for the first windows (connections opening, JIT) to be behind it.
      await delay(4000);
      const healthy = limit();
      latencyMs = 80;
      await delay(5000);
      const slow = limit();
      expect(slow).toBeLessThan(healthy * 0.7);
      latencyMs = 40;
      await delay(4000);
      const recovered = limit();
      expect(recovered).toBeGreaterThan(slow * 1.3);
      expect(load.codes).toEqual({});
    } finally {
      await load.stop();
      await client.close();
    }
  }, 40_000);

  it('falls on 503s (drops) and rises again once the server answers', async () => {
    let status = 200;
    const server = await adjustableServer(
      () => 20,
      () => status,
    );
    const client = createClient(service, {
      instances: [server.url],
      timeoutMs: 10_000,
      retry: false,
      breaker: false,
      bulkhead: { adaptive: 'aimd', minConcurrent: 3, maxQueue: 10_000 },
    });
    const load = closedLoop(() => client.get(), 60);
    const limit = () => client.stats().bulkhead?.limit ?? 0;
    try {
      await delay(1000);
      const healthy = limit();
      status = 503;
      await delay(3000);
      const failing = limit();
      expect(failing).toBeLessThan(healthy / 2);
      status = 200;
      await delay(2000);
      expect(limit()).toBeGreaterThan(failing * 2);
      expect(load.codes.HTTP_STATUS).toBeGreaterThan(0);
    } finally {
      await load.stop();
      await client.close();
    }
  }, 20_000);

  it('stats() shows the algorithm, the limit, calls in flight and calls queued', async () => {
    const server = await adjustableServer(() => 200);
    const client = createClient(service, {
      instances: [server.url],
      bulkhead: { adaptive: 'vegas', minConcurrent: 2, maxConcurrent: 4, maxQueue: 3 },
    });
    try {
      const calls = Array.from({ length: 9 }, () => client.get().catch((error: unknown) => error));
      await delay(50);
      expect(client.stats().bulkhead).toMatchObject({ mode: 'vegas', limit: 4, inflight: 4, queued: 3 });
      const settled = await Promise.all(calls);
      const shed = settled.filter((value) => isTelescopeError(value) && value.code === ErrorCode.BULKHEAD_FULL);
      expect(shed).toHaveLength(2);
      expect(client.stats().bulkhead).toMatchObject({ inflight: 0, queued: 0 });
    } finally {
      await client.close();
    }
  });
});

describe('bad bulkhead options', () => {
  const cases: Array<[string, unknown, RegExp]> = [
    ['unknown algorithm', { adaptive: 'bbr' }, /bulkhead\.adaptive must be one of 'gradient2', 'vegas', 'aimd'/],
    [
      'min > max',
      { adaptive: 'vegas', minConcurrent: 50, maxConcurrent: 10 },
      /bulkhead\.minConcurrent must be an integer ≤ maxConcurrent \(10\)/,
    ],
    ['negative queue', { adaptive: 'aimd', maxQueue: -1 }, /bulkhead\.maxQueue must be an integer in \[0, 1000000\]/],
    [
      'fractional min',
      { adaptive: 'gradient2', minConcurrent: 2.5 },
      /bulkhead\.minConcurrent must be an integer in \[1, 1000000\]/,
    ],
    [
      'zero max',
      { adaptive: 'gradient2', maxConcurrent: 0 },
      /bulkhead\.maxConcurrent must be an integer in \[1, 1000000\]/,
    ],
    ['NaN queue', { adaptive: 'gradient2', maxQueue: Number.NaN }, /bulkhead\.maxQueue/],
    ['a string', 'gradient2', /bulkhead must be an object or false/],
  ];
  it.each(cases)('%s: INVALID_OPTION at createClient, naming the option and its range', (_name, bulkhead, message) => {
    let caught: unknown;
    try {
      createClient(service, { instances: ['http://127.0.0.1:1'], bulkhead: bulkhead as AdaptiveBulkheadOptions });
    } catch (error) {
      caught = error;
    }
    expect(isTelescopeError(caught) && caught.code).toBe(ErrorCode.INVALID_OPTION);
    expect((caught as Error).message).toMatch(message);
  });
});
