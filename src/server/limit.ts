/**
 * `concurrencyLimit()`: the server's side of overload control. An adaptive limit on requests
 * in progress (the same algorithms as the client's bulkhead, src/limit) that answers 503 with
 * `Retry-After` before doing any work once the learned limit is reached.
 *
 * Beyond the limit a request may wait in a short queue, but only if its deadline (the
 * `x-request-timeout-ms` header, read by the same parser as the deadline middleware) leaves
 * time for the wait and the work: the expected wait is `(queued + 1) × RTT ÷ limit` (Little's
 * law), and a request that cannot finish anyway is shed first, at arrival, or from the queue
 * as soon as its remaining budget drops under one RTT. So the queue never grows past what the
 * deadlines allow, and the work the server does is work somebody still waits for.
 */
import { AsyncResource } from 'node:async_hooks';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { channels } from '../core/channels.js';
import { type Clock, systemClock, type WheelEntry, wheelOf } from '../core/clock.js';
import type { Deadline } from '../core/deadline.js';
import { invalidOption } from '../core/errors.js';
import { AdaptiveLimit, checkLimitOptions, type LimitAlgorithmName } from '../limit/index.js';
import { deadlineServerDefaults, parseBudgetHeader } from './budget.js';
import type { FastifyLike } from './fastify.js';

/** Options of {@link concurrencyLimit}. */
export interface ConcurrencyLimitOptions {
  /** The algorithm that learns the limit. @default 'gradient2' */
  adaptive?: LimitAlgorithmName;
  /** The limit never falls below this. @default 5 */
  minConcurrent?: number;
  /** The limit never rises above this. @default 1000 */
  maxConcurrent?: number;
  /** Requests that may wait for a slot (each only while its deadline allows). @default 100 */
  maxQueue?: number;
  /** Header carrying the caller's budget in milliseconds. @default 'x-request-timeout-ms' */
  headerName?: string;
  /** Budgets are capped at this; a request without a usable header gets it. @default 30000 */
  maxMs?: number;
  /** Seconds in the `Retry-After` header of a 503. @default 1 */
  retryAfterS?: number;
  /** Names this limiter in metrics (`telescope:limit:*` channels, Prometheus). @default 'server' */
  name?: string;
  /** Called for each request answered 503. */
  onShed?: (request: IncomingMessage, reason: ShedReason) => void;
  /** Time source. @default systemClock */
  clock?: Clock;
}

/**
 * Why a request was shed: `limit` (the limit and the queue were full), `deadline` (its budget
 * could not cover the expected wait and work), `queue-timeout` (its budget ran low while queued).
 */
export type ShedReason = 'limit' | 'deadline' | 'queue-timeout';

/** What {@link ConcurrencyLimiter.stats} returns. */
export interface ConcurrencyLimitStats {
  name: string;
  algorithm: LimitAlgorithmName;
  /** Requests allowed in progress now. */
  limit: number;
  /** Requests in progress now. */
  inflight: number;
  /** Requests waiting for a slot now. */
  queued: number;
  /** Mean time in progress over the last sample window (ms); 0 before the first. */
  rttMs: number;
  /** Requests admitted since the limiter was made. */
  admitted: number;
  /** Requests answered 503, by reason. */
  shed: Record<ShedReason, number>;
}

/** The limit a server starts at, within [minConcurrent, maxConcurrent] (Netflix's `initialLimit`). */
const serverInitialConcurrent = 20;

export const concurrencyLimitDefaults = {
  adaptive: 'gradient2',
  minConcurrent: 5,
  maxConcurrent: 1000,
  maxQueue: 100,
  maxMs: deadlineServerDefaults.maxMs,
  retryAfterS: 1,
  name: 'server',
} as const;

type Next = (error?: unknown) => void;

/** The middleware (Express / Connect / `node:http`) with its stats and a Fastify plugin. */
export interface ConcurrencyLimiter {
  (request: IncomingMessage, response: ServerResponse, next: Next): void;
  /** A snapshot of the limit, the requests in progress and queued, and the sheds. */
  stats(): ConcurrencyLimitStats;
  /** Fastify plugin sharing this limiter: `fastify.register(limiter.fastify)`. */
  readonly fastify: (fastify: FastifyLike, options: unknown, done: (error?: Error) => void) => void;
}

