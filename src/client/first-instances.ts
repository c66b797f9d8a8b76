/**
 * A client made with `discovery` has no instances until the source delivers its first set.
 * Calls made before then wait for it, each inside its own budget: the wait ends with the set,
 * the budget (`NO_HEALTHY_INSTANCE`), the caller's signal (`ABORTED`) or `close()`
 * (`CLIENT_CLOSED`). Once the first set is in, the layer is a plain pass-through.
 */

import type { CallContext, Layer } from '../core/call.js';
import type { Clock } from '../core/clock.js';
import { Deadline } from '../core/deadline.js';
import { ErrorCode, TelescopeError } from '../core/errors.js';
import { currentDeadline } from '../deadline/index.js';

export class FirstInstances {
  /** Pending until the first set arrives; undefined after it (or when there was never a wait). */
  #ready: Promise<void> | undefined;
  #markReady: () => void = () => {};
  /** Calls waiting for the first set, by their close handler. */
  readonly #waiting = new Set<() => void>();

  /** `pending`: the client has no instances yet (discovery). */
  constructor(
    readonly clock: Clock,
    pending: boolean,
  ) {
    this.#ready = pending
      ? new Promise((resolve) => {
          this.#markReady = resolve;
        })
      : undefined;
  }

  /** The first set arrived (later sets change nothing here). */
  arrived(): void {
    this.#ready = undefined;
    this.#markReady();
  }

  /**
   * The layer that holds calls until the first set. It sits inside fallback, observe and
   * deadline (a wait that outlives the budget is a failure like any other) and above the
   * breaker (waiting for discovery says nothing about the dependency's health).
   */
  readonly layer: Layer = (next) => (request, context) => {
    const ready = this.#ready;
    return ready === undefined ? next(request, context) : this.#wait(ready, context).then(() => next(request, context));
  };

  /** Fails every waiting call with `CLIENT_CLOSED`. */
  close(): void {
    for (const onClose of this.#waiting) onClose();
  }

  /** Waits inside the call's budget: the budget is fixed now, so the wait counts against it. */
  #wait(ready: Promise<void>, context: CallContext): Promise<void> {
    const clock = this.clock;
    const waiting = this.#waiting;
    const budget = Deadline.min(Deadline.after(context.timeoutMs, clock), context.deadline ?? currentDeadline());
    context.deadline = budget;
    return new Promise<void>((resolve, reject) => {
      const done = () => {
        clock.clearTimeout(timer);
        waiting.delete(onClose);
        context.callerSignal?.removeEventListener('abort', onAbort);
      };
      const fail = (code: ErrorCode, message: string, cause?: unknown) => {
        done();
        reject(
          new TelescopeError(code, message, {
            service: context.service,
            endpoint: context.endpoint,
            requestSent: false,
            cause,
          }),
        );
      };
      const onClose = () => fail(ErrorCode.CLIENT_CLOSED, 'client closed while the call waited for instances');
      const onAbort = () =>
        fail(
          ErrorCode.ABORTED,
          'call aborted by the caller while it waited for instances',
          context.callerSignal?.reason,
        );
      const timer = clock.setTimeout(
        () =>
          fail(ErrorCode.NO_HEALTHY_INSTANCE, `${context.service}: no instances discovered within the call's budget`),
        budget.remainingMs(),
      );
      waiting.add(onClose);
      context.callerSignal?.addEventListener('abort', onAbort, { once: true });
      void ready.then(() => {
        done();
        resolve();
      });
    });
  }
}
