import { AsyncLocalStorage } from 'node:async_hooks';
import type { Deadline } from '../core/deadline.js';

/**
 * The ambient deadline of the current async context. Only the edges use it (server
 * middleware, `withDeadline`); inside the stack the deadline travels on `CallContext`.
 */
export const deadlineStorage = new AsyncLocalStorage<Deadline>();

let storageUsed = false;

/** True once anything has entered a deadline context; until then calls skip the lookup. */
export function ambientDeadlinesUsed(): boolean {
  return storageUsed;
}

/** Marks the storage as used; called by every entry point that sets an ambient deadline. */
export function markAmbientDeadlinesUsed(): void {
  storageUsed = true;
}

/** The deadline of the current async context, if any. */
export function ambientDeadline(): Deadline | undefined {
  return storageUsed ? deadlineStorage.getStore() : undefined;
}
