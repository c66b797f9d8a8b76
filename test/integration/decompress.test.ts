/**
 * `decompress: true` against real node:http servers on 127.0.0.1: the codings asked for, each
 * decoded (gzip, deflate zlib-wrapped and raw, br, zstd where this Node has it), a bomb cut off
 * at `maxResponseBytes` of decoded bytes, a truncated gzip stream and codings nobody asked for
 * as coded errors. Without the option the client asks for identity (see transport.test.ts).
 */
import zlib from 'node:zlib';
import { describe, expect, it } from 'vitest';
import { createClient, defineService, ErrorCode, endpoint, supportedCodings } from '../../src/index.js';
import { failure } from '../helpers/assert.js';
import { startServer } from '../helpers/server.js';

const docs = defineService({ name: 'docs', endpoints: { get: endpoint({ method: 'GET', path: '/doc' }) } });
const value = { title: 'compressed', words: 'lorem ipsum '.repeat(500) };
const json = Buffer.from(JSON.stringify(value));
const zstdCompress = (zlib as unknown as { zstdCompressSync?: (input: Buffer) => Buffer }).zstdCompressSync;

/** A server that answers with `body` under `encoding`, and remembers the accept-encoding it got. */
async function encodingServer(encoding: string, body: Buffer) {
  const seen: Array<string | undefined> = [];
  const server = await startServer((request, response) => {
    seen.push(request.headers['accept-encoding']);
    response.writeHead(200, { 'content-type': 'application/json', 'content-encoding': encoding });
    response.end(body);
  });
  return { server, seen };
}

describe('decompress', () => {
  it.each([
    ['gzip', zlib.gzipSync(json)],
    ['deflate', zlib.deflateSync(json)],
    ['deflate', zlib.deflateRawSync(json)],
    ['br', zlib.brotliCompressSync(json)],
    ['gzip, br', zlib.brotliCompressSync(zlib.gzipSync(json))],
  ])('decodes %s', async (encoding, body) => {
    const { server, seen } = await encodingServer(encoding, body);
    const client = createClient(docs, { instances: [server.url], decompress: true, retry: false });
    await expect(client.get()).resolves.toEqual(value);
    expect(seen).toEqual([supportedCodings.join(', ')]);
    await client.close();
  });

  it.skipIf(zstdCompress === undefined)('decodes zstd where Node has it', async () => {
    const { server } = await encodingServer('zstd', (zstdCompress as (input: Buffer) => Buffer)(json));
    const client = createClient(docs, { instances: [server.url], decompress: true, retry: false });
    await expect(client.get()).resolves.toEqual(value);
    await client.close();
  });

  it('cuts a bomb off at maxResponseBytes of decoded bytes (RESPONSE_TOO_LARGE)', async () => {
    // 16 MiB of zeros is about 16 KiB of gzip.
    const bomb = zlib.gzipSync(Buffer.alloc(16 * 1024 * 1024));
    const { server } = await encodingServer('gzip', bomb);
    const client = createClient(docs, {
      instances: [server.url],
      decompress: true,
      retry: false,
      maxResponseBytes: 1024 * 1024,
    });
    const before = process.memoryUsage().arrayBuffers;
    const error = await failure(client.get());
    expect(error.code).toBe(ErrorCode.RESPONSE_TOO_LARGE);
    expect(error.message).toMatch(/decoded body exceeds maxResponseBytes \(1048576\)/);
    expect(process.memoryUsage().arrayBuffers - before).toBeLessThan(8 * 1024 * 1024);
    await client.close();
  });

  it('a truncated gzip stream is INVALID_RESPONSE', async () => {
    const whole = zlib.gzipSync(json);
    const { server } = await encodingServer('gzip', whole.subarray(0, whole.length - 20));
    const client = createClient(docs, { instances: [server.url], decompress: true, retry: false });
    const error = await failure(client.get());
    expect(error.code).toBe(ErrorCode.INVALID_RESPONSE);
    expect(error.message).toMatch(/unexpected end of file/);
    await client.close();
  });

  it.each([
    ['compress', true],
    ['gzip', false],
  ])(
    'a content-encoding the client did not ask for (%s, decompress: %s) is INVALID_RESPONSE',
    async (encoding, decompress) => {
      const { server, seen } = await encodingServer(encoding, zlib.gzipSync(json));
      const client = createClient(docs, { instances: [server.url], decompress, retry: false });
      const error = await failure(client.get());
      expect(error.code).toBe(ErrorCode.INVALID_RESPONSE);
      expect(error.message).toMatch(/was not requested/);
      expect(seen).toEqual([decompress ? supportedCodings.join(', ') : 'identity']);
      await client.close();
    },
  );
});
