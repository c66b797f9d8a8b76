/**
 * Deadline budgets end to end: withDeadline / currentDeadline semantics as seen by a real
 * server (through the x-request-timeout-ms header it receives), and a real three-hop chain
 * edge → middle → backend on 127.0.0.1, each hop behind deadlineMiddleware.
 */
import type { IncomingMessage, OutgoingHttpHeaders, ServerResponse } from 'node:http';
import { request as httpRequest } from 'node:http';
import { describe, expect, it, onTestFinished, vi } from 'vitest';
import { z } from 'zod';
import {
  type ClientOptions,
  createClient,
  currentDeadline,
  Deadline,
  defineService,
  ErrorCode,
  endpoint,
  HttpStatusError,
  isTelescopeError,
  type TelescopeError,
  withDeadline,
} from '../../src/index.js';
import { type DeadlineRequest, type DeadlineServerOptions, deadlineMiddleware } from '../../src/server/index.js';
import { delay, sendJson, startServer, type TestServer } from '../helpers/server.js';

const header = 'x-request-timeout-ms';

/** A hop's only endpoint. */
const hopService = defineService({
  name: 'hop',
  endpoints: {
    work: endpoint({ method: 'GET', path: '/work', response: z.object({ ok: z.boolean() }).passthrough() }),
  },
});

function client(url: string, options: Partial<ClientOptions> = {}) {
  // The client's own timeout is far above every budget here, so the ambient one applies.
  const created = createClient(hopService, { instances: [url], timeoutMs: 10_000, ...options });
  onTestFinished(() => created.close());
  return created;
}

/** The header value a request carried, as a number (NaN when absent). */
function budgetOf(server: TestServer, index = 0): number {
  const value = server.requests[index]?.headers[header];
  expect(value, 'deadline header').toMatch(/^\d+$/);
  return Number(value);
}

async function failure(promise: Promise<unknown>): Promise<TelescopeError> {
  const error = await promise.then(
    () => undefined,
    (reason: unknown) => reason,
  );
  expect(isTelescopeError(error), String(error)).toBe(true);
  return error as TelescopeError;
}

