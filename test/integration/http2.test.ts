/**
 * HTTP/2 through `createClient(..., { http2: true })` against node:http2 servers on
 * 127.0.0.1: h2c with prior knowledge, h2 by ALPN with the fallback to HTTP/1.1, streams
 * multiplexed over one connection, and the failures HTTP/2 has of its own: REFUSED_STREAM and
 * a GOAWAY below our stream (not processed: retried even for a POST), RST_STREAM and GOAWAY
 * mid-body (processed: not retried for a POST), an HTTP/1.1 server spoken to with prior knowledge.
 * Server-side counts show no write is duplicated; every test ends with no session left open.
 */
import { constants } from 'node:http2';
import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import { type ClientOptions, createClient, defineService, ErrorCode, endpoint } from '../../src/index.js';
import { failure, waitFor } from '../helpers/assert.js';
import { type Http2TestServer, respondJson, type StreamHandler, startHttp2Server } from '../helpers/http2.js';
import { startServer } from '../helpers/server.js';
import { startSecureServer, testPki } from '../helpers/tls.js';

const items = defineService({
  name: 'items',
  endpoints: {
    get: endpoint({ method: 'GET', path: '/items/:id', params: z.object({ id: z.number() }) }),
    create: endpoint({ method: 'POST', path: '/items', body: z.object({ name: z.string() }) }),
  },
});

const echo: StreamHandler = (stream, headers, body) =>
  respondJson(stream, { path: headers[':path'], body: body.length > 0 ? JSON.parse(body.toString()) : null });

function clientFor(urls: string[], options: Partial<ClientOptions> = {}) {
  return createClient(items, { instances: urls, http2: true, timeoutMs: 3000, balancer: 'round-robin', ...options });
}

async function closeAll(client: { close(): Promise<void> }, ...servers: Http2TestServer[]): Promise<void> {
  await client.close();
  for (const server of servers) await waitFor('the server sessions to close', () => server.openSessions() === 0);
}

