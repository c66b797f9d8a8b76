/**
 * `telescope-http/otel`: OpenTelemetry tracing (`openTelemetry()`) and metrics (`otelMetrics()`
 * in `./metrics.ts`, or `otelMetricProducer()` in `./producer.ts` for an SDK metric reader) for
 * every telescope client in the process, through `@opentelemetry/api` (an optional peer
 * dependency; bring your own SDK; `otelMetricProducer()`'s types are `@opentelemetry/sdk-metrics`'s).
 *
 * It subscribes to telescope's `node:diagnostics_channel` channels, so no client needs any
 * wiring. Per call it records:
 *
 * - a call span `<service>.<endpoint>` (kind INTERNAL), child of the context active where the
 *   call was made (the channels publish synchronously in the caller, so `context.active()` is
 *   the caller's context);
 * - one CLIENT span per attempt, `<METHOD> <service>.<endpoint>`, child of the call span, with
 *   the HTTP client attributes of the semantic conventions (`http.request.method`,
 *   `server.address`, `server.port`, `url.full`, `http.request.resend_count`,
 *   `http.response.status_code`, `error.type`), `telescope.attempt` and the attempt's timeout
 *   `telescope.attempt.timeout_ms` (what was left of the call's budget for it, or less);
 * - the W3C `traceparent` (and `tracestate`) of the attempt span in the attempt's request
 *   headers, so the callee's server span is a child of the attempt that reached it.
 *
 * The call span is INTERNAL, not CLIENT: the semantic conventions want one CLIENT span per
 * physical HTTP request (each attempt) and no encompassing HTTP CLIENT span around retries.
 *
 * Attempt spans end when the next attempt of the call starts (the earlier one failed, or a
 * retry would not have started), or when the call ends. Hedged attempts run side by side: the
 * loser ends, cancelled, with the call.
 *
 * @module telescope-http/otel
 */
import { subscribe, unsubscribe } from 'node:diagnostics_channel';
import {
  type Attributes,
  type Context,
  context as contextApi,
  isSpanContextValid,
  propagation,
  type Span,
  type SpanContext,
  SpanKind,
  SpanStatusCode,
  type TextMapPropagator,
  type TextMapSetter,
  type Tracer,
  trace,
} from '@opentelemetry/api';
import type { CallContext, IncomingResponse, OutgoingRequest } from '../core/call.js';
import { channels } from '../core/channels.js';
import { invalidOption, isTelescopeError } from '../core/errors.js';
import { guard } from './guard.js';
import { serverOfUrl } from './server-address.js';

export {
  type OtelMetricsIntegration,
  type OtelMetricsOptions,
  otelMetrics,
  otelMetricsDefaults,
} from './metrics.js';
export { type OtelMetricProducer, type OtelMetricProducerOptions, otelMetricProducer } from './producer.js';

/** Options of {@link openTelemetry}. */
export interface OpenTelemetryOptions {
  /** Tracer the spans are made with. @default trace.getTracer('telescope') (the global provider's) */
  tracer?: Tracer;
  /**
   * Propagator that writes the trace context into each attempt's headers. By default: the
   * global propagator when one is registered (`propagation.setGlobalPropagator`, as the Node
   * SDK does), else a built-in W3C Trace Context one (`traceparent`, `tracestate`).
   */
  propagator?: TextMapPropagator;
  /** Write trace context headers into outgoing requests; `false` for spans only. @default true */
  propagate?: boolean;
}

/** What {@link openTelemetry} returns. */
export interface OpenTelemetryIntegration {
  /**
   * Stops tracing (unsubscribes from every channel). Spans of calls still in flight are not
   * ended, so not exported. Idempotent.
   */
  stop(): void;
}

interface AttemptState {
  readonly span: Span;
  /** The context the attempt ran in: the call's own, or a hedge's fork of it. */
  readonly context: CallContext;
  readonly instance: string | undefined;
}

interface CallState {
  readonly span: Span;
  /** The OpenTelemetry context with the call span: parent of the attempt spans. */
  readonly traceContext: Context;
  readonly call: CallContext;
  /** Attempts started and not ended yet. */
  attempts: AttemptState[];
}

