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
import type { Layer } from '../core/call.js';
import { channels } from '../core/channels.js';
import type { Clock, TimerHandle } from '../core/clock.js';
import { invalidOption } from '../core/errors.js';
import { LastLookup } from '../core/last-lookup.js';
import { Throttle, type ThrottleOptions, throttleSettings } from '../throttle/index.js';
import { buckets, type CircuitCause, type CircuitControl, type CircuitState, EndpointCircuit } from './circuit.js';

export type { CircuitCause, CircuitControl, CircuitState } from './circuit.js';
export { breakerOutcome, countsForBreaker } from './outcome.js';

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
  const lastCircuit = new LastLookup(circuitFor);

  return {
    state: (endpoint) => circuits.get(endpoint)?.current,
    control: circuitFor,
    shutdown() {
      if (rotationTimer !== undefined) clock.clearTimeout(rotationTimer);
      rotationTimer = undefined;
      for (const circuit of circuits.values()) circuit.shutdown();
      circuits.clear();
      lastCircuit.forget();
    },
    layer: (next) => (request, context) => lastCircuit.get(context.endpoint).call(next, request, context),
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
