import { describe, expect, it } from 'vitest';
import {
  type Call,
  CallContext,
  Deadline,
  ErrorCode,
  HttpStatusError,
  type IncomingResponse,
  type Instance,
  RetryBudget,
  type RetryEvent,
  retry,
  TelescopeError,
} from '../../src/index.js';
import { type ManualClock, manualClock } from '../helpers/clock.js';

const ok: IncomingResponse = { status: 200, headers: {}, body: 'ok', instance: 'x' };
const request = () => ({ method: 'GET', path: '/', headers: {}, body: undefined });

function context(clock: ManualClock, options: { idempotent?: boolean; budgetMs?: number } = {}) {
  return new CallContext({
    service: 's',
    endpoint: 'e',
    idempotent: options.idempotent ?? true,
    clock,
    timeoutMs: 1000,
    deadline: Deadline.after(options.budgetMs ?? 1000, clock),
  });
}

/** An inner call that plays a script of outcomes and records the instances it was given. */
function scripted(outcomes: Array<Error | 'ok'>) {
  const calls: Array<{ attempt: number; tried: string[] }> = [];
  const call: Call = async (_request, ctx) => {
    const instance: Instance = { url: `http://i${calls.length}:1`, weight: 1 };
    ctx.instance = instance;
    calls.push({ attempt: ctx.attempt, tried: (ctx.tried ?? []).map((item) => item.url) });
    const outcome = outcomes[calls.length - 1] ?? 'ok';
    if (outcome === 'ok') return ok;
    throw outcome;
  };
  return { call, calls };
}

const reset = () => new TelescopeError(ErrorCode.CONNECTION_RESET, 'reset', { retryable: true, requestSent: true });
const refused = () => new TelescopeError(ErrorCode.CONNECT_FAILED, 'refused', { retryable: true, requestSent: false });