describe('withDeadline / currentDeadline', () => {
  it('currentDeadline() is undefined outside and the deadline inside, across awaits', async () => {
    expect(currentDeadline()).toBeUndefined();
    const inside = await withDeadline(500, async () => {
      const deadline = currentDeadline();
      expect(deadline).toBeInstanceOf(Deadline);
      await delay(20);
      expect(currentDeadline()).toBe(deadline);
      await new Promise((resolve) => setImmediate(resolve));
      expect(currentDeadline()).toBe(deadline);
      return deadline?.remainingMs();
    });
    // Node's timers keep whole milliseconds, so a 20 ms delay can end up to 1 ms early by the clock.
    expect(inside).toBeLessThanOrEqual(481);
    expect(inside).toBeGreaterThan(100);
    expect(currentDeadline()).toBeUndefined();
  });

  it('withDeadline returns fn’s result and accepts a Deadline', async () => {
    expect(withDeadline(100, () => 42)).toBe(42);
    const deadline = Deadline.after(300);
    expect(withDeadline(deadline, () => currentDeadline())).toBe(deadline);
  });

  it('rejects budgets that are not a finite number or a Deadline', () => {
    for (const bad of [Number.NaN, Number.POSITIVE_INFINITY, '100', undefined]) {
      let thrown: unknown;
      try {
        withDeadline(bad as number, () => undefined);
      } catch (error) {
        thrown = error;
      }
      expect((thrown as TelescopeError).code, String(bad)).toBe(ErrorCode.INVALID_OPTION);
    }
  });

  it('the server receives the ambient budget, minus twice the reserve', async () => {
    const server = await startServer((_request, response) => sendJson(response, 200, { ok: true }));
    const hop = client(server.url);
    await withDeadline(800, () => hop.work());
    const received = budgetOf(server);
    expect(received).toBeLessThanOrEqual(800 - 20);
    expect(received).toBeGreaterThan(800 - 20 - 300);
  });

  it('a nested longer withDeadline never extends the outer one', async () => {
    const server = await startServer((_request, response) => sendJson(response, 200, { ok: true }));
    const hop = client(server.url);
    await withDeadline(400, async () => {
      const outer = currentDeadline();
      await withDeadline(5000, async () => {
        expect(currentDeadline()).toBe(outer);
        expect(currentDeadline()?.remainingMs()).toBeLessThanOrEqual(400);
        await hop.work();
      });
    });
    expect(budgetOf(server)).toBeLessThanOrEqual(400 - 20);
  });

  it('a nested shorter withDeadline applies inside and the outer one again after it', async () => {
    const server = await startServer((_request, response) => sendJson(response, 200, { ok: true }));
    const hop = client(server.url);
    await withDeadline(5000, async () => {
      const outer = currentDeadline();
      await withDeadline(300, () => hop.work());
      expect(currentDeadline()).toBe(outer);
      await hop.work();
    });
    expect(budgetOf(server, 0)).toBeLessThanOrEqual(300 - 20);
    expect(budgetOf(server, 1)).toBeGreaterThan(5000 - 20 - 300);
    expect(budgetOf(server, 1)).toBeLessThanOrEqual(5000 - 20);
  });

  it('an expired deadline fails calls inside with DEADLINE_EXCEEDED and no I/O', async () => {
    const server = await startServer((_request, response) => sendJson(response, 200, { ok: true }));
    const hop = client(server.url);
    for (const budget of [0, -100, Deadline.after(-1)]) {
      const error = await failure(withDeadline(budget, () => hop.work()));
      expect(error.code).toBe(ErrorCode.DEADLINE_EXCEEDED);
      expect(error.requestSent).toBe(false);
    }
    // Expired outside: a longer nested budget cannot revive it.
    const spent = Deadline.after(0);
    const nested = await failure(withDeadline(spent, () => withDeadline(5000, () => hop.work())));
    expect(nested.code).toBe(ErrorCode.DEADLINE_EXCEEDED);
    // A deadline that runs out while waiting, before the call starts.
    const late = await failure(
      withDeadline(30, async () => {
        await delay(60);
        return hop.work();
      }),
    );
    expect(late.code).toBe(ErrorCode.DEADLINE_EXCEEDED);
    expect(server.requests).toEqual([]);
  });

  it('a budget below minAttemptMs (or that cannot fit the reserve) does no I/O', async () => {
    const server = await startServer((_request, response) => sendJson(response, 200, { ok: true }));
    const hop = client(server.url);
    // 15 ms < minAttemptMs (20): refused by the deadline layer.
    expect((await failure(withDeadline(15, () => hop.work()))).code).toBe(ErrorCode.DEADLINE_EXCEEDED);
    // 25 ms − reserveMs (10) < 20: refused by the attempt layer (or by the deadline layer if slow).
    expect((await failure(withDeadline(25, () => hop.work()))).code).toBe(ErrorCode.DEADLINE_EXCEEDED);
    const picky = client(server.url, { minAttemptMs: 200 });
    const error = await failure(withDeadline(150, () => picky.work()));
    expect(error.code).toBe(ErrorCode.DEADLINE_EXCEEDED);
    expect(error.requestSent).toBe(false);
    expect(server.requests).toEqual([]);
  });

  it('the call budget is min(ambient, now + timeoutMs)', async () => {
    const server = await startServer((_request, response) => sendJson(response, 200, { ok: true }));
    const short = client(server.url, { timeoutMs: 400 });
    await withDeadline(5000, () => short.work());
    expect(budgetOf(server, 0)).toBeLessThanOrEqual(400 - 20);
    expect(budgetOf(server, 0)).toBeGreaterThan(400 - 20 - 300);
    // The per-call timeoutMs, too.
    await withDeadline(5000, () => short.work({ timeoutMs: 250 }));
    expect(budgetOf(server, 1)).toBeLessThanOrEqual(250 - 20);
    // And without an ambient deadline the client's timeout alone.
    await short.work();
    expect(budgetOf(server, 2)).toBeLessThanOrEqual(400 - 20);
    expect(budgetOf(server, 2)).toBeGreaterThan(400 - 20 - 300);
  });

  it('the per-attempt timeout is min(attemptTimeoutMs, remaining − reserveMs); the header is that minus reserveMs', async () => {
    const server = await startServer((_request, response) => sendJson(response, 200, { ok: true }));
    const capped = client(server.url, { attemptTimeoutMs: 250 });
    await withDeadline(5000, () => capped.work());
    // attemptTimeoutMs applies exactly: 250 − 10.
    expect(server.requests[0]?.headers[header]).toBe('240');
    // Below attemptTimeoutMs the remaining budget applies.
    await withDeadline(200, () => capped.work());
    expect(budgetOf(server, 1)).toBeLessThanOrEqual(200 - 20);
    // reserveMs is subtracted twice (once from the attempt, once more for the callee).
    const reserved = client(server.url, { reserveMs: 100 });
    await withDeadline(1000, () => reserved.work());
    expect(budgetOf(server, 2)).toBeLessThanOrEqual(1000 - 200);
    expect(budgetOf(server, 2)).toBeGreaterThan(1000 - 200 - 300);
    const noReserve = client(server.url, { reserveMs: 0 });
    await withDeadline(1000, () => noReserve.work());
    expect(budgetOf(server, 3)).toBeLessThanOrEqual(1000);
    expect(budgetOf(server, 3)).toBeGreaterThan(1000 - 300);
  });

  it('an explicit deadline wins over the ambient one (shorter or longer)', async () => {
    const server = await startServer((_request, response) => sendJson(response, 200, { ok: true }));
    const hop = client(server.url);
    await withDeadline(3000, () => hop.work({ deadline: Deadline.after(400) }));
    expect(budgetOf(server, 0)).toBeLessThanOrEqual(400 - 20);
    expect(budgetOf(server, 0)).toBeGreaterThan(400 - 20 - 300);
    // The explicit deadline replaces the ambient one, even when it is later.
    await withDeadline(300, () => hop.work({ deadline: Deadline.after(3000) }));
    expect(budgetOf(server, 1)).toBeGreaterThan(3000 - 20 - 300);
    expect(budgetOf(server, 1)).toBeLessThanOrEqual(3000 - 20);
    // Still capped by the call's own timeoutMs.
    await withDeadline(300, () => hop.work({ deadline: Deadline.after(3000), timeoutMs: 500 }));
    expect(budgetOf(server, 2)).toBeLessThanOrEqual(500 - 20);
    // An expired explicit deadline fails without I/O despite a generous ambient one.
    const error = await failure(withDeadline(5000, () => hop.work({ deadline: Deadline.after(0) })));
    expect(error.code).toBe(ErrorCode.DEADLINE_EXCEEDED);
    expect(server.requests).toHaveLength(3);
  });

  it('a hanging server: the call ends with DEADLINE_EXCEEDED when the budget (minus the reserve) is spent', async () => {
    const server = await startServer(() => {
      // Never answers; the test helper destroys the socket when the test ends.
    });
    const hop = client(server.url);
    const started = performance.now();
    const error = await failure(withDeadline(600, () => hop.work()));
    const elapsed = performance.now() - started;
    expect(error.code).toBe(ErrorCode.DEADLINE_EXCEEDED);
    expect(error.requestSent).toBe(true);
    expect(elapsed).toBeGreaterThan(600 - 300);
    expect(elapsed).toBeLessThan(600 + 300);
    expect(server.requests).toHaveLength(1);
  });
});

