/**
 * Attempt layer: gives each attempt its own timeout inside the call's budget and tells the
 * next hop how long it has.
 *
 * Order: innermost before the transport (below retry and balance), so that every attempt,
 * including a retry, is measured against what is left of the budget when it starts.
 *
 * attempt timeout = min(attemptTimeoutMs, remaining budget − reserveMs). The reserve is kept
 * so that after a downstream timeout this hop can still answer its own caller. The outgoing
 * deadline header carries the attempt timeout minus the reserve once more, so the callee
 * gives up (and answers) before this hop stops waiting: budgets strictly shrink hop by hop.
 */
import type { CallContext, IncomingResponse, Layer, OutgoingRequest } from '../core/call.js';
import { channels } from '../core/channels.js';
import { ErrorCode, invalidOption, TelescopeError } from '../core/errors.js';

/** Options of the attempt layer (also accepted by `createClient`). */
export interface AttemptOptions {
  /** Upper bound of one attempt; unset means the whole remaining budget. @default undefined */
  attemptTimeoutMs?: number | undefined;
  /** Milliseconds of the budget kept back at this hop to answer its caller. @default 10 */
  reserveMs?: number;
  /** Below this many milliseconds an attempt is not started (`DEADLINE_EXCEEDED`). @default 20 */
  minAttemptMs?: number;
  /** Header that carries the callee's budget; `false` to not send one. @default 'x-request-timeout-ms' */
  deadlineHeader?: string | false;
  /** Header that carries the 1-based attempt number, so servers can see retries; `false` for none. @default 'x-request-attempt' */
  attemptHeader?: string | false;
}

export const attemptDefaults = {
  reserveMs: 10,
  minAttemptMs: 20,
  deadlineHeader: 'x-request-timeout-ms',
  attemptHeader: 'x-request-attempt',
} as const;

/** Attempt numbers as header values, made once: the hot path writes a string it does not build. */
const attemptNumbers: readonly string[] = Array.from({ length: 16 }, (_, index) => String(index));

/**
 * The attempt layer.
 *
 * @example
 * compose(deadline(), retry(), balance(), attempt({ attemptTimeoutMs: 800, reserveMs: 10 }))
 */
export function attempt(options: AttemptOptions = {}): Layer {
  const attemptTimeoutMs = options.attemptTimeoutMs ?? Number.POSITIVE_INFINITY;
  if (!(attemptTimeoutMs > 0)) invalidOption('attemptTimeoutMs', 'a positive number', options.attemptTimeoutMs);
  const reserveMs = options.reserveMs ?? attemptDefaults.reserveMs;
  if (!(Number.isFinite(reserveMs) && reserveMs >= 0)) invalidOption('reserveMs', 'a finite number ≥ 0', reserveMs);
  const minAttemptMs = options.minAttemptMs ?? attemptDefaults.minAttemptMs;
  if (!(Number.isFinite(minAttemptMs) && minAttemptMs >= 0)) {
    invalidOption('minAttemptMs', 'a finite number ≥ 0', minAttemptMs);
  }
  const header = options.deadlineHeader === undefined ? attemptDefaults.deadlineHeader : options.deadlineHeader;
  if (header !== false && (typeof header !== 'string' || !/^[!#$%&'*+.^_`|~0-9a-z-]+$/.test(header))) {
    invalidOption('deadlineHeader', 'a lower-case HTTP header name or false', header);
  }

  const numberHeader = options.attemptHeader === undefined ? attemptDefaults.attemptHeader : options.attemptHeader;
  if (
    numberHeader !== false &&
    (typeof numberHeader !== 'string' || !/^[!#$%&'*+.^_`|~0-9a-z-]+$/.test(numberHeader))
  ) {
    invalidOption('attemptHeader', 'a lower-case HTTP header name or false', numberHeader);
  }

  return (next) => (request, context) => {
    const now = context.clock.now();
    const deadlineAt = context.deadline === undefined ? Number.POSITIVE_INFINITY : context.deadline.at;
    let timeoutMs = deadlineAt - now - reserveMs;
    context.attemptEndsBudget = true;
    if (attemptTimeoutMs < timeoutMs) {
      timeoutMs = attemptTimeoutMs;
      context.attemptEndsBudget = false;
    }
    // An attempt whose callee would get no budget at all is only a guaranteed shed: skip it.
    if (timeoutMs < minAttemptMs || (header !== false && timeoutMs - reserveMs < 1)) {
      return Promise.reject(
        new TelescopeError(
          ErrorCode.DEADLINE_EXCEEDED,
          `deadline exceeded: ${Math.max(0, Math.round(deadlineAt - now))} ms left cannot fit an attempt (minAttemptMs ${minAttemptMs}, reserveMs ${reserveMs})`,
          {
            service: context.service,
            endpoint: context.endpoint,
            attempt: context.attempt,
            requestSent: false,
          },
        ),
      );
    }
    context.attemptExpiresAt = now + timeoutMs;
    if (header !== false && timeoutMs !== Number.POSITIVE_INFINITY) {
      const calleeMs = Math.floor(timeoutMs - reserveMs);
      request.headers[header] = calleeMs > 0 ? String(calleeMs) : '0';
    }
    if (numberHeader !== false) {
      const attemptNumber = context.attempt;
      request.headers[numberHeader] = attemptNumbers[attemptNumber] ?? String(attemptNumber);
    }
    if (channels.callAttempt.hasSubscribers) {
      channels.callAttempt.publish({ context, request, instance: context.instance?.url, attempt: context.attempt });
    }
    if (!channels.attemptEnd.hasSubscribers) return next(request, context);
    return observeAttempt(next(request, context), request, context, now);
  };
}

/** Publishes `telescope:attempt:end` when an attempt settles (only while it has subscribers). */
function observeAttempt(
  pending: Promise<IncomingResponse>,
  request: OutgoingRequest,
  context: CallContext,
  startedAt: number,
): Promise<IncomingResponse> {
  const instance = context.instance?.url;
  const attempt = context.attempt;
  return pending.then(
    (response) => {
      const durationMs = context.clock.now() - startedAt;
      channels.attemptEnd.publish({ context, request, instance, attempt, durationMs, response });
      return response;
    },
    (error: unknown) => {
      const durationMs = context.clock.now() - startedAt;
      channels.attemptEnd.publish({ context, request, instance, attempt, durationMs, error });
      throw error;
    },
  );
}
