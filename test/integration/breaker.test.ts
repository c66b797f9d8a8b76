/**
 * Breakers, bulkhead, fallbacks, `stats()` and the diagnostics channels, end to end through
 * `createClient` against real node:http servers on 127.0.0.1, checked with server-side counts
 * (requests, connections, requests in flight) and real time with generous bounds.
 *
 * Retries are off where a test counts requests per call (`retry: false`): a retry is one
 * event for the circuit but a second request for the server.
 */
import { subscribe, unsubscribe } from 'node:diagnostics_channel';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { describe, expect, expectTypeOf, it } from 'vitest';
import { z } from 'zod';
import {
  type Client,
  type ClientEvents,
  type ClientOptions,
  createClient,
  defineService,
  ErrorCode,
  endpoint,
  type HttpStatusError,
  type TelescopeError,
} from '../../src/index.js';
import { failure, timedFailure, waitFor } from '../helpers/assert.js';
import { Movie, movies } from '../helpers/movies.js';
import { closedPort, type Handler, sendJson, startServer } from '../helpers/server.js';

// --- helpers ---------------------------------------------------------------------------------

type MovieValue = z.infer<typeof Movie>;

/** Answers the movie service: a movie for GET /movies/:id. */
const answer: Handler = (request, response) => {
  const id = Number(/^\/movies\/(\d+)$/.exec(request.url ?? '')?.[1] ?? 0);
  sendJson(response, 200, { id, title: 'Heat' });
};

/** A server whose behaviour the test switches: answer, a status, or never answer. */
async function switchable(initial: 'ok' | 'hang' | number = 'ok', delayMs = 0) {
  const state = { mode: initial as 'ok' | 'hang' | number, delayMs, inFlight: 0, maxInFlight: 0, connections: 0 };
  const server = await startServer((request, response, body) => {
    if (state.mode === 'hang') return;
    state.inFlight++;
    state.maxInFlight = Math.max(state.maxInFlight, state.inFlight);
    const reply = () => {
      state.inFlight--;
      if (state.mode === 'ok') return answer(request, response, body);
      response.writeHead(state.mode as number, { 'content-type': 'text/plain' });
      response.end(`status ${state.mode}`);
    };
    if (state.delayMs > 0) setTimeout(reply, state.delayMs);
    else reply();
  });
  server.server.on('connection', () => state.connections++);
  return Object.assign(state, { server });
}

/** Collects a client's events of one kind. */
function collect<S extends typeof movies | typeof fallbackMovies, E extends keyof ClientEvents>(
  client: Client<S>,
  event: E,
): Array<ClientEvents[E]> {
  const seen: Array<ClientEvents[E]> = [];
  client.on(event, (payload) => seen.push(payload));
  return seen;
}

/** Subscribes to diagnostics channels; `stop()` unsubscribes. */
function listen(names: string[]) {
  const seen: Array<{ channel: string; message: Record<string, unknown> }> = [];
  const stops = names.map((channel) => {
    const listener = (message: unknown) => seen.push({ channel, message: message as Record<string, unknown> });
    subscribe(channel, listener);
    return () => unsubscribe(channel, listener);
  });
  return {
    seen,
    stop: () => {
      for (const stop of stops) stop();
    },
  };
}

/**
 * opossum's recovery (one probe, no ramp, a fixed wait jittered down by up to half), for the
 * tests of opening and probing; the recovery features have tests of their own.
 */
const breakerOptions = (overrides: Partial<Exclude<ClientOptions['breaker'], false | undefined>> = {}) => {
  const resetTimeoutMs = overrides.resetTimeoutMs ?? 60_000;
  return {
    volumeThreshold: 20,
    errorThresholdPercentage: 50,
    resetTimeoutMs,
    minResetTimeoutMs: resetTimeoutMs,
    halfOpenProbes: 1,
    rampMs: 0,
    rollingWindowMs: 10_000,
    ...overrides,
  };
};

/** The movie service with fallbacks, as a caller would declare it. */
let fallbackBehaviour: 'value' | 'throw' | 'reject' | 'hang' = 'value';
const fallbackCalls: Array<{ code: string; params: unknown }> = [];
const fallbackMovies = defineService({
  name: 'movies',
  endpoints: {
    getMovie: endpoint({
      method: 'GET',
      path: '/movies/:id',
      params: z.object({ id: z.number().int() }),
      response: Movie,
      fallback: (error, params) => {
        fallbackCalls.push({ code: error.code, params });
        if (fallbackBehaviour === 'throw') throw new Error('fallback cache is down');
        if (fallbackBehaviour === 'reject') return Promise.reject(new Error('fallback cache rejected'));
        if (fallbackBehaviour === 'hang') return new Promise<MovieValue>(() => {});
        return { id: params.id, title: `unavailable (${error.code})` };
      },
    }),
    top: endpoint({ method: 'GET', path: '/top', response: z.array(Movie), fallback: [] }),
  },
});

function resetFallback(behaviour: typeof fallbackBehaviour = 'value') {
  fallbackBehaviour = behaviour;
  fallbackCalls.length = 0;
}

/** A `gc()` for heap measurements: the global one, or V8's exposed at run time; undefined if neither. */
function findGc(): (() => void) | undefined {
  const global = (globalThis as { gc?: () => void }).gc;
  if (global !== undefined) return global;
  try {
    setFlagsFromString('--expose-gc');
    return runInNewContext('gc') as () => void;
  } catch {
    return undefined;
  }
}

