/**
 * The aggregation both OpenTelemetry metrics paths share: channel subscribers that keep
 * telescope's metrics in slots found by a few Map lookups (tens of ns per call), and nothing
 * else. `otelMetrics()` hands the slots to a meter at collection; `otelMetricProducer()` turns
 * them into data points itself.
 */
import { subscribe, unsubscribe } from 'node:diagnostics_channel';
import { type Attributes, diag } from '@opentelemetry/api';
import type { CallContext, IncomingResponse, OutgoingRequest } from '../core/call.js';
import { channels } from '../core/channels.js';
import { ErrorCode, isTelescopeError } from '../core/errors.js';
import {
  callDurationBuckets,
  channelEvents,
  type EventMetric,
  type EventPayload,
  eventMetricsByEvent,
  httpDurationBuckets,
} from '../observe/metric-catalog.js';
import { guard } from './guard.js';
import { parseServer } from './server-address.js';

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

/** The instruments besides the event catalog's: names, units, descriptions, bucket bounds. */
export const otelInstruments = {
  requestDuration: {
    name: 'http.client.request.duration',
    unit: 's',
    description: 'Duration of HTTP client requests (one per attempt: retries and hedges are requests of their own).',
    buckets: httpDurationBuckets,
  },
  callDuration: {
    name: 'telescope.call.duration',
    unit: 's',
    description: 'Duration of telescope calls, retries included (after retries, before fallbacks).',
    buckets: callDurationBuckets,
  },
  calls: {
    name: 'telescope.calls',
    unit: '{call}',
    description: 'Calls made through telescope clients, by outcome and error code (after retries, before fallbacks).',
  },
  attempts: {
    name: 'telescope.attempts',
    unit: '{attempt}',
    description: 'HTTP attempts made by telescope clients (first attempts, retries and hedges).',
  },
} as const;

/** The paths running now (`otelMetrics()`, `otelMetricProducer()`), to warn when both do. */
const runningPaths = new Map<string, number>();

/**
 * Counts a running path, and warns when the other one runs too: a producer on a reader of the
 * meter provider `otelMetrics()` uses would report every series twice. Returns the unregister.
 */
export function registerPath(path: string): () => void {
  runningPaths.set(path, (runningPaths.get(path) ?? 0) + 1);
  if (runningPaths.size > 1) {
    diag.warn(
      `telescope-http/otel: ${[...runningPaths.keys()].join(' and ')} both run; if a producer is on a reader of ` +
        "otelMetrics()'s meter provider, that reader gets every telescope series twice: use one of them per reader",
    );
  }
  let registered = true;
  return () => {
    if (!registered) return;
    registered = false;
    const count = (runningPaths.get(path) ?? 1) - 1;
    if (count === 0) runningPaths.delete(path);
    else runningPaths.set(path, count);
  };
}

const knownMethods = new Set(['GET', 'HEAD', 'POST', 'PUT', 'DELETE', 'CONNECT', 'OPTIONS', 'TRACE', 'PATCH']);
const errorCodes: ReadonlySet<string> = new Set(Object.values(ErrorCode));

/**
 * Observations of one attribute set since the last {@link HistogramSlot.reset}, per bucket:
 * count, sum, minimum and maximum. Bounded: one slot per bucket.
 */
export class HistogramSlot {
  readonly attributes: Attributes;
  readonly bounds: readonly number[];
  readonly counts: Float64Array;
  readonly sums: Float64Array;
  readonly mins: Float64Array;
  readonly maxes: Float64Array;
  /** Observations since the last reset. */
  pending = 0;
  /** Observations ever recorded (for the counters derived from this histogram). */
  total = 0;

  constructor(attributes: Attributes, bounds: readonly number[]) {
    this.attributes = attributes;
    this.bounds = bounds;
    const size = bounds.length + 1;
    this.counts = new Float64Array(size);
    this.sums = new Float64Array(size);
    this.mins = new Float64Array(size).fill(Number.POSITIVE_INFINITY);
    this.maxes = new Float64Array(size).fill(Number.NEGATIVE_INFINITY);
  }

  record(value: number): void {
    const bounds = this.bounds;
    // Buckets are (previous bound, bound], as OpenTelemetry's explicit-bucket histogram.
    let bucket = 0;
    while (bucket < bounds.length && value > (bounds[bucket] as number)) bucket++;
    this.counts[bucket]! += 1;
    this.sums[bucket]! += value;
    if (value < this.mins[bucket]!) this.mins[bucket] = value;
    if (value > this.maxes[bucket]!) this.maxes[bucket] = value;
    this.pending++;
    this.total++;
  }

