/**
 * `fakeService` against real telescope clients: usable synchronously in `createClient`,
 * routing with params coerced to their schemas, 400 with issues for bad input, 500 naming the
 * endpoint for a response that breaks its schema (and the error recorded), `httpError`,
 * deadlines and abort signals reaching handlers, handler swaps, and the cleanup helpers.
 */
import { request as httpRequest } from 'node:http';
import { connect } from 'node:net';
import { networkInterfaces } from 'node:os';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { z } from 'zod';
import {
  createClient,
  defineService,
  ErrorCode,
  endpoint,
  HttpStatusError,
  TelescopeError,
  ValidationError,
  withDeadline,
} from '../../src/index.js';
import { closeAll, type FakeService, fakeService, httpError, openResources, useFake } from '../../src/testing/index.js';
import { failure } from '../helpers/assert.js';
import { movies } from '../helpers/movies.js';

type Movies = typeof movies;

const heat = { getMovie: async ({ id }: { id: number }) => ({ id, title: 'Heat' }) };

describe('fakeService', () => {
  it('is usable synchronously: fake.instances goes straight into createClient', async () => {
    const fake = await useFake(movies, heat);
    // No await between the two lines: the port is bound when fakeService returns.
    const client = createClient(movies, { instances: fake.instances });
    expect(fake.instances).toEqual([fake.url]);
    expect(fake.url).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
    expect(await client.getMovie({ id: 7 })).toEqual({ id: 7, title: 'Heat' });
    await client.close();
  });

  it('also works without the helper, and close() makes the port refuse', async () => {
    const fake = fakeService(movies, heat);
    const client = fake.client({ retry: false });
    expect(await client.getMovie({ id: 1 })).toEqual({ id: 1, title: 'Heat' });
    await fake.close();
    await fake.close(); // idempotent
    // The client from fake.client() was closed with the fake.
    expect((await failure(client.getMovie({ id: 1 }))).code).toBe(ErrorCode.CLIENT_CLOSED);
    const other = createClient(movies, { instances: fake.instances, retry: false });
    expect((await failure(other.getMovie({ id: 1 }))).code).toBe(ErrorCode.CONNECT_FAILED);
    await other.close();
  });

  it('routes by method and path, decodes params and coerces them to the schema', async () => {
    const seen: unknown[] = [];
    const fake = await useFake(movies, {
      getMovie: ({ id }) => {
        seen.push(id);
        return { id, title: 'Heat' };
      },
      rate: ({ id }, { stars }) => {
        seen.push([id, stars]);
        return { ok: true };
      },
      search: (query) => {
        seen.push(query);
        return [];
      },
      byTitle: ({ title }) => title,
      health: () => 'up',
    });
    const client = fake.client();
    await client.getMovie({ id: 42 });
    await client.rate({ id: 3 }, { stars: 4.5 });
    await client.search({ q: 'the thing', limit: 10 });
    await client.search({ q: '7' });
    expect(seen).toEqual([42, [3, 4.5], { q: 'the thing', limit: 10 }, { q: '7' }]);
    // Reserved characters survive the round trip inside one segment.
    expect(await client.byTitle({ title: 'a/b?c#d%e ü' })).toBe('a/b?c#d%e ü');
    expect(await client.byTitle({ title: '123' })).toBe('123');
    expect(await client.health()).toBe('up');
    expect(fake.calls.map((call) => [call.endpoint, call.status])).toEqual([
      ['getMovie', 200],
      ['rate', 200],
      ['search', 200],
      ['search', 200],
      ['byTitle', 200],
      ['byTitle', 200],
      ['health', 200],
    ]);
    expect(fake.calls[1]).toMatchObject({
      method: 'POST',
      url: '/movies/3/ratings',
      params: { id: 3 },
      body: { stars: 4.5 },
    });
    expect(fake.errors).toEqual([]);
  });

  it('answers 400 with the issues for input its schemas reject', async () => {
    const fake = await useFake(movies, { ...heat, rate: () => ({ ok: true }) });
    // A client built from an older definition (id as a string) sends what the fake rejects.
    const older = defineService({
      name: 'movies',
      endpoints: {
        getMovie: endpoint({ method: 'GET', path: '/movies/:id', params: z.object({ id: z.string() }) }),
        rate: endpoint({
          method: 'POST',
          path: '/movies/:id/ratings',
          params: z.object({ id: z.number() }),
          body: z.object({ stars: z.string() }),
        }),
      },
    });
    const client = createClient(older, { instances: fake.instances });
    const params = await failure(client.getMovie({ id: 'seven' }));
    expect(params).toBeInstanceOf(HttpStatusError);
    expect((params as HttpStatusError).status).toBe(400);
    expect(params.retryable).toBe(false);
    const excerpt = JSON.parse((params as HttpStatusError).bodyExcerpt);
    expect(excerpt).toMatchObject({
      error: 'INVALID_REQUEST',
      endpoint: 'getMovie',
      part: 'params',
      issues: [{ path: ['id'] }],
    });
    const body = await failure(client.rate({ id: 1 }, { stars: 'five' }));
    expect(JSON.parse((body as HttpStatusError).bodyExcerpt)).toMatchObject({
      part: 'body',
      issues: [{ path: ['stars'] }],
    });
    expect(fake.calls.map((call) => call.status)).toEqual([400, 400]);
    await client.close();
  });

  it('answers 500 naming the endpoint when a response breaks its schema, and records the TelescopeError', async () => {
    const errors: Error[] = [];
    const fake = fakeService(
      movies,
      // A stub written against an older Movie shape: `name` instead of `title`.
      { getMovie: ({ id }) => ({ id, name: 'Heat' }) as never },
      { onError: (error) => errors.push(error) },
    );
    try {
      const client = fake.client({ retry: false });
      const error = await failure(client.getMovie({ id: 1 }));
      expect(error).toBeInstanceOf(HttpStatusError);
      expect((error as HttpStatusError).status).toBe(500);
      expect((error as HttpStatusError).bodyExcerpt).toContain('"endpoint":"getMovie"');
      expect((error as HttpStatusError).bodyExcerpt).toContain('"path":["title"]');
      expect(fake.errors).toHaveLength(1);
      const recorded = fake.errors[0] as ValidationError;
      expect(recorded).toBeInstanceOf(ValidationError);
      expect(recorded).toMatchObject({
        code: 'INVALID_RESPONSE',
        service: 'movies',
        endpoint: 'getMovie',
        part: 'response',
      });
      expect(recorded.message).toMatch(/^movies\.getMovie: .*response schema: title/);
      expect(errors).toEqual([recorded]);
      expect(fake.calls[0]).toMatchObject({ endpoint: 'getMovie', status: 500, error: recorded });
    } finally {
      await fake.close();
    }
  });

  it('answers the status of httpError; retryable ones are retried by the client', async () => {
    let calls = 0;
    const fake = await useFake(movies, {
      getMovie: ({ id }) => {
        calls++;
        if (id === 404) throw httpError(404, { error: 'no such movie' });
        if (id === 503 && calls % 2 === 1) throw httpError(503);
        return { id, title: 'Heat' };
      },
    });
    const client = fake.client();
    const missing = await failure(client.getMovie({ id: 404 }));
    expect(missing).toMatchObject({ code: 'HTTP_STATUS', status: 404, retryable: false });
    expect((missing as HttpStatusError).bodyExcerpt).toBe('{"error":"no such movie"}');
    calls = 0;
    // 503 once, then the retry (a fresh connection to the single instance) succeeds.
    expect(await client.getMovie({ id: 503 })).toEqual({ id: 503, title: 'Heat' });
    expect(calls).toBe(2);
    expect(fake.requests().byStatus).toEqual({ '404': 1, '503': 1, '200': 1 });
    expect(fake.errors).toEqual([]);
  });

  it('gives handlers the caller deadline, which their own telescope calls inherit', async () => {
    const budgets: number[] = [];
    const downstream = await useFake(movies, {
      getMovie: ({ id }, _body, context) => {
        budgets.push(context.deadline?.remainingMs() ?? Number.NaN);
        return { id, title: 'Heat' };
      },
    });
    const downstreamClient = downstream.client();
    const edge = defineService({
      name: 'edge',
      endpoints: {
        home: endpoint({ method: 'GET', path: '/home', response: z.object({ title: z.string() }) }),
      },
    });
    const front = await useFake(edge, {
      home: async (_input, _body, context) => {
        budgets.push(context.deadline?.remainingMs() ?? Number.NaN);
        return { title: (await downstreamClient.getMovie({ id: 1 })).title };
      },
    });
    const client = front.client();
    await withDeadline(600, () => client.home());
    const [atFront, atDownstream] = budgets as [number, number];
    expect(atFront).toBeLessThanOrEqual(600);
    expect(atFront).toBeGreaterThan(400);
    expect(atDownstream).toBeLessThan(atFront);
  });

  it('aborts the handler signal when the caller gives up', async () => {
    let aborted: Promise<unknown> | undefined;
    const fake = await useFake(movies, {
      getMovie: (_input, _body, context) => {
        aborted = new Promise((resolve) => context.signal.addEventListener('abort', resolve));
        return new Promise(() => {}); // never answers
      },
    });
    const error = await failure(fake.client({ retry: false }).getMovie({ id: 1 }, { timeoutMs: 100 }));
    expect(error.code).toBe(ErrorCode.DEADLINE_EXCEEDED);
    await expect(aborted).resolves.toBeDefined();
  });

  it('handle() replaces handlers; reset() forgets calls, errors and counts; chaos() works on fakes', async () => {
    const fake = await useFake(movies, heat);
    const client = fake.client({ retry: false });
    fake.handle({ getMovie: ({ id }) => ({ id, title: 'Ronin' }) });
    expect((await client.getMovie({ id: 1 })).title).toBe('Ronin');
    await fake.chaos({ errorRate: 1 });
    expect(await failure(client.getMovie({ id: 1 }))).toMatchObject({ status: 503 });
    await fake.chaos();
    expect(fake.requests()).toMatchObject({ total: 2, byEndpoint: { getMovie: 2 }, faults: { error: 1 } });
    // The 503 came from chaos, not from a handler: calls holds the routed request only.
    expect(fake.calls).toHaveLength(1);
    fake.reset();
    expect(fake.calls).toEqual([]);
    expect(fake.requests()).toMatchObject({ total: 0, byEndpoint: {}, faults: { error: 0 } });
  });

  it('reports calls to endpoints without a handler (501)', async () => {
    const fake = await useFake(movies, {});
    const error = await failure(fake.client({ retry: false }).health());
    expect(error).toMatchObject({ status: 501 });
    expect(fake.errors[0]?.message).toMatch(/movies\.health .*no handler/);
  });

  it('rejects handlers for endpoints the definition does not have', () => {
    expect(() => fakeService(movies, { nope: () => 1 } as never)).toThrow(
      /handlers\.nope must be an endpoint of movies/,
    );
    expect(() => fakeService(movies, { health: 1 } as never)).toThrow(/handlers\.health must be a function/);
  });

  const external = Object.values(networkInterfaces())
    .flat()
    .find((address) => address !== undefined && !address.internal && address.family === 'IPv4');

  it.skipIf(external === undefined)('refuses callers that do not come from loopback', async () => {
    const fake = await useFake(movies, heat);
    const port = Number(new URL(fake.url).port);
    const closedWithoutAnswer = await new Promise<boolean>((resolve) => {
      const socket = connect(port, external?.address);
      let data = '';
      socket.on('connect', () => socket.write('GET /movies/1 HTTP/1.1\r\nhost: x\r\n\r\n'));
      socket.on('data', (chunk) => {
        data += chunk;
      });
      socket.on('error', () => {});
      socket.on('close', () => resolve(data === ''));
    });
    expect(closedWithoutAnswer).toBe(true);
    // Loopback still works, with a plain HTTP request too.
    const status = await new Promise<number>((resolve, reject) => {
      httpRequest(`${fake.url}/movies/1`, (response) => {
        response.resume();
        resolve(response.statusCode ?? 0);
      })
        .on('error', reject)
        .end();
    });
    expect(status).toBe(200);
  });
});

