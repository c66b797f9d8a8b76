/**
 * The breaker layer on its own: one circuit per endpoint, over a fake inner call that plays a
 * script of outcomes. Every timer (window rotation, reset timeout) is on a manual clock.
 */
import { subscribe, unsubscribe } from 'node:diagnostics_channel';
import { afterEach, describe, expect, it } from 'vitest';
import {
  type BreakerOptions,
  breaker,
  breakerOutcome,
  type CircuitCause,
  type CircuitState,
  countsForBreaker,
} from '../../src/breaker/index.js';
import {
  CallContext,
  ErrorCode,
  HttpStatusError,
  type IncomingResponse,
  TelescopeError,
  type ThrottleOptions,
} from '../../src/index.js';
import { type ManualClock, manualClock } from '../helpers/clock.js';

const ok: IncomingResponse = { status: 200, headers: {}, body: 'ok', instance: 'http://a:1' };
const request = () => ({ method: 'GET', path: '/', headers: {}, body: undefined });
const unavailable = () => new HttpStatusError(503, 'down', undefined, { requestSent: true });

type Outcome = 'ok' | Error | (() => Promise<IncomingResponse>);

/** Every breaker made by a test, shut down after it. */
const made: Array<{ shutdown(): void }> = [];

/**
 * A breaker over an inner call whose next outcome is set by the test (default: success). By
 * default it is opossum's (the window alone opens it; one probe after a fixed resetTimeoutMs,
 * no ramp, no jitter: random() is 0), so each test sets the newer features it is about.
 */
function setup(
  options: BreakerOptions = {},
  clock: ManualClock = manualClock(0),
  extra: { random?: () => number; throttle?: ThrottleOptions } = {},
) {
  const states: Array<{ endpoint: string; state: CircuitState }> = [];
  const causes: CircuitCause[] = [];
  const resetTimeoutMs = options.resetTimeoutMs ?? 5000;
  const layer = breaker(
    {
      volumeThreshold: 20,
      errorThresholdPercentage: 50,
      consecutiveFailures: 0,
      resetTimeoutMs,
      minResetTimeoutMs: resetTimeoutMs,
      halfOpenProbes: 1,
      rampMs: 0,
      rollingWindowMs: 10_000,
      ...options,
    },
    {
      clock,
      service: 'movies',
      random: extra.random ?? (() => 0),
      throttle: extra.throttle,
      onState: (endpoint, state, cause) => {
        states.push({ endpoint, state });
        causes.push(cause);
      },
    },
  );
  made.push(layer);
  const inner = { calls: 0, next: 'ok' as Outcome };
  const call = layer.layer(async () => {
    inner.calls++;
    const outcome = inner.next;
    if (outcome === 'ok') return ok;
    if (typeof outcome === 'function') return outcome();
    throw outcome;
  });
  const run = (outcome: Outcome, endpoint = 'getMovie') => {
    inner.next = outcome;
    const context = new CallContext({ service: 'movies', endpoint, idempotent: true, clock, timeoutMs: 1000 });
    return call(request(), context).then(
      () => 'ok' as const,
      (error: unknown) => error as Error,
    );
  };
  return { layer, states, causes, inner, run, clock };
}

/** Runs a pattern of outcomes ('S' success, 'F' 503) in order; returns the 1-based call after which the circuit opened. */
async function play(harness: ReturnType<typeof setup>, pattern: string, rounds: number): Promise<number | undefined> {
  let calls = 0;
  for (let round = 0; round < rounds; round++) {
    for (const step of pattern) {
      calls++;
      await harness.run(step === 'F' ? unavailable() : 'ok');
      if (harness.layer.state('getMovie') === 'open') return calls;
    }
  }
  return undefined;
}

afterEach(() => {
  for (const layer of made.splice(0)) layer.shutdown();
});

