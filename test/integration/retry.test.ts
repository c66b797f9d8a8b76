/**
 * Retries, the retry budget and hedging, end to end through `createClient` against real
 * node:http servers on 127.0.0.1, checked with server-side counts: what is retried (idempotent
 * calls, idempotency keys, writes that never left; retryable failures only), where (an instance
 * not yet tried, or a fresh connection), when (Retry-After inside the budget, never past it),
 * how much (the client-wide retry budget), and hedged attempts that cancel the loser.
 *
 * Breakers are off (`breaker: false`): these tests drive failure rates that would open the
 * circuit, and they are about what happens below it.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import { describe, expect, it } from 'vitest';
import type { ClientEvents } from '../../src/index.js';
import {
  type Client,
  type ClientOptions,
  createClient,
  ErrorCode,
  HttpStatusError,
  systemClock,
  type TelescopeError,
  wheelOf,
} from '../../src/index.js';
import { startInstances } from '../../src/testing/index.js';
import { failure, timedFailure, waitFor } from '../helpers/assert.js';
import { movies } from '../helpers/movies.js';
import { closedPort, delay, type Handler, sendJson, startServer, type TestServer } from '../helpers/server.js';

type MoviesClient = Client<typeof movies>;

// --- helpers ---------------------------------------------------------------------------------

/** Answers the movie service: a movie for GET /movies/:id, `{ ok: true }` for a rating. */
const answer: Handler = (request, response) => {
  if (request.method === 'POST') return sendJson(response, 200, { ok: true });
  const id = Number(/^\/movies\/(\d+)$/.exec(request.url ?? '')?.[1] ?? 0);
  sendJson(response, 200, { id, title: 'Heat' });
};

/** Answers every request with `status` (text body, optional extra headers). */
function statusHandler(status: number, headers: Record<string, string> = {}): Handler {
  return (_request, response) => {
    response.writeHead(status, { 'content-type': 'text/plain', ...headers });
    response.end(`status ${status}`);
  };
}

/** A handler that never answers (the server helper destroys its sockets after the test). */
const hang: Handler = () => {};

/** Collects a client's events of one kind. */
function collect<E extends keyof ClientEvents>(client: MoviesClient, event: E): Array<ClientEvents[E]> {
  const seen: Array<ClientEvents[E]> = [];
  client.on(event, (payload) => seen.push(payload));
  return seen;
}

/** Server-side identity of the sockets that carried each request, in arrival order. */
function socketIds(server: TestServer): () => number[] {
  const ids = new WeakMap<Socket, number>();
  const seen: number[] = [];
  let next = 0;
  server.server.on('request', (request: IncomingMessage) => {
    let id = ids.get(request.socket);
    if (id === undefined) {
      id = ++next;
      ids.set(request.socket, id);
    }
    seen.push(id);
  });
  return () => seen;
}

const callIds = (server: TestServer) => server.requests.map((request) => request.headers['x-call-id']);
const total = (servers: TestServer[]) => servers.reduce((sum, server) => sum + server.requests.length, 0);

