/**
 * Breaker layer: one circuit per service + endpoint (rolling window, error percentage,
 * volume threshold, one half-open probe). Open → `CIRCUIT_OPEN` at once, no I/O.
 *
 * Order: below deadline and observe, above bulkhead and retry: a call with its retry is one
 * event for the circuit. Only failures that say the dependency is unhealthy count: not 4xx,
 * not invalid requests, not caller aborts, not the local bulkhead shedding, not a budget too
 * small to try. Instance-level failures are the balancer's job (outlier ejection).
 *
 * The circuit keeps opossum's semantics and option meanings (the checks run at each failure,
 * the rate must exceed the threshold, closing keeps the window), but it is telescope's own:
 * every timer is on the client's clock (fake clocks and the storm simulator drive the reset
 * timeout too), an outcome can be neutral (an aborted or shed call neither opens nor closes
 * the circuit), and the success path is two counter increments and no event.
 */
import type { Layer } from '../core/call.js';
import { channels } from '../core/channels.js';
import type { Clock, TimerHandle } from '../core/clock.js';
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
  /** Stops the rotation timer and every circuit's timers. */
  shutdown(): void;
}

/** Number of buckets of the rolling window (as opossum's default). */
const buckets = 10;

/** One endpoint's circuit. Counts live in a ring of buckets rotated by the layer's timer. */
class Circuit {
  state: CircuitState = 'closed';
  /** A half-open probe is in flight: every other call fails fast. */
  probing = false;
  private readonly successes = new Uint32Array(buckets);
  private readonly failures = new Uint32Array(buckets);
  private bucket = 0;
  private successTotal = 0;
  private failureTotal = 0;
  private resetTimer: TimerHandle | undefined;

  // Handlers bound once per circuit: the success path allocates no closure per call.
  readonly onResponse = <T>(response: T): T => {
    if (this.state === 'closed') this.recordSuccess();
    return response;
  };
  readonly onError = (error: unknown): never => {
    if (this.state === 'closed') {
      const outcome = breakerOutcome(error);
      if (outcome === 'failure') this.recordFailure();
      else if (outcome === 'success') this.recordSuccess();
    }
    throw error;
  };
  readonly onProbeResponse = <T>(response: T): T => {
    this.endProbe('success');
    return response;
  };
  readonly onProbeError = (error: unknown): never => {
    this.endProbe(breakerOutcome(error));
    throw error;
  };

  constructor(
    private readonly settings: {
      volumeThreshold: number;
      errorThresholdPercentage: number;
      resetTimeoutMs: number;
      clock: Clock;
      report: (state: CircuitState) => void;
    },
  ) {}

  rotate(): void {
    const next = (this.bucket + 1) % buckets;
    this.successTotal -= this.successes[next] as number;
    this.failureTotal -= this.failures[next] as number;
    this.successes[next] = 0;
    this.failures[next] = 0;
    this.bucket = next;
  }

  private recordSuccess(): void {
    (this.successes[this.bucket] as number)++;
    this.successTotal++;
  }

  private recordFailure(): void {
    (this.failures[this.bucket] as number)++;
    this.failureTotal++;
    const calls = this.successTotal + this.failureTotal;
    if (calls < this.settings.volumeThreshold) return;
    if ((this.failureTotal / calls) * 100 > this.settings.errorThresholdPercentage) this.open();
  }

  private open(): void {
    this.state = 'open';
    this.probing = false;
    this.resetTimer = this.settings.clock.setTimeout(() => {
      this.resetTimer = undefined;
      this.state = 'half-open';
      this.settings.report('half-open');
    }, this.settings.resetTimeoutMs);
    this.settings.report('open');
  }

  private endProbe(outcome: 'failure' | 'success' | 'neutral'): void {
    this.probing = false;
    if (this.state !== 'half-open') return;
    if (outcome === 'failure') {
      // The probe's failure counts in the window, as every failure of a closed circuit does.
      (this.failures[this.bucket] as number)++;
      this.failureTotal++;
      this.open();
    } else if (outcome === 'success') {
      this.recordSuccess();
      this.state = 'closed';
      this.settings.report('closed');
    }
    // Neutral (the probe was aborted or shed): still half-open, the next call probes.
  }

  shutdown(): void {
    if (this.resetTimer !== undefined) this.settings.clock.clearTimeout(this.resetTimer);
    this.resetTimer = undefined;
  }
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
  const circuits = new Map<string, Circuit>();
  // One rotation timer for every circuit of the client, on the client's clock.
  let rotationTimer: TimerHandle | undefined;
  const rotate = () => {
    for (const circuit of circuits.values()) circuit.rotate();
    rotationTimer = clock.setTimeout(rotate, rollingWindowMs / buckets);
  };

  const circuitFor = (endpoint: string): Circuit => {
    let circuit = circuits.get(endpoint);
    if (circuit !== undefined) return circuit;
    if (rotationTimer === undefined) rotationTimer = clock.setTimeout(rotate, rollingWindowMs / buckets);
    circuit = new Circuit({
      volumeThreshold,
      errorThresholdPercentage,
      resetTimeoutMs,
      clock,
      report: (state) => {
        onState?.(endpoint, state);
        if (channels.breakerState.hasSubscribers) channels.breakerState.publish({ service, endpoint, state });
      },
    });
    circuits.set(endpoint, circuit);
    return circuit;
  };

  return {
    state: (endpoint) => circuits.get(endpoint)?.state,
    shutdown() {
      if (rotationTimer !== undefined) clock.clearTimeout(rotationTimer);
      rotationTimer = undefined;
      for (const circuit of circuits.values()) circuit.shutdown();
      circuits.clear();
    },
    layer: (next) => (request, context) => {
      const circuit = circuitFor(context.endpoint);
      if (circuit.state === 'closed') return next(request, context).then(circuit.onResponse, circuit.onError);
      if (circuit.state === 'half-open' && !circuit.probing) {
        circuit.probing = true;
        let pending: ReturnType<typeof next>;
        try {
          pending = next(request, context);
        } catch (error) {
          pending = Promise.reject(error);
        }
        return pending.then(circuit.onProbeResponse, circuit.onProbeError);
      }
      return Promise.reject(
        new TelescopeError(
          ErrorCode.CIRCUIT_OPEN,
          `${service}.${context.endpoint}: circuit open (failing fast, no request sent)`,
          { service, endpoint: context.endpoint, requestSent: false },
        ),
      );
    },
  };
}
