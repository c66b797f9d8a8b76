/**
 * Single-flight: one load per key at a time.
 *
 * - In a process, concurrent misses of one key share one flight (`SingleFlight`). Each caller
 *   waits with its own signal and, when it joined someone else's flight, its own deadline; the
 *   shared request is aborted only when every caller that could abort has.
 * - Across processes, with `lease`, one process at a time refreshes a key (`Leases`: Redis
 *   `SET NX PX` on `<key>#lease`); the others poll the remote tier briefly for its answer.
 */
import { sleep } from '../core/clock.js';
import type { Deadline } from '../core/deadline.js';
import { ErrorCode, TelescopeError } from '../core/errors.js';
import type { CacheContext } from './context.js';
import type { Entry } from './envelope.js';
import type { RemoteCache } from './remote.js';
import { FAILED, type Failed, type RemoteTier } from './remote-tier.js';
import type { CacheStatus, LeaseOptions } from './types.js';

/** How a flight ended, for everyone waiting on it. */
export interface Outcome {
  readonly entry: Entry;
  readonly status: Exclude<CacheStatus, 'bypass'>;
  /** The value came from another process's lease holder. */
  readonly waited: boolean;
  /** Rejects the callers with this (the service's 404 when it was just cached as negative). */
  readonly reject?: unknown;
  /** The error a stale-if-error value stands in for. */
  readonly error?: unknown;
  readonly fallback?: boolean;
  /** A stale remote value was served: refresh it in the background. */
  readonly refresh?: boolean;
}

export interface Flight {
  promise: Promise<Outcome>;
  readonly background: boolean;
  /** The leader's budget (foreground flights). */
  readonly deadline: Deadline | undefined;
  /** Aborts the shared request once every waiter that can abort has (only when the leader had a signal). */
  readonly controller: AbortController | undefined;
  waiters: number;
  /** Set when the key is invalidated while the flight runs: its answer is not stored. */
  invalidated: boolean;
}

export class SingleFlight {
  private readonly flights = new Map<string, Flight>();

  constructor(private readonly context: CacheContext) {}

  has(key: string): boolean {
    return this.flights.has(key);
  }

  /** The flight a new caller of `key` may join: not one every waiter gave up on (it is being aborted). */
  joinable(key: string): Flight | undefined {
    const flight = this.flights.get(key);
    return flight?.controller?.signal.aborted ? undefined : flight;
  }

  /** Starts the flight of `key`; `run` does the work. Call `end` when it settled. */
  start(
    key: string,
    background: boolean,
    deadline: Deadline | undefined,
    signalled: boolean,
    run: (flight: Flight) => Promise<Outcome>,
  ): Flight {
    const flight: Flight = {
      promise: undefined as unknown as Promise<Outcome>,
      background,
      deadline,
      controller: signalled ? new AbortController() : undefined,
      waiters: 0,
      invalidated: false,
    };
    flight.promise = run(flight);
    this.flights.set(key, flight);
    return flight;
  }

  end(key: string, flight: Flight): void {
    if (this.flights.get(key) === flight) this.flights.delete(key);
  }

  /** The running flight of `key` will not store its answer (the key was invalidated meanwhile). */
  invalidate(key: string): void {
    const flight = this.flights.get(key);
    if (flight !== undefined) flight.invalidated = true;
  }

  /** Every running flight, settled. */
  settled(): Promise<unknown> {
    return Promise.allSettled([...this.flights.values()].map((flight) => flight.promise));
  }

  /**
   * A caller's wait on a flight, bounded by its own signal and by `own` (its deadline, when it
   * joined a flight whose leader has more time).
   */
  wait(flight: Flight, signal: AbortSignal | undefined, own: Deadline | undefined, endpoint: string): Promise<Outcome> {
    if (own !== undefined && flight.deadline !== undefined && own.at >= flight.deadline.at) own = undefined;
    if (flight.controller !== undefined) flight.waiters++;
    if (signal === undefined && own === undefined) return flight.promise;
    const details = { service: this.context.service, endpoint, requestSent: true };
    if (signal?.aborted) {
      this.leave(flight);
      return Promise.reject(
        new TelescopeError(ErrorCode.ABORTED, 'call aborted by the caller before it started', {
          ...details,
          requestSent: false,
          cause: signal.reason,
        }),
      );
    }
    return new Promise<Outcome>((resolve, reject) => {
      const ownSignal = own?.signal;
      const cleanup = () => {
        signal?.removeEventListener('abort', onAbort);
        ownSignal?.removeEventListener('abort', onDeadline);
      };
      const onAbort = () => {
        cleanup();
        this.leave(flight);
        reject(
          new TelescopeError(ErrorCode.ABORTED, 'call aborted by the caller', { ...details, cause: signal?.reason }),
        );
      };
      const onDeadline = () => {
        cleanup();
        this.leave(flight);
        reject(
          new TelescopeError(
            ErrorCode.DEADLINE_EXCEEDED,
            'deadline exceeded while waiting for a shared request',
            details,
          ),
        );
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      ownSignal?.addEventListener('abort', onDeadline, { once: true });
      flight.promise.then(
        (outcome) => {
          cleanup();
          resolve(outcome);
        },
        (error: unknown) => {
          cleanup();
          reject(error);
        },
      );
    });
  }

  private leave(flight: Flight): void {
    if (flight.controller === undefined) return;
    flight.waiters--;
    if (flight.waiters <= 0) flight.controller.abort(new Error('every caller waiting for this request aborted'));
  }
}

/** Cross-process refresh leases on the remote tier. */
export class Leases {
  private sequence = 0;

  constructor(
    private readonly options: Required<LeaseOptions>,
    private readonly remote: RemoteTier,
    private readonly context: CacheContext,
    /** This cached client's id: tokens are `<origin>:<n>`. */
    private readonly origin: string,
  ) {}

  /** The token when this process got the lease, false when another holds it, FAILED when the tier failed. */
  async acquire(key: string, deadline: Deadline | undefined): Promise<string | false | Failed> {
    const token = `${this.origin}:${++this.sequence}`;
    const cache = this.remote.cache;
    const acquire = (cache.acquireLease as NonNullable<RemoteCache['acquireLease']>).bind(cache);
    const got = await this.remote.call('lease', key, deadline, (op) =>
      acquire(`${key}#lease`, token, this.options.ttlMs, op),
    );
    if (got === FAILED) return FAILED;
    return got === true ? token : false;
  }

  /** Gives the lease back, behind the caller's back. */
  release(key: string, token: string): void {
    const cache = this.remote.cache;
    if (cache.releaseLease === undefined) return;
    const release = cache.releaseLease.bind(cache);
    this.context.track(this.remote.call('lease', key, undefined, (op) => release(`${key}#lease`, token, op)));
  }

  /** Waits for another process's lease holder to write the key; undefined when it did not in time. */
  async waitForHolder(key: string, deadline: Deadline | undefined): Promise<Entry | undefined> {
    const { clock } = this.context;
    let waitMs = this.options.waitMs;
    if (deadline !== undefined) waitMs = Math.min(waitMs, deadline.remainingMs() / 2);
    const until = clock.now() + waitMs;
    while (clock.now() + this.options.pollMs <= until && !this.context.closed) {
      await sleep(clock, this.options.pollMs);
      const read = await this.remote.read(key, deadline);
      if (read === FAILED) return undefined;
      if (read === undefined || read === 'corrupt') continue;
      if (this.context.epochNow() < read.freshUntil) return read;
    }
    return undefined;
  }
}
