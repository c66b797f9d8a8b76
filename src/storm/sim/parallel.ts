/**
 * A topology simulated on several threads: the services are split over `workers` (the
 * calling thread coordinates and runs the entry's share, worker threads run the rest), each
 * worker builds the whole graph but simulates only its own services, and a request to an
 * instance another worker owns crosses as a message.
 *
 * Lock-step (conservative synchronisation): every message takes `networkMs` ≥ one grain to
 * arrive, so what a worker sends while running a grain can only matter from the next grain
 * on. The coordinator runs the grain, the others run the same grain at the same time; then
 * they trade what they sent, and the coordinator picks the next grain from the earliest
 * event anywhere. A run is deterministic for a given seed and number of workers.
 */
import { Worker } from 'node:worker_threads';
import type { ResolvedTopology } from '../topology.js';
import type { TopologyRunResult } from '../types.js';
import { Exchange, type ExchangePeer, Phase } from './exchange.js';
import {
  buildWorld,
  type RunCoordinator,
  runWorld,
  type SimulateTopologyOptions,
  type SimWorld,
  startCounting,
  topologySimStrategies,
} from './graph.js';
import type { SimInstance } from './instance.js';
import type { RemoteRouter } from './network.js';

/** Most workers a run takes. */
export const maxSimWorkers = 64;

/**
 * Checks `workers`, `networkMs` and `grainMs` together; returns the number of workers.
 * Throws a RangeError naming the option.
 */
export function checkParallelOptions(options: SimulateTopologyOptions): number {
  const workers = options.workers ?? 1;
  if (!Number.isSafeInteger(workers) || workers < 1 || workers > maxSimWorkers) {
    throw new RangeError(`workers must be an integer from 1 to ${maxSimWorkers}, got ${workers}`);
  }
  const services = options.topology.services.length;
  if (workers > services) {
    throw new RangeError(`workers (${workers}) must not exceed the topology's services (${services})`);
  }
  const networkMs = options.networkMs;
  if (networkMs !== undefined && !(Number.isFinite(networkMs) && networkMs >= 0 && networkMs <= 1000)) {
    throw new RangeError(`networkMs must be a number of milliseconds from 0 to 1000, got ${networkMs}`);
  }
  const grainMs = options.grainMs ?? 1;
  if (workers > 1 && !(grainMs > 0 && (networkMs ?? grainMs) >= grainMs)) {
    throw new RangeError(
      `workers > 1 needs networkMs ≥ grainMs > 0 (a message between workers takes at least one grain), got networkMs ${networkMs}, grainMs ${grainMs}`,
    );
  }
  return workers;
}

/**
 * Which worker simulates each service (by topological index): contiguous runs of services
 * of about equal estimated work (requests received, plus calls made, weighted 1.5, per entry
 * request). The entry is always worker 0's.
 */
export function partitionServices(topology: ResolvedTopology, workers: number): number[] {
  const services = topology.services;
  const indexOf = new Map(services.map((service, index) => [service.name, index]));
  const rate: number[] = services.map((_, index) => (index === 0 ? 1 : 0));
  const weight = services.map((service, index) => {
    let calls = 0;
    for (const call of service.calls) {
      const callee = indexOf.get(call.service) as number;
      rate[callee] = (rate[callee] as number) + (rate[index] as number) * call.times;
      calls += call.times;
    }
    return (rate[index] as number) * (1 + 1.5 * calls);
  });
  const total = weight.reduce((sum, w) => sum + w, 0);
  const owner: number[] = [];
  let worker = 0;
  let done = 0;
  for (let index = 0; index < services.length; index++) {
    owner.push(worker);
    done += weight[index] as number;
    const left = services.length - index - 1;
    const workersLeft = workers - worker - 1;
    if (workersLeft === 0 || left === 0) continue;
    const half = (weight[index + 1] as number) / 2;
    if (left === workersLeft || done + half > (total * (worker + 1)) / workers) worker++;
  }
  return owner;
}

