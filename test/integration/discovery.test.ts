/**
 * Discovery end to end: `dnsDiscovery` against a hand-written UDP DNS responder on 127.0.0.1
 * (A records for real node:http servers bound to 127.0.0.2–127.0.0.4, all of 127.0.0.0/8
 * being loopback on Linux), and the generic `discovery: { subscribe }` path. Checked with
 * server-side counts: calls reach the resolved instances, a changed record set is used after
 * a refresh and the removed instance's sockets are closed, resolver failures keep the last
 * good set, and close() unsubscribes.
 */
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { describe, expect, it, onTestFinished } from 'vitest';
import type { ClientEvents } from '../../src/index.js';
import {
  type Client,
  createClient,
  type Discovery,
  dnsDiscovery,
  ErrorCode,
  type InstanceInput,
} from '../../src/index.js';
import { failure, waitFor } from '../helpers/assert.js';
import { startDns } from '../helpers/dns.js';
import { movies } from '../helpers/movies.js';
import { delay, sendJson, startServer } from '../helpers/server.js';

type MoviesClient = Client<typeof movies>;

// --- helpers ---------------------------------------------------------------------------------

function answer(request: IncomingMessage, response: ServerResponse): void {
  const id = Number(/^\/movies\/(\d+)$/.exec(request.url ?? '')?.[1] ?? 0);
  sendJson(response, 200, { id, title: 'Heat' });
}

interface AddressServer {
  readonly host: string;
  readonly port: number;
  readonly url: string;
  /** Requests received so far. */
  readonly requests: number;
  openSockets(): number;
}

