import { describe, expectTypeOf, it } from 'vitest';
import { z } from 'zod';
import {
  type AttemptTransport,
  type CallOptions,
  type CircuitCause,
  type CircuitControl,
  type CircuitState,
  type Client,
  type ClientEvents,
  type ClientOptions,
  createClient,
  defineService,
  endpoint,
  type HttpStatusError,
  type IncomingResponse,
  type RedirectOptions,
  type ResponseOf,
  type TelescopeError,
  type ThrottleOptions,
} from '../../src/index.js';

const Movie = z.object({ id: z.number().int(), title: z.string() });
const movies = defineService({
  name: 'movies',
  endpoints: {
    getMovie: endpoint({
      method: 'GET',
      path: '/movies/:id',
      params: z.object({ id: z.number().int() }),
      response: Movie,
    }),
    rate: endpoint({
      method: 'POST',
      path: '/movies/:id/ratings',
      params: z.object({ id: z.number().int() }),
      body: z.object({ stars: z.number() }),
      response: z.object({ ok: z.boolean() }),
    }),
    search: endpoint({
      method: 'GET',
      path: '/movies',
      query: z.object({ q: z.string(), limit: z.number().optional() }),
    }),
    create: endpoint({ method: 'POST', path: '/movies', body: Movie.omit({ id: true }), response: Movie }),
    health: endpoint({ method: 'GET', path: '/health' }),
    byYear: endpoint({
      method: 'GET',
      path: '/years/:year',
      params: z.object({ year: z.coerce.number() }),
      query: z.object({ genre: z.string() }),
      response: z.array(Movie),
    }),
  },
});
const client = createClient(movies, { instances: ['http://127.0.0.1:1'] });

describe('typed methods', () => {
  it('infer responses from the response schema', () => {
    expectTypeOf(client.getMovie({ id: 7 })).resolves.toEqualTypeOf<{ id: number; title: string }>();
    expectTypeOf(client.rate({ id: 7 }, { stars: 5 })).resolves.toEqualTypeOf<{ ok: boolean }>();
    expectTypeOf(client.byYear({ year: 1995, genre: 'crime' })).resolves.toEqualTypeOf<
      Array<{ id: number; title: string }>
    >();
  });

  it('returns unknown without a response schema', () => {
    expectTypeOf(client.health()).resolves.toBeUnknown();
    expectTypeOf(client.search({ q: 'heat' })).resolves.toBeUnknown();
  });

  it('takes (params?, body?, options?) with only the declared parts', () => {
    expectTypeOf(client.getMovie).parameters.toEqualTypeOf<[params: { id: number }, options?: CallOptions]>();
    expectTypeOf(client.rate).parameters.toEqualTypeOf<
      [params: { id: number }, body: { stars: number }, options?: CallOptions]
    >();
    expectTypeOf(client.create).parameters.toEqualTypeOf<[body: { title: string }, options?: CallOptions]>();
    expectTypeOf(client.health).parameters.toEqualTypeOf<[options?: CallOptions]>();
    // Params and query share the first argument; input types (before coercion) are what callers pass.
    expectTypeOf(client.byYear).parameter(0).toEqualTypeOf<{ year: unknown } & { genre: string }>();
  });

  it('rejects wrong arguments at compile time', () => {
    // @ts-expect-error id must be a number
    client.getMovie({ id: '7' });
    // @ts-expect-error params are required
    client.getMovie();
    // @ts-expect-error body is required for rate
    client.rate({ id: 7 });
    // @ts-expect-error no such endpoint
    client.deleteMovie({ id: 7 });
    // @ts-expect-error timeoutMs is a number
    client.health({ timeoutMs: '100' });
  });

  it('exposes close() and the definition', () => {
    expectTypeOf(client.close).returns.resolves.toBeVoid();
    expectTypeOf(client.service).toEqualTypeOf(movies);
    expectTypeOf(client).toExtend<Client<typeof movies>>();
  });

  it('ResponseOf extracts an endpoint response type', () => {
    expectTypeOf<ResponseOf<typeof movies.endpoints.getMovie>>().toEqualTypeOf<{ id: number; title: string }>();
  });

  it('errors carry a typed code', () => {
    expectTypeOf<TelescopeError['code']>().toEqualTypeOf<
      | 'CONNECT_FAILED'
      | 'TLS_FAILED'
      | 'CONNECTION_RESET'
      | 'ATTEMPT_TIMEOUT'
      | 'DEADLINE_EXCEEDED'
      | 'HTTP_STATUS'
      | 'INVALID_RESPONSE'
      | 'RESPONSE_TOO_LARGE'
      | 'THROTTLED'
      | 'INVALID_REQUEST'
      | 'ABORTED'
      | 'CLIENT_CLOSED'
      | 'CIRCUIT_OPEN'
      | 'BULKHEAD_FULL'
      | 'NO_HEALTHY_INSTANCE'
      | 'INVALID_OPTION'
      | 'TOO_MANY_REDIRECTS'
      | 'REDIRECT_REFUSED'
      | 'CLASSIFIED_FAILURE'
    >();
  });

  it('types the transport, redirect and redaction options', () => {
    expectTypeOf<ClientOptions['transport']>().toEqualTypeOf<AttemptTransport | undefined>();
    expectTypeOf<AttemptTransport['call']>().returns.resolves.toEqualTypeOf<IncomingResponse>();
    expectTypeOf<ClientOptions['redirects']>().toEqualTypeOf<RedirectOptions | false | undefined>();
    expectTypeOf<RedirectOptions>().toEqualTypeOf<{ max?: number; allowOrigins?: readonly string[] }>();
    expectTypeOf<ClientOptions['redactHeaders']>().toEqualTypeOf<readonly string[] | undefined>();
    expectTypeOf<HttpStatusError['location']>().toEqualTypeOf<string | undefined>();
    // @ts-expect-error redirects is an options object or false, not true
    createClient(movies, { instances: ['http://127.0.0.1:1'], redirects: true });
  });
});

