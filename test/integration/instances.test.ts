/**
 * Instance health end to end through `createClient`, against real node:http (and raw TCP)
 * servers on 127.0.0.1, checked with server-side counts: active health checks (failing,
 * hanging, garbage and redirecting check endpoints; early return from an ejection), slow start
 * of an instance added by discovery (on an injected clock), zone spillover, and bounded runs of
 * the flaky-one and slow-one numbers (full-length numbers: bench/instances/run.ts).
 */
import { createServer as createTcpServer, type Socket } from 'node:net';
import { Registry } from 'prom-client';
import { describe, expect, it } from 'vitest';
import {
  type ClientEvents,
  type ClientOptions,
  createClient,
  type Discovery,
  type InstanceInput,
  systemClock,
  wheelOf,
} from '../../src/index.js';
import { prometheusMetrics } from '../../src/prometheus/index.js';
import { waitFor } from '../helpers/assert.js';
import { manualClock } from '../helpers/clock.js';
import { movies } from '../helpers/movies.js';
import { seededRandom } from '../helpers/random.js';
import {
  closedPort,
  delay,
  type Handler,
  listenOnLoopback,
  sendJson,
  startServer,
  type TestServer,
} from '../helpers/server.js';

const answer: Handler = (request, response) => {
  if (request.url === '/healthz') {
    sendJson(response, 200, { ok: true });
    return;
  }
  const id = Number(/^\/movies\/(\d+)$/.exec(request.url ?? '')?.[1] ?? 0);
  sendJson(response, 200, { id, title: 'Heat' });
};

const calls = (server: TestServer) => server.requests.filter((request) => request.url !== '/healthz').length;
const checks = (server: TestServer) => server.requests.filter((request) => request.url === '/healthz').length;

function collect<E extends keyof ClientEvents>(
  client: { on: (event: E, listener: (payload: ClientEvents[E]) => void) => () => void },
  event: E,
) {
  const seen: Array<ClientEvents[E]> = [];
  client.on(event, (payload) => seen.push(payload));
  return seen;
}

/** A raw TCP server that answers every request with bytes that are not HTTP. */
async function garbageServer() {
  const server = createTcpServer((socket: Socket) => {
    socket.on('data', () => socket.end('\x00\x01 this is not HTTP \xff\r\n\r\n'));
    socket.on('error', () => {});
  });
  const listening = await listenOnLoopback(server);
  return listening;
}

