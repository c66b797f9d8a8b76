/**
 * Recovery and throttling end to end, through `createClient` with its default breaker and
 * throttle, against real node:http servers on 127.0.0.1: a dependency that goes down and comes
 * back (the client serves normally again about a second after, counted at the server, and
 * sends it only a trickle while it is down), a dependency that slows down (slow calls open the
 * circuit), operators' controls, and bad options. Time bounds are generous: the machine may be
 * loaded.
 */
import { describe, expect, it } from 'vitest';
import { type ClientEvents, createClient, ErrorCode, type TelescopeError } from '../../src/index.js';
import { failure, waitFor } from '../helpers/assert.js';
import { manualClock } from '../helpers/clock.js';
import { movies } from '../helpers/movies.js';
import { sendJson, startServer } from '../helpers/server.js';

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** A movie server the test switches between healthy, down (503) and slow. */
async function dependency() {
  const state = {
    mode: 'ok' as 'ok' | 'down',
    delayMs: 0,
    /** Server-side arrivals: [time, answered ok]. */
    arrivals: [] as Array<{ at: number; ok: boolean }>,
    inFlight: 0,
    peakInFlight: 0,
  };
  const server = await startServer((request, response) => {
    const ok = state.mode === 'ok';
    state.arrivals.push({ at: performance.now(), ok });
    if (!ok) {
      response.writeHead(503, { 'content-type': 'text/plain' });
      response.end('down');
      return;
    }
    state.inFlight++;
    state.peakInFlight = Math.max(state.peakInFlight, state.inFlight);
    const id = Number(/^\/movies\/(\d+)$/.exec(request.url ?? '')?.[1] ?? 0);
    const answer = () => {
      state.inFlight--;
      sendJson(response, 200, { id, title: 'Heat' });
    };
    if (state.delayMs > 0) setTimeout(answer, state.delayMs);
    else answer();
  });
  return Object.assign(state, { server });
}

/** Open-loop load: one call every `everyMs` until `stop()`; outcomes with the time each was sent. */
function load(call: (index: number) => Promise<unknown>, everyMs: number) {
  const outcomes: Array<{ at: number; code: string | undefined }> = [];
  const running = new Set<Promise<void>>();
  let index = 0;
  const timer = setInterval(() => {
    const at = performance.now();
    const pending = call(index++).then(
      () => {
        outcomes.push({ at, code: undefined });
      },
      (error: TelescopeError) => {
        outcomes.push({ at, code: error.code ?? 'unknown' });
      },
    );
    running.add(pending);
    void pending.finally(() => running.delete(pending));
  }, everyMs);
  return {
    outcomes,
    async stop() {
      clearInterval(timer);
      await Promise.all(running);
    },
  };
}

describe('recovery: a dependency that goes down and comes back', () => {
  it('defaults: a trickle while it is down, serving normally again about a second after it recovers', async () => {
    const upstream = await dependency();
    const client = createClient(movies, { instances: [upstream.server.url] });
    const events: Array<ClientEvents['breaker'] & { at: number }> = [];
    client.on('breaker', (event) => events.push({ ...event, at: performance.now() }));
    // 100 calls a second.
    const traffic = load((index) => client.getMovie({ id: index }), 10);
    try {
      await sleep(500);
      upstream.mode = 'down';
      const downAt = performance.now();
      await sleep(3000);
      upstream.mode = 'ok';
      const upAt = performance.now();
      await waitFor(
        'the circuit to close',
        () => events.some((event) => event.state === 'closed' && event.at > upAt),
        5000,
      );
      // Load goes on until 3 s after the recovery: the last 1.5 s must be all successes.
      await sleep(Math.max(0, upAt + 3000 - performance.now()));
      await traffic.stop();

      // While down: the circuit opened on consecutive failures, then probes only (one
      // attempt each, on a backoff growing to 1 s): a few requests, not the 300 offered.
      const whileDown = upstream.arrivals.filter((arrival) => arrival.at >= downAt && arrival.at < upAt);
      const offered = traffic.outcomes.filter((outcome) => outcome.at >= downAt && outcome.at < upAt).length;
      expect(offered).toBeGreaterThan(150);
      const afterFirstSecond = whileDown.filter((arrival) => arrival.at >= downAt + 1000).length;
      expect(afterFirstSecond).toBeLessThanOrEqual(20);
      expect(whileDown.length).toBeLessThan(offered / 2);
      expect(events[0]).toMatchObject({ state: 'open', cause: 'failures' });
      expect(events.filter((event) => event.cause === 'probe-failed').length).toBeGreaterThan(0);

      // Recovered: the first successful answer at the server came well within the 1 s longest
      // wait (plus load), and every call sent 1.5 s after the recovery succeeded.
      const firstOk = upstream.arrivals.find((arrival) => arrival.at >= upAt && arrival.ok);
      expect(firstOk).toBeDefined();
      expect(firstOk!.at - upAt).toBeLessThan(1500);
      const late = traffic.outcomes.filter((outcome) => outcome.at >= upAt + 1500);
      expect(late.length).toBeGreaterThan(20);
      expect(late.filter((outcome) => outcome.code !== undefined)).toEqual([]);
      // Three probes closed it.
      expect(events.at(-1)).toMatchObject({ state: 'closed', cause: 'probes-passed' });
      expect(client.circuit('getMovie').state()).toBe('closed');
    } finally {
      await traffic.stop();
      await client.close();
    }
  }, 20_000);
});

