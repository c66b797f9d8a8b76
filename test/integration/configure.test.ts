/**
 * `client.configure()` on live clients against real node:http servers on 127.0.0.1: a new
 * timeout applies from the next call, bad input changes nothing, stateful layers (breaker,
 * bulkhead, outlier ejection, retry budget) are reconfigured in place, and changes under
 * steady load fail no call.
 */
import { describe, expect, expectTypeOf, it, onTestFinished } from 'vitest';
import { type ClientConfiguration, type ClientEvents, createClient, ErrorCode } from '../../src/index.js';
import { failure, thrown, waitFor } from '../helpers/assert.js';
import { movies } from '../helpers/movies.js';
import { delay, sendJson, startServer } from '../helpers/server.js';

/** A movie server answering after `latencyMs` (changeable) with `status` (changeable). */
async function movieServer(initial: { latencyMs?: number; status?: number } = {}) {
  const behaviour = { latencyMs: initial.latencyMs ?? 0, status: initial.status ?? 200 };
  const server = await startServer(async (request, response) => {
    if (behaviour.latencyMs > 0) await delay(behaviour.latencyMs);
    const id = Number((request.url ?? '').split('/').pop());
    if (behaviour.status !== 200) sendJson(response, behaviour.status, { error: 'no' });
    else sendJson(response, 200, { id, title: 'Heat' });
  });
  return { server, behaviour };
}

