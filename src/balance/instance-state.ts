/**
 * One instance's state as the balancer sees it (in flight, ejection, latency average, slow
 * start), and how an attempt's outcome counts for it.
 */
import type { Instance } from '../core/call.js';
import { ErrorCode, isTelescopeError } from '../core/errors.js';
import type { EjectionReason } from './outlier.js';

/** What the balancer decided about an instance. */
export type InstanceEvent =
  | {
      type: 'eject';
      instance: string;
      /** What ejected it. */
      reason: EjectionReason;
      consecutiveFailures: number;
      /** The interval's failure percentage or success rate (percent) that decided a rate-based ejection. */
      rate?: number;
      /** The threshold it crossed (percent). */
      threshold?: number;
      ejectionMs: number;
      timesEjected: number;
    }
  | {
      type: 'return';
      instance: string;
      /** `expired`: its ejection period ended; `health-check`: it passed active health checks first. */
      reason: 'expired' | 'health-check';
    }
  | {
      type: 'health';
      instance: string;
      /** false: it failed `unhealthyThreshold` checks in a row and left rotation; true: it is back. */
      healthy: boolean;
    };

/**
 * Live state of one instance. Fields a pick and its outcome read come first (the fleet of the
 * storm simulator holds a million of these, each cold when a pick samples it).
 */
export class InstanceState {
  readonly instance: Instance;
  /** Attempts in flight. */
  outstanding = 0;
  /** Clock time until which the instance is ejected; 0 when it is not. */
  ejectedUntil = 0;
  /** Active health checks: false while it is out of rotation for failing them. */
  healthy = true;
  /**
   * Time-weighted average of attempt latency (ms) as of `latencyStamp`, bias-corrected (the
   * average of what was measured, not pulled towards 0 by the time before the first sample);
   * 0 before the first measurement.
   */
  latencyCost = 0;
  /** How much of the average's time window (0–1) samples have covered, as of `latencyStamp`. */
  latencyWeight = 0;
  latencyStamp = 0;
  /** Clock time its slow start began (it joined, or came back); −∞ when it never ramped. */
  rampStart = Number.NEGATIVE_INFINITY;
  /** Outcomes in the current outlier interval. */
  windowRequests = 0;
  windowFailures = 0;
  consecutiveFailures = 0;
  timesEjected = 0;
  /** Clock time the instance last came back from an ejection. */
  returnedAt = 0;
  /** What ejected it (while ejected). */
  ejectionReason: EjectionReason | undefined = undefined;
  /** Set when discovery removed the instance; attempts in flight finish, no new ones start. */
  removed = false;
  /** Weighted round-robin: the running credit of smooth weighted round-robin (nginx's). */
  roundRobinCredit = 0;
  checkFailures = 0;
  checkPasses = 0;

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
    case ErrorCode.TLS_FAILED:
      // Broken HTTP, or a certificate this instance alone gets wrong (expired, wrong host).
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
