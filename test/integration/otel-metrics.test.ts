/**
 * `otelMetrics()` end to end: real telescope clients against real node:http servers on
 * 127.0.0.1, metrics read back through the OpenTelemetry SDK (a MeterProvider with a metric
 * reader exporting to the SDK's in-memory exporter). Checks the semantic conventions'
 * `http.client.request.duration` (attributes, advised buckets, per attempt), the calls, attempts
 * and retries, the breaker, shed and cache instruments, that counts and sums survive the
 * aggregation exactly, that no SDK means no subscriber, and that stop() detaches.
 */
import { channel } from 'node:diagnostics_channel';
import { metrics as metricsApi } from '@opentelemetry/api';
import type { MeterProvider } from '@opentelemetry/sdk-metrics';
import { describe, expect, it, onTestFinished } from 'vitest';
import { withCache } from '../../src/cache/index.js';
import { type Client, createClient, ErrorCode } from '../../src/index.js';
import { otelMetrics, otelMetricsDefaults } from '../../src/otel/index.js';
import { failure } from '../helpers/assert.js';
import { movies } from '../helpers/movies.js';
import { client, counterValue, histogramValue, movieHandler, sdk, se } from '../helpers/otel-metrics.js';
import { closedPort, startServer } from '../helpers/server.js';

// --- helpers ---------------------------------------------------------------------------------

function start(provider: MeterProvider) {
  const integration = otelMetrics({ meterProvider: provider });
  onTestFinished(() => integration.stop());
  return integration;
}

// --- tests -----------------------------------------------------------------------------------

describe('otelMetrics: HTTP client semantic conventions', () => {
  it('records http.client.request.duration per attempt with method, server, status and error.type', async () => {
    const { provider, read } = sdk();
    start(provider);
    const server = await startServer(movieHandler());
    const moviesClient: Client<typeof movies> = client(
      createClient(movies, { instances: [server.url], breaker: false, retry: { maxRetries: 1, budget: false } }),
    );
    await moviesClient.getMovie({ id: 7 });
    await moviesClient.getMovie({ id: 8 });
    await moviesClient.getMovie({ id: 42 }); // 503, then 200 on the retry
    expect((await failure(moviesClient.getMovie({ id: 503 }))).code).toBe(ErrorCode.HTTP_STATUS); // 503 twice
    const port = await closedPort();
    const down = client(createClient(movies, { instances: [`http://127.0.0.1:${port}`], retry: false }));
    expect((await failure(down.getMovie({ id: 1 }))).code).toBe(ErrorCode.CONNECT_FAILED);

    const metrics = await read();
    const duration = metrics.get('http.client.request.duration');
    expect(duration?.descriptor.unit).toBe('s');
    const server200 = {
      'http.request.method': 'GET',
      'server.address': '127.0.0.1',
      'server.port': server.port,
      ...se,
    };
    const ok = histogramValue(duration, { ...server200, 'http.response.status_code': 200 });
    expect(ok?.count).toBe(3);
    expect(ok?.buckets.boundaries).toEqual(otelMetricsDefaults.httpDurationBuckets);
    expect(ok?.buckets.counts.reduce((a, b) => a + b, 0)).toBe(3);
    expect(ok?.sum).toBeGreaterThan(0);
    expect(ok?.min).toBeGreaterThan(0);
    expect(ok?.max).toBeGreaterThanOrEqual(ok?.min ?? Number.POSITIVE_INFINITY);
    const unavailable = histogramValue(duration, {
      ...server200,
      'http.response.status_code': 503,
      'error.type': '503',
    });
    expect(unavailable?.count).toBe(3);
    const refused = histogramValue(duration, {
      'http.request.method': 'GET',
      'server.address': '127.0.0.1',
      'server.port': port,
      'error.type': 'CONNECT_FAILED',
      ...se,
    });
    expect(refused?.count).toBe(1);

    // telescope's own: calls after retries, attempts, retries (from the retry events).
    expect(counterValue(metrics.get('telescope.calls'), { ...se, 'telescope.outcome': 'success' })).toBe(3);
    expect(
      counterValue(metrics.get('telescope.calls'), {
        ...se,
        'telescope.outcome': 'failure',
        'error.type': 'HTTP_STATUS',
      }),
    ).toBe(1);
    expect(counterValue(metrics.get('telescope.attempts'), se)).toBe(7);
    expect(counterValue(metrics.get('telescope.retries'), se)).toBe(2);
    const calls = histogramValue(metrics.get('telescope.call.duration'), { ...se, 'telescope.outcome': 'success' });
    expect(calls?.count).toBe(3);
    expect(calls?.buckets.boundaries).toEqual(otelMetricsDefaults.callDurationBuckets);
  });

  it('keeps counts, sums, minimum and maximum exact across collections', async () => {
    const { provider, read } = sdk();
    start(provider);
    const server = await startServer(movieHandler());
    const moviesClient = client(createClient(movies, { instances: [server.url], breaker: false }));
    const durations: number[] = [];
    const onEnd = (message: unknown) => durations.push((message as { durationMs: number }).durationMs / 1000);
    channel('telescope:attempt:end').subscribe(onEnd);
    onTestFinished(() => channel('telescope:attempt:end').unsubscribe(onEnd));
    for (let round = 0; round < 2; round++) {
      await Promise.all(Array.from({ length: 12 }, (_, index) => moviesClient.getMovie({ id: index === 0 ? 900 : 7 })));
      const value = histogramValue((await read()).get('http.client.request.duration'), {
        'http.request.method': 'GET',
        'server.address': '127.0.0.1',
        'server.port': server.port,
        'http.response.status_code': 200,
        ...se,
      });
      expect(value?.count).toBe(durations.length);
      expect(value?.sum).toBeCloseTo(
        durations.reduce((a, b) => a + b, 0),
        9,
      );
      expect(value?.min).toBeCloseTo(Math.min(...durations), 12);
      expect(value?.max).toBeCloseTo(Math.max(...durations), 12);
      // Each observation in its own bucket: (previous bound, bound].
      const expected = otelMetricsDefaults.httpDurationBuckets.map(() => 0).concat(0);
      for (const seconds of durations) {
        const bucket = otelMetricsDefaults.httpDurationBuckets.findIndex((bound) => seconds <= bound);
        expected[bucket === -1 ? expected.length - 1 : bucket]! += 1;
      }
      expect(value?.buckets.counts).toEqual(expected);
    }
  });
});

