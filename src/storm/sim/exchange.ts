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
import type { SimInstance } from './instance.js';
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
    if (this.instance === undefined) this.gone = true;
    else this.instance.callerGone(this);
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
        if (!this.gone) this.deliverFailure('refused');
        else this.transport?.unlink(this);
        return;
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

  /** The server's answer reaches the caller (unless it has gone). */
  deliverResponse(status: number, body: Buffer, headers: Record<string, string>): void {
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

  /** The connection failed before an answer. */
  deliverFailure(reason: 'refused' | 'reset' | 'closed'): void {
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
