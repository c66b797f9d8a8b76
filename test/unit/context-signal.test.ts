/**
 * `CallContext.signal` and retry waits against a long-lived caller signal: nothing stays
 * attached to the caller's signal or the timer wheel once a call has settled, and an abort
 * during a Retry-After wait ends the call at once. Over an in-process transport on a manual
 * clock, so every time step is explicit.
 */
import { getEventListeners } from 'node:events';
import { describe, expect, it } from 'vitest';
import {
  type AttemptTransport,
  CallContext,
  createClient,
  Deadline,
  defineService,
  ErrorCode,
  endpoint,
  HttpStatusError,
  TelescopeError,
  wheelOf,
} from '../../src/index.js';
import { manualClock } from '../helpers/clock.js';

const service = defineService({ name: 'svc', endpoints: { get: endpoint({ method: 'GET', path: '/x' }) } });

describe('CallContext.signal', () => {
  it('with a caller signal and a deadline: aborts on the first, and release() detaches from both', () => {
    const clock = manualClock(0);
    const caller = new AbortController();
    const make = () =>
      new CallContext({
        service: 's',
        endpoint: 'e',
        idempotent: true,
        clock,
        timeoutMs: 100,
        callerSignal: caller.signal,
        deadline: Deadline.after(100, clock),
      });
    const contexts = Array.from({ length: 1000 }, make);
    for (const context of contexts) expect(context.signal.aborted).toBe(false);
    expect(getEventListeners(caller.signal, 'abort')).toHaveLength(1000);
    expect(wheelOf(clock).size).toBe(1000);
    for (const context of contexts) context.release();
    expect(getEventListeners(caller.signal, 'abort')).toHaveLength(0);
    expect(wheelOf(clock).size).toBe(0);

    const byDeadline = make();
    const byCaller = make();
    const deadlineSignal = byDeadline.signal;
    clock.advance(100);
    expect(deadlineSignal.aborted).toBe(true);
    expect(deadlineSignal.reason).toMatchObject({ code: ErrorCode.DEADLINE_EXCEEDED });
    expect(getEventListeners(caller.signal, 'abort')).toHaveLength(0);

    const late = make();
    const callerSignal = late.signal;
    caller.abort(new Error('user left'));
    expect(callerSignal.reason).toEqual(new Error('user left'));
    expect(wheelOf(clock).size).toBe(0);
    // A context whose signal was never read holds nothing.
    expect(byCaller.release()).toBeUndefined();
  });

  it('with a deadline and no caller signal: aborts at the deadline, and release() leaves the wheel', () => {
    const clock = manualClock(0);
    const make = () =>
      new CallContext({
        service: 's',
        endpoint: 'e',
        idempotent: true,
        clock,
        timeoutMs: 100,
        deadline: Deadline.after(100, clock),
      });
    const released = make();
    expect(released.signal.aborted).toBe(false);
    expect(wheelOf(clock).size).toBe(1);
    released.release();
    expect(wheelOf(clock).size).toBe(0);
    const expiring = make();
    const signal = expiring.signal;
    clock.advance(100);
    expect(signal.reason).toMatchObject({ code: ErrorCode.DEADLINE_EXCEEDED });
    expect(released.signal.aborted).toBe(false);
  });

  it('a client whose transport reads context.signal leaves nothing on a shared caller signal', async () => {
    const clock = manualClock(0);
    const shared = new AbortController();
    const reading: AttemptTransport = {
      call: (_request, context) => {
        expect(context.signal.aborted).toBe(false);
        return Promise.resolve({ status: 200, headers: {}, body: 'ok', instance: context.instance?.url ?? '' });
      },
      close: async () => {},
    };
    const client = createClient(service, { instances: ['http://127.0.0.1:1'], clock, transport: reading });
    for (let call = 0; call < 500; call++) expect(await client.get({ signal: shared.signal })).toBe('ok');
    expect(getEventListeners(shared.signal, 'abort')).toHaveLength(0);
    expect(wheelOf(clock).size).toBe(0);
    await client.close();
  });
});

describe('retry: an abort during a Retry-After wait', () => {
  it('ends the call at once with ABORTED, not after the wait with the 503', async () => {
    const clock = manualClock(0);
    let attempts = 0;
    const busy: AttemptTransport = {
      call: (_request, context) => {
        attempts++;
        return Promise.reject(
          new HttpStatusError(503, 'busy', 1000, { instance: context.instance?.url, requestSent: true }),
        );
      },
      close: async () => {},
    };
    const client = createClient(service, {
      // One instance: the retry must go back to the one that asked to wait (with another free
      // instance, a 503's Retry-After does not delay the retry).
      instances: ['http://127.0.0.1:1'],
      clock,
      transport: busy,
      timeoutMs: 5000,
    });
    const caller = new AbortController();
    const outcome = client.get({ signal: caller.signal }).then(
      () => undefined,
      (error: unknown) => error as TelescopeError,
    );
    await new Promise((resolve) => setImmediate(resolve));
    clock.advance(50);
    caller.abort(new Error('user left'));
    const error = await outcome;
    expect(error).toBeInstanceOf(TelescopeError);
    expect(error).toMatchObject({ code: ErrorCode.ABORTED, requestSent: true });
    expect(error?.message).toBe('call aborted by the caller while it waited to retry');
    expect(error?.cause).toEqual(new Error('user left'));
    expect(attempts).toBe(1);
    expect(getEventListeners(caller.signal, 'abort')).toHaveLength(0);
    expect(wheelOf(clock).size).toBe(0);
    await client.close();
  });
});
