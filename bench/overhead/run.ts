/**
 * The overhead benchmark: what each HTTP client costs per request against the same local
 * target, as throughput, latency, CPU per request and memory, and as ratios to raw undici.
 *
 * `node --import tsx bench/overhead/run.ts [--rounds 5] [--seconds 2 | --requests N] [--warmup 0.5]
 *   [--concurrency 64] [--variants undici,telescope] [--instances 1] [--out bench/RESULTS.md]
 *   [--profile telescope] [--profile-seconds 5]`
 *
 * Rounds are interleaved (each round runs every variant once, in a rotated order), so that
 * drift of the machine (thermal, noisy neighbours) hits every variant alike; ratios are taken
 * within a round and their median reported.
 */
import { type ChildProcess, fork, type StdioOptions, spawn, spawnSync } from 'node:child_process';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import os from 'node:os';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { machineFacts, shellQuote } from '../machine.js';
import { type CpuProfile, formatProfileSummary, summariseProfile } from './profile.js';
import {
  type ClientJob,
  type ClientMessage,
  type ClientResult,
  type MeasuredPhase,
  median,
  type TargetReady,
} from './shared.js';
import { baselineName, variantNamed, variants } from './variants.js';

const here = dirname(fileURLToPath(import.meta.url));
const repositoryRoot = join(here, '..', '..');
const tsxExecArgv = ['--import', 'tsx'];

// --- options ------------------------------------------------------------------------------

interface RunOptions {
  rounds: number;
  measure: MeasuredPhase;
  warmupSeconds: number;
  concurrency: number;
  variantNames: string[];
  instances: number;
  out: string | undefined;
  profile: string | undefined;
  profileSeconds: number;
  childTimeoutMs: number;
  /** Share of the machine other processes may use during a measurement before it is repeated. */
  maxForeign: number;
  /** How many times a disturbed measurement is repeated. */
  retries: number;
  /** Repeats allowed in the whole run, so a busy machine cannot stretch it without bound. */
  rerunBudget: number;
  /** Pin the target and the clients to different CPUs (Linux, `taskset`); `--no-pin` to let the OS place them. */
  pin: boolean;
}

function positiveInteger(flag: string, text: string): number {
  const value = Number(text);
  if (!(Number.isInteger(value) && value > 0)) throw new Error(`--${flag} must be a positive integer, got ${text}`);
  return value;
}

function positiveNumber(flag: string, text: string): number {
  const value = Number(text);
  if (!(Number.isFinite(value) && value > 0)) throw new Error(`--${flag} must be a positive number, got ${text}`);
  return value;
}

const percent = (share: number) => `${(share * 100).toFixed(1)}%`;

function isDisturbed(result: ClientResult, maxForeign: number): boolean {
  return result.foreignCpuShare !== undefined && result.foreignCpuShare > maxForeign;
}

function describePhase(phase: MeasuredPhase): string {
  return 'requests' in phase ? `${phase.requests} measured requests` : `${phase.seconds} s measured`;
}

function parseOptions(argv: string[]): RunOptions {
  const { values } = parseArgs({
    args: argv,
    allowNegative: true,
    options: {
      rounds: { type: 'string', default: '5' },
      seconds: { type: 'string', default: '2' },
      requests: { type: 'string' },
      warmup: { type: 'string', default: '0.5' },
      concurrency: { type: 'string', default: '64' },
      variants: { type: 'string', default: variants.map((variant) => variant.name).join(',') },
      instances: { type: 'string', default: '1' },
      out: { type: 'string', default: 'bench/RESULTS.md' },
      profile: { type: 'string' },
      'profile-seconds': { type: 'string', default: '5' },
      'child-timeout': { type: 'string', default: '120' },
      'max-foreign': { type: 'string', default: '0.1' },
      retries: { type: 'string', default: '1' },
      'rerun-budget': { type: 'string', default: '10' },
      pin: { type: 'boolean', default: true },
    },
  });
  const requested = values.variants
    .split(',')
    .map((name) => name.trim())
    .filter((name) => name !== '');
  for (const name of requested) variantNamed(name);
  // Ratios need the floor measured in the same round, so it always runs; an HTTP/2 variant's
  // floor is raw undici over the same protocol.
  const floors = [baselineName, ...requested.map((name) => variantNamed(name).baseline ?? baselineName)];
  const variantNames = [...new Set([...floors.filter((name) => !requested.includes(name)), ...requested])];
  if (values.profile !== undefined) variantNamed(values.profile);
  return {
    rounds: positiveInteger('rounds', values.rounds),
    // A fixed time gives fast variants as long a measurement as slow ones; --requests fixes the count instead.
    measure:
      values.requests === undefined
        ? { seconds: positiveNumber('seconds', values.seconds) }
        : { requests: positiveInteger('requests', values.requests) },
    warmupSeconds: Number(values.warmup) === 0 ? 0 : positiveNumber('warmup', values.warmup),
    concurrency: positiveInteger('concurrency', values.concurrency),
    variantNames,
    instances: positiveInteger('instances', values.instances),
    // `--out none` measures without touching RESULTS.md.
    out: values.out === 'none' || values.out === '' ? undefined : values.out,
    profile: values.profile,
    profileSeconds: positiveNumber('profile-seconds', values['profile-seconds']),
    childTimeoutMs: positiveInteger('child-timeout', values['child-timeout']) * 1000,
    pin: values.pin,
    maxForeign: positiveNumber('max-foreign', values['max-foreign']),
    retries: Number(values.retries) === 0 ? 0 : positiveInteger('retries', values.retries),
    rerunBudget: Number(values['rerun-budget']) === 0 ? 0 : positiveInteger('rerun-budget', values['rerun-budget']),
  };
}

