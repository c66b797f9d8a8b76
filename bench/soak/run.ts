/**
 * The soak test: a telescope client with its defaults (retry + budget, breaker, bulkhead,
 * outlier ejection, metrics) and a fallback on one endpoint, driven at a fixed concurrency for
 * minutes against three instances in another process, one failing 30% of its requests and one
 * hanging periodically. Every `--sample-seconds` it forces a full GC and records heap, sockets,
 * active handles, timers and telescope's timer wheel; the verdict asks that they stay flat.
 *
 * `node --import tsx --expose-gc bench/soak/run.ts [--seconds 600] [--sample-seconds 10]
 *   [--concurrency 32] [--error-rate 0.3] [--hang-every 20] [--hang-for 5] [--max-heap-slope 1]
 *   [--idle-seconds 8] [--seed 1] [--client-options '{"outlier":false}'] [--out bench/SOAK.md | none]`
 *   (or `npm run soak -- …`)
 *
 * Exit code: 0 when every check passes, 1 when the verdict fails, 2 when the run itself fails.
 * The instances child is killed however this process ends (exit, SIGINT/SIGTERM, crash), and
 * exits by itself when this process's IPC channel closes.
 */
import { type ChildProcess, fork } from 'node:child_process';
import { getEventListeners, setMaxListeners } from 'node:events';
import { writeFile } from 'node:fs/promises';
import { Socket } from 'node:net';
import os from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { setImmediate as yieldToLoop } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import v8 from 'node:v8';
import { type Client, createClient, isTelescopeError, systemClock, wheelOf, withDeadline } from '../../src/index.js';
import { seededRandom } from '../../src/testing/random.js';
import { socketFds, trackUndiciSockets } from '../../test/helpers/process-resources.js';
import { machineFacts, shellQuote } from '../machine.js';
import {
  type CountMetric,
  checksTable,
  mb,
  median,
  outcomesTable,
  progressLine,
  type Sample,
  samplesTable,
  sparklines,
  thirds,
  verdict,
} from './report.js';
import {
  type ChaosPlan,
  fallbackTitle,
  type InstanceCounts,
  type InstancesMessage,
  type InstancesReady,
  movies,
  type RunnerMessage,
} from './service.js';

const here = dirname(fileURLToPath(import.meta.url));
const repositoryRoot = join(here, '..', '..');

// --- options ------------------------------------------------------------------------------

interface SoakOptions {
  seconds: number;
  sampleSeconds: number;
  concurrency: number;
  errorRate: number;
  hangEverySeconds: number;
  hangForSeconds: number;
  /** Bound of the heap's least-squares slope, MiB per minute. */
  maxHeapSlopeMib: number;
  /** Wait after the load before the idle sample: longer than the 4 s keep-alive and the 1 s budget. */
  idleSeconds: number;
  seed: number;
  /** Overrides of the client's options (JSON), to soak other configurations; none by default. */
  clientOptions: Record<string, unknown>;
  out: string | undefined;
}

function positiveNumber(flag: string, text: string): number {
  const value = Number(text);
  if (!(Number.isFinite(value) && value > 0)) throw new Error(`--${flag} must be a positive number, got ${text}`);
  return value;
}

function positiveInteger(flag: string, text: string): number {
  const value = positiveNumber(flag, text);
  if (!Number.isInteger(value)) throw new Error(`--${flag} must be a positive integer, got ${text}`);
  return value;
}