interface CallStartMessage {
  context: CallContext;
  request: OutgoingRequest;
}
interface CallAttemptMessage {
  context: CallContext;
  request: OutgoingRequest;
  instance: string | undefined;
  attempt: number;
}
interface CallEndMessage {
  context: CallContext;
  response: IncomingResponse;
}
interface CallErrorMessage {
  context: CallContext;
  error: unknown;
}

const knownMethods = new Set(['GET', 'HEAD', 'POST', 'PUT', 'DELETE', 'CONNECT', 'OPTIONS', 'TRACE', 'PATCH']);

/** Writes headers lower-cased, as every telescope layer does. */
const headerSetter: TextMapSetter<Record<string, string>> = {
  set(carrier, key, value) {
    carrier[key.toLowerCase()] = value;
  },
};

/** `traceparent` of a span context: `00-<trace id>-<span id>-<flags>` (W3C Trace Context level 1). */
export function formatTraceparent(spanContext: SpanContext): string {
  return `00-${spanContext.traceId}-${spanContext.spanId}-${(spanContext.traceFlags & 0xff).toString(16).padStart(2, '0')}`;
}

/** The built-in propagator: W3C `traceparent` and `tracestate` of the context's span. */
function injectW3C(traceContext: Context, headers: Record<string, string>): void {
  const spanContext = trace.getSpanContext(traceContext);
  if (spanContext === undefined || !isSpanContextValid(spanContext)) return;
  headers.traceparent = formatTraceparent(spanContext);
  const traceState = spanContext.traceState?.serialize();
  if (traceState) headers.tracestate = traceState;
}

/**
 * Starts tracing telescope calls.
 *
 * @example
 * import { openTelemetry } from 'telescope-http/otel';
 *
 * const tracing = openTelemetry(); // after the OpenTelemetry SDK is started
 * // at shutdown: tracing.stop()
 */