describe('client.configure()', () => {
  it('a new timeout applies from the next call on, and back', async () => {
    const { server } = await movieServer({ latencyMs: 150 });
    const client = createClient(movies, { instances: [server.url], timeoutMs: 2000, retry: false });
    onTestFinished(() => client.close());
    await expect(client.getMovie({ id: 1 })).resolves.toEqual({ id: 1, title: 'Heat' });

    client.configure({ timeoutMs: 60 });
    expect((await failure(client.getMovie({ id: 2 }))).code).toBe(ErrorCode.DEADLINE_EXCEEDED);

    client.configure({ timeoutMs: 2000 });
    await expect(client.getMovie({ id: 3 })).resolves.toEqual({ id: 3, title: 'Heat' });
  });

  it('attemptTimeoutMs and retry: the next call makes a second attempt on another instance', async () => {
    const slow = await movieServer({ latencyMs: 400 });
    const fast = await movieServer();
    const client = createClient(movies, {
      instances: [slow.server.url, fast.server.url],
      balancer: 'round-robin',
      timeoutMs: 2000,
      retry: false,
      outlier: false,
    });
    onTestFinished(() => client.close());
    // round-robin: the first call goes to the slow instance, which answers within the budget.
    await expect(client.getMovie({ id: 1 })).resolves.toMatchObject({ id: 1 });
    client.configure({ attemptTimeoutMs: 100, retry: { maxRetries: 1 } });
    await client.getMovie({ id: 2 }); // fast instance
    const before = fast.server.requests.length;
    // slow instance times out at 100 ms; the retry goes to the fast one.
    await expect(client.getMovie({ id: 3 })).resolves.toMatchObject({ id: 3 });
    expect(fast.server.requests.length).toBe(before + 1);
    expect(fast.server.requests.at(-1)?.headers['x-request-attempt']).toBe('2');
  });

  it('bad input throws INVALID_OPTION naming the option and changes nothing', async () => {
    const { server } = await movieServer({ latencyMs: 100 });
    const client = createClient(movies, { instances: [server.url], timeoutMs: 2000, retry: false });
    onTestFinished(() => client.close());

    const cases: Array<[unknown, RegExp]> = [
      [{ timeoutMs: -1 }, /timeoutMs/],
      [{ timeoutMs: 'fast' }, /timeoutMs/],
      [{ instances: ['http://127.0.0.1:1'] }, /instances/],
      [{ tls: {} }, /tls/],
      [{ nope: 1 }, /nope/],
      [{ breaker: { halfOpenProbes: 0 } }, /breaker.halfOpenProbes/],
      [{ bulkhead: { adaptive: 'fuzzy' } }, /bulkhead/],
      [{ bulkhead: { adaptive: 'vegas', minConcurrent: 50, maxConcurrent: 10 } }, /bulkhead/],
      [{ throttle: { k: 0.5 } }, /throttle.k/],
      [{ outlier: { failurePercentage: 150 } }, /outlier/],
      [{ retry: { maxRetries: -1 } }, /maxRetries/],
      [{ reserveMs: -5 }, /reserveMs/],
      [null, /configure\(\) options/],
      [[{ timeoutMs: 10 }], /configure\(\) options/],
    ];
    for (const [change, message] of cases) {
      const error = thrown(() => client.configure(change as ClientConfiguration));
      expect(error.code).toBe(ErrorCode.INVALID_OPTION);
      expect(error.message).toMatch(message);
    }
    // A valid value beside an invalid one is not applied either: the timeout is still 2 s.
    thrown(() => client.configure({ timeoutMs: 10, breaker: { halfOpenProbes: 0 } }));
    await expect(client.getMovie({ id: 1 })).resolves.toMatchObject({ id: 1 });
    expect(client.stats().bulkhead?.mode).toBe('gradient2');
  });

  it('the bulkhead changes form and limit in place; stats() shows it', async () => {
    const { server } = await movieServer({ latencyMs: 200 });
    const client = createClient(movies, {
      instances: [server.url],
      timeoutMs: 3000,
      bulkhead: { maxConcurrent: 2, maxQueue: 0 },
    });
    onTestFinished(() => client.close());
    const inFlight = [client.getMovie({ id: 1 }), client.getMovie({ id: 2 })];
    expect((await failure(client.getMovie({ id: 3 }))).code).toBe(ErrorCode.BULKHEAD_FULL);
    client.configure({ bulkhead: { maxConcurrent: 3 } });
    // The two calls in flight still hold their slots: one more fits, not two.
    const third = client.getMovie({ id: 4 });
    expect((await failure(client.getMovie({ id: 5 }))).code).toBe(ErrorCode.BULKHEAD_FULL);
    expect(client.stats().bulkhead).toMatchObject({ mode: 'static', limit: 3, inflight: 3 });
    await Promise.all([...inFlight, third]);
    expect(client.stats().bulkhead).toMatchObject({ inflight: 0 });

    client.configure({ bulkhead: { adaptive: 'aimd', minConcurrent: 5, maxConcurrent: 50 } });
    expect(client.stats().bulkhead).toMatchObject({ mode: 'aimd', inflight: 0 });
    expect(client.stats().bulkhead?.limit).toBeGreaterThanOrEqual(5);
    client.configure({ bulkhead: false });
    expect(client.stats().bulkhead).toBeNull();
    await Promise.all(Array.from({ length: 20 }, (_, id) => client.getMovie({ id })));
  });

  it('the breaker keeps its state and an operator hold across a change', async () => {
    const { server, behaviour } = await movieServer({ status: 503 });
    const client = createClient(movies, {
      instances: [server.url],
      timeoutMs: 1000,
      retry: false,
      throttle: false,
      breaker: { volumeThreshold: 5, resetTimeoutMs: 60_000, minResetTimeoutMs: 60_000 },
    });
    onTestFinished(() => client.close());
    for (let i = 0; i < 5; i++) await failure(client.getMovie({ id: i }));
    expect(client.circuit('getMovie').state()).toBe('open');
    client.configure({ breaker: { errorThresholdPercentage: 90 } });
    expect(client.circuit('getMovie').state()).toBe('open');
    const served = server.requests.length;
    expect((await failure(client.getMovie({ id: 9 }))).code).toBe(ErrorCode.CIRCUIT_OPEN);
    expect(server.requests.length).toBe(served);

    behaviour.status = 200;
    client.circuit('getMovie').forceClosed();
    client.configure({ breaker: { volumeThreshold: 1 } });
    await expect(client.getMovie({ id: 10 })).resolves.toMatchObject({ id: 10 });
    // Breaker off: its endpoint stats say so; on again: closed.
    client.configure({ breaker: false });
    expect(client.stats().endpoints.getMovie?.breaker).toBe('disabled');
    client.configure({ breaker: {} });
    expect(client.stats().endpoints.getMovie?.breaker).not.toBe('disabled');
  });

  it('outlier ejection can be turned off and on', async () => {
    const bad = await movieServer({ status: 503 });
    const good = await movieServer();
    const client = createClient(movies, {
      instances: [bad.server.url, good.server.url],
      balancer: 'round-robin',
      timeoutMs: 1000,
      retry: false,
      breaker: false,
      outlier: false,
    });
    onTestFinished(() => client.close());
    for (let i = 0; i < 20; i++) await client.getMovie({ id: i }).catch(() => undefined);
    expect(client.stats().instances.some((instance) => instance.ejected)).toBe(false);
    client.configure({ outlier: { consecutiveFailures: 2, baseEjectionMs: 30_000 } });
    for (let i = 0; i < 10; i++) await client.getMovie({ id: i }).catch(() => undefined);
    expect(client.stats().instances.find((instance) => instance.url === bad.server.url)?.ejected).toBe(true);
  });

  it('emits a configure event with the keys given, and refuses a closed client', async () => {
    const { server } = await movieServer();
    const client = createClient(movies, { instances: [server.url] });
    const events: Array<ClientEvents['configure']> = [];
    client.on('configure', (event) => events.push(event));
    client.configure({ timeoutMs: 500, retry: { maxRetries: 2 } });
    expect(events).toEqual([
      { service: 'movies', changed: ['timeoutMs', 'retry'], options: { timeoutMs: 500, retry: { maxRetries: 2 } } },
    ]);
    await client.close();
    expect(thrown(() => client.configure({ timeoutMs: 100 })).code).toBe(ErrorCode.CLIENT_CLOSED);
    expectTypeOf(client.configure).parameter(0).toEqualTypeOf<ClientConfiguration>();
  });

  it('changes under steady load fail no call', async () => {
    const { server } = await movieServer({ latencyMs: 5 });
    const client = createClient(movies, { instances: [server.url], timeoutMs: 2000 });
    onTestFinished(() => client.close());
    const failures: unknown[] = [];
    let calls = 0;
    let running = true;
    // Open loop: about 2,000 calls/s for 1.5 s (bounded: at most 3,000 calls).
    const load = (async () => {
      const pending: Promise<unknown>[] = [];
      while (running && calls < 3000) {
        for (let i = 0; i < 20; i++) {
          calls++;
          pending.push(client.getMovie({ id: calls }).catch((error: unknown) => failures.push(error)));
        }
        await delay(10);
      }
      await Promise.all(pending);
    })();
    const settings: ClientConfiguration[] = [
      { timeoutMs: 1500 },
      { retry: { maxRetries: 2 } },
      { bulkhead: { maxConcurrent: 400, maxQueue: 100 } },
      { breaker: { volumeThreshold: 50 } },
      { bulkhead: { adaptive: 'gradient2' } },
      { hedge: { delayMs: 200 } },
      { outlier: { consecutiveFailures: 10 } },
      { attemptTimeoutMs: 1000 },
    ];
    for (const change of settings) {
      await delay(150);
      client.configure(change);
    }
    running = false;
    await load;
    await waitFor('no call in flight', () => client.stats().bulkhead?.inflight === 0);
    expect(calls).toBeGreaterThan(400);
    expect(failures).toEqual([]);
  });
});
