/**
 * A topology in virtual time: every service's instances simulated with the lab's admission
 * rules, every call edge run by its strategy's caller (telescope: the library's real client
 * over the simulated transport, on the virtual clock), the load schedule, the faults, and
 * per-service counts. Memory is bounded by the requests in flight: counts per service and
 * second, latencies in histograms.
 */
import { seededRandom } from '../../testing/random.js';
import { type EdgeCounts, type ServiceCounts, serviceResults } from '../graph-results.js';
import { LoadProfile } from '../load.js';
import type { ResolvedCall, ResolvedService, ResolvedTopology } from '../topology.js';
import type { TopologyRunResult } from '../types.js';
import { type ClockSync, VirtualClock } from './clock.js';
import { Load, runLoadAndDrain, warmUp } from './drive.js';
import type { Exchange } from './exchange.js';
import { LatencyHistogram } from './histogram.js';
import { type SimCaller, SimInstance, type SimObserver, type SimTier } from './instance.js';
import { checkParallelOptions, simulateInParallel } from './parallel.js';
import { type SimStrategy, simNetworkFor, simStrategy } from './strategies.js';

export interface SimulateTopologyOptions {
  /** A checked topology (`checkTopology`, `topologyFromFile`). */
  topology: ResolvedTopology;
  /** Strategy of every call that names none: a built-in strategy name. */
  strategy: string;
  /** Seed of every random choice. @default 1 */
  seed?: number;
  /** Virtual milliseconds run together before promise continuations settle. @default 1 */
  grainMs?: number;
  /**
   * Threads to run the services on (each worker simulates a share of the services; calls
   * between workers cross as messages, in lock-step windows of `networkMs`). Needs
   * `networkMs` ≥ `grainMs`. @default 1
   */
  workers?: number;
  /**
   * Milliseconds every request, answer, reset and close takes on the network, each way.
   * @default 0 (1 with `workers` > 1)
   */
  networkMs?: number;
  /** Called once per virtual second with progress (and the wall time so far). */
  onProgress?: (progress: {
    strategy: string;
    elapsedS: number;
    totalS: number;
    sent: number;
    answered: number;
    wallS: number;
  }) => void;
}

const LOAD = Symbol('load');

type Done = (exchange: Exchange, status: number, fallback: boolean) => void;

/** Per-service, per-second counts and the entry's latencies. */
export class GraphMetrics implements SimObserver {
  active = false;
  epoch = 0;
  /** [second × services + service]: requests received, and answered 200 by arrival second. */
  readonly load: Float64Array;
  readonly okByArrival: Float64Array;
  readonly sentBySecond: Float64Array;
  readonly entryOk: Float64Array;
  readonly entrySamples: Float64Array;
  readonly histBySecond: Array<LatencyHistogram | undefined>;
  readonly all = new LatencyHistogram();
  entryOkTotal = 0;
  entryFallback = 0;

  constructor(
    readonly clock: VirtualClock,
    readonly seconds: number,
    readonly services: number,
  ) {
    this.load = new Float64Array(seconds * services);
    this.okByArrival = new Float64Array(seconds * services);
    this.sentBySecond = new Float64Array(seconds);
    this.entryOk = new Float64Array(seconds);
    this.entrySamples = new Float64Array(seconds);
    this.histBySecond = new Array(seconds).fill(undefined);
  }

  second(atMs: number): number {
    const second = Math.floor((atMs - this.epoch) / 1000);
    return second < 0 ? 0 : second >= this.seconds ? this.seconds - 1 : second;
  }

  received(instance: SimInstance): void {
    if (!this.active) return;
    this.load[this.second(this.clock.now()) * this.services + instance.tier.depth]! += 1;
  }

  answered(instance: SimInstance, exchange: Exchange, status: number, fallback: boolean): void {
    if (!this.active || status !== 200 || fallback) return;
    this.okByArrival[this.second(exchange.arrivedAt) * this.services + instance.tier.depth]! += 1;
  }

