/**
 * The server side of a service definition: matches method + path template, decodes and
 * coerces path params and the query string, parses the JSON body, validates all three with
 * the endpoint's schemas, runs the handler and checks its answer against the response schema.
 *
 * Pure of sockets: `answer()` turns a request's parts into a status, headers and body, so it
 * is unit-tested without a server; `server.ts` puts it on a real node:http server.
 */
import type { IncomingHttpHeaders } from 'node:http';
import type { Deadline } from '../core/deadline.js';
import { ErrorCode, formatIssues, TelescopeError, ValidationError, type ValidationIssue } from '../core/errors.js';
import type { StandardSchemaV1 } from '../core/standard-schema.js';
import type { Endpoint, ServiceDefinition } from '../service/index.js';
import { isHttpErrorResponse } from './http-error.js';

type Schema = StandardSchemaV1;
type Out<S> = S extends Schema ? StandardSchemaV1.InferOutput<S> : undefined;

/**
 * The first argument of a handler: the validated path params and query values together (the
 * same keys a client method takes as its first argument), or `{}` when the endpoint has none.
 */
export type HandlerInput<E extends Endpoint> = E['params'] extends Schema
  ? E['query'] extends Schema
    ? Out<E['params']> & Out<E['query']>
    : Out<E['params']>
  : E['query'] extends Schema
    ? Out<E['query']>
    : Record<string, never>;

/** The second argument of a handler: the validated JSON body, or `undefined` without a body schema. */
export type HandlerBody<E extends Endpoint> = E['body'] extends Schema ? Out<E['body']> : undefined;

/** What a handler returns: an input of the response schema (checked on its JSON form), or anything without one. */
export type HandlerResult<E extends Endpoint> = E['response'] extends Schema
  ? StandardSchemaV1.InferInput<E['response']>
  : unknown;

/** The third argument of a handler: where the request came from. */
export interface HandlerContext {
  readonly service: string;
  readonly endpoint: string;
  readonly method: string;
  /** Path and query string as received. */
  readonly url: string;
  readonly headers: IncomingHttpHeaders;
  /** Origin of the instance answering, e.g. `http://127.0.0.1:40123`. */
  readonly instance: string;
  /** Index of the instance in its group (0 for a fake). */
  readonly index: number;
  /** The caller's deadline (from `x-request-timeout-ms`), unless deadlines are off. */
  readonly deadline: Deadline | undefined;
  /** Aborts when the caller goes away before the answer is sent. */
  readonly signal: AbortSignal;
}

/** A handler of one endpoint: `(input, body, context) => response`. Throw `httpError(...)` for other statuses. */
export type EndpointHandler<E extends Endpoint> = (
  input: HandlerInput<E>,
  body: HandlerBody<E>,
  context: HandlerContext,
) => HandlerResult<E> | Promise<HandlerResult<E>>;

/** Handlers of a service, by endpoint name; an endpoint without one answers 501. */
export type ServiceHandlers<S extends ServiceDefinition> = {
  readonly [K in keyof S['endpoints']]?: EndpointHandler<S['endpoints'][K]>;
};

/** Handlers as the router sees them. */
export type AnyHandlers = Readonly<Record<string, AnyHandler | undefined>>;
type AnyHandler = (input: unknown, body: unknown, context: HandlerContext) => unknown;

// --- matching ----------------------------------------------------------------------------------

/** One endpoint, compiled. */
export interface Route {
  readonly name: string;
  readonly endpoint: Endpoint;
  readonly pattern: RegExp;
  readonly paramNames: readonly string[];
}

/** The result of {@link Router.match}. */
export type RouteMatch =
  | { readonly kind: 'found'; readonly route: Route; readonly params: Record<string, string> | undefined }
  | { readonly kind: 'bad-path'; readonly route: Route; readonly issues: readonly ValidationIssue[] }
  | { readonly kind: 'method-not-allowed'; readonly allow: readonly string[] }
  | { readonly kind: 'not-found' };

const escapeRegExp = (text: string) => text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

/**
 * Routes of a definition. A template's `:name` segment matches one non-empty path segment
 * (`[^/]+`, still percent-encoded, decoded after the match so `%2F` stays inside its segment).
 * When several templates match, the one with fewer params wins (`/movies/top` before
 * `/movies/:id`), then definition order.
 */
export class Router {
  readonly routes: readonly Route[];

