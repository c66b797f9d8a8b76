/**
 * Hardening: secrets never leave through the client's own outputs.
 *
 * Credentials travel in request headers: `authorization` (Bearer and Basic), `cookie`,
 * `proxy-authorization`, `x-api-key`, and a header the application names itself
 * (`redactHeaders: ['X-Internal-Token']`), set on the client (`headers`) and per call. Calls
 * fail in every way a client can fail (503, 429, attempt timeout, deadline, reset, refused
 * connection, invalid response, open circuit, full bulkhead, no instance, caller abort, client
 * closed, invalid params), so that every log path runs, and then none of the secrets, nor
 * their base64 or URL-encoded forms, may appear in:
 *
 * - the log lines of a real pino logger at level debug;
 * - the errors: message, stack, `JSON.stringify(error)`, `util.inspect(error)` with causes;
 * - `client.stats()` and the client's events;
 * - the Prometheus exposition (`telescope-http/prometheus`);
 * - the OpenTelemetry spans (`telescope-http/otel`): names, attributes, events, statuses.
 *
 * The servers (real node:http on 127.0.0.1) do receive every secret: the calls really carried
 * them, and the log lines really list the headers, with the secrets as `[redacted]`.
 */
import { inspect } from 'node:util';
import { context, propagation, trace } from '@opentelemetry/api';
import { AsyncLocalStorageContextManager } from '@opentelemetry/context-async-hooks';
import { BasicTracerProvider, InMemorySpanExporter, SimpleSpanProcessor } from '@opentelemetry/sdk-trace-base';
import pino from 'pino';
import { Registry } from 'prom-client';
import { afterAll, beforeAll, describe, expect, it, onTestFinished } from 'vitest';
import {
  type Client,
  type ClientEvents,
  type ClientOptions,
  createClient,
  ErrorCode,
  isTelescopeError,
  type TelescopeError,
} from '../../src/index.js';
import { openTelemetry } from '../../src/otel/index.js';
import { prometheusMetrics } from '../../src/prometheus/index.js';
import { movies } from '../helpers/movies.js';
import { closedPort, type Handler, sendJson, startServer } from '../helpers/server.js';

// --- the secrets -----------------------------------------------------------------------------

const basic = (user: string, password: string) => `Basic ${Buffer.from(`${user}:${password}`).toString('base64')}`;

/** Sent with every call (client `headers`). */
const clientHeaders = {
  Authorization: 'Bearer s3cr3t-token-XYZ',
  Cookie: 'session=c00kie-SECRET-123; theme=dark',
  'X-Internal-Token': 'int3rnal-SECRET-456',
  // Not a secret: proves the headers are logged at all.
  'X-Visible': 'visible-marker-1',
};

/** Sent per call (call `headers`), replacing the client's values of the same names. */
const callHeaders = {
  authorization: basic('alice', 'pa55w0rd-Q8R'),
  cookie: 'sid=per-call-c00kie-777',
  'x-internal-token': 'per-call-SECRET-000',
  'Proxy-Authorization': 'Bearer pr0xy-SECRET-222',
  'X-API-Key': 'api-k3y-SECRET-333',
};

/** Every secret string, raw; their encodings are derived below. */
const rawSecrets = [
  's3cr3t-token-XYZ',
  'c00kie-SECRET-123',
  'int3rnal-SECRET-456',
  'pa55w0rd-Q8R',
  basic('alice', 'pa55w0rd-Q8R').slice('Basic '.length),
  'per-call-c00kie-777',
  'per-call-SECRET-000',
  'pr0xy-SECRET-222',
  'api-k3y-SECRET-333',
];

/**
 * The strings that betray `secret`: the secret raw, URL-encoded, JSON-escaped, and
 * base64-encoded at each of the three byte alignments it can have inside a longer encoded
 * string (without the characters that mix in bytes before or after it).
 */
function needlesOf(secret: string): string[] {
  const forms = [secret, encodeURIComponent(secret), JSON.stringify(secret).slice(1, -1)];
  for (let shift = 0; shift < 3; shift++) {
    const encoded = Buffer.from(`${'\0'.repeat(shift)}${secret}`).toString('base64');
    forms.push(encoded.slice(Math.ceil((shift * 4) / 3), Math.floor(((shift + secret.length) * 4) / 3)));
  }
  return [...new Set(forms.filter((form) => form.length >= 8))];
}

