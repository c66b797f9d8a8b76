import type { IncomingMessage, ServerResponse } from 'node:http';
import { type ClientOptions, createClient } from '../../client/index.js';
import type { Clock } from '../../core/clock.js';
import { isTelescopeError } from '../../core/errors.js';
import { checkLimitOptions } from '../../limit/index.js';
import type { DeadlineRequest, DeadlineServerOptions } from '../../server/index.js';
import {
  type ConcurrencyLimitOptions,
  concurrencyLimit,
  concurrencyLimitDefaults,
  deadlineMiddleware,
  ServerLimiter,
} from '../../server/index.js';
import { defineService, endpoint } from '../../service/index.js';
import { type AttemptTransport, transport } from '../../transport/index.js';
import type { CallOutcome, StormStrategy } from '../strategy.js';
import type { TierName } from '../types.js';

/** The edge's fallback answer (a degraded body, recognised by identity). */
export const degradedAnswer = Object.freeze({ degraded: true });

/** The next tier, as telescope sees it. The edge falls back to a degraded answer. */
const nextTier = defineService({
  name: 'next',
  endpoints: { work: endpoint({ method: 'GET', path: '/work' }) },
});
const nextTierWithFallback = defineService({
  name: 'next',
  endpoints: { work: endpoint({ method: 'GET', path: '/work', fallback: degradedAnswer }) },
});

/**
 * Deadline admission on every tier (real mode: `deadlineMiddleware`; simulation: the same
 * header parsing, `parseBudgetHeader`, with these options).
 */
export const telescopeServerOptions = Object.freeze({ maxMs: 3000, defaultMs: 3000 }) satisfies DeadlineServerOptions;

/**
 * Whether the tiers use the adaptive limits (servers: `concurrencyLimit` on middle and backend;
 * clients: the adaptive bulkhead). On by default; `TELESCOPE_STORM_ADAPTIVE=0` gives the static
 * bulkhead and no server limit (real mode and simulation), for comparison (docs/overload.md).
 */
const adaptiveTiers = (): boolean => process.env.TELESCOPE_STORM_ADAPTIVE !== '0';

/** The client options of one tier, without `instances` (and transport, clock, random). */
export type TelescopeTierClientOptions = Omit<ClientOptions, 'instances' | 'discovery'>;

/**
 * What a tier's telescope client for the next tier is: the service definition (the edge's
 * has the fallback) and the options. Real mode and the simulator both build their clients
 * from this, so they run the same policy.
 */
export function telescopeClientOptions(tier: TierName): {
  service: typeof nextTier | typeof nextTierWithFallback;
  options: TelescopeTierClientOptions;
} {
  const edge = tier === 'edge';
  return {
    service: edge ? nextTierWithFallback : nextTier,
    options: {
      timeoutMs: edge ? 3000 : 1000,
      attemptTimeoutMs: edge ? 1100 : 450,
      // One retry on another instance, at most 10% of traffic (plus 1/s): when a whole tier
      // fails, retries at two tiers must not multiply each other.
      retry: { maxRetries: 1, budget: { ratio: 0.1, minPerSecond: 1 } },
      // Slow and failing instances get less traffic (peak-EWMA cost), and an instance failing
      // 5% or more of its calls over 2 s is ejected: a flaky instance stops costing retries.
      balancer: 'p2c-ewma',
      outlier: {
        consecutiveFailures: 5,
        baseEjectionMs: 5000,
        failurePercentage: 5,
        minRequests: 20,
        intervalMs: 2000,
      },
      // The adaptive limit, shedding at once rather than queueing (static with
      // TELESCOPE_STORM_ADAPTIVE=0). A floor of 10 instead of the default 20: under overload the
      // edge's limit sat on the floor, 20 calls in flight for the backends' 6 slots (p99 3.2–3.4×
      // the unloaded one at 3× load; with 10: 2.2–2.5×, the same goodput; docs/overload.md).
      bulkhead: adaptiveTiers()
        ? { adaptive: 'gradient2', maxQueue: 0, minConcurrent: 10 }
        : { maxConcurrent: 256, maxQueue: 0 },
    },
  };
}

/**
 * The concurrency limit in front of every tier's server (real mode: `concurrencyLimit`;
 * simulation: the same `ServerLimiter`): it sheds with 503 before the tier's own queue fills,
 * and only queues what the deadline allows.
 */
export const telescopeLimitOptions = Object.freeze({
  adaptive: 'gradient2',
  // Measured in the overload simulation (docs/overload.md): a queue of 2 keeps the slots busy
  // between arrivals (goodput 0.99 of capacity) and adds at most a short wait; 8 doubles p99.
  minConcurrent: 1,
  maxQueue: 2,
}) satisfies ConcurrencyLimitOptions;

