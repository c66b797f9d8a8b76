/**
 * Time for the whole library comes from a {@link Clock}, so that tests (fake timers, a manual
 * clock) and the storm simulator (virtual time) can drive every timeout, deadline and window.
 */

/** Opaque handle returned by {@link Clock.setTimeout}. */
export type TimerHandle = unknown;

/** A monotonic clock with one-shot timers. */
export interface Clock {
  /** Monotonic milliseconds; only differences are meaningful. */
  now(): number;
  /** Runs `callback` after `delayMs`. Timers must not keep the process alive on their own. */
  setTimeout(callback: () => void, delayMs: number): TimerHandle;
  clearTimeout(handle: TimerHandle): void;
}

/**
 * The process clock: `performance.now()` and unref'd `setTimeout`. Globals are looked up at
 * call time so that fake timers installed after import still drive it.
 */
export const systemClock: Clock = {
  now: () => performance.now(),
  setTimeout(callback, delayMs) {
    const timer = setTimeout(callback, delayMs);
    // Library timers guard work that something else (a socket, a caller) keeps alive.
    timer.unref?.();
    return timer;
  },
  clearTimeout(handle) {
    clearTimeout(handle as ReturnType<typeof setTimeout>);
  },
};

/**
 * Something the {@link TimerWheel} can expire. Implemented directly by per-attempt objects so
 * that arming a timeout allocates nothing: the wheel links entries through these fields.
 */
export interface WheelEntry {
  /** Called once when the entry's time has come (never after {@link TimerWheel.cancel}). */
  onTimer(): void;
  /** @internal slot number while scheduled, -1 otherwise. */
  wheelSlot: number;
  /** @internal */
  wheelPrev: WheelEntry | null;
  /** @internal */
  wheelNext: WheelEntry | null;
}

/**
 * One native timer for any number of timeouts.
 *
 * Why: a `setTimeout` (or `AbortSignal.timeout()`) per call roughly doubles the CPU cost of a
 * keep-alive request. Entries are grouped into slots of `resolutionMs`; each slot is a linked
 * list (O(1) schedule and cancel, no allocation beyond the slot's first entry), and a small
 * min-heap of slot numbers drives a single timer armed for the earliest slot. Timeouts fire
 * at most `resolutionMs` late and never early.
 */
export class TimerWheel {
  readonly resolutionMs: number;
  readonly #clock: Clock;
  readonly #slots = new Map<number, WheelEntry>();
  readonly #heap: number[] = [];
  #armedSlot = Number.POSITIVE_INFINITY;
  #timer: TimerHandle = undefined;
  #size = 0;
  readonly #fire = () => this.#onFire();

  constructor(clock: Clock, resolutionMs = 1) {
    this.#clock = clock;
    this.resolutionMs = resolutionMs;
  }

  /** Number of scheduled entries. */
  get size(): number {
    return this.#size;
  }

