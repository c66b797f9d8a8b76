/**
 * `telescope-storm --topology NAME|FILE.json`: runs a service graph in real mode (one
 * process per instance on 127.0.0.1, up to what the machine holds) or with `--simulate`,
 * once per strategy, and writes the per-service report. Everything is checked before
 * anything starts; Ctrl-C stops every process the run started.
 */
import { existsSync, mkdirSync, readdirSync, writeFileSync } from 'node:fs';
import { cpus, totalmem } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { checkTopologyClients, runTopology, topologyProcessLimit } from './graph-lab.js';
import { killTiersOnExit } from './lab.js';
import { simulateTopology, topologySimStrategies } from './sim/graph.js';
import { checkParallelOptions } from './sim/parallel.js';
import { simStrategies } from './sim/strategies.js';
import { builtInStrategies } from './strategies/index.js';
import { type ResolvedTopology, topologyFromFile, topologyInstances } from './topology.js';
import { topologyHtmlReport, topologyServiceTables, topologySummaryTable } from './topology-report.js';
import type { TopologyRunResult } from './types.js';

/** The topology files shipped with the package (the built-in scenarios as graphs). */
export function shippedTopologyDir(): string | undefined {
  // dist/storm-cli.js → ../topologies; src/storm/topology-cli.ts → ../../topologies
  for (const relative of ['../topologies/', '../../topologies/']) {
    const dir = fileURLToPath(new URL(relative, import.meta.url));
    if (existsSync(dir)) return dir;
  }
  return undefined;
}

export function shippedTopologyNames(): string[] {
  const dir = shippedTopologyDir();
  if (dir === undefined) return [];
  return readdirSync(dir)
    .filter((file) => file.endsWith('.json'))
    .map((file) => file.slice(0, -'.json'.length))
    .sort();
}

/** A shipped topology by name, or a file path. */
export function resolveTopologyPath(nameOrPath: string): string {
  if (nameOrPath.endsWith('.json') || nameOrPath.includes('/')) return nameOrPath;
  const dir = shippedTopologyDir();
  const path = dir === undefined ? undefined : join(dir, `${nameOrPath}.json`);
  if (path === undefined || !existsSync(path)) {
    throw new Error(
      `no shipped topology ${JSON.stringify(nameOrPath)} (shipped: ${shippedTopologyNames().join(', ')}; or give a FILE.json)`,
    );
  }
  return path;
}

export interface TopologyCliOptions {
  topology: string;
  strategies: string | undefined;
  simulate: boolean;
  rate: string | undefined;
  duration: string | undefined;
  drain: string | undefined;
  seed: string | undefined;
  maxProcesses: string | undefined;
  workers?: string | undefined;
  networkMs?: string | undefined;
  out: string | undefined;
  json: boolean;
  fail: (message: string) => never;
}

/** Command-line overrides: `--duration`, `--drain`, and `--rate` (the schedule scaled to peak at it). */
function withOverrides(topology: ResolvedTopology, options: TopologyCliOptions): ResolvedTopology {
  const { fail } = options;
  const next = { ...topology };
  if (options.duration !== undefined) {
    const durationS = Number(options.duration);
    if (!(Number.isFinite(durationS) && durationS >= 1 && durationS <= 3600)) {
      fail(`--duration must be a number of seconds in [1, 3600], got ${options.duration}`);
    }
    next.durationS = durationS;
    next.load = topology.load.filter((step, index) => index === 0 || step.atS < durationS);
  }
  if (options.drain !== undefined) {
    const drainS = Number(options.drain);
    if (!(Number.isFinite(drainS) && drainS >= 0 && drainS <= 600)) {
      fail(`--drain must be in [0, 600] seconds, got ${options.drain}`);
    }
    next.drainS = drainS;
  }
  if (options.rate !== undefined) {
    const rate = Number(options.rate);
    const peak = Math.max(...topology.load.map((step) => step.rate));
    if (!(Number.isFinite(rate) && rate > 0 && rate <= 10_000_000)) {
      fail(`--rate must be a number in (0, 10000000], got ${options.rate}`);
    }
    next.load = next.load.map((step) => ({ ...step, rate: peak === 0 ? rate : (step.rate * rate) / peak }));
  }
  return next;
}

