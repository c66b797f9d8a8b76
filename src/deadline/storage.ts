import { AsyncLocalStorage } from 'node:async_hooks';
import type { Deadline } from '../core/deadline.js';

/**
 * The ambient deadline of the current async context. Only the edges use it (server
 * middleware, `withDeadline`); inside the stack the deadline travels on `CallContext`.
 *
 * Kept on a global symbol: the ESM and CommonJS builds (or two installed copies) must share
 * one storage, or a deadline set by the server middleware of one would be invisible to the
 * clients of the other.
 */
interface SharedState {
  storage: AsyncLocalStorage<Deadline>;
  used: boolean;
}

const key = Symbol.for('telescope.deadline.storage');
const globals = globalThis as typeof globalThis & { [key]?: SharedState };
const shared: SharedState = globals[key] ?? { storage: new AsyncLocalStorage<Deadline>(), used: false };
globals[key] = shared;

export const deadlineStorage: AsyncLocalStorage<Deadline> = shared.storage;

/** Marks the storage as used; called by every entry point that sets an ambient deadline. */
export function markAmbientDeadlinesUsed(): void {
  shared.used = true;
}

/** The deadline of the current async context, if any. Until anything sets one, no lookup. */
export function ambientDeadline(): Deadline | undefined {
  return shared.used ? shared.storage.getStore() : undefined;
}
