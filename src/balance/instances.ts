import type { CallContext, Instance } from '../core/call.js';
import type { Clock } from '../core/clock.js';
import { ErrorCode, invalidOption, isTelescopeError } from '../core/errors.js';

/** Outlier ejection settings. */
export interface OutlierOptions {
  /** Consecutive failures that eject an instance. @default 5 */
  consecutiveFailures?: number;
  /** First ejection period; the n-th ejection lasts base × 2^(n−1), capped. @default 10000 */
  baseEjectionMs?: number;
  /** Longest ejection period. @default 300000 */
  maxEjectionMs?: number;
  /** Never eject more than this share of the instances (rounded down). @default 50 */
  maxEjectionPercent?: number;
}

export const outlierDefaults = {
  consecutiveFailures: 5,
  baseEjectionMs: 10_000,
  maxEjectionMs: 300_000,
  maxEjectionPercent: 50,
} as const;

/** What the balancer decided about an instance. */
export type InstanceEvent =
  | { type: 'eject'; instance: string; consecutiveFailures: number; ejectionMs: number; timesEjected: number }
  | { type: 'return'; instance: string };

/** Live state of one instance. */
export class InstanceState {
  readonly instance: Instance;
  /** Attempts in flight. */
  outstanding = 0;
  consecutiveFailures = 0;
  /** Clock time until which the instance is ejected; 0 when it is not. */
  ejectedUntil = 0;
  timesEjected = 0;
  /** Clock time the instance last came back from an ejection. */
  returnedAt = 0;
  /** Set when discovery removed the instance; attempts in flight finish, no new ones start. */
  removed = false;
  /** Weighted round-robin: the running credit of smooth weighted round-robin (nginx's). */
  roundRobinCredit = 0;

  constructor(instance: Instance) {
    this.instance = instance;
  }
}

/**
 * Whether a failed attempt says something about the instance (as opposed to the request, the
 * caller or the response data): connect failures, resets, timeouts on the instance, broken
 * HTTP and 5xx answers.
 */
export function isInstanceFailure(error: unknown): boolean {
  if (!isTelescopeError(error) || error.instance === undefined) return false;
  switch (error.code) {
    case ErrorCode.CONNECT_FAILED:
    case ErrorCode.CONNECTION_RESET:
    case ErrorCode.ATTEMPT_TIMEOUT:
    case ErrorCode.DEADLINE_EXCEEDED:
      return true;
    case ErrorCode.HTTP_STATUS:
      return ((error as unknown as { status?: number }).status ?? 0) >= 500;
    case ErrorCode.INVALID_RESPONSE:
      return error.retryable;
    default:
      return false;
  }
}

/**
 * What a failed attempt says about its instance: `failure` (count it towards ejection),
 * `success` (the instance answered, e.g. a 4xx: it is healthy), or `neutral` (the attempt was
 * cancelled or never judged the instance: caller abort, losing hedge, client closed).
 */
export function outcomeOf(error: unknown): 'success' | 'failure' | 'neutral' {
  // An answer the endpoint's classification (retry.classify) judged: its verdict counts.
  const responseClass = isTelescopeError(error) && error.instance !== undefined ? error.responseClass : undefined;
  if (responseClass !== undefined) return responseClass === 'success' ? 'success' : 'failure';
  if (isInstanceFailure(error)) return 'failure';
  if (isTelescopeError(error) && error.instance !== undefined) {
    if (error.code === ErrorCode.HTTP_STATUS || error.code === ErrorCode.INVALID_RESPONSE) return 'success';
    if (error.code === ErrorCode.RESPONSE_TOO_LARGE) return 'success';
  }
  return 'neutral';
}

interface Group {
  readonly states: InstanceState[];
  /** Prefix sums of weights, or undefined when all weights are equal. */
  readonly cumulativeWeights: number[] | undefined;
}

function group(states: InstanceState[]): Group {
  const first = states[0]?.instance.weight;
  const uniform = states.every((state) => state.instance.weight === first);
  if (uniform) return { states, cumulativeWeights: undefined };
  let sum = 0;
  return { states, cumulativeWeights: states.map((state) => (sum += state.instance.weight)) };
}

/**
 * The instances of a service and their health: picks the instance for each attempt.
 *
 * Picking is O(1) on the usual path: candidates are sampled at random (weighted) and rejected
 * if tried, ejected or of another version; only when sampling keeps failing does it fall back
 * to a scan. Same-zone instances are preferred while any of them is usable.
 */
export class InstanceSet {
  readonly #clock: Clock;
  readonly #random: () => number;
  readonly #roundRobin: boolean;
  readonly #zone: string | undefined;
  readonly #outlier: Required<OutlierOptions> | undefined;
  readonly #onEvent: ((event: InstanceEvent) => void) | undefined;
  #byUrl = new Map<string, InstanceState>();
  #all: Group = group([]);
  #byZone = new Map<string, Group>();
  #byVersion = new Map<string, { all: Group; byZone: Map<string, Group> }>();
  #ejected = 0;
  #cursor = 0;

