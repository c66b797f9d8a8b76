/**
 * `telescope-http/server`: the callee's side of deadline propagation.
 *
 * Reads the caller's budget from the deadline header, caps it at `maxMs` (a caller cannot
 * grant itself unlimited time), runs the handler inside that deadline (AsyncLocalStorage, so
 * telescope calls made by the handler inherit it), and answers 504 without calling the
 * handler when the budget is already gone on arrival. When the client goes away before the
 * answer (its connection closes), every telescope call made for the request is cancelled
 * (`ABORTED`, its socket closed), so the hops below stop working for nobody.
 *
 * @module telescope-http/server
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { type Clock, systemClock } from '../core/clock.js';
import { CancellationSource, Deadline } from '../core/deadline.js';
import { ErrorCode, invalidOption, TelescopeError } from '../core/errors.js';
import { deadlineStorage, markAmbientDeadlinesUsed } from '../deadline/storage.js';
import { deadlineServerDefaults, parseBudgetHeader } from './budget.js';
import type { FastifyLike } from './fastify.js';

export { Deadline } from '../core/deadline.js';

/** Options of {@link deadlineMiddleware} and {@link fastifyDeadline}. */
export interface DeadlineServerOptions {
  /** The largest budget a caller can ask for. @default 30000 */
  maxMs?: number;
  /** Budget when the header is absent or unusable. @default maxMs */
  defaultMs?: number;
  /** Header that carries the budget (integer milliseconds). @default 'x-request-timeout-ms' */
  headerName?: string;
  /** Called for each request answered 504 because its budget was gone on arrival. */
  onShed?: (request: IncomingMessage, budgetMs: number) => void;
  /** Time source. @default systemClock */
  clock?: Clock;
}

export { deadlineServerDefaults, parseBudgetHeader } from './budget.js';

/** A request the middleware has seen: its deadline is on `req.deadline`. */
export interface DeadlineRequest extends IncomingMessage {
  deadline?: Deadline;
}

type Next = (error?: unknown) => void;

interface ResolvedOptions {
  maxMs: number;
  defaultMs: number;
  headerName: string;
  onShed: DeadlineServerOptions['onShed'];
  clock: Clock;
}