  /** Forgets the observations since the last reset (`total` stays). */
  reset(): void {
    if (this.pending === 0) return;
    this.counts.fill(0);
    this.sums.fill(0);
    this.mins.fill(Number.POSITIVE_INFINITY);
    this.maxes.fill(Number.NEGATIVE_INFINITY);
    this.pending = 0;
  }
}

/** The slots of one call site. */
export interface EndpointSlots {
  /** `http.client.request.duration`, by instance URL, then by status (number) or error code. */
  readonly attempts: Map<string, Map<number | string, HistogramSlot>>;
  /** `telescope.calls`, by error code (`OK` for a success). */
  readonly calls: Map<string, CallSlot>;
  /** `telescope.call.duration`, by outcome (`success`, `failure`: not by error code). */
  readonly callDurations: Map<string, HistogramSlot>;
  /** `{ telescope.service, telescope.endpoint }`, for the counters derived from the slots. */
  readonly attributes: Attributes;
  /** The last attempt's instance, key and histogram: most attempts in a row land on the same. */
  lastInstance: string | undefined;
  lastKey: number | string | undefined;
  lastAttempt: HistogramSlot | undefined;
  /** `calls.get('OK')`, once there is one. */
  ok: CallSlot | undefined;
}

/** `telescope.calls` of one error code, and the `telescope.call.duration` of its outcome. */
export interface CallSlot {
  readonly histogram: HistogramSlot;
  /** The histogram's attributes, plus `error.type` for a failure. */
  readonly callAttributes: Attributes;
  /** Calls ever ended with this code. */
  count: number;
}

/** An event counter's or gauge's value for one attribute set. */
export interface EventValue {
  readonly attributes: Attributes;
  value: number;
}

/** telescope's metrics of every client in the process, kept by channel subscribers. */
export class TelescopeAggregates {
  /** Slots by service, then endpoint. */
  readonly sites = new Map<string, Map<string, EndpointSlots>>();
  /** Event counters' and gauges' values, by label values joined with NUL. */
  readonly eventValues = new Map<EventMetric, Map<string, EventValue>>();
  readonly #servers = new Map<string, { address: string; port: number } | null>();
  // The last call site's slots: a hot call site skips the two Map lookups (compared by identity
  // first, the same strings come from the same client every call).
  #lastService: string | undefined;
  #lastEndpoint: string | undefined;
  #lastSlots: EndpointSlots | undefined;
  readonly #subscriptions: Array<[string, (message: unknown, name: string | symbol) => void]>;
  #stopped = false;