  constructor(options: {
    clock: Clock;
    random?: (() => number) | undefined;
    balancer?: 'p2c' | 'round-robin' | undefined;
    zone?: string | undefined;
    outlier?: OutlierOptions | false | undefined;
    onEvent?: ((event: InstanceEvent) => void) | undefined;
  }) {
    this.#clock = options.clock;
    this.#random = options.random ?? Math.random;
    const balancer = options.balancer ?? 'p2c';
    if (balancer !== 'p2c' && balancer !== 'round-robin') invalidOption('balancer', "'p2c' or 'round-robin'", balancer);
    this.#roundRobin = balancer === 'round-robin';
    this.#zone = options.zone;
    this.#outlier = options.outlier === false ? undefined : resolveOutlier(options.outlier ?? {});
    this.#onEvent = options.onEvent;
  }

  /** Current instances (not removed). */
  get instances(): InstanceState[] {
    return this.#all.states;
  }

  /** The state of an instance by origin. */
  get(url: string): InstanceState | undefined {
    return this.#byUrl.get(url);
  }

  /** Replaces the set; state of instances that stay is kept. Returns the removed origins. */
  update(instances: readonly Instance[]): string[] {
    const next = new Map<string, InstanceState>();
    for (const instance of instances) {
      const existing = this.#byUrl.get(instance.url);
      const keep =
        existing !== undefined &&
        existing.instance.zone === instance.zone &&
        existing.instance.version === instance.version &&
        existing.instance.weight === instance.weight;
      next.set(instance.url, keep ? existing : new InstanceState(instance));
    }
    const removed: string[] = [];
    for (const [url, state] of this.#byUrl) {
      if (next.get(url) !== state) {
        state.removed = true;
        if (!next.has(url)) removed.push(url);
      }
    }
    this.#byUrl = next;
    const states = [...next.values()];
    this.#all = group(states);
    this.#byZone = groupBy(states, (state) => state.instance.zone);
    this.#byVersion = new Map();
    for (const [version, members] of splitBy(states, (state) => state.instance.version)) {
      this.#byVersion.set(version, {
        all: group(members),
        byZone: groupBy(members, (state) => state.instance.zone),
      });
    }
    this.#ejected = states.filter((state) => state.ejectedUntil !== 0).length;
    return removed;
  }

  /**
   * Picks the instance for the context's next attempt, or undefined when no instance matches
   * the route. Prefers instances not yet tried in this call; when every usable instance has
   * been tried, reuses one and asks the transport for a fresh connection.
   */
  pick(context: CallContext): InstanceState | undefined {
    const now = this.#clock.now();
    const version = context.route?.version;
    let all = this.#all;
    let byZone = this.#byZone;
    if (version !== undefined) {
      const subset = this.#byVersion.get(version);
      if (subset === undefined) return undefined;
      all = subset.all;
      byZone = subset.byZone;
    }
    if (all.states.length === 0) return undefined;
    const zone = context.route?.zone ?? this.#zone;
    const tried = context.tried;
    const local = zone === undefined ? undefined : byZone.get(zone);
    if (local !== undefined && local !== all) {
      const chosen = this.#choose(local, tried, now);
      if (chosen !== undefined) return chosen;
    }
    const chosen = this.#choose(all, tried, now);
    if (chosen !== undefined) return chosen;
    // Every usable instance was tried in this call: go again over a fresh connection.
    const reuse = this.#choose(all, undefined, now) ?? this.#chooseIgnoringEjection(all);
    if (reuse !== undefined && tried !== undefined) context.freshConnection = true;
    return reuse;
  }

  #usable(state: InstanceState, tried: CallContext['tried'], now: number): boolean {
    if (state.ejectedUntil !== 0) {
      if (state.ejectedUntil > now) return false;
      this.#return(state, now);
    }
    return tried === undefined || !wasTried(tried, state.instance.url);
  }

  #choose(candidates: Group, tried: CallContext['tried'], now: number): InstanceState | undefined {
    const states = candidates.states;
    const count = states.length;
    if (count === 0) return undefined;
    if (this.#roundRobin) {
      if (candidates.cumulativeWeights !== undefined) return this.#weightedRoundRobin(states, tried, now);
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
    // As many attempts in flight on both: split by weight (a coin flip when weights are equal).
    // Comparing (outstanding + 1) / weight here would send every call to the heavier one.
    if (first.outstanding === second.outstanding) {
      const firstWeight = first.instance.weight;
      return this.#random() * (firstWeight + second.instance.weight) < firstWeight ? first : second;
    }
    const firstLoad = (first.outstanding + 1) / first.instance.weight;
    const secondLoad = (second.outstanding + 1) / second.instance.weight;
    if (firstLoad === secondLoad) return this.#random() < 0.5 ? first : second;
    return firstLoad < secondLoad ? first : second;
  }

  /**
   * Smooth weighted round-robin: every usable instance earns its weight in credit, the richest
   * is picked and pays the total. Weights 3:1 give a, a, b, a, … — exact per cycle, and spread
   * out rather than in bursts.
   */
  #weightedRoundRobin(states: readonly InstanceState[], tried: CallContext['tried'], now: number) {
    let best: InstanceState | undefined;
    let total = 0;
    for (const state of states) {
      if (!this.#usable(state, tried, now)) continue;
      state.roundRobinCredit += state.instance.weight;
      total += state.instance.weight;
      if (best === undefined || state.roundRobinCredit > best.roundRobinCredit) best = state;
    }
    if (best !== undefined) best.roundRobinCredit -= total;
    return best;
  }

  #sample(candidates: Group): InstanceState {
    const states = candidates.states;
    const cumulative = candidates.cumulativeWeights;
    if (cumulative === undefined) return states[Math.floor(this.#random() * states.length)] as InstanceState;
    const target = this.#random() * (cumulative[cumulative.length - 1] as number);
    let low = 0;
    let high = cumulative.length - 1;
    while (low < high) {
      const middle = (low + high) >> 1;
      if ((cumulative[middle] as number) <= target) low = middle + 1;
      else high = middle;
    }
    return states[low] as InstanceState;
  }

  /** Last resort when every matching instance is ejected: the one coming back soonest. */
  #chooseIgnoringEjection(candidates: Group): InstanceState | undefined {
    let best: InstanceState | undefined;
    for (const state of candidates.states) {
      if (best === undefined || state.ejectedUntil < best.ejectedUntil) best = state;
    }
    return best;
  }

  /** Records the outcome of an attempt on `state`. */
  record(state: InstanceState, outcome: 'success' | 'failure' | 'neutral'): void {
    state.outstanding--;
    const outlier = this.#outlier;
    if (outlier === undefined || outcome === 'neutral') return;
    const failed = outcome === 'failure';
    const now = this.#clock.now();
    if (!failed) {
      state.consecutiveFailures = 0;
      // A healthy stretch after a return forgives one past ejection.
      if (state.timesEjected > 0 && state.ejectedUntil === 0 && now - state.returnedAt > outlier.baseEjectionMs) {
        state.timesEjected--;
        state.returnedAt = now;
      }
      return;
    }
    state.consecutiveFailures++;
    if (
      state.consecutiveFailures >= outlier.consecutiveFailures &&
      state.ejectedUntil === 0 &&
      !state.removed &&
      this.#ejected < Math.floor((this.#all.states.length * outlier.maxEjectionPercent) / 100)
    ) {
      const ejectionMs = Math.min(outlier.baseEjectionMs * 2 ** state.timesEjected, outlier.maxEjectionMs);
      state.timesEjected++;
      state.ejectedUntil = now + ejectionMs;
      this.#ejected++;
      this.#onEvent?.({
        type: 'eject',
        instance: state.instance.url,
        consecutiveFailures: state.consecutiveFailures,
        ejectionMs,
        timesEjected: state.timesEjected,
      });
    }
  }

  #return(state: InstanceState, now: number): void {
    state.ejectedUntil = 0;
    state.consecutiveFailures = 0;
    state.returnedAt = now;
    this.#ejected--;
    this.#onEvent?.({ type: 'return', instance: state.instance.url });
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