describe('active health checks', () => {
  it('an instance whose check answers 503 leaves rotation after unhealthyThreshold checks and returns when it passes', async () => {
    const control = { healthy: true };
    const sick = await startServer((request, response, body) => {
      if (request.url === '/healthz') sendJson(response, control.healthy ? 200 : 503, {});
      else answer(request, response, body);
    });
    const fine = await startServer(answer);
    const client = createClient(movies, {
      instances: [sick.url, fine.url],
      breaker: false,
      healthCheck: { path: '/healthz', intervalMs: 100, timeoutMs: 80, unhealthyThreshold: 2, healthyThreshold: 2 },
    });
    const health = collect(client, 'health');
    try {
      await waitFor('first checks', () => checks(sick) >= 1 && checks(fine) >= 1, 3000);
      control.healthy = false;
      await waitFor('sick marked unhealthy', () => health.length === 1, 3000);
      expect(health[0]).toMatchObject({ service: 'movies', instance: sick.url, healthy: false });
      expect(client.stats().instances.find((instance) => instance.url === sick.url)).toMatchObject({
        healthy: false,
        ejected: false,
      });
      expect(client.stats().instances.find((instance) => instance.url === sick.url)?.healthy).toBe(false);
      const before = calls(sick);
      for (let index = 0; index < 40; index++) await client.getMovie({ id: index });
      expect(calls(sick)).toBe(before);
      control.healthy = true;
      await waitFor('sick back', () => health.length === 2, 3000);
      expect(health[1]).toMatchObject({ instance: sick.url, healthy: true });
      for (let index = 0; index < 40; index++) await client.getMovie({ id: index });
      expect(calls(sick)).toBeGreaterThan(before);
    } finally {
      await client.close();
    }
  });

  it('a check that hangs, answers garbage or redirects fails; nothing throws; no timer outlives close()', async () => {
    const clock = manualClock(0);
    const hanging = await startServer((request, response, body) => {
      if (request.url !== '/healthz') answer(request, response, body);
    });
    const redirecting = await startServer((request, response, body) => {
      if (request.url !== '/healthz') {
        answer(request, response, body);
        return;
      }
      response.writeHead(302, { location: 'http://127.0.0.1:1/healthz' });
      response.end();
    });
    const garbage = await garbageServer();
    const fine = await startServer(answer);
    const unhandled: unknown[] = [];
    const onUnhandled = (reason: unknown) => unhandled.push(reason);
    process.on('unhandledRejection', onUnhandled);
    const client = createClient(movies, {
      instances: [hanging.url, redirecting.url, garbage.url, fine.url],
      clock,
      random: seededRandom(3),
      breaker: false,
      healthCheck: { path: '/healthz', intervalMs: 1000, timeoutMs: 900, unhealthyThreshold: 2, healthyThreshold: 1 },
    });
    const health = collect(client, 'health');
    try {
      // Client time moves 50 ms per 5 ms of real time, so real answers arrive inside the
      // 900 ms check timeout and the hanging check times out on the client clock.
      for (let step = 0; step < 70 && health.length < 3; step++) {
        clock.advance(50);
        await delay(5);
      }
      await waitFor('three unhealthy', () => health.length === 3, 3000);
      expect(new Set(health.map((event) => event.instance))).toEqual(
        new Set([hanging.url, redirecting.url, garbage.url]),
      );
      expect(health.every((event) => !event.healthy)).toBe(true);
      // Only the healthy instance takes calls now.
      for (let index = 0; index < 10; index++) await client.getMovie({ id: index });
      expect(calls(fine)).toBe(10);
    } finally {
      await client.close();
      process.off('unhandledRejection', onUnhandled);
      await garbage.close();
    }
    // No check is scheduled and nothing re-arms: the shared timer wheel's last native timer
    // fires once for nothing, and then the clock has no timer left.
    expect(wheelOf(clock).size).toBe(0);
    clock.advance(60_000);
    expect(clock.pending()).toBe(0);
    expect(unhandled).toEqual([]);
  });

  it('an instance ejected for consecutive failures returns early once its checks pass', async () => {
    const control = { failing: true };
    const flapping = await startServer((request, response, body) => {
      if (request.url === '/healthz') {
        sendJson(response, control.failing ? 503 : 200, {});
      } else if (control.failing) {
        response.writeHead(503);
        response.end();
      } else {
        answer(request, response, body);
      }
    });
    const fine = await startServer(answer);
    const client = createClient(movies, {
      instances: [flapping.url, fine.url],
      breaker: false,
      outlier: { consecutiveFailures: 2, baseEjectionMs: 60_000 },
      healthCheck: { path: '/healthz', intervalMs: 100, timeoutMs: 80, unhealthyThreshold: 5, healthyThreshold: 2 },
    });
    const ejections = collect(client, 'eject');
    const returns = collect(client, 'return');
    try {
      for (let index = 0; index < 30 && ejections.length === 0; index++) await client.getMovie({ id: index });
      expect(ejections).toHaveLength(1);
      const started = performance.now();
      control.failing = false;
      await waitFor('early return', () => returns.length === 1, 3000);
      expect(returns[0]).toMatchObject({ instance: flapping.url, reason: 'health-check' });
      // Back long before the 60 s ejection would have ended.
      expect(performance.now() - started).toBeLessThan(3000);
    } finally {
      await client.close();
    }
    expect(wheelOf(systemClock).size).toBe(0);
  });
});