const needles = [...new Set(rawSecrets.flatMap(needlesOf))];

/** The needles found in `text`, with some context, for a readable failure. */
function leaks(text: string): string[] {
  return needles.flatMap((needle) => {
    const at = text.indexOf(needle);
    return at === -1 ? [] : [`${needle} in …${text.slice(Math.max(0, at - 80), at + needle.length + 40)}…`];
  });
}

// --- what the client emits -------------------------------------------------------------------

/** Log lines, as pino wrote them. */
const logLines: string[] = [];
const logger = pino({ level: 'debug' }, { write: (line: string) => void logLines.push(line) });

/** Errors the calls failed with. */
const errors: unknown[] = [];
/** Events of every client. */
const events: unknown[] = [];
/** Headers the servers received (they must hold every secret: the calls carried them). */
const receivedHeaders: unknown[] = [];
/** `stats()` of every client, taken before it closes. */
const statsTexts: string[] = [];

const exporter = new InMemorySpanExporter();
const provider = new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(exporter)] });
const metrics = prometheusMetrics({ registry: new Registry() });
const tracing = openTelemetry();

beforeAll(() => {
  context.setGlobalContextManager(new AsyncLocalStorageContextManager().enable());
  trace.setGlobalTracerProvider(provider);
});

afterAll(async () => {
  tracing.stop();
  metrics.stop();
  await provider.shutdown();
  trace.disable();
  context.disable();
  propagation.disable();
});

const eventNames: Array<keyof ClientEvents> = [
  'retry',
  'hedge',
  'budget-exhausted',
  'eject',
  'return',
  'breaker',
  'fallback',
  'shed',
];

/** A movies client with the secret headers, the logger, and its events and stats recorded. */
function secretClient(instances: string[], options: Partial<ClientOptions> = {}): Client<typeof movies> {
  const client = createClient(movies, {
    instances,
    logger,
    headers: clientHeaders,
    redactHeaders: ['X-Internal-Token'],
    ...options,
  });
  for (const name of eventNames) client.on(name, (payload) => events.push(payload));
  onTestFinished(async () => {
    statsTexts.push(JSON.stringify(client.stats()), inspect(client.stats(), { depth: null }));
    await client.close();
  });
  return client;
}

/** Runs a call that must fail; records and returns its error. */
async function failed(call: Promise<unknown>): Promise<TelescopeError> {
  const error = await call.then(
    () => {
      throw new Error('expected the call to fail, it succeeded');
    },
    (reason: unknown) => reason,
  );
  errors.push(error);
  expect(isTelescopeError(error), String(error)).toBe(true);
  return error as TelescopeError;
}

/** The two ways each call is made: with the client's secrets only, and with per-call ones too. */
const variants: Array<Record<string, string>> = [{}, callHeaders];

/** Every text an error shows: message, stack, JSON and inspect (causes included). */
function errorTexts(error: unknown): string[] {
  const texts = [String(error), JSON.stringify(error) ?? '', inspect(error, { depth: 10, showHidden: true })];
  let cause: unknown = error;
  for (let depth = 0; depth < 5 && cause instanceof Error; depth++) {
    texts.push(cause.message, cause.stack ?? '');
    cause = cause.cause;
  }
  return texts;
}

// --- servers ---------------------------------------------------------------------------------

const unavailable: Handler = (_request, response) => {
  response.writeHead(503, { 'content-type': 'text/plain' });
  response.end('unavailable');
};
const limited: Handler = (_request, response) => {
  response.writeHead(429, { 'content-type': 'text/plain', 'retry-after': '60' });
  response.end('slow down');
};
const reset: Handler = (_request, response) => {
  response.socket?.destroy();
};
const hang: Handler = () => {};
/** 200 with a body that does not match the endpoint's response schema. */
const wrongShape: Handler = (_request, response) => sendJson(response, 200, { id: 'seven', stars: [] });

/** A test server whose received headers are kept for the control test. */
async function serve(handler: Handler) {
  const server = await startServer(handler);
  onTestFinished(() => {
    receivedHeaders.push(...server.requests.map((request) => request.headers));
  });
  return server;
}

// --- tests -----------------------------------------------------------------------------------