// --- children -----------------------------------------------------------------------------

/** Every child still alive; all are killed however the runner ends. */
const children = new Set<ChildProcess>();

function track(child: ChildProcess): ChildProcess {
  children.add(child);
  child.once('exit', () => children.delete(child));
  return child;
}

function killChildren(): void {
  for (const child of children) child.kill('SIGKILL');
  children.clear();
}

process.on('exit', killChildren);
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.once(signal, () => {
    console.error(`\n${signal}: stopping children`);
    killChildren();
    process.exit(130);
  });
}

/** Resolves with the first IPC message of `child`; rejects if it exits first or takes too long. */
function firstMessage<T>(child: ChildProcess, what: string, timeoutMs: number): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`${what}: no answer within ${timeoutMs / 1000} s`));
    }, timeoutMs);
    const settle = () => {
      clearTimeout(timer);
      child.off('message', onMessage);
      child.off('exit', onExit);
      child.off('error', onError);
    };
    const onMessage = (message: unknown) => {
      settle();
      resolve(message as T);
    };
    const onExit = (code: number | null, signal: NodeJS.Signals | null) => {
      settle();
      reject(new Error(`${what}: exited (${signal ?? code}) before answering`));
    };
    // A child that cannot be started at all emits 'error' and never 'exit'.
    const onError = (error: Error) => {
      settle();
      reject(new Error(`${what}: ${error.message}`));
    };
    child.on('message', onMessage);
    child.on('exit', onExit);
    child.once('error', onError);
  });
}

/**
 * Starts a TypeScript entry point as a child with an IPC channel, optionally pinned to one
 * CPU. Pinning the target and the client to different cores stops the scheduler from moving
 * them onto the same one mid-round, the main source of throughput noise on a 2-core machine.
 */
function launch(file: string, args: string[], cpu: number | undefined): ChildProcess {
  const options: { stdio: StdioOptions } = { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] };
  if (cpu === undefined) return track(fork(join(here, file), args, { ...options, execArgv: tsxExecArgv }));
  // taskset execs node in place, so the pid (for kill) and the IPC fd (NODE_CHANNEL_FD) carry over.
  return track(
    spawn('taskset', ['-c', String(cpu), process.execPath, ...tsxExecArgv, join(here, file), ...args], options),
  );
}

/** CPUs for the target and the clients when pinning is possible: last core vs the others. */
function pinning(enabled: boolean): { target: number | undefined; client: number | undefined } {
  const count = os.cpus().length;
  const available = process.platform === 'linux' && spawnSync('taskset', ['--version']).status === 0;
  if (!enabled || !available || count < 2) return { target: undefined, client: undefined };
  return { target: count - 1, client: 0 };
}

async function startTarget(
  instances: number,
  cpu: number | undefined,
): Promise<TargetReady & { pid: number | undefined; stop: () => void }> {
  const child = launch('target.ts', ['--instances', String(instances)], cpu);
  const ready = await firstMessage<TargetReady>(child, 'target', 15_000);
  // Disconnecting is the target's signal to close its servers and exit.
  return { ...ready, pid: child.pid, stop: () => child.connected && child.disconnect() };
}