function parseOptions(argv: string[]): SoakOptions {
  const { values } = parseArgs({
    args: argv,
    options: {
      seconds: { type: 'string', default: '600' },
      'sample-seconds': { type: 'string', default: '10' },
      concurrency: { type: 'string', default: '32' },
      'error-rate': { type: 'string', default: '0.3' },
      'hang-every': { type: 'string', default: '20' },
      'hang-for': { type: 'string', default: '5' },
      'max-heap-slope': { type: 'string', default: '1' },
      'idle-seconds': { type: 'string', default: '8' },
      seed: { type: 'string', default: '1' },
      'client-options': { type: 'string', default: '{}' },
      out: { type: 'string', default: 'bench/SOAK.md' },
    },
  });
  const options: SoakOptions = {
    seconds: positiveNumber('seconds', values.seconds),
    sampleSeconds: positiveNumber('sample-seconds', values['sample-seconds']),
    concurrency: positiveInteger('concurrency', values.concurrency),
    errorRate: Number(values['error-rate']),
    hangEverySeconds: positiveNumber('hang-every', values['hang-every']),
    hangForSeconds: positiveNumber('hang-for', values['hang-for']),
    maxHeapSlopeMib: positiveNumber('max-heap-slope', values['max-heap-slope']),
    idleSeconds: positiveNumber('idle-seconds', values['idle-seconds']),
    seed: Number(values.seed),
    clientOptions: parseClientOptions(values['client-options']),
    out: values.out === 'none' || values.out === '' ? undefined : values.out,
  };
  if (!(options.errorRate >= 0 && options.errorRate <= 1)) throw new Error('--error-rate must be in [0, 1]');
  if (options.hangForSeconds >= options.hangEverySeconds) throw new Error('--hang-for must be less than --hang-every');
  if (!Number.isInteger(options.seed)) throw new Error('--seed must be an integer');
  if (Math.floor(options.seconds / options.sampleSeconds) < 6) {
    throw new Error('--seconds must allow at least 6 samples (--seconds ≥ 6 × --sample-seconds)');
  }
  return options;
}

function parseClientOptions(text: string): Record<string, unknown> {
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    throw new Error(`--client-options must be a JSON object, got ${text}`);
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) {
    throw new Error(`--client-options must be a JSON object, got ${text}`);
  }
  if ('instances' in parsed || 'discovery' in parsed) throw new Error('--client-options cannot set instances');
  return parsed as Record<string, unknown>;
}

// --- the instances child ------------------------------------------------------------------

let child: ChildProcess | undefined;
const killChild = () => {
  if (child !== undefined && child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
};
process.on('exit', killChild);
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.once(signal, () => {
    console.error(`\n${signal}: stopping the instances and exiting`);
    killChild();
    process.exit(130);
  });
}
process.on('uncaughtException', (error) => {
  console.error('soak: uncaught exception:', error);
  killChild();
  process.exit(2);
});
process.on('unhandledRejection', (reason) => {
  console.error('soak: unhandled rejection:', reason);
  killChild();
  process.exit(2);
});

function startInstancesChild(maxSeconds: number): Promise<{ process: ChildProcess; urls: string[] }> {
  const started = fork(join(here, 'instances.ts'), ['--max-seconds', String(Math.ceil(maxSeconds))], {
    execArgv: ['--import', 'tsx'],
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  });
  child = started;
  return new Promise((resolveReady, reject) => {
    const timer = setTimeout(() => reject(new Error('instances: not ready within 30 s')), 30_000);
    started.once('error', (error) => {
      clearTimeout(timer);
      reject(error);
    });
    started.once('exit', (code, signal) => {
      clearTimeout(timer);
      reject(new Error(`instances: exited (${signal ?? code}) before they were ready`));
    });
    started.on('message', function onReady(message: InstancesMessage) {
      if (message.kind !== 'ready') return;
      clearTimeout(timer);
      started.off('message', onReady);
      started.removeAllListeners('exit');
      resolveReady({ process: started, urls: (message as InstancesReady).urls });
    });
  });
}

function askCounts(instances: ChildProcess): Promise<InstanceCounts | undefined> {
  return new Promise((resolveCounts) => {
    const timer = setTimeout(() => {
      instances.off('message', onCounts);
      resolveCounts(undefined);
    }, 5000);
    const onCounts = (message: InstancesMessage) => {
      if (message.kind !== 'counts') return;
      clearTimeout(timer);
      instances.off('message', onCounts);
      resolveCounts(message);
    };
    instances.on('message', onCounts);
    instances.send({ kind: 'counts' } satisfies RunnerMessage);
  });
}

