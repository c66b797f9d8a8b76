/**
 * The limit algorithms: pure functions of the current limit and one window's measurement,
 * a few arithmetic operations each, no allocation. They run once per sample window (see
 * {@link AdaptiveLimit}), not once per call.
 *
 * Read from Netflix's concurrency-limits (Gradient2Limit, VegasLimit, AIMDLimit) and Envoy's
 * adaptive-concurrency filter (gradient of the minimum RTT against the sampled RTT, sqrt
 * headroom). Where these differ from the originals it is said below and in docs/overload.md.
 */

/** One sample window, as the algorithms see it. */
export interface LimitWindow {
  /** Mean round-trip time of the calls in the window, in milliseconds. */
  rttMs: number;
  /** The most calls in flight at once during the window. */
  maxInflight: number;
  /** At least 1% of the window's calls dropped (timeout, 503/429/504, reset). */
  dropped: boolean;
  /** The share of the window's calls that dropped, in [0, 1] (absent: treated as 0). */
  dropShare?: number;
  /** Demand reached the limit: some call waited for a slot or was shed. */
  limited: boolean;
}

/** A limit algorithm: the next limit (unclamped) from the current one and a window. */
export interface LimitAlgorithm {
  readonly name: string;
  update(limit: number, window: LimitWindow): number;
}

/** Demand at the limit while latency shows no queueing: grow by doubling (TCP slow start). */
const SLOW_START_FACTOR = 2;
/** "At its floor": the window's RTT within 10% of the long-term RTT. */
const SLOW_START_TOLERANCE = 1.1;
/** Windows whose lowest RTT starts Gradient2's long-term RTT. */
const WARM_UP_WINDOWS = 5;
/**
 * Windows without congestion (no drop, no decrease) after which slow start may double the limit
 * past the congestion threshold again.
 */
const SSTHRESH_RESET_WINDOWS = 10;
/** Weight of one window when the long RTT falls (latency recovered): about 10 windows. */
const FALL_ALPHA = 2 / 11;

/**
 * Gradient2 (Netflix): compares the window's RTT (short) with a long exponential average of
 * it; `gradient = clamp(tolerance × long / short, 0.5, 1)`, `new = limit × gradient +
 * queueSize`, smoothed. Not grown while app-limited (less than half the limit in use).
 *
 * Differences: per window instead of per call; with `decreaseAtOnce` (server limits) only
 * increases are smoothed and a decrease takes the window's `new` at once. The long average
 * rises slowly (about `longWindow` = 600 windows, Netflix's 600 samples) and falls fast
 * (about 10 windows, where Netflix takes 5% off when long > 2 × short): a sustained overload is not learned as the new
 * normal within a run, a recovery is. A drop counts as the floor gradient (0.5; Netflix's
 * Gradient2 ignores drops), and a window in which more than 10% dropped keeps only the share
 * that did not (at least half: TCP's halving on loss), so a limit that starts far above the
 * capacity comes down in a few windows. `queueSize` is `max(4, √limit)` (Envoy's headroom)
 * instead of 4. (`√limit` alone was measured in the storm lab's overload: a backend serving 2
 * at a time then idles between arrivals, goodput 73–78% of capacity instead of 99%.)
 * Demand at the limit with the RTT at its floor (within 10% of the long average) doubles the
 * limit (slow start): the additive growth alone takes minutes to reach a few hundred. As in
 * TCP, slow start stops at half the limit of the last congestion (`ssthresh`) until 10
 * windows pass without one: a limit that was just pushed down by drops does not double back
 * into them when one window happens to be clean.
 */
export class Gradient2 implements LimitAlgorithm {
  readonly name = 'gradient2';
  /** Long-term RTT (ms): rises over about `longWindow` windows, falls over about 10. */
  longRttMs = 0;
  /**
   * TCP's slow-start threshold: half the limit at the last congestion (a drop, or latency that
   * pushed the limit down). Slow start doubles only below it; above it the limit grows by the
   * headroom. Forgotten after {@link SSTHRESH_RESET_WINDOWS} windows without congestion.
   */
  ssthresh = Number.POSITIVE_INFINITY;
  #calmWindows = 0;
  #windows = 0;
  readonly #tolerance: number;
  readonly #smoothing: number;
  readonly #riseAlpha: number;

  readonly #decreaseAtOnce: boolean;

  constructor(options: { tolerance?: number; smoothing?: number; longWindow?: number; decreaseAtOnce?: boolean } = {}) {
    this.#decreaseAtOnce = options.decreaseAtOnce ?? false;
    this.#tolerance = options.tolerance ?? 1.5;
    this.#smoothing = options.smoothing ?? 0.2;
    this.#riseAlpha = 2 / ((options.longWindow ?? 600) + 1);
  }

