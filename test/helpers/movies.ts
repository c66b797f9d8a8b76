import { z } from 'zod';
import { defineService, endpoint } from '../../src/index.js';
import { type Handler, sendJson } from './server.js';

export const Movie = z.object({ id: z.number().int(), title: z.string() });

/** The movie service used across tests. */
export const movies = defineService({
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
      query: z.object({ q: z.string(), limit: z.number().int().optional() }),
    }),
    byTitle: endpoint({
      method: 'GET',
      path: '/titles/:title',
      params: z.object({ title: z.string() }),
    }),
    health: endpoint({ method: 'GET', path: '/health' }),
  },
});

/** A movie service's handler: `GET /movies/:id` answers `{ id, title: 'movie <id>' }`; any other path 404. */
export const movieById: Handler = (request, response) => {
  const match = /^\/movies\/(\d+)$/.exec(request.url ?? '');
  if (match === null) return sendJson(response, 404, { error: 'no such movie' });
  sendJson(response, 200, { id: Number(match[1]), title: `movie ${match[1]}` });
};
