/**
 * What the soak's two processes agree on: the service (declared once, as an application would),
 * the instances' handlers, and the IPC messages between the runner and the instances child.
 */
import { z } from 'zod';
import { defineService, endpoint } from '../../src/index.js';
import type { ServiceHandlers } from '../../src/testing/index.js';

export const Movie = z.object({ id: z.number().int(), title: z.string(), year: z.number().int() });
export type Movie = z.infer<typeof Movie>;

/** Title of the answer `getMovie`'s fallback gives, so the driver can tell it from a real one. */
export const fallbackTitle = 'unavailable';

export const movies = defineService({
  name: 'movies',
  endpoints: {
    // Idempotent, retried, with a fallback. An async one, as a fallback reading a local store
    // would be: that path races the fallback against the call's deadline.
    getMovie: endpoint({
      method: 'GET',
      path: '/movies/:id',
      params: z.object({ id: z.number().int().positive() }),
      response: Movie,
      fallback: async (_error, params) => ({ id: params.id, title: fallbackTitle, year: 0 }),
    }),
    // Idempotent, retried, no fallback: failures reach the caller.
    search: endpoint({
      method: 'GET',
      path: '/movies',
      query: z.object({ q: z.string().min(1) }),
      response: z.array(Movie),
    }),
    // A write: never retried once sent, no fallback.
    rate: endpoint({
      method: 'POST',
      path: '/movies/:id/ratings',
      params: z.object({ id: z.number().int().positive() }),
      body: z.object({ stars: z.number().min(1).max(5) }),
      response: z.object({ ok: z.boolean(), average: z.number() }),
    }),
  },
});

export const handlers: ServiceHandlers<typeof movies> = {
  getMovie: ({ id }) => ({ id, title: 'Heat', year: 1995 }),
  search: ({ q }) => [
    { id: 1, title: `${q} (1995)`, year: 1995 },
    { id: 2, title: `${q} (2021)`, year: 2021 },
  ],
  rate: () => ({ ok: true, average: 4.5 }),
};

/** Faults of the instances, set by the runner's flags. */
export interface ChaosPlan {
  /** Share of instance 1's requests answered 503. */
  errorRate: number;
  /** Instance 2 hangs every request for `hangForMs` once every `hangEveryMs`. */
  hangEveryMs: number;
  hangForMs: number;
  /** Delay from the load's start to instance 2's first hang. */
  firstHangAfterMs: number;
  seed: number;
}

/** Child → runner: the instances are listening. */
export interface InstancesReady {
  kind: 'ready';
  urls: string[];
}

/** Child → runner: instance 2 started or stopped hanging. */
export interface HangPhase {
  kind: 'hang';
  hanging: boolean;
}

/** Child → runner: server-side counts, answered to `{ kind: 'counts' }`. */
export interface InstanceCounts {
  kind: 'counts';
  hangPhases: number;
  instances: Array<{
    url: string;
    total: number;
    byStatus: Record<string, number>;
    faults: Record<string, number>;
    openConnections: number;
  }>;
}

export type InstancesMessage = InstancesReady | HangPhase | InstanceCounts;

/** Runner → child. */
export type RunnerMessage = { kind: 'start'; plan: ChaosPlan } | { kind: 'counts' };
