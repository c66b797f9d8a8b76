/**
 * The testing kit's socket-free parts: routing (method + path template, specificity,
 * percent-decoding), the coercion of path and query strings to their schemas, what `answer()`
 * sends for each outcome (400 with issues, 404, 405, 501, 500 with the endpoint named, 204,
 * `httpError`), option checks, and the seeded random source.
 */
import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import { defineService, ErrorCode, endpoint, TelescopeError, ValidationError } from '../../src/index.js';
import { resolveChaos } from '../../src/testing/chaos.js';
import { httpError, isHttpErrorResponse, seededRandom } from '../../src/testing/index.js';
import {
  type AnswerContext,
  type AnyHandlers,
  answer,
  parseQuery,
  Router,
  validateStrings,
} from '../../src/testing/router.js';

const Movie = z.object({ id: z.number().int(), title: z.string() });

const movies = defineService({
  name: 'movies',
  endpoints: {
    getMovie: endpoint({
      method: 'GET',
      path: '/movies/:id',
      params: z.object({ id: z.number().int().positive() }),
      response: Movie,
    }),
    top: endpoint({ method: 'GET', path: '/movies/top', response: z.array(Movie) }),
    rate: endpoint({
      method: 'POST',
      path: '/movies/:id/ratings',
      params: z.object({ id: z.number().int() }),
      body: z.object({ stars: z.number().min(1).max(5) }),
      response: z.object({ ok: z.boolean() }),
    }),
    search: endpoint({
      method: 'GET',
      path: '/movies',
      query: z.object({
        q: z.string(),
        limit: z.number().int().optional(),
        exact: z.boolean().optional(),
        tags: z.array(z.string()).optional(),
      }),
    }),
    byTitle: endpoint({ method: 'GET', path: '/titles/:title', params: z.object({ title: z.string() }) }),
    byYear: endpoint({
      method: 'GET',
      path: '/years/:year/:code',
      params: z.object({ year: z.number(), code: z.string() }),
      query: z.object({ sort: z.enum(['title', 'rank']).default('title') }),
    }),
    remove: endpoint({ method: 'DELETE', path: '/movies/:id', params: z.object({ id: z.number() }) }),
    health: endpoint({ method: 'GET', path: '/health' }),
  },
});

const router = new Router(movies);

function context(handlers: AnyHandlers): AnswerContext {
  return {
    handlers,
    instance: 'http://127.0.0.1:1',
    index: 0,
    deadline: undefined,
    signal: () => new AbortController().signal,
  };
}

const request = (method: string, url: string, body?: unknown) => ({
  method,
  url,
  headers: {},
  body: Buffer.from(body === undefined ? '' : typeof body === 'string' ? body : JSON.stringify(body)),
});

const parse = (body: string | undefined) => JSON.parse(body ?? 'null') as Record<string, unknown>;

describe('Router.match', () => {
  it('matches method and path template, and decodes params after matching', () => {
    const found = router.match('GET', '/titles/a%2Fb%20c');
    expect(found).toMatchObject({ kind: 'found', params: { title: 'a/b c' } });
    expect(found.kind === 'found' && found.route.name).toBe('byTitle');
    expect(router.match('POST', '/movies/7/ratings')).toMatchObject({ kind: 'found', params: { id: '7' } });
    // An encoded slash stays inside its segment: it cannot reach another template.
    expect(router.match('GET', '/movies/7%2Fratings')).toMatchObject({ params: { id: '7/ratings' } });
  });

  it('prefers the template with fewer params, whatever the definition order', () => {
    const top = router.match('GET', '/movies/top');
    expect(top.kind === 'found' && top.route.name).toBe('top');
  });

  it('tells a wrong method (405 with allow) from an unknown path (404)', () => {
    expect(router.match('PUT', '/movies/7')).toEqual({ kind: 'method-not-allowed', allow: ['GET', 'DELETE'] });
    expect(router.match('GET', '/nope')).toEqual({ kind: 'not-found' });
    expect(router.match('GET', '/movies/')).toEqual({ kind: 'not-found' });
  });

  it('reports malformed percent-encoding as a bad path', () => {
    expect(router.match('GET', '/titles/%E0%A4%A')).toMatchObject({ kind: 'bad-path', issues: [{ path: ['title'] }] });
  });
});

