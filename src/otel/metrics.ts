/**
 * OpenTelemetry metrics for every telescope client in the process, through
 * `@opentelemetry/api` only: the HTTP client semantic conventions' `http.client.request.duration`
 * (one observation per attempt, that is per physical HTTP request) and telescope's own
 * instruments, whose names map onto the Prometheus exporter's (`telescope.retries` ↔
 * `telescope_retries_total`).
 *
 * Cost. The SDK's synchronous instruments hash the attribute set on every `record()` (about
 * 1 µs for five attributes), more than a whole telescope call costs. So the channel subscribers
 * only aggregate, into slots found by a few Map lookups (tens of ns): counters and gauges are
 * reported through observable instruments, and each histogram slot's observations are handed
 * to the SDK's histogram bucket by bucket when a reader collects (each bucket's exact minimum
 * and maximum, the rest at the mean of the others, so counts, sums, minimum and maximum are
 * exact). With the no-op meter provider (no SDK registered) nothing is subscribed at all.
 */
import { subscribe, unsubscribe } from 'node:diagnostics_channel';
import {
  type Attributes,
  type BatchObservableResult,
  createNoopMeter,
  diag,
  type Histogram,
  type Meter,
  type MeterProvider,
  metrics,
  type Observable,
  type ObservableCounter,
  type ObservableGauge,
} from '@opentelemetry/api';
import type { CallContext, IncomingResponse, OutgoingRequest } from '../core/call.js';
import { channels } from '../core/channels.js';
import { ErrorCode, invalidOption, isTelescopeError } from '../core/errors.js';
import {
  callDurationBuckets,
  channelEvents,
  type EventMetric,
  type EventPayload,
  eventMetrics,
  eventMetricsByEvent,
  httpDurationBuckets,
} from '../observe/metric-catalog.js';

/** Options of {@link otelMetrics}. */
export interface OtelMetricsOptions {
  /**
   * Meter provider the instruments are made with. With the API's no-op provider (no SDK
   * registered), nothing is subscribed and calls pay nothing.
   * @default metrics.getMeterProvider() (the global provider, as registered by the SDK)
   */
  meterProvider?: MeterProvider;
}

/** What {@link otelMetrics} returns. */
export interface OtelMetricsIntegration {
  /**
   * Stops the metrics: unsubscribes from every channel and from the meter's collections.
   * Observations not collected yet are dropped. Idempotent.
   */
  stop(): void;
}

/** Instrument names and histogram boundaries of {@link otelMetrics}. */
export const otelMetricsDefaults = {
  /** Name of the OpenTelemetry meter (instrumentation scope). */
  meterName: 'telescope',
  /** `http.client.request.duration`: the semantic conventions' advised boundaries (seconds). */
  httpDurationBuckets,
  /** `telescope.call.duration`: the Prometheus exporter's (seconds). */
  callDurationBuckets,
} as const;

interface AttemptEndMessage {
  context: CallContext;
  request: OutgoingRequest;
  instance: string | undefined;
  durationMs: number;
  response?: IncomingResponse;
  error?: unknown;
}
interface CallEndMessage {
  context: CallContext;
  durationMs: number;
}
interface CallErrorMessage extends CallEndMessage {
  error: unknown;
}
interface ClientEventMessage {
  service: string;
  event: string;
  payload: EventPayload;
}

const knownMethods = new Set(['GET', 'HEAD', 'POST', 'PUT', 'DELETE', 'CONNECT', 'OPTIONS', 'TRACE', 'PATCH']);
const errorCodes: ReadonlySet<string> = new Set(Object.values(ErrorCode));

/**
 * Observations of one attribute set, per bucket, since the last collection: count, sum,
 * minimum and maximum. Bounded: one slot per bucket.
 */
class PendingHistogram {
  readonly attributes: Attributes;
  readonly #bounds: readonly number[];
  readonly #counts: Float64Array;
  readonly #sums: Float64Array;
  readonly #mins: Float64Array;
  readonly #maxes: Float64Array;
  #pending = 0;
  /** Observations ever recorded (for the counters derived from this histogram). */
  total = 0;

