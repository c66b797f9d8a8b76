/**
 * `concurrencyLimit()` on real node:http, Express and Fastify servers on 127.0.0.1: 503 with
 * Retry-After before the handler runs once the limit and the queue are full, requests whose
 * deadline header cannot cover the wait shed first, a limit that falls when the handler's
 * latency grows with load, stats and diagnostics-channel metrics, no timer left behind, and
 * option checking.
 */
import { subscribe, unsubscribe } from 'node:diagnostics_channel';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import express from 'express';
import Fastify from 'fastify';
import { Pool } from 'undici';
import { describe, expect, it, onTestFinished } from 'vitest';
import { ErrorCode, isTelescopeError, systemClock, wheelOf } from '../../src/index.js';
import { type ConcurrencyLimitOptions, concurrencyLimit } from '../../src/server/index.js';
import { delay, listenOnLoopback } from '../helpers/server.js';

type Kind = 'node:http' | 'express' | 'fastify';
const kinds: Kind[] = ['node:http', 'express', 'fastify'];

/** A server whose handler takes `latencyMs()`; counts handler runs. */
async function startApp(kind: Kind, options: ConcurrencyLimitOptions, latencyMs: (inHandler: number) => number) {
  const limiter = concurrencyLimit(options);
  const counts = { handled: 0, inHandler: 0 };
  const work = async () => {
    counts.handled++;
    counts.inHandler++;
    await delay(latencyMs(counts.inHandler));
    counts.inHandler--;
  };
  let url: string;
  if (kind === 'fastify') {
    const app = Fastify();
    await app.register(limiter.fastify);
    app.get('/', async () => {
      await work();
      return { ok: true };
    });
    await app.listen({ port: 0, host: '127.0.0.1' });
    onTestFinished(() => app.close());
    url = `http://127.0.0.1:${(app.server.address() as AddressInfo).port}`;
  } else {
    let server: ReturnType<typeof createServer>;
    if (kind === 'express') {
      const app = express();
      app.use(limiter);
      app.get('/', async (_request, response) => {
        await work();
        response.json({ ok: true });
      });
      server = createServer(app);
    } else {
      server = createServer((request: IncomingMessage, response: ServerResponse) => {
        limiter(request, response, async () => {
          await work();
          response.writeHead(200, { 'content-type': 'application/json' });
          response.end('{"ok":true}');
        });
      });
    }
    const listening = await listenOnLoopback(server);
    onTestFinished(listening.close);
    url = listening.url;
  }
  const pool = new Pool(url, { connections: null });
  onTestFinished(() => pool.destroy());
  const send = async (budgetMs?: number) => {
    const response = await pool.request({
      path: '/',
      method: 'GET',
      headers: budgetMs === undefined ? {} : { 'x-request-timeout-ms': String(budgetMs) },
    });
    const body = await response.body.text();
    return { status: response.statusCode, retryAfter: response.headers['retry-after'], body };
  };
  return { limiter, counts, send };
}

describe.each(kinds)('concurrencyLimit on %s', (kind) => {
  it('at the limit with a full queue: 503 + Retry-After at once, the handler never runs', async () => {
    const app = await startApp(kind, { minConcurrent: 2, maxConcurrent: 2, maxQueue: 2, retryAfterS: 3 }, () => 300);
    const started = performance.now();
    const replies = await Promise.all(Array.from({ length: 6 }, () => app.send(5000)));
    const statuses = replies.map((reply) => reply.status).sort();
    expect(statuses).toEqual([200, 200, 200, 200, 503, 503]);
    const shed = replies.filter((reply) => reply.status === 503);
    for (const reply of shed) {
      expect(reply.retryAfter).toBe('3');
      expect(JSON.parse(reply.body)).toMatchObject({ error: 'OVERLOADED' });
    }
    expect(app.counts.handled).toBe(4);
    // Two rounds of 300 ms: the queued pair waited for the first pair, nothing more.
    expect(performance.now() - started).toBeLessThan(5000);
    expect(app.limiter.stats()).toMatchObject({
      limit: 2,
      inflight: 0,
      queued: 0,
      admitted: 4,
      shed: { limit: 2, deadline: 0, 'queue-timeout': 0 },
    });
  });

  it('sheds first what its deadline header says cannot finish: at arrival, and from a full queue', async () => {
    const app = await startApp(kind, { minConcurrent: 2, maxConcurrent: 2, maxQueue: 1 }, () => 100);
    // Learn the RTT (about 100 ms): a few windows of calls.
    for (let round = 0; round < 12; round++) await Promise.all([app.send(5000), app.send(5000)]);
    expect(app.limiter.stats().rttMs).toBeGreaterThan(50);
    const busy = [app.send(5000), app.send(5000)];
    await delay(20);
    // 30 ms cannot cover one 100 ms RTT: shed at arrival, not queued.
    const hopeless = await app.send(30);
    expect(hopeless.status).toBe(503);
    expect(app.limiter.stats().shed.deadline).toBe(1);
    // A queued request whose budget covers only its wait gives its place to one with time.
    const short = app.send(130);
    await delay(5);
    const long = app.send(5000);
    const [shortReply, longReply] = await Promise.all([short, long, ...busy]);
    expect(shortReply.status).toBe(503);
    expect(longReply.status).toBe(200);
    expect(app.limiter.stats().shed.deadline).toBe(2);
    expect(app.limiter.stats().shed.limit).toBe(0);
  });
});

