/**
 * `createClient`: turns a service definition into typed methods over the layer stack
 * (outermost first): fallback → observe → deadline → breaker → bulkhead → retry → balance →
 * attempt → transport. Extensions (the cache) wrap the client from outside.
 *
 * This module checks the options, makes the layers with state and the client object; the
 * stacks are assembled in stacks.ts (again on `configure()`), each typed method is in
 * method.ts, the public types in types.ts, the wait for discovery's first instance set in
 * first-instances.ts.
 */

import { attemptDefaults } from '../attempt/index.js';
import { resolveHealthCheck } from '../balance/health-check.js';
import { balance, InstanceSet, parseInstances, startHealthChecks } from '../balance/index.js';
import {
  type BreakerLayer,
  breaker,
  type CircuitCause,
  type CircuitControl,
  type CircuitState,
} from '../breaker/index.js';
import { adaptiveBulkheadDefaults, bulkhead } from '../bulkhead/index.js';
import type { Call, Layer } from '../core/call.js';
import { channels } from '../core/channels.js';
import { systemClock } from '../core/clock.js';
import { ErrorCode, invalidOption, TelescopeError } from '../core/errors.js';
import { LastLookup } from '../core/last-lookup.js';
import { fallback } from '../fallback/index.js';
import { type ClientStats, EndpointStats, observe } from '../observe/index.js';
import { redirects } from '../redirect/index.js';
import { RetryBudget, type RetryEvent, type RetryOptions } from '../retry/index.js';
import type { ServiceDefinition } from '../service/index.js';
import { type AttemptTransport, acceptEncoding, transport } from '../transport/index.js';
import { type ClientConfiguration, mergeConfiguration } from './configure.js';
import { FirstInstances } from './first-instances.js';
import { endpointMethod, lowerCaseHeaders, type MethodEnvironment, type ResponseDecoder } from './method.js';
import { assembleStacks, type StackParts, throttleOf } from './stacks.js';
import { type Client, type ClientEvents, type ClientOptions, clientDefaults } from './types.js';

export { type ClientConfiguration, configurableKeys } from './configure.js';
export { redactHeaders } from './method.js';
export {
  type CallOptions,
  type Client,
  type ClientEvents,
  type ClientOptions,
  clientDefaults,
  type InstanceCounts,
} from './types.js';

/**
 * Creates a typed client for a service.
 *
 * @example
 * const client = createClient(movies, { instances: ['http://127.0.0.1:8081'], timeoutMs: 1000 });
 * const movie = await client.getMovie({ id: 7 });
 */
