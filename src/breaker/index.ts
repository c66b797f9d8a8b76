/**
 * Breaker layer: one circuit per service + endpoint. Open → `CIRCUIT_OPEN` at once, no I/O.
 *
 * Order: below deadline and observe, above bulkhead and retry: a call with its retry is one
 * event for the circuit. Only failures that say the dependency is unhealthy count: not 4xx,
 * not invalid requests, not caller aborts, not the local bulkhead shedding, not a budget too
 * small to try. Instance-level failures are the balancer's job (outlier ejection).
 *
 * Opening keeps opossum's semantics and option meanings (rolling window, the checks run at each
 * failure, the rate must exceed the threshold), plus resilience4j's slow calls and Finagle's
 * consecutive failures (a window that held a healthy stretch needs half its length to see an
 * outage; `consecutiveFailures` failed calls in a row see it at once). Recovery is
 * built to be fast without hammering a sick dependency: an open circuit waits a jittered,
 * exponentially growing time (`minResetTimeoutMs` doubling up to `resetTimeoutMs`), then lets
 * one probe through; once it passes, `halfOpenProbes − 1` more may go together, and all must
 * pass to close; a closed circuit starts with a fresh window and ramps up (calls in flight
 * capped at `halfOpenProbes`, the cap doubling every `rampMs / 10`). Operators can hold a
 * circuit open or closed (`forceOpen`, `forceClosed`) and `reset` it.
 *
 * The circuit is telescope's own: every timer is on the client's clock (fake clocks and the
 * storm simulator drive it too), an outcome can be neutral (an aborted or shed call neither
 * opens nor closes the circuit), and the success path is two counter increments and no event.
 * Each circuit also carries the endpoint's client-side throttle (src/throttle), so that calls
 * the circuit fails fast are not counted by it and probes are never throttled.
 */
import {
  type Call,
  type CallContext,
  callNext,
  type IncomingResponse,
  type Layer,
  type OutgoingRequest,
} from '../core/call.js';
import { channels } from '../core/channels.js';
import type { Clock, TimerHandle } from '../core/clock.js';
import { ErrorCode, invalidOption, isTelescopeError, TelescopeError } from '../core/errors.js';
import { Throttle, type ThrottleOptions, type ThrottleSettings, throttleSettings } from '../throttle/index.js';

/** `breaker` option of `createClient`. */
export interface BreakerOptions {
  /** Calls in the window before the circuit may open. @default 20 */
  volumeThreshold?: number;
  /** Failed share of calls in the window that opens the circuit (more than this). @default 50 */
  errorThresholdPercentage?: number;
  /**
   * Failed calls in a row that open the circuit whatever the window holds (Finagle's failure
   * accrual): a dependency that went down after a healthy stretch is cut off after this many
   * calls, not after half the window. 0 to rely on the window alone. @default 20
   */
  consecutiveFailures?: number;
  /**
   * Longest wait of an open circuit before it lets a probe through: the waits start at
   * `minResetTimeoutMs`, double while probes keep failing, and stop growing here (each one
   * jittered down by up to half). @default 1000
   */
  resetTimeoutMs?: number;
  /** First wait of an open circuit before a probe. At most `resetTimeoutMs`. @default 250 */
  minResetTimeoutMs?: number;
  /**
   * Probes that must succeed in a row to close a half-open circuit (resilience4j's
   * `permittedNumberOfCallsInHalfOpenState`): the first goes alone, the others together once
   * it passed; any failure opens the circuit again. An integer ≥ 1. @default 3
   */
  halfOpenProbes?: number;
  /**
   * After closing, calls in flight are capped at `halfOpenProbes` and the cap doubles every
   * `rampMs / 10` until `rampMs` have passed (slow start); calls over the cap fail fast with
   * `CIRCUIT_OPEN`. 0 for no ramp. @default 1000
   */
  rampMs?: number;
  /**
   * A call slower than this (success or failure) is a slow call; with `slowCallRatePercent`
   * slow calls open the circuit too. Unset: durations are not measured. @default undefined
   */
  slowCallMs?: number;
  /** Share of slow calls in the window (at least this) that opens the circuit. @default 100 */
  slowCallRatePercent?: number;
  /** Length of the rolling window. @default 10000 */
  rollingWindowMs?: number;
}