function resolve(options: DeadlineServerOptions): ResolvedOptions {
  const maxMs = options.maxMs ?? deadlineServerDefaults.maxMs;
  // Beyond 2^31 − 1 ms (about 24.8 days) no timer can wait for it.
  if (!(Number.isFinite(maxMs) && maxMs > 0 && maxMs <= 2 ** 31 - 1)) {
    invalidOption('maxMs', 'a positive number ≤ 2147483647', maxMs);
  }
  const defaultMs = options.defaultMs ?? maxMs;
  if (!(Number.isFinite(defaultMs) && defaultMs > 0 && defaultMs <= maxMs)) {
    invalidOption('defaultMs', `a positive number ≤ maxMs (${maxMs})`, defaultMs);
  }
  const headerName = (options.headerName ?? deadlineServerDefaults.headerName).toLowerCase();
  if (!/^[!#$%&'*+.^_`|~0-9a-z-]+$/.test(headerName)) invalidOption('headerName', 'an HTTP header name', headerName);
  markAmbientDeadlinesUsed();
  return { maxMs, defaultMs, headerName, onShed: options.onShed, clock: options.clock ?? systemClock };
}

/**
 * The deadline of an inbound request, or `undefined` when the budget is already gone. The
 * deadline carries the request's cancellation: calls started under it are cancelled when the
 * client goes away before the answer.
 */
function admit(request: DeadlineRequest, response: ServerResponse, options: ResolvedOptions): Deadline | undefined {
  const budgetMs = parseBudgetHeader(request.headers[options.headerName], options.maxMs) ?? options.defaultMs;
  if (budgetMs <= 0) {
    options.onShed?.(request, budgetMs);
    return undefined;
  }
  const clock = options.clock;
  const deadline = new Deadline(clock.now() + budgetMs, clock, new InboundCancellation(response));
  request.deadline = deadline;
  return deadline;
}

/** Why the calls of an abandoned inbound request were cancelled (their `cause`). */
const abandonedReason = (): TelescopeError =>
  new TelescopeError(ErrorCode.ABORTED, 'the inbound request was abandoned by its client before the answer');

/**
 * The cancellation of one inbound request: fires when the response closes before it was
 * finished (the client closed the connection or reset the stream). Costs one small object per
 * request; the one 'close' listener exists only once a call made while handling the request
 * uses it (and an `AbortController` only if something reads `signal`), and the listener goes
 * with the response (it fires, once, when the response finishes too), so keep-alive
 * connections accumulate nothing.
 */
class InboundCancellation extends CancellationSource {
  constructor(readonly response: ServerResponse) {
    super();
  }

  protected override onFirstUse(): void {
    const response = this.response;
    if (response.writableFinished) {
      // Answered already: work that goes on after the answer is not cancelled by the client.
    } else if (response.destroyed || response.socket?.destroyed === true) {
      this.cancel(abandonedReason());
    } else {
      response.once('close', () => {
        if (!response.writableFinished) this.cancel(abandonedReason());
      });
    }
  }
}

/** The JSON body of the 504 answered when a request's budget is gone on arrival. */
export const deadlineShedBody = JSON.stringify({
  error: 'DEADLINE_EXCEEDED',
  message: 'the caller’s deadline had passed when the request arrived; it was not processed',
});
const shedBody = deadlineShedBody;

function answerShed(response: ServerResponse): void {
  if (response.headersSent) return;
  response.writeHead(504, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(shedBody) });
  response.end(shedBody);
}

/**
 * Express / Connect middleware, also usable with plain `node:http` as
 * `deadlineMiddleware(opts)(req, res, next)`.
 *
 * @example
 * app.use(deadlineMiddleware({ maxMs: 5000 }));
 * app.get('/x', async (req, res) => { req.deadline?.remainingMs(); await movies.getMovie({ id: 1 }); });
 */
export function deadlineMiddleware(
  options: DeadlineServerOptions = {},
): (request: IncomingMessage, response: ServerResponse, next: Next) => void {
  const resolved = resolve(options);
  return (request, response, next) => {
    const deadline = admit(request as DeadlineRequest, response, resolved);
    if (deadline === undefined) {
      answerShed(response);
      return;
    }
    deadlineStorage.run(deadline, next);
  };
}

/**
 * Fastify plugin: `fastify.register(fastifyDeadline, { maxMs: 5000 })`. Applies to the whole
 * instance (it is not encapsulated) and sets `request.deadline`.
 */
export function fastifyDeadline(
  fastify: FastifyLike,
  options: DeadlineServerOptions,
  done: (error?: Error) => void,
): void {
  let resolved: ResolvedOptions;
  try {
    resolved = resolve(options ?? {});
  } catch (error) {
    done(error as Error);
    return;
  }
  fastify.decorateRequest?.('deadline', undefined);
  fastify.addHook('onRequest', (request, reply, next) => {
    const deadline = admit(request.raw as DeadlineRequest, reply.raw, resolved);
    if (deadline === undefined) {
      reply.code(504).header('content-type', 'application/json').send(shedBody);
      return;
    }
    request.deadline = deadline;
    // Hooks after this one and the handler run inside the deadline's async context.
    deadlineStorage.run(deadline, next);
  });
  done();
}
// Same as wrapping with fastify-plugin: register on the parent, not an encapsulated child.
Object.assign(fastifyDeadline, {
  [Symbol.for('skip-override')]: true,
  [Symbol.for('fastify.display-name')]: 'telescope-deadline',
});

export { currentDeadline, withDeadline } from '../deadline/index.js';
export {
  type ConcurrencyLimiter,
  type ConcurrencyLimitOptions,
  type ConcurrencyLimitStats,
  concurrencyLimit,
  concurrencyLimitDefaults,
  type LimiterTicket,
  overloadShedBody,
  ServerLimiter,
  type ShedReason,
} from './limit.js';
