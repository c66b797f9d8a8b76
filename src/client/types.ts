/**
 * The public types of a client: its options, the options of one call, the client object and
 * its events; and the defaults of the options.
 */

import { attemptDefaults } from '../attempt/index.js';
import type {
  BalancerName,
  HealthCheckOptions,
  InstanceEvent,
  InstanceInput,
  OutlierOptions,
} from '../balance/index.js';
import type { BreakerOptions, CircuitCause, CircuitControl, CircuitState } from '../breaker/index.js';
import type { AdaptiveBulkheadOptions, BulkheadOptions } from '../bulkhead/index.js';
import type { Logger, RouteHints } from '../core/call.js';
import type { Clock } from '../core/clock.js';
import type { Deadline } from '../core/deadline.js';
import type { Discovery } from '../discovery/index.js';
import type { FallbackEvent } from '../fallback/index.js';
import type { ClientStats } from '../observe/index.js';
import type { RedirectOptions } from '../redirect/index.js';
import type { HedgeOptions, RetryEvent, RetryOptions } from '../retry/index.js';
import type { EndpointMethod, ServiceDefinition } from '../service/index.js';
import type { ThrottleOptions } from '../throttle/index.js';
import { type AttemptTransport, type TransportOptions, transportDefaults } from '../transport/index.js';
import type { ClientConfiguration } from './configure.js';

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

/** The transport's options a client passes on (used unless `transport` is given). */
type ClientTransportOptions = Pick<
  TransportOptions,
  'connectTimeoutMs' | 'maxResponseBytes' | 'connections' | 'keepAliveTimeoutMs' | 'tls' | 'http2' | 'decompress'
>;

/** Options of `createClient`. Every option has a default except `instances`. */
export interface ClientOptions extends ClientTransportOptions {
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
