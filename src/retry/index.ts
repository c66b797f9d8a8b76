/**
 * Retry layer: at most `maxRetries` more attempts (1 by default), each on an instance not yet
 * tried in this call, only for idempotent calls (or requests that certainly never left the
 * process), only for failures another attempt can fix, only while the budget fits an
 * attempt, and only while the client's retry budget has tokens. Optional hedging sends a
 * second attempt to another instance when the first is slow.
 *
 * Order: below deadline, breaker and bulkhead (a retry is one call to them), above balance
 * (each attempt picks again) and attempt (each gets its own timeout).
 *
 * Not p-retry: its loop retries one function on real timers, while each attempt here must
 * pick another instance through the balancer, draw from a budget shared by the whole client,
 * and wait (for Retry-After) on the injected clock that tests and the storm simulator drive.
 * It would also cost ~20 µs per call on the success path; this layer costs one `.catch`.
 */

import type { Classifier } from '../classify/index.js';
import type { Call, CallContext, IncomingResponse, Layer, OutgoingRequest } from '../core/call.js';
import { type Clock, sleep, type WheelEntry, wheelOf } from '../core/clock.js';
import { ErrorCode, invalidOption, isTelescopeError, TelescopeError } from '../core/errors.js';
import { RetryBudget, type RetryBudgetOptions } from './budget.js';

export { RetryBudget, type RetryBudgetOptions, retryBudgetDefaults } from './budget.js';

/** `retry.backoff`: full-jitter exponential backoff between attempts (Envoy's defaults). */
export interface BackoffOptions {
  /** Base interval: the n-th retry waits a random time in [0, min(maxMs, baseMs × 2^(n−1))). @default 25 */
  baseMs?: number;
  /** Upper bound of one wait. @default 10 × baseMs (250 with the default base) */
  maxMs?: number;
}

/** Retry options of one endpoint (`endpoint({ retry })`): the budget stays client-wide. */
export interface EndpointRetryOptions {
  /** Extra attempts after the first. @default 1 */
  maxRetries?: number;
  /**
   * HTTP statuses another attempt may fix; any other non-2xx is not retried.
   * @default [429, 502, 503, 504]
   */
  statuses?: readonly number[];
  /**
   * Wait between attempts (full jitter), always inside the call's deadline: a wait that would
   * leave less than an attempt needs is shortened. Off by default: the retry already goes to
   * another instance, and the retry budget already bounds the load retries add; a wait only
   * spends the caller's budget. `{}` turns it on with Envoy's 25 ms / 250 ms.
   * @default false
   */
  backoff?: BackoffOptions | false;
  /**
   * Judges each attempt's answer (Finagle's ResponseClassifier): return `'success'`,
   * `'failure'` (not retried), `'retryable-failure'` (retried on another instance if the call
   * is idempotent), or `undefined` for the default (`statuses`). A 2xx judged a failure fails
   * with `CLASSIFIED_FAILURE`. Retry, breaker, outlier ejection and `stats()` all follow it.
   * Must be synchronous; a classifier that throws fails the call with `INVALID_RESPONSE`.
   * @default undefined
   */
  classify?: Classifier;
}

/** `retry` option of `createClient`. */
export interface RetryOptions extends EndpointRetryOptions {
  /** The client-wide retry budget, or `false` for none (not recommended). @default { ratio: 0.1, minPerSecond: 10 } */
  budget?: RetryBudgetOptions | false;
}

/** `hedge` option of `createClient`. Off by default. */
export interface HedgeOptions {
  /** Start a second attempt on another instance when the first has not answered after this long. */
  delayMs: number;
}

export const retryDefaults = { maxRetries: 1 } as const;

/** Envoy's retry back-off: 25 ms base interval, at most 10× the base. */
export const backoffDefaults = { baseMs: 25, maxMs: 250 } as const;

/** What the retry layer tells its listener. */
export type RetryEvent =
  | {
      type: 'retry';
      service: string;
      endpoint: string;
      /** Number of the attempt about to start. */
      attempt: number;
      code: string;
      instance: string | undefined;
      delayMs: number;
    }
  | { type: 'hedge'; service: string; endpoint: string; instance: string | undefined }
  | { type: 'budget-exhausted'; service: string; endpoint: string; code: string };

export interface RetryLayerOptions extends RetryOptions {
  clock: Clock;
  /** Budget an attempt needs to be worth starting (minAttemptMs + reserveMs of the attempt layer). */
  attemptNeedsMs: number;
  /** Shared retry budget; created from `budget` when absent. */
  retryBudget?: RetryBudget | undefined;
  hedge?: HedgeOptions | false | undefined;
  onEvent?: ((event: RetryEvent) => void) | undefined;
  /** Random source of the backoff's jitter. @default Math.random */
  random?: (() => number) | undefined;
}