const errorCodes = new Set<string>(Object.values(ErrorCode));

// --- the circuit -----------------------------------------------------------------------------

describe('breaker: opening', () => {
  it('opens on the 20th call when every call got a 503, then answers CIRCUIT_OPEN without I/O', async () => {
    const upstream = await switchable(503);
    const client = createClient(movies, {
      instances: [upstream.server.url],
      retry: false,
      outlier: false,
      throttle: false,
      breaker: breakerOptions(),
    });
    const events = collect(client, 'breaker');
    const channel = listen(['telescope:breaker:state']);
    try {
      for (let call = 1; call <= 19; call++) {
        const error = await failure(client.getMovie({ id: call }));
        expect((error as HttpStatusError).status).toBe(503);
      }
      expect(events).toEqual([]);
      expect(client.stats().endpoints.getMovie!.breaker).toBe('closed');
      await failure(client.getMovie({ id: 20 }));
      expect(events).toEqual([{ service: 'movies', endpoint: 'getMovie', state: 'open', cause: 'failures' }]);
      expect(channel.seen).toEqual([
        {
          channel: 'telescope:breaker:state',
          message: { service: 'movies', endpoint: 'getMovie', state: 'open', cause: 'failures' },
        },
      ]);
      expect(client.stats().endpoints.getMovie!.breaker).toBe('open');

      const requests = upstream.server.requests.length;
      const connections = upstream.connections;
      const sockets = upstream.server.openSockets();
      expect(requests).toBe(20);
      for (let call = 0; call < 200; call++) {
        const { error, ms } = await timedFailure(client.getMovie({ id: call }));
        expect(error).toMatchObject({ code: ErrorCode.CIRCUIT_OPEN, requestSent: false, endpoint: 'getMovie' });
        expect(ms).toBeLessThan(100);
      }
      expect(upstream.server.requests.length).toBe(requests);
      expect(upstream.connections).toBe(connections);
      expect(upstream.server.openSockets()).toBeLessThanOrEqual(sockets);
      // One circuit per endpoint: health is still called.
      await failure(client.health());
      expect(upstream.server.requests.length).toBe(requests + 1);
      expect(client.stats().endpoints.health!.breaker).toBe('closed');
      expect(client.stats().endpoints.getMovie!.failures).toEqual({ HTTP_STATUS: 20, CIRCUIT_OPEN: 200 });
    } finally {
      channel.stop();
      await client.close();
    }
  });

  it('60% 503s open it at the first failure past the volume threshold; 40% and an exact 50% do not', async () => {
    // The server plays a pattern per request; retries are off, so one call is one request.
    const run = async (pattern: string, calls: number) => {
      let served = 0;
      const server = await startServer((request, response, body) => {
        const step = pattern[served++ % pattern.length];
        if (step === 'S') return answer(request, response, body);
        response.writeHead(503);
        response.end();
      });
      const client = createClient(movies, {
        instances: [server.url],
        retry: false,
        outlier: false,
        throttle: false,
        breaker: breakerOptions(),
      });
      const events = collect(client, 'breaker');
      try {
        for (let call = 1; call <= calls; call++) {
          await client.getMovie({ id: call }).catch(() => undefined);
          if (events.length > 0) return call;
        }
        return undefined;
      } finally {
        await client.close();
        await server.close();
      }
    };
    expect(await run('FFFSS', 100)).toBe(21);
    expect(await run('FFSSS', 100)).toBeUndefined();
    expect(await run('SF', 100)).toBeUndefined();
  });

  it('4xx, aborted calls and invalid requests never open it', async () => {
    const upstream = await switchable(404);
    const client = createClient(movies, {
      instances: [upstream.server.url],
      retry: false,
      outlier: false,
      throttle: false,
      breaker: breakerOptions({ volumeThreshold: 5 }),
    });
    const events = collect(client, 'breaker');
    try {
      for (let call = 0; call < 40; call++) {
        const error = await failure(client.getMovie({ id: call }));
        expect((error as HttpStatusError).status).toBe(404);
      }
      upstream.mode = 'hang';
      for (let call = 0; call < 20; call++) {
        const error = await failure(client.getMovie({ id: call }, { signal: AbortSignal.timeout(15) }));
        expect(error.code).toBe(ErrorCode.ABORTED);
      }
      for (let call = 0; call < 20; call++) {
        const error = await failure(client.getMovie({ id: 'seven' } as unknown as { id: number }));
        expect(error.code).toBe(ErrorCode.INVALID_REQUEST);
      }
      expect(events).toEqual([]);
      upstream.mode = 'ok';
      expect(await client.getMovie({ id: 1 })).toEqual({ id: 1, title: 'Heat' });
      const stats = client.stats().endpoints.getMovie!;
      expect(stats.breaker).toBe('closed');
      // Invalid requests fail before the stack: they are not calls of the endpoint.
      expect(stats.failures).toEqual({ HTTP_STATUS: 40, ABORTED: 20 });
    } finally {
      await client.close();
    }
  });
});

