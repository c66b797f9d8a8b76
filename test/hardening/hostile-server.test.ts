/**
 * The client against hostile or broken servers: invalid HTTP, header floods, endless and
 * trickling bodies, lying Content-Lengths, compression bombs, invalid UTF-8, deeply nested
 * and prototype-polluting JSON, redirects, and sockets that close, stay half-open or answer
 * before being asked. Servers are real (raw `net` for invalid HTTP, node:http otherwise) on
 * 127.0.0.1; nothing is mocked. Every case checks the error's code and message, that the
 * call ends well before its budget, and that after `close()` the server saw every socket
 * close and no timer or socket is left. Retries are off unless a case says otherwise, so
 * server-side counts are exact.
 */
import type { ServerResponse } from 'node:http';
import { gzipSync } from 'node:zlib';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { z } from 'zod';
import {
  type Client,
  type ClientOptions,
  createClient,
  defineService,
  ErrorCode,
  endpoint,
  HttpStatusError,
  ValidationError,
} from '../../src/index.js';
import { failure, timedFailure, waitFor } from '../helpers/assert.js';
import { delay, startServer } from '../helpers/server.js';
import {
  baseline,
  closeWithoutLeaks,
  memoryInUse,
  type RawServer,
  rawOk,
  rawResponse,
  requestSocketsClosed,
  startRawServer,
  trackUnhandled,
} from './hostile-helpers.js';

type Tree = number | Tree[];
const Tree: z.ZodType<Tree> = z.lazy(() => z.union([z.number(), z.array(Tree)]));

const hostile = defineService({
  name: 'hostile',
  endpoints: {
    /** No response schema: the decoded body as is. */
    get: endpoint({ method: 'GET', path: '/thing' }),
    named: endpoint({ method: 'GET', path: '/named/:name', params: z.object({ name: z.string() }) }),
    list: endpoint({ method: 'GET', path: '/list', response: z.array(z.unknown()) }),
    tree: endpoint({ method: 'GET', path: '/tree', response: Tree }),
    loose: endpoint({ method: 'GET', path: '/loose', response: z.looseObject({ name: z.string() }) }),
    record: endpoint({ method: 'GET', path: '/record', response: z.record(z.string(), z.unknown()) }),
    nested: endpoint({
      method: 'GET',
      path: '/nested',
      response: z.object({ name: z.string(), inner: z.looseObject({}), list: z.array(z.looseObject({})) }),
    }),
  },
});
type HostileClient = Client<typeof hostile>;

const clientFor = (server: { url: string }, options: Partial<ClientOptions> = {}): HostileClient =>
  createClient(hostile, { retry: false, instances: [server.url], timeoutMs: 5000, ...options });

let unhandled: ReturnType<typeof trackUnhandled>;
beforeAll(() => {
  unhandled = trackUnhandled();
});
afterEach(async () => {
  // Rejections are reported as unhandled a tick after they happen.
  await delay(10);
  expect(unhandled.seen.splice(0)).toEqual([]);
});
afterAll(() => unhandled.stop());

// --- 1. invalid HTTP ---------------------------------------------------------------------

describe('hostile server: invalid HTTP', () => {
  const cases: Array<{ name: string; response: string; message: string }> = [
    { name: 'a garbage status line', response: 'HELLO WORLD\r\n\r\n', message: 'Expected HTTP/' },
    {
      name: 'garbage after a valid status line',
      response: 'HTTP/1.1 200 OK\r\nx-fine: 1\r\n\u0000\u0001 not a header \u007f\r\n\r\n',
      message: 'Invalid header token',
    },
    {
      name: 'a chunked body with a garbage chunk size',
      response: 'HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nZZZ\r\nhello\r\n0\r\n\r\n',
      message: 'chunk size',
    },
  ];
  for (const { name, response, message } of cases) {
    it(`${name} fails at once with INVALID_RESPONSE ("invalid HTTP response") and the socket is closed`, async () => {
      // The server answers and then keeps its socket open: only the client can end it.
      const server = await startRawServer({ onRequest: (socket) => socket.write(response, 'latin1') });
      const before = baseline();
      const client = clientFor(server);
      const { error, ms } = await timedFailure(client.get());
      expect(error.code).toBe(ErrorCode.INVALID_RESPONSE);
      expect(error.message).toContain(`invalid HTTP response (${server.url})`);
      expect(error.message).toContain('does not match the HTTP/1.1 protocol');
      expect(error.message).toContain(message);
      expect((error.cause as Error).name).toBe('HTTPParserError');
      // A broken instance: another one may answer properly.
      expect(error.retryable).toBe(true);
      expect(error.requestSent).toBe(true);
      expect(ms).toBeLessThan(3000); // the budget is 5 s: no hang
      expect(server.heads).toHaveLength(1);
      // The client drops the connection it cannot parse, while it stays open itself.
      await waitFor('the server to see the socket closed', server.requestSocketsClosed);
      await closeWithoutLeaks(client, server, before);
    });
  }
});

