/**
 * Streamed responses (`responseType: 'stream'`) and raw request bodies (`body: 'raw'`) against
 * real node:http servers on 127.0.0.1: the method resolves at the headers, the deadline and the
 * caller's signal keep guarding the body, `body.cancel()` closes the connection, nothing is
 * retried once the caller has the stream, and a stream request body is read once: never
 * repeated after its first byte, coded when it fails half-way.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { gzipSync } from 'node:zlib';
import { describe, expect, it } from 'vitest';
import { createClient, defineService, ErrorCode, endpoint, HttpStatusError, TelescopeError } from '../../src/index.js';
import { failure, waitFor } from '../helpers/assert.js';
import { closedPort, delay, startServer } from '../helpers/server.js';

const files = defineService({
  name: 'files',
  endpoints: {
    download: endpoint({ method: 'GET', path: '/files/download', responseType: 'stream' }),
    upload: endpoint({ method: 'POST', path: '/files/upload', body: 'raw' }),
  },
});

/** Reads a web stream to the end. */
async function readAll(body: ReadableStream<Uint8Array>): Promise<Buffer> {
  const chunks: Uint8Array[] = [];
  for await (const chunk of body) chunks.push(chunk);
  return Buffer.concat(chunks);
}

/** Reads until the stream fails; returns the error. */
async function readError(body: ReadableStream<Uint8Array>): Promise<TelescopeError> {
  try {
    await readAll(body);
  } catch (error) {
    expect(error).toBeInstanceOf(TelescopeError);
    return error as TelescopeError;
  }
  throw new Error('expected the body to fail');
}

/** A server that answers `/files/download` with `write(response)` and echoes uploads. */
function filesServer(write: (response: ServerResponse, request: IncomingMessage) => void) {
  return startServer((request, response, body) => {
    if (request.url === '/files/upload') {
      response.setHeader('content-type', 'application/json');
      response.end(JSON.stringify({ type: request.headers['content-type'], body }));
      return;
    }
    write(response, request);
  });
}

describe('streamed responses', () => {
  it('resolve at the headers with a ReadableStream that delivers the whole body', async () => {
    let finishBody!: () => void;
    const server = await filesServer((response) => {
      response.writeHead(200, { 'content-type': 'application/octet-stream', 'x-kind': 'file' });
      response.write('first,');
      finishBody = () => response.end('second');
    });
    const client = createClient(files, { instances: [server.url], timeoutMs: 3000 });
    const answer = await client.download();
    expect(answer.status).toBe(200);
    expect(answer.headers['x-kind']).toBe('file');
    expect(answer.body).toBeInstanceOf(ReadableStream);
    finishBody();
    expect((await readAll(answer.body)).toString()).toBe('first,second');
    await client.close();
  });

  it('a stalled body errors the stream with DEADLINE_EXCEEDED and the connection is closed', async () => {
    const server = await filesServer((response) => {
      response.writeHead(200);
      response.write('only this');
    });
    const client = createClient(files, { instances: [server.url], timeoutMs: 300 });
    const answer = await client.download();
    const error = await readError(answer.body);
    expect(error.code).toBe(ErrorCode.DEADLINE_EXCEEDED);
    await waitFor('the server-side socket to close', () => server.openSockets() === 0, 4000);
    await client.close();
  });

  it('body.cancel() closes the connection at once', async () => {
    const chunk = Buffer.alloc(64 * 1024, 1);
    let socketClosed = false;
    const server = await filesServer((response) => {
      response.socket?.once('close', () => {
        socketClosed = true;
      });
      response.writeHead(200);
      const pump = () => {
        while (!response.destroyed && response.write(chunk));
        if (!response.destroyed) response.once('drain', pump);
      };
      pump();
    });
    const client = createClient(files, { instances: [server.url], timeoutMs: 10_000 });
    const answer = await client.download();
    const reader = answer.body.getReader();
    let received = 0;
    while (received < 1024 * 1024) received += ((await reader.read()).value as Uint8Array).length;
    await reader.cancel();
    // The socket that carried the body (undici may dial an idle replacement: nodejs/undici#5845).
    await waitFor('the server-side socket to close', () => socketClosed, 4000);
    await client.close();
  });

  it("the caller's signal aborts the body (ABORTED)", async () => {
    let socketClosed = false;
    const server = await filesServer((response) => {
      response.socket?.once('close', () => {
        socketClosed = true;
      });
      response.writeHead(200);
      response.write('some');
    });
    const client = createClient(files, { instances: [server.url], timeoutMs: 5000 });
    const controller = new AbortController();
    const answer = await client.download({ signal: controller.signal });
    setTimeout(() => controller.abort(), 20);
    expect((await readError(answer.body)).code).toBe(ErrorCode.ABORTED);
    // The socket that carried the body (undici may dial an idle replacement: nodejs/undici#5845).
    await waitFor('the server-side socket to close', () => socketClosed, 4000);
    await client.close();
  });

  it('a body broken mid-way is an error of the stream, never a retry', async () => {
    const server = await filesServer((response) => {
      response.writeHead(200, { 'content-length': '100' });
      response.write('partial');
      setTimeout(() => response.socket?.destroy(), 20);
    });
    const client = createClient(files, { instances: [server.url], timeoutMs: 3000 });
    const answer = await client.download();
    expect((await readError(answer.body)).code).toBe(ErrorCode.CONNECTION_RESET);
    await delay(50);
    expect(server.requests).toHaveLength(1);
    await client.close();
  });

  it('an error status is a rejected call (HttpStatusError), as for buffered endpoints', async () => {
    const server = await filesServer((response) => {
      response.writeHead(404);
      response.end('no such file');
    });
    const client = createClient(files, { instances: [server.url], timeoutMs: 3000 });
    const error = await failure(client.download());
    expect(error).toBeInstanceOf(HttpStatusError);
    expect((error as HttpStatusError).bodyExcerpt).toBe('no such file');
    await client.close();
  });

  it('a gzip body is decoded as it streams with decompress: true', async () => {
    const text = 'streamed '.repeat(10_000);
    const server = await filesServer((response) => {
      response.writeHead(200, { 'content-encoding': 'gzip' });
      response.end(gzipSync(text));
    });
    const client = createClient(files, { instances: [server.url], timeoutMs: 3000, decompress: true });
    const answer = await client.download();
    expect((await readAll(answer.body)).toString()).toBe(text);
    await client.close();
  });
});

