/**
 * The observe layer and what `client.stats()` is made of: the log-linear rolling latency
 * histogram, rolling counters, per-endpoint stats, and the `telescope:call:*` diagnostics
 * channels, on a manual clock.
 */
import { subscribe, unsubscribe } from 'node:diagnostics_channel';
import { describe, expect, it } from 'vitest';
import { CallContext, ErrorCode, HttpStatusError, type IncomingResponse, TelescopeError } from '../../src/index.js';
import {
  EndpointStats,
  mergeBuckets,
  observe,
  RollingCounter,
  RollingHistogram,
  summarizeBuckets,
} from '../../src/observe/index.js';
import { manualClock } from '../helpers/clock.js';
import { seededRandom } from '../helpers/random.js';

/** Nearest-rank percentile of sorted values: the definition the histogram approximates. */
function percentile(sorted: number[], quantile: number): number {
  return sorted[Math.ceil(quantile * sorted.length) - 1]!;
}

describe('RollingHistogram: accuracy', () => {
  const random = seededRandom(11);
  const distributions: Array<[string, () => number]> = [
    ['uniform 1–1000 ms', () => 1 + random() * 999],
    ['exponential, mean 20 ms', () => -20 * Math.log(1 - random())],
    [
      'log-normal around 20 ms',
      () => Math.exp(3 + 0.8 * Math.sqrt(-2 * Math.log(1 - random())) * Math.cos(2 * Math.PI * random())),
    ],
    ['bimodal: 90% ~5 ms, 10% ~200 ms', () => (random() < 0.9 ? 5 + random() : 200 + random() * 10)],
    ['sub-millisecond', () => 0.05 + random() * 0.5],
  ];

  it.each(distributions)('%s: p50, p90 and p99 within a tenth, max exact', (_name, sample) => {
    const histogram = new RollingHistogram(manualClock(0), 10_000);
    const values: number[] = [];
    for (let index = 0; index < 50_000; index++) {
      const value = sample();
      values.push(value);
      histogram.record(value);
    }
    values.sort((a, b) => a - b);
    const summary = histogram.summary();
    expect(summary.count).toBe(50_000);
    for (const [reported, quantile] of [
      [summary.p50Ms, 0.5],
      [summary.p90Ms, 0.9],
      [summary.p99Ms, 0.99],
    ] as const) {
      const truth = percentile(values, quantile);
      // Buckets report their upper bound: never below the true value (to the microsecond).
      expect(reported).toBeGreaterThanOrEqual(Math.floor(truth * 1000) / 1000);
      expect(Math.abs(reported - truth) / truth).toBeLessThanOrEqual(0.1);
    }
    expect(summary.maxMs).toBe(values.at(-1));
  });

  it('worst case is one sub-bucket: 12.5% above a value on a bucket’s lower edge', () => {
    const histogram = new RollingHistogram(manualClock(0), 10_000);
    // 8.192 ms = 8 × 2^10 µs: the first value of its bucket, whose upper bound is 9.215 ms.
    for (let index = 0; index < 99; index++) histogram.record(8.192);
    histogram.record(50);
    const summary = histogram.summary();
    expect(summary.p50Ms).toBeCloseTo(9.215, 3);
    expect(summary.p50Ms / 8.192 - 1).toBeLessThanOrEqual(0.125);
    expect(summary.p99Ms).toBeCloseTo(9.215, 3);
    expect(summary.maxMs).toBe(50);
  });

  it('never reports a percentile above the max (a single value reads back exactly)', () => {
    const histogram = new RollingHistogram(manualClock(0), 10_000);
    histogram.record(20.3);
    expect(histogram.summary()).toEqual({ count: 1, p50Ms: 20.3, p90Ms: 20.3, p99Ms: 20.3, maxMs: 20.3 });
  });

  it('takes zero, negative and huge values without breaking (clamped to its range)', () => {
    const histogram = new RollingHistogram(manualClock(0), 10_000);
    histogram.record(0);
    histogram.record(-5);
    histogram.record(3 * 3_600_000);
    const summary = histogram.summary();
    expect(summary.count).toBe(3);
    expect(summary.p50Ms).toBe(0);
    expect(summary.maxMs).toBe(3 * 3_600_000);
    // Above ~35 min all values share the top bucket; the percentile is still capped by the max.
    expect(summary.p99Ms).toBeGreaterThan(2_000_000);
    expect(summary.p99Ms).toBeLessThanOrEqual(summary.maxMs);
  });

  it('is empty before any value', () => {
    expect(new RollingHistogram(manualClock(0), 10_000).summary()).toEqual({
      count: 0,
      p50Ms: 0,
      p90Ms: 0,
      p99Ms: 0,
      maxMs: 0,
    });
  });
});

