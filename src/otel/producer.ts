/**
 * telescope's OpenTelemetry metrics as an SDK `MetricProducer`: the OpenTelemetry way to bridge
 * metrics aggregated outside the SDK into a `MetricReader` (the reader's `metricProducers`
 * option). The channel subscribers aggregate as for `otelMetrics()` ({@link TelescopeAggregates});
 * a collection turns each series into one data point, histograms included, so a call costs the
 * subscribers alone and a collection costs per series, not per observation.
 *
 * The SDK is a type-only dependency here: nothing of `@opentelemetry/sdk-metrics` is loaded,
 * the enum values below are the SDK's (stable in the OTLP data model).
 */
import { type Attributes, type HrTime, ValueType } from '@opentelemetry/api';
import type {
  AggregationTemporality,
  CollectionResult,
  DataPoint,
  DataPointType,
  GaugeMetricData,
  Histogram,
  HistogramMetricData,
  MetricData,
  MetricProducer,
  ResourceMetrics,
  SumMetricData,
} from '@opentelemetry/sdk-metrics';
import { invalidOption } from '../core/errors.js';
import { eventMetrics } from '../observe/metric-catalog.js';
import { type HistogramSlot, otelInstruments, registerPath, TelescopeAggregates } from './aggregate.js';
import { otelMetricsDefaults } from './metrics.js';

/** Options of {@link otelMetricProducer}. */
export interface OtelMetricProducerOptions {
  /**
   * Aggregation temporality of the sums and histograms: `'cumulative'` (since the producer
   * started: what Prometheus and most OTLP backends expect) or `'delta'` (since the previous
   * collection: each collection takes what it reports, so give each reader its own producer).
   * Match the reader's exporter.
   * @default 'cumulative'
   */
  temporality?: 'cumulative' | 'delta';
}

/** What {@link otelMetricProducer} returns: a `MetricProducer` for a reader's `metricProducers`. */
export interface OtelMetricProducer extends MetricProducer {
  /**
   * Stops the producer: unsubscribes from every channel; later collections produce nothing.
   * Idempotent.
   */
  stop(): void;
}

const histogramType = 0 as DataPointType.HISTOGRAM;
const gaugeType = 2 as DataPointType.GAUGE;
const sumType = 3 as DataPointType.SUM;
const deltaTemporality = 0 as AggregationTemporality.DELTA;
const cumulativeTemporality = 1 as AggregationTemporality.CUMULATIVE;

/**
 * A MetricReader keeps its own MeterProvider's resource and ignores a producer's (as the SDK's
 * `metricProducers` option says), so this one is empty.
 */
const ignoredResource: ResourceMetrics['resource'] = {
  attributes: {},
  merge(other) {
    return other ?? this;
  },
  getRawAttributes() {
    return [];
  },
};

/** A histogram series' totals since the producer started (cumulative temporality). */
interface Accumulated {
  readonly counts: number[];
  sum: number;
  count: number;
  min: number;
  max: number;
}

/**
 * Starts maintaining telescope's OpenTelemetry metrics (the same instruments, attributes and
 * buckets as {@link otelMetrics}) for an SDK `MetricReader` to collect. This is the cheap path:
 * no SDK instrument records anything per call or per observation. Use it instead of
 * `otelMetrics()` for the readers it is added to (both on one reader report every series twice).
 *
 * @example
 * import { otelMetricProducer } from 'telescope-http/otel';
 * import { MeterProvider, PeriodicExportingMetricReader } from '@opentelemetry/sdk-metrics';
 *
 * const telescopeMetrics = otelMetricProducer();
 * const reader = new PeriodicExportingMetricReader({ exporter, metricProducers: [telescopeMetrics] });
 * const meterProvider = new MeterProvider({ readers: [reader] });
 * // at shutdown: telescopeMetrics.stop()
 */