/** The JSON body of the 503 a shed request gets. */
export const overloadShedBody = JSON.stringify({
  error: 'OVERLOADED',
  message: 'the server is at its concurrency limit; the request was not processed',
});

/** A request as the limiter core sees it: how to continue it and how to shed it. */
export interface LimiterTicket {
  /** Runs the rest of the request (it holds a slot until {@link ServerLimiter.release}). */
  proceed(): void;
  /** Answers 503 (the request never got a slot). */
  shed(reason: ShedReason): void;
  /** True once the caller has gone (a queued request is then dropped silently). */
  readonly gone: boolean;
}

class Queued implements WheelEntry {
  wheelSlot = -1;
  wheelPrev: WheelEntry | null = null;
  wheelNext: WheelEntry | null = null;
  constructor(
    readonly ticket: LimiterTicket,
    readonly deadlineAt: number,
    readonly limiter: ServerLimiter,
  ) {}
  onTimer(): void {
    this.limiter.expire(this);
  }
}

/**
 * The transport-free core of {@link concurrencyLimit}: admission, the deadline-aware queue and
 * the learned limit. The middleware drives it with node:http requests; the storm simulator
 * drives it with simulated ones, so both run the same policy.
 */
export class ServerLimiter {
  readonly name: string;
  readonly algorithm: LimitAlgorithmName;
  readonly maxQueue: number;
  readonly limit: AdaptiveLimit;
  admitted = 0;
  readonly shed: Record<ShedReason, number> = { limit: 0, deadline: 0, 'queue-timeout': 0 };
  readonly #queue: Queued[] = [];
  readonly #clock: Clock;
  readonly #wheel: ReturnType<typeof wheelOf>;
  readonly #onShed: ((ticket: LimiterTicket, reason: ShedReason) => void) | undefined;

  constructor(
    options: {
      algorithm: LimitAlgorithmName;
      minConcurrent: number;
      maxConcurrent: number;
      maxQueue: number;
      name: string;
    },
    clock: Clock,
    onShed?: (ticket: LimiterTicket, reason: ShedReason) => void,
  ) {
    this.name = options.name;
    this.algorithm = options.algorithm;
    this.maxQueue = options.maxQueue;
    this.#clock = clock;
    this.#wheel = wheelOf(clock);
    this.#onShed = onShed;
    this.limit = new AdaptiveLimit({
      algorithm: options.algorithm,
      minConcurrent: options.minConcurrent,
      maxConcurrent: options.maxConcurrent,
      // A cold instance takes its share of a balanced load at once (Netflix's initialLimit):
      // started at minConcurrent it shed the first burst, and callers' balancers then avoided it.
      initialConcurrent: serverInitialConcurrent, // AdaptiveLimit clamps it to the bounds
      // Started above a small capacity, the limit must come down within a few windows.
      decreaseAtOnce: true,
      clock,
      onChange: (limit) => {
        this.#admitWaiting();
        if (channels.limitChange.hasSubscribers) {
          channels.limitChange.publish({
            side: 'server',
            name: this.name,
            algorithm: this.algorithm,
            limit,
            inflight: this.limit.inflight,
            queued: this.#queue.length,
          });
        }
      },
    });
  }

  get queued(): number {
    return this.#queue.length;
  }

  /** A request arrives with `budgetMs` left: it proceeds now, waits, or is shed. */
  arrive(ticket: LimiterTicket, budgetMs: number): void {
    const limit = this.limit;
    const queue = this.#queue;
    if (limit.inflight < limit.limit && queue.length === 0) {
      this.#admit(ticket);
      return;
    }
    limit.blocked();
    const waitMs = ((queue.length + 1) * limit.rttMs) / limit.limit;
    if (!this.#canFinish(budgetMs, waitMs)) {
      this.#shed(ticket, 'deadline');
      return;
    }
    const now = this.#clock.now();
    if (queue.length >= this.maxQueue) {
      // Full. A queued request that can no longer finish (the earliest deadline, given its
      // place in the queue) leaves for this one; otherwise this one is shed.
      let earliest = 0;
      for (let index = 1; index < queue.length; index++) {
        if ((queue[index] as Queued).deadlineAt < (queue[earliest] as Queued).deadlineAt) earliest = index;
      }
      const victim = queue[earliest];
      const victimWaitMs = ((earliest + 1) * limit.rttMs) / limit.limit;
      if (victim === undefined || this.#canFinish(victim.deadlineAt - now, victimWaitMs)) {
        this.#shed(ticket, 'limit');
        return;
      }
      queue.splice(earliest, 1);
      this.#wheel.cancel(victim);
      this.#shed(victim.ticket, 'deadline');
    }
    const entry = new Queued(ticket, now + budgetMs, this);
    queue.push(entry);
    // Leaves the queue once its budget cannot cover one RTT any more.
    this.#wheel.schedule(entry, entry.deadlineAt - limit.rttMs);
  }

