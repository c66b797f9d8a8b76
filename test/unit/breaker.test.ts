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