describe('validateStrings: path and query strings to their schemas', () => {
  const schema = z.object({ id: z.number().int(), name: z.string(), flag: z.boolean().optional() });

  it('converts only the keys the schema rejects', async () => {
    expect(await validateStrings(schema, { id: '12', name: '42', flag: 'true' })).toEqual({
      value: { id: 12, name: '42', flag: true },
    });
  });

  it('reads numbers the way String(n) writes them, and nothing else', async () => {
    for (const [text, value] of [
      ['-12', -12],
      ['3.5', 3.5],
      ['1e+21', 1e21],
      ['0', 0],
    ] as const) {
      expect(await validateStrings(z.object({ n: z.number() }), { n: text })).toEqual({ value: { n: value } });
    }
    for (const text of ['007', '1,5', 'Infinity', 'NaN', '', ' 1', '0x10']) {
      const result = await validateStrings(z.object({ n: z.number() }), { n: text });
      expect(result.issues?.[0]?.path).toEqual(['n']);
    }
  });

  it('lets coercing schemas and string schemas see the raw strings', async () => {
    expect(await validateStrings(z.object({ n: z.coerce.number() }), { n: '5' })).toEqual({ value: { n: 5 } });
    expect(await validateStrings(z.object({ s: z.string() }), { s: '5' })).toEqual({ value: { s: '5' } });
  });

  it('reports the issues of the converted value when conversion was tried', async () => {
    const result = await validateStrings(z.object({ id: z.number().int().positive() }), { id: '-3' });
    expect(result.issues?.[0]?.message).toMatch(/>0|positive|greater/i);
  });

  it('wraps a single query value for an array schema; repeated keys are arrays already', async () => {
    const tags = z.object({ tags: z.array(z.number()) });
    expect(await validateStrings(tags, { tags: '1' })).toEqual({ value: { tags: [1] } });
    expect(await validateStrings(tags, parseQuery('tags=1&tags=2'))).toEqual({ value: { tags: [1, 2] } });
  });

  it('parseQuery: once a string, repeated an array, decoded', () => {
    expect(parseQuery('q=a%20b&x=1&x=2&x=3&e=')).toEqual({ q: 'a b', x: ['1', '2', '3'], e: '' });
  });
});

describe('answer()', () => {
  const handlers: AnyHandlers = {
    getMovie: (input) => ({ id: (input as { id: number }).id, title: 'Heat' }),
    rate: (_input, body) => ({ ok: (body as { stars: number }).stars > 3 }),
    search: (input) => input,
    byYear: (input) => input,
    top: () => [{ id: 1, title: 5 }],
    remove: () => undefined,
    health: () => {
      throw new Error('boom');
    },
  };

  it('answers 200 with the handler JSON, after validating params, query and body', async () => {
    const got = await answer(router, request('GET', '/movies/7'), context(handlers));
    expect(got).toMatchObject({ status: 200, endpoint: 'getMovie', params: { id: 7 }, error: undefined });
    expect(parse(got.body)).toEqual({ id: 7, title: 'Heat' });
    expect(got.headers['content-type']).toBe('application/json');

    const rated = await answer(router, request('POST', '/movies/7/ratings', { stars: 5 }), context(handlers));
    expect(rated).toMatchObject({ status: 200, params: { id: 7 }, requestBody: { stars: 5 } });

    const found = await answer(router, request('GET', '/movies?q=heat&limit=3&exact=false'), context(handlers));
    expect(parse(found.body)).toEqual({ q: 'heat', limit: 3, exact: false });
  });

  it('gives the handler params and query merged, as schema outputs (defaults applied)', async () => {
    const got = await answer(router, request('GET', '/years/1995/ab?x=1'), context(handlers));
    expect(parse(got.body)).toEqual({ year: 1995, code: 'ab', sort: 'title' });
  });

  it('answers 400 naming the endpoint, the part and the issues', async () => {
    const cases = [
      ['GET', '/movies/abc', undefined, 'params', ['id']],
      ['GET', '/movies/0', undefined, 'params', ['id']],
      ['GET', '/movies?limit=2', undefined, 'query', ['q']],
      ['POST', '/movies/1/ratings', { stars: 9 }, 'body', ['stars']],
      ['POST', '/movies/1/ratings', '{not json', 'body', undefined],
      ['POST', '/movies/1/ratings', undefined, 'body', undefined],
    ] as const;
    for (const [method, url, body, part, path] of cases) {
      const got = await answer(router, request(method, url, body), context(handlers));
      expect(got.status, `${method} ${url}`).toBe(400);
      const json = parse(got.body);
      expect(json).toMatchObject({ error: 'INVALID_REQUEST', service: 'movies', part });
      expect(json.message).toMatch(new RegExp(`^movies\\.\\w+: invalid ${part}: `));
      const issues = json.issues as Array<{ path?: string[] }>;
      expect(issues.length).toBeGreaterThan(0);
      if (path !== undefined) expect(issues[0]?.path).toEqual(path);
      expect(got.error).toBeUndefined();
    }
  });

  it('answers 404 and 405 for what matches nothing', async () => {
    expect((await answer(router, request('GET', '/nope'), context(handlers))).status).toBe(404);
    const wrong = await answer(router, request('PATCH', '/movies/1'), context(handlers));
    expect(wrong.status).toBe(405);
    expect(wrong.headers.allow).toBe('GET, DELETE');
  });

  it('answers 500 naming the endpoint when the response violates its schema, and reports a ValidationError', async () => {
    const got = await answer(router, request('GET', '/movies/top'), context(handlers));
    expect(got.status).toBe(500);
    expect(parse(got.body)).toMatchObject({
      error: 'INVALID_RESPONSE',
      endpoint: 'top',
      issues: [{ path: ['0', 'title'] }],
    });
    expect(got.error).toBeInstanceOf(ValidationError);
    expect(got.error).toBeInstanceOf(TelescopeError);
    expect((got.error as ValidationError).code).toBe(ErrorCode.INVALID_RESPONSE);
    expect(got.error?.message).toMatch(
      /^movies\.top: handler returned a response that violates the response schema: 0\.title/,
    );
  });

  it('checks the JSON form of the response, as the client will see it', async () => {
    const dated = defineService({
      name: 'dated',
      endpoints: { now: endpoint({ method: 'GET', path: '/now', response: z.object({ at: z.date() }) }) },
    });
    const got = await answer(new Router(dated), request('GET', '/now'), context({ now: () => ({ at: new Date() }) }));
    expect(got.status).toBe(500);
    expect(got.error?.message).toMatch(/dated\.now/);
  });

  it('answers 500 for a handler that throws, and for a response that is not JSON', async () => {
    const threw = await answer(router, request('GET', '/health'), context(handlers));
    expect(threw.status).toBe(500);
    expect(parse(threw.body)).toMatchObject({ error: 'HANDLER_ERROR', endpoint: 'health' });
    expect(threw.error?.message).toBe('boom');
    const cyclic: Record<string, unknown> = {};
    cyclic.self = cyclic;
    const bad = await answer(router, request('GET', '/health'), context({ health: () => cyclic }));
    expect(bad.status).toBe(500);
    expect(bad.error).toMatchObject({ code: 'INVALID_RESPONSE', endpoint: 'health' });
  });

  it('answers 501 for an endpoint without a handler, and reports it', async () => {
    const got = await answer(router, request('GET', '/titles/x'), context(handlers));
    expect(got.status).toBe(501);
    expect(got.error?.message).toMatch(/movies\.byTitle .*no handler/);
  });

  it('answers 204 when the handler returns undefined', async () => {
    const got = await answer(router, request('DELETE', '/movies/3'), context(handlers));
    expect(got).toMatchObject({ status: 204, body: undefined });
  });

  it('answers the status of a thrown httpError, with its body and headers, unchecked', async () => {
    const json = await answer(
      router,
      request('GET', '/movies/1'),
      context({
        getMovie: () => {
          throw httpError(429, { error: 'slow down' }, { headers: { 'retry-after': '1' } });
        },
      }),
    );
    expect(json).toMatchObject({ status: 429, error: undefined });
    expect(json.headers['retry-after']).toBe('1');
    expect(parse(json.body)).toEqual({ error: 'slow down' });
    const text = await answer(
      router,
      request('GET', '/movies/1'),
      context({
        getMovie: () => {
          throw httpError(503, 'down for maintenance');
        },
      }),
    );
    expect(text).toMatchObject({ status: 503, body: 'down for maintenance' });
    expect(text.headers['content-type']).toMatch(/^text\/plain/);
    const plain = await answer(
      router,
      request('GET', '/movies/1'),
      context({
        getMovie: () => {
          throw httpError(404);
        },
      }),
    );
    expect(parse(plain.body)).toEqual({ error: 'Not Found' });
  });
});