  /** Schedules `entry` to fire at clock time `atMs` (rounded up to the wheel's resolution). */
  schedule(entry: WheelEntry, atMs: number): void {
    if (entry.wheelSlot !== -1) this.cancel(entry);
    const slot = Math.ceil(atMs / this.resolutionMs);
    const head = this.#slots.get(slot);
    entry.wheelSlot = slot;
    entry.wheelPrev = null;
    entry.wheelNext = head ?? null;
    if (head === undefined) {
      heapPush(this.#heap, slot);
    } else {
      head.wheelPrev = entry;
    }
    this.#slots.set(slot, entry);
    this.#size++;
    if (slot < this.#armedSlot) this.#arm(slot);
  }

  /** Removes `entry` if it is scheduled; safe to call more than once. */
  cancel(entry: WheelEntry): void {
    const slot = entry.wheelSlot;
    if (slot === -1) return;
    const prev = entry.wheelPrev;
    const next = entry.wheelNext;
    if (prev === null) {
      if (next === null) this.#slots.delete(slot);
      else this.#slots.set(slot, next);
    } else {
      prev.wheelNext = next;
    }
    if (next !== null) next.wheelPrev = prev;
    entry.wheelSlot = -1;
    entry.wheelPrev = null;
    entry.wheelNext = null;
    // An empty slot stays in the heap and the armed timer is left to fire once for nothing:
    // clearing and re-arming it whenever the wheel empties would cost a native timer per
    // call at low concurrency, which is what the wheel exists to avoid.
    this.#size--;
  }

  #arm(slot: number): void {
    if (this.#timer !== undefined) this.#clock.clearTimeout(this.#timer);
    this.#armedSlot = slot;
    // Node fires a timer of more than 2^31 − 1 ms after 1 ms (with a warning): wake up at that
    // bound instead; #onFire re-arms while nothing is due.
    const delayMs = Math.min(maxTimerDelayMs, Math.max(0, slot * this.resolutionMs - this.#clock.now()));
    this.#timer = this.#clock.setTimeout(this.#fire, delayMs);
  }

  #onFire(): void {
    this.#timer = undefined;
    this.#armedSlot = Number.POSITIVE_INFINITY;
    const nowSlot = Math.floor(this.#clock.now() / this.resolutionMs);
    const heap = this.#heap;
    while (heap.length > 0 && (heap[0] as number) <= nowSlot) {
      const slot = heapPop(heap);
      let entry: WheelEntry | null | undefined = this.#slots.get(slot);
      if (entry === undefined) continue;
      this.#slots.delete(slot);
      while (entry !== null && entry !== undefined) {
        const next: WheelEntry | null = entry.wheelNext;
        entry.wheelSlot = -1;
        entry.wheelPrev = null;
        entry.wheelNext = null;
        this.#size--;
        try {
          entry.onTimer();
        } catch (error) {
          // A throwing entry must not stop the others; surface it like an uncaught timer error.
          queueMicrotask(() => {
            throw error;
          });
        }
        entry = next;
      }
    }
    // Skip slots whose entries were all cancelled so the timer is not armed for nothing.
    while (heap.length > 0 && !this.#slots.has(heap[0] as number)) heapPop(heap);
    if (heap.length > 0) this.#arm(heap[0] as number);
  }
}

/** The longest delay a Node timer takes as given (about 24.8 days). */
const maxTimerDelayMs = 2 ** 31 - 1;

const wheels = new WeakMap<Clock, TimerWheel>();

/** The shared wheel of a clock: every deadline and attempt timeout on that clock uses it. */
export function wheelOf(clock: Clock): TimerWheel {
  let wheel = wheels.get(clock);
  if (wheel === undefined) {
    wheel = new TimerWheel(clock);
    wheels.set(clock, wheel);
  }
  return wheel;
}

function heapPush(heap: number[], value: number): void {
  let index = heap.push(value) - 1;
  while (index > 0) {
    const parent = (index - 1) >> 1;
    const parentValue = heap[parent] as number;
    if (parentValue <= value) break;
    heap[index] = parentValue;
    index = parent;
  }
  heap[index] = value;
}

function heapPop(heap: number[]): number {
  const top = heap[0] as number;
  const last = heap.pop() as number;
  if (heap.length > 0) {
    let index = 0;
    const length = heap.length;
    for (;;) {
      const left = 2 * index + 1;
      if (left >= length) break;
      const right = left + 1;
      const child = right < length && (heap[right] as number) < (heap[left] as number) ? right : left;
      if ((heap[child] as number) >= last) break;
      heap[index] = heap[child] as number;
      index = child;
    }
    heap[index] = last;
  }
  return top;
}

class Sleeper implements WheelEntry {
  wheelSlot = -1;
  wheelPrev: WheelEntry | null = null;
  wheelNext: WheelEntry | null = null;
  constructor(
    readonly resolve: () => void,
    readonly wheel: TimerWheel,
    readonly signal: AbortSignal | undefined,
  ) {}
  onTimer(): void {
    this.signal?.removeEventListener('abort', this);
    this.resolve();
  }
  /** The signal aborted: wake up early (the caller checks `signal.aborted`). */
  handleEvent(): void {
    this.wheel.cancel(this);
    this.resolve();
  }
}

/**
 * Resolves after `delayMs` on `clock`, through its shared wheel (fake clocks drive it too), or
 * as soon as `signal` aborts; the caller tells the two apart by `signal.aborted`.
 */
export function sleep(clock: Clock, delayMs: number, signal?: AbortSignal): Promise<void> {
  if (!(delayMs > 0) || signal?.aborted) return Promise.resolve();
  return new Promise((resolve) => {
    const wheel = wheelOf(clock);
    const sleeper = new Sleeper(resolve, wheel, signal);
    signal?.addEventListener('abort', sleeper, { once: true });
    wheel.schedule(sleeper, clock.now() + delayMs);
  });
}
