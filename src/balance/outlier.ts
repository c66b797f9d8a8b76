/**
 * Outlier detection (Envoy's algorithms): consecutive failures, judged on every outcome, and,
 * once per interval, failure percentage and success rate over the interval's outcomes.
 */
import { invalidOption } from '../core/errors.js';

/** Outlier ejection settings (Envoy's outlier detection, with Envoy's meanings). */
export interface OutlierOptions {
  /** Consecutive failures that eject an instance. @default 5 */
  consecutiveFailures?: number;
  /**
   * Eject an instance whose failure percentage over the last interval is at least this
   * (Envoy's `failure_percentage_threshold`), among instances with `minRequests` outcomes.
   * An absolute bound: it ejects even when every instance fails as much. `undefined`: off.
   * @default undefined
   */
  failurePercentage?: number;
  /**
   * Eject an instance whose success rate over the last interval is more than this many
   * standard deviations below the mean of the instances (Envoy's `success_rate_stdev_factor`
   * / 1000). Needs at least 3 instances with `minRequests` outcomes; with n such instances
   * one outlier is at most √(n−1) deviations below the mean, so 1.9 (Envoy's) needs 5.
   * `undefined`: off. @default undefined
   */
  successRateStdevFactor?: number;
  /** Outcomes an instance needs in an interval to be judged by rate (Envoy's request volume). @default 50 */
  minRequests?: number;
  /** How often failure percentage and success rate are judged (Envoy's `interval`). @default 10000 */
  intervalMs?: number;
  /**
   * First ejection period; the n-th ejection lasts base × 2^(n−1), capped at `maxEjectionMs`,
   * then ±10% jitter so instances ejected together do not all return at once. @default 10000
   */
  baseEjectionMs?: number;
  /** Longest ejection period (before jitter). @default 300000 */
  maxEjectionMs?: number;
  /**
   * Never eject more than this share of all the service's instances (rounded down, at least
   * one when above 0), whatever their zone. @default 50
   */
  maxEjectionPercent?: number;
}

/** Resolved outlier settings. */
export interface ResolvedOutlier {
  consecutiveFailures: number;
  failurePercentage: number | undefined;
  successRateStdevFactor: number | undefined;
  minRequests: number;
  intervalMs: number;
  baseEjectionMs: number;
  maxEjectionMs: number;
  maxEjectionPercent: number;
}

export const outlierDefaults = {
  consecutiveFailures: 5,
  minRequests: 50,
  intervalMs: 10_000,
  baseEjectionMs: 10_000,
  maxEjectionMs: 300_000,
  maxEjectionPercent: 50,
} as const;

/** Why an instance was ejected. */
export type EjectionReason = 'consecutive-failures' | 'failure-percentage' | 'success-rate';

/** Instances with fewer qualifying peers are not judged by success rate (too few to compare). */
export const successRateMinInstances = 3;

export function resolveOutlier(options: OutlierOptions): ResolvedOutlier {
  if (typeof options !== 'object' || options === null) invalidOption('outlier', 'an object or false', options);
  const resolved: ResolvedOutlier = {
    consecutiveFailures: options.consecutiveFailures ?? outlierDefaults.consecutiveFailures,
    failurePercentage: options.failurePercentage,
    successRateStdevFactor: options.successRateStdevFactor,
    minRequests: options.minRequests ?? outlierDefaults.minRequests,
    intervalMs: options.intervalMs ?? outlierDefaults.intervalMs,
    baseEjectionMs: options.baseEjectionMs ?? outlierDefaults.baseEjectionMs,
    maxEjectionMs: options.maxEjectionMs ?? outlierDefaults.maxEjectionMs,
    maxEjectionPercent: options.maxEjectionPercent ?? outlierDefaults.maxEjectionPercent,
  };
  if (!(Number.isInteger(resolved.consecutiveFailures) && resolved.consecutiveFailures >= 1)) {
    invalidOption('outlier.consecutiveFailures', 'an integer ≥ 1', resolved.consecutiveFailures);
  }
  const percentage = resolved.failurePercentage;
  if (percentage !== undefined && !(typeof percentage === 'number' && percentage > 0 && percentage <= 100)) {
    invalidOption('outlier.failurePercentage', 'a number in (0, 100]', percentage);
  }
  const factor = resolved.successRateStdevFactor;
  if (factor !== undefined && !(typeof factor === 'number' && Number.isFinite(factor) && factor > 0)) {
    invalidOption('outlier.successRateStdevFactor', 'a positive finite number (Envoy uses 1.9)', factor);
  }
  if (!(Number.isInteger(resolved.minRequests) && resolved.minRequests >= 1)) {
    invalidOption('outlier.minRequests', 'an integer ≥ 1', resolved.minRequests);
  }
  if (!(Number.isFinite(resolved.intervalMs) && resolved.intervalMs >= 100)) {
    invalidOption('outlier.intervalMs', 'a finite number ≥ 100', resolved.intervalMs);
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

/** One instance's outcomes in the interval being judged. */
export interface IntervalCounts {
  windowRequests: number;
  windowFailures: number;
}

/**
 * The instances to eject at the end of an interval, with the reason and the rate that
 * decided it. Success rate first (relative), then failure percentage (absolute), as Envoy.
 */
export function intervalOutliers<T extends IntervalCounts>(
  candidates: readonly T[],
  outlier: ResolvedOutlier,
): Array<{ state: T; reason: EjectionReason; rate: number; threshold: number }> {
  const judged = candidates.filter((state) => state.windowRequests >= outlier.minRequests);
  const found: Array<{ state: T; reason: EjectionReason; rate: number; threshold: number }> = [];
  const factor = outlier.successRateStdevFactor;
  if (factor !== undefined && judged.length >= successRateMinInstances) {
    let sum = 0;
    for (const state of judged) sum += successRate(state);
    const mean = sum / judged.length;
    let squares = 0;
    for (const state of judged) squares += (successRate(state) - mean) ** 2;
    const threshold = mean - factor * Math.sqrt(squares / judged.length);
    for (const state of judged) {
      const rate = successRate(state);
      if (rate < threshold) found.push({ state, reason: 'success-rate', rate, threshold });
    }
  }
  const percentage = outlier.failurePercentage;
  if (percentage !== undefined) {
    for (const state of judged) {
      const rate = (100 * state.windowFailures) / state.windowRequests;
      if (rate >= percentage && !found.some((entry) => entry.state === state)) {
        found.push({ state, reason: 'failure-percentage', rate, threshold: percentage });
      }
    }
  }
  return found;
}

/** Success rate in percent. */
function successRate(state: IntervalCounts): number {
  return (100 * (state.windowRequests - state.windowFailures)) / state.windowRequests;
}
