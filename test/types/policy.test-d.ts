import { describe, expectTypeOf, it } from 'vitest';
import { z } from 'zod';
import {
  type BackoffOptions,
  type CallContext,
  type Cancellation,
  type ClassifiedFailureError,
  type Classifier,
  type ClassifyInput,
  type ClientOptions,
  Deadline,
  defineService,
  type EndpointPolicy,
  type EndpointRetryOptions,
  endpoint,
  type HttpStatusError,
  type ResponseClass,
  type RetryOptions,
  type TelescopeError,
} from '../../src/index.js';

describe('per-endpoint policy and classification types', () => {
  it('classify takes one answer and returns a class or undefined', () => {
    expectTypeOf<ResponseClass>().toEqualTypeOf<'success' | 'failure' | 'retryable-failure'>();
    expectTypeOf<Classifier>().parameters.toEqualTypeOf<[ClassifyInput]>();
    expectTypeOf<Classifier>().returns.toEqualTypeOf<ResponseClass | undefined>();
    expectTypeOf<ClassifyInput['status']>().toEqualTypeOf<number>();
    expectTypeOf<ClassifyInput['body']>().toEqualTypeOf<unknown>();
    expectTypeOf<ClassifyInput['error']>().toEqualTypeOf<HttpStatusError | undefined>();
    expectTypeOf<TelescopeError['responseClass']>().toEqualTypeOf<ResponseClass | undefined>();
    expectTypeOf<ClassifiedFailureError>().toExtend<TelescopeError>();
  });

  it('an inline classifier is inferred from the endpoint option', () => {
    endpoint({
      method: 'GET',
      path: '/x',
      retry: {
        statuses: [500, 503],
        backoff: { baseMs: 25, maxMs: 250 },
        classify: (result) => {
          expectTypeOf(result).toEqualTypeOf<ClassifyInput>();
          return result.status === 409 ? 'failure' : undefined;
        },
      },
    });
    endpoint({
      method: 'GET',
      path: '/x',
      // @ts-expect-error not a class
      retry: { classify: () => 'maybe' },
    });
    // @ts-expect-error statuses are numbers
    endpoint({ method: 'GET', path: '/x', retry: { statuses: ['503'] } });
    // @ts-expect-error the budget is client-wide
    endpoint({ method: 'GET', path: '/x', retry: { budget: { ratio: 0.1 } } });
  });

  it('endpoint policy options mirror the client’s', () => {
    const svc = defineService({
      name: 's',
      endpoints: {
        get: endpoint({
          method: 'GET',
          path: '/x',
          response: z.object({ ok: z.boolean() }),
          retry: false,
          hedge: { delayMs: 50 },
          attemptTimeoutMs: 200,
          breaker: { volumeThreshold: 5 },
        }),
      },
    });
    expectTypeOf(svc.endpoints.get.policy).toEqualTypeOf<EndpointPolicy | undefined>();
    expectTypeOf<EndpointPolicy['retry']>().toEqualTypeOf<EndpointRetryOptions | false | undefined>();
    expectTypeOf<RetryOptions>().toExtend<EndpointRetryOptions>();
    expectTypeOf<EndpointRetryOptions['backoff']>().toEqualTypeOf<BackoffOptions | false | undefined>();
    expectTypeOf<ClientOptions['attemptHeader']>().toEqualTypeOf<string | false | undefined>();
  });

  it('a deadline can carry a cancellation', () => {
    expectTypeOf<Deadline['cancellation']>().toEqualTypeOf<Cancellation | undefined>();
    expectTypeOf(new Deadline(0, undefined, new AbortController())).toEqualTypeOf<Deadline>();
    // The cheap form is optional: an AbortController is still a Cancellation.
    expectTypeOf<Cancellation['isCancelled']>().toEqualTypeOf<boolean | undefined>();
    expectTypeOf<NonNullable<Cancellation['watch']>>().parameter(0).toEqualTypeOf<{ handleEvent(): void }>();
    expectTypeOf<CallContext['callerAborted']>().toEqualTypeOf<boolean>();
    expectTypeOf<CallContext['callerSignal']>().toEqualTypeOf<AbortSignal | undefined>();
  });
});
