/**
 * `createClient` end to end against real node:http servers on 127.0.0.1: typed results,
 * request building (path, query, JSON body, headers), request validation before any I/O,
 * path-parameter encoding, the deadline header, the error hierarchy, logging without
 * credentials, and option checking.
 */
import { Writable } from 'node:stream';
import { pino } from 'pino';
import { describe, expect, expectTypeOf, it } from 'vitest';
import {
  type Client,
  createClient,
  ErrorCode,
  HttpStatusError,
  isTelescopeError,
  systemClock,
  TelescopeError,
  ValidationError,
  wheelOf,
} from '../../src/index.js';
import { failure, thrown, waitFor } from '../helpers/assert.js';
import { movies } from '../helpers/movies.js';
import { activeCount } from '../helpers/process-resources.js';
import { delay, sendJson, startServer, type TestServer } from '../helpers/server.js';

type MoviesClient = Client<typeof movies>;

// --- helpers ---------------------------------------------------------------------------------

/** Closes the client and checks that its sockets and timers are gone. */
async function closeWithoutLeaks(client: MoviesClient, server: TestServer, timeoutsBefore: number): Promise<void> {
  await client.close();
  await waitFor('the server-side sockets to close', () => server.openSockets() === 0);
  await waitFor('the transport timers to go', () => activeCount('Timeout') <= timeoutsBefore);
  expect(wheelOf(systemClock).size).toBe(0);
}

/** Counts TCP connections accepted by the server. */
function countConnections(server: TestServer): () => number {
  let connections = 0;
  server.server.on('connection', () => connections++);
  return () => connections;
}

/** A server for the movie service: echoes what it received where the schemas allow. */
function moviesServer(): Promise<TestServer> {
  return startServer((request, response, body) => {
    const url = request.url ?? '';
    if (request.method === 'POST' && /^\/movies\/\d+\/ratings$/.test(url)) {
      return sendJson(response, 200, { ok: JSON.parse(body).stars > 0 });
    }
    const movie = /^\/movies\/(\d+)$/.exec(url);
    if (request.method === 'GET' && movie) return sendJson(response, 200, { id: Number(movie[1]), title: 'Heat' });
    if (url.startsWith('/movies?') || url.startsWith('/titles/')) return sendJson(response, 200, { url });
    return sendJson(response, 404, { error: 'not found' });
  });
}

// --- tests -----------------------------------------------------------------------------------