  constructor(readonly definition: ServiceDefinition) {
    const routes = Object.entries(definition.endpoints).map(([name, endpoint], order) => {
      const parts = endpoint.pathParts;
      let source = '';
      const paramNames: string[] = [];
      for (let index = 0; index < parts.length; index++) {
        let part = parts[index] as string;
        if (index % 2 === 1) {
          paramNames.push(part);
          source += '([^/]+)';
          continue;
        }
        // A literal query in the template (`/x?v=1`) is not part of the path to match.
        const query = part.indexOf('?');
        if (query !== -1) part = part.slice(0, query);
        source += escapeRegExp(part);
      }
      return { name, endpoint, pattern: new RegExp(`^${source}$`), paramNames, order };
    });
    routes.sort((a, b) => a.paramNames.length - b.paramNames.length || a.order - b.order);
    this.routes = routes;
  }

  /** Finds the endpoint for a method and a raw (still encoded) pathname. */
  match(method: string, pathname: string): RouteMatch {
    const allow: string[] = [];
    for (const route of this.routes) {
      const found = route.pattern.exec(pathname);
      if (found === null) continue;
      if (route.endpoint.method !== method) {
        if (!allow.includes(route.endpoint.method)) allow.push(route.endpoint.method);
        continue;
      }
      if (route.paramNames.length === 0) return { kind: 'found', route, params: undefined };
      const params: Record<string, string> = {};
      const issues: ValidationIssue[] = [];
      route.paramNames.forEach((name, index) => {
        try {
          params[name] = decodeURIComponent(found[index + 1] as string);
        } catch {
          issues.push({ message: 'malformed percent-encoding', path: [name] });
        }
      });
      return issues.length > 0 ? { kind: 'bad-path', route, issues } : { kind: 'found', route, params };
    }
    return allow.length > 0 ? { kind: 'method-not-allowed', allow } : { kind: 'not-found' };
  }
}

// --- coercion ----------------------------------------------------------------------------------

/** The number syntax `String(number)` produces: `-12`, `3.5`, `1e+21`; no leading zeros, no `Infinity`. */
const numberPattern = /^-?(?:0|[1-9]\d*)(?:\.\d+)?(?:e[+-]?\d+)?$/i;

function coerceScalar(value: unknown): unknown {
  if (typeof value !== 'string') return value;
  if (numberPattern.test(value)) return Number(value);
  if (value === 'true') return true;
  if (value === 'false') return false;
  return value;
}

type Settled = { value: unknown; issues?: undefined } | { issues: readonly ValidationIssue[] };

async function check(schema: Schema, value: unknown): Promise<Settled> {
  const result = await schema['~standard'].validate(value);
  return result.issues ? { issues: result.issues } : { value: result.value };
}

/** Top-level keys the issues point at; `undefined` when some issue has no path (the whole object). */
function keysOf(issues: readonly ValidationIssue[]): Set<string> | undefined {
  const keys = new Set<string>();
  for (const issue of issues) {
    const first = issue.path?.[0];
    if (first === undefined) return undefined;
    keys.add(String(typeof first === 'object' ? first.key : first));
  }
  return keys;
}

/**
 * Validates path params or query values, which arrive as strings, against a schema that may
 * expect numbers, booleans or arrays. Standard Schema offers no introspection, so the schema
 * itself is asked, at most three times:
 *
 * 1. the strings as received (`z.string()`, `z.coerce.number()`, enums pass here);
 * 2. if rejected: each rejected key whose value reads as a number (`-12`, `3.5`, `1e+21`, the
 *    way `String(n)` writes it) becomes that number, and `true`/`false` become booleans;
 * 3. if still rejected: each rejected key holding one value is wrapped in an array (a query
 *    key sent once, for an array schema; repeated keys already arrive as arrays).
 *
 * What the schema still rejects is reported with the issues of the last attempt.
 */
export async function validateStrings(schema: Schema, raw: Record<string, string | string[]>): Promise<Settled> {
  const first = await check(schema, raw);
  if (first.issues === undefined) return first;
  const keys = keysOf(first.issues);
  const touched = (key: string) => keys === undefined || keys.has(key);
  let changed = false;
  const coerced: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(raw)) {
    const next = touched(key) ? (Array.isArray(value) ? value.map(coerceScalar) : coerceScalar(value)) : value;
    if (Array.isArray(value) ? (next as unknown[]).some((item, index) => item !== value[index]) : next !== value) {
      changed = true;
    }
    coerced[key] = next;
  }
  const second = changed ? await check(schema, coerced) : first;
  if (second.issues === undefined) return second;
  const stillKeys = keysOf(second.issues);
  let wrapped = false;
  const arrays: Record<string, unknown> = { ...coerced };
  for (const [key, value] of Object.entries(raw)) {
    if (Array.isArray(value) || (stillKeys !== undefined && !stillKeys.has(key))) continue;
    arrays[key] = [coerced[key]];
    wrapped = true;
  }
  if (!wrapped) return second;
  const third = await check(schema, arrays);
  return third.issues === undefined ? third : second;
}