describe('RollingHistogram: window', () => {
  it('forgets values once the window has passed them, slice by slice', () => {
    const clock = manualClock(0);
    const histogram = new RollingHistogram(clock, 1000);
    for (let index = 0; index < 10; index++) histogram.record(100);
    clock.advance(500);
    for (let index = 0; index < 10; index++) histogram.record(1);
    expect(histogram.summary()).toMatchObject({ count: 20, maxMs: 100 });
    clock.advance(499); // t = 999: the first slice is still in the window
    expect(histogram.summary()).toMatchObject({ count: 20, maxMs: 100 });
    clock.advance(1); // t = 1000: it is not
    expect(histogram.summary()).toEqual({ count: 10, p50Ms: 1, p90Ms: 1, p99Ms: 1, maxMs: 1 });
    clock.advance(500);
    expect(histogram.summary()).toEqual({ count: 0, p50Ms: 0, p90Ms: 0, p99Ms: 0, maxMs: 0 });
  });

  it('a long silence clears everything, and recording starts afresh', () => {
    const clock = manualClock(0);
    const histogram = new RollingHistogram(clock, 1000);
    for (let index = 0; index < 100; index++) histogram.record(500);
    clock.advance(7 * 24 * 3_600_000);
    expect(histogram.summary().count).toBe(0);
    histogram.record(3);
    expect(histogram.summary()).toMatchObject({ count: 1, p50Ms: 3, maxMs: 3 });
  });

  it('a steady stream keeps about one window of values', () => {
    const clock = manualClock(0);
    const histogram = new RollingHistogram(clock, 1000);
    for (let ms = 0; ms < 5000; ms++) {
      histogram.record(10);
      clock.advance(1);
    }
    // Between 0.9 and 1 window of values (the current slice is partly filled).
    const { count } = histogram.summary();
    expect(count).toBeGreaterThanOrEqual(900);
    expect(count).toBeLessThanOrEqual(1000);
  });

  it('uses bounded memory: two million distinct values allocate nothing per value', () => {
    const clock = manualClock(0);
    const histogram = new RollingHistogram(clock, 10_000);
    const random = seededRandom(3);
    // vitest.config.ts runs test workers with --expose-gc.
    const gc = (globalThis as { gc?: () => void }).gc as () => void;
    expect(gc).toBeTypeOf('function');
    gc();
    const before = process.memoryUsage().heapUsed;
    for (let index = 0; index < 2_000_000; index++) {
      histogram.record(random() * 1000);
      if (index % 1000 === 0) clock.advance(1);
    }
    gc();
    const grown = process.memoryUsage().heapUsed - before;
    // Keeping the values would take 16 MB; the histogram is 10 slices × 256 counters.
    expect(grown).toBeLessThan(4 * 1024 * 1024);
    expect(histogram.summary().count).toBe(2_000_000);
  });
});

describe('RollingCounter', () => {
  it('sums the window and forgets what fell out of it', () => {
    const clock = manualClock(0);
    const counter = new RollingCounter(clock, 1000);
    counter.add();
    counter.add(2);
    clock.advance(600);
    counter.add(4);
    expect(counter.total()).toBe(7);
    clock.advance(400);
    expect(counter.total()).toBe(4);
    clock.advance(10_000);
    expect(counter.total()).toBe(0);
  });
});

describe('EndpointStats', () => {
  it('counts requests, successes, failures by code and in-flight calls; rates over the window', () => {
    const clock = manualClock(0);
    const stats = new EndpointStats(clock, 'movies', 'getMovie', 1000);
    for (let index = 0; index < 3; index++) stats.started();
    expect(stats.snapshot().outstanding).toBe(3);
    stats.succeeded(10);
    stats.failed(ErrorCode.HTTP_STATUS, 30);
    stats.failed(ErrorCode.HTTP_STATUS, 20);
    expect(stats.snapshot()).toEqual({
      service: 'movies',
      endpoint: 'getMovie',
      requests: 3,
      successes: 1,
      failures: { HTTP_STATUS: 2 },
      retries: 0,
      hedges: 0,
      fallbacks: 0,
      shed: 0,
      outstanding: 0,
      breaker: 'disabled',
      window: {
        windowMs: 1000,
        requests: 3,
        failures: 2,
        errorPercentage: 66.7,
        latency: { count: 3, p50Ms: expect.closeTo(20, 0) as number, p90Ms: 30, p99Ms: 30, maxMs: 30 },
        latencyBuckets: [
          [10239, 1],
          [20479, 1],
          [30719, 1],
        ],
      },
    });
    // The histogram behind the percentiles: sparse [upper bound µs, count], mergeable by bound.
    const { latencyBuckets } = stats.snapshot().window;
    expect(latencyBuckets.reduce((sum, [, count]) => sum + count, 0)).toBe(3);
    expect(latencyBuckets.map(([bound]) => bound)).toEqual(
      [...latencyBuckets.map(([bound]) => bound)].sort((a, b) => a - b),
    );
    const merged = mergeBuckets([latencyBuckets, latencyBuckets]);
    expect(summarizeBuckets(merged, 30)).toEqual({ ...stats.snapshot().window.latency, count: 6 });
    // Totals stay; the window moves on.
    clock.advance(1000);
    const later = stats.snapshot();
    expect(later).toMatchObject({ requests: 3, successes: 1, failures: { HTTP_STATUS: 2 } });
    expect(later.window).toEqual({
      windowMs: 1000,
      requests: 0,
      failures: 0,
      errorPercentage: 0,
      latency: { count: 0, p50Ms: 0, p90Ms: 0, p99Ms: 0, maxMs: 0 },
      latencyBuckets: [],
    });
  });

  it('snapshots are copies', () => {
    const stats = new EndpointStats(manualClock(0), 'movies', 'getMovie', 1000);
    stats.started();
    stats.failed(ErrorCode.CIRCUIT_OPEN, 0);
    const snapshot = stats.snapshot();
    snapshot.failures.CIRCUIT_OPEN = 99;
    expect(stats.snapshot().failures).toEqual({ CIRCUIT_OPEN: 1 });
  });
});

