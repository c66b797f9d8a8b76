/**
 * `npm run bench:sim`: how fast the storm simulator runs the library's client code.
 * Prints simulated requests (every request received by every service) per wall second and
 * per CPU second.
 *
 *   npm run bench:sim -- [--case fleet|graph|both] [--duration 60] [--instances 500] [--rate 100000] [--strategy telescope] [--every 10] [--workers 1] [--network-ms 0] [--source]
 *
 * `--every N` prints progress every N virtual seconds (stderr). `--workers N` runs the services
 * on N threads (calls between them take `--network-ms`, 1 by default then). With `--duration` ≥ 2
 * the line also has the steady rate (from virtual second 1 to the end of the load) and
 * `minuteWallS`, the wall time of a simulated minute at that rate.
 *
 * It measures the built package (`dist/`, what `telescope-storm --simulate` runs; the npm script
 * builds it first), not the TypeScript sources: tsx compiles those with `keepNames`, which wraps
 * every named function made at run time in a `__name` call and gives it a property of its own.
 * That slows setup (the fleet's 2,000 clients make their closures) and each worker thread
 * compiles the sources again (docs/storm-simulation.md). `--source` runs the sources, to try a
 * change without a build.
 */
import { statSync } from 'node:fs';
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import { fleetChain, twentyServices } from './topologies.js';

const { values } = parseArgs({
  options: {
    case: { type: 'string', default: 'both' },
    duration: { type: 'string', default: '60' },
    instances: { type: 'string' },
    rate: { type: 'string' },
    strategy: { type: 'string', default: 'telescope' },
    every: { type: 'string', default: '10' },
    workers: { type: 'string', default: '1' },
    'network-ms': { type: 'string' },
    source: { type: 'boolean', default: false },
  },
});

/** The package as built, refused when a source file is newer than it (a stale build measures old code). */
async function builtStorm(): Promise<typeof import('../../src/storm/index.js')> {
  const root = fileURLToPath(new URL('../../', import.meta.url));
  const built = join(root, 'dist', 'storm.js');
  let builtAt: number;
  try {
    builtAt = statSync(built).mtimeMs;
  } catch {
    throw new Error('bench:sim: dist/storm.js is missing: run `npm run build` first (or pass --source)');
  }
  for (const entry of await readdir(join(root, 'src'), { recursive: true, withFileTypes: true })) {
    if (!entry.isFile()) continue;
    const file = join(entry.parentPath, entry.name);
    if (statSync(file).mtimeMs > builtAt) {
      throw new Error(`bench:sim: ${file} is newer than dist/: run \`npm run build\` first (or pass --source)`);
    }
  }
  // Typed as the sources it is built from.
  return (await import(pathToFileURL(built).href)) as typeof import('../../src/storm/index.js');
}

const { checkTopology, simulateTopology } = values.source
  ? await import('../../src/storm/index.js')
  : await builtStorm();
const durationS = Number(values.duration);
const everyS = Math.max(1, Number(values.every));
const cases = values.case === 'both' ? ['fleet', 'graph'] : [String(values.case)];

/**
 * The steady rate (virtual seconds 1 to the end of the load, `--duration` ≥ 2), and what a
 * simulated minute takes at it: the first virtual second as measured (setup included) plus 59
 * steady ones. So a short run tells whether the 60 s bar for a minute holds.
 */
function steady(
  from: { wallS: number; sent: number } | undefined,
  to: { wallS: number; sent: number } | undefined,
  requestsPerEntryRequest: number,
): { steadyWallPerVirtualS?: number; steadyRequestsPerWallS?: number; minuteWallS?: number } {
  if (from === undefined || to === undefined || to.wallS <= from.wallS) return {};
  const perVirtualS = (to.wallS - from.wallS) / (durationS - 1);
  return {
    steadyWallPerVirtualS: Number(perVirtualS.toFixed(2)),
    steadyRequestsPerWallS: Math.round(((to.sent - from.sent) * requestsPerEntryRequest) / (to.wallS - from.wallS)),
    minuteWallS: Math.round(from.wallS + 59 * perVirtualS),
  };
}

for (const name of cases) {
  const topology =
    name === 'fleet'
      ? fleetChain({
          tiers: 5,
          instances: Number(values.instances ?? 500),
          rate: Number(values.rate ?? 100_000),
          durationS,
        })
      : twentyServices({ instances: Number(values.instances ?? 20), rate: Number(values.rate ?? 2000), durationS });
  const cpuBefore = process.cpuUsage();
  // Wall time and entry requests sent when virtual second 1 and the last second of load end:
  // the steady rate between them leaves out setup and the drain.
  let afterFirst: { wallS: number; sent: number } | undefined;
  let atEnd: { wallS: number; sent: number } | undefined;
  const result = await simulateTopology({
    topology: checkTopology(topology),
    strategy: String(values.strategy),
    workers: Number(values.workers),
    ...(values['network-ms'] === undefined ? {} : { networkMs: Number(values['network-ms']) }),
    onProgress: ({ elapsedS, wallS, sent }) => {
      if (elapsedS === 1) afterFirst = { wallS, sent };
      if (elapsedS === durationS) atEnd = { wallS, sent };
      if (elapsedS % everyS === 0)
        process.stderr.write(`${name}: ${elapsedS} s virtual in ${wallS.toFixed(1)} s wall\n`);
    },
  });
  const cpu = process.cpuUsage(cpuBefore);
  const simulation = result.simulation as NonNullable<typeof result.simulation>;
  const requests = result.services.reduce((n, service) => n + service.received, 0);
  const line = {
    case: name,
    code: values.source ? 'src (tsx)' : 'dist',
    topology: topology.description,
    strategy: result.strategy,
    workers: simulation.workers ?? 1,
    networkMs: simulation.networkMs ?? 0,
    ...(simulation.eventsPerWorker === undefined ? {} : { eventsPerWorker: simulation.eventsPerWorker }),
    virtualS: simulation.virtualS,
    wallS: Number(simulation.wallS.toFixed(1)),
    cpuS: Number(((cpu.user + cpu.system) / 1e6).toFixed(1)),
    entryRequests: result.sent,
    requests,
    requestsPerWallS: Math.round(requests / simulation.wallS),
    // Steadier than wall time on a shared machine (setup included in both).
    requestsPerCpuS: Math.round(requests / ((cpu.user + cpu.system) / 1e6)),
    ...steady(afterFirst, atEnd, requests / Math.max(1, result.sent)),
    success: result.successRate,
    p99Ms: result.latency.p99Ms,
    peakRssMB: simulation.peakRssMB,
  };
  process.stdout.write(`${JSON.stringify(line)}\n`);
}
