/**
 * Wire-level behaviour of the undici transport, driven through `createClient` (and once
 * through `transport()` directly) against real node:http servers on 127.0.0.1: connection
 * failures, resets, timeouts, oversized and undecodable bodies, status mapping, caller
 * aborts and `close()`, each with server-side request counts and leak checks. Retries are
 * off here (`retry: false`) so each test sees exactly one attempt; retries have their own tests.
 */
import type { ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import { describe, expect, it } from 'vitest';
import {
  CallContext,
  type Client,
  createClient,
  ErrorCode,
  HttpStatusError,
  parseInstances,
  systemClock,
  transport,
  ValidationError,
  wheelOf,
} from '../../src/index.js';
import { failure, timedFailure, waitFor } from '../helpers/assert.js';
import { movies } from '../helpers/movies.js';
import { activeCount } from '../helpers/process-resources.js';
import { closedPort, delay, sendJson, startServer, type TestServer } from '../helpers/server.js';

type MoviesClient = Client<typeof movies>;

// --- helpers ---------------------------------------------------------------------------------

interface Resources {
  timeouts: number;
  sockets: number;
}

/** Active (ref'd) timers and TCP sockets of this process; take it after the server started. */
function resources(): Resources {
  return { timeouts: activeCount('Timeout'), sockets: activeCount('TCPSocketWrap') };
}

/** Closes the client and checks that every socket and timer it made is gone. */
async function closeWithoutLeaks(client: MoviesClient, server: TestServer, before: Resources): Promise<void> {
  await client.close();
  await waitFor('the server-side sockets to close', () => server.openSockets() === 0);
  await waitFor('the client-side sockets to close', () => activeCount('TCPSocketWrap') <= before.sockets);
  await waitFor('the transport timers to go', () => activeCount('Timeout') <= before.timeouts);
  // Every attempt timeout armed on the shared wheel was cancelled or fired.
  expect(wheelOf(systemClock).size).toBe(0);
}

/** A handler that never answers (the server helper destroys its socket after the test). */
const hang = () => {};

/**
 * The server-side sockets that carried a request. Used instead of `openSockets()` while the
 * client is still open: after an in-flight abort undici 7 dials one idle replacement
 * connection (nodejs/undici#5845), which only `close()` ends.
 */
function requestSockets(server: TestServer): () => Socket[] {
  const sockets: Socket[] = [];
  server.server.on('request', (request) => sockets.push(request.socket));
  return () => sockets;
}

/** Waits until at least one request was carried and every socket that carried one is closed. */
async function waitForRequestSocketsClosed(what: string, sockets: () => Socket[]): Promise<void> {
  await waitFor(what, () => sockets().length > 0 && sockets().every((socket) => socket.closed), 1500);
}

/** Counts TCP connections accepted by the server. */
function countConnections(server: TestServer): () => number {
  let connections = 0;
  server.server.on('connection', () => connections++);
  return () => connections;
}

// --- tests -----------------------------------------------------------------------------------

describe('transport: connection refused', () => {
  it('fails with CONNECT_FAILED, retryable, requestSent false, naming the instance', async () => {
    const port = await closedPort();
    const instance = `http://127.0.0.1:${port}`;
    const client = createClient(movies, { retry: false, instances: [instance], timeoutMs: 2000 });
    try {
      const { error, ms } = await timedFailure(client.getMovie({ id: 1 }));
      expect(error.code).toBe(ErrorCode.CONNECT_FAILED);
      expect(error.retryable).toBe(true);
      expect(error.requestSent).toBe(false);
      expect(error.instance).toBe(instance);
      expect(error.service).toBe('movies');
      expect(error.endpoint).toBe('getMovie');
      expect(error.attempt).toBe(1);
      expect(error.message).toContain('connect failed');
      expect(error.message).toContain(instance);
      expect(ms).toBeLessThan(1500);

      // A POST is reported the same way: nothing was sent, so a retry elsewhere would be safe.
      const post = await failure(client.rate({ id: 1 }, { stars: 4 }));
      expect(post.code).toBe(ErrorCode.CONNECT_FAILED);
      expect(post.requestSent).toBe(false);
      expect(wheelOf(systemClock).size).toBe(0);
    } finally {
      await client.close();
    }
  });
});

describe('transport: connection reset mid-body', () => {
  it('fails with CONNECTION_RESET when the socket is destroyed after 10 of 100 declared bytes', async () => {
    const server = await startServer((_request, response) => {
      response.writeHead(200, { 'content-type': 'application/json', 'content-length': '100' });
      // Destroy only once the 10 bytes are flushed, so the client really is mid-body.
      response.write('{"id":1,"t', () => response.socket?.destroy());
    });
    const before = resources();
    const client = createClient(movies, { retry: false, instances: [server.url], timeoutMs: 3000 });
    const { error, ms } = await timedFailure(client.getMovie({ id: 1 }));
    expect(error.code).toBe(ErrorCode.CONNECTION_RESET);
    expect(error.retryable).toBe(true);
    expect(error.requestSent).toBe(true);
    expect(error.instance).toBe(server.url);
    expect(error.message).toContain('connection reset');
    // Reported when the socket closes, not when the 3 s budget runs out.
    expect(ms).toBeLessThan(1500);

    // A POST hit by the same reset reached the server exactly once (nothing re-sent it).
    const post = await failure(client.rate({ id: 2 }, { stars: 1 }));
    expect(post.code).toBe(ErrorCode.CONNECTION_RESET);
    expect(server.requests.filter((request) => request.method === 'POST')).toHaveLength(1);
    expect(server.requests).toHaveLength(2);
    await closeWithoutLeaks(client, server, before);
  });
});

describe('transport: timeouts', () => {
  it('headers that never arrive fail with DEADLINE_EXCEEDED once timeoutMs (200 ms) is spent', async () => {
    const server = await startServer(hang);
    const sockets = requestSockets(server);
    const before = resources();
    const client = createClient(movies, { retry: false, instances: [server.url], timeoutMs: 200 });
    const { error, ms } = await timedFailure(client.getMovie({ id: 1 }));
    expect(error.code).toBe(ErrorCode.DEADLINE_EXCEEDED);
    expect(error.message).toContain('deadline exceeded');
    expect(error.retryable).toBe(false);
    expect(error.requestSent).toBe(true);
    expect(error.instance).toBe(server.url);
    expect(ms).toBeGreaterThan(100);
    expect(ms).toBeLessThan(1500);
    expect(server.requests).toHaveLength(1);
    // The abandoned request's socket is closed at once, not left for the keep-alive timeout.
    await waitForRequestSocketsClosed('the timed-out socket to close', sockets);
    expect(wheelOf(systemClock).size).toBe(0);
    await closeWithoutLeaks(client, server, before);
  });

  it('an attempt running past attemptTimeoutMs (150 ms, budget 2000 ms) fails with ATTEMPT_TIMEOUT', async () => {
    const server = await startServer(hang);
    const sockets = requestSockets(server);
    const before = resources();
    const client = createClient(movies, {
      retry: false,
      instances: [server.url],
      timeoutMs: 2000,
      attemptTimeoutMs: 150,
    });
    const { error, ms } = await timedFailure(client.getMovie({ id: 1 }));
    expect(error.code).toBe(ErrorCode.ATTEMPT_TIMEOUT);
    expect(error.message).toContain('attempt timed out');
    expect(error.retryable).toBe(true);
    expect(error.requestSent).toBe(true);
    expect(error.attempt).toBe(1);
    expect(ms).toBeGreaterThan(75);
    // Well before the 2000 ms budget: the attempt timeout, not the deadline, ended it.
    expect(ms).toBeLessThan(1200);
    expect(server.requests).toHaveLength(1);
    await waitForRequestSocketsClosed('the timed-out socket to close', sockets);
    await closeWithoutLeaks(client, server, before);
  });

  it('a body trickling a byte every 100 ms past the budget fails with DEADLINE_EXCEEDED and its socket is closed', async () => {
    let bytesWritten = 0;
    const server = await startServer((_request, response) => {
      response.writeHead(200, { 'content-type': 'text/plain' });
      const timer = setInterval(() => {
        response.write('x');
        bytesWritten++;
      }, 100);
      response.on('close', () => clearInterval(timer));
    });
    const sockets = requestSockets(server);
    const before = resources();
    const client = createClient(movies, { retry: false, instances: [server.url], timeoutMs: 500 });
    const { error, ms } = await timedFailure(client.health());
    expect(error.code).toBe(ErrorCode.DEADLINE_EXCEEDED);
    expect(error.requestSent).toBe(true);
    // Headers came at once and bytes kept coming: only the budget can have ended the call.
    expect(bytesWritten).toBeGreaterThan(1);
    expect(ms).toBeGreaterThan(300);
    expect(ms).toBeLessThan(1800);
    // Checked while the client is still open: the attempt's own socket is destroyed.
    await waitForRequestSocketsClosed('the trickling socket to close', sockets);
    const written = bytesWritten;
    await delay(250);
    expect(bytesWritten).toBe(written);
    await closeWithoutLeaks(client, server, before);
  });
});

describe('transport: undecodable responses', () => {
  it('malformed JSON with content-type application/json fails with INVALID_RESPONSE', async () => {
    const server = await startServer((_request, response) => {
      response.writeHead(200, { 'content-type': 'application/json; charset=utf-8' });
      response.end('{"ok": tru');
    });
    const before = resources();
    const client = createClient(movies, { retry: false, instances: [server.url] });
    const error = await failure(client.health());
    expect(error.code).toBe(ErrorCode.INVALID_RESPONSE);
    expect(error).toBeInstanceOf(ValidationError);
    expect((error as ValidationError).part).toBe('response');
    expect(error.retryable).toBe(false);
    expect(error.instance).toBe(server.url);
    expect(error.message).toContain('invalid response');
    expect(error.cause).toBeInstanceOf(SyntaxError);
    expect(server.requests).toHaveLength(1);
    await closeWithoutLeaks(client, server, before);
  });

  it('invalid UTF-8 in a JSON body fails with INVALID_RESPONSE', async () => {
    const server = await startServer((_request, response) => {
      const body = Buffer.from([0x22, 0xff, 0xfe, 0x22]); // "\xff\xfe": a JSON string of invalid bytes
      response.writeHead(200, { 'content-type': 'application/json', 'content-length': body.length });
      response.end(body);
    });
    const client = createClient(movies, { retry: false, instances: [server.url] });
    try {
      const error = await failure(client.health());
      expect(error.code).toBe(ErrorCode.INVALID_RESPONSE);
      expect(error).toBeInstanceOf(ValidationError);
      expect((error as ValidationError).part).toBe('response');
      expect(error.message).toContain('UTF-8');
    } finally {
      await client.close();
    }
  });

  it('a response violating the endpoint schema fails with INVALID_RESPONSE and the issues', async () => {
    const server = await startServer((_request, response) => sendJson(response, 200, { id: 'seven', title: 7 }));
    const client = createClient(movies, { retry: false, instances: [server.url] });
    try {
      const error = await failure(client.getMovie({ id: 7 }));
      expect(error.code).toBe(ErrorCode.INVALID_RESPONSE);
      expect(error).toBeInstanceOf(ValidationError);
      const validation = error as ValidationError;
      expect(validation.part).toBe('response');
      expect(validation.retryable).toBe(false);
      const paths = validation.issues.map((issue) => issue.path?.map(String).join('.'));
      expect(paths).toEqual(expect.arrayContaining(['id', 'title']));
      expect(error.message).toContain('movies.getMovie: invalid response');
      expect(error.message).toContain('id');
      expect(server.requests).toHaveLength(1);
    } finally {
      await client.close();
    }
  });
});

describe('transport: maxResponseBytes', () => {
  it('a 5 GB Content-Length fails with RESPONSE_TOO_LARGE at the headers, without waiting for the body', async () => {
    const server = await startServer((_request, response) => {
      response.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': '5000000000' });
      // Some bytes, then silence: a client that waited for (or buffered) the body would hang
      // until its 5 s budget ran out.
      response.write(Buffer.alloc(64 * 1024, 1));
    });
    const sockets = requestSockets(server);
    const before = resources();
    const client = createClient(movies, { retry: false, instances: [server.url], timeoutMs: 5000 });
    const { error, ms } = await timedFailure(client.health());
    expect(error.code).toBe(ErrorCode.RESPONSE_TOO_LARGE);
    expect(error.message).toContain('declared Content-Length 5000000000');
    expect(error.message).toContain(String(10 * 1024 * 1024));
    expect(error.instance).toBe(server.url);
    expect(ms).toBeLessThan(1500);
    await waitForRequestSocketsClosed('the oversized response socket to close', sockets);
    await closeWithoutLeaks(client, server, before);
  });

  it('a chunked body streaming past maxResponseBytes (1024) fails with RESPONSE_TOO_LARGE and stops the stream', async () => {
    let chunksWritten = 0;
    const server = await startServer((_request, response) => {
      response.writeHead(200, { 'content-type': 'text/plain' }); // no content-length: chunked
      const chunk = Buffer.alloc(10 * 1024, 'a');
      const write = () => {
        response.write(chunk);
        chunksWritten++;
      };
      write();
      const timer = setInterval(write, 50);
      response.on('close', () => clearInterval(timer));
    });
    const sockets = requestSockets(server);
    const before = resources();
    const client = createClient(movies, {
      retry: false,
      instances: [server.url],
      timeoutMs: 5000,
      maxResponseBytes: 1024,
    });
    const { error, ms } = await timedFailure(client.health());
    expect(error.code).toBe(ErrorCode.RESPONSE_TOO_LARGE);
    expect(error.message).toContain('more than 1024 bytes received');
    expect(ms).toBeLessThan(1500);
    await waitForRequestSocketsClosed('the streaming socket to close', sockets);
    const written = chunksWritten;
    await delay(200);
    expect(chunksWritten).toBe(written);
    await closeWithoutLeaks(client, server, before);
  });

  it('accepts a body of exactly maxResponseBytes and rejects one byte more', async () => {
    const server = await startServer((request, response) => {
      const size = request.url === '/movies?q=big' ? 1025 : 1024;
      response.writeHead(200, { 'content-type': 'text/plain', 'content-length': size });
      response.end('b'.repeat(size));
    });
    const client = createClient(movies, { retry: false, instances: [server.url], maxResponseBytes: 1024 });
    try {
      expect(await client.health()).toBe('b'.repeat(1024));
      const error = await failure(client.search({ q: 'big' }));
      expect(error.code).toBe(ErrorCode.RESPONSE_TOO_LARGE);
      expect(error.message).toContain('declared Content-Length 1025');
    } finally {
      await client.close();
    }
  });
});

describe('transport: HTTP status mapping', () => {
  function statusServer(status: number, body: string, headers: Record<string, string> = {}) {
    return startServer((_request, response: ServerResponse) => {
      response.writeHead(status, { 'content-type': 'text/plain', ...headers });
      response.end(body);
    });
  }

  it('503 with a body is a retryable HttpStatusError carrying the body excerpt', async () => {
    const server = await statusServer(503, 'upstream overloaded, try later');
    const client = createClient(movies, { retry: false, instances: [server.url] });
    try {
      const error = await failure(client.getMovie({ id: 3 }));
      expect(error).toBeInstanceOf(HttpStatusError);
      const status = error as HttpStatusError;
      expect(status.code).toBe(ErrorCode.HTTP_STATUS);
      expect(status.status).toBe(503);
      expect(status.retryable).toBe(true);
      expect(status.bodyExcerpt).toContain('upstream overloaded, try later');
      expect(status.message).toBe('HTTP 503: upstream overloaded, try later');
      expect(status.retryAfterMs).toBeUndefined();
      expect(status.instance).toBe(server.url);
      expect(status.endpoint).toBe('getMovie');
      expect(server.requests).toHaveLength(1);
    } finally {
      await client.close();
    }
  });

  it('404 is not retryable', async () => {
    const server = await statusServer(404, 'no such movie');
    const client = createClient(movies, { retry: false, instances: [server.url] });
    try {
      const error = await failure(client.getMovie({ id: 404 }));
      expect(error).toBeInstanceOf(HttpStatusError);
      expect((error as HttpStatusError).status).toBe(404);
      expect(error.code).toBe(ErrorCode.HTTP_STATUS);
      expect(error.retryable).toBe(false);
    } finally {
      await client.close();
    }
  });

  it('429 with Retry-After: 2 gives retryAfterMs 2000', async () => {
    const server = await statusServer(429, 'slow down', { 'retry-after': '2' });
    const client = createClient(movies, { retry: false, instances: [server.url] });
    try {
      const error = await failure(client.rate({ id: 1 }, { stars: 5 }));
      expect(error).toBeInstanceOf(HttpStatusError);
      const status = error as HttpStatusError;
      expect(status.status).toBe(429);
      expect(status.retryable).toBe(true);
      expect(status.retryAfterMs).toBe(2000);
      // A failed POST is never re-sent by the transport.
      expect(server.requests).toHaveLength(1);
    } finally {
      await client.close();
    }
  });

  it('keeps at most 1024 bytes of a large error body', async () => {
    const server = await statusServer(500, 'e'.repeat(5000));
    const client = createClient(movies, { retry: false, instances: [server.url] });
    try {
      const error = await failure(client.health());
      expect(error).toBeInstanceOf(HttpStatusError);
      expect((error as HttpStatusError).bodyExcerpt).toBe('e'.repeat(1024));
      expect(error.message.length).toBeLessThan(300);
    } finally {
      await client.close();
    }
  });
});

describe('transport: caller abort', () => {
  it('an already aborted signal fails with ABORTED before any I/O', async () => {
    const server = await startServer((_request, response) => sendJson(response, 200, { id: 1, title: 'x' }));
    const connections = countConnections(server);
    const client = createClient(movies, { retry: false, instances: [server.url] });
    try {
      const controller = new AbortController();
      const reason = new Error('caller gave up');
      controller.abort(reason);
      const { error, ms } = await timedFailure(client.getMovie({ id: 1 }, { signal: controller.signal }));
      expect(error.code).toBe(ErrorCode.ABORTED);
      expect(error.requestSent).toBe(false);
      expect(error.cause).toBe(reason);
      expect(ms).toBeLessThan(300);
      const post = await failure(client.rate({ id: 1 }, { stars: 2 }, { signal: controller.signal }));
      expect(post.code).toBe(ErrorCode.ABORTED);
      await delay(50);
      expect(server.requests).toHaveLength(0);
      expect(connections()).toBe(0);
    } finally {
      await client.close();
    }
  });

  it('aborting during the call fails with ABORTED promptly and frees the server socket', async () => {
    const server = await startServer(hang);
    const sockets = requestSockets(server);
    const before = resources();
    const client = createClient(movies, { retry: false, instances: [server.url], timeoutMs: 5000 });
    const controller = new AbortController();
    const timer = setTimeout(() => controller.abort(), 100);
    const { error, ms } = await timedFailure(client.rate({ id: 9 }, { stars: 3 }, { signal: controller.signal }));
    clearTimeout(timer);
    expect(error.code).toBe(ErrorCode.ABORTED);
    expect(error.message).toContain('aborted');
    expect(error.requestSent).toBe(true);
    expect(ms).toBeGreaterThan(50);
    expect(ms).toBeLessThan(1000);
    // The POST reached the server once; the abort closed its socket while the client stays open.
    expect(server.requests).toHaveLength(1);
    expect(server.requests[0]?.method).toBe('POST');
    await waitForRequestSocketsClosed('the aborted socket to close', sockets);
    expect(wheelOf(systemClock).size).toBe(0);
    await closeWithoutLeaks(client, server, before);
  });
});

describe('transport: close()', () => {
  it('fails calls in flight with CLIENT_CLOSED, closes their sockets, and fails later calls at once', async () => {
    const server = await startServer(hang);
    const before = resources();
    const client = createClient(movies, { retry: false, instances: [server.url], timeoutMs: 10_000 });
    const inFlight = [
      failure(client.getMovie({ id: 1 })),
      failure(client.getMovie({ id: 2 })),
      failure(client.search({ q: 'x' })),
      failure(client.rate({ id: 3 }, { stars: 5 })),
    ];
    await waitFor('all four requests to reach the server', () => server.requests.length === 4);
    expect(server.openSockets()).toBeGreaterThan(0);

    const start = performance.now();
    await client.close();
    const errors = await Promise.all(inFlight);
    expect(performance.now() - start).toBeLessThan(1500);
    for (const error of errors) {
      expect(error.code).toBe(ErrorCode.CLIENT_CLOSED);
      expect(error.message).toContain('closed');
    }
    await waitFor('the server-side sockets to close', () => server.openSockets() === 0);

    const { error, ms } = await timedFailure(client.getMovie({ id: 4 }));
    expect(error.code).toBe(ErrorCode.CLIENT_CLOSED);
    expect(error.requestSent).toBe(false);
    expect(ms).toBeLessThan(300);
    const post = await failure(client.rate({ id: 4 }, { stars: 1 }));
    expect(post.code).toBe(ErrorCode.CLIENT_CLOSED);
    await delay(50);
    // No request was repeated or sent after close.
    expect(server.requests).toHaveLength(4);
    expect(server.requests.filter((request) => request.method === 'POST')).toHaveLength(1);

    // close() is idempotent; the leak check closes once more.
    await closeWithoutLeaks(client, server, before);
  });
});

describe('transport() used directly', () => {
  it('reuses one pool per instance, reports poolCount, and rejects after close with CLIENT_CLOSED', async () => {
    const server = await startServer((request, response) => sendJson(response, 200, { path: request.url }));
    const connections = countConnections(server);
    const wire = transport({ keepAliveTimeoutMs: 10_000 });
    const [instance] = parseInstances([server.url]);
    const context = () => {
      const created = new CallContext({
        service: 'raw',
        endpoint: 'ping',
        idempotent: true,
        clock: systemClock,
        timeoutMs: 1000,
      });
      created.instance = instance;
      return created;
    };
    const request = () => ({ method: 'GET', path: '/ping?x=1', headers: { 'x-test': 'yes' }, body: undefined });

    for (let index = 0; index < 10; index++) {
      const response = await wire.call(request(), context());
      expect(response.status).toBe(200);
      expect(response.body).toEqual({ path: '/ping?x=1' });
      expect(response.instance).toBe(server.url);
      expect(response.headers['content-type']).toBe('application/json');
    }
    expect(server.requests.map((entry) => entry.headers['x-test'])).toEqual(Array(10).fill('yes'));
    // Keep-alive: sequential calls share pooled connections instead of dialling one per call
    // (undici may dial a second one while the first is still being released).
    expect(connections()).toBeLessThanOrEqual(2);
    expect(wire.poolCount).toBe(1);

    await wire.close();
    expect(wire.poolCount).toBe(0);
    await waitFor('the pooled socket to close', () => server.openSockets() === 0);
    await expect(wire.call(request(), context())).rejects.toMatchObject({ code: ErrorCode.CLIENT_CLOSED });
    expect(server.requests).toHaveLength(10);
  });

  it('rejects an attempt without an instance, and bad options with INVALID_OPTION', async () => {
    const wire = transport();
    const context = new CallContext({
      service: 'raw',
      endpoint: 'ping',
      idempotent: true,
      clock: systemClock,
      timeoutMs: 1000,
    });
    await expect(wire.call({ method: 'GET', path: '/', headers: {}, body: undefined }, context)).rejects.toMatchObject({
      code: ErrorCode.INVALID_OPTION,
    });
    expect(() => transport({ maxResponseBytes: 0 })).toThrowError(/maxResponseBytes/);
    expect(() => transport({ connectTimeoutMs: Number.NaN })).toThrowError(/connectTimeoutMs/);
    expect(() => transport({ connections: 1.5 })).toThrowError(/connections/);
    await wire.close();
  });
});
