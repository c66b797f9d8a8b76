/**
 * `startInstances` and chaos on real sockets, driven by real telescope clients: server-side
 * counts per instance and endpoint, stop/start on the same port (connection refused while
 * down), and each fault (hang, latency, errorRate, reset, slow body, refuse) with the error
 * a client sees and what its retry does about it; seeded chaos replays exactly; `chaos()` on
 * a foreign server and `chaosProxy`; `close()` leaves no server, socket or timer behind.
 */
import { createServer, type Server } from 'node:http';
import { type AddressInfo, connect } from 'node:net';
import { describe, expect, it } from 'vitest';
import { createClient, ErrorCode, type TelescopeError } from '../../src/index.js';
import {
  chaos,
  chaosProxy,
  type InstanceGroup,
  seededRandom,
  startInstances,
  useInstances,
} from '../../src/testing/index.js';
import { failure } from '../helpers/assert.js';
import { movies } from '../helpers/movies.js';

type Movies = typeof movies;

const handlers = {
  getMovie: ({ id }: { id: number }) => ({ id, title: 'Heat' }),
  health: () => 'ok',
};

/** Whether a TCP connection to `url` is refused. */
function refused(url: string): Promise<boolean> {
  const { hostname, port } = new URL(url);
  return new Promise((resolve) => {
    const socket = connect(Number(port), hostname);
    socket.once('connect', () => {
      socket.destroy();
      resolve(false);
    });
    socket.once('error', (error: NodeJS.ErrnoException) => resolve(error.code === 'ECONNREFUSED'));
  });
}

const tcpResources = () => process.getActiveResourcesInfo().filter((name) => name.startsWith('TCP')).length;

async function timed<T>(work: () => Promise<T>): Promise<{ ms: number; result: T }> {
  const started = performance.now();
  const result = await work();
  return { ms: performance.now() - started, result };
}

describe('startInstances', () => {
  it('starts real instances and counts requests per instance and endpoint, server side', async () => {
    const group = await useInstances(movies, handlers, { count: 3 });
    expect(group.instances).toHaveLength(3);
    expect(new Set(group.instances).size).toBe(3);
    const client = group.client({ balancer: 'round-robin' });
    for (let id = 1; id <= 9; id++) await client.getMovie({ id });
    for (let index = 0; index < 3; index++) await client.health();
    const counts = group.requests();
    expect(counts.map((entry) => entry.url)).toEqual(group.instances);
    for (const entry of counts) {
      expect(entry).toMatchObject({ total: 4, byEndpoint: { getMovie: 3, health: 1 }, byStatus: { '200': 4 } });
    }
    expect(group.instance(1).requests()).toEqual(counts[1]);
    group.resetRequests();
    expect(group.requests().every((entry) => entry.total === 0)).toBe(true);
    expect(() => group.instance(3)).toThrow(/instances 0 to 2/);
  });

  it('takes handlers per instance', async () => {
    const group = await useInstances(
      movies,
      (index) => ({ getMovie: ({ id }, _body, context) => ({ id, title: `instance ${index}/${context.index}` }) }),
      { count: 2 },
    );
    const titles = new Set<string>();
    const client = group.client({ balancer: 'round-robin' });
    for (let id = 1; id <= 4; id++) titles.add((await client.getMovie({ id })).title);
    expect([...titles].sort()).toEqual(['instance 0/0', 'instance 1/1']);
  });

  it('stop() refuses connections on the same port; start() serves there again', async () => {
    const group = await useInstances(movies, handlers, { count: 2 });
    const down = group.instance(0);
    const client = group.client({ retry: false, breaker: false, outlier: false, balancer: 'round-robin' });
    await client.getMovie({ id: 1 });
    await down.stop();
    expect(down.running).toBe(false);
    expect(down.openConnections()).toBe(0);
    expect(await refused(down.url)).toBe(true);
    const codes = new Set<string>();
    for (let id = 1; id <= 4; id++) {
      await client.getMovie({ id }).catch((error: TelescopeError) => codes.add(error.code));
    }
    expect(codes).toEqual(new Set([ErrorCode.CONNECT_FAILED]));
    await down.start();
    expect(down.running).toBe(true);
    expect(down.url).toBe(group.instances[0]);
    for (let id = 1; id <= 4; id++) await client.getMovie({ id });
  });
});

