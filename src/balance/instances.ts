import type { CallContext, Instance } from '../core/call.js';
import type { Clock, TimerHandle } from '../core/clock.js';
import { invalidOption } from '../core/errors.js';
import { type InstanceEvent, InstanceState } from './instance-state.js';
import { latencyCost, latencyNow, observeLatency, similarLatency } from './latency.js';
import {
  type EjectionReason,
  intervalOutliers,
  type OutlierOptions,
  type ResolvedOutlier,
  resolveOutlier,
} from './outlier.js';
import { type Group, type Routing, routing, splitBy } from './routing.js';

export { type InstanceEvent, InstanceState, isInstanceFailure, outcomeOf } from './instance-state.js';

/** Slow start never gives less than this share of the weight (Envoy's `min_weight_percent`). */
const slowStartMinFactor = 0.1;

/** How an instance is picked for each attempt. */
export type BalancerName = 'p2c' | 'p2c-ewma' | 'round-robin';

/** Settings of {@link InstanceSet}. */
export interface InstanceSetOptions {
  clock: Clock;
  random?: (() => number) | undefined;
  balancer?: BalancerName | undefined;
  zone?: string | undefined;
  outlier?: OutlierOptions | false | undefined;
  /** Envoy's `slow_start_window`: joining and returning instances ramp their weight over it. */
  slowStartMs?: number | undefined;
  /** Consecutive health checks that take an instance out of rotation and bring it back. */
  healthThresholds?: { unhealthyThreshold: number; healthyThreshold: number } | undefined;
  onEvent?: ((event: InstanceEvent) => void) | undefined;
}

/**
 * The instances of a service and their health: picks the instance for each attempt.
 *
 * Picking is O(1) on the usual path: candidates are sampled at random (weighted) and rejected
 * if tried, ejected or of another version; only when sampling keeps failing does it fall back
 * to a scan. With a zone, traffic stays in it in proportion to its healthy capacity and the
 * rest spills to the other zones.
 *
 * Owns one timer on its clock while it has something to time (an ejection to end, an outlier
 * interval to judge); {@link close} clears it.
 */
export class InstanceSet {
  // Fields a pick and its outcome read come first: the object's first cache line or so holds
  // them (a process with many clients finds each cold).
  /** Clock time of the last {@link pick} (the start of the attempt it picked for). */
  pickedAt = 0;
  readonly #clock: Clock;
  readonly #random: () => number;
  #routing: Routing = routing([]);
  readonly #roundRobin: boolean;
  readonly #latencyAware: boolean;
  readonly #zone: string | undefined;
  readonly #slowStartMs: number;
  #cursor = 0;
  #outlier: ResolvedOutlier | undefined;
  #rateDetection: boolean;
  /** Bumped whenever an instance's health changes: zone shares are recomputed lazily. */
  #epoch = 0;
  readonly #healthThresholds: { unhealthyThreshold: number; healthyThreshold: number } | undefined;
  readonly #onEvent: ((event: InstanceEvent) => void) | undefined;
  #byUrl = new Map<string, InstanceState>();
  #byVersion = new Map<string, Routing>();
  #ejected = 0;
  #updated = false;
  #timer: TimerHandle | undefined;
  #timerAt = Number.POSITIVE_INFINITY;
  #nextIntervalAt = Number.POSITIVE_INFINITY;
  #closed = false;
  readonly #onTimer = () => this.#sweep();