/** Checks `backoff`; the resolved base and cap, or undefined when off. */
export function parseBackoff(name: string, value: unknown): { baseMs: number; maxMs: number } | undefined {
  if (value === undefined || value === false) return undefined;
  if (typeof value !== 'object' || value === null) invalidOption(name, 'an object { baseMs, maxMs } or false', value);
  for (const key of Object.keys(value)) {
    if (key !== 'baseMs' && key !== 'maxMs') invalidOption(`${name}.${key}`, 'one of baseMs, maxMs', key);
  }
  const { baseMs: base, maxMs: max } = value as BackoffOptions;
  const baseMs = base ?? backoffDefaults.baseMs;
  if (!(typeof baseMs === 'number' && Number.isFinite(baseMs) && baseMs > 0)) {
    invalidOption(`${name}.baseMs`, 'a positive finite number', baseMs);
  }
  const maxMs = max ?? (base === undefined ? backoffDefaults.maxMs : baseMs * 10);
  if (!(typeof maxMs === 'number' && Number.isFinite(maxMs) && maxMs >= baseMs)) {
    invalidOption(`${name}.maxMs`, `a finite number ≥ baseMs (${baseMs})`, maxMs);
  }
  return { baseMs, maxMs };
}

/** Errors a retry on another instance can fix. */
function retryableError(error: unknown): error is TelescopeError {
  return isTelescopeError(error) && error.retryable;
}

/**
 * The retry layer.
 *
 * @example
 * compose(deadline(), retry({ clock, attemptNeedsMs: 30 }), balance(set), attempt())
 */
export function retry(options: RetryLayerOptions): Layer {
  const maxRetries = options.maxRetries ?? retryDefaults.maxRetries;
  if (!(Number.isInteger(maxRetries) && maxRetries >= 0 && maxRetries <= 10)) {
    invalidOption('retry.maxRetries', 'an integer in [0, 10]', maxRetries);
  }
  const budget =
    options.retryBudget ?? (options.budget === false ? undefined : new RetryBudget(options.clock, options.budget));
  const hedgeDelayMs = options.hedge ? options.hedge.delayMs : undefined;
  if (hedgeDelayMs !== undefined && !(Number.isFinite(hedgeDelayMs) && hedgeDelayMs >= 0)) {
    invalidOption('hedge.delayMs', 'a finite number ≥ 0', hedgeDelayMs);
  }
  const { clock, attemptNeedsMs, onEvent } = options;
  const backoff = parseBackoff('retry.backoff', options.backoff);
  const random = options.random ?? Math.random;

  /** Whether another attempt may start, and after how long; undefined when not. */
  function nextDelay(error: unknown, context: CallContext): number | undefined {
    if (!retryableError(error)) return undefined;
    if (context.attempt > maxRetries || context.probe) return undefined;
    // A write is repeated only when it certainly never reached the server.
    if (!context.idempotent && error.requestSent !== false) return undefined;
    if (context.callerAborted) return undefined;
    // A 503's Retry-After holds back the server that sent it (overloaded or draining, RFC 9110),
    // not the call: a retry that another instance can take goes at once (the balancer skips the
    // instances tried). A 429's is the caller's rate limit, which every instance enforces alike.
    const { retryAfterMs: askedMs = 0, status } = error as { retryAfterMs?: number; status?: number };
    const retryAfterMs = status === 503 && context.anotherInstanceFree ? 0 : askedMs;
    const remainingMs = context.deadline === undefined ? Number.POSITIVE_INFINITY : context.deadline.remainingMs();
    // Retry-After beyond the budget: fail fast instead of waiting for a sure timeout.
    if (remainingMs - retryAfterMs < attemptNeedsMs) return undefined;
    if (backoff === undefined) return retryAfterMs;
    // Full jitter (AWS, Envoy): a random wait below the exponential cap, on the client clock,
    // shortened so that the attempt after it still fits in the deadline.
    const capMs = Math.min(backoff.maxMs, backoff.baseMs * 2 ** (context.attempt - 1));
    const jitterMs = Math.min(random() * capMs, remainingMs - attemptNeedsMs);
    return jitterMs > retryAfterMs ? jitterMs : retryAfterMs;
  }

  async function retryAfter(
    next: Call,
    request: OutgoingRequest,
    context: CallContext,
    firstError: unknown,
  ): Promise<IncomingResponse> {
    let error = firstError;
    for (;;) {
      const delayMs = nextDelay(error, context);
      if (delayMs === undefined) throw error;
      if (budget !== undefined && !budget.tryWithdraw()) {
        (error as TelescopeError).retryBudgetExhausted = true;
        onEvent?.({
          type: 'budget-exhausted',
          service: context.service,
          endpoint: context.endpoint,
          code: (error as TelescopeError).code,
        });
        throw error;
      }
      if (context.instance !== undefined) context.tried = [...(context.tried ?? []), context.instance];
      context.attempt++;
      onEvent?.({
        type: 'retry',
        service: context.service,
        endpoint: context.endpoint,
        attempt: context.attempt,
        code: (error as TelescopeError).code,
        instance: (error as TelescopeError).instance,
        delayMs,
      });
      if (delayMs > 0) await sleep(clock, delayMs, context.callerSignal);
      if (context.callerAborted) {
        throw new TelescopeError(ErrorCode.ABORTED, 'call aborted by the caller while it waited to retry', {
          service: context.service,
          endpoint: context.endpoint,
          attempt: context.attempt,
          requestSent: (error as TelescopeError).requestSent,
          cause: context.callerSignal?.reason,
        });
      }
      try {
        return await next(request, context);
      } catch (failure) {
        error = failure;
      }
    }
  }

  return (inner) => {
    const next =
      hedgeDelayMs === undefined ? inner : hedged(inner, hedgeDelayMs, budget, attemptNeedsMs, clock, onEvent);
    if (maxRetries === 0) {
      return budget === undefined
        ? next
        : (request, context) => {
            budget.deposit();
            return next(request, context);
          };
    }
    return (request, context) => {
      budget?.deposit();
      return next(request, context).catch((error: unknown) => retryAfter(next, request, context, error));
    };
  };
}