describe('countsForBreaker: only failures that say the dependency is unhealthy', () => {
  const error = (code: ErrorCode, options: ConstructorParameters<typeof TelescopeError>[2] = {}) =>
    new TelescopeError(code, code, options);

  it.each([
    ['503', new HttpStatusError(503, '', undefined), true],
    ['500', new HttpStatusError(500, '', undefined), true],
    ['502', new HttpStatusError(502, '', undefined), true],
    ['504', new HttpStatusError(504, '', undefined), true],
    ['429', new HttpStatusError(429, '', undefined), true],
    ['400', new HttpStatusError(400, '', undefined), false],
    ['404', new HttpStatusError(404, '', undefined), false],
    ['409', new HttpStatusError(409, '', undefined), false],
    ['CONNECT_FAILED', error(ErrorCode.CONNECT_FAILED), true],
    ['CONNECTION_RESET', error(ErrorCode.CONNECTION_RESET), true],
    ['ATTEMPT_TIMEOUT', error(ErrorCode.ATTEMPT_TIMEOUT), true],
    ['NO_HEALTHY_INSTANCE', error(ErrorCode.NO_HEALTHY_INSTANCE), true],
    ['DEADLINE_EXCEEDED after sending', error(ErrorCode.DEADLINE_EXCEEDED, { requestSent: true }), true],
    ['DEADLINE_EXCEEDED before any I/O', error(ErrorCode.DEADLINE_EXCEEDED, { requestSent: false }), false],
    ['retryable INVALID_RESPONSE (cut body)', error(ErrorCode.INVALID_RESPONSE, { retryable: true }), true],
    ['INVALID_RESPONSE (schema)', error(ErrorCode.INVALID_RESPONSE), false],
    ['INVALID_REQUEST', error(ErrorCode.INVALID_REQUEST), false],
    ['ABORTED', error(ErrorCode.ABORTED), false],
    ['CLIENT_CLOSED', error(ErrorCode.CLIENT_CLOSED), false],
    ['BULKHEAD_FULL', error(ErrorCode.BULKHEAD_FULL), false],
    ['CIRCUIT_OPEN', error(ErrorCode.CIRCUIT_OPEN), false],
    ['RESPONSE_TOO_LARGE', error(ErrorCode.RESPONSE_TOO_LARGE), false],
    ['an error that is not ours', new Error('boom'), true],
  ])('%s → %s', (_name, failure, counts) => {
    expect(countsForBreaker(failure)).toBe(counts);
  });
});

describe('breaker: opening', () => {
  it('opens on the volumeThreshold-th call when every call failed, not before', async () => {
    const harness = setup();
    for (let call = 1; call <= 19; call++) {
      expect(await harness.run(unavailable())).toMatchObject({ code: ErrorCode.HTTP_STATUS });
      expect(harness.layer.state('getMovie')).toBe('closed');
    }
    await harness.run(unavailable());
    expect(harness.layer.state('getMovie')).toBe('open');
    expect(harness.states).toEqual([{ endpoint: 'getMovie', state: 'open' }]);
    expect(harness.inner.calls).toBe(20);
  });

  it('an open circuit answers CIRCUIT_OPEN at once, without calling the layers below', async () => {
    const harness = setup({ volumeThreshold: 5 });
    for (let call = 0; call < 5; call++) await harness.run(unavailable());
    expect(harness.layer.state('getMovie')).toBe('open');
    for (let call = 0; call < 1000; call++) {
      const error = await harness.run('ok');
      expect(error).toBeInstanceOf(TelescopeError);
      expect(error).toMatchObject({
        code: ErrorCode.CIRCUIT_OPEN,
        service: 'movies',
        endpoint: 'getMovie',
        requestSent: false,
        retryable: false,
      });
    }
    expect(harness.inner.calls).toBe(5);
  });

  it('needs more than errorThresholdPercentage: exactly 50% never opens, 60% does', async () => {
    // Successes first: at every failure exactly half the calls in the window have failed.
    expect(await play(setup(), 'SF', 200)).toBeUndefined();
    // 40%, failures first in each group of five: the rate is 57% once, but before the volume threshold.
    expect(await play(setup(), 'FFSSS', 80)).toBeUndefined();
    // 60%: opens at the first failure past the volume threshold (13 of 21 calls failed).
    expect(await play(setup(), 'FFFSS', 80)).toBe(21);
  });

  it('a 50% flap that starts with a failure opens: the check runs at each failure (11 of 21 > 50%)', async () => {
    // Deterministic, and worth knowing: the same 50% error rate opens or not depending on its phase.
    expect(await play(setup(), 'FS', 200)).toBe(21);
    // The same flap under a volume threshold of 22 opens at the first failure past it (12 of 23).
    expect(await play(setup({ volumeThreshold: 22 }), 'FS', 200)).toBe(23);
  });

  it('a lower threshold opens on 40% errors, a higher one ignores 60%', async () => {
    expect(await play(setup({ errorThresholdPercentage: 30 }), 'FFSSS', 80)).toBe(21);
    expect(await play(setup({ errorThresholdPercentage: 70 }), 'FFFSS', 80)).toBeUndefined();
  });

  it('counts only the rolling window: failures spread over two windows do not add up', async () => {
    const harness = setup({ volumeThreshold: 20, rollingWindowMs: 1000 });
    for (let call = 0; call < 15; call++) await harness.run(unavailable());
    // The window is rotated by the client's clock, one bucket (100 ms) at a time.
    harness.clock.advance(1000);
    for (let call = 0; call < 15; call++) await harness.run(unavailable());
    expect(harness.layer.state('getMovie')).toBe('closed');
    // Half the window later only the last 15 count; five more reach the volume threshold.
    harness.clock.advance(500);
    for (let call = 0; call < 4; call++) await harness.run(unavailable());
    expect(harness.layer.state('getMovie')).toBe('closed');
    await harness.run(unavailable());
    expect(harness.layer.state('getMovie')).toBe('open');
  });

  it('4xx, aborts, shed and pre-I/O deadline failures never open it', async () => {
    const harness = setup({ volumeThreshold: 5 });
    const neutral = [
      new HttpStatusError(404, '', undefined),
      new HttpStatusError(400, '', undefined),
      new TelescopeError(ErrorCode.ABORTED, 'aborted by the caller'),
      new TelescopeError(ErrorCode.BULKHEAD_FULL, 'shed', { requestSent: false }),
      new TelescopeError(ErrorCode.DEADLINE_EXCEEDED, 'too little budget', { requestSent: false }),
      new TelescopeError(ErrorCode.INVALID_REQUEST, 'bad params', { requestSent: false }),
    ];
    for (let round = 0; round < 50; round++) {
      for (const failure of neutral) expect(await harness.run(failure)).toBe(failure);
    }
    expect(harness.layer.state('getMovie')).toBe('closed');
    expect(harness.states).toEqual([]);
  });

  it('keeps one circuit per endpoint', async () => {
    const harness = setup({ volumeThreshold: 5 });
    for (let call = 0; call < 5; call++) await harness.run(unavailable(), 'getMovie');
    expect(harness.layer.state('getMovie')).toBe('open');
    expect(await harness.run('ok', 'search')).toBe('ok');
    expect(harness.layer.state('search')).toBe('closed');
    expect(harness.layer.state('neverCalled')).toBeUndefined();
  });

  it('stays linear in the call rate: 30,000 calls at 40% errors in one window', async () => {
    // opossum's rolling percentiles would sort every latency of the window on each failure.
    const harness = setup({ volumeThreshold: 20, rollingWindowMs: 60_000 });
    const failure = unavailable();
    const started = performance.now();
    for (let call = 0; call < 30_000; call++) await harness.run(call % 5 < 2 ? failure : 'ok');
    expect(harness.layer.state('getMovie')).toBe('closed');
    expect(performance.now() - started).toBeLessThan(5000);
  });
});