describe('chaos on an instance', () => {
  it('hang on one of three: with attemptTimeoutMs 150 every call succeeds, the retry goes elsewhere', async () => {
    const group = await useInstances(movies, handlers, { count: 3 });
    await group.instance(1).chaos({ hang: true });
    const client = group.client({ attemptTimeoutMs: 150, random: seededRandom(3) });
    const retries: string[] = [];
    client.on('retry', (event) => retries.push(event.code));
    for (let id = 1; id <= 20; id++) {
      const { ms, result } = await timed(() => client.getMovie({ id }));
      expect(result).toEqual({ id, title: 'Heat' });
      expect(ms).toBeLessThan(600);
    }
    const hung = group.instance(1).requests();
    expect(hung.faults.hang).toBeGreaterThan(0);
    expect(hung.byStatus).toEqual({});
    expect(retries.length).toBe(hung.faults.hang);
    expect(new Set(retries)).toEqual(new Set([ErrorCode.ATTEMPT_TIMEOUT]));
  });

  it('latencyMs delays each answer; a shorter budget fails with DEADLINE_EXCEEDED', async () => {
    const group = await useInstances(movies, handlers);
    await group.instance(0).chaos({ latencyMs: 200 });
    const client = group.client({ retry: false });
    const { ms } = await timed(() => client.getMovie({ id: 1 }));
    expect(ms).toBeGreaterThanOrEqual(195);
    expect(ms).toBeLessThan(600);
    expect((await failure(client.getMovie({ id: 1 }, { timeoutMs: 100 }))).code).toBe(ErrorCode.DEADLINE_EXCEEDED);
    await group.instance(0).chaos({ latencyMs: [50, 80] });
    const ranged = await timed(() => client.getMovie({ id: 1 }));
    expect(ranged.ms).toBeGreaterThanOrEqual(45);
    await group.instance(0).chaos();
    expect((await timed(() => client.getMovie({ id: 1 }))).ms).toBeLessThan(100);
    expect(group.instance(0).requests().faults.latency).toBe(3);
  });

  it('errorRate answers 503 without running the handler; the client retries on another instance', async () => {
    let handled = 0;
    const group = await useInstances(
      movies,
      {
        getMovie: ({ id }) => {
          handled++;
          return { id, title: 'Heat' };
        },
      },
      { count: 2 },
    );
    await group.instance(0).chaos({ errorRate: 1 });
    const plain = group.client({ retry: false, balancer: 'round-robin', breaker: false, outlier: false });
    const error = await failure(plain.getMovie({ id: 1 }));
    expect(error).toMatchObject({ code: 'HTTP_STATUS', status: 503, retryable: true });
    const retrying = group.client({ balancer: 'round-robin', breaker: false, outlier: false });
    handled = 0;
    for (let id = 1; id <= 6; id++) await retrying.getMovie({ id });
    expect(handled).toBe(6);
    expect(group.instance(0).requests().faults.error).toBeGreaterThanOrEqual(3);
  });

  it('a seed makes errorRate replay exactly', async () => {
    const outcomes = async (seed: number) => {
      const group = await startInstances(movies, handlers, { seed });
      try {
        await group.instance(0).chaos({ errorRate: 0.3 });
        const client = group.client({ retry: false, breaker: false, outlier: false });
        const seen: number[] = [];
        for (let id = 1; id <= 40; id++) {
          seen.push(
            await client.getMovie({ id }).then(
              () => 200,
              (error: { status?: number }) => error.status ?? 0,
            ),
          );
        }
        return seen;
      } finally {
        await group.close();
      }
    };
    const first = await outcomes(7);
    expect(await outcomes(7)).toEqual(first);
    expect(await outcomes(8)).not.toEqual(first);
    const errors = first.filter((status) => status === 503).length;
    expect(errors).toBeGreaterThan(3);
    expect(errors).toBeLessThan(25);
  });

  it('reset destroys the connection mid-response: CONNECTION_RESET, retried elsewhere', async () => {
    let handled = 0;
    const group = await useInstances(
      movies,
      {
        getMovie: ({ id }) => {
          handled++;
          return { id, title: 'Heat' };
        },
        health: () => undefined,
      },
      { count: 2 },
    );
    await group.instance(0).chaos({ reset: 1 });
    const plain = group.client({ retry: false, balancer: 'round-robin', breaker: false, outlier: false });
    const error = await failure(plain.getMovie({ id: 1 }));
    expect(error.code).toBe(ErrorCode.CONNECTION_RESET);
    expect(error.instance).toBe(group.instances[0]);
    // The handler ran: the request reached the server before the connection broke.
    expect(handled).toBe(1);
    // An empty body is reset before any byte.
    await plain.health();
    expect((await failure(plain.health())).code).toBe(ErrorCode.CONNECTION_RESET);
    const retrying = group.client({ balancer: 'round-robin', breaker: false, outlier: false });
    for (let id = 1; id <= 4; id++) expect(await retrying.getMovie({ id })).toEqual({ id, title: 'Heat' });
    expect(group.instance(0).requests().faults.reset).toBeGreaterThanOrEqual(4);
    expect(group.instance(0).requests().byStatus).toEqual({});
  });

  it('slowBodyBytesPerSecond trickles the body: slow but whole, or ATTEMPT_TIMEOUT within the attempt limit', async () => {
    const group = await useInstances(movies, handlers);
    await group.instance(0).chaos({ slowBodyBytesPerSecond: 100 });
    const client = group.client({ retry: false, timeoutMs: 3000 });
    // {"id":1,"title":"Heat"}: 23 bytes at 100 B/s.
    const { ms, result } = await timed(() => client.getMovie({ id: 1 }));
    expect(result).toEqual({ id: 1, title: 'Heat' });
    expect(ms).toBeGreaterThanOrEqual(180);
    const limited = group.client({ retry: false, attemptTimeoutMs: 100 });
    expect((await failure(limited.getMovie({ id: 1 }))).code).toBe(ErrorCode.ATTEMPT_TIMEOUT);
    expect(group.instance(0).requests().faults.slow).toBe(2);
  });

  it('refuse closes the listener (CONNECT_FAILED); chaos() listens again on the same port', async () => {
    const group = await useInstances(movies, handlers, { count: 2 });
    const client = group.client({ retry: false, breaker: false, outlier: false, balancer: 'round-robin' });
    await client.getMovie({ id: 1 });
    await group.instance(1).chaos({ refuse: true });
    expect(group.instance(1).running).toBe(false);
    expect(await refused(group.instances[1] as string)).toBe(true);
    const codes: string[] = [];
    for (let id = 1; id <= 4; id++) {
      await client.getMovie({ id }).then(
        () => codes.push('ok'),
        (error: TelescopeError) => codes.push(error.code),
      );
    }
    expect(codes.filter((code) => code === ErrorCode.CONNECT_FAILED)).toHaveLength(2);
    const retrying = group.client({ breaker: false, outlier: false, balancer: 'round-robin' });
    for (let id = 1; id <= 4; id++) await retrying.getMovie({ id });
    await group.instance(1).chaos();
    expect(group.instance(1).running).toBe(true);
    expect(await refused(group.instances[1] as string)).toBe(false);
  });

  it('match limits faults to some requests; group.chaos() sets every instance', async () => {
    const group = await useInstances(movies, handlers, { count: 2 });
    await group.chaos({ errorRate: 1, match: (request) => request.url === '/health' });
    const client = group.client({ retry: false, breaker: false });
    expect(await client.getMovie({ id: 1 })).toEqual({ id: 1, title: 'Heat' });
    expect((await failure(client.health())).code).toBe(ErrorCode.HTTP_STATUS);
    expect((await failure(client.health())).code).toBe(ErrorCode.HTTP_STATUS);
    await group.chaos();
    expect(await client.health()).toBe('ok');
  });
});