describe('retry layer', () => {
  it('retries a retryable failure once, marking the first instance as tried', async () => {
    const clock = manualClock();
    const { call, calls } = scripted([reset(), 'ok']);
    const response = await retry({ clock, attemptNeedsMs: 30 })(call)(request(), context(clock));
    expect(response).toBe(ok);
    expect(calls).toEqual([
      { attempt: 1, tried: [] },
      { attempt: 2, tried: ['http://i0:1'] },
    ]);
  });

  it('gives up after maxRetries with the last attempt’s error', async () => {
    const clock = manualClock();
    const last = reset();
    const { call, calls } = scripted([reset(), reset(), last]);
    const error = await retry({ clock, attemptNeedsMs: 30, maxRetries: 2 })(call)(request(), context(clock)).catch(
      (failure: unknown) => failure,
    );
    expect(error).toBe(last);
    expect(calls).toHaveLength(3);
  });

  it('does not retry what a retry cannot fix', async () => {
    const clock = manualClock();
    for (const failure of [
      new HttpStatusError(404, '', undefined),
      new TelescopeError(ErrorCode.INVALID_RESPONSE, 'bad', { retryable: false }),
      new TelescopeError(ErrorCode.ABORTED, 'aborted'),
      new Error('not ours'),
    ]) {
      const { call, calls } = scripted([failure, 'ok']);
      await expect(retry({ clock, attemptNeedsMs: 30 })(call)(request(), context(clock))).rejects.toBe(failure);
      expect(calls).toHaveLength(1);
    }
  });

  it('never repeats a write that may have been sent; retries one that certainly was not', async () => {
    const clock = manualClock();
    const sent = scripted([reset(), 'ok']);
    await expect(
      retry({ clock, attemptNeedsMs: 30 })(sent.call)(request(), context(clock, { idempotent: false })),
    ).rejects.toMatchObject({ code: ErrorCode.CONNECTION_RESET });
    expect(sent.calls).toHaveLength(1);
    const unsent = scripted([refused(), 'ok']);
    await expect(
      retry({ clock, attemptNeedsMs: 30 })(unsent.call)(request(), context(clock, { idempotent: false })),
    ).resolves.toBe(ok);
    expect(unsent.calls).toHaveLength(2);
  });

  it('does not retry when the remaining budget cannot fit an attempt', async () => {
    const clock = manualClock();
    const { call, calls } = scripted([reset(), 'ok']);
    await expect(
      retry({ clock, attemptNeedsMs: 30 })(call)(request(), context(clock, { budgetMs: 29 })),
    ).rejects.toMatchObject({ code: ErrorCode.CONNECTION_RESET });
    expect(calls).toHaveLength(1);
  });

  it('waits for Retry-After when it fits the budget, fails fast when it does not', async () => {
    const clock = manualClock();
    const events: RetryEvent[] = [];
    const fits = scripted([new HttpStatusError(429, '', 200), 'ok']);
    const pending = retry({ clock, attemptNeedsMs: 30, onEvent: (event) => events.push(event) })(fits.call)(
      request(),
      context(clock),
    );
    await Promise.resolve();
    await Promise.resolve();
    expect(fits.calls).toHaveLength(1);
    clock.advance(199);
    await Promise.resolve();
    expect(fits.calls).toHaveLength(1);
    clock.advance(2);
    await expect(pending).resolves.toBe(ok);
    expect(fits.calls).toHaveLength(2);
    expect(events[0]).toMatchObject({ type: 'retry', attempt: 2, code: 'HTTP_STATUS', delayMs: 200 });

    const tooLong = scripted([new HttpStatusError(503, '', 5000), 'ok']);
    await expect(retry({ clock, attemptNeedsMs: 30 })(tooLong.call)(request(), context(clock))).rejects.toMatchObject({
      status: 503,
    });
    expect(tooLong.calls).toHaveLength(1);
  });

  it('a 503’s Retry-After holds back its instance only: no wait when another is free; a 429’s always waits', async () => {
    const clock = manualClock();
    /** Fails once with `error` (another instance free or not, as the balancer says), then answers. */
    const failingOnce = (error: Error, anotherInstanceFree: boolean) => {
      let calls = 0;
      const call: Call = async (_request, ctx) => {
        ctx.instance = { url: 'http://i0:1', weight: 1 };
        if (calls++ > 0) return ok;
        ctx.anotherInstanceFree = anotherInstanceFree;
        throw error;
      };
      return { call, calls: () => calls };
    };
    const delays = async (error: Error, anotherInstanceFree: boolean) => {
      const events: RetryEvent[] = [];
      const { call, calls } = failingOnce(error, anotherInstanceFree);
      const pending = retry({ clock, attemptNeedsMs: 30, onEvent: (event) => events.push(event) })(call)(
        request(),
        context(clock),
      );
      for (let step = 0; step < 5; step++) await Promise.resolve();
      const sentAtOnce = calls();
      clock.advance(300);
      await expect(pending).resolves.toBe(ok);
      return { sentAtOnce, delayMs: events[0]?.type === 'retry' ? events[0].delayMs : undefined };
    };
    expect(await delays(new HttpStatusError(503, '', 200), true)).toEqual({ sentAtOnce: 2, delayMs: 0 });
    expect(await delays(new HttpStatusError(503, '', 200), false)).toEqual({ sentAtOnce: 1, delayMs: 200 });
    expect(await delays(new HttpStatusError(429, '', 200), true)).toEqual({ sentAtOnce: 1, delayMs: 200 });
  });

  it('after a hedge, a 503’s Retry-After is skipped only when another instance was free for both attempts', async () => {
    const clock = manualClock();
    const events: RetryEvent[] = [];
    const rejecters: Array<(error: Error) => void> = [];
    const instances = ['http://a:1', 'http://b:1', 'http://a:1'];
    // Two instances: the first attempt (a) sees b free; the hedge (on b, a tried) sees none.
    const call: Call = (_request, ctx) => {
      const index = rejecters.length;
      if (index >= 2) return Promise.resolve(ok);
      ctx.instance = { url: instances[index] as string, weight: 1 };
      return new Promise((_resolve, reject) => {
        rejecters.push((error) => {
          ctx.anotherInstanceFree = index === 0;
          reject(error);
        });
      });
    };
    const pending = retry({
      clock,
      attemptNeedsMs: 30,
      maxRetries: 2, // the hedge counts as the second attempt
      hedge: { delayMs: 10 },
      onEvent: (event) => events.push(event),
    })(call)(request(), context(clock));
    await Promise.resolve();
    clock.advance(10);
    await Promise.resolve();
    expect(rejecters).toHaveLength(2);
    // The hedge fails first; the first attempt decides the call.
    rejecters[1]?.(new HttpStatusError(503, '', 200));
    await Promise.resolve();
    rejecters[0]?.(new HttpStatusError(503, '', 200));
    for (let step = 0; step < 5; step++) await Promise.resolve();
    clock.advance(300);
    await expect(pending).resolves.toBe(ok);
    expect(events.filter((event) => event.type === 'retry')).toEqual([expect.objectContaining({ delayMs: 200 })]);
  });

  it('stops retrying when the budget is spent, marking the error', async () => {
    const clock = manualClock();
    const budget = new RetryBudget(clock, { ratio: 0, minPerSecond: 0.3, windowMs: 10_000 }); // 3 tokens
    const events: RetryEvent[] = [];
    const layer = retry({ clock, attemptNeedsMs: 30, retryBudget: budget, onEvent: (event) => events.push(event) });
    const outcomes: unknown[] = [];
    for (let index = 0; index < 5; index++) {
      const { call } = scripted([reset(), reset()]);
      outcomes.push(await layer(call)(request(), context(clock)).catch((error: unknown) => error));
    }
    const exhausted = outcomes.filter((error) => (error as TelescopeError).retryBudgetExhausted === true);
    expect(exhausted).toHaveLength(2);
    expect((exhausted[0] as TelescopeError).code).toBe(ErrorCode.CONNECTION_RESET);
    expect(events.filter((event) => event.type === 'budget-exhausted')).toHaveLength(2);
  });

  it('rejects bad options with INVALID_OPTION', () => {
    const clock = manualClock();
    expect(() => retry({ clock, attemptNeedsMs: 1, maxRetries: -1 })).toThrow(/maxRetries/);
    expect(() => retry({ clock, attemptNeedsMs: 1, maxRetries: 1.5 })).toThrow(/maxRetries/);
    expect(() => retry({ clock, attemptNeedsMs: 1, hedge: { delayMs: -5 } })).toThrow(/hedge.delayMs/);
    expect(() => new RetryBudget(clock, { ratio: -1 })).toThrow(/ratio/);
    expect(() => new RetryBudget(clock, { windowMs: 10 })).toThrow(/windowMs/);
  });
});