  constructor(options: InstanceSetOptions) {
    this.#clock = options.clock;
    this.#random = options.random ?? Math.random;
    const balancer = options.balancer ?? 'p2c';
    if (balancer !== 'p2c' && balancer !== 'p2c-ewma' && balancer !== 'round-robin') {
      invalidOption('balancer', "'p2c', 'p2c-ewma' or 'round-robin'", balancer);
    }
    this.#roundRobin = balancer === 'round-robin';
    this.#latencyAware = balancer === 'p2c-ewma';
    this.#zone = options.zone;
    this.#outlier = options.outlier === false ? undefined : resolveOutlier(options.outlier ?? {});
    this.#rateDetection =
      this.#outlier !== undefined &&
      (this.#outlier.failurePercentage !== undefined || this.#outlier.successRateStdevFactor !== undefined);
    const slowStartMs = options.slowStartMs ?? 0;
    if (!(Number.isFinite(slowStartMs) && slowStartMs >= 0)) {
      invalidOption('slowStartMs', 'a finite number ≥ 0 (0: off)', slowStartMs);
    }
    this.#slowStartMs = slowStartMs;
    this.#healthThresholds = options.healthThresholds;
    this.#onEvent = options.onEvent;
  }

  /** Starts judging outlier intervals (when rate detection is on). Ejections arm the timer themselves. */
  start(): void {
    if (!this.#rateDetection || this.#nextIntervalAt !== Number.POSITIVE_INFINITY) return;
    this.#nextIntervalAt = this.#clock.now() + (this.#outlier as ResolvedOutlier).intervalMs;
    this.#arm(this.#nextIntervalAt);
  }

  /** Current instances (not removed). */
  get instances(): InstanceState[] {
    return this.#routing.all.states;
  }

  /** The state of an instance by origin. */
  get(url: string): InstanceState | undefined {
    return this.#byUrl.get(url);
  }

  /**
   * Replaces the set; state of instances that stay is kept. Returns the removed origins.
   * Instances that join after the first set start a slow start.
   */
  update(instances: readonly Instance[]): string[] {
    const now = this.#clock.now();
    const next = new Map<string, InstanceState>();
    for (const instance of instances) {
      const existing = this.#byUrl.get(instance.url);
      const keep =
        existing !== undefined &&
        existing.instance.zone === instance.zone &&
        existing.instance.version === instance.version &&
        existing.instance.weight === instance.weight;
      if (keep) {
        next.set(instance.url, existing);
        continue;
      }
      const state = new InstanceState(instance);
      state.latencyStamp = now;
      if (existing !== undefined) {
        // Same instance, new metadata: it keeps its history.
        state.rampStart = existing.rampStart;
        state.healthy = existing.healthy;
      } else if (this.#updated) {
        state.rampStart = now;
      }
      next.set(instance.url, state);
    }
    this.#updated = true;
    const removed: string[] = [];
    for (const [url, state] of this.#byUrl) {
      if (next.get(url) !== state) {
        state.removed = true;
        if (!next.has(url)) removed.push(url);
      }
    }
    this.#byUrl = next;
    const states = [...next.values()];
    this.#routing = routing(states);
    this.#byVersion = new Map();
    for (const [version, members] of splitBy(states, (state) => state.instance.version)) {
      this.#byVersion.set(version, routing(members));
    }
    this.#ejected = states.filter((state) => state.ejectedUntil !== 0).length;
    this.#epoch++;
    return removed;
  }

  /**
   * Picks the instance for the context's next attempt, or undefined when no instance matches
   * the route. Prefers instances not yet tried in this call; when every usable instance has
   * been tried, reuses one and asks the transport for a fresh connection.
   */
  pick(context: CallContext): InstanceState | undefined {
    const now = this.#clock.now();
    this.pickedAt = now;
    const version = context.route?.version;
    let routes = this.#routing;
    if (version !== undefined) {
      const subset = this.#byVersion.get(version);
      if (subset === undefined) return undefined;
      routes = subset;
    }
    const all = routes.all;
    if (all.states.length === 0) return undefined;
    const zone = context.route?.zone ?? this.#zone;
    const tried = context.tried;
    const zoned = zone === undefined ? undefined : routes.byZone.get(zone);
    if (zoned !== undefined && zoned.remote.states.length > 0) {
      // Envoy's zone-aware routing: the local zone keeps the share of the traffic its healthy
      // capacity can carry; the rest spills to the other zones, never all at once.
      const share = this.#healthyShare(zoned.local, now);
      const local = share >= 1 || this.#random() < share;
      const chosen =
        this.#choose(local ? zoned.local : zoned.remote, tried, now) ??
        this.#choose(local ? zoned.remote : zoned.local, tried, now);
      if (chosen !== undefined) return chosen;
    } else {
      const chosen = this.#choose(all, tried, now);
      if (chosen !== undefined) return chosen;
    }
    // Every usable instance was tried in this call: go again over a fresh connection.
    const reuse = this.#choose(all, undefined, now) ?? this.#chooseIgnoringHealth(all);
    if (reuse !== undefined && tried !== undefined) context.freshConnection = true;
    return reuse;
  }

  /**
   * Whether an instance other than `failed`, usable and not yet tried in this call, matches
   * the context's route (only asked after a failure, so a scan is fine).
   */
  hasAnotherUsable(context: CallContext, failed: InstanceState): boolean {
    const version = context.route?.version;
    const routes = version === undefined ? this.#routing : this.#byVersion.get(version);
    if (routes === undefined) return false;
    const now = this.#clock.now();
    for (const state of routes.all.states) {
      if (state !== failed && this.#usable(state, context.tried, now)) return true;
    }
    return false;
  }

  #healthyShare(candidates: Group, now: number): number {
    if (candidates.epoch === this.#epoch) return candidates.healthyShare;
    let healthy = 0;
    for (const state of candidates.states) {
      if (state.healthy && (state.ejectedUntil === 0 || state.ejectedUntil <= now)) healthy += state.instance.weight;
    }
    candidates.healthyShare = candidates.totalWeight === 0 ? 0 : healthy / candidates.totalWeight;
    candidates.epoch = this.#epoch;
    return candidates.healthyShare;
  }

  #usable(state: InstanceState, tried: CallContext['tried'], now: number): boolean {
    if (state.ejectedUntil !== 0) {
      if (state.ejectedUntil > now) return false;
      this.#return(state, now, 'expired');
    }
    if (!state.healthy) return false;
    return tried === undefined || !wasTried(tried, state.instance.url);
  }

  /** Slow start: the share of its weight an instance gets now (1 when not ramping). */
  #rampFactor(state: InstanceState, now: number): number {
    const elapsed = now - state.rampStart;
    if (elapsed >= this.#slowStartMs) return 1;
    return Math.max(slowStartMinFactor, elapsed / this.#slowStartMs);
  }

  #choose(candidates: Group, tried: CallContext['tried'], now: number): InstanceState | undefined {
    const states = candidates.states;
    const count = states.length;
    if (count === 0) return undefined;
    if (this.#roundRobin) {
      if (candidates.cumulativeWeights !== undefined || this.#slowStartMs > 0) {
        return this.#weightedRoundRobin(states, tried, now);
      }
      for (let step = 0; step < count; step++) {
        const state = states[(this.#cursor + step) % count] as InstanceState;
        if (this.#usable(state, tried, now)) {
          this.#cursor = (this.#cursor + step + 1) % count;
          return state;
        }
      }
      return undefined;
    }
    if (count === 1) {
      const only = states[0] as InstanceState;
      return this.#usable(only, tried, now) ? only : undefined;
    }
    // Power of two choices: two random usable candidates, the less loaded (per weight) wins.
    let first: InstanceState | undefined;
    let second: InstanceState | undefined;
    for (let sample = 0; sample < 8 && second === undefined; sample++) {
      const state = this.#sample(candidates);
      if (state === first || !this.#usable(state, tried, now)) continue;
      if (first === undefined) first = state;
      else second = state;
    }
    if (first === undefined || second === undefined) {
      // Sampling kept hitting unusable instances: scan once.
      const usable = states.filter((state) => state !== first && this.#usable(state, tried, now));
      if (first === undefined)
        first = usable.length > 0 ? usable[Math.floor(this.#random() * usable.length)] : undefined;
      if (first === undefined) return undefined;
      const others = usable.filter((state) => state !== first);
      second = others.length > 0 ? others[Math.floor(this.#random() * others.length)] : undefined;
      if (second === undefined) return first;
    }
    const winner = this.#latencyAware ? this.#cheaper(first, second, now) : this.#lessLoaded(first, second);
    if (this.#slowStartMs > 0) {
      // A ramping winner keeps the pick with the probability of its ramp factor.
      const factor = this.#rampFactor(winner, now);
      if (factor < 1 && this.#random() >= factor) return winner === first ? second : first;
    }
    return winner;
  }

  #lessLoaded(first: InstanceState, second: InstanceState): InstanceState {
    // As many attempts in flight on both: split by weight (a coin flip when weights are equal).
    // Comparing (outstanding + 1) / weight here would send every call to the heavier one.
    if (first.outstanding === second.outstanding) return this.#byWeight(first, second);
    const firstLoad = (first.outstanding + 1) / first.instance.weight;
    const secondLoad = (second.outstanding + 1) / second.instance.weight;
    if (firstLoad === secondLoad) return this.#random() < 0.5 ? first : second;
    return firstLoad < secondLoad ? first : second;
  }

  #byWeight(first: InstanceState, second: InstanceState): InstanceState {
    const firstWeight = first.instance.weight;
    return this.#random() * (firstWeight + second.instance.weight) < firstWeight ? first : second;
  }

  /**
   * P2C with Finagle's cost: the lower EWMA latency × (attempts in flight + 1), per weight.
   * Latencies within 25% of each other are the same kind of instance and noise: then the
   * least-outstanding rule decides, so homogeneous instances share by weight as with 'p2c'.
   */
  #cheaper(first: InstanceState, second: InstanceState, now: number): InstanceState {
    const firstLatency = latencyNow(first, now);
    const secondLatency = latencyNow(second, now);
    if (firstLatency <= secondLatency * similarLatency && secondLatency <= firstLatency * similarLatency) {
      return this.#lessLoaded(first, second);
    }
    const firstCost = latencyCost(firstLatency, first.outstanding) / first.instance.weight;
    const secondCost = latencyCost(secondLatency, second.outstanding) / second.instance.weight;
    if (firstCost === secondCost) return this.#byWeight(first, second);
    return firstCost < secondCost ? first : second;
  }

  /**
   * Smooth weighted round-robin: every usable instance earns its weight in credit, the richest
   * is picked and pays the total. Weights 3:1 give a, a, b, a, … — exact per cycle, and spread
   * out rather than in bursts. Slow start scales a ramping instance's weight.
   */
  #weightedRoundRobin(states: readonly InstanceState[], tried: CallContext['tried'], now: number) {
    let best: InstanceState | undefined;
    let total = 0;
    for (const state of states) {
      if (!this.#usable(state, tried, now)) continue;
      const weight =
        this.#slowStartMs > 0 ? state.instance.weight * this.#rampFactor(state, now) : state.instance.weight;
      state.roundRobinCredit += weight;
      total += weight;
      if (best === undefined || state.roundRobinCredit > best.roundRobinCredit) best = state;
    }
    if (best !== undefined) best.roundRobinCredit -= total;
    return best;
  }

  #sample(candidates: Group): InstanceState {
    const states = candidates.states;
    const cumulative = candidates.cumulativeWeights;
    if (cumulative === undefined) return states[Math.floor(this.#random() * states.length)] as InstanceState;
    const target = this.#random() * candidates.totalWeight;
    let low = 0;
    let high = cumulative.length - 1;
    while (low < high) {
      const middle = (low + high) >> 1;
      if ((cumulative[middle] as number) <= target) low = middle + 1;
      else high = middle;
    }
    return states[low] as InstanceState;
  }

  /**
   * Last resort when every matching instance is ejected or failing health checks (Envoy's
   * panic mode): a healthy one coming back soonest, else any.
   */
  #chooseIgnoringHealth(candidates: Group): InstanceState | undefined {
    let best: InstanceState | undefined;
    for (const state of candidates.states) {
      if (
        best === undefined ||
        (state.healthy && !best.healthy) ||
        (state.healthy === best.healthy && state.ejectedUntil < best.ejectedUntil)
      ) {
        best = state;
      }
    }
    return best;
  }

  /**
   * Records the outcome of an attempt on `state` that started at `startedAt` (clock time,
   * {@link pickedAt} of its pick).
   */
  record(state: InstanceState, outcome: 'success' | 'failure' | 'neutral', startedAt = 0): void {
    state.outstanding--;
    const outlier = this.#outlier;
    if (outcome === 'neutral' || (outlier === undefined && !this.#latencyAware)) return;
    const failed = outcome === 'failure';
    const now = this.#clock.now();
    if (this.#latencyAware) observeLatency(state, now - startedAt, failed, now);
    if (outlier === undefined) return;
    state.windowRequests++;
    if (!failed) {
      state.consecutiveFailures = 0;
      // A healthy stretch after a return forgives one past ejection.
      if (state.timesEjected > 0 && state.ejectedUntil === 0 && now - state.returnedAt > outlier.baseEjectionMs) {
        state.timesEjected--;
        state.returnedAt = now;
      }
      return;
    }
    state.windowFailures++;
    state.consecutiveFailures++;
    if (state.consecutiveFailures >= outlier.consecutiveFailures) this.#eject(state, now, 'consecutive-failures');
  }

  #eject(state: InstanceState, now: number, reason: EjectionReason, rate?: number, threshold?: number): void {
    const outlier = this.#outlier as ResolvedOutlier;
    if (
      state.ejectedUntil !== 0 ||
      state.removed ||
      this.#ejected >= Math.floor((this.#routing.all.states.length * outlier.maxEjectionPercent) / 100)
    ) {
      return;
    }
    const backoffMs = Math.min(outlier.baseEjectionMs * 2 ** state.timesEjected, outlier.maxEjectionMs);
    // ±10% jitter: instances ejected together (one bad deploy) come back spread out.
    const ejectionMs = Math.round(backoffMs * (0.9 + 0.2 * this.#random()));
    state.timesEjected++;
    state.ejectedUntil = now + ejectionMs;
    state.ejectionReason = reason;
    state.checkPasses = 0;
    this.#ejected++;
    this.#epoch++;
    this.#arm(state.ejectedUntil);
    const event: InstanceEvent = {
      type: 'eject',
      instance: state.instance.url,
      reason,
      consecutiveFailures: state.consecutiveFailures,
      ejectionMs,
      timesEjected: state.timesEjected,
    };
    if (rate !== undefined) {
      event.rate = rate;
      event.threshold = threshold;
    }
    this.#onEvent?.(event);
  }

  #return(state: InstanceState, now: number, reason: 'expired' | 'health-check'): void {
    state.ejectedUntil = 0;
    state.ejectionReason = undefined;
    state.consecutiveFailures = 0;
    state.returnedAt = now;
    state.windowRequests = 0;
    state.windowFailures = 0;
    // Its latency history is from before the ejection: measure it afresh, ramping up.
    state.latencyCost = 0;
    state.latencyWeight = 0;
    state.latencyStamp = now;
    if (this.#slowStartMs > 0) state.rampStart = now;
    this.#ejected--;
    this.#epoch++;
    this.#onEvent?.({ type: 'return', instance: state.instance.url, reason });
  }

  /**
   * Records an active health check of `state`. `unhealthyThreshold` failures in a row take it
   * out of rotation; `healthyThreshold` passes bring it back, and end early an ejection for
   * consecutive failures (an outage that is over). Rate-based ejections run their course: an
   * instance that fails a share of real calls can still answer its health check.
   */
  recordCheck(state: InstanceState, passed: boolean): void {
    const thresholds = this.#healthThresholds;
    if (thresholds === undefined || state.removed || this.#closed) return;
    const now = this.#clock.now();
    if (!passed) {
      state.checkPasses = 0;
      state.checkFailures++;
      if (state.healthy && state.checkFailures >= thresholds.unhealthyThreshold) {
        state.healthy = false;
        this.#epoch++;
        this.#onEvent?.({ type: 'health', instance: state.instance.url, healthy: false });
      }
      return;
    }
    state.checkFailures = 0;
    state.checkPasses++;
    if (state.checkPasses < thresholds.healthyThreshold) return;
    if (!state.healthy) {
      state.healthy = true;
      state.consecutiveFailures = 0;
      if (this.#slowStartMs > 0) state.rampStart = now;
      this.#epoch++;
      this.#onEvent?.({ type: 'health', instance: state.instance.url, healthy: true });
    }
    if (state.ejectedUntil > now && state.ejectionReason === 'consecutive-failures') {
      this.#return(state, now, 'health-check');
    }
  }

  /** Arms the set's one timer for clock time `at`, unless it is already armed sooner. */
  #arm(at: number): void {
    if (this.#closed || at >= this.#timerAt) return;
    if (this.#timer !== undefined) this.#clock.clearTimeout(this.#timer);
    this.#timerAt = at;
    this.#timer = this.#clock.setTimeout(this.#onTimer, Math.max(0, at - this.#clock.now()));
  }

  /** Ends ejections whose time has come and, once per interval, judges rates. */
  #sweep(): void {
    this.#timer = undefined;
    this.#timerAt = Number.POSITIVE_INFINITY;
    if (this.#closed) return;
    const now = this.#clock.now();
    const states = this.#routing.all.states;
    const outlier = this.#outlier;
    const judging = outlier !== undefined && this.#rateDetection && now >= this.#nextIntervalAt;
    const minRequests = outlier?.minRequests ?? 0;
    // One pass over the instances (a client of a large fleet has hundreds): ejections that
    // ended, the next one to end, and the interval's counts, kept only for the instances
    // with enough requests to be judged.
    let judged: InstanceState[] | undefined;
    let nextReturn = Number.POSITIVE_INFINITY;
    for (const state of states) {
      const ejectedUntil = state.ejectedUntil;
      if (ejectedUntil !== 0) {
        if (ejectedUntil <= now) this.#return(state, now, 'expired');
        else if (ejectedUntil < nextReturn) nextReturn = ejectedUntil;
      }
      if (!judging) continue;
      if (state.ejectedUntil === 0 && state.healthy && state.windowRequests >= minRequests) {
        if (judged === undefined) judged = [state];
        else judged.push(state);
      } else {
        state.windowRequests = 0;
        state.windowFailures = 0;
      }
    }
    if (judging) {
      if (judged !== undefined) {
        // An ejection here arms the timer for its own end.
        for (const found of intervalOutliers(judged, outlier)) {
          this.#eject(found.state, now, found.reason, found.rate, found.threshold);
        }
        for (const state of judged) {
          state.windowRequests = 0;
          state.windowFailures = 0;
        }
      }
      this.#nextIntervalAt = now + outlier.intervalMs;
    }
    const next = Math.min(this.#nextIntervalAt, nextReturn);
    if (next !== Number.POSITIVE_INFINITY) this.#arm(next);
  }

  /**
   * Checks new outlier options (throws `INVALID_OPTION`, changing nothing) and returns what
   * puts them in force (`client.configure()`): ejections in progress run their course; the
   * next failure and the next interval are judged by the new settings.
   */
  prepareOutlier(outlier: OutlierOptions | false): () => void {
    const resolved = outlier === false ? undefined : resolveOutlier(outlier);
    return () => {
      this.#outlier = resolved;
      this.#rateDetection =
        resolved !== undefined &&
        (resolved.failurePercentage !== undefined || resolved.successRateStdevFactor !== undefined);
      this.#nextIntervalAt = Number.POSITIVE_INFINITY;
      if (!this.#closed) this.start();
    };
  }

  /** Stops the set's timer; nothing is timed afterwards. Idempotent. */
  close(): void {
    this.#closed = true;
    if (this.#timer !== undefined) this.#clock.clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#timerAt = Number.POSITIVE_INFINITY;
  }

  /** Number of instances out of rotation for failing active health checks. */
  get unhealthyCount(): number {
    let count = 0;
    for (const state of this.#routing.all.states) if (!state.healthy) count++;
    return count;
  }

  /**
   * 'p2c-ewma': the latency average the balancer compares for `state` now (decayed since its
   * last sample), in ms; undefined with other balancers or before its first measurement.
   */
  latencyOf(state: InstanceState): number | undefined {
    if (!this.#latencyAware) return undefined;
    const latency = latencyNow(state, this.#clock.now());
    return latency === 0 ? undefined : latency;
  }

  /** Number of instances currently ejected. */
  get ejectedCount(): number {
    return this.#ejected;
  }
}

function wasTried(tried: readonly Instance[], url: string): boolean {
  for (const instance of tried) if (instance.url === url) return true;
  return false;
}
