import { type Clock, systemClock, type WheelEntry, wheelOf } from './clock.js';
import { ErrorCode, TelescopeError } from './errors.js';

/**
 * Tells the work under a deadline that its caller went away (the inbound request was closed
 * before its answer). Read lazily: `signal` is only built when a downstream call asks for it,
 * so a request that calls nothing pays nothing. An `AbortController` is one.
 *
 * The optional members are the cheap form the client uses when they are there (a
 * {@link CancellationSource} has them): `isCancelled` instead of `signal.aborted`, and
 * `watch`/`unwatch` instead of an 'abort' listener on `signal`, so the calls of an inbound
 * request need no `AbortSignal` at all unless a layer asks for one.
 */
export interface Cancellation {
  readonly signal: AbortSignal;
  /** Whether it fired (as `signal.aborted`, without building `signal`). */
  readonly isCancelled?: boolean;
  /** Calls `listener.handleEvent()` once when it fires (both or neither of watch/unwatch). */
  watch?(listener: CancellationListener): void;
  /** Removes a listener `watch` added; a listener not watching is ignored. */
  unwatch?(listener: CancellationListener): void;
}

/** Told once when the {@link Cancellation} it watches fires (the EventListener object form). */
export interface CancellationListener {
  handleEvent(): void;
}

/**
 * A {@link Cancellation} fired by {@link cancel}: its `AbortSignal` is built only when
 * something reads `signal` (aborted at once if it already fired); until then watchers are
 * kept in a list, which costs far less per call than an `AbortController` and an
 * EventTarget listener (measured in the storm simulator: about a tenth of its CPU).
 */
export class CancellationSource implements Cancellation {
  #controller: AbortController | undefined = undefined;
  #cancelled = false;
  #reason: unknown = undefined;
  #first: CancellationListener | undefined = undefined;
  #more: CancellationListener[] | undefined = undefined;
  #used = false;

  get isCancelled(): boolean {
    if (!this.#used) this.#use();
    return this.#cancelled;
  }

  get signal(): AbortSignal {
    if (this.#controller === undefined) {
      this.#controller = new AbortController();
      if (!this.#used) this.#use();
      if (this.#cancelled) this.#controller.abort(this.#reason);
    }
    return this.#controller.signal;
  }

  watch(listener: CancellationListener): void {
    if (!this.#used) this.#use();
    if (this.#first === undefined) this.#first = listener;
    else if (this.#more === undefined) this.#more = [listener];
    else this.#more.push(listener);
  }

  unwatch(listener: CancellationListener): void {
    if (this.#first === listener) {
      this.#first = this.#more?.pop();
      return;
    }
    const more = this.#more;
    if (more === undefined) return;
    const index = more.indexOf(listener);
    if (index !== -1) more.splice(index, 1);
  }

  /** Fires (once): the signal aborts with `reason`, then each watcher is told. */
  cancel(reason: unknown): void {
    if (this.#cancelled) return;
    this.#cancelled = true;
    this.#reason = reason;
    this.#controller?.abort(reason);
    const first = this.#first;
    const more = this.#more;
    this.#first = undefined;
    this.#more = undefined;
    first?.handleEvent();
    if (more !== undefined) for (const listener of more) listener.handleEvent();
  }

  #use(): void {
    this.#used = true;
    this.onFirstUse();
  }

  /** Called once, the first time anything reads or watches it (a subclass starts listening). */
  protected onFirstUse(): void {}
}

/**
 * An absolute point in monotonic time by which a call (and everything it calls) must be done.
 *
 * Budgets shrink as they travel: {@link Deadline.min} combines an inbound budget with a local
 * timeout, and a nested `withDeadline` never extends an outer one. (A `Deadline` passed
 * explicitly to a call replaces the ambient one, as the caller asked.) On the wire a deadline
 * travels as relative milliseconds, so clock skew between hosts does not matter.
 *
 * @example
 * const deadline = Deadline.after(3000);
 * deadline.remainingMs(); // ≤ 3000
 */
export class Deadline implements WheelEntry {
  /** Absolute time on {@link Deadline.clock} (milliseconds). */
  readonly at: number;
  readonly clock: Clock;
  /**
   * Aborts when the caller of the work under this deadline goes away (the server middleware
   * sets it from the inbound request); every telescope call started under the deadline is then
   * cancelled with `ABORTED`. Undefined for a deadline nobody can abandon.
   */
  readonly cancellation: Cancellation | undefined;
  #controller: AbortController | undefined;

  /** @internal */ wheelSlot = -1;
  /** @internal */ wheelPrev: WheelEntry | null = null;
  /** @internal */ wheelNext: WheelEntry | null = null;

  constructor(at: number, clock: Clock = systemClock, cancellation?: Cancellation) {
    this.at = at;
    this.clock = clock;
    this.cancellation = cancellation;
  }

  /** A deadline `ms` milliseconds from now. Negative or NaN values give an expired deadline. */
  static after(ms: number, clock: Clock = systemClock): Deadline {
    return new Deadline(clock.now() + (ms > 0 ? ms : 0), clock);
  }

  /**
   * The earlier of two deadlines (either may be undefined). The result keeps a cancellation
   * from either side: a shorter local budget does not detach the work from its caller.
   */
  static min(a: Deadline, b: Deadline | undefined): Deadline;
  static min(a: Deadline | undefined, b: Deadline): Deadline;
  static min(a: Deadline | undefined, b: Deadline | undefined): Deadline | undefined;
  static min(a: Deadline | undefined, b: Deadline | undefined): Deadline | undefined {
    if (a === undefined) return b;
    if (b === undefined) return a;
    const earlier = b.at < a.at ? b : a;
    if (earlier.cancellation !== undefined) return earlier;
    const cancellation = (earlier === a ? b : a).cancellation;
    return cancellation === undefined ? earlier : new Deadline(earlier.at, earlier.clock, cancellation);
  }

  /** Milliseconds left, never negative. */
  remainingMs(): number {
    const remaining = this.at - this.clock.now();
    return remaining > 0 ? remaining : 0;
  }

  /** True once the deadline has passed. */
  get expired(): boolean {
    return this.clock.now() >= this.at;
  }

  /**
   * An AbortSignal that aborts (with a `DEADLINE_EXCEEDED` error as reason) when the deadline
   * passes. Created on first access only, and driven by the clock's shared timer wheel, so a
   * deadline nobody listens to costs no timer.
   */
  get signal(): AbortSignal {
    if (this.#controller === undefined) {
      this.#controller = new AbortController();
      if (this.expired) this.#controller.abort(this.#expiredError());
      else wheelOf(this.clock).schedule(this, this.at);
    }
    return this.#controller.signal;
  }

  /** @internal */
  onTimer(): void {
    this.#controller?.abort(this.#expiredError());
  }

  #expiredError(): TelescopeError {
    return new TelescopeError(ErrorCode.DEADLINE_EXCEEDED, 'deadline exceeded');
  }

  toJSON(): { remainingMs: number } {
    return { remainingMs: Math.round(this.remainingMs()) };
  }
}
