/**
 * The storm lab in simulation mode: the same scenarios, strategies, load and server-side
 * counts as real mode, on a virtual clock and simulated instances, for topologies far beyond
 * one machine (`--tiers`, `--instances`). Memory is bounded by the requests in flight: edge
 * latencies go to histograms per second, never to a list of samples.
 */

import { seededRandom } from '../../testing/random.js';
import { defaultCapacity, type RunOptions, type RunResult, recoveryScenarios, type TimePoint } from '../lab.js';
import { callerOf, faultWindow, recoverySeconds, summarizeOutage } from '../outage.js';
import { summarizeOverload } from '../overload.js';
import { loadFactorAt } from '../scenarios.js';
import type { Scenario, SimulationInfo, SimulationTier, TierCapacity, TierName } from '../types.js';
import { VirtualClock } from './clock.js';
import { Load, measureCapacity, runLoadAndDrain, warmUp } from './drive.js';
import { LatencyHistogram } from './histogram.js';
import { SimInstance, type SimTier } from './instance.js';
import { LOAD, Metrics } from './metrics.js';
import { type SimStrategy, simNetworkFor, simStrategy } from './strategies.js';

export interface SimulateOptions {
  scenario: Scenario;
  /** A built-in strategy name (`naive`, `p-retry`, `undici-retry`, `telescope`). */
  strategy: string;
  /** Edge requests per second (open loop). @default scenario.rate ?? 200 */
  rate?: number;
  /** Seconds of load (virtual). @default scenario.durationS ?? 20 */
  durationS?: number;
  /** Seconds to wait for answers after the load stops. @default 8 */
  drainS?: number;
  /** Tiers: edge, `tiers − 2` middle tiers, backend. @default 3 */
  tiers?: number;
  /**
   * Instances per tier: one number for every tier (the edge too), or one per tier from the
   * edge. @default the real lab's: edge 1, every other tier 3 (or `scenario.topology`)
   */
  instances?: number | readonly number[];
  capacity?: Partial<Record<TierName, TierCapacity>>;
  /** CPU milliseconds per request in every tier (serialized per instance). @default 0.5 */
  workMs?: number;
  /** Backend answer latency in milliseconds when healthy. @default 5 */
  backendLatencyMs?: number;
  /** CPU milliseconds of HTTP handling per request an instance receives, refused ones too. @default 0 */
  requestCpuMs?: number;
  /** Seed of every random choice (balancers, naive's picks). @default 1 */
  seed?: number;
  /** Virtual milliseconds run together before promise continuations settle. @default 1 */
  grainMs?: number;
  /** Called once per virtual second with progress (and the wall time so far). */
  onProgress?: (
    progress: Parameters<NonNullable<RunOptions['onProgress']>>[0] & { wallS: number; inFlight: number },
  ) => void;
}

/** A simulated run: the real lab's result, plus what was simulated and what it cost. */
export interface SimRunResult extends RunResult {
  simulation: SimulationInfo;
}

/** Limits of the simulator's options (the CLI reports them). */
export const simLimits = {
  tiers: [2, 12],
  instances: [1, 100_000],
  rate: [0, 10_000_000],
  durationS: [0, 3600],
  drainS: [0, 600],
} as const;

/** Checks simulation options; throws a RangeError naming the option. */
export function checkSimOptions(options: {
  tiers?: number;
  instances?: number | readonly number[];
  rate?: number;
  durationS?: number;
  drainS?: number;
  seed?: number;
}): void {
  const { tiers, instances, rate, durationS, drainS, seed } = options;
  if (tiers !== undefined && !(Number.isInteger(tiers) && tiers >= simLimits.tiers[0] && tiers <= simLimits.tiers[1])) {
    throw new RangeError(
      `tiers must be an integer in [${simLimits.tiers.join(', ')}] (edge, tiers − 2 middle tiers, backend), got ${tiers}`,
    );
  }
  const counts = instances === undefined ? [] : typeof instances === 'number' ? [instances] : instances;
  for (const count of counts) {
    if (!(Number.isInteger(count) && count >= simLimits.instances[0] && count <= simLimits.instances[1])) {
      throw new RangeError(
        `instances must be an integer in [${simLimits.instances.join(', ')}] per tier, got ${count}`,
      );
    }
  }
  if (rate !== undefined && !(Number.isFinite(rate) && rate > simLimits.rate[0] && rate <= simLimits.rate[1])) {
    throw new RangeError(`rate must be a number in (0, ${simLimits.rate[1]}] requests/s, got ${rate}`);
  }
  if (
    durationS !== undefined &&
    !(Number.isFinite(durationS) && durationS > simLimits.durationS[0] && durationS <= simLimits.durationS[1])
  ) {
    throw new RangeError(`duration must be in (0, ${simLimits.durationS[1]}] s, got ${durationS}`);
  }
  if (drainS !== undefined && !(Number.isFinite(drainS) && drainS >= 0 && drainS <= simLimits.drainS[1])) {
    throw new RangeError(`drain must be in [0, ${simLimits.drainS[1]}] s, got ${drainS}`);
  }
  if (seed !== undefined && !Number.isSafeInteger(seed)) throw new RangeError(`seed must be an integer, got ${seed}`);
}

