/**
 * `withCache` on a manual clock, with a fake client (no I/O) and the in-memory remote tier:
 * the read path and write-behind, coalescing, stale-while-revalidate, stale-if-error, remote
 * timeouts and failures, corrupt entries, negative caching, jitter, invalidation and the bus,
 * leases, fallbacks, non-JSON values, aborts and deadlines, events, stats, close, and option
 * checking.
 */
import { describe, expect, it, vi } from 'vitest';
import {
  type CacheEvent,
  type CacheOptions,
  memoryCache,
  type RemoteCache,
  RemoteCacheError,
  withCache,
} from '../../src/cache/index.js';
import {
  type Client,
  type ClientStats,
  ErrorCode,
  HttpStatusError,
  isTelescopeError,
  type Logger,
  TelescopeError,
} from '../../src/index.js';
import { thrown } from '../helpers/assert.js';
import { type ManualClock, manualClock } from '../helpers/clock.js';
import { movies } from '../helpers/movies.js';

type Movies = typeof movies;
type Handler = (endpoint: string, args: unknown[]) => unknown;

interface FakeClient {
  client: Client<Movies>;
  calls: Array<{ endpoint: string; args: unknown[] }>;
  emit(event: string, payload: unknown): void;
  closed(): boolean;
}

/** A client-shaped object whose methods run `handler` (sync values become resolved promises). */
function fakeClient(handler: Handler): FakeClient {
  const calls: FakeClient['calls'] = [];
  const listeners = new Map<string, Set<(payload: unknown) => void>>();
  let isClosed = false;
  const client: Record<string, unknown> = {
    service: movies,
    close: async () => {
      isClosed = true;
    },
    on(event: string, listener: (payload: unknown) => void) {
      let set = listeners.get(event);
      if (set === undefined) {
        set = new Set();
        listeners.set(event, set);
      }
      set.add(listener);
      return () => set.delete(listener);
    },
    retryTokens: () => Number.POSITIVE_INFINITY,
    stats: (): ClientStats => ({ service: 'movies', retryTokens: 7, instances: [], endpoints: {} }),
  };
  for (const name of Object.keys(movies.endpoints)) {
    client[name] = (...args: unknown[]) => {
      calls.push({ endpoint: name, args });
      try {
        return Promise.resolve(handler(name, args));
      } catch (error) {
        return Promise.reject(error);
      }
    };
  }
  return {
    client: client as unknown as Client<Movies>,
    calls,
    emit: (event, payload) => {
      for (const listener of listeners.get(event) ?? []) listener(payload);
    },
    closed: () => isClosed,
  };
}

/** Lets queued promise callbacks and microtasks run. */
const flush = () => new Promise<void>((resolve) => setImmediate(resolve));

function deferred<T>() {
  let resolve!: (value: T) => void;
  let reject!: (error: unknown) => void;
  const promise = new Promise<T>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}

const movie = (id: number, title = `movie ${id}`) => ({ id, title });

/** A remote tier wrapping memoryCache, with switches to make it slow or failing. */
function controllableRemote(clock: ManualClock) {
  const inner = memoryCache({ clock });
  const state = {
    getMode: 'ok' as 'ok' | 'hang' | 'fail',
    setMode: 'ok' as 'ok' | 'hang' | 'fail',
    gets: 0,
    sets: [] as Array<{ key: string; value: string; ttlMs: number }>,
    hung: [] as Array<() => void>,
  };
  const act = <T>(mode: 'ok' | 'hang' | 'fail', run: () => Promise<T>): Promise<T> => {
    if (mode === 'fail') return Promise.reject(new RemoteCacheError('REMOTE_UNAVAILABLE', 'remote is down'));
    if (mode === 'hang') {
      return new Promise<T>((resolve) => {
        state.hung.push(() => void run().then(resolve));
      });
    }
    return run();
  };
  const remote: RemoteCache = {
    name: 'controllable',
    timeoutMs: 50,
    bus: inner.bus,
    get: (key) => {
      state.gets++;
      return act(state.getMode, () => inner.get(key));
    },
    set: (key, value, ttlMs) => {
      state.sets.push({ key, value, ttlMs });
      return act(state.setMode, () => inner.set(key, value, ttlMs));
    },
    delete: (key) => inner.delete(key),
    acquireLease: (key, token, ttlMs) => inner.acquireLease!(key, token, ttlMs),
    releaseLease: (key, token) => inner.releaseLease!(key, token),
    close: () => inner.close(),
  };
  return { remote, inner, state };
}

function recordingLogger() {
  const lines: Array<{ level: string; fields: Record<string, unknown>; message: string | undefined }> = [];
  const logger: Logger = {
    child: () => logger,
    debug: (fields, message) => lines.push({ level: 'debug', fields, message }),
    info: (fields, message) => lines.push({ level: 'info', fields, message }),
    warn: (fields, message) => lines.push({ level: 'warn', fields, message }),
    error: (fields, message) => lines.push({ level: 'error', fields, message }),
  };
  return { logger, lines };
}

function setup(
  handler: Handler = (_endpoint, args) => movie((args[0] as { id: number }).id),
  options: Partial<CacheOptions<Movies>> = {},
) {
  const clock = options.clock ? (options.clock as ManualClock) : manualClock();
  const fake = fakeClient(handler);
  const cached = withCache(fake.client, {
    clock,
    jitter: 0,
    endpoints: { getMovie: { ttlMs: 1000, key: (p) => `movie:${p.id}` } },
    ...options,
  });
  const events: CacheEvent[] = [];
  cached.on('cache', (event) => events.push(event));
  return {
    clock,
    fake,
    cached,
    events,
    serviceCalls: () => fake.calls.filter((c) => c.endpoint === 'getMovie').length,
  };
}