/**
 * Hedging: when the first attempt has not answered after `delayMs`, a second starts on
 * another instance; the first success wins and the other is cancelled. Only idempotent calls
 * are hedged, and each hedge takes a token from the retry budget.
 */
function hedged(
  next: Call,
  delayMs: number,
  budget: RetryBudget | undefined,
  attemptNeedsMs: number,
  clock: Clock,
  onEvent: RetryLayerOptions['onEvent'],
): Call {
  const wheel = wheelOf(clock);
  return (request, context) => {
    if (!context.idempotent || context.probe) return next(request, context);
    return new Promise<IncomingResponse>((resolve, reject) => {
      const attempts: Array<{ controller: AbortController; context: CallContext; done: boolean }> = [];
      let settled = false;

      const start = () => {
        const controller = new AbortController();
        const onCallerAbort = () => controller.abort(context.callerSignal?.reason);
        context.callerSignal?.addEventListener('abort', onCallerAbort, { once: true });
        const attemptContext = context.fork(controller.signal);
        attemptContext.attempt = context.attempt + attempts.length;
        if (attempts.length > 0) {
          const first = attempts[0]?.context.instance;
          attemptContext.tried = [...(context.tried ?? []), ...(first ? [first] : [])];
        }
        const entry = { controller, context: attemptContext, done: false };
        attempts.push(entry);
        next(request, attemptContext).then(
          (response) => {
            entry.done = true;
            attemptContext.release();
            context.callerSignal?.removeEventListener('abort', onCallerAbort);
            if (settled) {
              // A loser that answered too: a streamed body it holds is cancelled (its socket freed).
              controller.abort();
              return;
            }
            settled = true;
            wheel.cancel(timer);
            finish(attemptContext);
            for (const other of attempts) if (!other.done) other.controller.abort();
            resolve(response);
          },
          (error: unknown) => {
            entry.done = true;
            attemptContext.release();
            context.callerSignal?.removeEventListener('abort', onCallerAbort);
            if (settled) return;
            // The other attempt may still answer: fail only when none is left running. A
            // first attempt failing before the hedge delay goes straight to the retry layer.
            if (attempts.some((other) => !other.done)) return;
            settled = true;
            wheel.cancel(timer);
            finish(attemptContext);
            reject(error);
          },
        );
      };

      /** Reflects the attempt that decided the call on the parent context. */
      const finish = (decided: CallContext) => {
        context.instance = decided.instance;
        context.attempt += attempts.length - 1;
        context.tried = attempts.flatMap((item) => (item.context.instance ? [item.context.instance] : []));
        // Free only if free for every attempt: each saw the instances tried before it, not the others'.
        context.anotherInstanceFree = attempts.every((item) => item.context.anotherInstanceFree);
      };

      const timer: WheelEntry = {
        wheelSlot: -1,
        wheelPrev: null,
        wheelNext: null,
        onTimer: () => {
          if (settled) return;
          const remainingMs =
            context.deadline === undefined ? Number.POSITIVE_INFINITY : context.deadline.remainingMs();
          if (remainingMs < attemptNeedsMs || context.callerAborted) return;
          if (budget !== undefined && !budget.tryWithdraw()) return;
          onEvent?.({
            type: 'hedge',
            service: context.service,
            endpoint: context.endpoint,
            instance: attempts[0]?.context.instance?.url,
          });
          start();
        },
      };
      start();
      if (!settled) wheel.schedule(timer, clock.now() + delayMs);
    });
  };
}
