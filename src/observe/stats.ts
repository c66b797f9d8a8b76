import type { BulkheadSnapshot } from '../bulkhead/index.js';
import type { Clock } from '../core/clock.js';
import { type LatencySummary, RollingHistogram, summarizeBuckets } from './histogram.js';

/**
 * Counts per slice of a rolling window (requests, failures): bounded, one add per event. The
 * current slice's count is a field, written into the ring when the window moves on, so an add
 * touches this object alone.
 */
export class RollingCounter {
  readonly #clock: Clock;
  readonly #sliceMs: number;
  /** Closed slices' counts; the current slice's entry is 0 until the window moves past it. */
  readonly #counts: Float64Array;
  #currentSlice: number;
  #current = 0;

  constructor(clock: Clock, windowMs: number, slices = 10) {
    this.#clock = clock;
    this.#sliceMs = windowMs / slices;
    this.#counts = new Float64Array(slices);
    this.#currentSlice = Math.floor(clock.now() / this.#sliceMs);
  }

  add(value = 1): void {
    this.#rotate();
    this.#current += value;
  }

  total(): number {
    this.#rotate();
    let sum = this.#current;
    for (const value of this.#counts) sum += value;
    return sum;
  }

  #rotate(): void {
    const slice = Math.floor(this.#clock.now() / this.#sliceMs);
    const elapsed = slice - this.#currentSlice;
    if (elapsed <= 0) return;
    const slices = this.#counts.length;
    this.#counts[this.#currentSlice % slices] = this.#current;
    this.#current = 0;
    for (let step = 1; step <= Math.min(elapsed, slices); step++)
      this.#counts[(this.#currentSlice + step) % slices] = 0;
    this.#currentSlice = slice;
  }
}

/** Circuit state as operators read it. */
export type BreakerState = 'closed' | 'open' | 'half-open' | 'disabled';

/** A snapshot of one endpoint. Counters are totals since the client was created. */
export interface EndpointStatsSnapshot {
  service: string;
  endpoint: string;
  requests: number;
  successes: number;
  /** Failed calls by error code (after retries and before fallbacks). */
  failures: Record<string, number>;
  retries: number;
  hedges: number;
  fallbacks: number;
  /** Calls rejected by the bulkhead. */
  shed: number;
  /** Calls in flight now. */
  outstanding: number;
  breaker: BreakerState;
  /** Over the rolling window (`windowMs`). */
  window: {
    windowMs: number;
    requests: number;
    failures: number;
    /** Failed share of requests in the window, 0 to 100. */
    errorPercentage: number;
    latency: LatencySummary;
    /**
     * The latency histogram behind `latency`, sparse and mergeable: `[upper bound in µs, count]`
     * per non-empty bucket, in increasing order (the same bounds in every process, so the
     * dashboard sums several processes' windows bound by bound).
     */
    latencyBuckets: Array<[number, number]>;
  };
}

/** `client.stats()`: per endpoint, plus what the client shares. */
export interface ClientStats {
  service: string;
  /** Retry-budget tokens left (Infinity without a budget). */
  retryTokens: number;
  /** The bulkhead's limit, calls in flight and queued (adaptive: the limit learned now); null without one. */
  bulkhead?: BulkheadSnapshot | null;
  instances: Array<{
    url: string;
    outstanding: number;
    ejected: boolean;
    /** false while active health checks keep it out of rotation. */
    healthy: boolean;
    /** While ejected: what ejected it. */
    ejectionReason?: 'consecutive-failures' | 'failure-percentage' | 'success-rate';
    consecutiveFailures: number;
    /**
     * `balancer: 'p2c-ewma'`: the latency average (ms) the balancer weighs this instance by now,
     * so an instance getting less traffic shows why; absent with other balancers and before
     * its first answer.
     */
    latencyMs?: number;
  }>;
  endpoints: Record<string, EndpointStatsSnapshot>;
}

/** Live counters of one endpoint. */
export class EndpointStats {
  readonly service: string;
  readonly endpoint: string;
  readonly windowMs: number;
  requests = 0;
  successes = 0;
  readonly failures: Record<string, number> = Object.create(null);
  retries = 0;
  hedges = 0;
  fallbacks = 0;
  shed = 0;
  outstanding = 0;
  breaker: BreakerState = 'disabled';
  readonly #windowRequests: RollingCounter;
  readonly #windowFailures: RollingCounter;
  readonly #latency: RollingHistogram;

  constructor(clock: Clock, service: string, endpoint: string, windowMs: number) {
    this.service = service;
    this.endpoint = endpoint;
    this.windowMs = windowMs;
    this.#windowRequests = new RollingCounter(clock, windowMs);
    this.#windowFailures = new RollingCounter(clock, windowMs);
    this.#latency = new RollingHistogram(clock, windowMs);
  }

  started(): void {
    this.requests++;
    this.outstanding++;
    this.#windowRequests.add();
  }

  succeeded(latencyMs: number): void {
    this.outstanding--;
    this.successes++;
    this.#latency.record(latencyMs);
  }

  failed(code: string, latencyMs: number): void {
    this.outstanding--;
    this.failures[code] = (this.failures[code] ?? 0) + 1;
    this.#windowFailures.add();
    this.#latency.record(latencyMs);
  }

  snapshot(): EndpointStatsSnapshot {
    const requests = this.#windowRequests.total();
    const failures = this.#windowFailures.total();
    const { buckets, maxMs } = this.#latency.merged();
    return {
      service: this.service,
      endpoint: this.endpoint,
      requests: this.requests,
      successes: this.successes,
      failures: { ...this.failures },
      retries: this.retries,
      hedges: this.hedges,
      fallbacks: this.fallbacks,
      shed: this.shed,
      outstanding: this.outstanding,
      breaker: this.breaker,
      window: {
        windowMs: this.windowMs,
        requests,
        failures,
        errorPercentage: requests === 0 ? 0 : Math.round((1000 * failures) / requests) / 10,
        latency: summarizeBuckets(buckets, maxMs),
        latencyBuckets: buckets,
      },
    };
  }
}
