/**
 * Virtual time for the storm simulator: a {@link Clock} whose timers live in an event heap
 * and fire only when the driver advances time, so the library's own deadline, attempt,
 * retry-budget, breaker-window and balancer code runs unchanged on simulated time.
 *
 * Driving: events run in time order; between steps of `grainMs` (1 ms by default) the
 * driver yields once to the event loop (`setImmediate`), which lets every promise
 * continuation (microtask) the events started settle before time moves on. So the library's
 * async code sees a world where nothing happens between a timer and its continuations, and
 * continuations of events inside one grain may read a clock up to one grain later than the
 * event that caused them. With `grainMs: 0` the driver yields after every distinct instant
 * (exact, slower).
 */
import type { Clock, TimerHandle } from '../../core/clock.js';

/** Something the heap can run at a time. An object is in the heap at most once at a time. */
export interface SimEvent {
  /** @internal virtual time it runs at */
  at: number;
  /** @internal tie-breaker: scheduling order */
  seq: number;
  /** @internal set to skip it when it comes up (lazy cancel) */
  cancelled: boolean;
  fire(): void;
}

/** A timer set through the {@link Clock} interface. */
class Timer implements SimEvent {
  at = 0;
  seq = 0;
  cancelled = false;
  constructor(readonly callback: () => void) {}
  fire(): void {
    this.callback();
  }
}

/** Node's timer range: a delay outside [1, 2^31 − 1] (or NaN) is 1 ms, as for `setTimeout`. */
const TIMEOUT_MAX = 2 ** 31 - 1;

const yieldToLoop = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

/**
 * Lock-step with other workers' clocks (`parallel.ts`): the clock that drives the run asks
 * before each grain when the others' next events are, and tells them which grain to run.
 */
export interface ClockSync {
  /** The least time a message between workers takes (≥ one grain). */
  readonly lookaheadMs: number;
  /** Waits for the other workers' ends of the last grain (their messages are in the heap after). */
  collect(): Promise<void>;
  /** The earliest event the other workers have, the messages on their way to them included. */
  othersNextAt(): number;
  /** Tells the other workers to run the grain up to `endMs` (events at or before `targetMs`). */
  dispatch(endMs: number, targetMs: number, nowMs: number): void;
}

/** Virtual clock plus the driver that advances it. */
export class VirtualClock implements Clock {
  /** Milliseconds of virtual time run together before promise continuations settle. */
  readonly grainMs: number;
  #now: number;
  #seq = 0;
  #heap: SimEvent[] = [];
  #fired = 0;
  #yields = 0;
  /** @internal set when this clock drives other workers' clocks in lock-step */
  sync: ClockSync | undefined = undefined;

  constructor(options: { startMs?: number; grainMs?: number } = {}) {
    this.#now = options.startMs ?? 0;
    this.grainMs = options.grainMs ?? 1;
    if (!(this.grainMs >= 0 && Number.isFinite(this.grainMs))) {
      throw new RangeError(`grainMs must be a finite number ≥ 0, got ${this.grainMs}`);
    }
  }

  // --- Clock ------------------------------------------------------------------------------

  now(): number {
    return this.#now;
  }