describe('HTTP/2', () => {
  it('h2c with prior knowledge: 50 concurrent calls are streams of one connection', async () => {
    const server = await startHttp2Server(echo);
    const client = clientFor([server.url]);
    const answers = await Promise.all(Array.from({ length: 50 }, (_, id) => client.get({ id })));
    expect(answers).toHaveLength(50);
    expect(answers[7]).toEqual({ path: '/items/7', body: null });
    expect(server.streams).toHaveLength(50);
    expect(server.sessionsOpened()).toBe(1);
    await expect(client.create({ name: 'x' })).resolves.toEqual({ path: '/items', body: { name: 'x' } });
    expect(server.sessionsOpened()).toBe(1);
    await closeAll(client, server);
  });

  it('h2 over TLS by ALPN, streams multiplexed', async () => {
    const pki = testPki();
    const server = await startHttp2Server(echo, { tls: { ...pki.server } });
    const client = clientFor([server.url], { tls: { ca: pki.ca } });
    await Promise.all(Array.from({ length: 20 }, (_, id) => client.get({ id })));
    expect(server.streams).toHaveLength(20);
    expect(server.sessionsOpened()).toBe(1);
    await closeAll(client, server);
  });

  it('falls back to HTTP/1.1 when the TLS server offers only that', async () => {
    const pki = testPki();
    const server = await startSecureServer({ ...pki.server }, (_request, response) => {
      response.setHeader('content-type', 'application/json');
      response.end('{"ok":true}');
    });
    const client = clientFor([server.url], { tls: { ca: pki.ca } });
    const answers = await Promise.all(Array.from({ length: 10 }, (_, id) => client.get({ id })));
    expect(answers.every((answer) => (answer as { ok: boolean }).ok)).toBe(true);
    await expect(client.get({ id: 99 })).resolves.toEqual({ ok: true });
    expect(server.requests).toHaveLength(11);
    expect(server.requests.every((request) => request.httpVersion === '1.1')).toBe(true);
    await client.close();
    await waitFor('the server sockets to close', () => server.openSockets() === 0);
  });

  it('h2c prior knowledge to an HTTP/1.1 server: a coded error, nothing processed', async () => {
    const server = await startServer((_request, response) => {
      response.end('{}');
    });
    const client = clientFor([server.url], { retry: false });
    const error = await failure(client.create({ name: 'x' }));
    expect(error.code).toBe(ErrorCode.CONNECT_FAILED);
    expect(error.message).toMatch(/did not answer as HTTP\/2/);
    expect(error.requestSent).toBe(false);
    expect(error.retryable).toBe(false);
    expect(server.requests).toHaveLength(0);
    await client.close();
    await waitFor('the server sockets to close', () => server.openSockets() === 0);
  });

  it("a stream that never answers is cut by the call's deadline: reset, and the connection serves the next call", async () => {
    // Nothing but the attempt's deadline ends the stream: it is reset, the connection stays.
    const resets: number[] = [];
    const server = await startHttp2Server((stream, headers, body) => {
      if (headers[':path'] === '/items/1') {
        stream.on('close', () => resets.push(stream.rstCode ?? -1));
        return;
      }
      echo(stream, headers, body);
    });
    const client = clientFor([server.url], { retry: false, timeoutMs: 300 });
    const startedAt = performance.now();
    const error = await failure(client.get({ id: 1 }));
    expect(error.code).toBe(ErrorCode.DEADLINE_EXCEEDED);
    expect(performance.now() - startedAt).toBeLessThan(2000);
    await waitFor('the server to see the stream reset', () => resets.length === 1);
    // RST_STREAM with CANCEL, "no longer needed" (RFC 9113 §8.7); -1 would be a close without one.
    expect(resets[0]).toBe(constants.NGHTTP2_CANCEL);
    await expect(client.get({ id: 2 })).resolves.toEqual({ path: '/items/2', body: null });
    expect(server.sessionsOpened()).toBe(1);
    await closeAll(client, server);
  });

  it('REFUSED_STREAM: not processed, so even a POST is retried on another instance, once', async () => {
    const refusing = await startHttp2Server((stream) => stream.close(constants.NGHTTP2_REFUSED_STREAM));
    const healthy = await startHttp2Server(echo);
    const client = clientFor([refusing.url, healthy.url]);
    await expect(client.create({ name: 'x' })).resolves.toEqual({ path: '/items', body: { name: 'x' } });
    expect(healthy.streams).toHaveLength(1);

    const alone = clientFor([refusing.url], { retry: false });
    const error = await failure(alone.create({ name: 'y' }));
    expect(error.code).toBe(ErrorCode.CONNECTION_RESET);
    expect(error.requestSent).toBe(false);
    expect(error.retryable).toBe(true);
    await alone.close();
    await closeAll(client, refusing, healthy);
  });

  it('GOAWAY with a last-stream-id below ours: not processed, a POST is retried on a new connection', async () => {
    // Stream 1 of each connection is answered; any later stream gets GOAWAY(last-stream-id 1).
    let processed = 0;
    const goingAway = await startHttp2Server((stream, headers, body) => {
      if (stream.id === 1) {
        processed++;
        echo(stream, headers, body);
      } else {
        // A draining server: GOAWAY, then the session closes once its own streams are done.
        stream.session?.goaway(constants.NGHTTP2_NO_ERROR, 1);
        stream.session?.close();
      }
    });
    const client = clientFor([goingAway.url]);
    await expect(client.get({ id: 1 })).resolves.toEqual({ path: '/items/1', body: null });
    // Stream 3 is refused by the GOAWAY; the retry goes to a new connection, whose stream 1 is answered.
    await expect(client.create({ name: 'x' })).resolves.toEqual({ path: '/items', body: { name: 'x' } });
    expect(processed).toBe(2);
    await client.close();

    const alone = clientFor([goingAway.url], { retry: false });
    await alone.get({ id: 2 });
    const error = await failure(alone.create({ name: 'y' }));
    expect(error.code).toBe(ErrorCode.CONNECTION_RESET);
    expect(error.requestSent).toBe(false);
    expect(error.retryable).toBe(true);
    expect(error.message).toMatch(/GOAWAY \(last stream 1\)/);
    expect(processed).toBe(3);
    await closeAll(alone, goingAway);
  });

  it.each([
    [
      'RST_STREAM',
      ((stream) => {
        stream.respond({ ':status': 200, 'content-type': 'application/json' });
        stream.write('{"partial":');
        // destroy(), not close(code): close() ends the stream (END_STREAM) before its RST_STREAM.
        setTimeout(() => stream.destroy(new Error('reset mid-body')), 20);
      }) as StreamHandler,
    ],
    [
      'GOAWAY',
      ((stream) => {
        stream.respond({ ':status': 200, 'content-type': 'application/json' });
        stream.write('{"partial":');
        setTimeout(() => {
          stream.session?.goaway(constants.NGHTTP2_INTERNAL_ERROR, stream.id);
          stream.session?.destroy();
        }, 20);
      }) as StreamHandler,
    ],
  ])('%s mid-body: processed, so a POST is not retried; a GET is', async (_name, handler) => {
    const breaking = await startHttp2Server(handler);
    const healthy = await startHttp2Server(echo);
    const client = clientFor([breaking.url, healthy.url]);
    const error = await failure(client.create({ name: 'x' }));
    expect(error.code).toBe(ErrorCode.CONNECTION_RESET);
    expect(error.requestSent).toBe(true);
    expect(breaking.streams).toHaveLength(1);
    expect(healthy.streams).toHaveLength(0);
    // The next call starts on the healthy instance (round-robin); the one after on the broken one, then retries.
    await expect(client.get({ id: 1 })).resolves.toEqual({ path: '/items/1', body: null });
    await expect(client.get({ id: 2 })).resolves.toEqual({ path: '/items/2', body: null });
    expect(breaking.streams).toHaveLength(2);
    await closeAll(client, breaking, healthy);
  });
});