describe('per-endpoint state with calls interleaved', () => {
  // The breaker, the stats and the response decoding keep the last endpoint's entry: calls
  // that alternate between endpoints must each find their own.
  it("alternating endpoints: one's failures open its circuit alone; stats and schemas stay per endpoint", async () => {
    const upstream = await startServer((request, response) => {
      const url = request.url ?? '';
      if (/^\/movies\/\d+$/.exec(url)) return sendJson(response, 503, { error: 'down' });
      if (url === '/health') return sendJson(response, 200, { ok: true });
      // byTitle has no response schema: its body comes back as sent.
      if (url.startsWith('/titles/')) return sendJson(response, 200, { title: 'Heat', extra: 1 });
      return sendJson(response, 404, {});
    });
    const client = createClient(movies, {
      instances: [upstream.url],
      retry: false,
      outlier: false,
      throttle: false,
      breaker: breakerOptions({ volumeThreshold: 10 }),
    });
    try {
      for (let round = 0; round < 30; round++) {
        await failure(client.getMovie({ id: round }));
        expect(await client.health()).toEqual({ ok: true });
        expect(await client.byTitle({ title: 'heat' })).toEqual({ title: 'Heat', extra: 1 });
      }
      const { getMovie, health, byTitle } = client.stats().endpoints;
      expect(getMovie).toMatchObject({ requests: 30, successes: 0, breaker: 'open' });
      // 10 calls opened it (every one failed); the other 20 failed fast.
      expect(getMovie?.failures).toEqual({ HTTP_STATUS: 10, CIRCUIT_OPEN: 20 });
      expect(health).toMatchObject({ requests: 30, successes: 30, failures: {}, breaker: 'closed' });
      expect(byTitle).toMatchObject({ requests: 30, successes: 30, failures: {}, breaker: 'closed' });
      expect(upstream.requests.filter((request) => request.url?.startsWith('/movies/'))).toHaveLength(10);
    } finally {
      await client.close();
      await upstream.close();
    }
  });

  it('alternating endpoints: the one with a response schema is decoded by it, the other is not', async () => {
    const upstream = await startServer((request, response) => {
      const url = request.url ?? '';
      // A field the Movie schema does not know: a decoded answer has it stripped.
      if (/^\/movies\/\d+$/.exec(url)) return sendJson(response, 200, { id: 7, title: 'Heat', extra: 1 });
      return sendJson(response, 200, { title: 'Heat', extra: 1 });
    });
    const client = createClient(movies, { instances: [upstream.url] });
    try {
      for (let round = 0; round < 5; round++) {
        expect(await client.getMovie({ id: 7 })).toEqual({ id: 7, title: 'Heat' });
        expect(await client.byTitle({ title: 'heat' })).toEqual({ title: 'Heat', extra: 1 });
      }
    } finally {
      await client.close();
      await upstream.close();
    }
  });
});

describe('breaker: open → half-open → closed, on real time', () => {
  async function openCircuit(resetTimeoutMs: number, delayMs = 0) {
    const upstream = await switchable(503, delayMs);
    const client = createClient(movies, {
      instances: [upstream.server.url],
      retry: false,
      outlier: false,
      throttle: false,
      breaker: breakerOptions({ volumeThreshold: 5, resetTimeoutMs }),
    });
    const events: Array<{ state: string; at: number }> = [];
    client.on('breaker', (event) => events.push({ state: event.state, at: performance.now() }));
    for (let call = 0; call < 5; call++) await failure(client.getMovie({ id: call }));
    expect(events.map((event) => event.state)).toEqual(['open']);
    return { upstream, client, events };
  }

  it('half-opens after resetTimeoutMs; a successful probe closes it and traffic flows again', async () => {
    const { upstream, client, events } = await openCircuit(300);
    const channel = listen(['telescope:breaker:state']);
    try {
      upstream.mode = 'ok';
      expect((await failure(client.getMovie({ id: 1 }))).code).toBe(ErrorCode.CIRCUIT_OPEN);
      await waitFor('half-open', () => events.length === 2);
      // Jittered down by up to half: between 150 and 300 ms.
      const waited = events[1]!.at - events[0]!.at;
      expect(waited).toBeGreaterThanOrEqual(140);
      expect(waited).toBeLessThan(2000);
      expect(client.stats().endpoints.getMovie!.breaker).toBe('half-open');
      const before = upstream.server.requests.length;
      expect(await client.getMovie({ id: 7 })).toEqual({ id: 7, title: 'Heat' });
      expect(upstream.server.requests.length).toBe(before + 1);
      expect(events.map((event) => event.state)).toEqual(['open', 'half-open', 'closed']);
      expect(channel.seen.map((entry) => entry.message.state)).toEqual(['half-open', 'closed']);
      for (let call = 0; call < 10; call++)
        expect(await client.getMovie({ id: call })).toEqual({ id: call, title: 'Heat' });
      expect(client.stats().endpoints.getMovie!.breaker).toBe('closed');
    } finally {
      channel.stop();
      await client.close();
    }
  });

  it('lets one probe through: calls while it is in flight fail fast without I/O', async () => {
    const { upstream, client, events } = await openCircuit(200);
    try {
      upstream.mode = 'ok';
      upstream.delayMs = 150;
      await waitFor('half-open', () => events.length === 2);
      const before = upstream.server.requests.length;
      const probe = client.getMovie({ id: 1 });
      const others = await Promise.all(
        Array.from({ length: 5 }, (_, index) => timedFailure(client.getMovie({ id: index + 2 }))),
      );
      for (const { error, ms } of others) {
        expect(error.code).toBe(ErrorCode.CIRCUIT_OPEN);
        expect(ms).toBeLessThan(100);
      }
      expect(await probe).toEqual({ id: 1, title: 'Heat' });
      expect(upstream.server.requests.length).toBe(before + 1);
      expect(events.map((event) => event.state)).toEqual(['open', 'half-open', 'closed']);
    } finally {
      await client.close();
    }
  });

  it('a failed probe opens it again for another resetTimeoutMs', async () => {
    const { upstream, client, events } = await openCircuit(250);
    try {
      await waitFor('half-open', () => events.length === 2);
      const before = upstream.server.requests.length;
      expect((await failure(client.getMovie({ id: 1 }))).code).toBe(ErrorCode.HTTP_STATUS);
      expect(upstream.server.requests.length).toBe(before + 1);
      expect(events.map((event) => event.state)).toEqual(['open', 'half-open', 'open']);
      expect((await failure(client.getMovie({ id: 2 }))).code).toBe(ErrorCode.CIRCUIT_OPEN);
      await waitFor('second half-open', () => events.length === 4);
      expect(events[3]!.at - events[2]!.at).toBeGreaterThanOrEqual(115);
      upstream.mode = 'ok';
      expect(await client.getMovie({ id: 3 })).toEqual({ id: 3, title: 'Heat' });
      expect(events.map((event) => event.state)).toEqual(['open', 'half-open', 'open', 'half-open', 'closed']);
    } finally {
      await client.close();
    }
  });
});