export function otelMetricProducer(options: OtelMetricProducerOptions = {}): OtelMetricProducer {
  if (typeof options !== 'object' || options === null) {
    invalidOption('otelMetricProducer options', 'an object', options);
  }
  const { temporality = 'cumulative' } = options;
  if (temporality !== 'cumulative' && temporality !== 'delta') {
    invalidOption('temporality', "'cumulative' or 'delta'", temporality);
  }
  const delta = temporality === 'delta';
  const aggregates = new TelescopeAggregates(eventMetrics);
  const unregister = registerPath('otelMetricProducer()');
  const startedAt = hrTimeNow();
  let lastCollection = startedAt;
  /** Cumulative: each histogram series' totals. */
  const accumulated = new Map<HistogramSlot, Accumulated>();
  /** Delta: each counter series' value at the previous collection, by its attributes object. */
  const reported = new Map<Attributes, number>();
  let stopped = false;

  const histogramPoint = (slot: HistogramSlot, startTime: HrTime, endTime: HrTime): DataPoint<Histogram> | null => {
    const { counts, sums, mins, maxes } = slot;
    let value: Histogram;
    if (delta) {
      if (slot.pending === 0) return null;
      let sum = 0;
      let min = Number.POSITIVE_INFINITY;
      let max = Number.NEGATIVE_INFINITY;
      for (let bucket = 0; bucket < counts.length; bucket++) {
        sum += sums[bucket]!;
        if (mins[bucket]! < min) min = mins[bucket]!;
        if (maxes[bucket]! > max) max = maxes[bucket]!;
      }
      value = { buckets: { boundaries: [...slot.bounds], counts: [...counts] }, sum, count: slot.pending, min, max };
    } else {
      let totals = accumulated.get(slot);
      if (totals === undefined) {
        totals = {
          counts: new Array<number>(counts.length).fill(0),
          sum: 0,
          count: 0,
          min: Number.POSITIVE_INFINITY,
          max: Number.NEGATIVE_INFINITY,
        };
        accumulated.set(slot, totals);
      }
      for (let bucket = 0; bucket < counts.length; bucket++) {
        if (counts[bucket] === 0) continue;
        totals.counts[bucket]! += counts[bucket]!;
        totals.sum += sums[bucket]!;
        if (mins[bucket]! < totals.min) totals.min = mins[bucket]!;
        if (maxes[bucket]! > totals.max) totals.max = maxes[bucket]!;
      }
      totals.count += slot.pending;
      if (totals.count === 0) return null;
      value = {
        buckets: { boundaries: [...slot.bounds], counts: [...totals.counts] },
        sum: totals.sum,
        count: totals.count,
        min: totals.min,
        max: totals.max,
      };
    }
    slot.reset();
    return { startTime, endTime, attributes: slot.attributes, value };
  };

  /** A counter's point: its total, or under delta its change since the previous collection. */
  const sumPoint = (attributes: Attributes, total: number, startTime: HrTime, endTime: HrTime) => {
    if (!delta) return { startTime, endTime, attributes, value: total };
    const change = total - (reported.get(attributes) ?? 0);
    reported.set(attributes, total);
    return change === 0 ? null : { startTime, endTime, attributes, value: change };
  };

  const produce = (): MetricData[] => {
    const endTime = hrTimeNow();
    // Cumulative: every point since the start; delta: since the previous collection.
    const startTime = delta ? lastCollection : startedAt;
    lastCollection = endTime;
    const requestPoints: DataPoint<Histogram>[] = [];
    const callPoints: DataPoint<Histogram>[] = [];
    const callsPoints: DataPoint<number>[] = [];
    const attemptsPoints: DataPoint<number>[] = [];
    for (const byEndpoint of aggregates.sites.values()) {
      for (const slots of byEndpoint.values()) {
        let attemptCount = 0;
        for (const byOutcome of slots.attempts.values()) {
          for (const slot of byOutcome.values()) {
            attemptCount += slot.total;
            const point = histogramPoint(slot, startTime, endTime);
            if (point !== null) requestPoints.push(point);
          }
        }
        const attempts = sumPoint(slots.attributes, attemptCount, startTime, endTime);
        if (attempts !== null && attemptCount > 0) attemptsPoints.push(attempts);
        for (const { count, callAttributes } of slots.calls.values()) {
          const calls = sumPoint(callAttributes, count, startTime, endTime);
          if (calls !== null) callsPoints.push(calls);
        }
        for (const histogram of slots.callDurations.values()) {
          const point = histogramPoint(histogram, startTime, endTime);
          if (point !== null) callPoints.push(point);
        }
      }
    }
    const temporality = delta ? deltaTemporality : cumulativeTemporality;
    const produced: MetricData[] = [];
    const { requestDuration, callDuration, calls, attempts } = otelInstruments;
    const histogramData = (
      instrument: typeof requestDuration | typeof callDuration,
      dataPoints: DataPoint<Histogram>[],
    ): HistogramMetricData => ({
      descriptor: descriptor(instrument),
      aggregationTemporality: temporality,
      dataPointType: histogramType,
      dataPoints,
    });
    const sumData = (
      instrument: { name: string; unit: string; description: string },
      dataPoints: DataPoint<number>[],
    ) =>
      ({
        descriptor: descriptor(instrument),
        aggregationTemporality: temporality,
        dataPointType: sumType,
        isMonotonic: true,
        dataPoints,
      }) satisfies SumMetricData;
    if (requestPoints.length > 0) produced.push(histogramData(requestDuration, requestPoints));
    if (callPoints.length > 0) produced.push(histogramData(callDuration, callPoints));
    if (callsPoints.length > 0) produced.push(sumData(calls, callsPoints));
    if (attemptsPoints.length > 0) produced.push(sumData(attempts, attemptsPoints));
    for (const [metric, values] of aggregates.eventValues) {
      const dataPoints: DataPoint<number>[] = [];
      for (const { attributes, value } of values.values()) {
        if (metric.kind === 'gauge') {
          dataPoints.push({ startTime: startedAt, endTime, attributes, value });
        } else {
          const point = sumPoint(attributes, value, startTime, endTime);
          if (point !== null) dataPoints.push(point);
        }
      }
      if (dataPoints.length === 0) continue;
      if (metric.kind === 'gauge') {
        produced.push({
          descriptor: descriptor(metric),
          aggregationTemporality: cumulativeTemporality,
          dataPointType: gaugeType,
          dataPoints,
        } satisfies GaugeMetricData);
      } else {
        produced.push(sumData(metric, dataPoints));
      }
    }
    return produced;
  };

  return {
    async collect(): Promise<CollectionResult> {
      const errors: unknown[] = [];
      let produced: MetricData[] = [];
      if (!stopped) {
        try {
          produced = produce();
        } catch (error) {
          errors.push(error);
        }
      }
      return {
        resourceMetrics: {
          resource: ignoredResource,
          scopeMetrics:
            produced.length === 0 ? [] : [{ scope: { name: otelMetricsDefaults.meterName }, metrics: produced }],
        },
        errors,
      };
    },
    stop() {
      if (stopped) return;
      stopped = true;
      aggregates.stop();
      unregister();
    },
  };
}

function descriptor(instrument: { name: string; unit: string; description: string }) {
  return {
    name: instrument.name,
    description: instrument.description,
    unit: instrument.unit,
    valueType: ValueType.DOUBLE,
  };
}

/** Now as OpenTelemetry's `[seconds, nanoseconds]` since the epoch. */
function hrTimeNow(): HrTime {
  const millis = performance.timeOrigin + performance.now();
  const seconds = Math.floor(millis / 1000);
  const nanos = Math.min(999_999_999, Math.round((millis - seconds * 1000) * 1e6));
  return [seconds, nanos];
}
