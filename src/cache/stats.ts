/**
 * The cache's counters: one `CacheCounters` per endpoint (every cached call counts in exactly
 * one outcome, see `countOutcome`), and the remote tier's error, timeout and latency counts.
 * `stats().cache` is built here from both.
 */
import type { Clock } from '../core/clock.js';
import { RollingHistogram } from '../observe/index.js';
import type { CacheCounters, CacheStats, CacheStatus, RemoteOperation } from './types.js';

export function newCounters(): CacheCounters {
  return {
    hits: { local: 0, remote: 0 },
    misses: 0,
    staleWhileRevalidate: 0,
    staleIfError: 0,
    coalesced: 0,
    errors: 0,
    negativeHits: 0,
    fallbacks: 0,
    refreshes: 0,
    refreshErrors: 0,
    corrupt: 0,
    uncacheable: 0,
    invalidations: 0,
    leases: { acquired: 0, contended: 0, waitHits: 0 },
  };
}

export function addCounters(into: CacheCounters, from: CacheCounters): void {
  into.hits.local += from.hits.local;
  into.hits.remote += from.hits.remote;
  into.misses += from.misses;
  into.staleWhileRevalidate += from.staleWhileRevalidate;
  into.staleIfError += from.staleIfError;
  into.coalesced += from.coalesced;
  into.errors += from.errors;
  into.negativeHits += from.negativeHits;
  into.fallbacks += from.fallbacks;
  into.refreshes += from.refreshes;
  into.refreshErrors += from.refreshErrors;
  into.corrupt += from.corrupt;
  into.uncacheable += from.uncacheable;
  into.invalidations += from.invalidations;
  into.leases.acquired += from.leases.acquired;
  into.leases.contended += from.leases.contended;
  into.leases.waitHits += from.leases.waitHits;
}

export function cloneCounters(counters: CacheCounters): CacheCounters {
  const copy = newCounters();
  addCounters(copy, counters);
  return copy;
}

/** Counts one settled call in exactly one of the outcome counters. */
export function countOutcome(
  counters: CacheCounters,
  status: Exclude<CacheStatus, 'bypass'>,
  coalesced: boolean,
  negative: boolean,
  fallback: boolean,
): void {
  if (coalesced) counters.coalesced++;
  else if (status === 'local') counters.hits.local++;
  else if (status === 'remote') counters.hits.remote++;
  else if (status === 'stale-while-revalidate') counters.staleWhileRevalidate++;
  else if (status === 'stale-if-error') counters.staleIfError++;
  else counters.misses++;
  if (negative) counters.negativeHits++;
  if (fallback) counters.fallbacks++;
}

/** What the remote tier counts: failures by operation, timeouts, skips, dropped writes, read latency. */
export class RemoteStats {
  readonly errors: Record<RemoteOperation, number> = { get: 0, set: 0, delete: 0, lease: 0, publish: 0 };
  timeouts = 0;
  /** Operations skipped because the call's budget was nearly spent. */
  skipped = 0;
  /** Writes dropped because too many were in flight. */
  droppedWrites = 0;
  readonly latency: RollingHistogram;

  constructor(clock: Clock) {
    this.latency = new RollingHistogram(clock, 10_000);
  }
}

/** `stats().cache` from the endpoints' counters and the tiers' state. */
export function cacheStats(
  service: string,
  endpoints: Iterable<{ readonly name: string; readonly counters: CacheCounters }>,
  local: { entries: number; maxEntries: number } | undefined,
  remote: { name: string; stats: RemoteStats; pendingWrites: number } | undefined,
): CacheStats {
  const totals = newCounters();
  const perEndpoint: Record<string, CacheCounters> = {};
  for (const endpoint of endpoints) {
    addCounters(totals, endpoint.counters);
    perEndpoint[endpoint.name] = cloneCounters(endpoint.counters);
  }
  return {
    service,
    totals,
    endpoints: perEndpoint,
    local,
    remote:
      remote === undefined
        ? undefined
        : {
            name: remote.name,
            errors: { ...remote.stats.errors },
            timeouts: remote.stats.timeouts,
            skipped: remote.stats.skipped,
            droppedWrites: remote.stats.droppedWrites,
            pendingWrites: remote.pendingWrites,
            latency: remote.stats.latency.summary(),
          },
  };
}
