import { describe, expect, it } from 'vitest';
import { CancellationSource } from '../../src/core/deadline.js';
import {
  attempt,
  type Call,
  CallContext,
  currentDeadline,
  Deadline,
  deadline,
  ErrorCode,
  type OutgoingRequest,
  withDeadline,
} from '../../src/index.js';
import { manualClock } from '../helpers/clock.js';

function context(clock: ReturnType<typeof manualClock>, timeoutMs: number, explicit?: Deadline) {
  return new CallContext({ service: 's', endpoint: 'e', idempotent: true, clock, timeoutMs, deadline: explicit });
}

function request(): OutgoingRequest {
  return { method: 'GET', path: '/', headers: {}, body: undefined };
}

/** A terminal call that records what the layers above decided. */
function recorder() {
  const seen: Array<{ deadlineAt: number | undefined; expiresAt: number; endsBudget: boolean; header?: string }> = [];
  const call: Call = async (req, ctx) => {
    seen.push({
      deadlineAt: ctx.deadline?.at,
      expiresAt: ctx.attemptExpiresAt,
      endsBudget: ctx.attemptEndsBudget,
      header: req.headers['x-request-timeout-ms'],
    });
    return { status: 200, headers: {}, body: undefined, instance: 'x' };
  };
  return { call, seen };
}

describe('Deadline', () => {
  it('counts down on its clock and never goes negative', () => {
    const clock = manualClock(1000);
    const budget = Deadline.after(300, clock);
    expect(budget.at).toBe(1300);
    expect(budget.remainingMs()).toBe(300);
    clock.advance(250);
    expect(budget.remainingMs()).toBe(50);
    expect(budget.expired).toBe(false);
    clock.advance(100);
    expect(budget.remainingMs()).toBe(0);
    expect(budget.expired).toBe(true);
  });

  it('after() with a negative or NaN budget is already expired', () => {
    const clock = manualClock();
    expect(Deadline.after(-5, clock).expired).toBe(true);
    expect(Deadline.after(Number.NaN, clock).expired).toBe(true);
  });

  it('min() keeps the earlier deadline and accepts undefined', () => {
    const clock = manualClock();
    const short = Deadline.after(100, clock);
    const long = Deadline.after(500, clock);
    expect(Deadline.min(short, long)).toBe(short);
    expect(Deadline.min(long, short)).toBe(short);
    expect(Deadline.min(undefined, long)).toBe(long);
    expect(Deadline.min(long, undefined)).toBe(long);
  });

  it('min() and a nested withDeadline keep the caller cancellation of either side', () => {
    const clock = manualClock();
    const inbound = new AbortController();
    const outer = new Deadline(clock.now() + 3000, clock, inbound);
    const shorter = Deadline.after(100, clock);
    const combined = Deadline.min(outer, shorter);
    expect(combined.at).toBe(shorter.at);
    expect(combined.cancellation).toBe(inbound);
    expect(Deadline.min(shorter, outer).cancellation).toBe(inbound);
    expect(Deadline.min(shorter, Deadline.after(200, clock))).toBe(shorter);
    withDeadline(outer, () =>
      withDeadline(
        50,
        () => {
          expect(currentDeadline()?.at).toBe(clock.now() + 50);
          expect(currentDeadline()?.cancellation).toBe(inbound);
        },
        clock,
      ),
    );
  });

  it('signal is created lazily and aborts at the deadline with DEADLINE_EXCEEDED', () => {
    const clock = manualClock();
    const budget = Deadline.after(100, clock);
    expect(clock.pending()).toBe(0); // nothing armed until someone listens
    const signal = budget.signal;
    expect(signal.aborted).toBe(false);
    expect(clock.pending()).toBe(1);
    clock.advance(99);
    expect(signal.aborted).toBe(false);
    clock.advance(6); // wheel resolution is 5 ms: late by less than that, never early
    expect(signal.aborted).toBe(true);
    expect((signal.reason as { code: string }).code).toBe(ErrorCode.DEADLINE_EXCEEDED);
  });

  it('signal of an expired deadline is already aborted', () => {
    const clock = manualClock();
    expect(Deadline.after(0, clock).signal.aborted).toBe(true);
  });
});

