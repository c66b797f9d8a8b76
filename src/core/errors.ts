/**
 * One error hierarchy for every failure telescope reports. Each error has a stable `code`
 * (branch on it, not on messages), says whether a retry could fix it, and which instance and
 * attempt produced it.
 */

/** Stable error codes. The string values are part of the public API. */
export const ErrorCode = {
  /** The TCP/TLS connection could not be established (refused, unreachable, connect timeout). */
  CONNECT_FAILED: 'CONNECT_FAILED',
  /**
   * The TLS handshake failed: the instance's certificate was not trusted (expired, unknown
   * issuer, wrong host name) or the instance refused this client (its certificate, the TLS
   * version). The message carries OpenSSL's reason.
   */
  TLS_FAILED: 'TLS_FAILED',
  /** The connection broke after it was established (reset, closed mid-response). */
  CONNECTION_RESET: 'CONNECTION_RESET',
  /** One attempt ran past its own timeout; the call's deadline may still allow another. */
  ATTEMPT_TIMEOUT: 'ATTEMPT_TIMEOUT',
  /** The call's deadline budget ran out (or was already gone before any I/O). */
  DEADLINE_EXCEEDED: 'DEADLINE_EXCEEDED',
  /** The instance answered with a non-2xx status. */
  HTTP_STATUS: 'HTTP_STATUS',
  /** The response could not be decoded or did not match the endpoint's response schema. */
  INVALID_RESPONSE: 'INVALID_RESPONSE',
  /** The response body was larger than `maxResponseBytes`. */
  RESPONSE_TOO_LARGE: 'RESPONSE_TOO_LARGE',
  /** The call's params, query or body did not match the endpoint's schemas; no I/O was done. */
  INVALID_REQUEST: 'INVALID_REQUEST',
  /** The caller aborted the call through its `signal`. */
  ABORTED: 'ABORTED',
  /** The client was closed before or while the call ran. */
  CLIENT_CLOSED: 'CLIENT_CLOSED',
  /** The endpoint's circuit is open: the call failed fast without I/O. */
  CIRCUIT_OPEN: 'CIRCUIT_OPEN',
  /** The bulkhead is full (and its queue too): the call was shed without I/O. */
  BULKHEAD_FULL: 'BULKHEAD_FULL',
  /** No instance can take the call: none discovered, or none of the requested version. */
  NO_HEALTHY_INSTANCE: 'NO_HEALTHY_INSTANCE',
  /**
   * Client-side adaptive throttling rejected the call locally: the dependency accepted too
   * little of what it was sent in the throttle's window. No request was sent; not retryable.
   */
  THROTTLED: 'THROTTLED',
  /** An option passed to a telescope factory is out of range or of the wrong type. */
  INVALID_OPTION: 'INVALID_OPTION',
  /** More redirects than `redirects.max` in one attempt (only with the `redirects` option). */
  TOO_MANY_REDIRECTS: 'TOO_MANY_REDIRECTS',
  /** A redirect to another origin not in `redirects.allowOrigins`, or from https to http. */
  REDIRECT_REFUSED: 'REDIRECT_REFUSED',
  /** The endpoint's `retry.classify` judged a response a failure (e.g. a 200 carrying an error body). */
  CLASSIFIED_FAILURE: 'CLASSIFIED_FAILURE',
} as const;

export type ErrorCode = (typeof ErrorCode)[keyof typeof ErrorCode];

const brand: unique symbol = Symbol.for('telescope.error') as never;

/** Where an error came from and what else it carries. */
export interface TelescopeErrorOptions {
  retryable?: boolean;
  instance?: string | undefined;
  attempt?: number | undefined;
  service?: string | undefined;
  endpoint?: string | undefined;
  cause?: unknown;
  /** For transport failures: whether any byte of the request may have reached the server. */
  requestSent?: boolean | undefined;
}

/**
 * Base class of every error telescope throws.
 *
 * `instanceof TelescopeError` and {@link isTelescopeError} both work across two copies of
 * the package (brand via `Symbol.for`), as undici does for its errors.
 */
export class TelescopeError extends Error {
  override name = 'TelescopeError';
  readonly code: ErrorCode;
  /** Whether another attempt (on another instance) could succeed. */
  readonly retryable: boolean;
  /** Origin of the instance that produced the error, when one was involved. */
  instance: string | undefined;
  /** 1-based number of the attempt that produced the error. */
  attempt: number | undefined;
  service: string | undefined;
  endpoint: string | undefined;
  /**
   * For transport failures: `false` when the request certainly never left this process (so
   * even a non-idempotent call can be retried safely), `true` when it may have.
   */
  readonly requestSent: boolean | undefined;
  /** True when a retry would have been made but the client's retry budget was spent. */
  retryBudgetExhausted: boolean | undefined;
  /**
   * How the endpoint's response classification (`retry.classify`, `retry.statuses`) judged
   * the answer behind this error, when it did: retry, breaker, outlier ejection and stats
   * follow it (a `'success'` here is a healthy answer the caller still gets as an error).
   */
  responseClass: ResponseClass | undefined;
  declare readonly [brand]: true;

  constructor(code: ErrorCode, message: string, options: TelescopeErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.code = code;
    this.retryable = options.retryable ?? false;
    this.instance = options.instance;
    this.attempt = options.attempt;
    this.service = options.service;
    this.endpoint = options.endpoint;
    this.requestSent = options.requestSent;
    this.retryBudgetExhausted = undefined;
    this.responseClass = undefined;
  }

  static override [Symbol.hasInstance](value: unknown): boolean {
    // Subclasses keep ordinary prototype checks; the base class accepts any branded error.
    // biome-ignore lint/complexity/noThisInStatic: `this` is the class instanceof was called on.
    if (this !== TelescopeError) return Function.prototype[Symbol.hasInstance].call(this, value);
    return isTelescopeError(value);
  }
}
Object.defineProperty(TelescopeError.prototype, brand, { value: true });