async function rejection(promise: Promise<unknown>): Promise<TelescopeError> {
  try {
    await promise;
  } catch (error) {
    expect(isTelescopeError(error)).toBe(true);
    return error as TelescopeError;
  }
  throw new Error('expected a rejection');
}

// --- read path -------------------------------------------------------------------------------------

describe('read path', () => {
  it('goes local → remote → service, and the local tier serves only within its own TTL', async () => {
    const { clock, cached, serviceCalls } = setup(undefined, { local: { ttlMs: 200 } });
    expect(await cached.withMetadata.getMovie({ id: 7 })).toMatchObject({
      value: movie(7),
      cacheStatus: 'service',
      coalesced: false,
      key: 'telescope:movies:getMovie:movie:7',
      ageMs: 0,
    });
    await flush();
    expect((await cached.withMetadata.getMovie({ id: 7 })).cacheStatus).toBe('local');
    clock.advance(250); // past the local TTL, inside the entry's own TTL
    const fromRemote = await cached.withMetadata.getMovie({ id: 7 });
    expect(fromRemote).toMatchObject({ cacheStatus: 'remote', value: movie(7), ageMs: 250 });
    expect((await cached.withMetadata.getMovie({ id: 7 })).cacheStatus).toBe('local');
    clock.advance(800); // past the TTL
    expect((await cached.withMetadata.getMovie({ id: 7 })).cacheStatus).toBe('service');
    expect(serviceCalls()).toBe(2);
  });

  it('returns the same type and value as the client, frozen', async () => {
    const { cached } = setup();
    const value = await cached.getMovie({ id: 3 });
    expect(value).toEqual(movie(3));
    expect(Object.isFrozen(value)).toBe(true);
    const again = await cached.getMovie({ id: 3 });
    expect(again).toBe(value);
    expect(() => {
      (again as { title: string }).title = 'changed';
    }).toThrow(TypeError);
  });

  it('fills the local tier from a remote hit (another client wrote it)', async () => {
    const clock = manualClock();
    const shared = memoryCache({ clock });
    const a = setup(undefined, { clock, remote: shared, closeRemote: false });
    const b = setup(undefined, { clock, remote: shared, closeRemote: false });
    expect((await a.cached.withMetadata.getMovie({ id: 1 })).cacheStatus).toBe('service');
    await flush();
    expect((await b.cached.withMetadata.getMovie({ id: 1 })).cacheStatus).toBe('remote');
    expect((await b.cached.withMetadata.getMovie({ id: 1 })).cacheStatus).toBe('local');
    expect(b.serviceCalls()).toBe(0);
  });

  it('writes to the remote tier behind the caller: a hung write never delays it, a failed one is logged and counted', async () => {
    const clock = manualClock();
    const { remote, state } = controllableRemote(clock);
    const { logger, lines } = recordingLogger();
    state.setMode = 'hang';
    const { cached } = setup(undefined, { clock, remote, logger });
    expect((await cached.withMetadata.getMovie({ id: 1 })).cacheStatus).toBe('service');
    expect(state.sets).toHaveLength(1);
    expect(JSON.parse(state.sets[0]!.value)).toMatchObject({ tc: 1, key: 'telescope:movies:getMovie:movie:1' });
    expect(cached.stats().cache.remote?.pendingWrites).toBe(1);
    clock.advance(60); // the write's own timeout
    await flush();
    expect(cached.stats().cache.remote).toMatchObject({ pendingWrites: 0, timeouts: 1, errors: { set: 1 } });
    state.setMode = 'fail';
    await cached.getMovie({ id: 2 });
    await flush();
    expect(cached.stats().cache.remote?.errors.set).toBe(2);
    expect(lines.some((line) => line.level === 'warn' && line.fields.operation === 'set')).toBe(true);
  });

  it('counts a slow remote read as a miss after its timeout, and does not write back', async () => {
    const clock = manualClock();
    const { remote, state } = controllableRemote(clock);
    state.getMode = 'hang';
    const { cached, serviceCalls } = setup(undefined, { clock, remote });
    const pending = cached.withMetadata.getMovie({ id: 1 });
    await flush();
    expect(serviceCalls()).toBe(0);
    clock.advance(50);
    expect(await pending).toMatchObject({ cacheStatus: 'service', value: movie(1) });
    expect(state.sets).toHaveLength(0);
    expect(cached.stats().cache.remote).toMatchObject({ timeouts: 1, errors: { get: 1 } });
    expect((await cached.withMetadata.getMovie({ id: 1 })).cacheStatus).toBe('local');
  });

  it('serves a local entry still inside its TTL when the remote read fails', async () => {
    const clock = manualClock();
    const { remote, state } = controllableRemote(clock);
    const { cached, serviceCalls } = setup(undefined, { clock, remote, local: { ttlMs: 100 } });
    await cached.getMovie({ id: 1 });
    clock.advance(200);
    state.getMode = 'fail';
    expect((await cached.withMetadata.getMovie({ id: 1 })).cacheStatus).toBe('local');
    expect(serviceCalls()).toBe(1);
  });

  it('caps remote operations at half the call budget left, and skips them when none is left', async () => {
    const clock = manualClock();
    const { remote, state } = controllableRemote(clock);
    state.getMode = 'hang';
    const { cached } = setup(undefined, { clock, remote });
    const pending = cached.withMetadata.getMovie({ id: 1 }, { timeoutMs: 40 });
    await flush();
    clock.advance(20); // half of 40 ms, less than the remote's 50 ms
    expect((await pending).cacheStatus).toBe('service');
    expect(cached.stats().cache.remote?.timeouts).toBe(1);
  });
});