describe('observe layer', () => {
  const ok: IncomingResponse = { status: 200, headers: {}, body: 'ok', instance: 'http://a:1' };

  function harness() {
    const clock = manualClock(0);
    const stats = new EndpointStats(clock, 'movies', 'getMovie', 10_000);
    let settle!: { resolve(response: IncomingResponse): void; reject(error: unknown): void };
    const call = observe(
      (endpoint) => (endpoint === 'getMovie' ? stats : undefined),
      clock,
    )(
      () =>
        new Promise<IncomingResponse>((resolve, reject) => {
          settle = { resolve, reject };
        }),
    );
    const start = (endpoint = 'getMovie') => {
      const context = new CallContext({ service: 'movies', endpoint, idempotent: true, clock, timeoutMs: 1000 });
      const request = { method: 'GET', path: '/movies/1', headers: {}, body: undefined };
      return { context, request, promise: call(request, context) };
    };
    return { clock, stats, start, settle: () => settle };
  }

  function listen(names: string[]) {
    const seen: Array<{ channel: string; message: Record<string, unknown> }> = [];
    const listeners = names.map((channel) => {
      const listener = (message: unknown) => seen.push({ channel, message: message as Record<string, unknown> });
      subscribe(channel, listener);
      return () => unsubscribe(channel, listener);
    });
    return {
      seen,
      stop: () => {
        for (const stop of listeners) stop();
      },
    };
  }

  it('measures the whole call on the clock and publishes start and end', async () => {
    const { clock, stats, start, settle } = harness();
    const channels = listen(['telescope:call:start', 'telescope:call:end', 'telescope:call:error']);
    try {
      const { context, request, promise } = start();
      expect(stats.snapshot().outstanding).toBe(1);
      clock.advance(42);
      settle().resolve(ok);
      expect(await promise).toBe(ok);
      expect(channels.seen).toEqual([
        { channel: 'telescope:call:start', message: { context, request } },
        { channel: 'telescope:call:end', message: { context, response: ok, durationMs: 42 } },
      ]);
      expect(stats.snapshot()).toMatchObject({ requests: 1, successes: 1, outstanding: 0 });
      expect(stats.snapshot().window.latency).toMatchObject({ count: 1, maxMs: 42, p50Ms: 42 });
    } finally {
      channels.stop();
    }
  });

  it('records failures by code with their duration and publishes error', async () => {
    const { clock, stats, start, settle } = harness();
    const channels = listen(['telescope:call:error']);
    try {
      const { context, promise } = start();
      clock.advance(7);
      const failure = new HttpStatusError(503, 'down', undefined);
      settle().reject(failure);
      await expect(promise).rejects.toBe(failure);
      expect(channels.seen).toEqual([
        { channel: 'telescope:call:error', message: { context, error: failure, durationMs: 7 } },
      ]);
      const { requests, successes, failures, outstanding, window } = stats.snapshot();
      expect({ requests, successes, failures, outstanding }).toEqual({
        requests: 1,
        successes: 0,
        failures: { HTTP_STATUS: 1 },
        outstanding: 0,
      });
      expect(window).toMatchObject({ requests: 1, failures: 1, errorPercentage: 100, latency: { maxMs: 7 } });
    } finally {
      channels.stop();
    }
  });

  it('publishes for endpoints without stats too', async () => {
    const { start, settle } = harness();
    const channels = listen(['telescope:call:start', 'telescope:call:end']);
    try {
      const { promise } = start('unknown');
      settle().resolve(ok);
      await promise;
      expect(channels.seen.map((entry) => entry.channel)).toEqual(['telescope:call:start', 'telescope:call:end']);
    } finally {
      channels.stop();
    }
  });

  it('counts without any subscriber', async () => {
    const { stats, start, settle } = harness();
    const { promise } = start();
    settle().reject(new TelescopeError(ErrorCode.CONNECT_FAILED, 'refused'));
    await expect(promise).rejects.toMatchObject({ code: ErrorCode.CONNECT_FAILED });
    expect(stats.snapshot().failures).toEqual({ CONNECT_FAILED: 1 });
  });
});
