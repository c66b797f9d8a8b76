import { type Clock, type WheelEntry, wheelOf } from './clock.js';
import type { Cancellation, CancellationListener, Deadline } from './deadline.js';
import { ErrorCode, TelescopeError } from './errors.js';

/**
 * A call: the whole of what a layer sees of the layers below it. Finagle's "server as a
 * function": every capability (deadline, retry, balance, breaker, cache) is a {@link Layer}
 * that takes the next call and returns a call.
 */
export type Call<Req = OutgoingRequest, Res = IncomingResponse> = (request: Req, context: CallContext) => Promise<Res>;

/** Decorates the next call. Layers know nothing of each other beyond {@link CallContext}. */
export type Layer<Req = OutgoingRequest, Res = IncomingResponse> = (next: Call<Req, Res>) => Call<Req, Res>;

/**
 * Composes layers, the first one outermost (as tower and cockatiel do; undici's `compose` is
 * the reverse). `false`, `null` and `undefined` entries are skipped, so a disabled layer
 * costs nothing at call time.
 *
 * @example
 * const call = compose(deadline(opts), retry(opts), attempt(opts))(transport.call);
 */
export function compose<Req = OutgoingRequest, Res = IncomingResponse>(
  ...layers: Array<Layer<Req, Res> | false | null | undefined>
): Layer<Req, Res> {
  const active = layers.filter((layer): layer is Layer<Req, Res> => typeof layer === 'function');
  return (next) => {
    let call = next;
    for (let index = active.length - 1; index >= 0; index--) call = (active[index] as Layer<Req, Res>)(call);
    return call;
  };
}

/**
 * Calls `next`, turning a synchronous throw into a rejected promise, so that a layer that
 * counts outcomes in its `.then` handlers sees that failure too.
 */
export function callNext<Req, Res>(next: Call<Req, Res>, request: Req, context: CallContext): Promise<Res> {
  try {
    return next(request, context);
  } catch (error) {
    return Promise.reject(error);
  }
}

/** An instance of a service: where to send attempts, and what routing may look at. */
export interface Instance {
  /** Origin, e.g. `http://10.0.0.1:8080` (no path). */
  readonly url: string;
  readonly zone?: string | undefined;
  readonly version?: string | undefined;
  /** Relative share of traffic. @default 1 */
  readonly weight: number;
}

/** Routing hints of one call. */
export interface RouteHints {
  /** Only instances of this version may serve the call. */
  readonly version?: string;
  /** Prefer instances in this zone. */
  readonly zone?: string;
}

/** The HTTP request that travels down the stack. Layers may set headers; nothing else. */
export interface OutgoingRequest {
  readonly method: string;
  /** Path and query string, already encoded. */
  readonly path: string;
  /** Outgoing headers (lower-case names). Layers add to it, e.g. the deadline header. */
  readonly headers: Record<string, string>;
  /** JSON or raw bytes, or a raw body read once as it is sent (see {@link OneShotBody}). */
  readonly body: string | Uint8Array | OneShotBody | undefined;
}

/**
 * A request body that can be sent only once (a caller's `ReadableStream`): `started` turns
 * true when its first byte is read, after which the request cannot be repeated.
 */
export interface OneShotBody extends AsyncIterable<Uint8Array> {
  readonly started: boolean;
}

/** Whether a request body is a {@link OneShotBody}. */
export function isOneShotBody(body: OutgoingRequest['body']): body is OneShotBody {
  return typeof body === 'object' && body !== null && !(body instanceof Uint8Array);
}

/** A decoded response. */
export interface IncomingResponse {
  readonly status: number;
  readonly headers: Record<string, string | string[] | undefined>;
  /** Parsed JSON, text, bytes, or undefined for an empty body. */
  readonly body: unknown;
  /** Origin of the instance that answered (`'fallback'` for a fallback's answer). */
  readonly instance: string;
  /** Set when the body is the endpoint's fallback, not the service's answer. */
  readonly fromFallback?: true;
}

/** The logger shape telescope uses: pino's (or anything with the same methods). */
export interface Logger {
  child(bindings: Record<string, unknown>): Logger;
  debug(object: Record<string, unknown>, message?: string): void;
  info(object: Record<string, unknown>, message?: string): void;
  warn(object: Record<string, unknown>, message?: string): void;
  error(object: Record<string, unknown>, message?: string): void;
}

