/**
 * The latency average `p2c-ewma` compares: a time-weighted, bias-corrected EWMA per instance
 * (kept in its {@link InstanceState}), and Finagle's cost of picking an instance.
 */
import type { InstanceState } from './instance-state.js';

/** The latency average's time constant (Finagle's default `decayTime`). */
export const latencyDecayMs = 10_000;
/** Cost of an instance with requests in flight and no latency measured yet (Finagle's penalty). */
const unmeasuredPenalty = 2 ** 40;
/** Latencies closer than this ratio do not decide a pick (noise between like instances). */
export const similarLatency = 1.25;
/** A failed attempt doubles the instance's latency cost, up to this (ms). */
const maxFailureCostMs = 30_000;

/** Finagle's cost: latency × (in flight + 1); unmeasured: free when idle, else a penalty. */
export function latencyCost(latency: number, outstanding: number): number {
  if (latency === 0) return outstanding === 0 ? 0 : unmeasuredPenalty + outstanding;
  return latency * (outstanding + 1);
}

/** The instance's EWMA latency now (decayed since the last sample); 0 if never measured. */
export function latencyNow(state: InstanceState, now: number): number {
  const latency = state.latencyCost;
  const elapsed = now - state.latencyStamp;
  return latency !== 0 && elapsed > 0 ? latency * Math.exp(-elapsed / latencyDecayMs) : latency;
}

/**
 * Time-weighted EWMA of latency over unevenly spaced samples (Finagle's formula: a sample
 * weighs 1 − e^(−Δt/τ) for the Δt since the previous one, so it does not matter how many
 * samples arrive). Bias-corrected: divided by the weight the samples have covered since the
 * instance appeared, so the average is the measured latency from the first sample on rather
 * than a value climbing from 0 over τ. Without the correction every instance reads far below
 * its latency for the first 10–20 s, and an avoided instance (whose last sample is older)
 * falls below its peers in seconds instead of τ: the slow instance kept winning picks
 * (slow-one in simulation: 7% of the calls during the fault, docs/instances.md).
 * Unlike Finagle's peak EWMA a slow success does not replace the average: on a busy host
 * most peaks are the caller's own event loop stalling, which would move traffic away from
 * whichever instance had calls in flight (measured: docs/instances.md). A failure is a
 * peak: it doubles the cost at once, so an instance that fails fast does not look fast.
 */
export function observeLatency(state: InstanceState, latencyMs: number, failed: boolean, now: number): void {
  const elapsed = now - state.latencyStamp;
  const keep = elapsed > 0 ? Math.exp(-elapsed / latencyDecayMs) : 1;
  const previous = state.latencyWeight * keep;
  const weight = previous + (1 - keep);
  const sample = latencyMs > 0 ? latencyMs : 0;
  if (failed) {
    const decayed = state.latencyCost * keep;
    state.latencyCost = Math.min(maxFailureCostMs, 2 * Math.max(sample, decayed, 0.001));
  } else {
    state.latencyCost = weight > 0 ? (state.latencyCost * previous + sample * (1 - keep)) / weight : sample;
  }
  state.latencyWeight = weight;
  state.latencyStamp = now;
}
