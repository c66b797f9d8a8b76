/**
 * The bulkhead layer on its own, over a fake inner call whose attempts the test settles by
 * hand, on a manual clock (queue timeouts run on the clock's shared timer wheel), and the queue
 * discipline (deadline-aware admission, adaptive LIFO) under a simulated standing overload.
 */
import { describe, expect, it } from 'vitest';
import { type AdaptiveBulkheadOptions, type BulkheadOptions, bulkhead } from '../../src/bulkhead/index.js';
import { CallContext, Deadline, ErrorCode, type IncomingResponse, TelescopeError, wheelOf } from '../../src/index.js';
import { type ManualClock, manualClock } from '../helpers/clock.js';
import { seededRandom } from '../helpers/random.js';

const ok = (body: unknown): IncomingResponse => ({ status: 200, headers: {}, body, instance: 'http://a:1' });

interface Pending {
  id: string;
  resolve(): void;
  reject(error?: Error): void;
}

type Settled = { status: 'pending' } | { status: 'ok'; body: unknown } | { status: 'error'; error: TelescopeError };

function setup(options: BulkheadOptions | AdaptiveBulkheadOptions, clock: ManualClock = manualClock(0)) {
  const shed: Array<{ id: string; reason: string }> = [];
  const layer = bulkhead(options, {
    clock,
    onShed: (context, reason) => shed.push({ id: String(context.params), reason }),
  });
  /** Attempts that reached the inner call, in arrival order; the test settles them. */
  const inner: Pending[] = [];
  const call = layer.layer(
    (_request, context) =>
      new Promise<IncomingResponse>((resolve, reject) => {
        const id = String(context.params);
        inner.push({
          id,
          resolve: () => resolve(ok(id)),
          reject: (error = new TelescopeError(ErrorCode.CONNECTION_RESET, 'reset')) => reject(error),
        });
      }),
  );
  const results = new Map<string, Settled>();
  /** Starts call `id` with a budget of `budgetMs` (no deadline when null). */
  const start = (id: string, budgetMs: number | null = 1000, signal?: AbortSignal) => {
    const context = new CallContext({
      service: 'movies',
      endpoint: 'getMovie',
      idempotent: true,
      clock,
      timeoutMs: 1000,
      callerSignal: signal,
      deadline: budgetMs === null ? undefined : Deadline.after(budgetMs, clock),
    });
    context.params = id;
    results.set(id, { status: 'pending' });
    call({ method: 'GET', path: `/movies/${id}`, headers: {}, body: undefined }, context).then(
      (response) => results.set(id, { status: 'ok', body: response.body }),
      (error: TelescopeError) => results.set(id, { status: 'error', error }),
    );
  };
  const settle = () => new Promise<void>((resolve) => setImmediate(resolve));
  const take = (id: string) => {
    const index = inner.findIndex((entry) => entry.id === id);
    if (index === -1) throw new Error(`call ${id} has not reached the inner call`);
    return inner.splice(index, 1)[0]!;
  };
  return { layer, shed, inner, results, start, settle, take, clock };
}