describe('breaker: a dead dependency behind an open circuit', () => {
  it('10,000 calls: all CIRCUIT_OPEN and fast, no socket opened, heap flat', async () => {
    // Dead: every connection is reset as soon as a request arrives.
    let connections = 0;
    const server = await startServer((request) => {
      request.socket.destroy();
    });
    server.server.on('connection', () => connections++);
    const client = createClient(movies, {
      instances: [server.url],
      retry: false,
      outlier: false,
      throttle: false,
      breaker: breakerOptions({ volumeThreshold: 20, resetTimeoutMs: 600_000 }),
    });
    const events = collect(client, 'breaker');
    const gc = findGc();
    const heap = () => {
      gc?.();
      return process.memoryUsage().heapUsed;
    };
    const batch = async (count: number) => {
      const start = performance.now();
      for (let call = 0; call < count; call++) {
        try {
          await client.getMovie({ id: call });
          throw new Error('expected CIRCUIT_OPEN');
        } catch (error) {
          if ((error as TelescopeError).code !== ErrorCode.CIRCUIT_OPEN) throw error;
        }
      }
      return performance.now() - start;
    };
    try {
      for (let call = 0; call < 20; call++) {
        expect((await failure(client.getMovie({ id: call }))).code).toBe(ErrorCode.CONNECTION_RESET);
      }
      expect(events.map((event) => event.state)).toEqual(['open']);
      const requests = server.requests.length;
      const opened = connections;
      expect(opened).toBeGreaterThan(0);

      await batch(10_000); // warm-up: the heap settles
      const first = heap();
      const elapsed = await batch(10_000);
      await batch(10_000);
      const last = heap();

      expect(server.requests.length).toBe(requests);
      expect(connections).toBe(opened);
      // Fast: no I/O, no waiting (≈ tens of µs per call; generous for a shared machine).
      expect(elapsed).toBeLessThan(5000);
      const stats = client.stats().endpoints.getMovie!;
      expect(stats.failures).toEqual({ CONNECTION_RESET: 20, CIRCUIT_OPEN: 30_000 });
      expect(stats.outstanding).toBe(0);
      expect(stats.window.latency.p99Ms).toBeLessThan(20);
      // Flat: 20,000 calls retaining even 100 bytes each would add 2 MB.
      const grown = last - first;
      expect(grown).toBeLessThan(gc === undefined ? 32 * 1024 * 1024 : 2 * 1024 * 1024);
    } finally {
      await client.close();
    }
  });
});

// --- fallbacks -------------------------------------------------------------------------------

