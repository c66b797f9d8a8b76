/**
 * `telescope-http/prometheus` end to end: real telescope clients against real node:http servers on
 * 127.0.0.1, metrics read back from prom-client's text exposition (what Prometheus scrapes).
 * Checks names and types, values after successes, a retried call and a 503 failure, bounded
 * labels under 1,000 distinct ids, the breaker state gauge through open → half-open → closed,
 * and that stop() detaches.
 */
import { channel } from 'node:diagnostics_channel';
import { Registry } from 'prom-client';
import { describe, expect, it, onTestFinished } from 'vitest';
import { z } from 'zod';
import { type Client, createClient, defineService, ErrorCode, endpoint } from '../../src/index.js';
import { eventMetrics } from '../../src/observe/metric-catalog.js';
import { type PrometheusMetrics, prometheusMetrics } from '../../src/prometheus/index.js';
import { failure, waitFor } from '../helpers/assert.js';
import { movies } from '../helpers/movies.js';
import { type Handler, sendJson, startServer } from '../helpers/server.js';

// --- helpers ---------------------------------------------------------------------------------

interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

/** Parses Prometheus text exposition into samples (comments skipped). */
function parse(text: string): Sample[] {
  const samples: Sample[] = [];
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const match = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (match === null) throw new Error(`unparsable exposition line: ${line}`);
    const labels: Record<string, string> = {};
    for (const label of (match[2] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) {
      labels[label[1]!] = label[2]!;
    }
    samples.push({ name: match[1]!, labels, value: Number(match[3]) });
  }
  return samples;
}

/** The value of the one sample with this name and exactly these labels; undefined when absent. */
function sampleValue(samples: Sample[], name: string, labels: Record<string, string>): number | undefined {
  const found = samples.filter(
    (sample) =>
      sample.name === name &&
      Object.keys(sample.labels).length === Object.keys(labels).length &&
      Object.entries(labels).every(([key, value]) => sample.labels[key] === value),
  );
  expect(found.length, `${name}${JSON.stringify(labels)} matched ${found.length} samples`).toBeLessThanOrEqual(1);
  return found[0]?.value;
}

async function scrape(metrics: PrometheusMetrics): Promise<{ text: string; samples: Sample[] }> {
  const text = await metrics.registry.metrics();
  return { text, samples: parse(text) };
}

/** Starts the integration on a registry of its own; stopped after the test. */
function start(options: Parameters<typeof prometheusMetrics>[0] = {}): PrometheusMetrics {
  const metrics = prometheusMetrics({ registry: new Registry(), ...options });
  onTestFinished(() => metrics.stop());
  return metrics;
}

function client<C>(make: () => C & { close(): Promise<void> }): C {
  const made = make();
  onTestFinished(() => made.close());
  return made;
}

/**
 * The movie service: 200 with a movie, except id 503 (always 503) and id 42 (503 the first
 * time, 200 after). Titles echo back.
 */
function movieHandler(): Handler {
  let seen42 = false;
  return (request, response) => {
    const url = request.url ?? '';
    const id = Number(/^\/movies\/(\d+)$/.exec(url)?.[1] ?? 0);
    if (id === 503 || (id === 42 && !seen42)) {
      if (id === 42) seen42 = true;
      response.writeHead(503, { 'content-type': 'text/plain' });
      response.end('unavailable');
      return;
    }
    if (url.startsWith('/titles/')) return sendJson(response, 200, { title: url.slice('/titles/'.length) });
    sendJson(response, 200, { id, title: 'Heat' });
  };
}

const ratings = defineService({
  name: 'ratings',
  endpoints: {
    get: endpoint({ method: 'GET', path: '/ratings/:id', params: z.object({ id: z.number().int() }) }),
  },
});

const telescopeChannels = [
  'telescope:call:start',
  'telescope:call:attempt',
  'telescope:call:end',
  'telescope:call:error',
  'telescope:breaker:state',
  'telescope:attempt:end',
  'telescope:client:event',
  'telescope:limit:change',
];

// --- tests -----------------------------------------------------------------------------------

