/**
 * Typed service definitions: a service is declared once, with Standard Schema validators
 * (zod, valibot, arktype…) for params, query, body and response, and called as typed methods.
 */

import type { BreakerOptions } from '../breaker/index.js';
import { ErrorCode, invalidOption, TelescopeError, ValidationError } from '../core/errors.js';
import { isStandardSchema, type StandardSchemaV1 } from '../core/standard-schema.js';
import type { Fallback } from '../fallback/index.js';
import type { EndpointRetryOptions, HedgeOptions } from '../retry/index.js';

export type HttpMethod = 'GET' | 'HEAD' | 'POST' | 'PUT' | 'PATCH' | 'DELETE' | 'OPTIONS';

type Schema = StandardSchemaV1;
type MaybeSchema = Schema | undefined;
/** A request body schema, or `'raw'` for a body sent as given (see {@link RawBody}). */
type BodySpec = Schema | 'raw' | undefined;

/**
 * The body of an endpoint declared with `body: 'raw'`: sent as given, never validated or
 * serialized. A `ReadableStream` is read as it is sent, so a call with one is never retried
 * or hedged once its first byte was read. Content type unless the call's headers set one:
 * `text/plain;charset=utf-8` for a string, `application/x-www-form-urlencoded;charset=UTF-8`
 * for URLSearchParams, `application/octet-stream` for bytes and streams.
 */
export type RawBody = string | Uint8Array | URLSearchParams | ReadableStream<Uint8Array>;

/** How an endpoint's response body is handed over. */
export type ResponseType = 'buffered' | 'stream';

/**
 * What a `responseType: 'stream'` method resolves to, once the response headers arrive. The
 * call's deadline and signal keep guarding `body` (a stalled body errors with
 * `DEADLINE_EXCEEDED`); `body.cancel()` frees the connection; nothing is retried from here on.
 */
export interface StreamResponse {
  readonly status: number;
  readonly headers: Record<string, string | string[] | undefined>;
  readonly body: ReadableStream<Uint8Array>;
}
type Input<S> = S extends Schema ? StandardSchemaV1.InferInput<S> : never;
type Output<S> = S extends Schema ? StandardSchemaV1.InferOutput<S> : unknown;
type ParamsOutput<P> = P extends Schema ? StandardSchemaV1.InferOutput<P> : undefined;

/** What `endpoint()` takes. */
export interface EndpointConfig<
  P extends MaybeSchema = undefined,
  Q extends MaybeSchema = undefined,
  B extends BodySpec = undefined,
  R extends MaybeSchema = undefined,
  T extends ResponseType = 'buffered',
> {
  method: HttpMethod;
  /** Path template; `:name` segments are filled from `params`, URL-encoded. */
  path: string;
  /** Schema of the path params (the first argument of the typed method). */
  params?: P;
  /** Schema of the query string; its keys come from the same first argument as `params`. */
  query?: Q;
  /**
   * Schema of the JSON request body (the argument after params), or `'raw'` for a
   * {@link RawBody} sent as given (string, bytes, URLSearchParams or a ReadableStream).
   */
  body?: B;
  /** Schema of the decoded response body. Without one, the method returns the decoded body as `unknown`. */
  response?: R;
  /**
   * `'stream'`: the method resolves once the headers arrive, to a {@link StreamResponse} whose
   * body is a web `ReadableStream` (not buffered, not bounded by `maxResponseBytes`, decoded
   * when `decompress` is on). No `response` schema then. @default 'buffered'
   */
  responseType?: T;
  /** Whether repeating the call is safe. @default true for GET, HEAD, PUT, DELETE, OPTIONS */
  idempotent?: boolean;
  /** This endpoint's default call budget; overrides the client's `timeoutMs`. */
  timeoutMs?: number;
  /**
   * Answer when the dependency is unavailable (circuit open, bulkhead full, no healthy
   * instance, deadline, transport failure, 5xx): a value, or a function of the error and the
   * validated params. Typed like the response.
   */
  fallback?: Fallback<Output<R>, ParamsOutput<P>>;
  /**
   * This endpoint's retries, merged over the client's `retry` (`false`: never retried). The
   * retry budget stays the client's. @default the client's `retry`
   */
  retry?: EndpointRetryOptions | false;
  /** This endpoint's hedging, replacing the client's `hedge`. @default the client's `hedge` */
  hedge?: HedgeOptions | false;
  /** This endpoint's upper bound of one attempt. @default the client's `attemptTimeoutMs` */
  attemptTimeoutMs?: number;
  /**
   * This endpoint's circuit breaker, merged over the client's `breaker` (`false`: none).
   * @default the client's `breaker`
   */
  breaker?: BreakerOptions | false;
}

