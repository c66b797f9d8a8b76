/**
 * Bounded latency histogram for the simulator's edge samples: log-linear buckets over 10 µs
 * units, 64 sub-buckets per power of two, so a percentile is within 1.6% of the exact value
 * (exact below 1.28 ms) whatever the number of samples; the maximum is kept exactly.
 */
const UNIT_PER_MS = 100;
const SUB_BITS = 6;
const SUB = 1 << SUB_BITS;
const LINEAR = 2 * SUB;
/** Enough buckets for any value below 2^31 units (~6 h). */
const BUCKETS = LINEAR + 24 * SUB;

function bucketOf(units: number): number {
  if (units < LINEAR) return units < 0 ? 0 : units;
  const value = units >= 2 ** 31 ? 2 ** 31 - 1 : units;
  const magnitude = 31 - Math.clz32(value);
  const shift = magnitude - SUB_BITS;
  return LINEAR + (shift - 1) * SUB + ((value >>> shift) & (SUB - 1));
}

/** Largest value (ms) a bucket holds. */
function upperMs(bucket: number): number {
  if (bucket < LINEAR) return bucket / UNIT_PER_MS;
  const shift = Math.floor((bucket - LINEAR) / SUB) + 1;
  const sub = (bucket - LINEAR) % SUB;
  return ((SUB + sub + 1) * 2 ** shift - 1) / UNIT_PER_MS;
}

export class LatencyHistogram {
  readonly #counts = new Float64Array(BUCKETS);
  #count = 0;
  #max = 0;

  get count(): number {
    return this.#count;
  }

  get maxMs(): number {
    return this.#max;
  }

  /** Records `times` samples of `ms`. */
  record(ms: number, times = 1): void {
    if (times <= 0) return;
    this.#counts[bucketOf(Math.round(ms * UNIT_PER_MS))]! += times;
    this.#count += times;
    if (ms > this.#max) this.#max = ms;
  }

  /** Adds this histogram's samples to `target`. */
  mergeInto(target: LatencyHistogram): void {
    target.#add(this.#counts, this.#count, this.#max);
  }

  #add(counts: Float64Array, count: number, max: number): void {
    for (let bucket = 0; bucket < BUCKETS; bucket++) this.#counts[bucket]! += counts[bucket]!;
    this.#count += count;
    if (max > this.#max) this.#max = max;
  }

  /** The sample of rank ⌈q·n⌉ (as the real lab's sorted-array percentile), within 1.6%. */
  percentile(quantile: number): number {
    const count = this.#count;
    if (count === 0) return 0;
    const rank = Math.max(1, Math.ceil(quantile * count));
    let seen = 0;
    const counts = this.#counts;
    for (let bucket = 0; bucket < BUCKETS; bucket++) {
      seen += counts[bucket]!;
      if (seen >= rank) return Math.min(upperMs(bucket), this.#max);
    }
    return this.#max;
  }
}
