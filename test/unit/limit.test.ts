/**
 * The adaptive limit algorithms on a manual clock: a closed-loop driver keeps `demand` calls
 * wanting a slot, each taking `latencyMs` (which the test changes), and checks where the limit
 * goes.
 */
import { describe, expect, it } from 'vitest';
import {
  AdaptiveLimit,
  Gradient2,
  type LimitAlgorithmName,
  type LimitWindow,
  limitAlgorithms,
} from '../../src/limit/index.js';
import { manualClock } from '../helpers/clock.js';
import { seededRandom } from '../helpers/random.js';

interface Load {
  /** Calls that want a slot at any moment. */
  demand: number;
  /** How long a call holds its slot; a function of calls in flight models a saturated dependency. */
  latencyMs: number | ((inflight: number) => number);
  /** Share of calls that drop. */
  dropRate?: number;
}

function driver(algorithm: LimitAlgorithmName, options: { min?: number; max?: number; initial?: number } = {}) {
  const clock = manualClock(0);
  const random = seededRandom(7);
  const changes: number[] = [];
  const limit = new AdaptiveLimit({
    algorithm,
    minConcurrent: options.min ?? 5,
    maxConcurrent: options.max ?? 1000,
    initialConcurrent: options.initial ?? 50,
    clock,
    onChange: (value) => changes.push(value),
  });
  let inFlight: Array<{ endsAt: number; drops: boolean }> = [];
  /** Runs `load` for `durationMs` in 1 ms steps; returns the limit at the end. */
  const run = (load: Load, durationMs: number): number => {
    for (let step = 0; step < durationMs; step++) {
      clock.advance(1);
      const now = clock.now();
      const done = inFlight.filter((call) => call.endsAt <= now);
      inFlight = inFlight.filter((call) => call.endsAt > now);
      for (const call of done) limit.release(call.drops);
      while (inFlight.length < load.demand && limit.inflight < limit.limit) {
        limit.acquire();
        const latency = typeof load.latencyMs === 'number' ? load.latencyMs : load.latencyMs(limit.inflight);
        inFlight.push({ endsAt: now + latency, drops: random() < (load.dropRate ?? 0) });
      }
      if (inFlight.length < load.demand) limit.blocked();
    }
    return limit.limit;
  };
  return { limit, run, changes };
}

/** A dependency that serves `capacity` calls at once in `baseMs`; more calls queue there. */
const saturating = (capacity: number, baseMs: number) => (inflight: number) =>
  inflight <= capacity ? baseMs : (baseMs * inflight) / capacity;

describe.each(limitAlgorithms)('%s', (algorithm) => {
  it('rises under low, flat latency while demand is above the limit, up to maxConcurrent', () => {
    const { run } = driver(algorithm, { initial: 20, max: 400 });
    expect(run({ demand: 300, latencyMs: 10 }, 2000)).toBeGreaterThanOrEqual(300);
    expect(run({ demand: 5000, latencyMs: 10 }, 3000)).toBe(400);
  });

  it('does not grow while most of the limit goes unused (app-limited)', () => {
    const { run } = driver(algorithm, { initial: 100 });
    expect(run({ demand: 10, latencyMs: 10 }, 5000)).toBe(100);
  });

  it('falls on drops, down to minConcurrent and no further', () => {
    const { run } = driver(algorithm, { initial: 200, min: 15 });
    const during = run({ demand: 1000, latencyMs: 10, dropRate: 0.5 }, 20_000);
    expect(during).toBe(15);
  });

  it('rises again once the drops stop', () => {
    const { run } = driver(algorithm, { initial: 200, min: 10 });
    expect(run({ demand: 1000, latencyMs: 10, dropRate: 0.5 }, 20_000)).toBe(10);
    expect(run({ demand: 300, latencyMs: 10 }, 5000)).toBeGreaterThan(100);
  });

  it('never leaves [minConcurrent, maxConcurrent]', () => {
    const { run, changes } = driver(algorithm, { initial: 30, min: 20, max: 60 });
    run({ demand: 1000, latencyMs: 5 }, 3000);
    run({ demand: 1000, latencyMs: 5, dropRate: 0.9 }, 3000);
    run({ demand: 1000, latencyMs: saturating(10, 5) }, 3000);
    expect(changes.length).toBeGreaterThan(0);
    for (const value of changes) {
      expect(value).toBeGreaterThanOrEqual(20);
      expect(value).toBeLessThanOrEqual(60);
    }
  });
});

