/**
 * The cache benchmark: what a cached call costs on each path, next to what it replaces.
 *
 * `node --import tsx bench/cache/run.ts [--rounds 5] [--scale 1] [--out bench/cache/RESULTS.md]`
 *
 * - local hit: `withCache` (default tiers), a key already in the local LRU;
 * - remote hit: `withCache({ local: false, remote: redisCache })`, a key already in Redis, next to
 *   a raw node-redis `GET` of the same entry on its own connection (the floor);
 * - remote hit on a Redis Cluster (`redisCache({ cluster })`, 3 masters), and through
 *   `zoneReplicated()` over two redis-servers, found in the local zone or, after a local miss, in
 *   the other zone (the fallback's extra cost next to one raw GET);
 * - miss: every call a new key (Redis read that misses, the service call, the write-behind),
 *   next to the same call on the raw client (no cache), for the miss overhead; and the same
 *   miss with the default in-memory remote tier.
 *
 * One call at a time (latency, not throughput). The movie service runs in another process
 * (`bench/overhead/target.ts`), redis-server on a free loopback port (`--save ''`). Rounds are
 * interleaved: each round runs every case once. Per case it reports the mean from the batch
 * time, and p50/p99 from a second pass timed call by call.
 */
import { fork } from 'node:child_process';
import { readFile, writeFile } from 'node:fs/promises';
import os from 'node:os';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { createClient as createRedisClient } from 'redis';
import { memoryCache, redisCache, withCache, zoneReplicated } from '../../src/cache/index.js';
import { createClient } from '../../src/index.js';
import { findBinary, startRedis, startRedisCluster } from '../../test/helpers/services.js';
import { movies } from '../overhead/movie-service.js';

const here = dirname(fileURLToPath(import.meta.url));
const root = join(here, '..', '..');

interface Case {
  name: string;
  /** What the row is compared with, if anything. */
  versus?: string;
  iterations: number;
  run: (index: number) => Promise<unknown>;
}

interface Measured {
  meanUs: number[];
  samples: number[];
}

const { values } = parseArgs({
  options: {
    rounds: { type: 'string', default: '5' },
    scale: { type: 'string', default: '1' },
    out: { type: 'string', default: join(here, 'RESULTS.md') },
  },
});
const rounds = Number(values.rounds);
const scale = Number(values.scale);
if (!(Number.isInteger(rounds) && rounds > 0)) throw new Error('--rounds must be a positive integer');
if (!(scale > 0)) throw new Error('--scale must be positive');

function percentile(sorted: number[], quantile: number): number {
  if (sorted.length === 0) return Number.NaN;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(quantile * sorted.length) - 1))] as number;
}

const median = (list: number[]) =>
  percentile(
    [...list].sort((a, b) => a - b),
    0.5,
  );