// --- coalescing --------------------------------------------------------------------------------

describe('coalescing', () => {
  it('turns 1,000 concurrent misses of one key into one service call', async () => {
    const answer = deferred<unknown>();
    const { cached, serviceCalls } = setup(() => answer.promise);
    const calls = Array.from({ length: 1000 }, () => cached.withMetadata.getMovie({ id: 9 }));
    await flush();
    expect(serviceCalls()).toBe(1);
    answer.resolve(movie(9));
    const results = await Promise.all(calls);
    expect(results.filter((result) => !result.coalesced)).toHaveLength(1);
    expect(results.every((result) => result.cacheStatus === 'service' && result.value === results[0]!.value)).toBe(
      true,
    );
    expect(cached.stats().cache.totals).toMatchObject({ misses: 1, coalesced: 999 });
  });

  it('keeps different keys apart', async () => {
    const { cached, serviceCalls } = setup();
    await Promise.all([cached.getMovie({ id: 1 }), cached.getMovie({ id: 2 }), cached.getMovie({ id: 1 })]);
    expect(serviceCalls()).toBe(2);
  });

  it('gives every waiter the error when the shared call fails', async () => {
    const answer = deferred<unknown>();
    const { cached } = setup(() => answer.promise);
    const calls = Array.from({ length: 5 }, () => rejection(cached.getMovie({ id: 1 })));
    await flush();
    answer.reject(new TelescopeError(ErrorCode.CONNECT_FAILED, 'refused'));
    for (const error of await Promise.all(calls)) expect(error.code).toBe('CONNECT_FAILED');
    expect(cached.stats().cache.totals.errors).toBe(5);
  });

  it('lets a waiter abort alone; the shared request is aborted only when every waiter has', async () => {
    const signals: AbortSignal[] = [];
    const answer = deferred<unknown>();
    const { cached } = setup((_endpoint, args) => {
      signals.push((args[1] as { signal: AbortSignal }).signal);
      return answer.promise;
    });
    const first = new AbortController();
    const second = new AbortController();
    const leader = rejection(cached.getMovie({ id: 1 }, { signal: first.signal }));
    const follower = cached.getMovie({ id: 1 }, { signal: second.signal });
    await flush();
    first.abort();
    expect((await leader).code).toBe('ABORTED');
    expect(signals[0]?.aborted).toBe(false);
    answer.resolve(movie(1));
    expect(await follower).toEqual(movie(1));

    const again = deferred<unknown>();
    const { cached: other } = setup((_endpoint, args) => {
      signals.push((args[1] as { signal: AbortSignal }).signal);
      return again.promise;
    });
    const only = new AbortController();
    const alone = rejection(other.getMovie({ id: 1 }, { signal: only.signal }));
    await flush();
    only.abort();
    expect((await alone).code).toBe('ABORTED');
    expect(signals[1]?.aborted).toBe(true);
  });

  it('does not let a new caller join a shared request that is being aborted', async () => {
    const answers: Array<ReturnType<typeof deferred<unknown>>> = [];
    const { cached, serviceCalls } = setup((_endpoint, args) => {
      const answer = deferred<unknown>();
      answers.push(answer);
      const signal = (args[1] as { signal?: AbortSignal } | undefined)?.signal;
      signal?.addEventListener('abort', () => answer.reject(new TelescopeError(ErrorCode.ABORTED, 'aborted')));
      return answer.promise;
    });
    const controller = new AbortController();
    const first = rejection(cached.getMovie({ id: 1 }, { signal: controller.signal }));
    await flush();
    controller.abort();
    const second = cached.withMetadata.getMovie({ id: 1 });
    expect((await first).code).toBe('ABORTED');
    await flush();
    expect(serviceCalls()).toBe(2);
    answers[1]!.resolve(movie(1));
    expect(await second).toMatchObject({ cacheStatus: 'service', coalesced: false, value: movie(1) });
  });

  it('bounds a follower by its own shorter deadline', async () => {
    const answer = deferred<unknown>();
    const { clock, cached } = setup(() => answer.promise);
    const leader = cached.getMovie({ id: 1 }, { timeoutMs: 1000 });
    const follower = rejection(cached.getMovie({ id: 1 }, { timeoutMs: 100 }));
    await flush();
    clock.advance(100);
    expect((await follower).code).toBe('DEADLINE_EXCEEDED');
    answer.resolve(movie(1));
    expect(await leader).toEqual(movie(1));
  });
});

// --- staleness ---------------------------------------------------------------------------------

