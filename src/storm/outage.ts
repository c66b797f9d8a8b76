/**
 * What a strategy sends to a failing tier while it fails, and how fast the edge comes back
 * after. Shared by real mode and the simulator, which both count, per second of the run, the
 * requests the load sent and the attempts the calling tier sent to the failing one (counted
 * by the callers: a tier that is down receives nothing).
 */
import type { Scenario, TierName } from './types.js';

/** The fault window of a scenario: the first fault of a tier until that tier is healthy again. */
export interface FaultWindow {
  tier: TierName;
  startS: number;
  /** When the tier is healthy again, or the end of the load. */
  endS: number;
  /** Whether the scenario ends the fault (a `none` step) before the load ends. */
  recovers: boolean;
}

/** What happened during a scenario's fault window (`RunResult.outage`). */
export interface OutageSummary {
  /** The failing tier. */
  tier: TierName;
  /** Whole seconds of the run in the window: [startS, endS). */
  startS: number;
  endS: number;
  /** Edge requests sent in the window. */
  offered: number;
  /** Attempts the calling tier sent to the failing tier in the window (retries and probes included). */
  attempts: number;
  /** attempts / offered: above 1, the callers multiplied the load on the failing tier. */
  amplification: number;
  /**
   * Attempts per edge request after the window's first second (the time a circuit needs to
   * see the failure): what probing a failed tier costs while it stays failed.
   */
  probeShare: number;
}

/** Seconds the strategies get to detect the failure before `probeShare` starts counting. */
export const detectionS = 1;

/** The fault window of a scenario (faults on a whole tier or some of its instances), if any. */
export function faultWindow(scenario: Scenario, durationS: number): FaultWindow | undefined {
  const steps = [...scenario.faults].sort((a, b) => a.atS - b.atS);
  const first = steps.find((step) => step.fault !== 'none');
  if (first === undefined) return undefined;
  const healed = steps.find((step) => step.tier === first.tier && step.fault === 'none' && step.atS > first.atS);
  return {
    tier: first.tier,
    startS: first.atS,
    endS: healed === undefined ? durationS : Math.min(healed.atS, durationS),
    recovers: healed !== undefined && healed.atS < durationS,
  };
}

/** The tier that calls `tier` (the edge calls the middle, the middle the backend). */
export function callerOf(tier: TierName): TierName | undefined {
  return tier === 'backend' ? 'middle' : tier === 'middle' ? 'edge' : undefined;
}

/**
 * Sums a window of per-second counts: `sent[s]` edge requests sent in second s, `attempts[s]`
 * attempts to the failing tier in second s.
 */
export function summarizeOutage(
  window: FaultWindow,
  sent: ArrayLike<number>,
  attempts: ArrayLike<number>,
): OutageSummary {
  const startS = Math.floor(window.startS);
  const endS = Math.max(startS + 1, Math.ceil(window.endS));
  let offered = 0;
  let attempted = 0;
  let laterOffered = 0;
  let laterAttempted = 0;
  for (let second = startS; second < endS; second++) {
    const s = sent[second] ?? 0;
    const a = attempts[second] ?? 0;
    offered += s;
    attempted += a;
    if (second >= startS + detectionS) {
      laterOffered += s;
      laterAttempted += a;
    }
  }
  const round = (value: number) => Math.round(value * 1000) / 1000;
  return {
    tier: window.tier,
    startS,
    endS,
    offered,
    attempts: attempted,
    amplification: offered === 0 ? 0 : round(attempted / offered),
    probeShare: laterOffered === 0 ? 0 : round(laterAttempted / laterOffered),
  };
}

/**
 * Seconds from the end of the fault until edge success is back at or above 99% for good
 * (every later second of the load too), counted by the second a request was sent: 1 means the
 * first whole second after the fault ended was already healthy. `undefined` if it never came
 * back within the run.
 */
export function recoverySeconds(
  window: FaultWindow,
  timeline: ReadonlyArray<{ second: number; edgeSuccessRate: number }>,
): number | undefined {
  if (!window.recovers) return undefined;
  let back: number | undefined;
  for (const point of timeline) {
    if (point.second <= window.endS) continue;
    if (point.edgeSuccessRate >= 0.99) back ??= point.second;
    else back = undefined;
  }
  return back === undefined ? undefined : Math.round((back - window.endS) * 10) / 10;
}
