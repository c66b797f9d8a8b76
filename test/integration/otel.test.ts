/**
 * `telescope-http/otel` end to end: real telescope clients against real node:http servers on
 * 127.0.0.1, with the OpenTelemetry SDK registered globally (BasicTracerProvider with an
 * in-memory exporter, AsyncLocalStorageContextManager). Checks the span tree (call span, one
 * span per attempt, the caller's active span as parent), the `traceparent` each server
 * receives, error statuses, hedged attempts, propagator choices, and that stop() detaches.
 */
import { channel } from 'node:diagnostics_channel';
import {
  context,
  createTraceState,
  propagation,
  type SpanContext,
  SpanKind,
  SpanStatusCode,
  type TextMapPropagator,
  trace,
} from '@opentelemetry/api';
import { AsyncLocalStorageContextManager } from '@opentelemetry/context-async-hooks';
import {
  BasicTracerProvider,
  InMemorySpanExporter,
  type ReadableSpan,
  SimpleSpanProcessor,
} from '@opentelemetry/sdk-trace-base';
import { afterAll, beforeAll, beforeEach, describe, expect, it, onTestFinished } from 'vitest';
import { type Client, type ClientOptions, createClient, ErrorCode } from '../../src/index.js';
import { formatTraceparent, type OpenTelemetryOptions, openTelemetry } from '../../src/otel/index.js';
import { failure } from '../helpers/assert.js';
import { movies } from '../helpers/movies.js';
import { closedPort, delay, type Handler, sendJson, startServer, type TestServer } from '../helpers/server.js';

// --- SDK, registered as global ---------------------------------------------------------------

const exporter = new InMemorySpanExporter();
const provider = new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(exporter)] });

beforeAll(() => {
  context.setGlobalContextManager(new AsyncLocalStorageContextManager().enable());
  trace.setGlobalTracerProvider(provider);
});

afterAll(async () => {
  await provider.shutdown();
  trace.disable();
  context.disable();
  propagation.disable();
});

beforeEach(() => exporter.reset());

// --- helpers ---------------------------------------------------------------------------------

const traceparentPattern = /^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$/;

/** Trace id and span id of the `traceparent` a server received, checked to be well-formed. */
function received(request: TestServer['requests'][number]): { traceId: string; spanId: string; flags: string } {
  const header = request.headers.traceparent;
  expect(typeof header, 'traceparent header').toBe('string');
  const match = traceparentPattern.exec(header as string);
  expect(match, `traceparent ${String(header)}`).not.toBeNull();
  expect(match![1]).not.toBe('0'.repeat(32));
  expect(match![2]).not.toBe('0'.repeat(16));
  return { traceId: match![1]!, spanId: match![2]!, flags: match![3]! };
}

function spansOf(spans: ReadableSpan[]) {
  const calls = spans.filter((span) => span.kind === SpanKind.INTERNAL && span.name.startsWith('movies.'));
  const attempts = spans.filter((span) => span.kind === SpanKind.CLIENT);
  return { calls, attempts };
}

const idOf = (span: ReadableSpan) => span.spanContext().spanId;
const isChildOf = (child: ReadableSpan, parent: { spanContext(): SpanContext }) =>
  child.parentSpanContext?.spanId === parent.spanContext().spanId &&
  child.spanContext().traceId === parent.spanContext().traceId;

/** Starts the integration; stopped after the test. */
function start(options?: OpenTelemetryOptions): void {
  const tracing = openTelemetry(options);
  onTestFinished(() => tracing.stop());
}

function moviesClient(urls: string[], options: Partial<ClientOptions> = {}): Client<typeof movies> {
  const client = createClient(movies, { instances: urls, breaker: false, ...options });
  onTestFinished(() => client.close());
  return client;
}

const answer: Handler = (request, response) => {
  const id = Number(/^\/movies\/(\d+)$/.exec(request.url ?? '')?.[1] ?? 0);
  sendJson(response, 200, { id, title: 'Heat' });
};

const unavailable: Handler = (_request, response) => {
  response.writeHead(503, { 'content-type': 'text/plain' });
  response.end('unavailable');
};

/** 503 for the first `failures` requests, then the movie. */
function failingFirst(failures: number): Handler {
  let seen = 0;
  return (request, response, body) => (seen++ < failures ? unavailable : answer)(request, response, body);
}

// --- tests -----------------------------------------------------------------------------------

