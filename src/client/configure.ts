/**
 * What `client.configure()` may change on a live client, and how a partial change is merged
 * over the settings in force. The client checks the merged settings exactly as
 * `createClient` does and puts them in force only when every value passed.
 */

import type { OutlierOptions } from '../balance/index.js';
import type { BreakerOptions } from '../breaker/index.js';
import type { AdaptiveBulkheadOptions, BulkheadOptions } from '../bulkhead/index.js';
import { invalidOption } from '../core/errors.js';
import type { HedgeOptions, RetryOptions } from '../retry/index.js';
import type { ThrottleOptions } from '../throttle/index.js';

/**
 * The settings of a live client that `client.configure()` changes: timeouts, retry, hedging,
 * the breaker, the throttle, the bulkhead (static or adaptive) and outlier ejection. Objects
 * are merged over the settings in force (`{ retry: { maxRetries: 2 } }` keeps the retry
 * budget); a key given as `undefined` inside an object goes back to its default; `false`
 * turns a layer off and an object turns it back on.
 */
export interface ClientConfiguration {
  timeoutMs?: number;
  attemptTimeoutMs?: number | undefined;
  reserveMs?: number;
  minAttemptMs?: number;
  retry?: RetryOptions | false;
  hedge?: HedgeOptions | false;
  breaker?: BreakerOptions | false;
  throttle?: ThrottleOptions | false;
  bulkhead?: AdaptiveBulkheadOptions | BulkheadOptions | false;
  outlier?: OutlierOptions | false;
}

/** The keys of {@link ClientConfiguration}, in the order they are reported. */
export const configurableKeys = [
  'timeoutMs',
  'attemptTimeoutMs',
  'reserveMs',
  'minAttemptMs',
  'retry',
  'hedge',
  'breaker',
  'throttle',
  'bulkhead',
  'outlier',
] as const satisfies ReadonlyArray<keyof ClientConfiguration>;

const configurable: ReadonlySet<string> = new Set(configurableKeys);

function isPlainObject(value: unknown): value is Record<string, unknown> {
  if (typeof value !== 'object' || value === null) return false;
  const prototype = Object.getPrototypeOf(value);
  return prototype === Object.prototype || prototype === null;
}

/** `change` over `base`: plain objects merge key by key (an `undefined` value removes the key). */
function merge(base: unknown, change: unknown): unknown {
  if (!isPlainObject(change)) return change;
  const merged: Record<string, unknown> = isPlainObject(base) ? { ...base } : {};
  for (const [key, value] of Object.entries(change)) {
    if (value === undefined) delete merged[key];
    else merged[key] = merge(merged[key], value);
  }
  return merged;
}

/**
 * The settings after `change`, and the keys it names. Throws `INVALID_OPTION` for a change
 * that is not an object, an unknown key or a key that cannot change on a live client.
 */
export function mergeConfiguration(
  current: ClientConfiguration,
  change: unknown,
): { next: ClientConfiguration; changed: Array<keyof ClientConfiguration> } {
  if (!isPlainObject(change)) invalidOption('configure() options', 'an object', change);
  const next: Record<string, unknown> = { ...current };
  const changed: Array<keyof ClientConfiguration> = [];
  for (const [key, value] of Object.entries(change)) {
    if (!configurable.has(key)) {
      invalidOption(`configure() option '${key}'`, `one of ${configurableKeys.join(', ')}`, key);
    }
    next[key] =
      key === 'attemptTimeoutMs'
        ? value
        : value === undefined
          ? current[key as keyof ClientConfiguration]
          : merge(current[key as keyof ClientConfiguration], value);
    changed.push(key as keyof ClientConfiguration);
  }
  return { next: next as ClientConfiguration, changed };
}