describe('close()', () => {
  it('leaves no listener, socket or hung request behind', async () => {
    const before = tcpResources();
    const group: InstanceGroup<Movies> = await startInstances(movies, handlers, { count: 3 });
    await group.instance(0).chaos({ hang: true });
    await group.instance(1).chaos({ latencyMs: 5000 });
    await group.instance(2).chaos({ slowBodyBytesPerSecond: 1 });
    const client = createClient(movies, { instances: group.instances, retry: false, timeoutMs: 5000 });
    // One request held by each fault, in flight while everything is closed.
    const pending = Array.from({ length: 6 }, (_, id) =>
      client.getMovie({ id: id + 1 }).catch((error: TelescopeError) => error.code),
    );
    await new Promise((resolve) => setTimeout(resolve, 100));
    expect(tcpResources()).toBeGreaterThan(before);
    const closing = performance.now();
    await group.close();
    // Every server-side socket is gone when close() resolves, held requests included...
    for (let index = 0; index < 3; index++) expect(group.instance(index).openConnections()).toBe(0);
    // ...so the calls in flight fail at once (not at their 5 s deadline) with a reset.
    expect(await Promise.all(pending)).toEqual(Array(6).fill(ErrorCode.CONNECTION_RESET));
    expect(performance.now() - closing).toBeLessThan(1000);
    await client.close();
    // Server side is released when close() resolves; the client's sockets by client.close().
    expect(tcpResources()).toBe(before);
    for (const url of group.instances) expect(await refused(url)).toBe(true);
    await group.close();
    await expect(group.instance(0).start()).rejects.toThrow(/closed/);
  });
});

