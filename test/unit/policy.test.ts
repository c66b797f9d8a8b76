/**
 * Retry backoff (full jitter, on the client clock, inside the deadline), the attempt header,
 * and the classify layer's verdicts, on a manual clock and in-process calls.
 */
import { describe, expect, it } from 'vitest';
import {
  attempt,
  backoffDefaults,
  type Call,
  CallContext,
  classify,
  Deadline,
  ErrorCode,
  HttpStatusError,
  type IncomingResponse,
  type Instance,
  retry,
  TelescopeError,
} from '../../src/index.js';
import { type ManualClock, manualClock } from '../helpers/clock.js';

const ok: IncomingResponse = { status: 200, headers: {}, body: { ok: true }, instance: 'http://i:1' };
const request = () => ({ method: 'GET', path: '/', headers: {} as Record<string, string>, body: undefined });

function context(clock: ManualClock, budgetMs = 1000) {
  return new CallContext({
    service: 's',
    endpoint: 'e',
    idempotent: true,
    clock,
    timeoutMs: budgetMs,
    deadline: Deadline.after(budgetMs, clock),
  });
}

/** Fails `failures` times with a retryable reset, then answers; records when each attempt started. */
function flaky(clock: ManualClock, failures: number) {
  const startedAt: number[] = [];
  const call: Call = async (_request, ctx) => {
    const instance: Instance = { url: `http://i${startedAt.length}:1`, weight: 1 };
    ctx.instance = instance;
    startedAt.push(clock.now());
    if (startedAt.length <= failures) {
      throw new TelescopeError(ErrorCode.CONNECTION_RESET, 'reset', { retryable: true, requestSent: true });
    }
    return ok;
  };
  return { call, startedAt };
}

/** Lets pending promise callbacks run, then moves the clock. */
async function advance(clock: ManualClock, ms: number): Promise<void> {
  for (let index = 0; index < 5; index++) await Promise.resolve();
  clock.advance(ms);
  for (let index = 0; index < 5; index++) await Promise.resolve();
}

describe('retry backoff', () => {
  it('is off by default: the retry starts at once', async () => {
    const clock = manualClock();
    const { call, startedAt } = flaky(clock, 1);
    await retry({ clock, attemptNeedsMs: 30 })(call)(request(), context(clock));
    expect(startedAt).toEqual([clock.now(), clock.now()]);
  });

  it('full jitter: the n-th retry waits random × min(maxMs, baseMs × 2^(n−1)) on the client clock', async () => {
    const clock = manualClock();
    const start = clock.now();
    const { call, startedAt } = flaky(clock, 3);
    const pending = retry({ clock, attemptNeedsMs: 30, maxRetries: 3, backoff: {}, random: () => 0.5 })(call)(
      request(),
      context(clock),
    );
    // 0.5 × 25, then 0.5 × 50, then 0.5 × 100 (Envoy's 25 ms base).
    await advance(clock, 12);
    expect(startedAt).toHaveLength(1);
    await advance(clock, 1);
    expect(startedAt).toHaveLength(2);
    await advance(clock, 25);
    expect(startedAt).toHaveLength(3);
    await advance(clock, 50);
    await expect(pending).resolves.toBe(ok);
    expect(startedAt.map((at) => at - start)).toEqual([0, 13, 38, 88]);
    expect(backoffDefaults).toEqual({ baseMs: 25, maxMs: 250 });
  });

  it('the wait never exceeds maxMs, nor what the deadline leaves after an attempt', async () => {
    const clock = manualClock();
    const start = clock.now();
    const { call, startedAt } = flaky(clock, 1);
    // Budget 100 ms, an attempt needs 30: the wait is cut from 0.99 × 1000 to 70 ms.
    const pending = retry({ clock, attemptNeedsMs: 30, backoff: { baseMs: 1000, maxMs: 5000 }, random: () => 0.99 })(
      call,
    )(request(), context(clock, 100));
    await advance(clock, 70);
    await expect(pending).resolves.toBe(ok);
    expect(startedAt.map((at) => at - start)).toEqual([0, 70]);

    const capped = flaky(clock, 1);
    const second = retry({ clock, attemptNeedsMs: 30, backoff: { baseMs: 40, maxMs: 60 }, random: () => 0.999 })(
      capped.call,
    )(request(), context(clock));
    // 2^0 × 40 = 40 is below the cap here; the cap matters from the second retry on.
    await advance(clock, 40);
    await expect(second).resolves.toBe(ok);
    expect((capped.startedAt[1] as number) - (capped.startedAt[0] as number)).toBeLessThanOrEqual(40);
  });
});

describe('attempt header', () => {
  it('carries the attempt number from a table of strings, and a built one past it', async () => {
    const clock = manualClock();
    const seen: string[] = [];
    const layer = attempt({})((req) => {
      seen.push(req.headers['x-request-attempt'] as string);
      return Promise.resolve(ok);
    });
    const ctx = context(clock);
    for (const number of [1, 2, 15, 16, 40]) {
      ctx.attempt = number;
      await layer(request(), ctx);
    }
    expect(seen).toEqual(['1', '2', '15', '16', '40']);
  });

  it('rejects a header name that is not one', () => {
    expect(() => attempt({ attemptHeader: 'X Attempt' })).toThrow(/attemptHeader must be/);
  });
});

describe('classify layer', () => {
  const failing = (status: number) => () => Promise.reject(new HttpStatusError(status, 'nope', undefined, {}));

  it('without a classifier, statuses decide what a retry may fix', async () => {
    const clock = manualClock();
    const layer = classify({ statuses: new Set([500]) });
    const five = await layer(failing(500))(request(), context(clock)).then(
      () => {
        throw new Error('expected a failure');
      },
      (error: TelescopeError) => error,
    );
    const unavailable = await layer(failing(503))(request(), context(clock)).then(
      () => {
        throw new Error('expected a failure');
      },
      (error: TelescopeError) => error,
    );
    expect([five.retryable, five.responseClass]).toEqual([true, undefined]);
    expect([unavailable.retryable, unavailable.responseClass]).toEqual([false, undefined]);
  });

  it('the classifier sees status, headers, body and error, and its verdict is recorded', async () => {
    const clock = manualClock();
    const inputs: unknown[] = [];
    const layer = classify({
      classify: (result) => {
        inputs.push({ status: result.status, body: result.body, error: result.error?.code });
        return result.status === 404 ? 'success' : undefined;
      },
    });
    const notFound = await layer(failing(404))(request(), context(clock)).then(
      () => {
        throw new Error('expected a failure');
      },
      (error: TelescopeError) => error,
    );
    expect(notFound.responseClass).toBe('success');
    await expect(layer(() => Promise.resolve(ok))(request(), context(clock))).resolves.toBe(ok);
    expect(inputs).toEqual([
      { status: 404, body: 'nope', error: ErrorCode.HTTP_STATUS },
      { status: 200, body: { ok: true }, error: undefined },
    ]);
  });

  it('transport failures are not given to the classifier', async () => {
    const clock = manualClock();
    let calls = 0;
    const layer = classify({
      classify: () => {
        calls++;
        return 'success';
      },
    });
    const reset = new TelescopeError(ErrorCode.CONNECTION_RESET, 'reset', { retryable: true });
    await expect(layer(() => Promise.reject(reset))(request(), context(clock))).rejects.toBe(reset);
    expect(calls).toBe(0);
  });
});