/**
 * An endpoint's own retry, hedge, attempt timeout and breaker settings (checked by
 * `createClient`, which names them `endpoints.<name>.<option>`).
 */
export interface EndpointPolicy {
  readonly retry?: EndpointRetryOptions | false | undefined;
  readonly hedge?: HedgeOptions | false | undefined;
  readonly attemptTimeoutMs?: number | undefined;
  readonly breaker?: BreakerOptions | false | undefined;
}

/** A declared endpoint: its config plus the compiled path template. */
export interface Endpoint<
  P extends MaybeSchema = MaybeSchema,
  Q extends MaybeSchema = MaybeSchema,
  B extends BodySpec = BodySpec,
  R extends MaybeSchema = MaybeSchema,
  T extends ResponseType = ResponseType,
> {
  readonly method: HttpMethod;
  readonly path: string;
  readonly params: P;
  readonly query: Q;
  readonly body: B;
  readonly response: R;
  readonly responseType: T;
  readonly idempotent: boolean;
  readonly timeoutMs: number | undefined;
  /** Whether a fallback is declared (`fallback` itself may be any value, even undefined). */
  readonly hasFallback: boolean;
  readonly fallback: Fallback<Output<R>, ParamsOutput<P>> | undefined;
  /** The endpoint's own policy, or undefined when it uses the client's throughout. */
  readonly policy: EndpointPolicy | undefined;
  /** @internal literal parts and param names of the path template, alternating. */
  readonly pathParts: readonly string[];
}

const idempotentMethods = new Set(['GET', 'HEAD', 'PUT', 'DELETE', 'OPTIONS']);
const methods = new Set(['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS']);

/**
 * Declares an endpoint.
 *
 * @example
 * endpoint({ method: 'GET', path: '/movies/:id', params: z.object({ id: z.number().int() }), response: Movie })
 */
export function endpoint<
  P extends MaybeSchema = undefined,
  Q extends MaybeSchema = undefined,
  B extends BodySpec = undefined,
  R extends MaybeSchema = undefined,
  T extends ResponseType = 'buffered',
>(config: EndpointConfig<P, Q, B, R, T>): Endpoint<P, Q, B, R, T> {
  if (typeof config !== 'object' || config === null) invalidOption('endpoint config', 'an object', config);
  if (!methods.has(config.method)) invalidOption('endpoint method', [...methods].join(', '), config.method);
  if (typeof config.path !== 'string' || !config.path.startsWith('/')) {
    invalidOption('endpoint path', "a string starting with '/'", config.path);
  }
  for (const part of ['params', 'query', 'body', 'response'] as const) {
    const schema = config[part];
    if (schema !== undefined && !isStandardSchema(schema) && !(part === 'body' && schema === 'raw')) {
      invalidOption(
        `endpoint ${part}`,
        `a Standard Schema (zod, valibot, arktype…)${part === 'body' ? " or 'raw'" : ''}`,
        schema,
      );
    }
  }
  const responseType = config.responseType ?? 'buffered';
  if (responseType !== 'buffered' && responseType !== 'stream') {
    invalidOption('endpoint responseType', "'buffered' or 'stream'", responseType);
  }
  if (responseType === 'stream' && config.response !== undefined) {
    invalidOption('endpoint response', "absent with responseType 'stream' (the body is a stream)", 'a schema');
  }
  if (config.body !== undefined && (config.method === 'GET' || config.method === 'HEAD')) {
    invalidOption('endpoint body', `absent for ${config.method}`, 'a schema');
  }
  if (config.timeoutMs !== undefined && !(config.timeoutMs > 0 && Number.isFinite(config.timeoutMs))) {
    invalidOption('endpoint timeoutMs', 'a positive finite number', config.timeoutMs);
  }
  const pathParts = compilePath(config.path);
  if (pathParts.length > 1 && config.params === undefined) {
    invalidOption('endpoint params', `a schema, since path ${config.path} has parameters`, undefined);
  }
  return {
    method: config.method,
    path: config.path,
    params: config.params as P,
    query: config.query as Q,
    body: config.body as B,
    response: config.response as R,
    responseType: responseType as T,
    idempotent: config.idempotent ?? idempotentMethods.has(config.method),
    timeoutMs: config.timeoutMs,
    hasFallback: 'fallback' in config,
    fallback: config.fallback,
    policy: policyOf(config),
    pathParts,
  };
}