/**
 * What every layer knows about the call in flight. One object per call, created by the
 * client; layers read and set its fields. Fields that cost something (the combined signal)
 * are created only when someone asks for them.
 */
export class CallContext {
  readonly service: string;
  readonly endpoint: string;
  /** Whether repeating the call is safe (GET/HEAD/PUT/DELETE, declared, or an idempotency key). */
  idempotent: boolean;
  readonly clock: Clock;
  readonly #callerSignal: AbortSignal | undefined;
  /** The inbound request's cancellation, when the caller's abort is that alone (no signal built yet). */
  readonly #cancellation: Cancellation | undefined;
  /** The call's budget; set by the deadline layer (or the caller) before any attempt. */
  deadline: Deadline | undefined;
  /** This call's own timeout; the deadline layer combines it with any inbound deadline. */
  readonly timeoutMs: number;
  /** 1-based number of the current attempt. */
  attempt = 1;
  /** The instance the current attempt goes to; set by the balancer. */
  instance: Instance | undefined = undefined;
  /** Instances already tried in this call (set by the retry layer when it retries). */
  tried: Instance[] | undefined = undefined;
  /** Absolute clock time at which the current attempt is abandoned; set by the attempt layer. */
  attemptExpiresAt = Number.POSITIVE_INFINITY;
  /** True when the attempt's timeout is the rest of the budget: its expiry is the deadline's. */
  attemptEndsBudget = false;
  /** When true, the transport must not reuse a pooled connection for this attempt. */
  freshConnection = false;
  /**
   * Set by the balancer when an attempt failed with a `Retry-After`: whether another usable
   * instance, not yet tried in this call, can take a retry (a 503's Retry-After holds back the
   * instance that sent it, so a retry that goes elsewhere need not wait).
   */
  anotherInstanceFree = false;
  /**
   * Set by the breaker on a half-open probe: the probe is one attempt (no retry, no hedge), so
   * probing a dependency that is still down costs one request.
   */
  probe = false;
  /**
   * `'stream'`: the transport answers once the headers arrive, with the body as a web
   * `ReadableStream` that the deadline and the caller's signal keep guarding. @default 'buffered'
   */
  responseType: 'buffered' | 'stream' = 'buffered';
  readonly route: RouteHints | undefined;
  readonly logger: Logger | undefined;
  /** The call's validated params (what a fallback is given). */
  params: unknown = undefined;
  #signal: AbortSignal | undefined;
  #combined: CombinedSignal | undefined;

  constructor(init: {
    service: string;
    endpoint: string;
    idempotent: boolean;
    clock: Clock;
    timeoutMs: number;
    callerSignal?: AbortSignal | undefined;
    /**
     * The caller's abort as an inbound request's cancellation with the cheap members
     * (`isCancelled`, `watch`, `unwatch`); `callerSignal` is then built from it on first read.
     * Ignored when `callerSignal` is given.
     */
    cancellation?: Cancellation | undefined;
    deadline?: Deadline | undefined;
    route?: RouteHints | undefined;
    logger?: Logger | undefined;
  }) {
    this.service = init.service;
    this.endpoint = init.endpoint;
    this.idempotent = init.idempotent;
    this.clock = init.clock;
    this.#callerSignal = init.callerSignal;
    this.#cancellation =
      init.callerSignal === undefined &&
      init.cancellation?.watch !== undefined &&
      init.cancellation.unwatch !== undefined &&
      init.cancellation.isCancelled !== undefined
        ? init.cancellation
        : undefined;
    if (init.callerSignal === undefined && this.#cancellation === undefined && init.cancellation !== undefined) {
      this.#callerSignal = init.cancellation.signal;
    }
    this.deadline = init.deadline;
    this.timeoutMs = init.timeoutMs;
    this.route = init.route;
    this.logger = init.logger;
  }

  /** The caller's abort signal (its own, or its inbound request's cancellation), if any. */
  get callerSignal(): AbortSignal | undefined {
    return this.#callerSignal ?? this.#cancellation?.signal;
  }