// --- the three-hop chain ---------------------------------------------------------------------

/** What a hop saw of one request. */
interface HopRecord {
  /** The deadline header as received (undefined when absent). */
  header: string | undefined;
  /** req.deadline.remainingMs() when the handler started. */
  budgetMs: number;
  arrivedAt: number;
  /** How the hop's own downstream call ended, when it made one. */
  downstream?: { code: string; status?: number; elapsedMs: number; requestSent: boolean | undefined };
}

interface Hop {
  server: TestServer;
  records: HopRecord[];
  /** Budgets passed to onShed. */
  shed: number[];
}

type HopWork = (request: DeadlineRequest, record: HopRecord) => Promise<unknown>;

/**
 * A node:http server behind deadlineMiddleware. `work` runs inside the request's deadline;
 * a downstream DEADLINE_EXCEEDED (or a 504 from downstream) is answered 504 with a JSON body.
 */
async function startHop(work: HopWork, options: DeadlineServerOptions = {}): Promise<Hop> {
  const records: HopRecord[] = [];
  const shed: number[] = [];
  const middleware = deadlineMiddleware({
    maxMs: 5000,
    ...options,
    onShed: (_request, budgetMs) => shed.push(budgetMs),
  });
  const handle = async (request: DeadlineRequest, response: ServerResponse) => {
    const record: HopRecord = {
      header: request.headers[header] as string | undefined,
      budgetMs: request.deadline?.remainingMs() ?? Number.NaN,
      arrivedAt: performance.now(),
    };
    records.push(record);
    try {
      sendJson(response, 200, { ok: true, result: await work(request, record) });
    } catch (error) {
      if (!isTelescopeError(error)) {
        sendJson(response, 500, { error: String(error) });
        return;
      }
      record.downstream = {
        code: error.code,
        status: error instanceof HttpStatusError ? error.status : undefined,
        elapsedMs: performance.now() - record.arrivedAt,
        requestSent: error.requestSent,
      };
      const timedOut =
        error.code === ErrorCode.DEADLINE_EXCEEDED || (error instanceof HttpStatusError && error.status === 504);
      sendJson(response, timedOut ? 504 : 502, { error: timedOut ? 'DEADLINE_EXCEEDED' : error.code });
    }
  };
  const server = await startServer((request: IncomingMessage, response: ServerResponse) => {
    middleware(request, response, () => {
      void handle(request as DeadlineRequest, response);
    });
  });
  return { server, records, shed };
}

