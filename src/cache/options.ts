/**
 * Checks `withCache` options and resolves them, with their defaults, into what the parts use:
 * the tiers' settings and one `EndpointState` per cached endpoint.
 */
import type { Client } from '../client/index.js';
import type { Clock } from '../core/clock.js';
import { systemClock } from '../core/clock.js';
import { invalidOption } from '../core/errors.js';
import type { Endpoint, ServiceDefinition } from '../service/index.js';
import { memoryCache } from './memory.js';
import type { InvalidationBus, RemoteCache } from './remote.js';
import { newCounters } from './stats.js';
import {
  type CacheCounters,
  type CacheOptions,
  cacheDefaults,
  type EndpointCacheOptions,
  type LeaseOptions,
  type LocalTierOptions,
} from './types.js';

/** One cached endpoint: how to call it, how its entries live (the policy), and its counters. */
export interface EndpointState {
  readonly name: string;
  readonly method: (...args: unknown[]) => Promise<unknown>;
  readonly keyArgCount: number;
  readonly definitionTimeoutMs: number | undefined;
  readonly hasFallback: boolean;
  readonly ttlMs: number;
  readonly staleMs: number;
  readonly staleIfErrorMs: number;
  readonly negativeTtlMs: number;
  readonly key: ((...args: unknown[]) => unknown) | undefined;
  /** namespace + endpoint + ':' */
  readonly prefix: string;
  readonly counters: CacheCounters;
}

export interface ResolvedCacheOptions {
  readonly clock: Clock;
  readonly random: () => number;
  readonly jitter: number;
  /** Undefined without a local tier. */
  readonly local: { maxEntries: number; ttlMs: number } | undefined;
  readonly remote: RemoteCache | undefined;
  readonly remoteTimeoutMs: number;
  readonly bus: InvalidationBus | undefined;
  readonly lease: Required<LeaseOptions> | undefined;
  readonly closeRemote: boolean;
  readonly endpoints: Map<string, EndpointState>;
}

/** Members a cached client adds; an endpoint may not have these names. */
const cachedMembers = new Set(['withMetadata', 'client', 'invalidate']);

export function nonNegative(name: string, value: number | undefined, fallback: number): number {
  if (value === undefined) return fallback;
  if (typeof value !== 'number' || !Number.isFinite(value) || value < 0) {
    invalidOption(name, 'a finite number ≥ 0', value);
  }
  return value;
}

export function positive(name: string, value: number | undefined, fallback: number): number {
  if (value === undefined) return fallback;
  if (typeof value !== 'number' || !Number.isFinite(value) || value <= 0) {
    invalidOption(name, 'a positive finite number', value);
  }
  return value;
}

