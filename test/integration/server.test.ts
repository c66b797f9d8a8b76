/**
 * The callee's side of deadline propagation on real servers: plain node:http, Express 5 and
 * Fastify 5, all on 127.0.0.1:0 and closed when each test ends.
 */
import { createServer, request as httpRequest, type IncomingMessage, type OutgoingHttpHeaders } from 'node:http';
import type { AddressInfo } from 'node:net';
import express from 'express';
import Fastify from 'fastify';
import { describe, expect, it, onTestFinished } from 'vitest';
import {
  createClient,
  currentDeadline,
  defineService,
  ErrorCode,
  endpoint,
  TelescopeError,
  withDeadline,
} from '../../src/index.js';
import {
  type Deadline,
  type DeadlineRequest,
  type DeadlineServerOptions,
  deadlineMiddleware,
  fastifyDeadline,
} from '../../src/server/index.js';
import { delay, listenOnLoopback, sendJson, startServer } from '../helpers/server.js';

// --- a raw HTTP caller: full control of header values (empty, duplicated) -------------------

interface RawReply {
  status: number;
  contentType: string | undefined;
  body: string;
}

function send(
  url: string,
  headers: OutgoingHttpHeaders = {},
  init: { method?: string; body?: string } = {},
): Promise<RawReply> {
  return new Promise((resolve, reject) => {
    const outgoing = httpRequest(url, { method: init.method ?? 'GET', headers, agent: false }, (response) => {
      const chunks: Buffer[] = [];
      response.on('data', (chunk: Buffer) => chunks.push(chunk));
      response.on('end', () =>
        resolve({
          status: response.statusCode ?? 0,
          contentType: response.headers['content-type'],
          body: Buffer.concat(chunks).toString('utf8'),
        }),
      );
      response.on('error', reject);
    });
    outgoing.on('error', reject);
    outgoing.end(init.body);
  });
}

// --- one app per kind, all running the same handler ------------------------------------------

type Kind = 'node:http' | 'express' | 'fastify';
const kinds: Kind[] = ['node:http', 'express', 'fastify'];

/** What the handler reports about the deadline it ran under. */
interface Seen {
  /** req.deadline.remainingMs() when the handler started. */
  remainingMs: number;
  /** currentDeadline() was req.deadline when the handler started. */
  sameAtStart: boolean;
  /** …and still after an await (a timer hop). */
  sameAfterAwait: boolean;
  /** The request body as the handler saw it (POST only). */
  body: unknown;
}

interface App {
  url: string;
  /** Requests whose handler ran. */
  handled: Seen[];
  /** Budgets passed to onShed. */
  shed: number[];
  /** Requests passed to onShed. */
  shedRequests: IncomingMessage[];
}

/** Work the handler may do inside the deadline (e.g. a downstream telescope call). */
type Work = () => Promise<unknown>;

async function observe(deadline: Deadline | undefined, body: unknown, handled: Seen[]): Promise<Seen> {
  if (deadline === undefined) throw new Error('the middleware did not set req.deadline');
  const remainingMs = deadline.remainingMs();
  const sameAtStart = currentDeadline() === deadline;
  await delay(5);
  const seen = { remainingMs, sameAtStart, sameAfterAwait: currentDeadline() === deadline, body };
  handled.push(seen);
  return seen;
}

