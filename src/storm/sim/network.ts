/**
 * The simulator's network: instances by URL, connections between callers and them, and an
 * {@link AttemptTransport} that delivers a telescope client's attempts to them (the instances
 * themselves are in `instance.ts`).
 *
 * The transport is not a re-implementation of telescope's: each attempt is driven through the
 * library's own undici dispatch handler (`AttemptHandler`, src/transport/handler.ts), exactly
 * as undici drives it on a real socket: `onRequestStart` when the request reaches the server,
 * `onResponseStart/Data/End` with the server's status and JSON body, `onResponseError` with
 * the socket error undici would report (ECONNREFUSED for a down instance, UND_ERR_SOCKET when
 * it goes down mid-request, UND_ERR_DESTROYED when the client closes). So the attempt timeout
 * (on the clock's shared timer wheel), caller aborts, error codes and fields (`requestSent`,
 * `instance`, `attempt`, `retryable`), HTTP_STATUS errors and Retry-After parsing, body
 * decoding and error mapping are the library's code. When a caller gives up, the handler
 * aborts its controller, which here closes the simulated connection: the server frees the
 * request's slot (as the real tier does on the socket's 'close') and keeps working, and work
 * finished for nobody counts as wasted.
 */
import type { Dispatcher } from 'undici';
import type { Call, CallContext, IncomingResponse, OutgoingRequest } from '../../core/call.js';
import { type TimerWheel, wheelOf } from '../../core/clock.js';
import type { ServerLimiter } from '../../server/index.js';
import { AttemptHandler } from '../../transport/handler.js';
import { type AttemptTransport, cannotSend, transportDefaults } from '../../transport/index.js';
import type { VirtualClock } from './clock.js';
import { Exchange, Phase } from './exchange.js';
import type { SimInstance, SimObserver, SimServe } from './instance.js';

/** The virtual network's answers are buffered and never compressed, as the undici transport's by default. */
const simulatedHandlerSettings = { maxResponseBytes: transportDefaults.maxResponseBytes, decompress: false } as const;

/** A caller that is not a telescope client (naive loops, peer-library models, the load). */
export interface RawCaller {
  /** The instance answered with `status`. */
  onResponse(exchange: Exchange, status: number): void;
  /** No answer: connection refused, connection reset (the instance went down), or closed. */
  onFailure(exchange: Exchange, reason: 'refused' | 'reset'): void;
}

/** Sends requests to instances another worker simulates (`parallel.ts`). */
export interface RemoteRouter {
  send(exchange: Exchange): void;
}

/** The simulated network: instances by URL, connections between callers and them. */
export class SimNetwork {
  readonly instances = new Map<string, SimInstance>();
  observer: SimObserver | undefined = undefined;
  /**
   * Milliseconds a request, an answer, a reset or a close takes from one end to the other
   * (0: the network takes no time). A refused connection fails after a round trip on top of
   * `refuseMs`.
   */
  networkMs = 0;
  /** Where requests to remote instances go (parallel runs). */
  router: RemoteRouter | undefined = undefined;

  constructor(
    readonly clock: VirtualClock,
    /** Deadline admission on every server, or none. */
    readonly serve: SimServe | undefined,
    /** How long a refused connection takes to fail. */
    readonly refuseMs = 0.2,
    /** Makes an instance's concurrency limiter (telescope's `concurrencyLimit`), or none. */
    readonly limiter?: (instance: SimInstance) => ServerLimiter | undefined,
  ) {}

  add(instance: SimInstance): void {
    this.instances.set(instance.url, instance);
  }

  /**
   * Opens a connection to `url` and sends a request: the instance receives it now, or the
   * connection is refused after `refuseMs` (the instance is down or unknown).
   */
  send(
    url: string,
    headers: Record<string, string> | undefined,
    handler: AttemptHandler | null,
    raw: RawCaller | null,
    transport: SimTransport | null,
    /** Set on the exchange before the instance sees it (an answer may come at once). */
    tag?: unknown,
  ): Exchange {
    const instance = this.instances.get(url);
    const exchange = new Exchange(instance, url, headers, handler, raw, transport);
    exchange.tag = tag;
    transport?.link(exchange);
    if (instance === undefined || instance.fault === 'down') {
      exchange.phase = Phase.Refused;
      this.clock.scheduleAt(exchange, this.clock.now() + this.refuseMs + 2 * this.networkMs);
      return exchange;
    }
    (handler as Dispatcher.DispatchHandler | null)?.onRequestStart?.(exchange, {});
    if (instance.remote) (this.router as RemoteRouter).send(exchange);
    else if (this.networkMs > 0) {
      exchange.phase = Phase.Arriving;
      this.clock.scheduleAt(exchange, this.clock.now() + this.networkMs);
    } else instance.receive(exchange);
    return exchange;
  }

  /** A transport for one telescope client (its own, like the undici transport's pools). */
  transport(): SimTransport {
    return new SimTransport(this);
  }
}

/**
 * {@link AttemptTransport} over the simulated network: `createClient(service, { transport })`.
 * Mirrors the undici transport: closed → CLIENT_CLOSED; no instance → INVALID_OPTION; an
 * already aborted caller → ABORTED before anything is sent; otherwise the library's
 * `AttemptHandler` is armed (attempt deadline on the clock's wheel, caller abort) and
 * dispatched to the instance.
 */
export class SimTransport implements AttemptTransport {
  readonly #network: SimNetwork;
  readonly #wheel: TimerWheel;
  #closed = false;
  #head: Exchange | null = null;
  #inFlight = 0;

  constructor(network: SimNetwork) {
    this.#network = network;
    this.#wheel = wheelOf(network.clock);
  }

  /** Attempts in flight through this transport. */
  get inFlight(): number {
    return this.#inFlight;
  }

  readonly call: Call = (request: OutgoingRequest, context: CallContext): Promise<IncomingResponse> => {
    const instance = context.instance;
    if (this.#closed || instance === undefined) return Promise.reject(cannotSend(this.#closed, context));
    const handler = new AttemptHandler(request, context, instance.url, simulatedHandlerSettings, this.#wheel);
    if (context.callerAborted) {
      handler.handleEvent();
      return handler.promise;
    }
    handler.arm();
    this.#network.send(instance.url, request.headers, handler, null, this);
    return handler.promise;
  };

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    // As undici's pool.destroy(): every request in flight fails (CLIENT_CLOSED), sockets close.
    let exchange = this.#head;
    while (exchange !== null) {
      const next = exchange.tNext;
      this.unlink(exchange);
      exchange.instance?.callerGone(exchange);
      exchange.deliverFailure('closed');
      exchange = next;
    }
  }

  async drop(_url: string): Promise<void> {
    // No pools to close: calls in flight finish, new calls connect afresh.
  }

  /** @internal */
  link(exchange: Exchange): void {
    exchange.linkedToTransport = true;
    exchange.tPrev = null;
    exchange.tNext = this.#head;
    if (this.#head !== null) this.#head.tPrev = exchange;
    this.#head = exchange;
    this.#inFlight++;
  }

  /** @internal */
  unlink(exchange: Exchange): void {
    if (!exchange.linkedToTransport) return;
    exchange.linkedToTransport = false;
    const prev = exchange.tPrev;
    const next = exchange.tNext;
    if (prev === null) this.#head = next;
    else prev.tNext = next;
    if (next !== null) next.tPrev = prev;
    exchange.tPrev = null;
    exchange.tNext = null;
    this.#inFlight--;
  }
}
