/**
 * `createClient`: turns a service definition into typed methods over the layer stack
 * (outermost first): fallback → observe → deadline → breaker → bulkhead → retry → balance →
 * attempt → transport. Extensions (the cache) wrap the client from outside.
 */

import { attempt, attemptDefaults } from '../attempt/index.js';
import { resolveHealthCheck } from '../balance/health-check.js';
import {
  type BalancerName,
  balance,
  type HealthCheckOptions,
  type InstanceEvent,
  type InstanceInput,
  InstanceSet,
  type OutlierOptions,
  parseInstances,
  startHealthChecks,
} from '../balance/index.js';
import {
  type BreakerLayer,
  type BreakerOptions,
  breaker,
  type CircuitCause,
  type CircuitControl,
  type CircuitState,
} from '../breaker/index.js';
import {
  type AdaptiveBulkheadOptions,
  adaptiveBulkheadDefaults,
  type BulkheadOptions,
  bulkhead,
} from '../bulkhead/index.js';
import {
  type Call,
  CallContext,
  compose,
  type IncomingResponse,
  isOneShotBody,
  type Layer,
  type Logger,
  type OutgoingRequest,
  type RouteHints,
} from '../core/call.js';
import { channels } from '../core/channels.js';
import { type Clock, systemClock } from '../core/clock.js';
import { Deadline } from '../core/deadline.js';
import { ErrorCode, invalidOption, isTelescopeError, TelescopeError, ValidationError } from '../core/errors.js';
import type { StandardSchemaV1 } from '../core/standard-schema.js';
import { currentDeadline, deadline } from '../deadline/index.js';
import { ambientDeadline } from '../deadline/storage.js';
import type { Discovery } from '../discovery/index.js';
import { type FallbackEvent, fallback } from '../fallback/index.js';
import { type ClientStats, EndpointStats, observe } from '../observe/index.js';
import { type RedirectOptions, redirects } from '../redirect/index.js';
import { type HedgeOptions, RetryBudget, type RetryEvent, type RetryOptions, retry } from '../retry/index.js';
import {
  buildPath,
  type Endpoint,
  type EndpointMethod,
  type ServiceDefinition,
  type StreamResponse,
  serializeBody,
  validate,
} from '../service/index.js';
import type { ThrottleOptions } from '../throttle/index.js';
import { rawRequestBody } from '../transport/body.js';
import {
  type AttemptTransport,
  acceptEncoding,
  type TlsOptions,
  transport,
  transportDefaults,
} from '../transport/index.js';
import { type ClientConfiguration, mergeConfiguration } from './configure.js';
import { classifyLayerFor, forEndpoint, resolvePolicy } from './policy.js';

export { type ClientConfiguration, configurableKeys } from './configure.js';

/** Options of one call: always the last argument of a typed method. */
export interface CallOptions {
  /** This call's budget in milliseconds; overrides the endpoint's and the client's. */
  timeoutMs?: number;
  /** An explicit deadline; wins over the ambient one (`withDeadline`, server middleware). */
  deadline?: Deadline;
  /** Aborts the call (`ABORTED`); the request is cancelled and its socket freed. */
  signal?: AbortSignal;
  /** Extra request headers for this call. */
  headers?: Record<string, string>;
  /** Routing hints for this call. */
  route?: RouteHints;
}