/** One message between workers: [kind, id, at, from, a, b, c]. */
const RECORD = 7;
enum Message {
  /** a: service index, b: instance index, c: budget header (NaN: none) */
  Request = 1,
  Cancel = 2,
  /** a: status, b: ResponseKind */
  Response = 3,
  /** a: 0 refused, 1 reset */
  Failure = 4,
}

/** One worker's side of the boundary: outgoing messages, and exchanges open across it. */
class WorkerLink implements RemoteRouter, ExchangePeer {
  /** Messages per destination worker, sent at the end of the grain. */
  readonly outbox: number[][];
  /** Earliest arrival among each destination's messages in the outbox. */
  readonly earliest: number[];
  /** Caller's side: this worker's id → the exchange waiting for its answer. */
  readonly #waiting = new Map<number, Exchange>();
  /**
   * Server's side: the exchanges served here for other workers, by `id × workers + caller's
   * worker` (their `remoteId` here), so an answer knows where to go.
   */
  readonly #serving = new Map<number, Exchange>();
  #nextId = 1;

  constructor(
    readonly self: number,
    readonly owner: readonly number[],
    readonly world: SimWorld,
    readonly workers: number,
  ) {
    this.outbox = Array.from({ length: workers }, () => []);
    this.earliest = new Array(workers).fill(Number.POSITIVE_INFINITY);
  }

  #push(to: number, kind: Message, id: number, a = 0, b = 0, c = 0): void {
    const at = this.world.clock.now() + this.world.network.networkMs;
    (this.outbox[to] as number[]).push(kind, id, at, this.self, a, b, c);
    if (at < (this.earliest[to] as number)) this.earliest[to] = at;
  }

  /** Messages another worker sent to worker `to` (through the coordinator): on to the next packet. */
  forward(to: number, records: Float64Array): void {
    const outbox = this.outbox[to] as number[];
    for (let offset = 0; offset < records.length; offset++) outbox.push(records[offset] as number);
    for (let offset = 2; offset < records.length; offset += RECORD) {
      if ((records[offset] as number) < (this.earliest[to] as number)) this.earliest[to] = records[offset] as number;
    }
  }

  /** Takes the outbox of worker `to`, as one transferable array. */
  take(to: number): Float64Array {
    const records = Float64Array.from(this.outbox[to] as number[]);
    this.outbox[to] = [];
    this.earliest[to] = Number.POSITIVE_INFINITY;
    return records;
  }

  // --- caller's side ----------------------------------------------------------------------

  send(exchange: Exchange): void {
    const instance = exchange.instance as SimInstance;
    const id = this.#nextId++;
    exchange.phase = Phase.Remote;
    exchange.peer = this;
    exchange.remoteId = id;
    this.#waiting.set(id, exchange);
    const serve = this.world.network.serve;
    const header = serve === undefined ? undefined : exchange.headers?.[serve.headerName];
    const budget = header === undefined ? Number.NaN : Number(header);
    this.#push(
      this.owner[instance.tier.depth] as number,
      Message.Request,
      id,
      instance.tier.depth,
      instance.index,
      budget,
    );
  }

  cancel(exchange: Exchange): void {
    if (!this.#waiting.delete(exchange.remoteId)) return;
    const instance = exchange.instance as SimInstance;
    this.#push(this.owner[instance.tier.depth] as number, Message.Cancel, exchange.remoteId);
  }

  // --- server's side ----------------------------------------------------------------------

  respond(exchange: Exchange, status: number, kind: number): void {
    this.#answer(exchange, Message.Response, status, kind);
  }

  fail(exchange: Exchange, reason: 'refused' | 'reset'): void {
    this.#answer(exchange, Message.Failure, reason === 'refused' ? 0 : 1, 0);
  }

  #answer(exchange: Exchange, kind: Message, a: number, b: number): void {
    const key = exchange.remoteId;
    // Gone when the caller's close came first.
    if (!this.#serving.delete(key)) return;
    this.#push(key % this.workers, kind, Math.floor(key / this.workers), a, b);
  }

  // --- incoming ---------------------------------------------------------------------------

  /** Puts what other workers sent on this worker's event heap, at the times it arrives. */
  receive(records: Float64Array): void {
    const { clock, network, tiers } = this.world;
    for (let offset = 0; offset < records.length; offset += RECORD) {
      const kind = records[offset] as number;
      const id = records[offset + 1] as number;
      const at = records[offset + 2] as number;
      const from = records[offset + 3] as number;
      const a = records[offset + 4] as number;
      const b = records[offset + 5] as number;
      switch (kind) {
        case Message.Request: {
          const instance = tiers[a]?.instances[b] as SimInstance;
          const budget = records[offset + 6] as number;
          const serve = network.serve;
          const headers =
            serve === undefined || Number.isNaN(budget) ? undefined : { [serve.headerName]: String(budget) };
          const exchange = new Exchange(instance, instance.url, headers, null, null, null);
          exchange.peer = this;
          exchange.remoteId = id * this.workers + from;
          exchange.phase = Phase.Arriving;
          this.#serving.set(exchange.remoteId, exchange);
          clock.scheduleAt(exchange, at);
          break;
        }
        case Message.Cancel: {
          const key = id * this.workers + from;
          const exchange = this.#serving.get(key);
          if (exchange === undefined) break;
          this.#serving.delete(key);
          exchange.closeArrivesAt(at);
          break;
        }
        case Message.Response:
        case Message.Failure: {
          const exchange = this.#waiting.get(id);
          if (exchange === undefined) break;
          this.#waiting.delete(id);
          if (kind === Message.Failure) exchange.returnAt(at, a === 0 ? 'refused' : 'reset');
          else {
            exchange.status = a;
            exchange.returnAt(at, (exchange.instance as SimInstance).responseOf(a, b));
          }
          break;
        }
      }
    }
  }
}