describe('fallbacks', () => {
  it('are typed like the response', () => {
    type FallbackClient = Client<typeof fallbackMovies>;
    expectTypeOf<FallbackClient['getMovie']>().returns.resolves.toEqualTypeOf<{ id: number; title: string }>();
    expectTypeOf<FallbackClient['top']>().returns.resolves.toEqualTypeOf<Array<{ id: number; title: string }>>();
    endpoint({
      method: 'GET',
      path: '/movies/:id',
      params: z.object({ id: z.number() }),
      response: Movie,
      // @ts-expect-error a fallback must be a Movie (or produce one)
      fallback: { id: 'seven' },
    });
    endpoint({
      method: 'GET',
      path: '/movies/:id',
      params: z.object({ id: z.number() }),
      response: Movie,
      // @ts-expect-error params are typed from the params schema
      fallback: (_error, params) => ({ id: params.title, title: 'x' }),
    });
  });

  it('answer 503s and then the open circuit; stats count them apart from failures', async () => {
    resetFallback();
    const upstream = await switchable(503);
    const client = createClient(fallbackMovies, {
      instances: [upstream.server.url],
      retry: false,
      outlier: false,
      throttle: false,
      breaker: breakerOptions({ volumeThreshold: 5 }),
    });
    const fallbacks = collect(client, 'fallback');
    const breakerEvents = collect(client, 'breaker');
    try {
      for (let call = 1; call <= 5; call++) {
        expect(await client.getMovie({ id: call })).toEqual({ id: call, title: 'unavailable (HTTP_STATUS)' });
      }
      expect(breakerEvents.map((event) => event.state)).toEqual(['open']);
      for (let call = 6; call <= 30; call++) {
        expect(await client.getMovie({ id: call })).toEqual({ id: call, title: 'unavailable (CIRCUIT_OPEN)' });
      }
      expect(upstream.server.requests).toHaveLength(5);
      expect(fallbackCalls[0]).toEqual({ code: 'HTTP_STATUS', params: { id: 1 } });
      expect(fallbacks).toHaveLength(30);
      expect(fallbacks[0]).toEqual({ service: 'movies', endpoint: 'getMovie', code: 'HTTP_STATUS', failed: false });
      expect(fallbacks[29]).toEqual({ service: 'movies', endpoint: 'getMovie', code: 'CIRCUIT_OPEN', failed: false });
      const stats = client.stats().endpoints.getMovie!;
      expect(stats.fallbacks).toBe(30);
      // Failures are counted before fallbacks: operators still see the dependency failing.
      expect(stats.failures).toEqual({ HTTP_STATUS: 5, CIRCUIT_OPEN: 25 });
      expect(stats.successes).toBe(0);
    } finally {
      await client.close();
    }
  });

  it('answer for a dead instance (connection refused), a plain value too', async () => {
    resetFallback();
    const client = createClient(fallbackMovies, { instances: [`http://127.0.0.1:${await closedPort()}`] });
    const fallbacks = collect(client, 'fallback');
    try {
      expect(await client.getMovie({ id: 3 })).toEqual({ id: 3, title: 'unavailable (CONNECT_FAILED)' });
      expect(await client.top()).toEqual([]);
      expect(fallbacks.map((event) => [event.endpoint, event.code])).toEqual([
        ['getMovie', 'CONNECT_FAILED'],
        ['top', 'CONNECT_FAILED'],
      ]);
      const stats = client.stats();
      expect(stats.endpoints.getMovie!.fallbacks).toBe(1);
      expect(stats.endpoints.top!.fallbacks).toBe(1);
    } finally {
      await client.close();
    }
  });

  it('answer a deadline, a reset connection and no healthy instance (no such version; no instances discovered yet)', async () => {
    resetFallback();
    const hanging = await switchable('hang');
    const resetting = await startServer((request) => {
      request.socket.destroy();
    });
    const clients = [
      createClient(fallbackMovies, { instances: [hanging.server.url], timeoutMs: 150 }),
      createClient(fallbackMovies, { instances: [resetting.url] }),
      createClient(fallbackMovies, { instances: [{ url: resetting.url, version: 'v1' }] }),
      createClient(fallbackMovies, { discovery: { subscribe: () => () => {} }, timeoutMs: 150 }),
    ] as const;
    try {
      expect(await clients[0].getMovie({ id: 1 })).toEqual({ id: 1, title: 'unavailable (DEADLINE_EXCEEDED)' });
      expect(await clients[1].getMovie({ id: 2 })).toEqual({ id: 2, title: 'unavailable (CONNECTION_RESET)' });
      expect(await clients[2].getMovie({ id: 3 }, { route: { version: 'v2' } })).toEqual({
        id: 3,
        title: 'unavailable (NO_HEALTHY_INSTANCE)',
      });
      expect(await clients[3].getMovie({ id: 4 })).toEqual({ id: 4, title: 'unavailable (NO_HEALTHY_INSTANCE)' });
      for (const client of clients) {
        const stats = client.stats().endpoints.getMovie!;
        expect(stats.fallbacks).toBe(1);
        expect(Object.values(stats.failures)).toEqual([1]);
      }
    } finally {
      for (const client of clients) await client.close();
    }
  });

  it('do not answer a response that fails its schema; it is a failure in stats and on the channels', async () => {
    resetFallback();
    const server = await startServer((_request, response) => sendJson(response, 200, { id: 'one', title: 1 }));
    const client = createClient(fallbackMovies, { instances: [server.url] });
    const channel = listen(['telescope:call:end', 'telescope:call:error']);
    try {
      const error = await failure(client.getMovie({ id: 1 }));
      expect(error.code).toBe(ErrorCode.INVALID_RESPONSE);
      expect(fallbackCalls).toEqual([]);
      expect(channel.seen.map((entry) => entry.channel)).toEqual(['telescope:call:error']);
      expect(channel.seen[0]!.message.error).toBe(error);
      expect(client.stats().endpoints.getMovie).toMatchObject({
        successes: 0,
        failures: { INVALID_RESPONSE: 1 },
        fallbacks: 0,
      });
    } finally {
      channel.stop();
      await client.close();
    }
  });

  it('do not answer 4xx: the request was wrong, not the dependency', async () => {
    resetFallback();
    const upstream = await switchable(404);
    const client = createClient(fallbackMovies, { instances: [upstream.server.url] });
    try {
      const error = await failure(client.getMovie({ id: 1 }));
      expect((error as HttpStatusError).status).toBe(404);
      expect(fallbackCalls).toEqual([]);
      expect(client.stats().endpoints.getMovie!.fallbacks).toBe(0);
    } finally {
      await client.close();
    }
  });

  it('a throwing (or rejecting) fallback surfaces the original error with the fallback’s as cause', async () => {
    const upstream = await switchable(503);
    const client = createClient(fallbackMovies, { instances: [upstream.server.url], retry: false });
    const fallbacks = collect(client, 'fallback');
    try {
      for (const behaviour of ['throw', 'reject'] as const) {
        resetFallback(behaviour);
        const error = await failure(client.getMovie({ id: 1 }));
        expect(error.code).toBe(ErrorCode.HTTP_STATUS);
        expect((error as HttpStatusError).status).toBe(503);
        expect(error.cause).toBeInstanceOf(Error);
        expect((error.cause as Error).message).toBe(
          behaviour === 'throw' ? 'fallback cache is down' : 'fallback cache rejected',
        );
      }
      expect(fallbacks).toEqual([
        { service: 'movies', endpoint: 'getMovie', code: 'HTTP_STATUS', failed: true },
        { service: 'movies', endpoint: 'getMovie', code: 'HTTP_STATUS', failed: true },
      ]);
      expect(client.stats().endpoints.getMovie!.fallbacks).toBe(0);
    } finally {
      await client.close();
    }
  });

  it('a hanging fallback is bounded by the deadline: the call fails with the original error within budget', async () => {
    resetFallback('hang');
    const upstream = await switchable('hang');
    const client = createClient(fallbackMovies, { instances: [upstream.server.url], timeoutMs: 300 });
    const fallbacks = collect(client, 'fallback');
    try {
      const { error, ms } = await timedFailure(client.getMovie({ id: 1 }));
      expect(error.code).toBe(ErrorCode.DEADLINE_EXCEEDED);
      expect((error.cause as Error).message).toMatch(/did not answer within the call.s deadline/);
      expect(ms).toBeGreaterThanOrEqual(280);
      expect(ms).toBeLessThan(300 + 500);
      expect(fallbackCalls).toHaveLength(1);
      expect(fallbacks).toEqual([{ service: 'movies', endpoint: 'getMovie', code: 'DEADLINE_EXCEEDED', failed: true }]);
    } finally {
      await client.close();
    }
  });

  it('on an open circuit a hanging fallback gets the rest of the budget, then the call fails CIRCUIT_OPEN', async () => {
    resetFallback('throw');
    const upstream = await switchable(503);
    const client = createClient(fallbackMovies, {
      instances: [upstream.server.url],
      retry: false,
      timeoutMs: 250,
      throttle: false,
      breaker: breakerOptions({ volumeThreshold: 3 }),
    });
    try {
      for (let call = 0; call < 3; call++) await failure(client.getMovie({ id: call }));
      expect(client.stats().endpoints.getMovie!.breaker).toBe('open');
      resetFallback('hang');
      const { error, ms } = await timedFailure(client.getMovie({ id: 9 }));
      expect(error.code).toBe(ErrorCode.CIRCUIT_OPEN);
      expect((error.cause as Error).message).toMatch(/did not answer/);
      expect(ms).toBeGreaterThanOrEqual(230);
      expect(ms).toBeLessThan(250 + 500);
    } finally {
      await client.close();
    }
  });
});

