/**
 * Client-side adaptive throttling (Google SRE book, "Handling Overload"): each endpoint counts,
 * over a rolling window, the requests the application made and the ones the dependency
 * accepted, and rejects a new request locally (`THROTTLED`) with probability
 *
 *     max(0, (requests − k · accepts) / (requests + 1))
 *
 * A dependency that accepts at least 1/k of what it is sent sees no throttling at all; one that
 * accepts less gets about k times what it accepted, so it keeps receiving a trickle of real
 * traffic (and its recovery is seen) while the excess never leaves the process.
 *
 * Counting: a request is counted when it ends, not when it starts, so that calls still in
 * flight never look like requests without an accept (a burst of 1,000 calls to a fresh client
 * must not throttle itself): a rejected request counts at once (rejected ones count too, as in
 * the book, so a dependency that accepts nothing is sent less and less), a sent one when its
 * outcome is known. An accept is an answer from the dependency that is not a failure signal: a
 * 2xx, or a 4xx other than 429 (the breaker's `success`). 5xx, 429, timeouts and connection
 * failures are requests without an accept. A call that taught nothing about the dependency
 * (aborted by the caller, shed by the bulkhead, too little budget to try, client closed) is not
 * counted at all.
 *
 * The window is a ring of buckets on the client's clock, advanced lazily by the calls
 * themselves: a check is a clock read and a few arithmetic operations, no allocation, no timer.
 * The throttle lives in the breaker layer, which owns one per endpoint: calls the circuit fails
 * fast are not counted, half-open probes are never throttled, and the window is cleared when
 * probes close the circuit (the dependency just proved healthy; its outage must not keep
 * throttling the recovery).
 */
import { invalidOption } from '../core/errors.js';

/** `throttle` option of `createClient`. */
export interface ThrottleOptions {
  /**
   * Multiplier of accepts: requests are throttled once they exceed `k` times what the
   * dependency accepted in the window. 2 lets through twice what is accepted (the SRE book's
   * choice); 1.1 is more aggressive. At least 1. @default 2
   */
  k?: number;
  /** Length of the rolling window, in ms (one bucket per second). At least 1000. @default 120000 */
  windowMs?: number;
  /**
   * No throttling while the window holds fewer requests than this: one failure of a fresh
   * client must not halve its traffic. An integer ≥ 0. @default 20
   */
  minRequests?: number;
}

export const throttleDefaults = {
  k: 2,
  windowMs: 120_000,
  minRequests: 20,
} as const;

/** Validated throttle settings. */
export interface ThrottleSettings {
  k: number;
  windowMs: number;
  minRequests: number;
}

/** Checks `throttle` options and fills in defaults; throws `INVALID_OPTION` naming the option. */
export function throttleSettings(options: ThrottleOptions): ThrottleSettings {
  if (typeof options !== 'object' || options === null) invalidOption('throttle', 'an object or false', options);
  const k = options.k ?? throttleDefaults.k;
  const windowMs = options.windowMs ?? throttleDefaults.windowMs;
  const minRequests = options.minRequests ?? throttleDefaults.minRequests;
  if (!(typeof k === 'number' && Number.isFinite(k) && k >= 1)) invalidOption('throttle.k', 'a finite number ≥ 1', k);
  if (!(typeof windowMs === 'number' && Number.isFinite(windowMs) && windowMs >= 1000 && windowMs <= 3_600_000)) {
    invalidOption('throttle.windowMs', 'a number of ms in [1000, 3600000]', windowMs);
  }
  if (!(Number.isInteger(minRequests) && minRequests >= 0)) {
    invalidOption('throttle.minRequests', 'an integer ≥ 0', minRequests);
  }
  return { k, windowMs, minRequests };
}

/**
 * One endpoint's throttle: requests and accepts over a ring of per-second buckets. The
 * current bucket's counts are fields, written into the ring when time moves to the next
 * bucket: a call touches this object alone, not the ring's two arrays (what a call touches
 * is what it costs when the process holds many clients, as the storm simulator does).
 */
