/**
 * Client-side balancing and outlier ejection, end to end through `createClient` against real
 * node:http servers on 127.0.0.1, checked with server-side counts: P2C on attempts in flight,
 * weights, round-robin, same-zone preference, version routing, ejection after consecutive
 * failures with exponential periods, return after the period, and the ejection cap.
 *
 * Breakers are off (`breaker: false`): these tests drive failure rates that would open the
 * circuit, and they are about what happens below it.
 */
import { describe, expect, it } from 'vitest';
import type { ClientEvents } from '../../src/index.js';
import { type Client, createClient, ErrorCode, type InstanceInput } from '../../src/index.js';
import { failure } from '../helpers/assert.js';
import { movies } from '../helpers/movies.js';
import { closedPort, delay, type Handler, sendJson, startServer, type TestServer } from '../helpers/server.js';

type MoviesClient = Client<typeof movies>;

// --- helpers ---------------------------------------------------------------------------------

/** Answers the movie service: a movie for GET /movies/:id. */
const answer: Handler = (request, response) => {
  const id = Number(/^\/movies\/(\d+)$/.exec(request.url ?? '')?.[1] ?? 0);
  sendJson(response, 200, { id, title: 'Heat' });
};

const unavailable: Handler = (_request, response) => {
  response.writeHead(503, { 'content-type': 'text/plain' });
  response.end('unavailable');
};

/** A server that answers 503 while `failing` is set, else the movie. */
async function switchable(failing = false) {
  const control = { failing };
  const server = await startServer((request, response, body) =>
    control.failing ? unavailable(request, response, body) : answer(request, response, body),
  );
  return Object.assign(server, { control });
}

/** Collects a client's events of one kind, with the time each arrived. */
function collect<E extends keyof ClientEvents>(
  client: MoviesClient,
  event: E,
): Array<ClientEvents[E] & { at: number }> {
  const seen: Array<ClientEvents[E] & { at: number }> = [];
  client.on(event, (payload) => seen.push({ ...payload, at: performance.now() }));
  return seen;
}

const total = (servers: TestServer[]) => servers.reduce((sum, server) => sum + server.requests.length, 0);

/** Counts TCP connections accepted by the server. */
function countConnections(server: TestServer): () => number {
  let connections = 0;
  server.server.on('connection', () => connections++);
  return () => connections;
}

// --- tests -----------------------------------------------------------------------------------

describe('balance: power of two choices', () => {
  it('sends new calls to the instance with fewer attempts in flight', async () => {
    const slow = await startServer((request, response, body) => {
      setTimeout(() => answer(request, response, body), 400);
    });
    const fast = await startServer(answer);
    const client = createClient(movies, { breaker: false, instances: [slow.url, fast.url], timeoutMs: 2000 });
    try {
      // A call every 10 ms for ~300 ms: once one waits on the slow instance, the fast one
      // (nothing in flight) wins every comparison.
      const calls: Array<Promise<unknown>> = [];
      for (let index = 0; index < 30; index++) {
        calls.push(client.getMovie({ id: index }));
        await delay(10);
      }
      await Promise.all(calls);
      expect(slow.requests.length).toBeGreaterThanOrEqual(1);
      expect(slow.requests.length).toBeLessThanOrEqual(3);
      expect(fast.requests.length).toBe(30 - slow.requests.length);
    } finally {
      await client.close();
    }
  });

  it('weights: weight 1 and 3, sequential calls (nothing in flight) split roughly 25/75', async () => {
    const light = await startServer(answer);
    const heavy = await startServer(answer);
    const client = createClient(movies, {
      breaker: false,
      instances: [
        { url: light.url, weight: 1 },
        { url: heavy.url, weight: 3 },
      ],
    });
    try {
      for (let index = 0; index < 400; index++) await client.getMovie({ id: index });
      expect(total([light, heavy])).toBe(400);
      // Expected 300 of 400 (σ ≈ 9): loose bounds.
      expect(heavy.requests.length).toBeGreaterThan(0.6 * 400);
      // Weights are shares of traffic: the light instance is not starved.
      expect(light.requests.length).toBeGreaterThan(0.15 * 400);
    } finally {
      await client.close();
    }
  });

  it('round-robin alternates between instances', async () => {
    const order: string[] = [];
    const tagged =
      (name: string): Handler =>
      (request, response, body) => {
        order.push(name);
        answer(request, response, body);
      };
    const a = await startServer(tagged('a'));
    const b = await startServer(tagged('b'));
    const client = createClient(movies, { breaker: false, instances: [a.url, b.url], balancer: 'round-robin' });
    try {
      for (let index = 0; index < 20; index++) await client.getMovie({ id: index });
      expect(order).toEqual(Array.from({ length: 20 }, (_, index) => (index % 2 === 0 ? 'a' : 'b')));
    } finally {
      await client.close();
    }
  });
});