  setTimeout(callback: () => void, delayMs: number): TimerHandle {
    const timer = new Timer(callback);
    const delay = delayMs >= 1 && delayMs <= TIMEOUT_MAX ? delayMs : 1;
    this.scheduleAt(timer, this.#now + delay);
    return timer;
  }

  clearTimeout(handle: TimerHandle): void {
    if (handle instanceof Timer) handle.cancelled = true;
  }

  // --- simulator side ---------------------------------------------------------------------

  /** Schedules `event` at virtual time `atMs` (not before now). */
  scheduleAt(event: SimEvent, atMs: number): void {
    event.at = atMs > this.#now ? atMs : this.#now;
    event.seq = this.#seq++;
    event.cancelled = false;
    const heap = this.#heap;
    let index = heap.length;
    heap.push(event);
    while (index > 0) {
      const parentIndex = (index - 1) >> 1;
      const parent = heap[parentIndex] as SimEvent;
      if (parent.at < event.at || (parent.at === event.at && parent.seq < event.seq)) break;
      heap[index] = parent;
      index = parentIndex;
    }
    heap[index] = event;
  }

  /** Events scheduled and not yet run (cancelled ones included until they come up). */
  get pending(): number {
    return this.#heap.length;
  }

  /** Events run so far, and times the driver yielded to the event loop. */
  get stats(): { fired: number; yields: number } {
    return { fired: this.#fired, yields: this.#yields };
  }

  /**
   * Runs every event due up to `targetMs` in time order, letting promise continuations settle
   * between grains, then sets the clock to `targetMs`.
   */
  async advanceTo(targetMs: number): Promise<void> {
    if (this.sync !== undefined) return this.#advanceInStep(targetMs, this.sync);
    const grainMs = this.grainMs;
    for (;;) {
      const next = this.nextAt();
      if (next > targetMs) break;
      // One grain: every event before its end (and not after the target), in order.
      const end = grainMs > 0 ? Math.min((Math.floor(next / grainMs) + 1) * grainMs, targetMs + grainMs) : next;
      this.#fireGrain(end, grainMs === 0, targetMs);
      this.#yields++;
      await yieldToLoop();
    }
    if (targetMs > this.#now) this.#now = targetMs;
    this.#yields++;
    await yieldToLoop();
  }

  /** @internal the time of the next event (∞ when there is none) */
  nextAt(): number {
    const heap = this.#heap;
    let top = heap[0];
    while (top?.cancelled === true) {
      this.#pop();
      top = heap[0];
    }
    return top === undefined ? Number.POSITIVE_INFINITY : top.at;
  }

  /** @internal moves the clock to `atMs` if it is behind (a worker following another's clock) */
  raiseTo(atMs: number): void {
    if (atMs > this.#now) this.#now = atMs;
  }

  /**
   * @internal runs every event before `endMs` and not after `targetMs`, a grain at a time,
   * letting promise continuations settle after each pass (a worker's share of a lock-step window)
   */
  async runUntil(endMs: number, targetMs: number): Promise<void> {
    const grainMs = this.grainMs;
    for (;;) {
      const next = this.nextAt();
      if (next >= endMs || next > targetMs) return;
      this.#fireGrain(Math.min((Math.floor(next / grainMs) + 1) * grainMs, endMs), false, targetMs);
      this.#yields++;
      await yieldToLoop();
    }
  }

  /**
   * `advanceTo` in lock-step with other workers, a window at a time: from the earliest event
   * anywhere, as many whole grains as a message between workers takes to arrive
   * (`sync.lookaheadMs`), so nothing sent inside a window can arrive inside it.
   */
  async #advanceInStep(targetMs: number, sync: ClockSync): Promise<void> {
    const grainMs = this.grainMs;
    for (;;) {
      await sync.collect();
      const next = Math.min(this.nextAt(), sync.othersNextAt());
      if (!(next <= targetMs)) break;
      const grainStart = Math.floor(next / grainMs) * grainMs;
      const windowEnd = Math.max(grainStart + grainMs, Math.floor((next + sync.lookaheadMs) / grainMs) * grainMs);
      const end = Math.min(windowEnd, targetMs + grainMs);
      sync.dispatch(end, targetMs, this.#now);
      await this.runUntil(end, targetMs);
    }
    if (targetMs > this.#now) this.#now = targetMs;
    this.#yields++;
    await yieldToLoop();
  }

  /** Runs the events due before `endMs` (`atEnd`: at `endMs` exactly) and not after `targetMs`, in order. */
  #fireGrain(endMs: number, atEnd: boolean, targetMs: number): void {
    const heap = this.#heap;
    let top = heap[0];
    let fired = 0;
    while (top !== undefined && (atEnd ? top.at === endMs : top.at < endMs) && top.at <= targetMs) {
      this.#pop();
      if (!top.cancelled) {
        if (top.at > this.#now) this.#now = top.at;
        top.fire();
        fired++;
      }
      top = heap[0];
    }
    this.#fired += fired;
  }

  #pop(): SimEvent | undefined {
    const heap = this.#heap;
    const top = heap[0];
    const last = heap.pop();
    const length = heap.length;
    if (length > 0 && last !== undefined) {
      let index = 0;
      for (;;) {
        const left = 2 * index + 1;
        if (left >= length) break;
        const right = left + 1;
        let child = left;
        let childEvent = heap[left] as SimEvent;
        if (right < length) {
          const rightEvent = heap[right] as SimEvent;
          if (rightEvent.at < childEvent.at || (rightEvent.at === childEvent.at && rightEvent.seq < childEvent.seq)) {
            child = right;
            childEvent = rightEvent;
          }
        }
        if (last.at < childEvent.at || (last.at === childEvent.at && last.seq < childEvent.seq)) break;
        heap[index] = childEvent;
        index = child;
      }
      heap[index] = last;
    }
    return top;
  }
}