describe('hostile server: broken HTTP and fallbacks', () => {
  it('a fallback answers broken HTTP (the dependency is unwell) but not a schema mismatch (the data is wrong)', async () => {
    const server = await startRawServer({ onRequest: (socket) => socket.write('HELLO WORLD\r\n\r\n', 'latin1') });
    const withFallback = defineService({
      name: 'hostile',
      endpoints: {
        get: endpoint({ method: 'GET', path: '/x', response: z.object({ ok: z.boolean() }), fallback: { ok: false } }),
      },
    });
    const client = createClient(withFallback, { instances: [server.url], retry: false, timeoutMs: 2000 });
    try {
      expect(await client.get()).toEqual({ ok: false });
      expect(client.stats().endpoints.get).toMatchObject({ fallbacks: 1 });
    } finally {
      await client.close();
    }
    const json = await startServer((_request, response) => {
      response.writeHead(200, { 'content-type': 'application/json' });
      response.end('{"ok":"not a boolean"}');
    });
    const schemaClient = createClient(withFallback, { instances: [json.url], retry: false });
    try {
      expect(await failure(schemaClient.get())).toMatchObject({ code: ErrorCode.INVALID_RESPONSE, retryable: false });
    } finally {
      await schemaClient.close();
    }
  });
});

// --- 2. header floods --------------------------------------------------------------------

describe('hostile server: header floods', () => {
  it('5,000 headers exceed undici’s header limit: INVALID_RESPONSE "Headers Overflow", socket closed', async () => {
    let flood = '';
    for (let index = 0; index < 5000; index++) flood += `x-flood-${index}: ${index}\r\n`;
    const server = await startRawServer({
      onRequest: (socket) => socket.write(`HTTP/1.1 200 OK\r\n${flood}content-length: 2\r\n\r\nok`),
    });
    const before = baseline();
    const client = clientFor(server);
    const { error, ms } = await timedFailure(client.get());
    expect(error.code).toBe(ErrorCode.INVALID_RESPONSE);
    expect(error.message).toContain(`invalid HTTP response (${server.url})`);
    expect(error.message).toContain('Headers Overflow');
    expect((error.cause as { code?: string }).code).toBe('UND_ERR_HEADERS_OVERFLOW');
    expect(ms).toBeLessThan(3000);
    await waitFor('the server to see the socket closed', server.requestSocketsClosed);
    await closeWithoutLeaks(client, server, before);
  });

  it('a single 1 MiB header is rejected once past the limit: INVALID_RESPONSE "Headers Overflow", socket closed', async () => {
    const big = 1024 * 1024;
    const server = await startRawServer({
      onRequest: (socket) => socket.write(`HTTP/1.1 200 OK\r\nx-big: ${'a'.repeat(big)}\r\ncontent-length: 0\r\n\r\n`),
    });
    const before = baseline();
    const client = clientFor(server);
    const { error, ms } = await timedFailure(client.get());
    expect(error.code).toBe(ErrorCode.INVALID_RESPONSE);
    expect(error.message).toContain('Headers Overflow');
    expect((error.cause as { code?: string }).code).toBe('UND_ERR_HEADERS_OVERFLOW');
    expect(ms).toBeLessThan(3000);
    await waitFor('the server to see the socket closed', server.requestSocketsClosed);
    await closeWithoutLeaks(client, server, before);
  });
});

// --- 3. a body that never ends -----------------------------------------------------------