describe('prometheusMetrics: calls, attempts, retries', () => {
  it('counts successes, a retried success and a 503 failure, for every client, with conventional names', async () => {
    const metrics = start();
    const server = await startServer(movieHandler());
    const ratingsServer = await startServer((_request, response) => sendJson(response, 200, { stars: 4 }));
    // Created after the integration and without any wiring: covered through the channels.
    const moviesClient = client(() =>
      createClient(movies, { instances: [server.url], breaker: false, retry: { maxRetries: 1, budget: false } }),
    );
    const ratingsClient = client(() => createClient(ratings, { instances: [ratingsServer.url] }));

    for (const id of [1, 2, 3]) await moviesClient.getMovie({ id });
    await moviesClient.getMovie({ id: 42 }); // 503, then 200 on the retry
    const error = await failure(moviesClient.getMovie({ id: 503 })); // 503 twice
    expect(error.code).toBe(ErrorCode.HTTP_STATUS);
    await ratingsClient.get({ id: 9 });
    expect(server.requests).toHaveLength(3 + 2 + 2);

    const { text, samples } = await scrape(metrics);
    expect(text).toContain('# TYPE telescope_calls_total counter');
    expect(text).toContain('# TYPE telescope_call_duration_seconds histogram');
    expect(text).toContain('# TYPE telescope_attempts_total counter');
    expect(text).toContain('# TYPE telescope_retries_total counter');
    expect(text).toContain('# TYPE telescope_breaker_state gauge');
    // The event-driven metrics: the same catalog as the OpenTelemetry instruments.
    for (const metric of eventMetrics) {
      expect(text).toContain(`# TYPE telescope_${metric.prometheus} ${metric.kind}`);
      const converted = `${metric.name.replaceAll('.', '_')}${metric.kind === 'counter' ? '_total' : ''}`;
      expect(converted, 'the OpenTelemetry name converted the Prometheus way').toBe(`telescope_${metric.prometheus}`);
    }

    const getMovie = { service: 'movies', endpoint: 'getMovie' };
    expect(sampleValue(samples, 'telescope_calls_total', { ...getMovie, outcome: 'success', code: 'OK' })).toBe(4);
    expect(
      sampleValue(samples, 'telescope_calls_total', { ...getMovie, outcome: 'failure', code: 'HTTP_STATUS' }),
    ).toBe(1);
    expect(sampleValue(samples, 'telescope_attempts_total', getMovie)).toBe(7);
    expect(sampleValue(samples, 'telescope_retries_total', getMovie)).toBe(2);
    expect(sampleValue(samples, 'telescope_call_duration_seconds_count', { ...getMovie, outcome: 'success' })).toBe(4);
    expect(sampleValue(samples, 'telescope_call_duration_seconds_count', { ...getMovie, outcome: 'failure' })).toBe(1);
    const seconds = sampleValue(samples, 'telescope_call_duration_seconds_sum', { ...getMovie, outcome: 'success' })!;
    // Seconds, not milliseconds: five local calls take well under a second, and more than nothing.
    expect(seconds).toBeGreaterThan(0);
    expect(seconds).toBeLessThan(1);
    expect(
      sampleValue(samples, 'telescope_call_duration_seconds_bucket', { ...getMovie, outcome: 'success', le: '+Inf' }),
    ).toBe(4);
    expect(
      sampleValue(samples, 'telescope_call_duration_seconds_bucket', { ...getMovie, outcome: 'success', le: '10' }),
    ).toBe(4);

    const get = { service: 'ratings', endpoint: 'get' };
    expect(sampleValue(samples, 'telescope_calls_total', { ...get, outcome: 'success', code: 'OK' })).toBe(1);
    expect(sampleValue(samples, 'telescope_attempts_total', get)).toBe(1);
    // No retry of ratings.get happened: no series (a counter child appears at its first inc).
    expect(sampleValue(samples, 'telescope_retries_total', get)).toBeUndefined();
  });

  it('keeps labels bounded: 1,000 distinct ids and titles never reach a label', async () => {
    const metrics = start();
    const server = await startServer(movieHandler());
    const moviesClient = client(() =>
      // A budget far above the calls' latency: this test is about labels, not time (2-core CI under load).
      createClient(movies, {
        instances: [server.url],
        breaker: false,
        retry: { maxRetries: 1, budget: false },
        timeoutMs: 15_000,
      }),
    );
    const ids = Array.from({ length: 1000 }, (_, index) => 700_000 + index);
    const titles = ids.map((id) => `title-${id.toString(36)}-xq`);
    for (let batch = 0; batch < ids.length; batch += 50) {
      await Promise.all(
        ids
          .slice(batch, batch + 50)
          .flatMap((id, index) => [
            moviesClient.getMovie({ id }),
            moviesClient.byTitle({ title: titles[batch + index]! }),
          ]),
      );
    }
    await failure(moviesClient.getMovie({ id: 503 }));

    const { text, samples } = await scrape(metrics);
    // Every series' name and labels, without the sample values (a float could contain any digits).
    const series = text
      .split('\n')
      .filter((line) => line !== '' && !line.startsWith('#'))
      .map((line) => line.slice(0, line.lastIndexOf(' ')))
      .join('\n');
    const allowed: Record<string, Set<string>> = {
      service: new Set(['movies']),
      endpoint: new Set(Object.keys(movies.endpoints)),
      outcome: new Set(['success', 'failure']),
      code: new Set([...Object.values(ErrorCode), 'OK', 'UNKNOWN']),
    };
    for (const sample of samples) {
      for (const [label, value] of Object.entries(sample.labels)) {
        if (label === 'le') {
          expect(value === '+Inf' || Number.isFinite(Number(value)), `le="${value}"`).toBe(true);
        } else {
          expect(allowed[label]?.has(value), `${sample.name} ${label}="${value}"`).toBe(true);
        }
      }
    }
    for (const id of ids) expect(series).not.toContain(String(id));
    expect(text).not.toContain('xq');
    expect(text).not.toContain('127.0.0.1');
    expect(series).not.toContain(String(server.port));
    // 2 endpoints × (success + one failure code) series, not 2,000.
    expect(samples.filter((sample) => sample.name === 'telescope_calls_total')).toHaveLength(3);
    expect(
      sampleValue(samples, 'telescope_calls_total', {
        service: 'movies',
        endpoint: 'getMovie',
        outcome: 'success',
        code: 'OK',
      }),
    ).toBe(1000);
    expect(
      sampleValue(samples, 'telescope_calls_total', {
        service: 'movies',
        endpoint: 'byTitle',
        outcome: 'success',
        code: 'OK',
      }),
    ).toBe(1000);
  });

  it('takes a prefix and buckets, validates its options, and refuses a registry that already has its metrics', async () => {
    const metrics = start({ prefix: 'edge_', buckets: [0.1, 1] });
    const server = await startServer(movieHandler());
    const moviesClient = client(() => createClient(movies, { instances: [server.url] }));
    await moviesClient.getMovie({ id: 1 });
    const { samples } = await scrape(metrics);
    const labels = { service: 'movies', endpoint: 'getMovie', outcome: 'success' };
    expect(sampleValue(samples, 'edge_calls_total', { ...labels, code: 'OK' })).toBe(1);
    expect(
      samples.filter((sample) => sample.name === 'edge_call_duration_seconds_bucket').map((sample) => sample.labels.le),
    ).toEqual(['0.1', '1', '+Inf']);
    expect(samples.some((sample) => sample.name.startsWith('telescope_'))).toBe(false);

    expect(() => prometheusMetrics({ registry: new Registry(), prefix: 'bad-prefix' })).toThrow(
      expect.objectContaining({ code: ErrorCode.INVALID_OPTION }),
    );
    expect(() => prometheusMetrics({ registry: new Registry(), buckets: [1, 0.5] })).toThrow(
      expect.objectContaining({ code: ErrorCode.INVALID_OPTION }),
    );
    // Same registry, same names: prom-client refuses, and nothing half-registered is left behind.
    const registry = new Registry();
    const first = prometheusMetrics({ registry });
    onTestFinished(() => first.stop());
    expect(() => prometheusMetrics({ registry })).toThrow(/already been registered/);
    // + telescope_server_concurrency_limit and telescope_server_shed_total
    expect(registry.getMetricsAsArray()).toHaveLength(3 + eventMetrics.length + 2);
  });
});

