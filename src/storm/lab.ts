/**
 * The storm lab in real mode: starts a multi-tier topology of real HTTP servers in child
 * processes on 127.0.0.1, drives open-loop load at the edge, injects faults on schedule, and
 * measures from the servers' own counts what a client strategy does to the system.
 */
import { type ChildProcess, fork } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { Pool } from 'undici';
import { EdgeLoad } from './edge-load.js';
import { callerOf, faultWindow, type OutageSummary, recoverySeconds, summarizeOutage } from './outage.js';
import { type OverloadSummary, summarizeOverload } from './overload.js';
import { loadFactorAt } from './scenarios.js';
import type {
  EdgeSample,
  EntryOutcome,
  EntrySecond,
  FaultStep,
  FromTier,
  RunProgress,
  Scenario,
  TierCapacity,
  TierConfig,
  TierCounters,
  TierName,
  Topology,
  ToTier,
} from './types.js';

export interface RunOptions {
  scenario: Scenario;
  /** Strategy name or module path. */
  strategy: string;
  /** Edge requests per second (open loop). @default scenario.rate ?? 200 */
  rate?: number;
  /** Seconds of load. @default scenario.durationS ?? 20 */
  durationS?: number;
  /** Seconds to wait for answers after the load stops; later answers count as none. @default 8 */
  drainS?: number;
  topology?: Partial<Topology>;
  capacity?: Partial<Record<TierName, TierCapacity>>;
  /** CPU milliseconds per request in every tier. @default 0.5 */
  workMs?: number;
  /** Backend answer latency in milliseconds when healthy. @default 5 */
  backendLatencyMs?: number;
  /** Called about once a second with progress. */
  onProgress?: (progress: RunProgress) => void;
  seed?: number;
}

/** One second of the run, as the servers saw it. */
export interface TimePoint extends EntrySecond {
  /** Successful edge answers (real data) given in this second. */
  goodput: number;
}

export interface RunResult extends EntryOutcome {
  scenario: string;
  rate: number;
  /** Backend requests (every attempt of every tier) per edge request admitted (not shed at the door). */
  amplification: number;
  /** Requests a tier finished after its caller had given up or past its deadline, per tier. */
  wasted: Record<TierName, number>;
  peakInFlight: Record<TierName, number>;
  shed: Record<TierName, number>;
  received: Record<TierName, number>;
  /**
   * outage-recover and metastable: seconds from the end of the fault until edge success is
   * back at or above 99% for the rest of the run; undefined if it never was.
   */
  recoveryS: number | undefined;
  /** overload: the backend tier's measured capacity, goodput at peak load and p99s. */
  overload?: OverloadSummary;
  /** What the strategy sent to the failing tier during the scenario's fault window. */
  outage?: OutageSummary;
  timeline: TimePoint[];
}

/** Scenarios whose result has a `recoveryS`: the fault ends and the question is how fast the edge is back. */
export const recoveryScenarios: ReadonlySet<string> = new Set(['outage-recover', 'metastable']);

export const defaultCapacity: Record<TierName, TierCapacity> = {
  // The front door takes what the load offers; the tiers behind it are what runs out.
  edge: { maxConcurrent: 4096, maxQueue: 0 },
  middle: { maxConcurrent: 64, maxQueue: 64 },
  backend: { maxConcurrent: 64, maxQueue: 64 },
};

export interface TierProcess {
  tier: TierName;
  index: number;
  child: ChildProcess;
  port: number;
  url: string;
}

const tierModule = (() => {
  const here = import.meta.url;
  return fileURLToPath(new URL(here.endsWith('.ts') ? './tier.ts' : './storm-tier.js', here));
})();

/** Running from the TypeScript sources (tests, `npm run storm`): the tiers need tsx too. */
const tierExecArgv =
  tierModule.endsWith('.ts') && !process.execArgv.some((arg) => arg.includes('tsx'))
    ? [...process.execArgv, '--import', 'tsx']
    : process.execArgv;

/** Every child the lab has started and not yet seen exit, across runs (for cleanup on exit). */
const liveChildren = new Set<ChildProcess>();

/** Process ids of the tier processes alive now (for cleanup checks). */
export function liveTierPids(): number[] {
  return [...liveChildren].flatMap((child) => (child.pid === undefined ? [] : [child.pid]));
}