// --- bulkhead --------------------------------------------------------------------------------

describe('bulkhead', () => {
  it('maxConcurrent 2, maxQueue 1, 5 parallel calls to a slow server: 2 run, 1 queued, 2 shed', async () => {
    const upstream = await switchable('ok', 200);
    const client = createClient(movies, {
      instances: [upstream.server.url],
      timeoutMs: 3000,
      bulkhead: { maxConcurrent: 2, maxQueue: 1 },
    });
    const shed = collect(client, 'shed');
    const breakerEvents = collect(client, 'breaker');
    try {
      const start = performance.now();
      const results = await Promise.all(
        [1, 2, 3, 4, 5].map((id) =>
          client.getMovie({ id }).then(
            (movie) => ({ movie, ms: performance.now() - start }),
            (error: TelescopeError) => ({
              code: error.code,
              requestSent: error.requestSent,
              ms: performance.now() - start,
            }),
          ),
        ),
      );
      expect(results.map(({ ms: _ms, ...rest }) => rest)).toEqual([
        { movie: { id: 1, title: 'Heat' } },
        { movie: { id: 2, title: 'Heat' } },
        { movie: { id: 3, title: 'Heat' } },
        { code: ErrorCode.BULKHEAD_FULL, requestSent: false },
        { code: ErrorCode.BULKHEAD_FULL, requestSent: false },
      ]);
      // Shed at once; the queued call ran after a slot was freed.
      expect(results[3]!.ms).toBeLessThan(150);
      expect(results[4]!.ms).toBeLessThan(150);
      expect(results[2]!.ms).toBeGreaterThanOrEqual(390);
      expect(upstream.server.requests).toHaveLength(3);
      expect(upstream.maxInFlight).toBe(2);
      expect(shed).toEqual([
        { service: 'movies', endpoint: 'getMovie', reason: 'full' },
        { service: 'movies', endpoint: 'getMovie', reason: 'full' },
      ]);
      const stats = client.stats().endpoints.getMovie!;
      expect(stats).toMatchObject({ requests: 5, successes: 3, shed: 2, outstanding: 0, breaker: 'closed' });
      expect(stats.failures).toEqual({ BULKHEAD_FULL: 2 });
      // Shedding is local: it says nothing about the dependency's health.
      expect(breakerEvents).toEqual([]);
    } finally {
      await client.close();
    }
  });

  it('a queued call waits at most its deadline (queue-timeout), and the fallback answers it', async () => {
    resetFallback();
    const upstream = await switchable('ok', 600);
    const client = createClient(fallbackMovies, {
      instances: [upstream.server.url],
      timeoutMs: 2000,
      bulkhead: { maxConcurrent: 1, maxQueue: 1 },
    });
    const shed = collect(client, 'shed');
    try {
      const first = client.getMovie({ id: 1 });
      const start = performance.now();
      const second = await client.getMovie({ id: 2 }, { timeoutMs: 150 });
      const waited = performance.now() - start;
      expect(second).toEqual({ id: 2, title: 'unavailable (BULKHEAD_FULL)' });
      expect(waited).toBeGreaterThanOrEqual(140);
      expect(waited).toBeLessThan(500);
      expect(shed).toEqual([{ service: 'movies', endpoint: 'getMovie', reason: 'queue-timeout' }]);
      expect(await first).toEqual({ id: 1, title: 'Heat' });
      expect(upstream.server.requests).toHaveLength(1);
      expect(client.stats().endpoints.getMovie).toMatchObject({
        shed: 1,
        fallbacks: 1,
        failures: { BULKHEAD_FULL: 1 },
      });
    } finally {
      await client.close();
    }
  });

  it('a caller abort ends a queued call at once (ABORTED, not shed)', async () => {
    const upstream = await switchable('ok', 400);
    const client = createClient(movies, {
      instances: [upstream.server.url],
      timeoutMs: 3000,
      bulkhead: { maxConcurrent: 1, maxQueue: 1 },
    });
    const shed = collect(client, 'shed');
    try {
      const first = client.getMovie({ id: 1 });
      const { error, ms } = await timedFailure(client.getMovie({ id: 2 }, { signal: AbortSignal.timeout(50) }));
      expect(error.code).toBe(ErrorCode.ABORTED);
      expect(ms).toBeLessThan(300);
      expect(shed).toEqual([]);
      // Its queue place is free again.
      const third = client.getMovie({ id: 3 });
      expect(await first).toEqual({ id: 1, title: 'Heat' });
      expect(await third).toEqual({ id: 3, title: 'Heat' });
      expect(upstream.server.requests.map((request) => request.url)).toEqual(['/movies/1', '/movies/3']);
    } finally {
      await client.close();
    }
  });
});