describe('prometheusMetrics: concurrency limit', () => {
  it('sets telescope_concurrency_limit from telescope:limit:change (client side only)', async () => {
    const metrics = start();
    const limitChange = channel('telescope:limit:change');
    limitChange.publish({ side: 'client', name: 'movies', algorithm: 'vegas', limit: 24, inflight: 2, queued: 0 });
    limitChange.publish({ side: 'server', name: 'api', algorithm: 'vegas', limit: 80, inflight: 2, queued: 0 });
    const { samples } = await scrape(metrics);
    expect(sampleValue(samples, 'telescope_concurrency_limit', { service: 'movies' })).toBe(24);
    expect(sampleValue(samples, 'telescope_concurrency_limit', { service: 'api' })).toBeUndefined();
  });
});

describe('prometheusMetrics: breaker state', () => {
  it('moves the gauge to 2 when the circuit opens, 1 when half-open, 0 when it closes again', async () => {
    const metrics = start();
    let healthy = false;
    const server = await startServer((request, response) => {
      if (!healthy) {
        response.writeHead(503, { 'content-type': 'text/plain' });
        response.end('down');
        return;
      }
      const id = Number(/^\/movies\/(\d+)$/.exec(request.url ?? '')?.[1] ?? 0);
      sendJson(response, 200, { id, title: 'Heat' });
    });
    const moviesClient = client(() =>
      createClient(movies, {
        instances: [server.url],
        retry: false,
        outlier: false,
        breaker: { volumeThreshold: 3, errorThresholdPercentage: 50, resetTimeoutMs: 300 },
      }),
    );
    const labels = { service: 'movies', endpoint: 'getMovie' };
    const gauge = async () => sampleValue((await scrape(metrics)).samples, 'telescope_breaker_state', labels);
    // No transition yet: no series (the integration cannot know whether a client has a breaker).
    expect(await gauge()).toBeUndefined();

    const codes: string[] = [];
    for (let call = 0; call < 10 && !codes.includes(ErrorCode.CIRCUIT_OPEN); call++) {
      codes.push((await failure(moviesClient.getMovie({ id: call }))).code);
    }
    expect(codes).toContain(ErrorCode.CIRCUIT_OPEN);
    expect(await gauge()).toBe(2);
    const { samples } = await scrape(metrics);
    expect(sampleValue(samples, 'telescope_calls_total', { ...labels, outcome: 'failure', code: 'CIRCUIT_OPEN' })).toBe(
      1,
    );
    expect(sampleValue(samples, 'telescope_calls_total', { ...labels, outcome: 'failure', code: 'HTTP_STATUS' })).toBe(
      codes.length - 1,
    );
    // An endpoint whose circuit never moved has no breaker series.
    expect(sampleValue(samples, 'telescope_breaker_state', { service: 'movies', endpoint: 'health' })).toBeUndefined();

    await waitFor('the half-open state', async () => (await gauge()) === 1);
    healthy = true;
    // halfOpenProbes (3 by default) must pass: the gauge stays at 1 until the third.
    await moviesClient.getMovie({ id: 1 });
    await moviesClient.getMovie({ id: 2 });
    expect(await gauge()).toBe(1);
    await moviesClient.getMovie({ id: 3 });
    expect(await gauge()).toBe(0);
  });
});

