/**
 * One endpoint's circuit: its rolling window, state machine (closed, open, half-open with
 * probes, ramp after closing), operator holds, and the endpoint's throttle.
 */
import { type Call, type CallContext, callNext, type IncomingResponse, type OutgoingRequest } from '../core/call.js';
import type { Clock, TimerHandle } from '../core/clock.js';
import { ErrorCode, TelescopeError } from '../core/errors.js';
import { Throttle, type ThrottleSettings } from '../throttle/index.js';

import { breakerOutcome } from './outcome.js';

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

/** Number of buckets of the rolling window (as opossum's default). */
export const buckets = 10;

/** Doublings of the ramp's in-flight cap over `rampMs`: from `halfOpenProbes` to 1024× that. */
const rampDoublings = 10;

export interface CircuitSettings {
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
 * layer's timer; the current bucket's counts are fields, written into the ring when it
 * rotates, so that a call touches this object and not the ring's arrays.
 */
export class EndpointCircuit implements CircuitControl {
  readonly endpoint: string;
  current: CircuitState = 'closed';
  held: 'open' | 'closed' | undefined = undefined;
  /** Closed buckets' counts; the current bucket's slot is stale until it rotates. */
  private readonly successes = new Uint32Array(buckets);
  private readonly failures = new Uint32Array(buckets);
  private readonly slowCalls = new Uint32Array(buckets);
  private bucket = 0;
  /** The current bucket's counts. */
  private bucketSuccesses = 0;
  private bucketFailures = 0;
  private bucketSlow = 0;
  /** Every bucket's counts, the current one included. */
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
    this.successes[this.bucket] = this.bucketSuccesses;
    this.failures[this.bucket] = this.bucketFailures;
    this.slowCalls[this.bucket] = this.bucketSlow;
    this.bucketSuccesses = 0;
    this.bucketFailures = 0;
    this.bucketSlow = 0;
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
      this.bucketSuccesses++;
      this.successTotal++;
      this.failedInARow = 0;
    } else {
      this.bucketFailures++;
      this.failureTotal++;
      this.failedInARow++;
    }
    if (slow) {
      this.bucketSlow++;
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
    this.bucketSuccesses = 0;
    this.bucketFailures = 0;
    this.bucketSlow = 0;
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