describe('recovery: a dependency that slows down', () => {
  it('slow calls open the circuit (slowCallMs), and it closes again once the dependency is fast', async () => {
    const upstream = await dependency();
    const client = createClient(movies, {
      instances: [upstream.server.url],
      timeoutMs: 2000,
      breaker: { slowCallMs: 100, slowCallRatePercent: 50, volumeThreshold: 10 },
    });
    const events: Array<ClientEvents['breaker']> = [];
    client.on('breaker', (event) => events.push(event));
    const traffic = load((index) => client.getMovie({ id: index }), 10);
    try {
      await sleep(300);
      upstream.delayMs = 300;
      await waitFor(
        'the circuit to open on slow calls',
        () => events.some((event) => event.cause === 'slow-calls'),
        5000,
      );
      // Open: the slow dependency is not sent the load (at most a probe at a time).
      const arrivedAtOpen = upstream.arrivals.length;
      await sleep(500);
      expect(upstream.arrivals.length - arrivedAtOpen).toBeLessThanOrEqual(3);
      upstream.delayMs = 0;
      const fastAt = performance.now();
      await waitFor('the circuit to close', () => events.at(-1)?.state === 'closed', 5000);
      await sleep(Math.max(0, fastAt + 3000 - performance.now()));
      await traffic.stop();
      const late = traffic.outcomes.filter((outcome) => outcome.at >= fastAt + 1500);
      expect(late.length).toBeGreaterThan(20);
      expect(late.filter((outcome) => outcome.code !== undefined)).toEqual([]);
      // Calls that failed fast while it was open are CIRCUIT_OPEN, not slow timeouts.
      expect(traffic.outcomes.some((outcome) => outcome.code === ErrorCode.CIRCUIT_OPEN)).toBe(true);
    } finally {
      await traffic.stop();
      await client.close();
    }
  }, 20_000);
});

describe('operators: client.circuit(endpoint)', () => {
  it('forceOpen fails calls fast with no request sent; forceClosed and reset bring traffic back; each is an event', async () => {
    const upstream = await dependency();
    const client = createClient(movies, { instances: [upstream.server.url] });
    const events: Array<ClientEvents['breaker']> = [];
    client.on('breaker', (event) => events.push(event));
    try {
      await client.getMovie({ id: 1 });
      const circuit = client.circuit('getMovie');
      circuit.forceOpen();
      expect(client.stats().endpoints.getMovie?.breaker).toBe('open');
      const before = upstream.arrivals.length;
      for (let call = 0; call < 20; call++) {
        expect(await failure(client.getMovie({ id: call }))).toMatchObject({
          code: ErrorCode.CIRCUIT_OPEN,
          requestSent: false,
        });
      }
      // Held open: no probe ever, even after the longest wait.
      await sleep(1200);
      expect((await failure(client.getMovie({ id: 1 }))).code).toBe(ErrorCode.CIRCUIT_OPEN);
      expect(upstream.arrivals.length).toBe(before);
      // Other endpoints have their own circuit.
      await client.health().catch(() => undefined);
      expect(client.circuit('health').state()).toBe('closed');

      circuit.forceClosed();
      expect(await client.getMovie({ id: 2 })).toEqual({ id: 2, title: 'Heat' });
      circuit.reset();
      expect(circuit.forced()).toBeUndefined();
      expect(await client.getMovie({ id: 3 })).toEqual({ id: 3, title: 'Heat' });
      expect(events).toEqual([
        { service: 'movies', endpoint: 'getMovie', state: 'open', cause: 'force-open' },
        { service: 'movies', endpoint: 'getMovie', state: 'closed', cause: 'force-closed' },
        { service: 'movies', endpoint: 'getMovie', state: 'closed', cause: 'reset' },
      ]);
    } finally {
      await client.close();
    }
  });

  it('an unknown endpoint, or a client without a breaker, is INVALID_OPTION', async () => {
    const client = createClient(movies, { instances: ['http://127.0.0.1:1'] });
    const noBreaker = createClient(movies, { instances: ['http://127.0.0.1:1'], breaker: false });
    try {
      expect(() => client.circuit('nope' as 'getMovie')).toThrow(
        expect.objectContaining({ code: ErrorCode.INVALID_OPTION, message: expect.stringContaining('getMovie') }),
      );
      expect(() => noBreaker.circuit('getMovie')).toThrow(
        expect.objectContaining({ code: ErrorCode.INVALID_OPTION, message: expect.stringContaining('breaker') }),
      );
    } finally {
      await client.close();
      await noBreaker.close();
    }
  });
});