async function main(): Promise<void> {
  if (findBinary('redis-server') === undefined) throw new Error('redis-server is not on PATH');
  const startedAt = Date.now();
  const target = fork(join(root, 'bench/overhead/target.ts'), [], { execArgv: ['--import', 'tsx'], stdio: 'inherit' });
  const targetUrl = await new Promise<string>((resolve, reject) => {
    target.once('message', (message: { kind: string; urls: string[] }) => resolve(message.urls[0] as string));
    target.once('exit', (code) => reject(new Error(`target exited (${code})`)));
  });
  const redis = await startRedis();
  const redisVersion = /redis_version:(\S+)/.exec(String(await redis.command('INFO', 'server')))?.[1] ?? '?';

  const plain = createClient(movies, { instances: [targetUrl], timeoutMs: 2000 });
  const local = withCache(createClient(movies, { instances: [targetUrl], timeoutMs: 2000 }), {
    endpoints: { getMovie: { ttlMs: 3_600_000, key: (p) => `movie:${p.id}` } },
  });
  const remoteOnlyTier = redisCache({ url: redis.url, timeoutMs: 50 });
  await remoteOnlyTier.connect();
  const remoteOnly = withCache(createClient(movies, { instances: [targetUrl], timeoutMs: 2000 }), {
    local: false,
    remote: remoteOnlyTier,
    endpoints: { getMovie: { ttlMs: 3_600_000, key: (p) => `movie:${p.id}` } },
  });
  const missTier = redisCache({ url: redis.url, timeoutMs: 50 });
  await missTier.connect();
  const missRedis = withCache(createClient(movies, { instances: [targetUrl], timeoutMs: 2000 }), {
    local: { maxEntries: 1000 },
    remote: missTier,
    endpoints: { getMovie: { ttlMs: 3_600_000, key: (p) => `miss:${p.id}` } },
  });
  const missMemory = withCache(createClient(movies, { instances: [targetUrl], timeoutMs: 2000 }), {
    local: { maxEntries: 1000 },
    remote: memoryCache({ maxEntries: 1000 }),
    endpoints: { getMovie: { ttlMs: 3_600_000, key: (p) => `miss:${p.id}` } },
  });
  // Redis Cluster: 3 masters, no replicas (the hit path only).
  const cluster = await startRedisCluster({ masters: 3, replicasPerMaster: 0 });
  const clusterTier = redisCache({ cluster: { rootNodes: [cluster.urls[0] as string] }, timeoutMs: 50 });
  await clusterTier.connect();
  const clusterOnly = withCache(createClient(movies, { instances: [targetUrl], timeoutMs: 2000 }), {
    local: false,
    remote: clusterTier,
    endpoints: { getMovie: { ttlMs: 3_600_000, key: (p) => `movie:${p.id}` } },
  });
  // Zone replicas: zone a on the first Redis, zone b on a second one.
  const redisB = await startRedis();
  const zoneTier = (zone: 'a' | 'b') =>
    zoneReplicated({
      zone,
      replicas: { a: redisCache({ url: redis.url, timeoutMs: 50 }), b: redisCache({ url: redisB.url, timeoutMs: 50 }) },
    });
  const zoneLocal = withCache(createClient(movies, { instances: [targetUrl], timeoutMs: 2000 }), {
    local: false,
    remote: zoneTier('a'),
    namespace: 'zone-local:',
    endpoints: { getMovie: { ttlMs: 3_600_000, key: (p) => `movie:${p.id}` } },
  });
  const zoneFallback = withCache(createClient(movies, { instances: [targetUrl], timeoutMs: 2000 }), {
    local: false,
    remote: zoneTier('a'),
    namespace: 'zone-fallback:',
    endpoints: { getMovie: { ttlMs: 3_600_000, key: (p) => `movie:${p.id}` } },
  });
  const raw = createRedisClient({ url: redis.url });
  raw.on('error', () => {});
  await raw.connect();

  // Warm: one entry for the hit cases, and every path once.
  await local.getMovie({ id: 1 });
  await remoteOnly.getMovie({ id: 1 });
  await clusterOnly.getMovie({ id: 1 });
  await zoneLocal.getMovie({ id: 1 });
  await zoneFallback.getMovie({ id: 1 });
  await new Promise((resolve) => setTimeout(resolve, 50));
  // The fallback case: the entry only in zone b, so zone a misses on every read.
  await redis.command('DEL', 'zone-fallback:getMovie:movie:1');
  if ((await redisB.command('GET', 'zone-fallback:getMovie:movie:1')) === null) throw new Error('zone b has no entry');
  const remoteKey = 'telescope:movies:getMovie:movie:1';
  if ((await raw.get(remoteKey)) === null) throw new Error('the remote entry was not written');

  let nextMissId = 1_000_000;
  const cases: Case[] = [
    { name: 'local hit', iterations: Math.round(100_000 * scale), run: () => local.getMovie({ id: 1 }) },
    {
      name: 'remote hit (Redis)',
      versus: 'raw node-redis GET',
      iterations: Math.round(5_000 * scale),
      run: () => remoteOnly.getMovie({ id: 1 }),
    },
    { name: 'raw node-redis GET', iterations: Math.round(5_000 * scale), run: () => raw.get(remoteKey) },
    {
      name: 'remote hit (Redis Cluster)',
      versus: 'raw node-redis GET',
      iterations: Math.round(5_000 * scale),
      run: () => clusterOnly.getMovie({ id: 1 }),
    },
    {
      name: 'remote hit (zone, local zone)',
      versus: 'raw node-redis GET',
      iterations: Math.round(5_000 * scale),
      run: () => zoneLocal.getMovie({ id: 1 }),
    },
    {
      name: 'remote hit (zone fallback)',
      versus: 'remote hit (zone, local zone)',
      iterations: Math.round(5_000 * scale),
      run: () => zoneFallback.getMovie({ id: 1 }),
    },
    {
      name: 'miss (Redis tier)',
      versus: 'uncached client call',
      iterations: Math.round(2_000 * scale),
      run: () => missRedis.getMovie({ id: nextMissId++ }),
    },
    {
      name: 'miss (memory tier)',
      versus: 'uncached client call',
      iterations: Math.round(2_000 * scale),
      run: () => missMemory.getMovie({ id: nextMissId++ }),
    },
    { name: 'uncached client call', iterations: Math.round(2_000 * scale), run: () => plain.getMovie({ id: 1 }) },
  ];
  const results = new Map<string, Measured>(cases.map((item) => [item.name, { meanUs: [], samples: [] }]));

  for (const item of cases) {
    for (let index = 0; index < Math.min(item.iterations, 500); index++) await item.run(index);
  }
  for (let round = 0; round < rounds; round++) {
    const order = cases.map((_, index) => cases[(index + round) % cases.length] as Case);
    for (const item of order) {
      const measured = results.get(item.name) as Measured;
      const batchStart = process.hrtime.bigint();
      for (let index = 0; index < item.iterations; index++) await item.run(index);
      measured.meanUs.push(Number(process.hrtime.bigint() - batchStart) / 1000 / item.iterations);
      const sampled = Math.min(item.iterations, 2000);
      for (let index = 0; index < sampled; index++) {
        const start = process.hrtime.bigint();
        await item.run(index);
        measured.samples.push(Number(process.hrtime.bigint() - start) / 1000);
      }
    }
    // Let the write-behind of the miss cases settle between rounds.
    await new Promise((resolve) => setTimeout(resolve, 50));
  }

  // Local hits on one core, in CPU time: a shared machine steals wall time, not CPU time.
  const cpuRates: number[] = [];
  for (let round = 0; round < rounds; round++) {
    const count = Math.round(500_000 * scale);
    const cpuStart = process.cpuUsage();
    for (let index = 0; index < count; index++) await local.getMovie({ id: 1 });
    const used = process.cpuUsage(cpuStart);
    cpuRates.push(count / ((used.user + used.system) / 1e6));
  }
  const localPerCpuSecond = median(cpuRates);
  const stats = missRedis.stats().cache;
  const rows = cases.map((item) => {
    const measured = results.get(item.name) as Measured;
    const sorted = [...measured.samples].sort((a, b) => a - b);
    return {
      name: item.name,
      versus: item.versus,
      meanUs: median(measured.meanUs),
      p50Us: percentile(sorted, 0.5),
      p99Us: percentile(sorted, 0.99),
    };
  });
  const byName = new Map(rows.map((row) => [row.name, row]));
  const format = (us: number) => (us >= 100 ? us.toFixed(0) : us >= 10 ? us.toFixed(1) : us.toFixed(2));
  const header = ['Case', 'mean µs', 'p50 µs', 'p99 µs', 'calls/s', 'vs'];
  const table = [
    header,
    ...rows.map((row) => {
      const other = row.versus === undefined ? undefined : byName.get(row.versus);
      const versus =
        other === undefined
          ? ''
          : row.name.includes('fallback')
            ? `+${format(row.p50Us - other.p50Us)} µs (p50) over ${other.name}`
            : row.name.startsWith('miss')
              ? `+${format(row.meanUs - other.meanUs)} µs over ${other.name}`
              : `${(row.meanUs / other.meanUs).toFixed(2)}× ${other.name}`;
      return [
        row.name,
        format(row.meanUs),
        format(row.p50Us),
        format(row.p99Us),
        Math.round(1e6 / row.meanUs).toLocaleString('en-US'),
        versus,
      ];
    }),
  ];
  const widths = header.map((_, column) => Math.max(...table.map((line) => (line[column] as string).length)));
  const markdown = table
    .map((line, index) => {
      const cells = line.map((cell, column) =>
        column === 0 || column === 5 ? cell.padEnd(widths[column] as number) : cell.padStart(widths[column] as number),
      );
      const text = `| ${cells.join(' | ')} |`;
      if (index !== 0) return text;
      const rule = widths.map((width, column) =>
        column === 0 || column === 5 ? '-'.repeat(width) : `${'-'.repeat(width - 1)}:`,
      );
      return `${text}\n| ${rule.join(' | ')} |`;
    })
    .join('\n');
  const cpuLine = `Local hits per CPU-second (one core, median of ${rounds} rounds of ${Math.round(500_000 * scale).toLocaleString('en-US')}): **${Math.round(localPerCpuSecond).toLocaleString('en-US')}**`;
  console.log(markdown);
  console.log(`\n${cpuLine}`);
  if (stats.remote !== undefined) {
    console.log(
      `\nmiss (Redis tier): remote errors ${JSON.stringify(stats.remote.errors)}, dropped writes ${stats.remote.droppedWrites}`,
    );
  }

  const cpus = os.cpus();
  const command = `node --import tsx bench/cache/run.ts${process.argv.slice(2).length > 0 ? ` ${process.argv.slice(2).join(' ')}` : ''}`;
  const facts = [
    `- CPU: ${cpus[0]?.model ?? 'unknown'} × ${cpus.length} (${os.arch()}), ${(os.totalmem() / 2 ** 30).toFixed(0)} GiB RAM`,
    `- OS: ${os.type()} ${os.release()}`,
    `- Node.js ${process.version}, redis-server ${redisVersion} (loopback, \`--save ''\`), node-redis ${await packageVersion('redis')}, lru-cache ${await packageVersion('lru-cache')}`,
    `- Load average at the end: ${os
      .loadavg()
      .map((load) => load.toFixed(2))
      .join(', ')}`,
  ];
  const doc = `# Cache benchmark results

Generated ${new Date().toISOString()} in ${Math.round((Date.now() - startedAt) / 1000)} s by:

\`\`\`sh
${command}
\`\`\`

One call at a time (awaited), ${rounds} interleaved rounds. The movie service (\`bench/overhead/target.ts\`,
~100 bytes of JSON, validated by a zod schema) runs in another process; redis-server on a loopback port.
mean = median over rounds of (batch time ÷ calls); p50/p99 over up to 2,000 calls per round timed one
by one (\`process.hrtime\`, which adds ~0.1 µs). "miss" makes every call a new key: remote read that
misses, the service call, local store, and the remote write behind the caller (not awaited).

${markdown}

${cpuLine}

Machine:

${facts.join('\n')}

Reading it: a local hit is a key function, an LRU lookup, a clock read and a resolved promise. A
remote hit is the raw GET plus a few promise hops, the remote timeout's timer-wheel entry,
\`JSON.parse\`, the envelope check and freezing the value. A miss on the Redis tier pays one more
Redis round trip than the uncached call (the GET that misses; compare the raw GET row) and the SET
written behind the caller, which is not awaited but shares the CPU (and, on a small machine, the cores
with redis-server and the service) with the next call. A miss on the memory tier shows what is left
without the network: checking that the value is plain JSON, freezing it, encoding the envelope.
The Redis Cluster row is a remote hit through node-redis \`createCluster\` (3 masters on loopback;
the key is hash-tagged and routed to its slot's master). The zone rows use \`zoneReplicated()\` over two
redis-servers: "local zone" finds the entry in the local zone; "zone fallback" misses in the local
zone and reads the other one, so its difference to "local zone" is one more Redis round trip
(compare the raw GET row): a fallback costs no more than one remote round trip.
`;
  if (values.out !== 'none') {
    await writeFile(values.out as string, doc);
    console.log(`\nwrote ${relative(process.cwd(), values.out as string)}`);
  }

  await Promise.all([
    plain.close(),
    local.close(),
    remoteOnly.close(),
    missRedis.close(),
    missMemory.close(),
    clusterOnly.close(),
    zoneLocal.close(),
    zoneFallback.close(),
  ]);
  await raw.close();
  await redis.stop();
  await redisB.stop();
  await cluster.stop();
  target.kill('SIGTERM');
}

async function packageVersion(name: string): Promise<string> {
  try {
    return JSON.parse(await readFile(join(root, 'node_modules', name, 'package.json'), 'utf8')).version ?? '?';
  } catch {
    return '?';
  }
}

main().catch((error: unknown) => {
  console.error(error);
  process.exit(1);
});
