/**
 * telescope's HTTP/2 connection (src/transport/h2.ts) beyond a JSON answer, against node:http2
 * servers on 127.0.0.1: streamed responses with flow control, cancellation and the deadline on
 * the body; streamed and failing request bodies; compressed bodies; the peer's stream limit;
 * refused connections, refused headers, closing with calls in flight, and the idle keep-alive.
 * Every test ends with the client closed and no session left open on the server.
 */
import { constants } from 'node:http2';
import { gzipSync } from 'node:zlib';
import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import { createClient, defineService, ErrorCode, endpoint, TelescopeError } from '../../src/index.js';
import { failure, waitFor } from '../helpers/assert.js';
import { type Http2TestServer, respondJson, type StreamHandler, startHttp2Server } from '../helpers/http2.js';
import { closedPort } from '../helpers/server.js';

const files = defineService({
  name: 'files',
  endpoints: {
    download: endpoint({
      method: 'GET',
      path: '/files/:name',
      params: z.object({ name: z.string() }),
      responseType: 'stream',
    }),
    upload: endpoint({ method: 'POST', path: '/upload', body: 'raw' }),
    get: endpoint({ method: 'GET', path: '/items/:id', params: z.object({ id: z.number() }) }),
  },
});

type Options = Parameters<typeof createClient>[1];

function clientFor(server: { url: string }, options: Partial<Options> = {}) {
  return createClient(files, { instances: [server.url], http2: true, timeoutMs: 3000, ...options });
}

async function readAll(body: ReadableStream<Uint8Array>): Promise<Buffer> {
  const chunks: Uint8Array[] = [];
  for await (const chunk of body) chunks.push(chunk);
  return Buffer.concat(chunks);
}

async function closeAll(client: { close(): Promise<void> }, server: Http2TestServer): Promise<void> {
  await client.close();
  await waitFor('the server sessions to close', () => server.openSessions() === 0);
}

const megabyte = Buffer.alloc(1024 * 1024, 'telescope ');

describe('HTTP/2 streamed responses', () => {
  it('deliver a body larger than the flow-control window, read slowly, whole', async () => {
    const server = await startHttp2Server((stream) => {
      stream.respond({ ':status': 200, 'content-type': 'application/octet-stream' });
      stream.end(Buffer.concat([megabyte, megabyte]));
    });
    const client = clientFor(server);
    const { status, body } = await client.download({ name: 'big' });
    expect(status).toBe(200);
    const chunks: Uint8Array[] = [];
    const reader = body.getReader();
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      chunks.push(value);
      // A slow reader: the stream is paused and the peer waits for window updates.
      if (chunks.length % 8 === 0) await new Promise((resolve) => setImmediate(resolve));
    }
    expect(Buffer.concat(chunks).equals(Buffer.concat([megabyte, megabyte]))).toBe(true);
    await closeAll(client, server);
  });

  it('body.cancel() resets the stream with CANCEL and the connection serves the next call', async () => {
    const server = await startHttp2Server((stream, headers) => {
      if (headers[':path'] === '/items/1') {
        respondJson(stream, { ok: true });
        return;
      }
      stream.respond({ ':status': 200, 'content-type': 'application/octet-stream' });
      // Far more than the window: the server is left waiting for the reader.
      const writeMore = () => {
        while (!stream.destroyed && stream.write(megabyte)) {}
      };
      writeMore();
      stream.on('drain', writeMore);
    });
    const client = clientFor(server);
    const { body } = await client.download({ name: 'endless' });
    const reader = body.getReader();
    await reader.read();
    await reader.cancel();
    await waitFor('the server to see the reset', () => server.resets.length === 1);
    expect(server.resets[0]).toBe(constants.NGHTTP2_CANCEL);
    await expect(client.get({ id: 1 })).resolves.toEqual({ ok: true });
    expect(server.sessionsOpened()).toBe(1);
    await closeAll(client, server);
  });

  it("a stalled body is ended by the call's deadline: DEADLINE_EXCEEDED on the stream, the stream reset", async () => {
    const server = await startHttp2Server((stream) => {
      stream.respond({ ':status': 200, 'content-type': 'application/octet-stream' });
      stream.write('first');
    });
    const client = clientFor(server, { timeoutMs: 300 });
    const { body } = await client.download({ name: 'stalled' });
    const error = await readAll(body).then(
      () => undefined,
      (thrown: unknown) => thrown,
    );
    expect(error).toBeInstanceOf(TelescopeError);
    expect((error as TelescopeError).code).toBe(ErrorCode.DEADLINE_EXCEEDED);
    await waitFor('the server to see the reset', () => server.resets.length === 1);
    expect(server.resets[0]).toBe(constants.NGHTTP2_CANCEL);
    await closeAll(client, server);
  });

  it('a gzip body is decoded with decompress: true; a truncated one is a coded error', async () => {
    const text = 'telescope '.repeat(10_000);
    const zipped = gzipSync(text);
    const server = await startHttp2Server((stream, headers) => {
      stream.respond({ ':status': 200, 'content-type': 'text/plain', 'content-encoding': 'gzip' });
      stream.end(headers[':path'] === '/files/truncated' ? zipped.subarray(0, zipped.length - 20) : zipped);
    });
    const client = clientFor(server, { decompress: true });
    const { body } = await client.download({ name: 'whole' });
    expect((await readAll(body)).toString()).toBe(text);
    const truncated = await client.download({ name: 'truncated' });
    const error = await readAll(truncated.body).then(
      () => undefined,
      (thrown: unknown) => thrown,
    );
    expect((error as TelescopeError).code).toBe(ErrorCode.INVALID_RESPONSE);
    await closeAll(client, server);
  });
});