export function createClient<S extends ServiceDefinition>(service: S, options: ClientOptions): Client<S> {
  if (typeof options !== 'object' || options === null) invalidOption('createClient options', 'an object', options);
  const clock = options.clock ?? systemClock;
  const timeoutMs = checkTimeoutMs(options.timeoutMs);
  if ((options.instances === undefined) === (options.discovery === undefined)) {
    invalidOption('instances', 'given, or discovery given instead (exactly one of them)', options.instances);
  }
  const listeners = new Map<keyof ClientEvents, Set<(payload: never) => void>>();
  const emit = <E extends keyof ClientEvents>(event: E, payload: ClientEvents[E]) => {
    if (channels.clientEvent.hasSubscribers) channels.clientEvent.publish({ service: service.name, event, payload });
    const set = listeners.get(event);
    if (set === undefined) return;
    for (const listener of set) (listener as (value: ClientEvents[E]) => void)(payload);
  };
  const healthCheck =
    options.healthCheck === undefined || options.healthCheck === false
      ? undefined
      : resolveHealthCheck(options.healthCheck);
  const instanceSet = new InstanceSet({
    clock,
    random: options.random,
    balancer: options.balancer,
    zone: options.zone,
    outlier: options.outlier,
    slowStartMs: options.slowStartMs,
    healthThresholds: healthCheck,
    onEvent: (event) => {
      const ejected = instanceSet.ejectedCount;
      const unhealthy = instanceSet.unhealthyCount;
      emit(event.type, { ...event, service: service.name, ejected, unhealthy } as never);
      if (channels.instanceState.hasSubscribers) {
        channels.instanceState.publish({ service: service.name, event, ejected, unhealthy });
      }
    },
  });
  if (options.transport !== undefined && typeof options.transport?.call !== 'function') {
    invalidOption('transport', 'an object with call() and close()', options.transport);
  }
  const wire: AttemptTransport =
    options.transport ??
    transport({
      connectTimeoutMs: options.connectTimeoutMs,
      maxResponseBytes: options.maxResponseBytes,
      connections: options.connections,
      keepAliveTimeoutMs: options.keepAliveTimeoutMs,
      tls: options.tls,
      http2: options.http2,
      decompress: options.decompress,
      clock,
    });
  if (options.redactHeaders !== undefined && !Array.isArray(options.redactHeaders)) {
    invalidOption('redactHeaders', 'an array of header names', options.redactHeaders);
  }
  const extraRedacted = new Set((options.redactHeaders ?? []).map((name) => String(name).toLowerCase()));
  // Before discovery: a source may deliver (and be logged) inside subscribe().
  const logger = options.logger?.child({ service: service.name });
  const firstInstances = new FirstInstances(clock, options.instances === undefined);
  let stopDiscovery: (() => void) | undefined;
  if (options.instances !== undefined) {
    instanceSet.update(parseInstances(options.instances));
  } else {
    const discovery = options.discovery;
    if (typeof discovery?.subscribe !== 'function') invalidOption('discovery', 'an object with subscribe()', discovery);
    stopDiscovery = discovery.subscribe((inputs) => {
      let parsed: ReturnType<typeof parseInstances>;
      try {
        parsed = parseInstances(inputs);
      } catch (error) {
        logger?.warn({ err: (error as Error).message }, 'discovery delivered invalid instances; keeping the last set');
        return;
      }
      const removed = instanceSet.update(parsed);
      for (const url of removed) void wire.drop?.(url);
      emit('instances', { service: service.name, instances: parsed.map((instance) => instance.url), removed });
      firstInstances.arrived();
    });
  }
  const onRetryEvent = (event: RetryEvent) => {
    const stats = endpointStats.get(event.endpoint);
    if (stats !== undefined && event.type === 'retry') stats.retries++;
    if (stats !== undefined && event.type === 'hedge') stats.hedges++;
    emit(event.type, event as never);
  };
  // Client-wide: shared by every endpoint's retry layer. An endpoint that retries on its own
  // (the client has retry: false) gets one with the defaults.
  const retryBudgetFor = (setting: RetryOptions | false | undefined): RetryBudget | undefined =>
    setting === false || setting?.budget === false ? undefined : new RetryBudget(clock, setting?.budget);
  let retryBudget = retryBudgetFor(options.retry);
  const metricsWindowMs = options.metricsWindowMs ?? 10_000;
  if (!(Number.isFinite(metricsWindowMs) && metricsWindowMs >= 100)) {
    invalidOption('metricsWindowMs', 'a finite number ≥ 100', metricsWindowMs);
  }
  const endpointStats = new Map<string, EndpointStats>();
  for (const name of Object.keys(service.endpoints)) {
    endpointStats.set(name, new EndpointStats(clock, service.name, name, metricsWindowMs));
  }
  const lastStats = new LastLookup((endpoint) => endpointStats.get(endpoint));
  const throttleOptions = throttleOf(options);
  const breakerEnvironment = {
    clock,
    service: service.name,
    random: options.random,
    throttle: throttleOptions,
    onState: (endpoint: string, state: CircuitState, cause: CircuitCause) => {
      const stats = endpointStats.get(endpoint);
      if (stats !== undefined) stats.breaker = state;
      emit('breaker', { service: service.name, endpoint, state, cause });
    },
  };
  // Made even when off: `configure()` can turn it on, and a circuit costs nothing until its first call.
  const breakerLayer = breaker(options.breaker ?? {}, breakerEnvironment);
  /** Breakers of endpoints with their own breaker options, by endpoint (shut down with the client's). */
  const endpointBreakers = new Map<string, BreakerLayer>();
  // Made even when off, for `configure()`: not in the stack then.
  const bulkheadLayer = bulkhead(options.bulkhead || adaptiveBulkheadDefaults, {
    clock,
    service: service.name,
    onShed: (context, reason) => {
      const stats = endpointStats.get(context.endpoint);
      if (stats !== undefined) stats.shed++;
      emit('shed', { service: service.name, endpoint: context.endpoint, reason });
    },
  });
  // Response schemas run inside the observed part of the stack, so a response that fails its
  // schema is an INVALID_RESPONSE failure for stats() and the diagnostics channels, as it is for
  // the caller. Fallback values (from above) are typed by the endpoint and not checked.
  const decoders = new Map<string, ResponseDecoder>();
  // Filled when the methods are made (below), before any call; fixed from then on.
  const lastDecoder = new LastLookup((endpoint) => decoders.get(endpoint));
  const decodeLayer: Layer = (next) => (request, context) => {
    const decodeResponse = lastDecoder.get(context.endpoint);
    return decodeResponse === undefined ? next(request, context) : next(request, context).then(decodeResponse);
  };
  const fallbacks = new Map<string, unknown>();
  for (const [name, definition] of Object.entries(service.endpoints)) {
    if (definition.hasFallback) fallbacks.set(name, definition.fallback);
  }
  const fallbackLayer =
    fallbacks.size > 0 &&
    fallback(fallbacks, {
      onFallback: (event) => {
        const stats = endpointStats.get(event.endpoint);
        if (stats !== undefined && !event.failed) stats.fallbacks++;
        emit('fallback', event);
      },
    });
  // Always present: the diagnostics channels do not depend on `metrics`.
  const observeLayer = observe(
    options.metrics === false ? () => undefined : (endpoint) => lastStats.get(endpoint),
    clock,
  );
  const balanceLayer = balance(instanceSet);
  const redirectLayer = options.redirects ? redirects(options.redirects) : undefined;

  /** An endpoint's breaker state in stats(): `disabled` without one, `closed` when one is turned on. */
  function markBreaker(name: string, trips: boolean): void {
    const stats = endpointStats.get(name);
    if (stats === undefined) return;
    if (!trips) stats.breaker = 'disabled';
    else if (stats.breaker === 'disabled') stats.breaker = breakerLayer.state(name) ?? 'closed';
  }
  const parts: StackParts = {
    service,
    clock,
    wire,
    created: options,
    fallback: fallbackLayer,
    observe: observeLayer,
    // Layers with nothing to do for this client are left out of its stacks: with many clients
    // in one process (the storm simulator's fleet) each layer a call passes is a few cache lines.
    decode: Object.values(service.endpoints).some((definition) => definition.response !== undefined)
      ? decodeLayer
      : undefined,
    firstInstances: options.instances === undefined ? firstInstances.layer : undefined,
    balance: balanceLayer,
    redirects: redirectLayer,
    breaker: breakerLayer,
    breakerEnvironment,
    endpointBreakers,
    bulkhead: bulkheadLayer,
    onRetryEvent,
    markBreaker,
  };
  /** Each endpoint's current stack: `configure()` swaps them; a call reads its endpoint's once. */
  const routes = new Map<string, { call: Call }>();
  {
    const pending: Array<() => void> = [];
    const assembled = assembleStacks(parts, options, retryBudget, pending);
    for (const apply of pending) apply();
    retryBudget = assembled.budget;
    for (const [name, call] of assembled.stacks) routes.set(name, { call });
  }
  /** The options `configure()` changes, as they are now (merged over the defaults). */
  let current: ClientConfiguration = {
    timeoutMs,
    attemptTimeoutMs: options.attemptTimeoutMs,
    reserveMs: options.reserveMs,
    minAttemptMs: options.minAttemptMs,
    retry: options.retry,
    hedge: options.hedge,
    breaker: options.breaker,
    throttle: options.throttle,
    bulkhead: options.bulkhead ?? adaptiveBulkheadDefaults,
    outlier: options.outlier,
  };
  // Without decompress, ask for the identity encoding (a missing Accept-Encoding means
  // "anything" to a server); with it, the codings the transport decodes. The caller's wins.
  const baseHeaders: Record<string, string> = {
    'accept-encoding': options.decompress === true && options.transport === undefined ? acceptEncoding : 'identity',
    ...lowerCaseHeaders(options.headers ?? {}, 'headers'),
  };
  // The attempt layer writes each attempt's number; with the header already in every call's
  // copy, that write replaces a value instead of adding a property (cheaper on V8).
  const attemptHeader = options.attemptHeader ?? attemptDefaults.attemptHeader;
  if (attemptHeader !== false) baseHeaders[attemptHeader] = '1';
  /** What every method reads: `configure()` changes the timeout, `close()` closes. */
  const methods: MethodEnvironment = {
    service,
    clock,
    logger,
    extraRedacted,
    baseHeaders,
    decoders,
    timeoutMs,
    closed: false,
  };
  // Timers start last, once every option has been checked: bad input leaves none behind.
  instanceSet.start();
  const stopHealthChecks =
    healthCheck === undefined
      ? undefined
      : startHealthChecks(instanceSet, wire.call, {
          ...healthCheck,
          service: service.name,
          clock,
          random: options.random ?? Math.random,
        });

  const client: Record<string, unknown> = {
    service,
    async close() {
      methods.closed = true;
      breakerLayer.shutdown();
      for (const endpointBreaker of endpointBreakers.values()) endpointBreaker.shutdown();
      instanceSet.close();
      stopHealthChecks?.();
      stopDiscovery?.();
      firstInstances.close();
      await wire.close();
    },
    on<E extends keyof ClientEvents>(event: E, listener: (payload: ClientEvents[E]) => void): () => void {
      if (typeof listener !== 'function') invalidOption(`on('${String(event)}') listener`, 'a function', listener);
      let set = listeners.get(event);
      if (set === undefined) {
        set = new Set();
        listeners.set(event, set);
      }
      set.add(listener as (payload: never) => void);
      return () => {
        set.delete(listener as (payload: never) => void);
      };
    },
    retryTokens: () => (retryBudget === undefined ? Number.POSITIVE_INFINITY : retryBudget.tokens()),
    configure(change: ClientConfiguration): void {
      if (methods.closed) {
        throw new TelescopeError(ErrorCode.CLIENT_CLOSED, 'client is closed: configure() changes nothing', {
          service: service.name,
          requestSent: false,
        });
      }
      const { next, changed } = mergeConfiguration(current, change);
      // Every check first (each throws INVALID_OPTION); nothing is put in force until all passed.
      const nextTimeoutMs = checkTimeoutMs(next.timeoutMs);
      const pending: Array<() => void> = [];
      if (changed.includes('breaker') || changed.includes('throttle')) {
        pending.push(breakerLayer.prepare(next.breaker ?? {}, throttleOf(next)));
      }
      if (changed.includes('bulkhead') && next.bulkhead !== false) {
        pending.push(bulkheadLayer.prepare(next.bulkhead ?? adaptiveBulkheadDefaults));
      }
      if (changed.includes('outlier')) pending.push(instanceSet.prepareOutlier(next.outlier ?? {}));
      const budget = changed.includes('retry') ? retryBudgetFor(next.retry) : retryBudget;
      const assembled = assembleStacks(parts, next, budget, pending);
      for (const apply of pending) apply();
      retryBudget = assembled.budget;
      methods.timeoutMs = nextTimeoutMs;
      current = next;
      for (const [name, call] of assembled.stacks) (routes.get(name) as { call: Call }).call = call;
      logger?.info({ changed }, 'client configured');
      emit('configure', { service: service.name, changed, options: change });
    },
    circuit(endpoint: string): CircuitControl {
      if (!Object.hasOwn(service.endpoints, endpoint)) {
        invalidOption('circuit() endpoint', `one of ${Object.keys(service.endpoints).join(', ')}`, endpoint);
      }
      // An endpoint with breaker options of its own has its own circuit.
      const own = endpointBreakers.get(endpoint);
      if (own !== undefined) return own.control(endpoint);
      if (current.breaker === false || endpointStats.get(endpoint)?.breaker === 'disabled') {
        invalidOption(`circuit('${endpoint}')`, 'called on an endpoint with a breaker (not breaker: false)', endpoint);
      }
      return breakerLayer.control(endpoint);
    },
    stats: (): ClientStats => ({
      service: service.name,
      retryTokens: retryBudget === undefined ? Number.POSITIVE_INFINITY : retryBudget.tokens(),
      bulkhead: current.bulkhead === false ? null : bulkheadLayer.snapshot(),
      instances: instanceSet.instances.map((state) => {
        const ejected = state.ejectedUntil > clock.now();
        const latencyMs = instanceSet.latencyOf(state);
        return {
          url: state.instance.url,
          outstanding: state.outstanding,
          ejected,
          healthy: state.healthy,
          consecutiveFailures: state.consecutiveFailures,
          ...(ejected && state.ejectionReason !== undefined ? { ejectionReason: state.ejectionReason } : {}),
          ...(latencyMs === undefined ? {} : { latencyMs }),
        };
      }),
      endpoints: Object.fromEntries([...endpointStats].map(([name, stats]) => [name, stats.snapshot()])),
    }),
  };
  for (const [name, definition] of Object.entries(service.endpoints)) {
    client[name] = endpointMethod(name, definition, routes.get(name) as { call: Call }, methods);
  }
  return Object.freeze(client) as Client<S>;
}

function checkTimeoutMs(value: number | undefined): number {
  const timeoutMs = value ?? clientDefaults.timeoutMs;
  if (!(typeof timeoutMs === 'number' && Number.isFinite(timeoutMs) && timeoutMs > 0)) {
    invalidOption('timeoutMs', 'a positive finite number', timeoutMs);
  }
  return timeoutMs;
}
