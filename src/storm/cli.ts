#!/usr/bin/env node
/**
 * telescope-storm: shows what client settings do to a multi-tier system when something fails.
 *
 *   telescope-storm [--scenario hang-one|hang-tier|down-one|slow-tier|outage-recover|metastable|flaky-one|slow-one|FILE.json]
 *                   [--strategies naive,telescope,...] [--rate 200] [--duration 20]
 *                   [--out storm-report] [--json]
 *                   [--simulate [--tiers 3] [--instances K] [--seed 1]]
 *                   [--topology NAME|FILE.json [--simulate [--workers N] [--network-ms MS]]]
 *
 * `--simulate` runs the same scenarios in virtual time (src/storm/sim): the library's client
 * code on simulated instances, for topologies far beyond one machine.
 */
import { spawn } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { constants, cpus, totalmem } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { killAllTiers, killTiersOnExit, runStorm } from './lab.js';
import { htmlReport, markdownTable, type StormResult, simulationTierTable } from './report.js';
import { type BuiltInScenario, builtInScenario, builtInScenarios, scenarioFromFile } from './scenarios.js';
import { checkSimOptions, simLimits, simulateStorm } from './sim/run.js';
import { simStrategies } from './sim/strategies.js';
import { builtInStrategies } from './strategies/index.js';
import { shippedTopologyNames, topologyMain } from './topology-cli.js';

const usage = `usage: telescope-storm [--scenario ${builtInScenarios.join('|')}|FILE.json | --topology NAME|FILE.json]
                       [--strategies ${builtInStrategies.join(',')}|./module.js,...]
                       [--rate 200] [--duration 20] [--drain 8] [--out DIR] [--json]
                       [--simulate [--tiers 3] [--instances K] [--seed 1]]
  --topology T     a service graph (docs/storm-topologies.md): a file, or a shipped one
                   (${shippedTopologyNames().join(', ')})
  --max-processes  real mode with --topology: refuse above this many processes [what the machine holds]
  --simulate       run in virtual time on simulated instances (the library's real client code)
  --tiers N        simulation: edge, N-2 middle tiers, backend (${simLimits.tiers.join('..')}) [3]
  --instances K    simulation: instances in every tier, the edge too [edge 1, others 3]
  --seed S         simulation: seed of every random choice [1]
  --workers N      simulation of a --topology: threads to spread its services over [1]
  --network-ms MS  simulation of a --topology: time each request and answer takes on the
                   network [0; 1 with --workers]`;

function fail(message: string): never {
  process.stderr.write(`telescope-storm: ${message}\n${usage}\n`);
  process.exit(2);
}