export const breakerDefaults = {
  volumeThreshold: 20,
  errorThresholdPercentage: 50,
  consecutiveFailures: 20,
  resetTimeoutMs: 1000,
  minResetTimeoutMs: 250,
  halfOpenProbes: 3,
  rampMs: 1000,
  slowCallMs: undefined,
  slowCallRatePercent: 100,
  rollingWindowMs: 10_000,
} as const;

export type CircuitState = 'closed' | 'open' | 'half-open';

/**
 * Why a circuit changed state: `failures` / `slow-calls` (the window crossed a threshold),
 * `probe-due` (an open circuit's wait ended), `probe-failed`, `probes-passed`, or an
 * operator's `force-open` / `force-closed` / `reset`.
 */
export type CircuitCause =
  | 'failures'
  | 'slow-calls'
  | 'probe-due'
  | 'probe-failed'
  | 'probes-passed'
  | 'force-open'
  | 'force-closed'
  | 'reset';

/** One endpoint's circuit, for operators: `client.circuit('getMovie')`. */
export interface CircuitControl {
  readonly endpoint: string;
  /** The circuit's state now. */
  state(): CircuitState;
  /** `open` or `closed` while an operator holds the circuit there, else `undefined`. */
  forced(): 'open' | 'closed' | undefined;
  /** The endpoint's throttle: the probability that a call made now is rejected (0 without a throttle). */
  throttleProbability(): number;
  /** Holds the circuit open: every call fails fast with `CIRCUIT_OPEN`, no probes, until `reset()` or `forceClosed()`. */
  forceOpen(): void;
  /** Holds the circuit closed: every call goes through, nothing is counted or throttled, until `reset()` or `forceOpen()`. */
  forceClosed(): void;
  /** Back to an ordinary closed circuit with an empty window (and throttle), no ramp. */
  reset(): void;
}

/** Whether a failure says the dependency is unhealthy. */
export function countsForBreaker(error: unknown): boolean {
  if (!isTelescopeError(error)) return true;
  // The endpoint's classification (retry.classify) decides when it judged the answer.
  const responseClass = error.responseClass;
  if (responseClass !== undefined) return responseClass !== 'success';
  switch (error.code) {
    case ErrorCode.HTTP_STATUS: {
      const status = (error as unknown as { status: number }).status;
      return status >= 500 || status === 429;
    }
    case ErrorCode.DEADLINE_EXCEEDED:
      // Failing before any I/O says the budget was small, not that the dependency is down.
      return error.requestSent !== false;
    case ErrorCode.CONNECT_FAILED:
    case ErrorCode.CONNECTION_RESET:
    case ErrorCode.ATTEMPT_TIMEOUT:
    case ErrorCode.NO_HEALTHY_INSTANCE:
      return true;
    case ErrorCode.INVALID_RESPONSE:
      return error.retryable;
    default:
      return false;
  }
}

/**
 * What a call's outcome means for the circuit: `failure` (the dependency is unhealthy),
 * `success` (it answered, even with a 4xx), or `neutral` (nothing was learned about it:
 * the caller aborted, the bulkhead shed the call, the budget was too small to try, the
 * request was invalid, the client closed).
 */
export function breakerOutcome(error: unknown): 'failure' | 'success' | 'neutral' {
  if (countsForBreaker(error)) return 'failure';
  if (!isTelescopeError(error)) return 'failure';
  if (error.responseClass === 'success') return 'success';
  switch (error.code) {
    case ErrorCode.HTTP_STATUS:
    case ErrorCode.INVALID_RESPONSE:
    case ErrorCode.RESPONSE_TOO_LARGE:
    case ErrorCode.TOO_MANY_REDIRECTS:
    case ErrorCode.REDIRECT_REFUSED:
      return 'success';
    default:
      return 'neutral';
  }
}

