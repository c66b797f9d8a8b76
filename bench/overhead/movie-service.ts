/**
 * The typed movie service the telescope benchmarks call (`GET /movies/:id`, zod params), with
 * and without a zod schema for the target's answer. Imports zod and telescope: client children
 * that measure other libraries load it lazily, if at all.
 */
import { z } from 'zod';
import { defineService, endpoint } from '../../src/index.js';

const params = z.object({ id: z.number().int() });

/** The target's movie (see `movieJson` in shared.ts). */
export const MovieSchema = z.object({
  id: z.number().int(),
  title: z.string(),
  year: z.number().int(),
  director: z.string(),
  genres: z.array(z.string()),
});

/** Params validated, the answer not: isolates what validating the response costs. */
export const moviesWithoutResponseSchema = defineService({
  name: 'movies',
  endpoints: { getMovie: endpoint({ method: 'GET', path: '/movies/:id', params }) },
});

/** Params and answer validated. */
export const movies = defineService({
  name: 'movies',
  endpoints: { getMovie: endpoint({ method: 'GET', path: '/movies/:id', params, response: MovieSchema }) },
});

/** As {@link moviesWithoutResponseSchema}, plus an endpoint with its own policy (not the one called). */
export const moviesWithAnOverriddenEndpoint = defineService({
  name: 'movies',
  endpoints: {
    getMovie: endpoint({ method: 'GET', path: '/movies/:id', params }),
    putMovie: endpoint({
      method: 'PUT',
      path: '/movies/:id',
      params,
      retry: { maxRetries: 2, statuses: [500, 503] },
      breaker: { volumeThreshold: 5 },
      attemptTimeoutMs: 200,
    }),
  },
});

/** getMovie with its own policy: retry statuses and a classifier, i.e. the classify layer. */
export const moviesClassified = defineService({
  name: 'movies',
  endpoints: {
    getMovie: endpoint({
      method: 'GET',
      path: '/movies/:id',
      params,
      retry: { statuses: [503], classify: (result) => (result.status === 200 ? undefined : 'failure') },
    }),
  },
});
