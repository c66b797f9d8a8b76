/**
 * Instance health on a manual clock: failure-percentage and success-rate ejection judged once
 * per interval by the set's one timer, returns fired by that timer (not by the next pick),
 * slow start, zone spillover in proportion to the healthy capacity, peak-EWMA picking,
 * health-check thresholds, and bad options.
 */
import { describe, expect, it } from 'vitest';
import {
  CallContext,
  createClient,
  ErrorCode,
  type InstanceEvent,
  InstanceSet,
  type InstanceSetOptions,
  type InstanceState,
  parseInstances,
} from '../../src/index.js';
import { type ManualClock, manualClock } from '../helpers/clock.js';
import { movies } from '../helpers/movies.js';
import { seededRandom } from '../helpers/random.js';

function setup(urls: Parameters<typeof parseInstances>[0], options: Partial<InstanceSetOptions> = {}) {
  const clock = options.clock ? (options.clock as ManualClock) : manualClock(0);
  const events: InstanceEvent[] = [];
  const instances = new InstanceSet({
    random: seededRandom(11),
    onEvent: (event) => events.push(event),
    ...options,
    clock,
  });
  instances.update(parseInstances(urls));
  instances.start();
  const context = () => new CallContext({ service: 's', endpoint: 'e', idempotent: true, clock, timeoutMs: 1000 });
  /** One attempt on whatever the set picks, with `outcome(url)`; returns the url. */
  const attempt = (outcome: (url: string) => 'success' | 'failure' = () => 'success', latencyMs = 0) => {
    const state = instances.pick(context()) as InstanceState;
    state.outstanding++;
    const startedAt = instances.pickedAt;
    clock.advance(latencyMs);
    instances.record(state, outcome(state.instance.url), startedAt);
    return state.instance.url;
  };
  return { clock, instances, events, context, attempt };
}

const three = ['http://a:1', 'http://b:1', 'http://c:1'];

