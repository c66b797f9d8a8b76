/**
 * What every part of one cached client shares: the service's name, the clock (and the epoch
 * time derived from it), the rate-limited logger and the event listeners.
 */
import type { Logger } from '../core/call.js';
import type { Clock } from '../core/clock.js';
import type { CacheErrorEvent, CacheEvent } from './types.js';

export class CacheContext {
  readonly cacheListeners = new Set<(event: CacheEvent) => void>();
  readonly errorListeners = new Set<(event: CacheErrorEvent) => void>();
  /** Set by `close()`; every part stops starting work. */
  closed = false;
  /** Work started behind the callers' backs (refreshes, lease releases); `close()` waits for it. */
  readonly background = new Set<Promise<unknown>>();
  private readonly anchorWall = Date.now();
  private readonly anchorMono: number;
  private readonly lastLogged = new Map<string, { at: number; suppressed: number }>();

  constructor(
    readonly service: string,
    readonly clock: Clock,
    private readonly logger: Logger | undefined,
  ) {
    this.anchorMono = clock.now();
  }

  /**
   * Epoch milliseconds on the injectable clock: anchored to the wall clock once, so that
   * `storedAt` means the same in every process and tests can move time by hand.
   */
  epochNow(): number {
    return this.anchorWall + (this.clock.now() - this.anchorMono);
  }

  /** Logs at most once a second per `kind` (a sick remote tier fails on every call). */
  log(kind: string, level: 'warn' | 'error' | 'info', fields: Record<string, unknown>, message: string): void {
    const logger = this.logger;
    if (logger === undefined) return;
    const now = this.clock.now();
    const last = this.lastLogged.get(kind);
    if (last !== undefined && now - last.at < 1000) {
      last.suppressed++;
      return;
    }
    logger[level](last?.suppressed ? { ...fields, suppressed: last.suppressed } : fields, message);
    this.lastLogged.set(kind, { at: now, suppressed: 0 });
  }

  /** Keeps `promise` in `background` until it settles. */
  track(promise: Promise<unknown>): void {
    this.background.add(promise);
    void promise.finally(() => this.background.delete(promise));
  }

  /** Calls listeners; one that throws is logged and never changes the call's outcome. */
  notify<T>(listeners: Set<(event: T) => void>, event: T): void {
    for (const listener of listeners) {
      try {
        listener(event);
      } catch (error) {
        this.log('listener', 'error', { err: errorMessage(error) }, 'cache event listener threw');
      }
    }
  }
}

export function errorMessage(error: unknown): string {
  return (error as Error)?.message ?? String(error);
}
