/**
 * The local tier: an in-process LRU of decoded, frozen entries. With a remote tier, an entry is
 * served from here for at most `ttlMs` before the remote tier is asked again (`localFreshUntil`),
 * which bounds how long processes disagree when an invalidation is missed.
 */
import { LRUCache } from 'lru-cache';
import type { CacheContext } from './context.js';
import type { Entry } from './envelope.js';
import type { EndpointState } from './options.js';
import type { EntryPolicy } from './policy.js';

export class LocalTier {
  private readonly lru: LRUCache<string, Entry>;

  constructor(
    readonly maxEntries: number,
    private readonly ttlMs: number,
    /** Without a remote tier there is nobody to ask again: entries are served for their full TTL. */
    private readonly bounded: boolean,
    private readonly policy: EntryPolicy,
    private readonly context: CacheContext,
  ) {
    this.lru = new LRUCache<string, Entry>({ max: maxEntries });
  }

  get size(): number {
    return this.lru.size;
  }

  /** The entry, unless it is past every use (then it is dropped). */
  get(key: string, endpoint: EndpointState, now: number): Entry | undefined {
    const entry = this.lru.get(key);
    if (entry === undefined) return undefined;
    if (this.policy.expired(endpoint, entry, now)) {
      this.lru.delete(key);
      return undefined;
    }
    return entry;
  }

  set(key: string, entry: Entry): void {
    entry.localFreshUntil = this.bounded
      ? Math.min(entry.freshUntil, this.context.epochNow() + this.ttlMs)
      : entry.freshUntil;
    this.lru.set(key, entry);
  }

  delete(key: string): void {
    this.lru.delete(key);
  }

  clear(): void {
    this.lru.clear();
  }
}