describe('breaker: half-open and closing', () => {
  async function opened(options: BreakerOptions = {}) {
    const harness = setup({ volumeThreshold: 5, resetTimeoutMs: 5000, ...options });
    for (let call = 0; call < 5; call++) await harness.run(unavailable());
    expect(harness.layer.state('getMovie')).toBe('open');
    return harness;
  }

  it('half-opens after resetTimeoutMs, not before', async () => {
    const harness = await opened();
    harness.clock.advance(4999);
    expect(harness.layer.state('getMovie')).toBe('open');
    expect(await harness.run('ok')).toMatchObject({ code: ErrorCode.CIRCUIT_OPEN });
    harness.clock.advance(1);
    expect(harness.layer.state('getMovie')).toBe('half-open');
    expect(harness.states.map((entry) => entry.state)).toEqual(['open', 'half-open']);
  });

  it('lets exactly one probe through; a successful probe closes the circuit', async () => {
    const harness = await opened();
    harness.clock.advance(5000);
    let answer!: (response: IncomingResponse) => void;
    const probe = harness.run(() => new Promise((resolve) => (answer = resolve)));
    expect(harness.inner.calls).toBe(6);
    // While the probe is out, everything else fails fast.
    for (let call = 0; call < 10; call++) {
      expect(await harness.run('ok')).toMatchObject({ code: ErrorCode.CIRCUIT_OPEN });
    }
    expect(harness.inner.calls).toBe(6);
    expect(harness.layer.state('getMovie')).toBe('half-open');
    answer(ok);
    expect(await probe).toBe('ok');
    expect(harness.layer.state('getMovie')).toBe('closed');
    expect(harness.states.map((entry) => entry.state)).toEqual(['open', 'half-open', 'closed']);
    for (let call = 0; call < 10; call++) expect(await harness.run('ok')).toBe('ok');
    expect(harness.inner.calls).toBe(16);
  });

  it('a failed probe opens it again for another resetTimeoutMs', async () => {
    const harness = await opened();
    harness.clock.advance(5000);
    expect(await harness.run(unavailable())).toMatchObject({ code: ErrorCode.HTTP_STATUS });
    expect(harness.layer.state('getMovie')).toBe('open');
    expect(await harness.run('ok')).toMatchObject({ code: ErrorCode.CIRCUIT_OPEN });
    harness.clock.advance(4999);
    expect(harness.layer.state('getMovie')).toBe('open');
    harness.clock.advance(1);
    expect(await harness.run('ok')).toBe('ok');
    expect(harness.states.map((entry) => entry.state)).toEqual(['open', 'half-open', 'open', 'half-open', 'closed']);
  });

  it('a probe answered with a 4xx closes it: the dependency answered', async () => {
    const harness = await opened();
    harness.clock.advance(5000);
    await harness.run(new HttpStatusError(404, '', undefined));
    expect(harness.layer.state('getMovie')).toBe('closed');
  });

  it('closing clears the window: the failures that opened it do not reopen it (resilience4j, not opossum)', async () => {
    // resetTimeoutMs (5 s) < rollingWindowMs (10 s): the old failures would still be in the window.
    const harness = await opened({ rollingWindowMs: 10_000 });
    harness.clock.advance(5000);
    expect(await harness.run('ok')).toBe('ok');
    expect(harness.layer.state('getMovie')).toBe('closed');
    // volumeThreshold (5) fresh calls are needed again: four failures are not enough.
    for (let call = 0; call < 4; call++) await harness.run(unavailable());
    expect(harness.layer.state('getMovie')).toBe('closed');
    await harness.run(unavailable());
    expect(harness.layer.state('getMovie')).toBe('open');
    expect(harness.states.map((entry) => entry.state)).toEqual(['open', 'half-open', 'closed', 'open']);
  });
});