function resolveOutlier(options: OutlierOptions): Required<OutlierOptions> {
  const resolved = { ...outlierDefaults, ...stripUndefined(options) };
  if (!(Number.isInteger(resolved.consecutiveFailures) && resolved.consecutiveFailures >= 1)) {
    invalidOption('outlier.consecutiveFailures', 'an integer ≥ 1', resolved.consecutiveFailures);
  }
  if (!(Number.isFinite(resolved.baseEjectionMs) && resolved.baseEjectionMs > 0)) {
    invalidOption('outlier.baseEjectionMs', 'a positive finite number', resolved.baseEjectionMs);
  }
  if (!(Number.isFinite(resolved.maxEjectionMs) && resolved.maxEjectionMs >= resolved.baseEjectionMs)) {
    invalidOption(
      'outlier.maxEjectionMs',
      `a finite number ≥ baseEjectionMs (${resolved.baseEjectionMs})`,
      resolved.maxEjectionMs,
    );
  }
  if (!(resolved.maxEjectionPercent >= 0 && resolved.maxEjectionPercent <= 100)) {
    invalidOption('outlier.maxEjectionPercent', 'a number in [0, 100]', resolved.maxEjectionPercent);
  }
  return resolved;
}

function stripUndefined<T extends object>(value: T): Partial<T> {
  return Object.fromEntries(Object.entries(value).filter(([, item]) => item !== undefined)) as Partial<T>;
}

function splitBy(
  states: InstanceState[],
  key: (state: InstanceState) => string | undefined,
): Map<string, InstanceState[]> {
  const groups = new Map<string, InstanceState[]>();
  for (const state of states) {
    const name = key(state);
    if (name === undefined) continue;
    const members = groups.get(name);
    if (members === undefined) groups.set(name, [state]);
    else members.push(state);
  }
  return groups;
}

function groupBy(states: InstanceState[], key: (state: InstanceState) => string | undefined): Map<string, Group> {
  const groups = new Map<string, Group>();
  for (const [name, members] of splitBy(states, key)) groups.set(name, group(members));
  return groups;
}
