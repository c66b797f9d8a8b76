/**
 * `withCache(client, options)`: a read-through cache around a typed client, in two tiers.
 *
 * Read path: local (in-process LRU of decoded, frozen values) → remote (a shared store of JSON
 * envelopes: memory, Redis, memcached or your own) → the service. A remote hit fills the local
 * tier; a service answer is put in the local tier at once and written to the remote tier behind
 * the caller's back (a failed write is logged and counted, never seen by the caller).
 *
 * The parts, each in its own file:
 * - `options.ts`: checks the options and resolves the defaults;
 * - `policy.ts`: the entry policy (fresh, stale-while-revalidate, stale-if-error, negative caching);
 * - `local-tier.ts` and `remote-tier.ts`: the tiers (remote operations have their own short
 *   timeouts, cut to half the call's remaining budget; a failure is a miss, never an error);
 * - `single-flight.ts`: concurrent misses of one key share one load; with `lease`, one process
 *   at a time refreshes a key;
 * - `tier-chain.ts`: what a load does (remote → lease → service, and storing the answer);
 * - `stats.ts`: the counters.
 *
 * This file puts them together: the cached methods (the local-hit fast path, then a flight),
 * how a result is counted and handed to the caller, invalidation (deletes the key everywhere
 * and publishes it, not the value, on the bus so every process drops its local copy) and close.
 */
import { randomUUID } from 'node:crypto';
import type { CallOptions, Client } from '../client/index.js';
import { channels } from '../core/channels.js';
import { ErrorCode, HttpStatusError, invalidOption, TelescopeError } from '../core/errors.js';
import type { ClientStats } from '../observe/index.js';
import type { ServiceDefinition } from '../service/index.js';
import { CacheContext } from './context.js';
import { LocalTier } from './local-tier.js';
import { type EndpointState, resolveCacheOptions } from './options.js';
import { EntryPolicy } from './policy.js';
import { FAILED, RemoteCalls, RemoteTier } from './remote-tier.js';
import { Leases, type Outcome, SingleFlight } from './single-flight.js';
import { cacheStats, countOutcome } from './stats.js';
import { TierChain } from './tier-chain.js';
import type { CachedClient, CacheEvent, CacheOptions, CacheResult, CacheStats, InvalidateResult } from './types.js';

export * from './types.js';

/** JSON with object keys sorted, so `{ a, b }` and `{ b, a }` make the same key. */
function stableStringify(value: unknown): string {
  if (value === undefined) return 'undefined';
  return JSON.stringify(value, (_key, item: unknown) => {
    if (typeof item === 'bigint') return `${item}n`;
    if (typeof item !== 'object' || item === null || Array.isArray(item)) return item;
    const sorted: Record<string, unknown> = {};
    for (const name of Object.keys(item).sort()) sorted[name] = (item as Record<string, unknown>)[name];
    return sorted;
  });
}

function describeValue(value: unknown): string {
  if (typeof value === 'string') return value === '' ? 'an empty string' : JSON.stringify(value.slice(0, 60));
  if (value === null || typeof value !== 'object') return String(value);
  return Array.isArray(value) ? 'an array' : 'an object';
}

/**
 * Wraps a client with a two-tier read-through cache. Only the endpoints listed in
 * `options.endpoints` are cached; every other method is the client's own.
 *
 * @example
 * const cachedMovies = withCache(moviesClient, {
 *   local: { maxEntries: 10_000 },
 *   remote: redisCache({ url: 'redis://127.0.0.1:6379', timeoutMs: 50 }),
 *   endpoints: { getMovie: { ttlMs: 60_000, staleMs: 600_000, key: (p) => `movie:${p.id}` } },
 * });
 * await cachedMovies.getMovie({ id: 7 });
 * const { value, cacheStatus } = await cachedMovies.withMetadata.getMovie({ id: 7 });
 * await cachedMovies.invalidate('getMovie', { id: 7 });
 */
