/**
 * The offered load over time: a rate schedule of steps and linear ramps, and where request
 * i leaves (the load is open loop: request i leaves when the schedule has offered i + 1
 * requests, whatever the answers do).
 */
import type { LoadStep } from './topology.js';

interface Segment {
  /** Start and end, in ms from the start of the load. */
  fromMs: number;
  toMs: number;
  /** Rate at the start and the end, requests per ms. */
  fromRate: number;
  toRate: number;
  /** Requests offered before the segment. */
  before: number;
}

export class LoadProfile {
  readonly #segments: Segment[] = [];
  /** Requests offered in the whole run. */
  readonly total: number;
  /** The highest rate of the schedule, requests per second. */
  readonly peakRate: number;

  constructor(steps: readonly Required<LoadStep>[], durationS: number) {
    const endMs = durationS * 1000;
    let rate = 0;
    let atMs = 0;
    let offered = 0;
    const push = (toMs: number, toRate: number) => {
      const end = Math.min(toMs, endMs);
      if (end <= atMs) return;
      const endRate = toMs === atMs ? toRate : rate + ((toRate - rate) * (end - atMs)) / (toMs - atMs);
      this.#segments.push({ fromMs: atMs, toMs: end, fromRate: rate, toRate: endRate, before: offered });
      offered += ((rate + endRate) / 2) * (end - atMs);
      rate = endRate;
      atMs = end;
    };
    for (const step of steps) {
      const stepMs = step.atS * 1000;
      push(stepMs, rate); // hold the previous rate until the step
      const target = step.rate / 1000;
      if (step.rampS > 0) push(stepMs + step.rampS * 1000, target);
      else rate = atMs >= endMs ? rate : target;
    }
    push(endMs, rate);
    this.total = Math.round(offered);
    this.peakRate = Math.max(...steps.map((step) => step.rate));
  }

  /** A constant rate for `durationS` seconds. */
  static constant(rate: number, durationS: number): LoadProfile {
    return new LoadProfile([{ atS: 0, rate, rampS: 0 }], durationS);
  }

  /** Requests offered by `ms` from the start (fractional). */
  offeredBy(ms: number): number {
    for (const segment of this.#segments) {
      if (ms < segment.toMs) {
        if (ms <= segment.fromMs) return segment.before;
        const t = ms - segment.fromMs;
        const slope = (segment.toRate - segment.fromRate) / (segment.toMs - segment.fromMs);
        return segment.before + segment.fromRate * t + (slope * t * t) / 2;
      }
    }
    return this.total;
  }

  /** When request `index` (0-based) leaves, in ms from the start: when `index` requests were offered. */
  timeOf(index: number): number {
    for (const segment of this.#segments) {
      const span = segment.toMs - segment.fromMs;
      const after = segment.before + ((segment.fromRate + segment.toRate) / 2) * span;
      if (index > after) continue;
      const need = index - segment.before;
      if (need <= 0) return segment.fromMs;
      const slope = (segment.toRate - segment.fromRate) / span;
      if (Math.abs(slope) < 1e-15) return segment.fromMs + need / segment.fromRate;
      // fromRate·t + slope·t²/2 = need
      const t = (-segment.fromRate + Math.sqrt(segment.fromRate ** 2 + 2 * slope * need)) / slope;
      return segment.fromMs + t;
    }
    return Number.POSITIVE_INFINITY;
  }
}