/** A raw request to a hop, with the caller's own header. */
function call(
  url: string,
  headers: OutgoingHttpHeaders,
): Promise<{ status: number; body: unknown; elapsedMs: number }> {
  const started = performance.now();
  return new Promise((resolve, reject) => {
    const outgoing = httpRequest(`${url}/work`, { headers, agent: false }, (response) => {
      const chunks: Buffer[] = [];
      response.on('data', (chunk: Buffer) => chunks.push(chunk));
      response.on('end', () =>
        resolve({
          status: response.statusCode ?? 0,
          body: JSON.parse(Buffer.concat(chunks).toString('utf8')),
          elapsedMs: performance.now() - started,
        }),
      );
    });
    outgoing.on('error', reject);
    outgoing.end();
  });
}

/** edge → middle → backend; each forwards through a telescope client. */
async function startChain(backendWork: HopWork, middleOptions: Partial<ClientOptions> = {}) {
  const backend = await startHop(backendWork);
  const toBackend = client(backend.server.url, middleOptions);
  const middle = await startHop(() => toBackend.work());
  const toMiddle = client(middle.server.url);
  const edge = await startHop(() => toMiddle.work());
  return { edge, middle, backend };
}

describe('three hops: edge → middle → backend', () => {
  it('each hop sees a strictly smaller budget (caller uses withDeadline)', async () => {
    const { edge, middle, backend } = await startChain(async () => ({ from: 'backend' }));
    const toEdge = client(edge.server.url);
    const answer = await withDeadline(1500, () => toEdge.work());
    expect(answer).toMatchObject({ ok: true, result: { ok: true, result: { ok: true, result: { from: 'backend' } } } });

    const [e, m, b] = [edge.records[0], middle.records[0], backend.records[0]];
    if (e === undefined || m === undefined || b === undefined) throw new Error('a hop saw no request');
    const headers = [Number(e.header), Number(m.header), Number(b.header)];
    // Every hop received an integer header.
    for (const record of [e, m, b]) expect(record.header).toMatch(/^\d+$/);
    // The caller's own budget: 1500 − 2 × reserve at most.
    expect(headers[0]).toBeLessThanOrEqual(1500 - 20);
    // Headers and the budgets each hop ran under strictly shrink.
    expect(headers[1]).toBeLessThan(headers[0] as number);
    expect(headers[2]).toBeLessThan(headers[1] as number);
    expect(m.budgetMs).toBeLessThan(e.budgetMs);
    expect(b.budgetMs).toBeLessThan(m.budgetMs);
    // Each next hop gets at most what this hop had on arrival minus twice its reserve.
    expect(headers[1]).toBeLessThanOrEqual(e.budgetMs - 20);
    expect(headers[2]).toBeLessThanOrEqual(m.budgetMs - 20);
    // …and not much less: nothing but the reserves and local work is lost.
    expect(headers[2]).toBeGreaterThan(1500 - 60 - 300);
    // A hop's deadline is the header it received (capped at maxMs).
    expect(e.budgetMs).toBeLessThanOrEqual(headers[0] as number);
    expect(m.budgetMs).toBeLessThanOrEqual(headers[1] as number);
    expect(b.budgetMs).toBeLessThanOrEqual(headers[2] as number);
    expect(edge.shed).toEqual([]);
    expect(backend.shed).toEqual([]);
  });

  it('an inbound budget over maxMs is capped at the edge and the cap propagates', async () => {
    const backend = await startHop(async () => 'done');
    const toBackend = client(backend.server.url);
    const edge = await startHop(() => toBackend.work(), { maxMs: 700 });
    const reply = await call(edge.server.url, { [header]: '60000' });
    expect(reply.status).toBe(200);
    expect(edge.records[0]?.budgetMs).toBeLessThanOrEqual(700);
    expect(Number(backend.records[0]?.header)).toBeLessThanOrEqual(700 - 20);
  });

  it('a hanging backend: the edge answers 504 within its budget, the middle stops at its own', async () => {
    let backendAbandoned = 0;
    const { edge, middle, backend } = await startChain(
      (request) =>
        new Promise((resolve) => {
          // Hangs until the middle gives up and closes the connection.
          request.socket.once('close', () => {
            backendAbandoned++;
            resolve('too late');
          });
        }),
    );
    const budget = 1500;
    const reply = await call(edge.server.url, { [header]: String(budget) });

    expect(reply.status).toBe(504);
    expect(reply.body).toEqual({ error: 'DEADLINE_EXCEEDED' });
    expect(reply.elapsedMs).toBeLessThan(budget + 500);
    // It waited for (most of) the budget: nothing gave up early.
    expect(reply.elapsedMs).toBeGreaterThan(budget - 300);

    const [e, m, b] = [edge.records[0], middle.records[0], backend.records[0]];
    if (e === undefined || m === undefined || b === undefined) throw new Error('a hop saw no request');
    expect(m.budgetMs).toBeLessThan(e.budgetMs);
    expect(b.budgetMs).toBeLessThan(m.budgetMs);
    // The middle stopped waiting for the backend at its own deadline (minus its reserve).
    expect(m.downstream?.code).toBe(ErrorCode.DEADLINE_EXCEEDED);
    expect(m.downstream?.requestSent).toBe(true);
    expect(m.downstream?.elapsedMs).toBeLessThanOrEqual(m.budgetMs + 300);
    expect(m.downstream?.elapsedMs).toBeGreaterThan(m.budgetMs - 300);
    // The edge saw the middle’s 504 or ran out itself just as the 504 arrived: both end the budget.
    const edgeSaw = e.downstream;
    expect(
      (edgeSaw?.code === ErrorCode.HTTP_STATUS && edgeSaw.status === 504) ||
        edgeSaw?.code === ErrorCode.DEADLINE_EXCEEDED,
      JSON.stringify(edgeSaw),
    ).toBe(true);
    expect(edgeSaw?.elapsedMs).toBeLessThanOrEqual(e.budgetMs + 300);
    // The middle, giving up, closed its connection to the backend: the hanging work is cancelled.
    await vi.waitFor(() => expect(backendAbandoned).toBe(1), { timeout: 2000 });
    expect(backend.shed).toEqual([]);
  });

  it('a request reaching the backend with its budget gone (header 0) is shed, not processed', async () => {
    let processed = 0;
    const backend = await startHop(async () => {
      processed++;
      return 'processed';
    });
    const reply = await call(backend.server.url, { [header]: '0' });
    expect(reply.status).toBe(504);
    expect(reply.body).toMatchObject({ error: 'DEADLINE_EXCEEDED' });
    expect(processed).toBe(0);
    expect(backend.records).toEqual([]);
    expect(backend.shed).toEqual([0]);
  });

  it('a middle whose callee would get a budget of 0 does not call it, whatever minAttemptMs says', async () => {
    let processed = 0;
    const backend = await startHop(async () => {
      processed++;
      return 'processed';
    });
    // minAttemptMs 0 with a large reserve: the attempt (≈150 ms) fits, the callee's share
    // (attempt − reserve) does not. Sending it would only buy a guaranteed shed.
    const toBackend = client(backend.server.url, { minAttemptMs: 0, reserveMs: 200 });
    const middle = await startHop(async (request) => {
      await delay((request.deadline?.remainingMs() ?? 0) - 350);
      return toBackend.work();
    });
    const reply = await call(middle.server.url, { [header]: '1000' });
    expect(reply.status).toBe(504);
    expect(middle.records[0]?.downstream).toMatchObject({ code: ErrorCode.DEADLINE_EXCEEDED, requestSent: false });
    expect(backend.server.requests).toEqual([]);
    expect(backend.shed).toEqual([]);
    expect(processed).toBe(0);
  });

  it('with default client options a spent budget is never sent on: no I/O, DEADLINE_EXCEEDED', async () => {
    let processed = 0;
    const { edge, middle, backend } = await startChain(async () => {
      processed++;
      return 'processed';
    });
    // The middle's budget is consumed before it calls the backend.
    const toBackend = client(backend.server.url);
    const slowMiddle = await startHop(async (request) => {
      await delay(request.deadline?.remainingMs() ?? 0);
      return toBackend.work();
    });
    const reply = await call(slowMiddle.server.url, { [header]: '200' });
    expect(reply.status).toBe(504);
    expect(slowMiddle.records[0]?.downstream).toMatchObject({ code: ErrorCode.DEADLINE_EXCEEDED, requestSent: false });
    expect(backend.server.requests).toEqual([]);
    expect(processed).toBe(0);
    // The regular chain still works afterwards.
    expect((await call(edge.server.url, { [header]: '1000' })).status).toBe(200);
    expect(middle.records).toHaveLength(1);
    expect(processed).toBe(1);
  });
});