describe('secrets: failures of every kind', () => {
  it('HTTP failures: 503 (GET retried, POST not), 429 past the budget', async () => {
    const servers = [await serve(unavailable), await serve(unavailable)];
    const client = secretClient(
      servers.map((server) => server.url),
      { breaker: false },
    );
    for (const headers of variants) {
      expect((await failed(client.getMovie({ id: 1 }, { headers }))).code).toBe(ErrorCode.HTTP_STATUS);
      expect((await failed(client.rate({ id: 1 }, { stars: 5 }, { headers }))).code).toBe(ErrorCode.HTTP_STATUS);
    }
    const slow = await serve(limited);
    const limitedClient = secretClient([slow.url], { breaker: false });
    for (const headers of variants) {
      expect((await failed(limitedClient.getMovie({ id: 2 }, { headers }))).code).toBe(ErrorCode.HTTP_STATUS);
    }
    // The calls did carry the secrets.
    const received = servers.flatMap((server) => server.requests.map((request) => request.headers));
    expect(received.map((headers) => headers.authorization)).toContain('Bearer s3cr3t-token-XYZ');
    expect(received.map((headers) => headers.authorization)).toContain(callHeaders.authorization);
    expect(received.map((headers) => headers['x-internal-token'])).toContain('int3rnal-SECRET-456');
    expect(received.map((headers) => headers['x-api-key'])).toContain('api-k3y-SECRET-333');
  });

  it('timeouts: attempt timeouts (retried over a fresh connection) and the call deadline', async () => {
    const server = await serve(hang);
    const attempts = secretClient([server.url], { breaker: false, attemptTimeoutMs: 60, timeoutMs: 1000 });
    const deadline = secretClient([server.url], { breaker: false, timeoutMs: 120 });
    for (const headers of variants) {
      expect((await failed(attempts.getMovie({ id: 3 }, { headers }))).code).toBe(ErrorCode.ATTEMPT_TIMEOUT);
      expect((await failed(deadline.rate({ id: 3 }, { stars: 1 }, { headers }))).code).toBe(
        ErrorCode.DEADLINE_EXCEEDED,
      );
      // Too small a budget to try: fails before any I/O.
      expect((await failed(deadline.getMovie({ id: 3 }, { headers, timeoutMs: 1 }))).code).toBe(
        ErrorCode.DEADLINE_EXCEEDED,
      );
    }
  });

  it('connection failures: reset after the request, refused connection', async () => {
    const resetting = await serve(reset);
    const refused = `http://127.0.0.1:${await closedPort()}`;
    const resetClient = secretClient([resetting.url], { breaker: false });
    const refusedClient = secretClient([refused], { breaker: false });
    for (const headers of variants) {
      expect((await failed(resetClient.getMovie({ id: 4 }, { headers }))).code).toBe(ErrorCode.CONNECTION_RESET);
      expect((await failed(resetClient.rate({ id: 4 }, { stars: 2 }, { headers }))).code).toBe(
        ErrorCode.CONNECTION_RESET,
      );
      expect((await failed(refusedClient.getMovie({ id: 4 }, { headers }))).code).toBe(ErrorCode.CONNECT_FAILED);
      expect((await failed(refusedClient.rate({ id: 4 }, { stars: 2 }, { headers }))).code).toBe(
        ErrorCode.CONNECT_FAILED,
      );
    }
  });

  it('local refusals: invalid response, open circuit, full bulkhead, no instance, invalid params', async () => {
    const wrong = await serve(wrongShape);
    const wrongClient = secretClient([wrong.url], { breaker: false });
    const down = await serve(unavailable);
    const breakerClient = secretClient([down.url], {
      retry: false,
      breaker: { volumeThreshold: 1, errorThresholdPercentage: 1, minResetTimeoutMs: 60_000, resetTimeoutMs: 60_000 },
    });
    const hanging = await serve(hang);
    const bulkheadClient = secretClient([hanging.url], {
      breaker: false,
      timeoutMs: 300,
      bulkhead: { maxConcurrent: 1, maxQueue: 0 },
    });
    for (const headers of variants) {
      expect((await failed(wrongClient.getMovie({ id: 5 }, { headers }))).code).toBe(ErrorCode.INVALID_RESPONSE);
      await failed(breakerClient.getMovie({ id: 5 }, { headers }));
      expect((await failed(breakerClient.getMovie({ id: 5 }, { headers }))).code).toBe(ErrorCode.CIRCUIT_OPEN);
      const holding = failed(bulkheadClient.getMovie({ id: 5 }, { headers }));
      expect((await failed(bulkheadClient.getMovie({ id: 6 }, { headers }))).code).toBe(ErrorCode.BULKHEAD_FULL);
      expect((await holding).code).toBe(ErrorCode.DEADLINE_EXCEEDED);
      expect((await failed(wrongClient.getMovie({ id: 5 }, { headers, route: { version: 'v9' } }))).code).toBe(
        ErrorCode.NO_HEALTHY_INSTANCE,
      );
      expect((await failed(wrongClient.getMovie({ id: 'five' as never }, { headers }))).code).toBe(
        ErrorCode.INVALID_REQUEST,
      );
    }
  });

  it('the caller goes away: aborted calls, and calls in flight when the client closes', async () => {
    const hanging = await serve(hang);
    const client = secretClient([hanging.url], { breaker: false, timeoutMs: 5000 });
    for (const headers of variants) {
      const controller = new AbortController();
      const aborted = failed(client.getMovie({ id: 8 }, { headers, signal: controller.signal }));
      setTimeout(() => controller.abort(new Error('user navigated away')), 30);
      expect((await aborted).code).toBe(ErrorCode.ABORTED);
    }
    const inFlight = variants.map((headers) => failed(client.rate({ id: 8 }, { stars: 3 }, { headers })));
    setTimeout(() => void client.close(), 30);
    for (const error of await Promise.all(inFlight)) expect(error.code).toBe(ErrorCode.CLIENT_CLOSED);
    expect((await failed(client.getMovie({ id: 8 }, { headers: callHeaders }))).code).toBe(ErrorCode.CLIENT_CLOSED);
  });
});

