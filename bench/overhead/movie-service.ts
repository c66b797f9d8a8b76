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
