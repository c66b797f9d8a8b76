/**
 * The edge: an Express app facing the outside. It reads the caller's budget (or grants
 * `defaultMs` when there is none), caps it at `maxMs`, and calls the middle tier through a
 * telescope client inside that budget.
 */
import express from 'express';
import { createClient, isTelescopeError } from '../../src/index.js';
import { type DeadlineRequest, deadlineMiddleware } from '../../src/server/index.js';
import { answerFailure, listen, logBudget, type Running, recommender } from './middle.js';

export function startEdge(recommenderUrl: string): Promise<Running> {
  const recommendations = createClient(recommender, { instances: [recommenderUrl], timeoutMs: 5000 });
  const app = express();
  app.use(
    deadlineMiddleware({
      maxMs: 2000,
      defaultMs: 1000,
      onShed: (request, budgetMs) => console.log(`  [edge   ] shed ${request.url}: budget ${budgetMs} ms on arrival`),
    }),
  );
  app.get('/home/:userId', async (request, response) => {
    logBudget('edge', request as DeadlineRequest);
    try {
      // No timeout here: the call inherits what is left of this request's deadline.
      const picks = await recommendations.recommend({ userId: request.params.userId });
      response.json({ greeting: `Hello ${picks.userId}`, picks: picks.titles });
    } catch (error) {
      console.log(`  [edge   ] recommender call failed: ${isTelescopeError(error) ? error.code : String(error)}`);
      answerFailure(response, error);
    }
  });
  return listen(app, () => recommendations.close());
}
