/**
 * `createClient`: turns a service definition into typed methods over the layer stack
 * (outermost first): deadline → balance → attempt → transport. Later layers (retry, breaker,
 * bulkhead, observe, fallback, cache) slot in by position without touching the others.
 */

import { attempt, attemptDefaults } from '../attempt/index.js';
import { balance, type InstanceInput, parseInstances } from '../balance/index.js';
import { type Call, CallContext, compose, type IncomingResponse, type Logger, type RouteHints } from '../core/call.js';
import { type Clock, systemClock } from '../core/clock.js';
import type { Deadline } from '../core/deadline.js';
import { ErrorCode, invalidOption, isTelescopeError, TelescopeError, ValidationError } from '../core/errors.js';
import type { StandardSchemaV1 } from '../core/standard-schema.js';
import { deadline } from '../deadline/index.js';
import {
  buildPath,
  type Endpoint,
  type EndpointMethod,
  type ServiceDefinition,
  serializeBody,
  validate,
} from '../service/index.js';
import { transport, transportDefaults } from '../transport/index.js';

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
  /** The service's instances: URLs, or URLs with zone, version and weight. */
  instances: readonly InstanceInput[];
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
  /** TCP connect timeout, per hop. @default 1000 */
  connectTimeoutMs?: number;
  /** Larger response bodies are aborted, not buffered. @default 10485760 */
  maxResponseBytes?: number;
  /** Sockets per instance; `null` for no limit. @default null */
  connections?: number | null;
  /** Idle keep-alive socket lifetime. @default 4000 */
  keepAliveTimeoutMs?: number;
  /** Headers sent with every call. @default {} */
  headers?: Record<string, string>;
  /** A pino logger (or the same shape); the client logs through a child `{ service }`. @default silent */
  logger?: Logger;
  /** Time source for every timeout. @default systemClock */
  clock?: Clock;
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
};

const redactedHeaders = new Set(['authorization', 'proxy-authorization', 'cookie', 'set-cookie', 'x-api-key']);

/** A copy of `headers` with credentials replaced by `[redacted]`, for logs. */
export function redactHeaders(headers: Record<string, string>): Record<string, string> {
  const copy: Record<string, string> = {};
  for (const [name, value] of Object.entries(headers)) copy[name] = redactedHeaders.has(name) ? '[redacted]' : value;
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
  const timeoutMs = options.timeoutMs ?? clientDefaults.timeoutMs;
  if (!(Number.isFinite(timeoutMs) && timeoutMs > 0)) invalidOption('timeoutMs', 'a positive finite number', timeoutMs);
  const instances = parseInstances(options.instances);
  const wire = transport({
    connectTimeoutMs: options.connectTimeoutMs,
    maxResponseBytes: options.maxResponseBytes,
    connections: options.connections,
    keepAliveTimeoutMs: options.keepAliveTimeoutMs,
    clock,
  });
  const stack: Call = compose(
    deadline({ minAttemptMs: options.minAttemptMs }),
    balance(instances),
    attempt({
      attemptTimeoutMs: options.attemptTimeoutMs,
      reserveMs: options.reserveMs,
      minAttemptMs: options.minAttemptMs,
      deadlineHeader: options.deadlineHeader,
    }),
  )(wire.call);
  const logger = options.logger?.child({ service: service.name });
  const baseHeaders = lowerCaseHeaders(options.headers ?? {}, 'headers');
  let closed = false;

  const client: Record<string, unknown> = {
    service,
    async close() {
      closed = true;
      await wire.close();
    },
  };
  for (const [name, definition] of Object.entries(service.endpoints)) {
    client[name] = typedMethod(name, definition);
  }
  return Object.freeze(client) as Client<S>;

  function typedMethod(name: string, definition: Endpoint) {
    const hasParams = definition.params !== undefined || definition.query !== undefined;
    const hasBody = definition.body !== undefined;
    const endpointHeaders: Record<string, string> = hasBody
      ? { ...baseHeaders, 'content-type': 'application/json' }
      : baseHeaders;
    const endpointTimeoutMs = definition.timeoutMs ?? timeoutMs;
    const failRequest = (part: ValidationError['part']) => (issues: readonly StandardSchemaV1.Issue[]) => {
      throw new ValidationError(ErrorCode.INVALID_REQUEST, part, issues, {
        service: service.name,
        endpoint: name,
        requestSent: false,
      });
    };
    const failParams = failRequest('params');
    const failQuery = failRequest('query');
    const failBody = failRequest('body');
    const failResponse = (issues: readonly StandardSchemaV1.Issue[]): never => {
      throw new ValidationError(ErrorCode.INVALID_RESPONSE, 'response', issues, {
        service: service.name,
        endpoint: name,
      });
    };
    const decode =
      definition.response === undefined
        ? (response: IncomingResponse) => response.body
        : (response: IncomingResponse) => validate(definition.response, response.body, failResponse);
    const logFailure = (activeLogger: Logger, error: unknown, headers: Record<string, string>): never => {
      activeLogger.debug(
        isTelescopeError(error)
          ? {
              endpoint: name,
              code: error.code,
              instance: error.instance,
              attempt: error.attempt,
              err: error.message,
              headers: redactHeaders(headers),
            }
          : { endpoint: name, err: String(error), headers: redactHeaders(headers) },
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
        const checkedBody = hasBody ? validate(definition.body, body, failBody) : undefined;
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
      let callTimeoutMs = endpointTimeoutMs;
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
        if (callOptions.signal?.aborted) {
          throw new TelescopeError(ErrorCode.ABORTED, 'call aborted by the caller before it started', {
            service: service.name,
            endpoint: name,
            requestSent: false,
            cause: callOptions.signal.reason,
          });
        }
      }
      const context = new CallContext({
        service: service.name,
        endpoint: name,
        idempotent,
        clock,
        timeoutMs: callTimeoutMs,
        callerSignal: callOptions?.signal,
        deadline: callOptions?.deadline,
        route: callOptions?.route,
        logger,
      });
      const request = {
        method: definition.method,
        path,
        // Layers write per-attempt headers (the deadline), so each call gets its own object.
        headers: { ...headers },
        body: body === undefined ? undefined : serializeBody(body),
      };
      const pending = stack(request, context).then(decode);
      return logger === undefined ? pending : pending.catch((error) => logFailure(logger, error, request.headers));
    }
  }
}

function describeArgs(hasParams: boolean, hasBody: boolean): string {
  return `(${[hasParams && 'params', hasBody && 'body', 'options?'].filter(Boolean).join(', ')})`;
}

function lowerCaseHeaders(headers: Record<string, string>, what: string): Record<string, string> {
  if (typeof headers !== 'object' || headers === null) invalidOption(what, 'an object of strings', headers);
  const lower: Record<string, string> = {};
  for (const [name, value] of Object.entries(headers)) {
    if (typeof value !== 'string') invalidOption(`${what}.${name}`, 'a string', value);
    if (/[\r\n]/.test(value)) invalidOption(`${what}.${name}`, 'free of CR and LF', value);
    lower[name.toLowerCase()] = value;
  }
  return lower;
}