// --- stats and diagnostics channels ----------------------------------------------------------

describe('stats()', () => {
  it('keys are the declared endpoints and failure codes only, whatever ids and paths are called', async () => {
    const server = await startServer((request, response, body) => {
      const url = request.url ?? '';
      const id = Number(/^\/movies\/(\d+)$/.exec(url)?.[1] ?? -1);
      if (id % 7 === 0) return sendJson(response, 404, { error: 'no such movie' });
      if (id % 11 === 0) return sendJson(response, 200, { id, title: 42 }); // fails the schema
      if (url.startsWith('/titles/')) return sendJson(response, 200, []);
      answer(request, response, body);
    });
    const client = createClient(movies, { instances: [server.url] });
    try {
      for (let id = 1; id <= 1000; id++) await client.getMovie({ id }).catch(() => undefined);
      const odd = ['../../etc/passwd', '%2F%2E', 'marker-ünïcødé-🎬', 'a'.repeat(2000), 'x?y=1&z#w'];
      for (let index = 0; index < 200; index++) await client.byTitle({ title: `marker-${index}-${odd[index % 5]}` });

      const stats = client.stats();
      expect(Object.keys(stats.endpoints).sort()).toEqual(Object.keys(movies.endpoints).sort());
      const getMovie = stats.endpoints.getMovie!;
      expect(getMovie.requests).toBe(1000);
      expect(getMovie.failures).toEqual({ HTTP_STATUS: 142, INVALID_RESPONSE: 78 });
      expect(getMovie.successes).toBe(1000 - 142 - 78);
      expect(stats.endpoints.byTitle!.requests).toBe(200);
      for (const endpointStats of Object.values(stats.endpoints)) {
        for (const code of Object.keys(endpointStats.failures)) expect(errorCodes.has(code)).toBe(true);
      }
      // Nothing the callers passed appears in the snapshot.
      const serialized = JSON.stringify(stats);
      expect(serialized).not.toContain('marker-');
      expect(serialized).not.toContain('/movies/');
      expect(stats.instances).toHaveLength(1);
    } finally {
      await client.close();
    }
  });

  it('latency percentiles of a server answering in ~20 ms are plausible; counters add up', async () => {
    const upstream = await switchable('ok', 20);
    const client = createClient(movies, { instances: [upstream.server.url] });
    try {
      for (let id = 1; id <= 40; id++) await client.getMovie({ id });
      const stats = client.stats().endpoints.getMovie!;
      expect(stats).toMatchObject({ requests: 40, successes: 40, failures: {}, outstanding: 0, fallbacks: 0 });
      const { latency } = stats.window;
      expect(latency.count).toBe(40);
      expect(latency.p50Ms).toBeGreaterThanOrEqual(19);
      expect(latency.p50Ms).toBeLessThan(200);
      expect(latency.p90Ms).toBeGreaterThanOrEqual(latency.p50Ms);
      expect(latency.p99Ms).toBeGreaterThanOrEqual(latency.p90Ms);
      expect(latency.maxMs).toBeGreaterThanOrEqual(latency.p99Ms);
      expect(latency.maxMs).toBeLessThan(1000);
      expect(stats.window).toMatchObject({ requests: 40, failures: 0, errorPercentage: 0 });
    } finally {
      await client.close();
    }
  });

  it('counts retries and hedges, and reports the retry tokens left', async () => {
    const bad = await switchable(503);
    const slow = await switchable('ok', 300);
    const good = await switchable('ok');
    const client = createClient(movies, {
      instances: [bad.server.url, good.server.url],
      balancer: 'round-robin',
      outlier: false,
    });
    const retries = collect(client, 'retry');
    const hedging = createClient(movies, {
      instances: [slow.server.url, good.server.url],
      balancer: 'round-robin',
      hedge: { delayMs: 30 },
      outlier: false,
    });
    const hedges = collect(hedging, 'hedge');
    try {
      for (let id = 1; id <= 10; id++) expect(await client.getMovie({ id })).toEqual({ id, title: 'Heat' });
      const stats = client.stats();
      expect(retries.length).toBeGreaterThanOrEqual(5);
      expect(stats.endpoints.getMovie!.retries).toBe(retries.length);
      expect(stats.retryTokens).toBe(Math.floor(100 + 0.1 * 10 - retries.length));
      expect(stats.retryTokens).toBe(client.retryTokens());

      for (let id = 1; id <= 6; id++) expect(await hedging.getMovie({ id })).toEqual({ id, title: 'Heat' });
      expect(hedges.length).toBeGreaterThanOrEqual(3);
      expect(hedging.stats().endpoints.getMovie!.hedges).toBe(hedges.length);
      expect(hedging.stats().endpoints.getMovie!.successes).toBe(6);
    } finally {
      await client.close();
      await hedging.close();
    }
  });

  it('without a breaker the state reads disabled', async () => {
    const client = createClient(movies, { instances: ['http://127.0.0.1:1'], breaker: false });
    expect(client.stats().endpoints.getMovie!.breaker).toBe('disabled');
    await client.close();
  });
});