describe('prometheusMetrics: stop()', () => {
  it('detaches: later calls and breaker transitions change nothing, and stop() is idempotent', async () => {
    const metrics = prometheusMetrics({ registry: new Registry() });
    const server = await startServer(movieHandler());
    const moviesClient = client(() =>
      createClient(movies, {
        instances: [server.url],
        retry: { maxRetries: 1, budget: false },
        breaker: {
          volumeThreshold: 4,
          errorThresholdPercentage: 50,
          minResetTimeoutMs: 60_000,
          resetTimeoutMs: 60_000,
        },
      }),
    );
    await moviesClient.getMovie({ id: 1 });
    await failure(moviesClient.getMovie({ id: 503 }));
    const before = await metrics.registry.metrics();
    expect(sampleValue(parse(before), 'telescope_attempts_total', { service: 'movies', endpoint: 'getMovie' })).toBe(3);

    metrics.stop();
    metrics.stop();
    for (const name of telescopeChannels) expect(channel(name).hasSubscribers, name).toBe(false);

    await moviesClient.getMovie({ id: 2 });
    await moviesClient.getMovie({ id: 42 });
    for (let call = 0; call < 5; call++) await failure(moviesClient.getMovie({ id: 503 }));
    expect(moviesClient.stats().endpoints.getMovie?.breaker).toBe('open');
    expect(await metrics.registry.metrics()).toBe(before);
  });

  it('two integrations on two registries count independently; stopping one leaves the other', async () => {
    const one = start();
    const two = start();
    const server = await startServer(movieHandler());
    const moviesClient: Client<typeof movies> = client(() => createClient(movies, { instances: [server.url] }));
    await moviesClient.getMovie({ id: 1 });
    one.stop();
    await moviesClient.getMovie({ id: 2 });
    const labels = { service: 'movies', endpoint: 'getMovie', outcome: 'success', code: 'OK' };
    expect(sampleValue((await scrape(one)).samples, 'telescope_calls_total', labels)).toBe(1);
    expect(sampleValue((await scrape(two)).samples, 'telescope_calls_total', labels)).toBe(2);
  });
});

describe('prometheusMetrics: subscriptions', () => {
  it('leaves nothing subscribed once every integration is stopped (runs last)', () => {
    for (const name of telescopeChannels) expect(channel(name).hasSubscribers, name).toBe(false);
  });
});
