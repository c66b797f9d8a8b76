import { describe, expectTypeOf, it } from 'vitest';
import { z } from 'zod';
import { type Client, createClient, defineService, endpoint } from '../../src/index.js';
import {
  type EndpointHandler,
  type FakeService,
  fakeService,
  type HandlerContext,
  httpError,
  type InstanceGroup,
  type ServiceHandlers,
  startInstances,
  type TestInstance,
} from '../../src/testing/index.js';

const Movie = z.object({ id: z.number().int(), title: z.string(), released: z.iso.date().optional() });
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
      query: z.object({ q: z.string(), limit: z.coerce.number().optional() }),
    }),
    byYear: endpoint({
      method: 'GET',
      path: '/years/:year',
      params: z.object({ year: z.string().transform(Number) }),
      query: z.object({ sort: z.enum(['title', 'rank']).optional() }),
      response: z.array(Movie),
    }),
    health: endpoint({ method: 'GET', path: '/health' }),
  },
});

describe('handlers are typed from the schemas', () => {
  it('params, body and context', () => {
    fakeService(movies, {
      getMovie: (input, body, context) => {
        expectTypeOf(input).toEqualTypeOf<{ id: number }>();
        expectTypeOf(body).toEqualTypeOf<undefined>();
        expectTypeOf(context).toEqualTypeOf<HandlerContext>();
        return { id: input.id, title: 'Heat' };
      },
      rate: async ({ id }, body) => {
        expectTypeOf(id).toEqualTypeOf<number>();
        expectTypeOf(body).toEqualTypeOf<{ stars: number }>();
        return { ok: body.stars > 3 };
      },
      search: (input) => {
        expectTypeOf(input).toEqualTypeOf<{ q: string; limit?: number | undefined }>();
        return [];
      },
      // Params and query together, as outputs (the transform ran).
      byYear: (input) => {
        expectTypeOf(input).toEqualTypeOf<{ year: number } & { sort?: 'title' | 'rank' | undefined }>();
        return [];
      },
      health: (input, body) => {
        expectTypeOf(input).toEqualTypeOf<Record<string, never>>();
        expectTypeOf(body).toEqualTypeOf<undefined>();
        return 'ok';
      },
    });
  });

  it('return types follow the response schema (its input side)', () => {
    fakeService(movies, {
      // @ts-expect-error title must be a string
      getMovie: ({ id }) => ({ id, title: 7 }),
    });
    fakeService(movies, {
      // @ts-expect-error ok is missing
      rate: async () => ({}),
    });
    // Without a response schema anything goes.
    fakeService(movies, { health: () => ({ anything: true }) });
    // httpError is thrown, not returned.
    fakeService(movies, {
      getMovie: ({ id }) => {
        if (id === 0) throw httpError(404, { error: 'no such movie' });
        return { id, title: 'Heat' };
      },
    });
  });

  it('unknown endpoints are rejected; every endpoint is optional', () => {
    // @ts-expect-error not an endpoint of movies
    fakeService(movies, { deleteMovie: () => undefined });
    fakeService(movies, {});
  });

  it('exported handler types', () => {
    expectTypeOf<EndpointHandler<(typeof movies)['endpoints']['rate']>>().parameters.toEqualTypeOf<
      [{ id: number }, { stars: number }, HandlerContext]
    >();
    expectTypeOf<ServiceHandlers<typeof movies>>().toHaveProperty('getMovie');
  });
});

describe('fakes and groups', () => {
  it('fake.instances goes straight into createClient', () => {
    const fake = fakeService(movies, {});
    expectTypeOf(fake).toEqualTypeOf<FakeService<typeof movies>>();
    expectTypeOf(fake.instances).toEqualTypeOf<readonly string[]>();
    const client = createClient(movies, { instances: fake.instances });
    expectTypeOf(client).toEqualTypeOf<Client<typeof movies>>();
    expectTypeOf(fake.client({ timeoutMs: 100 })).toEqualTypeOf<Client<typeof movies>>();
    // @ts-expect-error the fake provides the instances
    fake.client({ instances: ['http://127.0.0.1:1'] });
  });

  it('startInstances', async () => {
    const group = await startInstances(movies, (index) => ({ getMovie: ({ id }) => ({ id, title: `#${index}` }) }), {
      count: 3,
    });
    expectTypeOf(group).toEqualTypeOf<InstanceGroup<typeof movies>>();
    expectTypeOf(group.instance(1)).toEqualTypeOf<TestInstance<typeof movies>>();
    expectTypeOf(group.instance(1).chaos).parameter(0).toExtend<{ hang?: boolean } | undefined>();
    expectTypeOf(group.requests()[0]!.byEndpoint).toEqualTypeOf<Readonly<Record<string, number>>>();
  });
});
