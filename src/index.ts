/**
 * telescope: a service access library for Node.js. Typed service clients over undici with
 * deadline budgets that shrink hop by hop, and every failure mapped to one error hierarchy.
 *
 * @module telescope-http
 */

export { type AttemptOptions, attempt, attemptDefaults } from './attempt/index.js';
export {
  type BalancerName,
  balance,
  type EjectionReason,
  type HealthCheckOptions,
  healthCheckDefaults,
  type InstanceEvent,
  type InstanceInput,
  InstanceSet,
  type InstanceSetOptions,
  InstanceState,
  isInstanceFailure,
  type OutlierOptions,
  outcomeOf,
  outlierDefaults,
  parseInstances,
} from './balance/index.js';
export {
  type BreakerLayer,
  type BreakerOptions,
  breaker,
  breakerDefaults,
  breakerOutcome,
  type CircuitCause,
  type CircuitControl,
  type CircuitState,
  countsForBreaker,
} from './breaker/index.js';
export {
  type AdaptiveBulkheadOptions,
  adaptiveBulkheadDefaults,
  type BulkheadLayer,
  type BulkheadOptions,
  type BulkheadSnapshot,
  bulkhead,
  bulkheadDefaults,
  isOverloadDrop,
} from './bulkhead/index.js';
export {
  type Classifier,
  type ClassifyInput,
  classify,
  defaultRetryableStatuses,
} from './classify/index.js';
export {
  type CallOptions,
  type Client,
  type ClientConfiguration,
  type ClientEvents,
  type ClientOptions,
  clientDefaults,
  configurableKeys,
  createClient,
  type InstanceCounts,
  redactHeaders,
} from './client/index.js';
export { channels } from './core/channels.js';
export {
  type Call,
  CallContext,
  type Cancellation,
  ClassifiedFailureError,
  type Clock,
  compose,
  Deadline,
  ErrorCode,
  HttpStatusError,
  type IncomingResponse,
  type Instance,
  isTelescopeError,
  type Layer,
  type Logger,
  type OneShotBody,
  type OutgoingRequest,
  type ResponseClass,
  type RouteHints,
  type StandardSchemaV1,
  sleep,
  systemClock,
  TelescopeError,
  type TelescopeErrorOptions,
  TimerWheel,
  ValidationError,
  type ValidationIssue,
  type WheelEntry,
  wheelOf,
} from './core/index.js';
export { currentDeadline, type DeadlineOptions, deadline, withDeadline } from './deadline/index.js';
export { type Discovery, type DnsDiscoveryOptions, type DnsResolver, dnsDiscovery } from './discovery/index.js';
export { type Fallback, type FallbackEvent, fallback, fallbackApplies } from './fallback/index.js';
export {
  AdaptiveLimit,
  type AdaptiveLimitOptions,
  type LimitAlgorithmName,
  limitAlgorithms,
} from './limit/index.js';
export {
  type BreakerState,
  type ClientStats,
  EndpointStats,
  type EndpointStatsSnapshot,
  type LatencySummary,
  observe,
  RollingCounter,
  RollingHistogram,
} from './observe/index.js';
export { type RedirectOptions, redirectDefaults, redirects } from './redirect/index.js';
export {
  type BackoffOptions,
  backoffDefaults,
  type EndpointRetryOptions,
  type HedgeOptions,
  RetryBudget,
  type RetryBudgetOptions,
  type RetryEvent,
  type RetryLayerOptions,
  type RetryOptions,
  retry,
  retryBudgetDefaults,
  retryDefaults,
} from './retry/index.js';
export {
  defineService,
  type Endpoint,
  type EndpointConfig,
  type EndpointMethod,
  type EndpointPolicy,
  endpoint,
  type HttpMethod,
  type RawBody,
  type ResponseOf,
  type ResponseType,
  type ServiceDefinition,
  type StreamResponse,
} from './service/index.js';
export { Throttle, type ThrottleOptions, throttleDefaults } from './throttle/index.js';
export {
  type AttemptTransport,
  type Pem,
  supportedCodings,
  type TlsOptions,
  type Transport,
  type TransportOptions,
  transport,
  transportDefaults,
} from './transport/index.js';