describe('outlier ejection by rate, on the interval timer', () => {
  it('failure percentage: the instance failing ≥ the threshold over an interval is ejected at its end', () => {
    const { clock, instances, events, attempt } = setup(three, {
      outlier: { failurePercentage: 5, minRequests: 20, intervalMs: 1000, baseEjectionMs: 5000 },
    });
    let calls = 0;
    const flaky = (url: string) => (url === 'http://a:1' && calls++ % 10 === 0 ? 'failure' : 'success');
    for (let index = 0; index < 300; index++) attempt(flaky);
    expect(events).toEqual([]);
    // Nothing is judged before the interval ends; one timer does it.
    expect(clock.pending()).toBe(1);
    clock.advance(1000);
    expect(events).toEqual([
      expect.objectContaining({ type: 'eject', instance: 'http://a:1', reason: 'failure-percentage', threshold: 5 }),
    ]);
    const eject = events[0] as Extract<InstanceEvent, { type: 'eject' }>;
    expect(eject.rate).toBeGreaterThanOrEqual(5);
    expect(eject.ejectionMs).toBeGreaterThanOrEqual(4500);
    expect(eject.ejectionMs).toBeLessThanOrEqual(5500);
    for (let index = 0; index < 100; index++) expect(attempt()).not.toBe('http://a:1');
    // The return comes from the timer at the end of the period, with no pick needed.
    clock.advance(eject.ejectionMs);
    expect(events.at(-1)).toEqual({ type: 'return', instance: 'http://a:1', reason: 'expired' });
    expect(clock.pending()).toBe(1);
    instances.close();
    expect(clock.pending()).toBe(0);
  });

  it('failure percentage below minRequests is not judged; healthy instances are never ejected', () => {
    const { clock, instances, events, attempt } = setup(three, {
      outlier: { failurePercentage: 5, minRequests: 200, intervalMs: 1000 },
    });
    for (let index = 0; index < 300; index++) attempt((url) => (url === 'http://a:1' ? 'failure' : 'success'));
    // a failed 5 in a row early on and was ejected for that; rates judged nothing.
    clock.advance(1000);
    expect(events.filter((event) => event.type === 'eject' && event.reason !== 'consecutive-failures')).toEqual([]);
    instances.close();
  });

  it('success rate: more than factor × stdev below the mean of 5 instances is ejected; needs 3 judged instances', () => {
    const urls = ['http://a:1', 'http://b:1', 'http://c:1', 'http://d:1', 'http://e:1'];
    const { clock, instances, events, attempt } = setup(urls, {
      balancer: 'round-robin',
      outlier: { successRateStdevFactor: 1.9, minRequests: 50, intervalMs: 1000, consecutiveFailures: 1000 },
    });
    let count = 0;
    for (let index = 0; index < 1000; index++) {
      attempt((url) => (url === 'http://e:1' && count++ % 5 === 0 ? 'failure' : 'success'));
    }
    clock.advance(1000);
    expect(events).toEqual([
      expect.objectContaining({ type: 'eject', instance: 'http://e:1', reason: 'success-rate' }),
    ]);
    const eject = events[0] as Extract<InstanceEvent, { type: 'eject' }>;
    expect(eject.rate).toBeCloseTo(80, 0);
    expect(eject.threshold).toBeGreaterThan(80);
    instances.close();

    // Two instances cannot be compared: nothing happens.
    const pair = setup(['http://a:1', 'http://b:1'], {
      outlier: { successRateStdevFactor: 0.1, minRequests: 10, intervalMs: 1000, consecutiveFailures: 1000 },
    });
    for (let index = 0; index < 200; index++) pair.attempt((url) => (url === 'http://a:1' ? 'failure' : 'success'));
    pair.clock.advance(1000);
    expect(pair.events).toEqual([]);
    pair.instances.close();
  });

  it('the cap holds over all instances: maxEjectionPercent of 4 at 50% is 2, whatever the reason', () => {
    const urls = ['http://a:1', 'http://b:1', 'http://c:1', 'http://d:1'];
    const { clock, instances, attempt } = setup(urls, {
      outlier: { failurePercentage: 10, minRequests: 10, intervalMs: 1000, consecutiveFailures: 1000 },
    });
    for (let index = 0; index < 400; index++) attempt(() => 'failure');
    clock.advance(1000);
    expect(instances.ejectedCount).toBe(2);
    instances.close();
  });

  it('without rate detection no timer runs until something is ejected', () => {
    const { clock, instances, attempt } = setup(three, { outlier: { consecutiveFailures: 2 } });
    for (let index = 0; index < 50; index++) attempt();
    expect(clock.pending()).toBe(0);
    for (let index = 0; index < 20; index++) attempt((url) => (url === 'http://a:1' ? 'failure' : 'success'));
    expect(instances.ejectedCount).toBe(1);
    expect(clock.pending()).toBe(1);
    instances.close();
    expect(clock.pending()).toBe(0);
  });
});

