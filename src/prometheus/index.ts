/**
 * `telescope-http/prometheus`: Prometheus metrics for every telescope client in the process, on
 * prom-client (an optional peer dependency: install it next to telescope).
 *
 * It subscribes to telescope's `node:diagnostics_channel` channels, so no client needs any
 * wiring, and clients created before or after it are all covered. `stop()` unsubscribes.
 *
 * | metric | type | labels |
 * |---|---|---|
 * | `telescope_calls_total` | counter | `service`, `endpoint`, `outcome` (`success`/`failure`), `code` |
 * | `telescope_call_duration_seconds` | histogram | `service`, `endpoint`, `outcome` |
 * | `telescope_attempts_total` | counter | `service`, `endpoint` |
 * | `telescope_retries_total` | counter | `service`, `endpoint` |
 * | `telescope_hedges_total` | counter | `service`, `endpoint` |
 * | `telescope_retry_budget_exhausted_total` | counter | `service`, `endpoint` |
 * | `telescope_shed_total` | counter | `service`, `endpoint`, `reason` |
 * | `telescope_fallbacks_total` | counter | `service`, `endpoint`, `outcome` |
 * | `telescope_breaker_state` | gauge | `service`, `endpoint` (0 closed, 1 half-open, 2 open) |
 * | `telescope_breaker_transitions_total` | counter | `service`, `endpoint`, `state` |
 * | `telescope_ejections_total` | counter | `service`, `reason` (`consecutive-failures`, `failure-percentage`, `success-rate`) |
 * | `telescope_instance_returns_total` | counter | `service`, `reason` (`expired`, `health-check`) |
 * | `telescope_instances_ejected` | gauge | `service` |
 * | `telescope_instances_unhealthy` | gauge | `service` (out of rotation on active health checks) |
 * | `telescope_cache_lookups_total` | counter | `service`, `endpoint`, `status` |
 * | `telescope_server_concurrency_limit` | gauge | `name` (a server `concurrencyLimit`'s name) |
 * | `telescope_server_shed_total` | counter | `name`, `reason` (`limit`/`deadline`/`queue-timeout`) |
 *
 * The metrics from `telescope_retries_total` down are counted from client events
 * (`src/observe/metric-catalog.ts`, shared with the OpenTelemetry metrics: the same metrics
 * under the names OpenTelemetry's Prometheus conversion gives, `telescope.retries` →
 * `telescope_retries_total`).
 *
 * Label values are bounded by construction: `service` and `endpoint` are the names in the
 * service definitions, `code` is one of the {@link ErrorCode} values (`OK` for a success,
 * `UNKNOWN` for anything else). Paths, params, ids and instance URLs never become labels.
 *
 * Calls are counted where the client's observe layer sees them: after retries and before
 * fallbacks (a failure a fallback answered counts as a failure). `metrics: false` on a client
 * turns off its `stats()`, not these metrics.
 *
 * @module telescope-http/prometheus
 */
import { subscribe, unsubscribe } from 'node:diagnostics_channel';
import { Counter, Gauge, Histogram, type Registry, register } from 'prom-client';
import type { CallContext } from '../core/call.js';
import { channels } from '../core/channels.js';
import { ErrorCode, invalidOption, isTelescopeError } from '../core/errors.js';
import {
  callDurationBuckets,
  channelEvents,
  type EventMetric,
  type EventPayload,
  eventMetrics,
  eventMetricsByEvent,
} from '../observe/metric-catalog.js';

export { breakerStateValue } from '../observe/metric-catalog.js';

/** Options of {@link prometheusMetrics}. */
export interface PrometheusMetricsOptions {
  /** Registry the metrics are registered in. @default prom-client's default `register` */
  registry?: Registry;
  /** Prefix of every metric name. @default 'telescope_' */
  prefix?: string;
  /** Upper bounds (seconds) of the call duration histogram's buckets. @default prometheusDefaults.buckets */
  buckets?: number[];
}

/** What {@link prometheusMetrics} returns. */
export interface PrometheusMetrics {
  /** The registry the metrics live in: serve `await registry.metrics()` on `/metrics`. */
  readonly registry: Registry;
  /** Stops updating the metrics (unsubscribes from every channel). They stay registered. Idempotent. */
  stop(): void;
}