// --- measurements -------------------------------------------------------------------------

const undici = trackUndiciSockets();

/** Kinds of active resources other than sockets and timers, with their counts. */
function otherResources(resources: readonly string[]): string {
  const counts = new Map<string, number>();
  for (const name of resources) {
    if (name !== 'TCPSocketWrap' && name !== 'Timeout') counts.set(name, (counts.get(name) ?? 0) + 1);
  }
  return [...counts]
    .sort(([a], [b]) => a.localeCompare(b))
    .map(([name, count]) => `${name} ${count}`)
    .join(', ');
}

const TimeoutClass = setTimeout(() => {}, 0).constructor as new (...args: never[]) => unknown;

/** Live objects of a class, after a GC (v8.queryObjects, Node ≥ 20.13); undefined when unavailable. */
function liveObjects(ofClass: new (...args: never[]) => unknown): number | undefined {
  const query = (v8 as { queryObjects?: (ctor: unknown, options: { format: 'count' }) => number }).queryObjects;
  if (typeof query !== 'function') return undefined;
  return query(ofClass, { format: 'count' });
}

// v8.queryObjects warns once that it is experimental; the report says what it is.
const emitWarning = process.emitWarning.bind(process);
process.emitWarning = ((warning: string | Error, ...rest: unknown[]) => {
  const text = typeof warning === 'string' ? warning : warning.message;
  if (text.includes('queryObjects')) return;
  (emitWarning as (...args: unknown[]) => void)(warning, ...rest);
}) as typeof process.emitWarning;

// --- the run ------------------------------------------------------------------------------

/** Counters of what callers saw, cumulative since the load started. */
interface Tally {
  calls: number;
  ok: number;
  fallbacks: number;
  failures: Record<string, number>;
  unexpected: number;
  unexpectedMessages: string[];
  retries: number;
  budgetExhausted: number;
  ejections: number;
  /** Per instance index: times ejected and the longest ejection. */
  ejectionsByInstance: Map<number, { times: number; longestMs: number }>;
  returns: number;
  breakerTransitions: Record<string, number>;
  shed: number;
  fallbackEvents: number;
}

const sleep = (ms: number) => new Promise<void>((done) => setTimeout(done, ms));