/** Query string to an object: a key sent once is a string, a repeated key an array. */
export function parseQuery(search: string): Record<string, string | string[]> {
  const query: Record<string, string | string[]> = {};
  for (const [key, value] of new URLSearchParams(search)) {
    const seen = query[key];
    if (seen === undefined) query[key] = value;
    else if (Array.isArray(seen)) seen.push(value);
    else query[key] = [seen, value];
  }
  return query;
}

// --- answering ---------------------------------------------------------------------------------

/** A request, as the router needs it. */
export interface RouterRequest {
  readonly method: string;
  readonly url: string;
  readonly headers: IncomingHttpHeaders;
  readonly body: Buffer;
}

/** What to send back, and what happened. */
export interface Answer {
  readonly status: number;
  readonly headers: Record<string, string>;
  readonly body: string | undefined;
  /** The matched endpoint. */
  readonly endpoint: string | undefined;
  /** Validated handler input, when validation got that far. */
  readonly params: unknown;
  /** Validated body, when validation got that far. */
  readonly requestBody: unknown;
  /** A broken handler: its response violates the schema, it threw, or it is missing. */
  readonly error: Error | undefined;
}

/** Issues as JSON: `{ message, path: ['id'] }`. */
export function issuesToJson(issues: readonly ValidationIssue[]): Array<{ message: string; path?: string[] }> {
  return issues.map((issue) => {
    const path = issue.path?.map((part) => String(typeof part === 'object' ? part.key : part));
    return path === undefined || path.length === 0 ? { message: issue.message } : { message: issue.message, path };
  });
}

const jsonHeaders = (body: string) => ({
  'content-type': 'application/json',
  'content-length': String(Buffer.byteLength(body)),
});

function json(
  status: number,
  value: unknown,
  extra: Partial<Omit<Answer, 'status' | 'headers' | 'body'>> = {},
  headers: Record<string, string> = {},
): Answer {
  const body = JSON.stringify(value);
  return {
    status,
    headers: { ...jsonHeaders(body), ...headers },
    body,
    endpoint: extra.endpoint,
    params: extra.params,
    requestBody: extra.requestBody,
    error: extra.error,
  };
}

/** Everything `answer()` needs besides the request. */
export interface AnswerContext {
  readonly handlers: AnyHandlers;
  readonly instance: string;
  readonly index: number;
  readonly deadline: Deadline | undefined;
  readonly signal: () => AbortSignal;
}

/**
 * Answers one request: 404/405 when nothing matches, 400 with the schema's issues for bad
 * params, query or body, 501 without a handler, the handler's `httpError` status, 500 (with
 * `error` set) when the handler throws or its response violates the response schema, else
 * 200 with the JSON response (204 when the handler returns `undefined`).
 */