describe('cleanup helpers', () => {
  let fromPreviousTest: FakeService<Movies> | undefined;

  it('useFake closes when the test finishes (1/2)', async () => {
    fromPreviousTest = await useFake(movies, heat);
    expect(fromPreviousTest.server.listening).toBe(true);
  });

  it('useFake closes when the test finishes (2/2)', () => {
    expect(fromPreviousTest?.server.listening).toBe(false);
  });

  it('takes another runner cleanup hook', async () => {
    const registered: Array<() => Promise<void>> = [];
    const fake = await useFake(movies, heat, { cleanup: (close) => registered.push(close) });
    expect(registered).toHaveLength(1);
    await registered[0]?.();
    expect(fake.server.listening).toBe(false);
  });

  let outsideTest: unknown;
  beforeAll(async () => {
    outsideTest = await useFake(movies, heat).catch((error: unknown) => error);
  });

  it('refuses to run outside a test, where nothing would close it', () => {
    expect(outsideTest).toBeInstanceOf(TelescopeError);
    expect((outsideTest as Error).message).toMatch(/useFake\(\) must run inside a vitest test or beforeEach/);
  });

  const leftOpen: FakeService<Movies>[] = [];
  afterAll(async () => {
    await Promise.all(leftOpen.map((fake) => fake.close()));
  });

  it('closeAll() closes whatever is still open', async () => {
    const before = openResources();
    leftOpen.push(fakeService(movies, heat), fakeService(movies, heat));
    expect(openResources()).toBe(before + 2);
    await closeAll();
    expect(openResources()).toBe(0);
    expect(leftOpen.every((fake) => !fake.server.listening)).toBe(true);
  });
});