describe('breaker: neutral outcomes and late answers', () => {
  async function opened() {
    const harness = setup({ volumeThreshold: 5, resetTimeoutMs: 5000 });
    for (let call = 0; call < 5; call++) await harness.run(unavailable());
    expect(harness.layer.state('getMovie')).toBe('open');
    harness.clock.advance(5000);
    expect(harness.layer.state('getMovie')).toBe('half-open');
    return harness;
  }

  it.each([
    ['503', new HttpStatusError(503, '', undefined), 'failure'],
    ['404', new HttpStatusError(404, '', undefined), 'success'],
    ['schema mismatch', new TelescopeError(ErrorCode.INVALID_RESPONSE, 'schema'), 'success'],
    ['too large', new TelescopeError(ErrorCode.RESPONSE_TOO_LARGE, 'big'), 'success'],
    ['aborted', new TelescopeError(ErrorCode.ABORTED, 'aborted'), 'neutral'],
    ['shed', new TelescopeError(ErrorCode.BULKHEAD_FULL, 'full'), 'neutral'],
    ['closed client', new TelescopeError(ErrorCode.CLIENT_CLOSED, 'closed'), 'neutral'],
    ['no budget', new TelescopeError(ErrorCode.DEADLINE_EXCEEDED, 'late', { requestSent: false }), 'neutral'],
  ])('breakerOutcome(%s) is %s', (_name, error, outcome) => {
    expect(breakerOutcome(error)).toBe(outcome);
  });

  it('shed and aborted calls do not count towards the volume threshold', async () => {
    const harness = setup({ volumeThreshold: 5 });
    for (let call = 0; call < 100; call++) {
      await harness.run(new TelescopeError(ErrorCode.BULKHEAD_FULL, 'full', { requestSent: false }));
    }
    // Five real failures are five calls in the window, 100% failed: it opens on the fifth.
    for (let call = 0; call < 4; call++) await harness.run(unavailable());
    expect(harness.layer.state('getMovie')).toBe('closed');
    await harness.run(unavailable());
    expect(harness.layer.state('getMovie')).toBe('open');
  });

  it('an aborted probe leaves the circuit half-open; the next call probes', async () => {
    const harness = await opened();
    const aborted = new TelescopeError(ErrorCode.ABORTED, 'call aborted by the caller');
    expect(await harness.run(aborted)).toBe(aborted);
    expect(harness.layer.state('getMovie')).toBe('half-open');
    expect(await harness.run(unavailable())).toMatchObject({ code: ErrorCode.HTTP_STATUS });
    expect(harness.layer.state('getMovie')).toBe('open');
    expect(harness.inner.calls).toBe(7);
    expect(harness.states.map((entry) => entry.state)).toEqual(['open', 'half-open', 'open']);
  });

  it('a call admitted before the circuit opened does not decide the half-open probe', async () => {
    const harness = setup({ volumeThreshold: 5, resetTimeoutMs: 5000 });
    let answerSlow!: (response: IncomingResponse) => void;
    const slow = harness.run(() => new Promise((resolve) => (answerSlow = resolve)));
    for (let call = 0; call < 5; call++) await harness.run(unavailable());
    harness.clock.advance(5000);
    let answerProbe!: (response: IncomingResponse) => void;
    const probe = harness.run(() => new Promise((resolve) => (answerProbe = resolve)));
    // The old call succeeds while the probe is out: the circuit waits for the probe.
    answerSlow(ok);
    expect(await slow).toBe('ok');
    expect(harness.layer.state('getMovie')).toBe('half-open');
    expect(await harness.run('ok')).toMatchObject({ code: ErrorCode.CIRCUIT_OPEN });
    answerProbe(ok);
    expect(await probe).toBe('ok');
    expect(harness.layer.state('getMovie')).toBe('closed');
  });
});