  update(limit: number, window: LimitWindow): number {
    const shortRtt = window.rttMs;
    // The first windows give the lowest RTT they saw: slow start overshoots while they run,
    // and an average of them would be read as the floor for minutes.
    const seen = ++this.#windows;
    let longRtt = this.longRttMs;
    if (seen <= WARM_UP_WINDOWS) longRtt = seen === 1 || shortRtt < longRtt ? shortRtt : longRtt;
    else longRtt += (shortRtt - longRtt) * (shortRtt > longRtt ? this.#riseAlpha : FALL_ALPHA);
    this.longRttMs = longRtt;
    if (window.dropped) {
      // A few drops take 10% off; a window in which most calls dropped says the limit is far
      // above what the dependency serves: keep the share that succeeded, at least half.
      const keep = Math.max(0.5, Math.min(1 - this.#smoothing * 0.5, 1 - (window.dropShare ?? 0)));
      return this.#congestion(limit, limit * keep);
    }
    if (++this.#calmWindows >= SSTHRESH_RESET_WINDOWS) this.ssthresh = Number.POSITIVE_INFINITY;
    if (window.limited && shortRtt <= longRtt * SLOW_START_TOLERANCE && limit < this.ssthresh) {
      return Math.min(limit * SLOW_START_FACTOR, this.ssthresh);
    }
    if (window.maxInflight < limit / 2) return limit;
    const gradient = Math.max(0.5, Math.min(1, (this.#tolerance * longRtt) / shortRtt));
    const queueSize = Math.max(4, Math.sqrt(limit));
    const target = limit * gradient + queueSize;
    if (target < limit) {
      // With decreaseAtOnce (a server limit, which starts at 20 and may be far above the
      // capacity) a decrease takes its target at once, at most halving (TCP's decrease per
      // RTT): smoothed like Netflix's per-call update, a limit 3× above the capacity took 15
      // windows of up to 1 s to come down. A client's limit stays smoothed: one noisy window
      // must not halve it under healthy load (unsmoothed, 1,422 of 6,000 healthy calls shed).
      const next = this.#decreaseAtOnce ? target : limit * (1 - this.#smoothing) + target * this.#smoothing;
      return this.#congestion(limit, next);
    }
    return limit * (1 - this.#smoothing) + target * this.#smoothing;
  }

  /** A congested window: remember half the limit as the slow-start threshold. */
  #congestion(limit: number, next: number): number {
    this.ssthresh = limit / 2;
    this.#calmWindows = 0;
    return next;
  }
}

/** ⌊log10(limit)⌋, at least 1: Vegas's α, β and step scale with it. */
function log10Step(limit: number): number {
  const value = Math.floor(Math.log10(limit));
  return value > 1 ? value : 1;
}

/**
 * Vegas (TCP Vegas, as Netflix's VegasLimit): estimates the queue at the dependency as
 * `limit × (1 − rttNoLoad / rtt)`; below `log10(limit)` it adds β, below α = 3·log10 it adds
 * log10, above β = 6·log10 it takes log10 away; a drop takes log10 away. `rttNoLoad` is the
 * lowest window RTT seen, re-probed every `probeWindows` (600) windows so that a dependency
 * that became slower for good is learned.
 *
 * Differences: per window; a drop is checked first (a probe window does not hide it); the
 * probe interval counts windows, not calls (Netflix: 30 × limit calls, one call's RTT; a
 * window's mean RTT under load is never a no-load RTT, so probes are rarer here) and has no
 * jitter (deterministic); demand at the limit with no queue seen doubles the limit (slow
 * start).
 */
export class Vegas implements LimitAlgorithm {
  readonly name = 'vegas';
  rttNoLoadMs = 0;
  #windows = 0;
  readonly #probeWindows: number;

  constructor(options: { probeWindows?: number } = {}) {
    this.#probeWindows = options.probeWindows ?? 600;
  }

  update(limit: number, window: LimitWindow): number {
    const rtt = window.rttMs;
    const step = log10Step(limit);
    // Any drop takes a step off, whatever the probe is doing.
    if (window.dropped) return limit - step;
    if (++this.#windows >= this.#probeWindows || this.rttNoLoadMs === 0) {
      this.#windows = 0;
      this.rttNoLoadMs = rtt;
      return limit;
    }
    if (rtt < this.rttNoLoadMs) {
      this.rttNoLoadMs = rtt;
      return limit;
    }
    const queueSize = Math.ceil(limit * (1 - this.rttNoLoadMs / rtt));
    if (queueSize <= step) {
      if (window.limited) return limit * SLOW_START_FACTOR;
      return window.maxInflight * 2 < limit ? limit : limit + 6 * step;
    }
    if (queueSize < 3 * step) return window.maxInflight * 2 < limit ? limit : limit + step;
    if (queueSize > 6 * step) return limit - step;
    return limit;
  }
}

/**
 * AIMD (Netflix's AIMDLimit, TCP Reno's congestion avoidance): a drop multiplies the limit by
 * `backoffRatio` (0.9); otherwise, when at least half the limit was in use, it grows by one
 * per window. Latency plays no part beyond timeouts.
 *
 * Differences: per window (+1 per window, as Reno's +1 per RTT, where Netflix adds 1 per
 * call); demand at the limit without drops doubles the limit (slow start).
 */
export class Aimd implements LimitAlgorithm {
  readonly name = 'aimd';
  readonly #backoffRatio: number;

  constructor(options: { backoffRatio?: number } = {}) {
    this.#backoffRatio = options.backoffRatio ?? 0.9;
  }

  update(limit: number, window: LimitWindow): number {
    if (window.dropped) return limit * this.#backoffRatio;
    if (window.limited) return limit * SLOW_START_FACTOR;
    return window.maxInflight * 2 >= limit ? limit + 1 : limit;
  }
}
