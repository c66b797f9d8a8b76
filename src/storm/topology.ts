/**
 * A team's own architecture for the storm lab: services (instances, zones, capacity, the
 * calls each makes per request), a fault schedule and the offered load over time, as JSON.
 * `checkTopology` rejects a mistake before anything starts with an `INVALID_OPTION` error
 * whose option name is the JSON path of the bad field (`services.cart.calls[1].service`).
 * See docs/storm-topologies.md.
 */
import { readFileSync } from 'node:fs';
import { ErrorCode, invalidOption, TelescopeError } from '../core/errors.js';

/** A storm-lab topology file. */
export interface StormTopology {
  /** Name of the run (report titles and file names). */
  name: string;
  description?: string;
  /** Services by name. */
  services: Record<string, TopologyService>;
  /** The service the load is offered to. @default the one service no other service calls */
  entry?: string;
  /** Offered load over time: requests per second from `atS`, as steps or linear ramps. */
  load: LoadStep[];
  /** Seconds of load. */
  durationS: number;
  /** Seconds to wait for answers after the load stops. @default 8 */
  drainS?: number;
  /** Faults on a schedule. @default [] */
  faults?: TopologyFault[];
}

/** One service: its instances, what one instance can do, and what it calls per request. */
export interface TopologyService {
  /** Instances (one process each in real mode). */
  instances: number;
  /** Zone of every instance, or one zone per instance (the clients prefer their own zone). */
  zone?: string | string[];
  capacity?: TopologyCapacity;
  /**
   * Milliseconds a request spends in the service after its CPU work and before its calls
   * (its own I/O); `slow` multiplies it. @default 5 for a service that calls nothing, else 0
   */
  latencyMs?: number;
  /** Calls made for every request it serves. @default [] (a leaf) */
  calls?: TopologyCall[];
  /** Whether the calls run one after another (a failure stops the rest) or all at once. @default 'sequence' */
  callMode?: 'sequence' | 'parallel';
}

export interface TopologyCapacity {
  /** Requests one instance processes at once. @default 64 (the entry: 4096) */
  maxConcurrent?: number;
  /** Requests waiting for a slot; beyond it, 503 at once. @default 64 (the entry: 0) */
  maxQueue?: number;
  /** CPU milliseconds of work per request (one request at a time per instance). @default 0.5 */
  workMs?: number;
}

/** One call a service makes per request it serves. */
export interface TopologyCall {
  /** The service called. */
  service: string;
  /** Calls per request. @default 1 */
  times?: number;
  /** Whether the `times` calls run one after another or all at once. @default 'sequence' */
  mode?: 'sequence' | 'parallel';
  /** Named strategy of this call's client. @default the run's strategy */
  strategy?: string;
  /** telescope client settings over the strategy's (strategy `telescope` only). */
  client?: TopologyClientSettings;
  /**
   * A failed call answers with a degraded result (a fallback) instead of failing the request.
   * @default the strategy's choice (telescope: the entry's calls)
   */
  fallback?: boolean;
}

/** The telescope client options a topology may set, as `createClient` takes them. */
export interface TopologyClientSettings {
  timeoutMs?: number;
  attemptTimeoutMs?: number;
  reserveMs?: number;
  minAttemptMs?: number;
  balancer?: 'p2c' | 'p2c-ewma' | 'round-robin';
  retry?: Record<string, unknown> | false;
  hedge?: Record<string, unknown> | false;
  outlier?: Record<string, unknown> | false;
  breaker?: Record<string, unknown> | false;
  bulkhead?: Record<string, unknown> | false;
}

/** Client settings a topology may carry (the rest are the lab's: instances, transport, clock). */
export const topologyClientKeys = [
  'timeoutMs',
  'attemptTimeoutMs',
  'reserveMs',
  'minAttemptMs',
  'balancer',
  'retry',
  'hedge',
  'outlier',
  'breaker',
  'bulkhead',
] as const;

/** Faults a topology can schedule. */
export const topologyFaults = ['hang', 'down', 'slow', 'latency', 'errors', 'fail', 'capacity', 'none'] as const;
export type TopologyFaultKind = (typeof topologyFaults)[number];

/**
 * A fault on a schedule. An instance has one fault at a time: a step replaces the previous
 * one, `none` makes it healthy.
 */