export interface BreakerLayer {
  layer: Layer;
  /** State of each endpoint's circuit created so far. */
  state(endpoint: string): CircuitState | undefined;
  /** The operator's handle on an endpoint's circuit (made on first use). */
  control(endpoint: string): CircuitControl;
  /** Stops the rotation timer and every circuit's timers. */
  shutdown(): void;
  /**
   * Checks new options (throws `INVALID_OPTION`, changing nothing) and returns what applies
   * them to every circuit, made and to come (`client.configure()`).
   */
  prepare(options: BreakerOptions | false, throttle: ThrottleOptions | false | undefined): () => void;
}

/** Number of buckets of the rolling window (as opossum's default). */
const buckets = 10;

/** Doublings of the ramp's in-flight cap over `rampMs`: from `halfOpenProbes` to 1024× that. */
const rampDoublings = 10;

interface CircuitSettings {
  /** False when only the throttle is wanted (`breaker: false`): the circuit never opens. */
  trips: boolean;
  volumeThreshold: number;
  errorThresholdPercentage: number;
  consecutiveFailures: number;
  resetTimeoutMs: number;
  minResetTimeoutMs: number;
  halfOpenProbes: number;
  rampMs: number;
  slowCallMs: number | undefined;
  slowCallRatePercent: number;
  clock: Clock;
  random: () => number;
  service: string;
  endpoint: string;
  report: (state: CircuitState, cause: CircuitCause) => void;
}

type Outcome = 'failure' | 'success' | 'neutral';

/**
 * One endpoint's circuit, and its throttle. Counts live in a ring of buckets rotated by the
 * layer's timer.
 */
class EndpointCircuit implements CircuitControl {
  readonly endpoint: string;
  current: CircuitState = 'closed';
  held: 'open' | 'closed' | undefined = undefined;
  private readonly successes = new Uint32Array(buckets);
  private readonly failures = new Uint32Array(buckets);
  private readonly slowCalls = new Uint32Array(buckets);
  private bucket = 0;
  private successTotal = 0;
  private failureTotal = 0;
  private slowTotal = 0;
  /** Failed calls since the last successful one. */
  private failedInARow = 0;
  /** Openings since the circuit last closed: the exponent of the probe backoff. */
  private openings = 0;
  private resetTimer: TimerHandle | undefined;
  /** Bumped on every state change: a probe's answer counts only in the episode that sent it. */
  private episode = 0;
  private probesStarted = 0;
  private probesPassed = 0;
  /** Clock time the ramp ends (0: no ramp). */
  private rampUntil = 0;
  private rampStart = 0;
  private rampInFlight = 0;

  // Handlers bound once per circuit: the success path allocates no closure per call.
  readonly onResponse = <T>(response: T): T => {
    this.record('success', false);
    return response;
  };
  readonly onError = (error: unknown): never => {
    this.record(breakerOutcome(error), false);
    throw error;
  };

  constructor(
    private readonly settings: CircuitSettings,
    private throttle: Throttle | undefined,
  ) {
    this.endpoint = settings.endpoint;
  }

  state(): CircuitState {
    return this.current;
  }

  forced(): 'open' | 'closed' | undefined {
    return this.held;
  }

  throttleProbability(): number {
    return this.throttle === undefined ? 0 : this.throttle.rejectProbability(this.settings.clock.now());
  }

