/**
 * A simulated tier instance: the real lab's admission rules (bounded concurrency and queue,
 * 503 when full, the deadline middleware's budget check, telescope's concurrency limiter when
 * the strategy has one), CPU work per request, the call to the next tier, and faults. The
 * network that delivers requests to it is in `network.ts`.
 */
import { Deadline } from '../../core/deadline.js';
import {
  concurrencyLimitDefaults,
  deadlineShedBody,
  overloadShedBody,
  parseBudgetHeader,
  type ServerLimiter,
} from '../../server/index.js';
import type { TopologyFault, TopologyFaultKind } from '../topology.js';
import type { TierCapacity, TierName } from '../types.js';
import { type Exchange, Phase, ResponseKind } from './exchange.js';
import type { SimNetwork } from './network.js';

/** What a simulated tier's caller for the next tier does with one inbound request. */
export interface SimCaller {
  /** Calls the next tier for `inbound`; `done` gets the status this tier answers with. */
  call(inbound: Exchange, done: (exchange: Exchange, status: number, fallback: boolean) => void): void;
  close(): Promise<void>;
}

/** Deadline admission on every server (telescope: the deadline middleware's options). */
export interface SimServe {
  maxMs: number;
  defaultMs: number;
  headerName: string;
}

/** Counts a tier's instances keep, as the real tiers do (server side). */
export interface InstanceCounters {
  received: number;
  shed: number;
  wasted: number;
  inFlight: number;
  peakInFlight: number;
  downstreamAttempts: number;
}

/** Hooks the run's metrics get from the servers. */
export interface SimObserver {
  /** A request reached an instance (before admission). */
  received(instance: SimInstance): void;
  /** An edge instance answered a request (any status; shed included). */
  edgeAnswer(exchange: Exchange, status: number, fallback: boolean): void;
  /** Any instance answered a request (any status; shed included), when the observer wants it. */
  answered?(instance: SimInstance, exchange: Exchange, status: number, fallback: boolean): void;
}

/** One simulated tier. */
export interface SimTier {
  /** `edge`, `middle-1` … `middle-k`, `backend`; or a topology's service name. */
  name: string;
  /** `edge` answers the load; `backend` calls nothing. */
  role: TierName;
  /** Position from the edge (0). */
  depth: number;
  capacity: TierCapacity;
  instances: SimInstance[];
}

/** One simulated instance of a tier: admission, CPU, the call to the next tier, faults. */
export class SimInstance {
  readonly url: string;
  readonly counters: InstanceCounters = {
    received: 0,
    shed: 0,
    wasted: 0,
    inFlight: 0,
    peakInFlight: 0,
    downstreamAttempts: 0,
  };
  fault: TopologyFaultKind = 'none';
  slowFactor = 10;
  /** fault `latency`: milliseconds added to every request. */
  addedMs = 0;
  /** fault `errors`: fraction of requests answered 500. */
  errorRate = 0;
  /** Seeded random source of the `errors` fault. */
  random: () => number = Math.random;
  /** Zone of the instance (its clients prefer it). */
  zone: string | undefined = undefined;
  /** fault `fail`: share of answers that are 503, spread evenly by a running credit (as the real tier). */
  failRate = 0;
  #failCredit = 0;
  /** The caller for the next tier; none: the instance answers itself (a backend). */
  caller: SimCaller | undefined = undefined;
  /** The server's concurrency limiter, when the strategy has one. */
  readonly limiter: ServerLimiter | undefined;
  /** Requests run at once and queued now (the `capacity` fault lowers them). */
  #maxConcurrent: number;
  #maxQueue: number;
  #active = 0;
  #queueHead: Exchange | null = null;
  #queueTail: Exchange | null = null;
  #queueLength = 0;
  #openHead: Exchange | null = null;
  #cpuFreeAt = 0;
  readonly #bodies = new Map<number, { body: Buffer; headers: Record<string, string> }>();
  readonly #done: (exchange: Exchange, status: number, fallback: boolean) => void;