describe('p2c-ewma', () => {
  it('an instance answering in 50 ms among two at 10 ms gets under 2% at low concurrency', () => {
    const clock = manualClock(0);
    const { instances, context } = setup(three, { balancer: 'p2c-ewma', clock });
    const latency = (url: string) => (url === 'http://c:1' ? 50 : 10);
    const counts = new Map<string, number>();
    // 100 calls/s, one at a time, 60 s.
    for (let index = 0; index < 6000; index++) {
      const state = instances.pick(context()) as InstanceState;
      state.outstanding++;
      const startedAt = instances.pickedAt;
      clock.advance(latency(state.instance.url));
      instances.record(state, 'success', startedAt);
      clock.advance(Math.max(0, 10 - latency(state.instance.url)));
      counts.set(state.instance.url, (counts.get(state.instance.url) ?? 0) + 1);
    }
    expect((counts.get('http://c:1') ?? 0) / 6000).toBeLessThan(0.02);
    expect(counts.get('http://c:1')).toBeGreaterThan(0);
  });

  it('a new slow instance is left alone from its first answer (the average is not biased towards 0 while young)', () => {
    const clock = manualClock(0);
    const { instances, context } = setup(three, { balancer: 'p2c-ewma', clock, outlier: false });
    let slowCalls = 0;
    // 100 calls/s, one at a time, 8 s; c answers in 50 ms, a and b in 10 ms.
    for (let index = 0; index < 800; index++) {
      const state = instances.pick(context()) as InstanceState;
      state.outstanding++;
      const startedAt = instances.pickedAt;
      const ms = state.instance.url === 'http://c:1' ? 50 : 10;
      if (ms === 50) slowCalls++;
      clock.advance(ms);
      instances.record(state, 'success', startedAt);
      clock.advance(Math.max(0, 10 - ms));
    }
    // An average started at 0 reads a small fraction of the latency for the first seconds, and
    // an avoided instance's falls below its peers' within a second or two: c was picked again
    // and again (4 calls here; 13 of 800 in the slow-one simulation).
    expect(slowCalls).toBeGreaterThan(0);
    expect(slowCalls).toBeLessThanOrEqual(2);
  });

  it('an instance that joins later gets its share, not more: its average is not younger, hence lower, than its peers', () => {
    const clock = manualClock(0);
    const { instances, context } = setup(three, {
      balancer: 'p2c-ewma',
      clock,
      outlier: false,
      random: seededRandom(7),
    });
    const counts = new Map<string, number>();
    const run = (calls: number, count: boolean) => {
      for (let index = 0; index < calls; index++) {
        const state = instances.pick(context()) as InstanceState;
        state.outstanding++;
        const startedAt = instances.pickedAt;
        clock.advance(10);
        instances.record(state, 'success', startedAt);
        if (count) counts.set(state.instance.url, (counts.get(state.instance.url) ?? 0) + 1);
      }
    };
    // 100 calls/s, all instances answering in 10 ms; d joins after 20 s.
    run(2000, false);
    instances.update(parseInstances([...three, 'http://d:1']));
    run(200, true);
    // Measured with the average started at 0: d, reading far below its 10 ms, won every pair
    // it was in (95 of 200).
    expect(counts.get('http://d:1')).toBeGreaterThan(0.15 * 200);
    expect(counts.get('http://d:1')).toBeLessThanOrEqual(0.35 * 200);
  });

  it('flaky-one at the issue’s rate, default outlier options: one of 3 fails 10%, 200 calls/s for 30 s; after 10 s it gets ≤ 5% of attempts, ≤ 0.5% of calls fail after their retry', () => {
    const clock = manualClock(0);
    const { instances, context } = setup(three, { balancer: 'p2c-ewma', clock });
    let flakyAttempts = 0;
    let attemptsAfter = 0;
    let flakyAfter = 0;
    let failedCalls = 0;
    const calls = 6000;
    for (let index = 0; index < calls; index++) {
      clock.advance(Math.max(0, index * 5 - clock.now()));
      const call = context();
      let answered = false;
      // One retry on another instance, as the client's default retry does.
      for (let attempt = 0; attempt < 2 && !answered; attempt++) {
        const state = instances.pick(call) as InstanceState;
        state.outstanding++;
        const startedAt = instances.pickedAt;
        const flaky = state.instance.url === 'http://a:1';
        const failed = flaky && flakyAttempts++ % 10 === 9;
        clock.advance(2);
        instances.record(state, failed ? 'failure' : 'success', startedAt);
        if (clock.now() >= 10_000) {
          attemptsAfter++;
          if (flaky) flakyAfter++;
        }
        if (failed) call.tried = [...(call.tried ?? []), state.instance];
        else answered = true;
      }
      if (!answered) failedCalls++;
    }
    // With 'p2c' it keeps a third (32.95% here; 32.72% on real servers, docs/instances.md).
    expect(flakyAfter / attemptsAfter).toBeLessThanOrEqual(0.05);
    expect(flakyAfter).toBeGreaterThan(0);
    expect(failedCalls / calls).toBeLessThanOrEqual(0.005);
  });

  it('a failing instance costs more than its latency: 10% fast 503s cut its share', () => {
    const clock = manualClock(0);
    const { instances, context } = setup(three, { balancer: 'p2c-ewma', clock, outlier: false });
    const counts = new Map<string, number>();
    let failures = 0;
    for (let index = 0; index < 6000; index++) {
      const state = instances.pick(context()) as InstanceState;
      state.outstanding++;
      const startedAt = instances.pickedAt;
      clock.advance(state.instance.url === 'http://a:1' ? 2 : 10);
      const failed = state.instance.url === 'http://a:1' && failures++ % 10 === 0;
      instances.record(state, failed ? 'failure' : 'success', startedAt);
      counts.set(state.instance.url, (counts.get(state.instance.url) ?? 0) + 1);
    }
    expect((counts.get('http://a:1') ?? 0) / 6000).toBeLessThan(0.1);
  });
});

