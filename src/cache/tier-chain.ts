/**
 * The tier chain: what one flight does for a key the local tier could not answer.
 *
 *   remote tier ── fresh ──────────────────────────────► serve (and fill the local tier)
 *        │      └─ stale inside staleMs ───────────────► serve, refresh in the background
 *        │ miss, stale, corrupt or failed
 *        ▼
 *   lease (optional) ── another process holds it ──────► wait for its answer (or call anyway)
 *        ▼
 *   service ── answer ──────────────────────────────────► serve, store locally, write behind
 *           └─ 404 with negative caching ───────────────► store the 404, reject with it
 *           └─ unavailable, with a stale entry ─────────► serve it (stale-if-error)
 *
 * A flight whose remote read failed does not write back (the tier is sick, and the write
 * would only queue behind it), unless the tier was still opening its first connection (a cold
 * start is not a failure: the write waits for the connection, up to its timeout).
 */
import { AsyncLocalStorage } from 'node:async_hooks';
import type { CallOptions } from '../client/index.js';
import { Deadline } from '../core/deadline.js';
import { ErrorCode as Codes, type ErrorCode, isTelescopeError, TelescopeError } from '../core/errors.js';
import { currentDeadline } from '../deadline/index.js';
import { type CacheContext, errorMessage } from './context.js';
import { deepFreeze, type Entry, makeEntry, notPlainJson } from './envelope.js';
import type { LocalTier } from './local-tier.js';
import type { EndpointState } from './options.js';
import type { EntryPolicy } from './policy.js';
import { FAILED, type RemoteTier } from './remote-tier.js';
import type { Flight, Leases, Outcome, SingleFlight } from './single-flight.js';

interface ServiceAnswer {
  value: unknown;
  /** The endpoint's fallback answered (not cached). */
  fellBack: boolean;
  code: string | undefined;
}

export class TierChain {
  private readonly unbounded: Deadline;
  /** Set by the client's `fallback` event inside a service call, to tell a fallback answer from the service's. */
  readonly fallbackMarks = new AsyncLocalStorage<{ endpoint: string; fellBack: boolean; code: string | undefined }>();

  constructor(
    private readonly context: CacheContext,
    private readonly policy: EntryPolicy,
    private readonly flights: SingleFlight,
    private readonly local: LocalTier | undefined,
    private readonly remote: RemoteTier | undefined,
    private readonly leases: Leases | undefined,
  ) {
    this.unbounded = new Deadline(Number.POSITIVE_INFINITY, context.clock);
  }

  /** The call's budget: its deadline (or the ambient one), cut by its own or the endpoint's timeout. */
  callDeadline(endpoint: EndpointState, callOptions: CallOptions | undefined): Deadline | undefined {
    let budget = callOptions?.deadline ?? currentDeadline();
    const timeoutMs = callOptions?.timeoutMs ?? endpoint.definitionTimeoutMs;
    if (typeof timeoutMs === 'number' && Number.isFinite(timeoutMs) && timeoutMs > 0) {
      budget = Deadline.min(Deadline.after(timeoutMs, this.context.clock), budget);
    }
    return budget;
  }

  /** Starts the flight of `key` (background: a refresh, detached from any caller). */
  start(
    endpoint: EndpointState,
    key: string,
    args: unknown[],
    callOptions: CallOptions | undefined,
    localEntry: Entry | undefined,
    background: boolean,
  ): Flight {
    const flight = this.flights.start(
      key,
      background,
      background ? undefined : this.callDeadline(endpoint, callOptions),
      !background && callOptions?.signal !== undefined,
      (started) => this.load(endpoint, key, args, callOptions, localEntry, started),
    );
    const settled = flight.promise.then(
      (outcome) => {
        this.flights.end(key, flight);
        if (background) {
          if (outcome.status === 'service') endpoint.counters.refreshes++;
          else if (outcome.status === 'stale-if-error') {
            endpoint.counters.refreshes++;
            endpoint.counters.refreshErrors++;
          }
        }
        if (outcome.refresh && !this.context.closed) this.refresh(endpoint, key, args, callOptions, outcome.entry);
      },
      (error: unknown) => {
        this.flights.end(key, flight);
        if (background) {
          endpoint.counters.refreshes++;
          endpoint.counters.refreshErrors++;
          this.context.log(
            `refresh:${endpoint.name}`,
            'warn',
            { endpoint: endpoint.name, key, err: errorMessage(error) },
            'background refresh failed; the stale value stays',
          );
        }
      },
    );
    if (background) this.context.track(settled);
    return flight;
  }

