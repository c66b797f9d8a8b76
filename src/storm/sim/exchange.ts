/**
 * One HTTP exchange of the simulated network: the caller's end (a telescope `AttemptHandler`
 * or a raw caller), the server's request state, the undici `DispatchController` the handler
 * aborts to give up, and the heap event for the server's CPU and latency steps.
 */
import type { Dispatcher } from 'undici';
import { CancellationSource, type Deadline } from '../../core/deadline.js';
import { ErrorCode, TelescopeError } from '../../core/errors.js';
import type { AttemptHandler } from '../../transport/handler.js';
import type { SimEvent } from './clock.js';
import type { SimInstance, SimResponse } from './instance.js';
import type { RawCaller, SimTransport } from './network.js';

/** Where a request is on its instance. */
export enum Phase {
  Refused = 0,
  Queued = 1,
  Cpu = 2,
  Calling = 3,
  Latency = 4,
  Hung = 5,
  Done = 6,
  /** Refused at the door (503), answered once the instance's CPU gets to it. */
  Shed = 7,
  /** Budget gone on arrival (504), answered once the instance's CPU gets to it. */
  Expired = 8,
  /** Waiting in the server's concurrency limiter (telescope's `concurrencyLimit`). */
  LimiterQueued = 9,
  /** On the network towards the instance (`networkMs` > 0). */
  Arriving = 10,
  /** The answer (or a reset) on the network back to the caller (`networkMs` > 0, or from another worker). */
  Returning = 11,
  /** Sent to an instance another worker simulates; its answer comes as a message. */
  Remote = 12,
}

/** How an answer's body and headers are made again on the caller's side of a worker boundary. */
export enum ResponseKind {
  Plain = 0,
  Fallback = 1,
  /** The deadline middleware's 504 for a budget gone on arrival. */
  Expired = 2,
  /** The concurrency limiter's 503 with its Retry-After. */
  LimiterShed = 3,
}

/** The other end of an exchange that crosses to another worker (`parallel.ts`). */
export interface ExchangePeer {
  /** The instance (simulated here) answered a request that came from the peer. */
  respond(exchange: Exchange, status: number, kind: ResponseKind): void;
  /** The connection of a request that came from the peer failed. */
  fail(exchange: Exchange, reason: 'refused' | 'reset'): void;
  /** The caller here gave up on a request sent to the peer's instance. */
  cancel(exchange: Exchange): void;
}

const connectRefused = Object.assign(new Error('connect ECONNREFUSED (simulated instance is down)'), {
  code: 'ECONNREFUSED',
});
const socketClosed = Object.assign(new Error('other side closed (simulated instance went down)'), {
  code: 'UND_ERR_SOCKET',
});
const clientDestroyed = Object.assign(new Error('The client is destroyed'), { code: 'UND_ERR_DESTROYED' });
const noTrailers = Object.freeze({});
const callerWentAway = new TelescopeError(ErrorCode.ABORTED, 'the inbound request was abandoned by its client');

/**
 * One HTTP exchange: the caller's end (a telescope `AttemptHandler` or a raw caller) and the
 * server's request state. Also the undici `DispatchController` the handler aborts to give up,
 * and the heap event for the server's CPU and latency steps.
 */
