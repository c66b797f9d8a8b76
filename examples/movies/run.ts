// Runs the movie example end to end on loopback: npm run example
import { memoryCache, redisCache, withCache } from '../../src/cache/index.js';
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

  // The full path of the design: app → cached movie client (local LRU → remote cache) → service.
  // The remote tier is Redis when REDIS_URL is set (e.g. redis://127.0.0.1:6379), else in memory.
  const remote = process.env.REDIS_URL ? redisCache({ url: process.env.REDIS_URL, timeoutMs: 50 }) : memoryCache();
  const cached = withCache(createClient(movies, { instances: [url], timeoutMs: 500 }), {
    local: { maxEntries: 1000 },
    remote,
    endpoints: { getMovie: { ttlMs: 60_000, staleMs: 600_000, key: (p) => `movie:${p.id}` } },
  });
  try {
    for (const step of ['first read', 'second read']) {
      const { value, cacheStatus } = await cached.withMetadata.getMovie({ id: 9 });
      console.log(`cached ${step.padEnd(11)} → ${value.title} from ${cacheStatus}`);
    }
    await cached.invalidate('getMovie', { id: 9 });
    const again = await cached.withMetadata.getMovie({ id: 9 });
    console.log(`after invalidate   → ${again.value.title} from ${again.cacheStatus}`);

    // The service goes away: the cached movie is still served, search falls back.
    server.closeAllConnections();
    await new Promise((resolve) => server.close(resolve));
    const stillCached = await cached.withMetadata.getMovie({ id: 9 });
    console.log(`service down       → ${stillCached.value.title} from ${stillCached.cacheStatus}`);
    console.log(`search, service down → ${JSON.stringify(await client.search({ q: 'heat' }))} (the fallback)`);
  } finally {
    await cached.close();
  }
} finally {
  await client.close();
  if (server.listening) server.close();
}
