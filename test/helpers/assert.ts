import { expect } from 'vitest';
import { isTelescopeError, TelescopeError } from '../../src/index.js';
import { delay } from './server.js';

/** Awaits a call that must fail and returns its error, checked to be a TelescopeError. */
export async function failure(promise: Promise<unknown>): Promise<TelescopeError> {
  try {
    await promise;
  } catch (error) {
    expect(error).toBeInstanceOf(TelescopeError);
    return error as TelescopeError;
  }
  throw new Error('expected the call to fail, it succeeded');
}

/** Runs a function that must throw a TelescopeError synchronously (a refused option) and returns the error. */
export function thrown(fn: () => unknown): TelescopeError {
  try {
    fn();
  } catch (error) {
    expect(isTelescopeError(error)).toBe(true);
    return error as TelescopeError;
  }
  throw new Error('expected a TelescopeError to be thrown');
}

/** Like {@link failure}, plus how long the call took (real time, ms). */
export async function timedFailure(promise: Promise<unknown>): Promise<{ error: TelescopeError; ms: number }> {
  const start = performance.now();
  const error = await failure(promise);
  return { error, ms: performance.now() - start };
}

/** Polls `predicate` every 10 ms until it holds; fails naming `what` after `timeoutMs`. */
export async function waitFor(
  what: string,
  predicate: () => boolean | Promise<boolean>,
  timeoutMs = 5000,
): Promise<void> {
  const until = performance.now() + timeoutMs;
  while (!(await predicate())) {
    if (performance.now() > until) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await delay(10);
  }
}
