/**
 * The remote tier as `withCache` uses it: every operation has its own short timeout (cut to
 * half of the call's remaining budget), and a failure or timeout is counted, logged, reported
 * on `cache-error` and returned as `FAILED`, never thrown. Writes go behind the caller's back,
 * bounded in number.
 */
import { type WheelEntry, wheelOf } from '../core/clock.js';
import type { Deadline } from '../core/deadline.js';
import { type CacheContext, errorMessage } from './context.js';
import { decodeEnvelope, type Entry, encodeEnvelope } from './envelope.js';
import { type RemoteCache, RemoteCacheError, type RemoteOperationOptions } from './remote.js';
import { RemoteStats } from './stats.js';
import { cacheDefaults, type RemoteOperation } from './types.js';

export const FAILED: unique symbol = Symbol('remote operation failed');
export type Failed = typeof FAILED;

/** A remote read: an entry, a miss, a value that is not an envelope for this key, or a failure. */
export type RemoteRead = Entry | undefined | 'corrupt' | Failed;

class Timer implements WheelEntry {
  wheelSlot = -1;
  wheelPrev: WheelEntry | null = null;
  wheelNext: WheelEntry | null = null;
  constructor(readonly onTimer: () => void) {}
}

/**
 * Runs remote operations (the tier's, and the bus's publishes): timeout, counters, logs and
 * `cache-error` events. Never throws.
 */
export class RemoteCalls {
  readonly stats: RemoteStats;

  constructor(
    private readonly timeoutMs: number,
    private readonly context: CacheContext,
    /** For logs: the remote tier's name. */
    private readonly remoteName: string | undefined,
  ) {
    this.stats = new RemoteStats(context.clock);
  }

  /** One remote operation: its own timeout (≤ half the call's remaining budget), errors counted, never thrown. */
  async call<T>(
    operation: RemoteOperation,
    key: string | undefined,
    deadline: Deadline | undefined,
    run: (op: RemoteOperationOptions) => Promise<T>,
  ): Promise<T | Failed> {
    let limit = this.timeoutMs;
    if (deadline !== undefined) {
      const half = deadline.remainingMs() / 2;
      if (half < 1) {
        this.stats.skipped++;
        return FAILED;
      }
      if (half < limit) limit = half;
    }
    const clock = this.context.clock;
    const startedAt = clock.now();
    try {
      const result = await this.withTimeout(run({ timeoutMs: limit }), limit);
      if (operation === 'get') this.stats.latency.record(clock.now() - startedAt);
      return result;
    } catch (error) {
      this.stats.errors[operation]++;
      if (error instanceof RemoteCacheError && error.code === 'REMOTE_TIMEOUT') this.stats.timeouts++;
      if (operation === 'get') this.stats.latency.record(clock.now() - startedAt);
      this.context.log(
        `remote-${operation}`,
        'warn',
        { remote: this.remoteName, operation, key, err: errorMessage(error) },
        `remote cache ${operation} failed`,
      );
      const listeners = this.context.errorListeners;
      if (listeners.size > 0) {
        this.context.notify(listeners, { service: this.context.service, operation, key, error });
      }
      return FAILED;
    }
  }

  private withTimeout<T>(promise: Promise<T>, ms: number): Promise<T> {
    const clock = this.context.clock;
    return new Promise<T>((resolve, reject) => {
      const timer = new Timer(() =>
        reject(new RemoteCacheError('REMOTE_TIMEOUT', `remote cache did not answer within ${Math.round(ms)} ms`)),
      );
      wheelOf(clock).schedule(timer, clock.now() + ms);
      promise.then(
        (value) => {
          wheelOf(clock).cancel(timer);
          resolve(value);
        },
        (error: unknown) => {
          wheelOf(clock).cancel(timer);
          reject(error);
        },
      );
    });
  }
}

export class RemoteTier {
  private readonly pending = new Map<string, Promise<void>>();
  private pendingCount = 0;

  constructor(
    readonly cache: RemoteCache,
    readonly calls: RemoteCalls,
    private readonly context: CacheContext,
  ) {}

  get name(): string {
    return this.cache.name;
  }

  get stats(): RemoteStats {
    return this.calls.stats;
  }

  get pendingWrites(): number {
    return this.pendingCount;
  }

  call<T>(
    operation: RemoteOperation,
    key: string | undefined,
    deadline: Deadline | undefined,
    run: (op: RemoteOperationOptions) => Promise<T>,
  ): Promise<T | Failed> {
    return this.calls.call(operation, key, deadline, run);
  }

  /** Reads and decodes one key. */
  async read(key: string, deadline: Deadline | undefined): Promise<RemoteRead> {
    const cache = this.cache;
    const raw = await this.call('get', key, deadline, (op) => cache.get(key, op));
    if (raw === FAILED || raw === undefined) return raw;
    return decodeEnvelope(raw, key) ?? 'corrupt';
  }

  /** Writes an entry behind the caller's back; `done` runs once it settled (or was dropped). */
  writeBehind(key: string, entry: Entry, hardTtlMs: number, done: (() => void) | undefined): void {
    if (this.pendingCount >= cacheDefaults.maxPendingWrites) {
      this.stats.droppedWrites++;
      done?.();
      return;
    }
    let payload: string;
    try {
      payload = encodeEnvelope(key, entry);
    } catch (error) {
      this.context.log('encode', 'warn', { key, err: (error as Error)?.message }, 'cache entry could not be encoded');
      done?.();
      return;
    }
    const cache = this.cache;
    this.pendingCount++;
    const set = () => this.call('set', key, undefined, (op) => cache.set(key, payload, hardTtlMs, op));
    // Cold start: the write waits for the first connection (a failed one fails the set at once).
    const coldStart = cache.connecting === true && typeof cache.connect === 'function';
    const write: Promise<void> = (coldStart ? this.connected().then(set) : set()).then(() => {
      this.pendingCount--;
      if (this.pending.get(key) === write) this.pending.delete(key);
      done?.();
    });
    this.pending.set(key, write);
  }

  /** The tier's first connection, at most `cacheDefaults.coldStartWaitMs`; never rejects. */
  private connected(): Promise<void> {
    const clock = this.context.clock;
    return new Promise<void>((resolve) => {
      const timer = new Timer(resolve);
      wheelOf(clock).schedule(timer, clock.now() + cacheDefaults.coldStartWaitMs);
      const done = () => {
        wheelOf(clock).cancel(timer);
        resolve();
      };
      (this.cache.connect as () => Promise<void>).call(this.cache).then(done, done);
    });
  }

  /** The write of `key` still on its way, if any (an invalidation waits for it). */
  pendingWrite(key: string): Promise<void> | undefined {
    return this.pending.get(key);
  }

  /** Every write still on its way. */
  pendingWritesSettled(): Promise<unknown> {
    return Promise.allSettled([...this.pending.values()]);
  }

  async delete(key: string): Promise<boolean> {
    const cache = this.cache;
    return (await this.call('delete', key, undefined, (op) => cache.delete(key, op))) !== FAILED;
  }
}