describe('balance: outlier ejection', () => {
  it('ejects after consecutive failures, sends nothing during the period, returns it after; the next period doubles', async () => {
    const failing = await startServer(unavailable);
    const healthy = await startServer(answer);
    const client = createClient(movies, {
      breaker: false,
      instances: [failing.url, healthy.url],
      outlier: { consecutiveFailures: 2, baseEjectionMs: 300 },
    });
    const marks: Array<{ type: string; at: number; failingRequests: number; ejectionMs?: number }> = [];
    client.on('eject', (event) => {
      expect(event.instance).toBe(failing.url);
      expect(event.consecutiveFailures).toBe(2);
      marks.push({ ...event, at: performance.now(), failingRequests: failing.requests.length });
    });
    client.on('return', (event) => {
      expect(event.instance).toBe(failing.url);
      marks.push({ type: 'return', at: performance.now(), failingRequests: failing.requests.length });
    });
    try {
      const until = performance.now() + 4000;
      let calls = 0;
      while (marks.length < 4 && performance.now() < until) {
        // Every call succeeds: a 503 from the failing instance is retried on the healthy one.
        expect(await client.getMovie({ id: calls++ })).toMatchObject({ title: 'Heat' });
        await delay(5);
      }
      expect(marks.map((mark) => mark.type)).toEqual(['eject', 'return', 'eject', 'return']);
      const [eject1, return1, eject2, return2] = marks as [
        (typeof marks)[0],
        (typeof marks)[0],
        (typeof marks)[0],
        (typeof marks)[0],
      ];
      // base × 2^(n−1), ± 10% jitter
      expect(eject1.ejectionMs).toBeGreaterThanOrEqual(270);
      expect(eject1.ejectionMs).toBeLessThanOrEqual(330);
      expect(eject2.ejectionMs).toBeGreaterThanOrEqual(540);
      expect(eject2.ejectionMs).toBeLessThanOrEqual(660);
      // No traffic to the ejected instance during either period.
      expect(return1.failingRequests).toBe(eject1.failingRequests);
      expect(return2.failingRequests).toBe(eject2.failingRequests);
      // Traffic resumed after the return: two more failures made the second ejection.
      expect(eject2.failingRequests).toBe(return1.failingRequests + 2);
      const first = return1.at - eject1.at;
      const second = return2.at - eject2.at;
      // Marks are taken when the listeners run: on a loaded machine the eject listener can run
      // a few ms after the ejection started, so allow 30 ms; an early return would be a period short.
      expect(first).toBeGreaterThanOrEqual(eject1.ejectionMs! - 30);
      expect(first).toBeLessThan(800);
      expect(second).toBeGreaterThanOrEqual(eject2.ejectionMs! - 30);
      expect(second).toBeLessThan(1300);
      expect(second / first).toBeGreaterThan(1.4);
      // After the return, the instance gets traffic again.
      const before = failing.requests.length;
      for (let index = 0; index < 20 && failing.requests.length === before; index++) {
        await client.getMovie({ id: index });
      }
      expect(failing.requests.length).toBeGreaterThan(before);
    } finally {
      await client.close();
    }
  });

  it.each([
    { instances: 3, percent: 50, cap: 1 },
    { instances: 4, percent: 50, cap: 2 },
    { instances: 3, percent: 0, cap: 0 },
  ])(
    '$instances failing instances, maxEjectionPercent $percent: at most $cap ejected at a time',
    async ({ instances, percent, cap }) => {
      const servers = await Promise.all(Array.from({ length: instances }, () => startServer(unavailable)));
      const client = createClient(movies, {
        breaker: false,
        instances: servers.map((server) => server.url),
        retry: false,
        outlier: { consecutiveFailures: 2, baseEjectionMs: 10_000, maxEjectionPercent: percent },
      });
      let ejected = 0;
      let most = 0;
      const ejections = collect(client, 'eject');
      client.on('eject', () => {
        ejected++;
        most = Math.max(most, ejected);
      });
      client.on('return', () => ejected--);
      try {
        for (let index = 0; index < 20 * instances; index++) {
          const error = await failure(client.getMovie({ id: index }));
          expect(error.code).toBe(ErrorCode.HTTP_STATUS);
        }
        expect(most).toBe(cap);
        expect(new Set(ejections.map((event) => event.instance)).size).toBe(cap);
        // The instances left in rotation kept getting the traffic.
        const ejectedUrls = new Set(ejections.map((event) => event.instance));
        for (const server of servers) {
          if (!ejectedUrls.has(server.url)) expect(server.requests.length).toBeGreaterThan(2);
          else expect(server.requests.length).toBeLessThan(10);
        }
      } finally {
        await client.close();
      }
    },
  );
});

