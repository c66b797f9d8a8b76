/**
 * Balance layer: client-side load balancing over a service's instances. Power of two choices
 * on attempts in flight (optionally weighted by peak-EWMA latency) or round-robin, weights,
 * slow start, zone preference with spillover, version routing, outlier ejection and active
 * health checks.
 *
 * Order: below retry (each retry picks again, another instance), above attempt and transport.
 */
import type { Instance, Layer } from '../core/call.js';
import { ErrorCode, invalidOption, TelescopeError } from '../core/errors.js';
import { type InstanceSet, outcomeOf } from './instances.js';

export { type HealthCheckOptions, healthCheckDefaults, startHealthChecks } from './health-check.js';
export {
  type BalancerName,
  type InstanceEvent,
  InstanceSet,
  type InstanceSetOptions,
  InstanceState,
  isInstanceFailure,
  outcomeOf,
} from './instances.js';
export { latencyDecayMs } from './latency.js';
export { type EjectionReason, type OutlierOptions, outlierDefaults } from './outlier.js';

/** An instance as callers write it: a URL, or a URL with routing metadata. */
export type InstanceInput = string | { url: string; zone?: string; version?: string; weight?: number };

/**
 * Instances {@link parseInstances} made. Given to it again, one is taken as it is: the clients
 * of one instance list can share its (read-only) instances, which a fleet of clients (the storm
 * simulator's thousands) reads far more often than it parses.
 */
const parsedInstances = new WeakSet<Instance>();

/**
 * Parses and checks instance inputs: http(s) origins without path, query or credentials. An
 * instance this function returned before is kept as it is (checked again for duplicates only).
 */
export function parseInstances(inputs: readonly InstanceInput[]): Instance[] {
  if (!Array.isArray(inputs) || inputs.length === 0) {
    invalidOption('instances', 'a non-empty array of URLs', inputs);
  }
  const seen = new Set<string>();
  return inputs.map((input, index) => {
    // WeakSet.has is false for a string: only the objects made below are taken as they are.
    const instance = parsedInstances.has(input as Instance) ? (input as Instance) : parseInstance(input, index);
    if (seen.has(instance.url)) {
      invalidOption(`instances[${index}]`, 'not a duplicate', shown(typeof input === 'string' ? input : input.url));
    }
    seen.add(instance.url);
    return instance;
  });
}

/** One instance input, checked; the instance is remembered as made here. */
function parseInstance(input: InstanceInput, index: number): Instance {
  const raw = typeof input === 'string' ? input : input?.url;
  const origin = typeof raw === 'string' && isCanonicalOrigin(raw) ? raw : parsedOrigin(raw, index);
  const weight = typeof input === 'string' ? 1 : (input.weight ?? 1);
  if (!(Number.isFinite(weight) && weight > 0))
    invalidOption(`instances[${index}].weight`, 'a positive number', weight);
  const instance: Instance = {
    url: origin,
    zone: typeof input === 'string' ? undefined : input.zone,
    version: typeof input === 'string' ? undefined : input.version,
    weight,
  };
  parsedInstances.add(instance);
  return instance;
}

/** The origin of an instance URL, checked by the URL parser (throws INVALID_OPTION). */
function parsedOrigin(raw: unknown, index: number): string {
  let url: URL;
  try {
    url = new URL(String(raw));
  } catch {
    return invalidOption(`instances[${index}]`, 'an absolute http(s) URL', shown(raw));
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    invalidOption(`instances[${index}]`, 'an http: or https: URL', shown(raw));
  }
  if ((url.pathname !== '/' && url.pathname !== '') || url.search || url.hash || url.username || url.password) {
    invalidOption(`instances[${index}]`, 'an origin without path, query or credentials', shown(raw));
  }
  return url.origin;
}

/**
 * `scheme://host[:port]` that the URL parser would return unchanged as its origin: lower-case
 * ASCII host names whose last label starts with a letter (so not an IPv4 number) and no
 * punycode label, or a dotted-decimal IPv4 address without leading zeros; a port without
 * leading zeros that is not the scheme's default. Anything else goes through `new URL()`.
 * Parsing the same origins through `URL` for every client of a large fleet dominated setup.
 */
const canonicalOrigin =
  /^(https?):\/\/(?:((?:[a-z0-9-]+\.)*[a-z][a-z0-9-]*)|((?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)))(?::([1-9]\d{0,4}))?$/;

function isCanonicalOrigin(raw: string): boolean {
  const match = canonicalOrigin.exec(raw);
  if (match === null) return false;
  const [, scheme, name, , port] = match;
  if (name !== undefined && (name.startsWith('xn--') || name.includes('.xn--'))) return false;
  if (port !== undefined) {
    const number = Number(port);
    if (number > 65535 || number === (scheme === 'http' ? 80 : 443)) return false;
  }
  return true;
}

/** Errors and logs show the URL without any credentials it carries. */
function shown(raw: unknown): unknown {
  return typeof raw === 'string' ? withoutCredentials(raw) : raw;
}

/** `scheme://user:pass@host` → `scheme://[credentials removed]@host`. */
function withoutCredentials(url: string): string {
  return url.replace(/(\/\/)[^/?#@]*@/, '$1[credentials removed]@');
}

/**
 * The balance layer: picks an instance from `instances` for every attempt (each retry picks
 * again, skipping instances already tried), counts attempts in flight per instance, and
 * feeds outcomes to outlier ejection.
 *
 * @example
 * const set = new InstanceSet({ clock: systemClock });
 * set.update(parseInstances(['http://10.0.0.1:80', 'http://10.0.0.2:80']));
 * compose(retry(), balance(set), attempt())(transport().call)
 */
export function balance(instances: InstanceSet): Layer {
  return (next) => (request, context) => {
    const state = instances.pick(context);
    if (state === undefined) {
      const version = context.route?.version;
      return Promise.reject(
        new TelescopeError(
          ErrorCode.NO_HEALTHY_INSTANCE,
          version === undefined
            ? `${context.service}: no instances`
            : `${context.service}: no instance of version ${JSON.stringify(version)}`,
          { service: context.service, endpoint: context.endpoint, attempt: context.attempt, requestSent: false },
        ),
      );
    }
    context.instance = state.instance;
    state.outstanding++;
    const startedAt = instances.pickedAt;
    return next(request, context).then(
      (response) => {
        instances.record(state, 'success', startedAt);
        return response;
      },
      (error: unknown) => {
        instances.record(state, outcomeOf(error), startedAt);
        if ((error as { retryAfterMs?: number }).retryAfterMs !== undefined) {
          context.anotherInstanceFree = instances.hasAnotherUsable(context, state);
        }
        throw error;
      },
    );
  };
}