describe('raw request bodies', () => {
  it('send strings, bytes, URLSearchParams and streams with their content types', async () => {
    const server = await filesServer(() => {});
    const client = createClient(files, { instances: [server.url], timeoutMs: 3000 });
    await expect(client.upload('plain text')).resolves.toEqual({
      type: 'text/plain;charset=utf-8',
      body: 'plain text',
    });
    await expect(client.upload(new TextEncoder().encode('bytes'))).resolves.toEqual({
      type: 'application/octet-stream',
      body: 'bytes',
    });
    await expect(client.upload(new URLSearchParams({ a: '1', b: 'x y' }))).resolves.toEqual({
      type: 'application/x-www-form-urlencoded;charset=UTF-8',
      body: 'a=1&b=x+y',
    });
    const stream = new ReadableStream<Uint8Array>({
      start(controller) {
        controller.enqueue(new TextEncoder().encode('streamed '));
        controller.enqueue(new TextEncoder().encode('upload'));
        controller.close();
      },
    });
    await expect(client.upload(stream, { headers: { 'content-type': 'text/csv' } })).resolves.toEqual({
      type: 'text/csv',
      body: 'streamed upload',
    });
    const error = await failure(client.upload(42 as unknown as string));
    expect(error.code).toBe(ErrorCode.INVALID_REQUEST);
    await client.close();
  });

  it('a stream body that errors half-way: INVALID_REQUEST, not retried, nothing handled', async () => {
    const server = await filesServer(() => {});
    const client = createClient(files, { instances: [server.url], timeoutMs: 3000 });
    let pulls = 0;
    const stream = new ReadableStream<Uint8Array>({
      async pull(controller) {
        pulls++;
        if (pulls === 3) throw new Error('disk read failed');
        controller.enqueue(new Uint8Array(1024));
        await delay(5);
      },
    });
    const error = await failure(client.upload(stream));
    expect(error.code).toBe(ErrorCode.INVALID_REQUEST);
    expect(error.message).toMatch(/request body stream failed: disk read failed/);
    expect(error.retryable).toBe(false);
    await delay(50);
    expect(server.requests).toHaveLength(0);
    await client.close();
    await waitFor('the server-side socket to close', () => server.openSockets() === 0);
  });

  it('a stream body is retried only when it was certainly not read: connect refused, then sent whole', async () => {
    const server = await filesServer(() => {});
    const refused = `http://127.0.0.1:${await closedPort()}`;
    const client = createClient(files, { instances: [refused, server.url], balancer: 'round-robin', timeoutMs: 3000 });
    const body = () =>
      new ReadableStream<Uint8Array>({
        start(controller) {
          controller.enqueue(new TextEncoder().encode('once'));
          controller.close();
        },
      });
    // Round-robin: one of the two calls starts on the refused instance and is retried.
    await expect(client.upload(body())).resolves.toMatchObject({ body: 'once' });
    await expect(client.upload(body())).resolves.toMatchObject({ body: 'once' });
    expect(server.requests).toHaveLength(2);
    await client.close();
  });

  it('a stream body answered 503 is not sent again', async () => {
    let hits = 0;
    const server = await startServer((_request, response) => {
      hits++;
      response.writeHead(503);
      response.end();
    });
    const other = await startServer((_request, response) => {
      hits++;
      response.writeHead(503);
      response.end();
    });
    const client = createClient(files, { instances: [server.url, other.url], timeoutMs: 3000 });
    const stream = new ReadableStream<Uint8Array>({
      start(controller) {
        controller.enqueue(new TextEncoder().encode('x'));
        controller.close();
      },
    });
    const error = await failure(client.upload(stream));
    expect(error).toBeInstanceOf(HttpStatusError);
    expect(hits).toBe(1);
    await client.close();
  });
});

describe('endpoint options of streams and raw bodies', () => {
  it.each([
    [{ method: 'GET', path: '/x', responseType: 'chunked' }, /endpoint responseType must be 'buffered' or 'stream'/],
    [
      { method: 'GET', path: '/x', responseType: 'stream', response: { '~standard': { validate: () => ({}) } } },
      /endpoint response must be absent with responseType 'stream'/,
    ],
    [{ method: 'POST', path: '/x', body: 'text' }, /endpoint body must be a Standard Schema .* or 'raw'/],
  ])('%o is INVALID_OPTION', (config, message) => {
    let thrown: unknown;
    try {
      endpoint(config as never);
    } catch (error) {
      thrown = error;
    }
    expect(thrown).toMatchObject({ code: ErrorCode.INVALID_OPTION });
    expect((thrown as Error).message).toMatch(message);
  });
});