  /** An admitted request is done; `dropped` when its caller gave up on it (or it timed out). */
  release(dropped: boolean): void {
    this.limit.release(dropped);
    if (this.#queue.length > 0) this.#admitWaiting();
  }

  /** Forgets a queued request whose caller went away. */
  forget(ticket: LimiterTicket): void {
    const queue = this.#queue;
    for (let index = 0; index < queue.length; index++) {
      const entry = queue[index] as Queued;
      if (entry.ticket === ticket) {
        queue.splice(index, 1);
        this.#wheel.cancel(entry);
        return;
      }
    }
  }

  /** @internal a queued request's budget ran under one RTT */
  expire(entry: Queued): void {
    const index = this.#queue.indexOf(entry);
    if (index === -1) return;
    this.#queue.splice(index, 1);
    this.#shed(entry.ticket, 'queue-timeout');
  }

  #admit(ticket: LimiterTicket): void {
    this.admitted++;
    this.limit.acquire();
    ticket.proceed();
  }

  #shed(ticket: LimiterTicket, reason: ShedReason): void {
    this.shed[reason]++;
    this.#onShed?.(ticket, reason);
    if (channels.limitShed.hasSubscribers) channels.limitShed.publish({ side: 'server', name: this.name, reason });
    ticket.shed(reason);
  }

  /** Whether `remainingMs` covers a wait of `waitMs` and one RTT (always, before the RTT is known). */
  #canFinish(remainingMs: number, waitMs: number): boolean {
    return this.limit.rttMs === 0 || remainingMs >= waitMs + this.limit.rttMs;
  }

  #admitWaiting(): void {
    const queue = this.#queue;
    const limit = this.limit;
    while (queue.length > 0 && limit.inflight < limit.limit) {
      const entry = queue.shift() as Queued;
      this.#wheel.cancel(entry);
      if (entry.ticket.gone) continue;
      if (!this.#canFinish(entry.deadlineAt - this.#clock.now(), 0)) {
        this.#shed(entry.ticket, 'queue-timeout');
        continue;
      }
      this.#admit(entry.ticket);
    }
    if (queue.length > 0) limit.blocked();
  }
}