  /** Whether the caller aborted (as `callerSignal?.aborted`, without building a signal). */
  get callerAborted(): boolean {
    const signal = this.#callerSignal;
    if (signal !== undefined) return signal.aborted;
    return this.#cancellation?.isCancelled === true;
  }

  /** Calls `listener.handleEvent()` when the caller aborts; {@link unwatchCaller} removes it. */
  watchCaller(listener: CancellationListener): void {
    const signal = this.#callerSignal;
    if (signal !== undefined) signal.addEventListener('abort', listener);
    else this.#cancellation?.watch?.(listener);
  }

  unwatchCaller(listener: CancellationListener): void {
    const signal = this.#callerSignal;
    if (signal !== undefined) signal.removeEventListener('abort', listener);
    else this.#cancellation?.unwatch?.(listener);
  }

  /**
   * A context for a concurrent attempt of the same call (hedging): same call fields and
   * budget, its own attempt state, and `signal` as its abort (to cancel the loser).
   */
  fork(signal: AbortSignal): CallContext {
    const child = new CallContext({
      service: this.service,
      endpoint: this.endpoint,
      idempotent: this.idempotent,
      clock: this.clock,
      timeoutMs: this.timeoutMs,
      callerSignal: signal,
      deadline: this.deadline,
      route: this.route,
      logger: this.logger,
    });
    child.attempt = this.attempt;
    child.tried = this.tried;
    child.probe = this.probe;
    child.responseType = this.responseType;
    return child;
  }

  /**
   * Aborts when the caller aborts or the deadline passes. Built on first access: the
   * success path of a call that nobody observes creates no signal and no timer.
   */
  get signal(): AbortSignal {
    if (this.#signal === undefined) {
      const caller = this.callerSignal;
      const deadline = this.deadline;
      if (deadline === undefined) {
        this.#signal = caller ?? neverAborted;
      } else {
        // Not AbortSignal.any(): on Node 20 every combined signal stays attached to its sources,
        // so a long-lived caller signal shared by many calls would keep each one alive. Not
        // `deadline.signal` either: its wheel entry stays until the deadline, after the call.
        this.#combined = new CombinedSignal(caller, deadline);
        this.#signal = this.#combined.signal;
      }
    }
    return this.#signal;
  }

  /**
   * Ends the context's hold on its caller's signal and on the timer wheel (only if
   * {@link signal} was read); the signal no longer aborts afterwards. In the client the
   * observe layer calls it when the call settles; a hand-composed stack without observe that
   * reads `signal` should call it too.
   */
  release(): void {
    if (this.#combined !== undefined) {
      this.#combined.release();
      this.#combined = undefined;
    }
  }
}

const neverAborted = new AbortController().signal;

/**
 * The caller's signal (if any) or the deadline, whichever comes first: one controller, one listener on
 * the caller's signal and one wheel entry, all removed by {@link CombinedSignal.release}.
 */
class CombinedSignal implements WheelEntry {
  wheelSlot = -1;
  wheelPrev: WheelEntry | null = null;
  wheelNext: WheelEntry | null = null;
  readonly #controller = new AbortController();

  constructor(
    readonly caller: AbortSignal | undefined,
    readonly deadline: Deadline,
  ) {
    if (caller?.aborted) {
      this.#controller.abort(caller.reason);
    } else if (deadline.expired) {
      this.onTimer();
    } else {
      caller?.addEventListener('abort', this, { once: true });
      wheelOf(deadline.clock).schedule(this, deadline.at);
    }
  }

  get signal(): AbortSignal {
    return this.#controller.signal;
  }

  /** The caller aborted (EventListener object form: no closure). */
  handleEvent(): void {
    this.release();
    this.#controller.abort(this.caller?.reason);
  }

  /** The deadline passed. */
  onTimer(): void {
    this.caller?.removeEventListener('abort', this);
    this.#controller.abort(new TelescopeError(ErrorCode.DEADLINE_EXCEEDED, 'deadline exceeded'));
  }

  release(): void {
    this.caller?.removeEventListener('abort', this);
    if (this.wheelSlot !== -1) wheelOf(this.deadline.clock).cancel(this);
  }
}
