/**
 * Bulkhead layer: bounds the calls a client has in flight to a service, so one slow
 * dependency cannot take every socket, every handler and all memory with it. Overflow waits
 * in a bounded queue, or is shed at once with `BULKHEAD_FULL`: never an unbounded queue. The
 * queue holds only what the deadlines allow (expected wait and one RTT within the budget), a
 * waiter leaves once its budget is under one RTT, and a standing queue is served newest
 * first (adaptive LIFO, src/bulkhead/queue.ts; docs/overload.md).
 *
 * The bound is static (`{ maxConcurrent, maxQueue }`) or adaptive (`{ adaptive: 'gradient2' }`):
 * learned from the calls' latency and drops (src/limit). Adaptive is the default, because a
 * fixed number is wrong both ways: 100 sheds an ordinary day of 1,000 calls/s at 100 ms, and
 * a number high enough for that day lets an overloaded dependency take everything.
 *
 * Order: below breaker, above retry (a call and its retry hold one slot).
 */
import type { CallContext, IncomingResponse, Layer } from '../core/call.js';
import { channels } from '../core/channels.js';
import { type Clock, type WheelEntry, wheelOf } from '../core/clock.js';
import { ErrorCode, type HttpStatusError, invalidOption, isTelescopeError, TelescopeError } from '../core/errors.js';
import { AdaptiveLimit, checkLimitOptions, type LimitAlgorithmName } from '../limit/index.js';
import { type QueueLink, standingAt, WaitQueue } from './queue.js';

/** Static `bulkhead` option of `createClient`: a fixed bound. */
export interface BulkheadOptions {
  /** Not set: the bound is fixed. */
  adaptive?: undefined;
  /** Calls in flight at once, per client (service). @default 100 */
  maxConcurrent?: number;
  /** Calls that may wait for a slot (each at most its deadline); 0 sheds at once. @default 0 */
  maxQueue?: number;
}

/** Adaptive `bulkhead` option of `createClient`: a bound learned from latency and drops. */
export interface AdaptiveBulkheadOptions {
  /** The algorithm: `gradient2` (latency against its long-term average), `vegas` (estimated queue at the dependency), `aimd` (drops only). */
  adaptive: LimitAlgorithmName;
  /** The limit never falls below this. @default 20 */
  minConcurrent?: number;
  /** The limit never rises above this. @default 1000 */
  maxConcurrent?: number;
  /** Calls that may wait for a slot (each at most its deadline); 0 sheds at once. @default 1000 */
  maxQueue?: number;
}

/** Defaults of the static form. */
export const bulkheadDefaults = { maxConcurrent: 100, maxQueue: 0 } as const;

/** Defaults of the adaptive form; `createClient` uses them when `bulkhead` is not given. */
export const adaptiveBulkheadDefaults = {
  adaptive: 'gradient2',
  minConcurrent: 20,
  maxConcurrent: 1000,
  maxQueue: 1000,
} as const satisfies Required<AdaptiveBulkheadOptions>;

/** Where the adaptive limit starts (clamped to [minConcurrent, maxConcurrent]): the old static default. */
const initialAdaptiveLimit = 100;

class Waiter implements WheelEntry, QueueLink {
  wheelSlot = -1;
  wheelPrev: WheelEntry | null = null;
  wheelNext: WheelEntry | null = null;
  queuePrev: QueueLink | null = null;
  queueNext: QueueLink | null = null;
  queued = false;
  constructor(
    readonly context: CallContext,
    readonly lifoAfter: number,
    readonly admit: () => void,
    readonly expire: (waiter: Waiter) => void,
  ) {}
  onTimer(): void {
    this.expire(this);
  }
}

/** What `client.stats().bulkhead` shows. */
export interface BulkheadSnapshot {
  /** `static`, or the adaptive algorithm. */
  mode: 'static' | LimitAlgorithmName;
  /** Calls allowed in flight now. */
  limit: number;
  /** Calls holding a slot now. */
  inflight: number;
  /** Calls waiting for a slot now. */
  queued: number;
  /** Mean round-trip time of the last sample window (adaptive only; 0 before the first). */
  rttMs: number;
}

export interface BulkheadLayer {
  layer: Layer;
  /** Calls holding a slot now. */
  readonly active: number;
  /** Calls waiting for a slot now. */
  readonly queued: number;
  /** Calls allowed in flight now. */
  readonly limit: number;
  snapshot(): BulkheadSnapshot;
  /**
   * Checks new options (throws `INVALID_OPTION`, changing nothing) and returns what puts them
   * in force for the next call (`client.configure()`): calls in flight and queued are kept.
   */
  prepare(options: BulkheadOptions | AdaptiveBulkheadOptions): () => void;
}

