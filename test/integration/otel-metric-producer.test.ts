/**
 * `otelMetricProducer()` end to end: real telescope clients against real node:http servers on
 * 127.0.0.1, the producer on an SDK reader exporting to the SDK's in-memory exporter. Checks
 * that it reports what `otelMetrics()` reports (same instruments, attributes, buckets, counts,
 * sums, minimum and maximum), exactly, in cumulative and delta temporality, under the reader's
 * resource, once; that stop() detaches, and that bad options are refused.
 */
import { channel } from 'node:diagnostics_channel';
import { DiagLogLevel, diag } from '@opentelemetry/api';
import {
  AggregationTemporality,
  DataPointType,
  type HistogramMetricData,
  type MetricData,
} from '@opentelemetry/sdk-metrics';
import { describe, expect, it, onTestFinished } from 'vitest';
import { type Client, createClient, ErrorCode } from '../../src/index.js';
import { otelMetricProducer, otelMetrics, otelMetricsDefaults } from '../../src/otel/index.js';
import { failure } from '../helpers/assert.js';
import { movies } from '../helpers/movies.js';
import {
  client,
  counterValue,
  histogramValue,
  movieHandler,
  type Point,
  point,
  sdk,
  se,
} from '../helpers/otel-metrics.js';
import { closedPort, startServer } from '../helpers/server.js';

const channelNames = ['telescope:attempt:end', 'telescope:call:end', 'telescope:call:error', 'telescope:client:event'];

function producer(options?: Parameters<typeof otelMetricProducer>[0]) {
  const made = otelMetricProducer(options);
  onTestFinished(() => made.stop());
  return made;
}

/** Every observed attempt's duration (seconds), from the channel the metrics read. */
function attemptDurations(): number[] {
  const durations: number[] = [];
  const onEnd = (message: unknown) => durations.push((message as { durationMs: number }).durationMs / 1000);
  channel('telescope:attempt:end').subscribe(onEnd);
  onTestFinished(() => {
    channel('telescope:attempt:end').unsubscribe(onEnd);
  });
  return durations;
}

/** What a histogram of `durations` holds: count, sum, minimum, maximum and bucket counts. */
function expectHistogramOf(value: HistogramMetricData['dataPoints'][number]['value'] | undefined, durations: number[]) {
  expect(value?.count).toBe(durations.length);
  expect(value?.sum).toBeCloseTo(
    durations.reduce((a, b) => a + b, 0),
    9,
  );
  expect(value?.min).toBe(Math.min(...durations));
  expect(value?.max).toBe(Math.max(...durations));
  expect(value?.buckets.boundaries).toEqual(otelMetricsDefaults.httpDurationBuckets);
  const expected = otelMetricsDefaults.httpDurationBuckets.map(() => 0).concat(0);
  for (const seconds of durations) {
    const bucket = otelMetricsDefaults.httpDurationBuckets.findIndex((bound) => seconds <= bound);
    expected[bucket === -1 ? expected.length - 1 : bucket]! += 1;
  }
  expect(value?.buckets.counts).toEqual(expected);
}

const okAttempt = (port: number) => ({
  'http.request.method': 'GET',
  'server.address': '127.0.0.1',
  'server.port': port,
  'http.response.status_code': 200,
  ...se,
});