/** What the coordinator tells a follower before each grain. */
interface Packet {
  endMs: number;
  targetMs: number;
  nowMs: number;
  /** Counting starts at this epoch (the warm-up is over). */
  epoch?: number;
  /** Counting is over: send the counts and stop. */
  stop?: boolean;
  records: Float64Array;
}

/** What a follower answers after the grain. */
interface Reply {
  /** Messages per destination worker (empty arrays included). */
  records: Float64Array[];
  /** Its next event, after the grain. */
  nextAt: number;
}

/** A follower's counts, at the end. */
interface Counts {
  /** Per owned service: [service index, then received, shed, wasted, peakInFlight per instance]. */
  services: number[][];
  load: Float64Array;
  okByArrival: Float64Array;
  edgeAttempts: number[];
  events: number;
}

interface FollowerData {
  options: Omit<SimulateTopologyOptions, 'onProgress'>;
  owner: number[];
  self: number;
  workers: number;
}

/** Where the worker threads start: the built module, or the TypeScript source through tsx. */
const workerModule = (() => {
  const here = import.meta.url;
  return new URL(here.endsWith('.ts') ? './worker.ts' : './storm-sim-worker.js', here);
})();

function startWorker(data: FollowerData): Worker {
  // As the CLI's child process: a young generation of 3 × 64 MiB (semi-spaces) keeps
  // scavenges rare (docs/storm-simulation.md).
  const resourceLimits = { maxYoungGenerationSizeMb: 192 };
  if (!workerModule.pathname.endsWith('.ts')) return new Worker(workerModule, { workerData: data, resourceLimits });
  // Tests and `npm run storm` run the sources: the worker registers tsx before loading them.
  const boot = `import('tsx/esm/api').then((tsx) => { tsx.register(); return import(${JSON.stringify(workerModule.href)}); })`;
  return new Worker(boot, { eval: true, workerData: data, resourceLimits });
}

