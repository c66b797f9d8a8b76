/**
 * "Defaults never shed healthy load": an open loop of `rate` calls/s for `durationS` to
 * `instances` real node:http servers on 127.0.0.1 answering in `latencyMs`, through a client
 * created with default options. Reports every outcome by code, the calls in flight at the
 * peak and the bulkhead's limit. The integration test runs it short; the full 20 s run:
 *
 * `node --import tsx bench/overload/healthy-load.ts [--rate 2000] [--seconds 20] [--instances 3] [--latency 100]`
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { parseArgs } from 'node:util';
import { createClient, defineService, endpoint, isTelescopeError } from '../../src/index.js';

const service = defineService({
  name: 'healthy',
  endpoints: { get: endpoint({ method: 'GET', path: '/item' }) },
});

export interface HealthyLoadResult {
  sent: number;
  ok: number;
  /** Failures by error code. */
  failures: Record<string, number>;
  /** Most calls in flight at once (client side). */
  peakInflight: number;
  /** The bulkhead's limit at the end, and its lowest and highest over the run. */
  limit: { end: number; min: number; max: number };
  p99Ms: number;
  seconds: number;
}

/** Servers answering `{}` after `latencyMs`; `close()` ends them and their sockets. */
export async function startHealthyServers(
  count: number,
  latencyMs: number,
): Promise<{ urls: string[]; close(): Promise<void> }> {
  const servers: Server[] = [];
  for (let index = 0; index < count; index++) {
    const server = createServer((_request, response) => {
      setTimeout(() => {
        response.writeHead(200, { 'content-type': 'application/json', 'content-length': '2' });
        response.end('{}');
      }, latencyMs);
    });
    server.keepAliveTimeout = 10_000;
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    servers.push(server);
  }
  return {
    urls: servers.map((server) => `http://127.0.0.1:${(server.address() as AddressInfo).port}`),
    close: async () => {
      await Promise.all(
        servers.map(
          (server) =>
            new Promise<void>((resolve) => {
              server.closeAllConnections();
              server.close(() => resolve());
            }),
        ),
      );
    },
  };
}

/** Runs the open loop against fresh servers and a default client; everything is closed after. */
export async function runHealthyLoad(options: {
  rate: number;
  durationS: number;
  instances: number;
  latencyMs: number;
}): Promise<HealthyLoadResult> {
  const servers = await startHealthyServers(options.instances, options.latencyMs);
  const client = createClient(service, {
    instances: servers.urls,
    ...(process.env.NOBULKHEAD ? { bulkhead: false } : {}),
  });
  const failures: Record<string, number> = {};
  const latencies: number[] = [];
  let ok = 0;
  let sent = 0;
  let inflight = 0;
  let peakInflight = 0;
  const limit = { end: 0, min: Number.POSITIVE_INFINITY, max: 0 };
  const pending = new Set<Promise<void>>();
  const total = Math.round(options.rate * options.durationS);
  const startedAt = performance.now();
  try {
    await new Promise<void>((resolve) => {
      const tick = setInterval(() => {
        const due = Math.min(total, Math.floor(((performance.now() - startedAt) / 1000) * options.rate));
        while (sent < due) {
          sent++;
          inflight++;
          if (inflight > peakInflight) peakInflight = inflight;
          const callStartedAt = performance.now();
          const call = client.get().then(
            () => {
              ok++;
              latencies.push(performance.now() - callStartedAt);
            },
            (error: unknown) => {
              const code = isTelescopeError(error) ? error.code : 'UNKNOWN';
              failures[code] = (failures[code] ?? 0) + 1;
            },
          );
          const tracked = call.finally(() => {
            inflight--;
            pending.delete(tracked);
          });
          pending.add(tracked);
        }
        const current = client.stats().bulkhead?.limit ?? 0;
        limit.min = Math.min(limit.min, current);
        limit.max = Math.max(limit.max, current);
        if (sent >= total) {
          clearInterval(tick);
          resolve();
        }
      }, 5);
    });
    await Promise.all(pending);
    limit.end = client.stats().bulkhead?.limit ?? 0;
  } finally {
    await client.close();
    await servers.close();
  }
  latencies.sort((a, b) => a - b);
  return {
    sent,
    ok,
    failures,
    peakInflight,
    limit,
    p99Ms: Math.round(latencies[Math.floor(latencies.length * 0.99)] ?? 0),
    seconds: Math.round((performance.now() - startedAt) / 100) / 10,
  };
}

const isMain = process.argv[1] !== undefined && import.meta.url.endsWith(process.argv[1].replace(/^.*\//, '/'));
if (isMain) {
  const { values } = parseArgs({
    options: {
      rate: { type: 'string', default: '2000' },
      seconds: { type: 'string', default: '20' },
      instances: { type: 'string', default: '3' },
      latency: { type: 'string', default: '100' },
    },
  });
  const result = await runHealthyLoad({
    rate: Number(values.rate),
    durationS: Number(values.seconds),
    instances: Number(values.instances),
    latencyMs: Number(values.latency),
  });
  console.log(JSON.stringify(result, null, 2));
  const failed = Object.values(result.failures).reduce((n, count) => n + count, 0);
  console.log(failed === 0 && result.ok === result.sent ? 'PASS: no call shed or failed' : 'FAIL');
  process.exitCode = failed === 0 ? 0 : 1;
}