export const prometheusDefaults = {
  prefix: 'telescope_',
  /** 1 ms to 10 s: service calls, not page loads. */
  buckets: callDurationBuckets,
} as const;

const errorCodes: ReadonlySet<string> = new Set(Object.values(ErrorCode));

/** The `code` label of a failure: an {@link ErrorCode}, or `UNKNOWN`. Never free text. */
export function codeLabel(error: unknown): string {
  return isTelescopeError(error) && errorCodes.has(error.code) ? error.code : 'UNKNOWN';
}

interface CallEndMessage {
  context: CallContext;
  durationMs: number;
}
interface CallErrorMessage extends CallEndMessage {
  error: unknown;
}
interface CallAttemptMessage {
  context: CallContext;
  attempt: number;
}
interface ClientEventMessage {
  service: string;
  event: string;
  payload: EventPayload;
}

/**
 * Starts maintaining telescope's Prometheus metrics.
 *
 * Throws (prom-client's error) when a metric of the same name is already in the registry, e.g.
 * when called twice with the same registry and prefix.
 *
 * @example
 * import { register } from 'prom-client';
 * import { prometheusMetrics } from 'telescope-http/prometheus';
 *
 * const metrics = prometheusMetrics();
 * // on GET /metrics: response.end(await register.metrics())
 * // at shutdown: metrics.stop()
 */