/** The calling thread's side: runs the entry's share and drives the followers' clocks. */
class Coordinator implements RunCoordinator {
  readonly workers: number;
  readonly #workers: Worker[];
  readonly #link: WorkerLink;
  /** Each follower's next event, as of its last reply. */
  readonly #nextAt: number[];
  #replies: Array<Reply | undefined>;
  #counts: Array<Counts | undefined>;
  #expected = 0;
  #epoch: number | undefined = undefined;
  #failure: Error | undefined = undefined;
  #wake: (() => void) | undefined = undefined;

  readonly lookaheadMs: number;

  constructor(workers: Worker[], link: WorkerLink) {
    this.lookaheadMs = link.world.network.networkMs;
    this.workers = workers.length + 1;
    this.#workers = workers;
    this.#link = link;
    this.#nextAt = new Array(workers.length + 1).fill(Number.POSITIVE_INFINITY);
    this.#replies = new Array(workers.length + 1).fill(undefined);
    this.#counts = new Array(workers.length + 1).fill(undefined);
    for (const [index, worker] of workers.entries()) {
      const follower = index + 1;
      worker.on('message', (message: Reply | Counts) => {
        if ('nextAt' in message) this.#replies[follower] = message;
        else this.#counts[follower] = message;
        this.#expected--;
        if (this.#expected === 0) this.#wake?.();
      });
      const fail = (error: Error) => {
        this.#failure ??= error;
        this.#wake?.();
      };
      worker.on('error', fail);
      worker.on('exit', (code) => {
        if (this.#expected > 0) fail(new Error(`storm simulation worker ${follower} exited with code ${code}`));
      });
    }
  }

  async #arrived(): Promise<void> {
    while (this.#expected > 0 && this.#failure === undefined) {
      await new Promise<void>((resolve) => {
        this.#wake = resolve;
      });
      this.#wake = undefined;
    }
    if (this.#failure !== undefined) throw this.#failure;
  }

  async collect(): Promise<void> {
    await this.#arrived();
    const link = this.#link;
    // In follower order, whatever order the replies came in: a run is deterministic.
    for (let follower = 1; follower < this.#replies.length; follower++) {
      const reply = this.#replies[follower];
      if (reply === undefined) continue;
      this.#replies[follower] = undefined;
      this.#nextAt[follower] = reply.nextAt;
      for (const [to, records] of reply.records.entries()) {
        if (records.length === 0) continue;
        if (to === 0) link.receive(records);
        else link.forward(to, records);
      }
    }
  }

  othersNextAt(): number {
    let next = Number.POSITIVE_INFINITY;
    for (let follower = 1; follower < this.#nextAt.length; follower++) {
      next = Math.min(next, this.#nextAt[follower] as number, this.#link.earliest[follower] as number);
    }
    return next;
  }

  dispatch(endMs: number, targetMs: number, nowMs: number): void {
    for (const [index, worker] of this.#workers.entries()) {
      const records = this.#link.take(index + 1);
      const packet: Packet = { endMs, targetMs, nowMs, records };
      if (this.#epoch !== undefined) packet.epoch = this.#epoch;
      worker.postMessage(packet, [records.buffer as ArrayBuffer]);
    }
    this.#epoch = undefined;
    this.#expected = this.#workers.length;
  }

  startCounting(epoch: number): void {
    this.#epoch = epoch;
  }

  async finish(world: SimWorld): Promise<void> {
    await this.collect();
    const nowMs = world.clock.now();
    for (const [index, worker] of this.#workers.entries()) {
      const packet: Packet = { endMs: nowMs, targetMs: nowMs, nowMs, stop: true, records: this.#link.take(index + 1) };
      worker.postMessage(packet);
    }
    this.#expected = this.#workers.length;
    await this.#arrived();
    for (const counts of this.#counts) {
      if (counts === undefined) continue;
      for (const [service, ...numbers] of counts.services) {
        const instances = world.tiers[service as number]?.instances ?? [];
        for (const [index, instance] of instances.entries()) {
          const counters = instance.counters;
          counters.received = numbers[4 * index] as number;
          counters.shed = numbers[4 * index + 1] as number;
          counters.wasted = numbers[4 * index + 2] as number;
          counters.peakInFlight = numbers[4 * index + 3] as number;
        }
      }
      const metrics = world.metrics;
      for (let index = 0; index < metrics.load.length; index++) {
        metrics.load[index] = (metrics.load[index] as number) + (counts.load[index] as number);
        metrics.okByArrival[index] = (metrics.okByArrival[index] as number) + (counts.okByArrival[index] as number);
      }
      for (const [index, edge] of world.edges.entries()) edge.attempts += counts.edgeAttempts[index] as number;
      world.otherEvents.push(counts.events);
    }
  }
}

/** `simulateTopology` with `workers` > 1. */
export async function simulateInParallel(
  options: SimulateTopologyOptions,
  workers: number,
): Promise<TopologyRunResult> {
  const wallStart = performance.now();
  const grainMs = options.grainMs ?? 1;
  const resolved: SimulateTopologyOptions = { ...options, networkMs: options.networkMs ?? grainMs };
  // Checked here, before any thread starts (each builds the same world).
  topologySimStrategies(options.topology, options.strategy);
  const owner = partitionServices(options.topology, workers);
  const { onProgress: _, ...shared } = resolved;
  const threads: Worker[] = [];
  try {
    for (let self = 1; self < workers; self++) threads.push(startWorker({ options: shared, owner, self, workers }));
    const world = buildWorld(resolved, (service) => owner[service] === 0);
    const link = new WorkerLink(0, owner, world, workers);
    world.network.router = link;
    const coordinator = new Coordinator(threads, link);
    return await runWorld(resolved, world, coordinator, wallStart);
  } finally {
    await Promise.all(threads.map((thread) => thread.terminate()));
  }
}

/** A worker thread's run: its share of the services, grain by grain as the coordinator says. */
export async function runFollower(
  data: FollowerData,
  port: {
    on(event: 'message', listener: (packet: Packet) => void): void;
    postMessage(value: unknown, transfer?: ArrayBuffer[]): void;
  },
): Promise<void> {
  const { options, owner, self, workers } = data;
  const world = buildWorld(options, (service) => owner[service] === self);
  const { clock, metrics, tiers, edges } = world;
  const link = new WorkerLink(self, owner, world, workers);
  world.network.router = link;
  const packets: Packet[] = [];
  let wake: (() => void) | undefined;
  port.on('message', (packet) => {
    packets.push(packet);
    wake?.();
  });
  try {
    for (;;) {
      let packet = packets.shift();
      while (packet === undefined) {
        await new Promise<void>((resolve) => {
          wake = resolve;
        });
        wake = undefined;
        packet = packets.shift();
      }
      clock.raiseTo(packet.nowMs);
      link.receive(packet.records);
      if (packet.epoch !== undefined) startCounting(world, options.topology, packet.epoch);
      if (packet.stop === true) {
        metrics.active = false;
        const counts: Counts = {
          services: tiers
            .filter((tier) => owner[tier.depth] === self)
            .map((tier) => [
              tier.depth,
              ...tier.instances.flatMap((instance) => {
                const counters = instance.counters;
                return [counters.received, counters.shed, counters.wasted, counters.peakInFlight];
              }),
            ]),
          load: metrics.load,
          okByArrival: metrics.okByArrival,
          edgeAttempts: edges.map((edge) => edge.attempts),
          events: clock.stats.fired,
        };
        port.postMessage(counts);
        return;
      }
      await clock.runUntil(packet.endMs, packet.targetMs);
      const records = Array.from({ length: workers }, (_, to) => (to === self ? new Float64Array(0) : link.take(to)));
      const reply: Reply = { records, nextAt: clock.nextAt() };
      port.postMessage(
        reply,
        records.map((array) => array.buffer as ArrayBuffer),
      );
    }
  } finally {
    // The port stays open: the coordinator ends the thread once it has the counts (a thread
    // that exits on its own may be seen to exit before its last message arrives).
    await Promise.all(world.callers.map((caller) => caller.close().catch(() => undefined)));
  }
}