describe('bulkhead: admission', () => {
  it('admits maxConcurrent calls, queues maxQueue, sheds the rest at once with BULKHEAD_FULL', async () => {
    const bh = setup({ maxConcurrent: 2, maxQueue: 1 });
    for (const id of ['a', 'b', 'c', 'd', 'e']) bh.start(id);
    await bh.settle();
    expect(bh.inner.map((entry) => entry.id)).toEqual(['a', 'b']);
    expect(bh.layer.active).toBe(2);
    expect(bh.layer.queued).toBe(1);
    expect(bh.shed).toEqual([
      { id: 'd', reason: 'full' },
      { id: 'e', reason: 'full' },
    ]);
    for (const id of ['d', 'e']) {
      const result = bh.results.get(id);
      expect(result?.status).toBe('error');
      expect(result).toMatchObject({
        error: { code: ErrorCode.BULKHEAD_FULL, requestSent: false, service: 'movies', endpoint: 'getMovie' },
      });
    }
    expect(bh.results.get('c')).toEqual({ status: 'pending' });
    for (const id of ['a', 'b']) bh.take(id).resolve();
    await bh.settle();
    bh.take('c').resolve();
    await bh.settle();
    expect(['a', 'b', 'c'].map((id) => bh.results.get(id))).toEqual([
      { status: 'ok', body: 'a' },
      { status: 'ok', body: 'b' },
      { status: 'ok', body: 'c' },
    ]);
    expect(bh.layer.active).toBe(0);
  });

  it('maxQueue 0 (the default) sheds the first call over maxConcurrent', async () => {
    const bh = setup({ maxConcurrent: 1 });
    bh.start('a');
    bh.start('b');
    await bh.settle();
    expect(bh.inner).toHaveLength(1);
    expect(bh.results.get('b')).toMatchObject({ status: 'error', error: { code: ErrorCode.BULKHEAD_FULL } });
    expect(bh.shed).toEqual([{ id: 'b', reason: 'full' }]);
  });

  it('admits queued calls in arrival order, one per released slot', async () => {
    const bh = setup({ maxConcurrent: 1, maxQueue: 5 });
    for (const id of ['a', 'b', 'c', 'd', 'e']) bh.start(id);
    await bh.settle();
    const order: string[] = [];
    for (let step = 0; step < 5; step++) {
      expect(bh.inner).toHaveLength(1);
      const current = bh.inner[0]!;
      order.push(current.id);
      bh.take(current.id).resolve();
      await bh.settle();
    }
    expect(order).toEqual(['a', 'b', 'c', 'd', 'e']);
    expect(bh.layer.active).toBe(0);
    expect(bh.layer.queued).toBe(0);
  });

  it('releases the slot on failure too, passing it to the next waiter', async () => {
    const bh = setup({ maxConcurrent: 1, maxQueue: 1 });
    bh.start('a');
    bh.start('b');
    await bh.settle();
    const failure = new TelescopeError(ErrorCode.CONNECTION_RESET, 'reset');
    bh.take('a').reject(failure);
    await bh.settle();
    expect(bh.results.get('a')).toEqual({ status: 'error', error: failure });
    expect(bh.inner.map((entry) => entry.id)).toEqual(['b']);
    expect(bh.layer.active).toBe(1);
    bh.take('b').reject();
    await bh.settle();
    expect(bh.layer.active).toBe(0);
    // The freed slot is usable.
    bh.start('c');
    await bh.settle();
    expect(bh.inner.map((entry) => entry.id)).toEqual(['c']);
  });

  it('is one limit for every endpoint of the service', async () => {
    const clock = manualClock(0);
    const layer = bulkhead({ maxConcurrent: 1 }, { clock });
    const call = layer.layer(() => new Promise<IncomingResponse>(() => {}));
    const context = (endpoint: string) =>
      new CallContext({ service: 'movies', endpoint, idempotent: true, clock, timeoutMs: 1000 });
    void call({ method: 'GET', path: '/a', headers: {}, body: undefined }, context('getMovie'));
    await expect(
      call({ method: 'GET', path: '/b', headers: {}, body: undefined }, context('search')),
    ).rejects.toMatchObject({ code: ErrorCode.BULKHEAD_FULL, endpoint: 'search' });
  });
});