export function openTelemetry(options: OpenTelemetryOptions = {}): OpenTelemetryIntegration {
  if (typeof options !== 'object' || options === null) invalidOption('openTelemetry options', 'an object', options);
  if (options.tracer !== undefined && typeof options.tracer?.startSpan !== 'function') {
    invalidOption('tracer', 'an OpenTelemetry Tracer', options.tracer);
  }
  if (options.propagator !== undefined && typeof options.propagator?.inject !== 'function') {
    invalidOption('propagator', 'an OpenTelemetry TextMapPropagator', options.propagator);
  }
  const tracer = options.tracer ?? trace.getTracer('telescope');
  const propagator = options.propagator;
  const inject: ((traceContext: Context, headers: Record<string, string>) => void) | undefined =
    options.propagate === false
      ? undefined
      : propagator !== undefined
        ? (traceContext, headers) => propagator.inject(traceContext, headers, headerSetter)
        : (traceContext, headers) => {
            // The API's default global propagator is a no-op with no fields.
            if (propagation.fields().length > 0) propagation.inject(traceContext, headers, headerSetter);
            else injectW3C(traceContext, headers);
          };

  /** In-flight calls by their context. Entries go at the call's end, or with the context. */
  const calls = new WeakMap<CallContext, CallState>();
  /** The same, by request: a hedged attempt runs in a fork of the call's context, with its request. */
  const callsByRequest = new WeakMap<OutgoingRequest, CallState>();

  const onStart = (message: CallStartMessage) => {
    const { context, request } = message;
    const parent = contextApi.active();
    const span = tracer.startSpan(
      `${context.service}.${context.endpoint}`,
      {
        kind: SpanKind.INTERNAL,
        attributes: { 'telescope.service': context.service, 'telescope.endpoint': context.endpoint },
      },
      parent,
    );
    const state: CallState = { span, traceContext: trace.setSpan(parent, span), call: context, attempts: [] };
    calls.set(context, state);
    callsByRequest.set(request, state);
  };

  const onAttempt = (message: CallAttemptMessage) => {
    const { context, request, instance, attempt } = message;
    const state = calls.get(context) ?? callsByRequest.get(request);
    if (state === undefined) return;
    // A sequential attempt (or the first of a new round of hedged attempts) carries the call's
    // current attempt number: every attempt still open has failed. A hedge carries a higher one.
    if (attempt === state.call.attempt) {
      for (const open of state.attempts) {
        open.span.setStatus({ code: SpanStatusCode.ERROR });
        open.span.setAttribute('error.type', '_OTHER');
        open.span.end();
      }
      state.attempts = [];
    }
    const method = knownMethods.has(request.method) ? request.method : '_OTHER';
    const span = tracer.startSpan(
      `${method === '_OTHER' ? 'HTTP' : method} ${context.service}.${context.endpoint}`,
      { kind: SpanKind.CLIENT },
      state.traceContext,
    );
    if (span.isRecording()) {
      span.setAttributes(attemptAttributes(request, method, instance, attempt));
      const timeoutMs = context.attemptExpiresAt - context.clock.now();
      if (Number.isFinite(timeoutMs))
        span.setAttribute('telescope.attempt.timeout_ms', Math.max(0, Math.round(timeoutMs)));
    }
    state.attempts.push({ span, context, instance });
    inject?.(trace.setSpan(state.traceContext, span), request.headers);
  };

  const onEnd = (message: CallEndMessage) => {
    const { context, response } = message;
    const state = calls.get(context);
    if (state === undefined) return;
    calls.delete(context);
    // The attempt that answered: the last one open to the instance that answered.
    let winner: AttemptState | undefined;
    for (const open of state.attempts) if (open.instance === response.instance) winner = open;
    winner ??= state.attempts[state.attempts.length - 1];
    for (const open of state.attempts) {
      if (open === winner) {
        open.span.setAttribute('http.response.status_code', response.status);
      } else {
        // A hedged attempt that lost: cancelled when the other one answered.
        open.span.setAttribute('telescope.attempt.cancelled', true);
      }
      open.span.end();
    }
    state.attempts = [];
    state.span.setAttribute('telescope.attempts', context.attempt);
    state.span.end();
  };

  const onError = (message: CallErrorMessage) => {
    const { context, error } = message;
    const state = calls.get(context);
    if (state === undefined) return;
    calls.delete(context);
    const code = isTelescopeError(error) ? error.code : error instanceof Error ? error.name : 'Error';
    const status = (error as { status?: unknown } | null)?.status;
    const failedAt = isTelescopeError(error) ? error.instance : undefined;
    for (const open of state.attempts) {
      open.span.setStatus({ code: SpanStatusCode.ERROR });
      open.span.setAttribute('error.type', code);
      if (typeof status === 'number' && (failedAt === undefined || failedAt === open.instance)) {
        open.span.setAttribute('http.response.status_code', status);
      }
      open.span.end();
    }
    state.attempts = [];
    state.span.setAttribute('telescope.attempts', context.attempt);
    state.span.setAttribute('error.type', code);
    if (error instanceof Error) state.span.recordException(error);
    state.span.setStatus({ code: SpanStatusCode.ERROR, message: error instanceof Error ? error.message : code });
    state.span.end();
  };

  const subscriptions: Array<[string, (message: unknown, name: string | symbol) => void]> = [
    [channels.callStart.name as string, guard(onStart, 'traced')],
    [channels.callAttempt.name as string, guard(onAttempt, 'traced')],
    [channels.callEnd.name as string, guard(onEnd, 'traced')],
    [channels.callError.name as string, guard(onError, 'traced')],
  ];
  for (const [name, handler] of subscriptions) subscribe(name, handler);
  let stopped = false;

  return {
    stop() {
      if (stopped) return;
      stopped = true;
      for (const [name, handler] of subscriptions) unsubscribe(name, handler);
    },
  };
}

/** Semantic-convention attributes of an HTTP client span for one attempt. */
function attemptAttributes(
  request: OutgoingRequest,
  method: string,
  instance: string | undefined,
  attempt: number,
): Attributes {
  const attributes: Attributes = { 'http.request.method': method, 'telescope.attempt': attempt };
  if (method === '_OTHER') attributes['http.request.method_original'] = request.method;
  if (attempt > 1) attributes['http.request.resend_count'] = attempt - 1;
  if (instance !== undefined) {
    try {
      const url = new URL(instance);
      const server = serverOfUrl(url);
      attributes['server.address'] = server.address;
      attributes['server.port'] = server.port;
      attributes['url.full'] = `${url.origin}${request.path}`;
    } catch {
      attributes['url.full'] = `${instance}${request.path}`;
    }
  }
  return attributes;
}