describe('stale-while-revalidate', () => {
  it('serves a stale value at once and refreshes it once in the background', async () => {
    let version = 1;
    const answers: Array<ReturnType<typeof deferred<unknown>>> = [];
    const { clock, cached, serviceCalls, events } = setup(
      (_endpoint, args) => {
        if (version === 1) return movie((args[0] as { id: number }).id, 'v1');
        const answer = deferred<unknown>();
        answers.push(answer);
        return answer.promise;
      },
      { endpoints: { getMovie: { ttlMs: 1000, staleMs: 5000, key: (p) => `movie:${p.id}` } } },
    );
    await cached.getMovie({ id: 1 });
    version = 2;
    clock.advance(1500);
    const stale = await Promise.all(Array.from({ length: 10 }, () => cached.withMetadata.getMovie({ id: 1 })));
    expect(stale.every((result) => result.cacheStatus === 'stale-while-revalidate')).toBe(true);
    expect(stale[0]).toMatchObject({ value: { title: 'v1' }, ageMs: 1500 });
    await flush();
    expect(serviceCalls()).toBe(2);
    answers[0]!.resolve(movie(1, 'v2'));
    await flush();
    expect(await cached.withMetadata.getMovie({ id: 1 })).toMatchObject({
      cacheStatus: 'local',
      value: { title: 'v2' },
    });
    expect(cached.stats().cache.totals).toMatchObject({ staleWhileRevalidate: 10, refreshes: 1, refreshErrors: 0 });
    expect(events.filter((event) => event.cacheStatus === 'stale-while-revalidate')).toHaveLength(10);
  });

  it('keeps serving stale when the refresh fails, and logs it', async () => {
    let fail = false;
    const { logger, lines } = recordingLogger();
    const { clock, cached } = setup(
      (_endpoint, args) => {
        if (fail) throw new TelescopeError(ErrorCode.CONNECT_FAILED, 'refused');
        return movie((args[0] as { id: number }).id);
      },
      {
        logger,
        endpoints: { getMovie: { ttlMs: 1000, staleMs: 5000, staleIfErrorMs: 0, key: (p) => `movie:${p.id}` } },
      },
    );
    await cached.getMovie({ id: 1 });
    fail = true;
    clock.advance(1500);
    expect((await cached.withMetadata.getMovie({ id: 1 })).cacheStatus).toBe('stale-while-revalidate');
    await flush();
    expect(cached.stats().cache.totals).toMatchObject({ refreshes: 1, refreshErrors: 1 });
    expect(lines.some((line) => line.message?.includes('background refresh failed'))).toBe(true);
    expect((await cached.withMetadata.getMovie({ id: 1 })).cacheStatus).toBe('stale-while-revalidate');
  });

  it('serves a stale remote value the same way (another process wrote it)', async () => {
    const clock = manualClock();
    const shared = memoryCache({ clock });
    const endpoints = { getMovie: { ttlMs: 1000, staleMs: 5000, key: (p: { id: number }) => `movie:${p.id}` } };
    const a = setup(undefined, { clock, remote: shared, closeRemote: false, endpoints });
    const b = setup(undefined, { clock, remote: shared, closeRemote: false, endpoints });
    await a.cached.getMovie({ id: 1 });
    await flush();
    clock.advance(1500);
    expect((await b.cached.withMetadata.getMovie({ id: 1 })).cacheStatus).toBe('stale-while-revalidate');
    await flush();
    expect(b.serviceCalls()).toBe(1);
    expect((await b.cached.withMetadata.getMovie({ id: 1 })).cacheStatus).toBe('local');
  });
});

describe('stale-if-error', () => {
  const endpoints = {
    getMovie: { ttlMs: 1000, staleIfErrorMs: 10_000, key: (p: { id: number }) => `movie:${p.id}` },
  };

  it.each([
    ['CIRCUIT_OPEN', new TelescopeError(ErrorCode.CIRCUIT_OPEN, 'open')],
    ['DEADLINE_EXCEEDED', new TelescopeError(ErrorCode.DEADLINE_EXCEEDED, 'late')],
    ['CONNECT_FAILED', new TelescopeError(ErrorCode.CONNECT_FAILED, 'refused')],
    ['HTTP 503', new HttpStatusError(503, 'down', undefined)],
  ])('serves the stale value, marked, when the service fails with %s', async (_name, failure) => {
    let fail = false;
    const { logger, lines } = recordingLogger();
    const { clock, cached, events } = setup(
      (_endpoint, args) => {
        if (fail) throw failure;
        return movie((args[0] as { id: number }).id);
      },
      { logger, endpoints },
    );
    await cached.getMovie({ id: 1 });
    fail = true;
    clock.advance(2000);
    const result = await cached.withMetadata.getMovie({ id: 1 });
    expect(result).toMatchObject({ cacheStatus: 'stale-if-error', value: movie(1), ageMs: 2000 });
    expect(result.error).toBe(failure);
    expect(events.at(-1)).toMatchObject({ cacheStatus: 'stale-if-error', error: failure });
    expect(cached.stats().cache.totals.staleIfError).toBe(1);
    expect(lines.some((line) => line.level === 'warn' && line.message?.includes('stale'))).toBe(true);
  });

  it('does not hide errors the service would give again (4xx), nor serve past the window', async () => {
    let failure: unknown;
    const { clock, cached } = setup(
      (_endpoint, args) => {
        if (failure) throw failure;
        return movie((args[0] as { id: number }).id);
      },
      { endpoints },
    );
    await cached.getMovie({ id: 1 });
    clock.advance(2000);
    failure = new HttpStatusError(400, 'bad', undefined);
    expect((await rejection(cached.getMovie({ id: 1 }))).code).toBe('HTTP_STATUS');
    clock.advance(10_000);
    failure = new TelescopeError(ErrorCode.CIRCUIT_OPEN, 'open');
    expect((await rejection(cached.getMovie({ id: 1 }))).code).toBe('CIRCUIT_OPEN');
  });

  it('prefers a stale value to the endpoint fallback, and never caches a fallback answer', async () => {
    let fail = false;
    const fake = fakeClient((_endpoint, args) => {
      if (fail) {
        // What the client's fallback layer does: emit, then answer with the fallback value.
        fake.emit('fallback', { service: 'movies', endpoint: 'getMovie', code: 'CIRCUIT_OPEN', failed: false });
        return { id: 0, title: 'fallback' };
      }
      return movie((args[0] as { id: number }).id);
    });
    const withFallback = { ...movies, endpoints: { ...movies.endpoints } };
    (withFallback.endpoints as Record<string, unknown>).getMovie = { ...movies.endpoints.getMovie, hasFallback: true };
    (fake.client as unknown as { service: unknown }).service = withFallback;
    const clock = manualClock();
    const cached = withCache(fake.client, { clock, jitter: 0, endpoints });
    await cached.getMovie({ id: 1 });
    fail = true;
    clock.advance(2000);
    const stale = await cached.withMetadata.getMovie({ id: 1 });
    expect(stale).toMatchObject({ cacheStatus: 'stale-if-error', value: movie(1) });
    expect((stale.error as TelescopeError).code).toBe('CIRCUIT_OPEN');
    const fresh = await cached.withMetadata.getMovie({ id: 2 });
    expect(fresh).toMatchObject({ cacheStatus: 'service', value: { title: 'fallback' } });
    await flush();
    expect((await cached.withMetadata.getMovie({ id: 2 })).cacheStatus).toBe('service');
    expect(cached.stats().cache.totals.fallbacks).toBe(2);
  });
});