  edgeAnswer(exchange: Exchange, status: number, fallback: boolean): void {
    if (!this.active || exchange.tag !== LOAD) return;
    const latencyMs = this.clock.now() - exchange.arrivedAt;
    const second = this.second(exchange.arrivedAt);
    if (status === 200) {
      if (fallback) this.entryFallback++;
      else {
        this.entryOkTotal++;
        this.entryOk[second]! += 1;
      }
    }
    this.all.record(latencyMs);
    this.entrySamples[second]! += 1;
    let histogram = this.histBySecond[second];
    if (histogram === undefined) {
      histogram = new LatencyHistogram();
      this.histBySecond[second] = histogram;
    }
    histogram.record(latencyMs);
  }
}

/** A node of a service's call plan: one call, or a group run in sequence or in parallel. */
type PlanNode = SimCaller | { parallel: boolean; children: PlanNode[] };

/** A plan in progress for one inbound request. */
class PlanRun {
  #index = 0;
  #pending = 0;
  #settled = false;
  fallback = false;
  constructor(
    readonly group: { parallel: boolean; children: PlanNode[] },
    readonly inbound: Exchange,
    readonly finish: (status: number, fallback: boolean) => void,
  ) {}

  start(): void {
    const children = this.group.children;
    if (this.group.parallel) {
      this.#pending = children.length;
      for (const child of children) {
        if (this.#settled) return;
        this.#run(child);
      }
    } else {
      this.#next();
    }
  }

  #next(): void {
    const child = this.group.children[this.#index++];
    if (child === undefined) this.#settle(200);
    else this.#run(child);
  }

  #run(node: PlanNode): void {
    const childDone = (status: number, fallback: boolean) => {
      if (this.#settled) return;
      if (fallback) this.fallback = true;
      // Like Promise.all: the first failure answers; the rest run on for nobody.
      if (status !== 200) this.#settle(status);
      else if (this.group.parallel) {
        if (--this.#pending === 0) this.#settle(200);
      } else this.#next();
    };
    if ('call' in node) node.call(this.inbound, (_exchange, status, fallback) => childDone(status, fallback));
    else new PlanRun(node, this.inbound, childDone).start();
  }

  #settle(status: number): void {
    this.#settled = true;
    this.finish(status, this.fallback);
  }
}

/** A service's caller: its calls, run as its plan says. */
class PlanCaller implements SimCaller {
  constructor(
    readonly plan: { parallel: boolean; children: PlanNode[] },
    readonly callers: SimCaller[],
  ) {}

  call(inbound: Exchange, done: Done): void {
    new PlanRun(this.plan, inbound, (status, fallback) => done(inbound, status, fallback)).start();
  }

