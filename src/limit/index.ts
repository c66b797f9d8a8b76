/**
 * Adaptive concurrency limits: a limit on calls in flight that rises while latency stays near
 * its floor and falls when latency grows or calls drop (Netflix concurrency-limits, Envoy's
 * adaptive concurrency). Used by the client's bulkhead and by `concurrencyLimit()` in
 * `telescope-http/server`.
 *
 * Measurement is windowed, as Netflix's WindowedLimit: the algorithm runs once per window (at
 * least `windowSamples` calls and `clamp(2 × RTT, minWindowMs, maxWindowMs)`), so one slow
 * call, or a GC pause that delays every call at once, moves the limit by one step and not by
 * one step per call. The window's RTT is Little's law, `time-integral of calls in flight ÷
 * throughput`, with the throughput taken as the mean of calls admitted and calls completed in
 * the window (so a window in which the calls in flight grow, as at start-up, is not read as
 * slow): the limiter keeps no per-call timestamp, so a call costs two clock reads and a few
 * additions, and allocates nothing.
 */
import type { Clock } from '../core/clock.js';
import { invalidOption } from '../core/errors.js';
import { Aimd, Gradient2, type LimitAlgorithm, type LimitWindow, Vegas } from './algorithms.js';

export { Aimd, Gradient2, type LimitAlgorithm, type LimitWindow, Vegas } from './algorithms.js';

/** The adaptive limit algorithms by name. */
export const limitAlgorithms = ['gradient2', 'vegas', 'aimd'] as const;
export type LimitAlgorithmName = (typeof limitAlgorithms)[number];

/** Options of an {@link AdaptiveLimit}. */
export interface AdaptiveLimitOptions {
  algorithm: LimitAlgorithmName;
  /** The limit never falls below this. */
  minConcurrent: number;
  /** The limit never rises above this. */
  maxConcurrent: number;
  /** Where the limit starts. @default clamp(100, minConcurrent, maxConcurrent) */
  initialConcurrent?: number;
  clock: Clock;
  /** Shortest window. @default 100 */
  minWindowMs?: number;
  /** Longest window. @default 1000 */
  maxWindowMs?: number;
  /** Calls a window needs before it counts. @default 10 */
  windowSamples?: number;
  /** Called when the (integer) limit changes. */
  onChange?: (limit: number) => void;
  /**
   * Gradient2: take a decrease at once instead of smoothing it, for a limit that may start far
   * above the capacity (server limits). @default false
   */
  decreaseAtOnce?: boolean;
}

/** Creates the algorithm object of `name`. */
export function limitAlgorithm(name: LimitAlgorithmName, options: { decreaseAtOnce?: boolean } = {}): LimitAlgorithm {
  switch (name) {
    case 'gradient2':
      return new Gradient2(options);
    case 'vegas':
      return new Vegas();
    case 'aimd':
      return new Aimd();
  }
}

/**
 * Checks the shared limit options (`adaptive`, `minConcurrent`, `maxConcurrent`, `maxQueue`)
 * and throws `INVALID_OPTION` naming `prefix.option` and the allowed range.
 */
export function checkLimitOptions(
  prefix: string,
  options: { adaptive?: unknown; minConcurrent?: unknown; maxConcurrent?: unknown; maxQueue?: unknown },
  defaults: { minConcurrent: number; maxConcurrent: number; maxQueue: number },
): { algorithm: LimitAlgorithmName; minConcurrent: number; maxConcurrent: number; maxQueue: number } {
  const algorithm = options.adaptive;
  if (!limitAlgorithms.includes(algorithm as LimitAlgorithmName)) {
    invalidOption(`${prefix}adaptive`, `one of ${limitAlgorithms.map((name) => `'${name}'`).join(', ')}`, algorithm);
  }
  const integer = (name: string, value: unknown, min: number): number => {
    if (!(typeof value === 'number' && Number.isInteger(value) && value >= min && value <= 1_000_000)) {
      invalidOption(`${prefix}${name}`, `an integer in [${min}, 1000000]`, value);
    }
    return value;
  };
  const minConcurrent = integer('minConcurrent', options.minConcurrent ?? defaults.minConcurrent, 1);
  const maxConcurrent = integer('maxConcurrent', options.maxConcurrent ?? defaults.maxConcurrent, 1);
  if (minConcurrent > maxConcurrent) {
    invalidOption(`${prefix}minConcurrent`, `an integer ≤ maxConcurrent (${maxConcurrent})`, minConcurrent);
  }
  const maxQueue = integer('maxQueue', options.maxQueue ?? defaults.maxQueue, 0);
  return { algorithm: algorithm as LimitAlgorithmName, minConcurrent, maxConcurrent, maxQueue };
}

/**
 * A concurrency limit learned from the calls it admits. The owner checks `inflight < limit`,
 * calls {@link acquire} when a call takes a slot, {@link release} when it gives it back, and
 * {@link blocked} when a call found no slot (it waits or is shed).
 *
 * @example
 * const limit = new AdaptiveLimit({ algorithm: 'gradient2', minConcurrent: 20, maxConcurrent: 1000, clock });
 * if (limit.inflight < limit.limit) { limit.acquire(); await work(); limit.release(false); }
 */