/** True for any error thrown by telescope, from this copy of the package or another. */
export function isTelescopeError(value: unknown): value is TelescopeError {
  return typeof value === 'object' && value !== null && (value as { [brand]?: unknown })[brand] === true;
}

/**
 * What an answer means, as Finagle's ResponseClassifier says it: a success, a failure a retry
 * cannot fix, or a failure another attempt (on another instance) may fix.
 */
export type ResponseClass = 'success' | 'failure' | 'retryable-failure';

/** Longest body excerpt kept on an {@link HttpStatusError}. */
export const BODY_EXCERPT_BYTES = 1024;

/**
 * A non-2xx response. `retryable` for 502, 503, 504 and 429. A 3xx is one too: redirects are
 * followed only with the client's `redirects` option.
 */
export class HttpStatusError extends TelescopeError {
  override name = 'HttpStatusError';
  readonly status: number;
  /** Up to {@link BODY_EXCERPT_BYTES} of the response body, decoded as UTF-8. */
  readonly bodyExcerpt: string;
  /** Milliseconds from a `Retry-After` header, when the server sent one that parses. */
  readonly retryAfterMs: number | undefined;
  /** The `Location` header of a 3xx answer. */
  readonly location: string | undefined;
  /** The answer's headers (not enumerable: kept out of logs and JSON). */
  declare readonly headers: Readonly<Record<string, string | string[] | undefined>> | undefined;

  constructor(
    status: number,
    bodyExcerpt: string,
    retryAfterMs: number | undefined,
    options: TelescopeErrorOptions = {},
    location?: string,
  ) {
    const redirect =
      location === undefined ? '' : ` → ${oneLine(location, 200)} (not followed: see the client's redirects option)`;
    super(ErrorCode.HTTP_STATUS, `HTTP ${status}${redirect}${bodyExcerpt ? `: ${oneLine(bodyExcerpt, 200)}` : ''}`, {
      retryable: status === 502 || status === 503 || status === 504 || status === 429,
      ...options,
    });
    this.status = status;
    this.bodyExcerpt = bodyExcerpt;
    this.retryAfterMs = retryAfterMs;
    this.location = location;
  }
}

/**
 * A 2xx answer that the endpoint's `retry.classify` judged a failure (`CLASSIFIED_FAILURE`):
 * a 200 carrying an error body, say. `retryable` when it was classified `'retryable-failure'`.
 */
export class ClassifiedFailureError extends TelescopeError {
  override name = 'ClassifiedFailureError';
  readonly status: number;
  /** The decoded body the classifier judged. */
  readonly body: unknown;

  constructor(status: number, body: unknown, responseClass: ResponseClass, options: TelescopeErrorOptions = {}) {
    super(ErrorCode.CLASSIFIED_FAILURE, `HTTP ${status} classified as ${responseClass} by retry.classify`, {
      ...options,
      retryable: responseClass === 'retryable-failure',
    });
    this.status = status;
    this.body = body;
    this.responseClass = responseClass;
  }
}

/** One problem reported by a schema (Standard Schema issue shape). */
export interface ValidationIssue {
  readonly message: string;
  readonly path?: ReadonlyArray<PropertyKey | { readonly key: PropertyKey }> | undefined;
}

/**
 * Params, query or body that fail their schema (`INVALID_REQUEST`, before any I/O), or a
 * response that fails to decode or match its schema (`INVALID_RESPONSE`, never retried).
 * Kept apart from {@link HttpStatusError} on purpose: the server answered, the data is wrong.
 */
export class ValidationError extends TelescopeError {
  override name = 'ValidationError';
  /** What was validated: `params`, `query`, `body` or `response`. */
  readonly part: 'params' | 'query' | 'body' | 'response';
  readonly issues: readonly ValidationIssue[];

  constructor(
    code: typeof ErrorCode.INVALID_REQUEST | typeof ErrorCode.INVALID_RESPONSE,
    part: ValidationError['part'],
    issues: readonly ValidationIssue[],
    options: TelescopeErrorOptions = {},
  ) {
    const where = options.endpoint ? `${options.service}.${options.endpoint}` : 'call';
    super(code, `${where}: invalid ${part}: ${formatIssues(issues)}`, options);
    this.part = part;
    this.issues = issues;
  }
}

/** Formats schema issues as `path: message; path: message`. */
export function formatIssues(issues: readonly ValidationIssue[]): string {
  if (issues.length === 0) return 'rejected by schema';
  return issues
    .slice(0, 5)
    .map((issue) => {
      const path = issue.path?.map((part) => String(typeof part === 'object' ? part.key : part)).join('.');
      return path ? `${path}: ${issue.message}` : issue.message;
    })
    .join('; ')
    .concat(issues.length > 5 ? `; and ${issues.length - 5} more` : '');
}

/** Throws `INVALID_OPTION` naming the option and the allowed range. */
export function invalidOption(name: string, expected: string, actual: unknown): never {
  throw new TelescopeError(ErrorCode.INVALID_OPTION, `${name} must be ${expected}, got ${describe(actual)}`);
}

function describe(value: unknown): string {
  if (typeof value === 'string') return JSON.stringify(value.length > 60 ? `${value.slice(0, 60)}…` : value);
  if (typeof value === 'number' || typeof value === 'boolean' || value == null) return String(value);
  return typeof value;
}

function oneLine(text: string, max: number): string {
  const flat = text.replace(/\s+/g, ' ').trim();
  return flat.length > max ? `${flat.slice(0, max)}…` : flat;
}
