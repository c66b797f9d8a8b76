/**
 * Cancellation follows the caller across hops: when a client abandons a request handled under
 * `deadlineMiddleware` / `fastifyDeadline`, every telescope call started while handling it is
 * cancelled at once (`ABORTED`), and the next hop sees its connection closed. Real Express 5,
 * Fastify 5 and node:http servers on 127.0.0.1; every observation is made on the server side.
 */
import { getEventListeners } from 'node:events';
import { createServer, request as httpRequest, type IncomingMessage, type ServerResponse } from 'node:http';
import express from 'express';
import Fastify from 'fastify';
import { describe, expect, it, onTestFinished } from 'vitest';
import { z } from 'zod';
import {
  createClient,
  currentDeadline,
  defineService,
  ErrorCode,
  endpoint,
  isTelescopeError,
  type TelescopeError,
} from '../../src/index.js';
import { deadlineMiddleware, fastifyDeadline } from '../../src/server/index.js';
import { waitFor } from '../helpers/assert.js';
import { delay, listenOnLoopback, sendJson } from '../helpers/server.js';

const hop = defineService({
  name: 'hop',
  endpoints: { work: endpoint({ method: 'GET', path: '/work', response: z.object({ ok: z.boolean() }) }) },
});

/** What the backend saw of one request: when it arrived, whether it was answered, when its connection closed. */
interface Observed {
  arrivedAt: number;
  closedAt?: number;
  answered: boolean;
  attemptHeader?: string | string[] | undefined;
}

/** A backend that never answers: it records each request's arrival and its connection's close. */
async function hangingBackend(): Promise<{ url: string; seen: Observed[] }> {
  const seen: Observed[] = [];
  const server = createServer((request, response) => {
    const observed: Observed = {
      arrivedAt: performance.now(),
      answered: false,
      attemptHeader: request.headers['x-request-attempt'],
    };
    seen.push(observed);
    request.resume();
    response.on('close', () => {
      observed.answered = response.writableFinished;
    });
    // The request's own connection: closed by the caller, not answered and kept alive.
    request.socket.once('close', () => {
      observed.closedAt = performance.now();
    });
  });
  const listening = await listenOnLoopback(server);
  onTestFinished(listening.close);
  return { url: listening.url, seen };
}

/**
 * A client that sends a request with a 3 s budget and abandons it (closes the socket) after
 * `afterMs`, and not before the request has reached the backend (`arrived`): on a loaded
 * machine the hops may take longer than that to get there. Resolves with the time it left.
 */
async function abandon(url: string, afterMs: number, arrived: () => boolean): Promise<number> {
  const outgoing = httpRequest(`${url}/work`, { headers: { 'x-request-timeout-ms': '3000' }, agent: false });
  outgoing.on('error', () => undefined);
  outgoing.end();
  await delay(afterMs);
  await waitFor('the request to reach the backend', arrived, 2000);
  outgoing.destroy();
  return performance.now();
}

/** An Express hop: deadline middleware, then a handler that calls `next` and reports the outcome. */
async function expressHop(nextUrl: string, failures: unknown[]): Promise<string> {
  const client = createClient(hop, { instances: [nextUrl], timeoutMs: 3000, retry: false, breaker: false });
  onTestFinished(() => client.close());
  const app = express();
  app.use(deadlineMiddleware({ maxMs: 5000 }));
  app.get('/work', async (_request, response) => {
    try {
      sendJson(response, 200, await client.work());
    } catch (error) {
      failures.push(error);
      if (!response.headersSent && !response.destroyed) sendJson(response, 502, { ok: false });
    }
  });
  const listening = await listenOnLoopback(createServer(app));
  onTestFinished(listening.close);
  return listening.url;
}