describe('otelMetrics: telescope instruments', () => {
  it('tracks the breaker state, its transitions and shed calls', async () => {
    const { provider, read } = sdk();
    start(provider);
    const server = await startServer(movieHandler());
    const moviesClient = client(
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
    for (let index = 0; index < 3; index++) await failure(moviesClient.getMovie({ id: 503 }));
    expect((await failure(moviesClient.getMovie({ id: 7 }))).code).toBe(ErrorCode.CIRCUIT_OPEN);
    const metrics = await read();
    expect(counterValue(metrics.get('telescope.breaker.state'), se)).toBe(2);
    expect(
      counterValue(metrics.get('telescope.breaker.transitions'), { ...se, 'telescope.breaker.state': 'open' }),
    ).toBe(1);
    expect(
      counterValue(metrics.get('telescope.calls'), {
        ...se,
        'telescope.outcome': 'failure',
        'error.type': 'CIRCUIT_OPEN',
      }),
    ).toBe(1);

    const narrow = client(
      createClient(movies, { instances: [server.url], breaker: false, bulkhead: { maxConcurrent: 1, maxQueue: 0 } }),
    );
    const slow = narrow.getMovie({ id: 900 });
    expect((await failure(narrow.getMovie({ id: 7 }))).code).toBe(ErrorCode.BULKHEAD_FULL);
    await slow;
    expect(counterValue((await read()).get('telescope.shed'), { ...se, 'telescope.shed.reason': 'full' })).toBe(1);
  });

  it('tracks the client concurrency limit from telescope:limit:change', async () => {
    const { provider, read } = sdk();
    start(provider);
    const limitChange = channel('telescope:limit:change');
    limitChange.publish({ side: 'client', name: 'movies', algorithm: 'gradient2', limit: 40, inflight: 3, queued: 0 });
    limitChange.publish({ side: 'client', name: 'movies', algorithm: 'gradient2', limit: 37, inflight: 5, queued: 1 });
    limitChange.publish({ side: 'server', name: 'api', algorithm: 'gradient2', limit: 90, inflight: 1, queued: 0 });
    const limit = (await read()).get('telescope.concurrency.limit');
    expect(counterValue(limit, { 'telescope.service': 'movies' })).toBe(37);
    // The server side's limit is not a client's.
    expect(limit?.dataPoints).toHaveLength(1);
  });

  it('counts cached calls by tier', async () => {
    const { provider, read } = sdk();
    start(provider);
    const server = await startServer(movieHandler());
    const cached = client(
      withCache(createClient(movies, { instances: [server.url] }), {
        endpoints: { getMovie: { ttlMs: 60_000 } },
      }),
    );
    await cached.getMovie({ id: 7 });
    await cached.getMovie({ id: 7 });
    await cached.getMovie({ id: 7 });
    const lookups = (await read()).get('telescope.cache.lookups');
    expect(counterValue(lookups, { ...se, 'telescope.cache.status': 'service' })).toBe(1);
    expect(counterValue(lookups, { ...se, 'telescope.cache.status': 'local' })).toBe(2);
  });
});

describe('otelMetrics: lifecycle', () => {
  const names = ['telescope:attempt:end', 'telescope:call:end', 'telescope:call:error', 'telescope:client:event'];

  it('subscribes to nothing without an SDK (the no-op meter provider)', () => {
    metricsApi.disable();
    const integration = otelMetrics();
    for (const name of names) expect(channel(name).hasSubscribers, name).toBe(false);
    integration.stop();
  });

  it('stop() detaches: later calls change nothing, and it is idempotent', async () => {
    const { provider, read } = sdk();
    const integration = otelMetrics({ meterProvider: provider });
    const server = await startServer(movieHandler());
    const moviesClient = client(createClient(movies, { instances: [server.url] }));
    await moviesClient.getMovie({ id: 7 });
    expect(counterValue((await read()).get('telescope.calls'), { ...se, 'telescope.outcome': 'success' })).toBe(1);
    integration.stop();
    integration.stop();
    for (const name of names) expect(channel(name).hasSubscribers, name).toBe(false);
    await moviesClient.getMovie({ id: 7 });
    // The SDK keeps reporting the last cumulative value; the second call is not in it.
    const after = await read();
    expect(counterValue(after.get('telescope.calls'), { ...se, 'telescope.outcome': 'success' }) ?? 1).toBe(1);
    expect(histogramValue(after.get('telescope.call.duration'), { ...se, 'telescope.outcome': 'success' })?.count).toBe(
      1,
    );
  });

  it('rejects a meter provider that is not one', () => {
    expect(() => otelMetrics({ meterProvider: {} as never })).toThrow(
      expect.objectContaining({ code: 'INVALID_OPTION' }),
    );
  });
});