describe('deadline layer', () => {
  it('budget is now + timeoutMs without an inbound deadline', async () => {
    const clock = manualClock(1000);
    const { call, seen } = recorder();
    await deadline()(call)(request(), context(clock, 400));
    expect(seen[0]?.deadlineAt).toBe(1400);
  });

  it('an inbound (explicit) deadline shorter than timeoutMs wins', async () => {
    const clock = manualClock(1000);
    const { call, seen } = recorder();
    await deadline()(call)(request(), context(clock, 400, Deadline.after(150, clock)));
    expect(seen[0]?.deadlineAt).toBe(1150);
  });

  it('timeoutMs wins over a longer inbound deadline', async () => {
    const clock = manualClock(1000);
    const { call, seen } = recorder();
    await deadline()(call)(request(), context(clock, 400, Deadline.after(5000, clock)));
    expect(seen[0]?.deadlineAt).toBe(1400);
  });

  it('the ambient deadline of withDeadline applies, and an explicit one wins over it', async () => {
    const clock = manualClock(1000);
    const { call, seen } = recorder();
    const layer = deadline()(call);
    await withDeadline(200, () => layer(request(), context(clock, 1000)), clock);
    expect(seen[0]?.deadlineAt).toBe(1200);
    await withDeadline(200, () => layer(request(), context(clock, 1000, Deadline.after(600, clock))), clock);
    expect(seen[1]?.deadlineAt).toBe(1600);
  });

  it('fails with DEADLINE_EXCEEDED and does no work when the budget is below minAttemptMs', async () => {
    const clock = manualClock(1000);
    const { call, seen } = recorder();
    const layer = deadline({ minAttemptMs: 20 })(call);
    await expect(layer(request(), context(clock, 1000, Deadline.after(19, clock)))).rejects.toMatchObject({
      code: ErrorCode.DEADLINE_EXCEEDED,
      requestSent: false,
      message: expect.stringContaining('minAttemptMs'),
    });
    await expect(layer(request(), context(clock, 1000, Deadline.after(0, clock)))).rejects.toMatchObject({
      code: ErrorCode.DEADLINE_EXCEEDED,
    });
    expect(seen).toHaveLength(0);
  });

  it('rejects a negative minAttemptMs with INVALID_OPTION', () => {
    expect(() => deadline({ minAttemptMs: -1 })).toThrow(expect.objectContaining({ code: ErrorCode.INVALID_OPTION }));
  });
});

describe('attempt layer', () => {
  it('attempt timeout = remaining − reserveMs; header = that − reserveMs once more', async () => {
    const clock = manualClock(1000);
    const { call, seen } = recorder();
    const stack = deadline()(attempt({ reserveMs: 10 })(call));
    await stack(request(), context(clock, 500));
    expect(seen[0]).toEqual({ deadlineAt: 1500, expiresAt: 1490, endsBudget: true, header: '480' });
  });

  it('attemptTimeoutMs bounds the attempt when it is shorter than the budget', async () => {
    const clock = manualClock(1000);
    const { call, seen } = recorder();
    const stack = deadline()(attempt({ attemptTimeoutMs: 100, reserveMs: 10 })(call));
    await stack(request(), context(clock, 500));
    expect(seen[0]).toEqual({ deadlineAt: 1500, expiresAt: 1100, endsBudget: false, header: '90' });
  });

  it('a later attempt gets what is left of the budget', async () => {
    const clock = manualClock(1000);
    const { call, seen } = recorder();
    const layer = attempt({ reserveMs: 10 })(call);
    const ctx = context(clock, 500, Deadline.after(500, clock));
    await layer(request(), ctx);
    clock.advance(300);
    ctx.attempt = 2;
    await layer(request(), ctx);
    expect(seen[1]).toMatchObject({ expiresAt: 1490, header: '180' });
  });

  it('budgets strictly shrink hop by hop', async () => {
    // Each hop's inbound budget is the header the previous hop sent.
    const clock = manualClock(0);
    let budgetMs = 3000;
    const budgets = [budgetMs];
    for (let hop = 0; hop < 4; hop++) {
      const { call, seen } = recorder();
      await deadline()(attempt({ reserveMs: 10 })(call))(
        request(),
        context(clock, 10_000, Deadline.after(budgetMs, clock)),
      );
      budgetMs = Number(seen[0]?.header);
      budgets.push(budgetMs);
    }
    for (let index = 1; index < budgets.length; index++) {
      expect(budgets[index]).toBeLessThan(budgets[index - 1] as number);
    }
    expect(budgets).toEqual([3000, 2980, 2960, 2940, 2920]);
  });

  it('no attempt below minAttemptMs after the reserve', async () => {
    const clock = manualClock(1000);
    const { call, seen } = recorder();
    const layer = attempt({ reserveMs: 10, minAttemptMs: 20 })(call);
    await expect(layer(request(), context(clock, 1000, Deadline.after(29, clock)))).rejects.toMatchObject({
      code: ErrorCode.DEADLINE_EXCEEDED,
      requestSent: false,
    });
    expect(seen).toHaveLength(0);
  });

  it('sends no header when disabled, and a custom header name when set', async () => {
    const clock = manualClock(1000);
    const { call } = recorder();
    const seenHeaders: Array<Record<string, string>> = [];
    const capture: Call = (req, ctx) => {
      seenHeaders.push({ ...req.headers });
      return call(req, ctx);
    };
    await attempt({ deadlineHeader: false, attemptHeader: false })(capture)(
      request(),
      context(clock, 1000, Deadline.after(500, clock)),
    );
    await attempt({ deadlineHeader: 'grpc-timeout-ms' })(capture)(
      request(),
      context(clock, 1000, Deadline.after(500, clock)),
    );
    expect(seenHeaders[0]).toEqual({});
    // The attempt number travels too (x-request-attempt), unless turned off as above.
    expect(seenHeaders[1]).toEqual({ 'grpc-timeout-ms': '480', 'x-request-attempt': '1' });
  });

  it('rejects bad options with INVALID_OPTION naming the option', () => {
    expect(() => attempt({ attemptTimeoutMs: 0 })).toThrow(/attemptTimeoutMs must be a positive number/);
    expect(() => attempt({ reserveMs: -1 })).toThrow(/reserveMs/);
    expect(() => attempt({ deadlineHeader: 'Bad Header' })).toThrow(/deadlineHeader/);
  });
});