describe('openTelemetry: spans and propagation', () => {
  it('makes a call span and an attempt span, and sends the attempt span as traceparent', async () => {
    start();
    const server = await startServer(answer);
    const client = moviesClient([server.url]);
    await client.getMovie({ id: 7 });

    const spans = exporter.getFinishedSpans();
    const { calls, attempts } = spansOf(spans);
    expect(spans).toHaveLength(2);
    expect(calls).toHaveLength(1);
    expect(attempts).toHaveLength(1);
    const [call, attempt] = [calls[0]!, attempts[0]!];

    expect(call.name).toBe('movies.getMovie');
    expect(call.parentSpanContext).toBeUndefined(); // no span was active around the call
    expect(call.status.code).toBe(SpanStatusCode.UNSET);
    expect(call.instrumentationScope.name).toBe('telescope');
    expect(call.attributes).toMatchObject({
      'telescope.service': 'movies',
      'telescope.endpoint': 'getMovie',
      'telescope.attempts': 1,
    });

    expect(attempt.name).toBe('GET movies.getMovie');
    expect(isChildOf(attempt, call)).toBe(true);
    expect(attempt.status.code).toBe(SpanStatusCode.UNSET);
    expect(attempt.attributes).toMatchObject({
      'http.request.method': 'GET',
      'server.address': '127.0.0.1',
      'server.port': server.port,
      'url.full': `${server.url}/movies/7`,
      'telescope.attempt': 1,
      'http.response.status_code': 200,
    });
    expect(attempt.attributes['http.request.resend_count']).toBeUndefined();
    expect(attempt.attributes['telescope.attempt.timeout_ms']).toBeGreaterThan(0);
    expect(attempt.attributes['telescope.attempt.timeout_ms']).toBeLessThanOrEqual(1000);
    // The attempt ends inside the call.
    expect(call.startTime <= attempt.startTime).toBe(true);

    expect(server.requests).toHaveLength(1);
    const header = received(server.requests[0]!);
    expect(header.traceId).toBe(call.spanContext().traceId);
    expect(header.spanId).toBe(idOf(attempt));
    expect(header.flags).toBe('01'); // sampled
    expect(server.requests[0]!.headers.traceparent).toBe(formatTraceparent(attempt.spanContext()));
  });

  it('a retried call: two attempt spans under one call span, each sent as its own traceparent', async () => {
    start();
    const server = await startServer(failingFirst(1));
    const client = moviesClient([server.url], { retry: { maxRetries: 1, budget: false } });
    await client.getMovie({ id: 7 });

    const { calls, attempts } = spansOf(exporter.getFinishedSpans());
    expect(calls).toHaveLength(1);
    expect(attempts).toHaveLength(2);
    const call = calls[0]!;
    const [first, second] = [...attempts].sort((a, b) =>
      Number(a.attributes['telescope.attempt']) < Number(b.attributes['telescope.attempt']) ? -1 : 1,
    ) as [ReadableSpan, ReadableSpan];
    expect(isChildOf(first, call)).toBe(true);
    expect(isChildOf(second, call)).toBe(true);
    expect(idOf(first)).not.toBe(idOf(second));
    expect(first.attributes['telescope.attempt']).toBe(1);
    expect(first.status.code).toBe(SpanStatusCode.ERROR); // it failed: a retry followed
    expect(second.attributes).toMatchObject({
      'telescope.attempt': 2,
      'http.request.resend_count': 1,
      'http.response.status_code': 200,
    });
    expect(second.status.code).toBe(SpanStatusCode.UNSET);
    expect(call.status.code).toBe(SpanStatusCode.UNSET);
    expect(call.attributes['telescope.attempts']).toBe(2);

    expect(server.requests).toHaveLength(2);
    const headers = server.requests.map(received);
    expect(headers.map((header) => header.traceId)).toEqual([call.spanContext().traceId, call.spanContext().traceId]);
    expect(headers.map((header) => header.spanId)).toEqual([idOf(first), idOf(second)]);
  });

  it('a failed call: ERROR status with the error code on the call span and on the attempt span', async () => {
    start();
    const server = await startServer(unavailable);
    const client = moviesClient([server.url], { retry: false });
    const error = await failure(client.getMovie({ id: 7 }));
    expect(error.code).toBe(ErrorCode.HTTP_STATUS);

    const { calls, attempts } = spansOf(exporter.getFinishedSpans());
    expect(calls).toHaveLength(1);
    expect(attempts).toHaveLength(1);
    const [call, attempt] = [calls[0]!, attempts[0]!];
    expect(call.status.code).toBe(SpanStatusCode.ERROR);
    expect(call.status.message).toBe(error.message);
    expect(call.attributes['error.type']).toBe('HTTP_STATUS');
    expect(call.events.some((event) => event.name === 'exception')).toBe(true);
    expect(attempt.status.code).toBe(SpanStatusCode.ERROR);
    expect(attempt.attributes).toMatchObject({ 'error.type': 'HTTP_STATUS', 'http.response.status_code': 503 });
    expect(received(server.requests[0]!).spanId).toBe(idOf(attempt));

    // A connection that is refused: no status code, the code as error.type.
    exporter.reset();
    const refused = moviesClient([`http://127.0.0.1:${await closedPort()}`], { retry: false });
    expect((await failure(refused.getMovie({ id: 1 }))).code).toBe(ErrorCode.CONNECT_FAILED);
    const failed = spansOf(exporter.getFinishedSpans());
    expect(failed.calls[0]?.attributes['error.type']).toBe('CONNECT_FAILED');
    expect(failed.attempts[0]?.attributes['error.type']).toBe('CONNECT_FAILED');
    expect(failed.attempts[0]?.attributes['http.response.status_code']).toBeUndefined();
  });

  it("makes the caller's active span the call span's parent, for concurrent callers too", async () => {
    start();
    const server = await startServer((request, response, body) => {
      // Answers after a while, so that the two callers' calls overlap.
      setTimeout(() => answer(request, response, body), 30);
    });
    const client = moviesClient([server.url]);
    const tracer = trace.getTracer('test');
    const parents = await Promise.all(
      [1, 2].map((id) =>
        tracer.startActiveSpan(`caller-${id}`, async (parent) => {
          await delay(id); // the calls start in another tick, in their caller's context
          await client.getMovie({ id });
          parent.end();
          return parent;
        }),
      ),
    );

    const spans = exporter.getFinishedSpans();
    const { calls, attempts } = spansOf(spans);
    expect(calls).toHaveLength(2);
    expect(attempts).toHaveLength(2);
    for (const [index, parent] of parents.entries()) {
      const id = index + 1;
      const attempt = attempts.find((span) => span.attributes['url.full'] === `${server.url}/movies/${id}`)!;
      const call = calls.find((span) => isChildOf(attempt, span))!;
      expect(call, `call span of caller ${id}`).toBeDefined();
      expect(isChildOf(call, parent)).toBe(true);
      const request = server.requests.find((item) => item.url === `/movies/${id}`)!;
      expect(received(request)).toMatchObject({ traceId: parent.spanContext().traceId, spanId: idOf(attempt) });
    }
    expect(parents[0]!.spanContext().traceId).not.toBe(parents[1]!.spanContext().traceId);
  });

  it('hedged attempts: two attempt spans under the call span, the loser cancelled, each traceparent its own', async () => {
    start();
    let seen = 0;
    // The first request (to whichever instance) is slow; the hedge answers at once.
    const handler: Handler = (request, response, body) => {
      if (seen++ === 0) setTimeout(() => answer(request, response, body), 400);
      else answer(request, response, body);
    };
    const servers = [await startServer(handler), await startServer(handler)];
    const client = moviesClient(
      servers.map((server) => server.url),
      { hedge: { delayMs: 50 }, retry: { maxRetries: 1, budget: false } },
    );
    await client.getMovie({ id: 7 });

    const { calls, attempts } = spansOf(exporter.getFinishedSpans());
    expect(calls).toHaveLength(1);
    expect(attempts).toHaveLength(2);
    const call = calls[0]!;
    for (const attempt of attempts) expect(isChildOf(attempt, call)).toBe(true);
    const winner = attempts.find((span) => span.attributes['telescope.attempt'] === 2)!;
    const loser = attempts.find((span) => span.attributes['telescope.attempt'] === 1)!;
    expect(winner.attributes['http.response.status_code']).toBe(200);
    expect(loser.attributes['telescope.attempt.cancelled']).toBe(true);
    expect(loser.attributes['url.full']).not.toBe(winner.attributes['url.full']);
    // Each server saw the span id of the attempt that went to it, although the attempts share
    // one request object (the hedge wrote its own traceparent after the first had been sent).
    for (const attempt of attempts) {
      const server = servers.find((item) => attempt.attributes['url.full'] === `${item.url}/movies/7`)!;
      expect(server.requests).toHaveLength(1);
      expect(received(server.requests[0]!)).toMatchObject({
        traceId: call.spanContext().traceId,
        spanId: idOf(attempt),
      });
    }
  });
});

