import type { Clock } from '../../src/index.js';

/** A clock that only moves when told to: timers fire in time order inside `advance()`. */
export interface ManualClock extends Clock {
  advance(ms: number): void;
  /** Timers not yet fired. */
  pending(): number;
}

export function manualClock(startMs = 1000): ManualClock {
  let now = startMs;
  let nextId = 0;
  const timers = new Map<number, { at: number; callback: () => void }>();
  return {
    now: () => now,
    setTimeout(callback, delayMs) {
      const id = nextId++;
      timers.set(id, { at: now + Math.max(0, delayMs), callback });
      return id;
    },
    clearTimeout(handle) {
      timers.delete(handle as number);
    },
    pending: () => timers.size,
    advance(ms) {
      const target = now + ms;
      for (;;) {
        let dueId: number | undefined;
        let dueAt = Number.POSITIVE_INFINITY;
        for (const [id, timer] of timers) {
          if (timer.at <= target && timer.at < dueAt) {
            dueAt = timer.at;
            dueId = id;
          }
        }
        if (dueId === undefined) break;
        const timer = timers.get(dueId)!;
        timers.delete(dueId);
        now = Math.max(now, timer.at);
        timer.callback();
      }
      now = target;
    },
  };
}