describe('throttle through createClient', () => {
  it('an overloaded dependency (80% 503) is sent a fraction of the load, the rest THROTTLED locally; healthy load never is', async () => {
    let served = 0;
    const server = await startServer((_request, response) => {
      // Takes one request in five, answers the rest 503 (overloaded).
      if (served++ % 5 === 0) sendJson(response, 200, { id: 1, title: 'Heat' });
      else {
        response.writeHead(503);
        response.end();
      }
    });
    const client = createClient(movies, {
      instances: [server.url],
      retry: false,
      // The circuit alone would open at > 50% failures: here the throttle is the one to act.
      breaker: { errorThresholdPercentage: 100, consecutiveFailures: 0 },
      throttle: { k: 2, windowMs: 10_000 },
    });
    try {
      const codes: Array<string | undefined> = [];
      for (let call = 0; call < 400; call++) {
        codes.push(
          await client.getMovie({ id: 1 }).then(
            () => undefined,
            (error: TelescopeError) => error.code,
          ),
        );
      }
      const throttled = codes.filter((code) => code === ErrorCode.THROTTLED).length;
      expect(throttled).toBeGreaterThan(100);
      expect(server.requests.length).toBe(400 - throttled);
      expect(server.requests.length).toBeGreaterThan(20);
      expect(client.stats().endpoints.getMovie?.failures.THROTTLED).toBe(throttled);
    } finally {
      await client.close();
    }
    // Healthy: 2,000 calls, 200 at a time, none throttled.
    const healthy = await startServer((_request, response) => sendJson(response, 200, { id: 1, title: 'Heat' }));
    const defaults = createClient(movies, { instances: [healthy.url], bulkhead: false, timeoutMs: 10_000 });
    try {
      for (let round = 0; round < 10; round++) {
        await Promise.all(Array.from({ length: 200 }, (_, id) => defaults.getMovie({ id })));
      }
      expect(defaults.stats().endpoints.getMovie?.failures).toEqual({});
      expect(healthy.requests.length).toBe(2000);
    } finally {
      await defaults.close();
    }
  }, 20_000);

  it('bad throttle and breaker options are INVALID_OPTION at createClient, naming the option and range', () => {
    const cases: Array<[Parameters<typeof createClient>[1], string]> = [
      [{ instances: ['http://127.0.0.1:1'], throttle: { k: 0.5 } }, 'throttle.k'],
      [{ instances: ['http://127.0.0.1:1'], throttle: { windowMs: 500 } }, 'throttle.windowMs'],
      [{ instances: ['http://127.0.0.1:1'], breaker: { halfOpenProbes: 0 } }, 'breaker.halfOpenProbes'],
      [{ instances: ['http://127.0.0.1:1'], breaker: { halfOpenProbes: 2.5 } }, 'breaker.halfOpenProbes'],
      [{ instances: ['http://127.0.0.1:1'], breaker: { slowCallRatePercent: 120 } }, 'breaker.slowCallRatePercent'],
      [{ instances: ['http://127.0.0.1:1'], breaker: { slowCallMs: -5 } }, 'breaker.slowCallMs'],
      [{ instances: ['http://127.0.0.1:1'], breaker: { rampMs: -1 } }, 'breaker.rampMs'],
    ];
    for (const [options, name] of cases) {
      expect(() => createClient(movies, options), name).toThrow(
        expect.objectContaining({ code: ErrorCode.INVALID_OPTION, message: expect.stringContaining(name) }),
      );
    }
  });

  it('close() clears the open circuit’s probe timer (client clock)', async () => {
    const clock = manualClock(0);
    const client = createClient(movies, {
      instances: ['http://127.0.0.1:1'],
      clock,
      retry: false,
      breaker: { consecutiveFailures: 1 },
    });
    client.circuit('getMovie').forceOpen();
    client.circuit('getMovie').reset();
    await failure(client.getMovie({ id: 1 }));
    await waitFor('the circuit to open', () => client.circuit('getMovie').state() === 'open');
    expect(clock.pending()).toBeGreaterThan(0);
    await client.close();
    // Whatever else is left on the clock is not the breaker's: advancing fires no probe timer.
    const events: string[] = [];
    client.on('breaker', (event) => events.push(event.state));
    clock.advance(60_000);
    expect(events).toEqual([]);
  });
});