describe('secrets: nowhere in what the client emitted', () => {
  // Runs after the failures above (same file, in order): searches everything they produced.

  it('(control) the search finds every secret where it is: in the headers the servers received', () => {
    const received = JSON.stringify(receivedHeaders);
    for (const secret of rawSecrets) {
      expect(
        needlesOf(secret).some((needle) => received.includes(needle)),
        secret,
      ).toBe(true);
    }
    // …and once base64-encoded, at any alignment.
    for (const prefix of ['', 'x', 'xy']) {
      const encoded = Buffer.from(`${prefix}${received}`).toString('base64');
      expect(leaks(encoded).length, prefix).toBeGreaterThanOrEqual(rawSecrets.length);
    }
  });

  it('log lines: every failure logged at debug, headers listed, secrets [redacted]', () => {
    const entries = logLines.map((line) => JSON.parse(line) as Record<string, unknown>);
    const failures = entries.filter((entry) => entry.msg === 'call failed');
    expect(failures.length).toBeGreaterThanOrEqual(30);
    // Every kind of failure went through the log path.
    expect(new Set(failures.map((entry) => entry.code))).toEqual(
      new Set([
        ErrorCode.HTTP_STATUS,
        ErrorCode.ATTEMPT_TIMEOUT,
        ErrorCode.DEADLINE_EXCEEDED,
        ErrorCode.CONNECTION_RESET,
        ErrorCode.CONNECT_FAILED,
        ErrorCode.INVALID_RESPONSE,
        ErrorCode.CIRCUIT_OPEN,
        ErrorCode.BULKHEAD_FULL,
        ErrorCode.NO_HEALTHY_INSTANCE,
        ErrorCode.ABORTED,
        ErrorCode.CLIENT_CLOSED,
      ]),
    );
    for (const entry of failures) {
      expect(entry).toMatchObject({ level: 20, service: 'movies' });
      const headers = entry.headers as Record<string, string>;
      // Listed (so a leak would show), with the secrets replaced.
      expect(headers['x-visible']).toBe('visible-marker-1');
      expect(headers.authorization).toBe('[redacted]');
      expect(headers.cookie).toBe('[redacted]');
      expect(headers['x-internal-token']).toBe('[redacted]');
    }
    const perCall = failures.filter((entry) => (entry.headers as Record<string, string>)['x-api-key'] !== undefined);
    expect(perCall.length).toBeGreaterThanOrEqual(15);
    for (const entry of perCall) {
      expect(entry.headers).toMatchObject({ 'proxy-authorization': '[redacted]', 'x-api-key': '[redacted]' });
    }
    expect(leaks(logLines.join('\n'))).toEqual([]);
  });

  it('errors: message, stack, JSON and inspect, with their causes', () => {
    expect(errors.length).toBeGreaterThanOrEqual(30);
    for (const error of errors) expect(leaks(errorTexts(error).join('\n'))).toEqual([]);
  });

  it('stats() and the client events', () => {
    expect(statsTexts.length).toBeGreaterThanOrEqual(2 * 10);
    expect(statsTexts.join('\n')).toContain('CONNECTION_RESET');
    expect(events.length).toBeGreaterThan(0);
    expect(leaks([...statsTexts, JSON.stringify(events), inspect(events, { depth: null })].join('\n'))).toEqual([]);
  });

  it('the Prometheus exposition', async () => {
    const text = await metrics.registry.metrics();
    expect(text).toMatch(/telescope_calls_total\{[^}]*code="CONNECT_FAILED"[^}]*\} \d+/);
    expect(leaks(text)).toEqual([]);
  });

  it('the OpenTelemetry spans: names, attributes, events, statuses', () => {
    const spans = exporter.getFinishedSpans();
    expect(spans.length).toBeGreaterThanOrEqual(30);
    // Exceptions were recorded on the call spans (message and stack: a place a leak would show).
    expect(spans.some((span) => span.events.some((event) => event.name === 'exception'))).toBe(true);
    const text = JSON.stringify(
      spans.map((span) => ({
        name: span.name,
        attributes: span.attributes,
        events: span.events.map((event) => ({ name: event.name, attributes: event.attributes })),
        status: span.status,
        links: span.links,
        resource: span.resource.attributes,
      })),
    );
    expect(leaks(text)).toEqual([]);
  });
});

