/**
 * The bulkhead's wait queue: a doubly linked deque (O(1) to add, to take from either end and to
 * remove a waiter that expires or is aborted from anywhere in it) served in adaptive LIFO order.
 *
 * Adaptive LIFO (Facebook, "Fail at Scale"): while waits are short against the callers'
 * budgets, waiters are served first in, first out, which is fair. Once the oldest waiter has
 * spent half its budget waiting, the queue is standing: the newest waiter is served first. It
 * has the most budget left, so it still finishes in time, while the oldest, which FIFO would
 * send late, leave once their budget no longer covers a call. Under a standing overload FIFO
 * sends every call late and none succeeds; LIFO serves what the dependency can carry.
 *
 * The test is the oldest waiter's age against its budget, not a fixed interval: CoDel's 100 ms
 * (how long the queue has been non-empty, or the oldest waiter's age) switched the queue of a
 * healthy ramp-up (2,000 calls/s while the limit doubles from 100) to LIFO, and the oldest
 * waiters then reached their deadline while newer ones went first; a demand just above the
 * limit keeps a few calls waiting all the time, each briefly, and must stay FIFO too.
 */
/** What the queue links: the fields live on the waiter itself, so queueing allocates nothing more. */
export interface QueueLink {
  queuePrev: QueueLink | null;
  queueNext: QueueLink | null;
  /** Whether the entry is in a queue (so removing it twice is harmless). */
  queued: boolean;
  /**
   * Clock time after which, while this entry is the oldest, the queue is standing and served
   * newest first (see {@link standingAt}).
   */
  lifoAfter: number;
}

/**
 * When a waiter that arrives at `now` makes its queue standing if it is still the oldest:
 * once it has spent half its budget (never, without a deadline).
 */
export function standingAt(now: number, deadlineAt: number): number {
  return (now + deadlineAt) / 2;
}

export class WaitQueue<T extends QueueLink> {
  #head: T | null = null;
  #tail: T | null = null;
  length = 0;

  /** Adds `entry` at the newest end. */
  push(entry: T): void {
    entry.queued = true;
    entry.queueNext = null;
    entry.queuePrev = this.#tail;
    if (this.#tail === null) this.#head = entry;
    else this.#tail.queueNext = entry;
    this.#tail = entry;
    this.length++;
  }

  /** Whether, at clock time `now`, the queue is standing: its oldest waiter has waited too long. */
  standing(now: number): boolean {
    return this.#head !== null && now >= this.#head.lifoAfter;
  }

  /** Takes the next waiter to serve: the oldest (FIFO), or the newest while standing (LIFO). */
  shift(now: number): T | undefined {
    const entry = this.standing(now) ? this.#tail : this.#head;
    if (entry === null) return undefined;
    this.remove(entry);
    return entry;
  }

  /** Removes `entry` wherever it is; safe when it is not queued. */
  remove(entry: T): void {
    if (!entry.queued) return;
    entry.queued = false;
    const prev = entry.queuePrev as T | null;
    const next = entry.queueNext as T | null;
    if (prev === null) this.#head = next;
    else prev.queueNext = next;
    if (next === null) this.#tail = prev;
    else next.queuePrev = prev;
    entry.queuePrev = null;
    entry.queueNext = null;
    this.length--;
  }
}