export class Throttle {
  k: number;
  minRequests: number;
  private readonly bucketMs: number;
  /** Closed buckets' counts; the current bucket's slot is stale until the bucket closes. */
  private readonly requests: Uint32Array;
  private readonly accepts: Uint32Array;
  private bucket = 0;
  /** Index of the current bucket in time (now / bucketMs, floored). */
  private slot = Number.NEGATIVE_INFINITY;
  /** The current bucket's counts. */
  private bucketRequests = 0;
  private bucketAccepts = 0;
  /** Every bucket's counts, the current one included. */
  private requestTotal = 0;
  private acceptTotal = 0;

  constructor(settings: ThrottleSettings) {
    this.k = settings.k;
    this.minRequests = settings.minRequests;
    const buckets = Math.ceil(settings.windowMs / 1000);
    this.bucketMs = settings.windowMs / buckets;
    this.requests = new Uint32Array(buckets);
    this.accepts = new Uint32Array(buckets);
  }

  /**
   * Takes new `k` and `minRequests` in place (`client.configure()`), keeping the window's
   * counts; false, changing nothing, when the window's length differs (that needs a new throttle).
   */
  adopt(settings: ThrottleSettings): boolean {
    if (Math.abs(this.requests.length * this.bucketMs - settings.windowMs) > 1e-6) return false;
    this.k = settings.k;
    this.minRequests = settings.minRequests;
    return true;
  }

  /** Requests counted in the window. */
  get requestCount(): number {
    return this.requestTotal;
  }

  /** Accepts counted in the window. */
  get acceptCount(): number {
    return this.acceptTotal;
  }

  /** The probability that a request made now is rejected (without counting one). */
  rejectProbability(now: number): number {
    this.advance(now);
    return Math.max(0, this.probability());
  }

  /**
   * Whether to send a request now; a rejected one is counted at once. `random` is drawn only
   * when the rejection probability is above 0, so a healthy dependency costs no random number.
   */
  admit(now: number, random: () => number): boolean {
    this.advance(now);
    const p = this.probability();
    if (p <= 0 || random() >= p) return true;
    this.bucketRequests++;
    this.requestTotal++;
    return false;
  }

  /** A request sent ended with an accept (counted in the current bucket). */
  accepted(): void {
    this.bucketRequests++;
    this.bucketAccepts++;
    this.requestTotal++;
    this.acceptTotal++;
  }

  /** A request sent ended without an accept: 5xx, 429, a timeout, a connection failure. */
  refused(): void {
    this.bucketRequests++;
    this.requestTotal++;
  }

  /** Empties the window. */
  reset(): void {
    this.requests.fill(0);
    this.accepts.fill(0);
    this.bucketRequests = 0;
    this.bucketAccepts = 0;
    this.requestTotal = 0;
    this.acceptTotal = 0;
  }

  private probability(): number {
    const requests = this.requestTotal;
    if (requests < this.minRequests) return 0;
    return (requests - this.k * this.acceptTotal) / (requests + 1);
  }

  private advance(now: number): void {
    const slot = Math.floor(now / this.bucketMs);
    if (slot === this.slot) return;
    const length = this.requests.length;
    const steps = slot - this.slot >= length ? length : slot - this.slot;
    this.slot = slot;
    if (steps <= 0) return;
    this.requests[this.bucket] = this.bucketRequests;
    this.accepts[this.bucket] = this.bucketAccepts;
    this.bucketRequests = 0;
    this.bucketAccepts = 0;
    for (let step = 0; step < steps; step++) {
      const next = this.bucket + 1 === length ? 0 : this.bucket + 1;
      this.requestTotal -= this.requests[next] as number;
      this.acceptTotal -= this.accepts[next] as number;
      this.requests[next] = 0;
      this.accepts[next] = 0;
      this.bucket = next;
    }
  }
}