describe('slow start', () => {
  it('an instance added after the first set ramps from 10% of its share to all of it over the window', () => {
    const clock = manualClock(0);
    const { instances, context } = setup(three, { slowStartMs: 10_000, clock });
    instances.update(parseInstances([...three, 'http://d:1']));
    const share = (picks: number) => {
      let hits = 0;
      for (let index = 0; index < picks; index++) {
        const state = instances.pick(context()) as InstanceState;
        if (state.instance.url === 'http://d:1') hits++;
      }
      return hits / picks;
    };
    const steady = 1 / 4;
    // First second: ≤ 15% of the steady share.
    let first = 0;
    for (let ms = 0; ms < 1000; ms += 10) {
      first += share(40);
      clock.advance(10);
    }
    expect(first / 100 / steady).toBeLessThanOrEqual(0.15);
    clock.advance(4000);
    const middle = share(4000) / steady;
    expect(middle).toBeGreaterThan(0.35);
    expect(middle).toBeLessThan(0.75);
    clock.advance(5000);
    const after = share(8000) / steady;
    expect(after).toBeGreaterThan(0.8);
    expect(after).toBeLessThan(1.2);
  });

  it('the first set does not ramp; a return from ejection does', () => {
    const clock = manualClock(0);
    const { instances, context, events } = setup(['http://a:1', 'http://b:1'], {
      slowStartMs: 10_000,
      clock,
      outlier: { consecutiveFailures: 1, baseEjectionMs: 1000 },
    });
    let a = 0;
    for (let index = 0; index < 2000; index++) if (instances.pick(context())!.instance.url === 'http://a:1') a++;
    expect(a / 2000).toBeGreaterThan(0.4);
    const state = instances.get('http://a:1')!;
    state.outstanding++;
    instances.record(state, 'failure');
    clock.advance(1200);
    expect(events.at(-1)).toMatchObject({ type: 'return' });
    a = 0;
    for (let index = 0; index < 2000; index++) if (instances.pick(context())!.instance.url === 'http://a:1') a++;
    expect(a / 2000).toBeLessThan(0.1);
    instances.close();
  });
});

describe('zones', () => {
  const urls = [
    { url: 'http://a1:1', zone: 'a' },
    { url: 'http://a2:1', zone: 'a' },
    { url: 'http://b1:1', zone: 'b' },
    { url: 'http://b2:1', zone: 'b' },
    { url: 'http://b3:1', zone: 'b' },
    { url: 'http://b4:1', zone: 'b' },
  ];

  it('one of two local instances ejected: the other keeps its load, half the traffic spills to zone b', () => {
    const { instances, context } = setup(urls, { zone: 'a', outlier: { consecutiveFailures: 1 } });
    const counts = () => {
      const seen = new Map<string, number>();
      for (let index = 0; index < 6000; index++) {
        const url = instances.pick(context())!.instance.url;
        seen.set(url, (seen.get(url) ?? 0) + 1);
      }
      return seen;
    };
    const steady = counts();
    expect((steady.get('http://a1:1') ?? 0) + (steady.get('http://a2:1') ?? 0)).toBe(6000);
    const a2 = instances.get('http://a2:1')!;
    a2.outstanding++;
    instances.record(a2, 'failure');
    expect(instances.ejectedCount).toBe(1);
    const degraded = counts();
    const a1 = (degraded.get('http://a1:1') ?? 0) / (steady.get('http://a1:1') ?? 1);
    expect(a1).toBeLessThanOrEqual(1.5);
    expect(a1).toBeGreaterThan(0.8);
    const spilled = ['http://b1:1', 'http://b2:1', 'http://b3:1', 'http://b4:1'].map((url) => degraded.get(url) ?? 0);
    expect(spilled.reduce((sum, count) => sum + count, 0) / 6000).toBeGreaterThan(0.4);
    for (const count of spilled) expect(count).toBeGreaterThan(0);
    instances.close();
  });
});

