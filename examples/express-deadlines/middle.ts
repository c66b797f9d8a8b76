/**
 * The middle tier and the backend it calls, both Express apps behind `deadlineMiddleware`.
 *
 * catalog (backend): GET /top/:userId answers a short list; for the user `slowpoke` it takes
 * 2 s, longer than any budget in this example.
 * recommender (middle): GET /recommendations/:userId calls the catalog through a telescope
 * client. It passes no timeout of its own: the request's budget (ambient, set by the
 * middleware) is what its call gets, minus the reserve it keeps to answer its caller.
 */
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import express from 'express';
import { z } from 'zod';
import {
  createClient,
  currentDeadline,
  defineService,
  ErrorCode,
  endpoint,
  isTelescopeError,
} from '../../src/index.js';
import { type DeadlineRequest, deadlineMiddleware } from '../../src/server/index.js';

export const catalog = defineService({
  name: 'catalog',
  endpoints: {
    top: endpoint({
      method: 'GET',
      path: '/top/:userId',
      params: z.object({ userId: z.string() }),
      response: z.object({ titles: z.array(z.string()) }),
    }),
  },
});

export const recommender = defineService({
  name: 'recommender',
  endpoints: {
    recommend: endpoint({
      method: 'GET',
      path: '/recommendations/:userId',
      params: z.object({ userId: z.string() }),
      response: z.object({ userId: z.string(), titles: z.array(z.string()) }),
    }),
  },
});

/** A running service: its URL and how to stop it. */
export interface Running {
  url: string;
  close(): Promise<void>;
}

/** Prints what a hop received: the header its caller sent and the deadline it runs under. */
export function logBudget(hop: string, request: DeadlineRequest): void {
  const header = request.headers['x-request-timeout-ms'];
  const remaining = request.deadline?.remainingMs() ?? Number.NaN;
  console.log(
    `  [${hop.padEnd(7)}] ${request.method} ${request.url}  x-request-timeout-ms=${header ?? '(none)'}  budget=${Math.round(remaining)} ms`,
  );
}

/** A 504 for the caller when the budget ran out below us; anything else is a 502. */
export function answerFailure(response: express.Response, error: unknown): void {
  const timedOut =
    isTelescopeError(error) &&
    (error.code === ErrorCode.DEADLINE_EXCEEDED ||
      (error.code === ErrorCode.HTTP_STATUS && (error as { status?: number }).status === 504));
  const code = isTelescopeError(error) ? error.code : 'INTERNAL';
  response.status(timedOut ? 504 : 502).json({ error: timedOut ? 'DEADLINE_EXCEEDED' : code });
}

export async function listen(app: express.Express, onClose: () => Promise<void> = async () => {}): Promise<Running> {
  const server: Server = app.listen(0, '127.0.0.1');
  await new Promise<void>((resolve, reject) => {
    server.once('listening', resolve);
    server.once('error', reject);
  });
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    async close() {
      await onClose();
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

export function startCatalog(): Promise<Running> {
  const app = express();
  app.use(
    deadlineMiddleware({
      maxMs: 5000,
      onShed: (request, budgetMs) => console.log(`  [catalog] shed ${request.url}: budget ${budgetMs} ms on arrival`),
    }),
  );
  app.get('/top/:userId', async (request, response) => {
    logBudget('catalog', request as DeadlineRequest);
    if (request.params.userId === 'slowpoke') {
      // Slow work; stop as soon as the caller has gone (the middle gives up at its deadline).
      const gone = new AbortController();
      response.on('close', () => gone.abort());
      try {
        await sleep(2000, undefined, { signal: gone.signal });
      } catch {
        console.log('  [catalog] caller gone, work for slowpoke abandoned');
        return;
      }
    }
    response.json({ titles: ['Heat', 'Ronin', 'Thief'] });
  });
  return listen(app);
}

export function startRecommender(catalogUrl: string): Promise<Running> {
  const catalogClient = createClient(catalog, { instances: [catalogUrl], timeoutMs: 5000 });
  const app = express();
  app.use(deadlineMiddleware({ maxMs: 5000 }));
  app.get('/recommendations/:userId', async (request, response) => {
    logBudget('middle', request as DeadlineRequest);
    const startedWithMs = currentDeadline()?.remainingMs() ?? 0;
    try {
      const { titles } = await catalogClient.top({ userId: request.params.userId });
      response.json({ userId: request.params.userId, titles });
    } catch (error) {
      const left = Math.round(currentDeadline()?.remainingMs() ?? 0);
      console.log(
        `  [middle ] catalog call failed: ${isTelescopeError(error) ? error.code : String(error)} after ${Math.round(startedWithMs - left)} ms (${left} ms of budget left to answer)`,
      );
      answerFailure(response, error);
    }
  });
  return listen(app, () => catalogClient.close());
}