describe('hostile server: a body that never ends', () => {
  it('an endless chunked body is cut at maxResponseBytes (64 KiB) with RESPONSE_TOO_LARGE, without buffering it', async () => {
    const limit = 64 * 1024;
    let handedOver = 0; // bytes the server's response accepted (it waits for 'drain': backpressure)
    const server = await startServer((_request, response) => {
      response.writeHead(200, { 'content-type': 'application/octet-stream' }); // no length: chunked
      const chunk = Buffer.alloc(64 * 1024, 0x61);
      const pump = () => {
        while (!response.destroyed) {
          handedOver += chunk.length;
          if (!response.write(chunk)) {
            response.once('drain', pump);
            return;
          }
        }
      };
      pump();
    });
    const carriersClosed = requestSocketsClosed(server);
    const before = baseline();
    const client = clientFor(server, { maxResponseBytes: limit, timeoutMs: 10_000 });
    const memoryBefore = memoryInUse();
    const { error, ms } = await timedFailure(client.get());
    const memoryGrowth = memoryInUse() - memoryBefore;
    expect(error.code).toBe(ErrorCode.RESPONSE_TOO_LARGE);
    expect(error.message).toContain(`response body exceeds maxResponseBytes (${limit})`);
    expect(error.message).toContain(`more than ${limit} bytes received`);
    expect(error.instance).toBe(server.url);
    // Long before the 10 s budget: the limit, not the deadline, ended it.
    expect(ms).toBeLessThan(3000);
    await waitFor('the server to see the socket closed', carriersClosed);
    const sent = handedOver;
    await delay(100);
    expect(handedOver).toBe(sent); // the stream stopped
    // A reader that kept buffering would have let a loopback server write hundreds of MiB
    // in that time; this one took the limit plus what the socket buffers of both ends hold.
    expect(sent).toBeLessThan(32 * 1024 * 1024);
    expect(memoryGrowth).toBeLessThan(32 * 1024 * 1024);
    await closeWithoutLeaks(client, server, before);
  });
});

// --- 4. a body that trickles -------------------------------------------------------------

describe('hostile server: a trickling body', () => {
  it('one byte per second ends at the call’s deadline (300 ms) with DEADLINE_EXCEEDED, not undici’s 300 s body timeout', async () => {
    let bytesWritten = 0;
    const server = await startServer((_request, response) => {
      response.writeHead(200, { 'content-type': 'application/json' });
      const drip = () => {
        response.write('[');
        bytesWritten++;
      };
      drip();
      const timer = setInterval(drip, 1000);
      response.on('close', () => clearInterval(timer));
    });
    const carriersClosed = requestSocketsClosed(server);
    const before = baseline();
    const client = clientFor(server, { timeoutMs: 300 });
    const { error, ms } = await timedFailure(client.get());
    expect(error.code).toBe(ErrorCode.DEADLINE_EXCEEDED);
    expect(error.message).toContain(`deadline exceeded while waiting for the response (${server.url})`);
    expect(error.requestSent).toBe(true);
    expect(bytesWritten).toBeGreaterThanOrEqual(1); // headers and a byte came: the body was under way
    expect(ms).toBeGreaterThan(150);
    expect(ms).toBeLessThan(3000);
    // The trickling socket is destroyed at the deadline, not left for the server to finish.
    await waitFor('the server to see the socket closed', carriersClosed);
    await closeWithoutLeaks(client, server, before);
  });
});

// --- 5. Content-Length mismatch ----------------------------------------------------------

describe('hostile server: Content-Length mismatch', () => {
  it('a shorter body than declared, then close: CONNECTION_RESET ("other side closed"), no hang', async () => {
    const server = await startRawServer({
      onRequest: (socket) =>
        socket.end(
          rawResponse(
            '200 OK',
            [
              ['content-type', 'application/json'],
              ['content-length', 100],
            ],
            '{"id":1,',
          ),
        ),
    });
    const before = baseline();
    const client = clientFor(server);
    const { error, ms } = await timedFailure(client.get());
    expect(error.code).toBe(ErrorCode.CONNECTION_RESET);
    expect(error.message).toContain(`connection reset (${server.url})`);
    expect(error.message).toContain('other side closed');
    expect(error.retryable).toBe(true);
    expect(error.requestSent).toBe(true);
    expect(ms).toBeLessThan(3000);
    await closeWithoutLeaks(client, server, before);
  });

  it('a longer body than declared: the declared bytes are the answer, the rest never reaches the next call', async () => {
    const server = await startRawServer({
      onRequest: (socket, _head, index) =>
        socket.write(Buffer.concat([rawOk(`r${index}`, 'text/plain'), Buffer.from('HTTP/')])),
    });
    // Declared 2 bytes, then "HTTP/" more: the start of a response nobody asked for.
    const before = baseline();
    const client = clientFor(server);
    expect(await client.get()).toBe('r0');
    // The surplus arrived on a connection with no request outstanding: undici dropped it.
    await waitFor('the server to see the socket closed', server.requestSocketsClosed);
    expect(await client.get()).toBe('r0'); // first answer of a new connection, not leftovers
    expect(server.connections()).toBe(2);
    expect(server.heads).toHaveLength(2);
    await closeWithoutLeaks(client, server, before);
  });
});