describe('cancellation across hops', () => {
  it('three Express hops: the edge client leaves after 100 ms, the backend connection closes within 200 ms', async () => {
    const backend = await hangingBackend();
    const middleFailures: unknown[] = [];
    const edgeFailures: unknown[] = [];
    const middle = await expressHop(backend.url, middleFailures);
    const edge = await expressHop(middle, edgeFailures);

    const abortedAt = await abandon(edge, 100, () => backend.seen.length === 1);
    await waitFor('backend.seen[0]?.closedAt !== undefined', () => backend.seen[0]?.closedAt !== undefined, 2000);

    // Server-side observations: one request reached the backend, and its connection closed
    // unanswered within 200 ms of the edge client leaving (its deadline was 3 s away).
    expect(backend.seen).toHaveLength(1);
    const [observed] = backend.seen as [Observed];
    expect(observed.answered).toBe(false);
    expect((observed.closedAt as number) - abortedAt).toBeLessThan(200);
    expect(observed.arrivedAt).toBeLessThan(abortedAt);
    // Each hop's call failed as cancelled, not as a timeout.
    await waitFor(
      'edgeFailures.length === 1 && middleFailures.length',
      () => edgeFailures.length === 1 && middleFailures.length === 1,
      1000,
    );
    for (const error of [...edgeFailures, ...middleFailures]) {
      expect(isTelescopeError(error) && error.code).toBe(ErrorCode.ABORTED);
    }
  });

  it('Fastify: the client leaves, the downstream call is cancelled and the backend connection closes', async () => {
    const backend = await hangingBackend();
    const client = createClient(hop, { instances: [backend.url], timeoutMs: 3000, retry: false, breaker: false });
    onTestFinished(() => client.close());
    const failures: TelescopeError[] = [];
    const app = Fastify();
    await app.register(fastifyDeadline, { maxMs: 5000 });
    app.get('/work', async (_request, reply) => {
      try {
        return await client.work();
      } catch (error) {
        failures.push(error as TelescopeError);
        return reply.code(502).send({ ok: false });
      }
    });
    await app.listen({ port: 0, host: '127.0.0.1' });
    onTestFinished(() => app.close());
    const address = app.server.address() as { port: number };

    const abortedAt = await abandon(`http://127.0.0.1:${address.port}`, 100, () => backend.seen.length === 1);
    await waitFor('backend.seen[0]?.closedAt !== undefined', () => backend.seen[0]?.closedAt !== undefined, 2000);
    expect(backend.seen).toHaveLength(1);
    expect(backend.seen[0]?.answered).toBe(false);
    expect((backend.seen[0]?.closedAt as number) - abortedAt).toBeLessThan(200);
    await waitFor('failures.length === 1', () => failures.length === 1, 1000);
    expect(failures[0]?.code).toBe(ErrorCode.ABORTED);
  });

  it('a call started after the client left fails at once without I/O; a call with its own signal is cancelled too', async () => {
    const backend = await hangingBackend();
    const client = createClient(hop, { instances: [backend.url], timeoutMs: 3000, retry: false, breaker: false });
    onTestFinished(() => client.close());
    const outcomes: Array<{ code?: string; requestSent?: boolean }> = [];
    const handler = deadlineMiddleware({ maxMs: 5000 });
    const own = new AbortController();
    const server = createServer((request: IncomingMessage, response: ServerResponse) =>
      handler(request, response, async () => {
        // The first call has its own signal as well: the inbound cancellation still reaches it.
        const first = client.work({ signal: own.signal }).catch((error: TelescopeError) => error);
        const error = (await first) as TelescopeError;
        outcomes.push({ code: error.code, requestSent: error.requestSent });
        // The client is gone now: a new call does no I/O.
        const late = (await client.work().catch((failure: TelescopeError) => failure)) as TelescopeError;
        outcomes.push({ code: late.code, requestSent: late.requestSent });
      }),
    );
    const listening = await listenOnLoopback(server);
    onTestFinished(listening.close);

    await abandon(listening.url, 100, () => backend.seen.length === 1);
    await waitFor('outcomes.length === 2', () => outcomes.length === 2, 2000);
    expect(outcomes[0]?.code).toBe(ErrorCode.ABORTED);
    expect(outcomes[1]).toEqual({ code: ErrorCode.ABORTED, requestSent: false });
    expect(backend.seen).toHaveLength(1);
    // The link to the call's own signal was removed when the call settled.
    expect(getEventListeners(own.signal, 'abort')).toHaveLength(0);
  });

  it('keep-alive: answered requests leave no listener behind and their calls are not cancelled', async () => {
    const backendServer = createServer((request, response) => {
      request.resume();
      sendJson(response, 200, { ok: true });
    });
    const backend = await listenOnLoopback(backendServer);
    onTestFinished(backend.close);
    const client = createClient(hop, { instances: [backend.url], timeoutMs: 3000 });
    onTestFinished(() => client.close());
    const handler = deadlineMiddleware({ maxMs: 5000 });
    const signals: AbortSignal[] = [];
    const socketListeners: number[] = [];
    const server = createServer((request, response) =>
      handler(request, response, async () => {
        await client.work();
        const signal = currentDeadline()?.cancellation?.signal as AbortSignal;
        signals.push(signal);
        socketListeners.push(request.socket.listenerCount('close'));
        sendJson(response, 200, { ok: true });
      }),
    );
    const listening = await listenOnLoopback(server);
    onTestFinished(listening.close);
    const edge = createClient(hop, { instances: [listening.url], timeoutMs: 3000, connections: 1 });
    onTestFinished(() => edge.close());

    for (let index = 0; index < 20; index++) await edge.work();

    expect(signals).toHaveLength(20);
    // One keep-alive connection served them all, and nothing accumulated on its socket.
    expect(new Set(socketListeners).size).toBe(1);
    for (const signal of signals) {
      expect(signal.aborted).toBe(false);
      expect(getEventListeners(signal, 'abort')).toHaveLength(0);
    }
  });
});
