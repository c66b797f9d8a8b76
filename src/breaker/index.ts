/**
 * Breaker layer: one circuit per service + endpoint, on opossum (rolling window, error
 * percentage, volume threshold, half-open probe). Open → `CIRCUIT_OPEN` at once, no I/O.
 *
 * Order: below deadline and observe, above bulkhead and retry: a call with its retry is one
 * event for the circuit. Only failures that say the dependency is unhealthy count: not 4xx,
 * not invalid requests, not caller aborts, not the local bulkhead shedding, not a budget too
 * small to try. Instance-level failures are the balancer's job (outlier ejection).
 *
 * opossum's own timeout is off (the deadline layer owns time), and its rolling window is
 * rotated from the client's clock, so fake clocks and the storm simulator drive it.
 */
import { EventEmitter } from 'node:events';
import CircuitBreaker from 'opossum';
import type { Layer } from '../core/call.js';
import { channels } from '../core/channels.js';
import type { Clock } from '../core/clock.js';
import { ErrorCode, invalidOption, isTelescopeError, TelescopeError } from '../core/errors.js';

/** `breaker` option of `createClient`. */
export interface BreakerOptions {
  /** Calls in the window before the circuit may open. @default 20 */
  volumeThreshold?: number;
  /** Failed share of calls in the window that opens the circuit. @default 50 */
  errorThresholdPercentage?: number;
  /** How long the circuit stays open before a half-open probe. @default 5000 */
  resetTimeoutMs?: number;
  /** Length of the rolling window. @default 10000 */
  rollingWindowMs?: number;
}

export const breakerDefaults = {
  volumeThreshold: 20,
  errorThresholdPercentage: 50,
  resetTimeoutMs: 5000,
  rollingWindowMs: 10_000,
} as const;

export type CircuitState = 'closed' | 'open' | 'half-open';

/** Whether a failure says the dependency is unhealthy. */
export function countsForBreaker(error: unknown): boolean {
  if (!isTelescopeError(error)) return true;
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

export interface BreakerLayer {
  layer: Layer;
  /** State of each endpoint's circuit created so far. */
  state(endpoint: string): CircuitState | undefined;
  /** Stops the rotation timer and every circuit's timers. */
  shutdown(): void;
}

/**
 * The breaker layer.
 *
 * @example
 * const { layer } = breaker({ volumeThreshold: 20 }, { clock, service: 'movies' });
 */
export function breaker(
  options: BreakerOptions,
  environment: { clock: Clock; service: string; onState?: (endpoint: string, state: CircuitState) => void },
): BreakerLayer {
  const volumeThreshold = options.volumeThreshold ?? breakerDefaults.volumeThreshold;
  const errorThresholdPercentage = options.errorThresholdPercentage ?? breakerDefaults.errorThresholdPercentage;
  const resetTimeoutMs = options.resetTimeoutMs ?? breakerDefaults.resetTimeoutMs;
  const rollingWindowMs = options.rollingWindowMs ?? breakerDefaults.rollingWindowMs;
  if (!(Number.isInteger(volumeThreshold) && volumeThreshold >= 0)) {
    invalidOption('breaker.volumeThreshold', 'an integer ≥ 0', volumeThreshold);
  }
  if (!(errorThresholdPercentage > 0 && errorThresholdPercentage <= 100)) {
    invalidOption('breaker.errorThresholdPercentage', 'a number in (0, 100]', errorThresholdPercentage);
  }
  if (!(Number.isFinite(resetTimeoutMs) && resetTimeoutMs > 0)) {
    invalidOption('breaker.resetTimeoutMs', 'a positive finite number', resetTimeoutMs);
  }
  if (!(Number.isFinite(rollingWindowMs) && rollingWindowMs >= 100)) {
    invalidOption('breaker.rollingWindowMs', 'a finite number ≥ 100', rollingWindowMs);
  }
  const { clock, service, onState } = environment;
  const circuits = new Map<string, CircuitBreaker>();
  // One rotation timer for every circuit of the client, on the client's clock.
  const rotation = new EventEmitter();
  const buckets = 10;
  let rotationTimer: unknown;
  const rotate = () => {
    rotation.emit('rotate');
    rotationTimer = clock.setTimeout(rotate, rollingWindowMs / buckets);
  };

  const stateOf = (circuit: CircuitBreaker): CircuitState =>
    circuit.opened ? 'open' : circuit.halfOpen ? 'half-open' : 'closed';

  return {
    state: (endpoint) => {
      const circuit = circuits.get(endpoint);
      return circuit === undefined ? undefined : stateOf(circuit);
    },
    shutdown() {
      if (rotationTimer !== undefined) clock.clearTimeout(rotationTimer);
      rotationTimer = undefined;
      for (const circuit of circuits.values()) circuit.shutdown();
      circuits.clear();
    },
    layer: (next) => {
      const circuitFor = (endpoint: string): CircuitBreaker => {
        let circuit = circuits.get(endpoint);
        if (circuit !== undefined) return circuit;
        if (rotationTimer === undefined) rotationTimer = clock.setTimeout(rotate, rollingWindowMs / buckets);
        circuit = new CircuitBreaker(next, {
          timeout: false,
          resetTimeout: resetTimeoutMs,
          errorThresholdPercentage,
          volumeThreshold,
          rollingCountTimeout: rollingWindowMs,
          rollingCountBuckets: buckets,
          rotateBucketController: rotation,
          enableSnapshots: false,
          // Latency is ours (observe); opossum's percentiles concat and sort every latency in the
          // window on each failure, which is quadratic in the call rate.
          rollingPercentilesEnabled: false,
          errorFilter: (error: unknown) => !countsForBreaker(error),
        });
        const report = (state: CircuitState) => () => {
          onState?.(endpoint, state);
          if (channels.breakerState.hasSubscribers) channels.breakerState.publish({ service, endpoint, state });
        };
        circuit.on('open', report('open'));
        circuit.on('halfOpen', report('half-open'));
        circuit.on('close', report('closed'));
        circuits.set(endpoint, circuit);
        return circuit;
      };

      return (request, context) => {
        const circuit = circuitFor(context.endpoint);
        // opossum rejects when neither closed nor letting a half-open probe through; answer
        // that here so the error is ours and the call costs nothing.
        if (!circuit.closed && !circuit.pendingClose) {
          return Promise.reject(
            new TelescopeError(
              ErrorCode.CIRCUIT_OPEN,
              `${service}.${context.endpoint}: circuit open (failing fast, no request sent)`,
              { service, endpoint: context.endpoint, requestSent: false },
            ),
          );
        }
        return circuit.fire(request, context) as ReturnType<typeof next>;
      };
    },
  };
}