describe('otelMetricProducer: the same metrics as otelMetrics()', () => {
  it('reports every instrument, attribute set and value otelMetrics() reports', async () => {
    // Both paths side by side, each on a MeterProvider of its own (so nothing is reported twice).
    const meterPath = sdk();
    const integration = otelMetrics({ meterProvider: meterPath.provider });
    onTestFinished(() => integration.stop());
    const producerPath = sdk({ metricProducers: [producer()] });

    const server = await startServer(movieHandler());
    const moviesClient: Client<typeof movies> = client(
      createClient(movies, { instances: [server.url], breaker: false, retry: { maxRetries: 1, budget: false } }),
    );
    await Promise.all(Array.from({ length: 8 }, (_, index) => moviesClient.getMovie({ id: index === 0 ? 900 : 7 })));
    await moviesClient.getMovie({ id: 42 }); // 503, then 200 on the retry
    expect((await failure(moviesClient.getMovie({ id: 503 }))).code).toBe(ErrorCode.HTTP_STATUS);
    const port = await closedPort();
    const down = client(createClient(movies, { instances: [`http://127.0.0.1:${port}`], retry: false }));
    expect((await failure(down.getMovie({ id: 1 }))).code).toBe(ErrorCode.CONNECT_FAILED);
    // A breaker that opens: a gauge, a transition counter and CIRCUIT_OPEN calls.
    const breaking = client(
      createClient(movies, {
        instances: [server.url],
        retry: false,
        breaker: {
          volumeThreshold: 3,
          errorThresholdPercentage: 50,
          minResetTimeoutMs: 60_000,
          resetTimeoutMs: 60_000,
        },
      }),
    );
    for (let index = 0; index < 3; index++) await failure(breaking.getMovie({ id: 503 }));
    expect((await failure(breaking.getMovie({ id: 7 }))).code).toBe(ErrorCode.CIRCUIT_OPEN);

    const expected = await meterPath.read();
    const produced = await producerPath.read();
    expect([...produced.keys()].sort()).toEqual([...expected.keys()].sort());
    expect(produced.has('http.client.request.duration')).toBe(true);
    expect(produced.has('telescope.retries')).toBe(true);
    expect(produced.get('telescope.breaker.state')?.dataPointType).toBe(DataPointType.GAUGE);
    for (const [name, metric] of expected) {
      const mine = produced.get(name) as MetricData;
      expect(mine.descriptor.unit, name).toBe(metric.descriptor.unit);
      expect(mine.descriptor.description, name).toBe(metric.descriptor.description);
      expect(mine.dataPointType, name).toBe(metric.dataPointType);
      expect(mine.aggregationTemporality, name).toBe(AggregationTemporality.CUMULATIVE);
      if (mine.dataPointType === DataPointType.SUM) expect(mine.isMonotonic, name).toBe(true);
      expect(mine.dataPoints, name).toHaveLength(metric.dataPoints.length);
      for (const theirs of metric.dataPoints as Point[]) {
        const ours = point(mine, theirs.attributes);
        expect(ours, `${name} ${JSON.stringify(theirs.attributes)}`).toBeDefined();
        if (metric.dataPointType !== DataPointType.HISTOGRAM) {
          expect(ours?.value, name).toBe(theirs.value);
          continue;
        }
        const want = (theirs as HistogramMetricData['dataPoints'][number]).value;
        const got = (ours as HistogramMetricData['dataPoints'][number]).value;
        expect(got.count, name).toBe(want.count);
        expect(got.buckets, name).toEqual(want.buckets);
        expect(got.sum, name).toBeCloseTo(want.sum as number, 9);
        expect(got.min, name).toBe(want.min);
        expect(got.max, name).toBe(want.max);
      }
    }
    // Spot checks against the semantic conventions, independent of the other path.
    const refused = histogramValue(produced.get('http.client.request.duration'), {
      'http.request.method': 'GET',
      'server.address': '127.0.0.1',
      'server.port': port,
      'error.type': 'CONNECT_FAILED',
      ...se,
    });
    expect(refused?.count).toBe(1);
    expect(counterValue(produced.get('telescope.attempts'), se)).toBe(16); // 8, 2, 2, the refused one, 3 to 503
    expect(counterValue(produced.get('telescope.breaker.state'), se)).toBe(2);
  });

  it('reports under the reader’s resource, in one telescope scope', async () => {
    const { collect } = sdk({ metricProducers: [producer()] });
    const server = await startServer(movieHandler());
    await client(createClient(movies, { instances: [server.url] })).getMovie({ id: 7 });
    const exported = await collect();
    expect(exported).toHaveLength(1);
    // The SDK's resource, not the producer's empty one.
    expect(exported[0]!.resource.attributes['telemetry.sdk.language']).toBe('nodejs');
    const scopes = exported[0]!.scopeMetrics.filter((scope) => scope.scope.name === otelMetricsDefaults.meterName);
    expect(scopes).toHaveLength(1);
  });
});

