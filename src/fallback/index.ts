/**
 * Fallback layer: when a call fails because the dependency is unavailable (circuit open,
 * bulkhead full, no healthy instance, deadline, transport failures, 5xx), answer with the
 * endpoint's fallback instead: a value, or a function of the error and the params.
 *
 * Order: outermost of the stack (below the cache), so it covers every failure below it. A
 * fallback is bounded by the call's deadline; one that throws or hangs surfaces the original
 * error, with the fallback's error as its `cause`.
 */
import type { CallContext, IncomingResponse, Layer } from '../core/call.js';
import { type WheelEntry, wheelOf } from '../core/clock.js';
import { ErrorCode, isTelescopeError, type TelescopeError } from '../core/errors.js';

/** A fallback: a value, or a function of the error and the call's params. */
export type Fallback<Response, Params = unknown> =
  | Response
  | ((error: TelescopeError, params: Params) => Response | Promise<Response>);

/** Errors a fallback answers: the dependency is unavailable, not the request wrong. */
export function fallbackApplies(error: unknown): error is TelescopeError {
  if (!isTelescopeError(error)) return false;
  switch (error.code) {
    case ErrorCode.CIRCUIT_OPEN:
    case ErrorCode.THROTTLED:
    case ErrorCode.BULKHEAD_FULL:
    case ErrorCode.NO_HEALTHY_INSTANCE:
    case ErrorCode.DEADLINE_EXCEEDED:
    case ErrorCode.ATTEMPT_TIMEOUT:
    case ErrorCode.CONNECT_FAILED:
    case ErrorCode.CONNECTION_RESET:
      return true;
    case ErrorCode.HTTP_STATUS:
      return (error as unknown as { status: number }).status >= 500;
    case ErrorCode.INVALID_RESPONSE:
      // Broken HTTP (retryable) says the dependency is unwell; a schema mismatch does not.
      return error.retryable;
    default:
      return false;
  }
}

export interface FallbackEvent {
  service: string;
  endpoint: string;
  /** Code of the error the fallback answered. */
  code: string;
  /** Whether the fallback itself failed (threw, or outlived the deadline). */
  failed: boolean;
}

/**
 * The fallback layer, for the endpoints that declare one.
 *
 * @example
 * fallback(new Map([['getMovie', { title: 'unavailable' }]]), { onFallback })
 */
export function fallback(
  fallbacks: ReadonlyMap<string, Fallback<unknown>>,
  environment: { onFallback?: (event: FallbackEvent) => void },
): Layer {
  const { onFallback } = environment;
  return (next) => (request, context) => {
    if (!fallbacks.has(context.endpoint)) return next(request, context);
    return next(request, context).catch(async (error: unknown): Promise<IncomingResponse> => {
      if (!fallbackApplies(error)) throw error;
      const configured = fallbacks.get(context.endpoint);
      try {
        let value: unknown;
        if (typeof configured === 'function') {
          const produced = (configured as (error: TelescopeError, params: unknown) => unknown)(error, context.params);
          value = produced instanceof Promise ? await withinDeadline(produced, context) : produced;
        } else {
          value = configured;
        }
        onFallback?.({ service: context.service, endpoint: context.endpoint, code: error.code, failed: false });
        return { status: 200, headers: {}, body: value, instance: 'fallback', fromFallback: true };
      } catch (fallbackError) {
        onFallback?.({ service: context.service, endpoint: context.endpoint, code: error.code, failed: true });
        // The original failure is what the caller needs; the fallback's failure explains the rest.
        Object.defineProperty(error, 'cause', { value: fallbackError, configurable: true, writable: true });
        throw error;
      }
    });
  };
}

/**
 * Settles like `produced`, or rejects when the call's deadline passes first. The deadline's
 * wheel entry is removed as soon as the fallback settles, so a quick fallback leaves nothing
 * pending.
 */
function withinDeadline(produced: Promise<unknown>, context: CallContext): Promise<unknown> {
  const deadline = context.deadline;
  if (deadline === undefined) return produced;
  const wheel = wheelOf(context.clock);
  return new Promise((resolve, reject) => {
    const timer: WheelEntry = {
      wheelSlot: -1,
      wheelPrev: null,
      wheelNext: null,
      onTimer: () => reject(new Error('the fallback did not answer within the call’s deadline')),
    };
    wheel.schedule(timer, deadline.at);
    produced.then(
      (value) => {
        wheel.cancel(timer);
        resolve(value);
      },
      (error: unknown) => {
        wheel.cancel(timer);
        reject(error);
      },
    );
  });
}