describe('client: happy path', () => {
  it('getMovie returns the typed, validated movie', async () => {
    const server = await moviesServer();
    const timeoutsBefore = activeCount('Timeout');
    const client = createClient(movies, { instances: [server.url] });
    const movie = await client.getMovie({ id: 7 });
    expectTypeOf(movie).toEqualTypeOf<{ id: number; title: string }>();
    expect(movie).toEqual({ id: 7, title: 'Heat' });
    expect(server.requests).toHaveLength(1);
    expect(server.requests[0]).toMatchObject({ method: 'GET', url: '/movies/7', body: '' });
    expect(server.requests[0]?.headers['content-type']).toBeUndefined();
    expect(client.service).toBe(movies);
    await closeWithoutLeaks(client, server, timeoutsBefore);
  });

  it('rate() sends the JSON body with content-type application/json to the right path', async () => {
    const server = await moviesServer();
    const client = createClient(movies, { instances: [server.url], headers: { 'X-Tenant': 'acme' } });
    try {
      const result = await client.rate({ id: 42 }, { stars: 4.5 });
      expectTypeOf(result).toEqualTypeOf<{ ok: boolean }>();
      expect(result).toEqual({ ok: true });
      expect(server.requests).toHaveLength(1);
      const [request] = server.requests;
      expect(request?.method).toBe('POST');
      expect(request?.url).toBe('/movies/42/ratings');
      expect(request?.headers['content-type']).toBe('application/json');
      expect(JSON.parse(request?.body ?? '')).toEqual({ stars: 4.5 });
      expect(request?.headers['content-length']).toBe(String(Buffer.byteLength(request?.body ?? '')));
      // Client-wide headers are sent, lower-cased.
      expect(request?.headers['x-tenant']).toBe('acme');
    } finally {
      await client.close();
    }
  });

  it('search() builds an encoded query string and skips absent optional keys', async () => {
    const server = await moviesServer();
    const client = createClient(movies, { instances: [server.url] });
    try {
      expect(await client.search({ q: 'heat', limit: 5 })).toEqual({ url: '/movies?q=heat&limit=5' });
      await client.search({ q: 'the big sleep & co=1?#' });
      expect(server.requests.map((request) => request.url)).toEqual([
        '/movies?q=heat&limit=5',
        '/movies?q=the%20big%20sleep%20%26%20co%3D1%3F%23',
      ]);
      const parsed = new URL(server.requests[1]?.url ?? '', server.url);
      expect(parsed.searchParams.get('q')).toBe('the big sleep & co=1?#');
      expect(parsed.searchParams.has('limit')).toBe(false);
    } finally {
      await client.close();
    }
  });

  it('health() decodes the body by content type: JSON, text, bytes; 204 and empty bodies are undefined', async () => {
    let reply: { type?: string; status?: number; body: string | Buffer } = { body: '' };
    const server = await startServer((_request, response) => {
      const headers: Record<string, string> = {};
      if (reply.type) headers['content-type'] = reply.type;
      response.writeHead(reply.status ?? 200, headers);
      response.end(reply.body);
    });
    const connections = countConnections(server);
    const client = createClient(movies, { instances: [server.url] });
    try {
      reply = { type: 'application/json', body: '{"status":"up","checks":[1,2]}' };
      const health = await client.health();
      expectTypeOf(health).toEqualTypeOf<unknown>();
      expect(health).toEqual({ status: 'up', checks: [1, 2] });

      reply = { type: 'application/health+json; charset=utf-8', body: '{"status":"pass"}' };
      expect(await client.health()).toEqual({ status: 'pass' });

      reply = { type: 'text/plain; charset=utf-8', body: 'all good ✓' };
      expect(await client.health()).toBe('all good ✓');

      reply = { type: 'application/octet-stream', body: Buffer.from([0, 1, 2, 255]) };
      const bytes = await client.health();
      expect(Buffer.isBuffer(bytes)).toBe(true);
      expect([...(bytes as Buffer)]).toEqual([0, 1, 2, 255]);

      reply = { body: Buffer.from('no type') };
      expect(Buffer.isBuffer(await client.health())).toBe(true);

      reply = { type: 'application/json', status: 204, body: '' };
      expect(await client.health()).toBeUndefined();

      reply = { type: 'application/json', status: 200, body: '' };
      expect(await client.health()).toBeUndefined();

      expect(server.requests).toHaveLength(7);
      expect(server.requests.every((request) => request.url === '/health' && request.method === 'GET')).toBe(true);
      // Keep-alive: seven sequential calls do not dial seven connections.
      expect(connections()).toBeLessThanOrEqual(2);
    } finally {
      await client.close();
    }
  });
});

