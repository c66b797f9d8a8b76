/**
 * One variant-round in its own process: warm up, then keep `concurrency` requests in flight
 * for a fixed time or number of requests, checking every response. Reports over IPC.
 *
 * A fresh process per variant-round keeps variants from sharing a JIT, a heap or sockets,
 * so one library's garbage or optimisation state never bills another.
 */
import { readFile, writeFile } from 'node:fs/promises';
import { Session } from 'node:inspector/promises';
import { findSourceMap } from 'node:module';
import { cpus } from 'node:os';
import { constants, type PerformanceEntry, PerformanceObserver } from 'node:perf_hooks';
import {
  type ClientFailure,
  type ClientJob,
  type ClientResult,
  checkMovie,
  type MeasuredPhase,
  quantile,
} from './shared.js';
import { type Driver, variantNamed } from './variants.js';

/** Ids cycle through this many movies so paths (and body sizes) vary a little, as in real traffic. */
const distinctIds = 1000;

/** Latencies of a measured phase whose length is not known in advance. */
class LatencyRecorder {
  #values: Float64Array;
  #count = 0;

  constructor(expected: number) {
    this.#values = new Float64Array(Math.max(1024, expected));
  }

  add(latencyMs: number): void {
    if (this.#count === this.#values.length) {
      const grown = new Float64Array(this.#values.length * 2);
      grown.set(this.#values);
      this.#values = grown;
    }
    this.#values[this.#count++] = latencyMs;
  }

  sorted(): Float64Array {
    return this.#values.subarray(0, this.#count).sort();
  }
}

/**
 * Keeps `concurrency` requests in flight until `phase` is over (so many started, or the time
 * is up); returns how many were made. Each latency goes to `latencies` when given.
 */
async function drive(
  driver: Driver,
  variant: string,
  phase: MeasuredPhase,
  concurrency: number,
  latencies: LatencyRecorder | undefined,
): Promise<number> {
  const requestLimit = 'requests' in phase ? phase.requests : Number.POSITIVE_INFINITY;
  const endsAt = 'seconds' in phase ? performance.now() + phase.seconds * 1000 : Number.POSITIVE_INFINITY;
  let started = 0;
  const worker = async (): Promise<void> => {
    // Checked before each request: a timed phase stops starting new ones once time is up.
    while (started < requestLimit && performance.now() < endsAt) {
      const id = (started++ % distinctIds) + 1;
      const startedAt = performance.now();
      const body = await driver.getMovie(id);
      latencies?.add(performance.now() - startedAt);
      checkMovie(body, id, variant);
    }
  };
  const workers: Promise<void>[] = [];
  for (let index = 0; index < Math.min(concurrency, requestLimit); index++) workers.push(worker());
  await Promise.all(workers);
  return started;
}

/**
 * Main-thread garbage-collection pauses while it runs, in microseconds: all of them, and the
 * young-generation ones (scavenges). Off the hot path: V8 reports each pause after it ends.
 */
class GcPauses {
  totalMicros = 0;
  minorMicros = 0;
  readonly #observer = new PerformanceObserver((list) => this.#count(list.getEntries()));

  start(): void {
    this.#observer.observe({ entryTypes: ['gc'] });
  }

  /** Stops observing, after the entries already queued are counted. */
  stop(): void {
    this.#count(this.#observer.takeRecords());
    this.#observer.disconnect();
  }

  #count(entries: readonly PerformanceEntry[]): void {
    for (const entry of entries) {
      const micros = entry.duration * 1000;
      this.totalMicros += micros;
      const kind = (entry as { detail?: { kind?: number } }).detail?.kind;
      if (kind === constants.NODE_PERFORMANCE_GC_MINOR) this.minorMicros += micros;
    }
  }
}

/** Starts the V8 sampling profiler; returns a function that stops it and writes the profile. */
async function startProfiler(path: string, intervalUs: number): Promise<() => Promise<void>> {
  const session = new Session();
  session.connect();
  await session.post('Profiler.enable');
  await session.post('Profiler.setSamplingInterval', { interval: intervalUs });
  await session.post('Profiler.start');
  return async () => {
    const { profile } = await session.post('Profiler.stop');
    session.disconnect();
    // tsx runs transpiled, whitespace-minified code: V8's positions are all on line 1. Map
    // them back through tsx's source maps while this process still holds them, so the
    // saved profile points at lines of the .ts sources.
    for (const node of profile.nodes) {
      const frame = node.callFrame;
      if (!frame.url.startsWith('file://')) continue;
      const entry = findSourceMap(frame.url)?.findEntry(frame.lineNumber, frame.columnNumber);
      if (entry !== undefined && 'originalLine' in entry) {
        frame.lineNumber = entry.originalLine;
        frame.columnNumber = entry.originalColumn;
      }
    }
    await writeFile(path, JSON.stringify(profile));
  };
}

/** Linux reports /proc CPU times in USER_HZ ticks, 100 per second on every mainstream build. */
const microsPerTick = 10_000;

/** Busy CPU time of the whole machine (all cores, including steal), or undefined off Linux. */
async function machineBusyMicros(): Promise<number | undefined> {
  try {
    const line = (await readFile('/proc/stat', 'utf8')).split('\n', 1)[0] ?? '';
    // cpu user nice system idle iowait irq softirq steal ...
    const [user, nice, system, , , irq, softirq, steal] = line.trim().split(/\s+/).slice(1).map(Number);
    return ((user ?? 0) + (nice ?? 0) + (system ?? 0) + (irq ?? 0) + (softirq ?? 0) + (steal ?? 0)) * microsPerTick;
  } catch {
    return undefined;
  }
}

/** User + system CPU time of another process, or undefined when it cannot be read. */
async function processMicros(pid: number | undefined): Promise<number | undefined> {
  if (pid === undefined) return undefined;
  try {
    const stat = await readFile(`/proc/${pid}/stat`, 'utf8');
    // Fields after the parenthesised command name; utime and stime are the 12th and 13th of them.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(fields[11]) + Number(fields[12])) * microsPerTick;
  } catch {
    return undefined;
  }
}

async function run(job: ClientJob): Promise<ClientResult> {
  const driver = await variantNamed(job.variant).create(job.urls, { ca: job.ca });
  try {
    // Warm-up: connections opened, code optimised, before anything is measured.
    // Timed rather than counted, so a fast client warms up as long as a slow one.
    if (job.warmupSeconds > 0) {
      await drive(driver, job.variant, { seconds: job.warmupSeconds }, job.concurrency, undefined);
    }
    const latencies = new LatencyRecorder(
      'requests' in job.measure ? job.measure.requests : job.measure.seconds * 50_000,
    );
    // Only the measured phase is profiled: no module loading, no warm-up in the profile.
    const stopProfiler =
      job.profilePath === undefined ? undefined : await startProfiler(job.profilePath, job.profileIntervalUs ?? 100);
    const machineBefore = await machineBusyMicros();
    const targetBefore = await processMicros(job.targetPid);
    const gc = new GcPauses();
    gc.start();
    const cpuBefore = process.cpuUsage();
    const startedAt = performance.now();
    const requests = await drive(driver, job.variant, job.measure, job.concurrency, latencies);
    const elapsedMs = performance.now() - startedAt;
    const cpu = process.cpuUsage(cpuBefore);
    gc.stop();
    const machineAfter = await machineBusyMicros();
    const targetAfter = await processMicros(job.targetPid);
    await stopProfiler?.();
    const foreignMicros =
      machineBefore === undefined ||
      machineAfter === undefined ||
      targetBefore === undefined ||
      targetAfter === undefined
        ? undefined
        : machineAfter - machineBefore - (targetAfter - targetBefore) - (cpu.user + cpu.system);
    const latenciesMs = latencies.sorted();
    return {
      kind: 'result',
      variant: job.variant,
      requests,
      elapsedMs,
      cpuMicros: cpu.user + cpu.system,
      cpuSystemMicros: cpu.system,
      gcMicros: gc.totalMicros,
      gcMinorMicros: gc.minorMicros,
      latencyP50Ms: quantile(latenciesMs, 0.5),
      latencyP99Ms: quantile(latenciesMs, 0.99),
      // maxRSS is in kilobytes (getrusage); peak over the process's whole life.
      peakRssBytes: process.resourceUsage().maxRSS * 1024,
      foreignCpuShare:
        foreignMicros === undefined ? undefined : Math.max(0, foreignMicros) / (elapsedMs * 1000 * cpus().length),
    };
  } finally {
    await driver.close();
  }
}

function send(message: ClientResult | ClientFailure): Promise<void> {
  return new Promise((resolve, reject) => {
    if (process.send === undefined) {
      process.stdout.write(`${JSON.stringify(message)}\n`);
      resolve();
      return;
    }
    process.send(message, undefined, {}, (error) => (error ? reject(error) : resolve()));
  });
}

async function main(): Promise<void> {
  const job = JSON.parse(process.argv[2] ?? '') as ClientJob;
  // Never outlive the runner, whatever it died of.
  process.once('disconnect', () => process.exit(1));
  try {
    await send(await run(job));
  } catch (error) {
    await send({
      kind: 'failure',
      variant: job.variant,
      message: error instanceof Error ? error.message : String(error),
    });
    process.exitCode = 1;
  }
  // Leftover keep-alive timers or sockets of a library must not hold the process open; the
  // message is already flushed (send's callback ran).
  process.exit();
}

void main();