  /** Runs one call through the circuit (and its throttle). */
  call(next: Call, request: OutgoingRequest, context: CallContext): Promise<IncomingResponse> {
    if (this.current === 'closed') {
      if (this.held === 'closed') return next(request, context);
      if (this.throttle !== undefined && !this.throttle.admit(this.settings.clock.now(), this.settings.random)) {
        return Promise.reject(this.failFast(context, ErrorCode.THROTTLED));
      }
      if (this.rampUntil === 0 && this.settings.slowCallMs === undefined) {
        return next(request, context).then(this.onResponse, this.onError);
      }
      return this.tracked(next, request, context);
    }
    if (
      this.current === 'half-open' &&
      this.probesStarted < (this.probesPassed === 0 ? 1 : this.settings.halfOpenProbes)
    ) {
      return this.probe(next, request, context);
    }
    return Promise.reject(this.failFast(context, ErrorCode.CIRCUIT_OPEN));
  }

  /** A closed-circuit call while ramping up or measuring slow calls (allocates a closure). */
  private tracked(next: Call, request: OutgoingRequest, context: CallContext): Promise<IncomingResponse> {
    const { clock, slowCallMs } = this.settings;
    const startedAt = clock.now();
    let ramped = false;
    if (this.rampUntil !== 0) {
      if (startedAt >= this.rampUntil) {
        this.rampUntil = 0;
      } else {
        const cap =
          this.settings.halfOpenProbes * 2 ** ((rampDoublings * (startedAt - this.rampStart)) / this.settings.rampMs);
        if (this.rampInFlight >= cap) {
          return Promise.reject(this.failFast(context, ErrorCode.CIRCUIT_OPEN, 'ramping up after recovery'));
        }
        this.rampInFlight++;
        ramped = true;
      }
    }
    const slow = () => slowCallMs !== undefined && clock.now() - startedAt > slowCallMs;
    return callNext(next, request, context).then(
      (response) => {
        if (ramped) this.rampInFlight--;
        this.record('success', slow());
        return response;
      },
      (error: unknown) => {
        if (ramped) this.rampInFlight--;
        const outcome = breakerOutcome(error);
        this.record(outcome, outcome !== 'neutral' && slow());
        throw error;
      },
    );
  }

  private probe(next: Call, request: OutgoingRequest, context: CallContext): Promise<IncomingResponse> {
    const { clock, slowCallMs } = this.settings;
    this.probesStarted++;
    context.probe = true;
    const episode = this.episode;
    const startedAt = clock.now();
    const slow = () => slowCallMs !== undefined && clock.now() - startedAt > slowCallMs;
    return callNext(next, request, context).then(
      (response) => {
        this.endProbe(episode, slow() ? 'failure' : 'success');
        return response;
      },
      (error: unknown) => {
        const outcome = breakerOutcome(error);
        this.endProbe(episode, outcome === 'success' && slow() ? 'failure' : outcome);
        throw error;
      },
    );
  }

  private failFast(context: CallContext, code: ErrorCode, why?: string): TelescopeError {
    const { service } = this.settings;
    const reason =
      code === ErrorCode.THROTTLED
        ? 'throttled: the dependency accepts too little of what it is sent'
        : (why ?? (this.held === 'open' ? 'circuit forced open' : 'circuit open'));
    return new TelescopeError(code, `${service}.${context.endpoint}: ${reason} (failing fast, no request sent)`, {
      service,
      endpoint: context.endpoint,
      requestSent: false,
    });
  }

  rotate(): void {
    const next = (this.bucket + 1) % buckets;
    this.successTotal -= this.successes[next] as number;
    this.failureTotal -= this.failures[next] as number;
    this.slowTotal -= this.slowCalls[next] as number;
    this.successes[next] = 0;
    this.failures[next] = 0;
    this.slowCalls[next] = 0;
    this.bucket = next;
  }