describe('breaker: reporting and lifecycle', () => {
  it('publishes every state change on telescope:breaker:state', async () => {
    const seen: unknown[] = [];
    const listener = (message: unknown) => seen.push(message);
    subscribe('telescope:breaker:state', listener);
    try {
      const harness = setup({ volumeThreshold: 3, resetTimeoutMs: 100 });
      for (let call = 0; call < 3; call++) await harness.run(unavailable());
      harness.clock.advance(100);
      await harness.run('ok');
      expect(seen).toEqual([
        { service: 'movies', endpoint: 'getMovie', state: 'open', cause: 'failures' },
        { service: 'movies', endpoint: 'getMovie', state: 'half-open', cause: 'probe-due' },
        { service: 'movies', endpoint: 'getMovie', state: 'closed', cause: 'probes-passed' },
      ]);
      harness.layer.shutdown();
    } finally {
      unsubscribe('telescope:breaker:state', listener);
    }
  });

  it('shutdown() stops the rotation timer and the reset timer', async () => {
    const harness = setup({ volumeThreshold: 3, resetTimeoutMs: 100 });
    expect(harness.clock.pending()).toBe(0);
    for (let call = 0; call < 3; call++) await harness.run(unavailable());
    // The window's rotation and the open circuit's reset timeout, both on the client's clock.
    expect(harness.clock.pending()).toBe(2);
    harness.layer.shutdown();
    expect(harness.clock.pending()).toBe(0);
    harness.clock.advance(1000);
    expect(harness.states.map((entry) => entry.state)).toEqual(['open']);
    expect(harness.layer.state('getMovie')).toBeUndefined();
  });

  it('rejects options out of range', () => {
    const clock = manualClock(0);
    for (const options of [
      { volumeThreshold: -1 },
      { volumeThreshold: 1.5 },
      { errorThresholdPercentage: 0 },
      { errorThresholdPercentage: 101 },
      { resetTimeoutMs: 0 },
      { resetTimeoutMs: Number.POSITIVE_INFINITY },
      { rollingWindowMs: 50 },
    ]) {
      expect(() => breaker(options, { clock, service: 's' })).toThrow(
        expect.objectContaining({ code: ErrorCode.INVALID_OPTION }),
      );
    }
  });
});

// --- recovery: probe backoff, half-open probes, ramp -------------------------------------------

/** Opens the circuit of `getMovie` with `volumeThreshold` 503s. */
async function open(harness: ReturnType<typeof setup>, calls = 5): Promise<void> {
  for (let call = 0; call < calls; call++) await harness.run(unavailable());
  expect(harness.layer.state('getMovie')).toBe('open');
}

/** An inner outcome the test settles by hand. */
function pending() {
  let settle!: (outcome: 'ok' | Error) => void;
  const outcome = () =>
    new Promise<IncomingResponse>((resolve, reject) => {
      settle = (value) => (value === 'ok' ? resolve(ok) : reject(value));
    });
  return { outcome, settle: (value: 'ok' | Error) => settle(value) };
}

/** Milliseconds until the open circuit half-opens (advancing 1 ms at a time, at most `limit`). */
function msUntilHalfOpen(harness: ReturnType<typeof setup>, limit = 100_000): number {
  for (let waited = 1; waited <= limit; waited++) {
    harness.clock.advance(1);
    if (harness.layer.state('getMovie') === 'half-open') return waited;
  }
  throw new Error('never half-opened');
}

describe('breaker: probe backoff', () => {
  it('waits minResetTimeoutMs, then twice as long after each failed probe, up to resetTimeoutMs', async () => {
    const harness = setup({ volumeThreshold: 5, minResetTimeoutMs: 250, resetTimeoutMs: 1000 });
    await open(harness);
    const waits: number[] = [];
    for (let round = 0; round < 5; round++) {
      waits.push(msUntilHalfOpen(harness));
      // The probe fails: open again, one step further.
      expect(await harness.run(unavailable())).toMatchObject({ code: ErrorCode.HTTP_STATUS });
      expect(harness.causes.at(-1)).toBe('probe-failed');
    }
    // random() is 0: no jitter.
    expect(waits).toEqual([250, 500, 1000, 1000, 1000]);
    // Closing starts over at the minimum.
    msUntilHalfOpen(harness);
    expect(await harness.run('ok')).toBe('ok');
    await open(harness);
    expect(msUntilHalfOpen(harness)).toBe(250);
  });

  it('jitters each wait down by at most half: in [wait / 2, wait]', async () => {
    for (const draw of [0, 0.25, 0.5, 0.999]) {
      const harness = setup({ volumeThreshold: 5, minResetTimeoutMs: 400, resetTimeoutMs: 1600 }, manualClock(0), {
        random: () => draw,
      });
      await open(harness);
      const first = msUntilHalfOpen(harness);
      await harness.run(unavailable());
      const second = msUntilHalfOpen(harness);
      expect(first).toBe(Math.ceil(400 * (1 - 0.5 * draw)));
      expect(second).toBe(Math.ceil(800 * (1 - 0.5 * draw)));
      expect(first).toBeGreaterThanOrEqual(200);
      expect(first).toBeLessThanOrEqual(400);
    }
  });

  it('a probe is one attempt: the layers below see context.probe', async () => {
    const harness = setup({ volumeThreshold: 5 });
    const seen: boolean[] = [];
    const layer = harness.layer.layer(async (_request, context) => {
      seen.push(context.probe);
      throw unavailable();
    });
    const call = () =>
      layer(
        request(),
        new CallContext({
          service: 'movies',
          endpoint: 'getMovie',
          idempotent: true,
          clock: harness.clock,
          timeoutMs: 1000,
        }),
      ).catch(() => undefined);
    for (let index = 0; index < 5; index++) await call();
    harness.clock.advance(5000);
    await call();
    expect(seen).toEqual([false, false, false, false, false, true]);
  });
});

