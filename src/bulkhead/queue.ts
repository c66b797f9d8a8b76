/**
 * The bulkhead's wait queue: a doubly linked deque (O(1) to add, to take from either end and to
 * remove a waiter that expires or is aborted from anywhere in it) served in adaptive LIFO order.
 *
 * Adaptive LIFO (Facebook, "Fail at Scale": adaptive LIFO with CoDel): while the queue drains
 * now and then, waiters are served first in, first out, which is fair. Once it has stood
 * non-empty for longer than an interval (CoDel's sign that arrivals exceed what the slots
 * serve, not a burst), the newest waiter is served first: it has the most budget left, so it
 * still finishes in time, while the oldest, which would be sent with too little budget to
 * succeed, leave at their own deadline. Under a standing overload, FIFO sends every call late
 * and none succeeds; LIFO serves what the dependency can carry. Back to FIFO once it drains.
 */

/** What the queue links: the fields live on the waiter itself, so queueing allocates nothing more. */
export interface QueueLink {
  queuePrev: QueueLink | null;
  queueNext: QueueLink | null;
  /** Whether the entry is in a queue (so removing it twice is harmless). */
  queued: boolean;
}

/** CoDel's interval: a queue non-empty for longer than this (and than one RTT) is standing. */
export const STANDING_QUEUE_MS = 100;

export class WaitQueue<T extends QueueLink> {
  #head: T | null = null;
  #tail: T | null = null;
  length = 0;
  /** Clock time at which the queue last became non-empty. */
  #nonEmptySince = 0;

  /** Adds `entry` at the newest end at clock time `now`. */
  push(entry: T, now: number): void {
    entry.queued = true;
    entry.queueNext = null;
    entry.queuePrev = this.#tail;
    if (this.#tail === null) {
      this.#head = entry;
      this.#nonEmptySince = now;
    } else this.#tail.queueNext = entry;
    this.#tail = entry;
    this.length++;
  }

  /** Whether, at clock time `now`, the queue has been non-empty for longer than `intervalMs`. */
  standing(now: number, intervalMs: number): boolean {
    return this.length > 0 && now - this.#nonEmptySince > intervalMs;
  }

  /**
   * Takes the next waiter to serve: the oldest (FIFO), or the newest once the queue has been
   * standing for longer than `intervalMs` (LIFO). `undefined` when empty.
   */
  shift(now: number, intervalMs: number): T | undefined {
    const entry = this.standing(now, intervalMs) ? this.#tail : this.#head;
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