// --- 6. compression ----------------------------------------------------------------------

describe('hostile server: content-encoding', () => {
  const tenMiB = 10 * 1024 * 1024;
  const bomb = gzipSync(Buffer.alloc(tenMiB));

  it('decompress off (the default): a gzip bomb (10 MiB of zeros in ~10 KiB) is never inflated, the call fails with INVALID_RESPONSE naming the encoding; with decompress on it stops at maxResponseBytes', async () => {
    expect(bomb.length).toBeLessThan(64 * 1024);
    const types: Record<string, string | undefined> = {
      '/named/json': 'application/json',
      '/named/text': 'text/plain; charset=utf-8',
      '/named/bytes': undefined,
    };
    const server = await startRawServer({
      onRequest: (socket, head) => {
        const path = head.split(' ')[1] ?? '';
        const type = types[path];
        const headers: Array<[string, string | number]> = [
          ['content-encoding', 'gzip'],
          ['content-length', bomb.length],
        ];
        if (type !== undefined) headers.push(['content-type', type]);
        socket.write(rawResponse('200 OK', headers, bomb));
      },
    });
    const before = baseline();
    // 1 MiB: an inflating client would fail with RESPONSE_TOO_LARGE (or hold 10 MiB) instead.
    const client = clientFor(server, { maxResponseBytes: 1024 * 1024 });
    const memoryBefore = memoryInUse();
    for (const name of ['json', 'text', 'bytes']) {
      const error = await failure(client.named({ name }));
      expect(error.code, name).toBe(ErrorCode.INVALID_RESPONSE);
      expect(error).toBeInstanceOf(ValidationError);
      expect(error.message, name).toContain(
        'hostile.named: invalid response: content-encoding "gzip" was not requested: the client asked for identity',
      );
      expect(error.retryable).toBe(false);
    }
    expect(memoryInUse() - memoryBefore).toBeLessThan(tenMiB / 2);
    expect(server.heads).toHaveLength(3);
    expect(server.heads.every((head) => /\r\naccept-encoding: identity(\r\n|$)/i.test(head))).toBe(true);
    await client.close();

    // decompress on: the bomb is inflated only up to maxResponseBytes of decoded bytes.
    const inflating = clientFor(server, { maxResponseBytes: 1024 * 1024, decompress: true });
    for (const name of ['json', 'text', 'bytes']) {
      const error = await failure(inflating.named({ name }));
      expect(error.code, name).toBe(ErrorCode.RESPONSE_TOO_LARGE);
      expect(error.message, name).toContain('decoded body exceeds maxResponseBytes (1048576)');
    }
    expect(memoryInUse() - memoryBefore).toBeLessThan(tenMiB / 2);
    expect(server.heads).toHaveLength(6);
    await closeWithoutLeaks(inflating, server, before);
  });

  it('content-encoding identity is plain data, and an empty compressed body is nothing to decode', async () => {
    const server = await startRawServer({
      onRequest: (socket, head) =>
        socket.write(
          head.startsWith('GET /named/empty')
            ? rawResponse('204 No Content', [['content-encoding', 'gzip']])
            : rawOk('{"fine":true}', 'application/json', [['content-encoding', 'Identity']]),
        ),
    });
    const before = baseline();
    const client = clientFor(server);
    expect(await client.named({ name: 'identity' })).toEqual({ fine: true });
    expect(await client.named({ name: 'empty' })).toBeUndefined();
    await closeWithoutLeaks(client, server, before);
  });

  it('a compressed error body is named in the HTTP_STATUS error, not shown as mojibake', async () => {
    const compressed = gzipSync(Buffer.from('{"error":"overloaded"}'));
    const server = await startRawServer({
      onRequest: (socket) =>
        socket.write(
          rawResponse(
            '503 Service Unavailable',
            [
              ['content-type', 'application/json'],
              ['content-encoding', 'gzip'],
              ['content-length', compressed.length],
            ],
            compressed,
          ),
        ),
    });
    const before = baseline();
    const client = clientFor(server, { retry: false });
    const error = await failure(client.named({ name: 'busy' }));
    expect(error).toBeInstanceOf(HttpStatusError);
    expect((error as HttpStatusError).bodyExcerpt).toBe(
      `[${compressed.length} bytes of gzip-encoded body, not decoded]`,
    );
    expect(error.message).toBe(`HTTP 503: [${compressed.length} bytes of gzip-encoded body, not decoded]`);
    await closeWithoutLeaks(client, server, before);
  });
});