  constructor(attributes: Attributes, bounds: readonly number[]) {
    this.attributes = attributes;
    this.#bounds = bounds;
    const size = bounds.length + 1;
    this.#counts = new Float64Array(size);
    this.#sums = new Float64Array(size);
    this.#mins = new Float64Array(size).fill(Number.POSITIVE_INFINITY);
    this.#maxes = new Float64Array(size).fill(Number.NEGATIVE_INFINITY);
  }

  record(value: number): void {
    const bounds = this.#bounds;
    // Buckets are (previous bound, bound], as OpenTelemetry's explicit-bucket histogram.
    let bucket = 0;
    while (bucket < bounds.length && value > (bounds[bucket] as number)) bucket++;
    this.#counts[bucket]! += 1;
    this.#sums[bucket]! += value;
    if (value < this.#mins[bucket]!) this.#mins[bucket] = value;
    if (value > this.#maxes[bucket]!) this.#maxes[bucket] = value;
    this.#pending++;
    this.total++;
  }

  /** Hands the pending observations to `histogram`, then forgets them. */
  flush(histogram: Histogram, attributes: Attributes = this.attributes): void {
    if (this.#pending === 0) return;
    for (let bucket = 0; bucket < this.#counts.length; bucket++) {
      const count = this.#counts[bucket]!;
      if (count === 0) continue;
      const min = this.#mins[bucket]!;
      const max = this.#maxes[bucket]!;
      histogram.record(min, attributes);
      if (count >= 2) histogram.record(max, attributes);
      if (count > 2) {
        // The others' mean lies between this bucket's minimum and maximum; clamp away rounding.
        const mean = Math.min(max, Math.max(min, (this.#sums[bucket]! - min - max) / (count - 2)));
        for (let index = 2; index < count; index++) histogram.record(mean, attributes);
      }
      this.#counts[bucket] = 0;
      this.#sums[bucket] = 0;
      this.#mins[bucket] = Number.POSITIVE_INFINITY;
      this.#maxes[bucket] = Number.NEGATIVE_INFINITY;
    }
    this.#pending = 0;
  }
}

/** Outcome slots of one call site: per instance and per status or error code. */
interface EndpointSlots {
  readonly service: string;
  readonly endpoint: string;
  /** `http.client.request.duration`, by instance URL, then by status (number) or error code. */
  readonly attempts: Map<string, Map<number | string, PendingHistogram>>;
  /** `telescope.call.duration` and `telescope.calls`, by error code (`OK` for a success). */
  readonly calls: Map<string, { histogram: PendingHistogram; callAttributes: Attributes }>;
  /** `{ telescope.service, telescope.endpoint }`, for the counters derived from the slots. */
  readonly attributes: Attributes;
}

/**
 * Starts maintaining telescope's OpenTelemetry metrics. Call it after the OpenTelemetry SDK is
 * started (the API has no proxy for meter providers: a provider registered later is not seen).
 *
 * @example
 * import { otelMetrics } from 'telescope-http/otel';
 *
 * const telescopeMetrics = otelMetrics(); // after the SDK's MeterProvider is registered
 * // at shutdown: telescopeMetrics.stop()
 */
export function otelMetrics(options: OtelMetricsOptions = {}): OtelMetricsIntegration {
  if (typeof options !== 'object' || options === null) invalidOption('otelMetrics options', 'an object', options);
  if (options.meterProvider !== undefined && typeof options.meterProvider?.getMeter !== 'function') {
    invalidOption('meterProvider', 'an OpenTelemetry MeterProvider', options.meterProvider);
  }
  const provider = options.meterProvider ?? metrics.getMeterProvider();
  const meter = provider.getMeter(otelMetricsDefaults.meterName);
  // No SDK: subscribe to nothing, so the channels stay without subscribers and calls pay nothing.
  if (meter === createNoopMeter()) return { stop() {} };
  return startMetrics(meter);
}

function startMetrics(meter: Meter): OtelMetricsIntegration {
  const requestDuration = meter.createHistogram('http.client.request.duration', {
    unit: 's',
    description: 'Duration of HTTP client requests (one per attempt: retries and hedges are requests of their own).',
    advice: { explicitBucketBoundaries: [...httpDurationBuckets] },
  });
  const callDuration = meter.createHistogram('telescope.call.duration', {
    unit: 's',
    description: 'Duration of telescope calls, retries included (after retries, before fallbacks).',
    advice: { explicitBucketBoundaries: [...callDurationBuckets] },
  });
  const callsCounter = meter.createObservableCounter('telescope.calls', {
    unit: '{call}',
    description: 'Calls made through telescope clients, by outcome and error code (after retries, before fallbacks).',
  });
  const attemptsCounter = meter.createObservableCounter('telescope.attempts', {
    unit: '{attempt}',
    description: 'HTTP attempts made by telescope clients (first attempts, retries and hedges).',
  });
  const eventInstruments = new Map<EventMetric, ObservableCounter | ObservableGauge>();
  for (const metric of eventMetrics) {
    const instrumentOptions = { unit: metric.unit, description: metric.description };
    eventInstruments.set(
      metric,
      metric.kind === 'counter'
        ? meter.createObservableCounter(metric.name, instrumentOptions)
        : meter.createObservableGauge(metric.name, instrumentOptions),
    );
  }
  const metricsByEvent = eventMetricsByEvent(eventMetrics);

  const sites = new Map<string, Map<string, EndpointSlots>>();
  const servers = new Map<string, { address: string; port: number } | null>();
  const eventValues = new Map<EventMetric, Map<string, { attributes: Attributes; value: number }>>();

  const slotsOf = (service: string, endpoint: string): EndpointSlots => {
    let byEndpoint = sites.get(service);
    if (byEndpoint === undefined) {
      byEndpoint = new Map();
      sites.set(service, byEndpoint);
    }
    let slots = byEndpoint.get(endpoint);
    if (slots === undefined) {
      slots = {
        service,
        endpoint,
        attempts: new Map(),
        calls: new Map(),
        attributes: { 'telescope.service': service, 'telescope.endpoint': endpoint },
      };
      byEndpoint.set(endpoint, slots);
    }
    return slots;
  };

  const serverOf = (instance: string) => {
    let server = servers.get(instance);
    if (server === undefined) {
      server = parseServer(instance);
      servers.set(instance, server);
    }
    return server;
  };

  const onAttemptEnd = guard((message: AttemptEndMessage) => {
    const { context, request, instance = '', response, error } = message;
    const slots = slotsOf(context.service, context.endpoint);
    let byOutcome = slots.attempts.get(instance);
    if (byOutcome === undefined) {
      byOutcome = new Map();
      slots.attempts.set(instance, byOutcome);
    }
    const rawStatus = response !== undefined ? response.status : (error as { status?: unknown } | null)?.status;
    const status = typeof rawStatus === 'number' ? rawStatus : undefined;
    // An HTTP error status is its own error type (as the semantic conventions ask); any other
    // failure is its telescope error code.
    const failedWith =
      status !== undefined && status >= 400 ? String(status) : error === undefined ? undefined : errorType(error);
    const key = failedWith === undefined || failedWith === String(status) ? (status ?? 0) : failedWith;
    let histogram = byOutcome.get(key);
    if (histogram === undefined) {
      const method = knownMethods.has(request.method) ? request.method : '_OTHER';
      const attributes: Attributes = { 'http.request.method': method, ...slots.attributes };
      const server = serverOf(instance);
      if (server !== null) {
        attributes['server.address'] = server.address;
        attributes['server.port'] = server.port;
      }
      if (status !== undefined) attributes['http.response.status_code'] = status;
      if (failedWith !== undefined) attributes['error.type'] = failedWith;
      histogram = new PendingHistogram(attributes, httpDurationBuckets);
      byOutcome.set(key, histogram);
    }
    histogram.record(message.durationMs / 1000);
  });

  const callSlot = (context: CallContext, code: string) => {
    const slots = slotsOf(context.service, context.endpoint);
    let slot = slots.calls.get(code);
    if (slot === undefined) {
      const outcome = code === 'OK' ? 'success' : 'failure';
      const durationAttributes: Attributes = { ...slots.attributes, 'telescope.outcome': outcome };
      const callAttributes: Attributes =
        code === 'OK' ? durationAttributes : { ...durationAttributes, 'error.type': code };
      slot = { histogram: new PendingHistogram(durationAttributes, callDurationBuckets), callAttributes };
      slots.calls.set(code, slot);
    }
    return slot;
  };
  const onCallEnd = guard((message: CallEndMessage) => {
    callSlot(message.context, 'OK').histogram.record(message.durationMs / 1000);
  });
  const onCallError = guard((message: CallErrorMessage) => {
    callSlot(message.context, errorType(message.error)).histogram.record(message.durationMs / 1000);
  });

  const onClientEvent = guard((message: ClientEventMessage) => {
    const list = metricsByEvent.get(message.event);
    if (list === undefined || typeof message.payload !== 'object' || message.payload === null) return;
    for (const metric of list) {
      const labels = metric.labelValues(message.payload);
      if (labels === undefined) continue;
      let values = eventValues.get(metric);
      if (values === undefined) {
        values = new Map();
        eventValues.set(metric, values);
      }
      const key = labels.join('\u0000');
      let entry = values.get(key);
      if (entry === undefined) {
        const attributes: Attributes = {};
        metric.attributes.forEach((name, index) => {
          attributes[name] = labels[index];
        });
        entry = { attributes, value: 0 };
        values.set(key, entry);
      }
      if (metric.kind === 'counter') {
        entry.value++;
      } else {
        const value = metric.value?.(message.payload);
        if (value !== undefined) entry.value = value;
      }
    }
  });

  const observables: Observable[] = [callsCounter, attemptsCounter, ...eventInstruments.values()];
  const collect = (result: BatchObservableResult) => {
    try {
      for (const byEndpoint of sites.values()) {
        for (const slots of byEndpoint.values()) {
          let attempts = 0;
          for (const byOutcome of slots.attempts.values()) {
            for (const histogram of byOutcome.values()) {
              attempts += histogram.total;
              histogram.flush(requestDuration);
            }
          }
          if (attempts > 0) result.observe(attemptsCounter, attempts, slots.attributes);
          for (const { histogram, callAttributes } of slots.calls.values()) {
            result.observe(callsCounter, histogram.total, callAttributes);
            histogram.flush(callDuration);
          }
        }
      }
      for (const [metric, values] of eventValues) {
        const instrument = eventInstruments.get(metric);
        if (instrument === undefined) continue;
        for (const { attributes, value } of values.values()) result.observe(instrument, value, attributes);
      }
    } catch (error) {
      diag.error('telescope-http/otel: metrics could not be collected', error);
    }
  };
  meter.addBatchObservableCallback(collect, observables);

  const subscriptions: Array<[string, (message: unknown, name: string | symbol) => void]> = [
    [channels.attemptEnd.name as string, onAttemptEnd],
    [channels.callEnd.name as string, onCallEnd],
    [channels.callError.name as string, onCallError],
    [channels.clientEvent.name as string, onClientEvent],
    ...Object.entries(channelEvents).map(([name, event]): [string, (message: unknown) => void] => [
      name,
      (message) => onClientEvent({ service: '', event, payload: message as EventPayload }),
    ]),
  ];
  for (const [name, handler] of subscriptions) subscribe(name, handler);
  let stopped = false;
  return {
    stop() {
      if (stopped) return;
      stopped = true;
      for (const [name, handler] of subscriptions) unsubscribe(name, handler);
      meter.removeBatchObservableCallback(collect, observables);
    },
  };
}

/** `error.type` of a failure: the telescope error code, else `_OTHER`. Never free text. */
function errorType(error: unknown): string {
  return isTelescopeError(error) && errorCodes.has(error.code) ? error.code : '_OTHER';
}

/** `server.address` and `server.port` of an instance URL, or null when it does not parse. */
function parseServer(instance: string): { address: string; port: number } | null {
  try {
    const url = new URL(instance);
    return {
      address: url.hostname.startsWith('[') ? url.hostname.slice(1, -1) : url.hostname,
      port: url.port === '' ? (url.protocol === 'https:' ? 443 : 80) : Number(url.port),
    };
  } catch {
    return null;
  }
}

/**
 * A subscriber that never throws: diagnostics_channel turns a subscriber's exception into an
 * uncaught exception, and metrics must never take the process down.
 */
function guard<M>(handler: (message: M) => void): (message: unknown) => void {
  return (message) => {
    try {
      handler(message as M);
    } catch (error) {
      diag.error('telescope-http/otel: a channel message could not be counted', error);
    }
  };
}
