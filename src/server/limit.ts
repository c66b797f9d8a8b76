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

/** Minimal structural types of the Fastify API the plugin uses (no dependency on fastify). */
interface FastifyLike {
  addHook(
    name: 'onRequest',
    hook: (
      request: { raw: IncomingMessage; deadline?: Deadline },
      reply: {
        raw: ServerResponse;
        code(status: number): { headers(values: Record<string, string>): { send(body: string): unknown } };
      },
      done: () => void,
    ) => void,
  ): unknown;
}

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

class Queued implements WheelEntry {
  wheelSlot = -1;
  wheelPrev: WheelEntry | null = null;
  wheelNext: WheelEntry | null = null;
  constructor(
    readonly request: IncomingMessage,
    readonly response: ServerResponse,
    /** Runs the rest of the request in its own async context. */
    readonly proceed: () => void,
    readonly answer: (reason: ShedReason) => void,
    readonly deadlineAt: number,
    readonly expire: (entry: Queued) => void,
  ) {}
  onTimer(): void {
    this.expire(this);
  }
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
  const wheel = wheelOf(clock);
  const queue: Queued[] = [];
  const shed: Record<ShedReason, number> = { limit: 0, deadline: 0, 'queue-timeout': 0 };
  let admitted = 0;
  const retryAfter = String(retryAfterS);
  const shedHeaders = {
    'content-type': 'application/json',
    'content-length': String(Buffer.byteLength(overloadShedBody)),
    'retry-after': retryAfter,
  };

  const limiter = new AdaptiveLimit({
    algorithm: checked.algorithm,
    minConcurrent: checked.minConcurrent,
    maxConcurrent: checked.maxConcurrent,
    initialConcurrent: Math.min(checked.maxConcurrent, Math.max(checked.minConcurrent, 20)),
    clock,
    onChange: (limit) => {
      admitWaiting();
      if (channels.limitChange.hasSubscribers) {
        channels.limitChange.publish({
          side: 'server',
          name,
          algorithm: checked.algorithm,
          limit,
          inflight: limiter.inflight,
          queued: queue.length,
        });
      }
    },
  });

  const countShed = (request: IncomingMessage, reason: ShedReason) => {
    shed[reason]++;
    onShed?.(request, reason);
    if (channels.limitShed.hasSubscribers) channels.limitShed.publish({ side: 'server', name, reason });
  };

  /** Frees the slot once, when the response is done or its connection closes. */
  const track = (response: ServerResponse) => {
    let done = false;
    const release = () => {
      if (done) return;
      done = true;
      response.removeListener('finish', release);
      response.removeListener('close', release);
      const status = response.statusCode;
      // Overload answers of the handler, and callers that gave up before the answer: drops.
      limiter.release(!response.writableFinished || status === 503 || status === 429 || status === 504);
      if (queue.length > 0) admitWaiting();
    };
    response.once('finish', release);
    response.once('close', release);
  };

  const admit = (response: ServerResponse, proceed: () => void) => {
    admitted++;
    limiter.acquire();
    track(response);
    proceed();
  };

  /** Whether a request with `remainingMs` left can still wait `waitMs` and do its work. */
  const canFinish = (remainingMs: number, waitMs: number) =>
    limiter.rttMs === 0 || remainingMs >= waitMs + limiter.rttMs;

  function admitWaiting(): void {
    while (queue.length > 0 && limiter.inflight < limiter.limit) {
      const entry = queue.shift() as Queued;
      wheel.cancel(entry);
      if (entry.response.destroyed) continue;
      if (!canFinish(entry.deadlineAt - clock.now(), 0)) {
        countShed(entry.request, 'queue-timeout');
        entry.answer('queue-timeout');
        continue;
      }
      admit(entry.response, entry.proceed);
    }
    if (queue.length > 0) limiter.blocked();
  }

  const expire = (entry: Queued) => {
    const index = queue.indexOf(entry);
    if (index === -1) return;
    queue.splice(index, 1);
    countShed(entry.request, 'queue-timeout');
    entry.answer('queue-timeout');
  };

  /** Admits, queues or sheds one request; `proceed` continues it, `answer` sends the 503. */
  const handle = (
    request: IncomingMessage,
    response: ServerResponse,
    proceed: () => void,
    answer: (reason: ShedReason) => void,
  ) => {
    if (limiter.inflight < limiter.limit && queue.length === 0) {
      admit(response, proceed);
      return;
    }
    limiter.blocked();
    const budgetMs =
      (request as { deadline?: Deadline }).deadline?.remainingMs() ??
      parseBudgetHeader(request.headers[headerName], maxMs) ??
      maxMs;
    const waitMs = ((queue.length + 1) * limiter.rttMs) / limiter.limit;
    if (!canFinish(budgetMs, waitMs)) {
      countShed(request, 'deadline');
      answer('deadline');
      return;
    }
    if (queue.length >= checked.maxQueue) {
      // Full. A queued request that can no longer finish (the earliest deadline, given its
      // place in the queue) leaves for this one; otherwise this one is shed.
      let earliest = 0;
      for (let index = 1; index < queue.length; index++) {
        if ((queue[index] as Queued).deadlineAt < (queue[earliest] as Queued).deadlineAt) earliest = index;
      }
      const victim = queue[earliest];
      const victimWaitMs = ((earliest + 1) * limiter.rttMs) / limiter.limit;
      if (victim === undefined || canFinish(victim.deadlineAt - clock.now(), victimWaitMs)) {
        countShed(request, 'limit');
        answer('limit');
        return;
      }
      queue.splice(earliest, 1);
      wheel.cancel(victim);
      countShed(victim.request, 'deadline');
      victim.answer('deadline');
    }
    const deadlineAt = clock.now() + budgetMs;
    const entry = new Queued(request, response, AsyncResource.bind(proceed), answer, deadlineAt, expire);
    queue.push(entry);
    // Leaves the queue once its budget cannot cover one RTT any more.
    wheel.schedule(entry, deadlineAt - (limiter.rttMs > 0 ? limiter.rttMs : 0));
    response.once('close', () => {
      const index = queue.indexOf(entry);
      if (index !== -1) {
        queue.splice(index, 1);
        wheel.cancel(entry);
      }
    });
  };

  const answerNode = (response: ServerResponse) => () => {
    if (response.headersSent || response.destroyed) return;
    response.writeHead(503, shedHeaders);
    response.end(overloadShedBody);
  };

  const middleware = ((request: IncomingMessage, response: ServerResponse, next: Next) => {
    handle(request, response, next as () => void, answerNode(response));
  }) as ConcurrencyLimiter;

  const fastify: ConcurrencyLimiter['fastify'] = (instance, _options, done) => {
    instance.addHook('onRequest', (request, reply, next) => {
      handle(request.raw, reply.raw, next, () => {
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
      limit: limiter.limit,
      inflight: limiter.inflight,
      queued: queue.length,
      rttMs: Math.round(limiter.rttMs * 100) / 100,
      admitted,
      shed: { ...shed },
    }),
  });
}