describe('slow start', () => {
  it('an instance added by discovery gets ≤ 15% of its steady share in its first second, all of it after the window', async () => {
    const servers = [await startServer(answer), await startServer(answer), await startServer(answer)];
    const added = await startServer(answer);
    const clock = manualClock(0);
    let deliver!: (instances: InstanceInput[]) => void;
    const discovery: Discovery = {
      subscribe(onInstances) {
        deliver = onInstances;
        onInstances(servers.map((server) => server.url));
        return () => {};
      },
    };
    const client = createClient(movies, {
      discovery,
      clock,
      random: seededRandom(5),
      breaker: false,
      slowStartMs: 10_000,
    });
    try {
      for (let index = 0; index < 30; index++) await client.getMovie({ id: index });
      deliver([...servers, added].map((server) => server.url));
      // Virtual second one: 10 calls every 10 ms of client time, 1000 calls in all.
      for (let step = 0; step < 100; step++) {
        await Promise.all(Array.from({ length: 10 }, (_, index) => client.getMovie({ id: index })));
        clock.advance(10);
      }
      const steadyShare = 1000 / 4;
      expect(calls(added) / steadyShare).toBeLessThanOrEqual(0.15);
      clock.advance(10_000);
      const before = calls(added);
      for (let step = 0; step < 100; step++) {
        await Promise.all(Array.from({ length: 10 }, (_, index) => client.getMovie({ id: index })));
      }
      const share = (calls(added) - before) / steadyShare;
      expect(share).toBeGreaterThan(0.8);
      expect(share).toBeLessThan(1.2);
    } finally {
      await client.close();
    }
  });
});

describe('zones', () => {
  it('2 local instances of 6, one down: the survivor keeps ≤ 1.5× its steady load, the rest spills to zone b', async () => {
    const local = [await startServer(answer), await startServer(answer)];
    const remote = [
      await startServer(answer),
      await startServer(answer),
      await startServer(answer),
      await startServer(answer),
    ];
    const downPort = await closedPort();
    const instances = (down: boolean): InstanceInput[] => [
      { url: local[0]!.url, zone: 'a' },
      { url: down ? `http://127.0.0.1:${downPort}` : local[1]!.url, zone: 'a' },
      ...remote.map((server) => ({ url: server.url, zone: 'b' })),
    ];
    const options: ClientOptions = {
      zone: 'a',
      breaker: false,
      random: seededRandom(9),
      outlier: { consecutiveFailures: 3 },
    };
    const steadyClient = createClient(movies, { ...options, instances: instances(false) });
    const run = async (client: typeof steadyClient) => {
      for (let step = 0; step < 60; step++) {
        await Promise.all(Array.from({ length: 5 }, (_, index) => client.getMovie({ id: index })));
      }
    };
    try {
      await run(steadyClient);
    } finally {
      await steadyClient.close();
    }
    const steady = calls(local[0]!);
    expect(steady).toBeGreaterThan(100);
    expect(remote.reduce((sum, server) => sum + calls(server), 0)).toBe(0);
    for (const server of [...local, ...remote]) server.requests.length = 0;

    const degradedClient = createClient(movies, { ...options, instances: instances(true) });
    const ejections = collect(degradedClient, 'eject');
    try {
      await run(degradedClient);
    } finally {
      await degradedClient.close();
    }
    expect(ejections).toHaveLength(1);
    expect(calls(local[0]!) / steady).toBeLessThanOrEqual(1.5);
    const spilled = remote.map(calls);
    expect(spilled.reduce((sum, count) => sum + count, 0)).toBeGreaterThan(0.3 * 300);
    for (const count of spilled) expect(count).toBeGreaterThan(0);
  });
});