describe('health-check thresholds', () => {
  it('unhealthyThreshold failures take an instance out; healthyThreshold passes bring it back, ramping', () => {
    const clock = manualClock(0);
    const { instances, events, context } = setup(['http://a:1', 'http://b:1'], {
      clock,
      slowStartMs: 1000,
      healthThresholds: { unhealthyThreshold: 2, healthyThreshold: 3 },
    });
    const a = instances.get('http://a:1')!;
    instances.recordCheck(a, false);
    expect(a.healthy).toBe(true);
    instances.recordCheck(a, false);
    expect(events).toEqual([{ type: 'health', instance: 'http://a:1', healthy: false }]);
    for (let index = 0; index < 100; index++) expect(instances.pick(context())!.instance.url).toBe('http://b:1');
    instances.recordCheck(a, true);
    instances.recordCheck(a, true);
    expect(a.healthy).toBe(false);
    instances.recordCheck(a, true);
    expect(events.at(-1)).toEqual({ type: 'health', instance: 'http://a:1', healthy: true });
    expect(a.rampStart).toBe(clock.now());
  });

  it('passing checks end an ejection for consecutive failures early', () => {
    const { instances, events } = setup(['http://a:1', 'http://b:1'], {
      outlier: { consecutiveFailures: 1, baseEjectionMs: 60_000 },
      healthThresholds: { unhealthyThreshold: 2, healthyThreshold: 2 },
    });
    const a = instances.get('http://a:1')!;
    a.outstanding++;
    instances.record(a, 'failure');
    expect(instances.ejectedCount).toBe(1);
    instances.recordCheck(a, true);
    instances.recordCheck(a, true);
    expect(events.at(-1)).toEqual({ type: 'return', instance: 'http://a:1', reason: 'health-check' });
    expect(instances.ejectedCount).toBe(0);
    instances.close();
  });
});

describe('bad options are INVALID_OPTION at createClient, naming the option and range', () => {
  const cases: Array<[string, Record<string, unknown>, RegExp]> = [
    ['failurePercentage 0', { outlier: { failurePercentage: 0 } }, /outlier\.failurePercentage.*\(0, 100\]/],
    ['failurePercentage 101', { outlier: { failurePercentage: 101 } }, /outlier\.failurePercentage/],
    ['successRateStdevFactor -1', { outlier: { successRateStdevFactor: -1 } }, /outlier\.successRateStdevFactor/],
    ['minRequests 0.5', { outlier: { minRequests: 0.5 } }, /outlier\.minRequests.*integer/],
    ['intervalMs 10', { outlier: { intervalMs: 10 } }, /outlier\.intervalMs.*≥ 100/],
    ['slowStartMs -1', { slowStartMs: -1 }, /slowStartMs/],
    ['slowStartMs NaN', { slowStartMs: Number.NaN }, /slowStartMs/],
    ['balancer', { balancer: 'ewma' }, /balancer.*p2c-ewma/],
    ['healthCheck.path', { healthCheck: { path: 'healthz' } }, /healthCheck\.path/],
    ['healthCheck.path //', { healthCheck: { path: '//evil.example/' } }, /healthCheck\.path/],
    ['healthCheck.intervalMs', { healthCheck: { path: '/h', intervalMs: 5 } }, /healthCheck\.intervalMs/],
    [
      'healthCheck.timeoutMs',
      { healthCheck: { path: '/h', intervalMs: 500, timeoutMs: 600 } },
      /healthCheck\.timeoutMs.*≤ intervalMs/,
    ],
    [
      'healthCheck.unhealthyThreshold',
      { healthCheck: { path: '/h', unhealthyThreshold: 0 } },
      /healthCheck\.unhealthyThreshold/,
    ],
    [
      'healthCheck.healthyThreshold',
      { healthCheck: { path: '/h', healthyThreshold: 1.5 } },
      /healthCheck\.healthyThreshold/,
    ],
  ];
  for (const [name, options, message] of cases) {
    it(name, () => {
      const clock = manualClock(0);
      let thrown: unknown;
      try {
        createClient(movies, { instances: ['http://127.0.0.1:1'], clock, ...options });
      } catch (error) {
        thrown = error;
      }
      expect(thrown).toMatchObject({ code: ErrorCode.INVALID_OPTION });
      expect((thrown as Error).message).toMatch(message);
      // Nothing was left running.
      expect(clock.pending()).toBe(0);
    });
  }
});
