/**
 * What a remote (shared) cache tier must do for `withCache`, and the invalidation bus that keeps
 * the local tiers of several processes coherent. The built-in drivers are `memoryCache()`,
 * `redisCache()` and `memcachedCache()`; anything with the same shape works.
 */

/** Per-operation options `withCache` passes to a driver. */
export interface RemoteOperationOptions {
  /**
   * How long this operation may take, in milliseconds: the driver's own `timeoutMs`, or less
   * when the call's deadline is near. `withCache` enforces it as well, so a driver that ignores
   * it still never holds a call up.
   */
  timeoutMs?: number;
}

/**
 * A remote cache tier. Values are strings (`withCache` stores a JSON envelope). Every method
 * rejects on failure (timeouts, connection loss, a dead server); `withCache` treats any
 * rejection as a miss, logs it and counts it. Nothing here may queue work while the cache is
 * unreachable: fail fast instead.
 */
export interface RemoteCache {
  /** Short name for logs and stats: 'memory', 'redis', 'memcached'. */
  readonly name: string;
  /** Per-operation timeout this cache asks for, in milliseconds. @default 50 */
  readonly timeoutMs?: number;
  /** The stored string, or undefined on a miss. */
  get(key: string, options?: RemoteOperationOptions): Promise<string | undefined>;
  /** Stores `value` for `ttlMs` milliseconds (the hard expiry; freshness is in the envelope). */
  set(key: string, value: string, ttlMs: number, options?: RemoteOperationOptions): Promise<void>;
  delete(key: string, options?: RemoteOperationOptions): Promise<void>;
  /**
   * Optional: takes a lease on `key` for `ttlMs` if nobody holds one (Redis `SET NX PX`).
   * Resolves true when this caller got it.
   */
  acquireLease?(key: string, token: string, ttlMs: number, options?: RemoteOperationOptions): Promise<boolean>;
  /** Optional: gives a lease back early, only if `token` still holds it. */
  releaseLease?(key: string, token: string, options?: RemoteOperationOptions): Promise<void>;
  /**
   * Optional: true while the first connection is still being opened (a cold start). Operations
   * then wait for it, up to their timeout, instead of failing at once; and `withCache` does not
   * treat a failure during that time as a sick tier (it still writes the service's answer back).
   * False once the first connection is up or has failed.
   */
  readonly connecting?: boolean;
  /**
   * Optional: resolves once the first connection is open (rejects when it cannot be, within the
   * driver's connect timeout). During a cold start `withCache` waits for it before a write, which
   * is behind the caller's back and so may wait longer than a read.
   */
  connect?(): Promise<void>;
  /** Optional: the invalidation bus that comes with this cache (Redis pub/sub). */
  readonly bus?: InvalidationBus;
  /** Closes connections and timers; later operations reject. */
  close(): Promise<void>;
}

/** A broadcast channel for invalidation messages (keys, never values). */
export interface InvalidationBus {
  /** Sends one message to every subscriber, this process's included. */
  publish(message: string): Promise<void>;
  /**
   * Listens to messages. `onGap` is called when messages may have been lost (the subscription
   * was interrupted and is back), so the listener can drop everything it holds. Resolves (once
   * subscribed) to a function that stops listening.
   */
  subscribe(onMessage: (message: string) => void, onGap?: () => void): Promise<() => Promise<void>>;
}

/** Why a remote cache operation failed. Never reaches a caller of a cached method. */
export type RemoteCacheErrorCode =
  | 'REMOTE_TIMEOUT'
  | 'REMOTE_UNAVAILABLE'
  | 'REMOTE_QUEUE_FULL'
  | 'REMOTE_PROTOCOL'
  | 'REMOTE_SERVER_ERROR'
  | 'REMOTE_CLOSED';

/** A failed remote cache operation. `withCache` turns it into a miss (and counts it). */
export class RemoteCacheError extends Error {
  override name = 'RemoteCacheError';
  readonly code: RemoteCacheErrorCode;

  constructor(code: RemoteCacheErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.code = code;
  }
}

/** Default per-operation timeout of the remote drivers, in milliseconds. */
export const DEFAULT_REMOTE_TIMEOUT_MS = 50;
