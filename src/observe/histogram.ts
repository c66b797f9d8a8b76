import type { Clock } from '../core/clock.js';

/**
 * Latency histogram over a rolling window, in bounded memory.
 *
 * Log-linear buckets (HdrHistogram's idea, much smaller): values in microseconds, 8 sub-buckets
 * per power of two, so any percentile is within ~9% of the true value, from 1 µs to ~35 min.
 * The window is split into `slices`; recording touches one counter of the current slice, and a
 * slice is cleared when the window moves past it. Memory is slices × 256 counters per endpoint
 * whatever the traffic.
 */
const SUB_BUCKET_BITS = 3;
const SUB_BUCKETS = 1 << SUB_BUCKET_BITS;
const BUCKETS = 32 * SUB_BUCKETS;

function bucketOf(micros: number): number {
  if (micros < SUB_BUCKETS) return micros < 0 ? 0 : Math.floor(micros);
  const value = micros >= 2 ** 31 ? 2 ** 31 - 1 : Math.floor(micros);
  const magnitude = 31 - Math.clz32(value); // position of the highest bit
  const shift = magnitude - SUB_BUCKET_BITS;
  const sub = (value >>> shift) & (SUB_BUCKETS - 1);
  return (shift + 1) * SUB_BUCKETS + sub;
}

/** Upper bound (µs) of the values a bucket holds. */
function bucketUpperMicros(bucket: number): number {
  if (bucket < SUB_BUCKETS) return bucket;
  const shift = Math.floor(bucket / SUB_BUCKETS) - 1;
  const sub = bucket % SUB_BUCKETS;
  // Not `<<`: the top bucket's bound is 2^31 − 1, past the 32-bit signed range of shifts.
  return (SUB_BUCKETS + sub + 1) * 2 ** shift - 1;
}

export interface LatencySummary {
  count: number;
  p50Ms: number;
  p90Ms: number;
  p99Ms: number;
  maxMs: number;
}

export class RollingHistogram {
  readonly #clock: Clock;
  readonly #sliceMs: number;
  readonly #slices: number;
  /** Every slice's counters in one array, slice after slice (BUCKETS each). */
  readonly #counts: Uint32Array;
  /** Closed slices' maxima; the current slice's is {@link #currentMax} until it closes. */
  readonly #max: Float64Array;
  #currentMax = 0;
  #currentSlice: number;

  constructor(clock: Clock, windowMs: number, slices = 10) {
    this.#clock = clock;
    this.#sliceMs = windowMs / slices;
    this.#slices = slices;
    this.#counts = new Uint32Array(slices * BUCKETS);
    this.#max = new Float64Array(slices);
    this.#currentSlice = Math.floor(clock.now() / this.#sliceMs);
  }

  /** Records one latency in milliseconds. */
  record(ms: number): void {
    const index = this.#rotate();
    this.#counts[index * BUCKETS + bucketOf(ms * 1000)]! += 1;
    if (ms > this.#currentMax) this.#currentMax = ms;
  }

  /** Percentiles over the window. */
  summary(): LatencySummary {
    const { buckets, maxMs } = this.merged();
    return summarizeBuckets(buckets, maxMs);
  }

  /**
   * The window's counts, sparse: `[upper bound in µs, count]` for each non-empty bucket, in
   * increasing order, and the window's maximum. Every process uses the same bounds, so windows
   * of several processes merge by adding counts per bound ({@link mergeBuckets}).
   */
  merged(): { buckets: Array<[number, number]>; maxMs: number } {
    this.#rotate();
    const merged = new Float64Array(BUCKETS);
    let maxMs = this.#currentMax;
    for (let slice = 0; slice < this.#slices; slice++) {
      const offset = slice * BUCKETS;
      for (let bucket = 0; bucket < BUCKETS; bucket++) {
        const value = this.#counts[offset + bucket] as number;
        if (value !== 0) merged[bucket]! += value;
      }
      if (this.#max[slice]! > maxMs) maxMs = this.#max[slice]!;
    }
    const buckets: Array<[number, number]> = [];
    for (let bucket = 0; bucket < BUCKETS; bucket++) {
      if (merged[bucket] !== 0) buckets.push([bucketUpperMicros(bucket), merged[bucket] as number]);
    }
    return { buckets, maxMs };
  }

  /** Moves the window to now (clearing the slices it passed); returns the current slice's index. */
  #rotate(): number {
    const slice = Math.floor(this.#clock.now() / this.#sliceMs);
    const slices = this.#slices;
    const elapsed = slice - this.#currentSlice;
    if (elapsed > 0) {
      this.#max[this.#currentSlice % slices] = this.#currentMax;
      this.#currentMax = 0;
      for (let step = 1; step <= Math.min(elapsed, slices); step++) {
        const index = (this.#currentSlice + step) % slices;
        this.#counts.fill(0, index * BUCKETS, (index + 1) * BUCKETS);
        this.#max[index] = 0;
      }
      this.#currentSlice = slice;
    }
    return slice % slices;
  }
}

/** Percentiles of sparse `[upper bound µs, count]` buckets in increasing order, capped at `maxMs`. */
export function summarizeBuckets(buckets: ReadonlyArray<readonly [number, number]>, maxMs: number): LatencySummary {
  let count = 0;
  for (const [, value] of buckets) count += value;
  const at = (quantile: number) => {
    if (count === 0) return 0;
    const rank = Math.ceil(quantile * count);
    let seen = 0;
    for (const [upperMicros, value] of buckets) {
      seen += value;
      if (seen >= rank) return Math.min(upperMicros / 1000, maxMs);
    }
    return maxMs;
  };
  return { count, p50Ms: at(0.5), p90Ms: at(0.9), p99Ms: at(0.99), maxMs };
}

/** Sums sparse bucket lists (from several processes) by bound, in increasing order. */
export function mergeBuckets(lists: ReadonlyArray<ReadonlyArray<readonly [number, number]>>): Array<[number, number]> {
  const byBound = new Map<number, number>();
  for (const list of lists) for (const [bound, count] of list) byBound.set(bound, (byBound.get(bound) ?? 0) + count);
  return [...byBound].sort((a, b) => a[0] - b[0]);
}
