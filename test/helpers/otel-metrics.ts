/** Reading telescope's OpenTelemetry metrics back in tests: data points by attributes, a movie server. */
import {
  AggregationTemporality,
  DataPointType,
  type HistogramMetricData,
  InMemoryMetricExporter,
  MeterProvider,
  type MetricData,
  type MetricProducer,
  PeriodicExportingMetricReader,
  type ResourceMetrics,
} from '@opentelemetry/sdk-metrics';
import { expect, onTestFinished } from 'vitest';
import { delay, type Handler, sendJson } from './server.js';

export interface Sdk {
  provider: MeterProvider;
  /** Collects and returns every metric, by name. */
  read(): Promise<Map<string, MetricData>>;
  /** Collects and returns what the exporter got, as it got it. */
  collect(): Promise<ResourceMetrics[]>;
}

/**
 * An SDK MeterProvider whose one reader exports to the in-memory exporter, on demand only; shut
 * down when the test finishes.
 */
export function sdk(options: { temporality?: AggregationTemporality; metricProducers?: MetricProducer[] } = {}): Sdk {
  const exporter = new InMemoryMetricExporter(options.temporality ?? AggregationTemporality.CUMULATIVE);
  const reader = new PeriodicExportingMetricReader({
    exporter,
    exportIntervalMillis: 3_600_000,
    metricProducers: options.metricProducers,
  });
  const provider = new MeterProvider({ readers: [reader] });
  onTestFinished(() => provider.shutdown());
  const collect = async () => {
    exporter.reset();
    await reader.forceFlush();
    return exporter.getMetrics();
  };
  return {
    provider,
    collect,
    async read() {
      const byName = new Map<string, MetricData>();
      for (const resourceMetrics of await collect()) {
        for (const scope of resourceMetrics.scopeMetrics) {
          for (const metric of scope.metrics) byName.set(metric.descriptor.name, metric);
        }
      }
      return byName;
    },
  };
}

/** `made`, closed when the test finishes. */
export function client<C extends { close(): Promise<void> }>(made: C): C {
  onTestFinished(() => made.close());
  return made;
}

export type Point = MetricData['dataPoints'][number];

/** The data point whose attributes are exactly `attributes`. */
export function point(metric: MetricData | undefined, attributes: Record<string, unknown>): Point | undefined {
  expect(metric, 'metric present').toBeDefined();
  const found = (metric!.dataPoints as Point[]).filter(
    (candidate) =>
      Object.keys(candidate.attributes).length === Object.keys(attributes).length &&
      Object.entries(attributes).every(([key, value]) => candidate.attributes[key] === value),
  );
  expect(found.length, `${metric!.descriptor.name} ${JSON.stringify(attributes)}`).toBeLessThanOrEqual(1);
  return found[0];
}

export function histogramValue(metric: MetricData | undefined, attributes: Record<string, unknown>) {
  expect(metric?.dataPointType).toBe(DataPointType.HISTOGRAM);
  const found = point(metric as HistogramMetricData, attributes) as
    | HistogramMetricData['dataPoints'][number]
    | undefined;
  return found?.value;
}

export const counterValue = (metric: MetricData | undefined, attributes: Record<string, unknown>) =>
  point(metric, attributes)?.value as number | undefined;

/** 200 with a movie; id 503 always 503; id 42 503 the first time; id 900 after 60 ms. */
export function movieHandler(): Handler {
  let seen42 = false;
  return async (request, response) => {
    const id = Number(/^\/movies\/(\d+)$/.exec(request.url ?? '')?.[1] ?? 0);
    if (id === 503 || (id === 42 && !seen42)) {
      if (id === 42) seen42 = true;
      response.writeHead(503, { 'content-type': 'text/plain' });
      response.end('unavailable');
      return;
    }
    if (id === 900) await delay(60);
    sendJson(response, 200, { id, title: 'Heat' });
  };
}

/** The movies client's `getMovie` call site attributes. */
export const se = { 'telescope.service': 'movies', 'telescope.endpoint': 'getMovie' };