export interface TopologyFault {
  /** Seconds from the start of the load. */
  atS: number;
  service: string;
  /** Instance indexes; every instance of the service when absent. */
  instances?: number[];
  /**
   * hang: accept and never answer; down: refuse connections and break open ones; slow: its
   * latency × `factor`; latency: + `addedMs`; errors: answer 500 to a fraction `errorRate`
   * of requests; capacity: concurrency and queue × `capacityFraction`; none: healthy.
   */
  fault: TopologyFaultKind;
  /** slow: latency multiplier, ≥ 1. @default 10 */
  factor?: number;
  /** latency: milliseconds added to every request. */
  addedMs?: number;
  /** errors: fraction of requests answered 500, in (0, 1]. */
  errorRate?: number;
  /** fail: share of requests answered 503, in (0, 1]. @default 0.1 */
  rate?: number;
  /** capacity: fraction of the concurrency and queue left, in (0, 1]. */
  capacityFraction?: number;
}

/** From `atS` the offered rate moves to `rate` requests/s: at once, or linearly over `rampS`. */
export interface LoadStep {
  atS: number;
  rate: number;
  /** Seconds over which the rate moves linearly from the previous step's to this one. @default 0 */
  rampS?: number;
}

/** A checked topology with every default filled in. */
export interface ResolvedTopology {
  name: string;
  description: string;
  entry: string;
  /** Services from the entry, callers before callees (a topological order). */
  services: ResolvedService[];
  load: Required<LoadStep>[];
  durationS: number;
  drainS: number;
  faults: TopologyFault[];
}

export interface ResolvedService {
  name: string;
  instances: number;
  /** Zone of each instance (absent: no zone). */
  zones: Array<string | undefined>;
  capacity: Required<TopologyCapacity>;
  latencyMs: number;
  calls: ResolvedCall[];
  callMode: 'sequence' | 'parallel';
  /** `edge` (the entry), `backend` (calls nothing) or `middle`: the role strategies see. */
  role: 'edge' | 'middle' | 'backend';
}

export interface ResolvedCall {
  service: string;
  times: number;
  mode: 'sequence' | 'parallel';
  strategy: string | undefined;
  client: TopologyClientSettings | undefined;
  fallback: boolean | undefined;
}

/** Largest values a topology may hold (a typo should not ask for a billion instances). */
export const topologyLimits = {
  services: 1000,
  instances: 100_000,
  times: 100,
  rate: 10_000_000,
  durationS: 3600,
  drainS: 600,
  maxConcurrent: 1_000_000,
  maxQueue: 1_000_000,
  workMs: 60_000,
  latencyMs: 600_000,
} as const;

type Json = Record<string, unknown>;

const isObject = (value: unknown): value is Json =>
  typeof value === 'object' && value !== null && !Array.isArray(value);

function objectAt(value: unknown, path: string): Json {
  if (!isObject(value)) invalidOption(path, 'an object', value);
  return value;
}

function onlyKeys(value: Json, path: string, allowed: readonly string[]): void {
  for (const key of Object.keys(value)) {
    if (!allowed.includes(key)) {
      invalidOption(`${path}${path === '' ? '' : '.'}${key}`, `one of the known fields (${allowed.join(', ')})`, key);
    }
  }
}

function numberAt(
  value: unknown,
  path: string,
  range: { min: number; max: number; minExclusive?: boolean; integer?: boolean },
): number {
  const { min, max, minExclusive = false, integer = false } = range;
  const ok =
    typeof value === 'number' &&
    Number.isFinite(value) &&
    (minExclusive ? value > min : value >= min) &&
    value <= max &&
    (!integer || Number.isInteger(value));
  if (!ok)
    invalidOption(path, `${integer ? 'an integer' : 'a number'} in ${minExclusive ? '(' : '['}${min}, ${max}]`, value);
  return value;
}

function optionalNumber(value: unknown, path: string, fallback: number, range: Parameters<typeof numberAt>[2]): number {
  return value === undefined ? fallback : numberAt(value, path, range);
}

function stringAt(value: unknown, path: string): string {
  if (typeof value !== 'string' || value.length === 0) invalidOption(path, 'a non-empty string', value);
  return value;
}

function oneOf<T extends string>(value: unknown, path: string, allowed: readonly T[], fallback: T): T {
  if (value === undefined) return fallback;
  if (!allowed.includes(value as T)) invalidOption(path, `one of ${allowed.join(', ')}`, value);
  return value as T;
}

const serviceName = /^[A-Za-z][A-Za-z0-9_-]{0,62}$/;