/** Open-loop load: `perSecond` calls a second for `seconds`; returns each call's outcome and latency. */
async function openLoop(
  client: { getMovie: (params: { id: number }) => Promise<unknown> },
  perSecond: number,
  seconds: number,
) {
  const results: Array<{ at: number; ok: boolean; ms: number }> = [];
  const pending: Array<Promise<void>> = [];
  const start = performance.now();
  const total = Math.round(perSecond * seconds);
  for (let index = 0; index < total; index++) {
    const due = start + (index * 1000) / perSecond;
    const wait = due - performance.now();
    if (wait > 1) await delay(wait);
    const began = performance.now();
    pending.push(
      client.getMovie({ id: index }).then(
        () => void results.push({ at: began - start, ok: true, ms: performance.now() - began }),
        () => void results.push({ at: began - start, ok: false, ms: performance.now() - began }),
      ),
    );
  }
  await Promise.all(pending);
  return results;
}

describe('the numbers, bounded (bench/instances/run.ts runs them at full length)', () => {
  it('flaky-one: one of 3 answers 503 to 10% of calls; failure-percentage ejection leaves it ≤ 5% of attempts after the first interval, callers see ≤ 0.5% errors', async () => {
    let count = 0;
    const flaky = await startServer((request, response, body) => {
      if (count++ % 10 === 9) {
        response.writeHead(503);
        response.end();
      } else {
        answer(request, response, body);
      }
    });
    const others = [await startServer(answer), await startServer(answer)];
    const metrics = prometheusMetrics({ registry: new Registry() });
    const client = createClient(movies, {
      instances: [flaky.url, ...others.map((server) => server.url)],
      outlier: { failurePercentage: 5, minRequests: 20, intervalMs: 1000 },
    });
    const ejections = collect(client, 'eject');
    try {
      const results = await openLoop(client, 200, 1.5);
      await waitFor('ejected', () => ejections.length > 0, 2000);
      const flakyBefore = flaky.requests.length;
      const othersBefore = others.reduce((sum, server) => sum + server.requests.length, 0);
      results.push(...(await openLoop(client, 200, 2)));
      const flakyAfter = flaky.requests.length - flakyBefore;
      const othersAfter = others.reduce((sum, server) => sum + server.requests.length, 0) - othersBefore;
      expect(ejections[0]).toMatchObject({ instance: flaky.url, reason: 'failure-percentage' });
      // The decision is a metric too (no instance URL in the labels).
      const exposition = await metrics.registry.metrics();
      expect(exposition).toMatch(/telescope_ejections_total\{service="movies",reason="failure-percentage"\} [1-9]/);
      expect(exposition).not.toContain(flaky.url);
      expect(flakyAfter / (flakyAfter + othersAfter)).toBeLessThanOrEqual(0.05);
      const errors = results.filter((result) => !result.ok).length;
      expect(errors / results.length).toBeLessThanOrEqual(0.005);
    } finally {
      metrics.stop();
      await client.close();
    }
  });

  it('slow-one: one of 3 answers in 50 ms, the others in 10 ms; p2c-ewma sends it ≤ 10% of calls', async () => {
    const slowly =
      (ms: number): Handler =>
      (request, response, body) =>
        void setTimeout(() => answer(request, response, body), ms);
    const slow = await startServer(slowly(50));
    const fast = [await startServer(slowly(10)), await startServer(slowly(10))];
    const client = createClient(movies, {
      instances: [slow.url, ...fast.map((server) => server.url)],
      balancer: 'p2c-ewma',
    });
    try {
      const results = await openLoop(client, 100, 3);
      expect(results.every((result) => result.ok)).toBe(true);
      const share = slow.requests.length / (slow.requests.length + fast[0]!.requests.length + fast[1]!.requests.length);
      expect(share).toBeLessThanOrEqual(0.1);
      // stats() shows why: the latency average the balancer weighs each instance by.
      const latencies = client.stats().instances.map((instance) => instance.latencyMs ?? 0);
      expect(latencies[0]).toBeGreaterThan(latencies[1]!);
      expect(latencies[0]).toBeGreaterThan(latencies[2]!);
    } finally {
      await client.close();
    }
  });
});
