/**
 * `httpError(status, body?)`: what a fake or instance handler throws to answer a given status
 * instead of its endpoint's response. The body is not checked against the response schema.
 */
import { STATUS_CODES } from 'node:http';
import { invalidOption } from '../core/errors.js';

const brand: unique symbol = Symbol.for('telescope.testing.httpError') as never;

/** Options of {@link httpError}. */
export interface HttpErrorOptions {
  /** Response headers, e.g. `{ 'retry-after': '1' }`. */
  headers?: Record<string, string>;
}

/** Thrown by a handler (see {@link httpError}); answered with `status`, `body` and `headers`. */
export class HttpErrorResponse extends Error {
  override name = 'HttpErrorResponse';
  readonly status: number;
  /** `undefined` answers `{ error: <reason phrase> }`; a string is sent as text, anything else as JSON. */
  readonly body: unknown;
  readonly headers: Readonly<Record<string, string>>;
  declare readonly [brand]: true;

  constructor(status: number, body: unknown, options: HttpErrorOptions = {}) {
    super(`HTTP ${status}`);
    this.status = status;
    this.body = body;
    this.headers = { ...options.headers };
  }
}
Object.defineProperty(HttpErrorResponse.prototype, brand, { value: true });

/** True for the result of {@link httpError}, from this copy of telescope or another. */
export function isHttpErrorResponse(value: unknown): value is HttpErrorResponse {
  return typeof value === 'object' && value !== null && (value as { [brand]?: unknown })[brand] === true;
}

/**
 * Builds the error a handler throws to answer `status` (200 to 599).
 *
 * @example
 * getMovie: ({ id }) => { if (id === 404) throw httpError(404, { error: 'no such movie' }); return movie(id); }
 * throw httpError(429, undefined, { headers: { 'retry-after': '1' } });
 */
export function httpError(status: number, body?: unknown, options?: HttpErrorOptions): HttpErrorResponse {
  if (!(Number.isInteger(status) && status >= 200 && status <= 599)) {
    invalidOption('httpError status', 'an integer from 200 to 599', status);
  }
  for (const [name, value] of Object.entries(options?.headers ?? {})) {
    if (typeof value !== 'string' || /[\r\n]/.test(value)) {
      invalidOption(`httpError header ${name}`, 'a string without CR or LF', value);
    }
  }
  return new HttpErrorResponse(status, body === undefined ? { error: STATUS_CODES[status] ?? 'error' } : body, options);
}