/**
 * Checks a topology (parsed JSON or a typed object) and fills in every default. Throws
 * `INVALID_OPTION` naming the JSON path of the first bad field: unknown fields, a call to an
 * unknown service, a cycle, a negative capacity, a fault on an instance that does not exist,
 * an empty or decreasing load schedule.
 */
export function checkTopology(input: unknown): ResolvedTopology {
  const root = objectAt(input, 'topology');
  onlyKeys(root, '', ['$schema', 'name', 'description', 'services', 'entry', 'load', 'durationS', 'drainS', 'faults']);
  const name = stringAt(root.name, 'name');
  const description = root.description === undefined ? '' : stringAt(root.description, 'description');
  const servicesIn = objectAt(root.services, 'services');
  const names = Object.keys(servicesIn);
  if (names.length === 0) invalidOption('services', 'at least one service', 0);
  if (names.length > topologyLimits.services) {
    invalidOption('services', `at most ${topologyLimits.services} services`, names.length);
  }
  for (const serviceKey of names) {
    if (!serviceName.test(serviceKey)) {
      invalidOption(`services.${serviceKey}`, 'named with a letter then letters, digits, - or _ (≤ 63)', serviceKey);
    }
  }

  // Services, calls checked against the names.
  const raw = new Map<string, Omit<ResolvedService, 'role' | 'capacity'> & { capacity: Json }>();
  for (const key of names) {
    const path = `services.${key}`;
    const service = objectAt(servicesIn[key], path);
    onlyKeys(service, path, ['instances', 'zone', 'capacity', 'latencyMs', 'calls', 'callMode']);
    const instances = numberAt(service.instances, `${path}.instances`, {
      min: 1,
      max: topologyLimits.instances,
      integer: true,
    });
    let zones: Array<string | undefined>;
    if (service.zone === undefined) zones = Array.from({ length: instances }, () => undefined);
    else if (typeof service.zone === 'string') zones = Array.from({ length: instances }, () => service.zone as string);
    else if (Array.isArray(service.zone)) {
      if (service.zone.length !== instances) {
        invalidOption(`${path}.zone`, `one zone per instance (${instances})`, `${service.zone.length} zones`);
      }
      zones = service.zone.map((zone, index) => stringAt(zone, `${path}.zone[${index}]`));
    } else invalidOption(`${path}.zone`, 'a string or an array of strings', service.zone);
    const capacity = service.capacity === undefined ? {} : objectAt(service.capacity, `${path}.capacity`);
    onlyKeys(capacity, `${path}.capacity`, ['maxConcurrent', 'maxQueue', 'workMs']);
    const callsIn = service.calls === undefined ? [] : service.calls;
    if (!Array.isArray(callsIn)) invalidOption(`${path}.calls`, 'an array of calls', callsIn);
    const calls = callsIn.map((callIn, index) => checkCall(callIn, `${path}.calls[${index}]`, servicesIn));
    raw.set(key, {
      name: key,
      instances,
      zones,
      capacity,
      latencyMs: optionalNumber(service.latencyMs, `${path}.latencyMs`, calls.length === 0 ? 5 : 0, {
        min: 0,
        max: topologyLimits.latencyMs,
      }),
      calls,
      callMode: oneOf(service.callMode, `${path}.callMode`, ['sequence', 'parallel'], 'sequence'),
    });
  }

  // The entry: named, or the one service nobody calls.
  const called = new Set([...raw.values()].flatMap((service) => service.calls.map((call) => call.service)));
  let entry: string;
  if (root.entry !== undefined) {
    entry = stringAt(root.entry, 'entry');
    if (!raw.has(entry)) invalidOption('entry', `one of the services (${names.join(', ')})`, entry);
  } else {
    const roots = names.filter((key) => !called.has(key));
    // Everything is called by something: a cycle, which the walk names.
    if (roots.length === 0) topologicalOrder(names[0] as string, raw);
    if (roots.length !== 1) {
      invalidOption(
        'entry',
        'set when the graph has no single service that nobody calls',
        roots.length === 0 ? 'none' : roots.join(', '),
      );
    }
    entry = roots[0] as string;
  }

  // Cycles: depth-first from every service; the error names the call that closes the loop.
  const order = topologicalOrder(entry, raw);

  const services: ResolvedService[] = order.map((key) => {
    const service = raw.get(key) as NonNullable<ReturnType<typeof raw.get>>;
    const path = `services.${key}.capacity`;
    const isEntry = key === entry;
    const capacity = {
      maxConcurrent: optionalNumber(service.capacity.maxConcurrent, `${path}.maxConcurrent`, isEntry ? 4096 : 64, {
        min: 1,
        max: topologyLimits.maxConcurrent,
        integer: true,
      }),
      maxQueue: optionalNumber(service.capacity.maxQueue, `${path}.maxQueue`, isEntry ? 0 : 64, {
        min: 0,
        max: topologyLimits.maxQueue,
        integer: true,
      }),
      workMs: optionalNumber(service.capacity.workMs, `${path}.workMs`, 0.5, { min: 0, max: topologyLimits.workMs }),
    };
    const role = isEntry ? 'edge' : service.calls.length === 0 ? 'backend' : 'middle';
    return { ...service, capacity, role };
  });

  const durationS = numberAt(root.durationS, 'durationS', {
    min: 0,
    max: topologyLimits.durationS,
    minExclusive: true,
  });
  const drainS = optionalNumber(root.drainS, 'drainS', 8, { min: 0, max: topologyLimits.drainS });
  const load = checkLoad(root.load, durationS);
  const byName = new Map(services.map((service) => [service.name, service]));
  const faultsIn = root.faults === undefined ? [] : root.faults;
  if (!Array.isArray(faultsIn)) invalidOption('faults', 'an array of faults', faultsIn);
  const faults = faultsIn.map((fault, index) => checkFault(fault, `faults[${index}]`, byName, names));
  return { name, description, entry, services, load, durationS, drainS, faults };
}