describe('concurrencyLimit learns the limit', () => {
  it('falls to near what the handler can do when its latency grows with load, shedding the rest fast', async () => {
    // The handler does 8 requests at once in 20 ms; beyond that, latency grows in proportion.
    const app = await startApp('node:http', { adaptive: 'gradient2', minConcurrent: 2, maxQueue: 0 }, (inHandler) =>
      inHandler <= 8 ? 20 : (20 * inHandler) / 8,
    );
    const okLatencies: number[] = [];
    let shed = 0;
    let running = true;
    const loops = Array.from({ length: 100 }, async () => {
      while (running) {
        const started = performance.now();
        const reply = await app.send(5000);
        if (reply.status === 200) okLatencies.push(performance.now() - started);
        else {
          shed++;
          await delay(20);
        }
      }
    });
    await delay(4000);
    running = false;
    await Promise.all(loops);
    const { limit } = app.limiter.stats();
    expect(limit).toBeLessThan(50);
    expect(shed).toBeGreaterThan(0);
    expect(app.limiter.stats().shed.limit).toBe(shed);
  }, 20_000);
});

describe('concurrencyLimit metrics', () => {
  it('publishes limit changes and sheds on telescope:limit:* and leaves no timer or waiter', async () => {
    const changes: unknown[] = [];
    const sheds: unknown[] = [];
    const onChange = (message: unknown) => changes.push(message);
    const onShed = (message: unknown) => sheds.push(message);
    subscribe('telescope:limit:change', onChange);
    subscribe('telescope:limit:shed', onShed);
    try {
      const app = await startApp(
        'node:http',
        { name: 'api', minConcurrent: 1, maxConcurrent: 1, maxQueue: 1 },
        () => 50,
      );
      const replies = await Promise.all(Array.from({ length: 5 }, () => app.send(5000)));
      expect(replies.filter((reply) => reply.status === 503)).toHaveLength(3);
      expect(sheds).toEqual(Array.from({ length: 3 }, () => ({ side: 'server', name: 'api', reason: 'limit' })));
      for (let round = 0; round < 30; round++) await app.send(5000);
      expect(app.limiter.stats()).toMatchObject({ inflight: 0, queued: 0 });
      expect(wheelOf(systemClock).size).toBe(0);
    } finally {
      unsubscribe('telescope:limit:change', onChange);
      unsubscribe('telescope:limit:shed', onShed);
    }
  });
});

describe('bad concurrencyLimit options', () => {
  const cases: Array<[string, unknown, RegExp]> = [
    ['unknown algorithm', { adaptive: 'cubic' }, /adaptive must be one of 'gradient2', 'vegas', 'aimd'/],
    ['min > max', { minConcurrent: 9, maxConcurrent: 3 }, /minConcurrent must be an integer ≤ maxConcurrent \(3\)/],
    ['negative queue', { maxQueue: -2 }, /maxQueue must be an integer in \[0, 1000000\]/],
    ['fractional max', { maxConcurrent: 10.5 }, /maxConcurrent must be an integer in \[1, 1000000\]/],
    ['fractional Retry-After', { retryAfterS: 0.5 }, /retryAfterS must be an integer in \[0, 86400\]/],
    ['bad header name', { headerName: 'x bad' }, /headerName must be an HTTP header name/],
    ['empty name', { name: '' }, /name must be a non-empty string/],
  ];
  it.each(cases)('%s: INVALID_OPTION at creation, naming the option and its range', (_name, options, message) => {
    let caught: unknown;
    try {
      concurrencyLimit(options as ConcurrencyLimitOptions);
    } catch (error) {
      caught = error;
    }
    expect(isTelescopeError(caught) && caught.code).toBe(ErrorCode.INVALID_OPTION);
    expect((caught as Error).message).toMatch(message);
  });
});