// --- 7. invalid UTF-8 --------------------------------------------------------------------

describe('hostile server: invalid UTF-8', () => {
  const json = (...parts: Array<string | number[]>) =>
    Buffer.concat(parts.map((part) => (typeof part === 'string' ? Buffer.from(part) : Buffer.from(part))));
  const bodies: Record<string, Buffer> = {
    lone: json('{"name":"a', [0xff], 'b"}'),
    overlong: json('{"name":"', [0xc0, 0xaf], '"}'), // "/" in two bytes
    surrogate: json('{"name":"', [0xed, 0xa0, 0x80], '"}'), // a UTF-16 surrogate, CESU-8 style
    truncated: json('{"name":"', [0xe2, 0x82], '"}'), // the first two bytes of "€"
  };

  it('invalid UTF-8 anywhere in a JSON body fails with INVALID_RESPONSE ("not valid UTF-8"), with or without a schema', async () => {
    const server = await startServer((request, response: ServerResponse) => {
      const name = /^\/(?:named|loose)\/?(\w*)/.exec(request.url ?? '')?.[1] || 'lone';
      const body = bodies[name] as Buffer;
      response.writeHead(200, { 'content-type': 'application/json; charset=utf-8', 'content-length': body.length });
      response.end(body);
    });
    const before = baseline();
    const client = clientFor(server);
    for (const name of Object.keys(bodies)) {
      const error = await failure(client.named({ name }));
      expect(error.code, name).toBe(ErrorCode.INVALID_RESPONSE);
      expect(error).toBeInstanceOf(ValidationError);
      expect((error as ValidationError).part).toBe('response');
      expect(error.message, name).toBe('hostile.named: invalid response: JSON body is not valid UTF-8');
    }
    // Through a response schema too: decoding fails before the schema sees anything.
    const schemaError = await failure(client.loose());
    expect(schemaError.code).toBe(ErrorCode.INVALID_RESPONSE);
    expect(schemaError.message).toContain('hostile.loose: invalid response: JSON body is not valid UTF-8');
    await closeWithoutLeaks(client, server, before);
  });

  it('a text/plain body is decoded leniently: invalid bytes become U+FFFD; a JSON body with a BOM is rejected', async () => {
    const server = await startServer((request, response: ServerResponse) => {
      if (request.url === '/named/bom') {
        const body = Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), Buffer.from('{"a":1}')]);
        response.writeHead(200, { 'content-type': 'application/json', 'content-length': body.length });
        response.end(body);
        return;
      }
      const body = Buffer.from([0x61, 0xff, 0x62]);
      response.writeHead(200, { 'content-type': 'text/plain', 'content-length': body.length });
      response.end(body);
    });
    const before = baseline();
    const client = clientFor(server);
    expect(await client.named({ name: 'text' })).toBe('a\ufffdb');
    const bom = await failure(client.named({ name: 'bom' }));
    expect(bom.code).toBe(ErrorCode.INVALID_RESPONSE);
    expect(bom.message).toContain('hostile.named: invalid response');
    expect(bom.cause).toBeInstanceOf(SyntaxError);
    await closeWithoutLeaks(client, server, before);
  });
});

// --- 8. deeply nested JSON ---------------------------------------------------------------