export async function topologyMain(options: TopologyCliOptions): Promise<void> {
  const { fail, simulate } = options;
  const topology = ((): ResolvedTopology => {
    try {
      return withOverrides(topologyFromFile(resolveTopologyPath(options.topology)), options);
    } catch (error) {
      return fail((error as Error).message);
    }
  })();
  const strategies = (options.strategies ?? builtInStrategies.join(','))
    .split(',')
    .map((name) => name.trim())
    .filter(Boolean);
  if (strategies.length === 0) fail('--strategies needs at least one strategy');
  let seed: number | undefined;
  if (options.seed !== undefined) {
    if (!simulate) fail('--seed applies to --simulate only');
    seed = Number(options.seed);
    if (!(/^-?\d+$/.test(options.seed.trim()) && Number.isSafeInteger(seed))) {
      fail(`--seed must be an integer, got ${options.seed}`);
    }
  }
  const parallel: { workers?: number; networkMs?: number } = {};
  for (const [flag, value] of [
    ['workers', options.workers],
    ['network-ms', options.networkMs],
  ] as const) {
    if (value === undefined) continue;
    if (!simulate) fail(`--${flag} applies to --simulate only`);
    const number = Number(value);
    if (value.trim() === '' || !Number.isFinite(number)) fail(`--${flag} must be a number, got ${value}`);
    if (flag === 'workers') parallel.workers = number;
    else parallel.networkMs = number;
  }
  // Everything is checked before anything starts.
  try {
    if (simulate) {
      checkParallelOptions({ topology, strategy: strategies[0] as string, ...parallel });
      const unknown = strategies.filter((name) => simStrategies[name] === undefined);
      if (unknown.length > 0) {
        fail(
          `--simulate runs ${Object.keys(simStrategies).join(', ')}; cannot simulate ${unknown.join(', ')} (strategy modules run in real mode only)`,
        );
      }
      for (const strategy of strategies) topologySimStrategies(topology, strategy);
    } else {
      let limit = topologyProcessLimit();
      if (options.maxProcesses !== undefined) {
        limit = Number(options.maxProcesses);
        if (!(Number.isInteger(limit) && limit >= 1 && limit <= 4096)) {
          fail(`--max-processes must be an integer in [1, 4096], got ${options.maxProcesses}`);
        }
      }
      checkProcesses(topology, limit, fail);
    }
    await checkTopologyClients(topology);
  } catch (error) {
    fail((error as Error).message);
  }

  killTiersOnExit();

  const instances = topologyInstances(topology);
  process.stderr.write(
    `topology ${topology.name}: ${topology.description}\n${topology.services.length} services, ${instances} instances, ${topology.durationS} s of load per strategy, strategies: ${strategies.join(', ')}${simulate ? ' (simulated in virtual time)' : ''}\n`,
  );
  const results: TopologyRunResult[] = [];
  for (const strategy of strategies) {
    const onProgress = ({ elapsedS, sent, answered }: { elapsedS: number; sent: number; answered: number }) => {
      if (elapsedS % 5 === 0) process.stderr.write(`${strategy}: ${elapsedS}s sent ${sent} answered ${answered}\n`);
    };
    const run = simulate
      ? simulateTopology({ topology, strategy, ...(seed === undefined ? {} : { seed }), ...parallel, onProgress })
      : runTopology({ topology, strategy, onProgress });
    results.push(await run.catch((error: unknown) => fail(`${strategy}: ${(error as Error).message}`)));
  }

  const machine = `${cpus().length} × ${cpus()[0]?.model.trim() ?? 'cpu'}, ${Math.round(totalmem() / 2 ** 30)} GiB, Node ${process.version}`;
  const mode = simulate ? 'simulated' : 'real';
  const report = { topology, mode, machine, results };
  if (options.json) process.stdout.write(`${JSON.stringify(report, null, 2)}\n`);
  else process.stdout.write(`\n${topologySummaryTable(results)}\n\n${topologyServiceTables(results)}\n`);
  if (options.out !== undefined) {
    mkdirSync(options.out, { recursive: true });
    const html = join(options.out, `${topology.name}.html`);
    writeFileSync(html, topologyHtmlReport(topology, results, machine));
    writeFileSync(join(options.out, `${topology.name}.json`), `${JSON.stringify(report, null, 2)}\n`);
    process.stderr.write(`report: ${html}\n`);
  }
}

/** Real mode: one process per instance, refused above the limit, naming the services that ask for them. */
function checkProcesses(topology: ResolvedTopology, limit: number, fail: (message: string) => never): void {
  const total = topologyInstances(topology);
  if (total <= limit) return;
  const largest = [...topology.services].sort((a, b) => b.instances - a.instances)[0];
  fail(
    `services.${largest?.name}.instances: the topology needs ${total} processes in real mode (${topology.services.map((service) => `${service.name} ${service.instances}`).join(', ')}), more than the ${limit} this machine runs (${cpus().length} CPUs, ${Math.round(totalmem() / 2 ** 30)} GiB); use --simulate, fewer instances, or --max-processes`,
  );
}
