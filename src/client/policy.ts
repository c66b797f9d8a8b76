/**
 * Per-endpoint policy: checks an endpoint's own `retry`, `hedge`, `attemptTimeoutMs` and
 * `breaker` (unknown keys included) and merges them over the client's. The client builds one
 * layer stack per endpoint that has a policy; every other endpoint shares the client's stack,
 * so an override costs nothing to the endpoints without one.
 */
import type { BreakerOptions } from '../breaker/index.js';
import { type Classifier, classify, parseStatuses } from '../classify/index.js';
import type { Layer } from '../core/call.js';
import { ErrorCode, invalidOption, isTelescopeError, TelescopeError } from '../core/errors.js';
import type { EndpointRetryOptions, HedgeOptions, RetryOptions } from '../retry/index.js';
import type { EndpointPolicy } from '../service/index.js';

const policyKeys: ReadonlySet<string> = new Set(['retry', 'hedge', 'attemptTimeoutMs', 'breaker']);
const retryKeys: ReadonlySet<string> = new Set(['maxRetries', 'statuses', 'backoff', 'classify']);
const hedgeKeys: ReadonlySet<string> = new Set(['delayMs']);
const breakerKeys: ReadonlySet<string> = new Set([
  'volumeThreshold',
  'errorThresholdPercentage',
  'resetTimeoutMs',
  'rollingWindowMs',
]);

/** An endpoint's settings, resolved against the client's. */
export interface ResolvedPolicy {
  retry: RetryOptions | false;
  hedge: HedgeOptions | false | undefined;
  attemptTimeoutMs: number | undefined;
  /** `undefined`: the client's breaker (shared circuits); `false`: none; options: its own breaker. */
  breaker: BreakerOptions | false | undefined;
  /** Whether the endpoint retries although the client does not (it then needs a retry budget). */
  retriesOnItsOwn: boolean;
}

/**
 * Runs `build` and renames any `INVALID_OPTION` it throws to `endpoints.<name>.<option>`, so
 * the error says which endpoint's setting is wrong.
 */
export function forEndpoint<T>(name: string, build: () => T): T {
  try {
    return build();
  } catch (error) {
    if (isTelescopeError(error) && error.code === ErrorCode.INVALID_OPTION) {
      throw new TelescopeError(ErrorCode.INVALID_OPTION, `endpoints.${name}.${error.message}`, { cause: error });
    }
    throw error;
  }
}

/** Checks an endpoint's policy options and merges them over the client's (throws INVALID_OPTION). */
export function resolvePolicy(
  policy: EndpointPolicy,
  client: {
    retry: RetryOptions | false | undefined;
    hedge: HedgeOptions | false | undefined;
    attemptTimeoutMs: number | undefined;
  },
): ResolvedPolicy {
  checkKeys('', policy, policyKeys, 'retry, hedge, attemptTimeoutMs, breaker');
  const own = policy.retry;
  if (own !== undefined && own !== false) {
    checkObject('retry', own);
    checkKeys('retry.', own, retryKeys, 'maxRetries, statuses, backoff, classify (the retry budget is client-wide)');
  }
  if (policy.hedge !== undefined && policy.hedge !== false) {
    checkObject('hedge', policy.hedge);
    checkKeys('hedge.', policy.hedge, hedgeKeys, 'delayMs');
  }
  if (policy.breaker !== undefined && policy.breaker !== false) {
    checkObject('breaker', policy.breaker);
    checkKeys('breaker.', policy.breaker, breakerKeys, [...breakerKeys].join(', '));
  }
  const attemptTimeoutMs = policy.attemptTimeoutMs ?? client.attemptTimeoutMs;
  if (policy.attemptTimeoutMs !== undefined) {
    const value = policy.attemptTimeoutMs;
    if (!(typeof value === 'number' && value > 0)) invalidOption('attemptTimeoutMs', 'a positive number', value);
  }
  const clientRetry = client.retry === false ? false : (client.retry ?? {});
  let retry: RetryOptions | false;
  if (own === false) retry = false;
  else if (own === undefined) retry = clientRetry;
  else {
    // The endpoint's fields over the client's; the budget stays the client's (shared).
    const { budget: _budget, ...inherited } = clientRetry === false ? {} : clientRetry;
    retry = { ...inherited, ...own };
  }
  return {
    retry,
    hedge: policy.hedge === undefined ? client.hedge : policy.hedge,
    attemptTimeoutMs,
    breaker: policy.breaker,
    retriesOnItsOwn: clientRetry === false && own !== undefined && own !== false,
  };
}

/**
 * The classify layer for `retry.statuses` / `retry.classify`, or undefined when neither is
 * set (the stack then has no classify layer at all).
 */
export function classifyLayerFor(retry: EndpointRetryOptions | false | undefined): Layer | undefined {
  if (retry === undefined || retry === false) return undefined;
  const statuses = parseStatuses('retry.statuses', retry.statuses);
  const classifier: Classifier | undefined = retry.classify;
  if (classifier !== undefined && typeof classifier !== 'function') {
    invalidOption('retry.classify', 'a function (result) => class', classifier);
  }
  if (statuses === undefined && classifier === undefined) return undefined;
  return classify({ statuses, classify: classifier });
}

function checkObject(name: string, value: unknown): void {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    invalidOption(name, 'an object or false', value);
  }
}

function checkKeys(prefix: string, value: object, known: ReadonlySet<string>, expected: string): void {
  for (const key of Object.keys(value)) {
    if (!known.has(key)) invalidOption(`${prefix}${key}`, `a known option (${expected})`, key);
  }
}