// --- entries -----------------------------------------------------------------------------------

describe('entries', () => {
  it.each([
    ['garbage', 'not json at all'],
    ['truncated JSON', '{"tc":1,"key":"telescope:movies:getMovie:movie:1","storedAt":1'],
    ['foreign JSON', JSON.stringify({ id: 1, title: 'written by someone else' })],
    [
      'another version',
      JSON.stringify({ tc: 2, key: 'telescope:movies:getMovie:movie:1', storedAt: 1, ttl: 1e12, value: {} }),
    ],
    [
      'another key',
      JSON.stringify({ tc: 1, key: 'telescope:movies:getMovie:movie:2', storedAt: 1, ttl: 1e12, value: {} }),
    ],
    ['no value', JSON.stringify({ tc: 1, key: 'telescope:movies:getMovie:movie:1', storedAt: 1, ttl: 1e12 })],
  ])('treats a remote entry that is %s as a miss and overwrites it', async (_name, raw) => {
    const clock = manualClock();
    const shared = memoryCache({ clock });
    const key = 'telescope:movies:getMovie:movie:1';
    await shared.set(key, raw, 60_000);
    const { cached, serviceCalls } = setup(undefined, { clock, remote: shared, local: false });
    expect(await cached.withMetadata.getMovie({ id: 1 })).toMatchObject({ cacheStatus: 'service', value: movie(1) });
    expect(serviceCalls()).toBe(1);
    expect(cached.stats().cache.totals.corrupt).toBe(1);
    await flush();
    expect(JSON.parse((await shared.get(key)) as string)).toMatchObject({ tc: 1, key, value: movie(1), ttl: 1000 });
    expect((await cached.withMetadata.getMovie({ id: 1 })).cacheStatus).toBe('remote');
  });

  it('takes a jitter of up to `jitter` × TTL off each entry', async () => {
    const clock = manualClock();
    const { remote, state } = controllableRemote(clock);
    const { cached } = setup(undefined, { clock, remote, jitter: 0.1, random: () => 1 });
    await cached.getMovie({ id: 1 });
    expect(JSON.parse(state.sets[0]!.value).ttl).toBe(900);
    expect(state.sets[0]!.ttlMs).toBe(900);
    clock.advance(899);
    expect((await cached.withMetadata.getMovie({ id: 1 })).cacheStatus).toBe('local');
    clock.advance(2);
    expect((await cached.withMetadata.getMovie({ id: 1 })).cacheStatus).toBe('service');
  });

  it('keeps the remote entry for ttl + the longer stale window', async () => {
    const clock = manualClock();
    const { remote, state } = controllableRemote(clock);
    const { cached } = setup(undefined, {
      clock,
      remote,
      endpoints: { getMovie: { ttlMs: 1000, staleMs: 3000, staleIfErrorMs: 7000, key: (p) => `m${p.id}` } },
    });
    await cached.getMovie({ id: 1 });
    expect(state.sets[0]!.ttlMs).toBe(8000);
  });

  it('caches 404s only when negativeTtlMs is set', async () => {
    const notFound = () => {
      throw new HttpStatusError(404, 'no such movie', undefined, { service: 'movies', endpoint: 'getMovie' });
    };
    const plain = setup(notFound);
    expect((await rejection(plain.cached.getMovie({ id: 1 }))).code).toBe('HTTP_STATUS');
    expect((await rejection(plain.cached.getMovie({ id: 1 }))).code).toBe('HTTP_STATUS');
    expect(plain.serviceCalls()).toBe(2);

    const negative = setup(notFound, {
      endpoints: { getMovie: { ttlMs: 1000, negativeTtlMs: 300, key: (p) => `movie:${p.id}` } },
    });
    const first = await rejection(negative.cached.getMovie({ id: 1 }));
    await flush();
    const second = (await rejection(negative.cached.getMovie({ id: 1 }))) as HttpStatusError;
    expect(first).toBeInstanceOf(HttpStatusError);
    expect(second).toBeInstanceOf(HttpStatusError);
    expect(second.status).toBe(404);
    expect(second.bodyExcerpt).toBe('no such movie');
    expect(negative.serviceCalls()).toBe(1);
    expect(negative.events.at(-1)).toMatchObject({ cacheStatus: 'local', negative: true });
    negative.clock.advance(301);
    await rejection(negative.cached.getMovie({ id: 1 }));
    expect(negative.serviceCalls()).toBe(2);
  });

  it.each([
    ['a bigint', () => ({ id: 1, big: 10n })],
    ['a Date', () => ({ id: 1, at: new Date(0) })],
    [
      'a circular object',
      () => {
        const value: Record<string, unknown> = { id: 1 };
        value.self = value;
        return value;
      },
    ],
    ['NaN', () => ({ id: Number.NaN })],
    ['undefined', () => undefined],
  ])('serves but does not cache a value with %s', async (_name, make) => {
    const { logger, lines } = recordingLogger();
    const clock = manualClock();
    const { remote, state } = controllableRemote(clock);
    const { cached, serviceCalls } = setup(() => make(), { clock, remote, logger });
    const first = await cached.withMetadata.getMovie({ id: 1 });
    expect(first.cacheStatus).toBe('service');
    await cached.getMovie({ id: 1 });
    expect(serviceCalls()).toBe(2);
    expect(state.sets).toHaveLength(0);
    expect(cached.stats().cache.totals.uncacheable).toBe(2);
    expect(lines.some((line) => line.message?.includes('not plain JSON'))).toBe(true);
  });
});

