import { describe, expect, it } from 'vitest';
import {
  CallContext,
  ErrorCode,
  HttpStatusError,
  type InstanceEvent,
  InstanceSet,
  isInstanceFailure,
  outcomeOf,
  parseInstances,
  TelescopeError,
} from '../../src/index.js';
import { manualClock } from '../helpers/clock.js';
import { seededRandom } from '../helpers/random.js';

const clock = manualClock(0);

function context(route?: { version?: string; zone?: string }) {
  return new CallContext({ service: 's', endpoint: 'e', idempotent: true, clock, timeoutMs: 1000, route });
}

function set(
  urls: Parameters<typeof parseInstances>[0],
  options: Partial<ConstructorParameters<typeof InstanceSet>[0]> = {},
) {
  const instances = new InstanceSet({ clock, random: seededRandom(7), ...options });
  instances.update(parseInstances(urls));
  return instances;
}

describe('InstanceSet: power of two choices', () => {
  it('sends the next attempt to the instance with fewer attempts in flight', () => {
    const instances = set(['http://a:1', 'http://b:1']);
    const a = instances.get('http://a:1')!;
    a.outstanding = 5;
    for (let index = 0; index < 50; index++) expect(instances.pick(context())?.instance.url).toBe('http://b:1');
  });

  it('spreads evenly when loads are equal (ties broken at random)', () => {
    const instances = set(['http://a:1', 'http://b:1', 'http://c:1']);
    const counts = new Map<string, number>();
    for (let index = 0; index < 3000; index++) {
      const url = instances.pick(context())!.instance.url;
      counts.set(url, (counts.get(url) ?? 0) + 1);
    }
    for (const count of counts.values()) expect(count).toBeGreaterThan(800);
  });

  it('respects weights', () => {
    const instances = set(['http://a:1', { url: 'http://b:1', weight: 3 }]);
    let heavy = 0;
    for (let index = 0; index < 4000; index++) if (instances.pick(context())!.instance.url === 'http://b:1') heavy++;
    // P2C over weighted samples: the heavy instance takes clearly more than half.
    expect(heavy / 4000).toBeGreaterThan(0.6);
  });

  it('skips instances already tried in this call, and asks for a fresh connection when all were', () => {
    const instances = set(['http://a:1', 'http://b:1']);
    const ctx = context();
    const first = instances.pick(ctx)!;
    ctx.tried = [first.instance];
    const second = instances.pick(ctx)!;
    expect(second.instance.url).not.toBe(first.instance.url);
    expect(ctx.freshConnection).toBe(false);
    ctx.tried = [first.instance, second.instance];
    expect(instances.pick(ctx)).toBeDefined();
    expect(ctx.freshConnection).toBe(true);
  });

  it('a single instance is retried over a fresh connection', () => {
    const instances = set(['http://a:1']);
    const ctx = context();
    ctx.tried = [instances.pick(ctx)!.instance];
    expect(instances.pick(ctx)?.instance.url).toBe('http://a:1');
    expect(ctx.freshConnection).toBe(true);
  });
});

describe('InstanceSet: round-robin', () => {
  it('cycles through instances', () => {
    const instances = set(['http://a:1', 'http://b:1', 'http://c:1'], { balancer: 'round-robin' });
    const picks = Array.from({ length: 6 }, () => instances.pick(context())!.instance.url);
    expect(picks).toEqual(['http://a:1', 'http://b:1', 'http://c:1', 'http://a:1', 'http://b:1', 'http://c:1']);
  });

  it('follows weights: 3:1 is exactly three picks of a to one of b in every cycle of four, spread out', () => {
    const instances = set(
      [
        { url: 'http://a:1', weight: 3 },
        { url: 'http://b:1', weight: 1 },
      ],
      { balancer: 'round-robin' },
    );
    const picks = Array.from({ length: 400 }, () => instances.pick(context())!.instance.url);
    for (let cycle = 0; cycle < 100; cycle++) {
      const window = picks.slice(cycle * 4, cycle * 4 + 4);
      expect(window.filter((url) => url === 'http://a:1')).toHaveLength(3);
    }
    expect(picks.slice(0, 4)).toEqual(['http://a:1', 'http://a:1', 'http://b:1', 'http://a:1']);
  });

  it('weighted round-robin skips instances already tried in the call', () => {
    const instances = set(
      [
        { url: 'http://a:1', weight: 5 },
        { url: 'http://b:1', weight: 1 },
      ],
      { balancer: 'round-robin' },
    );
    const ctx = context();
    const first = instances.pick(ctx)!;
    ctx.tried = [first.instance];
    expect(instances.pick(ctx)!.instance.url).not.toBe(first.instance.url);
  });

  it('rejects an unknown balancer', () => {
    expect(() => set(['http://a:1'], { balancer: 'random' as 'p2c' })).toThrow(/balancer/);
  });
});