export async function answer(router: Router, request: RouterRequest, context: AnswerContext): Promise<Answer> {
  const service = router.definition.name;
  const queryAt = request.url.indexOf('?');
  const pathname = queryAt === -1 ? request.url : request.url.slice(0, queryAt);
  const search = queryAt === -1 ? '' : request.url.slice(queryAt + 1);
  const match = router.match(request.method, pathname);
  if (match.kind === 'not-found') {
    return json(404, { error: 'NOT_FOUND', message: `${service}: no endpoint for ${request.method} ${pathname}` });
  }
  if (match.kind === 'method-not-allowed') {
    return json(
      405,
      { error: 'METHOD_NOT_ALLOWED', message: `${service}: ${pathname} takes ${match.allow.join(', ')}` },
      {},
      { allow: match.allow.join(', ') },
    );
  }
  const { route } = match;
  const endpoint = route.name;
  const invalid = (part: ValidationError['part'], issues: readonly ValidationIssue[], extra = {}) =>
    json(
      400,
      {
        error: ErrorCode.INVALID_REQUEST,
        service,
        endpoint,
        part,
        message: `${service}.${endpoint}: invalid ${part}: ${formatIssues(issues)}`,
        issues: issuesToJson(issues),
      },
      { endpoint, ...extra },
    );
  if (match.kind === 'bad-path') return invalid('params', match.issues);

  const definition = route.endpoint;
  let params: unknown;
  if (definition.params !== undefined) {
    const checked = await validateStrings(definition.params, match.params ?? {});
    if (checked.issues !== undefined) return invalid('params', checked.issues);
    params = checked.value;
  }
  let query: unknown;
  if (definition.query !== undefined) {
    const checked = await validateStrings(definition.query, parseQuery(search));
    if (checked.issues !== undefined) return invalid('query', checked.issues);
    query = checked.value;
  }
  const input =
    definition.params === undefined && definition.query === undefined
      ? {}
      : definition.query === undefined
        ? params
        : definition.params === undefined
          ? query
          : { ...(params as object), ...(query as object) };
  let body: unknown;
  if (definition.body === 'raw') {
    // A raw body reaches the handler as the bytes that were sent.
    body = request.body;
  } else if (definition.body !== undefined) {
    let decoded: unknown;
    if (request.body.length > 0) {
      try {
        decoded = JSON.parse(request.body.toString('utf8'));
      } catch {
        return invalid('body', [{ message: 'not valid JSON' }], { params: input });
      }
    }
    const checked = await check(definition.body, decoded);
    if (checked.issues !== undefined) return invalid('body', checked.issues, { params: input });
    body = checked.value;
  }
  const recorded = { endpoint, params: input, requestBody: body };
  const handler = context.handlers[endpoint];
  if (handler === undefined) {
    const error = new TelescopeError(
      ErrorCode.HTTP_STATUS,
      `${service}.${endpoint} was called, but has no handler (answered 501)`,
      { service, endpoint },
    );
    return json(501, { error: 'NOT_IMPLEMENTED', service, endpoint, message: error.message }, { ...recorded, error });
  }
  let result: unknown;
  try {
    result = await handler(input, body, {
      service,
      endpoint,
      method: request.method,
      url: request.url,
      headers: request.headers,
      instance: context.instance,
      index: context.index,
      deadline: context.deadline,
      get signal() {
        return context.signal();
      },
    });
  } catch (thrown) {
    if (isHttpErrorResponse(thrown)) {
      if (typeof thrown.body === 'string' || Buffer.isBuffer(thrown.body)) {
        const text = String(thrown.body);
        return {
          status: thrown.status,
          headers: {
            'content-type': 'text/plain; charset=utf-8',
            'content-length': String(Buffer.byteLength(text)),
            ...thrown.headers,
          },
          body: text,
          ...recorded,
          error: undefined,
        };
      }
      return json(thrown.status, thrown.body, recorded, thrown.headers);
    }
    const error = thrown instanceof Error ? thrown : new Error(String(thrown));
    return json(
      500,
      { error: 'HANDLER_ERROR', service, endpoint, message: `${service}.${endpoint}: handler threw: ${error.message}` },
      { ...recorded, error },
    );
  }
  // Check what the client will see: the response after a JSON round trip (a Date becomes a
  // string, undefined keys vanish), so a handler cannot pass here and fail on the client.
  let text: string | undefined;
  try {
    text = JSON.stringify(result);
  } catch (cause) {
    const error = new TelescopeError(
      ErrorCode.INVALID_RESPONSE,
      `${service}.${endpoint}: handler returned a response that is not JSON-serializable: ${(cause as Error).message}`,
      { service, endpoint, cause },
    );
    return json(
      500,
      { error: ErrorCode.INVALID_RESPONSE, service, endpoint, message: error.message },
      {
        ...recorded,
        error,
      },
    );
  }
  if (definition.response !== undefined) {
    const checked = await check(definition.response, text === undefined ? undefined : JSON.parse(text));
    if (checked.issues !== undefined) {
      const error = new ValidationError(ErrorCode.INVALID_RESPONSE, 'response', checked.issues, { service, endpoint });
      error.message = `${service}.${endpoint}: handler returned a response that violates the response schema: ${formatIssues(checked.issues)}`;
      return json(
        500,
        {
          error: ErrorCode.INVALID_RESPONSE,
          service,
          endpoint,
          message: error.message,
          issues: issuesToJson(checked.issues),
        },
        { ...recorded, error },
      );
    }
  }
  if (text === undefined) return { status: 204, headers: {}, body: undefined, ...recorded, error: undefined };
  return { status: 200, headers: jsonHeaders(text), body: text, ...recorded, error: undefined };
}
