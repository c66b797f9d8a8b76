/**
 * movies-client/testing: a fake of the movies service, shipped with the client so that
 * consumers test against the real contract instead of hand-written stubs. Built on
 * `telescope-http/testing`; in the published package the import is `from 'telescope-http/testing'`.
 */
import { httpError, type ServiceHandlers } from '../../../src/testing/index.js';
import type { Movie, moviesService } from './index.js';

/** Handlers of the movies service over an in-memory catalogue (ratings kept per movie). */
export function movieHandlers(catalogue: readonly Movie[]): ServiceHandlers<typeof moviesService> {
  const ratings = new Map<number, number[]>();
  const find = (id: number) => catalogue.find((movie) => movie.id === id) ?? notFound(id);
  return {
    getMovie: ({ id }) => find(id),
    search: ({ q, limit }) =>
      catalogue.filter((movie) => movie.title.toLowerCase().includes(q.toLowerCase())).slice(0, limit ?? 50),
    rate: ({ id }, { stars }) => {
      find(id);
      const list = [...(ratings.get(id) ?? []), stars];
      ratings.set(id, list);
      return { average: list.reduce((sum, value) => sum + value, 0) / list.length };
    },
  };
}

function notFound(id: number): never {
  throw httpError(404, { error: 'MOVIE_NOT_FOUND', id });
}