export class AdaptiveLimit {
  // What every call reads and writes (acquire, release) comes first: with many clients in one
  // process the object is cold at each call, and these fit in its first cache line or so.
  /** Calls allowed in flight now (an integer in [minConcurrent, maxConcurrent]). */
  limit: number;
  /** Calls in flight now. */
  inflight = 0;
  readonly #clock: Clock;
  /** ∫ inflight dt over the window (call-milliseconds). */
  #area = 0;
  #lastAt: number;
  #completed = 0;
  #admitted = 0;
  #drops = 0;
  #maxInflight = 0;
  #windowEndsAt: number;
  readonly #windowSamples: number;
  /** The algorithm's estimate (not rounded). */
  estimate: number;
  /** Windows completed so far. */
  windows = 0;
  /** RTT of the last window (ms), 0 before the first. */
  rttMs = 0;
  /**
   * The last window wanted more than the limit and the algorithm did not raise it: the
   * dependency is at its capacity (latency grew or calls dropped). While the limit grows (a
   * burst, slow start), a queue drains faster than the current limit says.
   */
  congested = false;
  readonly minConcurrent: number;
  readonly maxConcurrent: number;
  readonly algorithm: LimitAlgorithm;
  readonly #minWindowMs: number;
  readonly #maxWindowMs: number;
  readonly #onChange: ((limit: number) => void) | undefined;
  readonly #window: LimitWindow = { rttMs: 0, maxInflight: 0, dropped: false, dropShare: 0, limited: false };
  #limited = false;
  #windowMs: number;

  constructor(options: AdaptiveLimitOptions) {
    this.minConcurrent = options.minConcurrent;
    this.maxConcurrent = options.maxConcurrent;
    this.algorithm = limitAlgorithm(options.algorithm, { decreaseAtOnce: options.decreaseAtOnce });
    this.#clock = options.clock;
    this.#minWindowMs = options.minWindowMs ?? 100;
    this.#maxWindowMs = options.maxWindowMs ?? 1000;
    this.#windowSamples = options.windowSamples ?? 10;
    this.#onChange = options.onChange;
    this.estimate = this.#clamp(options.initialConcurrent ?? 100);
    this.limit = Math.floor(this.estimate);
    this.#lastAt = this.#clock.now();
    this.#windowMs = this.#minWindowMs;
    this.#windowEndsAt = this.#lastAt + this.#minWindowMs;
  }

  /** A call takes a slot. */
  acquire(): void {
    const now = this.#clock.now();
    this.#area += this.inflight * (now - this.#lastAt);
    this.#lastAt = now;
    this.#admitted++;
    if (++this.inflight > this.#maxInflight) this.#maxInflight = this.inflight;
  }

  /** A call gives its slot back; `dropped` for a timeout, an overload answer or a reset. */
  release(dropped: boolean): void {
    const now = this.#clock.now();
    this.#area += this.inflight * (now - this.#lastAt);
    this.#lastAt = now;
    if (this.#completed === 0) {
      // A window starts at its first completion: the time before it (calls of an idle or new
      // client still on their way) would read as latency.
      this.#area = 0;
      this.#admitted = 0;
      this.#windowEndsAt = now + this.#windowMs;
    }
    this.inflight--;
    this.#completed++;
    if (dropped) this.#drops++;
    if (now >= this.#windowEndsAt && this.#completed >= this.#windowSamples) this.#endWindow();
  }

  /** A call found no free slot. */
  blocked(): void {
    this.#limited = true;
  }

  #endWindow(): void {
    const window = this.#window;
    const rttMs = (2 * this.#area) / (this.#admitted + this.#completed);
    window.rttMs = rttMs > 0 ? rttMs : 0.001;
    window.maxInflight = this.#maxInflight;
    window.dropped = this.#drops * 100 >= this.#completed && this.#drops > 0;
    window.dropShare = this.#drops / this.#completed;
    window.limited = this.#limited;
    this.rttMs = window.rttMs;
    this.windows++;
    const previous = this.estimate;
    this.estimate = this.#clamp(this.algorithm.update(previous, window));
    this.congested = window.limited && !(this.estimate > previous);
    this.#area = 0;
    this.#completed = 0;
    this.#admitted = 0;
    this.#drops = 0;
    this.#maxInflight = this.inflight;
    this.#limited = false;
    const length = 2 * rttMs;
    this.#windowMs =
      length < this.#minWindowMs ? this.#minWindowMs : length > this.#maxWindowMs ? this.#maxWindowMs : length;
    const limit = Math.floor(this.estimate);
    if (limit !== this.limit) {
      this.limit = limit;
      this.#onChange?.(limit);
    }
  }

  #clamp(value: number): number {
    return value < this.minConcurrent ? this.minConcurrent : value > this.maxConcurrent ? this.maxConcurrent : value;
  }
}
