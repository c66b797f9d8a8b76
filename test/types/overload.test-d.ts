import { describe, expectTypeOf, it } from 'vitest';
import type {
  AdaptiveBulkheadOptions,
  BulkheadOptions,
  BulkheadSnapshot,
  ClientOptions,
  ClientStats,
  LimitAlgorithmName,
} from '../../src/index.js';
import {
  type ConcurrencyLimiter,
  type ConcurrencyLimitOptions,
  type ConcurrencyLimitStats,
  concurrencyLimit,
  type ShedReason,
} from '../../src/server/index.js';
import type { OverloadSummary } from '../../src/storm/overload.js';

describe('adaptive bulkhead types', () => {
  it('bulkhead takes the adaptive form, the static form or false', () => {
    expectTypeOf<{ adaptive: 'gradient2' }>().toExtend<NonNullable<ClientOptions['bulkhead']>>();
    expectTypeOf<{
      adaptive: 'vegas';
      minConcurrent: 5;
      maxConcurrent: 50;
      maxQueue: 0;
    }>().toExtend<AdaptiveBulkheadOptions>();
    expectTypeOf<{ maxConcurrent: 10 }>().toExtend<BulkheadOptions>();
    expectTypeOf<false>().toExtend<ClientOptions['bulkhead']>();
    expectTypeOf<{ adaptive: 'bbr' }>().not.toExtend<NonNullable<ClientOptions['bulkhead']>>();
    expectTypeOf<LimitAlgorithmName>().toEqualTypeOf<'gradient2' | 'vegas' | 'aimd'>();
  });

  it('stats() carries the bulkhead snapshot', () => {
    expectTypeOf<ClientStats['bulkhead']>().toEqualTypeOf<BulkheadSnapshot | null | undefined>();
    expectTypeOf<BulkheadSnapshot['mode']>().toEqualTypeOf<'static' | LimitAlgorithmName>();
    expectTypeOf<BulkheadSnapshot['limit']>().toBeNumber();
  });
});

describe('concurrencyLimit types', () => {
  it('is a middleware with stats() and a Fastify plugin', () => {
    expectTypeOf(concurrencyLimit).parameter(0).toEqualTypeOf<ConcurrencyLimitOptions | undefined>();
    expectTypeOf(concurrencyLimit()).toEqualTypeOf<ConcurrencyLimiter>();
    expectTypeOf<ReturnType<ConcurrencyLimiter['stats']>>().toEqualTypeOf<ConcurrencyLimitStats>();
    expectTypeOf<ConcurrencyLimitStats['shed']>().toEqualTypeOf<Record<ShedReason, number>>();
    expectTypeOf<ShedReason>().toEqualTypeOf<'limit' | 'deadline' | 'queue-timeout'>();
  });

  it('the storm overload summary has numbers only', () => {
    expectTypeOf<OverloadSummary[keyof OverloadSummary]>().toBeNumber();
  });
});