describe('breaker: halfOpenProbes', () => {
  it('the first probe goes alone; once it passed, the others go together; all must pass to close', async () => {
    const harness = setup({ volumeThreshold: 5, halfOpenProbes: 3 });
    await open(harness);
    harness.clock.advance(5000);
    const first = pending();
    const probe1 = harness.run(first.outcome);
    // While the first probe is out, everything else fails fast.
    expect(await harness.run('ok')).toMatchObject({ code: ErrorCode.CIRCUIT_OPEN });
    first.settle('ok');
    expect(await probe1).toBe('ok');
    expect(harness.layer.state('getMovie')).toBe('half-open');
    // Two more may go at once; a third waits.
    const second = pending();
    const third = pending();
    const probe2 = harness.run(second.outcome);
    const probe3 = harness.run(third.outcome);
    expect(await harness.run('ok')).toMatchObject({ code: ErrorCode.CIRCUIT_OPEN });
    expect(harness.inner.calls).toBe(8);
    second.settle('ok');
    expect(await probe2).toBe('ok');
    expect(harness.layer.state('getMovie')).toBe('half-open');
    third.settle('ok');
    expect(await probe3).toBe('ok');
    expect(harness.layer.state('getMovie')).toBe('closed');
    expect(harness.causes).toEqual(['failures', 'probe-due', 'probes-passed']);
  });

  it('one failed probe among them opens the circuit again; the late answer of another changes nothing', async () => {
    const harness = setup({ volumeThreshold: 5, halfOpenProbes: 3, minResetTimeoutMs: 100, resetTimeoutMs: 1000 });
    await open(harness);
    harness.clock.advance(100);
    expect(await harness.run('ok')).toBe('ok');
    const late = pending();
    const probe2 = harness.run(late.outcome);
    expect(await harness.run(unavailable())).toMatchObject({ code: ErrorCode.HTTP_STATUS });
    expect(harness.layer.state('getMovie')).toBe('open');
    // The next wait is the second step of the backoff.
    expect(msUntilHalfOpen(harness)).toBe(200);
    late.settle('ok');
    expect(await probe2).toBe('ok');
    // It belonged to the previous half-open episode: it is not a probe of this one.
    expect(harness.layer.state('getMovie')).toBe('half-open');
    expect(await harness.run('ok')).toBe('ok');
    expect(await harness.run('ok')).toBe('ok');
    expect(harness.layer.state('getMovie')).toBe('half-open');
    expect(await harness.run('ok')).toBe('ok');
    expect(harness.layer.state('getMovie')).toBe('closed');
  });
});

describe('breaker: ramp after closing', () => {
  it('caps calls in flight at halfOpenProbes, doubling every rampMs / 10, then no cap', async () => {
    const harness = setup({ volumeThreshold: 5, halfOpenProbes: 2, rampMs: 1000 });
    await open(harness);
    harness.clock.advance(5000);
    expect(await harness.run('ok')).toBe('ok');
    expect(await harness.run('ok')).toBe('ok');
    expect(harness.layer.state('getMovie')).toBe('closed');
    const inFlight = (count: number) => Array.from({ length: count }, () => pending());
    // Right after closing: 2 in flight, the third fails fast (the fallback answers it).
    const first = inFlight(2);
    const running = first.map((call) => harness.run(call.outcome));
    const rejected = await harness.run('ok');
    expect(rejected).toMatchObject({ code: ErrorCode.CIRCUIT_OPEN, requestSent: false });
    expect((rejected as Error).message).toContain('ramping up');
    // 100 ms later the cap is 4: two more go.
    harness.clock.advance(100);
    const second = inFlight(2);
    running.push(...second.map((call) => harness.run(call.outcome)));
    expect(await harness.run('ok')).toMatchObject({ code: ErrorCode.CIRCUIT_OPEN });
    for (const call of [...first, ...second]) call.settle('ok');
    expect(await Promise.all(running)).toEqual(['ok', 'ok', 'ok', 'ok']);
    // After rampMs there is no cap at all.
    harness.clock.advance(900);
    const many = inFlight(5000);
    const all = many.map((call) => harness.run(call.outcome));
    for (const call of many) call.settle('ok');
    expect((await Promise.all(all)).every((outcome) => outcome === 'ok')).toBe(true);
    expect(harness.layer.state('getMovie')).toBe('closed');
  });

  it('rampMs: 0 lets everything through at once', async () => {
    const harness = setup({ volumeThreshold: 5, halfOpenProbes: 1, rampMs: 0 });
    await open(harness);
    harness.clock.advance(5000);
    expect(await harness.run('ok')).toBe('ok');
    const many = Array.from({ length: 100 }, () => pending());
    const all = many.map((call) => harness.run(call.outcome));
    for (const call of many) call.settle('ok');
    expect((await Promise.all(all)).every((outcome) => outcome === 'ok')).toBe(true);
  });
});