// --- invalidation ------------------------------------------------------------------------------

describe('invalidation', () => {
  it('drops the key from both tiers', async () => {
    const { cached, serviceCalls } = setup();
    await cached.getMovie({ id: 1 });
    await flush();
    expect(await cached.invalidate('getMovie', { id: 1 })).toEqual({
      key: 'telescope:movies:getMovie:movie:1',
      remoteDeleted: true,
      published: true,
    });
    expect((await cached.withMetadata.getMovie({ id: 1 })).cacheStatus).toBe('service');
    expect(serviceCalls()).toBe(2);
  });

  it("drops every other client's local copy through the bus (keys, never values)", async () => {
    const clock = manualClock();
    const shared = memoryCache({ clock });
    const messages: string[] = [];
    await shared.bus!.subscribe((message) => messages.push(message));
    const a = setup(undefined, { clock, remote: shared, closeRemote: false });
    const b = setup(undefined, { clock, remote: shared, closeRemote: false });
    await a.cached.getMovie({ id: 1 });
    await flush();
    await b.cached.getMovie({ id: 1 });
    expect(b.cached.stats().cache.local?.entries).toBe(1);
    await a.cached.invalidate('getMovie', { id: 1 });
    await flush();
    expect(b.cached.stats().cache.local?.entries).toBe(0);
    expect(messages).toHaveLength(1);
    expect(JSON.parse(messages[0]!)).toMatchObject({ k: ['telescope:movies:getMovie:movie:1'] });
    expect(messages[0]).not.toContain('movie 1');
    expect((await b.cached.withMetadata.getMovie({ id: 1 })).cacheStatus).toBe('service');
  });

  it('does not store an answer whose key was invalidated while it was loading', async () => {
    const answer = deferred<unknown>();
    const { cached, serviceCalls } = setup(() => answer.promise);
    const pending = cached.getMovie({ id: 1 });
    await flush();
    await cached.invalidate('getMovie', { id: 1 });
    answer.resolve(movie(1));
    await pending;
    await flush();
    expect(cached.stats().cache.local?.entries).toBe(0);
    const next = cached.withMetadata.getMovie({ id: 1 });
    await flush();
    expect(serviceCalls()).toBe(2);
    void next;
  });

  it('refuses endpoints that are not cached', async () => {
    const { cached } = setup();
    const error = await rejection(cached.invalidate('health'));
    expect(error.code).toBe('INVALID_OPTION');
  });
});

// --- leases ------------------------------------------------------------------------------------

describe('leases', () => {
  it('lets one of two clients refresh a key while the other waits for its answer', async () => {
    const clock = manualClock();
    const shared = memoryCache({ clock });
    const answers: Array<ReturnType<typeof deferred<unknown>>> = [];
    const handler = () => {
      const answer = deferred<unknown>();
      answers.push(answer);
      return answer.promise;
    };
    const lease = { ttlMs: 2000, waitMs: 500, pollMs: 10 };
    const a = setup(handler, { clock, remote: shared, closeRemote: false, lease });
    const b = setup(handler, { clock, remote: shared, closeRemote: false, lease });
    const first = a.cached.withMetadata.getMovie({ id: 1 });
    const second = b.cached.withMetadata.getMovie({ id: 1 });
    await flush();
    expect(answers).toHaveLength(1);
    clock.advance(30);
    await flush();
    answers[0]!.resolve(movie(1));
    await flush();
    clock.advance(10);
    await flush();
    expect(await first).toMatchObject({ cacheStatus: 'service', coalesced: false });
    expect(await second).toMatchObject({ cacheStatus: 'remote', coalesced: true, value: movie(1) });
    expect(answers).toHaveLength(1);
    expect(a.cached.stats().cache.totals.leases).toMatchObject({ acquired: 1, contended: 0 });
    expect(b.cached.stats().cache.totals.leases).toMatchObject({ acquired: 0, contended: 1, waitHits: 1 });
    expect(await shared.acquireLease!('telescope:movies:getMovie:movie:1#lease', 'x', 100)).toBe(true);
  });

  it('goes to the service itself when the holder does not answer within waitMs', async () => {
    const clock = manualClock();
    const shared = memoryCache({ clock });
    await shared.acquireLease!('telescope:movies:getMovie:movie:1#lease', 'someone-else', 60_000);
    const { cached, serviceCalls } = setup(undefined, {
      clock,
      remote: shared,
      lease: { waitMs: 100, pollMs: 10 },
    });
    const pending = cached.withMetadata.getMovie({ id: 1 });
    for (let step = 0; step < 12; step++) {
      await flush();
      clock.advance(10);
    }
    expect(await pending).toMatchObject({ cacheStatus: 'service', coalesced: false });
    expect(serviceCalls()).toBe(1);
  });

  it('needs a remote tier that can take leases', () => {
    const { remote } = controllableRemote(manualClock());
    const { acquireLease: _a, releaseLease: _r, ...noLeases } = remote;
    const error = thrown(() =>
      withCache(fakeClient(() => null).client, {
        remote: noLeases,
        lease: true,
        endpoints: { getMovie: { ttlMs: 1 } },
      }),
    );
    expect(error.code).toBe('INVALID_OPTION');
  });
});