async function startApp(kind: Kind, options: DeadlineServerOptions, work?: Work): Promise<App> {
  const handled: Seen[] = [];
  const shed: number[] = [];
  const shedRequests: IncomingMessage[] = [];
  const withShed: DeadlineServerOptions = {
    ...options,
    onShed: (request, budgetMs) => {
      shed.push(budgetMs);
      shedRequests.push(request);
      options.onShed?.(request, budgetMs);
    },
  };
  const respond = async (seen: Seen) => ({ ...seen, downstream: work ? await work() : undefined });

  if (kind === 'node:http') {
    const middleware = deadlineMiddleware(withShed);
    const server = createServer((request, response) => {
      // The body is read before the middleware runs: stream events are emitted in the
      // socket's async context, so a handler running in an 'end' listener registered after
      // next() would not see the ambient deadline (see the test below for the alternative).
      const chunks: Buffer[] = [];
      request.on('data', (chunk: Buffer) => chunks.push(chunk));
      request.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        middleware(request, response, () => {
          observe((request as DeadlineRequest).deadline, text ? JSON.parse(text) : undefined, handled)
            .then(respond)
            .then(
              (value) => sendJson(response, 200, value),
              (error: unknown) => sendJson(response, 500, { error: String(error) }),
            );
        });
      });
    });
    const listening = await listenOnLoopback(server);
    onTestFinished(listening.close);
    return { url: listening.url, handled, shed, shedRequests };
  }

  if (kind === 'express') {
    const app = express();
    app.use(deadlineMiddleware(withShed));
    app.use(express.json());
    const handler: express.RequestHandler = async (request, response) => {
      const seen = await observe((request as DeadlineRequest).deadline, request.body, handled);
      response.json(await respond(seen));
    };
    app.get('/', handler);
    app.post('/', handler);
    const listening = await listenOnLoopback(createServer(app));
    onTestFinished(listening.close);
    return { url: listening.url, handled, shed, shedRequests };
  }

  const app = Fastify();
  await app.register(fastifyDeadline, withShed);
  const handler = async (request: { body: unknown }) => {
    const seen = await observe((request as { deadline?: Deadline }).deadline, request.body, handled);
    return respond(seen);
  };
  app.get('/', handler);
  app.post('/', handler);
  await app.listen({ port: 0, host: '127.0.0.1' });
  onTestFinished(() => app.close());
  return { url: `http://127.0.0.1:${(app.server.address() as AddressInfo).port}`, handled, shed, shedRequests };
}

function seenOf(reply: RawReply): Seen & { downstream: unknown } {
  expect(reply.status, reply.body).toBe(200);
  return JSON.parse(reply.body) as Seen & { downstream: unknown };
}

const maxMs = 2000;
const defaultMs = 1000;
/** Slack for the time between the middleware and the handler reading remainingMs (loaded CI). */
const slackMs = 300;