describe('client: request validation before any I/O', () => {
  it('invalid or missing params fail with INVALID_REQUEST naming the field, with no request sent', async () => {
    const server = await moviesServer();
    const connections = countConnections(server);
    const client = createClient(movies, { instances: [server.url] });
    try {
      // @ts-expect-error id must be a number
      const wrongType = await failure(client.getMovie({ id: 'seven' }));
      expect(wrongType.code).toBe(ErrorCode.INVALID_REQUEST);
      expect(wrongType).toBeInstanceOf(ValidationError);
      expect((wrongType as ValidationError).part).toBe('params');
      expect(wrongType.message).toContain('movies.getMovie: invalid params');
      expect(wrongType.message).toMatch(/\bid\b/);
      expect(wrongType.requestSent).toBe(false);
      expect(wrongType.retryable).toBe(false);

      // @ts-expect-error id is required
      const missing = await failure(client.getMovie({}));
      expect(missing.code).toBe(ErrorCode.INVALID_REQUEST);
      expect(missing.message).toMatch(/\bid\b/);
      expect((missing as ValidationError).issues.some((issue) => issue.path?.includes('id'))).toBe(true);

      const notInteger = await failure(client.getMovie({ id: 1.5 }));
      expect(notInteger.code).toBe(ErrorCode.INVALID_REQUEST);
      expect(notInteger.message).toMatch(/\bid\b/);

      // @ts-expect-error q is required
      const missingQuery = await failure(client.search({ limit: 3 }));
      expect(missingQuery.code).toBe(ErrorCode.INVALID_REQUEST);
      expect((missingQuery as ValidationError).part).toBe('query');
      expect(missingQuery.message).toMatch(/\bq\b/);

      const emptySegment = await failure(client.byTitle({ title: '' }));
      expect(emptySegment.code).toBe(ErrorCode.INVALID_REQUEST);
      expect(emptySegment.message).toContain('title');

      await delay(50);
      expect(server.requests).toHaveLength(0);
      expect(connections()).toBe(0);
    } finally {
      await client.close();
    }
  });

  it('an invalid body for rate() fails with INVALID_REQUEST naming the field, with no request sent', async () => {
    const server = await moviesServer();
    const connections = countConnections(server);
    const client = createClient(movies, { instances: [server.url] });
    try {
      // @ts-expect-error stars must be a number
      const error = await failure(client.rate({ id: 1 }, { stars: 'five' }));
      expect(error.code).toBe(ErrorCode.INVALID_REQUEST);
      expect(error).toBeInstanceOf(ValidationError);
      expect((error as ValidationError).part).toBe('body');
      expect(error.message).toContain('movies.rate: invalid body');
      expect(error.message).toContain('stars');
      expect(error.requestSent).toBe(false);

      // @ts-expect-error the body is required
      const missing = await failure(client.rate({ id: 1 }));
      expect(missing.code).toBe(ErrorCode.INVALID_REQUEST);
      expect((missing as ValidationError).part).toBe('body');

      await delay(50);
      expect(server.requests).toHaveLength(0);
      expect(connections()).toBe(0);
    } finally {
      await client.close();
    }
  });
});

