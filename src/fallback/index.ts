/**
 * Fallback layer: when a call fails because the dependency is unavailable (circuit open,
 * bulkhead full, no healthy instance, deadline, transport failures, 5xx), answer with the
 * endpoint's fallback instead: a value, or a function of the error and the params.
 *
 * Order: outermost of the stack (below the cache), so it covers every failure below it. A
 * fallback is bounded by the call's deadline; one that throws or hangs surfaces the original
 * error, with the fallback's error as its `cause`.
 */
import type { IncomingResponse, Layer } from '../core/call.js';
import { sleep } from '../core/clock.js';
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
    case ErrorCode.BULKHEAD_FULL:
    case ErrorCode.NO_HEALTHY_INSTANCE:
    case ErrorCode.DEADLINE_EXCEEDED:
    case ErrorCode.ATTEMPT_TIMEOUT:
    case ErrorCode.CONNECT_FAILED:
    case ErrorCode.CONNECTION_RESET:
      return true;
    case ErrorCode.HTTP_STATUS:
      return (error as unknown as { status: number }).status >= 500;
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
          value =
            produced instanceof Promise
              ? await Promise.race([produced, deadlinePassed(context.deadline, context.clock)])
              : produced;
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

async function deadlinePassed(
  deadline: { remainingMs(): number } | undefined,
  clock: Parameters<typeof sleep>[0],
): Promise<never> {
  if (deadline === undefined) return new Promise<never>(() => {});
  await sleep(clock, deadline.remainingMs());
  throw new Error('the fallback did not answer within the call’s deadline');
}
