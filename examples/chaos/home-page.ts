/**
 * The code under test: the home page of a streaming site, which shows the user's picks by
 * asking the movies service (through the `movies-client` package) for each of them.
 *
 * Its contract, which the tests check under faults: the page is ready within `budgetMs`
 * whatever the movies service does; a pick that cannot be loaded in time is left out and the
 * page says it is `degraded`; a pick that no longer exists is left out silently.
 */
import { withDeadline } from '../../src/index.js';
import { MovieNotFoundError, type MoviesClient } from '../sdk-package/movies-client/index.js';

export interface HomePage {
  titles: string[];
  /** Some picks could not be loaded (the movies service was slow or down). */
  degraded: boolean;
}

export async function homePage(movies: MoviesClient, picks: readonly number[], budgetMs = 500): Promise<HomePage> {
  // One budget for the whole page: every call inside shares it (and sends what is left of it).
  return withDeadline(budgetMs, async () => {
    const results = await Promise.allSettled(picks.map((id) => movies.getMovie(id)));
    const titles: string[] = [];
    let degraded = false;
    for (const result of results) {
      if (result.status === 'fulfilled') titles.push(result.value.title);
      else if (!(result.reason instanceof MovieNotFoundError)) degraded = true;
    }
    return { titles, degraded };
  });
}
