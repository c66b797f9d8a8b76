/**
 * Tests of the home page (the consumer's code) against the movies service's contract, with
 * faults on real sockets: fakes and instances from `telescope-http/testing`, answering with the
 * handlers the movies-client package ships.
 *
 *   npx vitest run --root examples/chaos
 */
import { describe, expect, it } from 'vitest';
import { useFake, useInstances } from '../../src/testing/index.js';
import { createMoviesClient, type Movie, moviesService } from '../sdk-package/movies-client/index.js';
import { movieHandlers } from '../sdk-package/movies-client/testing.js';
import { homePage } from './home-page.js';

const catalogue: Movie[] = [
  { id: 1, title: 'Heat', year: 1995 },
  { id: 7, title: 'Ronin', year: 1998 },
  { id: 9, title: 'Collateral', year: 2004 },
];
const picks = [1, 7, 9];
const allTitles = ['Heat', 'Ronin', 'Collateral'];

/** Runs `work` and returns its result with the time it took. */
async function timed<T>(work: () => Promise<T>): Promise<T & { ms: number }> {
  const started = performance.now();
  const result = await work();
  return { ...result, ms: performance.now() - started };
}

describe('home page, movies healthy', () => {
  it('shows every pick', async () => {
    const fake = await useFake(moviesService, movieHandlers(catalogue));
    const movies = createMoviesClient({ instances: fake.instances });
    expect(await homePage(movies, picks)).toEqual({ titles: allTitles, degraded: false });
    await movies.close();
    // Every request and response matched the contract.
    expect(fake.errors).toEqual([]);
    expect(fake.calls.map((call) => call.url).sort()).toEqual(['/movies/1', '/movies/7', '/movies/9']);
  });

  it('leaves out a pick that no longer exists, without calling the page degraded', async () => {
    const fake = await useFake(moviesService, movieHandlers(catalogue));
    const movies = createMoviesClient({ instances: fake.instances });
    expect(await homePage(movies, [1, 404])).toEqual({ titles: ['Heat'], degraded: false });
    await movies.close();
  });
});

describe('home page under faults', () => {
  it('one instance of three hangs: the page is still complete, and in time', async () => {
    const group = await useInstances(moviesService, movieHandlers(catalogue), { count: 3 });
    await group.instance(0).chaos({ hang: true });
    const movies = createMoviesClient({ instances: group.instances });
    for (let round = 0; round < 3; round++) {
      const page = await timed(() => homePage(movies, picks));
      expect(page).toMatchObject({ titles: allTitles, degraded: false });
      expect(page.ms).toBeLessThan(500 + 100);
    }
    await movies.close();
  });

  it('one instance answers 503s: retries on the others keep the page whole', async () => {
    const group = await useInstances(moviesService, movieHandlers(catalogue), { count: 2, seed: 1 });
    await group.instance(1).chaos({ errorRate: 1 });
    const movies = createMoviesClient({ instances: group.instances });
    expect(await homePage(movies, picks)).toEqual({ titles: allTitles, degraded: false });
    await movies.close();
  });

  it('the movies service is slow everywhere: the page is degraded, but ready within its budget', async () => {
    const group = await useInstances(moviesService, movieHandlers(catalogue), { count: 2 });
    await group.chaos({ latencyMs: 700 });
    const movies = createMoviesClient({ instances: group.instances });
    const page = await timed(() => homePage(movies, picks, 400));
    expect(page).toMatchObject({ titles: [], degraded: true });
    expect(page.ms).toBeLessThan(400 + 100);
    await movies.close();
  });

  it('connections reset mid-response on one instance: retried on the other', async () => {
    const group = await useInstances(moviesService, movieHandlers(catalogue), { count: 2 });
    await group.instance(0).chaos({ reset: 1 });
    const movies = createMoviesClient({ instances: group.instances });
    expect(await homePage(movies, picks)).toEqual({ titles: allTitles, degraded: false });
    await movies.close();
  });

  it('every instance refuses connections: degraded at once, not at the deadline', async () => {
    const group = await useInstances(moviesService, movieHandlers(catalogue), { count: 2 });
    await group.chaos({ refuse: true });
    const movies = createMoviesClient({ instances: group.instances });
    const page = await timed(() => homePage(movies, picks));
    expect(page).toMatchObject({ titles: [], degraded: true });
    expect(page.ms).toBeLessThan(250);
    await movies.close();
  });

  it('a slow body on one instance is cut by the attempt timeout and retried', async () => {
    const group = await useInstances(moviesService, movieHandlers(catalogue), { count: 2 });
    // ~45-byte bodies at 20 B/s would take two seconds; the client's attempt limit is 300 ms.
    await group.instance(0).chaos({ slowBodyBytesPerSecond: 20 });
    const movies = createMoviesClient({ instances: group.instances });
    const page = await timed(() => homePage(movies, picks, 700));
    expect(page).toMatchObject({ titles: allTitles, degraded: false });
    expect(page.ms).toBeLessThan(700);
    await movies.close();
  });
});
