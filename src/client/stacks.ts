/**
 * The call stacks of one client, built from the options `configure()` can change: the
 * client's stack, and one per endpoint with a policy of its own (src/client/policy.ts).
 * Layers with state (breakers, the bulkhead, the instances, the retry budget) are made once by
 * `createClient` and passed in; the layers without state are built anew on every assembly.
 */
import { attempt } from '../attempt/index.js';
import { type BreakerLayer, breaker } from '../breaker/index.js';
import type { BulkheadLayer } from '../bulkhead/index.js';
import { type Call, compose, type Layer } from '../core/call.js';
import type { Clock } from '../core/clock.js';
import { deadline } from '../deadline/index.js';
import { type HedgeOptions, RetryBudget, type RetryEvent, type RetryOptions, retry } from '../retry/index.js';
import type { ServiceDefinition } from '../service/index.js';
import type { ThrottleOptions } from '../throttle/index.js';
import type { AttemptTransport } from '../transport/index.js';
import { classifyLayerFor, forEndpoint, resolvePolicy } from './policy.js';
import { type ClientOptions, clientDefaults } from './types.js';

/** What a client's stacks are made of, beyond the options: fixed for the client's life. */
export interface StackParts {
  readonly service: ServiceDefinition;
  readonly clock: Clock;
  readonly wire: AttemptTransport;
  /** The options given to `createClient` (those `configure()` cannot change are read here). */
  readonly created: ClientOptions;
  readonly fallback: Layer | false;
  readonly observe: Layer;
  /** Response schemas (undefined when no endpoint has one). */
  readonly decode: Layer | undefined;
  /** Holds calls until discovery's first instance set (src/client/first-instances.ts); undefined with static instances. */
  readonly firstInstances: Layer | undefined;
  readonly balance: Layer;
  readonly redirects: Layer | undefined;
  /** The client's breaker: the circuits of every endpoint without breaker options of its own. */
  readonly breaker: BreakerLayer;
  /** What an endpoint's own breaker is made with. */
  readonly breakerEnvironment: Parameters<typeof breaker>[1];
  /** Breakers of endpoints with their own breaker options, by endpoint (made on first assembly). */
  readonly endpointBreakers: Map<string, BreakerLayer>;
  readonly bulkhead: BulkheadLayer;
  readonly onRetryEvent: (event: RetryEvent) => void;
  /** Records in stats() whether an endpoint's circuit can trip. */
  readonly markBreaker: (endpoint: string, trips: boolean) => void;
}

/**
 * The client-side throttle in force: as given, else on with its defaults unless the breaker is
 * off (`breaker: false` means every call goes out).
 */
export function throttleOf(o: Pick<ClientOptions, 'throttle' | 'breaker'>): ThrottleOptions | false {
  return o.throttle ?? (o.breaker === false ? false : {});
}

/**
 * Builds every endpoint's stack from `o`. Throws INVALID_OPTION on a bad value; `pending`
 * collects what to put in force once every check has passed (new endpoint breakers, the
 * breaker marks in stats()). Returns the stacks by endpoint and the retry budget in force
 * (made here when only an endpoint retries).
 */
export function assembleStacks(
  parts: StackParts,
  o: ClientOptions,
  budget: RetryBudget | undefined,
  pending: Array<() => void>,
): { stacks: Map<string, Call>; budget: RetryBudget | undefined } {
  const { clock, created } = parts;
  const attemptNeedsMs = (o.minAttemptMs ?? clientDefaults.minAttemptMs) + (o.reserveMs ?? clientDefaults.reserveMs);
  const retryOptions = o.retry === false ? { maxRetries: 0, budget: false as const } : (o.retry ?? {});
  let ownBudget = budget;
  const retryLayerFor = (
    own: RetryOptions | false,
    hedge: HedgeOptions | false | undefined,
    retryBudget: RetryBudget | undefined,
  ): Layer | undefined =>
    own === false && !hedge
      ? undefined
      : retry({
          ...(own === false ? { maxRetries: 0 } : own),
          budget: false,
          retryBudget,
          clock,
          attemptNeedsMs,
          hedge,
          random: created.random,
          onEvent: parts.onRetryEvent,
        });
  const deadlineLayer = deadline({ minAttemptMs: o.minAttemptMs });
  /** One stack; the client's, or an endpoint's with its own breaker, retry, classify and attempt layers. */
  const buildStack = (policy: {
    breaker: Layer | undefined;
    retry: Layer | undefined;
    classify: Layer | undefined;
    attemptTimeoutMs: number | undefined;
  }): Call =>
    compose(
      parts.fallback,
      parts.observe,
      parts.decode,
      deadlineLayer,
      parts.firstInstances,
      policy.breaker,
      o.bulkhead === false ? undefined : parts.bulkhead.layer,
      policy.retry,
      parts.balance,
      policy.classify,
      attempt({
        attemptTimeoutMs: policy.attemptTimeoutMs,
        reserveMs: o.reserveMs,
        minAttemptMs: o.minAttemptMs,
        deadlineHeader: created.deadlineHeader,
        attemptHeader: created.attemptHeader,
      }),
      parts.redirects,
    )(parts.wire.call);
  const clientThrottle = throttleOf(o);
  const clientBreaker = o.breaker === false && clientThrottle === false ? undefined : parts.breaker.layer;
  const stack = buildStack({
    breaker: clientBreaker,
    retry: retryLayerFor(o.retry === false ? false : retryOptions, o.hedge, budget),
    classify: classifyLayerFor(o.retry),
    attemptTimeoutMs: o.attemptTimeoutMs,
  });
  // Endpoints with their own policy get their own stack; the others share the client's.
  const stacks = new Map<string, Call>();
  for (const [name, definition] of Object.entries(parts.service.endpoints)) {
    const policy = definition.policy;
    if (policy === undefined) {
      stacks.set(name, stack);
      pending.push(() => parts.markBreaker(name, o.breaker !== false));
      continue;
    }
    stacks.set(
      name,
      forEndpoint(name, () => {
        const resolved = resolvePolicy(policy, {
          retry: o.retry,
          hedge: o.hedge,
          attemptTimeoutMs: o.attemptTimeoutMs,
        });
        if (resolved.retriesOnItsOwn) ownBudget ??= new RetryBudget(clock);
        let ownBreaker = clientBreaker;
        if (resolved.breaker === false) ownBreaker = undefined;
        else if (resolved.breaker !== undefined) {
          const breakerOptions = { ...(o.breaker || {}), ...resolved.breaker };
          const existing = parts.endpointBreakers.get(name);
          if (existing === undefined) {
            const made = breaker(breakerOptions, { ...parts.breakerEnvironment, throttle: clientThrottle });
            pending.push(() => parts.endpointBreakers.set(name, made));
            ownBreaker = made.layer;
          } else {
            pending.push(existing.prepare(breakerOptions, clientThrottle));
            ownBreaker = existing.layer;
          }
        }
        const trips = resolved.breaker !== false && (resolved.breaker !== undefined || o.breaker !== false);
        pending.push(() => parts.markBreaker(name, trips));
        return buildStack({
          breaker: ownBreaker,
          retry: retryLayerFor(resolved.retry, resolved.hedge, ownBudget),
          classify: classifyLayerFor(resolved.retry),
          attemptTimeoutMs: resolved.attemptTimeoutMs,
        });
      }),
    );
  }
  return { stacks, budget: ownBudget };
}