  /** The outcome of a call admitted while closed. */
  private record(outcome: Outcome, slow: boolean): void {
    if (this.throttle !== undefined) {
      if (outcome === 'success') this.throttle.accepted();
      else if (outcome === 'failure') this.throttle.refused();
    }
    // A call admitted before the circuit opened (or was forced) says nothing about its state now.
    if (this.current !== 'closed' || this.held !== undefined || outcome === 'neutral') return;
    if (outcome === 'success') {
      (this.successes[this.bucket] as number)++;
      this.successTotal++;
      this.failedInARow = 0;
    } else {
      (this.failures[this.bucket] as number)++;
      this.failureTotal++;
      this.failedInARow++;
    }
    if (slow) {
      (this.slowCalls[this.bucket] as number)++;
      this.slowTotal++;
    }
    if (outcome === 'success' && !slow) return;
    if (!this.settings.trips) return;
    const { consecutiveFailures } = this.settings;
    if (consecutiveFailures > 0 && this.failedInARow >= consecutiveFailures) {
      this.open('failures');
      return;
    }
    const calls = this.successTotal + this.failureTotal;
    if (calls < this.settings.volumeThreshold) return;
    if ((this.failureTotal / calls) * 100 > this.settings.errorThresholdPercentage) this.open('failures');
    else if (
      this.settings.slowCallMs !== undefined &&
      (this.slowTotal / calls) * 100 >= this.settings.slowCallRatePercent
    ) {
      this.open('slow-calls');
    }
  }

  private clearWindow(): void {
    this.failedInARow = 0;
    this.successes.fill(0);
    this.failures.fill(0);
    this.slowCalls.fill(0);
    this.successTotal = 0;
    this.failureTotal = 0;
    this.slowTotal = 0;
  }

  /** The wait before the next probe: exponential from the minimum to the maximum, jittered down by up to half. */
  probeDelayMs(openings: number): number {
    const { minResetTimeoutMs, resetTimeoutMs, random } = this.settings;
    const full = Math.min(resetTimeoutMs, minResetTimeoutMs * 2 ** Math.min(openings - 1, 30));
    return full * (1 - 0.5 * random());
  }

  private open(cause: CircuitCause): void {
    this.stopTimer();
    this.current = 'open';
    this.episode++;
    this.openings++;
    this.rampUntil = 0;
    this.resetTimer = this.settings.clock.setTimeout(() => {
      this.resetTimer = undefined;
      this.current = 'half-open';
      this.episode++;
      this.probesStarted = 0;
      this.probesPassed = 0;
      this.settings.report('half-open', 'probe-due');
    }, this.probeDelayMs(this.openings));
    this.settings.report('open', cause);
  }

  private endProbe(episode: number, outcome: Outcome): void {
    if (episode !== this.episode || this.current !== 'half-open') return;
    if (outcome === 'failure') {
      this.open('probe-failed');
    } else if (outcome === 'success') {
      this.probesPassed++;
      if (this.probesPassed >= this.settings.halfOpenProbes) this.close();
    } else {
      // Neutral (the probe was aborted or shed): its slot goes to the next call.
      this.probesStarted--;
    }
  }

  private close(): void {
    this.current = 'closed';
    this.episode++;
    this.openings = 0;
    // The failures that opened the circuit are history once probes passed (resilience4j
    // starts a closed circuit with fresh metrics); so is the throttle's view of the outage.
    this.clearWindow();
    this.throttle?.reset();
    if (this.settings.rampMs > 0) {
      this.rampStart = this.settings.clock.now();
      this.rampUntil = this.rampStart + this.settings.rampMs;
    }
    this.settings.report('closed', 'probes-passed');
  }

  /**
   * New thresholds from `client.configure()`: they apply from the next call and the next
   * decision; the window's counts, the state and an operator's hold are kept. A changed
   * throttle starts a new window.
   */
  reconfigure(
    options: Omit<CircuitSettings, 'clock' | 'random' | 'service' | 'endpoint' | 'report'>,
    throttle: ThrottleSettings | undefined,
  ): void {
    Object.assign(this.settings, options);
    if (throttle === undefined) this.throttle = undefined;
    else if (this.throttle === undefined || !this.throttle.adopt(throttle)) this.throttle = new Throttle(throttle);
  }

  forceOpen(): void {
    this.stopTimer();
    this.held = 'open';
    this.current = 'open';
    this.episode++;
    this.rampUntil = 0;
    this.settings.report('open', 'force-open');
  }

