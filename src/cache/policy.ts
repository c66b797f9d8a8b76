/**
 * The entry policy: how long an entry is fresh, when a stale one may still be served, and what
 * is cached at all.
 *
 *   storedAt ── fresh (ttlMs, jittered) ── freshUntil ── stale-while-revalidate (staleMs)
 *                                                    └── stale-if-error (staleIfErrorMs)
 *
 * - fresh: served as is.
 * - stale-while-revalidate: served at once; one background refresh is started.
 * - stale-if-error: kept aside while the service is called; served only when the service is
 *   unavailable (see `fallbackApplies`).
 * - negative caching: a 404 is stored for `negativeTtlMs` (never stale) and rethrown to callers.
 */
import { HttpStatusError } from '../core/errors.js';
import { fallbackApplies } from '../fallback/index.js';
import { type Entry, makeEntry } from './envelope.js';
import type { EndpointState } from './options.js';

/** What a local entry allows: serve it fresh, serve it stale while refreshing, or go further down. */
export type LocalVerdict = 'fresh' | 'stale-while-revalidate' | 'load';

/** What a remote entry allows. `stale` may stand in for a failed service (stale-if-error). */
export type RemoteVerdict = 'fresh' | 'stale-while-revalidate' | 'stale' | 'expired';

export class EntryPolicy {
  constructor(
    private readonly jitter: number,
    private readonly random: () => number,
  ) {}

  /** A TTL with up to `jitter` × ttl taken off, so entries written together expire apart. */
  jittered(ms: number): number {
    return Math.max(1, Math.round(ms * (1 - this.jitter * this.random())));
  }

  /** How long past its freshness an entry is kept (for stale serves); negative entries are not. */
  retainMs(endpoint: EndpointState, entry: Entry): number {
    return entry.notFound === undefined ? Math.max(endpoint.staleMs, endpoint.staleIfErrorMs) : 0;
  }

  /** The remote store's hard expiry of an entry. */
  hardTtlMs(endpoint: EndpointState, entry: Entry): number {
    return entry.ttl + this.retainMs(endpoint, entry);
  }

  /** Whether an entry is past everything it can be used for, and can be dropped. */
  expired(endpoint: EndpointState, entry: Entry, now: number): boolean {
    return now >= entry.freshUntil + this.retainMs(endpoint, entry);
  }

  /** A local entry: `localFreshUntil` bounds how long a process serves it without asking the remote tier. */
  local(endpoint: EndpointState, entry: Entry, now: number): LocalVerdict {
    if (now < entry.localFreshUntil) return 'fresh';
    if (now >= entry.freshUntil && now < entry.freshUntil + endpoint.staleMs && entry.notFound === undefined) {
      return 'stale-while-revalidate';
    }
    return 'load';
  }

  /** An entry read from the remote tier (a background refresh never serves it stale-while-revalidate). */
  remote(endpoint: EndpointState, entry: Entry, now: number, background: boolean): RemoteVerdict {
    if (now < entry.freshUntil) return 'fresh';
    if (entry.notFound !== undefined) return 'expired';
    if (!background && now < entry.freshUntil + endpoint.staleMs) return 'stale-while-revalidate';
    return 'stale';
  }

  /** The newer of two stale candidates. */
  newer(current: Entry | undefined, candidate: Entry): Entry {
    return current === undefined || candidate.storedAt > current.storedAt ? candidate : current;
  }

  /** The stale entry if it may still stand in for a failed service. */
  usableIfError(endpoint: EndpointState, stale: Entry | undefined, now: number): Entry | undefined {
    return stale !== undefined && now < stale.freshUntil + endpoint.staleIfErrorMs ? stale : undefined;
  }

  /** Whether a stale value may stand in for this service error. */
  servesStaleFor(error: unknown): boolean {
    return fallbackApplies(error);
  }

  /** The negative entry for a service error, when this endpoint caches it (a 404). */
  negativeEntry(endpoint: EndpointState, error: unknown, now: number): Entry | undefined {
    if (endpoint.negativeTtlMs <= 0 || !(error instanceof HttpStatusError) || error.status !== 404) return undefined;
    return makeEntry(undefined, { status: 404, body: error.bodyExcerpt }, now, this.jittered(endpoint.negativeTtlMs));
  }
}