describe('bulkhead: waiting', () => {
  it('a waiter waits at most until its deadline, then is shed with queue-timeout', async () => {
    const bh = setup({ maxConcurrent: 1, maxQueue: 2 });
    bh.start('a');
    bh.start('b', 100);
    bh.start('c', 300);
    await bh.settle();
    bh.clock.advance(99);
    await bh.settle();
    expect(bh.results.get('b')).toEqual({ status: 'pending' });
    bh.clock.advance(1);
    await bh.settle();
    expect(bh.results.get('b')).toMatchObject({
      status: 'error',
      error: { code: ErrorCode.BULKHEAD_FULL, requestSent: false },
    });
    expect((bh.results.get('b') as { error: Error }).error.message).toMatch(/within the call's deadline/);
    expect(bh.shed).toEqual([{ id: 'b', reason: 'queue-timeout' }]);
    expect(bh.layer.queued).toBe(1);
    // The next waiter keeps its place and gets the slot.
    bh.take('a').resolve();
    await bh.settle();
    expect(bh.inner.map((entry) => entry.id)).toEqual(['c']);
    bh.take('c').resolve();
    await bh.settle();
    expect(bh.results.get('c')).toEqual({ status: 'ok', body: 'c' });
    // An admitted waiter's timer is cancelled: it is not shed at its deadline.
    bh.clock.advance(1000);
    await bh.settle();
    expect(bh.shed).toHaveLength(1);
    expect(wheelOf(bh.clock).size).toBe(0);
  });

  it('a waiter expiring from the middle of the queue leaves the others in order', async () => {
    const bh = setup({ maxConcurrent: 1, maxQueue: 3 });
    bh.start('a');
    bh.start('b', 1000);
    bh.start('c', 50);
    bh.start('d', 1000);
    await bh.settle();
    bh.clock.advance(50);
    await bh.settle();
    expect(bh.shed).toEqual([{ id: 'c', reason: 'queue-timeout' }]);
    bh.take('a').resolve();
    await bh.settle();
    bh.take('b').resolve();
    await bh.settle();
    expect(bh.inner.map((entry) => entry.id)).toEqual(['d']);
  });

  it('a freed queue place can be taken again; the queue bound counts only waiters', async () => {
    const bh = setup({ maxConcurrent: 1, maxQueue: 1 });
    bh.start('a');
    bh.start('b', 50);
    await bh.settle();
    bh.start('c');
    await bh.settle();
    expect(bh.shed).toEqual([{ id: 'c', reason: 'full' }]);
    bh.clock.advance(50);
    await bh.settle();
    bh.start('d');
    await bh.settle();
    expect(bh.results.get('d')).toEqual({ status: 'pending' });
    expect(bh.layer.queued).toBe(1);
  });

  it('a caller abort takes the waiter out of the queue at once with ABORTED (not a shed)', async () => {
    const bh = setup({ maxConcurrent: 1, maxQueue: 2 });
    const controller = new AbortController();
    bh.start('a');
    bh.start('b', 1000, controller.signal);
    bh.start('c');
    await bh.settle();
    controller.abort(new Error('user went away'));
    await bh.settle();
    expect(bh.results.get('b')).toMatchObject({
      status: 'error',
      error: { code: ErrorCode.ABORTED, requestSent: false },
    });
    expect((bh.results.get('b') as { error: Error }).error.cause).toEqual(new Error('user went away'));
    expect(bh.shed).toEqual([]);
    expect(bh.layer.queued).toBe(1);
    bh.take('a').resolve();
    await bh.settle();
    expect(bh.inner.map((entry) => entry.id)).toEqual(['c']);
    // Nothing of b is left behind: its deadline timer is cancelled.
    bh.clock.advance(2000);
    await bh.settle();
    expect(bh.shed).toEqual([]);
  });

  it('a call whose signal is already aborted is not queued', async () => {
    const bh = setup({ maxConcurrent: 1, maxQueue: 1 });
    bh.start('a');
    bh.start('b', 1000, AbortSignal.abort());
    await bh.settle();
    expect(bh.results.get('b')).toMatchObject({ status: 'error', error: { code: ErrorCode.ABORTED } });
    expect(bh.layer.queued).toBe(0);
  });

  it('an abort after admission is left to the layers below', async () => {
    const bh = setup({ maxConcurrent: 1, maxQueue: 1 });
    const controller = new AbortController();
    bh.start('a');
    bh.start('b', 1000, controller.signal);
    await bh.settle();
    bh.take('a').resolve();
    await bh.settle();
    controller.abort();
    await bh.settle();
    // Admitted: the bulkhead no longer answers for it; the inner call decides.
    expect(bh.results.get('b')).toEqual({ status: 'pending' });
    bh.take('b').resolve();
    await bh.settle();
    expect(bh.results.get('b')).toEqual({ status: 'ok', body: 'b' });
    expect(bh.layer.active).toBe(0);
  });

  it('without a deadline a waiter waits for a slot', async () => {
    const bh = setup({ maxConcurrent: 1, maxQueue: 1 });
    bh.start('a');
    bh.start('b', null);
    await bh.settle();
    bh.clock.advance(3_600_000);
    await bh.settle();
    expect(bh.results.get('b')).toEqual({ status: 'pending' });
    bh.take('a').resolve();
    await bh.settle();
    expect(bh.inner.map((entry) => entry.id)).toEqual(['b']);
  });
});

/**
 * An adaptive bulkhead held at `slots` (min = max) whose limiter has measured one window of
 * calls taking `rttMs` with demand above the limit (one more caller each round, who gives up
 * at once): the dependency is at capacity, and the queue's estimates need an RTT. Returns the
 * measured RTT.
 */
async function warmedUp(slots: number, rttMs: number, maxQueue = 1000, atCapacity = true) {
  const bh = setup({ adaptive: 'aimd', minConcurrent: slots, maxConcurrent: slots, maxQueue });
  for (let round = 0; round < 12 && bh.layer.snapshot().rttMs === 0; round++) {
    for (let slot = 0; slot < slots; slot++) bh.start(`warm-${round}-${slot}`);
    if (atCapacity) {
      const impatient = new AbortController();
      bh.start(`impatient-${round}`, 1000, impatient.signal);
      impatient.abort();
    }
    await bh.settle();
    bh.clock.advance(rttMs);
    for (let slot = 0; slot < slots; slot++) bh.take(`warm-${round}-${slot}`).resolve();
    await bh.settle();
  }
  const measured = bh.layer.snapshot().rttMs;
  expect(measured).toBeGreaterThan(rttMs * 0.8);
  expect(measured).toBeLessThanOrEqual(rttMs);
  bh.shed.length = 0;
  return { bh, rtt: measured };
}

describe('bulkhead: queue discipline', () => {
  it('sheds at once a call whose budget cannot cover the expected wait ((queued + 1) × RTT ÷ limit) and one RTT', async () => {
    const { bh, rtt } = await warmedUp(2, 100);
    bh.start('a');
    bh.start('b');
    await bh.settle();
    // Queue empty: a call needs RTT ÷ 2 of waiting and one RTT.
    bh.start('short', Math.floor(1.5 * rtt) - 2);
    await bh.settle();
    expect(bh.results.get('short')).toMatchObject({ status: 'error', error: { code: ErrorCode.BULKHEAD_FULL } });
    expect((bh.results.get('short') as { error: Error }).error.message).toMatch(/for this call's deadline/);
    expect(bh.shed).toEqual([{ id: 'short', reason: 'full' }]);
    // With a budget of 1000 ms, the queue takes what can be served in time, no more.
    const fits = Math.floor(((1000 - rtt) * 2) / rtt);
    for (let index = 0; index < fits + 5; index++) bh.start(`q${index}`, 1000);
    await bh.settle();
    expect(bh.layer.queued).toBe(fits);
    expect(bh.shed.filter((entry) => entry.reason === 'full')).toHaveLength(1 + 5);
    expect(bh.results.get(`q${fits - 1}`)).toEqual({ status: 'pending' });
    expect(bh.results.get(`q${fits}`)).toMatchObject({ status: 'error', error: { code: ErrorCode.BULKHEAD_FULL } });
  });

  it('while the limit can still grow (demand never above it), the estimate sheds nothing: the call waits', async () => {
    const { bh, rtt } = await warmedUp(2, 100, 1000, false);
    bh.start('a');
    bh.start('b');
    bh.start('short', Math.floor(1.5 * rtt) - 2);
    await bh.settle();
    expect(bh.results.get('short')).toEqual({ status: 'pending' });
    expect(bh.shed).toEqual([]);
  });

  it('a waiter leaves (queue-timeout) as soon as its budget no longer covers one RTT, not at its deadline', async () => {
    const { bh, rtt } = await warmedUp(1, 100);
    bh.start('a');
    bh.start('b', 400);
    await bh.settle();
    bh.clock.advance(Math.floor(400 - rtt) - 2);
    await bh.settle();
    expect(bh.results.get('b')).toEqual({ status: 'pending' });
    bh.clock.advance(4);
    await bh.settle();
    expect(bh.results.get('b')).toMatchObject({ status: 'error', error: { code: ErrorCode.BULKHEAD_FULL } });
    expect(bh.shed).toEqual([{ id: 'b', reason: 'queue-timeout' }]);
    expect(wheelOf(bh.clock).size).toBe(0);
  });

  it('FIFO while waits are short; newest first (LIFO) once the oldest waiter has spent half its budget; FIFO again after', async () => {
    const bh = setup({ maxConcurrent: 1, maxQueue: 10 });
    bh.start('a');
    for (const id of ['b', 'c', 'd']) bh.start(id, 200);
    await bh.settle();
    bh.clock.advance(50);
    bh.take('a').resolve();
    await bh.settle();
    // The oldest waiter has waited 50 of its 200 ms: the oldest first.
    expect(bh.inner.map((entry) => entry.id)).toEqual(['b']);
    bh.clock.advance(60);
    bh.start('e', 200);
    await bh.settle();
    bh.take('b').resolve();
    await bh.settle();
    // c has waited 110 of its 200 ms: standing, the newest first.
    expect(bh.inner.map((entry) => entry.id)).toEqual(['e']);
    bh.take('e').resolve();
    await bh.settle();
    expect(bh.inner.map((entry) => entry.id)).toEqual(['d']);
    bh.take('d').resolve();
    await bh.settle();
    expect(bh.inner.map((entry) => entry.id)).toEqual(['c']);
    // Fresh waiters: arrival order again.
    for (const id of ['f', 'g', 'h']) bh.start(id, 200);
    await bh.settle();
    bh.clock.advance(20);
    bh.take('c').resolve();
    await bh.settle();
    expect(bh.inner.map((entry) => entry.id)).toEqual(['f']);
  });

  it('a demand just above the limit (waits short against the budgets) stays FIFO: no waiter starves', async () => {
    // A closed loop of 6 callers over 4 slots, one call answered every 5 ms (each takes about
    // 20 ms), budgets of 1 s, for 5 s: the queue never empties, but no call waits long.
    const bh = setup({ maxConcurrent: 4, maxQueue: 10 });
    let next = 0;
    const startedAt = new Map<string, number>();
    const startOne = () => {
      const id = String(next++);
      startedAt.set(id, bh.clock.now());
      bh.start(id, 1000);
    };
    for (let caller = 0; caller < 6; caller++) startOne();
    await bh.settle();
    let longestWait = 0;
    let answered = 0;
    for (let step = 0; step < 1000; step++) {
      bh.clock.advance(5);
      const oldest = bh.inner.shift();
      if (oldest !== undefined) {
        oldest.resolve();
        answered++;
      }
      await bh.settle();
      expect(bh.layer.queued).toBeGreaterThan(0);
      startOne();
      await bh.settle();
      for (const entry of bh.inner) {
        const waited = bh.clock.now() - (startedAt.get(entry.id) ?? 0);
        if (startedAt.delete(entry.id)) longestWait = Math.max(longestWait, waited);
      }
    }
    expect(answered).toBe(1000);
    expect(bh.shed).toEqual([]);
    // FIFO: two waiters ahead, one slot every 5 ms.
    expect(longestWait).toBeLessThanOrEqual(15);
  });

  it('a standing overload at 2× capacity (RTT 100 ms, budget 250 ms): the capacity is served, the excess shed, nothing waits past its deadline', async () => {
    // 4 slots × 10 calls/s each = 40 calls/s; 80 calls/s offered for 10 s.
    const slots = 4;
    const serviceMs = 100;
    const budgetMs = 250;
    const clock = manualClock(0);
    const layer = bulkhead({ adaptive: 'aimd', minConcurrent: slots, maxConcurrent: slots }, { clock });
    // The dependency answers after serviceMs, or fails at the call's deadline if that comes first.
    const call = layer.layer(
      (_request, context) =>
        new Promise<IncomingResponse>((resolve, reject) => {
          const remaining = (context.deadline?.at ?? Number.POSITIVE_INFINITY) - clock.now();
          if (remaining >= serviceMs) clock.setTimeout(() => resolve(ok('x')), serviceMs);
          else {
            clock.setTimeout(
              () => reject(new TelescopeError(ErrorCode.DEADLINE_EXCEEDED, 'late')),
              Math.max(0, remaining),
            );
          }
        }),
    );
    const outcomes: Record<string, number> = {};
    let latest = 0;
    let offered = 0;
    const seconds = 10;
    const stepMs = 5;
    // Then 1 s more for the calls in flight to settle (in steps, so that each settles on time).
    for (let now = 0; now < (seconds + 1) * 1000; now += stepMs) {
      // 80 calls/s: 2 every 25 ms.
      if (now % 25 === 0 && now < seconds * 1000) {
        for (let index = 0; index < 2; index++) {
          offered++;
          const startedAt = clock.now();
          const context = new CallContext({
            service: 'movies',
            endpoint: 'getMovie',
            idempotent: true,
            clock,
            timeoutMs: budgetMs,
            deadline: Deadline.after(budgetMs, clock),
          });
          call({ method: 'GET', path: '/movies/1', headers: {}, body: undefined }, context).then(
            () => {
              outcomes.ok = (outcomes.ok ?? 0) + 1;
              latest = Math.max(latest, clock.now() - startedAt);
            },
            (error: TelescopeError) => {
              outcomes[error.code] = (outcomes[error.code] ?? 0) + 1;
              latest = Math.max(latest, clock.now() - startedAt);
            },
          );
        }
      }
      clock.advance(stepMs);
      await new Promise<void>((resolve) => setImmediate(resolve));
    }
    const settled = Object.values(outcomes).reduce((sum, count) => sum + count, 0);
    expect(settled).toBe(offered);
    // Served: nearly all of the capacity (40 calls/s), the rest shed with BULKHEAD_FULL. (A plain
    // FIFO queue sends the oldest waiter with too little budget left: 16 of 800 succeeded.)
    expect(outcomes.ok).toBeGreaterThanOrEqual(0.9 * 40 * seconds);
    expect(outcomes[ErrorCode.BULKHEAD_FULL]).toBeGreaterThanOrEqual(0.4 * offered);
    expect(outcomes[ErrorCode.DEADLINE_EXCEEDED] ?? 0).toBeLessThanOrEqual(0.02 * offered);
    expect(latest).toBeLessThanOrEqual(budgetMs + stepMs);
    expect(layer.snapshot()).toMatchObject({ inflight: 0, queued: 0 });
    expect(wheelOf(clock).size).toBe(0);
  });
});

describe('bulkhead: no slot leaks', () => {
  it('1,000 mixed calls (successes, failures, queue timeouts, aborts, shed) leave no slot and no waiter', async () => {
    const clock = manualClock(0);
    const bh = setup({ maxConcurrent: 4, maxQueue: 3 }, clock);
    const random = seededRandom(42);
    const controllers = new Map<string, AbortController>();
    let maxActive = 0;
    for (let index = 0; index < 1000; index++) {
      const id = String(index);
      const roll = random();
      if (roll < 0.1) {
        const controller = new AbortController();
        controllers.set(id, controller);
        bh.start(id, 50 + Math.floor(random() * 200), controller.signal);
      } else {
        bh.start(id, 20 + Math.floor(random() * 300));
      }
      await bh.settle();
      maxActive = Math.max(maxActive, bh.layer.active);
      expect(bh.layer.active).toBeLessThanOrEqual(4);
      expect(bh.layer.queued).toBeLessThanOrEqual(3);
      // Settle some attempts in flight, abort some waiters, and let time pass.
      while (bh.inner.length > 0 && random() < 0.45) {
        const entry = bh.inner[Math.floor(random() * bh.inner.length)]!;
        bh.take(entry.id);
        if (random() < 0.5) entry.resolve();
        else entry.reject();
      }
      if (random() < 0.05) {
        for (const controller of controllers.values()) if (random() < 0.5) controller.abort();
      }
      clock.advance(Math.floor(random() * 15));
      await bh.settle();
    }
    for (const controller of controllers.values()) controller.abort();
    while (bh.inner.length > 0) {
      bh.inner.shift()!.resolve();
      await bh.settle();
    }
    clock.advance(1000);
    await bh.settle();

    expect(bh.layer.active).toBe(0);
    expect(bh.layer.queued).toBe(0);
    expect(maxActive).toBe(4);
    const outcomes = { ok: 0, BULKHEAD_FULL: 0, ABORTED: 0, CONNECTION_RESET: 0 } as Record<string, number>;
    for (const result of bh.results.values()) {
      expect(result.status).not.toBe('pending');
      const key = result.status === 'ok' ? 'ok' : result.status === 'error' ? result.error.code : 'pending';
      outcomes[key] = (outcomes[key] ?? 0) + 1;
    }
    expect(Object.keys(outcomes).sort()).toEqual(['ABORTED', 'BULKHEAD_FULL', 'CONNECTION_RESET', 'ok']);
    for (const count of Object.values(outcomes)) expect(count).toBeGreaterThan(0);
    expect(bh.shed.filter((entry) => entry.reason === 'full').length).toBeGreaterThan(0);
    expect(bh.shed.filter((entry) => entry.reason === 'queue-timeout').length).toBeGreaterThan(0);
    expect(bh.shed).toHaveLength(outcomes.BULKHEAD_FULL!);
    expect(wheelOf(clock).size).toBe(0);

    // Every slot is usable again: maxConcurrent calls are admitted at once, the next one queued.
    for (const id of ['x1', 'x2', 'x3', 'x4', 'x5']) bh.start(id);
    await bh.settle();
    expect(bh.inner.map((entry) => entry.id)).toEqual(['x1', 'x2', 'x3', 'x4']);
    expect(bh.layer.queued).toBe(1);
  });
});

describe('bulkhead: options', () => {
  it('rejects options out of range', () => {
    const clock = manualClock(0);
    for (const options of [{ maxConcurrent: 0 }, { maxConcurrent: 1.5 }, { maxQueue: -1 }, { maxQueue: 0.5 }]) {
      expect(() => bulkhead(options, { clock })).toThrow(expect.objectContaining({ code: ErrorCode.INVALID_OPTION }));
    }
  });
});