/** The target's origins of a variant's protocol. */
function urlsFor(variant: string, target: TargetReady): string[] {
  const protocol = variantNamed(variant).protocol;
  return protocol === 'h2c' ? target.h2cUrls : protocol === 'h2' ? target.h2Urls : target.urls;
}

async function runClient(job: ClientJob, timeoutMs: number, cpu: number | undefined): Promise<ClientResult> {
  const child = launch('client.ts', [JSON.stringify(job)], cpu);
  const message = await firstMessage<ClientMessage>(child, `client ${job.variant}`, timeoutMs);
  if (message.kind === 'failure') throw new Error(`variant ${message.variant} failed: ${message.message}`);
  return message;
}

// --- aggregation and report ---------------------------------------------------------------

interface Round {
  results: Map<string, ClientResult>;
}

const requestsPerSecond = (result: ClientResult) => result.requests / (result.elapsedMs / 1000);
const cpuMicrosPerRequest = (result: ClientResult) => result.cpuMicros / result.requests;

interface VariantSummary {
  name: string;
  requestsPerSecond: number;
  latencyP50Ms: number;
  latencyP99Ms: number;
  cpuMicrosPerRequest: number;
  cpuSystemMicrosPerRequest: number;
  gcMicrosPerRequest: number;
  gcMinorMicrosPerRequest: number;
  peakRssMb: number;
  /** Median over rounds of (variant req/s ÷ undici req/s in that round); < 1 is slower. */
  throughputRatio: number;
  /** Median over rounds of (variant CPU µs/req ÷ undici CPU µs/req in that round); > 1 costs more. */
  cpuRatio: number;
  throughputRatios: number[];
  cpuRatios: number[];
}

function summarise(rounds: readonly Round[], names: readonly string[]): VariantSummary[] {
  return names.map((name) => {
    const results = rounds.map((round) => round.results.get(name) as ClientResult);
    const floor = variantNamed(name).baseline ?? baselineName;
    const baselines = rounds.map((round) => round.results.get(floor) as ClientResult);
    const throughputRatios = results.map(
      (result, index) => requestsPerSecond(result) / requestsPerSecond(baselines[index] as ClientResult),
    );
    const cpuRatios = results.map(
      (result, index) => cpuMicrosPerRequest(result) / cpuMicrosPerRequest(baselines[index] as ClientResult),
    );
    return {
      name,
      requestsPerSecond: median(results.map(requestsPerSecond)),
      latencyP50Ms: median(results.map((result) => result.latencyP50Ms)),
      latencyP99Ms: median(results.map((result) => result.latencyP99Ms)),
      cpuMicrosPerRequest: median(results.map(cpuMicrosPerRequest)),
      cpuSystemMicrosPerRequest: median(results.map((result) => result.cpuSystemMicros / result.requests)),
      gcMicrosPerRequest: median(results.map((result) => result.gcMicros / result.requests)),
      gcMinorMicrosPerRequest: median(results.map((result) => result.gcMinorMicros / result.requests)),
      peakRssMb: Math.max(...results.map((result) => result.peakRssBytes)) / 2 ** 20,
      throughputRatio: median(throughputRatios),
      cpuRatio: median(cpuRatios),
      throughputRatios,
      cpuRatios,
    };
  });
}

/** `(min–max)` of per-round ratios: how far to trust the median. */
function range(values: readonly number[]): string {
  if (values.length < 2) return '';
  return `(${Math.min(...values).toFixed(2)}–${Math.max(...values).toFixed(2)})`;
}

function resultsTable(summaries: readonly VariantSummary[]): string {
  const rows = summaries.map((summary) =>
    [
      summary.name,
      Math.round(summary.requestsPerSecond).toLocaleString('en-US'),
      summary.latencyP50Ms.toFixed(2),
      summary.latencyP99Ms.toFixed(2),
      summary.cpuMicrosPerRequest.toFixed(1),
      summary.peakRssMb.toFixed(0),
      `${summary.throughputRatio.toFixed(2)}×`,
      `${summary.cpuRatio.toFixed(2)}× ${range(summary.cpuRatios)}`.trimEnd(),
    ].join(' | '),
  );
  return [
    '| Variant | req/s | p50 ms | p99 ms | CPU µs/req | peak RSS MB | req/s ÷ undici | CPU ÷ undici (range) |',
    '| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |',
    ...rows.map((row) => `| ${row} |`),
  ].join('\n');
}

