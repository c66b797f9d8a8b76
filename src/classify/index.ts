/**
 * Classify layer: what each attempt's answer means (Finagle's ResponseClassifier). A 2xx is a
 * success unless `classify` says otherwise (a 200 carrying an error body becomes a
 * `CLASSIFIED_FAILURE`); a non-2xx stays an `HttpStatusError` for the caller, but whether a
 * retry may fix it comes from `statuses` or `classify`, and an explicit class is recorded on
 * the error (`responseClass`) for the breaker, outlier ejection and stats.
 *
 * Order: below balance (ejection sees the classified outcome), above attempt and transport.
 * Only in the stacks of endpoints (or clients) that configure `retry.statuses` or
 * `retry.classify`: the others do not pay for it.
 */
import type { CallContext, IncomingResponse, Layer } from '../core/call.js';
import {
  ClassifiedFailureError,
  ErrorCode,
  HttpStatusError,
  invalidOption,
  isTelescopeError,
  type ResponseClass,
  ValidationError,
} from '../core/errors.js';

/** What `retry.classify` is given: one attempt's answer. */
export interface ClassifyInput {
  /** The HTTP status of the answer. */
  readonly status: number;
  /** The answer's headers (lower-case names). */
  readonly headers: Readonly<Record<string, string | string[] | undefined>>;
  /**
   * A 2xx answer's decoded body (parsed JSON, text, bytes, or undefined when empty), before
   * the endpoint's response schema; for any other status, the start of the body as text.
   */
  readonly body: unknown;
  /** The error a non-2xx answer is for the caller; undefined for a 2xx. */
  readonly error: HttpStatusError | undefined;
}

/**
 * Judges an answer. Return `undefined` to keep the default: a 2xx is a success, a status in
 * `retry.statuses` (default 429, 502, 503, 504) a retryable failure, any other a failure.
 */
export type Classifier = (result: ClassifyInput) => ResponseClass | undefined;

/** Statuses another attempt may fix, unless `retry.statuses` says otherwise. */
export const defaultRetryableStatuses: readonly number[] = Object.freeze([429, 502, 503, 504]);

const classes: ReadonlySet<unknown> = new Set(['success', 'failure', 'retryable-failure']);

/**
 * The classify layer.
 *
 * @example
 * compose(retry(...), balance(set), classify({ statuses: new Set([503]), classify: (r) => ... }), attempt())
 */
export function classify(options: {
  statuses?: ReadonlySet<number> | undefined;
  classify?: Classifier | undefined;
}): Layer {
  const statuses = options.statuses;
  const classifier = options.classify;

  /** Runs the classifier; a throw or an answer that is not a class becomes a coded failure. */
  const judge = (
    input: ClassifyInput,
    source: { instance: string; attempt: number; service: string; endpoint: string },
  ): ResponseClass | undefined | ValidationError => {
    if (classifier === undefined) return undefined;
    let verdict: unknown;
    try {
      verdict = classifier(input);
    } catch (error) {
      return unusable(`retry.classify threw: ${(error as Error)?.message ?? String(error)}`, source, error);
    }
    if (verdict === undefined || classes.has(verdict)) return verdict as ResponseClass | undefined;
    return unusable(
      `retry.classify must return 'success', 'failure', 'retryable-failure' or undefined, got ${typeof verdict === 'string' ? JSON.stringify(verdict.slice(0, 40)) : typeof verdict}`,
      source,
      undefined,
    );
  };

  const onResponse = (response: IncomingResponse, context: CallContext): IncomingResponse => {
    const source = {
      instance: response.instance,
      attempt: context.attempt,
      service: context.service,
      endpoint: context.endpoint,
    };
    const verdict = judge(
      { status: response.status, headers: response.headers, body: response.body, error: undefined },
      source,
    );
    if (verdict === undefined || verdict === 'success') return response;
    if (verdict instanceof ValidationError) throw verdict;
    throw new ClassifiedFailureError(response.status, response.body, verdict, { ...source, requestSent: true });
  };
  const onError = (error: unknown, context: CallContext): never => {
    if (!(isTelescopeError(error) && error.code === ErrorCode.HTTP_STATUS && error instanceof HttpStatusError)) {
      throw error;
    }
    const status = error.status;
    const verdict = judge(
      { status, headers: error.headers ?? {}, body: error.bodyExcerpt, error },
      {
        instance: error.instance ?? '',
        attempt: context.attempt,
        service: context.service,
        endpoint: context.endpoint,
      },
    );
    if (verdict instanceof ValidationError) throw verdict;
    // The error is this attempt's own, fresh from the transport: set what it means on it.
    const judged = error as { retryable: boolean; responseClass: ResponseClass | undefined };
    if (verdict === undefined) {
      if (statuses !== undefined) judged.retryable = statuses.has(status);
    } else {
      judged.retryable = verdict === 'retryable-failure';
      judged.responseClass = verdict;
    }
    throw error;
  };

  return (next) =>
    classifier === undefined
      ? (request, context) => next(request, context).catch((error: unknown) => onError(error, context))
      : (request, context) =>
          next(request, context).then(
            (response) => onResponse(response, context),
            (error: unknown) => onError(error, context),
          );
}

function unusable(
  message: string,
  source: { instance: string; attempt: number; service: string; endpoint: string },
  cause: unknown,
): ValidationError {
  return new ValidationError(ErrorCode.INVALID_RESPONSE, 'response', [{ message }], {
    ...source,
    requestSent: true,
    cause,
  });
}

/** Checks `retry.statuses`: HTTP statuses a retry may fix (3xx to 5xx), as a set. */
export function parseStatuses(name: string, value: unknown): ReadonlySet<number> | undefined {
  if (value === undefined) return undefined;
  if (!Array.isArray(value)) invalidOption(name, 'an array of HTTP statuses (integers in [300, 599])', value);
  for (const status of value) {
    if (!(Number.isInteger(status) && status >= 300 && status <= 599)) {
      invalidOption(`${name}[]`, 'an HTTP status, an integer in [300, 599]', status);
    }
  }
  return new Set(value as number[]);
}