describe('RetryBudget', () => {
  it('allows ratio × requests plus the floor over the window', () => {
    const clock = manualClock(0);
    const budget = new RetryBudget(clock, { ratio: 0.1, minPerSecond: 1, windowMs: 10_000 });
    expect(budget.tokens()).toBe(10); // the floor: 1/s over 10 s
    for (let index = 0; index < 100; index++) budget.deposit();
    expect(budget.tokens()).toBe(20);
    let granted = 0;
    while (budget.tryWithdraw()) granted++;
    expect(granted).toBe(20);
    expect(budget.tokens()).toBe(0);
  });

  it('forgets requests and retries that left the window', () => {
    const clock = manualClock(0);
    const budget = new RetryBudget(clock, { ratio: 0.5, minPerSecond: 0, windowMs: 10_000 });
    for (let index = 0; index < 10; index++) budget.deposit();
    expect(budget.tokens()).toBe(5);
    expect(budget.tryWithdraw()).toBe(true);
    clock.advance(5_000);
    expect(budget.tokens()).toBe(4);
    clock.advance(6_000);
    expect(budget.tokens()).toBe(0);
    clock.advance(60_000);
    budget.deposit();
    budget.deposit();
    expect(budget.tokens()).toBe(1);
  });

  it('amplification under total failure stays within ratio plus floor', () => {
    const clock = manualClock(0);
    const budget = new RetryBudget(clock, { ratio: 0.1, minPerSecond: 10 });
    let attempts = 0;
    const calls = 10_000;
    for (let index = 0; index < calls; index++) {
      clock.advance(1); // 1000 calls/s for 10 s
      budget.deposit();
      attempts++;
      if (budget.tryWithdraw()) attempts++;
    }
    expect(attempts).toBeLessThanOrEqual(calls * 1.1 + 10 * 10 + 10);
    expect(attempts).toBeGreaterThan(calls * 1.05);
  });
});