describe('withDeadline / currentDeadline', () => {
  it('currentDeadline is undefined outside and set inside, across awaits', async () => {
    expect(currentDeadline()).toBeUndefined();
    await withDeadline(1000, async () => {
      await new Promise((resolve) => setImmediate(resolve));
      expect(currentDeadline()?.remainingMs()).toBeGreaterThan(0);
      expect(currentDeadline()?.remainingMs()).toBeLessThanOrEqual(1000);
    });
    expect(currentDeadline()).toBeUndefined();
  });

  it('a nested longer budget never extends the outer one; a shorter one shortens it', () => {
    const clock = manualClock(0);
    withDeadline(
      100,
      () => {
        withDeadline(5000, () => expect(currentDeadline()?.at).toBe(100), clock);
        withDeadline(30, () => expect(currentDeadline()?.at).toBe(30), clock);
      },
      clock,
    );
  });

  it('an already expired budget is expired inside', () => {
    const clock = manualClock(0);
    withDeadline(-1, () => expect(currentDeadline()?.expired).toBe(true), clock);
  });

  it('rejects a budget that is not a number or a Deadline', () => {
    expect(() => withDeadline(Number.NaN, () => undefined)).toThrow(
      expect.objectContaining({ code: ErrorCode.INVALID_OPTION }),
    );
    expect(() => withDeadline('100' as unknown as number, () => undefined)).toThrow(/withDeadline budget/);
  });
});

describe('CancellationSource', () => {
  it('tells its watchers once, builds its signal only when read, aborted if read after it fired', () => {
    const source = new CancellationSource();
    const told: string[] = [];
    const first = { handleEvent: () => told.push('first') };
    const second = { handleEvent: () => told.push('second') };
    const removed = { handleEvent: () => told.push('removed') };
    source.watch(first);
    source.watch(removed);
    source.watch(second);
    source.unwatch(removed);
    expect(source.isCancelled).toBe(false);
    const reason = new Error('gone');
    source.cancel(reason);
    source.cancel(new Error('again'));
    expect(told).toEqual(['first', 'second']);
    expect(source.isCancelled).toBe(true);
    expect(source.signal.aborted).toBe(true);
    expect(source.signal.reason).toBe(reason);
  });

  it("a context under it sees the caller's abort without a signal, and reads one on demand", () => {
    const clock = manualClock();
    const source = new CancellationSource();
    const call = new CallContext({
      service: 's',
      endpoint: 'e',
      idempotent: true,
      clock,
      timeoutMs: 100,
      cancellation: source,
    });
    let told = 0;
    const listener = { handleEvent: () => told++ };
    call.watchCaller(listener);
    expect(call.callerAborted).toBe(false);
    source.cancel(new Error('gone'));
    expect(told).toBe(1);
    expect(call.callerAborted).toBe(true);
    expect(call.callerSignal?.aborted).toBe(true);
    call.unwatchCaller(listener);
    // A caller signal given too wins over the cancellation.
    const own = new AbortController();
    const both = new CallContext({
      service: 's',
      endpoint: 'e',
      idempotent: true,
      clock,
      timeoutMs: 100,
      callerSignal: own.signal,
      cancellation: new CancellationSource(),
    });
    expect(both.callerSignal).toBe(own.signal);
  });
});