  /** Refreshes `key` in the background unless a flight of it is running already. */
  refresh(
    endpoint: EndpointState,
    key: string,
    args: unknown[],
    callOptions: CallOptions | undefined,
    entry: Entry,
  ): void {
    if (this.context.closed || this.flights.has(key)) return;
    this.start(endpoint, key, args, callOptions, entry, true);
  }

  /** The work of a flight: remote tier, then (under a lease if configured) the service. */
  private async load(
    endpoint: EndpointState,
    key: string,
    args: unknown[],
    callOptions: CallOptions | undefined,
    localEntry: Entry | undefined,
    flight: Flight,
  ): Promise<Outcome> {
    const { context, policy, remote } = this;
    const deadline = flight.deadline;
    let stale = localEntry !== undefined && localEntry.notFound === undefined ? localEntry : undefined;
    let readFailed = false;
    if (remote !== undefined) {
      const coldStart = remote.cache.connecting === true;
      const read = await remote.read(key, deadline);
      if (read === FAILED) {
        // A tier still opening its first connection is not sick: the write still goes (and waits
        // for the connection). One whose first connection failed is.
        readFailed = !(coldStart && remote.cache.connecting === true);
        // The remote tier is sick; a local entry still inside its own TTL is good enough.
        if (localEntry !== undefined && context.epochNow() < localEntry.freshUntil) {
          return { entry: localEntry, status: 'local', waited: false };
        }
      } else if (read === 'corrupt') {
        endpoint.counters.corrupt++;
        context.log(
          `corrupt:${endpoint.name}`,
          'warn',
          { endpoint: endpoint.name, key },
          'corrupt or foreign cache entry; treated as a miss',
        );
      } else if (read !== undefined) {
        const verdict = policy.remote(endpoint, read, context.epochNow(), flight.background);
        if (verdict === 'fresh') {
          this.local?.set(key, read);
          return { entry: read, status: 'remote', waited: false };
        }
        if (verdict === 'stale-while-revalidate') {
          this.local?.set(key, read);
          return { entry: read, status: 'stale-while-revalidate', waited: false, refresh: true };
        }
        if (verdict === 'stale') stale = policy.newer(stale, read);
      }
    }
    stale = policy.usableIfError(endpoint, stale, context.epochNow());

    let leaseToken: string | undefined;
    if (this.leases !== undefined && !readFailed) {
      const got = await this.leases.acquire(key, deadline);
      if (typeof got === 'string') {
        leaseToken = got;
        endpoint.counters.leases.acquired++;
      } else if (got === false) {
        endpoint.counters.leases.contended++;
        // Another process is refreshing: a background refresh has nothing to do.
        const current = stale ?? localEntry;
        if (flight.background && current !== undefined) {
          return { entry: current, status: 'stale-while-revalidate', waited: false };
        }
        const entry = await this.leases.waitForHolder(key, deadline);
        if (entry !== undefined) {
          endpoint.counters.leases.waitHits++;
          this.local?.set(key, entry);
          return { entry, status: 'remote', waited: true };
        }
      }
    }

    let answer: ServiceAnswer;
    try {
      answer = await this.callService(endpoint, args, callOptions, flight);
    } catch (error) {
      if (leaseToken !== undefined) this.leases?.release(key, leaseToken);
      const negative = policy.negativeEntry(endpoint, error, context.epochNow());
      if (negative !== undefined) {
        this.store(key, negative, endpoint, flight, !readFailed, undefined);
        return { entry: negative, status: 'service', waited: false, reject: error };
      }
      if (stale !== undefined && policy.servesStaleFor(error)) {
        return this.staleIfError(endpoint, key, stale, error, flight.background);
      }
      throw error;
    }
    if (answer.fellBack) {
      if (leaseToken !== undefined) this.leases?.release(key, leaseToken);
      if (stale !== undefined) {
        const error = new TelescopeError(
          (answer.code as ErrorCode | undefined) ?? Codes.CONNECT_FAILED,
          `${context.service}.${endpoint.name} failed (${answer.code}); its fallback answered`,
          { service: context.service, endpoint: endpoint.name },
        );
        return this.staleIfError(endpoint, key, stale, error, flight.background);
      }
      return {
        entry: makeEntry(answer.value, undefined, context.epochNow(), 1),
        status: 'service',
        waited: false,
        fallback: true,
      };
    }
    const reason = notPlainJson(answer.value);
    if (reason !== undefined) {
      endpoint.counters.uncacheable++;
      if (leaseToken !== undefined) this.leases?.release(key, leaseToken);
      context.log(
        `uncacheable:${endpoint.name}`,
        'warn',
        { endpoint: endpoint.name, key, reason },
        'service answer is not plain JSON; served but not cached',
      );
      return { entry: makeEntry(answer.value, undefined, context.epochNow(), 1), status: 'service', waited: false };
    }
    const entry = makeEntry(deepFreeze(answer.value), undefined, context.epochNow(), policy.jittered(endpoint.ttlMs));
    this.store(key, entry, endpoint, flight, !readFailed, leaseToken);
    return { entry, status: 'service', waited: false };
  }