export class Exchange extends CancellationSource implements SimEvent, Dispatcher.DispatchController {
  at = 0;
  seq = 0;
  cancelled = false;
  /** @internal where the request is (a `Phase`) */
  phase: number = Phase.Queued;
  /** Virtual time the request reached the instance. */
  arrivedAt = 0;
  /** The request's deadline when the servers admit by deadline (telescope). */
  deadline: Deadline | undefined = undefined;
  /** The caller gave up (closed the connection). */
  gone = false;
  started = false;
  released = false;
  /** Free for the sender's own use (the load generator marks its requests). */
  tag: unknown = undefined;
  /** @internal instance queue links */
  qPrev: Exchange | null = null;
  /** @internal */
  qNext: Exchange | null = null;
  /** @internal open-connection links (per instance, for faults that drop connections) */
  oPrev: Exchange | null = null;
  /** @internal */
  oNext: Exchange | null = null;
  /** @internal per-transport in-flight links (to fail them when the client closes) */
  tPrev: Exchange | null = null;
  /** @internal */
  tNext: Exchange | null = null;
  linkedToTransport = false;
  linkedOpen = false;
  /** Holds a slot of the instance's concurrency limiter. */
  limiterHeld = false;
  /** Status the instance answered with (0 before). */
  status = 0;
  /** The caller's end gave up (it hears nothing more); the server learns it `networkMs` later. */
  abandoned = false;
  /** @internal an answer on its way back (`Phase.Returning`, its status in `status`), or a failure */
  returning: SimResponse | 'refused' | 'reset' | null = null;
  /** @internal the exchange's id on the other side of a worker boundary */
  remoteId = 0;
  /** @internal the worker boundary it crosses (caller's side: the instance's worker; server's side: the caller's) */
  peer: ExchangePeer | null = null;

  constructor(
    readonly instance: SimInstance | undefined,
    readonly url: string,
    readonly headers: Record<string, string> | undefined,
    readonly handler: AttemptHandler | null,
    readonly raw: RawCaller | null,
    readonly transport: SimTransport | null,
  ) {
    super();
  }

  // --- undici DispatchController (the handler gives up through it) -----------------------

  get aborted(): boolean {
    return this.gone;
  }

  // --- the inbound request's cancellation (as the deadline middleware's) -------------------
  // The exchange is its request's Cancellation (a CancellationSource): the calls the instance
  // makes for it are cancelled when the caller closes the connection, as under deadlineMiddleware.

  /** @internal the caller closed the connection: cancel what the instance started for it. */
  cancelCalls(): void {
    this.cancel(callerWentAway);
  }
  get paused(): boolean {
    return false;
  }
  get reason(): Error | null {
    return null;
  }
  pause(): void {}
  resume(): void {}
  /** The caller gave up: undici destroys the socket, the server sees the connection close. */
  abort(_reason?: Error): void {
    this.transport?.unlink(this);
    if (this.abandoned) return;
    this.abandoned = true;
    const instance = this.instance;
    if (instance === undefined) this.gone = true;
    else if (this.phase === Phase.Remote) this.peer?.cancel(this);
    else if (this.phase !== Phase.Returning) {
      // (Returning: the answer is already on its way, the server is done with the request.)
      const { networkMs, clock } = instance.network;
      // The close reaches the server one network hop later.
      if (networkMs > 0 && this.phase !== Phase.Arriving && this.phase !== Phase.Refused) {
        this.closeArrivesAt(clock.now() + networkMs);
      } else instance.callerGone(this);
    }
  }

  /** @internal the caller's close reaches the server at `atMs` (it may still be in the heap itself) */
  closeArrivesAt(atMs: number): void {
    (this.instance as SimInstance).network.clock.scheduleAt(new InTransit(this, 'close'), atMs);
  }

  /** @internal a close or a reset that was on the network reaches its end */
  transitArrived(what: 'close' | 'reset'): void {
    if (what === 'close') (this.instance as SimInstance).callerGone(this);
    else if (!this.abandoned) this.#deliverFailureNow('reset');
  }

  /** The caller gives up (raw callers: timeout). */
  giveUp(): void {
    this.abort();
  }

  // --- LimiterTicket (the instance's concurrency limiter drives these) --------------------

  /** The limiter admitted the request: on to the instance's own admission. */
  proceed(): void {
    this.limiterHeld = true;
    (this.instance as SimInstance).admit(this);
  }

  /** The limiter shed the request: 503 without work. */
  shed(): void {
    (this.instance as SimInstance).shedByLimiter(this);
  }

  // --- heap event -------------------------------------------------------------------------