  constructor(
    readonly network: SimNetwork,
    readonly tier: SimTier,
    readonly index: number,
    readonly workMs: number,
    readonly latencyMs: number,
    /** CPU milliseconds of HTTP handling per request received, shed ones too. */
    readonly requestCpuMs = 0,
    /** Simulated by another worker: requests to it cross as messages (`parallel.ts`). */
    readonly remote = false,
  ) {
    this.url = `http://${index}.${tier.name}.sim`;
    this.limiter = remote ? undefined : network.limiter?.(this);
    this.#maxConcurrent = tier.capacity.maxConcurrent;
    this.#maxQueue = tier.capacity.maxQueue;
    this.#done = (exchange, status, fallback) => {
      this.answer(exchange, status, fallback);
      this.release(exchange);
    };
  }

  /** Starts the counts afresh (after the warm-up); requests in flight stay the peak's floor. */
  resetCounts(): void {
    const counters = this.counters;
    counters.received = 0;
    counters.shed = 0;
    counters.wasted = 0;
    counters.downstreamAttempts = 0;
    counters.peakInFlight = counters.inFlight;
  }

  get queued(): number {
    return this.#queueLength;
  }

  /** A request arrives (the connection was accepted). */
  receive(exchange: Exchange): void {
    const network = this.network;
    const counters = this.counters;
    counters.received++;
    network.observer?.received(this);
    const now = network.clock.now();
    exchange.arrivedAt = now;
    this.#linkOpen(exchange);
    // Reading and answering a request costs CPU even when it is refused.
    if (this.requestCpuMs > 0) this.#cpuFreeAt = (this.#cpuFreeAt > now ? this.#cpuFreeAt : now) + this.requestCpuMs;
    const answerLater = this.#cpuFreeAt > now;
    const serve = network.serve;
    if (serve !== undefined) {
      // telescope-http/server's header parsing; as deadlineMiddleware: 504 without work when gone.
      const budgetMs = parseBudgetHeader(exchange.headers?.[serve.headerName], serve.maxMs) ?? serve.defaultMs;
      if (budgetMs <= 0) {
        exchange.released = true;
        if (answerLater) {
          exchange.phase = Phase.Expired;
          network.clock.scheduleAt(exchange, this.#cpuFreeAt);
        } else {
          this.answerExpired(exchange);
        }
        return;
      }
      // The deadline carries the request's cancellation, as deadlineMiddleware's does.
      exchange.deadline = new Deadline(network.clock.now() + budgetMs, network.clock, exchange);
      if (this.limiter !== undefined) {
        exchange.phase = Phase.LimiterQueued;
        this.limiter.arrive(exchange, budgetMs);
        return;
      }
    }
    this.admit(exchange);
  }

  /** @internal the concurrency limiter shed the request: 503 at once, no work. */
  shedByLimiter(exchange: Exchange): void {
    this.counters.shed++;
    exchange.released = true;
    this.answer(exchange, 503, false, ResponseKind.LimiterShed);
  }

  /** @internal the instance's own bounded admission (slots, queue, 503 when full). */
  admit(exchange: Exchange): void {
    const counters = this.counters;
    const network = this.network;
    const now = network.clock.now();
    const answerLater = this.#cpuFreeAt > now;
    if (this.#active < this.#maxConcurrent) {
      this.#active++;
      this.#start(exchange);
    } else if (this.#queueLength < this.#maxQueue) {
      exchange.phase = Phase.Queued;
      exchange.qPrev = this.#queueTail;
      exchange.qNext = null;
      if (this.#queueTail === null) this.#queueHead = exchange;
      else this.#queueTail.qNext = exchange;
      this.#queueTail = exchange;
      this.#queueLength++;
    } else {
      counters.shed++;
      exchange.released = true;
      if (exchange.limiterHeld) {
        // Refused by the instance itself after the limiter let it in: the limiter's slot ends.
        exchange.limiterHeld = false;
        this.limiter?.release(true);
      }
      if (answerLater) {
        exchange.phase = Phase.Shed;
        network.clock.scheduleAt(exchange, this.#cpuFreeAt);
      } else {
        this.answer(exchange, 503, false);
      }
    }
  }

  /** @internal deadline middleware's 504 for a budget gone on arrival (no counters, as real mode). */
  answerExpired(exchange: Exchange): void {
    exchange.phase = Phase.Done;
    if (exchange.gone) return;
    this.#unlinkOpen(exchange);
    exchange.deliverResponse(504, expiredResponse, ResponseKind.Expired);
  }

  #start(exchange: Exchange): void {
    exchange.started = true;
    const counters = this.counters;
    counters.inFlight++;
    if (counters.inFlight > counters.peakInFlight) counters.peakInFlight = counters.inFlight;
    if (exchange.gone) {
      counters.wasted++;
      this.release(exchange);
      return;
    }
    // CPU work, one request at a time per instance (a tier is one single-threaded process).
    const clock = this.network.clock;
    const now = clock.now();
    const begin = this.#cpuFreeAt > now ? this.#cpuFreeAt : now;
    this.#cpuFreeAt = begin + this.workMs;
    exchange.phase = Phase.Cpu;
    clock.scheduleAt(exchange, this.#cpuFreeAt);
  }

  /** @internal CPU work done: hang, wait for the instance's own latency, or go on. */
  afterCpu(exchange: Exchange): void {
    if (this.fault === 'hang') {
      // Accepted, never answered: the slot stays taken until the caller goes away.
      exchange.phase = Phase.Hung;
      return;
    }
    const latencyMs = this.latencyMs * (this.fault === 'slow' ? this.slowFactor : 1) + this.addedMs;
    if (latencyMs > 0) {
      exchange.phase = Phase.Latency;
      this.network.clock.scheduleAt(exchange, this.network.clock.now() + latencyMs);
      return;
    }
    this.afterLatency(exchange);
  }

  /** @internal the instance's own latency has passed: fail, answer (a backend) or call. */
  afterLatency(exchange: Exchange): void {
    if (this.errorRate > 0 && this.random() < this.errorRate) {
      this.answer(exchange, 500, false);
      this.release(exchange);
      return;
    }
    if (this.failRate > 0) {
      this.#failCredit += this.failRate;
      if (this.#failCredit >= 1) {
        this.#failCredit -= 1;
        this.answer(exchange, 503, false);
        this.release(exchange);
        return;
      }
    }
    const caller = this.caller;
    if (caller === undefined) {
      this.answer(exchange, this.tier.role === 'backend' ? 200 : 503, false);
      this.release(exchange);
      return;
    }
    exchange.phase = Phase.Calling;
    caller.call(exchange, this.#done);
  }

  /** Answers a request (counts wasted work, edge samples) and sends it if the caller is still there. */
  answer(
    exchange: Exchange,
    status: number,
    fallback: boolean,
    kind: ResponseKind = fallback ? ResponseKind.Fallback : ResponseKind.Plain,
  ): void {
    exchange.phase = Phase.Done;
    exchange.status = status;
    if (exchange.gone || exchange.deadline?.expired === true) this.counters.wasted++;
    const observer = this.network.observer;
    if (observer !== undefined) {
      if (this.tier.role === 'edge') observer.edgeAnswer(exchange, status, fallback);
      observer.answered?.(this, exchange, status, fallback);
    }
    if (!exchange.gone) {
      this.#unlinkOpen(exchange);
      exchange.deliverResponse(status, this.responseOf(status, kind), kind);
    }
  }

  /** Frees the request's slot (answered, or its caller went away); safe to call twice. */
  release(exchange: Exchange): void {
    if (exchange.limiterHeld) {
      exchange.limiterHeld = false;
      // As concurrencyLimit: a caller that gave up is a drop; the instance's own answers are not.
      this.limiter?.release(exchange.gone);
    }
    if (exchange.released) return;
    exchange.released = true;
    if (!exchange.started) {
      // Left while queued: it never took a slot.
      this.#unlinkQueue(exchange);
      return;
    }
    this.counters.inFlight--;
    const next = this.#queueHead;
    // The slot passes to the next in the queue, unless a capacity drop took it away.
    if (next === null || this.#active > this.#maxConcurrent) {
      this.#active--;
      return;
    }
    this.#unlinkQueue(next);
    this.#start(next);
  }

  /** The caller closed the connection: free the slot, keep working (wasted if finished). */
  callerGone(exchange: Exchange): void {
    if (exchange.gone) return;
    exchange.gone = true;
    this.#unlinkOpen(exchange);
    exchange.cancelCalls();
    if (exchange.phase === Phase.LimiterQueued) {
      this.limiter?.forget(exchange);
      return;
    }
    // As the real tier's response 'close' listener: frees a slot, or a place in the queue.
    if (exchange.phase !== Phase.Refused) this.release(exchange);
  }

  /** Applies a fault, as the real tier does on the lab's message. */
  setFault(fault: TopologyFaultKind, factor: number | undefined, rate?: number): void {
    this.applyFault({ atS: 0, service: this.tier.name, fault, factor, rate });
  }

  /** Applies a topology fault: it replaces the instance's previous one (`none`: healthy). */
  applyFault(step: TopologyFault): void {
    const previous = this.fault;
    const fault = step.fault;
    this.fault = fault;
    this.slowFactor = step.factor ?? 10;
    this.failRate = fault === 'fail' ? (step.rate ?? 0.1) : 0;
    this.addedMs = fault === 'latency' ? (step.addedMs ?? 0) : 0;
    this.errorRate = fault === 'errors' ? (step.errorRate ?? 0) : 0;
    const fraction = fault === 'capacity' ? (step.capacityFraction ?? 1) : 1;
    const capacity = this.tier.capacity;
    this.#maxConcurrent = Math.max(1, Math.floor(capacity.maxConcurrent * fraction));
    this.#maxQueue = Math.floor(capacity.maxQueue * fraction);
    // Capacity back: the queue fills the slots that came back.
    while (this.#active < this.#maxConcurrent && this.#queueHead !== null) {
      const next = this.#queueHead;
      this.#unlinkQueue(next);
      this.#active++;
      this.#start(next);
    }
    if (fault === 'down' && previous !== 'down') {
      // Every open connection breaks: callers see a reset, the server frees the slots.
      let exchange = this.#openHead;
      while (exchange !== null) {
        const next = exchange.oNext;
        this.callerGone(exchange);
        exchange.deliverFailure('reset');
        exchange = next;
      }
    }
  }

  /** The body and headers of an answer of `kind` (shared, also for answers that crossed from another worker). */
  responseOf(status: number, kind: number): SimResponse {
    if (kind === ResponseKind.Expired) return expiredResponse;
    if (kind === ResponseKind.LimiterShed) return limiterShed;
    return this.#bodyFor(status, kind === ResponseKind.Fallback);
  }

  #bodyFor(status: number, fallback: boolean): SimResponse {
    const key = fallback ? -status : status;
    let cached = this.#bodies.get(key);
    if (cached === undefined) {
      const body = Buffer.from(JSON.stringify({ tier: this.tier.role, index: this.index, status, fallback }));
      cached = {
        body,
        headers: Object.freeze({ 'content-type': 'application/json', 'content-length': String(body.length) }) as Record<
          string,
          string
        >,
      };
      this.#bodies.set(key, cached);
    }
    return cached;
  }

  #unlinkQueue(exchange: Exchange): void {
    const prev = exchange.qPrev;
    const next = exchange.qNext;
    if (prev === null && next === null && this.#queueHead !== exchange) return;
    if (prev === null) this.#queueHead = next;
    else prev.qNext = next;
    if (next === null) this.#queueTail = prev;
    else next.qPrev = prev;
    exchange.qPrev = null;
    exchange.qNext = null;
    this.#queueLength--;
  }

  #linkOpen(exchange: Exchange): void {
    exchange.linkedOpen = true;
    exchange.oPrev = null;
    exchange.oNext = this.#openHead;
    if (this.#openHead !== null) this.#openHead.oPrev = exchange;
    this.#openHead = exchange;
  }

  #unlinkOpen(exchange: Exchange): void {
    if (!exchange.linkedOpen) return;
    exchange.linkedOpen = false;
    const prev = exchange.oPrev;
    const next = exchange.oNext;
    if (prev === null) this.#openHead = next;
    else prev.oNext = next;
    if (next !== null) next.oPrev = prev;
    exchange.oPrev = null;
    exchange.oNext = null;
  }
}

const shedBuffer = Buffer.from(deadlineShedBody);
const shedHeaders = Object.freeze({
  'content-type': 'application/json',
  'content-length': String(shedBuffer.length),
}) as Record<string, string>;

const expiredResponse: SimResponse = { body: shedBuffer, headers: shedHeaders };

/** A response's body and headers (shared, frozen). */
export interface SimResponse {
  body: Buffer;
  headers: Record<string, string>;
}

/** The 503 of a concurrency limiter's shed, as `concurrencyLimit` sends it (with its Retry-After). */
const limiterShed: SimResponse = {
  body: Buffer.from(overloadShedBody),
  headers: Object.freeze({
    'content-type': 'application/json',
    'content-length': String(Buffer.byteLength(overloadShedBody)),
    'retry-after': String(concurrencyLimitDefaults.retryAfterS),
  }) as Record<string, string>,
};