function checkCall(input: unknown, path: string, services: Json): ResolvedCall {
  const call = objectAt(input, path);
  onlyKeys(call, path, ['service', 'times', 'mode', 'strategy', 'client', 'fallback']);
  const service = stringAt(call.service, `${path}.service`);
  if (!Object.hasOwn(services, service)) {
    invalidOption(`${path}.service`, `one of the services (${Object.keys(services).join(', ')})`, service);
  }
  let client: TopologyClientSettings | undefined;
  if (call.client !== undefined) {
    const settings = objectAt(call.client, `${path}.client`);
    onlyKeys(settings, `${path}.client`, topologyClientKeys);
    client = settings as TopologyClientSettings;
  }
  if (call.fallback !== undefined && typeof call.fallback !== 'boolean') {
    invalidOption(`${path}.fallback`, 'true or false', call.fallback);
  }
  return {
    service,
    times: optionalNumber(call.times, `${path}.times`, 1, { min: 1, max: topologyLimits.times, integer: true }),
    mode: oneOf(call.mode, `${path}.mode`, ['sequence', 'parallel'], 'sequence'),
    strategy: call.strategy === undefined ? undefined : stringAt(call.strategy, `${path}.strategy`),
    client,
    fallback: call.fallback as boolean | undefined,
  };
}

/** Services reachable from the entry, callers first; throws on a cycle or an unreachable service. */
function topologicalOrder(entry: string, services: Map<string, { calls: ResolvedCall[] }>): string[] {
  const state = new Map<string, 'open' | 'done'>();
  const postOrder: string[] = [];
  const visit = (name: string, trail: string[]) => {
    state.set(name, 'open');
    const calls = services.get(name)?.calls ?? [];
    for (const [index, call] of calls.entries()) {
      const seen = state.get(call.service);
      if (seen === 'open') {
        const loop = [...trail.slice(trail.indexOf(call.service)), name, call.service].join(' → ');
        invalidOption(
          `services.${name}.calls[${index}].service`,
          `a call that closes no cycle (${loop})`,
          call.service,
        );
      }
      if (seen === undefined) visit(call.service, [...trail, name]);
    }
    state.set(name, 'done');
    postOrder.push(name);
  };
  visit(entry, []);
  for (const name of services.keys()) {
    if (!state.has(name)) invalidOption(`services.${name}`, `reachable from the entry (${entry})`, name);
  }
  return postOrder.reverse();
}