describe('InstanceSet: routing', () => {
  const urls = [
    { url: 'http://a1:1', zone: 'a', version: 'v1' },
    { url: 'http://a2:1', zone: 'a', version: 'v2' },
    { url: 'http://b1:1', zone: 'b', version: 'v2' },
  ];

  it('prefers the client zone while it has usable instances', () => {
    const instances = set(urls, { zone: 'a' });
    for (let index = 0; index < 100; index++) expect(instances.pick(context())!.instance.zone).toBe('a');
  });

  it('falls back to other zones when the local zone has none usable', () => {
    const instances = set(urls, { zone: 'a', outlier: { consecutiveFailures: 1, maxEjectionPercent: 100 } });
    for (const url of ['http://a1:1', 'http://a2:1']) {
      const state = instances.get(url)!;
      state.outstanding++;
      instances.record(state, 'failure');
    }
    expect(instances.ejectedCount).toBe(2);
    expect(instances.pick(context())!.instance.url).toBe('http://b1:1');
  });

  it('route.version restricts to matching instances; unknown version gives none', () => {
    const instances = set(urls, { zone: 'a' });
    for (let index = 0; index < 50; index++) {
      expect(instances.pick(context({ version: 'v2' }))!.instance.version).toBe('v2');
    }
    // zone a + version v1 → a1 only
    expect(instances.pick(context({ version: 'v1' }))!.instance.url).toBe('http://a1:1');
    expect(instances.pick(context({ version: 'v9' }))).toBeUndefined();
  });
});

