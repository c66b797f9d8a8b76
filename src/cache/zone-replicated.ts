/**
 * `zoneReplicated()`: EVCache-style zone replicas as one remote tier. Each zone (availability
 * zone, rack, data center) has a full copy of the cache in its own store:
 *
 * - writes go to every zone: the local zone's write is the one `withCache` waits for (behind the
 *   caller); the other zones' writes are asynchronous and bounded (`maxPendingWrites`; beyond it
 *   they are dropped and counted);
 * - reads go to the local zone first and, on a miss, an error or an entry that is not a valid
 *   envelope for the key (corrupt, or another program's), to one other zone (the others take
 *   turns), so losing a zone's cache does not send a stampede to the service. A fallback costs
 *   at most one more remote round trip, inside the same operation timeout;
 * - deletes go to every zone, and invalidations are published on every zone's bus (each process
 *   listens on its own zone's bus);
 * - leases are taken in the local zone.
 *
 * Why not read every zone at once: it would multiply the read load on every store by the
 * number of zones to save one round trip on a local miss, which is rare once the zone is warm.
 */
import type { Logger } from '../core/call.js';
import { invalidOption } from '../core/errors.js';
import { decodeEnvelope } from './envelope.js';
import {
  DEFAULT_REMOTE_TIMEOUT_MS,
  type InvalidationBus,
  type RemoteCache,
  RemoteCacheError,
  type RemoteOperationOptions,
} from './remote.js';

/** Options of {@link zoneReplicated}. */
export interface ZoneReplicatedOptions {
  /** This process's zone: a key of `replicas`. */
  zone: string;
  /** One remote tier per zone, by zone name (`memcachedCache()`, `redisCache()`, …). At least one. */
  replicas: Readonly<Record<string, RemoteCache>>;
  /**
   * Timeout of one operation, fallback included, in milliseconds: the local zone gets at most
   * half of it when there are other zones. @default twice the local replica's timeout
   */
  timeoutMs?: number;
  /** Writes to other zones in flight at once; more are dropped (and counted). @default 1000 */
  maxPendingWrites?: number;
  /** Logs fallbacks, corrupt entries and failed cross-zone writes (pino shape; at most once a second each). @default silent */
  logger?: Logger;
}

export const zoneReplicatedDefaults = {
  maxPendingWrites: 1000,
} as const;

/** Counters of one zone, as seen from this process. */
export interface ZoneReplicaStats {
  /** Reads sent to this zone (as the local zone, or as the fallback). */
  reads: number;
  /** Of those, answered with a valid entry. */
  hits: number;
  /** Reads that failed (error or timeout). */
  errors: number;
  /** Entries that were not a valid envelope for their key (treated as misses). */
  corrupt: number;
  /** Writes that failed, and writes dropped because too many were in flight. */
  failedWrites: number;
  droppedWrites: number;
}

/** A zone-replicated remote tier, with its counters. */
export interface ZoneReplicatedCache extends RemoteCache {
  readonly zone: string;
  /** Reads of the local zone that went on to another zone (miss, error or corrupt entry). */
  readonly fallbacks: number;
  /** Counters per zone. */
  stats(): Record<string, ZoneReplicaStats>;
}

function newZoneStats(): ZoneReplicaStats {
  return { reads: 0, hits: 0, errors: 0, corrupt: 0, failedWrites: 0, droppedWrites: 0 };
}

/**
 * A remote tier made of one replica per zone.
 *
 * @example
 * const remote = zoneReplicated({
 *   zone: process.env.ZONE ?? 'a',
 *   replicas: {
 *     a: memcachedCache({ servers: ['cache-a.internal:11211'] }),
 *     b: memcachedCache({ servers: ['cache-b.internal:11211'] }),
 *   },
 * });
 * const cached = withCache(movies, { remote, endpoints: { getMovie: { ttlMs: 60_000 } } });
 */