/** Kills every tier process this lab started; safe to call more than once. */
export function killAllTiers(): void {
  for (const child of liveChildren) child.kill('SIGKILL');
  liveChildren.clear();
}

/**
 * For the storm CLIs: every tier process goes with this process, whatever ends it (exit,
 * SIGINT, SIGTERM; a signal exits with code 130).
 */
export function killTiersOnExit(): void {
  process.on('exit', killAllTiers);
  for (const signal of ['SIGINT', 'SIGTERM'] as const) {
    process.once(signal, () => {
      killAllTiers();
      process.stderr.write(`\ntelescope-storm: stopped by ${signal}\n`);
      process.exit(130);
    });
  }
}

export function startTier(config: TierConfig): Promise<TierProcess> {
  return new Promise((resolve, reject) => {
    const child = fork(tierModule, [JSON.stringify(config)], {
      execArgv: tierExecArgv,
      stdio: ['ignore', 'ignore', 'inherit', 'ipc'],
    });
    liveChildren.add(child);
    child.once('exit', () => liveChildren.delete(child));
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`${config.tier}[${config.index}] did not start within 15 s`));
    }, 15_000);
    child.on('message', function onMessage(message: FromTier) {
      if (message.type === 'ready') {
        clearTimeout(timer);
        child.off('message', onMessage);
        resolve({
          tier: config.tier,
          index: config.index,
          child,
          port: message.port,
          url: `http://127.0.0.1:${message.port}`,
        });
      } else if (message.type === 'error') {
        clearTimeout(timer);
        child.kill('SIGKILL');
        reject(new Error(`${config.tier}[${config.index}]: ${message.message}`));
      }
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`${config.tier}[${config.index}] exited with ${code} before it was ready`));
    });
  });
}

let pollId = 0;

export function poll(tier: TierProcess): Promise<{ counters: TierCounters; samples: EdgeSample[] }> {
  return new Promise((resolve, reject) => {
    const id = ++pollId;
    const timer = setTimeout(() => {
      tier.child.off('message', onMessage);
      reject(new Error(`${tier.tier}[${tier.index}] did not answer a poll`));
    }, 5000);
    function onMessage(message: FromTier) {
      if (message.type === 'counters' && message.id === id) {
        clearTimeout(timer);
        tier.child.off('message', onMessage);
        resolve({ counters: message.counters, samples: message.samples });
      }
    }
    tier.child.on('message', onMessage);
    tier.child.send({ type: 'poll', id } satisfies ToTier);
  });
}

export function percentile(sorted: number[], quantile: number): number {
  if (sorted.length === 0) return 0;
  return sorted[Math.min(sorted.length - 1, Math.ceil(quantile * sorted.length) - 1)] as number;
}

/**
 * The entry's answers over a real run, from the load generator's count and the edge
 * instances' samples and status counts. A request never answered within the drain counts as a
 * failure with the longest latency (`worstMs`, the whole load and drain).
 */
export function entryOutcome(
  sent: number,
  answered: number,
  samples: readonly EdgeSample[],
  statuses: readonly Record<string, number>[],
  worstMs: number,
): Omit<EntryOutcome, 'strategy' | 'durationS'> {
  const count = (key: string) => statuses.reduce((n, byStatus) => n + (byStatus[key] ?? 0), 0);
  const latencies = samples.map((sample) => sample.latencyMs).sort((a, b) => a - b);
  for (let index = latencies.length; index < sent; index++) latencies.push(worstMs);
  return {
    sent,
    answered,
    successRate: sent === 0 ? 0 : count('200') / sent,
    fallbackRate: sent === 0 ? 0 : count('200-fallback') / sent,
    latency: {
      p50Ms: percentile(latencies, 0.5),
      p99Ms: percentile(latencies, 0.99),
      maxMs: latencies.length === 0 ? 0 : (latencies[latencies.length - 1] as number),
    },
  };
}

/**
 * The entry in one second of a real run, by the second requests were sent: a request never
 * answered counts as a failure of the second it left in, with the longest latency.
 */