describe('client: path parameters cannot change the path', () => {
  it("'../admin', 'a/b' and friends stay one encoded segment under /titles/", async () => {
    const server = await moviesServer();
    const client = createClient(movies, { instances: [server.url] });
    const titles = [
      '../admin',
      'a/b',
      '../../etc/passwd',
      'x?admin=1',
      'y#frag',
      '%2e%2e',
      '.%2E',
      'a\\b',
      'é t',
      '...',
    ];
    try {
      for (const title of titles) {
        const result = (await client.byTitle({ title })) as { url: string };
        expect(result.url).toMatch(/^\/titles\/[^/?#]+$/);
      }
      const urls = server.requests.map((request) => request.url);
      expect(urls.slice(0, 3)).toEqual(['/titles/..%2Fadmin', '/titles/a%2Fb', '/titles/..%2F..%2Fetc%2Fpasswd']);
      expect(urls).toHaveLength(titles.length);
      for (const [index, url] of urls.entries()) {
        // Exactly one segment that decodes back to the caller's value, and the path that a
        // WHATWG URL parser (or a normalizing proxy) computes is the same: no dot segment.
        expect(url).toMatch(/^\/titles\/[^/?#]+$/);
        expect(decodeURIComponent(url.slice('/titles/'.length))).toBe(titles[index]);
        expect(new URL(url, 'http://x').pathname).toBe(url);
      }
    } finally {
      await client.close();
    }
  });

  it("'..' and '.' as a path value are refused with INVALID_REQUEST before any I/O", async () => {
    const server = await moviesServer();
    const client = createClient(movies, { instances: [server.url] });
    try {
      for (const title of ['..', '.']) {
        const outcome = await client.byTitle({ title }).then(
          () => undefined,
          (error: unknown) => error,
        );
        expect(isTelescopeError(outcome) && outcome.code).toBe(ErrorCode.INVALID_REQUEST);
        expect((outcome as TelescopeError).message).toContain('title');
        expect((outcome as TelescopeError).requestSent).toBe(false);
      }
      expect(server.requests).toHaveLength(0);
    } finally {
      await client.close();
    }
  });
});

describe('client: deadline header', () => {
  it('sends x-request-timeout-ms as an integer string below timeoutMs', async () => {
    const server = await moviesServer();
    const client = createClient(movies, { instances: [server.url], timeoutMs: 1000 });
    try {
      await client.getMovie({ id: 1 });
      await client.rate({ id: 1 }, { stars: 3 }, { timeoutMs: 400 });
      const [first, second] = server.requests.map((request) => request.headers['x-request-timeout-ms']);
      expect(first).toMatch(/^\d+$/);
      expect(Number(first)).toBeLessThan(1000);
      expect(Number(first)).toBeGreaterThan(500);
      // A per-call timeout shrinks it too.
      expect(second).toMatch(/^\d+$/);
      expect(Number(second)).toBeLessThan(400);
      expect(Number(second)).toBeGreaterThan(100);
    } finally {
      await client.close();
    }
  });

  it('is bounded by attemptTimeoutMs, and not sent with deadlineHeader: false', async () => {
    const server = await moviesServer();
    const bounded = createClient(movies, { instances: [server.url], timeoutMs: 5000, attemptTimeoutMs: 300 });
    const silent = createClient(movies, { instances: [server.url], deadlineHeader: false });
    try {
      await bounded.getMovie({ id: 1 });
      await silent.getMovie({ id: 1 });
      const header = server.requests[0]?.headers['x-request-timeout-ms'];
      expect(header).toMatch(/^\d+$/);
      expect(Number(header)).toBeLessThan(300);
      expect(server.requests[1]?.headers['x-request-timeout-ms']).toBeUndefined();
    } finally {
      await bounded.close();
      await silent.close();
    }
  });
});

describe('client: error hierarchy', () => {
  it('isTelescopeError() and instanceof TelescopeError hold for thrown errors, and only for them', async () => {
    const server = await startServer((_request, response) => {
      response.writeHead(503, { 'content-type': 'text/plain' });
      response.end('busy');
    });
    const client = createClient(movies, { instances: [server.url] });
    try {
      const caught: unknown[] = [];
      await client.getMovie({ id: 1 }).catch((error: unknown) => caught.push(error));
      // @ts-expect-error wrong param type
      await client.getMovie({ id: 'x' }).catch((error: unknown) => caught.push(error));
      expect(caught).toHaveLength(2);
      const [status, validation] = caught;
      for (const error of caught) {
        expect(isTelescopeError(error)).toBe(true);
        expect(error instanceof TelescopeError).toBe(true);
        expect(error instanceof Error).toBe(true);
      }
      expect(status instanceof HttpStatusError).toBe(true);
      expect(status instanceof ValidationError).toBe(false);
      expect((status as HttpStatusError).name).toBe('HttpStatusError');
      expect(validation instanceof ValidationError).toBe(true);
      expect(validation instanceof HttpStatusError).toBe(false);
      if (isTelescopeError(status)) expect(status.code).toBe(ErrorCode.HTTP_STATUS);

      const plain = new Error('not ours');
      expect(isTelescopeError(plain)).toBe(false);
      expect(plain instanceof TelescopeError).toBe(false);
      expect(isTelescopeError({ code: 'HTTP_STATUS' })).toBe(false);
      expect(isTelescopeError(null)).toBe(false);
      expect(isTelescopeError('HTTP_STATUS')).toBe(false);
    } finally {
      await client.close();
    }
  });
});

describe('client: logger', () => {
  it('logs failures with the service and code through pino, never the credentials', async () => {
    const server = await startServer((_request, response) => {
      response.writeHead(503, { 'content-type': 'text/plain' });
      response.end('overloaded');
    });
    let output = '';
    const stream = new Writable({
      write(chunk: Buffer, _encoding, callback) {
        output += chunk.toString('utf8');
        callback();
      },
    });
    const logger = pino({ level: 'debug' }, stream);
    const client = createClient(movies, { instances: [server.url], logger });
    try {
      const error = await failure(
        client.getMovie({ id: 5 }, { headers: { authorization: 'Bearer secret-token', cookie: 'sid=secret' } }),
      );
      expect(error.code).toBe(ErrorCode.HTTP_STATUS);
      // The credentials did go to the server: only the logs must not carry them.
      expect(server.requests[0]?.headers.authorization).toBe('Bearer secret-token');
      expect(server.requests[0]?.headers.cookie).toBe('sid=secret');

      await waitFor('a log line', () => output.includes('\n'));
      const lines = output
        .trim()
        .split('\n')
        .map((line) => JSON.parse(line) as Record<string, unknown>);
      const failed = lines.find((line) => line.code === ErrorCode.HTTP_STATUS);
      expect(failed).toBeDefined();
      expect(failed).toMatchObject({
        service: 'movies',
        endpoint: 'getMovie',
        code: 'HTTP_STATUS',
        instance: server.url,
        headers: { authorization: '[redacted]', cookie: '[redacted]' },
      });
      expect(String(failed?.err)).toContain('503');
      expect(output).not.toContain('secret');
    } finally {
      await client.close();
    }
  });
});

describe('client: arguments and options', () => {
  it('too many arguments fail with INVALID_REQUEST and no request', async () => {
    const server = await moviesServer();
    const client = createClient(movies, { instances: [server.url] });
    try {
      // @ts-expect-error getMovie takes (params, options?)
      const extra = await failure(client.getMovie({ id: 1 }, {}, {}));
      expect(extra.code).toBe(ErrorCode.INVALID_REQUEST);
      expect(extra.message).toBe('movies.getMovie takes (params, options?), got 3 arguments');
      expect(extra.requestSent).toBe(false);

      // @ts-expect-error health takes (options?)
      const health = await failure(client.health({}, {}));
      expect(health.code).toBe(ErrorCode.INVALID_REQUEST);
      expect(health.message).toContain('movies.health takes (options?)');

      // @ts-expect-error rate takes (params, body, options?)
      const rate = await failure(client.rate({ id: 1 }, { stars: 1 }, {}, {}));
      expect(rate.code).toBe(ErrorCode.INVALID_REQUEST);
      expect(rate.message).toContain('(params, body, options?)');

      // @ts-expect-error call options must be an object
      const badOptions = await failure(client.getMovie({ id: 1 }, 'fast'));
      expect(badOptions.code).toBe(ErrorCode.INVALID_OPTION);
      expect(badOptions.message).toContain('call options');

      const badTimeout = await failure(client.getMovie({ id: 1 }, { timeoutMs: -5 }));
      expect(badTimeout.code).toBe(ErrorCode.INVALID_OPTION);
      expect(badTimeout.message).toContain('timeoutMs');

      await delay(50);
      expect(server.requests).toHaveLength(0);
    } finally {
      await client.close();
    }
  });

  it('bad createClient options throw INVALID_OPTION naming the option', () => {
    const cases: Array<[options: Parameters<typeof createClient>[1], names: string]> = [
      [{ instances: [] }, 'instances'],
      [{ instances: ['ftp://x'] }, 'instances[0]'],
      [{ instances: ['http://127.0.0.1:8080/api'] }, 'instances[0]'],
      [{ instances: ['not a url'] }, 'instances[0]'],
      [{ instances: ['http://127.0.0.1:1', 'http://127.0.0.1:1'] }, 'instances[1]'],
      [{ instances: ['http://127.0.0.1:1'], timeoutMs: -1 }, 'timeoutMs'],
      [{ instances: ['http://127.0.0.1:1'], timeoutMs: Number.NaN }, 'timeoutMs'],
      [{ instances: ['http://127.0.0.1:1'], maxResponseBytes: 0 }, 'maxResponseBytes'],
      [{ instances: ['http://127.0.0.1:1'], attemptTimeoutMs: 0 }, 'attemptTimeoutMs'],
      [{ instances: ['http://127.0.0.1:1'], headers: { 'x-a': 'b\r\nc' } }, 'headers.x-a'],
    ];
    for (const [options, name] of cases) {
      const error = thrown(() => createClient(movies, options));
      expect(error).toBeInstanceOf(TelescopeError);
      expect(error.code).toBe(ErrorCode.INVALID_OPTION);
      expect(error.message.startsWith(`${name} must be`)).toBe(true);
    }
    const ftp = thrown(() => createClient(movies, { instances: ['ftp://x'] }));
    expect(ftp.message).toContain('ftp://x');
    const withPath = thrown(() => createClient(movies, { instances: ['http://127.0.0.1:8080/api'] }));
    expect(withPath.message).toContain('without path');
    const negative = thrown(() => createClient(movies, { instances: ['http://127.0.0.1:1'], timeoutMs: -1 }));
    expect(negative.message).toBe('timeoutMs must be a positive finite number, got -1');
  });
});