// --- the cached client -------------------------------------------------------------------------

describe('the cached client', () => {
  it('passes endpoints that are not listed straight through', async () => {
    const { fake, cached } = setup((endpoint) => (endpoint === 'rate' ? { ok: true } : movie(1)));
    expect(cached.rate).toBe(fake.client.rate);
    expect(cached.health).toBe(fake.client.health);
    expect(await cached.withMetadata.rate({ id: 1 }, { stars: 5 })).toEqual({
      value: { ok: true },
      cacheStatus: 'bypass',
      coalesced: false,
      key: undefined,
      ageMs: 0,
    });
    expect(cached.client).toBe(fake.client);
    expect(cached.service).toBe(movies);
  });

  it('uses stable JSON of the arguments as the default key', async () => {
    const { cached, serviceCalls } = setup((_endpoint, args) => args[0], {
      endpoints: { search: { ttlMs: 1000 } },
    });
    const first = await cached.withMetadata.search({ q: 'heat', limit: 2 });
    expect(first.key).toBe('telescope:movies:search:{"limit":2,"q":"heat"}');
    expect((await cached.withMetadata.search({ limit: 2, q: 'heat' })).cacheStatus).toBe('local');
    expect(serviceCalls()).toBe(0);
  });

  it('passes call options to the service, without the caller signal', async () => {
    const { fake, cached } = setup();
    await cached.getMovie({ id: 1 }, { headers: { 'x-test': '1' }, timeoutMs: 300 });
    const options = fake.calls[0]!.args[1] as { headers: Record<string, string>; deadline: unknown; signal?: unknown };
    expect(options.headers).toEqual({ 'x-test': '1' });
    expect(options.deadline).toBeDefined();
    expect(options.signal).toBeUndefined();
  });

  it('emits cache events and forwards the client events', async () => {
    const { fake, cached, events } = setup();
    await cached.getMovie({ id: 1 });
    await cached.getMovie({ id: 1 });
    expect(events.map((event) => event.cacheStatus)).toEqual(['service', 'local']);
    expect(events[0]).toMatchObject({
      service: 'movies',
      endpoint: 'getMovie',
      key: 'telescope:movies:getMovie:movie:1',
      coalesced: false,
      negative: false,
    });
    const retries: unknown[] = [];
    const stop = cached.on('retry', (event) => retries.push(event));
    fake.emit('retry', { type: 'retry' });
    stop();
    fake.emit('retry', { type: 'retry' });
    expect(retries).toHaveLength(1);
  });

  it('keeps a throwing listener from changing the call, and logs it', async () => {
    const { logger, lines } = recordingLogger();
    const { cached } = setup(undefined, { logger });
    cached.on('cache', () => {
      throw new Error('listener bug');
    });
    expect(await cached.getMovie({ id: 1 })).toEqual(movie(1));
    expect(await cached.getMovie({ id: 1 })).toEqual(movie(1));
    expect(lines.some((line) => line.level === 'error' && line.fields.err === 'listener bug')).toBe(true);
  });

  it('reports cache-error events for remote failures', async () => {
    const clock = manualClock();
    const { remote, state } = controllableRemote(clock);
    state.getMode = 'fail';
    const { cached } = setup(undefined, { clock, remote });
    const errors: unknown[] = [];
    cached.on('cache-error', (event) => errors.push(event));
    await cached.getMovie({ id: 1 });
    expect(errors).toMatchObject([{ service: 'movies', operation: 'get', key: 'telescope:movies:getMovie:movie:1' }]);
  });

  it("adds cache stats to the client's", async () => {
    const { cached } = setup();
    await cached.getMovie({ id: 1 });
    await cached.getMovie({ id: 1 });
    const stats = cached.stats();
    expect(stats.retryTokens).toBe(7);
    expect(stats.cache).toMatchObject({
      service: 'movies',
      totals: { hits: { local: 1, remote: 0 }, misses: 1 },
      endpoints: { getMovie: { hits: { local: 1 } } },
      local: { entries: 1, maxEntries: 1000 },
      remote: { name: 'memory', errors: { get: 0, set: 0 } },
    });
    expect(stats.cache.remote?.latency.count).toBe(1);
  });

  it('closes the client and the remote tier; later calls fail with CLIENT_CLOSED', async () => {
    const clock = manualClock();
    const { remote } = controllableRemote(clock);
    const close = vi.spyOn(remote, 'close');
    const { fake, cached } = setup(undefined, { clock, remote });
    await cached.getMovie({ id: 1 });
    await cached.close();
    expect(fake.closed()).toBe(true);
    expect(close).toHaveBeenCalledOnce();
    expect((await rejection(cached.getMovie({ id: 1 }))).code).toBe('CLIENT_CLOSED');
    await cached.close();
    expect(close).toHaveBeenCalledOnce();
  });

  it('leaves a shared remote open with closeRemote: false', async () => {
    const clock = manualClock();
    const shared = memoryCache({ clock });
    const { cached } = setup(undefined, { clock, remote: shared, closeRemote: false });
    await cached.getMovie({ id: 1 });
    await cached.close();
    await flush();
    expect(await shared.get('telescope:movies:getMovie:movie:1')).toBeDefined();
  });
});

