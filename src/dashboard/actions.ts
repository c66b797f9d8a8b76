/**
 * Dashboard actions: `POST actions` with `{ service, endpoint?, operation, options? }` runs an
 * operator operation on every local client of that service. Operations dispatch to methods
 * the client has: `breaker.forceOpen`, `breaker.forceClosed` and `breaker.reset` on
 * `client.circuit(endpoint)`, `configure` on `client.configure(options)`. A client without the
 * method answers 501; the options are validated by the client (`INVALID_OPTION` → 400).
 */
import { isTelescopeError } from '../core/errors.js';
import type { ClientStats } from '../observe/stats.js';

/** The operations an action may name. */
export const dashboardOperations = ['breaker.forceOpen', 'breaker.forceClosed', 'breaker.reset', 'configure'] as const;
export type DashboardOperation = (typeof dashboardOperations)[number];

/** An endpoint's circuit as the dashboard drives it (what `client.circuit(endpoint)` returns). */
export interface OperatorCircuit {
  forceOpen(): void;
  forceClosed(): void;
  reset(): void;
}

/**
 * What the dashboard calls on a client. Only `stats()` is required: a client without
 * `circuit()` or `configure()` answers those actions with 501.
 */
export interface DashboardClient {
  stats(): ClientStats;
  /** The operator controls of an endpoint's circuit. */
  circuit?(endpoint: string): OperatorCircuit;
  /** Changes options of the live client (validated; nothing changes when a value is invalid). */
  configure?(options: Record<string, unknown>): unknown;
}

/** An action, as posted. */
export interface DashboardAction {
  service: string;
  endpoint?: string;
  operation: DashboardOperation;
  /** `configure`'s partial options. */
  options?: Record<string, unknown>;
}

/** What an action did: HTTP status and the JSON answered. */
export interface ActionResult {
  status: number;
  body: Record<string, unknown>;
}

const isObject = (value: unknown): value is Record<string, unknown> =>
  typeof value === 'object' && value !== null && !Array.isArray(value);

/** The action in a request body, or a message saying what is wrong with it. */
export function parseAction(value: unknown): DashboardAction | string {
  if (!isObject(value)) return 'the body must be a JSON object';
  const { service, endpoint, operation, options } = value;
  if (typeof service !== 'string' || service === '') return 'service: a service name';
  if (endpoint !== undefined && (typeof endpoint !== 'string' || endpoint === '')) return 'endpoint: an endpoint name';
  if (!dashboardOperations.includes(operation as DashboardOperation)) {
    return `operation: one of ${dashboardOperations.join(', ')}`;
  }
  if (operation === 'configure') {
    if (!isObject(options)) return 'options: an object of client options (configure)';
  } else if (endpoint === undefined) {
    return `endpoint: required by ${String(operation)}`;
  }
  return {
    service,
    ...(endpoint === undefined ? {} : { endpoint }),
    operation: operation as DashboardOperation,
    ...(isObject(options) ? { options } : {}),
  };
}

/** Runs an action on every client of its service. */
export function runAction(clients: readonly DashboardClient[], action: DashboardAction): ActionResult {
  const targets = clients.filter((client) => safeService(client) === action.service);
  if (targets.length === 0) return { status: 404, body: { error: `no client of service ${action.service}` } };
  try {
    for (const client of targets) {
      if (action.operation === 'configure') {
        if (typeof client.configure !== 'function') return unsupported(action);
        client.configure(action.options ?? {});
        continue;
      }
      const endpoint = action.endpoint as string;
      if (!(endpoint in client.stats().endpoints)) {
        return { status: 404, body: { error: `no endpoint ${endpoint} in service ${action.service}` } };
      }
      if (typeof client.circuit !== 'function') return unsupported(action);
      const circuit = client.circuit(endpoint);
      if (action.operation === 'breaker.forceOpen') circuit.forceOpen();
      else if (action.operation === 'breaker.forceClosed') circuit.forceClosed();
      else circuit.reset();
    }
  } catch (error) {
    // The client's own validation (INVALID_OPTION, a circuit-less endpoint): the caller's mistake.
    if (isTelescopeError(error)) return { status: 400, body: { error: error.message, code: error.code } };
    return { status: 500, body: { error: 'the action failed' } };
  }
  return { status: 200, body: { ok: true, ...action, options: undefined, clients: targets.length } };
}

function unsupported(action: DashboardAction): ActionResult {
  return { status: 501, body: { error: `${action.operation} is not supported by the ${action.service} client` } };
}

function safeService(client: DashboardClient): string | undefined {
  try {
    return client.stats().service;
  } catch {
    return undefined;
  }
}

const secretKey = /authorization|cookie|token|secret|password|passwd|api[-_]?key|credential/i;

/** A copy of action options fit for logs: header values and secret-looking keys redacted. */
export function redactOptions(value: unknown, depth = 0): unknown {
  if (depth > 6) return '[…]';
  if (Array.isArray(value)) return value.map((item) => redactOptions(item, depth + 1));
  if (!isObject(value)) return value;
  const copy: Record<string, unknown> = {};
  for (const [key, item] of Object.entries(value)) {
    if (key.toLowerCase() === 'headers' && isObject(item)) {
      copy[key] = Object.fromEntries(Object.keys(item).map((name) => [name, '[redacted]']));
    } else {
      copy[key] = secretKey.test(key) ? '[redacted]' : redactOptions(item, depth + 1);
    }
  }
  return copy;
}