  forceClosed(): void {
    this.stopTimer();
    this.held = 'closed';
    this.current = 'closed';
    this.episode++;
    this.rampUntil = 0;
    this.clearWindow();
    this.settings.report('closed', 'force-closed');
  }

  reset(): void {
    this.stopTimer();
    this.held = undefined;
    this.current = 'closed';
    this.episode++;
    this.openings = 0;
    this.rampUntil = 0;
    this.clearWindow();
    this.throttle?.reset();
    this.settings.report('closed', 'reset');
  }

  private stopTimer(): void {
    if (this.resetTimer !== undefined) this.settings.clock.clearTimeout(this.resetTimer);
    this.resetTimer = undefined;
  }

  shutdown(): void {
    this.stopTimer();
  }
}

/** Checks `breaker` options and fills in defaults; throws `INVALID_OPTION` naming the option. */
function breakerSettings(options: BreakerOptions) {
  if (typeof options !== 'object' || options === null) invalidOption('breaker', 'an object or false', options);
  const volumeThreshold = options.volumeThreshold ?? breakerDefaults.volumeThreshold;
  const errorThresholdPercentage = options.errorThresholdPercentage ?? breakerDefaults.errorThresholdPercentage;
  const consecutiveFailures = options.consecutiveFailures ?? breakerDefaults.consecutiveFailures;
  const resetTimeoutMs = options.resetTimeoutMs ?? breakerDefaults.resetTimeoutMs;
  const minResetTimeoutMs = options.minResetTimeoutMs ?? Math.min(breakerDefaults.minResetTimeoutMs, resetTimeoutMs);
  const halfOpenProbes = options.halfOpenProbes ?? breakerDefaults.halfOpenProbes;
  const rampMs = options.rampMs ?? breakerDefaults.rampMs;
  const slowCallMs = options.slowCallMs;
  const slowCallRatePercent = options.slowCallRatePercent ?? breakerDefaults.slowCallRatePercent;
  const rollingWindowMs = options.rollingWindowMs ?? breakerDefaults.rollingWindowMs;
  if (!(Number.isInteger(volumeThreshold) && volumeThreshold >= 0)) {
    invalidOption('breaker.volumeThreshold', 'an integer ≥ 0', volumeThreshold);
  }
  if (!(errorThresholdPercentage > 0 && errorThresholdPercentage <= 100)) {
    invalidOption('breaker.errorThresholdPercentage', 'a number in (0, 100]', errorThresholdPercentage);
  }
  if (!(Number.isInteger(consecutiveFailures) && consecutiveFailures >= 0)) {
    invalidOption('breaker.consecutiveFailures', 'an integer ≥ 0 (0: the window alone)', consecutiveFailures);
  }
  if (!(typeof resetTimeoutMs === 'number' && Number.isFinite(resetTimeoutMs) && resetTimeoutMs > 0)) {
    invalidOption('breaker.resetTimeoutMs', 'a positive finite number', resetTimeoutMs);
  }
  if (!(typeof minResetTimeoutMs === 'number' && minResetTimeoutMs > 0 && minResetTimeoutMs <= resetTimeoutMs)) {
    invalidOption(
      'breaker.minResetTimeoutMs',
      `a number in (0, resetTimeoutMs = ${resetTimeoutMs}]`,
      minResetTimeoutMs,
    );
  }
  if (!(Number.isInteger(halfOpenProbes) && halfOpenProbes >= 1 && halfOpenProbes <= 1000)) {
    invalidOption('breaker.halfOpenProbes', 'an integer in [1, 1000]', halfOpenProbes);
  }
  if (!(typeof rampMs === 'number' && Number.isFinite(rampMs) && rampMs >= 0)) {
    invalidOption('breaker.rampMs', 'a finite number ≥ 0 (0: no ramp)', rampMs);
  }
  if (slowCallMs !== undefined && !(typeof slowCallMs === 'number' && Number.isFinite(slowCallMs) && slowCallMs >= 0)) {
    invalidOption('breaker.slowCallMs', 'a finite number ≥ 0, or undefined (slow calls not counted)', slowCallMs);
  }
  if (!(typeof slowCallRatePercent === 'number' && slowCallRatePercent > 0 && slowCallRatePercent <= 100)) {
    invalidOption('breaker.slowCallRatePercent', 'a number in (0, 100]', slowCallRatePercent);
  }
  if (!(Number.isFinite(rollingWindowMs) && rollingWindowMs >= 100)) {
    invalidOption('breaker.rollingWindowMs', 'a finite number ≥ 100', rollingWindowMs);
  }
  return {
    volumeThreshold,
    errorThresholdPercentage,
    consecutiveFailures,
    resetTimeoutMs,
    minResetTimeoutMs,
    halfOpenProbes,
    rampMs,
    slowCallMs,
    slowCallRatePercent,
    rollingWindowMs,
  };
}