describe('hostile server: deeply nested JSON', () => {
  const depth = 100_000;
  const deepArrays = '['.repeat(depth) + ']'.repeat(depth);
  const deepObjects = `${'{"a":'.repeat(depth)}1${'}'.repeat(depth)}`;
  const unclosed = '['.repeat(depth);

  /** Depth of nested arrays or `{a: ...}` objects, iteratively (recursion is what is tested). */
  function depthOf(value: unknown): number {
    let levels = 0;
    let current = value;
    while (typeof current === 'object' && current !== null) {
      levels++;
      current = Array.isArray(current) ? current[0] : (current as { a?: unknown }).a;
    }
    return levels;
  }

  async function deepServer(): Promise<RawServer> {
    return startRawServer({
      onRequest: (socket, head) => {
        const path = head.split(' ')[1] ?? '';
        const body = path === '/named/objects' ? deepObjects : path === '/named/unclosed' ? unclosed : deepArrays;
        socket.write(rawOk(body, 'application/json'));
      },
    });
  }

  it('100,000 levels of [ (and of {"a":) parse without a crash; unclosed ones fail with INVALID_RESPONSE', async () => {
    const server = await deepServer();
    const before = baseline();
    const client = clientFor(server);
    expect(depthOf(await client.get())).toBe(depth);
    expect(depthOf(await client.named({ name: 'objects' }))).toBe(depth);
    const error = await failure(client.named({ name: 'unclosed' }));
    expect(error.code).toBe(ErrorCode.INVALID_RESPONSE);
    expect(error.message).toContain('hostile.named: invalid response: Unexpected end of JSON input');
    await closeWithoutLeaks(client, server, before);
  });

  it('with a zod response schema: z.array(z.unknown()) accepts the deep value', async () => {
    const server = await deepServer();
    const before = baseline();
    const client = clientFor(server);
    expect(depthOf(await client.list())).toBe(depth);
    await closeWithoutLeaks(client, server, before);
  });

  it('a recursive zod schema that overflows the stack on the body is an INVALID_RESPONSE with the RangeError as cause; the client survives', async () => {
    const server = await deepServer();
    const before = baseline();
    const client = clientFor(server);
    const error = await failure(client.tree());
    expect(error).toBeInstanceOf(ValidationError);
    expect(error).toMatchObject({ code: ErrorCode.INVALID_RESPONSE, part: 'response', retryable: false });
    expect(error.message).toMatch(/invalid response: schema threw: Maximum call stack size exceeded/);
    expect(error.cause).toBeInstanceOf(RangeError);
    // Still alive, still usable.
    expect(depthOf(await client.get())).toBe(depth);
    await closeWithoutLeaks(client, server, before);
  });
});

// --- 9. __proto__ keys -------------------------------------------------------------------

describe('hostile server: __proto__ keys in JSON', () => {
  const payload = JSON.stringify({ name: 'x', inner: {}, list: [{}] })
    // JSON.stringify would not write these keys; splice them in as a server would send them.
    .replace('{"name"', '{"__proto__":{"polluted":true},"constructor":{"prototype":{"polluted":true}},"name"')
    .replace('"inner":{}', '"inner":{"__proto__":{"polluted":true}}')
    .replace('"list":[{}]', '"list":[{"__proto__":{"polluted":true}}]');

  function expectNoPollution(value: unknown, what: string): void {
    const result = value as { polluted?: unknown; inner: { polluted?: unknown }; list: Array<{ polluted?: unknown }> };
    expect(Object.getPrototypeOf(result), what).toBe(Object.prototype);
    expect(result.polluted, what).toBeUndefined();
    if (result.inner !== undefined) {
      expect(Object.getPrototypeOf(result.inner), what).toBe(Object.prototype);
      expect(result.inner.polluted, what).toBeUndefined();
    }
    if (Array.isArray(result.list)) {
      expect(Object.getPrototypeOf(result.list[0]), what).toBe(Object.prototype);
      expect(result.list[0]?.polluted, what).toBeUndefined();
    }
    expect(({} as { polluted?: unknown }).polluted, what).toBeUndefined();
    expect(Object.hasOwn(Object.prototype, 'polluted'), what).toBe(false);
    expect('polluted' in Object, what).toBe(false);
  }

  it('no schema, loose object, record and nested loose schemas: no prototype is altered, Object.prototype unchanged', async () => {
    expect(payload).toContain('"__proto__":{"polluted":true}');
    const server = await startRawServer({ onRequest: (socket) => socket.write(rawOk(payload, 'application/json')) });
    const prototypeKeys = Reflect.ownKeys(Object.prototype);
    const before = baseline();
    const client = clientFor(server);

    const plain = (await client.get()) as Record<string, unknown>;
    expectNoPollution(plain, 'no schema');
    // JSON.parse keeps "__proto__" as an own data property: data, not a prototype.
    expect(Object.hasOwn(plain, '__proto__')).toBe(true);
    expect(Object.getOwnPropertyDescriptor(plain, '__proto__')?.value).toEqual({ polluted: true });
    expect(plain.constructor).toEqual({ prototype: { polluted: true } });
    expect(Object.getPrototypeOf(plain.constructor)).toBe(Object.prototype);

    expectNoPollution(await client.loose(), 'z.looseObject');
    expectNoPollution(await client.record(), 'z.record');
    expectNoPollution(await client.nested(), 'nested z.looseObject');
    expect(Reflect.ownKeys(Object.prototype)).toEqual(prototypeKeys);
    await closeWithoutLeaks(client, server, before);
  });
});