  /** Stores a service answer locally and (unless told not to) remotely; gives the lease back after. */
  private store(
    key: string,
    entry: Entry,
    endpoint: EndpointState,
    flight: Flight,
    writeRemote: boolean,
    leaseToken: string | undefined,
  ): void {
    const leases = this.leases;
    const release =
      leaseToken === undefined || leases === undefined ? undefined : () => leases.release(key, leaseToken);
    if (flight.invalidated || this.context.closed) {
      release?.();
      return;
    }
    this.local?.set(key, entry);
    if (this.remote !== undefined && writeRemote) {
      this.remote.writeBehind(key, entry, this.policy.hardTtlMs(endpoint, entry), release);
    } else release?.();
  }

  private async callService(
    endpoint: EndpointState,
    args: unknown[],
    callOptions: CallOptions | undefined,
    flight: Flight,
  ): Promise<ServiceAnswer> {
    const callArgs = args.slice(0, endpoint.keyArgCount);
    let passed: CallOptions | undefined;
    if (flight.background) {
      // Detached from the caller: its signal, deadline and ambient budget are not the refresh's.
      const { signal: _signal, deadline: _deadline, ...rest } = callOptions ?? {};
      passed = { ...rest, deadline: this.unbounded };
    } else if (callOptions !== undefined || flight.deadline !== undefined || flight.controller !== undefined) {
      const { signal: _signal, ...rest } = callOptions ?? {};
      passed = rest;
      if (flight.deadline !== undefined) passed.deadline = flight.deadline;
      if (flight.controller !== undefined) passed.signal = flight.controller.signal;
    }
    if (passed !== undefined) callArgs.push(passed);
    if (!endpoint.hasFallback) return { value: await endpoint.method(...callArgs), fellBack: false, code: undefined };
    const mark = { endpoint: endpoint.name, fellBack: false, code: undefined as string | undefined };
    const value = await this.fallbackMarks.run(mark, () => endpoint.method(...callArgs));
    return { value, fellBack: mark.fellBack, code: mark.code };
  }

  private staleIfError(
    endpoint: EndpointState,
    key: string,
    stale: Entry,
    error: unknown,
    background: boolean,
  ): Outcome {
    if (!background) {
      this.context.log(
        `stale-if-error:${endpoint.name}`,
        'warn',
        {
          endpoint: endpoint.name,
          key,
          code: isTelescopeError(error) ? error.code : undefined,
          err: errorMessage(error),
          ageMs: Math.max(0, Math.round(this.context.epochNow() - stale.storedAt)),
        },
        'service failed; serving a stale cached value',
      );
    }
    return { entry: stale, status: 'stale-if-error', waited: false, error };
  }
}
