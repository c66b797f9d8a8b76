// The movie service, declared once: the client, and any server or fake, are built from this.
import { z } from 'zod';
import { defineService, endpoint } from '../../src/index.js';

export const Movie = z.object({ id: z.number().int(), title: z.string(), year: z.number().int() });
export type Movie = z.infer<typeof Movie>;

export const movies = defineService({
  name: 'movies',
  endpoints: {
    getMovie: endpoint({
      method: 'GET',
      path: '/movies/:id',
      params: z.object({ id: z.number().int().positive() }),
      response: Movie,
    }),
    rate: endpoint({
      method: 'POST',
      path: '/movies/:id/ratings',
      params: z.object({ id: z.number().int().positive() }),
      body: z.object({ stars: z.number().min(1).max(5) }),
      response: z.object({ ok: z.boolean(), average: z.number() }),
    }),
    search: endpoint({
      method: 'GET',
      path: '/movies',
      query: z.object({ q: z.string().min(1) }),
      response: z.array(Movie),
      // When the movie service is unavailable, search degrades to no results instead of failing.
      fallback: [],
    }),
  },
});
