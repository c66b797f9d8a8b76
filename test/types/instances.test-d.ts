import { describe, expectTypeOf, it } from 'vitest';
import type {
  BalancerName,
  ClientEvents,
  ClientOptions,
  ClientStats,
  EjectionReason,
  HealthCheckOptions,
  InstanceEvent,
  OutlierOptions,
} from '../../src/index.js';

describe('instance health types', () => {
  it('client options: balancer, outlier rates, slow start, health checks, zone', () => {
    expectTypeOf<BalancerName>().toEqualTypeOf<'p2c' | 'p2c-ewma' | 'round-robin'>();
    expectTypeOf<ClientOptions['balancer']>().toEqualTypeOf<BalancerName | undefined>();
    expectTypeOf<ClientOptions['slowStartMs']>().toEqualTypeOf<number | undefined>();
    expectTypeOf<ClientOptions['healthCheck']>().toEqualTypeOf<HealthCheckOptions | false | undefined>();
    expectTypeOf<HealthCheckOptions['path']>().toEqualTypeOf<string>();
    expectTypeOf<HealthCheckOptions['intervalMs']>().toEqualTypeOf<number | undefined>();
    expectTypeOf<OutlierOptions['failurePercentage']>().toEqualTypeOf<number | undefined>();
    expectTypeOf<OutlierOptions['successRateStdevFactor']>().toEqualTypeOf<number | undefined>();
    expectTypeOf<OutlierOptions['minRequests']>().toEqualTypeOf<number | undefined>();
    expectTypeOf<OutlierOptions['intervalMs']>().toEqualTypeOf<number | undefined>();
    expectTypeOf<ClientStats['instances'][number]['latencyMs']>().toEqualTypeOf<number | undefined>();
    const options: ClientOptions = {
      instances: ['http://127.0.0.1:1'],
      balancer: 'p2c-ewma',
      outlier: { failurePercentage: 5, successRateStdevFactor: 1.9, minRequests: 50, intervalMs: 10_000 },
      slowStartMs: 30_000,
      healthCheck: { path: '/healthz', intervalMs: 5000, timeoutMs: 1000, unhealthyThreshold: 3, healthyThreshold: 2 },
    };
    expectTypeOf(options).toMatchTypeOf<ClientOptions>();
    // @ts-expect-error: not a balancer
    const wrong: ClientOptions = { instances: [], balancer: 'ewma' };
    void wrong;
    // @ts-expect-error: a health check needs a path
    const noPath: HealthCheckOptions = { intervalMs: 1000 };
    void noPath;
  });

  it('events say why', () => {
    expectTypeOf<EjectionReason>().toEqualTypeOf<'consecutive-failures' | 'failure-percentage' | 'success-rate'>();
    expectTypeOf<ClientEvents['eject']['reason']>().toEqualTypeOf<EjectionReason>();
    expectTypeOf<ClientEvents['eject']['rate']>().toEqualTypeOf<number | undefined>();
    expectTypeOf<ClientEvents['return']['reason']>().toEqualTypeOf<'expired' | 'health-check'>();
    expectTypeOf<ClientEvents['health']>().toMatchTypeOf<Extract<InstanceEvent, { type: 'health' }>>();
    expectTypeOf<ClientEvents['health']['service']>().toEqualTypeOf<string>();
    expectTypeOf<ClientEvents['health']['healthy']>().toEqualTypeOf<boolean>();
  });
});