/**
 * The breaker layer (and the throttle, which lives beside each circuit).
 *
 * `options: false` keeps only the throttle: circuits never open.
 *
 * @example
 * const { layer } = breaker({ volumeThreshold: 20 }, { clock, service: 'movies' });
 */
export function breaker(
  options: BreakerOptions | false,
  environment: {
    clock: Clock;
    service: string;
    /** Random source of the probe jitter and the throttle. @default Math.random */
    random?: () => number;
    /** Client-side adaptive throttling per endpoint. @default undefined (none) */
    throttle?: ThrottleOptions | false;
    onState?: (endpoint: string, state: CircuitState, cause: CircuitCause) => void;
  },
): BreakerLayer {
  let settings = breakerSettings(options === false ? {} : options);
  let trips = options !== false;
  let throttle =
    environment.throttle === undefined || environment.throttle === false
      ? undefined
      : throttleSettings(environment.throttle);
  const { clock, service, onState } = environment;
  const random = environment.random ?? Math.random;
  const circuits = new Map<string, EndpointCircuit>();
  // One rotation timer for every circuit of the client, on the client's clock.
  let rotationTimer: TimerHandle | undefined;
  const rotate = () => {
    for (const circuit of circuits.values()) circuit.rotate();
    rotationTimer = clock.setTimeout(rotate, settings.rollingWindowMs / buckets);
  };

  const circuitFor = (endpoint: string): EndpointCircuit => {
    let circuit = circuits.get(endpoint);
    if (circuit !== undefined) return circuit;
    if (rotationTimer === undefined) rotationTimer = clock.setTimeout(rotate, settings.rollingWindowMs / buckets);
    circuit = new EndpointCircuit(
      {
        ...settings,
        trips,
        clock,
        random,
        service,
        endpoint,
        report: (state, cause) => {
          onState?.(endpoint, state, cause);
          if (channels.breakerState.hasSubscribers) {
            channels.breakerState.publish({ service, endpoint, state, cause });
          }
        },
      },
      throttle === undefined ? undefined : new Throttle(throttle),
    );
    circuits.set(endpoint, circuit);
    return circuit;
  };

  return {
    state: (endpoint) => circuits.get(endpoint)?.current,
    control: circuitFor,
    shutdown() {
      if (rotationTimer !== undefined) clock.clearTimeout(rotationTimer);
      rotationTimer = undefined;
      for (const circuit of circuits.values()) circuit.shutdown();
      circuits.clear();
    },
    layer: (next) => (request, context) => circuitFor(context.endpoint).call(next, request, context),
    prepare(nextOptions, nextThrottle) {
      const nextSettings = breakerSettings(nextOptions === false ? {} : nextOptions);
      const nextThrottleSettings =
        nextThrottle === undefined || nextThrottle === false ? undefined : throttleSettings(nextThrottle);
      return () => {
        settings = nextSettings;
        trips = nextOptions !== false;
        throttle = nextThrottleSettings;
        for (const circuit of circuits.values()) circuit.reconfigure({ ...settings, trips }, throttle);
      };
    },
  };
}