export function entrySecond(
  second: number,
  sentBySecond: readonly number[],
  samples: readonly EdgeSample[],
  worstMs: number,
): Pick<EntrySecond, 'second' | 'edgeRequests' | 'edgeSuccessRate' | 'edgeP99Ms'> {
  const arrived = samples.filter((sample) => Math.floor(sample.atMs / 1000) === second);
  const sentThen = Math.max(sentBySecond[second] ?? 0, arrived.length);
  const slowest = arrived.map((sample) => sample.latencyMs).sort((a, b) => a - b);
  for (let index = arrived.length; index < sentThen; index++) slowest.push(worstMs);
  return {
    second,
    edgeRequests: sentThen,
    edgeSuccessRate: sentThen === 0 ? 1 : arrived.filter((sample) => sample.ok).length / sentThen,
    edgeP99Ms: percentile(slowest, 0.99),
  };
}

/** Runs one strategy through one scenario and returns the servers' numbers. */
export async function runStorm(options: RunOptions): Promise<RunResult> {
  const { scenario } = options;
  const rate = options.rate ?? scenario.rate ?? 200;
  const durationS = options.durationS ?? scenario.durationS ?? 20;
  const drainS = options.drainS ?? 8;
  const topology: Topology = { edge: 1, middle: 3, backend: 3, ...scenario.topology, ...options.topology };
  const capacity = { ...defaultCapacity, ...scenario.capacity, ...options.capacity };
  const profile = scenario.load;
  if (!(rate > 0 && rate <= 20_000)) throw new RangeError(`rate must be in (0, 20000] requests/s, got ${rate}`);
  if (!(durationS > 0 && durationS <= 3600)) throw new RangeError(`duration must be in (0, 3600] s, got ${durationS}`);

  const tiers: TierProcess[] = [];
  try {
    const start = async (tier: TierName, count: number) => {
      const started = await Promise.all(
        Array.from({ length: count }, (_, index) =>
          startTier({
            tier,
            index,
            strategy: options.strategy,
            capacity: capacity[tier],
            workMs: options.workMs ?? 0.5,
            // Only the backend has latency of its own; the tiers before it wait on their calls.
            latencyMs: tier === 'backend' ? (options.backendLatencyMs ?? scenario.backendLatencyMs ?? 5) : 0,
            seed: (options.seed ?? 1) * 100 + index,
          }),
        ),
      );
      tiers.push(...started);
      return started;
    };
    const backends = await start('backend', topology.backend);
    const middles = await start('middle', topology.middle);
    const edges = await start('edge', topology.edge);
    for (const middle of middles)
      middle.child.send({ type: 'targets', urls: backends.map((b) => b.url) } satisfies ToTier);
    for (const edge of edges) edge.child.send({ type: 'targets', urls: middles.map((m) => m.url) } satisfies ToTier);

    const byTier = (name: TierName) => tiers.filter((tier) => tier.tier === name);
    await warmUp(edges.map((edge) => edge.url));
    const capacityPerS =
      profile === undefined
        ? 0
        : await measureCapacity(
            backends.map((backend) => backend.url),
            backends.length * 2 * capacity.backend.maxConcurrent,
          );
    const epochMs = Date.now();
    for (const tier of tiers) tier.child.send({ type: 'start-clock', epochMs } satisfies ToTier);

    // Faults on schedule.
    const faultTimers = scenario.faults.map((step: FaultStep) =>
      setTimeout(() => {
        for (const tier of byTier(step.tier)) {
          if (step.instances === undefined || step.instances.includes(tier.index)) {
            tier.child.send({
              type: 'fault',
              fault: step.fault,
              factor: step.factor,
              rate: step.rate,
            } satisfies ToTier);
          }
        }
      }, step.atS * 1000),
    );

    // Open-loop load: requests leave on schedule whatever the answers do.
    const load = new EdgeLoad(
      edges.map((edge) => edge.url),
      epochMs,
      (durationS + drainS) * 1000,
    );
    // With a load profile, the rate follows it: requests due by t = ∫ capacity × factor.
    const offeredBy = (elapsedS: number): number => {
      if (profile === undefined) return elapsedS * rate;
      let sum = 0;
      for (let at = 0; at < elapsedS; at += 0.01) {
        sum += capacityPerS * loadFactorAt(profile, at + 0.005) * Math.min(0.01, elapsedS - at);
      }
      return sum;
    };
    const total = Math.round(offeredBy(durationS));

    const amplificationBySecond: number[] = [];
    const allSamples: EdgeSample[] = [];
    let previousEdge = 0;
    let previousBackend = 0;
    // Attempts sent to the failing tier, by the tier that calls it (a tier that is down
    // receives nothing), per second.
    const window = faultWindow(scenario, durationS);
    const attemptingTier = window === undefined ? undefined : callerOf(window.tier);
    const attemptsBySecond: number[] = [];
    let previousAttempts = 0;
    const collect = async (second: number) => {
      const polled = await Promise.all(tiers.map(async (tier) => ({ tier, ...(await poll(tier)) })));
      const edgeReceived = polled.filter((p) => p.tier.tier === 'edge').reduce((n, p) => n + p.counters.received, 0);
      const backendReceived = polled
        .filter((p) => p.tier.tier === 'backend')
        .reduce((n, p) => n + p.counters.received, 0);
      allSamples.push(...polled.flatMap((p) => p.samples));
      const edgeDelta = edgeReceived - previousEdge;
      amplificationBySecond[second] = edgeDelta === 0 ? 0 : (backendReceived - previousBackend) / edgeDelta;
      previousEdge = edgeReceived;
      previousBackend = backendReceived;
      if (attemptingTier !== undefined) {
        const attempts = polled
          .filter((p) => p.tier.tier === attemptingTier)
          .reduce((n, p) => n + p.counters.downstreamAttempts, 0);
        attemptsBySecond[second] = attempts - previousAttempts;
        previousAttempts = attempts;
      }
      return polled;
    };

    const startedAt = performance.now();
    const totalS = durationS + drainS;
    await new Promise<void>((resolve) => {
      let second = 0;
      const tick = setInterval(() => {
        const elapsedMs = performance.now() - startedAt;
        const due = Math.min(total, Math.floor(offeredBy(elapsedMs / 1000)));
        while (load.sent < due) load.fire();
        if (load.sent >= total) {
          clearInterval(tick);
          resolve();
        }
        if (elapsedMs >= (second + 1) * 1000) {
          second++;
          void collect(second).catch(() => undefined);
          options.onProgress?.({
            strategy: options.strategy,
            elapsedS: second,
            totalS,
            sent: load.sent,
            answered: load.answered,
          });
        }
      }, 5);
    });
    // Drain: wait for answers, bounded.
    const drainEnd = performance.now() + drainS * 1000;
    let second = Math.floor(durationS);
    await load.drain(drainEnd, () => {
      const elapsedS = Math.floor((performance.now() - startedAt) / 1000);
      if (elapsedS > second) {
        second = elapsedS;
        options.onProgress?.({
          strategy: options.strategy,
          elapsedS,
          totalS,
          sent: load.sent,
          answered: load.answered,
        });
      }
    });
    for (const timer of faultTimers) clearTimeout(timer);
    const final = await collect(Math.ceil((performance.now() - startedAt) / 1000));
    await load.close();
    const { sent, answered, sentBySecond } = load;

    const sum = (tier: TierName, pick: (counters: TierCounters) => number) =>
      final.filter((p) => p.tier.tier === tier).reduce((n, p) => n + pick(p.counters), 0);
    const perTier = (pick: (counters: TierCounters) => number) =>
      ({ edge: sum('edge', pick), middle: sum('middle', pick), backend: sum('backend', pick) }) as Record<
        TierName,
        number
      >;
    const received = perTier((c) => c.received);
    const admittedAtEdge = received.edge - sum('edge', (c) => c.shed);
    const peak = {
      edge: Math.max(0, ...final.filter((p) => p.tier.tier === 'edge').map((p) => p.counters.peakInFlight)),
      middle: Math.max(0, ...final.filter((p) => p.tier.tier === 'middle').map((p) => p.counters.peakInFlight)),
      backend: Math.max(0, ...final.filter((p) => p.tier.tier === 'backend').map((p) => p.counters.peakInFlight)),
    };
    const edgeStatuses = final.filter((p) => p.tier.tier === 'edge').map((p) => p.counters.statuses);
    const worstMs = (durationS + drainS) * 1000;
    const timeline: TimePoint[] = [];
    const seconds = Math.ceil(durationS);
    for (let second = 0; second < seconds; second++) {
      timeline.push({
        ...entrySecond(second, sentBySecond, allSamples, worstMs),
        amplification: amplificationBySecond[second + 1] ?? 0,
        goodput: allSamples.filter(
          (sample) => sample.ok && Math.floor((sample.atMs + sample.latencyMs) / 1000) === second,
        ).length,
      });
    }
    const overload =
      profile === undefined
        ? undefined
        : summarizeOverload(
            capacityPerS,
            profile,
            durationS,
            (second) => timeline[second]?.goodput ?? 0,
            (chosen) => {
              const set = new Set(chosen);
              const ok = allSamples
                .filter((sample) => sample.ok && set.has(Math.floor(sample.atMs / 1000)))
                .map((sample) => sample.latencyMs)
                .sort((a, b) => a - b);
              return percentile(ok, 0.99);
            },
          );

    const recoveryS =
      window !== undefined && recoveryScenarios.has(scenario.name) ? recoverySeconds(window, timeline) : undefined;
    // Per-second deltas are collected at the end of each second: second s is in slot s + 1.
    const outage =
      window === undefined || attemptingTier === undefined
        ? undefined
        : summarizeOutage(
            window,
            sentBySecond,
            Array.from({ length: seconds }, (_, second) => attemptsBySecond[second + 1] ?? 0),
          );

    return {
      strategy: options.strategy,
      scenario: scenario.name,
      rate: profile === undefined ? rate : Math.round(total / durationS),
      durationS,
      ...entryOutcome(sent, answered, allSamples, edgeStatuses, worstMs),
      amplification: admittedAtEdge === 0 ? 0 : received.backend / admittedAtEdge,
      wasted: perTier((c) => c.wasted),
      peakInFlight: peak,
      shed: perTier((c) => c.shed),
      received,
      recoveryS,
      ...(overload === undefined ? {} : { overload }),
      ...(outage === undefined ? {} : { outage }),
      timeline,
    };
  } finally {
    await stopTiers(tiers);
  }
}