describe('breaker: slow calls and consecutive failures', () => {
  it('slow calls open it: slowCallMs, slowCallRatePercent, over the volume threshold', async () => {
    const harness = setup({ volumeThreshold: 10, slowCallMs: 100, slowCallRatePercent: 50 });
    const slowCall = async (ms: number) => {
      const call = pending();
      const running = harness.run(call.outcome);
      harness.clock.advance(ms);
      call.settle('ok');
      return running;
    };
    // Exactly at slowCallMs is not slow; 40% slow is under the rate.
    for (let call = 0; call < 6; call++) expect(await slowCall(100)).toBe('ok');
    for (let call = 0; call < 4; call++) expect(await slowCall(101)).toBe('ok');
    expect(harness.layer.state('getMovie')).toBe('closed');
    // 6 slow of 11: 54% ≥ 50%.
    for (let call = 0; call < 2; call++) await slowCall(500);
    expect(harness.layer.state('getMovie')).toBe('open');
    expect(harness.causes).toEqual(['slow-calls']);
  });

  it('a slow probe is a failed probe', async () => {
    const harness = setup({ volumeThreshold: 5, slowCallMs: 100 });
    await open(harness);
    harness.clock.advance(5000);
    const call = pending();
    const running = harness.run(call.outcome);
    harness.clock.advance(150);
    call.settle('ok');
    expect(await running).toBe('ok');
    expect(harness.layer.state('getMovie')).toBe('open');
    expect(harness.causes).toEqual(['failures', 'probe-due', 'probe-failed']);
  });

  it('consecutiveFailures opens it after a healthy stretch the window still holds', async () => {
    const harness = setup({ volumeThreshold: 20, consecutiveFailures: 20 });
    for (let call = 0; call < 200; call++) await harness.run('ok');
    // 19 failures in a row, then a success: the count starts over.
    for (let call = 0; call < 19; call++) await harness.run(unavailable());
    await harness.run('ok');
    for (let call = 0; call < 19; call++) await harness.run(unavailable());
    expect(harness.layer.state('getMovie')).toBe('closed');
    await harness.run(unavailable());
    expect(harness.layer.state('getMovie')).toBe('open');
    // The window alone (consecutiveFailures: 0) would have needed more than 200 failures.
    const windowOnly = setup({ volumeThreshold: 20, consecutiveFailures: 0 });
    for (let call = 0; call < 200; call++) await windowOnly.run('ok');
    for (let call = 0; call < 200; call++) await windowOnly.run(unavailable());
    expect(windowOnly.layer.state('getMovie')).toBe('closed');
  });
});

describe('breaker: operators (forceOpen, forceClosed, reset)', () => {
  it('forceOpen holds it open with no probes; forceClosed lets everything through and counts nothing; reset starts over', async () => {
    const harness = setup({ volumeThreshold: 5 });
    const circuit = harness.layer.control('getMovie');
    expect(circuit.state()).toBe('closed');
    expect(circuit.forced()).toBeUndefined();

    circuit.forceOpen();
    expect(circuit.state()).toBe('open');
    expect(circuit.forced()).toBe('open');
    harness.clock.advance(60_000);
    const error = await harness.run('ok');
    expect(error).toMatchObject({ code: ErrorCode.CIRCUIT_OPEN, requestSent: false });
    expect((error as Error).message).toContain('forced open');
    expect(harness.inner.calls).toBe(0);
    expect(harness.clock.pending()).toBeLessThanOrEqual(1); // the window's rotation only

    circuit.forceClosed();
    expect(circuit.forced()).toBe('closed');
    for (let call = 0; call < 50; call++) await harness.run(unavailable());
    expect(circuit.state()).toBe('closed');
    expect(harness.inner.calls).toBe(50);

    circuit.reset();
    expect(circuit.forced()).toBeUndefined();
    // The 50 failures while forced closed were not counted: five fresh ones are needed.
    for (let call = 0; call < 4; call++) await harness.run(unavailable());
    expect(circuit.state()).toBe('closed');
    await harness.run(unavailable());
    expect(circuit.state()).toBe('open');
    circuit.reset();
    expect(circuit.state()).toBe('closed');
    expect(await harness.run('ok')).toBe('ok');
    expect(harness.causes).toEqual(['force-open', 'force-closed', 'reset', 'failures', 'reset']);
    expect(harness.states.map((entry) => entry.state)).toEqual(['open', 'closed', 'closed', 'open', 'closed']);
  });

  it('reset() of an open circuit cancels its probe timer', async () => {
    const harness = setup({ volumeThreshold: 5 });
    await open(harness);
    harness.layer.control('getMovie').reset();
    harness.clock.advance(60_000);
    expect(harness.causes).toEqual(['failures', 'reset']);
  });
});

