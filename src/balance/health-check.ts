/**
 * Active health checks (opt-in): a GET of `path` on every instance, every `intervalMs`
 * (jittered), through the client's own transport. A check passes on a 2xx answer within
 * `timeoutMs`; anything else (a hang, a refused connection, garbage, a redirect, a body over
 * the transport's size bound) fails it. Results go to {@link InstanceSet.recordCheck}.
 */
import { type Call, CallContext, callNext } from '../core/call.js';
import type { Clock, TimerHandle } from '../core/clock.js';
import { invalidOption } from '../core/errors.js';
import type { InstanceSet, InstanceState } from './instances.js';

/** Active health check settings. */
export interface HealthCheckOptions {
  /** Path (and query) checked on every instance, e.g. `/healthz`. Answers 2xx when healthy. */
  path: string;
  /** Time between checks of an instance (±10% jitter). @default 5000 */
  intervalMs?: number;
  /** A check not answered within this fails. @default 1000 */
  timeoutMs?: number;
  /** Failed checks in a row that take an instance out of rotation. @default 3 */
  unhealthyThreshold?: number;
  /** Passed checks in a row that bring it back (and end an outage ejection early). @default 2 */
  healthyThreshold?: number;
}

export const healthCheckDefaults = {
  intervalMs: 5000,
  timeoutMs: 1000,
  unhealthyThreshold: 3,
  healthyThreshold: 2,
} as const;

/** Resolved settings. */
export type ResolvedHealthCheck = Required<HealthCheckOptions>;

/** Checks the options; throws `INVALID_OPTION` naming the bad one. */
export function resolveHealthCheck(options: HealthCheckOptions): ResolvedHealthCheck {
  if (typeof options !== 'object' || options === null) invalidOption('healthCheck', 'an object or false', options);
  const path = options.path;
  if (typeof path !== 'string' || !path.startsWith('/') || !/^[\x21-\x7e]*$/.test(path) || path.startsWith('//')) {
    invalidOption('healthCheck.path', "a path starting with '/' (no spaces or control characters)", path);
  }
  const resolved: ResolvedHealthCheck = {
    path,
    intervalMs: options.intervalMs ?? healthCheckDefaults.intervalMs,
    timeoutMs: options.timeoutMs ?? healthCheckDefaults.timeoutMs,
    unhealthyThreshold: options.unhealthyThreshold ?? healthCheckDefaults.unhealthyThreshold,
    healthyThreshold: options.healthyThreshold ?? healthCheckDefaults.healthyThreshold,
  };
  if (!(Number.isFinite(resolved.intervalMs) && resolved.intervalMs >= 100)) {
    invalidOption('healthCheck.intervalMs', 'a finite number ≥ 100', resolved.intervalMs);
  }
  if (!(Number.isFinite(resolved.timeoutMs) && resolved.timeoutMs > 0 && resolved.timeoutMs <= resolved.intervalMs)) {
    invalidOption(
      'healthCheck.timeoutMs',
      `a positive number ≤ intervalMs (${resolved.intervalMs})`,
      resolved.timeoutMs,
    );
  }
  for (const name of ['unhealthyThreshold', 'healthyThreshold'] as const) {
    const value = resolved[name];
    if (!(Number.isInteger(value) && value >= 1 && value <= 100)) {
      invalidOption(`healthCheck.${name}`, 'an integer in [1, 100]', value);
    }
  }
  return resolved;
}

/**
 * Starts checking the instances of `instances` through `call` (one transport attempt per
 * check, bounded by `timeoutMs` and the transport's body limit). One timer for the set;
 * instances are checked at jittered moments inside each interval, so checks from many
 * clients do not arrive together. Returns the function that stops it: no timer survives it,
 * and checks in flight are ignored when they settle.
 */
export function startHealthChecks(
  instances: InstanceSet,
  call: Call,
  options: ResolvedHealthCheck & { service: string; clock: Clock; random: () => number },
): () => void {
  const { clock, random, path, timeoutMs, intervalMs } = options;
  const inFlight = new Set<InstanceState>();
  /** Next check time per instance; instances join with a random offset inside one interval. */
  const due = new Map<InstanceState, number>();
  let timer: TimerHandle | undefined;
  let stopped = false;

  const check = (state: InstanceState) => {
    inFlight.add(state);
    const context = new CallContext({
      service: options.service,
      endpoint: 'health-check',
      idempotent: true,
      clock,
      timeoutMs,
    });
    context.instance = state.instance;
    context.attemptExpiresAt = clock.now() + timeoutMs;
    const request = { method: 'GET', path, headers: { 'accept-encoding': 'identity' }, body: undefined };
    callNext(call, request, context).then(
      (response) =>
        done(state, (response as { status: number }).status >= 200 && (response as { status: number }).status < 300),
      () => done(state, false),
    );
  };
  const done = (state: InstanceState, passed: boolean) => {
    inFlight.delete(state);
    if (stopped) return;
    instances.recordCheck(state, passed);
  };
  const tick = () => {
    timer = undefined;
    if (stopped) return;
    const now = clock.now();
    const current = new Set(instances.instances);
    for (const state of due.keys()) if (!current.has(state)) due.delete(state);
    let next = Number.POSITIVE_INFINITY;
    for (const state of current) {
      let at = due.get(state);
      if (at === undefined) {
        at = now + random() * intervalMs;
        due.set(state, at);
      }
      if (at <= now) {
        if (!inFlight.has(state)) check(state);
        at = now + intervalMs * (0.9 + 0.2 * random());
        due.set(state, at);
      }
      if (at < next) next = at;
    }
    // Instances that discovery adds are picked up within one interval.
    const wake = Math.min(next, now + intervalMs);
    timer = clock.setTimeout(tick, Math.max(1, wake - now));
  };
  timer = clock.setTimeout(tick, 0);
  return () => {
    stopped = true;
    if (timer !== undefined) clock.clearTimeout(timer);
    timer = undefined;
  };
}