/** The limit options of a tier's server: a calling tier keeps at least 8 slots. */
export function telescopeLimitOptionsOf(tier: TierName): ConcurrencyLimitOptions {
  return tier === 'backend' ? telescopeLimitOptions : { ...telescopeLimitOptions, minConcurrent: 8 };
}

/**
 * The simulator's limiter for one tier instance (as real mode's `concurrencyLimit`): none at
 * the edge, whose fallback answers what the tiers behind it cannot.
 */
export function telescopeServerLimiter(tier: TierName, clock: Clock): ServerLimiter | undefined {
  if (!adaptiveTiers() || tier === 'edge') return undefined;
  const checked = checkLimitOptions('', telescopeLimitOptionsOf(tier), concurrencyLimitDefaults);
  return new ServerLimiter({ ...checked, name: 'tier' }, clock);
}

/**
 * A transport that counts every attempt it sends (retries, hedges and probes included; calls
 * the breaker, the throttle or the bulkhead fail fast send none), for the lab's attempt counts.
 */
export function countingTransport(inner: AttemptTransport, onAttempt: () => void): AttemptTransport {
  return {
    call(request, context) {
      onAttempt();
      return inner.call(request, context);
    },
    close: () => inner.close(),
    ...(inner.drop === undefined ? {} : { drop: (url: string) => inner.drop?.(url) ?? Promise.resolve() }),
  };
}

const answered: CallOutcome = Object.freeze({ status: 200 });
const fellBack: CallOutcome = Object.freeze({ status: 200, fallback: true });

/** The status a tier answers with when its call to the next tier returned `body` (shared, frozen). */
export function telescopeSuccess(body: unknown): CallOutcome {
  return body === degradedAnswer ? fellBack : answered;
}

/** The status a tier answers with when its call to the next tier failed with `error`. */
export function telescopeFailure(error: unknown): CallOutcome {
  if (!isTelescopeError(error)) return { status: 500 };
  switch (error.code) {
    case 'DEADLINE_EXCEEDED':
    case 'ATTEMPT_TIMEOUT':
      return { status: 504 };
    case 'CIRCUIT_OPEN':
    case 'THROTTLED':
    case 'BULKHEAD_FULL':
    case 'NO_HEALTHY_INSTANCE':
      return { status: 503 };
    case 'HTTP_STATUS':
      return { status: (error as unknown as { status: number }).status };
    default:
      return { status: 502 };
  }
}

/** Made on first use: importing the strategy (the simulator does) has no side effect. */
let middleware: ReturnType<typeof deadlineMiddleware> | undefined;
let limiter: ReturnType<typeof concurrencyLimit> | undefined;

/**
 * telescope: a 3 s edge budget that telescopes into each hop (the middle takes at most 1 s),
 * attempts short enough for one retry on a different instance, a retry budget, outlier
 * ejection, breakers, and a fallback at the edge.
 */
const telescope: StormStrategy = {
  name: 'telescope',
  description:
    '3 s edge budget → 1 s middle, 1 retry on another instance within a 10% retry budget, breaker + edge fallback',
  createCaller({ tier, targets, onAttempt, fallback, client: settings }) {
    const { options } = telescopeClientOptions(tier);
    // The edge's client falls back to a degraded answer unless the topology says otherwise.
    const { service } = telescopeClientOptions((fallback ?? tier === 'edge') ? 'edge' : 'middle');
    const client = createClient(service, {
      ...options,
      ...(settings as Partial<TelescopeTierClientOptions> | undefined),
      instances: targets,
      transport: countingTransport(transport({}), onAttempt),
    });
    return {
      async call() {
        try {
          return telescopeSuccess(await client.work());
        } catch (error) {
          return telescopeFailure(error);
        }
      },
      close: () => client.close(),
    };
  },
  serve(request: IncomingMessage, response: ServerResponse, next: () => void, tier?: TierName) {
    middleware ??= deadlineMiddleware(telescopeServerOptions);
    if (!adaptiveTiers() || tier === 'edge') {
      // The front door takes what the load offers (see telescopeServerLimiter).
      middleware(request, response, next);
      return;
    }
    limiter ??= concurrencyLimit({
      ...telescopeLimitOptionsOf(tier ?? 'backend'),
      maxMs: telescopeServerOptions.maxMs,
      name: 'tier',
    });
    const limit = limiter;
    // Deadline first (504 for a budget gone, req.deadline set), then the limit (which reads it).
    middleware(request, response, () => limit(request, response, next));
  },
  expired(request: IncomingMessage) {
    return (request as DeadlineRequest).deadline?.expired === true;
  },
};
export default telescope;