/** Runs `count` calls, at most `concurrency` at a time; resolves with the settled results in call order. */
async function runCalls<T>(
  count: number,
  concurrency: number,
  call: (index: number) => Promise<T>,
): Promise<Array<PromiseSettledResult<T> & { ms: number }>> {
  const results: Array<PromiseSettledResult<T> & { ms: number }> = new Array(count);
  let next = 0;
  const worker = async () => {
    while (next < count) {
      const index = next++;
      const start = performance.now();
      try {
        const value = await call(index);
        results[index] = { status: 'fulfilled', value, ms: performance.now() - start };
      } catch (reason) {
        results[index] = { status: 'rejected', reason, ms: performance.now() - start };
      }
    }
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
  return results;
}

// --- tests -----------------------------------------------------------------------------------

describe('retry: one hanging instance among three', () => {
  async function scenario(outlier: ClientOptions['outlier']) {
    // Healthy instances take 20 ms, so that the run spans several attempt timeouts.
    const slowAnswer: Handler = (request, response, body) => {
      setTimeout(() => answer(request, response, body), 20);
    };
    const healthy = [await startServer(slowAnswer), await startServer(slowAnswer)];
    const hanging = await startServer(hang);
    const client = createClient(movies, {
      breaker: false,
      instances: [healthy[0]!.url, hanging.url, healthy[1]!.url],
      timeoutMs: 1000,
      attemptTimeoutMs: 150,
      outlier,
    });
    const ejections = collect(client, 'eject');
    const retries = collect(client, 'retry');
    // Arrival times at the hanging instance, and the time it was ejected.
    const arrivals: number[] = [];
    hanging.server.on('request', () => arrivals.push(performance.now()));
    let ejectedAt = Number.POSITIVE_INFINITY;
    client.on('eject', () => {
      ejectedAt = performance.now();
    });
    try {
      const results = await runCalls(200, 20, (index) =>
        client.getMovie({ id: index }, { headers: { 'x-call-id': String(index) } }),
      );
      const failed = results.filter((result) => result.status === 'rejected');
      expect(failed.map((result) => (result as PromiseRejectedResult).reason?.code)).toEqual([]);
      results.forEach((result, index) => {
        expect(result.status === 'fulfilled' && result.value).toEqual({ id: index, title: 'Heat' });
      });
      // One attempt timeout (150 ms) plus one quick retry: far inside the 1000 ms budget.
      const slowest = Math.max(...results.map((result) => result.ms));
      expect(slowest).toBeLessThan(1000);

      // No call went to the hanging instance twice: each of its requests has a distinct call id.
      const atHanging = callIds(hanging);
      expect(atHanging.length).toBeGreaterThan(0);
      expect(new Set(atHanging).size).toBe(atHanging.length);
      // Every call that met the hanging instance was retried once, elsewhere, and answered there.
      expect(retries).toHaveLength(atHanging.length);
      for (const retry of retries) {
        expect(retry).toMatchObject({ code: ErrorCode.ATTEMPT_TIMEOUT, instance: hanging.url, attempt: 2 });
      }
      const answered = [...callIds(healthy[0]!), ...callIds(healthy[1]!)];
      expect(answered).toHaveLength(200);
      expect(new Set(answered).size).toBe(200);
      expect(wheelOf(systemClock).size).toBe(0);
      return { hanging, ejections, arrivals, ejectedAt, end: performance.now() };
    } finally {
      await client.close();
    }
  }

  it('with outlier ejection off: 200 calls (20 at a time, 150 ms attempts) all succeed well inside the budget', async () => {
    const { hanging, ejections } = await scenario(false);
    expect(ejections).toEqual([]);
    // P2C keeps it from most calls (its attempts stay in flight), but it is probed again and again.
    expect(hanging.requests.length).toBeGreaterThanOrEqual(12);
    expect(hanging.requests.length).toBeLessThan(100);
  });

  it('with default outlier ejection: the hanging instance is ejected after 5 failures and then left alone', async () => {
    const { hanging, ejections, arrivals, ejectedAt, end } = await scenario(undefined);
    expect(ejections).toHaveLength(1);
    expect(ejections[0]).toMatchObject({
      service: 'movies',
      instance: hanging.url,
      consecutiveFailures: 5,
      reason: 'consecutive-failures',
      timesEjected: 1,
    });
    // Only the attempts in flight before the fifth timeout reached it. (A request sent just
    // before the ejection may be read by the server just after it: hence the 100 ms margin.)
    expect(hanging.requests.length).toBeGreaterThanOrEqual(5);
    expect(hanging.requests.length).toBeLessThan(20);
    // Calls went on well after the ejection (about 100 more), none reached it.
    expect(end - ejectedAt).toBeGreaterThan(50);
    expect(arrivals.filter((at) => at > ejectedAt + 100)).toEqual([]);
  });
});

describe('retry: refused connections', () => {
  it('one instance refusing connections among three: 100 calls, no error reaches the caller', async () => {
    const healthy = [await startServer(answer), await startServer(answer)];
    const refused = `http://127.0.0.1:${await closedPort()}`;
    const client = createClient(movies, {
      breaker: false,
      instances: [refused, ...healthy.map((server) => server.url)],
    });
    const retries = collect(client, 'retry');
    try {
      const results = await runCalls(100, 5, (index) => client.getMovie({ id: index }));
      expect(results.filter((result) => result.status === 'rejected')).toEqual([]);
      expect(total(healthy)).toBe(100);
      expect(retries.length).toBeGreaterThan(0);
      for (const retry of retries) expect(retry).toMatchObject({ code: ErrorCode.CONNECT_FAILED, instance: refused });
    } finally {
      await client.close();
    }
  });
});

describe('retry: the retry budget', () => {
  it('all instances answering 503: retries stay within ratio × calls + minPerSecond × window', async () => {
    const servers = [
      await startServer(statusHandler(503)),
      await startServer(statusHandler(503)),
      await startServer(statusHandler(503)),
    ];
    const client = createClient(movies, {
      breaker: false,
      instances: servers.map((server) => server.url),
      outlier: false,
      retry: { budget: { ratio: 0.1, minPerSecond: 10 } },
    });
    const retries = collect(client, 'retry');
    const exhausted = collect(client, 'budget-exhausted');
    const calls = 300;
    try {
      expect(client.retryTokens()).toBe(100);
      const errors: TelescopeError[] = [];
      for (let index = 0; index < calls; index++) errors.push(await failure(client.getMovie({ id: index })));

      for (const error of errors) {
        expect(error.code).toBe(ErrorCode.HTTP_STATUS);
        expect((error as HttpStatusError).status).toBe(503);
      }
      const attempts = total(servers);
      // Each call is one attempt, plus one per retry event.
      expect(attempts).toBe(calls + retries.length);
      // floor = minPerSecond × window (10 s) = 100 tokens; each call earns 0.1 of a token.
      const floor = 10 * 10;
      expect(attempts).toBeLessThanOrEqual(Math.floor(calls * (1 + 0.1)) + floor);
      // The floor was spent in full: retries did happen, until the budget ran dry.
      expect(retries.length).toBeGreaterThanOrEqual(floor);
      const refused = errors.filter((error) => error.retryBudgetExhausted === true);
      expect(refused.length).toBeGreaterThan(0);
      // A call either retried (and failed again) or was refused a retry by the budget.
      expect(refused.length).toBe(calls - retries.length);
      expect(exhausted).toHaveLength(refused.length);
      expect(exhausted[0]).toEqual({
        type: 'budget-exhausted',
        service: 'movies',
        endpoint: 'getMovie',
        code: 'HTTP_STATUS',
      });
      // The error of a refused retry is the original attempt's: attempt 1.
      for (const error of refused) expect(error.attempt).toBe(1);
      expect(client.retryTokens()).toBe(0);
    } finally {
      await client.close();
    }
  });

  it('without a budget (budget: false) every failed call is retried: attempts = 2 × calls', async () => {
    const servers = [await startServer(statusHandler(503)), await startServer(statusHandler(503))];
    const client = createClient(movies, {
      breaker: false,
      instances: servers.map((server) => server.url),
      outlier: false,
      retry: { budget: false },
    });
    const exhausted = collect(client, 'budget-exhausted');
    const calls = 150;
    try {
      for (let index = 0; index < calls; index++) {
        const error = await failure(client.getMovie({ id: index }));
        expect(error.retryBudgetExhausted).toBeUndefined();
        expect(error.attempt).toBe(2);
      }
      expect(total(servers)).toBe(2 * calls);
      expect(exhausted).toEqual([]);
      expect(client.retryTokens()).toBe(Number.POSITIVE_INFINITY);
    } finally {
      await client.close();
    }
  });
});

describe('retry: what is retried', () => {
  it('maxRetries defaults to 1, each attempt on an instance not yet tried in the call; maxRetries 2 tries all three', async () => {
    const servers = [
      await startServer(statusHandler(503)),
      await startServer(statusHandler(503)),
      await startServer(statusHandler(503)),
    ];
    for (const [maxRetries, attempts] of [
      [undefined, 2],
      [2, 3],
    ] as const) {
      for (const server of servers) server.requests.length = 0;
      const client = createClient(movies, {
        breaker: false,
        instances: servers.map((server) => server.url),
        outlier: false,
        retry: maxRetries === undefined ? undefined : { maxRetries },
      });
      try {
        for (let index = 0; index < 20; index++) {
          const error = await failure(client.getMovie({ id: index }, { headers: { 'x-call-id': String(index) } }));
          expect(error.attempt).toBe(attempts);
        }
        expect(total(servers)).toBe(20 * attempts);
        // Per call, every attempt went to a different instance.
        for (const server of servers) {
          const ids = callIds(server);
          expect(new Set(ids).size).toBe(ids.length);
        }
      } finally {
        await client.close();
      }
    }
  });

  it('retries 502, 503, 504 and 429 on the other instance; not 500, 404 or 400', async () => {
    const good = await startServer(answer);
    for (const [status, retried] of [
      [502, true],
      [503, true],
      [504, true],
      [429, true],
      [500, false],
      [404, false],
      [400, false],
    ] as const) {
      const bad = await startServer(statusHandler(status));
      good.requests.length = 0;
      // Round-robin from the first instance: the first attempt always meets the bad one.
      const client = createClient(movies, { breaker: false, instances: [bad.url, good.url], balancer: 'round-robin' });
      try {
        if (retried) {
          expect(await client.getMovie({ id: status })).toEqual({ id: status, title: 'Heat' });
          expect(good.requests).toHaveLength(1);
        } else {
          const error = await failure(client.getMovie({ id: status }));
          expect((error as HttpStatusError).status).toBe(status);
          expect(error.retryable).toBe(false);
          expect(good.requests).toHaveLength(0);
        }
        expect(bad.requests).toHaveLength(1);
      } finally {
        await client.close();
        await bad.close();
      }
    }
  });

  it('a POST answered 503 is not retried; with an idempotency-key it is, carrying the same key', async () => {
    const servers = [await startServer(statusHandler(503)), await startServer(statusHandler(503))];
    const client = createClient(movies, {
      breaker: false,
      instances: servers.map((server) => server.url),
      outlier: false,
    });
    const retries = collect(client, 'retry');
    try {
      const error = await failure(client.rate({ id: 1 }, { stars: 5 }));
      expect(error.code).toBe(ErrorCode.HTTP_STATUS);
      expect(error.requestSent).toBe(true);
      expect(error.retryBudgetExhausted).toBeUndefined();
      expect(total(servers)).toBe(1);
      expect(retries).toEqual([]);

      const keyed = await failure(client.rate({ id: 1 }, { stars: 5 }, { headers: { 'Idempotency-Key': 'k1' } }));
      expect(keyed.code).toBe(ErrorCode.HTTP_STATUS);
      expect(keyed.attempt).toBe(2);
      expect(total(servers)).toBe(3);
      const keyedRequests = servers.flatMap((server) =>
        server.requests.filter((request) => request.headers['idempotency-key'] !== undefined),
      );
      expect(keyedRequests).toHaveLength(2);
      expect(keyedRequests.map((request) => request.headers['idempotency-key'])).toEqual(['k1', 'k1']);
      expect(keyedRequests.map((request) => request.body)).toEqual(['{"stars":5}', '{"stars":5}']);
      // One on each instance.
      for (const server of servers) {
        expect(server.requests.filter((request) => request.headers['idempotency-key'] === 'k1')).toHaveLength(1);
      }
      expect(retries).toHaveLength(1);
    } finally {
      await client.close();
    }
  });

  it('a POST whose connection was refused (requestSent false) is retried and reaches the healthy instance once', async () => {
    const healthy = await startServer(answer);
    const refused = `http://127.0.0.1:${await closedPort()}`;
    const client = createClient(movies, {
      breaker: false,
      instances: [refused, healthy.url],
      balancer: 'round-robin',
      outlier: false,
    });
    const retries = collect(client, 'retry');
    try {
      for (let index = 0; index < 5; index++) {
        expect(await client.rate({ id: index }, { stars: 3 }, { headers: { 'x-call-id': String(index) } })).toEqual({
          ok: true,
        });
      }
      expect(callIds(healthy)).toEqual(['0', '1', '2', '3', '4']);
      expect(healthy.requests.every((request) => request.method === 'POST')).toBe(true);
      expect(retries).toHaveLength(5);
      for (const retry of retries) {
        expect(retry).toMatchObject({
          endpoint: 'rate',
          code: ErrorCode.CONNECT_FAILED,
          instance: refused,
          attempt: 2,
        });
      }
    } finally {
      await client.close();
    }
  });

  it('a POST reset mid-request is not retried (it may have been processed)', async () => {
    const resetting = await startServer((_request, response) => {
      response.socket?.destroy();
    });
    const healthy = await startServer(answer);
    const client = createClient(movies, {
      breaker: false,
      instances: [resetting.url, healthy.url],
      balancer: 'round-robin',
      outlier: false,
    });
    try {
      const error = await failure(client.rate({ id: 1 }, { stars: 1 }));
      expect(error.code).toBe(ErrorCode.CONNECTION_RESET);
      expect(error.requestSent).toBe(true);
      expect(resetting.requests).toHaveLength(1);
      expect(healthy.requests).toHaveLength(0);
    } finally {
      await client.close();
    }
  });
});

describe('retry: a single instance', () => {
  it('a 503 is retried on the same instance over a new connection, which is closed afterwards', async () => {
    let count = 0;
    // The second request (on the pooled keep-alive connection of the first) is answered 503.
    const server = await startServer((request, response, body) => {
      if (++count === 2) return statusHandler(503)(request, response, body);
      return answer(request, response, body);
    });
    const sockets = socketIds(server);
    // One pooled connection, so that the second call certainly goes over the first call's socket.
    const client = createClient(movies, { breaker: false, instances: [server.url], connections: 1 });
    const retries = collect(client, 'retry');
    try {
      expect(await client.getMovie({ id: 1 })).toEqual({ id: 1, title: 'Heat' });
      expect(await client.getMovie({ id: 2 })).toEqual({ id: 2, title: 'Heat' });
      expect(server.requests.map((request) => request.url)).toEqual(['/movies/1', '/movies/2', '/movies/2']);
      // The 503 came over the pooled connection; the retry went over a new one.
      expect(sockets()).toEqual([1, 1, 2]);
      expect(retries).toHaveLength(1);
      expect(retries[0]).toMatchObject({ instance: server.url, code: ErrorCode.HTTP_STATUS, attempt: 2 });
      // The one-off connection is closed; the pooled one stays for keep-alive.
      await waitFor('the one-off connection to close', () => server.openSockets() === 1);
      // Later calls use the pool again.
      expect(await client.getMovie({ id: 3 })).toEqual({ id: 3, title: 'Heat' });
      expect(sockets()).toEqual([1, 1, 2, 1]);
    } finally {
      await client.close();
    }
  });

  it('a connection reset is retried over a new connection', async () => {
    let count = 0;
    const server = await startServer((request, response, body) => {
      if (++count === 1) return void response.socket?.destroy();
      return answer(request, response, body);
    });
    const sockets = socketIds(server);
    const client = createClient(movies, { breaker: false, instances: [server.url] });
    try {
      expect(await client.getMovie({ id: 4 })).toEqual({ id: 4, title: 'Heat' });
      expect(sockets()).toHaveLength(2);
      expect(sockets()[1]).not.toBe(sockets()[0]);
    } finally {
      await client.close();
    }
  });
});

describe('retry: the deadline budget', () => {
  it('no retry when the budget cannot fit another attempt: timeoutMs 200, one hanging instance', async () => {
    const server = await startServer(hang);
    const client = createClient(movies, { breaker: false, instances: [server.url], timeoutMs: 200 });
    const retries = collect(client, 'retry');
    try {
      const { error, ms } = await timedFailure(client.getMovie({ id: 1 }));
      expect(error.code).toBe(ErrorCode.DEADLINE_EXCEEDED);
      expect(ms).toBeGreaterThan(150);
      expect(ms).toBeLessThan(1000);
      await delay(100);
      expect(server.requests).toHaveLength(1);
      expect(retries).toEqual([]);
    } finally {
      await client.close();
    }
  });

  it('no retry after an attempt timeout that leaves less than an attempt needs (180 of 200 ms)', async () => {
    const servers = [await startServer(hang), await startServer(hang)];
    const client = createClient(movies, {
      breaker: false,
      instances: servers.map((server) => server.url),
      timeoutMs: 200,
      attemptTimeoutMs: 180,
    });
    const retries = collect(client, 'retry');
    try {
      const { error, ms } = await timedFailure(client.getMovie({ id: 1 }));
      expect(error.code).toBe(ErrorCode.ATTEMPT_TIMEOUT);
      expect(ms).toBeLessThan(1000);
      await delay(100);
      expect(total(servers)).toBe(1);
      expect(retries).toEqual([]);
    } finally {
      await client.close();
    }
  });
});

describe('retry: Retry-After', () => {
  /** An instance answering `status` with `Retry-After: retryAfterS`, then a healthy one (round-robin). */
  async function behindRetryAfter(status: number, retryAfterS: number, timeoutMs: number) {
    const limited = await startServer(statusHandler(status, { 'retry-after': String(retryAfterS) }));
    const healthy = await startServer(answer);
    const client = createClient(movies, {
      breaker: false,
      instances: [limited.url, healthy.url],
      balancer: 'round-robin',
      timeoutMs,
    });
    return { limited, healthy, client, retries: collect(client, 'retry') };
  }

  it('429 with Retry-After: 1 and a 3000 ms budget is retried after ≥ 1 s on the other instance', async () => {
    const { limited, healthy, client, retries } = await behindRetryAfter(429, 1, 3000);
    try {
      const start = performance.now();
      expect(await client.getMovie({ id: 9 })).toEqual({ id: 9, title: 'Heat' });
      const ms = performance.now() - start;
      expect(ms).toBeGreaterThanOrEqual(990);
      expect(ms).toBeLessThan(2500);
      expect(limited.requests).toHaveLength(1);
      expect(healthy.requests).toHaveLength(1);
      expect(retries).toEqual([
        {
          type: 'retry',
          service: 'movies',
          endpoint: 'getMovie',
          attempt: 2,
          code: ErrorCode.HTTP_STATUS,
          instance: limited.url,
          delayMs: 1000,
        },
      ]);
    } finally {
      await client.close();
    }
  });

  it('503 with Retry-After: 1 (an overloaded instance) is retried at once on the other instance', async () => {
    const { limited: overloaded, healthy, client, retries } = await behindRetryAfter(503, 1, 3000);
    try {
      const start = performance.now();
      expect(await client.getMovie({ id: 9 })).toEqual({ id: 9, title: 'Heat' });
      // Waiting for the Retry-After would take ≥ 1 s; without it, two loopback requests.
      expect(performance.now() - start).toBeLessThan(900);
      expect(overloaded.requests).toHaveLength(1);
      expect(healthy.requests).toHaveLength(1);
      expect(retries).toEqual([expect.objectContaining({ attempt: 2, instance: overloaded.url, delayMs: 0 })]);
    } finally {
      await client.close();
    }
  });

  it('503 with Retry-After: 1 from the only instance: the retry waits ≥ 1 s and goes back to it', async () => {
    let seen = 0;
    const only = await startServer((request, response, body) => {
      if (seen++ === 0) statusHandler(503, { 'retry-after': '1' })(request, response, body);
      else answer(request, response, body);
    });
    const client = createClient(movies, { breaker: false, instances: [only.url], timeoutMs: 3000 });
    const retries = collect(client, 'retry');
    try {
      const start = performance.now();
      expect(await client.getMovie({ id: 9 })).toEqual({ id: 9, title: 'Heat' });
      expect(performance.now() - start).toBeGreaterThanOrEqual(990);
      expect(only.requests).toHaveLength(2);
      expect(retries).toEqual([expect.objectContaining({ attempt: 2, instance: only.url, delayMs: 1000 })]);
    } finally {
      await client.close();
    }
  });

  it('429 with Retry-After: 10 and a 1000 ms budget fails fast with the 429, one request', async () => {
    const { limited, healthy, client, retries } = await behindRetryAfter(429, 10, 1000);
    try {
      const { error, ms } = await timedFailure(client.getMovie({ id: 9 }));
      expect(error).toBeInstanceOf(HttpStatusError);
      expect(error.code).toBe(ErrorCode.HTTP_STATUS);
      expect((error as HttpStatusError).status).toBe(429);
      expect((error as HttpStatusError).retryAfterMs).toBe(10_000);
      expect(ms).toBeLessThan(400);
      expect(limited.requests).toHaveLength(1);
      expect(healthy.requests).toHaveLength(0);
      expect(retries).toEqual([]);
    } finally {
      await client.close();
    }
  });
});

describe('hedging', () => {
  /** Answers after `ms`; counts the requests whose connection closed before the answer. */
  function slowServer(ms: number) {
    const cancelled: string[] = [];
    const server = startServer((request: IncomingMessage, response: ServerResponse, body) => {
      const timer = setTimeout(() => answer(request, response, body), ms);
      response.on('close', () => {
        clearTimeout(timer);
        if (!response.writableFinished) cancelled.push(request.url ?? '');
      });
    });
    return { server, cancelled };
  }

  /** A slow instance A and a fast instance B; round-robin starts every call on A, hedges go to B. */
  async function slowThenFast(slowMs: number) {
    const slow = slowServer(slowMs);
    const a = await slow.server;
    const b = await startServer(answer);
    const client = createClient(movies, {
      breaker: false,
      instances: [a.url, b.url],
      balancer: 'round-robin',
      hedge: { delayMs: 50 },
      timeoutMs: 2000,
    });
    return { slow, a, b, client, hedges: collect(client, 'hedge') };
  }

  it('a second attempt on the fast instance after delayMs wins; the slow attempt is cancelled', async () => {
    const { slow, a, b, client, hedges } = await slowThenFast(500);
    try {
      for (let index = 0; index < 5; index++) {
        const start = performance.now();
        expect(await client.getMovie({ id: index })).toEqual({ id: index, title: 'Heat' });
        const ms = performance.now() - start;
        expect(ms).toBeGreaterThanOrEqual(45);
        expect(ms).toBeLessThan(350);
      }
      expect(hedges).toHaveLength(5);
      expect(hedges[0]).toEqual({ type: 'hedge', service: 'movies', endpoint: 'getMovie', instance: a.url });
      expect(a.requests).toHaveLength(5);
      expect(b.requests).toHaveLength(5);
      // The losing attempts' connections were closed on A before A answered.
      await waitFor('the slow attempts to be cancelled', () => slow.cancelled.length === 5);
      expect(slow.cancelled).toEqual(['/movies/0', '/movies/1', '/movies/2', '/movies/3', '/movies/4']);
      expect(wheelOf(systemClock).size).toBe(0);
    } finally {
      await client.close();
    }
  });

  it('a fast first attempt is not hedged', async () => {
    const a = await startServer(answer);
    const b = await startServer(answer);
    const client = createClient(movies, { breaker: false, instances: [a.url, b.url], hedge: { delayMs: 100 } });
    const hedges = collect(client, 'hedge');
    try {
      for (let index = 0; index < 10; index++) await client.getMovie({ id: index });
      await delay(150);
      expect(hedges).toEqual([]);
      expect(total([a, b])).toBe(10);
    } finally {
      await client.close();
    }
  });

  it('a non-idempotent POST is never hedged: one request, however slow', async () => {
    const { slow, a, b, client, hedges } = await slowThenFast(300);
    try {
      const start = performance.now();
      expect(await client.rate({ id: 1 }, { stars: 4 })).toEqual({ ok: true });
      expect(performance.now() - start).toBeGreaterThanOrEqual(250);
      expect(a.requests).toHaveLength(1);
      expect(b.requests).toHaveLength(0);
      expect(hedges).toEqual([]);
      expect(slow.cancelled).toEqual([]);
    } finally {
      await client.close();
    }
  });
});

describe('retry: instances from the testing kit', () => {
  it('one instance stopped and one hanging (chaos) among three: every call answered by the third', async () => {
    const group = await startInstances(
      movies,
      {
        getMovie: ({ id }) => ({ id, title: 'Heat' }),
        rate: () => ({ ok: true }),
        search: () => [],
        byTitle: () => ({}),
        health: () => ({ ok: true }),
      },
      { count: 3 },
    );
    try {
      await group.instance(0).stop();
      await group.instance(1).chaos({ hang: true });
      const client = createClient(movies, {
        breaker: false,
        outlier: false,
        retry: { maxRetries: 2 },
        instances: group.instances,
        timeoutMs: 2000,
        attemptTimeoutMs: 150,
      });
      try {
        const results = await runCalls(50, 5, (index) => client.getMovie({ id: index }));
        expect(results.filter((result) => result.status === 'rejected')).toEqual([]);
        const [stopped, hanging, healthy] = group.requests();
        expect(stopped?.total).toBe(0);
        expect(healthy?.byEndpoint.getMovie).toBe(50);
        expect(healthy?.byStatus['200']).toBe(50);
        // The hanging instance saw calls but answered none of them.
        expect(hanging?.total).toBeGreaterThan(0);
        expect(hanging?.byStatus['200'] ?? 0).toBe(0);
      } finally {
        await client.close();
      }
    } finally {
      await group.close();
    }
  });
});
