/**
 * The overload scenario's numbers, computed the same way in real mode and in simulation:
 * goodput (successful edge answers per second) against the backend tier's measured capacity,
 * and the p99 of successful calls at peak load against the unloaded p99.
 */
import { loadFactorAt } from './scenarios.js';
import type { LoadStep } from './types.js';

/** What `overload` reports (in `RunResult.overload`). */
export interface OverloadSummary {
  /** The backend tier's capacity, measured before the run (successful answers per second). */
  capacityPerS: number;
  /** Mean goodput over the seconds at the peak load factor. */
  peakGoodputPerS: number;
  /** peakGoodputPerS ÷ capacityPerS (target ≥ 0.9). */
  goodputRatio: number;
  /** p99 of successful calls at the first load level, before the load first changes. */
  unloadedP99Ms: number;
  /** p99 of successful calls at the peak load factor. */
  peakP99Ms: number;
  /** peakP99Ms ÷ unloadedP99Ms (target ≤ 3). */
  p99Ratio: number;
}

/** Seconds (whole, from the start of the load) whose load factor is the profile's peak or its first level. */
export function overloadSeconds(load: readonly LoadStep[], durationS: number): { peak: number[]; unloaded: number[] } {
  const peakFactor = Math.max(...load.map((step) => step.factor));
  const firstFactor = load[0]?.factor ?? 1;
  const peak: number[] = [];
  const unloaded: number[] = [];
  // The unloaded reference: the first level before the load first changes, without the
  // first second (connections, JIT).
  let climbing = false;
  for (let second = 1; second < Math.floor(durationS); second++) {
    const start = loadFactorAt(load, second);
    const end = loadFactorAt(load, second + 1);
    const atFirst = Math.abs(start - firstFactor) < 1e-9 && Math.abs(end - firstFactor) < 1e-9;
    if (!atFirst) climbing = true;
    if (start >= peakFactor - 1e-9 && end >= peakFactor - 1e-9) peak.push(second);
    else if (atFirst && !climbing) unloaded.push(second);
  }
  return { peak, unloaded };
}

/** The summary from per-second goodput and a p99 function over a set of seconds. */
export function summarizeOverload(
  capacityPerS: number,
  load: readonly LoadStep[],
  durationS: number,
  goodputBySecond: (second: number) => number,
  okP99Of: (seconds: number[]) => number,
): OverloadSummary {
  const { peak, unloaded } = overloadSeconds(load, durationS);
  const peakGoodputPerS =
    peak.length === 0 ? 0 : peak.reduce((n, second) => n + goodputBySecond(second), 0) / peak.length;
  const unloadedP99Ms = okP99Of(unloaded);
  const peakP99Ms = okP99Of(peak);
  const round = (value: number) => Math.round(value * 100) / 100;
  return {
    capacityPerS: round(capacityPerS),
    peakGoodputPerS: round(peakGoodputPerS),
    goodputRatio: capacityPerS === 0 ? 0 : round(peakGoodputPerS / capacityPerS),
    unloadedP99Ms: round(unloadedP99Ms),
    peakP99Ms: round(peakP99Ms),
    p99Ratio: unloadedP99Ms === 0 ? 0 : round(peakP99Ms / unloadedP99Ms),
  };
}