describe('secrets: header values the client refuses', () => {
  // A value with CR or LF is refused (header injection). The refusal must not quote the value.

  it('a secret header value with CR/LF in call headers: INVALID_OPTION that does not echo the value', async () => {
    const server = await serve(unavailable);
    const client = secretClient([server.url], { breaker: false });
    const error = await failed(
      client.getMovie({ id: 9 }, { headers: { authorization: 'Bearer s3cr3t-token-XYZ\r\nX-Injected: 1' } }),
    );
    expect(error.code).toBe(ErrorCode.INVALID_OPTION);
    expect(error.message).toMatch(/authorization/);
    expect(server.requests).toEqual([]);
    expect(leaks(errorTexts(error).join('\n'))).toEqual([]);
  });

  it('a secret header value with CR/LF in client headers: INVALID_OPTION that does not echo the value', () => {
    let thrown: unknown;
    try {
      createClient(movies, {
        instances: ['http://127.0.0.1:9'],
        headers: { 'x-internal-token': 'int3rnal-SECRET-456\n' },
        redactHeaders: ['x-internal-token'],
      });
    } catch (error) {
      thrown = error;
    }
    expect(isTelescopeError(thrown) && thrown.code).toBe(ErrorCode.INVALID_OPTION);
    expect(leaks(errorTexts(thrown).join('\n'))).toEqual([]);
  });

  it('credentials in an instance URL given to createClient: INVALID_OPTION that does not echo them', async () => {
    const withCredentials = `http://alice:${encodeURIComponent('pa55w0rd-Q8R')}@127.0.0.1:9`;
    let thrown: unknown;
    try {
      createClient(movies, { instances: [withCredentials] });
    } catch (error) {
      thrown = error;
    }
    expect(isTelescopeError(thrown) && thrown.code).toBe(ErrorCode.INVALID_OPTION);
    expect(leaks(errorTexts(thrown).join('\n'))).toEqual([]);
  });

  it('credentials in an instance URL from discovery: the set is refused and logged without them', async () => {
    const withCredentials = `http://alice:${encodeURIComponent('pa55w0rd-Q8R')}@127.0.0.1:9`;
    const lines: string[] = [];
    const client = createClient(movies, {
      logger: pino({ level: 'debug' }, { write: (line: string) => void lines.push(line) }),
      discovery: {
        subscribe: (deliver) => {
          deliver(['http://127.0.0.1:9']);
          deliver([withCredentials]);
          return () => {};
        },
      },
    });
    await client.close();
    expect(lines.some((line) => line.includes('discovery delivered invalid instances'))).toBe(true);
    expect(leaks(lines.join('\n'))).toEqual([]);
  });
});