export function withCache<S extends ServiceDefinition>(client: Client<S>, options: CacheOptions<S>): CachedClient<S> {
  const resolved = resolveCacheOptions(client, options);
  const service = client.service;
  const { endpoints, bus, closeRemote } = resolved;
  const logger = options.logger?.child({ service: service.name, component: 'cache' });
  const context = new CacheContext(service.name, resolved.clock, logger);
  const policy = new EntryPolicy(resolved.jitter, resolved.random);
  const calls = new RemoteCalls(resolved.remoteTimeoutMs, context, resolved.remote?.name);
  const remote = resolved.remote === undefined ? undefined : new RemoteTier(resolved.remote, calls, context);
  const local =
    resolved.local === undefined
      ? undefined
      : new LocalTier(resolved.local.maxEntries, resolved.local.ttlMs, remote !== undefined, policy, context);
  const origin = randomUUID();
  const flights = new SingleFlight(context);
  const leases =
    resolved.lease === undefined || remote === undefined
      ? undefined
      : new Leases(resolved.lease, remote, context, origin);
  const chain = new TierChain(context, policy, flights, local, remote, leases);
  let closing: Promise<void> | undefined;

  let stopFallbackListener: (() => void) | undefined;
  if ([...endpoints.values()].some((endpoint) => endpoint.hasFallback) && typeof client.on === 'function') {
    stopFallbackListener = client.on('fallback', (event) => {
      const mark = chain.fallbackMarks.getStore();
      if (mark !== undefined && mark.endpoint === event.endpoint && !event.failed) {
        mark.fellBack = true;
        mark.code = event.code;
      }
    });
  }

  // The bus: drop what other processes invalidated.
  let unsubscribe: Promise<(() => Promise<void>) | undefined> | undefined;
  if (bus !== undefined && local !== undefined) {
    unsubscribe = bus
      .subscribe(
        (message) => {
          let parsed: { o?: unknown; k?: unknown };
          try {
            parsed = JSON.parse(message);
          } catch {
            return;
          }
          if (parsed?.o === origin || !Array.isArray(parsed?.k)) return;
          for (const key of parsed.k) if (typeof key === 'string') dropLocal(key);
        },
        () => local.clear(),
      )
      .catch((error: unknown) => {
        context.log('subscribe', 'warn', { err: (error as Error)?.message }, 'invalidation bus unavailable');
        return undefined;
      });
  }

  function dropLocal(key: string): void {
    local?.delete(key);
    flights.invalidate(key);
  }

  function keyOf(endpoint: EndpointState, args: unknown[]): string {
    let raw: unknown;
    try {
      raw =
        endpoint.key === undefined
          ? args.length === 0
            ? '-'
            : stableStringify(args.length === 1 ? args[0] : args)
          : endpoint.key(...args);
    } catch (error) {
      throw new TelescopeError(
        ErrorCode.INVALID_OPTION,
        `cache key function of ${service.name}.${endpoint.name} threw: ${(error as Error)?.message ?? String(error)}`,
        { service: service.name, endpoint: endpoint.name, requestSent: false, cause: error },
      );
    }
    if (typeof raw !== 'string' || raw === '') {
      throw new TelescopeError(
        ErrorCode.INVALID_OPTION,
        `cache key function of ${service.name}.${endpoint.name} must return a non-empty string, got ${describeValue(raw)}`,
        { service: service.name, endpoint: endpoint.name, requestSent: false },
      );
    }
    return endpoint.prefix + raw;
  }

  /** Counts a result, emits its event, and gives the caller its value (or error). */
  function settle(
    endpoint: EndpointState,
    key: string,
    outcome: Outcome,
    coalesced: boolean,
    withMetadata: boolean,
  ): unknown {
    const { entry, status } = outcome;
    const negative = entry.notFound !== undefined && outcome.reject === undefined;
    countOutcome(endpoint.counters, status, coalesced, negative, outcome.fallback === true);
    const ageMs = status === 'service' ? 0 : Math.max(0, context.epochNow() - entry.storedAt);
    if (context.cacheListeners.size > 0 || channels.clientEvent.hasSubscribers) {
      const event: CacheEvent = {
        service: service.name,
        endpoint: endpoint.name,
        key,
        cacheStatus: status,
        coalesced,
        negative,
        fallback: outcome.fallback === true,
        ageMs,
        error: outcome.error,
      };
      if (channels.clientEvent.hasSubscribers) {
        channels.clientEvent.publish({ service: service.name, event: 'cache', payload: event });
      }
      if (context.cacheListeners.size > 0) context.notify(context.cacheListeners, event);
    }
    if (outcome.reject !== undefined) throw outcome.reject;
    if (entry.notFound !== undefined) {
      throw new HttpStatusError(entry.notFound.status, entry.notFound.body, undefined, {
        service: service.name,
        endpoint: endpoint.name,
        requestSent: false,
      });
    }
    if (!withMetadata) return entry.value;
    const result: CacheResult<unknown> = { value: entry.value, cacheStatus: status, coalesced, key, ageMs };
    if (outcome.error !== undefined) result.error = outcome.error;
    return result;
  }

  function cachedMethod(endpoint: EndpointState, withMetadata: boolean) {
    const bypass = bypassMethod(endpoint.name, withMetadata);
    return (...args: unknown[]): Promise<unknown> => {
      // Wrong arity: the client reports it exactly as it would without the cache.
      if (args.length !== endpoint.keyArgCount && args.length !== endpoint.keyArgCount + 1) return bypass(...args);
      if (context.closed) {
        return Promise.reject(
          new TelescopeError(ErrorCode.CLIENT_CLOSED, 'client is closed', {
            service: service.name,
            endpoint: endpoint.name,
            requestSent: false,
          }),
        );
      }
      const keyArgs = args.length > endpoint.keyArgCount ? args.slice(0, endpoint.keyArgCount) : args;
      const callOptions = args[endpoint.keyArgCount] as CallOptions | undefined;
      try {
        const key = keyOf(endpoint, keyArgs);
        const now = context.epochNow();
        const entry = local === undefined ? undefined : local.get(key, endpoint, now);
        if (entry !== undefined) {
          // The fast path: policy.local()'s 'fresh', inlined.
          if (now < entry.localFreshUntil) {
            return Promise.resolve(
              settle(endpoint, key, { entry, status: 'local', waited: false }, false, withMetadata),
            );
          }
          if (policy.local(endpoint, entry, now) === 'stale-while-revalidate') {
            chain.refresh(endpoint, key, keyArgs, callOptions, entry);
            return Promise.resolve(
              settle(endpoint, key, { entry, status: 'stale-while-revalidate', waited: false }, false, withMetadata),
            );
          }
        }
        let flight = flights.joinable(key);
        const coalesced = flight !== undefined;
        if (flight === undefined) flight = chain.start(endpoint, key, keyArgs, callOptions, entry, false);
        const own = coalesced ? chain.callDeadline(endpoint, callOptions) : undefined;
        return flights.wait(flight, callOptions?.signal, own, endpoint.name).then(
          (outcome) => settle(endpoint, key, outcome, coalesced || outcome.waited, withMetadata),
          (error: unknown) => {
            endpoint.counters.errors++;
            throw error;
          },
        );
      } catch (error) {
        return Promise.reject(error);
      }
    };
  }

  function bypassMethod(name: string, withMetadata: boolean) {
    const method = (client as unknown as Record<string, (...args: unknown[]) => Promise<unknown>>)[name] as (
      ...args: unknown[]
    ) => Promise<unknown>;
    if (!withMetadata) return method;
    return (...args: unknown[]) =>
      method(...args).then(
        (value): CacheResult<unknown> => ({ value, cacheStatus: 'bypass', coalesced: false, key: undefined, ageMs: 0 }),
      );
  }

  // --- the cached client ------------------------------------------------------------------------

  const withMetadataMethods: Record<string, unknown> = {};
  const cached: Record<string, unknown> = {
    service,
    client,
    withMetadata: withMetadataMethods,
    retryTokens: () => client.retryTokens(),
    on(event: string, listener: (payload: never) => void): () => void {
      if (typeof listener !== 'function') invalidOption(`on('${String(event)}') listener`, 'a function', listener);
      if (event === 'cache' || event === 'cache-error') {
        const set = (event === 'cache' ? context.cacheListeners : context.errorListeners) as Set<unknown>;
        set.add(listener);
        return () => {
          set.delete(listener);
        };
      }
      return (client.on as (event: string, listener: (payload: never) => void) => () => void)(event, listener);
    },
    stats(): ClientStats & { cache: CacheStats } {
      return {
        ...client.stats(),
        cache: cacheStats(
          service.name,
          endpoints.values(),
          local === undefined ? undefined : { entries: local.size, maxEntries: local.maxEntries },
          remote === undefined
            ? undefined
            : { name: remote.name, stats: remote.stats, pendingWrites: remote.pendingWrites },
        ),
      };
    },
    async invalidate(name: string, ...args: unknown[]): Promise<InvalidateResult> {
      const endpoint = endpoints.get(name);
      if (endpoint === undefined) invalidOption('invalidate endpoint', `a cached endpoint of ${service.name}`, name);
      const key = keyOf(endpoint, args.slice(0, endpoint.keyArgCount));
      endpoint.counters.invalidations++;
      dropLocal(key);
      // A write of this key still on its way would bring the old value back.
      await remote?.pendingWrite(key);
      let remoteDeleted: boolean | undefined;
      if (remote !== undefined) remoteDeleted = await remote.delete(key);
      let published: boolean | undefined;
      if (bus !== undefined) {
        // After the delete: a process that drops its copy must not read the old value back.
        const message = JSON.stringify({ o: origin, k: [key] });
        published = await publish(key, message);
      }
      return { key, remoteDeleted, published };
    },
    close(): Promise<void> {
      closing ??= (async () => {
        context.closed = true;
        stopFallbackListener?.();
        const stop = await unsubscribe;
        await stop?.().catch(() => {});
        await client.close();
        await flights.settled();
        await Promise.allSettled([...context.background, remote?.pendingWritesSettled()]);
        if (closeRemote && remote !== undefined) await remote.cache.close();
        local?.clear();
      })();
      return closing;
    },
  };

  /** Publishes on the bus with the remote operations' timeout, counters and `cache-error` events. */
  async function publish(key: string, message: string): Promise<boolean> {
    const target = bus as NonNullable<typeof bus>;
    return (await calls.call('publish', key, undefined, () => target.publish(message))) !== FAILED;
  }

  for (const name of Object.keys(service.endpoints)) {
    const endpoint = endpoints.get(name);
    cached[name] = endpoint === undefined ? bypassMethod(name, false) : cachedMethod(endpoint, false);
    withMetadataMethods[name] = endpoint === undefined ? bypassMethod(name, true) : cachedMethod(endpoint, true);
  }
  Object.freeze(withMetadataMethods);
  return Object.freeze(cached) as unknown as CachedClient<S>;
}
