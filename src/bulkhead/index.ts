/**
 * Bulkhead layer: bounds the calls a client has in flight to a service, so one slow
 * dependency cannot take every socket, every handler and all memory with it. Overflow waits
 * in a bounded queue (at most its own deadline), or is shed at once with `BULKHEAD_FULL`:
 * never an unbounded queue.
 *
 * Order: below breaker, above retry (a call and its retry hold one slot).
 */
import type { CallContext, IncomingResponse, Layer } from '../core/call.js';
import { type Clock, type WheelEntry, wheelOf } from '../core/clock.js';
import { ErrorCode, invalidOption, TelescopeError } from '../core/errors.js';

/** `bulkhead` option of `createClient`. */
export interface BulkheadOptions {
  /** Calls in flight at once, per client (service). @default 100 */
  maxConcurrent?: number;
  /** Calls that may wait for a slot (each at most its deadline); 0 sheds at once. @default 0 */
  maxQueue?: number;
}

export const bulkheadDefaults = { maxConcurrent: 100, maxQueue: 0 } as const;

class Waiter implements WheelEntry {
  wheelSlot = -1;
  wheelPrev: WheelEntry | null = null;
  wheelNext: WheelEntry | null = null;
  constructor(
    readonly context: CallContext,
    readonly admit: () => void,
    readonly expire: (waiter: Waiter) => void,
  ) {}
  onTimer(): void {
    this.expire(this);
  }
}

export interface BulkheadLayer {
  layer: Layer;
  /** Calls holding a slot now. */
  readonly active: number;
  /** Calls waiting for a slot now. */
  readonly queued: number;
}

/**
 * The bulkhead layer.
 *
 * @example
 * const { layer } = bulkhead({ maxConcurrent: 50, maxQueue: 10 }, { clock, onShed });
 */
export function bulkhead(
  options: BulkheadOptions,
  environment: { clock: Clock; onShed?: (context: CallContext, reason: 'full' | 'queue-timeout') => void },
): BulkheadLayer {
  const maxConcurrent = options.maxConcurrent ?? bulkheadDefaults.maxConcurrent;
  const maxQueue = options.maxQueue ?? bulkheadDefaults.maxQueue;
  if (!(Number.isInteger(maxConcurrent) && maxConcurrent >= 1)) {
    invalidOption('bulkhead.maxConcurrent', 'an integer ≥ 1', maxConcurrent);
  }
  if (!(Number.isInteger(maxQueue) && maxQueue >= 0)) invalidOption('bulkhead.maxQueue', 'an integer ≥ 0', maxQueue);
  const { clock, onShed } = environment;
  const wheel = wheelOf(clock);
  const queue: Waiter[] = [];
  let active = 0;

  const shed = (context: CallContext, reason: 'full' | 'queue-timeout') => {
    onShed?.(context, reason);
    return new TelescopeError(
      ErrorCode.BULKHEAD_FULL,
      reason === 'full'
        ? `${context.service}: bulkhead full (${maxConcurrent} in flight, ${queue.length} of ${maxQueue} queued)`
        : `${context.service}: no bulkhead slot within the call's deadline`,
      { service: context.service, endpoint: context.endpoint, requestSent: false },
    );
  };

  const aborted = (context: CallContext) =>
    new TelescopeError(ErrorCode.ABORTED, 'call aborted by the caller while it waited for a bulkhead slot', {
      service: context.service,
      endpoint: context.endpoint,
      requestSent: false,
      cause: context.callerSignal?.reason,
    });

  // Shared, not per call: releasing needs no call state.
  const release = () => {
    const waiter = queue.shift();
    if (waiter === undefined) {
      active--;
      return;
    }
    wheel.cancel(waiter);
    waiter.admit(); // the slot passes straight to the waiter
  };
  const releaseAfterSuccess = (response: IncomingResponse) => {
    release();
    return response;
  };
  const releaseAfterFailure = (error: unknown): never => {
    release();
    throw error;
  };

  const layer: Layer = (next) => (request, context) => {
    if (active < maxConcurrent) {
      active++;
      return next(request, context).then(releaseAfterSuccess, releaseAfterFailure);
    }
    if (queue.length >= maxQueue) return Promise.reject(shed(context, 'full'));
    const signal = context.callerSignal;
    if (signal?.aborted) return Promise.reject(aborted(context));
    return new Promise<IncomingResponse>((resolve, reject) => {
      // A waiter leaves the queue when admitted, at its deadline, or when its caller aborts.
      const onAbort = () => {
        const index = queue.indexOf(waiter);
        if (index !== -1) queue.splice(index, 1);
        wheel.cancel(waiter);
        reject(aborted(context));
      };
      const waiter = new Waiter(
        context,
        () => {
          signal?.removeEventListener('abort', onAbort);
          next(request, context).then(releaseAfterSuccess, releaseAfterFailure).then(resolve, reject);
        },
        (expired) => {
          signal?.removeEventListener('abort', onAbort);
          const index = queue.indexOf(expired);
          if (index !== -1) queue.splice(index, 1);
          reject(shed(context, 'queue-timeout'));
        },
      );
      queue.push(waiter);
      signal?.addEventListener('abort', onAbort, { once: true });
      const expiresAt = context.deadline === undefined ? Number.POSITIVE_INFINITY : context.deadline.at;
      if (expiresAt !== Number.POSITIVE_INFINITY) wheel.schedule(waiter, expiresAt);
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
  };
}