describe('diagnostics channels', () => {
  const names = ['telescope:call:start', 'telescope:call:attempt', 'telescope:call:end', 'telescope:call:error'];

  /** The channel messages of one client's calls, as comparable summaries. */
  function summarize(seen: ReturnType<typeof listen>['seen'], service: string) {
    return seen
      .filter((entry) => (entry.message.context as { service: string }).service === service)
      .map(({ channel, message }) => {
        const context = message.context as { endpoint: string; attempt: number };
        const base = { channel: channel.replace('telescope:call:', ''), endpoint: context.endpoint };
        switch (channel) {
          case 'telescope:call:start':
            return { ...base, path: (message.request as { path: string }).path };
          case 'telescope:call:attempt':
            return { ...base, attempt: message.attempt, instance: message.instance };
          case 'telescope:call:end':
            return { ...base, status: (message.response as { status: number }).status };
          default:
            return { ...base, code: (message.error as TelescopeError).code };
        }
      });
  }

  it('publish start, attempt, end and error with durationMs and the call context', async () => {
    const upstream = await startServer((request, response, body) => {
      if (request.url === '/movies/2') {
        response.writeHead(503);
        response.end();
        return;
      }
      setTimeout(() => answer(request, response, body), 20);
    });
    const client = createClient(movies, { instances: [upstream.url], outlier: false });
    const channel = listen(names);
    try {
      expect(await client.getMovie({ id: 1 })).toEqual({ id: 1, title: 'Heat' });
      await failure(client.getMovie({ id: 2 }));
      expect(summarize(channel.seen, 'movies')).toEqual([
        { channel: 'start', endpoint: 'getMovie', path: '/movies/1' },
        { channel: 'attempt', endpoint: 'getMovie', attempt: 1, instance: upstream.url },
        { channel: 'end', endpoint: 'getMovie', status: 200 },
        { channel: 'start', endpoint: 'getMovie', path: '/movies/2' },
        { channel: 'attempt', endpoint: 'getMovie', attempt: 1, instance: upstream.url },
        // The retry goes to the same (only) instance over a fresh connection.
        { channel: 'attempt', endpoint: 'getMovie', attempt: 2, instance: upstream.url },
        { channel: 'error', endpoint: 'getMovie', code: ErrorCode.HTTP_STATUS },
      ]);
      const end = channel.seen.find((entry) => entry.channel === 'telescope:call:end')!.message;
      expect(end.durationMs).toBeGreaterThanOrEqual(19);
      expect(end.durationMs).toBeLessThan(1000);
      const error = channel.seen.find((entry) => entry.channel === 'telescope:call:error')!.message;
      expect(error.durationMs).toBeGreaterThanOrEqual(0);
      expect(error.durationMs).toBeLessThan(1000);
      // One context per call, shared by its messages.
      const contexts = new Set(channel.seen.map((entry) => entry.message.context));
      expect(contexts.size).toBe(2);
    } finally {
      channel.stop();
      await client.close();
    }
  });

  it('publish CIRCUIT_OPEN and BULKHEAD_FULL as errors without an attempt', async () => {
    const upstream = await switchable(503);
    const client = createClient(movies, {
      instances: [upstream.server.url],
      retry: false,
      throttle: false,
      breaker: breakerOptions({ volumeThreshold: 1 }),
    });
    const channel = listen(names);
    try {
      await failure(client.getMovie({ id: 1 }));
      channel.seen.length = 0;
      await failure(client.getMovie({ id: 2 }));
      expect(summarize(channel.seen, 'movies')).toEqual([
        { channel: 'start', endpoint: 'getMovie', path: '/movies/2' },
        { channel: 'error', endpoint: 'getMovie', code: ErrorCode.CIRCUIT_OPEN },
      ]);
    } finally {
      channel.stop();
      await client.close();
    }
  });

  it('publish with metrics: false too (stats stay empty)', async () => {
    const upstream = await switchable('ok');
    const client = createClient(movies, { instances: [upstream.server.url], metrics: false });
    const channel = listen(names);
    try {
      await client.getMovie({ id: 1 });
      expect(summarize(channel.seen, 'movies').map((entry) => entry.channel)).toEqual(['start', 'attempt', 'end']);
      expect(client.stats().endpoints.getMovie!.requests).toBe(0);
    } finally {
      channel.stop();
      await client.close();
    }
  });
});