describe.each(['gradient2', 'vegas'] as const)('%s (latency-based)', (algorithm) => {
  it('settles near the capacity of a dependency whose latency grows past it', () => {
    const { run } = driver(algorithm, { initial: 20, min: 5 });
    // 40 calls at once in 20 ms; beyond that latency grows in proportion.
    const settled = run({ demand: 1000, latencyMs: saturating(40, 20) }, 30_000);
    expect(settled).toBeLessThan(150);
    expect(settled).toBeGreaterThanOrEqual(30);
  });

  it('falls when the dependency becomes slower under the same demand, and rises again when it recovers', () => {
    const { run } = driver(algorithm, { initial: 50, min: 5 });
    const healthy = run({ demand: 1000, latencyMs: saturating(100, 10) }, 20_000);
    const slow = run({ demand: 1000, latencyMs: saturating(30, 10) }, 20_000);
    expect(slow).toBeLessThan(healthy * 0.7);
    const recovered = run({ demand: 1000, latencyMs: saturating(100, 10) }, 20_000);
    expect(recovered).toBeGreaterThan(slow * 1.5);
  });
});

describe('AdaptiveLimit windows', () => {
  it('one window of slow calls moves the limit by at most one step', () => {
    const { limit, run } = driver('gradient2', { initial: 200 });
    run({ demand: 150, latencyMs: 10 }, 3000);
    const before = limit.limit;
    // Every call in flight is delayed at once (a pause), for one window.
    run({ demand: 150, latencyMs: 100 }, 200);
    expect(limit.limit).toBeGreaterThanOrEqual(Math.floor(before * 0.85));
  });

  it('measures the window RTT from calls in flight and completions (Little’s law)', () => {
    const { limit, run } = driver('aimd', { initial: 100 });
    run({ demand: 50, latencyMs: 40 }, 3000);
    expect(limit.rttMs).toBeGreaterThan(36);
    expect(limit.rttMs).toBeLessThan(44);
  });
});

describe('Gradient2 on congestion', () => {
  const window = (overrides: Partial<LimitWindow>): LimitWindow => ({
    rttMs: 100,
    maxInflight: 1000,
    dropped: false,
    dropShare: 0,
    limited: true,
    ...overrides,
  });

  it('a window with a few drops takes 10% off; one where most calls dropped keeps the share that did not, at least half', () => {
    expect(new Gradient2().update(100, window({ dropped: true, dropShare: 0.02 }))).toBeCloseTo(90);
    expect(new Gradient2().update(100, window({ dropped: true, dropShare: 0.3 }))).toBeCloseTo(70);
    expect(new Gradient2().update(100, window({ dropped: true, dropShare: 0.95 }))).toBeCloseTo(50);
  });

  it('a latency decrease is smoothed (0.2 of the step), or taken at once with decreaseAtOnce (server limits)', () => {
    // Long RTT 100 ms (first windows), then a window at 500 ms: gradient at its floor, 0.5.
    const smoothed = new Gradient2();
    const atOnce = new Gradient2({ decreaseAtOnce: true });
    for (const gradient2 of [smoothed, atOnce]) gradient2.update(100, window({ limited: false, maxInflight: 10 }));
    const target = 100 * 0.5 + 10; // limit × gradient + max(4, √limit)
    expect(smoothed.update(100, window({ rttMs: 500 }))).toBeCloseTo(0.8 * 100 + 0.2 * target);
    expect(atOnce.update(100, window({ rttMs: 500 }))).toBeCloseTo(target);
    expect(atOnce.ssthresh).toBe(50);
  });

  it('a server limit 10× above a saturated dependency reaches it within a few windows; a client one takes many', () => {
    const windowsToSettle = (decreaseAtOnce: boolean) => {
      const gradient2 = new Gradient2({ decreaseAtOnce });
      gradient2.update(200, window({ rttMs: 50, limited: false, maxInflight: 10 }));
      let limit = 200;
      let windows = 0;
      // 2 slots of 50 ms: the window RTT grows with what the limit lets in.
      while (limit > 12 && windows < 100) {
        limit = gradient2.update(limit, window({ rttMs: (50 * limit) / 2 }));
        windows++;
      }
      return windows;
    };
    expect(windowsToSettle(true)).toBeLessThanOrEqual(8);
    expect(windowsToSettle(false)).toBeGreaterThan(15);
  });

  it('slow start stops at half the limit of the last congestion until 10 calm windows have passed (TCP ssthresh)', () => {
    const gradient2 = new Gradient2();
    // Demand above the limit, RTT flat: slow start doubles.
    expect(gradient2.update(100, window({}))).toBe(200);
    // Drops at 200: the threshold is 100.
    const after = gradient2.update(200, window({ dropped: true, dropShare: 0.5 }));
    expect(after).toBeCloseTo(100);
    expect(gradient2.ssthresh).toBe(100);
    // A clean window at 60: doubling stops at the threshold; above it, growth is additive.
    expect(gradient2.update(60, window({}))).toBe(100);
    const additive = gradient2.update(100, window({}));
    expect(additive).toBeGreaterThan(100);
    expect(additive).toBeLessThan(105);
    // The tenth calm window forgets the threshold, and slow start doubles again.
    let limit = additive;
    for (let calm = 3; calm < 10; calm++) limit = gradient2.update(limit, window({}));
    expect(gradient2.ssthresh).toBe(100);
    expect(gradient2.update(limit, window({}))).toBeCloseTo(limit * 2);
    expect(gradient2.ssthresh).toBe(Number.POSITIVE_INFINITY);
  });
});
