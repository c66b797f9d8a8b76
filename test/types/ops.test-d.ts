import type { MeterProvider } from '@opentelemetry/api';
import type { MetricProducer, MetricReaderOptions } from '@opentelemetry/sdk-metrics';
import { describe, expectTypeOf, it } from 'vitest';
import {
  type DashboardAction,
  type DashboardClient,
  type DashboardHandlerOptions,
  type DashboardOperation,
  type DashboardSnapshot,
  type DashboardSource,
  dashboard,
  type OperatorCircuit,
  type SourceStatus,
} from '../../src/dashboard/index.js';
import { type Client, createClient, defineService, endpoint } from '../../src/index.js';
import {
  type OtelMetricProducer,
  type OtelMetricProducerOptions,
  type OtelMetricsIntegration,
  type OtelMetricsOptions,
  otelMetricProducer,
  otelMetrics,
} from '../../src/otel/index.js';

const movies = defineService({ name: 'movies', endpoints: { health: endpoint({ method: 'GET', path: '/health' }) } });

describe('otelMetrics', () => {
  it('takes an optional meter provider and returns { stop() }', () => {
    expectTypeOf(otelMetrics).parameter(0).toEqualTypeOf<OtelMetricsOptions | undefined>();
    expectTypeOf<OtelMetricsOptions['meterProvider']>().toEqualTypeOf<MeterProvider | undefined>();
    expectTypeOf(otelMetrics()).toEqualTypeOf<OtelMetricsIntegration>();
    expectTypeOf<OtelMetricsIntegration['stop']>().toEqualTypeOf<() => void>();
  });
});

describe('otelMetricProducer', () => {
  it("is an SDK MetricProducer for a reader's metricProducers, with stop()", () => {
    expectTypeOf(otelMetricProducer).parameter(0).toEqualTypeOf<OtelMetricProducerOptions | undefined>();
    expectTypeOf<OtelMetricProducerOptions['temporality']>().toEqualTypeOf<'cumulative' | 'delta' | undefined>();
    expectTypeOf(otelMetricProducer()).toEqualTypeOf<OtelMetricProducer>();
    expectTypeOf<OtelMetricProducer>().toExtend<MetricProducer>();
    expectTypeOf<OtelMetricProducer['stop']>().toEqualTypeOf<() => void>();
    expectTypeOf<[OtelMetricProducer]>().toExtend<NonNullable<MetricReaderOptions['metricProducers']>>();
    // @ts-expect-error temporality is 'cumulative' or 'delta'
    otelMetricProducer({ temporality: 'weekly' });
  });
});

describe('dashboard', () => {
  it('accepts telescope clients as action targets, and sources, token and actions as options', () => {
    const client = createClient(movies, { instances: ['http://127.0.0.1:1'] });
    expectTypeOf(client).toExtend<DashboardClient>();
    expectTypeOf<Client<typeof movies>>().toExtend<DashboardClient>();
    expectTypeOf(dashboard).toBeCallableWith([client], { sources: ['http://10.0.0.7:9099/'], token: 'x'.repeat(16) });
    expectTypeOf(dashboard).toBeCallableWith([], {
      sources: [{ url: 'http://10.0.0.7:9099/', token: 't' }],
      actions: true,
    });
    expectTypeOf<DashboardHandlerOptions['sources']>().toEqualTypeOf<
      ReadonlyArray<string | DashboardSource> | undefined
    >();
    expectTypeOf<DashboardSnapshot['sources']>().toEqualTypeOf<SourceStatus[] | undefined>();
    expectTypeOf<DashboardOperation>().toEqualTypeOf<
      'breaker.forceOpen' | 'breaker.forceClosed' | 'breaker.reset' | 'configure'
    >();
    expectTypeOf<DashboardAction['options']>().toEqualTypeOf<Record<string, unknown> | undefined>();
    expectTypeOf<OperatorCircuit>().toHaveProperty('forceOpen');
    // @ts-expect-error: actions is a boolean
    void dashboard([], { actions: 'yes' });
  });
});