/**
 * The backend tier's capacity: `callers` closed-loop callers straight to its instances for
 * 2 s; successful answers per second over the last 1.5 s.
 */
async function measureCapacity(backendUrls: string[], callers: number): Promise<number> {
  const pools = backendUrls.map((url) => new Pool(url, { connections: null }));
  let ok = 0;
  let counting = false;
  const endAt = performance.now() + 2000;
  const countFrom = performance.now() + 500;
  try {
    await Promise.all(
      Array.from({ length: callers }, async (_, index) => {
        const pool = pools[index % pools.length] as Pool;
        while (performance.now() < endAt) {
          counting = performance.now() >= countFrom;
          const response = await pool
            .request({ path: '/work', method: 'GET', headersTimeout: 5000, bodyTimeout: 5000 })
            .catch(() => undefined);
          await response?.body.dump();
          if (response?.statusCode === 200 && counting && performance.now() < endAt) ok++;
          else if (response?.statusCode !== 200) await new Promise((resolve) => setTimeout(resolve, 5));
        }
      }),
    );
  } finally {
    await Promise.all(pools.map((pool) => pool.destroy()));
  }
  return ok / 1.5;
}

/** Opens connections and warms the JIT along the whole path before anything is measured. */
export async function warmUp(edgeUrls: string[]): Promise<void> {
  const pools = edgeUrls.map((url) => new Pool(url, { connections: 8 }));
  try {
    await Promise.all(
      Array.from({ length: 10 }, async (_, worker) => {
        for (let round = 0; round < 5; round++) {
          const pool = pools[(worker + round) % pools.length] as Pool;
          const response = await pool
            .request({ path: '/work', method: 'GET', headersTimeout: 5000, bodyTimeout: 5000 })
            .catch(() => undefined);
          await response?.body.dump();
        }
      }),
    );
  } finally {
    await Promise.all(pools.map((pool) => pool.destroy()));
  }
}

export async function stopTiers(tiers: TierProcess[]): Promise<void> {
  await Promise.all(
    tiers.map(
      (tier) =>
        new Promise<void>((resolve) => {
          if (tier.child.exitCode !== null || tier.child.signalCode !== null) {
            resolve();
            return;
          }
          const timer = setTimeout(() => {
            tier.child.kill('SIGKILL');
          }, 2000);
          tier.child.once('exit', () => {
            clearTimeout(timer);
            resolve();
          });
          if (tier.child.connected) tier.child.send({ type: 'stop' } satisfies ToTier);
          else tier.child.kill('SIGKILL');
        }),
    ),
  );
}