export function resolveCacheOptions<S extends ServiceDefinition>(
  client: Client<S>,
  options: CacheOptions<S>,
): ResolvedCacheOptions {
  if (typeof client !== 'object' || client === null || typeof client.service?.endpoints !== 'object') {
    invalidOption('withCache client', 'a client made by createClient', client);
  }
  if (typeof options !== 'object' || options === null) invalidOption('withCache options', 'an object', options);
  const service = client.service;
  if (typeof options.endpoints !== 'object' || options.endpoints === null) {
    invalidOption('withCache endpoints', 'an object of endpoint names to { ttlMs, … }', options.endpoints);
  }
  for (const name of Object.keys(service.endpoints)) {
    if (cachedMembers.has(name)) invalidOption(`endpoint name ${name}`, 'not a member of cached clients', name);
  }
  const clock = options.clock ?? systemClock;
  const random = options.random ?? Math.random;
  if (typeof random !== 'function') invalidOption('withCache random', 'a function', random);
  const jitter = nonNegative('withCache jitter', options.jitter, cacheDefaults.jitter);
  if (jitter >= 1) invalidOption('withCache jitter', 'a fraction in [0, 1)', jitter);
  const namespace = options.namespace ?? `telescope:${service.name}:`;
  if (typeof namespace !== 'string') invalidOption('withCache namespace', 'a string', namespace);

  // Tiers.
  let localOptions: LocalTierOptions | undefined;
  if (options.local !== false) {
    localOptions = options.local ?? {};
    if (typeof localOptions !== 'object' || localOptions === null) {
      invalidOption('withCache local', 'an object or false', localOptions);
    }
  }
  const localMaxEntries = localOptions?.maxEntries ?? cacheDefaults.localMaxEntries;
  if (localOptions !== undefined && !(Number.isInteger(localMaxEntries) && localMaxEntries >= 1)) {
    invalidOption('withCache local.maxEntries', 'an integer ≥ 1', localMaxEntries);
  }
  const localTtlMs = positive('withCache local.ttlMs', localOptions?.ttlMs, cacheDefaults.localTtlMs);
  const remote: RemoteCache | undefined =
    options.remote === false ? undefined : (options.remote ?? memoryCache({ clock }));
  if (remote !== undefined) {
    for (const method of ['get', 'set', 'delete', 'close'] as const) {
      if (typeof remote[method] !== 'function') {
        invalidOption('withCache remote', 'a RemoteCache (get, set, delete, close)', remote);
      }
    }
  }
  if (localOptions === undefined && remote === undefined) {
    invalidOption('withCache local and remote', 'not both false', false);
  }
  const remoteTimeoutMs = positive('remote timeoutMs', remote?.timeoutMs, cacheDefaults.remoteTimeoutMs);
  const bus: InvalidationBus | undefined = options.bus === false ? undefined : (options.bus ?? remote?.bus);
  if (bus !== undefined && (typeof bus.publish !== 'function' || typeof bus.subscribe !== 'function')) {
    invalidOption('withCache bus', 'an InvalidationBus (publish, subscribe) or false', bus);
  }
  let lease: Required<LeaseOptions> | undefined;
  if (options.lease !== undefined && options.lease !== false) {
    const given = options.lease === true ? {} : options.lease;
    if (typeof given !== 'object' || given === null)
      invalidOption('withCache lease', 'true, false or an object', given);
    lease = {
      ttlMs: positive('withCache lease.ttlMs', given.ttlMs, cacheDefaults.lease.ttlMs),
      waitMs: nonNegative('withCache lease.waitMs', given.waitMs, cacheDefaults.lease.waitMs),
      pollMs: positive('withCache lease.pollMs', given.pollMs, cacheDefaults.lease.pollMs),
    };
    if (typeof remote?.acquireLease !== 'function') {
      invalidOption(
        'withCache lease',
        'used with a remote tier that has acquireLease (Redis, memcached, memory)',
        remote?.name,
      );
    }
  }

  // Endpoints.
  const endpoints = new Map<string, EndpointState>();
  for (const [name, config] of Object.entries(options.endpoints as Record<string, EndpointCacheOptions | undefined>)) {
    if (config === undefined) continue;
    const definition = service.endpoints[name] as Endpoint | undefined;
    if (definition === undefined) {
      invalidOption(`withCache endpoints.${name}`, `an endpoint of ${service.name}`, name);
    }
    if (typeof config !== 'object' || config === null)
      invalidOption(`endpoints.${name}`, 'an object { ttlMs, … }', config);
    if (config.ttlMs === undefined) invalidOption(`endpoints.${name}.ttlMs`, 'a positive finite number', undefined);
    const ttlMs = positive(`endpoints.${name}.ttlMs`, config.ttlMs, 0);
    const staleMs = nonNegative(`endpoints.${name}.staleMs`, config.staleMs, 0);
    const staleIfErrorMs = nonNegative(`endpoints.${name}.staleIfErrorMs`, config.staleIfErrorMs, staleMs);
    const negativeTtlMs = nonNegative(`endpoints.${name}.negativeTtlMs`, config.negativeTtlMs, 0);
    if (config.key !== undefined && typeof config.key !== 'function') {
      invalidOption(`endpoints.${name}.key`, 'a function returning a string', config.key);
    }
    const method = (client as unknown as Record<string, unknown>)[name];
    if (typeof method !== 'function') invalidOption(`withCache client.${name}`, 'a method', method);
    endpoints.set(name, {
      name,
      method: method as (...args: unknown[]) => Promise<unknown>,
      keyArgCount:
        (definition.params !== undefined || definition.query !== undefined ? 1 : 0) +
        (definition.body !== undefined ? 1 : 0),
      definitionTimeoutMs: definition.timeoutMs,
      hasFallback: definition.hasFallback === true,
      ttlMs,
      staleMs,
      staleIfErrorMs,
      negativeTtlMs,
      key: config.key as EndpointState['key'],
      prefix: `${namespace}${name}:`,
      counters: newCounters(),
    });
  }

  return {
    clock,
    random,
    jitter,
    local: localOptions === undefined ? undefined : { maxEntries: localMaxEntries, ttlMs: localTtlMs },
    remote,
    remoteTimeoutMs,
    bus,
    lease,
    closeRemote: options.closeRemote ?? true,
    endpoints,
  };
}