function checkLoad(input: unknown, durationS: number): Required<LoadStep>[] {
  if (!Array.isArray(input) || input.length === 0) invalidOption('load', 'a non-empty array of {atS, rate}', input);
  let previousAt = -1;
  return input.map((stepIn, index) => {
    const path = `load[${index}]`;
    const step = objectAt(stepIn, path);
    onlyKeys(step, path, ['atS', 'rate', 'rampS']);
    const atS = numberAt(step.atS, `${path}.atS`, { min: 0, max: topologyLimits.durationS });
    if (index === 0 && atS !== 0) invalidOption(`${path}.atS`, '0 (the load starts with the run)', atS);
    if (index > 0 && atS <= previousAt) invalidOption(`${path}.atS`, `after the previous step (${previousAt})`, atS);
    if (atS >= durationS && index > 0) invalidOption(`${path}.atS`, `before the end of the load (${durationS})`, atS);
    const rampS = optionalNumber(step.rampS, `${path}.rampS`, 0, { min: 0, max: topologyLimits.durationS });
    if (index === 0 && rampS !== 0) invalidOption(`${path}.rampS`, '0 on the first step', rampS);
    previousAt = atS + rampS;
    return {
      atS,
      rate: numberAt(step.rate, `${path}.rate`, { min: 0, max: topologyLimits.rate }),
      rampS,
    };
  });
}

function checkFault(
  input: unknown,
  path: string,
  services: Map<string, ResolvedService>,
  names: string[],
): TopologyFault {
  const step = objectAt(input, path);
  onlyKeys(step, path, [
    'atS',
    'service',
    'instances',
    'fault',
    'factor',
    'addedMs',
    'errorRate',
    'rate',
    'capacityFraction',
  ]);
  const atS = numberAt(step.atS, `${path}.atS`, { min: 0, max: topologyLimits.durationS + topologyLimits.drainS });
  const name = stringAt(step.service, `${path}.service`);
  const service = services.get(name);
  if (service === undefined) invalidOption(`${path}.service`, `one of the services (${names.join(', ')})`, name);
  const fault = oneOf(step.fault, `${path}.fault`, topologyFaults, 'none');
  if (step.fault === undefined) invalidOption(`${path}.fault`, `one of ${topologyFaults.join(', ')}`, undefined);
  const out: TopologyFault = { atS, service: name, fault };
  if (step.instances !== undefined) {
    if (!Array.isArray(step.instances) || step.instances.length === 0) {
      invalidOption(`${path}.instances`, 'a non-empty array of instance indexes', step.instances);
    }
    out.instances = step.instances.map((index, position) =>
      numberAt(index, `${path}.instances[${position}]`, { min: 0, max: service.instances - 1, integer: true }),
    );
  }
  const need = (
    field: 'factor' | 'addedMs' | 'errorRate' | 'rate' | 'capacityFraction',
    range: Parameters<typeof numberAt>[2],
  ) => numberAt(step[field], `${path}.${field}`, range);
  const only = (field: string | undefined) => {
    for (const key of ['factor', 'addedMs', 'errorRate', 'rate', 'capacityFraction']) {
      if (key !== field && step[key] !== undefined)
        invalidOption(`${path}.${key}`, `absent for fault ${fault}`, step[key]);
    }
  };
  switch (fault) {
    case 'slow':
      only('factor');
      out.factor = step.factor === undefined ? 10 : need('factor', { min: 1, max: 10_000 });
      break;
    case 'latency':
      only('addedMs');
      out.addedMs = need('addedMs', { min: 0, max: topologyLimits.latencyMs });
      break;
    case 'errors':
      only('errorRate');
      out.errorRate = need('errorRate', { min: 0, max: 1, minExclusive: true });
      break;
    case 'fail':
      only('rate');
      out.rate = step.rate === undefined ? 0.1 : need('rate', { min: 0, max: 1, minExclusive: true });
      break;
    case 'capacity':
      only('capacityFraction');
      out.capacityFraction = need('capacityFraction', { min: 0, max: 1, minExclusive: true });
      break;
    default:
      only(undefined);
  }
  return out;
}

/** Reads and checks a topology file; errors name the file and the JSON path. */
export function topologyFromFile(path: string): ResolvedTopology {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (error) {
    throw new TelescopeError(
      ErrorCode.INVALID_OPTION,
      `${path}: cannot read the topology (${(error as Error).message})`,
    );
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (error) {
    throw new TelescopeError(ErrorCode.INVALID_OPTION, `${path}: not JSON (${(error as Error).message})`);
  }
  try {
    return checkTopology(parsed);
  } catch (error) {
    if (error instanceof TelescopeError)
      throw new TelescopeError(ErrorCode.INVALID_OPTION, `${path}: ${error.message}`);
    throw error;
  }
}

/** Instances (processes in real mode) the topology runs. */
export function topologyInstances(topology: ResolvedTopology): number {
  return topology.services.reduce((n, service) => n + service.instances, 0);
}