describe('HTTP/2 request bodies', () => {
  const echoUpload: StreamHandler = (stream, headers, body) =>
    respondJson(stream, { type: headers['content-type'], length: body.length, text: body.toString().slice(0, 20) });

  it('sends strings, bytes and a ReadableStream larger than the window', async () => {
    const server = await startHttp2Server(echoUpload);
    const client = clientFor(server);
    await expect(client.upload('hello')).resolves.toEqual({
      type: 'text/plain;charset=utf-8',
      length: 5,
      text: 'hello',
    });
    await expect(client.upload(new Uint8Array([104, 105]))).resolves.toMatchObject({ length: 2, text: 'hi' });
    let sent = 0;
    const stream = new ReadableStream<Uint8Array>({
      pull(controller) {
        if (sent === 4) controller.close();
        else {
          sent++;
          controller.enqueue(megabyte);
        }
      },
    });
    await expect(client.upload(stream)).resolves.toMatchObject({
      length: 4 * megabyte.length,
      text: 'telescope telescope ',
    });
    expect(server.streams).toHaveLength(3);
    await closeAll(client, server);
  });

  it('a stream body that errors half-way: INVALID_REQUEST, the stream reset, nothing handled, not retried', async () => {
    const server = await startHttp2Server(echoUpload);
    const client = clientFor(server, { retry: { maxRetries: 2 } });
    let pulls = 0;
    const stream = new ReadableStream<Uint8Array>({
      pull(controller) {
        if (++pulls === 3) controller.error(new Error('disk on fire'));
        else controller.enqueue(new Uint8Array(1024));
      },
    });
    const error = await failure(client.upload(stream));
    expect(error.code).toBe(ErrorCode.INVALID_REQUEST);
    expect(error.message).toMatch(/disk on fire/);
    expect(error.attempt).toBe(1);
    await waitFor('the server to see the reset', () => server.resets.length === 1);
    expect(server.resets[0]).toBe(constants.NGHTTP2_CANCEL);
    expect(server.streams).toHaveLength(0);
    await closeAll(client, server);
  });

  it('a header HTTP/2 forbids is INVALID_REQUEST before anything is sent, and the session stays usable', async () => {
    const server = await startHttp2Server((stream) => respondJson(stream, { ok: true }));
    const client = clientFor(server);
    const error = await failure(client.get({ id: 1 }, { headers: { connection: 'keep-alive' } }));
    expect(error.code).toBe(ErrorCode.INVALID_REQUEST);
    expect(error.requestSent).toBe(false);
    expect(error.retryable).toBe(false);
    await expect(client.get({ id: 2 })).resolves.toEqual({ ok: true });
    expect(server.streams).toHaveLength(1);
    await closeAll(client, server);
  });
});

describe('HTTP/2 connections', () => {
  it("waits for a stream slot when the server's limit is reached", async () => {
    let open = 0;
    let most = 0;
    const server = await startHttp2Server(
      (stream) => {
        open++;
        most = Math.max(most, open);
        setTimeout(() => {
          open--;
          respondJson(stream, { ok: true });
        }, 20);
      },
      { settings: { maxConcurrentStreams: 2 } },
    );
    const client = clientFor(server, { bulkhead: false });
    // The first calls go out before the server's SETTINGS arrive; later ones respect them.
    await client.get({ id: 0 });
    most = 0;
    const answers = await Promise.all(Array.from({ length: 10 }, (_, id) => client.get({ id })));
    expect(answers).toHaveLength(10);
    expect(most).toBe(2);
    expect(server.sessionsOpened()).toBe(1);
    await closeAll(client, server);
  });

  it('a refused connection is CONNECT_FAILED, nothing sent, retried on another instance', async () => {
    const server = await startHttp2Server((stream) => respondJson(stream, { ok: true }));
    const refused = `http://127.0.0.1:${await closedPort()}`;
    const alone = createClient(files, { instances: [refused], http2: true, retry: false });
    const error = await failure(alone.get({ id: 1 }));
    expect(error.code).toBe(ErrorCode.CONNECT_FAILED);
    expect(error.requestSent).toBe(false);
    await alone.close();
    const client = createClient(files, { instances: [refused, server.url], http2: true, balancer: 'round-robin' });
    await expect(client.get({ id: 1 })).resolves.toEqual({ ok: true });
    await closeAll(client, server);
  });

  it('close() with a call in flight: the call fails with CLIENT_CLOSED and the session is closed', async () => {
    const server = await startHttp2Server(() => {});
    const client = clientFor(server);
    const pending = failure(client.get({ id: 1 }));
    await waitFor('the server to see the stream', () => server.openSessions() === 1);
    await new Promise((resolve) => setTimeout(resolve, 20));
    await client.close();
    expect((await pending).code).toBe(ErrorCode.CLIENT_CLOSED);
    await waitFor('the server sessions to close', () => server.openSessions() === 0);
  });

  it('an idle connection is closed after keepAliveTimeoutMs, and the next call opens a new one', async () => {
    const server = await startHttp2Server((stream) => respondJson(stream, { ok: true }));
    const client = clientFor(server, { keepAliveTimeoutMs: 200 });
    await client.get({ id: 1 });
    await client.get({ id: 2 });
    expect(server.openSessions()).toBe(1);
    await waitFor('the idle session to close', () => server.openSessions() === 0);
    await expect(client.get({ id: 3 })).resolves.toEqual({ ok: true });
    expect(server.sessionsOpened()).toBe(2);
    await closeAll(client, server);
  });
});
