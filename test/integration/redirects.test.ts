/**
 * Redirects against real node:http servers on 127.0.0.1: never followed by default (the 3xx
 * is an HTTP_STATUS error carrying its location, and the server sees exactly one request);
 * with the `redirects` option, followed within `max`, on the instance's origin unless another
 * origin is allowed, with credentials dropped when leaving the origin.
 */
import { describe, expect, it } from 'vitest';
import { createClient, ErrorCode, HttpStatusError, redirects } from '../../src/index.js';
import { failure, waitFor } from '../helpers/assert.js';
import { movies } from '../helpers/movies.js';
import { sendJson, startServer } from '../helpers/server.js';

const movie = { id: 7, title: 'Heat' };

function redirectTo(location: string, status = 302) {
  return (response: import('node:http').ServerResponse) => {
    response.writeHead(status, { location, 'content-length': '0' });
    response.end();
  };
}

describe('redirects: off by default', () => {
  it('a 302 is an HTTP_STATUS error with its location; the server sees one request', async () => {
    const server = await startServer((_request, response) => redirectTo('/movies/8')(response));
    const client = createClient(movies, { instances: [server.url] });
    try {
      const error = await failure(client.getMovie({ id: 7 }));
      expect(error).toBeInstanceOf(HttpStatusError);
      expect(error).toMatchObject({
        code: ErrorCode.HTTP_STATUS,
        status: 302,
        location: '/movies/8',
        retryable: false,
      });
      expect(error.message).toBe("HTTP 302 → /movies/8 (not followed: see the client's redirects option)");
      expect(server.requests.map((request) => request.url)).toEqual(['/movies/7']);
    } finally {
      await client.close();
    }
    await waitFor('the server to see every socket closed', () => server.openSockets() === 0);
  });

  it('a redirect loop costs one request, not a loop', async () => {
    const server = await startServer((request, response) => redirectTo(request.url ?? '/')(response));
    const client = createClient(movies, { instances: [server.url] });
    try {
      expect(await failure(client.getMovie({ id: 7 }))).toMatchObject({ code: ErrorCode.HTTP_STATUS, status: 302 });
      expect(server.requests).toHaveLength(1);
    } finally {
      await client.close();
    }
  });
});

describe('redirects: on', () => {
  it('follows a same-origin redirect and answers with the target', async () => {
    const server = await startServer((request, response) =>
      request.url === '/movies/7' ? redirectTo('/v2/movies/7', 301)(response) : sendJson(response, 200, movie),
    );
    const client = createClient(movies, { instances: [server.url], redirects: {} });
    try {
      expect(await client.getMovie({ id: 7 })).toEqual(movie);
      expect(server.requests.map((request) => request.url)).toEqual(['/movies/7', '/v2/movies/7']);
      expect(client.stats().endpoints.getMovie).toMatchObject({ successes: 1, requests: 1 });
    } finally {
      await client.close();
    }
  });

  it('a loop ends with TOO_MANY_REDIRECTS after max + 1 requests', async () => {
    const server = await startServer((request, response) => redirectTo(request.url ?? '/')(response));
    const client = createClient(movies, { instances: [server.url], redirects: { max: 2 } });
    try {
      const error = await failure(client.getMovie({ id: 7 }));
      expect(error).toMatchObject({ code: ErrorCode.TOO_MANY_REDIRECTS, requestSent: true, retryable: false });
      expect(error.message).toMatch(/^more than 2 redirects \(redirects\.max\): http:\/\/127\.0\.0\.1:\d+ → /);
      expect(error.cause).toBeInstanceOf(HttpStatusError);
      // The first request plus two followed redirects; the third redirect is refused. No retry either.
      expect(server.requests).toHaveLength(3);
    } finally {
      await client.close();
    }
    await waitFor('the server to see every socket closed', () => server.openSockets() === 0);
  });

  it('never follows to another origin unless allowed; credentials do not leave the origin', async () => {
    const other = await startServer((_request, response) => sendJson(response, 200, movie));
    const server = await startServer((_request, response) => redirectTo(`${other.url}/movies/7`, 307)(response));
    const refusing = createClient(movies, {
      instances: [server.url],
      redirects: {},
      headers: { authorization: 'Bearer secret', 'x-trace': 'kept' },
    });
    const allowing = createClient(movies, {
      instances: [server.url],
      redirects: { allowOrigins: [other.url] },
      headers: { authorization: 'Bearer secret', cookie: 'session=1', 'x-trace': 'kept' },
    });
    try {
      const error = await failure(refusing.getMovie({ id: 7 }));
      expect(error).toMatchObject({ code: ErrorCode.REDIRECT_REFUSED });
      expect(error.message).toBe(
        `redirect to ${other.url} refused: not the instance's origin and not in redirects.allowOrigins`,
      );
      expect(other.requests).toHaveLength(0);

      expect(await allowing.getMovie({ id: 7 })).toEqual(movie);
      expect(other.requests).toHaveLength(1);
      expect(other.requests[0]?.headers.authorization).toBeUndefined();
      expect(other.requests[0]?.headers.cookie).toBeUndefined();
      expect(other.requests[0]?.headers['x-trace']).toBe('kept');
      expect(server.requests).toHaveLength(2);
    } finally {
      await Promise.all([refusing.close(), allowing.close()]);
    }
    await waitFor('the server to see every socket closed', () => other.openSockets() === 0);
  });

  it('303 turns a POST into a GET without body; 307 repeats the POST with its body', async () => {
    const seen: Array<{ method: string; url: string; body: string }> = [];
    const server = await startServer((request, response, body) => {
      seen.push({ method: request.method ?? '', url: request.url ?? '', body });
      if (request.url === '/movies/7/ratings') return redirectTo('/see-other', 303)(response);
      if (request.url === '/movies/8/ratings') return redirectTo('/movies/9/ratings', 307)(response);
      sendJson(response, 200, { ok: true });
    });
    const client = createClient(movies, { instances: [server.url], redirects: {} });
    try {
      expect(await client.rate({ id: 7 }, { stars: 5 })).toEqual({ ok: true });
      expect(await client.rate({ id: 8 }, { stars: 4 })).toEqual({ ok: true });
      expect(seen).toEqual([
        { method: 'POST', url: '/movies/7/ratings', body: '{"stars":5}' },
        { method: 'GET', url: '/see-other', body: '' },
        { method: 'POST', url: '/movies/8/ratings', body: '{"stars":4}' },
        { method: 'POST', url: '/movies/9/ratings', body: '{"stars":4}' },
      ]);
    } finally {
      await client.close();
    }
  });

  it('a redirect without a usable Location stays an HTTP_STATUS error', async () => {
    const server = await startServer((_request, response) => {
      response.writeHead(302, { location: 'ftp://example.invalid/x', 'content-length': '0' });
      response.end();
    });
    const client = createClient(movies, { instances: [server.url], redirects: {} });
    try {
      expect(await failure(client.getMovie({ id: 7 }))).toMatchObject({ code: ErrorCode.HTTP_STATUS, status: 302 });
      expect(server.requests).toHaveLength(1);
    } finally {
      await client.close();
    }
  });

  it('rejects bad options', () => {
    for (const options of [
      { max: 0 },
      { max: 1.5 },
      { max: 21 },
      { allowOrigins: ['not a url'] },
      { allowOrigins: ['ftp://x'] },
    ]) {
      expect(() => redirects(options)).toThrow(expect.objectContaining({ code: ErrorCode.INVALID_OPTION }));
    }
    expect(() => redirects({ max: 0 })).toThrow('redirects.max must be an integer in 1..20, got 0');
  });
});