describe('otelMetricProducer: temporality', () => {
  it('cumulative: exact totals since the start, one start time', async () => {
    const { collect } = sdk({ metricProducers: [producer()] });
    const server = await startServer(movieHandler());
    const moviesClient = client(createClient(movies, { instances: [server.url], breaker: false }));
    const durations = attemptDurations();
    const startTimes = new Set<string>();
    for (let round = 0; round < 2; round++) {
      await Promise.all(Array.from({ length: 12 }, (_, index) => moviesClient.getMovie({ id: index === 0 ? 900 : 7 })));
      const metrics = byName(await collect());
      const duration = metrics.get('http.client.request.duration');
      expectHistogramOf(histogramValue(duration, okAttempt(server.port)), durations);
      startTimes.add(String(duration?.dataPoints[0]?.startTime));
      expect(counterValue(metrics.get('telescope.calls'), { ...se, 'telescope.outcome': 'success' })).toBe(
        12 * (round + 1),
      );
    }
    expect(startTimes.size).toBe(1);
  });

  it('cumulative: readers sharing one producer each see every observation', async () => {
    const shared = producer();
    const first = sdk({ metricProducers: [shared] });
    const second = sdk({ metricProducers: [shared] });
    const server = await startServer(movieHandler());
    const moviesClient = client(createClient(movies, { instances: [server.url], breaker: false }));
    const durations = attemptDurations();
    for (const readers of [
      [first, second],
      [second, first],
    ]) {
      await Promise.all(Array.from({ length: 5 }, () => moviesClient.getMovie({ id: 7 })));
      for (const reader of readers) {
        const duration = byName(await reader.collect()).get('http.client.request.duration');
        expectHistogramOf(histogramValue(duration, okAttempt(server.port)), durations);
      }
    }
  });

  it('delta: each collection reports what happened since the previous one', async () => {
    const { collect } = sdk({
      metricProducers: [producer({ temporality: 'delta' })],
      temporality: AggregationTemporality.DELTA,
    });
    const server = await startServer(movieHandler());
    const moviesClient = client(createClient(movies, { instances: [server.url], breaker: false }));
    const durations = attemptDurations();
    let previousEnd: unknown;
    for (let round = 0; round < 2; round++) {
      durations.length = 0;
      await Promise.all(Array.from({ length: 6 }, (_, index) => moviesClient.getMovie({ id: index === 0 ? 900 : 7 })));
      const metrics = byName(await collect());
      const duration = metrics.get('http.client.request.duration');
      expect(duration?.aggregationTemporality).toBe(AggregationTemporality.DELTA);
      expectHistogramOf(histogramValue(duration, okAttempt(server.port)), durations);
      expect(counterValue(metrics.get('telescope.calls'), { ...se, 'telescope.outcome': 'success' })).toBe(6);
      if (round > 0) expect(duration?.dataPoints[0]?.startTime).toEqual(previousEnd);
      previousEnd = duration?.dataPoints[0]?.endTime;
    }
    // Nothing happened: no series at all.
    expect(byName(await collect()).size).toBe(0);
  });
});

describe('otelMetricProducer: lifecycle and options', () => {
  it('stop() detaches: no subscriber left, later collections produce nothing, idempotent', async () => {
    const made = otelMetricProducer();
    const { collect } = sdk({ metricProducers: [made] });
    const server = await startServer(movieHandler());
    await client(createClient(movies, { instances: [server.url] })).getMovie({ id: 7 });
    expect(byName(await collect()).has('telescope.calls')).toBe(true);
    made.stop();
    made.stop();
    for (const name of channelNames) expect(channel(name).hasSubscribers, name).toBe(false);
    expect(byName(await collect()).size).toBe(0);
  });

  it('warns when otelMetrics() runs too (one reader would get every series twice)', async () => {
    const warnings: string[] = [];
    const logger = {
      error() {},
      warn: (message: string) => warnings.push(message),
      info() {},
      debug() {},
      verbose() {},
    };
    diag.setLogger(logger, DiagLogLevel.WARN);
    onTestFinished(() => diag.disable());
    const meterPath = sdk();
    const integration = otelMetrics({ meterProvider: meterPath.provider });
    onTestFinished(() => integration.stop());
    expect(warnings).toHaveLength(0);
    producer();
    expect(warnings.join('\n')).toMatch(/otelMetrics\(\) and otelMetricProducer\(\) both run/);
  });

  it('refuses options that are not options', () => {
    expect(() => otelMetricProducer({ temporality: 'weekly' as never })).toThrow(
      expect.objectContaining({ code: 'INVALID_OPTION', message: expect.stringContaining('temporality') }),
    );
    expect(() => otelMetricProducer(null as never)).toThrow(expect.objectContaining({ code: 'INVALID_OPTION' }));
    for (const name of channelNames) expect(channel(name).hasSubscribers, name).toBe(false);
  });
});

function byName(exported: Awaited<ReturnType<ReturnType<typeof sdk>['collect']>>): Map<string, MetricData> {
  const metrics = new Map<string, MetricData>();
  for (const resourceMetrics of exported) {
    for (const scope of resourceMetrics.scopeMetrics) {
      for (const metric of scope.metrics) metrics.set(metric.descriptor.name, metric);
    }
  }
  return metrics;
}