describe('breaker + throttle', () => {
  /** A random source the test steers: `draw.value` is what it returns. */
  const steered = () => {
    const draw = { value: 0.999 };
    return { draw, random: () => draw.value };
  };

  it('throttles an endpoint that fails more than 1 − 1/k of its calls while the circuit stays closed', async () => {
    // Draws cycle through 0.05 … 0.95: about a p share of calls is rejected.
    let index = 0;
    const random = () => ((index++ % 10) + 0.5) / 10;
    const harness = setup(
      // The circuit stays closed at 60% failures (threshold 70%): the throttle alone acts.
      { volumeThreshold: 20, errorThresholdPercentage: 70 },
      manualClock(0),
      { random, throttle: { k: 2, windowMs: 10_000, minRequests: 10 } },
    );
    let throttled = 0;
    for (let call = 0; call < 500; call++) {
      // 2 successes and 3 failures in each 5 sent: accepts are 40% of what is sent, under 1/k.
      const outcome = await harness.run(() =>
        (harness.inner.calls - 1) % 5 < 2 ? Promise.resolve(ok) : Promise.reject(unavailable()),
      );
      if (outcome instanceof TelescopeError && outcome.code === ErrorCode.THROTTLED) {
        throttled++;
        expect(outcome).toMatchObject({ requestSent: false, retryable: false, endpoint: 'getMovie' });
      }
    }
    // A share of the calls, not all of them: the dependency keeps getting real traffic.
    expect(throttled).toBeGreaterThan(25);
    expect(500 - throttled).toBeGreaterThan(100);
    expect(harness.layer.state('getMovie')).toBe('closed');
    expect(harness.inner.calls).toBe(500 - throttled);
    expect(harness.layer.control('getMovie').throttleProbability()).toBeGreaterThan(0);
  });

  it('a half-open probe is never throttled, and closing clears the throttle', async () => {
    const { draw, random } = steered();
    const harness = setup({ volumeThreshold: 5 }, manualClock(0), {
      random,
      throttle: { k: 2, windowMs: 60_000, minRequests: 0 },
    });
    await open(harness);
    const circuit = harness.layer.control('getMovie');
    expect(circuit.throttleProbability()).toBeCloseTo(5 / 6, 12);
    // From now on every draw is 0: any probability above 0 rejects.
    draw.value = 0;
    harness.clock.advance(5000);
    expect(await harness.run('ok')).toBe('ok');
    expect(harness.layer.state('getMovie')).toBe('closed');
    expect(circuit.throttleProbability()).toBe(0);
    for (let call = 0; call < 20; call++) expect(await harness.run('ok')).toBe('ok');
  });

  it('calls the open circuit fails fast are not counted by the throttle', async () => {
    const { random } = steered();
    const harness = setup({ volumeThreshold: 5 }, manualClock(0), {
      random,
      throttle: { k: 2, windowMs: 60_000, minRequests: 0 },
    });
    for (let call = 0; call < 10; call++) await harness.run('ok');
    while (harness.layer.state('getMovie') === 'closed') await harness.run(unavailable());
    const circuit = harness.layer.control('getMovie');
    const before = circuit.throttleProbability();
    for (let call = 0; call < 1000; call++) {
      expect(await harness.run('ok')).toMatchObject({ code: ErrorCode.CIRCUIT_OPEN });
    }
    expect(circuit.throttleProbability()).toBe(before);
  });
});

describe('breaker: recovery options', () => {
  it.each([
    [{ halfOpenProbes: 0 }, 'breaker.halfOpenProbes'],
    [{ halfOpenProbes: 1.5 }, 'breaker.halfOpenProbes'],
    [{ minResetTimeoutMs: 0 }, 'breaker.minResetTimeoutMs'],
    [{ minResetTimeoutMs: 2000, resetTimeoutMs: 1000 }, 'breaker.minResetTimeoutMs'],
    [{ rampMs: -1 }, 'breaker.rampMs'],
    [{ slowCallMs: -1 }, 'breaker.slowCallMs'],
    [{ slowCallMs: Number.NaN }, 'breaker.slowCallMs'],
    [{ slowCallRatePercent: 0 }, 'breaker.slowCallRatePercent'],
    [{ slowCallRatePercent: 101 }, 'breaker.slowCallRatePercent'],
    [{ consecutiveFailures: -1 }, 'breaker.consecutiveFailures'],
    [{ consecutiveFailures: 2.5 }, 'breaker.consecutiveFailures'],
  ] as Array<[BreakerOptions, string]>)('%o → INVALID_OPTION naming %s', (options, name) => {
    expect(() => breaker(options, { clock: manualClock(0), service: 's' })).toThrow(
      expect.objectContaining({ code: ErrorCode.INVALID_OPTION, message: expect.stringContaining(name) }),
    );
  });

  it('a resetTimeoutMs below the default minimum lowers the minimum with it', async () => {
    const harness = setup({ volumeThreshold: 5, resetTimeoutMs: 100, minResetTimeoutMs: undefined });
    await open(harness);
    expect(msUntilHalfOpen(harness)).toBe(100);
  });
});