function cpuSplitTable(summaries: readonly VariantSummary[]): string {
  return [
    '| Variant | CPU µs/req | user | system | GC pauses | of which scavenges |',
    '| --- | ---: | ---: | ---: | ---: | ---: |',
    ...summaries.map((summary) => {
      const system = summary.cpuSystemMicrosPerRequest;
      return `| ${summary.name} | ${summary.cpuMicrosPerRequest.toFixed(1)} | ${(summary.cpuMicrosPerRequest - system).toFixed(1)} | ${system.toFixed(1)} | ${summary.gcMicrosPerRequest.toFixed(1)} | ${summary.gcMinorMicrosPerRequest.toFixed(1)} |`;
    }),
  ].join('\n');
}

function perRoundTable(summaries: readonly VariantSummary[], rounds: number): string {
  const header = Array.from({ length: rounds }, (_, index) => `R${index + 1}`);
  return [
    `| Variant | ${header.join(' | ')} |`,
    `| --- | ${header.map(() => '---:').join(' | ')} |`,
    ...summaries.map(
      (summary) =>
        `| ${summary.name} | ${summary.throughputRatios
          .map((ratio, index) => `${ratio.toFixed(2)} / ${(summary.cpuRatios[index] as number).toFixed(2)}`)
          .join(' | ')} |`,
    ),
  ].join('\n');
}

/** How much other processes disturbed the measurements, for the reader to weigh the numbers. */
function foreignSummary(rounds: readonly Round[], options: RunOptions, rerunCount: number): string {
  const shares = rounds.flatMap((round) =>
    [...round.results.values()].flatMap((result) =>
      result.foreignCpuShare === undefined ? [] : [result.foreignCpuShare],
    ),
  );
  if (shares.length === 0) return 'CPU used by other processes during measurements: unknown (not Linux).';
  return (
    `CPU used by other processes (and hypervisor steal) during the kept measurements, as a share of the machine: ` +
    `median ${percent(median(shares))}, max ${percent(Math.max(...shares))}. ` +
    `${rerunCount} measurement(s) were repeated (budget ${options.rerunBudget}) because others used more than ` +
    `${percent(options.maxForeign)}; the less disturbed run was kept.`
  );
}

// --- main ---------------------------------------------------------------------------------