const policyKeys = ['retry', 'hedge', 'attemptTimeoutMs', 'breaker'] as const;

/** The endpoint's policy options as given (checked by createClient), or undefined for none. */
function policyOf(config: EndpointPolicy): EndpointPolicy | undefined {
  let policy: Record<string, unknown> | undefined;
  for (const key of policyKeys) {
    if (config[key] === undefined) continue;
    policy ??= {};
    policy[key] = config[key];
  }
  return policy === undefined ? undefined : Object.freeze(policy);
}

/** Splits `/a/:id/b` into `['/a/', 'id', '/b']`: literals at even indexes, param names at odd. */
function compilePath(path: string): string[] {
  const parts: string[] = [];
  const pattern = /:([A-Za-z_$][\w$]*)/g;
  let last = 0;
  for (let match = pattern.exec(path); match !== null; match = pattern.exec(path)) {
    parts.push(path.slice(last, match.index), match[1] as string);
    last = match.index + match[0].length;
  }
  parts.push(path.slice(last));
  return parts;
}

/** A service: a name and its endpoints. */
export interface ServiceDefinition<E extends Record<string, Endpoint> = Record<string, Endpoint>> {
  readonly name: string;
  readonly endpoints: E;
}

/** Method names a client already uses; an endpoint may not take them. */
export const reservedNames: ReadonlySet<string> = new Set([
  'close',
  'service',
  'on',
  'retryTokens',
  'circuit',
  'then',
  'constructor',
  'toJSON',
]);

/**
 * Declares a service once; clients, fakes and servers are built from the definition.
 *
 * @example
 * const movies = defineService({ name: 'movies', endpoints: { getMovie: endpoint({ ... }) } });
 */
export function defineService<const E extends Record<string, Endpoint>>(definition: {
  name: string;
  endpoints: E;
}): ServiceDefinition<E> {
  if (typeof definition?.name !== 'string' || !/^[\w.-]{1,64}$/.test(definition.name)) {
    invalidOption('service name', '1 to 64 letters, digits, _, . or -', definition?.name);
  }
  if (typeof definition.endpoints !== 'object' || definition.endpoints === null) {
    invalidOption('service endpoints', 'an object of endpoint() results', definition.endpoints);
  }
  for (const [name, value] of Object.entries(definition.endpoints)) {
    if (reservedNames.has(name)) invalidOption(`endpoint name ${name}`, 'not a reserved client member', name);
    if (typeof value !== 'object' || value === null || !Array.isArray(value.pathParts)) {
      invalidOption(`endpoints.${name}`, 'the result of endpoint()', value);
    }
  }
  return Object.freeze({ name: definition.name, endpoints: definition.endpoints });
}

// --- types of typed methods ---------------------------------------------------------------

/** The first argument: params and query keys together, when the endpoint declares either. */
export type ParamsArgs<E extends Endpoint> = E['params'] extends Schema
  ? E['query'] extends Schema
    ? [params: Input<E['params']> & Input<E['query']>]
    : [params: Input<E['params']>]
  : E['query'] extends Schema
    ? [query: Input<E['query']>]
    : [];