/** Options of `createClient`. Every option has a default except `instances`. */
export interface ClientOptions {
  /** The service's instances: URLs, or URLs with zone, version and weight. Or use `discovery`. */
  instances?: readonly InstanceInput[];
  /** Where instances come from when they change: `dnsDiscovery(...)` or your own source. */
  discovery?: Discovery;
  /**
   * How an instance is picked for each attempt: `'p2c'` (power of two choices, fewer attempts
   * in flight wins), `'p2c-ewma'` (Finagle's p2cPeakEwma: in flight × peak-EWMA latency, so
   * slow and failing instances get less) or `'round-robin'`. See docs/instances.md.
   * @default 'p2c'
   */
  balancer?: BalancerName;
  /** Retries on another instance, inside a client-wide retry budget; `false` for none. @default { maxRetries: 1, budget: { ratio: 0.1, minPerSecond: 10 } } */
  retry?: RetryOptions | false;
  /** Hedging: a second attempt on another instance after `delayMs`. @default false */
  hedge?: HedgeOptions | false;
  /** Outlier ejection (Envoy's): consecutive failures, and optionally failure percentage and success rate per interval; `false` to never eject. @default { consecutiveFailures: 5, minRequests: 50, intervalMs: 10000, baseEjectionMs: 10000, maxEjectionMs: 300000, maxEjectionPercent: 50 } */
  outlier?: OutlierOptions | false;
  /**
   * Envoy's slow start window: an instance that discovery adds, or that comes back from an
   * ejection or from failing health checks, ramps its share linearly (from 10%) over this
   * many ms. `0`: off. @default 0
   */
  slowStartMs?: number;
  /** Active health checks: a GET of `path` on every instance through the client's transport. @default false */
  healthCheck?: HealthCheckOptions | false;
  /**
   * This client's zone: traffic stays on same-zone instances in proportion to the zone's
   * healthy capacity and spills to other zones for the rest. @default undefined
   */
  zone?: string;
  /** Random source of the balancer (seed it in tests and simulations). @default Math.random */
  random?: () => number;
  /** Budget of a whole call (all attempts), unless the endpoint or call says otherwise. @default 1000 */
  timeoutMs?: number;
  /** Upper bound of one attempt; unset means the whole remaining budget. @default undefined */
  attemptTimeoutMs?: number;
  /** Budget kept back at this hop to answer its own caller after a downstream timeout. @default 10 */
  reserveMs?: number;
  /** Below this many ms of budget no attempt is started (`DEADLINE_EXCEEDED`). @default 20 */
  minAttemptMs?: number;
  /** Header carrying the callee's budget, `false` to not send it. @default 'x-request-timeout-ms' */
  deadlineHeader?: string | false;
  /** Header carrying each attempt's 1-based number (servers see retries and hedges), `false` to not send it. @default 'x-request-attempt' */
  attemptHeader?: string | false;
  /** TCP connect timeout, per hop. @default 1000 */
  connectTimeoutMs?: number;
  /** Larger response bodies are aborted, not buffered. @default 10485760 */
  maxResponseBytes?: number;
  /** Sockets per instance; `null` for no limit. @default null */
  connections?: number | null;
  /** Idle keep-alive socket lifetime. @default 4000 */
  keepAliveTimeoutMs?: number;
  /**
   * TLS for `https://` instances: `ca` (PEM) to trust, `cert` and `key` to present (mTLS),
   * `servername`, `minVersion`. Certificates are always verified unless `insecureSkipVerify`.
   * @default Node's root CAs, no client certificate, TLS 1.2 or later
   */
  tls?: TlsOptions;
  /**
   * HTTP/2: h2 over TLS by ALPN (an instance offering only HTTP/1.1 gets that), h2c with prior
   * knowledge for `http://` instances; one connection per instance, attempts as streams.
   * @default false
   */
  http2?: boolean;
  /**
   * Accept gzip, deflate, br (and zstd where Node has it) and decode them; `maxResponseBytes`
   * bounds the decoded size. Off, the client asks for `identity` and a compressed body is an
   * `INVALID_RESPONSE`. @default false
   */
  decompress?: boolean;
  /** Headers sent with every call. @default {} */
  headers?: Record<string, string>;
  /** A pino logger (or the same shape); the client logs through a child `{ service }`. @default silent */
  logger?: Logger;
  /**
   * Circuit breaker per endpoint (opossum's opening semantics, resilience4j's slow calls and
   * half-open probes, on the client's clock); `false` for none. See docs/breakers-and-throttling.md.
   * @default { volumeThreshold: 20, errorThresholdPercentage: 50, minResetTimeoutMs: 250, resetTimeoutMs: 1000, halfOpenProbes: 3, rampMs: 1000, rollingWindowMs: 10000 }
   */
  breaker?: BreakerOptions | false;
  /**
   * Client-side adaptive throttling per endpoint (Google SRE book): calls are rejected locally
   * with `THROTTLED` with probability max(0, (requests − k·accepts) / (requests + 1)) over the
   * window, so a dependency that accepts too little gets a trickle, not the full load. `false`
   * for none. See docs/breakers-and-throttling.md.
   * @default { k: 2, windowMs: 120000, minRequests: 20 } (false when `breaker` is false)
   */
  throttle?: ThrottleOptions | false;
  /**
   * Bound on calls in flight to the service: adaptive (`{ adaptive: 'gradient2' | 'vegas' |
   * 'aimd', minConcurrent, maxConcurrent, maxQueue }`, learned from latency and drops), static
   * (`{ maxConcurrent, maxQueue }`), or `false` for none. See docs/overload.md.
   * @default { adaptive: 'gradient2', minConcurrent: 20, maxConcurrent: 1000, maxQueue: 1000 }
   */
  bulkhead?: AdaptiveBulkheadOptions | BulkheadOptions | false;
  /** Keep per-endpoint counters and latency for `stats()`. @default true */
  metrics?: boolean;
  /** Rolling window of `stats()` rates and latency percentiles. @default 10000 */
  metricsWindowMs?: number;
  /** Time source for every timeout. @default systemClock */
  clock?: Clock;
  /**
   * Replaces the undici transport: whatever performs one attempt against `context.instance`
   * (the storm simulator's virtual network, an in-process double). The connection options
   * (`connectTimeoutMs`, `maxResponseBytes`, `connections`, `keepAliveTimeoutMs`, `tls`,
   * `http2`, `decompress`) then do not apply. @default the undici transport
   */
  transport?: AttemptTransport;
  /**
   * Follow 3xx redirects: at most `max` per attempt, on the instance's origin unless the
   * target is in `allowOrigins`, never from https to http. Off: a 3xx fails with `HTTP_STATUS`
   * and its `location`. @default false
   */
  redirects?: RedirectOptions | false;
  /**
   * More header names whose values never reach logs (besides authorization,
   * proxy-authorization, cookie, set-cookie, x-api-key). Case-insensitive. @default []
   */
  redactHeaders?: readonly string[];
}