describe('chaos(server) on a server of your own', () => {
  async function ownServer(): Promise<{ server: Server; url: string }> {
    const server = createServer((_request, response) => {
      response.setHeader('content-type', 'application/json');
      response.end(JSON.stringify({ id: 1, title: 'Own' }));
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    return { server, url: `http://127.0.0.1:${(server.address() as AddressInfo).port}` };
  }

  it('puts faults in front of its request listeners, and remove() restores them', async () => {
    const { server, url } = await ownServer();
    const client = createClient(movies, { instances: [url], retry: false, breaker: false });
    try {
      const faults = chaos(server, { errorRate: 1 });
      expect((await failure(client.getMovie({ id: 1 }))).code).toBe(ErrorCode.HTTP_STATUS);
      await faults.set({ reset: 1 });
      expect((await failure(client.getMovie({ id: 1 }))).code).toBe(ErrorCode.CONNECTION_RESET);
      await faults.set({ hang: true });
      expect((await failure(client.getMovie({ id: 1 }, { timeoutMs: 100 }))).code).toBe(ErrorCode.DEADLINE_EXCEEDED);
      await faults.set({ refuse: true });
      expect(await refused(url)).toBe(true);
      await faults.set();
      expect(await client.getMovie({ id: 1 })).toEqual({ id: 1, title: 'Own' });
      expect(faults.faults).toMatchObject({ error: 1, reset: 1, hang: 1 });
      await faults.remove();
      expect(server.listeners('request')).toHaveLength(1);
      expect(await client.getMovie({ id: 1 })).toEqual({ id: 1, title: 'Own' });
    } finally {
      await client.close();
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
    }
  });
});

describe('chaosProxy', () => {
  it('relays to the target with faults, and closes cleanly', async () => {
    const group = await useInstances(movies, handlers);
    const proxy = await chaosProxy(group.instances[0] as string, { latencyMs: 150 });
    const client = createClient(movies, { instances: [proxy.url], retry: false });
    try {
      const { ms, result } = await timed(() => client.getMovie({ id: 5 }));
      expect(result).toEqual({ id: 5, title: 'Heat' });
      expect(ms).toBeGreaterThanOrEqual(145);
      await proxy.set({ reset: 1 });
      expect((await failure(client.getMovie({ id: 5 }))).code).toBe(ErrorCode.CONNECTION_RESET);
      await proxy.set();
      expect(await client.getMovie({ id: 6 })).toEqual({ id: 6, title: 'Heat' });
      expect(proxy.requests()).toBe(3);
      // The target saw every relayed request, the reset one included.
      expect(group.instance(0).requests().total).toBe(3);
    } finally {
      await client.close();
      await proxy.close();
    }
    expect(await refused(proxy.url)).toBe(true);
  });

  it('answers 502 when the target is down', async () => {
    const group = await useInstances(movies, handlers);
    const proxy = await chaosProxy(group.instances[0] as string);
    const client = createClient(movies, { instances: [proxy.url], retry: false });
    try {
      await group.instance(0).stop();
      expect(await failure(client.getMovie({ id: 1 }))).toMatchObject({ status: 502 });
    } finally {
      await client.close();
      await proxy.close();
    }
  });
});