export function prometheusMetrics(options: PrometheusMetricsOptions = {}): PrometheusMetrics {
  if (typeof options !== 'object' || options === null) invalidOption('prometheusMetrics options', 'an object', options);
  const registry = options.registry ?? register;
  if (typeof registry?.registerMetric !== 'function') {
    invalidOption('registry', 'a prom-client Registry', options.registry);
  }
  const prefix = options.prefix ?? prometheusDefaults.prefix;
  if (typeof prefix !== 'string' || !/^([a-zA-Z_:][a-zA-Z0-9_:]*)?$/.test(prefix)) {
    invalidOption('prefix', 'a Prometheus metric name prefix ([a-zA-Z_:][a-zA-Z0-9_:]*)', prefix);
  }
  const buckets = options.buckets ?? [...prometheusDefaults.buckets];
  if (
    !Array.isArray(buckets) ||
    buckets.length === 0 ||
    buckets.some(
      (bound, index) => !(Number.isFinite(bound) && bound > 0 && (index === 0 || bound > buckets[index - 1]!)),
    )
  ) {
    invalidOption('buckets', 'a non-empty array of increasing positive finite numbers (seconds)', buckets);
  }

  const registers = [registry];
  const created: string[] = [];
  const track = <M>(name: string, metric: M): M => {
    created.push(name);
    return metric;
  };
  let calls: Counter<'service' | 'endpoint' | 'outcome' | 'code'>;
  let duration: Histogram<'service' | 'endpoint' | 'outcome'>;
  let attempts: Counter<'service' | 'endpoint'>;
  const fromEvents = new Map<EventMetric, Counter<string> | Gauge<string>>();
  let serverLimit: Gauge<'name'>;
  let serverShed: Counter<'name' | 'reason'>;
  try {
    calls = track(
      `${prefix}calls_total`,
      new Counter({
        name: `${prefix}calls_total`,
        help: 'Calls made through telescope clients, by outcome and error code (after retries, before fallbacks).',
        labelNames: ['service', 'endpoint', 'outcome', 'code'] as const,
        registers,
      }),
    );
    duration = track(
      `${prefix}call_duration_seconds`,
      new Histogram({
        name: `${prefix}call_duration_seconds`,
        help: 'Duration of telescope calls in seconds, retries included.',
        labelNames: ['service', 'endpoint', 'outcome'] as const,
        buckets,
        registers,
      }),
    );
    attempts = track(
      `${prefix}attempts_total`,
      new Counter({
        name: `${prefix}attempts_total`,
        help: 'HTTP attempts started by telescope clients (first attempts, retries and hedges).',
        labelNames: ['service', 'endpoint'] as const,
        registers,
      }),
    );
    for (const metric of eventMetrics) {
      const name = `${prefix}${metric.prometheus}`;
      const configuration = { name, help: metric.description, labelNames: metric.labels, registers };
      fromEvents.set(
        metric,
        track(name, metric.kind === 'counter' ? new Counter(configuration) : new Gauge(configuration)),
      );
    }
    serverLimit = track(
      `${prefix}server_concurrency_limit`,
      new Gauge({
        name: `${prefix}server_concurrency_limit`,
        help: 'The concurrency limit a server concurrencyLimit() has learned, now.',
        labelNames: ['name'] as const,
        registers,
      }),
    );
    serverShed = track(
      `${prefix}server_shed_total`,
      new Counter({
        name: `${prefix}server_shed_total`,
        help: 'Requests a server concurrencyLimit() answered 503 without work, by reason.',
        labelNames: ['name', 'reason'] as const,
        registers,
      }),
    );
  } catch (error) {
    // Leave the registry as it was: no half-registered set of metrics.
    for (const name of created) registry.removeSingleMetric(name);
    throw error;
  }

  const onEnd = guard((message: CallEndMessage) => {
    const { service, endpoint } = message.context;
    calls.inc({ service, endpoint, outcome: 'success', code: 'OK' });
    duration.observe({ service, endpoint, outcome: 'success' }, message.durationMs / 1000);
  });
  const onError = guard((message: CallErrorMessage) => {
    const { service, endpoint } = message.context;
    calls.inc({ service, endpoint, outcome: 'failure', code: codeLabel(message.error) });
    duration.observe({ service, endpoint, outcome: 'failure' }, message.durationMs / 1000);
  });
  const onAttempt = guard((message: CallAttemptMessage) => {
    const { service, endpoint } = message.context;
    attempts.inc({ service, endpoint });
  });
  const metricsByEvent = eventMetricsByEvent(eventMetrics);
  const onClientEvent = guard((message: ClientEventMessage) => {
    const list = metricsByEvent.get(message.event);
    if (list === undefined || typeof message.payload !== 'object' || message.payload === null) return;
    for (const metric of list) {
      const values = metric.labelValues(message.payload);
      const instrument = fromEvents.get(metric);
      if (values === undefined || instrument === undefined) continue;
      const labels: Record<string, string> = {};
      metric.labels.forEach((label, index) => {
        labels[label] = values[index] as string;
      });
      if (instrument instanceof Counter) {
        instrument.inc(labels);
      } else {
        const value = metric.value?.(message.payload);
        if (value !== undefined) instrument.set(labels, value);
      }
    }
  });

  // Client limits come through the event catalog (telescope_concurrency_limit); these are the servers'.
  const onServerLimit = guard((message: { side: string; name: string; limit: number }) => {
    if (message.side !== 'server' || typeof message.limit !== 'number') return;
    serverLimit.set({ name: String(message.name) }, message.limit);
  });
  const onServerShed = guard((message: { side: string; name: string; reason: string }) => {
    if (message.side !== 'server') return;
    serverShed.inc({ name: String(message.name), reason: String(message.reason) });
  });

  const subscriptions: Array<[string, (message: unknown, name: string | symbol) => void]> = [
    [channels.limitChange.name as string, onServerLimit],
    [channels.limitShed.name as string, onServerShed],
    [channels.callEnd.name as string, onEnd],
    [channels.callError.name as string, onError],
    [channels.callAttempt.name as string, onAttempt],
    [channels.clientEvent.name as string, onClientEvent],
    ...Object.entries(channelEvents).map(([name, event]): [string, (message: unknown) => void] => [
      name,
      (message) => onClientEvent({ service: '', event, payload: message as EventPayload }),
    ]),
  ];
  for (const [name, handler] of subscriptions) subscribe(name, handler);
  let stopped = false;

  return {
    registry,
    stop() {
      if (stopped) return;
      stopped = true;
      for (const [name, handler] of subscriptions) unsubscribe(name, handler);
    },
  };
}

let warned = false;

/**
 * A subscriber that never throws: diagnostics_channel turns a subscriber's exception into an
 * uncaught exception, and metrics must never take the process down.
 */
function guard<M>(handler: (message: M) => void): (message: unknown) => void {
  return (message) => {
    try {
      const context = (message as { context?: { service?: unknown; endpoint?: unknown } }).context;
      if (context !== undefined && (typeof context.service !== 'string' || typeof context.endpoint !== 'string'))
        return;
      handler(message as M);
    } catch (error) {
      if (!warned) {
        warned = true;
        process.emitWarning(`telescope-http/prometheus: a metric update failed: ${String(error)}`, 'TelescopeWarning');
      }
    }
  };
}