/** The body argument, when the endpoint declares a body schema or a raw body. */
export type BodyArgs<E extends Endpoint> = E['body'] extends Schema
  ? [body: Input<E['body']>]
  : E['body'] extends 'raw'
    ? [body: RawBody]
    : [];

/** The response type of an endpoint: its schema's output, `unknown`, or a {@link StreamResponse}. */
export type ResponseOf<E extends Endpoint> = E['responseType'] extends 'stream'
  ? StreamResponse
  : Output<E['response']>;

/** A typed method: (params?, body?, options?) with only the parts the endpoint declares. */
export type EndpointMethod<E extends Endpoint, O> = (
  ...args: [...ParamsArgs<E>, ...BodyArgs<E>, options?: O]
) => Promise<ResponseOf<E>>;

// --- request building ------------------------------------------------------------------------

/** @internal validates a value against an optional schema, sync when the schema is. */
export function validate<T>(
  schema: MaybeSchema,
  value: unknown,
  onIssues: (issues: readonly StandardSchemaV1.Issue[], cause?: unknown) => never,
): T | Promise<T> {
  if (schema === undefined) return value as T;
  let result: ReturnType<StandardSchemaV1['~standard']['validate']>;
  try {
    result = schema['~standard'].validate(value);
  } catch (error) {
    // A schema that throws (a recursive schema on a very deep value overflows the stack) is a
    // validation failure like any other, not a raw exception out of the client.
    return onIssues([{ message: `schema threw: ${(error as Error)?.message ?? String(error)}` }], error);
  }
  if (result instanceof Promise) {
    return result.then(
      (settled) => (settled.issues ? onIssues(settled.issues) : (settled.value as T)),
      (error: unknown) => onIssues([{ message: `schema threw: ${(error as Error)?.message ?? String(error)}` }], error),
    );
  }
  return result.issues ? onIssues(result.issues) : (result.value as T);
}

/** @internal builds the path and query string from validated values. */
export function buildPath(
  endpointName: string,
  serviceName: string,
  pathParts: readonly string[],
  params: unknown,
  query: unknown,
): string {
  let path = pathParts[0] as string;
  for (let index = 1; index < pathParts.length; index += 2) {
    const name = pathParts[index] as string;
    const value = (params as Record<string, unknown> | undefined)?.[name];
    if (value === undefined || value === null || value === '') {
      throw new ValidationError(
        ErrorCode.INVALID_REQUEST,
        'params',
        [{ message: 'required for the path', path: [name] }],
        {
          service: serviceName,
          endpoint: endpointName,
          requestSent: false,
        },
      );
    }
    const text = String(value);
    // A dot segment cannot be made safe by encoding: URL parsers and proxies treat %2E and
    // %2E%2E as `.` and `..` (WHATWG URL, RFC 3986 normalization) and would remove a segment.
    if (text === '.' || text === '..') {
      throw new ValidationError(
        ErrorCode.INVALID_REQUEST,
        'params',
        [{ message: "must not be '.' or '..' (a dot segment would change the path)", path: [name] }],
        { service: serviceName, endpoint: endpointName, requestSent: false },
      );
    }
    path += encodeURIComponent(text) + (pathParts[index + 1] as string);
  }
  if (query !== undefined && query !== null) {
    if (typeof query !== 'object') {
      throw new ValidationError(ErrorCode.INVALID_REQUEST, 'query', [{ message: 'must be an object' }], {
        service: serviceName,
        endpoint: endpointName,
        requestSent: false,
      });
    }
    let separator = path.includes('?') ? '&' : '?';
    for (const [key, value] of Object.entries(query)) {
      if (value === undefined) continue;
      for (const item of Array.isArray(value) ? value : [value]) {
        if (item === undefined) continue;
        path += `${separator}${encodeURIComponent(key)}=${encodeURIComponent(String(item))}`;
        separator = '&';
      }
    }
  }
  return path;
}

/** @internal turns a validated body into bytes on the wire. */
export function serializeBody(body: unknown): string {
  const json = JSON.stringify(body);
  if (json === undefined) {
    throw new TelescopeError(ErrorCode.INVALID_REQUEST, 'request body is not JSON-serializable', {
      requestSent: false,
    });
  }
  return json;
}