export async function main(argv: string[]): Promise<void> {
  let parsed: ReturnType<typeof parseArgs>;
  try {
    parsed = parseArgs({
      args: argv,
      options: {
        scenario: { type: 'string' },
        topology: { type: 'string' },
        'max-processes': { type: 'string' },
        strategies: { type: 'string', default: builtInStrategies.join(',') },
        rate: { type: 'string' },
        duration: { type: 'string' },
        drain: { type: 'string' },
        out: { type: 'string' },
        json: { type: 'boolean', default: false },
        help: { type: 'boolean', default: false },
        simulate: { type: 'boolean', default: false },
        tiers: { type: 'string' },
        instances: { type: 'string' },
        seed: { type: 'string' },
        workers: { type: 'string' },
        'network-ms': { type: 'string' },
      },
      strict: true,
      allowPositionals: false,
    });
  } catch (error) {
    fail((error as Error).message);
  }
  const values = parsed.values as Record<string, string | boolean | undefined>;
  if (values.help) {
    process.stdout.write(`${usage}\n`);
    return;
  }
  const simulate = values.simulate === true;
  if (values.topology !== undefined) {
    if (values.scenario !== undefined) fail('--topology and --scenario cannot be used together');
    for (const option of ['tiers', 'instances'] as const) {
      if (values[option] !== undefined) fail(`--${option} does not apply to --topology (the file says the instances)`);
    }
    await topologyMain({
      topology: String(values.topology),
      strategies: values.strategies === undefined ? undefined : String(values.strategies),
      simulate,
      rate: values.rate as string | undefined,
      duration: values.duration as string | undefined,
      drain: values.drain as string | undefined,
      seed: values.seed as string | undefined,
      maxProcesses: values['max-processes'] as string | undefined,
      workers: values.workers as string | undefined,
      networkMs: values['network-ms'] as string | undefined,
      out: values.out as string | undefined,
      json: values.json === true,
      fail,
    });
    return;
  }
  if (values['max-processes'] !== undefined) fail('--max-processes applies to --topology only');
  for (const option of ['workers', 'network-ms'] as const) {
    if (values[option] !== undefined) fail(`--${option} applies to --topology with --simulate only`);
  }
  const rate = Number(values.rate ?? '200');
  const durationS = Number(values.duration ?? '20');
  const drainS = Number(values.drain ?? '8');
  const maxRate = simulate ? simLimits.rate[1] : 20_000;
  if (!(Number.isFinite(rate) && rate > 0 && rate <= maxRate))
    fail(`--rate must be a number in (0, ${maxRate}], got ${values.rate}`);
  if (!(Number.isFinite(durationS) && durationS >= (simulate ? 1 : 2) && durationS <= 3600)) {
    fail(`--duration must be a number of seconds in [${simulate ? 1 : 2}, 3600], got ${values.duration}`);
  }
  const maxDrainS = simulate ? simLimits.drainS[1] : 120;
  if (!(Number.isFinite(drainS) && drainS >= 0 && drainS <= maxDrainS))
    fail(`--drain must be in [0, ${maxDrainS}] seconds, got ${values.drain}`);
  for (const option of ['tiers', 'instances', 'seed'] as const) {
    if (values[option] !== undefined && !simulate) fail(`--${option} applies to --simulate only`);
  }
  const integerOption = (option: 'tiers' | 'instances' | 'seed'): number | undefined => {
    const text = values[option];
    if (text === undefined) return undefined;
    const value = Number(text);
    if (!(typeof text === 'string' && /^-?\d+$/.test(text.trim()) && Number.isSafeInteger(value))) {
      fail(`--${option} must be an integer, got ${text}`);
    }
    return value;
  };
  const tiers = integerOption('tiers');
  const instances = integerOption('instances');
  const seed = integerOption('seed');
  if (simulate) {
    try {
      checkSimOptions({ tiers, instances, seed });
    } catch (error) {
      fail(`--${(error as Error).message}`);
    }
  }
  const scenarioArg = String(values.scenario ?? 'hang-tier');
  let scenario: ReturnType<typeof builtInScenario>;
  try {
    scenario = (builtInScenarios as readonly string[]).includes(scenarioArg)
      ? builtInScenario(scenarioArg as BuiltInScenario, durationS)
      : scenarioArg.endsWith('.json')
        ? scenarioFromFile(scenarioArg)
        : fail(`unknown scenario ${JSON.stringify(scenarioArg)}`);
  } catch (error) {
    fail((error as Error).message);
  }
  const strategies = String(values.strategies)
    .split(',')
    .map((name) => name.trim())
    .filter(Boolean);
  if (strategies.length === 0) fail('--strategies needs at least one strategy');
  if (simulate) {
    const unknown = strategies.filter((name) => simStrategies[name] === undefined);
    if (unknown.length > 0) {
      fail(
        `--simulate runs ${Object.keys(simStrategies).join(', ')}; cannot simulate ${unknown.join(', ')} (strategy modules run in real mode only)`,
      );
    }
  }

  killTiersOnExit();

  const tty = process.stderr.isTTY === true && !values.json;
  const results: StormResult[] = [];
  process.stderr.write(
    `scenario ${scenario.name}: ${scenario.description}\n${rate} req/s for ${durationS} s per strategy, strategies: ${strategies.join(', ')}${simulate ? `\nsimulated in virtual time: ${tiers ?? 3} tiers, ${instances === undefined ? 'edge ×1, others ×3' : `×${instances} per tier`}, seed ${seed ?? 1}` : ''}\n`,
  );
  const onProgress =
    (strategy: string) =>
    ({
      elapsedS,
      totalS,
      sent,
      answered,
      wallS,
    }: {
      elapsedS: number;
      totalS: number;
      sent: number;
      answered: number;
      wallS?: number;
    }) => {
      const wall = wallS === undefined ? '' : `  (virtual; wall ${wallS.toFixed(1)}s)`;
      if (tty) {
        const width = 30;
        const filled = Math.min(width, Math.round((elapsedS / totalS) * width));
        process.stderr.write(
          `\r${strategy.padEnd(14)} [${'#'.repeat(filled)}${'.'.repeat(width - filled)}] ${elapsedS}s  sent ${sent}  answered ${answered}${wall}   `,
        );
      } else if (elapsedS % 5 === 0) {
        process.stderr.write(`${strategy}: ${elapsedS}s sent ${sent} answered ${answered}${wall}\n`);
      }
    };
  for (const strategy of strategies) {
    const run = simulate
      ? simulateStorm({
          scenario,
          strategy,
          rate,
          durationS,
          drainS,
          tiers,
          instances,
          seed,
          onProgress: onProgress(strategy),
        })
      : runStorm({ scenario, strategy, rate, durationS, drainS, onProgress: onProgress(strategy) });
    const result = await run.catch((error: unknown) => fail(`${strategy}: ${(error as Error).message}`));
    if (tty) process.stderr.write('\n');
    results.push(result);
  }

  const machine = `${cpus().length} × ${cpus()[0]?.model.trim() ?? 'cpu'}, ${Math.round(totalmem() / 2 ** 30)} GiB, Node ${process.version}`;
  const mode = simulate ? 'simulated' : 'real';
  if (values.json) {
    process.stdout.write(`${JSON.stringify({ scenario, mode, machine, results }, null, 2)}\n`);
  } else {
    process.stdout.write(`\n${markdownTable(results)}\n`);
    if (simulate && (tiers ?? 3) > 3) process.stdout.write(`\n${simulationTierTable(results)}\n`);
  }
  if (typeof values.out === 'string') {
    mkdirSync(values.out, { recursive: true });
    const html = join(values.out, `${scenario.name}.html`);
    writeFileSync(html, htmlReport(scenario, results, machine));
    writeFileSync(
      join(values.out, `${scenario.name}.json`),
      `${JSON.stringify({ scenario, mode, machine, results }, null, 2)}\n`,
    );
    process.stderr.write(`report: ${html}\n`);
  }
}