export function zoneReplicated(options: ZoneReplicatedOptions): ZoneReplicatedCache {
  if (typeof options !== 'object' || options === null) invalidOption('zoneReplicated options', 'an object', options);
  const { zone, replicas } = options;
  if (typeof zone !== 'string' || zone === '') invalidOption('zoneReplicated zone', 'a non-empty string', zone);
  if (typeof replicas !== 'object' || replicas === null || Array.isArray(replicas)) {
    invalidOption('zoneReplicated replicas', 'an object of zone names to remote tiers', replicas);
  }
  for (const [name, replica] of Object.entries(replicas)) {
    const valid =
      typeof replica === 'object' &&
      replica !== null &&
      (['get', 'set', 'delete', 'close'] as const).every((method) => typeof replica[method] === 'function');
    if (!valid) invalidOption(`zoneReplicated replicas.${name}`, 'a RemoteCache (get, set, delete, close)', replica);
  }
  const local = replicas[zone];
  if (local === undefined) {
    invalidOption('zoneReplicated replicas', `a replica for the local zone '${zone}'`, Object.keys(replicas));
  }
  const others = Object.keys(replicas)
    .filter((name) => name !== zone)
    .map((name) => ({ name, replica: replicas[name] as RemoteCache }));
  const localTimeoutMs = local.timeoutMs ?? DEFAULT_REMOTE_TIMEOUT_MS;
  const timeoutMs = options.timeoutMs ?? (others.length > 0 ? 2 * localTimeoutMs : localTimeoutMs);
  if (typeof timeoutMs !== 'number' || !Number.isFinite(timeoutMs) || timeoutMs <= 0) {
    invalidOption('zoneReplicated timeoutMs', 'a positive finite number', timeoutMs);
  }
  const maxPendingWrites = options.maxPendingWrites ?? zoneReplicatedDefaults.maxPendingWrites;
  if (!Number.isInteger(maxPendingWrites) || maxPendingWrites < 0) {
    invalidOption('zoneReplicated maxPendingWrites', 'an integer ≥ 0', maxPendingWrites);
  }
  const logger = options.logger;
  const stats: Record<string, ZoneReplicaStats> = {};
  for (const name of Object.keys(replicas)) stats[name] = newZoneStats();
  let fallbacks = 0;
  let nextOther = 0;
  let pendingWrites = 0;
  const pending = new Set<Promise<unknown>>();
  const lastLogged = new Map<string, number>();

  const log = (kind: string, fields: Record<string, unknown>, message: string) => {
    if (logger === undefined) return;
    const now = Date.now();
    if (now - (lastLogged.get(kind) ?? Number.NEGATIVE_INFINITY) < 1000) return;
    lastLogged.set(kind, now);
    logger.warn({ zone, ...fields }, message);
  };

  /** One zone's read: the raw entry when it is a valid envelope for `key`, else undefined. */
  const readZone = async (
    name: string,
    replica: RemoteCache,
    key: string,
    limitMs: number,
  ): Promise<{ raw: string | undefined; failed: boolean }> => {
    const counters = stats[name] as ZoneReplicaStats;
    counters.reads++;
    let raw: string | undefined;
    try {
      raw = await replica.get(key, { timeoutMs: limitMs });
    } catch (error) {
      counters.errors++;
      log(`read:${name}`, { replica: name, err: (error as Error)?.message }, 'zone replica read failed');
      return { raw: undefined, failed: true };
    }
    if (raw === undefined) return { raw: undefined, failed: false };
    if (decodeEnvelope(raw, key) === undefined) {
      counters.corrupt++;
      log(`corrupt:${name}`, { replica: name, key }, 'corrupt or foreign entry in a zone replica; treated as a miss');
      return { raw: undefined, failed: false };
    }
    counters.hits++;
    return { raw, failed: false };
  };

  /** Sends a write to another zone behind the caller's back, bounded. */
  const writeAway = (name: string, run: () => Promise<unknown>) => {
    const counters = stats[name] as ZoneReplicaStats;
    if (pendingWrites >= maxPendingWrites) {
      counters.droppedWrites++;
      return;
    }
    pendingWrites++;
    const write = run()
      .catch((error: unknown) => {
        counters.failedWrites++;
        log(`write:${name}`, { replica: name, err: (error as Error)?.message }, 'zone replica write failed');
      })
      .finally(() => {
        pendingWrites--;
        pending.delete(write);
      });
    pending.add(write);
  };

  const budget = (op: RemoteOperationOptions | undefined) =>
    op?.timeoutMs !== undefined && op.timeoutMs < timeoutMs ? op.timeoutMs : timeoutMs;

  const localBus = local.bus;
  const buses = Object.values(replicas)
    .map((replica) => replica.bus)
    .filter((bus): bus is InvalidationBus => bus !== undefined);
  const bus: InvalidationBus | undefined =
    localBus === undefined
      ? undefined
      : {
          // Every zone's processes listen on their own zone's bus: publish on all of them.
          async publish(message) {
            const results = await Promise.allSettled(buses.map((each) => each.publish(message)));
            const failed = results.find((result) => result.status === 'rejected');
            if (failed !== undefined) throw (failed as PromiseRejectedResult).reason;
          },
          subscribe: (onMessage, onGap) => localBus.subscribe(onMessage, onGap),
        };

  const cache: ZoneReplicatedCache = {
    name: 'zone-replicated',
    zone,
    timeoutMs,
    get fallbacks() {
      return fallbacks;
    },
    get connecting() {
      return local.connecting;
    },
    async get(key, op) {
      const total = budget(op);
      const startedAt = performance.now();
      // With other zones to fall back on, the local zone gets at most half the budget.
      const localLimit = others.length === 0 ? total : Math.min(localTimeoutMs, total / 2);
      const first = await readZone(zone, local, key, localLimit);
      if (first.raw !== undefined || others.length === 0) {
        if (first.failed) throw new RemoteCacheError('REMOTE_UNAVAILABLE', `zone ${zone} replica failed`);
        return first.raw;
      }
      fallbacks++;
      const other = others[nextOther++ % others.length] as (typeof others)[number];
      const left = Math.max(1, total - (performance.now() - startedAt));
      const second = await readZone(other.name, other.replica, key, left);
      if (second.raw === undefined && first.failed && second.failed) {
        throw new RemoteCacheError('REMOTE_UNAVAILABLE', `zone replicas ${zone} and ${other.name} failed`);
      }
      return second.raw;
    },
    async set(key, value, ttlMs, op) {
      for (const { name, replica } of others) writeAway(name, () => replica.set(key, value, ttlMs));
      try {
        await local.set(key, value, ttlMs, op);
      } catch (error) {
        (stats[zone] as ZoneReplicaStats).failedWrites++;
        throw error;
      }
    },
    async delete(key, op) {
      // An invalidation must reach every zone: wait for all, fail if any failed.
      const results = await Promise.allSettled(Object.values(replicas).map((replica) => replica.delete(key, op)));
      const failed = results.find((result) => result.status === 'rejected');
      if (failed !== undefined) throw (failed as PromiseRejectedResult).reason;
    },
    stats() {
      const copy: Record<string, ZoneReplicaStats> = {};
      for (const [name, counters] of Object.entries(stats)) copy[name] = { ...counters };
      return copy;
    },
    async close() {
      await Promise.allSettled([...pending]);
      await Promise.allSettled(Object.values(replicas).map((replica) => replica.close()));
    },
  };
  if (typeof local.connect === 'function') {
    const connect = local.connect.bind(local);
    Object.assign(cache, { connect: () => connect() });
  }
  if (typeof local.acquireLease === 'function') {
    const acquire = local.acquireLease.bind(local);
    Object.assign(cache, { acquireLease: acquire });
    if (typeof local.releaseLease === 'function')
      Object.assign(cache, { releaseLease: local.releaseLease.bind(local) });
  }
  if (bus !== undefined) Object.assign(cache, { bus });
  return cache;
}