/** Tier names from the edge: edge, middle (or middle-1 … middle-k), backend. */
export function simTierNames(tiers: number): string[] {
  const middles = tiers - 2;
  return [
    'edge',
    ...Array.from({ length: middles }, (_, index) => (middles === 1 ? 'middle' : `middle-${index + 1}`)),
    'backend',
  ];
}

/** Runs one strategy through one scenario in virtual time and returns the servers' numbers. */
export async function simulateStorm(options: SimulateOptions): Promise<SimRunResult> {
  const wallStart = performance.now();
  const { scenario } = options;
  const rate = options.rate ?? scenario.rate ?? 200;
  const durationS = options.durationS ?? scenario.durationS ?? 20;
  const drainS = options.drainS ?? 8;
  const tierCount = options.tiers ?? 3;
  const seed = options.seed ?? 1;
  checkSimOptions({ tiers: tierCount, instances: options.instances, rate, durationS, drainS, seed });
  const strategy: SimStrategy = simStrategy(options.strategy);
  const names = simTierNames(tierCount);
  const counts = names.map((_, depth) => instancesOf(options.instances, scenario, depth, tierCount));
  const capacity = { ...defaultCapacity, ...scenario.capacity, ...options.capacity };
  const workMs = options.workMs ?? 0.5;
  const backendLatencyMs = options.backendLatencyMs ?? scenario.backendLatencyMs ?? 5;
  const requestCpuMs = options.requestCpuMs ?? 0;

  const clock = new VirtualClock({ grainMs: options.grainMs });
  const network = simNetworkFor(clock, strategy);
  const seconds = Math.ceil(durationS + drainS) + 2;
  const metrics = new Metrics(clock, seconds);
  network.observer = metrics;
  const master = seededRandom(seed);

  // The topology: tiers from the edge; each calling instance gets its caller for the next tier.
  const tiers: SimTier[] = names.map((name, depth) => {
    const role: TierName = depth === 0 ? 'edge' : depth === tierCount - 1 ? 'backend' : 'middle';
    return { name, role, depth, capacity: capacity[role], instances: [] };
  });
  for (const tier of tiers) {
    for (let index = 0; index < (counts[tier.depth] as number); index++) {
      // Only the backend has latency of its own; the tiers before it wait on their calls.
      const latencyMs = tier.role === 'backend' ? backendLatencyMs : 0;
      const instance = new SimInstance(network, tier, index, workMs, latencyMs, requestCpuMs);
      tier.instances.push(instance);
      network.add(instance);
    }
  }
  const callers: Array<{ close(): Promise<void> }> = [];
  const window = faultWindow(scenario, durationS);
  const attemptingRole = window === undefined ? undefined : callerOf(window.tier);
  for (const tier of tiers) {
    const next = tiers[tier.depth + 1];
    if (next === undefined) continue;
    // With several middle tiers, the one right before the failing role attempts it.
    const attemptsFailing = attemptingRole !== undefined && next.role === window?.tier && tier.role === attemptingRole;
    for (const instance of tier.instances) {
      const counters = instance.counters;
      instance.caller = strategy.createCaller({
        tier,
        instance,
        targets: next.instances,
        network,
        clock,
        random: seededRandom(Math.floor(master() * 2 ** 32)),
        onAttempt: attemptsFailing
          ? () => {
              counters.downstreamAttempts++;
              if (metrics.active) metrics.attemptsBySecond[metrics.second(clock.now())]! += 1;
            }
          : () => {
              counters.downstreamAttempts++;
            },
      });
      callers.push(instance.caller);
    }
  }
  const edges = (tiers[0] as SimTier).instances;
  const load = new Load();
  const sendToEdge = (index: number, tag: unknown) => {
    const edge = edges[index % edges.length] as SimInstance;
    network.send(edge.url, undefined, null, load, null, tag);
  };

  try {
    // Warm-up, as real mode: 10 callers × 5 requests one after another, then counters reset.
    await warmUp(clock, network, edges);
    const backends = (tiers[tiers.length - 1] as SimTier).instances;
    const capacityPerS = scenario.load === undefined ? 0 : await measureCapacity(clock, network, backends);
    const epoch = Math.ceil(clock.now()) + 1;
    await clock.advanceTo(epoch);
    for (const tier of tiers) {
      for (const instance of tier.instances) instance.resetCounts();
    }
    metrics.epoch = epoch;
    metrics.active = true;

    // Faults on schedule, on the tiers they name ('middle': every middle tier).
    for (const step of scenario.faults) {
      clock.setTimeout(
        () => {
          for (const tier of tiers) {
            if (tier.role !== step.tier) continue;
            for (const instance of tier.instances) {
              if (step.instances === undefined || step.instances.includes(instance.index)) {
                instance.setFault(step.fault, step.factor, step.rate);
              }
            }
          }
        },
        Math.max(1, step.atS * 1000 + epoch - clock.now()),
      );
    }

    // Open-loop load: request i leaves at i/rate s, whatever the answers do; batched per ms.
    // With a load profile, the rate follows it (integrated per ms).
    const profile = scenario.load;
    const offeredBy = (elapsedMs: number): number => {
      if (profile === undefined) return elapsedMs / msPerRequest + 1;
      let sum = 0;
      for (let ms = 0; ms < elapsedMs; ms += 10) {
        sum += (capacityPerS * loadFactorAt(profile, (ms + 5) / 1000) * Math.min(10, elapsedMs - ms)) / 1000;
      }
      return sum;
    };
    const total = profile === undefined ? Math.round(rate * durationS) : Math.round(offeredBy(durationS * 1000));
    const msPerRequest = 1000 / rate;
    let cumulativeMs = 0;
    let cumulative = 0;
    const tick = {
      at: 0,
      seq: 0,
      cancelled: false,
      fire() {
        const elapsed = clock.now() - epoch;
        let dueNow: number;
        if (profile === undefined) {
          dueNow = Math.floor(elapsed / msPerRequest) + 1;
        } else {
          // Incremental integral of the profile's rate up to now.
          while (cumulativeMs < elapsed) {
            const step = Math.min(1, elapsed - cumulativeMs);
            cumulative += (capacityPerS * loadFactorAt(profile, (cumulativeMs + step / 2) / 1000) * step) / 1000;
            cumulativeMs += step;
          }
          dueNow = Math.floor(cumulative);
        }
        const due = Math.min(total, dueNow);
        const second = metrics.second(clock.now());
        while (load.sent < due) {
          sendToEdge(load.sent, LOAD);
          load.sent++;
          metrics.sentBySecond[second]! += 1;
        }
        if (load.sent < total) {
          const nextAt = profile === undefined ? epoch + load.sent * msPerRequest : clock.now() + 1;
          clock.scheduleAt(tick, Math.max(nextAt, clock.now() + 1));
        }
      },
    };
    clock.scheduleAt(tick, epoch);

    const totalS = durationS + drainS;
    const progress = (elapsedS: number) =>
      options.onProgress?.({
        strategy: strategy.name,
        elapsedS,
        totalS,
        sent: load.sent,
        answered: load.answered,
        wallS: (performance.now() - wallStart) / 1000,
        inFlight: load.sent - load.settled,
      });
    await runLoadAndDrain(clock, epoch, durationS, drainS, load, progress);
    metrics.active = false;
    const virtualS = (clock.now() - epoch) / 1000;

    // The numbers, computed as real mode computes them.
    const sent = load.sent;
    const sumOf = (role: TierName, pick: (instance: SimInstance) => number) =>
      tiers
        .filter((tier) => tier.role === role)
        .reduce((n, tier) => n + tier.instances.reduce((m, i) => m + pick(i), 0), 0);
    const maxOf = (role: TierName, pick: (instance: SimInstance) => number) =>
      Math.max(0, ...tiers.filter((tier) => tier.role === role).flatMap((tier) => tier.instances.map(pick)));
    const perTier = (pick: (instance: SimInstance) => number) =>
      ({ edge: sumOf('edge', pick), middle: sumOf('middle', pick), backend: sumOf('backend', pick) }) as Record<
        TierName,
        number
      >;
    const received = perTier((i) => i.counters.received);
    const shed = perTier((i) => i.counters.shed);
    const admittedAtEdge = received.edge - shed.edge;
    const worstMs = (durationS + drainS) * 1000;
    const unanswered = Math.max(0, sent - metrics.all.count);
    metrics.all.record(worstMs, unanswered);

    const timeline: TimePoint[] = [];
    for (let second = 0; second < Math.ceil(durationS); second++) {
      const samples = metrics.samplesBySecond[second] as number;
      const sentThen = Math.max(metrics.sentBySecond[second] as number, samples);
      const histogram = metrics.histBySecond[second] ?? new LatencyHistogram();
      histogram.record(worstMs, sentThen - samples);
      const edgeThen = metrics.edgeReceived[second] as number;
      timeline.push({
        second,
        edgeRequests: sentThen,
        edgeSuccessRate: sentThen === 0 ? 1 : (metrics.okBySecond[second] as number) / sentThen,
        edgeP99Ms: histogram.percentile(0.99),
        amplification: edgeThen === 0 ? 0 : (metrics.backendReceived[second] as number) / edgeThen,
        goodput: metrics.goodputBySecond[second] as number,
      });
    }
    const overload =
      profile === undefined
        ? undefined
        : summarizeOverload(
            capacityPerS,
            profile,
            durationS,
            (second) => metrics.goodputBySecond[second] ?? 0,
            (seconds) => {
              const merged = new LatencyHistogram();
              for (const second of seconds) metrics.okHistBySecond[second]?.mergeInto(merged);
              return merged.count === 0 ? 0 : merged.percentile(0.99);
            },
          );
    const recoveryS =
      window !== undefined && recoveryScenarios.has(scenario.name) ? recoverySeconds(window, timeline) : undefined;
    const outage =
      window === undefined || attemptingRole === undefined
        ? undefined
        : summarizeOutage(window, metrics.sentBySecond, metrics.attemptsBySecond);
    const perTierInfo: SimulationTier[] = tiers.map((tier) => ({
      name: tier.name,
      instances: tier.instances.length,
      received: tier.instances.reduce((n, i) => n + i.counters.received, 0),
      ...(tier.instances.length > 100 ? {} : { receivedByInstance: tier.instances.map((i) => i.counters.received) }),
      shed: tier.instances.reduce((n, i) => n + i.counters.shed, 0),
      wasted: tier.instances.reduce((n, i) => n + i.counters.wasted, 0),
      peakInFlight: Math.max(0, ...tier.instances.map((i) => i.counters.peakInFlight)),
      downstreamAttempts: tier.instances.reduce((n, i) => n + i.counters.downstreamAttempts, 0),
    }));
    const { fired, yields } = clock.stats;
    return {
      strategy: strategy.name,
      scenario: scenario.name,
      rate: profile === undefined ? rate : Math.round(total / durationS),
      durationS,
      sent,
      answered: load.answered,
      successRate: sent === 0 ? 0 : metrics.ok / sent,
      fallbackRate: sent === 0 ? 0 : metrics.fallback / sent,
      latency: {
        p50Ms: metrics.all.percentile(0.5),
        p99Ms: metrics.all.percentile(0.99),
        maxMs: metrics.all.maxMs,
      },
      amplification: admittedAtEdge === 0 ? 0 : received.backend / admittedAtEdge,
      wasted: perTier((i) => i.counters.wasted),
      peakInFlight: {
        edge: maxOf('edge', (i) => i.counters.peakInFlight),
        middle: maxOf('middle', (i) => i.counters.peakInFlight),
        backend: maxOf('backend', (i) => i.counters.peakInFlight),
      },
      shed,
      received,
      recoveryS,
      ...(overload === undefined ? {} : { overload }),
      ...(outage === undefined ? {} : { outage }),
      timeline,
      simulation: {
        simulated: true,
        tiers: perTierInfo,
        seed,
        virtualS,
        wallS: (performance.now() - wallStart) / 1000,
        events: fired,
        yields,
        peakRssMB: Math.round(process.resourceUsage().maxRSS / 1024),
      },
    };
  } finally {
    metrics.active = false;
    await Promise.all(callers.map((caller) => caller.close().catch(() => undefined)));
  }
}

function instancesOf(
  instances: SimulateOptions['instances'],
  scenario: Scenario,
  depth: number,
  tierCount: number,
): number {
  if (typeof instances === 'number') return instances;
  if (instances !== undefined) {
    const count = instances[depth] ?? instances[instances.length - 1];
    if (count === undefined) throw new RangeError('instances needs at least one count');
    return count;
  }
  const topology = scenario.topology;
  if (depth === 0) return topology?.edge ?? 1;
  if (depth === tierCount - 1) return topology?.backend ?? 3;
  return topology?.middle ?? 3;
}
