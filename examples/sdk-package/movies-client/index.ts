/**
 * movies-client: what the movies team publishes so that nobody calls the movies service by
 * hand. One package holds the service definition (the contract), the client defaults the
 * team stands behind (timeouts, retries), and errors typed in the service's own terms.
 *
 * In the published package the import below is `from 'telescope-http'`; this example imports the
 * repository's sources so it runs without a build.
 */
import { z } from 'zod';
import {
  type CallOptions,
  type Client,
  type ClientOptions,
  createClient,
  defineService,
  endpoint,
  HttpStatusError,
  isTelescopeError,
  type TelescopeError,
} from '../../../src/index.js';

// --- the contract -----------------------------------------------------------------------------

export const Movie = z.object({ id: z.number().int(), title: z.string(), year: z.number().int() });
export type Movie = z.infer<typeof Movie>;

/** The movies service, declared once: this client, the service's own server and every fake use it. */
export const moviesService = defineService({
  name: 'movies',
  endpoints: {
    getMovie: endpoint({
      method: 'GET',
      path: '/movies/:id',
      params: z.object({ id: z.number().int().positive() }),
      response: Movie,
    }),
    search: endpoint({
      method: 'GET',
      path: '/movies',
      query: z.object({ q: z.string().min(1), limit: z.number().int().max(50).optional() }),
      response: z.array(Movie),
      // Search is cheap to lose: an empty list beats an error page.
      fallback: [],
    }),
    rate: endpoint({
      method: 'POST',
      path: '/movies/:id/ratings',
      params: z.object({ id: z.number().int().positive() }),
      body: z.object({ stars: z.number().int().min(1).max(5) }),
      response: z.object({ average: z.number() }),
      // Ratings are idempotent per user on the server side (keyed by the idempotency key).
      idempotent: false,
    }),
  },
});

// --- the defaults -----------------------------------------------------------------------------

/**
 * What the movies team measured and stands behind: p99 is 120 ms, so an attempt gets 300 ms
 * and a call 800 ms (room for the one retry on another instance).
 */
export const moviesDefaults = {
  timeoutMs: 800,
  attemptTimeoutMs: 300,
  retry: { maxRetries: 1 },
  connectTimeoutMs: 200,
  headers: { 'user-agent': 'movies-client/1.4.0' },
} satisfies Partial<ClientOptions>;

// --- typed errors -----------------------------------------------------------------------------

/** No movie has this id (the service answered 404). */
export class MovieNotFoundError extends Error {
  override name = 'MovieNotFoundError';
  constructor(readonly id: number) {
    super(`no movie with id ${id}`);
  }
}

/**
 * The movies service could not answer in time or at all (every instance down, deadline
 * passed, circuit open...). `cause` is the telescope error, with its stable `code`.
 */
export class MoviesUnavailableError extends Error {
  override name = 'MoviesUnavailableError';
  readonly code: TelescopeError['code'];
  constructor(cause: TelescopeError) {
    super(`movies service unavailable: ${cause.code}`, { cause });
    this.code = cause.code;
  }
}

function translate(error: unknown, id?: number): never {
  if (error instanceof HttpStatusError && error.status === 404 && id !== undefined) throw new MovieNotFoundError(id);
  // Bad input and broken responses are bugs, not outages: they keep their telescope type.
  if (isTelescopeError(error) && error.code !== 'INVALID_REQUEST' && error.code !== 'INVALID_RESPONSE') {
    throw new MoviesUnavailableError(error);
  }
  throw error;
}

// --- the client -------------------------------------------------------------------------------

/** Options of {@link createMoviesClient}: where the instances are, and any override of the defaults. */
export type MoviesClientOptions = ClientOptions &
  ({ instances: ClientOptions['instances'] } | { discovery: ClientOptions['discovery'] });

/** The movies client: the service's operations in its own words. */
export interface MoviesClient {
  /** @throws MovieNotFoundError, MoviesUnavailableError */
  getMovie(id: number, options?: CallOptions): Promise<Movie>;
  /** Never fails for an outage: answers `[]` instead (the endpoint's fallback). */
  search(query: string, options?: CallOptions): Promise<Movie[]>;
  /** @throws MovieNotFoundError, MoviesUnavailableError */
  rate(id: number, stars: number, options?: CallOptions & { idempotencyKey?: string }): Promise<number>;
  /** The telescope client underneath, for stats and events. */
  readonly telescope: Client<typeof moviesService>;
  close(): Promise<void>;
}

export function createMoviesClient(options: MoviesClientOptions): MoviesClient {
  const client = createClient(moviesService, { ...moviesDefaults, ...options });
  return {
    telescope: client,
    getMovie: (id, callOptions) => client.getMovie({ id }, callOptions).catch((error: unknown) => translate(error, id)),
    search: (q, callOptions) => client.search({ q }, callOptions),
    rate: async (id, stars, { idempotencyKey, ...callOptions } = {}) => {
      // With an idempotency key the write may be retried (telescope treats it as idempotent).
      const headers = idempotencyKey
        ? { ...callOptions.headers, 'idempotency-key': idempotencyKey }
        : callOptions.headers;
      try {
        return (await client.rate({ id }, { stars }, { ...callOptions, headers })).average;
      } catch (error) {
        return translate(error, id);
      }
    },
    close: () => client.close(),
  };
}