/**
 * The simulator allocates short-lived objects (calls, promises, attempts) at a very high rate;
 * with V8's default young generation most of its time goes to scavenges. A 64 MiB semi-space
 * cuts the CPU time of a large simulation by about a third (docs/storm-simulation.md). The
 * flag must be set when the process starts, so `--simulate` runs in a child process with it,
 * unless the user already chose a size.
 */
const semiSpaceFlag = '--max-semi-space-size=64';

// Run when executed directly (bin or `node cli`), not when imported.
const invokedAs = process.argv[1] ?? '';
if (/(?:cli\.[cm]?[jt]s|storm-cli\.[cm]?js|telescope-storm)$/.test(invokedAs)) {
  const argv = process.argv.slice(2);
  if (wantsSimulationHeap(argv)) {
    relaunchWithSimulationHeap(invokedAs, argv);
  } else {
    main(argv).catch((error: unknown) => {
      killAllTiers();
      process.stderr.write(`telescope-storm: ${(error as Error).stack ?? String(error)}\n`);
      process.exit(1);
    });
  }
}

function wantsSimulationHeap(argv: string[]): boolean {
  if (!argv.includes('--simulate') || process.env.TELESCOPE_STORM_CHILD === '1') return false;
  const flags = [...process.execArgv, ...(process.env.NODE_OPTIONS ?? '').split(/\s+/)];
  return !flags.some((flag) => flag.startsWith('--max-semi-space-size'));
}

function relaunchWithSimulationHeap(script: string, argv: string[]): void {
  const child = spawn(process.execPath, [...process.execArgv, semiSpaceFlag, script, ...argv], {
    stdio: 'inherit',
    env: { ...process.env, TELESCOPE_STORM_CHILD: '1' },
  });
  for (const signal of ['SIGINT', 'SIGTERM'] as const) {
    process.on(signal, () => {
      if (child.exitCode === null) child.kill(signal);
    });
  }
  child.once('exit', (code, signal) => {
    process.exit(code ?? (signal === null ? 1 : 128 + (constants.signals[signal] ?? 0)));
  });
  child.once('error', (error) => {
    process.stderr.write(`telescope-storm: ${error.message}\n`);
    process.exit(1);
  });
}