async function main(): Promise<number> {
  const argv = process.argv.slice(2);
  const options = parseOptions(argv);
  const gc = (globalThis as { gc?: () => void }).gc;
  if (typeof gc !== 'function') {
    throw new Error('global.gc is missing: run with --expose-gc (npm run soak -- …)');
  }
  const command = ['node', '--import', 'tsx', '--expose-gc', 'bench/soak/run.ts', ...argv].map(shellQuote).join(' ');
  const loadAtStart = os.loadavg()[0] ?? 0;
  const startedAt = new Date();
  // Whatever happens, never run far past the planned end.
  const plannedSeconds = options.seconds + options.idleSeconds + 60;
  const watchdog = setTimeout(
    () => {
      console.error(`soak: still running ${plannedSeconds + 120} s after the start; giving up`);
      killChild();
      process.exit(2);
    },
    (plannedSeconds + 120) * 1000,
  );
  watchdog.unref();

  const instances = await startInstancesChild(plannedSeconds + 300);
  let hanging = false;
  let stopping = false;
  instances.process.on('message', (message: InstancesMessage) => {
    if (message.kind === 'hang') hanging = message.hanging;
  });
  instances.process.once('exit', (code, signal) => {
    if (stopping) return;
    console.error(`soak: the instances process exited (${signal ?? code}) during the run`);
    process.exit(2);
  });
  console.error(
    `instances: ${instances.urls.join(', ')} (1: errorRate ${options.errorRate}; 2: hangs ${options.hangForSeconds} s every ${options.hangEverySeconds} s)`,
  );

  const tally: Tally = {
    calls: 0,
    ok: 0,
    fallbacks: 0,
    failures: {},
    unexpected: 0,
    unexpectedMessages: [],
    retries: 0,
    budgetExhausted: 0,
    ejections: 0,
    ejectionsByInstance: new Map(),
    returns: 0,
    breakerTransitions: {},
    shed: 0,
    fallbackEvents: 0,
  };
  /** Passed to every `search` call for the whole run, as an application's shutdown signal would be. */
  const lifetime = new AbortController();
  // Every search call in flight listens on it: more than Node's default of 10 is expected.
  setMaxListeners(4 * options.concurrency, lifetime.signal);
  const wheel = wheelOf(systemClock);
  const loadStart = { at: 0 };
  let client: Client<typeof movies> | undefined;

  const sample = (phase: Sample['phase']): Sample => {
    gc();
    gc();
    const resources = process.getActiveResourcesInfo();
    const memory = process.memoryUsage();
    const stats = client?.stats();
    const endpoints = stats === undefined ? [] : Object.values(stats.endpoints);
    return {
      t: Math.round((performance.now() - loadStart.at) / 1000),
      phase,
      hanging,
      heapUsed: memory.heapUsed,
      rss: memory.rss,
      external: memory.external,
      tcpSockets: resources.filter((name) => name === 'TCPSocketWrap').length,
      socketFds: socketFds(),
      undiciSockets: undici.open,
      handles: resources.length,
      otherResources: otherResources(resources),
      timeouts: resources.filter((name) => name === 'Timeout').length,
      timeoutObjects: liveObjects(TimeoutClass),
      socketObjects: liveObjects(Socket as unknown as new (...args: never[]) => unknown),
      wheel: wheel.size,
      abortListeners: getEventListeners(lifetime.signal, 'abort').length,
      outstanding: endpoints.reduce((sum, endpoint) => sum + endpoint.outstanding, 0),
      ejected:
        (stats?.instances ?? [])
          .filter((instance) => instance.ejected)
          .map((instance) => instances.urls.indexOf(instance.url))
          .join(',') || '–',
      circuitsNotClosed: endpoints.filter((endpoint) => endpoint.breaker !== 'closed').length,
      calls: tally.calls,
      ok: tally.ok,
      fallbacks: tally.fallbacks,
      failures: { ...tally.failures },
      unexpected: tally.unexpected,
      retries: tally.retries,
      budgetExhausted: tally.budgetExhausted,
      ejections: tally.ejections,
      connectionsOpened: undici.opened,
    };
  };

  const beforeClient = sample('before-client');
  client = createClient(movies, { ...options.clientOptions, instances: instances.urls });
  const active = client;
  active.on('retry', () => tally.retries++);
  active.on('budget-exhausted', () => tally.budgetExhausted++);
  active.on('eject', (event) => {
    tally.ejections++;
    const index = instances.urls.indexOf(event.instance);
    const entry = tally.ejectionsByInstance.get(index) ?? { times: 0, longestMs: 0 };
    entry.times++;
    entry.longestMs = Math.max(entry.longestMs, event.ejectionMs);
    tally.ejectionsByInstance.set(index, entry);
  });
  active.on('return', () => tally.returns++);
  active.on('shed', () => tally.shed++);
  active.on('fallback', () => tally.fallbackEvents++);
  active.on('breaker', ({ endpoint, state }) => {
    const key = `${endpoint} → ${state}`;
    tally.breakerTransitions[key] = (tally.breakerTransitions[key] ?? 0) + 1;
  });

  const random = seededRandom(options.seed);
  const queries = ['heat', 'ronin', 'thief', 'collateral', 'insider'];
  const record = (outcome: Promise<unknown>, isFallback: (value: unknown) => boolean) =>
    outcome.then(
      (value) => {
        tally.calls++;
        if (isFallback(value)) tally.fallbacks++;
        else tally.ok++;
      },
      (error: unknown) => {
        tally.calls++;
        if (isTelescopeError(error)) {
          tally.failures[error.code] = (tally.failures[error.code] ?? 0) + 1;
          return;
        }
        tally.unexpected++;
        if (tally.unexpectedMessages.length < 5) tally.unexpectedMessages.push(String(error));
      },
    );
  const never = () => false;
  /** One call of the mix: 60% getMovie (fallback), 25% search (shared signal), 15% rate (in withDeadline). */
  const oneCall = (): Promise<void> => {
    const draw = random();
    const id = 1 + Math.floor(random() * 1000);
    if (draw < 0.6) {
      return record(active.getMovie({ id }), (movie) => (movie as { title: string }).title === fallbackTitle);
    }
    if (draw < 0.85) {
      const q = queries[id % queries.length] as string;
      return record(active.search({ q }, { signal: lifetime.signal }), never);
    }
    return record(
      withDeadline(800, () => active.rate({ id }, { stars: 1 + (id % 5) })),
      never,
    );
  };
  const worker = async () => {
    while (!stopping) {
      await oneCall();
      // Calls answered without I/O (an open circuit, a fallback) settle in microtasks: without
      // this a worker would never let timers run (telescope's included) and starve the loop.
      await yieldToLoop();
    }
  };

  const plan: ChaosPlan = {
    errorRate: options.errorRate,
    hangEveryMs: options.hangEverySeconds * 1000,
    hangForMs: options.hangForSeconds * 1000,
    // Offset so that, at the default 10 s sampling, every other sample falls inside a hang.
    firstHangAfterMs: Math.max(0, options.sampleSeconds - 2) * 1000,
    seed: options.seed,
  };
  loadStart.at = performance.now();
  const baseline = sample('baseline');
  console.error(
    `soak: ${options.seconds} s at ${options.concurrency} in flight, a sample every ${options.sampleSeconds} s ` +
      `(after a forced GC); warm-up is the first third`,
  );
  instances.process.send({ kind: 'start', plan } satisfies RunnerMessage);
  loadStart.at = performance.now();
  const workers = Array.from({ length: options.concurrency }, worker);

  const load: Sample[] = [];
  const sampleCount = Math.floor(options.seconds / options.sampleSeconds);
  for (let index = 1; index <= sampleCount; index++) {
    const dueAt = loadStart.at + index * options.sampleSeconds * 1000;
    await sleep(Math.max(0, dueAt - performance.now()));
    const taken = sample('load');
    taken.t = Math.round(index * options.sampleSeconds * 10) / 10;
    console.error(progressLine(taken, load.at(-1) ?? baseline));
    load.push(taken);
  }
  stopping = true;
  await Promise.all(workers);
  const loadSeconds = (performance.now() - loadStart.at) / 1000;

  console.error(`load stopped; idle for ${options.idleSeconds} s (keep-alive sockets expire, budgets run out)`);
  await sleep(options.idleSeconds * 1000);
  const idle = sample('idle');
  const counts = await askCounts(instances.process);
  const finalStats = active.stats();
  await active.close();
  // Handles are released in the close phase of the loop: let two iterations pass.
  await new Promise<void>((done) => setImmediate(() => setImmediate(done)));
  const closed = sample('closed');
  lifetime.abort();

  const countMetrics = countMetricsFor(options.concurrency);
  const result = verdict({
    load,
    idle,
    closed,
    beforeClient,
    countMetrics,
    maxHeapSlopeBytesPerMin: options.maxHeapSlopeMib * 2 ** 20,
  });
  const { warmup, middle, last } = thirds(load);
  const warmupEnd = warmup.at(-1)?.t ?? 0;
  const codes = [...new Set(load.flatMap((entry) => Object.keys(entry.failures)))].sort();
  const all = [beforeClient, baseline, ...load, idle, closed];
  const lastLoad = load.at(-1) as Sample;

  const sparkBlock = sparklines(load);
  console.log(`\n${samplesTable(all, warmupEnd)}\n`);
  console.log(`load samples, t = ${load[0]?.t}…${lastLoad.t} s (min–max, then one character per sample):`);
  console.log(`${sparkBlock}\n`);
  console.log(checksTable(result.checks));
  console.log(
    `\nheap slope ${(result.heapSlopeBytesPerMin / 2 ** 10).toFixed(0)} KiB/min (middle + last thirds), ` +
      `${(result.heapSlopeLastBytesPerMin / 2 ** 10).toFixed(0)} KiB/min (last third); ` +
      `rss ${(result.rssSlopeBytesPerMin / 2 ** 10).toFixed(0)} KiB/min`,
  );
  console.log(`verdict: ${result.pass ? 'PASS' : 'FAIL'}`);

  if (options.out !== undefined) {
    const totals = [
      `- Calls: ${lastLoad.calls.toLocaleString('en-US')} in ${loadSeconds.toFixed(0)} s ` +
        `(${Math.round(lastLoad.calls / loadSeconds).toLocaleString('en-US')}/s): ` +
        `${lastLoad.ok.toLocaleString('en-US')} ok, ${lastLoad.fallbacks.toLocaleString('en-US')} answered by the fallback, ` +
        `${Object.values(lastLoad.failures)
          .reduce((sum, count) => sum + count, 0)
          .toLocaleString('en-US')} failed` +
        (codes.length === 0
          ? ''
          : ` (${codes.map((code) => `${code} ${(lastLoad.failures[code] ?? 0).toLocaleString('en-US')}`).join(', ')})`) +
        `, ${lastLoad.unexpected} non-telescope errors${tally.unexpectedMessages.length > 0 ? `: ${tally.unexpectedMessages.join('; ')}` : ''}.`,
      `- Client events: ${tally.retries.toLocaleString('en-US')} retries, ${tally.budgetExhausted.toLocaleString('en-US')} ` +
        `retries refused by the budget, ${tally.ejections} ejections (${
          [...tally.ejectionsByInstance]
            .sort(([a], [b]) => a - b)
            .map(([index, entry]) => `instance ${index} ×${entry.times}, longest ${entry.longestMs / 1000} s`)
            .join('; ') || 'none'
        }), ${tally.returns} returns, ${tally.shed} shed, ` +
        `${tally.fallbackEvents.toLocaleString('en-US')} fallback events; circuit transitions: ` +
        `${
          Object.keys(tally.breakerTransitions).length === 0
            ? 'none'
            : Object.entries(tally.breakerTransitions)
                .map(([key, count]) => `${key} ×${count}`)
                .join(', ')
        }.`,
      `- \`stats()\` at the end: ${Object.entries(finalStats.endpoints)
        .map(
          ([name, endpoint]) =>
            `${name} ${endpoint.requests.toLocaleString('en-US')} requests, ${endpoint.retries.toLocaleString('en-US')} retries, ` +
            `${endpoint.fallbacks.toLocaleString('en-US')} fallbacks`,
        )
        .join('; ')}.`,
      `- undici connections opened: ${undici.opened.toLocaleString('en-US')} (hung requests cost their socket).`,
      ...(counts === undefined
        ? ['- Server-side counts: the instances did not answer.']
        : [
            `- Server side (${counts.hangPhases} hang phases of instance 2; outlier ejection decides how much traffic ` +
              'the faulty instances get, so this is how many faults the client actually met): ' +
              counts.instances
                .map(
                  (instance, index) =>
                    `instance ${index}: ${instance.total.toLocaleString('en-US')} requests ` +
                    `(${(
                      (100 * instance.total) /
                        Math.max(
                          1,
                          counts.instances.reduce((sum, each) => sum + each.total, 0),
                        )
                    ).toFixed(1)}%), ` +
                    `statuses ${JSON.stringify(instance.byStatus)}, ` +
                    `faults ${JSON.stringify(Object.fromEntries(Object.entries(instance.faults).filter(([, count]) => count > 0)))}`,
                )
                .join('; ') +
              '.',
          ]),
    ];
    const report = [
      '# Soak results',
      '',
      `Generated ${new Date().toISOString()} (started ${startedAt.toISOString()}) by:`,
      '',
      '```sh',
      command,
      '```',
      '',
      options.seconds === 600
        ? 'This is the default length (600 s).'
        : `**This run lasted ${options.seconds} s; the default is 600 s** (\`npm run soak\` with no flags).`,
      '',
      `## Verdict: ${result.pass ? 'PASS' : 'FAIL'}`,
      '',
      checksTable(result.checks),
      '',
      `Heap after GC: ${(result.heapSlopeBytesPerMin / 2 ** 10).toFixed(0)} KiB/min over the middle and last thirds ` +
        `(t = ${middle[0]?.t}…${lastLoad.t} s), ${(result.heapSlopeLastBytesPerMin / 2 ** 10).toFixed(0)} KiB/min over the ` +
        `last third alone; median ${mb(median(middle.map((entry) => entry.heapUsed)))} MiB in the middle third, ` +
        `${mb(median(last.map((entry) => entry.heapUsed)))} MiB in the last. RSS slope ` +
        `${(result.rssSlopeBytesPerMin / 2 ** 10).toFixed(0)} KiB/min (not a check: the allocator keeps pages).`,
      '',
      'Slack of each count check, and why:',
      '',
      ...countMetrics.map((metric) => `- ${metric.label}: +${metric.slack}. ${metric.why}`),
      '',
      '## Setup',
      '',
      (Object.keys(options.clientOptions).length === 0
        ? '- Client process (this one): `createClient(movies, { instances })` with every default: timeout 1000 ms, ' +
          'one retry on another instance inside the retry budget (10% + 10/s), breaker per endpoint, bulkhead 100, ' +
          'outlier ejection (5 failures in a row, 10 s doubling up to 300 s, at most 50% of instances), metrics. '
        : `- Client process (this one): \`createClient(movies, { instances, ...${JSON.stringify(options.clientOptions)} })\`, ` +
          'the defaults otherwise. ') +
        'Calls: 60% `getMovie` (GET, async fallback), ' +
        '25% `search` (GET, no fallback, passed one `AbortSignal` that lives for the whole run), ' +
        '15% `rate` (POST, never retried once sent, inside `withDeadline(800)`), ' +
        `${options.concurrency} in flight at all times, each worker starting its next call when the last ends ` +
        '(after a `setImmediate`, so that calls answered without I/O cannot starve the event loop).',
      `- Instances process: \`startInstances(movies, handlers, { count: 3 })\` on 127.0.0.1. Instance 0 healthy; ` +
        `instance 1 \`chaos({ errorRate: ${options.errorRate} })\` (503); instance 2 \`chaos({ hang: true })\` for ` +
        `${options.hangForSeconds} s every ${options.hangEverySeconds} s (first at ${plan.firstHangAfterMs / 1000} s), ` +
        'by its own timer. A hung call holds its attempt until the 1 s budget runs out (no `attemptTimeoutMs` by default).',
      `- Every ${options.sampleSeconds} s the client process runs \`global.gc()\` twice, then records the row below. ` +
        `The first third of the load samples is warm-up (marked (w)) and not judged; ` +
        'the checks compare the last third with the middle third, samples taken while instance 2 hangs with their like ' +
        'and the others with theirs (hung calls hold a socket and timers until their budget ends). After the load, the run waits ' +
        `${options.idleSeconds} s (idle row), then closes the client (closed row).`,
      '',
      'Columns: **TCPSocketWrap**, **handles** and **Timeout** come from `process.getActiveResourcesInfo()`, which ' +
        'lists only resources that keep the event loop alive (**other handles** names the kinds besides sockets and timers): undici unrefs idle sockets and telescope unrefs its timers, ' +
        "so these count busy sockets and ref'd timers (the sampler's timer has just fired when it samples, so it is not among them). **socket fds** counts every " +
        'socket descriptor of the process (`/proc/self/fd`, including the IPC channel), **undici sockets** every ' +
        'connection undici reported as connected (`undici:client:connected`) and not yet closed, **Timeout objs** and ' +
        "**Socket objs** the live objects of those classes on the heap (`v8.queryObjects`), ref'd, unref'd or spent. " +
        '**wheel** is `wheelOf(systemClock).size`, **abort listeners** the listeners on the long-lived signal, ' +
        '**in flight** the sum of `stats()` `outstanding`, **inst 2** whether instance 2 was hanging, **ejected** ' +
        'the instances ejected at that moment, **circuits not closed** the endpoints whose breaker was open or half-open.',
      '',
      '## Samples',
      '',
      samplesTable(all, warmupEnd),
      '',
      `Load samples, t = ${load[0]?.t}…${lastLoad.t} s (min–max, then one character per sample):`,
      '',
      '```',
      sparkBlock,
      '```',
      '',
      '## What the callers saw, per interval',
      '',
      outcomesTable([baseline, ...load], codes),
      '',
      ...totals,
      '',
      '## Machine',
      '',
      ...(await machineFacts(
        loadAtStart,
        ['undici', 'opossum', 'zod', 'tsx'],
        ', shared with other work: CPU-bound numbers (calls/s) are noisy',
      )),
      '',
    ].join('\n');
    await writeFile(resolve(repositoryRoot, options.out), report);
    console.error(`wrote ${options.out}`);
  }
  stopping = true;
  instances.process.disconnect();
  return result.pass ? 0 : 1;
}

