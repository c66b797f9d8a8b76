import type { Clock } from '../core/clock.js';
import { invalidOption } from '../core/errors.js';

/**
 * Why budgets and not max retries?
 *
 * `maxRetries: 1` bounds what one call can do, not what all calls do together. When a
 * dependency is down, every call fails and every call retries: load doubles exactly when the
 * dependency can least take it, and each tier above multiplies it again (a retry storm). A
 * budget bounds the total instead: retries may add at most `ratio` of the recent request rate
 * (plus a small floor, so a quiet client can still retry). When most calls succeed, the
 * budget is never felt; when everything fails, retries stop at `ratio` and the outage is not
 * amplified. This is the design of Finagle's RetryBudget and tower's TpsBudget.
 */
export interface RetryBudgetOptions {
  /** Retries may add at most this fraction of recent requests. @default 0.1 */
  ratio?: number;
  /** Retries allowed per second regardless of traffic. @default 10 */
  minPerSecond?: number;
  /** How far back "recent" reaches. @default 10000 */
  windowMs?: number;
}

export const retryBudgetDefaults = { ratio: 0.1, minPerSecond: 10, windowMs: 10_000 } as const;

const BUCKETS = 10;

/**
 * A token bucket over a sliding window, in ten buckets: each request earns `ratio` of a
 * token, each retry spends one, and the floor adds `minPerSecond` per second of window.
 * A deposit costs one clock read and one addition.
 */
export class RetryBudget {
  readonly ratio: number;
  readonly minPerSecond: number;
  readonly windowMs: number;
  readonly #clock: Clock;
  readonly #bucketMs: number;
  readonly #deposits = new Float64Array(BUCKETS);
  readonly #withdrawals = new Float64Array(BUCKETS);
  #currentBucket = 0;

  constructor(clock: Clock, options: RetryBudgetOptions = {}) {
    this.ratio = options.ratio ?? retryBudgetDefaults.ratio;
    this.minPerSecond = options.minPerSecond ?? retryBudgetDefaults.minPerSecond;
    this.windowMs = options.windowMs ?? retryBudgetDefaults.windowMs;
    if (!(this.ratio >= 0 && this.ratio <= 1000))
      invalidOption('retry.budget.ratio', 'a number in [0, 1000]', this.ratio);
    if (!(Number.isFinite(this.minPerSecond) && this.minPerSecond >= 0)) {
      invalidOption('retry.budget.minPerSecond', 'a finite number ≥ 0', this.minPerSecond);
    }
    if (!(Number.isFinite(this.windowMs) && this.windowMs >= 1000)) {
      invalidOption('retry.budget.windowMs', 'a finite number ≥ 1000', this.windowMs);
    }
    this.#clock = clock;
    this.#bucketMs = this.windowMs / BUCKETS;
    this.#currentBucket = Math.floor(clock.now() / this.#bucketMs);
  }

  /** Records a request (every call, retried or not). */
  deposit(): void {
    this.#deposits[this.#rotate()]! += 1;
  }

  /** Takes a token for one retry or hedge; false when the budget is spent. */
  tryWithdraw(): boolean {
    const index = this.#rotate();
    if (this.#balance() < 1) return false;
    this.#withdrawals[index]! += 1;
    return true;
  }

  /** Whole tokens left now. */
  tokens(): number {
    this.#rotate();
    return Math.max(0, Math.floor(this.#balance()));
  }

  #balance(): number {
    let requests = 0;
    let retries = 0;
    for (let index = 0; index < BUCKETS; index++) {
      requests += this.#deposits[index]!;
      retries += this.#withdrawals[index]!;
    }
    // Counts stay integers; the epsilon keeps 0.1 × 100 from landing just below 10.
    return (this.minPerSecond * this.windowMs) / 1000 + this.ratio * requests - retries + 1e-9;
  }

  /** Moves the window to now, clearing buckets that fell out of it; returns the current index. */
  #rotate(): number {
    const bucket = Math.floor(this.#clock.now() / this.#bucketMs);
    const elapsed = bucket - this.#currentBucket;
    if (elapsed > 0) {
      const clear = Math.min(elapsed, BUCKETS);
      for (let step = 1; step <= clear; step++) {
        const index = (this.#currentBucket + step) % BUCKETS;
        this.#deposits[index] = 0;
        this.#withdrawals[index] = 0;
      }
      this.#currentBucket = bucket;
    }
    return bucket % BUCKETS;
  }
}