describe('options', () => {
  it('httpError checks its status and headers', () => {
    expect(isHttpErrorResponse(httpError(404))).toBe(true);
    expect(isHttpErrorResponse(new Error('x'))).toBe(false);
    for (const status of [99, 600, 404.5, Number.NaN]) {
      expect(() => httpError(status)).toThrow(expect.objectContaining({ code: 'INVALID_OPTION' }));
    }
    expect(() => httpError(500, undefined, { headers: { x: 'a\r\nb' } })).toThrow(/CR or LF/);
  });

  it('resolveChaos checks every option and treats an empty set as no chaos', () => {
    expect(resolveChaos(undefined)).toBeUndefined();
    expect(resolveChaos({})).toBeUndefined();
    expect(resolveChaos({ errorRate: 0, latencyMs: 0 })).toBeUndefined();
    expect(resolveChaos({ reset: true })?.reset).toBe(1);
    expect(resolveChaos({ latencyMs: [10, 20] })?.latency).toEqual([10, 20]);
    const bad = [
      { errorRate: 1.5 },
      { errorRate: -0.1 },
      { reset: 2 },
      { latencyMs: -1 },
      { latencyMs: [20, 10] as const },
      { errorStatus: 200 },
      { slowBodyBytesPerSecond: 0 },
      { seed: Number.NaN },
      { hangs: true },
    ];
    for (const options of bad) {
      expect(() => resolveChaos(options as never), JSON.stringify(options)).toThrow(
        expect.objectContaining({ code: 'INVALID_OPTION' }),
      );
    }
  });

  it('seededRandom repeats for a seed and differs across seeds', () => {
    const a = seededRandom(42);
    const b = seededRandom(42);
    const c = seededRandom(43);
    const first = Array.from({ length: 5 }, a);
    expect(Array.from({ length: 5 }, b)).toEqual(first);
    expect(Array.from({ length: 5 }, c)).not.toEqual(first);
    expect(first.every((value) => value >= 0 && value < 1)).toBe(true);
  });
});
