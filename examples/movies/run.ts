// Runs the movie example end to end on loopback: npm run example
import { createClient, ErrorCode, isTelescopeError, withDeadline } from '../../src/index.js';
import { startMovieService } from './server.js';
import { movies } from './service.js';

const { url, server } = await startMovieService();
const client = createClient(movies, { instances: [url], timeoutMs: 1000 });

try {
  const movie = await client.getMovie({ id: 7 }); // typed: { id: number; title: string; year: number }
  console.log('getMovie(7)       →', movie.title, movie.year);

  const rating = await client.rate({ id: 7 }, { stars: 5 });
  console.log('rate(7, 5 stars)  → average', rating.average);

  const found = await client.search({ q: 'col' });
  console.log('search("col")     →', found.map((m) => m.title).join(', '));

  // Bad input never reaches the wire.
  await client.rate({ id: 7 }, { stars: 11 }).catch((error: unknown) => {
    if (isTelescopeError(error)) console.log('rate(7, 11 stars) →', error.code, '-', error.message);
  });

  // A hanging instance costs at most the budget: here 300 ms instead of the 1000 ms default.
  const started = performance.now();
  await client.getMovie({ id: 13 }, { timeoutMs: 300 }).catch((error: unknown) => {
    if (isTelescopeError(error) && error.code === ErrorCode.DEADLINE_EXCEEDED) {
      console.log(`getMovie(13)      → ${error.code} after ${Math.round(performance.now() - started)} ms`);
    }
  });

  // Everything inside withDeadline shares one budget, across awaits and nested calls.
  await withDeadline(500, async () => {
    await client.getMovie({ id: 1 });
    await client.getMovie({ id: 13 }).catch((error: unknown) => {
      if (isTelescopeError(error)) console.log(`inside 500 ms     → ${error.code} (budget shared by both calls)`);
    });
  });

  await client.getMovie({ id: 404 }).catch((error: unknown) => {
    if (isTelescopeError(error)) console.log('getMovie(404)     →', error.code, error.message);
  });
} finally {
  await client.close();
  server.close();
}