// --- bad inputs --------------------------------------------------------------------------------

describe('bad inputs', () => {
  it.each([
    ['a number', () => 7],
    ['undefined', () => undefined],
    ['an empty string', () => ''],
    ['an object', () => ({ id: 7 })],
  ])('rejects a call whose key function returns %s with INVALID_OPTION, without a service call', async (_name, key) => {
    const { cached, serviceCalls } = setup(undefined, {
      endpoints: { getMovie: { ttlMs: 1000, key: key as unknown as (p: { id: number }) => string } },
    });
    const error = await rejection(cached.getMovie({ id: 7 }));
    expect(error.code).toBe('INVALID_OPTION');
    expect(error.message).toMatch(/cache key function of movies\.getMovie must return a non-empty string/);
    expect(serviceCalls()).toBe(0);
  });

  it('rejects a call whose key function throws, with the cause', async () => {
    const boom = new Error('boom');
    const { cached } = setup(undefined, {
      endpoints: {
        getMovie: {
          ttlMs: 1000,
          key: () => {
            throw boom;
          },
        },
      },
    });
    const error = await rejection(cached.getMovie({ id: 7 }));
    expect(error.code).toBe('INVALID_OPTION');
    expect(error.cause).toBe(boom);
  });

  it.each([
    ['ttlMs 0', { getMovie: { ttlMs: 0 } }],
    ['ttlMs -1', { getMovie: { ttlMs: -1 } }],
    ['ttlMs NaN', { getMovie: { ttlMs: Number.NaN } }],
    ['ttlMs Infinity', { getMovie: { ttlMs: Number.POSITIVE_INFINITY } }],
    ['ttlMs missing', { getMovie: {} }],
    ['staleMs -1', { getMovie: { ttlMs: 1, staleMs: -1 } }],
    ['staleIfErrorMs NaN', { getMovie: { ttlMs: 1, staleIfErrorMs: Number.NaN } }],
    ['negativeTtlMs -5', { getMovie: { ttlMs: 1, negativeTtlMs: -5 } }],
    ['a key that is not a function', { getMovie: { ttlMs: 1, key: 'movie' } }],
    ['an unknown endpoint', { nope: { ttlMs: 1 } }],
    ['a config that is not an object', { getMovie: 5 }],
  ])('refuses %s at withCache time with INVALID_OPTION', (_name, endpoints) => {
    const error = thrown(() => withCache(fakeClient(() => null).client, { endpoints } as never));
    expect(error.code).toBe('INVALID_OPTION');
  });

  it.each([
    ['local.maxEntries 0', { local: { maxEntries: 0 } }],
    ['local.ttlMs -1', { local: { ttlMs: -1 } }],
    ['jitter 1', { jitter: 1 }],
    ['jitter -0.1', { jitter: -0.1 }],
    ['no tier at all', { local: false, remote: false }],
    ['a remote without get', { remote: { name: 'x', set() {}, delete() {}, close() {} } }],
    ['a remote timeoutMs of 0', { remote: { ...memoryCache(), timeoutMs: 0 } }],
    ['a bus without publish', { bus: { subscribe() {} } }],
    ['lease.pollMs 0', { lease: { pollMs: 0 } }],
    ['endpoints missing', { endpoints: undefined }],
  ])('refuses %s', (_name, extra) => {
    const error = thrown(() =>
      withCache(fakeClient(() => null).client, { endpoints: { getMovie: { ttlMs: 1 } }, ...extra } as never),
    );
    expect(error.code).toBe('INVALID_OPTION');
  });

  it('refuses a service with an endpoint named like a cached-client member', () => {
    const fake = fakeClient(() => null);
    (fake.client as unknown as { service: unknown }).service = {
      name: 'odd',
      endpoints: { ...movies.endpoints, invalidate: movies.endpoints.health },
    };
    expect(thrown(() => withCache(fake.client, { endpoints: {} })).code).toBe('INVALID_OPTION');
  });

  it('lets the client report wrong arity as it would without the cache', async () => {
    const { fake, cached } = setup(() => {
      throw new TelescopeError(ErrorCode.INVALID_REQUEST, 'takes (params, options?)');
    });
    const call = (cached.getMovie as (...args: unknown[]) => Promise<unknown>)({ id: 1 }, {}, 'extra');
    expect((await rejection(call)).code).toBe('INVALID_REQUEST');
    expect(fake.calls[0]?.args).toHaveLength(3);
  });
});