/**
 * Slack of each flatness check. A leak grows with calls (thousands a second) or with time, so
 * over minutes it passes any of these; the slack only absorbs the sample-to-sample swing of a
 * healthy client, which samples taken during and outside a hang phase make wide.
 */
function countMetricsFor(concurrency: number): CountMetric[] {
  const half = Math.ceil(concurrency / 2);
  return [
    {
      key: 'tcpSockets',
      label: 'TCPSocketWrap (busy sockets)',
      slack: half,
      why: `One busy socket per attempt in flight: about ${concurrency}, whatever the faults.`,
    },
    {
      key: 'socketFds',
      label: 'socket fds',
      slack: concurrency,
      why:
        'Busy plus idle keep-alive sockets (idle ones close after 4 s). An instance back from ejection opens up to ' +
        'one connection per call in flight, idle again seconds later when it is ejected again: one concurrency’s worth.',
    },
    { key: 'undiciSockets', label: 'undici sockets', slack: concurrency, why: 'As socket fds.' },
    {
      key: 'handles',
      label: 'active handles',
      slack: concurrency,
      why:
        'Busy sockets, plus the workers’ pending `setImmediate` yields (0 to one per worker, see other handles), ' +
        'plus a constant (the IPC pipe, the child process, stdio pipes).',
    },
    {
      key: 'timeouts',
      label: 'Timeout (ref’d)',
      slack: 2,
      why: 'The client creates no ref’d timer (telescope and undici unref theirs).',
    },
    {
      key: 'timeoutObjects',
      label: 'Timeout objects',
      slack: concurrency + 8,
      why: 'undici keeps a timer per connection (so as socket fds), telescope a handful (wheel, breaker rotation).',
    },
    { key: 'socketObjects', label: 'Socket objects', slack: concurrency, why: 'As socket fds.' },
    {
      key: 'wheel',
      label: 'timer wheel entries',
      slack: 2 * concurrency,
      why: 'One attempt timeout per call in flight, plus one per recent async fallback: its race against the deadline stays in the wheel until the call’s deadline.',
    },
    {
      key: 'abortListeners',
      label: 'abort listeners on the shared signal',
      slack: half,
      why: 'One per `search` attempt in flight (a quarter of the calls).',
    },
  ];
}

// --- report helpers -----------------------------------------------------------------------

main().then(
  (code) => {
    killChild();
    process.exit(code);
  },
  (error: unknown) => {
    console.error(error instanceof Error ? (error.stack ?? error.message) : error);
    killChild();
    process.exit(2);
  },
);