/** Defaults of {@link ClientOptions}. */
export const clientDefaults = {
  timeoutMs: 1000,
  reserveMs: attemptDefaults.reserveMs,
  minAttemptMs: attemptDefaults.minAttemptMs,
  deadlineHeader: attemptDefaults.deadlineHeader,
  connectTimeoutMs: transportDefaults.connectTimeoutMs,
  maxResponseBytes: transportDefaults.maxResponseBytes,
  connections: transportDefaults.connections,
  keepAliveTimeoutMs: transportDefaults.keepAliveTimeoutMs,
} as const;

/** A typed client: one method per endpoint, plus `close()`. */
export type Client<S extends ServiceDefinition> = {
  readonly [K in keyof S['endpoints']]: EndpointMethod<S['endpoints'][K], CallOptions>;
} & {
  /** The definition this client was made from. */
  readonly service: S;
  /** Fails calls in flight with `CLIENT_CLOSED`, closes every socket; later calls fail at once. */
  close(): Promise<void>;
  /** Listens to the client's decisions; returns a function that stops listening. */
  on<E extends keyof ClientEvents>(event: E, listener: (payload: ClientEvents[E]) => void): () => void;
  /** Retry-budget tokens left (Infinity without a budget). */
  retryTokens(): number;
  /** A snapshot of counters, latency, breaker states and instances, per endpoint. */
  stats(): ClientStats;
  /**
   * The circuit of one endpoint, for operators: `state()`, `forceOpen()`, `forceClosed()`,
   * `reset()`; each change is a `breaker` event. Throws `INVALID_OPTION` for an unknown
   * endpoint or a client made with `breaker: false`.
   */
  circuit(endpoint: keyof S['endpoints'] & string): CircuitControl;
  /**
   * Changes timeouts, retry, hedging, breaker, throttle, bulkhead (static or adaptive) and
   * outlier settings of this live client, from the next call on; calls in flight finish under
   * the settings they started with. Checked like `createClient`: a bad value throws
   * `INVALID_OPTION` and changes nothing. Emits a `configure` event.
   *
   * @example
   * client.configure({ timeoutMs: 300, retry: { maxRetries: 0 }, bulkhead: { maxConcurrent: 500 } });
   */
  configure(change: ClientConfiguration): void;
};