/** A movie server on `host:port` (port 0: any), closed with its sockets when the test ends. */
async function startServerAt(host: string, port: number): Promise<AddressServer> {
  const sockets = new Set<Socket>();
  const state = { requests: 0 };
  const server = createServer((request, response) => {
    state.requests++;
    request.resume();
    request.on('end', () => answer(request, response));
  });
  server.on('connection', (socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  onTestFinished(
    () =>
      new Promise<void>((resolve) => {
        for (const socket of sockets) socket.destroy();
        server.close(() => resolve());
      }),
  );
  const bound = (server.address() as AddressInfo).port;
  return {
    host,
    port: bound,
    url: `http://${host}:${bound}`,
    get requests() {
      return state.requests;
    },
    openSockets: () => sockets.size,
  };
}

/** Servers on 127.0.0.2, .3 and .4, all on the same port (DNS gives addresses, not ports). */
async function threeHosts(): Promise<[AddressServer, AddressServer, AddressServer, number]> {
  for (let attempt = 0; ; attempt++) {
    const first = await startServerAt('127.0.0.2', 0);
    try {
      const second = await startServerAt('127.0.0.3', first.port);
      const third = await startServerAt('127.0.0.4', first.port);
      return [first, second, third, first.port];
    } catch (error) {
      // The port happened to be taken on another address: try another one.
      if (attempt > 5 || (error as { code?: string }).code !== 'EADDRINUSE') throw error;
    }
  }
}

function collect<E extends keyof ClientEvents>(client: MoviesClient, event: E): Array<ClientEvents[E]> {
  const seen: Array<ClientEvents[E]> = [];
  client.on(event, (payload) => seen.push(payload));
  return seen;
}

// --- tests -----------------------------------------------------------------------------------

describe('dnsDiscovery', () => {
  it('resolves A records, follows changes (draining removed instances), and keeps the last good set on failure', async () => {
    const [two, three, four, port] = await threeHosts();
    const dns = await startDns({ 'movies.test': ['127.0.0.2', '127.0.0.3'] });
    const errors: unknown[] = [];
    const client = createClient(movies, {
      discovery: dnsDiscovery('movies.test', {
        port,
        refreshMs: 200,
        servers: [dns.server],
        onError: (error) => errors.push(error),
      }),
      // Idle pooled sockets would otherwise stay open for the whole test.
      keepAliveTimeoutMs: 10_000,
    });
    const sets = collect(client, 'instances');
    try {
      // The first call waits for the first resolution.
      for (let index = 0; index < 40; index++) {
        expect(await client.getMovie({ id: index })).toEqual({ id: index, title: 'Heat' });
      }
      expect(dns.queries.length).toBeGreaterThan(0);
      expect(dns.queries[0]).toEqual({ name: 'movies.test', type: 1 });
      expect(two.requests).toBeGreaterThan(5);
      expect(three.requests).toBeGreaterThan(5);
      expect(four.requests).toBe(0);
      expect(two.openSockets()).toBeGreaterThan(0);
      expect(sets).toEqual([{ service: 'movies', instances: [two.url, three.url], removed: [] }]);

      // .2 leaves, .4 joins: after a refresh the new set is used and .2's sockets are closed.
      dns.records.set('movies.test', ['127.0.0.4', '127.0.0.3']);
      await waitFor('the new instance set', () => sets.length === 2, 2000);
      expect(sets[1]).toEqual({ service: 'movies', instances: [three.url, four.url], removed: [two.url] });
      await waitFor("the removed instance's sockets to close", () => two.openSockets() === 0, 2000);
      const atTwo = two.requests;
      for (let index = 0; index < 40; index++) await client.getMovie({ id: index });
      expect(two.requests).toBe(atTwo);
      expect(four.requests).toBeGreaterThan(5);
      expect(errors).toEqual([]);

      // SERVFAIL: onError is told, calls keep working on the last good set.
      dns.mode = 'servfail';
      await waitFor('onError after SERVFAIL', () => errors.length > 0, 3000);
      const beforeFailure = three.requests + four.requests;
      for (let index = 0; index < 20; index++) await client.getMovie({ id: index });
      expect(three.requests + four.requests).toBe(beforeFailure + 20);

      // No answer at all (the resolver times out): the same.
      dns.mode = 'drop';
      const errorsBeforeDrop = errors.length;
      await waitFor('onError after a resolver timeout', () => errors.length > errorsBeforeDrop, 4000);
      for (let index = 0; index < 20; index++) await client.getMovie({ id: index });
      expect(three.requests + four.requests).toBe(beforeFailure + 40);

      // An empty answer is not a set either.
      dns.mode = 'answer';
      dns.records.set('movies.test', []);
      const errorsBeforeEmpty = errors.length;
      await waitFor('onError after an empty answer', () => errors.length > errorsBeforeEmpty, 4000);
      for (let index = 0; index < 10; index++) await client.getMovie({ id: index });
      expect(sets).toHaveLength(2);
      expect(two.requests).toBe(atTwo);

      // Answers again: back to following the records.
      dns.records.set('movies.test', ['127.0.0.2']);
      await waitFor('the recovered instance set', () => sets.length === 3, 2000);
      expect(sets[2]).toEqual({ service: 'movies', instances: [two.url], removed: [three.url, four.url] });
      await client.getMovie({ id: 1 });
      expect(two.requests).toBe(atTwo + 1);
      await waitFor("the removed instances' sockets to close", () => three.openSockets() + four.openSockets() === 0);
    } finally {
      await client.close();
    }
    // close() stops the refresh timer: at most a query already under way, then silence
    // (a running timer would have sent two more in 450 ms).
    const queries = dns.queries.length;
    await delay(450);
    expect(dns.queries.length).toBeLessThanOrEqual(queries + 1);
  });

  it('onError sees REFUSED; a call waiting for a first set that never comes fails within its budget', async () => {
    const dns = await startDns({});
    dns.mode = 'refused';
    const errors: unknown[] = [];
    const server = await startServer((request, response) => answer(request, response));
    const client = createClient(movies, {
      discovery: dnsDiscovery('movies.test', {
        port: server.port,
        refreshMs: 200,
        servers: [dns.server],
        onError: (error) => errors.push(error),
      }),
    });
    try {
      await waitFor('onError after REFUSED', () => errors.length > 0);
      expect((errors[0] as { code?: string }).code).toBe('EREFUSED');
      const start = performance.now();
      const error = await failure(client.getMovie({ id: 1 }, { timeoutMs: 300 }));
      const ms = performance.now() - start;
      expect(ms).toBeGreaterThanOrEqual(290);
      expect(ms).toBeLessThan(1000);
      expect(error.code).toBe(ErrorCode.NO_HEALTHY_INSTANCE);
      expect(error.requestSent).toBe(false);
      expect(error.endpoint).toBe('getMovie');
      expect(server.requests).toHaveLength(0);
    } finally {
      await client.close();
    }
  });
});

describe('discovery: subscribe()', () => {
  it('waits for the first set, follows later sets (closing removed pools), and close() unsubscribes', async () => {
    const first = await startServer((request, response) => answer(request, response));
    const second = await startServer((request, response) => answer(request, response));
    let deliver: ((instances: InstanceInput[]) => void) | undefined;
    let unsubscribed = 0;
    const discovery: Discovery = {
      subscribe(onInstances) {
        deliver = onInstances;
        // The first set arrives a little later, as from a real registry.
        const timer = setTimeout(() => onInstances([first.url]), 50);
        return () => {
          clearTimeout(timer);
          unsubscribed++;
        };
      },
    };
    const client = createClient(movies, { discovery, keepAliveTimeoutMs: 10_000 });
    const sets = collect(client, 'instances');
    try {
      expect(deliver).toBeDefined();
      const start = performance.now();
      expect(await client.getMovie({ id: 1 })).toEqual({ id: 1, title: 'Heat' });
      expect(performance.now() - start).toBeGreaterThanOrEqual(40);
      expect(first.requests).toHaveLength(1);
      expect(first.openSockets()).toBe(1);

      deliver?.([{ url: second.url, zone: 'z' }]);
      expect(sets).toEqual([
        { service: 'movies', instances: [first.url], removed: [] },
        { service: 'movies', instances: [second.url], removed: [first.url] },
      ]);
      await waitFor("the removed instance's socket to close", () => first.openSockets() === 0);
      for (let index = 0; index < 5; index++) await client.getMovie({ id: index });
      expect(first.requests).toHaveLength(1);
      expect(second.requests).toHaveLength(5);

      // An invalid set is ignored: the last good one stays.
      deliver?.([]);
      deliver?.(['not a url']);
      expect(sets).toHaveLength(2);
      await client.getMovie({ id: 6 });
      expect(second.requests).toHaveLength(6);
      expect(unsubscribed).toBe(0);
    } finally {
      await client.close();
    }
    expect(unsubscribed).toBe(1);
  });

  it('a source that delivers synchronously inside subscribe() works, an invalid first set included', async () => {
    const server = await startServer((request, response) => answer(request, response));
    const client = createClient(movies, {
      discovery: {
        subscribe(onInstances) {
          onInstances([server.url]);
          return () => {};
        },
      },
    });
    try {
      expect(await client.getMovie({ id: 2 })).toEqual({ id: 2, title: 'Heat' });
    } finally {
      await client.close();
    }
    // An invalid first set is logged and ignored, not thrown out of createClient().
    const warnings: string[] = [];
    const logger = {
      child: () => logger,
      debug: () => {},
      info: () => {},
      warn: (_object: Record<string, unknown>, message?: string) => void warnings.push(message ?? ''),
      error: () => {},
    };
    const invalid = createClient(movies, {
      logger,
      discovery: {
        subscribe(onInstances) {
          onInstances([]);
          return () => {};
        },
      },
    });
    try {
      expect(warnings).toEqual(['discovery delivered invalid instances; keeping the last set']);
      const error = await failure(invalid.getMovie({ id: 1 }, { timeoutMs: 100 }));
      expect(error.code).toBe(ErrorCode.NO_HEALTHY_INSTANCE);
    } finally {
      await invalid.close();
    }
  });

  it('a call waiting for the first set ends with close() (CLIENT_CLOSED) or its signal (ABORTED)', async () => {
    const client = createClient(movies, { discovery: { subscribe: () => () => {} }, timeoutMs: 5000 });
    const controller = new AbortController();
    const aborted = failure(client.getMovie({ id: 1 }, { signal: controller.signal }));
    const closed = failure(client.getMovie({ id: 2 }));
    await delay(20);
    controller.abort(new Error('caller gave up'));
    const abortError = await Promise.race([aborted, delay(1000).then(() => undefined)]);
    expect(abortError?.code).toBe(ErrorCode.ABORTED);
    expect((abortError?.cause as Error | undefined)?.message).toBe('caller gave up');
    await client.close();
    const closeError = await Promise.race([closed, delay(1000).then(() => undefined)]);
    expect(closeError?.code).toBe(ErrorCode.CLIENT_CLOSED);
    expect(closeError?.requestSent).toBe(false);
  });

  it('the wait for the first set counts against the budget', async () => {
    const server = await startServer((request, response) => answer(request, response));
    const client = createClient(movies, {
      discovery: {
        subscribe(onInstances) {
          const timer = setTimeout(() => onInstances([server.url]), 150);
          return () => clearTimeout(timer);
        },
      },
    });
    try {
      const call = client.getMovie({ id: 1 }, { timeoutMs: 400 });
      expect(await call).toEqual({ id: 1, title: 'Heat' });
      // 150 ms of the 400 ms were spent waiting: the callee is told what is left.
      const budget = Number(server.requests[0]?.headers['x-request-timeout-ms']);
      expect(budget).toBeGreaterThan(0);
      expect(budget).toBeLessThan(300);
    } finally {
      await client.close();
    }
  });
});
