import type { IncomingMessage, ServerResponse } from 'node:http';
import { createClient } from '../../client/index.js';
import { isTelescopeError } from '../../core/errors.js';
import type { DeadlineRequest } from '../../server/index.js';
import { deadlineMiddleware } from '../../server/index.js';
import { defineService, endpoint } from '../../service/index.js';
import type { StormStrategy } from '../strategy.js';

const degraded = Object.freeze({ degraded: true });

/** The next tier, as telescope sees it. The edge falls back to a degraded answer. */
const nextTier = defineService({
  name: 'next',
  endpoints: { work: endpoint({ method: 'GET', path: '/work' }) },
});
const nextTierWithFallback = defineService({
  name: 'next',
  endpoints: { work: endpoint({ method: 'GET', path: '/work', fallback: degraded }) },
});

const middleware = deadlineMiddleware({ maxMs: 3000, defaultMs: 3000 });

/**
 * telescope: a 3 s edge budget that telescopes into each hop (the middle takes at most 1 s),
 * attempts short enough for one retry on a different instance, a retry budget, outlier
 * ejection, breakers, and a fallback at the edge.
 */
const telescope: StormStrategy = {
  name: 'telescope',
  description:
    '3 s edge budget → 1 s middle, 1 retry on another instance within a 10% retry budget, breaker + edge fallback',
  createCaller({ tier, targets, onAttempt }) {
    const edge = tier === 'edge';
    const client = createClient(edge ? nextTierWithFallback : nextTier, {
      instances: targets,
      timeoutMs: edge ? 3000 : 1000,
      attemptTimeoutMs: edge ? 1100 : 450,
      // One retry on another instance, at most 10% of traffic (plus 1/s): when a whole tier
      // fails, retries at two tiers must not multiply each other.
      retry: { maxRetries: 1, budget: { ratio: 0.1, minPerSecond: 1 } },
      outlier: { consecutiveFailures: 5, baseEjectionMs: 5000 },
      bulkhead: { maxConcurrent: 256, maxQueue: 0 },
    });
    const attempts = (): void => onAttempt();
    client.on('retry', attempts);
    client.on('hedge', attempts);
    return {
      async call() {
        onAttempt();
        try {
          const body = await client.work();
          return body === degraded ? { status: 200, fallback: true } : { status: 200 };
        } catch (error) {
          if (!isTelescopeError(error)) return { status: 500 };
          switch (error.code) {
            case 'DEADLINE_EXCEEDED':
            case 'ATTEMPT_TIMEOUT':
              return { status: 504 };
            case 'CIRCUIT_OPEN':
            case 'BULKHEAD_FULL':
            case 'NO_HEALTHY_INSTANCE':
              return { status: 503 };
            case 'HTTP_STATUS':
              return { status: (error as unknown as { status: number }).status };
            default:
              return { status: 502 };
          }
        }
      },
      close: () => client.close(),
    };
  },
  serve(request: IncomingMessage, response: ServerResponse, next: () => void) {
    middleware(request, response, next);
  },
  expired(request: IncomingMessage) {
    return (request as DeadlineRequest).deadline?.expired === true;
  },
};
export default telescope;