describe('openTelemetry: options', () => {
  const custom: TextMapPropagator = {
    inject(traceContext, carrier, setter) {
      const spanContext = trace.getSpanContext(traceContext)!;
      setter.set(carrier, 'X-Custom-Trace', `${spanContext.traceId}:${spanContext.spanId}`);
    },
    extract: (traceContext) => traceContext,
    fields: () => ['x-custom-trace'],
  };

  it('uses the given propagator (header names lower-cased), and the given tracer', async () => {
    start({ propagator: custom, tracer: provider.getTracer('mine') });
    const server = await startServer(answer);
    await moviesClient([server.url]).getMovie({ id: 1 });
    const { calls, attempts } = spansOf(exporter.getFinishedSpans());
    expect(calls[0]?.instrumentationScope.name).toBe('mine');
    const headers = server.requests[0]!.headers;
    expect(headers.traceparent).toBeUndefined();
    expect(headers['x-custom-trace']).toBe(`${calls[0]!.spanContext().traceId}:${idOf(attempts[0]!)}`);
  });

  it('uses the global propagator when one is registered', async () => {
    propagation.setGlobalPropagator(custom);
    onTestFinished(() => propagation.disable());
    start();
    const server = await startServer(answer);
    await moviesClient([server.url]).getMovie({ id: 1 });
    const { attempts } = spansOf(exporter.getFinishedSpans());
    expect(server.requests[0]!.headers['x-custom-trace']).toContain(idOf(attempts[0]!));
    expect(server.requests[0]!.headers.traceparent).toBeUndefined();
  });

  it('propagate: false makes spans but sends no header; tracestate travels with traceparent', async () => {
    start({ propagate: false });
    const server = await startServer(answer);
    const client = moviesClient([server.url]);
    await client.getMovie({ id: 1 });
    expect(spansOf(exporter.getFinishedSpans()).attempts).toHaveLength(1);
    expect(server.requests[0]!.headers.traceparent).toBeUndefined();

    // A parent with a trace state: the built-in propagator sends it on.
    exporter.reset();
    start();
    const parentContext = trace.setSpanContext(context.active(), {
      traceId: '0af7651916cd43dd8448eb211c80319c',
      spanId: 'b7ad6b7169203331',
      traceFlags: 1,
      isRemote: true,
      traceState: createTraceState('congo=t61rcWkgMzE'),
    });
    await context.with(parentContext, () => client.getMovie({ id: 2 }));
    const request = server.requests[1]!;
    expect(received(request).traceId).toBe('0af7651916cd43dd8448eb211c80319c');
    expect(request.headers.tracestate).toBe('congo=t61rcWkgMzE');
    const call = spansOf(exporter.getFinishedSpans()).calls[0]!;
    expect(call.parentSpanContext?.spanId).toBe('b7ad6b7169203331');
  });

  it('a client with metrics: false is traced too (the channels do not depend on metrics)', async () => {
    start();
    const server = await startServer(answer);
    await moviesClient([server.url], { metrics: false }).getMovie({ id: 1 });
    const { calls, attempts } = spansOf(exporter.getFinishedSpans());
    expect(calls).toHaveLength(1);
    expect(attempts).toHaveLength(1);
    expect(received(server.requests[0]!).spanId).toBe(idOf(attempts[0]!));
  });

  it('rejects options of the wrong shape', () => {
    expect(() => openTelemetry({ tracer: {} as never })).toThrow(
      expect.objectContaining({ code: ErrorCode.INVALID_OPTION }),
    );
    expect(() => openTelemetry({ propagator: 1 as never })).toThrow(
      expect.objectContaining({ code: ErrorCode.INVALID_OPTION }),
    );
  });
});

describe('openTelemetry: stop()', () => {
  it('detaches: no spans and no traceparent after stop(), which is idempotent', async () => {
    const tracing = openTelemetry();
    const server = await startServer(answer);
    const client = moviesClient([server.url]);
    await client.getMovie({ id: 1 });
    expect(exporter.getFinishedSpans()).toHaveLength(2);

    tracing.stop();
    tracing.stop();
    for (const name of [
      'telescope:call:start',
      'telescope:call:attempt',
      'telescope:call:end',
      'telescope:call:error',
    ]) {
      expect(channel(name).hasSubscribers, name).toBe(false);
    }
    exporter.reset();
    await client.getMovie({ id: 2 });
    expect(exporter.getFinishedSpans()).toHaveLength(0);
    expect(server.requests[1]!.headers.traceparent).toBeUndefined();
  });
});