describe('recovery and throttling', () => {
  it('client.circuit() takes an endpoint name and returns the operator controls', () => {
    expectTypeOf(client.circuit)
      .parameter(0)
      .toEqualTypeOf<'getMovie' | 'rate' | 'search' | 'create' | 'health' | 'byYear'>();
    expectTypeOf(client.circuit('getMovie')).toEqualTypeOf<CircuitControl>();
    expectTypeOf<CircuitControl['state']>().returns.toEqualTypeOf<CircuitState>();
    expectTypeOf<CircuitControl['forced']>().returns.toEqualTypeOf<'open' | 'closed' | undefined>();
    expectTypeOf<CircuitControl['forceOpen']>().returns.toEqualTypeOf<void>();
    expectTypeOf<CircuitControl['throttleProbability']>().returns.toEqualTypeOf<number>();
    // @ts-expect-error: not an endpoint of the service
    client.circuit('getMovies');
  });

  it('breaker events say why the state changed', () => {
    expectTypeOf<ClientEvents['breaker']>().toEqualTypeOf<{
      service: string;
      endpoint: string;
      state: CircuitState;
      cause: CircuitCause;
    }>();
    expectTypeOf<CircuitCause>().toEqualTypeOf<
      | 'failures'
      | 'slow-calls'
      | 'probe-due'
      | 'probe-failed'
      | 'probes-passed'
      | 'force-open'
      | 'force-closed'
      | 'reset'
    >();
  });

  it('throttle and the breaker recovery options', () => {
    expectTypeOf<ClientOptions['throttle']>().toEqualTypeOf<ThrottleOptions | false | undefined>();
    expectTypeOf<ThrottleOptions>().toEqualTypeOf<{ k?: number; windowMs?: number; minRequests?: number }>();
    const breaker = {} as Exclude<ClientOptions['breaker'], false | undefined>;
    expectTypeOf(breaker.halfOpenProbes).toEqualTypeOf<number | undefined>();
    expectTypeOf(breaker.minResetTimeoutMs).toEqualTypeOf<number | undefined>();
    expectTypeOf(breaker.rampMs).toEqualTypeOf<number | undefined>();
    expectTypeOf(breaker.slowCallMs).toEqualTypeOf<number | undefined>();
    expectTypeOf(breaker.slowCallRatePercent).toEqualTypeOf<number | undefined>();
    expectTypeOf(breaker.consecutiveFailures).toEqualTypeOf<number | undefined>();
  });
});