describe.each(kinds)('deadline middleware on %s', (kind) => {
  it('req.deadline reflects the header', async () => {
    const app = await startApp(kind, { maxMs, defaultMs });
    const seen = seenOf(await send(app.url, { 'x-request-timeout-ms': '800' }));
    expect(seen.remainingMs).toBeLessThanOrEqual(800);
    expect(seen.remainingMs).toBeGreaterThan(800 - slackMs);
    expect(app.shed).toEqual([]);
  });

  it('caps the header at maxMs and applies defaultMs when it is absent', async () => {
    const app = await startApp(kind, { maxMs, defaultMs });
    const capped = seenOf(await send(app.url, { 'x-request-timeout-ms': '999999' }));
    expect(capped.remainingMs).toBeLessThanOrEqual(maxMs);
    expect(capped.remainingMs).toBeGreaterThan(maxMs - slackMs);
    const absent = seenOf(await send(app.url));
    expect(absent.remainingMs).toBeLessThanOrEqual(defaultMs);
    expect(absent.remainingMs).toBeGreaterThan(defaultMs - slackMs);
  });

  it('defaultMs defaults to maxMs', async () => {
    const app = await startApp(kind, { maxMs: 1500 });
    const absent = seenOf(await send(app.url));
    expect(absent.remainingMs).toBeLessThanOrEqual(1500);
    expect(absent.remainingMs).toBeGreaterThan(1500 - slackMs);
  });

  // Every bad input through the real middleware: 'default', 'max' or 'shed' (504).
  const badInputs: Array<[name: string, value: string | string[] | undefined, outcome: 'default' | 'max' | 'shed']> = [
    ['missing', undefined, 'default'],
    ['empty', '', 'default'],
    ['negative', '-5', 'default'],
    ['zero', '0', 'shed'],
    ['zero-padded zero', '0000000000000000', 'shed'],
    ['fractional', '1.5', 'default'],
    ['NaN', 'NaN', 'default'],
    ['1e309', '1e309', 'default'],
    ['a list', '5, 10', 'default'],
    ['the header twice', ['5', '10'], 'default'],
    ['40 digits', '9'.repeat(40), 'max'],
    ['over maxMs', String(maxMs + 1), 'max'],
  ];

  it.each(badInputs)('header %s (%j) → %s', async (_name, value, outcome) => {
    const app = await startApp(kind, { maxMs, defaultMs });
    const reply = await send(app.url, value === undefined ? {} : { 'x-request-timeout-ms': value });
    if (outcome === 'shed') {
      expect(reply.status).toBe(504);
      expect(app.handled).toEqual([]);
      expect(app.shed).toEqual([0]);
      return;
    }
    const expected = outcome === 'max' ? maxMs : defaultMs;
    const seen = seenOf(reply);
    expect(seen.remainingMs).toBeLessThanOrEqual(expected);
    expect(seen.remainingMs).toBeGreaterThan(expected - slackMs);
    expect(app.shed).toEqual([]);
  });

  it('header 0: answers 504 with a JSON body, does not call the handler, calls onShed', async () => {
    const app = await startApp(kind, { maxMs, defaultMs });
    const reply = await send(app.url, { 'x-request-timeout-ms': '0' }, { method: 'POST', body: '{"a":1}' });
    expect(reply.status).toBe(504);
    expect(reply.contentType).toMatch(/^application\/json/);
    expect(JSON.parse(reply.body)).toMatchObject({ error: 'DEADLINE_EXCEEDED' });
    expect(app.handled).toEqual([]);
    expect(app.shed).toEqual([0]);
    expect(app.shedRequests[0]?.headers['x-request-timeout-ms']).toBe('0');
    // The server keeps serving requests that do have time.
    expect(seenOf(await send(app.url, { 'x-request-timeout-ms': '500' })).remainingMs).toBeLessThanOrEqual(500);
    expect(app.shed).toEqual([0]);
  });

  it('currentDeadline() inside the handler, before and after an await, is the request’s deadline', async () => {
    const app = await startApp(kind, { maxMs, defaultMs });
    const seen = seenOf(await send(app.url, { 'x-request-timeout-ms': '700' }));
    expect(seen.sameAtStart).toBe(true);
    expect(seen.sameAfterAwait).toBe(true);
    // Outside any request there is no ambient deadline.
    expect(currentDeadline()).toBeUndefined();
  });

  it('the handler keeps the deadline context across request body parsing (POST)', async () => {
    const app = await startApp(kind, { maxMs, defaultMs });
    const reply = await send(
      app.url,
      { 'x-request-timeout-ms': '700', 'content-type': 'application/json' },
      { method: 'POST', body: JSON.stringify({ stars: 5 }) },
    );
    const seen = seenOf(reply);
    expect(seen.body).toEqual({ stars: 5 });
    expect(seen.remainingMs).toBeLessThanOrEqual(700);
    expect(seen.sameAtStart).toBe(true);
    expect(seen.sameAfterAwait).toBe(true);
  });

  it('telescope calls made by the handler inherit the request’s budget', async () => {
    const backend = await startServer((_request, response) => sendJson(response, 200, { ok: true }));
    const service = defineService({ name: 'backend', endpoints: { ping: endpoint({ method: 'GET', path: '/ping' }) } });
    // The client's own timeout is far larger: the inbound budget must be the one that applies.
    const client = createClient(service, { instances: [backend.url], timeoutMs: 10_000 });
    onTestFinished(() => client.close());
    const app = await startApp(kind, { maxMs, defaultMs }, () => client.ping());
    const seen = seenOf(await send(app.url, { 'x-request-timeout-ms': '600' }));
    expect(seen.downstream).toEqual({ ok: true });
    const header = backend.requests[0]?.headers['x-request-timeout-ms'];
    expect(header).toMatch(/^\d+$/);
    // At most the handler's remaining budget minus twice the default reserve (10 ms).
    expect(Number(header)).toBeLessThanOrEqual(seen.remainingMs - 20);
    expect(Number(header)).toBeGreaterThan(600 - 20 - slackMs);
  });

  it('headerName selects another header (case-insensitively)', async () => {
    const app = await startApp(kind, { maxMs, defaultMs, headerName: 'X-Budget-Ms' });
    const seen = seenOf(await send(app.url, { 'x-budget-ms': '400', 'x-request-timeout-ms': '0' }));
    expect(seen.remainingMs).toBeLessThanOrEqual(400);
    expect(seen.remainingMs).toBeGreaterThan(400 - slackMs);
    const shed = await send(app.url, { 'x-budget-ms': '0' });
    expect(shed.status).toBe(504);
    expect(app.shed).toEqual([0]);
  });
});

