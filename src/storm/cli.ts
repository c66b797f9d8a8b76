#!/usr/bin/env node
/**
 * telescope-storm: shows what client settings do to a multi-tier system when something fails.
 *
 *   telescope-storm [--scenario hang-one|hang-tier|down-one|slow-tier|outage-recover|FILE.json]
 *                   [--strategies naive,telescope,...] [--rate 200] [--duration 20]
 *                   [--out storm-report] [--json]
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { cpus, totalmem } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { killAllTiers, type RunResult, runStorm } from './lab.js';
import { htmlReport, markdownTable } from './report.js';
import { type BuiltInScenario, builtInScenario, builtInScenarios, scenarioFromFile } from './scenarios.js';
import { builtInStrategies } from './strategies/index.js';

const usage = `usage: telescope-storm [--scenario ${builtInScenarios.join('|')}|FILE.json]
                       [--strategies ${builtInStrategies.join(',')}|./module.js,...]
                       [--rate 200] [--duration 20] [--drain 8] [--out DIR] [--json]`;

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
        scenario: { type: 'string', default: 'hang-tier' },
        strategies: { type: 'string', default: builtInStrategies.join(',') },
        rate: { type: 'string', default: '200' },
        duration: { type: 'string', default: '20' },
        drain: { type: 'string', default: '8' },
        out: { type: 'string' },
        json: { type: 'boolean', default: false },
        help: { type: 'boolean', default: false },
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
  const rate = Number(values.rate);
  const durationS = Number(values.duration);
  const drainS = Number(values.drain);
  if (!(Number.isFinite(rate) && rate > 0 && rate <= 20_000))
    fail(`--rate must be a number in (0, 20000], got ${values.rate}`);
  if (!(Number.isFinite(durationS) && durationS >= 2 && durationS <= 3600)) {
    fail(`--duration must be a number of seconds in [2, 3600], got ${values.duration}`);
  }
  if (!(Number.isFinite(drainS) && drainS >= 0 && drainS <= 120))
    fail(`--drain must be in [0, 120] seconds, got ${values.drain}`);
  const scenarioArg = String(values.scenario);
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

  // Every tier process goes with the lab, whatever ends it.
  const cleanup = () => killAllTiers();
  process.on('exit', cleanup);
  for (const signal of ['SIGINT', 'SIGTERM'] as const) {
    process.once(signal, () => {
      cleanup();
      process.stderr.write(`\ntelescope-storm: stopped by ${signal}\n`);
      process.exit(130);
    });
  }

  const tty = process.stderr.isTTY === true && !values.json;
  const results: RunResult[] = [];
  process.stderr.write(
    `scenario ${scenario.name}: ${scenario.description}\n${rate} req/s for ${durationS} s per strategy, strategies: ${strategies.join(', ')}\n`,
  );
  for (const strategy of strategies) {
    const result = await runStorm({
      scenario,
      strategy,
      rate,
      durationS,
      drainS,
      onProgress: ({ elapsedS, totalS, sent, answered }) => {
        if (tty) {
          const width = 30;
          const filled = Math.min(width, Math.round((elapsedS / totalS) * width));
          process.stderr.write(
            `\r${strategy.padEnd(14)} [${'#'.repeat(filled)}${'.'.repeat(width - filled)}] ${elapsedS}s  sent ${sent}  answered ${answered}   `,
          );
        } else if (elapsedS % 5 === 0) {
          process.stderr.write(`${strategy}: ${elapsedS}s sent ${sent} answered ${answered}\n`);
        }
      },
    }).catch((error: unknown) => fail(`${strategy}: ${(error as Error).message}`));
    if (tty) process.stderr.write('\n');
    results.push(result);
  }

  const machine = `${cpus().length} × ${cpus()[0]?.model.trim() ?? 'cpu'}, ${Math.round(totalmem() / 2 ** 30)} GiB, Node ${process.version}`;
  if (values.json) {
    process.stdout.write(`${JSON.stringify({ scenario, machine, results }, null, 2)}\n`);
  } else {
    process.stdout.write(`\n${markdownTable(results)}\n`);
  }
  if (typeof values.out === 'string') {
    mkdirSync(values.out, { recursive: true });
    const html = join(values.out, `${scenario.name}.html`);
    writeFileSync(html, htmlReport(scenario, results, machine));
    writeFileSync(
      join(values.out, `${scenario.name}.json`),
      `${JSON.stringify({ scenario, machine, results }, null, 2)}\n`,
    );
    process.stderr.write(`report: ${html}\n`);
  }
}

// Run when executed directly (bin or `node cli`), not when imported.
const invokedAs = process.argv[1] ?? '';
if (/(?:cli\.[cm]?[jt]s|storm-cli\.[cm]?js|telescope-storm)$/.test(invokedAs)) {
  main(process.argv.slice(2)).catch((error: unknown) => {
    killAllTiers();
    process.stderr.write(`telescope-storm: ${(error as Error).stack ?? String(error)}\n`);
    process.exit(1);
  });
}
