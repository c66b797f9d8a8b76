/**
 * What a simulated run counts: edge latencies in histograms per second (never a list of
 * samples, so memory stays bounded whatever the rate) and per-second counts of requests,
 * successes and goodput, observed on the simulated network.
 */

import type { VirtualClock } from './clock.js';
import type { Exchange } from './exchange.js';
import { LatencyHistogram } from './histogram.js';
import type { SimInstance, SimObserver } from './instance.js';

/** The tag of the load generator's requests (warm-up and capacity requests are not counted). */
export const LOAD = Symbol('load');

/** Edge samples and per-second counts, bounded whatever the rate. */
export class Metrics implements SimObserver {
  active = false;
  epoch = 0;
  readonly edgeReceived: Float64Array;
  readonly backendReceived: Float64Array;
  readonly sentBySecond: Float64Array;
  /** Attempts sent to the failing tier (by the tier that calls it), per second. */
  readonly attemptsBySecond: Float64Array;
  readonly okBySecond: Float64Array;
  /** Successful answers by the second they were answered in (goodput). */
  readonly goodputBySecond: Float64Array;
  readonly samplesBySecond: Float64Array;
  readonly histBySecond: Array<LatencyHistogram | undefined>;
  /** Latencies of successful answers only, per second sent. */
  readonly okHistBySecond: Array<LatencyHistogram | undefined>;
  readonly all = new LatencyHistogram();
  ok = 0;
  fallback = 0;

  constructor(
    readonly clock: VirtualClock,
    readonly seconds: number,
  ) {
    this.edgeReceived = new Float64Array(seconds);
    this.backendReceived = new Float64Array(seconds);
    this.sentBySecond = new Float64Array(seconds);
    this.attemptsBySecond = new Float64Array(seconds);
    this.okBySecond = new Float64Array(seconds);
    this.goodputBySecond = new Float64Array(seconds);
    this.samplesBySecond = new Float64Array(seconds);
    this.histBySecond = new Array(seconds).fill(undefined);
    this.okHistBySecond = new Array(seconds).fill(undefined);
  }

  second(atMs: number): number {
    const second = Math.floor((atMs - this.epoch) / 1000);
    return second < 0 ? 0 : second >= this.seconds ? this.seconds - 1 : second;
  }

  received(instance: SimInstance): void {
    if (!this.active) return;
    const role = instance.tier.role;
    if (role === 'edge') this.edgeReceived[this.second(this.clock.now())]! += 1;
    else if (role === 'backend') this.backendReceived[this.second(this.clock.now())]! += 1;
  }

  edgeAnswer(exchange: Exchange, status: number, fallback: boolean): void {
    if (!this.active || exchange.tag !== LOAD) return;
    const latencyMs = this.clock.now() - exchange.arrivedAt;
    const second = this.second(exchange.arrivedAt);
    const ok = status === 200 && !fallback;
    if (status === 200) {
      if (fallback) this.fallback++;
      else this.ok++;
    }
    this.all.record(latencyMs);
    this.samplesBySecond[second]! += 1;
    if (ok) {
      this.okBySecond[second]! += 1;
      this.goodputBySecond[this.second(this.clock.now())]! += 1;
      let okHistogram = this.okHistBySecond[second];
      if (okHistogram === undefined) {
        okHistogram = new LatencyHistogram();
        this.okHistBySecond[second] = okHistogram;
      }
      okHistogram.record(latencyMs);
    }
    let histogram = this.histBySecond[second];
    if (histogram === undefined) {
      histogram = new LatencyHistogram();
      this.histBySecond[second] = histogram;
    }
    histogram.record(latencyMs);
  }
}