async function main(): Promise<void> {
  const argv = process.argv.slice(2);
  const options = parseOptions(argv);
  const command = ['node', '--import', 'tsx', 'bench/overhead/run.ts', ...argv].map(shellQuote).join(' ');
  const startedAt = Date.now();
  const loadAtStart = os.loadavg()[0] ?? 0;
  const cpus = pinning(options.pin);
  const target = await startTarget(options.instances, cpus.target);
  console.error(
    `target: ${target.urls.join(', ')}; ${options.rounds} rounds × ${options.variantNames.length} variants × ` +
      `${describePhase(options.measure)} (after ${options.warmupSeconds} s warm-up), ${options.concurrency} in flight`,
  );

  const rounds: Round[] = [];
  let rerunCount = 0;
  for (let roundIndex = 0; roundIndex < options.rounds; roundIndex++) {
    // Rotate the order each round so no variant always runs first (cold machine) or last.
    const shift = roundIndex % options.variantNames.length;
    const order = [...options.variantNames.slice(shift), ...options.variantNames.slice(0, shift)];
    const results = new Map<string, ClientResult>();
    for (const variant of order) {
      const job: ClientJob = {
        variant,
        urls: urlsFor(variant, target),
        ca: target.ca,
        measure: options.measure,
        warmupSeconds: options.warmupSeconds,
        concurrency: options.concurrency,
        targetPid: target.pid,
      };
      let result = await runClient(job, options.childTimeoutMs, cpus.client);
      // Another process took CPU during the measurement (common on a shared 2-core machine):
      // measure again, and keep whichever run was least disturbed.
      for (
        let retry = 0;
        retry < options.retries && rerunCount < options.rerunBudget && isDisturbed(result, options.maxForeign);
        retry++
      ) {
        console.error(
          `round ${roundIndex + 1}/${options.rounds} ${variant}: other processes used ` +
            `${percent(result.foreignCpuShare ?? 0)} of the machine; measuring again`,
        );
        rerunCount++;
        const again = await runClient(job, options.childTimeoutMs, cpus.client);
        if ((again.foreignCpuShare ?? 0) < (result.foreignCpuShare ?? 0)) result = again;
      }
      results.set(variant, result);
      console.error(
        `round ${roundIndex + 1}/${options.rounds} ${variant.padEnd(20)} ` +
          `${Math.round(requestsPerSecond(result)).toString().padStart(6)} req/s  ` +
          `${cpuMicrosPerRequest(result).toFixed(1).padStart(6)} µs CPU/req  p99 ${result.latencyP99Ms.toFixed(2).padStart(6)} ms` +
          (result.foreignCpuShare === undefined ? '' : `  foreign CPU ${percent(result.foreignCpuShare)}`),
      );
    }
    rounds.push({ results });
  }

  let profileSection: string | undefined;
  if (options.profile !== undefined) {
    const profileDirectory = join(repositoryRoot, 'bench', 'profiles');
    await mkdir(profileDirectory, { recursive: true });
    const profilePath = join(
      profileDirectory,
      `${options.profile}-${new Date().toISOString().replaceAll(':', '-')}.cpuprofile`,
    );
    console.error(`profiling ${options.profile} for ${options.profileSeconds} s…`);
    const profiled = await runClient(
      {
        variant: options.profile,
        urls: urlsFor(options.profile, target),
        ca: target.ca,
        measure: { seconds: options.profileSeconds },
        warmupSeconds: options.warmupSeconds,
        concurrency: options.concurrency,
        profilePath,
        profileIntervalUs: 100,
      },
      options.childTimeoutMs,
      cpus.client,
    );
    const profile = JSON.parse(await readFile(profilePath, 'utf8')) as CpuProfile;
    profileSection = [
      `## CPU profile: ${options.profile}`,
      '',
      `Measured phase only (${options.profileSeconds} s, ${profiled.requests} requests, ${options.concurrency} in flight, ` +
        '100 µs sampling), ' +
        `in a separate run from the rounds above. Profile: \`${relative(repositoryRoot, profilePath)}\` ` +
        '(open in Chrome DevTools or speedscope). ' +
        `The profiled run took ${(profiled.cpuMicros / profiled.requests).toFixed(1)} µs CPU/req (sampling adds overhead).`,
      '',
      formatProfileSummary(summariseProfile(profile), { requests: profiled.requests }),
    ].join('\n');
  }
  target.stop();

  const summaries = summarise(rounds, options.variantNames);
  const table = resultsTable(summaries);
  console.log(`\n${table}\n`);
  if (profileSection !== undefined) console.log(`${profileSection}\n`);

  if (options.out !== undefined) {
    const legend = options.variantNames.map((name) => `- **${name}**: ${variantNamed(name).description}`);
    const report = [
      '# Overhead benchmark results',
      '',
      `Generated ${new Date().toISOString()} in ${Math.round((Date.now() - startedAt) / 1000)} s by:`,
      '',
      '```sh',
      command,
      '```',
      '',
      `${options.rounds} interleaved rounds; per variant per round a fresh client process makes ` +
        `${options.warmupSeconds} s of warm-up requests, then ${describePhase(options.measure)} with ` +
        `${options.concurrency} in flight against ${options.instances} local target instance(s) in another process. ` +
        'Every response is checked (status 200, body id and fields). Values are medians over rounds; ' +
        'peak RSS is the maximum. Ratios are taken against undici within the same round, then the median.',
      '',
      foreignSummary(rounds, options, rerunCount),
      '',
      table,
      '',
      ...legend,
      '',
      '## Machine',
      '',
      ...(await machineFacts(loadAtStart, ['undici', 'zod', 'got', 'axios', 'cockatiel', 'opossum', 'p-retry', 'tsx'])),
      '',
      "## CPU per request: user and system (kernel) time, and the main thread's GC pauses within it (µs per request), medians",
      '',
      cpuSplitTable(summaries),
      '',
      '## Per round: req/s ratio / CPU ratio to undici',
      '',
      perRoundTable(summaries, options.rounds),
      '',
      ...(profileSection === undefined ? [] : [profileSection, '']),
    ].join('\n');
    await writeFile(resolve(repositoryRoot, options.out), report);
    console.error(`wrote ${options.out}`);
  }
}

main().then(
  () => process.exit(0),
  (error: unknown) => {
    console.error(error instanceof Error ? error.message : error);
    process.exit(1);
  },
);
