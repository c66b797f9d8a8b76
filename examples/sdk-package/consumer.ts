/**
 * A consumer of the movies-client package: imports it (here by relative path; in a real
 * project `from 'movies-client'`), points it at the movies service (here: two real loopback
 * instances from `startInstances`, answering with the fake the package ships) and handles
 * its typed errors. Exits 0 when every step behaved as expected.
 *
 *   node --import tsx examples/sdk-package/consumer.ts
 */
import { startInstances } from '../../src/testing/index.js';
import {
  createMoviesClient,
  type Movie,
  MovieNotFoundError,
  MoviesUnavailableError,
  moviesService,
} from './movies-client/index.js';
import { movieHandlers } from './movies-client/testing.js';

// A smoke test must end: fail loudly instead of hanging.
setTimeout(() => {
  console.error('consumer: timed out');
  process.exit(1);
}, 15_000).unref();

const catalogue: Movie[] = [
  { id: 1, title: 'Heat', year: 1995 },
  { id: 7, title: 'Ronin', year: 1998 },
  { id: 9, title: 'Collateral', year: 2004 },
];

const movies = await startInstances(moviesService, movieHandlers(catalogue), { count: 2 });
const client = createMoviesClient({ instances: movies.instances });
const checks: Array<[string, boolean]> = [];
const check = (what: string, ok: boolean) => {
  checks.push([what, ok]);
  console.log(`${ok ? 'ok  ' : 'FAIL'} ${what}`);
};

try {
  const heat = await client.getMovie(1);
  check(`getMovie(1) → ${heat.title} (${heat.year})`, heat.title === 'Heat');

  const found = await client.search('r');
  check(`search('r') → ${found.map((movie) => movie.title).join(', ')}`, found.length === 2);

  const average = await client.rate(7, 5, { idempotencyKey: 'user-42:movie-7' });
  check(`rate(7, 5) → average ${average}`, average === 5);

  // A typed error, in the service's own terms, instead of an HTTP status to interpret.
  const missing = await client.getMovie(404).catch((error: unknown) => error);
  check(`getMovie(404) → ${(missing as Error).name}`, missing instanceof MovieNotFoundError);

  // One instance goes down: the client's retry (one, on the other instance) hides it.
  await movies.instance(0).stop();
  let served = 0;
  for (let index = 0; index < 6; index++) served += (await client.getMovie(9)).id === 9 ? 1 : 0;
  check(`instance 0 down: ${served}/6 calls served by instance 1`, served === 6);

  // Both down: search falls back to [], getMovie says the service is unavailable.
  await movies.instance(1).stop();
  const empty = await client.search('heat');
  check(`everything down: search('heat') → [] (fallback)`, empty.length === 0);
  const down = await client.getMovie(1).catch((error: unknown) => error);
  check(
    `everything down: getMovie(1) → ${(down as Error).name} (${(down as MoviesUnavailableError).code})`,
    down instanceof MoviesUnavailableError && down.code === 'CONNECT_FAILED',
  );

  const counts = movies.requests().map((entry) => entry.total);
  console.log(`server-side requests per instance: ${counts.join(', ')}`);
} finally {
  await client.close();
  await movies.close();
}

if (checks.some(([, ok]) => !ok)) process.exitCode = 1;