  async close(): Promise<void> {
    await Promise.all(this.callers.map((caller) => caller.close()));
  }
}

/** A loop strategy's caller whose failures become fallbacks (a topology's `fallback: true`). */
function withFallback(caller: SimCaller): SimCaller {
  return {
    call: (inbound, done) =>
      caller.call(inbound, (exchange, status, fallback) => done(exchange, 200, fallback || status !== 200)),
    close: () => caller.close(),
  };
}

function planOf(service: ResolvedService, callers: SimCaller[]): { parallel: boolean; children: PlanNode[] } {
  return {
    parallel: service.callMode === 'parallel',
    children: service.calls.map((call, index) => {
      const caller = callers[index] as SimCaller;
      return call.times === 1
        ? caller
        : { parallel: call.mode === 'parallel', children: Array.from({ length: call.times }, () => caller) };
    }),
  };
}

/** Strategies a topology needs in simulation, checked before anything runs. */
export function topologySimStrategies(topology: ResolvedTopology, strategy: string): Map<string, SimStrategy> {
  const names = new Set([strategy]);
  for (const service of topology.services)
    for (const call of service.calls) if (call.strategy) names.add(call.strategy);
  return new Map([...names].map((name) => [name, simStrategy(name)]));
}

/** The simulated services of a run, built alike by every worker of a parallel run. */
export interface SimWorld {
  clock: VirtualClock;
  network: ReturnType<typeof simNetworkFor>;
  metrics: GraphMetrics;
  tiers: SimTier[];
  tierOf: Map<string, SimTier>;
  edges: EdgeCounts[];
  callers: SimCaller[];
  seconds: number;
  /** Events each other worker ran, in worker order (parallel runs). */
  otherEvents: number[];
}

/**
 * Builds every service's instances and callers. `owns(depth)`: whether this worker simulates
 * the service; the others' instances are stubs that requests cross to as messages, and their
 * callers are not built (the seeds are drawn all the same, so a client has the same random
 * source in every partition).
 */
export function buildWorld(options: SimulateTopologyOptions, owns: (depth: number) => boolean = () => true): SimWorld {
  const { topology } = options;
  const seed = options.seed ?? 1;
  const strategies = topologySimStrategies(topology, options.strategy);
  const runStrategy = strategies.get(options.strategy) as SimStrategy;
  const { durationS, drainS } = topology;
  const clock = new VirtualClock({ grainMs: options.grainMs });
  // A service's server follows the run's strategy (its deadline admission and its limiter);
  // a call's own strategy changes only that caller's client.
  const network = simNetworkFor(clock, runStrategy);
  network.networkMs = options.networkMs ?? 0;
  const seconds = Math.ceil(durationS + drainS) + 2;
  const metrics = new GraphMetrics(clock, seconds, topology.services.length);
  network.observer = metrics;
  const master = seededRandom(seed);

  // Services in topological order (the entry first); `depth` is the service's index.
  const tiers: SimTier[] = topology.services.map((service, depth) => ({
    name: service.name,
    role: service.role,
    depth,
    capacity: { maxConcurrent: service.capacity.maxConcurrent, maxQueue: service.capacity.maxQueue },
    instances: [],
  }));
  const tierOf = new Map(tiers.map((tier) => [tier.name, tier]));
  for (const [depth, service] of topology.services.entries()) {
    const tier = tiers[depth] as SimTier;
    const remote = !owns(depth);
    for (let index = 0; index < service.instances; index++) {
      const instance = new SimInstance(network, tier, index, service.capacity.workMs, service.latencyMs, 0, remote);
      instance.zone = service.zones[index];
      tier.instances.push(instance);
      network.add(instance);
    }
  }

  const edges: EdgeCounts[] = [];
  const callers: SimCaller[] = [];
  for (const [depth, service] of topology.services.entries()) {
    const tier = tiers[depth] as SimTier;
    const serviceEdges = service.calls.map((call: ResolvedCall) => {
      const edge = { from: service.name, to: call.service, times: call.times, attempts: 0 };
      edges.push(edge);
      return edge;
    });
    for (const instance of tier.instances) {
      const counters = instance.counters;
      const own = service.calls.map((call, index) => {
        const random = seededRandom(Math.floor(master() * 2 ** 32));
        if (instance.remote) return undefined;
        const edge = serviceEdges[index] as EdgeCounts;
        const strategy = strategies.get(call.strategy ?? options.strategy) as SimStrategy;
        const caller = strategy.createCaller({
          tier,
          instance,
          targets: (tierOf.get(call.service) as SimTier).instances,
          network,
          clock,
          random,
          onAttempt: () => {
            counters.downstreamAttempts++;
            edge.attempts++;
          },
          fallback: call.fallback,
          client: call.client,
        });
        return call.fallback === true && strategy.name !== 'telescope' ? withFallback(caller) : caller;
      });
      if (instance.remote) continue;
      const built = own as SimCaller[];
      callers.push(...built);
      const only = built[0];
      if (built.length === 1 && only !== undefined && service.calls[0]?.times === 1) instance.caller = only;
      else if (built.length > 0) instance.caller = new PlanCaller(planOf(service, built), built);
    }
  }
  for (const tier of tiers)
    for (const instance of tier.instances) instance.random = seededRandom(Math.floor(master() * 2 ** 32));
  return { clock, network, metrics, tiers, tierOf, edges, callers, seconds, otherEvents: [] };
}

/** Resets the counts at the run's epoch (after the warm-up) and arms the faults from it. */
export function startCounting(world: SimWorld, topology: ResolvedTopology, epoch: number): void {
  const { clock, metrics, tiers, tierOf, edges } = world;
  for (const tier of tiers) {
    for (const instance of tier.instances) instance.resetCounts();
  }
  for (const edge of edges) edge.attempts = 0;
  metrics.epoch = epoch;
  metrics.active = true;

  for (const step of topology.faults) {
    const tier = tierOf.get(step.service) as SimTier;
    clock.setTimeout(
      () => {
        for (const instance of tier.instances) {
          if (step.instances === undefined || step.instances.includes(instance.index)) instance.applyFault(step);
        }
      },
      Math.max(1, step.atS * 1000 + epoch - clock.now()),
    );
  }
}

/** What the coordinating worker of a parallel run does at the run's turning points (`parallel.ts`). */
export interface RunCoordinator extends ClockSync {
  /** Threads in the run, this one included. */
  readonly workers: number;
  /** Counting starts at `epoch` everywhere. */
  startCounting(epoch: number): void;
  /** Counting ends everywhere; the other workers' counts are added to `world`'s. */
  finish(world: SimWorld): Promise<void>;
}

/** Runs a topology with one default strategy in virtual time. */
export async function simulateTopology(options: SimulateTopologyOptions): Promise<TopologyRunResult> {
  const seed = options.seed ?? 1;
  if (!Number.isSafeInteger(seed)) throw new RangeError(`seed must be an integer, got ${seed}`);
  const workers = checkParallelOptions(options);
  if (workers > 1) return simulateInParallel(options, workers);
  return runWorld(options, buildWorld(options), undefined);
}

/** Runs a built world: warm-up, load, drain, results (`coordinator`: in lock-step with other workers). */
export async function runWorld(
  options: SimulateTopologyOptions,
  world: SimWorld,
  coordinator: RunCoordinator | undefined,
  wallStart = performance.now(),
): Promise<TopologyRunResult> {
  const { topology } = options;
  const seed = options.seed ?? 1;
  const { durationS, drainS } = topology;
  const profile = new LoadProfile(topology.load, durationS);
  const { clock, network, metrics, tiers, callers, seconds, edges } = world;
  if (coordinator !== undefined) clock.sync = coordinator;
  const entry = (tiers[0] as SimTier).instances;
  const load = new Load();
  try {
    await warmUp(clock, network, entry);
    const epoch = Math.ceil(clock.now()) + 1;
    await clock.advanceTo(epoch);
    startCounting(world, topology, epoch);
    coordinator?.startCounting(epoch);

    // Open-loop load on the schedule, round-robin over the entry's instances; one event per
    // virtual millisecond at most.
    const total = profile.total;
    let nextAt = profile.timeOf(0);
    const tick = {
      at: 0,
      seq: 0,
      cancelled: false,
      fire() {
        const elapsed = clock.now() - epoch;
        const second = metrics.second(clock.now());
        while (load.sent < total && nextAt <= elapsed) {
          const instance = entry[load.sent % entry.length] as SimInstance;
          network.send(instance.url, undefined, null, load, null).tag = LOAD;
          load.sent++;
          metrics.sentBySecond[second]! += 1;
          nextAt = profile.timeOf(load.sent);
        }
        if (load.sent < total && Number.isFinite(nextAt)) {
          clock.scheduleAt(tick, Math.max(epoch + nextAt, clock.now() + 1));
        }
      },
    };
    if (total > 0) clock.scheduleAt(tick, epoch + nextAt);

    const totalS = durationS + drainS;
    const progress = (elapsedS: number) =>
      options.onProgress?.({
        strategy: options.strategy,
        elapsedS,
        totalS,
        sent: load.sent,
        answered: load.answered,
        wallS: (performance.now() - wallStart) / 1000,
      });
    await runLoadAndDrain(clock, epoch, durationS, drainS, load, progress);
    metrics.active = false;
    await coordinator?.finish(world);
    const virtualS = (clock.now() - epoch) / 1000;

    const services = tiers.length;
    const counts: ServiceCounts[] = tiers.map((tier) => ({
      name: tier.name,
      role: tier.role,
      instances: tier.instances.length,
      received: tier.instances.reduce((n, i) => n + i.counters.received, 0),
      shed: tier.instances.reduce((n, i) => n + i.counters.shed, 0),
      wasted: tier.instances.reduce((n, i) => n + i.counters.wasted, 0),
      peakInFlight: Math.max(0, ...tier.instances.map((i) => i.counters.peakInFlight)),
      receivedBySecond: Array.from({ length: seconds }, (_, s) => metrics.load[s * services + tier.depth] as number),
      okBySecond: Array.from({ length: seconds }, (_, s) => metrics.okByArrival[s * services + tier.depth] as number),
    }));
    const sent = load.sent;
    const worstMs = (durationS + drainS) * 1000;
    metrics.all.record(worstMs, Math.max(0, sent - metrics.all.count));
    const entryCounts = counts[0] as ServiceCounts;
    const admitted = entryCounts.received - entryCounts.shed;
    const timeline: TopologyRunResult['timeline'] = [];
    for (let second = 0; second < Math.ceil(durationS); second++) {
      const samples = metrics.entrySamples[second] as number;
      const sentThen = Math.max(metrics.sentBySecond[second] as number, samples);
      const histogram = metrics.histBySecond[second] ?? new LatencyHistogram();
      histogram.record(worstMs, sentThen - samples);
      const entryThen = metrics.load[second * services] as number;
      let inside = 0;
      for (const [service, tier] of tiers.entries()) {
        if (tier.role === 'backend') inside += metrics.load[second * services + service] as number;
      }
      timeline.push({
        second,
        edgeRequests: sentThen,
        edgeSuccessRate: sentThen === 0 ? 1 : (metrics.entryOk[second] as number) / sentThen,
        edgeP99Ms: histogram.percentile(0.99),
        amplification: entryThen === 0 ? 0 : inside / entryThen,
      });
    }
    // As the chain lab's: requests at the services that call nothing, per entry request.
    const leaves = counts.filter((count) => count.role === 'backend').reduce((n, count) => n + count.received, 0);
    const { fired, yields } = clock.stats;
    return {
      strategy: options.strategy,
      topology: topology.name,
      mode: 'simulated',
      durationS,
      sent,
      answered: load.answered,
      successRate: sent === 0 ? 0 : metrics.entryOkTotal / sent,
      fallbackRate: sent === 0 ? 0 : metrics.entryFallback / sent,
      latency: { p50Ms: metrics.all.percentile(0.5), p99Ms: metrics.all.percentile(0.99), maxMs: metrics.all.maxMs },
      amplification: admitted === 0 ? 0 : leaves / admitted,
      timeline,
      ...serviceResults(topology, counts, edges),
      simulation: {
        simulated: true,
        seed,
        virtualS,
        wallS: (performance.now() - wallStart) / 1000,
        events: world.otherEvents.reduce((sum, events) => sum + events, fired),
        yields,
        ...(network.networkMs > 0 ? { networkMs: network.networkMs } : {}),
        ...(coordinator === undefined
          ? {}
          : { workers: coordinator.workers, eventsPerWorker: [fired, ...world.otherEvents] }),
        peakRssMB: Math.round(process.resourceUsage().maxRSS / 1024),
      },
    };
  } finally {
    metrics.active = false;
    await Promise.all(callers.map((caller) => caller.close().catch(() => undefined)));
  }
}
