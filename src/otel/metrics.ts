/**
 * OpenTelemetry metrics for every telescope client in the process, through
 * `@opentelemetry/api` only: the HTTP client semantic conventions' `http.client.request.duration`
 * (one observation per attempt, that is per physical HTTP request) and telescope's own
 * instruments, whose names map onto the Prometheus exporter's (`telescope.retries` ↔
 * `telescope_retries_total`).
 *
 * Cost. The SDK's synchronous instruments hash the attribute set on every `record()` (about
 * 1 µs for five attributes), more than a whole telescope call costs. So the channel subscribers
 * only aggregate ({@link TelescopeAggregates}): counters and gauges are reported through
 * observable instruments, and each histogram slot's observations are handed to the SDK's
 * histogram when a reader collects. The API has no way to hand over a pre-aggregated histogram,
 * so that is still one `record()` per observation, at collection: `otelMetricProducer()`
 * (an SDK `MetricProducer`) is the path without it. With the no-op meter provider (no SDK
 * registered) nothing is subscribed at all.
 */
import {
  type BatchObservableResult,
  createNoopMeter,
  diag,
  type Histogram,
  type Meter,
  type MeterProvider,
  metrics,
  type Observable,
  type ObservableCounter,
  type ObservableGauge,
} from '@opentelemetry/api';
import { invalidOption } from '../core/errors.js';
import { callDurationBuckets, type EventMetric, eventMetrics, httpDurationBuckets } from '../observe/metric-catalog.js';
import { type HistogramSlot, otelInstruments, registerPath, TelescopeAggregates } from './aggregate.js';

/** Options of {@link otelMetrics}. */
export interface OtelMetricsOptions {
  /**
   * Meter provider the instruments are made with. With the API's no-op provider (no SDK
   * registered), nothing is subscribed and calls pay nothing.
   * @default metrics.getMeterProvider() (the global provider, as registered by the SDK)
   */
  meterProvider?: MeterProvider;
}

/** What {@link otelMetrics} returns. */
export interface OtelMetricsIntegration {
  /**
   * Stops the metrics: unsubscribes from every channel and from the meter's collections.
   * Observations not collected yet are dropped. Idempotent.
   */
  stop(): void;
}

/** Instrument names and histogram boundaries of {@link otelMetrics}. */
export const otelMetricsDefaults = {
  /** Name of the OpenTelemetry meter (instrumentation scope). */
  meterName: 'telescope',
  /** `http.client.request.duration`: the semantic conventions' advised boundaries (seconds). */
  httpDurationBuckets,
  /** `telescope.call.duration`: the Prometheus exporter's (seconds). */
  callDurationBuckets,
} as const;

/**
 * Starts maintaining telescope's OpenTelemetry metrics. Call it after the OpenTelemetry SDK is
 * started (the API has no proxy for meter providers: a provider registered later is not seen).
 *
 * @example
 * import { otelMetrics } from 'telescope-http/otel';
 *
 * const telescopeMetrics = otelMetrics(); // after the SDK's MeterProvider is registered
 * // at shutdown: telescopeMetrics.stop()
 */
export function otelMetrics(options: OtelMetricsOptions = {}): OtelMetricsIntegration {
  if (typeof options !== 'object' || options === null) invalidOption('otelMetrics options', 'an object', options);
  if (options.meterProvider !== undefined && typeof options.meterProvider?.getMeter !== 'function') {
    invalidOption('meterProvider', 'an OpenTelemetry MeterProvider', options.meterProvider);
  }
  const provider = options.meterProvider ?? metrics.getMeterProvider();
  const meter = provider.getMeter(otelMetricsDefaults.meterName);
  // No SDK: subscribe to nothing, so the channels stay without subscribers and calls pay nothing.
  if (meter === createNoopMeter()) return { stop() {} };
  return startMetrics(meter);
}

function startMetrics(meter: Meter): OtelMetricsIntegration {
  const { requestDuration: request, callDuration: call, calls, attempts } = otelInstruments;
  const requestDuration = meter.createHistogram(request.name, {
    unit: request.unit,
    description: request.description,
    advice: { explicitBucketBoundaries: [...request.buckets] },
  });
  const callDuration = meter.createHistogram(call.name, {
    unit: call.unit,
    description: call.description,
    advice: { explicitBucketBoundaries: [...call.buckets] },
  });
  const callsCounter = meter.createObservableCounter(calls.name, { unit: calls.unit, description: calls.description });
  const attemptsCounter = meter.createObservableCounter(attempts.name, {
    unit: attempts.unit,
    description: attempts.description,
  });
  const eventInstruments = new Map<EventMetric, ObservableCounter | ObservableGauge>();
  for (const metric of eventMetrics) {
    const instrumentOptions = { unit: metric.unit, description: metric.description };
    eventInstruments.set(
      metric,
      metric.kind === 'counter'
        ? meter.createObservableCounter(metric.name, instrumentOptions)
        : meter.createObservableGauge(metric.name, instrumentOptions),
    );
  }
  const aggregates = new TelescopeAggregates(eventMetrics);

  const observables: Observable[] = [callsCounter, attemptsCounter, ...eventInstruments.values()];
  const collect = (result: BatchObservableResult) => {
    try {
      for (const byEndpoint of aggregates.sites.values()) {
        for (const slots of byEndpoint.values()) {
          let attemptCount = 0;
          for (const byOutcome of slots.attempts.values()) {
            for (const histogram of byOutcome.values()) {
              attemptCount += histogram.total;
              flush(histogram, requestDuration);
            }
          }
          if (attemptCount > 0) result.observe(attemptsCounter, attemptCount, slots.attributes);
          for (const { count, callAttributes } of slots.calls.values()) {
            result.observe(callsCounter, count, callAttributes);
          }
          for (const histogram of slots.callDurations.values()) flush(histogram, callDuration);
        }
      }
      for (const [metric, values] of aggregates.eventValues) {
        const instrument = eventInstruments.get(metric);
        if (instrument === undefined) continue;
        for (const { attributes, value } of values.values()) result.observe(instrument, value, attributes);
      }
    } catch (error) {
      diag.error('telescope-http/otel: metrics could not be collected', error);
    }
  };
  meter.addBatchObservableCallback(collect, observables);
  const unregister = registerPath('otelMetrics()');
  let stopped = false;
  return {
    stop() {
      if (stopped) return;
      stopped = true;
      aggregates.stop();
      meter.removeBatchObservableCallback(collect, observables);
      unregister();
    },
  };
}

/**
 * Hands a slot's pending observations to the SDK's `histogram`, bucket by bucket (each bucket's
 * exact minimum and maximum, the rest at the mean of the others, so counts, sums, minimum and
 * maximum stay exact), then forgets them. One `record()` per observation: this is the cost
 * `otelMetricProducer()` avoids.
 */
function flush(slot: HistogramSlot, histogram: Histogram): void {
  if (slot.pending === 0) return;
  const { attributes, counts, sums, mins, maxes } = slot;
  for (let bucket = 0; bucket < counts.length; bucket++) {
    const count = counts[bucket]!;
    if (count === 0) continue;
    const min = mins[bucket]!;
    const max = maxes[bucket]!;
    histogram.record(min, attributes);
    if (count >= 2) histogram.record(max, attributes);
    if (count > 2) {
      // The others' mean lies between this bucket's minimum and maximum; clamp away rounding.
      const mean = Math.min(max, Math.max(min, (sums[bucket]! - min - max) / (count - 2)));
      for (let index = 2; index < count; index++) histogram.record(mean, attributes);
    }
  }
  slot.reset();
}