// --- 10. redirects -----------------------------------------------------------------------

describe('hostile server: redirects are not followed (the default)', () => {
  it('a 302 loop (Location: itself) is one request and an HttpStatusError 302, even with retries on', async () => {
    const server = await startServer((request, response) => {
      response.writeHead(302, { location: request.url ?? '/', 'content-type': 'text/plain' });
      response.end('moved, try again');
    });
    const before = baseline();
    // Default retry settings: a 3xx is not retryable, so nothing is re-sent either.
    const client = createClient(hostile, { instances: [server.url], timeoutMs: 5000 });
    const error = await failure(client.get());
    expect(error).toBeInstanceOf(HttpStatusError);
    expect(error.code).toBe(ErrorCode.HTTP_STATUS);
    expect((error as HttpStatusError).status).toBe(302);
    expect(error.message).toMatch(/^HTTP 302\b/);
    expect(error.message).toContain('moved, try again');
    expect((error as HttpStatusError).bodyExcerpt).toBe('moved, try again');
    expect(error.retryable).toBe(false);
    await delay(100);
    expect(server.requests).toHaveLength(1);
    await closeWithoutLeaks(client, server, before);
  });

  it('301, 302, 303, 307 and 308 to another host: the other host never sees a request', async () => {
    const elsewhere = await startServer((_request, response) => {
      response.end('stolen');
    });
    const server = await startServer((request, response) => {
      const status = Number(/\/named\/(\d+)/.exec(request.url ?? '')?.[1]);
      response.writeHead(status, { location: `${elsewhere.url}/collect?from=${status}` });
      response.end();
    });
    const before = baseline();
    const client = clientFor(server);
    const statuses = [301, 302, 303, 307, 308];
    for (const status of statuses) {
      const error = await failure(client.named({ name: String(status) }));
      expect(error).toBeInstanceOf(HttpStatusError);
      expect(error.code).toBe(ErrorCode.HTTP_STATUS);
      expect((error as HttpStatusError).status).toBe(status);
      expect(error.message).toMatch(new RegExp(`^HTTP ${status}\\b`));
      expect(error.retryable).toBe(false);
    }
    await delay(100);
    expect(server.requests).toHaveLength(statuses.length);
    expect(elsewhere.requests).toHaveLength(0);
    await closeWithoutLeaks(client, server, before);
    expect(elsewhere.openSockets()).toBe(0);
  });
});

// --- 11. sockets that misbehave ----------------------------------------------------------