describe('balance: zones', () => {
  it('a zone-a client sends everything to zone a; when a1 and a2 fail and are ejected, to b1', async () => {
    const a1 = await switchable();
    const a2 = await switchable();
    const b1 = await switchable();
    const client = createClient(movies, {
      breaker: false,
      zone: 'a',
      instances: [
        { url: a1.url, zone: 'a' },
        { url: b1.url, zone: 'b' },
        { url: a2.url, zone: 'a' },
      ],
      outlier: { consecutiveFailures: 2, baseEjectionMs: 10_000, maxEjectionPercent: 100 },
    });
    const ejections = collect(client, 'eject');
    try {
      for (let index = 0; index < 40; index++) await client.getMovie({ id: index });
      expect(b1.requests).toHaveLength(0);
      expect(a1.requests.length).toBeGreaterThan(5);
      expect(a2.requests.length).toBeGreaterThan(5);

      a1.control.failing = true;
      a2.control.failing = true;
      // Until both are ejected a call may meet a1 and then a2 (both local) and fail.
      for (let index = 0; index < 40 && ejections.length < 2; index++) {
        await client.getMovie({ id: index }).catch(() => undefined);
      }
      expect(ejections.map((event) => event.instance).sort()).toEqual([a1.url, a2.url].sort());
      const local = a1.requests.length + a2.requests.length;
      const remote = b1.requests.length;
      for (let index = 0; index < 30; index++) {
        expect(await client.getMovie({ id: index })).toEqual({ id: index, title: 'Heat' });
      }
      expect(a1.requests.length + a2.requests.length).toBe(local);
      expect(b1.requests.length).toBe(remote + 30);
    } finally {
      await client.close();
    }
  });

  it('zone a refusing connections: with maxRetries 2 every call succeeds, and traffic settles on zone b', async () => {
    const a1 = `http://127.0.0.1:${await closedPort()}`;
    const a2 = `http://127.0.0.1:${await closedPort()}`;
    const b1 = await startServer(answer);
    const client = createClient(movies, {
      breaker: false,
      zone: 'a',
      instances: [
        { url: a1, zone: 'a' },
        { url: a2, zone: 'a' },
        { url: b1.url, zone: 'b' },
      ],
      retry: { maxRetries: 2 },
      outlier: { consecutiveFailures: 2, maxEjectionPercent: 100 },
    });
    const retries = collect(client, 'retry');
    try {
      for (let index = 0; index < 30; index++) {
        expect(await client.getMovie({ id: index })).toEqual({ id: index, title: 'Heat' });
      }
      expect(b1.requests).toHaveLength(30);
      // Each of a1 and a2 failed twice (each failure retried once) and was ejected; then no call
      // retried. The first call went a1 → a2 → b1 (or a2 → a1 → b1); once one of them is
      // ejected, half the calls spill to zone b directly, so the second failure of the other may
      // come from a call that went straight there (a → b1).
      expect(retries).toHaveLength(4);
      expect(retries.filter((retry) => retry.attempt === 3).length).toBeGreaterThanOrEqual(1);
    } finally {
      await client.close();
    }
  });
});

describe('balance: version routing', () => {
  it("route: { version: 'v2' } reaches only v2 instances; 'v9' fails with NO_HEALTHY_INSTANCE and no I/O", async () => {
    const v1 = await startServer(answer);
    const v2a = await startServer(answer);
    const v2b = await startServer(answer);
    const instances: InstanceInput[] = [
      { url: v1.url, version: 'v1' },
      { url: v2a.url, version: 'v2' },
      { url: v2b.url, version: 'v2' },
    ];
    const connections = [v1, v2a, v2b].map(countConnections);
    const client = createClient(movies, { breaker: false, instances });
    try {
      for (let index = 0; index < 40; index++) await client.getMovie({ id: index }, { route: { version: 'v2' } });
      expect(v1.requests).toHaveLength(0);
      expect(v2a.requests.length + v2b.requests.length).toBe(40);
      expect(v2a.requests.length).toBeGreaterThan(5);
      expect(v2b.requests.length).toBeGreaterThan(5);

      const before = connections.map((count) => count());
      const start = performance.now();
      const error = await failure(client.getMovie({ id: 1 }, { route: { version: 'v9' } }));
      expect(performance.now() - start).toBeLessThan(100);
      expect(error.code).toBe(ErrorCode.NO_HEALTHY_INSTANCE);
      expect(error.message).toContain('"v9"');
      expect(error.requestSent).toBe(false);
      expect(error.retryable).toBe(false);
      expect(total([v1, v2a, v2b])).toBe(40);
      expect(connections.map((count) => count())).toEqual(before);

      // Without a route every instance may serve.
      for (let index = 0; index < 40; index++) await client.getMovie({ id: index });
      expect(v1.requests.length).toBeGreaterThan(0);
    } finally {
      await client.close();
    }
  });
});