  fire(): void {
    switch (this.phase) {
      case Phase.Refused:
        this.phase = Phase.Done;
        // A caller that gave up before the refusal hears nothing more.
        if (!this.gone && !this.abandoned) this.#deliverFailureNow('refused');
        else this.transport?.unlink(this);
        return;
      case Phase.Arriving:
        // A request whose caller gave up on the way never reaches the instance.
        if (this.abandoned) {
          this.phase = Phase.Done;
          this.gone = true;
          return;
        }
        (this.instance as SimInstance).receive(this);
        return;
      case Phase.Returning: {
        this.phase = Phase.Done;
        const returning = this.returning;
        this.returning = null;
        if (this.abandoned || returning === null) {
          this.transport?.unlink(this);
          return;
        }
        if (typeof returning === 'string') this.#deliverFailureNow(returning);
        else this.#deliverResponseNow(this.status, returning);
        return;
      }
      case Phase.Cpu:
        (this.instance as SimInstance).afterCpu(this);
        return;
      case Phase.Latency:
        (this.instance as SimInstance).afterLatency(this);
        return;
      case Phase.Shed:
        (this.instance as SimInstance).answer(this, 503, false);
        return;
      case Phase.Expired:
        (this.instance as SimInstance).answerExpired(this);
        return;
    }
  }

  // --- delivery to the caller -------------------------------------------------------------

  /**
   * The server sends its answer: it reaches the caller now, `networkMs` later, or (for a
   * request from another worker) goes back as a message.
   */
  deliverResponse(status: number, response: SimResponse, kind: ResponseKind): void {
    if (this.peer !== null) {
      this.peer.respond(this, status, kind);
      return;
    }
    const network = (this.instance as SimInstance).network;
    if (network.networkMs > 0) {
      this.status = status;
      this.returnAt(network.clock.now() + network.networkMs, response);
      return;
    }
    this.#deliverResponseNow(status, response);
  }

  /** An answer (its status in `status`) or a failure on its way back: it reaches the caller at `atMs`. */
  returnAt(atMs: number, returning: NonNullable<Exchange['returning']>): void {
    this.phase = Phase.Returning;
    this.returning = returning;
    (this.instance as SimInstance).network.clock.scheduleAt(this, atMs);
  }

  #deliverResponseNow(status: number, { body, headers }: SimResponse): void {
    this.transport?.unlink(this);
    const handler = this.handler as Dispatcher.DispatchHandler | null;
    if (handler !== null) {
      handler.onResponseStart?.(this, status, headers);
      handler.onResponseData?.(this, body);
      handler.onResponseEnd?.(this, noTrailers);
    } else {
      this.raw?.onResponse(this, status);
    }
  }

  /** The connection failed before an answer (a reset travels `networkMs`, as an answer). */
  deliverFailure(reason: 'refused' | 'reset' | 'closed'): void {
    if (reason !== 'closed') {
      if (this.peer !== null && this.phase !== Phase.Remote) {
        this.peer.fail(this, reason);
        return;
      }
      const network = this.instance?.network;
      if (network !== undefined && network.networkMs > 0 && reason === 'reset') {
        // The exchange may still be in the event heap (its CPU step): an event of its own.
        network.clock.scheduleAt(new InTransit(this, 'reset'), network.clock.now() + network.networkMs);
        return;
      }
    }
    this.#deliverFailureNow(reason);
  }

  #deliverFailureNow(reason: 'refused' | 'reset' | 'closed'): void {
    this.transport?.unlink(this);
    const handler = this.handler as Dispatcher.DispatchHandler | null;
    if (handler !== null) {
      const error = reason === 'refused' ? connectRefused : reason === 'reset' ? socketClosed : clientDestroyed;
      // Refused: no controller yet (undici never started the request on a socket).
      handler.onResponseError?.(reason === 'refused' ? (null as never) : this, error);
    } else if (reason !== 'closed') {
      this.raw?.onFailure(this, reason);
    }
  }
}

/** A close or a reset on the network: it reaches its end at `at` (exactly, not on a timer's 1 ms floor). */
class InTransit implements SimEvent {
  at = 0;
  seq = 0;
  cancelled = false;
  constructor(
    readonly exchange: Exchange,
    readonly what: 'close' | 'reset',
  ) {}
  fire(): void {
    this.exchange.transitArrived(this.what);
  }
}
