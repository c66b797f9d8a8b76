/**
 * Deadline layer: fixes the call's budget before any work.
 *
 * Order: below observe/fallback, above breaker, bulkhead, retry and every attempt, so that
 * they all share one budget. budget = min(explicit or ambient deadline, now + timeoutMs).
 * A call whose budget cannot fit one attempt (`minAttemptMs`) fails at once with
 * `DEADLINE_EXCEEDED` and does no I/O.
 */
import type { Layer } from '../core/call.js';
import type { Clock } from '../core/clock.js';
import { Deadline } from '../core/deadline.js';
import { ErrorCode, invalidOption, TelescopeError } from '../core/errors.js';
import { ambientDeadline, deadlineStorage, markAmbientDeadlinesUsed } from './storage.js';

/** Options of the deadline layer (also accepted by `createClient`). */
export interface DeadlineOptions {
  /**
   * Below this many milliseconds of budget an attempt is not started: the call fails with
   * `DEADLINE_EXCEEDED` without I/O. @default 20
   */
  minAttemptMs?: number;
}

export const deadlineDefaults = { minAttemptMs: 20 } as const;

/**
 * The deadline layer.
 *
 * @example
 * compose(deadline({ minAttemptMs: 20 }), attempt(), ...)
 */
export function deadline(options: DeadlineOptions = {}): Layer {
  const minAttemptMs = nonNegative('minAttemptMs', options.minAttemptMs, deadlineDefaults.minAttemptMs);
  return (next) => (request, context) => {
    const own = Deadline.after(context.timeoutMs, context.clock);
    const inherited = context.deadline ?? ambientDeadline();
    const budget = inherited === undefined || own.at < inherited.at ? own : inherited;
    context.deadline = budget;
    const remainingMs = budget.at - context.clock.now();
    if (remainingMs < minAttemptMs) {
      return Promise.reject(
        new TelescopeError(
          ErrorCode.DEADLINE_EXCEEDED,
          `deadline exceeded before the call started: ${Math.max(0, Math.round(remainingMs))} ms left, an attempt needs ${minAttemptMs} ms (minAttemptMs)`,
          { service: context.service, endpoint: context.endpoint, requestSent: false },
        ),
      );
    }
    return next(request, context);
  };
}

/**
 * Runs `fn` with a deadline `ms` from now (or the given `Deadline`) as the ambient budget:
 * every telescope call made inside, however deep, shares it. A nested `withDeadline` can
 * only shorten the budget, never extend it.
 *
 * @example
 * await withDeadline(3000, async () => {
 *   await movies.getMovie({ id: 1 }); // budget: at most what is left of the 3 s
 * });
 */
export function withDeadline<T>(budget: number | Deadline, fn: () => T, clock?: Clock): T {
  markAmbientDeadlinesUsed();
  const outer = deadlineStorage.getStore();
  const inner =
    typeof budget === 'number' && Number.isFinite(budget)
      ? Deadline.after(budget, clock ?? outer?.clock)
      : budget instanceof Deadline
        ? budget
        : invalidOption('withDeadline budget', 'a number of milliseconds or a Deadline', budget);
  return deadlineStorage.run(Deadline.min(inner, outer), fn);
}

/** The ambient deadline set by `withDeadline` or the server middleware; undefined outside one. */
export function currentDeadline(): Deadline | undefined {
  return ambientDeadline();
}

function nonNegative(name: string, value: number | undefined, fallback: number): number {
  if (value === undefined) return fallback;
  if (typeof value !== 'number' || !Number.isFinite(value) || value < 0) {
    invalidOption(name, 'a finite number ≥ 0', value);
  }
  return value;
}