/** Added to every instance event: the service, and the counts after the change. */
export interface InstanceCounts {
  service: string;
  /** Instances ejected by outlier detection now. */
  ejected: number;
  /** Instances out of rotation on active health checks now. */
  unhealthy: number;
}

/** Events of a client, by name. */
export interface ClientEvents {
  /** A failed attempt is being retried on another instance. */
  retry: Extract<RetryEvent, { type: 'retry' }>;
  /** A slow attempt got a hedge on another instance. */
  hedge: Extract<RetryEvent, { type: 'hedge' }>;
  /** A retry was not made: the retry budget is spent. */
  'budget-exhausted': Extract<RetryEvent, { type: 'budget-exhausted' }>;
  /** An instance was ejected (consecutive failures, failure percentage or success rate). */
  eject: Extract<InstanceEvent, { type: 'eject' }> & InstanceCounts;
  /** An ejected instance is back in rotation (at the end of its ejection, or early on health checks). */
  return: Extract<InstanceEvent, { type: 'return' }> & InstanceCounts;
  /** Active health checks took an instance out of rotation (`healthy: false`) or brought it back. */
  health: Extract<InstanceEvent, { type: 'health' }> & InstanceCounts;
  /** Discovery delivered a new instance set. */
  instances: { service: string; instances: string[]; removed: string[] };
  /** `configure()` put new settings in force (`changed`: the keys it was given). */
  configure: { service: string; changed: Array<keyof ClientConfiguration>; options: ClientConfiguration };
  /** An endpoint's circuit changed state, and why (thresholds, probes, or an operator). */
  breaker: { service: string; endpoint: string; state: CircuitState; cause: CircuitCause };
  /** A fallback answered a failed call (or itself failed: `failed: true`). */
  fallback: FallbackEvent;
  /** The bulkhead shed a call: full, or no slot within the call's deadline. */
  shed: { service: string; endpoint: string; reason: 'full' | 'queue-timeout' };
}

const credentialHeaders: ReadonlySet<string> = new Set([
  'authorization',
  'proxy-authorization',
  'cookie',
  'set-cookie',
  'x-api-key',
]);

/**
 * A copy of `headers` with credentials (and the `extra` names, lower-case) replaced by
 * `[redacted]`, for logs.
 */