describe('InstanceSet: outlier ejection', () => {
  function failTimes(instances: InstanceSet, url: string, times: number) {
    const state = instances.get(url)!;
    for (let index = 0; index < times; index++) {
      state.outstanding++;
      instances.record(state, 'failure');
    }
  }

  it('ejects after consecutive failures for base × 2^(n−1), then returns', () => {
    const local = manualClock(0);
    const events: InstanceEvent[] = [];
    const instances = new InstanceSet({
      clock: local,
      random: seededRandom(1),
      outlier: { consecutiveFailures: 3, baseEjectionMs: 1000 },
      onEvent: (event) => events.push(event),
    });
    instances.update(parseInstances(['http://a:1', 'http://b:1', 'http://c:1']));
    failTimes(instances, 'http://a:1', 2);
    expect(instances.ejectedCount).toBe(0);
    failTimes(instances, 'http://a:1', 1);
    expect(events).toEqual([
      {
        type: 'eject',
        instance: 'http://a:1',
        reason: 'consecutive-failures',
        consecutiveFailures: 3,
        ejectionMs: expect.any(Number),
        timesEjected: 1,
      },
    ]);
    const first = (events[0] as { ejectionMs: number }).ejectionMs;
    // base ± 10% jitter
    expect(first).toBeGreaterThanOrEqual(900);
    expect(first).toBeLessThanOrEqual(1100);
    const ctx = () => new CallContext({ service: 's', endpoint: 'e', idempotent: true, clock: local, timeoutMs: 1 });
    for (let index = 0; index < 50; index++) expect(instances.pick(ctx())!.instance.url).not.toBe('http://a:1');
    local.advance(first);
    // The set's own timer ended the ejection, before any pick.
    expect(events.at(-1)).toEqual({ type: 'return', instance: 'http://a:1', reason: 'expired' });
    const seen = new Set(Array.from({ length: 50 }, () => instances.pick(ctx())!.instance.url));
    expect(seen.has('http://a:1')).toBe(true);
    // Second ejection lasts twice as long (± 10%).
    failTimes(instances, 'http://a:1', 3);
    expect(events.at(-1)).toMatchObject({ type: 'eject', timesEjected: 2 });
    const second = (events.at(-1) as { ejectionMs: number }).ejectionMs;
    expect(second).toBeGreaterThanOrEqual(1800);
    expect(second).toBeLessThanOrEqual(2200);
    instances.close();
    expect(local.pending()).toBe(0);
  });

  it('a success resets the consecutive count', () => {
    const instances = set(['http://a:1', 'http://b:1'], { outlier: { consecutiveFailures: 3 } });
    failTimes(instances, 'http://a:1', 2);
    const state = instances.get('http://a:1')!;
    state.outstanding++;
    instances.record(state, 'success');
    failTimes(instances, 'http://a:1', 2);
    expect(instances.ejectedCount).toBe(0);
  });

  it('never ejects more than maxEjectionPercent of the instances', () => {
    const instances = set(['http://a:1', 'http://b:1', 'http://c:1', 'http://d:1'], {
      outlier: { consecutiveFailures: 1, maxEjectionPercent: 50 },
    });
    for (const url of ['http://a:1', 'http://b:1', 'http://c:1', 'http://d:1']) failTimes(instances, url, 3);
    expect(instances.ejectedCount).toBe(2);
  });

  it('never ejects the only instance at the default 50%', () => {
    const instances = set(['http://a:1'], { outlier: { consecutiveFailures: 1 } });
    failTimes(instances, 'http://a:1', 10);
    expect(instances.ejectedCount).toBe(0);
  });

  it('caps the ejection period at maxEjectionMs', () => {
    const events: InstanceEvent[] = [];
    const local = manualClock(0);
    const instances = new InstanceSet({
      clock: local,
      outlier: { consecutiveFailures: 1, baseEjectionMs: 100, maxEjectionMs: 250, maxEjectionPercent: 100 },
      onEvent: (event) => events.push(event),
    });
    instances.update(parseInstances(['http://a:1']));
    const ctx = new CallContext({ service: 's', endpoint: 'e', idempotent: true, clock: local, timeoutMs: 1 });
    for (let round = 0; round < 4; round++) {
      failTimes(instances, 'http://a:1', 1);
      local.advance(1000);
      instances.pick(ctx); // notices the return
    }
    const periods = events.flatMap((event) => (event.type === 'eject' ? [event.ejectionMs] : []));
    const expected = [100, 200, 250, 250];
    periods.forEach((period, index) => {
      expect(period).toBeGreaterThanOrEqual(expected[index]! * 0.9);
      expect(period).toBeLessThanOrEqual(expected[index]! * 1.1);
    });
    expect(periods).toHaveLength(4);
  });

  it('rejects bad outlier options with INVALID_OPTION', () => {
    expect(() => set(['http://a:1'], { outlier: { consecutiveFailures: 0 } })).toThrow(/consecutiveFailures/);
    expect(() => set(['http://a:1'], { outlier: { maxEjectionPercent: 101 } })).toThrow(/maxEjectionPercent/);
    expect(() => set(['http://a:1'], { outlier: { baseEjectionMs: -1 } })).toThrow(/baseEjectionMs/);
  });

  it('keeps state of instances that stay across an update, drops removed ones', () => {
    const instances = set(['http://a:1', 'http://b:1']);
    instances.get('http://a:1')!.outstanding = 3;
    const removed = instances.update(parseInstances(['http://a:1', 'http://c:1']));
    expect(removed).toEqual(['http://b:1']);
    expect(instances.get('http://a:1')!.outstanding).toBe(3);
    expect(instances.get('http://b:1')).toBeUndefined();
  });
});

describe('isInstanceFailure', () => {
  it('counts failures of the instance, not of the request or the caller', () => {
    const on = { instance: 'http://a:1' };
    expect(isInstanceFailure(new TelescopeError(ErrorCode.CONNECT_FAILED, 'x', on))).toBe(true);
    expect(isInstanceFailure(new TelescopeError(ErrorCode.ATTEMPT_TIMEOUT, 'x', on))).toBe(true);
    expect(isInstanceFailure(new HttpStatusError(503, '', undefined, on))).toBe(true);
    expect(isInstanceFailure(new HttpStatusError(500, '', undefined, on))).toBe(true);
    expect(isInstanceFailure(new HttpStatusError(404, '', undefined, on))).toBe(false);
    expect(isInstanceFailure(new HttpStatusError(429, '', undefined, on))).toBe(false);
    expect(isInstanceFailure(new TelescopeError(ErrorCode.ABORTED, 'x', on))).toBe(false);
    expect(isInstanceFailure(new TelescopeError(ErrorCode.INVALID_REQUEST, 'x', on))).toBe(false);
    // Raised before reaching any instance (e.g. no budget left): not the instance's fault.
    expect(isInstanceFailure(new TelescopeError(ErrorCode.DEADLINE_EXCEEDED, 'x'))).toBe(false);
    expect(isInstanceFailure(new Error('x'))).toBe(false);
  });
});