describe('hostile server: sockets that close, stay half-open or answer unasked', () => {
  it('accept then close at once: CONNECTION_RESET; with a retry, a second fresh connection, then the same error', async () => {
    const server = await startRawServer({ onConnection: (socket) => socket.destroy() });
    const before = baseline();
    const client = clientFor(server);
    const { error, ms } = await timedFailure(client.get());
    expect(error.code).toBe(ErrorCode.CONNECTION_RESET);
    expect(error.message).toContain(`connection reset (${server.url})`);
    expect(error.message).toContain('other side closed');
    expect(ms).toBeLessThan(3000);
    expect(server.connections()).toBe(1);
    await closeWithoutLeaks(client, server, before);

    const retrying = createClient(hostile, { instances: [server.url], timeoutMs: 5000 });
    const again = await failure(retrying.get());
    expect(again.code).toBe(ErrorCode.CONNECTION_RESET);
    expect(again.attempt).toBe(2);
    expect(server.connections()).toBe(3); // one retry, on a connection of its own; no loop
    await closeWithoutLeaks(retrying, server, before);
  });

  it('a response then a half-closed socket (server FIN, reads on): the call succeeds and the client closes its end', async () => {
    const server = await startRawServer({
      allowHalfOpen: true,
      onRequest: (socket, _head, index) => socket.end(rawOk(`ok${index}`)),
    });
    const before = baseline();
    const client = clientFor(server);
    expect(await client.get()).toBe('ok0');
    // The client does not keep a half-closed socket in its pool: the server sees it close.
    await waitFor('the server to see the half-closed socket closed', server.requestSocketsClosed);
    expect(await client.get()).toBe('ok0');
    expect(server.connections()).toBe(2);
    await closeWithoutLeaks(client, server, before);
  });

  it('a response, then a connection kept open that never answers again: the next call on it ends at its deadline', async () => {
    const server = await startRawServer({
      onRequest: (socket, _head, index) => {
        if (index === 0) socket.write(rawOk('first'));
      },
    });
    const before = baseline();
    // One socket per instance, so the second call is sure to go over the kept-open connection.
    const client = clientFor(server, { timeoutMs: 300, connections: 1 });
    expect(await client.get()).toBe('first');
    const { error, ms } = await timedFailure(client.get());
    expect(error.code).toBe(ErrorCode.DEADLINE_EXCEEDED);
    expect(error.message).toContain('deadline exceeded while waiting for the response');
    expect(ms).toBeLessThan(3000);
    expect(server.heads).toHaveLength(2);
    expect(server.connections()).toBe(1);
    // The stuck connection is dropped, not reused: the third call gets an answer on a new one.
    expect(await client.get()).toBe('first');
    expect(server.connections()).toBe(2);
    await closeWithoutLeaks(client, server, before);
  });

  it('a response delimited by close on a connection the server never closes ends at the deadline', async () => {
    const server = await startRawServer({
      onRequest: (socket) => socket.write(rawResponse('200 OK', [['content-type', 'text/plain']], 'partial')),
    });
    const before = baseline();
    const client = clientFor(server, { timeoutMs: 300 });
    const { error, ms } = await timedFailure(client.get());
    expect(error.code).toBe(ErrorCode.DEADLINE_EXCEEDED);
    expect(error.message).toContain('deadline exceeded while waiting for the response');
    expect(ms).toBeLessThan(3000);
    await waitFor('the server to see the socket closed', server.requestSocketsClosed);
    await closeWithoutLeaks(client, server, before);
  });

  it('a response written on connect, before the request: taken as the answer (HTTP/1.1 cannot tell), the real answer never leaks into the next call', async () => {
    const server = await startRawServer({
      onConnection: (socket) => socket.write(rawOk('unasked')),
      onRequest: (socket, _head, index) => socket.write(rawOk(`answer${index}`)),
    });
    const before = baseline();
    const client = clientFor(server);
    expect(await client.get()).toBe('unasked');
    // The real answer came on a connection with nothing outstanding: undici dropped the socket.
    await waitFor('the server to see the socket closed', server.requestSocketsClosed);
    expect(await client.get()).toBe('unasked');
    expect(server.connections()).toBe(2);
    await closeWithoutLeaks(client, server, before);
  });

  it('an unsolicited response on an idle keep-alive connection: the socket is dropped, the next call gets its own answer', async () => {
    const server = await startRawServer({
      onRequest: (socket, _head, index) => {
        socket.write(rawOk(`answer${index}`));
        if (index === 0) setTimeout(() => socket.write(rawOk('unsolicited')), 20);
      },
    });
    const before = baseline();
    const client = clientFor(server);
    expect(await client.get()).toBe('answer0');
    await waitFor('the server to see the poisoned socket closed', server.requestSocketsClosed);
    expect(await client.get()).toBe('answer0');
    expect(server.connections()).toBe(2);
    await closeWithoutLeaks(client, server, before);
  });
});