  constructor(eventMetrics: readonly EventMetric[]) {
    const metricsByEvent = eventMetricsByEvent(eventMetrics);
    const onClientEvent = guard(
      (message: ClientEventMessage) => this.#onClientEvent(metricsByEvent, message),
      'counted',
    );
    this.#subscriptions = [
      [
        channels.attemptEnd.name as string,
        guard((message: AttemptEndMessage) => this.#onAttemptEnd(message), 'counted'),
      ],
      [
        channels.callEnd.name as string,
        guard((message: CallEndMessage) => {
          const slot = this.#callSlot(message.context, 'OK');
          slot.count++;
          slot.histogram.record(message.durationMs / 1000);
        }, 'counted'),
      ],
      [
        channels.callError.name as string,
        guard((message: CallErrorMessage) => {
          const slot = this.#callSlot(message.context, errorType(message.error));
          slot.count++;
          slot.histogram.record(message.durationMs / 1000);
        }, 'counted'),
      ],
      [channels.clientEvent.name as string, onClientEvent],
      ...Object.entries(channelEvents).map(([name, event]): [string, (message: unknown) => void] => [
        name,
        (message) => onClientEvent({ service: '', event, payload: message as EventPayload }),
      ]),
    ];
    for (const [name, handler] of this.#subscriptions) subscribe(name, handler);
  }

  /** Unsubscribes from every channel. Idempotent. */
  stop(): void {
    if (this.#stopped) return;
    this.#stopped = true;
    for (const [name, handler] of this.#subscriptions) unsubscribe(name, handler);
  }

  #slotsOf(service: string, endpoint: string): EndpointSlots {
    if (service === this.#lastService && endpoint === this.#lastEndpoint) return this.#lastSlots as EndpointSlots;
    let byEndpoint = this.sites.get(service);
    if (byEndpoint === undefined) {
      byEndpoint = new Map();
      this.sites.set(service, byEndpoint);
    }
    let slots = byEndpoint.get(endpoint);
    if (slots === undefined) {
      slots = {
        attempts: new Map(),
        calls: new Map(),
        callDurations: new Map(),
        attributes: { 'telescope.service': service, 'telescope.endpoint': endpoint },
        lastInstance: undefined,
        lastKey: undefined,
        lastAttempt: undefined,
        ok: undefined,
      };
      byEndpoint.set(endpoint, slots);
    }
    this.#lastService = service;
    this.#lastEndpoint = endpoint;
    this.#lastSlots = slots;
    return slots;
  }

  #onAttemptEnd(message: AttemptEndMessage): void {
    const { context, instance = '', response, error } = message;
    const slots = this.#slotsOf(context.service, context.endpoint);
    // The common case, an answer below 400, is keyed by its status alone.
    const rawStatus = response !== undefined ? response.status : (error as { status?: unknown } | null)?.status;
    const status = typeof rawStatus === 'number' ? rawStatus : undefined;
    const key = status !== undefined && (status >= 400 || error === undefined) ? status : errorType(error);
    let histogram: HistogramSlot | undefined;
    if (instance === slots.lastInstance && key === slots.lastKey) {
      histogram = slots.lastAttempt as HistogramSlot;
    } else {
      histogram = this.#attemptSlot(slots, message, instance, status, key);
      slots.lastInstance = instance;
      slots.lastKey = key;
      slots.lastAttempt = histogram;
    }
    histogram.record(message.durationMs / 1000);
  }

  #attemptSlot(
    slots: EndpointSlots,
    message: AttemptEndMessage,
    instance: string,
    status: number | undefined,
    key: number | string,
  ): HistogramSlot {
    let byOutcome = slots.attempts.get(instance);
    if (byOutcome === undefined) {
      byOutcome = new Map();
      slots.attempts.set(instance, byOutcome);
    }
    let histogram = byOutcome.get(key);
    if (histogram === undefined) {
      const method = knownMethods.has(message.request.method) ? message.request.method : '_OTHER';
      const attributes: Attributes = { 'http.request.method': method, ...slots.attributes };
      const server = this.#serverOf(instance);
      if (server !== null) {
        attributes['server.address'] = server.address;
        attributes['server.port'] = server.port;
      }
      if (status !== undefined) attributes['http.response.status_code'] = status;
      // An HTTP error status is its own error type (as the semantic conventions ask); any other
      // failure is its telescope error code.
      if (status !== undefined && status >= 400) attributes['error.type'] = String(status);
      else if (message.error !== undefined) attributes['error.type'] = key;
      histogram = new HistogramSlot(attributes, httpDurationBuckets);
      byOutcome.set(key, histogram);
    }
    return histogram;
  }

  #callSlot(context: CallContext, code: string): CallSlot {
    const slots = this.#slotsOf(context.service, context.endpoint);
    if (code === 'OK' && slots.ok !== undefined) return slots.ok;
    let slot = slots.calls.get(code);
    if (slot === undefined) {
      const outcome = code === 'OK' ? 'success' : 'failure';
      let histogram = slots.callDurations.get(outcome);
      if (histogram === undefined) {
        histogram = new HistogramSlot({ ...slots.attributes, 'telescope.outcome': outcome }, callDurationBuckets);
        slots.callDurations.set(outcome, histogram);
      }
      const callAttributes: Attributes =
        code === 'OK' ? histogram.attributes : { ...histogram.attributes, 'error.type': code };
      slot = { histogram, callAttributes, count: 0 };
      slots.calls.set(code, slot);
      if (code === 'OK') slots.ok = slot;
    }
    return slot;
  }

  #serverOf(instance: string): { address: string; port: number } | null {
    let server = this.#servers.get(instance);
    if (server === undefined) {
      server = parseServer(instance);
      this.#servers.set(instance, server);
    }
    return server;
  }

  #onClientEvent(metricsByEvent: Map<string, EventMetric[]>, message: ClientEventMessage): void {
    const list = metricsByEvent.get(message.event);
    if (list === undefined || typeof message.payload !== 'object' || message.payload === null) return;
    for (const metric of list) {
      const labels = metric.labelValues(message.payload);
      if (labels === undefined) continue;
      let values = this.eventValues.get(metric);
      if (values === undefined) {
        values = new Map();
        this.eventValues.set(metric, values);
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
  }
}

/** `error.type` of a failure: the telescope error code, else `_OTHER`. Never free text. */
function errorType(error: unknown): string {
  return isTelescopeError(error) && errorCodes.has(error.code) ? error.code : '_OTHER';
}
