/**
 * A Redis Cluster master killed under load: `withCache` on `redisCache({ cluster })`, 200 calls/s
 * for 20 s over 300 keys, the master of a third of the slots SIGKILLed after 5 s. Counts the
 * calls that failed (must be 0), what reached the service (split by whether the key's slot was
 * on the dead master), and how long until the dead master's keys were cache hits again.
 *
 * `node --import tsx bench/cache/failover.ts [--seconds 20] [--rate 200] [--kill-at 5] [--out bench/cache/FAILOVER.md]`
 *
 * Real servers on loopback: 3 masters + 3 replicas (`cluster-node-timeout 1000`,
 * `cluster-require-full-coverage no`), a node:http movie service in this process. No local tier,
 * so every call asks Redis.
 */

import { writeFile } from 'node:fs/promises';
import { createServer } from 'node:http';
import os from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { redisCache, withCache } from '../../src/cache/index.js';
import { createClient } from '../../src/index.js';
import { movies } from '../../test/helpers/movies.js';
import { startRedisCluster } from '../../test/helpers/services.js';

const here = dirname(fileURLToPath(import.meta.url));
const { values } = parseArgs({
  options: {
    seconds: { type: 'string', default: '20' },
    rate: { type: 'string', default: '200' },
    'kill-at': { type: 'string', default: '5' },
    keys: { type: 'string', default: '300' },
    out: { type: 'string', default: join(here, 'FAILOVER.md') },
  },
});
const seconds = Number(values.seconds);
const rate = Number(values.rate);
const killAt = Number(values['kill-at']);
const keys = Number(values.keys);

async function main(): Promise<void> {
  await import('redis');
  const requests = new Map<number, number>();
  const server = createServer((request, response) => {
    const id = Number(/^\/movies\/(\d+)$/.exec(request.url ?? '')?.[1]);
    requests.set(id, (requests.get(id) ?? 0) + 1);
    response.setHeader('content-type', 'application/json');
    response.end(JSON.stringify({ id, title: `movie ${id}` }));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address() as { port: number };
  const cluster = await startRedisCluster({ masters: 3, replicasPerMaster: 1, nodeTimeoutMs: 1000 });
  try {
    const remote = redisCache({ cluster: { rootNodes: [cluster.urls[0] as string] }, timeoutMs: 100 });
    await remote.connect();
    const cached = withCache(
      createClient(movies, { instances: [`http://127.0.0.1:${address.port}`], timeoutMs: 2000 }),
      { remote, local: false, jitter: 0, endpoints: { getMovie: { ttlMs: 3_600_000, key: (p) => `movie:${p.id}` } } },
    );
    for (let id = 0; id < keys; id++) await cached.getMovie({ id });
    while (cached.stats().cache.remote?.pendingWrites !== 0) await new Promise((resolve) => setTimeout(resolve, 10));
    for (const node of cluster.nodes) await node.command('WAIT', '0', '200').catch(() => {});
    const victim = (await cluster.masters())[0];
    if (victim === undefined) throw new Error('no master');
    const onVictim = new Set<number>();
    for (let id = 0; id < keys; id++) {
      if ((await cluster.masterOf(`{telescope:movies:getMovie:movie:${id}}`)).port === victim.port) onVictim.add(id);
    }
    const warm = new Map(requests);

    let calls = 0;
    let errors = 0;
    let killedAt = 0;
    let lastVictimMiss = 0;
    const perSecond: Array<{ calls: number; hits: number; service: number }> = [];
    const latencies: number[] = [];
    const started = performance.now();
    const inFlight = new Set<Promise<void>>();
    while (performance.now() - started < seconds * 1000) {
      const elapsed = performance.now() - started;
      if (killedAt === 0 && elapsed >= killAt * 1000) {
        await victim.kill();
        killedAt = performance.now();
      }
      const second = Math.floor(elapsed / 1000);
      perSecond[second] ??= { calls: 0, hits: 0, service: 0 };
      const bucket = perSecond[second];
      const id = calls++ % keys;
      const callStarted = performance.now();
      const call = cached.withMetadata.getMovie({ id }).then(
        (result) => {
          latencies.push(performance.now() - callStarted);
          bucket.calls++;
          if (result.cacheStatus === 'remote') bucket.hits++;
          else {
            bucket.service++;
            if (onVictim.has(id) && killedAt > 0) lastVictimMiss = performance.now();
          }
        },
        () => {
          errors++;
        },
      );
      inFlight.add(call);
      void call.finally(() => inFlight.delete(call));
      // Paced on the wall clock: calls at `rate` per second, whatever each one takes.
      const next = started + (calls * 1000) / rate;
      const wait = next - performance.now();
      if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait));
    }
    await Promise.all(inFlight);
    let victimRequests = 0;
    let otherRequests = 0;
    for (const [id, count] of requests) {
      const extra = count - (warm.get(id) ?? 0);
      if (onVictim.has(id)) victimRequests += extra;
      else otherRequests += extra;
    }
    const victimCalls = Array.from({ length: calls }, (_, index) => index % keys).filter((id) =>
      onVictim.has(id),
    ).length;
    latencies.sort((a, b) => a - b);
    const pct = (q: number) =>
      (latencies[Math.min(latencies.length - 1, Math.ceil(q * latencies.length) - 1)] ?? 0).toFixed(2);
    const stats = cached.stats().cache.remote;
    const lines = [
      `- calls: ${calls} in ${seconds} s (${rate}/s), ${keys} keys, master ${victim.port} SIGKILLed at ${killAt} s`,
      `- caller-visible errors: **${errors}**`,
      `- keys whose slot was on the dead master: ${onVictim.size} of ${keys}; calls for them: ${victimCalls}`,
      `- service requests during the run: **${victimRequests}** for the dead master's keys, **${otherRequests}** for the others`,
      `- the dead master's keys were cache hits again ${((lastVictimMiss - killedAt) / 1000).toFixed(2)} s after the kill (last service call for one of them)`,
      `- call latency p50 ${pct(0.5)} ms, p99 ${pct(0.99)} ms, max ${pct(1)} ms`,
      `- remote errors: ${JSON.stringify(stats?.errors)}, timeouts ${stats?.timeouts}`,
    ];
    const timeline = perSecond.map(
      (bucket, second) => `| ${second} | ${bucket.calls} | ${bucket.hits} | ${bucket.service} |`,
    );
    const doc = `# Redis Cluster failover under load

Generated ${new Date().toISOString()} by \`node --import tsx bench/cache/failover.ts${process.argv.length > 2 ? ` ${process.argv.slice(2).join(' ')}` : ''}\`
on ${os.cpus()[0]?.model ?? 'unknown'} × ${os.cpus().length}, Node.js ${process.version}, load average at the end ${os
      .loadavg()
      .map((load) => load.toFixed(2))
      .join(', ')} (a shared machine).

3 masters + 3 replicas on loopback (\`cluster-node-timeout 1000\`, \`cluster-require-full-coverage no\`),
\`redisCache({ cluster, timeoutMs: 100 })\`, \`withCache({ local: false })\` so that every call asks Redis.

${lines.join('\n')}

| second | calls | cache hits | service |
| -----: | ----: | ---------: | ------: |
${timeline.join('\n')}
`;
    console.log(doc);
    if (values.out !== 'none') await writeFile(values.out as string, doc);
    await cached.close();
  } finally {
    await cluster.stop();
    server.close();
  }
}

main().catch((error: unknown) => {
  console.error(error);
  process.exit(1);
});