/**
 * Whether a failure says the dependency is overloaded: a timeout, 503/429/504, a reset. Not a
 * caller's abort, not the caller's own bad request, not a 4xx or a refused connection.
 */
export function isOverloadDrop(error: unknown): boolean {
  if (!isTelescopeError(error)) return false;
  switch (error.code) {
    case ErrorCode.ATTEMPT_TIMEOUT:
    case ErrorCode.DEADLINE_EXCEEDED:
    case ErrorCode.CONNECTION_RESET:
      return true;
    case ErrorCode.HTTP_STATUS: {
      const status = (error as HttpStatusError).status;
      return status === 503 || status === 429 || status === 504;
    }
    default:
      return false;
  }
}

/**
 * The bulkhead layer.
 *
 * @example
 * const { layer } = bulkhead({ maxConcurrent: 50, maxQueue: 10 }, { clock, onShed });
 * const adaptive = bulkhead({ adaptive: 'gradient2' }, { clock, service: 'movies' });
 */
export function bulkhead(
  options: BulkheadOptions | AdaptiveBulkheadOptions,
  environment: {
    clock: Clock;
    /** Names the client in the `telescope:limit:change` channel. */
    service?: string;
    onShed?: (context: CallContext, reason: 'full' | 'queue-timeout') => void;
  },
): BulkheadLayer {
  const { clock, onShed } = environment;
  let maxQueue = 0;
  let limiter: AdaptiveLimit | undefined;
  let staticLimit = 0;
  let mode: BulkheadSnapshot['mode'] = 'static';
  /** Checks options (throws INVALID_OPTION) and returns what puts them in force. */
  const prepare = (next: BulkheadOptions | AdaptiveBulkheadOptions): (() => void) => {
    if (typeof next !== 'object' || next === null) invalidOption('bulkhead', 'an object or false', next);
    if (next.adaptive === undefined) {
      const nextLimit = next.maxConcurrent ?? bulkheadDefaults.maxConcurrent;
      const nextQueue = next.maxQueue ?? bulkheadDefaults.maxQueue;
      if (!(Number.isInteger(nextLimit) && nextLimit >= 1)) {
        invalidOption('bulkhead.maxConcurrent', 'an integer ≥ 1', nextLimit);
      }
      if (!(Number.isInteger(nextQueue) && nextQueue >= 0)) {
        invalidOption('bulkhead.maxQueue', 'an integer ≥ 0', nextQueue);
      }
      return () => {
        mode = 'static';
        limiter = undefined;
        staticLimit = nextLimit;
        maxQueue = nextQueue;
      };
    }
    const checked = checkLimitOptions('bulkhead.', next, adaptiveBulkheadDefaults);
    return () => {
      // A running bulkhead keeps its calls in flight and starts the new limit where the old one was.
      const running = limiter !== undefined || staticLimit > 0;
      const from = running ? currentLimit() : initialAdaptiveLimit;
      mode = checked.algorithm;
      maxQueue = checked.maxQueue;
      limiter = new AdaptiveLimit({
        algorithm: checked.algorithm,
        minConcurrent: checked.minConcurrent,
        maxConcurrent: checked.maxConcurrent,
        initialConcurrent: Math.min(checked.maxConcurrent, Math.max(checked.minConcurrent, from)),
        clock,
        onChange,
      });
      limiter.inflight = active;
    };
  };
  const service = environment.service ?? '';
  function onChange(limit: number): void {
    // A window ended: the limit may have grown, so waiters may go now.
    admitWaiters();
    if (channels.limitChange.hasSubscribers) {
      channels.limitChange.publish({
        side: 'client',
        name: service,
        algorithm: mode,
        limit,
        inflight: active,
        queued: queue.length,
      });
    }
  }
  const wheel = wheelOf(clock);
  const queue = new WaitQueue<Waiter>();
  let active = 0;
  const currentLimit = (): number => (limiter === undefined ? staticLimit : limiter.limit);
  prepare(options)();

  const shed = (context: CallContext, reason: 'full' | 'queue-timeout', expectedMs?: number) => {
    onShed?.(context, reason);
    const message =
      reason === 'queue-timeout'
        ? `${context.service}: no bulkhead slot within the call's deadline`
        : expectedMs === undefined
          ? `${context.service}: bulkhead full (${active} in flight of ${currentLimit()}, ${queue.length} of ${maxQueue} queued)`
          : `${context.service}: bulkhead full for this call's deadline (${active} in flight of ${currentLimit()}, ${queue.length} queued: about ${Math.round(expectedMs)} ms to wait and answer, ${Math.round(Math.max(0, (context.deadline?.at ?? 0) - clock.now()))} ms left)`;
    return new TelescopeError(ErrorCode.BULKHEAD_FULL, message, {
      service: context.service,
      endpoint: context.endpoint,
      requestSent: false,
    });
  };

  const aborted = (context: CallContext) =>
    new TelescopeError(ErrorCode.ABORTED, 'call aborted by the caller while it waited for a bulkhead slot', {
      service: context.service,
      endpoint: context.endpoint,
      requestSent: false,
      cause: context.callerSignal?.reason,
    });

  const take = (): void => {
    active++;
    limiter?.acquire();
  };
  /** The dependency's recent round-trip time (ms): adaptive only, 0 before the first window. */
  const rttMs = (): number => (limiter === undefined ? 0 : limiter.rttMs);
  function admitWaiters(): void {
    if (queue.length === 0) return;
    const now = clock.now();
    const rtt = rttMs();
    while (queue.length > 0 && active < currentLimit()) {
      // Oldest first, newest first while the queue is standing (src/bulkhead/queue.ts).
      const waiter = queue.shift(now) as Waiter;
      wheel.cancel(waiter);
      // A waiter whose budget no longer covers one RTT would be sent to certain failure: shed
      // it now (retryable, fallback applies) and keep the slot for one that can finish.
      const deadline = waiter.context.deadline;
      if (rtt > 0 && deadline !== undefined && deadline.at - now < rtt) {
        waiter.expire(waiter);
        continue;
      }
      take();
      waiter.admit();
    }
  }
  // Shared, not per call: releasing needs no call state.
  const release = (dropped: boolean) => {
    active--;
    limiter?.release(dropped);
    if (queue.length > 0) {
      admitWaiters();
      // Calls still waiting: demand is above the limit in this window too.
      if (queue.length > 0) limiter?.blocked();
    }
  };
  const releaseAfterSuccess = (response: IncomingResponse) => {
    release(false);
    return response;
  };
  const releaseAfterFailure = (error: unknown): never => {
    release(limiter !== undefined && isOverloadDrop(error));
    throw error;
  };

  const layer: Layer = (next) => (request, context) => {
    if (active < currentLimit()) {
      take();
      return next(request, context).then(releaseAfterSuccess, releaseAfterFailure);
    }
    limiter?.blocked();
    if (queue.length >= maxQueue) return Promise.reject(shed(context, 'full'));
    const signal = context.callerSignal;
    if (signal?.aborted) return Promise.reject(aborted(context));
    const now = clock.now();
    const rtt = rttMs();
    const deadlineAt = context.deadline === undefined ? Number.POSITIVE_INFINITY : context.deadline.at;
    if (rtt > 0 && deadlineAt !== Number.POSITIVE_INFINITY && limiter?.congested === true) {
      // By Little's law the slots serve `limit` calls per RTT: this call would wait about
      // (queued + 1) × RTT ÷ limit, then need one RTT. While the dependency is at its capacity
      // the queue holds only what the deadlines allow: a call that cannot make it is shed now,
      // not after spending its budget waiting. (While the limit grows, as in a burst, the queue
      // drains faster than that, and the estimate would shed healthy load.)
      const expectedMs = ((queue.length + 1) * rtt) / currentLimit() + rtt;
      if (deadlineAt - now < expectedMs) return Promise.reject(shed(context, 'full', expectedMs));
    }
    return new Promise<IncomingResponse>((resolve, reject) => {
      // A waiter leaves the queue when admitted, once its budget no longer covers one RTT, or
      // when its caller aborts.
      const onAbort = () => {
        queue.remove(waiter);
        wheel.cancel(waiter);
        reject(aborted(context));
      };
      const waiter = new Waiter(
        context,
        standingAt(now, deadlineAt),
        () => {
          signal?.removeEventListener('abort', onAbort);
          next(request, context).then(releaseAfterSuccess, releaseAfterFailure).then(resolve, reject);
        },
        (expired) => {
          signal?.removeEventListener('abort', onAbort);
          queue.remove(expired);
          reject(shed(context, 'queue-timeout'));
        },
      );
      queue.push(waiter);
      signal?.addEventListener('abort', onAbort, { once: true });
      if (deadlineAt !== Number.POSITIVE_INFINITY) wheel.schedule(waiter, deadlineAt - rtt);
    });
  };

  return {
    layer,
    get active() {
      return active;
    },
    get queued() {
      return queue.length;
    },
    get limit() {
      return currentLimit();
    },
    prepare: (next) => {
      const apply = prepare(next);
      return () => {
        apply();
        admitWaiters();
      };
    },
    snapshot: () => ({
      mode,
      limit: currentLimit(),
      inflight: active,
      queued: queue.length,
      rttMs: limiter === undefined ? 0 : Math.round(limiter.rttMs * 100) / 100,
    }),
  };
}