describe('deadline middleware on node:http, body read after next()', () => {
  it('withDeadline(req.deadline, …) re-enters the request’s deadline inside stream listeners', async () => {
    const middleware = deadlineMiddleware({ maxMs, defaultMs });
    const seen: Array<{ header: string | undefined; same: boolean; remainingMs: number | undefined }> = [];
    const server = createServer((request, response) => {
      middleware(request, response, () => {
        const deadline = (request as DeadlineRequest).deadline as Deadline;
        const chunks: Buffer[] = [];
        request.on('data', (chunk: Buffer) => chunks.push(chunk));
        request.on('end', () => {
          withDeadline(deadline, async () => {
            await delay(5);
            seen.push({
              header: request.headers['x-request-timeout-ms'] as string | undefined,
              same: currentDeadline() === deadline,
              remainingMs: currentDeadline()?.remainingMs(),
            });
            sendJson(response, 200, { length: Buffer.concat(chunks).length });
          });
        });
      });
    });
    const { url, close } = await listenOnLoopback(server);
    onTestFinished(close);
    const reply = await send(url, { 'x-request-timeout-ms': '650' }, { method: 'POST', body: 'x'.repeat(100_000) });
    expect(reply.status).toBe(200);
    expect(JSON.parse(reply.body)).toEqual({ length: 100_000 });
    expect(seen).toHaveLength(1);
    expect(seen[0]?.same).toBe(true);
    expect(seen[0]?.remainingMs).toBeLessThanOrEqual(650);
  });
});

describe('bad server options', () => {
  const badOptions: Array<[name: string, options: DeadlineServerOptions]> = [
    ['maxMs: -1', { maxMs: -1 }],
    ['maxMs: 0', { maxMs: 0 }],
    ['maxMs: NaN', { maxMs: Number.NaN }],
    ['maxMs: Infinity', { maxMs: Number.POSITIVE_INFINITY }],
    ['defaultMs > maxMs', { maxMs: 1000, defaultMs: 1001 }],
    ['defaultMs > default maxMs', { defaultMs: 30_001 }],
    ['defaultMs: 0', { maxMs: 1000, defaultMs: 0 }],
    ['defaultMs: -1', { defaultMs: -1 }],
    ['headerName with a space', { headerName: 'x request' }],
    ['empty headerName', { headerName: '' }],
  ];

  it.each(badOptions)('deadlineMiddleware(%s) throws INVALID_OPTION', (_name, options) => {
    let thrown: unknown;
    try {
      deadlineMiddleware(options);
    } catch (error) {
      thrown = error;
    }
    expect(thrown).toBeInstanceOf(TelescopeError);
    expect((thrown as TelescopeError).code).toBe(ErrorCode.INVALID_OPTION);
  });

  it.each(badOptions)(
    'fastify.register(fastifyDeadline, %s) fails ready() with INVALID_OPTION',
    async (_name, options) => {
      const app = Fastify();
      onTestFinished(() => app.close());
      app.register(fastifyDeadline, options);
      const error = await app.ready().then(
        () => undefined,
        (reason: unknown) => reason,
      );
      expect(error).toBeInstanceOf(TelescopeError);
      expect((error as TelescopeError).code).toBe(ErrorCode.INVALID_OPTION);
    },
  );

  it('good options at the edges are accepted', () => {
    expect(() => deadlineMiddleware({ maxMs: 1, defaultMs: 1 })).not.toThrow();
    expect(() => deadlineMiddleware({ maxMs: 1000, defaultMs: 1000 })).not.toThrow();
    expect(() => deadlineMiddleware()).not.toThrow();
  });
});