describe('outcomeOf', () => {
  it('cancelled attempts neither reset nor add to an instance’s failures', () => {
    const on = { instance: 'http://a:1' };
    expect(outcomeOf(new TelescopeError(ErrorCode.ABORTED, 'x', on))).toBe('neutral');
    expect(outcomeOf(new TelescopeError(ErrorCode.CLIENT_CLOSED, 'x', on))).toBe('neutral');
    expect(outcomeOf(new HttpStatusError(404, '', undefined, on))).toBe('success');
    expect(outcomeOf(new HttpStatusError(503, '', undefined, on))).toBe('failure');
    const instances = set(['http://a:1', 'http://b:1'], { outlier: { consecutiveFailures: 2 } });
    const state = instances.get('http://a:1')!;
    for (const outcome of ['failure', 'neutral', 'failure'] as const) {
      state.outstanding++;
      instances.record(state, outcome);
    }
    expect(instances.ejectedCount).toBe(1);
    expect(state.outstanding).toBe(0);
  });
});

describe('parseInstances', () => {
  it('gives the origin the URL parser gives, with or without its fast path', () => {
    const inputs = [
      'http://10.0.0.1:8080',
      'https://api.internal',
      'http://a-.b-c.d:65535',
      'http://1.a',
      'HTTP://Example.COM',
      'http://example.com:80',
      'https://example.com:443',
      'http://example.com/',
      'http://127.1',
      'http://0x7f.0.0.1',
      'http://010.0.0.1',
      'http://xn--bcher-kva.example',
      'http://host:0080',
      'http://[::1]:3000',
    ];
    // One at a time: several of them are the same origin.
    const origins = inputs.map((input) => parseInstances([input])[0]?.url);
    expect(origins).toEqual(inputs.map((input) => new URL(input).origin));
    // A canonical origin is kept as given (the same string, not a copy per client).
    expect(parseInstances(['http://10.0.0.1:8080'])[0]?.url).toBe('http://10.0.0.1:8080');
  });

  it('rejects what is not an http(s) origin, fast path or not', () => {
    for (const bad of [
      'http://a:65536',
      'http://a.0x1',
      'ftp://a',
      'http://a/path',
      'http://u:p@a',
      'http://a?q',
      'not a url',
    ]) {
      expect(() => parseInstances([bad]), bad).toThrow(expect.objectContaining({ code: 'INVALID_OPTION' }));
    }
    expect(() => parseInstances(['http://a:1', 'http://a:1'])).toThrow(/not a duplicate/);
    expect(() => parseInstances(['http://u:secret@a'])).toThrow(/\[credentials removed\]/);
  });

  it('keeps an instance it parsed before as it is, so the clients of one list share it', () => {
    const parsed = parseInstances(['http://a:1', { url: 'http://b:1', zone: 'z', weight: 2 }]);
    const again = parseInstances(parsed);
    expect(again[0]).toBe(parsed[0]);
    expect(again[1]).toBe(parsed[1]);
    // Duplicates are still refused, across the forms.
    expect(() => parseInstances([parsed[0]!, 'http://a:1'])).toThrow(/not a duplicate/);
    expect(() => parseInstances([parsed[0]!, parsed[0]!])).toThrow(/not a duplicate/);
    // An object of the same shape that parseInstances did not make is parsed anew (and checked).
    const lookalike = { url: 'http://b:1/', zone: 'z', weight: 2 };
    const fromLookalike = parseInstances([lookalike])[0];
    expect(fromLookalike).not.toBe(lookalike);
    expect(fromLookalike?.url).toBe('http://b:1');
    expect(() => parseInstances([{ url: 'http://a:1', weight: -1 }])).toThrow(/weight/);
  });

  it('two sets over the same parsed instances keep their own state', () => {
    const shared = parseInstances(['http://a:1', 'http://b:1']);
    const first = new InstanceSet({ clock, random: seededRandom(1) });
    const second = new InstanceSet({ clock, random: seededRandom(2) });
    first.update(shared);
    second.update(parseInstances(shared));
    first.get('http://a:1')!.outstanding = 5;
    expect(second.get('http://a:1')!.outstanding).toBe(0);
    for (let index = 0; index < 20; index++) expect(first.pick(context())?.instance.url).toBe('http://b:1');
    expect(second.get('http://a:1')!.instance).toBe(first.get('http://a:1')!.instance);
  });
});