export function redactHeaders(headers: Record<string, string>, extra?: ReadonlySet<string>): Record<string, string> {
  const copy: Record<string, string> = {};
  for (const [name, value] of Object.entries(headers)) {
    const lower = name.toLowerCase();
    copy[name] = credentialHeaders.has(lower) || extra?.has(lower) === true ? '[redacted]' : value;
  }
  return copy;
}

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
  let timeoutMs = checkTimeoutMs(options.timeoutMs);
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
  let firstInstances: Promise<void> | undefined;
  /** Calls waiting for discovery's first set (each ends with its budget, its signal or close()). */
  const waitingForInstances = new Set<() => void>();
  let stopDiscovery: (() => void) | undefined;
  if (options.instances !== undefined) {
    instanceSet.update(parseInstances(options.instances));
  } else {
    const discovery = options.discovery;
    if (typeof discovery?.subscribe !== 'function') invalidOption('discovery', 'an object with subscribe()', discovery);
    let markReady!: () => void;
    firstInstances = new Promise((resolve) => {
      markReady = resolve;
    });
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
      firstInstances = undefined;
      markReady();
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
  const statsFor = (endpoint: string) => endpointStats.get(endpoint);
  // Without a breaker (`breaker: false`: every call goes out), the throttle is off unless asked for.
  const throttleOptions = options.throttle ?? (options.breaker === false ? false : {});
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
  const decoders = new Map<string, (response: IncomingResponse) => IncomingResponse | Promise<IncomingResponse>>();
  const decodeLayer: Layer = (next) => (request, context) => {
    const decodeResponse = decoders.get(context.endpoint);
    return decodeResponse === undefined ? next(request, context) : next(request, context).then(decodeResponse);
  };
  // Calls made before discovery's first set wait for it inside fallback, observe and deadline
  // (a wait that outlives the budget is a NO_HEALTHY_INSTANCE failure like any other), and
  // above the breaker (waiting for discovery says nothing about the dependency's health).
  const discoveryLayer: Layer = (next) => (request, context) =>
    firstInstances === undefined
      ? next(request, context)
      : afterFirstInstances(firstInstances, context).then(() => next(request, context));
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
  const observeLayer = observe(options.metrics === false ? () => undefined : statsFor, clock);
  const balanceLayer = balance(instanceSet);
  const redirectLayer = options.redirects ? redirects(options.redirects) : undefined;

  /**
   * Builds the call stacks from the options `configure()` can change: the client's, and one
   * per endpoint with a policy of its own. Layers with state (breakers, the bulkhead, the
   * instances, the retry budget) are made once and only reconfigured; the rest are built anew.
   * Throws INVALID_OPTION on a bad value; `pending` collects what to put in force after every
   * check has passed (new endpoint breakers).
   */
  function assemble(o: ClientOptions, budget: RetryBudget | undefined, pending: Array<() => void>) {
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
            random: options.random,
            onEvent: onRetryEvent,
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
        fallbackLayer,
        observeLayer,
        decodeLayer,
        deadlineLayer,
        discoveryLayer,
        policy.breaker,
        o.bulkhead === false ? undefined : bulkheadLayer.layer,
        policy.retry,
        balanceLayer,
        policy.classify,
        attempt({
          attemptTimeoutMs: policy.attemptTimeoutMs,
          reserveMs: o.reserveMs,
          minAttemptMs: o.minAttemptMs,
          deadlineHeader: options.deadlineHeader,
          attemptHeader: options.attemptHeader,
        }),
        redirectLayer,
      )(wire.call);
    const clientThrottle = o.throttle ?? (o.breaker === false ? false : {});
    const clientBreaker = o.breaker === false && clientThrottle === false ? undefined : breakerLayer.layer;
    const stack = buildStack({
      breaker: clientBreaker,
      retry: retryLayerFor(o.retry === false ? false : retryOptions, o.hedge, budget),
      classify: classifyLayerFor(o.retry),
      attemptTimeoutMs: o.attemptTimeoutMs,
    });
    // Endpoints with their own policy get their own stack; the others share the client's.
    const stacks = new Map<string, Call>();
    for (const [name, definition] of Object.entries(service.endpoints)) {
      const policy = definition.policy;
      if (policy === undefined) {
        stacks.set(name, stack);
        pending.push(() => markBreaker(name, o.breaker !== false));
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
            const existing = endpointBreakers.get(name);
            if (existing === undefined) {
              const made = breaker(breakerOptions, { ...breakerEnvironment, throttle: clientThrottle });
              pending.push(() => endpointBreakers.set(name, made));
              ownBreaker = made.layer;
            } else {
              pending.push(existing.prepare(breakerOptions, clientThrottle));
              ownBreaker = existing.layer;
            }
          }
          const trips = resolved.breaker !== false && (resolved.breaker !== undefined || o.breaker !== false);
          pending.push(() => markBreaker(name, trips));
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
  /** An endpoint's breaker state in stats(): `disabled` without one, `closed` when one is turned on. */
  function markBreaker(name: string, trips: boolean): void {
    const stats = endpointStats.get(name);
    if (stats === undefined) return;
    if (!trips) stats.breaker = 'disabled';
    else if (stats.breaker === 'disabled') stats.breaker = breakerLayer.state(name) ?? 'closed';
  }
  /** Each endpoint's current stack: `configure()` swaps them; a call reads its endpoint's once. */
  const routes = new Map<string, { call: Call }>();
  {
    const pending: Array<() => void> = [];
    const assembled = assemble(options, retryBudget, pending);
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
  let closed = false;
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
      closed = true;
      breakerLayer.shutdown();
      for (const endpointBreaker of endpointBreakers.values()) endpointBreaker.shutdown();
      instanceSet.close();
      stopHealthChecks?.();
      stopDiscovery?.();
      for (const onClose of waitingForInstances) onClose();
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
      if (closed) {
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
        pending.push(breakerLayer.prepare(next.breaker ?? {}, next.throttle ?? (next.breaker === false ? false : {})));
      }
      if (changed.includes('bulkhead') && next.bulkhead !== false) {
        pending.push(bulkheadLayer.prepare(next.bulkhead ?? adaptiveBulkheadDefaults));
      }
      if (changed.includes('outlier')) pending.push(instanceSet.prepareOutlier(next.outlier ?? {}));
      const budget = changed.includes('retry') ? retryBudgetFor(next.retry) : retryBudget;
      const assembled = assemble(next, budget, pending);
      for (const apply of pending) apply();
      retryBudget = assembled.budget;
      timeoutMs = nextTimeoutMs;
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
    client[name] = typedMethod(name, definition);
  }
  return Object.freeze(client) as Client<S>;

  function typedMethod(name: string, definition: Endpoint) {
    const route = routes.get(name) as { call: Call };
    const hasParams = definition.params !== undefined || definition.query !== undefined;
    const hasBody = definition.body !== undefined;
    const rawBody = definition.body === 'raw';
    const streamed = definition.responseType === 'stream';
    // A raw body's content type depends on the value (set per call, unless the caller sets one).
    const endpointHeaders: Record<string, string> =
      hasBody && !rawBody ? { ...baseHeaders, 'content-type': 'application/json' } : baseHeaders;
    const failRequest =
      (part: ValidationError['part']) => (issues: readonly StandardSchemaV1.Issue[], cause?: unknown) => {
        throw new ValidationError(ErrorCode.INVALID_REQUEST, part, issues, {
          service: service.name,
          endpoint: name,
          requestSent: false,
          cause,
        });
      };
    const failParams = failRequest('params');
    const failQuery = failRequest('query');
    const failBody = failRequest('body');
    const failResponse = (issues: readonly StandardSchemaV1.Issue[], cause?: unknown): never => {
      throw new ValidationError(ErrorCode.INVALID_RESPONSE, 'response', issues, {
        service: service.name,
        endpoint: name,
        cause,
      });
    };
    const schema = definition.response;
    if (schema !== undefined) {
      decoders.set(name, (response) => {
        const body = validate<unknown>(schema, response.body, failResponse);
        return body instanceof Promise ? body.then((value) => ({ ...response, body: value })) : { ...response, body };
      });
    }
    const decode = streamed
      ? (response: IncomingResponse): StreamResponse => ({
          status: response.status,
          headers: response.headers,
          body: response.body as ReadableStream<Uint8Array>,
        })
      : (response: IncomingResponse) => response.body;
    const logFailure = (activeLogger: Logger, error: unknown, headers: Record<string, string>): never => {
      activeLogger.debug(
        isTelescopeError(error)
          ? {
              endpoint: name,
              code: error.code,
              instance: error.instance,
              attempt: error.attempt,
              err: error.message,
              headers: redactHeaders(headers, extraRedacted),
            }
          : { endpoint: name, err: String(error), headers: redactHeaders(headers, extraRedacted) },
        'call failed',
      );
      throw error;
    };

    return (...args: unknown[]): Promise<unknown> => {
      try {
        let index = 0;
        const params = hasParams ? args[index++] : undefined;
        const body = hasBody ? args[index++] : undefined;
        const callOptions = args[index] as CallOptions | undefined;
        if (args.length > index + 1) {
          throw new TelescopeError(
            ErrorCode.INVALID_REQUEST,
            `${service.name}.${name} takes ${describeArgs(hasParams, hasBody)}, got ${args.length} arguments`,
            { service: service.name, endpoint: name, requestSent: false },
          );
        }
        if (closed) {
          throw new TelescopeError(ErrorCode.CLIENT_CLOSED, 'client is closed', {
            service: service.name,
            endpoint: name,
            requestSent: false,
          });
        }
        const checkedParams = validate(definition.params, params, failParams);
        const checkedQuery = definition.query === undefined ? undefined : validate(definition.query, params, failQuery);
        const checkedBody = rawBody
          ? body
          : hasBody
            ? validate(definition.body as StandardSchemaV1, body, failBody)
            : undefined;
        if (checkedParams instanceof Promise || checkedQuery instanceof Promise || checkedBody instanceof Promise) {
          return Promise.all([checkedParams, checkedQuery, checkedBody]).then(([p, q, b]) =>
            send(p, q, b, callOptions),
          );
        }
        return send(checkedParams, checkedQuery, checkedBody, callOptions);
      } catch (error) {
        return Promise.reject(error);
      }
    };

    function send(
      params: unknown,
      query: unknown,
      body: unknown,
      callOptions: CallOptions | undefined,
    ): Promise<unknown> {
      const path = buildPath(name, service.name, definition.pathParts, params, query);
      let headers = endpointHeaders;
      let idempotent = definition.idempotent;
      let callTimeoutMs = definition.timeoutMs ?? timeoutMs;
      if (callOptions !== undefined) {
        if (typeof callOptions !== 'object' || callOptions === null) {
          invalidOption(`${service.name}.${name} call options`, 'an object', callOptions);
        }
        if (callOptions.headers !== undefined) {
          headers = { ...endpointHeaders, ...lowerCaseHeaders(callOptions.headers, 'call headers') };
          if (headers['idempotency-key'] !== undefined) idempotent = true;
        }
        if (callOptions.timeoutMs !== undefined) {
          callTimeoutMs = callOptions.timeoutMs;
          if (!(Number.isFinite(callTimeoutMs) && callTimeoutMs > 0)) {
            invalidOption('call timeoutMs', 'a positive finite number', callTimeoutMs);
          }
        }
      }
      // The ambient deadline (server middleware, withDeadline) is looked up once per call; its
      // cancellation (the inbound request was abandoned) cancels the call like the caller's signal.
      const ambient = ambientDeadline();
      const inherited = callOptions?.deadline ?? ambient;
      let cancellation = inherited?.cancellation ?? ambient?.cancellation;
      let callerSignal = callOptions?.signal;
      let unlink: (() => void) | undefined;
      if (cancellation !== undefined && (callerSignal !== undefined || cancellation.watch === undefined)) {
        // The caller's own signal too, or a cancellation without the cheap form: one signal.
        const inbound = cancellation.signal;
        cancellation = undefined;
        if (callerSignal === undefined || callerSignal === inbound) callerSignal = inbound;
        else [callerSignal, unlink] = linkSignals(callerSignal, inbound);
      }
      if (callerSignal?.aborted || cancellation?.isCancelled === true) {
        callerSignal ??= cancellation?.signal as AbortSignal;
        unlink?.();
        const own = callOptions?.signal?.aborted === true;
        throw new TelescopeError(
          ErrorCode.ABORTED,
          own
            ? 'call aborted by the caller before it started'
            : 'call not started: its caller went away (the inbound request was abandoned)',
          {
            service: service.name,
            endpoint: name,
            requestSent: false,
            cause: own ? callOptions?.signal?.reason : callerSignal.reason,
          },
        );
      }
      const context = new CallContext({
        service: service.name,
        endpoint: name,
        idempotent,
        clock,
        timeoutMs: callTimeoutMs,
        callerSignal,
        cancellation,
        deadline: inherited,
        route: callOptions?.route,
        logger,
      });
      context.params = params ?? query;
      if (streamed) context.responseType = 'stream';
      const request = {
        method: definition.method,
        path,
        // Layers write per-attempt headers (the deadline), so each call gets its own object.
        // Object.assign, not a spread: on Node 20 adding a property to a spread copy of a
        // non-empty object costs ~0.7 µs (measured), Object.assign's copy ~0.05 µs.
        headers: Object.assign({}, headers),
        body: body === undefined || rawBody ? undefined : (serializeBody(body) as OutgoingRequest['body']),
      };
      if (rawBody && body !== undefined) {
        const wire = rawRequestBody(body, service.name, name);
        request.body = wire.body;
        request.headers['content-type'] ??= wire.contentType;
        // A stream is read once: never hedged, and retried only when it was certainly not sent.
        if (isOneShotBody(wire.body)) context.idempotent = false;
      }
      let pending = route.call(request, context).then(decode);
      if (unlink !== undefined) pending = settleThen(pending, unlink);
      return logger === undefined ? pending : pending.catch((error) => logFailure(logger, error, request.headers));
    }
  }

  /**
   * Waits for discovery's first instance set inside the call's budget: the budget is fixed now,
   * so the wait counts against it, and the wait ends with the budget, the caller's signal or
   * close().
   */
  function afterFirstInstances(ready: Promise<void>, context: CallContext): Promise<void> {
    const budget = Deadline.min(Deadline.after(context.timeoutMs, clock), context.deadline ?? currentDeadline());
    context.deadline = budget;
    return new Promise<void>((resolve, reject) => {
      const done = () => {
        clock.clearTimeout(timer);
        waitingForInstances.delete(onClose);
        context.callerSignal?.removeEventListener('abort', onAbort);
      };
      const fail = (code: ErrorCode, message: string, cause?: unknown) => {
        done();
        reject(
          new TelescopeError(code, message, {
            service: context.service,
            endpoint: context.endpoint,
            requestSent: false,
            cause,
          }),
        );
      };
      const onClose = () => fail(ErrorCode.CLIENT_CLOSED, 'client closed while the call waited for instances');
      const onAbort = () =>
        fail(
          ErrorCode.ABORTED,
          'call aborted by the caller while it waited for instances',
          context.callerSignal?.reason,
        );
      const timer = clock.setTimeout(
        () =>
          fail(ErrorCode.NO_HEALTHY_INSTANCE, `${context.service}: no instances discovered within the call's budget`),
        budget.remainingMs(),
      );
      waitingForInstances.add(onClose);
      context.callerSignal?.addEventListener('abort', onAbort, { once: true });
      void ready.then(() => {
        done();
        resolve();
      });
    });
  }
}

/**
 * One signal that aborts when either does (not AbortSignal.any: on Node 20 it keeps every
 * combined signal attached to its sources). Returns the signal and the function that detaches
 * it, called when the call settles. Only for a call with its own signal under a cancellable
 * inbound request.
 */
function linkSignals(first: AbortSignal, second: AbortSignal): [AbortSignal, () => void] {
  const controller = new AbortController();
  const unlink = () => {
    first.removeEventListener('abort', onFirst);
    second.removeEventListener('abort', onSecond);
  };
  const onFirst = () => {
    unlink();
    controller.abort(first.reason);
  };
  const onSecond = () => {
    unlink();
    controller.abort(second.reason);
  };
  if (first.aborted) controller.abort(first.reason);
  else if (second.aborted) controller.abort(second.reason);
  else {
    first.addEventListener('abort', onFirst, { once: true });
    second.addEventListener('abort', onSecond, { once: true });
  }
  return [controller.signal, unlink];
}

function settleThen<T>(pending: Promise<T>, after: () => void): Promise<T> {
  return pending.then(
    (value) => {
      after();
      return value;
    },
    (error: unknown) => {
      after();
      throw error;
    },
  );
}

function checkTimeoutMs(value: number | undefined): number {
  const timeoutMs = value ?? clientDefaults.timeoutMs;
  if (!(typeof timeoutMs === 'number' && Number.isFinite(timeoutMs) && timeoutMs > 0)) {
    invalidOption('timeoutMs', 'a positive finite number', timeoutMs);
  }
  return timeoutMs;
}

function describeArgs(hasParams: boolean, hasBody: boolean): string {
  return `(${[hasParams && 'params', hasBody && 'body', 'options?'].filter(Boolean).join(', ')})`;
}

/** What HTTP allows in a field value (RFC 9110 field-vchar, SP and HTAB), as undici checks it. */
const invalidHeaderValue = /[^\t\x20-\x7e\x80-\xff]/;

function lowerCaseHeaders(headers: Record<string, string>, what: string): Record<string, string> {
  if (typeof headers !== 'object' || headers === null) invalidOption(what, 'an object of strings', headers);
  const lower: Record<string, string> = {};
  for (const [name, value] of Object.entries(headers)) {
    // Header values may be credentials: errors name the header, never its value.
    if (typeof value !== 'string') invalidOption(`${what}.${name}`, 'a string', typeof value);
    if (invalidHeaderValue.test(value)) {
      invalidOption(`${what}.${name}`, 'free of CR, LF and other control characters', '[value not shown]');
    }
    lower[name.toLowerCase()] = value;
  }
  return lower;
}