/** A node:http request in the limiter: releases its slot once, when answered or abandoned. */
class HttpTicket implements LimiterTicket {
  /** Admitted or shed (not waiting). */
  settled = false;
  #released = false;
  constructor(
    readonly core: ServerLimiter,
    readonly request: IncomingMessage,
    readonly response: ServerResponse,
    readonly next: () => void,
    readonly answer: (ticket: HttpTicket) => void,
  ) {}
  get gone(): boolean {
    return this.response.destroyed;
  }
  proceed(): void {
    this.settled = true;
    this.response.once('finish', this.done);
    this.response.once('close', this.done);
    this.next();
  }
  shed(): void {
    this.settled = true;
    this.answer(this);
  }
  /** 'finish' or 'close' of the response, whichever comes first. */
  readonly done = (): void => {
    if (this.#released) return;
    this.#released = true;
    const response = this.response;
    response.removeListener('finish', this.done);
    response.removeListener('close', this.done);
    // A caller that gave up before the answer is a drop. The handler's own 5xx are not: most
    // pass on a dependency's failure, and counting them would shrink this server's limit
    // whenever the tier behind it sheds.
    this.core.release(!response.writableFinished);
  };
}

/**
 * An adaptive concurrency limit for a server.
 *
 * @example
 * const limiter = concurrencyLimit({ adaptive: 'gradient2', maxQueue: 50 });
 * app.use(limiter);                    // Express, or limiter(req, res, next) with node:http
 * await fastify.register(limiter.fastify);
 * limiter.stats(); // { limit, inflight, queued, shed: { limit, deadline, 'queue-timeout' }, ... }
 */
export function concurrencyLimit(options: ConcurrencyLimitOptions = {}): ConcurrencyLimiter {
  if (typeof options !== 'object' || options === null) invalidOption('concurrencyLimit options', 'an object', options);
  const checked = checkLimitOptions(
    '',
    { ...options, adaptive: options.adaptive ?? concurrencyLimitDefaults.adaptive },
    concurrencyLimitDefaults,
  );
  const maxMs = options.maxMs ?? concurrencyLimitDefaults.maxMs;
  if (!(Number.isFinite(maxMs) && maxMs > 0 && maxMs <= 2 ** 31 - 1)) {
    invalidOption('maxMs', 'a positive number ≤ 2147483647', maxMs);
  }
  const retryAfterS = options.retryAfterS ?? concurrencyLimitDefaults.retryAfterS;
  if (!(Number.isInteger(retryAfterS) && retryAfterS >= 0 && retryAfterS <= 86_400)) {
    invalidOption('retryAfterS', 'an integer in [0, 86400]', retryAfterS);
  }
  const headerName = (options.headerName ?? deadlineServerDefaults.headerName).toLowerCase();
  if (!/^[!#$%&'*+.^_`|~0-9a-z-]+$/.test(headerName)) invalidOption('headerName', 'an HTTP header name', headerName);
  const name = options.name ?? concurrencyLimitDefaults.name;
  if (typeof name !== 'string' || name.length === 0) invalidOption('name', 'a non-empty string', name);
  const clock = options.clock ?? systemClock;
  const onShed = options.onShed;
  const retryAfter = String(retryAfterS);
  const shedHeaders = {
    'content-type': 'application/json',
    'content-length': String(Buffer.byteLength(overloadShedBody)),
    'retry-after': retryAfter,
  };
  const core = new ServerLimiter({ ...checked, name }, clock, (ticket, reason) => {
    onShed?.((ticket as HttpTicket).request, reason);
  });
  const budgetOf = (request: IncomingMessage) =>
    (request as { deadline?: Deadline }).deadline?.remainingMs() ??
    parseBudgetHeader(request.headers[headerName], maxMs) ??
    maxMs;
  const answerNode = (ticket: HttpTicket) => {
    const response = ticket.response;
    if (response.headersSent || response.destroyed) return;
    response.writeHead(503, shedHeaders);
    response.end(overloadShedBody);
  };
  const run = (
    request: IncomingMessage,
    response: ServerResponse,
    next: () => void,
    answer: (ticket: HttpTicket) => void,
  ) => {
    const fast = core.limit.inflight < core.limit.limit && core.queued === 0;
    // A request that may wait resumes later in its own async context (its deadline).
    const ticket = new HttpTicket(core, request, response, fast ? next : AsyncResource.bind(next), answer);
    core.arrive(ticket, fast ? maxMs : budgetOf(request));
    if (!ticket.settled) response.once('close', () => core.forget(ticket));
  };

  const middleware = ((request: IncomingMessage, response: ServerResponse, next: Next) => {
    run(request, response, next as () => void, answerNode);
  }) as ConcurrencyLimiter;

  const fastify: ConcurrencyLimiter['fastify'] = (instance, _options, done) => {
    instance.addHook('onRequest', (request, reply, next) => {
      run(request.raw, reply.raw, next, () => {
        if (reply.raw.headersSent || reply.raw.destroyed) return;
        reply
          .code(503)
          .headers({ 'content-type': 'application/json', 'retry-after': retryAfter })
          .send(overloadShedBody);
      });
    });
    done();
  };
  // As fastify-plugin: register on the parent, not an encapsulated child.
  Object.assign(fastify, {
    [Symbol.for('skip-override')]: true,
    [Symbol.for('fastify.display-name')]: 'telescope-concurrency-limit',
  });

  return Object.assign(middleware, {
    fastify,
    stats: (): ConcurrencyLimitStats => ({
      name,
      algorithm: checked.algorithm,
      limit: core.limit.limit,
      inflight: core.limit.inflight,
      queued: core.queued,
      rttMs: Math.round(core.limit.rttMs * 100) / 100,
      admitted: core.admitted,
      shed: { ...core.shed },
    }),
  });
}
